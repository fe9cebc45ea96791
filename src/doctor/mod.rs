//! `haimg doctor`: every host prerequisite of `build`, local `deploy` and
//! `test`, checked before they are needed, each with the exact fix.
//!
//! The checks: root; the programs and package files of [`needs`]; for a
//! local deploy the files the LXC configs include (followed through their
//! own `lxc.include` lines), user namespaces, an idmapped mount on the state
//! directory's file system, the cgroup controllers the configs limit,
//! nftables (the network policy's own ruleset, in check mode), network
//! namespaces with a bridge and veths, the subordinate id ranges; free space
//! for a build and for the containers; for `make test` the suite's tools and
//! the rustup components of `make lint`.
//!
//! Invariants: a check never changes the host (probes run in throw-away
//! namespaces, `nft --check`, a detached mount); every `missing` line carries
//! a fix a person can type; the same checks serve `haimg doctor` and the
//! preflight of `build`, `deploy` and `test` ([`preflight`]). All I/O goes
//! through [`host::Host`], so the checks run on fixture hosts in tests.

pub mod host;
pub mod needs;
pub mod parse;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use self::host::Host;
pub use self::needs::Need;
use self::needs::{FILES, PACKAGES, PREREQUISITE, RUSTUP, RUST_COMPONENTS, TOOLS};
use self::parse::gib;
use crate::backend::local::lxcconf;
use crate::exec::Cmd;

/// Free space a build needs in its temporary directory: the root filesystem,
/// the webapp's build root with node_modules, and the packed template.
pub const BUILD_TMP_BYTES: u64 = 4 << 30;
/// Free space for the download and template cache and `out/`.
pub const BUILD_CACHE_BYTES: u64 = 2 << 30;
/// Free space for the local containers (six unpacked root filesystems, a
/// rollout's standbys, the stored templates).
pub const DEPLOY_BYTES: u64 = 4 << 30;

/// The id range of unprivileged local containers (Proxmox's).
const SUBID_BASE: u64 = 100_000;
const SUBID_COUNT: u64 = 65_536;

/// Where the checks look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub needs: Vec<Need>,
    /// Parent of the local clusters' state directories.
    pub state_root: PathBuf,
    /// `HAIMG_LOCAL_PRIVILEGED=1`: no id mapping needed.
    pub privileged: bool,
    /// Where a build makes its root filesystems (`$TMPDIR`).
    pub tmp_dir: PathBuf,
    /// The download and template cache.
    pub cache_dir: PathBuf,
}

impl Options {
    /// The paths this process would use.
    pub fn detect(needs: &[Need], cache_dir: PathBuf) -> Options {
        use crate::backend::local::{LocalOptions, PRIVILEGED_ENV};
        Options {
            needs: needs.to_vec(),
            state_root: LocalOptions::state_root(),
            privileged: std::env::var(PRIVILEGED_ENV).is_ok_and(|v| v == "1"),
            tmp_dir: std::env::temp_dir(),
            cache_dir,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Missing,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `command mmdebstrap`, `kernel idmapped mounts`, `disk build`, …
    pub name: String,
    pub need: Need,
    pub status: Status,
    /// What was found (ok) or what is wrong (missing).
    pub detail: String,
    /// What to do about it; set when missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The Debian package whose absence this is, if it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, need: Need, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            need,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
            package: None,
        }
    }

    fn missing(
        name: impl Into<String>,
        need: Need,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            need,
            status: Status::Missing,
            detail: detail.into(),
            fix: Some(fix.into()),
            package: None,
        }
    }

    /// Missing because a Debian package is not installed.
    fn no_package(
        name: impl Into<String>,
        need: Need,
        detail: impl Into<String>,
        pkg: &str,
    ) -> Check {
        let mut c = Check::missing(name, need, detail, package_fix(pkg));
        if pkg != RUSTUP && pkg != PREREQUISITE {
            c.package = Some(pkg.to_string());
        }
        c
    }
}

fn package_fix(pkg: &str) -> String {
    match pkg {
        RUSTUP => "install Rust with rustup (https://rustup.rs)".into(),
        _ => format!("apt-get install --no-install-recommends {pkg}"),
    }
}

/// Everything that was checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub needs: Vec<Need>,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn missing(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Missing)
    }

    /// The missing packages, for one install line.
    pub fn missing_packages(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .missing()
            .filter_map(|c| c.package.as_deref())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// One line per check, then a total and, when packages are missing, the
    /// one command that installs them all.
    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut s = String::new();
        for c in &self.checks {
            s.push_str(&line(c, width));
            s.push('\n');
        }
        let missing = self.missing().count();
        s.push_str(&format!(
            "{} checks for {}: {} ok, {missing} missing\n",
            self.checks.len(),
            self.needs
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.checks.len() - missing
        ));
        let pkgs = self.missing_packages();
        if !pkgs.is_empty() {
            s.push_str(&format!(
                "install the missing packages at once: apt-get install --no-install-recommends {} (or `make setup`)\n",
                pkgs.join(" ")
            ));
        }
        s
    }
}

fn line(c: &Check, width: usize) -> String {
    let status = match c.status {
        Status::Ok => "ok",
        Status::Missing => "MISSING",
    };
    let fix = c
        .fix
        .as_deref()
        .map(|f| format!("; fix: {f}"))
        .unwrap_or_default();
    format!("{status:<8} {:<width$}  {}{fix}", c.name, c.detail)
}

/// Run the checks of `opts.needs` (and what they include) on `host`.
pub fn run(host: &dyn Host, opts: &Options) -> Report {
    let needs = Need::expand(&opts.needs);
    let has = |n: Need| needs.contains(&n);
    let first = needs.first().copied().unwrap_or(Need::Build);
    let mut checks = vec![root(host, first)];
    for t in TOOLS.iter().filter(|t| has(t.need)) {
        checks.push(match host.find_program(t.program) {
            Some(p) => Check::ok(
                format!("command {}", t.program),
                t.need,
                p.display().to_string(),
            ),
            None => Check::no_package(
                format!("command {}", t.program),
                t.need,
                format!("not on PATH ({})", t.why),
                t.package,
            ),
        });
    }
    for f in FILES.iter().filter(|f| has(f.need)) {
        let name = format!("file {}", f.path.rsplit('/').next().unwrap_or(f.path));
        checks.push(if host.exists(Path::new(f.path)) {
            Check::ok(name, f.need, f.path)
        } else {
            Check::no_package(
                name,
                f.need,
                format!("{} is missing ({})", f.path, f.why),
                f.package,
            )
        });
    }
    let installed = parse::installed_packages(
        &host
            .read(Path::new("/var/lib/dpkg/status"))
            .unwrap_or_default(),
    );
    for (pkg, need, why) in PACKAGES.iter().filter(|p| has(p.1)) {
        let name = format!("package {pkg}");
        checks.push(if installed.contains(*pkg) {
            Check::ok(name, *need, "installed")
        } else {
            Check::no_package(name, *need, format!("not installed ({why})"), pkg)
        });
    }
    if has(Need::Test) {
        checks.extend(rust_components(host));
    }
    if has(Need::Build) {
        checks.push(disk(
            host,
            "disk build",
            Need::Build,
            &opts.tmp_dir,
            BUILD_TMP_BYTES,
            "TMPDIR",
        ));
        checks.push(disk(
            host,
            "disk cache",
            Need::Build,
            &opts.cache_dir,
            BUILD_CACHE_BYTES,
            "HAIMG_CACHE_DIR",
        ));
    }
    if has(Need::Deploy) {
        checks.extend(lxc_files(host, opts.privileged));
        checks.push(cgroups(host));
        checks.push(network_namespaces(host));
        checks.push(nftables(host));
        if !opts.privileged {
            checks.push(user_namespaces(host));
            checks.push(idmapped_mounts(host, &opts.state_root));
            for file in ["/etc/subuid", "/etc/subgid"] {
                checks.push(subids(host, Path::new(file)));
            }
        }
        checks.push(disk(
            host,
            "disk containers",
            Need::Deploy,
            &opts.state_root,
            DEPLOY_BYTES,
            "HAIMG_STATE_DIR",
        ));
    }
    Report {
        ok: checks.iter().all(|c| c.status == Status::Ok),
        needs,
        checks,
    }
}

fn root(host: &dyn Host, need: Need) -> Check {
    match host.euid() {
        0 => Check::ok("root", need, "running as root"),
        uid => Check::missing(
            "root",
            need,
            format!("running as uid {uid}; builds, containers and namespaces need root"),
            "run haimg as root (e.g. with sudo)",
        ),
    }
}

fn rust_components(host: &dyn Host) -> Vec<Check> {
    RUST_COMPONENTS
        .iter()
        .map(|(sub, component)| {
            let name = format!("cargo {sub}");
            let cmd = Cmd::new("cargo", Duration::from_secs(30)).args([*sub, "--version"]);
            match host.run(&cmd) {
                Ok(out) if out.success() => Check::ok(
                    name,
                    Need::Test,
                    out.stdout_str()
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_string(),
                ),
                _ => Check::missing(
                    name,
                    Need::Test,
                    format!("`cargo {sub} --version` failed (make lint runs it)"),
                    format!("rustup component add {component}"),
                ),
            }
        })
        .collect()
}

fn disk(host: &dyn Host, name: &str, need: Need, path: &Path, want: u64, var: &str) -> Check {
    match host.free_space(path) {
        Ok((dir, free)) if free >= want => Check::ok(
            name,
            need,
            format!(
                "{} free in {} (needs {})",
                gib(free),
                dir.display(),
                gib(want)
            ),
        ),
        Ok((dir, free)) => Check::missing(
            name,
            need,
            format!(
                "{} free in {}, needs {}",
                gib(free),
                dir.display(),
                gib(want)
            ),
            format!("free space there, or set {var} to a directory with more"),
        ),
        Err(e) => Check::missing(
            name,
            need,
            format!("cannot read the free space of {}: {e}", path.display()),
            format!("set {var} to an existing directory"),
        ),
    }
}

/// Every file the local LXC configs make LXC read, following `lxc.include`
/// (directories: their `*.conf` files) and `lxc.seccomp.profile`.
fn lxc_files(host: &dyn Host, privileged: bool) -> Vec<Check> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<(PathBuf, String)> = lxcconf::host_files(privileged)
        .into_iter()
        .map(|p| (p, "the containers' config".to_string()))
        .collect();
    let mut out = Vec::new();
    while let Some((path, from)) = todo.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let name = format!("lxc {}", path.display());
        // LXC skips an include directory that does not exist (`userns.conf.d/`).
        let optional_dir = path.as_os_str().as_encoded_bytes().ends_with(b"/");
        if optional_dir && !host.exists(&path) {
            out.push(Check::ok(
                name,
                Need::Deploy,
                format!("absent, an optional directory (included by {from})"),
            ));
            continue;
        }
        if host.is_dir(&path) {
            out.push(Check::ok(
                name,
                Need::Deploy,
                format!("directory (included by {from})"),
            ));
            for f in host
                .list(&path)
                .into_iter()
                .filter(|f| f.ends_with(".conf"))
            {
                todo.push((path.join(f), path.display().to_string()));
            }
            continue;
        }
        match host.read(&path) {
            Ok(text) => {
                out.push(Check::ok(name, Need::Deploy, format!("included by {from}")));
                for r in parse::lxc_references(&text) {
                    todo.push((r.path, path.display().to_string()));
                }
            }
            Err(e) => out.push(Check::no_package(
                name,
                Need::Deploy,
                format!("{e} (included by {from})"),
                lxc_package(&path),
            )),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The package of a file under `/usr/share/lxc` (liblxc-common ships the
/// shared configs; anything else there is not a file haimg's configs name).
fn lxc_package(path: &Path) -> &'static str {
    if path.starts_with(lxcconf::LXC_CONFIG_DIR) {
        "liblxc-common"
    } else {
        "lxc"
    }
}

fn cgroups(host: &dyn Host) -> Check {
    let name = "kernel cgroup controllers";
    let c = parse::cgroup_controllers(
        &host
            .read(Path::new("/proc/self/mountinfo"))
            .unwrap_or_default(),
        &host.read(Path::new("/proc/cgroups")).unwrap_or_default(),
    );
    let v2: BTreeSet<String> = c
        .v2_mount
        .as_ref()
        .and_then(|m| host.read(&m.join("cgroup.controllers")).ok())
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    // The configs write v1 keys when memory is a v1 controller, else v2 keys.
    let (layout, have, want): (&str, &BTreeSet<String>, &[&str]) = if c.v1.contains("memory") {
        ("cgroup v1", &c.v1, &["memory", "pids", "devices"])
    } else {
        ("cgroup v2", &v2, &["memory", "pids"])
    };
    let absent: Vec<&str> = want
        .iter()
        .copied()
        .filter(|w| !have.contains(*w))
        .collect();
    if absent.is_empty() {
        Check::ok(name, Need::Deploy, format!("{layout}: {}", want.join(", ")))
    } else {
        Check::missing(
            name,
            Need::Deploy,
            format!("{layout} has no {} controller", absent.join(", ")),
            format!(
                "enable the controllers (kernel command line, e.g. `cgroup_enable={}`)",
                absent.join(",")
            ),
        )
    }
}

fn user_namespaces(host: &dyn Host) -> Check {
    let name = "kernel user namespaces";
    let n = host
        .read(Path::new("/proc/sys/user/max_user_namespaces"))
        .ok()
        .and_then(|t| parse::proc_number(&t));
    match n {
        Some(n) if n > 0 => Check::ok(name, Need::Deploy, format!("user.max_user_namespaces = {n}")),
        _ => Check::missing(
            name,
            Need::Deploy,
            "user namespaces are off (unprivileged containers need them)",
            "sysctl -w user.max_user_namespaces=15000 (and keep it in /etc/sysctl.d/), or HAIMG_LOCAL_PRIVILEGED=1",
        ),
    }
}

fn idmapped_mounts(host: &dyn Host, state_root: &Path) -> Check {
    let name = "kernel idmapped mounts";
    let dir = state_root
        .ancestors()
        .find(|p| host.is_dir(p))
        .unwrap_or(Path::new("/"));
    let fs = parse::fs_type_of(
        &host
            .read(Path::new("/proc/self/mountinfo"))
            .unwrap_or_default(),
        dir,
    )
    .unwrap_or_else(|| "?".into());
    let kernel = host
        .read(Path::new("/proc/sys/kernel/osrelease"))
        .unwrap_or_default();
    match host.idmap_probe(dir) {
        Ok(()) => Check::ok(
            name,
            Need::Deploy,
            format!("{} ({fs}) takes an idmapped mount", dir.display()),
        ),
        Err(e) => {
            let old = parse::kernel_version(&kernel).is_some_and(|v| v < (5, 12));
            let why = if old {
                format!("kernel {} is older than 5.12", kernel.trim())
            } else {
                format!("{} ({fs}): {e}", dir.display())
            };
            Check::missing(
                name,
                Need::Deploy,
                why,
                "set HAIMG_STATE_DIR to a directory on ext4, xfs or btrfs, or HAIMG_LOCAL_PRIVILEGED=1 (privileged containers)",
            )
        }
    }
}

fn subids(host: &dyn Host, file: &Path) -> Check {
    let name = format!("ids {}", file.display());
    let range = format!("root:{SUBID_BASE}:{SUBID_COUNT}");
    let text = host.read(file).unwrap_or_default();
    if crate::backend::local::host::subid_covers(&text, "root", SUBID_BASE, SUBID_COUNT) {
        Check::ok(
            name,
            Need::Deploy,
            format!("root has {SUBID_BASE}..{}", SUBID_BASE + SUBID_COUNT),
        )
    } else if host.writable(file) {
        Check::ok(
            name,
            Need::Deploy,
            format!("no {range} yet; deploy appends it"),
        )
    } else {
        Check::missing(
            name,
            Need::Deploy,
            format!("no {range} and the file is not writable"),
            format!("echo {range} >> {}", file.display()),
        )
    }
}

fn nftables(host: &dyn Host) -> Check {
    let name = "kernel nftables";
    let Some(nft) = host.find_program("nft") else {
        return Check::no_package(
            name,
            Need::Deploy,
            "not checked: nft is missing",
            "nftables",
        );
    };
    let cluster = match haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC) {
        Ok(c) => c.cluster,
        Err(e) => {
            return Check::missing(
                name,
                Need::Deploy,
                format!("the embedded spec: {e}"),
                "report this as a bug",
            )
        }
    };
    let policy = haimg_model::policy::derive(&cluster);
    // The probe checks that nft takes the ruleset's syntax; any MAC will do.
    let owners: Vec<_> = cluster
        .members()
        .map(|m| m.ip)
        .chain([cluster.network.vip])
        .map(|ip| (ip, "02:00:00:00:00:01".to_string()))
        .collect();
    let rules = match crate::backend::local::nftables::ruleset(
        &policy,
        "haimg_doctor_probe",
        "hdoctor",
        &owners,
    ) {
        Ok(r) => r,
        Err(e) => {
            return Check::missing(
                name,
                Need::Deploy,
                format!("the embedded spec's policy cannot be written for nft: {e}"),
                "report this as a bug",
            )
        }
    };
    let file = match tempfile::Builder::new()
        .prefix("haimg-doctor-")
        .suffix(".nft")
        .tempfile()
    {
        Ok(f) => f,
        Err(e) => {
            return Check::missing(
                name,
                Need::Deploy,
                format!("cannot write a probe ruleset: {e}"),
                "set TMPDIR to a writable directory",
            )
        }
    };
    if let Err(e) = std::fs::write(
        file.path(),
        format!("{rules}\ntable inet haimg_doctor_probe {{}}\n"),
    ) {
        return Check::missing(
            name,
            Need::Deploy,
            format!("cannot write a probe ruleset: {e}"),
            "set TMPDIR to a writable directory",
        );
    }
    let cmd = Cmd::new(nft.display().to_string(), Duration::from_secs(15)).args([
        "--check".to_string(),
        "-f".into(),
        file.path().display().to_string(),
    ]);
    match host.run(&cmd) {
        Ok(out) if out.success() => Check::ok(name, Need::Deploy, "the bridge and inet families load the network policy (nft --check)"),
        Ok(out) => Check::missing(
            name,
            Need::Deploy,
            format!("nft --check refused the network policy: {}", crate::exec::tail(&out.stderr, 2).replace('\n', " | ")),
            "a kernel with nf_tables and its bridge and inet families (CONFIG_NF_TABLES_BRIDGE, CONFIG_NF_TABLES_INET); try `modprobe nf_tables`",
        ),
        Err(e) => Check::missing(name, Need::Deploy, format!("nft did not run: {e}"), "apt-get install --no-install-recommends nftables"),
    }
}

fn network_namespaces(host: &dyn Host) -> Check {
    let name = "kernel network namespaces";
    for (program, package) in [("unshare", "util-linux"), ("ip", "iproute2")] {
        if host.find_program(program).is_none() {
            return Check::no_package(
                name,
                Need::Deploy,
                format!("not checked: {program} is missing"),
                package,
            );
        }
    }
    // In a network namespace of its own, gone when the shell exits.
    let script = "ip link add hd-br type bridge && ip link add hd-a type veth peer name hd-b \
                  && ip link set hd-a master hd-br";
    let cmd =
        Cmd::new("unshare", Duration::from_secs(15)).args(["--net", "--", "sh", "-c", script]);
    match host.run(&cmd) {
        Ok(out) if out.success() => Check::ok(name, Need::Deploy, "a namespace with a bridge and a veth pair"),
        Ok(out) => Check::missing(
            name,
            Need::Deploy,
            format!("a throw-away namespace with a bridge and veths failed: {}", crate::exec::tail(&out.stderr, 2).replace('\n', " | ")),
            "a kernel with network namespaces, bridges and veths (CONFIG_NET_NS, CONFIG_BRIDGE, CONFIG_VETH); try `modprobe bridge veth`",
        ),
        Err(e) => Check::missing(name, Need::Deploy, format!("unshare did not run: {e}"), "apt-get install --no-install-recommends util-linux"),
    }
}

/// The host lacks something a command needs.
#[derive(Debug, thiserror::Error)]
#[error("{}", preflight_message(.command, .report))]
pub struct Unprepared {
    /// `haimg build`, `haimg deploy`, …
    pub command: String,
    pub report: Report,
}

fn preflight_message(command: &str, report: &Report) -> String {
    let missing: Vec<&Check> = report.missing().collect();
    let width = missing.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut s = format!(
        "this host lacks what `{command}` needs ({} missing):",
        missing.len()
    );
    for c in missing {
        s.push_str("\n  ");
        s.push_str(&line(c, width));
    }
    let pkgs = report.missing_packages();
    if !pkgs.is_empty() {
        s.push_str(&format!(
            "\n  install the missing packages at once: apt-get install --no-install-recommends {} (or `make setup`)",
            pkgs.join(" ")
        ));
    }
    s.push_str("\n  `haimg doctor` lists every check");
    s
}

/// The checks `command` needs (`need`), before it starts: `Err` lists what is missing.
pub fn preflight(
    host: &dyn Host,
    command: &str,
    need: Need,
    opts: &Options,
) -> Result<Report, Unprepared> {
    let opts = Options {
        needs: vec![need],
        ..opts.clone()
    };
    let report = run(host, &opts);
    if report.ok {
        Ok(report)
    } else {
        Err(Unprepared {
            command: command.to_string(),
            report,
        })
    }
}

#[cfg(test)]
mod tests;
