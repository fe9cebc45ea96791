//! Health gates: is the member that was just started serving its role?
//!
//! [`HealthGate`] is the seam: the executor asks it before tagging a member
//! live, and asks it which mongo member is primary (to order the tier and to
//! step the primary down before its shutdown). [`NetGate`] is the real one:
//! HTTP and TCP from the deploy host to the member's address (the spec's
//! `network.admin` address may reach the health ports), optionally from inside
//! a network namespace and from a chosen source address (the local test bed).
//!
//! Per role:
//! * lb: `GET /haimg/lb-health` on the member answers 200 with its slot, and
//!   the same path through the VIP answers 200;
//! * webapp: `GET /api/health` on the member answers 200 with the wanted
//!   `version` (and `slot`, and `imageHash` when known);
//! * mongo: the member is PRIMARY or SECONDARY of the replica set and at most
//!   [`MONGO_MAX_LAG`] behind the primary, asked through [`MongoProbe`]
//!   ([`WireMongo`]: `replSetGetStatus`, `hello` and `replSetStepDown` over
//!   OP_MSG by `haimg_mongo`, from the same namespace and source address as
//!   the HTTP probes).
//!
//! **Mongo with authorization on** (a keyfile, `HAIMG_MONGO_KEY`): with the
//! cluster's secrets store ([`NetGate::wire_as`]) every connection first
//! authenticates as the monitor user (SCRAM-SHA-256; `clusterMonitor` plus
//! `replSetStateChange`), and `replSetGetStatus` and `replSetStepDown` work.
//! Without credentials they answer 13 Unauthorized. The status then comes from `hello`, which mongod answers
//! without authentication (see `haimg_mongo::hello` for the sources): the
//! member's own `hello` gives its state and set, and its `lastWrite` against
//! the `lastWrite` of the member it names `primary` (asked at that address
//! through `resolve`) gives the lag. `replSetGetStatus` stays the first
//! choice: it tells STARTUP2 from RECOVERING, which `hello` cannot. A
//! step-down refused for lack of credentials is
//! [`GateError::MongoNoCredentials`]: the executor then relies on mongod's
//! own step-down at SIGTERM: a primary that gets SIGTERM steps down before
//! it shuts down, waiting for an electable secondary to catch up (the 4.2
//! sources: 10 s, parameter `waitForStepDownOnNonCommandShutdown`; 4.4: 15 s;
//! 5.0 and later: `shutdownTimeoutMillisForSignaledShutdown`, 15000 ms by
//! default, shared with the quiesce period that follows; it shuts down even
//! when the step-down fails; `shutdownTask` in `src/mongo/db/mongod_main.cpp`,
//! `stepDownForShutdown` in `src/mongo/db/commands/shutdown.cpp`, the
//! manual's `shutdown` and `db.shutdownServer()` pages) and waits with [`HealthGate::mongo_wait_primary`] for another
//! member to answer PRIMARY after the shutdown. haimg-init stops mongod with
//! SIGTERM and a 15 s grace before SIGKILL (`init/src/services.rs`).
//!
//! A gate passes after [`PASSES_NEEDED`] good answers in a row, so a member
//! that comes up and falls over again does not pass. Every wait is bounded
//! by the spec's `rollout.health_timeout_s`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use haimg_model::{Cluster, Member, Role};
use haimg_mongo::hello::{self, Hello, PrimaryHello};
use haimg_mongo::member::{self, MemberError, MemberState, UNAUTHORIZED};
use haimg_mongo::scram;
use haimg_mongo::wire::Conn;
use serde::Serialize;

use crate::probe::{http, Origin};

/// What the member must show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expect {
    pub slot: String,
    pub role: Role,
    pub vmid: u32,
    /// The member's address.
    pub ip: std::net::Ipv4Addr,
    pub version: String,
    /// First 12 hex digits of the template's sha256.
    pub template: String,
    /// The image's input hash as `/api/health` reports it, when known.
    pub image_hash: Option<String>,
}

/// A gate that passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Passed {
    pub waited_s: f64,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("{slot} (CT {vmid}) did not pass its {role} health gate within {}s: {last}", .waited.as_secs())]
    Unhealthy {
        slot: String,
        vmid: u32,
        role: Role,
        waited: Duration,
        /// The last thing seen.
        last: String,
    },
    #[error("mongo: {0}")]
    Mongo(String),
    /// `replSetStepDown` answered 13 Unauthorized: authorization is on and
    /// haimg has no credentials.
    #[error("mongo: {slot} cannot be asked to step down: {detail}")]
    MongoNoCredentials { slot: String, detail: String },
}

/// How many checks in a row must see two lbs report MASTER before an lb's
/// gate fails at once (a split brain, not a slow start).
pub const SPLIT_BRAIN_SIGHTINGS: u32 = 3;

/// The seam between the rollout and the running cluster.
pub trait HealthGate: Sync {
    /// Wait up to `timeout` until the member serves its role.
    fn wait_healthy(
        &self,
        cluster: &Cluster,
        e: &Expect,
        timeout: Duration,
    ) -> Result<Passed, GateError>;

    /// The slot of the mongo member that says it is primary, if any.
    fn mongo_primary(&self, cluster: &Cluster) -> Result<Option<String>, GateError>;

    /// Ask `member` to step down, then wait up to `timeout` until another member is primary.
    fn mongo_step_down(
        &self,
        cluster: &Cluster,
        member: &Member,
        timeout: Duration,
    ) -> Result<(), GateError>;

    /// Wait up to `timeout` until a member other than `not` says it is
    /// primary; its slot. This default asks [`HealthGate::mongo_primary`]
    /// every 250 ms.
    fn mongo_wait_primary(
        &self,
        cluster: &Cluster,
        not: &Member,
        timeout: Duration,
    ) -> Result<String, GateError> {
        wait_other_primary(self, cluster, not, timeout, Duration::from_millis(250))
    }
}

/// Poll `gate.mongo_primary` every `every` until it names a slot other than `not`'s.
fn wait_other_primary<G: HealthGate + ?Sized>(
    gate: &G,
    cluster: &Cluster,
    not: &Member,
    timeout: Duration,
    every: Duration,
) -> Result<String, GateError> {
    let t0 = Instant::now();
    loop {
        let last = match gate.mongo_primary(cluster) {
            Ok(Some(p)) if p != not.slot => return Ok(p),
            Ok(Some(p)) => format!("{p} still answers PRIMARY"),
            Ok(None) => String::from("no member is PRIMARY"),
            Err(e) => e.to_string(),
        };
        if t0.elapsed() >= timeout {
            return Err(GateError::Mongo(format!(
                "no member other than {} became primary within {}s: {last}",
                not.slot,
                timeout.as_secs()
            )));
        }
        std::thread::sleep(every.min(timeout.saturating_sub(t0.elapsed()))); // poll interval
    }
}

/// A mongo member as its `replSetGetStatus` (or, without credentials, its
/// `hello`) describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MongoStatus {
    /// `PRIMARY`, `SECONDARY`, `STARTUP2`, `RECOVERING`, ... (`RSOther` from `hello`)
    pub state: String,
    pub set_name: Option<String>,
    /// How far its last applied op is behind the primary's.
    pub lag_s: Option<f64>,
    /// Why state or lag are what they are, when that is not obvious
    /// (no config yet, no primary in its view).
    pub note: Option<String>,
    /// Derived from `hello` because `replSetGetStatus` needs credentials.
    pub by_hello: bool,
}

impl MongoStatus {
    fn from_member(s: member::Status, by_hello: bool) -> MongoStatus {
        MongoStatus {
            state: s.state.name(),
            set_name: s.set,
            lag_s: s.lag_s,
            note: s.note,
            by_hello,
        }
    }
}

/// Why a mongo probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The member answered 13 Unauthorized: authorization is on and the
    /// probe has no credentials.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Failed(String),
}

/// The MongoDB commands a rollout needs.
pub trait MongoProbe: Send + Sync {
    /// `replSetGetStatus`.
    fn status(&self, addr: SocketAddr, timeout: Duration) -> Result<MongoStatus, ProbeError>;
    /// `hello` (needs no credentials).
    fn hello(&self, addr: SocketAddr, timeout: Duration) -> Result<Hello, ProbeError>;
    /// `replSetStepDown` with `secs` of stepdown time. `Ok` means the member
    /// acknowledged it or may have stepped down (an old server closes the
    /// connection): the caller checks who is primary afterwards.
    fn step_down(&self, addr: SocketAddr, secs: u32, timeout: Duration) -> Result<(), ProbeError>;
}

/// [`MongoProbe`] over the wire (`haimg_mongo::member`): each call opens one
/// connection from its [`Origin`] (a namespace and source address, or here).
#[derive(Debug, Clone, Default)]
pub struct WireMongo {
    pub origin: Origin,
    /// The monitor user (`clusterMonitor` + step-down) every connection
    /// authenticates as first; `None`: unauthenticated (then `hello` only
    /// when authorization is on).
    pub credentials: Option<Credentials>,
}

/// A MongoDB user and password (`Debug` hides the password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    /// A fixed SCRAM nonce (tests replaying RFC 7677's conversation); `None`: from the OS.
    pub nonce: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.user)
    }
}

impl WireMongo {
    pub fn new(origin: Origin) -> WireMongo {
        WireMongo {
            origin,
            credentials: None,
        }
    }

    /// Connect to `addr` as configured and run `f` on the connection.
    fn run<T: Send>(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        f: impl FnOnce(&mut Conn) -> Result<T, MemberError> + Send,
    ) -> Result<T, ProbeError> {
        let stream = self
            .origin
            .connect(addr, timeout)
            .map_err(|e| ProbeError::Failed(format!("{addr}: {e}")))?;
        let mut conn = Conn::from_stream(addr, stream, timeout)
            .map_err(|e| ProbeError::Failed(e.to_string()))?;
        if let Some(c) = &self.credentials {
            let nonce = match &c.nonce {
                Some(n) => n.clone(),
                None => scram::os_nonce()
                    .map_err(|e| ProbeError::Failed(format!("/dev/urandom: {e}")))?,
            };
            scram::authenticate_with_nonce(&mut conn, &c.user, &c.password, &nonce)
                .map_err(|e| ProbeError::Failed(format!("{addr}: {e}")))?;
        }
        f(&mut conn).map_err(|e| match e.code() {
            Some(UNAUTHORIZED) => ProbeError::Unauthorized(e.to_string()),
            _ => ProbeError::Failed(e.to_string()),
        })
    }
}

impl MongoProbe for WireMongo {
    fn status(&self, addr: SocketAddr, timeout: Duration) -> Result<MongoStatus, ProbeError> {
        let s = self.run(addr, timeout, member::status_with)?;
        Ok(MongoStatus::from_member(s, false))
    }

    fn hello(&self, addr: SocketAddr, timeout: Duration) -> Result<Hello, ProbeError> {
        self.run(addr, timeout, hello::hello_with)
    }

    fn step_down(&self, addr: SocketAddr, secs: u32, timeout: Duration) -> Result<(), ProbeError> {
        self.run(addr, timeout, |c| member::step_down_with(c, secs, timeout))
            .map(|_| ())
    }
}

pub const PASSES_NEEDED: u32 = 2;
/// "Caught up": a mongo member at most this far behind the primary.
pub const MONGO_MAX_LAG: Duration = Duration::from_secs(2);

/// HTTP and TCP from the deploy host.
pub struct NetGate {
    /// Where every probe comes from (a local cluster: its client namespace
    /// and the admin address there).
    pub origin: Origin,
    pub mongo: Box<dyn MongoProbe>,
    /// Between two probes.
    pub every: Duration,
    /// One probe's connect + read timeout.
    pub probe_timeout: Duration,
    /// Where to really connect for a member address (tests point members at loopback).
    pub resolve: Box<dyn Fn(SocketAddr) -> SocketAddr + Send + Sync>,
}

impl std::fmt::Debug for NetGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetGate")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl NetGate {
    pub fn new(origin: Origin, mongo: Box<dyn MongoProbe>) -> NetGate {
        NetGate {
            origin,
            mongo,
            every: Duration::from_millis(250),
            probe_timeout: Duration::from_secs(2),
            resolve: Box::new(|a| a),
        }
    }

    /// Probes over the wire, every one (HTTP and mongo) from `origin`.
    pub fn wire(origin: Origin) -> NetGate {
        NetGate::wire_as(origin, None)
    }

    /// [`NetGate::wire`], the mongo probes authenticated as `monitor` (user, password).
    pub fn wire_as(origin: Origin, monitor: Option<(String, String)>) -> NetGate {
        let mut mongo = WireMongo::new(origin.clone());
        mongo.credentials = monitor.map(|(user, password)| Credentials {
            user,
            password,
            nonce: None,
        });
        NetGate::new(origin, Box::new(mongo))
    }

    /// One HTTP GET.
    fn get(&self, addr: SocketAddr, path: &str) -> std::io::Result<http::Response> {
        self.origin
            .get((self.resolve)(addr), path, self.probe_timeout)
    }

    /// One look at the member: `Ok(detail)` when healthy, `Err(what was seen)`.
    fn check_once(&self, cluster: &Cluster, e: &Expect) -> Result<String, String> {
        let port = e.role.port(cluster);
        let path = e.role.health_path().unwrap_or("/");
        match e.role {
            Role::Lb => {
                let own = self
                    .get(SocketAddr::new(e.ip.into(), port), path)
                    .map_err(|x| format!("{}:{port}{path}: {x}", e.ip))?;
                if own.status != 200 || own.body.trim() != e.slot {
                    return Err(format!(
                        "{}:{port}{path} answered {} {:?}, expected 200 {:?}",
                        e.ip,
                        own.status,
                        own.body.trim(),
                        e.slot
                    ));
                }
                let vip = cluster.network.vip;
                let via = self
                    .get(SocketAddr::new(vip.into(), port), path)
                    .map_err(|x| format!("VIP {vip}:{port}{path}: {x}"))?;
                if via.status != 200 {
                    return Err(format!("VIP {vip}:{port} answered {}", via.status));
                }
                // The preferred master takes the VIP back (preemption) a few
                // seconds after its keepalived starts. Wait for that here, so
                // the move happens inside the slot's swap, not after the
                // rollout has reported the cluster at rest.
                let holder = via.body.trim();
                let master = e.slot == cluster.lb.keepalived.master;
                if master && holder != e.slot {
                    return Err(format!(
                        "VIP {vip} is still served by {holder}, not yet taken back by the master {}",
                        e.slot
                    ));
                }
                // keepalived's own state: a backup whose keepalived does not
                // run (or runs without hearing the master) fails here, not at
                // the next failover.
                let url = haimg_model::image::VRRP_STATE_URL;
                let st = self
                    .get(SocketAddr::new(e.ip.into(), port), url)
                    .map_err(|x| format!("{}:{port}{url}: {x}", e.ip))?;
                let vrrp = Self::check_vrrp_state(st.status, &st.body, &e.slot, master)?;
                // The master holds the VIP alone: another lb that also says
                // MASTER does not hear its adverts (a split network, or a
                // VRRPv2 and a VRRPv3 profile side by side in a rollout).
                if master && vrrp.is_some() {
                    if let Some(other) = self.other_master(cluster, &e.slot, port) {
                        return Err(format!(
                            "{other} reports MASTER too: two lbs claim the VIP {vip}"
                        ));
                    }
                }
                Ok(format!(
                    "answers on {}:{port}; VIP {vip} served by {}{}",
                    e.ip,
                    via.body.trim(),
                    vrrp.map(|v| format!("; keepalived {v}"))
                        .unwrap_or_default()
                ))
            }
            Role::Webapp => {
                let r = self
                    .get(SocketAddr::new(e.ip.into(), port), path)
                    .map_err(|x| format!("{}:{port}{path}: {x}", e.ip))?;
                if r.status != 200 {
                    return Err(format!("{}:{port}{path} answered {}", e.ip, r.status));
                }
                check_webapp_health(&r.body, e)
            }
            Role::Mongo => {
                let st = self.mongo_status(SocketAddr::new(e.ip.into(), port))?;
                check_mongo(&st, &cluster.mongo.replica_set)
            }
        }
    }

    /// Another lb that reports MASTER while `e` does too: two masters at
    /// once, seen from here.
    fn second_master(&self, cluster: &Cluster, e: &Expect) -> Option<String> {
        let port = e.role.port(cluster);
        let own = self
            .get(
                SocketAddr::new(e.ip.into(), port),
                haimg_model::image::VRRP_STATE_URL,
            )
            .ok()?;
        if own.status != 200 || own.body.trim() != "MASTER" {
            return None;
        }
        self.other_master(cluster, &e.slot, port)
    }

    /// The first lb other than `slot` whose keepalived reports MASTER; one
    /// that does not answer (stopped, an old image) counts as none.
    fn other_master(&self, cluster: &Cluster, slot: &str, port: u16) -> Option<String> {
        let url = haimg_model::image::VRRP_STATE_URL;
        cluster
            .lb
            .members
            .iter()
            .filter(|m| m.slot != slot)
            .find(|m| {
                self.get(SocketAddr::new(m.ip.into(), port), url)
                    .is_ok_and(|r| r.status == 200 && r.body.trim() == "MASTER")
            })
            .map(|m| m.slot.clone())
    }

    /// keepalived's state as an lb member's nginx serves it: `Ok(Some(state))`
    /// when it is what the slot should be (MASTER for the preferred master once
    /// it holds the VIP, BACKUP for the others); `Ok(None)` for an image from
    /// before the state was served (404: the request went to the web app; a
    /// newer image never answers 404 there); `Err` for another state, none
    /// reported yet (503), or any other answer (403: nginx cannot read it).
    pub fn check_vrrp_state(
        status: u16,
        body: &str,
        slot: &str,
        master: bool,
    ) -> Result<Option<String>, String> {
        let want = if master { "MASTER" } else { "BACKUP" };
        match status {
            200 if body.trim() == want => Ok(Some(want.to_string())),
            200 => Err(format!(
                "keepalived on {slot} is {:?}, expected {want}",
                body.trim()
            )),
            503 => Err(format!("keepalived on {slot} has reported no state yet")),
            404 => Ok(None),
            other => Err(format!(
                "keepalived's state on {slot} cannot be read: {url} answered {other}",
                url = haimg_model::image::VRRP_STATE_URL
            )),
        }
    }

    /// The status of the member at (plan address) `addr`: `replSetGetStatus`,
    /// or on 13 Unauthorized its `hello` and the `hello` of the primary it names.
    pub fn mongo_status(&self, addr: SocketAddr) -> Result<MongoStatus, String> {
        match self.mongo.status((self.resolve)(addr), self.probe_timeout) {
            Err(ProbeError::Unauthorized(_)) => {}
            other => return other.map_err(|e| e.to_string()),
        }
        let own = self
            .mongo
            .hello((self.resolve)(addr), self.probe_timeout)
            .map_err(|e| e.to_string())?;
        let primary = match (own.state(), own.primary.as_deref()) {
            (MemberState::Primary, _) | (_, None) => PrimaryHello::NoneInView,
            (_, Some(p)) => match p.parse::<SocketAddr>() {
                Err(_) => PrimaryHello::Unasked(format!("{p:?} is not an ip:port")),
                Ok(pa) => match self.mongo.hello((self.resolve)(pa), self.probe_timeout) {
                    Ok(h) => PrimaryHello::Answered(h),
                    Err(e) => PrimaryHello::Unasked(e.to_string()),
                },
            },
        };
        Ok(MongoStatus::from_member(
            hello::status_from_hello(&own, &primary),
            true,
        ))
    }

    /// State and set of the member at (plan address) `addr`, without its lag:
    /// `replSetGetStatus`, or `hello` when that needs credentials.
    fn mongo_state(&self, addr: SocketAddr) -> Result<(String, Option<String>), String> {
        let at = (self.resolve)(addr);
        match self.mongo.status(at, self.probe_timeout) {
            Ok(st) => Ok((st.state, st.set_name)),
            Err(ProbeError::Unauthorized(_)) => self
                .mongo
                .hello(at, self.probe_timeout)
                .map(|h| (h.state().name(), h.set))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// `/api/health` shows the wanted version (and slot, and image hash when known).
pub fn check_webapp_health(body: &str, e: &Expect) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|x| format!("/api/health is not JSON ({x}): {body:.120}"))?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let version = field("version");
    if version.as_deref() != Some(e.version.as_str()) {
        return Err(format!(
            "/api/health reports version {}, expected {}",
            version.as_deref().unwrap_or("(none)"),
            e.version
        ));
    }
    if let Some(slot) = field("slot") {
        if slot != e.slot {
            return Err(format!("/api/health is slot {slot}, expected {}", e.slot));
        }
    }
    if let Some(want) = &e.image_hash {
        let got = field("imageHash").unwrap_or_default();
        if got.is_empty() || (!got.starts_with(want.as_str()) && !want.starts_with(got.as_str())) {
            return Err(format!(
                "/api/health reports image {got:?}, expected {want}"
            ));
        }
    }
    Ok(format!("/api/health: version {}", e.version))
}

/// PRIMARY or SECONDARY of the set, and caught up.
pub fn check_mongo(st: &MongoStatus, set: &str) -> Result<String, String> {
    let note = st
        .note
        .as_deref()
        .map(|n| format!(": {n}"))
        .unwrap_or_default();
    let Some(name) = st.set_name.as_deref() else {
        return Err(format!("{}, in no replica set{note}", st.state));
    };
    if name != set {
        return Err(format!("member of replica set {name:?}, expected {set:?}"));
    }
    if st.state != "PRIMARY" && st.state != "SECONDARY" {
        return Err(format!("state {}{note}", st.state));
    }
    let by = if st.by_hello {
        " (by hello: replSetGetStatus needs credentials)"
    } else {
        ""
    };
    match st.lag_s {
        Some(l) if l <= MONGO_MAX_LAG.as_secs_f64() => {
            Ok(format!("{} of {set}, {l:.1}s behind{by}", st.state))
        }
        Some(l) => Err(format!("{} but {l:.1}s behind the primary", st.state)),
        None => Err(format!("{}, lag unknown{note}", st.state)),
    }
}

impl HealthGate for NetGate {
    fn wait_healthy(
        &self,
        cluster: &Cluster,
        e: &Expect,
        timeout: Duration,
    ) -> Result<Passed, GateError> {
        let t0 = Instant::now();
        let mut good = 0;
        let mut split = 0;
        let mut last = String::from("no answer yet");
        loop {
            match self.check_once(cluster, e) {
                Ok(detail) => {
                    good += 1;
                    if good >= PASSES_NEEDED {
                        return Ok(Passed {
                            waited_s: t0.elapsed().as_secs_f64(),
                            detail,
                        });
                    }
                }
                Err(seen) => {
                    good = 0;
                    last = seen;
                    // Two masters is no state to wait out: every second of
                    // it the VIP may answer from either. Seen a few times in
                    // a row (a take-back overlaps for milliseconds), the
                    // gate fails now, not at its timeout.
                    let other = match e.role {
                        Role::Lb => self.second_master(cluster, e),
                        _ => None,
                    };
                    split = if other.is_some() { split + 1 } else { 0 };
                    if let Some(other) = other.filter(|_| split >= SPLIT_BRAIN_SIGHTINGS) {
                        return Err(GateError::Unhealthy {
                            slot: e.slot.clone(),
                            vmid: e.vmid,
                            role: e.role,
                            waited: t0.elapsed(),
                            last: format!(
                                "{last}; {} and {other} both report MASTER: lbs that do not hear each other's adverts, e.g. a VRRPv2 and a VRRPv3 profile side by side (roles.lb.keepalived's advert interval changed between whole seconds and not, which a rolling rollout cannot do; see README \"Fast failover\")",
                                e.slot
                            ),
                        });
                    }
                }
            }
            if t0.elapsed() >= timeout {
                return Err(GateError::Unhealthy {
                    slot: e.slot.clone(),
                    vmid: e.vmid,
                    role: e.role,
                    waited: t0.elapsed(),
                    last,
                });
            }
            std::thread::sleep(self.every.min(timeout.saturating_sub(t0.elapsed())));
            // poll interval
        }
    }

    fn mongo_primary(&self, cluster: &Cluster) -> Result<Option<String>, GateError> {
        let mut errors = Vec::new();
        for m in &cluster.mongo.members {
            match self.mongo_state(SocketAddr::new(m.ip.into(), cluster.mongo.port)) {
                // A primary of another set (a stray mongod at a member's address) is not ours.
                Ok((state, set))
                    if state == "PRIMARY"
                        && set.as_deref() == Some(cluster.mongo.replica_set.as_str()) =>
                {
                    return Ok(Some(m.slot.clone()))
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("{}: {e}", m.slot)),
            }
        }
        if errors.len() == cluster.mongo.members.len() {
            let mut texts: Vec<&str> = errors
                .iter()
                .map(|e| e.split_once(": ").map_or(e.as_str(), |(_, t)| t))
                .collect();
            texts.dedup();
            return Err(GateError::Mongo(if texts.len() == 1 {
                format!("no member answers: {}", texts[0])
            } else {
                errors.join("; ")
            }));
        }
        Ok(None)
    }

    fn mongo_step_down(
        &self,
        cluster: &Cluster,
        member: &Member,
        timeout: Duration,
    ) -> Result<(), GateError> {
        let addr = (self.resolve)(SocketAddr::new(member.ip.into(), cluster.mongo.port));
        let secs = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX).max(10);
        self.mongo
            .step_down(addr, secs, self.probe_timeout)
            .map_err(|e| match e {
                ProbeError::Unauthorized(detail) => GateError::MongoNoCredentials {
                    slot: member.slot.clone(),
                    detail,
                },
                ProbeError::Failed(e) => {
                    GateError::Mongo(format!("replSetStepDown on {}: {e}", member.slot))
                }
            })?;
        self.mongo_wait_primary(cluster, member, timeout)
            .map(|_| ())
            .map_err(|e| match e {
                GateError::Mongo(m) => {
                    GateError::Mongo(format!("after {} stepped down: {m}", member.slot))
                }
                other => other,
            })
    }

    fn mongo_wait_primary(
        &self,
        cluster: &Cluster,
        not: &Member,
        timeout: Duration,
    ) -> Result<String, GateError> {
        wait_other_primary(self, cluster, not, timeout, self.every)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn expect(role: Role, slot: &str) -> Expect {
        Expect {
            slot: slot.into(),
            role,
            vmid: 1106,
            ip: "192.168.30.106".parse().unwrap(),
            version: "1.1.0".into(),
            template: "bbbbbbbbbbbb".into(),
            image_hash: None,
        }
    }

    fn cluster() -> Cluster {
        haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster
    }

    /// A loopback server answering with `f(n)` for the n-th request.
    /// A server answering the `n`th request (from 0) with `f(n)`.
    fn serve(f: impl Fn(usize) -> String + Send + 'static) -> (SocketAddr, Arc<AtomicUsize>) {
        let seen = Arc::new(AtomicUsize::new(0));
        let n = seen.clone();
        serve_paths(move |_, _| f(n.fetch_add(1, Ordering::SeqCst)))
    }

    /// A server answering by request path (`/haimg/lb-health`, the VIP's
    /// too, and `/haimg/vrrp-state`); `f(path, n)` with n counting per path.
    fn serve_paths(
        f: impl Fn(&str, usize) -> String + Send + 'static,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        std::thread::spawn(move || {
            let mut per: std::collections::HashMap<String, usize> = Default::default();
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let mut buf = [0u8; 2048];
                let len = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..len]).into_owned();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let k = per.entry(path.clone()).or_default();
                let i = *k;
                *k += 1;
                n2.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(f(&path, i).as_bytes());
            }
        });
        (addr, n)
    }

    fn http(status: u16, body: &str) -> String {
        format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn gate_to(addr: SocketAddr) -> NetGate {
        gate_with_lbs(addr, &[])
    }

    /// Every member and the VIP are the loopback server `addr`, except the
    /// spec's lb addresses (which an lb's gate asks for their keepalived
    /// state): those in `lbs` are their server, the others answer nothing.
    fn gate_with_lbs(addr: SocketAddr, lbs: &[(&'static str, SocketAddr)]) -> NetGate {
        let mut g = NetGate::wire(Origin::here());
        g.every = Duration::from_millis(5);
        g.probe_timeout = Duration::from_millis(500);
        let dead = dead_port();
        let lbs = lbs.to_vec();
        g.resolve = Box::new(move |a| {
            let ip = a.ip().to_string();
            match lbs.iter().find(|(l, _)| *l == ip) {
                Some((_, to)) => *to,
                None if ["192.168.30.100", "192.168.30.101", "192.168.30.102"]
                    .contains(&ip.as_str()) =>
                {
                    dead
                }
                None => addr,
            }
        });
        g
    }

    /// A loopback address nothing listens on.
    fn dead_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    /// The master's green holds the VIP and says MASTER; when another lb
    /// says MASTER too (it does not hear the master: e.g. VRRPv2 lbs
    /// beside a VRRPv3 green), the gate fails and names it; when the
    /// others say BACKUP, it passes.
    #[test]
    fn a_second_master_fails_the_masters_gate() {
        let (green, _) = serve_paths(|path, _| match path {
            "/haimg/vrrp-state" => http(200, "MASTER\n"),
            _ => http(200, "nginx1\n"),
        });
        for (other_state, pass) in [("MASTER", false), ("BACKUP", true)] {
            let (other, _) = serve_paths(move |_, _| http(200, &format!("{other_state}\n")));
            let g = gate_with_lbs(green, &[("192.168.30.101", other)]);
            let r = g.wait_healthy(
                &cluster(),
                &expect(Role::Lb, "nginx1"),
                Duration::from_millis(if pass { 5000 } else { 50 }),
            );
            if pass {
                assert!(r.unwrap().detail.ends_with("keepalived MASTER"));
            } else {
                let e = r.unwrap_err().to_string();
                assert!(
                    e.contains("nginx2 reports MASTER too: two lbs claim the VIP 192.168.30.200;"),
                    "{e}"
                );
            }
        }
    }

    /// A green backup that made itself master while the master runs (a
    /// VRRPv3 green among VRRPv2 lbs, as a rolling change of the profile
    /// makes): the gate fails after a few checks, not at its timeout, and
    /// says what to do.
    #[test]
    fn a_split_brain_fails_a_backups_gate_at_once() {
        let (green, _) = serve_paths(|path, _| match path {
            "/haimg/vrrp-state" => http(200, "MASTER\n"),
            _ => http(200, "nginx3\n"),
        });
        let (master, _) = serve_paths(|_, _| http(200, "MASTER\n"));
        let g = gate_with_lbs(green, &[("192.168.30.100", master)]);
        let t0 = Instant::now();
        let e = g
            .wait_healthy(
                &cluster(),
                &expect(Role::Lb, "nginx3"),
                Duration::from_secs(60),
            )
            .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        insta::assert_snapshot!(e.to_string(), @r#"nginx3 (CT 1106) did not pass its lb health gate within 0s: keepalived on nginx3 is "MASTER", expected BACKUP; nginx3 and nginx1 both report MASTER: lbs that do not hear each other's adverts, e.g. a VRRPv2 and a VRRPv3 profile side by side (roles.lb.keepalived's advert interval changed between whole seconds and not, which a rolling rollout cannot do; see README "Fast failover")"#);
    }

    #[test]
    fn webapp_passes_once_the_new_version_answers_twice() {
        let (addr, n) = serve(|i| match i {
            0 => http(502, "starting"),
            1 => http(200, r#"{"ok":true,"slot":"webapp1","version":"1.0.0"}"#),
            _ => http(
                200,
                r#"{"ok":true,"slot":"webapp1","version":"1.1.0","imageHash":"abc"}"#,
            ),
        });
        let g = gate_to(addr);
        let p = g
            .wait_healthy(
                &cluster(),
                &expect(Role::Webapp, "webapp1"),
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(p.detail, "/api/health: version 1.1.0");
        assert_eq!(n.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn webapp_gate_times_out_with_what_it_saw() {
        let (addr, _) = serve(|_| http(200, r#"{"ok":true,"slot":"webapp1","version":"1.0.0"}"#));
        let g = gate_to(addr);
        let e = g
            .wait_healthy(
                &cluster(),
                &expect(Role::Webapp, "webapp1"),
                Duration::from_millis(100),
            )
            .unwrap_err();
        insta::assert_snapshot!(e.to_string(), @"webapp1 (CT 1106) did not pass its webapp health gate within 0s: /api/health reports version 1.0.0, expected 1.1.0");
    }

    #[test]
    fn refused_connections_fail_the_gate() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let g = gate_to(addr);
        let e = g
            .wait_healthy(
                &cluster(),
                &expect(Role::Lb, "nginx2"),
                Duration::from_millis(50),
            )
            .unwrap_err();
        let GateError::Unhealthy { last, .. } = e else {
            panic!()
        };
        assert!(
            last.starts_with("192.168.30.106:80/haimg/lb-health: "),
            "{last}"
        );
        assert!(last.contains("refused"), "{last}");
    }

    #[test]
    fn lb_needs_its_own_slot_the_vip_and_keepalived_backup() {
        let (addr, _) = serve_paths(|path, _| match path {
            "/haimg/vrrp-state" => http(200, "BACKUP\n"),
            _ => http(200, "nginx2\n"),
        });
        let g = gate_to(addr);
        let p = g
            .wait_healthy(
                &cluster(),
                &expect(Role::Lb, "nginx2"),
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(
            p.detail,
            "answers on 192.168.30.106:80; VIP 192.168.30.200 served by nginx2; keepalived BACKUP"
        );
        let e = g
            .wait_healthy(
                &cluster(),
                &expect(Role::Lb, "nginx3"),
                Duration::from_millis(30),
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .ends_with(r#"answered 200 "nginx2", expected 200 "nginx3""#),
            "{e}"
        );
    }

    /// A green backup whose keepalived never runs (no state: 503) or has
    /// made itself master (it does not hear the master's adverts) fails its
    /// gate now, not at the next failover.
    #[test]
    fn a_backup_whose_keepalived_is_broken_fails_the_gate() {
        for (status, body, why) in [
            (503, "", "keepalived on nginx2 has reported no state yet"),
            (
                403,
                "<html>403 Forbidden</html>",
                "keepalived's state on nginx2 cannot be read: /haimg/vrrp-state answered 403",
            ),
            (
                200,
                "MASTER",
                r#"keepalived on nginx2 is "MASTER", expected BACKUP"#,
            ),
            (
                200,
                "FAULT",
                r#"keepalived on nginx2 is "FAULT", expected BACKUP"#,
            ),
        ] {
            let (addr, _) = serve_paths(move |path, _| match path {
                "/haimg/vrrp-state" => http(status, body),
                _ => http(200, "nginx2\n"),
            });
            let e = gate_to(addr)
                .wait_healthy(
                    &cluster(),
                    &expect(Role::Lb, "nginx2"),
                    Duration::from_millis(50),
                )
                .unwrap_err();
            assert!(e.to_string().ends_with(why), "{e}");
        }
        // An image from before the state was served: the web app's 404.
        let (addr, _) = serve_paths(|path, _| match path {
            "/haimg/vrrp-state" => http(404, "<html>not found</html>"),
            _ => http(200, "nginx2\n"),
        });
        let p = gate_to(addr)
            .wait_healthy(
                &cluster(),
                &expect(Role::Lb, "nginx2"),
                Duration::from_secs(5),
            )
            .unwrap();
        assert!(!p.detail.contains("keepalived"), "{}", p.detail);
    }

    #[test]
    fn the_master_passes_once_it_has_taken_the_vip_back() {
        // The VIP answers from nginx2 twice, then from the master; the
        // master's keepalived is MASTER.
        let (addr, n) = serve_paths(|path, i| match (path, i) {
            ("/haimg/vrrp-state", _) => http(200, "MASTER\n"),
            (_, 1 | 3) => http(200, "nginx2\n"),
            _ => http(200, "nginx1\n"),
        });
        let g = gate_to(addr);
        let p = g
            .wait_healthy(
                &cluster(),
                &expect(Role::Lb, "nginx1"),
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(
            p.detail,
            "answers on 192.168.30.106:80; VIP 192.168.30.200 served by nginx1; keepalived MASTER"
        );
        assert!(n.load(Ordering::SeqCst) >= 6);

        // The VIP stays with nginx2 (own page and VIP page alternate on the
        // one loopback server): the take-back is what the gate waits for.
        let (addr, _) = serve_paths(|path, i| match path {
            "/haimg/vrrp-state" => http(200, "MASTER\n"),
            _ => http(200, if i % 2 == 0 { "nginx1\n" } else { "nginx2\n" }),
        });
        let e = gate_to(addr)
            .wait_healthy(
                &cluster(),
                &expect(Role::Lb, "nginx1"),
                Duration::from_millis(50),
            )
            .unwrap_err();
        insta::assert_snapshot!(e.to_string(), @"nginx1 (CT 1106) did not pass its lb health gate within 0s: VIP 192.168.30.200 is still served by nginx2, not yet taken back by the master nginx1");
        // The VIP is the master's, but its keepalived says BACKUP.
        let (addr, _) = serve_paths(|path, _| match path {
            "/haimg/vrrp-state" => http(200, "BACKUP\n"),
            _ => http(200, "nginx1\n"),
        });
        let e = gate_to(addr)
            .wait_healthy(
                &cluster(),
                &expect(Role::Lb, "nginx1"),
                Duration::from_millis(50),
            )
            .unwrap_err();
        insta::assert_snapshot!(e.to_string(), @"nginx1 (CT 1106) did not pass its lb health gate within 0s: keepalived on nginx1 is \"BACKUP\", expected MASTER");
    }

    #[test]
    fn webapp_health_checks_slot_and_image_hash() {
        let mut e = expect(Role::Webapp, "webapp1");
        e.image_hash = Some("0123456789ab".into());
        let ok = r#"{"slot":"webapp1","version":"1.1.0","imageHash":"0123456789abcdef"}"#;
        assert!(check_webapp_health(ok, &e).is_ok());
        let other = r#"{"slot":"webapp2","version":"1.1.0","imageHash":"0123456789abcdef"}"#;
        assert_eq!(
            check_webapp_health(other, &e).unwrap_err(),
            "/api/health is slot webapp2, expected webapp1"
        );
        let img = r#"{"slot":"webapp1","version":"1.1.0","imageHash":"ffff"}"#;
        assert_eq!(
            check_webapp_health(img, &e).unwrap_err(),
            r#"/api/health reports image "ffff", expected 0123456789ab"#
        );
        let none = r#"{"slot":"webapp1","version":"1.1.0"}"#;
        assert!(check_webapp_health(none, &e).is_err());
        assert!(check_webapp_health("<html>", &e)
            .unwrap_err()
            .starts_with("/api/health is not JSON"));
    }

    #[test]
    fn mongo_must_be_in_the_set_and_caught_up() {
        let st = |state: &str, set: Option<&str>, lag: Option<f64>| MongoStatus {
            state: state.into(),
            set_name: set.map(str::to_string),
            lag_s: lag,
            note: None,
            by_hello: false,
        };
        assert!(check_mongo(&st("SECONDARY", Some("rs0"), Some(0.5)), "rs0").is_ok());
        assert!(check_mongo(&st("PRIMARY", Some("rs0"), Some(0.0)), "rs0").is_ok());
        assert_eq!(
            check_mongo(&st("STARTUP2", Some("rs0"), None), "rs0").unwrap_err(),
            "state STARTUP2"
        );
        assert_eq!(
            check_mongo(&st("SECONDARY", Some("rs0"), Some(30.0)), "rs0").unwrap_err(),
            "SECONDARY but 30.0s behind the primary"
        );
        assert_eq!(
            check_mongo(&st("SECONDARY", Some("legacy"), Some(0.0)), "rs0").unwrap_err(),
            r#"member of replica set "legacy", expected "rs0""#
        );
        let mut fresh = st("STARTUP", None, None);
        fresh.note = Some("no replica-set config yet".into());
        assert_eq!(
            check_mongo(&fresh, "rs0").unwrap_err(),
            "STARTUP, in no replica set: no replica-set config yet"
        );
        let mut blind = st("SECONDARY", Some("rs0"), None);
        blind.note = Some("no member is PRIMARY in its view".into());
        assert_eq!(
            check_mongo(&blind, "rs0").unwrap_err(),
            "SECONDARY, lag unknown: no member is PRIMARY in its view"
        );
    }

    #[test]
    fn an_unreachable_mongo_member_is_named_by_its_address() {
        // Every member resolves to a port nothing listens on.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let mut g = NetGate::wire(Origin::here());
        g.resolve = Box::new(move |_| addr);
        let e = g.mongo_primary(&cluster()).unwrap_err().to_string();
        let e = e.replace(&addr.to_string(), "[ADDR]");
        insta::assert_snapshot!(e, @"mongo: no member answers: [ADDR]: Connection refused (os error 111)");
        let e = g
            .wait_healthy(&cluster(), &expect(Role::Mongo, "mongo2"), Duration::ZERO)
            .unwrap_err()
            .to_string()
            .replace(&addr.to_string(), "[ADDR]");
        insta::assert_snapshot!(e, @"mongo2 (CT 1106) did not pass its mongo health gate within 0s: [ADDR]: Connection refused (os error 111)");
    }

    #[test]
    fn a_source_address_that_cannot_be_bound_is_named() {
        // 198.51.100.1 (TEST-NET-2) is on no interface here: the bind fails
        // before any packet leaves (and the target is loopback anyway).
        let g = WireMongo::new(Origin::new(None, Some("198.51.100.1".parse().unwrap())));
        let e = g
            .status("127.0.0.1:9".parse().unwrap(), Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("127.0.0.1:9: failed to bind source address 198.51.100.1: "),
            "{e}"
        );
    }
}
