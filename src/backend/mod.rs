//! Deploy targets behind one narrow trait.
//!
//! Orchestration (deploy, status, rollout, rollback, gc) is written once
//! against [`Backend`], which knows none of its implementations: `proxmox`
//! (the Proxmox VE API over HTTPS, the network policy on its firewall) and
//! `local` (LXC on this host, the policy in nftables; the golden-image test
//! bed). The backend is chosen where the program starts, from the spec: a
//! `proxmox.endpoint` means Proxmox, none means local.
//!
//! Every operation is synchronous and returns when the work is done (Proxmox
//! tasks are waited on inside the backend). State lives in the target: tags on
//! Proxmox, the state directory locally; there is no other state file.

pub mod local;
pub mod proxmox;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use haimg_model::{Cluster, Member, Role};
use serde::Serialize;

/// A template stored on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredTemplate {
    /// Proxmox volid (`local:vztmpl/haimg-lb_1.0.0-0123456789ab_amd64.tar.zst`) or the local path.
    pub volid: String,
    pub filename: String,
    pub size: u64,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerSpec {
    pub vmid: u32,
    /// Proxmox node; ignored by the local backend.
    pub node: String,
    pub hostname: String,
    pub role: Role,
    pub slot: String,
    /// The template to create from, as returned by `upload_template`.
    pub template: StoredTemplate,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub bridge: String,
    /// Stable per slot, so blue and green share it.
    pub hwaddr: String,
    pub nameservers: Vec<Ipv4Addr>,
    pub search_domain: Option<String>,
    pub cores: u32,
    pub memory_mb: u32,
    pub rootfs_gb: u32,
    /// Size of the data volume mounted at `data_mount` (mongo), if any.
    pub data_volume_gb: Option<u32>,
    pub data_mount: Option<String>,
    /// Proxmox tags (state lives here).
    pub tags: Vec<String>,
    /// Environment for PID 1 (Proxmox >= 9.1 `env`; always locally).
    pub env: Vec<(String, String)>,
    pub onboot: bool,
    /// PID 1 (`lxc.init.cmd`); sent to Proxmox only when it is >= 9.1.
    pub entrypoint: Option<String>,
    /// The host configures eth0 (Proxmox >= 9.1 `net0.host-managed=1`).
    pub host_managed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    Running,
    Stopped,
}

/// A container as the target reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerStatus {
    pub vmid: u32,
    pub node: String,
    pub name: String,
    pub state: PowerState,
    pub tags: Vec<String>,
}

/// What went wrong, with the object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `node` is empty for cluster-wide calls.
    #[error("{call}{}{}: {message}", if node.is_empty() { String::new() } else { format!(" on node {node}") }, vmid.map(|v| format!(" for CT {v}")).unwrap_or_default())]
    Call {
        call: String,
        node: String,
        vmid: Option<u32>,
        message: String,
    },
    #[error("{call}: timed out after {}s", .after.as_secs())]
    Timeout { call: String, after: Duration },
    /// A create that failed inside the target left a locked guest behind.
    #[error("{0}")]
    CreateLeftover(Box<CreateLeftover>),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
    /// An implementation's own error, with the object it concerns; printed,
    /// not chained, so each cause appears once.
    #[error("{0}")]
    Target(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl BackendError {
    /// The implementation's own error, when it is one of type `E`.
    pub fn into_target<E: std::error::Error + 'static>(self) -> std::result::Result<E, Self> {
        match self {
            BackendError::Target(b) => b.downcast::<E>().map(|e| *e).map_err(BackendError::Target),
            other => Err(other),
        }
    }
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// One setting of an existing container that differs from its spec
/// (changed by hand, e.g. in the Proxmox web UI), for the plan and the
/// converge: `haimg deploy --dry-run` shows it, `haimg deploy` changes it in
/// place when `in_place`, else says that it needs a swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The setting, as the target names it (`cores`, `memory`, `net0`, `tags`, `onboot`).
    pub key: String,
    /// What the container has (empty when unset).
    pub have: String,
    /// What the spec wants.
    pub want: String,
    /// Changeable on the existing container (Proxmox: `PUT …/config`).
    pub in_place: bool,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &str| {
            if v.is_empty() {
                "(unset)".to_string()
            } else {
                format!("{v:?}")
            }
        };
        write!(
            f,
            "{}: {} -> {}",
            self.key,
            show(&self.have),
            show(&self.want)
        )?;
        if !self.in_place {
            write!(f, " (not changeable in place: needs a new member)")?;
        }
        Ok(())
    }
}

/// The network policy to enforce, and on which containers.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    pub cluster: &'a Cluster,
    /// The allowed flows (`haimg_model::policy::derive` of the cluster).
    pub flows: &'a haimg_model::policy::Policy,
    /// Also the part shared by every container: locally the bridge's
    /// nftables table (which filters every member by its interface, from its
    /// first packet); on Proxmox the IP sets, security groups and the
    /// datacenter switch. Off for a container joining a cluster whose policy
    /// is in place (a rollout's green).
    pub target_wide: bool,
    /// The containers to filter. Empty before any exists.
    pub guests: Vec<Guest<'a>>,
    /// Which MAC may speak ARP for which address: every member's own, and
    /// every lb member's for the VIP. Locally the bridge's table drops other
    /// claims; on Proxmox `ipfilter` does the same from the guests' configs.
    pub arp_owners: Vec<(std::net::Ipv4Addr, String)>,
}

/// A container the policy filters.
#[derive(Debug, Clone)]
pub struct Guest<'a> {
    pub member: &'a Member,
    /// Its VMID (a rollout's green container has another one than the member).
    pub vmid: u32,
    /// Created in this run, its interface already filtered: nothing to check there.
    pub fresh: bool,
    /// Does not exist (a dry run's create): nothing to read, everything to write.
    pub absent: bool,
}

/// Whether the target applies the rules: the switch shared by every guest
/// and host (Proxmox's datacenter firewall; locally always on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    /// It was on: the policy is enforced.
    On,
    /// It is off and stays off: the rules are written but not enforced.
    Off,
    /// haimg turned it on in this run.
    Enabled,
    /// Dry-run: haimg would turn it on.
    WouldEnable,
    /// Not known (reading it failed, or not asked).
    Unknown,
}

/// What enforcing the policy did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    /// What enforces it, for people: `Proxmox's firewall`, `nftables`.
    pub enforcer: &'static str,
    #[serde(rename = "datacenter")]
    pub switch: Switch,
    /// One line per write, e.g. `ipset haimg-lb: created`.
    pub changes: Vec<String>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

impl PolicyReport {
    pub fn new(enforcer: &'static str, switch: Switch) -> PolicyReport {
        PolicyReport {
            enforcer,
            switch,
            changes: Vec::new(),
            warnings: Vec::new(),
            errors: Vec::new(),
        }
    }

    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Whether the target applies the rules (or will, after this dry run is run for real).
    pub fn enforced(&self) -> bool {
        matches!(
            self.switch,
            Switch::On | Switch::Enabled | Switch::WouldEnable
        )
    }
}

/// What a failed create left behind: a guest config that still holds the
/// target's create lock, which the target's API cannot remove (on Proxmox only
/// `pct unlock` on the node can). haimg never removes it itself; it says
/// whether the leftover is provably its own and what the operator runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateLeftover {
    pub node: String,
    pub vmid: u32,
    /// The failed create is haimg's own: the last create task for this VMID
    /// was started by haimg's credentials and failed, and the config holds
    /// nothing but the lock or what haimg sent.
    pub owned: bool,
    /// Why (not) owned, for the message.
    pub evidence: String,
    /// The failed create task (Proxmox UPID) and how it ended, when known.
    pub task: Option<String>,
    pub exitstatus: Option<String>,
    /// Last lines of that task's log.
    pub log_tail: Vec<String>,
    /// The commands an operator runs on the node to remove it, in order.
    pub commands: Vec<String>,
}

impl std::fmt::Display for CreateLeftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (node, vmid) = (&self.node, self.vmid);
        if self.owned {
            write!(
                f,
                "CT {vmid} on node {node} is what haimg's failed create left behind: its config keeps the 'create' lock, which no API call can remove"
            )?;
            write!(f, "\n  proof: {}", self.evidence)?;
            write!(
                f,
                "\n  to clean it up, run as root on {node}, then deploy again:"
            )?;
        } else {
            write!(
                f,
                "CT {vmid} on node {node} is locked by a create (lock: create) that haimg cannot prove its own: {}",
                self.evidence
            )?;
            write!(
                f,
                "\n  if it is a failed create nobody needs (check with `pct config {vmid}` on {node}), run as root on {node}, then deploy again:"
            )?;
        }
        for c in &self.commands {
            write!(f, "\n    {c}")?;
        }
        if !self.log_tail.is_empty() {
            write!(f, "\n  last lines of the task log:")?;
            for l in &self.log_tail {
                write!(f, "\n  | {l}")?;
            }
        }
        Ok(())
    }
}

/// What the target supports; decides which [`ContainerSpec`] fields are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Environment for PID 1 (Proxmox >= 9.1 `env`).
    pub env: bool,
    /// A configurable PID 1 (Proxmox >= 9.1 `entrypoint`).
    pub entrypoint: bool,
    /// The host brings eth0 up with its address (Proxmox >= 9.1 `host-managed`).
    pub host_managed: bool,
}

/// The tag on every container haimg creates: [`Backend::list`] returns
/// exactly the containers that carry it.
pub const OWNER_TAG: &str = "haimg";

/// `f` over every item of every group, one thread per group (a Proxmox node:
/// its calls in order, the nodes side by side); the results group by group,
/// each in item order. A panic in `f` is resumed in the caller.
pub fn per_node<K, T, R, F>(groups: &std::collections::BTreeMap<K, Vec<T>>, f: F) -> Vec<R>
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

impl Capabilities {
    /// What the members go without on a target that lacks any of these, for
    /// the CLI to say once per run; `None` when nothing is missing. Only
    /// Proxmox before 9.1 lacks them (pve-container 6.0.15 added all three).
    pub fn warning(&self) -> Option<String> {
        let missing: Vec<&str> = [
            (self.env, "env"),
            (self.entrypoint, "entrypoint"),
            (self.host_managed, "host-managed"),
        ]
        .into_iter()
        .filter(|(have, _)| !have)
        .map(|(_, name)| name)
        .collect();
        if missing.is_empty() {
            return None;
        }
        Some(format!(
            "this Proxmox VE is older than 9.1 and has no container {}: the members get no HAIMG_* variables; \
             haimg-init finds its role and address in the files Proxmox writes (/etc/hostname, /etc/hosts, \
             /etc/network/interfaces) and brings eth0 up itself; upgrade to 9.1 or later to pass them directly",
            missing.join(", ")
        ))
    }
}

/// One deploy target.
pub trait Backend {
    /// `proxmox` or `local`, for messages.
    fn kind(&self) -> &'static str;

    /// Store the file at `path` as `name` on the target's template storage; a
    /// no-op when a file of that name and size (Proxmox) or content (local)
    /// is there. The caller names the content: haimg's stored names carry the
    /// content hash, so one name is one content.
    fn upload_template(
        &self,
        node: &str,
        path: &Path,
        name: &str,
        sha256: &str,
    ) -> Result<StoredTemplate>;
    fn list_templates(&self, node: &str) -> Result<Vec<StoredTemplate>>;
    fn delete_template(&self, node: &str, template: &StoredTemplate) -> Result<()>;

    /// Create a stopped container.
    fn create(&self, spec: &ContainerSpec) -> Result<()>;
    fn start(&self, node: &str, vmid: u32) -> Result<()>;
    /// Send the halt signal and wait up to `timeout` for a clean stop.
    fn shutdown(&self, node: &str, vmid: u32, timeout: Duration) -> Result<()>;
    /// Kill at once.
    fn stop(&self, node: &str, vmid: u32) -> Result<()>;
    /// Remove a stopped container and its volumes.
    fn destroy(&self, node: &str, vmid: u32) -> Result<()>;
    /// `None` when the container does not exist.
    fn status(&self, node: &str, vmid: u32) -> Result<Option<ContainerStatus>>;
    /// Every container haimg created (tagged `haimg`).
    fn list(&self) -> Result<Vec<ContainerStatus>>;
    /// Hand the data volume of a stopped container to another one.
    fn move_data_volume(&self, node: &str, from_vmid: u32, to_vmid: u32) -> Result<()>;
    fn set_tags(&self, node: &str, vmid: u32, tags: &[String]) -> Result<()>;

    /// Write the tags and whether the container starts when its host boots,
    /// in one change: a rollout's promotion (`onboot` on) and demotion (off),
    /// so a standby never starts by itself next to its live member (same IP,
    /// same MAC). Targets where nothing starts at boot (local) write the tags.
    fn set_tags_onboot(&self, node: &str, vmid: u32, tags: &[String], onboot: bool) -> Result<()> {
        let _ = onboot;
        self.set_tags(node, vmid, tags)
    }

    /// Whether the container holds the data volume (`mp0`). Rollouts read it to
    /// know where a mongo member's data is after an interrupted hand-over.
    fn has_data_volume(&self, node: &str, vmid: u32) -> Result<bool> {
        let _ = (node, vmid);
        Err(BackendError::Other(anyhow::anyhow!(
            "the {} backend cannot tell which container holds a data volume",
            self.kind()
        )))
    }

    /// What this target supports. Locally everything is available.
    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            env: true,
            entrypoint: true,
            host_managed: true,
        })
    }

    /// Whether the template storage seen from `node` is shared by all nodes,
    /// so one upload serves every node. Locally there is one host.
    fn template_storage_shared(&self, _node: &str) -> Result<bool> {
        Ok(true)
    }

    /// Enforce the network policy: only the flows of `policy` reach its
    /// containers. Idempotent (a second call writes nothing); a dry run
    /// records. Callable before any member starts (with no guests: the part
    /// shared by every container). Failures are in the report, one per
    /// object; `None` when this target does not enforce a policy (Proxmox
    /// with `proxmox.firewall.enforce: false`).
    fn enforce_policy(&self, policy: &Policy<'_>) -> Option<PolicyReport>;

    /// Whether the policy will be enforced once [`Backend::enforce_policy`]
    /// has run, read before anything is created: a deploy refuses to start a
    /// mongo member the network could reach (`On` locally: the bridge's table).
    fn policy_switch(&self, cluster: &Cluster) -> Result<Switch> {
        let _ = cluster;
        Ok(Switch::On)
    }

    /// Every guest on the target whatever its owner, so a VMID taken by
    /// something haimg did not create is noticed. Defaults to [`Backend::list`].
    fn inventory(&self) -> Result<Vec<ContainerStatus>> {
        self.list()
    }

    /// What differs between the existing container `spec.vmid` and `spec`,
    /// setting by setting (not the template: a member of another template is
    /// a rollout's). Targets that cannot tell answer nothing.
    fn drift(&self, spec: &ContainerSpec) -> Result<Vec<Drift>> {
        let _ = spec;
        Ok(Vec::new())
    }

    /// Change the in-place settings of `drift` on the existing container to
    /// what `spec` says, in one change.
    fn reconfigure(&self, spec: &ContainerSpec, drift: &[Drift]) -> Result<()> {
        let _ = (spec, drift);
        Err(BackendError::Other(anyhow::anyhow!(
            "the {} backend cannot change a container's settings in place",
            self.kind()
        )))
    }

    /// The remains of a failed create holding `vmid` on `node` (a config still
    /// locked by the create), with whether it is provably haimg's and what the
    /// operator runs; `None` when the guest is not such a leftover. Targets
    /// whose creates leave nothing locked behind answer `None`.
    fn create_leftover(&self, node: &str, vmid: u32) -> Result<Option<CreateLeftover>> {
        let _ = (node, vmid);
        Ok(None)
    }
}
