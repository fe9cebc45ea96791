//! The Proxmox VE backend: the [`Backend`] trait over the HTTPS API.
//!
//! Every mutating call that answers with a task id (UPID) is waited on here,
//! with backoff and a per-operation timeout; a failed task is reported with the
//! last lines of its log. A mutating call is sent again only when it provably
//! did not run; a lost answer (596-599, a dropped connection, a timeout) or a
//! failed task is settled by reading the state again ([`settle`]), and the
//! leftover of a failed create is recognised and reported with the commands
//! that remove it. Mutating calls are serialized per node (one lock per
//! node), so callers may drive different nodes from different threads.
//!
//! Every error names the call (`POST /nodes/pve1/lxc`), the node and the VMID.
//! In dry-run mode GETs are made for real (to know what would change) and every
//! mutating call is recorded with its parameters, secrets redacted, instead of
//! being sent.

pub mod client;
pub mod firewall;
pub mod lease;
pub mod params;
pub mod policy;
mod settle;
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
pub use self::settle::START_TRIES;
use self::settle::{Observed, Op, TaskRef};
use self::upid::Upid;
use self::wire::{
    ContentItem, CtStatus, LogLine, Resource, StorageStatus, TaskStatus, VersionInfo,
};
use crate::backend::{
    Backend, BackendError, Capabilities, ContainerSpec, ContainerStatus, CreateLeftover,
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

    /// The cluster's run lease ([`lease`]), on a client of its own.
    pub fn lease(&self, cluster: &str) -> lease::LeaseApi {
        lease::LeaseApi::new(self.client.clone(), cluster)
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

    /// A mutating call, recorded in dry-run, else sent and settled by
    /// `observe` when its answer is lost or its task fails ([`settle`]).
    fn task_op(
        &self,
        method: Method,
        path: &str,
        params: &Params,
        op: Op<'_>,
        observe: &dyn Fn() -> Result<Observed>,
    ) -> Result<()> {
        if self.plan(method, path, params) {
            return Ok(());
        }
        self.converge(&op, &|| self.client.call(method, path, params), observe)
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
                return Err(TaskFailure::Failed(Self::err(
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

    /// The last [`Settings::log_tail`] lines of a task's log.
    fn log_lines(&self, upid: &Upid, ctx: Ctx<'_>) -> Result<Vec<String>> {
        let path = format!(
            "/nodes/{}/tasks/{}/log",
            seg(&upid.node),
            seg(upid.as_str())
        );
        let lines: Vec<LogLine> =
            self.get_as(&path, &Params::new().add("start", 0).add("limit", 0), ctx)?;
        let skip = lines.len().saturating_sub(self.settings.log_tail);
        Ok(lines.into_iter().skip(skip).map(|l| l.t).collect())
    }

    /// `\n  | line` for the last lines of a task log, or why it cannot be read.
    fn log_tail(&self, upid: &Upid, ctx: Ctx<'_>) -> String {
        match self.log_lines(upid, ctx) {
            Ok(lines) => {
                let mut out = String::from("\n  last lines of the task log:");
                for l in lines {
                    out.push_str(&format!("\n  | {l}"));
                }
                out
            }
            Err(e) => format!("\n  (task log unavailable: {e})"),
        }
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
        let volid = format!("{}:vztmpl/{name}", self.template_storage);
        // `imgcopy` tasks have an empty id: any running one of this token's on
        // the node may be the lost upload's.
        let task = TaskRef::other("imgcopy", "");
        let op = Op::task(
            Method::Post,
            &call_path,
            ctx,
            task,
            self.settings.timeouts.upload_task,
        );
        let done = self.converge(
            &op,
            &|| {
                self.client
                    .upload(&call_path, &form, self.settings.timeouts.upload_body)
            },
            &|| self.observe_stored(node, &volid, size),
        );
        bar.finish_and_clear();
        done
    }

    /// After an upload: is the file on storage? Its name carries the content
    /// hash and the `imgcopy` task stores it only after the checksum matched,
    /// so the name and the size are the proof.
    fn observe_stored(&self, node: &str, volid: &str, size: u64) -> Result<Observed> {
        Ok(
            if self
                .list_templates(node)?
                .iter()
                .any(|t| t.volid == volid && t.size == size)
            {
                Observed::Done
            } else {
                Observed::NotDone
            },
        )
    }
}

enum TaskFailure {
    /// The task stopped on a config lock timeout: it did nothing.
    LockTimeout(String),
    /// The task stopped with an error; the message carries the log tail.
    Failed(BackendError),
    /// The task could not be followed (still running at the timeout, or polling failed).
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

    fn upload_template(
        &self,
        node: &str,
        path: &Path,
        name: &str,
        sha256: &str,
    ) -> Result<StoredTemplate> {
        let ctx = Ctx { node, vmid: None };
        let name = name.to_string();
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
        let ctx = Ctx { node, vmid: None };
        let task = TaskRef::other("imgdel", self.template_storage.clone());
        let op = Op::task(
            Method::Delete,
            &path,
            ctx,
            task,
            self.settings.timeouts.destroy,
        );
        self.task_op(Method::Delete, &path, &Params::new(), op, &|| {
            let there = self
                .list_templates(node)?
                .iter()
                .any(|t| t.volid == template.volid);
            Ok(if there {
                Observed::NotDone
            } else {
                Observed::Done
            })
        })
    }

    /// A create whose answer is lost, or that meets "already exists", is
    /// decided by the container found: the one asked for is success, a config
    /// still locked by a failed create is a [`CreateLeftover`], anything else
    /// an error. A create task that failed on its config lock is sent again
    /// only when it left nothing behind.
    fn create(&self, spec: &ContainerSpec) -> Result<()> {
        let path = format!("/nodes/{}/lxc", seg(&spec.node));
        let ctx = Ctx {
            node: &spec.node,
            vmid: Some(spec.vmid),
        };
        let task = TaskRef::ct("vzcreate", spec.vmid);
        let op = Op::task(
            Method::Post,
            &path,
            ctx,
            task,
            self.settings.timeouts.create,
        )
        // `check_vmid_unused`: "CT 101 already exists on node 'pve1'".
        .settle_on(&["already exists"]);
        let params = params::create(spec, &self.rootfs_storage, self.net_firewall)
            .map_err(|e| anyhow::anyhow!("CT {}: {e}", spec.vmid))?;
        self.task_op(Method::Post, &path, &params, op, &|| {
            self.observe_create(spec)
        })
    }

    /// A `vzstart` task that fails while the container stays stopped and
    /// unlocked is tried again, up to [`START_TRIES`] times.
    fn start(&self, node: &str, vmid: u32) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{vmid}/status/start", seg(node));
        let ctx = Ctx {
            node,
            vmid: Some(vmid),
        };
        let task = TaskRef::ct("vzstart", vmid);
        let op = Op::task(Method::Post, &path, ctx, task, self.settings.timeouts.start)
            .settle_on(&["already running"])
            .task_tries(START_TRIES);
        self.task_op(Method::Post, &path, &Params::new(), op, &|| {
            self.observe_power(node, vmid, PowerState::Running)
        })
    }

    fn shutdown(&self, node: &str, vmid: u32, timeout: Duration) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{vmid}/status/shutdown", seg(node));
        let ctx = Ctx {
            node,
            vmid: Some(vmid),
        };
        let task = TaskRef::ct("vzshutdown", vmid);
        let wait = timeout + self.settings.timeouts.stop;
        let op = Op::task(Method::Post, &path, ctx, task, wait).settle_on(&["not running"]);
        let params = Params::new().add("timeout", timeout.as_secs());
        self.task_op(Method::Post, &path, &params, op, &|| {
            self.observe_power(node, vmid, PowerState::Stopped)
        })
    }

    fn stop(&self, node: &str, vmid: u32) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{vmid}/status/stop", seg(node));
        let ctx = Ctx {
            node,
            vmid: Some(vmid),
        };
        let task = TaskRef::ct("vzstop", vmid);
        let op = Op::task(Method::Post, &path, ctx, task, self.settings.timeouts.stop)
            .settle_on(&["not running"]);
        self.task_op(Method::Post, &path, &Params::new(), op, &|| {
            self.observe_power(node, vmid, PowerState::Stopped)
        })
    }

    /// Destroying a container that is already gone is done. Never data: a
    /// container whose config holds a data volume (`mp0`) is refused, and
    /// the call does not set `destroy-unreferenced-disks`, which frees every
    /// volume *named* for the VMID even when another container's config
    /// holds it (`PVE::LXC::destroy_lxc_container`); `purge` frees only the
    /// volumes of this config that this CT owns.
    fn destroy(&self, node: &str, vmid: u32) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{vmid}", seg(node));
        let ctx = Ctx {
            node,
            vmid: Some(vmid),
        };
        if self.ct_status(node, vmid)?.is_none() {
            return Ok(());
        }
        let conf: serde_json::Map<String, Value> =
            self.get_as(&format!("{path}/config"), &Params::new(), ctx)?;
        if let Some(Value::String(mp0)) = conf.get("mp0") {
            let vol = mp0.split(',').next().unwrap_or(mp0);
            return Err(Self::err(
                &format!("DELETE {path}"),
                ctx,
                format!(
                    "refusing to destroy CT {vmid}: it holds a data volume (mp0 {vol}); haimg never destroys data. Move the volume to the live member (`haimg deploy` does when the slot needs it) or, if the data is not needed, remove it by hand: `pct set {vmid} --delete mp0`, then `haimg gc`"
                ),
            ));
        }
        let task = TaskRef::ct("vzdestroy", vmid);
        let op = Op::task(
            Method::Delete,
            &path,
            ctx,
            task,
            self.settings.timeouts.destroy,
        )
        .settle_on(&["does not exist"]);
        let params = Params::new().flag("purge", true);
        self.task_op(Method::Delete, &path, &params, op, &|| {
            self.observe_gone(node, vmid)
        })
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
            .filter(|c| c.tags.iter().any(|t| t == crate::backend::OWNER_TAG))
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
        let ctx = Ctx {
            node,
            vmid: Some(from_vmid),
        };
        // The reassign task's id is `<vmid>-<key>><target>-<key>`.
        let task = TaskRef::other("move_volume", format!("{from_vmid}-mp0>{to_vmid}-mp0"));
        let op = Op::task(
            Method::Post,
            &path,
            ctx,
            task,
            self.settings.timeouts.move_volume,
        );
        let params = Params::new()
            .add("volume", "mp0")
            .add("target-vmid", to_vmid)
            .add("target-volume", "mp0");
        self.task_op(Method::Post, &path, &params, op, &|| {
            let src = self.has_data_volume(node, from_vmid)?;
            let dst = self.has_data_volume(node, to_vmid)?;
            Ok(match (src, dst) {
                (false, true) => Observed::Done,
                (true, false) => Observed::NotDone,
                (s, d) => Observed::Failed(Self::err(
                    &format!("POST {path}"),
                    ctx,
                    format!(
                        "after the move CT {from_vmid} {} mp0 and CT {to_vmid} {} it; check both in Proxmox",
                        if s { "has" } else { "lacks" },
                        if d { "has" } else { "lacks" }
                    ),
                )),
            })
        })
    }

    /// Tags are set with a synchronous `PUT .../config`; a lost answer is
    /// settled by reading the tags back.
    fn set_tags(&self, node: &str, vmid: u32, tags: &[String]) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{vmid}/config", seg(node));
        let p = params::tags(tags).map_err(|e| anyhow::anyhow!("CT {vmid}: {e}"))?;
        if self.plan(Method::Put, &path, &p) {
            return Ok(());
        }
        let ctx = Ctx {
            node,
            vmid: Some(vmid),
        };
        let op = Op::sync(Method::Put, &path, ctx);
        let want: std::collections::BTreeSet<String> =
            tags.iter().map(|t| t.to_ascii_lowercase()).collect();
        self.converge(&op, &|| self.client.call(Method::Put, &path, &p), &|| {
            let have: std::collections::BTreeSet<String> = self
                .ct_status(node, vmid)?
                .and_then(|st| st.tags)
                .as_deref()
                .map(wire::split_tags)
                .unwrap_or_default()
                .into_iter()
                .map(|t| t.to_ascii_lowercase())
                .collect();
            Ok(if have == want {
                Observed::Done
            } else {
                Observed::NotDone
            })
        })
    }

    fn set_tags_onboot(&self, node: &str, vmid: u32, tags: &[String], onboot: bool) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{vmid}/config", seg(node));
        let p = params::tags_onboot(tags, onboot).map_err(|e| anyhow::anyhow!("CT {vmid}: {e}"))?;
        if self.plan(Method::Put, &path, &p) {
            return Ok(());
        }
        let ctx = Ctx {
            node,
            vmid: Some(vmid),
        };
        let op = Op::sync(Method::Put, &path, ctx);
        let want: std::collections::BTreeSet<String> =
            tags.iter().map(|t| t.to_ascii_lowercase()).collect();
        self.converge(&op, &|| self.client.call(Method::Put, &path, &p), &|| {
            // A lost answer is settled by reading the config: both written or neither.
            let conf: serde_json::Map<String, Value> = self.get_as(&path, &Params::new(), ctx)?;
            let have: std::collections::BTreeSet<String> = conf
                .get("tags")
                .and_then(Value::as_str)
                .map(wire::split_tags)
                .unwrap_or_default()
                .into_iter()
                .map(|t| t.to_ascii_lowercase())
                .collect();
            let boots = conf.get("onboot").is_some_and(|v| {
                v.as_u64() == Some(1) || v.as_str() == Some("1") || v.as_bool() == Some(true)
            });
            Ok(if have == want && boots == onboot {
                Observed::Done
            } else {
                Observed::NotDone
            })
        })
    }

    fn drift(&self, spec: &ContainerSpec) -> Result<Vec<crate::backend::Drift>> {
        let path = format!("/nodes/{}/lxc/{}/config", seg(&spec.node), spec.vmid);
        let ctx = Ctx {
            node: &spec.node,
            vmid: Some(spec.vmid),
        };
        let conf: serde_json::Map<String, Value> = self.get_as(&path, &Params::new(), ctx)?;
        let want = params::settings(spec, self.net_firewall)
            .map_err(|e| anyhow::anyhow!("CT {}: {e}", spec.vmid))?;
        Ok(want
            .into_iter()
            .filter_map(|(key, want, in_place)| {
                let have = match conf.get(key) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                };
                (!wire::same_setting(key, &have, &want)).then(|| crate::backend::Drift {
                    key: key.to_string(),
                    have,
                    want,
                    in_place,
                })
            })
            .collect())
    }

    /// One `PUT …/config` with every in-place setting; a lost answer is
    /// settled by reading the config again.
    fn reconfigure(&self, spec: &ContainerSpec, drift: &[crate::backend::Drift]) -> Result<()> {
        let path = format!("/nodes/{}/lxc/{}/config", seg(&spec.node), spec.vmid);
        let p = params::reconfigure(drift).map_err(|e| anyhow::anyhow!("CT {}: {e}", spec.vmid))?;
        if p.is_empty() || self.plan(Method::Put, &path, &p) {
            return Ok(());
        }
        let ctx = Ctx {
            node: &spec.node,
            vmid: Some(spec.vmid),
        };
        let op = Op::sync(Method::Put, &path, ctx);
        self.converge(&op, &|| self.client.call(Method::Put, &path, &p), &|| {
            Ok(if self.drift(spec)?.iter().any(|d| d.in_place) {
                Observed::NotDone
            } else {
                Observed::Done
            })
        })
    }

    fn create_leftover(&self, node: &str, vmid: u32) -> Result<Option<CreateLeftover>> {
        match self.ct_status(node, vmid)? {
            Some(st) if st.lock.as_deref() == Some("create") => {}
            _ => return Ok(None),
        }
        let path = format!("/nodes/{}/lxc/{vmid}/config", seg(node));
        let conf: serde_json::Map<String, Value> = self.get_as(
            &path,
            &Params::new(),
            Ctx {
                node,
                vmid: Some(vmid),
            },
        )?;
        self.leftover(node, vmid, None, &conf).map(Some)
    }

    fn enforce_policy(
        &self,
        p: &crate::backend::Policy<'_>,
    ) -> Option<crate::backend::PolicyReport> {
        policy::enforce(self, p, self.is_dry_run())
    }

    fn policy_switch(&self, cluster: &haimg_model::Cluster) -> Result<crate::backend::Switch> {
        policy::expected_switch(self, cluster)
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
