//! The deterministic template writer: a root filesystem directory in, a
//! `.tar.zst` and its text manifest out.
//!
//! Invariants (what makes two builds of the same tree byte-identical):
//! member names are `./`-prefixed (directories end in `/`) and sorted
//! bytewise; mtimes are clamped to `SOURCE_DATE_EPOCH`; owners are numeric
//! (no user or group names); device nodes, FIFOs and sockets are left out;
//! only `security.capability` and `user.*` extended attributes are kept (PAX
//! `SCHILY.xattr.*` records, sorted); hard links become link members pointing
//! at the first name in sort order; zstd runs with fixed parameters, and its
//! multi-threaded output does not depend on the worker count.
//!
//! Headers are GNU tar headers (GNU `L`/`K` records for long names), built
//! with the `tar` crate's [`tar::Header`]; the crate's `Builder` is not used
//! because it strips the `./` prefix.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::hash::hex;

/// Extended attributes a template may carry (Proxmox extracts exactly these).
pub fn xattr_allowed(name: &str) -> bool {
    name == "security.capability" || name.starts_with("user.")
}

#[derive(Debug, Clone, Copy)]
pub struct PackOptions {
    pub source_date_epoch: u64,
    pub zstd_level: i32,
    /// zstd worker threads (0 = single-threaded; the output differs from ≥1).
    pub workers: u32,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub manifest: String,
    /// sha256 of the `.tar.zst`.
    pub sha256: String,
    pub compressed_size: u64,
    pub tar_size: u64,
    pub entries: usize,
    /// Device nodes, FIFOs and sockets left out.
    pub skipped_special: Vec<String>,
    /// Extended attributes dropped (`path: name`).
    pub dropped_xattrs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("failed to read {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("failed to write {path}: {error}")]
    Write { path: PathBuf, error: io::Error },
}

/// One member to write, found by [`walk`].
#[derive(Debug, Clone)]
pub struct Member {
    /// `./etc/`, `./etc/hosts`.
    pub name: Vec<u8>,
    pub path: PathBuf,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: u64,
    pub dev_ino: (u64, u64),
    pub nlink: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Special,
}

/// Every entry below `root`, sorted bytewise by member name.
pub fn walk(root: &Path) -> Result<Vec<Member>, PackError> {
    let read = |p: &Path, e| PackError::Read {
        path: p.to_path_buf(),
        error: e,
    };
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_path_buf(), b"./".to_vec())];
    let meta = std::fs::symlink_metadata(root).map_err(|e| read(root, e))?;
    out.push(member(b"./".to_vec(), root.to_path_buf(), &meta));
    while let Some((dir, prefix)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| read(&dir, e))?;
        for e in rd {
            let e = e.map_err(|e| read(&dir, e))?;
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| read(&path, e))?;
            let mut name = prefix.clone();
            name.extend_from_slice(e.file_name().as_bytes());
            if meta.is_dir() {
                name.push(b'/');
                stack.push((path.clone(), name.clone()));
            }
            out.push(member(name, path, &meta));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn member(name: Vec<u8>, path: PathBuf, m: &std::fs::Metadata) -> Member {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_file() {
        Kind::File
    } else {
        debug_assert!(
            ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket()
        );
        Kind::Special
    };
    Member {
        name,
        path,
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        size: if kind == Kind::File { m.size() } else { 0 },
        dev_ino: (m.dev(), m.ino()),
        nlink: m.nlink(),
    }
}

/// Total bytes of regular-file content (for progress).
pub fn content_bytes(members: &[Member]) -> u64 {
    members
        .iter()
        .filter(|m| m.kind == Kind::File)
        .map(|m| m.size)
        .sum()
}

/// A writer that counts and hashes what passes through.
struct Tee<W: Write> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Write `root` as a deterministic `.tar.zst` at `out`; `on_bytes` is told
/// how many content bytes were consumed (progress).
pub fn pack(
    root: &Path,
    out: &Path,
    opts: PackOptions,
    on_bytes: &dyn Fn(u64),
) -> Result<Packed, PackError> {
    let members = walk(root)?;
    let werr = |e| PackError::Write {
        path: out.to_path_buf(),
        error: e,
    };
    let file = std::fs::File::create(out).map_err(werr)?;
    let tee = Tee {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        hash: Sha256::new(),
        count: 0,
    };
    let mut enc = zstd::stream::write::Encoder::new(tee, opts.zstd_level).map_err(werr)?;
    enc.include_checksum(true).map_err(werr)?;
    enc.include_contentsize(false).map_err(werr)?;
    if opts.workers > 0 {
        enc.multithread(opts.workers).map_err(werr)?;
    }
    let mut tw = TarWriter {
        out: CountingWriter {
            inner: enc,
            count: 0,
        },
        sde: opts.source_date_epoch as i64,
    };
    let mut manifest = String::new();
    let mut skipped = Vec::new();
    let mut dropped = Vec::new();
    let mut first_name: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut entries = 0;
    for m in &members {
        if m.kind == Kind::Special {
            skipped.push(String::from_utf8_lossy(&m.name).into_owned());
            continue;
        }
        entries += 1;
        let xattrs = if m.kind == Kind::Symlink {
            Vec::new()
        } else {
            read_xattrs(&m.path, &m.name, &mut dropped)?
        };
        if m.kind == Kind::File && m.nlink > 1 {
            if let Some(target) = first_name.get(&m.dev_ino) {
                tw.link(m, tar::EntryType::Link, target, &xattrs)
                    .map_err(werr)?;
                manifest_line(&mut manifest, m, 'h', 0, "-", target);
                continue;
            }
            first_name.insert(m.dev_ino, m.name.clone());
        }
        match m.kind {
            Kind::Dir => {
                tw.header(m, tar::EntryType::Directory, 0, None, &xattrs)
                    .map_err(werr)?;
                manifest_line(&mut manifest, m, 'd', 0, "-", b"-");
            }
            Kind::Symlink => {
                let target = std::fs::read_link(&m.path).map_err(|e| PackError::Read {
                    path: m.path.clone(),
                    error: e,
                })?;
                let t = target.as_os_str().as_bytes();
                tw.link(m, tar::EntryType::Symlink, t, &xattrs)
                    .map_err(werr)?;
                manifest_line(&mut manifest, m, 'l', 0, "-", t);
            }
            Kind::File => {
                let sha = tw.file(m, &xattrs, on_bytes).map_err(|e| match e {
                    FileErr::Read(error) => PackError::Read {
                        path: m.path.clone(),
                        error,
                    },
                    FileErr::Write(source) => werr(source),
                })?;
                manifest_line(&mut manifest, m, 'f', m.size, &sha, b"-");
            }
            Kind::Special => unreachable!("skipped above"),
        }
    }
    tw.out.write_all(&[0u8; 1024]).map_err(werr)?;
    let tar_size = tw.out.count;
    let enc = tw.out.inner;
    let mut tee = enc.finish().map_err(werr)?;
    tee.flush().map_err(werr)?;
    Ok(Packed {
        manifest,
        sha256: hex(&tee.hash.finalize()),
        compressed_size: tee.count,
        tar_size,
        entries,
        skipped_special: skipped,
        dropped_xattrs: dropped,
    })
}

fn read_xattrs(
    path: &Path,
    name: &[u8],
    dropped: &mut Vec<String>,
) -> Result<Vec<(String, Vec<u8>)>, PackError> {
    let rerr = |e| PackError::Read {
        path: path.to_path_buf(),
        error: e,
    };
    let mut out = Vec::new();
    let names: Vec<OsString> = match xattr::list(path) {
        Ok(it) => it.collect(),
        // Filesystems without xattr support have none to keep.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(rerr(e)),
    };
    for n in names {
        let key = n.to_string_lossy().into_owned();
        if !xattr_allowed(&key) {
            dropped.push(format!("{}: {key}", String::from_utf8_lossy(name)));
            continue;
        }
        if let Some(v) = xattr::get(path, &n).map_err(rerr)? {
            out.push((key, v));
        }
    }
    out.sort();
    Ok(out)
}

/// `path type mode uid gid size sha256 link`, one line per member.
fn manifest_line(out: &mut String, m: &Member, kind: char, size: u64, sha: &str, link: &[u8]) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "{} {kind} {:04o} {} {} {size} {sha} {}",
        escape(&m.name),
        m.mode,
        m.uid,
        m.gid,
        escape(link)
    );
}

/// Printable ASCII as is; spaces, backslashes and other bytes as `\xNN`.
pub fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_graphic() && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

struct CountingWriter<W: Write> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum FileErr {
    Read(io::Error),
    Write(io::Error),
}

struct TarWriter<W: Write> {
    out: CountingWriter<W>,
    sde: i64,
}

impl<W: Write> TarWriter<W> {
    /// A header (preceded by PAX xattr and GNU long-name records as needed).
    fn header(
        &mut self,
        m: &Member,
        kind: tar::EntryType,
        size: u64,
        link: Option<&[u8]>,
        xattrs: &[(String, Vec<u8>)],
    ) -> io::Result<()> {
        if !xattrs.is_empty() {
            self.pax(xattrs)?;
        }
        let mut h = tar::Header::new_gnu();
        if m.name.len() > 100 {
            self.long_record(b'L', &m.name)?;
        }
        set_bytes(&mut h.as_old_mut().name, &m.name);
        if let Some(l) = link {
            if l.len() > 100 {
                self.long_record(b'K', l)?;
            }
            set_bytes(&mut h.as_old_mut().linkname, l);
        }
        h.set_entry_type(kind);
        h.set_mode(m.mode);
        h.set_uid(m.uid as u64);
        h.set_gid(m.gid as u64);
        h.set_size(size);
        h.set_mtime(m.mtime.clamp(0, self.sde) as u64);
        h.set_cksum();
        self.out.write_all(h.as_bytes())
    }

    fn link(
        &mut self,
        m: &Member,
        kind: tar::EntryType,
        target: &[u8],
        xattrs: &[(String, Vec<u8>)],
    ) -> io::Result<()> {
        let mut m = m.clone();
        if kind == tar::EntryType::Symlink {
            m.mode = 0o777;
        }
        self.header(&m, kind, 0, Some(target), xattrs)
    }

    /// A regular file: header, content, padding; returns the content's sha256.
    fn file(
        &mut self,
        m: &Member,
        xattrs: &[(String, Vec<u8>)],
        on_bytes: &dyn Fn(u64),
    ) -> Result<String, FileErr> {
        self.header(m, tar::EntryType::Regular, m.size, None, xattrs)
            .map_err(FileErr::Write)?;
        let mut f = std::fs::File::open(&m.path).map_err(FileErr::Read)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 17];
        let mut left = m.size;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = f.read(&mut buf[..want]).map_err(FileErr::Read)?;
            if n == 0 {
                return Err(FileErr::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was packed",
                )));
            }
            h.update(&buf[..n]);
            self.out.write_all(&buf[..n]).map_err(FileErr::Write)?;
            left -= n as u64;
            on_bytes(n as u64);
        }
        self.pad(m.size).map_err(FileErr::Write)?;
        Ok(hex(&h.finalize()))
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; 512][..512 - rem])?;
        }
        Ok(())
    }

    /// A GNU `././@LongLink` record carrying a name or link target.
    fn long_record(&mut self, kind: u8, data: &[u8]) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        set_bytes(&mut h.as_old_mut().name, b"././@LongLink");
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64 + 1);
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(&[0])?;
        self.pad(data.len() as u64 + 1)
    }

    /// A PAX extended header with `SCHILY.xattr.*` records.
    fn pax(&mut self, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
        let mut body = Vec::new();
        for (k, v) in xattrs {
            body.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
        }
        let mut h = tar::Header::new_ustar();
        set_bytes(&mut h.as_old_mut().name, b"././@PaxHeader");
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(body.len() as u64);
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(&body)?;
        self.pad(body.len() as u64)
    }
}

/// `"<len> key=value\n"` where len counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // space, '=', '\n'
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len += 1;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn set_bytes(slot: &mut [u8], b: &[u8]) {
    let n = b.len().min(slot.len());
    slot.fill(0);
    slot[..n].copy_from_slice(&b[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_record("SCHILY.xattr.user.a", b"xy");
        assert_eq!(r, b"26 SCHILY.xattr.user.a=xy\n");
        let r = pax_record("k", &[b'v'; 5]);
        assert_eq!(
            r.len(),
            String::from_utf8_lossy(&r)
                .split(' ')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        );
    }

    #[test]
    fn escape_makes_one_field() {
        assert_eq!(escape(b"./a b\\c"), "./a\\x20b\\x5cc");
    }
}
