//! The few bytes of the MongoDB wire protocol haimg needs: OP_MSG
//! (opCode 2013) with one body section (kind 0), over a blocking TCP stream
//! with timeouts. Documents are encoded and decoded by the `bson` crate.
//! Every command goes to the `admin` database; authentication is
//! [`crate::scram`] over the same connection; no TLS, no compression.
//!
//! Layout (MongoDB wire protocol, OP_MSG): a 16-byte header
//! (`messageLength`, `requestID`, `responseTo`, `opCode`, little-endian
//! int32), `flagBits` (uint32), then sections; kind 0 is one BSON document.
//! If `flagBits` has `checksumPresent` (bit 0) a CRC-32C trails the message;
//! the client never asks for one and skips it when present. Replies larger
//! than [`MAX_MESSAGE`] are refused, and a reply must answer the request just
//! sent (`responseTo`).
//!
//! [`Conn::connect`] dials the address itself; [`Conn::from_stream`] takes a
//! stream the caller connected (from inside a network namespace, bound to a
//! source address), so this crate needs nothing beyond `std`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bson::{Bson, Document};

pub const OP_MSG: i32 = 2013;
/// The server's maxMessageSizeBytes default.
pub const MAX_MESSAGE: usize = 48_000_000;
const CHECKSUM_PRESENT: u32 = 1;
const MORE_TO_COME: u32 = 1 << 1;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{addr}: {error}")]
    Io {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("{addr}: malformed reply: {detail}")]
    Malformed { addr: SocketAddr, detail: String },
    #[error("{addr}: bson: {detail}")]
    Bson { addr: SocketAddr, detail: String },
    /// No (whole) reply within the read timeout.
    #[error("{addr}: no reply within {}s", .after.as_secs_f64())]
    Timeout { addr: SocketAddr, after: Duration },
}

impl WireError {
    /// The server closed or reset the connection (rather than the client
    /// timing out or the connect failing). After a request was sent this
    /// means the server dropped the connection while handling it.
    pub fn closed_by_peer(&self) -> bool {
        matches!(self, WireError::Io { error, .. } if matches!(
            error.kind(),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ))
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            WireError::Io { addr, .. }
            | WireError::Malformed { addr, .. }
            | WireError::Bson { addr, .. }
            | WireError::Timeout { addr, .. } => *addr,
        }
    }
}

/// Encode `cmd` (with `$db` added) as one OP_MSG.
pub fn encode(request_id: i32, cmd: &Document, db: &str) -> Result<Vec<u8>, String> {
    let mut doc = cmd.clone();
    doc.insert("$db", db);
    frame(request_id, 0, &doc)
}

/// Encode a server's reply to request `response_to` (what a replay server sends).
pub fn encode_reply(
    request_id: i32,
    response_to: i32,
    reply: &Document,
) -> Result<Vec<u8>, String> {
    frame(request_id, response_to, reply)
}

fn frame(request_id: i32, response_to: i32, doc: &Document) -> Result<Vec<u8>, String> {
    let body = doc.to_vec().map_err(|e| e.to_string())?;
    let len = 16 + 4 + 1 + body.len();
    let len32 = i32::try_from(len).map_err(|_| format!("{len} bytes do not fit an OP_MSG"))?;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&len32.to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&response_to.to_le_bytes());
    out.extend_from_slice(&OP_MSG.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The parts of a decoded OP_MSG.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub request_id: i32,
    pub response_to: i32,
    pub flags: u32,
    pub body: Document,
}

/// Decode one whole OP_MSG (header included). The bytes come from whatever
/// answers on a peer's port, so every length in them is checked before it is
/// used: a negative or oversized section size, a length field that disagrees
/// with the bytes, a truncated section, two bodies: all are errors, never a
/// slice out of bounds.
pub fn decode(bytes: &[u8]) -> Result<Msg, String> {
    if bytes.len() < 21 {
        return Err(format!("{} bytes is shorter than an OP_MSG", bytes.len()));
    }
    // Invariant: every offset read below is at most 16 + 4 <= bytes.len().
    let i32_at =
        |o: usize| i32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let len = i32_at(0);
    if usize::try_from(len).ok() != Some(bytes.len()) {
        return Err(format!("length field {len} but {} bytes", bytes.len()));
    }
    let op = i32_at(12);
    if op != OP_MSG {
        return Err(format!("opCode {op}, expected {OP_MSG} (OP_MSG)"));
    }
    let flags = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let end = if flags & CHECKSUM_PRESENT != 0 {
        bytes
            .len()
            .checked_sub(4)
            .filter(|e| *e >= 21)
            .ok_or("checksum flag without room for one")?
    } else {
        bytes.len()
    };
    let mut body = None;
    let mut off = 20;
    while off < end {
        let kind = bytes[off];
        off += 1;
        let raw = bytes
            .get(off..off + 4)
            .filter(|_| off + 4 <= end)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or("truncated section")?;
        // The size counts its own 4 bytes; a BSON document is at least 5.
        let stop = usize::try_from(raw)
            .ok()
            .filter(|size| *size >= 5)
            .and_then(|size| off.checked_add(size))
            .filter(|stop| *stop <= end)
            .ok_or_else(|| format!("section size {raw} does not fit"))?;
        match kind {
            0 if body.is_some() => return Err("two body sections".into()),
            0 => {
                let doc = Document::from_reader(&bytes[off..stop]).map_err(|e| e.to_string())?;
                body = Some(doc);
            }
            1 => {} // document sequences: never sent by a server in a command reply
            k => return Err(format!("unknown section kind {k}")),
        }
        off = stop;
    }
    Ok(Msg {
        request_id: i32_at(4),
        response_to: i32_at(8),
        flags,
        body: body.ok_or("no body section")?,
    })
}

/// One connection to a mongod.
pub struct Conn {
    addr: SocketAddr,
    stream: TcpStream,
    next_id: i32,
    read_timeout: Duration,
}

impl Conn {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, WireError> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|error| WireError::Io { addr, error })?;
        Conn::from_stream(addr, stream, timeout)
    }

    /// Use a stream the caller connected to `addr`; `timeout` bounds every
    /// read and write from here on.
    pub fn from_stream(
        addr: SocketAddr,
        stream: TcpStream,
        timeout: Duration,
    ) -> Result<Conn, WireError> {
        let io = |error| WireError::Io { addr, error };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        Ok(Conn {
            addr,
            stream,
            next_id: 1,
            read_timeout: timeout,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replies can take longer than a connect (replSetInitiate checks every
    /// member; replSetStepDown waits for a secondary to catch up).
    pub fn set_read_timeout(&mut self, t: Duration) {
        if self.stream.set_read_timeout(Some(t)).is_ok() {
            self.read_timeout = t;
        }
    }

    /// Run `cmd` against the admin database and return the reply document
    /// (whatever its `ok`; see [`ok`]).
    pub fn command(&mut self, cmd: &Document) -> Result<Document, WireError> {
        let id = self.send(cmd)?;
        self.receive(id)
    }

    /// Send `cmd` to the admin database; the request id to [`Conn::receive`] the reply with.
    pub fn send(&mut self, cmd: &Document) -> Result<i32, WireError> {
        let addr = self.addr;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let bytes = encode(id, cmd, "admin").map_err(|detail| WireError::Bson { addr, detail })?;
        self.stream
            .write_all(&bytes)
            .map_err(|error| WireError::Io { addr, error })?;
        Ok(id)
    }

    /// Read the reply to request `id`.
    pub fn receive(&mut self, id: i32) -> Result<Document, WireError> {
        let (addr, after) = (self.addr, self.read_timeout);
        // A read timeout shows as WouldBlock (or TimedOut): say what it means.
        let io = |error: std::io::Error| match error.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => WireError::Timeout { addr, after },
            _ => WireError::Io { addr, error },
        };
        let mut head = [0u8; 4];
        self.stream.read_exact(&mut head).map_err(io)?;
        let len = i32::from_le_bytes(head);
        if len < 21 || len as usize > MAX_MESSAGE {
            return Err(WireError::Malformed {
                addr,
                detail: format!("message length {len}"),
            });
        }
        let mut buf = vec![0u8; len as usize];
        buf[..4].copy_from_slice(&head);
        self.stream.read_exact(&mut buf[4..]).map_err(io)?;
        let msg = decode(&buf).map_err(|detail| WireError::Malformed { addr, detail })?;
        if msg.response_to != id {
            return Err(WireError::Malformed {
                addr,
                detail: format!(
                    "reply to request {} while waiting for {id}",
                    msg.response_to
                ),
            });
        }
        if msg.flags & MORE_TO_COME != 0 {
            return Err(WireError::Malformed {
                addr,
                detail: "moreToCome set on a command reply".into(),
            });
        }
        Ok(msg.body)
    }
}

/// A reply's `ok`: servers send 1.0 (double), drivers' fixtures also 1 (int) or true.
pub fn ok(reply: &Document) -> bool {
    match reply.get("ok") {
        Some(Bson::Double(d)) => *d == 1.0,
        Some(Bson::Int32(i)) => *i == 1,
        Some(Bson::Int64(i)) => *i == 1,
        Some(Bson::Boolean(b)) => *b,
        _ => false,
    }
}

/// `(code, codeName, errmsg)` of a failed reply.
pub fn error_of(reply: &Document) -> (i32, String, String) {
    let code = match reply.get("code") {
        Some(Bson::Int32(c)) => *c,
        Some(Bson::Int64(c)) => *c as i32,
        Some(Bson::Double(c)) => *c as i32,
        _ => 0,
    };
    let s = |k| reply.get_str(k).unwrap_or("").to_string();
    (code, s("codeName"), s("errmsg"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn encodes_an_op_msg() {
        let b = encode(7, &doc! {"hello": 1}, "admin").unwrap();
        assert_eq!(
            i32::from_le_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(i32::from_le_bytes(b[4..8].try_into().unwrap()), 7);
        assert_eq!(i32::from_le_bytes(b[12..16].try_into().unwrap()), OP_MSG);
        assert_eq!(&b[16..21], &[0, 0, 0, 0, 0]);
        let m = decode(&b).unwrap();
        assert_eq!(m.body, doc! {"hello": 1, "$db": "admin"});
    }

    #[test]
    fn skips_a_trailing_checksum() {
        let mut b = encode(1, &doc! {"ok": 1.0}, "admin").unwrap();
        b[16] = 1; // checksumPresent
        b.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let len = b.len() as i32;
        b[0..4].copy_from_slice(&len.to_le_bytes());
        assert!(ok(&decode(&b).unwrap().body));
    }

    #[test]
    fn malformed_replies() {
        let good = encode(1, &doc! {"ok": 1.0}, "admin").unwrap();
        assert_eq!(
            decode(&good[..10]).unwrap_err(),
            "10 bytes is shorter than an OP_MSG"
        );
        let mut wrong_op = good.clone();
        wrong_op[12..16].copy_from_slice(&1i32.to_le_bytes());
        assert_eq!(
            decode(&wrong_op).unwrap_err(),
            "opCode 1, expected 2013 (OP_MSG)"
        );
        let mut short = good.clone();
        short.pop();
        assert!(decode(&short).unwrap_err().starts_with("length field"));
        let mut bad_kind = good;
        bad_kind[20] = 9;
        assert_eq!(decode(&bad_kind).unwrap_err(), "unknown section kind 9");
    }

    /// A 26-byte reply whose section size is negative: `as usize` made it
    /// huge, `off + size` wrapped and the slice panicked (PID 1 aborted).
    #[test]
    fn negative_and_oversized_section_sizes() {
        let frame = |size: i32| {
            let mut b = Vec::new();
            b.extend_from_slice(&26i32.to_le_bytes());
            b.extend_from_slice(&1i32.to_le_bytes());
            b.extend_from_slice(&1i32.to_le_bytes());
            b.extend_from_slice(&OP_MSG.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.push(0);
            b.extend_from_slice(&size.to_le_bytes());
            b.push(0);
            b
        };
        for size in [-1, i32::MIN, -21, 4, 6, i32::MAX] {
            let b = frame(size);
            assert_eq!(b.len(), 26);
            assert_eq!(
                decode(&b).unwrap_err(),
                format!("section size {size} does not fit")
            );
        }
        let mut neg_len = frame(5);
        neg_len[0..4].copy_from_slice(&(-26i32).to_le_bytes());
        assert_eq!(
            decode(&neg_len).unwrap_err(),
            "length field -26 but 26 bytes"
        );
        // A section size field cut off by the checksum.
        let mut cut = frame(5);
        cut.truncate(23);
        cut[16] = 1;
        cut.extend_from_slice(&[0; 4]);
        cut[0..4].copy_from_slice(&27i32.to_le_bytes());
        assert_eq!(decode(&cut).unwrap_err(), "truncated section");
    }

    #[test]
    fn two_bodies_are_refused() {
        let one = encode_reply(1, 1, &doc! {"ok": 1.0}).unwrap();
        let mut two = one.clone();
        two.extend_from_slice(&one[20..]);
        let len = two.len() as i32;
        two[0..4].copy_from_slice(&len.to_le_bytes());
        assert_eq!(decode(&two).unwrap_err(), "two body sections");
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
