//! Cluster join. lb: keepalived does it from its config, nothing to do here.
//! mongo: [`mongo`] decides and runs the rs0 initiation (placeholder until the next commit).

use std::sync::{Arc, Mutex};

use haimg_model::Cluster;

use crate::identity::Identity;

/// Start the rs0 join in its own thread; the returned value is what the status file shows.
pub fn spawn(_cluster: &Cluster, _id: &Identity) -> Arc<Mutex<serde_json::Value>> {
    Arc::new(Mutex::new(serde_json::json!({"state": "not implemented"})))
}
