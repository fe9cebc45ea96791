//! A member's state and lag from `hello`, the one replica-set command a
//! mongod answers without authentication: what the host uses when a keyfile
//! is set (authorization on) and `replSetGetStatus` answers 13 Unauthorized.
//!
//! **Why `hello` works without credentials.** mongod's `hello` command
//! declares `requiresAuth() == false` (`src/mongo/db/repl/replication_info.cpp`,
//! `CmdHello`), and drivers rely on it: the drivers' Server Monitoring spec
//! (mongodb/specifications, `source/server-discovery-and-monitoring/server-monitoring.md`)
//! says "Drivers MUST NOT authenticate on sockets used for monitoring", and
//! the Max Staleness spec computes a secondary's staleness from
//! `lastWrite.lastWriteDate` of exactly those unauthenticated replies. The
//! fields read here (MongoDB manual, "hello" command, Output; names in
//! `src/mongo/db/repl/hello_response.cpp`): `isWritablePrimary`,
//! `secondary`, `arbiterOnly`, `hidden`, `setName`, `primary` (present only
//! while the member sees a primary), `me`, `isreplicaset` (a member started
//! with a set name but without a config), and `lastWrite {opTime {ts, t},
//! lastWriteDate, majorityOpTime, majorityWriteDate}`.
//!
//! **State** ([`Hello::state`]), as the SDAM spec classifies servers:
//! `isWritablePrimary` → PRIMARY, `secondary` → SECONDARY, `arbiterOnly` →
//! ARBITER, `setName` without any of these → [`MemberState::RsOther`]
//! (STARTUP2, RECOVERING, ROLLBACK and hidden members cannot be told apart
//! over `hello`), `isreplicaset` without `setName` → no config yet
//! (STARTUP). A member in shutdown's quiesce period answers `hello` with an
//! error (91 ShutdownInProgress), which is a refusal like any other.
//!
//! **Lag** ([`status_from_hello`]): the primary's `lastWrite.lastWriteDate`
//! minus the member's own, each from its own `hello` (`lastWrite.opTime.ts`
//! when a reply has no date). `lastWriteDate` is the wall-clock time of the
//! last oplog entry the member applied; the caller asks the member first and
//! the primary second, so writes that land between the two answers count as
//! lag: the figure errs towards "behind", never towards "caught up". On an
//! idle set both dates move with the primary's periodic no-op write (every
//! 10 s), so a single probe that falls between the no-op and its replication
//! may see a lag once; a gate that wants several good answers in a row is
//! not fooled by it. The primary is the member this one names in `primary`,
//! confirmed by that member's own `hello` (`isWritablePrimary`, same set);
//! the pairing is the caller's, who knows how to reach the named address.

use std::net::SocketAddr;
use std::time::Duration;

use bson::{doc, Bson, Document};

use crate::member::{common_hint, MemberError, MemberState, Status};
use crate::wire::{self, Conn};

pub const HELLO_COMMAND: &str = "hello";

/// The `hello` request.
pub fn hello_request() -> Document {
    doc! {"hello": 1}
}

/// What one member's `hello` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub writable_primary: bool,
    pub secondary: bool,
    pub arbiter: bool,
    pub hidden: bool,
    /// `isreplicaset: true`: started with a set name, no config yet.
    pub awaiting_config: bool,
    pub set: Option<String>,
    /// `host:port` of the member it sees as primary.
    pub primary: Option<String>,
    /// `host:port` it has in the config.
    pub me: Option<String>,
    /// Seconds since the epoch of its last applied write
    /// (`lastWrite.lastWriteDate`, else `lastWrite.opTime.ts`).
    pub last_write_s: Option<f64>,
}

impl Hello {
    /// The state as far as `hello` tells it (see the module docs).
    pub fn state(&self) -> MemberState {
        if self.writable_primary {
            MemberState::Primary
        } else if self.secondary {
            MemberState::Secondary
        } else if self.arbiter {
            MemberState::Arbiter
        } else if self.set.is_some() {
            MemberState::RsOther
        } else {
            MemberState::Startup
        }
    }
}

/// Connect to `addr` and ask for its `hello`.
pub fn hello(addr: SocketAddr, timeout: Duration) -> Result<Hello, MemberError> {
    let mut conn = Conn::connect(addr, timeout)?;
    hello_with(&mut conn)
}

/// Ask the member on `conn` for its `hello`.
pub fn hello_with(conn: &mut Conn) -> Result<Hello, MemberError> {
    let reply = conn.command(&hello_request())?;
    parse_hello(conn.addr(), &reply)
}

/// A `hello` reply as a [`Hello`].
pub fn parse_hello(addr: SocketAddr, reply: &Document) -> Result<Hello, MemberError> {
    if !wire::ok(reply) {
        let (code, _, _) = wire::error_of(reply);
        return Err(crate::member::refused(
            addr,
            HELLO_COMMAND,
            reply,
            common_hint(code),
        ));
    }
    let flag = |k: &str| reply.get_bool(k).unwrap_or(false);
    let text = |k: &str| reply.get_str(k).ok().map(str::to_string);
    // A reply with none of the fields is no mongod's `hello`.
    if reply.get("isWritablePrimary").is_none() && reply.get("ismaster").is_none() {
        return Err(MemberError::Unexpected {
            addr,
            command: HELLO_COMMAND,
            detail: "no isWritablePrimary".into(),
        });
    }
    Ok(Hello {
        writable_primary: flag("isWritablePrimary") || flag("ismaster"),
        secondary: flag("secondary"),
        arbiter: flag("arbiterOnly"),
        hidden: flag("hidden"),
        awaiting_config: flag("isreplicaset") && reply.get("setName").is_none(),
        set: text("setName"),
        primary: text("primary"),
        me: text("me"),
        last_write_s: reply.get_document("lastWrite").ok().and_then(last_write),
    })
}

fn last_write(lw: &Document) -> Option<f64> {
    if let Ok(d) = lw.get_datetime("lastWriteDate") {
        return Some(d.timestamp_millis() as f64 / 1000.0);
    }
    match lw.get("opTime") {
        Some(Bson::Document(o)) => o.get_timestamp("ts").ok().map(|t| f64::from(t.time)),
        _ => None,
    }
}

/// Why the member's view names no usable primary, or the primary's `hello`
/// when it does (what the caller found at the address in `own.primary`).
#[derive(Debug, Clone, PartialEq)]
pub enum PrimaryHello {
    /// The member names no primary (`primary` absent).
    NoneInView,
    /// The named primary could not be asked (unreachable, an address the
    /// caller cannot reach, a refusal): why.
    Unasked(String),
    Answered(Hello),
}

/// A [`Status`] from the member's own `hello` and, for a member that is not
/// primary, what the member it names as primary answered.
pub fn status_from_hello(own: &Hello, primary: &PrimaryHello) -> Status {
    let state = own.state();
    let (lag_s, note) = match (state, primary) {
        (MemberState::Primary, _) => (Some(0.0), None),
        (MemberState::Startup, _) if own.awaiting_config => (
            None,
            Some(
                "no replica-set config yet (hello: isreplicaset without setName): the set is not initiated, or this member was not added to it"
                    .to_string(),
            ),
        ),
        (_, PrimaryHello::NoneInView) => {
            (None, Some("no member is PRIMARY in its view".to_string()))
        }
        (_, PrimaryHello::Unasked(why)) => (
            None,
            Some(format!(
                "its primary {} could not be asked: {why}",
                own.primary.as_deref().unwrap_or("?")
            )),
        ),
        (_, PrimaryHello::Answered(p)) if !p.writable_primary || p.set != own.set => (
            None,
            Some(format!(
                "{} is named primary but does not say so itself (an election is running?)",
                own.primary.as_deref().unwrap_or("?")
            )),
        ),
        (_, PrimaryHello::Answered(p)) => match (own.last_write_s, p.last_write_s) {
            (Some(mine), Some(theirs)) => (Some((theirs - mine).max(0.0)), None),
            _ => (
                None,
                Some("no lastWrite in its hello or the primary's".to_string()),
            ),
        },
    };
    let note = match (state, note) {
        (MemberState::RsOther, n) => Some(
            [
                Some("hello says neither primary nor secondary (STARTUP2, RECOVERING, ROLLBACK or hidden)".to_string()),
                n,
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; "),
        ),
        (_, n) => n,
    };
    Status {
        state,
        set: own.set.clone(),
        lag_s,
        primary: match state {
            MemberState::Primary => own.me.clone(),
            _ => own.primary.clone(),
        },
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{DateTime, Timestamp};

    fn addr() -> SocketAddr {
        SocketAddr::from(([192, 168, 30, 104], 27017))
    }

    fn secondary(last_ms: i64) -> Hello {
        Hello {
            writable_primary: false,
            secondary: true,
            arbiter: false,
            hidden: false,
            awaiting_config: false,
            set: Some("rs0".into()),
            primary: Some("192.168.30.103:27017".into()),
            me: Some("192.168.30.104:27017".into()),
            last_write_s: Some(last_ms as f64 / 1000.0),
        }
    }

    fn primary(last_ms: i64) -> Hello {
        Hello {
            writable_primary: true,
            secondary: false,
            me: Some("192.168.30.103:27017".into()),
            ..secondary(last_ms)
        }
    }

    #[test]
    fn states_as_the_sdam_spec_classifies_them() {
        assert_eq!(primary(0).state(), MemberState::Primary);
        assert_eq!(secondary(0).state(), MemberState::Secondary);
        let other = Hello {
            secondary: false,
            hidden: true,
            ..secondary(0)
        };
        assert_eq!(other.state(), MemberState::RsOther);
        assert_eq!(other.state().to_string(), "RSOther");
        let arbiter = Hello {
            secondary: false,
            arbiter: true,
            ..secondary(0)
        };
        assert_eq!(arbiter.state(), MemberState::Arbiter);
        let ghost = Hello {
            secondary: false,
            set: None,
            awaiting_config: true,
            ..secondary(0)
        };
        assert_eq!(ghost.state(), MemberState::Startup);
    }

    #[test]
    fn lag_is_the_primarys_last_write_minus_the_members() {
        let s = status_from_hello(
            &secondary(1_000_500),
            &PrimaryHello::Answered(primary(1_030_500)),
        );
        assert_eq!(
            (s.state, s.lag_s, s.note),
            (MemberState::Secondary, Some(30.0), None)
        );
        // Ahead of the primary's answer (asked later): 0.
        let s = status_from_hello(
            &secondary(1_000_900),
            &PrimaryHello::Answered(primary(1_000_000)),
        );
        assert_eq!(s.lag_s, Some(0.0));
        // A primary's lag is 0 and it names itself.
        let s = status_from_hello(&primary(5), &PrimaryHello::NoneInView);
        assert_eq!(
            (s.lag_s, s.primary.as_deref()),
            (Some(0.0), Some("192.168.30.103:27017"))
        );
    }

    #[test]
    fn lag_is_unknown_without_a_confirmed_primary() {
        let no = status_from_hello(&secondary(0), &PrimaryHello::NoneInView);
        assert_eq!(no.lag_s, None);
        assert_eq!(no.note.as_deref(), Some("no member is PRIMARY in its view"));
        let stale = status_from_hello(&secondary(0), &PrimaryHello::Answered(secondary(0)));
        assert_eq!(stale.note.as_deref(), Some("192.168.30.103:27017 is named primary but does not say so itself (an election is running?)"));
        let down = status_from_hello(
            &secondary(0),
            &PrimaryHello::Unasked("connection refused".into()),
        );
        assert_eq!(
            down.note.as_deref(),
            Some("its primary 192.168.30.103:27017 could not be asked: connection refused")
        );
        let blind = Hello {
            last_write_s: None,
            ..secondary(0)
        };
        let s = status_from_hello(&blind, &PrimaryHello::Answered(primary(0)));
        assert_eq!(
            s.note.as_deref(),
            Some("no lastWrite in its hello or the primary's")
        );
    }

    #[test]
    fn parses_last_write_date_before_the_optime() {
        let reply = doc! {"isWritablePrimary": false, "secondary": true, "setName": "rs0", "ok": 1.0,
        "lastWrite": {"opTime": {"ts": Timestamp { time: 2000, increment: 1 }, "t": 1i64},
                      "lastWriteDate": DateTime::from_millis(1_990_250)}};
        assert_eq!(
            parse_hello(addr(), &reply).unwrap().last_write_s,
            Some(1990.25)
        );
        let reply = doc! {"isWritablePrimary": false, "secondary": true, "setName": "rs0", "ok": 1.0,
        "lastWrite": {"opTime": {"ts": Timestamp { time: 2000, increment: 1 }, "t": 1i64}}};
        assert_eq!(
            parse_hello(addr(), &reply).unwrap().last_write_s,
            Some(2000.0)
        );
    }

    #[test]
    fn refusals_and_strange_replies() {
        let e = parse_hello(
            addr(),
            &doc! {"ok": 0.0, "errmsg": "The server is in quiesce mode and will shut down", "code": 91, "codeName": "ShutdownInProgress"},
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "192.168.30.104:27017: hello failed: 91 ShutdownInProgress: The server is in quiesce mode and will shut down (mongod is shutting down)");
        let e = parse_hello(addr(), &doc! {"ok": 1.0}).unwrap_err();
        assert_eq!(
            e.to_string(),
            "192.168.30.104:27017: hello: unexpected reply: no isWritablePrimary"
        );
    }
}
