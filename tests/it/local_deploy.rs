//! The deploy orchestration (`haimg::orchestrate`, written once against
//! the `Backend` trait) converging the seed's nine members on the local
//! backend: created and started, then unchanged on a rerun, then a stopped
//! member started again; the network policy on the bridge from the first
//! deploy on. Templates are the busybox test template under each role's file
//! name (the real ones come from `haimg build`), serving on port 80. Needs root.

use crate::local_support;
use crate::support;

use std::time::{Duration, Instant};

use haimg::backend::{Backend, PowerState};
use haimg::deploy::Action;
use haimg::fleet::templates;
use local_support::*;

#[test]
fn deploy_converges_on_the_local_backend() {
    if !can_run("deploy_converges_on_the_local_backend") {
        return;
    }
    let cluster = haimg::model::spec::parse_yaml(haimg::model::DEFAULT_SPEC)
        .unwrap()
        .cluster;
    let mut tc = TestCluster::new(&cluster.name, false);
    let out = tc.tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (built, _) = build_template(tc.tmp.path(), "deploy", true);
    for role in haimg::model::Role::ALL {
        std::fs::copy(&built, out.join(cluster.template_name(role).file_name())).unwrap();
    }
    let tpls = templates::find(&out, &cluster).unwrap();
    let b = &tc.backend;

    let t0 = Instant::now();
    let report = support::deploy(b, &cluster, &tpls, false).unwrap();
    figure("haimg deploy, 9 members from scratch", t0.elapsed());
    let actions: Vec<(&str, &Action)> = report
        .members
        .iter()
        .map(|m| (m.slot.as_str(), &m.action))
        .collect();
    assert!(
        report.members.iter().all(|m| m.action == Action::Created),
        "{actions:?}"
    );
    // The policy lets the admin address (the gateway) reach the lb's port
    // 80 but no other tier's: the other members are read from inside.
    let policy = report
        .firewall
        .as_ref()
        .expect("the local deploy enforces the policy");
    assert!(policy.ok() && policy.enforced(), "{policy:?}");
    let ns = b.network().unwrap().expect("network").netns_path;
    for m in cluster.members() {
        let page = if m.role.holds_vip() {
            wait_http(b, m.ip, Duration::from_secs(15)).0
        } else {
            let e = http_get(&ns, m.ip, Duration::from_millis(500)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{}: {e}", m.slot);
            wait_for(
                &format!("the page of {}", m.slot),
                Duration::from_secs(15),
                || {
                    let out = b.attach(
                        m.vmid,
                        &["cat", "/run/www/index.html"],
                        Duration::from_secs(5),
                    );
                    out.ok()
                        .filter(|o| o.success())
                        .map(|o| format!("\n{}", o.stdout_str()))
                },
            )
            .0
        };
        assert!(page.contains(&format!("\nuts={}\n", m.hostname)), "{page}");
        // the orchestration's PID-1 environment arrives (HAIMG_ROLE, HAIMG_SLOT)
        assert!(
            page.contains(&format!("role={} slot={} ", m.role, m.slot)),
            "{page}"
        );
        // host-managed networking, as on Proxmox >= 9.1
        assert!(page.contains(" net=host\n"), "{page}");
    }
    let stored = b.list_templates("pve1").unwrap();
    assert_eq!(stored.len(), 3, "one stored template per role: {stored:?}");

    // a rerun changes nothing
    let t0 = Instant::now();
    let again = support::deploy(b, &cluster, &tpls, false).unwrap();
    figure("haimg deploy rerun (converged)", t0.elapsed());
    assert!(again.members.iter().all(|m| m.action == Action::Unchanged));

    // a stopped member is started again
    b.stop("pve2", 107).unwrap();
    let third = support::deploy(b, &cluster, &tpls, false).unwrap();
    let webapp2 = third.members.iter().find(|m| m.vmid == 107).unwrap();
    assert_eq!(webapp2.action, Action::Started);
    assert_eq!(
        b.status("pve2", 107).unwrap().unwrap().state,
        PowerState::Running
    );

    let vmids: Vec<u32> = cluster.members().map(|m| m.vmid).collect();
    let (report, took) = tc.down_and_check(&vmids);
    figure("down after deploy (9 running)", took);
    assert_eq!(report.containers.len(), 9);
}
