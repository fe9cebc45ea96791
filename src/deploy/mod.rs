//! `haimg deploy`, written once against [`Backend`].
//!
//! Converges the target to the spec: every member exists on its node, carries
//! the tags of the current template, and runs. Steps:
//! 1. one inventory call: which VMIDs exist, where, with which tags;
//! 2. classify each slot: create, start, unchanged, blocked (VMID held by a
//!    foreign guest, member on another node), or rollout: a member of another
//!    template, or a slot left mid-swap, is replaced blue/green by
//!    [`crate::rollout`], never here (the slot is reported, not touched);
//! 3. upload the templates the creates need, once per shared storage or once
//!    per node otherwise; an upload whose content hash is already stored is skipped;
//! 4. per node, in parallel across nodes and in spec order within a node:
//!    create stopped (`start=0`), then start;
//! 5. the network policy on the target's firewall ([`firewall`], Proxmox only).
//!
//! A failure of one member does not stop the others; the report lists each.
//! Run twice, the second run changes nothing. Dry-run goes through the same
//! path; the backend records instead of sending.

pub mod firewall;
pub mod members;
pub mod tags;
pub mod templates;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use haimg_model::{Cluster, Member, Role};
use serde::Serialize;

use self::tags::MemberTags;
use self::templates::LocalTemplate;
use crate::backend::{Backend, BackendError, ContainerStatus, StoredTemplate};
use crate::rollout::slot::{need, Need, SlotView};

/// What happened (or, in dry-run, would happen) to one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "detail")]
pub enum Action {
    /// Created stopped and started.
    Created,
    /// Existed stopped; started.
    Started,
    Unchanged,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadReport {
    pub role: Role,
    /// The node the upload went to (for shared storage, the one of all).
    pub node: String,
    pub volid: String,
    /// Whether the storage is shared by every node.
    pub shared: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub members: Vec<MemberReport>,
    pub uploads: Vec<UploadReport>,
    /// The network policy on Proxmox's firewall; `None` where not enforced that way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewall: Option<firewall::FirewallReport>,
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

/// The deploy could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("failed to read the target's inventory: {0}")]
    Inventory(#[source] BackendError),
    #[error("failed to read the target's capabilities: {0}")]
    Capabilities(#[source] BackendError),
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

/// Converge the target to `cluster`, using the built `templates`.
pub fn deploy<B: Backend + Sync + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    templates: &BTreeMap<Role, LocalTemplate>,
    dry_run: bool,
) -> Result<Report, DeployError> {
    let inventory = backend.inventory().map_err(DeployError::Inventory)?;
    deploy_with_inventory(backend, cluster, templates, dry_run, inventory)
}

/// [`deploy`] from an inventory the caller already read (the CLI reads it
/// once for the rollout plan and the converge).
pub fn deploy_with_inventory<B: Backend + Sync + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    templates: &BTreeMap<Role, LocalTemplate>,
    dry_run: bool,
    inventory: Vec<ContainerStatus>,
) -> Result<Report, DeployError> {
    let started = Instant::now();

    // Keyed by the spec's VMID (one report per slot).
    let mut reports: BTreeMap<u32, MemberReport> = BTreeMap::new();
    let mut todo: Vec<(&Member, Todo)> = Vec::new();
    for m in cluster.members() {
        let want = members::member_tags(cluster, m, &templates[&m.role]);
        let mut vmid = SlotView::from_inventory(cluster, m, &inventory)
            .live()
            .map_or(m.vmid, |l| l.vmid);
        let action = match classify(cluster, m, &want, &inventory) {
            Ok(Some(t)) => {
                todo.push((m, t));
                continue;
            }
            Ok(None) => Action::Unchanged,
            Err(a) => {
                if matches!(a, Action::Blocked(_)) {
                    vmid = m.vmid;
                }
                leftover_or(backend, m, &inventory, a)
            }
        };
        let mut r = report(m, action);
        r.vmid = vmid;
        reports.insert(m.vmid, r);
    }

    let creates: Vec<&Member> = todo
        .iter()
        .filter(|(_, t)| *t == Todo::Create)
        .map(|(m, _)| *m)
        .collect();
    let mut uploads = Vec::new();
    let mut stored: BTreeMap<(String, Role), Result<StoredTemplate, String>> = BTreeMap::new();
    let caps = if creates.is_empty() {
        None
    } else {
        Some(backend.capabilities().map_err(DeployError::Capabilities)?)
    };
    if !creates.is_empty() {
        let (s, u) = upload_phase(backend, cluster, templates, &creates);
        stored = s;
        uploads = u;
    }

    // Per node, in parallel; within a node in spec order.
    let mut per_node: BTreeMap<&str, Vec<(&Member, Todo)>> = BTreeMap::new();
    for (m, t) in &todo {
        per_node.entry(m.node.as_str()).or_default().push((m, *t));
    }
    let results: Vec<MemberReport> = per_group(&per_node, |_, (m, t)| {
        let action = match t {
            Todo::Start(vmid) => match backend.start(&m.node, *vmid) {
                Ok(()) => Action::Started,
                Err(e) => Action::Failed(e.to_string()),
            },
            Todo::Create => match &stored[&(m.node.clone(), m.role)] {
                Err(e) => Action::Failed(format!("template upload failed: {e}")),
                Ok(st) => {
                    // Invariant: caps is Some whenever a create is planned.
                    let caps = caps.unwrap_or(crate::backend::Capabilities {
                        env: false,
                        entrypoint: false,
                        host_managed: false,
                    });
                    let spec = members::container_spec(cluster, m, &templates[&m.role], st, caps);
                    match backend
                        .create(&spec)
                        .and_then(|()| backend.start(&m.node, m.vmid))
                    {
                        Ok(()) => Action::Created,
                        Err(e) => Action::Failed(e.to_string()),
                    }
                }
            },
        };
        let mut r = report(m, action);
        if let Todo::Start(vmid) = t {
            r.vmid = *vmid;
        }
        r
    });
    for r in results {
        if let Some(m) = cluster.member_by_slot(&r.slot) {
            reports.insert(m.vmid, r);
        }
    }
    // Report in spec order.
    let members: Vec<MemberReport> = cluster
        .members()
        .filter_map(|m| reports.remove(&m.vmid))
        .collect();
    let firewall = firewall::step(backend, cluster, &members, dry_run);
    Ok(Report {
        dry_run,
        members,
        uploads,
        firewall,
        elapsed_ms: started.elapsed().as_millis(),
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

fn report(m: &Member, action: Action) -> MemberReport {
    MemberReport {
        slot: m.slot.clone(),
        role: m.role,
        vmid: m.vmid,
        node: m.node.clone(),
        action,
    }
}

pub(crate) type Stored = BTreeMap<(String, Role), Result<StoredTemplate, String>>;

/// Upload what the creates need; returns the stored template per (node, role).
/// Rollouts use it too, before their first slot.
pub(crate) fn upload_phase<B: Backend + Sync + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    templates: &BTreeMap<Role, LocalTemplate>,
    creates: &[&Member],
) -> (Stored, Vec<UploadReport>) {
    // Which roles each node needs, nodes in proxmox.nodes order.
    let order = |n: &str| {
        cluster
            .proxmox
            .nodes
            .iter()
            .position(|x| x == n)
            .unwrap_or(usize::MAX)
    };
    let mut needs: BTreeMap<(usize, String), BTreeSet<Role>> = BTreeMap::new();
    for m in creates {
        needs
            .entry((order(&m.node), m.node.clone()))
            .or_default()
            .insert(m.role);
    }
    let mut stored: Stored = BTreeMap::new();
    // Shared storage: the first node that needs a role uploads it for all.
    let mut jobs: BTreeMap<String, Vec<Role>> = BTreeMap::new();
    let mut shared_done: BTreeMap<Role, String> = BTreeMap::new();
    let mut shared_of: BTreeMap<String, bool> = BTreeMap::new();
    for ((_, node), roles) in &needs {
        let shared = match backend.template_storage_shared(node) {
            Ok(s) => s,
            Err(e) => {
                for r in roles {
                    stored.insert((node.clone(), *r), Err(e.to_string()));
                }
                continue;
            }
        };
        shared_of.insert(node.clone(), shared);
        for r in roles {
            if shared {
                if let Some(first) = shared_done.get(r) {
                    if first != node {
                        continue; // filled in from `first` below
                    }
                }
                shared_done.insert(*r, node.clone());
            }
            jobs.entry(node.clone()).or_default().push(*r);
        }
    }
    let done: Vec<(String, Role, Result<StoredTemplate, String>)> = per_group(&jobs, |node, r| {
        let t = &templates[r];
        let res = backend
            .upload_template(node, &t.path, &t.sha256)
            .map_err(|e| e.to_string());
        (node.clone(), *r, res)
    });
    let mut uploads = Vec::new();
    for (node, role, res) in done {
        let shared = shared_of.get(&node).copied().unwrap_or(false);
        if let Ok(t) = &res {
            uploads.push(UploadReport {
                role,
                node: node.clone(),
                volid: t.volid.clone(),
                shared,
            });
        }
        stored.insert((node, role), res);
    }
    // Nodes on shared storage use the upload made through another node.
    for ((_, node), roles) in &needs {
        for r in roles {
            if stored.contains_key(&(node.clone(), *r)) {
                continue;
            }
            let via = shared_done.get(r).cloned().unwrap_or_default();
            let res = stored
                .get(&(via.clone(), *r))
                .cloned()
                .unwrap_or_else(|| Err(format!("no upload of the {r} template through {via}")));
            stored.insert((node.clone(), *r), res);
        }
    }
    (stored, uploads)
}

/// `f` over every item of every group, one thread per group (a Proxmox node:
/// its calls in order, the nodes side by side); the results group by group,
/// each in item order. A panic in `f` is resumed in the caller.
pub(crate) fn per_group<K, T, R, F>(groups: &BTreeMap<K, Vec<T>>, f: F) -> Vec<R>
where
    K: Sync,
    T: Sync,
    R: Send,
    F: Fn(&K, &T) -> R + Sync,
{
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = groups
            .iter()
            .map(|(k, items)| s.spawn(move || items.iter().map(|t| f(k, t)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}
