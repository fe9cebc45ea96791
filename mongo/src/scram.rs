//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as MongoDB speaks it: `saslStart` /
//! `saslContinue` against the `admin` database, the password used as is
//! (SASLprep is the identity on printable ASCII, the only passwords this
//! client accepts; haimg's store generates base64url ones).
//!
//! [`Client`] is the pure conversation (client-first, client-final, server
//! signature check); [`authenticate`] runs it over a [`Conn`]. HMAC-SHA-256
//! and PBKDF2 are written out here over `sha2` (a few dozen lines) instead of
//! two more crates, because the init is a static binary under 2 MiB.
//!
//! Invariant: the server's signature (`v=`) is checked before the
//! conversation counts as done, so a peer that does not know the password's
//! keys cannot pass for the server; a server nonce that does not start with
//! the client's, fewer than 4096 iterations (RFC 7677 §4's floor) or a
//! malformed message is an error that never shows a password or proof.

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document};
use sha2::{Digest, Sha256};

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

pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
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
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
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
