//! The rollout commands through the binary, against the Proxmox fake:
//! `deploy` prints the plan and refuses without `--yes` when nobody can
//! answer, `--dry-run` prints the plan and every call, `status`, `rollback`
//! and `gc` read the tags. Nothing here reaches a member: gates talk to
//! member addresses, which tests must not contact, so the binary runs its
//! probes (`HAIMG_PROBE_NETNS`) in an empty network namespace of the test's
//! own, where every connect fails at once with "network is unreachable" and
//! no packet leaves (this needs root; without it the tests that plan a mongo
//! rollout say so and skip). Gates are covered with the fake gate in the
//! other rollout tests, with loopback servers in `src/rollout/gate.rs` and
//! with mongo replay servers in `tests/it/rollout_mongo.rs`.

use crate::rollout_support;
use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use rollout_support::{Bed, FakeGate, Recorder};
use support::pve_fake;

thread_local! {
    /// The namespace this test's `haimg` runs its probes in.
    static PROBE_NETNS: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// An empty network namespace (only `lo`, down) for this test's probes;
/// deleted on drop.
struct Isolated(String);

impl Isolated {
    fn new() -> Option<Isolated> {
        let name = format!("haimg-cli-{}-{:x}", std::process::id(), fastrand::u32(..));
        match Command::new("ip").args(["netns", "add", &name]).status() {
            Ok(s) if s.success() => {}
            other => {
                crate::support::skip(
                    "rollout_cli",
                    &format!("`ip netns add` failed ({other:?}); the probes of a mongo rollout need an empty namespace (root, iproute2)"),
                );
                return None;
            }
        }
        PROBE_NETNS.with(|p| *p.borrow_mut() = Some(format!("/run/netns/{name}")));
        Some(Isolated(name))
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        PROBE_NETNS.with(|p| *p.borrow_mut() = None);
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn haimg(args: &[&str], spec: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_haimg"));
    if let Some(ns) = PROBE_NETNS.with(|p| p.borrow().clone()) {
        cmd.env("HAIMG_PROBE_NETNS", ns);
    } else {
        // Never the host's namespace: a path that does not exist makes every probe fail.
        cmd.env("HAIMG_PROBE_NETNS", "/nonexistent/haimg-test-netns");
    }
    let o = cmd
        .arg("--spec")
        .arg(spec)
        .args(args)
        .env("HAIMG_PVE_TOKEN", pve_fake::token())
        .env("HAIMG_SECRETS_DIR", spec.with_file_name(".secrets"))
        // The run lock of a Proxmox cluster lives here ([`haimg::cli::runlock`]).
        .env("XDG_STATE_HOME", spec.with_file_name(".state"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn spec(bed: &Bed, version: &str) -> std::path::PathBuf {
    let p = bed.dir.path().join(format!("haimg-{version}.yaml"));
    let text = support::spec_text(&bed.fake.endpoint(), "templates", &support::ca_tls())
        .replace("  version: 1.0.0\n", &format!("  version: {version}\n"));
    std::fs::write(&p, text).unwrap();
    p
}

fn clean(s: &str, bed: &Bed) -> String {
    let re = regex::Regex::new(r"\d+\.\d+s").unwrap();
    re.replace_all(
        &s.replace(bed.dir.path().to_str().unwrap(), "[DIR]")
            .replace(&bed.fake.endpoint(), "[ENDPOINT]"),
        "[T]s",
    )
    .into_owned()
}

#[test]
fn deploy_prints_the_plan_and_refuses_without_yes_and_without_a_terminal() {
    let bed = Bed::new();
    let tpl = bed.webapp_only("w2");
    let out = tpl[&haimg::model::Role::Webapp]
        .path
        .parent()
        .unwrap()
        .to_path_buf();
    let before = bed.table();
    let (code, stdout, err) = haimg(
        &[
            "deploy",
            "--no-progress",
            "--templates",
            out.to_str().unwrap(),
        ],
        &spec(&bed, "1.0.0"),
    );
    assert_eq!(code, 2, "{err}");
    assert!(stdout.is_empty());
    insta::assert_snapshot!("cli_refuses_without_yes", clean(&err, &bed));
    assert_eq!(bed.table(), before, "nothing changed");
    assert!(reads_and_the_lease(&bed.fake.requests()));
}

#[test]
fn deploy_refuses_a_mongo_rollout_when_no_member_answers() {
    let Some(_ns) = Isolated::new() else { return };
    let bed = Bed::new();
    let v2 = bed.cluster("1.1.0");
    let tpl = bed.templates(&v2, "1.1.0");
    let out = tpl[&haimg::model::Role::Lb]
        .path
        .parent()
        .unwrap()
        .to_path_buf();
    let (code, _, err) = haimg(
        &[
            "deploy",
            "--yes",
            "--no-progress",
            "--templates",
            out.to_str().unwrap(),
        ],
        &spec(&bed, "1.1.0"),
    );
    assert_eq!(code, 1, "{err}");
    let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    insta::assert_snapshot!(last, @"error: refusing to roll out: mongo tier: cannot find the primary: mongo: mongo1: 192.168.30.103:27017: Network is unreachable (os error 101); mongo2: 192.168.30.104:27017: Network is unreachable (os error 101); mongo3: 192.168.30.105:27017: Network is unreachable (os error 101)");
    assert!(reads_and_the_lease(&bed.fake.requests()));
}

#[test]
fn dry_run_prints_the_plan_and_every_call() {
    let Some(_ns) = Isolated::new() else { return };
    let bed = Bed::new();
    let v2 = bed.cluster("1.1.0");
    let tpl = bed.templates(&v2, "1.1.0");
    let out = tpl[&haimg::model::Role::Lb]
        .path
        .parent()
        .unwrap()
        .to_path_buf();
    let before = bed.table();
    let (code, stdout, err) = haimg(
        &["deploy", "--dry-run", "--templates", out.to_str().unwrap()],
        &spec(&bed, "1.1.0"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(bed.table(), before);
    assert!(bed.fake.requests().iter().all(|r| r.method == "GET"));
    insta::assert_snapshot!("cli_dry_run_stderr", clean(&err, &bed));
    assert_eq!(
        stdout.matches("\nPOST /nodes/pve2/lxc\n").count(),
        3,
        "{stdout}"
    );
    assert_eq!(stdout.matches("/move_volume\n").count(), 3);
    // 18 tag writes, and the firewall options of each of the 9 green containers.
    assert_eq!(stdout.matches("\nPUT ").count(), 27);
    assert_eq!(stdout.matches("/firewall/options").count(), 9);
    assert!(!stdout.contains(pve_fake::TOKEN_SECRET) && !err.contains(pve_fake::TOKEN_SECRET));

    let (code, stdout, err) = haimg(
        &[
            "deploy",
            "--dry-run",
            "--json",
            "--templates",
            out.to_str().unwrap(),
        ],
        &spec(&bed, "1.1.0"),
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["rollout_plan"]["kind"], "rollout");
    assert_eq!(v["rollout_plan"]["gen"], 1);
    assert_eq!(v["rollout_plan"]["slots"][0]["steps"][0]["step"], "create");
    assert_eq!(v["rollout_plan"]["slots"][0]["green"]["vmid"], 1103);
    assert_eq!(v["rollout"]["slots"][8]["slot"], "nginx1");
    assert_eq!(v["rollout"]["slots"][8]["outcome"], "done");
    assert_eq!(v["rollout"]["slots"][8]["steps"][2]["step"], "start");
    // Uploads, five member calls per slot, three volume moves, and the green
    // containers' firewall: a group rule and options each, and for the three lb
    // members an ipfilter set with two entries.
    assert_eq!(
        v["planned_calls"].as_array().unwrap().len(),
        3 + 9 * 5 + 3 + 9 * 2 + 3 * 3
    );
}

#[test]
fn status_rollback_and_gc_read_the_tags() {
    let Some(_ns) = Isolated::new() else { return };
    let bed = Bed::new();
    let tl = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, tl.clone());
    let v2 = bed.cluster("1.1.0");
    let tpl = bed.templates(&v2, "1.1.0");
    let mut rec = Recorder::new(&bed, &v2, tl);
    assert!(
        rollout_support::roll(&bed.backend(&v2), &v2, &tpl, &gate, &mut rec)
            .unwrap()
            .ok()
    );
    let spec2 = spec(&bed, "1.1.0");

    let (code, stdout, err) = haimg(&["status"], &spec2);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("cli_status", stdout);
    let (code, stdout, _) = haimg(&["status", "--json"], &spec2);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["slots"][0]["live"]["vmid"], 1100);
    assert_eq!(v["slots"][0]["standby"]["version"], "1.0.0");
    assert_eq!(v["slots"][0]["phase"], "at_rest");

    // The spec still saying 1.0.0 while the members run 1.1.0: drift, exit 4.
    let (code, stdout, err) = haimg(&["status"], &spec(&bed, "1.0.0"));
    assert_eq!(code, 4, "{err}");
    insta::assert_snapshot!("cli_status_drift", stdout);

    // rollback: refused without a terminal, planned with --dry-run.
    let (code, _, err) = haimg(&["rollback"], &spec2);
    assert_eq!(code, 1, "mongo order unknown when no member answers: {err}");
    assert!(
        err.contains("refusing to roll back: mongo tier: cannot find the primary"),
        "{err}"
    );
    let (code, stdout, err) = haimg(&["rollback", "--dry-run"], &spec2);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.starts_with(
            "rollback of cluster haimg: 1.1.0 -> 1.0.0, undoing generation 1; 9 slot(s)"
        ),
        "{err}"
    );
    assert_eq!(stdout.matches("/status/shutdown\n").count(), 9);
    assert_eq!(stdout.matches("/move_volume\n").count(), 3);

    // gc keeps the rollback target by default.
    let (code, stdout, err) = haimg(&["gc", "--dry-run"], &spec2);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing to remove"), "{err}");
    assert!(stdout.is_empty(), "{stdout}");

    // A slot that crashed shows in status (exit 1).
    bed.crash(1107);
    let (code, stdout, _) = haimg(&["status"], &spec2);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("webapp2  webapp  pve2  CT 1107 1.1.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("DOWN: `haimg deploy` starts it"),
        "{stdout}"
    );
}

/// A Proxmox fake, a spec file pointing at it, and the three templates at
/// 1.0.0 written next to it (the fake needs the temporary directory to stay).
/// Nothing but reads, and the run lease taken and released (`/pools`).
fn reads_and_the_lease(reqs: &[pve_fake::Recorded]) -> bool {
    let lease: Vec<&str> = reqs
        .iter()
        .filter(|r| r.path == "/pools")
        .map(|r| r.method.as_str())
        .collect();
    (lease == ["POST", "GET", "DELETE"] || lease == ["POST", "DELETE"])
        && reqs.iter().all(|r| r.method == "GET" || r.path == "/pools")
}

fn fake_with_templates() -> (
    pve_fake::FakePve,
    tempfile::TempDir,
    std::path::PathBuf,
    haimg::model::Cluster,
    std::path::PathBuf,
) {
    fake_with_templates_on(pve_fake::Config::default())
}

fn fake_with_templates_on(
    config: pve_fake::Config,
) -> (
    pve_fake::FakePve,
    tempfile::TempDir,
    std::path::PathBuf,
    haimg::model::Cluster,
    std::path::PathBuf,
) {
    let fake = pve_fake::FakePve::start(config);
    let dir = tempfile::tempdir().unwrap();
    let text = support::spec_text(&fake.endpoint(), "templates", &support::ca_tls());
    let spec_path = dir.path().join("haimg.yaml");
    std::fs::write(&spec_path, &text).unwrap();
    let cluster = haimg::model::spec::parse_yaml(&text).unwrap().cluster;
    let out = support::write_templates(dir.path(), &cluster, "1.0.0");
    (fake, dir, spec_path, cluster, out)
}

/// The README's main flow on Proxmox: no mongo template here, so
/// `haimg deploy --allow-missing mongo` deploys the six lb and webapp members
/// (created, started, firewalled) and makes no call about mongo. The dry run
/// first says what it would do, in the conditional.
#[test]
fn deploy_allow_missing_mongo_creates_and_starts_the_six_lb_and_webapp_members() {
    // A fresh Proxmox (datacenter firewall off): lb and webapp go ahead with a warning.
    let (fake, dir, spec_path, cluster, out) = fake_with_templates_on(pve_fake::Config {
        datacenter_firewall: false,
        ..Default::default()
    });
    let mongo = out.join(cluster.template_name(haimg::model::Role::Mongo).file_name());
    std::fs::remove_file(&mongo).unwrap();
    std::fs::remove_file(format!("{}.sha256", mongo.display())).unwrap();
    let clean = |s: &str| {
        regex::Regex::new(r"\d+\.\d+s")
            .unwrap()
            .replace_all(
                &s.replace(dir.path().to_str().unwrap(), "[DIR]")
                    .replace(&fake.endpoint(), "[ENDPOINT]"),
                "[T]s",
            )
            .into_owned()
    };
    let tdir = out.to_str().unwrap();

    // Without the flag: the error a user sees, before any API call.
    let (code, _, err) = haimg(&["deploy", "--yes", "--templates", tdir], &spec_path);
    assert_eq!(code, 1, "{err}");
    insta::assert_snapshot!("cli_allow_missing_refused", clean(&err));
    assert!(fake.requests().is_empty());

    let (code, stdout, err) = haimg(
        &[
            "deploy",
            "--dry-run",
            "--allow-missing",
            "mongo",
            "--templates",
            tdir,
        ],
        &spec_path,
    );
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("cli_allow_missing_dry_run_stderr", clean(&err));
    assert_eq!(
        stdout.matches("\nPOST /nodes/pve1/lxc\n").count(),
        2,
        "{stdout}"
    );
    assert_eq!(stdout.matches("/status/start\n").count(), 6, "{stdout}");
    assert!(fake.requests().iter().all(|r| r.method == "GET"));
    assert_eq!(fake.containers_len(), 0);

    let (code, _, err) = haimg(
        &[
            "deploy",
            "--yes",
            "--no-progress",
            "--allow-missing",
            "mongo",
            "--templates",
            tdir,
        ],
        &spec_path,
    );
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("cli_allow_missing_deploy_stderr", clean(&err));
    let st = fake.state();
    let running: Vec<(u32, String)> = st
        .containers
        .values()
        .map(|c| {
            (
                c.vmid,
                format!(
                    "{} {}",
                    c.name(),
                    if c.running { "running" } else { "stopped" }
                ),
            )
        })
        .collect();
    drop(st);
    assert_eq!(
        running,
        [
            (100, "nginx1 running".to_string()),
            (101, "nginx2 running".to_string()),
            (102, "nginx3 running".to_string()),
            (106, "webapp1 running".to_string()),
            (107, "webapp2 running".to_string()),
            (108, "webapp3 running".to_string()),
        ]
    );
    // No call for a mongo member (the policy still names the mongo tier's
    // group and set, so a later deploy with mongo finds them in place).
    assert!(
        fake.requests()
            .iter()
            .all(|r| !["/103", "/104", "/105"].iter().any(|v| r.path.contains(v))),
        "no call about a mongo member"
    );
    assert!(fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/lxc"))
        .all(|r| !format!("{:?}", r.body).contains("mongo")));

    // A second run changes nothing.
    fake.clear_requests();
    let (code, _, err) = haimg(
        &[
            "deploy",
            "--yes",
            "--no-progress",
            "--allow-missing",
            "mongo",
            "--templates",
            tdir,
        ],
        &spec_path,
    );
    assert_eq!(code, 0, "{err}");
    assert!(reads_and_the_lease(&fake.requests()), "{err}");
}

/// Someone changes members in the Proxmox web UI (cores, memory, the
/// firewall flag of net0, a tag): `deploy --dry-run` shows each change per
/// member without making one, `deploy` puts them back with one
/// `PUT …/config` per member, and the next deploy has nothing to do.
#[test]
fn a_web_ui_change_is_shown_by_the_dry_run_and_converged_by_deploy() {
    let (fake, dir, spec_path, _, out) = fake_with_templates();
    let tdir = out.to_str().unwrap();
    let clean = |s: &str| {
        let s = regex::Regex::new(r"\d+\.\d+s")
            .unwrap()
            .replace_all(
                &s.replace(dir.path().to_str().unwrap(), "[DIR]")
                    .replace(&fake.endpoint(), "[ENDPOINT]"),
                "[T]s",
            )
            .into_owned();
        // MACs and the secrets' fingerprint are generated per run.
        let s = regex::Regex::new(r"hwaddr=[0-9A-Fa-f:]{17}")
            .unwrap()
            .replace_all(&s, "hwaddr=[MAC]")
            .into_owned();
        regex::Regex::new(r"sec-[0-9a-f]{8}")
            .unwrap()
            .replace_all(&s, "sec-[FP]")
            .into_owned()
    };
    let deploy = |extra: &[&str]| {
        let mut args = vec!["deploy", "--no-progress", "--templates", tdir];
        args.extend_from_slice(extra);
        haimg(&args, &spec_path)
    };
    let (code, _, err) = deploy(&["--yes"]);
    assert_eq!(code, 0, "{err}");

    // The web UI changes.
    {
        let mut st = fake.state();
        let c = st.containers.get_mut(&100).unwrap();
        c.config.insert("cores".into(), "4".into());
        let c = st.containers.get_mut(&106).unwrap();
        c.config.insert("memory".into(), "4096".into());
        let c = st.containers.get_mut(&104).unwrap();
        let net0 = c.config["net0"].replace(",firewall=1", "");
        c.config.insert("net0".into(), net0);
        let rootfs = c.config["rootfs"].replace("size=4G", "size=6G");
        c.config.insert("rootfs".into(), rootfs);
        let c = st.containers.get_mut(&107).unwrap();
        let tags = format!("{};by-hand", c.config["tags"]);
        c.config.insert("tags".into(), tags);
    }
    let configs = || {
        let st = fake.state();
        let v: Vec<(u32, String, bool)> = st
            .containers
            .values()
            .map(|c| (c.vmid, format!("{:?}", c.config), c.running))
            .collect();
        v
    };
    let before = configs();

    fake.clear_requests();
    let (code, _, err) = deploy(&["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("cli_drift_dry_run_stderr", clean(&err));
    assert!(fake.requests().iter().all(|r| r.method == "GET"));
    assert_eq!(configs(), before, "the dry run changed nothing");

    fake.clear_requests();
    let (code, _, err) = deploy(&["--yes"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("cli_drift_deploy_stderr", clean(&err));
    assert!(reads_and_the_lease(
        &fake
            .requests()
            .into_iter()
            .filter(|r| !r.path.ends_with("/config"))
            .collect::<Vec<_>>()
    ));
    let mut puts: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && r.path != "/pools")
        .map(|r| clean(&format!("{} {} {:?}", r.method, r.path, r.body)))
        .collect();
    puts.sort();
    insta::assert_snapshot!("cli_drift_deploy_writes", puts.join("\n"));
    {
        let st = fake.state();
        assert_eq!(st.containers[&100].config["cores"], "1");
        assert_eq!(st.containers[&106].config["memory"], "1024");
        assert!(st.containers[&104].config["net0"].contains(",firewall=1"));
        assert!(!st.containers[&107].config["tags"].contains("by-hand"));
        assert!(st.containers.values().all(|c| c.running));
    }

    fake.clear_requests();
    let (code, _, err) = deploy(&["--yes"]);
    assert_eq!(code, 0, "{err}");
    // The rootfs size cannot change in place: still reported, nothing sent.
    insta::assert_snapshot!("cli_drift_second_deploy_stderr", clean(&err));
    assert!(reads_and_the_lease(&fake.requests()));

    // Another run holds the cluster's run lock: refused before any call,
    // naming the holder; `--force-unlock` breaks it.
    let port: u16 = fake.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let lock = haimg::cli::runlock::proxmox_path("haimg", "127.0.0.1", port);
    let lock = dir.path().join(".state").join(
        lock.strip_prefix(lock.parent().unwrap().parent().unwrap())
            .unwrap(),
    );
    let holder = haimg::cli::runlock::Holder {
        command: "rollback".into(),
        pid: 4242,
        host: "other-shell".into(),
        since: 0,
    };
    let held = haimg::cli::runlock::acquire(&lock, &holder, false).unwrap();
    fake.clear_requests();
    let (code, _, err) = deploy(&["--yes"]);
    assert_eq!(code, 1, "{err}");
    let err = regex::Regex::new(r"started \d+ s ago")
        .unwrap()
        .replace(&clean(&err), "started [N] s ago")
        .replace(&format!("_{port}.run.lock"), "_[PORT].run.lock");
    insta::assert_snapshot!("cli_deploy_locked", err);
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    let (code, _, err) = deploy(&["--yes", "--force-unlock"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("breaking the run lock held by `haimg rollback` (pid 4242 on other-shell"),
        "{err}"
    );
    drop(held);
}
