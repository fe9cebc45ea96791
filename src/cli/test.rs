//! `haimg test`: boot the built templates on local LXC and run the golden scenarios.
//!
//! The cluster lives in a fresh state directory of its own (names derive from
//! it, so a run never collides with a demo cluster or another run) and is
//! removed at the end, also when a scenario fails, unless `--keep`. The table
//! (or `--json`) goes to stdout; progress to stderr. Exit 3 when a scenario fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::deploy::available_roles;
use super::{output, show, Exit};
use crate::backend::local::{LocalBackend, LocalOptions};
use crate::exec::SystemRunner;
use crate::fleet::templates;
use crate::golden::local::LocalTestbed;
use crate::golden::report::Report;
use crate::golden::scenarios;
use crate::spec_file;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Print the results as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Directory holding the built templates
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub templates: PathBuf,
    /// Run only these scenarios (default: all)
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub scenario: Vec<String>,
    /// Leave the test cluster running (its state directory is printed)
    #[arg(long)]
    pub keep: bool,
    /// Templates of a next version (e.g. built with `cluster.version` raised), for the
    /// rollout and rollback scenarios; without it they are skipped
    #[arg(long, value_name = "DIR")]
    pub next_templates: Option<PathBuf>,
    /// Test without these roles' templates (mongo is always allowed to be
    /// missing: it cannot be built here); e.g. `--allow-missing webapp` for a
    /// cluster of lbs only, as the fast VRRP profile's run in `make golden`
    #[arg(long, value_name = "ROLE", value_delimiter = ',', value_parser = ["lb", "mongo", "webapp"])]
    pub allow_missing: Vec<String>,
    /// Parent of the test cluster's state directory
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    pub state_root: PathBuf,
    /// Run on the local cluster `haimg deploy` made (same state directory, same
    /// secrets store) instead of a throw-away one; only the scenarios that
    /// leave a cluster as they found it (boot, http, sticky, rate-limit,
    /// api-db, vip-stability, network-policy, rogue-lb), by default all of those
    #[arg(long, conflicts_with_all = ["keep", "next_templates"])]
    pub deployed: bool,
}

/// mongo (which cannot be built here) and what `--allow-missing` names.
fn allowed_missing(args: &TestArgs) -> Vec<String> {
    let mut v = vec!["mongo".to_string()];
    v.extend(args.allow_missing.iter().cloned());
    v
}

pub fn run(spec: Option<&Path>, args: &TestArgs) -> Result<Exit> {
    for s in &args.scenario {
        if scenarios::find(s).is_none() {
            bail!(
                "unknown scenario {s:?}; known: {}",
                scenarios::names().join(", ")
            );
        }
    }
    let loaded = spec_file::load(spec)?;
    let cluster = &loaded.checked.cluster;
    if args.deployed {
        return run_deployed(cluster, args);
    }
    // Before any thread exists, so that every thread inherits the mask and
    // only the watcher (below) ever takes these signals.
    let interrupts = block_interrupts()?;
    super::doctor::preflight(
        "haimg test",
        crate::doctor::Need::Deploy,
        Some(&args.state_root),
    )?;
    // mongo cannot be built here (see README); its scenario reports a skip.
    let (roles, _missing) = available_roles(&args.templates, cluster, &allowed_missing(args))?;
    let templates = templates::find_roles(&args.templates, cluster, &roles)
        .context("failed to find the built templates")?;
    let state = tempfile::Builder::new()
        .prefix("haimg-test-")
        .tempdir_in(&args.state_root)
        .with_context(|| {
            format!(
                "failed to make a state directory in {}",
                args.state_root.display()
            )
        })?;
    let mut opts = LocalOptions::detect(&cluster.name);
    opts.state_dir = state.path().join(&cluster.name);
    // Held for the whole run: `haimg down --leftover-tests` leaves a test
    // alone while this lock says it runs.
    let _running = super::runlock::acquire(
        &super::runlock::local_path(&opts.state_dir),
        &super::runlock::Holder::me("test"),
        false,
    )?;
    watch_interrupts(interrupts, {
        let (name, dir, root, keep) = (
            cluster.name.clone(),
            opts.state_dir.clone(),
            state.path().to_path_buf(),
            args.keep,
        );
        move || remove_on_interrupt(&name, &dir, &root, keep)
    });
    let backend = LocalBackend::new(&cluster.name, opts, Arc::new(SystemRunner))
        .context("failed to set up the local LXC backend")?;
    eprintln!(
        "test: deploying {} to {}",
        cluster.name,
        backend.state_dir().display()
    );
    let t0 = Instant::now();
    // From here on the testbed owns the cluster and removes it on drop, also on errors.
    let mut tb = LocalTestbed::new(backend, cluster.clone(), roles);
    tb.deploy(templates)?;
    tb.teardown = !args.keep;
    tb.next_templates = args.next_templates.clone();
    if args.keep {
        let dir = state.keep();
        eprintln!(
            "test: keeping the cluster; remove it with HAIMG_STATE_DIR={} haimg down",
            dir.display()
        );
    }
    eprintln!(
        "test: deployed in {:.1}s; waiting for the cluster to answer",
        t0.elapsed().as_secs_f64()
    );
    tb.wait_ready()?;
    eprintln!("test: ready after {:.1}s", t0.elapsed().as_secs_f64());

    let chosen: Vec<_> = scenarios::SCENARIOS
        .iter()
        .filter(|s| args.scenario.is_empty() || args.scenario.iter().any(|n| n == s.name))
        .collect();
    let report = run_scenarios(&chosen, &tb);
    finish(args, &report, tb)
}

/// SIGINT, SIGTERM and SIGHUP (Ctrl-C, a CI timeout, a closed terminal),
/// blocked in this thread and every thread it starts from now on.
fn block_interrupts() -> Result<SigSet> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()
        .context("failed to block the interrupt signals")?;
    Ok(set)
}

/// A thread that waits for one of `set` and then runs `cleanup` and exits
/// with 128 + the signal's number, as a shell reports a signal's end.
fn watch_interrupts(set: SigSet, cleanup: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("test: interrupted ({sig}); removing the test cluster");
            cleanup();
            std::process::exit(128 + sig as i32);
        }
    });
}

/// What the end of a run does, on an interrupt: remove the test cluster and
/// its state directory (unless `--keep`).
fn remove_on_interrupt(cluster: &str, state_dir: &Path, root: &Path, keep: bool) {
    if keep {
        eprintln!(
            "test: keeping the cluster; remove it with HAIMG_STATE_DIR={} haimg down",
            root.display()
        );
        return;
    }
    match super::down::down_state_dir(cluster, state_dir) {
        Ok(r) => eprintln!(
            "test: removed {} container(s) and the cluster's network",
            r.containers.len()
        ),
        Err(e) => eprintln!(
            "error: failed to remove the test cluster: {e:#}; `haimg down --leftover-tests` finds it"
        ),
    }
    let _ = std::fs::remove_dir_all(root);
}

/// `haimg test --deployed`: the harmless scenarios on the cluster `haimg
/// deploy` made, found as `haimg deploy` finds it.
fn run_deployed(cluster: &haimg_model::Cluster, args: &TestArgs) -> Result<Exit> {
    let harmful: Vec<&str> = args
        .scenario
        .iter()
        .filter_map(|n| scenarios::find(n))
        .filter(|s| !s.harmless)
        .map(|s| s.name)
        .collect();
    if !harmful.is_empty() {
        bail!(
            "--deployed runs only scenarios that leave the cluster as they found it, and these kill, stop or roll members: {}; run them with `haimg test` (on a throw-away cluster)",
            harmful.join(", ")
        );
    }
    super::doctor::preflight("haimg test", crate::doctor::Need::Deploy, None)?;
    let backend = LocalBackend::new(
        &cluster.name,
        LocalOptions::detect(&cluster.name),
        Arc::new(SystemRunner),
    )
    .context("failed to set up the local LXC backend")?;
    let secrets =
        crate::secrets::Store::open(&crate::secrets::Store::default_root(), &cluster.name)
            .load()
            .context(
                "failed to read the cluster's secrets store (made by its first haimg deploy)",
            )?;
    let (roles, _) = available_roles(&args.templates, cluster, &allowed_missing(args))?;
    let templates = templates::find_roles(&args.templates, cluster, &roles)
        .context("failed to find the built templates")?;
    eprintln!(
        "test: the cluster {} deployed in {}",
        cluster.name,
        backend.state_dir().display()
    );
    let tb = LocalTestbed::attach(backend, cluster.clone(), &templates, secrets)?;
    tb.wait_ready()?;
    let chosen: Vec<_> = scenarios::SCENARIOS
        .iter()
        .filter(|s| s.harmless)
        .filter(|s| args.scenario.is_empty() || args.scenario.iter().any(|n| n == s.name))
        .collect();
    let report = run_scenarios(&chosen, &tb);
    finish(args, &report, tb)
}

fn run_scenarios(chosen: &[&scenarios::Scenario], tb: &LocalTestbed) -> Report {
    let mut report = Report {
        scenarios: Vec::new(),
    };
    for scenario in chosen.iter().copied() {
        let name = scenario.name;
        let t = Instant::now();
        eprintln!("test: {name} ...");
        let outcome = scenarios::run(scenario, tb);
        eprintln!(
            "test: {name} {:?} in {:.1}s{}",
            outcome.status,
            t.elapsed().as_secs_f64(),
            outcome
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        report.scenarios.push(outcome);
    }
    report
}

/// Print the report, then drop the testbed (removing what it owns).
fn finish(args: &TestArgs, report: &Report, tb: LocalTestbed) -> Result<Exit> {
    if args.json {
        output::json(report)?;
    } else {
        output::stdout(&show::golden(report))?;
    }
    drop(tb);
    Ok(if report.passed() {
        Exit::Ok
    } else {
        Exit::GoldenMismatch
    })
}
