//! One mutating run per cluster at a time: `deploy`, `rollback`, `gc` and
//! `down` hold an exclusive `flock(2)` on the cluster's run lock for their
//! whole run, so two of them cannot interleave their steps.
//!
//! Where the lock lives: locally next to the cluster's state directory
//! (`$HAIMG_STATE_DIR/<cluster>.run.lock`, machine-wide like the cluster);
//! for Proxmox on the deploy host, per cluster and endpoint
//! (`$XDG_STATE_HOME/haimg/<cluster>@<host>_<port>.run.lock`), and then a
//! lease in Proxmox itself that every deploy host sees ([`take_lease`]:
//! a resource pool holding the holder and an expiry, renewed while the run
//! lasts; see `backend::proxmox::lease`).
//!
//! The file holds who has it (command, pid, host, start), written after the
//! lock is taken, so a refused run names the holder. The kernel drops a
//! `flock` when its holder dies, so a killed run leaves no lock behind;
//! `--force-unlock` is for a holder that hangs: it replaces the file, so the
//! new run goes on while the old one still holds the old, now unlinked, file.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::backend::proxmox::lease::{LeaseApi, Take};

/// Who holds a run lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub command: String,
    pub pid: u32,
    pub host: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
}

impl Holder {
    /// "`haimg deploy` (pid 1 on host, started N s ago", the parenthesis
    /// left open for what the caller adds.
    fn describe_open(&self) -> String {
        format!(
            "`haimg {}` (pid {} on {}, started {}",
            self.command,
            self.pid,
            self.host,
            since(self.since)
        )
    }

    /// This process, running `command`.
    pub fn me(command: &str) -> Holder {
        Holder {
            command: command.to_string(),
            pid: std::process::id(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "?".into()),
            since: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// Held until dropped.
#[derive(Debug)]
pub struct RunLock {
    /// On Proxmox: the lease. Fields drop in order: the lease is released
    /// before the file lock, so a run this host starts next finds both free.
    lease: Option<Lease>,
    _file: File,
    pub path: PathBuf,
}

impl RunLock {
    /// Also hold `lease` until this lock is dropped.
    pub fn with_lease(mut self, lease: Lease) -> RunLock {
        self.lease = Some(lease);
        self
    }
}

/// How long a lease is valid without a renewal, and how often it is renewed.
/// The expiry is for people: a lease is broken only by `--force-unlock`.
pub const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(600);
const LEASE_RENEW: std::time::Duration = std::time::Duration::from_secs(60);

/// What a lease's comment holds: the holder and until when it is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseText {
    #[serde(flatten)]
    holder: Holder,
    /// Seconds since the Unix epoch.
    expires: u64,
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lease_text(me: &Holder) -> String {
    serde_json::to_string(&LeaseText {
        holder: me.clone(),
        expires: now_s() + LEASE_TTL.as_secs(),
    })
    .unwrap_or_default()
}

/// A lease held in Proxmox, renewed by a thread until dropped, then released.
#[derive(Debug)]
pub struct Lease {
    stop: Option<std::sync::mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
    }
}

/// Take the cluster's lease in Proxmox for `me`, or fail naming its holder
/// (and whether its lease expired). With `force`, a held lease is broken.
pub fn take_lease(api: LeaseApi, me: &Holder, force: bool) -> Result<Lease> {
    take_lease_renewing(api, me, force, LEASE_RENEW)
}

/// [`take_lease`], renewing every `every` (tests renew faster).
pub fn take_lease_renewing(
    api: LeaseApi,
    me: &Holder,
    force: bool,
    every: std::time::Duration,
) -> Result<Lease> {
    const TAKE: &str = "failed to take the cluster's run lease in Proxmox";
    let mut text = lease_text(me);
    match api.take(&text).context(TAKE)? {
        Take::Taken => {}
        Take::Held(other) => {
            let who = describe_lease(&other);
            if !force {
                bail!(
                    "the cluster is locked by {who}, from another deploy host or run (lease: Proxmox pool {}): wait for it to finish; if that run died or hangs, stop it, then break the lease with --force-unlock",
                    api.pool()
                );
            }
            tracing::warn!("breaking the run lease held by {who} (--force-unlock)");
            api.force_release().context(TAKE)?;
            text = lease_text(me);
            if let Take::Held(again) = api.take(&text).context(TAKE)? {
                bail!(
                    "the run lease was taken again at once by {}",
                    describe_lease(&again)
                );
            }
        }
    }
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let me = me.clone();
    let renewer = std::thread::spawn(move || {
        let mut held = text;
        // Until the run drops its lease (the sender goes away).
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
            let next = lease_text(&me);
            match api.renew(&held, &next) {
                Ok(()) => held = next,
                Err(e) => tracing::error!("failed to renew the run lease: {e}"),
            }
        }
        match api.release(&held) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the run lease was no longer this run's (broken with --force-unlock); left as it is"
            ),
            Err(e) => tracing::error!(
                "failed to release the run lease (Proxmox pool {}); the next run needs --force-unlock: {e}",
                api.pool()
            ),
        }
    });
    Ok(Lease {
        stop: Some(stop),
        renewer: Some(renewer),
    })
}

/// "`haimg deploy` (pid 1 on host, started N s ago; lease expires in M s)".
fn describe_lease(text: &str) -> String {
    match serde_json::from_str::<LeaseText>(text) {
        Ok(l) => {
            let now = now_s();
            let left = if l.expires > now {
                format!("lease expires in {} s", l.expires - now)
            } else {
                format!(
                    "lease EXPIRED {} s ago: its run probably died",
                    now - l.expires
                )
            };
            format!("{}; {left})", l.holder.describe_open())
        }
        Err(_) => format!("another haimg run ({text:?})"),
    }
}

/// The run lock of a local cluster whose state directory is `state_dir`.
pub fn local_path(state_dir: &Path) -> PathBuf {
    let mut name = state_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".run.lock");
    state_dir.with_file_name(name)
}

/// The run lock of a Proxmox cluster, on this deploy host.
pub fn proxmox_path(cluster: &str, host: &str, port: u16) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    base.join("haimg")
        .join(format!("{cluster}@{host}_{port}.run.lock"))
}

/// Take the lock at `path` for `me`, or fail naming its holder. With
/// `force`, a held lock is broken (the file replaced) with a warning.
pub fn acquire(path: &Path, me: &Holder, force: bool) -> Result<RunLock> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
    }
    let mut file = open(path)?;
    if !try_lock(&file).with_context(|| format!("failed to lock {}", path.display()))? {
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let who = match serde_json::from_str::<Holder>(&text) {
            Ok(h) => format!("{})", h.describe_open()),
            Err(_) => "another haimg run".to_string(),
        };
        if !force {
            bail!(
                "the cluster is locked by {who}: wait for it to finish; if that run hangs, stop it, or break the lock with --force-unlock (lock file {})",
                path.display()
            );
        }
        tracing::warn!("breaking the run lock held by {who} (--force-unlock)");
        std::fs::remove_file(path)
            .with_context(|| format!("failed to remove {}", path.display()))?;
        file = open(path)?;
        if !try_lock(&file)? {
            bail!(
                "the run lock {} was taken again at once by another run",
                path.display()
            );
        }
    }
    file.set_len(0)?;
    let mut text = serde_json::to_string(me)?;
    text.push('\n');
    file.write_all(text.as_bytes())
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(RunLock {
        lease: None,
        _file: file,
        path: path.to_path_buf(),
    })
}

fn open(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to open {}", path.display()))
}

/// `flock(LOCK_EX | LOCK_NB)`: false when someone else holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// "N s ago" for a start time.
fn since(epoch_s: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{} s ago", now.saturating_sub(epoch_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(cmd: &str, pid: u32) -> Holder {
        Holder {
            command: cmd.into(),
            pid,
            host: "deployhost".into(),
            since: 0,
        }
    }

    #[test]
    fn a_second_run_is_refused_naming_the_holder_and_force_breaks_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = local_path(&dir.path().join("haimg"));
        assert_eq!(path, dir.path().join("haimg.run.lock"));
        let first = acquire(&path, &holder("deploy", 4242), false).unwrap();
        let err = acquire(&path, &holder("gc", 7), false).unwrap_err();
        let msg = format!("{err:#}")
            .replace(dir.path().to_str().unwrap(), "[DIR]")
            .split(", started ")
            .map(|s| s.to_string())
            .collect::<Vec<_>>();
        insta::assert_snapshot!(msg[0], @"the cluster is locked by `haimg deploy` (pid 4242 on deployhost");
        assert!(msg[1].contains("s ago): wait for it to finish; if that run hangs, stop it, or break the lock with --force-unlock (lock file [DIR]/haimg.run.lock)"), "{}", msg[1]);
        // --force-unlock: the second run goes on; the file names it now.
        let second = acquire(&path, &holder("gc", 7), true).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(serde_json::from_str::<Holder>(&text).unwrap().command, "gc");
        drop(first);
        // Still held by the second run, even though the first let go.
        assert!(acquire(&path, &holder("rollback", 8), false).is_err());
        drop(second);
        acquire(&path, &holder("rollback", 8), false).unwrap();
    }

    #[test]
    fn a_lock_whose_holder_is_gone_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.run.lock");
        // A holder that died: its file and contents remain, its flock does not.
        std::fs::write(&path, serde_json::to_string(&holder("deploy", 1)).unwrap()).unwrap();
        let l = acquire(&path, &Holder::me("deploy"), false).unwrap();
        let text = std::fs::read_to_string(&l.path).unwrap();
        assert_eq!(
            serde_json::from_str::<Holder>(&text).unwrap().pid,
            std::process::id()
        );
    }

    #[test]
    fn proxmox_locks_are_per_cluster_and_endpoint() {
        let a = proxmox_path("haimg", "pve1.corp", 8006);
        let b = proxmox_path("haimg", "127.0.0.1", 40123);
        assert_ne!(a, b);
        assert!(a.ends_with("haimg/haimg@pve1.corp_8006.run.lock"), "{a:?}");
        let odd = proxmox_path("haimg", "[::1]", 8006);
        assert!(odd.ends_with("haimg/haimg@___1__8006.run.lock"), "{odd:?}");
    }
}
