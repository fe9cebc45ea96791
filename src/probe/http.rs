//! A plain HTTP/1.1 client for probes: one `GET` per connection
//! (`Connection: close`), optionally bound to a source address.
//!
//! An answer counts when it is complete by HTTP's framing, as curl and
//! browsers count it: what the connection does afterwards (a reset when the
//! VIP has moved on) does not take back an answer already received. The whole
//! answer must arrive within the request's timeout, and at most 1 MiB is read.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// One request.
#[derive(Debug, Clone)]
pub struct Request {
    pub target: SocketAddr,
    pub path: String,
    /// Connect + whole-answer timeout.
    pub timeout: Duration,
    /// Bind to this source address before connecting.
    pub source: Option<IpAddr>,
}

impl Request {
    pub fn new(target: SocketAddr, path: &str) -> Request {
        Request {
            target,
            path: path.to_string(),
            timeout: Duration::from_secs(2),
            source: None,
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

/// The most a probe reads of one answer (1 MiB); a longer one is a failure.
pub const MAX_ANSWER: usize = 1 << 20;

/// One `GET`, from inside whatever netns the calling thread is in.
pub fn get(spec: &Request) -> std::io::Result<Response> {
    let mut stream = super::tcp::connect(spec.target, spec.source, spec.timeout)?;
    stream.set_read_timeout(Some(spec.timeout))?;
    stream.set_write_timeout(Some(spec.timeout))?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: haimg-test\r\nConnection: close\r\n\r\n",
        spec.path, spec.target
    );
    stream.write_all(req.as_bytes())?;
    // The whole answer within `timeout` (a per-read timeout alone would let a
    // trickling server hold a request far longer), at most [`MAX_ANSWER`].
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
            // Not an answer this client has seen whole: a failure, never a
            // body cut at the cap and counted as complete.
            Ok(n) if buf.len() + n > MAX_ANSWER => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("an answer over {MAX_ANSWER} bytes: not read to its end"),
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        // Done when the answer is complete by HTTP's framing, as a browser or
        // curl is: what the connection does afterwards (a reset when the VIP
        // has moved on) does not take back an answer already received.
        if is_complete(&buf) {
            break;
        }
    }
    if let Some(why) = truncated(&buf) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the connection ended {why}"),
        ));
    }
    parse_response(&buf)
}

/// How an answer's body ends, by its headers.
enum Framing {
    /// `Transfer-Encoding: chunked`: at the last (empty) chunk.
    Chunked,
    /// `Content-Length: n`.
    Length(usize),
    /// Neither: at the end of the connection.
    Close,
}

/// The framing of `buf` and where its body starts; `None` while the headers
/// are not all there.
fn framing(buf: &[u8]) -> Option<(Framing, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let f = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        Framing::Chunked
    } else {
        match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    Some((f, end + 4))
}

/// Why `buf` is a cut answer: headers that frame a body (`Content-Length`,
/// chunked) and less than that body. `None` when it is whole, or framed by
/// the end of the connection (no length), or has no headers yet (which
/// [`parse_response`] reports).
fn truncated(buf: &[u8]) -> Option<String> {
    let (f, start) = framing(buf)?;
    if is_complete(buf) {
        return None;
    }
    let body = buf.len() - start;
    match f {
        Framing::Chunked => Some(format!(
            "before the last chunk of a chunked body ({body} bytes of it)"
        )),
        Framing::Length(n) => Some(format!(
            "after {body} of the {n} bytes its Content-Length announced"
        )),
        Framing::Close => None,
    }
}

/// Is `buf` a whole HTTP/1.1 response by its framing: headers, then
/// `Content-Length` bytes or the last chunk of a chunked body? A response
/// framed by the end of the connection is never complete before it.
pub fn is_complete(buf: &[u8]) -> bool {
    let Some((f, start)) = framing(buf) else {
        return false;
    };
    let body = &buf[start..];
    match f {
        Framing::Chunked => {
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
        Framing::Length(n) => body.len() >= n,
        Framing::Close => false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that reads one request, writes `answer` and closes: with a
    /// FIN, or (`reset`) with a reset.
    fn answer_then_close(answer: &'static [u8], reset: bool) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            // A client that stops reading (an answer over the cap) may
            // close first: what it saw is what the test checks.
            let _ = s.write_all(answer);
            if reset {
                // SO_LINGER 0: close sends a reset instead of a FIN.
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
            drop(s);
        });
        addr
    }

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

    /// A body cut by the end of the connection (a FIN) is not an answer: a
    /// Content-Length not reached, a chunked body without its last chunk.
    /// A body without a length ends with the connection, as HTTP/1.1 says.
    #[test]
    fn a_body_cut_by_a_fin_is_a_failure() {
        let fin_after = |answer| answer_then_close(answer, false);
        let short = fin_after(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok");
        let e = get(&Request::new(short, "/")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(
            e.to_string(),
            "the connection ended after 2 of the 5 bytes its Content-Length announced"
        );
        let no_last =
            fin_after(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n");
        let e = get(&Request::new(no_last, "/")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the connection ended before the last chunk of a chunked body (7 bytes of it)"
        );
        let whole = fin_after(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(get(&Request::new(whole, "/")).unwrap().body, "ok");
        let by_close = fin_after(b"HTTP/1.1 200 OK\r\n\r\nall of it");
        assert_eq!(get(&Request::new(by_close, "/")).unwrap().body, "all of it");
    }

    /// An answer longer than the probe reads is a failure, not a body cut
    /// at the cap: with a length, and framed by the end of the connection.
    #[test]
    fn an_answer_over_the_cap_is_a_failure() {
        let body = vec![b'x'; MAX_ANSWER + 1];
        let with_length = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        for head in [with_length.as_str(), "HTTP/1.1 200 OK\r\n\r\n"] {
            let answer: &'static [u8] = [head.as_bytes(), &body].concat().leak();
            let mut req = Request::new(answer_then_close(answer, false), "/");
            req.timeout = Duration::from_secs(10);
            let e = get(&req).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            assert_eq!(
                e.to_string(),
                "an answer over 1048576 bytes: not read to its end"
            );
        }
    }

    /// A reset after the whole answer arrived (the VIP moved on meanwhile)
    /// is not a failure; a reset before it is, and says how far it got.
    #[test]
    fn a_reset_after_a_complete_answer_is_not_a_failure() {
        let reset_after = |answer| answer_then_close(answer, true);
        let whole = reset_after(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let r = get(&Request::new(whole, "/")).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let partial = reset_after(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok");
        let e = get(&Request::new(partial, "/")).unwrap_err();
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
            let mut spec = Request::new(addr, "/");
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
