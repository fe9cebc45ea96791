//! `haimg gc` against the fake: standbys of generations past
//! `rollout.keep_versions` and templates no container uses go; live members,
//! kept standbys, foreign files and other clusters' templates stay; an
//! interrupted rollout blocks it.

use crate::rollout_support;

use std::sync::{Arc, Mutex};

use haimg::fleet::slot;
use haimg::rollout::gc;
use rollout_support::{Bed, FakeGate, Recorder};

fn roll_to(bed: &Bed, version: &str) {
    let tl = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(bed, tl.clone());
    let c = bed.cluster(version);
    let tpl = bed.templates(&c, version);
    let mut rec = Recorder::new(bed, &c, tl);
    assert!(
        rollout_support::roll(&bed.backend(&c), &c, &tpl, &gate, &mut rec)
            .unwrap()
            .ok()
    );
}

fn stored(bed: &Bed) -> Vec<String> {
    let st = bed.fake.state();
    let s = st.storages.iter().find(|s| s.id == "templates").unwrap();
    s.files_on("pve1").keys().cloned().collect()
}

fn gc_plan(bed: &Bed, keep: u32) -> (gc::GcPlan, haimg::model::Cluster) {
    let c = rollout_support::cluster_keep(&bed.fake, "1.0.0", keep);
    let b = bed.backend(&c);
    let views = slot::observe(&b, &c).unwrap();
    (gc::plan(&b, &c, &views).unwrap(), c)
}

#[test]
fn keep_two_keeps_the_rollback_target_and_drops_older_templates() {
    let bed = Bed::new();
    roll_to(&bed, "1.1.0");
    let (p, c) = gc_plan(&bed, 2);
    insta::assert_snapshot!(haimg::cli::show::gc(&p, &c), @r"
    gc of cluster haimg: keeping generation(s) 1, 0 (rollout.keep_versions = 2)
      nothing to remove
    ");

    roll_to(&bed, "1.2.0");
    // A template someone else put there, and one of another haimg cluster.
    {
        let mut st = bed.fake.state();
        let files = st
            .storages
            .iter_mut()
            .find(|s| s.id == "templates")
            .unwrap()
            .files
            .entry("*".into())
            .or_default();
        files.insert(
            "debian-12-standard_12.7-1_amd64.tar.zst".into(),
            (1, "x".into()),
        );
        files.insert(
            "haimg-lb_9.9.9-aaaaaaaaaaaa_amd64.tar.zst".into(),
            (1, "y".into()),
        );
        st.add_foreign(300, "pve1", "lxc");
        st.containers.get_mut(&300).unwrap().config.insert(
            "tags".into(),
            "cluster-other;haimg;role-lb;slot-nginx1;tpl-aaaaaaaaaaaa;ver-9.9.9".into(),
        );
    }
    let (p, c) = gc_plan(&bed, 2);
    insta::assert_snapshot!(haimg::cli::show::gc(&p, &c), @r"
    gc of cluster haimg: keeping generation(s) 2, 1 (rollout.keep_versions = 2)
      remove template templates:vztmpl/haimg-lb_1.0.0-0e8f690a4e58_amd64.tar.zst on pve1: no haimg container uses it
      remove template templates:vztmpl/haimg-mongo_1.0.0-424da1417ac4_amd64.tar.zst on pve1: no haimg container uses it
      remove template templates:vztmpl/haimg-webapp_1.0.0-e3e61734a2bc_amd64.tar.zst on pve1: no haimg container uses it
    ");
    bed.fake.clear_requests();
    let r = gc::run(&bed.backend(&c), &p, false);
    assert!(r.ok(), "{r:#?}");
    assert_eq!(r.removed_templates.len(), 3);
    let left = stored(&bed);
    assert!(left.iter().any(|f| f.starts_with("debian-12")), "{left:?}");
    assert!(
        left.iter().any(|f| f.contains("aaaaaaaaaaaa")),
        "another cluster's: {left:?}"
    );
    assert_eq!(
        left.iter().filter(|f| f.starts_with("haimg-")).count(),
        7,
        "{left:?}"
    );
    assert_eq!(bed.fake.containers_len(), 19);
    let counts = bed.fake.counts();
    assert_eq!(counts["DELETE content"], 3, "{counts:?}");
}

#[test]
fn keep_one_removes_every_standby_and_its_template() {
    let bed = Bed::new();
    roll_to(&bed, "1.1.0");
    let (p, c) = gc_plan(&bed, 1);
    assert_eq!(p.members.len(), 9);
    assert!(p
        .members
        .iter()
        .all(|m| m.vmid < 1000 && m.version == "1.0.0"));
    assert_eq!(p.templates.len(), 3);
    bed.fake.clear_requests();
    let r = gc::run(&bed.backend(&c), &p, false);
    insta::assert_snapshot!(
        "gc_mutating_calls",
        rollout_support::mutating(&bed.fake).join("\n")
    );
    assert!(r.ok());
    assert_eq!(r.removed_members.len(), 9);
    assert_eq!(bed.fake.containers_len(), 9);
    assert!(bed
        .live()
        .values()
        .all(|(v, ver)| *v > 1000 && ver == "1.1.0"));
    // The mongo data volumes stayed with the live members; the standbys' volumes are gone.
    for v in 1103..=1105 {
        assert!(bed.fake.state().serial_of(v, "mp0").is_some());
    }
    assert!(!bed
        .fake
        .state()
        .volumes
        .keys()
        .any(|k| k.contains("vm-103-") || k.contains("vm-108-")));
    // Nothing to roll back to any more, and gc again has nothing to do.
    let gate = FakeGate::new(&bed, Arc::new(Mutex::new(Vec::new())));
    let rb = rollout_support::rollback_plan(&bed.backend(&c), &c, &gate);
    assert!(rb.is_empty());
    let (p, _) = gc_plan(&bed, 1);
    assert!(p.members.is_empty() && p.templates.is_empty());
}

#[test]
fn an_interrupted_rollout_blocks_gc() {
    let bed = Bed::new();
    let tl = Arc::new(Mutex::new(Vec::new()));
    let gate = FakeGate::new(&bed, tl.clone());
    let v2 = bed.cluster("1.1.0");
    let tpl = bed.templates(&v2, "1.1.0");
    let mut rec = Recorder::new(&bed, &v2, tl);
    rec.kill_after = Some(2);
    assert!(rollout_support::roll(&bed.backend(&v2), &v2, &tpl, &gate, &mut rec).is_err());
    let (p, c) = gc_plan(&bed, 1);
    insta::assert_snapshot!(haimg::cli::show::gc(&p, &c), @"gc: nothing removed: slot mongo2 is not at rest (an interrupted rollout or rollback): finish it with `haimg deploy` or undo it with `haimg rollback` first");
    bed.fake.clear_requests();
    let r = gc::run(&bed.backend(&c), &p, false);
    assert!(r.removed_members.is_empty());
    assert!(bed.fake.requests().is_empty());
}

/// A live member whose config holds a volume *named* for its standby (the
/// storage kept the old name, or an admin attached it by hand): destroying
/// the standby must not free it. With `destroy-unreferenced-disks`, Proxmox
/// frees every volume named `vm-<standby>-…` whoever holds it.
#[test]
fn destroying_a_standby_never_frees_a_volume_the_live_member_holds() {
    let bed = Bed::new();
    roll_to(&bed, "1.1.0");
    {
        let mut st = bed.fake.state();
        let vol = "local-lvm:vm-103-disk-7".to_string();
        st.volumes.insert(vol.clone(), 4242);
        let live = st.containers.get_mut(&1103).unwrap();
        live.config
            .insert("mp1".into(), format!("{vol},mp=/var/backups,size=1G"));
    }
    let (p, c) = gc_plan(&bed, 1);
    assert!(p.members.iter().any(|m| m.vmid == 103));
    let r = gc::run(&bed.backend(&c), &p, false);
    assert!(r.ok(), "{r:?}");
    let st = bed.fake.state();
    assert!(!st.containers.contains_key(&103));
    assert_eq!(
        st.serial_of(1103, "mp1"),
        Some(4242),
        "the live member's volume is gone"
    );
    assert!(st.serial_of(1103, "mp0").is_some());
}

/// A standby that holds a data volume (`mp0`) is never destroyed: gc
/// reports it with what to do, and the data stays.
#[test]
fn a_standby_holding_a_data_volume_is_refused_and_kept() {
    let bed = Bed::new();
    roll_to(&bed, "1.1.0");
    {
        // A second data volume on the stopped standby (a hand-made copy).
        let mut st = bed.fake.state();
        let vol = "local-lvm:vm-104-disk-5".to_string();
        st.volumes.insert(vol.clone(), 77);
        let standby = st.containers.get_mut(&104).unwrap();
        standby
            .config
            .insert("mp0".into(), format!("{vol},mp=/var/lib/mongodb,size=16G"));
    }
    let (p, c) = gc_plan(&bed, 1);
    let r = gc::run(&bed.backend(&c), &p, false);
    assert!(!r.ok());
    insta::assert_snapshot!(r.failures.join("\n"), @"mongo2 CT 104: DELETE /nodes/pve2/lxc/104 on node pve2 for CT 104: refusing to destroy CT 104: it holds a data volume (mp0 local-lvm:vm-104-disk-5); haimg never destroys data. Move the volume to the live member (`haimg deploy` does when the slot needs it) or, if the data is not needed, remove it by hand: `pct set 104 --delete mp0`, then `haimg gc`");
    assert_eq!(r.removed_members.len(), 8);
    let st = bed.fake.state();
    assert!(st.containers.contains_key(&104));
    assert_eq!(st.serial_of(104, "mp0"), Some(77));
}
