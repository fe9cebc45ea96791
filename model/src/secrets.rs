//! What a secret looks like: one list for the spec check and for redaction.
//!
//! [`is_secret_name`] says whether a key or variable name names a secret
//! (`DB_PASS`, `sessionKey`, `PRIVATEKEY`, `aws_secret_access_key`, ...);
//! [`find_in_value`] says whether a value carries one whatever its name: a URL
//! with a password (`mongodb://admin:pw@host`), a PEM block, a token with a
//! vendor's prefix, or a long high-entropy string; [`redact`] hides what
//! [`find_in_value`] finds. The spec check refuses both (secrets never live in
//! `haimg.yaml` or the plan baked into every image), and everything haimg
//! prints for people (the dry run's API calls) goes through the same two.
//!
//! Invariants: pure, no allocation beyond the input's size, linear in it;
//! nothing here returns or prints the secret itself.

use std::borrow::Cow;

/// Stems that name a secret wherever they appear in a name (compared with
/// separators removed, lowercase): `DB_PASSWORD`, `authToken`, `MASTERKEY`.
const STEMS: [&str; 18] = [
    "passw",
    "passphrase",
    "secret",
    "token",
    "credential",
    "apikey",
    "privatekey",
    "privkey",
    "sessionkey",
    "signingkey",
    "encryptionkey",
    "masterkey",
    "accesskey",
    "authkey",
    "clientkey",
    "keyfile",
    "connectionstring",
    "bearer",
];

/// Words that name a secret when they are a whole word of the name
/// (`DB_PASS`, `admin_pwd`, `SENTRY_DSN`, `api-key`).
const WORDS: [&str; 14] = [
    "pass", "pw", "pwd", "key", "keys", "creds", "cred", "auth", "pat", "otp", "dsn", "jwt",
    "salt", "hmac",
];

/// Endings that name a secret when a word ends in them (`DBPASS`, `VRRPKEY`).
const ENDINGS: [&str; 4] = ["pass", "pwd", "key", "keys"];

/// Whole words that end in one of [`ENDINGS`] and name no secret.
const NOT_SECRET: [&str; 10] = [
    "bypass",
    "compass",
    "overpass",
    "underpass",
    "passive",
    "monkey",
    "hockey",
    "turkey",
    "whiskey",
    "author",
];

/// The words of a name: split on anything but letters and digits, and where
/// a lowercase letter or digit is followed by an uppercase one (`sessionKey`).
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Does this key or variable name name a secret?
pub fn is_secret_name(name: &str) -> bool {
    let words = words(name);
    let joined: String = words.concat();
    if STEMS.iter().any(|s| joined.contains(s)) {
        return true;
    }
    words.iter().any(|w| {
        WORDS.contains(&w.as_str())
            || (!NOT_SECRET.contains(&w.as_str()) && ENDINGS.iter().any(|e| w.ends_with(e)))
    })
}

/// What kind of secret a value carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// `scheme://user:password@host`.
    UrlCredentials,
    /// `-----BEGIN ...-----`.
    Pem,
    /// A token with a known vendor prefix, or a Proxmox API token.
    VendorToken,
    /// A long string of letters, digits and `+/=_-` that looks random.
    HighEntropy,
}

impl SecretKind {
    pub fn describe(self) -> &'static str {
        match self {
            SecretKind::UrlCredentials => "a URL with a user and password",
            SecretKind::Pem => "a PEM block (key material)",
            SecretKind::VendorToken => "an access token",
            SecretKind::HighEntropy => "a long random-looking string (a key or token?)",
        }
    }
}

/// Prefixes of access tokens that are secrets by construction.
const TOKEN_PREFIXES: [&str; 13] = [
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "sk_live_",
    "rk_live_",
    "AIza",
];

/// Shortest run [`SecretKind::HighEntropy`] looks at, and the entropy it needs
/// (bits per character; hex tops out at 4.0, so hashes and UUIDs never count).
const ENTROPY_MIN_LEN: usize = 32;
const ENTROPY_MIN_BITS: f64 = 4.2;

/// The first secret `value` carries, if any.
pub fn find_in_value(value: &str) -> Option<SecretKind> {
    if url_credentials(value).next().is_some() {
        return Some(SecretKind::UrlCredentials);
    }
    if value.contains("-----BEGIN ") {
        return Some(SecretKind::Pem);
    }
    if runs(value).any(is_vendor_token) || pve_token(value) || value.contains("PVEAPIToken=") {
        return Some(SecretKind::VendorToken);
    }
    if runs(value).any(is_high_entropy) {
        return Some(SecretKind::HighEntropy);
    }
    None
}

/// `value` with every secret [`find_in_value`] finds replaced by `<redacted>`:
/// the password of a URL (the user stays), or the whole value otherwise.
pub fn redact(value: &str) -> Cow<'_, str> {
    match find_in_value(value) {
        None => Cow::Borrowed(value),
        Some(SecretKind::UrlCredentials) => {
            let mut out = String::with_capacity(value.len());
            let mut last = 0;
            for (start, end) in url_credentials(value) {
                out.push_str(&value[last..start]);
                out.push_str(REDACTED);
                last = end;
            }
            out.push_str(&value[last..]);
            // Whatever else the value holds is checked again.
            match find_in_value(&out) {
                None => Cow::Owned(out),
                Some(_) => Cow::Borrowed(REDACTED),
            }
        }
        Some(_) => Cow::Borrowed(REDACTED),
    }
}

/// The text [`redact`] puts in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// Byte ranges of the passwords in `scheme://user:password@` (the part
/// between the first `:` of the user information and its last `@`), except
/// those already redacted.
fn url_credentials(value: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    value.match_indices("://").filter_map(move |(i, _)| {
        let auth_start = i + 3;
        let rest = &value[auth_start..];
        let auth_len = rest
            .find(|c: char| "/?#".contains(c) || c.is_whitespace())
            .unwrap_or(rest.len());
        let authority = &rest[..auth_len];
        let at = authority.rfind('@')?;
        let colon = authority[..at].find(':')?;
        (&authority[colon + 1..at] != REDACTED).then_some((auth_start + colon + 1, auth_start + at))
    })
}

/// Maximal runs of token characters.
fn runs(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| !(c.is_ascii_alphanumeric() || "+/=_-".contains(c)))
        .filter(|r| !r.is_empty())
}

fn is_vendor_token(run: &str) -> bool {
    let aws = |p: &str| {
        run.strip_prefix(p).is_some_and(|rest| {
            rest.len() >= 16
                && rest
                    .bytes()
                    .take(16)
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
    };
    TOKEN_PREFIXES
        .iter()
        .any(|p| run.starts_with(p) && run.len() >= p.len() + 16)
        || aws("AKIA")
        || aws("ASIA")
        || (run.starts_with("eyJ") && run.len() >= 30)
}

/// `user@realm!tokenid=uuid`, the form of `HAIMG_PVE_TOKEN`. Linear: each
/// `!` after the first `@` looks at most at a token id's length ahead.
fn pve_token(value: &str) -> bool {
    let Some(first_at) = value.find('@') else {
        return false;
    };
    let b = value.as_bytes();
    value.match_indices('!').any(|(i, _)| {
        if i < first_at {
            return false;
        }
        let id_len = b[i + 1..]
            .iter()
            .take(65)
            .take_while(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
            .count();
        let eq = i + 1 + id_len;
        let uuid = b.get(eq + 1..eq + 37);
        id_len > 0
            && b.get(eq) == Some(&b'=')
            && uuid.is_some_and(|u| {
                u.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-')
                    && u.iter().filter(|c| **c == b'-').count() == 4
            })
    })
}

fn is_high_entropy(run: &str) -> bool {
    if run.len() < ENTROPY_MIN_LEN {
        return false;
    }
    let has = |f: fn(&u8) -> bool| run.as_bytes().iter().any(f);
    if !(has(u8::is_ascii_digit) && has(u8::is_ascii_alphabetic)) {
        return false;
    }
    let mut counts = [0u32; 128];
    for b in run.bytes() {
        counts[usize::from(b & 0x7f)] += 1;
    }
    let n = run.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum();
    bits >= ENTROPY_MIN_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for k in [
            "password",
            "PVE_TOKEN",
            "api-key",
            "apiKey",
            "db_secret",
            "private_key",
            "PRIVATEKEY",
            "privKey",
            "DB_PASS",
            "DBPASS",
            "dbPass",
            "SESSION_KEY",
            "sessionKey",
            "CREDENTIALS",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "aws_secret_access_key",
            "AWS_ACCESS_KEY_ID",
            "HAIMG_MONGO_KEY",
            "HAIMG_VRRP_PASS",
            "HAIMG_DB_PASSWORD",
            "ADMIN_PWD",
            "SENTRY_DSN",
            "JWT",
            "GITHUB_PAT",
            "NPM_AUTH",
            "COOKIE_SECRET",
            "keyFile",
            "SMTP_PASSWD",
            "passphrase",
            "STRIPE_KEY",
            "NEXTAUTH_SECRET",
        ] {
            assert!(is_secret_name(k), "{k}");
        }
        for k in [
            "certificate",
            "keepalived",
            "replica_set",
            "tags",
            "NODE_ENV",
            "PORT",
            "HAIMG_SLOT",
            "HAIMG_IP",
            "MONGODB_URI",
            "BYPASS_CACHE",
            "PASSIVE_MODE",
            "AUTHOR",
            "KEYBOARD_LAYOUT",
            "monkey",
            "FEATURE_X",
            "upstream_hash",
        ] {
            assert!(!is_secret_name(k), "{k}");
        }
    }

    #[test]
    fn secret_values() {
        let cases = [
            (
                "mongodb://admin:pw@10.0.0.1/app",
                Some(SecretKind::UrlCredentials),
            ),
            ("https://:tok@host", Some(SecretKind::UrlCredentials)),
            (
                "see postgres://u:p%40ss@db:5432/x?sslmode=require",
                Some(SecretKind::UrlCredentials),
            ),
            ("-----BEGIN PRIVATE KEY-----\nMIIE", Some(SecretKind::Pem)),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", Some(SecretKind::Pem)),
            (
                "ghp_0123456789abcdefABCDEF0123456789abcd",
                Some(SecretKind::VendorToken),
            ),
            ("AKIAIOSFODNN7EXAMPLE", Some(SecretKind::VendorToken)),
            (
                "root@pam!haimg=5f0f8e3c-1b7e-4a7e-9a55-2d5cfa2d1c11",
                Some(SecretKind::VendorToken),
            ),
            (
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.x",
                Some(SecretKind::VendorToken),
            ),
            (
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                Some(SecretKind::HighEntropy),
            ),
            (
                "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWpr",
                Some(SecretKind::HighEntropy),
            ),
            // Not secrets.
            ("https://example.org/path?q=1", None),
            ("ssh://git@github.com/org/repo", None),
            ("mongodb://10.0.0.1:27017/app", None),
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                None,
            ),
            ("5f0f8e3c-1b7e-4a7e-9a55-2d5cfa2d1c11", None),
            ("/srv/webapp/node_modules/next/dist/server/lib", None),
            ("ThisIsAVeryLongCamelCaseIdentifierWithoutDigits", None),
            ("1", None),
            ("", None),
        ];
        for (v, want) in cases {
            assert_eq!(find_in_value(v), want, "{v}");
        }
    }

    #[test]
    fn redaction_keeps_the_rest() {
        assert_eq!(
            redact("mongodb://admin:pw@10.0.0.1,10.0.0.2/app?x=1"),
            "mongodb://admin:<redacted>@10.0.0.1,10.0.0.2/app?x=1"
        );
        assert_eq!(
            redact("a=https://u:p@h b=ftp://v:q@g"),
            "a=https://u:<redacted>@h b=ftp://v:<redacted>@g"
        );
        assert_eq!(redact("-----BEGIN PRIVATE KEY-----"), "<redacted>");
        assert_eq!(redact("plain"), "plain");
        assert_eq!(
            redact("https://u:p@h/ghp_0123456789abcdefABCDEF0123"),
            "<redacted>"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_redaction_removes_what_it_finds(s in "\\PC{0,80}") {
            let _ = is_secret_name(&s);
            let r = redact(&s);
            proptest::prop_assert_eq!(find_in_value(&r), None);
        }
    }
}
