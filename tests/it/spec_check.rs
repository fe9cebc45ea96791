//! `haimg check`: the plan of the default spec, and the error a user sees for
//! every bad spec under `tests/fixtures/spec/fails/`.

use std::path::Path;
use std::process::{Command, Output};

fn haimg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_haimg"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("HAIMG_SPEC")
        .env_remove("RUST_LOG")
        .output()
        .expect("failed to run haimg")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_default_spec_human() {
    let out = haimg(&["check", "--spec", "haimg.yaml"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for ip in 100..=108 {
        assert!(
            stdout.contains(&format!("192.168.30.{ip}")),
            "member .{ip} missing"
        );
    }
    assert!(stdout.contains("VIP 192.168.30.200"));
    insta::assert_snapshot!("check_human", stdout);
    insta::assert_snapshot!("check_human_stderr", text(&out.stderr));
}

#[test]
fn check_default_spec_json() {
    let out = haimg(&["check", "--spec", "haimg.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["cluster"]["network"]["vip"], "192.168.30.200");
    assert_eq!(v["tolerance"]["claim_two_hosts"], false);
    insta::assert_json_snapshot!("check_json", v);
}

#[test]
fn check_without_file_uses_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_haimg"))
        .arg("check")
        .current_dir(dir.path())
        .env_remove("HAIMG_SPEC")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("the embedded default spec: valid"));
}

#[test]
fn bad_specs_exit_2_and_name_the_path() {
    let mut seen = 0;
    insta::glob!("../fixtures/spec/fails", "*.yaml", |path| {
        seen += 1;
        let rel = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let out = haimg(&["check", "--spec", &rel]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{rel}: {stderr}");
        assert!(out.stdout.is_empty(), "{rel}: nothing on stdout");
        assert!(!stderr.contains("panicked"), "{rel}: {stderr}");
        // Every finding names a YAML path (`a.b[0].c`), a line and column, or the whole file.
        for line in stderr.lines().filter(|l| l.starts_with("error")) {
            let located = line.contains('`') || line.contains(" at line ");
            assert!(
                located || line.starts_with("error: the file"),
                "{rel}: {line}"
            );
        }
        insta::assert_snapshot!(stderr);
    });
    assert!(seen >= 15, "only {seen} bad-spec fixtures");
}

/// The endpoint is shown as parsed: lowercase host, no trailing slash.
#[test]
fn check_prints_the_parsed_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("haimg.yaml");
    let yaml = haimg_model::DEFAULT_SPEC.replace(
        "  # endpoint: https://pve1:8006\n",
        "  endpoint: HTTPS://PVE1.Example.org:8006/\n",
    );
    std::fs::write(&spec, yaml).unwrap();
    let out = haimg(&["check", "--spec", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("proxmox https://pve1.example.org:8006 (nodes pve1, pve2, pve3)"),
        "{stdout}"
    );
    let out = haimg(&["check", "--spec", spec.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["cluster"]["proxmox"]["endpoint"],
        "https://pve1.example.org:8006"
    );
}

/// The fast VRRP profile: `check` shows the interval in seconds and the
/// VRRP version it switches the lbs to, and the plan carries milliseconds.
#[test]
fn check_shows_the_fast_vrrp_profile() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("haimg.yaml");
    let yaml = haimg_model::DEFAULT_SPEC.replace("advert_int_s: 1", "advert_interval_ms: 100");
    std::fs::write(&spec, yaml).unwrap();
    let out = haimg(&["check", "--spec", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "VIP 192.168.30.200 ports 80: keepalived VRID 51 unicast advert 0.1s (VRRPv3), master nginx1\n"
        ),
        "{stdout}"
    );
    let out = haimg(&["check", "--spec", spec.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cluster"]["lb"]["keepalived"]["advert_interval_ms"], 100);
}

/// A password in the endpoint is refused and never printed.
#[test]
fn an_endpoint_password_is_never_printed() {
    let out = haimg(&[
        "check",
        "--spec",
        "tests/fixtures/spec/fails/endpoint-password.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn unreadable_spec_is_an_error_naming_the_file() {
    let out = haimg(&["check", "--spec", "no/such/haimg.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(text(&out.stderr), @"error: failed to read no/such/haimg.yaml: No such file or directory (os error 2)");
}

#[test]
fn usage_errors_exit_2() {
    let out = haimg(&["check", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = haimg(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("haimg "));
}

#[test]
fn completions_for_bash() {
    let out = haimg(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("_haimg()"));
}

#[test]
fn default_spec_file_is_the_embedded_one() {
    let on_disk =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("haimg.yaml")).unwrap();
    let out = haimg(&["spec"]);
    assert_eq!(text(&out.stdout), on_disk);
}

/// `haimg test --deployed` refuses, before touching anything, the scenarios
/// that would kill, stop or roll members of a cluster someone deployed.
#[test]
fn test_deployed_refuses_harmful_scenarios() {
    let out = haimg(&[
        "test",
        "--spec",
        "haimg.yaml",
        "--deployed",
        "--scenario",
        "http,vip-failover,rollout",
    ]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    insta::assert_snapshot!(text(&out.stderr));
}

/// `haimg down --leftover-tests` with a state root that does not exist says so.
#[test]
fn down_leftover_tests_with_a_missing_root() {
    let out = haimg(&[
        "down",
        "--leftover-tests",
        "--state-root",
        "/nonexistent/haimg-tests",
    ]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    insta::assert_snapshot!(text(&out.stderr));
}
