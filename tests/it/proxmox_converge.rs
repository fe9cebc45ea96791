//! Proxmox under real API semantics, fault by fault: answers lost after the
//! node did the work (596-599, dropped connections), failed tasks, the
//! `lock: create` a failed create leaves, quorum loss, old servers that end
//! TLS without close_notify. Every case either converges in the run or stops
//! with a clear message, and the next run converges; no call that may have run
//! is sent again blindly, and the fake sees no request it refuses as invalid.
//! NOTES.md keeps the table of these cases and their outcomes.

use crate::rollout_support;
use crate::support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haimg::backend::proxmox::{ApiToken, ProxmoxBackend, START_TRIES};
use haimg::backend::{Backend, BackendError, Capabilities, StoredTemplate};
use haimg::deploy::{Action, Report};
use haimg::model::{Cluster, Role};
use rollout_support::{FakeGate, Recorder};
use support::pve_fake::http::TlsClose;
use support::pve_fake::{
    self, lock_timeout_msg, Body, Config, FakePve, Fault, FaultKind, Recorded, NO_QUORUM,
};

struct Bed {
    fake: FakePve,
    cluster: Cluster,
    tpl: BTreeMap<Role, haimg::fleet::templates::LocalTemplate>,
    _dir: tempfile::TempDir,
}

fn bed() -> Bed {
    bed_with(Config::default())
}

fn bed_with(cfg: Config) -> Bed {
    let fake = FakePve::start(cfg);
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
    fn backend(&self) -> ProxmoxBackend {
        support::backend(&self.cluster)
    }

    fn deploy(&self) -> Report {
        support::deploy(&self.backend(), &self.cluster, &self.tpl, false).expect("deploy starts")
    }

    /// The next run converges: every member runs, and one more run changes
    /// nothing and writes nothing.
    fn assert_converged(&self) {
        let next = self.deploy();
        assert!(next.ok(), "the next run did not converge: {next:#?}");
        {
            let st = self.fake.state();
            assert_eq!(st.containers.len(), 9, "{:?}", st.containers.keys());
            assert!(
                st.containers
                    .values()
                    .all(|c| c.running && c.lock.is_none()),
                "not all running and unlocked"
            );
        }
        self.fake.clear_requests();
        let again = self.deploy();
        assert_eq!(again.count(|a| *a == Action::Unchanged), 9, "{again:#?}");
        assert!(again.ok(), "{again:#?}");
        let writes: Vec<Recorded> = self
            .fake
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect();
        assert!(
            writes.is_empty(),
            "a converged cluster got writes: {writes:#?}"
        );
    }

    /// Requests the fake refused as malformed (400) or unknown (501): none may happen.
    fn assert_no_violation(&self) {
        let bad: Vec<Recorded> = self
            .fake
            .requests()
            .into_iter()
            .filter(|r| r.status == 400 || r.status == 501)
            .collect();
        assert!(bad.is_empty(), "protocol violations: {bad:#?}");
    }

    /// POSTs of a create for `vmid`.
    fn creates_of(&self, vmid: u32) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/lxc"))
            .filter(|r| matches!(&r.body, Body::Form(f) if f.iter().any(|(k, v)| k == "vmid" && *v == vmid.to_string())))
            .count()
    }

    fn calls(&self, method: &str, path: &str) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }

    fn member(&self, vmid: u32) -> Action {
        self.deploy_report_of(&self.deploy(), vmid)
    }

    fn deploy_report_of(&self, r: &Report, vmid: u32) -> Action {
        r.members
            .iter()
            .find(|m| m.vmid == vmid)
            .unwrap_or_else(|| panic!("no member {vmid}: {r:#?}"))
            .action
            .clone()
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
fn an_answer_lost_after_the_create_ran_is_settled_by_reading_the_state() {
    let b = bed();
    // pve2 gets a 596 for CT 101's create after the node made it, pve3 a closed
    // connection for CT 102's; pve1 a 596 before anything ran.
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve2/lxc$",
        1,
        FaultKind::After(596),
    ));
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve3/lxc$",
        1,
        FaultKind::DropAfter,
    ));
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve1/lxc$",
        1,
        FaultKind::Status(596, String::new()),
    ));
    let r = b.deploy();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(r.count(|a| *a == Action::Created), 9);
    assert_eq!(b.fake.faults_left(), 0);
    // The creates that ran were not sent again; the one that did not run was.
    assert_eq!((b.creates_of(101), b.creates_of(102)), (1, 1));
    // (A fault answered before the body is read is recorded without it.)
    assert_eq!(b.calls("POST", "/nodes/pve1/lxc"), 3 + 1);
    // No create met "already exists": every answer to a create is 200 or the fault.
    let create_answers: Vec<u16> = b
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/lxc"))
        .map(|r| r.status)
        .collect();
    assert!(
        create_answers.iter().all(|s| [200, 596, 0].contains(s)),
        "{create_answers:?}"
    );
    b.assert_no_violation();
    b.assert_converged();
}

#[test]
fn an_answer_lost_after_the_start_ran_is_not_sent_again() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/104/status/start",
        1,
        FaultKind::After(597),
    ));
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/105/status/start",
        1,
        FaultKind::DropAfter,
    ));
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/103/status/start",
        1,
        FaultKind::Status(595, "Connection refused".into()),
    ));
    let r = b.deploy();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(b.calls("POST", "/nodes/pve2/lxc/104/status/start"), 1);
    assert_eq!(b.calls("POST", "/nodes/pve3/lxc/105/status/start"), 1);
    // 595: pveproxy never reached the node, so the client sent it again at once.
    assert_eq!(b.calls("POST", "/nodes/pve1/lxc/103/status/start"), 2);
    b.assert_no_violation();
    b.assert_converged();
}

#[test]
fn a_retried_create_that_meets_its_own_container_is_success_and_a_foreign_one_is_not() {
    let b = bed();
    assert!(b.deploy().ok());
    let be = b.backend();
    let m = b.cluster.member_by_slot("nginx2").unwrap().clone();
    let stored: StoredTemplate = be
        .list_templates(&m.node)
        .unwrap()
        .into_iter()
        .find(|t| t.filename.starts_with("haimg-lb_"))
        .unwrap();
    let caps = be.capabilities().unwrap();
    let spec =
        haimg::fleet::members::container_spec(&b.cluster, &m, &b.tpl[&Role::Lb], &stored, caps);
    b.fake.clear_requests();
    // As if the first create's answer had been lost and the call sent again:
    // Proxmox answers "CT 101 already exists", and the container is the one asked for.
    be.create(&spec)
        .expect("our own container counts as created");
    assert_eq!(b.creates_of(101), 1);
    assert_eq!(
        b.fake.requests().iter().filter(|r| r.status == 500).count(),
        1
    );

    // The same VMID held by somebody else's guest is an error naming the difference.
    {
        let mut st = b.fake.state();
        st.containers.remove(&101);
        st.add_foreign(101, "pve2", "lxc");
    }
    let e = be.create(&spec).unwrap_err();
    insta::assert_snapshot!(e.to_string(), @r#"POST /nodes/pve2/lxc on node pve2 for CT 101: CT 101 already exists on node pve2 and is not the container haimg asked for: hostname "other101", not "nginx2""#);
    b.assert_no_violation();
}

#[test]
fn a_create_that_fails_on_its_config_lock_leaves_lock_create_and_says_what_to_run() {
    let b = bed();
    // The vzcreate worker of CT 102 times out on the config lock: Proxmox
    // leaves the config holding only `lock: create`.
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve3/lxc$",
        1,
        FaultKind::TaskFails(lock_timeout_msg(102)),
    ));
    let r = b.deploy();
    assert_eq!(r.count(|a| *a == Action::Created), 8, "{r:#?}");
    assert_eq!(
        b.creates_of(102),
        1,
        "a create that left a config is not sent again"
    );
    {
        let st = b.fake.state();
        let c = &st.containers[&102];
        assert_eq!(c.lock.as_deref(), Some("create"));
        assert!(c.config.is_empty());
    }
    insta::assert_snapshot!(redact(&failures(&r).join("\n")), @r"
    CT 102 on node pve3 is what haimg's failed create left behind: its config keeps the 'create' lock, which no API call can remove
      proof: task [UPID] of token root@pam!haimg failed: can't lock file '/run/lock/lxc/pve-config-102.lock' - got timeout; the config holds only the lock
      to clean it up, run as root on pve3, then deploy again:
        pct unlock 102
        pct destroy 102 --purge --destroy-unreferenced-disks
      last lines of the task log:
      | starting vzcreate 102
      | extracting archive '/mnt/pve/templates/template/cache/x.tar.zst'
      | TASK ERROR: can't lock file '/run/lock/lxc/pve-config-102.lock' - got timeout
    ");
    // The next run says the same (not "a guest haimg did not create") and touches nothing.
    b.fake.clear_requests();
    let again = b.member(102);
    let Action::Blocked(why) = &again else {
        panic!("{again:?}")
    };
    assert!(
        why.starts_with("CT 102 on node pve3 is what haimg's failed create left behind"),
        "{why}"
    );
    assert!(b
        .fake
        .requests()
        .iter()
        .all(|r| r.method == "GET" || r.path.contains("/firewall")));
    // The operator runs the two commands; the next run converges.
    {
        let mut st = b.fake.state();
        st.pct_unlock(102).unwrap();
        st.pct_destroy(102).unwrap();
    }
    assert_eq!(b.member(102), Action::Created);
    b.assert_no_violation();
    b.assert_converged();
}

#[test]
fn a_create_whose_cleanup_fails_without_quorum_is_reported_the_same_way() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve2/lxc$",
        1,
        FaultKind::CreateLeavesLock(format!("unable to create CT 101 - {NO_QUORUM}")),
    ));
    let r = b.deploy();
    let f = failures(&r);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(
        f[0].contains("CT 101 on node pve2 is what haimg's failed create left behind"),
        "{}",
        f[0]
    );
    assert!(
        f[0].contains("pct unlock 101\n    pct destroy 101 --purge --destroy-unreferenced-disks"),
        "{}",
        f[0]
    );
    {
        let mut st = b.fake.state();
        st.pct_unlock(101).unwrap();
        st.pct_destroy(101).unwrap();
    }
    assert_eq!(b.member(101), Action::Created);
    b.assert_converged();
    b.assert_no_violation();
}

#[test]
fn a_locked_create_haimg_cannot_prove_its_own_is_left_alone_with_the_commands() {
    let b = bed();
    {
        let mut st = b.fake.state();
        st.add_foreign(100, "pve1", "lxc");
        let c = st.containers.get_mut(&100).unwrap();
        c.config.clear();
        c.running = false;
        c.lock = Some("create".into());
        st.add_finished_task("pve1", "vzcreate", 100, "root@pam", "unexpected status");
    }
    let r = b.deploy();
    insta::assert_snapshot!(redact(&failures(&r).join("\n")), @r"
    CT 100 on node pve1 is locked by a create (lock: create) that haimg cannot prove its own: its last create task [UPID] was started by root@pam
      if it is a failed create nobody needs (check with `pct config 100` on pve1), run as root on pve1, then deploy again:
        pct unlock 100
        pct destroy 100 --purge --destroy-unreferenced-disks
    ");
    assert_eq!(
        b.fake.state().containers[&100].lock.as_deref(),
        Some("create")
    );
    assert_eq!(b.creates_of(100), 0);
    b.assert_no_violation();
}

#[test]
fn a_failed_start_is_tried_again_within_a_bound_then_reported_with_its_log() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/106/status/start",
        1,
        FaultKind::TaskFails("startup for container '106' failed".into()),
    ));
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/107/status/start",
        START_TRIES,
        FaultKind::TaskFails("startup for container '107' failed".into()),
    ));
    let r = b.deploy();
    assert_eq!(b.deploy_report_of(&r, 106), Action::Created);
    assert_eq!(b.calls("POST", "/nodes/pve1/lxc/106/status/start"), 2);
    assert_eq!(
        b.calls("POST", "/nodes/pve2/lxc/107/status/start"),
        START_TRIES as usize
    );
    insta::assert_snapshot!(failures(&r).join("\n"), @r"
    POST /nodes/pve2/lxc/107/status/start on node pve2 for CT 107: task vzstart failed: startup for container '107' failed (gave up after 3 tries)
      last lines of the task log:
      | starting vzstart 107
      | TASK ERROR: startup for container '107' failed
    ");
    b.assert_no_violation();
    b.assert_converged();
}

#[test]
fn lock_timeouts_inside_start_tasks_are_retried() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/101/status/start",
        2,
        FaultKind::TaskFails(lock_timeout_msg(101)),
    ));
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/108/status/start",
        2,
        FaultKind::Status(500, lock_timeout_msg(108)),
    ));
    let r = b.deploy();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(b.calls("POST", "/nodes/pve2/lxc/101/status/start"), 3);
    assert_eq!(b.calls("POST", "/nodes/pve3/lxc/108/status/start"), 3);
    b.assert_no_violation();
    b.assert_converged();
}

#[test]
fn no_quorum_is_retried_and_when_it_persists_the_run_stops_clearly() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve1/lxc$",
        2,
        FaultKind::Status(500, NO_QUORUM.into()),
    ));
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve3/lxc$",
        99,
        FaultKind::Status(500, NO_QUORUM.into()),
    ));
    let r = b.deploy();
    assert_eq!(b.deploy_report_of(&r, 100), Action::Created);
    let f = failures(&r);
    assert_eq!(f.len(), 3, "{f:#?}");
    insta::assert_snapshot!(f[0], @"POST /nodes/pve3/lxc on node pve3 for CT 102: 500 cluster not ready - no quorum? (gave up after 4 tries)");
    b.fake.clear_faults();
    b.assert_converged();
    b.assert_no_violation();
}

#[test]
fn a_dropped_upload_is_settled_by_looking_at_the_storage() {
    let b = bed();
    // The first try breaks off mid-body (nothing stored): sent again. The
    // second arrives whole and the node stores it, but the answer is lost:
    // the file is found on storage, not uploaded a third time.
    b.fake.inject(Fault::new(
        "POST",
        "/upload",
        1,
        FaultKind::DropMidUpload(10_000),
    ));
    b.fake
        .inject(Fault::new("POST", "/upload", 1, FaultKind::DropAfter));
    let r = b.deploy();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(b.fake.faults_left(), 0);
    assert_eq!(b.fake.counts()["POST upload"], 4);
    b.assert_no_violation();
    b.assert_converged();
}

#[test]
fn a_wrong_token_is_one_request_and_a_401_also_when_the_server_ends_tls_uncleanly() {
    for mode in [TlsClose::Clean, TlsClose::Unclean] {
        let b = bed_with(Config {
            tls_close: mode,
            ..Config::default()
        });
        let token = ApiToken::parse("root@pam!haimg=00000000-0000-0000-0000-000000000000").unwrap();
        let be = ProxmoxBackend::new(&b.cluster.proxmox, token, support::settings()).unwrap();
        let t0 = std::time::Instant::now();
        let e = support::deploy(&be, &b.cluster, &b.tpl, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to read the target's inventory: GET /cluster/resources: 401 authentication failed: the API token in HAIMG_PVE_TOKEN was refused (wrong secret, expired or deleted token?)",
            "{mode:?}"
        );
        assert_eq!(
            b.fake.requests().len(),
            1,
            "{mode:?}: {:#?}",
            b.fake.requests()
        );
        assert_eq!(be.calls().retries, 0);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }
}

#[test]
fn an_old_server_that_ends_tls_uncleanly_after_errors_still_converges() {
    let b = bed_with(Config {
        tls_close: TlsClose::Unclean,
        ..Config::default()
    });
    // Body-less errors (59x) end the connection without close_notify here.
    b.fake.inject(Fault::new(
        "GET",
        "/cluster/resources",
        1,
        FaultKind::Status(599, String::new()),
    ));
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve1/lxc$",
        1,
        FaultKind::Status(595, String::new()),
    ));
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/104/status/start",
        1,
        FaultKind::After(596),
    ));
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve3/lxc$",
        1,
        FaultKind::Status(
            403,
            "Permission check failed (/vms/102, VM.Allocate)".into(),
        ),
    ));
    let r = b.deploy();
    assert_eq!(b.fake.faults_left(), 0);
    insta::assert_snapshot!(failures(&r).join("\n"), @"POST /nodes/pve3/lxc on node pve3 for CT 102: 403 permission denied: the token lacks VM.Allocate on /vms/102 (grant it to the token, or turn off privilege separation)");
    assert_eq!(b.calls("POST", "/nodes/pve2/lxc/104/status/start"), 1);
    b.assert_no_violation();
    b.assert_converged();
}

#[test]
fn a_lost_answer_to_a_firewall_write_stops_the_step_and_the_next_run_converges() {
    let b = bed();
    // A datacenter IP set made, its answer lost: the step stops there.
    b.fake.inject(Fault::new(
        "POST",
        "/cluster/firewall/ipset$",
        1,
        FaultKind::After(596),
    ));
    let r = b.deploy();
    let fw = r.firewall.as_ref().unwrap();
    assert!(!fw.ok(), "{fw:#?}");
    assert_eq!(b.fake.faults_left(), 0);
    insta::assert_snapshot!(fw.errors.join("\n"), @"POST /cluster/firewall/ipset: 596 pveproxy got no complete answer from the target node");
    // Next run: a container rule written, the connection dropped before the answer.
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve3/lxc/105/firewall/rules$",
        1,
        FaultKind::DropAfter,
    ));
    let r = b.deploy();
    let fw = r.firewall.as_ref().unwrap();
    assert!(!fw.ok(), "{fw:#?}");
    assert_eq!(b.fake.faults_left(), 0);
    // Nothing was written twice: each rule of CT 105 once.
    let st = b.fake.state();
    let rules = &st.fw.guests[&105].rules;
    let mut texts: Vec<String> = rules.iter().map(|r| format!("{r:?}")).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), rules.len(), "{rules:#?}");
    drop(st);
    b.assert_no_violation();
    b.assert_converged();
}

#[test]
fn lost_answers_in_a_rollout_are_settled_and_each_call_is_sent_once() {
    let bed = rollout_support::Bed::new();
    let tl = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, tl.clone());
    let v2 = bed.cluster("1.1.0");
    let tpl = bed.templates(&v2, "1.1.0");
    let b = bed.backend(&v2);
    let serial = bed.fake.state().serial_of(104, "mp0");
    // mongo2's swap: every call that changes something loses its answer once.
    for (method, path, kind) in [
        ("POST", "/nodes/pve2/lxc$", FaultKind::After(596)),
        ("POST", "/lxc/104/status/shutdown", FaultKind::DropAfter),
        ("POST", "/lxc/104/move_volume", FaultKind::After(597)),
        ("POST", "/lxc/1104/status/start", FaultKind::After(598)),
        ("PUT", "/lxc/1104/config", FaultKind::After(596)),
        ("PUT", "/lxc/104/config", FaultKind::DropAfter),
    ] {
        bed.fake.inject(Fault::new(method, path, 1, kind));
    }
    let mut rec = Recorder::new(&bed, &v2, tl.clone());
    let r = rollout_support::roll(&b, &v2, &tpl, &gate, &mut rec).unwrap();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(bed.fake.faults_left(), 0);
    assert_eq!(
        bed.fake.state().serial_of(1104, "mp0"),
        serial,
        "the data moved once"
    );
    let count = |m: &str, p: &str| {
        bed.fake
            .requests()
            .iter()
            .filter(|r| r.method == m && r.path == p)
            .count()
    };
    assert_eq!(count("POST", "/nodes/pve2/lxc/104/status/shutdown"), 1);
    assert_eq!(count("POST", "/nodes/pve2/lxc/104/move_volume"), 1);
    assert_eq!(count("POST", "/nodes/pve2/lxc/1104/status/start"), 1);
    let bad: Vec<Recorded> = bed
        .fake
        .requests()
        .into_iter()
        .filter(|r| matches!(r.status, 400 | 500 | 501))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(
        bed.live().values().all(|(_, v)| v == "1.1.0"),
        "{:?}",
        bed.live()
    );
}

#[test]
fn lost_answers_to_stop_and_destroy_are_settled() {
    let b = bed();
    assert!(b.deploy().ok());
    let be = b.backend();
    b.fake.clear_requests();
    b.fake.inject(Fault::new(
        "POST",
        "/lxc/106/status/stop",
        1,
        FaultKind::After(596),
    ));
    b.fake
        .inject(Fault::new("DELETE", "/lxc/106", 1, FaultKind::DropAfter));
    be.stop("pve1", 106).unwrap();
    be.destroy("pve1", 106).unwrap();
    assert!(!b.fake.state().containers.contains_key(&106));
    assert_eq!(b.calls("POST", "/nodes/pve1/lxc/106/status/stop"), 1);
    assert_eq!(b.calls("DELETE", "/nodes/pve1/lxc/106"), 1);
    // Destroying what is gone is done, not an error.
    be.destroy("pve1", 106).unwrap();
    b.assert_no_violation();
}

#[test]
fn older_proxmox_says_once_what_it_means_for_the_members() {
    let b = bed_with(Config {
        release: "8.4".into(),
        ..Config::default()
    });
    let caps = b.backend().capabilities().unwrap();
    insta::assert_snapshot!(caps.warning().unwrap(), @"this Proxmox VE is older than 9.1 and has no container env, entrypoint, host-managed: the members get no HAIMG_* variables; haimg-init finds its role and address in the files Proxmox writes (/etc/hostname, /etc/hosts, /etc/network/interfaces) and brings eth0 up itself; upgrade to 9.1 or later to pass them directly");
    let all = Capabilities {
        env: true,
        entrypoint: true,
        host_managed: true,
    };
    assert_eq!(all.warning(), None);
    let r = b.deploy();
    assert!(r.ok(), "{r:#?}");
    b.assert_no_violation();
}

#[test]
fn the_fake_closes_tls_uncleanly_only_in_old_server_mode() {
    haimg::backend::proxmox::tls::install_provider();
    let ca = std::fs::read(pve_fake::fixture("ca.pem")).unwrap();
    let client = reqwest::blocking::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
        .build()
        .unwrap();
    for (mode, clean) in [(TlsClose::Clean, true), (TlsClose::Unclean, false)] {
        let fake = FakePve::start(Config {
            tls_close: mode,
            ..Config::default()
        });
        let r = client
            .get(format!("{}/api2/json/version", fake.endpoint()))
            .header("Authorization", "PVEAPIToken=root@pam!haimg=wrong")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert!(r.headers().get("content-length").is_none());
        // reqwest: "error decoding response body" caused by rustls'
        // "peer closed connection without sending TLS close_notify".
        let body = r.bytes();
        assert_eq!(body.is_ok(), clean, "{mode:?}: {body:?}");
        if let Err(e) = body {
            let chain = haimg::backend::proxmox::client::error_chain(&e);
            assert!(chain.contains("close_notify"), "{chain}");
        }
    }
}

#[test]
fn a_leftover_is_exposed_to_orchestration_as_its_own_error() {
    let b = bed();
    b.fake.inject(Fault::new(
        "POST",
        "/nodes/pve1/lxc$",
        1,
        FaultKind::TaskFails(lock_timeout_msg(100)),
    ));
    let be = b.backend();
    let m = b.cluster.member_by_slot("nginx1").unwrap().clone();
    let st = be
        .upload_template(
            &m.node,
            &b.tpl[&Role::Lb].path,
            &b.tpl[&Role::Lb].stored_name(),
            &b.tpl[&Role::Lb].sha256,
        )
        .unwrap();
    let caps = be.capabilities().unwrap();
    let spec = haimg::fleet::members::container_spec(&b.cluster, &m, &b.tpl[&Role::Lb], &st, caps);
    let Err(BackendError::CreateLeftover(l)) = be.create(&spec) else {
        panic!("expected a leftover")
    };
    assert!(l.owned);
    assert_eq!((l.node.as_str(), l.vmid), ("pve1", 100));
    assert_eq!(
        l.commands,
        [
            "pct unlock 100",
            "pct destroy 100 --purge --destroy-unreferenced-disks"
        ]
    );
    let again = be.create_leftover("pve1", 100).unwrap().unwrap();
    assert_eq!(again, *l);
    assert_eq!(be.create_leftover("pve1", 101).unwrap(), None);
}

#[test]
fn lost_answers_in_a_rollback_are_settled_and_each_call_is_sent_once() {
    let bed = rollout_support::Bed::new();
    let tl = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, tl.clone());
    let v2 = bed.cluster("1.1.0");
    let tpl = bed.templates(&v2, "1.1.0");
    let mut rec = Recorder::new(&bed, &v2, tl.clone());
    let r = rollout_support::roll(&bed.backend(&v2), &v2, &tpl, &gate, &mut rec).unwrap();
    assert!(r.ok(), "{r:#?}");
    *gate.primary.lock().unwrap() = Some("mongo2".into());
    bed.fake.clear_requests();
    let serial = bed.fake.state().serial_of(1103, "mp0");
    // mongo1's swap back (CT 1103 -> CT 103) loses every answer once.
    for (method, path, kind) in [
        ("POST", "/lxc/1103/status/shutdown", FaultKind::After(596)),
        ("POST", "/lxc/1103/move_volume", FaultKind::DropAfter),
        ("POST", "/lxc/103/status/start", FaultKind::After(599)),
        ("PUT", "/lxc/103/config", FaultKind::DropAfter),
        ("PUT", "/lxc/1103/config", FaultKind::After(597)),
    ] {
        bed.fake.inject(Fault::new(method, path, 1, kind));
    }
    let v1 = bed.v1.clone();
    let mut rec = Recorder::new(&bed, &v1, tl.clone());
    let r = rollout_support::roll_back(&bed.backend(&v1), &v1, &gate, &mut rec).unwrap();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(bed.fake.faults_left(), 0);
    assert_eq!(
        bed.fake.state().serial_of(103, "mp0"),
        serial,
        "the data came back once"
    );
    let count = |m: &str, p: &str| {
        bed.fake
            .requests()
            .iter()
            .filter(|r| r.method == m && r.path == p)
            .count()
    };
    assert_eq!(count("POST", "/nodes/pve1/lxc/1103/status/shutdown"), 1);
    assert_eq!(count("POST", "/nodes/pve1/lxc/1103/move_volume"), 1);
    assert_eq!(count("POST", "/nodes/pve1/lxc/103/status/start"), 1);
    let bad: Vec<Recorded> = bed
        .fake
        .requests()
        .into_iter()
        .filter(|r| matches!(r.status, 400 | 500 | 501))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(
        bed.live()
            .iter()
            .all(|(_, (vmid, v))| *vmid < 1000 && v == "1.0.0"),
        "{:?}",
        bed.live()
    );
}
