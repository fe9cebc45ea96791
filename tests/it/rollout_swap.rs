//! Blue/green rollouts against the Proxmox fake: the order, the VMID ranges,
//! the data volume hand-over, the tags, the plan and every API call.

use crate::rollout_support;
use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rollout_support::{Bed, FakeGate, Recorder};

#[test]
fn a_full_rollout_swaps_every_slot_one_at_a_time() {
    let bed = Bed::new();
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, timeline.clone());
    let v2 = bed.cluster("1.1.0");
    let tpl = bed.templates(&v2, "1.1.0");
    let b = bed.backend(&v2);
    let serials_before: Vec<Option<u64>> = (103..=105)
        .map(|v| bed.fake.state().serial_of(v, "mp0"))
        .collect();

    let p = rollout_support::deploy_plan(&b, &v2, &tpl, &gate);
    insta::assert_snapshot!("full_rollout_plan", haimg::cli::show::plan(&p));
    bed.fake.clear_requests();

    let mut rec = Recorder::new(&bed, &v2, timeline.clone());
    let t0 = Instant::now();
    let r = haimg::rollout::Executor::new(&b, &v2, &gate, Some(&tpl), rollout_support::opts(&v2))
        .run(&p, &mut rec)
        .unwrap();
    let took = t0.elapsed();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(rec.worst_down, 1, "one member at a time goes down");

    // Order: mongo secondaries, the primary (stepped down first), webapps, lb backups by priority, the master.
    let order: Vec<&str> = r.slots.iter().map(|s| s.slot.as_str()).collect();
    assert_eq!(
        order,
        [
            "mongo2", "mongo3", "mongo1", "webapp1", "webapp2", "webapp3", "nginx3", "nginx2",
            "nginx1"
        ]
    );
    let tl = timeline.lock().unwrap().clone();
    let pos = |s: &str| {
        tl.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} not in {tl:#?}"))
    };
    assert!(pos("step down mongo1") < pos("mongo1: drain and shut down CT 103"));
    assert!(!tl
        .iter()
        .any(|x| x == "step down mongo2" || x == "step down mongo3"));

    // Greens live on the other VMID range, blues kept stopped as standbys; the data moved.
    insta::assert_snapshot!("after_full_rollout", bed.table());
    let live = bed.live();
    assert!(
        live.values()
            .all(|(vmid, ver)| *vmid > 1000 && ver == "1.1.0"),
        "{live:?}"
    );
    let serials_after: Vec<Option<u64>> = (1103..=1105)
        .map(|v| bed.fake.state().serial_of(v, "mp0"))
        .collect();
    assert_eq!(
        serials_before, serials_after,
        "the same data volumes, renamed"
    );
    assert!(serials_after.iter().all(Option::is_some));

    // Every mutating call, in order.
    insta::assert_snapshot!(
        "full_rollout_mutating_calls",
        rollout_support::mutating(&bed.fake).join("\n")
    );
    let counts = bed.fake.counts();
    let calls = b.calls();
    eprintln!(
        "full rollout: {} API calls ({calls:?}) in {:.2}s, {:.3}s per slot; by kind {counts:?}",
        calls.total(),
        took.as_secs_f64(),
        took.as_secs_f64() / 9.0
    );
    for s in &r.slots {
        eprintln!(
            "  {:<8} {:.3}s (down {:.3}s)",
            s.slot,
            s.seconds,
            s.down_s.unwrap_or(0.0)
        );
    }
    assert_eq!(counts["POST create-or-list"], 9);
    assert_eq!(counts["POST move-volume"], 3);
    assert_eq!(counts["POST shutdown"], 9);
    assert_eq!(counts["POST start"], 9);
    assert_eq!(counts["PUT config"], 18);
    assert_eq!(counts["POST upload"], 3);

    // Nothing left to do: the plan is empty and a converge changes nothing.
    let again = rollout_support::deploy_plan(&b, &v2, &tpl, &gate);
    assert!(again.is_empty(), "{}", haimg::cli::show::plan(&again));
    bed.fake.clear_requests();
    let conv = support::converge(&bed.backend(&v2), &v2, &tpl);
    assert_eq!(
        conv.count(|a| *a == haimg::deploy::Action::Unchanged),
        9,
        "{conv:#?}"
    );
    assert!(bed.fake.requests().iter().all(|r| r.method == "GET"));
    // The converge reports the live VMIDs.
    assert_eq!(conv.members[0].vmid, 1100);
}

#[test]
fn the_next_rollout_alternates_back_and_replaces_the_oldest_standby() {
    let bed = Bed::new();
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, timeline.clone());
    let v2 = bed.cluster("1.1.0");
    let tpl2 = bed.templates(&v2, "1.1.0");
    let b = bed.backend(&v2);
    let mut rec = Recorder::new(&bed, &v2, timeline.clone());
    assert!(rollout_support::roll(&b, &v2, &tpl2, &gate, &mut rec)
        .unwrap()
        .ok());

    let v3 = bed.cluster("1.2.0");
    let tpl3 = bed.templates(&v3, "1.2.0");
    let b3 = bed.backend(&v3);
    let p = rollout_support::deploy_plan(&b3, &v3, &tpl3, &gate);
    insta::assert_snapshot!("second_rollout_plan", haimg::cli::show::plan(&p));
    bed.fake.clear_requests();
    let mut rec = Recorder::new(&bed, &v3, timeline.clone());
    let r = haimg::rollout::Executor::new(&b3, &v3, &gate, Some(&tpl3), rollout_support::opts(&v3))
        .run(&p, &mut rec)
        .unwrap();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(rec.worst_down, 1);
    insta::assert_snapshot!("after_second_rollout", bed.table());
    let live = bed.live();
    assert!(
        live.values()
            .all(|(vmid, ver)| *vmid < 1000 && ver == "1.2.0"),
        "{live:?}"
    );
    let counts = bed.fake.counts();
    assert_eq!(
        counts["DELETE ct"], 9,
        "the 1.0.0 standbys made room: {counts:?}"
    );
    eprintln!(
        "second rollout: {} API calls, {:.2}s",
        b3.calls().total(),
        r.seconds
    );
}

#[test]
fn dry_run_prints_the_plan_and_every_call_and_changes_nothing() {
    let bed = Bed::new();
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, timeline.clone());
    let v2 = bed.cluster("1.1.0");
    let tpl = bed.templates(&v2, "1.1.0");
    let b = bed.backend(&v2).into_dry_run();
    let before = bed.table();
    let p = rollout_support::deploy_plan(&b, &v2, &tpl, &gate);
    let mut opts = rollout_support::opts(&v2);
    opts.dry_run = true;
    let mut rec = Recorder::new(&bed, &v2, timeline.clone());
    let r = haimg::rollout::Executor::new(&b, &v2, &gate, Some(&tpl), opts)
        .run(&p, &mut rec)
        .unwrap();
    assert!(r.ok() && r.dry_run);
    assert_eq!(bed.table(), before);
    assert!(bed.fake.requests().iter().all(|r| r.method == "GET"));
    assert!(
        !timeline
            .lock()
            .unwrap()
            .iter()
            .any(|t| t.starts_with("gate") || t.starts_with("step down")),
        "dry-run asks no gate"
    );
    let calls: Vec<String> = b.planned().iter().map(|c| c.to_string()).collect();
    let text = calls
        .join("\n")
        .replace(bed.dir.path().to_str().unwrap(), "[DIR]");
    insta::assert_snapshot!("dry_run_rollout_calls", text);
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("POST /nodes/pve1/lxc\n"))
            .count(),
        3
    );
    // Shared template storage: one upload per role, as in a real run.
    assert_eq!(calls.iter().filter(|c| c.contains("/upload\n")).count(), 3);
}

#[test]
fn a_foreign_guest_on_a_green_vmid_blocks_only_its_slot() {
    let bed = Bed::new();
    bed.fake.state().add_foreign(1107, "pve2", "qemu");
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, timeline.clone());
    let tpl = bed.webapp_only("w2");
    let b = bed.backend(&bed.v1);
    let p = rollout_support::deploy_plan(&b, &bed.v1, &tpl, &gate);
    assert_eq!(p.slots.len(), 2);
    let text = haimg::cli::show::plan(&p);
    let blocked = text.lines().find(|l| l.starts_with("blocked:")).unwrap();
    insta::assert_snapshot!(blocked, @r#"blocked: webapp2: CT 107 runs version 1.0.0 (template e3e61734a2bc), the spec wants 1.0.0 (template 0b6a37e92e96); VMID 1107 (the green VMID of slot webapp2) is held by guest "other1107" on pve2 that is not this slot's member; free the VMID or change the spec"#);
    let mut rec = Recorder::new(&bed, &bed.v1, timeline);
    let r = haimg::rollout::Executor::new(
        &b,
        &bed.v1,
        &gate,
        Some(&tpl),
        rollout_support::opts(&bed.v1),
    )
    .run(&p, &mut rec)
    .unwrap();
    assert!(r.ok());
    assert_eq!(bed.live()["webapp2"], (107, "1.0.0".to_string()));
    assert_eq!(
        bed.fake.state().containers[&1107].kind,
        "qemu",
        "left alone"
    );
}
