//! The network policy as an nftables ruleset for the local bridge.
//!
//! [`haimg_model::policy`] says which flows are allowed; this renders them as
//! one `bridge`-family table that filters traffic between the ports of the
//! cluster's bridge. Only traffic *to* a member or the VIP is filtered
//! (inbound policy DROP, outbound ACCEPT — what Proxmox's container firewall
//! does). This kernel has no connection tracking for bridged traffic
//! (`nf_conntrack_bridge`), so replies are matched statelessly by source port:
//! the reply rule for "lb → webapp tcp/3000" accepts webapp packets *from*
//! port 3000 to lb members. Proxmox's firewall is stateful and needs no such rules.
//!
//! ARP is filtered too, as Proxmox's `ipfilter` does: an ARP packet from one of
//! the cluster's container ports that speaks for a member's address or the VIP
//! must carry that address's MAC (the VIP: an lb member's). Without it, any
//! container on the bridge could claim the VIP with one gratuitous ARP, whatever
//! keepalived decides.

use std::fmt::Write;
use std::net::Ipv4Addr;

use haimg_model::policy::{Peer, Policy, Service};
use haimg_model::quote::{self, Unquotable};

/// `nft -f -` input creating table `bridge <table>`. Only frames leaving through
/// a port whose name starts with `port_prefix` (the host ends of the cluster's
/// veths) are filtered, so other bridges on the machine are never touched.
/// (`meta ibrname` would be the natural match; this kernel does not support it.)
/// Every quoted string goes through [`quote::nft`]. `owners` are the (address,
/// MAC) pairs that may speak ARP for a protected address; none, no ARP rule.
pub fn ruleset(
    policy: &Policy,
    table: &str,
    port_prefix: &str,
    owners: &[(Ipv4Addr, String)],
) -> Result<String, Unquotable> {
    let mut s = String::new();
    // nft refuses an empty element list: a tier without members (a role
    // left out of the deploy) is a set without one.
    let set = |name: &str, ips: &[Ipv4Addr]| {
        let list: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
        let elements = if list.is_empty() {
            String::new()
        } else {
            format!("\t\telements = {{ {} }}\n", list.join(", "))
        };
        format!("\tset {name} {{\n\t\ttype ipv4_addr\n{elements}\t}}\n")
    };
    let _ = writeln!(
        s,
        "# haimg network policy: generated from the cluster spec, do not edit"
    );
    let _ = writeln!(s, "table bridge {table} {{");
    let mut members = Vec::new();
    for (role, ips) in &policy.tiers {
        s += &set(role.as_str(), ips);
        members.extend(ips.iter().copied());
    }
    s += &set("admin", &policy.admin);
    members.push(policy.vip);
    s += &set("protected", &members);
    if !owners.is_empty() {
        let mut list = Vec::new();
        for (ip, mac) in owners {
            list.push(format!("{ip} . {}", nft_mac(mac)?));
        }
        let _ = write!(
            s,
            "\tset owners {{\n\t\ttype ipv4_addr . ether_addr\n\t\telements = {{ {} }}\n\t}}\n",
            list.join(", ")
        );
    }
    let _ = writeln!(s, "\tchain forward {{");
    let _ = writeln!(
        s,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    let ports = quote::nft(&format!("{port_prefix}*"))?;
    if !owners.is_empty() {
        // Before the port test: a claim must not reach the client port either.
        let _ = writeln!(
            s,
            "\t\tiifname {ports} ether type arp arp saddr ip @protected arp saddr ip . arp saddr ether != @owners counter drop comment \"ARP for a member or the VIP from another MAC\""
        );
        let _ = writeln!(
            s,
            "\t\tiifname {ports} ether type arp arp saddr ip @protected arp saddr ip . ether saddr != @owners counter drop comment \"the same, by the frame's source\""
        );
    }
    let _ = writeln!(s, "\t\toifname != {ports} accept");
    let _ = writeln!(s, "\t\tether type != ip accept");
    let _ = writeln!(s, "\t\tip daddr != @protected accept");
    let _ = writeln!(
        s,
        "\t\ticmp type {{ destination-unreachable, time-exceeded }} accept"
    );
    for f in &policy.flows {
        let from = match f.from {
            Peer::Client => String::new(),
            Peer::Admin => "ip saddr @admin ".into(),
            Peer::Vip => format!("ip saddr {} ", policy.vip),
            Peer::Tier(r) => format!("ip saddr @{} ", r.as_str()),
        };
        let to = match f.to {
            Peer::Vip => format!("ip daddr {}", policy.vip),
            Peer::Tier(r) => format!("ip daddr @{}", r.as_str()),
            Peer::Client | Peer::Admin => continue, // not protected: accepted above
        };
        match f.service {
            Service::Tcp(port) => {
                let _ = writeln!(
                    s,
                    "\t\t{from}{to} tcp dport {port} accept comment {}",
                    quote::nft(f.why)?
                );
                if let (Peer::Tier(src), Peer::Tier(dst)) = (f.from, f.to) {
                    let _ = writeln!(
                        s,
                        "\t\tip saddr @{} ip daddr @{} tcp sport {port} accept comment \"replies\"",
                        dst.as_str(),
                        src.as_str()
                    );
                }
            }
            Service::Vrrp => {
                let _ = writeln!(
                    s,
                    "\t\t{from}{to} ip protocol vrrp accept comment {}",
                    quote::nft(f.why)?
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\t\tcounter drop comment \"everything else to a member\""
    );
    let _ = writeln!(s, "\t}}\n}}");
    Ok(s)
}

/// A MAC as nft writes it (`02:ab:…`), or why it is not one.
fn nft_mac(mac: &str) -> Result<String, Unquotable> {
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(Unquotable {
            lang: quote::Lang::Nft,
            what: format!("{mac:?} is not a MAC address like 02:00:00:00:00:01"),
        });
    }
    Ok(mac.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use haimg_model::Role;

    /// Made-up MACs: the real ones come from `fleet::members::arp_owners`,
    /// a layer above this one.
    fn owners(c: &haimg_model::Cluster) -> Vec<(Ipv4Addr, String)> {
        let mut v: Vec<_> = c
            .members()
            .enumerate()
            .map(|(i, m)| (m.ip, format!("02:00:00:00:00:{i:02X}")))
            .collect();
        v.push((c.network.vip, "02:00:00:00:00:00".into()));
        v
    }

    #[test]
    fn a_mac_that_is_not_one_is_refused() {
        let c = haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster;
        let p = haimg_model::policy::derive(&c);
        for bad in [
            "02:00:00:00:00",
            "02:00:00:00:00:0g",
            "02:00:00:00:00:01 } accept",
        ] {
            let e = ruleset(&p, "t", "hv", &[(c.network.vip, bad.into())]).unwrap_err();
            assert!(e.what.contains("is not a MAC address"), "{e:?}");
        }
    }

    #[test]
    fn default_spec_ruleset() {
        let c = haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster;
        let p = haimg_model::policy::derive(&c);
        insta::assert_snapshot!(ruleset(&p, "haimg_test", "hvtest", &owners(&c)).unwrap());
    }

    /// The kernel's own parser accepts the ruleset (`nft -c` checks without
    /// applying), also with a tier left out (mongo, when it cannot be built).
    /// Needs root and nftables (`make setup`), as CI has.
    #[test]
    fn nft_accepts_the_ruleset() {
        use std::io::Write;
        let c = haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster;
        for c in [c.clone(), c.without_roles(&[Role::Mongo])] {
            let policy = haimg_model::policy::derive(&c);
            let rules = ruleset(&policy, "haimg_check", "hvcheck", &owners(&c)).unwrap();
            let mut child = std::process::Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("nft not found: run `make setup` (installs nftables)");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(rules.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "nft -c: {}\n{rules}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
