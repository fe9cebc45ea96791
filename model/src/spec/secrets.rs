//! Secrets never live in `haimg.yaml`.
//!
//! Templates and specs are shared, reviewed, reproducible artifacts. Before the
//! strict parse, every mapping key is checked against words that name secrets;
//! a hit is an error that points to where the secret belongs instead.

#[cfg(feature = "yaml")]
use super::Problem;

/// Words that mark a key as holding a secret.
const SECRET_WORDS: [&str; 7] = [
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
];

pub(crate) fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

fn hint_for(key: &str) -> &'static str {
    let k = key.to_ascii_lowercase();
    if k.contains("token") {
        "the Proxmox API token comes from the environment: HAIMG_PVE_TOKEN=user@realm!id=uuid"
    } else {
        "secrets are delivered at run time, never baked: see \"Secrets\" in README.md"
    }
}

#[cfg(feature = "yaml")]
pub(crate) fn find(value: &serde_yaml::Value) -> Vec<Problem> {
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

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
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if looks_secret(&key) {
                    out.push(
                        Problem::error(&p, "looks like a secret; secrets never live in haimg.yaml")
                            .hint(hint_for(&key)),
                    );
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
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::looks_secret;

    #[test]
    fn secret_words() {
        for k in [
            "password",
            "PVE_TOKEN",
            "api-key",
            "db_secret",
            "private_key",
        ] {
            assert!(looks_secret(k), "{k}");
        }
        for k in ["certificate_key", "keepalived", "replica_set", "tags"] {
            assert!(!looks_secret(k), "{k}");
        }
    }
}
