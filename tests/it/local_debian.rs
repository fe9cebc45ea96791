//! The local backend with a real Debian bookworm minbase rootfs (mmdebstrap,
//! built once and cached under `target/tmp/`), so Proxmox's tar flags,
//! merged-/usr symlinks, setuid bits, and the absence of /etc/hosts and
//! ifupdown in real templates are exercised, not just the busybox rootfs.
//! Needs root and the Debian mirror (prints SKIP without root).

use crate::local_support;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use haimg::backend::local::names::hex;
use haimg::backend::Backend;
use haimg::exec::{Cmd, CommandRunner, SystemRunner};
use haimg::model::Role;
use local_support::*;
use sha2::{Digest, Sha256};

const WEBAPP1: Ipv4Addr = Ipv4Addr::new(192, 168, 30, 106);

fn init_script() -> String {
    TEST_INIT
        .replace("#!/bin/sh", "#!/usr/local/bin/busybox sh")
        .replace("PATH=/bin", "PATH=/usr/local/bin:/usr/bin:/bin")
}

/// `target/tmp/haimg-test-bookworm-<hash>.tar.zst`, built by mmdebstrap when missing.
fn debian_template() -> PathBuf {
    let init = init_script();
    let key = hex(&Sha256::digest(init.as_bytes())[..6]);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = cache.join(format!("haimg-test-bookworm-{key}_amd64.tar.zst"));
    if out.is_file() {
        return out;
    }
    let work = tempfile::Builder::new()
        .prefix("haimg-test-mmdebstrap-")
        .tempdir()
        .unwrap();
    let init_path = work.path().join("init");
    std::fs::write(&init_path, &init).unwrap();
    std::fs::set_permissions(&init_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let partial = cache.join(format!(".{key}.partial.tar.zst"));
    let t0 = Instant::now();
    let c = Cmd::new("mmdebstrap", Duration::from_secs(600)).args([
        "--mode=root".to_string(),
        "--variant=minbase".into(),
        "--customize-hook=mkdir -p \"$1/usr/local/bin\"".into(),
        format!(
            "--customize-hook=copy-in {} /usr/local/bin",
            static_busybox().display()
        ),
        "--customize-hook=ln -s busybox \"$1/usr/local/bin/ip\"".into(),
        "--customize-hook=ln -s busybox \"$1/usr/local/bin/httpd\"".into(),
        format!("--customize-hook=copy-in {} /sbin", init_path.display()),
        "bookworm".into(),
        partial.display().to_string(),
    ]);
    SystemRunner
        .run(&c)
        .expect("mmdebstrap (apt-get install mmdebstrap; needs the Debian mirror)");
    std::fs::rename(&partial, &out).unwrap();
    figure("mmdebstrap minbase (cache miss)", t0.elapsed());
    out
}

#[test]
fn debian_minbase_member() {
    if !can_run("debian_minbase_member") {
        return;
    }
    let tpl_src = debian_template();
    let mut tc = TestCluster::new("d", false);
    let b = &tc.backend;
    // the store wants its own file name; link the cached build under it
    let named = tc.tmp.path().join("haimg-webapp_0.0.1_amd64.tar.zst");
    std::fs::copy(&tpl_src, &named).unwrap();
    let sha = haimg::backend::local::template::sha256_file(&named).unwrap();
    let tpl = upload(b, &named, &sha);

    let t0 = Instant::now();
    b.create(&spec(108, "webapp3", Role::Webapp, WEBAPP1, &tpl, false))
        .unwrap();
    figure("create from a Debian minbase template", t0.elapsed());
    let rootfs = b.lxcpath().join(b.container_name(108)).join("rootfs");
    let su = std::fs::metadata(rootfs.join("usr/bin/su")).unwrap();
    assert_ne!(su.permissions().mode() & 0o4000, 0, "setuid bit kept");
    assert!(std::fs::symlink_metadata(rootfs.join("bin"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        rootfs.join("dev").read_dir().unwrap().count(),
        0,
        "./dev/* excluded"
    );

    let t0 = Instant::now();
    b.start("pve3", 108).unwrap();
    let (page, _) = wait_http(b, WEBAPP1, Duration::from_secs(15));
    figure("Debian CT: start to first HTTP 200", t0.elapsed());
    assert!(page.contains("\nuts=webapp3\n"), "{page}");
    assert!(page.contains("\nuid_map=0 100000 65536\n"), "{page}");
    // no /etc/hosts in the template: Proxmox writes the full section
    assert!(page.contains("--- hosts\n# --- BEGIN PVE ---\n127.0.0.1 localhost.localnet localhost\n::1 localhost.localnet localhost\n192.168.30.106 webapp3\n# --- END PVE ---\n"), "{page}");
    let ifaces = std::fs::read_to_string(rootfs.join("etc/network/interfaces")).unwrap();
    assert_eq!(
        ifaces,
        "auto lo\niface lo inet loopback\niface lo inet6 loopback\n\nauto eth0\niface eth0 inet static\n\taddress 192.168.30.106/24\n\tgateway 192.168.30.1\n\n"
    );

    let t0 = Instant::now();
    b.shutdown("pve3", 108, Duration::from_secs(5)).unwrap();
    figure("Debian CT: shutdown", t0.elapsed());
    b.destroy("pve3", 108).unwrap();
    tc.down_and_check(&[108]);
}
