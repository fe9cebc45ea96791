//! `haimg gc`: remove standby members and templates of old versions.
//!
//! Generations order versions (version strings need not sort). The cluster's
//! generations, newest first, are counted over every live and standby member;
//! the newest `rollout.keep_versions` are kept. A standby of an older
//! generation is destroyed. A template is deleted when it is haimg's (its
//! stored name carries the content hash, see
//! [`haimg_model::TemplateName`]) and no haimg container left on
//! the target, of any cluster, was created from it.
//!
//! gc refuses while any slot is not at rest (an interrupted rollout): the
//! standby may then be the only copy of a member that must come back.

use std::collections::BTreeSet;

use haimg_model::{Cluster, TemplateName};
use serde::Serialize;

use crate::backend::{Backend, BackendError, StoredTemplate};
use crate::fleet::slot::SlotView;
use crate::fleet::tags::MemberTags;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcMember {
    pub slot: String,
    pub vmid: u32,
    pub node: String,
    pub version: String,
    pub template: String,
    pub gen: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcTemplate {
    pub node: String,
    #[serde(flatten)]
    pub template: StoredTemplate,
    /// The 12 hex digits in its name.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcPlan {
    /// Generations whose standbys stay.
    pub keep_gens: Vec<u32>,
    pub members: Vec<GcMember>,
    pub templates: Vec<GcTemplate>,
    /// Why gc does nothing now.
    pub refusal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub removed_members: Vec<u32>,
    pub removed_templates: Vec<String>,
    pub failures: Vec<String>,
}

impl GcReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What gc would remove now.
pub fn plan<B: Backend + ?Sized>(
    backend: &B,
    cluster: &Cluster,
    views: &[SlotView],
) -> Result<GcPlan, BackendError> {
    let keep = cluster.rollout.keep_versions as usize;
    let mut gens: Vec<u32> = views
        .iter()
        .flat_map(SlotView::cts)
        .map(|c| c.gen())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .rev()
        .collect();
    gens.truncate(keep);
    let mut out = GcPlan {
        keep_gens: gens.clone(),
        members: Vec::new(),
        templates: Vec::new(),
        refusal: None,
    };
    if let Some(v) = views
        .iter()
        .find(|v| !v.is_empty() && v.problem.is_none() && !v.at_rest())
    {
        out.refusal = Some(format!(
            "slot {} is not at rest (an interrupted rollout or rollback): finish it with `haimg deploy` or undo it with `haimg rollback` first",
            v.slot()
        ));
        return Ok(out);
    }
    for v in views.iter().filter(|v| v.problem.is_none()) {
        if let Some(s) = v.standby() {
            if !gens.contains(&s.gen()) {
                out.members.push(GcMember {
                    slot: v.slot().to_string(),
                    vmid: s.vmid,
                    node: s.node.clone(),
                    version: s.version().to_string(),
                    template: s.template().to_string(),
                    gen: s.gen(),
                });
            }
        }
    }
    // Templates still in use by any haimg container that stays (any cluster).
    let going: BTreeSet<u32> = out.members.iter().map(|m| m.vmid).collect();
    let used: BTreeSet<String> = backend
        .list()?
        .iter()
        .filter(|c| !going.contains(&c.vmid))
        .filter_map(|c| MemberTags::parse(&c.tags)?.template)
        .collect();
    let nodes = &cluster.proxmox.nodes;
    let first = nodes.first().cloned().unwrap_or_default();
    let listed: Vec<String> = if backend.template_storage_shared(&first)? {
        vec![first]
    } else {
        nodes.clone()
    };
    for node in listed {
        for t in backend.list_templates(&node)? {
            if let Some(h) = TemplateName::parse_stored(&t.filename).and_then(|n| n.hash) {
                if !used.contains(&h) {
                    out.templates.push(GcTemplate {
                        node: node.clone(),
                        hash: h,
                        template: t,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Remove what the plan lists; a failure is reported and the rest goes on.
pub fn run<B: Backend + ?Sized>(backend: &B, plan: &GcPlan, dry_run: bool) -> GcReport {
    let mut r = GcReport {
        dry_run,
        removed_members: Vec::new(),
        removed_templates: Vec::new(),
        failures: Vec::new(),
    };
    if plan.refusal.is_some() {
        return r;
    }
    for m in &plan.members {
        match backend.destroy(&m.node, m.vmid) {
            Ok(()) => r.removed_members.push(m.vmid),
            Err(e) => r.failures.push(format!("{} CT {}: {e}", m.slot, m.vmid)),
        }
    }
    for t in &plan.templates {
        match backend.delete_template(&t.node, &t.template) {
            Ok(()) => r.removed_templates.push(t.template.volid.clone()),
            Err(e) => r.failures.push(format!("{}: {e}", t.template.volid)),
        }
    }
    r
}
