//! The local backend: the cluster as LXC containers on this host, configured
//! the way Proxmox VE would configure them, so the init sees at boot exactly
//! what it sees on Proxmox.
//!
//! Per cluster there is one state directory (`$HAIMG_STATE_DIR/<cluster>`,
//! default `/var/lib/haimg/<cluster>`, see [`state`]), one bridge without an
//! address and one client network namespace holding the gateway ([`net`]), and
//! one container per member under the cluster's own LXC path. Containers are
//! unprivileged with an idmapped rootfs by default ([`lxcconf`]); before every
//! start the config is rendered again from the state file and the files
//! Proxmox writes are written into the rootfs ([`pvefiles`]). Host programs
//! run through a [`crate::exec::CommandRunner`] so every step can be tested with a
//! recording fake.
//!
//! Invariants: every object is recorded in the state file before it is
//! created and every name derives from the state directory ([`names`]), so
//! [`LocalBackend::down`] removes everything a cluster created, also after a
//! half-failed deploy and without a state file; power operations behave like
//! Proxmox's (starting a running CT, or stopping a stopped one, is an error),
//! so orchestration tested here behaves the same on Proxmox.
//!
//! Accepted and ignored, because one host has no use for them: the `node`
//! arguments, `ContainerSpec::bridge` (members join the cluster's own
//! bridge), `cores` (not pinned), `rootfs_gb` and `data_volume_gb` (plain
//! directories, no quota) and `onboot` (nothing starts containers at boot).

pub mod host;
pub mod lxcconf;
pub mod names;
pub mod net;
pub mod nftables;
pub mod pvefiles;
pub mod state;
pub mod template;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use self::lxcconf::{CgroupMode, IdMap, LxcInput};
use self::names::Names;
use self::pvefiles::{HostDns, PveFilesError, PveInput};
use self::state::{CtRecord, NetRecord, Phase, State, StateDir, TemplateRecord};
use super::{Backend, ContainerSpec, ContainerStatus, PowerState, StoredTemplate};
use crate::exec::{self, Cmd, CommandRunner, RunError, SystemRunner};
// `Backend::capabilities` keeps its default: env, entrypoint and host-managed
// networking all exist locally (like Proxmox >= 9.1).

/// Default parent of the per-cluster state directories.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/haimg";
/// Overrides [`DEFAULT_STATE_ROOT`]; the cluster's directory is `$HAIMG_STATE_DIR/<cluster>`.
pub const STATE_ROOT_ENV: &str = "HAIMG_STATE_DIR";
/// `1` makes new containers privileged.
pub const PRIVILEGED_ENV: &str = "HAIMG_LOCAL_PRIVILEGED";

const LXC_INFO_TIMEOUT: Duration = Duration::from_secs(15);
const LXC_START_TIMEOUT: Duration = Duration::from_secs(60);
const LXC_KILL_TIMEOUT: Duration = Duration::from_secs(30);
const TAR_TIMEOUT: Duration = Duration::from_secs(600);
const UMOUNT_TIMEOUT: Duration = Duration::from_secs(15);
const IP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `down` waits for killed processes to disappear.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong in the local backend, naming the object concerned.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("CT {vmid} already exists in local cluster {cluster}")]
    Exists { vmid: u32, cluster: String },
    #[error("CT {vmid} does not exist in local cluster {cluster}")]
    NotFound { vmid: u32, cluster: String },
    #[error("CT {vmid} already running")]
    AlreadyRunning { vmid: u32 },
    #[error("CT {vmid} not running")]
    NotRunning { vmid: u32 },
    #[error("CT {vmid} is running; stop it first")]
    Running { vmid: u32 },
    #[error("CT {vmid} was not created completely (an earlier create failed); destroy it and create it again")]
    Incomplete { vmid: u32 },
    #[error("CT {vmid}: {field}: {message}")]
    InvalidSpec {
        vmid: u32,
        field: &'static str,
        message: String,
    },
    #[error("CT {vmid} failed to start: {detail}")]
    StartFailed { vmid: u32, detail: String },
    #[error("CT {vmid} did not stop within {}s of the halt signal (it is still running; `stop` kills it)", .after.as_secs())]
    ShutdownTimeout { vmid: u32, after: Duration },
    #[error("CT {vmid} has no data volume to move")]
    NoDataVolume { vmid: u32 },
    #[error("CT {vmid} already has a data volume")]
    DataVolumeTaken { vmid: u32 },
    #[error("data volume {path} exists but belongs to no CT; move it away or run `haimg down`")]
    OrphanVolume { path: PathBuf },
    #[error("template {path}: sha256 is {actual}, expected {expected}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("template {name}: {message}")]
    TemplateName { name: String, message: String },
    #[error("template {volid} is not in this cluster's store {store}; upload it first")]
    UnknownTemplate { volid: String, store: PathBuf },
    #[error("network of local cluster {cluster} has gateway {have}, CT {vmid} wants {want}")]
    GatewayMismatch {
        cluster: String,
        vmid: u32,
        have: String,
        want: String,
    },
    #[error("state directory {path:?} must be an absolute path without whitespace or control characters")]
    BadStateDir { path: PathBuf },
    #[error("{path} holds files haimg did not create; refusing to remove it")]
    NotAStateDir { path: PathBuf },
    #[error("state directory {path} belongs to cluster {found}, not {expected}")]
    WrongCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("failed to {action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Command(#[from] RunError),
    #[error(transparent)]
    Files(#[from] PveFilesError),
    #[error("network policy: {0}")]
    Policy(haimg_model::quote::Unquotable),
}

// Printed in the message, so not chained as a source (no `#[from]`).
impl From<haimg_model::quote::Unquotable> for LocalError {
    fn from(e: haimg_model::quote::Unquotable) -> LocalError {
        LocalError::Policy(e)
    }
}

type Result<T, E = LocalError> = std::result::Result<T, E>;

impl From<LocalError> for super::BackendError {
    fn from(e: LocalError) -> Self {
        super::BackendError::Target(Box::new(e))
    }
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> LocalError + 'a {
    move |error| LocalError::Io {
        action,
        path: path.to_path_buf(),
        error,
    }
}

/// How the local backend runs on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOptions {
    /// The cluster's own state directory (absolute).
    pub state_dir: PathBuf,
    /// Create privileged containers (default: unprivileged, idmapped).
    pub privileged: bool,
    pub idmap: IdMap,
    pub pids_max: u32,
    pub cgroup: CgroupMode,
    /// The host's resolv.conf values, which Proxmox uses when a CT has no
    /// nameserver / search domain of its own.
    pub host_dns: HostDns,
    /// subuid and subgid files to extend with the idmap range (`None`: leave
    /// them alone, for tests with a fake runner).
    pub subid_files: Option<(PathBuf, PathBuf)>,
    /// `lxc.signal.halt`; `None` = LXC's default (SIGPWR), as on Proxmox.
    pub halt_signal: Option<String>,
}

impl LocalOptions {
    /// `$HAIMG_STATE_DIR` or `/var/lib/haimg`.
    pub fn state_root() -> PathBuf {
        std::env::var_os(STATE_ROOT_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_ROOT))
    }

    /// Options for `cluster` on this host: state under [`Self::state_root`],
    /// cgroup mode from `/proc/self/cgroup`, DNS from `/etc/resolv.conf`,
    /// privileged if `HAIMG_LOCAL_PRIVILEGED=1`.
    pub fn detect(cluster: &str) -> LocalOptions {
        let root = Self::state_root();
        let root = std::path::absolute(&root).unwrap_or(root);
        LocalOptions {
            state_dir: root.join(cluster),
            privileged: std::env::var(PRIVILEGED_ENV).is_ok_and(|v| v == "1"),
            idmap: IdMap::default(),
            pids_max: 4096,
            cgroup: CgroupMode::from_proc_self_cgroup(
                &std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
            ),
            host_dns: HostDns::parse(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            ),
            subid_files: Some(("/etc/subuid".into(), "/etc/subgid".into())),
            halt_signal: None,
        }
    }
}

/// The cluster's client side, for tests and people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInfo {
    pub bridge: String,
    pub netns: String,
    /// `/run/netns/<netns>`, for [`crate::probe::netns::run_in`].
    pub netns_path: PathBuf,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
}

impl NetworkInfo {
    /// The shell line that fetches `url` from the client side.
    pub fn curl_hint(&self, url: &str) -> String {
        format!("ip netns exec {} curl {url}", self.netns)
    }
}

/// What [`LocalBackend::down`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DownReport {
    pub cluster: String,
    pub state_dir: PathBuf,
    /// LXC names of containers that were stopped and removed.
    pub containers: Vec<String>,
    pub killed_pids: Vec<i32>,
    pub unmounted: Vec<PathBuf>,
    pub network: net::Removed,
    pub cgroups: Vec<PathBuf>,
    pub state_dir_removed: bool,
    /// The nftables table of the network policy was deleted.
    pub policy_removed: bool,
}

impl DownReport {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
            && self.killed_pids.is_empty()
            && self.unmounted.is_empty()
            && self.network == net::Removed::default()
            && self.cgroups.is_empty()
            && !self.state_dir_removed
            && !self.policy_removed
    }
}

/// LXC containers on this host, one cluster per instance.
pub struct LocalBackend {
    cluster: String,
    opts: LocalOptions,
    names: Names,
    dir: StateDir,
    runner: Arc<dyn CommandRunner>,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("cluster", &self.cluster)
            .field("state_dir", &self.dir.root)
            .finish()
    }
}

/// Reject what would break an LXC config line or a mount entry.
fn check_state_dir(p: &Path) -> Result<PathBuf> {
    let s = p.to_string_lossy();
    if !p.is_absolute() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(LocalError::BadStateDir {
            path: p.to_path_buf(),
        });
    }
    // Normalise `//` and `/./` so one directory always yields one set of names.
    Ok(p.components().collect())
}

impl LocalBackend {
    /// The backend for this host: real commands, options from [`LocalOptions::detect`].
    pub fn for_cluster(cluster: &str) -> Result<LocalBackend> {
        LocalBackend::new(
            cluster,
            LocalOptions::detect(cluster),
            Arc::new(SystemRunner),
        )
    }

    pub fn new(
        cluster: &str,
        mut opts: LocalOptions,
        runner: Arc<dyn CommandRunner>,
    ) -> Result<LocalBackend> {
        opts.state_dir = check_state_dir(&opts.state_dir)?;
        let names = Names::new(cluster, &opts.state_dir);
        Ok(LocalBackend {
            cluster: cluster.to_string(),
            dir: StateDir::new(opts.state_dir.clone()),
            names,
            opts,
            runner,
        })
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }
    pub fn names(&self) -> &Names {
        &self.names
    }
    pub fn state_dir(&self) -> &Path {
        &self.dir.root
    }
    pub fn lxcpath(&self) -> PathBuf {
        self.dir.lxcpath()
    }
    pub fn options(&self) -> &LocalOptions {
        &self.opts
    }

    /// The LXC container name of a CT.
    pub fn container_name(&self, vmid: u32) -> String {
        self.names.container(vmid)
    }

    /// Where the CT's console (PID 1's stdout/stderr) is logged.
    pub fn console_log(&self, vmid: u32) -> PathBuf {
        self.dir
            .ct_dir(&self.names.container(vmid))
            .join("console.log")
    }

    /// LXC's own log of the CT's last start.
    pub fn lxc_log(&self, vmid: u32) -> PathBuf {
        self.dir.ct_dir(&self.names.container(vmid)).join("lxc.log")
    }

    /// The client side of the network, once a container was created.
    pub fn network(&self) -> Result<Option<NetworkInfo>> {
        Ok(self.load()?.network.map(|n| NetworkInfo {
            netns_path: crate::probe::netns::path(&n.netns),
            bridge: n.bridge,
            netns: n.netns,
            gateway: n.gateway,
            prefix: n.prefix,
        }))
    }

    /// Where the cluster's client namespace is (or will be, before the first
    /// create): `/run/netns/<netns>`.
    pub fn netns_path(&self) -> PathBuf {
        crate::probe::netns::path(&self.names.netns())
    }

    /// Where probes of this cluster come from: inside its client namespace
    /// (the members' network exists only there), from the gateway address
    /// there, the admin address the network policy lets reach the health
    /// ports (`gateway` until the network exists). Before the first container
    /// exists the namespace does not either: a probe then fails rather than
    /// leave the host.
    pub fn probe_origin(&self, gateway: Ipv4Addr) -> Result<crate::probe::Origin> {
        let (netns, admin) = match self.network()? {
            Some(n) => (n.netns_path, n.gateway),
            None => (self.netns_path(), gateway),
        };
        Ok(crate::probe::Origin::new(Some(netns), Some(admin.into())))
    }

    /// Host PID of the CT's init, when it runs.
    pub fn init_pid(&self, vmid: u32) -> Result<Option<u32>> {
        Ok(self
            .lxc_info(&self.names.container(vmid))?
            .and_then(|(_, pid)| pid))
    }

    /// Run `argv` inside the running CT (`lxc-attach`, clean environment with
    /// a standard PATH) and return its output whatever its exit status.
    pub fn attach(&self, vmid: u32, argv: &[&str], timeout: Duration) -> Result<exec::Output> {
        let rec = self.record(vmid)?;
        if !self.is_running(&rec.name)? {
            return Err(LocalError::NotRunning { vmid });
        }
        let c = self
            .lxc("lxc-attach", &rec.name, timeout)
            .args([
                "--clear-env",
                "--set-var",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--",
            ])
            .args(argv.iter().copied());
        Ok(self.runner.output(&c)?)
    }

    /// Every process inside the CT (zombies included, state `Z`), by host
    /// PID: to kill a service from outside (`host::kill`) or to check that
    /// nothing is left unreaped.
    pub fn processes(&self, vmid: u32) -> Vec<host::ProcInfo> {
        host::payload_processes(&self.names.container(vmid))
    }

    /// The state as on disk; an empty state when there is none yet.
    fn load(&self) -> Result<State> {
        let st = self
            .dir
            .load()?
            .unwrap_or_else(|| State::new(&self.cluster, &self.names.instance));
        if st.cluster != self.cluster {
            return Err(LocalError::WrongCluster {
                path: self.dir.root.clone(),
                found: st.cluster,
                expected: self.cluster.clone(),
            });
        }
        Ok(st)
    }

    /// Change the state under the directory lock.
    fn mutate<R>(&self, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
        self.dir.init(self.traverse_gid())?;
        let _lock = self.dir.lock()?;
        let mut st = self.load()?;
        let r = f(&mut st)?;
        self.dir.save(&st)?;
        Ok(r)
    }

    fn record(&self, vmid: u32) -> Result<CtRecord> {
        self.load()?
            .containers
            .remove(&vmid)
            .ok_or_else(|| LocalError::NotFound {
                vmid,
                cluster: self.cluster.clone(),
            })
    }

    /// A record a killed run left half created is no container (as after a
    /// failed create on Proxmox): `list` and `status` leave it out, so a
    /// rollout creates its green again instead of draining blue for a green
    /// that cannot start; the next create of its VMID builds it again and
    /// `down` removes it.
    fn abandoned(&self, vmid: u32, rec: &CtRecord) -> bool {
        rec.phase == Phase::Creating && !self.dir.being_created(vmid)
    }

    /// `lxc-info`: `None` when LXC does not know the container.
    fn lxc_info(&self, name: &str) -> Result<Option<(String, Option<u32>)>> {
        if !self.dir.ct_dir(name).join("config").is_file() {
            return Ok(None);
        }
        let c = self
            .lxc("lxc-info", name, LXC_INFO_TIMEOUT)
            .args(["-s", "-p"]);
        let out = self.runner.output(&c).map_err(LocalError::from)?;
        if !out.success() {
            if out.stderr_str().contains("doesn't exist") {
                return Ok(None);
            }
            return Err(RunError::failed(&c, &out).into());
        }
        Ok(Some(parse_info(&out.stdout_str())))
    }

    fn is_running(&self, name: &str) -> Result<bool> {
        Ok(self
            .lxc_info(name)?
            .is_some_and(|(state, _)| state != "STOPPED"))
    }

    fn lxc(&self, program: &str, name: &str, timeout: Duration) -> Cmd {
        Cmd::new(program, timeout).args([
            "-P".to_string(),
            self.lxcpath().display().to_string(),
            "-n".to_string(),
            name.to_string(),
        ])
    }

    /// The host gid of an unprivileged CT's root, which must pass through the
    /// state directory to `lxc/` (see `StateDir::init`); `None` when CTs are
    /// privileged.
    fn traverse_gid(&self) -> Option<u32> {
        (!self.opts.privileged).then_some(self.opts.idmap.host_base)
    }

    /// Give root the idmap range in /etc/subuid and /etc/subgid (LXC maps
    /// ids through newuidmap, which checks them). Call under the lock.
    fn ensure_subids(&self) -> Result<()> {
        if let Some((uid, gid)) = &self.opts.subid_files {
            for f in [uid, gid] {
                if host::ensure_subid(f, self.opts.idmap.host_base, self.opts.idmap.count)
                    .map_err(io_err("extend", f))?
                {
                    tracing::info!(
                        "added root:{}:{} to {}",
                        self.opts.idmap.host_base,
                        self.opts.idmap.count,
                        f.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// Build or repair what a CT needs on the host (the network; the subid
    /// ranges for an unprivileged CT), under the directory lock, so parallel
    /// creates and starts do not race to add the same bridge or line.
    fn prepare_host(&self, gateway: Ipv4Addr, prefix: u8, privileged: bool) -> Result<()> {
        self.dir.init(self.traverse_gid())?;
        let _lock = self.dir.lock()?;
        if !privileged {
            self.ensure_subids()?;
        }
        net::ensure(&*self.runner, &self.names, gateway, prefix)?;
        Ok(())
    }

    /// The nftables table (bridge family) holding this cluster's network policy.
    pub fn policy_table(&self) -> String {
        format!("haimg_{}", self.names.instance)
    }

    /// Enforce the network policy on the cluster's bridge: the ruleset of
    /// [`nftables::ruleset`], replacing any earlier version at once (`nft -f`
    /// applies a file atomically; loaded every time, in case the table went
    /// away with a reboot). `true` when the rules differ from the last ones
    /// loaded. Removed again by [`Self::down`].
    pub fn apply_policy(
        &self,
        policy: &haimg_model::policy::Policy,
        arp_owners: &[(std::net::Ipv4Addr, String)],
    ) -> Result<bool> {
        let table = self.policy_table();
        let rules = nftables::ruleset(policy, &table, &self.names.ct_veth_prefix(), arp_owners)?;
        // Declaring the table first makes the delete valid when it does not exist yet.
        let text = format!("table bridge {table} {{}}\ndelete table bridge {table}\n{rules}");
        let path = self.dir.root.join("policy.nft");
        std::fs::create_dir_all(&self.dir.root).map_err(io_err("create", &self.dir.root))?;
        let changed = std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str());
        std::fs::write(&path, text).map_err(io_err("write", &path))?;
        self.runner.run(
            &Cmd::new("nft", IP_TIMEOUT).args(["-f".to_string(), path.display().to_string()]),
        )?;
        Ok(changed)
    }

    /// Delete the policy's table (always tried, in case the state directory
    /// is gone); `true` when this cluster had applied one.
    fn remove_policy(&self) -> bool {
        let applied = self.dir.root.join("policy.nft").is_file();
        let cmd = Cmd::new("nft", IP_TIMEOUT).args([
            "delete".to_string(),
            "table".into(),
            "bridge".into(),
            self.policy_table(),
        ]);
        let deleted = self.runner.output(&cmd).is_ok_and(|o| o.success());
        applied && deleted
    }

    /// Give the client namespace another source address (e.g. to act as a
    /// client from another /24 for `ip_hash`); members reply through the
    /// gateway, so any address works. Gone with the namespace at `down`.
    pub fn add_client_address(&self, ip: Ipv4Addr) -> Result<()> {
        let ns = self.names.netns();
        self.runner.run(&Cmd::new("ip", IP_TIMEOUT).args([
            "-n".to_string(),
            ns,
            "addr".into(),
            "replace".into(),
            format!("{ip}/32"),
            "dev".into(),
            "eth0".into(),
        ]))?;
        Ok(())
    }

    /// Take an address [`LocalBackend::add_client_address`] added away again.
    pub fn remove_client_address(&self, ip: Ipv4Addr) -> Result<()> {
        let ns = self.names.netns();
        self.runner.run(&Cmd::new("ip", IP_TIMEOUT).args([
            "-n".to_string(),
            ns,
            "addr".into(),
            "del".into(),
            format!("{ip}/32"),
            "dev".into(),
            "eth0".into(),
        ]))?;
        Ok(())
    }

    fn lxc_input(&self, rec: &CtRecord, vmid: u32) -> LxcInput {
        let ct = self.dir.ct_dir(&rec.name);
        LxcInput {
            cluster: self.cluster.clone(),
            vmid,
            hostname: rec.hostname.clone(),
            idmap: (!rec.privileged).then_some(self.opts.idmap),
            cgroup: self.opts.cgroup,
            memory_mb: rec.memory_mb,
            pids_max: self.opts.pids_max,
            rootfs: ct.join("rootfs"),
            bridge: self.names.bridge(),
            veth_pair: self.names.ct_veth(vmid),
            hwaddr: rec.hwaddr.clone(),
            mtu: 1500,
            env: rec.env.clone(),
            data_volume: rec.data_volume.clone().zip(rec.data_mount.clone()),
            console_log: ct.join("console.log"),
            halt_signal: self.opts.halt_signal.clone(),
            init_cmd: rec.entrypoint.clone(),
            host_managed: rec.host_managed,
            ip: rec.ip,
            prefix: rec.prefix,
            gateway: rec.gateway,
        }
    }

    fn pve_input(&self, rec: &CtRecord) -> PveInput {
        PveInput {
            hostname: rec.hostname.clone(),
            ifname: "eth0".into(),
            ip: rec.ip,
            prefix: rec.prefix,
            gateway: Some(rec.gateway),
            nameserver: (!rec.nameservers.is_empty()).then(|| {
                rec.nameservers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
            searchdomain: rec.search_domain.clone(),
            host_dns: self.opts.host_dns.clone(),
        }
    }

    /// Write the LXC config and the Proxmox files into the rootfs (pre-start).
    fn prepare(&self, rec: &CtRecord, vmid: u32) -> Result<()> {
        let ct = self.dir.ct_dir(&rec.name);
        let cfg = ct.join("config");
        let text =
            lxcconf::render(&self.lxc_input(rec, vmid)).map_err(|e| LocalError::InvalidSpec {
                vmid,
                field: "config",
                message: e.to_string(),
            })?;
        std::fs::write(&cfg, text).map_err(io_err("write", &cfg))?;
        use std::os::unix::fs::PermissionsExt as _;
        // 0600: `lxc.environment` carries the member's secrets; only root (lxc-start) reads it.
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod", &cfg))?;
        pvefiles::apply(&ct.join("rootfs"), &self.pve_input(rec))?;
        Ok(())
    }

    fn template_path(&self, t: &StoredTemplate) -> Result<PathBuf> {
        let store = self.dir.templates();
        let path = store.join(&t.filename);
        let known = template::check_filename(&t.filename).is_ok()
            && Path::new(&t.volid) == path
            && path.is_file();
        if !known {
            return Err(LocalError::UnknownTemplate {
                volid: t.volid.clone(),
                store,
            });
        }
        Ok(path)
    }

    /// Remove a directory we own, refusing to descend into anything mounted.
    fn remove_tree(&self, path: &Path) -> Result<()> {
        if !path.exists() {
            return Ok(());
        }
        let mounted = host::current_mounts_under(path).map_err(io_err("read mounts for", path))?;
        for m in mounted {
            self.runner.run(
                &Cmd::new("umount", UMOUNT_TIMEOUT)
                    .args(["-l".to_string(), m.display().to_string()]),
            )?;
        }
        std::fs::remove_dir_all(path).map_err(io_err("remove", path))
    }

    fn build(&self, spec: &ContainerSpec, rec: &CtRecord, tpl: &Path) -> Result<()> {
        self.prepare_host(spec.gateway, spec.prefix, rec.privileged)?;
        let ct = self.dir.ct_dir(&rec.name);
        // Leftovers of a crashed create carry our name: they are ours.
        self.remove_tree(&ct)?;
        let rootfs = ct.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(io_err("create", &rootfs))?;
        {
            use std::os::unix::fs::PermissionsExt;
            // The CT's directory is owner-only (see `StateDir::init`); its
            // rootfs is the CT's `/`, 0755 as on any system.
            for (d, mode) in [(&ct, state::DIR_MODE), (&rootfs, 0o755)] {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
                    .map_err(io_err("chmod", d))?;
            }
        }
        self.runner
            .run(&template::extract_cmd(tpl, &rootfs, TAR_TIMEOUT))?;
        if let Some(vol) = &rec.data_volume {
            std::fs::create_dir_all(vol).map_err(io_err("create", vol))?;
        }
        // Proxmox runs the start-time setup once at create, too.
        self.prepare(rec, spec.vmid)?;
        Ok(())
    }

    /// Remove a CT's files and volume; the record goes separately.
    fn remove_ct_files(&self, rec: &CtRecord) -> Result<()> {
        self.remove_tree(&self.dir.ct_dir(&rec.name))?;
        if let Some(v) = &rec.data_volume {
            self.remove_tree(v)?;
        }
        Ok(())
    }

    /// Remove everything this cluster created on the host: containers (and
    /// any process left in them), mounts under the state directory, veths,
    /// the client namespace, the bridge, leftover cgroups and the state
    /// directory. Safe to run again; works without a state file.
    pub fn down(&self) -> Result<DownReport> {
        let mut report = DownReport {
            cluster: self.cluster.clone(),
            state_dir: self.dir.root.clone(),
            ..DownReport::default()
        };
        let exists = self.dir.exists();
        if exists && !self.dir.looks_like_ours()? {
            return Err(LocalError::NotAStateDir {
                path: self.dir.root.clone(),
            });
        }
        let _lock = if exists { Some(self.dir.lock()?) } else { None };
        let names = self.known_containers();
        // In parallel: lxc-stop takes about 0.5 s per container however fast
        // the container dies; a failure here is caught by kill_leftovers.
        std::thread::scope(|s| {
            for name in &names {
                if self.dir.ct_dir(name).join("config").is_file() {
                    s.spawn(move || {
                        let c = self.lxc("lxc-stop", name, LXC_KILL_TIMEOUT).arg("-k");
                        match self.runner.output(&c) {
                            Ok(out) => tracing::debug!("lxc-stop -k {name}: {}", out.ended),
                            Err(e) => tracing::warn!("{e}"),
                        }
                    });
                }
            }
        });
        report.containers = names.clone();
        report.killed_pids = self.kill_leftovers(&names)?;
        if exists {
            for m in host::current_mounts_under(&self.dir.root)
                .map_err(io_err("read mounts for", &self.dir.root))?
            {
                self.runner.run(
                    &Cmd::new("umount", UMOUNT_TIMEOUT)
                        .args(["-l".to_string(), m.display().to_string()]),
                )?;
                report.unmounted.push(m);
            }
        }
        report.policy_removed = self.remove_policy();
        report.network = net::teardown(&*self.runner, &self.names)?;
        for cg in host::leftover_cgroups(&names) {
            if host::remove_cgroup(&cg).is_ok() {
                report.cgroups.push(cg);
            }
        }
        if exists {
            std::fs::remove_dir_all(&self.dir.root).map_err(io_err("remove", &self.dir.root))?;
            report.state_dir_removed = true;
        }
        Ok(report)
    }

    /// Container names from the state file, the LXC path, and the cgroups
    /// of live processes (a container whose files are gone still runs).
    fn known_containers(&self) -> Vec<String> {
        let mut names: Vec<String> = match self.dir.load() {
            Ok(Some(st)) => st.containers.values().map(|c| c.name.clone()).collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!("{e}; finding containers by name instead");
                Vec::new()
            }
        };
        let prefix = format!("{}-{}-", self.cluster, self.names.instance);
        if let Ok(rd) = std::fs::read_dir(self.dir.lxcpath()) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&prefix) {
                    names.push(n);
                }
            }
        }
        names.extend(host::running_names(&prefix));
        names.sort();
        names.dedup();
        names
    }

    /// SIGKILL anything still inside (or monitoring) our containers, by PID,
    /// and wait until it is gone.
    fn kill_leftovers(&self, names: &[String]) -> Result<Vec<i32>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let pids = host::container_pids(&self.lxcpath(), names);
        for &pid in &pids {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            tracing::info!(
                "killing leftover process {pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ").trim()
            );
            if let Err(e) = host::kill(pid) {
                tracing::debug!("kill {pid}: {e}");
            }
        }
        let deadline = Instant::now() + REAP_TIMEOUT;
        while pids.iter().any(|&p| host::pid_alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(pids)
    }

    fn validate(&self, s: &ContainerSpec) -> Result<()> {
        let bad = |field: &'static str, message: String| LocalError::InvalidSpec {
            vmid: s.vmid,
            field,
            message,
        };
        if s.vmid < 100 {
            return Err(bad(
                "vmid",
                format!("{} is below 100 (Proxmox's lowest CT id)", s.vmid),
            ));
        }
        if u64::from(s.vmid) > haimg_model::spec::MAX_VMID {
            return Err(bad(
                "vmid",
                format!(
                    "{} is above {}: its veth name would not carry the prefix the network policy matches",
                    s.vmid,
                    haimg_model::spec::MAX_VMID
                ),
            ));
        }
        let host_ok = !s.hostname.is_empty()
            && s.hostname.len() <= 64
            && s.hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !host_ok {
            return Err(bad(
                "hostname",
                format!("{:?} is not a valid host name", s.hostname),
            ));
        }
        if !is_unicast_mac(&s.hwaddr) {
            return Err(bad(
                "hwaddr",
                format!(
                    "{:?} is not a unicast MAC address like BC:24:11:00:01:00",
                    s.hwaddr
                ),
            ));
        }
        if !(8..=30).contains(&s.prefix) {
            return Err(bad(
                "prefix",
                format!("/{} is not a usable IPv4 prefix (8..30)", s.prefix),
            ));
        }
        if s.memory_mb < 16 {
            return Err(bad(
                "memory_mb",
                format!("{} is below Proxmox's minimum of 16", s.memory_mb),
            ));
        }
        for (k, v) in &s.env {
            let key_ok = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key_ok {
                return Err(bad("env", format!("{k:?} is not a valid variable name")));
            }
            if v.chars().any(|c| c.is_control() && c != '\t') {
                return Err(bad(
                    "env",
                    format!("the value of {k} contains a control character"),
                ));
            }
        }
        for t in &s.tags {
            if !is_pve_tag(t) {
                return Err(bad(
                    "tags",
                    format!("{t:?} is not a Proxmox tag ([a-z0-9_][a-z0-9_+.-]*)"),
                ));
            }
        }
        if let Some(e) = &s.entrypoint {
            if !e.starts_with('/') || e.chars().any(|c| c.is_control()) {
                return Err(bad(
                    "entrypoint",
                    format!("{e:?} must be an absolute path on one line"),
                ));
            }
        }
        if let Some(m) = &s.data_mount {
            let ok = m.starts_with('/')
                && m.len() > 1
                && !m.split('/').any(|c| c == "..")
                && !m.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(bad(
                    "data_mount",
                    format!("{m:?} must be an absolute path without `..` or spaces"),
                ));
            }
        } else if s.data_volume_gb.is_some() {
            return Err(bad("data_mount", "a data volume needs a mount path".into()));
        }
        Ok(())
    }
}

/// The first `n` ERROR messages of an LXC log that say why, skipping
/// lxc-start's generic follow-ups; joined with " | ".
fn first_errors(log: &str, n: usize) -> String {
    const GENERIC: [&str; 6] = [
        "To get more details",
        "Additional information can be obtained",
        "The container failed to start",
        "Failed to spawn container",
        "Received container state",
        "Failed to send SIGKILL",
    ];
    log.lines()
        .filter(|l| l.contains(" ERROR "))
        .map(|l| l.split_once(" - ").map_or(l, |(_, m)| m))
        .map(|m| m.split_once(" - ").map_or(m, |(_, msg)| msg).trim())
        .filter(|m| !GENERIC.iter().any(|g| m.contains(g)))
        .take(n)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `State: RUNNING\nPID: 42\n` → ("RUNNING", Some(42)).
fn parse_info(text: &str) -> (String, Option<u32>) {
    let mut state = String::from("STOPPED");
    let mut pid = None;
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("State:") {
            state = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("PID:") {
            pid = v.trim().parse().ok();
        }
    }
    (state, pid)
}

fn is_unicast_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

fn is_pve_tag(t: &str) -> bool {
    let mut c = t.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphanumeric() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || "_-+.".contains(x))
}

fn power(state: &str) -> PowerState {
    if state == "STOPPED" {
        PowerState::Stopped
    } else {
        PowerState::Running
    }
}

impl Backend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    /// The bridge's nftables table filters every member by the name of its
    /// interface, from its first packet: containers need nothing of their own.
    fn enforce_policy(&self, p: &super::Policy<'_>) -> Option<super::PolicyReport> {
        let mut report = super::PolicyReport::new("nftables", super::Switch::On);
        if p.target_wide {
            match self.apply_policy(p.flows, &p.arp_owners) {
                Ok(true) => report.changes.push(format!(
                    "nftables table bridge {}: loaded",
                    self.policy_table()
                )),
                Ok(false) => {}
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        Some(report)
    }

    fn upload_template(
        &self,
        _node: &str,
        path: &Path,
        name: &str,
        sha256: &str,
    ) -> super::Result<StoredTemplate> {
        let filename = name.to_string();
        template::check_filename(&filename).map_err(|message| LocalError::TemplateName {
            name: filename.clone(),
            message,
        })?;
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(LocalError::TemplateName {
                name: filename,
                message: format!("{sha256:?} is not a sha256 (64 hex digits)"),
            }
            .into());
        }
        self.dir.init(self.traverse_gid())?;
        let dst = self.dir.templates().join(&filename);
        let same = dst.is_file()
            && template::sha256_file(&dst)
                .map_err(io_err("read", &dst))?
                .eq_ignore_ascii_case(sha256);
        let size = if same {
            tracing::info!("template {filename} already stored with sha256 {sha256}");
            std::fs::metadata(&dst).map_err(io_err("stat", &dst))?.len()
        } else {
            template::copy_verified(path, &dst, sha256)?
        };
        let rec = TemplateRecord {
            path: dst.clone(),
            sha256: sha256.to_ascii_lowercase(),
            size,
        };
        self.mutate(|st| {
            st.templates.insert(filename.clone(), rec);
            Ok(())
        })?;
        Ok(StoredTemplate {
            volid: dst.display().to_string(),
            filename,
            size,
        })
    }

    fn list_templates(&self, _node: &str) -> super::Result<Vec<StoredTemplate>> {
        Ok(template::list(&self.dir.templates())?
            .into_iter()
            .map(|(filename, path, size)| StoredTemplate {
                volid: path.display().to_string(),
                filename,
                size,
            })
            .collect())
    }

    fn delete_template(&self, _node: &str, t: &StoredTemplate) -> super::Result<()> {
        let path = self.template_path(t)?;
        std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
        self.mutate(|st| {
            st.templates.remove(&t.filename);
            Ok(())
        })?;
        Ok(())
    }

    fn create(&self, spec: &ContainerSpec) -> super::Result<()> {
        self.validate(spec)?;
        let tpl = self.template_path(&spec.template)?;
        let vmid = spec.vmid;
        let data_volume = spec.data_volume_gb.map(|_| self.dir.volume(vmid));
        let rec = CtRecord {
            name: self.names.container(vmid),
            phase: Phase::Creating,
            privileged: self.opts.privileged,
            node: spec.node.clone(),
            hostname: spec.hostname.clone(),
            role: spec.role.to_string(),
            slot: spec.slot.clone(),
            template: tpl.clone(),
            ip: spec.ip,
            prefix: spec.prefix,
            gateway: spec.gateway,
            hwaddr: spec.hwaddr.clone(),
            nameservers: spec.nameservers.clone(),
            search_domain: spec.search_domain.clone(),
            cores: spec.cores,
            memory_mb: spec.memory_mb,
            rootfs_gb: spec.rootfs_gb,
            data_mount: spec.data_mount.clone(),
            data_volume,
            tags: spec.tags.clone(),
            env: spec.env.clone(),
            onboot: spec.onboot,
            entrypoint: spec.entrypoint.clone(),
            host_managed: spec.host_managed,
        };
        self.dir.init(self.traverse_gid())?;
        let _building = self.dir.creating_lock(vmid)?;
        self.mutate(|st| {
            match st.containers.get(&vmid) {
                // We hold its create lock, so no run is building it: a killed
                // run left it. build() starts from a clean directory.
                Some(old) if old.phase == Phase::Creating => tracing::warn!(
                    "CT {vmid} was left half created by a killed run; building it again"
                ),
                Some(_) => {
                    return Err(LocalError::Exists {
                        vmid,
                        cluster: self.cluster.clone(),
                    })
                }
                None => {}
            }
            if let Some(v) = &rec.data_volume {
                if v.exists()
                    && !st
                        .containers
                        .values()
                        .any(|c| c.data_volume.as_ref() == Some(v))
                {
                    return Err(LocalError::OrphanVolume { path: v.clone() });
                }
            }
            match &st.network {
                Some(n) if (n.gateway, n.prefix) != (spec.gateway, spec.prefix) => {
                    return Err(LocalError::GatewayMismatch {
                        cluster: self.cluster.clone(),
                        vmid,
                        have: format!("{}/{}", n.gateway, n.prefix),
                        want: format!("{}/{}", spec.gateway, spec.prefix),
                    });
                }
                Some(_) => {}
                None => {
                    st.network = Some(NetRecord {
                        bridge: self.names.bridge(),
                        netns: self.names.netns(),
                        client_veth: self.names.client_veth(),
                        gateway: spec.gateway,
                        prefix: spec.prefix,
                    })
                }
            }
            st.containers.insert(vmid, rec.clone());
            Ok(())
        })?;
        let t0 = Instant::now();
        if let Err(e) = self.build(spec, &rec, &tpl) {
            // Like Proxmox: a failed create leaves nothing behind; if even the
            // rollback fails, the record stays for destroy/down.
            let rollback = self.remove_ct_files(&rec).and_then(|()| {
                self.mutate(|st| {
                    st.containers.remove(&vmid);
                    Ok(())
                })
            });
            if let Err(r) = rollback {
                tracing::warn!("CT {vmid}: cleanup after the failed create failed too: {r}");
            }
            return Err(e.into());
        }
        self.mutate(|st| {
            if let Some(c) = st.containers.get_mut(&vmid) {
                c.phase = Phase::Created;
            }
            Ok(())
        })?;
        tracing::info!(
            "created CT {vmid} ({}) in {:.2}s",
            rec.name,
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn start(&self, _node: &str, vmid: u32) -> super::Result<()> {
        let rec = self.record(vmid)?;
        if rec.phase != Phase::Created {
            return Err(LocalError::Incomplete { vmid }.into());
        }
        if self.is_running(&rec.name)? {
            return Err(LocalError::AlreadyRunning { vmid }.into());
        }
        self.prepare_host(rec.gateway, rec.prefix, rec.privileged)?;
        self.prepare(&rec, vmid)?;
        let ct = self.dir.ct_dir(&rec.name);
        for log in ["lxc.log", "console.log"] {
            let p = ct.join(log);
            if p.exists() {
                let _ = std::fs::rename(&p, ct.join(format!("{log}.1")));
            }
        }
        let log = ct.join("lxc.log");
        let c = self.lxc("lxc-start", &rec.name, LXC_START_TIMEOUT).args([
            "-d".to_string(),
            "-o".to_string(),
            log.display().to_string(),
            "-l".to_string(),
            "INFO".to_string(),
        ]);
        let out = self.runner.output(&c).map_err(LocalError::from)?;
        if !out.success() {
            // A failed start can leave LXC's monitor behind; it is ours, end it.
            if let Err(e) = self.kill_leftovers(std::slice::from_ref(&rec.name)) {
                tracing::warn!("CT {vmid}: {e}");
            }
            let causes = first_errors(&std::fs::read_to_string(&log).unwrap_or_default(), 2);
            let detail = if causes.is_empty() {
                RunError::failed(&c, &out).to_string()
            } else {
                format!("{causes} (log: {})", log.display())
            };
            return Err(LocalError::StartFailed { vmid, detail }.into());
        }
        Ok(())
    }

    fn shutdown(&self, _node: &str, vmid: u32, timeout: Duration) -> super::Result<()> {
        let rec = self.record(vmid)?;
        if !self.is_running(&rec.name)? {
            return Err(LocalError::NotRunning { vmid }.into());
        }
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let secs = secs.max(1);
        let c = self
            .lxc("lxc-stop", &rec.name, Duration::from_secs(secs + 15))
            .args(["-t".to_string(), secs.to_string(), "--nokill".to_string()]);
        let out = self.runner.output(&c).map_err(LocalError::from)?;
        if self.is_running(&rec.name)? {
            return Err(LocalError::ShutdownTimeout {
                vmid,
                after: Duration::from_secs(secs),
            }
            .into());
        }
        if !out.success() {
            tracing::debug!("{}", RunError::failed(&c, &out));
        }
        Ok(())
    }

    fn stop(&self, _node: &str, vmid: u32) -> super::Result<()> {
        let rec = self.record(vmid)?;
        if !self.is_running(&rec.name)? {
            return Err(LocalError::NotRunning { vmid }.into());
        }
        let c = self.lxc("lxc-stop", &rec.name, LXC_KILL_TIMEOUT).arg("-k");
        let out = self.runner.output(&c).map_err(LocalError::from)?;
        if self.is_running(&rec.name)? {
            return Err(LocalError::Command(RunError::failed(&c, &out)).into());
        }
        Ok(())
    }

    fn destroy(&self, _node: &str, vmid: u32) -> super::Result<()> {
        let rec = self.record(vmid)?;
        if self.is_running(&rec.name)? {
            return Err(LocalError::Running { vmid }.into());
        }
        self.remove_ct_files(&rec)?;
        self.mutate(|st| {
            st.containers.remove(&vmid);
            Ok(())
        })?;
        Ok(())
    }

    fn status(&self, _node: &str, vmid: u32) -> super::Result<Option<ContainerStatus>> {
        let st = self.load()?;
        let Some(rec) = st
            .containers
            .get(&vmid)
            .filter(|r| !self.abandoned(vmid, r))
        else {
            return Ok(None);
        };
        let state = self
            .lxc_info(&rec.name)?
            .map_or(PowerState::Stopped, |(s, _)| power(&s));
        Ok(Some(ContainerStatus {
            vmid,
            node: rec.node.clone(),
            name: rec.hostname.clone(),
            state,
            tags: rec.tags.clone(),
        }))
    }

    fn list(&self) -> super::Result<Vec<ContainerStatus>> {
        let st = self.load()?;
        let mut v = Vec::new();
        for (vmid, rec) in &st.containers {
            if self.abandoned(*vmid, rec) {
                continue;
            }
            let state = self
                .lxc_info(&rec.name)?
                .map_or(PowerState::Stopped, |(s, _)| power(&s));
            v.push(ContainerStatus {
                vmid: *vmid,
                node: rec.node.clone(),
                name: rec.hostname.clone(),
                state,
                tags: rec.tags.clone(),
            });
        }
        Ok(v)
    }

    fn move_data_volume(&self, _node: &str, from: u32, to: u32) -> super::Result<()> {
        let src = self.record(from)?;
        let dst = self.record(to)?;
        if self.is_running(&src.name)? {
            return Err(LocalError::Running { vmid: from }.into());
        }
        let Some(vol) = src.data_volume.clone() else {
            return Err(LocalError::NoDataVolume { vmid: from }.into());
        };
        if dst.data_volume.is_some() {
            return Err(LocalError::DataVolumeTaken { vmid: to }.into());
        }
        // Renamed for its new owner, as Proxmox renames a reassigned volume.
        let new = self.dir.volume(to);
        if new.exists() {
            return Err(LocalError::OrphanVolume { path: new }.into());
        }
        std::fs::rename(&vol, &new).map_err(io_err("rename", &vol))?;
        self.mutate(|st| {
            if let Some(c) = st.containers.get_mut(&from) {
                c.data_volume = None;
            }
            if let Some(c) = st.containers.get_mut(&to) {
                c.data_volume = Some(new.clone());
                if c.data_mount.is_none() {
                    c.data_mount = src.data_mount.clone();
                }
            }
            Ok(())
        })?;
        // A running target sees the volume at its next start, like a pending change.
        Ok(())
    }

    fn has_data_volume(&self, _node: &str, vmid: u32) -> super::Result<bool> {
        Ok(self.record(vmid)?.data_volume.is_some())
    }

    fn set_tags(&self, _node: &str, vmid: u32, tags: &[String]) -> super::Result<()> {
        if let Some(t) = tags.iter().find(|t| !is_pve_tag(t)) {
            return Err(LocalError::InvalidSpec {
                vmid,
                field: "tags",
                message: format!("{t:?} is not a Proxmox tag ([a-z0-9_][a-z0-9_+.-]*)"),
            }
            .into());
        }
        self.mutate(|st| {
            let c = st
                .containers
                .get_mut(&vmid)
                .ok_or_else(|| LocalError::NotFound {
                    vmid,
                    cluster: self.cluster.clone(),
                })?;
            c.tags = tags.to_vec();
            Ok(())
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
