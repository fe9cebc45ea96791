//! Fault injection against the Proxmox fake: every fault ends in a successful
//! retry or a clear error naming node, VMID and call, and a re-run converges.

use crate::support;

use std::time::Duration;

use haimg::deploy::{Action, Report};
use haimg::model::Cluster;
use support::pve_fake::{lock_timeout_msg, Config, FakePve, Fault, FaultKind};

struct Bed {
    fake: FakePve,
    cluster: Cluster,
    tpl: std::collections::BTreeMap<haimg::model::Role, haimg::fleet::templates::LocalTemplate>,
    _dir: tempfile::TempDir,
}

fn bed() -> Bed {
    let fake = FakePve::start(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::cluster(&fake, "templates");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let tpl = support::find_templates(&out, &cluster);
    Bed {
        fake,
        cluster,
        tpl,
        _dir: dir,
    }
}

impl Bed {
    fn run(&self) -> Report {
        self.run_with(support::settings())
    }
    fn run_with(&self, s: haimg::backend::proxmox::Settings) -> Report {
        let b = support::backend_with(&self.cluster, s);
        support::deploy(&b, &self.cluster, &self.tpl, false).expect("deploy starts")
    }
    /// A second run must leave every member running.
    fn assert_converges(&self) {
        let r = self.run();
        assert!(r.ok(), "re-run did not converge: {r:#?}");
        let st = self.fake.state();
        assert_eq!(st.containers.len(), 9);
        assert!(st.containers.values().all(|c| c.running), "not all running");
        drop(st);
        let third = self.run();
        assert_eq!(third.count(|a| *a == Action::Unchanged), 9, "{third:#?}");
    }
}

fn failures(r: &Report) -> Vec<String> {
    r.members
        .iter()
        .filter_map(|m| match &m.action {
            Action::Failed(e) | Action::Blocked(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// UPIDs carry counters that depend on thread timing.
fn redact(s: &str) -> String {
    regex::Regex::new(r"UPID:[^ :]+(:[^ :]*){6}:")
        .unwrap()
        .replace_all(s, "[UPID]")
        .into_owned()
}

#[test]
fn unauthorized_is_a_clear_error_and_a_rerun_converges() {
    let b = bed();
    b.fake.inject(Fault::new(
        "GET",
        "/cluster/resources",
        1,
        FaultKind::Status(401, String::new()),
    ));
    let be = support::backend(&b.cluster);
    let e = support::deploy(&be, &b.cluster, &b.tpl, false).unwrap_err();
    insta::assert_snapshot!(e.to_string(), @"failed to read the target's inventory: GET /cluster/resources: 401 authentication failed: the API token in HAIMG_PVE_TOKEN was refused (wrong secret, expired or deleted token?)");
    b.assert_converges();
}

#[test]
fn forbidden_create_names_the_permission_and_others_go_on() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve2/lxc$",
        1,
        FaultKind::Status(
            403,
            "Permission check failed (/vms/101, VM.Allocate)".into(),
        ),
    ));
    let r = b.run();
    assert!(!r.ok());
    assert_eq!(r.count(|a| *a == Action::Created), 8);
    insta::assert_snapshot!(failures(&r).join("\n"), @"POST /nodes/pve2/lxc on node pve2 for CT 101: 403 permission denied: the token lacks VM.Allocate on /vms/101 (grant it to the token, or turn off privilege separation)");
    b.assert_converges();
}

#[test]
fn server_error_on_start_shows_the_message_and_a_rerun_starts_it() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/105/status/start",
        1,
        FaultKind::Status(500, "CT 105 is locked (backup)".into()),
    ));
    let r = b.run();
    insta::assert_snapshot!(failures(&r).join("\n"), @"POST /nodes/pve3/lxc/105/status/start on node pve3 for CT 105: 500 CT 105 is locked (backup)");
    let again = b.run();
    assert!(again.ok());
    assert_eq!(
        again.members.iter().find(|m| m.vmid == 105).unwrap().action,
        Action::Started
    );
    b.assert_converges();
}

#[test]
fn proxy_errors_596_are_retried() {
    let b = bed();
    b.fake.inject(Fault::new(
        "GET",
        "/storage/templates/content",
        2,
        FaultKind::Status(596, String::new()),
    ));
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve3/lxc$",
        1,
        FaultKind::Status(596, String::new()),
    ));
    b.fake.inject(Fault::new(
        "GET",
        "/tasks/",
        2,
        FaultKind::Status(599, String::new()),
    ));
    let be = support::backend(&b.cluster);
    let r = support::deploy(&be, &b.cluster, &b.tpl, false).unwrap();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(b.fake.faults_left(), 0);
    assert_eq!(be.calls().retries, 5);
    b.assert_converges();
}

#[test]
fn proxy_errors_that_persist_end_in_a_clear_error() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve3/lxc$",
        99,
        FaultKind::Status(595, "Connection refused".into()),
    ));
    let r = b.run();
    assert_eq!(r.count(|a| matches!(a, Action::Failed(_))), 3);
    insta::assert_snapshot!(failures(&r)[0], @"POST /nodes/pve3/lxc on node pve3 for CT 102: 595 pveproxy could not reach the target node (gave up after 4 tries)");
    b.fake.clear_faults();
    b.assert_converges();
}

#[test]
fn failing_task_shows_the_log_tail_and_a_rerun_converges() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve1/lxc$",
        1,
        FaultKind::TaskFails("unable to create CT 100 - no space left on device".into()),
    ));
    let r = b.run();
    assert_eq!(r.count(|a| matches!(a, Action::Failed(_))), 1);
    insta::assert_snapshot!(failures(&r).join("\n"), @r"
    POST /nodes/pve1/lxc on node pve1 for CT 100: task vzcreate failed: unable to create CT 100 - no space left on device
      last lines of the task log:
      | starting vzcreate 100
      | extracting archive '/mnt/pve/templates/template/cache/x.tar.zst'
      | TASK ERROR: unable to create CT 100 - no space left on device
    ");
    assert!(
        !b.fake.state().containers.contains_key(&100),
        "a failed create leaves nothing"
    );
    b.assert_converges();
}

#[test]
fn lock_timeouts_are_retried_whether_immediate_or_in_the_task() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/101/status/start",
        2,
        FaultKind::Status(500, lock_timeout_msg(101)),
    ));
    // (A create task that times out on its config lock leaves `lock: create`
    // behind instead: `proxmox_converge.rs`.)
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/102/status/start",
        1,
        FaultKind::TaskFails(lock_timeout_msg(102)),
    ));
    let be = support::backend(&b.cluster);
    let r = support::deploy(&be, &b.cluster, &b.tpl, false).unwrap();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(b.fake.faults_left(), 0);
    assert_eq!(be.calls().retries, 3);
    b.assert_converges();
}

#[test]
fn lock_timeouts_that_persist_end_in_a_clear_error() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/104/status/start",
        99,
        FaultKind::Status(500, lock_timeout_msg(104)),
    ));
    let r = b.run();
    insta::assert_snapshot!(failures(&r).join("\n"), @"POST /nodes/pve2/lxc/104/status/start on node pve2 for CT 104: 500 can't lock file '/run/lock/lxc/pve-config-104.lock' - got timeout (gave up after 4 tries)");
}

#[test]
fn slow_task_within_its_timeout_succeeds() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/103/status/start",
        1,
        FaultKind::SlowTask(Duration::from_millis(300)),
    ));
    let r = b.run();
    assert!(r.ok(), "{r:#?}");
    assert!(b.fake.state().containers[&103].running);
}

#[test]
fn slow_task_past_its_timeout_is_reported_and_a_rerun_converges() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/107/status/start",
        1,
        FaultKind::SlowTask(Duration::from_secs(1)),
    ));
    let mut s = support::settings();
    s.timeouts.start = Duration::from_millis(200);
    let r = b.run_with(s);
    insta::assert_snapshot!(redact(&failures(&r).join("\n")), @"POST /nodes/pve2/lxc/107/status/start on node pve2 for CT 107: task vzstart still running after 0.2s (timeout); it goes on in Proxmox: [UPID]");
    // Wait (with a deadline) until the slow task has finished in the fake.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let upid = b
        .fake
        .state()
        .tasks
        .values()
        .find(|t| t.kind == "vzstart" && t.upid.contains(":107:"))
        .unwrap()
        .upid
        .clone();
    while b.fake.state().tasks[&upid]
        .ready_at
        .is_some_and(|r| std::time::Instant::now() < r)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "slow task never became ready"
        );
        std::thread::yield_now();
    }
    b.assert_converges();
}

#[test]
fn dropped_upload_connection_is_retried() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/upload",
        2,
        FaultKind::DropMidUpload(50_000),
    ));
    let be = support::backend(&b.cluster);
    let r = support::deploy(&be, &b.cluster, &b.tpl, false).unwrap();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(b.fake.faults_left(), 0);
    assert!(be.calls().retries >= 2);
    assert_eq!(b.fake.counts()["POST upload"], 5);
    b.assert_converges();
}

#[test]
fn upload_dropped_every_time_fails_clearly_and_a_rerun_converges() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/upload",
        4,
        FaultKind::DropMidUpload(10_000),
    ));
    let r = b.run();
    let f = failures(&r);
    assert!(!f.is_empty());
    let first = f
        .iter()
        .find(|e| e.contains("template upload failed"))
        .unwrap();
    assert!(
        first.starts_with("template upload failed: POST /nodes/pve1/storage/templates/upload on node pve1: no answer: "),
        "{first}"
    );
    b.assert_converges();
}
