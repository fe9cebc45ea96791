//! File and byte digests: sha256 in lowercase hex, streamed from disk.
//!
//! The bottom of the library beside `exec`: the build hashes what it writes,
//! the fleet hashes the templates it finds, the local backend checks what it
//! stores. Lowercase hex everywhere, so digests compare as strings.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_file_size(path).map(|(sha, _)| sha)
}

/// sha256 of a file and the number of bytes hashed, in one streamed read.
pub fn sha256_file_size(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex(&h.finalize()), size))
}
