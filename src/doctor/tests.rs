//! The checks on fixture hosts: a host made ready by `make setup`, and a
//! fresh Debian 12 minbase with nothing of the setup, as a user sees them.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use super::host::Host;
use super::needs::setup_packages;
use super::*;
use crate::exec::{CommandRunner, FakeRunner, Output, RunError};

/// A host made of in-memory files, a set of programs on PATH and a fake
/// runner for the probe commands.
struct Fixture {
    files: BTreeMap<PathBuf, String>,
    dirs: BTreeSet<PathBuf>,
    programs: BTreeSet<String>,
    euid: u32,
    free: u64,
    writable: bool,
    idmap: Result<(), String>,
    runner: FakeRunner,
}

impl Host for Fixture {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.files.get(path).cloned().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "No such file or directory (os error 2)",
            )
        })
    }
    fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path) || self.dirs.contains(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.dirs.contains(path)
    }
    fn list(&self, dir: &Path) -> Vec<String> {
        self.files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }
    fn find_program(&self, name: &str) -> Option<PathBuf> {
        self.programs
            .contains(name)
            .then(|| PathBuf::from("/usr/bin").join(name))
    }
    fn euid(&self) -> u32 {
        self.euid
    }
    fn free_space(&self, path: &Path) -> io::Result<(PathBuf, u64)> {
        let dir = path
            .ancestors()
            .find(|p| self.dirs.contains(*p))
            .unwrap_or(Path::new("/"));
        Ok((dir.to_path_buf(), self.free))
    }
    fn writable(&self, _path: &Path) -> bool {
        self.writable
    }
    fn run(&self, cmd: &crate::exec::Cmd) -> Result<Output, RunError> {
        self.runner.output(cmd)
    }
    fn idmap_probe(&self, _dir: &Path) -> Result<(), String> {
        self.idmap.clone()
    }
}

const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
";
const PROC_CGROUPS: &str =
    "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t4\t10\t1\npids\t5\t1\t1\ndevices\t6\t1\t1\n";

fn dpkg_status(packages: &[&str]) -> String {
    packages
        .iter()
        .map(|p| format!("Package: {p}\nStatus: install ok installed\nArchitecture: amd64\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A Debian 12 host after `make setup`, with Rust from rustup.
fn ready() -> Fixture {
    let mut files = BTreeMap::new();
    let mut put = |p: &str, t: &str| {
        files.insert(PathBuf::from(p), t.to_string());
    };
    put("/proc/self/mountinfo", MOUNTINFO);
    put("/proc/cgroups", PROC_CGROUPS);
    put("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
    put("/proc/sys/user/max_user_namespaces", "96362\n");
    put("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
    put("/etc/subuid", "root:100000:65536\n");
    put("/etc/subgid", "");
    put(
        "/usr/share/lxc/config/common.conf",
        "lxc.tty.dir = lxc\nlxc.seccomp.profile = /usr/share/lxc/config/common.seccomp\n\
         lxc.include = /usr/share/lxc/config/common.conf.d/\n",
    );
    put("/usr/share/lxc/config/common.seccomp", "2\ndenylist\n");
    put(
        "/usr/share/lxc/config/common.conf.d/README",
        "not a .conf file\n",
    );
    put(
        "/usr/share/lxc/config/userns.conf",
        "lxc.tty.dir =\nlxc.include = /usr/share/lxc/config/userns.conf.d/\n",
    );
    for f in needs::FILES {
        put(f.path, "");
    }
    put("/var/lib/dpkg/status", &dpkg_status(&setup_packages()));
    let dirs = [
        "/",
        "/tmp",
        "/var/lib",
        "/usr/share/lxc/config/common.conf.d",
        "/usr/share/lxc/config/userns.conf.d",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect();
    let runner = FakeRunner::new();
    runner.on("cargo fmt", |_| {
        Ok(Output::ok("rustfmt 1.8.0-stable (2025-05-09)\n"))
    });
    runner.on("cargo clippy", |_| {
        Ok(Output::ok("clippy 0.1.87 (17067e9ac6 2025-05-09)\n"))
    });
    runner.on("nft", |_| Ok(Output::ok("")));
    runner.on("unshare", |_| Ok(Output::ok("")));
    Fixture {
        files,
        dirs,
        programs: needs::TOOLS.iter().map(|t| t.program.to_string()).collect(),
        euid: 0,
        free: 20 << 30,
        writable: true,
        idmap: Ok(()),
        runner,
    }
}

/// A fresh Debian 12 minbase: make and Rust as the README asks, nothing else.
fn fresh() -> Fixture {
    let mut f = ready();
    let minbase = [
        "apt",
        "dpkg",
        "gpgv",
        "mount",
        "tar",
        "util-linux",
        "debian-archive-keyring",
        "make",
    ];
    f.programs.retain(|p| {
        needs::TOOLS
            .iter()
            .find(|t| t.program == p)
            .is_some_and(|t| minbase.contains(&t.package) || t.package == needs::RUSTUP)
    });
    f.files.retain(|p, _| {
        !p.starts_with("/usr/share/lxc")
            && !needs::FILES
                .iter()
                .any(|x| Path::new(x.path) == p && !minbase.contains(&x.package))
    });
    f.dirs.retain(|d| !d.starts_with("/usr/share/lxc"));
    f.files
        .insert("/var/lib/dpkg/status".into(), dpkg_status(&minbase));
    f.files.insert("/etc/subuid".into(), String::new());
    f.runner.clear();
    f.runner.on("cargo clippy", |_| {
        Ok(Output::fail(1, "error: no such command: `clippy`\n"))
    });
    f.runner.on("cargo fmt", |_| {
        Ok(Output::ok("rustfmt 1.8.0-stable (2025-05-09)\n"))
    });
    f
}

fn opts(needs: &[Need]) -> Options {
    Options {
        needs: needs.to_vec(),
        state_root: "/var/lib/haimg".into(),
        privileged: false,
        tmp_dir: "/tmp".into(),
        cache_dir: "/root/haimg/.haimg/cache".into(),
    }
}

#[test]
fn a_ready_host_passes_every_check() {
    let host = ready();
    let r = run(&host, &opts(&[Need::Test]));
    assert!(r.ok, "{}", r.render());
    insta::assert_snapshot!("doctor_ready_host", r.render());
}

#[test]
fn a_fresh_host_lists_each_missing_piece_with_its_fix() {
    let host = fresh();
    let r = run(&host, &opts(&[Need::Test]));
    assert!(!r.ok);
    insta::assert_snapshot!("doctor_fresh_host", r.render());
    // Every missing package of the fresh host is one `make setup` installs.
    let setup = setup_packages();
    for p in r.missing_packages() {
        assert!(setup.contains(&p), "{p} is not in the setup");
    }
}

#[test]
fn json_names_status_fix_and_package() {
    let r = run(&fresh(), &opts(&[Need::Build]));
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["needs"], serde_json::json!(["build"]));
    let strip = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "command strip")
        .unwrap();
    assert_eq!(
        strip,
        &serde_json::json!({
            "name": "command strip",
            "need": "build",
            "status": "missing",
            "detail": "not on PATH (strips the node binary)",
            "fix": "apt-get install --no-install-recommends binutils",
            "package": "binutils",
        })
    );
}

#[test]
fn preflight_names_the_command_and_only_its_part() {
    let host = fresh();
    let err = preflight(&host, "haimg deploy", Need::Deploy, &opts(&[])).unwrap_err();
    insta::assert_snapshot!("doctor_preflight_deploy", err.to_string());
    assert!(err.report.checks.iter().all(|c| c.need == Need::Deploy));
    assert!(preflight(&ready(), "haimg build", Need::Build, &opts(&[])).is_ok());
}

#[test]
fn kernel_and_disk_problems_say_what_to_change() {
    let mut host = ready();
    host.euid = 1000;
    host.free = 1 << 30;
    host.idmap = Err("mount_setattr: Invalid argument (os error 22)".into());
    host.files
        .insert("/proc/sys/user/max_user_namespaces".into(), "0\n".into());
    host.files.insert(
        "/proc/cgroups".into(),
        PROC_CGROUPS.replace("pids\t5\t1\t1", "pids\t5\t1\t0"),
    );
    host.writable = false;
    host.runner.clear();
    host.runner.on("nft", |_| {
        Ok(Output::fail(
            1,
            "Error: Could not process rule: No such file or directory\n",
        ))
    });
    host.runner.on("unshare", |_| {
        Ok(Output::fail(2, "Error: Unknown device type.\n"))
    });
    let r = run(&host, &opts(&[Need::Build, Need::Deploy]));
    let text: String = r.missing().map(|c| format!("{}\n", line(c, 0))).collect();
    insta::assert_snapshot!("doctor_kernel_and_disk", text);
}

#[test]
fn privileged_containers_need_no_id_mapping() {
    let mut host = ready();
    host.idmap = Err("no".into());
    host.files
        .insert("/proc/sys/user/max_user_namespaces".into(), "0\n".into());
    let mut o = opts(&[Need::Deploy]);
    o.privileged = true;
    let r = run(&host, &o);
    assert!(r.ok, "{}", r.render());
    assert!(!r.checks.iter().any(|c| c.name.contains("userns.conf")));
    assert!(!r.checks.iter().any(|c| c.name.starts_with("ids ")));
}

#[test]
fn an_old_kernel_is_named() {
    let mut host = ready();
    host.idmap = Err("mount_setattr: Function not implemented (os error 38)".into());
    host.files.insert(
        "/proc/sys/kernel/osrelease".into(),
        "5.10.0-28-amd64\n".into(),
    );
    let r = run(&host, &opts(&[Need::Deploy]));
    let c = r.missing().next().unwrap();
    assert_eq!(c.name, "kernel idmapped mounts");
    assert_eq!(c.detail, "kernel 5.10.0-28-amd64 is older than 5.12");
}
