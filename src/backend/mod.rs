//! Deploy targets behind one narrow trait.
//!
//! Orchestration (deploy, status, rollout, rollback, gc, down) is written once
//! against [`Backend`]. Two implementations: `proxmox` (the Proxmox VE API over
//! HTTPS) and `local` (LXC on this host, the golden-image test bed). The
//! backend is chosen where the program starts, from the spec: a
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

use haimg_model::Role;
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

    /// Proxmox's firewall API, where the network policy is enforced with it
    /// (`crate::deploy::firewall`). `None` for targets that enforce it otherwise
    /// (the local backend filters its own bridge with nftables).
    fn firewall(&self) -> Option<&dyn proxmox::firewall::PveFirewall> {
        None
    }

    /// Every guest on the target whatever its owner, so a VMID taken by
    /// something haimg did not create is noticed. Defaults to [`Backend::list`].
    fn inventory(&self) -> Result<Vec<ContainerStatus>> {
        self.list()
    }
}
