//! The rollout (or rollback) plan: which slots swap, in which order, from which
//! member to which, and every step each slot will take.
//!
//! Order, one slot at a time so no tier ever has two members down: slots a
//! killed run left mid-swap first (they may be down), then the mongo
//! tier (secondaries, then the primary, which steps down before its
//! shutdown), then webapp (spec order), then lb (backups by rising priority,
//! the VRRP master last). Data tier first because a new app may rely on the
//! new database image but not the other way round; the entry tier last so
//! the VIP moves as few times as possible.
//!
//! Generations: every rollout gets a number `n` (one more than any the
//! cluster has seen) and an `id` naming its target (version and the three
//! template hashes). A deploy that finds members of its own target id
//! resumes that rollout's generation instead of starting a new one, so
//! `haimg rollback` later reverts exactly the slots that rollout swapped.

use std::collections::BTreeMap;

use haimg_model::{Cluster, Member, Role};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::gate::HealthGate;
use super::machine::{simulate, Goal, Step, Want};
use crate::fleet::members;
use crate::fleet::slot::{need, Ct, Need, SlotView};
use crate::fleet::tags::{Gen, State};
use crate::fleet::templates::LocalTemplate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Rollout,
    Rollback,
}

/// One member as the plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Brief {
    pub vmid: u32,
    pub version: String,
    pub template: String,
    /// `false` for a green the rollout will create.
    pub exists: bool,
    pub running: bool,
    pub gen: u32,
}

impl Brief {
    fn of(c: &Ct) -> Brief {
        Brief {
            vmid: c.vmid,
            version: c.version().to_string(),
            template: c.template().to_string(),
            exists: true,
            running: c.running,
            gen: c.gen(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotPlan {
    /// 1-based position in the rollout.
    pub order: usize,
    pub slot: String,
    pub role: Role,
    pub node: String,
    /// The member serving now (the live one).
    pub blue: Brief,
    /// The member that will serve.
    pub green: Brief,
    pub note: String,
    /// Left mid-swap by a killed run: goes first, since its slot may be down.
    pub interrupted: bool,
    pub steps: Vec<Step>,
    #[serde(skip)]
    pub goal: Goal,
    #[serde(skip)]
    pub member: Member,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockedSlot {
    pub slot: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub kind: Kind,
    pub cluster: String,
    /// Versions served now by the slots that change.
    pub from: Vec<String>,
    /// Versions they will serve.
    pub to: Vec<String>,
    /// The rollout's generation (deploy) or the one being undone (rollback).
    pub gen: Option<u32>,
    pub slots: Vec<SlotPlan>,
    pub blocked: Vec<BlockedSlot>,
    /// Why the plan cannot be carried out as a whole (e.g. the mongo order is unknown).
    pub refusal: Option<String>,
    /// Why there is nothing to do, when there is nothing.
    pub nothing: Option<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// What a deploy rolls out: version, template per role, generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    pub version: String,
    pub templates: BTreeMap<Role, String>,
    pub gen: Gen,
}

/// 8 hex digits naming a target (version + the three short template hashes).
pub fn target_id(version: &str, templates: &BTreeMap<Role, String>) -> String {
    let mut h = Sha256::new();
    h.update(b"haimg-rollout\0");
    h.update(version.as_bytes());
    for r in Role::ALL {
        h.update(b"\0");
        h.update(
            templates
                .get(&r)
                .map(String::as_str)
                .unwrap_or("")
                .as_bytes(),
        );
    }
    h.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Release {
    /// The generation continues a rollout to the same target, else is one past
    /// every generation the cluster has seen.
    pub fn new(
        cluster: &Cluster,
        templates: &BTreeMap<Role, LocalTemplate>,
        views: &[SlotView],
    ) -> Release {
        let tpl: BTreeMap<Role, String> = templates
            .iter()
            .map(|(r, t)| (*r, t.short_hash().to_string()))
            .collect();
        // A rotated secret is a new target too (same templates, new `sec-` tags).
        let with_secrets: BTreeMap<Role, String> = templates
            .iter()
            .map(|(r, t)| match &t.secrets.fingerprint {
                Some(fp) => (*r, format!("{}/{fp}", t.short_hash())),
                None => (*r, t.short_hash().to_string()),
            })
            .collect();
        let id = target_id(&cluster.version, &with_secrets);
        let cts = || views.iter().flat_map(SlotView::cts);
        let n = cts()
            .filter(|c| c.gen_id() == Some(id.as_str()))
            .map(Ct::gen)
            .max()
            .unwrap_or_else(|| cts().map(Ct::gen).max().unwrap_or(0) + 1);
        Release {
            version: cluster.version.clone(),
            templates: tpl,
            gen: Gen { n, id: Some(id) },
        }
    }

    /// The tags a new green of `member` carries.
    pub fn want(&self, cluster: &Cluster, member: &Member, local: &LocalTemplate) -> Want {
        let mut tags = members::member_tags(cluster, member, local);
        tags.state = Some(State::Standby);
        tags.gen = Some(self.gen.clone());
        Want { tags }
    }
}

/// The plan of `haimg deploy` when members run something else than the spec.
/// `gate` is asked for the mongo primary when mongo slots change.
pub fn for_deploy(
    cluster: &Cluster,
    views: &[SlotView],
    templates: &BTreeMap<Role, LocalTemplate>,
    gate: &dyn HealthGate,
) -> Plan {
    let release = Release::new(cluster, templates, views);
    let mut slots = Vec::new();
    let mut blocked = Vec::new();
    for v in views {
        let m = &v.member;
        let local = &templates[&m.role];
        let plain = members::member_tags(cluster, m, local);
        let Need::Rollout(why) = need(v, &plain) else {
            continue;
        };
        if let Some(p) = &v.problem {
            blocked.push(BlockedSlot {
                slot: m.slot.clone(),
                reason: format!("{why}; {p}"),
            });
            continue;
        }
        let goal = Goal::Template(release.want(cluster, m, local));
        match simulate(v, &goal) {
            Err(reason) => blocked.push(BlockedSlot {
                slot: m.slot.clone(),
                reason,
            }),
            Ok(steps) if steps.is_empty() => {}
            Ok(steps) => {
                let green = green_brief(v, &steps, &release, &m.role);
                let note = deploy_note(v, &steps);
                slots.push(slot_plan(v, steps, goal, green, note));
            }
        }
    }
    let mut plan = finish(cluster, Kind::Rollout, slots, blocked, gate);
    plan.gen = Some(release.gen.n);
    if plan.slots.is_empty() && plan.nothing.is_none() {
        plan.nothing = Some("every member runs the spec's templates".into());
    }
    plan
}

/// The plan of `haimg rollback`: slots swapped by the latest generation go back
/// to their standby; slots left mid-swap by a killed run go back to rest.
pub fn for_rollback(cluster: &Cluster, views: &[SlotView], gate: &dyn HealthGate) -> Plan {
    let latest = views
        .iter()
        .flat_map(SlotView::cts)
        .map(Ct::gen)
        .max()
        .unwrap_or(0);
    let mut slots = Vec::new();
    let mut blocked = Vec::new();
    for v in views {
        if v.is_empty() {
            continue;
        }
        if let Some(p) = &v.problem {
            blocked.push(BlockedSlot {
                slot: v.slot().to_string(),
                reason: p.clone(),
            });
            continue;
        }
        let Some(live) = v.live() else { continue };
        // The latest rollout's members go back to their older partner; any
        // other slot goes (back) to rest on its live member.
        let target = match v.other_of(live.vmid) {
            Some(o) if live.gen() == latest && o.gen() < live.gen() => o,
            _ => live,
        };
        let vmid = target.vmid;
        let goal = Goal::Container { vmid };
        let note = if vmid == live.vmid {
            "interrupted: back to the live member".to_string()
        } else if !v.at_rest() {
            "interrupted swap, undone".to_string()
        } else {
            String::new()
        };
        match simulate(v, &goal) {
            Err(reason) => blocked.push(BlockedSlot {
                slot: v.slot().to_string(),
                reason,
            }),
            Ok(steps) if steps.is_empty() => {}
            Ok(steps) => {
                let green = v
                    .get(vmid)
                    .map(Brief::of)
                    .unwrap_or_else(|| Brief::of(live));
                slots.push(slot_plan(v, steps, goal, green, note));
            }
        }
    }
    let mut plan = finish(cluster, Kind::Rollback, slots, blocked, gate);
    plan.gen = Some(latest);
    if plan.slots.is_empty() && plan.nothing.is_none() {
        plan.nothing = Some(if latest == 0 {
            "no rollout has happened: there is no standby to go back to".into()
        } else if views
            .iter()
            .filter_map(SlotView::live)
            .any(|l| l.gen() == latest)
        {
            format!(
                "the members of generation {latest} have no older standby (removed by `haimg gc`?)"
            )
        } else {
            format!(
                "the latest rollout (generation {latest}) is not live on any member: it was rolled back, or failed its health gate and undid itself"
            )
        });
    }
    plan
}

fn green_brief(v: &SlotView, steps: &[Step], t: &Release, role: &Role) -> Brief {
    let tpl = t.templates.get(role).cloned().unwrap_or_default();
    if let Some(Step::Create { vmid }) = steps.iter().find(|s| matches!(s, Step::Create { .. })) {
        return Brief {
            vmid: *vmid,
            version: t.version.clone(),
            template: tpl,
            exists: false,
            running: false,
            gen: t.gen.n,
        };
    }
    // Invariant: a planned slot has a live member.
    v.cts()
        .find(|c| c.version() == t.version && c.template() == tpl)
        .or_else(|| v.live())
        .map(Brief::of)
        .unwrap_or_else(|| Brief {
            vmid: 0,
            version: t.version.clone(),
            template: tpl,
            exists: false,
            running: false,
            gen: t.gen.n,
        })
}

fn deploy_note(v: &SlotView, steps: &[Step]) -> String {
    if !v.at_rest() {
        return "resumes an interrupted swap".into();
    }
    if let Some(Step::Destroy { vmid }) = steps.first() {
        let ver = v.get(*vmid).map(Ct::version).unwrap_or("?");
        return format!("replaces standby CT {vmid} ({ver})");
    }
    if !steps.iter().any(|s| matches!(s, Step::Create { .. })) {
        if let Some(s) = v.standby() {
            return format!("reuses standby CT {}", s.vmid);
        }
    }
    String::new()
}

fn slot_plan(v: &SlotView, steps: Vec<Step>, goal: Goal, green: Brief, note: String) -> SlotPlan {
    let m = &v.member;
    // Invariant: only slots with a live member are planned.
    let blue = v.live().map(Brief::of).unwrap_or_else(|| green.clone());
    SlotPlan {
        order: 0,
        slot: m.slot.clone(),
        role: m.role,
        node: m.node.clone(),
        blue,
        green,
        note,
        interrupted: !v.at_rest(),
        steps,
        goal,
        member: m.clone(),
    }
}

/// Order the slots, add role notes, and find out whether the plan can run.
fn finish(
    cluster: &Cluster,
    kind: Kind,
    mut slots: Vec<SlotPlan>,
    blocked: Vec<BlockedSlot>,
    gate: &dyn HealthGate,
) -> Plan {
    let mut refusal = None;
    let mut primary = None;
    if slots.iter().any(|s| s.role.elects_primary()) {
        match gate.mongo_primary(cluster) {
            Ok(Some(p)) => primary = Some(p),
            Ok(None) => {
                refusal = Some(
                    "mongo tier: no member is PRIMARY; swapping members now could lose writes: let the replica set elect a primary first"
                        .to_string(),
                )
            }
            Err(e) => refusal = Some(format!("mongo tier: cannot find the primary: {e}")),
        }
    }
    // Interrupted slots first: they may be down, and every other slot's
    // swap needs the rest of its tier up.
    // Within a tier: the primary last, the VRRP master last (backups by
    // rising priority), else spec order.
    let key = |s: &SlotPlan| -> (bool, u8, u32, usize) {
        let within = match s.role {
            Role::Mongo => u32::from(primary.as_deref() == Some(s.slot.as_str())),
            Role::Webapp => 0,
            Role::Lb if cluster.lb.keepalived.master == s.slot => 1000,
            Role::Lb => u32::from(cluster.lb_priority(&s.member).unwrap_or(0)),
        };
        (
            !s.interrupted,
            s.role.rollout_rank(),
            within,
            s.member.index,
        )
    };
    slots.sort_by_key(key);
    for (i, s) in slots.iter_mut().enumerate() {
        s.order = i + 1;
        let role_note = match s.role {
            Role::Lb if cluster.lb.keepalived.master == s.slot => "VRRP master".to_string(),
            Role::Lb => "backup".to_string(),
            Role::Mongo if primary.as_deref() == Some(s.slot.as_str()) => {
                "primary: steps down first".to_string()
            }
            Role::Mongo if primary.is_some() => "secondary".to_string(),
            Role::Mongo => "primary unknown".to_string(),
            Role::Webapp => String::new(),
        };
        s.note = [role_note, std::mem::take(&mut s.note)]
            .into_iter()
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
    }
    let mut from: Vec<String> = slots.iter().map(|s| s.blue.version.clone()).collect();
    from.sort();
    from.dedup();
    let mut to: Vec<String> = slots.iter().map(|s| s.green.version.clone()).collect();
    to.sort();
    to.dedup();
    Plan {
        kind,
        cluster: cluster.name.clone(),
        from,
        to,
        gen: None,
        slots,
        blocked,
        refusal,
        nothing: None,
    }
}
