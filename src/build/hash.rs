//! Hashing helpers: sha256 of bytes, files and directory trees, npm's SRI
//! integrity strings, and HMAC-SHA256 for deriving build keys.
//!
//! Invariant: a tree hash depends only on relative paths (sorted bytewise),
//! file types, the executable bit, symlink targets and file contents — not
//! on mtimes, owners or where the tree lives — so it is a stable cache key.

use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256, Sha512};

pub use crate::digest::{hex, sha256_file, sha256_file_size, sha256_hex};

/// Both digests a registry tarball is checked against.
#[derive(Default)]
pub struct DualHasher {
    sha256: Sha256,
    sha512: Sha512,
}

impl DualHasher {
    pub fn update(&mut self, b: &[u8]) {
        self.sha256.update(b);
        self.sha512.update(b);
    }

    /// (sha256 hex, `sha512-<base64>` integrity).
    pub fn finish(self) -> (String, String) {
        let sri = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(self.sha512.finalize())
        );
        (hex(&self.sha256.finalize()), sri)
    }
}

/// HMAC-SHA256 (RFC 2104), for deriving keys from the build secret.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const B: usize = 64;
    let mut k = [0u8; B];
    if key.len() > B {
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

/// A stable hash of a directory tree; `skip` names top-level entries to leave out.
pub fn tree_hash(root: &Path, skip: &[&str]) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut stack = vec![std::path::PathBuf::new()];
    let mut entries = Vec::new();
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name();
            if rel.as_os_str().is_empty() && skip.iter().any(|s| name == *s) {
                continue;
            }
            let r = rel.join(&name);
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(r.clone());
            }
            entries.push((r, ft));
        }
    }
    entries.sort_by(|a, b| {
        a.0.as_os_str()
            .as_encoded_bytes()
            .cmp(b.0.as_os_str().as_encoded_bytes())
    });
    for (rel, ft) in entries {
        use std::os::unix::fs::PermissionsExt;
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        let full = root.join(&rel);
        if ft.is_symlink() {
            h.update(b"l");
            h.update(std::fs::read_link(&full)?.as_os_str().as_encoded_bytes());
        } else if ft.is_dir() {
            h.update(b"d");
        } else {
            let exec = std::fs::metadata(&full)?.permissions().mode() & 0o111 != 0;
            h.update(if exec { b"x" } else { b"f" });
            h.update(sha256_file(&full)?.as_bytes());
        }
        h.update([0]);
    }
    Ok(hex(&h.finalize()))
}

/// Check an npm SRI string (`sha512-…`, or several separated by spaces) against data digests.
pub fn integrity_matches(expected: &str, sha512_sri: &str) -> bool {
    expected.split_whitespace().any(|e| e == sha512_sri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn dual_hasher_gives_sri() {
        let mut h = DualHasher::default();
        h.update(b"abc");
        let (s256, sri) = h.finish();
        assert_eq!(
            s256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sri.starts_with("sha512-3a81oZNherrMQXNJriBBMRLm"), "{sri}");
        assert!(integrity_matches(&format!("sha1-xyz {sri}"), &sri));
    }

    #[test]
    fn tree_hash_ignores_mtime_and_location_but_not_content() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::create_dir(d.join("sub")).unwrap();
            std::fs::write(d.join("sub/x"), "1").unwrap();
            std::fs::write(d.join("node_modules"), "skip me").unwrap();
        }
        std::fs::write(b.path().join("node_modules"), "other").unwrap();
        let ha = tree_hash(a.path(), &["node_modules"]).unwrap();
        assert_eq!(ha, tree_hash(b.path(), &["node_modules"]).unwrap());
        std::fs::write(b.path().join("sub/x"), "2").unwrap();
        assert_ne!(ha, tree_hash(b.path(), &["node_modules"]).unwrap());
    }
}
