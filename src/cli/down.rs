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

    /// Instead: remove every test cluster that a killed `haimg test` left in
    /// `--state-root` (`haimg-test-*` directories whose run is over; a
    /// running test holds its run lock and is left alone)
    #[arg(long, conflicts_with = "cluster")]
    pub leftover_tests: bool,

    /// Where `haimg test` makes its state directories (its `--state-root`)
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/tmp",
        requires = "leftover_tests"
    )]
    pub state_root: std::path::PathBuf,
}

pub fn run(spec: Option<&Path>, args: &DownArgs) -> Result<Exit> {
    if args.leftover_tests {
        return leftover_tests(&args.state_root, args.json);
    }
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

/// `haimg down --leftover-tests`: every `<root>/haimg-test-*/<cluster>`
/// whose run lock is free (its `haimg test` is gone) is taken down, and its
/// directory removed. A test that still runs holds the lock and is skipped.
fn leftover_tests(root: &Path, json: bool) -> Result<Exit> {
    if !host::is_root() {
        anyhow::bail!("haimg down needs root: it stops LXC containers and removes a bridge and a network namespace");
    }
    let mut removed = Vec::new();
    let entries =
        std::fs::read_dir(root).with_context(|| format!("failed to read {}", root.display()))?;
    for dir in entries.flatten().map(|e| e.path()) {
        let is_test = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("haimg-test-"));
        if !is_test || !dir.is_dir() {
            continue;
        }
        let before = removed.len();
        for state in std::fs::read_dir(&dir)?.flatten().map(|e| e.path()) {
            let Some(cluster) = state
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if !state.is_dir() || !valid_cluster_name(&cluster) {
                continue;
            }
            let lock = super::runlock::local_path(&state);
            match super::runlock::acquire(&lock, &super::runlock::Holder::me("down"), false) {
                Err(e) => {
                    eprintln!("skipped {}: {e:#}", state.display());
                    continue;
                }
                Ok(held) => {
                    let report = down_state_dir(&cluster, &state)?;
                    eprintln!(
                        "removed the test cluster in {}: {} container(s)",
                        state.display(),
                        report.containers.len()
                    );
                    drop(held);
                    removed.push(report);
                }
            }
        }
        // Empty now (or only the lock files of what was removed). An empty
        // one younger than a minute may be a test that is just starting.
        let left: Vec<_> = std::fs::read_dir(&dir)?
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().ends_with(".run.lock"))
            .collect();
        let old = std::fs::metadata(&dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(60));
        if left.is_empty() && (old || removed.len() > before) {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("failed to remove {}", dir.display()))?;
        }
    }
    if removed.is_empty() {
        eprintln!("no test cluster left behind in {}", root.display());
    }
    if json {
        output::json(&removed)?;
    }
    Ok(Exit::Ok)
}

/// Take down the local cluster `cluster` kept in `state_dir` (a test's,
/// not the default one): what `haimg test` does when interrupted and
/// `--leftover-tests` does for a test that was killed.
pub(super) fn down_state_dir(
    cluster: &str,
    state_dir: &Path,
) -> Result<crate::backend::local::DownReport> {
    let mut opts = LocalOptions::detect(cluster);
    opts.state_dir = state_dir.to_path_buf();
    let backend = LocalBackend::new(
        cluster,
        opts,
        std::sync::Arc::new(crate::exec::SystemRunner),
    )
    .with_context(|| format!("failed to open {}", state_dir.display()))?;
    backend
        .down()
        .with_context(|| format!("failed to remove {}", state_dir.display()))
}

fn valid_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
