//! `haimg_mongo::member` at the wire level, against the replay server.
//!
//! Every "member" is a `haimg_mongo::replay` server on 127.0.0.1 answering
//! with replies recorded from real mongod shapes (sources in
//! `haimg_mongo::replay::recorded`). It is not a MongoDB: these tests pin the
//! requests the client sends and how it reads a server's answers, never what
//! a mongod does.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use haimg_mongo::member::{self, MemberState, SteppedDown};
use haimg_mongo::replay::recorded::{self, RsMember, NOW};
use haimg_mongo::replay::{Replay, Script};

const T: Duration = Duration::from_secs(2);

fn set(states: [(MemberState, u32); 3]) -> Vec<RsMember> {
    states
        .iter()
        .enumerate()
        .map(|(i, (s, secs))| RsMember::new(&format!("192.168.30.{}:27017", 103 + i), *s, *secs))
        .collect()
}

/// A member answering `replSetGetStatus` as `members[me]` of `name`.
fn member(name: &str, members: &[RsMember], me: usize) -> Replay {
    Replay::start(Script::new().reply("replSetGetStatus", recorded::rs_status(name, members, me)))
        .unwrap()
}

use MemberState::{Primary, Secondary, Startup2};

#[test]
fn status_of_a_primary() {
    let r = member(
        "rs0",
        &set([(Primary, NOW), (Secondary, NOW), (Secondary, NOW)]),
        0,
    );
    let s = member::status(r.addr(), T).unwrap();
    assert_eq!(s.state, Primary);
    assert_eq!(s.set.as_deref(), Some("rs0"));
    assert_eq!(s.lag_s, Some(0.0));
    assert_eq!(s.primary.as_deref(), Some("192.168.30.103:27017"));
    insta::assert_snapshot!(format!("{:?}", r.request("replSetGetStatus").unwrap()), @r#"Document({"replSetGetStatus": Int32(1), "$db": String("admin")})"#);
}

#[test]
fn status_of_a_secondary_caught_up() {
    // One second behind: within the heartbeat's staleness.
    let r = member(
        "rs0",
        &set([(Primary, NOW), (Secondary, NOW - 1), (Secondary, NOW)]),
        1,
    );
    let s = member::status(r.addr(), T).unwrap();
    assert_eq!((s.state, s.lag_s, s.note), (Secondary, Some(1.0), None));
}

#[test]
fn status_of_a_secondary_30s_behind() {
    let r = member(
        "rs0",
        &set([(Secondary, NOW), (Secondary, NOW - 30), (Primary, NOW)]),
        1,
    );
    let s = member::status(r.addr(), T).unwrap();
    assert_eq!((s.state, s.lag_s), (Secondary, Some(30.0)));
    assert_eq!(s.primary.as_deref(), Some("192.168.30.105:27017"));
}

#[test]
fn status_in_initial_sync() {
    let r = member(
        "rs0",
        &set([(Primary, NOW), (Secondary, NOW), (Startup2, 0)]),
        2,
    );
    let s = member::status(r.addr(), T).unwrap();
    assert_eq!(s.state, Startup2);
    assert_eq!(s.state.to_string(), "STARTUP2");
    assert_eq!(s.lag_s, Some(f64::from(NOW)));
}

#[test]
fn status_with_no_primary_in_view() {
    let r = member(
        "rs0",
        &set([(Secondary, NOW), (Secondary, NOW), (Secondary, NOW)]),
        1,
    );
    let s = member::status(r.addr(), T).unwrap();
    assert_eq!((s.state, s.lag_s, s.primary), (Secondary, None, None));
    assert_eq!(s.note.as_deref(), Some("no member is PRIMARY in its view"));
}

#[test]
fn status_before_the_set_is_initiated() {
    let r = Replay::start(
        Script::new().reply("replSetGetStatus", recorded::status_not_yet_initialized()),
    )
    .unwrap();
    let s = member::status(r.addr(), T).unwrap();
    assert_eq!(
        (s.state, s.set.as_deref(), s.lag_s),
        (MemberState::Startup, None, None)
    );
    insta::assert_snapshot!(s.note.unwrap(), @"no replica-set config yet (94 NotYetInitialized: no replset config has been received): the set is not initiated, or this member was not added to it");
}

#[test]
fn status_of_a_member_of_another_set() {
    let r = member(
        "legacy",
        &set([(Primary, NOW), (Secondary, NOW), (Secondary, NOW)]),
        1,
    );
    let s = member::status(r.addr(), T).unwrap();
    assert_eq!((s.state, s.set.as_deref()), (Secondary, Some("legacy")));
}

#[test]
fn status_of_an_unreachable_member_names_the_address() {
    let addr = closed_port();
    let e = member::status(addr, T).unwrap_err();
    assert_eq!(e.addr(), addr);
    assert!(e.to_string().starts_with(&format!("{addr}: ")), "{e}");
    assert!(e.to_string().contains("refused"), "{e}");
}

#[test]
fn status_of_a_member_that_does_not_answer_in_time() {
    // Accepts (the kernel's backlog) but never answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let e = member::status(addr, Duration::from_millis(200)).unwrap_err();
    assert_eq!(e.to_string(), format!("{addr}: no reply within 0.2s"));
}

#[test]
fn step_down_acknowledged() {
    let r =
        Replay::start(Script::new().reply("replSetStepDown", recorded::step_down_ok())).unwrap();
    assert_eq!(
        member::step_down(r.addr(), 60, T).unwrap(),
        SteppedDown::Acknowledged
    );
    insta::assert_snapshot!(format!("{:?}", r.request("replSetStepDown").unwrap()), @r#"Document({"replSetStepDown": Int32(60), "secondaryCatchUpPeriodSecs": Int32(10), "$db": String("admin")})"#);
}

#[test]
fn step_down_on_a_member_that_is_not_primary() {
    let r =
        Replay::start(Script::new().reply("replSetStepDown", recorded::step_down_not_primary()))
            .unwrap();
    let e = member::step_down(r.addr(), 60, T).unwrap_err();
    assert_eq!(e.code(), Some(member::NOT_WRITABLE_PRIMARY));
    let text = e.to_string().replace(&r.addr().to_string(), "[ADDR]");
    insta::assert_snapshot!(text, @"[ADDR]: replSetStepDown failed: 10107 NotWritablePrimary: not primary so can't step down (this member is not primary)");
}

#[test]
fn step_down_with_no_secondary_caught_up() {
    let r = Replay::start(Script::new().reply(
        "replSetStepDown",
        recorded::step_down_no_secondary_caught_up(),
    ))
    .unwrap();
    let e = member::step_down(r.addr(), 5, T).unwrap_err();
    let text = e.to_string().replace(&r.addr().to_string(), "[ADDR]");
    insta::assert_snapshot!(text, @"[ADDR]: replSetStepDown failed: 262 ExceededTimeLimit: No electable secondaries caught up as of 2025-11-26T04:06:50.000+00:00. Please use the replSetStepDown command with the argument {force: true} to force node to step down. (no electable secondary caught up within 4s; the member stays primary)");
    insta::assert_snapshot!(format!("{:?}", r.request("replSetStepDown").unwrap()), @r#"Document({"replSetStepDown": Int32(5), "secondaryCatchUpPeriodSecs": Int32(4), "$db": String("admin")})"#);
}

#[test]
fn step_down_where_the_server_closes_the_connection() {
    // What servers before 4.2 did on a successful step-down.
    let r = Replay::start(Script::new().close("replSetStepDown")).unwrap();
    assert_eq!(
        member::step_down(r.addr(), 60, T).unwrap(),
        SteppedDown::ConnectionClosed
    );
    assert_eq!(r.commands(), ["replSetStepDown"]);
}

#[test]
fn step_down_of_zero_seconds_is_refused_before_sending() {
    let r =
        Replay::start(Script::new().reply("replSetStepDown", recorded::step_down_ok())).unwrap();
    let e = member::step_down(r.addr(), 0, T).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("a step-down period of 0 s (it must be at least 1 s)"),
        "{e}"
    );
    assert!(r.commands().is_empty());
}

fn closed_port() -> SocketAddr {
    // Bound then dropped: nothing listens there, so a connect is refused.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
