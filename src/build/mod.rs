//! `haimg build`: recipe → root filesystem → role steps → normalize →
//! deterministic `.tar.zst` + `.sha256` + text manifest + SPDX SBOM.
//!
//! Per role: the recipe (`images/<role>.yaml`) says what goes in, the lock
//! (`images/<role>.lock`) pins the bytes. Every input — recipe, lock, baked
//! plan, init binary, templates, the app and PM2 trees, host tool versions —
//! is hashed into the role's **input hash**; a template whose input hash is in
//! the cache (`.haimg/cache/images/<role>/<hash>/`) is not built again.
//! Downloads go through the content-addressed cache (`.haimg/cache/blobs`),
//! so a build whose inputs are cached needs no network.
//!
//! Invariants: a build never uses an unlocked package (fail closed, naming
//! the package and `haimg lock --update`); external programs run only through
//! the [`crate::exec::CommandRunner`] seam; the process umask is 022 while
//! building; nothing of the build host ends up in an image.

// Errors carry the failed command (argv, stderr tail) and happen once per failed
// build, so their size does not matter; boxing them would only obscure the variants.
#![allow(clippy::result_large_err)]

pub mod apt;
pub mod fetch;
pub mod finish;
pub mod hash;
pub mod init;
pub mod lock;
pub mod lockup;
pub mod recipe;
pub mod report;
pub mod role;
pub mod rootfs;
pub mod sbom;
pub mod tarball;
pub mod webapp;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use haimg_model::Role;
use serde::Serialize;

pub use role::BuildError;

use crate::exec::CommandRunner;
use fetch::Fetcher;
use report::StepTime;

/// Bump when the build logic changes what an image contains: it is part of every input hash.
pub const BUILD_FORMAT: u32 = 3;

/// The host CA bundle npm needs in the build root (never in an image).
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The project: where `images/`, `roles/` and the workspace live.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
}

impl Project {
    /// `$HAIMG_CACHE_DIR`, else `<root>/.haimg/cache`.
    pub fn cache_dir(&self) -> PathBuf {
        std::env::var_os("HAIMG_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.root.join(".haimg/cache"))
    }
}

/// What `haimg build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub roles: Vec<Role>,
    pub out_dir: PathBuf,
    /// A prebuilt haimg-init; else it is built from the workspace.
    pub init: Option<PathBuf>,
    pub verify: bool,
    pub allow_missing: Vec<Role>,
    pub quiet: bool,
    /// Ignore cached templates (downloads stay cached).
    pub no_cache: bool,
    /// Never download: build only from the cache.
    pub offline: bool,
}

/// Everything outside the build logic, chosen where the program starts.
pub struct Env {
    pub runner: Arc<dyn CommandRunner>,
    pub fetcher: Fetcher,
    pub project: Project,
    /// The cluster spec's `cluster.version`.
    pub version: String,
    /// `/etc/haimg/plan.json` bytes.
    pub plan_json: Vec<u8>,
    pub ca_bundle: PathBuf,
    init_crates: OnceLock<Vec<sbom::Crate>>,
}

impl Env {
    pub fn new(
        runner: Arc<dyn CommandRunner>,
        fetcher: Fetcher,
        project: Project,
        version: String,
        plan_json: Vec<u8>,
    ) -> Env {
        Env {
            runner,
            fetcher,
            project,
            version,
            plan_json,
            ca_bundle: PathBuf::from(HOST_CA_BUNDLE),
            init_crates: OnceLock::new(),
        }
    }

    /// `haimg-<role>_<version>_amd64`.
    pub fn base_name(&self, role: Role) -> String {
        haimg_model::TemplateName::new(role, &self.version).stem()
    }

    /// The crates in haimg-init, from `cargo tree` (empty when the project has no workspace).
    fn init_crates(&self) -> Vec<sbom::Crate> {
        self.init_crates
            .get_or_init(|| {
                if !self.project.root.join("Cargo.toml").is_file() {
                    return Vec::new();
                }
                let cmd = init::cargo(&self.project.root, std::time::Duration::from_secs(600))
                    .args(["tree", "-p", "haimg-init", "-e", "normal,no-proc-macro"])
                    .args([
                        "--target",
                        INIT_TARGET,
                        "--prefix",
                        "none",
                        "--format",
                        "{p}|{l}",
                    ])
                    .args(["--locked", "--offline"]);
                match self.runner.run(&cmd) {
                    Ok(out) => sbom::init_crates(&out.stdout_str()),
                    Err(e) => {
                        tracing::warn!("SBOM: cargo tree failed: {e}");
                        Vec::new()
                    }
                }
            })
            .clone()
    }
}

pub use init::INIT_TARGET;

/// How one role ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Built,
    /// The inputs were unchanged: the cached template was reused.
    Cached,
    /// Not built because an input cannot be obtained here (tolerated with `--allow-missing`).
    Missing,
    Failed,
    /// `--verify`: two builds differ.
    Mismatch,
}

/// One role in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct RoleReport {
    pub role: Role,
    pub status: Status,
    pub template: Option<PathBuf>,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub tar_size: Option<u64>,
    pub entries: Option<usize>,
    pub input_hash: Option<String>,
    pub seconds: f64,
    pub steps: Vec<StepTime>,
    pub error: Option<String>,
    /// `--verify`: the first differing manifest lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

/// The `--json` summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub ok: bool,
    pub out_dir: PathBuf,
    /// The haimg-init baked into the images.
    pub init: init::InitArtifact,
    pub roles: Vec<RoleReport>,
}

/// Build the requested roles; never stops at the first failing role.
pub fn build(env: &Env, opts: &BuildOptions) -> Result<Summary, BuildError> {
    // SAFETY: umask only sets the process file-creation mask; children inherit 022.
    unsafe { libc::umask(0o022) };
    std::fs::create_dir_all(&opts.out_dir).map_err(|error| BuildError::Io {
        what: "create",
        path: opts.out_dir.clone(),
        error,
    })?;
    let init = match &opts.init {
        Some(p) => {
            let read = |error| BuildError::Io {
                what: "read",
                path: p.clone(),
                error,
            };
            init::InitArtifact {
                path: p.clone(),
                size: std::fs::metadata(p).map_err(read)?.len(),
                sha256: hash::sha256_file(p).map_err(read)?,
            }
        }
        None => {
            if !opts.quiet {
                eprintln!("[init] cargo build -p haimg-init --profile init …");
            }
            let t = Instant::now();
            let a =
                init::build(env.runner.as_ref(), &env.project.root).map_err(BuildError::Init)?;
            if !opts.quiet {
                eprintln!(
                    "[init] {} ({} bytes) in {:.1} s",
                    a.path.display(),
                    a.size,
                    t.elapsed().as_secs_f64()
                );
            }
            a
        }
    };
    let mut reports = Vec::new();
    for &r in &opts.roles {
        reports.push(role::build_one(env, opts, r, &init.path));
    }
    let ok = reports.iter().all(|r| match r.status {
        Status::Built | Status::Cached => true,
        Status::Missing => opts.allow_missing.contains(&r.role),
        Status::Failed | Status::Mismatch => false,
    });
    Ok(Summary {
        ok,
        out_dir: opts.out_dir.clone(),
        init,
        roles: reports,
    })
}

/// Whether this process can build (root for mmdebstrap --mode=root, chroot and mounts).
pub fn require_root() -> Result<(), BuildError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BuildError::NotRoot);
    }
    Ok(())
}

/// Lines of `a` and `b` that differ, at most `max`, as `-old`/`+new` pairs.
pub fn first_differences(a: &str, b: &str, max: usize) -> Vec<String> {
    let al: Vec<&str> = a.lines().collect();
    let bl: Vec<&str> = b.lines().collect();
    let bs: std::collections::BTreeSet<&str> = bl.iter().copied().collect();
    let as_: std::collections::BTreeSet<&str> = al.iter().copied().collect();
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while (i < al.len() || j < bl.len()) && out.len() < max {
        match (al.get(i), bl.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), _) if !bs.contains(x) => {
                out.push(format!("-{x}"));
                i += 1;
            }
            (_, Some(y)) if !as_.contains(y) => {
                out.push(format!("+{y}"));
                j += 1;
            }
            (Some(x), Some(y)) => {
                out.push(format!("-{x}"));
                out.push(format!("+{y}"));
                i += 1;
                j += 1;
            }
            (Some(x), None) => {
                out.push(format!("-{x}"));
                i += 1;
            }
            (None, Some(y)) => {
                out.push(format!("+{y}"));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_differences_shows_changed_lines() {
        let a = "./a d\n./b f 1\n./c f 2\n";
        let b = "./a d\n./b f 9\n./c f 2\n./d f 3\n";
        assert_eq!(
            first_differences(a, b, 10),
            ["-./b f 1", "+./b f 9", "+./d f 3"]
        );
        assert!(first_differences(a, a, 10).is_empty());
    }
}
