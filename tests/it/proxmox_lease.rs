//! The run lease in Proxmox (`backend::proxmox::lease`, `cli::runlock`): two
//! deploy hosts driving one Proxmox cluster see each other's runs. Every
//! `/pools` call is validated by the fake against the official schema
//! (`tests/fixtures/pve/pve-api-pools.json`).

use crate::support;

use haimg::cli::runlock::{take_lease, Holder};
use support::pve_fake::{Config, FakePve, Fault, FaultKind};

fn holder(command: &str, pid: u32, host: &str) -> Holder {
    Holder {
        command: command.into(),
        pid,
        host: host.into(),
        since: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    }
}

fn cluster(fake: &FakePve) -> haimg::model::Cluster {
    let text = support::spec_text(&fake.endpoint(), "templates", &support::ca_tls());
    haimg::model::spec::parse_yaml(&text).unwrap().cluster
}

/// Seconds and ages vary between runs.
fn redact(s: &str) -> String {
    regex::Regex::new(r"\d+ s")
        .unwrap()
        .replace_all(s, "N s")
        .into_owned()
}

#[test]
fn a_second_host_is_refused_naming_the_first_and_force_unlock_breaks_it() {
    let fake = FakePve::start(Config::default());
    let c = cluster(&fake);
    let host_a = support::backend(&c);
    let host_b = support::backend(&c);
    let a = take_lease(
        host_a.lease(&c.name),
        &holder("deploy", 4242, "hostA"),
        false,
    )
    .unwrap();
    let held = fake.state().pools.get("haimg-haimg-run").cloned();
    let comment = held.flatten().expect("the lease is a pool with a comment");
    assert!(comment.starts_with("haimg run lease: {"), "{comment}");
    assert!(comment.contains("\"host\":\"hostA\""), "{comment}");

    let err = take_lease(
        host_b.lease(&c.name),
        &holder("rollback", 7, "hostB"),
        false,
    )
    .unwrap_err();
    insta::assert_snapshot!(redact(&format!("{err:#}")), @"the cluster is locked by `haimg deploy` (pid 4242 on hostA, started N s ago; lease expires in N s), from another deploy host or run (lease: Proxmox pool haimg-haimg-run): wait for it to finish; if that run died or hangs, stop it, then break the lease with --force-unlock");

    // --force-unlock: B takes it; A's end leaves B's lease alone.
    let b = take_lease(host_b.lease(&c.name), &holder("rollback", 7, "hostB"), true).unwrap();
    drop(a);
    let now = fake.state().pools.get("haimg-haimg-run").cloned().flatten();
    assert!(now.is_some_and(|c| c.contains("hostB")));
    drop(b);
    assert!(fake.state().pools.is_empty(), "the last holder releases it");

    // Free again: a third run takes it at once.
    let c3 = take_lease(host_a.lease(&c.name), &holder("gc", 9, "hostA"), false).unwrap();
    drop(c3);
    assert!(fake.state().pools.is_empty());
}

#[test]
fn an_expired_lease_says_its_run_probably_died_and_still_needs_force() {
    let fake = FakePve::start(Config::default());
    let c = cluster(&fake);
    fake.state().pools.insert(
        "haimg-haimg-run".into(),
        Some(
            r#"haimg run lease: {"command":"deploy","pid":1,"host":"gone","since":1000,"expires":1600}"#
                .into(),
        ),
    );
    let b = support::backend(&c);
    let err = take_lease(b.lease(&c.name), &holder("deploy", 2, "here"), false).unwrap_err();
    let msg = redact(&format!("{err:#}"));
    assert!(
        msg.contains("lease EXPIRED N s ago: its run probably died"),
        "{msg}"
    );
    assert!(fake.state().pools.contains_key("haimg-haimg-run"));
    drop(take_lease(b.lease(&c.name), &holder("deploy", 2, "here"), true).unwrap());
    assert!(fake.state().pools.is_empty());
}

#[test]
fn a_pool_of_that_name_that_is_not_a_lease_is_never_touched() {
    let fake = FakePve::start(Config::default());
    let c = cluster(&fake);
    fake.state()
        .pools
        .insert("haimg-haimg-run".into(), Some("the web team's pool".into()));
    let b = support::backend(&c);
    let messages: Vec<String> = [false, true]
        .into_iter()
        .map(|force| {
            let e = take_lease(b.lease(&c.name), &holder("deploy", 2, "here"), force);
            format!("{:#}", e.unwrap_err())
        })
        .collect();
    assert_eq!(
        messages[0], messages[1],
        "--force-unlock does not break it either"
    );
    insta::assert_snapshot!(messages[0], @r#"failed to take the cluster's run lease in Proxmox: GET /pools (poolid haimg-haimg-run): a pool haimg-haimg-run exists that is not a haimg run lease (comment "the web team's pool"); rename or remove it"#);
    assert_eq!(
        fake.state().pools["haimg-haimg-run"].as_deref(),
        Some("the web team's pool")
    );
}

#[test]
fn a_lost_answer_to_the_create_is_settled_by_reading_the_pool() {
    let fake = FakePve::start(Config::default());
    let c = cluster(&fake);
    fake.inject(Fault::new("POST", "/pools$", 1, FaultKind::After(596)));
    let b = support::backend(&c);
    let lease = take_lease(b.lease(&c.name), &holder("deploy", 3, "here"), false).unwrap();
    let posts = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/pools")
        .count();
    assert_eq!(posts, 1, "the create ran: it is not sent again");
    drop(lease);
    assert!(fake.state().pools.is_empty());
}

/// `haimg deploy` from a second host stops before any container call while
/// the lease is held, and `--force-unlock` goes on (and releases at the end).
#[test]
fn haimg_deploy_waits_for_nobody_and_changes_nothing_while_another_host_holds_the_lease() {
    let fake = FakePve::start(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let text = support::spec_text(&fake.endpoint(), "templates", &support::ca_tls());
    let spec = dir.path().join("haimg.yaml");
    std::fs::write(&spec, &text).unwrap();
    let c = haimg::model::spec::parse_yaml(&text).unwrap().cluster;
    let out = support::write_templates(dir.path(), &c, "v1");
    let other = support::backend(&c);
    let held = take_lease(other.lease(&c.name), &holder("deploy", 99, "hostA"), false).unwrap();
    fake.clear_requests();
    let run = |extra: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_haimg"))
            .arg("--spec")
            .arg(&spec)
            .args(["deploy", "--no-progress", "--templates"])
            .arg(&out)
            .args(extra)
            .env("HAIMG_PVE_TOKEN", support::pve_fake::token())
            .env("HAIMG_SECRETS_DIR", dir.path().join(".secrets"))
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    insta::assert_snapshot!(redact(stderr.trim()), @"error: the cluster is locked by `haimg deploy` (pid 99 on hostA, started N s ago; lease expires in N s), from another deploy host or run (lease: Proxmox pool haimg-haimg-run): wait for it to finish; if that run died or hangs, stop it, then break the lease with --force-unlock");
    let paths: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths,
        ["POST /pools", "GET /pools"],
        "nothing but the lease"
    );

    let (code, stderr) = run(&["--force-unlock"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("breaking the run lease held by `haimg deploy` (pid 99 on hostA"),
        "{stderr}"
    );
    assert!(
        fake.state().pools.is_empty(),
        "released at the end of the run"
    );
    assert_eq!(fake.state().containers.len(), 9);
    drop(held); // A's end: not its lease any more, nothing to release.
    assert!(fake.state().pools.is_empty());
}

/// The lease is renewed while the run lasts (a later expiry each time), and a
/// run whose lease was broken neither renews nor releases its successor's.
#[test]
fn the_lease_is_renewed_and_a_broken_one_is_left_to_its_new_holder() {
    use haimg::cli::runlock::take_lease_renewing;
    let fake = FakePve::start(Config::default());
    let c = cluster(&fake);
    let b = support::backend(&c);
    let every = std::time::Duration::from_millis(150);
    let expires = || {
        let text = fake.state().pools["haimg-haimg-run"].clone().unwrap();
        let json = text.strip_prefix("haimg run lease: ").unwrap().to_string();
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["expires"]
            .as_u64()
            .unwrap()
    };
    let a = take_lease_renewing(
        b.lease(&c.name),
        &holder("deploy", 1, "hostA"),
        false,
        every,
    )
    .unwrap();
    let first = expires();
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let puts = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path == "/pools")
        .count();
    assert!(puts >= 3, "renewed {puts} times in 1.3 s");
    assert!(expires() > first, "each renewal moves the expiry");

    let b2 = take_lease_renewing(b.lease(&c.name), &holder("gc", 2, "hostB"), true, every).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    drop(a); // its renewals failed meanwhile; its release leaves B's lease alone
    let now = fake.state().pools["haimg-haimg-run"].clone().unwrap();
    assert!(now.contains("hostB"), "{now}");
    drop(b2);
    assert!(fake.state().pools.is_empty());
}
