//! The boot, step by step, and the other entry points.
//!
//! [`main`] is PID 1: mount what it needs, then [`prepare`] (identity,
//! network, secrets, render), then the supervisor loop until a halt or reboot
//! signal. A failure in `prepare` becomes one `haimg-init[error]:` console
//! line and the `error` of the status file, and is retried with backoff
//! ([`retry_delay_ms`]: 1 s doubling to 1 min; a full /run or a file fixed by
//! hand clears by itself): meanwhile the init has no services, still reaps,
//! still answers the halt signal, never exits in a loop. [`Boot::root`] lets tests run the same steps against a directory
//! instead of `/` (no mounts, no network changes, programs looked up under
//! the directory).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use haimg_model::image::ImageInfo;
use haimg_model::render::{self, Extras};
use haimg_model::{Cluster, Role};
use serde::Deserialize;

use crate::identity::{self, Evidence, Identity, Runtime};
use crate::services::{self, Users};
use crate::status::{IdentitySummary, Status, StatusFile};
use crate::supervise::process;
use crate::supervise::{Backoff, Finish, ServiceSpec, Supervisor};
use crate::{error, info, net, warn};

/// Secrets delivered in PID 1's environment (Proxmox ≥ 9.1 `env`, the local
/// backend's `lxc.environment`), from the deploy host's secrets store.
pub use haimg_model::image::secret_env::{
    DB_PASSWORD as ENV_DB_PASSWORD, DB_USER as ENV_DB_USER,
    MONGO_ADMIN_PASSWORD as ENV_MONGO_ADMIN, MONGO_APP_PASSWORD as ENV_MONGO_APP,
    MONGO_KEY as ENV_MONGO_KEY, MONGO_MONITOR_PASSWORD as ENV_MONGO_MONITOR,
    NEXT_ACTIONS_KEY as ENV_NEXT_ACTIONS_KEY, VRRP_PASS as ENV_VRRP_PASS,
};

/// Where the boot reads and writes.
#[derive(Debug, Clone)]
pub struct Boot {
    /// `/` as PID 1; a directory in tests.
    pub root: PathBuf,
    /// Mount /proc, /run, /dev/shm and configure eth0 (PID 1 only).
    pub system: bool,
    pub env: BTreeMap<String, String>,
}

impl Boot {
    fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }
}

/// What `prepare` hands to the supervisor.
pub struct Prepared {
    pub cluster: Cluster,
    pub identity: Identity,
    pub services: Vec<ServiceSpec>,
    /// mongo: the users to create once this member is primary.
    pub users: Option<crate::join::users::Passwords>,
}

/// How the process ends once every service is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Exit,
    Reboot,
}

/// PID 1 reboots on request; anything else (tests, `supervise`) only exits,
/// since reboot(2) outside a container's PID namespace would reboot the host.
pub fn decide_end(finish: Finish, pid1: bool) -> End {
    match (finish, pid1) {
        (Finish::Reboot, true) => End::Reboot,
        _ => End::Exit,
    }
}

fn elapsed(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Read an /etc/haimg file as text.
fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Identity, plan, network, secrets, rendered configs, services. Errors are
/// the one line the console and the status file show.
pub fn prepare(boot: &Boot, st: &mut Status, start: Instant) -> Result<Prepared, String> {
    let image: Option<ImageInfo> = match read_text(&boot.path(haimg_model::image::IMAGE_FILE)) {
        Ok(t) => match serde_json::from_str(&t) {
            Ok(i) => Some(i),
            Err(e) => {
                st.warnings
                    .push(format!("{}: {e}", haimg_model::image::IMAGE_FILE));
                None
            }
        },
        Err(e) => {
            st.warnings.push(e);
            None
        }
    };
    st.image = image.clone();
    let plan_text =
        read_text(&boot.path(haimg_model::image::PLAN_FILE)).map_err(|e| format!("plan: {e}"))?;
    let checked = haimg_model::spec::parse_plan_json(&plan_text).map_err(|e| {
        let first: Vec<String> = e
            .errors()
            .take(3)
            .map(|p| p.to_string().replace('\n', "; "))
            .collect();
        format!(
            "plan: {}: {}",
            haimg_model::image::PLAN_FILE,
            first.join(" | ")
        )
    })?;
    let cluster = checked.cluster;

    let eth0 = if boot.system {
        net::addrs_of("eth0").unwrap_or_else(|e| {
            st.warnings.push(format!("eth0: {e}"));
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let runtime = Runtime {
        env: boot
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        uts: if boot.system {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        } else {
            boot.env.get("HAIMG_TEST_UTS").cloned()
        },
        eth0,
    };
    let ev = Evidence::read(&boot.root, runtime);
    let id = identity::resolve(&cluster, &ev).map_err(|e| format!("identity: {e}"))?;
    let evidence: Vec<String> = id.evidence.iter().map(|c| c.to_string()).collect();
    info!(
        "identity: {} {} (vmid {}, {}) from {} (+{} ms)",
        id.role,
        id.member.slot,
        id.member.vmid,
        id.address,
        evidence.join(", "),
        elapsed(start)
    );
    for w in &id.warnings {
        warn!("identity: {w}");
    }
    st.warnings.extend(id.warnings.iter().cloned());
    st.identity = Some(IdentitySummary {
        role: id.role.to_string(),
        slot: id.member.slot.clone(),
        vmid: id.member.vmid,
        hostname: id.member.hostname.clone(),
        address: id.address.to_string(),
        evidence,
    });
    st.boot.identity_ms = Some(elapsed(start));
    if let Some(img) = &image {
        if img.role != id.role.as_str() {
            st.warnings.push(format!(
                "image.json says role {} but /etc/haimg/role says {}",
                img.role, id.role
            ));
        }
    }

    if boot.system {
        let report =
            net::ensure("eth0", id.address, id.gateway).map_err(|e| format!("network: {e}"))?;
        info!(
            "network: {} (+{} ms)",
            report.summary("eth0"),
            elapsed(start)
        );
    }
    st.boot.network_ms = Some(elapsed(start));

    let secrets = secrets(&boot.env, id.role)?;
    let users =
        Users::from_passwd(&std::fs::read_to_string(boot.path("/etc/passwd")).unwrap_or_default());
    // The hash is shown in every rendered config and the app's health answer;
    // only hex is taken from the file.
    let image_hash = match image.as_ref().map(ImageInfo::short_hash) {
        Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()) => h.to_string(),
        Some(_) => {
            st.warnings.push(format!(
                "{}: input_hash is not hex; the image is shown as unknown",
                haimg_model::image::IMAGE_FILE
            ));
            "unknown".to_string()
        }
        None => "unknown".to_string(),
    };
    let extras = Extras {
        image_hash,
        memory_mb: services::memory_limit_mb(&boot.path("/sys/fs/cgroup")),
        mongo_keyfile: secrets.mongo_key.is_some(),
        db_credentials: secrets.db.clone(),
        vrrp_pass: secrets.vrrp_pass.clone(),
        next_actions_key: secrets.next_actions_key.clone(),
    };
    prepare_role(boot, &id, &secrets, &users)?;
    let mut n = 0;
    for t in render::templates_for(id.role) {
        let baked = boot.path(haimg_model::image::TEMPLATES_DIR).join(t.name);
        let source = match std::fs::read_to_string(&baked) {
            Ok(s) => s,
            Err(e) => {
                st.warnings.push(format!(
                    "{}: {e}; using the built-in template",
                    baked.display()
                ));
                warn!("{}: {e}; using the built-in template", baked.display());
                t.source.to_string()
            }
        };
        let text = render::render(t.name, &source, &cluster, &id.member, &extras)
            .map_err(|e| format!("render: {e}"))?;
        // The ecosystem file carries the database password and the app's key
        // when they are delivered: then only the web app's user reads it.
        let target = boot.path(t.target);
        let app_owned = match t.role {
            Role::Webapp => true,
            Role::Lb | Role::Mongo => false,
        };
        let mode = if app_owned && (secrets.db.is_some() || secrets.next_actions_key.is_some()) {
            0o600
        } else {
            0o644
        };
        write_file(&target, text.as_bytes(), mode).map_err(|e| format!("render: {e}"))?;
        if app_owned {
            chown(&target, Some(users.webapp())).map_err(|e| format!("render: {e}"))?;
        }
        n += 1;
    }
    info!("rendered {n} config(s) (+{} ms)", elapsed(start));
    st.boot.render_ms = Some(elapsed(start));
    if id.role == Role::Lb && boot.system {
        // Without it the VIP still works, as keepalived alone moves it; a
        // planned move then cuts what is in flight, as it would without haimg.
        match crate::vip::setup(cluster.network.vip) {
            Ok(()) => info!(
                "lossless VIP moves: {} on lo, stray rules loaded (+{} ms)",
                cluster.network.vip,
                elapsed(start)
            ),
            Err(e) => {
                let w = format!("lossless VIP moves are off: {e}");
                warn!("{w}");
                st.warnings.push(w);
            }
        }
    }

    let mut services = services::for_role(&cluster, &id, &users);
    if !boot.system {
        for s in &mut services {
            s.program = boot.path(&s.program.to_string_lossy());
            for r in &mut s.requires {
                *r = boot.path(&r.to_string_lossy());
            }
        }
    }
    Ok(Prepared {
        cluster,
        identity: id,
        services,
        users: secrets.mongo_users.clone(),
    })
}

/// Secrets from the environment, checked. `Debug` shows which are present, never a value.
#[derive(Clone, Default)]
pub struct Secrets {
    pub mongo_key: Option<String>,
    /// mongo: the users the init creates on the primary.
    pub mongo_users: Option<crate::join::users::Passwords>,
    pub db: Option<(String, String)>,
    pub vrrp_pass: Option<String>,
    pub next_actions_key: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("mongo_key", &self.mongo_key.is_some())
            .field("mongo_users", &self.mongo_users.is_some())
            .field("db", &self.db.as_ref().map(|(u, _)| u))
            .field("vrrp_pass", &self.vrrp_pass.is_some())
            .field("next_actions_key", &self.next_actions_key.is_some())
            .finish()
    }
}

pub fn secrets(env: &BTreeMap<String, String>, role: Role) -> Result<Secrets, String> {
    let mut s = Secrets::default();
    match role {
        Role::Mongo => {
            if let Some(k) = env.get(ENV_MONGO_KEY) {
                let compact: String = k.chars().filter(|c| !c.is_whitespace()).collect();
                let ok = (6..=1024).contains(&compact.len())
                    && compact
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
                if !ok {
                    return Err(format!(
                        "{ENV_MONGO_KEY}: a keyfile is 6 to 1024 base64 characters (got {} characters)",
                        compact.len()
                    ));
                }
                s.mongo_key = Some(compact);
            }
            let p = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
            match (p(ENV_MONGO_ADMIN), p(ENV_MONGO_APP), p(ENV_MONGO_MONITOR)) {
                (Some(admin), Some(app), Some(monitor)) => {
                    if s.mongo_key.is_none() {
                        return Err(format!(
                            "the MongoDB users' passwords came without {ENV_MONGO_KEY}: without a keyfile mongod runs without authorization"
                        ));
                    }
                    s.mongo_users = Some(crate::join::users::Passwords {
                        admin,
                        app,
                        monitor,
                    });
                }
                (None, None, None) => {}
                _ => {
                    return Err(format!(
                        "{ENV_MONGO_ADMIN}, {ENV_MONGO_APP} and {ENV_MONGO_MONITOR} must be set together"
                    ))
                }
            }
        }
        Role::Webapp => {
            match (env.get(ENV_DB_USER), env.get(ENV_DB_PASSWORD)) {
                (Some(u), Some(p)) if !u.is_empty() => s.db = Some((u.clone(), p.clone())),
                (None, None) => {}
                _ => {
                    return Err(format!(
                        "{ENV_DB_USER} and {ENV_DB_PASSWORD} must be set together"
                    ))
                }
            }
            s.next_actions_key = env.get(ENV_NEXT_ACTIONS_KEY).cloned();
        }
        Role::Lb => s.vrrp_pass = env.get(ENV_VRRP_PASS).cloned(),
    }
    Ok(s)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("failed to write {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(path, bytes).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(fail)
}

/// Role-specific files and directories the services expect.
fn prepare_role(
    boot: &Boot,
    id: &Identity,
    secrets: &Secrets,
    users: &Users,
) -> Result<(), String> {
    match id.role {
        Role::Lb => {
            // 0755: nginx's workers read keepalived's state here; the
            // config (it holds the VRRP password) is 0600 inside.
            let dir = boot.path("/run/haimg/keepalived");
            std::fs::create_dir_all(&dir)
                .and_then(|()| {
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                })
                .map_err(|e| format!("failed to create /run/haimg/keepalived: {e}"))?;
            if boot.system {
                // nginx listens on all addresses, so this is belt and braces for a template
                // that binds the VIP itself.
                if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_nonlocal_bind", "1\n") {
                    warn!("failed to set net.ipv4.ip_nonlocal_bind: {e}");
                }
            }
        }
        Role::Mongo => {
            let uid_gid = users.mongodb;
            if uid_gid.is_none() {
                warn!("no mongodb user in /etc/passwd; mongod runs as root");
            }
            if let Some(key) = &secrets.mongo_key {
                let p = boot.path(render::MONGO_KEYFILE);
                write_file(&p, key.as_bytes(), 0o400)?;
                chown(&p, uid_gid)?;
            }
            let db = boot.path(render::MONGO_DB_PATH);
            std::fs::create_dir_all(&db)
                .map_err(|e| format!("failed to create {}: {e}", db.display()))?;
            chown(&db, uid_gid)?;
        }
        Role::Webapp => {
            // PM2 keeps its sockets, pids and dumps here; only the app's user may.
            let home = boot.path(render::PM2_HOME);
            std::fs::create_dir_all(&home)
                .map_err(|e| format!("failed to create {}: {e}", render::PM2_HOME))?;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("failed to chmod {}: {e}", render::PM2_HOME))?;
            chown(&home, Some(users.webapp()))?;
        }
    }
    Ok(())
}

fn chown(path: &Path, uid_gid: Option<(u32, u32)>) -> Result<(), String> {
    let Some((u, g)) = uid_gid else { return Ok(()) };
    std::os::unix::fs::chown(path, Some(u), Some(g))
        .map_err(|e| format!("failed to chown {}: {e}", path.display()))
}

/// Mount what PID 1 needs, unless it is there already.
fn mount_basics() {
    use nix::mount::{mount, MsFlags};
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let is_mounted = |p: &str| mounted.lines().any(|l| l.split(' ').nth(4) == Some(p));
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let table: [(&str, &str, MsFlags, &str); 3] = [
        ("/proc", "proc", nosuid | MsFlags::MS_NOEXEC, ""),
        ("/run", "tmpfs", nosuid, "mode=0755"),
        (
            "/dev/shm",
            "tmpfs",
            nosuid | MsFlags::MS_NOEXEC,
            "mode=1777",
        ),
    ];
    for (target, fstype, flags, data) in table {
        if is_mounted(target) || (target == "/proc" && Path::new("/proc/self").exists()) {
            continue;
        }
        let _ = std::fs::create_dir_all(target);
        let data = (!data.is_empty()).then_some(data);
        if let Err(e) = mount(Some(fstype), target, Some(fstype), flags, data) {
            warn!("failed to mount {fstype} on {target}: {e}");
        }
    }
}

/// PID 1.
pub fn main() -> ExitCode {
    let start = Instant::now();
    let pid1 = nix::unistd::getpid().as_raw() == 1;
    if !pid1 {
        error!("not PID 1; refusing to boot this system (see `haimg-init --help`)");
        return ExitCode::from(2);
    }
    mount_basics();
    let env = haimg_env(std::env::vars_os());
    run_boot(
        Boot {
            root: PathBuf::from("/"),
            system: true,
            env,
        },
        PathBuf::from(haimg_model::image::STATUS_FILE),
        start,
        true,
    )
}

/// PID 1's `HAIMG_*` variables. The environment is whatever the container
/// was started with: a name or value that is not UTF-8 is skipped with a
/// console line (`std::env::vars` would panic, and a panic ends PID 1).
pub fn haimg_env(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (k, v) in vars {
        if !k.as_encoded_bytes().starts_with(b"HAIMG_") {
            continue;
        }
        match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => {
                env.insert(k, v);
            }
            (Ok(k), Err(_)) => warn!("environment variable {k} is not UTF-8; ignored"),
            (Err(k), _) => warn!(
                "environment variable {} is not UTF-8; ignored",
                k.to_string_lossy()
            ),
        }
    }
    env
}

/// `boot --root DIR`: the same steps against a directory, not as PID 1.
pub fn boot_in_dir(root: &Path, status: &Path) -> ExitCode {
    let env = haimg_env(std::env::vars_os());
    let _ = process::become_subreaper();
    run_boot(
        Boot {
            root: root.to_path_buf(),
            system: false,
            env,
        },
        status.to_path_buf(),
        Instant::now(),
        false,
    )
}

fn run_boot(boot: Boot, status_path: PathBuf, start: Instant, pid1: bool) -> ExitCode {
    info!("haimg-init {} starting", env!("CARGO_PKG_VERSION"));
    // Block signals before any thread exists, so every thread inherits the mask.
    let sfd = match process::block_signals() {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return idle_forever();
        }
    };
    let mut sf = StatusFile::new(status_path, Status::default());
    let mut attempt: u32 = 0;
    let mut last_error: Option<String> = None;
    let services = loop {
        attempt += 1;
        // Each attempt starts from a clean status: warnings of a failed one go away.
        sf.status = Status {
            boot_attempts: attempt,
            ..Status::default()
        };
        match prepare(&boot, &mut sf.status, start) {
            Ok(p) => {
                if attempt > 1 {
                    info!("boot attempt {attempt} succeeded");
                }
                // Tests run the boot against a directory: no traffic to the plan's addresses.
                if p.identity.role.elects_primary() && boot.system {
                    sf.join = Some(crate::join::spawn(&p.cluster, &p.identity, p.users.clone()));
                }
                break p.services;
            }
            Err(msg) => {
                let delay = retry_delay_ms(attempt);
                if last_error.as_deref() == Some(msg.as_str()) {
                    info!(
                        "boot attempt {attempt} failed the same way; next in {} s",
                        delay / 1000
                    );
                } else {
                    error!("{msg}");
                    error!(
                        "boot attempt {attempt} failed; no services started; retrying in {} s (the init stays up and answers the halt signal)",
                        delay / 1000
                    );
                }
                sf.status.error = Some(msg.clone());
                sf.status.phase = Some(crate::supervise::Phase::Idle);
                sf.status.next_attempt_ms = Some(elapsed(start) + delay);
                sf.publish();
                last_error = Some(msg);
                if let Some(finish) = process::idle(&sfd, delay) {
                    sf.status.phase = Some(crate::supervise::Phase::Done);
                    sf.status.next_attempt_ms = None;
                    sf.status.finish = Some(finish);
                    sf.publish();
                    return end(finish, pid1);
                }
            }
        }
    };
    sf.publish();
    let mut sup = Supervisor::new(services, Backoff::default());
    let finish = process::run(&mut sup, &sfd, start, &mut sf);
    sf.status.finish = Some(finish);
    sf.publish();
    end(finish, pid1)
}

fn end(finish: Finish, pid1: bool) -> ExitCode {
    match decide_end(finish, pid1) {
        End::Reboot => {
            info!("rebooting");
            nix::unistd::sync();
            // reboot(2) returns only on failure; in a container the kernel ends PID 1 instead.
            let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
            error!("reboot(2) failed: {e}; exiting instead");
            ExitCode::SUCCESS
        }
        End::Exit => {
            if finish == Finish::Reboot {
                info!("reboot requested, but not PID 1: exiting instead of reboot(2)");
            } else {
                info!("halting");
            }
            if pid1 {
                nix::unistd::sync();
            }
            ExitCode::SUCCESS
        }
    }
}

/// Milliseconds before boot attempt `attempt + 1`: 1 s, doubling, at most a minute.
pub fn retry_delay_ms(attempt: u32) -> u64 {
    1000u64
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(16))
        .min(60_000)
}

/// Last resort when even the signalfd cannot be set up: never exit, never spin.
fn idle_forever() -> ExitCode {
    loop {
        nix::unistd::pause();
        while let Ok(
            nix::sys::wait::WaitStatus::Exited(..) | nix::sys::wait::WaitStatus::Signaled(..),
        ) = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(-1),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        ) {}
    }
}

/// `check-tcp ADDR`: keepalived's health check for nginx.
pub fn check_tcp(addr: &str) -> ExitCode {
    match addr.parse::<SocketAddr>() {
        Ok(a) if process::probe(a) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(_) => {
            error!("check-tcp: {addr:?} is not ADDRESS:PORT");
            ExitCode::from(2)
        }
    }
}

/// `vrrp-state STATE`: keepalived entered STATE (its notify scripts call
/// this); recorded whole (temp file + rename) for nginx to serve.
pub fn vrrp_state(state: &str) -> ExitCode {
    let path = Path::new(haimg_model::image::VRRP_STATE_FILE);
    let previous = std::fs::read_to_string(path).ok();
    let moved = crate::vip::on_state(previous.as_deref().map(str::trim), state);
    if let Err(e) = &moved {
        error!("vrrp-state {state}: {e}");
    }
    // keepalived runs its scripts with umask 077; nginx's workers (www-data)
    // must read the file.
    let written = crate::status::write_atomic(path, state.as_bytes())
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)));
    match written {
        Ok(()) if moved.is_ok() => ExitCode::SUCCESS,
        Ok(()) => ExitCode::from(1),
        Err(e) => {
            error!("vrrp-state: cannot write {}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuperviseFile {
    services: Vec<ServiceSpec>,
    #[serde(default)]
    backoff: Option<Backoff>,
}

/// `supervise FILE`: run services from a JSON file (tests, debugging).
pub fn supervise(file: &Path, status: &Path) -> ExitCode {
    let start = Instant::now();
    let spec: SuperviseFile = match read_text(file)
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{}: {e}", file.display())))
    {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    let sfd = match process::block_signals() {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    let pid1 = nix::unistd::getpid().as_raw() == 1;
    if !pid1 {
        if let Err(e) = process::become_subreaper() {
            warn!("failed to become a subreaper: {e}");
        }
    }
    let mut sf = StatusFile::new(status.to_path_buf(), Status::default());
    let mut sup = Supervisor::new(spec.services, spec.backoff.unwrap_or_default());
    let finish = process::run(&mut sup, &sfd, start, &mut sf);
    sf.status.finish = Some(finish);
    sf.publish();
    end(finish, pid1)
}

/// `render --root DIR --slot SLOT [--out DIR]`: check a rootfs's templates against its plan.
pub fn render_cmd(root: &Path, slot: &str, out: Option<&Path>) -> ExitCode {
    let run = || -> Result<(), String> {
        let plan = read_text(&root.join(haimg_model::image::PLAN_FILE.trim_start_matches('/')))?;
        let cluster = haimg_model::spec::parse_plan_json(&plan)
            .map_err(|e| e.to_string())?
            .cluster;
        let member = cluster
            .member_by_slot(slot)
            .ok_or_else(|| format!("no member {slot:?} in the plan"))?
            .clone();
        // Secrets are placeholders here: a render check never sees a real one.
        let extras = Extras::placeholders("render-check");
        for t in render::templates_for(member.role) {
            let p = root
                .join(haimg_model::image::TEMPLATES_DIR.trim_start_matches('/'))
                .join(t.name);
            let src = read_text(&p)?;
            let text = render::render(t.name, &src, &cluster, &member, &extras)
                .map_err(|e| e.to_string())?;
            match out {
                Some(dir) => write_file(&dir.join(t.name), text.as_bytes(), 0o644)?,
                None => {
                    use std::io::Write;
                    // A closed pipe ends the output, not the process with a panic.
                    let _ = write!(std::io::stdout(), "# ---- {} ----\n{text}", t.name);
                }
            }
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("render: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pid1_reboots() {
        assert_eq!(decide_end(Finish::Reboot, true), End::Reboot);
        assert_eq!(decide_end(Finish::Reboot, false), End::Exit);
        assert_eq!(decide_end(Finish::Halt, true), End::Exit);
        assert_eq!(decide_end(Finish::Halt, false), End::Exit);
    }

    #[test]
    fn boot_retries_back_off_to_a_minute() {
        let delays: Vec<u64> = (1..=9).map(retry_delay_ms).collect();
        assert_eq!(
            delays,
            [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        );
        assert_eq!(retry_delay_ms(u32::MAX), 60_000);
        assert_eq!(retry_delay_ms(0), 1000);
    }

    #[test]
    fn non_utf8_environment_is_skipped_not_fatal() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let raw = |b: &[u8]| OsString::from_vec(b.to_vec());
        let env = haimg_env([
            (raw(b"HAIMG_SLOT"), raw(b"nginx1")),
            (raw(b"HAIMG_IP"), raw(b"\xff\xfe")),
            (raw(b"HAIMG_\xff"), raw(b"x")),
            (raw(b"PATH\xff"), raw(b"\xff")),
            (raw(b"OTHER"), raw(b"y")),
        ]);
        assert_eq!(
            env.into_iter().collect::<Vec<_>>(),
            [("HAIMG_SLOT".to_string(), "nginx1".to_string())]
        );
    }

    #[test]
    fn secrets_are_checked() {
        let env = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let s = secrets(&env(&[(ENV_MONGO_KEY, "abc def\nghi=")]), Role::Mongo).unwrap();
        assert_eq!(s.mongo_key.as_deref(), Some("abcdefghi="));
        assert_eq!(
            secrets(&env(&[(ENV_MONGO_KEY, "a!")]), Role::Mongo).unwrap_err(),
            "HAIMG_MONGO_KEY: a keyfile is 6 to 1024 base64 characters (got 2 characters)"
        );
        assert_eq!(
            secrets(&env(&[(ENV_DB_USER, "app")]), Role::Webapp).unwrap_err(),
            "HAIMG_DB_USER and HAIMG_DB_PASSWORD must be set together"
        );
        let all = [
            (ENV_MONGO_KEY, "abcdefgh"),
            (ENV_MONGO_ADMIN, "a"),
            (ENV_MONGO_APP, "b"),
            (ENV_MONGO_MONITOR, "c"),
        ];
        let s = secrets(&env(&all), Role::Mongo).unwrap();
        assert!(s.mongo_users.is_some());
        assert!(!format!("{s:?}").contains("abcdefgh"));
        assert_eq!(
            secrets(&env(&all[1..]), Role::Mongo).unwrap_err(),
            "the MongoDB users' passwords came without HAIMG_MONGO_KEY: without a keyfile mongod runs without authorization"
        );
        assert_eq!(
            secrets(&env(&all[..2]), Role::Mongo).unwrap_err(),
            "HAIMG_MONGO_ADMIN_PASSWORD, HAIMG_MONGO_APP_PASSWORD and HAIMG_MONGO_MONITOR_PASSWORD must be set together"
        );
        let w = secrets(
            &env(&[
                (ENV_DB_USER, "app"),
                (ENV_DB_PASSWORD, "p"),
                (ENV_NEXT_ACTIONS_KEY, "k"),
            ]),
            Role::Webapp,
        )
        .unwrap();
        assert_eq!(w.next_actions_key.as_deref(), Some("k"));
        // Secrets for another role are not picked up.
        assert!(secrets(&env(&[(ENV_MONGO_KEY, "a!")]), Role::Lb)
            .unwrap()
            .mongo_key
            .is_none());
    }
}
