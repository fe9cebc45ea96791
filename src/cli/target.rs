//! What deploy, status, rollback and gc share at the CLI edge: choosing the
//! backend from the spec, the health gate, asking before changes, and the
//! rollout's progress and summary on stderr.

use std::io::{BufRead, IsTerminal, Write};
use std::ops::ControlFlow;

use anyhow::{bail, Context, Result};
use haimg_model::Cluster;

use crate::backend::proxmox::{ApiToken, ProxmoxBackend, Settings};
use crate::rollout::exec::{Event, Outcome, Report};
use crate::rollout::NetGate;
use crate::spec_file::Loaded;

/// The Proxmox backend of the spec. Without `proxmox.endpoint` the target is
/// the local LXC backend, which these commands do not drive yet.
pub fn proxmox(loaded: &Loaded, dry_run: bool, progress: bool) -> Result<ProxmoxBackend> {
    let cluster = &loaded.checked.cluster;
    if cluster.proxmox.endpoint.is_none() {
        bail!(
            "no proxmox.endpoint in {}: this command is not implemented for the local LXC backend yet; set proxmox.endpoint to use Proxmox VE",
            loaded.source
        );
    }
    let token = ApiToken::from_env().context("failed to read the Proxmox API token")?;
    let settings = Settings {
        progress,
        ..Settings::default()
    };
    let backend = ProxmoxBackend::new(&cluster.proxmox, token, settings)
        .context("failed to set up the Proxmox client")?;
    Ok(if dry_run {
        backend.into_dry_run()
    } else {
        backend
    })
}

/// Names a network namespace (a path such as `/run/netns/NAME`) to run every
/// health probe from, for deploy hosts that reach the cluster network only
/// from a namespace; the Proxmox API calls stay in the caller's namespace.
pub const PROBE_NETNS_ENV: &str = "HAIMG_PROBE_NETNS";

/// Health gates from this host (or from `HAIMG_PROBE_NETNS`), straight to
/// the members' addresses: HTTP, and OP_MSG to the mongo members.
pub fn gate() -> NetGate {
    let netns = std::env::var_os(PROBE_NETNS_ENV)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    NetGate::wire(netns, None)
}

/// `--yes`, or a `y` typed on a terminal. Without a terminal and without
/// `--yes`, refuse: nobody could have read the plan.
pub fn confirm(yes: bool, what: &str) -> Result<Confirmed> {
    if yes {
        return Ok(Confirmed::Yes);
    }
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "error: refusing to {what} without confirmation: stdin is not a terminal; pass --yes to proceed (or --dry-run to see every call)"
        );
        return Ok(Confirmed::NoTerminal);
    }
    eprint!("{what}? [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("failed to read the answer")?;
    Ok(
        if matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            Confirmed::Yes
        } else {
            eprintln!("nothing changed");
            Confirmed::No
        },
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    Yes,
    No,
    NoTerminal,
}

/// Progress of a rollout on stderr; never stops it.
pub fn progress(total: usize) -> impl FnMut(&Event<'_>) -> ControlFlow<()> {
    move |e| {
        match e {
            Event::SlotStarted { plan } => eprintln!(
                "[{}/{total}] {} ({}): CT {} {} -> CT {} {}",
                plan.order,
                plan.slot,
                plan.node,
                plan.blue.vmid,
                plan.blue.version,
                plan.green.vmid,
                plan.green.version
            ),
            Event::StepDone {
                step,
                seconds,
                detail,
                ..
            } => eprintln!(
                "    {step} ({seconds:.1}s){}",
                detail.map(|d| format!(": {d}")).unwrap_or_default()
            ),
            Event::GateFailed { error, .. } => {
                eprintln!("    HEALTH GATE FAILED: {error}; restoring the previous member")
            }
            Event::SlotFinished { report } => match &report.outcome {
                Outcome::Done => eprintln!(
                    "    done in {:.1}s{}",
                    report.seconds,
                    report
                        .down_s
                        .map(|d| format!(" (slot down {d:.1}s)"))
                        .unwrap_or_default()
                ),
                other => eprintln!("    {}", outcome_text(other)),
            },
        }
        ControlFlow::Continue(())
    }
}

pub fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Done => "done".into(),
        Outcome::GateFailed { error, restored } => format!(
            "FAILED its health gate: {error}; {}",
            if *restored {
                "the previous member serves again"
            } else {
                "NOT RESTORED: run haimg again"
            }
        ),
        Outcome::Failed { error, restored } => format!(
            "FAILED: {error}; {}",
            if *restored {
                "the previous member serves again"
            } else {
                "NOT RESTORED: run haimg again"
            }
        ),
        Outcome::Refused(why) => format!("not touched: {why}"),
        Outcome::NotStarted => "not started".into(),
    }
}

/// One line per slot and a total, on stderr.
pub fn summary(r: &Report, cluster: &Cluster) {
    let what = match r.kind {
        crate::rollout::Kind::Rollout => "rollout",
        crate::rollout::Kind::Rollback => "rollback",
    };
    for s in &r.slots {
        eprintln!(
            "  {:<10} CT {:<6} -> CT {:<6} {:>6.1}s  {}",
            s.slot,
            s.from.vmid,
            s.to.vmid,
            s.seconds,
            outcome_text(&s.outcome)
        );
        if let Some(a) = &s.after_restore {
            eprintln!("             {a}");
        }
    }
    let done = r.slots.iter().filter(|s| s.ok()).count();
    eprintln!(
        "{}{what} of cluster {}: {done}/{} slot(s) done in {:.1}s{}",
        if r.dry_run { "dry-run: " } else { "" },
        cluster.name,
        r.slots.len(),
        r.seconds,
        r.stopped
            .as_deref()
            .map(|s| format!("; STOPPED at {s}"))
            .unwrap_or_default()
    );
}
