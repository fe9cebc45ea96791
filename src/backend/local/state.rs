//! The local cluster's state directory and its state file.
//!
//! ```text
//! <state>/state.json                 what exists: network, templates, containers (+ tags)
//! <state>/lock                       flock(2) held while the state is changed
//! <state>/templates/<file>           uploaded templates
//! <state>/lxc/<name>/{config,rootfs/,console.log,lxc.log}   the LXC path (`lxc-* -P <state>/lxc`)
//! <state>/volumes/vm-<vmid>-disk-data/                      data volumes (bind-mounted)
//! ```
//!
//! Invariants: an object is recorded *before* it is created (containers in
//! phase `creating`, the network before the bridge), so `haimg down` can
//! remove everything even after a half-failed deploy; the file is replaced
//! atomically (write, fsync, rename), so readers never see half a state; a
//! directory without `state.json` is only ever removed when it holds nothing
//! but the entries above.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LocalError;

pub const STATE_FILE: &str = "state.json";
pub const FORMAT: u32 = 1;
/// Everything haimg may put at the top of a state directory.
pub const KNOWN_ENTRIES: [&str; 6] = [
    STATE_FILE,
    "state.json.tmp",
    "lock",
    "templates",
    "lxc",
    "volumes",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub cluster: String,
    pub instance: String,
    #[serde(default)]
    pub network: Option<NetRecord>,
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateRecord>,
    #[serde(default)]
    pub containers: BTreeMap<u32, CtRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRecord {
    pub bridge: String,
    pub netns: String,
    pub client_veth: String,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRecord {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Recorded, being built; a failure leaves it for destroy/down.
    Creating,
    Created,
}

/// One container, with everything needed to render its config again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtRecord {
    pub name: String,
    pub phase: Phase,
    pub privileged: bool,
    pub node: String,
    pub hostname: String,
    pub role: String,
    pub slot: String,
    pub template: PathBuf,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub hwaddr: String,
    pub nameservers: Vec<Ipv4Addr>,
    pub search_domain: Option<String>,
    pub cores: u32,
    pub memory_mb: u32,
    pub rootfs_gb: u32,
    /// Where the data volume is mounted inside (absolute), if the CT has one.
    pub data_mount: Option<String>,
    /// The host directory attached as the data volume, if any.
    pub data_volume: Option<PathBuf>,
    pub tags: Vec<String>,
    pub env: Vec<(String, String)>,
    pub onboot: bool,
    /// PID 1 (`lxc.init.cmd`), as Proxmox >= 9.1 `entrypoint`.
    #[serde(default)]
    pub entrypoint: Option<String>,
    /// LXC configures eth0 (Proxmox >= 9.1 `host-managed=1`).
    #[serde(default)]
    pub host_managed: bool,
}

impl State {
    pub fn new(cluster: &str, instance: &str) -> State {
        State {
            format: FORMAT,
            cluster: cluster.to_string(),
            instance: instance.to_string(),
            network: None,
            templates: BTreeMap::new(),
            containers: BTreeMap::new(),
        }
    }
}

/// The state directory on disk.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

/// Open (or create) `path` and take an exclusive `flock` on it, blocking
/// while another holder has it; released when the guard drops.
fn lock_exclusive(path: &Path) -> Result<LockGuard, LocalError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io("open", path))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(io("lock", path)(std::io::Error::last_os_error()));
    }
    Ok(LockGuard { _file: file })
}

/// Holds the directory's flock until dropped.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LocalError + 'a {
    move |error| LocalError::Io {
        action,
        path: path.to_path_buf(),
        error,
    }
}

/// Mode of the state directory's subdirectories and each CT's directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the state directory and `lxc/` when unprivileged CTs must pass
/// (group: the host gid of container root).
pub const TRAVERSE_MODE: u32 = 0o710;

impl StateDir {
    pub fn new(root: PathBuf) -> StateDir {
        StateDir { root }
    }

    pub fn file(&self) -> PathBuf {
        self.root.join(STATE_FILE)
    }
    pub fn templates(&self) -> PathBuf {
        self.root.join("templates")
    }
    pub fn lxcpath(&self) -> PathBuf {
        self.root.join("lxc")
    }
    pub fn ct_dir(&self, name: &str) -> PathBuf {
        self.lxcpath().join(name)
    }
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }
    pub fn volume(&self, vmid: u32) -> PathBuf {
        self.volumes().join(format!("vm-{vmid}-disk-data"))
    }

    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    /// Create the directory tree, owner-only: it holds the CTs' root
    /// filesystems, whose files are owned by host uids 0..65535 (the idmapped
    /// rootfs shows them so), so a setuid binary made by container root would
    /// be host root for any host user who could reach it; and the LXC configs,
    /// which carry PID 1's environment. Every directory is 0700, except what
    /// LXC itself must pass as an unprivileged CT's root, after it switched
    /// to the CT's user namespace: `lxc-start` checks that the lxcpath
    /// (`<root>/lxc`) is searchable (`access(lxcpath, X_OK)`), and it opens
    /// the source of an idmapped mount entry (the data volume under
    /// `volumes/`) there too. So with `traverse_gid` (the host gid of
    /// container root) the root, `lxc/` and `volumes/` are 0710 and owned by
    /// that group: container root may pass through, no other host user may.
    /// Each CT's own directory stays 0700 (LXC prepares the idmapped rootfs
    /// as host root). The state file is only ever written under the lock.
    pub fn init(&self, traverse_gid: Option<u32>) -> Result<(), LocalError> {
        use std::os::unix::fs::PermissionsExt;
        for d in [
            self.root.clone(),
            self.templates(),
            self.lxcpath(),
            self.volumes(),
        ] {
            std::fs::create_dir_all(&d).map_err(io("create", &d))?;
        }
        let templates = self.templates();
        std::fs::set_permissions(&templates, std::fs::Permissions::from_mode(DIR_MODE))
            .map_err(io("chmod", &templates))?;
        for d in [self.root.clone(), self.lxcpath(), self.volumes()] {
            let mode = match traverse_gid {
                Some(gid) => {
                    std::os::unix::fs::chown(&d, None, Some(gid)).map_err(io("chown", &d))?;
                    TRAVERSE_MODE
                }
                None => DIR_MODE,
            };
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))
                .map_err(io("chmod", &d))?;
        }
        Ok(())
    }

    /// Take the directory lock (blocks while another haimg changes it).
    pub fn lock(&self) -> Result<LockGuard, LocalError> {
        lock_exclusive(&self.root.join("lock"))
    }

    fn creating_lock_path(&self, vmid: u32) -> PathBuf {
        self.lxcpath().join(format!(".creating-{vmid}"))
    }

    /// Take CT `vmid`'s create lock, held while it is built (blocks while
    /// another run builds it). The kernel drops it when its holder dies, so
    /// whoever holds it knows a `creating` record of `vmid` is abandoned.
    pub fn creating_lock(&self, vmid: u32) -> Result<LockGuard, LocalError> {
        lock_exclusive(&self.creating_lock_path(vmid))
    }

    /// Is a run building CT `vmid` right now (holding its create lock)?
    /// Asks with a shared lock that is dropped at once, so it never blocks
    /// the builder for longer than the call.
    pub fn being_created(&self, vmid: u32) -> bool {
        let Ok(file) = File::open(self.creating_lock_path(vmid)) else {
            return false;
        };
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        rc != 0
    }

    /// Read the state; `None` when there is no state file.
    pub fn load(&self) -> Result<Option<State>, LocalError> {
        let path = self.file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path)(e)),
        };
        let state: State = serde_json::from_str(&text).map_err(|e| LocalError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if state.format != FORMAT {
            return Err(LocalError::State {
                path,
                message: format!(
                    "format {} is not supported (this haimg reads {FORMAT})",
                    state.format
                ),
            });
        }
        Ok(Some(state))
    }

    /// Replace the state file atomically.
    pub fn save(&self, state: &State) -> Result<(), LocalError> {
        let path = self.file();
        let tmp = self.root.join("state.json.tmp");
        let mut text = serde_json::to_string_pretty(state).map_err(|e| LocalError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        text.push('\n');
        use std::os::unix::fs::PermissionsExt as _;
        // 0600: the records hold each member's PID-1 environment, secrets
        // included, and the state root is traversable by the containers' root group.
        let mut f = File::create(&tmp).map_err(io("write", &tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod", &tmp))?;
        f.write_all(text.as_bytes()).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        Ok(())
    }

    /// Is this directory safe to delete: ours, or holding only our entries?
    pub fn looks_like_ours(&self) -> Result<bool, LocalError> {
        if self.file().is_file() {
            return Ok(true);
        }
        let entries = std::fs::read_dir(&self.root).map_err(io("read", &self.root))?;
        for e in entries {
            let e = e.map_err(io("read", &self.root))?;
            let name = e.file_name();
            if !KNOWN_ENTRIES.iter().any(|k| name == *k) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_atomic_save() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::new(d.path().join("c1"));
        assert!(sd.load().unwrap().is_none());
        sd.init(None).unwrap();
        assert!(sd.load().unwrap().is_none());
        let mut st = State::new("c1", "0a1b2c3d");
        st.network = Some(NetRecord {
            bridge: "hmb0a1b2c3d".into(),
            netns: "haimg-c1-0a1b2c3d".into(),
            client_veth: "hmc0a1b2c3d".into(),
            gateway: "192.168.30.1".parse().unwrap(),
            prefix: 24,
        });
        {
            let _g = sd.lock().unwrap();
            sd.save(&st).unwrap();
        }
        assert_eq!(sd.load().unwrap().unwrap(), st);
        assert!(!sd.root.join("state.json.tmp").exists());
        assert!(sd.looks_like_ours().unwrap());
    }

    #[test]
    fn corrupt_or_foreign_state_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::new(d.path().to_path_buf());
        std::fs::write(sd.file(), "{not json").unwrap();
        let e = sd.load().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("state file {}: ", sd.file().display())),
            "{e}"
        );
        std::fs::write(sd.file(), r#"{"format":9,"cluster":"c","instance":"x"}"#).unwrap();
        let e = sd.load().unwrap_err().to_string();
        assert!(
            e.ends_with("format 9 is not supported (this haimg reads 1)"),
            "{e}"
        );
    }

    #[test]
    fn only_our_directories_look_like_ours() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::new(d.path().to_path_buf());
        std::fs::create_dir(sd.lxcpath()).unwrap();
        assert!(sd.looks_like_ours().unwrap());
        std::fs::write(d.path().join("precious.txt"), "x").unwrap();
        assert!(!sd.looks_like_ours().unwrap());
    }
}
