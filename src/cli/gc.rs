//! `haimg gc`: remove standby members of generations older than the last
//! `rollout.keep_versions`, and haimg templates no container uses any more,
//! on Proxmox or in the local cluster's template store ([`Target`]).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::target::{self, Confirmed, Target};
use super::{output, show, Exit};
use crate::fleet::slot;
use crate::rollout::gc::{self, GcPlan, GcReport};
use crate::spec_file;

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Print what would be removed and every API call; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan and report as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Remove without asking (needed when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Break the cluster's run lock held by another run (one that hangs)
    #[arg(long)]
    pub force_unlock: bool,
}

#[derive(Serialize)]
struct GcJson<'a> {
    plan: &'a GcPlan,
    report: Option<&'a GcReport>,
}

pub fn run(spec: Option<&Path>, args: &GcArgs) -> Result<Exit> {
    let loaded = spec_file::load(spec)?;
    let cluster = &loaded.checked.cluster;
    let target = Target::open(&loaded, args.dry_run, false)?;
    let _lock = if args.dry_run {
        None
    } else {
        Some(target.lock(&loaded.checked.cluster, "gc", args.force_unlock)?)
    };
    let backend = target.backend();
    let inventory = backend.inventory().context("failed to read the target")?;
    let scoped = target.scope(cluster, &inventory);
    let cluster = &scoped;
    let views =
        slot::observe_from(backend, cluster, &inventory).context("failed to read the target")?;
    let plan = gc::plan(backend, cluster, &views).context("failed to plan gc")?;
    eprint!("{}", show::gc(&plan, cluster));
    if plan.refusal.is_some() {
        if args.json {
            output::json(&GcJson {
                plan: &plan,
                report: None,
            })?;
        }
        return Ok(Exit::Error);
    }
    let mut report = None;
    if !plan.members.is_empty() || !plan.templates.is_empty() {
        if !args.dry_run {
            match target::confirm(&target, args.yes, "remove these")? {
                Confirmed::Yes => {}
                Confirmed::No => return Ok(Exit::Error),
                Confirmed::NoTerminal => return Ok(Exit::Usage),
            }
        }
        let r = gc::run(backend, &plan, args.dry_run);
        for f in &r.failures {
            eprintln!("  FAILED: {f}");
        }
        eprintln!(
            "{}removed {} member(s) and {} template(s)",
            if args.dry_run {
                "dry-run: would have "
            } else {
                ""
            },
            r.removed_members.len(),
            r.removed_templates.len()
        );
        report = Some(r);
    }
    if args.json {
        output::json(&GcJson {
            plan: &plan,
            report: report.as_ref(),
        })?;
    } else if args.dry_run && report.is_some() {
        let (mut text, planned) = target.dry_run_calls();
        for c in &planned {
            text.push_str(&format!("{c}\n"));
        }
        output::stdout(&text)?;
    }
    Ok(if report.as_ref().is_none_or(GcReport::ok) {
        Exit::Ok
    } else {
        Exit::Error
    })
}
