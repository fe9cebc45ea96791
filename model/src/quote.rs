//! One quoting function per config language haimg writes strings into.
//!
//! Every string that reaches a config file or an API parameter goes through
//! exactly one of these: [`nginx`], [`keepalived`], [`yaml`] (mongod.conf),
//! [`js`] (the PM2 ecosystem file), [`lxc`], [`nft`] and [`pve`] (a value
//! inside a Proxmox property string or list). Each returns the text to paste
//! in place of the value, quoted when the language needs it, or refuses a
//! value the language cannot carry safely (a `$` that nginx would expand as a
//! variable, a line break in an LXC key). Validation of the spec keeps such
//! values out in the first place; these functions are the second wall, so a
//! value that slips past validation becomes an error, never a directive.
//!
//! Invariants: the output of a quoting function is one token of its language
//! and never contains a line break; a refusal never echoes the value (it may be
//! a secret), only the offending character's position and why; values that are
//! already safe come back unchanged and unquoted, so the rendered configs stay
//! readable.

use std::borrow::Cow;
use std::fmt;

/// The config languages haimg writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Nginx,
    Keepalived,
    /// mongod.conf (yaml-cpp).
    Yaml,
    /// The PM2 ecosystem file (`*.config.js`).
    Js,
    /// An LXC `key = value` line.
    Lxc,
    /// An nftables ruleset.
    Nft,
    /// A value inside a Proxmox API property string or list (`net0`, `tags`, ...).
    Pve,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Nginx => "nginx",
            Lang::Keepalived => "keepalived",
            Lang::Yaml => "mongod YAML",
            Lang::Js => "JavaScript",
            Lang::Lxc => "an LXC config",
            Lang::Nft => "nftables",
            Lang::Pve => "a Proxmox property string",
        })
    }
}

/// A value a language cannot carry. It names the character, not the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a value cannot be written into {lang}: {what}")]
pub struct Unquotable {
    pub lang: Lang,
    pub what: String,
}

fn refuse(lang: Lang, what: impl Into<String>) -> Unquotable {
    Unquotable {
        lang,
        what: what.into(),
    }
}

/// The first character of `s` that `ok` rejects, as `'c' at character N`.
fn first_bad(s: &str, ok: impl Fn(char) -> bool) -> Option<String> {
    s.chars()
        .enumerate()
        .find(|(_, c)| !ok(*c))
        .map(|(i, c)| format!("{} at character {}", describe(c), i + 1))
}

fn describe(c: char) -> String {
    if c.is_control() {
        format!("control character U+{:04X}", u32::from(c))
    } else {
        format!("{c:?}")
    }
}

/// nginx: bare when every character is inert (`[A-Za-z0-9._/:=+-]`), else a
/// double-quoted token in which `\`, `"`, tab, CR and LF are escaped (the
/// escapes nginx's tokenizer knows). nginx expands `$name` in most arguments
/// and has no escape for `$`, so a `$` is refused, and so is every other
/// control character.
pub fn nginx(s: &str) -> Result<Cow<'_, str>, Unquotable> {
    let carried = |c: char| c != '$' && (!c.is_control() || "\t\r\n".contains(c));
    if let Some(bad) = first_bad(s, carried) {
        let why = if bad.starts_with("'$'") {
            "nginx expands `$` as a variable and has no escape for it"
        } else {
            "nginx has no escape for it"
        };
        return Err(refuse(Lang::Nginx, format!("{bad} ({why})")));
    }
    let inert = |c: char| c.is_ascii_alphanumeric() || "._/:=+-".contains(c);
    if !s.is_empty() && s.chars().all(inert) {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(Cow::Owned(out))
}

/// keepalived: its reader strips `#` and `!` comments, substitutes `$NAME`
/// and `${NAME}`, treats `@` at a line start as a condition and `~` as a
/// sequence, before it splits words; escapes inside quotes only work for some
/// keywords. So only `[A-Za-z0-9._:/,+=-]` and spaces are carried: bare, or
/// in double quotes when there is a space. Anything else is refused.
pub fn keepalived(s: &str) -> Result<Cow<'_, str>, Unquotable> {
    if s.is_empty() {
        return Err(refuse(Lang::Keepalived, "an empty value"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || "._:/,+=- ".contains(c);
    if let Some(bad) = first_bad(s, ok) {
        return Err(refuse(
            Lang::Keepalived,
            format!("{bad} (keepalived carries letters, digits, spaces and ._:/,+=- only)"),
        ));
    }
    if s.starts_with(' ') || s.ends_with(' ') {
        return Err(refuse(Lang::Keepalived, "a leading or trailing space"));
    }
    if s.contains(' ') {
        Ok(Cow::Owned(format!("\"{s}\"")))
    } else {
        Ok(Cow::Borrowed(s))
    }
}

/// YAML 1.1 plain scalars that a reader may take for a boolean or null.
const YAML_WORDS: [&str; 11] = [
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "",
];

/// YAML (mongod.conf): bare when the scalar is plain-safe (`[A-Za-z0-9_./,+-]`,
/// not starting with an indicator, not a YAML 1.1 boolean or null), else a
/// double-quoted scalar in which `"`, `\` and every character YAML does not
/// allow raw (C0 and C1 controls, DEL, line and paragraph separators, BOM) are
/// escaped. Never refuses.
pub fn yaml(s: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./,+-".contains(c);
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '/');
    if first_ok && s.chars().all(plain) && !YAML_WORDS.contains(&s.to_ascii_lowercase().as_str()) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                out.push_str(&format!("\\u{:04X}", u32::from(c)))
            }
            c if u32::from(c) < 0xa0 => out.push_str(&format!("\\x{:02X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    Cow::Owned(out)
}

/// JavaScript (the PM2 ecosystem file): always a double-quoted string literal.
/// `"`, `\`, every control character and U+2028/U+2029 (line terminators in
/// JavaScript before ES2019) are escaped, so the literal is one line and can
/// also stand in a `//` comment. Never refuses.
pub fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// LXC: a value is the rest of its `key = value` line, trimmed, with no
/// quoting or escape at all. So a control character (a line break would start
/// a new key) and leading or trailing whitespace (silently trimmed) are
/// refused; everything else is written as it is.
pub fn lxc(s: &str) -> Result<&str, Unquotable> {
    if let Some(bad) = first_bad(s, |c| !c.is_control()) {
        return Err(refuse(
            Lang::Lxc,
            format!("{bad} (a config line ends at a line break)"),
        ));
    }
    if s.trim() != s {
        return Err(refuse(
            Lang::Lxc,
            "leading or trailing whitespace (LXC trims it)",
        ));
    }
    Ok(s)
}

/// nftables: a double-quoted string. nft has no escape inside quotes, so only
/// `[A-Za-z0-9_.:/ -]` is carried, plus one trailing `*` (an interface-name
/// wildcard); at most 128 bytes (the limit of a rule comment).
pub fn nft(s: &str) -> Result<String, Unquotable> {
    let body = s.strip_suffix('*').unwrap_or(s);
    let ok = |c: char| c.is_ascii_alphanumeric() || "_.:/ -".contains(c);
    if let Some(bad) = first_bad(body, ok) {
        return Err(refuse(
            Lang::Nft,
            format!("{bad} (nft strings have no escapes)"),
        ));
    }
    if s.is_empty() || s.len() > 128 {
        return Err(refuse(Lang::Nft, format!("{} bytes (1 to 128)", s.len())));
    }
    Ok(format!("\"{s}\""))
}

/// Proxmox: a value inside a property string (`net0: name=eth0,bridge=...`)
/// or a list parameter (`tags`, `nameserver`). Proxmox splits those on `,`,
/// `;`, `=` and whitespace without any quoting, so these, quotes, `\` and
/// control characters are refused; the value is otherwise written as it is.
pub fn pve(s: &str) -> Result<&str, Unquotable> {
    let ok = |c: char| !c.is_control() && !c.is_whitespace() && !",;=\"'\\".contains(c);
    if let Some(bad) = first_bad(s, ok) {
        return Err(refuse(
            Lang::Pve,
            format!("{bad} (Proxmox splits property strings and lists on it)"),
        ));
    }
    if s.is_empty() {
        return Err(refuse(Lang::Pve, "an empty value"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values a hostile spec, image or environment could carry.
    const HOSTILE: [&str; 16] = [
        "a;b",
        "x; } server { listen 81; }",
        "/etc/ssl/c.pem;\n\tssl_certificate_key /etc/shadow",
        "$request_uri",
        "${x}",
        "a\"b",
        "a\\",
        "#comment",
        "! comment",
        "a\nb",
        "a\rb",
        "a\0b",
        "\u{2028}",
        "é\u{85}",
        " lead",
        "trail ",
    ];

    #[test]
    fn safe_values_stay_bare() {
        for v in [
            "nginx1",
            "192.168.30.101:3000",
            "/etc/haimg/tls/cert.pem",
            "mein_limit",
        ] {
            assert_eq!(nginx(v).unwrap(), v);
            assert_eq!(keepalived(v).unwrap(), v);
            assert_eq!(
                yaml(v),
                if v.contains(':') {
                    format!("\"{v}\"")
                } else {
                    v.to_string()
                }
            );
            assert_eq!(lxc(v).unwrap(), v);
            assert_eq!(pve(v).unwrap(), v);
        }
        assert_eq!(yaml("192.168.30.103,127.0.0.1"), "192.168.30.103,127.0.0.1");
        assert_eq!(yaml("0.25"), "0.25");
        assert_eq!(js("webapp"), "\"webapp\"");
        assert_eq!(nft("h76b23dv*").unwrap(), "\"h76b23dv*\"");
    }

    #[test]
    fn hostile_values() {
        let mut out = String::new();
        for v in HOSTILE {
            let show = |r: Result<String, Unquotable>| match r {
                Ok(s) => s,
                Err(e) => format!("refused: {}", e.what),
            };
            out += &format!("{v:?}\n");
            out += &format!("  nginx      {}\n", show(nginx(v).map(Cow::into_owned)));
            out += &format!(
                "  keepalived {}\n",
                show(keepalived(v).map(Cow::into_owned))
            );
            out += &format!("  yaml       {}\n", yaml(v));
            out += &format!("  js         {}\n", js(v));
            out += &format!("  lxc        {}\n", show(lxc(v).map(str::to_string)));
            out += &format!("  nft        {}\n", show(nft(v)));
            out += &format!("  pve        {}\n", show(pve(v).map(str::to_string)));
        }
        insta::assert_snapshot!(out);
    }

    #[test]
    fn yaml_words_and_indicators_are_quoted() {
        for v in [
            "yes", "No", "ON", "null", "~", "", "-1", ".5", "*a", "&a", "!t", "a: b", "a #b",
        ] {
            assert!(yaml(v).starts_with('"'), "{v}");
        }
    }

    #[test]
    fn refusals_never_echo_the_value() {
        let e = nginx("hunter2$secret").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = keepalived("pass#word").unwrap_err();
        assert!(!e.to_string().contains("pass"), "{e}");
    }

    /// What an nginx reader makes of one quoted or bare token, as
    /// `ngx_conf_read_token` does: inside quotes `\"`, `\'`, `\\`, `\t`, `\r`
    /// and `\n` are escapes and any other `\` stays; a bare word ends at a
    /// space, `;`, `{`, `}` or a quote, and `#` starts a comment.
    fn nginx_read_token(t: &str) -> Option<String> {
        let mut chars = t.chars();
        match chars.next()? {
            '"' => {
                let mut out = String::new();
                let mut esc = false;
                let mut closed = false;
                for c in chars.by_ref() {
                    if closed {
                        return None; // text after the closing quote
                    }
                    match (esc, c) {
                        (true, c) => {
                            match c {
                                't' => out.push('\t'),
                                'r' => out.push('\r'),
                                'n' => out.push('\n'),
                                '"' | '\'' | '\\' => out.push(c),
                                c => {
                                    out.push('\\');
                                    out.push(c);
                                }
                            }
                            esc = false;
                        }
                        (false, '\\') => esc = true,
                        (false, '"') => closed = true,
                        (false, c) => out.push(c),
                    }
                }
                closed.then_some(out)
            }
            _ => (!t.contains([' ', '\t', ';', '{', '}', '"', '\'', '#', '\n']))
                .then(|| t.to_string()),
        }
    }

    fn yaml_read_double_quoted(t: &str) -> Option<String> {
        let inner = t.strip_prefix('"')?.strip_suffix('"')?;
        let mut out = String::new();
        let mut it = inner.chars();
        while let Some(c) = it.next() {
            if c != '\\' {
                if c == '"' || c.is_control() {
                    return None;
                }
                out.push(c);
                continue;
            }
            let hex = |n: usize, it: &mut std::str::Chars| -> Option<char> {
                let h: String = it.by_ref().take(n).collect();
                char::from_u32(u32::from_str_radix(&h, 16).ok()?)
            };
            match it.next()? {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                'x' => out.push(hex(2, &mut it)?),
                'u' => out.push(hex(4, &mut it)?),
                _ => return None,
            }
        }
        Some(out)
    }

    proptest! {
        /// Whatever nginx() returns reads back as exactly one token equal to the value.
        #[test]
        fn nginx_round_trips(s in "\\PC{0,40}|[ -~]{0,40}") {
            if let Ok(q) = nginx(&s) {
                prop_assert!(!q.contains(['\n', '\r', '$']));
                prop_assert_eq!(nginx_read_token(&q), Some(s.clone()));
            }
        }

        #[test]
        fn yaml_round_trips(s in "\\PC{0,40}|[\\x00-\\x7f]{0,40}|\\u{2028}|\\u{85}") {
            let q = yaml(&s);
            const BREAKS: [char; 5] = ['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'];
            prop_assert!(!q.contains(BREAKS), "a line break in {}", q);
            if q.starts_with('"') {
                prop_assert_eq!(yaml_read_double_quoted(&q), Some(s.clone()));
            } else {
                prop_assert_eq!(q.as_ref(), s.as_str());
            }
        }

        /// A JavaScript string literal is a JSON string (plus the two escapes JSON allows anyway).
        #[test]
        fn js_is_json(s in "\\PC{0,40}|[\\x00-\\x7f]{0,40}|\\u{2028}") {
            let q = js(&s);
            const BREAKS: [char; 4] = ['\n', '\r', '\u{2028}', '\u{2029}'];
            prop_assert!(!q.contains(BREAKS), "a line break in {}", q);
            let back: String = serde_json::from_str(&q).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn keepalived_lxc_nft_pve_output_is_one_safe_token(s in "\\PC{0,40}|[\\x00-\\x7f]{0,40}") {
            if let Ok(q) = keepalived(&s) {
                prop_assert!(!q.contains(['#', '!', '$', '\n', '\\']));
                prop_assert_eq!(q.trim_matches('"'), s.as_str());
            }
            if let Ok(q) = lxc(&s) {
                prop_assert!(!q.contains(['\n', '\r']));
            }
            if let Ok(q) = nft(&s) {
                prop_assert!(!q[1..q.len() - 1].contains(['"', '\\', '\n', ';']));
            }
            if let Ok(q) = pve(&s) {
                prop_assert!(!q.contains([',', ';', '=', ' ', '\n', '\0']));
            }
        }
    }
}
