//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as MongoDB speaks it: `saslStart` /
//! `saslContinue` against the `admin` database, the password used as is
//! (SASLprep is the identity on printable ASCII, the only passwords this
//! client accepts; haimg's store generates base64url ones).
//!
//! [`Client`] is the pure conversation (client-first, client-final, server
//! signature check); [`authenticate`] runs it over a [`Conn`]. SHA-256,
//! HMAC-SHA-256 and PBKDF2 are written out here (about 80 lines, checked
//! against FIPS 180-2, RFC 4231 and RFC 7677 vectors and against the `sha2`
//! crate in the tests) instead of three crates: the init is a static binary
//! under 2 MiB, and `sha2` with its CPU-dispatched backends cost it 34 KB.
//!
//! Invariant: the server's signature (`v=`) is checked before the
//! conversation counts as done, so a peer that does not know the password's
//! keys cannot pass for the server; a server nonce that does not start with
//! the client's, fewer than 4096 iterations (RFC 7677 §4's floor) or a
//! malformed message is an error that never shows a password or proof.

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document};

use crate::wire::{self, Conn, WireError};

pub const MECHANISM: &str = "SCRAM-SHA-256";
/// RFC 7677 §4: at least 4096 iterations.
pub const MIN_ITERATIONS: u32 = 4096;
/// More would make a hostile server's reply an expensive PBKDF2 for the init.
pub const MAX_ITERATIONS: u32 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("authentication of {user} failed: {detail}")]
    Refused { user: String, detail: String },
    #[error("SCRAM conversation with {user}: {detail}")]
    Protocol { user: String, detail: String },
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// SHA-256 (FIPS 180-4) over the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut block = [0u8; 64];
    let mut fill = 0;
    let mut compress = |block: &[u8; 64]| {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [
                t1.wrapping_add(t2),
                v[0],
                v[1],
                v[2],
                v[3].wrapping_add(t1),
                v[4],
                v[5],
                v[6],
            ];
        }
        for (x, y) in h.iter_mut().zip(v) {
            *x = x.wrapping_add(y);
        }
    };
    let bits = (len as u64).wrapping_mul(8).to_be_bytes();
    let pad_len = if len % 64 < 56 {
        56 - len % 64
    } else {
        120 - len % 64
    };
    let pad = [0x80u8];
    let zeros = [0u8; 64];
    let tail: [&[u8]; 3] = [&pad, &zeros[..pad_len - 1], &bits];
    for b in parts.iter().chain(tail.iter()).flat_map(|p| p.iter()) {
        block[fill] = *b;
        fill += 1;
        if fill == 64 {
            compress(&block);
            fill = 0;
        }
    }
    let mut out = [0u8; 32];
    for (o, x) in out.chunks_mut(4).zip(h) {
        o.copy_from_slice(&x.to_be_bytes());
    }
    out
}

pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha256(&[key]));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner = sha256(&[&k.map(|b| b ^ 0x36), msg]);
    sha256(&[&k.map(|b| b ^ 0x5c), &inner])
}

/// PBKDF2-HMAC-SHA-256 with one output block (RFC 5802's `Hi`).
pub fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (ci, chunk) in s.chunks(4).enumerate() {
        let last = ci + 1 == s.len() / 4;
        let pad = chunk.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for (i, b) in chunk[..4 - pad].iter().enumerate() {
            let v = B64.iter().position(|x| x == b)? as u32;
            n |= v << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// RFC 5802 §5.1: `=` and `,` in a user name are escaped.
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// One client side of a conversation.
pub struct Client<'a> {
    user: &'a str,
    password: &'a str,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<[u8; 32]>,
}

impl<'a> Client<'a> {
    /// `nonce`: printable ASCII without `,` (the caller draws it from the OS).
    pub fn new(user: &'a str, password: &'a str, nonce: &str) -> Result<Client<'a>, ScramError> {
        if !password.bytes().all(|b| (0x20..0x7f).contains(&b)) || password.is_empty() {
            return Err(ScramError::Protocol {
                user: user.into(),
                detail: "the password must be printable ASCII (no SASLprep here)".into(),
            });
        }
        Ok(Client {
            user,
            password,
            client_first_bare: format!("n={},r={nonce}", saslname(user)),
            nonce: nonce.to_string(),
            server_signature: None,
        })
    }

    /// `n,,n=user,r=nonce`: no channel binding.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    fn protocol(&self, detail: impl Into<String>) -> ScramError {
        ScramError::Protocol {
            user: self.user.into(),
            detail: detail.into(),
        }
    }

    /// Answer the server-first message with client-final (carrying the proof).
    pub fn client_final(&mut self, server_first: &str) -> Result<String, ScramError> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("m", _)) => return Err(self.protocol("the server asks for an extension")),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(self.protocol("server-first lacks r=, s= or i="));
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(self.protocol("the server nonce does not extend the client's"));
        }
        let salt = b64_decode(salt).ok_or_else(|| self.protocol("the salt is not base64"))?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|i| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(i))
            .ok_or_else(|| {
                self.protocol(format!(
                    "iteration count {iterations:?} is not {MIN_ITERATIONS} to {MAX_ITERATIONS}"
                ))
            })?;
        let salted = hi(self.password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = sha256(&[&client_key]);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        let server_key = hmac(&salted, b"Server Key");
        self.server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", b64_encode(&proof)))
    }

    /// Check server-final (`v=…`); an `e=…` is the server's refusal.
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), ScramError> {
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(ScramError::Refused {
                user: self.user.into(),
                detail: e.into(),
            });
        }
        let expected = self
            .server_signature
            .ok_or_else(|| self.protocol("server-final before server-first"))?;
        let v = server_final
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .and_then(b64_decode)
            .ok_or_else(|| self.protocol("server-final lacks v="))?;
        if v != expected {
            return Err(
                self.protocol("the server's signature is wrong: it does not know this user's keys")
            );
        }
        Ok(())
    }
}

/// A nonce from the OS: 24 random bytes, base64.
pub fn os_nonce() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b64_encode(&b))
}

fn payload(reply: &Document) -> Option<String> {
    match reply.get("payload") {
        Some(Bson::Binary(b)) => String::from_utf8(b.bytes.clone()).ok(),
        _ => None,
    }
}

fn bin(s: &str) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: s.as_bytes().to_vec(),
    })
}

/// Authenticate `conn` as `user` (an `admin` database user) with SCRAM-SHA-256.
pub fn authenticate(conn: &mut Conn, user: &str, password: &str) -> Result<(), ScramError> {
    let nonce = os_nonce().map_err(|e| ScramError::Protocol {
        user: user.into(),
        detail: format!("/dev/urandom: {e}"),
    })?;
    authenticate_with_nonce(conn, user, password, &nonce)
}

/// [`authenticate`] with a given nonce (tests replay a recorded conversation).
pub fn authenticate_with_nonce(
    conn: &mut Conn,
    user: &str,
    password: &str,
    nonce: &str,
) -> Result<(), ScramError> {
    let mut c = Client::new(user, password, nonce)?;
    let refused = |reply: &Document| {
        let (code, name, msg) = wire::error_of(reply);
        ScramError::Refused {
            user: user.into(),
            detail: format!("{code} {name}: {msg}"),
        }
    };
    let first = conn.command(&doc! {
        "saslStart": 1,
        "mechanism": MECHANISM,
        "payload": bin(&c.client_first()),
        "autoAuthorize": 1,
        "options": {"skipEmptyExchange": true},
    })?;
    if !wire::ok(&first) {
        return Err(refused(&first));
    }
    let id = first
        .get("conversationId")
        .cloned()
        .ok_or_else(|| c.protocol("saslStart reply lacks conversationId"))?;
    let server_first =
        payload(&first).ok_or_else(|| c.protocol("saslStart reply lacks a payload"))?;
    let fin = c.client_final(&server_first)?;
    let second = conn.command(&doc! {
        "saslContinue": 1,
        "conversationId": id.clone(),
        "payload": bin(&fin),
    })?;
    if !wire::ok(&second) {
        return Err(refused(&second));
    }
    let server_final =
        payload(&second).ok_or_else(|| c.protocol("saslContinue reply lacks a payload"))?;
    c.verify_server_final(&server_final)?;
    // Without skipEmptyExchange (servers before 4.4) one empty round ends it.
    if !second.get_bool("done").unwrap_or(false) {
        let third = conn.command(&doc! {
            "saslContinue": 1,
            "conversationId": id,
            "payload": bin(""),
        })?;
        if !wire::ok(&third) {
            return Err(refused(&third));
        }
        if !third.get_bool("done").unwrap_or(false) {
            return Err(c.protocol("the server did not end the conversation"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 §3: user "user", password "pencil".
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    #[test]
    fn rfc7677_conversation() {
        let mut c = Client::new("user", "pencil", NONCE).unwrap();
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.client_final(SERVER_FIRST).unwrap(), CLIENT_FINAL);
        c.verify_server_final(SERVER_FINAL).unwrap();
        let bad = c
            .verify_server_final("v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .unwrap_err();
        assert_eq!(
            bad.to_string(),
            "SCRAM conversation with user: the server's signature is wrong: it does not know this user's keys"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_fips_vectors_and_the_sha2_crate() {
        assert_eq!(
            hex(&sha256(&[b"abc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(&[
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            ])),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(&sha256(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        use sha2::Digest as _;
        for n in 0..300usize {
            let v: Vec<u8> = (0..n).map(|i| (i * 31 + n) as u8).collect();
            let (a, b) = v.split_at(n / 3);
            assert_eq!(
                sha256(&[a, b]),
                <[u8; 32]>::from(sha2::Sha256::digest(&v)),
                "{n}"
            );
        }
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        let mac = hmac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            mac.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..40u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(b64_decode(&b64_encode(&v)).unwrap(), v);
        }
        assert_eq!(b64_encode(b"n,,"), "biws");
        assert!(b64_decode("bi=s").is_none());
        assert!(b64_decode("abc").is_none());
    }

    #[test]
    fn hostile_server_first() {
        let mut c = Client::new("user", "pencil", NONCE).unwrap();
        let msg = |s: &str, c: &mut Client| c.client_final(s).unwrap_err().to_string();
        assert_eq!(
            msg("r=other,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", &mut c),
            "SCRAM conversation with user: the server nonce does not extend the client's"
        );
        assert_eq!(
            msg(
                "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1",
                &mut c
            ),
            "SCRAM conversation with user: iteration count \"1\" is not 4096 to 1000000"
        );
        assert_eq!(
            msg("r=rOprNGfwEbeRWgbNEkqOx,i=4096", &mut c),
            "SCRAM conversation with user: server-first lacks r=, s= or i="
        );
        assert_eq!(
            c.verify_server_final("e=invalid-proof")
                .unwrap_err()
                .to_string(),
            "authentication of user failed: invalid-proof"
        );
    }

    #[test]
    fn user_names_are_escaped() {
        let c = Client::new("a=b,c", "pw", "n").unwrap();
        assert_eq!(c.client_first(), "n,,n=a=3Db=2Cc,r=n");
        assert!(Client::new("u", "pässword", "n").is_err());
    }
}
