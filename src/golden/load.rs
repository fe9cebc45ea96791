//! A bounded HTTP load generator that counts every failed request.
//!
//! Golden scenarios measure what a user sees through the VIP, so the client is
//! deliberately plain ([`crate::probe::http`]): one HTTP/1.1 `GET` per
//! connection, optionally from a chosen source address, optionally from inside
//! a network namespace (each worker thread enters it for good before opening
//! sockets, so traffic never leaves the test's own bridge). Every run is
//! bounded by a request count *and* a deadline; nothing loops forever.
//!
//! A request counts as failed when the connection fails, times out, or the
//! response has no parsable status line; HTTP statuses are counted separately,
//! so a 429 is an answer, not a failure.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::probe::http::{self, Request};
use crate::probe::netns;

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
    /// When not empty, request `i` comes from `spread[i % len]` instead of
    /// `source`: a load from many clients (the rate limit is per client).
    pub spread: Vec<IpAddr>,
    /// Set from outside to end the run early (a load that lasts as long as
    /// something else does).
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// `/run/netns/<name>` to enter, if any.
    pub netns: Option<PathBuf>,
}

impl LoadSpec {
    /// One request of the load.
    pub fn request(&self) -> Request {
        Request {
            target: self.target,
            path: self.path.clone(),
            timeout: self.timeout,
            source: self.source,
        }
    }

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
            spread: Vec::new(),
            stop: None,
            netns: None,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadResult {
    pub sent: usize,
    /// Answered with a status line, by status code.
    pub statuses: BTreeMap<u16, usize>,
    /// Connection refused/reset, timeouts, garbage: what a user sees as an error.
    pub failed: usize,
    /// Of `failed`, how many were a connection reset (a stray answered by
    /// an lb that did not have the connection, or a refused one).
    pub resets: usize,
    /// First few failure reasons, for the report.
    pub failure_samples: Vec<String>,
    pub elapsed_s: f64,
    /// From the first request sent to the last one sent: how far apart a
    /// burst that was meant to arrive at once really arrived.
    pub send_spread_s: f64,
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
    // (first, last) send time, as offsets from `start`.
    let sends = Arc::new(Mutex::new((f64::MAX, 0.0f64)));
    let mut handles = Vec::new();
    for _ in 0..spec.concurrency.max(1) {
        let (spec, next, shared, sends) =
            (spec.clone(), next.clone(), shared.clone(), sends.clone());
        handles.push(std::thread::spawn(move || -> std::io::Result<()> {
            if let Some(ns) = &spec.netns {
                netns::enter(ns)?;
            }
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let stopped = spec.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
                if i >= spec.total || start.elapsed() >= spec.deadline || stopped {
                    return Ok(());
                }
                if let Some(rate) = spec.rate_per_s {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait); // pacing, not synchronisation
                    }
                }
                let t0 = Instant::now();
                if let Ok(mut s) = sends.lock() {
                    let at = t0.duration_since(start).as_secs_f64();
                    *s = (s.0.min(at), s.1.max(at));
                }
                let mut req = spec.request();
                if !spec.spread.is_empty() {
                    req.source = Some(spec.spread[i % spec.spread.len()]);
                }
                let res = http::get(&req);
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
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::ConnectionRefused
                        ) {
                            r.resets += 1;
                        }
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
    if let Ok(s) = sends.lock() {
        result.send_spread_s = if s.0 <= s.1 { s.1 - s.0 } else { 0.0 };
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

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

    /// The load counts a body cut by the server's FIN as a failed request,
    /// not an answer: fewer bytes than Content-Length, or a chunked body
    /// without its last chunk. A whole body is an answer.
    #[test]
    fn a_body_cut_by_a_fin_is_a_failed_request() {
        let cases = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", 0),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
                0,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                10,
            ),
        ];
        for (answer, ok) in cases {
            let mut spec = LoadSpec::new(serve(10, answer), "/");
            spec.total = 10;
            spec.concurrency = 2;
            let r = run(&spec, false).unwrap();
            assert_eq!(r.sent, 10, "{answer:?}");
            assert_eq!((r.count(200), r.failed), (ok, 10 - ok), "{answer:?}: {r:?}");
            if ok == 0 {
                assert!(
                    r.failure_samples[0].starts_with("the connection ended "),
                    "{:?}",
                    r.failure_samples
                );
            }
        }
    }

    /// `spread`: request i comes from `spread[i % n]` (the server sees each
    /// source in turn); a refused connection counts as a failure and a reset.
    #[test]
    fn a_spread_load_uses_every_source_and_counts_resets() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        std::thread::spawn(move || {
            for s in l.incoming().take(6) {
                let mut s = s.unwrap();
                seen.lock().unwrap().push(s.peer_addr().unwrap().ip());
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        });
        let mut spec = LoadSpec::new(addr, "/");
        spec.total = 6;
        spec.concurrency = 1;
        spec.spread = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
            .map(|a| a.parse().unwrap())
            .to_vec();
        let r = run(&spec, false).unwrap();
        assert_eq!((r.sent, r.count(200), r.failed, r.resets), (6, 6, 0, 0));
        let mut got: Vec<String> = peers
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "127.0.0.2",
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.3",
                "127.0.0.4",
                "127.0.0.4"
            ]
        );
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut spec = LoadSpec::new(closed, "/");
        spec.total = 3;
        spec.concurrency = 1;
        let r = run(&spec, false).unwrap();
        assert_eq!((r.failed, r.resets), (3, 3));
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
}
