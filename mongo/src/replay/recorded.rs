//! Reply documents recorded from the shapes a real mongod sends, for the
//! [replay server](super). Field names, BSON types and error codes follow
//! these sources; values (hosts, times, ids) are ours:
//!
//! - `hello` fields (isWritablePrimary, secondary, setName, setVersion, hosts,
//!   primary, me, electionId, topologyVersion, localTime, maxWireVersion, …):
//!   the MongoDB manual, "hello" command, Output section.
//! - an uninitialised member (`isreplicaset: true`, no `setName`): the drivers'
//!   SDAM specification test `source/server-discovery-and-monitoring/tests/rs/
//!   discover_ghost.yml` in mongodb/specifications (type RSGhost).
//! - `replSetGetStatus` before initiation: `{ok: 0, errmsg: "no replset config
//!   has been received", code: 94, codeName: "NotYetInitialized"}` — the manual's
//!   replSetGetStatus page ("If you haven't yet initialized your replica set…")
//!   and a captured `rs.status()` of a fresh member.
//! - `replSetGetStatus` of a member of a set ([`rs_status`]): the MongoDB
//!   manual, replSetGetStatus, Example and Output sections (v7.0/v8.0 pages,
//!   example output of 2024-08-15): top-level `set`, `date`, `myState`, `term`,
//!   `syncSourceHost`, `syncSourceId`, `heartbeatIntervalMillis`, vote counts,
//!   `optimes`; per member `_id`, `name`, `health` (double), `state`,
//!   `stateStr`, `uptime`, `optime {ts, t}`, `optimeDurable`, `optimeDate`,
//!   `optimeDurableDate`, `lastAppliedWallTime`, `lastDurableWallTime`,
//!   `lastHeartbeat`, `lastHeartbeatRecv`, `pingMs` (others only),
//!   `electionTime`/`electionDate` (primary only), `configVersion`,
//!   `configTerm`, `self: true` (own entry only). mongod's
//!   `topology_coordinator.cpp` (`prepareStatusResponse`) sets `optimeDate` to
//!   the seconds of `optime.ts`.
//! - `replSetStepDown`: `ok: 1` from MongoDB 4.2 on (the manual,
//!   replSetStepDown, "Behavior": connections are no longer closed); on a
//!   member that is not primary 10107 NotWritablePrimary "not primary so can't
//!   step down", and 262 ExceededTimeLimit "No electable secondaries caught up
//!   as of …" (mongod's `replication_coordinator_impl.cpp`, codes from
//!   `src/mongo/base/error_codes.yml`).
//! - an unknown command: 59 CommandNotFound "no such command: '<name>'".
//! - a command that needs authentication, sent without it while authorization
//!   is on ([`unauthorized`]): `{ok: 0, errmsg: "command <name> requires
//!   authentication", code: 13, codeName: "Unauthorized"}` — mongod's
//!   `src/mongo/db/commands.cpp` (`checkAuthorizationImplPreParse`,
//!   `uassert(ErrorCodes::Unauthorized, "command " << name << " requires
//!   authentication")`), and as users report it from mongosh
//!   ("MongoServerError: command replSetGetStatus requires authentication",
//!   voxpupuli/puppet-mongodb#731). The newest server sources spell it
//!   "Command …"; clients must read the code, never the text.
//! - `hello` of a member with its last write ([`hello_rs`]): the manual's
//!   hello Output section (`lastWrite.opTime`, `lastWriteDate`,
//!   `majorityOpTime`, `majorityWriteDate`; `primary` only while the member
//!   sees one); a member that is neither primary nor secondary
//!   (`isWritablePrimary: false, secondary: false` with `setName`): the SDAM
//!   spec test `source/server-discovery-and-monitoring/tests/rs/discover_rsother.yml`.
//!   `hello` needs no authentication (see `crate::hello`).
//! - SCRAM-SHA-256 ([`sasl_step`], [`auth_failed`]): `saslStart` and
//!   `saslContinue` reply `{conversationId: int32, done: bool, payload:
//!   BinData(0), ok: 1.0}` (mongod's `src/mongo/db/auth/sasl_commands.cpp`,
//!   `buildResponse`; the drivers' auth specification, "SCRAM-SHA-256"
//!   conversation example, which shows `done: true` on the second reply with
//!   `skipEmptyExchange`); a wrong password answers 18 AuthenticationFailed
//!   "Authentication failed." (error_codes.yml; the server never says why).
//!   The payloads are RFC 7677 §3's example conversation.
//! - `createUser` on a fresh member through the localhost exception: `{ok:
//!   1.0}`; once any user exists, a second unauthenticated `createUser` is
//!   [`unauthorized`] (the manual, "Localhost Exception"); a user that exists
//!   answers 51003 Location51003 "User \"name@admin\" already exists", a
//!   role that exists 51002 "Role \"name@admin\" already exists" (mongod's
//!   `user_management_commands.cpp`, `uassert(51003, …)` / `uassert(51002, …)`;
//!   the codes are from the source, not from a captured reply).

use bson::{doc, oid::ObjectId, Bson, DateTime, Document, Timestamp};

use crate::member::MemberState;

/// The recorded replies' "now": 2025-11-26T04:06:40Z, in seconds.
pub const NOW: u32 = 1_764_130_000;

pub fn millis(secs: u32) -> DateTime {
    DateTime::from_millis(i64::from(secs) * 1000)
}

pub fn topology_version() -> Document {
    // Invariant: a valid 24-digit hex ObjectId.
    let pid = ObjectId::parse_str("6745c1f2a3b4c5d6e7f80910").expect("a valid ObjectId");
    doc! {"processId": pid, "counter": 6i64}
}

/// The fields every `hello` reply has.
pub fn common(d: &mut Document) {
    d.insert("maxBsonObjectSize", 16_777_216);
    d.insert("maxMessageSizeBytes", 48_000_000);
    d.insert("maxWriteBatchSize", 100_000);
    d.insert("localTime", millis(NOW));
    d.insert("logicalSessionTimeoutMinutes", 30);
    d.insert("connectionId", 7);
    d.insert("minWireVersion", 0);
    d.insert("maxWireVersion", 21);
    d.insert("readOnly", false);
}

pub fn cluster_time() -> Document {
    doc! {"clusterTime": Timestamp { time: NOW, increment: 1 },
    "signature": {"hash": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0; 20] }, "keyId": 0i64}}
}

/// What a member of a set appends to every successful reply.
pub fn gossip(d: &mut Document) {
    d.insert("$clusterTime", cluster_time());
    d.insert(
        "operationTime",
        Timestamp {
            time: NOW,
            increment: 1,
        },
    );
}

/// `hello` of a mongod started with a replica-set name that has no config yet.
pub fn hello_fresh() -> Document {
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

/// `hello` of member `me` of `set` (with `hosts`), whose primary is `primary`.
pub fn hello_member(set: &str, hosts: &[&str], me: &str, primary: &str) -> Document {
    let is_primary = me == primary;
    let hosts: Vec<Bson> = hosts.iter().map(|h| Bson::String(h.to_string())).collect();
    let mut d = doc! {
        "topologyVersion": topology_version(),
        "hosts": hosts,
        "setName": set,
        "setVersion": 1,
        "isWritablePrimary": is_primary,
        "secondary": !is_primary,
        "primary": primary,
        "me": me,
        "lastWrite": {
            "opTime": {"ts": Timestamp { time: NOW, increment: 1 }, "t": 1i64},
            "lastWriteDate": millis(NOW),
            "majorityOpTime": {"ts": Timestamp { time: NOW, increment: 1 }, "t": 1i64},
            "majorityWriteDate": millis(NOW),
        },
    };
    if is_primary {
        // Invariant: a valid 24-digit hex ObjectId.
        let id = ObjectId::parse_str("7fffffff0000000000000001").expect("a valid ObjectId");
        d.insert("electionId", id);
    }
    common(&mut d);
    d.insert("ok", 1.0);
    gossip(&mut d);
    d
}

/// An `ok: 0` reply.
pub fn error(code: i32, code_name: &str, errmsg: &str) -> Document {
    doc! {"ok": 0.0, "errmsg": errmsg, "code": code, "codeName": code_name}
}

pub fn command_not_found(command: &str) -> Document {
    error(
        59,
        "CommandNotFound",
        &format!("no such command: '{command}'"),
    )
}

/// One `saslStart`/`saslContinue` reply carrying `payload`.
pub fn sasl_step(conversation: i32, done: bool, payload: &str) -> Document {
    let mut d = doc! {
        "conversationId": conversation,
        "done": done,
        "payload": Bson::Binary(bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes: payload.as_bytes().to_vec(),
        }),
        "ok": 1.0,
    };
    gossip(&mut d);
    d
}

pub fn auth_failed() -> Document {
    error(18, "AuthenticationFailed", "Authentication failed.")
}

pub fn user_exists(user: &str) -> Document {
    error(
        51003,
        "Location51003",
        &format!("User \"{user}@admin\" already exists"),
    )
}

/// `command` sent without authentication while authorization is on.
pub fn unauthorized(command: &str) -> Document {
    error(
        13,
        "Unauthorized",
        &format!("command {command} requires authentication"),
    )
}

/// `hello` of member `me` of `set` (with `hosts`) in `state`, seeing
/// `primary` (`None`: no primary in its view), whose last applied write was
/// at `last_write` (seconds). PRIMARY and SECONDARY answer as such; any
/// other state answers neither (RSOther).
pub fn hello_rs(
    set: &str,
    hosts: &[&str],
    me: &str,
    state: MemberState,
    primary: Option<&str>,
    last_write: u32,
) -> Document {
    let is_primary = state == MemberState::Primary;
    let hosts: Vec<Bson> = hosts.iter().map(|h| Bson::String(h.to_string())).collect();
    let op_time = doc! {"ts": Timestamp { time: last_write, increment: 1 }, "t": 2i64};
    let mut d = doc! {
        "topologyVersion": topology_version(),
        "hosts": hosts,
        "setName": set,
        "setVersion": 1,
        "isWritablePrimary": is_primary,
        "secondary": state == MemberState::Secondary,
    };
    if let Some(p) = primary {
        d.insert("primary", p);
    }
    d.insert("me", me);
    if is_primary {
        // Invariant: a valid 24-digit hex ObjectId.
        let id = ObjectId::parse_str("7fffffff0000000000000002").expect("a valid ObjectId");
        d.insert("electionId", id);
    }
    d.insert(
        "lastWrite",
        doc! {
            "opTime": op_time.clone(),
            "lastWriteDate": millis(last_write),
            "majorityOpTime": op_time,
            "majorityWriteDate": millis(last_write),
        },
    );
    common(&mut d);
    d.insert("ok", 1.0);
    gossip(&mut d);
    d
}

/// `replSetGetStatus` before the member has a config.
pub fn status_not_yet_initialized() -> Document {
    error(
        94,
        "NotYetInitialized",
        "no replset config has been received",
    )
}

/// One entry of `members` for [`rs_status`].
#[derive(Debug, Clone)]
pub struct RsMember {
    /// `host:port`.
    pub name: String,
    pub state: MemberState,
    /// Seconds of its last applied op (`optime.ts`, `optimeDate`).
    pub optime_secs: u32,
}

impl RsMember {
    pub fn new(name: &str, state: MemberState, optime_secs: u32) -> RsMember {
        RsMember {
            name: name.to_string(),
            state,
            optime_secs,
        }
    }
}

fn optime(secs: u32) -> Document {
    doc! {"ts": Timestamp { time: secs, increment: 1 }, "t": 2i64}
}

/// `replSetGetStatus` of `members[me]` of `set`.
pub fn rs_status(set: &str, members: &[RsMember], me: usize) -> Document {
    let primary = members.iter().find(|m| m.state == MemberState::Primary);
    let last_committed = primary.map(|p| p.optime_secs).unwrap_or(NOW - 60);
    let own = &members[me];
    let entries: Vec<Bson> = members
        .iter()
        .enumerate()
        .map(|(i, m)| Bson::Document(rs_member(i, m, i == me)))
        .collect();
    let voting = members.len() as i32;
    let mut d = doc! {
        "set": set,
        "date": millis(NOW),
        "myState": own.state.code(),
        "term": 2i64,
        "syncSourceHost": match (own.state, primary) {
            (MemberState::Secondary, Some(p)) => p.name.clone(),
            _ => String::new(),
        },
        "syncSourceId": match (own.state, primary) {
            (MemberState::Secondary, Some(p)) => members.iter().position(|m| m.name == p.name).map_or(-1, |i| i as i32),
            _ => -1,
        },
        "heartbeatIntervalMillis": 2000i64,
        "majorityVoteCount": voting / 2 + 1,
        "writeMajorityCount": voting / 2 + 1,
        "votingMembersCount": voting,
        "writableVotingMembersCount": voting,
        "optimes": {
            "lastCommittedOpTime": optime(last_committed),
            "lastCommittedWallTime": millis(last_committed),
            "readConcernMajorityOpTime": optime(last_committed),
            "appliedOpTime": optime(own.optime_secs),
            "durableOpTime": optime(own.optime_secs),
            "lastAppliedWallTime": millis(own.optime_secs),
            "lastDurableWallTime": millis(own.optime_secs),
        },
        "lastStableRecoveryTimestamp": Timestamp { time: last_committed, increment: 1 },
        "members": entries,
        "ok": 1.0,
    };
    gossip(&mut d);
    d
}

fn rs_member(id: usize, m: &RsMember, me: bool) -> Document {
    let mut d = doc! {
        "_id": id as i32,
        "name": m.name.clone(),
        "health": if m.state == MemberState::Down { 0.0 } else { 1.0 },
        "state": m.state.code(),
        "stateStr": m.state.name(),
        "uptime": 3600,
        "optime": optime(m.optime_secs),
        "optimeDurable": optime(m.optime_secs),
        "optimeDate": millis(m.optime_secs),
        "optimeDurableDate": millis(m.optime_secs),
        "lastAppliedWallTime": millis(m.optime_secs),
        "lastDurableWallTime": millis(m.optime_secs),
    };
    if !me {
        d.insert("lastHeartbeat", millis(NOW - 1));
        d.insert("lastHeartbeatRecv", millis(NOW - 1));
        d.insert("pingMs", 0i64);
        d.insert("lastHeartbeatMessage", "");
    }
    d.insert("syncSourceHost", "");
    d.insert("syncSourceId", -1);
    d.insert("infoMessage", "");
    if m.state == MemberState::Primary {
        d.insert(
            "electionTime",
            Timestamp {
                time: NOW - 3600,
                increment: 1,
            },
        );
        d.insert("electionDate", millis(NOW - 3600));
    }
    d.insert("configVersion", 1);
    d.insert("configTerm", 2i64);
    if me {
        d.insert("self", true);
        d.insert("lastHeartbeatMessage", "");
    }
    d
}

/// `replSetStepDown` that succeeded (MongoDB 4.2 and later answer).
pub fn step_down_ok() -> Document {
    let mut d = doc! {"ok": 1.0};
    gossip(&mut d);
    d
}

/// `replSetStepDown` on a member that is not primary.
pub fn step_down_not_primary() -> Document {
    error(
        10107,
        "NotWritablePrimary",
        "not primary so can't step down",
    )
}

/// `replSetStepDown` when no secondary caught up within the catch-up period.
pub fn step_down_no_secondary_caught_up() -> Document {
    error(
        262,
        "ExceededTimeLimit",
        "No electable secondaries caught up as of 2025-11-26T04:06:50.000+00:00. Please use the replSetStepDown command with the argument {force: true} to force node to step down.",
    )
}
