//! Shared helpers of the Proxmox integration tests: the fake, a spec pointing
//! at it, small template files, and a backend tuned to poll fast.

#![allow(dead_code)]

pub mod pve_fake;

/// A test that cannot run here says why and returns; under `CI=true` (how CI
/// runs `.ci/run`, as root with everything `make setup` installs) a skip is
/// a failure instead.
pub fn skip(test: &str, why: &str) {
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{test} must run in CI, but: {why}"
    );
    eprintln!("SKIP {test}: {why}");
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use haimg::backend::proxmox::client::RetryPolicy;
use haimg::backend::proxmox::{ApiToken, PollPolicy, ProxmoxBackend, Settings, Timeouts};
use haimg::backend::Backend;
use haimg::deploy;
use haimg::fleet::templates::{self, LocalTemplate};
use haimg::model::{Cluster, Member, Role};
use haimg::orchestrate::{self, Request, RunError};
use haimg::rollout::gate::{Expect, GateError, HealthGate, Passed};

use pve_fake::FakePve;

/// The default spec, aimed at the fake.
pub fn spec_text(endpoint: &str, template_storage: &str, tls: &str) -> String {
    let s = haimg::model::DEFAULT_SPEC;
    let start = s.find("\nproxmox:").expect("proxmox section");
    let end = s.find("\nrollout:").expect("rollout section");
    format!(
        "{}\nproxmox:\n  endpoint: {endpoint}\n  nodes: [pve1, pve2, pve3]\n  template_storage: {template_storage}\n  rootfs_storage: local-lvm\n  tls: {tls}\n{}",
        &s[..start],
        &s[end..]
    )
}

pub fn ca_tls() -> String {
    format!("{{ ca_file: {} }}", pve_fake::fixture("ca.pem"))
}

pub fn cluster(fake: &FakePve, template_storage: &str) -> Cluster {
    let text = spec_text(&fake.endpoint(), template_storage, &ca_tls());
    haimg::model::spec::parse_yaml(&text).expect("spec").cluster
}

/// Three small templates (distinct content per role) with `.sha256` sidecars.
pub fn write_templates(dir: &Path, cluster: &Cluster, salt: &str) -> PathBuf {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for r in Role::ALL {
        let path = out.join(cluster.template_name(r).file_name());
        let mut data = Vec::new();
        for i in 0..20_000u32 {
            data.extend_from_slice(format!("{salt}{r}{i}\n").as_bytes());
        }
        std::fs::write(&path, &data).unwrap();
        let sha = haimg::build::hash::sha256_file(&path).unwrap();
        std::fs::write(
            format!("{}.sha256", path.display()),
            format!("{sha}  {}\n", path.file_name().unwrap().to_string_lossy()),
        )
        .unwrap();
    }
    out
}

pub fn find_templates(out: &Path, cluster: &Cluster) -> BTreeMap<Role, LocalTemplate> {
    templates::find(out, cluster).unwrap()
}

/// Fast polling and retries; short timeouts so a stuck test fails quickly.
pub fn settings() -> Settings {
    Settings {
        timeouts: Timeouts {
            request: Duration::from_secs(10),
            upload_body: Duration::from_secs(20),
            upload_task: Duration::from_secs(10),
            create: Duration::from_secs(10),
            start: Duration::from_secs(10),
            stop: Duration::from_secs(10),
            destroy: Duration::from_secs(10),
            move_volume: Duration::from_secs(10),
        },
        poll: PollPolicy {
            first: Duration::from_millis(2),
            max: Duration::from_millis(20),
        },
        retry: RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(2),
            max: Duration::from_millis(20),
        },
        progress: false,
        log_tail: 8,
    }
}

pub fn backend(cluster: &Cluster) -> ProxmoxBackend {
    backend_with(cluster, settings())
}

pub fn backend_with(cluster: &Cluster, s: Settings) -> ProxmoxBackend {
    let token = ApiToken::parse(&pve_fake::token()).unwrap();
    ProxmoxBackend::new(&cluster.proxmox, token, s).unwrap()
}

/// A health gate for runs that swap nothing: being asked is a test failure.
pub struct NoGate;

impl HealthGate for NoGate {
    fn wait_healthy(&self, _: &Cluster, e: &Expect, _: Duration) -> Result<Passed, GateError> {
        Err(GateError::Mongo(format!(
            "no health gate in this test, asked for {}",
            e.slot
        )))
    }
    fn mongo_primary(&self, _: &Cluster) -> Result<Option<String>, GateError> {
        Err(GateError::Mongo("no health gate in this test".into()))
    }
    fn mongo_step_down(&self, _: &Cluster, _: &Member, _: Duration) -> Result<(), GateError> {
        Err(GateError::Mongo("no health gate in this test".into()))
    }
}

/// `haimg deploy --yes` as the CLI runs it ([`haimg::orchestrate`]), on a
/// target where nothing needs a blue/green swap; the converge's report.
pub fn deploy<B: Backend + Sync + ?Sized>(
    b: &B,
    cluster: &Cluster,
    tpl: &BTreeMap<Role, LocalTemplate>,
    dry_run: bool,
) -> Result<deploy::Report, RunError> {
    let req = Request {
        dry_run,
        ..Request::deploy(cluster, tpl.clone())
    };
    let opts = haimg::rollout::Options::from_cluster(cluster, dry_run);
    let mut quiet = |_: &haimg::rollout::Event<'_>| std::ops::ControlFlow::Continue(());
    let (plan, report) = orchestrate::run(b, req, &NoGate, opts, &mut quiet)?;
    assert!(!plan.swaps(), "{}", haimg::cli::show::plan(&plan.rollout));
    Ok(report.converge.expect("a deploy converges"))
}

/// The converge alone ([`deploy::plan`], [`deploy::execute`]): members of
/// other templates are left to the rollout.
pub fn converge<B: Backend + Sync + ?Sized>(
    b: &B,
    cluster: &Cluster,
    tpl: &BTreeMap<Role, LocalTemplate>,
) -> deploy::Report {
    let inventory = b.inventory().unwrap();
    let plan = deploy::plan(b, cluster, tpl, &inventory, false);
    deploy::execute(b, cluster, tpl, &plan).unwrap()
}
