//! The name of a template file: the contract between `haimg build`, which
//! writes it, and the deploy side, which finds, stores and recognises it.
//!
//! ```text
//! haimg-<role>_<version>_amd64.tar.zst           as built (out/)
//! haimg-<role>_<version>-<hash12>_amd64.tar.zst  as stored on a target
//! ```
//!
//! The stored form carries the first 12 hex digits of the file's sha256, so a
//! file of that name on the target is that content (an upload can be skipped)
//! and a rebuild never overwrites a template running containers came from.
//! A version is letters, digits, `.` and `-` (checked by the spec), so the
//! role ends at the first `_` and the stored hash follows the last `-`.

use std::fmt;

use crate::Role;

const PREFIX: &str = "haimg-";
const SUFFIX: &str = "_amd64";
const EXT: &str = ".tar.zst";
const HASH_LEN: usize = 12;

/// One template's file name, built or stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateName {
    pub role: Role,
    pub version: String,
    /// The first 12 hex digits of the content's sha256: set in the stored form.
    pub hash: Option<String>,
}

impl TemplateName {
    /// The built template of `role` at `version`.
    pub fn new(role: Role, version: &str) -> TemplateName {
        TemplateName {
            role,
            version: version.to_string(),
            hash: None,
        }
    }

    /// The name this content is stored under on a target.
    pub fn stored(&self, sha256: &str) -> TemplateName {
        TemplateName {
            hash: Some(
                sha256
                    .chars()
                    .take(HASH_LEN)
                    .collect::<String>()
                    .to_ascii_lowercase(),
            ),
            ..self.clone()
        }
    }

    /// Without the extension: `haimg-lb_1.0.0_amd64`.
    pub fn stem(&self) -> String {
        let hash = self
            .hash
            .as_deref()
            .map(|h| format!("-{h}"))
            .unwrap_or_default();
        format!("{PREFIX}{}_{}{hash}{SUFFIX}", self.role, self.version)
    }

    /// The file name: `haimg-lb_1.0.0_amd64.tar.zst`.
    pub fn file_name(&self) -> String {
        format!("{}{EXT}", self.stem())
    }

    /// Read a built name back (no hash: a version may end in anything).
    pub fn parse(name: &str) -> Option<TemplateName> {
        let rest = name.strip_prefix(PREFIX)?.strip_suffix(EXT)?;
        let rest = rest.strip_suffix(SUFFIX)?;
        let (role, version) = rest.split_once('_')?;
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
        if version.is_empty() || !version.chars().all(ok) {
            return None;
        }
        Some(TemplateName::new(Role::parse(role)?, version))
    }

    /// Read a stored name back: `None` unless it carries a content hash.
    pub fn parse_stored(name: &str) -> Option<TemplateName> {
        let built = TemplateName::parse(name)?;
        let (version, hash) = built.version.rsplit_once('-')?;
        let hex = |h: &str| h.len() == HASH_LEN && h.bytes().all(|b| b.is_ascii_hexdigit());
        (!version.is_empty() && hex(hash)).then(|| TemplateName {
            role: built.role,
            version: version.to_string(),
            hash: Some(hash.to_ascii_lowercase()),
        })
    }
}

impl serde::Serialize for TemplateName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for TemplateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn built_and_stored_names_render_and_parse_back() {
        let t = TemplateName::new(Role::Lb, "1.0.0");
        assert_eq!(t.file_name(), "haimg-lb_1.0.0_amd64.tar.zst");
        assert_eq!(t.stem(), "haimg-lb_1.0.0_amd64");
        let s = t.stored(SHA);
        assert_eq!(s.to_string(), "haimg-lb_1.0.0-0123456789ab_amd64.tar.zst");
        assert_eq!(TemplateName::parse(&t.file_name()), Some(t));
        assert_eq!(TemplateName::parse_stored(&s.file_name()), Some(s));
        let rc = TemplateName::new(Role::Webapp, "1.2.0-rc1").stored("ABCDEFabcdef00");
        assert_eq!(
            TemplateName::parse_stored("haimg-webapp_1.2.0-rc1-abcdefabcdef_amd64.tar.zst"),
            Some(rc)
        );
    }

    #[test]
    fn other_names_are_not_haimg_templates() {
        for name in [
            "debian-12-standard_12.7-1_amd64.tar.zst",
            "haimg-nginx_1.0.0_amd64.tar.zst",
            "haimg-lb_1.0.0_amd64.tar.gz",
            "haimg-lb__amd64.tar.zst",
            "haimg-lb_1 0_amd64.tar.zst",
        ] {
            assert_eq!(TemplateName::parse(name), None, "{name}");
        }
        assert_eq!(
            TemplateName::parse_stored("haimg-lb_1.0.0_amd64.tar.zst"),
            None
        );
        assert_eq!(
            TemplateName::parse_stored("haimg-lb_1.0.0-0123456789zz_amd64.tar.zst"),
            None
        );
    }
}
