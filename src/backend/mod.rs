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

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use haimg_model::Role;
use serde::Serialize;

/// A template stored on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredTemplate {
    /// Proxmox volid (`local:vztmpl/haimg-lb_1.0.0_amd64.tar.zst`) or the local path.
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
    #[error("{call} on node {node}{}: {message}", vmid.map(|v| format!(" for CT {v}")).unwrap_or_default())]
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
    /// From the local (LXC) backend, with the object it concerns.
    #[error(transparent)]
    Local(#[from] local::LocalError),
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// One deploy target.
pub trait Backend {
    /// `proxmox` or `local`, for messages.
    fn kind(&self) -> &'static str;

    /// Put a template on the target's storage; a no-op when the same content is there.
    fn upload_template(&self, node: &str, path: &Path, sha256: &str) -> Result<StoredTemplate>;
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
}
