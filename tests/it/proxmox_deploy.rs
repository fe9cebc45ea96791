//! A full `haimg deploy` against the Proxmox fake: uploads, creates, starts,
//! a second run that changes nothing, dry-run, and snapshots of every request body.

use crate::support;

use haimg::deploy::{self, Action};
use support::pve_fake::{kind_of, Body, Config, FakePve, Recorded};

/// Mutating requests of the member flow; the firewall step's are snapshot in
/// `proxmox_firewall.rs`.
fn mutating(reqs: &[Recorded]) -> Vec<Recorded> {
    let mut v: Vec<Recorded> = reqs
        .iter()
        .filter(|r| r.method != "GET" && kind_of(&r.path) != "firewall")
        .cloned()
        .collect();
    // Nodes run in parallel: order by path for a stable snapshot.
    v.sort_by(|a, b| {
        (a.path.clone(), format!("{:?}", a.body)).cmp(&(b.path.clone(), format!("{:?}", b.body)))
    });
    v
}

#[test]
fn full_deploy_then_nothing_to_do() {
    let fake = FakePve::start(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::cluster(&fake, "templates");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let tpl = support::find_templates(&out, &cluster);

    let b = support::backend(&cluster);
    let report = support::deploy(&b, &cluster, &tpl, false).unwrap();
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.count(|a| *a == Action::Created), 9);
    let counts = fake.counts();
    eprintln!(
        "first run: {} API calls by the client {:?}; fake saw {counts:?}",
        b.calls().total(),
        b.calls()
    );
    assert_eq!(counts["POST upload"], 3, "{counts:?}");
    assert_eq!(counts["POST create-or-list"], 9, "{counts:?}");
    assert_eq!(counts["POST start"], 9, "{counts:?}");
    assert_eq!(b.calls().total() as usize, fake.requests().len());

    {
        let st = fake.state();
        for node in ["pve1", "pve2", "pve3"] {
            let on: Vec<u32> = st
                .containers
                .values()
                .filter(|c| c.node == node)
                .map(|c| c.vmid)
                .collect();
            assert_eq!(on.len(), 3, "{node}: {on:?}");
        }
        assert!(st
            .containers
            .values()
            .all(|c| c.running && c.lock.is_none()));
        assert_eq!(st.containers[&100].node, "pve1");
        assert_eq!(st.containers[&104].node, "pve2");
        assert_eq!(st.containers[&108].node, "pve3");
    }

    // Every request body that changed something.
    let bodies: Vec<(String, String, Body)> = mutating(&fake.requests())
        .into_iter()
        .map(|r| (r.method, r.path, r.body))
        .collect();
    insta::assert_yaml_snapshot!("first_deploy_mutating_requests", bodies);

    // Second run: nothing changes, one call.
    fake.clear_requests();
    let b2 = support::backend(&cluster);
    let again = support::deploy(&b2, &cluster, &tpl, false).unwrap();
    assert!(again.ok());
    assert_eq!(again.count(|a| *a == Action::Unchanged), 9, "{again:#?}");
    assert!(again.uploads.is_empty());
    let reqs = fake.requests();
    eprintln!(
        "second run: {} API calls: {:?}",
        b2.calls().total(),
        fake.counts()
    );
    assert!(reqs.iter().all(|r| r.method == "GET"), "{reqs:#?}");
    // One call for the inventory and one for the API version; then each
    // member's config, read by the drift check (here) and by the firewall
    // step (proxmox_firewall.rs), and the firewall's own state.
    let other: Vec<&str> = reqs
        .iter()
        .filter(|r| !matches!(kind_of(&r.path), "firewall" | "config"))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(other, ["/cluster/resources", "/version"], "{reqs:#?}");
}

#[test]
fn node_local_storage_gets_one_upload_per_node() {
    let fake = FakePve::start(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::cluster(&fake, "local");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let tpl = support::find_templates(&out, &cluster);
    let b = support::backend(&cluster);
    let report = support::deploy(&b, &cluster, &tpl, false).unwrap();
    assert!(report.ok(), "{report:#?}");
    let counts = fake.counts();
    eprintln!(
        "node-local storage: {} API calls, {counts:?}",
        b.calls().total()
    );
    assert_eq!(counts["POST upload"], 9, "{counts:?}");
    assert_eq!(report.uploads.len(), 9);
    let st = fake.state();
    let local = st.storages.iter().find(|s| s.id == "local").unwrap();
    for node in ["pve1", "pve2", "pve3"] {
        assert_eq!(local.files_on(node).len(), 3, "{node}");
    }
}

#[test]
fn templates_already_stored_are_not_uploaded_again() {
    let fake = FakePve::start(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::cluster(&fake, "templates");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let tpl = support::find_templates(&out, &cluster);
    let b = support::backend(&cluster);
    assert!(support::deploy(&b, &cluster, &tpl, false).unwrap().ok());
    // Containers gone (say, destroyed by hand), templates still there.
    fake.state().containers.clear();
    fake.clear_requests();
    let b = support::backend(&cluster);
    let r = support::deploy(&b, &cluster, &tpl, false).unwrap();
    assert!(r.ok());
    assert_eq!(r.count(|a| *a == Action::Created), 9);
    let counts = fake.counts();
    assert!(!counts.contains_key("POST upload"), "{counts:?}");
}

#[test]
fn pve_before_9_1_gets_no_env_entrypoint_or_host_managed() {
    let fake = FakePve::start(Config {
        release: "9.0".into(),
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::cluster(&fake, "templates");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let tpl = support::find_templates(&out, &cluster);
    let b = support::backend(&cluster);
    let r = support::deploy(&b, &cluster, &tpl, false).unwrap();
    assert!(r.ok(), "{r:#?}");
    let create = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/nodes/pve1/lxc")
        .unwrap();
    let Body::Form(f) = create.body else { panic!() };
    assert!(
        !f.iter()
            .any(|(k, v)| k == "env" || k == "entrypoint" || v.contains("host-managed")),
        "{f:?}"
    );
    insta::assert_yaml_snapshot!("create_body_pve_9_0", f);
}

#[test]
fn dry_run_changes_nothing_and_lists_every_call() {
    let fake = FakePve::start(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::cluster(&fake, "templates");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let tpl = support::find_templates(&out, &cluster);
    let b = support::backend(&cluster).into_dry_run();
    let r = support::deploy(&b, &cluster, &tpl, true).unwrap();
    assert!(r.ok());
    assert!(fake.requests().iter().all(|r| r.method == "GET"));
    assert!(fake.state().containers.is_empty());
    let mut planned: Vec<String> = b
        .planned()
        .iter()
        .filter(|c| !c.path.contains("/firewall"))
        .map(|c| c.to_string())
        .collect();
    planned.sort();
    let text = planned
        .join("\n")
        .replace(&out.display().to_string(), "[OUT]");
    assert!(!text.contains(support::pve_fake::TOKEN_SECRET));
    insta::assert_snapshot!("dry_run_calls", text);
}

fn blocked(r: &deploy::Report) -> Vec<String> {
    r.members
        .iter()
        .filter_map(|m| match &m.action {
            Action::Blocked(e) => Some(format!("{}: {e}", m.slot)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_template_is_not_forced_onto_running_members() {
    let fake = FakePve::start(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::cluster(&fake, "templates");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let b = support::backend(&cluster);
    assert!(support::deploy(
        &b,
        &cluster,
        &support::find_templates(&out, &cluster),
        false
    )
    .unwrap()
    .ok());
    // Rebuilt templates (different content, same version).
    let out = support::write_templates(dir.path(), &cluster, "v2");
    fake.clear_requests();
    let b = support::backend(&cluster);
    let r = support::converge(&b, &cluster, &support::find_templates(&out, &cluster));
    // The converge leaves them alone: swapping them is the rollout's job (tests/rollout_*.rs).
    assert!(r.ok());
    assert_eq!(r.rollouts(), 9);
    assert!(
        fake.requests().iter().all(|r| r.method == "GET"),
        "nothing changed"
    );
    let first = match &r.members[0].action {
        Action::Rollout(why) => format!("{}: {why}", r.members[0].slot),
        other => panic!("{other:?}"),
    };
    insta::assert_snapshot!(first, @"nginx1: CT 100 runs version 1.0.0 (template 9d18b845614f), the spec wants 1.0.0 (template 82380eafa019)");
}

#[test]
fn foreign_guests_and_misplaced_members_are_left_alone() {
    let fake = FakePve::start(Config::default());
    fake.state().add_foreign(105, "pve3", "qemu");
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::cluster(&fake, "templates");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let tpl = support::find_templates(&out, &cluster);
    let b = support::backend(&cluster);
    let r = support::deploy(&b, &cluster, &tpl, false).unwrap();
    assert_eq!(r.count(|a| *a == Action::Created), 8);
    // Someone migrated CT 101 to pve3.
    fake.state().containers.get_mut(&101).unwrap().node = "pve3".into();
    let r = support::deploy(&support::backend(&cluster), &cluster, &tpl, false).unwrap();
    insta::assert_snapshot!(blocked(&r).join("\n"), @r#"
    nginx2: CT 101 runs on node pve3, the spec places it on pve2; haimg does not migrate containers: move it in Proxmox or change the spec
    mongo3: VMID 105 is held by guest "other105" on pve3 that haimg did not create (no 'haimg' tag); free the VMID or change the member's vmid in the spec
    "#);
    assert_eq!(fake.state().containers[&105].kind, "qemu");
}
