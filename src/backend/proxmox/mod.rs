//! The Proxmox VE backend: the [`Backend`] trait over the HTTPS API.
//!
//! Every mutating call that answers with a task id (UPID) is waited on here,
//! with backoff and a per-operation timeout; a failed task is reported with the
//! last lines of its log. Transient failures (595-599, config lock timeouts,
//! whether answered at once or as a failed task) are retried with jitter.
//! Mutating calls are serialized per node (one lock per node), so callers may
//! drive different nodes from different threads.
//!
//! Every error names the call (`POST /nodes/pve1/lxc`), the node and the VMID.
//! In dry-run mode GETs are made for real (to know what would change) and every
//! mutating call is recorded with its parameters, secrets redacted, instead of
//! being sent.

pub mod client;
pub mod firewall;
pub mod params;
pub mod tls;
pub mod token;
pub mod upid;
pub mod wire;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use haimg_model::TlsMode;
use serde::Serialize;
use serde_json::Value;

use self::client::{is_lock_timeout, seg, CallCounts, Client, Method, Params, RetryPolicy};
use self::upid::Upid;
use self::wire::{
    ContentItem, CtStatus, LogLine, Resource, StorageStatus, TaskStatus, VersionInfo,
};
use crate::backend::{
    stored_template_name, Backend, BackendError, Capabilities, ContainerSpec, ContainerStatus,
    PowerState, Result, StoredTemplate,
};
pub use token::{ApiToken, TokenError, TOKEN_ENV};

/// How long each kind of task may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// One HTTP request (not uploads).
    pub request: Duration,
    /// Sending an upload's body.
    pub upload_body: Duration,
    /// The `imgcopy` task after an upload (checksum + copy).
    pub upload_task: Duration,
    pub create: Duration,
    pub start: Duration,
    pub stop: Duration,
    pub destroy: Duration,
    pub move_volume: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request: Duration::from_secs(60),
            upload_body: Duration::from_secs(3600),
            upload_task: Duration::from_secs(900),
            create: Duration::from_secs(900),
            start: Duration::from_secs(180),
            stop: Duration::from_secs(120),
            destroy: Duration::from_secs(300),
            move_volume: Duration::from_secs(600),
        }
    }
}

/// Task polling: the first wait, growing by half each poll up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    pub first: Duration,
    pub max: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            first: Duration::from_millis(200),
            max: Duration::from_secs(3),
        }
    }
}

/// Knobs of the backend beyond the spec.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeouts: Timeouts,
    pub poll: PollPolicy,
    pub retry: RetryPolicy,
    /// Draw an upload progress bar on stderr (hidden anyway when not a terminal).
    pub progress: bool,
    /// Lines of the task log shown when a task fails.
    pub log_tail: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeouts: Timeouts::default(),
            poll: PollPolicy::default(),
            retry: RetryPolicy::default(),
            progress: true,
            log_tail: 8,
        }
    }
}

/// The backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("proxmox.endpoint is not set")]
    NoEndpoint,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error("failed to build the HTTP client: {0}")]
    Http(String),
}

/// A mutating call that dry-run mode did not send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedCall {
    pub method: Method,
    /// Path below `/api2/json`.
    pub path: String,
    /// Secrets redacted.
    pub params: Params,
}

impl std::fmt::Display for PlannedCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        for (k, v) in &self.params.0 {
            write!(f, "\n    {k}={}", v.replace('\n', "\\n"))?;
        }
        Ok(())
    }
}

/// Who the error is about.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    node: &'a str,
    vmid: Option<u32>,
}

pub struct ProxmoxBackend {
    client: Client,
    template_storage: String,
    rootfs_storage: String,
    /// `firewall=1` on net0 (`proxmox.firewall.enforce`).
    net_firewall: bool,
    settings: Settings,
    dry_run: Option<Mutex<Vec<PlannedCall>>>,
    version: Mutex<Option<VersionInfo>>,
    node_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for ProxmoxBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxmoxBackend")
            .field("client", &self.client)
            .field("template_storage", &self.template_storage)
            .field("rootfs_storage", &self.rootfs_storage)
            .field("dry_run", &self.dry_run.is_some())
            .finish_non_exhaustive()
    }
}

impl ProxmoxBackend {
    /// Build from the validated spec. `insecure: true` warns on stderr, every time.
    pub fn new(
        px: &haimg_model::Proxmox,
        token: ApiToken,
        settings: Settings,
    ) -> Result<Self, SetupError> {
        let endpoint = px.endpoint.as_deref().ok_or(SetupError::NoEndpoint)?;
        if px.tls == TlsMode::Insecure {
            eprintln!(
                "warning: proxmox.tls.insecure is set: the certificate of {endpoint} is NOT verified; \
                 anyone on the path can read the API token. Pin proxmox.tls.fingerprint or set proxmox.tls.ca_file instead."
            );
        }
        let builder = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(settings.timeouts.request)
            .user_agent(concat!("haimg/", env!("CARGO_PKG_VERSION")));
        let http = tls::configure(builder, &px.tls)?
            .build()
            .map_err(|e| SetupError::Http(client::error_chain(&e)))?;
        let mut client = Client::new(endpoint, http, token);
        client.retry = settings.retry;
        Ok(ProxmoxBackend {
            client,
            template_storage: px.template_storage.clone(),
            rootfs_storage: px.rootfs_storage.clone(),
            net_firewall: px.firewall.enforce,
            settings,
            dry_run: None,
            version: Mutex::new(None),
            node_locks: Mutex::new(HashMap::new()),
        })
    }

    /// Record mutating calls instead of sending them.
    pub fn into_dry_run(mut self) -> Self {
        self.dry_run = Some(Mutex::new(Vec::new()));
        self
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run.is_some()
    }

    /// Calls recorded in dry-run mode, in the order they were planned.
    pub fn planned(&self) -> Vec<PlannedCall> {
        self.dry_run
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .unwrap_or_default()
    }

    /// API calls made so far.
    pub fn calls(&self) -> CallCounts {
        self.client.stats.snapshot()
    }

    pub fn token(&self) -> &ApiToken {
        self.client.token()
    }

    fn node_lock(&self, node: &str) -> Arc<Mutex<()>> {
        let mut m = self
            .node_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        m.entry(node.to_string()).or_default().clone()
    }

    fn err(call: &str, ctx: Ctx<'_>, message: impl ToString) -> BackendError {
        BackendError::Call {
            call: call.to_string(),
            node: ctx.node.to_string(),
            vmid: ctx.vmid,
            message: message.to_string(),
        }
    }

    fn get(&self, path: &str, params: &Params, ctx: Ctx<'_>) -> Result<Value> {
        self.client
            .call(Method::Get, path, params)
            .map_err(|e| Self::err(&format!("GET {path}"), ctx, e))
    }

    fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        params: &Params,
        ctx: Ctx<'_>,
    ) -> Result<T> {
        let v = self.get(path, params, ctx)?;
        serde_json::from_value(v).map_err(|e| {
            Self::err(
                &format!("GET {path}"),
                ctx,
                format!("unexpected answer: {e}"),
            )
        })
    }

    /// Record in dry-run mode; `true` when the caller must not send.
    fn plan(&self, method: Method, path: &str, params: &Params) -> bool {
        match &self.dry_run {
            Some(m) => {
                m.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(PlannedCall {
                        method,
                        path: path.to_string(),
                        params: params::redacted(params),
                    });
                true
            }
            None => false,
        }
    }

    /// A mutating call that starts a task, waited on until done. A task that
    /// failed on a config lock timeout is started again (with backoff).
    /// `tolerate` turns an immediate 500 whose message contains the text into success.
    fn task_call(
        &self,
        method: Method,
        path: &str,
        params: &Params,
        ctx: Ctx<'_>,
        timeout: Duration,
        tolerate: &[&str],
    ) -> Result<()> {
        if self.plan(method, path, params) {
            return Ok(());
        }
        let call = format!("{method} {path}");
        let _guard = self.node_lock(ctx.node);
        let _held = _guard.lock().unwrap_or_else(PoisonError::into_inner);
        let mut attempt = 1;
        loop {
            let data = match self.client.call(method, path, params) {
                Ok(d) => d,
                Err(e)
                    if e.status() == Some(500)
                        && tolerate.iter().any(|t| e.message().contains(t)) =>
                {
                    tracing::debug!("{call}: {} (nothing to do)", e.message());
                    return Ok(());
                }
                Err(e) => return Err(Self::err(&call, ctx, e)),
            };
            match self.wait_value(&data, &call, ctx, timeout) {
                Err(TaskFailure::LockTimeout(msg)) if attempt < self.settings.retry.attempts => {
                    tracing::debug!("{call}: task hit a lock timeout ({msg}); retrying");
                    self.client
                        .stats
                        .retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(self.settings.retry.delay(attempt));
                    attempt += 1;
                }
                Err(TaskFailure::LockTimeout(msg)) => {
                    return Err(Self::err(
                        &call,
                        ctx,
                        format!("{msg} (gave up after {attempt} tries)"),
                    ))
                }
                Err(TaskFailure::Other(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
    }

    fn wait_value(
        &self,
        data: &Value,
        call: &str,
        ctx: Ctx<'_>,
        timeout: Duration,
    ) -> Result<(), TaskFailure> {
        let s = data.as_str().ok_or_else(|| {
            TaskFailure::Other(Self::err(
                call,
                ctx,
                format!("expected a task id, got {data}"),
            ))
        })?;
        let upid = Upid::parse(s).map_err(|e| TaskFailure::Other(Self::err(call, ctx, e)))?;
        self.wait_task(&upid, call, ctx, timeout)
    }

    /// Poll a task until it stops; its failure carries the log tail.
    fn wait_task(
        &self,
        upid: &Upid,
        call: &str,
        ctx: Ctx<'_>,
        timeout: Duration,
    ) -> Result<(), TaskFailure> {
        let started = Instant::now();
        let path = format!(
            "/nodes/{}/tasks/{}/status",
            seg(&upid.node),
            seg(upid.as_str())
        );
        let mut delay = self.settings.poll.first;
        loop {
            let st: TaskStatus = self
                .get_as(&path, &Params::new(), ctx)
                .map_err(TaskFailure::Other)?;
            if !st.running() {
                if st.succeeded() {
                    return Ok(());
                }
                let exit = st.exitstatus.unwrap_or_else(|| "unknown status".into());
                if is_lock_timeout(&exit) {
                    return Err(TaskFailure::LockTimeout(exit));
                }
                let tail = self.log_tail(upid, ctx);
                return Err(TaskFailure::Other(Self::err(
                    call,
                    ctx,
                    format!("task {} failed: {exit}{tail}", upid.kind),
                )));
            }
            if started.elapsed() >= timeout {
                return Err(TaskFailure::Other(Self::err(
                    call,
                    ctx,
                    format!(
                        "task {} still running after {:.1}s (timeout); it goes on in Proxmox: {}",
                        upid.kind,
                        timeout.as_secs_f64(),
                        upid
                    ),
                )));
            }
            std::thread::sleep(delay.min(timeout.saturating_sub(started.elapsed())));
            delay = (delay + delay / 2).min(self.settings.poll.max);
        }
    }

    /// `\n  | line` for the last lines of a task log, or nothing if it cannot be read.
    fn log_tail(&self, upid: &Upid, ctx: Ctx<'_>) -> String {
        let path = format!(
            "/nodes/{}/tasks/{}/log",
            seg(&upid.node),
            seg(upid.as_str())
        );
        let lines: Vec<LogLine> =
            match self.get_as(&path, &Params::new().add("start", 0).add("limit", 0), ctx) {
                Ok(l) => l,
                Err(e) => return format!("\n  (task log unavailable: {e})"),
            };
        let skip = lines.len().saturating_sub(self.settings.log_tail);
        let mut out = String::from("\n  last lines of the task log:");
        for l in &lines[skip..] {
            out.push_str(&format!("\n  | {}", l.t));
        }
        out
    }

    fn version(&self, ctx: Ctx<'_>) -> Result<VersionInfo> {
        let mut v = self.version.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = v.as_ref() {
            return Ok(v.clone());
        }
        let got: VersionInfo = self.get_as("/version", &Params::new(), ctx)?;
        *v = Some(got.clone());
        Ok(got)
    }

    fn storage_path(&self, node: &str) -> String {
        format!(
            "/nodes/{}/storage/{}",
            seg(node),
            seg(&self.template_storage)
        )
    }

    fn resources(&self) -> Result<Vec<Resource>> {
        self.get_as(
            "/cluster/resources",
            &Params::new().add("type", "vm"),
            Ctx {
                node: "",
                vmid: None,
            },
        )
    }

    fn upload_now(
        &self,
        node: &str,
        path: &Path,
        name: &str,
        sha256: &str,
        size: u64,
    ) -> Result<()> {
        let ctx = Ctx { node, vmid: None };
        let call_path = format!("{}/upload", self.storage_path(node));
        let call = format!("POST {call_path}");
        let bar = if self.settings.progress {
            let b = indicatif::ProgressBar::with_draw_target(
                Some(size),
                indicatif::ProgressDrawTarget::stderr(),
            );
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_message(format!("upload {name} to {node}"));
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let form = || -> std::io::Result<reqwest::blocking::multipart::Form> {
            let file = File::open(path)?;
            let len = file.metadata()?.len();
            bar.set_position(0);
            let reader = ProgressReader {
                inner: file,
                bar: bar.clone(),
            };
            let part = reqwest::blocking::multipart::Part::reader_with_length(reader, len)
                .file_name(name.to_string())
                .mime_str("application/octet-stream")
                .map_err(std::io::Error::other)?;
            Ok(reqwest::blocking::multipart::Form::new()
                .text("content", "vztmpl")
                .text("checksum-algorithm", "sha256")
                .text("checksum", sha256.to_string())
                .part("filename", part))
        };
        let data = self
            .client
            .upload(&call_path, &form, self.settings.timeouts.upload_body)
            .map_err(|e| Self::err(&call, ctx, e));
        bar.finish_and_clear();
        let data = data?;
        match self.wait_value(&data, &call, ctx, self.settings.timeouts.upload_task) {
            Ok(()) => Ok(()),
            Err(TaskFailure::LockTimeout(m)) => Err(Self::err(&call, ctx, m)),
            Err(TaskFailure::Other(e)) => Err(e),
        }
    }
}

enum TaskFailure {
    LockTimeout(String),
    Other(BackendError),
}

/// Counts bytes read into the progress bar.
struct ProgressReader<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn power(s: &str) -> PowerState {
    if s == "running" {
        PowerState::Running
    } else {
        PowerState::Stopped
    }
}

impl Backend for ProxmoxBackend {
    fn kind(&self) -> &'static str {
        "proxmox"
    }

    fn upload_template(&self, node: &str, path: &Path, sha256: &str) -> Result<StoredTemplate> {
        let ctx = Ctx { node, vmid: None };
        let file_name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            Self::err(
                "upload",
                ctx,
                format!("{} has no usable file name", path.display()),
            )
        })?;
        let name = stored_template_name(file_name, sha256);
        let size = std::fs::metadata(path)
            .map_err(|e| {
                Self::err(
                    "upload",
                    ctx,
                    format!("failed to read {}: {e}", path.display()),
                )
            })?
            .len();
        let volid = format!("{}:vztmpl/{name}", self.template_storage);
        let stored = StoredTemplate {
            volid: volid.clone(),
            filename: name.clone(),
            size,
        };
        let present = self.list_templates(node)?;
        if present.iter().any(|t| t.volid == volid && t.size == size) {
            tracing::info!(
                "{name} is already on {}:{node}; not uploading",
                self.template_storage
            );
            return Ok(stored);
        }
        let call_path = format!("{}/upload", self.storage_path(node));
        let shown = Params::new()
            .add("content", "vztmpl")
            .add("checksum-algorithm", "sha256")
            .add("checksum", sha256)
            .add(
                "filename",
                format!("{name} <- {} ({size} bytes, multipart)", path.display()),
            );
        if self.plan(Method::Post, &call_path, &shown) {
            return Ok(stored);
        }
        let lock = self.node_lock(node);
        let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.upload_now(node, path, &name, sha256, size)?;
        Ok(stored)
    }

    fn list_templates(&self, node: &str) -> Result<Vec<StoredTemplate>> {
        let ctx = Ctx { node, vmid: None };
        let items: Vec<ContentItem> = self.get_as(
            &format!("{}/content", self.storage_path(node)),
            &Params::new().add("content", "vztmpl"),
            ctx,
        )?;
        Ok(items
            .into_iter()
            .filter(|i| i.content.as_deref().is_none_or(|c| c == "vztmpl"))
            .map(|i| StoredTemplate {
                filename: i.volid.rsplit('/').next().unwrap_or(&i.volid).to_string(),
                volid: i.volid,
                size: i.size,
            })
            .collect())
    }

    fn delete_template(&self, node: &str, template: &StoredTemplate) -> Result<()> {
        let path = format!(
            "{}/content/{}",
            self.storage_path(node),
            seg(&template.volid)
        );
        self.task_call(
            Method::Delete,
            &path,
            &Params::new(),
            Ctx { node, vmid: None },
            self.settings.timeouts.destroy,
            &[],
        )
    }

    fn create(&self, spec: &ContainerSpec) -> Result<()> {
        let path = format!("/nodes/{}/lxc", seg(&spec.node));
        let p = params::create(spec, &self.rootfs_storage, self.net_firewall)
            .map_err(|e| anyhow::anyhow!("CT {}: {e}", spec.vmid))?;
        self.task_call(
            Method::Post,
            &path,
            &p,
            Ctx {
                node: &spec.node,
                vmid: Some(spec.vmid),
            },
            self.settings.timeouts.create,
            &[],
        )
    }

    fn start(&self, node: &str, vmid: u32) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{vmid}/status/start", seg(node));
        self.task_call(
            Method::Post,
            &path,
            &Params::new(),
            Ctx {
                node,
                vmid: Some(vmid),
            },
            self.settings.timeouts.start,
            &["already running"],
        )
    }

    fn shutdown(&self, node: &str, vmid: u32, timeout: Duration) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{vmid}/status/shutdown", seg(node));
        self.task_call(
            Method::Post,
            &path,
            &Params::new().add("timeout", timeout.as_secs()),
            Ctx {
                node,
                vmid: Some(vmid),
            },
            timeout + self.settings.timeouts.stop,
            &["not running"],
        )
    }

    fn stop(&self, node: &str, vmid: u32) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{vmid}/status/stop", seg(node));
        self.task_call(
            Method::Post,
            &path,
            &Params::new(),
            Ctx {
                node,
                vmid: Some(vmid),
            },
            self.settings.timeouts.stop,
            &["not running"],
        )
    }

    fn destroy(&self, node: &str, vmid: u32) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{vmid}", seg(node));
        self.task_call(
            Method::Delete,
            &path,
            &Params::new()
                .flag("purge", true)
                .flag("destroy-unreferenced-disks", true),
            Ctx {
                node,
                vmid: Some(vmid),
            },
            self.settings.timeouts.destroy,
            &[],
        )
    }

    fn status(&self, node: &str, vmid: u32) -> Result<Option<ContainerStatus>> {
        let path = format!("/nodes/{}/lxc/{vmid}/status/current", seg(node));
        let ctx = Ctx {
            node,
            vmid: Some(vmid),
        };
        match self.client.call(Method::Get, &path, &Params::new()) {
            Ok(v) => {
                let st: CtStatus = serde_json::from_value(v).map_err(|e| {
                    Self::err(
                        &format!("GET {path}"),
                        ctx,
                        format!("unexpected answer: {e}"),
                    )
                })?;
                Ok(Some(ContainerStatus {
                    vmid,
                    node: node.to_string(),
                    name: st.name.unwrap_or_default(),
                    state: power(&st.status),
                    tags: st.tags.as_deref().map(wire::split_tags).unwrap_or_default(),
                }))
            }
            Err(e) if e.is_missing_guest() => Ok(None),
            Err(e) => Err(Self::err(&format!("GET {path}"), ctx, e)),
        }
    }

    fn list(&self) -> Result<Vec<ContainerStatus>> {
        Ok(self
            .inventory()?
            .into_iter()
            .filter(|c| c.tags.iter().any(|t| t == crate::deploy::tags::OWNER))
            .collect())
    }

    fn inventory(&self) -> Result<Vec<ContainerStatus>> {
        Ok(self
            .resources()?
            .into_iter()
            .filter(|r| r.kind == "lxc" || r.kind == "qemu")
            .filter_map(|r| {
                Some(ContainerStatus {
                    vmid: u32::try_from(r.vmid?).ok()?,
                    node: r.node.unwrap_or_default(),
                    name: r.name.unwrap_or_default(),
                    state: power(r.status.as_deref().unwrap_or("")),
                    tags: r.tags.as_deref().map(wire::split_tags).unwrap_or_default(),
                })
            })
            .collect())
    }

    fn move_data_volume(&self, node: &str, from_vmid: u32, to_vmid: u32) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{from_vmid}/move_volume", seg(node));
        self.task_call(
            Method::Post,
            &path,
            &Params::new()
                .add("volume", "mp0")
                .add("target-vmid", to_vmid)
                .add("target-volume", "mp0"),
            Ctx {
                node,
                vmid: Some(from_vmid),
            },
            self.settings.timeouts.move_volume,
            &[],
        )
    }

    fn set_tags(&self, node: &str, vmid: u32, tags: &[String]) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{vmid}/config", seg(node));
        let p = params::tags(tags).map_err(|e| anyhow::anyhow!("CT {vmid}: {e}"))?;
        if self.plan(Method::Put, &path, &p) {
            return Ok(());
        }
        self.client
            .call(Method::Put, &path, &p)
            .map(|_| ())
            .map_err(|e| {
                Self::err(
                    &format!("PUT {path}"),
                    Ctx {
                        node,
                        vmid: Some(vmid),
                    },
                    e,
                )
            })
    }

    fn firewall(&self) -> Option<&dyn firewall::PveFirewall> {
        Some(self)
    }

    fn has_data_volume(&self, node: &str, vmid: u32) -> Result<bool> {
        let path = format!("/nodes/{}/lxc/{vmid}/config", seg(node));
        let conf: serde_json::Map<String, Value> = self.get_as(
            &path,
            &Params::new(),
            Ctx {
                node,
                vmid: Some(vmid),
            },
        )?;
        Ok(conf.contains_key("mp0"))
    }

    fn capabilities(&self) -> Result<Capabilities> {
        let v = self.version(Ctx {
            node: "",
            vmid: None,
        })?;
        let new = v.at_least(9, 1);
        Ok(Capabilities {
            env: new,
            entrypoint: new,
            host_managed: new,
        })
    }

    fn template_storage_shared(&self, node: &str) -> Result<bool> {
        let ctx = Ctx { node, vmid: None };
        let path = format!("{}/status", self.storage_path(node));
        let st: StorageStatus = self.get_as(&path, &Params::new(), ctx)?;
        if !st.content.split(',').any(|c| c.trim() == "vztmpl") {
            return Err(Self::err(
                &format!("GET {path}"),
                ctx,
                format!(
                    "storage '{}' does not hold container templates (content: {}); add 'vztmpl' to its content types or set proxmox.template_storage",
                    self.template_storage, st.content
                ),
            ));
        }
        Ok(st.shared)
    }
}
