//! The I/O `haimg doctor` needs, behind one narrow trait: reading files,
//! finding programs, free space, running a probe command, and the one probe
//! that has to be made with system calls (an idmapped mount).
//!
//! [`SystemHost`] is the real host; tests give the checks a host made of
//! fixture files instead. Nothing here changes the host: the probes work in
//! throw-away namespaces or on detached mounts that vanish with their file
//! descriptor.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::exec::{Cmd, CommandRunner, Output, RunError, SystemRunner};

/// What the checks may ask of the host.
pub trait Host {
    fn read(&self, path: &Path) -> io::Result<String>;
    /// A file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    /// The entries of a directory (file names).
    fn list(&self, dir: &Path) -> Vec<String>;
    /// `name` resolved on `PATH`, if it is there and executable.
    fn find_program(&self, name: &str) -> Option<PathBuf>;
    fn euid(&self) -> u32;
    /// The nearest existing directory at or above `path`, and the bytes free there.
    fn free_space(&self, path: &Path) -> io::Result<(PathBuf, u64)>;
    /// Can this process create or append to `path`?
    fn writable(&self, path: &Path) -> bool;
    /// Run a probe command; its output whatever its exit status.
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError>;
    /// Make an idmapped mount of the file system holding `dir` (detached,
    /// never attached anywhere); `Err` says why it failed.
    fn idmap_probe(&self, dir: &Path) -> Result<(), String>;
}

/// The machine this process runs on.
pub struct SystemHost {
    runner: Arc<dyn CommandRunner>,
    path: Vec<PathBuf>,
}

impl SystemHost {
    pub fn new() -> SystemHost {
        let path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_else(|| std::env::split_paths(crate::exec::STANDARD_PATH).collect());
        SystemHost {
            runner: Arc::new(SystemRunner),
            path,
        }
    }
}

impl Default for SystemHost {
    fn default() -> Self {
        SystemHost::new()
    }
}

impl Host for SystemHost {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn list(&self, dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn find_program(&self, name: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        self.path.iter().map(|d| d.join(name)).find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }

    fn euid(&self) -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    fn free_space(&self, path: &Path) -> io::Result<(PathBuf, u64)> {
        let abs = std::path::absolute(path)?;
        let dir = abs
            .ancestors()
            .find(|p| p.is_dir())
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((dir, st.f_bavail * st.f_frsize))
    }

    fn writable(&self, path: &Path) -> bool {
        let target = if path.exists() {
            path
        } else {
            match path.parent() {
                Some(p) => p,
                None => return false,
            }
        };
        let Ok(c) = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: access(2) only reads the C string.
        unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
    }

    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        self.runner.output(cmd)
    }

    fn idmap_probe(&self, dir: &Path) -> Result<(), String> {
        idmapped_mount_probe(dir)
    }
}

/// The ids the probe maps (those of the local backend's unprivileged CTs).
const PROBE_MAP: &str = "0 100000 65536";
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Do what LXC does for `lxc.rootfs.options = idmap=container`: clone the
/// mount holding `dir` (`open_tree`) and give the clone an id mapping
/// (`mount_setattr` with a user namespace). The clone is never attached and
/// goes away with its descriptor. The user namespace belongs to a child
/// (`unshare --user cat`) that ends when its stdin closes.
fn idmapped_mount_probe(dir: &Path) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("unshare")
        .args(["--user", "--", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `unshare --user cat`: {e}"))?;
    let result = (|| {
        let pid = child.id();
        let ours = std::fs::read_link("/proc/self/ns/user").map_err(|e| e.to_string())?;
        let ns = PathBuf::from(format!("/proc/{pid}/ns/user"));
        // The child unshares right after it starts; wait for that.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(&ns).map_err(|e| e.to_string())? == ours {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read as _;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!(
                    "`unshare --user` failed ({status}): {}",
                    err.trim()
                ));
            }
            if Instant::now() > deadline {
                return Err("the probe's user namespace did not appear within 5 s".to_string());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for map in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{map}"), PROBE_MAP)
                .map_err(|e| format!("cannot write the probe's {map}: {e}"))?;
        }
        let userns = std::fs::File::open(&ns).map_err(|e| e.to_string())?;
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| "the path holds a NUL byte".to_string())?;
        // SAFETY: open_tree with a valid C string; the result is a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                path.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(format!("open_tree: {}", io::Error::last_os_error()));
        }
        // SAFETY: fd is a descriptor open_tree just returned to us.
        let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        let empty = c"";
        // SAFETY: mount_setattr on our detached tree with a struct of the size we pass.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc != 0 {
            return Err(format!("mount_setattr: {}", io::Error::last_os_error()));
        }
        Ok(())
    })();
    // Closing stdin ends `cat`, and with it the probe's user namespace.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.flush();
    }
    let _ = child.wait();
    result
}
