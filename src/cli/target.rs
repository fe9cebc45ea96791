//! What deploy, status, rollback and gc share at the CLI edge: choosing the
//! target from the spec, its health gate, asking before changes, and the
//! rollout's progress and summary on stderr.
//!
//! [`Target`] is the one place that tells Proxmox from local: a
//! `proxmox.endpoint` in the spec means Proxmox, none means the cluster's
//! local LXC backend. The commands work on [`Target::backend`] and the gate
//! of [`Target::gate`] alike; only dry runs (recorded Proxmox API calls) and
//! the call counts are Proxmox's own.

use crate::secrets::Store;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use haimg_model::Cluster;

use super::runlock::{self, RunLock};
use crate::backend::local::LocalBackend;
use crate::backend::proxmox::client::CallCounts;
use crate::backend::proxmox::{ApiToken, PlannedCall, ProxmoxBackend, Settings};
use crate::backend::{Backend, ContainerStatus};
use crate::fleet::slot;
use crate::probe::Origin;
use crate::rollout::NetGate;
use crate::spec_file::Loaded;

/// Why `--dry-run` is refused locally.
pub const NO_LOCAL_DRY_RUN: &str =
    "--dry-run lists Proxmox API calls; the local backend has none (set proxmox.endpoint)";

/// The deploy target the spec names.
// One per command run, never moved around: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    Proxmox(ProxmoxBackend),
    Local(LocalBackend),
}

impl Target {
    /// Proxmox when the spec has `proxmox.endpoint`, else the cluster's local
    /// LXC backend. `dry_run` exists only on Proxmox; locally it is an error.
    pub fn open(loaded: &Loaded, dry_run: bool, progress: bool) -> Result<Target> {
        let cluster = &loaded.checked.cluster;
        if cluster.proxmox.endpoint.is_some() {
            return Ok(Target::Proxmox(proxmox(loaded, dry_run, progress)?));
        }
        if dry_run {
            bail!("{NO_LOCAL_DRY_RUN}");
        }
        let b = LocalBackend::for_cluster(&cluster.name)
            .context("failed to set up the local LXC backend")?;
        Ok(Target::Local(b))
    }

    /// Take the cluster's run lock for a mutating `command` (`deploy`,
    /// `rollback`, `gc`) for as long as the guard lives ([`runlock`]).
    pub fn lock(&self, cluster: &Cluster, command: &str, force: bool) -> Result<RunLock> {
        let me = runlock::Holder::me(command);
        match self {
            Target::Local(b) => runlock::acquire(&runlock::local_path(b.state_dir()), &me, force),
            Target::Proxmox(b) => {
                let ep = cluster.proxmox.endpoint.as_deref().unwrap_or("");
                let ep = haimg_model::endpoint::Endpoint::parse(ep)
                    .map_err(|e| anyhow::anyhow!("proxmox.endpoint: {e}"))?;
                let path = runlock::proxmox_path(&cluster.name, &ep.host, ep.port.unwrap_or(8006));
                // This host first (no API call while another local run holds
                // it), then the lease every deploy host sees.
                let local = runlock::acquire(&path, &me, force)?;
                let lease = runlock::take_lease(b.lease(&cluster.name), &me, force)?;
                Ok(local.with_lease(lease))
            }
        }
    }

    pub fn backend(&self) -> &(dyn Backend + Sync) {
        match self {
            Target::Proxmox(b) => b,
            Target::Local(b) => b,
        }
    }

    /// The health gate that reaches this target's members.
    /// Its mongo probes authenticate as the cluster's monitor user when the
    /// secrets store has one.
    pub fn gate(&self, cluster: &Cluster) -> Result<NetGate> {
        let monitor = Store::open(&Store::default_root(), &cluster.name)
            .load()
            .ok()
            .map(|s| s.monitor());
        match self {
            Target::Proxmox(_) => Ok(gate(monitor)),
            Target::Local(b) => Ok(NetGate::wire_as(
                b.probe_origin(cluster.network.gateway)
                    .context("failed to read the local network")?,
                monitor,
            )),
        }
    }

    /// Where the cluster goes, for people: the endpoint and token id, or the
    /// local state directory.
    pub fn describe(&self, cluster: &Cluster) -> String {
        match self {
            Target::Proxmox(b) => format!(
                "{} as {}",
                cluster.proxmox.endpoint.as_deref().unwrap_or("?"),
                b.token().id()
            ),
            Target::Local(b) => format!("local LXC ({})", b.state_dir().display()),
        }
    }

    /// The part of `cluster` the target holds. Locally a role with no
    /// container at all (mongo, when its template cannot be built here and
    /// the deploy left it out) is left out rather than reported missing,
    /// unless nothing is deployed at all; on Proxmox every member counts.
    pub fn scope(&self, cluster: &Cluster, inventory: &[ContainerStatus]) -> Cluster {
        match self {
            Target::Local(_) => slot::present_part(cluster, inventory),
            Target::Proxmox(_) => cluster.clone(),
        }
    }

    /// Whether runs leave out the roles the target has no container of
    /// (see [`Target::scope`]).
    pub fn leaves_out_absent_roles(&self) -> bool {
        matches!(self, Target::Local(_))
    }

    /// The API calls made so far (Proxmox only).
    pub fn calls(&self) -> Option<CallCounts> {
        match self {
            Target::Proxmox(b) => Some(b.calls()),
            Target::Local(_) => None,
        }
    }

    /// What a dry run recorded, after its header line (`# <token, secret
    /// redacted>`). Locally there is no dry run: nothing.
    pub fn dry_run_calls(&self) -> (String, Vec<PlannedCall>) {
        match self {
            Target::Proxmox(b) => (format!("# {}\n", b.token().redacted_header()), b.planned()),
            Target::Local(_) => (String::new(), Vec::new()),
        }
    }
}

/// The Proxmox backend of a spec with `proxmox.endpoint`.
fn proxmox(loaded: &Loaded, dry_run: bool, progress: bool) -> Result<ProxmoxBackend> {
    let cluster = &loaded.checked.cluster;
    let token = ApiToken::from_env().context("failed to read the Proxmox API token")?;
    let settings = Settings {
        progress,
        ..Settings::default()
    };
    let backend = ProxmoxBackend::new(&cluster.proxmox, token, settings)
        .context("failed to set up the Proxmox client")?;
    Ok(if dry_run {
        backend.into_dry_run()
    } else {
        backend
    })
}

/// Names a network namespace (a path such as `/run/netns/NAME`) to run every
/// health probe from, for deploy hosts that reach the cluster network only
/// from a namespace; the Proxmox API calls stay in the caller's namespace.
pub const PROBE_NETNS_ENV: &str = "HAIMG_PROBE_NETNS";

/// Health gates from this host (or from `HAIMG_PROBE_NETNS`), straight to
/// the members' addresses: HTTP, and OP_MSG to the mongo members.
pub fn gate(monitor: Option<(String, String)>) -> NetGate {
    let netns = std::env::var_os(PROBE_NETNS_ENV)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    NetGate::wire_as(Origin::new(netns, None), monitor)
}

/// `--yes`, or a `y` typed on a terminal. Without a terminal and without
/// `--yes`, refuse: nobody could have read the plan. The refusal points to
/// `--dry-run` where there is one (Proxmox).
pub fn confirm(target: &Target, yes: bool, what: &str) -> Result<Confirmed> {
    if yes {
        return Ok(Confirmed::Yes);
    }
    if !std::io::stdin().is_terminal() {
        let dry_run = match target {
            Target::Proxmox(_) => " (or --dry-run to see every call)",
            Target::Local(_) => "",
        };
        eprintln!(
            "error: refusing to {what} without confirmation: stdin is not a terminal; pass --yes to proceed{dry_run}"
        );
        return Ok(Confirmed::NoTerminal);
    }
    eprint!("{what}? [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("failed to read the answer")?;
    Ok(
        if matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            Confirmed::Yes
        } else {
            eprintln!("nothing changed");
            Confirmed::No
        },
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    Yes,
    No,
    NoTerminal,
}
