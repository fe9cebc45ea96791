//! `haimg rollback` against the fake: the latest rollout's slots swap back to
//! their kept standbys in the rollout's order, through the same gates; a second
//! rollback has nothing to do; deploying the newer version again reuses the
//! standbys instead of creating members.

use crate::rollout_support;

use std::sync::{Arc, Mutex};

use haimg::rollout::executor::SlotOutcome;
use rollout_support::{Bed, FakeGate, Recorder};

fn rolled_out() -> (Bed, Arc<Mutex<Vec<String>>>) {
    let bed = Bed::new();
    let tl = Arc::new(Mutex::new(Vec::new()));
    {
        let gate = FakeGate::new(&bed, tl.clone());
        let v2 = bed.cluster("1.1.0");
        let tpl = bed.templates(&v2, "1.1.0");
        let mut rec = Recorder::new(&bed, &v2, tl.clone());
        let r = rollout_support::roll(&bed.backend(&v2), &v2, &tpl, &gate, &mut rec).unwrap();
        assert!(r.ok());
        bed.reboot_all_only_live_run("after a rollout");
        bed.fake.clear_requests();
    }
    (bed, tl)
}

#[test]
fn rollback_swaps_back_to_the_kept_members_in_the_same_order() {
    let (bed, tl) = rolled_out();
    let gate = FakeGate::new(&bed, tl.clone());
    // The rollout's step-down made mongo2 primary.
    *gate.primary.lock().unwrap() = Some("mongo2".into());
    let v1 = bed.v1.clone();
    let b = bed.backend(&v1);
    let serials: Vec<Option<u64>> = (1103..=1105)
        .map(|v| bed.fake.state().serial_of(v, "mp0"))
        .collect();

    let p = rollout_support::rollback_plan(&b, &v1, &gate);
    insta::assert_snapshot!("rollback_plan", haimg::cli::show::plan(&p));
    bed.fake.clear_requests();
    let mut rec = Recorder::new(&bed, &v1, tl.clone());
    let r = haimg::rollout::Executor::new(&b, &v1, &gate, None, rollout_support::opts(&v1))
        .run(&p, &mut rec)
        .unwrap();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(rec.worst_down, 1);
    let order: Vec<&str> = r.slots.iter().map(|s| s.slot.as_str()).collect();
    assert_eq!(
        order,
        [
            "mongo1", "mongo3", "mongo2", "webapp1", "webapp2", "webapp3", "nginx3", "nginx2",
            "nginx1"
        ]
    );
    let t = tl.lock().unwrap().clone();
    let pos = |s: &str| {
        t.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s}: {t:#?}"))
    };
    assert!(pos("step down mongo2") < pos("mongo2: drain and shut down CT 1104"));
    assert!(pos("gate webapp1 CT 106 1.0.0") < pos("webapp1: health gate, tag CT 106 live"));
    insta::assert_snapshot!("after_rollback", bed.table());
    assert!(bed
        .live()
        .iter()
        .all(|(_, (vmid, v))| *vmid < 1000 && v == "1.0.0"));
    let back: Vec<Option<u64>> = (103..=105)
        .map(|v| bed.fake.state().serial_of(v, "mp0"))
        .collect();
    assert_eq!(back, serials, "the data came back");
    let running = bed.reboot_all_only_live_run("after a rollback");
    assert_eq!(running, [100, 101, 102, 103, 104, 105, 106, 107, 108]);
    insta::assert_snapshot!(
        "rollback_mutating_calls",
        rollout_support::mutating(&bed.fake).join("\n")
    );
    let counts = bed.fake.counts();
    eprintln!(
        "rollback: {} API calls, {:.2}s; {counts:?}",
        b.calls().total(),
        r.seconds
    );
    assert!(!counts.contains_key("POST create-or-list") && !counts.contains_key("DELETE ct"));
    assert_eq!(counts["POST move-volume"], 3);

    // Nothing left to undo: the latest generation is not live any more.
    let again = rollout_support::rollback_plan(&b, &v1, &gate);
    assert!(again.is_empty());
    insta::assert_snapshot!(haimg::cli::show::plan(&again), @"rollback of cluster haimg: nothing to do: the latest rollout (generation 1) is not live on any member: it was rolled back, or failed its health gate and undid itself");

    // Deploying 1.1.0 again swaps to the kept members, nothing is created.
    let v2 = bed.cluster("1.1.0");
    let tpl = bed.templates(&v2, "1.1.0");
    let b2 = bed.backend(&v2);
    let p = rollout_support::deploy_plan(&b2, &v2, &tpl, &gate);
    assert_eq!(p.gen, Some(1), "the same rollout, resumed: same generation");
    assert!(
        p.slots.iter().all(|s| s.note.contains("reuses standby")),
        "{}",
        haimg::cli::show::plan(&p)
    );
    bed.fake.clear_requests();
    let mut rec = Recorder::new(&bed, &v2, tl.clone());
    let r = haimg::rollout::Executor::new(&b2, &v2, &gate, Some(&tpl), rollout_support::opts(&v2))
        .run(&p, &mut rec)
        .unwrap();
    assert!(r.ok());
    assert!(!bed.fake.counts().contains_key("POST create-or-list"));
    assert!(bed
        .live()
        .iter()
        .all(|(_, (vmid, v))| *vmid > 1000 && v == "1.1.0"));
}

#[test]
fn a_standby_that_fails_its_gate_leaves_the_new_version_serving() {
    let (bed, tl) = rolled_out();
    let gate = FakeGate::new(&bed, tl.clone());
    *gate.primary.lock().unwrap() = Some("mongo2".into());
    gate.fail("webapp1", "1.0.0");
    let v1 = bed.v1.clone();
    let b = bed.backend(&v1);
    let mut rec = Recorder::new(&bed, &v1, tl.clone());
    let r = rollout_support::roll_back(&b, &v1, &gate, &mut rec).unwrap();
    assert!(!r.ok());
    let w1 = r.slots.iter().find(|s| s.slot == "webapp1").unwrap();
    assert!(
        matches!(w1.outcome, SlotOutcome::GateFailed { restored: true, .. }),
        "{w1:#?}"
    );
    assert_eq!(bed.live()["webapp1"], (1106, "1.1.0".to_string()));
    assert_eq!(
        bed.live()["webapp2"],
        (1107, "1.1.0".to_string()),
        "stopped before it"
    );
    assert_eq!(
        bed.live()["mongo1"],
        (103, "1.0.0".to_string()),
        "done before it"
    );
}

#[test]
fn without_a_rollout_there_is_nothing_to_roll_back() {
    let bed = Bed::new();
    let gate = FakeGate::new(&bed, Arc::new(Mutex::new(Vec::new())));
    let p = rollout_support::rollback_plan(&bed.backend(&bed.v1), &bed.v1, &gate);
    assert!(p.is_empty());
    insta::assert_snapshot!(haimg::cli::show::plan(&p), @"rollback of cluster haimg: nothing to do: no rollout has happened: there is no standby to go back to");
}
