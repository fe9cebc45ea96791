//! `haimg lock --update`: resolve a recipe against today's sources and write
//! `images/<role>.lock`.
//!
//! Debian packages come from [`apt::resolve`]; Node and npm from the npm
//! registry's metadata (`dist.tarball`, `dist.integrity`), downloaded once
//! into the cache to learn their sha256; npm packages from the committed
//! package-locks. `SOURCE_DATE_EPOCH` is the newest `Date:` of the Debian
//! suites' InRelease files, so updating a lock when nothing moved upstream
//! writes the same bytes.

use std::path::PathBuf;

use haimg_model::Role;
use serde::Serialize;

use super::apt::{self, Scratch};
use super::fetch::Expect;
use super::lock::{read_npm_tree, recipe_fingerprint, BlobPin, DebPin, Lock};
use super::recipe::{NodeSpec, Recipe};
use super::{BuildError, Env};

pub const NPM_REGISTRY: &str = "https://registry.npmjs.org";

/// The outcome of one lock update.
#[derive(Debug, Clone, Serialize)]
pub struct Updated {
    pub role: Role,
    pub path: PathBuf,
    pub changed: bool,
    pub packages: usize,
    /// `name old → new`, `+name version`, `-name version`.
    pub changes: Vec<String>,
}

pub fn update(env: &Env, role: Role) -> Result<Updated, BuildError> {
    let root = &env.project.root;
    let recipe = Recipe::load(root, role)?;
    let scratch_dir = tempfile::Builder::new()
        .prefix("haimg-apt-")
        .tempdir()
        .map_err(|error| BuildError::Io {
            what: "create",
            path: std::env::temp_dir(),
            error,
        })?;
    let scratch = Scratch {
        dir: scratch_dir.path().to_path_buf(),
    };
    let resolved = apt::resolve(&recipe, env.runner.as_ref(), &env.fetcher, &scratch)?;
    let old = Lock::load(root, role).ok().flatten().map(|(l, _)| l);
    let (node, npm_tool, npm) = match &recipe.raw.webapp {
        Some(w) => {
            let node = registry_pin(env, &w.node)?;
            let tool = registry_pin(env, &w.npm)?;
            let mut trees = Vec::new();
            for dir in [&w.pm2_dir, &w.app_dir] {
                let lf = format!("{}/package-lock.json", dir.trim_end_matches('/'));
                trees.push(read_npm_tree(root, &lf).map_err(|m| BuildError::Registry {
                    package: lf.clone(),
                    message: m,
                })?);
            }
            (Some(node), Some(tool), trees)
        }
        None => (None, None, Vec::new()),
    };
    let source_date_epoch = resolved
        .newest_release
        .or(old.as_ref().map(|l| l.source_date_epoch))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    let lock = Lock {
        schema_version: 1,
        role: role.to_string(),
        recipe_sha256: recipe_fingerprint(&recipe),
        source_date_epoch,
        debian: resolved.debian,
        vendor: resolved.vendor,
        node,
        npm_tool,
        npm,
    };
    let changes = old
        .as_ref()
        .map(|o| deb_changes(&o.debian, &lock.debian))
        .unwrap_or_default();
    let text = lock.render();
    let path = Lock::path_for(root, role);
    let changed = std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str());
    if changed {
        std::fs::write(&path, &text).map_err(|error| BuildError::Io {
            what: "write",
            path: path.clone(),
            error,
        })?;
    }
    Ok(Updated {
        role,
        path,
        changed,
        packages: lock.debian.len() + lock.vendor.len(),
        changes,
    })
}

/// Pin a registry tarball: metadata, then a verified download into the cache.
fn registry_pin(env: &Env, spec: &NodeSpec) -> Result<BlobPin, BuildError> {
    let url = format!("{NPM_REGISTRY}/{}/{}", spec.package, spec.version);
    let meta = env.fetcher.get_bytes(&url)?;
    let v: serde_json::Value = serde_json::from_slice(&meta).map_err(|e| BuildError::Registry {
        package: spec.package.clone(),
        message: format!("{url} is not JSON: {e}"),
    })?;
    let field = |k: &str| {
        v["dist"][k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| BuildError::Registry {
                package: spec.package.clone(),
                message: format!("{url} has no dist.{k}"),
            })
    };
    let (tarball, integrity) = (field("tarball")?, field("integrity")?);
    let got = env.fetcher.ensure_all(
        &format!("{}@{}", spec.package, spec.version),
        &[(
            tarball.clone(),
            Expect {
                sha256: None,
                integrity: Some(integrity.clone()),
                size: None,
            },
        )],
    )?;
    Ok(BlobPin {
        package: spec.package.clone(),
        version: spec.version.clone(),
        url: tarball,
        integrity,
        sha256: got[0].sha256.clone(),
        size: got[0].size,
    })
}

fn deb_changes(old: &[DebPin], new: &[DebPin]) -> Vec<String> {
    let mut out = Vec::new();
    for n in new {
        match old.iter().find(|o| o.name == n.name) {
            None => out.push(format!("+{} {}", n.name, n.version)),
            Some(o) if o.version != n.version => {
                out.push(format!("{} {} → {}", n.name, o.version, n.version))
            }
            Some(o) if o.sha256 != n.sha256 => {
                out.push(format!("{} {}: other bytes", n.name, n.version))
            }
            _ => {}
        }
    }
    for o in old {
        if !new.iter().any(|n| n.name == o.name) {
            out.push(format!("-{} {}", o.name, o.version));
        }
    }
    out
}
