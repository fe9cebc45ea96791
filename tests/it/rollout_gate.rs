//! Health gates that fail, calls that fail, and a tier that loses a member
//! during the rollout: the slot goes back to its old member, the rollout
//! stops with a report, and nothing else is touched.

use crate::rollout_support;
use crate::support;

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use haimg::rollout::executor::{Event, Report, SlotOutcome};
use haimg::rollout::Observer;
use rollout_support::{Bed, FakeGate, Recorder};
use support::pve_fake::{Fault, FaultKind};

fn outcomes(r: &Report) -> String {
    r.slots
        .iter()
        .map(|s| {
            let o = match &s.outcome {
                SlotOutcome::Done => "done".to_string(),
                SlotOutcome::GateFailed { error, restored } => {
                    format!("gate failed (restored: {restored}): {error}")
                }
                SlotOutcome::Failed { error, restored } => {
                    format!("failed (restored: {restored}): {error}")
                }
                SlotOutcome::Refused(w) => format!("refused: {w}"),
                SlotOutcome::NotStarted => "not started".into(),
            };
            let steps: Vec<String> = s.steps.iter().map(|x| x.step.to_string()).collect();
            format!(
                "{}: {o}\n    steps: {}{}\n",
                s.slot,
                steps.join(", "),
                s.after_restore
                    .as_deref()
                    .map(|a| format!("\n    after: {a}"))
                    .unwrap_or_default()
            )
        })
        .collect::<String>()
        + &format!("stopped: {}\n", r.stopped.as_deref().unwrap_or("-"))
}

#[test]
fn a_green_that_fails_its_gate_is_stopped_and_blue_serves_again() {
    let bed = Bed::new();
    let tl = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, tl.clone());
    gate.fail("webapp2", "1.1.0");
    let v2 = bed.cluster("1.1.0");
    let tpl = bed.templates(&v2, "1.1.0");
    let b = bed.backend(&v2);
    let mut rec = Recorder::new(&bed, &v2, tl.clone());
    let r = rollout_support::roll(&b, &v2, &tpl, &gate, &mut rec).unwrap();
    assert!(!r.ok());
    assert_eq!(rec.worst_down, 1);
    insta::assert_snapshot!("gate_failure_report", outcomes(&r));
    insta::assert_snapshot!("gate_failure_state", bed.table());
    assert_eq!(bed.live()["webapp2"], (107, "1.0.0".to_string()));
    assert_eq!(
        bed.live()["webapp3"],
        (108, "1.0.0".to_string()),
        "not touched"
    );
    assert_eq!(
        bed.live()["nginx1"],
        (100, "1.0.0".to_string()),
        "not touched"
    );

    // Run again, still failing: the kept green is reused and fails again; nothing is lost.
    let mut rec = Recorder::new(&bed, &v2, tl.clone());
    let again = rollout_support::roll(&b, &v2, &tpl, &gate, &mut rec).unwrap();
    assert_eq!(again.slots[0].slot, "webapp2");
    assert!(matches!(
        again.slots[0].outcome,
        SlotOutcome::GateFailed { restored: true, .. }
    ));
    assert!(
        !again.slots[0]
            .steps
            .iter()
            .any(|s| s.step.to_string().starts_with("create")),
        "reused"
    );
    assert_eq!(bed.live()["webapp2"], (107, "1.0.0".to_string()));

    // Fixed (a new build would do the same): the rollout finishes.
    gate.fail.lock().unwrap().clear();
    let mut rec = Recorder::new(&bed, &v2, tl.clone());
    let done = rollout_support::roll(&b, &v2, &tpl, &gate, &mut rec).unwrap();
    assert!(done.ok(), "{}", outcomes(&done));
    assert_eq!(
        done.slots.len(),
        5,
        "webapp2, webapp3 and the three lbs were left"
    );
    assert!(bed.live().values().all(|(_, v)| v == "1.1.0"));
}

#[test]
fn a_mongo_green_that_fails_gives_the_data_volume_back() {
    let bed = Bed::new();
    let tl = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, tl.clone());
    gate.fail("mongo2", "1.1.0");
    let v2 = bed.cluster("1.1.0");
    let tpl = bed.templates(&v2, "1.1.0");
    let b = bed.backend(&v2);
    let serial = bed.fake.state().serial_of(104, "mp0");
    let mut rec = Recorder::new(&bed, &v2, tl.clone());
    let r = rollout_support::roll(&b, &v2, &tpl, &gate, &mut rec).unwrap();
    insta::assert_snapshot!(outcomes(&r).lines().take(3).collect::<Vec<_>>().join("\n"), @r"
    mongo2: gate failed (restored: true): mongo2 (CT 1104) did not pass its mongo health gate within 0s: the app exits at start (injected)
        steps: create CT 1104 stopped, drain and shut down CT 104, move mp0 CT 104 -> CT 1104, start CT 1104, shut down CT 1104, move mp0 CT 1104 -> CT 104, start CT 104
        after: CT 104 is healthy again: fake: CT 104 serves 1.0.0
    ");
    assert_eq!(bed.fake.state().serial_of(104, "mp0"), serial);
    assert_eq!(bed.fake.state().serial_of(1104, "mp0"), None);
    assert_eq!(
        r.slots
            .iter()
            .filter(|s| s.outcome == SlotOutcome::NotStarted)
            .count(),
        8
    );
}

#[test]
fn a_failing_start_restores_the_slot() {
    let bed = Bed::new();
    let tl = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, tl.clone());
    let tpl = bed.webapp_only("w2");
    let b = bed.backend(&bed.v1);
    // A failed start of a stopped container is tried again: fail every try.
    bed.fake.inject(Fault::new(
        "POST",
        "/lxc/1106/status/start",
        haimg::backend::proxmox::START_TRIES,
        FaultKind::TaskFails("startup for container '1106' failed".into()),
    ));
    let mut rec = Recorder::new(&bed, &bed.v1, tl.clone());
    let r = rollout_support::roll(&b, &bed.v1, &tpl, &gate, &mut rec).unwrap();
    assert_eq!(r.slots.len(), 3, "only the webapp tier changes");
    let SlotOutcome::Failed { error, restored } = &r.slots[0].outcome else {
        panic!("{}", outcomes(&r))
    };
    assert!(*restored);
    assert!(error.starts_with("start CT 1106: POST /nodes/pve1/lxc/1106/status/start on node pve1 for CT 1106: task vzstart failed: startup for container '1106' failed"), "{error}");
    assert_eq!(bed.live()["webapp1"], (106, "1.0.0".to_string()));
    assert_eq!(bed.fake.faults_left(), 0);
}

/// Crashes webapp3 once webapp1 is done.
struct CrashLater<'a> {
    inner: Recorder<'a>,
    done: bool,
}

impl Observer for CrashLater<'_> {
    fn event(&mut self, e: &Event<'_>) -> ControlFlow<()> {
        if let Event::SlotFinished { report } = e {
            if report.slot == "webapp1" && !self.done {
                self.inner.bed.crash(108);
                self.done = true;
            }
        }
        if let Event::StepDone { .. } = e {
            // The crash makes a second member of the tier down by itself;
            // the rollout must not add a third.
            self.inner.steps += 1;
        }
        ControlFlow::Continue(())
    }
}

#[test]
fn a_tier_member_down_stops_the_rollout_before_the_next_swap() {
    let bed = Bed::new();
    let tl = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, tl.clone());
    let tpl = bed.webapp_only("w2");
    let b = bed.backend(&bed.v1);
    let mut obs = CrashLater {
        inner: Recorder::new(&bed, &bed.v1, tl.clone()),
        done: false,
    };
    let r = rollout_support::roll(&b, &bed.v1, &tpl, &gate, &mut obs).unwrap();
    insta::assert_snapshot!(outcomes(&r), @r"
    webapp1: done
        steps: create CT 1106 stopped, drain and shut down CT 106, start CT 1106, health gate, tag CT 1106 live, tag CT 106 standby
    webapp2: refused: webapp3 of the webapp tier is not running; taking webapp2 down now would leave more than one member of the tier down: bring it back first
        steps: create CT 1107 stopped
    webapp3: not started
        steps: 
    stopped: webapp2: webapp3 of the webapp tier is not running; taking webapp2 down now would leave more than one member of the tier down: bring it back first
    ");
    assert!(
        bed.fake.state().containers[&107].running,
        "webapp2 kept serving"
    );
    assert_eq!(
        bed.down_per_tier(&bed.v1)
            .get(&haimg::model::Role::Webapp)
            .map(Vec::len),
        Some(1)
    );
}

/// Running is not serving: with webapp2 and webapp3 running but failing
/// their health probe, draining webapp1 would leave the tier nobody to
/// serve. The rollout stops before the drain; webapp1 keeps serving.
#[test]
fn running_but_unhealthy_members_stop_the_rollout_before_a_drain() {
    let bed = Bed::new();
    let tl = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, tl.clone());
    gate.fail("webapp2", "1.0.0");
    gate.fail("webapp3", "1.0.0");
    let tpl = bed.webapp_only("w2");
    let b = bed.backend(&bed.v1);
    let mut rec = Recorder::new(&bed, &bed.v1, tl.clone());
    let r = rollout_support::roll(&b, &bed.v1, &tpl, &gate, &mut rec).unwrap();
    insta::assert_snapshot!(outcomes(&r), @r"
    webapp1: refused: taking webapp1 down now would leave the webapp tier with 0 serving member(s) where it needs 1 (`haimg check`); fix first: webapp2 (CT 107) did not pass its webapp health gate within 0s: the app exits at start (injected); webapp3 (CT 108) did not pass its webapp health gate within 0s: the app exits at start (injected)
        steps: create CT 1106 stopped
    webapp2: not started
        steps: 
    webapp3: not started
        steps: 
    stopped: webapp1: taking webapp1 down now would leave the webapp tier with 0 serving member(s) where it needs 1 (`haimg check`); fix first: webapp2 (CT 107) did not pass its webapp health gate within 0s: the app exits at start (injected); webapp3 (CT 108) did not pass its webapp health gate within 0s: the app exits at start (injected)
    ");
    let st = bed.fake.state();
    for v in [106, 107, 108] {
        assert!(st.containers[&v].running, "CT {v} kept running");
    }
}
