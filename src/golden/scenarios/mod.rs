//! The golden scenarios: the cluster checked as a user sees it, through the VIP.
//!
//! Each scenario drives a [`Testbed`] (a running cluster plus a way to kill,
//! halt, start and exec into members) and returns a [`ScenarioReport`] with
//! measured figures. Scenarios wait on conditions with deadlines, never on
//! fixed sleeps, and every loop is bounded in count and time. Scenarios that
//! break something (a killed container) restore it before returning.
//!
//! [`SCENARIOS`] is the one list: name, order, and how many client /24s each
//! scenario needs. Client traffic comes from addresses the testbed provides,
//! one /24 per client, and each scenario gets a block of its own
//! ([`Run::client`]), because nginx's rate limit and `ip_hash` both key on
//! the client address and one scenario must not spend another's budget.

mod boot;
mod failover;
mod http;
mod mongo;
mod policy;
mod rogue;
mod rollout;
mod vip;

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haimg_model::{Cluster, Role};

use super::load::{self, LoadSpec};
use super::report::ScenarioReport;
use crate::probe::http::{self as http_probe, Response};
use crate::probe::{netns, Origin};

/// A running cluster the scenarios can observe and break.
pub trait Testbed: Sync {
    fn cluster(&self) -> &Cluster;
    /// The network namespace client traffic starts in (`/run/netns/<name>`).
    fn client_netns(&self) -> Option<PathBuf>;
    /// A client address outside the cluster network, distinct per `n` /24.
    fn client_source(&self, n: u8) -> Ipv4Addr;
    /// The deploy host's address (allowed to reach health ports).
    fn admin_source(&self) -> Ipv4Addr;
    /// Hard stop (power cut).
    fn kill(&self, slot: &str) -> anyhow::Result<()>;
    /// The halt signal, waiting up to `timeout` for a clean stop.
    fn halt(&self, slot: &str, timeout: Duration) -> anyhow::Result<()>;
    fn start(&self, slot: &str) -> anyhow::Result<()>;
    /// Run a command inside a member; its stdout, or an error when it fails.
    fn exec(&self, slot: &str, argv: &[&str]) -> anyhow::Result<String>;
    /// Is a template for this role built and deployed?
    fn has_role(&self, role: Role) -> bool;

    /// The bridge the members' traffic crosses, on this host (where a
    /// capture of VRRP adverts listens); `None` when there is none here.
    fn bridge(&self) -> Option<String> {
        None
    }

    /// Templates of a second build for the rollout scenarios, as a directory
    /// `haimg deploy --templates DIR` accepts; `None` when there is none.
    fn rollout_templates(&self, which: NextBuild) -> Option<PathBuf> {
        let _ = which;
        None
    }

    /// Roll the cluster out to the templates in `dir` as `haimg deploy --yes`
    /// does: [`crate::orchestrate::run`] with this testbed's backend and a
    /// [`crate::rollout::NetGate`] in its client netns.
    fn rollout(
        &self,
        dir: &Path,
        obs: &mut dyn crate::rollout::Observer,
    ) -> anyhow::Result<crate::rollout::Report> {
        let _ = (dir, obs);
        anyhow::bail!("this testbed cannot run rollouts")
    }

    /// Roll out to `dir` with the first webapp's green member broken so its
    /// app exits at start (the `rollout-bad-green` scenario); by default the
    /// same as [`Testbed::rollout`], for testbeds whose `dir` is a failing build.
    fn rollout_bad_green(
        &self,
        dir: &Path,
        obs: &mut dyn crate::rollout::Observer,
    ) -> anyhow::Result<crate::rollout::Report> {
        self.rollout(dir, obs)
    }

    /// Start a container that is not a member: the lb template at `ip` (an
    /// address of the cluster network no member uses), with a MAC of its own,
    /// on the cluster's network. Its init finds no member to be and starts no
    /// service; the caller runs what it wants with [`Testbed::exec_ct`] and
    /// removes it with [`Testbed::remove_ct`]. Returns its VMID.
    fn start_stranger(&self, ip: Ipv4Addr) -> anyhow::Result<u32> {
        let _ = ip;
        anyhow::bail!("this testbed cannot start containers outside the cluster")
    }

    /// Run a command in any container of the testbed, by VMID.
    fn exec_ct(&self, vmid: u32, argv: &[&str]) -> anyhow::Result<String> {
        let _ = (vmid, argv);
        anyhow::bail!("this testbed cannot run commands by VMID")
    }

    /// Stop and remove a container [`Testbed::start_stranger`] made.
    fn remove_ct(&self, vmid: u32) -> anyhow::Result<()> {
        let _ = vmid;
        anyhow::bail!("this testbed cannot remove containers")
    }

    /// The cluster's VRRP password, as any host that sees one advert reads it.
    fn vrrp_password(&self) -> Option<String> {
        None
    }

    /// `haimg rollback --yes` ([`crate::orchestrate::run`] of a rollback).
    fn rollback(
        &self,
        obs: &mut dyn crate::rollout::Observer,
    ) -> anyhow::Result<crate::rollout::Report> {
        let _ = obs;
        anyhow::bail!("this testbed cannot run rollbacks")
    }
}

/// The second build a rollout scenario rolls to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextBuild {
    /// The next version, every role healthy.
    Good,
    /// A webapp whose app exits at start, so its health gate fails.
    BadGreen,
}

/// One scenario: its name, the client /24s it uses, its code.
pub struct Scenario {
    pub name: &'static str,
    /// Client addresses it needs, each in a /24 no other scenario uses.
    pub clients: u8,
    /// Leaves the cluster as it found it (kills, stops and rolls nothing), so
    /// `haimg test --deployed` may run it on a cluster `haimg deploy` made.
    pub harmless: bool,
    run: fn(&Run<'_>) -> anyhow::Result<ScenarioReport>,
}

/// Every scenario, in the order `haimg test` runs them (shutdown last: it
/// stops the cluster; rollback right after rollout, which it undoes).
pub const SCENARIOS: &[Scenario] = &[
    // First, while every member still runs its first boot.
    Scenario {
        name: "boot",
        clients: 0,
        harmless: true,
        run: boot::boot,
    },
    Scenario {
        name: "http",
        clients: 1,
        harmless: true,
        run: http::http,
    },
    // One client, then 8 more /24s to see the spread.
    Scenario {
        name: "sticky",
        clients: 9,
        harmless: true,
        run: http::sticky,
    },
    Scenario {
        name: "rate-limit",
        clients: 1,
        harmless: true,
        run: http::rate_limit,
    },
    Scenario {
        name: "api-db",
        clients: 1,
        harmless: true,
        run: http::api_db,
    },
    Scenario {
        name: "vip-failover",
        clients: 10,
        harmless: false,
        run: failover::vip_failover,
    },
    // 20 for a load spread over many clients (nginx limits per client).
    Scenario {
        name: "vip-planned-moves",
        clients: 20,
        harmless: false,
        run: vip::vip_planned_moves,
    },
    Scenario {
        name: "vip-stability",
        clients: 1,
        harmless: true,
        run: vip::vip_stability,
    },
    Scenario {
        name: "webapp-loss",
        clients: 1,
        harmless: false,
        run: failover::webapp_loss,
    },
    Scenario {
        name: "app-crash",
        clients: 0,
        harmless: false,
        run: failover::app_crash,
    },
    Scenario {
        name: "nginx-crash",
        clients: 0,
        harmless: false,
        run: boot::nginx_crash,
    },
    Scenario {
        name: "mongo-rs0",
        clients: 0,
        harmless: false,
        run: mongo::mongo_rs0,
    },
    // 4 for the steady load, 8 to read the served versions.
    Scenario {
        name: "rollout",
        clients: 12,
        harmless: false,
        run: rollout::rollout,
    },
    Scenario {
        name: "rollback",
        clients: 12,
        harmless: false,
        run: rollout::rollback,
    },
    Scenario {
        name: "rollout-bad-green",
        clients: 12,
        harmless: false,
        run: rollout::rollout_bad_green,
    },
    Scenario {
        name: "network-policy",
        clients: 1,
        harmless: true,
        run: policy::network_policy,
    },
    Scenario {
        name: "rogue-lb",
        clients: 1,
        harmless: true,
        run: rogue::rogue_lb,
    },
    Scenario {
        name: "shutdown",
        clients: 0,
        harmless: false,
        run: failover::shutdown,
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Every scenario's name, in order.
pub fn names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|s| s.name).collect()
}

/// How many client /24s a testbed provides: every scenario's block.
pub fn client_subnets() -> u8 {
    SCENARIOS.iter().map(|s| s.clients).sum()
}

/// One scenario's run: the testbed and the scenario's own client block.
pub struct Run<'a> {
    pub tb: &'a dyn Testbed,
    name: &'static str,
    /// The testbed's number of the block's first /24.
    first: u8,
    clients: u8,
}

impl Run<'_> {
    /// Client address `i` of the scenario's block. Invariant: a scenario
    /// asks only for the clients its [`SCENARIOS`] entry counts.
    pub fn client(&self, i: u8) -> Ipv4Addr {
        assert!(
            i < self.clients,
            "scenario {} asked for client {i} of its {}",
            self.name,
            self.clients
        );
        self.tb.client_source(self.first + i)
    }

    /// An empty report of this scenario, passing until told otherwise.
    pub fn report(&self) -> ScenarioReport {
        ScenarioReport::new(self.name)
    }

    pub fn skip(&self, why: &str) -> ScenarioReport {
        ScenarioReport::skip(self.name, why)
    }
}

/// Run `s` on `tb`; an error is the scenario's failure.
pub fn run(s: &Scenario, tb: &dyn Testbed) -> ScenarioReport {
    let before: u8 = SCENARIOS
        .iter()
        .take_while(|o| o.name != s.name)
        .map(|o| o.clients)
        .sum();
    let r = Run {
        tb,
        name: s.name,
        first: before + 1,
        clients: s.clients,
    };
    (s.run)(&r).unwrap_or_else(|e| {
        let mut o = r.report();
        o.fail(format!("{e:#}"));
        o
    })
}

fn vip(tb: &dyn Testbed) -> SocketAddr {
    let c = tb.cluster();
    SocketAddr::new(c.network.vip.into(), c.lb.nginx.listen_port)
}

fn spec_from(tb: &dyn Testbed, target: SocketAddr, path: &str, source: Ipv4Addr) -> LoadSpec {
    let mut s = LoadSpec::new(target, path);
    s.source = Some(source.into());
    s.netns = tb.client_netns();
    s
}

/// One request from `source`, from the client netns.
fn probe(
    tb: &dyn Testbed,
    target: SocketAddr,
    path: &str,
    source: Ipv4Addr,
    timeout: Duration,
) -> std::io::Result<Response> {
    let mut s = spec_from(tb, target, path, source);
    s.timeout = timeout;
    s.total = 1;
    s.concurrency = 1;
    // A scoped thread: setns must not move the caller's thread.
    std::thread::scope(|sc| {
        sc.spawn(|| {
            if let Some(ns) = &s.netns {
                netns::enter(ns)?;
            }
            http_probe::get(&s.request())
        })
        .join()
        .map_err(|_| std::io::Error::other("probe thread panicked"))?
    })
}

/// Poll `f` every `every` until it returns `Some`, or give up at `deadline`.
fn wait_for<T>(deadline: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(every); // polling interval
    }
}

/// The `slot` field of `/api/health`.
fn health_slot(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("slot")?.as_str().map(str::to_string)
}

/// A testbed for unit tests: a cluster that is not there, whose members
/// answer `exec` with what the test gives; nothing can be killed or started,
/// and there is no second build.
#[cfg(test)]
pub(super) struct Fake {
    cluster: Cluster,
    exec: Box<FakeExec>,
}

/// What a [`Fake`] member answers to `exec`, by slot.
#[cfg(test)]
type FakeExec = dyn Fn(&str) -> anyhow::Result<String> + Sync;

#[cfg(test)]
impl Fake {
    pub(super) fn new(
        cluster: Cluster,
        exec: impl Fn(&str) -> anyhow::Result<String> + Sync + 'static,
    ) -> Fake {
        Fake {
            cluster,
            exec: Box::new(exec),
        }
    }
}

#[cfg(test)]
impl Testbed for Fake {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }
    fn client_netns(&self) -> Option<PathBuf> {
        None
    }
    fn client_source(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, n, 2)
    }
    fn admin_source(&self) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 30, 1)
    }
    fn kill(&self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!("not here")
    }
    fn halt(&self, _: &str, _: Duration) -> anyhow::Result<()> {
        anyhow::bail!("not here")
    }
    fn start(&self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!("not here")
    }
    fn exec(&self, slot: &str, _: &[&str]) -> anyhow::Result<String> {
        (self.exec)(slot)
    }
    fn has_role(&self, role: Role) -> bool {
        role != Role::Mongo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_slot_parses() {
        assert_eq!(
            health_slot(r#"{"ok":true,"slot":"webapp2"}"#).as_deref(),
            Some("webapp2")
        );
        assert_eq!(health_slot("not json"), None);
    }

    #[test]
    fn rollout_scenarios_skip_without_a_second_build() {
        let c = haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster;
        let tb = Fake::new(c, |_| anyhow::bail!("not here"));
        for name in ["rollout", "rollback", "rollout-bad-green"] {
            let o = run(find(name).unwrap(), &tb);
            assert_eq!(
                o.status,
                crate::golden::report::Status::Skip,
                "{name}: {o:?}"
            );
            assert!(
                o.reason.as_deref().is_some_and(|r| r.contains("build")),
                "{o:?}"
            );
        }
        let mut obs = |_: &crate::rollout::Event<'_>| std::ops::ControlFlow::Continue(());
        assert!(tb.rollout(Path::new("x"), &mut obs).is_err() && tb.rollback(&mut obs).is_err());
    }

    #[test]
    fn client_blocks_are_disjoint_and_fit_the_testbed() {
        let mut seen = std::collections::BTreeSet::new();
        for s in SCENARIOS {
            assert!(seen.insert(s.name), "{} twice", s.name);
        }
        assert!(client_subnets() <= 250, "{}", client_subnets());
        assert_eq!(names().len(), SCENARIOS.len());
    }

    #[test]
    fn wait_for_gives_up() {
        let t0 = Instant::now();
        let r: Option<()> = wait_for(Duration::from_millis(50), Duration::from_millis(10), || {
            None
        });
        assert!(r.is_none());
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert_eq!(
            wait_for(Duration::from_secs(1), Duration::from_millis(1), || Some(7)),
            Some(7)
        );
    }
}
