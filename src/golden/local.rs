//! The golden scenarios' [`Testbed`] on the local LXC backend.
//!
//! A test run deploys the cluster into its own state directory (so it never
//! touches a `haimg deploy` demo cluster and two runs never collide), adds
//! client addresses from `10.99.<n>.0/24` (one /24 per scenario client, see
//! `scenarios::SCENARIOS`) to the cluster's client namespace
//! (members reply through the gateway there), and removes everything when the
//! [`LocalTestbed`] is dropped, also after a failure. Deploys, rollouts and
//! rollbacks go through [`crate::orchestrate`], as `haimg deploy --yes` and
//! `haimg rollback --yes` do, with the health gates those commands use on a
//! local cluster.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use haimg_model::{Cluster, Role, TemplateName};

use super::scenarios::{self, NextBuild, Testbed};
use crate::backend::local::{LocalBackend, NetworkInfo};
use crate::backend::Backend;
use crate::fleet::members;
use crate::fleet::templates::{self, LocalTemplate};
use crate::orchestrate::{self, Request};
use crate::probe::Origin;
use crate::rollout::{self, Event, NetGate};
use crate::secrets::Secrets;

/// The first three octets of client subnet `n` are `10.99.n`.
const CLIENT_NET: [u8; 2] = [10, 99];

pub struct LocalTestbed {
    pub backend: LocalBackend,
    cluster: Cluster,
    roles: Vec<Role>,
    /// Known once the cluster is deployed ([`LocalTestbed::deploy`]).
    net: Option<NetworkInfo>,
    /// Remove the cluster on drop.
    pub teardown: bool,
    /// Templates of the next version, for the rollout scenarios.
    pub next_templates: Option<PathBuf>,
    /// The cluster as rolled out last (the next version after `rollout`).
    rolled: Mutex<Option<Cluster>>,
    /// The throw-away cluster's secrets: made here, kept in memory only,
    /// delivered to the members as `haimg deploy` delivers a store's.
    secrets: Secrets,
    /// The lb template as deployed, for containers outside the cluster.
    lb_template: Option<LocalTemplate>,
    /// A cluster `haimg deploy` made ([`LocalTestbed::attach`]): on drop only
    /// the client addresses added here are taken away again.
    attached: bool,
}

impl LocalTestbed {
    /// Own a local cluster from here on: whatever happens next, dropping the
    /// testbed removes it (unless `teardown` is switched off).
    pub fn new(backend: LocalBackend, cluster: Cluster, roles: Vec<Role>) -> LocalTestbed {
        LocalTestbed {
            backend,
            cluster,
            roles,
            net: None,
            teardown: true,
            next_templates: None,
            rolled: Mutex::new(None),
            secrets: Secrets::generate(),
            lb_template: None,
            attached: false,
        }
    }

    /// Run scenarios on a cluster `haimg deploy` made: nothing is deployed
    /// or removed; the roles are those with a running container, the secrets
    /// the cluster's store's, `templates` the build it was deployed from
    /// (for containers outside the cluster). Only harmless scenarios may run
    /// ([`scenarios::Scenario::harmless`]); the client addresses added for
    /// them are removed again on drop.
    pub fn attach(
        backend: LocalBackend,
        cluster: Cluster,
        templates: &BTreeMap<Role, LocalTemplate>,
        secrets: Secrets,
    ) -> Result<LocalTestbed> {
        let running: Vec<u32> = backend
            .list()?
            .into_iter()
            .filter(|c| c.state == crate::backend::PowerState::Running)
            .map(|c| c.vmid)
            .collect();
        let roles: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| {
                cluster
                    .members_of(*r)
                    .iter()
                    .any(|m| running.contains(&m.vmid))
            })
            .collect();
        anyhow::ensure!(
            !roles.is_empty(),
            "no member of cluster {} is running in {}: deploy it first (haimg deploy)",
            cluster.name,
            backend.state_dir().display()
        );
        let mut tb = LocalTestbed::new(backend, cluster, roles);
        tb.teardown = false;
        tb.attached = true;
        tb.secrets = secrets;
        tb.lb_template = templates.get(&Role::Lb).cloned();
        tb.add_clients()?;
        Ok(tb)
    }

    /// Deploy the cluster from `templates` (the roles this testbed has),
    /// then set up its clients.
    pub fn deploy(&mut self, mut templates: BTreeMap<Role, LocalTemplate>) -> Result<()> {
        self.attach_secrets(&mut templates);
        self.lb_template = templates.get(&Role::Lb).cloned();
        let target = self.deployable(&self.cluster);
        let gate = self.gate()?;
        let opts = rollout::Options::from_cluster(&target, false);
        let mut quiet = |_: &Event<'_>| std::ops::ControlFlow::Continue(());
        let req = Request::deploy(&target, templates);
        let (_, report) = orchestrate::run(&self.backend, req, &gate, opts, &mut quiet)?;
        if let Some(c) = report.converge.as_ref().filter(|c| !c.ok()) {
            anyhow::bail!(
                "deploy failed: {}",
                serde_json::to_string(&(&c.members, &c.firewall))?
            );
        }
        self.add_clients()
    }

    /// Every lb and webapp answers its health path, and the VIP serves a
    /// page from the configured master lb: keepalived starts every member
    /// as BACKUP and the master preempts a few seconds later, which would
    /// cut scenarios' connections.
    pub fn wait_ready(&self) -> Result<()> {
        let c = &self.cluster;
        let origin = Origin::new(self.client_netns(), Some(self.admin_source().into()));
        let deadline = Instant::now() + Duration::from_secs(90);
        let vip = SocketAddr::new(c.network.vip.into(), c.lb.nginx.listen_port);
        // Through the VIP: a webapp's page, or the lbs' own on a cluster of lbs only.
        let vip_path = if self.has_role(Role::Webapp) {
            Role::Webapp.health_path().unwrap_or("/")
        } else {
            "/haimg/lb-health"
        };
        let mut targets = vec![(vip, vip_path)];
        for m in c.members().filter(|m| self.has_role(m.role)) {
            if let Some(path) = m.role.health_path() {
                targets.push((SocketAddr::new(m.ip.into(), m.role.port(c)), path));
            }
        }
        let master = &c.lb.keepalived.master;
        for (addr, path) in targets {
            loop {
                let answer = origin.get(addr, path, Duration::from_secs(1));
                let settled = addr != vip
                    || answer
                        .as_ref()
                        .is_ok_and(|r| r.served_by.as_deref() == Some(master));
                if answer.is_ok_and(|r| r.status == 200) && settled {
                    break;
                }
                if Instant::now() >= deadline {
                    anyhow::bail!("{addr}{path} did not answer 200 within 90 s");
                }
                std::thread::sleep(Duration::from_millis(200)); // polling interval
            }
        }
        Ok(())
    }

    /// After the deploy: learn the client namespace and add the client addresses.
    fn add_clients(&mut self) -> Result<()> {
        let net = self
            .backend
            .network()?
            .context("the local cluster has no network; was it deployed?")?;
        // `.1` and `.2` in each scenario's /24s (sticky uses a neighbour).
        for n in 1..=scenarios::client_subnets() {
            for host in [1, 2] {
                self.backend
                    .add_client_address(Ipv4Addr::new(CLIENT_NET[0], CLIENT_NET[1], n, host))
                    .context("failed to add a client address")?;
            }
        }
        self.net = Some(net);
        Ok(())
    }

    fn attach_secrets(&self, templates: &mut BTreeMap<Role, LocalTemplate>) {
        let s = &self.secrets;
        templates::with_secrets(templates, |role| (s.env_for(role), s.fingerprint_for(role)));
    }

    /// Health gates from the admin address inside the client namespace, as
    /// `haimg deploy` and `haimg rollback` gate a local cluster.
    fn gate(&self) -> Result<NetGate> {
        let origin = self
            .backend
            .probe_origin(self.cluster.network.gateway)
            .context("failed to read the local network")?;
        Ok(NetGate::wire_as(origin, Some(self.secrets.monitor())))
    }

    /// The deployable part of `c`: members of roles without a template left out.
    fn deployable(&self, c: &Cluster) -> Cluster {
        let missing: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| !self.roles.contains(r))
            .collect();
        c.without_roles(&missing)
    }

    /// The node and VMID of `slot`'s live container: after a rollout that is
    /// the green one (a cluster `haimg deploy` rolled out), else the spec's.
    fn member(&self, slot: &str) -> Result<(String, u32)> {
        let m = self
            .cluster
            .member_by_slot(slot)
            .with_context(|| format!("no member {slot}"))?;
        let inventory = self.backend.list()?;
        let live = crate::fleet::slot::SlotView::from_inventory(&self.cluster, m, &inventory)
            .live()
            .map_or(m.vmid, |l| l.vmid);
        Ok((m.node.clone(), live))
    }
}

impl Drop for LocalTestbed {
    fn drop(&mut self) {
        if self.attached && self.net.is_some() {
            for n in 1..=scenarios::client_subnets() {
                for host in [1, 2] {
                    let ip = Ipv4Addr::new(CLIENT_NET[0], CLIENT_NET[1], n, host);
                    if let Err(e) = self.backend.remove_client_address(ip) {
                        eprintln!("error: failed to remove client address {ip}: {e}");
                    }
                }
            }
        }
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

    fn bridge(&self) -> Option<String> {
        self.net.as_ref().map(|n| n.bridge.clone())
    }

    fn client_netns(&self) -> Option<PathBuf> {
        self.net.as_ref().map(|n| n.netns_path.clone())
    }

    fn client_source(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(
            CLIENT_NET[0],
            CLIENT_NET[1],
            n.clamp(1, scenarios::client_subnets()),
            1,
        )
    }

    fn admin_source(&self) -> Ipv4Addr {
        self.net
            .as_ref()
            .map_or(self.cluster.network.gateway, |n| n.gateway)
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
            out.stderr_str().trim()
        );
        Ok(out.stdout_str())
    }

    fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    fn rollout_templates(&self, which: NextBuild) -> Option<PathBuf> {
        match which {
            NextBuild::Good => self.next_templates.clone(),
            // The same build; `rollout_bad_green` breaks the green app in place.
            NextBuild::BadGreen => self.next_templates.clone(),
        }
    }

    fn rollout(&self, dir: &Path, obs: &mut dyn rollout::Observer) -> Result<rollout::Report> {
        self.rollout_observed(dir, obs)
    }

    /// The first webapp slot's green container gets a `server.js` that exits
    /// at once, written into its rootfs before it starts: a real app that
    /// exits, whose health gate must fail and whose slot must go back to blue.
    fn rollout_bad_green(
        &self,
        dir: &Path,
        outer: &mut dyn rollout::Observer,
    ) -> Result<rollout::Report> {
        let mut green: Option<u32> = None;
        let mut broken = false;
        let mut obs = |e: &Event<'_>| {
            let flow = outer.event(e);
            if let Event::SlotStarted { plan } = e {
                if plan.role == Role::Webapp && green.is_none() {
                    green = Some(plan.green.vmid);
                }
            }
            if let (Some(vmid), false) = (green, broken) {
                broken = self.break_app(vmid);
            }
            flow
        };
        self.rollout_observed(dir, &mut obs)
    }

    fn rollback(&self, obs: &mut dyn rollout::Observer) -> Result<rollout::Report> {
        self.rollback_inner(obs)
    }

    fn start_stranger(&self, ip: Ipv4Addr) -> Result<u32> {
        let c = &self.cluster;
        let local = self
            .lb_template
            .as_ref()
            .context("no lb template was deployed")?;
        let first = c.lb.members.first().context("no lb member")?;
        let stored = self
            .backend
            .list_templates(&first.node)?
            .into_iter()
            .find(|t| t.filename == local.stored_name())
            .with_context(|| format!("{} is not stored", local.stored_name()))?;
        // Above every member and green VMID, so it never collides with one.
        let top = c.members().map(|m| m.vmid).max().unwrap_or(100);
        let vmid = top + 2 * c.rollout.green_vmid_offset;
        let stranger = haimg_model::Member {
            slot: "rogue".into(),
            hostname: "rogue".into(),
            ip,
            vmid,
            ..first.clone()
        };
        let caps = self.backend.capabilities()?;
        let mut spec = members::container_spec(c, &stranger, local, &stored, caps);
        // Not one of the cluster's: no tags, and none of its secrets.
        spec.tags = Vec::new();
        spec.env = members::member_env(c, &stranger);
        self.backend.create(&spec)?;
        if let Err(e) = self.backend.start(&first.node, vmid) {
            let _ = self.remove_ct(vmid);
            return Err(e.into());
        }
        Ok(vmid)
    }

    fn exec_ct(&self, vmid: u32, argv: &[&str]) -> Result<String> {
        let out = self.backend.attach(vmid, argv, Duration::from_secs(30))?;
        anyhow::ensure!(
            out.success(),
            "`{}` in CT {vmid} failed: {}",
            argv.join(" "),
            out.stderr_str().trim()
        );
        Ok(out.stdout_str())
    }

    fn remove_ct(&self, vmid: u32) -> Result<()> {
        let node = self
            .cluster
            .lb
            .members
            .first()
            .map_or(String::new(), |m| m.node.clone());
        let _ = self.backend.stop(&node, vmid);
        Ok(self.backend.destroy(&node, vmid)?)
    }

    fn vrrp_password(&self) -> Option<String> {
        self.secrets
            .env_for(Role::Lb)
            .into_iter()
            .find(|(k, _)| k == haimg_model::image::secret_env::VRRP_PASS)
            .map(|(_, v)| v)
    }
}

impl LocalTestbed {
    /// Replace the app of a (stopped) webapp container with one that exits;
    /// `false` while its rootfs does not exist yet (the green is created later).
    fn break_app(&self, vmid: u32) -> bool {
        let server = self
            .backend
            .lxcpath()
            .join(self.backend.container_name(vmid))
            .join("rootfs/srv/webapp/server.js");
        server.is_file()
            && std::fs::write(
                &server,
                "console.error('bad green: exiting'); process.exit(1);\n",
            )
            .is_ok()
    }

    fn rollout_observed(
        &self,
        dir: &Path,
        obs: &mut dyn rollout::Observer,
    ) -> Result<rollout::Report> {
        let version = version_in(dir)?;
        let mut next = self.cluster.clone();
        next.version = version;
        let mut templates = templates::find_roles(dir, &next, &self.roles)?;
        self.attach_secrets(&mut templates);
        let target = self.deployable(&next);
        let mut opts = rollout::Options::from_cluster(&next, false);
        // A healthy member here passes within seconds; a broken one should not
        // hold the test for the spec's full health timeout.
        opts.health_timeout = opts.health_timeout.min(Duration::from_secs(30));
        let req = Request::deploy(&target, templates);
        let (plan, report) = orchestrate::run(&self.backend, req, &self.gate()?, opts, obs)?;
        if let Ok(mut g) = self.rolled.lock() {
            *g = Some(next);
        }
        Ok(report
            .rollout
            .unwrap_or_else(|| rollout::Report::nothing(&plan.rollout)))
    }

    fn rollback_inner(&self, obs: &mut dyn rollout::Observer) -> Result<rollout::Report> {
        let current = self
            .rolled
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .unwrap_or_else(|| self.cluster.clone());
        let target = self.deployable(&current);
        let opts = rollout::Options::from_cluster(&current, false);
        let req = Request::rollback(&target);
        let (plan, report) = orchestrate::run(&self.backend, req, &self.gate()?, opts, obs)?;
        Ok(report
            .rollout
            .unwrap_or_else(|| rollout::Report::nothing(&plan.rollout)))
    }
}

/// The version of the lb template built into `dir`.
fn version_in(dir: &Path) -> Result<String> {
    for e in std::fs::read_dir(dir).with_context(|| format!("failed to read {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(t) = TemplateName::parse(&name).filter(|t| t.role == Role::Lb) {
            return Ok(t.version);
        }
    }
    let example = TemplateName::new(Role::Lb, "<version>");
    anyhow::bail!("no {example} in {}", dir.display())
}
