//! The network policy on Proxmox's firewall: the Proxmox backend's
//! [`Backend::enforce_policy`](crate::backend::Backend::enforce_policy).
//!
//! Everything written here follows from the policy's flows
//! ([`haimg_model::policy::derive`]):
//! * datacenter IP sets `<p>-lb`, `<p>-mongo`, `<p>-webapp` (member addresses),
//!   `<p>-admin` (deploy hosts) and `<p>-vip`;
//! * one security group per tier, `<p>-<role>`, with that tier's inbound ACCEPT
//!   rules; sources and destinations are IP set references, never addresses;
//! * per container: options `enable=1 policy_in=DROP policy_out=ACCEPT ipfilter=1`,
//!   one rule `GROUP <p>-<role>`, and for lb members an `ipfilter-net0` IP set
//!   holding the member's address and the VIP. With `ipfilter` on, Proxmox drops
//!   packets and ARP from any other source address (`pve-firewall:src/PVE/Firewall.pm`,
//!   `ruleset_create_vm_chain`, `compile_ebtables_filter`); the VIP moves between
//!   the lb members, so its gratuitous ARP and replies must pass;
//! * `firewall=1` on net0 (written at create; checked on members that already exist).
//!
//! A rollout (new VMIDs, same addresses) writes only the per-container part
//! (a [`Policy`] without `target_wide`); the tier rules and IP sets stay as they are.
//! `<p>` is the cluster name, or `h` and 10 hex digits of its hash when the name
//! is too long for a security group (at most 18 characters, `Firewall.pm`).
//!
//! Invariants:
//! * Idempotent: everything is read first and only differences are written, so a
//!   second deploy writes nothing. In dry-run the same reads happen and the
//!   writes are recorded by the backend; objects that do not exist yet are not read.
//! * Ownership: IP sets and groups haimg writes carry the comment
//!   `haimg cluster <name>: …`. A same-named object without it is someone
//!   else's and is never changed (an error). Container rules commented `haimg:`
//!   are haimg's; other rules on a member are left in place and reported.
//! * Order: IP sets before the groups that name them (Proxmox refuses a rule
//!   naming a missing IP set); per container the ipfilter set, then the rules,
//!   then the options, so a container's filter never turns on without its rules;
//!   the datacenter switch last, once everything it would apply is in place.
//! * The datacenter switch (`cluster.fw` `enable`) is shared by every guest and
//!   host: without it Proxmox applies no guest rule at all (`Firewall.pm compile`
//!   returns empty rulesets), with it every node also filters its own input.
//!   haimg turns it on only with `proxmox.firewall.datacenter: enable`, and says so.

use std::collections::BTreeMap;
use std::fmt::Write;

use haimg_model::policy::{self, Peer, Service};
use haimg_model::{Cluster, DatacenterFirewall, Member, Role};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::firewall::{
    IpsetEntry, ListedRule, Options, PveFirewall, Rule, RuleList, RuleType, Scope,
};
use crate::backend::{BackendError, Guest, Policy, PolicyReport, Switch};

/// Longest security group name Proxmox accepts (`$max_group_name_length`).
const MAX_GROUP_NAME: usize = 18;

/// The per-container IP set Proxmox's `ipfilter` uses for net0.
pub const IPFILTER_SET: &str = "ipfilter-net0";

/// Prefix of every comment on a container rule haimg writes.
const RULE_MARK: &str = "haimg:";

/// How the report names what enforces the policy.
const ENFORCER: &str = "Proxmox's firewall";

/// A datacenter IP set haimg owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpsetSpec {
    pub name: String,
    pub comment: String,
    pub entries: Vec<IpsetEntry>,
}

/// A security group haimg owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupSpec {
    pub role: Role,
    pub name: String,
    pub comment: String,
    pub rules: Vec<Rule>,
}

/// Everything haimg wants at datacenter level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatacenterPlan {
    pub ipsets: Vec<IpsetSpec>,
    pub groups: Vec<GroupSpec>,
}

/// Everything haimg wants on one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberPlan {
    /// The one rule: `GROUP <p>-<role>`.
    pub rule: Rule,
    pub options: Options,
    /// lb members: `ipfilter-net0` with the member's address and the VIP.
    pub ipfilter: Option<IpsetSpec>,
}

/// The prefix of every IP set and group name of `cluster`: lowercase (Proxmox
/// lowercases these names when it reads its config back), starting with a
/// letter, short enough for `<p>-webapp` to fit in 18 characters.
pub fn prefix(cluster: &str) -> String {
    let name = cluster.to_ascii_lowercase();
    let longest_suffix = "-webapp".len();
    if name.len() + longest_suffix <= MAX_GROUP_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        return name;
    }
    let h = Sha256::digest(name.as_bytes());
    let hex: String = h.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("h{hex}")
}

fn owner_comment(cluster: &Cluster, what: &str) -> String {
    format!("haimg cluster {}: {what}", cluster.name)
}

fn owned_by(cluster: &Cluster, comment: Option<&str>) -> bool {
    comment.is_some_and(|c| c.starts_with(&format!("haimg cluster {}:", cluster.name)))
}

fn set_name(p: &str, peer: Peer) -> Option<String> {
    match peer {
        Peer::Client => None,
        Peer::Admin => Some(format!("{p}-admin")),
        Peer::Vip => Some(format!("{p}-vip")),
        Peer::Tier(r) => Some(format!("{p}-{r}")),
    }
}

/// The security group holding the inbound rules of `role`.
pub fn group_name(cluster: &Cluster, role: Role) -> String {
    format!("{}-{role}", prefix(&cluster.name))
}

fn entry(ip: std::net::Ipv4Addr, comment: impl Into<String>) -> IpsetEntry {
    IpsetEntry {
        cidr: ip.to_string(),
        comment: Some(comment.into()),
        nomatch: false,
    }
}

/// The rule that lets one flow in, or `None` when its destination is not a guest.
fn flow_rule(p: &str, f: &policy::Flow) -> Option<(Role, Rule)> {
    let (role, dest) = match f.to {
        Peer::Tier(r) => (r, None),
        // The VIP is held by one lb member at a time.
        Peer::Vip => (
            Role::ALL.into_iter().find(|r| r.holds_vip())?,
            set_name(p, Peer::Vip).map(|s| format!("+{s}")),
        ),
        Peer::Client | Peer::Admin => return None,
    };
    let (proto, dport) = match f.service {
        Service::Tcp(port) => ("tcp", Some(port.to_string())),
        // IP protocol 112, by its /etc/protocols name (pve_fw_verify_protocol_spec).
        Service::Vrrp => ("vrrp", None),
    };
    Some((
        role,
        Rule {
            kind: RuleType::In,
            action: "ACCEPT".into(),
            source: set_name(p, f.from).map(|s| format!("+{s}")),
            dest,
            proto: Some(proto.into()),
            dport,
            sport: None,
            macro_name: None,
            iface: None,
            log: None,
            icmp_type: None,
            enable: true,
            comment: Some(format!(
                "{RULE_MARK} {} -> {} {}, {}",
                f.from, f.to, f.service, f.why
            )),
        },
    ))
}

/// The datacenter IP sets and security groups for `policy`.
pub fn datacenter_plan(cluster: &Cluster, policy: &policy::Policy) -> DatacenterPlan {
    let p = prefix(&cluster.name);
    let mut ipsets = Vec::new();
    for (role, _) in &policy.tiers {
        let entries = cluster
            .members_of(*role)
            .iter()
            .map(|m| entry(m.ip, format!("slot {}", m.slot)))
            .collect();
        ipsets.push(IpsetSpec {
            name: format!("{p}-{role}"),
            comment: owner_comment(cluster, &format!("{role} members")),
            entries,
        });
    }
    ipsets.push(IpsetSpec {
        name: format!("{p}-admin"),
        comment: owner_comment(cluster, "deploy hosts (health gates)"),
        entries: policy
            .admin
            .iter()
            .map(|ip| entry(*ip, "network.admin"))
            .collect(),
    });
    ipsets.push(IpsetSpec {
        name: format!("{p}-vip"),
        comment: owner_comment(cluster, "the VIP"),
        entries: vec![entry(policy.vip, "network.vip")],
    });
    let mut groups: Vec<GroupSpec> = Role::ALL
        .into_iter()
        .map(|role| GroupSpec {
            role,
            name: group_name(cluster, role),
            comment: owner_comment(cluster, &format!("inbound rules of the {role} tier")),
            rules: Vec::new(),
        })
        .collect();
    for f in &policy.flows {
        if let Some((role, rule)) = flow_rule(&p, f) {
            if let Some(g) = groups.iter_mut().find(|g| g.role == role) {
                g.rules.push(rule);
            }
        }
    }
    DatacenterPlan { ipsets, groups }
}

/// What one container of `role` at `ip` needs.
pub fn member_plan(cluster: &Cluster, member: &Member) -> MemberPlan {
    let group = group_name(cluster, member.role);
    let rule = Rule {
        kind: RuleType::Group,
        action: group.clone(),
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
        comment: Some(format!("{RULE_MARK} {} tier policy", member.role)),
    };
    let options: Options = [
        ("enable", "1"),
        ("ipfilter", "1"),
        ("policy_in", "DROP"),
        ("policy_out", "ACCEPT"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let ipfilter = member.role.holds_vip().then(|| IpsetSpec {
        name: IPFILTER_SET.into(),
        comment: format!("{RULE_MARK} the member's address and the VIP it may hold"),
        entries: vec![
            entry(member.ip, format!("slot {}", member.slot)),
            entry(cluster.network.vip, "network.vip"),
        ],
    });
    MemberPlan {
        rule,
        options,
        ipfilter,
    }
}

/// The datacenter plan as Proxmox would write it into `cluster.fw` (for review and snapshots).
pub fn render(plan: &DatacenterPlan) -> String {
    let mut s = String::new();
    for set in &plan.ipsets {
        let _ = writeln!(s, "[IPSET {}] # {}", set.name, set.comment);
        for e in &set.entries {
            let _ = writeln!(
                s,
                "{}{} # {}",
                if e.nomatch { "! " } else { "" },
                e.cidr,
                e.comment.as_deref().unwrap_or("")
            );
        }
        s.push('\n');
    }
    for g in &plan.groups {
        let _ = writeln!(s, "[group {}] # {}", g.name, g.comment);
        for r in &g.rules {
            let _ = writeln!(s, "{}", r.text());
        }
        s.push('\n');
    }
    s
}

/// What happened on one container.
#[derive(Debug, Default, Clone, Serialize)]
struct GuestOutcome {
    changes: Vec<String>,
    warnings: Vec<String>,
    error: Option<String>,
}

/// The Proxmox backend's `enforce_policy`: `None` when
/// `proxmox.firewall.enforce` is off.
pub fn enforce(api: &dyn PveFirewall, p: &Policy<'_>, dry_run: bool) -> Option<PolicyReport> {
    if !p.cluster.proxmox.firewall.enforce {
        return None;
    }
    if p.target_wide {
        return Some(converge(api, p.cluster, p.flows, &p.guests, dry_run));
    }
    let mut report = PolicyReport::new(ENFORCER, Switch::Unknown);
    for g in &p.guests {
        let o = converge_member(api, p.cluster, g, dry_run);
        report.changes.extend(o.changes);
        report.warnings.extend(o.warnings);
        report.errors.extend(o.error);
    }
    Some(report)
}

/// Is the datacenter firewall (`cluster.fw` `enable`) on?
fn datacenter_on(api: &dyn PveFirewall) -> Result<bool, BackendError> {
    let o = api.options(Scope::Datacenter)?;
    Ok(o.get("enable").is_some_and(|v| v != "0" && !v.is_empty()))
}

/// What the switch will be once a deploy has run: on, turned on by haimg
/// (`datacenter: enable` and `enforce`), or off. Read before anything is created.
pub fn expected_switch(api: &dyn PveFirewall, cluster: &Cluster) -> Result<Switch, BackendError> {
    let fw = &cluster.proxmox.firewall;
    Ok(if datacenter_on(api)? {
        Switch::On
    } else if fw.enforce && fw.datacenter == DatacenterFirewall::Enable {
        Switch::WouldEnable
    } else {
        Switch::Off
    })
}

/// Converge the datacenter objects, then every target container, then the switch.
fn converge(
    api: &dyn PveFirewall,
    cluster: &Cluster,
    flows: &policy::Policy,
    targets: &[Guest<'_>],
    dry_run: bool,
) -> PolicyReport {
    let mut report = PolicyReport::new(ENFORCER, Switch::Unknown);
    let switch_on = match datacenter_on(api) {
        Ok(on) => on,
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    let plan = datacenter_plan(cluster, flows);
    if let Err(e) = converge_datacenter(api, cluster, &plan, dry_run, &mut report.changes) {
        report.errors.push(e.to_string());
        report.switch = if switch_on { Switch::On } else { Switch::Off };
        return report;
    }

    // Per node in parallel, in spec order within a node.
    let mut per_node: BTreeMap<&str, Vec<&Guest<'_>>> = BTreeMap::new();
    for t in targets {
        per_node.entry(t.member.node.as_str()).or_default().push(t);
    }
    let outcomes: BTreeMap<u32, GuestOutcome> = crate::backend::per_node(&per_node, |_, t| {
        (t.vmid, converge_member(api, cluster, t, dry_run))
    })
    .into_iter()
    .collect();
    for t in targets {
        if let Some(o) = outcomes.get(&t.vmid) {
            report.changes.extend(o.changes.iter().cloned());
            report.warnings.extend(o.warnings.iter().cloned());
            report.errors.extend(o.error.iter().cloned());
        }
    }

    report.switch = if switch_on {
        Switch::On
    } else {
        match cluster.proxmox.firewall.datacenter {
            DatacenterFirewall::Check => {
                report.warnings.push(
                    "the datacenter firewall is off (Datacenter > Firewall > Options: enable), so Proxmox applies none of these rules: the network policy is NOT enforced; \
                     turn it on once the hosts' own rules are checked, or set proxmox.firewall.datacenter: enable"
                        .into(),
                );
                Switch::Off
            }
            DatacenterFirewall::Enable if !report.errors.is_empty() => {
                report.warnings.push(
                    "the datacenter firewall stays off: not every container's rules are in place (see the errors)".into(),
                );
                Switch::Off
            }
            DatacenterFirewall::Enable => {
                let set: Options = [("enable".to_string(), "1".to_string())].into();
                match api.set_options(Scope::Datacenter, &set) {
                    Ok(()) => {
                        report.changes.push("datacenter firewall: enable=1".into());
                        report.warnings.push(format!(
                            "{} the datacenter firewall (proxmox.firewall.datacenter: enable): it applies to every guest and host of the Proxmox cluster; \
                             each node now also filters its own input (host policy_in, DROP unless set): only the management IP set, by default the node's local network, \
                             may reach the API (8006) and SSH (22), so a deploy host outside it is locked out",
                            if dry_run { "would turn on" } else { "turned on" }
                        ));
                        if dry_run {
                            Switch::WouldEnable
                        } else {
                            Switch::Enabled
                        }
                    }
                    Err(e) => {
                        report.errors.push(e.to_string());
                        Switch::Off
                    }
                }
            }
        }
    };
    report
}

/// IP sets, then security groups.
fn converge_datacenter(
    api: &dyn PveFirewall,
    cluster: &Cluster,
    plan: &DatacenterPlan,
    dry_run: bool,
    changes: &mut Vec<String>,
) -> Result<(), BackendError> {
    let existing = api.ipsets(Scope::Datacenter)?;
    for set in &plan.ipsets {
        let now = match existing.iter().find(|n| n.name == set.name) {
            None => {
                api.create_ipset(Scope::Datacenter, &set.name, &set.comment)?;
                changes.push(format!("ipset {}: created", set.name));
                Vec::new()
            }
            Some(n) if !owned_by(cluster, n.comment.as_deref()) => {
                return Err(conflict(
                    cluster,
                    "an IP set",
                    &set.name,
                    n.comment.as_deref(),
                ));
            }
            Some(_) => api.ipset_entries(Scope::Datacenter, &set.name)?,
        };
        sync_entries(
            api,
            Scope::Datacenter,
            set,
            &now,
            changes,
            &format!("ipset {}", set.name),
        )?;
    }
    let existing = api.groups()?;
    for g in &plan.groups {
        let now = match existing.iter().find(|n| n.name == g.name) {
            None => {
                api.create_group(&g.name, &g.comment)?;
                changes.push(format!("group {}: created", g.name));
                Vec::new()
            }
            Some(n) if !owned_by(cluster, n.comment.as_deref()) => {
                return Err(conflict(
                    cluster,
                    "a security group",
                    &g.name,
                    n.comment.as_deref(),
                ));
            }
            Some(_) => api.rules(RuleList::Group(&g.name))?,
        };
        let mut warnings = Vec::new();
        sync_rules(
            api,
            RuleList::Group(&g.name),
            &g.rules,
            now,
            |_| true,
            dry_run,
            changes,
            &mut warnings,
            &format!("group {}", g.name),
        )?;
    }
    Ok(())
}

fn conflict(cluster: &Cluster, kind: &str, name: &str, comment: Option<&str>) -> BackendError {
    BackendError::Other(anyhow::anyhow!(
        "the datacenter already has {kind} '{name}' that haimg did not write for cluster {} (comment: {}); \
         haimg leaves it alone: rename or remove it in Datacenter > Firewall, or rename the cluster",
        cluster.name,
        comment.map(|c| format!("{c:?}")).unwrap_or_else(|| "none".into())
    ))
}

/// Same address, without Proxmox's dropped `/32`.
fn same_cidr(a: &str, b: &str) -> bool {
    a.trim_end_matches("/32")
        .eq_ignore_ascii_case(b.trim_end_matches("/32"))
}

/// Add what is missing, remove what is not wanted.
fn sync_entries(
    api: &dyn PveFirewall,
    at: Scope<'_>,
    want: &IpsetSpec,
    now: &[IpsetEntry],
    changes: &mut Vec<String>,
    label: &str,
) -> Result<(), BackendError> {
    // Proxmox puts each new entry first: add in reverse to read in plan order.
    for e in want.entries.iter().rev() {
        if !now
            .iter()
            .any(|n| same_cidr(&n.cidr, &e.cidr) && n.nomatch == e.nomatch)
        {
            api.add_ipset_entry(at, &want.name, e)?;
            changes.push(format!("{label}: +{}", e.cidr));
        }
    }
    for n in now {
        if !want
            .entries
            .iter()
            .any(|e| same_cidr(&n.cidr, &e.cidr) && n.nomatch == e.nomatch)
        {
            api.remove_ipset_entry(at, &want.name, &n.cidr)?;
            changes.push(format!("{label}: -{}", n.cidr));
        }
    }
    Ok(())
}

/// Make the rules of `list` that `owned` claims equal to `want` (order aside:
/// every rule haimg writes is an ACCEPT, so order does not change the outcome).
/// Unwanted owned rules are deleted from the highest position down, each guarded
/// by a fresh digest; missing ones are added in reverse, since Proxmox puts each
/// new rule first, so a fresh list reads in the planned order. Rules `owned`
/// does not claim are kept and reported.
#[allow(clippy::too_many_arguments)]
fn sync_rules(
    api: &dyn PveFirewall,
    list: RuleList<'_>,
    want: &[Rule],
    now: Vec<ListedRule>,
    owned: impl Fn(&Rule) -> bool,
    dry_run: bool,
    changes: &mut Vec<String>,
    warnings: &mut Vec<String>,
    label: &str,
) -> Result<(), BackendError> {
    let mut matched = vec![false; now.len()];
    let mut missing = Vec::new();
    for w in want {
        match now
            .iter()
            .enumerate()
            .position(|(i, n)| !matched[i] && n.rule == *w && n.errors.is_none())
        {
            Some(i) => matched[i] = true,
            None => missing.push(w),
        }
    }
    let mut doomed: Vec<&ListedRule> = Vec::new();
    for (i, n) in now.iter().enumerate() {
        if matched[i] {
            continue;
        }
        if owned(&n.rule) {
            doomed.push(n);
        } else {
            warnings.push(format!(
                "{label}: rule {} was not written by haimg and is left in place: {}",
                n.pos,
                n.rule.text()
            ));
        }
    }
    doomed.sort_by_key(|n| std::cmp::Reverse(n.pos));
    for (k, d) in doomed.iter().enumerate() {
        let digest = if k == 0 || dry_run {
            d.digest.clone()
        } else {
            // The list changed with the last delete: positions below it did not,
            // the digest did.
            let fresh = api.rules(list)?;
            match fresh.iter().find(|f| f.pos == d.pos) {
                Some(f) if f.rule == d.rule => f.digest.clone(),
                _ => {
                    return Err(BackendError::Other(anyhow::anyhow!(
                    "{label}: the rules changed while haimg was editing them; run the deploy again"
                )))
                }
            }
        };
        api.delete_rule(list, d.pos, &digest)?;
        changes.push(format!("{label}: - {}", d.rule.text()));
    }
    for w in missing.iter().rev() {
        api.add_rule(list, w)?;
        changes.push(format!("{label}: + {}", w.text()));
    }
    Ok(())
}

fn has_firewall(net0: &str) -> bool {
    net0.split(',').any(|kv| {
        matches!(
            kv.split_once('='),
            Some(("firewall", v)) if matches!(v, "1" | "on" | "yes" | "true")
        )
    })
}

/// `net0` with `firewall=1` (replacing any other `firewall=` value).
fn with_firewall(net0: &str) -> String {
    let mut parts: Vec<&str> = net0
        .split(',')
        .filter(|kv| !kv.starts_with("firewall="))
        .collect();
    parts.push("firewall=1");
    parts.join(",")
}

/// Converge one container: net0, ipfilter set, rules, options. Also the entry
/// point for rollouts, for each green container before it starts.
fn converge_member(
    api: &dyn PveFirewall,
    cluster: &Cluster,
    t: &Guest<'_>,
    dry_run: bool,
) -> GuestOutcome {
    let mut out = GuestOutcome::default();
    if let Err(e) = member_steps(api, cluster, t, dry_run, &mut out) {
        out.error = Some(e.to_string());
    }
    out
}

fn member_steps(
    api: &dyn PveFirewall,
    cluster: &Cluster,
    t: &Guest<'_>,
    dry_run: bool,
    out: &mut GuestOutcome,
) -> Result<(), BackendError> {
    let plan = member_plan(cluster, t.member);
    let label = format!("CT {} ({})", t.vmid, t.member.slot);
    let node = t.member.node.as_str();
    let at = Scope::Ct { node, vmid: t.vmid };
    if !t.fresh {
        let (net0, digest) = api.ct_net0(node, t.vmid)?;
        let net0 = net0.ok_or_else(|| {
            BackendError::Other(anyhow::anyhow!(
                "{label} on {node} has no net0, so no firewall can filter it; it was not created by this haimg"
            ))
        })?;
        if !has_firewall(&net0) {
            api.set_ct_net0(node, t.vmid, &with_firewall(&net0), &digest)?;
            out.changes.push(format!(
                "{label}: net0 firewall=1 (a running container's interface is re-plugged: a short network interruption)"
            ));
        }
    }
    if let Some(set) = &plan.ipfilter {
        let existing = if t.absent {
            Vec::new()
        } else {
            api.ipsets(at)?
        };
        let now = if existing.iter().any(|n| n.name == set.name) {
            api.ipset_entries(at, &set.name)?
        } else {
            api.create_ipset(at, &set.name, &set.comment)?;
            out.changes
                .push(format!("{label}: ipset {} created", set.name));
            Vec::new()
        };
        sync_entries(
            api,
            at,
            set,
            &now,
            &mut out.changes,
            &format!("{label}: ipset {}", set.name),
        )?;
    }
    let list = RuleList::Ct { node, vmid: t.vmid };
    let now = if t.absent {
        Vec::new()
    } else {
        api.rules(list)?
    };
    sync_rules(
        api,
        list,
        std::slice::from_ref(&plan.rule),
        now,
        |r| {
            r.comment
                .as_deref()
                .is_some_and(|c| c.starts_with(RULE_MARK))
        },
        dry_run,
        &mut out.changes,
        &mut out.warnings,
        &label,
    )?;
    let now = if t.absent {
        Options::new()
    } else {
        api.options(at)?
    };
    let diff: Options = plan
        .options
        .iter()
        .filter(|(k, v)| now.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !diff.is_empty() {
        api.set_options(at, &diff)?;
        let shown: Vec<String> = diff.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.changes
            .push(format!("{label}: options {}", shown.join(" ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Cluster {
        haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster
    }

    /// The datacenter objects of the seed's cluster, as `cluster.fw` would hold them.
    #[test]
    fn seed_datacenter_plan() {
        let c = seed();
        let plan = datacenter_plan(&c, &policy::derive(&c));
        insta::assert_snapshot!(render(&plan));
        // Every IP set a rule names exists, and every name fits Proxmox's limits.
        for g in &plan.groups {
            assert!(g.name.len() <= MAX_GROUP_NAME, "{}", g.name);
            for r in &g.rules {
                for s in [&r.source, &r.dest].into_iter().flatten() {
                    let name = s.strip_prefix('+').unwrap();
                    assert!(plan.ipsets.iter().any(|i| i.name == name), "{name}");
                }
            }
        }
    }

    #[test]
    fn lb_members_keep_the_vip_through_ipfilter() {
        let c = seed();
        let lb = &c.lb.members[1];
        let p = member_plan(&c, lb);
        let set = p.ipfilter.expect("lb members get ipfilter-net0");
        let cidrs: Vec<&str> = set.entries.iter().map(|e| e.cidr.as_str()).collect();
        assert_eq!(cidrs, ["192.168.30.101", "192.168.30.200"]);
        assert_eq!(p.rule.text(), "GROUP haimg-lb # haimg: lb tier policy");
        assert!(member_plan(&c, &c.mongo.members[0]).ipfilter.is_none());
    }

    #[test]
    fn tls_adds_443_to_the_lb_group() {
        let text = haimg_model::DEFAULT_SPEC.replace(
            "      listen_port: 80\n",
            "      listen_port: 80\n      tls: { certificate: /etc/haimg/tls.crt, certificate_key: /etc/haimg/tls.key }\n",
        );
        let c = haimg_model::spec::parse_yaml(&text).unwrap().cluster;
        let plan = datacenter_plan(&c, &policy::derive(&c));
        let lb = plan.groups.iter().find(|g| g.role == Role::Lb).unwrap();
        let texts: Vec<String> = lb.rules.iter().map(Rule::text).collect();
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("IN ACCEPT -dest +haimg-vip -p tcp -dport 443")),
            "{texts:#?}"
        );
    }

    #[test]
    fn names_fit_proxmox_limits() {
        assert_eq!(prefix("haimg"), "haimg");
        assert_eq!(prefix("Prod"), "prod");
        let long = prefix("production-cluster");
        assert_eq!(long.len(), 11);
        assert!(long.starts_with('h'));
        assert_eq!(long, prefix("production-cluster"), "stable");
        assert_ne!(long, prefix("production-cluster2"));
        assert!(
            prefix("1st").starts_with('h'),
            "a group name starts with a letter"
        );
    }

    #[test]
    fn net0_firewall_flag() {
        let n = "name=eth0,bridge=vmbr0,hwaddr=02:00:00:00:00:01,ip=192.168.30.100/24,type=veth";
        assert!(!has_firewall(n));
        assert!(has_firewall(&with_firewall(n)));
        assert_eq!(
            with_firewall("name=eth0,firewall=0,bridge=vmbr0"),
            "name=eth0,bridge=vmbr0,firewall=1"
        );
    }
}
