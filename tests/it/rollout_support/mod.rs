//! Shared helpers of the rollout tests: a deployed cluster on the Proxmox
//! fake, templates of other versions, a recording [`HealthGate`] fake that
//! judges members by the fake's state, and an observer that records every
//! step (and can stop the run after the n-th, as a kill would).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haimg::backend::proxmox::ProxmoxBackend;
use haimg::fleet::slot;
use haimg::fleet::tags::{MemberTags, State as Tag};
use haimg::fleet::templates::LocalTemplate;
use haimg::model::{Cluster, Member, Role};
use haimg::orchestrate::{self, ExecuteError, Request};
use haimg::rollout::executor::{Event, Options, Report};
use haimg::rollout::gate::{Expect, GateError, HealthGate, Passed};
use haimg::rollout::{plan, Aborted, Plan};

use crate::support::{self, pve_fake::FakePve};

/// The spec aimed at the fake, with another `cluster.version`.
pub fn cluster_v(fake: &FakePve, version: &str) -> Cluster {
    let text = support::spec_text(&fake.endpoint(), "templates", &support::ca_tls())
        .replace("  version: 1.0.0\n", &format!("  version: {version}\n"));
    haimg::model::spec::parse_yaml(&text).expect("spec").cluster
}

/// [`cluster_v`] keeping `keep` versions.
pub fn cluster_keep(fake: &FakePve, version: &str, keep: u32) -> Cluster {
    let text = support::spec_text(&fake.endpoint(), "templates", &support::ca_tls())
        .replace("  version: 1.0.0\n", &format!("  version: {version}\n"))
        .replace("keep_versions: 2", &format!("keep_versions: {keep}"));
    assert!(text.contains(&format!("keep_versions: {keep}")));
    haimg::model::spec::parse_yaml(&text).expect("spec").cluster
}

/// A cluster deployed at 1.0.0 on a fresh fake.
pub struct Bed {
    pub fake: FakePve,
    pub dir: tempfile::TempDir,
    pub v1: Cluster,
}

impl Bed {
    pub fn new() -> Bed {
        let fake = FakePve::start(support::pve_fake::Config::default());
        let dir = tempfile::tempdir().unwrap();
        let v1 = cluster_v(&fake, "1.0.0");
        let tpl = templates(dir.path(), &v1, "1.0.0");
        let b = support::backend(&v1);
        let r = support::deploy(&b, &v1, &tpl, false).unwrap();
        assert!(r.ok(), "{r:#?}");
        assert_eq!(r.count(|a| *a == haimg::deploy::Action::Created), 9);
        fake.clear_requests();
        Bed { fake, dir, v1 }
    }

    /// A new fake holding a copy of this one's state (a quick fresh start).
    pub fn copy(&self) -> Bed {
        let fake = FakePve::start(support::pve_fake::Config::default());
        fake.set_state(self.fake.state().clone());
        let dir = tempfile::tempdir().unwrap();
        let v1 = cluster_v(&fake, "1.0.0");
        // Same content as the original's, so the same hashes.
        templates(dir.path(), &v1, "1.0.0");
        Bed { fake, dir, v1 }
    }

    pub fn cluster(&self, version: &str) -> Cluster {
        cluster_v(&self.fake, version)
    }

    pub fn templates(&self, c: &Cluster, salt: &str) -> BTreeMap<Role, LocalTemplate> {
        templates(self.dir.path(), c, salt)
    }

    /// 1.0.0 templates where only the webapp's content changed.
    pub fn webapp_only(&self, salt: &str) -> BTreeMap<Role, LocalTemplate> {
        templates_with(self.dir.path(), &self.v1, "1.0.0", &[(Role::Webapp, salt)])
    }

    /// Stop a container in the fake (a crash nobody asked for).
    pub fn crash(&self, vmid: u32) {
        self.fake.state().containers.get_mut(&vmid).unwrap().running = false;
    }

    pub fn backend(&self, c: &Cluster) -> ProxmoxBackend {
        support::backend(c)
    }

    /// Running, live VMIDs and their version tag, per slot.
    pub fn live(&self) -> BTreeMap<String, (u32, String)> {
        let st = self.fake.state();
        let mut out = BTreeMap::new();
        for c in st.containers.values() {
            let Some(t) = MemberTags::parse(&c.tags().split(';').collect::<Vec<_>>()) else {
                continue;
            };
            if c.running && t.state != Some(Tag::Standby) {
                let prev = out.insert(
                    t.slot.clone().unwrap(),
                    (c.vmid, t.version.clone().unwrap()),
                );
                assert!(
                    prev.is_none(),
                    "two running live members in slot {:?}",
                    t.slot
                );
            }
        }
        out
    }

    /// Every container: vmid -> (slot, running, state tag, version, gen).
    pub fn table(&self) -> String {
        let st = self.fake.state();
        let mut out = String::new();
        for c in st.containers.values() {
            let Some(t) = MemberTags::parse(&c.tags().split(';').collect::<Vec<_>>()) else {
                out.push_str(&format!("{:<5} (not haimg's)\n", c.vmid));
                continue;
            };
            out.push_str(&format!(
                "{:<5} {:<8} {:<7} {:<8} {} gen {}{}\n",
                c.vmid,
                t.slot.unwrap_or_default(),
                if c.running { "running" } else { "stopped" },
                match t.state {
                    Some(Tag::Live) => "live",
                    Some(Tag::Standby) => "standby",
                    None => "(live)",
                },
                t.version.unwrap_or_default(),
                t.gen.map(|g| g.n).unwrap_or(0),
                if c.config.contains_key("mp0") {
                    " mp0"
                } else {
                    ""
                }
            ));
        }
        out
    }

    /// Reboot every node of the fake; then exactly the live members must
    /// run, one per slot, and no standby (or any other guest) came up.
    /// The running VMIDs after the reboot.
    pub fn reboot_all_only_live_run(&self, what: &str) -> Vec<u32> {
        let before = self.live();
        let nodes = self.fake.state().nodes.clone();
        for n in &nodes {
            self.fake.state().reboot_node(n);
        }
        let after = self.live();
        assert_eq!(
            after,
            before,
            "{what}: after a reboot of every node the same live members serve\n{}",
            self.table()
        );
        let st = self.fake.state();
        let running: Vec<u32> = st
            .containers
            .values()
            .filter(|c| c.running)
            .map(|c| c.vmid)
            .collect();
        let live: Vec<u32> = after.values().map(|(v, _)| *v).collect();
        let mut sorted = live.clone();
        sorted.sort_unstable();
        assert_eq!(
            running,
            sorted,
            "{what}: only the live members run after a reboot\n{}",
            self.table()
        );
        for c in st.containers.values() {
            let Some(t) = MemberTags::parse(&c.tags().split(';').collect::<Vec<_>>()) else {
                continue;
            };
            let boots = c.config.get("onboot").map(String::as_str) == Some("1");
            assert_eq!(
                boots,
                t.state != Some(Tag::Standby),
                "{what}: CT {} onboot={boots} with state {:?}",
                c.vmid,
                t.state
            );
        }
        running
    }

    /// Slots per tier with no running container (must never exceed one).
    pub fn down_per_tier(&self, c: &Cluster) -> BTreeMap<Role, Vec<String>> {
        let st = self.fake.state();
        let mut out: BTreeMap<Role, Vec<String>> = BTreeMap::new();
        for m in c.members() {
            let alt = m.vmid + c.rollout.green_vmid_offset;
            let up = [m.vmid, alt]
                .iter()
                .any(|v| st.containers.get(v).is_some_and(|x| x.running));
            if !up {
                out.entry(m.role).or_default().push(m.slot.clone());
            }
        }
        out
    }
}

/// Templates in one directory whose content per role depends on `salts`
/// (roles not listed: `default`), as `haimg deploy --templates DIR` finds them.
pub fn templates_with(
    dir: &Path,
    c: &Cluster,
    default: &str,
    salts: &[(Role, &str)],
) -> BTreeMap<Role, LocalTemplate> {
    let name: Vec<String> = salts.iter().map(|(r, s)| format!("{r}-{s}")).collect();
    let mixed = dir
        .join(format!("tpl-{default}-{}", name.join("-")))
        .join("out");
    std::fs::create_dir_all(&mixed).unwrap();
    for role in Role::ALL {
        let salt = salts
            .iter()
            .find(|(r, _)| *r == role)
            .map_or(default, |(_, s)| *s);
        let src = templates(dir, c, salt)[&role].path.clone();
        let file = src.file_name().unwrap();
        std::fs::copy(&src, mixed.join(file)).unwrap();
        let side = format!("{}.sha256", file.to_string_lossy());
        std::fs::copy(src.with_file_name(&side), mixed.join(&side)).unwrap();
    }
    support::find_templates(&mixed, c)
}

/// Three templates for `c` whose content depends on `salt`.
pub fn templates(dir: &Path, c: &Cluster, salt: &str) -> BTreeMap<Role, LocalTemplate> {
    let sub: PathBuf = dir.join(format!("tpl-{salt}"));
    std::fs::create_dir_all(&sub).unwrap();
    let out = support::write_templates(&sub, c, salt);
    support::find_templates(&out, c)
}

/// A health gate that looks at the fake: a member is healthy when its
/// container runs, is the only running one of its slot, and carries the
/// expected version. Slots listed in `fail` never pass. Mongo: one primary,
/// moved by a step-down to the next running member.
/// (vmid, running, tags) of every container of the fake.
pub type Snapshot = Arc<dyn Fn() -> Vec<(u32, bool, Vec<String>)> + Send + Sync>;

pub struct FakeGate {
    pub fake_state: Snapshot,
    pub offset: u32,
    /// (slot, version) pairs that fail their gate.
    pub fail: Mutex<BTreeSet<(String, String)>>,
    pub primary: Mutex<Option<String>>,
    pub timeline: Arc<Mutex<Vec<String>>>,
}

impl FakeGate {
    pub fn new(bed: &Bed, timeline: Arc<Mutex<Vec<String>>>) -> FakeGate {
        let shared = bed.fake.shared_state();
        FakeGate {
            fake_state: Arc::new(move || {
                let st = shared.lock();
                st.containers
                    .values()
                    .map(|c| {
                        (
                            c.vmid,
                            c.running,
                            c.tags().split(';').map(str::to_string).collect(),
                        )
                    })
                    .collect()
            }),
            offset: bed.v1.rollout.green_vmid_offset,
            fail: Mutex::new(BTreeSet::new()),
            primary: Mutex::new(Some("mongo1".into())),
            timeline,
        }
    }

    pub fn fail(&self, slot: &str, version: &str) {
        self.fail
            .lock()
            .unwrap()
            .insert((slot.into(), version.into()));
    }

    fn note(&self, s: String) {
        self.timeline.lock().unwrap().push(s);
    }

    fn running_of(&self, slot: &str) -> Vec<(u32, Vec<String>)> {
        (self.fake_state)()
            .into_iter()
            .filter(|(_, running, tags)| {
                *running && tags.iter().any(|t| *t == format!("slot-{slot}"))
            })
            .map(|(v, _, t)| (v, t))
            .collect()
    }
}

impl HealthGate for FakeGate {
    fn wait_healthy(&self, _c: &Cluster, e: &Expect, _t: Duration) -> Result<Passed, GateError> {
        self.note(format!("gate {} CT {} {}", e.slot, e.vmid, e.version));
        let unhealthy = |last: String| GateError::Unhealthy {
            slot: e.slot.clone(),
            vmid: e.vmid,
            role: e.role,
            waited: Duration::ZERO,
            last,
        };
        if self
            .fail
            .lock()
            .unwrap()
            .contains(&(e.slot.clone(), e.version.clone()))
        {
            return Err(unhealthy("the app exits at start (injected)".into()));
        }
        let running = self.running_of(&e.slot);
        match running.as_slice() {
            [(v, tags)] if *v == e.vmid => {
                let want = format!("ver-{}", e.version.to_ascii_lowercase());
                if tags.contains(&want) {
                    Ok(Passed {
                        waited_s: 0.0,
                        detail: format!("fake: CT {v} serves {}", e.version),
                    })
                } else {
                    Err(unhealthy(format!("CT {v} runs another version: {tags:?}")))
                }
            }
            other => Err(unhealthy(format!("running in the slot: {other:?}"))),
        }
    }

    fn mongo_primary(&self, _c: &Cluster) -> Result<Option<String>, GateError> {
        self.note("primary?".into());
        Ok(self.primary.lock().unwrap().clone())
    }

    fn mongo_step_down(&self, c: &Cluster, m: &Member, _t: Duration) -> Result<(), GateError> {
        self.note(format!("step down {}", m.slot));
        let next = c
            .mongo
            .members
            .iter()
            .find(|o| o.slot != m.slot && !self.running_of(&o.slot).is_empty())
            .map(|o| o.slot.clone());
        *self.primary.lock().unwrap() = next;
        Ok(())
    }
}

/// Records steps into the timeline; stops after `kill_after` steps if set;
/// checks after every step that no tier has two members down.
pub struct Recorder<'a> {
    pub bed: &'a Bed,
    pub cluster: &'a Cluster,
    pub timeline: Arc<Mutex<Vec<String>>>,
    pub steps: usize,
    pub kill_after: Option<usize>,
    pub worst_down: usize,
}

impl<'a> Recorder<'a> {
    pub fn new(bed: &'a Bed, cluster: &'a Cluster, timeline: Arc<Mutex<Vec<String>>>) -> Self {
        Recorder {
            bed,
            cluster,
            timeline,
            steps: 0,
            kill_after: None,
            worst_down: 0,
        }
    }
}

impl haimg::rollout::Observer for Recorder<'_> {
    fn event(&mut self, e: &Event<'_>) -> ControlFlow<()> {
        if let Event::StepDone { slot, step, .. } = e {
            self.steps += 1;
            self.timeline
                .lock()
                .unwrap()
                .push(format!("{slot}: {step}"));
            for (tier, slots) in self.bed.down_per_tier(self.cluster) {
                self.worst_down = self.worst_down.max(slots.len());
                assert!(
                    slots.len() <= 1,
                    "tier {tier} has {slots:?} down after '{slot}: {step}'"
                );
            }
            if self.kill_after == Some(self.steps) {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

/// Plan a deploy rollout against the fake.
pub fn deploy_plan(
    b: &ProxmoxBackend,
    c: &Cluster,
    tpl: &BTreeMap<Role, LocalTemplate>,
    gate: &dyn HealthGate,
) -> Plan {
    let views = slot::observe(b, c).unwrap();
    plan::for_deploy(c, &views, tpl, gate)
}

pub fn rollback_plan(b: &ProxmoxBackend, c: &Cluster, gate: &dyn HealthGate) -> Plan {
    let views = slot::observe(b, c).unwrap();
    plan::for_rollback(c, &views, gate)
}

pub fn opts(c: &Cluster) -> Options {
    let mut o = Options::from_cluster(c, false);
    o.shutdown_timeout = Duration::from_secs(5);
    // The fake has no nginx whose passive checks need time.
    o.upstream_settle = Duration::ZERO;
    o
}

/// `haimg deploy --yes` as the CLI runs it ([`haimg::orchestrate`]): the
/// converge, then the rollout; the rollout's report.
pub fn roll(
    b: &ProxmoxBackend,
    c: &Cluster,
    tpl: &BTreeMap<Role, LocalTemplate>,
    gate: &dyn HealthGate,
    obs: &mut dyn haimg::rollout::Observer,
) -> Result<Report, Aborted> {
    run(b, Request::deploy(c, tpl.clone()), c, gate, obs)
}

/// `haimg rollback --yes` as the CLI runs it.
pub fn roll_back(
    b: &ProxmoxBackend,
    c: &Cluster,
    gate: &dyn HealthGate,
    obs: &mut dyn haimg::rollout::Observer,
) -> Result<Report, Aborted> {
    run(b, Request::rollback(c), c, gate, obs)
}

fn run(
    b: &ProxmoxBackend,
    req: Request<'_>,
    c: &Cluster,
    gate: &dyn HealthGate,
    obs: &mut dyn haimg::rollout::Observer,
) -> Result<Report, Aborted> {
    let plan = orchestrate::prepare(b, req, gate).expect("the fake answers");
    match orchestrate::execute(b, &plan, gate, opts(c), obs) {
        Ok(r) => Ok(r.rollout.unwrap_or_else(|| Report::nothing(&plan.rollout))),
        Err(ExecuteError::Aborted(a)) => Err(a),
        Err(e) => panic!("{e}"),
    }
}

/// Mutating requests in order, with bodies: method, path, form.
pub fn mutating(fake: &FakePve) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| {
            let body = match r.body {
                support::pve_fake::Body::Form(f) => f
                    .into_iter()
                    .filter(|(k, _)| k != "description")
                    .map(|(k, v)| format!("{k}={}", v.replace('\0', "\\0")))
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            };
            let q: Vec<String> = r.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "{} {}{}{} -> {}",
                r.method,
                r.path,
                if q.is_empty() {
                    String::new()
                } else {
                    format!("?{}", q.join("&"))
                },
                if body.is_empty() {
                    String::new()
                } else {
                    format!(" [{body}]")
                },
                r.status
            )
        })
        .collect()
}
