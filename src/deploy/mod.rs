//! The converge half of `haimg deploy`, written once against [`Backend`], in
//! two phases like everything `crate::orchestrate` runs.
//!
//! [`plan`] (pure, from one inventory) classifies each slot: create, start,
//! unchanged, blocked (VMID held by a foreign guest, member on another node),
//! or left to the rollout: a member of another template, or a slot left
//! mid-swap, is replaced blue/green by `crate::rollout`, never here (the slot
//! is reported, not touched). [`execute`] then:
//! 1. uploads the templates the creates need ([`crate::fleet::upload`]);
//! 2. per node, in parallel across nodes and in spec order within a node:
//!    creates stopped (`start=0`) and reconfigures in place;
//! 3. enforces the network policy on every member ([`Backend::enforce_policy`]:
//!    Proxmox's firewall, or nftables on the local bridge);
//! 4. starts the created and the stopped members, so none ever runs before
//!    its policy is in place. When the policy reports an error, nothing starts.
//!
//! A failure of one member does not stop the others; the report lists each.
//! Run twice, the second run changes nothing. Dry-run goes through the same
//! path; the backend records instead of sending. A [`Plan`] is a list of
//! per-member changes so that more kinds (configuration drift converged in
//! place) are new [`Change`] variants, not new code paths.

use std::collections::BTreeMap;
use std::time::Instant;

use haimg_model::{Cluster, Member, Role};
use serde::Serialize;

use crate::backend::{
    Backend, BackendError, Capabilities, ContainerSpec, ContainerStatus, Drift, Guest, Policy,
    PolicyReport, StoredTemplate, Switch,
};
use crate::fleet::members;
use crate::fleet::slot::{need, Need, SlotView};
use crate::fleet::tags::MemberTags;
use crate::fleet::templates::LocalTemplate;
use crate::fleet::upload::{self, UploadReport};

/// What happened (or, in dry-run, would happen) to one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "detail")]
pub enum Action {
    /// Created stopped and started.
    Created,
    /// Existed stopped; started.
    Started,
    Unchanged,
    /// Settings differed from the spec (changed by hand): those changeable in
    /// place were changed, the others need a swap (each drift says which).
    Reconfigured(Vec<Drift>),
    /// Not touched here: a blue/green rollout replaces it (see `crate::rollout`).
    Rollout(String),
    /// Not touched: the target holds something haimg must not change on its own.
    Blocked(String),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberReport {
    pub slot: String,
    pub role: Role,
    pub vmid: u32,
    pub node: String,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub members: Vec<MemberReport>,
    pub uploads: Vec<UploadReport>,
    /// The network policy; `None` where the target does not enforce one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewall: Option<PolicyReport>,
    pub elapsed_ms: u128,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.members
            .iter()
            .all(|m| !matches!(m.action, Action::Blocked(_) | Action::Failed(_)))
            && self.firewall.as_ref().is_none_or(|f| f.ok())
    }

    /// Slots a rollout has to swap.
    pub fn rollouts(&self) -> usize {
        self.count(|a| matches!(a, Action::Rollout(_)))
    }

    pub fn count(&self, f: impl Fn(&Action) -> bool) -> usize {
        self.members.iter().filter(|m| f(&m.action)).count()
    }
}

/// The converge could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("failed to read the target's capabilities: {0}")]
    Capabilities(BackendError),
}

/// What [`execute`] will do to each member: computed from one inventory,
/// changing nothing.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub dry_run: bool,
    /// One per member, in spec order.
    pub members: Vec<MemberPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberPlan {
    #[serde(skip)]
    pub member: Member,
    pub slot: String,
    /// The container acted on or reported: the slot's live one, else the spec's VMID.
    pub vmid: u32,
    #[serde(flatten)]
    pub change: Change,
    /// The existing container's spec, for a [`Change::Reconfigure`].
    #[serde(skip)]
    pub spec: Option<Box<ContainerSpec>>,
}

/// One member's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "change", content = "detail")]
pub enum Change {
    /// Create stopped, then start.
    Create,
    /// Start the slot's live member.
    Start,
    /// Change the live member's drifted settings in place (`PUT …/config`);
    /// drift that cannot change in place is only reported (needs a swap).
    Reconfigure(Vec<Drift>),
    /// Nothing here; the action says why (unchanged, a rollout's, blocked).
    Leave(Action),
}

impl Plan {
    /// Whether executing it changes something on the target.
    pub fn changes_anything(&self) -> bool {
        self.members.iter().any(|m| match &m.change {
            Change::Create | Change::Start => true,
            Change::Reconfigure(d) => d.iter().any(|d| d.in_place),
            Change::Leave(_) => false,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Todo {
    Create,
    /// Start this VMID (the slot's live member).
    Start(u32),
}

/// Decide what a slot needs, given what holds its two VMIDs.
fn classify(
    cluster: &Cluster,
    m: &Member,
    want: &MemberTags,
    inventory: &[ContainerStatus],
) -> Result<Option<Todo>, Action> {
    let view = SlotView::from_inventory(cluster, m, inventory);
    let Some(ct) = inventory.iter().find(|c| c.vmid == m.vmid) else {
        return slot_need(m, &view, want);
    };
    let Some(have) = MemberTags::parse(&ct.tags) else {
        return Err(Action::Blocked(format!(
            "VMID {} is held by guest {:?} on {} that haimg did not create (no 'haimg' tag); free the VMID or change the member's vmid in the spec",
            m.vmid, ct.name, ct.node
        )));
    };
    if have.cluster.as_deref() != Some(cluster.name.as_str())
        || have.slot.as_deref() != Some(m.slot.as_str())
    {
        return Err(Action::Blocked(format!(
            "CT {} belongs to cluster {:?} slot {:?}, not {} slot {}; free the VMID or change the spec",
            m.vmid,
            have.cluster.as_deref().unwrap_or("?"),
            have.slot.as_deref().unwrap_or("?"),
            cluster.name,
            m.slot
        )));
    }
    if ct.node != m.node {
        return Err(Action::Blocked(format!(
            "CT {} runs on node {}, the spec places it on {}; haimg does not migrate containers: move it in Proxmox or change the spec",
            m.vmid, ct.node, m.node
        )));
    }
    slot_need(m, &view, want)
}

/// What the slot's members need (the spec's VMID is empty or this slot's own).
fn slot_need(m: &Member, view: &SlotView, want: &MemberTags) -> Result<Option<Todo>, Action> {
    if let Some(alt) = view.alt.as_ref().filter(|c| c.node != m.node) {
        return Err(Action::Blocked(format!(
            "CT {} runs on node {}, the spec places it on {}; haimg does not migrate containers: move it in Proxmox or change the spec",
            alt.vmid, alt.node, m.node
        )));
    }
    match need(view, want) {
        Need::Create => Ok(Some(Todo::Create)),
        Need::Start(vmid) => Ok(Some(Todo::Start(vmid))),
        Need::Unchanged => Ok(None),
        Need::Rollout(why) => Err(Action::Rollout(why)),
    }
}

/// What converging the target to `cluster` with the built `templates` takes,
/// from `inventory` (one read of the target; a VMID held by an untagged
/// guest is asked whether it is a failed create's leftover).
pub fn plan<B: Backend + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    templates: &BTreeMap<Role, LocalTemplate>,
    inventory: &[ContainerStatus],
    dry_run: bool,
) -> Plan {
    let caps = std::sync::OnceLock::new();
    let members = cluster
        .members()
        .map(|m| {
            let want = members::member_tags(cluster, m, &templates[&m.role]);
            let view = SlotView::from_inventory(cluster, m, inventory);
            let live = view.live().map_or(m.vmid, |l| l.vmid);
            let mut spec = None;
            let (vmid, change) = match classify(cluster, m, &want, inventory) {
                Ok(Some(Todo::Create)) => (m.vmid, Change::Create),
                Ok(Some(Todo::Start(vmid))) => (vmid, Change::Start),
                Ok(None) => {
                    let have = view.live().map(|l| l.tags.clone()).unwrap_or_default();
                    let s = live_spec(backend, cluster, m, &templates[&m.role], &caps, live, &have);
                    let change = match s
                        .as_ref()
                        .map_err(ToString::to_string)
                        .and_then(|s| backend.drift(s).map_err(|e| e.to_string()))
                    {
                        Ok(d) if d.is_empty() => Change::Leave(Action::Unchanged),
                        Ok(d) => Change::Reconfigure(d),
                        Err(e) => Change::Leave(Action::Failed(format!(
                            "failed to compare CT {live} with the spec: {e}"
                        ))),
                    };
                    spec = s.ok().map(Box::new);
                    (live, change)
                }
                Err(a @ Action::Blocked(_)) => {
                    (m.vmid, Change::Leave(leftover_or(backend, m, inventory, a)))
                }
                Err(a) => (live, Change::Leave(a)),
            };
            MemberPlan {
                member: m.clone(),
                slot: m.slot.clone(),
                vmid,
                change,
                spec,
            }
        })
        .collect();
    Plan {
        dry_run,
        members: refuse_exposed_mongo(backend, cluster, members),
    }
}

/// A mongo member is not created or started where the network policy will
/// not be enforced (Proxmox's datacenter firewall off and not to be turned
/// on), unless the spec says `proxmox.firewall.allow_insecure_mongo: true`:
/// MongoDB's authentication would then be all that keeps the network from
/// :27017. lb and webapp members go ahead; the policy step warns about them.
fn refuse_exposed_mongo<B: Backend + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    mut members: Vec<MemberPlan>,
) -> Vec<MemberPlan> {
    let starts = |p: &MemberPlan| {
        p.member.role == Role::Mongo && matches!(p.change, Change::Create | Change::Start)
    };
    if cluster.proxmox.firewall.allow_insecure_mongo || !members.iter().any(starts) {
        return members;
    }
    let why = match backend.policy_switch(cluster) {
        Ok(Switch::Off) => "refused: the datacenter firewall is off, so nothing but MongoDB's own \
             authentication would keep the network from :27017; turn it on (Datacenter > Firewall > \
             Options, or proxmox.firewall.datacenter: enable), or accept the risk with \
             proxmox.firewall.allow_insecure_mongo: true"
            .to_string(),
        Ok(_) => return members,
        Err(e) => format!(
            "refused: could not read whether the datacenter firewall is on ({e}); a mongo \
             member starts only where the network policy is enforced"
        ),
    };
    for p in members.iter_mut().filter(|p| starts(p)) {
        p.change = Change::Leave(Action::Blocked(why.clone()));
    }
    members
}

/// The spec an existing live member should match: the member's, at the
/// VMID it lives on, keeping the rollout's state and generation tags, and
/// starting at boot (it is live).
fn live_spec<B: Backend + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    m: &Member,
    local: &LocalTemplate,
    caps: &std::sync::OnceLock<Result<Capabilities, String>>,
    vmid: u32,
    have: &MemberTags,
) -> Result<ContainerSpec, String> {
    let caps = caps
        .get_or_init(|| backend.capabilities().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| format!("failed to read the target's capabilities: {e}"))?;
    let stored = StoredTemplate {
        volid: String::new(),
        filename: local.stored_name(),
        size: 0,
    };
    let mut spec = members::container_spec(cluster, m, local, &stored, caps);
    let mut tags = members::member_tags(cluster, m, local);
    tags.state = have.state;
    tags.gen = have.gen.clone();
    spec.vmid = vmid;
    spec.tags = tags.render();
    spec.onboot = true;
    Ok(spec)
}

/// Carry `plan` out: upload, create and start per node, enforce the policy.
pub fn execute<B: Backend + Sync + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    templates: &BTreeMap<Role, LocalTemplate>,
    plan: &Plan,
) -> Result<Report, DeployError> {
    let started = Instant::now();
    let dry_run = plan.dry_run;
    let creates: Vec<&Member> = plan
        .members
        .iter()
        .filter(|p| p.change == Change::Create)
        .map(|p| &p.member)
        .collect();
    let (caps, stored, uploads) = if creates.is_empty() {
        (None, BTreeMap::new(), Vec::new())
    } else {
        let caps = backend.capabilities().map_err(DeployError::Capabilities)?;
        let (stored, uploads) = upload::upload(backend, cluster, templates, &creates);
        (Some(caps), stored, uploads)
    };

    // Per node, in parallel; within a node in spec order.
    let mut per_node: BTreeMap<&str, Vec<&MemberPlan>> = BTreeMap::new();
    for p in plan
        .members
        .iter()
        .filter(|p| !matches!(p.change, Change::Leave(_)))
    {
        per_node.entry(p.member.node.as_str()).or_default().push(p);
    }
    // 1. Per node: create stopped, reconfigure in place. Nothing starts yet.
    let prepared: Vec<(String, Step)> = crate::backend::per_node(&per_node, |_, p| {
        let m = &p.member;
        let step = match &p.change {
            Change::Leave(a) => Step::Done(a.clone()),
            Change::Reconfigure(d) => match p.spec.as_deref() {
                None => Step::Done(Action::Failed("no spec to converge to".into())),
                Some(spec) => match backend.reconfigure(spec, d) {
                    Ok(()) => Step::Done(Action::Reconfigured(d.clone())),
                    Err(e) => Step::Done(Action::Failed(e.to_string())),
                },
            },
            Change::Start => Step::Start(Action::Started),
            Change::Create => match &stored[&(m.node.clone(), m.role)] {
                Err(e) => Step::Done(Action::Failed(format!("template upload failed: {e}"))),
                Ok(st) => {
                    // Invariant: caps is Some whenever a create is planned.
                    let caps = caps.unwrap_or(crate::backend::Capabilities {
                        env: false,
                        entrypoint: false,
                        host_managed: false,
                    });
                    let spec = members::container_spec(cluster, m, &templates[&m.role], st, caps);
                    match backend.create(&spec) {
                        Ok(()) => Step::Start(Action::Created),
                        Err(e) => Step::Done(Action::Failed(e.to_string())),
                    }
                }
            },
        };
        (p.slot.clone(), step)
    });
    let mut steps: BTreeMap<String, Step> = prepared.into_iter().collect();

    // 2. The network policy, before any member it covers starts: a member is
    // filtered from its first packet, never running unprotected in between.
    let firewall = enforce_policy(backend, cluster, &plan.members, &steps, dry_run);
    let blocked = firewall
        .as_ref()
        .and_then(|r| r.errors.first())
        .map(|e| format!("not started: the network policy is not in place ({e})"));

    // 3. Start, per node in spec order.
    let starts: BTreeMap<&str, Vec<&MemberPlan>> = per_node
        .iter()
        .map(|(node, ps)| {
            let ps = ps
                .iter()
                .copied()
                .filter(|p| matches!(steps.get(&p.slot), Some(Step::Start(_))))
                .collect();
            (*node, ps)
        })
        .collect();
    let start_results: Vec<(String, Action)> = crate::backend::per_node(&starts, |_, p| {
        let Some(Step::Start(then)) = steps.get(&p.slot) else {
            return (p.slot.clone(), Action::Failed("not carried out".into()));
        };
        let action = match &blocked {
            Some(why) => Action::Failed(why.clone()),
            None => match backend.start(&p.member.node, p.vmid) {
                Ok(()) => then.clone(),
                Err(e) => Action::Failed(e.to_string()),
            },
        };
        (p.slot.clone(), action)
    });
    for (slot, action) in start_results {
        steps.insert(slot, Step::Done(action));
    }
    // Report in spec order.
    let members: Vec<MemberReport> = plan
        .members
        .iter()
        .map(|p| match (&p.change, steps.remove(&p.slot)) {
            (_, Some(Step::Done(a))) => report(p, a),
            (Change::Leave(a), None) => report(p, a.clone()),
            _ => report(p, Action::Failed("not carried out".into())),
        })
        .collect();
    Ok(Report {
        dry_run,
        members,
        uploads,
        firewall,
        elapsed_ms: started.elapsed().as_millis(),
    })
}

/// Where a member stands between the phases of [`execute`].
enum Step {
    /// Finished, with this outcome.
    Done(Action),
    /// To be started after the policy; then reported as this.
    Start(Action),
}

/// The network policy on every member that runs (or is about to run) the
/// spec's template.
fn enforce_policy<B: Backend + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    plans: &[MemberPlan],
    steps: &BTreeMap<String, Step>,
    dry_run: bool,
) -> Option<PolicyReport> {
    let flows = haimg_model::policy::derive(cluster);
    let guest = |p: &MemberPlan, created: bool| {
        Some(Guest {
            member: cluster.member_by_slot(&p.slot)?,
            vmid: p.vmid,
            fresh: created,
            absent: created && dry_run,
        })
    };
    let guests = plans
        .iter()
        .filter_map(|p| {
            let done = match (steps.get(&p.slot), &p.change) {
                (Some(Step::Start(a)), _) => return guest(p, *a == Action::Created),
                (Some(Step::Done(a)), _) | (None, Change::Leave(a)) => a,
                (None, _) => return None,
            };
            matches!(done, Action::Unchanged | Action::Reconfigured(_))
                .then(|| guest(p, false))
                .flatten()
        })
        .collect();
    backend.enforce_policy(&Policy {
        cluster,
        flows: &flows,
        target_wide: true,
        guests,
        arp_owners: members::arp_owners(cluster),
    })
}

/// A VMID held by an untagged guest may be what a failed create left behind
/// (a config locked by the create, with no tags yet): say so, with the
/// commands that remove it, instead of calling it somebody else's guest.
fn leftover_or<B: Backend + ?Sized>(
    backend: &B,
    m: &Member,
    inventory: &[ContainerStatus],
    action: Action,
) -> Action {
    let Action::Blocked(why) = &action else {
        return action;
    };
    let Some(holder) = inventory.iter().find(|c| c.vmid == m.vmid) else {
        return action;
    };
    if MemberTags::parse(&holder.tags).is_some() {
        return action;
    }
    match backend.create_leftover(&holder.node, m.vmid) {
        Ok(Some(l)) => Action::Blocked(l.to_string()),
        Ok(None) => action,
        Err(e) => Action::Blocked(format!("{why} (could not check for a failed create: {e})")),
    }
}

fn report(p: &MemberPlan, action: Action) -> MemberReport {
    MemberReport {
        slot: p.slot.clone(),
        role: p.member.role,
        vmid: p.vmid,
        node: p.member.node.clone(),
        action,
    }
}
