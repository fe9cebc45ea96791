//! The fake's model of a cluster (nodes, storages, containers, tasks) and its
//! request handling. Semantics follow the Perl handlers haimg calls; texts of
//! synchronous failures are Proxmox's own.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::http::{Early, Handler, Outcome, Request, Response};
use super::schema::Schema;
use super::{Body, Config, Fault, FaultKind, Part, Recorded, TOKEN_ID, TOKEN_SECRET};

#[derive(Debug, Clone)]
pub struct Storage {
    pub id: String,
    pub kind: String,
    pub shared: bool,
    pub content: String,
    /// Files per node ("*" when shared): name -> (size, sha256).
    pub files: BTreeMap<String, BTreeMap<String, (u64, String)>>,
}

impl Storage {
    pub fn new(id: &str, kind: &str, shared: bool, content: &str) -> Storage {
        Storage {
            id: id.into(),
            kind: kind.into(),
            shared,
            content: content.into(),
            files: BTreeMap::new(),
        }
    }
    fn key(&self, node: &str) -> String {
        if self.shared {
            "*".into()
        } else {
            node.into()
        }
    }
    pub fn files_on(&self, node: &str) -> BTreeMap<String, (u64, String)> {
        self.files.get(&self.key(node)).cloned().unwrap_or_default()
    }
    fn holds(&self, c: &str) -> bool {
        self.content.split(',').any(|x| x == c)
    }
}

#[derive(Debug, Clone)]
pub struct Container {
    pub vmid: u32,
    pub node: String,
    pub kind: String,
    pub running: bool,
    pub lock: Option<String>,
    pub config: BTreeMap<String, String>,
}

impl Container {
    pub fn tags(&self) -> String {
        self.config.get("tags").cloned().unwrap_or_default()
    }
    /// `PVE::LXC::vmstatus`: the hostname, or `CT<vmid>` when the config has none.
    pub fn name(&self) -> String {
        self.config
            .get("hostname")
            .cloned()
            .unwrap_or_else(|| format!("CT{}", self.vmid))
    }
}

#[derive(Debug, Clone)]
enum Effect {
    None,
    Store {
        storage: String,
        node: String,
        name: String,
        size: u64,
        sha: String,
        want: String,
    },
    /// The config the create writes when its worker is done (`create_vm`
    /// writes only `lock: create` before forking, the rest at the end).
    Create(u32, BTreeMap<String, String>),
    Start(u32),
    Stop(u32),
    /// The VMID and whether `destroy-unreferenced-disks` was set.
    Destroy(u32, bool),
    /// `move_volume` to another container: (vmid, key, target vmid, target key).
    Reassign(u32, String, u32, String),
}

#[derive(Debug, Clone)]
pub struct Task {
    pub upid: String,
    pub node: String,
    pub kind: String,
    pub polls_left: u32,
    pub ready_at: Option<Instant>,
    /// Set when stopped: "OK" or the error.
    pub exitstatus: Option<String>,
    pub fail_with: Option<String>,
    /// A failed `vzcreate` leaves the config with `lock: create` (see [`leaves_create_lock`]).
    pub leave_lock: bool,
    /// Who started it: `user@realm` or `user@realm!tokenid`.
    pub user: String,
    pub log: Vec<String>,
    effect: Effect,
}

/// Whether a failed `vzcreate` leaves its config behind with `lock: create`.
///
/// `pve-container:src/PVE/API2/LXC.pm` (`create_vm`): the handler writes the
/// config holding only `lock: create` (`create_and_lock_config`), forks the
/// worker, and the worker takes the config lock (`lock_config`, 10 s). For a
/// new VMID `$destroy_config_on_error` starts true, so when that lock times
/// out the worker neither removes the lock ("if we aborted before changing the
/// container, we must remove the create lock" only runs when it is false) nor
/// destroys the config: `lock: create` stays. Failures inside the worker's
/// code destroy the config instead (`destroy_config`), unless that fails too.
fn leaves_create_lock(vmid: u32, msg: &str) -> bool {
    msg.contains(&format!("/run/lock/lxc/pve-config-{vmid}.lock")) && msg.contains("got timeout")
}

#[derive(Clone)]
pub struct State {
    pub nodes: Vec<String>,
    pub storages: Vec<Storage>,
    pub containers: BTreeMap<u32, Container>,
    /// Allocated guest volumes (`local-lvm:vm-103-disk-1`) and a serial that
    /// stays with the data when a volume is renamed by `move_volume`.
    pub volumes: BTreeMap<String, u64>,
    pub tasks: BTreeMap<String, Task>,
    pub release: String,
    pub task_polls: u32,
    /// `cluster.fw` and the guests' `.fw` files.
    pub fw: super::firewall::FwState,
    /// Resource pools (`user.cfg`): id -> comment. haimg's run lease is one.
    pub pools: BTreeMap<String, Option<String>>,
    next_pid: u32,
    next_serial: u64,
}

impl State {
    fn storage(&self, id: &str) -> Option<&Storage> {
        self.storages.iter().find(|s| s.id == id)
    }
    fn storage_mut(&mut self, id: &str) -> Option<&mut Storage> {
        self.storages.iter_mut().find(|s| s.id == id)
    }
    /// The volume ID of a volume config value (`local-lvm:vm-1-disk-0,mp=/x` → `local-lvm:vm-1-disk-0`).
    pub fn volid_of(value: &str) -> String {
        let first = value.split(',').next().unwrap_or("");
        first.strip_prefix("volume=").unwrap_or(first).to_string()
    }

    /// `<storage>:<GiB>` becomes a new volume `vm-<vmid>-disk-<n>` (as
    /// `PVE::LXC::create_disks` allocates it), with `size=` appended.
    fn allocate(&mut self, vmid: u32, value: &str) -> String {
        let vol = Self::volid_of(value);
        let Some((sid, size)) = vol.split_once(':') else {
            return value.to_string();
        };
        if size.parse::<u32>().is_err() {
            return value.to_string();
        }
        let name = self.free_disk_name(sid, vmid);
        self.next_serial += 1;
        self.volumes.insert(name.clone(), self.next_serial);
        let rest: Vec<&str> = value.split(',').skip(1).collect();
        let mut out = name;
        for r in rest {
            out.push(',');
            out.push_str(r);
        }
        out.push_str(&format!(",size={size}G"));
        out
    }

    fn free_disk_name(&self, sid: &str, vmid: u32) -> String {
        (0..)
            .map(|n| format!("{sid}:vm-{vmid}-disk-{n}"))
            .find(|v| !self.volumes.contains_key(v))
            .unwrap_or_default()
    }

    /// The serial of the volume a container's config key points to.
    pub fn serial_of(&self, vmid: u32, key: &str) -> Option<u64> {
        let c = self.containers.get(&vmid)?;
        let v = c.config.get(key)?;
        self.volumes.get(&Self::volid_of(v)).copied()
    }

    /// A foreign guest (no haimg tags), as another admin would leave it.
    pub fn add_foreign(&mut self, vmid: u32, node: &str, kind: &str) {
        let mut config = BTreeMap::new();
        config.insert("hostname".into(), format!("other{vmid}"));
        self.containers.insert(
            vmid,
            Container {
                vmid,
                node: node.into(),
                kind: kind.into(),
                running: true,
                lock: None,
                config,
            },
        );
    }

    fn new_task(
        &mut self,
        node: &str,
        kind: &str,
        id: &str,
        effect: Effect,
        fault: Option<&FaultKind>,
    ) -> String {
        self.new_task_by(node, kind, id, effect, fault, TOKEN_ID)
    }

    fn new_task_by(
        &mut self,
        node: &str,
        kind: &str,
        id: &str,
        effect: Effect,
        fault: Option<&FaultKind>,
        user: &str,
    ) -> String {
        self.next_pid += 1;
        let upid = format!(
            "UPID:{node}:{:08X}:{:08X}:{:08X}:{kind}:{id}:{user}:",
            self.next_pid,
            0x1000 + self.next_pid,
            0x6800_0000u32 + self.next_pid
        );
        let vmid: u32 = id.parse().unwrap_or(0);
        let mut t = Task {
            upid: upid.clone(),
            node: node.into(),
            kind: kind.into(),
            polls_left: self.task_polls,
            ready_at: None,
            exitstatus: None,
            fail_with: None,
            leave_lock: false,
            user: user.into(),
            log: vec![format!("starting {kind} {id}")],
            effect,
        };
        match fault {
            Some(FaultKind::TaskFails(msg)) => {
                t.leave_lock = kind == "vzcreate" && leaves_create_lock(vmid, msg);
                t.fail_with = Some(msg.clone());
            }
            Some(FaultKind::CreateLeavesLock(msg)) => {
                t.leave_lock = kind == "vzcreate";
                t.fail_with = Some(msg.clone());
            }
            Some(FaultKind::SlowTask(d)) => t.ready_at = Some(Instant::now() + *d),
            _ => {}
        }
        self.tasks.insert(upid.clone(), t);
        upid
    }

    /// A finished task started by someone else (e.g. an admin's `pct create`),
    /// for ownership checks: it shows in the task list but never in haimg's polls.
    pub fn add_finished_task(&mut self, node: &str, kind: &str, vmid: u32, user: &str, exit: &str) {
        let upid = self.new_task_by(node, kind, &vmid.to_string(), Effect::None, None, user);
        if let Some(t) = self.tasks.get_mut(&upid) {
            t.log.push(format!("TASK ERROR: {exit}"));
            t.exitstatus = Some(exit.into());
        }
    }

    /// A node reboots: every guest on it stops, then the node starts exactly
    /// the guests whose config says `onboot: 1` (`pve-guests` start-all, which
    /// skips templates and locked guests). The VMIDs started, in order.
    pub fn reboot_node(&mut self, node: &str) -> Vec<u32> {
        let mut started = Vec::new();
        for c in self.containers.values_mut().filter(|c| c.node == node) {
            c.running = false;
            if c.config.get("onboot").map(String::as_str) == Some("1") && c.lock.is_none() {
                c.running = true;
                started.push(c.vmid);
            }
        }
        started
    }

    /// What the operator's `pct unlock <vmid>` does (`PVE::LXC::Config->remove_lock`).
    pub fn pct_unlock(&mut self, vmid: u32) -> Result<(), String> {
        let c = self.containers.get_mut(&vmid).ok_or(format!(
            "Configuration file 'nodes/?/lxc/{vmid}.conf' does not exist"
        ))?;
        if c.lock.take().is_none() {
            return Err("no lock found trying to remove any lock".into());
        }
        Ok(())
    }

    /// What `pct destroy <vmid> --purge --destroy-unreferenced-disks` does on an unlocked CT.
    pub fn pct_destroy(&mut self, vmid: u32) -> Result<(), String> {
        match self.containers.get(&vmid) {
            None => Err(format!(
                "Configuration file 'nodes/?/lxc/{vmid}.conf' does not exist"
            )),
            Some(c) if c.lock.is_some() => Err(format!(
                "CT is locked ({})",
                c.lock.as_deref().unwrap_or("")
            )),
            Some(c) if c.running => Err(format!(
                "unable to destroy CT {vmid} - container is running"
            )),
            Some(_) => self.apply(&Effect::Destroy(vmid, true)),
        }
    }

    /// Tasks of a node, newest first, as `GET /nodes/{node}/tasks` lists them.
    fn task_list(&self, node: &str, p: &BTreeMap<String, String>) -> Value {
        let vmid = p.get("vmid");
        let ty = p.get("typefilter");
        let source = p.get("source").map(String::as_str).unwrap_or("archive");
        let limit: usize = p.get("limit").and_then(|l| l.parse().ok()).unwrap_or(50);
        let mut list: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| t.node == node)
            .filter(|t| ty.is_none_or(|x| *x == t.kind))
            .filter(|t| vmid.is_none_or(|v| t.upid.split(':').nth(6) == Some(v.as_str())))
            .filter(|t| match source {
                "active" => t.exitstatus.is_none(),
                "all" => true,
                _ => t.exitstatus.is_some(),
            })
            .collect();
        list.sort_by(|a, b| b.upid.split(':').nth(4).cmp(&a.upid.split(':').nth(4)));
        let items: Vec<Value> = list
            .into_iter()
            .take(if limit == 0 { usize::MAX } else { limit })
            .map(|t| {
                let f: Vec<&str> = t.upid.split(':').collect();
                // Tasks.pm `$convert_token_task`: `user!token` → user + tokenid.
                let (user, token) = match t.user.split_once('!') {
                    Some((u, tok)) => (u, Some(tok)),
                    None => (t.user.as_str(), None),
                };
                let mut v = json!({
                    "upid": t.upid, "node": t.node, "pid": u32::from_str_radix(f[2], 16).unwrap_or(0),
                    "pstart": u64::from_str_radix(f[3], 16).unwrap_or(0),
                    "starttime": u64::from_str_radix(f[4], 16).unwrap_or(0),
                    "type": t.kind, "id": f[6], "user": user,
                    "status": t.exitstatus.clone().unwrap_or_else(|| "RUNNING".into()),
                });
                if let Some(tok) = token {
                    v["tokenid"] = json!(tok);
                }
                if t.exitstatus.is_some() {
                    v["endtime"] = v["starttime"].clone();
                }
                v
            })
            .collect();
        Value::Array(items)
    }

    /// Advance a task on a status poll; finish it when its time has come.
    fn poll(&mut self, upid: &str) -> Option<Value> {
        let t = self.tasks.get_mut(upid)?;
        if t.exitstatus.is_none() {
            let waiting = t.ready_at.is_some_and(|r| Instant::now() < r);
            if t.polls_left > 0 {
                t.polls_left -= 1;
            } else if !waiting {
                let effect = t.effect.clone();
                let fail = t.fail_with.clone();
                let result = match fail {
                    Some(m) => Err(m),
                    None => self.apply(&effect),
                };
                let t = self.tasks.get_mut(upid)?;
                match result {
                    Ok(()) => {
                        t.log.push("TASK OK".into());
                        t.exitstatus = Some("OK".into());
                    }
                    Err(m) => {
                        t.log.push(format!("TASK ERROR: {m}"));
                        t.exitstatus = Some(m);
                    }
                }
                let failed = t.exitstatus.as_deref() != Some("OK");
                let eff = t.effect.clone();
                let leave_lock = t.leave_lock;
                if failed && leave_lock {
                    // The config stays as `create_and_lock_config` wrote it.
                    if let Effect::Create(v, _) = &eff {
                        if let Some(c) = self.containers.get_mut(v) {
                            c.config.clear();
                            c.lock = Some("create".into());
                        }
                    }
                } else if failed {
                    self.undo(&eff);
                }
            }
        }
        let t = self.tasks.get(upid)?;
        let (user, token) = t.user.split_once('!').unwrap_or((t.user.as_str(), ""));
        let mut v = json!({
            "upid": t.upid, "node": t.node, "pid": 1234, "pstart": "4096", "starttime": 1750000000,
            "type": t.kind, "id": "", "user": user, "tokenid": token,
            "status": if t.exitstatus.is_some() { "stopped" } else { "running" },
        });
        if let Some(e) = &t.exitstatus {
            v["exitstatus"] = json!(e);
        }
        Some(v)
    }

    fn apply(&mut self, e: &Effect) -> Result<(), String> {
        match e {
            Effect::None => Ok(()),
            Effect::Store {
                storage,
                node,
                name,
                size,
                sha,
                want,
            } => {
                if !sha.eq_ignore_ascii_case(want) {
                    return Err(format!("checksum mismatch: got '{sha}' != expect '{want}'"));
                }
                let s = self.storage_mut(storage).ok_or("storage vanished")?;
                let key = s.key(node);
                s.files
                    .entry(key)
                    .or_default()
                    .insert(name.clone(), (*size, sha.clone()));
                Ok(())
            }
            Effect::Create(v, params) => {
                // `create_disks`, then the config written after OS detection.
                let mut config = params.clone();
                for key in ["rootfs", "mp0"] {
                    if let Some(val) = config.get(key).cloned() {
                        let a = self.allocate(*v, &val);
                        config.insert(key.into(), a);
                    }
                }
                let c = self.containers.get_mut(v).ok_or("container vanished")?;
                c.config = config;
                c.lock = None;
                Ok(())
            }
            Effect::Start(v) => {
                let c = self.containers.get_mut(v).ok_or("container vanished")?;
                c.running = true;
                Ok(())
            }
            Effect::Stop(v) => {
                if let Some(c) = self.containers.get_mut(v) {
                    c.running = false;
                }
                Ok(())
            }
            Effect::Destroy(v, unreferenced) => {
                // `PVE::LXC::destroy_lxc_container`: each volume of the config
                // is freed only when this CT owns it (its name says
                // `vm-<vmid>-`; "ignore deletion of …, CT isn't the owner!"),
                // and with `destroy-unreferenced-disks` every other volume
                // named for the VMID too — whoever's config holds it.
                let mine = format!(":vm-{v}-disk-");
                if let Some(c) = self.containers.remove(v) {
                    for val in c.config.values() {
                        let vol = Self::volid_of(val);
                        if vol.contains(&mine) {
                            self.volumes.remove(&vol);
                        }
                    }
                }
                self.fw.guests.remove(v); // remove_vmfw_conf
                if *unreferenced {
                    self.volumes.retain(|k, _| !k.contains(&mine));
                }
                Ok(())
            }
            Effect::Reassign(from, key, to, tkey) => {
                // The worker checks again under both config locks.
                let (src_node, value) = {
                    let c = self
                        .containers
                        .get(from)
                        .ok_or(format!("could not find CT {from}"))?;
                    let v = c.config.get(key).ok_or(format!(
                        "volume '{key}' for container '{from}' does not exist"
                    ))?;
                    if c.running {
                        return Err("Cannot move in-use volume while the source CT is running - detach or shutdown first".into());
                    }
                    (c.node.clone(), v.clone())
                };
                let dst = self
                    .containers
                    .get(to)
                    .ok_or(format!("could not find CT {to}"))?;
                if dst.node != src_node {
                    return Err(format!(
                        "Both containers need to be on the same node ({src_node} != {})",
                        dst.node
                    ));
                }
                if dst.config.contains_key(tkey) {
                    return Err(format!(
                        "Target volume key '{tkey}' is already in use for container '{to}'"
                    ));
                }
                // PVE::Storage::rename_volume: the next free vm-<target>-disk-N.
                let old = Self::volid_of(&value);
                let sid = old.split(':').next().unwrap_or("").to_string();
                let new = self.free_disk_name(&sid, *to);
                let serial = self.volumes.remove(&old).unwrap_or(0);
                self.volumes.insert(new.clone(), serial);
                let new_value = value.replacen(&old, &new, 1);
                if let Some(c) = self.containers.get_mut(from) {
                    c.config.remove(key);
                }
                if let Some(c) = self.containers.get_mut(to) {
                    c.config.insert(tkey.clone(), new_value);
                }
                Ok(())
            }
        }
    }

    /// A failed create leaves no container behind (the worker destroys it).
    fn undo(&mut self, e: &Effect) {
        if let Effect::Create(v, _) = e {
            self.containers.remove(v);
            let mine = format!(":vm-{v}-disk-");
            self.volumes.retain(|k, _| !k.contains(&mine));
        }
    }
}

pub struct Shared {
    pub state: Mutex<State>,
    pub faults: Mutex<Vec<Fault>>,
    pub log: Mutex<Vec<Recorded>>,
    schema: Schema,
    tls_close: super::http::TlsClose,
}

fn version_lt(release: &str, maj: u32, min: u32) -> bool {
    let mut it = release.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) < (maj, min)
}

impl Shared {
    pub fn new(cfg: Config) -> Shared {
        let mut schema = Schema::load();
        super::firewall::check_keys(&schema);
        if version_lt(&cfg.release, 9, 1) {
            // PVE < 9.1 (pve-container < 6.0.15) has no env/entrypoint/host-managed.
            for e in &mut schema.endpoints {
                if e.path.starts_with("/nodes/{node}/lxc") {
                    if let Some(p) = e.schema["parameters"]["properties"].as_object_mut() {
                        p.remove("env");
                        p.remove("entrypoint");
                        if let Some(f) = p
                            .get_mut("net[n]")
                            .and_then(|n| n["format"].as_object_mut())
                        {
                            f.remove("host-managed");
                        }
                    }
                }
            }
        }
        let mut fw = super::firewall::FwState::default();
        if cfg.datacenter_firewall {
            fw.options.insert("enable".into(), "1".into());
        }
        Shared {
            state: Mutex::new(State {
                nodes: cfg.nodes,
                storages: cfg.storages,
                containers: BTreeMap::new(),
                volumes: BTreeMap::new(),
                tasks: BTreeMap::new(),
                release: cfg.release,
                task_polls: cfg.task_polls,
                fw,
                pools: BTreeMap::new(),
                next_pid: 0x1000,
                next_serial: 0,
            }),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            schema,
            tls_close: cfg.tls_close,
        }
    }

    fn take_fault(&self, method: &str, path: &str, early: bool) -> Option<FaultKind> {
        let mut f = self.faults.lock().unwrap();
        let i = f.iter().position(|x| {
            x.times > 0
                && x.method == method
                && match x.path.strip_suffix('$') {
                    Some(exact) => path == exact,
                    None => path.contains(&x.path),
                }
                && early == matches!(x.kind, FaultKind::Status(..) | FaultKind::DropMidUpload(_))
        })?;
        f[i].times -= 1;
        Some(f[i].kind.clone())
    }

    fn record(
        &self,
        method: &str,
        path: &str,
        query: Vec<(String, String)>,
        body: Body,
        status: u16,
    ) {
        self.log.lock().unwrap().push(Recorded {
            method: method.into(),
            path: path.into(),
            query,
            body,
            status,
        });
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (p, q) = target.split_once('?').unwrap_or((target, ""));
    let query = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
    (decode(p), query)
}

fn err400(errors: &BTreeMap<String, String>) -> Response {
    Response::json(
        400,
        "Parameter verification failed.",
        &json!({"data": null, "message": "Parameter verification failed.\n", "errors": errors}),
    )
}

fn err(status: u16, msg: &str) -> Response {
    let first = msg.lines().next().unwrap_or("");
    Response::json(
        status,
        first,
        &json!({"data": null, "message": format!("{msg}\n")}),
    )
}

fn ok(data: Value) -> Response {
    Response::json(200, "OK", &json!({ "data": data }))
}

impl Handler for Shared {
    fn tls_close(&self) -> super::http::TlsClose {
        self.tls_close
    }

    fn early(&self, method: &str, target: &str, headers: &[(String, String)]) -> Early {
        let (path, query) = split_target(target);
        let path = path.strip_prefix("/api2/json").unwrap_or(&path).to_string();
        let auth = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.as_str());
        let want = format!("PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}");
        if auth != Some(want.as_str()) {
            self.record(method, &path, query, Body::None, 401);
            let reason = if auth.is_none() {
                "No ticket"
            } else {
                "Authentication failed!"
            };
            return Early::Respond(Response::text(401, reason, ""));
        }
        match self.take_fault(method, &path, true) {
            Some(FaultKind::Status(code, msg)) => {
                self.record(method, &path, query, Body::None, code);
                if code == 401 || (595..=599).contains(&code) {
                    Early::Respond(Response::text(
                        code,
                        if msg.is_empty() {
                            "Connection timed out"
                        } else {
                            &msg
                        },
                        "",
                    ))
                } else {
                    Early::Respond(err(code, &msg))
                }
            }
            Some(FaultKind::DropMidUpload(n)) => {
                self.record(method, &path, query, Body::None, 0);
                Early::DropAfter(n)
            }
            _ => Early::Continue,
        }
    }

    fn handle(&self, req: Request) -> Outcome {
        let (full, query) = split_target(&req.target);
        let Some(path) = full.strip_prefix("/api2/json") else {
            return Outcome::Respond(Response::text(501, "Method not implemented", ""));
        };
        let path = path.to_string();
        let ctype = req.header("content-type").unwrap_or("").to_string();
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        let mut body = Body::None;
        let mut file: Option<(String, Vec<u8>)> = None;
        let mut bad: BTreeMap<String, String> = BTreeMap::new();
        if !req.body.is_empty() {
            if ctype.starts_with("application/x-www-form-urlencoded") {
                let pairs: Vec<(String, String)> =
                    form_urlencoded::parse(&req.body).into_owned().collect();
                for (k, v) in &pairs {
                    params.insert(k.clone(), v.clone());
                }
                body = Body::Form(pairs);
            } else if ctype.starts_with("multipart/form-data") {
                match parse_multipart(&ctype, &req.body) {
                    Ok((parts, text, f)) => {
                        body = Body::Multipart {
                            content_length: req.body.len(),
                            parts,
                        };
                        params.extend(text);
                        file = Some(f);
                    }
                    Err(m) => {
                        self.record(&req.method, &path, query, Body::None, 400);
                        return Outcome::Respond(err(400, &m));
                    }
                }
            } else if ctype.starts_with("application/json") {
                if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&req.body) {
                    for (k, v) in o {
                        let s = match v {
                            Value::Bool(b) => {
                                if b {
                                    "1".into()
                                } else {
                                    "0".into()
                                }
                            }
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        params.insert(k, s);
                    }
                }
            }
        }
        for (k, v) in &query {
            params.insert(k.clone(), v.clone()); // the query string wins
        }
        let route = self.schema.route(&req.method, &path);
        let Some((ep, path_params)) = route else {
            self.record(&req.method, &path, query, body, 501);
            let msg = format!("Method '{} {}' not implemented", req.method, path);
            return Outcome::Respond(Response::text(501, &msg, ""));
        };
        for (k, v) in &path_params {
            if let Some(given) = params.get(k) {
                if given != v {
                    bad.insert(
                        k.clone(),
                        "duplicate parameter (already defined in URI) with conflicting values!"
                            .into(),
                    );
                }
            }
            params.insert(k.clone(), v.clone());
        }
        if bad.is_empty() {
            bad = self.schema.validate(ep, &params);
        }
        if !bad.is_empty() {
            self.record(&req.method, &path, query, body, 400);
            return Outcome::Respond(err400(&bad));
        }
        let fault = self.take_fault(&req.method, &path, false);
        let resp = {
            let mut st = self.state.lock().unwrap();
            dispatch(
                &mut st,
                &req.method,
                &ep.path,
                &params,
                file,
                fault.as_ref(),
            )
        };
        match fault {
            Some(FaultKind::After(code)) => {
                self.record(&req.method, &path, query, body, code);
                return Outcome::Respond(Response::text(code, "Connection timed out", ""));
            }
            Some(FaultKind::DropAfter) => {
                self.record(&req.method, &path, query, body, 0);
                return Outcome::Drop;
            }
            _ => {}
        }
        let resp = match resp {
            Ok(v) => ok(v),
            // `raise_param_exc`: a 400 whose errors are per parameter (JSON-encoded by the handler).
            Err((400, m)) if m.starts_with('{') => {
                match serde_json::from_str::<BTreeMap<String, String>>(&m) {
                    Ok(e) => err400(&e),
                    Err(_) => err(400, &m),
                }
            }
            Err((code, m)) => err(code, &m),
        };
        self.record(&req.method, &path, query, body, resp.status);
        Outcome::Respond(resp)
    }
}

type Parsed = (Vec<Part>, BTreeMap<String, String>, (String, Vec<u8>));

/// The upload body as `PVE::APIServer::AnyEvent::file_upload_multipart` reads
/// it: text fields `content`, `checksum-algorithm`, `checksum` in this order,
/// then the file part named `filename` with a filename and a content type.
fn parse_multipart(ctype: &str, body: &[u8]) -> Result<Parsed, String> {
    let boundary = ctype
        .split("boundary=")
        .nth(1)
        .ok_or("multipart without boundary")?
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut text = BTreeMap::new();
    let mut file = None;
    let mut rest = body;
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(rest, delim.as_bytes()).ok_or("no multipart boundary in body")?;
    rest = &rest[start + delim.len()..];
    let order = ["content", "checksum-algorithm", "checksum"];
    let mut last_text = 0usize;
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("malformed multipart (no CRLF after boundary)")?;
        let hend = find(rest, b"\r\n\r\n").ok_or("malformed multipart headers")?;
        let head = String::from_utf8_lossy(&rest[..hend]).to_string();
        let content = &rest[hend + 4..];
        let next = find(content, format!("\r\n{delim}").as_bytes())
            .ok_or("multipart body not terminated")?;
        let value = &content[..next];
        rest = &content[next + 2 + delim.len()..];
        let headers: Vec<String> = head.split("\r\n").map(str::to_string).collect();
        let disp = headers
            .iter()
            .find(|h| h.to_ascii_lowercase().starts_with("content-disposition:"))
            .ok_or("part without Content-Disposition")?;
        let name = attr(disp, "name").ok_or("part without name")?;
        if file.is_some() {
            return Err("multipart: fields after the file part are not read".into());
        }
        if let Some(fname) = attr(disp, "filename") {
            if name != "filename" {
                return Err(format!(
                    "wrong field name '{name}' for file upload, expected 'filename'"
                ));
            }
            let ct = headers
                .iter()
                .find(|h| h.to_ascii_lowercase().starts_with("content-type:"));
            if ct.is_none_or(|c| !c.to_ascii_lowercase().contains("application/octet-stream")) {
                return Err("file part without Content-Type: application/octet-stream".into());
            }
            parts.push(Part {
                headers,
                value: format!("<{} bytes>", value.len()),
            });
            text.insert("filename".into(), fname.clone());
            file = Some((fname, value.to_vec()));
        } else {
            let pos = order
                .iter()
                .position(|o| *o == name)
                .ok_or(format!("unexpected multipart field '{name}'"))?;
            if pos < last_text {
                return Err(format!("multipart field '{name}' out of order (expected content, checksum-algorithm, checksum, file)"));
            }
            last_text = pos;
            let v = String::from_utf8_lossy(value).to_string();
            parts.push(Part {
                headers,
                value: v.clone(),
            });
            text.insert(name, v);
        }
    }
    let file = file.ok_or("multipart upload without a file part")?;
    Ok((parts, text, file))
}

fn attr(disp: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=\"");
    let i = disp.split("; ").find_map(|p| p.strip_prefix(&pat))?;
    Some(i.trim_end_matches('"').to_string())
}

type R = Result<Value, (u16, String)>;

fn node_ok(st: &State, node: &str) -> Result<(), (u16, String)> {
    if st.nodes.iter().any(|n| n == node) {
        Ok(())
    } else {
        Err((500, format!("hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known")))
    }
}

fn ct<'a>(st: &'a State, node: &str, vmid: &str) -> Result<&'a Container, (u16, String)> {
    let v: u32 = vmid.parse().unwrap_or(0);
    match st.containers.get(&v) {
        Some(c) if c.node == node && c.kind == "lxc" => Ok(c),
        _ => Err((
            500,
            format!("Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist"),
        )),
    }
}

fn dispatch(
    st: &mut State,
    method: &str,
    route: &str,
    p: &BTreeMap<String, String>,
    file: Option<(String, Vec<u8>)>,
    fault: Option<&FaultKind>,
) -> R {
    let node = p.get("node").cloned().unwrap_or_default();
    if !node.is_empty() {
        node_ok(st, &node)?;
    }
    if let Some(r) = super::firewall::dispatch(&mut st.fw, method, route, p) {
        return r;
    }
    let vmid = p.get("vmid").cloned().unwrap_or_default();
    match (method, route) {
        // pve-manager PVE/API2/Pool.pm: create/update/delete under the
        // user.cfg lock, errors as `die` texts (HTTP 500).
        ("POST", "/pools") => {
            let id = &p["poolid"];
            if st.pools.contains_key(id) {
                return Err((
                    500,
                    format!("create pool failed: pool '{id}' already exists"),
                ));
            }
            if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
                return Err((
                    500,
                    "create pool failed: pool name must start with a letter".into(),
                ));
            }
            st.pools.insert(
                id.clone(),
                p.get("comment").filter(|c| !c.is_empty()).cloned(),
            );
            Ok(Value::Null)
        }
        ("GET", "/pools") => match p.get("poolid") {
            Some(id) => {
                let Some(comment) = st.pools.get(id) else {
                    return Err((500, format!("pool '{id}' does not exist")));
                };
                let mut v = json!({"poolid": id, "members": []});
                if let Some(c) = comment {
                    v["comment"] = json!(c);
                }
                Ok(json!([v]))
            }
            None => Ok(Value::Array(
                st.pools
                    .iter()
                    .map(|(id, c)| match c {
                        Some(c) => json!({"poolid": id, "comment": c}),
                        None => json!({"poolid": id}),
                    })
                    .collect(),
            )),
        },
        ("PUT", "/pools") => {
            let id = &p["poolid"];
            let Some(comment) = st.pools.get_mut(id) else {
                return Err((
                    500,
                    format!("update pools failed: pool '{id}' does not exist"),
                ));
            };
            if let Some(c) = p.get("comment") {
                *comment = Some(c.clone()).filter(|c| !c.is_empty());
            }
            Ok(Value::Null)
        }
        ("DELETE", "/pools") => {
            let id = &p["poolid"];
            if st.pools.remove(id).is_none() {
                return Err((
                    500,
                    format!("delete pool failed: pool '{id}' does not exist"),
                ));
            }
            Ok(Value::Null)
        }
        ("GET", "/version") => Ok(
            json!({"version": format!("{}.2", st.release), "release": st.release, "repoid": "0a1b2c3d"}),
        ),
        ("GET", "/cluster/resources") => {
            let list: Vec<Value> = st
                .containers
                .values()
                .map(|c| {
                    // Perl sends some numbers as strings: exercise the lenient parser.
                    let vmid = if c.vmid % 2 == 0 { json!(c.vmid.to_string()) } else { json!(c.vmid) };
                    let mut v = json!({
                        "id": format!("{}/{}", c.kind, c.vmid), "type": c.kind, "vmid": vmid, "node": c.node,
                        "name": c.name(),
                        "status": if c.running { "running" } else { "stopped" }, "template": 0,
                        "maxmem": 1073741824u64, "uptime": if c.running { 10 } else { 0 },
                    });
                    if !c.tags().is_empty() {
                        v["tags"] = json!(c.tags());
                    }
                    if let Some(l) = &c.lock {
                        v["lock"] = json!(l);
                    }
                    v
                })
                .collect();
            Ok(Value::Array(list))
        }
        ("GET", "/nodes/{node}/storage/{storage}/status") => {
            let s = st
                .storage(&p["storage"])
                .ok_or((500, format!("storage '{}' does not exist", p["storage"])))?;
            Ok(
                json!({"type": s.kind, "content": s.content, "shared": if s.shared { 1 } else { 0 }, "active": 1, "enabled": 1,
                      "total": 1u64 << 40, "used": 1u64 << 30, "avail": "1098437885952"}),
            )
        }
        ("GET", "/nodes/{node}/storage/{storage}/content") => {
            let s = st
                .storage(&p["storage"])
                .ok_or((500, format!("storage '{}' does not exist", p["storage"])))?;
            let files = s.files_on(&node);
            let list: Vec<Value> = files
                .iter()
                .map(|(name, (size, _))| json!({"volid": format!("{}:vztmpl/{name}", s.id), "content": "vztmpl", "format": "tzst", "size": size.to_string(), "ctime": 1750000000}))
                .collect();
            Ok(Value::Array(list))
        }
        ("POST", "/nodes/{node}/storage/{storage}/upload") => {
            let sid = p["storage"].clone();
            let s = st
                .storage(&sid)
                .ok_or((500, format!("storage '{sid}' does not exist")))?;
            if !matches!(s.kind.as_str(), "dir" | "nfs" | "cifs" | "cephfs" | "btrfs") {
                return Err((500, format!("can't upload to storage type '{}'", s.kind)));
            }
            if !s.holds("vztmpl") {
                return Err((
                    500,
                    format!("storage '{sid}' does not support 'vztmpl' content"),
                ));
            }
            let (fname, bytes) = file.ok_or((400, "upload without file".to_string()))?;
            if !(fname.ends_with(".tar")
                || [".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2"]
                    .iter()
                    .any(|e| fname.ends_with(e)))
            {
                let mut e = BTreeMap::new();
                e.insert("filename", "wrong file extension");
                return Err((400, serde_json::to_string(&e).unwrap()));
            }
            let sha: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let want = p.get("checksum").cloned().unwrap_or_else(|| sha.clone());
            let eff = Effect::Store {
                storage: sid,
                node: node.clone(),
                name: fname,
                size: bytes.len() as u64,
                sha,
                want,
            };
            Ok(json!(st.new_task(&node, "imgcopy", "", eff, fault)))
        }
        ("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}") => {
            let sid = p["storage"].clone();
            let vol = p["volume"].clone();
            let name = vol.rsplit('/').next().unwrap_or(&vol).to_string();
            let s = st
                .storage_mut(&sid)
                .ok_or((500, format!("storage '{sid}' does not exist")))?;
            let key = s.key(&node);
            s.files.entry(key).or_default().remove(&name);
            Ok(json!(st.new_task(
                &node,
                "imgdel",
                &sid,
                Effect::None,
                fault
            )))
        }
        ("POST", "/nodes/{node}/lxc") => {
            let v: u32 = vmid.parse().unwrap_or(0);
            if let Some(c) = st.containers.get(&v) {
                return Err((500, format!("CT {v} already exists on node '{}'", c.node)));
            }
            let tpl = &p["ostemplate"];
            let (sid, rest) = tpl
                .split_once(':')
                .ok_or((500, format!("unable to parse volume ID '{tpl}'")))?;
            let name = rest
                .strip_prefix("vztmpl/")
                .ok_or((500, format!("wrong vtype for '{tpl}'")))?;
            let s = st
                .storage(sid)
                .ok_or((500, format!("storage '{sid}' does not exist")))?;
            if !s.files_on(&node).contains_key(name) {
                return Err((500, format!("volume '{tpl}' does not exist")));
            }
            for key in ["rootfs", "mp0"] {
                if let Some(val) = p.get(key) {
                    let vol = val.split(',').next().unwrap_or("");
                    let rs = vol.split(':').next().unwrap_or("");
                    let s = st
                        .storage(rs)
                        .ok_or((500, format!("storage '{rs}' does not exist")))?;
                    if !s.holds("rootdir") {
                        return Err((
                            500,
                            format!("storage '{rs}' does not support container directories"),
                        ));
                    }
                }
            }
            let mut config: BTreeMap<String, String> = p
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "node" | "vmid" | "start" | "ostemplate"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some(t) = config.get_mut("tags") {
                *t = unique_tags(t);
            }
            // `create_and_lock_config`: the config holds only the lock until the
            // worker writes the rest (volumes are allocated in the worker too).
            st.containers.insert(
                v,
                Container {
                    vmid: v,
                    node: node.clone(),
                    kind: "lxc".into(),
                    running: false,
                    lock: Some("create".into()),
                    config: BTreeMap::new(),
                },
            );
            Ok(json!(st.new_task(
                &node,
                "vzcreate",
                &vmid,
                Effect::Create(v, config),
                fault
            )))
        }
        ("POST", "/nodes/{node}/lxc/{vmid}/status/start") => {
            let c = ct(st, &node, &vmid)?;
            if c.running {
                return Err((500, format!("CT {vmid} already running")));
            }
            if let Some(l) = &c.lock {
                return Err((500, format!("CT is locked ({l})")));
            }
            let v = c.vmid;
            Ok(json!(st.new_task(
                &node,
                "vzstart",
                &vmid,
                Effect::Start(v),
                fault
            )))
        }
        ("POST", "/nodes/{node}/lxc/{vmid}/status/stop")
        | ("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown") => {
            let c = ct(st, &node, &vmid)?;
            if !c.running {
                return Err((500, format!("CT {vmid} not running")));
            }
            let v = c.vmid;
            let kind = if route.ends_with("stop") {
                "vzstop"
            } else {
                "vzshutdown"
            };
            Ok(json!(st.new_task(
                &node,
                kind,
                &vmid,
                Effect::Stop(v),
                fault
            )))
        }
        ("DELETE", "/nodes/{node}/lxc/{vmid}") => {
            let c = ct(st, &node, &vmid)?;
            // `$early_checks`: check_protection, then `check_lock`.
            if let Some(l) = &c.lock {
                return Err((500, format!("CT is locked ({l})")));
            }
            if c.running {
                return Err((
                    500,
                    format!("unable to destroy CT {vmid} - container is running"),
                ));
            }
            let v = c.vmid;
            let unreferenced = p.get("destroy-unreferenced-disks").map(String::as_str) == Some("1");
            Ok(json!(st.new_task(
                &node,
                "vzdestroy",
                &vmid,
                Effect::Destroy(v, unreferenced),
                fault
            )))
        }
        ("GET", "/nodes/{node}/lxc/{vmid}/status/current") => {
            let c = ct(st, &node, &vmid)?;
            let mut v = json!({"vmid": c.vmid.to_string(), "status": if c.running { "running" } else { "stopped" },
                               "name": c.name(), "ha": {"managed": 0}});
            if !c.tags().is_empty() {
                v["tags"] = json!(c.tags());
            }
            if let Some(l) = &c.lock {
                v["lock"] = json!(l);
            }
            Ok(v)
        }
        ("GET", "/nodes/{node}/lxc/{vmid}/config") => {
            let c = ct(st, &node, &vmid)?;
            let mut v = json!(c.config);
            // The lock is a line of the config file like any other option.
            if let Some(l) = &c.lock {
                v["lock"] = json!(l);
            }
            let d = Sha256::digest(v.to_string().as_bytes());
            v["digest"] = json!(d
                .iter()
                .take(20)
                .map(|b| format!("{b:02x}"))
                .collect::<String>());
            Ok(v)
        }
        ("PUT", "/nodes/{node}/lxc/{vmid}/config") => {
            let v: u32 = vmid.parse().unwrap_or(0);
            ct(st, &node, &vmid)?;
            let c = st.containers.get_mut(&v).ok_or((500, "gone".to_string()))?;
            if let Some(l) = &c.lock {
                return Err((500, format!("CT is locked ({l})")));
            }
            let deletes: Vec<String> = p
                .get("delete")
                .map(|d| {
                    d.split([',', ';', ' '])
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            for (k, val) in p
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "node" | "vmid" | "digest" | "delete"))
            {
                if deletes.contains(k) {
                    let mut e = BTreeMap::new();
                    e.insert(
                        k.clone(),
                        "conflicting values: setting and deleting the same option".to_string(),
                    );
                    return Err((400, serde_json::to_string(&e).unwrap()));
                }
                let val = if k == "tags" {
                    unique_tags(val)
                } else {
                    val.clone()
                };
                c.config.insert(k.clone(), val);
            }
            for d in deletes {
                c.config.remove(&d);
            }
            Ok(Value::Null)
        }
        ("POST", "/nodes/{node}/lxc/{vmid}/move_volume") => move_volume(st, &node, &vmid, p, fault),
        ("GET", "/nodes/{node}/tasks") => Ok(st.task_list(&node, p)),
        ("GET", "/nodes/{node}/tasks/{upid}/status") => {
            st.poll(&p["upid"]).ok_or((400, "no such task".to_string()))
        }
        ("GET", "/nodes/{node}/tasks/{upid}/log") => {
            let t = st
                .tasks
                .get(&p["upid"])
                .ok_or((400, "no such task".to_string()))?;
            let mut lines = vec![json!({"n": 1, "t": t.log[0]})];
            if let Some(m) = &t.fail_with {
                if t.kind == "vzcreate" {
                    lines.push(json!({"n": 2, "t": "extracting archive '/mnt/pve/templates/template/cache/x.tar.zst'"}));
                }
                let n = lines.len() + 1;
                lines.push(json!({"n": n, "t": format!("TASK ERROR: {m}")}));
            } else {
                for (i, l) in t.log.iter().enumerate().skip(1) {
                    lines.push(json!({"n": i + 1, "t": l}));
                }
            }
            Ok(Value::Array(lines))
        }
        _ => Err((501, format!("{method} {route} is not modeled by the fake"))),
    }
}

/// `PVE::GuestHelpers::get_unique_tags` with the default `tag-style`:
/// split on `;`, `,` or space, lowercased, sorted, duplicates dropped.
fn unique_tags(t: &str) -> String {
    let mut v: Vec<String> = t
        .split([';', ',', ' '])
        .filter(|x| !x.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    v.sort();
    v.dedup();
    v.join(";")
}

/// `POST /nodes/{node}/lxc/{vmid}/move_volume`: only reassignment to another
/// container (`target-vmid`) is modelled. The checks are those of
/// `pve-container:src/PVE/API2/LXC.pm` (`$load_and_check_reassign_configs`),
/// made before the worker starts, with Proxmox's texts.
fn move_volume(
    st: &mut State,
    node: &str,
    vmid: &str,
    p: &BTreeMap<String, String>,
    fault: Option<&FaultKind>,
) -> R {
    let key = p["volume"].clone();
    let target = p.get("target-vmid").cloned();
    if let (Some(_), Some(_)) = (&target, p.get("storage")) {
        let msg = "either set 'storage' or 'target-vmid', but not both";
        let mut e = BTreeMap::new();
        e.insert("target-vmid", msg);
        e.insert("storage", msg);
        return Err((400, serde_json::to_string(&e).unwrap()));
    }
    let Some(target) = target else {
        return Err((
            501,
            "move_volume to another storage is not modeled by the fake".into(),
        ));
    };
    let tkey = p
        .get("target-volume")
        .cloned()
        .unwrap_or_else(|| key.clone());
    if key == "rootfs" || tkey == "rootfs" {
        return Err((500, "Cannot move to/from 'rootfs'".into()));
    }
    let from: u32 = vmid.parse().unwrap_or(0);
    let to: u32 = target.parse().unwrap_or(0);
    let src = st
        .containers
        .get(&from)
        .ok_or((500, format!("could not find CT {from}")))?;
    let dst = st
        .containers
        .get(&to)
        .ok_or((500, format!("could not find CT {to}")))?;
    if src.node != dst.node {
        return Err((
            500,
            format!(
                "Both containers need to be on the same node ({} != {})",
                src.node, dst.node
            ),
        ));
    }
    if src.node != node {
        return Err((
            500,
            format!("Configuration file 'nodes/{node}/lxc/{from}.conf' does not exist"),
        ));
    }
    for c in [src, dst] {
        if let Some(l) = &c.lock {
            return Err((500, format!("CT is locked ({l})")));
        }
    }
    if !src.config.contains_key(&key) {
        return Err((
            500,
            format!("volume '{key}' for container '{from}' does not exist"),
        ));
    }
    if dst.config.contains_key(&tkey) {
        return Err((
            500,
            format!("Target volume key '{tkey}' is already in use for container '{to}'"),
        ));
    }
    if src.running {
        return Err((
            500,
            "Cannot move in-use volume while the source CT is running - detach or shutdown first"
                .into(),
        ));
    }
    let id = format!("{from}-{key}>{to}-{tkey}");
    Ok(json!(st.new_task(
        node,
        "move_volume",
        &id,
        Effect::Reassign(from, key, to, tkey),
        fault
    )))
}
