//! The golden scenarios' [`Testbed`] on the local LXC backend.
//!
//! A test run deploys the cluster into its own state directory (so it never
//! touches a `haimg deploy` demo cluster and two runs never collide), adds
//! client addresses from `10.99.<n>.0/24` to the cluster's client namespace
//! (members reply through the gateway there), and removes everything when the
//! [`LocalTestbed`] is dropped, also after a failure.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use haimg_model::{Cluster, Role};

use super::scenarios::Testbed;
use crate::backend::local::{LocalBackend, NetworkInfo};
use crate::backend::Backend;

/// Client subnets `10.99.1.0/24` .. `10.99.20.0/24`; `.1` and `.2` in each.
const CLIENT_SUBNETS: u8 = 20;

pub struct LocalTestbed {
    pub backend: LocalBackend,
    cluster: Cluster,
    roles: Vec<Role>,
    net: NetworkInfo,
    /// Remove the cluster on drop.
    pub teardown: bool,
}

impl LocalTestbed {
    /// Wrap a deployed local cluster; adds the client addresses.
    pub fn new(backend: LocalBackend, cluster: Cluster, roles: Vec<Role>) -> Result<LocalTestbed> {
        let net = backend
            .network()?
            .context("the local cluster has no network; was it deployed?")?;
        for n in 1..=CLIENT_SUBNETS {
            for host in [1, 2] {
                backend
                    .add_client_address(Ipv4Addr::new(10, 99, n, host))
                    .context("failed to add a client address")?;
            }
        }
        Ok(LocalTestbed {
            backend,
            cluster,
            roles,
            net,
            teardown: true,
        })
    }

    fn member(&self, slot: &str) -> Result<(String, u32)> {
        let m = self
            .cluster
            .member_by_slot(slot)
            .with_context(|| format!("no member {slot}"))?;
        Ok((m.node.clone(), m.vmid))
    }
}

impl Drop for LocalTestbed {
    fn drop(&mut self) {
        if self.teardown {
            if let Err(e) = self.backend.down() {
                eprintln!("error: failed to remove the test cluster: {e}");
            }
        }
    }
}

impl Testbed for LocalTestbed {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn client_netns(&self) -> Option<PathBuf> {
        Some(self.net.netns_path.clone())
    }

    fn client_source(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, n.clamp(1, CLIENT_SUBNETS), 1)
    }

    fn admin_source(&self) -> Ipv4Addr {
        self.net.gateway
    }

    fn kill(&self, slot: &str) -> Result<()> {
        let (node, vmid) = self.member(slot)?;
        Ok(self.backend.stop(&node, vmid)?)
    }

    fn halt(&self, slot: &str, timeout: Duration) -> Result<()> {
        let (node, vmid) = self.member(slot)?;
        Ok(self.backend.shutdown(&node, vmid, timeout)?)
    }

    fn start(&self, slot: &str) -> Result<()> {
        let (node, vmid) = self.member(slot)?;
        Ok(self.backend.start(&node, vmid)?)
    }

    fn exec(&self, slot: &str, argv: &[&str]) -> Result<String> {
        let (_, vmid) = self.member(slot)?;
        let out = self.backend.attach(vmid, argv, Duration::from_secs(30))?;
        anyhow::ensure!(
            out.success(),
            "`{}` in {slot} failed: {}",
            argv.join(" "),
            out.stderr.trim()
        );
        Ok(out.stdout)
    }

    fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}
