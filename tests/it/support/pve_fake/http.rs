//! The fake's HTTP/1.1 layer over rustls: just enough of pveproxy's wire behaviour.
//!
//! Keep-alive connections, one thread each. Enforced as pveproxy does
//! (`pve-http-server:src/PVE/APIServer/AnyEvent.pm`): chunked bodies → 501,
//! a body on GET/DELETE → 501, a body without Content-Length is not read.
//!
//! Framing as `AnyEvent.pm response()` writes it: every status >= 400 ends the
//! connection (`Connection: close`), and an answer without content carries no
//! `Content-Length` at all, so the client reads its (empty) body up to the
//! close. Before pve-http-server 5.2.1 (commit 07e56cc, "fix unexpected EOF for
//! client when closing TLS session", 2025) that close came without a TLS
//! close_notify; [`TlsClose::Unclean`] models those servers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

pub struct Request {
    pub method: String,
    /// Raw target (path + query), as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Response {
    pub status: u16,
    pub reason: String,
    pub body: Vec<u8>,
    pub content_type: &'static str,
}

impl Response {
    pub fn json(status: u16, reason: &str, v: &serde_json::Value) -> Response {
        Response {
            status,
            reason: reason.to_string(),
            body: serde_json::to_vec(v).unwrap(),
            content_type: "application/json;charset=UTF-8",
        }
    }
    pub fn text(status: u16, reason: &str, body: &str) -> Response {
        Response {
            status,
            reason: reason.to_string(),
            body: body.as_bytes().to_vec(),
            content_type: "text/plain;charset=UTF-8",
        }
    }
}

/// What the router decided to do with the connection.
pub enum Outcome {
    Respond(Response),
    /// Close the connection without answering (connection dropped).
    Drop,
}

/// Before the body is read: answer now, drop after `n` body bytes, or go on.
pub enum Early {
    Continue,
    Respond(Response),
    DropAfter(usize),
}

/// How the server ends a TLS session it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsClose {
    /// close_notify, then FIN (pve-http-server >= 5.2.1).
    Clean,
    /// FIN without close_notify (pve-http-server < 5.2.1).
    Unclean,
}

pub trait Handler: Send + Sync + 'static {
    /// How this server closes TLS sessions.
    fn tls_close(&self) -> TlsClose {
        TlsClose::Clean
    }
    fn early(&self, method: &str, target: &str, headers: &[(String, String)]) -> Early;
    fn handle(&self, req: Request) -> Outcome;
}

type Tls = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

pub fn serve_connection(tcp: TcpStream, cfg: Arc<rustls::ServerConfig>, handler: Arc<dyn Handler>) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    // Answers go out in one write without waiting for an ACK (Nagle plus the
    // client's delayed ACK would add 40 ms to every call).
    let _ = tcp.set_nodelay(true);
    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    let mut r = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    while let Ok(true) = one_request(&mut r, &*handler) {}
    let s = r.get_mut();
    if handler.tls_close() == TlsClose::Clean {
        s.conn.send_close_notify();
        let _ = s.flush();
    }
    let _ = s.sock.shutdown(std::net::Shutdown::Write);
}

fn write_response(r: &mut BufReader<Tls>, resp: &Response, close: bool) -> std::io::Result<()> {
    // `$reqstate->{keep_alive} = 0 if ($code >= 400)`; no content, no Content-Length.
    let close = close || resp.status >= 400;
    let length = if resp.body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", resp.body.len())
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nServer: pve-api-daemon/3.0\r\nContent-Type: {}\r\n{length}Connection: {}\r\n\r\n",
        resp.status,
        resp.reason,
        resp.content_type,
        if close { "close" } else { "Keep-Alive" }
    );
    let mut all = head.into_bytes();
    all.extend_from_slice(&resp.body);
    let s = r.get_mut();
    s.write_all(&all)?;
    s.flush()
}

/// Ok(true): keep the connection.
fn one_request(r: &mut BufReader<Tls>, h: &dyn Handler) -> std::io::Result<bool> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(false);
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Ok(false);
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        write_response(
            r,
            &Response::text(501, "chunked transfer encoding not supported", ""),
            true,
        )?;
        return Ok(false);
    }
    let len: usize = get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if len > 0 && (method == "GET" || method == "DELETE") {
        let msg = format!("Unexpected content for method '{method}'");
        write_response(r, &Response::text(501, &msg, ""), true)?;
        return Ok(false);
    }
    match h.early(&method, &target, &headers) {
        Early::Respond(resp) => {
            // Drain the body so the client sees the answer, then close.
            let mut sink = vec![0u8; len.min(64 << 20)];
            let _ = r.read_exact(&mut sink);
            write_response(r, &resp, true)?;
            return Ok(false);
        }
        Early::DropAfter(n) => {
            let mut buf = vec![0u8; n.min(len)];
            let _ = r.read_exact(&mut buf);
            let s = r.get_mut();
            let _ = s.sock.shutdown(std::net::Shutdown::Both);
            return Ok(false);
        }
        Early::Continue => {}
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    match h.handle(Request {
        method,
        target,
        headers,
        body,
    }) {
        Outcome::Respond(resp) => {
            let close = close || resp.status >= 400;
            write_response(r, &resp, close)?;
            Ok(!close)
        }
        Outcome::Drop => {
            let _ = r.get_mut().sock.shutdown(std::net::Shutdown::Both);
            Ok(false)
        }
    }
}
