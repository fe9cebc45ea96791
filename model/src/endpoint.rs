//! `proxmox.endpoint`: an `https` URL with a host and an optional port, nothing else.
//!
//! The endpoint decides where the API token is sent, so it is parsed as a
//! URL (RFC 3986 authority) and everything a URL could carry besides the host
//! and port is refused: user information (`https://pve1@attacker:8006` sends
//! to `attacker`; `https://user:pw@host` would print and send the password), a
//! query, a fragment, a path other than `/`, a port outside 1-65535. Where
//! URL parsers disagree (WHATWG's `\` as `/`, stripped tabs, `127.1` or
//! `0x7f.1` read as IPv4, percent-encoded or non-ASCII hosts) the endpoint is
//! refused too, so the host haimg prints is the host the HTTP client dials.
//! Errors describe the problem and never repeat the value (it may hold a
//! password).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A parsed endpoint; `Display` gives its canonical form `https://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Lowercase DNS name, dotted IPv4, or `[IPv6]`.
    pub host: String,
    pub port: Option<u16>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("the endpoint must start with https://")]
    Scheme,
    #[error("the endpoint carries user information (`…@`); haimg would send the API token to the host after the `@`, and never sends or prints a user or password")]
    UserInfo,
    #[error("the endpoint has a query (`?…`)")]
    Query,
    #[error("the endpoint has a fragment (`#…`)")]
    Fragment,
    #[error("the endpoint has a path; haimg adds /api2/json itself")]
    Path,
    #[error("the endpoint has no host")]
    NoHost,
    #[error("the endpoint's host is not a DNS name, an IPv4 address or a bracketed IPv6 address")]
    Host,
    #[error("the endpoint's port is not a number from 1 to 65535")]
    Port,
    #[error(
        "the endpoint contains whitespace, a control character, `\\`, `%` or a non-ASCII character"
    )]
    Character,
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint, EndpointError> {
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii() || c == '\\' || c == '%')
        {
            return Err(EndpointError::Character);
        }
        let scheme_end = s.find("://").ok_or(EndpointError::Scheme)?;
        if !s[..scheme_end].eq_ignore_ascii_case("https") {
            return Err(EndpointError::Scheme);
        }
        let rest = &s[scheme_end + 3..];
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(auth_end);
        if authority.contains('@') {
            return Err(EndpointError::UserInfo);
        }
        if tail.contains('#') {
            return Err(EndpointError::Fragment);
        }
        if tail.contains('?') {
            return Err(EndpointError::Query);
        }
        if !(tail.is_empty() || tail == "/") {
            return Err(EndpointError::Path);
        }
        let (host, port) = split_host_port(authority)?;
        Ok(Endpoint {
            host: parse_host(host)?,
            port,
        })
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), EndpointError> {
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or(EndpointError::Host)?;
        let after = &authority[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(EndpointError::Host),
        };
        (&authority[..=close], port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => {
            let ok = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
            let n: u32 = if ok {
                p.parse().map_err(|_| EndpointError::Port)?
            } else {
                0
            };
            if !(1..=65535).contains(&n) {
                return Err(EndpointError::Port);
            }
            Some(n as u16)
        }
    };
    if host.is_empty() {
        return Err(EndpointError::NoHost);
    }
    Ok((host, port))
}

fn parse_host(host: &str) -> Result<String, EndpointError> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = inner.parse().map_err(|_| EndpointError::Host)?;
        return Ok(format!("[{ip}]"));
    }
    let host = host.to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let last = labels.last().copied().unwrap_or("");
    // WHATWG reads a host whose last label is a number as IPv4 (`127.1`,
    // `0x7f.1`, `2130706433`): only the plain dotted quad is accepted.
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit())));
    if numeric {
        let ip: Ipv4Addr = host.parse().map_err(|_| EndpointError::Host)?;
        return Ok(ip.to_string());
    }
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.len() > 253 || !labels.iter().all(label_ok) {
        return Err(EndpointError::Host);
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepted() {
        for (s, want) in [
            ("https://pve1:8006", "https://pve1:8006"),
            (
                "https://PVE1.Corp.example:8006/",
                "https://pve1.corp.example:8006",
            ),
            ("HTTPS://10.0.0.5:8006", "https://10.0.0.5:8006"),
            ("https://[fd00::1]:8006", "https://[fd00::1]:8006"),
            ("https://pve1", "https://pve1"),
        ] {
            assert_eq!(Endpoint::parse(s).unwrap().to_string(), want, "{s}");
        }
    }

    #[test]
    fn refused() {
        use EndpointError::*;
        for (s, want) in [
            ("https://pve1.corp@attacker:8006", UserInfo),
            ("https://user:pass@host:8006", UserInfo),
            ("https://host:8006/?x=1", Query),
            ("https://host:8006#frag", Fragment),
            ("https://host:8006/api2/json", Path),
            ("https://host:99999", Port),
            ("https://host:0", Port),
            ("https://host:", Port),
            ("https://host:+80", Port),
            ("https://host:8006:1", Port),
            ("http://host:8006", Scheme),
            ("host:8006", Scheme),
            ("https://:8006", NoHost),
            ("https://", NoHost),
            ("https://127.1:8006", Host),
            ("https://0x7f.1", Host),
            ("https://2130706433", Host),
            ("https://host_name", Host),
            ("https://[fd00::1%eth0]", Character),
            ("https://[fd00::zz]", Host),
            ("https://host\\@evil", Character),
            ("https://ho\tst", Character),
            ("https://hôst", Character),
            ("https://h%6fst", Character),
        ] {
            assert_eq!(Endpoint::parse(s), Err(want), "{s}");
        }
    }

    proptest! {
        /// Whatever this parser accepts, a WHATWG URL parser (the one reqwest
        /// uses) reads as the same host and port, with no user, password,
        /// query or fragment and the path `/`.
        #[test]
        fn agrees_with_the_http_client(s in prop_oneof![
            "[hH][tT]{2}[pP][sS]?://[a-zA-Z0-9.:@\\[\\]%_-]{0,24}[/?#]?[a-z0-9/]{0,4}",
            "https://[a-z0-9]{1,5}(\\.[a-z0-9]{1,5}){0,3}(:[0-9]{1,6})?/?",
            "https://[0-9]{1,4}(\\.[0-9x]{1,4}){0,4}(:[0-9]{1,5})?",
            "\\PC{0,30}",
        ]) {
            if let Ok(ep) = Endpoint::parse(&s) {
                let u = url::Url::parse(&s).expect("the HTTP client parses it too");
                prop_assert_eq!(u.scheme(), "https");
                prop_assert_eq!(u.username(), "");
                prop_assert_eq!(u.password(), None);
                prop_assert_eq!(u.query(), None);
                prop_assert_eq!(u.fragment(), None);
                prop_assert_eq!(u.path(), "/");
                prop_assert_eq!(u.host_str(), Some(ep.host.as_str()));
                prop_assert_eq!(u.port(), ep.port.filter(|p| *p != 443));
            }
        }
    }
}
