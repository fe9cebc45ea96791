//! `haimg deploy`, `status`, `rollback` and `gc` through the binary against
//! the local LXC backend (a spec without `proxmox.endpoint`).
//!
//! Without root: the errors a user meets (`--dry-run` has no local meaning)
//! and the answers on a cluster that was never deployed. With root and LXC:
//! a cluster of 2 lb and 2 webapp members (mongo left out with
//! `--allow-missing mongo`, as on a host that cannot build it) from tiny
//! busybox templates whose PID 1 answers the rollout's health gates the way
//! the real images do: lb `/haimg/lb-health` with its slot on its own address
//! and the VIP, webapp `/api/health` with the template's version. The test
//! deploys 1.0.0, rolls out 1.1.0, rolls back, rolls forward again and
//! collects the old standbys and templates, each through the CLI, and checks
//! what serves after each step from inside the cluster's client namespace.
//! Two more tests SIGKILL a `haimg deploy --yes` rollout at chosen points
//! (green half built, green started but not yet live, blue stopped) and check
//! that the next `haimg deploy` finishes it, or `haimg rollback` undoes it.
//! The real images' gates (keepalived, nginx, node) are exercised by the
//! golden scenarios (`haimg test`, `make golden`).

use crate::local_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use haimg::backend::Backend;
use haimg::model::{Cluster, Role};
use haimg::probe::{http, Origin};
use local_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_haimg");

/// Run the binary with its state under `state_root`; (exit code, stdout, stderr).
fn haimg(state_root: &Path, spec: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN)
        .arg("--spec")
        .arg(spec)
        .args(args)
        .env("HAIMG_STATE_DIR", state_root)
        .env("HAIMG_SECRETS_DIR", state_root.join(".secrets"))
        .env("RUST_LOG", "warn")
        .env_remove("HAIMG_PVE_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// The test cluster's spec at `version`: the default spec with two lb and
/// two webapp members, short health timeouts, one version kept by gc.
fn spec_text(version: &str) -> String {
    let text: String = haimg::model::DEFAULT_SPEC
        .lines()
        .filter(|l| !l.contains("slot: nginx3") && !l.contains("slot: webapp3"))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = text
        .replace("  version: 1.0.0\n", &format!("  version: {version}\n"))
        .replace("fail_timeout_s: 5", "fail_timeout_s: 1")
        .replace("health_timeout_s: 120", "health_timeout_s: 30")
        .replace("keep_versions: 2", "keep_versions: 1");
    assert!(out.contains(&format!("  version: {version}\n")));
    assert!(out.contains("keep_versions: 1") && out.contains("fail_timeout_s: 1"));
    out
}

fn write_spec(dir: &Path, version: &str) -> (PathBuf, Cluster) {
    let p = dir.join(format!("haimg-{version}.yaml"));
    let text = spec_text(version);
    std::fs::write(&p, &text).unwrap();
    let cluster = haimg::model::spec::parse_yaml(&text).expect("spec").cluster;
    (p, cluster)
}

/// Timings, paths and content hashes vary from run to run: `dir` (the
/// test's files) and `$HAIMG_STATE_DIR` (the cluster's) are redacted.
fn clean(s: &str, dir: &Path) -> String {
    let state = std::env::temp_dir().join("haimg-test-");
    let s = s.replace(&dir.display().to_string(), "[DIR]");
    let s = regex::Regex::new(&format!(
        r"{}\w+",
        regex::escape(&state.display().to_string())
    ))
    .unwrap()
    .replace_all(&s, "[STATE]");
    let s = regex::Regex::new(r"\d+\.\d+s")
        .unwrap()
        .replace_all(&s, "[T]s")
        .into_owned();
    regex::Regex::new(r"[0-9a-f]{12}")
        .unwrap()
        .replace_all(&s, "[HASH]")
        .into_owned()
}

#[test]
fn dry_run_is_refused_locally_by_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec, _) = write_spec(tmp.path(), "1.0.0");
    let mut seen = String::new();
    for cmd in ["deploy", "rollback", "gc"] {
        let (code, stdout, err) = haimg(tmp.path(), &spec, &[cmd, "--dry-run"]);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(stdout.is_empty(), "{cmd}: stdout is data: {stdout}");
        seen.push_str(&format!("$ haimg {cmd} --dry-run\n{err}"));
    }
    insta::assert_snapshot!(seen, @r"
    $ haimg deploy --dry-run
    error: --dry-run lists Proxmox API calls; the local backend has none (set proxmox.endpoint)
    $ haimg rollback --dry-run
    error: --dry-run lists Proxmox API calls; the local backend has none (set proxmox.endpoint)
    $ haimg gc --dry-run
    error: --dry-run lists Proxmox API calls; the local backend has none (set proxmox.endpoint)
    ");
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().all(|e| e
            .unwrap()
            .path()
            .extension()
            .is_some_and(|x| x == "yaml")),
        "no state directory was made"
    );
}

#[test]
fn deploy_without_a_built_template_names_the_way_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec, _) = write_spec(tmp.path(), "1.0.0");
    let none = tmp.path().join("none");
    let (code, _, err) = haimg(
        tmp.path(),
        &spec,
        &["deploy", "--templates", none.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    insta::assert_snapshot!(clean(&err, tmp.path()), @"error: no lb template at [DIR]/none/haimg-lb_1.0.0_amd64.tar.zst; run `haimg build` first, or pass --allow-missing lb to deploy without it");
}

/// Nothing deployed: rollback has nothing to go back to and gc nothing to
/// remove (neither is an error); status lists every slot as not deployed
/// and fails. None of them creates anything.
#[test]
fn commands_on_a_cluster_never_deployed() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec, _) = write_spec(tmp.path(), "1.0.0");
    let mut seen = String::new();
    for (args, want) in [
        (&["rollback", "--yes"][..], 0),
        (&["gc", "--yes"], 0),
        (&["status"], 1),
    ] {
        let (code, stdout, err) = haimg(tmp.path(), &spec, args);
        assert_eq!(code, want, "{args:?}: {err}");
        seen.push_str(&format!("$ haimg {}\n{stdout}{err}", args.join(" ")));
    }
    insta::assert_snapshot!(seen, @r"
        $ haimg rollback --yes
        rollback of cluster haimg: nothing to do: no rollout has happened: there is no standby to go back to
        $ haimg gc --yes
        gc of cluster haimg: no member deployed (rollout.keep_versions = 1)
          nothing to remove
        $ haimg status
        cluster haimg (spec version 1.0.0)
        slot     tier    node  live  standby  state
        nginx1   lb      pve1  -     -        not deployed
        nginx2   lb      pve2  -     -        not deployed
        mongo1   mongo   pve1  -     -        not deployed
        mongo2   mongo   pve2  -     -        not deployed
        mongo3   mongo   pve3  -     -        not deployed
        webapp1  webapp  pve1  -     -        not deployed
        webapp2  webapp  pve2  -     -        not deployed
        ");
    assert!(!tmp.path().join("haimg").exists(), "no state directory");
}

/// A busybox PID 1 that answers the rollout's health gates by role: lb
/// `/haimg/lb-health` (its slot) on port 80, and the preferred master holds
/// the VIP on eth0 (standing in for keepalived: the VIP is gone while the
/// master's slot swaps, and back with its green, which the master's gate
/// waits for); webapp `/api/health` with the template's version on port 3000.
/// It stops on the halt signal, as haimg-init does.
const ROLE_INIT: &str = r#"#!/bin/sh
PATH=/bin
echo "role-init: $HAIMG_ROLE $HAIMG_SLOT pid $$"
ip link set lo up
version=$(cat /etc/haimg-test/version)
mkdir -p /run/www
case "$HAIMG_ROLE" in
lb)
  if [ "$HAIMG_SLOT" = "$(cat /etc/haimg-test/master)" ]; then
    ip addr add "$(cat /etc/haimg-test/vip)/32" dev eth0
  fi
  mkdir -p /run/www/haimg
  echo "$HAIMG_SLOT" > /run/www/haimg/lb-health
  port=80 ;;
webapp)
  mkdir -p /run/www/api
  printf '{"status":"ok","version":"%s","slot":"%s"}\n' "$version" "$HAIMG_SLOT" > /run/www/api/health
  port=3000 ;;
*)
  port=80 ;;
esac
httpd -f -p "$port" -h /run/www &
child=$!
halt() { echo "role-init: halt signal $1"; kill $child; wait $child; exit 0; }
trap 'halt PWR' PWR
trap 'halt TERM' TERM
echo "role-init: serving version $version on port $port"
while :; do wait $child; done
"#;

/// lb and webapp templates of `cluster.version` in `<dir>/out-<version>`.
fn templates(dir: &Path, cluster: &Cluster) -> PathBuf {
    let out = dir.join(format!("out-{}", cluster.version));
    std::fs::create_dir_all(&out).unwrap();
    let vip = cluster.network.vip.to_string();
    let (built, _) = build_template_from(
        dir,
        &cluster.version,
        Some(ROLE_INIT),
        &[
            ("/etc/haimg-test/version", &format!("{}\n", cluster.version)),
            ("/etc/haimg-test/vip", &format!("{vip}\n")),
            (
                "/etc/haimg-test/master",
                &format!("{}\n", cluster.lb.keepalived.master),
            ),
        ],
    );
    for role in [Role::Lb, Role::Webapp] {
        std::fs::copy(&built, out.join(cluster.template_name(role).file_name())).unwrap();
    }
    out
}

/// One GET from the admin address inside the client namespace.
fn get(ns: &Path, admin: Ipv4Addr, addr: SocketAddr, path: &str) -> Option<http::Response> {
    let origin = Origin::new(Some(ns.to_path_buf()), Some(admin.into()));
    origin.get(addr, path, Duration::from_secs(1)).ok()
}

/// What every webapp and the VIP serve, waiting for each to answer 200.
fn serving(tc: &TestCluster, cluster: &Cluster) -> Vec<String> {
    let net = tc.backend.network().unwrap().expect("network");
    let mut seen = Vec::new();
    for m in &cluster.webapp.members {
        let addr = SocketAddr::new(m.ip.into(), cluster.webapp.port);
        let (r, _) = wait_for(
            &format!("{addr}/api/health"),
            Duration::from_secs(30),
            || get(&net.netns_path, net.gateway, addr, "/api/health").filter(|r| r.status == 200),
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        seen.push(format!("{} {}", m.slot, v["version"].as_str().unwrap()));
    }
    let vip = SocketAddr::new(cluster.network.vip.into(), cluster.lb.nginx.listen_port);
    let (r, _) = wait_for("the VIP", Duration::from_secs(30), || {
        get(&net.netns_path, net.gateway, vip, "/haimg/lb-health").filter(|r| r.status == 200)
    });
    let by = r.body.trim().to_string();
    assert!(by == "nginx1" || by == "nginx2", "{by}");
    seen.push("vip 200".to_string());
    seen
}

/// `haimg status --json`: per slot "slot live-version/gen standby-version/gen phase".
fn status(root: &Path, spec: &Path) -> Vec<String> {
    let (code, stdout, err) = haimg(root, spec, &["status", "--json"]);
    // 4: at rest on another version than this spec's (before a rollout, after a rollback).
    assert!(code == 0 || code == 4, "{code}: {err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let m = |x: &serde_json::Value| {
        if x.is_null() {
            "-".to_string()
        } else {
            format!(
                "{}/g{} {}",
                x["version"].as_str().unwrap(),
                x["gen"],
                x["power"].as_str().unwrap()
            )
        }
    };
    v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} live {} standby {} {}",
                s["slot"].as_str().unwrap(),
                m(&s["live"]),
                m(&s["standby"]),
                s["phase"].as_str().unwrap()
            )
        })
        .collect()
}

fn step(what: &str, t0: Instant) {
    figure(&format!("haimg {what} (CLI, local)"), t0.elapsed());
}

#[test]
fn deploy_rollout_rollback_and_gc_through_the_cli() {
    if !can_run("deploy_rollout_rollback_and_gc_through_the_cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (spec1, v1) = write_spec(dir.path(), "1.0.0");
    let (spec2, v2) = write_spec(dir.path(), "1.1.0");
    // The binary's state directory is `$HAIMG_STATE_DIR/<cluster>`, the
    // guard's own: whatever happens, dropping it removes the cluster.
    let mut tc = TestCluster::new(&v1.name, false);
    let root = tc.tmp.path().to_path_buf();
    let out1 = templates(dir.path(), &v1);
    let out2 = templates(dir.path(), &v2);
    let deploy = |spec: &Path, out: &Path, yes: bool| {
        let mut args = vec![
            "deploy",
            "--no-progress",
            "--allow-missing",
            "mongo",
            "--templates",
            out.to_str().unwrap(),
        ];
        if yes {
            args.push("--yes");
        }
        haimg(&root, spec, &args)
    };

    // 1.0.0 from scratch: 4 members, mongo left out.
    let t0 = Instant::now();
    let (code, _, err) = deploy(&spec1, &out1, false);
    step("deploy 1.0.0 (4 members created)", t0);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("  mongo: no template built; its members are not deployed"),
        "{err}"
    );
    assert!(
        err.contains(
            "4 created, 0 started, 0 reconfigured, 0 unchanged, 0 blocked, 0 failed, 0 to roll out"
        ),
        "{err}"
    );
    assert!(!err.contains("API calls"), "no API calls locally: {err}");
    assert_eq!(
        serving(&tc, &v1),
        ["webapp1 1.0.0", "webapp2 1.0.0", "vip 200"]
    );

    // 1.1.0: the plan, and no change without --yes when nobody can answer.
    let before = tc.backend.list().unwrap();
    let (code, stdout, err) = deploy(&spec2, &out2, false);
    assert_eq!(code, 2, "{err}");
    assert!(stdout.is_empty());
    insta::assert_snapshot!(
        "local_cli_rollout_refused_without_yes",
        clean(&err, dir.path())
    );
    assert_eq!(tc.backend.list().unwrap(), before, "nothing changed");

    let t0 = Instant::now();
    let (code, _, err) = deploy(&spec2, &out2, true);
    step("deploy 1.1.0 (rollout of 4 slots)", t0);
    eprintln!("{err}");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("rollout of cluster haimg: 4/4 slot(s) done"),
        "{err}"
    );
    assert_eq!(
        serving(&tc, &v2),
        ["webapp1 1.1.0", "webapp2 1.1.0", "vip 200"]
    );
    assert_eq!(
        status(&root, &spec2),
        [
            "nginx1 live 1.1.0/g1 running standby 1.0.0/g0 stopped at_rest",
            "nginx2 live 1.1.0/g1 running standby 1.0.0/g0 stopped at_rest",
            "webapp1 live 1.1.0/g1 running standby 1.0.0/g0 stopped at_rest",
            "webapp2 live 1.1.0/g1 running standby 1.0.0/g0 stopped at_rest",
        ]
    );
    let (code, table, err) = haimg(&root, &spec2, &["status"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("local_cli_status_after_rollout", clean(&table, dir.path()));

    // rollback: refused without --yes, then back to 1.0.0.
    let (code, _, err) = haimg(&root, &spec2, &["rollback"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("error: refusing to roll back without confirmation: stdin is not a terminal; pass --yes"), "{err}");
    let t0 = Instant::now();
    let (code, _, err) = haimg(&root, &spec2, &["rollback", "--yes"]);
    step("rollback (4 slots)", t0);
    eprintln!("{err}");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("rollback of cluster haimg: 4/4 slot(s) done"),
        "{err}"
    );
    assert_eq!(
        serving(&tc, &v1),
        ["webapp1 1.0.0", "webapp2 1.0.0", "vip 200"]
    );
    let after_rollback = status(&root, &spec2);
    assert_eq!(
        after_rollback,
        [
            "nginx1 live 1.0.0/g0 running standby 1.1.0/g1 stopped at_rest",
            "nginx2 live 1.0.0/g0 running standby 1.1.0/g1 stopped at_rest",
            "webapp1 live 1.0.0/g0 running standby 1.1.0/g1 stopped at_rest",
            "webapp2 live 1.0.0/g0 running standby 1.1.0/g1 stopped at_rest",
        ]
    );
    // The standby is the newest generation: gc keeps it.
    let (code, _, err) = haimg(&root, &spec2, &["gc", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("  nothing to remove"), "{err}");
    assert_eq!(status(&root, &spec2), after_rollback);

    // Forward again (the same target continues generation 1), then gc
    // removes the 1.0.0 standbys and templates.
    let t0 = Instant::now();
    let (code, _, err) = deploy(&spec2, &out2, true);
    step("deploy 1.1.0 again (rollout of 4 slots)", t0);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serving(&tc, &v2),
        ["webapp1 1.1.0", "webapp2 1.1.0", "vip 200"]
    );
    assert_eq!(
        status(&root, &spec2),
        [
            "nginx1 live 1.1.0/g1 running standby 1.0.0/g0 stopped at_rest",
            "nginx2 live 1.1.0/g1 running standby 1.0.0/g0 stopped at_rest",
            "webapp1 live 1.1.0/g1 running standby 1.0.0/g0 stopped at_rest",
            "webapp2 live 1.1.0/g1 running standby 1.0.0/g0 stopped at_rest",
        ]
    );
    let stored = |b: &haimg::backend::local::LocalBackend| -> Vec<String> {
        let mut v: Vec<String> = b
            .list_templates("pve1")
            .unwrap()
            .into_iter()
            .map(|t| t.filename)
            .collect();
        v.sort();
        clean(&v.join("\n"), dir.path())
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        stored(&tc.backend),
        [
            "haimg-lb_1.0.0-[HASH]_amd64.tar.zst",
            "haimg-lb_1.1.0-[HASH]_amd64.tar.zst",
            "haimg-webapp_1.0.0-[HASH]_amd64.tar.zst",
            "haimg-webapp_1.1.0-[HASH]_amd64.tar.zst",
        ]
    );
    let (code, _, err) = haimg(&root, &spec2, &["gc"]);
    assert_eq!(code, 2, "{err}");
    let t0 = Instant::now();
    let (code, _, err) = haimg(&root, &spec2, &["gc", "--yes"]);
    step("gc (4 standbys, 2 templates)", t0);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("local_cli_gc", clean(&err, dir.path()));
    assert_eq!(
        status(&root, &spec2),
        [
            "nginx1 live 1.1.0/g1 running standby - at_rest",
            "nginx2 live 1.1.0/g1 running standby - at_rest",
            "webapp1 live 1.1.0/g1 running standby - at_rest",
            "webapp2 live 1.1.0/g1 running standby - at_rest",
        ]
    );
    assert_eq!(
        stored(&tc.backend),
        [
            "haimg-lb_1.1.0-[HASH]_amd64.tar.zst",
            "haimg-webapp_1.1.0-[HASH]_amd64.tar.zst",
        ]
    );
    assert_eq!(
        serving(&tc, &v2),
        ["webapp1 1.1.0", "webapp2 1.1.0", "vip 200"]
    );
    // Nothing left to go back to.
    let (code, _, err) = haimg(&root, &spec2, &["rollback", "--yes"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!(clean(&err, dir.path()), @"rollback of cluster haimg: nothing to do: the members of generation 1 have no older standby (removed by `haimg gc`?)");

    let vmids: Vec<u32> = v2
        .members()
        .filter(|m| m.role != Role::Mongo)
        .flat_map(|m| [m.vmid, m.vmid + v2.rollout.green_vmid_offset])
        .collect();
    let (report, took) = tc.down_and_check(&vmids);
    figure("down after the CLI rollouts", took);
    assert_eq!(report.containers.len(), 4, "{report:?}");
}

/// Where a rollout to 1.1.0 is killed: the first moment the watcher sees
/// `slot` (a first rollout: blue at the spec's VMID, green at the offset one)
/// in this state. Seen from outside, read-only: the state file (replaced
/// atomically, so readable without the lock) and `lxc-info` through the
/// test's own backend handle on the same state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// The green is recorded but still being built (state phase `creating`).
    GreenBeingCreated,
    /// Blue is stopped (drained, shut down) and green is not live yet.
    BlueStopped,
    /// Green runs, still tagged standby: its health gate is pending.
    GreenStarted,
}

#[derive(Debug, Clone, Copy)]
struct KillPoint {
    slot: &'static str,
    point: Point,
}

/// What the watcher saw of one slot, and when.
#[derive(Debug)]
struct Seen {
    /// The green's state-file phase (`creating` | `created`), if recorded.
    green_phase: Option<String>,
    blue_running: bool,
    green_running: bool,
    green_standby: bool,
}

fn look(tc: &TestCluster, blue: u32, green: u32) -> Seen {
    let state: serde_json::Value =
        std::fs::read_to_string(tc.backend.state_dir().join("state.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
    let green_phase = state["containers"][green.to_string()]["phase"]
        .as_str()
        .map(str::to_string);
    let ct = |vmid| tc.backend.status("pve1", vmid).ok().flatten();
    let running = |c: &Option<haimg::backend::ContainerStatus>| {
        c.as_ref()
            .is_some_and(|c| c.state == haimg::backend::PowerState::Running)
    };
    let (b, g) = (ct(blue), ct(green));
    let green_standby = g.as_ref().is_some_and(|c| {
        haimg::fleet::tags::MemberTags::parse(&c.tags)
            .is_some_and(|t| t.state == Some(haimg::fleet::tags::State::Standby))
    });
    Seen {
        green_phase,
        blue_running: running(&b),
        green_running: running(&g),
        green_standby,
    }
}

impl Point {
    /// `haimg status` after the kill: (exit code, the killed slot's row). A
    /// killed run's `lxc-start` may still bring green up after blue
    /// stopped, so that point accepts both rows.
    fn rows(self) -> &'static [(i32, &'static str)] {
        match self {
            // The half-built green is no container: nothing changed yet.
            // The spec says 1.1.0 and the slot runs 1.0.0 at rest: drift (exit 4).
            Point::GreenBeingCreated => &[(4, "webapp1 webapp pve1 CT 106 1.0.0 [HASH] g0 running - DRIFT: runs 1.0.0, the spec says 1.1.0 (`haimg deploy` rolls it out)")],
            Point::GreenStarted => &[(1, "webapp2 webapp pve2 CT 107 1.0.0 [HASH] g0 stopped CT 1107 1.1.0 [HASH] g1 running INTERRUPTED: `haimg deploy` finishes, `haimg rollback` undoes")],
            Point::BlueStopped => &[
                (1, "nginx1 lb pve1 CT 100 1.0.0 [HASH] g0 stopped CT 1100 1.1.0 [HASH] g1 stopped DOWN: `haimg deploy` starts it"),
                (1, "nginx1 lb pve1 CT 100 1.0.0 [HASH] g0 stopped CT 1100 1.1.0 [HASH] g1 running INTERRUPTED: `haimg deploy` finishes, `haimg rollback` undoes"),
            ],
        }
    }

    fn reached(self, s: &Seen) -> bool {
        match self {
            Point::GreenBeingCreated => s.green_phase.as_deref() == Some("creating"),
            Point::BlueStopped => {
                s.green_phase.as_deref() == Some("created") && !s.blue_running && s.green_standby
            }
            Point::GreenStarted => s.green_running && s.green_standby,
        }
    }
}

/// A `haimg` run in the background, SIGKILLed by its PID on drop if still there.
struct Background {
    child: std::process::Child,
    stderr: PathBuf,
}

impl Background {
    fn spawn(state_root: &Path, spec: &Path, args: &[&str], logs: &Path) -> Background {
        let stderr = logs.join(format!("haimg-{}.stderr", std::process::id()));
        let child = Command::new(BIN)
            .arg("--spec")
            .arg(spec)
            .args(args)
            .env("HAIMG_STATE_DIR", state_root)
            .env("HAIMG_SECRETS_DIR", state_root.join(".secrets"))
            .env("RUST_LOG", "warn")
            .env_remove("HAIMG_PVE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Background { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILL this one process (`Child::kill`: kill(pid, SIGKILL)) and reap it.
    fn kill(&mut self) -> std::process::ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        self.child.kill().unwrap();
        let st = self.child.wait().unwrap();
        assert_eq!(st.signal(), Some(libc::SIGKILL), "{st:?}");
        st
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `haimg deploy` of the templates in `out`, mongo left out.
fn deploy_args(out: &Path, yes: bool) -> Vec<&str> {
    let mut args = vec![
        "deploy",
        "--no-progress",
        "--allow-missing",
        "mongo",
        "--templates",
        out.to_str().unwrap(),
    ];
    if yes {
        args.push("--yes");
    }
    args
}

/// A fresh 1.0.0 cluster, then `haimg deploy --yes` to 1.1.0 in the
/// background, SIGKILLed at `kp`. Returns the cluster guard (its Drop downs
/// the cluster) with the paths the next commands need.
struct Killed {
    tc: TestCluster,
    root: PathBuf,
    v1: Cluster,
    v2: Cluster,
    spec2: PathBuf,
    out2: PathBuf,
}

fn deploy_then_kill(dir: &Path, kp: KillPoint) -> Killed {
    let (spec1, v1) = write_spec(dir, "1.0.0");
    let (spec2, v2) = write_spec(dir, "1.1.0");
    let tc = TestCluster::new(&v1.name, false);
    let root = tc.tmp.path().to_path_buf();
    let out1 = templates(dir, &v1);
    let out2 = templates(dir, &v2);
    let (code, _, err) = haimg(&root, &spec1, &deploy_args(&out1, false));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serving(&tc, &v1),
        ["webapp1 1.0.0", "webapp2 1.0.0", "vip 200"]
    );

    let m = v2.member_by_slot(kp.slot).unwrap();
    let (blue, green) = (m.vmid, m.vmid + v2.rollout.green_vmid_offset);
    let t0 = Instant::now();
    let mut bg = Background::spawn(&root, &spec2, &deploy_args(&out2, true), dir);
    // `haimg status` reads without the lock: it answers while the rollout runs.
    let (code, stdout, err) = haimg(&root, &spec2, &["status", "--json"]);
    assert!(code == 0 || code == 1 || code == 4, "{err}");
    serde_json::from_str::<serde_json::Value>(&stdout).expect("status --json during a rollout");
    let (seen, _) = wait_for(
        &format!("{kp:?} during the rollout"),
        Duration::from_secs(120),
        || {
            if let Ok(Some(st)) = bg.child.try_wait() {
                panic!("the rollout ended ({st}) before {kp:?}:\n{}", bg.stderr());
            }
            let s = look(&tc, blue, green);
            kp.point.reached(&s).then_some(s)
        },
    );
    bg.kill();
    figure(
        &format!("rollout killed at {} {:?} after", kp.slot, kp.point),
        t0.elapsed(),
    );
    eprintln!(
        "killed at {kp:?}: saw {seen:?}; the run's stderr:\n{}",
        bg.stderr()
    );
    Killed {
        tc,
        root,
        v1,
        v2,
        spec2,
        out2,
    }
}

/// `haimg status` after the kill: the exit code and the killed slot's row,
/// checked against [`Point::rows`].
fn killed_row(k: &Killed, dir: &Path, kp: KillPoint) -> (i32, String) {
    let slot = kp.slot;
    let (code, table, err) = haimg(&k.root, &k.spec2, &["status"]);
    eprintln!("status after the kill (exit {code}):\n{table}{err}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{slot} ")))
        .unwrap_or_else(|| panic!("no row for {slot}: {table}"));
    let row = regex::Regex::new(r" +")
        .unwrap()
        .replace_all(&clean(row, dir), " ")
        .into_owned();
    assert!(
        kp.point.rows().iter().any(|&(c, r)| c == code && r == row),
        "status after the kill: exit {code}: {row}"
    );
    (code, row)
}

const KILL_POINTS: [KillPoint; 3] = [
    KillPoint {
        slot: "webapp1",
        point: Point::GreenBeingCreated,
    },
    KillPoint {
        slot: "webapp2",
        point: Point::GreenStarted,
    },
    KillPoint {
        slot: "nginx1",
        point: Point::BlueStopped,
    },
];

#[test]
fn a_killed_rollout_resumes_on_the_next_deploy() {
    if !can_run("a_killed_rollout_resumes_on_the_next_deploy") {
        return;
    }
    for kp in KILL_POINTS {
        eprintln!("=== kill point {kp:?}");
        let dir = tempfile::tempdir().unwrap();
        let mut k = deploy_then_kill(dir.path(), kp);
        let (code, row) = killed_row(&k, dir.path(), kp);
        eprintln!("{kp:?}: exit {code}: {row}");

        let t0 = Instant::now();
        let (code, _, err) = haimg(&k.root, &k.spec2, &deploy_args(&k.out2, true));
        step(&format!("deploy 1.1.0 resuming after a kill at {kp:?}"), t0);
        eprintln!("{err}");
        assert_eq!(code, 0, "{kp:?}: {err}");
        assert_eq!(
            serving(&k.tc, &k.v2),
            ["webapp1 1.1.0", "webapp2 1.1.0", "vip 200"]
        );
        assert_eq!(
            status(&k.root, &k.spec2),
            [
                "nginx1 live 1.1.0/g1 running standby 1.0.0/g0 stopped at_rest",
                "nginx2 live 1.1.0/g1 running standby 1.0.0/g0 stopped at_rest",
                "webapp1 live 1.1.0/g1 running standby 1.0.0/g0 stopped at_rest",
                "webapp2 live 1.1.0/g1 running standby 1.0.0/g0 stopped at_rest",
            ],
            "{kp:?}"
        );
        let vmids = cluster_vmids(&k.v2);
        let (report, took) = k.tc.down_and_check(&vmids);
        figure("down after the resumed rollout", took);
        assert_eq!(report.containers.len(), 8, "{report:?}");
    }
}

/// Every VMID a rollout of the lb and webapp slots may use.
fn cluster_vmids(c: &Cluster) -> Vec<u32> {
    c.members()
        .filter(|m| m.role != Role::Mongo)
        .flat_map(|m| [m.vmid, m.vmid + c.rollout.green_vmid_offset])
        .collect()
}

#[test]
fn a_killed_rollout_can_be_rolled_back() {
    if !can_run("a_killed_rollout_can_be_rolled_back") {
        return;
    }
    let kp = KillPoint {
        slot: "nginx1",
        point: Point::BlueStopped,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut k = deploy_then_kill(dir.path(), kp);
    let (code, row) = killed_row(&k, dir.path(), kp);
    eprintln!("{kp:?}: exit {code}: {row}");

    let t0 = Instant::now();
    let (code, _, err) = haimg(&k.root, &k.spec2, &["rollback", "--yes"]);
    step(&format!("rollback after a kill at {kp:?}"), t0);
    eprintln!("{err}");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serving(&k.tc, &k.v1),
        ["webapp1 1.0.0", "webapp2 1.0.0", "vip 200"]
    );
    assert_eq!(
        status(&k.root, &k.spec2),
        [
            "nginx1 live 1.0.0/g0 running standby 1.1.0/g1 stopped at_rest",
            "nginx2 live 1.0.0/g0 running standby 1.1.0/g1 stopped at_rest",
            "webapp1 live 1.0.0/g0 running standby 1.1.0/g1 stopped at_rest",
            "webapp2 live 1.0.0/g0 running standby 1.1.0/g1 stopped at_rest",
        ]
    );
    let vmids = cluster_vmids(&k.v2);
    let (report, took) = k.tc.down_and_check(&vmids);
    figure("down after the rolled-back rollout", took);
    assert_eq!(report.containers.len(), 8, "{report:?}");
}
