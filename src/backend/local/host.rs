//! Reading and adjusting host facts the local backend depends on: subordinate
//! id ranges, mounts, processes and cgroups left by containers, the euid.
//!
//! Parsing is pure (text in, facts out) and tested on fixtures; the thin I/O
//! wrappers read `/proc` and `/etc`. Invariants: `/etc/subuid` and
//! `/etc/subgid` are only ever appended to, never rewritten; processes are
//! only ever matched by the cgroup or monitor name of *our* containers, so
//! nothing another user started is touched.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Is `user` allowed `count` ids from `base` by this subuid/subgid text?
pub fn subid_covers(text: &str, user: &str, base: u64, count: u64) -> bool {
    text.lines().any(|l| {
        let mut f = l.trim().split(':');
        let (Some(u), Some(start), Some(n)) = (f.next(), f.next(), f.next()) else {
            return false;
        };
        let (Ok(start), Ok(n)) = (start.parse::<u64>(), n.parse::<u64>()) else {
            return false;
        };
        u == user && start <= base && start + n >= base + count
    })
}

/// Append `root:<base>:<count>` to a subuid/subgid file unless it is covered.
/// Returns whether the file was changed.
pub fn ensure_subid(path: &Path, base: u32, count: u32) -> std::io::Result<bool> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    if subid_covers(&text, "root", base.into(), count.into()) {
        return Ok(false);
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    f.write_all(format!("{sep}root:{base}:{count}\n").as_bytes())?;
    Ok(true)
}

/// Undo the octal escapes of `/proc/self/mountinfo` (`\040` = space).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `dir`, deepest first, from mountinfo text.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// Mount points at or below `dir` in this process's mount namespace.
pub fn current_mounts_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(mounts_under(
        &std::fs::read_to_string("/proc/self/mountinfo")?,
        dir,
    ))
}

/// Does a `/proc/<pid>/cgroup` text put the process in one of our containers?
pub fn cgroup_mentions(text: &str, names: &[String]) -> bool {
    text.lines().any(|l| {
        let path = l.splitn(3, ':').nth(2).unwrap_or("");
        path.split('/').any(|comp| {
            names.iter().any(|n| {
                comp == format!("lxc.payload.{n}")
                    || comp == format!("lxc.monitor.{n}")
                    || comp
                        .strip_prefix(&format!("lxc.payload.{n}-"))
                        .is_some_and(|r| r.bytes().all(|b| b.is_ascii_digit()))
            })
        })
    })
}

/// Does a `/proc/<pid>/cgroup` text put the process inside container `name`
/// (its payload cgroup, not its monitor)?
pub fn in_payload(text: &str, name: &str) -> bool {
    let payload = format!("lxc.payload.{name}");
    text.lines().any(|l| {
        l.splitn(3, ':')
            .nth(2)
            .unwrap_or("")
            .split('/')
            .any(|c| c == payload)
    })
}

/// Container names `<prefix><vmid>` that some live process's cgroup names
/// (`lxc.payload.<name>` or `lxc.monitor.<name>`), from `/proc/*/cgroup` texts.
pub fn names_in_cgroups<'a>(texts: impl IntoIterator<Item = &'a str>, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = texts
        .into_iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .flat_map(|path| path.split('/'))
        .filter_map(|c| {
            c.strip_prefix("lxc.payload.")
                .or_else(|| c.strip_prefix("lxc.monitor."))
        })
        .filter(|n| {
            n.strip_prefix(prefix)
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// [`names_in_cgroups`] over every process on the host.
pub fn running_names(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let texts: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok())
        .collect();
    names_in_cgroups(texts.iter().map(String::as_str), prefix)
}

/// One process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProcInfo {
    pub pid: i32,
    /// `R`, `S`, `D`, `Z` (zombie), ... from `/proc/<pid>/stat`.
    pub state: char,
    pub cmdline: String,
}

/// Every process (zombies included) inside container `name`, by host PID.
pub fn payload_processes(name: &str) -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut v: Vec<ProcInfo> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            in_payload(
                &std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default(),
                name,
            )
        })
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            Some(ProcInfo {
                pid,
                state,
                cmdline: String::from_utf8_lossy(&cmd)
                    .replace('\0', " ")
                    .trim()
                    .to_string(),
            })
        })
        .collect();
    v.sort_by_key(|p| p.pid);
    v
}

/// Is this `/proc/<pid>/cmdline` (NUL-separated) the LXC monitor of one of our containers?
pub fn is_our_monitor(cmdline: &[u8], lxcpath: &Path, names: &[String]) -> bool {
    let text = String::from_utf8_lossy(cmdline).replace('\0', " ");
    let Some(rest) = text.trim().strip_prefix("[lxc monitor] ") else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(&*lxcpath.to_string_lossy()) else {
        return false;
    };
    names.iter().any(|n| rest.trim() == n.as_str())
}

/// Live PIDs (zombies left out: they are dead, and reaped by their parent)
/// of processes inside, or monitoring, our containers (never our own).
pub fn container_pids(lxcpath: &Path, names: &[String]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && pid_alive(pid))
        .filter(|pid| {
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cgroup_mentions(&cg, names) || is_our_monitor(&cmd, lxcpath, names)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Empty cgroup directories LXC may leave for our containers.
pub fn leftover_cgroups(names: &[String]) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![root.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(root) {
        hierarchies.extend(
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
    }
    let mut v = Vec::new();
    for h in hierarchies {
        for n in names {
            for d in [format!("lxc.payload.{n}"), format!("lxc.monitor.{n}")] {
                let p = h.join(d);
                if p.is_dir() {
                    v.push(p);
                }
            }
        }
    }
    v
}

/// Remove a cgroup directory tree (children first); cgroupfs only allows rmdir.
pub fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path())?;
            }
        }
    }
    std::fs::remove_dir(dir)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Send SIGKILL to a PID found by [`container_pids`] or [`payload_processes`].
pub fn kill(pid: i32) -> std::io::Result<()> {
    signal(pid, libc::SIGKILL)
}

/// Send `sig` (e.g. `libc::SIGTERM`) to one PID (never a group: `pid` > 0).
pub fn signal(pid: i32, sig: i32) -> std::io::Result<()> {
    if pid <= 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) with a concrete PID and signal; no memory involved.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Alive and not a zombie (a zombie is dead; its parent reaps it in its own time).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_ranges() {
        assert!(!subid_covers("", "root", 100000, 65536));
        assert!(subid_covers("root:100000:65536\n", "root", 100000, 65536));
        assert!(subid_covers(
            "alice:1:2\nroot:0:1000000\n",
            "root",
            100000,
            65536
        ));
        assert!(!subid_covers("root:100000:1000\n", "root", 100000, 65536));
        assert!(!subid_covers("alice:100000:65536\n", "root", 100000, 65536));
        assert!(!subid_covers("garbage\nroot:x:y\n", "root", 100000, 65536));
    }

    #[test]
    fn ensure_subid_appends_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("subuid");
        std::fs::write(&p, "alice:200000:65536").unwrap();
        assert!(ensure_subid(&p, 100000, 65536).unwrap());
        assert!(!ensure_subid(&p, 100000, 65536).unwrap());
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "alice:200000:65536\nroot:100000:65536\n"
        );
    }

    #[test]
    fn mountinfo_parsing() {
        let mi = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                  40 22 0:5 / /tmp/st/lxc/c/rootfs/var/lib/mongodb rw - none x rw\n\
                  41 22 0:6 / /tmp/st/lxc/c/rootfs rw - none x rw\n\
                  42 22 0:7 / /tmp/st\\040x/a rw - none x rw\n\
                  43 22 0:8 / /tmp/stx rw - none x rw\n";
        assert_eq!(
            mounts_under(mi, Path::new("/tmp/st")),
            [
                PathBuf::from("/tmp/st/lxc/c/rootfs/var/lib/mongodb"),
                PathBuf::from("/tmp/st/lxc/c/rootfs")
            ]
        );
        assert_eq!(
            mounts_under(mi, Path::new("/tmp/st x")),
            [PathBuf::from("/tmp/st x/a")]
        );
    }

    #[test]
    fn names_from_cgroups() {
        let texts = [
            "4:memory:/lxc.payload.c-0a1b2c3d-100/init.scope\n0::/\n",
            "0::/lxc.monitor.c-0a1b2c3d-1103\n",
            "4:memory:/lxc.payload.c-0a1b2c3d-100\n",
            "4:memory:/lxc.payload.c-99999999-100\n",
            "4:memory:/lxc.payload.c-0a1b2c3d-x\n",
        ];
        assert_eq!(
            names_in_cgroups(texts, "c-0a1b2c3d-"),
            ["c-0a1b2c3d-100", "c-0a1b2c3d-1103"]
        );
    }

    #[test]
    fn cgroup_and_monitor_matching() {
        let names = vec!["haimg-0a1b2c3d-100".to_string()];
        assert!(cgroup_mentions(
            "4:memory:/lxc.payload.haimg-0a1b2c3d-100/init.scope\n",
            &names
        ));
        assert!(cgroup_mentions(
            "0::/lxc.monitor.haimg-0a1b2c3d-100\n",
            &names
        ));
        assert!(cgroup_mentions(
            "4:pids:/lxc.payload.haimg-0a1b2c3d-100-1\n",
            &names
        ));
        assert!(!cgroup_mentions(
            "4:pids:/lxc.payload.haimg-0a1b2c3d-1000\n",
            &names
        ));
        assert!(!cgroup_mentions("0::/user.slice\n", &names));
        assert!(in_payload(
            "4:memory:/lxc.payload.haimg-0a1b2c3d-100\n",
            &names[0]
        ));
        assert!(!in_payload(
            "0::/lxc.monitor.haimg-0a1b2c3d-100\n",
            &names[0]
        ));
        let lp = Path::new("/tmp/st/lxc");
        assert!(is_our_monitor(
            b"[lxc monitor] /tmp/st/lxc haimg-0a1b2c3d-100\0",
            lp,
            &names
        ));
        assert!(!is_our_monitor(
            b"[lxc monitor] /tmp/other/lxc haimg-0a1b2c3d-100",
            lp,
            &names
        ));
        assert!(!is_our_monitor(b"/usr/bin/sleep\0x", lp, &names));
    }
}
