//! `haimg down`: remove everything a local deploy created.
//!
//! Containers (and any process left in them), mounts, veths, the client
//! network namespace, the bridge, leftover cgroups and the cluster's state
//! directory. Idempotent: a second run finds nothing and says so. Works after
//! a half-failed deploy and without a state file (names derive from the state
//! directory). The cluster name comes from `--cluster`, else from the spec.

use std::path::Path;

use anyhow::{Context, Result};

use super::{output, Exit};
use crate::backend::local::{host, LocalBackend, LocalOptions};
use crate::spec_file;

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Cluster to remove [default: the spec's cluster.name]
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,

    /// Print what was removed as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(spec: Option<&Path>, args: &DownArgs) -> Result<Exit> {
    let cluster = match &args.cluster {
        Some(c) => c.clone(),
        None => spec_file::load(spec)?.checked.cluster.name,
    };
    if !valid_cluster_name(&cluster) {
        eprintln!("error: {cluster:?} is not a cluster name (a DNS label: a-z, 0-9, -)");
        return Ok(Exit::Usage);
    }
    if !host::is_root() {
        anyhow::bail!(
            "haimg down needs root: it stops LXC containers and removes a bridge and a network namespace"
        );
    }
    let opts = LocalOptions::detect(&cluster);
    let backend = LocalBackend::new(
        &cluster,
        opts,
        std::sync::Arc::new(crate::exec::SystemRunner),
    )
    .context("failed to open the local cluster")?;
    let report = backend
        .down()
        .with_context(|| format!("failed to remove local cluster {cluster}"))?;
    if report.is_empty() {
        eprintln!(
            "nothing to remove for cluster {cluster} (state directory {})",
            report.state_dir.display()
        );
    } else {
        for c in &report.containers {
            eprintln!("removed container {c}");
        }
        if !report.killed_pids.is_empty() {
            eprintln!("killed leftover processes {:?}", report.killed_pids);
        }
        for m in &report.unmounted {
            eprintln!("unmounted {}", m.display());
        }
        for v in &report.network.veths {
            eprintln!("removed veth {v}");
        }
        if let Some(ns) = &report.network.netns {
            eprintln!("removed network namespace {ns}");
        }
        if let Some(br) = &report.network.bridge {
            eprintln!("removed bridge {br}");
        }
        for cg in &report.cgroups {
            eprintln!("removed cgroup {}", cg.display());
        }
        if report.state_dir_removed {
            eprintln!("removed state directory {}", report.state_dir.display());
        }
    }
    if args.json {
        output::json(&report)?;
    }
    Ok(Exit::Ok)
}

fn valid_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
