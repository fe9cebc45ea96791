//! Host-side replica-set commands: what one member says about itself
//! ([`status`], from `replSetGetStatus`) and asking a primary to step down
//! ([`step_down`], `replSetStepDown`).
//!
//! The parsing is pure ([`parse_status`], [`parse_step_down`]: reply in,
//! result out); the I/O is one command on one connection, which the caller
//! may open itself ([`status_with`], [`step_down_with`] take a [`Conn`]) to
//! connect from a network namespace or a chosen source address.
//!
//! **Lag.** A member's lag is the primary's `optimeDate` minus its own, both
//! taken from the `members` array of the member's own `replSetGetStatus`
//! reply (the entry with `self: true` against the entry whose `stateStr` is
//! `PRIMARY`). `optimeDate` is the wall-clock second of the member's last
//! applied oplog entry (mongod derives it from `optime.ts`'s seconds), so the
//! lag has one-second granularity; when a reply has no `optimeDate`,
//! `optime.ts` (or a bare `optime` timestamp, protocol version 0) is used. The
//! primary's entry comes from heartbeats (every 2 s), so a member may look
//! ahead of the primary: the lag is then 0. A primary's lag is 0; with no
//! primary in the member's view the lag is unknown (`None`).
//!
//! Error codes and names are MongoDB's `src/mongo/base/error_codes.yml`.

use std::net::SocketAddr;
use std::time::Duration;

use bson::{doc, Bson, Document};

use crate::wire::{self, Conn, WireError};

/// `replSetInitiate` on a member that has a config.
pub const ALREADY_INITIALIZED: i32 = 23;
/// `replSetGetStatus` on a member that has received no config.
pub const NOT_YET_INITIALIZED: i32 = 94;
/// `replSetGetStatus` on a member that is not in its own config (REMOVED).
pub const INVALID_REPLICA_SET_CONFIG: i32 = 93;
/// `replSetStepDown` on a member that is not primary.
pub const NOT_WRITABLE_PRIMARY: i32 = 10107;
/// `replSetStepDown` when no electable secondary caught up in time.
pub const EXCEEDED_TIME_LIMIT: i32 = 262;
/// An operation ended because the primary stepped down.
pub const PRIMARY_STEPPED_DOWN: i32 = 189;
/// An operation was interrupted by a replica-set state change.
pub const INTERRUPTED_DUE_TO_REPL_STATE_CHANGE: i32 = 11602;
/// Authorization is on and the client did not authenticate.
pub const UNAUTHORIZED: i32 = 13;
/// mongod runs without a replica-set name.
pub const NO_REPLICATION_ENABLED: i32 = 76;
/// mongod is shutting down (its quiesce period answers `hello` with it).
pub const SHUTDOWN_IN_PROGRESS: i32 = 91;

/// The most `secondaryCatchUpPeriodSecs` [`step_down`] asks for (the server's default).
pub const MAX_CATCH_UP_SECS: u32 = 10;

/// A replica-set member state (`myState`, `members[].state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    Startup,
    Primary,
    Secondary,
    Recovering,
    Startup2,
    Unknown,
    Arbiter,
    Down,
    Rollback,
    Removed,
    /// From `hello` only: a member of a set that is neither primary,
    /// secondary nor arbiter (STARTUP2, RECOVERING, ROLLBACK and hidden
    /// members look alike over `hello`; the SDAM spec calls it RSOther). It
    /// has no number of its own: [`MemberState::code`] says -1.
    RsOther,
    /// A number this client does not know.
    Other(i32),
}

impl MemberState {
    pub fn from_code(code: i32) -> MemberState {
        match code {
            0 => MemberState::Startup,
            1 => MemberState::Primary,
            2 => MemberState::Secondary,
            3 => MemberState::Recovering,
            5 => MemberState::Startup2,
            6 => MemberState::Unknown,
            7 => MemberState::Arbiter,
            8 => MemberState::Down,
            9 => MemberState::Rollback,
            10 => MemberState::Removed,
            n => MemberState::Other(n),
        }
    }

    pub fn code(self) -> i32 {
        match self {
            MemberState::Startup => 0,
            MemberState::Primary => 1,
            MemberState::Secondary => 2,
            MemberState::Recovering => 3,
            MemberState::Startup2 => 5,
            MemberState::Unknown => 6,
            MemberState::Arbiter => 7,
            MemberState::Down => 8,
            MemberState::Rollback => 9,
            MemberState::Removed => 10,
            MemberState::RsOther => -1,
            MemberState::Other(n) => n,
        }
    }

    /// The server's `stateStr` (`STATE<n>` for an unknown number).
    pub fn name(self) -> String {
        let s = match self {
            MemberState::Startup => "STARTUP",
            MemberState::Primary => "PRIMARY",
            MemberState::Secondary => "SECONDARY",
            MemberState::Recovering => "RECOVERING",
            MemberState::Startup2 => "STARTUP2",
            MemberState::Unknown => "UNKNOWN",
            MemberState::Arbiter => "ARBITER",
            MemberState::Down => "DOWN",
            MemberState::Rollback => "ROLLBACK",
            MemberState::Removed => "REMOVED",
            MemberState::RsOther => "RSOther",
            MemberState::Other(n) => return format!("STATE{n}"),
        };
        s.to_string()
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// One member as its own `replSetGetStatus` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub state: MemberState,
    /// The replica set's name; `None` when the member has no config.
    pub set: Option<String>,
    /// Seconds its last applied op is behind the primary's (see the module docs).
    pub lag_s: Option<f64>,
    /// `host:port` of the member it sees as primary, if any.
    pub primary: Option<String>,
    /// Why the state or the lag is what it is, when that is not obvious.
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The server answered `ok: 0`.
    #[error("{0}")]
    Refused(Box<Refusal>),
    /// An `ok: 1` reply without the fields the command always returns.
    #[error("{addr}: {command}: unexpected reply: {detail}")]
    Unexpected {
        addr: SocketAddr,
        command: &'static str,
        detail: String,
    },
    #[error("{addr}: {command}: {detail}")]
    BadArgument {
        addr: SocketAddr,
        command: &'static str,
        detail: String,
    },
}

/// A command the server answered with `ok: 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub addr: SocketAddr,
    pub command: &'static str,
    pub code: i32,
    pub code_name: String,
    pub errmsg: String,
    /// What the code means here.
    pub hint: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} failed: {} {}: {}",
            self.addr, self.command, self.code, self.code_name, self.errmsg
        )?;
        match &self.hint {
            Some(h) => write!(f, " ({h})"),
            None => Ok(()),
        }
    }
}

impl MemberError {
    pub fn addr(&self) -> SocketAddr {
        match self {
            MemberError::Wire(e) => e.addr(),
            MemberError::Refused(r) => r.addr,
            MemberError::Unexpected { addr, .. } | MemberError::BadArgument { addr, .. } => *addr,
        }
    }

    /// The server's error code, when it answered with one.
    pub fn code(&self) -> Option<i32> {
        match self {
            MemberError::Refused(r) => Some(r.code),
            _ => None,
        }
    }
}

pub(crate) fn refused(
    addr: SocketAddr,
    command: &'static str,
    reply: &Document,
    hint: Option<String>,
) -> MemberError {
    let (code, code_name, errmsg) = wire::error_of(reply);
    MemberError::Refused(Box::new(Refusal {
        addr,
        command,
        code,
        code_name,
        errmsg,
        hint,
    }))
}

/// Hints for codes any command can meet.
pub(crate) fn common_hint(code: i32) -> Option<String> {
    match code {
        UNAUTHORIZED => Some(
            "authorization is on (a keyfile is set) and haimg connects without credentials".into(),
        ),
        SHUTDOWN_IN_PROGRESS => Some("mongod is shutting down".into()),
        NO_REPLICATION_ENABLED => Some("mongod runs without a replica-set name".into()),
        _ => None,
    }
}

pub const STATUS_COMMAND: &str = "replSetGetStatus";
pub const STEP_DOWN_COMMAND: &str = "replSetStepDown";

/// The `replSetGetStatus` request.
pub fn status_request() -> Document {
    doc! {"replSetGetStatus": 1}
}

/// Connect to `addr` and ask the member for its status.
pub fn status(addr: SocketAddr, timeout: Duration) -> Result<Status, MemberError> {
    let mut conn = Conn::connect(addr, timeout)?;
    status_with(&mut conn)
}

/// Ask the member on `conn` for its status.
pub fn status_with(conn: &mut Conn) -> Result<Status, MemberError> {
    let reply = conn.command(&status_request())?;
    parse_status(conn.addr(), &reply)
}

/// A `replSetGetStatus` reply as a [`Status`].
pub fn parse_status(addr: SocketAddr, reply: &Document) -> Result<Status, MemberError> {
    if !wire::ok(reply) {
        let (code, name, msg) = wire::error_of(reply);
        return match code {
            NOT_YET_INITIALIZED => Ok(Status {
                state: MemberState::Startup,
                set: None,
                lag_s: None,
                primary: None,
                note: Some(format!(
                    "no replica-set config yet ({code} {name}: {msg}): the set is not initiated, or this member was not added to it"
                )),
            }),
            // A member that is not in its own config answers with its state (REMOVED) and this code.
            INVALID_REPLICA_SET_CONFIG if int(reply, "state").is_some() => Ok(Status {
                state: MemberState::from_code(int(reply, "state").unwrap_or(10) as i32),
                set: None,
                lag_s: None,
                primary: None,
                note: Some(format!("not in its replica-set config ({code} {name}: {msg})")),
            }),
            _ => Err(refused(addr, STATUS_COMMAND, reply, common_hint(code))),
        };
    }
    let unexpected = |detail: &str| MemberError::Unexpected {
        addr,
        command: STATUS_COMMAND,
        detail: detail.to_string(),
    };
    let state = int(reply, "myState")
        .map(|s| MemberState::from_code(s as i32))
        .ok_or_else(|| unexpected("no myState"))?;
    let set = reply.get_str("set").ok().map(str::to_string);
    let members: Vec<&Document> = reply
        .get_array("members")
        .map(|a| a.iter().filter_map(Bson::as_document).collect())
        .unwrap_or_default();
    let me = members.iter().find(|m| m.get_bool("self").unwrap_or(false));
    let primary = members.iter().find(|m| {
        m.get_str("stateStr").ok() == Some("PRIMARY")
            || (m.get("stateStr").is_none() && int(m, "state") == Some(1))
    });
    let primary_name = primary
        .and_then(|p| p.get_str("name").ok())
        .map(str::to_string);
    let (lag_s, note) = if state == MemberState::Primary {
        (Some(0.0), None)
    } else {
        match (me, primary) {
            (None, _) => (
                None,
                Some("no member with self: true in members".to_string()),
            ),
            (_, None) => (None, Some("no member is PRIMARY in its view".to_string())),
            (Some(me), Some(p)) => match (optime_secs(me), optime_secs(p)) {
                (Some(mine), Some(theirs)) => (Some((theirs - mine).max(0.0)), None),
                _ => (
                    None,
                    Some("no optimeDate or optime for itself or the primary".to_string()),
                ),
            },
        }
    };
    Ok(Status {
        state,
        set,
        lag_s,
        primary: primary_name,
        note,
    })
}

/// Seconds since the epoch of a member's last applied op: `optimeDate`,
/// else `optime.ts`, else a bare `optime` timestamp (protocol version 0).
fn optime_secs(m: &Document) -> Option<f64> {
    if let Ok(d) = m.get_datetime("optimeDate") {
        return Some(d.timestamp_millis() as f64 / 1000.0);
    }
    match m.get("optime") {
        Some(Bson::Document(o)) => o.get_timestamp("ts").ok().map(|t| f64::from(t.time)),
        Some(Bson::Timestamp(t)) => Some(f64::from(t.time)),
        _ => None,
    }
}

/// A number of any BSON numeric type (servers send int32, int64 or double).
fn int(d: &Document, key: &str) -> Option<i64> {
    match d.get(key)? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

/// How a step-down request ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SteppedDown {
    /// `ok: 1` (MongoDB 4.2 and later).
    Acknowledged,
    /// The server closed the connection after the request: what servers
    /// before 4.2 did on a successful step-down (they closed every
    /// connection). Maybe stepped down; the caller must check who is primary.
    ConnectionClosed,
    /// The request ended with a replica-set state change error (189
    /// PrimarySteppedDown, 11602 InterruptedDueToReplStateChange): the member
    /// changed state while handling it. Maybe stepped down; check.
    StateChanged { code: i32, code_name: String },
}

/// The `replSetStepDown` request: `secs` of step-down, and a catch-up period
/// of `min(10, secs - 1)` seconds (it must be shorter than the step-down).
/// Both as int32, as mongosh sends them.
pub fn step_down_request(secs: u32) -> Document {
    let catch_up = secs.saturating_sub(1).min(MAX_CATCH_UP_SECS);
    doc! {
        "replSetStepDown": i32::try_from(secs).unwrap_or(i32::MAX),
        "secondaryCatchUpPeriodSecs": catch_up as i32, // at most 10
    }
}

/// Connect to `addr` and ask the member to step down for `secs` seconds
/// (at least 1). `timeout` bounds the connect and, on top of the catch-up
/// period, the wait for the answer.
pub fn step_down(
    addr: SocketAddr,
    secs: u32,
    timeout: Duration,
) -> Result<SteppedDown, MemberError> {
    let mut conn = Conn::connect(addr, timeout)?;
    step_down_with(&mut conn, secs, timeout)
}

/// [`step_down`] on a connection the caller opened.
pub fn step_down_with(
    conn: &mut Conn,
    secs: u32,
    timeout: Duration,
) -> Result<SteppedDown, MemberError> {
    let addr = conn.addr();
    if secs == 0 {
        return Err(MemberError::BadArgument {
            addr,
            command: STEP_DOWN_COMMAND,
            detail: "a step-down period of 0 s (it must be at least 1 s)".into(),
        });
    }
    let req = step_down_request(secs);
    let catch_up = secs.saturating_sub(1).min(MAX_CATCH_UP_SECS);
    // The server answers after the catch-up wait at the latest.
    conn.set_read_timeout(timeout.saturating_add(Duration::from_secs(u64::from(catch_up))));
    let id = conn.send(&req)?;
    match conn.receive(id) {
        Ok(reply) => parse_step_down(addr, &reply, catch_up),
        Err(e) if e.closed_by_peer() => Ok(SteppedDown::ConnectionClosed),
        Err(e) => Err(e.into()),
    }
}

/// A `replSetStepDown` reply.
pub fn parse_step_down(
    addr: SocketAddr,
    reply: &Document,
    catch_up_secs: u32,
) -> Result<SteppedDown, MemberError> {
    if wire::ok(reply) {
        return Ok(SteppedDown::Acknowledged);
    }
    let (code, code_name, _) = wire::error_of(reply);
    let hint = match code {
        PRIMARY_STEPPED_DOWN | INTERRUPTED_DUE_TO_REPL_STATE_CHANGE => {
            return Ok(SteppedDown::StateChanged { code, code_name })
        }
        NOT_WRITABLE_PRIMARY => Some("this member is not primary".to_string()),
        EXCEEDED_TIME_LIMIT => Some(format!(
            "no electable secondary caught up within {catch_up_secs}s; the member stays primary"
        )),
        c => common_hint(c),
    };
    Err(refused(addr, STEP_DOWN_COMMAND, reply, hint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{DateTime, Timestamp};

    fn addr() -> SocketAddr {
        SocketAddr::from(([192, 168, 30, 104], 27017))
    }

    #[test]
    fn states_round_trip() {
        for code in [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 4, 42] {
            assert_eq!(MemberState::from_code(code).code(), code);
        }
        // hello's RSOther has no number; -1 is no state a server sends.
        assert_eq!(MemberState::RsOther.code(), -1);
        assert_eq!(MemberState::from_code(-1), MemberState::Other(-1));
        assert_eq!(MemberState::from_code(5).to_string(), "STARTUP2");
        assert_eq!(MemberState::from_code(4).to_string(), "STATE4");
    }

    #[test]
    fn step_down_requests_leave_room_for_the_catch_up() {
        assert_eq!(
            step_down_request(60),
            doc! {"replSetStepDown": 60, "secondaryCatchUpPeriodSecs": 10}
        );
        assert_eq!(
            step_down_request(5),
            doc! {"replSetStepDown": 5, "secondaryCatchUpPeriodSecs": 4}
        );
        assert_eq!(
            step_down_request(1),
            doc! {"replSetStepDown": 1, "secondaryCatchUpPeriodSecs": 0}
        );
    }

    #[test]
    fn lag_falls_back_to_optime_ts_and_never_goes_negative() {
        let m = |state: &str, secs: u32, me: bool| {
            let mut d = doc! {"stateStr": state, "optime": {"ts": Timestamp { time: secs, increment: 1 }, "t": 1i64}};
            if me {
                d.insert("self", true);
            }
            d
        };
        let reply = doc! {"set": "rs0", "myState": 2, "ok": 1.0,
        "members": [m("PRIMARY", 1000, false), m("SECONDARY", 993, true)]};
        assert_eq!(parse_status(addr(), &reply).unwrap().lag_s, Some(7.0));
        // Heartbeats are older than the member's own optime: ahead counts as 0.
        let reply = doc! {"set": "rs0", "myState": 2, "ok": 1.0,
        "members": [m("PRIMARY", 1000, false), m("SECONDARY", 1003, true)]};
        assert_eq!(parse_status(addr(), &reply).unwrap().lag_s, Some(0.0));
        // optimeDate wins over optime when both are there.
        let mut me = m("SECONDARY", 1000, true);
        me.insert("optimeDate", DateTime::from_millis(990_000));
        let reply = doc! {"set": "rs0", "myState": 2, "ok": 1.0,
        "members": [m("PRIMARY", 1000, false), me]};
        assert_eq!(parse_status(addr(), &reply).unwrap().lag_s, Some(10.0));
    }

    #[test]
    fn replies_without_what_status_needs() {
        let e = parse_status(addr(), &doc! {"ok": 1.0, "set": "rs0"}).unwrap_err();
        assert_eq!(
            e.to_string(),
            "192.168.30.104:27017: replSetGetStatus: unexpected reply: no myState"
        );
        let s = parse_status(addr(), &doc! {"ok": 1.0, "set": "rs0", "myState": 2}).unwrap();
        assert_eq!(s.lag_s, None);
        assert_eq!(
            s.note.as_deref(),
            Some("no member with self: true in members")
        );
        let e = parse_status(
            addr(),
            &doc! {"ok": 0.0, "errmsg": "command replSetGetStatus requires authentication", "code": 13, "codeName": "Unauthorized"},
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "192.168.30.104:27017: replSetGetStatus failed: 13 Unauthorized: command replSetGetStatus requires authentication (authorization is on (a keyfile is set) and haimg connects without credentials)");
    }

    #[test]
    fn a_removed_member_reports_its_state() {
        let reply = doc! {"state": 10, "stateStr": "REMOVED", "uptime": 40, "ok": 0.0,
        "errmsg": "Our replica set config is invalid or we are not a member of it",
        "code": 93, "codeName": "InvalidReplicaSetConfig"};
        let s = parse_status(addr(), &reply).unwrap();
        assert_eq!((s.state, s.set), (MemberState::Removed, None));
        assert_eq!(
            s.note.as_deref(),
            Some("not in its replica-set config (93 InvalidReplicaSetConfig: Our replica set config is invalid or we are not a member of it)")
        );
    }

    #[test]
    fn step_down_state_changes_are_not_errors() {
        let r = doc! {"ok": 0.0, "errmsg": "operation was interrupted", "code": 11602, "codeName": "InterruptedDueToReplStateChange"};
        assert_eq!(
            parse_step_down(addr(), &r, 10).unwrap(),
            SteppedDown::StateChanged {
                code: 11602,
                code_name: "InterruptedDueToReplStateChange".into()
            }
        );
        let r = doc! {"ok": 0.0, "errmsg": "stepdown period must be longer than secondaryCatchUpPeriodSecs", "code": 2, "codeName": "BadValue"};
        assert_eq!(
            parse_step_down(addr(), &r, 10).unwrap_err().to_string(),
            "192.168.30.104:27017: replSetStepDown failed: 2 BadValue: stepdown period must be longer than secondaryCatchUpPeriodSecs"
        );
    }
}
