//! Finding the built templates on disk and their content hash.
//!
//! `haimg build` writes `out/haimg-<role>_<version>_amd64.tar.zst` and, beside
//! it, `<file>.sha256`. The hash is always computed from the file (it is the
//! template's identity on the target); a sidecar that disagrees is an error,
//! since it means the file changed after the build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use haimg_model::{Cluster, Role, TemplateName};

use crate::digest::sha256_file_size;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("no {role} template at {path}; run `haimg build` first (or pass --templates DIR)")]
    Missing { role: Role, path: PathBuf },
    #[error("failed to read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} does not match its checksum file: the file hashes to {actual}, {sidecar} says {expected}; rebuild it")]
    Mismatch {
        path: PathBuf,
        sidecar: PathBuf,
        expected: String,
        actual: String,
    },
}

/// A template file on this machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LocalTemplate {
    pub role: Role,
    /// Its name as built.
    pub name: TemplateName,
    pub path: PathBuf,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
    /// What the role's members are started with besides the template: the
    /// secrets from the cluster's store ([`RoleSecrets`]); empty until
    /// [`with_secrets`] fills it.
    #[serde(flatten)]
    pub secrets: RoleSecrets,
}

/// A role's run-time secrets: PID 1's environment (never serialized, never
/// shown by `Debug`) and its fingerprint, which is part of the member's
/// desired state (the `sec-` tag): a rotated secret plans a blue/green swap.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoleSecrets {
    #[serde(skip)]
    pub env: Vec<(String, String)>,
    #[serde(
        rename = "secrets_fingerprint",
        skip_serializing_if = "Option::is_none"
    )]
    pub fingerprint: Option<String>,
}

impl std::fmt::Debug for RoleSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleSecrets")
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Attach each role's secrets: `(env, fingerprint)` per role.
pub fn with_secrets(
    templates: &mut BTreeMap<Role, LocalTemplate>,
    secrets: impl Fn(Role) -> (Vec<(String, String)>, String),
) {
    for (role, t) in templates.iter_mut() {
        let (env, fingerprint) = secrets(*role);
        t.secrets = RoleSecrets {
            env,
            fingerprint: Some(fingerprint),
        };
    }
}

impl LocalTemplate {
    /// The 12 hex digits used in tags and stored file names.
    pub fn short_hash(&self) -> &str {
        &self.sha256[..12]
    }

    /// The name it is stored under on a target (with its content hash).
    pub fn stored_name(&self) -> String {
        self.name.stored(&self.sha256).file_name()
    }
}

/// The template of each role, from `dir`.
pub fn find(dir: &Path, cluster: &Cluster) -> Result<BTreeMap<Role, LocalTemplate>, TemplateError> {
    find_roles(dir, cluster, &Role::ALL)
}

/// The built templates of `roles` only.
pub fn find_roles(
    dir: &Path,
    cluster: &Cluster,
    roles: &[Role],
) -> Result<BTreeMap<Role, LocalTemplate>, TemplateError> {
    let mut out = BTreeMap::new();
    for &role in roles {
        let name = cluster.template_name(role);
        let path = dir.join(name.file_name());
        if !path.is_file() {
            return Err(TemplateError::Missing { role, path });
        }
        let (sha256, size) = sha256_file_size(&path).map_err(|error| TemplateError::Read {
            path: path.clone(),
            error,
        })?;
        let sidecar = PathBuf::from(format!("{}.sha256", path.display()));
        if sidecar.is_file() {
            let text = std::fs::read_to_string(&sidecar).map_err(|error| TemplateError::Read {
                path: sidecar.clone(),
                error,
            })?;
            let expected = text
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if expected != sha256 {
                return Err(TemplateError::Mismatch {
                    path,
                    sidecar,
                    expected,
                    actual: sha256,
                });
            }
        }
        out.insert(
            role,
            LocalTemplate {
                role,
                name,
                path,
                sha256,
                size,
                secrets: RoleSecrets::default(),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster
    }

    #[test]
    fn finds_hashes_and_checks_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster();
        for r in Role::ALL {
            std::fs::write(dir.path().join(c.template_name(r).file_name()), r.as_str()).unwrap();
        }
        let found = find(dir.path(), &c).unwrap();
        // sha256("lb")
        assert_eq!(
            found[&Role::Lb].sha256,
            "fd26db45a8b53034aa38939294bb619aebfc5739f35d25be34583fca6480a2d7"
        );
        assert_eq!(found[&Role::Lb].size, 2);
        let lb = dir.path().join(c.template_name(Role::Lb).file_name());
        std::fs::write(
            format!("{}.sha256", lb.display()),
            format!("{}  x\n", found[&Role::Lb].sha256),
        )
        .unwrap();
        assert!(find(dir.path(), &c).is_ok());
        std::fs::write(format!("{}.sha256", lb.display()), "00ff  x\n").unwrap();
        let e = find(dir.path(), &c).unwrap_err().to_string();
        assert!(e.contains("does not match its checksum file"), "{e}");
        std::fs::remove_file(dir.path().join(c.template_name(Role::Webapp).file_name())).unwrap();
        std::fs::remove_file(format!("{}.sha256", lb.display())).unwrap();
        let e = find(dir.path(), &c).unwrap_err().to_string();
        assert!(
            e.starts_with("no webapp template at ")
                && e.ends_with("run `haimg build` first (or pass --templates DIR)"),
            "{e}"
        );
    }
}
