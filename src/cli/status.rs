//! `haimg status`: per slot the live and the standby member, their version,
//! template hash, generation and power state (table on stdout, or `--json`).

use std::path::Path;

use anyhow::{Context, Result};

use super::{output, target, Exit};
use crate::rollout::{slot, status};
use crate::spec_file;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the status as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(spec: Option<&Path>, args: &StatusArgs) -> Result<Exit> {
    let loaded = spec_file::load(spec)?;
    let cluster = &loaded.checked.cluster;
    let backend = target::proxmox(&loaded, false, false)?;
    let views = slot::observe(&backend, cluster).context("failed to read the target")?;
    let st = status::of(cluster, &views);
    if args.json {
        output::json(&st)?;
    } else {
        output::stdout(&status::render(&st))?;
    }
    let healthy = st.slots.iter().all(|s| s.phase == status::Phase::AtRest);
    Ok(if healthy { Exit::Ok } else { Exit::Error })
}
