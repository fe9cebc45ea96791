//! Proxmox's firewall API: IP sets, security groups, rules and options, for the
//! datacenter and per container. This module only speaks the API; what haimg
//! wants there is decided in [`super::policy`].
//!
//! Read from Proxmox's own source (`proxmox/pve-firewall` at 6f1311f, 6.0.4):
//! * paths and parameters: `src/PVE/API2/Firewall/{Cluster,IPSet,Groups,Rules,VM}.pm`;
//!   the container subtree is mounted at `/nodes/{node}/lxc/{vmid}/firewall`
//!   (`pve-container:src/PVE/API2/LXC.pm`, subclass `PVE::API2::Firewall::CT`).
//! * IP set and group names are lowercased when the config is read back
//!   (`Firewall.pm generic_fw_config_parser`), so haimg only writes lowercase names.
//! * a created rule is put at position 0 (`Rules.pm create_rule`: `unshift`) and is
//!   disabled unless `enable` is given; rules are deleted by position, guarded by
//!   the list's digest (`assert_if_modified`).
//! * an IP set entry is stored without `/32` (`Firewall.pm parse_ip_or_cidr`).
//! * every answer is `{data: ...}` with Perl scalars: numbers may be strings, so
//!   everything is read leniently.
//!
//! Invariant: GETs are always sent (also in dry-run, to know what would change);
//! every call that changes something goes through [`ProxmoxBackend::plan`] first,
//! so dry-run records it with its parameters instead of sending it. None of these
//! calls starts a task: Proxmox answers `null` once the config file is written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{seg, Method, Params};
use super::wire::flag;
use super::{Ctx, ProxmoxBackend};
use crate::backend::Result;

/// Where IP sets and options live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// `/cluster/firewall` (the `cluster.fw` file, shared by all nodes).
    Datacenter,
    /// `/nodes/{node}/lxc/{vmid}/firewall` (`<vmid>.fw`).
    Ct { node: &'a str, vmid: u32 },
}

/// A list of rules: a security group's, or a container's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleList<'a> {
    Group(&'a str),
    Ct { node: &'a str, vmid: u32 },
}

/// Rule direction, or a reference to a security group (`GROUP name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleType {
    In,
    Out,
    Group,
}

impl RuleType {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleType::In => "in",
            RuleType::Out => "out",
            RuleType::Group => "group",
        }
    }
}

/// One firewall rule, as written and as read back. Field names are the API's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    #[serde(rename = "type")]
    pub kind: RuleType,
    /// `ACCEPT`, `DROP`, `REJECT`, or the group name for [`RuleType::Group`].
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<String>,
    #[serde(default, rename = "macro", skip_serializing_if = "Option::is_none")]
    pub macro_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(default, rename = "icmp-type", skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    pub enable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl Rule {
    /// `POST .../rules` parameters, in the order of the rule text
    /// (`IN ACCEPT -source +x -dest +y -p tcp -dport 80 # comment`).
    pub fn params(&self) -> Params {
        let mut p = Params::new()
            .add("type", self.kind.as_str())
            .add("action", &self.action);
        for (k, v) in [
            ("macro", &self.macro_name),
            ("iface", &self.iface),
            ("source", &self.source),
            ("dest", &self.dest),
            ("proto", &self.proto),
            ("dport", &self.dport),
            ("sport", &self.sport),
            ("icmp-type", &self.icmp_type),
            ("log", &self.log),
        ] {
            if let Some(v) = v {
                p = p.add(k, v);
            }
        }
        p = p.flag("enable", self.enable);
        if let Some(c) = &self.comment {
            p = p.add("comment", c);
        }
        p
    }

    /// The rule as Proxmox writes it into a `.fw` file; for messages and snapshots.
    pub fn text(&self) -> String {
        let mut s = String::new();
        if !self.enable {
            s.push('|');
        }
        s.push_str(&self.kind.as_str().to_ascii_uppercase());
        s.push(' ');
        match &self.macro_name {
            Some(m) => s.push_str(&format!("{m}({})", self.action)),
            None => s.push_str(&self.action),
        }
        for (k, v) in [
            ("-i", &self.iface),
            ("-source", &self.source),
            ("-dest", &self.dest),
            ("-p", &self.proto),
            ("-dport", &self.dport),
            ("-sport", &self.sport),
            ("-icmp-type", &self.icmp_type),
            ("-log", &self.log),
        ] {
            if let Some(v) = v {
                s.push_str(&format!(" {k} {v}"));
            }
        }
        if let Some(c) = &self.comment {
            s.push_str(&format!(" # {c}"));
        }
        s
    }
}

/// A rule as listed: its position and the digest of the whole list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    pub pos: u32,
    pub rule: Rule,
    pub digest: String,
    /// Proxmox keeps rules it cannot apply (unknown IP set, bad port) and marks them.
    pub errors: Option<String>,
}

/// An IP set or security group in a list, with its comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Named {
    pub name: String,
    pub comment: Option<String>,
}

/// One IP set entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpsetEntry {
    /// An address without `/32`, a network, or an alias name.
    pub cidr: String,
    pub comment: Option<String>,
    pub nomatch: bool,
}

/// Firewall options as strings (`enable` → `"1"`, `policy_in` → `"DROP"`);
/// the `digest` is left out.
pub type Options = BTreeMap<String, String>;

/// Proxmox's firewall, as the deploy uses it. Implemented by [`ProxmoxBackend`];
/// the other backend enforces the policy on its own bridge and has none.
pub trait PveFirewall: Sync {
    fn options(&self, at: Scope<'_>) -> Result<Options>;
    /// `PUT .../options` with only the given keys.
    fn set_options(&self, at: Scope<'_>, set: &Options) -> Result<()>;
    fn ipsets(&self, at: Scope<'_>) -> Result<Vec<Named>>;
    fn create_ipset(&self, at: Scope<'_>, name: &str, comment: &str) -> Result<()>;
    fn ipset_entries(&self, at: Scope<'_>, name: &str) -> Result<Vec<IpsetEntry>>;
    fn add_ipset_entry(&self, at: Scope<'_>, name: &str, entry: &IpsetEntry) -> Result<()>;
    fn remove_ipset_entry(&self, at: Scope<'_>, name: &str, cidr: &str) -> Result<()>;
    fn groups(&self) -> Result<Vec<Named>>;
    fn create_group(&self, name: &str, comment: &str) -> Result<()>;
    fn rules(&self, of: RuleList<'_>) -> Result<Vec<ListedRule>>;
    /// Adds at position 0 (Proxmox's only choice).
    fn add_rule(&self, of: RuleList<'_>, rule: &Rule) -> Result<()>;
    /// Deletes the rule at `pos` if the list still has `digest`.
    fn delete_rule(&self, of: RuleList<'_>, pos: u32, digest: &str) -> Result<()>;
    /// A container's `net0` and the config digest.
    fn ct_net0(&self, node: &str, vmid: u32) -> Result<(Option<String>, String)>;
    /// `PUT .../config net0=...` guarded by the digest; hot-applied on a running
    /// container (the veth is re-plugged).
    fn set_ct_net0(&self, node: &str, vmid: u32, net0: &str, digest: &str) -> Result<()>;
}

fn scope_base(at: Scope<'_>) -> String {
    match at {
        Scope::Datacenter => "/cluster/firewall".to_string(),
        Scope::Ct { node, vmid } => format!("/nodes/{}/lxc/{vmid}/firewall", seg(node)),
    }
}

fn scope_ctx(at: Scope<'_>) -> Ctx<'_> {
    match at {
        Scope::Datacenter => Ctx {
            node: "",
            vmid: None,
        },
        Scope::Ct { node, vmid } => Ctx {
            node,
            vmid: Some(vmid),
        },
    }
}

fn rules_path(of: RuleList<'_>) -> String {
    match of {
        RuleList::Group(g) => format!("/cluster/firewall/groups/{}", seg(g)),
        RuleList::Ct { node, vmid } => format!("/nodes/{}/lxc/{vmid}/firewall/rules", seg(node)),
    }
}

fn rules_ctx(of: RuleList<'_>) -> Ctx<'_> {
    match of {
        RuleList::Group(_) => Ctx {
            node: "",
            vmid: None,
        },
        RuleList::Ct { node, vmid } => Ctx {
            node,
            vmid: Some(vmid),
        },
    }
}

/// A scalar as Proxmox may send it (string, number or boolean) as a string.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        _ => None,
    }
}

fn opt_text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(scalar).filter(|s| !s.is_empty())
}

#[derive(Deserialize)]
struct RawListedRule {
    #[serde(flatten)]
    rule: Rule,
    #[serde(deserialize_with = "super::wire::num")]
    pos: u64,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    errors: Option<Value>,
}

impl ProxmoxBackend {
    /// A call that changes something: recorded in dry-run, sent otherwise.
    /// Firewall calls answer `null` at once (no task).
    fn fw_write(&self, method: Method, path: &str, params: &Params, ctx: Ctx<'_>) -> Result<()> {
        if self.plan(method, path, params) {
            return Ok(());
        }
        self.client
            .call(method, path, params)
            .map(|_| ())
            .map_err(|e| Self::err(&format!("{method} {path}"), ctx, e))
    }

    fn fw_list(&self, path: &str, ctx: Ctx<'_>) -> Result<Vec<Value>> {
        let v = self.get(path, &Params::new(), ctx)?;
        match v {
            Value::Array(a) => Ok(a),
            Value::Null => Ok(Vec::new()),
            other => Err(Self::err(
                &format!("GET {path}"),
                ctx,
                format!("unexpected answer: expected a list, got {other}"),
            )),
        }
    }

    fn named_list(&self, path: &str, key: &str, ctx: Ctx<'_>) -> Result<Vec<Named>> {
        self.fw_list(path, ctx)?
            .iter()
            .map(|item| {
                let name = opt_text(item, key).ok_or_else(|| {
                    Self::err(
                        &format!("GET {path}"),
                        ctx,
                        format!("unexpected answer: an item without '{key}': {item}"),
                    )
                })?;
                Ok(Named {
                    name,
                    comment: opt_text(item, "comment"),
                })
            })
            .collect()
    }
}

impl PveFirewall for ProxmoxBackend {
    fn options(&self, at: Scope<'_>) -> Result<Options> {
        let path = format!("{}/options", scope_base(at));
        let ctx = scope_ctx(at);
        let v = self.get(&path, &Params::new(), ctx)?;
        let Value::Object(o) = v else {
            return Err(Self::err(
                &format!("GET {path}"),
                ctx,
                format!("unexpected answer: expected an object, got {v}"),
            ));
        };
        Ok(o.iter()
            .filter(|(k, _)| k.as_str() != "digest")
            .filter_map(|(k, v)| scalar(v).map(|s| (k.clone(), s)))
            .collect())
    }

    fn set_options(&self, at: Scope<'_>, set: &Options) -> Result<()> {
        let path = format!("{}/options", scope_base(at));
        let mut p = Params::new();
        for (k, v) in set {
            p = p.add(k, v);
        }
        self.fw_write(Method::Put, &path, &p, scope_ctx(at))
    }

    fn ipsets(&self, at: Scope<'_>) -> Result<Vec<Named>> {
        self.named_list(&format!("{}/ipset", scope_base(at)), "name", scope_ctx(at))
    }

    fn create_ipset(&self, at: Scope<'_>, name: &str, comment: &str) -> Result<()> {
        let path = format!("{}/ipset", scope_base(at));
        let p = Params::new().add("name", name).add("comment", comment);
        self.fw_write(Method::Post, &path, &p, scope_ctx(at))
    }

    fn ipset_entries(&self, at: Scope<'_>, name: &str) -> Result<Vec<IpsetEntry>> {
        let path = format!("{}/ipset/{}", scope_base(at), seg(name));
        let ctx = scope_ctx(at);
        self.fw_list(&path, ctx)?
            .iter()
            .map(|item| {
                let cidr = opt_text(item, "cidr").ok_or_else(|| {
                    Self::err(
                        &format!("GET {path}"),
                        ctx,
                        format!("unexpected answer: an entry without 'cidr': {item}"),
                    )
                })?;
                let nomatch = item
                    .get("nomatch")
                    .and_then(scalar)
                    .is_some_and(|s| s != "0" && !s.is_empty());
                Ok(IpsetEntry {
                    cidr,
                    comment: opt_text(item, "comment"),
                    nomatch,
                })
            })
            .collect()
    }

    fn add_ipset_entry(&self, at: Scope<'_>, name: &str, entry: &IpsetEntry) -> Result<()> {
        let path = format!("{}/ipset/{}", scope_base(at), seg(name));
        let mut p = Params::new().add("cidr", &entry.cidr);
        if entry.nomatch {
            p = p.flag("nomatch", true);
        }
        if let Some(c) = &entry.comment {
            p = p.add("comment", c);
        }
        self.fw_write(Method::Post, &path, &p, scope_ctx(at))
    }

    fn remove_ipset_entry(&self, at: Scope<'_>, name: &str, cidr: &str) -> Result<()> {
        // `{cidr}` holds a '/' for networks: the sub-router has fragmentDelimiter ''
        // (IPSet.pm), and pveproxy unescapes the path before routing.
        let path = format!("{}/ipset/{}/{}", scope_base(at), seg(name), seg(cidr));
        self.fw_write(Method::Delete, &path, &Params::new(), scope_ctx(at))
    }

    fn groups(&self) -> Result<Vec<Named>> {
        self.named_list(
            "/cluster/firewall/groups",
            "group",
            Ctx {
                node: "",
                vmid: None,
            },
        )
    }

    fn create_group(&self, name: &str, comment: &str) -> Result<()> {
        let p = Params::new().add("group", name).add("comment", comment);
        self.fw_write(
            Method::Post,
            "/cluster/firewall/groups",
            &p,
            Ctx {
                node: "",
                vmid: None,
            },
        )
    }

    fn rules(&self, of: RuleList<'_>) -> Result<Vec<ListedRule>> {
        let path = rules_path(of);
        let ctx = rules_ctx(of);
        let mut out: Vec<ListedRule> = self
            .fw_list(&path, ctx)?
            .into_iter()
            .map(|item| {
                let r: RawListedRule = serde_json::from_value(item.clone()).map_err(|e| {
                    Self::err(
                        &format!("GET {path}"),
                        ctx,
                        format!("unexpected answer: {e} in {item}"),
                    )
                })?;
                Ok(ListedRule {
                    pos: u32::try_from(r.pos).unwrap_or(u32::MAX),
                    rule: r.rule,
                    digest: r.digest.unwrap_or_default(),
                    errors: r.errors.filter(|e| !e.is_null()).map(|e| e.to_string()),
                })
            })
            .collect::<Result<_>>()?;
        out.sort_by_key(|r| r.pos);
        Ok(out)
    }

    fn add_rule(&self, of: RuleList<'_>, rule: &Rule) -> Result<()> {
        self.fw_write(Method::Post, &rules_path(of), &rule.params(), rules_ctx(of))
    }

    fn delete_rule(&self, of: RuleList<'_>, pos: u32, digest: &str) -> Result<()> {
        let path = format!("{}/{pos}", rules_path(of));
        let mut p = Params::new();
        if !digest.is_empty() {
            p = p.add("digest", digest);
        }
        self.fw_write(Method::Delete, &path, &p, rules_ctx(of))
    }

    fn ct_net0(&self, node: &str, vmid: u32) -> Result<(Option<String>, String)> {
        let path = format!("/nodes/{}/lxc/{vmid}/config", seg(node));
        let ctx = Ctx {
            node,
            vmid: Some(vmid),
        };
        let v = self.get(&path, &Params::new(), ctx)?;
        Ok((
            opt_text(&v, "net0"),
            opt_text(&v, "digest").unwrap_or_default(),
        ))
    }

    fn set_ct_net0(&self, node: &str, vmid: u32, net0: &str, digest: &str) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{vmid}/config", seg(node));
        let mut p = Params::new().add("net0", net0);
        if !digest.is_empty() {
            p = p.add("digest", digest);
        }
        self.fw_write(
            Method::Put,
            &path,
            &p,
            Ctx {
                node,
                vmid: Some(vmid),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_ref() -> Rule {
        Rule {
            kind: RuleType::Group,
            action: "haimg-lb".into(),
            source: None,
            dest: None,
            proto: None,
            dport: None,
            sport: None,
            macro_name: None,
            iface: None,
            log: None,
            icmp_type: None,
            enable: true,
            comment: Some("haimg: lb tier".into()),
        }
    }

    #[test]
    fn rules_read_back_leniently() {
        // As pve-firewall lists them: pos and enable as numbers or strings, an
        // `ipversion` and a digest haimg does not compare.
        let v = serde_json::json!({"type": "in", "action": "ACCEPT", "source": "+haimg-lb",
            "proto": "vrrp", "enable": "1", "pos": "3", "ipversion": 4, "digest": "abc"});
        let r: RawListedRule = serde_json::from_value(v).unwrap();
        assert_eq!(r.pos, 3);
        assert!(r.rule.enable);
        assert_eq!(r.rule.proto.as_deref(), Some("vrrp"));
        let disabled: RawListedRule =
            serde_json::from_value(serde_json::json!({"type": "group", "action": "x", "pos": 0}))
                .unwrap();
        assert!(!disabled.rule.enable, "a rule without enable is disabled");
    }

    #[test]
    fn rule_params_and_text() {
        let r = group_ref();
        insta::assert_snapshot!(r.params().encode(), @"type=group&action=haimg-lb&enable=1&comment=haimg%3A+lb+tier");
        insta::assert_snapshot!(r.text(), @"GROUP haimg-lb # haimg: lb tier");
    }
}
