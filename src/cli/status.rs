//! `haimg status`: per slot the live and the standby member, their version,
//! template hash, generation and power state (table on stdout, or `--json`).

use std::path::Path;

use anyhow::{Context, Result};

use super::deploy::without_roles;
use super::{output, target, Exit};
use crate::backend::local::LocalBackend;
use crate::backend::Backend;
use crate::rollout::{slot, status};
use crate::spec_file;
use haimg_model::{Cluster, Role};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the status as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(spec: Option<&Path>, args: &StatusArgs) -> Result<Exit> {
    let loaded = spec_file::load(spec)?;
    let cluster = &loaded.checked.cluster;
    let st = if cluster.proxmox.endpoint.is_some() {
        let backend = target::proxmox(&loaded, false, false)?;
        let views = slot::observe(&backend, cluster).context("failed to read the target")?;
        status::of(cluster, &views)
    } else {
        local_status(cluster)?
    };
    if args.json {
        output::json(&st)?;
    } else {
        output::stdout(&status::render(&st))?;
    }
    let healthy = st.slots.iter().all(|s| s.phase == status::Phase::AtRest);
    Ok(if healthy { Exit::Ok } else { Exit::Error })
}

/// The local cluster's status; roles with no container at all (mongo, when
/// its template could not be built) are left out rather than reported missing.
fn local_status(cluster: &Cluster) -> Result<status::Status> {
    let backend =
        LocalBackend::for_cluster(&cluster.name).context("failed to open the local LXC backend")?;
    let inventory = backend
        .inventory()
        .context("failed to read the local containers")?;
    let absent: Vec<Role> = Role::ALL
        .into_iter()
        .filter(|r| {
            !cluster.members_of(*r).iter().any(|m| {
                inventory.iter().any(|c| {
                    c.vmid == m.vmid || c.vmid == m.vmid + cluster.rollout.green_vmid_offset
                })
            })
        })
        .collect();
    let target = without_roles(cluster, &absent);
    let views = slot::observe(&backend, &target).context("failed to read the local containers")?;
    Ok(status::of(&target, &views))
}
