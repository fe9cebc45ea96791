//! Host-visible names of one local cluster: bridge, client namespace, veths, containers.
//!
//! Every name derives from an *instance id*: the first 8 hex digits of the
//! sha256 of the cluster's state directory path. Two clusters (or two test
//! runs) with different state directories never share a name, and `haimg down`
//! can find every object again from the state directory alone, even when the
//! state file is gone. Invariants: interface names are at most 15 bytes
//! (`IFNAMSIZ - 1`); the same state directory always yields the same names.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Linux interface names are at most this long.
pub const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub cluster: String,
    /// 8 lowercase hex digits.
    pub instance: String,
}

impl Names {
    pub fn new(cluster: &str, state_dir: &Path) -> Names {
        let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
        Names {
            cluster: cluster.to_string(),
            instance: hex(&digest[..4]),
        }
    }

    /// The cluster's bridge in the host namespace (no address on it).
    pub fn bridge(&self) -> String {
        format!("hmb{}", self.instance)
    }

    /// The host end of the client namespace's veth (a bridge port).
    pub fn client_veth(&self) -> String {
        format!("hmc{}", self.instance)
    }

    /// The client network namespace, holding the gateway address.
    pub fn netns(&self) -> String {
        format!("haimg-{}-{}", self.cluster, self.instance)
    }

    /// The LXC container name of a CT (unique on the host: it names cgroups).
    pub fn container(&self, vmid: u32) -> String {
        format!("{}-{}-{}", self.cluster, self.instance, vmid)
    }

    /// The host end of a CT's veth, like Proxmox's `veth<vmid>i0` but unique
    /// per cluster: `h` + 3..6 hex digits of the instance + `v` + VMID. A u32
    /// has at most 10 digits, so at least 3 hex digits always fit.
    pub fn ct_veth(&self, vmid: u32) -> String {
        let digits = vmid.to_string();
        let n = (IFNAME_MAX - 2 - digits.len()).min(6);
        format!("h{}v{}", &self.instance[..n], digits)
    }

    /// The prefix every CT veth of this cluster starts with: what an nftables
    /// rule matching "frames to a member" (`oifname "<prefix>*"`) needs. Only
    /// VMIDs up to 9,999,999 get all 6 hex digits; the spec refuses larger
    /// VMIDs, green ones included ([`haimg_model::spec::MAX_VMID`]), and the
    /// backend refuses to create one, so every CT veth carries this prefix.
    pub fn ct_veth_prefix(&self) -> String {
        format!("h{}v", &self.instance[..6])
    }

    /// Does `ifname` look like one of this cluster's CT veths?
    pub fn is_ct_veth(&self, ifname: &str) -> bool {
        (3..=6).any(|n| {
            ifname
                .strip_prefix(&format!("h{}v", &self.instance[..n]))
                .is_some_and(|rest| {
                    !rest.is_empty()
                        && rest.bytes().all(|b| b.is_ascii_digit())
                        && rest.len() + 2 + n <= IFNAME_MAX
                        && rest.parse().is_ok_and(|v: u32| self.ct_veth(v) == ifname)
                })
        })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_short_and_distinct() {
        let a = Names::new("haimg", Path::new("/var/lib/haimg/haimg"));
        let b = Names::new("haimg", Path::new("/tmp/other/haimg"));
        assert_eq!(a, Names::new("haimg", Path::new("/var/lib/haimg/haimg")));
        assert_ne!(a.instance, b.instance);
        assert_ne!(a.bridge(), b.bridge());
        for n in [a.bridge(), a.client_veth(), a.ct_veth(100)] {
            assert!(n.len() <= IFNAME_MAX, "{n}");
        }
        insta::assert_snapshot!(
            format!(
                "{}\n{}\n{}\n{}\n{}\n{}",
                a.bridge(),
                a.client_veth(),
                a.netns(),
                a.container(100),
                a.ct_veth(100),
                a.ct_veth(1_000_108)
            ),
            @r"
        hmb76b23d55
        hmc76b23d55
        haimg-haimg-76b23d55
        haimg-76b23d55-100
        h76b23dv100
        h76b23dv1000108
        "
        );
    }

    /// Names and policy agree over the whole range the spec allows: every VMID
    /// from 100 to MAX_VMID (green ones are in that range too) gets a veth
    /// that the policy's prefix matches and no other cluster's does.
    #[test]
    fn every_allowed_vmid_is_inside_the_policy_prefix() {
        let max = u32::try_from(haimg_model::spec::MAX_VMID).unwrap();
        let a = Names::new("c", Path::new("/x"));
        let b = Names::new("c", Path::new("/y"));
        let check = |v: u32| {
            let n = a.ct_veth(v);
            assert!(n.len() <= IFNAME_MAX, "{v}: {n}");
            assert!(n.starts_with(&a.ct_veth_prefix()), "{v}: {n}");
            assert!(!n.starts_with(&b.ct_veth_prefix()), "{v}: {n}");
            assert!(a.is_ct_veth(&n), "{v}: {n}");
        };
        for v in [
            100,
            999,
            1_000,
            9_999,
            99_999,
            999_999,
            1_000_000,
            max - 1,
            max,
        ] {
            check(v);
        }
        // Every number of digits, spread over the range.
        let mut v: u64 = 100;
        while v <= u64::from(max) {
            check(v as u32);
            v = v * 7 / 5 + 13;
        }
        // Just past the range the prefix no longer fits: why the range ends there.
        assert!(!a.ct_veth(max + 1).starts_with(&a.ct_veth_prefix()));
    }

    #[test]
    fn long_vmids_shorten_the_prefix() {
        let a = Names::new("c", Path::new("/x"));
        assert_eq!(a.ct_veth(999_999_999).len(), 15);
        assert_eq!(a.ct_veth(u32::MAX).len(), 15);
        assert_eq!(a.ct_veth(u32::MAX)[1..4], a.instance[..3]);
        assert!(a.is_ct_veth(&a.ct_veth(999_999_999)));
        assert!(a.is_ct_veth(&a.ct_veth(u32::MAX)));
        assert!(a.is_ct_veth(&a.ct_veth(100)));
        assert!(!a.is_ct_veth(&a.bridge()));
        assert!(!a.is_ct_veth("eth0"));
        let b = Names::new("c", Path::new("/y"));
        assert!(!b.is_ct_veth(&a.ct_veth(100)));
        assert!(a.ct_veth(100).starts_with(&a.ct_veth_prefix()));
        assert!(a.ct_veth(9_999_999).starts_with(&a.ct_veth_prefix()));
        assert!(!a.client_veth().starts_with(&a.ct_veth_prefix()));
    }
}
