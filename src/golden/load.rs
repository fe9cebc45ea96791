//! A bounded HTTP load generator that counts every failed request.
//!
//! Golden scenarios measure what a user sees through the VIP, so the client is
//! deliberately plain: one HTTP/1.1 `GET` per connection (`Connection: close`),
//! optionally from a chosen source address, optionally from inside a network
//! namespace (each worker thread `setns`es into it before opening sockets, so
//! traffic never leaves the test's own bridge). Every run is bounded by a
//! request count *and* a deadline; nothing loops forever.
//!
//! A request counts as failed when the connection fails, times out, or the
//! response has no parsable status line; HTTP statuses are counted separately,
//! so a 429 is an answer, not a failure.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: SocketAddr,
    pub path: String,
    /// Requests in total (upper bound).
    pub total: usize,
    /// Parallel workers.
    pub concurrency: usize,
    /// Requests per second across all workers; `None` = as fast as possible.
    pub rate_per_s: Option<f64>,
    /// Per-request connect + read timeout.
    pub timeout: Duration,
    /// The whole run stops here even if `total` was not reached.
    pub deadline: Duration,
    /// Bind to this source address before connecting.
    pub source: Option<IpAddr>,
    /// `/run/netns/<name>` to enter, if any.
    pub netns: Option<PathBuf>,
}

impl LoadSpec {
    pub fn new(target: SocketAddr, path: &str) -> LoadSpec {
        LoadSpec {
            target,
            path: path.to_string(),
            total: 100,
            concurrency: 4,
            rate_per_s: None,
            timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(30),
            source: None,
            netns: None,
        }
    }
}

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// `X-Haimg-Lb` (the slot of the lb that answered, added by its nginx), if present.
    pub served_by: Option<String>,
    pub body: String,
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadResult {
    pub sent: usize,
    /// Answered with a status line, by status code.
    pub statuses: BTreeMap<u16, usize>,
    /// Connection refused/reset, timeouts, garbage: what a user sees as an error.
    pub failed: usize,
    /// First few failure reasons, for the report.
    pub failure_samples: Vec<String>,
    pub elapsed_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Bodies of answered requests, counted (only when `keep_bodies`).
    #[serde(skip)]
    pub bodies: BTreeMap<String, usize>,
}

impl LoadResult {
    pub fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

/// Run a bounded load; `keep_bodies` also counts distinct response bodies.
pub fn run(spec: &LoadSpec, keep_bodies: bool) -> std::io::Result<LoadResult> {
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(Mutex::new((LoadResult::default(), Vec::<f64>::new())));
    let mut handles = Vec::new();
    for _ in 0..spec.concurrency.max(1) {
        let (spec, next, shared) = (spec.clone(), next.clone(), shared.clone());
        handles.push(std::thread::spawn(move || -> std::io::Result<()> {
            if let Some(ns) = &spec.netns {
                enter_netns(ns)?;
            }
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= spec.total || start.elapsed() >= spec.deadline {
                    return Ok(());
                }
                if let Some(rate) = spec.rate_per_s {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait); // pacing, not synchronisation
                    }
                }
                let t0 = Instant::now();
                let res = get(&spec);
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                let mut g = shared
                    .lock()
                    .map_err(|_| std::io::Error::other("poisoned"))?;
                let (r, lat) = &mut *g;
                r.sent += 1;
                match res {
                    Ok(resp) => {
                        *r.statuses.entry(resp.status).or_default() += 1;
                        lat.push(ms);
                        if keep_bodies {
                            *r.bodies.entry(resp.body).or_default() += 1;
                        }
                    }
                    Err(e) => {
                        r.failed += 1;
                        if r.failure_samples.len() < 5 {
                            r.failure_samples.push(e.to_string());
                        }
                    }
                }
            }
        }));
    }
    for h in handles {
        h.join()
            .map_err(|_| std::io::Error::other("load worker panicked"))??;
    }
    let (mut result, mut lat) = Arc::try_unwrap(shared)
        .map_err(|_| std::io::Error::other("load workers still running"))?
        .into_inner()
        .map_err(|_| std::io::Error::other("poisoned"))?;
    result.elapsed_s = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    result.p50_ms = percentile(&lat, 0.50);
    result.p99_ms = percentile(&lat, 0.99);
    Ok(result)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    (sorted[idx] * 10.0).round() / 10.0
}

/// One `GET`, from inside whatever netns the calling thread is in.
pub fn get(spec: &LoadSpec) -> std::io::Result<Response> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(spec.target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if let Some(src) = spec.source {
        sock.bind(&SocketAddr::new(src, 0).into())?;
    }
    sock.connect_timeout(&spec.target.into(), spec.timeout)?;
    sock.set_read_timeout(Some(spec.timeout))?;
    sock.set_write_timeout(Some(spec.timeout))?;
    let mut stream: std::net::TcpStream = sock.into();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: haimg-test\r\nConnection: close\r\n\r\n",
        spec.path, spec.target
    );
    stream.write_all(req.as_bytes())?;
    // The whole answer within `timeout` (a per-read timeout alone would let a
    // trickling server hold a request far longer), at most 1 MiB.
    let deadline = Instant::now() + spec.timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no complete answer within the timeout",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        // A read on a socket with a receive timeout is never restarted after
        // a signal handler ran (signal(7)), whatever the handler's SA_RESTART:
        // it fails with EINTR. The signal is this process's business, not the
        // server's answer: read on.
        match stream.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{e} after {} bytes of an incomplete answer", buf.len()),
                ))
            }
            Ok(0) => break,
            Ok(n) if buf.len() + n > 1 << 20 => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        // Done when the answer is complete by HTTP's framing, as a browser or
        // curl is: what the connection does afterwards (a reset when the VIP
        // has moved on) does not take back an answer already received.
        if is_complete(&buf) {
            break;
        }
    }
    parse_response(&buf)
}

/// Is `buf` a whole HTTP/1.1 response by its framing: headers, then
/// `Content-Length` bytes or the last chunk of a chunked body? A response
/// framed by the end of the connection is never complete before it.
pub fn is_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end + 4..];
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut rest = body;
        loop {
            let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                return false;
            };
            let size = std::str::from_utf8(&rest[..eol])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
            let Some(size) = size else { return false };
            rest = &rest[eol + 2..];
            if size == 0 {
                // Trailers end with an empty line.
                return rest.windows(2).any(|w| w == b"\r\n");
            }
            if rest.len() < size + 2 {
                return false;
            }
            rest = &rest[size + 2..];
        }
    }
    match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => body.len() >= n,
        None => false,
    }
}

/// Status code and body of a `Connection: close` response (chunked bodies are de-chunked).
pub fn parse_response(buf: &[u8]) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let status_line = head.lines().next().ok_or_else(|| bad("empty response"))?;
    let mut parts = status_line.split_whitespace();
    let proto = parts.next().unwrap_or("");
    if !proto.starts_with("HTTP/1.") {
        return Err(bad("no HTTP status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status code"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    let served_by = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("x-haimg-lb")
            .then(|| v.trim().to_string())
    });
    Ok(Response {
        status,
        served_by,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Move the calling thread into a network namespace.
pub fn enter_netns(path: &std::path::Path) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn complete_by_framing() {
        let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert!(is_complete(cl));
        assert!(!is_complete(&cl[..cl.len() - 1]));
        let ch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert!(is_complete(ch));
        assert!(!is_complete(&ch[..ch.len() - 2]));
        assert!(!is_complete(&ch[..ch.len() - 7]));
        // No length: only the end of the connection frames it.
        assert!(!is_complete(b"HTTP/1.1 200 OK\r\n\r\nok"));
        assert!(!is_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"));
    }

    /// A reset after the whole answer arrived (the VIP moved on meanwhile)
    /// is not a failure; a reset before it is, and says how far it got.
    #[test]
    fn a_reset_after_a_complete_answer_is_not_a_failure() {
        fn reset_after(answer: &'static [u8]) -> SocketAddr {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                s.write_all(answer).unwrap();
                // SO_LINGER 0: close sends a reset instead of a FIN.
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(s);
            });
            addr
        }
        let whole = reset_after(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let r = get(&LoadSpec::new(whole, "/")).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let partial = reset_after(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok");
        let e = get(&LoadSpec::new(partial, "/")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        assert!(
            e.to_string()
                .ends_with("after 40 bytes of an incomplete answer"),
            "{e}"
        );
    }

    static HANDLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    extern "C" fn count_signal(_: libc::c_int) {
        HANDLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// A signal handled while the answer is awaited (EINTR on a socket with a
    /// receive timeout) is not a failed request. Seen in the golden rollout
    /// scenarios: "Interrupted system call (os error 4)" counted as lost.
    #[test]
    fn a_signal_during_the_read_is_not_a_failure() {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        // SAFETY: the handler only touches an atomic; SIGUSR2 is used by no other test.
        unsafe {
            sigaction(
                Signal::SIGUSR2,
                &SigAction::new(
                    SigHandler::Handler(count_signal),
                    SaFlags::SA_RESTART,
                    SigSet::empty(),
                ),
            )
            .unwrap();
        }
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let release = Arc::new(AtomicBool::new(false));
        let got_request = Arc::new(AtomicBool::new(false));
        let (r2, g2) = (release.clone(), got_request.clone());
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            g2.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !r2.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::yield_now();
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .unwrap();
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let client = std::thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            tx.send(unsafe { libc::pthread_self() } as usize).unwrap();
            let mut spec = LoadSpec::new(addr, "/");
            spec.timeout = Duration::from_secs(10);
            get(&spec)
        });
        let thread = rx.recv().unwrap() as libc::pthread_t;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !got_request.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::yield_now();
        }
        // Signals while the client waits in read(2), then the answer.
        let before = HANDLED.load(Ordering::SeqCst);
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            // SAFETY: the client thread is alive until `release` is set.
            unsafe { libc::pthread_kill(thread, libc::SIGUSR2) };
            std::thread::sleep(Duration::from_millis(5)); // pacing of the signals
        }
        release.store(true, Ordering::SeqCst);
        let r = client.join().unwrap();
        server.join().unwrap();
        assert!(
            HANDLED.load(Ordering::SeqCst) > before,
            "no signal was handled"
        );
        let r = r.expect("a handled signal made the request fail");
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }

    /// A loopback server answering `n` connections with a fixed response.
    fn serve(n: usize, response: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(n) {
                let mut s = s.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(response.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn counts_statuses_and_bodies() {
        let addr = serve(20, "HTTP/1.1 429 Too Many\r\nContent-Length: 2\r\n\r\nno");
        let mut spec = LoadSpec::new(addr, "/");
        spec.total = 20;
        let r = run(&spec, true).unwrap();
        assert_eq!(r.sent, 20);
        assert_eq!(r.count(429), 20);
        assert_eq!(r.failed, 0);
        assert_eq!(r.bodies.get("no"), Some(&20));
    }

    #[test]
    fn refused_connections_are_failures() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let mut spec = LoadSpec::new(addr, "/");
        spec.total = 5;
        spec.concurrency = 1;
        let r = run(&spec, false).unwrap();
        assert_eq!(r.failed, 5);
        assert!(r.statuses.is_empty());
        assert!(r.failure_samples[0].contains("refused"));
    }

    #[test]
    fn deadline_bounds_the_run() {
        // A server that accepts but never answers: every request times out.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut spec = LoadSpec::new(addr, "/");
        spec.total = 1000;
        spec.concurrency = 2;
        spec.timeout = Duration::from_millis(100);
        spec.deadline = Duration::from_millis(300);
        let r = run(&spec, false).unwrap();
        drop(l);
        assert!(r.sent < 20, "sent {}", r.sent);
        assert_eq!(r.failed, r.sent);
    }

    #[test]
    fn parses_chunked_and_garbage() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "hello world"));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nx-haimg-lb: nginx2\r\n\r\nok").unwrap();
        assert_eq!(r.served_by.as_deref(), Some("nginx2"));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"").is_err());
    }
}
