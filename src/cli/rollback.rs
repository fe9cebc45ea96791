//! `haimg rollback`: swap the slots of the latest rollout back to their kept
//! (stopped) standby members, in the rollout's order, with the same health
//! gates; a slot left mid-swap by a killed run goes back to its live member.
//! Proxmox and the local LXC backend alike ([`Target`]); locally a role with
//! no container at all (mongo, left out by the deploy) is not an error.

use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;

use super::target::{self, Confirmed, Target};
use super::{output, show, Exit};
use crate::orchestrate::{self, Request};
use crate::rollout::{self, executor, Plan};
use crate::spec_file;

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// Print the plan and every API call it would make; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan and report as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Roll back without asking (needed when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Break the cluster's run lock held by another run (one that hangs)
    #[arg(long)]
    pub force_unlock: bool,
}

#[derive(Serialize)]
struct RollbackJson<'a> {
    plan: &'a Plan,
    report: Option<&'a executor::Report>,
    planned_calls: Option<&'a [crate::backend::proxmox::PlannedCall]>,
}

pub fn run(spec: Option<&Path>, args: &RollbackArgs) -> Result<Exit> {
    let loaded = spec_file::load(spec)?;
    let target = Target::open(&loaded, args.dry_run, false)?;
    let _lock = if args.dry_run {
        None
    } else {
        Some(target.lock(&loaded.checked.cluster, "rollback", args.force_unlock)?)
    };
    let backend = target.backend();
    let gate = target.gate(&loaded.checked.cluster)?;
    let req = Request {
        dry_run: args.dry_run,
        leave_out_absent_roles: target.leaves_out_absent_roles(),
        ..Request::rollback(&loaded.checked.cluster)
    };
    let plan = orchestrate::prepare(backend, req, &gate)?;
    let cluster = &plan.cluster;
    eprint!("{}", show::plan(&plan.rollout));
    let mut report = None;
    if plan.swaps() {
        if !args.dry_run {
            if let Some(r) = plan.refusal() {
                bail!("refusing to roll back: {r}");
            }
            match target::confirm(&target, args.yes, "roll back")? {
                Confirmed::Yes => {}
                Confirmed::No => return Ok(Exit::Error),
                Confirmed::NoTerminal => return Ok(Exit::Usage),
            }
        }
        let opts = rollout::Options::from_cluster(cluster, args.dry_run);
        let mut progress = show::progress(plan.rollout.slots.len());
        report = orchestrate::execute(backend, &plan, &gate, opts, &mut progress)?.rollout;
    }
    let (header, planned) = target.dry_run_calls();
    if args.json {
        output::json(&RollbackJson {
            plan: &plan.rollout,
            report: report.as_ref(),
            planned_calls: args.dry_run.then_some(planned.as_slice()),
        })?;
    } else if args.dry_run {
        let mut text = header;
        for c in &planned {
            text.push_str(&format!("{c}\n"));
        }
        output::stdout(&text)?;
    }
    if let Some(r) = &report {
        show::summary(r, cluster);
    }
    let ok = report.as_ref().is_none_or(executor::Report::ok) && plan.rollout.blocked.is_empty();
    Ok(if ok { Exit::Ok } else { Exit::Error })
}
