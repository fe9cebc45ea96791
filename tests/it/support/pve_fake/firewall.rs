//! The fake's firewall: the `/cluster/firewall` and `/nodes/{node}/lxc/{vmid}/firewall`
//! subtrees of pve-firewall.
//!
//! Every call is validated by `schema.rs` against the official schema of these
//! methods (`tests/fixtures/pve/pve-api-firewall-ha.json`, PVE 9.1): unknown
//! parameter → 400, types, enums, patterns, min/max lengths and pve-firewall's
//! formats ([`check_format`]). What the JSON schema cannot say is checked in the
//! handlers below, each citing where Proxmox does it, from `proxmox/pve-firewall`
//! at 6f1311f (6.0.4). Messages are Proxmox's own texts. The HA methods of the
//! same file are validated but not modelled (501).
//!
//! Modelled behaviour, by source file:
//! * `API2/Firewall/IPSet.pm`: names unique (`IPSet '…' already exists`, a 400);
//!   an entry is normalized (`clean_cidr`, then `parse_ip_or_cidr` drops `/32`),
//!   refused when already there or with a zero prefix, and put first (`unshift`);
//!   removing an absent entry is not an error; reading a missing set is a 500.
//! * `API2/Firewall/Groups.pm`: group names unique, at most 18 characters.
//! * `API2/Firewall/Rules.pm` + `Firewall.pm verify_rule`: a new rule goes to
//!   position 0 and is disabled without `enable`; types per place (a group holds
//!   in/out/forward, a container in/out/group); `iface` only `net\d+` on a
//!   container and never in a group; `dport`/`sport` need a protocol with ports;
//!   `+ipset` references must exist; deleting needs a valid position; a given
//!   digest must match the list (`assert_if_modified`, a 500).
//! * `Firewall.pm generic_fw_config_parser`: reading back lowercases IP set and
//!   group names; rules come back with `enable` as a number and their position.
//! * `API2/Firewall/VM.pm` / `Cluster.pm`: options are a flat object with a
//!   digest; `PUT` sets only the keys given; a VM `enable` is stored as 0/1, a
//!   datacenter `enable` > 1 becomes a timestamp.
//! * `pve-container:src/PVE/API2/LXC.pm`: destroying a container removes its
//!   firewall config (`remove_vmfw_conf`); the firewall calls do not check that
//!   the container exists, so [`FwState::orphans`] lets tests catch a config
//!   written for a VMID that has no container.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::schema::Schema;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub cidr: String,
    pub comment: Option<String>,
    pub nomatch: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ipset {
    pub comment: Option<String>,
    pub entries: Vec<Entry>,
}

/// A rule as stored: the API's field names, values as strings.
pub type RuleMap = BTreeMap<String, String>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub comment: Option<String>,
    pub rules: Vec<RuleMap>,
}

/// One guest's `<vmid>.fw`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CtFw {
    pub options: BTreeMap<String, String>,
    pub ipsets: BTreeMap<String, Ipset>,
    pub rules: Vec<RuleMap>,
}

/// `cluster.fw` and every guest's `.fw`.
#[derive(Debug, Clone, Default)]
pub struct FwState {
    pub options: BTreeMap<String, String>,
    pub ipsets: BTreeMap<String, Ipset>,
    pub groups: BTreeMap<String, Group>,
    pub guests: BTreeMap<u32, CtFw>,
    /// Test knob: answer GETs of this route (e.g. `/cluster/firewall/ipset`)
    /// with this `data` instead, to see how haimg takes a malformed answer.
    pub garble: Option<(String, Value)>,
}

impl FwState {
    /// VMIDs with a firewall config but no container.
    pub fn orphans(&self, containers: &[u32]) -> Vec<u32> {
        self.guests
            .keys()
            .filter(|v| !containers.contains(v))
            .copied()
            .collect()
    }
}

/// `Firewall.pm $rule_properties` minus `pos` and `digest`: what
/// `copy_rule_data` copies into a new rule. `tests` checks it against the schema.
pub const RULE_KEYS: [&str; 13] = [
    "type",
    "action",
    "macro",
    "iface",
    "source",
    "dest",
    "proto",
    "enable",
    "log",
    "sport",
    "dport",
    "comment",
    "icmp-type",
];

/// `Firewall.pm $cluster_option_properties` (`PUT /cluster/firewall/options`).
pub const CLUSTER_OPTION_KEYS: [&str; 6] = [
    "ebtables",
    "enable",
    "log_ratelimit",
    "policy_forward",
    "policy_in",
    "policy_out",
];

/// `Firewall.pm $vm_option_properties` (`PUT .../lxc/{vmid}/firewall/options`).
pub const VM_OPTION_KEYS: [&str; 10] = [
    "dhcp",
    "enable",
    "ipfilter",
    "log_level_in",
    "log_level_out",
    "macfilter",
    "ndp",
    "policy_in",
    "policy_out",
    "radv",
];

/// The key lists above must be the official schema's, or the fake would
/// store what Proxmox refuses (or drop what it keeps).
pub fn check_keys(schema: &Schema) {
    let names = |m: &str, p: &str| -> Vec<String> {
        let mut v = schema.param_names(m, p);
        v.retain(|k| {
            !matches!(
                k.as_str(),
                "node" | "vmid" | "digest" | "delete" | "pos" | "group"
            )
        });
        v.sort();
        v
    };
    let sorted = |k: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(
        names("POST", "/nodes/{node}/lxc/{vmid}/firewall/rules"),
        sorted(&RULE_KEYS)
    );
    assert_eq!(
        names("POST", "/cluster/firewall/groups/{group}"),
        sorted(&RULE_KEYS)
    );
    assert_eq!(
        names("PUT", "/cluster/firewall/options"),
        sorted(&CLUSTER_OPTION_KEYS)
    );
    assert_eq!(
        names("PUT", "/nodes/{node}/lxc/{vmid}/firewall/options"),
        sorted(&VM_OPTION_KEYS)
    );
}

/// pve-firewall's registered formats (`Firewall.pm`, `register_format`), as
/// `JSONSchema.pm check_format` runs them: the verifier's `die` text is the
/// parameter's error. `None` for formats that are not pve-firewall's.
pub fn check_format(f: &str, v: &str) -> Option<Result<(), String>> {
    Some(match f {
        // `pve_verify_ip_or_cidr_or_alias`: an alias name (`dc/` or `guest/`
        // prefixed or not), else an IP or CIDR.
        "IPorCIDRorAlias" if alias_name(v) => Ok(()),
        "IPorCIDRorAlias" | "IPorCIDR" => normalize_cidr(v).map(|_| ()),
        // `parse_address_list`: `+ipset`, an alias, or IPs/CIDRs/ranges.
        "pve-fw-addr-spec" => {
            if let Some(set) = v.strip_prefix('+') {
                if set.is_empty() || set.contains(char::is_whitespace) {
                    Err(format!("invalid IP address: {v}"))
                } else if v.len() > 64 + 1 {
                    Err("ipset name too long".into())
                } else {
                    Ok(())
                }
            } else if alias_name(v) {
                Ok(())
            } else if v.split(',').collect::<Vec<_>>().join(",") != v
                || v.split(',').any(str::is_empty)
            {
                Err("extraneous commas in list".into())
            } else {
                v.split(',')
                    .try_for_each(|e| {
                        let first = e.split('-').next().unwrap_or(e);
                        normalize_cidr(first).map(|_| ())
                    })
                    .map_err(|_| format!("invalid IP address: {v}"))
            }
        }
        "pve-fw-dport-spec" | "pve-fw-sport-spec" => check_ports(v),
        "pve-fw-protocol-spec" => {
            if v.is_empty() || known_proto(v) {
                Ok(())
            } else {
                Err(format!("unknown protocol '{v}'"))
            }
        }
        "pve-fw-icmp-type-spec" => Ok(()),
        _ => return None,
    })
}

/// `Firewall.pm $ip_alias_pattern` = `[A-Za-z][A-Za-z0-9\-\_]+`, optionally scoped.
fn alias_name(v: &str) -> bool {
    regex::Regex::new(r"^(dc/|guest/)?[A-Za-z][A-Za-z0-9\-_]+$")
        .unwrap()
        .is_match(v)
}

type R = Result<Value, (u16, String)>;

/// `raise_param_exc`: a 400 with the error under the parameter's name.
fn param_err(param: &str, msg: &str) -> (u16, String) {
    let mut e = BTreeMap::new();
    e.insert(param.to_string(), msg.to_string());
    (400, serde_json::to_string(&e).unwrap())
}

fn digest_of(v: &Value) -> String {
    let h = Sha256::digest(v.to_string().as_bytes());
    h.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// `/etc/protocols` of Debian's netbase (what `get_etc_protocols` reads on a
/// PVE node): the names and numbers a rule may use, here the common subset.
const PROTOCOLS: [(&str, u8); 13] = [
    ("ip", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("tcp", 6),
    ("udp", 17),
    ("dccp", 33),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ipv6-icmp", 58),
    ("vrrp", 112),
    ("sctp", 132),
    ("udplite", 136),
];

/// `Firewall.pm $PROTOCOLS_WITH_PORTS`.
const WITH_PORTS: [&str; 10] = [
    "udp", "17", "udplite", "136", "tcp", "6", "dccp", "33", "sctp", "132",
];

fn known_proto(p: &str) -> bool {
    p == "icmpv6"
        || PROTOCOLS
            .iter()
            .any(|(n, id)| *n == p || id.to_string() == p)
}

/// `Firewall.pm parse_port_name_number_or_range` for numbers and ranges
/// (service names are refused here: haimg writes numbers).
fn check_ports(s: &str) -> Result<(), String> {
    let items: Vec<&str> = s.split(',').collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err("extraneous commas in list".into());
    }
    let mut count = 0;
    for i in items {
        if let Some((a, b)) = i.split_once(':') {
            let (a, b): (u32, u32) = (
                a.parse().map_err(|_| format!("invalid port '{i}'"))?,
                b.parse().map_err(|_| format!("invalid port '{i}'"))?,
            );
            if a > 65535 || b > 65535 {
                return Err(format!("invalid port '{i}'"));
            }
            if a > b {
                return Err(format!(
                    "backwards range '{a}:{b}' not allowed, did you mean '{b}:{a}'?"
                ));
            }
            count += 2;
        } else {
            let n: u32 = i.parse().map_err(|_| format!("invalid port '{i}'"))?;
            if n > 65535 {
                return Err(format!("invalid port '{n}'"));
            }
            count += 1;
        }
    }
    if count > 15 {
        return Err("too many entries in port list (> 15 numbers)".into());
    }
    Ok(())
}

/// `Firewall.pm parse_ip_or_cidr` after `clean_cidr`: host bits cleared, `/32` dropped.
fn normalize_cidr(c: &str) -> Result<String, String> {
    let (ip, len) = match c.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (c, None),
    };
    let ip: std::net::Ipv4Addr = ip
        .parse()
        .map_err(|_| "value does not look like a valid IP address or CIDR network".to_string())?;
    match len {
        None => Ok(ip.to_string()),
        Some(l) => {
            let l: u32 = l
                .parse()
                .ok()
                .filter(|l| *l <= 32)
                .ok_or_else(|| format!("invalid prefix length in '{c}'"))?;
            if l == 32 {
                return Ok(ip.to_string());
            }
            let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
            Ok(format!(
                "{}/{l}",
                std::net::Ipv4Addr::from(u32::from(ip) & mask)
            ))
        }
    }
}

/// Where a request's IP sets and rules live.
enum Place {
    Cluster,
    Ct(u32),
}

fn place(route: &str, p: &BTreeMap<String, String>) -> Place {
    if route.starts_with("/nodes/") {
        Place::Ct(p.get("vmid").and_then(|v| v.parse().ok()).unwrap_or(0))
    } else {
        Place::Cluster
    }
}

fn ipsets_mut<'a>(fw: &'a mut FwState, at: &Place) -> &'a mut BTreeMap<String, Ipset> {
    match at {
        Place::Cluster => &mut fw.ipsets,
        Place::Ct(v) => &mut fw.guests.entry(*v).or_default().ipsets,
    }
}

fn ipsets<'a>(fw: &'a FwState, at: &Place) -> Option<&'a BTreeMap<String, Ipset>> {
    match at {
        Place::Cluster => Some(&fw.ipsets),
        Place::Ct(v) => fw.guests.get(v).map(|g| &g.ipsets),
    }
}

fn rule_json(r: &RuleMap, pos: usize, digest: &str) -> Value {
    let mut v = json!({"pos": pos, "digest": digest});
    for (k, val) in r {
        v[k] = if k == "enable" {
            json!(val.parse::<u64>().unwrap_or(0))
        } else {
            json!(val)
        };
    }
    v
}

fn list_digest(rules: &[RuleMap]) -> String {
    digest_of(&json!(rules))
}

fn ipset_digest(set: &Ipset) -> String {
    let v: Vec<Value> = set
        .entries
        .iter()
        .map(|e| json!([e.cidr, e.comment, e.nomatch]))
        .collect();
    digest_of(&json!(v))
}

/// `verify_rule` for the parts haimg can get wrong.
fn verify_rule(fw: &FwState, at: &Place, r: &RuleMap) -> Result<(), (u16, String)> {
    let ty = r.get("type").map(String::as_str).unwrap_or("");
    let action = r.get("action").map(String::as_str).unwrap_or("");
    let allowed: &[&str] = match at {
        Place::Cluster => &["in", "out", "forward"], // rule_env 'group'
        Place::Ct(_) => &["in", "out", "group"],
    };
    let env = match at {
        Place::Cluster => "group",
        Place::Ct(_) => "ct",
    };
    if !allowed.contains(&ty) {
        return Err(param_err(
            "type",
            &format!("invalid rule type '{ty}' for rule_env '{env}'"),
        ));
    }
    if ty != "group" && !matches!(action, "ACCEPT" | "DROP" | "REJECT") {
        return Err(param_err("action", &format!("unknown action '{action}'")));
    }
    if let Some(i) = r.get("iface") {
        match at {
            Place::Cluster => {
                return Err(param_err(
                    "type",
                    "parameter -i not allowed for this rule type",
                ))
            }
            Place::Ct(_) if !regex::Regex::new(r"^net\d+$").unwrap().is_match(i) => {
                return Err(param_err(
                    "iface",
                    "value does not match the regex pattern 'net\\d+'",
                ))
            }
            _ => {}
        }
    }
    if let Some(p) = r.get("proto") {
        if !known_proto(p) {
            return Err(param_err("proto", &format!("unknown protocol '{p}'")));
        }
    }
    for key in ["dport", "sport"] {
        if let Some(v) = r.get(key) {
            check_ports(v).map_err(|m| param_err(key, &m))?;
            match r.get("proto") {
                None => {
                    return Err(param_err(
                        "proto",
                        &format!("missing property - '{key}' requires this property"),
                    ))
                }
                Some(p) if !WITH_PORTS.contains(&p.as_str()) => {
                    return Err(param_err(
                        key,
                        &format!("protocol '{p}' does not support ports"),
                    ))
                }
                _ => {}
            }
        }
    }
    for key in ["source", "dest"] {
        let Some(v) = r.get(key) else { continue };
        if let Some(name) = v.strip_prefix('+') {
            let name = name
                .strip_prefix("dc/")
                .or_else(|| name.strip_prefix("guest/"))
                .unwrap_or(name);
            let known = fw.ipsets.contains_key(name)
                || ipsets(fw, at).is_some_and(|s| s.contains_key(name));
            if !known {
                return Err(param_err(key, &format!("no such ipset '{name}'")));
            }
        } else {
            for part in v.split(',') {
                normalize_cidr(part)
                    .map_err(|_| param_err(key, &format!("no such alias '{v}'")))?;
            }
        }
    }
    Ok(())
}

fn rules_of(
    fw: &FwState,
    at: &Place,
    p: &BTreeMap<String, String>,
) -> Result<Vec<RuleMap>, (u16, String)> {
    match at {
        Place::Cluster => {
            let g = &p["group"];
            fw.groups
                .get(&g.to_ascii_lowercase())
                .map(|g| g.rules.clone())
                .ok_or((500, format!("no such security group '{g}'")))
        }
        Place::Ct(v) => Ok(fw
            .guests
            .get(v)
            .map(|g| g.rules.clone())
            .unwrap_or_default()),
    }
}

fn rules_mut<'a>(
    fw: &'a mut FwState,
    at: &Place,
    p: &BTreeMap<String, String>,
) -> Result<&'a mut Vec<RuleMap>, (u16, String)> {
    match at {
        Place::Cluster => {
            let g = &p["group"];
            fw.groups
                .get_mut(&g.to_ascii_lowercase())
                .map(|g| &mut g.rules)
                .ok_or((500, format!("no such security group '{g}'")))
        }
        Place::Ct(v) => Ok(&mut fw.guests.entry(*v).or_default().rules),
    }
}

/// `PVE::Tools::assert_if_modified`.
fn check_digest(given: Option<&String>, now: &str) -> Result<(), (u16, String)> {
    match given {
        Some(d) if d != now => Err((
            500,
            "detected modified configuration - file changed by other user? Try again.".into(),
        )),
        _ => Ok(()),
    }
}

/// Handle a firewall route; `None` when `route` is not one.
pub fn dispatch(
    fw: &mut FwState,
    method: &str,
    route: &str,
    p: &BTreeMap<String, String>,
) -> Option<R> {
    if !route.contains("/firewall") {
        return None;
    }
    if let Some((r, data)) = &fw.garble {
        if method == "GET" && r == route {
            return Some(Ok(data.clone()));
        }
    }
    let at = place(route, p);
    let base = match at {
        Place::Cluster => "/cluster/firewall",
        Place::Ct(_) => "/nodes/{node}/lxc/{vmid}/firewall",
    };
    let rest = route.strip_prefix(base).unwrap_or(route);
    Some(match (method, rest) {
        ("GET", "/options") => {
            let opts = match at {
                Place::Cluster => fw.options.clone(),
                Place::Ct(v) => fw
                    .guests
                    .get(&v)
                    .map(|g| g.options.clone())
                    .unwrap_or_default(),
            };
            let mut v = json!({});
            for (k, val) in &opts {
                // Numbers as Perl reads them from the file.
                v[k] = match val.parse::<u64>() {
                    Ok(n) => json!(n),
                    Err(_) => json!(val),
                };
            }
            v["digest"] = json!(digest_of(&json!(opts)));
            Ok(v)
        }
        ("PUT", "/options") => {
            let now = match at {
                Place::Cluster => fw.options.clone(),
                Place::Ct(v) => fw
                    .guests
                    .get(&v)
                    .map(|g| g.options.clone())
                    .unwrap_or_default(),
            };
            if let Err(e) = check_digest(p.get("digest"), &digest_of(&json!(now))) {
                return Some(Err(e));
            }
            let keys: Vec<&str> = match at {
                Place::Cluster => CLUSTER_OPTION_KEYS.to_vec(),
                Place::Ct(_) => VM_OPTION_KEYS.to_vec(),
            };
            let opts = match at {
                Place::Cluster => &mut fw.options,
                Place::Ct(v) => &mut fw.guests.entry(v).or_default().options,
            };
            if let Some(d) = p.get("delete") {
                for k in d.split([',', ';', ' ']).filter(|k| !k.is_empty()) {
                    if !keys.contains(&k) {
                        return Some(Err(param_err("delete", &format!("no such option '{k}'"))));
                    }
                    opts.remove(k);
                }
            }
            for k in keys {
                if let Some(v) = p.get(k) {
                    let v = match (&at, k) {
                        (Place::Cluster, "enable") if v.parse::<u64>().is_ok_and(|n| n > 1) => {
                            "1750000000".to_string()
                        }
                        _ => v.clone(),
                    };
                    opts.insert(k.to_string(), v);
                }
            }
            Ok(Value::Null)
        }
        ("GET", "/ipset") => {
            let sets = ipsets(fw, &at).cloned().unwrap_or_default();
            let list: Vec<Value> = sets
                .iter()
                .map(|(n, s)| {
                    let mut v = json!({"name": n});
                    if let Some(c) = &s.comment {
                        v["comment"] = json!(c);
                    }
                    v
                })
                .collect();
            let d = digest_of(&json!(list));
            Ok(Value::Array(
                list.into_iter()
                    .map(|mut v| {
                        v["digest"] = json!(d);
                        v
                    })
                    .collect(),
            ))
        }
        ("POST", "/ipset") => {
            let name = p["name"].to_ascii_lowercase();
            if name.len() < 2 {
                return Some(Err(param_err(
                    "name",
                    "value must be at least 2 characters long",
                )));
            }
            if p.contains_key("rename") {
                return Some(Err((501, "rename is not modeled by the fake".into())));
            }
            let sets = ipsets_mut(fw, &at);
            if sets.contains_key(&name) {
                return Some(Err(param_err(
                    "name",
                    &format!("IPSet '{name}' already exists"),
                )));
            }
            sets.insert(
                name,
                Ipset {
                    comment: p.get("comment").cloned(),
                    entries: Vec::new(),
                },
            );
            Ok(Value::Null)
        }
        ("GET", "/ipset/{name}") => {
            let name = p["name"].to_ascii_lowercase();
            let Some(set) = ipsets(fw, &at).and_then(|s| s.get(&name)) else {
                return Some(Err((500, format!("no such IPSet '{}'", p["name"]))));
            };
            let d = ipset_digest(set);
            Ok(Value::Array(
                set.entries
                    .iter()
                    .map(|e| {
                        let mut v = json!({"cidr": e.cidr, "digest": d});
                        if let Some(c) = &e.comment {
                            v["comment"] = json!(c);
                        }
                        if e.nomatch {
                            v["nomatch"] = json!(1);
                        }
                        v
                    })
                    .collect(),
            ))
        }
        ("POST", "/ipset/{name}") => {
            let name = p["name"].to_ascii_lowercase();
            let cidr = match normalize_cidr(&p["cidr"]) {
                Ok(c) => c,
                Err(_) => {
                    // An alias name: none are modelled (`resolve_alias` dies).
                    return Some(Err((500, format!("no such alias '{}'", p["cidr"]))));
                }
            };
            let Some(set) = ipsets_mut(fw, &at).get_mut(&name) else {
                return Some(Err((500, format!("no such IPSet '{}'", p["name"]))));
            };
            if set.entries.iter().any(|e| e.cidr == cidr) {
                return Some(Err(param_err(
                    "cidr",
                    &format!("address '{cidr}' already exists"),
                )));
            }
            if cidr.ends_with("/0") {
                return Some(Err(param_err(
                    "cidr",
                    "a zero prefix is not allowed in ipset entries",
                )));
            }
            set.entries.insert(
                0,
                Entry {
                    cidr,
                    comment: p.get("comment").cloned().filter(|c| !c.is_empty()),
                    nomatch: p.get("nomatch").is_some_and(|v| v == "1"),
                },
            );
            Ok(Value::Null)
        }
        ("DELETE", "/ipset/{name}/{cidr}") => {
            let name = p["name"].to_ascii_lowercase();
            let Some(set) = ipsets_mut(fw, &at).get_mut(&name) else {
                return Some(Err((500, format!("no such IPSet '{}'", p["name"]))));
            };
            if let Err(e) = check_digest(p.get("digest"), &ipset_digest(set)) {
                return Some(Err(e));
            }
            set.entries.retain(|e| e.cidr != p["cidr"]);
            Ok(Value::Null)
        }
        ("DELETE", "/ipset/{name}") => {
            let name = p["name"].to_ascii_lowercase();
            let sets = ipsets_mut(fw, &at);
            let Some(set) = sets.get(&name) else {
                return Some(Err((500, format!("no such IPSet '{}'", p["name"]))));
            };
            if !set.entries.is_empty() && p.get("force").is_none_or(|f| f != "1") {
                return Some(Err((500, format!("IPSet '{}' is not empty", p["name"]))));
            }
            sets.remove(&name);
            Ok(Value::Null)
        }
        ("GET", "/groups") => {
            let list: Vec<Value> = fw
                .groups
                .iter()
                .map(|(n, g)| {
                    let mut v = json!({"group": n});
                    if let Some(c) = &g.comment {
                        v["comment"] = json!(c);
                    }
                    v
                })
                .collect();
            let d = digest_of(&json!(list));
            Ok(Value::Array(
                list.into_iter()
                    .map(|mut v| {
                        v["digest"] = json!(d);
                        v
                    })
                    .collect(),
            ))
        }
        ("POST", "/groups") => {
            let name = p["group"].to_ascii_lowercase();
            if name.len() < 2 {
                return Some(Err(param_err(
                    "group",
                    "value must be at least 2 characters long",
                )));
            }
            if p.contains_key("rename") {
                return Some(Err((501, "rename is not modeled by the fake".into())));
            }
            if fw.groups.contains_key(&name) {
                return Some(Err(param_err(
                    "group",
                    &format!("Security group '{name}' already exists"),
                )));
            }
            fw.groups.insert(
                name,
                Group {
                    comment: p.get("comment").cloned(),
                    rules: Vec::new(),
                },
            );
            Ok(Value::Null)
        }
        ("DELETE", "/groups/{group}") => {
            let name = p["group"].to_ascii_lowercase();
            match fw.groups.get(&name) {
                None => Err((500, format!("no such security group '{}'", p["group"]))),
                Some(g) if !g.rules.is_empty() => {
                    Err((500, format!("Security group '{}' is not empty", p["group"])))
                }
                Some(_) => {
                    fw.groups.remove(&name);
                    Ok(Value::Null)
                }
            }
        }
        ("GET", "/groups/{group}") | ("GET", "/rules") => match rules_of(fw, &at, p) {
            Ok(rules) => {
                let d = list_digest(&rules);
                Ok(Value::Array(
                    rules
                        .iter()
                        .enumerate()
                        .map(|(i, r)| rule_json(r, i, &d))
                        .collect(),
                ))
            }
            Err(e) => Err(e),
        },
        ("POST", "/groups/{group}") | ("POST", "/rules") => {
            if let Err(e) = rules_of(fw, &at, p) {
                return Some(Err(e));
            }
            // copy_rule_data: every rule property given, '' or '-' deletes.
            let mut rule: RuleMap = RULE_KEYS
                .iter()
                .filter_map(|k| p.get(*k).map(|v| (k.to_string(), v.clone())))
                .filter(|(_, v)| !v.is_empty() && v != "-")
                .collect();
            if let Err(e) = verify_rule(fw, &at, &rule) {
                return Some(Err(e));
            }
            rule.entry("enable".into()).or_insert_with(|| "0".into());
            match rules_mut(fw, &at, p) {
                Ok(list) => {
                    list.insert(0, rule);
                    Ok(Value::Null)
                }
                Err(e) => Err(e),
            }
        }
        ("DELETE", "/groups/{group}/{pos}") | ("DELETE", "/rules/{pos}") => {
            let list = match rules_mut(fw, &at, p) {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            if let Err(e) = check_digest(p.get("digest"), &list_digest(list)) {
                return Some(Err(e));
            }
            let pos: usize = p["pos"].parse().unwrap_or(usize::MAX);
            if pos >= list.len() {
                return Some(Err((500, format!("no rule at position {}", p["pos"]))));
            }
            list.remove(pos);
            Ok(Value::Null)
        }
        ("GET", "/groups/{group}/{pos}") | ("GET", "/rules/{pos}") => match rules_of(fw, &at, p) {
            Ok(rules) => {
                let pos: usize = p["pos"].parse().unwrap_or(usize::MAX);
                match rules.get(pos) {
                    Some(r) => Ok(rule_json(r, pos, &list_digest(&rules))),
                    None => Err((500, format!("no rule at position {}", p["pos"]))),
                }
            }
            Err(e) => Err(e),
        },
        _ => Err((501, format!("{method} {route} is not modeled by the fake"))),
    })
}
