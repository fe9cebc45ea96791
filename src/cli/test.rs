//! `haimg test`: boot the built templates on local LXC and run the golden scenarios.
//!
//! The cluster lives in a fresh state directory of its own (names derive from
//! it, so a run never collides with a demo cluster or another run) and is
//! removed at the end, also when a scenario fails, unless `--keep`. The table
//! (or `--json`) goes to stdout; progress to stderr. Exit 3 when a scenario fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::deploy::{available_roles, without_roles};
use super::{output, Exit};
use crate::backend::local::{LocalBackend, LocalOptions};
use crate::deploy::{self, templates};
use crate::exec::SystemRunner;
use crate::golden::local::LocalTestbed;
use crate::golden::report::Report;
use crate::golden::scenarios::{self, Testbed};
use crate::spec_file;
use anyhow::{bail, Context, Result};

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
    /// Parent of the test cluster's state directory
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    pub state_root: PathBuf,
}

pub fn run(spec: Option<&Path>, args: &TestArgs) -> Result<Exit> {
    for s in &args.scenario {
        if !scenarios::ALL.contains(&s.as_str()) {
            bail!(
                "unknown scenario {s:?}; known: {}",
                scenarios::ALL.join(", ")
            );
        }
    }
    let loaded = spec_file::load(spec)?;
    let cluster = &loaded.checked.cluster;
    super::doctor::preflight(
        "haimg test",
        crate::doctor::Need::Deploy,
        Some(&args.state_root),
    )?;
    // mongo cannot be built here (see README); its scenario reports a skip.
    let (roles, missing) = available_roles(&args.templates, cluster, &["mongo".to_string()])?;
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
    let backend = LocalBackend::new(&cluster.name, opts, Arc::new(SystemRunner))
        .context("failed to set up the local LXC backend")?;
    eprintln!(
        "test: deploying {} to {}",
        cluster.name,
        backend.state_dir().display()
    );
    let t0 = Instant::now();
    let target = without_roles(cluster, &missing);
    // From here on the testbed owns the cluster and removes it on drop, also on errors.
    let mut tb = LocalTestbed::new(backend, cluster.clone(), roles);
    let report =
        deploy::deploy(&tb.backend, &target, &templates, false).context("deploy failed")?;
    if !report.ok() {
        bail!("deploy failed: {}", serde_json::to_string(&report.members)?);
    }
    tb.prepare()?;
    tb.teardown = !args.keep;
    tb.backend
        .apply_policy(&haimg_model::policy::derive(cluster))
        .context("failed to apply the network policy to the test bridge")?;
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
    wait_ready(&tb)?;
    eprintln!("test: ready after {:.1}s", t0.elapsed().as_secs_f64());

    let names: Vec<&str> = if args.scenario.is_empty() {
        scenarios::ALL.to_vec()
    } else {
        scenarios::ALL
            .iter()
            .copied()
            .filter(|n| args.scenario.iter().any(|s| s == n))
            .collect()
    };
    let mut report = Report {
        scenarios: Vec::new(),
    };
    for name in names {
        let t = Instant::now();
        eprintln!("test: {name} ...");
        let outcome = scenarios::run(name, &tb);
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
    if args.json {
        output::json(&report)?;
    } else {
        output::stdout(&report.table())?;
    }
    drop(tb);
    Ok(if report.passed() {
        Exit::Ok
    } else {
        Exit::GoldenMismatch
    })
}

/// Every lb and webapp answers, and the VIP serves a page from the master lb.
fn wait_ready(tb: &LocalTestbed) -> Result<()> {
    use crate::golden::load::{self, LoadSpec};
    let c = tb.cluster();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut targets = vec![(
        std::net::SocketAddr::new(c.network.vip.into(), c.lb.nginx.listen_port),
        "/api/health",
    )];
    for m in &c.webapp.members {
        targets.push((
            std::net::SocketAddr::new(m.ip.into(), c.webapp.port),
            "/api/health",
        ));
    }
    for m in &c.lb.members {
        targets.push((
            std::net::SocketAddr::new(m.ip.into(), c.lb.nginx.listen_port),
            "/haimg/lb-health",
        ));
    }
    let ns = tb.client_netns();
    let admin = tb.admin_source();
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            if let Some(ns) = &ns {
                load::enter_netns(ns)?;
            }
            let master = &c.lb.keepalived.master;
            for (addr, path) in &targets {
                let mut spec = LoadSpec::new(*addr, path);
                spec.source = Some(admin.into());
                spec.timeout = Duration::from_secs(1);
                loop {
                    let answer = load::get(&spec);
                    // The VIP must be settled on the configured master: keepalived
                    // starts every member as BACKUP and the master preempts a few
                    // seconds later, which would cut scenarios' connections.
                    let settled = addr.ip() != std::net::IpAddr::from(c.network.vip)
                        || answer
                            .as_ref()
                            .is_ok_and(|r| r.served_by.as_deref() == Some(master));
                    if answer.is_ok_and(|r| r.status == 200) && settled {
                        break;
                    }
                    if Instant::now() >= deadline {
                        bail!("{addr}{path} did not answer 200 within 90 s");
                    }
                    std::thread::sleep(Duration::from_millis(200)); // polling interval
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("readiness check panicked"))?
    })
}
