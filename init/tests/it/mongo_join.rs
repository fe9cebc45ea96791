//! rs0 join at the wire level, against recorded replies.
//!
//! Each "member" here is a replay server (`haimg_mongo::replay`) on
//! 127.0.0.1: it reads real OP_MSG requests, records them, and answers each
//! command with a reply recorded from the shapes a real mongod sends (the
//! sources are cited in `haimg_mongo::replay::recorded`). It is not a MongoDB
//! and no test here claims to test MongoDB; it pins what the init sends and how
//! it reads the server's answers. Init-only shapes, and where they come from:
//!
//! - `replSetInitiate` on an initiated set: code 23, codeName
//!   "AlreadyInitialized" (MongoDB's error_codes.yml).
//! - `replSetInitiate` that succeeded: `ok: 1` with the cluster time every
//!   member of a set appends (the manual, replSetInitiate).

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bson::{doc, DateTime, Document};
use haimg_init::join::mongo::{self, Hello, Outcome, Peer};
use haimg_mongo::replay::recorded::{self, hello_fresh, status_not_yet_initialized};
use haimg_mongo::replay::{Replay, Script};

// ---- recorded replies the init alone needs ------------------------------------

const HOSTS: [&str; 3] = [
    "192.168.30.103:27017",
    "192.168.30.104:27017",
    "192.168.30.105:27017",
];

/// A member of rs0; `me` is its own host and mongo1 (.103) the primary.
fn hello_member(me: &str, primary: bool) -> Document {
    let p = if primary { me } else { HOSTS[0] };
    recorded::hello_member("rs0", &HOSTS, me, p)
}

/// The minimal reply of a member that has a config and is primary.
fn status_primary() -> Document {
    doc! {"set": "rs0", "date": DateTime::from_millis(1_764_130_000_000), "myState": 1, "term": 1i64,
    "members": [], "ok": 1.0}
}

fn initiate_ok() -> Document {
    let mut d = doc! {"ok": 1.0};
    recorded::gossip(&mut d);
    d
}

fn initiate_already() -> Document {
    recorded::error(23, "AlreadyInitialized", "already initialized")
}

/// A replay server answering each command with one recorded reply.
fn replay(replies: Vec<(&str, Document)>) -> Replay {
    let script = replies
        .into_iter()
        .fold(Script::new(), |s, (cmd, reply)| s.reply(cmd, reply));
    Replay::start(script).expect("a replay server on 127.0.0.1")
}

fn peers(addrs: &[SocketAddr]) -> Vec<Peer> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Peer {
            slot: format!("mongo{}", i + 1),
            host: format!("192.168.30.{}:27017", 103 + i),
            addr: *a,
        })
        .collect()
}

const T: Duration = Duration::from_secs(2);

fn closed_port() -> SocketAddr {
    // Bound then dropped: nothing listens there, so a connect is refused.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

// ---- scenarios ---------------------------------------------------------------------

#[test]
fn fresh_set_is_initiated_once_by_the_first_slot() {
    let me = replay(vec![
        ("hello", hello_fresh()),
        ("replSetGetStatus", status_not_yet_initialized()),
        ("replSetInitiate", initiate_ok()),
    ]);
    let b = replay(vec![("hello", hello_fresh())]);
    let c = replay(vec![("hello", hello_fresh())]);
    let (outcome, hellos) = mongo::step("rs0", &peers(&[me.addr(), b.addr(), c.addr()]), 0, T);
    assert_eq!(hellos, vec![Hello::Uninitialized; 3]);
    assert_eq!(outcome, Outcome::Initiated { members: 3 });
    assert_eq!(
        me.commands(),
        ["hello", "replSetGetStatus", "replSetInitiate"]
    );
    assert_eq!(b.commands(), ["hello"]);
    assert_eq!(c.commands(), ["hello"]);
    let init = me.request("replSetInitiate").unwrap();
    assert_eq!(
        init,
        doc! {"replSetInitiate": {"_id": "rs0", "version": 1, "members": [
            {"_id": 0, "host": "192.168.30.103:27017"},
            {"_id": 1, "host": "192.168.30.104:27017"},
            {"_id": 2, "host": "192.168.30.105:27017"},
        ]}, "$db": "admin"}
    );
}

#[test]
fn a_fresh_set_is_left_to_the_first_slot_by_the_others() {
    let a = replay(vec![("hello", hello_fresh())]);
    let me = replay(vec![
        ("hello", hello_fresh()),
        ("replSetInitiate", initiate_ok()),
    ]);
    let c = replay(vec![("hello", hello_fresh())]);
    let (outcome, _) = mongo::step("rs0", &peers(&[a.addr(), me.addr(), c.addr()]), 1, T);
    assert_eq!(
        outcome,
        Outcome::Waiting {
            reason: "mongo1 initiates rs0; waiting to be added".into()
        }
    );
    assert_eq!(me.commands(), ["hello"]);
}

#[test]
fn an_initiated_set_is_left_alone_on_every_boot() {
    let me = replay(vec![
        ("hello", hello_member("192.168.30.103:27017", true)),
        ("replSetInitiate", initiate_ok()),
    ]);
    let b = replay(vec![("hello", hello_member("192.168.30.104:27017", false))]);
    let c = replay(vec![("hello", hello_member("192.168.30.105:27017", false))]);
    let (outcome, hellos) = mongo::step("rs0", &peers(&[me.addr(), b.addr(), c.addr()]), 0, T);
    assert_eq!(outcome, Outcome::Member { primary: true });
    assert!(
        matches!(&hellos[1], Hello::InSet { set_name, primary: false, hosts } if set_name == "rs0" && hosts.len() == 3)
    );
    assert_eq!(me.commands(), ["hello"]);
}

#[test]
fn a_partly_initiated_set_is_never_initiated_again() {
    // mongo1 was replaced and came back with an empty data volume; mongo2 and mongo3 hold rs0.
    let me = replay(vec![
        ("hello", hello_fresh()),
        ("replSetGetStatus", status_not_yet_initialized()),
        ("replSetInitiate", initiate_ok()),
    ]);
    let b = replay(vec![("hello", hello_member("192.168.30.104:27017", true))]);
    let c = replay(vec![("hello", hello_member("192.168.30.105:27017", false))]);
    let (outcome, _) = mongo::step("rs0", &peers(&[me.addr(), b.addr(), c.addr()]), 0, T);
    assert_eq!(
        outcome,
        Outcome::Waiting {
            reason: "rs0 exists (mongo2 is a member); waiting to be added".into()
        }
    );
    assert_eq!(me.commands(), ["hello"]);
}

#[test]
fn an_unreachable_peer_delays_initiation() {
    let me = replay(vec![
        ("hello", hello_fresh()),
        ("replSetInitiate", initiate_ok()),
    ]);
    let b = replay(vec![("hello", hello_fresh())]);
    let (outcome, hellos) = mongo::step("rs0", &peers(&[me.addr(), b.addr(), closed_port()]), 0, T);
    assert!(
        matches!(&hellos[2], Hello::Unreachable { .. }),
        "{hellos:?}"
    );
    let Outcome::Waiting { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.starts_with("waiting for every member to answer hello: mongo3 ("),
        "{reason}"
    );
    assert_eq!(me.commands(), ["hello"]);
}

#[test]
fn a_config_that_arrived_meanwhile_is_not_initiated_twice() {
    // hello still says uninitialised, but by the time the init asks, the member has a config.
    let me = replay(vec![
        ("hello", hello_fresh()),
        ("replSetGetStatus", status_primary()),
        ("replSetInitiate", initiate_ok()),
    ]);
    let b = replay(vec![("hello", hello_fresh())]);
    let c = replay(vec![("hello", hello_fresh())]);
    let (outcome, _) = mongo::step("rs0", &peers(&[me.addr(), b.addr(), c.addr()]), 0, T);
    assert_eq!(outcome, Outcome::Member { primary: true });
    assert_eq!(me.commands(), ["hello", "replSetGetStatus"]);
}

#[test]
fn already_initialized_from_initiate_counts_as_done() {
    let me = replay(vec![
        ("hello", hello_fresh()),
        ("replSetGetStatus", status_not_yet_initialized()),
        ("replSetInitiate", initiate_already()),
    ]);
    let b = replay(vec![("hello", hello_fresh())]);
    let c = replay(vec![("hello", hello_fresh())]);
    let (outcome, _) = mongo::step("rs0", &peers(&[me.addr(), b.addr(), c.addr()]), 0, T);
    assert_eq!(outcome, Outcome::Member { primary: false });
}

#[test]
fn a_member_of_another_set_is_a_conflict() {
    let mut other = hello_member("192.168.30.104:27017", false);
    other.insert("setName", "legacy");
    let me = replay(vec![
        ("hello", hello_fresh()),
        ("replSetInitiate", initiate_ok()),
    ]);
    let b = replay(vec![("hello", other)]);
    let c = replay(vec![("hello", hello_fresh())]);
    let (outcome, _) = mongo::step("rs0", &peers(&[me.addr(), b.addr(), c.addr()]), 0, T);
    assert_eq!(
        outcome,
        Outcome::Conflict {
            reason: "mongo2 is in replica set \"legacy\", not \"rs0\"".into()
        }
    );
    assert_eq!(me.commands(), ["hello"]);
}
