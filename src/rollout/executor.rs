//! Carrying a [`Plan`] out against any [`Backend`], one slot at a time.
//!
//! Per slot: read the slot again, then loop "derive the next step, do it,
//! apply its effect to the view" until the machine says done. The first
//! failure of a slot (a health gate, a backend call) turns the slot's goal
//! around: back to the member that served before (green stopped, data volume
//! back, blue started), then the rollout stops and the report says what
//! happened. A step that would take a serving member down first checks that
//! every other member of its tier runs, so a tier never has two members down;
//! if one does not, the rollout stops before touching the slot. A mongo
//! primary is asked to step down before its shutdown; when authorization is
//! on and haimg has no credentials for that, the shutdown goes ahead (mongod
//! steps down by itself at SIGTERM, see `gate`) and the slot waits, bounded
//! by the step-down timeout, until another member answers PRIMARY before its
//! green starts.
//!
//! Dry-run: the backend records its mutating calls instead of sending them,
//! gates are not asked, and the view is advanced by the steps' effects, so the
//! recorded calls are exactly the calls of a real run.
//!
//! An [`Observer`] sees every step as it finishes and may stop the run there
//! ([`Aborted`]), leaving the target as a killed process would: tests use it
//! to kill a rollout after each step and check that the next run recovers.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use haimg_model::{Cluster, Member, Role};
use serde::Serialize;

use super::gate::{Expect, GateError, HealthGate, Passed};

/// How long the tier check waits for each other member of the tier to
/// answer before it counts as not serving.
const TIER_PROBE: Duration = Duration::from_secs(5);
use super::machine::{apply, next, Goal, Next, Step, MAX_STEPS};
use super::plan::{Brief, Kind, Plan, SlotPlan};
use crate::backend::{Backend, Capabilities, Guest, Policy, StoredTemplate};
use crate::fleet::members;
use crate::fleet::slot::{observe_one, SlotView};
use crate::fleet::tags::State;
use crate::fleet::templates::LocalTemplate;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub dry_run: bool,
    /// The halt signal's grace before the shutdown counts as failed.
    pub shutdown_timeout: Duration,
    /// How long a member may take to pass its health gate.
    pub health_timeout: Duration,
    /// How long a new mongo primary may take after a step-down.
    pub step_down_timeout: Duration,
    /// After a webapp passes its gate: nginx's passive check keeps a member
    /// that failed out of rotation for `fail_timeout` after its last failure,
    /// so the next webapp may only go down once this one is back in rotation
    /// (otherwise every upstream can be marked failed at once: 502s).
    pub upstream_settle: Duration,
}

impl Options {
    pub fn from_cluster(cluster: &Cluster, dry_run: bool) -> Options {
        Options {
            dry_run,
            shutdown_timeout: Duration::from_secs(60),
            health_timeout: Duration::from_secs(u64::from(cluster.rollout.health_timeout_s)),
            step_down_timeout: Duration::from_secs(30),
            upstream_settle: Duration::from_secs(u64::from(cluster.lb.nginx.fail_timeout_s)),
        }
    }
}

/// Something the executor did.
#[derive(Debug)]
pub enum Event<'a> {
    SlotStarted {
        plan: &'a SlotPlan,
    },
    StepDone {
        slot: &'a str,
        step: &'a Step,
        seconds: f64,
        detail: Option<&'a str>,
    },
    GateFailed {
        slot: &'a str,
        error: &'a str,
    },
    SlotFinished {
        report: &'a SlotReport,
    },
}

/// Sees every event; `Break` stops the run at once, as a kill would.
pub trait Observer {
    fn event(&mut self, e: &Event<'_>) -> ControlFlow<()>;
}

impl<F: FnMut(&Event<'_>) -> ControlFlow<()>> Observer for F {
    fn event(&mut self, e: &Event<'_>) -> ControlFlow<()> {
        self(e)
    }
}

/// The observer stopped the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stopped on slot {slot} after: {after}; run haimg again to resume, or `haimg rollback`")]
pub struct Aborted {
    pub slot: String,
    pub after: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    #[serde(flatten)]
    pub step: Step,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum SlotOutcome {
    Done,
    /// The new member failed its gate; `restored`: the old one serves again.
    GateFailed {
        error: String,
        restored: bool,
    },
    /// A backend call failed; `restored` as above.
    Failed {
        error: String,
        restored: bool,
    },
    /// Not touched: a check before the first change said no.
    Refused(String),
    /// The rollout stopped before this slot.
    NotStarted,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotReport {
    pub slot: String,
    pub role: Role,
    pub node: String,
    pub from: Brief,
    pub to: Brief,
    #[serde(flatten)]
    pub outcome: SlotOutcome,
    pub steps: Vec<StepRecord>,
    pub seconds: f64,
    /// From the start of the serving member's shutdown until its successor
    /// passed the gate (or, restored, started).
    pub down_s: Option<f64>,
    pub gate: Option<Passed>,
    /// After a restore: the old member's own health check.
    pub after_restore: Option<String>,
}

impl SlotReport {
    pub fn ok(&self) -> bool {
        self.outcome == SlotOutcome::Done
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub kind: Kind,
    pub dry_run: bool,
    pub slots: Vec<SlotReport>,
    pub seconds: f64,
    /// Why the run stopped early.
    pub stopped: Option<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.stopped.is_none() && self.slots.iter().all(SlotReport::ok)
    }

    /// The report of a plan with no slot: nothing was done.
    pub fn nothing(plan: &Plan) -> Report {
        Report {
            kind: plan.kind,
            dry_run: false,
            slots: Vec::new(),
            seconds: 0.0,
            stopped: None,
        }
    }
}

/// How a mongo member's primary role ends before its shutdown.
enum Handover {
    NotPrimary,
    /// `replSetStepDown` worked and another member is primary: the detail.
    SteppedDown(String),
    /// No credentials for `replSetStepDown`: mongod steps down at SIGTERM;
    /// wait for another primary after the shutdown. The detail so far.
    AtShutdown(String),
}

/// Why a step did not happen.
enum Fail {
    Gate(String),
    /// A check said no before anything changed.
    Refused(String),
    Backend(String),
}

pub struct Executor<'a, B: Backend + Sync + ?Sized> {
    pub backend: &'a B,
    pub cluster: &'a Cluster,
    pub gate: &'a dyn HealthGate,
    /// The built templates (deploy); a rollback needs none.
    pub templates: Option<&'a BTreeMap<Role, LocalTemplate>>,
    pub opts: Options,
    stored: Mutex<BTreeMap<(String, Role), Result<StoredTemplate, String>>>,
    caps: Mutex<Option<Capabilities>>,
}

impl<'a, B: Backend + Sync + ?Sized> Executor<'a, B> {
    pub fn new(
        backend: &'a B,
        cluster: &'a Cluster,
        gate: &'a dyn HealthGate,
        templates: Option<&'a BTreeMap<Role, LocalTemplate>>,
        opts: Options,
    ) -> Self {
        Executor {
            backend,
            cluster,
            gate,
            templates,
            opts,
            stored: Mutex::new(BTreeMap::new()),
            caps: Mutex::new(None),
        }
    }

    /// Every slot of the plan in order; stops after the first slot that fails.
    /// The templates the greens need are uploaded first (once per shared
    /// storage); a failed upload stops the rollout before anything changes.
    pub fn run(&self, plan: &Plan, obs: &mut dyn Observer) -> Result<Report, Aborted> {
        let t0 = Instant::now();
        let mut slots = Vec::new();
        let mut stopped: Option<String> = self.upload(plan);
        for sp in &plan.slots {
            if stopped.is_some() {
                slots.push(self.blank(sp, SlotOutcome::NotStarted));
                continue;
            }
            let r = self.run_slot(sp, obs)?;
            if !r.ok() {
                stopped = Some(match &r.outcome {
                    SlotOutcome::GateFailed { error, restored } => format!(
                        "{}: health gate failed ({error}); {}",
                        r.slot,
                        restored_text(*restored)
                    ),
                    SlotOutcome::Failed { error, restored } => {
                        format!("{}: {error}; {}", r.slot, restored_text(*restored))
                    }
                    SlotOutcome::Refused(why) => format!("{}: {why}", r.slot),
                    SlotOutcome::Done | SlotOutcome::NotStarted => String::new(),
                });
            }
            if obs.event(&Event::SlotFinished { report: &r }).is_break() {
                return Err(Aborted {
                    slot: r.slot.clone(),
                    after: "the slot finished".into(),
                });
            }
            slots.push(r);
        }
        Ok(Report {
            kind: plan.kind,
            dry_run: self.opts.dry_run,
            slots,
            seconds: t0.elapsed().as_secs_f64(),
            stopped,
        })
    }

    /// Upload every template a `Create` of the plan needs; the error, if any.
    fn upload(&self, plan: &Plan) -> Option<String> {
        let creates: Vec<&Member> = plan
            .slots
            .iter()
            .filter(|s| s.steps.iter().any(|st| matches!(st, Step::Create { .. })))
            .map(|s| &s.member)
            .collect();
        let templates = self.templates?;
        if creates.is_empty() {
            return None;
        }
        let (stored, _) =
            crate::fleet::upload::upload(self.backend, self.cluster, templates, &creates);
        let failed: Vec<String> = stored
            .iter()
            .filter_map(|((node, role), r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("{role} template on {node}: {e}"))
            })
            .collect();
        if let Ok(mut s) = self.stored.lock() {
            s.extend(stored);
        }
        (!failed.is_empty()).then(|| {
            format!(
                "template upload failed, nothing was changed: {}",
                failed.join("; ")
            )
        })
    }

    fn blank(&self, sp: &SlotPlan, outcome: SlotOutcome) -> SlotReport {
        SlotReport {
            slot: sp.slot.clone(),
            role: sp.role,
            node: sp.node.clone(),
            from: sp.blue.clone(),
            to: sp.green.clone(),
            outcome,
            steps: Vec::new(),
            seconds: 0.0,
            down_s: None,
            gate: None,
            after_restore: None,
        }
    }

    /// One slot: derive, do, apply, until done. Long on purpose: the view, the
    /// goal and the first failure are the loop's whole state, and splitting it
    /// would pass all three around.
    fn run_slot(&self, sp: &SlotPlan, obs: &mut dyn Observer) -> Result<SlotReport, Aborted> {
        let t0 = Instant::now();
        let mut rep = self.blank(sp, SlotOutcome::Done);
        let abort = |after: String| Aborted {
            slot: sp.slot.clone(),
            after,
        };
        if obs.event(&Event::SlotStarted { plan: sp }).is_break() {
            return Err(abort("nothing".into()));
        }
        let mut view = match observe_one(self.backend, self.cluster, &sp.member) {
            Ok(v) => v,
            Err(e) => {
                rep.outcome = SlotOutcome::Failed {
                    error: format!("failed to read the slot: {e}"),
                    restored: false,
                };
                return Ok(rep);
            }
        };
        let mut goal = sp.goal.clone();
        // The failure that turned the slot around, if any.
        let mut failure: Option<SlotOutcome> = None;
        let mut down_at: Option<Instant> = None;
        let mut started: Vec<u32> = Vec::new();
        let mut promoted = false;
        for _ in 0..2 * MAX_STEPS {
            let step = match next(&view, &goal) {
                Next::Done => break,
                Next::Step(s) => s,
                Next::Blocked(why) => {
                    rep.outcome = match failure.take() {
                        None => SlotOutcome::Refused(why),
                        Some(f) => unrestored(f, &why),
                    };
                    rep.seconds = t0.elapsed().as_secs_f64();
                    return Ok(rep);
                }
            };
            let ts = Instant::now();
            match self.exec(&view, &step, &goal, &mut rep) {
                Ok(detail) => {
                    if matches!(step, Step::Shutdown { serving: true, .. }) && down_at.is_none() {
                        down_at = Some(ts);
                    }
                    if matches!(step, Step::Promote { .. })
                        || (failure.is_some() && matches!(step, Step::Start { .. }))
                    {
                        rep.down_s = down_at.map(|d| d.elapsed().as_secs_f64());
                    }
                    match &step {
                        Step::Start { vmid } => started.push(*vmid),
                        Step::Promote { .. } => promoted = true,
                        _ => {}
                    }
                    apply(&mut view, &step, &goal);
                    let seconds = ts.elapsed().as_secs_f64();
                    rep.steps.push(StepRecord {
                        step: step.clone(),
                        seconds,
                        detail: detail.clone(),
                    });
                    let ev = Event::StepDone {
                        slot: &sp.slot,
                        step: &step,
                        seconds,
                        detail: detail.as_deref(),
                    };
                    if obs.event(&ev).is_break() {
                        return Err(abort(step.to_string()));
                    }
                }
                Err(f) => {
                    if let Some(first) = failure.take() {
                        let why = format!("then restoring failed at '{step}': {}", fail_text(&f));
                        rep.outcome = unrestored(first, &why);
                        rep.seconds = t0.elapsed().as_secs_f64();
                        return Ok(rep);
                    }
                    match f {
                        Fail::Refused(why) => {
                            rep.outcome = SlotOutcome::Refused(why);
                            rep.seconds = t0.elapsed().as_secs_f64();
                            return Ok(rep);
                        }
                        Fail::Gate(error) => {
                            if obs
                                .event(&Event::GateFailed {
                                    slot: &sp.slot,
                                    error: &error,
                                })
                                .is_break()
                            {
                                return Err(abort(format!("{step} (gate failed)")));
                            }
                            failure = Some(SlotOutcome::GateFailed {
                                error,
                                restored: false,
                            });
                        }
                        Fail::Backend(error) => {
                            failure = Some(SlotOutcome::Failed {
                                error: format!("{step}: {error}"),
                                restored: false,
                            });
                            // The call may have half happened: look again.
                            if !self.opts.dry_run {
                                match observe_one(self.backend, self.cluster, &sp.member) {
                                    Ok(v) => view = v,
                                    Err(e) => {
                                        let why =
                                            format!("could not read the slot to restore it: {e}");
                                        rep.outcome = unrestored(
                                            failure.take().unwrap_or(SlotOutcome::NotStarted),
                                            &why,
                                        );
                                        rep.seconds = t0.elapsed().as_secs_f64();
                                        return Ok(rep);
                                    }
                                }
                            }
                        }
                    }
                    // Back to the member that served before.
                    match view.live() {
                        Some(l) => goal = Goal::Container { vmid: l.vmid },
                        None => {
                            rep.outcome = unrestored(
                                failure.take().unwrap_or(SlotOutcome::NotStarted),
                                "no member left to restore",
                            );
                            return Ok(rep);
                        }
                    }
                }
            }
        }
        if failure.is_none() && !promoted && !self.opts.dry_run {
            // A member already tagged live was started (the way back from an
            // interrupted swap): it gets the same gate, as a check.
            if let Some(l) = view.live().filter(|l| started.contains(&l.vmid)) {
                let e = self.expect(&view.member, l.vmid, l.version(), l.template());
                match self
                    .gate
                    .wait_healthy(self.cluster, &e, self.opts.health_timeout)
                {
                    Ok(p) => rep.gate = Some(p),
                    Err(e) => {
                        rep.outcome = SlotOutcome::GateFailed {
                            error: format!("CT {} was started but is not healthy: {e}", l.vmid),
                            restored: false,
                        };
                    }
                }
                rep.down_s = down_at.map(|d| d.elapsed().as_secs_f64());
            }
        }
        if let Some(f) = failure {
            rep.outcome = match f {
                SlotOutcome::GateFailed { error, .. } => SlotOutcome::GateFailed {
                    error,
                    restored: true,
                },
                SlotOutcome::Failed { error, .. } => SlotOutcome::Failed {
                    error,
                    restored: true,
                },
                other => other,
            };
            if !self.opts.dry_run {
                if let Some(l) = view.live() {
                    let e = self.expect(&view.member, l.vmid, l.version(), l.template());
                    rep.after_restore = Some(
                        match self
                            .gate
                            .wait_healthy(self.cluster, &e, self.opts.health_timeout)
                        {
                            Ok(p) => format!("CT {} is healthy again: {}", l.vmid, p.detail),
                            Err(e) => {
                                format!("CT {} did not pass its health check either: {e}", l.vmid)
                            }
                        },
                    );
                }
            }
        }
        rep.seconds = t0.elapsed().as_secs_f64();
        Ok(rep)
    }

    fn expect(&self, m: &Member, vmid: u32, version: &str, template: &str) -> Expect {
        Expect {
            slot: m.slot.clone(),
            role: m.role,
            vmid,
            ip: m.ip,
            version: version.to_string(),
            template: template.to_string(),
            image_hash: None,
        }
    }

    /// Put the network policy on a green container before it ever starts, so
    /// it is filtered from its first packet and a later deploy has nothing to fix.
    fn firewall_for_green(&self, m: &Member, vmid: u32) -> Result<(), Fail> {
        let flows = haimg_model::policy::derive(self.cluster);
        let policy = Policy {
            cluster: self.cluster,
            flows: &flows,
            target_wide: false,
            guests: vec![Guest {
                member: m,
                vmid,
                fresh: true,
                absent: self.opts.dry_run,
            }],
            arp_owners: crate::fleet::members::arp_owners(self.cluster),
        };
        match self
            .backend
            .enforce_policy(&policy)
            .and_then(|r| r.errors.into_iter().next())
        {
            Some(e) => Err(Fail::Backend(format!("firewall of CT {vmid}: {e}"))),
            None => Ok(()),
        }
    }

    /// One step against the backend; `Ok(detail)`.
    fn exec(
        &self,
        view: &SlotView,
        step: &Step,
        goal: &Goal,
        rep: &mut SlotReport,
    ) -> Result<Option<String>, Fail> {
        let m = &view.member;
        let node = m.node.as_str();
        let be = |r: crate::backend::Result<()>| r.map_err(|e| Fail::Backend(e.to_string()));
        match step {
            Step::Destroy { vmid } => be(self.backend.destroy(node, *vmid)).map(|()| None),
            Step::Create { vmid } => {
                let Goal::Template(want) = goal else {
                    return Err(Fail::Backend("nothing to create a member from".into()));
                };
                let spec = self.green_spec(m, *vmid, want.tags.render())?;
                be(self.backend.create(&spec))?;
                self.firewall_for_green(m, *vmid)?;
                Ok(Some(spec.template.filename))
            }
            Step::Shutdown { vmid, serving } => {
                let mut handover = Handover::NotPrimary;
                if *serving {
                    self.check_tier(m)?;
                }
                if m.role.elects_primary() && !self.opts.dry_run {
                    handover = self.step_down_if_primary(m, *serving)?;
                }
                be(self
                    .backend
                    .shutdown(node, *vmid, self.opts.shutdown_timeout))?;
                match handover {
                    Handover::NotPrimary => Ok(None),
                    Handover::SteppedDown(d) => Ok(Some(d)),
                    Handover::AtShutdown(d) => self.await_new_primary(m, *vmid, d).map(Some),
                }
            }
            Step::MoveData { from, to } => {
                be(self.backend.move_data_volume(node, *from, *to)).map(|()| None)
            }
            Step::Start { vmid } => be(self.backend.start(node, *vmid)).map(|()| None),
            Step::Promote { vmid, gen } => {
                let ct = view
                    .get(*vmid)
                    .ok_or_else(|| Fail::Backend(format!("CT {vmid} vanished")))?;
                let detail = if self.opts.dry_run {
                    "health gate not asked (dry-run)".to_string()
                } else {
                    let e = self.expect(m, *vmid, ct.version(), ct.template());
                    let p = self
                        .gate
                        .wait_healthy(self.cluster, &e, self.opts.health_timeout)
                        .map_err(|e| Fail::Gate(e.to_string()))?;
                    let d = p.detail.clone();
                    rep.gate = Some(p);
                    if m.role.is_upstream() && !self.opts.upstream_settle.is_zero() {
                        // A fixed bound, not a guess: see `Options::upstream_settle`.
                        std::thread::sleep(self.opts.upstream_settle);
                        format!(
                            "{d}; back in nginx's rotation after {}s",
                            self.opts.upstream_settle.as_secs()
                        )
                    } else {
                        d
                    }
                };
                let mut tags = ct.tags.clone();
                tags.state = Some(State::Live);
                if let Some(g) = gen {
                    tags.gen = Some(g.clone());
                }
                be(self
                    .backend
                    .set_tags_onboot(node, *vmid, &tags.render(), true))
                .map(|()| Some(detail))
            }
            Step::Demote { vmid } => {
                let ct = view
                    .get(*vmid)
                    .ok_or_else(|| Fail::Backend(format!("CT {vmid} vanished")))?;
                let mut tags = ct.tags.clone();
                tags.state = Some(State::Standby);
                // A standby never starts by itself (a node reboot would bring
                // it up next to the live member, same IP and MAC).
                be(self
                    .backend
                    .set_tags_onboot(node, *vmid, &tags.render(), false))
                .map(|()| None)
            }
        }
    }

    /// Every other member of the tier must run before this one goes down.
    fn check_tier(&self, m: &Member) -> Result<(), Fail> {
        let inv = self.backend.inventory().map_err(|e| {
            Fail::Refused(format!(
                "failed to read the inventory before taking {} down: {e}",
                m.slot
            ))
        })?;
        let down: Vec<String> = self
            .cluster
            .members_of(m.role)
            .iter()
            .filter(|o| o.slot != m.slot)
            .filter(|o| {
                let v = SlotView::from_inventory(self.cluster, o, &inv);
                !v.live().is_some_and(|l| l.running)
            })
            .map(|o| o.slot.clone())
            .collect();
        if !down.is_empty() {
            return Err(Fail::Refused(format!(
                "{} of the {} tier {} not running; taking {} down now would leave more than one member of the tier down: bring {} back first",
                down.join(", "),
                m.role,
                if down.len() == 1 { "is" } else { "are" },
                m.slot,
                if down.len() == 1 { "it" } else { "them" }
            )));
        }
        if self.opts.dry_run {
            return Ok(());
        }
        self.check_tier_health(m, &inv)
    }

    /// Running is not serving: probe every other member of the tier and
    /// refuse when fewer would serve than the tier needs
    /// ([`haimg_model::tolerance`]: one lb, one webapp, a mongo majority).
    fn check_tier_health(
        &self,
        m: &Member,
        inv: &[crate::backend::ContainerStatus],
    ) -> Result<(), Fail> {
        let members = self.cluster.members_of(m.role);
        let needs = match m.role {
            Role::Mongo => members.len() / 2 + 1,
            Role::Lb | Role::Webapp => 1,
        };
        let mut healthy = 0;
        let mut sick = Vec::new();
        for o in members.iter().filter(|o| o.slot != m.slot) {
            let v = SlotView::from_inventory(self.cluster, o, inv);
            let Some(l) = v.live() else { continue };
            let e = self.expect(o, l.vmid, l.version(), l.template());
            match self.gate.wait_healthy(self.cluster, &e, TIER_PROBE) {
                Ok(_) => healthy += 1,
                Err(err) => sick.push(err.to_string()),
            }
        }
        if healthy >= needs {
            return Ok(());
        }
        Err(Fail::Refused(format!(
            "taking {} down now would leave the {} tier with {healthy} serving member(s) where it needs {needs} (`haimg check`); fix first: {}",
            m.slot,
            m.role,
            sick.join("; ")
        )))
    }

    /// Before a mongo member's shutdown: if it is primary, ask it to step
    /// down; without credentials for that, leave it to mongod's own
    /// step-down at SIGTERM (see `gate`'s module docs).
    fn step_down_if_primary(&self, m: &Member, serving: bool) -> Result<Handover, Fail> {
        match self.gate.mongo_primary(self.cluster) {
            Ok(Some(p)) if p == m.slot => {
                match self
                    .gate
                    .mongo_step_down(self.cluster, m, self.opts.step_down_timeout)
                {
                    Ok(()) => Ok(Handover::SteppedDown(format!(
                        "{} stepped down as primary first",
                        m.slot
                    ))),
                    Err(GateError::MongoNoCredentials { .. }) => {
                        let d = format!(
                            "{} is primary and haimg has no credentials for replSetStepDown (13 Unauthorized): mongod steps down by itself at its SIGTERM shutdown",
                            m.slot
                        );
                        tracing::info!("{d}");
                        Ok(Handover::AtShutdown(d))
                    }
                    Err(e) => Err(Fail::Refused(format!(
                        "{} is primary and could not step down: {e}",
                        m.slot
                    ))),
                }
            }
            Ok(_) => Ok(Handover::NotPrimary),
            Err(e) if serving => Err(Fail::Refused(format!(
                "cannot tell whether {} is primary: {e}",
                m.slot
            ))),
            Err(_) => Ok(Handover::NotPrimary),
        }
    }

    /// After the shutdown of a primary that stepped down by itself: wait up
    /// to the step-down timeout until another member answers PRIMARY, before
    /// anything starts in the slot. A failure is a backend-side failure: the
    /// shutdown happened, so the slot is read again and restored.
    fn await_new_primary(&self, m: &Member, vmid: u32, said: String) -> Result<String, Fail> {
        let t0 = Instant::now();
        match self
            .gate
            .mongo_wait_primary(self.cluster, m, self.opts.step_down_timeout)
        {
            Ok(p) => Ok(format!(
                "{said}; {p} is primary {:.1}s after the shutdown",
                t0.elapsed().as_secs_f64()
            )),
            Err(e) => Err(Fail::Backend(format!(
                "CT {vmid} was shut down as primary, then: {e}"
            ))),
        }
    }

    /// The green's container spec: the slot's, at the other VMID, without a
    /// data volume of its own (it receives the blue's).
    fn green_spec(
        &self,
        m: &Member,
        vmid: u32,
        tags: Vec<String>,
    ) -> Result<crate::backend::ContainerSpec, Fail> {
        let templates = self
            .templates
            .ok_or_else(|| Fail::Backend("no built templates to create a member from".into()))?;
        let local = &templates[&m.role];
        let key = (m.node.clone(), m.role);
        let cached = self.stored.lock().ok().and_then(|s| s.get(&key).cloned());
        let stored = match cached {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(Fail::Backend(format!("template upload failed: {e}"))),
            // A slot re-planned mid-run: upload now (a no-op when stored).
            None => {
                let s = self
                    .backend
                    .upload_template(&m.node, &local.path, &local.stored_name(), &local.sha256)
                    .map_err(|e| Fail::Backend(format!("template upload failed: {e}")))?;
                if let Ok(mut c) = self.stored.lock() {
                    c.insert(key, Ok(s.clone()));
                }
                s
            }
        };
        let cached = self.caps.lock().ok().and_then(|c| *c);
        let caps = match cached {
            Some(c) => c,
            None => {
                let c = self.backend.capabilities().map_err(|e| {
                    Fail::Backend(format!("failed to read the target's capabilities: {e}"))
                })?;
                if let Ok(mut g) = self.caps.lock() {
                    *g = Some(c);
                }
                c
            }
        };
        let mut spec = members::container_spec(self.cluster, m, local, &stored, caps);
        spec.vmid = vmid;
        spec.tags = tags;
        spec.data_volume_gb = None;
        spec.data_mount = None;
        // Created standby: it starts at boot only once promoted.
        spec.onboot = false;
        Ok(spec)
    }
}

fn fail_text(f: &Fail) -> &str {
    match f {
        Fail::Gate(s) | Fail::Refused(s) | Fail::Backend(s) => s,
    }
}

fn restored_text(restored: bool) -> &'static str {
    if restored {
        "the previous member serves again"
    } else {
        "THE SLOT MAY HAVE NO RUNNING MEMBER: run `haimg deploy` or `haimg rollback` again"
    }
}

/// The first failure, plus why the way back failed.
fn unrestored(first: SlotOutcome, why: &str) -> SlotOutcome {
    match first {
        SlotOutcome::GateFailed { error, .. } => SlotOutcome::GateFailed {
            error: format!("{error}; {why}"),
            restored: false,
        },
        SlotOutcome::Failed { error, .. } => SlotOutcome::Failed {
            error: format!("{error}; {why}"),
            restored: false,
        },
        _ => SlotOutcome::Failed {
            error: why.to_string(),
            restored: false,
        },
    }
}
