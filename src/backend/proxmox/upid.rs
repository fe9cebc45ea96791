//! Proxmox task ids (UPIDs).
//!
//! `UPID:<node>:<pid 8 hex>:<pstart 8-9 hex>:<starttime 8 hex>:<type>:<id>:<user>:`
//! (`pve-common:src/PVE/UPID.pm`). The trailing colon matters: split on `:` the
//! string has exactly nine fields and the last is empty. `id` may be empty
//! (`imgcopy`) and may hold `-`, `>` and `@`. The node field says where to poll.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    raw: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: u32,
    /// Task type, e.g. `vzcreate`, `imgcopy`.
    pub kind: String,
    pub id: String,
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed task id {raw:?}: {reason}")]
pub struct UpidError {
    pub raw: String,
    pub reason: &'static str,
}

fn is_hex(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_node(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn is_field(s: &str, allow_empty: bool) -> bool {
    (allow_empty || !s.is_empty()) && !s.chars().any(|c| c == '/' || c.is_whitespace())
}

impl Upid {
    pub fn parse(s: &str) -> Result<Upid, UpidError> {
        let err = |reason| UpidError {
            raw: s.to_string(),
            reason,
        };
        let f: Vec<&str> = s.split(':').collect();
        if f.len() != 9 {
            return Err(err("expected 9 ':'-separated fields ending in ':'"));
        }
        if f[0] != "UPID" {
            return Err(err("does not start with UPID:"));
        }
        if !f[8].is_empty() {
            return Err(err("missing trailing ':'"));
        }
        if !is_node(f[1]) {
            return Err(err("bad node name"));
        }
        if !is_hex(f[2], 8, 8) || !is_hex(f[3], 8, 9) || !is_hex(f[4], 8, 8) {
            return Err(err(
                "pid, pstart and starttime must be 8 (pstart 8-9) hex digits",
            ));
        }
        if !is_field(f[5], false) || !is_field(f[6], true) || !is_field(f[7], false) {
            return Err(err("bad type, id or user field"));
        }
        // Invariant: the hex checks above bound the lengths, so these parse.
        let hex32 = |x: &str| u32::from_str_radix(x, 16).unwrap_or_default();
        Ok(Upid {
            raw: s.to_string(),
            node: f[1].to_string(),
            pid: hex32(f[2]),
            pstart: u64::from_str_radix(f[3], 16).unwrap_or_default(),
            starttime: hex32(f[4]),
            kind: f[5].to_string(),
            id: f[6].to_string(),
            user: f[7].to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Build one, as the fake server and tests need (the same layout Perl's `encode` writes).
    pub fn encode(
        node: &str,
        pid: u32,
        pstart: u64,
        starttime: u32,
        kind: &str,
        id: &str,
        user: &str,
    ) -> String {
        format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{id}:{user}:")
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pve_common_examples() {
        let u = Upid::parse("UPID:example-node:0000C346:165A0CE4:68D7279C:aptupdate::root@pam:")
            .unwrap();
        assert_eq!(u.node, "example-node");
        assert_eq!(u.pid, 0xC346);
        assert_eq!(u.pstart, 0x165A0CE4);
        assert_eq!(u.starttime, 0x68D7279C);
        assert_eq!(u.kind, "aptupdate");
        assert_eq!(u.id, "");
        assert_eq!(u.user, "root@pam");

        let u = Upid::parse(
            "UPID:pve1:000934AF:10D015579:68BF3A41:move_volume:100-mp0>200-mp0:deploy@pve!haimg:",
        )
        .unwrap();
        assert_eq!(u.pstart, 0x10D015579);
        assert_eq!(u.id, "100-mp0>200-mp0");
        assert_eq!(u.user, "deploy@pve!haimg");
    }

    #[test]
    fn encode_round_trips() {
        let s = Upid::encode(
            "pve2",
            42,
            7,
            0x68000000,
            "vzcreate",
            "105",
            "root@pam!haimg",
        );
        assert_eq!(
            s,
            "UPID:pve2:0000002A:00000007:68000000:vzcreate:105:root@pam!haimg:"
        );
        assert_eq!(Upid::parse(&s).unwrap().as_str(), s);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "UPID:pve1:0000C346:165A0CE4:68D7279C:aptupdate::root@pam",
            "UPID:pve1:0000C346:165A0CE4:68D7279C:aptupdate:root@pam:",
            "XPID:pve1:0000C346:165A0CE4:68D7279C:aptupdate::root@pam:",
            "UPID:-pve1:0000C346:165A0CE4:68D7279C:aptupdate::root@pam:",
            "UPID:pve1:C346:165A0CE4:68D7279C:aptupdate::root@pam:",
            "UPID:pve1:0000C346:165A0CE4:68D7279C:::root@pam:",
            "UPID:pve1:0000C346:165A0CE4:68D7279C:vzcreate:1 0:root@pam:",
            "",
        ] {
            assert!(Upid::parse(bad).is_err(), "{bad}");
        }
        insta::assert_snapshot!(
            Upid::parse("UPID:pve1:1:2:3:x::u").unwrap_err().to_string(),
            @r#"malformed task id "UPID:pve1:1:2:3:x::u": expected 9 ':'-separated fields ending in ':'"#
        );
    }
}
