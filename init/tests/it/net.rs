//! Network bring-up against a real kernel: each test creates its own network
//! namespace (unique name, deleted by a Drop guard even on failure) with a
//! veth pair `eth0`/`eth0p` inside it (the peer stands in for the host's bridge
//! side and is up, as LXC leaves it), runs the netlink code in a thread that joined it, and checks
//! the result with `ip`. Needs root and iproute2; otherwise it says why and
//! skips.

use std::fs::File;
use std::process::Command;

use haimg_init::net;
use haimg_model::Ipv4Net;

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Option<Netns> {
        if !nix::unistd::geteuid().is_root() {
            crate::skip(tag, "network namespace tests need root");
            return None;
        }
        let name = format!(
            "haimg-init-{tag}-{}-{:x}",
            std::process::id(),
            rand_suffix()
        );
        let ok = Command::new("ip").args(["netns", "add", &name]).status();
        match ok {
            Ok(s) if s.success() => Some(Netns(name)),
            other => {
                crate::skip(tag, &format!("`ip netns add` failed: {other:?}"));
                None
            }
        }
    }

    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.0)
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `eth0` down and unaddressed, as LXC hands it over; its peer up.
    fn veth(&self) {
        self.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ]);
        self.ip(&["link", "set", "eth0p", "up"]);
    }

    /// Run `f` in a thread that has joined this namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let fd = File::open(format!("/run/netns/{}", self.0)).expect("open netns");
        std::thread::spawn(move || {
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ (std::process::id() << 8)
}

fn addr() -> Ipv4Net {
    Ipv4Net::parse("192.168.30.100/24").unwrap()
}

const GW: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 168, 30, 1);

#[test]
fn brings_up_lo_and_eth0_with_address_and_default_route() {
    let Some(ns) = Netns::new("up") else { return };
    ns.veth();
    assert!(!ns.ip(&["link", "show", "lo"]).contains(",UP"));

    let report = ns.run(|| net::ensure("eth0", addr(), GW)).expect("ensure");
    assert!(
        report.lo_up && report.link_up && report.address_added && report.route_added,
        "{report:?}"
    );
    assert_eq!(
        report.summary("eth0"),
        "lo up, eth0 up, address added, default route added"
    );

    assert!(ns.ip(&["link", "show", "lo"]).contains(",UP"));
    assert!(ns.ip(&["link", "show", "eth0"]).contains(",UP"));
    let a = ns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        a.contains("inet 192.168.30.100/24 brd 192.168.30.255"),
        "{a}"
    );
    let r = ns.ip(&["-4", "route", "show", "default"]);
    assert!(r.contains("default via 192.168.30.1 dev eth0"), "{r}");

    // Every boot runs it again: nothing more is added.
    let again = ns
        .run(|| net::ensure("eth0", addr(), GW))
        .expect("ensure again");
    assert_eq!(again.summary("eth0"), "already configured");
    assert_eq!(again.existing, vec![addr()]);
    assert_eq!(ns.run(|| net::addrs_of("eth0")).unwrap(), vec![addr()]);
}

#[test]
fn keeps_an_address_the_host_already_set() {
    let Some(ns) = Netns::new("hm") else { return };
    ns.veth();
    ns.ip(&["addr", "add", "192.168.30.100/24", "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    let report = ns.run(|| net::ensure("eth0", addr(), GW)).expect("ensure");
    assert!(!report.address_added && !report.link_up, "{report:?}");
    assert!(report.route_added);
    assert_eq!(
        ns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
            .lines()
            .count(),
        1
    );
}

#[test]
fn a_missing_eth0_is_a_clear_error() {
    let Some(ns) = Netns::new("none") else { return };
    let err = ns.run(|| net::ensure("eth0", addr(), GW)).unwrap_err();
    assert_eq!(err.to_string(), "interface eth0 does not exist");
    assert_eq!(ns.run(|| net::addrs_of("eth0")).unwrap(), vec![]);
}
