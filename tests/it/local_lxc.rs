//! The local backend against real LXC on this host (needs root; prints SKIP
//! otherwise). Each test owns a cluster in a temp state directory, so all
//! names are unique to the run, and a Drop guard runs `down` on every exit.
//! Timings are printed as `FIGURE <name>: <seconds>` lines
//! (`cargo test --test it local_lxc -- --nocapture | grep FIGURE`).

use crate::local_support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use haimg::backend::local::LocalError;
use haimg::backend::{Backend, BackendError, PowerState};
use haimg::model::Role;
use local_support::*;

const NGINX1: Ipv4Addr = Ipv4Addr::new(192, 168, 30, 100);
const MONGO1: Ipv4Addr = Ipv4Addr::new(192, 168, 30, 103);

fn local_err(e: BackendError) -> LocalError {
    e.into_target::<LocalError>()
        .unwrap_or_else(|other| panic!("not a local backend error: {other}"))
}

#[test]
fn unprivileged_member_lifecycle() {
    if !can_run("unprivileged_member_lifecycle") {
        return;
    }
    let mut tc = TestCluster::new("t", false);
    let b = &tc.backend;
    let (tpl_path, sha) = build_template(tc.tmp.path(), "life", true);

    // upload: copy + verify, then a verified no-op
    let t0 = Instant::now();
    let tpl = upload(b, &tpl_path, &sha);
    figure("upload_template", t0.elapsed());
    let stored = std::path::PathBuf::from(&tpl.volid);
    let mtime = std::fs::metadata(&stored).unwrap().modified().unwrap();
    assert_eq!(upload(b, &tpl_path, &sha), tpl);
    assert_eq!(
        std::fs::metadata(&stored).unwrap().modified().unwrap(),
        mtime
    );
    assert_eq!(b.list_templates("pve1").unwrap(), vec![tpl.clone()]);
    let e = b
        .upload_template(
            "pve1",
            &tpl_path,
            &stored_name(&tpl_path, &"ab".repeat(32)),
            &"ab".repeat(32),
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("sha256 is {sha}, expected abab")),
        "{e}"
    );

    // create: stopped, Proxmox files already in the rootfs
    let spec = spec(100, "nginx1", Role::Lb, NGINX1, &tpl, true);
    let t0 = Instant::now();
    b.create(&spec).unwrap();
    figure("create", t0.elapsed());
    let st = b.status("pve1", 100).unwrap().unwrap();
    assert_eq!(st.state, PowerState::Stopped);
    assert_eq!(st.tags, ["haimg", "nginx1"]);
    let rootfs = b.lxcpath().join(b.container_name(100)).join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/hostname")).unwrap(),
        "nginx1\n"
    );
    assert!(matches!(
        local_err(b.create(&spec).unwrap_err()),
        LocalError::Exists { vmid: 100, .. }
    ));

    // start: answers from the client namespace
    let t0 = Instant::now();
    b.start("pve1", 100).unwrap();
    let started = t0.elapsed();
    figure("start (lxc-start returns)", started);
    let (page, waited) = wait_http(b, NGINX1, Duration::from_secs(10));
    figure("start to first HTTP 200", started + waited);
    assert!(page.contains("\nuts=nginx1\n"), "{page}");
    assert!(page.contains("\nhostname=nginx1\n"), "{page}");
    assert!(page.contains("\nrole=lb slot=nginx1 cluster=\n"), "{page}");
    assert!(
        page.contains("\nuid_map=0 100000 65536\n"),
        "unprivileged: {page}"
    );
    assert!(
        page.contains("\naddr=192.168.30.100/24 gw=192.168.30.1 net=init\n"),
        "{page}"
    );
    assert!(
        page.contains("\n192.168.30.100 nginx1\n# --- END PVE ---\n"),
        "{page}"
    );
    assert!(
        page.contains(
            "--- resolv.conf\n# --- BEGIN PVE ---\nnameserver 192.168.30.1\n# --- END PVE ---\n"
        ),
        "{page}"
    );
    assert!(page.contains("--- owners\nnginx1\n"), "data volume: {page}");
    assert_eq!(
        b.status("pve1", 100).unwrap().unwrap().state,
        PowerState::Running
    );
    // The unprivileged CT started from owner-only directories, and no other
    // host user can reach its rootfs (files there are owned by host uids
    // 0..65535, setuid ones included).
    {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let ct = b.lxcpath().join(b.container_name(100));
        assert_eq!(mode(&ct), 0o700);
        // Container root passes through these (lxc-start checks it can).
        for d in [
            b.state_dir().to_path_buf(),
            b.lxcpath(),
            b.state_dir().join("volumes"),
        ] {
            assert_eq!(mode(&d), 0o710, "{}", d.display());
        }
        let nobody = std::process::Command::new("stat")
            .arg(rootfs.join("etc/hostname"))
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(!nobody.status.success(), "nobody reached the rootfs");
        assert!(
            String::from_utf8_lossy(&nobody.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&nobody.stderr)
        );
    }
    let init = b.init_pid(100).unwrap().expect("init pid") as i32;
    let procs = b.processes(100);
    assert!(procs.iter().any(|p| p.pid == init), "{procs:?}");
    assert!(
        procs
            .iter()
            .any(|p| p.cmdline.starts_with("httpd -f -p 80")),
        "{procs:?}"
    );
    assert!(procs.iter().all(|p| p.state != 'Z'), "zombies: {procs:?}");
    let out = b
        .attach(100, &["cat", "/etc/hostname"], Duration::from_secs(10))
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout_str(), "nginx1\n");
    let out = b
        .attach(100, &["sh", "-c", "exit 7"], Duration::from_secs(10))
        .unwrap();
    assert_eq!(out.ended, haimg::exec::Ended::Code(7));
    assert!(matches!(
        local_err(b.start("pve1", 100).unwrap_err()),
        LocalError::AlreadyRunning { vmid: 100 }
    ));

    // the host side of the data volume keeps plain owners (idmapped mount)
    let vol = b.state_dir().join("volumes/vm-100-disk-data/owners");
    assert_eq!(std::fs::read_to_string(&vol).unwrap(), "nginx1\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&vol).unwrap().uid(), 0);

    // cgroup limits applied
    let name = b.container_name(100);
    let v1 = format!("/sys/fs/cgroup/memory/lxc.payload.{name}/memory.limit_in_bytes");
    let v2 = format!("/sys/fs/cgroup/lxc.payload.{name}/memory.max");
    let limit = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .expect("memory limit file");
    assert_eq!(limit.trim(), (256u64 << 20).to_string());

    // isolation: the bridge carries no address, the host routes nothing to
    // it, and a namespace with an address in the same network cannot reach it
    let net = b.network().unwrap().unwrap();
    let addrs = std::process::Command::new("ip")
        .args(["-o", "addr", "show", "dev", &net.bridge])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&addrs.stdout).trim().is_empty(),
        "bridge has an address"
    );
    let route = std::process::Command::new("ip")
        .args(["route", "get", "192.168.30.100"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&route.stdout).contains(&net.bridge));
    let out = Outsider::new("life");
    assert!(http_get(&out.path(), NGINX1, Duration::from_millis(300)).is_err());
    // a client from another /24: replies go back through the gateway
    b.add_client_address(Ipv4Addr::new(10, 77, 0, 1)).unwrap();
    let page = http_get_from(
        &net.netns_path,
        Some(Ipv4Addr::new(10, 77, 0, 1)),
        NGINX1,
        Duration::from_secs(3),
    )
    .unwrap();
    assert!(page.contains("uts=nginx1"), "{page}");
    assert_eq!(
        net.curl_hint("http://192.168.30.100/"),
        format!("ip netns exec {} curl http://192.168.30.100/", net.netns)
    );

    // shutdown: the halt signal (SIGPWR, as on Proxmox), well under 5 s
    let t0 = Instant::now();
    b.shutdown("pve1", 100, Duration::from_secs(5)).unwrap();
    let took = t0.elapsed();
    figure("shutdown", took);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(b.processes(100).is_empty(), "processes left after shutdown");
    let console = std::fs::read_to_string(b.console_log(100)).unwrap();
    assert!(console.contains("test-init: halt signal PWR"), "{console}");
    assert_eq!(
        b.status("pve1", 100).unwrap().unwrap().state,
        PowerState::Stopped
    );
    assert!(matches!(
        local_err(b.shutdown("pve1", 100, Duration::from_secs(1)).unwrap_err()),
        LocalError::NotRunning { vmid: 100 }
    ));

    // a second start re-renders everything and works the same
    b.start("pve1", 100).unwrap();
    let (page, _) = wait_http(b, NGINX1, Duration::from_secs(10));
    assert!(page.contains("--- owners\nnginx1\nnginx1\n"), "{page}");
    let t0 = Instant::now();
    b.stop("pve1", 100).unwrap();
    figure("stop (kill)", t0.elapsed());
    assert!(matches!(
        local_err(b.stop("pve1", 100).unwrap_err()),
        LocalError::NotRunning { vmid: 100 }
    ));

    // tags, destroy
    b.set_tags("pve1", 100, &["haimg".into(), "standby".into()])
        .unwrap();
    assert_eq!(b.list().unwrap()[0].tags, ["haimg", "standby"]);
    b.destroy("pve1", 100).unwrap();
    assert_eq!(b.status("pve1", 100).unwrap(), None);
    assert!(!vol.exists());
    assert!(!rootfs.exists());

    let (report, took) = tc.down_and_check(&[100]);
    figure("down (no containers left)", took);
    assert!(report.network.bridge.is_some() && report.network.netns.is_some());
    assert!(report.state_dir_removed);
    assert!(tc.backend.down().unwrap().is_empty(), "down is idempotent");
}

#[test]
fn two_clusters_with_the_same_plan_are_isolated() {
    if !can_run("two_clusters_with_the_same_plan_are_isolated") {
        return;
    }
    let mut a = TestCluster::new("a", false);
    let mut p = TestCluster::new("p", true);
    for (tc, tag) in [(&a, "a"), (&p, "p")] {
        let (path, sha) = build_template(tc.tmp.path(), tag, true);
        let tpl = upload(&tc.backend, &path, &sha);
        let mut s = spec(100, "nginx1", Role::Lb, NGINX1, &tpl, false);
        s.env.push(("HAIMG_CLUSTER".into(), tag.into()));
        if tag == "p" {
            // Proxmox >= 9.1 style: explicit entrypoint, host-managed eth0.
            s.entrypoint = Some("/sbin/init".into());
            s.host_managed = true;
        }
        tc.backend.create(&s).unwrap();
        tc.backend.start("pve1", 100).unwrap();
    }
    let (page_a, _) = wait_http(&a.backend, NGINX1, Duration::from_secs(10));
    let (page_p, _) = wait_http(&p.backend, NGINX1, Duration::from_secs(10));
    assert!(page_a.contains("cluster=a\n"), "{page_a}");
    assert!(page_a.contains("\nuid_map=0 100000 65536\n"), "{page_a}");
    assert!(page_p.contains("cluster=p\n"), "{page_p}");
    assert!(
        page_p.contains("\nuid_map=0 0 4294967295\n"),
        "privileged: {page_p}"
    );
    assert!(page_a.contains(" net=init\n"), "{page_a}");
    assert!(page_p.contains(" net=host\n"), "host-managed: {page_p}");
    assert_ne!(a.backend.names().bridge(), p.backend.names().bridge());

    // down with running containers stops them and removes everything
    let (report, took) = a.down_and_check(&[100]);
    figure("down (1 running container)", took);
    assert_eq!(report.containers, [a.backend.container_name(100)]);
    // the other cluster is untouched
    let (page_p, _) = wait_http(&p.backend, NGINX1, Duration::from_secs(2));
    assert!(page_p.contains("cluster=p\n"));
    p.down_and_check(&[100]);
}

#[test]
fn data_volume_moves_to_the_green_container() {
    if !can_run("data_volume_moves_to_the_green_container") {
        return;
    }
    let mut tc = TestCluster::new("v", false);
    let b = &tc.backend;
    let (path, sha) = build_template(tc.tmp.path(), "vol", true);
    let tpl = upload(b, &path, &sha);
    let mut blue = spec(103, "mongo1", Role::Mongo, MONGO1, &tpl, true);
    blue.env[1].1 = "blue".into();
    let mut green = spec(1103, "mongo1", Role::Mongo, MONGO1, &tpl, false);
    green.data_mount = Some("/var/lib/mongodb".into());
    // Same MAC per slot (as the design says): the client's ARP cache stays right.
    green.hwaddr = blue.hwaddr.clone();
    green.env[1].1 = "green".into();
    b.create(&blue).unwrap();
    b.create(&green).unwrap();
    b.start("pve1", 103).unwrap();
    let (page, _) = wait_http(b, MONGO1, Duration::from_secs(10));
    assert!(page.contains("--- owners\nblue\n"), "{page}");

    assert!(matches!(
        local_err(b.move_data_volume("pve1", 103, 1103).unwrap_err()),
        LocalError::Running { vmid: 103 }
    ));
    b.shutdown("pve1", 103, Duration::from_secs(5)).unwrap();
    assert!(matches!(
        local_err(b.move_data_volume("pve1", 1103, 103).unwrap_err()),
        LocalError::NoDataVolume { vmid: 1103 }
    ));
    b.move_data_volume("pve1", 103, 1103).unwrap();
    assert!(b
        .state_dir()
        .join("volumes/vm-1103-disk-data/owners")
        .is_file());
    b.start("pve1", 1103).unwrap();
    let (page, _) = wait_http(b, MONGO1, Duration::from_secs(10));
    assert!(page.contains("--- owners\nblue\ngreen\n"), "{page}");

    // blue starts again without the volume (as a rollback target would)
    b.stop("pve1", 1103).unwrap();
    b.start("pve1", 103).unwrap();
    let (page, _) = wait_http(b, MONGO1, Duration::from_secs(10));
    assert!(
        page.contains("--- owners\nblue\n") && !page.contains("green"),
        "{page}"
    );
    let vol = b.state_dir().join("volumes/vm-1103-disk-data/owners");
    assert_eq!(
        std::fs::read_to_string(vol).unwrap(),
        "blue\ngreen\n",
        "volume stayed with green"
    );
    b.stop("pve1", 103).unwrap();
    b.destroy("pve1", 103).unwrap();
    b.destroy("pve1", 1103).unwrap();
    assert!(!b.state_dir().join("volumes/vm-1103-disk-data").exists());
    tc.down_and_check(&[103, 1103]);
}

#[test]
fn failed_creates_and_starts_leave_nothing_after_down() {
    if !can_run("failed_creates_and_starts_leave_nothing_after_down") {
        return;
    }
    let mut tc = TestCluster::new("f", false);
    let b = &tc.backend;

    // a template that is not a tarball: create fails and rolls back
    let junk = tc.tmp.path().join("haimg-junk_1_amd64.tar.zst");
    std::fs::write(&junk, b"not a tarball").unwrap();
    let sha = haimg::backend::local::template::sha256_file(&junk).unwrap();
    let tpl = upload(b, &junk, &sha);
    let e = b
        .create(&spec(100, "nginx1", Role::Lb, NGINX1, &tpl, true))
        .unwrap_err();
    assert!(e.to_string().starts_with("`tar xpf "), "{e}");
    assert_eq!(b.status("pve1", 100).unwrap(), None);
    assert!(!b.lxcpath().join(b.container_name(100)).exists());
    assert!(!b.state_dir().join("volumes/vm-100-disk-data").exists());

    // a template without /sbin/init: create works, start fails with LXC's reason
    let (path, sha) = build_template(tc.tmp.path(), "noinit", false);
    let tpl = upload(b, &path, &sha);
    b.create(&spec(
        101,
        "nginx2",
        Role::Lb,
        Ipv4Addr::new(192, 168, 30, 101),
        &tpl,
        false,
    ))
    .unwrap();
    let e = local_err(b.start("pve1", 101).unwrap_err());
    assert!(
        matches!(e, LocalError::StartFailed { vmid: 101, .. }),
        "{e}"
    );
    eprintln!("start failure as users see it: {e}");
    assert!(e.to_string().contains("lxc.log"), "{e}");
    assert_eq!(
        b.status("pve1", 101).unwrap().unwrap().state,
        PowerState::Stopped
    );

    // `haimg down` (the CLI) removes it all; a second run finds nothing
    let bin = env!("CARGO_BIN_EXE_haimg");
    let names = tc.names(&[100, 101]);
    let run = || {
        std::process::Command::new(bin)
            .args(["down", "--cluster", "f", "--json"])
            .env("HAIMG_STATE_DIR", tc.tmp.path())
            .output()
            .unwrap()
    };
    let t0 = Instant::now();
    let out = run();
    figure("haimg down (CLI)", t0.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("haimg down --json: {report}\n{stderr}");
    assert_eq!(
        report["containers"],
        serde_json::json!([b.container_name(101)])
    );
    assert_eq!(report["network"]["bridge"], b.names().bridge());
    assert_eq!(report["state_dir_removed"], true);
    assert!(
        stderr.contains(&format!("removed bridge {}", b.names().bridge())),
        "{stderr}"
    );
    assert_nothing_left(b, &names);
    let out = run();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("nothing to remove for cluster f"),
        "{stderr}"
    );
    tc.downed = true;
}

/// The seed's whole plan (3 lb, 3 mongo with data volumes, 3 webapp) from
/// the embedded default spec, on the test template: every member answers
/// on its own address, and every one stops on the halt signal in < 5 s.
#[test]
fn the_seed_plan_nine_members() {
    if !can_run("the_seed_plan_nine_members") {
        return;
    }
    let plan = haimg::model::spec::parse_yaml(haimg::model::DEFAULT_SPEC)
        .unwrap()
        .cluster;
    let mut tc = TestCluster::new("n", false);
    let b = &tc.backend;
    let (path, sha) = build_template(tc.tmp.path(), "nine", true);
    let tpl = upload(b, &path, &sha);
    let members: Vec<_> = plan.members().cloned().collect();
    // In parallel: creates and starts of one cluster may run concurrently.
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for m in &members {
            let mut s = spec(m.vmid, &m.slot, m.role, m.ip, &tpl, m.role == Role::Mongo);
            s.prefix = plan.network.cidr.prefix;
            s.gateway = plan.network.gateway;
            s.memory_mb = plan.resources_of(m.role).memory_mb;
            sc.spawn(move || b.create(&s).unwrap());
        }
    });
    figure("create 9 members (parallel)", t0.elapsed());
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for m in &members {
            sc.spawn(move || b.start(&m.node, m.vmid).unwrap());
        }
    });
    figure("start 9 members (parallel lxc-start)", t0.elapsed());
    for m in &members {
        let (page, _) = wait_http(b, m.ip, Duration::from_secs(15));
        assert!(page.contains(&format!("\nuts={}\n", m.hostname)), "{page}");
        assert!(
            page.contains(&format!("role={} slot={} ", m.role, m.slot)),
            "{page}"
        );
    }
    figure("start 9 members to all answering", t0.elapsed());
    let listed = b.list().unwrap();
    assert_eq!(listed.len(), 9);
    assert!(listed.iter().all(|s| s.state == PowerState::Running));
    let mut slowest = Duration::ZERO;
    let t0 = Instant::now();
    for m in &members {
        let t = Instant::now();
        b.shutdown(&m.node, m.vmid, Duration::from_secs(5)).unwrap();
        slowest = slowest.max(t.elapsed());
        assert!(b.processes(m.vmid).is_empty(), "{} left processes", m.slot);
    }
    figure("shutdown 9 members (sequential)", t0.elapsed());
    figure("slowest single shutdown", slowest);
    assert!(slowest < Duration::from_secs(5));
    for m in &members {
        b.start(&m.node, m.vmid).unwrap();
    }
    let vmids: Vec<u32> = members.iter().map(|m| m.vmid).collect();
    let (report, took) = tc.down_and_check(&vmids);
    figure("down with 9 running members", took);
    assert_eq!(report.containers.len(), 9);
}

/// Someone deleted the state directory under a running cluster: `down`
/// still finds the container by its cgroup, kills what runs in it, and
/// removes the network, all by names derived from the directory path.
#[test]
fn down_without_the_state_directory() {
    if !can_run("down_without_the_state_directory") {
        return;
    }
    let mut tc = TestCluster::new("w", false);
    let b = &tc.backend;
    let (path, sha) = build_template(tc.tmp.path(), "wipe", true);
    let tpl = upload(b, &path, &sha);
    b.create(&spec(100, "nginx1", Role::Lb, NGINX1, &tpl, false))
        .unwrap();
    b.start("pve1", 100).unwrap();
    wait_http(b, NGINX1, Duration::from_secs(10));
    std::fs::remove_dir_all(b.state_dir()).unwrap();
    assert!(
        !b.processes(100).is_empty(),
        "still running without its files"
    );
    let (report, took) = tc.down_and_check(&[100]);
    figure("down without state dir (1 running)", took);
    assert_eq!(report.containers, [tc.backend.container_name(100)]);
    assert!(!report.killed_pids.is_empty(), "{report:?}");
    assert!(report.network.bridge.is_some());
    assert!(!report.state_dir_removed);
}
