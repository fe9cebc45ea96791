//! The local cluster's network: a bridge with no address in the host
//! namespace, and a client network namespace holding the gateway address.
//!
//! ```text
//!   host netns:   hmb<id> (bridge, no IPv4, no IPv6 link-local, no uplink)
//!                  ├── h<id>v100 … (CT veths, added by LXC)
//!                  └── hmc<id> ── veth ── eth0 in netns haimg-<cluster>-<id>
//!                                           192.168.30.1/24 (the gateway), lo
//! ```
//!
//! Why not the gateway on the bridge (as a Proxmox host would have it): two
//! clusters with the same plan (two engineers' test runs on one machine) would
//! both put 192.168.30.0/24 into the host's routing table and collide. Here the
//! host routing table is never touched, nothing on the bridge can leave it,
//! and each cluster's clients live in its own namespace (`ip netns exec
//! <netns> curl http://<vip>/`, or [`crate::probe::netns::run_in`] from Rust).
//! Containers' default route points at the gateway in that namespace, so
//! replies to any source address the client uses go back to it.
//!
//! Every step is idempotent: `ensure` repairs a half-built network, and
//! `teardown` removes whatever of it exists.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::names::Names;
use crate::exec::{Cmd, CommandRunner, RunError};

const IP_TIMEOUT: Duration = Duration::from_secs(15);

fn ip() -> Cmd {
    Cmd::new("ip", IP_TIMEOUT)
}

/// Interfaces in the host namespace (`ip -o link show`).
pub fn links(r: &dyn CommandRunner) -> Result<Vec<String>, RunError> {
    let out = r.run(&ip().args(["-o", "link", "show"]))?;
    Ok(parse_links(&out.stdout_str()))
}

/// `2: eth0@if5: <...>` → `eth0`.
pub fn parse_links(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// Network namespaces (`ip netns list`: `name (id: 3)` or `name`).
pub fn netns_list(r: &dyn CommandRunner) -> Result<Vec<String>, RunError> {
    let out = r.run(&ip().args(["netns", "list"]))?;
    Ok(out
        .stdout_str()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Build whatever part of the network is missing.
pub fn ensure(
    r: &dyn CommandRunner,
    n: &Names,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<(), RunError> {
    let (br, hc, ns) = (n.bridge(), n.client_veth(), n.netns());
    let have = links(r)?;
    if !have.contains(&br) {
        r.run(&ip().args(["link", "add", "name", &br, "type", "bridge"]))?;
    }
    // No IPv6 link-local address: the host must not talk on the bridge.
    r.run(&ip().args(["link", "set", "dev", &br, "addrgenmode", "none"]))?;
    r.run(&ip().args(["link", "set", "dev", &br, "up"]))?;
    if !netns_list(r)?.contains(&ns) {
        r.run(&ip().args(["netns", "add", &ns]))?;
    }
    if !have.contains(&hc) {
        // A leftover peer from a half-built run would block the new one.
        let inside = r.run(&ip().args(["-n", &ns, "-o", "link", "show"]))?;
        if parse_links(&inside.stdout_str())
            .iter()
            .any(|l| l == "eth0")
        {
            r.run(&ip().args(["-n", &ns, "link", "del", "eth0"]))?;
        }
        r.run(&ip().args([
            "link", "add", "name", &hc, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]))?;
    }
    r.run(&ip().args(["link", "set", "dev", &hc, "addrgenmode", "none"]))?;
    r.run(&ip().args(["link", "set", "dev", &hc, "master", &br, "up"]))?;
    let cidr = format!("{gateway}/{prefix}");
    r.run(&ip().args(["-n", &ns, "addr", "replace", &cidr, "dev", "eth0"]))?;
    // ARP retries every 100 ms instead of 1 s: a client polling a member that
    // is still booting sees it within 0.1 s of its first answer, so measured
    // boot and failover times are not rounded up to ARP's retry interval.
    r.run(&ip().args([
        "-n",
        &ns,
        "ntable",
        "change",
        "name",
        "arp_cache",
        "dev",
        "eth0",
        "retrans",
        "100",
    ]))?;
    r.run(&ip().args(["-n", &ns, "link", "set", "dev", "eth0", "up"]))?;
    r.run(&ip().args(["-n", &ns, "link", "set", "dev", "lo", "up"]))?;
    Ok(())
}

/// What `teardown` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    pub veths: Vec<String>,
    pub netns: Option<String>,
    pub bridge: Option<String>,
}

/// Remove the cluster's veths, client namespace and bridge, whichever exist.
pub fn teardown(r: &dyn CommandRunner, n: &Names) -> Result<Removed, RunError> {
    let mut removed = Removed::default();
    let have = links(r)?;
    for l in &have {
        if *l == n.client_veth() || n.is_ct_veth(l) {
            let out = r.output(&ip().args(["link", "del", "dev", l]))?;
            // A CT veth may vanish on its own while its container stops.
            if out.success() {
                removed.veths.push(l.clone());
            }
        }
    }
    let ns = n.netns();
    if netns_list(r)?.contains(&ns) {
        r.run(&ip().args(["netns", "del", &ns]))?;
        removed.netns = Some(ns);
    }
    let br = n.bridge();
    if have.contains(&br) {
        r.run(&ip().args(["link", "del", "dev", &br]))?;
        removed.bridge = Some(br);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_listing() {
        let out = "1: lo: <LOOPBACK,UP> mtu 65536\n2: eth0@if7: <BROADCAST> mtu 1500\n5: hmb0a1b2c3d: <NO-CARRIER>\n";
        assert_eq!(parse_links(out), ["lo", "eth0", "hmb0a1b2c3d"]);
    }
}
