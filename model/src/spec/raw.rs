//! The shape of `haimg.yaml`, and nothing more.
//!
//! These structs only know the file's layout: every struct denies unknown keys,
//! and values that need checking against the rest of the spec (addresses, names,
//! ranges) stay strings or plain numbers here. `validate()` in the parent module
//! turns a `RawSpec` into a [`crate::Cluster`], the only type the rest of haimg
//! accepts. The same structs serialize to the JSON plan baked into every image,
//! which the init validates again at boot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    pub schema_version: u32,
    pub cluster: RawClusterMeta,
    pub network: RawNetwork,
    pub roles: RawRoles,
    #[serde(default)]
    pub proxmox: RawProxmox,
    #[serde(default)]
    pub rollout: RawRollout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClusterMeta {
    pub name: String,
    /// Template version, part of `haimg-<role>_<version>_amd64.tar.zst`.
    pub version: String,
    /// Extra Proxmox tags put on every container.
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub cidr: String,
    pub gateway: String,
    pub vip: String,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub search_domain: Option<String>,
    /// Addresses of the deploy host(s), allowed to reach the health ports; default: the gateway.
    #[serde(default)]
    pub admin: Vec<String>,
}

fn default_bridge() -> String {
    "vmbr0".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoles {
    pub lb: RawLb,
    pub mongo: RawMongo,
    pub webapp: RawWebapp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMember {
    pub slot: String,
    pub vmid: u64,
    pub hostname: String,
    pub ip: String,
    /// Proxmox node the member runs on.
    pub node: String,
    /// keepalived priority (lb only); default by slot order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    #[serde(default = "default_cores")]
    pub cores: u64,
    #[serde(default = "default_memory")]
    pub memory_mb: u64,
    #[serde(default = "default_rootfs")]
    pub rootfs_gb: u64,
}

fn default_cores() -> u64 {
    1
}
fn default_memory() -> u64 {
    512
}
fn default_rootfs() -> u64 {
    4
}

impl Default for RawResources {
    fn default() -> Self {
        Self {
            cores: default_cores(),
            memory_mb: default_memory(),
            rootfs_gb: default_rootfs(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLb {
    pub members: Vec<RawMember>,
    /// Permit two members of this tier on one Proxmox node.
    #[serde(default)]
    pub allow_colocation: bool,
    #[serde(default)]
    pub resources: RawResources,
    pub nginx: RawNginx,
    pub keepalived: RawKeepalived,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamHash {
    /// nginx `ip_hash`: hashes the first three octets, so a whole /24 sticks to one backend.
    IpHash,
    /// nginx `hash $remote_addr consistent`: per-address stickiness.
    RemoteAddrConsistent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNginx {
    pub upstream_hash: UpstreamHash,
    pub max_fails: u64,
    pub fail_timeout_s: u64,
    pub listen_port: u64,
    /// Certificate and key paths inside the container; 443 is served when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawNginxTls>,
    pub rate_limit: RawRateLimit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNginxTls {
    pub certificate: String,
    pub certificate_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub zone: String,
    pub zone_size_mb: u64,
    pub rate_per_s: u64,
    pub burst: u64,
    pub status: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VrrpMode {
    Unicast,
    Multicast,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeepalived {
    pub virtual_router_id: u64,
    /// Seconds between adverts (VRRPv2). At most one of this and
    /// `advert_interval_ms`; neither is 1 s. Left out of the baked plan when
    /// absent, so a seed plan serialises as it always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advert_int_s: Option<u64>,
    /// Milliseconds between adverts, a multiple of 10 (VRRPv3 unless a whole
    /// number of seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advert_interval_ms: Option<u64>,
    pub mode: VrrpMode,
    /// Slot that holds the VIP when all are healthy (highest priority).
    pub master: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMongo {
    pub members: Vec<RawMember>,
    #[serde(default)]
    pub allow_colocation: bool,
    #[serde(default)]
    pub resources: RawResources,
    pub replica_set: String,
    pub port: u64,
    /// Size of the data volume (`mp0`, mounted at /var/lib/mongodb).
    pub data_volume_gb: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecMode {
    Fork,
    Cluster,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebapp {
    pub members: Vec<RawMember>,
    #[serde(default)]
    pub allow_colocation: bool,
    #[serde(default)]
    pub resources: RawResources,
    pub port: u64,
    pub database: String,
    pub pm2: RawPm2,
    /// Extra, non-secret environment for the app.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPm2 {
    pub exec_mode: ExecMode,
    pub instances: u64,
    pub max_memory_restart_mb: u64,
    pub heap_mb: u64,
    pub kill_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProxmox {
    /// `https://host:8006`; unset means the local LXC backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default = "default_template_storage")]
    pub template_storage: String,
    #[serde(default = "default_rootfs_storage")]
    pub rootfs_storage: String,
    #[serde(default)]
    pub tls: RawTls,
    /// The network policy on Proxmox's firewall.
    #[serde(default)]
    pub firewall: RawFirewall,
}

/// `proxmox.firewall`: how haimg enforces the network policy on Proxmox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFirewall {
    /// Write the policy into Proxmox's firewall (`firewall=1` on net0, per-container
    /// options, tier IP sets and security groups).
    #[serde(default = "default_true")]
    pub enforce: bool,
    /// What to do about the datacenter-wide switch (`cluster.fw` `enable`), without
    /// which Proxmox applies no guest rule at all.
    #[serde(default)]
    pub datacenter: DatacenterFirewall,
    /// Deploy mongo members even when the datacenter firewall is off, so that
    /// nothing but MongoDB's own authentication keeps the network from :27017.
    /// Insecure; off by default.
    #[serde(default)]
    pub allow_insecure_mongo: bool,
}

impl Default for RawFirewall {
    fn default() -> Self {
        RawFirewall {
            enforce: true,
            datacenter: DatacenterFirewall::default(),
            allow_insecure_mongo: false,
        }
    }
}

fn default_true() -> bool {
    true
}

/// The datacenter firewall switch is shared by every guest and host of the
/// Proxmox cluster, so haimg only turns it on when told to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DatacenterFirewall {
    /// Read it and warn when it is off (the rules are then not enforced).
    #[default]
    Check,
    /// Turn it on when it is off. This also applies the hosts' input policy
    /// (DROP by default, except what the management IP set allows).
    Enable,
}

fn default_template_storage() -> String {
    "local".into()
}
fn default_rootfs_storage() -> String {
    "local-lvm".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// SHA-256 of the node certificate, `AB:CD:…` as Proxmox shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub insecure: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// Green containers take `vmid + green_vmid_offset`.
    #[serde(default = "default_green_offset")]
    pub green_vmid_offset: u64,
    #[serde(default = "default_health_timeout")]
    pub health_timeout_s: u64,
    /// Old versions of each template kept by `haimg gc`.
    #[serde(default = "default_keep")]
    pub keep_versions: u64,
}

fn default_green_offset() -> u64 {
    1000
}
fn default_health_timeout() -> u64 {
    120
}
fn default_keep() -> u64 {
    2
}

impl Default for RawRollout {
    fn default() -> Self {
        Self {
            green_vmid_offset: default_green_offset(),
            health_timeout_s: default_health_timeout(),
            keep_versions: default_keep(),
        }
    }
}
