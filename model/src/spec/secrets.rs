//! Secrets never live in `haimg.yaml`.
//!
//! Templates and specs are shared, reviewed, reproducible artifacts, and the
//! spec is baked into every image as `/etc/haimg/plan.json`. Before the strict
//! parse, every mapping key is checked against the names of secrets and every
//! string value against what a secret looks like ([`crate::secrets`], the same
//! rules that redact the dry run's output); a hit is an error that points to
//! where the secret belongs instead and never repeats the value.

#[cfg(feature = "yaml")]
use super::Problem;
use crate::secrets::{find_in_value, is_secret_name};

/// Keys of the spec's own schema whose name matches a secret word but which
/// hold none: a path to the key, not the key.
#[cfg(feature = "yaml")]
const SCHEMA_KEYS: [&str; 1] = ["roles.lb.nginx.tls.certificate_key"];

pub(crate) fn looks_secret(key: &str) -> bool {
    is_secret_name(key)
}

fn hint_for(key: &str) -> &'static str {
    let k = key.to_ascii_lowercase();
    if k.contains("token") {
        "the Proxmox API token comes from the environment: HAIMG_PVE_TOKEN=user@realm!id=uuid"
    } else {
        "secrets are delivered at run time, never baked: see \"Secrets\" in README.md"
    }
}

/// The problem with a string value that carries a secret, if it does.
pub(crate) fn value_problem(path: &str, value: &str) -> Option<(String, String)> {
    let kind = find_in_value(value)?;
    Some((
        format!(
            "the value looks like {}; secrets never live in haimg.yaml",
            kind.describe()
        ),
        match kind {
            crate::secrets::SecretKind::UrlCredentials => {
                "give the URL without `user:password@` and deliver credentials at run time: see \"Secrets\" in README.md".to_string()
            }
            _ => hint_for(path).to_string(),
        },
    ))
}

#[cfg(feature = "yaml")]
pub(crate) fn find(value: &serde_yaml::Value) -> Vec<Problem> {
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

/// Recursive, so the caller bounds the nesting first (`guard::check`).
#[cfg(feature = "yaml")]
fn walk(value: &serde_yaml::Value, path: String, out: &mut Vec<Problem>) {
    use serde_yaml::Value;
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                // A key can be as long as the file; paths are built for every
                // node below it, so they carry at most 64 characters of it.
                let shown: String = if key.chars().count() > 64 {
                    key.chars().take(63).chain(['…']).collect()
                } else {
                    key.clone()
                };
                let p = if path.is_empty() {
                    shown
                } else {
                    format!("{path}.{shown}")
                };
                if looks_secret(&key) && !SCHEMA_KEYS.contains(&p.as_str()) {
                    out.push(
                        Problem::error(&p, "looks like a secret; secrets never live in haimg.yaml")
                            .hint(hint_for(&key)),
                    );
                } else if let Some((msg, hint)) = value_problem(&p, &key) {
                    out.push(Problem::error(&p, format!("the key: {msg}")).hint(hint));
                }
                walk(v, p, out);
            }
        }
        Value::Sequence(s) => {
            for (i, v) in s.iter().enumerate() {
                walk(v, format!("{path}[{i}]"), out);
            }
        }
        Value::Tagged(t) => walk(&t.value, path, out),
        Value::String(s) => {
            if let Some((msg, hint)) = value_problem(&path, s) {
                out.push(Problem::error(&path, msg).hint(hint));
            }
        }
        _ => {}
    }
}
