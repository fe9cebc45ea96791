//! The LXC configuration of one local container, shaped like the one Proxmox
//! VE generates (`PVE::LXC::update_lxc_config`) for an `ostype=debian` CT.
//!
//! Pure: [`LxcInput`] → text. Where the local backend deliberately differs
//! from Proxmox, the line says so in the rendered comment header and the
//! module docs below; everything else follows Proxmox's order and defaults
//! (tty count 2, `TERM=linux`, the Debian common and userns settings,
//! `sys:mixed` for unprivileged CTs, `veth` with a fixed pair name and hwaddr).
//!
//! Differences from Proxmox, on purpose:
//! - Proxmox includes `debian.common.conf` and `debian.userns.conf` from its
//!   own LXC package (lxc-pve ships them). On Debian those two files come
//!   with `lxc-templates`, a package the local backend does not otherwise
//!   need, so the config includes only what `liblxc-common` ships
//!   (`common.conf`, `userns.conf`, see [`host_files`]) and writes the few
//!   lines the Debian files add in their place ([`DEBIAN_COMMON`]): same
//!   settings, in the same order, without a file of a package setup does not
//!   install.
//! - `lxc.net.0.link` attaches the veth to the cluster bridge (Proxmox uses
//!   its `lxcnetaddbr` up-script for the same effect).
//! - PID-1 environment goes to `lxc.environment` (LXC 5.0 here has no
//!   `lxc.environment.runtime`, which Proxmox >= 9.1 writes for `env`).
//! - Memory and pids limits use the cgroup v1 keys on a host with a v1 memory
//!   controller (this machine is hybrid) and `lxc.cgroup2.*` on a pure v2 host.
//!   Proxmox >= 7 only writes v2 keys. `cores` is not pinned (Proxmox picks a
//!   random cpuset; on a 2-core CI machine that only adds noise).
//! - Unprivileged CTs get an idmapped rootfs (`lxc.rootfs.options =
//!   idmap=container`) instead of a chowned one, and the data volume is an
//!   idmapped bind mount, so host files keep plain 0..65535 owners.
//! - `lxc.signal.halt` is not set: the init gets SIGPWR as on Proxmox (or
//!   SIGRTMIN+3 if it blocks that), unless `halt_signal` asks otherwise.
//!
//! As on Proxmox >= 9.1: `entrypoint` becomes `lxc.init.cmd` (plus a /dev/shm
//! tmpfs when it is not `/sbin/init`), and `host-managed` networking writes
//! `lxc.net.0.ipv4.address`, `ipv4.gateway` and `flags = up`.
//!
//! Invariant: every value goes through [`quote::lxc`] (one line, nothing LXC
//! would trim); `validate` in the parent module refuses bad values earlier
//! with a message naming the field. Every file the config includes is in
//! [`host_files`], which `haimg doctor` checks.

use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use haimg_model::quote::{self, Unquotable};

/// Which cgroup keys the host understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// A v1 `memory` controller is mounted (legacy or hybrid host).
    V1,
    /// Pure cgroup2 (unified) host.
    V2,
}

impl CgroupMode {
    /// From `/proc/self/cgroup`, as Proxmox's `get_cgroup_controllers` reads it.
    pub fn from_proc_self_cgroup(text: &str) -> CgroupMode {
        let v1_memory = text.lines().any(|l| {
            let mut parts = l.splitn(3, ':');
            parts.next();
            parts
                .next()
                .is_some_and(|ctl| ctl.split(',').any(|c| c == "memory"))
        });
        if v1_memory {
            CgroupMode::V1
        } else {
            CgroupMode::V2
        }
    }
}

/// An unprivileged CT's uid/gid map: container 0.. → host `host_base`..
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub host_base: u32,
    pub count: u32,
}

impl Default for IdMap {
    /// Proxmox's fixed map.
    fn default() -> IdMap {
        IdMap {
            host_base: 100_000,
            count: 65_536,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LxcInput {
    pub cluster: String,
    pub vmid: u32,
    pub hostname: String,
    /// `None`: privileged.
    pub idmap: Option<IdMap>,
    pub cgroup: CgroupMode,
    pub memory_mb: u32,
    pub pids_max: u32,
    pub rootfs: PathBuf,
    pub bridge: String,
    pub veth_pair: String,
    pub hwaddr: String,
    pub mtu: u32,
    pub env: Vec<(String, String)>,
    /// Host directory and the path inside the CT (absolute).
    pub data_volume: Option<(PathBuf, String)>,
    pub console_log: PathBuf,
    pub halt_signal: Option<String>,
    /// `lxc.init.cmd` (Proxmox >= 9.1 `entrypoint`); `None` = LXC's `/sbin/init`.
    pub init_cmd: Option<String>,
    /// LXC sets the address, gateway and link state of eth0 (Proxmox >= 9.1
    /// `host-managed=1`); otherwise eth0 comes up down and unaddressed.
    pub host_managed: bool,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// Where `liblxc-common` puts the shared configuration files.
pub const LXC_CONFIG_DIR: &str = "/usr/share/lxc/config";

/// What Debian's `debian.common.conf` (package `lxc-templates`) adds to
/// `common.conf`: consoles not under `/dev/lxc/` (`lxc.tty.dir` empty), and
/// access to the rtc, tun, hpet and kvm devices, as `(major:minor, access)`.
/// Debian writes these as `lxc.cgroup.devices.allow` (v1) only, which a pure
/// cgroup2 host ignores; here they use the key family of the host's layout.
/// `debian.userns.conf` adds nothing to `userns.conf`. For an unprivileged CT
/// `userns.conf`, included after these lines, clears the device list again,
/// exactly as the two Debian files do in that order.
pub const DEBIAN_COMMON: [(&str, &str); 4] = [
    ("c 254:0", "rm"),
    ("c 10:200", "rwm"),
    ("c 10:228", "rwm"),
    ("c 10:232", "rwm"),
];

/// The host files a config of this module includes (directly; `common.conf`
/// itself includes `common.conf.d/` and names `common.seccomp`, which
/// `haimg doctor` follows from the file's own lines).
pub fn host_files(privileged: bool) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from(format!("{LXC_CONFIG_DIR}/common.conf"))];
    if !privileged {
        v.push(PathBuf::from(format!("{LXC_CONFIG_DIR}/userns.conf")));
    }
    v
}

/// Render the config file LXC reads (`<lxcpath>/<name>/config`).
pub fn render(i: &LxcInput) -> Result<String, Unquotable> {
    let mut lines: Vec<(&str, String)> = Vec::new();
    let mut line = |k: &'static str, v: &dyn std::fmt::Display| lines.push((k, v.to_string()));
    line("lxc.arch", &"amd64");
    let files = host_files(i.idmap.is_none());
    line("lxc.include", &files[0].display());
    // debian.common.conf, in its own order (see DEBIAN_COMMON).
    line("lxc.tty.dir", &"");
    let devices = match i.cgroup {
        CgroupMode::V1 => "lxc.cgroup.devices.allow",
        CgroupMode::V2 => "lxc.cgroup2.devices.allow",
    };
    for (dev, access) in DEBIAN_COMMON {
        line(devices, &format!("{dev} {access}"));
    }
    if let Some(userns) = files.get(1) {
        line("lxc.include", &userns.display());
        line("lxc.mount.auto", &"sys:mixed");
    }
    if i.init_cmd.as_deref().is_some_and(|c| c != "/sbin/init") {
        // Proxmox: no init system may set up /dev/shm, so mount it.
        line(
            "lxc.mount.entry",
            &"shm dev/shm tmpfs rw,nosuid,nodev,create=dir 0 0",
        );
    }
    if let Some(m) = i.idmap {
        line("lxc.idmap", &format!("u 0 {} {}", m.host_base, m.count));
        line("lxc.idmap", &format!("g 0 {} {}", m.host_base, m.count));
    }
    line("lxc.tty.max", &2);
    line("lxc.environment", &"TERM=linux");
    line("lxc.uts.name", &i.hostname);
    let mem = u64::from(i.memory_mb) * 1024 * 1024;
    match i.cgroup {
        CgroupMode::V1 => {
            line("lxc.cgroup.memory.limit_in_bytes", &mem);
            line("lxc.cgroup.pids.max", &i.pids_max);
        }
        CgroupMode::V2 => {
            line("lxc.cgroup2.memory.max", &mem);
            line("lxc.cgroup2.pids.max", &i.pids_max);
        }
    }
    line("lxc.rootfs.path", &format!("dir:{}", i.rootfs.display()));
    if i.idmap.is_some() {
        line("lxc.rootfs.options", &"idmap=container");
    }
    if let Some(cmd) = &i.init_cmd {
        line("lxc.init.cmd", cmd);
    }
    line("lxc.net.0.type", &"veth");
    line("lxc.net.0.veth.pair", &i.veth_pair);
    line("lxc.net.0.hwaddr", &i.hwaddr);
    line("lxc.net.0.name", &"eth0");
    line("lxc.net.0.mtu", &i.mtu);
    line("lxc.net.0.link", &i.bridge);
    if i.host_managed {
        line("lxc.net.0.ipv4.address", &format!("{}/{}", i.ip, i.prefix));
        line("lxc.net.0.ipv4.gateway", &i.gateway);
        line("lxc.net.0.flags", &"up");
    }
    for (k, v) in &i.env {
        line("lxc.environment", &format!("{k}={v}"));
    }
    if let Some((dir, target)) = &i.data_volume {
        let idmap = if i.idmap.is_some() {
            ",idmap=container"
        } else {
            ""
        };
        line(
            "lxc.mount.entry",
            &format!(
                "{} {} none bind,create=dir{idmap} 0 0",
                dir.display(),
                target.trim_start_matches('/')
            ),
        );
    }
    line("lxc.console.logfile", &i.console_log.display());
    if let Some(sig) = &i.halt_signal {
        line("lxc.signal.halt", sig);
    }
    let mut o = format!(
        "# haimg local backend: CT {} ({}, {}/{}) of cluster {}.\n\
         # Written before every start from the state file; edits here are lost.\n",
        i.vmid,
        quote::lxc(&i.hostname)?,
        i.ip,
        i.prefix,
        quote::lxc(&i.cluster)?
    );
    for (k, v) in lines {
        // Writing to a String cannot fail. An empty value clears a setting
        // of an included file (`lxc.tty.dir =`).
        let _ = match quote::lxc(&v)? {
            "" => writeln!(o, "{k} ="),
            v => writeln!(o, "{k} = {v}"),
        };
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> LxcInput {
        LxcInput {
            cluster: "haimg".into(),
            vmid: 103,
            hostname: "mongo1".into(),
            idmap: Some(IdMap::default()),
            cgroup: CgroupMode::V1,
            memory_mb: 2048,
            pids_max: 4096,
            rootfs: "[STATE]/lxc/haimg-0a1b2c3d-103/rootfs".into(),
            bridge: "hmb0a1b2c3d".into(),
            veth_pair: "h0a1b2cv103".into(),
            hwaddr: "BC:24:11:30:01:03".into(),
            mtu: 1500,
            env: vec![
                ("HAIMG_ROLE".into(), "mongo".into()),
                ("HAIMG_SLOT".into(), "mongo1".into()),
                ("HAIMG_IP".into(), "192.168.30.103/24".into()),
            ],
            data_volume: Some((
                "[STATE]/volumes/vm-103-disk-data".into(),
                "/var/lib/mongodb".into(),
            )),
            console_log: "[STATE]/lxc/haimg-0a1b2c3d-103/console.log".into(),
            halt_signal: None,
            init_cmd: None,
            host_managed: false,
            ip: "192.168.30.103".parse().unwrap(),
            prefix: 24,
            gateway: "192.168.30.1".parse().unwrap(),
        }
    }

    #[test]
    fn unprivileged_cgroup_v1() {
        insta::assert_snapshot!("lxc_config_unprivileged_v1", render(&input()).unwrap());
    }

    #[test]
    fn privileged_cgroup_v2_without_volume() {
        let i = LxcInput {
            idmap: None,
            cgroup: CgroupMode::V2,
            vmid: 100,
            hostname: "nginx1".into(),
            memory_mb: 256,
            rootfs: "[STATE]/lxc/haimg-0a1b2c3d-100/rootfs".into(),
            veth_pair: "h0a1b2cv100".into(),
            hwaddr: "BC:24:11:30:01:00".into(),
            env: vec![("HAIMG_ROLE".into(), "lb".into())],
            data_volume: None,
            console_log: "[STATE]/lxc/haimg-0a1b2c3d-100/console.log".into(),
            ip: "192.168.30.100".parse().unwrap(),
            ..input()
        };
        insta::assert_snapshot!("lxc_config_privileged_v2", render(&i).unwrap());
    }

    #[test]
    fn entrypoint_and_host_managed_network_like_pve_9_1() {
        let mut i = input();
        i.init_cmd = Some("/usr/local/bin/pm2-runtime".into());
        i.host_managed = true;
        insta::assert_snapshot!("lxc_config_entrypoint_host_managed", render(&i).unwrap());
        i.init_cmd = Some("/sbin/init".into());
        let r = render(&i).unwrap();
        assert!(r.contains("\nlxc.init.cmd = /sbin/init\n"));
        assert!(!r.contains("dev/shm"), "no extra /dev/shm for /sbin/init");
    }

    #[test]
    fn includes_only_what_liblxc_common_ships() {
        for privileged in [false, true] {
            let mut i = input();
            if privileged {
                i.idmap = None;
            }
            let r = render(&i).unwrap();
            let included: Vec<PathBuf> = r
                .lines()
                .filter_map(|l| l.strip_prefix("lxc.include = "))
                .map(PathBuf::from)
                .collect();
            assert_eq!(included, host_files(privileged), "{r}");
            assert!(!r.contains("debian."), "{r}");
            // Debian's device lines sit between common.conf and userns.conf,
            // so userns.conf clears them for an unprivileged CT as it does there.
            let pos = |needle: &str| r.find(needle).unwrap();
            assert!(pos("common.conf") < pos("c 10:200 rwm"));
            if !privileged {
                assert!(pos("c 10:232 rwm") < pos("userns.conf"));
            }
            assert!(r.contains("\nlxc.tty.dir =\n"), "{r}");
        }
    }

    #[test]
    fn halt_signal_only_when_asked() {
        assert!(!render(&input()).unwrap().contains("lxc.signal.halt"));
        let mut i = input();
        i.halt_signal = Some("SIGTERM".into());
        assert!(render(&i).unwrap().ends_with("lxc.signal.halt = SIGTERM\n"));
    }

    #[test]
    fn a_value_cannot_start_another_key() {
        let mut i = input();
        i.env.push((
            "HAIMG_X".into(),
            "1\nlxc.mount.entry = / host none bind 0 0".into(),
        ));
        assert_eq!(
            render(&i).unwrap_err().to_string(),
            "a value cannot be written into an LXC config: control character U+000A at character 10 (a config line ends at a line break)"
        );
        let mut i = input();
        i.hostname = "mongo1\nlxc.apparmor.profile = unconfined".into();
        assert!(render(&i).is_err());
    }

    #[test]
    fn cgroup_mode_detection() {
        let hybrid = "12:pids:/\n11:blkio:/\n5:memory:/\n3:cpu:/\n1:name=systemd:/\n0::/\n";
        assert_eq!(CgroupMode::from_proc_self_cgroup(hybrid), CgroupMode::V1);
        assert_eq!(
            CgroupMode::from_proc_self_cgroup("0::/init.scope\n"),
            CgroupMode::V2
        );
        let no_mem = "4:cpu,cpuacct:/\n0::/\n";
        assert_eq!(CgroupMode::from_proc_self_cgroup(no_mem), CgroupMode::V2);
    }
}
