//! The network policy, derived from the plan.
//!
//! The system document keeps internal traffic apart from public traffic by
//! host-level firewall rules but lists none. haimg knows the topology, so it
//! derives the allowed flows instead of asking for them: clients reach only
//! the VIP; lb reaches webapp; webapp reaches mongo; mongo members reach each
//! other; lb members speak VRRP; the deploy host reaches the health ports.
//! Everything else inbound is dropped. Backends turn [`Policy`] into Proxmox
//! firewall rules or nftables; this module only says what is allowed.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::{Cluster, Role};

/// Where traffic comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    /// Anyone (the public side).
    Client,
    /// The deploy host, for health gates (`network.admin`).
    Admin,
    /// The floating IP (held by one lb member).
    Vip,
    Tier(Role),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Client => f.write_str("client"),
            Peer::Admin => f.write_str("admin"),
            Peer::Vip => f.write_str("vip"),
            Peer::Tier(r) => write!(f, "{r}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase", tag = "proto", content = "port")]
pub enum Service {
    Tcp(u16),
    /// VRRP, IP protocol 112 (unicast between the lb members, or multicast 224.0.0.18).
    Vrrp,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Service::Tcp(p) => write!(f, "tcp/{p}"),
            Service::Vrrp => f.write_str("vrrp"),
        }
    }
}

/// One allowed flow; replies to it are allowed too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub from: Peer,
    pub to: Peer,
    pub service: Service,
    pub why: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub flows: Vec<Flow>,
    pub vip: Ipv4Addr,
    pub admin: Vec<Ipv4Addr>,
    /// Member addresses per tier.
    pub tiers: Vec<(Role, Vec<Ipv4Addr>)>,
}

pub fn derive(c: &Cluster) -> Policy {
    let http = Service::Tcp(c.lb.nginx.listen_port);
    let mut flows = vec![Flow {
        from: Peer::Client,
        to: Peer::Vip,
        service: http,
        why: "the entry point",
    }];
    if c.lb.nginx.tls.is_some() {
        flows.push(Flow {
            from: Peer::Client,
            to: Peer::Vip,
            service: Service::Tcp(443),
            why: "the entry point (TLS)",
        });
    }
    let tiers = Role::from_entry();
    flows.extend(tiers.iter().flat_map(|r| callers(*r, c)));
    // The deploy host reaches every tier's service port, for the health gates.
    flows.extend(tiers.iter().map(|r| Flow {
        from: Peer::Admin,
        to: Peer::Tier(*r),
        service: Service::Tcp(r.port(c)),
        why: "health gate",
    }));
    Policy {
        flows,
        vip: c.network.vip,
        admin: c.network.admin.clone(),
        tiers: Role::ALL
            .into_iter()
            .map(|r| (r, c.members_of(r).iter().map(|m| m.ip).collect()))
            .collect(),
    }
}

/// The members of the cluster that may reach `role`'s members, and on what.
fn callers(role: Role, c: &Cluster) -> Vec<Flow> {
    let to = Peer::Tier(role);
    let service = Service::Tcp(role.port(c));
    match role {
        Role::Lb => vec![Flow {
            from: to,
            to,
            service: Service::Vrrp,
            why: "keepalived elects the VIP holder",
        }],
        Role::Webapp => vec![Flow {
            from: Peer::Tier(Role::Lb),
            to,
            service,
            why: "nginx proxies to the app",
        }],
        Role::Mongo => vec![
            Flow {
                from: Peer::Tier(Role::Webapp),
                to,
                service,
                why: "the app uses the replica set",
            },
            Flow {
                from: to,
                to,
                service,
                why: "replication and elections",
            },
        ],
    }
}

impl Policy {
    pub fn allows(&self, from: Peer, to: Peer, service: Service) -> bool {
        self.flows
            .iter()
            .any(|f| f.from == from && f.to == to && f.service == service)
    }

    /// Every (destination, service) a flow mentions, in a stable order: the matrix columns.
    pub fn columns(&self) -> Vec<(Peer, Service)> {
        let mut cols: Vec<(Peer, Service)> = self.flows.iter().map(|f| (f.to, f.service)).collect();
        cols.sort();
        cols.dedup();
        cols
    }

    /// A sources × destinations table of allow/deny, for `haimg check`.
    pub fn matrix(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let cols = self.columns();
        let mut header = vec!["FROM \\ TO".to_string()];
        header.extend(cols.iter().map(|(p, s)| format!("{p} {s}")));
        let sources: Vec<Peer> = [Peer::Client, Peer::Admin]
            .into_iter()
            .chain(Role::from_entry().into_iter().map(Peer::Tier))
            .collect();
        let rows = sources
            .iter()
            .map(|from| {
                let mut row = vec![from.to_string()];
                row.extend(cols.iter().map(|(to, s)| {
                    if self.allows(*from, *to, *s) {
                        "allow"
                    } else {
                        "-"
                    }
                    .to_string()
                }));
                row
            })
            .collect();
        (header, rows)
    }
}

#[cfg(all(test, feature = "yaml"))]
mod tests {
    use super::*;

    #[test]
    fn seed_policy() {
        let c = crate::spec::parse_yaml(crate::DEFAULT_SPEC)
            .unwrap()
            .cluster;
        let p = derive(&c);
        let (lb, web, mongo) = (
            Peer::Tier(Role::Lb),
            Peer::Tier(Role::Webapp),
            Peer::Tier(Role::Mongo),
        );
        assert!(p.allows(Peer::Client, Peer::Vip, Service::Tcp(80)));
        assert!(p.allows(lb, web, Service::Tcp(3000)));
        assert!(p.allows(web, mongo, Service::Tcp(27017)));
        assert!(!p.allows(lb, mongo, Service::Tcp(27017)));
        assert!(!p.allows(Peer::Client, web, Service::Tcp(3000)));
        assert!(
            !p.allows(Peer::Client, Peer::Vip, Service::Tcp(443)),
            "no TLS configured"
        );
        assert_eq!(p.admin, vec![Ipv4Addr::new(192, 168, 30, 1)]);
    }
}
