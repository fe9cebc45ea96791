//! The rollout's mongo gates ([`NetGate`] with [`WireMongo`]) at the wire
//! level: primary detection across the members, the SECONDARY-and-caught-up
//! gate, and step-down followed by the wait for another primary.
//!
//! Every member is a replay server (`haimg_mongo::replay`) on 127.0.0.1 that
//! answers with replies recorded from real mongod shapes (sources in
//! `haimg_mongo::replay::recorded`); the gate's `resolve` points each
//! member's plan address at one of them. The replay servers keep no data and
//! hold no elections: their answers change only as scripted (in sequence, or
//! when a shared phase moves on after `replSetStepDown`). These tests pin
//! what haimg sends and how it reads the answers, never how a mongod
//! behaves; no real mongod is reachable here. Two tests run a whole
//! mongo-tier rollout through the executor against the Proxmox fake with these
//! gates: one with credentials-free replies, one with authorization on (every
//! `replSetGetStatus` and `replSetStepDown` answered 13 Unauthorized, the
//! state and lag read from `hello`, and the primary left to step down by
//! itself at its shutdown).

use crate::rollout_support;
use crate::support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use haimg::model::Cluster;
use haimg::probe::Origin;
use haimg::rollout::gate::{Expect, HealthGate, NetGate};
use haimg_model::Role;
use haimg_mongo::bson::Document;
use haimg_mongo::member::MemberState::{self, Primary, Secondary, Startup2};
use haimg_mongo::replay::recorded::{self, RsMember, NOW};
use haimg_mongo::replay::{Answer, Phase, Replay, Script};

const STATUS: &str = "replSetGetStatus";
const STEP_DOWN: &str = "replSetStepDown";

fn cluster() -> Cluster {
    haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
        .unwrap()
        .cluster
}

/// `replSetGetStatus` of member `me` of rs0 when the members are in `states`
/// (with the seconds of their last applied op).
fn status(states: [(MemberState, u32); 3], me: usize) -> Document {
    status_of("rs0", states, me)
}

fn status_of(set: &str, states: [(MemberState, u32); 3], me: usize) -> Document {
    let members: Vec<RsMember> = states
        .iter()
        .enumerate()
        .map(|(i, (s, secs))| RsMember::new(&format!("192.168.30.{}:27017", 103 + i), *s, *secs))
        .collect();
    recorded::rs_status(set, &members, me)
}

fn reply(d: Document) -> Answer {
    Answer::Reply(d)
}

/// The three members, as replay servers.
struct Tier([Replay; 3]);

impl Tier {
    fn new(scripts: [Script; 3]) -> Tier {
        Tier(scripts.map(|s| Replay::start(s).expect("a replay server on 127.0.0.1")))
    }

    /// A gate whose mongo1..3 addresses lead to these servers.
    fn gate(&self, source: Option<IpAddr>) -> NetGate {
        let map: HashMap<SocketAddr, SocketAddr> = cluster()
            .mongo
            .members
            .iter()
            .zip(&self.0)
            .map(|(m, r)| (SocketAddr::new(m.ip.into(), 27017), r.addr()))
            .collect();
        let mut g = NetGate::wire(Origin::new(None, source));
        g.every = Duration::from_millis(5);
        g.probe_timeout = Duration::from_secs(2);
        g.resolve = Box::new(move |a| map.get(&a).copied().unwrap_or(a));
        g
    }

    fn commands(&self) -> [Vec<String>; 3] {
        [0, 1, 2].map(|i| self.0[i].commands())
    }

    /// Replace the servers' addresses in `text` with `[mongoN]`.
    fn redact(&self, text: &str) -> String {
        self.0
            .iter()
            .enumerate()
            .fold(text.to_string(), |t, (i, r)| {
                t.replace(&r.addr().to_string(), &format!("[mongo{}]", i + 1))
            })
    }
}

fn expect(slot: &str) -> Expect {
    let c = cluster();
    let m = c.member_by_slot(slot).unwrap();
    Expect {
        slot: slot.into(),
        role: Role::Mongo,
        vmid: m.vmid,
        ip: m.ip,
        version: "1.1.0".into(),
        template: "bbbbbbbbbbbb".into(),
        image_hash: None,
    }
}

#[test]
fn mongo_primary_is_found_among_three_members() {
    let view = [(Secondary, NOW), (Secondary, NOW), (Primary, NOW)];
    let tier = Tier::new([0, 1, 2].map(|me| Script::new().reply(STATUS, status(view, me))));
    let p = tier.gate(None).mongo_primary(&cluster()).unwrap();
    assert_eq!(p.as_deref(), Some("mongo3"));
    assert_eq!(tier.commands(), [[STATUS], [STATUS], [STATUS]]);
    insta::assert_snapshot!(format!("{:?}", tier.0[0].request(STATUS).unwrap()), @r#"Document({"replSetGetStatus": Int32(1), "$db": String("admin")})"#);
}

#[test]
fn a_primary_of_another_set_is_not_the_primary() {
    let view = [(Primary, NOW), (Secondary, NOW), (Secondary, NOW)];
    let tier = Tier::new([
        Script::new().reply(STATUS, status_of("legacy", view, 0)),
        Script::new().reply(STATUS, status(view, 1)),
        Script::new().reply(STATUS, status(view, 2)),
    ]);
    assert_eq!(tier.gate(None).mongo_primary(&cluster()).unwrap(), None);
}

#[test]
fn no_primary_among_answering_members_is_none() {
    // mongo3 is down; the two others see no primary (an election is running).
    let view = [(Secondary, NOW), (Secondary, NOW), (Secondary, NOW)];
    let down = TcpListener::bind("127.0.0.1:0").unwrap();
    let tier = Tier::new([0, 1, 2].map(|me| Script::new().reply(STATUS, status(view, me))));
    let mut g = tier.gate(None);
    let down_addr = down.local_addr().unwrap();
    drop(down);
    let inner = std::mem::replace(&mut g.resolve, Box::new(|a| a));
    g.resolve = Box::new(move |a| {
        if a.ip() == IpAddr::from([192, 168, 30, 105]) {
            down_addr
        } else {
            inner(a)
        }
    });
    assert_eq!(g.mongo_primary(&cluster()).unwrap(), None);
}

#[test]
fn a_member_passes_its_gate_once_it_is_a_caught_up_secondary() {
    let steady = [(Primary, NOW), (Secondary, NOW), (Secondary, NOW)];
    let tier = Tier::new([
        Script::new().reply(STATUS, status(steady, 0)),
        Script::new().sequence(
            STATUS,
            vec![
                reply(recorded::status_not_yet_initialized()),
                reply(status([(Primary, NOW), (Startup2, 0), (Secondary, NOW)], 1)),
                reply(status(
                    [(Primary, NOW), (Secondary, NOW - 30), (Secondary, NOW)],
                    1,
                )),
                reply(status(
                    [(Primary, NOW), (Secondary, NOW - 1), (Secondary, NOW)],
                    1,
                )),
            ],
        ),
        Script::new().reply(STATUS, status(steady, 2)),
    ]);
    let passed = tier
        .gate(None)
        .wait_healthy(&cluster(), &expect("mongo2"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(passed.detail, "SECONDARY of rs0, 1.0s behind");
    // Not yet initiated, initial sync, behind, then caught up twice in a row.
    assert_eq!(tier.commands()[1].len(), 5);
    assert!(tier.commands()[0].is_empty() && tier.commands()[2].is_empty());
}

/// The error a user sees when mongo2 always answers `reply`.
fn gate_error(reply: Document) -> String {
    let steady = [(Primary, NOW), (Secondary, NOW), (Secondary, NOW)];
    let tier = Tier::new([
        Script::new().reply(STATUS, status(steady, 0)),
        Script::new().reply(STATUS, reply),
        Script::new().reply(STATUS, status(steady, 2)),
    ]);
    let e = tier
        .gate(None)
        .wait_healthy(&cluster(), &expect("mongo2"), Duration::from_millis(50))
        .unwrap_err();
    tier.redact(&e.to_string())
}

#[test]
fn a_member_that_stays_behind_fails_its_gate() {
    let behind = status([(Primary, NOW), (Secondary, NOW - 30), (Secondary, NOW)], 1);
    insta::assert_snapshot!(gate_error(behind), @"mongo2 (CT 104) did not pass its mongo health gate within 0s: SECONDARY but 30.0s behind the primary");
}

#[test]
fn a_member_in_initial_sync_fails_its_gate() {
    let syncing = status([(Primary, NOW), (Startup2, 0), (Secondary, NOW)], 1);
    insta::assert_snapshot!(gate_error(syncing), @"mongo2 (CT 104) did not pass its mongo health gate within 0s: state STARTUP2");
}

#[test]
fn a_member_without_a_config_fails_its_gate() {
    insta::assert_snapshot!(gate_error(recorded::status_not_yet_initialized()), @"mongo2 (CT 104) did not pass its mongo health gate within 0s: STARTUP, in no replica set: no replica-set config yet (94 NotYetInitialized: no replset config has been received): the set is not initiated, or this member was not added to it");
}

#[test]
fn a_member_of_another_set_fails_its_gate() {
    let other = status_of(
        "legacy",
        [(Primary, NOW), (Secondary, NOW), (Secondary, NOW)],
        1,
    );
    insta::assert_snapshot!(gate_error(other), @r#"mongo2 (CT 104) did not pass its mongo health gate within 0s: member of replica set "legacy", expected "rs0""#);
}

#[test]
fn a_member_that_sees_no_primary_fails_its_gate() {
    let blind = status([(Secondary, NOW), (Secondary, NOW), (Secondary, NOW)], 1);
    insta::assert_snapshot!(gate_error(blind), @"mongo2 (CT 104) did not pass its mongo health gate within 0s: SECONDARY, lag unknown: no member is PRIMARY in its view");
}

/// mongo1 is primary until it gets `replSetStepDown` (answered by `on_step_down`),
/// then no member sees a primary until mongo2's third status says it won.
fn stepping_tier(on_step_down: Answer) -> Tier {
    let before = [(Primary, NOW), (Secondary, NOW), (Secondary, NOW)];
    let electing = [(Secondary, NOW), (Secondary, NOW), (Secondary, NOW)];
    let after = [(Secondary, NOW), (Primary, NOW), (Secondary, NOW)];
    let phase = Phase::new();
    let script = |me: usize| {
        Script::new()
            .phase(&phase)
            .in_phase(0, STATUS, vec![reply(status(before, me))])
            .in_phase(1, STATUS, vec![reply(status(electing, me))])
    };
    Tier::new([
        script(0)
            .sequence(STEP_DOWN, vec![on_step_down])
            .advances(STEP_DOWN),
        Script::new()
            .phase(&phase)
            .reply(STATUS, status(before, 1))
            .in_phase(
                1,
                STATUS,
                vec![
                    reply(status(electing, 1)),
                    reply(status(electing, 1)),
                    reply(status(after, 1)),
                ],
            ),
        script(2),
    ])
}

#[test]
fn step_down_waits_until_another_member_is_primary() {
    let tier = stepping_tier(reply(recorded::step_down_ok()));
    let g = tier.gate(None);
    let c = cluster();
    assert_eq!(g.mongo_primary(&c).unwrap().as_deref(), Some("mongo1"));
    let mongo1 = c.member_by_slot("mongo1").unwrap();
    g.mongo_step_down(&c, mongo1, Duration::from_secs(30))
        .unwrap();
    assert_eq!(g.mongo_primary(&c).unwrap().as_deref(), Some("mongo2"));
    // Three rounds after the step-down: nobody, nobody, mongo2 (mongo3 is
    // not asked once mongo2 answers PRIMARY); then the last look.
    let [m1, m2, m3] = tier.commands();
    assert_eq!(m1, [STATUS, STEP_DOWN, STATUS, STATUS, STATUS, STATUS]);
    assert_eq!(m2, [STATUS, STATUS, STATUS, STATUS]);
    assert_eq!(m3, [STATUS, STATUS]);
    insta::assert_snapshot!(format!("{:?}", tier.0[0].request(STEP_DOWN).unwrap()), @r#"Document({"replSetStepDown": Int32(30), "secondaryCatchUpPeriodSecs": Int32(10), "$db": String("admin")})"#);
}

#[test]
fn step_down_on_an_old_server_that_closes_the_connection() {
    // Before 4.2 a successful step-down closed every connection, this one included.
    let tier = stepping_tier(Answer::Close);
    let g = tier.gate(None);
    let c = cluster();
    g.mongo_step_down(
        &c,
        c.member_by_slot("mongo1").unwrap(),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(g.mongo_primary(&c).unwrap().as_deref(), Some("mongo2"));
}

#[test]
fn step_down_refused_by_the_primary_is_reported() {
    let tier = stepping_tier(reply(recorded::step_down_no_secondary_caught_up()));
    let g = tier.gate(None);
    let c = cluster();
    let e = g
        .mongo_step_down(
            &c,
            c.member_by_slot("mongo1").unwrap(),
            Duration::from_secs(30),
        )
        .unwrap_err();
    insta::assert_snapshot!(tier.redact(&e.to_string()), @"mongo: replSetStepDown on mongo1: [mongo1]: replSetStepDown failed: 262 ExceededTimeLimit: No electable secondaries caught up as of 2025-11-26T04:06:50.000+00:00. Please use the replSetStepDown command with the argument {force: true} to force node to step down. (no electable secondary caught up within 10s; the member stays primary)");
}

#[test]
fn step_down_on_a_secondary_is_reported() {
    let tier = stepping_tier(reply(recorded::step_down_not_primary()));
    let g = tier.gate(None);
    let c = cluster();
    let e = g
        .mongo_step_down(
            &c,
            c.member_by_slot("mongo1").unwrap(),
            Duration::from_secs(30),
        )
        .unwrap_err();
    insta::assert_snapshot!(tier.redact(&e.to_string()), @"mongo: replSetStepDown on mongo1: [mongo1]: replSetStepDown failed: 10107 NotWritablePrimary: not primary so can't step down (this member is not primary)");
}

#[test]
fn step_down_without_a_new_primary_times_out() {
    let electing = [(Secondary, NOW), (Secondary, NOW), (Secondary, NOW)];
    let tier = Tier::new([
        Script::new()
            .reply(STATUS, status(electing, 0))
            .reply(STEP_DOWN, recorded::step_down_ok()),
        Script::new().reply(STATUS, status(electing, 1)),
        Script::new().reply(STATUS, status(electing, 2)),
    ]);
    let mut g = tier.gate(None);
    g.every = Duration::from_millis(50);
    let c = cluster();
    let e = g
        .mongo_step_down(
            &c,
            c.member_by_slot("mongo1").unwrap(),
            Duration::from_secs(1),
        )
        .unwrap_err();
    insta::assert_snapshot!(e.to_string(), @"mongo: after mongo1 stepped down: no member other than mongo1 became primary within 1s: no member is PRIMARY");
}

#[test]
fn probes_bind_the_gates_source_address() {
    let view = [(Primary, NOW), (Secondary, NOW), (Secondary, NOW)];
    let tier = Tier::new([0, 1, 2].map(|me| Script::new().reply(STATUS, status(view, me))));
    let source: IpAddr = [127, 0, 0, 2].into();
    tier.gate(Some(source)).mongo_primary(&cluster()).unwrap();
    let peers: Vec<IpAddr> = tier.0[0].requests().iter().map(|r| r.peer.ip()).collect();
    assert_eq!(peers, [source]);
}

/// A network namespace of this test's own, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Option<Netns> {
        let name = format!("haimg-mongo-{}-{:x}", std::process::id(), fastrand::u32(..));
        match Command::new("ip").args(["netns", "add", &name]).status() {
            Ok(s) if s.success() => {}
            other => {
                crate::support::skip(
                    "rollout_mongo",
                    &format!(
                        "`ip netns add` failed ({other:?}); this test needs root and iproute2"
                    ),
                );
                return None;
            }
        }
        let ns = Netns(name);
        let up = Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(up.success(), "ip -n {} link set lo up", ns.0);
        Some(ns)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn probes_connect_from_inside_the_gates_namespace() {
    let Some(ns) = Netns::new() else { return };
    let view = [(Primary, NOW), (Secondary, NOW), (Secondary, NOW)];
    // mongo1 listens on 127.0.0.1 inside the namespace only.
    let path = ns.path();
    let inside = std::thread::spawn(move || {
        haimg::probe::netns::enter(&path).unwrap();
        TcpListener::bind("127.0.0.1:0").unwrap()
    })
    .join()
    .unwrap();
    let port = inside.local_addr().unwrap().port();
    let member = Replay::start_on(inside, Script::new().reply(STATUS, status(view, 0))).unwrap();
    let target = member.addr();
    let gate = |netns: Option<PathBuf>| {
        let mut g = NetGate::wire(Origin::new(netns, None));
        g.resolve = Box::new(move |_| target);
        g
    };
    assert_eq!(
        gate(Some(ns.path()))
            .mongo_primary(&cluster())
            .unwrap()
            .as_deref(),
        Some("mongo1")
    );
    // The same address from the host's namespace reaches nothing: the port is
    // held there by a socket that does not listen, so the connect is refused.
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if held
        .bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .is_ok()
    {
        let e = gate(None).mongo_primary(&cluster()).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
    }
    assert_eq!(member.commands(), [STATUS]);
}

/// A whole mongo-tier rollout on the Proxmox fake, gated over the wire: the
/// secondaries go first, each green must answer SECONDARY and caught up, and
/// the primary (mongo1) is asked to step down before its blue is shut down;
/// the rollout waits until mongo2 answers PRIMARY.
#[test]
fn a_mongo_rollout_steps_the_primary_down_last() {
    use rollout_support::{Bed, Recorder};
    use std::sync::{Arc, Mutex};

    let bed = Bed::new();
    let tpl =
        rollout_support::templates_with(bed.dir.path(), &bed.v1, "1.0.0", &[(Role::Mongo, "m2")]);
    let before = [(Primary, NOW), (Secondary, NOW), (Secondary, NOW)];
    let after = [(Secondary, NOW), (Primary, NOW), (Secondary, NOW)];
    let phase = Phase::new();
    let script = |me: usize| {
        Script::new()
            .phase(&phase)
            .in_phase(0, STATUS, vec![reply(status(before, me))])
            .in_phase(1, STATUS, vec![reply(status(after, me))])
    };
    let tier = Tier::new([
        script(0)
            .reply(STEP_DOWN, recorded::step_down_ok())
            .advances(STEP_DOWN),
        script(1),
        script(2),
    ]);
    let gate = tier.gate(None);
    let backend = bed.backend(&bed.v1);
    let tl = Arc::new(Mutex::new(Vec::new()));
    let mut rec = Recorder::new(&bed, &bed.v1, tl);
    let report = rollout_support::roll(&backend, &bed.v1, &tpl, &gate, &mut rec).unwrap();
    assert!(report.ok(), "{report:#?}");
    let order: Vec<&str> = report.slots.iter().map(|s| s.slot.as_str()).collect();
    assert_eq!(order, ["mongo2", "mongo3", "mongo1"]);
    assert_eq!(rec.worst_down, 1);
    let details: Vec<String> = report
        .slots
        .iter()
        .flat_map(|s| s.steps.iter().filter_map(|x| x.detail.clone()))
        .filter(|d| d.contains("stepped down") || d.contains(" of rs0"))
        .collect();
    insta::assert_snapshot!(details.join("\n"), @r"
    SECONDARY of rs0, 0.0s behind
    SECONDARY of rs0, 0.0s behind
    mongo1 stepped down as primary first
    SECONDARY of rs0, 0.0s behind
    ");
    let [m1, m2, m3] = tier.commands();
    assert_eq!(m1.iter().filter(|c| *c == STEP_DOWN).count(), 1);
    assert!(!m2.contains(&STEP_DOWN.to_string()) && !m3.contains(&STEP_DOWN.to_string()));
}

// ---- Authorization on (a keyfile): no credentials, so `hello` ----------

const HELLO: &str = "hello";

fn host(i: usize) -> String {
    format!("192.168.30.{}:27017", 103 + i)
}

/// `hello` of member `me` (0-based) of rs0 in `state`, naming member
/// `primary` as primary, last write at `last_write`.
fn hello_of(me: usize, state: MemberState, primary: Option<usize>, last_write: u32) -> Document {
    let hosts = [host(0), host(1), host(2)];
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    recorded::hello_rs(
        "rs0",
        &hosts,
        &host(me),
        state,
        primary.map(host).as_deref(),
        last_write,
    )
}

/// A member with authorization on: `replSetGetStatus` and `replSetStepDown`
/// answer 13 Unauthorized, `hello` answers `hello`.
fn authed(hello: Document) -> Script {
    Script::new()
        .reply(STATUS, recorded::unauthorized(STATUS))
        .reply(STEP_DOWN, recorded::unauthorized(STEP_DOWN))
        .reply(HELLO, hello)
}

/// mongo1 primary, mongo2 and mongo3 secondaries with the given last writes.
fn authed_tier(last: [u32; 3]) -> Tier {
    Tier::new([
        authed(hello_of(0, Primary, Some(0), last[0])),
        authed(hello_of(1, Secondary, Some(0), last[1])),
        authed(hello_of(2, Secondary, Some(0), last[2])),
    ])
}

#[test]
fn under_auth_the_primary_is_found_by_hello() {
    let tier = Tier::new([
        authed(hello_of(0, Secondary, Some(2), NOW)),
        authed(hello_of(1, Secondary, Some(2), NOW)),
        authed(hello_of(2, Primary, Some(2), NOW)),
    ]);
    assert_eq!(
        tier.gate(None)
            .mongo_primary(&cluster())
            .unwrap()
            .as_deref(),
        Some("mongo3")
    );
    assert_eq!(
        tier.commands(),
        [[STATUS, HELLO], [STATUS, HELLO], [STATUS, HELLO]]
    );
    let sent: Vec<String> = tier.0[2]
        .requests()
        .iter()
        .map(|r| format!("{:?}", r.body))
        .collect();
    insta::assert_snapshot!(sent.join("\n"), @r#"
    Document({"replSetGetStatus": Int32(1), "$db": String("admin")})
    Document({"hello": Int32(1), "$db": String("admin")})
    "#);
}

#[test]
fn under_auth_a_caught_up_secondary_passes_its_gate_by_hello() {
    let tier = authed_tier([NOW, NOW - 1, NOW]);
    let passed = tier
        .gate(None)
        .wait_healthy(&cluster(), &expect("mongo2"), Duration::from_secs(10))
        .unwrap();
    insta::assert_snapshot!(passed.detail, @"SECONDARY of rs0, 1.0s behind (by hello: replSetGetStatus needs credentials)");
    // Two passes: each asks mongo2 (refused status, then hello) and the primary it names.
    let [m1, m2, m3] = tier.commands();
    assert_eq!(m2, [STATUS, HELLO, STATUS, HELLO]);
    assert_eq!(m1, [HELLO, HELLO]);
    assert!(m3.is_empty());
}

/// The error a user sees when the gate waits for mongo2 in `tier`.
fn authed_gate_error(tier: &Tier) -> String {
    let e = tier
        .gate(None)
        .wait_healthy(&cluster(), &expect("mongo2"), Duration::from_millis(50))
        .unwrap_err();
    tier.redact(&e.to_string())
}

#[test]
fn under_auth_a_secondary_behind_fails_its_gate() {
    let tier = authed_tier([NOW, NOW - 30, NOW]);
    insta::assert_snapshot!(authed_gate_error(&tier), @"mongo2 (CT 104) did not pass its mongo health gate within 0s: SECONDARY but 30.0s behind the primary");
}

#[test]
fn under_auth_a_member_in_initial_sync_fails_its_gate() {
    let tier = Tier::new([
        authed(hello_of(0, Primary, Some(0), NOW)),
        authed(hello_of(1, Startup2, Some(0), 0)),
        authed(hello_of(2, Secondary, Some(0), NOW)),
    ]);
    insta::assert_snapshot!(authed_gate_error(&tier), @"mongo2 (CT 104) did not pass its mongo health gate within 0s: state RSOther: hello says neither primary nor secondary (STARTUP2, RECOVERING, ROLLBACK or hidden)");
}

#[test]
fn under_auth_a_secondary_whose_primary_is_unreachable_fails_its_gate() {
    let tier = Tier::new([
        Script::new().close(STATUS).close(HELLO),
        authed(hello_of(1, Secondary, Some(0), NOW)),
        authed(hello_of(2, Secondary, Some(0), NOW)),
    ]);
    let e = authed_gate_error(&tier);
    assert!(
        e.starts_with("mongo2 (CT 104) did not pass its mongo health gate within 0s: SECONDARY, lag unknown: its primary 192.168.30.103:27017 could not be asked: [mongo1]: "),
        "{e}"
    );
}

#[test]
fn under_auth_step_down_is_refused_for_lack_of_credentials() {
    let tier = authed_tier([NOW, NOW, NOW]);
    let c = cluster();
    let e = tier
        .gate(None)
        .mongo_step_down(
            &c,
            c.member_by_slot("mongo1").unwrap(),
            Duration::from_secs(30),
        )
        .unwrap_err();
    assert!(
        matches!(&e, haimg::rollout::gate::GateError::MongoNoCredentials { slot, .. } if slot == "mongo1"),
        "{e:?}"
    );
    insta::assert_snapshot!(tier.redact(&e.to_string()), @"mongo: mongo1 cannot be asked to step down: [mongo1]: replSetStepDown failed: 13 Unauthorized: command replSetStepDown requires authentication (authorization is on (a keyfile is set) and haimg connects without credentials)");
    insta::assert_snapshot!(format!("{:?}", tier.0[0].request(STEP_DOWN).unwrap()), @r#"Document({"replSetStepDown": Int32(30), "secondaryCatchUpPeriodSecs": Int32(10), "$db": String("admin")})"#);
    // No wait for another primary: the refusal is returned at once.
    assert_eq!(tier.commands()[1], Vec::<String>::new());
}

/// Is a container of `slot` running in the fake?
fn slot_running(state: &support::pve_fake::StateHandle, slot: &str) -> bool {
    let tag = format!("slot-{slot}");
    state
        .lock()
        .containers
        .values()
        .any(|c| c.running && c.tags().split(';').any(|t| t == tag))
}

/// Move `phase` on when `slot` has no running container (its blue was shut
/// down), and again when one runs (its green started); gives up after `within`.
fn follow_slot(
    state: support::pve_fake::StateHandle,
    slot: &'static str,
    phase: Phase,
    within: Duration,
) -> std::thread::JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        for want_running in [false, true] {
            while slot_running(&state, slot) != want_running {
                if t0.elapsed() > within {
                    return Err(format!("{slot} never became running={want_running}"));
                }
                std::thread::sleep(Duration::from_millis(1)); // poll interval
            }
            phase.advance();
        }
        Ok(())
    })
}

/// A whole mongo-tier rollout on the Proxmox fake with authorization on:
/// haimg has no credentials, so the primary (mongo1) cannot be asked to step
/// down. Its slot goes last; its blue is shut down anyway (mongod steps down
/// at SIGTERM), and the rollout waits until another member answers PRIMARY
/// before mongo1's green starts.
///
/// The replay servers follow the fake: phase 0 until mongo1's blue is down
/// (mongo1 primary), phase 1 while mongo1 has no running container (its
/// address closes connections; mongo2 answers PRIMARY: the replay's stand-in
/// for the election, which this test does not claim to show), phase 2 once
/// its green runs (a secondary caught up, naming mongo2).
#[test]
fn a_mongo_rollout_under_auth_lets_the_primary_step_down_at_its_shutdown() {
    use rollout_support::{Bed, Recorder};
    use std::sync::{Arc, Mutex};

    let bed = Bed::new();
    let tpl =
        rollout_support::templates_with(bed.dir.path(), &bed.v1, "1.0.0", &[(Role::Mongo, "m2")]);
    let phase = Phase::new();
    let both = |d: Document| vec![reply(d)];
    let tier = Tier::new([
        authed(hello_of(0, Primary, Some(0), NOW))
            .phase(&phase)
            .in_phase(1, STATUS, vec![Answer::Close])
            .in_phase(1, HELLO, vec![Answer::Close])
            .in_phase(2, HELLO, both(hello_of(0, Secondary, Some(1), NOW))),
        authed(hello_of(1, Secondary, Some(0), NOW))
            .phase(&phase)
            .in_phase(1, HELLO, both(hello_of(1, Primary, Some(1), NOW)))
            .in_phase(2, HELLO, both(hello_of(1, Primary, Some(1), NOW))),
        authed(hello_of(2, Secondary, Some(0), NOW))
            .phase(&phase)
            .in_phase(1, HELLO, both(hello_of(2, Secondary, Some(1), NOW)))
            .in_phase(2, HELLO, both(hello_of(2, Secondary, Some(1), NOW))),
    ]);
    let follower = follow_slot(
        bed.fake.shared_state(),
        "mongo1",
        phase.clone(),
        Duration::from_secs(120),
    );
    let gate = tier.gate(None);
    let backend = bed.backend(&bed.v1);
    let tl = Arc::new(Mutex::new(Vec::new()));
    let mut rec = Recorder::new(&bed, &bed.v1, tl);
    let report = rollout_support::roll(&backend, &bed.v1, &tpl, &gate, &mut rec).unwrap();
    assert!(report.ok(), "{report:#?}");
    follower.join().unwrap().unwrap();
    assert_eq!(phase.get(), 2);
    let order: Vec<&str> = report.slots.iter().map(|s| s.slot.as_str()).collect();
    assert_eq!(order, ["mongo2", "mongo3", "mongo1"]);
    assert_eq!(rec.worst_down, 1);
    // mongo1's steps: the shutdown waited for mongo2 before the green started.
    let mongo1 = &report.slots[2];
    let steps: Vec<String> = mongo1
        .steps
        .iter()
        .map(|s| {
            let d = s.detail.clone().unwrap_or_default();
            // The wait's seconds vary from run to run.
            let d = regex_lite_seconds(&d);
            format!(
                "{}{}",
                s.step,
                if d.is_empty() {
                    String::new()
                } else {
                    format!(" -- {d}")
                }
            )
        })
        .collect();
    insta::assert_snapshot!("under_auth_mongo1_steps", steps.join("\n"));
    let details: Vec<String> = report
        .slots
        .iter()
        .filter_map(|s| s.gate.as_ref().map(|g| format!("{}: {}", s.slot, g.detail)))
        .collect();
    insta::assert_snapshot!(details.join("\n"), @r"
    mongo2: SECONDARY of rs0, 0.0s behind (by hello: replSetGetStatus needs credentials)
    mongo3: SECONDARY of rs0, 0.0s behind (by hello: replSetGetStatus needs credentials)
    mongo1: SECONDARY of rs0, 0.0s behind (by hello: replSetGetStatus needs credentials)
    ");
    // The request documents each member received (first of each kind, in order).
    let sent: Vec<String> = tier
        .0
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut seen: Vec<String> = Vec::new();
            for q in r.requests() {
                let d = format!("{:?}", q.body);
                if !seen.contains(&d) {
                    seen.push(d);
                }
            }
            format!("mongo{}:\n  {}", i + 1, seen.join("\n  "))
        })
        .collect();
    insta::assert_snapshot!("under_auth_requests_sent", sent.join("\n"));
    let [m1, m2, m3] = tier.commands();
    assert_eq!(m1.iter().filter(|c| *c == STEP_DOWN).count(), 1);
    assert!(!m2.contains(&STEP_DOWN.to_string()) && !m3.contains(&STEP_DOWN.to_string()));
}

/// "… mongo2 is primary 0.0s after the shutdown" -> "… mongo2 is primary [S]s after the shutdown".
fn regex_lite_seconds(s: &str) -> String {
    let Some(end) = s.find("s after the shutdown") else {
        return s.to_string();
    };
    match s[..end].rfind(" is primary ") {
        Some(i) => format!("{} is primary [S]{}", &s[..i], &s[end..]),
        None => s.to_string(),
    }
}

/// With the store's monitor user (what `haimg deploy` and the golden testbed
/// pass), every connection authenticates with SCRAM-SHA-256 first, then asks
/// `replSetGetStatus` and `replSetStepDown` as that user instead of falling
/// back to `hello`. The SASL replies are RFC 7677's conversation shapes,
/// the server signature constructed for `haimg-monitor`.
#[test]
fn the_gate_authenticates_as_the_monitor_user() {
    use haimg::rollout::gate::{Credentials, WireMongo};
    use haimg_mongo::scram;
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const SERVER_NONCE: &str = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    let user = haimg_model::image::mongo_users::MONITOR;
    let password = "MONITOR-PASSWORD-PLACEHOLDER";
    let first = format!("r={SERVER_NONCE},s={SALT},i=4096");
    let salted = scram::hi(password.as_bytes(), &scram::b64_decode(SALT).unwrap(), 4096);
    let auth = format!("n={user},r={NONCE},{first},c=biws,r={SERVER_NONCE}");
    let fin = format!(
        "v={}",
        scram::b64_encode(&scram::hmac(
            &scram::hmac(&salted, b"Server Key"),
            auth.as_bytes()
        ))
    );
    let all = [(Primary, NOW), (Secondary, NOW), (Secondary, NOW)];
    let script = |me: usize| {
        Script::new()
            .reply("saslStart", recorded::sasl_step(1, false, &first))
            .reply("saslContinue", recorded::sasl_step(1, true, &fin))
            .reply(STATUS, status(all, me))
            .reply(STEP_DOWN, recorded::step_down_ok())
    };
    let tier = Tier::new([script(0), script(1), script(2)]);
    let mut g = tier.gate(None);
    g.mongo = Box::new(WireMongo {
        origin: Origin::here(),
        credentials: Some(Credentials {
            user: user.into(),
            password: password.into(),
            nonce: Some(NONCE.into()),
        }),
    });
    let c = cluster();
    assert_eq!(g.mongo_primary(&c).unwrap().as_deref(), Some("mongo1"));
    let passed = g
        .wait_healthy(&c, &expect("mongo2"), Duration::from_secs(5))
        .unwrap();
    assert!(!format!("{passed:?}").contains("hello"), "{passed:?}");
    let [m1, m2, _] = tier.commands();
    assert_eq!(m1, ["saslStart", "saslContinue", STATUS]);
    assert!(m2.iter().all(|c| c != "hello"), "{m2:?}");
    assert_eq!(&m2[..3], ["saslStart", "saslContinue", STATUS]);
    let start = tier.0[0].request("saslStart").unwrap();
    assert_eq!(start.get_str("mechanism").unwrap(), "SCRAM-SHA-256");
    // A wrong password (the server's signature does not verify) fails the probe, naming no secret.
    let mut bad = tier.gate(None);
    bad.mongo = Box::new(WireMongo {
        origin: Origin::here(),
        credentials: Some(Credentials {
            user: user.into(),
            password: "another".into(),
            nonce: Some(NONCE.into()),
        }),
    });
    let e = bad.mongo_primary(&c).unwrap_err().to_string();
    let e = tier.redact(&e);
    assert!(!e.contains("another"), "{e}");
    insta::assert_snapshot!(e, @"mongo: mongo1: [mongo1]: SCRAM conversation with haimg-monitor: the server's signature is wrong: it does not know this user's keys; mongo2: [mongo2]: SCRAM conversation with haimg-monitor: the server's signature is wrong: it does not know this user's keys; mongo3: [mongo3]: SCRAM conversation with haimg-monitor: the server's signature is wrong: it does not know this user's keys");
}
