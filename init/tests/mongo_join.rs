//! rs0 join at the wire level, against recorded replies.
//!
//! Each "member" here is a replay server on 127.0.0.1: it reads real OP_MSG
//! requests, records them, and answers each command with a reply recorded
//! from the shapes a real mongod sends. It is not a MongoDB and no test here
//! claims to test MongoDB; it pins what the init sends and how it reads the
//! server's answers. Where the reply shapes come from:
//!
//! - `hello` fields (isWritablePrimary, secondary, setName, setVersion, hosts,
//!   primary, me, electionId, topologyVersion, localTime, maxWireVersion, …):
//!   the MongoDB manual, "hello" command, Output section.
//! - an uninitialised member (`isreplicaset: true`, no `setName`): the drivers'
//!   SDAM specification test `source/server-discovery-and-monitoring/tests/rs/
//!   discover_ghost.yml` in mongodb/specifications (type RSGhost).
//! - `replSetGetStatus` before initiation: `{ok: 0, errmsg: "no replset config
//!   has been received", code: 94, codeName: "NotYetInitialized"}` — the manual's
//!   replSetGetStatus page ("If the replica set is not yet initialized…") and a
//!   captured `rs.status()` of a fresh member.
//! - `replSetInitiate` on an initiated set: code 23, codeName
//!   "AlreadyInitialized" (MongoDB's error_codes.yml).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{doc, oid::ObjectId, Bson, DateTime, Document, Timestamp};
use haimg_init::join::mongo::{self, Hello, Outcome, Peer};

// ---- recorded replies -------------------------------------------------------

fn topology_version() -> Document {
    doc! {"processId": ObjectId::parse_str("6745c1f2a3b4c5d6e7f80910").unwrap(), "counter": 6i64}
}

fn common(d: &mut Document) {
    d.insert("maxBsonObjectSize", 16_777_216);
    d.insert("maxMessageSizeBytes", 48_000_000);
    d.insert("maxWriteBatchSize", 100_000);
    d.insert("localTime", DateTime::from_millis(1_764_130_000_000));
    d.insert("logicalSessionTimeoutMinutes", 30);
    d.insert("connectionId", 7);
    d.insert("minWireVersion", 0);
    d.insert("maxWireVersion", 21);
    d.insert("readOnly", false);
}

/// A mongod started with `replSetName: rs0` that has no config yet.
fn hello_fresh() -> Document {
    let mut d = doc! {
        "isWritablePrimary": false,
        "topologyVersion": topology_version(),
        "secondary": false,
        "isreplicaset": true,
        "info": "Does not have a valid replica set config",
    };
    common(&mut d);
    d.insert("ok", 1.0);
    d
}

fn hosts() -> Vec<Bson> {
    [
        "192.168.30.103:27017",
        "192.168.30.104:27017",
        "192.168.30.105:27017",
    ]
    .iter()
    .map(|h| Bson::String(h.to_string()))
    .collect()
}

fn cluster_time() -> Document {
    doc! {"clusterTime": Timestamp { time: 1_764_130_000, increment: 1 },
    "signature": {"hash": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0; 20] }, "keyId": 0i64}}
}

/// A member of rs0; `me` is its own host.
fn hello_member(me: &str, primary: bool) -> Document {
    let mut d = doc! {
        "topologyVersion": topology_version(),
        "hosts": hosts(),
        "setName": "rs0",
        "setVersion": 1,
        "isWritablePrimary": primary,
        "secondary": !primary,
        "primary": "192.168.30.103:27017",
        "me": me,
        "lastWrite": {
            "opTime": {"ts": Timestamp { time: 1_764_130_000, increment: 1 }, "t": 1i64},
            "lastWriteDate": DateTime::from_millis(1_764_130_000_000),
            "majorityOpTime": {"ts": Timestamp { time: 1_764_130_000, increment: 1 }, "t": 1i64},
            "majorityWriteDate": DateTime::from_millis(1_764_130_000_000),
        },
    };
    if primary {
        d.insert(
            "electionId",
            ObjectId::parse_str("7fffffff0000000000000001").unwrap(),
        );
    }
    common(&mut d);
    d.insert("ok", 1.0);
    d.insert("$clusterTime", cluster_time());
    d.insert(
        "operationTime",
        Timestamp {
            time: 1_764_130_000,
            increment: 1,
        },
    );
    d
}

fn status_not_yet_initialized() -> Document {
    doc! {"ok": 0.0, "errmsg": "no replset config has been received", "code": 94, "codeName": "NotYetInitialized"}
}

fn status_primary() -> Document {
    doc! {"set": "rs0", "date": DateTime::from_millis(1_764_130_000_000), "myState": 1, "term": 1i64,
    "members": [], "ok": 1.0}
}

fn initiate_ok() -> Document {
    doc! {"ok": 1.0, "$clusterTime": cluster_time(), "operationTime": Timestamp { time: 1_764_130_001, increment: 1 }}
}

fn initiate_already() -> Document {
    doc! {"ok": 0.0, "errmsg": "already initialized", "code": 23, "codeName": "AlreadyInitialized"}
}

// ---- the replay server ----------------------------------------------------------

/// Answers OP_MSG commands with recorded replies, by command name, and records requests.
struct Replay {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Document>>>,
}

impl Replay {
    fn start(replies: Vec<(&'static str, Document)>) -> Replay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let replies: Arc<HashMap<&str, Document>> = Arc::new(replies.into_iter().collect());
        let rec = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (rec, replies) = (Arc::clone(&rec), Arc::clone(&replies));
                std::thread::spawn(move || serve(conn, &rec, &replies));
            }
        });
        Replay { addr, seen }
    }

    fn commands(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.keys().next().cloned().unwrap_or_default())
            .collect()
    }

    fn request(&self, name: &str) -> Option<Document> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.keys().next().map(String::as_str) == Some(name))
            .cloned()
    }
}

fn serve(mut conn: TcpStream, rec: &Mutex<Vec<Document>>, replies: &HashMap<&str, Document>) {
    loop {
        let mut head = [0u8; 4];
        if conn.read_exact(&mut head).is_err() {
            return;
        }
        let len = i32::from_le_bytes(head) as usize;
        let mut buf = vec![0u8; len];
        buf[..4].copy_from_slice(&head);
        if conn.read_exact(&mut buf[4..]).is_err() {
            return;
        }
        let msg = haimg_init::join::wire::decode(&buf).expect("the init sends valid OP_MSG");
        let name = msg.body.keys().next().cloned().unwrap_or_default();
        rec.lock().unwrap().push(msg.body.clone());
        let reply = replies.get(name.as_str()).cloned().unwrap_or_else(|| {
            doc! {"ok": 0.0, "errmsg": format!("no such command: '{name}'"), "code": 59, "codeName": "CommandNotFound"}
        });
        let body = reply.to_vec().unwrap();
        let total = 16 + 4 + 1 + body.len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&(total as i32).to_le_bytes());
        out.extend_from_slice(&(msg.request_id + 1000).to_le_bytes());
        out.extend_from_slice(&msg.request_id.to_le_bytes());
        out.extend_from_slice(&2013i32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.push(0);
        out.extend_from_slice(&body);
        if conn.write_all(&out).is_err() {
            return;
        }
    }
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
    let me = Replay::start(vec![
        ("hello", hello_fresh()),
        ("replSetGetStatus", status_not_yet_initialized()),
        ("replSetInitiate", initiate_ok()),
    ]);
    let b = Replay::start(vec![("hello", hello_fresh())]);
    let c = Replay::start(vec![("hello", hello_fresh())]);
    let (outcome, hellos) = mongo::step("rs0", &peers(&[me.addr, b.addr, c.addr]), 0, T);
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
    let a = Replay::start(vec![("hello", hello_fresh())]);
    let me = Replay::start(vec![
        ("hello", hello_fresh()),
        ("replSetInitiate", initiate_ok()),
    ]);
    let c = Replay::start(vec![("hello", hello_fresh())]);
    let (outcome, _) = mongo::step("rs0", &peers(&[a.addr, me.addr, c.addr]), 1, T);
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
    let me = Replay::start(vec![
        ("hello", hello_member("192.168.30.103:27017", true)),
        ("replSetInitiate", initiate_ok()),
    ]);
    let b = Replay::start(vec![("hello", hello_member("192.168.30.104:27017", false))]);
    let c = Replay::start(vec![("hello", hello_member("192.168.30.105:27017", false))]);
    let (outcome, hellos) = mongo::step("rs0", &peers(&[me.addr, b.addr, c.addr]), 0, T);
    assert_eq!(outcome, Outcome::Member { primary: true });
    assert!(
        matches!(&hellos[1], Hello::InSet { set_name, primary: false, hosts } if set_name == "rs0" && hosts.len() == 3)
    );
    assert_eq!(me.commands(), ["hello"]);
}

#[test]
fn a_partly_initiated_set_is_never_initiated_again() {
    // mongo1 was replaced and came back with an empty data volume; mongo2 and mongo3 hold rs0.
    let me = Replay::start(vec![
        ("hello", hello_fresh()),
        ("replSetGetStatus", status_not_yet_initialized()),
        ("replSetInitiate", initiate_ok()),
    ]);
    let b = Replay::start(vec![("hello", hello_member("192.168.30.104:27017", true))]);
    let c = Replay::start(vec![("hello", hello_member("192.168.30.105:27017", false))]);
    let (outcome, _) = mongo::step("rs0", &peers(&[me.addr, b.addr, c.addr]), 0, T);
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
    let me = Replay::start(vec![
        ("hello", hello_fresh()),
        ("replSetInitiate", initiate_ok()),
    ]);
    let b = Replay::start(vec![("hello", hello_fresh())]);
    let (outcome, hellos) = mongo::step("rs0", &peers(&[me.addr, b.addr, closed_port()]), 0, T);
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
    let me = Replay::start(vec![
        ("hello", hello_fresh()),
        ("replSetGetStatus", status_primary()),
        ("replSetInitiate", initiate_ok()),
    ]);
    let b = Replay::start(vec![("hello", hello_fresh())]);
    let c = Replay::start(vec![("hello", hello_fresh())]);
    let (outcome, _) = mongo::step("rs0", &peers(&[me.addr, b.addr, c.addr]), 0, T);
    assert_eq!(outcome, Outcome::Member { primary: true });
    assert_eq!(me.commands(), ["hello", "replSetGetStatus"]);
}

#[test]
fn already_initialized_from_initiate_counts_as_done() {
    let me = Replay::start(vec![
        ("hello", hello_fresh()),
        ("replSetGetStatus", status_not_yet_initialized()),
        ("replSetInitiate", initiate_already()),
    ]);
    let b = Replay::start(vec![("hello", hello_fresh())]);
    let c = Replay::start(vec![("hello", hello_fresh())]);
    let (outcome, _) = mongo::step("rs0", &peers(&[me.addr, b.addr, c.addr]), 0, T);
    assert_eq!(outcome, Outcome::Member { primary: false });
}

#[test]
fn a_member_of_another_set_is_a_conflict() {
    let mut other = hello_member("192.168.30.104:27017", false);
    other.insert("setName", "legacy");
    let me = Replay::start(vec![
        ("hello", hello_fresh()),
        ("replSetInitiate", initiate_ok()),
    ]);
    let b = Replay::start(vec![("hello", other)]);
    let c = Replay::start(vec![("hello", hello_fresh())]);
    let (outcome, _) = mongo::step("rs0", &peers(&[me.addr, b.addr, c.addr]), 0, T);
    assert_eq!(
        outcome,
        Outcome::Conflict {
            reason: "mongo2 is in replica set \"legacy\", not \"rs0\"".into()
        }
    );
    assert_eq!(me.commands(), ["hello"]);
}
