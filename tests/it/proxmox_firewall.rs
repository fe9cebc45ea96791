//! The network policy on Proxmox's firewall, against the fake: every firewall
//! request of a full deploy (snapshot), what Proxmox then holds (snapshot), a
//! second deploy that writes nothing, dry-run, the datacenter switch, drift
//! repair, objects haimg does not own, rollouts, and errors that name the call.

use crate::support;

use haimg::backend::{Backend, Guest, Policy, Switch};
use haimg::deploy::{self, Action};
use haimg::model::{Cluster, Role};
use support::pve_fake::{kind_of, Body, Config, FakePve, Fault, FaultKind, Recorded};

/// The default spec aimed at the fake, with `proxmox.firewall` set to `firewall`.
fn cluster_with(fake: &FakePve, firewall: &str) -> Cluster {
    let text = support::spec_text(&fake.endpoint(), "templates", &support::ca_tls());
    let text = text.replacen(
        "\nrollout:",
        &format!("  firewall: {firewall}\n\nrollout:"),
        1,
    );
    haimg::model::spec::parse_yaml(&text).expect("spec").cluster
}

/// A Proxmox whose datacenter firewall is off, as a fresh install has it.
fn switch_off() -> Config {
    Config {
        datacenter_firewall: false,
        ..Config::default()
    }
}

/// Requests the firewall step made: its own API and the net0 check on `/config`.
fn firewall_requests(reqs: &[Recorded]) -> Vec<Recorded> {
    reqs.iter()
        .filter(|r| matches!(kind_of(&r.path), "firewall" | "config"))
        .cloned()
        .collect()
}

/// Writes in a stable order: datacenter ones as sent (their order matters:
/// IP sets before the rules naming them, the switch last), then per container
/// as sent (nodes run in parallel, so containers are ordered by VMID).
fn writes(reqs: &[Recorded]) -> Vec<(String, String, Body)> {
    order(
        reqs.iter()
            .filter(|r| r.method != "GET")
            .map(|r| (r.method.clone(), r.path.clone(), r.body.clone()))
            .collect(),
    )
}

/// Datacenter calls first, then per container by VMID: `(0, 0)` or `(1, vmid)`.
fn ct_key(path: &str) -> (u8, u32) {
    match path.split('/').nth(4).and_then(|v| v.parse::<u32>().ok()) {
        Some(v) if path.starts_with("/nodes/") => (1, v),
        _ => (0, 0),
    }
}

/// Datacenter writes as sent, then container writes by VMID, each container's
/// as sent (nodes run in parallel, so only that order is stable).
fn order(mut w: Vec<(String, String, Body)>) -> Vec<(String, String, Body)> {
    w.sort_by_key(|(_, p, _)| ct_key(p)); // a stable sort
    w
}

fn rule_text(r: &std::collections::BTreeMap<String, String>) -> String {
    let mut s = String::new();
    if r.get("enable").map(String::as_str) != Some("1") {
        s.push('|');
    }
    s.push_str(&r["type"].to_ascii_uppercase());
    s.push(' ');
    s.push_str(&r["action"]);
    for (k, flag) in [
        ("iface", "-i"),
        ("source", "-source"),
        ("dest", "-dest"),
        ("proto", "-p"),
        ("dport", "-dport"),
    ] {
        if let Some(v) = r.get(k) {
            s.push_str(&format!(" {flag} {v}"));
        }
    }
    if let Some(c) = r.get("comment") {
        s.push_str(&format!(" # {c}"));
    }
    s
}

/// What the fake holds, written like Proxmox's `.fw` files.
fn fake_fw_text(fake: &FakePve) -> String {
    let st = fake.state();
    let f = &st.fw;
    let mut s = String::from("## cluster.fw\n[OPTIONS]\n");
    for (k, v) in &f.options {
        s.push_str(&format!("{k}: {v}\n"));
    }
    for (n, set) in &f.ipsets {
        s.push_str(&format!(
            "[IPSET {n}] # {}\n",
            set.comment.clone().unwrap_or_default()
        ));
        for e in &set.entries {
            s.push_str(&format!(
                "{} # {}\n",
                e.cidr,
                e.comment.clone().unwrap_or_default()
            ));
        }
    }
    for (n, g) in &f.groups {
        s.push_str(&format!(
            "[group {n}] # {}\n",
            g.comment.clone().unwrap_or_default()
        ));
        for r in &g.rules {
            s.push_str(&format!("{}\n", rule_text(r)));
        }
    }
    for (vmid, g) in &f.guests {
        s.push_str(&format!("## {vmid}.fw\n[OPTIONS]\n"));
        for (k, v) in &g.options {
            s.push_str(&format!("{k}: {v}\n"));
        }
        for (n, set) in &g.ipsets {
            s.push_str(&format!(
                "[IPSET {n}] # {}\n",
                set.comment.clone().unwrap_or_default()
            ));
            for e in &set.entries {
                s.push_str(&format!(
                    "{} # {}\n",
                    e.cidr,
                    e.comment.clone().unwrap_or_default()
                ));
            }
        }
        s.push_str("[RULES]\n");
        for r in &g.rules {
            s.push_str(&format!("{}\n", rule_text(r)));
        }
    }
    s
}

fn deploy_once(cluster: &Cluster, salt: &str) -> deploy::Report {
    let dir = tempfile::tempdir().unwrap();
    let out = support::write_templates(dir.path(), cluster, salt);
    let tpl = support::find_templates(&out, cluster);
    support::deploy(&support::backend(cluster), cluster, &tpl, false).unwrap()
}

#[test]
fn full_deploy_writes_the_policy_then_a_second_deploy_writes_nothing() {
    let fake = FakePve::start(switch_off());
    let cluster = cluster_with(&fake, "{ datacenter: enable }");
    let report = deploy_once(&cluster, "v1");
    assert!(report.ok(), "{report:#?}");
    let f = report.firewall.as_ref().expect("firewall step ran");
    assert_eq!(f.switch, Switch::Enabled);
    assert!(f.errors.is_empty() && f.enforced(), "{f:#?}");

    let reqs = firewall_requests(&fake.requests());
    let w = writes(&reqs);
    let gets = reqs.iter().filter(|r| r.method == "GET").count();
    eprintln!(
        "first deploy: {} firewall calls ({} writes, {gets} reads); {} changes reported",
        reqs.len(),
        w.len(),
        f.changes.len()
    );
    // 5 IP sets + 11 entries, 3 groups + 8 rules, per container a group rule and
    // options (9 x 2), per lb member ipfilter-net0 + 2 entries (3 x 3), the switch.
    assert_eq!(w.len(), 5 + 11 + 3 + 8 + 9 * 2 + 3 * 3 + 1, "{w:#?}");
    assert_eq!(w.len(), f.changes.len());
    insta::assert_yaml_snapshot!("first_deploy_firewall_writes", w);
    let last = reqs.iter().rfind(|r| r.method != "GET").unwrap();
    assert_eq!(
        format!("{} {}", last.method, last.path),
        "PUT /cluster/firewall/options",
        "the switch is turned on last, once every rule is in place"
    );

    // net0 carries firewall=1 from the create on.
    {
        let st = fake.state();
        for c in st.containers.values() {
            assert!(c.config["net0"].contains(",firewall=1"), "{:?}", c.config);
        }
        assert!(st
            .fw
            .orphans(&st.containers.keys().copied().collect::<Vec<_>>())
            .is_empty());
    }
    insta::assert_snapshot!("fake_firewall_after_deploy", fake_fw_text(&fake));

    // Second deploy: reads only.
    fake.clear_requests();
    let again = deploy_once(&cluster, "v1");
    assert!(again.ok(), "{again:#?}");
    let f2 = again.firewall.as_ref().unwrap();
    assert_eq!(f2.switch, Switch::On);
    assert!(f2.changes.is_empty() && f2.warnings.is_empty(), "{f2:#?}");
    let reqs = fake.requests();
    assert!(reqs.iter().all(|r| r.method == "GET"), "{reqs:#?}");
    eprintln!(
        "second deploy: {} calls, {} of them by the firewall step, all GET",
        reqs.len(),
        firewall_requests(&reqs).len()
    );
}

#[test]
fn dry_run_shows_every_firewall_call_and_the_switch() {
    let fake = FakePve::start(switch_off());
    let cluster = cluster_with(&fake, "{ datacenter: enable }");
    let dir = tempfile::tempdir().unwrap();
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let tpl = support::find_templates(&out, &cluster);
    let b = support::backend(&cluster).into_dry_run();
    let r = support::deploy(&b, &cluster, &tpl, true).unwrap();
    assert!(r.ok(), "{r:#?}");
    let f = r.firewall.as_ref().unwrap();
    assert_eq!(f.switch, Switch::WouldEnable);
    assert!(
        f.warnings
            .iter()
            .any(|w| w.starts_with("would turn on the datacenter firewall")),
        "{f:#?}"
    );
    assert!(fake.requests().iter().all(|r| r.method == "GET"));
    assert!(fake.state().fw.ipsets.is_empty() && fake.state().fw.options.is_empty());
    // Containers that do not exist yet are not read.
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/nodes/") && kind_of(&r.path) == "firewall"),
        "{:#?}",
        fake.requests()
    );
    let planned: Vec<_> = b
        .planned()
        .into_iter()
        .filter(|c| c.path.contains("/firewall"))
        .collect();
    let as_writes: Vec<(String, String, Body)> = planned
        .iter()
        .map(|c| {
            (
                c.method.to_string(),
                c.path.clone(),
                Body::Form(c.params.0.clone()),
            )
        })
        .collect();
    // Exactly the calls a real deploy makes, in the same order.
    let real = FakePve::start(switch_off());
    let real_cluster = cluster_with(&real, "{ datacenter: enable }");
    assert!(deploy_once(&real_cluster, "v1").ok());
    assert_eq!(
        order(as_writes),
        writes(&firewall_requests(&real.requests())),
        "dry-run and deploy differ"
    );
    assert_eq!(planned.len(), 55);
    assert_eq!(
        planned.last().unwrap().to_string(),
        "PUT /cluster/firewall/options\n    enable=1"
    );
    let mut planned = planned;
    planned.sort_by_key(|c| ct_key(&c.path)); // stable, as `order` does
    let text: Vec<String> = planned.iter().map(|c| c.to_string()).collect();
    insta::assert_snapshot!("dry_run_firewall_calls", text.join("\n"));
}

#[test]
fn datacenter_switch_off_is_reported_and_left_alone() {
    let fake = FakePve::start(switch_off());
    let cluster = cluster_with(&fake, "{}");
    let report = deploy_once(&cluster, "v1");
    // lb and webapp are deployed with a warning; mongo is refused (below).
    assert!(!report.ok(), "{report:#?}");
    for m in &report.members {
        match m.role {
            Role::Mongo => assert!(matches!(m.action, Action::Blocked(_)), "{m:?}"),
            _ => assert_eq!(m.action, Action::Created, "{m:?}"),
        }
    }
    let f = report.firewall.as_ref().unwrap();
    assert_eq!(f.switch, Switch::Off);
    assert!(!f.enforced());
    insta::assert_snapshot!(f.warnings.join("\n"), @"the datacenter firewall is off (Datacenter > Firewall > Options: enable), so Proxmox applies none of these rules: the network policy is NOT enforced; turn it on once the hosts' own rules are checked, or set proxmox.firewall.datacenter: enable");
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.method == "PUT" && r.path == "/cluster/firewall/options"),
        "haimg does not touch the switch without proxmox.firewall.datacenter: enable"
    );
    assert!(fake.state().fw.options.is_empty());
    // Everything else is in place, ready for when the switch is turned on.
    assert_eq!(fake.state().fw.groups.len(), 3);
    assert_eq!(fake.state().fw.guests.len(), 6);
}

/// With the datacenter firewall off nothing but MongoDB's authentication would
/// guard :27017: no mongo member is created or started, each says why and what
/// to do; the spec's explicit opt-out deploys them (the warning stays).
#[test]
fn mongo_is_refused_while_the_datacenter_firewall_is_off_unless_the_spec_opts_out() {
    let fake = FakePve::start(switch_off());
    let cluster = cluster_with(&fake, "{}");
    let report = deploy_once(&cluster, "v1");
    let mongo: Vec<_> = report
        .members
        .iter()
        .filter(|m| m.role == Role::Mongo)
        .collect();
    assert_eq!(mongo.len(), 3);
    let Action::Blocked(why) = &mongo[0].action else {
        panic!("{:?}", mongo[0].action)
    };
    insta::assert_snapshot!(why, @"refused: the datacenter firewall is off, so nothing but MongoDB's own authentication would keep the network from :27017; turn it on (Datacenter > Firewall > Options, or proxmox.firewall.datacenter: enable), or accept the risk with proxmox.firewall.allow_insecure_mongo: true");
    assert!(mongo.iter().all(|m| m.action == mongo[0].action));
    assert!(cluster
        .mongo
        .members
        .iter()
        .all(|m| !fake.state().containers.contains_key(&m.vmid)));
    let creates_mongo = |r: &Recorded| {
        let Body::Form(f) = &r.body else { return false };
        r.method == "POST"
            && r.path.ends_with("/lxc")
            && f.iter()
                .any(|(k, v)| k == "hostname" && v.starts_with("mongo"))
    };
    assert!(!fake.requests().iter().any(creates_mongo));

    // The switch that haimg turns on itself (datacenter: enable): no refusal.
    let other = FakePve::start(switch_off());
    assert!(deploy_once(&cluster_with(&other, "{ datacenter: enable }"), "v1").ok());
    assert!(other.requests().iter().any(creates_mongo));

    // The explicit, documented opt-out.
    let insecure = cluster_with(&fake, "{ allow_insecure_mongo: true }");
    let again = deploy_once(&insecure, "v1");
    assert!(again.ok(), "{again:#?}");
    let st = fake.state();
    assert!(cluster
        .mongo
        .members
        .iter()
        .all(|m| st.containers[&m.vmid].running));
}

#[test]
fn enforce_false_writes_no_firewall_at_all() {
    let fake = FakePve::start(switch_off());
    // Without a policy the mongo members need the explicit opt-out too.
    let cluster = cluster_with(&fake, "{ enforce: false, allow_insecure_mongo: true }");
    let report = deploy_once(&cluster, "v1");
    assert!(report.ok() && report.firewall.is_none(), "{report:#?}");
    assert!(firewall_requests(&fake.requests()).is_empty());
    assert!(fake
        .state()
        .containers
        .values()
        .all(|c| !c.config["net0"].contains("firewall")));
}

#[test]
fn drift_is_repaired_and_foreign_rules_are_reported() {
    let fake = FakePve::start(switch_off());
    let cluster = cluster_with(&fake, "{ datacenter: enable }");
    assert!(deploy_once(&cluster, "v1").ok());
    {
        let mut st = fake.state();
        let st = &mut *st;
        // Someone edited things by hand.
        let lb = st.fw.ipsets.get_mut("haimg-lb").unwrap();
        lb.entries.retain(|e| e.cidr != "192.168.30.101");
        lb.entries.push(support::pve_fake::firewall::Entry {
            cidr: "10.9.9.9".into(),
            comment: None,
            nomatch: false,
        });
        st.fw.groups.get_mut("haimg-mongo").unwrap().rules.remove(1);
        let g = st.fw.guests.get_mut(&104).unwrap();
        g.options.insert("policy_in".into(), "ACCEPT".into());
        let mut foreign = std::collections::BTreeMap::new();
        for (k, v) in [
            ("type", "in"),
            ("action", "ACCEPT"),
            ("proto", "tcp"),
            ("dport", "22"),
            ("enable", "1"),
        ] {
            foreign.insert(k.to_string(), v.to_string());
        }
        g.rules.push(foreign);
        let old = st.fw.guests.get_mut(&107).unwrap();
        old.rules.clear(); // lost its group reference
        let c = st.containers.get_mut(&101).unwrap();
        let net0 = c.config["net0"].replace(",firewall=1", "");
        c.config.insert("net0".into(), net0);
    }
    fake.clear_requests();
    let r = deploy_once(&cluster, "v1");
    assert!(r.ok(), "{r:#?}");
    // net0's firewall flag is member drift: the deploy puts it back before
    // the firewall step looks.
    let ct101 = r.members.iter().find(|m| m.vmid == 101).unwrap();
    let Action::Reconfigured(d) = &ct101.action else {
        panic!("CT 101 not reconfigured: {:?}", ct101.action)
    };
    let d: Vec<String> = d.iter().map(ToString::to_string).collect();
    insta::assert_snapshot!(d.join("\n"), @r#"net0: "name=eth0,bridge=vmbr0,hwaddr=02:D2:98:5D:93:E5,ip=192.168.30.101/24,gw=192.168.30.1,type=veth,host-managed=1" -> "name=eth0,bridge=vmbr0,hwaddr=02:D2:98:5D:93:E5,ip=192.168.30.101/24,gw=192.168.30.1,type=veth,firewall=1,host-managed=1""#);
    let f = r.firewall.unwrap();
    insta::assert_snapshot!(f.changes.join("\n"), @r"
    ipset haimg-lb: +192.168.30.101
    ipset haimg-lb: -10.9.9.9
    group haimg-mongo: + IN ACCEPT -source +haimg-mongo -p tcp -dport 27017 # haimg: mongo -> mongo tcp/27017, replication and elections
    CT 104 (mongo2): options policy_in=DROP
    CT 107 (webapp2): + GROUP haimg-webapp # haimg: webapp tier policy
    ");
    insta::assert_snapshot!(f.warnings.join("\n"), @"CT 104 (mongo2): rule 1 was not written by haimg and is left in place: IN ACCEPT -p tcp -dport 22");
    assert!(fake.state().containers[&101].config["net0"]
        .split(',')
        .any(|p| p == "firewall=1"));
    // And now it is stable again.
    fake.clear_requests();
    let r = deploy_once(&cluster, "v1");
    assert!(r.firewall.unwrap().changes.is_empty());
    assert!(fake.requests().iter().all(|r| r.method == "GET"));
}

#[test]
fn stale_haimg_rules_are_deleted_by_position_with_the_digest() {
    let fake = FakePve::start(switch_off());
    let cluster = cluster_with(&fake, "{ datacenter: enable }");
    assert!(deploy_once(&cluster, "v1").ok());
    {
        // Two rules of an older policy in the lb group (haimg's group: all its rules are haimg's).
        let mut st = fake.state();
        let g = st.fw.groups.get_mut("haimg-lb").unwrap();
        for port in ["8080", "8443"] {
            let mut r = std::collections::BTreeMap::new();
            for (k, v) in [
                ("type", "in"),
                ("action", "ACCEPT"),
                ("proto", "tcp"),
                ("dport", port),
                ("enable", "1"),
            ] {
                r.insert(k.to_string(), v.to_string());
            }
            g.rules.insert(1, r);
        }
    }
    fake.clear_requests();
    let r = deploy_once(&cluster, "v1");
    assert!(r.ok(), "{r:#?}");
    let deletes: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| {
            format!(
                "{} {} {:?}",
                r.method,
                r.path,
                r.query.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>()
            )
        })
        .collect();
    insta::assert_snapshot!(deletes.join("\n"), @r#"
    DELETE /cluster/firewall/groups/haimg-lb/2 ["digest"]
    DELETE /cluster/firewall/groups/haimg-lb/1 ["digest"]
    "#);
    assert_eq!(fake.state().fw.groups["haimg-lb"].rules.len(), 3);
}

#[test]
fn objects_haimg_does_not_own_are_left_alone() {
    let fake = FakePve::start(switch_off());
    let cluster = cluster_with(&fake, "{ datacenter: enable }");
    fake.state().fw.groups.insert(
        "haimg-lb".into(),
        support::pve_fake::firewall::Group {
            comment: Some("ops: load balancers".into()),
            rules: Vec::new(),
        },
    );
    let r = deploy_once(&cluster, "v1");
    assert!(!r.ok(), "a conflict fails the deploy");
    let f = r.firewall.unwrap();
    insta::assert_snapshot!(f.errors.join("\n"), @r#"the datacenter already has a security group 'haimg-lb' that haimg did not write for cluster haimg (comment: "ops: load balancers"); haimg leaves it alone: rename or remove it in Datacenter > Firewall, or rename the cluster"#);
    assert_eq!(f.switch, Switch::Off, "the switch is not touched");
    assert!(fake.state().fw.groups["haimg-lb"].rules.is_empty());
    assert!(
        fake.state().fw.guests.is_empty(),
        "no container refers to a group that is not haimg's"
    );
}

#[test]
fn a_rollout_container_gets_only_its_own_firewall() {
    let fake = FakePve::start(switch_off());
    let cluster = cluster_with(&fake, "{ datacenter: enable }");
    assert!(deploy_once(&cluster, "v1").ok());
    // A green container for slot nginx1 (VMID + offset), as a rollout creates it.
    let green = 100 + cluster.rollout.green_vmid_offset;
    fake.state().add_foreign(green, "pve1", "lxc");
    fake.clear_requests();
    let b = support::backend(&cluster);
    let flows = haimg::model::policy::derive(&cluster);
    let out = b
        .enforce_policy(&Policy {
            cluster: &cluster,
            flows: &flows,
            target_wide: false,
            guests: vec![Guest {
                member: &cluster.lb.members[0],
                vmid: green,
                fresh: true,
                absent: false,
            }],
            arp_owners: haimg::fleet::members::arp_owners(&cluster),
        })
        .unwrap();
    assert!(out.ok(), "{out:#?}");
    let w = writes(&fake.requests());
    assert!(
        w.iter()
            .all(|(_, p, _)| p.starts_with("/nodes/pve1/lxc/1100/firewall")),
        "{w:#?}"
    );
    insta::assert_snapshot!(out.changes.join("\n"), @r"
    CT 1100 (nginx1): ipset ipfilter-net0 created
    CT 1100 (nginx1): ipset ipfilter-net0: +192.168.30.200
    CT 1100 (nginx1): ipset ipfilter-net0: +192.168.30.100
    CT 1100 (nginx1): + GROUP haimg-lb # haimg: lb tier policy
    CT 1100 (nginx1): options enable=1 ipfilter=1 policy_in=DROP policy_out=ACCEPT
    ");
    // Destroying a container removes its firewall config, as Proxmox does.
    let st = fake.state();
    assert!(st.fw.orphans(&vmids_of(&st)).is_empty());
}

fn vmids_of(st: &support::pve_fake::State) -> Vec<u32> {
    st.containers.keys().copied().collect()
}

#[test]
fn bad_answers_give_errors_naming_the_call() {
    let fake = FakePve::start(switch_off());
    let cluster = cluster_with(&fake, "{ datacenter: enable }");
    fake.inject(Fault::new(
        "POST",
        "/cluster/firewall/groups$",
        1,
        FaultKind::Status(
            500,
            "can't open '/etc/pve/firewall/cluster.fw' - Permission denied".into(),
        ),
    ));
    fake.inject(Fault::new(
        "PUT",
        "/nodes/pve2/lxc/104/firewall/options",
        1,
        FaultKind::Status(
            403,
            "Permission check failed (/vms/104, VM.Config.Network)".into(),
        ),
    ));
    let r = deploy_once(&cluster, "v1");
    assert!(!r.ok());
    let f = r.firewall.unwrap();
    insta::assert_snapshot!(f.errors.join("\n"), @"POST /cluster/firewall/groups: 500 can't open '/etc/pve/firewall/cluster.fw' - Permission denied");
    assert!(
        fake.state().fw.guests.is_empty(),
        "no container rule names a group that was not created"
    );

    // The next run gets past the groups; a container refused by permissions is named.
    let r = deploy_once(&cluster, "v1");
    let f = r.firewall.unwrap();
    insta::assert_snapshot!(f.errors.join("\n"), @"PUT /nodes/pve2/lxc/104/firewall/options on node pve2 for CT 104: 403 permission denied: the token lacks VM.Config.Network on /vms/104 (grant it to the token, or turn off privilege separation)");
    assert_eq!(
        f.switch,
        Switch::Off,
        "not turned on while a container lacks its rules"
    );
    assert!(f.warnings.iter().any(|w| w.contains("stays off")), "{f:#?}");

    // A malformed answer.
    fake.state().fw.garble = Some((
        "/cluster/firewall/ipset".into(),
        serde_json::json!({"oops": 1}),
    ));
    let r = deploy_once(&cluster, "v1");
    insta::assert_snapshot!(r.firewall.unwrap().errors.join("\n"), @r#"GET /cluster/firewall/ipset: unexpected answer: expected a list, got {"oops":1}"#);

    // Once Proxmox answers well again, a re-run converges.
    fake.state().fw.garble = None;
    let r = deploy_once(&cluster, "v1");
    assert!(r.ok(), "{r:#?}");
    assert_eq!(r.firewall.unwrap().switch, Switch::Enabled);
    fake.clear_requests();
    assert!(deploy_once(&cluster, "v1")
        .firewall
        .unwrap()
        .changes
        .is_empty());
}

#[test]
fn the_fake_refuses_what_proxmox_refuses() {
    // Guards for the fake itself: the rules haimg relies on are enforced.
    let fake = FakePve::start(switch_off());
    let cluster = cluster_with(&fake, "{}");
    let b = support::backend(&cluster);
    let api: &dyn haimg::backend::proxmox::firewall::PveFirewall = &b;
    use haimg::backend::proxmox::firewall::{Rule, RuleList, RuleType};
    let rule = |source: &str, proto: Option<&str>, dport: Option<&str>| Rule {
        kind: RuleType::In,
        action: "ACCEPT".into(),
        source: Some(source.into()),
        dest: None,
        proto: proto.map(Into::into),
        dport: dport.map(Into::into),
        sport: None,
        macro_name: None,
        iface: None,
        log: None,
        icmp_type: None,
        enable: true,
        comment: None,
    };
    api.create_group("web-x", "t").unwrap();
    let errs: Vec<String> = [
        api.add_rule(
            RuleList::Group("web-x"),
            &rule("+nope", Some("tcp"), Some("80")),
        ),
        api.add_rule(
            RuleList::Group("web-x"),
            &rule("10.0.0.1", Some("vrrp"), Some("80")),
        ),
        api.add_rule(
            RuleList::Group("web-x"),
            &rule("10.0.0.1", None, Some("80")),
        ),
        api.add_rule(
            RuleList::Group("missing"),
            &rule("10.0.0.1", Some("tcp"), None),
        ),
        api.create_group("a-name-longer-than-18", "t"),
    ]
    .into_iter()
    .map(|r| r.unwrap_err().to_string())
    .collect();
    insta::assert_snapshot!(errs.join("\n"), @r"
    POST /cluster/firewall/groups/web-x: 400 parameter 'source': no such ipset 'nope'
    POST /cluster/firewall/groups/web-x: 400 parameter 'dport': protocol 'vrrp' does not support ports
    POST /cluster/firewall/groups/web-x: 400 parameter 'proto': missing property - 'dport' requires this property
    POST /cluster/firewall/groups/missing: 500 no such security group 'missing'
    POST /cluster/firewall/groups: 400 parameter 'group': value may only be 18 characters long
    ");
    // A disabled rule reads back disabled; a new rule goes first.
    let mut r = rule("10.0.0.1", Some("tcp"), Some("22"));
    r.enable = false;
    api.add_rule(RuleList::Group("web-x"), &r).unwrap();
    api.add_rule(
        RuleList::Group("web-x"),
        &rule("10.0.0.2", Some("vrrp"), None),
    )
    .unwrap();
    let listed = api.rules(RuleList::Group("web-x")).unwrap();
    let texts: Vec<String> = listed
        .iter()
        .map(|l| format!("{} {}", l.pos, l.rule.text()))
        .collect();
    insta::assert_snapshot!(texts.join("\n"), @r"
    0 IN ACCEPT -source 10.0.0.2 -p vrrp
    1 |IN ACCEPT -source 10.0.0.1 -p tcp -dport 22
    ");
    // A stale digest is refused.
    let e = api
        .delete_rule(RuleList::Group("web-x"), 0, "0000")
        .unwrap_err();
    assert!(
        e.to_string().contains("detected modified configuration"),
        "{e}"
    );
}

fn haimg(args: &[&str], spec: &std::path::Path) -> (i32, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_haimg"))
        .arg("--spec")
        .arg(spec)
        .args(args)
        .env("HAIMG_PVE_TOKEN", support::pve_fake::token())
        .env("HAIMG_SECRETS_DIR", spec.with_file_name(".secrets"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// What a user sees: the dry-run lists the switch among the calls and says what
/// it does; the real run reports the changes; a conflict exits 1 naming it.
#[test]
fn what_haimg_deploy_prints() {
    let fake = FakePve::start(switch_off());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("haimg.yaml");
    let text = support::spec_text(&fake.endpoint(), "templates", &support::ca_tls()).replacen(
        "\nrollout:",
        "  firewall: { datacenter: enable }\n\nrollout:",
        1,
    );
    std::fs::write(&spec, text).unwrap();
    let cluster = cluster_with(&fake, "{ datacenter: enable }");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let out = out.to_str().unwrap();
    let firewall_lines = |s: &str| {
        s.lines()
            .filter(|l| l.contains("firewall"))
            .map(|l| l.replace(&fake.endpoint(), "[ENDPOINT]"))
            .collect::<Vec<_>>()
            .join("\n")
    };

    let (code, stdout, stderr) = haimg(&["deploy", "--dry-run", "--templates", out], &spec);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("PUT /cluster/firewall/options\n    enable=1\n"),
        "{stdout}"
    );
    // Calls come in per-node order, which varies between runs: only the notes are compared.
    let notes: Vec<&str> = stdout.lines().filter(|l| l.starts_with('#')).collect();
    insta::assert_snapshot!("cli_dry_run_stdout_notes", notes.join("\n"));
    assert_eq!(
        stdout.lines().filter(|l| l.contains("/firewall")).count(),
        55,
        "{stdout}"
    );
    insta::assert_snapshot!("cli_dry_run_stderr_firewall_lines", firewall_lines(&stderr));

    let (code, _, stderr) = haimg(&["deploy", "--no-progress", "--templates", out], &spec);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("  firewall: 55 changes; datacenter switch turned on by this run"),
        "{stderr}"
    );
    let (code, stdout, stderr) = haimg(&["deploy", "--json", "--templates", out], &spec);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["firewall"]["datacenter"], "on");
    assert_eq!(v["firewall"]["changes"], serde_json::json!([]));
    assert!(
        stderr.contains("  firewall: 0 changes; datacenter switch on"),
        "{stderr}"
    );

    fake.state().fw.ipsets.get_mut("haimg-vip").unwrap().comment = Some("mine".into());
    let (code, _, stderr) = haimg(&["deploy", "--no-progress", "--templates", out], &spec);
    assert_eq!(code, 1, "{stderr}");
    insta::assert_snapshot!(firewall_lines(&stderr), @r#"
      firewall: 0 changes; datacenter switch on
      FAILED: firewall: the datacenter already has an IP set 'haimg-vip' that haimg did not write for cluster haimg (comment: "mine"); haimg leaves it alone: rename or remove it in Datacenter > Firewall, or rename the cluster
    "#);
}

/// No member runs before its policy: every created container is started only
/// after its own firewall options and the datacenter switch were written.
#[test]
fn members_start_only_after_their_policy_is_in_place() {
    let fake = FakePve::start(switch_off());
    let cluster = cluster_with(&fake, "{ datacenter: enable }");
    assert!(deploy_once(&cluster, "v1").ok());
    let reqs = fake.requests();
    let at = |method: &str, path: &str| {
        reqs.iter()
            .position(|r| r.method == method && r.path == path)
            .unwrap_or_else(|| panic!("no {method} {path}"))
    };
    let switch = at("PUT", "/cluster/firewall/options");
    for m in cluster.members() {
        let base = format!("/nodes/{}/lxc/{}", m.node, m.vmid);
        let options = at("PUT", &format!("{base}/firewall/options"));
        let start = at("POST", &format!("{base}/status/start"));
        assert!(options < start, "CT {} started before its firewall", m.vmid);
        assert!(switch < start, "CT {} started before the switch", m.vmid);
    }
}

/// A policy that cannot be written starts nothing: the members stay created
/// and stopped, each reported with the reason, and the next deploy starts them.
#[test]
fn a_policy_that_fails_starts_nothing() {
    let fake = FakePve::start(switch_off());
    let cluster = cluster_with(&fake, "{ datacenter: enable }");
    fake.inject(Fault::new(
        "POST",
        "/cluster/firewall/groups$",
        1,
        FaultKind::Status(403, "Permission check failed (/, Sys.Modify)".into()),
    ));
    let r = deploy_once(&cluster, "v1");
    assert!(!r.ok());
    assert_eq!(r.members.len(), 9);
    for m in &r.members {
        let Action::Failed(why) = &m.action else {
            panic!("{} not failed: {:?}", m.slot, m.action)
        };
        assert!(
            why.starts_with("not started: the network policy is not in place"),
            "{why}"
        );
    }
    insta::assert_snapshot!(format!("{:?}", r.members[0].action));
    let st = fake.state();
    assert_eq!(st.containers.len(), 9);
    assert!(st.containers.values().all(|c| !c.running));
    drop(st);
    let again = deploy_once(&cluster, "v1");
    assert!(again.ok(), "{again:#?}");
    assert!(fake.state().containers.values().all(|c| c.running));
}

/// The refusal as `haimg deploy` prints it: the mongo lines say why, the
/// firewall line says the switch is off, and the run exits 1.
#[test]
fn what_haimg_deploy_prints_when_mongo_is_refused() {
    let fake = FakePve::start(switch_off());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("haimg.yaml");
    let text = support::spec_text(&fake.endpoint(), "templates", &support::ca_tls());
    std::fs::write(&spec, &text).unwrap();
    let cluster = haimg::model::spec::parse_yaml(&text).unwrap().cluster;
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let (code, _, stderr) = haimg(
        &[
            "deploy",
            "--no-progress",
            "--templates",
            out.to_str().unwrap(),
        ],
        &spec,
    );
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains("mongo") || l.contains("firewall") || l.starts_with("error"))
        .map(|l| {
            regex::Regex::new(r"\d+\.\d+s")
                .unwrap()
                .replace_all(l, "[T]s")
                .into_owned()
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}
