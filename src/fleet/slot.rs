//! What the target holds for one slot, read from tags and power states alone.
//!
//! A slot owns two VMIDs: the spec's (`base`) and `base + green_vmid_offset`
//! (`alt`); rollouts alternate between them. [`SlotView`] is built from one
//! inventory call (plus, for mongo, which container holds `mp0`) and is the
//! only input of the step machine, so a rollout killed at any point is picked
//! up again by reading the target.
//!
//! Invariants: a container counts as this slot's only if its tags name this
//! cluster and slot; a guest at one of the two VMIDs that does not is a
//! problem the slot reports, never something haimg touches. A container
//! without a state tag (made by a plain deploy) counts as live.

use haimg_model::{Cluster, Member, Role};
use serde::Serialize;

use crate::backend::{Backend, BackendError, ContainerStatus, PowerState};
use crate::fleet::tags::{MemberTags, State};

/// One container of a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ct {
    pub vmid: u32,
    pub node: String,
    pub running: bool,
    pub tags: MemberTags,
    /// Mongo: holds the data volume (`mp0`). `None` when not asked (other roles).
    pub data: Option<bool>,
}

impl Ct {
    /// Tagged live, or untagged (a member of the first deploy).
    pub fn live_tagged(&self) -> bool {
        self.tags.state != Some(State::Standby)
    }

    /// Rollout generation (0 for the first deploy).
    pub fn gen(&self) -> u32 {
        self.tags.gen.as_ref().map_or(0, |g| g.n)
    }

    pub fn gen_id(&self) -> Option<&str> {
        self.tags.gen.as_ref().and_then(|g| g.id.as_deref())
    }

    pub fn version(&self) -> &str {
        self.tags.version.as_deref().unwrap_or("?")
    }

    pub fn template(&self) -> &str {
        self.tags.template.as_deref().unwrap_or("?")
    }
}

/// Everything the target holds for one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotView {
    pub member: Member,
    pub alt_vmid: u32,
    pub base: Option<Ct>,
    pub alt: Option<Ct>,
    /// Why haimg must not touch this slot (a foreign guest on one of its
    /// VMIDs, a member moved to another node).
    pub problem: Option<String>,
}

impl SlotView {
    /// Read one slot out of an inventory.
    pub fn from_inventory(
        cluster: &Cluster,
        member: &Member,
        inventory: &[ContainerStatus],
    ) -> SlotView {
        let alt_vmid = member.vmid + cluster.rollout.green_vmid_offset;
        let mut problem = None;
        let mut take = |vmid: u32, what: &str| -> Option<Ct> {
            let ct = inventory.iter().find(|c| c.vmid == vmid)?;
            let tags = MemberTags::parse(&ct.tags);
            let ours = tags.as_ref().is_some_and(|t| {
                t.cluster.as_deref() == Some(cluster.name.as_str())
                    && t.slot.as_deref() == Some(member.slot.as_str())
            });
            if !ours {
                problem.get_or_insert(format!(
                    "VMID {vmid} ({what} of slot {}) is held by guest {:?} on {} that is not this slot's member; free the VMID or change the spec",
                    member.slot, ct.name, ct.node
                ));
                return None;
            }
            if ct.node != member.node {
                problem.get_or_insert(format!(
                    "CT {vmid} runs on node {}, the spec places slot {} on {}; haimg does not migrate containers: move it in Proxmox or change the spec",
                    ct.node, member.slot, member.node
                ));
            }
            Some(Ct {
                vmid,
                node: ct.node.clone(),
                running: ct.state == PowerState::Running,
                tags: tags.unwrap_or_default(),
                data: None,
            })
        };
        let base = take(member.vmid, "the spec's VMID");
        let alt = take(alt_vmid, "the green VMID");
        SlotView {
            member: member.clone(),
            alt_vmid,
            base,
            alt,
            problem,
        }
    }

    /// Ask the backend which container holds the data volume (mongo only,
    /// and only when the slot has two containers: a lone member is the one
    /// the volume was created with, so a converged cluster costs no call).
    pub fn fill_data<B: Backend + ?Sized>(&mut self, backend: &B) -> Result<(), BackendError> {
        if !self.member.role.has_data_volume() {
            return Ok(());
        }
        if self.base.is_none() || self.alt.is_none() {
            for ct in [&mut self.base, &mut self.alt].into_iter().flatten() {
                ct.data = Some(true);
            }
            return Ok(());
        }
        for ct in [&mut self.base, &mut self.alt].into_iter().flatten() {
            ct.data = Some(backend.has_data_volume(&ct.node, ct.vmid)?);
        }
        Ok(())
    }

    pub fn slot(&self) -> &str {
        &self.member.slot
    }

    pub fn cts(&self) -> impl Iterator<Item = &Ct> {
        self.base.iter().chain(self.alt.iter())
    }

    pub fn get(&self, vmid: u32) -> Option<&Ct> {
        self.cts().find(|c| c.vmid == vmid)
    }

    pub fn get_mut(&mut self, vmid: u32) -> Option<&mut Ct> {
        [&mut self.base, &mut self.alt]
            .into_iter()
            .flatten()
            .find(|c| c.vmid == vmid)
    }

    /// The other VMID of the slot.
    pub fn other_vmid(&self, vmid: u32) -> u32 {
        if vmid == self.member.vmid {
            self.alt_vmid
        } else {
            self.member.vmid
        }
    }

    pub fn other_of(&self, vmid: u32) -> Option<&Ct> {
        self.get(self.other_vmid(vmid))
    }

    /// The live member. With two candidates (a rollout killed between its two
    /// tag writes) the running one wins, then the newer generation, then the
    /// spec's VMID; with none tagged live, the same order picks among all.
    pub fn live(&self) -> Option<&Ct> {
        let tagged: Vec<&Ct> = self.cts().filter(|c| c.live_tagged()).collect();
        let pool: Vec<&Ct> = if tagged.is_empty() {
            self.cts().collect()
        } else {
            tagged
        };
        pool.into_iter()
            .max_by_key(|c| (c.running, c.gen(), c.vmid == self.member.vmid))
    }

    /// The member that is not live, if any.
    pub fn standby(&self) -> Option<&Ct> {
        let live = self.live()?;
        self.other_of(live.vmid)
    }

    /// Live runs, the other is stopped and tagged standby, and (mongo) the
    /// data volume is on the live member.
    pub fn at_rest(&self) -> bool {
        let Some(live) = self.live() else {
            return false;
        };
        let other_ok = self
            .other_of(live.vmid)
            .is_none_or(|o| !o.running && !o.live_tagged());
        live.running && other_ok && live.data != Some(false)
    }

    pub fn is_empty(&self) -> bool {
        self.base.is_none() && self.alt.is_none()
    }
}

/// What a slot needs for the spec's template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Need {
    /// Nothing of the slot exists: a plain deploy creates it at the spec's VMID.
    Create,
    /// The live member runs the wanted template but is stopped, alone.
    Start(u32),
    Unchanged,
    /// A blue/green swap, new or interrupted; the text says why.
    Rollout(String),
}

/// Compare a slot with the tags of the wanted template (`want` from
/// [`super::members::member_tags`]).
pub fn need(view: &SlotView, want: &MemberTags) -> Need {
    let Some(live) = view.live() else {
        return Need::Create;
    };
    if !live.tags.same_deployment(want) {
        return Need::Rollout(format!(
            "CT {} runs version {} (template {}), the spec wants {} (template {})",
            live.vmid,
            live.version(),
            live.template(),
            want.version.as_deref().unwrap_or("?"),
            want.template.as_deref().unwrap_or("?"),
        ));
    }
    let other = view.other_of(live.vmid);
    let quiet = other.is_none_or(|o| !o.running && !o.live_tagged());
    if quiet && live.running {
        return Need::Unchanged;
    }
    if quiet && (other.is_none() || !view.member.role.has_data_volume()) {
        return Need::Start(live.vmid);
    }
    let power = |c: &Ct| {
        format!(
            "CT {} {} ({})",
            c.vmid,
            if c.running { "running" } else { "stopped" },
            if c.live_tagged() { "live" } else { "standby" }
        )
    };
    Need::Rollout(format!(
        "an interrupted rollout or rollback: {}{}",
        power(live),
        other.map(|o| format!(", {}", power(o))).unwrap_or_default()
    ))
}

/// Every slot of the cluster, in spec order, from one inventory call (plus
/// one data-volume query per container of a two-member mongo slot).
pub fn observe<B: Backend + ?Sized>(
    backend: &B,
    cluster: &Cluster,
) -> Result<Vec<SlotView>, BackendError> {
    let inventory = backend.inventory()?;
    observe_from(backend, cluster, &inventory)
}

/// [`observe`] from an inventory already read.
pub fn observe_from<B: Backend + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    inventory: &[ContainerStatus],
) -> Result<Vec<SlotView>, BackendError> {
    let mut out = Vec::new();
    for m in cluster.members() {
        let mut v = SlotView::from_inventory(cluster, m, inventory);
        if v.problem.is_none() {
            v.fill_data(backend)?;
        }
        out.push(v);
    }
    Ok(out)
}

/// One slot, read again (before working on it).
pub fn observe_one<B: Backend + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    member: &Member,
) -> Result<SlotView, BackendError> {
    let inventory = backend.inventory()?;
    let mut v = SlotView::from_inventory(cluster, member, &inventory);
    if v.problem.is_none() {
        v.fill_data(backend)?;
    }
    Ok(v)
}

/// Roles none of whose slots has a container at either of its VMIDs.
pub fn absent_roles(cluster: &Cluster, inventory: &[ContainerStatus]) -> Vec<Role> {
    let offset = cluster.rollout.green_vmid_offset;
    Role::ALL
        .into_iter()
        .filter(|r| {
            !cluster.members_of(*r).iter().any(|m| {
                inventory
                    .iter()
                    .any(|c| c.vmid == m.vmid || c.vmid == m.vmid + offset)
            })
        })
        .collect()
}

/// The part of `cluster` the target holds: a role with no container at all
/// (mongo, when its template cannot be built here and the deploy left it
/// out) is left out rather than reported missing, unless nothing is
/// deployed at all.
pub fn present_part(cluster: &Cluster, inventory: &[ContainerStatus]) -> Cluster {
    let absent = absent_roles(cluster, inventory);
    if absent.len() < Role::ALL.len() {
        cluster.without_roles(&absent)
    } else {
        cluster.clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fleet::tags::Gen;

    pub fn cluster() -> Cluster {
        haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster
    }

    pub fn tags(
        c: &Cluster,
        slot: &str,
        ver: &str,
        tpl: &str,
        state: Option<State>,
        gen: u32,
    ) -> Vec<String> {
        let m = c.member_by_slot(slot).unwrap();
        MemberTags {
            cluster: Some(c.name.clone()),
            role: Some(m.role),
            slot: Some(slot.into()),
            version: Some(ver.into()),
            template: Some(tpl.into()),
            secrets: None,
            state,
            gen: (gen > 0).then(|| Gen {
                n: gen,
                id: Some("0000000a".into()),
            }),
            extra: vec![],
        }
        .render()
    }

    pub fn status(vmid: u32, node: &str, running: bool, tags: Vec<String>) -> ContainerStatus {
        ContainerStatus {
            vmid,
            node: node.into(),
            name: format!("ct{vmid}"),
            state: if running {
                PowerState::Running
            } else {
                PowerState::Stopped
            },
            tags,
        }
    }

    #[test]
    fn first_deploy_members_are_live_and_at_rest() {
        let c = cluster();
        let inv = vec![status(
            100,
            "pve1",
            true,
            tags(&c, "nginx1", "1.0.0", "aaa", None, 0),
        )];
        let v = SlotView::from_inventory(&c, &c.lb.members[0], &inv);
        assert_eq!(v.alt_vmid, 1100);
        assert_eq!(v.live().unwrap().vmid, 100);
        assert!(v.standby().is_none());
        assert!(v.at_rest());
        assert!(v.problem.is_none());
    }

    #[test]
    fn two_live_tags_resolve_to_the_running_one_then_the_newer() {
        let c = cluster();
        let m = &c.lb.members[0];
        let both = |r100: bool, r1100: bool| {
            vec![
                status(
                    100,
                    "pve1",
                    r100,
                    tags(&c, "nginx1", "1", "a", Some(State::Live), 0),
                ),
                status(
                    1100,
                    "pve1",
                    r1100,
                    tags(&c, "nginx1", "2", "b", Some(State::Live), 1),
                ),
            ]
        };
        let v = SlotView::from_inventory(&c, m, &both(true, false));
        assert_eq!(v.live().unwrap().vmid, 100);
        assert!(!v.at_rest(), "the other is still tagged live");
        let v = SlotView::from_inventory(&c, m, &both(false, true));
        assert_eq!(v.live().unwrap().vmid, 1100);
        let v = SlotView::from_inventory(&c, m, &both(false, false));
        assert_eq!(v.live().unwrap().vmid, 1100, "newer generation");
    }

    #[test]
    fn foreign_guests_and_other_nodes_are_problems() {
        let c = cluster();
        let m = &c.lb.members[0];
        let inv = vec![
            status(100, "pve1", true, tags(&c, "nginx1", "1", "a", None, 0)),
            status(1100, "pve1", true, vec!["web".into()]),
        ];
        let v = SlotView::from_inventory(&c, m, &inv);
        assert!(v.alt.is_none());
        insta::assert_snapshot!(v.problem.unwrap(), @r#"VMID 1100 (the green VMID of slot nginx1) is held by guest "ct1100" on pve1 that is not this slot's member; free the VMID or change the spec"#);
        let inv = vec![status(
            100,
            "pve2",
            true,
            tags(&c, "nginx1", "1", "a", None, 0),
        )];
        let v = SlotView::from_inventory(&c, m, &inv);
        insta::assert_snapshot!(v.problem.unwrap(), @"CT 100 runs on node pve2, the spec places slot nginx1 on pve1; haimg does not migrate containers: move it in Proxmox or change the spec");
    }
}
