//! Per-member container specs, derived from the cluster alone (pure).
//!
//! Invariants: the MAC of a slot depends only on the cluster name and the slot
//! (locally administered, unicast), so blue and green containers of a slot
//! share it and the network sees one host; the tags follow [`super::tags`];
//! `env`, `entrypoint` and `host-managed` are filled only when the target
//! supports them (Proxmox >= 9.1).

use haimg_model::{Cluster, Member};
use sha2::{Digest, Sha256};

use super::tags::MemberTags;
use super::templates::LocalTemplate;
use crate::backend::{Capabilities, ContainerSpec, StoredTemplate};

/// PID 1 of every image.
pub const ENTRYPOINT: &str = "/sbin/init";

/// `02:xx:xx:xx:xx:xx` from sha256(`haimg/<cluster>/<slot>`): locally
/// administered (bit 1 set), unicast (bit 0 clear), stable per slot.
pub fn stable_mac(cluster: &str, slot: &str) -> String {
    let h = Sha256::digest(format!("haimg/{cluster}/{slot}").as_bytes());
    let mut b = [0u8; 6];
    b[0] = 0x02;
    b[1..].copy_from_slice(&h[..5]);
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Who may speak ARP for which address ([`crate::backend::Policy::arp_owners`]):
/// each member for its own address with its slot's MAC, and every lb member
/// for the VIP. Blue and green of a slot share the MAC, so a rollout changes nothing here.
pub fn arp_owners(cluster: &Cluster) -> Vec<(std::net::Ipv4Addr, String)> {
    let mut owners: Vec<_> = cluster
        .members()
        .map(|m| (m.ip, stable_mac(&cluster.name, &m.slot)))
        .collect();
    for m in cluster.members().filter(|m| m.role.holds_vip()) {
        owners.push((cluster.network.vip, stable_mac(&cluster.name, &m.slot)));
    }
    owners
}

/// The tags a member carries when it runs `template`.
pub fn member_tags(cluster: &Cluster, member: &Member, template: &LocalTemplate) -> MemberTags {
    MemberTags {
        cluster: Some(cluster.name.clone()),
        role: Some(member.role),
        slot: Some(member.slot.clone()),
        version: Some(cluster.version.clone()),
        template: Some(template.short_hash().to_string()),
        secrets: template.secrets.fingerprint.clone(),
        state: None,
        gen: None,
        extra: cluster.tags.clone(),
    }
}

/// Identity for PID 1 (`HAIMG_*`), when the target can deliver an environment.
pub fn member_env(cluster: &Cluster, member: &Member) -> Vec<(String, String)> {
    use haimg_model::image::env;
    vec![
        (env::ROLE.into(), member.role.to_string()),
        (env::SLOT.into(), member.slot.clone()),
        (
            env::IP.into(),
            format!("{}/{}", member.ip, cluster.network.cidr.prefix),
        ),
        (env::GATEWAY.into(), cluster.network.gateway.to_string()),
    ]
}

/// The container spec of one member.
pub fn container_spec(
    cluster: &Cluster,
    member: &Member,
    local: &LocalTemplate,
    stored: &StoredTemplate,
    caps: Capabilities,
) -> ContainerSpec {
    let res = cluster.resources_of(member.role);
    ContainerSpec {
        vmid: member.vmid,
        node: member.node.clone(),
        hostname: member.hostname.clone(),
        role: member.role,
        slot: member.slot.clone(),
        template: stored.clone(),
        ip: member.ip,
        prefix: cluster.network.cidr.prefix,
        gateway: cluster.network.gateway,
        bridge: cluster.network.bridge.clone(),
        hwaddr: stable_mac(&cluster.name, &member.slot),
        nameservers: cluster.network.dns.clone(),
        search_domain: cluster.network.search_domain.clone(),
        cores: res.cores,
        memory_mb: res.memory_mb,
        rootfs_gb: res.rootfs_gb,
        data_volume_gb: member.role.data_volume_gb(cluster),
        data_mount: member.role.data_mount().map(str::to_string),
        tags: member_tags(cluster, member, local).render(),
        env: if caps.env {
            let mut env = member_env(cluster, member);
            env.extend(local.secrets.env.iter().cloned());
            env
        } else {
            Vec::new()
        },
        onboot: true,
        entrypoint: caps.entrypoint.then(|| ENTRYPOINT.to_string()),
        host_managed: caps.host_managed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_stable_local_unicast_and_distinct() {
        let a = stable_mac("haimg", "nginx1");
        assert_eq!(a, stable_mac("haimg", "nginx1"));
        assert_ne!(a, stable_mac("haimg", "nginx2"));
        assert_ne!(a, stable_mac("other", "nginx1"));
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0b11, 0b10, "{a}");
        assert_eq!(a.len(), 17);
    }
}
