//! Versioned blue/green rollouts, rollback and garbage collection,
//! written once against [`crate::backend::Backend`].
//!
//! Every slot owns two VMIDs (the spec's and `+ rollout.green_vmid_offset`);
//! a rollout creates the new member (green) on the free one, stopped, swaps it
//! in for the serving one (blue) and keeps blue stopped as the standby for
//! `haimg rollback`. The next rollout alternates back. State lives only in
//! the target's tags (`state-live`/`state-standby`, `gen-<n>-<id>`, see
//! [`crate::fleet::tags`]) and power states; there is no state file, and a
//! run killed at any point is continued by the next run.
//!
//! * [`machine`]: the pure step machine of one slot;
//! * [`plan`]: which slots change, in which order (deploy and rollback);
//! * [`exec`]: carrying a plan out, with health gates and automatic restore;
//! * [`gate`]: the health gates (HTTP/TCP from the deploy host, mongo over OP_MSG via a probe trait);
//! * [`gc`]: removing old standbys and templates.
//!
//! What the target holds for a slot ([`crate::fleet::slot`]) and the tag
//! scheme ([`crate::fleet::tags`]) are shared with `deploy`.

pub mod exec;
pub mod gate;
pub mod gc;
pub mod machine;
pub mod plan;

pub use exec::{Aborted, Event, Executor, Observer, Options, Report};
pub use gate::{HealthGate, NetGate, WireMongo};
pub use plan::{Kind, Plan};

use std::collections::BTreeMap;

use haimg_model::{Cluster, Role};

use crate::backend::Backend;
use crate::fleet::slot;
use crate::fleet::templates::LocalTemplate;

/// Why a rollout or rollback did not start.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("failed to read the target: {0}")]
    Observe(#[source] crate::backend::BackendError),
    #[error("refusing to {what}: {why}")]
    Refused { what: &'static str, why: String },
    #[error(transparent)]
    Aborted(#[from] Aborted),
}

/// Plan and carry out the rollout to `templates` (what `haimg deploy --yes`
/// does for members that run something else). An empty plan gives an empty report.
pub fn deploy_rollout<B: Backend + Sync + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    templates: &BTreeMap<Role, LocalTemplate>,
    gate: &dyn HealthGate,
    opts: Options,
    obs: &mut dyn Observer,
) -> Result<(Plan, Report), RolloutError> {
    let views = slot::observe(backend, cluster).map_err(RolloutError::Observe)?;
    let p = plan::for_deploy(cluster, &views, templates, gate);
    run_plan(
        backend,
        cluster,
        Some(templates),
        gate,
        opts,
        obs,
        p,
        "roll out",
    )
}

/// Plan and carry out `haimg rollback`.
pub fn rollback<B: Backend + Sync + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    gate: &dyn HealthGate,
    opts: Options,
    obs: &mut dyn Observer,
) -> Result<(Plan, Report), RolloutError> {
    let views = slot::observe(backend, cluster).map_err(RolloutError::Observe)?;
    let p = plan::for_rollback(cluster, &views, gate);
    run_plan(backend, cluster, None, gate, opts, obs, p, "roll back")
}

#[allow(clippy::too_many_arguments)]
fn run_plan<B: Backend + Sync + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    templates: Option<&BTreeMap<Role, LocalTemplate>>,
    gate: &dyn HealthGate,
    opts: Options,
    obs: &mut dyn Observer,
    p: Plan,
    what: &'static str,
) -> Result<(Plan, Report), RolloutError> {
    if let Some(why) = p.refusal.clone().filter(|_| !opts.dry_run && !p.is_empty()) {
        return Err(RolloutError::Refused { what, why });
    }
    let r = Executor::new(backend, cluster, gate, templates, opts).run(&p, obs)?;
    Ok((p, r))
}
