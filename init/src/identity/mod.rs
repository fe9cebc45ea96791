//! Who am I: the member of the baked plan this container is.
//!
//! Evidence is gathered apart from the decision. [`Evidence::read`] takes a
//! root directory (the container's `/`, or a fixture directory in tests) and
//! the run-time facts that are not files ([`Runtime`]: PID 1's `HAIMG_*`
//! environment, the kernel hostname, addresses already on eth0). [`resolve`]
//! is pure: it matches every clue against the plan, in this order of
//! evidence — `HAIMG_*` variables, the kernel hostname (or
//! `/etc/hostname`), `/etc/network/interfaces`, eth0 — and succeeds only when
//! every clue that names a member names the same one, of this image's role.
//! Otherwise the error is one line that says what was seen and what was
//! expected. Network settings always come from the plan; an interfaces file
//! that disagrees (prefix, gateway) yields a warning, not a different network.

pub mod interfaces;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use haimg_model::{Cluster, Ipv4Net, Member, Role};
use serde::Serialize;

pub use interfaces::{Interfaces, InterfacesError, StaticV4, Stray};

/// Identity variables read from PID 1's environment (Proxmox ≥ 9.1 `env`).
pub const ENV_SLOT: &str = "HAIMG_SLOT";
pub const ENV_IP: &str = "HAIMG_IP";
pub const ENV_ROLE: &str = "HAIMG_ROLE";

/// Largest identity file read; the real ones are a few bytes to a few hundred.
const MAX_FILE: u64 = 64 * 1024;

/// Where Proxmox writes the network configuration of `ostype=debian` containers.
pub const INTERFACES_FILE: &str = "/etc/network/interfaces";

/// Stray lines of the interfaces file reported one by one; the rest are counted.
const MAX_STRAY_WARNINGS: usize = 3;

/// What could be read of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRead {
    Missing,
    Text(String),
    /// Present but unusable: unreadable, too large or not UTF-8.
    Unreadable(String),
}

impl FileRead {
    fn read(path: &Path) -> FileRead {
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return FileRead::Missing,
            Err(e) => return FileRead::Unreadable(e.to_string()),
        };
        let mut buf = Vec::new();
        if let Err(e) = file.take(MAX_FILE + 1).read_to_end(&mut buf) {
            return FileRead::Unreadable(e.to_string());
        }
        if buf.len() as u64 > MAX_FILE {
            return FileRead::Unreadable(format!("larger than {MAX_FILE} bytes"));
        }
        match String::from_utf8(buf) {
            Ok(s) => FileRead::Text(s),
            Err(_) => FileRead::Unreadable("not UTF-8 text".into()),
        }
    }
}

/// Facts that are not files in the rootfs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runtime {
    /// `HAIMG_*` variables of PID 1, in any order.
    pub env: Vec<(String, String)>,
    /// The kernel hostname (`lxc.uts.name`), `None` if it could not be read.
    pub uts: Option<String>,
    /// IPv4 addresses already on eth0 (`host-managed=1`).
    pub eth0: Vec<Ipv4Net>,
}

/// Everything the init looked at, read once at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Where the files were read from; messages always name the in-container path.
    pub root: PathBuf,
    pub role_file: FileRead,
    pub etc_hostname: FileRead,
    pub interfaces: FileRead,
    pub env: BTreeMap<String, String>,
    pub uts: Option<String>,
    pub eth0: Vec<Ipv4Net>,
}

impl Evidence {
    /// Read the identity files under `root` (`/` at boot).
    pub fn read(root: &Path, runtime: Runtime) -> Evidence {
        Evidence {
            root: root.to_path_buf(),
            role_file: FileRead::read(&root.join("etc/haimg/role")),
            etc_hostname: FileRead::read(&root.join("etc/hostname")),
            interfaces: FileRead::read(&root.join("etc/network/interfaces")),
            env: runtime
                .env
                .into_iter()
                .filter(|(k, _)| k.starts_with("HAIMG_"))
                .collect(),
            uts: runtime.uts,
            eth0: runtime.eth0,
        }
    }
}

/// Where a clue came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Source {
    #[serde(rename = "env HAIMG_SLOT")]
    EnvSlot,
    #[serde(rename = "env HAIMG_IP")]
    EnvIp,
    #[serde(rename = "kernel hostname")]
    Uts,
    #[serde(rename = "/etc/hostname")]
    EtcHostname,
    #[serde(rename = "/etc/network/interfaces")]
    Interfaces,
    #[serde(rename = "eth0")]
    Eth0,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::EnvSlot => "HAIMG_SLOT",
            Source::EnvIp => "HAIMG_IP",
            Source::Uts => "kernel hostname",
            Source::EtcHostname => "/etc/hostname",
            Source::Interfaces => "/etc/network/interfaces",
            Source::Eth0 => "eth0",
        })
    }
}

/// One piece of evidence and the member it names, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clue {
    pub source: Source,
    pub value: String,
    /// `(role, slot)` of the member it names in the whole plan.
    #[serde(skip)]
    pub names: Option<(Role, String)>,
}

impl fmt::Display for Clue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.source, self.value)
    }
}

/// The member this container is, with the network it must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub role: Role,
    pub member: Member,
    /// The member's address with the plan's prefix length.
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The clues that named the member.
    pub evidence: Vec<Clue>,
    /// Disagreements that did not prevent a match.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: missing; the image must name its role (lb, mongo or webapp)")]
    RoleMissing { path: PathBuf },
    #[error("{path}: {reason}")]
    RoleUnreadable { path: PathBuf, reason: String },
    #[error("{path}: unknown role {value:?}; expected lb, mongo or webapp")]
    UnknownRole { path: PathBuf, value: String },
    #[error("HAIMG_ROLE={env} but this image is built for {baked}")]
    RoleMismatch { baked: Role, env: String },
    #[error("no clue to identify this {role} member (no HAIMG_SLOT/HAIMG_IP, no hostname, no address in /etc/network/interfaces or on eth0){ignored}; expected one of: {expected}")]
    NoEvidence {
        role: Role,
        ignored: String,
        expected: Expected,
    },
    #[error("{clue} names no {role} member; expected one of: {expected}")]
    NoMatch {
        clue: Clue,
        role: Role,
        expected: Expected,
    },
    #[error("{clue} is {other_role} member {slot}, but this image is built for {role}; expected one of: {expected}")]
    OtherRole {
        clue: Clue,
        other_role: Role,
        slot: String,
        role: Role,
        expected: Expected,
    },
    #[error("{a} names {a_slot} but {b} names {b_slot}; expected one of: {expected}")]
    Conflict {
        a: Box<Clue>,
        a_slot: String,
        b: Box<Clue>,
        b_slot: String,
        expected: Expected,
    },
}

/// The members a role's image may be, printed as `slot (hostname, ip)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected(pub Vec<(String, String, Ipv4Addr)>);

impl Expected {
    fn of(cluster: &Cluster, role: Role) -> Expected {
        Expected(
            cluster
                .members_of(role)
                .iter()
                .map(|m| (m.slot.clone(), m.hostname.clone(), m.ip))
                .collect(),
        )
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (slot, host, ip)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{slot} ({host}, {ip})")?;
        }
        Ok(())
    }
}

/// The role this image was built for, from `/etc/haimg/role`.
pub fn role(ev: &Evidence) -> Result<Role, IdentityError> {
    let path = PathBuf::from(haimg_model::image::ROLE_FILE);
    let text = match &ev.role_file {
        FileRead::Missing => return Err(IdentityError::RoleMissing { path }),
        FileRead::Unreadable(reason) => {
            return Err(IdentityError::RoleUnreadable {
                path,
                reason: reason.clone(),
            })
        }
        FileRead::Text(t) => t.trim(),
    };
    let role = Role::parse(text).ok_or_else(|| IdentityError::UnknownRole {
        path,
        value: text.chars().take(40).collect(),
    })?;
    if let Some(env) = ev.env.get(ENV_ROLE) {
        if env.trim() != role.as_str() {
            return Err(IdentityError::RoleMismatch {
                baked: role,
                env: env.clone(),
            });
        }
    }
    Ok(role)
}

/// Decide which member of `cluster` this container is.
pub fn resolve(cluster: &Cluster, ev: &Evidence) -> Result<Identity, IdentityError> {
    let role = role(ev)?;
    let expected = || Expected::of(cluster, role);
    let mut warnings = Vec::new();
    let mut ignored = Vec::new();

    let name_clue = name_clue(cluster, ev, &mut ignored);
    let (addr_clue, static_v4) = addr_clue(cluster, ev, &mut ignored, &mut warnings);
    let clues: Vec<Clue> = name_clue.into_iter().chain(addr_clue).collect();
    if clues.is_empty() {
        return Err(IdentityError::NoEvidence {
            role,
            ignored: if ignored.is_empty() {
                String::new()
            } else {
                format!(" ({})", ignored.join("; "))
            },
            expected: expected(),
        });
    }
    for clue in &clues {
        match &clue.names {
            None => {
                return Err(IdentityError::NoMatch {
                    clue: clue.clone(),
                    role,
                    expected: expected(),
                })
            }
            Some((r, slot)) if *r != role => {
                return Err(IdentityError::OtherRole {
                    clue: clue.clone(),
                    other_role: *r,
                    slot: slot.clone(),
                    role,
                    expected: expected(),
                })
            }
            Some(_) => {}
        }
    }
    // Invariant: every clue names a member of `role` (checked above), and there is at least one.
    let slot_of = |c: &Clue| c.names.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
    let first = &clues[0];
    if let Some(other) = clues.iter().find(|c| slot_of(c) != slot_of(first)) {
        return Err(IdentityError::Conflict {
            a: Box::new(first.clone()),
            a_slot: slot_of(first),
            b: Box::new(other.clone()),
            b_slot: slot_of(other),
            expected: expected(),
        });
    }
    let slot = slot_of(first);
    let Some(member) = cluster.members_of(role).iter().find(|m| m.slot == slot) else {
        // Unreachable by the invariant above; reported rather than trusted.
        return Err(IdentityError::NoMatch {
            clue: first.clone(),
            role,
            expected: expected(),
        });
    };
    let net = &cluster.network;
    if let Some(s) = &static_v4 {
        if s.address.prefix != net.cidr.prefix {
            warnings.push(format!(
                "/etc/network/interfaces has prefix /{} but the plan's network is {}; using the plan",
                s.address.prefix, net.cidr
            ));
        }
        if let Some(g) = s.gateway.filter(|g| *g != net.gateway) {
            warnings.push(format!(
                "/etc/network/interfaces has gateway {g} but the plan's is {}; using the plan",
                net.gateway
            ));
        }
    }
    Ok(Identity {
        role,
        member: member.clone(),
        address: Ipv4Net {
            addr: member.ip,
            prefix: net.cidr.prefix,
        },
        gateway: net.gateway,
        evidence: clues,
        warnings,
    })
}

/// HAIMG_SLOT, else the kernel hostname, else /etc/hostname.
fn name_clue(cluster: &Cluster, ev: &Evidence, ignored: &mut Vec<String>) -> Option<Clue> {
    if let Some(slot) = ev.env.get(ENV_SLOT).map(|s| s.trim()) {
        if !slot.is_empty() {
            return Some(Clue {
                source: Source::EnvSlot,
                value: slot.to_string(),
                names: cluster
                    .member_by_slot(slot)
                    .map(|m| (m.role, m.slot.clone())),
            });
        }
    }
    let uts = ev
        .uts
        .as_deref()
        .map(str::trim)
        .filter(|h| !is_unset_hostname(h));
    let (source, host) = match uts {
        Some(h) => (Source::Uts, h.to_string()),
        None => match &ev.etc_hostname {
            FileRead::Text(t) => {
                let h = t.lines().next().unwrap_or("").trim();
                if is_unset_hostname(h) {
                    return None;
                }
                (Source::EtcHostname, h.to_string())
            }
            FileRead::Unreadable(r) => {
                ignored.push(format!("/etc/hostname: {r}"));
                return None;
            }
            FileRead::Missing => return None,
        },
    };
    Some(Clue {
        source,
        names: member_by_hostname(cluster, &host).map(|m| (m.role, m.slot.clone())),
        value: host,
    })
}

fn is_unset_hostname(h: &str) -> bool {
    h.is_empty() || h == "localhost" || h == "(none)"
}

/// The full name, its first label, or Proxmox's default `CT<vmid>`.
fn member_by_hostname<'a>(cluster: &'a Cluster, host: &str) -> Option<&'a Member> {
    let host = host.to_ascii_lowercase();
    let short = host.split('.').next().unwrap_or("");
    cluster
        .members()
        .find(|m| m.hostname == host)
        .or_else(|| {
            cluster
                .members()
                .find(|m| m.hostname.split('.').next() == Some(short))
        })
        .or_else(|| {
            let vmid: u32 = host.strip_prefix("ct")?.parse().ok()?;
            cluster.members().find(|m| m.vmid == vmid)
        })
}

/// HAIMG_IP, else the eth0 stanza of /etc/network/interfaces, else eth0's address.
/// Only eth0's address in that file matters: stray lines and a bad gateway
/// are warnings, and an eth0 address that cannot be read is set aside (named
/// in the error if nothing else identifies the container).
fn addr_clue(
    cluster: &Cluster,
    ev: &Evidence,
    ignored: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> (Option<Clue>, Option<StaticV4>) {
    let by_ip = |ip: Ipv4Addr| {
        cluster
            .members()
            .find(|m| m.ip == ip)
            .map(|m| (m.role, m.slot.clone()))
    };
    let mut static_v4 = None;
    let path = INTERFACES_FILE;
    match &ev.interfaces {
        FileRead::Text(t) => match interfaces::parse(t) {
            Ok(i) => {
                // A hand-edited file may have many; the first few say enough.
                for stray in i.stray.iter().take(MAX_STRAY_WARNINGS) {
                    warnings.push(format!("{path}: {stray}"));
                }
                if i.stray.len() > MAX_STRAY_WARNINGS {
                    warnings.push(format!(
                        "{path}: {} more stray lines ignored",
                        i.stray.len() - MAX_STRAY_WARNINGS
                    ));
                }
                match i.static_v4("eth0") {
                    Ok(s) => {
                        if let Some(e) = s.as_ref().and_then(|s| s.bad_gateway.as_ref()) {
                            warnings.push(format!("{path}: {e}; using the plan's gateway"));
                        }
                        static_v4 = s;
                    }
                    Err(e) => {
                        warnings.push(format!("{path}: {e}; eth0's address there is not used"));
                        ignored.push(format!("{path}: {e}"));
                    }
                }
            }
            Err(e) => ignored.push(format!("{path}: {e}")),
        },
        FileRead::Unreadable(r) => ignored.push(format!("{path}: {r}")),
        FileRead::Missing => {}
    }
    if let Some(v) = ev.env.get(ENV_IP).map(|s| s.trim()) {
        let ip = v.split('/').next().unwrap_or("").parse::<Ipv4Addr>().ok();
        return (
            Some(Clue {
                source: Source::EnvIp,
                value: v.to_string(),
                names: ip.and_then(by_ip),
            }),
            static_v4,
        );
    }
    if let Some(s) = &static_v4 {
        let clue = Clue {
            source: Source::Interfaces,
            value: s.address.addr.to_string(),
            names: by_ip(s.address.addr),
        };
        return (Some(clue), static_v4);
    }
    // eth0 may carry several addresses (the VIP on an lb MASTER after a restart of the
    // init is not possible, but be tolerant): the first one that is a member wins.
    let on_eth0 = ev
        .eth0
        .iter()
        .find(|n| by_ip(n.addr).is_some())
        .or(ev.eth0.first());
    (
        on_eth0.map(|n| Clue {
            source: Source::Eth0,
            value: n.addr.to_string(),
            names: by_ip(n.addr),
        }),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cluster() -> Cluster {
        haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .expect("default spec is valid")
            .cluster
    }

    fn file(s: Option<String>) -> FileRead {
        s.map_or(FileRead::Missing, FileRead::Text)
    }

    proptest! {
        /// No combination of identity files, hostname, env and eth0 makes resolve panic,
        /// and a success always names a member of the baked role.
        #[test]
        fn resolve_never_panics(
            role in proptest::option::of(prop_oneof![Just("lb\n".to_string()), Just("mongo".to_string()), "\\PC{0,12}"]),
            host in proptest::option::of(prop_oneof![Just("nginx1".to_string()), Just("CT101".to_string()), "[a-zA-Z0-9.-]{0,20}"]),
            etc_host in proptest::option::of("\\PC{0,20}"),
            ifaces in proptest::option::of(prop_oneof![
                (100u8..110).prop_map(|o| format!("auto eth0\niface eth0 inet static\n\taddress 192.168.30.{o}/24\n")),
                "\\PC{0,80}",
            ]),
            env in proptest::collection::vec(
                (prop_oneof![Just("HAIMG_SLOT"), Just("HAIMG_IP"), Just("HAIMG_ROLE"), Just("OTHER")], "\\PC{0,20}"), 0..4),
            eth0 in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..3),
        ) {
            let c = cluster();
            let ev = Evidence {
                root: PathBuf::from("/"),
                role_file: file(role),
                etc_hostname: file(etc_host),
                interfaces: file(ifaces),
                env: env.into_iter().filter(|(k, _)| k.starts_with("HAIMG_")).map(|(k, v)| (k.to_string(), v)).collect(),
                uts: host,
                eth0: eth0.into_iter().map(|(a, p)| Ipv4Net { addr: Ipv4Addr::from(a), prefix: p }).collect(),
            };
            if let Ok(id) = resolve(&c, &ev) {
                prop_assert!(c.members_of(id.role).contains(&id.member));
            }
        }
    }
}
