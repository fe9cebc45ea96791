//! Shared helpers of the local-backend integration tests (`tests/local_*.rs`).
//!
//! A test cluster lives in its own temp state directory, so every bridge,
//! namespace, veth and container name is unique to the run; its Drop guard
//! runs `down` on every exit path, panics included. The test template is a
//! tiny rootfs built here: the host's static busybox plus an init script that
//! configures eth0 from the `/etc/network/interfaces` the backend wrote (as
//! haimg-init will), serves what it sees over HTTP on port 80, and stops on
//! the halt signal, logging which one arrived.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use haimg::backend::local::{host, net, LocalBackend, LocalOptions};
use haimg::backend::{ContainerSpec, StoredTemplate};
use haimg::exec::SystemRunner;
use haimg::model::Role;
use haimg::probe::netns;

/// Print why and return false when the test cannot run here.
pub fn can_run(test: &str) -> bool {
    if !host::is_root() {
        crate::support::skip(
            test,
            "needs root (LXC containers, a bridge, network namespaces)",
        );
        return false;
    }
    true
}

/// The static busybox the test rootfs is made of (Debian: busybox-static).
pub fn static_busybox() -> PathBuf {
    for p in ["/usr/bin/busybox", "/bin/busybox"] {
        let p = Path::new(p);
        if p.is_file() && !has_interp(p) {
            return p.to_path_buf();
        }
    }
    panic!("the local backend tests need a static busybox: apt-get install busybox-static");
}

/// Does this ELF64 file ask for a dynamic loader (a PT_INTERP segment)?
fn has_interp(path: &Path) -> bool {
    let b = std::fs::read(path).unwrap_or_default();
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return true;
    }
    let u16le = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64le = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64le(0x20), u16le(0x36), u16le(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) == 3
    })
}

pub const TEST_INIT: &str = r#"#!/bin/sh
# haimg local-backend test init (PID 1): configure eth0 from the
# Proxmox-style /etc/network/interfaces, serve what we see, stop on halt.
PATH=/bin
echo "test-init: start pid $$"
addr=$(awk '$1=="address"{print $2; exit}' /etc/network/interfaces)
gw=$(awk '$1=="gateway"{print $2; exit}' /etc/network/interfaces)
ip link set lo up
if ip -4 addr show dev eth0 | grep -q "inet "; then
  net=host
else
  net=init
  ip addr add "$addr" dev eth0
  ip link set eth0 up
  ip route add default via "$gw"
fi
if [ -d /var/lib/mongodb ]; then echo "$HAIMG_SLOT" >> /var/lib/mongodb/owners; fi
mkdir -p /run/www
{
  echo "uts=$(hostname)"
  echo "hostname=$(cat /etc/hostname)"
  echo "role=$HAIMG_ROLE slot=$HAIMG_SLOT cluster=$HAIMG_CLUSTER"
  echo "uid_map=$(cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //')"
  echo "addr=$addr gw=$gw net=$net"
  echo "--- hosts"; cat /etc/hosts
  echo "--- resolv.conf"; cat /etc/resolv.conf
  echo "--- owners"; cat /var/lib/mongodb/owners 2>/dev/null
} > /run/www/index.html
httpd -f -p 80 -h /run/www &
child=$!
halt() { echo "test-init: halt signal $1"; kill $child; wait $child; exit 0; }
trap 'halt PWR' PWR
trap 'halt TERM' TERM
echo "test-init: serving on $addr"
while :; do wait $child; done
"#;

/// Build the test template (`<dir>/haimg-test_<tag>_amd64.tar.zst`); `init`
/// false leaves out /sbin/init (a template that cannot start).
pub fn build_template(dir: &Path, tag: &str, init: bool) -> (PathBuf, String) {
    build_template_from(dir, tag, init.then_some(TEST_INIT), &[])
}

/// [`build_template`] with `init` as /sbin/init (none: a template that
/// cannot start) and `files` (path in the rootfs, content) added.
pub fn build_template_from(
    dir: &Path,
    tag: &str,
    init: Option<&str>,
    files: &[(&str, &str)],
) -> (PathBuf, String) {
    let root = dir.join(format!("rootfs-{tag}"));
    for d in [
        "bin", "sbin", "etc", "dev", "proc", "sys", "run", "tmp", "var/lib",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(static_busybox(), root.join("bin/busybox")).unwrap();
    for a in [
        "sh", "ip", "awk", "cat", "hostname", "httpd", "mkdir", "echo", "kill", "tr", "sed",
        "sleep", "printf",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("etc/debian_version"), "12.15\n").unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        "PRETTY_NAME=\"haimg test\"\nID=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();
    for (path, content) in files {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    if let Some(script) = init {
        let p = root.join("sbin/init");
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = dir.join(format!("haimg-test_{tag}_amd64.tar.zst"));
    let st = Command::new("tar")
        .args(["--zstd", "--numeric-owner", "-C"])
        .arg(&root)
        .args(["-cf"])
        .arg(&out)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar failed");
    let sha = haimg::backend::local::template::sha256_file(&out).unwrap();
    (out, sha)
}

/// One local cluster in a temp state directory; `down` on drop.
pub struct TestCluster {
    pub backend: LocalBackend,
    pub tmp: tempfile::TempDir,
    pub downed: bool,
}

impl TestCluster {
    pub fn new(cluster: &str, privileged: bool) -> TestCluster {
        let tmp = tempfile::Builder::new()
            .prefix("haimg-test-")
            .tempdir()
            .unwrap();
        let mut opts = LocalOptions::detect(cluster);
        opts.state_dir = tmp.path().join(cluster);
        opts.privileged = privileged;
        let backend = LocalBackend::new(cluster, opts, Arc::new(SystemRunner)).unwrap();
        TestCluster {
            backend,
            tmp,
            downed: false,
        }
    }

    /// `down` (timed), then check nothing of the CTs `vmids` is left on the host.
    pub fn down_and_check(
        &mut self,
        vmids: &[u32],
    ) -> (haimg::backend::local::DownReport, Duration) {
        let t0 = Instant::now();
        let report = self.backend.down().expect("down");
        let took = t0.elapsed();
        self.downed = true;
        assert_nothing_left(&self.backend, &self.names(vmids));
        (report, took)
    }

    pub fn names(&self, vmids: &[u32]) -> Vec<String> {
        vmids
            .iter()
            .map(|&v| self.backend.container_name(v))
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if !self.downed {
            if let Err(e) = self.backend.down() {
                eprintln!("cleanup: down failed: {e}");
            }
        }
    }
}

/// No bridge, veth, namespace, mount, process or state directory of this cluster.
pub fn assert_nothing_left(b: &LocalBackend, names: &[String]) {
    let n = b.names();
    let links = net::links(&SystemRunner).unwrap();
    let ours: Vec<&String> = links
        .iter()
        .filter(|l| **l == n.bridge() || **l == n.client_veth() || n.is_ct_veth(l))
        .collect();
    assert!(ours.is_empty(), "links left: {ours:?}");
    assert!(
        !net::netns_list(&SystemRunner).unwrap().contains(&n.netns()),
        "netns {} left",
        n.netns()
    );
    assert!(!Path::new("/run/netns").join(n.netns()).exists());
    let mounts = host::current_mounts_under(b.state_dir()).unwrap();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let pids = host::container_pids(&b.lxcpath(), names);
    assert!(pids.is_empty(), "processes left: {pids:?}");
    assert!(host::leftover_cgroups(names).is_empty(), "cgroups left");
    assert!(!b.state_dir().exists(), "state dir left");
}

/// Upload under the stored name of the built name `path` has.
pub fn upload(b: &LocalBackend, path: &Path, sha: &str) -> StoredTemplate {
    use haimg::backend::Backend;
    b.upload_template("pve1", path, &stored_name(path, sha), sha)
        .expect("upload")
}

/// The stored form of the test templates' names (whose "roles" are not
/// haimg's): `haimg-test_1_amd64.tar.zst` -> `haimg-test_1-<sha12>_amd64.tar.zst`.
pub fn stored_name(path: &Path, sha: &str) -> String {
    let file = path.file_name().unwrap().to_str().unwrap();
    let (head, ext) = file.rsplit_once("_amd64.").expect("a template file name");
    format!("{head}-{}_amd64.{ext}", &sha[..12])
}

/// A member spec in the seed's network.
pub fn spec(
    vmid: u32,
    slot: &str,
    role: Role,
    ip: Ipv4Addr,
    template: &StoredTemplate,
    data_volume: bool,
) -> ContainerSpec {
    ContainerSpec {
        vmid,
        node: "pve1".into(),
        hostname: slot.into(),
        role,
        slot: slot.into(),
        template: template.clone(),
        ip,
        prefix: 24,
        gateway: Ipv4Addr::new(192, 168, 30, 1),
        bridge: "vmbr0".into(),
        hwaddr: format!("BC:24:11:30:{:02X}:{:02X}", vmid / 256 % 256, vmid % 256),
        nameservers: vec![Ipv4Addr::new(192, 168, 30, 1)],
        search_domain: None,
        cores: 1,
        memory_mb: 256,
        rootfs_gb: 2,
        data_volume_gb: data_volume.then_some(1),
        data_mount: data_volume.then(|| "/var/lib/mongodb".to_string()),
        tags: vec!["haimg".into(), slot.into()],
        env: vec![
            ("HAIMG_ROLE".into(), role.to_string()),
            ("HAIMG_SLOT".into(), slot.into()),
        ],
        onboot: false,
        entrypoint: None,
        host_managed: false,
    }
}

/// `GET /` over HTTP/1.0 from inside `netns_path`; the whole response.
pub fn http_get(netns_path: &Path, ip: Ipv4Addr, timeout: Duration) -> std::io::Result<String> {
    http_get_from(netns_path, None, ip, timeout)
}

/// Like [`http_get`], from source address `src` (bound before connecting).
pub fn http_get_from(
    netns_path: &Path,
    src: Option<Ipv4Addr>,
    ip: Ipv4Addr,
    timeout: Duration,
) -> std::io::Result<String> {
    netns::run_in(netns_path, || {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        if let Some(src) = src {
            sock.bind(&SocketAddr::from((src, 0)).into())?;
        }
        sock.connect_timeout(&SocketAddr::from((ip, 80)).into(), timeout)?;
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })?
}

/// Poll `f` until it returns `Some` or the deadline passes.
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until the member answers 200 from the client namespace.
pub fn wait_http(b: &LocalBackend, ip: Ipv4Addr, within: Duration) -> (String, Duration) {
    let ns = b.network().unwrap().expect("network").netns_path;
    wait_for(&format!("HTTP 200 from {ip}"), within, || {
        http_get(&ns, ip, Duration::from_millis(500))
            .ok()
            .filter(|r| r.starts_with("HTTP/1.") && r.contains(" 200 "))
    })
}

/// A throwaway namespace of the test's own with an address in the same
/// network but no link to the cluster's bridge.
pub struct Outsider {
    pub name: String,
}

impl Outsider {
    pub fn new(tag: &str) -> Outsider {
        let name = format!("haimg-test-out-{}-{tag}", std::process::id());
        // Built first, so its Drop removes the namespace if a step fails.
        let me = Outsider { name: name.clone() };
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "-n", &name, "link", "add", "o0", "type", "veth", "peer", "name", "o1",
        ]);
        ip(&["-n", &name, "addr", "add", "192.168.30.50/24", "dev", "o0"]);
        ip(&["-n", &name, "link", "set", "o0", "up"]);
        ip(&["-n", &name, "link", "set", "o1", "up"]);
        me
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Print a measured figure in a greppable form.
pub fn figure(name: &str, d: Duration) {
    eprintln!("FIGURE {name}: {:.3}s", d.as_secs_f64());
}
