//! Pure readers of the host files `haimg doctor` looks at: dpkg's status
//! file, LXC configuration files, `/proc/self/mountinfo`, `/proc/cgroups`,
//! the kernel release, and subordinate id files. Text in, facts out; the I/O
//! that fetches the text is in [`super::host`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Names of the packages dpkg's status file (`/var/lib/dpkg/status`) lists
/// as installed (`Status: install ok installed`).
pub fn installed_packages(status: &str) -> BTreeSet<String> {
    status
        .split("\n\n")
        .filter_map(|stanza| {
            let mut name = None;
            let mut installed = false;
            for l in stanza.lines() {
                if let Some(v) = l.strip_prefix("Package:") {
                    name = Some(v.trim().to_string());
                } else if let Some(v) = l.strip_prefix("Status:") {
                    installed =
                        v.split_whitespace().collect::<Vec<_>>() == ["install", "ok", "installed"];
                }
            }
            name.filter(|_| installed)
        })
        .collect()
}

/// A file an LXC configuration file makes LXC read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LxcReference {
    /// `lxc.include` or `lxc.seccomp.profile`.
    pub key: String,
    pub path: PathBuf,
}

/// The `lxc.include` (a file, or a directory whose `*.conf` files are read)
/// and `lxc.seccomp.profile` lines of an LXC configuration file. An empty
/// value resets a key and names nothing.
pub fn lxc_references(text: &str) -> Vec<LxcReference> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, v)| matches!(*k, "lxc.include" | "lxc.seccomp.profile") && !v.is_empty())
        .map(|(k, v)| LxcReference {
            key: k.to_string(),
            path: PathBuf::from(v),
        })
        .collect()
}

/// `6.1.0-18-amd64` → (6, 1).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The cgroup controllers a container can be limited with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controllers {
    /// Controllers of mounted v1 hierarchies that `/proc/cgroups` lists as enabled.
    pub v1: BTreeSet<String>,
    /// Where the cgroup2 hierarchy is mounted, if it is.
    pub v2_mount: Option<PathBuf>,
}

/// One mount of `/proc/self/mountinfo`: (mount point, file system type, super options).
fn mounts(mountinfo: &str) -> impl Iterator<Item = (PathBuf, &str, &str)> {
    mountinfo.lines().filter_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        let _source = r.next()?;
        let opts = r.next().unwrap_or("");
        Some((PathBuf::from(unescape(point)), fstype, opts))
    })
}

/// Undo the octal escapes of mountinfo (`\040` = space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The v1 controllers mounted (and enabled in `/proc/cgroups`), and where
/// cgroup2 is mounted.
pub fn cgroup_controllers(mountinfo: &str, proc_cgroups: &str) -> Controllers {
    let enabled: BTreeSet<&str> = proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[3] == "1").then_some(f[0])
        })
        .collect();
    let mut c = Controllers::default();
    for (point, fstype, opts) in mounts(mountinfo) {
        match fstype {
            "cgroup" => c.v1.extend(
                opts.split(',')
                    .filter(|o| enabled.contains(o))
                    .map(str::to_string),
            ),
            "cgroup2" if c.v2_mount.is_none() => c.v2_mount = Some(point),
            _ => {}
        }
    }
    c
}

/// The file system type of the mount holding `path` (the longest mount point
/// that is a prefix of it).
pub fn fs_type_of(mountinfo: &str, path: &Path) -> Option<String> {
    mounts(mountinfo)
        .filter(|(p, _, _)| path.starts_with(p))
        .max_by_key(|(p, _, _)| p.components().count())
        .map(|(_, t, _)| t.to_string())
}

/// The value of a one-number `/proc/sys` file.
pub fn proc_number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Bytes as people read them: `12.3 GiB`.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_packages_only_counts_installed_ones() {
        let status = "Package: lxc\nStatus: install ok installed\nVersion: 1\n\n\
                      Package: lxc-templates\nStatus: deinstall ok config-files\n\n\
                      Package: zstd\nStatus: install ok half-configured\n\n\
                      Package: libc6\nArchitecture: amd64\nStatus: install ok installed\n";
        let got = installed_packages(status);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            ["libc6".to_string(), "lxc".into()]
        );
    }

    #[test]
    fn lxc_references_follow_includes_and_seccomp() {
        let text =
            "# lxc.include = /commented\nlxc.include = /usr/share/lxc/config/common.conf.d/\n\
                    lxc.seccomp.profile = /usr/share/lxc/config/common.seccomp\nlxc.tty.dir =\n\
                    lxc.include =\nlxc.cap.drop = sys_module\n";
        assert_eq!(
            lxc_references(text),
            [
                LxcReference {
                    key: "lxc.include".into(),
                    path: "/usr/share/lxc/config/common.conf.d/".into()
                },
                LxcReference {
                    key: "lxc.seccomp.profile".into(),
                    path: "/usr/share/lxc/config/common.seccomp".into()
                },
            ]
        );
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v1147\n"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("garbage"), None);
    }

    const HYBRID: &str = "\
22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
36 22 0:32 / /var/lib/haimg\\040x rw - xfs /dev/vdb rw
";
    const PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
        cpu\t3\t1\t1\ncpuacct\t3\t1\t1\nmemory\t4\t10\t1\npids\t5\t1\t1\ndevices\t6\t1\t1\nhugetlb\t0\t1\t1\n";

    #[test]
    fn cgroup_controllers_of_a_hybrid_host() {
        let c = cgroup_controllers(HYBRID, PROC_CGROUPS);
        assert_eq!(
            c.v1.iter().map(String::as_str).collect::<Vec<_>>(),
            ["cpu", "cpuacct", "devices", "memory", "pids"]
        );
        assert_eq!(c.v2_mount, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let disabled = PROC_CGROUPS.replace("memory\t4\t10\t1", "memory\t4\t10\t0");
        assert!(!cgroup_controllers(HYBRID, &disabled).v1.contains("memory"));
    }

    #[test]
    fn file_system_of_a_path() {
        assert_eq!(
            fs_type_of(HYBRID, Path::new("/var/lib/haimg x/c")).as_deref(),
            Some("xfs")
        );
        assert_eq!(
            fs_type_of(HYBRID, Path::new("/var/lib/haimg")).as_deref(),
            Some("ext4")
        );
        assert_eq!(
            fs_type_of(HYBRID, Path::new("/tmp")).as_deref(),
            Some("ext4")
        );
    }

    #[test]
    fn numbers_and_sizes() {
        assert_eq!(proc_number("96362\n"), Some(96362));
        assert_eq!(proc_number(""), None);
        assert_eq!(gib(3 << 30), "3.0 GiB");
    }
}
