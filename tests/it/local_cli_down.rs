//! `haimg down` as users meet it: the errors for bad input and missing root,
//! and the quiet answer when there is nothing to remove. The full removal of
//! a real cluster is in `local_lxc.rs`.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_haimg");

fn run(args: &[&str], state_root: &std::path::Path) -> Output {
    Command::new(BIN)
        .args(args)
        .env("HAIMG_STATE_DIR", state_root)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn bad_cluster_name_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&["down", "--cluster", "Not_A_Label"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr), @r#"error: "Not_A_Label" is not a cluster name (a DNS label: a-z, 0-9, -)"#);
}

#[test]
fn nothing_to_remove_is_success() {
    if !haimg::backend::local::host::is_root() {
        crate::support::skip("nothing_to_remove_is_success", "needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&["down", "--cluster", "empty"], tmp.path());
    assert_eq!(out.status.code(), Some(0));
    let err =
        String::from_utf8_lossy(&out.stderr).replace(&tmp.path().display().to_string(), "[ROOT]");
    insta::assert_snapshot!(err, @"nothing to remove for cluster empty (state directory [ROOT]/empty)");
    assert!(
        out.stdout.is_empty(),
        "stdout is data; nothing without --json"
    );
}

#[test]
fn without_root_it_says_why() {
    if !haimg::backend::local::host::is_root() {
        // Already unprivileged: run it directly.
        let tmp = tempfile::tempdir().unwrap();
        let out = run(&["down", "--cluster", "c"], tmp.path());
        assert_eq!(out.status.code(), Some(1));
        return;
    }
    // As root: run a copy of the binary as nobody.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = tmp.path().join("haimg");
    std::fs::copy(BIN, &bin).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["down", "--cluster", "c"])
        .env("HAIMG_STATE_DIR", tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr), @"error: haimg down needs root: it stops LXC containers and removes a bridge and a network namespace");
}
