//! Image locks: `images/<role>.lock`, the exact bytes a recipe resolves to.
//!
//! A lock pins every Debian package (name, version, architecture, size,
//! sha256, URL), the vendor packages, the Node tarball and npm (by sha512
//! integrity and sha256), every npm package of the committed package-locks,
//! and `SOURCE_DATE_EPOCH`. `haimg lock --update` writes it; `haimg build`
//! only reads it and fails closed when the recipe or a package-lock no longer
//! matches ([`Lock::check_fresh`]).
//!
//! The file is YAML with one flow mapping per package, so a version bump is a
//! one-line diff. [`Lock::render`] is deterministic: same lock, same bytes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use haimg_model::Role;
use serde::{Deserialize, Serialize};

use super::hash::sha256_hex;
use super::recipe::Recipe;

/// One pinned `.deb`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebPin {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub size: u64,
    pub sha256: String,
    /// `http(s)://…` on a mirror, or a path relative to the project root (local `.deb`).
    pub url: String,
}

impl DebPin {
    /// The file name in a flat repository.
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

/// One pinned registry tarball (Node, npm).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobPin {
    pub package: String,
    pub version: String,
    pub url: String,
    /// The registry's `dist.integrity` (`sha512-…`).
    pub integrity: String,
    pub sha256: String,
    pub size: u64,
}

/// One npm package of a committed package-lock.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpmPin {
    /// Install path inside node_modules (`node_modules/@next/env`).
    pub path: String,
    pub version: String,
    pub integrity: String,
    /// Only installed without `--omit=dev` / on matching platforms.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dev: bool,
}

impl NpmPin {
    /// The package name, from its install path.
    pub fn name(&self) -> &str {
        let p = self
            .path
            .rsplit("node_modules/")
            .next()
            .unwrap_or(&self.path);
        p
    }
}

/// A committed package-lock, pinned by its own hash and its packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpmTree {
    /// Project-relative path of the package-lock.json.
    pub lockfile: String,
    pub sha256: String,
    pub packages: Vec<NpmPin>,
}

/// `images/<role>.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub schema_version: u32,
    pub role: String,
    /// Hash of the recipe fields resolution depends on ([`recipe_fingerprint`]).
    pub recipe_sha256: String,
    pub source_date_epoch: u64,
    pub debian: Vec<DebPin>,
    #[serde(default)]
    pub vendor: Vec<DebPin>,
    #[serde(default)]
    pub node: Option<BlobPin>,
    #[serde(default)]
    pub npm_tool: Option<BlobPin>,
    #[serde(default)]
    pub npm: Vec<NpmTree>,
}

/// Why a lock cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path} is missing; create it with `haimg lock --update --role {role}`")]
    Missing { path: PathBuf, role: Role },
    #[error("failed to read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not a valid lock: {message}; regenerate it with `haimg lock --update --role {role}`")]
    Invalid {
        path: PathBuf,
        role: Role,
        message: String,
    },
    #[error("{path} was made for another version of {recipe} (packages, sources or artifacts changed); run `haimg lock --update --role {role}`")]
    RecipeChanged {
        path: PathBuf,
        recipe: PathBuf,
        role: Role,
    },
    #[error("{lockfile} changed since {path} was made ({detail}); run `haimg lock --update --role {role}`")]
    NpmDrift {
        path: PathBuf,
        lockfile: String,
        detail: String,
        role: Role,
    },
}

impl Lock {
    pub fn path_for(root: &Path, role: Role) -> PathBuf {
        root.join("images").join(format!("{role}.lock"))
    }

    /// Read `images/<role>.lock`; `Ok(None)` when it does not exist.
    pub fn load(root: &Path, role: Role) -> Result<Option<(Lock, String)>, LockError> {
        let path = Lock::path_for(root, role);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(LockError::Read { path, error }),
        };
        let lock = Lock::parse(&text).map_err(|message| LockError::Invalid {
            path: path.clone(),
            role,
            message,
        })?;
        if lock.role != role.as_str() {
            return Err(LockError::Invalid {
                path,
                role,
                message: format!("it is the lock of {:?}", lock.role),
            });
        }
        Ok(Some((lock, text)))
    }

    pub fn parse(text: &str) -> Result<Lock, String> {
        let lock: Lock = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if lock.schema_version != 1 {
            return Err(format!(
                "schema_version {} is not supported",
                lock.schema_version
            ));
        }
        Ok(lock)
    }

    /// Fail closed when the recipe or a committed package-lock moved on.
    pub fn check_fresh(&self, root: &Path, recipe: &Recipe) -> Result<(), LockError> {
        let path = Lock::path_for(root, recipe.role);
        if self.recipe_sha256 != recipe_fingerprint(recipe) {
            return Err(LockError::RecipeChanged {
                path,
                recipe: recipe.path.clone(),
                role: recipe.role,
            });
        }
        for tree in &self.npm {
            let current =
                read_npm_tree(root, &tree.lockfile).map_err(|detail| LockError::NpmDrift {
                    path: path.clone(),
                    lockfile: tree.lockfile.clone(),
                    detail,
                    role: recipe.role,
                })?;
            if current.sha256 != tree.sha256 {
                return Err(LockError::NpmDrift {
                    path: path.clone(),
                    lockfile: tree.lockfile.clone(),
                    detail: npm_difference(&tree.packages, &current.packages),
                    role: recipe.role,
                });
            }
        }
        Ok(())
    }

    /// The deterministic text of the lock.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# images/{}.lock: the exact inputs of the {} template.\n# Generated by `haimg lock --update`; do not edit by hand.",
            self.role, self.role
        );
        let _ = writeln!(s, "schema_version: {}", self.schema_version);
        let _ = writeln!(s, "role: {}", q(&self.role));
        let _ = writeln!(s, "recipe_sha256: {}", q(&self.recipe_sha256));
        let _ = writeln!(s, "source_date_epoch: {}", self.source_date_epoch);
        render_debs(&mut s, "debian", &self.debian);
        render_debs(&mut s, "vendor", &self.vendor);
        for (key, blob) in [("node", &self.node), ("npm_tool", &self.npm_tool)] {
            if let Some(b) = blob {
                let _ = writeln!(
                    s,
                    "{key}: {{package: {}, version: {}, size: {}, sha256: {}, integrity: {}, url: {}}}",
                    q(&b.package),
                    q(&b.version),
                    b.size,
                    q(&b.sha256),
                    q(&b.integrity),
                    q(&b.url)
                );
            }
        }
        if self.npm.is_empty() {
            s.push_str("npm: []\n");
        } else {
            s.push_str("npm:\n");
            for t in &self.npm {
                let _ = writeln!(
                    s,
                    "  - lockfile: {}\n    sha256: {}\n    packages:",
                    q(&t.lockfile),
                    q(&t.sha256)
                );
                for p in &t.packages {
                    let mut flags = String::new();
                    if p.optional {
                        flags.push_str(", optional: true");
                    }
                    if p.dev {
                        flags.push_str(", dev: true");
                    }
                    let _ = writeln!(
                        s,
                        "      - {{path: {}, version: {}, integrity: {}{flags}}}",
                        q(&p.path),
                        q(&p.version),
                        q(&p.integrity)
                    );
                }
            }
        }
        s
    }
}

fn render_debs(s: &mut String, key: &str, debs: &[DebPin]) {
    if debs.is_empty() {
        let _ = writeln!(s, "{key}: []");
        return;
    }
    let _ = writeln!(s, "{key}:");
    for d in debs {
        let _ = writeln!(
            s,
            "  - {{name: {}, version: {}, arch: {}, size: {}, sha256: {}, url: {}}}",
            q(&d.name),
            q(&d.version),
            q(&d.arch),
            d.size,
            q(&d.sha256),
            q(&d.url)
        );
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// What resolution depends on in a recipe; a lock is valid only for this.
pub fn recipe_fingerprint(recipe: &Recipe) -> String {
    #[derive(Serialize)]
    struct Fp<'a> {
        suite: &'a str,
        sources: &'a [super::recipe::AptSource],
        packages: &'a [String],
        vendor: &'a Option<super::recipe::Vendor>,
        node: Option<&'a super::recipe::NodeSpec>,
        npm: Option<&'a super::recipe::NodeSpec>,
        npm_dirs: Vec<&'a str>,
    }
    let r = &recipe.raw;
    let fp = Fp {
        suite: &r.suite,
        sources: &r.sources,
        packages: &r.packages,
        vendor: &r.vendor,
        node: r.webapp.as_ref().map(|w| &w.node),
        npm: r.webapp.as_ref().map(|w| &w.npm),
        npm_dirs: r
            .webapp
            .as_ref()
            .map(|w| vec![w.pm2_dir.as_str(), w.app_dir.as_str()])
            .unwrap_or_default(),
    };
    sha256_hex(serde_json::to_string(&fp).unwrap_or_default().as_bytes())
}

/// Read a committed package-lock.json into an [`NpmTree`].
pub fn read_npm_tree(root: &Path, lockfile: &str) -> Result<NpmTree, String> {
    let path = root.join(lockfile);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let version = v
        .get("lockfileVersion")
        .and_then(|x| x.as_u64())
        .unwrap_or(0);
    if version < 2 {
        return Err(format!(
            "{} has lockfileVersion {version}; npm 7 or later writes 2 or 3",
            path.display()
        ));
    }
    let mut packages = Vec::new();
    if let Some(map) = v.get("packages").and_then(|p| p.as_object()) {
        for (p, entry) in map {
            if p.is_empty() || entry.get("link").and_then(|l| l.as_bool()) == Some(true) {
                continue; // the root project, or a workspace link
            }
            let field = |k: &str| {
                entry
                    .get(k)
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let flag = |k: &str| entry.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
            let integrity = field("integrity");
            if integrity.is_empty() {
                return Err(format!(
                    "{}: `{p}` has no integrity; regenerate the package-lock with npm",
                    path.display()
                ));
            }
            packages.push(NpmPin {
                path: p.clone(),
                version: field("version"),
                integrity,
                optional: flag("optional"),
                dev: flag("dev"),
            });
        }
    }
    packages.sort();
    Ok(NpmTree {
        lockfile: lockfile.to_string(),
        sha256: sha256_hex(&bytes),
        packages,
    })
}

/// Name the first package that differs between two npm trees.
pub fn npm_difference(locked: &[NpmPin], now: &[NpmPin]) -> String {
    for p in now {
        match locked.iter().find(|l| l.path == p.path) {
            None => return format!("{} {} is new", p.name(), p.version),
            Some(l) if l.version != p.version => {
                return format!("{} moved from {} to {}", p.name(), l.version, p.version)
            }
            Some(l) if l.integrity != p.integrity => {
                return format!("{} {} has another integrity", p.name(), p.version)
            }
            _ => {}
        }
    }
    if let Some(l) = locked
        .iter()
        .find(|l| !now.iter().any(|p| p.path == l.path))
    {
        return format!("{} {} was removed", l.name(), l.version);
    }
    "the file's bytes changed".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        Lock {
            schema_version: 1,
            role: "lb".into(),
            recipe_sha256: "ab".repeat(32),
            source_date_epoch: 1_700_000_000,
            debian: vec![DebPin {
                name: "keepalived".into(),
                version: "1:2.2.7-1+b2".into(),
                arch: "amd64".into(),
                size: 12,
                sha256: "00".repeat(32),
                url: "http://deb.debian.org/debian/pool/main/k/keepalived/keepalived_2.2.7-1+b2_amd64.deb".into(),
            }],
            vendor: vec![],
            node: None,
            npm_tool: None,
            npm: vec![NpmTree {
                lockfile: "images/webapp/pm2/package-lock.json".into(),
                sha256: "11".repeat(32),
                packages: vec![NpmPin {
                    path: "node_modules/@pm2/io".into(),
                    version: "6.0.0".into(),
                    integrity: "sha512-x".into(),
                    optional: false,
                    dev: false,
                }],
            }],
        }
    }

    #[test]
    fn render_parses_back_to_the_same_lock() {
        let l = sample();
        let text = l.render();
        assert_eq!(Lock::parse(&text).unwrap(), l);
        insta::assert_snapshot!(text);
    }

    #[test]
    fn file_names_escape_the_epoch() {
        assert_eq!(
            sample().debian[0].file_name(),
            "keepalived_1%3a2.2.7-1+b2_amd64.deb"
        );
        assert_eq!(sample().npm[0].packages[0].name(), "@pm2/io");
    }

    #[test]
    fn npm_difference_names_the_package() {
        let a = sample().npm[0].packages.clone();
        let mut b = a.clone();
        b[0].version = "6.0.1".into();
        assert_eq!(npm_difference(&a, &b), "@pm2/io moved from 6.0.0 to 6.0.1");
        assert_eq!(npm_difference(&a, &[]), "@pm2/io 6.0.0 was removed");
    }
}
