//! The local backend against a simulated host: a [`FakeRunner`] that keeps
//! the links, namespaces and container states `ip`, `tar` and `lxc-*` would,
//! so every command sequence and every error a user sees is pinned by a
//! snapshot without root or LXC. The real thing runs in `tests/it/local_lxc.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::backend::{Backend, BackendError, ContainerSpec, PowerState, StoredTemplate};
use crate::exec::{Cmd, FakeRunner, Output};

#[derive(Default)]
struct Sim {
    links: BTreeSet<String>,
    /// netns → has eth0
    netns: BTreeMap<String, bool>,
    running: BTreeSet<String>,
    /// Containers that ignore the halt signal.
    stuck: BTreeSet<String>,
}

struct Rig {
    backend: LocalBackend,
    fake: FakeRunner,
    sim: Arc<Mutex<Sim>>,
    _tmp: tempfile::TempDir,
}

fn words(c: &Cmd) -> Vec<&str> {
    c.args.iter().map(String::as_str).collect()
}

fn simulate(sim: &Arc<Mutex<Sim>>, names: &Names, c: &Cmd) -> Output {
    let mut s = sim.lock().unwrap();
    let a = words(c);
    match (c.program.as_str(), &a[..]) {
        ("ip", ["-o", "link", "show"]) => Output::ok(
            &s.links
                .iter()
                .enumerate()
                .map(|(i, l)| format!("{}: {l}: <BROADCAST> mtu 1500\n", i + 2))
                .collect::<String>(),
        ),
        ("ip", ["-n", ns, "-o", "link", "show"]) => {
            let eth0 = s.netns.get(*ns).copied().unwrap_or(false);
            Output::ok(&format!(
                "1: lo: <LOOPBACK>\n{}",
                if eth0 {
                    "2: eth0@if9: <BROADCAST>\n"
                } else {
                    ""
                }
            ))
        }
        ("ip", ["netns", "list"]) => Output::ok(
            &s.netns
                .keys()
                .map(|n| format!("{n} (id: 1)\n"))
                .collect::<String>(),
        ),
        ("ip", ["netns", "add", ns]) => {
            s.netns.insert(ns.to_string(), false);
            Output::ok("")
        }
        ("ip", ["netns", "del", ns]) => {
            s.netns.remove(*ns);
            Output::ok("")
        }
        ("ip", ["link", "add", "name", br, "type", "bridge"]) => {
            s.links.insert(br.to_string());
            Output::ok("")
        }
        (
            "ip",
            ["link", "add", "name", hc, "type", "veth", "peer", "name", "eth0", "netns", ns],
        ) => {
            s.links.insert(hc.to_string());
            s.netns.insert(ns.to_string(), true);
            Output::ok("")
        }
        ("ip", ["link", "set", "dev", dev, ..]) if !s.links.contains(*dev) => {
            Output::fail(1, &format!("Cannot find device \"{dev}\""))
        }
        ("ip", ["link", "del", "dev", dev]) => {
            if s.links.remove(*dev) {
                if *dev == names.client_veth() {
                    s.netns.insert(names.netns(), false);
                }
                Output::ok("")
            } else {
                Output::fail(1, "Cannot find device")
            }
        }
        ("tar", _) => {
            let i = a.iter().position(|w| *w == "-C").unwrap();
            let rootfs = std::path::Path::new(a[i + 1]);
            std::fs::create_dir_all(rootfs.join("etc")).unwrap();
            std::fs::write(rootfs.join("etc/debian_version"), "12.15\n").unwrap();
            Output::ok("")
        }
        ("lxc-info", [.., "-n", name, "-s", "-p"]) => {
            if s.running.contains(*name) {
                Output::ok("State:          RUNNING\nPID:            4242\n")
            } else {
                Output::ok("State:          STOPPED\n")
            }
        }
        ("lxc-start", [_, _, "-n", name, ..]) => {
            let vmid: u32 = name.rsplit('-').next().unwrap().parse().unwrap();
            s.links.insert(names.ct_veth(vmid));
            s.running.insert(name.to_string());
            Output::ok("")
        }
        ("lxc-stop", [_, _, "-n", name, rest @ ..]) => {
            if !s.running.contains(*name) {
                return Output::fail(2, &format!("{name} is not running"));
            }
            if rest.contains(&"--nokill") && s.stuck.contains(*name) {
                return Output::fail(1, "timed out");
            }
            let vmid: u32 = name.rsplit('-').next().unwrap().parse().unwrap();
            s.links.remove(&names.ct_veth(vmid));
            s.running.remove(*name);
            Output::ok("")
        }
        _ => Output::ok(""),
    }
}

fn rig() -> Rig {
    let tmp = tempfile::tempdir().unwrap();
    let opts = LocalOptions {
        state_dir: tmp.path().join("c"),
        privileged: false,
        idmap: IdMap::default(),
        pids_max: 4096,
        cgroup: CgroupMode::V1,
        host_dns: HostDns::parse("search lan\nnameserver 10.0.0.53\n"),
        subid_files: None,
        halt_signal: None,
    };
    let fake = FakeRunner::new();
    let backend = LocalBackend::new("c", opts, Arc::new(fake.clone())).unwrap();
    let sim = Arc::new(Mutex::new(Sim::default()));
    let (s2, n2) = (sim.clone(), backend.names().clone());
    fake.on("", move |c| Ok(simulate(&s2, &n2, c)));
    Rig {
        backend,
        fake,
        sim,
        _tmp: tmp,
    }
}

impl Rig {
    fn redact(&self, text: &str) -> String {
        text.replace(&self.backend.state_dir().display().to_string(), "[STATE]")
            .replace(&self.backend.names().instance, "[ID]")
            .replace(&self.backend.names().instance[..6], "[ID6]")
    }

    fn transcript(&self) -> String {
        self.redact(&self.fake.transcript())
    }

    fn template(&self) -> StoredTemplate {
        let src = self._tmp.path().join("haimg-lb_1.0.0_amd64.tar.zst");
        std::fs::write(&src, b"template bytes").unwrap();
        let sha = template::sha256_file(&src).unwrap();
        let name = haimg_model::TemplateName::new(haimg_model::Role::Lb, "1.0.0").stored(&sha);
        self.backend
            .upload_template("pve1", &src, &name.file_name(), &sha)
            .unwrap()
    }
}

fn spec(t: &StoredTemplate, vmid: u32) -> ContainerSpec {
    ContainerSpec {
        vmid,
        node: "pve2".into(),
        hostname: "mongo1".into(),
        role: haimg_model::Role::Mongo,
        slot: "mongo1".into(),
        template: t.clone(),
        ip: "192.168.30.103".parse().unwrap(),
        prefix: 24,
        gateway: "192.168.30.1".parse().unwrap(),
        bridge: "vmbr0".into(),
        hwaddr: "BC:24:11:30:01:03".into(),
        nameservers: vec!["192.168.30.1".parse().unwrap()],
        search_domain: None,
        cores: 2,
        memory_mb: 2048,
        rootfs_gb: 4,
        data_volume_gb: Some(16),
        data_mount: Some("/var/lib/mongodb".into()),
        tags: vec!["haimg".into(), "mongo1".into()],
        env: vec![("HAIMG_ROLE".into(), "mongo".into())],
        onboot: false,
        entrypoint: None,
        host_managed: false,
    }
}

fn local(e: BackendError) -> LocalError {
    e.into_target::<LocalError>()
        .unwrap_or_else(|other| panic!("not a local backend error: {other}"))
}

#[test]
fn lifecycle_commands() {
    let r = rig();
    let t = r.template();
    let b = &r.backend;
    b.create(&spec(&t, 103)).unwrap();
    b.start("pve2", 103).unwrap();
    let st = b.status("pve2", 103).unwrap().unwrap();
    assert_eq!(
        (st.state, st.node.as_str(), st.name.as_str()),
        (PowerState::Running, "pve2", "mongo1")
    );
    b.shutdown("pve2", 103, Duration::from_millis(2500))
        .unwrap();
    b.destroy("pve2", 103).unwrap();
    insta::assert_snapshot!("lifecycle_commands", r.transcript());
    assert_eq!(b.status("pve2", 103).unwrap(), None);
    assert!(!b.state_dir().join("volumes/vm-103-disk-data").exists());
}

/// The state tree and each CT's directory are owner-only: behind them are
/// root filesystems owned by host uids 0..65535 (a setuid file made by
/// container root would be host root for whoever reaches it) and configs
/// that carry PID 1's environment. Container root (the idmap's host gid) may
/// pass through the root and `lxc/`, as lxc-start requires; only the CT's own
/// `/` keeps 0755.
#[test]
fn state_and_container_directories_are_owner_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let r = rig();
    let t = r.template();
    r.backend.create(&spec(&t, 103)).unwrap();
    let meta = |p: &std::path::Path| std::fs::metadata(p).unwrap();
    let mode = |p: &std::path::Path| meta(p).permissions().mode() & 0o7777;
    let root = r.backend.state_dir().to_path_buf();
    let ct = r.backend.lxcpath().join(r.backend.container_name(103));
    for d in [root.join("templates"), ct.clone()] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    for d in [root.clone(), root.join("lxc"), root.join("volumes")] {
        assert_eq!(mode(&d), 0o710, "{}", d.display());
        assert_eq!(meta(&d).gid(), 100_000, "{}", d.display());
    }
    assert_eq!(mode(&ct.join("rootfs")), 0o755);
}

#[test]
fn files_written_into_the_rootfs_at_create() {
    let r = rig();
    let t = r.template();
    r.backend.create(&spec(&t, 103)).unwrap();
    let ct = r.backend.lxcpath().join(r.backend.container_name(103));
    let read = |p: &str| std::fs::read_to_string(ct.join(p)).unwrap();
    insta::assert_snapshot!("created_config", r.redact(&read("config")));
    insta::assert_snapshot!("created_etc_hosts", read("rootfs/etc/hosts"));
    insta::assert_snapshot!("created_etc_hostname", read("rootfs/etc/hostname"));
    insta::assert_snapshot!("created_etc_resolv_conf", read("rootfs/etc/resolv.conf"));
    insta::assert_snapshot!(
        "created_etc_network_interfaces",
        read("rootfs/etc/network/interfaces")
    );
    assert_eq!(read("rootfs/fastboot"), "");
}

#[test]
fn failed_extraction_rolls_back_and_down_clears_the_network() {
    let r = rig();
    let t = r.template();
    r.fake.on("tar xpf", |_| Ok(Output::fail(2, "tar: This does not look like a tar archive\ntar: Exiting with failure status due to previous errors")));
    let e = r.backend.create(&spec(&t, 103)).unwrap_err();
    insta::assert_snapshot!(r.redact(&e.to_string()), @r"
    `tar xpf [STATE]/templates/haimg-lb_1.0.0-af87c13fd128_amd64.tar.zst --zstd --totals --one-file-system -p --sparse --numeric-owner --acls --xattrs '--xattrs-include=user.*' --xattrs-include=security.capability -C [STATE]/lxc/c-[ID]-103/rootfs --skip-old-files --anchored --exclude './dev/*'` exited with code 2; stderr ends with:
        tar: This does not look like a tar archive
        tar: Exiting with failure status due to previous errors
    ");
    assert_eq!(r.backend.status("pve2", 103).unwrap(), None);
    assert!(!r
        .backend
        .lxcpath()
        .join(r.backend.container_name(103))
        .exists());
    // the network was built before the failure; down removes it
    assert_eq!(r.sim.lock().unwrap().links.len(), 2);
    r.fake.clear();
    let report = r.backend.down().unwrap();
    assert!(report.state_dir_removed);
    assert!(r.sim.lock().unwrap().links.is_empty());
    assert!(r.sim.lock().unwrap().netns.is_empty());
    insta::assert_snapshot!(r.transcript(), @r"
    nft delete table bridge haimg_[ID]
    ip -o link show
    ip link del dev hmc[ID]
    ip netns list
    ip netns del haimg-c-[ID]
    ip link del dev hmb[ID]
    ");
    assert!(r.backend.down().unwrap().is_empty());
}

#[test]
fn failing_nth_network_call_is_repaired_by_the_next_create() {
    let r = rig();
    let t = r.template();
    // call 6 is `ip netns add`: the bridge exists, the namespace does not
    r.fake.fail_call(6);
    let e = r.backend.create(&spec(&t, 103)).unwrap_err();
    insta::assert_snapshot!(r.redact(&e.to_string()), @r"
    `ip netns add haimg-c-[ID]` exited with code 1; stderr ends with:
        fake: injected failure
    ");
    r.fake.clear();
    r.backend.create(&spec(&t, 103)).unwrap();
    let s = r.sim.lock().unwrap();
    assert_eq!(s.netns.get(&r.backend.names().netns()), Some(&true));
    assert!(s.links.contains(&r.backend.names().bridge()));
}

#[test]
fn a_crashed_create_is_removed_by_down() {
    let r = rig();
    let t = r.template();
    let b = &r.backend;
    b.create(&spec(&t, 103)).unwrap();
    // simulate a haimg killed mid-create of CT 104: record in phase creating,
    // half a rootfs, a volume
    let mut st = b.dir.load().unwrap().unwrap();
    let mut rec = st.containers[&103].clone();
    rec.name = b.container_name(104);
    rec.phase = Phase::Creating;
    rec.data_volume = Some(b.dir.volume(104));
    st.containers.insert(104, rec);
    b.dir.save(&st).unwrap();
    std::fs::create_dir_all(b.lxcpath().join(b.container_name(104)).join("rootfs/etc")).unwrap();
    std::fs::create_dir_all(b.dir.volume(104)).unwrap();

    let e = local(b.start("pve2", 104).unwrap_err());
    assert_eq!(e.to_string(), "CT 104 was not created completely (an earlier create failed); destroy it and create it again");
    b.start("pve2", 103).unwrap();
    r.fake.clear();
    let report = b.down().unwrap();
    assert_eq!(
        report.containers,
        [b.container_name(103), b.container_name(104)]
    );
    insta::assert_snapshot!(r.transcript(), @r"
    lxc-stop -P [STATE]/lxc -n c-[ID]-103 -k
    nft delete table bridge haimg_[ID]
    ip -o link show
    ip link del dev hmc[ID]
    ip netns list
    ip netns del haimg-c-[ID]
    ip link del dev hmb[ID]
    ");
    assert!(!b.state_dir().exists());
}

/// A rollout SIGKILLed while it built its green leaves the record in phase
/// `creating`: that is no container to list (the machine would drain blue
/// for a green that cannot start), and the next create builds it again.
#[test]
fn a_create_abandoned_by_a_killed_run_is_built_again() {
    let r = rig();
    let t = r.template();
    let b = &r.backend;
    b.create(&spec(&t, 103)).unwrap();
    let mut st = b.dir.load().unwrap().unwrap();
    let mut rec = st.containers[&103].clone();
    rec.name = b.container_name(104);
    rec.phase = Phase::Creating;
    st.containers.insert(104, rec);
    b.dir.save(&st).unwrap();
    std::fs::create_dir_all(b.lxcpath().join(b.container_name(104)).join("rootfs/etc")).unwrap();
    let listed = || -> Vec<u32> { b.list().unwrap().iter().map(|c| c.vmid).collect() };

    {
        // A run building it holds its create lock: it is listed.
        let _building = b.dir.creating_lock(104).unwrap();
        assert_eq!(listed(), [103, 104]);
        assert!(b.status("pve2", 104).unwrap().is_some());
    }
    // Its builder is gone: not a container, and built again on create.
    assert_eq!(listed(), [103]);
    assert!(b.status("pve2", 104).unwrap().is_none());
    b.create(&spec(&t, 104)).unwrap();
    assert_eq!(
        b.dir.load().unwrap().unwrap().containers[&104].phase,
        Phase::Created
    );
    assert_eq!(listed(), [103, 104]);
    b.start("pve2", 104).unwrap();
    // A complete container is never built over.
    let e = local(b.create(&spec(&t, 104)).unwrap_err());
    assert!(matches!(e, LocalError::Exists { vmid: 104, .. }), "{e}");
}

#[test]
fn down_without_a_state_file_finds_everything_by_name() {
    let r = rig();
    let t = r.template();
    let b = &r.backend;
    b.create(&spec(&t, 103)).unwrap();
    b.start("pve2", 103).unwrap();
    std::fs::remove_file(b.dir.file()).unwrap();
    let report = b.down().unwrap();
    assert_eq!(report.containers, [b.container_name(103)]);
    assert!(report.network.bridge.is_some());
    assert!(r.sim.lock().unwrap().running.is_empty());
    assert!(!b.state_dir().exists());
}

#[test]
fn down_refuses_a_directory_that_is_not_ours() {
    let r = rig();
    std::fs::create_dir_all(r.backend.state_dir()).unwrap();
    std::fs::write(r.backend.state_dir().join("thesis.tex"), "precious").unwrap();
    let e = r.backend.down().unwrap_err();
    assert_eq!(
        r.redact(&e.to_string()),
        "[STATE] holds files haimg did not create; refusing to remove it"
    );
    assert!(r.backend.state_dir().join("thesis.tex").exists());
}

#[test]
fn power_errors_match_proxmox() {
    let r = rig();
    let t = r.template();
    let b = &r.backend;
    b.create(&spec(&t, 103)).unwrap();
    let mut msgs = vec![
        b.create(&spec(&t, 103)).unwrap_err().to_string(),
        b.shutdown("pve2", 103, Duration::from_secs(5))
            .unwrap_err()
            .to_string(),
        b.stop("pve2", 103).unwrap_err().to_string(),
        b.start("pve2", 999).unwrap_err().to_string(),
    ];
    b.start("pve2", 103).unwrap();
    msgs.push(b.start("pve2", 103).unwrap_err().to_string());
    msgs.push(b.destroy("pve2", 103).unwrap_err().to_string());
    r.sim.lock().unwrap().stuck.insert(b.container_name(103));
    msgs.push(
        b.shutdown("pve2", 103, Duration::from_millis(1500))
            .unwrap_err()
            .to_string(),
    );
    assert_eq!(
        b.status("pve2", 103).unwrap().unwrap().state,
        PowerState::Running
    );
    insta::assert_snapshot!(msgs.join("\n"), @r"
    CT 103 already exists in local cluster c
    CT 103 not running
    CT 103 not running
    CT 999 does not exist in local cluster c
    CT 103 already running
    CT 103 is running; stop it first
    CT 103 did not stop within 2s of the halt signal (it is still running; `stop` kills it)
    ");
}

#[test]
fn bad_specs_are_refused_before_anything_happens() {
    let r = rig();
    let t = r.template();
    let b = &r.backend;
    r.fake.clear();
    let mut cases: Vec<ContainerSpec> = Vec::new();
    let mut s = spec(&t, 103);
    s.hwaddr = "01:00:5E:00:00:01".into();
    cases.push(s);
    let mut s = spec(&t, 103);
    s.env.push(("HAIMG_KEY".into(), "line1\nline2".into()));
    cases.push(s);
    let mut s = spec(&t, 103);
    s.env.push(("1BAD".into(), "x".into()));
    cases.push(s);
    let mut s = spec(&t, 103);
    s.tags.push("Has Space".into());
    cases.push(s);
    let mut s = spec(&t, 103);
    s.data_mount = Some("/var/../etc".into());
    cases.push(s);
    let mut s = spec(&t, 103);
    s.data_mount = None;
    cases.push(s);
    let mut s = spec(&t, 103);
    s.hostname = "mongo 1".into();
    cases.push(s);
    let mut s = spec(&t, 103);
    s.template.volid = "/etc/passwd".into();
    cases.push(s);
    cases.push(spec(&t, 10_000_000));
    let msgs: Vec<String> = cases
        .iter()
        .map(|s| r.redact(&b.create(s).unwrap_err().to_string()))
        .collect();
    insta::assert_snapshot!(msgs.join("\n"), @r#"
    CT 103: hwaddr: "01:00:5E:00:00:01" is not a unicast MAC address like BC:24:11:00:01:00
    CT 103: env: the value of HAIMG_KEY contains a control character
    CT 103: env: "1BAD" is not a valid variable name
    CT 103: tags: "Has Space" is not a Proxmox tag ([a-z0-9_][a-z0-9_+.-]*)
    CT 103: data_mount: "/var/../etc" must be an absolute path without `..` or spaces
    CT 103: data_mount: a data volume needs a mount path
    CT 103: hostname: "mongo 1" is not a valid host name
    template /etc/passwd is not in this cluster's store [STATE]/templates; upload it first
    CT 10000000: vmid: 10000000 is above 9999999: its veth name would not carry the prefix the network policy matches
    "#);
    assert_eq!(r.fake.transcript(), "", "nothing ran");
    assert!(b.list().unwrap().is_empty());
}

#[test]
fn second_cluster_network_must_match() {
    let r = rig();
    let t = r.template();
    r.backend.create(&spec(&t, 103)).unwrap();
    let mut s = spec(&t, 104);
    s.gateway = "192.168.31.1".parse().unwrap();
    s.ip = "192.168.31.104".parse().unwrap();
    let e = r.backend.create(&s).unwrap_err();
    assert_eq!(
        e.to_string(),
        "network of local cluster c has gateway 192.168.30.1/24, CT 104 wants 192.168.31.1/24"
    );
}

#[test]
fn data_volume_and_tags() {
    let r = rig();
    let t = r.template();
    let b = &r.backend;
    b.create(&spec(&t, 103)).unwrap();
    let mut green = spec(&t, 1103);
    green.data_volume_gb = None;
    b.create(&green).unwrap();
    std::fs::write(b.dir.volume(103).join("data"), "x").unwrap();
    let e = local(b.move_data_volume("pve2", 1103, 103).unwrap_err());
    assert_eq!(e.to_string(), "CT 1103 has no data volume to move");
    assert!(b.has_data_volume("pve2", 103).unwrap());
    assert!(!b.has_data_volume("pve2", 1103).unwrap());
    b.move_data_volume("pve2", 103, 1103).unwrap();
    assert!(b.dir.volume(1103).join("data").is_file());
    // A rollout reads where the volume is after an interrupted hand-over.
    assert!(!b.has_data_volume("pve2", 103).unwrap());
    assert!(b.has_data_volume("pve2", 1103).unwrap());
    let e = local(b.move_data_volume("pve2", 1103, 1103).unwrap_err());
    assert_eq!(e.to_string(), "CT 1103 already has a data volume");
    let cfg =
        std::fs::read_to_string(b.lxcpath().join(b.container_name(1103)).join("config")).unwrap();
    assert!(
        !cfg.contains("lxc.mount.entry"),
        "config is rewritten at start, not at move"
    );
    b.start("pve2", 1103).unwrap();
    let cfg =
        std::fs::read_to_string(b.lxcpath().join(b.container_name(1103)).join("config")).unwrap();
    assert!(
        r.redact(&cfg).contains("lxc.mount.entry = [STATE]/volumes/vm-1103-disk-data var/lib/mongodb none bind,create=dir,idmap=container 0 0\n"),
        "{cfg}"
    );
    b.set_tags(
        "pve2",
        103,
        &["haimg".into(), "standby".into(), "v1.0.0".into()],
    )
    .unwrap();
    let tags: Vec<Vec<String>> = b.list().unwrap().into_iter().map(|s| s.tags).collect();
    assert_eq!(
        tags,
        [vec!["haimg", "standby", "v1.0.0"], vec!["haimg", "mongo1"]]
    );
    let e = b.set_tags("pve2", 5, &[]).unwrap_err();
    assert_eq!(e.to_string(), "CT 5 does not exist in local cluster c");
    let e = b.has_data_volume("pve2", 5).unwrap_err();
    assert_eq!(e.to_string(), "CT 5 does not exist in local cluster c");
}

#[test]
fn templates_are_stored_once_and_listed() {
    let r = rig();
    let t = r.template();
    let again = r.template();
    assert_eq!(t, again);
    assert_eq!(r.backend.list_templates("pve1").unwrap(), vec![t.clone()]);
    r.backend.delete_template("pve1", &t).unwrap();
    assert!(r.backend.list_templates("pve1").unwrap().is_empty());
    let src = r._tmp.path().join("x.tgz");
    std::fs::write(&src, "x").unwrap();
    let e = r
        .backend
        .upload_template("pve1", &src, "x.tgz", &"a".repeat(64))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "template x.tgz: \"x.tgz\": wrong file extension (expected one of .tar.zst, .tar.gz, .tar.xz, .tar.bz2, .tar)"
    );
    let e = r
        .backend
        .upload_template("pve1", &src.with_file_name("x.tar"), "x.tar", "abc")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "template x.tar: \"abc\" is not a sha256 (64 hex digits)"
    );
}

#[test]
fn state_dir_paths_are_checked() {
    let mut opts = rig().backend.opts.clone();
    for bad in ["relative/dir", "/tmp/with space", "/tmp/tab\there"] {
        opts.state_dir = bad.into();
        let e = LocalBackend::new("c", opts.clone(), Arc::new(FakeRunner::new())).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("must be an absolute path without whitespace or control characters"),
            "{e}"
        );
    }
    opts.state_dir = "/var/lib//haimg/./c".into();
    let b = LocalBackend::new("c", opts, Arc::new(FakeRunner::new())).unwrap();
    assert_eq!(b.state_dir(), std::path::Path::new("/var/lib/haimg/c"));
}

#[test]
fn start_failure_names_lxcs_reason() {
    let log = "lxc-start c 20261126 ERROR    start - ../src/lxc/start.c:start:2197 - No such file or directory - Failed to exec \"/sbin/init\"\n\
               lxc-start c 20261126 ERROR    sync - ../src/lxc/sync.c:sync_wait:34 - An error occurred in another process (expected sequence number 7)\n\
               lxc-start c 20261126 ERROR    lxccontainer - ../src/lxc/lxccontainer.c:wait_on_daemonized_start:878 - Received container state \"ABORTING\" instead of \"RUNNING\"\n\
               lxc-start c 20261126 ERROR    lxc_start - ../src/lxc/tools/lxc_start.c:main:306 - The container failed to start\n";
    assert_eq!(
        first_errors(log, 2),
        "No such file or directory - Failed to exec \"/sbin/init\" | An error occurred in another process (expected sequence number 7)"
    );
}

#[test]
fn concurrent_changes_to_a_fresh_state_are_all_kept() {
    let r = rig();
    let b = &r.backend;
    std::thread::scope(|s| {
        for i in 0..8u64 {
            s.spawn(move || {
                b.mutate(|st| {
                    st.templates.insert(
                        format!("t{i}.tar"),
                        TemplateRecord {
                            path: format!("/x/t{i}.tar").into(),
                            sha256: "0".repeat(64),
                            size: i,
                        },
                    );
                    Ok(())
                })
                .unwrap()
            });
        }
    });
    assert_eq!(b.load().unwrap().templates.len(), 8);
}

#[test]
fn the_policy_is_one_nftables_table_loaded_whole() {
    let r = rig();
    let b = &r.backend;
    let c = haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
        .unwrap()
        .cluster;
    let flows = haimg_model::policy::derive(&c);
    let green = crate::backend::Guest {
        member: &c.lb.members[0],
        vmid: 1100,
        fresh: true,
        absent: false,
    };
    let policy = |target_wide| crate::backend::Policy {
        cluster: &c,
        flows: &flows,
        target_wide,
        guests: vec![green.clone()],
        arp_owners: vec![(c.network.vip, "02:00:00:00:00:01".into())],
    };
    // A container joining: the bridge's table already filters it.
    let joined = b.enforce_policy(&policy(false)).unwrap();
    assert!(joined.ok() && joined.changes.is_empty(), "{joined:?}");
    assert_eq!(r.fake.calls().len(), 0);
    let first = b.enforce_policy(&policy(true)).unwrap();
    assert_eq!(
        r.redact(&first.changes.join("\n")),
        "nftables table bridge haimg_[ID]: loaded"
    );
    assert!(first.ok() && first.enforced());
    // Loaded again (the table may be gone with a reboot), reported unchanged.
    let again = b.enforce_policy(&policy(true)).unwrap();
    assert!(again.changes.is_empty(), "{again:?}");
    insta::assert_snapshot!(r.transcript(), @r"
    nft -f [STATE]/policy.nft
    nft -f [STATE]/policy.nft
    ");
    r.fake.fail("nft", 1, "Error: Could not process rule");
    let failed = b.enforce_policy(&policy(true)).unwrap();
    assert!(
        r.redact(&failed.errors.join("\n"))
            .contains("Could not process rule"),
        "{failed:?}"
    );
}
