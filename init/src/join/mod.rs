//! Cluster join. lb: keepalived does it from its rendered config; nothing to
//! do here. mongo: [`mongo`] decides and runs the rs0 initiation over
//! OP_MSG (`haimg_mongo::wire`, the client haimg shares with the init) in a
//! thread of its own, so the supervisor loop never blocks on the network;
//! the thread reports into the status file.

pub mod mongo;
pub mod users;

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haimg_model::Cluster;

use crate::identity::Identity;
use mongo::{Outcome, Peer};

/// The mongo members as the join sees them: every peer by its plan address,
/// the local member over 127.0.0.1.
pub fn peers(cluster: &Cluster, id: &Identity) -> (Vec<Peer>, usize) {
    let port = cluster.mongo.port;
    let peers = cluster
        .mongo
        .members
        .iter()
        .map(|m| Peer {
            slot: m.slot.clone(),
            host: format!("{}:{port}", m.ip),
            addr: if m.slot == id.member.slot {
                SocketAddr::V4(SocketAddrV4::new([127, 0, 0, 1].into(), port))
            } else {
                SocketAddr::V4(SocketAddrV4::new(m.ip, port))
            },
        })
        .collect();
    (peers, id.member.index)
}

/// Start the rs0 join in its own thread; the returned value is what the status file shows.
/// With `users`, the thread then creates the MongoDB users whenever this
/// member is primary ([`users::ensure`]).
pub fn spawn(
    cluster: &Cluster,
    id: &Identity,
    users: Option<users::Passwords>,
) -> Arc<Mutex<serde_json::Value>> {
    let state = Arc::new(Mutex::new(serde_json::json!({"state": "starting"})));
    let (peers, me) = peers(cluster, id);
    let rs = cluster.mongo.replica_set.clone();
    let database = cluster.webapp.database.clone();
    let shared = Arc::clone(&state);
    let spawned = std::thread::Builder::new()
        .name("rs0-join".into())
        .spawn(move || {
            run(&rs, &peers, me, &shared);
            if let (Some(pw), Some(local)) = (users, peers.get(me)) {
                run_users(&rs, local.addr, &pw, &database);
            }
        });
    if let Err(e) = spawned {
        crate::error!("rs0: failed to start the join thread: {e}");
    }
    state
}

/// Rounds until this member is in the set; waits grow from 1 s to 10 s.
fn run(rs: &str, peers: &[Peer], me: usize, state: &Mutex<serde_json::Value>) {
    let mut wait = Duration::from_secs(1);
    let mut last = String::new();
    loop {
        let (outcome, _) = mongo::step(rs, peers, me, Duration::from_secs(2));
        let text = serde_json::to_value(&outcome).unwrap_or_default();
        if let Ok(mut s) = state.lock() {
            *s = text.clone();
        }
        let line = text.to_string();
        if line != last {
            match &outcome {
                Outcome::Member { primary } => crate::info!(
                    "{rs}: member ({})",
                    if *primary { "primary" } else { "not primary" }
                ),
                Outcome::Initiated { members } => {
                    crate::info!("{rs}: initiated with {members} members")
                }
                Outcome::Waiting { reason } => crate::info!("{rs}: {reason}"),
                Outcome::Conflict { reason } => crate::error!("{rs}: {reason}; not initiating"),
                Outcome::Failed { reason } => crate::warn!("{rs}: {reason}; retrying"),
            }
            last = line;
        }
        if matches!(outcome, Outcome::Member { .. } | Outcome::Initiated { .. }) {
            return;
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

/// Once this member is primary, create or update the users; until then ask
/// every 5 s (a member that never becomes primary leaves it to the one that is).
fn run_users(rs: &str, local: SocketAddr, pw: &users::Passwords, database: &str) {
    let t = Duration::from_secs(5);
    let mut last = String::new();
    loop {
        let primary = matches!(
            mongo::hello(local, t),
            mongo::Hello::InSet { primary: true, .. }
        );
        if primary {
            let r = haimg_mongo::wire::Conn::connect(local, t)
                .map_err(|e| e.to_string())
                .and_then(|mut c| {
                    users::ensure(&mut c, pw, database, &mut || {
                        haimg_mongo::scram::os_nonce().map_err(|e| format!("/dev/urandom: {e}"))
                    })
                });
            match r {
                Ok(done) => {
                    crate::info!(
                        "{rs}: users ready (admin created: {}, created: {}, updated: {})",
                        done.admin_created,
                        done.created.join(" "),
                        done.updated.join(" ")
                    );
                    return;
                }
                Err(e) if e != last => {
                    crate::warn!("{rs}: users: {e}; retrying");
                    last = e;
                }
                Err(_) => {}
            }
        }
        std::thread::sleep(t);
    }
}
