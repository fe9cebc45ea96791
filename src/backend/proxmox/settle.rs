//! Calls that change something, made to converge under Proxmox's real semantics.
//!
//! Such a call is sent once. When its answer is lost — a 596-599 from
//! pveproxy, a dropped connection, a timeout after the request went out
//! ([`ApiError::may_have_run`]) — or Proxmox refuses it in a way that may mean
//! the work is done or under way (`CT 101 already exists`, `already running`),
//! it is never sent again blindly. The task it may have started is looked up
//! (this token's running tasks of that type for that guest, `GET
//! /nodes/{node}/tasks`) and waited on, and then the state is read again:
//! done, not done (then it is sent again, bounded by the retry policy), or a
//! state haimg must not change on its own (an error that names it).
//!
//! A failed task is settled the same way. A config lock timeout did nothing
//! and is tried again; a failed start of a container that is still stopped and
//! unlocked is tried again up to [`START_TRIES`] times; anything else is
//! reported with the tail of its log.
//!
//! A create whose task failed may leave the new config holding only
//! `lock: create` (`pve-container:src/PVE/API2/LXC.pm`, `create_vm`: for a new
//! VMID `$destroy_config_on_error` starts true, so a worker that times out on
//! the config lock neither removes the lock nor the config). No API call can
//! remove that: `check_lock` guards `PUT .../config` (`API2/LXC/Config.pm`)
//! and `DELETE .../{vmid}` (`API2/LXC.pm`, `$early_checks`), neither takes
//! `skiplock`, and `pct unlock` exists only on the node's command line
//! (`src/PVE/CLI/pct.pm`). So [`ProxmoxBackend::leftover`] decides whether the
//! leftover is provably haimg's (the last `vzcreate` task for the VMID was this
//! token's and failed, and the config holds nothing haimg did not send) and
//! hands back the `pct` commands that remove it.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::Duration;

use serde_json::{Map, Value};

use super::client::{seg, ApiError, Method, Params};
use super::upid::Upid;
use super::wire::{split_tags, CtStatus, TaskEntry};
use super::{Ctx, ProxmoxBackend, TaskFailure};
use crate::backend::OWNER_TAG as OWNER;
use crate::backend::{BackendError, ContainerSpec, CreateLeftover, PowerState, Result};

/// Tries of a start whose `vzstart` task failed while the container stayed
/// stopped and unlocked (a second start is harmless; a third failure is not luck).
pub const START_TRIES: u32 = 3;

/// The task a call starts, to find it again when its id was lost.
pub(super) struct TaskRef {
    kind: &'static str,
    /// The task's id field: the VMID, `""` for `imgcopy`, `100-mp0>1100-mp0` for a reassign.
    id: String,
    /// Filter the task list by this VMID (the id is a VMID).
    vmid: Option<u32>,
}

/// One call that changes something.
pub(super) struct Op<'a> {
    /// `POST /nodes/pve1/lxc`, for messages.
    call: String,
    ctx: Ctx<'a>,
    /// `None`: the call is synchronous (answers `null`, no task).
    task: Option<TaskRef>,
    timeout: Duration,
    /// Immediate 500s that may mean the work is done or under way.
    settle_on: &'a [&'a str],
    /// Tries when the task failed with anything but a lock timeout and the
    /// state shows sending again is safe (1: report the first failure).
    task_tries: u32,
}

impl TaskRef {
    /// A task on one container: its id is the VMID.
    pub fn ct(kind: &'static str, vmid: u32) -> TaskRef {
        TaskRef {
            kind,
            id: vmid.to_string(),
            vmid: Some(vmid),
        }
    }

    /// A task whose id is not a VMID (`""` matches any id).
    pub fn other(kind: &'static str, id: impl Into<String>) -> TaskRef {
        TaskRef {
            kind,
            id: id.into(),
            vmid: None,
        }
    }
}

impl<'a> Op<'a> {
    /// A call that starts `task`, waited on for up to `timeout`.
    pub fn task(
        method: Method,
        path: &str,
        ctx: Ctx<'a>,
        task: TaskRef,
        timeout: Duration,
    ) -> Self {
        Op {
            call: format!("{method} {path}"),
            ctx,
            task: Some(task),
            timeout,
            settle_on: &[],
            task_tries: 1,
        }
    }

    /// A synchronous call (Proxmox answers `null` when it is done).
    pub fn sync(method: Method, path: &str, ctx: Ctx<'a>) -> Self {
        Op {
            call: format!("{method} {path}"),
            ctx,
            task: None,
            timeout: Duration::ZERO,
            settle_on: &[],
            task_tries: 1,
        }
    }

    pub fn settle_on(mut self, texts: &'a [&'a str]) -> Self {
        self.settle_on = texts;
        self
    }

    pub fn task_tries(mut self, n: u32) -> Self {
        self.task_tries = n;
        self
    }
}

/// The state read back after an answer was lost or a task failed.
pub(super) enum Observed {
    Done,
    /// Safe to send again.
    NotDone,
    /// A state that sending again would not fix.
    Failed(BackendError),
}

/// `message` with `suffix` after its first line (task errors carry the log
/// tail on the following lines).
fn after_first_line(e: BackendError, suffix: &str) -> BackendError {
    match e {
        BackendError::Call {
            call,
            node,
            vmid,
            message,
        } => {
            let message = match message.split_once('\n') {
                Some((first, rest)) => format!("{first}{suffix}\n{rest}"),
                None => format!("{message}{suffix}"),
            };
            BackendError::Call {
                call,
                node,
                vmid,
                message,
            }
        }
        other => other,
    }
}

impl ProxmoxBackend {
    /// Send `op` and see it through; see the module docs. The caller has
    /// already given dry-run its chance ([`ProxmoxBackend::plan`]).
    pub(super) fn converge(
        &self,
        op: &Op<'_>,
        send: &dyn Fn() -> Result<Value, ApiError>,
        observe: &dyn Fn() -> Result<Observed>,
    ) -> Result<()> {
        let lock = self.node_lock(op.ctx.node);
        let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let attempts = self.settings.retry.attempts.max(1);
        let mut sends = 0u32;
        let mut failed_tasks = 0u32;
        loop {
            sends += 1;
            let mut lost = None;
            let upid = match send() {
                Ok(data) => match &op.task {
                    None => return Ok(()),
                    Some(_) => Some(self.upid_in(&data, op)?),
                },
                Err(e) if e.may_have_run() || self.settles(op, &e) => {
                    tracing::info!(
                        "{}: {e}; reading the state instead of sending again",
                        op.call
                    );
                    let running = self.running_task(op)?;
                    lost = Some(e);
                    running
                }
                Err(e) => return Err(Self::err(&op.call, op.ctx, e)),
            };
            let mut failure: Option<(BackendError, bool)> = None;
            if let Some(u) = &upid {
                match self.wait_task(u, &op.call, op.ctx, op.timeout) {
                    Ok(()) if lost.is_none() => return Ok(()),
                    Ok(()) => {}
                    Err(TaskFailure::LockTimeout(m)) => {
                        failure = Some((Self::err(&op.call, op.ctx, m), true));
                    }
                    Err(TaskFailure::Failed(e)) => failure = Some((e, false)),
                    Err(TaskFailure::Other(e)) => return Err(e),
                }
            }
            match observe()? {
                Observed::Done => return Ok(()),
                Observed::Failed(e) => return Err(e),
                Observed::NotDone => {}
            }
            let give_up = match &failure {
                Some((_, transient)) => {
                    failed_tasks += 1;
                    !*transient && failed_tasks >= op.task_tries
                }
                None => false,
            };
            if give_up || sends >= attempts {
                let tries = if sends > 1 {
                    format!(" (gave up after {sends} tries)")
                } else {
                    String::new()
                };
                return Err(match (failure, lost) {
                    (Some((e, _)), _) => after_first_line(e, &tries),
                    (None, Some(e)) => Self::err(&op.call, op.ctx, format!("{e}{tries}")),
                    (None, None) => {
                        Self::err(&op.call, op.ctx, format!("the call had no effect{tries}"))
                    }
                });
            }
            tracing::debug!("{}: not done; sending again (try {})", op.call, sends + 1);
            self.client.stats.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(self.settings.retry.delay(sends));
        }
    }

    fn settles(&self, op: &Op<'_>, e: &ApiError) -> bool {
        e.status() == Some(500) && op.settle_on.iter().any(|t| e.message().contains(t))
    }

    fn upid_in(&self, data: &Value, op: &Op<'_>) -> Result<Upid> {
        let s = data.as_str().ok_or_else(|| {
            Self::err(&op.call, op.ctx, format!("expected a task id, got {data}"))
        })?;
        Upid::parse(s).map_err(|e| Self::err(&op.call, op.ctx, e))
    }

    /// This node's tasks of one type (and guest), newest first.
    fn tasks(
        &self,
        node: &str,
        kind: &str,
        vmid: Option<u32>,
        source: &str,
    ) -> Result<Vec<TaskEntry>> {
        let mut p = Params::new().add("typefilter", kind).add("source", source);
        if let Some(v) = vmid {
            p = p.add("vmid", v);
        }
        let mut list: Vec<TaskEntry> = self.get_as(
            &format!("/nodes/{}/tasks", seg(node)),
            &p,
            Ctx { node, vmid },
        )?;
        list.retain(|t| t.kind == kind);
        list.sort_by_key(|t| std::cmp::Reverse(t.starttime.unwrap_or(0)));
        Ok(list)
    }

    /// The newest task of `op`'s kind this token still runs for the same
    /// guest: what a lost answer may have started.
    fn running_task(&self, op: &Op<'_>) -> Result<Option<Upid>> {
        let Some(t) = &op.task else { return Ok(None) };
        let me = self.client.token().id();
        Ok(self
            .tasks(op.ctx.node, t.kind, t.vmid, "active")?
            .into_iter()
            .filter(|e| e.running() && e.by_token(me))
            .find(|e| t.id.is_empty() || e.id.as_deref() == Some(t.id.as_str()))
            .and_then(|e| Upid::parse(&e.upid).ok()))
    }

    /// `GET .../status/current`; `None` when the guest is not on `node`.
    pub(super) fn ct_status(&self, node: &str, vmid: u32) -> Result<Option<CtStatus>> {
        let path = format!("/nodes/{}/lxc/{vmid}/status/current", seg(node));
        let ctx = Ctx {
            node,
            vmid: Some(vmid),
        };
        match self.client.call(Method::Get, &path, &Params::new()) {
            Ok(v) => serde_json::from_value(v).map(Some).map_err(|e| {
                Self::err(
                    &format!("GET {path}"),
                    ctx,
                    format!("unexpected answer: {e}"),
                )
            }),
            Err(e) if e.is_missing_guest() => Ok(None),
            Err(e) => Err(Self::err(&format!("GET {path}"), ctx, e)),
        }
    }

    /// `GET .../config`; `None` when the guest is not on `node`.
    fn ct_config(&self, node: &str, vmid: u32) -> Result<Option<Map<String, Value>>> {
        let path = format!("/nodes/{}/lxc/{vmid}/config", seg(node));
        let ctx = Ctx {
            node,
            vmid: Some(vmid),
        };
        match self.client.call(Method::Get, &path, &Params::new()) {
            Ok(Value::Object(o)) => Ok(Some(o)),
            Ok(other) => Err(Self::err(
                &format!("GET {path}"),
                ctx,
                format!("unexpected answer: expected an object, got {other}"),
            )),
            Err(e) if e.is_missing_guest() => Ok(None),
            Err(e) => Err(Self::err(&format!("GET {path}"), ctx, e)),
        }
    }

    /// After a start, shutdown or stop: is the guest in `want`?
    pub(super) fn observe_power(
        &self,
        node: &str,
        vmid: u32,
        want: PowerState,
    ) -> Result<Observed> {
        let ctx = Ctx {
            node,
            vmid: Some(vmid),
        };
        let call = format!("GET /nodes/{}/lxc/{vmid}/status/current", seg(node));
        Ok(match self.ct_status(node, vmid)? {
            None => Observed::Failed(Self::err(
                &call,
                ctx,
                format!("CT {vmid} is no longer on node {node}"),
            )),
            Some(st) if super::power(&st.status) == want => Observed::Done,
            Some(CtStatus { lock: Some(l), .. }) => Observed::Failed(Self::err(
                &call,
                ctx,
                format!("CT {vmid} is locked ({l}) by another operation"),
            )),
            Some(_) => Observed::NotDone,
        })
    }

    /// After a destroy: is the guest gone?
    pub(super) fn observe_gone(&self, node: &str, vmid: u32) -> Result<Observed> {
        Ok(match self.ct_status(node, vmid)? {
            None => Observed::Done,
            Some(CtStatus { lock: Some(l), .. }) if l != "destroyed" => {
                Observed::Failed(Self::err(
                    &format!("DELETE /nodes/{}/lxc/{vmid}", seg(node)),
                    Ctx {
                        node,
                        vmid: Some(vmid),
                    },
                    format!("CT {vmid} is locked ({l}) by another operation"),
                ))
            }
            Some(_) => Observed::NotDone,
        })
    }

    /// After a create: the container we asked for (done), nothing (not done),
    /// a leftover of the create, or somebody else's guest.
    pub(super) fn observe_create(&self, spec: &ContainerSpec) -> Result<Observed> {
        let (node, vmid) = (spec.node.as_str(), spec.vmid);
        let Some(conf) = self.ct_config(node, vmid)? else {
            return Ok(Observed::NotDone);
        };
        if conf.get("lock").and_then(Value::as_str) == Some("create") {
            let l = self.leftover(node, vmid, Some(spec), &conf)?;
            return Ok(Observed::Failed(BackendError::CreateLeftover(Box::new(l))));
        }
        Ok(match created_as(spec, &conf) {
            Ok(()) => Observed::Done,
            Err(why) => Observed::Failed(Self::err(
                &format!("POST /nodes/{}/lxc", seg(node)),
                Ctx {
                    node,
                    vmid: Some(vmid),
                },
                format!("CT {vmid} already exists on node {node} and is not the container haimg asked for: {why}"),
            )),
        })
    }

    /// Whether a guest whose config holds `lock: create` is what a failed
    /// create of haimg's left behind, and how to remove it.
    pub(super) fn leftover(
        &self,
        node: &str,
        vmid: u32,
        spec: Option<&ContainerSpec>,
        conf: &Map<String, Value>,
    ) -> Result<CreateLeftover> {
        let me = self.client.token().id();
        let tasks = self.tasks(node, "vzcreate", Some(vmid), "all")?;
        let last = tasks
            .iter()
            .find(|t| t.id.as_deref() == Some(vmid.to_string().as_str()));
        let config = config_is_ours(spec, conf);
        let (owned, evidence) = match (last, &config) {
            (None, _) => (false, format!("no create task for it is listed on {node}")),
            (Some(t), _) if !t.by_token(me) => (
                false,
                format!(
                    "its last create task {} was started by {}{}",
                    t.upid,
                    t.user,
                    t.tokenid
                        .as_deref()
                        .map(|x| format!("!{x}"))
                        .unwrap_or_default()
                ),
            ),
            (Some(t), _) if t.running() => (
                false,
                format!("its create task {} is still running", t.upid),
            ),
            (Some(t), _) if t.succeeded() => {
                (false, format!("its last create task {} succeeded", t.upid))
            }
            (Some(_), Err(why)) => (false, why.clone()),
            (Some(t), Ok(what)) => (
                true,
                format!(
                    "task {} of token {me} failed: {}; {what}",
                    t.upid,
                    t.status.as_deref().unwrap_or("unknown status")
                ),
            ),
        };
        let mine = last.filter(|t| t.by_token(me));
        let log_tail = match mine.and_then(|t| Upid::parse(&t.upid).ok()) {
            Some(u) => self
                .log_lines(
                    &u,
                    Ctx {
                        node,
                        vmid: Some(vmid),
                    },
                )
                .unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(CreateLeftover {
            node: node.to_string(),
            vmid,
            owned,
            evidence,
            task: mine.map(|t| t.upid.clone()),
            exitstatus: mine.and_then(|t| t.status.clone()),
            log_tail,
            commands: vec![
                format!("pct unlock {vmid}"),
                format!("pct destroy {vmid} --purge --destroy-unreferenced-disks"),
            ],
        })
    }
}

/// Whether a locked config holds only what haimg's create writes: the lock
/// alone (`create_and_lock_config`), or what haimg sent, tagged `haimg`.
fn config_is_ours(
    spec: Option<&ContainerSpec>,
    conf: &Map<String, Value>,
) -> std::result::Result<String, String> {
    let rest: Vec<&String> = conf
        .keys()
        .filter(|k| !matches!(k.as_str(), "lock" | "digest"))
        .collect();
    if rest.is_empty() {
        return Ok("the config holds only the lock".into());
    }
    let tags = conf
        .get("tags")
        .and_then(Value::as_str)
        .map(split_tags)
        .unwrap_or_default();
    if !tags.iter().any(|t| t.eq_ignore_ascii_case(OWNER)) {
        return Err(format!(
            "its config holds settings without the '{OWNER}' tag ({})",
            rest.iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(spec) = spec {
        created_as(spec, conf)
            .map_err(|why| format!("its config is not what haimg sent: {why}"))?;
    }
    Ok("the config holds what haimg sent".into())
}

/// Whether `conf` is the container `spec` describes: its hostname, its MAC
/// on net0 and every tag haimg gives it (Proxmox lowercases and sorts tags).
fn created_as(spec: &ContainerSpec, conf: &Map<String, Value>) -> std::result::Result<(), String> {
    let text = |k: &str| conf.get(k).and_then(Value::as_str).unwrap_or("");
    if text("hostname") != spec.hostname {
        return Err(format!(
            "hostname {:?}, not {:?}",
            text("hostname"),
            spec.hostname
        ));
    }
    let mac = text("net0")
        .split(',')
        .find_map(|kv| kv.strip_prefix("hwaddr="))
        .unwrap_or("");
    if !mac.eq_ignore_ascii_case(&spec.hwaddr) {
        return Err(format!("net0 hwaddr {mac:?}, not {:?}", spec.hwaddr));
    }
    let have: Vec<String> = split_tags(text("tags"))
        .into_iter()
        .map(|t| t.to_ascii_lowercase())
        .collect();
    let missing: Vec<&String> = spec
        .tags
        .iter()
        .filter(|t| !have.contains(&t.to_ascii_lowercase()))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "tags {:?} lack {}",
            text("tags"),
            missing
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::StoredTemplate;
    use haimg_model::Role;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            vmid: 101,
            node: "pve2".into(),
            hostname: "nginx2".into(),
            role: Role::Lb,
            slot: "nginx2".into(),
            template: StoredTemplate {
                volid: "templates:vztmpl/haimg-lb_1.0.0-0123456789ab_amd64.tar.zst".into(),
                filename: "haimg-lb_1.0.0-0123456789ab_amd64.tar.zst".into(),
                size: 1,
            },
            ip: "192.168.30.101".parse().unwrap(),
            prefix: 24,
            gateway: "192.168.30.1".parse().unwrap(),
            bridge: "vmbr0".into(),
            hwaddr: "02:AA:BB:CC:DD:EE".into(),
            nameservers: Vec::new(),
            search_domain: None,
            cores: 1,
            memory_mb: 512,
            rootfs_gb: 4,
            data_volume_gb: None,
            data_mount: None,
            tags: vec!["haimg".into(), "slot-nginx2".into(), "Role-LB".into()],
            env: Vec::new(),
            onboot: true,
            entrypoint: None,
            host_managed: false,
        }
    }

    fn conf(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_container_asked_for_is_recognised_as_proxmox_stores_it() {
        let s = spec();
        // Proxmox lowercases and sorts tags; the MAC's case may differ.
        let ok = conf(
            serde_json::json!({"hostname": "nginx2", "tags": "haimg;role-lb;slot-nginx2",
            "net0": "name=eth0,bridge=vmbr0,hwaddr=02:aa:bb:cc:dd:ee,ip=192.168.30.101/24,type=veth",
            "digest": "x"}),
        );
        assert_eq!(created_as(&s, &ok), Ok(()));
        let other_host = conf(serde_json::json!({"hostname": "web", "tags": "haimg"}));
        assert_eq!(
            created_as(&s, &other_host),
            Err(r#"hostname "web", not "nginx2""#.into())
        );
        let other_mac = conf(
            serde_json::json!({"hostname": "nginx2", "net0": "name=eth0,hwaddr=02:00:00:00:00:01"}),
        );
        assert!(created_as(&s, &other_mac).unwrap_err().contains("hwaddr"));
        let few_tags = conf(
            serde_json::json!({"hostname": "nginx2", "tags": "haimg", "net0": "hwaddr=02:AA:BB:CC:DD:EE"}),
        );
        assert_eq!(
            created_as(&s, &few_tags),
            Err(r#"tags "haimg" lack slot-nginx2, Role-LB"#.into())
        );
    }

    #[test]
    fn a_locked_config_is_ours_only_when_it_holds_nothing_foreign() {
        let only_lock = conf(serde_json::json!({"lock": "create", "digest": "d"}));
        assert!(config_is_ours(None, &only_lock).is_ok());
        let untagged =
            conf(serde_json::json!({"lock": "create", "hostname": "db1", "memory": 2048}));
        insta::assert_snapshot!(config_is_ours(None, &untagged).unwrap_err(), @"its config holds settings without the 'haimg' tag (hostname, memory)");
        let tagged_other =
            conf(serde_json::json!({"lock": "create", "hostname": "db1", "tags": "haimg"}));
        assert!(config_is_ours(None, &tagged_other).is_ok());
        assert!(config_is_ours(Some(&spec()), &tagged_other)
            .unwrap_err()
            .starts_with("its config is not what haimg sent: hostname"));
    }

    #[test]
    fn tries_are_named_on_the_first_line_before_the_log_tail() {
        let e = BackendError::Call {
            call: "POST /x".into(),
            node: "pve1".into(),
            vmid: Some(100),
            message: "task vzstart failed: boom\n  last lines of the task log:\n  | boom".into(),
        };
        insta::assert_snapshot!(after_first_line(e, " (gave up after 3 tries)").to_string(), @r"
        POST /x on node pve1 for CT 100: task vzstart failed: boom (gave up after 3 tries)
          last lines of the task log:
          | boom
        ");
    }
}
