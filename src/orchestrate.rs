//! The one way haimg changes a cluster: [`prepare`] a [`Plan`], then
//! [`execute`] it. `haimg deploy`, `haimg rollback` and the golden testbed
//! all go through here, so the path the tests walk is the path the CLI ships.
//!
//! Design: `prepare` reads the target once (the inventory, plus which mongo
//! container holds its data volume) and asks the health gate only what
//! ordering needs (the mongo primary); it changes nothing. The plan holds
//! every change as data, phase by phase: the converge of members in place
//! ([`crate::deploy::Plan`]: create, start, and later configuration drift),
//! then the blue/green swaps ([`crate::rollout::Plan`]). Between the two
//! calls the caller may show the plan and ask for confirmation (the CLI does;
//! the testbed does not). `execute` carries the phases out in order, the
//! converge ending with the network policy on every member
//! ([`crate::backend::Backend::enforce_policy`]), and reports each phase.
//! New kinds of change (secrets, policy before the first start) are new
//! phases or plan entries here, not new compositions elsewhere.
//!
//! `deploy` and `rollout` never import each other; this module is the only
//! place that uses both.

use std::collections::BTreeMap;

use haimg_model::{Cluster, Role};
use serde::Serialize;

use crate::backend::{Backend, BackendError};
use crate::deploy::{self, DeployError};
use crate::fleet::slot;
use crate::fleet::templates::LocalTemplate;
use crate::rollout::{self, Aborted, Executor, HealthGate, Kind, Observer, Options};

/// What a run is for.
#[derive(Debug, Clone)]
pub enum Intent {
    /// Converge to the built `templates`: create and start what is missing,
    /// enforce the network policy, swap blue/green what runs other templates.
    Deploy {
        templates: BTreeMap<Role, LocalTemplate>,
    },
    /// Swap the latest rollout's slots back to their kept standbys.
    Rollback,
}

/// What [`prepare`] plans for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The spec, as far as the caller deploys it (roles without a built
    /// template already left out).
    pub cluster: &'a Cluster,
    pub intent: Intent,
    /// The backend records instead of sending; gates are not asked.
    pub dry_run: bool,
    /// Leave out roles that have no container at all (the local backend,
    /// where mongo cannot be built): see [`slot::present_part`].
    pub leave_out_absent_roles: bool,
}

impl<'a> Request<'a> {
    pub fn deploy(cluster: &'a Cluster, templates: BTreeMap<Role, LocalTemplate>) -> Self {
        Request {
            cluster,
            intent: Intent::Deploy { templates },
            dry_run: false,
            leave_out_absent_roles: false,
        }
    }

    pub fn rollback(cluster: &'a Cluster) -> Self {
        Request {
            cluster,
            intent: Intent::Rollback,
            dry_run: false,
            leave_out_absent_roles: false,
        }
    }
}

/// Everything a run will change, phase by phase; nothing has changed yet.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub dry_run: bool,
    /// The part of the spec the run covers.
    #[serde(skip)]
    pub cluster: Cluster,
    #[serde(skip)]
    pub templates: Option<BTreeMap<Role, LocalTemplate>>,
    /// Deploy: each member's change in place (create, start, leave).
    pub converge: Option<deploy::Plan>,
    /// The blue/green swaps: members that run other templates (deploy), or
    /// the latest rollout's slots (rollback). Empty when there are none.
    pub rollout: rollout::Plan,
}

impl Plan {
    /// Swaps take members down one at a time: people confirm them first.
    pub fn swaps(&self) -> bool {
        !self.rollout.is_empty()
    }

    /// Why the swaps cannot be carried out (e.g. the mongo order is unknown).
    pub fn refusal(&self) -> Option<&str> {
        self.rollout
            .refusal
            .as_deref()
            .filter(|_| self.swaps() && !self.dry_run)
    }

    /// What the run is called in messages: `roll out` or `roll back`.
    pub fn verb(&self) -> &'static str {
        match self.rollout.kind {
            Kind::Rollout => "roll out",
            Kind::Rollback => "roll back",
        }
    }
}

/// What a run did, phase by phase.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Deploy: the converge, the network policy included.
    pub converge: Option<deploy::Report>,
    /// The swaps, when the plan had any.
    pub rollout: Option<rollout::Report>,
}

impl Report {
    /// Every phase went through and no slot was blocked.
    pub fn ok(&self, plan: &Plan) -> bool {
        self.converge.as_ref().is_none_or(deploy::Report::ok)
            && self.rollout.as_ref().is_none_or(rollout::Report::ok)
            && plan.rollout.blocked.is_empty()
    }
}

/// The target could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("failed to read the target's inventory: {0}")]
    Inventory(BackendError),
    #[error("failed to read the target: {0}")]
    Observe(BackendError),
}

/// A phase could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("deploy failed: {0}")]
    Converge(DeployError),
    #[error("refusing to {what}: {why}")]
    Refused { what: &'static str, why: String },
    /// The observer stopped the run (as a kill would).
    #[error("{0}")]
    Aborted(Aborted),
}

/// Read the target and plan the run; nothing changes.
pub fn prepare<B: Backend + Sync + ?Sized>(
    backend: &B,
    req: Request<'_>,
    gate: &dyn HealthGate,
) -> Result<Plan, PrepareError> {
    let inventory = backend.inventory().map_err(PrepareError::Inventory)?;
    let cluster = if req.leave_out_absent_roles {
        slot::present_part(req.cluster, &inventory)
    } else {
        req.cluster.clone()
    };
    let views = slot::observe_from(backend, &cluster, &inventory).map_err(PrepareError::Observe)?;
    Ok(match req.intent {
        Intent::Deploy { templates } => Plan {
            dry_run: req.dry_run,
            converge: Some(deploy::plan(
                backend,
                &cluster,
                &templates,
                &inventory,
                req.dry_run,
            )),
            rollout: rollout::plan::for_deploy(&cluster, &views, &templates, gate),
            templates: Some(templates),
            cluster,
        },
        Intent::Rollback => Plan {
            dry_run: req.dry_run,
            converge: None,
            rollout: rollout::plan::for_rollback(&cluster, &views, gate),
            templates: None,
            cluster,
        },
    })
}

/// Carry the plan out: the converge (and the policy), then the swaps, each
/// seen by `obs`. `opts` are the swaps' timeouts; the plan decides dry-run.
pub fn execute<B: Backend + Sync + ?Sized>(
    backend: &B,
    plan: &Plan,
    gate: &dyn HealthGate,
    opts: Options,
    obs: &mut dyn Observer,
) -> Result<Report, ExecuteError> {
    if let Some(why) = plan.refusal() {
        return Err(ExecuteError::Refused {
            what: plan.verb(),
            why: why.to_string(),
        });
    }
    let converge = match (&plan.converge, &plan.templates) {
        (Some(c), Some(t)) => {
            Some(deploy::execute(backend, &plan.cluster, t, c).map_err(ExecuteError::Converge)?)
        }
        _ => None,
    };
    let rollout = if plan.swaps() {
        let opts = Options {
            dry_run: plan.dry_run,
            ..opts
        };
        let ex = Executor::new(backend, &plan.cluster, gate, plan.templates.as_ref(), opts);
        Some(ex.run(&plan.rollout, obs).map_err(ExecuteError::Aborted)?)
    } else {
        None
    };
    Ok(Report { converge, rollout })
}

/// Either phase of [`run`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Execute(#[from] ExecuteError),
}

/// [`prepare`] and [`execute`] without asking anyone, as `haimg deploy --yes`
/// and `haimg rollback --yes` do: the golden testbed's way.
pub fn run<B: Backend + Sync + ?Sized>(
    backend: &B,
    req: Request<'_>,
    gate: &dyn HealthGate,
    opts: Options,
    obs: &mut dyn Observer,
) -> Result<(Plan, Report), RunError> {
    let plan = prepare(backend, req, gate)?;
    let report = execute(backend, &plan, gate, opts, obs)?;
    Ok((plan, report))
}
