//! `haimg deploy`: upload the templates, converge the containers, and roll
//! out blue/green where members run something else than the spec.
//!
//! The backend is chosen here, where the program starts: a `proxmox.endpoint`
//! in the spec means Proxmox; none means the local LXC backend (built
//! separately, not wired yet). When a rollout is needed its plan is printed
//! (stderr) before anything changes, and it goes ahead only with `--yes` or a
//! `y` on a terminal. stdout carries data (`--json`, or the planned calls of
//! `--dry-run`); stderr carries the plan, progress and the summary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::target::{self, Confirmed};
use super::{output, Exit};
use crate::backend::proxmox::client::CallCounts;
use crate::backend::proxmox::PlannedCall;
use crate::backend::Backend;
use crate::deploy::{self, templates, Action, Report};
use crate::rollout::{self, exec, plan, Executor, Plan};
use crate::spec_file;

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Print the rollout plan and every API call that would change something (secrets redacted); change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report (or, with --dry-run, the planned calls) as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Directory holding the built templates and their .sha256 files
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub templates: PathBuf,
    /// Do not draw the upload progress bar
    #[arg(long)]
    pub no_progress: bool,
    /// Roll out without asking (needed when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Serialize)]
struct DeployJson<'a> {
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout_plan: Option<&'a Plan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<&'a exec::Report>,
    api_calls: CallCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    planned_calls: Option<&'a [PlannedCall]>,
}

pub fn run(spec: Option<&Path>, args: &DeployArgs) -> Result<Exit> {
    let loaded = spec_file::load(spec)?;
    let cluster = &loaded.checked.cluster;
    let backend = target::proxmox(&loaded, args.dry_run, !args.no_progress)?;
    let templates =
        templates::find(&args.templates, cluster).context("failed to find the built templates")?;
    eprintln!(
        "{}deploy cluster {} version {} to {} as {}",
        if args.dry_run { "dry-run: " } else { "" },
        cluster.name,
        cluster.version,
        cluster.proxmox.endpoint.as_deref().unwrap_or("?"),
        backend.token().id()
    );
    let gate = target::gate();
    let inventory = backend
        .inventory()
        .context("failed to read the target's inventory")?;
    let views = rollout::slot::observe_from(&backend, cluster, &inventory)
        .context("failed to read the target")?;
    let plan = plan::for_deploy(cluster, &views, &templates, &gate);
    let rolling = !plan.is_empty();
    if rolling || !plan.blocked.is_empty() {
        eprint!("{}", plan::render(&plan));
    }
    if rolling && !args.dry_run {
        if let Some(r) = &plan.refusal {
            bail!("refusing to roll out: {r}");
        }
        match target::confirm(args.yes, "roll out")? {
            Confirmed::Yes => {}
            Confirmed::No => return Ok(Exit::Error),
            Confirmed::NoTerminal => return Ok(Exit::Usage),
        }
    }

    let report =
        deploy::deploy_with_inventory(&backend, cluster, &templates, args.dry_run, inventory)
            .context("deploy failed")?;
    let rollout_report = if rolling {
        let opts = exec::Options::from_cluster(cluster, args.dry_run);
        let ex = Executor::new(&backend, cluster, &gate, Some(&templates), opts);
        let mut progress = target::progress(plan.slots.len());
        Some(ex.run(&plan, &mut progress).context("rollout stopped")?)
    } else {
        None
    };

    let calls = backend.calls();
    let planned = backend.planned();
    if args.json {
        output::json(&DeployJson {
            report: &report,
            rollout_plan: rolling.then_some(&plan),
            rollout: rollout_report.as_ref(),
            api_calls: calls,
            planned_calls: args.dry_run.then_some(planned.as_slice()),
        })?;
    } else if args.dry_run {
        let mut text = format!("# {}\n", backend.token().redacted_header());
        if planned.is_empty() {
            text.push_str("# nothing to change\n");
        }
        for c in &planned {
            text.push_str(&format!("{c}\n"));
        }
        output::stdout(&text)?;
    }
    print_summary(&report, calls);
    if let Some(r) = &rollout_report {
        target::summary(r, cluster);
    }
    let rolled = rollout_report.as_ref().is_none_or(exec::Report::ok);
    Ok(if report.ok() && rolled && plan.blocked.is_empty() {
        Exit::Ok
    } else {
        Exit::Error
    })
}

fn print_summary(r: &Report, calls: CallCounts) {
    let would = if r.dry_run { "would be " } else { "" };
    for u in &r.uploads {
        eprintln!(
            "  template {} on {} ({}){}",
            u.volid,
            u.node,
            if u.shared {
                "shared storage"
            } else {
                "node-local storage"
            },
            if r.dry_run {
                " (checked, or would be uploaded)"
            } else {
                ""
            }
        );
    }
    for m in &r.members {
        let what = match &m.action {
            Action::Created => format!("{would}created and started"),
            Action::Started => format!("{would}started"),
            Action::Unchanged => "unchanged".to_string(),
            Action::Rollout(why) => format!("rollout: {why}"),
            Action::Blocked(why) => format!("BLOCKED: {why}"),
            Action::Failed(why) => format!("FAILED: {why}"),
        };
        eprintln!("  {:<10} CT {:<6} {:<8} {what}", m.slot, m.vmid, m.node);
    }
    eprintln!(
        "{} created, {} started, {} unchanged, {} blocked, {} failed, {} to roll out in {:.1}s; {} API calls (GET {}, POST {}, PUT {}, DELETE {}; {} retried)",
        r.count(|a| *a == Action::Created),
        r.count(|a| *a == Action::Started),
        r.count(|a| *a == Action::Unchanged),
        r.count(|a| matches!(a, Action::Blocked(_))),
        r.count(|a| matches!(a, Action::Failed(_))),
        r.rollouts(),
        r.elapsed_ms as f64 / 1000.0,
        calls.total(),
        calls.get,
        calls.post,
        calls.put,
        calls.delete,
        calls.retries,
    );
}
