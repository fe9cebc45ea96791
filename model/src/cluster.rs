//! The validated cluster: the only spec type the rest of haimg accepts.
//!
//! A [`Cluster`] can only come out of [`crate::spec::validate`]; every field has
//! been checked against the whole spec (addresses inside the network, unique
//! VMIDs/IPs/hostnames, an odd replica set, ...). Readers get plain public
//! fields; `#[non_exhaustive]` keeps other crates from building one.

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

pub use crate::spec::raw::{DatacenterFirewall, ExecMode, UpstreamHash, VrrpMode};

/// The three kinds of image haimg builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Lb,
    Mongo,
    Webapp,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Lb, Role::Mongo, Role::Webapp];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Lb => "lb",
            Role::Mongo => "mongo",
            Role::Webapp => "webapp",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IPv4 network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn parse(s: &str) -> Option<Ipv4Net> {
        let (a, p) = s.split_once('/')?;
        let addr: Ipv4Addr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        (prefix <= 32).then_some(Ipv4Net { addr, prefix })
    }

    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// A usable host address: inside, and neither the network nor the broadcast address.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && (self.prefix >= 31 || (ip != self.network() && ip != self.broadcast()))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Network {
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub vip: Ipv4Addr,
    pub bridge: String,
    pub dns: Vec<Ipv4Addr>,
    pub search_domain: Option<String>,
    /// Deploy host addresses (the health gates come from here).
    pub admin: Vec<Ipv4Addr>,
}

/// One container of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub role: Role,
    /// Position inside the tier, from 0, in spec order.
    pub index: usize,
    pub slot: String,
    pub vmid: u32,
    pub hostname: String,
    pub ip: Ipv4Addr,
    pub node: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resources {
    pub cores: u32,
    pub memory_mb: u32,
    pub rootfs_gb: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimit {
    pub zone: String,
    pub zone_size_mb: u32,
    pub rate_per_s: u32,
    pub burst: u32,
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NginxTls {
    pub certificate: String,
    pub certificate_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Nginx {
    pub upstream_hash: UpstreamHash,
    pub max_fails: u32,
    pub fail_timeout_s: u32,
    pub listen_port: u16,
    pub tls: Option<NginxTls>,
    pub rate_limit: RateLimit,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Keepalived {
    pub virtual_router_id: u8,
    /// Time between adverts: `advert_int_s` × 1000 or `advert_interval_ms`
    /// (1000 when the spec gives neither). A multiple of 10.
    pub advert_interval_ms: u32,
    pub mode: VrrpMode,
    /// Slot of the preferred MASTER.
    pub master: String,
    /// Priority per lb member, in member order; unique, the master's highest.
    pub priorities: Vec<u8>,
}

/// What keepalived 2.2.7 (Debian 12) does with these, read in its source
/// (github.com/acassen/keepalived, tag v2.2.7):
/// * `advert_int`: `vrrp_parser.c` `vrrp_adv_handler` reads a decimal number
///   of seconds, `read_decimal_unsigned_strvec(strvec, 1, &adver_int,
///   TIMER_HZ / 100, 255 * TIMER_HZ, TIMER_HZ_DIGITS, true)`: 0.01 to 255.
/// * `vrrp_version 3` in `global_defs`: `global_parser.c`
///   `vrrp_version_handler` (2 or 3), the default of every instance.
/// * `vrrp.c` `vrrp_complete_instance`: v2 rounds an interval that is not a
///   whole number of seconds ("VRRPv2 advertisement interval … must be an
///   integer. rounding"), v3 one that is not in units of 10 ms and caps it
///   below 4096 cs; and an `authentication` block under v3 is dropped ("VRRP
///   version 3 does not support authentication. Ignoring.").
/// * `vrrp.c` `vrrp_check_packet` drops an advert of the other version
///   ("wrong version. Received %d and expect %d"): a v2 and a v3 lb never
///   hear each other, so all lbs must speak the same profile.
impl Keepalived {
    /// The VRRP version the lbs speak: 2 (RFC 3768, whole seconds, `auth_type
    /// PASS`; the seed's profile) when the interval is a whole number of
    /// seconds, else 3 (RFC 5798, centiseconds, no authentication).
    pub fn vrrp_version(&self) -> u8 {
        if self.advert_interval_ms % 1000 == 0 {
            2
        } else {
            3
        }
    }

    /// `advert_int` as keepalived.conf carries it: decimal seconds.
    pub fn advert_int(&self) -> String {
        decimal_seconds(self.advert_interval_ms)
    }
}

/// Milliseconds as decimal seconds, from the integer (no float formatting):
/// 1000 → `1`, 1500 → `1.5`, 100 → `0.1`, 50 → `0.05`, 10 → `0.01`.
pub fn decimal_seconds(ms: u32) -> String {
    let (s, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return s.to_string();
    }
    let mut t = format!("{s}.{frac:03}");
    while t.ends_with('0') {
        t.pop();
    }
    t
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LbTier {
    pub members: Vec<Member>,
    pub allow_colocation: bool,
    pub resources: Resources,
    pub nginx: Nginx,
    pub keepalived: Keepalived,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MongoTier {
    pub members: Vec<Member>,
    pub allow_colocation: bool,
    pub resources: Resources,
    pub replica_set: String,
    pub port: u16,
    pub data_volume_gb: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pm2 {
    pub exec_mode: ExecMode,
    pub instances: u32,
    pub max_memory_restart_mb: u32,
    pub heap_mb: u32,
    pub kill_timeout_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebappTier {
    pub members: Vec<Member>,
    pub allow_colocation: bool,
    pub resources: Resources,
    pub port: u16,
    pub database: String,
    pub pm2: Pm2,
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum TlsMode {
    /// The system trust store.
    System,
    CaFile(String),
    /// SHA-256 of the leaf certificate, 32 bytes.
    Fingerprint(Vec<u8>),
    Insecure,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proxmox {
    /// `None`: deploy to the local LXC backend.
    pub endpoint: Option<String>,
    pub nodes: Vec<String>,
    pub template_storage: String,
    pub rootfs_storage: String,
    pub tls: TlsMode,
    pub firewall: Firewall,
}

/// `proxmox.firewall`: enforcing the network policy with Proxmox's firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Firewall {
    /// `firewall=1` on net0, per-container options, tier IP sets and security groups.
    pub enforce: bool,
    pub datacenter: DatacenterFirewall,
    /// Deploy mongo members while the datacenter firewall is off (insecure).
    pub allow_insecure_mongo: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollout {
    pub green_vmid_offset: u32,
    pub health_timeout_s: u32,
    pub keep_versions: u32,
}

/// A validated cluster spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Cluster {
    pub name: String,
    pub version: String,
    pub tags: Vec<String>,
    pub network: Network,
    pub lb: LbTier,
    pub mongo: MongoTier,
    pub webapp: WebappTier,
    pub proxmox: Proxmox,
    pub rollout: Rollout,
}

impl Cluster {
    pub fn members_of(&self, role: Role) -> &[Member] {
        match role {
            Role::Lb => &self.lb.members,
            Role::Mongo => &self.mongo.members,
            Role::Webapp => &self.webapp.members,
        }
    }

    /// Every member, lb first, then mongo, then webapp, each in spec order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        Role::ALL
            .into_iter()
            .flat_map(|r| self.members_of(r).iter())
    }

    /// The cluster as far as it is deployed: the members of `roles` left out
    /// (a role whose template could not be built here).
    pub fn without_roles(&self, roles: &[Role]) -> Cluster {
        let mut c = self.clone();
        for role in roles {
            match role {
                Role::Lb => c.lb.members.clear(),
                Role::Mongo => c.mongo.members.clear(),
                Role::Webapp => c.webapp.members.clear(),
            }
        }
        c
    }

    pub fn member_by_slot(&self, slot: &str) -> Option<&Member> {
        self.members().find(|m| m.slot == slot)
    }

    pub fn resources_of(&self, role: Role) -> Resources {
        match role {
            Role::Lb => self.lb.resources,
            Role::Mongo => self.mongo.resources,
            Role::Webapp => self.webapp.resources,
        }
    }

    /// The built template of `role` at this cluster's version.
    pub fn template_name(&self, role: Role) -> crate::TemplateName {
        crate::TemplateName::new(role, &self.version)
    }

    /// The keepalived priority of an lb member.
    pub fn lb_priority(&self, member: &Member) -> Option<u8> {
        member
            .role
            .holds_vip()
            .then(|| self.lb.keepalived.priorities.get(member.index).copied())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_seconds_from_integer_milliseconds() {
        let cases = [
            (1000, "1"),
            (2000, "2"),
            (255_000, "255"),
            (1500, "1.5"),
            (100, "0.1"),
            (50, "0.05"),
            (10, "0.01"),
            (110, "0.11"),
            (1010, "1.01"),
            (40_950, "40.95"),
            (1, "0.001"),
        ];
        for (ms, text) in cases {
            assert_eq!(decimal_seconds(ms), text, "{ms} ms");
        }
    }

    #[test]
    fn whole_seconds_speak_vrrp_v2_and_the_rest_v3() {
        let k = |ms| Keepalived {
            virtual_router_id: 51,
            advert_interval_ms: ms,
            mode: VrrpMode::Unicast,
            master: "nginx1".into(),
            priorities: vec![150, 100],
        };
        assert_eq!(k(1000).vrrp_version(), 2);
        assert_eq!(k(2000).vrrp_version(), 2);
        assert_eq!(k(100).vrrp_version(), 3);
        assert_eq!(k(1500).vrrp_version(), 3);
        assert_eq!(k(1000).advert_int(), "1");
        assert_eq!(k(100).advert_int(), "0.1");
    }
}
