//! The Proxmox API token: parsed from `HAIMG_PVE_TOKEN`, never shown.
//!
//! Format `user@realm!tokenid=secret` (the secret is a UUID). Proxmox splits
//! the header value at the *last* `=` (`PVE::AccessControl::verify_token`), so
//! the token id may not contain `=` but the secret is everything after it.
//! Invariant: the secret leaves this module only inside the `Authorization`
//! header value, which is marked sensitive; `Debug` and `Display` redact it.

use std::fmt;

use reqwest::header::HeaderValue;

/// The environment variable the token is read from.
pub const TOKEN_ENV: &str = "HAIMG_PVE_TOKEN";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("{TOKEN_ENV} is not set; create an API token in Proxmox (Datacenter > Permissions > API Tokens) and export {TOKEN_ENV}=user@realm!tokenid=secret")]
    Missing,
    #[error("{TOKEN_ENV} is not of the form user@realm!tokenid=secret: {reason}")]
    Malformed { reason: &'static str },
}

/// An API token. Clone is cheap; the secret is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    id: String,
    secret: String,
}

impl ApiToken {
    /// Parse `user@realm!tokenid=secret`; a leading `PVEAPIToken=` is tolerated.
    pub fn parse(s: &str) -> Result<ApiToken, TokenError> {
        let s = s.trim();
        let s = s.strip_prefix("PVEAPIToken=").unwrap_or(s);
        let Some((id, secret)) = s.rsplit_once('=') else {
            return Err(TokenError::Malformed {
                reason: "no '=' between token id and secret",
            });
        };
        let Some((user, tokenid)) = id.split_once('!') else {
            return Err(TokenError::Malformed {
                reason: "no '!' between user and token id",
            });
        };
        let Some((name, realm)) = user.split_once('@') else {
            return Err(TokenError::Malformed {
                reason: "the user has no '@realm'",
            });
        };
        if name.is_empty() || realm.is_empty() || tokenid.is_empty() {
            return Err(TokenError::Malformed {
                reason: "user, realm and token id must not be empty",
            });
        }
        if secret.is_empty() {
            return Err(TokenError::Malformed {
                reason: "the secret is empty",
            });
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ';')
        {
            return Err(TokenError::Malformed {
                reason: "it contains whitespace, ';' or control characters",
            });
        }
        Ok(ApiToken {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// Read and parse [`TOKEN_ENV`].
    pub fn from_env() -> Result<ApiToken, TokenError> {
        match std::env::var(TOKEN_ENV) {
            Ok(v) if !v.trim().is_empty() => ApiToken::parse(&v),
            _ => Err(TokenError::Missing),
        }
    }

    /// `user@realm!tokenid`: safe to show.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `Authorization` header, marked sensitive so HTTP-level logging hides it.
    pub(crate) fn header_value(&self) -> HeaderValue {
        let mut v = HeaderValue::from_str(&format!("PVEAPIToken={}={}", self.id, self.secret))
            // Invariant: parse() rejected whitespace and control characters, so
            // the value is visible ASCII or UTF-8 without CR/LF.
            .unwrap_or_else(|_| HeaderValue::from_static("PVEAPIToken=invalid"));
        v.set_sensitive(true);
        v
    }

    /// The header as printed by `--dry-run`.
    pub fn redacted_header(&self) -> String {
        format!("Authorization: PVEAPIToken={}=<redacted>", self.id)
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=<redacted>", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "5f0f8e3c-1b7e-4a7e-9a55-2d5cfa2d1c11";

    #[test]
    fn parses_and_splits_at_last_equals() {
        let t = ApiToken::parse(&format!("root@pam!haimg={SECRET}")).unwrap();
        assert_eq!(t.id(), "root@pam!haimg");
        let t2 = ApiToken::parse(&format!("PVEAPIToken=deploy@pve!ci={SECRET}\n")).unwrap();
        assert_eq!(t2.id(), "deploy@pve!ci");
    }

    #[test]
    fn never_shows_the_secret() {
        let t = ApiToken::parse(&format!("root@pam!haimg={SECRET}")).unwrap();
        for shown in [
            format!("{t:?}"),
            format!("{t}"),
            t.redacted_header(),
            format!("{:?}", t.header_value()),
        ] {
            assert!(!shown.contains(SECRET), "{shown}");
        }
        assert!(t.header_value().is_sensitive());
        assert_eq!(
            t.header_value().to_str().unwrap(),
            format!("PVEAPIToken=root@pam!haimg={SECRET}")
        );
    }

    #[test]
    fn rejects_malformed_tokens() {
        let cases = [
            ("root@pam!haimg", "no '=' between token id and secret"),
            ("root@pam=abc", "no '!' between user and token id"),
            ("root!haimg=abc", "the user has no '@realm'"),
            (
                "root@pam!=abc",
                "user, realm and token id must not be empty",
            ),
            ("root@pam!haimg=", "the secret is empty"),
            (
                "root@pam!hai mg=abc",
                "it contains whitespace, ';' or control characters",
            ),
        ];
        for (input, reason) in cases {
            assert_eq!(
                ApiToken::parse(input),
                Err(TokenError::Malformed { reason }),
                "{input}"
            );
        }
        insta::assert_snapshot!(
            ApiToken::parse("root@pam").unwrap_err().to_string(),
            @"HAIMG_PVE_TOKEN is not of the form user@realm!tokenid=secret: no '=' between token id and secret"
        );
    }
}
