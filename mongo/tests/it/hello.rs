//! `haimg_mongo::hello` and the Unauthorized answers at the wire level,
//! against the replay server.
//!
//! Every "member" is a `haimg_mongo::replay` server on 127.0.0.1 answering
//! with replies recorded from real mongod shapes (sources in
//! `haimg_mongo::replay::recorded`). It is not a MongoDB: these tests pin
//! the requests the client sends and how it reads the answers of a member
//! with authorization on, never what a mongod does.

use std::time::Duration;

use haimg_mongo::hello::{self, PrimaryHello};
use haimg_mongo::member::{self, MemberState, UNAUTHORIZED};
use haimg_mongo::replay::recorded::{self, NOW};
use haimg_mongo::replay::{Replay, Script};

const T: Duration = Duration::from_secs(2);
const HOSTS: [&str; 3] = [
    "192.168.30.103:27017",
    "192.168.30.104:27017",
    "192.168.30.105:27017",
];

/// A member with authorization on: `replSetGetStatus` and `replSetStepDown`
/// need credentials, `hello` answers as `me` in `state` with its last write.
fn member(me: usize, state: MemberState, primary: Option<usize>, last_write: u32) -> Replay {
    let hello = recorded::hello_rs(
        "rs0",
        &HOSTS,
        HOSTS[me],
        state,
        primary.map(|p| HOSTS[p]),
        last_write,
    );
    Replay::start(
        Script::new()
            .reply(
                "replSetGetStatus",
                recorded::unauthorized("replSetGetStatus"),
            )
            .reply("replSetStepDown", recorded::unauthorized("replSetStepDown"))
            .reply("hello", hello),
    )
    .unwrap()
}

/// What the gate does: the member's hello, then the hello of the primary it names.
fn status_by_hello(own: &Replay, primary: Option<&Replay>) -> member::Status {
    let h = hello::hello(own.addr(), T).unwrap();
    let p = match (h.state(), h.primary.as_deref(), primary) {
        (MemberState::Primary, _, _) | (_, None, _) => PrimaryHello::NoneInView,
        (_, Some(_), Some(r)) => PrimaryHello::Answered(hello::hello(r.addr(), T).unwrap()),
        (_, Some(name), None) => PrimaryHello::Unasked(format!("{name} is not reachable")),
    };
    hello::status_from_hello(&h, &p)
}

#[test]
fn replset_get_status_without_credentials_is_refused_with_code_13() {
    let r = member(1, MemberState::Secondary, Some(0), NOW);
    let e = member::status(r.addr(), T).unwrap_err();
    assert_eq!(e.code(), Some(UNAUTHORIZED));
    let text = e.to_string().replace(&r.addr().to_string(), "[ADDR]");
    insta::assert_snapshot!(text, @"[ADDR]: replSetGetStatus failed: 13 Unauthorized: command replSetGetStatus requires authentication (authorization is on (a keyfile is set) and haimg connects without credentials)");
}

#[test]
fn step_down_without_credentials_is_refused_with_code_13() {
    let r = member(0, MemberState::Primary, Some(0), NOW);
    let e = member::step_down(r.addr(), 30, T).unwrap_err();
    assert_eq!(e.code(), Some(UNAUTHORIZED));
    let text = e.to_string().replace(&r.addr().to_string(), "[ADDR]");
    insta::assert_snapshot!(text, @"[ADDR]: replSetStepDown failed: 13 Unauthorized: command replSetStepDown requires authentication (authorization is on (a keyfile is set) and haimg connects without credentials)");
}

#[test]
fn the_newer_spelling_of_the_message_changes_nothing() {
    // Newer server sources say "Command …"; only the code counts.
    let reply = haimg_mongo::bson::doc! {"ok": 0.0, "errmsg": "Command replSetGetStatus requires authentication", "code": 13, "codeName": "Unauthorized"};
    let r = Replay::start(Script::new().reply("replSetGetStatus", reply)).unwrap();
    assert_eq!(
        member::status(r.addr(), T).unwrap_err().code(),
        Some(UNAUTHORIZED)
    );
}

#[test]
fn hello_of_a_primary_under_auth() {
    let r = member(0, MemberState::Primary, Some(0), NOW);
    let h = hello::hello(r.addr(), T).unwrap();
    assert_eq!(h.state(), MemberState::Primary);
    assert_eq!(
        (h.set.as_deref(), h.me.as_deref()),
        (Some("rs0"), Some(HOSTS[0]))
    );
    let s = status_by_hello(&r, None);
    assert_eq!(
        (s.state, s.lag_s, s.primary.as_deref(), s.note),
        (MemberState::Primary, Some(0.0), Some(HOSTS[0]), None)
    );
    insta::assert_snapshot!(format!("{:?}", r.request("hello").unwrap()), @r#"Document({"hello": Int32(1), "$db": String("admin")})"#);
}

#[test]
fn hello_of_a_secondary_caught_up() {
    let p = member(0, MemberState::Primary, Some(0), NOW);
    let r = member(1, MemberState::Secondary, Some(0), NOW - 1);
    let s = status_by_hello(&r, Some(&p));
    assert_eq!(
        (s.state, s.set.as_deref(), s.lag_s, s.note),
        (MemberState::Secondary, Some("rs0"), Some(1.0), None)
    );
    assert_eq!(r.commands(), ["hello"]);
    assert_eq!(p.commands(), ["hello"]);
}

#[test]
fn hello_of_a_secondary_30s_behind() {
    let p = member(2, MemberState::Primary, Some(2), NOW);
    let r = member(1, MemberState::Secondary, Some(2), NOW - 30);
    let s = status_by_hello(&r, Some(&p));
    assert_eq!((s.state, s.lag_s), (MemberState::Secondary, Some(30.0)));
    assert_eq!(s.primary.as_deref(), Some(HOSTS[2]));
}

#[test]
fn hello_of_a_member_in_initial_sync() {
    let p = member(0, MemberState::Primary, Some(0), NOW);
    let r = member(2, MemberState::Startup2, Some(0), 0);
    let s = status_by_hello(&r, Some(&p));
    assert_eq!(s.state, MemberState::RsOther);
    insta::assert_snapshot!(s.note.unwrap(), @"hello says neither primary nor secondary (STARTUP2, RECOVERING, ROLLBACK or hidden)");
}

#[test]
fn hello_of_a_member_without_a_config() {
    let r = Replay::start(Script::new().reply("hello", recorded::hello_fresh())).unwrap();
    let s = status_by_hello(&r, None);
    assert_eq!(
        (s.state, s.set.as_deref(), s.lag_s),
        (MemberState::Startup, None, None)
    );
    insta::assert_snapshot!(s.note.unwrap(), @"no replica-set config yet (hello: isreplicaset without setName): the set is not initiated, or this member was not added to it");
}

#[test]
fn hello_of_a_secondary_whose_named_primary_stepped_down() {
    // mongo2 still names mongo1, which answers as a secondary now.
    let p = member(0, MemberState::Secondary, None, NOW);
    let r = member(1, MemberState::Secondary, Some(0), NOW);
    let s = status_by_hello(&r, Some(&p));
    assert_eq!(s.lag_s, None);
    insta::assert_snapshot!(s.note.unwrap(), @"192.168.30.103:27017 is named primary but does not say so itself (an election is running?)");
}
