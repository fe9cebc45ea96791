//! The HTTP layer: one call to the Proxmox API, with retries and error mapping.
//!
//! Wire rules (from `pve-http-server` and `pve-common`, see the notes):
//! * GET/DELETE parameters go in the query string only (a body gets 501);
//!   POST/PUT parameters go in an `application/x-www-form-urlencoded` body
//!   with booleans as `0`/`1`. The body is encoded here, not by reqwest, so
//!   the bytes on the wire are the bytes the snapshot tests see.
//! * Success is `{"data": ...}`; errors are 400 with `errors` per parameter,
//!   401 with an empty body, 403/500 with `message`, 501 for unknown paths,
//!   595-599 when pveproxy could not reach the other node.
//! * 595-599, `can't lock file ... got timeout` and `cluster not ready - no
//!   quorum?` are transient. A GET is retried on them and on transport failures,
//!   with exponential backoff and jitter, up to [`RetryPolicy::attempts`] tries.
//! * A call that changes something is retried here only when it provably did
//!   not run: 595 (pveproxy could not connect to the node it forwards to), a
//!   lock timeout or lost quorum (the handler died before doing anything), or a
//!   connection that was never made. A 596-599, a dropped connection or a
//!   timeout after the request went out may come after the node did the work
//!   ([`ApiError::may_have_run`]); the backend settles those by reading the
//!   state again, never by sending blindly.
//! * pve-http-server before 5.2.1 ends the TLS session without close_notify
//!   after an answer without content (a 401, a 59x): the status line was
//!   complete, so that answer counts, not the unclean close (see [`Client::finish`]).
//!
//! Invariant: the token is only ever in the `Authorization` header; no error,
//! log line or dry-run output built here contains it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::{multipart, Client as HttpClient, Response};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::Value;

use super::token::ApiToken;

/// HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Method {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "DELETE")]
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    /// Whether the call changes state on the target.
    pub fn mutates(self) -> bool {
        !matches!(self, Method::Get)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ordered request parameters. Booleans are written `1`/`0`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn new() -> Params {
        Params::default()
    }
    pub fn add(mut self, k: &str, v: impl ToString) -> Params {
        self.0.push((k.to_string(), v.to_string()));
        self
    }
    pub fn flag(self, k: &str, v: bool) -> Params {
        self.add(k, if v { "1" } else { "0" })
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `a=1&b=2`, form/query encoded.
    pub fn encode(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            s.append_pair(k, v);
        }
        s.finish()
    }
}

/// Percent-encode one path segment (UPIDs hold `:`, `@` and `!`; volids hold `/`).
pub fn seg(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');
    utf8_percent_encode(s, KEEP).to_string()
}

/// What went wrong with one HTTP call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The server answered with a non-2xx status.
    Status {
        status: u16,
        /// `message` of the JSON body, first line, trimmed.
        message: Option<String>,
        /// Per-parameter errors of a 400.
        errors: BTreeMap<String, String>,
    },
    /// No usable answer: connection, TLS, timeout. `sent`: the request may
    /// have reached the server (anything after the connection was made).
    Transport { message: String, sent: bool },
    /// The request could not be built here (e.g. the upload's file cannot be read).
    Input(String),
    /// A 200 whose body did not have the expected shape.
    Decode(String),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ApiError::Status { message, .. } => message.as_deref().unwrap_or(""),
            ApiError::Transport { message, .. } => message,
            ApiError::Input(m) | ApiError::Decode(m) => m,
        }
    }

    /// pveproxy could not reach the target node, the config lock was busy, or
    /// the node has no quorum (pmxcfs refuses every write until it is back).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Status {
                status, message, ..
            } => {
                (595..=599).contains(status)
                    || message
                        .as_deref()
                        .is_some_and(|m| is_lock_timeout(m) || is_no_quorum(m))
            }
            _ => false,
        }
    }

    /// Whether the call may have done its work although no answer says so.
    ///
    /// pveproxy answers 595-599 when forwarding to the node in the path failed,
    /// with AnyEvent::HTTP's pseudo codes: 595 is a failed connection (the
    /// request never left), 596 a failure "during TLS negotiation, request
    /// sending and header processing", 597 while receiving the body, 598/599
    /// aborted or other: from 596 on, the node may have run the call. Locally,
    /// anything after the connection was made (a reset, a timeout, a body that
    /// did not arrive) is the same. Every other status is the handler's own
    /// answer: it ran and refused, or did what it answered.
    pub fn may_have_run(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => (596..=599).contains(status),
            ApiError::Transport { sent, .. } => *sent,
            ApiError::Decode(_) => true,
            ApiError::Input(_) => false,
        }
    }

    /// Whether sending again is safe and may help: for a GET any transient
    /// failure; for anything else only a transient one that provably did not run.
    fn retryable(&self, idempotent: bool) -> bool {
        let transport = matches!(self, ApiError::Transport { message, .. }
            // A certificate that fails verification will fail again.
            if !message.contains("certificate"));
        if idempotent {
            self.is_transient() || transport
        } else {
            (self.is_transient() || transport) && !self.may_have_run()
        }
    }

    /// A 500 saying the guest does not exist.
    pub fn is_missing_guest(&self) -> bool {
        self.status() == Some(500)
            && self.message().contains("does not exist")
            && self.message().contains("Configuration file")
    }
}

/// `can't lock file '/run/lock/lxc/pve-config-100.lock' - got timeout`.
pub fn is_lock_timeout(msg: &str) -> bool {
    msg.contains("can't lock file") && msg.contains("got timeout")
}

/// `cluster not ready - no quorum?` (`pve-cluster:src/PVE/Cluster.pm`,
/// `check_cfs_quorum`), or `cfs-lock ... no quorum!`.
pub fn is_no_quorum(msg: &str) -> bool {
    msg.contains("no quorum")
}

/// `Permission check failed (/vms/100, VM.Allocate)` → `VM.Allocate on /vms/100`.
fn permission_of(msg: &str) -> Option<String> {
    let inner = msg.split_once("Permission check failed (")?.1;
    let inner = inner.rsplit_once(')')?.0;
    match inner.split_once(", ") {
        Some((path, privs)) if path.starts_with('/') => Some(format!("{privs} on {path}")),
        _ => Some(inner.to_string()),
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Status { status: 400, errors, message } => {
                if errors.is_empty() {
                    write!(f, "400 parameter verification failed: {}", message.as_deref().unwrap_or("no detail"))
                } else {
                    let list: Vec<String> = errors.iter().map(|(k, v)| format!("parameter '{k}': {v}")).collect();
                    write!(f, "400 {}", list.join("; "))
                }
            }
            ApiError::Status { status: 401, .. } => f.write_str(
                "401 authentication failed: the API token in HAIMG_PVE_TOKEN was refused (wrong secret, expired or deleted token?)",
            ),
            ApiError::Status { status: 403, message, .. } => {
                let m = message.as_deref().unwrap_or("");
                match permission_of(m) {
                    Some(p) => write!(f, "403 permission denied: the token lacks {p} (grant it to the token, or turn off privilege separation)"),
                    None => write!(f, "403 permission denied: {m}"),
                }
            }
            ApiError::Status { status: 501, message, .. } => write!(
                f,
                "501 not implemented by this Proxmox: {}",
                message.as_deref().unwrap_or("no detail")
            ),
            ApiError::Status { status, message, .. } if (595..=599).contains(status) => write!(
                f,
                "{status} {}{}",
                if *status == 595 {
                    "pveproxy could not reach the target node"
                } else {
                    "pveproxy got no complete answer from the target node"
                },
                message
                    .as_deref()
                    .map(|m| if m.starts_with('(') { format!(" {m}") } else { format!(": {m}") })
                    .unwrap_or_default()
            ),
            ApiError::Status { status, message, .. } => {
                write!(f, "{status} {}", message.as_deref().unwrap_or("no message"))
            }
            ApiError::Transport { message, .. } => write!(f, "no answer: {message}"),
            ApiError::Input(m) => f.write_str(m),
            ApiError::Decode(m) => write!(f, "unexpected answer: {m}"),
        }
    }
}

/// Backoff for transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(500),
            max: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// Delay before try `n+1` (n from 1): exponential, with full jitter in [d/2, d].
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(16));
        let d = exp.min(self.max);
        let half = d / 2;
        half + Duration::from_nanos(fastrand::u64(
            0..=half.as_nanos().min(u64::MAX as u128) as u64,
        ))
    }
}

/// Counts of calls made, per method; transient retries count as calls.
#[derive(Debug, Default)]
pub struct CallStats {
    pub get: AtomicU64,
    pub post: AtomicU64,
    pub put: AtomicU64,
    pub delete: AtomicU64,
    pub retries: AtomicU64,
}

/// A snapshot of [`CallStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallCounts {
    pub get: u64,
    pub post: u64,
    pub put: u64,
    pub delete: u64,
    pub retries: u64,
}

impl CallCounts {
    pub fn total(&self) -> u64 {
        self.get + self.post + self.put + self.delete
    }
}

impl CallStats {
    fn bump(&self, m: Method) {
        let c = match m {
            Method::Get => &self.get,
            Method::Post => &self.post,
            Method::Put => &self.put,
            Method::Delete => &self.delete,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> CallCounts {
        CallCounts {
            get: self.get.load(Ordering::Relaxed),
            post: self.post.load(Ordering::Relaxed),
            put: self.put.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// The body of a multipart upload, rebuilt for each try.
pub type MultipartFactory<'a> = &'a dyn Fn() -> std::io::Result<multipart::Form>;

/// An authenticated API client for one endpoint. Clones share the
/// connection pool and the call counters.
#[derive(Clone)]
pub struct Client {
    /// `https://host:8006/api2/json`
    base: String,
    http: HttpClient,
    token: ApiToken,
    pub retry: RetryPolicy,
    pub stats: Arc<CallStats>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `endpoint` is `https://host:8006` (a trailing `/` or `/api2/json` is accepted).
    pub fn new(endpoint: &str, http: HttpClient, token: ApiToken) -> Client {
        let ep = endpoint.trim_end_matches('/');
        let ep = ep.strip_suffix("/api2/json").unwrap_or(ep);
        Client {
            base: format!("{ep}/api2/json"),
            http,
            token,
            retry: RetryPolicy::default(),
            stats: Arc::new(CallStats::default()),
        }
    }

    pub fn token(&self) -> &ApiToken {
        &self.token
    }

    /// One API call; returns `data`. Transient failures are retried.
    pub fn call(&self, method: Method, path: &str, params: &Params) -> Result<Value, ApiError> {
        self.with_retries(method, method == Method::Get, || {
            self.send(method, path, params)
        })
    }

    /// A multipart POST (upload). Retried here only when it provably did not
    /// run; a lost answer is for the caller to settle (is the file on storage?).
    pub fn upload(
        &self,
        path: &str,
        form: MultipartFactory<'_>,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        self.with_retries(Method::Post, false, || {
            let form =
                form().map_err(|e| ApiError::Input(format!("failed to open the upload: {e}")))?;
            let req = self
                .http
                .post(format!("{}{}", self.base, path))
                .header(AUTHORIZATION, self.token.header_value())
                .timeout(timeout)
                .multipart(form);
            Self::finish(req.send())
        })
    }

    fn with_retries(
        &self,
        method: Method,
        idempotent: bool,
        f: impl Fn() -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut n = 1;
        loop {
            self.stats.bump(method);
            match f() {
                Err(e) if n < self.retry.attempts && e.retryable(idempotent) => {
                    let d = self.retry.delay(n);
                    tracing::debug!(
                        "transient failure ({e}); try {} in {}ms",
                        n + 1,
                        d.as_millis()
                    );
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(d);
                    n += 1;
                }
                Err(ApiError::Status {
                    status,
                    message,
                    errors,
                }) if n > 1 => {
                    let m = message.map(|m| format!("{m} ")).unwrap_or_default();
                    return Err(ApiError::Status {
                        status,
                        message: Some(format!("{m}(gave up after {n} tries)")),
                        errors,
                    });
                }
                Err(ApiError::Transport { message, sent }) if n > 1 => {
                    return Err(ApiError::Transport {
                        message: format!("{message} (gave up after {n} tries)"),
                        sent,
                    })
                }
                other => return other,
            }
        }
    }

    fn send(&self, method: Method, path: &str, params: &Params) -> Result<Value, ApiError> {
        let mut url = format!("{}{}", self.base, path);
        let req = match method {
            Method::Get | Method::Delete => {
                if !params.is_empty() {
                    url.push('?');
                    url.push_str(&params.encode());
                }
                let m = if method == Method::Get {
                    reqwest::Method::GET
                } else {
                    reqwest::Method::DELETE
                };
                self.http.request(m, url)
            }
            Method::Post | Method::Put => {
                let m = if method == Method::Post {
                    reqwest::Method::POST
                } else {
                    reqwest::Method::PUT
                };
                self.http
                    .request(m, url)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(params.encode())
            }
        };
        Self::finish(req.header(AUTHORIZATION, self.token.header_value()).send())
    }

    /// Status and body of one answer.
    ///
    /// An error answer with no content has no `Content-Length`; its end is the
    /// end of the connection (`AnyEvent.pm response()`, `Connection: close` for
    /// every status >= 400). pve-http-server before 5.2.1 closes that
    /// connection without a TLS close_notify (fixed by commit 07e56cc, "fix
    /// unexpected EOF for client when closing TLS session"), which rustls
    /// reports as an unexpected EOF while the body is read. The status line was
    /// complete, so a 4xx/5xx stands as what it says; a success whose body did
    /// not arrive whole is still a failed call.
    fn finish(res: reqwest::Result<Response>) -> Result<Value, ApiError> {
        let mut res = res.map_err(|e| transport(&e))?;
        let status = res.status();
        let mut body = Vec::new();
        match std::io::Read::read_to_end(&mut res, &mut body) {
            Ok(_) => decode(status, &body),
            Err(e) if status.is_client_error() || status.is_server_error() => {
                tracing::debug!("HTTP {status}: the body ended uncleanly ({e}); taking the status");
                if serde_json::from_slice::<Value>(&body).is_err() {
                    body.clear();
                }
                decode(status, &body)
            }
            Err(e) => Err(ApiError::Transport {
                message: error_chain(&e),
                sent: true,
            }),
        }
    }
}

/// A reqwest failure: only a connection that was never made proves the
/// request did not reach the server.
fn transport(e: &reqwest::Error) -> ApiError {
    ApiError::Transport {
        message: error_chain(e),
        sent: !e.is_connect(),
    }
}

/// Turn status + body into `data` or an [`ApiError`].
pub fn decode(status: StatusCode, body: &[u8]) -> Result<Value, ApiError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if status.is_success() {
        let json = json.ok_or_else(|| {
            ApiError::Decode(format!("HTTP {status} with a body that is not JSON"))
        })?;
        return Ok(json.get("data").cloned().unwrap_or(Value::Null));
    }
    let message = json
        .as_ref()
        .and_then(|j| j.get("message"))
        .and_then(Value::as_str)
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .or_else(|| {
            // 501 and friends answer in text.
            let t = String::from_utf8_lossy(body).trim().to_string();
            (!t.is_empty() && json.is_none())
                .then(|| t.lines().next().unwrap_or_default().to_string())
        });
    let errors = json
        .as_ref()
        .and_then(|j| j.get("errors"))
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let t = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    (k.clone(), t.trim().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    Err(ApiError::Status {
        status: status.as_u16(),
        message,
        errors,
    })
}

/// An error and its causes on one line (reqwest hides the TLS reason in the chain).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    let mut out = parts.join(": ");
    if out.contains("invalid peer certificate")
        || out.contains("UnknownIssuer")
        || out.contains("fingerprint")
    {
        out.push_str(
            " (hint: set proxmox.tls.ca_file to a copy of /etc/pve/pve-root-ca.pem, or proxmox.tls.fingerprint to the node certificate's SHA-256 from `pvenode cert info`)",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, body: &str) -> ApiError {
        decode(StatusCode::from_u16(status).unwrap(), body.as_bytes()).unwrap_err()
    }

    #[test]
    fn params_encode_booleans_and_nul() {
        let p = Params::new()
            .add("vmid", 100)
            .flag("start", false)
            .add("net0", "name=eth0,ip=192.168.30.100/24")
            .add("env", "A=1\0B=x y");
        insta::assert_snapshot!(p.encode(), @"vmid=100&start=0&net0=name%3Deth0%2Cip%3D192.168.30.100%2F24&env=A%3D1%00B%3Dx+y");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(
            seg("UPID:pve1:0000002A:00000007:68000000:imgcopy::root@pam!haimg:"),
            "UPID%3Apve1%3A0000002A%3A00000007%3A68000000%3Aimgcopy%3A%3Aroot%40pam%21haimg%3A"
        );
        assert_eq!(seg("local:vztmpl/a.tar.zst"), "local%3Avztmpl%2Fa.tar.zst");
    }

    #[test]
    fn error_texts_name_what_a_user_must_fix() {
        let e400 = err(
            400,
            r#"{"data":null,"message":"Parameter verification failed.\n","errors":{"env":"property is not defined in schema and the schema does not allow additional properties"}}"#,
        );
        let e403 = err(
            403,
            r#"{"data":null,"message":"Permission check failed (/vms/100, VM.Allocate)\n"}"#,
        );
        let e500 = err(
            500,
            r#"{"data":null,"message":"CT 100 already exists on node 'pve1'\n"}"#,
        );
        let texts = [
            e400.to_string(),
            err(401, "").to_string(),
            e403.to_string(),
            e500.to_string(),
            err(501, "Method 'GET /nodes/pve1/qemu2' not implemented").to_string(),
            err(596, "").to_string(),
        ];
        insta::assert_snapshot!(texts.join("\n"), @r"
        400 parameter 'env': property is not defined in schema and the schema does not allow additional properties
        401 authentication failed: the API token in HAIMG_PVE_TOKEN was refused (wrong secret, expired or deleted token?)
        403 permission denied: the token lacks VM.Allocate on /vms/100 (grant it to the token, or turn off privilege separation)
        500 CT 100 already exists on node 'pve1'
        501 not implemented by this Proxmox: Method 'GET /nodes/pve1/qemu2' not implemented
        596 pveproxy got no complete answer from the target node
        ");
    }

    #[test]
    fn transient_classification() {
        assert!(err(596, "").is_transient());
        assert!(err(599, "").is_transient());
        assert!(err(
            500,
            r#"{"message":"can't lock file '/run/lock/lxc/pve-config-100.lock' - got timeout\n"}"#
        )
        .is_transient());
        assert!(!err(500, r#"{"message":"CT 100 already exists"}"#).is_transient());
        assert!(!err(403, "").is_transient());
        assert!(err(
            500,
            r#"{"message":"Configuration file 'nodes/pve1/lxc/100.conf' does not exist\n"}"#
        )
        .is_missing_guest());
    }

    #[test]
    fn what_may_have_run_and_what_is_sent_again() {
        let t = |sent| ApiError::Transport {
            message: "connection reset".into(),
            sent,
        };
        // (error, may have run, GET retried, POST retried)
        let cases = [
            (err(595, ""), false, true, true),
            (err(596, ""), true, true, false),
            (err(597, ""), true, true, false),
            (err(599, ""), true, true, false),
            (
                err(
                    500,
                    r#"{"message":"can't lock file '/run/lock/lxc/pve-config-1.lock' - got timeout"}"#,
                ),
                false,
                true,
                true,
            ),
            (
                err(500, r#"{"message":"cluster not ready - no quorum?"}"#),
                false,
                true,
                true,
            ),
            (
                err(500, r#"{"message":"CT 100 already exists on node 'pve1'"}"#),
                false,
                false,
                false,
            ),
            (err(401, ""), false, false, false),
            (t(false), false, true, true),
            (t(true), true, true, false),
            (
                ApiError::Input("failed to open the upload: gone".into()),
                false,
                false,
                false,
            ),
            (ApiError::Decode("x".into()), true, false, false),
        ];
        for (e, ran, get, post) in cases {
            assert_eq!(
                (e.may_have_run(), e.retryable(true), e.retryable(false)),
                (ran, get, post),
                "{e}"
            );
        }
        let cert = ApiError::Transport {
            message: "invalid peer certificate: UnknownIssuer".into(),
            sent: false,
        };
        assert!(!cert.retryable(true), "a bad certificate stays bad");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for n in 1..10 {
            let d = p.delay(n);
            let cap = (Duration::from_millis(100) * (1 << (n - 1).min(16))).min(p.max);
            assert!(
                d >= cap / 2 && d <= cap,
                "try {n}: {d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
    }

    #[test]
    fn success_envelope() {
        assert_eq!(
            decode(StatusCode::OK, br#"{"data":{"release":"9.1"}}"#).unwrap()["release"],
            "9.1"
        );
        assert!(matches!(
            decode(StatusCode::OK, b"<html>"),
            Err(ApiError::Decode(_))
        ));
    }
}
