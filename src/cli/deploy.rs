//! `haimg deploy`: upload the templates, converge the containers, and roll
//! out blue/green where members run something else than the spec.
//!
//! The target is chosen where the program starts ([`Target::open`]): a
//! `proxmox.endpoint` in the spec means Proxmox; none means the local LXC
//! backend. On both, roles whose template was not built may be left out
//! (`--allow-missing`). Both go the same way: when a rollout is needed its
//! plan is printed (stderr) before anything changes, and it goes ahead only
//! with `--yes` or a `y` on a terminal. stdout carries data (`--json`, or the
//! planned calls of `--dry-run`, Proxmox only); stderr carries the plan,
//! progress and the summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::target::{self, Confirmed, Target};
use super::{output, show, Exit};
use crate::backend::proxmox::client::CallCounts;
use crate::backend::proxmox::PlannedCall;
use crate::backend::{PolicyReport, Switch};
use crate::deploy::{Action, Change, Report};
use crate::fleet::templates::{self, LocalTemplate};
use crate::orchestrate::{self, Intent, Request};
use crate::rollout::{self, executor, Plan};
use crate::secrets::{Secrets, Store, StoreError};
use crate::spec_file;
use haimg_model::{Cluster, Role};

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
    /// Deploy without these roles when their template was not built (e.g. `mongo`)
    #[arg(long, value_name = "ROLE", value_delimiter = ',', value_parser = ["lb", "mongo", "webapp"])]
    pub allow_missing: Vec<String>,
    /// Roll out without asking (needed when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Break the cluster's run lock held by another run (one that hangs)
    #[arg(long)]
    pub force_unlock: bool,
}

#[derive(Serialize)]
struct DeployJson<'a> {
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout_plan: Option<&'a Plan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<&'a executor::Report>,
    /// Proxmox only.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_calls: Option<CallCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    planned_calls: Option<&'a [PlannedCall]>,
}

pub fn run(spec: Option<&Path>, args: &DeployArgs) -> Result<Exit> {
    let loaded = spec_file::load(spec)?;
    let spec_cluster = &loaded.checked.cluster;
    let target = Target::open(&loaded, args.dry_run, !args.no_progress)?;
    if let Target::Local(_) = &target {
        super::doctor::preflight("haimg deploy", crate::doctor::Need::Deploy, None)?;
    }
    // Local checks first (no API call for a run that cannot go ahead), then
    // the run lock, held from the first read of the target to the end.
    let (mut templates, cluster, missing) = deployable(&target, spec_cluster, args)?;
    let _lock = if args.dry_run {
        None
    } else {
        Some(target.lock(&loaded.checked.cluster, "deploy", args.force_unlock)?)
    };
    let cluster = &cluster;
    let backend = target.backend();
    // The cluster's secrets: made at the first deploy (a dry run makes none
    // and plans with throw-away ones), handed to each role's members at start.
    let store = Store::open(&Store::default_root(), &cluster.name);
    let secrets = if args.dry_run {
        match store.load() {
            Ok(s) => s,
            Err(StoreError::Missing { .. }) => Secrets::generate(),
            Err(e) => return Err(e.into()),
        }
    } else {
        store
            .ensure()
            .context("failed to open the cluster's secrets store")?
    };
    templates::with_secrets(&mut templates, |role| {
        (secrets.env_for(role), secrets.fingerprint_for(role))
    });
    eprintln!(
        "{}deploy cluster {} version {} to {}",
        if args.dry_run { "dry-run: " } else { "" },
        cluster.name,
        cluster.version,
        target.describe(cluster)
    );
    for role in &missing {
        eprintln!("  {role}: no template built; its members are not deployed");
    }
    let gate = target.gate(cluster)?;
    let req = Request {
        cluster,
        intent: Intent::Deploy { templates },
        dry_run: args.dry_run,
        leave_out_absent_roles: false,
    };
    let plan = orchestrate::prepare(backend, req, &gate)?;
    let swaps = plan.swaps();
    let creates = plan
        .converge
        .as_ref()
        .is_some_and(|c| c.members.iter().any(|m| m.change == Change::Create));
    // A member started without its secrets would run without authentication
    // (or not at all): on a target that cannot deliver them, nothing new starts.
    if creates || swaps {
        let caps = backend
            .capabilities()
            .context("failed to ask the target what it supports")?;
        if !caps.env {
            bail!("{}", NO_ENV_REFUSAL);
        }
    }
    if swaps || !plan.rollout.blocked.is_empty() {
        eprint!("{}", show::plan(&plan.rollout));
    }
    if swaps && !args.dry_run {
        if let Some(r) = plan.refusal() {
            bail!("refusing to roll out: {r}");
        }
        match target::confirm(&target, args.yes, "roll out")? {
            Confirmed::Yes => {}
            Confirmed::No => return Ok(Exit::Error),
            Confirmed::NoTerminal => return Ok(Exit::Usage),
        }
    }
    let opts = rollout::Options::from_cluster(cluster, args.dry_run);
    let mut progress = show::progress(plan.rollout.slots.len());
    let done = orchestrate::execute(backend, &plan, &gate, opts, &mut progress)?;
    let report = done
        .converge
        .as_ref()
        .context("a deploy plan always converges first")?;

    let calls = target.calls();
    let (header, planned) = target.dry_run_calls();
    if args.json {
        output::json(&DeployJson {
            report,
            rollout_plan: swaps.then_some(&plan.rollout),
            rollout: done.rollout.as_ref(),
            api_calls: calls,
            planned_calls: args.dry_run.then_some(planned.as_slice()),
        })?;
    } else if args.dry_run {
        let mut text = header;
        if planned.is_empty() {
            text.push_str("# nothing to change\n");
        }
        if let Some(f) = &report.firewall {
            for w in &f.warnings {
                text.push_str(&format!("# firewall: {w}\n"));
            }
        }
        for c in &planned {
            text.push_str(&format!("{c}\n"));
        }
        output::stdout(&text)?;
    }
    // Once per run, when members were (or would be) created: what an older
    // Proxmox means for them. The deploy already asked, so this costs no call.
    if report.count(|a| *a == Action::Created) > 0 || swaps {
        if let Some(w) = backend.capabilities().ok().and_then(|c| c.warning()) {
            eprintln!("warning: {w}");
        }
    }
    print_summary(report, &target, calls);
    if let Some(r) = &done.rollout {
        show::summary(r, cluster);
    }
    // Locally: what failed and how to see why, or whether the VIP answers.
    let served = match &target {
        Target::Local(b) => super::local_outcome::report(b, cluster, report, &gate),
        Target::Proxmox(_) => true,
    };
    Ok(if done.ok(&plan) && served {
        Exit::Ok
    } else {
        Exit::Error
    })
}

/// Why a deploy to Proxmox VE before 9.1 stops (README, "Secrets").
pub const NO_ENV_REFUSAL: &str = "refusing to create members: this Proxmox VE is older than 9.1 and has no container `env`, the only channel haimg has to deliver the cluster's secrets (MongoDB keyfile and users, VRRP password, the app's keys) at start without baking them into a template; upgrade to Proxmox VE 9.1 or later (see README, \"Secrets\")";

/// The templates to deploy, the cluster they make and the roles left out.
/// On either target a role whose template was not built is left out when
/// `--allow-missing` names it (mongo cannot be built here); its members are
/// neither deployed nor rolled out, and on Proxmox no call is made for them.
fn deployable(
    _target: &Target,
    cluster: &Cluster,
    args: &DeployArgs,
) -> Result<(BTreeMap<Role, LocalTemplate>, Cluster, Vec<Role>)> {
    let (roles, missing) = available_roles(&args.templates, cluster, &args.allow_missing)?;
    let t = templates::find_roles(&args.templates, cluster, &roles)
        .context("failed to find the built templates")?;
    Ok((t, cluster.without_roles(&missing), missing))
}

/// The roles to deploy: those with a built template, unless a missing one was not allowed.
pub fn available_roles(
    dir: &Path,
    cluster: &Cluster,
    allow_missing: &[String],
) -> Result<(Vec<Role>, Vec<Role>)> {
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for role in Role::ALL {
        if dir.join(cluster.template_name(role).file_name()).is_file() {
            present.push(role);
        } else if allow_missing.iter().any(|r| r == role.as_str()) {
            missing.push(role);
        } else {
            bail!(
                "no {role} template at {}; run `haimg build` first, or pass --allow-missing {role} to deploy without it",
                dir.join(cluster.template_name(role).file_name()).display()
            );
        }
    }
    Ok((present, missing))
}

/// Members and uploads, then one total line; the API call counts on Proxmox.
fn print_summary(r: &Report, target: &Target, calls: Option<CallCounts>) {
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
            Action::Reconfigured(d) => {
                let n = d.iter().filter(|d| d.in_place).count();
                let swap = d.len() - n;
                let mut t = if r.dry_run {
                    format!("drifted from the spec: would change {n} setting(s) in place")
                } else {
                    format!("drifted from the spec: {n} setting(s) changed in place")
                };
                if swap > 0 {
                    t.push_str(&format!(
                        ", {swap} need(s) a new member (a rollout: raise cluster.version)"
                    ));
                }
                for x in d {
                    t.push_str(&format!("\n      ~ {x}"));
                }
                t
            }
            Action::Rollout(why) => format!("rollout: {why}"),
            Action::Blocked(why) => format!("BLOCKED: {why}"),
            Action::Failed(why) => format!("FAILED: {why}"),
        };
        eprintln!("  {:<10} CT {:<6} {:<8} {what}", m.slot, m.vmid, m.node);
    }
    if let Some(f) = &r.firewall {
        print_firewall(f, target, r.dry_run);
    }
    let api = calls.map_or(String::new(), |c| {
        format!(
            "; {} API calls (GET {}, POST {}, PUT {}, DELETE {}; {} retried)",
            c.total(),
            c.get,
            c.post,
            c.put,
            c.delete,
            c.retries
        )
    });
    eprintln!("{} in {:.1}s{api}", totals(r), r.elapsed_ms as f64 / 1000.0);
}

/// The summary's counts; a dry run says what it would do ("would create 9").
pub fn totals(r: &Report) -> String {
    let created = r.count(|a| *a == Action::Created);
    let started = r.count(|a| *a == Action::Started);
    let unchanged = r.count(|a| *a == Action::Unchanged);
    let reconfigured =
        r.count(|a| matches!(a, Action::Reconfigured(d) if d.iter().any(|d| d.in_place)));
    let swaps = r.count(|a| matches!(a, Action::Reconfigured(d) if d.iter().any(|d| !d.in_place)));
    let swaps = if swaps > 0 {
        format!(", {swaps} drifted beyond an in-place change (a new member: raise cluster.version)")
    } else {
        String::new()
    };
    let blocked = r.count(|a| matches!(a, Action::Blocked(_)));
    let failed = r.count(|a| matches!(a, Action::Failed(_)));
    let rollouts = r.rollouts();
    if r.dry_run {
        format!(
            "would create {created}, would start {started}, would reconfigure {reconfigured}, would leave {unchanged} unchanged, {blocked} blocked, {failed} failed, would roll out {rollouts}{swaps}"
        )
    } else {
        format!(
            "{created} created, {started} started, {reconfigured} reconfigured, {unchanged} unchanged, {blocked} blocked, {failed} failed, {rollouts} to roll out{swaps}"
        )
    }
}

fn print_firewall(f: &PolicyReport, target: &Target, dry_run: bool) {
    let switch = match f.switch {
        Switch::On => "on",
        Switch::Off => "OFF (policy not enforced)",
        Switch::Enabled => "turned on by this run",
        Switch::WouldEnable => "would be turned on",
        Switch::Unknown => "unknown",
    };
    let changes = format!(
        "{} change{}{}",
        f.changes.len(),
        if f.changes.len() == 1 { "" } else { "s" },
        if dry_run { " planned" } else { "" }
    );
    match target {
        Target::Proxmox(_) => eprintln!("  firewall: {changes}; datacenter switch {switch}"),
        Target::Local(_) => eprintln!("  network policy ({}): {changes}", f.enforcer),
    }
    if !dry_run {
        for c in &f.changes {
            eprintln!("    {c}");
        }
    }
    for w in &f.warnings {
        eprintln!("  warning: firewall: {w}");
    }
    for e in &f.errors {
        eprintln!("  FAILED: firewall: {e}");
    }
}
