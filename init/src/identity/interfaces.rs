//! Parser for ifupdown's `/etc/network/interfaces`, as Proxmox writes it for
//! `ostype=debian`, and as a person might edit it.
//!
//! Identity needs one thing from this file: eth0's static IPv4 address. So
//! only the shape is parsed (`auto`/`allow-*` lines, `iface` stanzas with
//! their options, and the lines ifupdown lets stand alone: `source`,
//! `source-directory`, `mapping` blocks, kept but not followed), and anything
//! else — an option outside a stanza, an `iface` line that is cut short, an
//! unknown address family — is kept as a *stray* line, reported as a warning,
//! never an error: a typo next to eth0 must not stop a container whose
//! hostname and address agree. [`Interfaces::static_v4`] then reads one
//! interface's address (CIDR or `address` + `netmask`), the only values that
//! can make it fail, and its gateway (a bad one is a warning: the network
//! comes from the plan). Invariants: no input panics (proptests and a fuzz
//! target feed arbitrary text), every problem names its line, and files larger
//! than [`MAX_BYTES`] are refused rather than read.

use std::net::Ipv4Addr;

use haimg_model::Ipv4Net;

/// Largest interfaces file the init reads; Proxmox writes a few hundred bytes.
pub const MAX_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfacesError {
    #[error("the file is {size} bytes; at most {MAX_BYTES} are read")]
    TooLarge { size: usize },
    #[error("line {line}: {value:?} is not an IPv4 {what}")]
    BadValue {
        line: usize,
        value: String,
        what: &'static str,
    },
    #[error("line {line}: {iface} has an address without a prefix length or netmask")]
    NoPrefix { line: usize, iface: String },
}

/// A line the parser could not place, and why; reported, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stray {
    #[error("line {line}: `{keyword}` needs {what}; ignored")]
    Incomplete {
        line: usize,
        keyword: String,
        what: &'static str,
    },
    #[error("line {line}: option `{option}` is outside an iface stanza; ignored")]
    OrphanOption { line: usize, option: String },
    #[error("line {line}: address family {family:?} is not inet, inet6, can or ipx; ignored")]
    Family { line: usize, family: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Inet6,
    /// `can`, `ipx`: legal for ifupdown, irrelevant here.
    Other,
}

/// One `iface NAME FAMILY METHOD` stanza and its options, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    pub name: String,
    pub family: Family,
    pub method: String,
    pub options: Vec<(String, String, usize)>,
    /// 1-based line of the `iface` keyword.
    pub line: usize,
}

impl Stanza {
    fn option(&self, key: &str) -> Option<(&str, usize)> {
        self.options
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, l)| (v.as_str(), *l))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interfaces {
    /// Interfaces named on `auto` or `allow-*` lines.
    pub auto: Vec<String>,
    pub stanzas: Vec<Stanza>,
    /// `source`/`source-directory` targets; recorded, never followed (Proxmox does not write them).
    pub sources: Vec<String>,
    /// Lines that fit nowhere, in file order.
    pub stray: Vec<Stray>,
}

/// The static IPv4 configuration of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticV4 {
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// A gateway line that is not an address (the gateway is then `None`).
    pub bad_gateway: Option<InterfacesError>,
}

enum Block {
    None,
    Iface,
    Mapping,
}

/// Parse the text of an interfaces file. Only a file over [`MAX_BYTES`] is an
/// error; lines that fit nowhere end up in [`Interfaces::stray`].
pub fn parse(text: &str) -> Result<Interfaces, InterfacesError> {
    if text.len() > MAX_BYTES {
        return Err(InterfacesError::TooLarge { size: text.len() });
    }
    let mut out = Interfaces::default();
    let mut block = Block::None;
    for (line_no, line) in logical_lines(text) {
        let mut words = line.split_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        let incomplete = |what| Stray::Incomplete {
            line: line_no,
            keyword: keyword.to_string(),
            what,
        };
        match keyword {
            "auto" => {
                block = Block::None;
                out.auto.extend(rest.iter().map(|s| s.to_string()));
            }
            k if k.starts_with("allow-") => {
                block = Block::None;
                out.auto.extend(rest.iter().map(|s| s.to_string()));
            }
            "iface" => {
                let [name, family, method, ..] = rest[..] else {
                    out.stray
                        .push(incomplete("a name, an address family and a method"));
                    // Its options belong to no stanza we know of.
                    block = Block::Mapping;
                    continue;
                };
                let family = match family {
                    "inet" => Family::Inet,
                    "inet6" => Family::Inet6,
                    "can" | "ipx" => Family::Other,
                    other => {
                        out.stray.push(Stray::Family {
                            line: line_no,
                            family: other.to_string(),
                        });
                        block = Block::Mapping;
                        continue;
                    }
                };
                out.stanzas.push(Stanza {
                    name: name.to_string(),
                    family,
                    method: method.to_string(),
                    options: Vec::new(),
                    line: line_no,
                });
                block = Block::Iface;
            }
            "mapping" => {
                if rest.is_empty() {
                    out.stray.push(incomplete("an interface pattern"));
                }
                block = Block::Mapping;
            }
            "source" | "source-directory" => {
                block = Block::None;
                if rest.is_empty() {
                    out.stray.push(incomplete("a path"));
                } else {
                    out.sources.push(rest.join(" "));
                }
            }
            option => match block {
                Block::Iface => {
                    // Invariant: Block::Iface is only set right after a push.
                    if let Some(stanza) = out.stanzas.last_mut() {
                        stanza
                            .options
                            .push((option.to_string(), rest.join(" "), line_no));
                    }
                }
                Block::Mapping => {}
                Block::None => out.stray.push(Stray::OrphanOption {
                    line: line_no,
                    option: option.to_string(),
                }),
            },
        }
    }
    Ok(out)
}

/// Lines without comments, with `\` continuations joined, numbered from 1 by
/// the line they start on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if pending.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if let Some(head) = trimmed.strip_suffix('\\') {
            acc.push_str(head);
            acc.push(' ');
            pending = Some((start, acc));
        } else {
            acc.push_str(trimmed);
            out.push((start, acc));
        }
    }
    if let Some(p) = pending {
        out.push(p);
    }
    out
}

impl Interfaces {
    /// The `inet static` stanza of `name`, if any.
    pub fn stanza_v4(&self, name: &str) -> Option<&Stanza> {
        self.stanzas
            .iter()
            .find(|s| s.name == name && s.family == Family::Inet)
    }

    /// IPv4 address and gateway of `name` when it is configured `inet static`.
    pub fn static_v4(&self, name: &str) -> Result<Option<StaticV4>, InterfacesError> {
        let Some(s) = self.stanza_v4(name) else {
            return Ok(None);
        };
        if s.method != "static" {
            return Ok(None);
        }
        let Some((addr, addr_line)) = s.option("address") else {
            return Ok(None);
        };
        let bad = |value: &str, line, what| InterfacesError::BadValue {
            line,
            value: value.to_string(),
            what,
        };
        let address = if addr.contains('/') {
            Ipv4Net::parse(addr).ok_or_else(|| bad(addr, addr_line, "address in CIDR form"))?
        } else {
            let ip: Ipv4Addr = addr.parse().map_err(|_| bad(addr, addr_line, "address"))?;
            let (mask, mask_line) = s.option("netmask").ok_or(InterfacesError::NoPrefix {
                line: addr_line,
                iface: name.to_string(),
            })?;
            let prefix = netmask_prefix(mask).ok_or_else(|| bad(mask, mask_line, "netmask"))?;
            Ipv4Net { addr: ip, prefix }
        };
        let (gateway, bad_gateway) = match s.option("gateway") {
            Some((g, l)) => match g.parse() {
                Ok(ip) => (Some(ip), None),
                Err(_) => (None, Some(bad(g, l, "gateway"))),
            },
            None => (None, None),
        };
        Ok(Some(StaticV4 {
            address,
            gateway,
            bad_gateway,
        }))
    }
}

/// `255.255.255.0` → 24, or a bare prefix length (`24`); `None` for a non-contiguous mask.
fn netmask_prefix(s: &str) -> Option<u8> {
    if let Ok(p) = s.parse::<u8>() {
        return (p <= 32).then_some(p);
    }
    let m = u32::from(s.parse::<Ipv4Addr>().ok()?);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Exactly what Proxmox writes for a Debian ≥ 10 template.
    const PVE: &str = "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n\taddress 192.168.30.100/24\n\tgateway 192.168.30.1\n\n";

    #[test]
    fn proxmox_debian_file() {
        let i = parse(PVE).unwrap();
        assert_eq!(i.auto, ["lo", "eth0"]);
        let s = i.static_v4("eth0").unwrap().unwrap();
        assert_eq!(s.address, Ipv4Net::parse("192.168.30.100/24").unwrap());
        assert_eq!(s.gateway, Some(Ipv4Addr::new(192, 168, 30, 1)));
        assert_eq!(i.static_v4("lo").unwrap(), None);
        assert_eq!(i.static_v4("eth1").unwrap(), None);
    }

    #[test]
    fn old_style_netmask_and_continuations() {
        let t = "iface eth0 inet static\n  address 10.0.0.5\n  netmask \\\n    255.255.0.0\n  # comment\n  gateway 10.0.0.1\n";
        let s = parse(t).unwrap().static_v4("eth0").unwrap().unwrap();
        assert_eq!(s.address.to_string(), "10.0.0.5/16");
    }

    #[test]
    fn pve_unreachable_gateway_markers() {
        let t = "auto eth0\niface eth0 inet static\n\taddress 192.168.30.100/24\n# --- BEGIN PVE ---\n\tpost-up ip route add 10.1.1.1 dev eth0\n\tpost-up ip route add default via 10.1.1.1 dev eth0\n# --- END PVE ---\n";
        let i = parse(t).unwrap();
        let s = i.static_v4("eth0").unwrap().unwrap();
        assert_eq!(s.gateway, None);
        assert_eq!(i.stanzas[0].options.len(), 3);
    }

    #[test]
    fn stray_lines_are_kept_not_fatal() {
        let cases = [
            (
                "address 1.2.3.4/24\n",
                "line 1: option `address` is outside an iface stanza; ignored",
            ),
            (
                "auto eth0\niface eth0\n address 1.2.3.4/24\n",
                "line 2: `iface` needs a name, an address family and a method; ignored",
            ),
            (
                "iface eth0 inet4 static\n address 1.2.3.4/24\n",
                "line 1: address family \"inet4\" is not inet, inet6, can or ipx; ignored",
            ),
            ("source\n", "line 1: `source` needs a path; ignored"),
        ];
        for (text, want) in cases {
            let i = parse(text).unwrap();
            assert_eq!(i.stray.len(), 1, "{text}");
            assert_eq!(i.stray[0].to_string(), want);
            // The options of a broken stanza are not taken for eth0's.
            assert_eq!(i.static_v4("eth0").unwrap(), None, "{text}");
        }
        // A stray line beside a good eth0 stanza changes nothing about eth0.
        let t = format!("dns-nameservers 1.1.1.1\niface eth1 inet4 static\n{PVE}");
        let i = parse(&t).unwrap();
        assert_eq!(i.stray.len(), 2);
        let s = i.static_v4("eth0").unwrap().unwrap();
        assert_eq!(s.address.to_string(), "192.168.30.100/24");
    }

    #[test]
    fn errors_name_the_line() {
        let bad = [
            (
                "iface eth0 inet static\n address 300.1.1.1/24\n",
                "line 2: \"300.1.1.1/24\" is not an IPv4 address in CIDR form",
            ),
            (
                "iface eth0 inet static\n address 1.1.1.1\n",
                "line 2: eth0 has an address without a prefix length or netmask",
            ),
            (
                "iface eth0 inet static\n address 1.1.1.1\n netmask 255.0.255.0\n",
                "line 3: \"255.0.255.0\" is not an IPv4 netmask",
            ),
        ];
        for (text, want) in bad {
            let i = parse(text).unwrap();
            assert_eq!(i.static_v4("eth0").unwrap_err().to_string(), want);
        }
        // A bad gateway leaves the address usable.
        let i = parse("iface eth0 inet static\n address 1.1.1.1/8\n gateway gw\n").unwrap();
        let s = i.static_v4("eth0").unwrap().unwrap();
        assert_eq!(
            (s.address.to_string(), s.gateway),
            ("1.1.1.1/8".to_string(), None)
        );
        assert_eq!(
            s.bad_gateway.unwrap().to_string(),
            "line 3: \"gw\" is not an IPv4 gateway"
        );
        let big = "#".repeat(MAX_BYTES + 1);
        assert!(matches!(parse(&big), Err(InterfacesError::TooLarge { .. })));
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask_prefix("255.255.255.0"), Some(24));
        assert_eq!(netmask_prefix("0.0.0.0"), Some(0));
        assert_eq!(netmask_prefix("255.255.255.255"), Some(32));
        assert_eq!(netmask_prefix("255.255.255.1"), None);
        assert_eq!(netmask_prefix("33"), None);
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            if let Ok(i) = parse(&text) {
                let _ = i.static_v4("eth0");
            }
        }

        #[test]
        fn never_panics_on_line_soup(lines in proptest::collection::vec(
            prop_oneof![
                Just("auto eth0".to_string()),
                Just("iface eth0 inet static".to_string()),
                Just("iface eth0 inet dhcp".to_string()),
                Just("mapping eth*".to_string()),
                Just("\\".to_string()),
                "[ \t]*(address|netmask|gateway) [0-9./]{0,20}",
                "[ -~]{0,30}",
            ], 0..12)) {
            let text = lines.join("\n");
            if let Ok(i) = parse(&text) {
                let _ = i.static_v4("eth0");
            }
        }

        #[test]
        fn round_trips_a_static_stanza(a in any::<u32>(), prefix in 0u8..=32, g in any::<u32>(), tab in any::<bool>()) {
            let ind = if tab { "\t" } else { "    " };
            let addr = Ipv4Addr::from(a);
            let gw = Ipv4Addr::from(g);
            let text = format!("auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n{ind}address {addr}/{prefix}\n{ind}gateway {gw}\n");
            let s = parse(&text).unwrap().static_v4("eth0").unwrap().unwrap();
            prop_assert_eq!(s.address, Ipv4Net { addr, prefix });
            prop_assert_eq!(s.gateway, Some(gw));
        }
    }
}
