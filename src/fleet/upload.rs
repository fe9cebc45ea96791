//! Storing the built templates on the target, before containers are
//! created from them (a plain deploy's creates and a rollout's greens alike).
//!
//! Once per shared storage (the first node that needs a role uploads it for
//! all), once per node otherwise, nodes side by side; an upload whose content
//! is already stored under its name is skipped by the backend. This is the
//! fleet layer's one write: the rest of it only reads the target.

use std::collections::{BTreeMap, BTreeSet};

use haimg_model::{Cluster, Member, Role};
use serde::Serialize;

use super::templates::LocalTemplate;
use crate::backend::{per_node, Backend, StoredTemplate};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadReport {
    pub role: Role,
    /// The node the upload went to (for shared storage, the one of all).
    pub node: String,
    pub volid: String,
    /// Whether the storage is shared by every node.
    pub shared: bool,
}

/// The stored template per (node, role), or why its upload failed.
pub type Stored = BTreeMap<(String, Role), Result<StoredTemplate, String>>;

/// Upload what the creates need; returns the stored template per (node, role).
pub fn upload<B: Backend + Sync + ?Sized>(
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
    let done: Vec<(String, Role, Result<StoredTemplate, String>)> = per_node(&jobs, |node, r| {
        let t = &templates[r];
        let res = backend
            .upload_template(node, &t.path, &t.stored_name(), &t.sha256)
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
