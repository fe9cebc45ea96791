//! How a local `haimg deploy` ends, through the binary: a deploy whose
//! containers cannot start says which failed, where their console and LXC
//! logs are and which LXC command starts one in the foreground, never that
//! the VIP is reachable, and exits 1; a deploy whose VIP answers says so
//! with the command to reach it. (A VIP that stays silent is the third end;
//! its text is a unit snapshot in `cli::local_outcome`, since it takes the
//! whole 45 s wait.) Needs root and LXC (prints SKIP without root; under
//! `CI=true` that is a failure).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::local_support::*;
use haimg::model::{Cluster, Role};

const BIN: &str = env!("CARGO_BIN_EXE_haimg");

/// Root and LXC are here; without them the test says why it skips, and
/// under `CI=true` (where they always are) that is a failure.
fn runs_here(test: &str) -> bool {
    if can_run(test) {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{test} must run in CI"
    );
    false
}

/// One lb (the master) and one webapp of the default spec.
fn write_spec(dir: &Path) -> (PathBuf, Cluster) {
    let text: String = haimg::model::DEFAULT_SPEC
        .lines()
        .filter(|l| {
            ![
                "slot: nginx2",
                "slot: nginx3",
                "slot: webapp2",
                "slot: webapp3",
            ]
            .iter()
            .any(|s| l.contains(s))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let p = dir.join("haimg.yaml");
    std::fs::write(&p, &text).unwrap();
    let cluster = haimg::model::spec::parse_yaml(&text).expect("spec").cluster;
    (p, cluster)
}

/// A busybox PID 1: the master lb holds the VIP and serves a page on port 80.
const VIP_INIT: &str = r#"#!/bin/sh
PATH=/bin
ip link set lo up
mkdir -p /run/www
echo "$HAIMG_SLOT" > /run/www/index.html
if [ "$HAIMG_SLOT" = "$(cat /etc/haimg-test/master)" ]; then
  ip addr add "$(cat /etc/haimg-test/vip)/32" dev eth0
fi
httpd -f -p 80 -h /run/www &
child=$!
trap 'kill $child; wait $child; exit 0' PWR TERM
while :; do wait $child; done
"#;

/// lb and webapp templates in `<dir>/out`, made from `init` (none: they cannot start).
fn templates(dir: &Path, cluster: &Cluster, init: Option<&str>) -> PathBuf {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (built, _) = build_template_from(
        dir,
        "outcome",
        init,
        &[
            ("/etc/haimg-test/vip", &format!("{}\n", cluster.network.vip)),
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

fn deploy(state_root: &Path, spec: &Path, out: &Path) -> (i32, String) {
    let o = Command::new(BIN)
        .arg("--spec")
        .arg(spec)
        .args([
            "deploy",
            "--no-progress",
            "--allow-missing",
            "mongo",
            "--templates",
        ])
        .arg(out)
        .env("HAIMG_STATE_DIR", state_root)
        .env("HAIMG_SECRETS_DIR", state_root.join(".secrets"))
        .env("RUST_LOG", "warn")
        .env_remove("HAIMG_PVE_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_deploy_that_fails_says_what_failed_and_where_to_look() {
    if !runs_here("a_deploy_that_fails_says_what_failed_and_where_to_look") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (spec, cluster) = write_spec(dir.path());
    let tc = TestCluster::new(&cluster.name, false);
    let out = templates(dir.path(), &cluster, None);
    let (code, err) = deploy(tc.tmp.path(), &spec, &out);
    assert_eq!(code, 1, "{err}");
    assert!(
        !err.contains("reach it with") && !err.contains("answered"),
        "{err}"
    );
    let state = tc.tmp.path().display().to_string();
    let block: String = err
        .split_once("deploy FAILED:")
        .map(|(_, b)| format!("deploy FAILED:{b}"))
        .unwrap_or_else(|| panic!("no failure summary:\n{err}"))
        .replace(&state, "[STATE]");
    let block = regex::Regex::new(r"haimg-[0-9a-f]{8}-")
        .unwrap()
        .replace_all(&block, "haimg-[ID]-")
        .into_owned();
    let block = regex::Regex::new(r"(failed to start: ).*")
        .unwrap()
        .replace_all(&block, "${1}[LXC'S REASON]")
        .into_owned();
    insta::assert_snapshot!(block, @r"
    deploy FAILED: 2 of 2 members did not come up; to see why:
      nginx1 (CT 100): CT 100 failed to start: [LXC'S REASON]
          console  [STATE]/haimg/lxc/haimg-[ID]-100/console.log
          lxc log  [STATE]/haimg/lxc/haimg-[ID]-100/lxc.log
          start it in the foreground: lxc-start -F -P [STATE]/haimg/lxc -n haimg-[ID]-100
      webapp1 (CT 106): CT 106 failed to start: [LXC'S REASON]
          console  [STATE]/haimg/lxc/haimg-[ID]-106/console.log
          lxc log  [STATE]/haimg/lxc/haimg-[ID]-106/lxc.log
          start it in the foreground: lxc-start -F -P [STATE]/haimg/lxc -n haimg-[ID]-106
    remove everything with: haimg down
    ");
    // The log named is there to read, and says why.
    let log = tc.backend.lxc_log(100);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("ERROR"), "{text}");
}

#[test]
fn a_deploy_whose_vip_answers_says_how_to_reach_it() {
    if !runs_here("a_deploy_whose_vip_answers_says_how_to_reach_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (spec, cluster) = write_spec(dir.path());
    let tc = TestCluster::new(&cluster.name, false);
    let out = templates(dir.path(), &cluster, Some(VIP_INIT));
    let (code, err) = deploy(tc.tmp.path(), &spec, &out);
    assert_eq!(code, 0, "{err}");
    let net = tc.backend.network().unwrap().expect("network");
    let tail = err
        .split_once("\nthe VIP ")
        .map(|(_, t)| format!("the VIP {t}"))
        .unwrap_or_else(|| panic!("no VIP line:\n{err}"))
        .replace(&net.netns, "[NETNS]");
    let tail = regex::Regex::new(r"after \d+\.\d s")
        .unwrap()
        .replace(&tail, "after [T] s")
        .into_owned();
    insta::assert_snapshot!(tail, @r"
    the VIP 192.168.30.200:80 answered GET / with HTTP 200 after [T] s in the cluster's client namespace; reach it with:
      ip netns exec [NETNS] curl http://192.168.30.200:80/
    remove everything with: haimg down
    ");
}
