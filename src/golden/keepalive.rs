//! Clients that keep their connection open between requests, as browsers
//! do: the other half of "a planned VIP move loses nothing". The load of
//! [`super::load`] opens a connection per request; these send request after
//! request on one connection, so a move finds them holding a connection to
//! the old holder, idle or waiting for an answer.
//!
//! They behave as a browser does with HTTP/1.1 keep-alive: before reusing
//! an idle connection, look whether the server closed it (a pending end of
//! stream) and open a new one if so; when a reused connection ends or is
//! reset before the first byte of the answer (the server closed it while the
//! request was on its way), send the request once more on a new connection
//! (RFC 9110 §9.2.2: GET is idempotent). Anything else — a timeout, a reset
//! or an end after part of the answer, a second failure — is a failed
//! request. Bounded by a deadline and a stop flag; loopback or the test's
//! own namespace only, like the rest of the golden clients.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::probe::{http, netns, tcp};

#[derive(Debug, Clone)]
pub struct KeepAliveSpec {
    pub target: SocketAddr,
    pub path: String,
    /// One client (and connection at a time) per source address.
    pub sources: Vec<IpAddr>,
    /// Time between one client's requests.
    pub interval: Duration,
    /// Per request: connect, send, whole answer.
    pub timeout: Duration,
    pub deadline: Duration,
    pub stop: Arc<AtomicBool>,
    pub netns: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct KeepAliveResult {
    /// Requests made (a retried one counts once).
    pub requests: usize,
    pub answered: usize,
    pub failed: usize,
    /// Requests sent a second time because a reused connection ended
    /// before any of the answer, as a browser does.
    pub retried: usize,
    /// Connections opened because the server had closed the idle one.
    pub reopened: usize,
    /// Answers sent on a connection that had carried an earlier answer.
    pub on_reused: usize,
    pub failure_samples: Vec<String>,
}

/// How one try went.
enum Try {
    Answered,
    /// A reused connection ended or was reset before the first byte.
    ClosedBeforeAnswer(String),
    Failed(String),
}

pub fn run(spec: &KeepAliveSpec) -> std::io::Result<KeepAliveResult> {
    let total = Arc::new(Mutex::new(KeepAliveResult::default()));
    let start = Instant::now();
    let mut handles = Vec::new();
    for source in spec.sources.clone() {
        let (spec, total) = (spec.clone(), total.clone());
        handles.push(std::thread::spawn(move || -> std::io::Result<()> {
            if let Some(ns) = &spec.netns {
                netns::enter(ns)?;
            }
            let mut conn: Option<TcpStream> = None;
            let mut mine = KeepAliveResult::default();
            while !spec.stop.load(Ordering::SeqCst) && start.elapsed() < spec.deadline {
                std::thread::sleep(spec.interval); // pacing, not synchronisation
                mine.requests += 1;
                if conn.as_ref().is_some_and(closed_by_server) {
                    conn = None;
                    mine.reopened += 1;
                }
                let reused = conn.is_some();
                let outcome = match attempt(&spec, source, &mut conn) {
                    Try::ClosedBeforeAnswer(_) if reused => {
                        mine.retried += 1;
                        attempt(&spec, source, &mut conn)
                    }
                    other => other,
                };
                match outcome {
                    Try::Answered => {
                        mine.answered += 1;
                        if reused {
                            mine.on_reused += 1;
                        }
                    }
                    Try::ClosedBeforeAnswer(e) | Try::Failed(e) => {
                        mine.failed += 1;
                        if mine.failure_samples.len() < 3 {
                            mine.failure_samples.push(format!("{source}: {e}"));
                        }
                    }
                }
            }
            let mut t = total
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?;
            t.requests += mine.requests;
            t.answered += mine.answered;
            t.failed += mine.failed;
            t.retried += mine.retried;
            t.reopened += mine.reopened;
            t.on_reused += mine.on_reused;
            for s in mine.failure_samples {
                if t.failure_samples.len() < 5 {
                    t.failure_samples.push(s);
                }
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join()
            .map_err(|_| std::io::Error::other("keep-alive client panicked"))??;
    }
    Arc::try_unwrap(total)
        .map_err(|_| std::io::Error::other("keep-alive clients still running"))?
        .into_inner()
        .map_err(|_| std::io::Error::other("poisoned"))
}

/// An idle connection the server has ended (a pending end of stream or
/// reset), looked at without blocking, as a browser does before reusing it.
fn closed_by_server(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let closed = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => true, // bytes nobody asked for: not a connection to reuse
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    closed || s.set_nonblocking(false).is_err()
}

/// One request on `conn` (opened first when `None`); the connection is
/// kept only when the answer came whole and did not say `Connection: close`.
fn attempt(spec: &KeepAliveSpec, source: IpAddr, conn: &mut Option<TcpStream>) -> Try {
    let s = match conn.take() {
        Some(s) => s,
        None => match tcp::connect(spec.target, Some(source), spec.timeout) {
            Ok(s) => s,
            Err(e) => return Try::Failed(format!("connect: {e}")),
        },
    };
    match exchange(spec, &s) {
        Ok(keep) => {
            if keep {
                *conn = Some(s);
            }
            Try::Answered
        }
        Err((0, e)) if is_close(&e) => Try::ClosedBeforeAnswer(e.to_string()),
        Err((n, e)) => Try::Failed(format!("{e} after {n} bytes of the answer")),
    }
}

fn is_close(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// Send the request and read the whole answer; `Ok(keep-alive?)`, or the
/// bytes of the answer read before the error.
fn exchange(spec: &KeepAliveSpec, mut s: &TcpStream) -> Result<bool, (usize, std::io::Error)> {
    let deadline = Instant::now() + spec.timeout;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: haimg-test-keepalive\r\n\r\n",
        spec.path, spec.target
    );
    s.set_write_timeout(Some(spec.timeout))
        .and_then(|()| s.write_all(req.as_bytes()))
        .map_err(|e| (0, e))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while !http::is_complete(&buf) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "no whole answer in time");
            return Err((buf.len(), e));
        }
        s.set_read_timeout(Some(left)).map_err(|e| (buf.len(), e))?;
        match s.read(&mut chunk) {
            Ok(0) => {
                let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "end of stream");
                return Err((buf.len(), e));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((buf.len(), e)),
        }
    }
    let r = http::parse_response(&buf).map_err(|e| (buf.len(), e))?;
    if r.status != 200 {
        let e = std::io::Error::other(format!("status {}", r.status));
        return Err((buf.len(), e));
    }
    let head = String::from_utf8_lossy(&buf[..buf.len().min(4096)]).to_ascii_lowercase();
    Ok(!head.contains("\r\nconnection: close"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn spec(target: SocketAddr, stop: &Arc<AtomicBool>) -> KeepAliveSpec {
        KeepAliveSpec {
            target,
            path: "/".into(),
            sources: vec!["127.0.0.1".parse().unwrap()],
            interval: Duration::from_millis(5),
            timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
            stop: stop.clone(),
            netns: None,
        }
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    /// A server that answers `per_conn` requests per connection, then closes
    /// it the way `how` says; it stops the client after `total` answers.
    fn serve(
        per_conn: usize,
        total: usize,
        how: &'static str,
        stop: Arc<AtomicBool>,
    ) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut answered = 0;
            for s in l.incoming() {
                let mut s = s.unwrap();
                for _ in 0..per_conn {
                    let mut b = [0u8; 1024];
                    if s.read(&mut b).unwrap_or(0) == 0 {
                        break;
                    }
                    answered += 1;
                    if answered >= total {
                        // Before the answer: the client must see it
                        // stopped when it has read the last one.
                        stop.store(true, Ordering::SeqCst);
                    }
                    s.write_all(OK).unwrap();
                }
                match how {
                    // Idle close: the client finds it closed before reusing it.
                    "idle" => drop(s),
                    // The request reaches a connection the server is closing:
                    // read it, answer nothing, close (the keep-alive race).
                    "race" => {
                        let mut b = [0u8; 1024];
                        let _ = s.read(&mut b);
                        drop(s);
                    }
                    _ => {
                        // Half an answer, then the end.
                        let mut b = [0u8; 1024];
                        let _ = s.read(&mut b);
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nok");
                        drop(s);
                    }
                }
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            }
        });
        addr
    }

    /// Requests reuse the connection; a server that closes it while idle
    /// costs a new connection, not a request; one that closes it under a
    /// request costs a retry (as a browser makes), not a failure; an answer
    /// cut in half is a failure.
    #[test]
    fn reuse_idle_closes_races_and_cut_answers() {
        let stop = Arc::new(AtomicBool::new(false));
        let r = run(&spec(serve(3, 9, "idle", stop.clone()), &stop)).unwrap();
        assert_eq!(r.failed, 0, "{r:?}");
        assert!(r.answered >= 9 && r.on_reused >= 6, "{r:?}");
        assert!(r.reopened >= 2, "{r:?}");

        let stop = Arc::new(AtomicBool::new(false));
        let r = run(&spec(serve(3, 9, "race", stop.clone()), &stop)).unwrap();
        assert_eq!(r.failed, 0, "{r:?}");
        assert!(r.retried >= 2, "{r:?}");

        let stop = Arc::new(AtomicBool::new(false));
        let r = run(&spec(serve(2, 6, "cut", stop.clone()), &stop)).unwrap();
        assert!(r.failed >= 2, "{r:?}");
        assert!(
            r.failure_samples[0].contains("after 40 bytes of the answer"),
            "{r:?}"
        );
    }
}
