//! The local template store (`<state>/templates/`) and unpacking a template
//! into a rootfs.
//!
//! Upload copies while hashing and only renames the copy into place when its
//! sha256 matches, so the store never holds a file that does not match its
//! name's promise; an upload of content already there is a verified no-op.
//! File names follow Proxmox's rules (`[A-Za-z0-9._-]`, `.tar`, `.tar.gz`,
//! `.tar.xz`, `.tar.zst`, `.tar.bz2`). Extraction runs GNU tar with the flags
//! Proxmox uses (`PVE::LXC::Create::restore_tar_archive_command`), as host
//! root: the rootfs keeps the archive's 0..65535 owners and unprivileged CTs
//! see them through the idmapped mount.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::names::hex;
use super::LocalError;
use crate::exec::Cmd;

pub const EXTENSIONS: [&str; 5] = [".tar.zst", ".tar.gz", ".tar.xz", ".tar.bz2", ".tar"];

/// Proxmox's `vztmpl` file name check (after its normalisation, which we
/// refuse to apply silently).
pub fn check_filename(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!(
            "{name:?} is not a valid template file name (use only A-Z a-z 0-9 . _ -)"
        ));
    }
    if !EXTENSIONS
        .iter()
        .any(|e| name.len() > e.len() && name.to_ascii_lowercase().ends_with(e))
    {
        return Err(format!(
            "{name:?}: wrong file extension (expected one of {})",
            EXTENSIONS.join(", ")
        ));
    }
    Ok(())
}

/// sha256 of a file, lowercase hex (the build's streaming hasher).
pub use crate::digest::sha256_file;

/// Copy `src` to `dst` through a temp file, hashing on the way; the copy is
/// renamed into place only when its sha256 is `expected`.
pub fn copy_verified(src: &Path, dst: &Path, expected: &str) -> Result<u64, LocalError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |error| LocalError::Io {
            action,
            path,
            error,
        }
    };
    let tmp = dst.with_file_name(format!(
        ".{}.partial",
        dst.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut input = std::fs::File::open(src).map_err(io("open", src))?;
    let mut out = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(io("read", src))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io("write", &tmp))?;
        size += n as u64;
    }
    out.sync_all().map_err(io("sync", &tmp))?;
    let actual = hex(&h.finalize());
    if !actual.eq_ignore_ascii_case(expected) {
        let _ = std::fs::remove_file(&tmp);
        return Err(LocalError::Checksum {
            path: src.to_path_buf(),
            expected: expected.to_ascii_lowercase(),
            actual,
        });
    }
    std::fs::rename(&tmp, dst).map_err(io("rename", &tmp))?;
    Ok(size)
}

/// The tar flag for a template's compression.
fn compression_flag(template: &Path) -> Option<&'static str> {
    let name = template.file_name()?.to_string_lossy().to_ascii_lowercase();
    [
        (".tar.zst", "--zstd"),
        (".tar.gz", "-z"),
        (".tar.xz", "-J"),
        (".tar.bz2", "-j"),
    ]
    .into_iter()
    .find(|(ext, _)| name.ends_with(ext))
    .map(|(_, flag)| flag)
}

/// The tar invocation Proxmox uses to unpack a template into `rootfs`.
pub fn extract_cmd(template: &Path, rootfs: &Path, timeout: Duration) -> Cmd {
    let mut c = Cmd::new("tar", timeout).args(["xpf".to_string(), path_str(template)]);
    if let Some(flag) = compression_flag(template) {
        c = c.arg(flag);
    }
    c.args([
        "--totals",
        "--one-file-system",
        "-p",
        "--sparse",
        "--numeric-owner",
        "--acls",
        "--xattrs",
        "--xattrs-include=user.*",
        "--xattrs-include=security.capability",
        "-C",
    ])
    .arg(path_str(rootfs))
    .args(["--skip-old-files", "--anchored", "--exclude", "./dev/*"])
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Files in the store, sorted by name.
pub fn list(store: &Path) -> Result<Vec<(String, PathBuf, u64)>, LocalError> {
    let rd = match std::fs::read_dir(store) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(LocalError::Io {
                action: "read",
                path: store.to_path_buf(),
                error,
            })
        }
    };
    let mut v = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_file() && !name.starts_with('.') && check_filename(&name).is_ok() {
            v.push((name, e.path(), meta.len()));
        }
    }
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_like_proxmox() {
        assert!(check_filename("haimg-lb_1.0.0_amd64.tar.zst").is_ok());
        assert!(check_filename("x.TAR.GZ").is_ok());
        assert!(check_filename("x.tar").is_ok());
        insta::assert_snapshot!(check_filename("x.tgz").unwrap_err(), @r#""x.tgz": wrong file extension (expected one of .tar.zst, .tar.gz, .tar.xz, .tar.bz2, .tar)"#);
        insta::assert_snapshot!(check_filename("a b.tar").unwrap_err(), @r#""a b.tar" is not a valid template file name (use only A-Z a-z 0-9 . _ -)"#);
        assert!(check_filename(".tar").is_err());
    }

    #[test]
    fn copy_checks_the_hash() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("t.tar.zst");
        std::fs::write(&src, b"hello").unwrap();
        let good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(sha256_file(&src).unwrap(), good);
        let dst = d.path().join("store.tar.zst");
        let e = copy_verified(&src, &dst, &"0".repeat(64)).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("sha256 is {good}, expected 0000")),
            "{e}"
        );
        assert!(!dst.exists());
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
        assert_eq!(copy_verified(&src, &dst, &good.to_uppercase()).unwrap(), 5);
        assert_eq!(std::fs::read(&dst).unwrap(), b"hello");
    }

    #[test]
    fn extraction_command_is_proxmoxs() {
        let c = extract_cmd(
            Path::new("/s/templates/haimg-lb_1.0.0_amd64.tar.zst"),
            Path::new("/s/lxc/c/rootfs"),
            Duration::from_secs(600),
        );
        insta::assert_snapshot!(c.argv(), @"tar xpf /s/templates/haimg-lb_1.0.0_amd64.tar.zst --zstd --totals --one-file-system -p --sparse --numeric-owner --acls --xattrs '--xattrs-include=user.*' --xattrs-include=security.capability -C /s/lxc/c/rootfs --skip-old-files --anchored --exclude './dev/*'");
    }
}
