//! rs0 join: the first mongo slot initiates the replica set once every
//! member answers `hello` as an uninitialised replica-set member and none
//! reports an existing set; every other member waits to be added. Every boot
//! runs it again and it changes nothing when the set exists (idempotent); a
//! replaced member with an empty data volume is an uninitialised member of a
//! set the others still report, so it is never initiated again — the primary's
//! heartbeats hand it the config and it rejoins by initial sync.
//!
//! [`decide`] is pure (hello replies in, [`Decision`] out); [`step`] does one
//! round over the wire: `hello` to every member, `replSetGetStatus` on the
//! local member before initiating (a set that exists after all is never
//! initiated twice), then `replSetInitiate`. Only `hello` is sent to peers; the
//! state-changing commands go to the local mongod over 127.0.0.1, which is
//! also what the localhost exception allows when a keyfile enables auth.

use std::net::SocketAddr;
use std::time::Duration;

use bson::{doc, Bson, Document};
use serde::Serialize;

use haimg_mongo::wire::{self, Conn, WireError};

/// Server error codes the join understands (MongoDB's error_codes.yml).
pub use haimg_mongo::member::{ALREADY_INITIALIZED, NOT_YET_INITIALIZED};

/// One member as the join sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub slot: String,
    /// `host:port` as written into the replica-set config (the plan's IP).
    pub host: String,
    /// Where to connect (the local member: 127.0.0.1).
    pub addr: SocketAddr,
}

/// What a member's `hello` says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Hello {
    /// No answer (refused, timed out, closed).
    Unreachable { error: String },
    /// Started with a replica-set name but no config yet (`isreplicaset: true`).
    Uninitialized,
    /// In a set: `setName`, and whether it is the primary.
    InSet {
        set_name: String,
        primary: bool,
        hosts: Vec<String>,
    },
    /// Neither: a standalone mongod, or a reply the join does not understand.
    Other { detail: String },
}

pub fn classify_hello(reply: &Document) -> Hello {
    if !wire::ok(reply) {
        let (code, name, msg) = wire::error_of(reply);
        return Hello::Other {
            detail: format!("hello failed: {code} {name} {msg}"),
        };
    }
    if let Ok(set) = reply.get_str("setName") {
        let primary = reply
            .get_bool("isWritablePrimary")
            .or_else(|_| reply.get_bool("ismaster"))
            .unwrap_or(false);
        let hosts = reply
            .get_array("hosts")
            .map(|a| {
                a.iter()
                    .filter_map(Bson::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        return Hello::InSet {
            set_name: set.to_string(),
            primary,
            hosts,
        };
    }
    if reply.get_bool("isreplicaset").unwrap_or(false) {
        return Hello::Uninitialized;
    }
    Hello::Other {
        detail: "not started as a replica-set member (no setName, no isreplicaset)".into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    /// This member is in the set: nothing to do.
    Member { primary: bool },
    /// Initiate with this config (first slot, every member uninitialised).
    Initiate {
        #[serde(skip)]
        config: Document,
    },
    /// Not now: why.
    Wait { reason: String },
    /// A member belongs to another set or is no replica-set member: never initiate.
    Conflict { reason: String },
}

/// The pure decision for member `me` (an index into `peers`) of set `rs`.
pub fn decide(rs: &str, peers: &[Peer], hellos: &[Hello], me: usize) -> Decision {
    // Invariant: one hello per peer and `me` among them; checked, not trusted.
    let (Some(own), Some(first)) = (hellos.get(me), peers.first()) else {
        return Decision::Wait {
            reason: format!("member {me} of {} is not in the plan's {rs}", peers.len()),
        };
    };
    if hellos.len() != peers.len() {
        return Decision::Wait {
            reason: format!("{} answers for {} members", hellos.len(), peers.len()),
        };
    }
    if let Hello::InSet {
        set_name, primary, ..
    } = own
    {
        if set_name == rs {
            return Decision::Member { primary: *primary };
        }
    }
    for (p, h) in peers.iter().zip(hellos) {
        match h {
            Hello::InSet { set_name, .. } if set_name != rs => {
                return Decision::Conflict {
                    reason: format!("{} is in replica set {set_name:?}, not {rs:?}", p.slot),
                }
            }
            Hello::Other { detail } => {
                return Decision::Conflict {
                    reason: format!("{}: {detail}", p.slot),
                }
            }
            _ => {}
        }
    }
    if let Some(p) = peers
        .iter()
        .zip(hellos)
        .find(|(_, h)| matches!(h, Hello::InSet { .. }))
        .map(|(p, _)| p)
    {
        return Decision::Wait {
            reason: format!("{rs} exists ({} is a member); waiting to be added", p.slot),
        };
    }
    if me != 0 {
        return Decision::Wait {
            reason: format!("{} initiates {rs}; waiting to be added", first.slot),
        };
    }
    let down: Vec<String> = peers
        .iter()
        .zip(hellos)
        .filter_map(|(p, h)| match h {
            Hello::Unreachable { error } => Some(format!("{} ({error})", p.slot)),
            _ => None,
        })
        .collect();
    if !down.is_empty() {
        return Decision::Wait {
            reason: format!(
                "waiting for every member to answer hello: {}",
                down.join(", ")
            ),
        };
    }
    Decision::Initiate {
        config: initiate_config(rs, peers),
    }
}

/// PSS: every member votes with the default priority; `_id` follows slot order.
pub fn initiate_config(rs: &str, peers: &[Peer]) -> Document {
    let members: Vec<Bson> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| Bson::Document(doc! {"_id": i as i32, "host": p.host.clone()}))
        .collect();
    doc! {"_id": rs, "version": 1, "members": members}
}

/// What one round ended with, for the status file and the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Outcome {
    Member { primary: bool },
    Initiated { members: usize },
    Waiting { reason: String },
    Conflict { reason: String },
    Failed { reason: String },
}

pub fn hello(addr: SocketAddr, timeout: Duration) -> Hello {
    let reply = Conn::connect(addr, timeout).and_then(|mut c| c.command(&doc! {"hello": 1}));
    match reply {
        Ok(r) => classify_hello(&r),
        Err(WireError::Io { error, .. }) => Hello::Unreachable {
            error: error.to_string(),
        },
        Err(WireError::Timeout { after, .. }) => Hello::Unreachable {
            error: format!("no reply within {}s", after.as_secs_f64()),
        },
        Err(e) => Hello::Other {
            detail: e.to_string(),
        },
    }
}

/// One round: hello everyone, decide, and initiate if it is time.
pub fn step(rs: &str, peers: &[Peer], me: usize, timeout: Duration) -> (Outcome, Vec<Hello>) {
    let hellos: Vec<Hello> = peers.iter().map(|p| hello(p.addr, timeout)).collect();
    let outcome = match decide(rs, peers, &hellos, me) {
        Decision::Member { primary } => Outcome::Member { primary },
        Decision::Wait { reason } => Outcome::Waiting { reason },
        Decision::Conflict { reason } => Outcome::Conflict { reason },
        Decision::Initiate { config } => match peers.get(me) {
            Some(local) => initiate(local, config, peers.len(), timeout),
            None => Outcome::Failed {
                reason: format!("member {me} is not in the plan"),
            },
        },
    };
    (outcome, hellos)
}

fn initiate(local: &Peer, config: Document, members: usize, timeout: Duration) -> Outcome {
    let failed = |reason: String| Outcome::Failed { reason };
    let mut conn = match Conn::connect(local.addr, timeout) {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    // Double-check on the member itself: a config may have arrived since hello.
    match conn.command(&doc! {"replSetGetStatus": 1}) {
        Ok(r) if wire::ok(&r) => {
            return Outcome::Member {
                primary: r.get_i32("myState").map(|s| s == 1).unwrap_or(false),
            }
        }
        Ok(r) => {
            let (code, name, msg) = wire::error_of(&r);
            // 94: what a fresh member says. Anything else (e.g. Unauthorized with a
            // keyfile and no user yet) is not a reason to hold back: hello said uninitialised.
            if code != NOT_YET_INITIALIZED {
                crate::info!(
                    "rs0: replSetGetStatus answered {code} {name}: {msg}; relying on hello"
                );
            }
        }
        Err(e) => return failed(e.to_string()),
    }
    // Initiation contacts every member before it answers.
    conn.set_read_timeout(Duration::from_secs(60));
    match conn.command(&doc! {"replSetInitiate": config}) {
        Ok(r) if wire::ok(&r) => Outcome::Initiated { members },
        Ok(r) => {
            let (code, name, msg) = wire::error_of(&r);
            if code == ALREADY_INITIALIZED {
                Outcome::Member { primary: false }
            } else {
                failed(format!("replSetInitiate: {code} {name}: {msg}"))
            }
        }
        Err(e) => failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> Vec<Peer> {
        (0..3)
            .map(|i| Peer {
                slot: format!("mongo{}", i + 1),
                host: format!("192.168.30.{}:27017", 103 + i),
                addr: SocketAddr::from(([127, 0, 0, 1], 27017)),
            })
            .collect()
    }

    fn in_set(name: &str) -> Hello {
        Hello::InSet {
            set_name: name.into(),
            primary: false,
            hosts: vec![],
        }
    }

    #[test]
    fn a_member_outside_the_list_waits() {
        let fresh = [
            Hello::Uninitialized,
            Hello::Uninitialized,
            Hello::Uninitialized,
        ];
        assert!(matches!(
            decide("rs0", &peers(), &fresh, 3),
            Decision::Wait { .. }
        ));
        assert!(matches!(decide("rs0", &[], &[], 0), Decision::Wait { .. }));
        assert!(matches!(
            decide("rs0", &peers(), &fresh[..2], 0),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn first_slot_initiates_when_all_are_fresh() {
        let d = decide(
            "rs0",
            &peers(),
            &[
                Hello::Uninitialized,
                Hello::Uninitialized,
                Hello::Uninitialized,
            ],
            0,
        );
        let Decision::Initiate { config } = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            config,
            doc! {"_id": "rs0", "version": 1, "members": [
                {"_id": 0, "host": "192.168.30.103:27017"},
                {"_id": 1, "host": "192.168.30.104:27017"},
                {"_id": 2, "host": "192.168.30.105:27017"},
            ]}
        );
    }

    #[test]
    fn others_wait_and_nobody_initiates_an_existing_set() {
        let fresh = [
            Hello::Uninitialized,
            Hello::Uninitialized,
            Hello::Uninitialized,
        ];
        assert_eq!(
            decide("rs0", &peers(), &fresh, 1),
            Decision::Wait {
                reason: "mongo1 initiates rs0; waiting to be added".into()
            }
        );
        // A replaced mongo1 with an empty volume: the others still have the set.
        let replaced = [Hello::Uninitialized, in_set("rs0"), in_set("rs0")];
        assert_eq!(
            decide("rs0", &peers(), &replaced, 0),
            Decision::Wait {
                reason: "rs0 exists (mongo2 is a member); waiting to be added".into()
            }
        );
        assert_eq!(
            decide(
                "rs0",
                &peers(),
                &[in_set("rs0"), in_set("rs0"), in_set("rs0")],
                2
            ),
            Decision::Member { primary: false }
        );
    }

    #[test]
    fn an_unreachable_member_delays_initiation() {
        let h = [
            Hello::Uninitialized,
            Hello::Uninitialized,
            Hello::Unreachable {
                error: "connection refused".into(),
            },
        ];
        assert_eq!(
            decide("rs0", &peers(), &h, 0),
            Decision::Wait {
                reason: "waiting for every member to answer hello: mongo3 (connection refused)"
                    .into()
            }
        );
    }

    #[test]
    fn foreign_sets_and_standalones_are_conflicts() {
        let h = [Hello::Uninitialized, in_set("other"), Hello::Uninitialized];
        assert_eq!(
            decide("rs0", &peers(), &h, 0),
            Decision::Conflict {
                reason: "mongo2 is in replica set \"other\", not \"rs0\"".into()
            }
        );
        let h = [
            Hello::Uninitialized,
            Hello::Other {
                detail: "not started as a replica-set member (no setName, no isreplicaset)".into(),
            },
            Hello::Uninitialized,
        ];
        assert!(matches!(
            decide("rs0", &peers(), &h, 0),
            Decision::Conflict { .. }
        ));
    }
}
