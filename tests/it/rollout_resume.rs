//! A rollout killed after every single step: the next `haimg deploy` finishes
//! it, and `haimg rollback` instead brings every slot back to the old
//! version. The step machine reads only tags, power states and who holds the
//! data volume, so each run picks up where the killed one stopped.

use crate::rollout_support;

use std::sync::{Arc, Mutex};

use rollout_support::{Bed, FakeGate, Recorder};

/// Steps of a full 9-slot rollout: 3 mongo x 6, 3 webapp x 5, 3 lb x 5.
const TOTAL_STEPS: usize = 48;

struct Reference {
    table: String,
    serials: Vec<Option<u64>>,
}

fn serials(bed: &Bed, vmids: impl Iterator<Item = u32>) -> Vec<Option<u64>> {
    vmids
        .map(|v| bed.fake.state().serial_of(v, "mp0"))
        .collect()
}

/// Kill the rollout after step `n`, then resume it on one copy and roll back on another.
fn kill_at(base: &Bed, n: usize, want: &Reference) {
    let killed = base.copy();
    let tl = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&killed, tl.clone());
    let v2 = killed.cluster("1.1.0");
    let tpl = killed.templates(&v2, "1.1.0");
    let b = killed.backend(&v2);
    let mut rec = Recorder::new(&killed, &v2, tl.clone());
    rec.kill_after = Some(n);
    let r = rollout_support::roll(&b, &v2, &tpl, &gate, &mut rec);
    if n < TOTAL_STEPS {
        let e = r.expect_err("killed");
        assert!(e.to_string().starts_with("stopped on slot "), "{e}");
    }
    assert_eq!(rec.steps, n);

    // Roll back from the killed state on a copy.
    let back = killed.copy();
    let tlb = Arc::new(Mutex::new(Vec::new()));
    let gate_b = FakeGate::new(&back, tlb.clone());
    *gate_b.primary.lock().unwrap() = gate.primary.lock().unwrap().clone();
    let v1 = back.v1.clone();
    let bb = back.backend(&v1);
    let mut rec_b = Recorder::new(&back, &v1, tlb);
    let rb = rollout_support::roll_back(&bb, &v1, &gate_b, &mut rec_b).unwrap();
    assert!(
        rb.ok(),
        "rollback after a kill at step {n}: {rb:#?}\n{}",
        back.table()
    );
    let live = back.live();
    assert_eq!(
        live.len(),
        9,
        "kill at {n}: every slot serves\n{}",
        back.table()
    );
    for (slot, (vmid, ver)) in &live {
        assert_eq!(
            ver,
            "1.0.0",
            "kill at {n}: {slot} rolled back\n{}",
            back.table()
        );
        assert!(*vmid < 1000, "kill at {n}: {slot} on CT {vmid}");
    }
    assert_eq!(
        serials(&back, 103..=105),
        want.serials,
        "kill at {n}: data back on the old members"
    );
    assert!(back.down_per_tier(&v1).is_empty());
    back.reboot_all_only_live_run(&format!("rollback after a kill at step {n}"));

    // Resume with the same spec: the rollout finishes as if never killed.
    let mut rec = Recorder::new(&killed, &v2, tl.clone());
    let r = rollout_support::roll(&b, &v2, &tpl, &gate, &mut rec).unwrap();
    assert!(r.ok(), "resume after a kill at step {n}: {r:#?}");
    assert_eq!(
        killed.table(),
        want.table,
        "resume after a kill at step {n}"
    );
    assert_eq!(
        serials(&killed, 1103..=1105),
        want.serials,
        "kill at {n}: data moved once"
    );
    assert!(killed.down_per_tier(&v2).is_empty());
    killed.reboot_all_only_live_run(&format!("resume after a kill at step {n}"));
    eprintln!(
        "kill after step {n:>2}: resume took {} step(s), rollback {} step(s)",
        rec.steps, rec_b.steps
    );
}

fn reference(base: &Bed) -> Reference {
    let bed = base.copy();
    let tl = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, tl.clone());
    let v2 = bed.cluster("1.1.0");
    let tpl = bed.templates(&v2, "1.1.0");
    let b = bed.backend(&v2);
    let serials_before = serials(&bed, 103..=105);
    let mut rec = Recorder::new(&bed, &v2, tl);
    let r = rollout_support::roll(&b, &v2, &tpl, &gate, &mut rec).unwrap();
    assert!(r.ok());
    assert_eq!(rec.steps, TOTAL_STEPS);
    Reference {
        table: bed.table(),
        serials: serials_before,
    }
}

#[test]
fn killed_after_each_odd_step_resumes_or_rolls_back() {
    let base = Bed::new();
    let want = reference(&base);
    for n in (1..=TOTAL_STEPS).step_by(2) {
        kill_at(&base, n, &want);
    }
}

#[test]
fn killed_after_each_even_step_resumes_or_rolls_back() {
    let base = Bed::new();
    let want = reference(&base);
    for n in (2..=TOTAL_STEPS).step_by(2) {
        kill_at(&base, n, &want);
    }
}
