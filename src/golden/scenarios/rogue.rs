//! `rogue-lb`: a container outside the cluster's lb peer list advertises
//! priority 255 for the VIP, with the cluster's own VRRP password (which any
//! host that sees one advert has read: VRRPv2 `PASS` travels in clear; a
//! VRRPv3 profile has no password, and the rogue speaks v3 too), and
//! also holds the VIP as its own address, so it answers ARP for it. The VIP
//! must stay with the preferred master, and every request through it must be
//! served by that master.
//!
//! Three things stop it, and the scenario passes only if together they do:
//! keepalived drops adverts from sources outside `unicast_peer`
//! (`check_unicast_src`), the policy admits VRRP only between lb members, and
//! ARP for the VIP passes only from an lb member's MAC. The scenario first
//! makes sure the rogue really runs as MASTER (else it proves nothing), and
//! removes the rogue at the end, also when it fails.

use anyhow::Context;
use haimg_model::VrrpMode;

use super::*;

pub(super) fn rogue_lb(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let c = tb.cluster();
    if c.lb.keepalived.mode != VrrpMode::Unicast {
        return Ok(r.skip(
            "the lb tier uses multicast VRRP: there is no peer list to be outside of (see README)",
        ));
    }
    let pass = tb
        .vrrp_password()
        .context("this testbed does not know the cluster's VRRP password")?;
    let ip = stranger_address(c).context("no free address in the cluster network")?;
    let vmid = tb.start_stranger(ip)?;
    let mut o = r.report();
    let outcome = attack(r, &mut o, vmid, ip, &pass);
    if let Err(e) = tb.remove_ct(vmid) {
        o.fail(format!("failed to remove the rogue CT {vmid}: {e:#}"));
    }
    outcome?;
    Ok(o)
}

fn attack(
    r: &Run<'_>,
    o: &mut ScenarioReport,
    vmid: u32,
    ip: Ipv4Addr,
    pass: &str,
) -> anyhow::Result<()> {
    let tb = r.tb;
    let c = tb.cluster();
    let k = &c.lb.keepalived;
    let prefix = c.network.cidr.prefix;
    let master = c
        .member_by_slot(&k.master)
        .context("the preferred master is not a member")?;
    let conf = rogue_conf(c, ip, pass);
    tb.exec_ct(
        vmid,
        &[
            "sh",
            "-c",
            &format!(
                "mkdir -p /run/rogue && cat > /run/rogue/keepalived.conf <<'EOF'\n{conf}EOF\n"
            ),
        ],
    )?;
    // The VIP as the rogue's own address: keepalived then runs it as the
    // address owner (priority 255 is only allowed there), and the kernel
    // answers ARP for the VIP with the rogue's MAC.
    let vip_cidr = format!("{}/{prefix}", c.network.vip);
    tb.exec_ct(vmid, &["ip", "addr", "add", &vip_cidr, "dev", "eth0"])?;
    tb.exec_ct(
        vmid,
        &[
            "sh",
            "-c",
            "setsid keepalived -n -l -D -P -f /run/rogue/keepalived.conf \
             -p /run/rogue/keepalived.pid -r /run/rogue/vrrp.pid \
             </dev/null >/run/rogue/log 2>&1 &",
        ],
    )?;
    let advert = Duration::from_millis(u64::from(k.advert_interval_ms.max(10)));
    let log = || {
        tb.exec_ct(vmid, &["cat", "/run/rogue/log"])
            .unwrap_or_default()
    };
    let master_state = wait_for(
        advert * 3 + Duration::from_secs(5),
        Duration::from_millis(200),
        || log().contains("Entering MASTER STATE").then_some(()),
    );
    if master_state.is_none() {
        anyhow::bail!(
            "the rogue's keepalived never became MASTER, so it never advertised: the scenario proves nothing; its log:\n{}",
            tail(&log(), 15)
        );
    }
    o.figure("rogue", format!("CT {vmid} {ip} priority 255 MASTER"));

    // Watch for 5 adverts (at least 5 s): every request through the VIP is
    // served by the master.
    let window = (advert * 5).max(Duration::from_secs(5));
    let client = r.client(0);
    let (mut sent, mut by_master, mut other) = (0usize, 0usize, Vec::new());
    let end = Instant::now() + window;
    while Instant::now() < end && sent < 200 {
        sent += 1;
        match probe(
            tb,
            vip(tb),
            "/haimg/lb-health",
            client,
            Duration::from_secs(1),
        ) {
            Ok(resp) if resp.served_by.as_deref() == Some(master.slot.as_str()) => by_master += 1,
            Ok(resp) => other.push(format!(
                "{} from {}",
                resp.status,
                resp.served_by.as_deref().unwrap_or("no lb")
            )),
            Err(e) => other.push(e.to_string()),
        }
        std::thread::sleep(Duration::from_millis(100)); // request spacing
    }
    o.figure("window_s", window.as_secs_f64());
    o.figure("requests", sent);
    // Requests for as long as the window lasts: no plan to hold them to.
    o.load(sent, other.len(), None);
    o.figure("served_by_master", by_master);
    o.expect(
        other.is_empty() && sent > 0,
        format!(
            "{} of {sent} requests through the VIP were not served by {}: {}",
            other.len(),
            master.slot,
            other.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        ),
    );

    // And keepalived never let go: the VIP is on the master, on no backup.
    let mut holders = Vec::new();
    for m in &c.lb.members {
        let addrs = tb.exec(&m.slot, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
        if holds(&addrs, c.network.vip) {
            holders.push(m.slot.clone());
        }
    }
    o.figure("vip_on", holders.join(","));
    o.expect(
        holders == [master.slot.clone()],
        format!(
            "the VIP is on [{}], not only on {}",
            holders.join(", "),
            master.slot
        ),
    );
    let still = log();
    o.expect(
        !still.contains("Entering BACKUP STATE"),
        format!(
            "the rogue heard a member's advert (it went BACKUP): the lb members advertise beyond their peers:\n{}",
            tail(&still, 5)
        ),
    );
    Ok(())
}

/// keepalived for the rogue: the cluster's VRID, advert interval and password,
/// priority 255, advertising to every lb member.
fn rogue_conf(c: &Cluster, ip: Ipv4Addr, pass: &str) -> String {
    let k = &c.lb.keepalived;
    let v3 = k.vrrp_version() == 3;
    let mut s = String::from("global_defs {\n    router_id rogue\n");
    if v3 {
        s += "    vrrp_version 3\n";
    }
    s += "}\n";
    s += "vrrp_instance rogue {\n    state MASTER\n    interface eth0\n";
    s += &format!("    virtual_router_id {}\n", k.virtual_router_id);
    s += "    priority 255\n";
    s += &format!("    advert_int {}\n", k.advert_int());
    s += &format!("    unicast_src_ip {ip}\n    unicast_peer {{\n");
    for m in &c.lb.members {
        s += &format!("        {}\n", m.ip);
    }
    s += "    }\n";
    // VRRPv3 has no authentication: the rogue speaks the members' version.
    if !v3 {
        s += &format!(
            "    authentication {{\n        auth_type PASS\n        auth_pass {pass}\n    }}\n"
        );
    }
    s += &format!(
        "    virtual_ipaddress {{\n        {}/{} dev eth0\n    }}\n}}\n",
        c.network.vip, c.network.cidr.prefix
    );
    s
}

/// The highest host address of the cluster network that nothing of the
/// cluster uses: not a member, the VIP, the gateway or an admin address.
fn stranger_address(c: &Cluster) -> Option<Ipv4Addr> {
    let net = &c.network;
    let used: Vec<Ipv4Addr> = c
        .members()
        .map(|m| m.ip)
        .chain([net.vip, net.gateway])
        .chain(net.admin.iter().copied())
        .collect();
    let (lo, hi) = (
        u32::from(net.cidr.network()),
        u32::from(net.cidr.broadcast()),
    );
    (lo..=hi)
        .rev()
        .map(Ipv4Addr::from)
        .find(|ip| net.cidr.is_host(*ip) && !used.contains(ip))
}

/// Does `ip -4 -o addr` output list `ip`?
fn holds(addrs: &str, ip: Ipv4Addr) -> bool {
    let want = format!("inet {ip}/");
    addrs.lines().any(|l| l.contains(&want))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Cluster {
        haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster
    }

    #[test]
    fn the_rogue_takes_a_free_address_outside_the_peer_list() {
        let c = seed();
        let ip = stranger_address(&c).unwrap();
        assert_eq!(ip, Ipv4Addr::new(192, 168, 30, 254));
        assert!(c.members().all(|m| m.ip != ip));
    }

    #[test]
    fn the_rogue_advertises_255_to_every_lb_member() {
        let c = seed();
        insta::assert_snapshot!(rogue_conf(&c, Ipv4Addr::new(192, 168, 30, 254), "PASSWORD"));
    }

    /// Against the VRRPv3 profile the rogue speaks v3 too (a v2 advert
    /// would be dropped for its version alone, proving nothing): no password.
    #[test]
    fn the_rogue_speaks_vrrp_v3_to_the_fast_profile() {
        let text = haimg_model::DEFAULT_SPEC.replace("advert_int_s: 1", "advert_interval_ms: 100");
        let c = haimg_model::spec::parse_yaml(&text).unwrap().cluster;
        insta::assert_snapshot!(rogue_conf(&c, Ipv4Addr::new(192, 168, 30, 254), "PASSWORD"));
    }

    #[test]
    fn holds_reads_ip_addr_output() {
        let out = "2: eth0    inet 192.168.30.100/24 brd 192.168.30.255 scope global eth0\n\
                   2: eth0    inet 192.168.30.200/24 scope global secondary eth0\n";
        assert!(holds(out, Ipv4Addr::new(192, 168, 30, 200)));
        assert!(!holds(out, Ipv4Addr::new(192, 168, 30, 20)));
    }
}
