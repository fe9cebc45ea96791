//! Fault tolerance, computed from the plan rather than claimed.
//!
//! For each tier: how many members may be lost while it still does its job,
//! and how many Proxmox hosts may be lost (worst case: the hosts carrying the
//! most members of that tier go first). The system document claims the
//! cluster survives losing two hosts; for MongoDB writes a majority of the
//! replica set must survive, so with three members that claim is false, and
//! [`Report::claim_two_hosts`] says so.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Cluster, Member};

/// What one tier (or one capability of a tier) survives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierTolerance {
    /// e.g. `lb`, `mongo writes`.
    pub name: String,
    pub members: usize,
    /// Members that must stay up.
    pub needs: usize,
    pub member_losses: usize,
    pub host_losses: usize,
    pub note: Option<String>,
}

/// Which members die together when a host fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostGroup {
    pub node: String,
    pub slots: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub tiers: Vec<TierTolerance>,
    pub hosts: Vec<HostGroup>,
    /// Hosts the whole service (pages and writes) survives.
    pub service_host_losses: usize,
    /// Does "tolerates the loss of two hosts without interruption" hold?
    pub claim_two_hosts: bool,
    /// Plain words on the claim.
    pub verdict: String,
}

/// Worst-case hosts lost before fewer than `needs` members remain.
fn host_losses(members: &[Member], needs: usize) -> usize {
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for m in members {
        *per_node.entry(&m.node).or_default() += 1;
    }
    let mut counts: Vec<usize> = per_node.into_values().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let spare = members.len().saturating_sub(needs);
    let mut lost = 0;
    let mut k = 0;
    for c in counts {
        if lost + c > spare {
            break;
        }
        lost += c;
        k += 1;
    }
    k
}

fn tier(name: &str, members: &[Member], needs: usize, note: Option<String>) -> TierTolerance {
    TierTolerance {
        name: name.to_string(),
        members: members.len(),
        needs,
        member_losses: members.len().saturating_sub(needs),
        host_losses: host_losses(members, needs),
        note,
    }
}

pub fn report(c: &Cluster) -> Report {
    let n_mongo = c.mongo.members.len();
    let majority = n_mongo / 2 + 1;
    let tiers = vec![
        tier("lb", &c.lb.members, 1, Some("the VIP moves to a surviving lb".into())),
        tier("webapp", &c.webapp.members, 1, Some("nginx stops sending to a dead webapp".into())),
        tier(
            "mongo writes",
            &c.mongo.members,
            majority,
            Some(format!("a primary needs a majority: {majority} of {n_mongo}")),
        ),
        tier(
            "mongo reads",
            &c.mongo.members,
            1,
            Some("only with readPreference secondaryPreferred; the driver default (primary) fails with writes".into()),
        ),
    ];
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in c.members() {
        groups
            .entry(m.node.clone())
            .or_default()
            .push(m.slot.clone());
    }
    let hosts = groups
        .into_iter()
        .map(|(node, slots)| HostGroup { node, slots })
        .collect();
    let service_host_losses = tiers
        .iter()
        .filter(|t| t.name != "mongo reads")
        .map(|t| t.host_losses)
        .min()
        .unwrap_or(0);
    let claim_two_hosts = service_host_losses >= 2;
    let verdict = if claim_two_hosts {
        "the claim \"tolerates the loss of two hosts without interruption\" holds for this plan"
            .to_string()
    } else {
        let weakest: Vec<String> = tiers
            .iter()
            .filter(|t| t.name != "mongo reads" && t.host_losses < 2)
            .map(|t| format!("{} (needs {} of {} up)", t.name, t.needs, t.members))
            .collect();
        format!(
            "the claim \"tolerates the loss of two hosts without interruption\" does not hold: \
             with two hosts lost, {} stop; the whole service survives {} lost host{}",
            weakest.join(", "),
            service_host_losses,
            if service_host_losses == 1 { "" } else { "s" }
        )
    };
    Report {
        tiers,
        hosts,
        service_host_losses,
        claim_two_hosts,
        verdict,
    }
}

#[cfg(all(test, feature = "yaml"))]
mod tests {
    use super::*;

    #[test]
    fn seed_plan() {
        let c = crate::spec::parse_yaml(crate::DEFAULT_SPEC)
            .unwrap()
            .cluster;
        let r = report(&c);
        let by: BTreeMap<_, _> = r.tiers.iter().map(|t| (t.name.as_str(), t)).collect();
        assert_eq!(by["lb"].host_losses, 2);
        assert_eq!(by["webapp"].host_losses, 2);
        assert_eq!(by["mongo writes"].member_losses, 1);
        assert_eq!(by["mongo writes"].host_losses, 1);
        assert_eq!(by["mongo reads"].host_losses, 2);
        assert_eq!(r.service_host_losses, 1);
        assert!(!r.claim_two_hosts);
        assert_eq!(r.hosts.len(), 3);
    }

    #[test]
    fn colocated_members_die_together() {
        let text = crate::DEFAULT_SPEC
            .replace(
                "ip: 192.168.30.101, node: pve2",
                "ip: 192.168.30.101, node: pve1",
            )
            .replace("    nginx:\n", "    allow_colocation: true\n    nginx:\n");
        let c = crate::spec::parse_yaml(&text).unwrap().cluster;
        let lb = &report(&c).tiers[0];
        // nginx1 and nginx2 share pve1: losing pve1 and pve3 leaves none.
        assert_eq!(lb.host_losses, 1);
        assert_eq!(lb.member_losses, 2);
    }
}
