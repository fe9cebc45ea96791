//! `validate()`: from the file's shape to a [`Cluster`], or every problem at once.
//!
//! Checks run section by section and never stop at the first failure; each
//! pushes a [`Problem`] with the YAML path of the offending key and a fix-it
//! hint. Only when no error was found is a `Cluster` assembled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use super::raw::*;
use super::{secrets, Checked, Problem, Severity, SpecError, SCHEMA_VERSION};
use crate::cluster::*;
use crate::endpoint::Endpoint;

/// Validate a parsed spec into a [`Cluster`].
pub fn validate(raw: &RawSpec) -> Result<Checked, SpecError> {
    let mut v = Validator::default();
    let cluster = v.spec(raw);
    let (errors, warnings): (Vec<_>, Vec<_>) = v
        .problems
        .into_iter()
        .partition(|p| p.severity == Severity::Error);
    match cluster {
        Some(cluster) if errors.is_empty() => Ok(Checked { cluster, warnings }),
        _ => Err(SpecError {
            problems: errors.into_iter().chain(warnings).collect(),
        }),
    }
}

/// Highest VMID a member (blue or green) may have. Proxmox accepts up to
/// 999,999,999; haimg stops at 9,999,999 so the local backend's veth names
/// (`h` + 6 hex digits + `v` + the VMID, at most 15 bytes) always carry the
/// full 6-digit prefix its nftables policy matches on.
pub const MAX_VMID: u64 = 9_999_999;
/// Highest VMID Proxmox accepts.
const PVE_MAX_VMID: u64 = 999_999_999;

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

/// Keeps a value only if every check on it passed.
type Checked1<T> = Option<T>;

impl Validator {
    fn err(&mut self, path: &str, msg: impl Into<String>, hint: impl Into<String>) {
        self.problems.push(Problem::error(path, msg).hint(hint));
    }

    fn warn(&mut self, path: &str, msg: impl Into<String>, hint: impl Into<String>) {
        self.problems.push(Problem::warning(path, msg).hint(hint));
    }

    fn range(&mut self, path: &str, value: u64, min: u64, max: u64) -> Checked1<u64> {
        if value < min || value > max {
            self.err(
                path,
                format!("{value} is out of range"),
                format!("use a value from {min} to {max}"),
            );
            None
        } else {
            Some(value)
        }
    }

    fn port(&mut self, path: &str, value: u64) -> Checked1<u16> {
        self.range(path, value, 1, 65535).map(|p| p as u16)
    }

    fn ipv4(&mut self, path: &str, s: &str) -> Checked1<Ipv4Addr> {
        match s.parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                let hint = if s.contains('/') {
                    "write the address without a prefix length; the prefix comes from network.cidr"
                } else {
                    "write a dotted IPv4 address such as 192.168.30.10"
                };
                self.err(path, format!("{s:?} is not an IPv4 address"), hint);
                None
            }
        }
    }

    fn in_net(&mut self, path: &str, ip: Ipv4Addr, net: Option<Ipv4Net>) -> bool {
        let Some(net) = net else { return true };
        if !net.contains(ip) {
            self.err(
                path,
                format!("{ip} is outside {}", net),
                format!("pick an address inside {} or change network.cidr", net),
            );
            false
        } else if !net.is_host(ip) {
            self.err(
                path,
                format!("{ip} is the network or broadcast address of {net}"),
                "pick a host address",
            );
            false
        } else {
            true
        }
    }

    /// An address that can be on a cluster LAN: not "this network", loopback,
    /// link-local, multicast, reserved or broadcast. `dns`: a resolver may be
    /// link-local (clouds put one there), never the others.
    fn lan_addr(&mut self, path: &str, ip: Ipv4Addr, dns: bool) -> bool {
        match special_address(ip) {
            Some((_, "link-local")) if dns => true,
            Some((range, what)) => {
                self.err(
                    path,
                    format!("{ip} is a {what} address ({range}), not one on a cluster LAN"),
                    "use an address of the cluster network, e.g. in 192.168.30.0/24",
                );
                false
            }
            None => true,
        }
    }

    fn dns_label(&mut self, path: &str, s: &str, what: &str) -> bool {
        if is_dns_label(s) {
            true
        } else {
            self.err(
                path,
                format!("{s:?} is not a valid {what}"),
                "use 1-63 lowercase letters, digits and '-', not starting or ending with '-'",
            );
            false
        }
    }

    fn spec(&mut self, raw: &RawSpec) -> Option<Cluster> {
        if raw.schema_version != SCHEMA_VERSION {
            self.err(
                "schema_version",
                format!("schema version {} is not supported", raw.schema_version),
                format!("this haimg reads schema_version: {SCHEMA_VERSION}"),
            );
        }
        let meta = self.meta(&raw.cluster);
        let network = self.network(&raw.network);
        let proxmox = self.proxmox(&raw.proxmox);
        let net = network.as_ref().map(|n| n.cidr);
        let lb_m = self.members(
            Role::Lb,
            &raw.roles.lb.members,
            raw.roles.lb.allow_colocation,
            &raw.proxmox,
        );
        let mongo_m = self.members(
            Role::Mongo,
            &raw.roles.mongo.members,
            raw.roles.mongo.allow_colocation,
            &raw.proxmox,
        );
        let web_m = self.members(
            Role::Webapp,
            &raw.roles.webapp.members,
            raw.roles.webapp.allow_colocation,
            &raw.proxmox,
        );
        self.cross_members(raw, net, network.as_ref());
        let lb = self.lb(&raw.roles.lb, lb_m);
        let mongo = self.mongo(&raw.roles.mongo, mongo_m);
        let webapp = self.webapp(&raw.roles.webapp, web_m);
        let rollout = self.rollout(&raw.rollout, raw);
        let (name, version, tags) = meta?;
        Some(Cluster {
            name,
            version,
            tags,
            network: network?,
            lb: lb?,
            mongo: mongo?,
            webapp: webapp?,
            proxmox: proxmox?,
            rollout: rollout?,
        })
    }

    fn meta(&mut self, m: &RawClusterMeta) -> Option<(String, String, Vec<String>)> {
        let mut ok = self.dns_label("cluster.name", &m.name, "cluster name");
        if !is_template_version(&m.version) {
            self.err(
                "cluster.version",
                format!("{:?} cannot be part of a Proxmox template file name", m.version),
                "use letters, digits, '.' and '-' (at most 64), starting with a letter or digit, e.g. 1.2.0",
            );
            ok = false;
        }
        for (i, t) in m.tags.iter().enumerate() {
            if !is_pve_tag(t) {
                self.err(
                    &format!("cluster.tags[{i}]"),
                    format!("{t:?} is not a valid Proxmox tag"),
                    "tags are lowercase letters, digits, '_', '-', '+' and '.', starting with a letter, digit or '_'",
                );
                ok = false;
            }
        }
        ok.then(|| (m.name.clone(), m.version.clone(), m.tags.clone()))
    }

    fn network(&mut self, n: &RawNetwork) -> Option<Network> {
        let cidr = match Ipv4Net::parse(&n.cidr) {
            Some(c) if c.addr == c.network() && !(MIN_PREFIX..=MAX_PREFIX).contains(&c.prefix) => {
                self.err(
                    "network.cidr",
                    format!("/{} cannot be a cluster LAN", c.prefix),
                    format!(
                        "use a prefix from /{MIN_PREFIX} to /{MAX_PREFIX}: room for the gateway, the VIP and the members, and no wider than a /8"
                    ),
                );
                None
            }
            Some(c) if c.addr == c.network() => match special_address(c.addr) {
                Some((range, what)) => {
                    self.err(
                        "network.cidr",
                        format!("{} is inside {range}, the {what} range", n.cidr),
                        "use a private network such as 192.168.30.0/24",
                    );
                    None
                }
                None => Some(c),
            },
            Some(c) => {
                self.err(
                    "network.cidr",
                    format!("{} has host bits set", n.cidr),
                    format!("write the network address: {}/{}", c.network(), c.prefix),
                );
                None
            }
            None => {
                self.err(
                    "network.cidr",
                    format!("{:?} is not an IPv4 network in CIDR form", n.cidr),
                    "write it like 192.168.30.0/24",
                );
                None
            }
        };
        let gateway = self
            .ipv4("network.gateway", &n.gateway)
            .filter(|g| self.lan_addr("network.gateway", *g, false));
        if let Some(g) = gateway {
            self.in_net("network.gateway", g, cidr);
        }
        let vip = self
            .ipv4("network.vip", &n.vip)
            .filter(|v| self.lan_addr("network.vip", *v, false));
        if let Some(vip) = vip {
            self.in_net("network.vip", vip, cidr);
            if Some(vip) == gateway {
                self.err(
                    "network.vip",
                    format!("{vip} is also the gateway"),
                    "pick a free address for the VIP",
                );
            }
        }
        let bridge_ok = !n.bridge.is_empty()
            && n.bridge.len() <= 15
            && n.bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !bridge_ok {
            self.err(
                "network.bridge",
                format!("{:?} is not a valid Linux bridge name", n.bridge),
                "use at most 15 letters, digits, '_', '.' or '-', e.g. vmbr0",
            );
        }
        let mut dns = Vec::new();
        for (i, d) in n.dns.iter().enumerate() {
            let path = format!("network.dns[{i}]");
            dns.extend(
                self.ipv4(&path, d)
                    .filter(|ip| self.lan_addr(&path, *ip, true)),
            );
        }
        if let Some(sd) = &n.search_domain {
            if !is_dns_name(sd) {
                self.err(
                    "network.search_domain",
                    format!("{sd:?} is not a DNS name"),
                    "write a domain such as lan or example.org",
                );
            }
        }
        let mut admin = Vec::new();
        for (i, a) in n.admin.iter().enumerate() {
            let path = format!("network.admin[{i}]");
            if let Some(ip) = self
                .ipv4(&path, a)
                .filter(|ip| self.lan_addr(&path, *ip, false))
            {
                if Some(ip) == vip {
                    self.err(
                        &path,
                        format!("{ip} is the VIP"),
                        "name the deploy host's own address",
                    );
                }
                admin.push(ip);
            }
        }
        if n.admin.is_empty() {
            admin.extend(gateway);
        }
        Some(Network {
            admin: (admin.len() == n.admin.len().max(1)).then_some(admin)?,
            cidr: cidr?,
            gateway: gateway?,
            vip: vip?,
            bridge: bridge_ok.then(|| n.bridge.clone())?,
            dns: (dns.len() == n.dns.len()).then_some(dns)?,
            search_domain: n.search_domain.clone(),
        })
    }

    fn members(
        &mut self,
        role: Role,
        raw: &[RawMember],
        allow_colocation: bool,
        px: &RawProxmox,
    ) -> Option<Vec<Member>> {
        let base = format!("roles.{role}.members");
        if raw.is_empty() {
            self.err(
                &base,
                format!("the {role} tier has no members"),
                format!("list at least one {role} member"),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        let mut by_node: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let nodes: HashSet<&str> = px.nodes.iter().map(String::as_str).collect();
        for (i, m) in raw.iter().enumerate() {
            let p = format!("{base}[{i}]");
            ok &= self.dns_label(&format!("{p}.slot"), &m.slot, "slot name");
            let vmid = if m.vmid > MAX_VMID && m.vmid <= PVE_MAX_VMID {
                self.err(
                    &format!("{p}.vmid"),
                    format!("{} is above {MAX_VMID}", m.vmid),
                    format!("haimg keeps every VMID, green ones (vmid + rollout.green_vmid_offset) included, from 100 to {MAX_VMID}, so local container interfaces stay inside the network policy"),
                );
                None
            } else {
                self.range(&format!("{p}.vmid"), m.vmid, 100, MAX_VMID)
            };
            if !is_dns_name(&m.hostname) {
                self.err(
                    &format!("{p}.hostname"),
                    format!("{:?} is not a valid hostname", m.hostname),
                    "use DNS labels of lowercase letters, digits and '-', e.g. nginx1",
                );
                ok = false;
            }
            ok &= self.dns_label(&format!("{p}.node"), &m.node, "Proxmox node name");
            if !nodes.is_empty() && !nodes.contains(m.node.as_str()) {
                self.err(
                    &format!("{p}.node"),
                    format!("node {:?} is not listed in proxmox.nodes", m.node),
                    format!("use one of: {}", some_of(&px.nodes)),
                );
                ok = false;
            }
            if m.priority.is_some() && !role.holds_vip() {
                self.err(
                    &format!("{p}.priority"),
                    "only lb members have a keepalived priority",
                    "remove the key",
                );
                ok = false;
            }
            by_node.entry(&m.node).or_default().push(&m.slot);
            let ip_path = format!("{p}.ip");
            let ip = self
                .ipv4(&ip_path, &m.ip)
                .filter(|ip| self.lan_addr(&ip_path, *ip, false));
            if let (Some(vmid), Some(ip)) = (vmid, ip) {
                out.push(Member {
                    role,
                    index: i,
                    slot: m.slot.clone(),
                    vmid: vmid as u32,
                    hostname: m.hostname.clone(),
                    ip,
                    node: m.node.clone(),
                });
            } else {
                ok = false;
            }
        }
        for (node, slots) in by_node.iter().filter(|(_, s)| s.len() > 1) {
            let msg = format!(
                "{} and {} run on the same Proxmox node {node}: losing that host loses both",
                slots[..slots.len() - 1].join(", "),
                slots[slots.len() - 1]
            );
            if allow_colocation {
                self.warn(
                    &base,
                    msg,
                    "spread the tier across nodes for fault tolerance",
                );
            } else {
                self.err(
                    &base,
                    msg,
                    format!("place each member on its own node, or set roles.{role}.allow_colocation: true"),
                );
                ok = false;
            }
        }
        ok.then_some(out)
    }

    /// Uniqueness across all tiers, and addresses against the network.
    fn cross_members(&mut self, raw: &RawSpec, net: Option<Ipv4Net>, network: Option<&Network>) {
        let mut seen: [HashMap<String, String>; 4] = Default::default();
        let names = ["slot", "vmid", "hostname", "ip"];
        for role in Role::ALL {
            let members = match role {
                Role::Lb => &raw.roles.lb.members,
                Role::Mongo => &raw.roles.mongo.members,
                Role::Webapp => &raw.roles.webapp.members,
            };
            for (i, m) in members.iter().enumerate() {
                let p = format!("roles.{role}.members[{i}]");
                let values = [
                    m.slot.clone(),
                    m.vmid.to_string(),
                    m.hostname.to_ascii_lowercase(),
                    m.ip.clone(),
                ];
                for (k, value) in values.into_iter().enumerate() {
                    let here = format!("{p}.{}", names[k]);
                    if let Some(first) = seen[k].get(&value) {
                        self.err(
                            &here,
                            format!("{} {value} is already used by `{first}`", names[k]),
                            format!("every member needs its own {}", names[k]),
                        );
                    } else {
                        seen[k].insert(value, here);
                    }
                }
                if let Some(ip) =
                    m.ip.parse::<Ipv4Addr>()
                        .ok()
                        .filter(|ip| special_address(*ip).is_none())
                {
                    let path = format!("{p}.ip");
                    if self.in_net(&path, ip, net) {
                        if let Some(n) = network {
                            if ip == n.vip {
                                self.err(&path, format!("{ip} is the VIP"), "the VIP floats between lb members; give the member its own address");
                            } else if ip == n.gateway {
                                self.err(
                                    &path,
                                    format!("{ip} is the gateway"),
                                    "pick a free address",
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn resources(&mut self, role: Role, r: &RawResources) -> Option<Resources> {
        let p = format!("roles.{role}.resources");
        let cores = self.range(&format!("{p}.cores"), r.cores, 1, 8192);
        let memory = self.range(&format!("{p}.memory_mb"), r.memory_mb, 64, 1 << 22);
        let rootfs = self.range(&format!("{p}.rootfs_gb"), r.rootfs_gb, 1, 65536);
        Some(Resources {
            cores: cores? as u32,
            memory_mb: memory? as u32,
            rootfs_gb: rootfs? as u32,
        })
    }

    fn lb(&mut self, raw: &RawLb, members: Option<Vec<Member>>) -> Option<LbTier> {
        let resources = self.resources(Role::Lb, &raw.resources);
        let n = &raw.nginx;
        let p = "roles.lb.nginx";
        let max_fails = self.range(&format!("{p}.max_fails"), n.max_fails, 1, 100);
        let fail_timeout = self.range(&format!("{p}.fail_timeout_s"), n.fail_timeout_s, 1, 3600);
        let listen = self.port(&format!("{p}.listen_port"), n.listen_port);
        let rl = &n.rate_limit;
        let rp = format!("{p}.rate_limit");
        let zone_ok = !rl.zone.is_empty()
            && rl.zone.len() <= 64
            && rl
                .zone
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !zone_ok {
            self.err(
                &format!("{rp}.zone"),
                format!("{:?} is not a valid nginx zone name", rl.zone),
                "use letters, digits and '_', e.g. mein_limit",
            );
        }
        let zone_size = self.range(&format!("{rp}.zone_size_mb"), rl.zone_size_mb, 1, 1024);
        let rate = self.range(&format!("{rp}.rate_per_s"), rl.rate_per_s, 1, 1_000_000);
        let burst = self.range(&format!("{rp}.burst"), rl.burst, 1, 1_000_000);
        let status = self.range(&format!("{rp}.status"), rl.status, 400, 599);
        let mut tls_ok = true;
        if let Some(t) = &n.tls {
            for (k, v) in [
                ("certificate", &t.certificate),
                ("certificate_key", &t.certificate_key),
            ] {
                if !v.starts_with('/') {
                    self.err(
                        &format!("{p}.tls.{k}"),
                        format!("{v:?} is not an absolute path"),
                        "give the path inside the container, e.g. /etc/haimg/tls/cert.pem",
                    );
                    tls_ok = false;
                } else if !is_safe_path(v) {
                    self.err(
                        &format!("{p}.tls.{k}"),
                        format!("{v:?} is not a plain path"),
                        "use letters, digits, '_', '-', '.' and '/' (no `..`, no spaces, at most 255 characters): the path goes into nginx.conf as it is",
                    );
                    tls_ok = false;
                }
            }
        }
        let keepalived = self.keepalived(raw, members.as_deref());
        let tls = n.tls.as_ref().map(|t| NginxTls {
            certificate: t.certificate.clone(),
            certificate_key: t.certificate_key.clone(),
        });
        if !tls_ok {
            return None;
        }
        Some(LbTier {
            members: members?,
            allow_colocation: raw.allow_colocation,
            resources: resources?,
            nginx: Nginx {
                upstream_hash: n.upstream_hash,
                max_fails: max_fails? as u32,
                fail_timeout_s: fail_timeout? as u32,
                listen_port: listen?,
                tls,
                rate_limit: RateLimit {
                    zone: zone_ok.then(|| rl.zone.clone())?,
                    zone_size_mb: zone_size? as u32,
                    rate_per_s: rate? as u32,
                    burst: burst? as u32,
                    status: status? as u16,
                },
            },
            keepalived: keepalived?,
        })
    }

    fn keepalived(&mut self, raw: &RawLb, members: Option<&[Member]>) -> Option<Keepalived> {
        let k = &raw.keepalived;
        let p = "roles.lb.keepalived";
        let vrid = self.range(
            &format!("{p}.virtual_router_id"),
            k.virtual_router_id,
            1,
            255,
        );
        let advert = match (k.advert_int_s, k.advert_interval_ms) {
            (Some(_), Some(_)) => {
                self.err(
                    p,
                    "advert_int_s and advert_interval_ms are both given",
                    "give one: advert_int_s (whole seconds) or advert_interval_ms",
                );
                None
            }
            (Some(s), None) => self
                .range(&format!("{p}.advert_int_s"), s, 1, 255)
                .map(|s| s * 1000),
            // VRRPv3 carries the interval in 12 bits of centiseconds (RFC 5798
            // §5.2.7): 10 ms to 40.95 s in steps of 10 ms. keepalived 2.2.7
            // would round another value (`vrrp_complete_instance`: "must be
            // in units of 10ms - rounding"); the spec refuses it instead.
            (None, Some(ms)) => {
                let path = format!("{p}.advert_interval_ms");
                let r = self.range(&path, ms, 10, 40_950);
                if r.is_some_and(|ms| ms % 10 != 0) {
                    self.err(
                        &path,
                        format!("{ms} is not a multiple of 10"),
                        "VRRPv3 counts hundredths of a second",
                    );
                    None
                } else {
                    r
                }
            }
            // The seed's profile: VRRPv2, one advert a second.
            (None, None) => Some(1000),
        };
        let master_idx = raw.members.iter().position(|m| m.slot == k.master);
        if master_idx.is_none() {
            let slots: Vec<&str> = raw.members.iter().map(|m| m.slot.as_str()).collect();
            self.err(
                &format!("{p}.master"),
                format!("{:?} is not an lb slot", k.master),
                format!("use one of: {}", slots.join(", ")),
            );
        }
        // Default priorities: the master 150, the others 100, 90, 80, ... in spec order.
        let mut priorities = Vec::new();
        let mut next_backup = 100u64;
        let mut ok = true;
        for (i, m) in raw.members.iter().enumerate() {
            let prio = match m.priority {
                Some(pr) => {
                    let r = self.range(&format!("roles.lb.members[{i}].priority"), pr, 1, 254);
                    ok &= r.is_some();
                    pr
                }
                None if Some(i) == master_idx => 150,
                None => {
                    let pr = next_backup.max(1);
                    next_backup = next_backup.saturating_sub(10);
                    pr
                }
            };
            priorities.push(prio);
        }
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for (i, pr) in priorities.iter().enumerate() {
            if let Some(first) = seen.insert(*pr, i) {
                self.err(
                    &format!("roles.lb.members[{i}].priority"),
                    format!("priority {pr} is also used by roles.lb.members[{first}]"),
                    "keepalived priorities must be unique so the VIP has one clear owner",
                );
                ok = false;
            }
        }
        if let Some(mi) = master_idx {
            let mp = priorities[mi];
            if priorities
                .iter()
                .enumerate()
                .any(|(i, p)| i != mi && *p >= mp)
            {
                self.err(
                    &format!("roles.lb.members[{mi}].priority"),
                    format!("the master {} does not have the highest priority", k.master),
                    "give the master the highest priority, or name another master",
                );
                ok = false;
            }
        }
        members?;
        if !ok || master_idx.is_none() {
            return None;
        }
        Some(Keepalived {
            virtual_router_id: vrid? as u8,
            advert_interval_ms: advert? as u32,
            mode: k.mode,
            master: k.master.clone(),
            priorities: priorities.iter().map(|p| *p as u8).collect(),
        })
    }

    fn mongo(&mut self, raw: &RawMongo, members: Option<Vec<Member>>) -> Option<MongoTier> {
        let resources = self.resources(Role::Mongo, &raw.resources);
        let n = raw.members.len();
        let p = "roles.mongo.members";
        if n > 0 && n % 2 == 0 {
            self.err(
                p,
                format!("{n} members form an even-sized replica set"),
                format!(
                    "a majority of {n} is {}, so member {} adds no fault tolerance; use {} or {} members",
                    n / 2 + 1,
                    n,
                    n - 1,
                    n + 1
                ),
            );
        } else if n > 7 {
            self.err(
                p,
                format!("{n} voting members"),
                "a MongoDB replica set has at most 7 voting members",
            );
        } else if n > 0 && n < 3 {
            self.warn(
                p,
                format!("{n} member(s) cannot form primary-secondary-secondary"),
                "use 3 members for PSS; with 1 a lost host loses the database",
            );
        }
        let rs_ok = !raw.replica_set.is_empty()
            && raw.replica_set.len() <= 64
            && raw
                .replica_set
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
        if !rs_ok {
            self.err(
                "roles.mongo.replica_set",
                format!("{:?} is not a valid replica set name", raw.replica_set),
                "use letters, digits, '_' and '-', e.g. rs0",
            );
        }
        let port = self.port("roles.mongo.port", raw.port);
        let data = self.range("roles.mongo.data_volume_gb", raw.data_volume_gb, 1, 65536);
        let members = members?;
        (rs_ok && (n % 2 == 1) && n <= 7).then_some(())?;
        Some(MongoTier {
            members,
            allow_colocation: raw.allow_colocation,
            resources: resources?,
            replica_set: raw.replica_set.clone(),
            port: port?,
            data_volume_gb: data? as u32,
        })
    }

    fn webapp(&mut self, raw: &RawWebapp, members: Option<Vec<Member>>) -> Option<WebappTier> {
        let resources = self.resources(Role::Webapp, &raw.resources);
        let port = self.port("roles.webapp.port", raw.port);
        let db_ok = !raw.database.is_empty()
            && raw.database.len() <= 63
            && !raw
                .database
                .chars()
                .any(|c| "/\\. \"$*<>:|?".contains(c) || c.is_control());
        if !db_ok {
            self.err(
                "roles.webapp.database",
                format!("{:?} is not a valid MongoDB database name", raw.database),
                "use letters, digits, '_' and '-', e.g. app",
            );
        }
        let p = "roles.webapp.pm2";
        let pm = &raw.pm2;
        let instances = self.range(&format!("{p}.instances"), pm.instances, 1, 64);
        if pm.exec_mode == ExecMode::Fork && pm.instances > 1 {
            self.err(
                &format!("{p}.instances"),
                format!(
                    "fork mode with {} instances would bind port {} twice",
                    pm.instances, raw.port
                ),
                "use instances: 1 in fork mode, or exec_mode: cluster",
            );
        }
        let mmr = self.range(
            &format!("{p}.max_memory_restart_mb"),
            pm.max_memory_restart_mb,
            64,
            1 << 20,
        );
        let heap = self.range(&format!("{p}.heap_mb"), pm.heap_mb, 32, 1 << 20);
        if let (Some(h), Some(m)) = (heap, mmr) {
            if h >= m {
                self.err(
                    &format!("{p}.heap_mb"),
                    format!("the heap cap {h} MiB is not below max_memory_restart_mb {m}"),
                    "PM2 would restart the app before the heap cap applies; lower heap_mb",
                );
            }
        }
        if let (Some(h), Some(r)) = (heap, resources) {
            if h >= u64::from(r.memory_mb) {
                self.err(
                    &format!("{p}.heap_mb"),
                    format!(
                        "the heap cap {h} MiB does not fit in the container's {} MiB",
                        r.memory_mb
                    ),
                    "raise roles.webapp.resources.memory_mb or lower heap_mb",
                );
            }
        }
        let kill = self.range(
            &format!("{p}.kill_timeout_ms"),
            pm.kill_timeout_ms,
            100,
            600_000,
        );
        let mut env_ok = true;
        for (k, val) in &raw.env {
            let kp = format!("roles.webapp.env.{k}");
            let name_ok = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !name_ok {
                self.err(
                    &kp,
                    format!("{k:?} is not a valid environment variable name"),
                    "use letters, digits and '_', not starting with a digit",
                );
                env_ok = false;
            } else if RESERVED_ENV.contains(&k.as_str()) {
                self.err(
                    &kp,
                    format!("{k} is set by haimg-init"),
                    "remove it; haimg-init derives it from the plan",
                );
                env_ok = false;
            } else if secrets::looks_secret(k) {
                self.err(
                    &kp,
                    "looks like a secret; secrets never live in haimg.yaml",
                    "deliver it at run time: see \"Secrets\" in README.md",
                );
                env_ok = false;
            }
            if val.chars().any(|c| c.is_control() && c != '\t') {
                self.err(
                    &kp,
                    "the value contains control characters",
                    "use a single-line value",
                );
                env_ok = false;
            } else if let Some((msg, hint)) = secrets::value_problem(&kp, val) {
                self.err(&kp, msg, hint);
                env_ok = false;
            }
        }
        Some(WebappTier {
            members: members?,
            allow_colocation: raw.allow_colocation,
            resources: resources?,
            port: port?,
            database: db_ok.then(|| raw.database.clone())?,
            pm2: Pm2 {
                exec_mode: pm.exec_mode,
                instances: instances? as u32,
                max_memory_restart_mb: mmr? as u32,
                heap_mb: heap? as u32,
                kill_timeout_ms: kill? as u32,
            },
            env: env_ok.then(|| {
                raw.env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })?,
        })
    }

    fn proxmox(&mut self, px: &RawProxmox) -> Option<Proxmox> {
        let mut ok = true;
        let mut endpoint = None;
        if let Some(ep) = &px.endpoint {
            match Endpoint::parse(ep) {
                Ok(e) => endpoint = Some(e.to_string()),
                Err(e) => {
                    // The message describes the problem; the value may hold a password.
                    self.err(
                        "proxmox.endpoint",
                        e.to_string(),
                        "write https://<node>:8006 (no user, path, query or fragment; haimg adds /api2/json)",
                    );
                    ok = false;
                }
            }
            if px.nodes.is_empty() {
                self.err(
                    "proxmox.nodes",
                    "no Proxmox nodes are listed",
                    "list the cluster's node names, e.g. [pve1, pve2, pve3]",
                );
                ok = false;
            }
        }
        let mut seen = HashMap::new();
        for (i, n) in px.nodes.iter().enumerate() {
            ok &= self.dns_label(&format!("proxmox.nodes[{i}]"), n, "Proxmox node name");
            if let Some(first) = seen.insert(n.clone(), i) {
                self.err(
                    &format!("proxmox.nodes[{i}]"),
                    format!("node {n} is listed twice (first at proxmox.nodes[{first}])"),
                    "list each node once",
                );
                ok = false;
            }
        }
        for (k, v) in [
            ("template_storage", &px.template_storage),
            ("rootfs_storage", &px.rootfs_storage),
        ] {
            if !is_pve_storage_id(v) {
                self.err(&format!("proxmox.{k}"), format!("{v:?} is not a Proxmox storage id"), "storage ids start with a letter and use lowercase letters, digits, '-', '_' and '.'");
                ok = false;
            }
        }
        let t = &px.tls;
        let chosen = [t.ca_file.is_some(), t.fingerprint.is_some(), t.insecure]
            .iter()
            .filter(|b| **b)
            .count();
        let tls = if chosen > 1 {
            self.err(
                "proxmox.tls",
                "more than one of ca_file, fingerprint and insecure is set",
                "choose one way to trust the Proxmox certificate",
            );
            None
        } else if let Some(ca) = &t.ca_file {
            Some(TlsMode::CaFile(ca.clone()))
        } else if let Some(fp) = &t.fingerprint {
            match parse_fingerprint(fp) {
                Some(bytes) => Some(TlsMode::Fingerprint(bytes)),
                None => {
                    self.err("proxmox.tls.fingerprint", format!("{fp:?} is not a SHA-256 fingerprint"), "copy it from `pvenode cert info` or the GUI: 32 hex bytes separated by ':'");
                    None
                }
            }
        } else if t.insecure {
            Some(TlsMode::Insecure)
        } else {
            Some(TlsMode::System)
        };
        Some(Proxmox {
            endpoint: ok.then_some(endpoint)?,
            nodes: px.nodes.clone(),
            template_storage: px.template_storage.clone(),
            rootfs_storage: px.rootfs_storage.clone(),
            tls: tls?,
            firewall: Firewall {
                enforce: px.firewall.enforce,
                datacenter: px.firewall.datacenter,
                allow_insecure_mongo: px.firewall.allow_insecure_mongo,
            },
        })
    }

    fn rollout(&mut self, r: &RawRollout, raw: &RawSpec) -> Option<Rollout> {
        let p = "rollout";
        let offset = self.range(
            &format!("{p}.green_vmid_offset"),
            r.green_vmid_offset,
            1,
            MAX_VMID,
        );
        if let Some(off) = offset {
            let vmids: Vec<u64> = [
                &raw.roles.lb.members,
                &raw.roles.mongo.members,
                &raw.roles.webapp.members,
            ]
            .iter()
            .flat_map(|ms| ms.iter().map(|m| m.vmid))
            .collect();
            let live: HashSet<u64> = vmids.iter().copied().collect();
            for v in &vmids {
                let green = v.saturating_add(off);
                if green > MAX_VMID {
                    self.err(
                        &format!("{p}.green_vmid_offset"),
                        format!("green VMID {green} (for {v}) is above {MAX_VMID}"),
                        format!("lower the offset: every VMID, green ones included, stays at or below {MAX_VMID}"),
                    );
                    break;
                }
                if live.contains(&green) {
                    self.err(
                        &format!("{p}.green_vmid_offset"),
                        format!("green VMID {green} (for {v}) is a live member's VMID"),
                        "pick an offset past the highest member VMID, e.g. 1000",
                    );
                    break;
                }
            }
        }
        let health = self.range(
            &format!("{p}.health_timeout_s"),
            r.health_timeout_s,
            1,
            3600,
        );
        let keep = self.range(&format!("{p}.keep_versions"), r.keep_versions, 1, 100);
        Some(Rollout {
            green_vmid_offset: offset? as u32,
            health_timeout_s: health? as u32,
            keep_versions: keep? as u32,
        })
    }
}

/// Environment the init sets for the app; the spec may not override it.
pub const RESERVED_ENV: [&str; 6] = [
    "PORT",
    "HOSTNAME",
    "MONGODB_URI",
    "NODE_ENV",
    "PM2_HOME",
    "NODE_OPTIONS",
];

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub(crate) fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Safe inside `haimg-<role>_<version>_amd64.tar.zst`: Proxmox keeps `[A-Za-z0-9_.-]`
/// and `_` separates the fields.
pub(crate) fn is_template_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// Proxmox `pve-tag`: `[a-z0-9_][a-z0-9_\-\+\.]*`, case-insensitive.
pub fn is_pve_tag(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    s.len() <= 128
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-+.".contains(c))
}

/// Proxmox `pve-storage-id`: `[a-z][a-z0-9\-\_\.]*[a-z0-9]`.
fn is_pve_storage_id(s: &str) -> bool {
    s.len() >= 2
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .last()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// A list for a hint: the first ten, and how many more.
fn some_of(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > 10 {
        s += &format!(" (and {} more)", items.len() - 10);
    }
    s
}

/// The widest and the narrowest network a cluster LAN may be.
const MIN_PREFIX: u8 = 8;
const MAX_PREFIX: u8 = 30;

/// The special-purpose range `ip` is in, if it cannot be a LAN host:
/// `(range, what)`.
pub(crate) fn special_address(ip: Ipv4Addr) -> Option<(&'static str, &'static str)> {
    let o = ip.octets();
    match o[0] {
        0 => Some(("0.0.0.0/8", "\"this network\"")),
        127 => Some(("127.0.0.0/8", "loopback")),
        169 if o[1] == 254 => Some(("169.254.0.0/16", "link-local")),
        224..=239 => Some(("224.0.0.0/4", "multicast")),
        255 if ip == Ipv4Addr::BROADCAST => Some(("255.255.255.255", "broadcast")),
        240..=255 => Some(("240.0.0.0/4", "reserved")),
        _ => None,
    }
}

/// An absolute path of plain components, safe in any config: `/` then
/// `[A-Za-z0-9_.-]` components, no `.` or `..` component, no empty one.
pub(crate) fn is_safe_path(s: &str) -> bool {
    s.len() <= 255
        && s.strip_prefix('/').is_some_and(|rest| {
            rest.split('/').all(|c| {
                !c.is_empty()
                    && c != "."
                    && c != ".."
                    && c.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch))
            })
        })
}

fn parse_fingerprint(s: &str) -> Option<Vec<u8>> {
    let bytes: Option<Vec<u8>> = s
        .split(':')
        .map(|h| {
            (h.len() == 2)
                .then(|| u8::from_str_radix(h, 16).ok())
                .flatten()
        })
        .collect();
    bytes.filter(|b| b.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns_label("nginx1"));
        assert!(!is_dns_label("Nginx1"));
        assert!(!is_dns_label("-a"));
        assert!(is_template_version("1.2.0"));
        assert!(!is_template_version("1.2_0"));
        assert!(!is_template_version("1.2+b1"));
        assert!(is_pve_tag("haimg"));
        assert!(is_pve_tag("1.0.0"));
        assert!(!is_pve_tag("a b"));
        assert!(is_pve_storage_id("local-lvm"));
        assert!(!is_pve_storage_id("Local"));
        assert_eq!(
            parse_fingerprint(&["AB"; 32].join(":")).map(|b| b.len()),
            Some(32)
        );
        assert_eq!(parse_fingerprint("AB:CD"), None);
    }
}
