//! `haimg build` / `haimg lock` at the command line: the errors a user sees
//! before any build work starts (no root, no network needed).

use std::process::Command;

fn haimg(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_haimg"))
        .args(args)
        .current_dir(dir)
        .env_remove("HAIMG_SPEC")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_role_is_a_usage_error() {
    let d = tempfile::tempdir().unwrap();
    let (code, _, err) = haimg(d.path(), &["build", "--role", "lb,db"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("invalid value 'db' for '--role <ROLES>'"),
        "{err}"
    );
    assert!(
        err.contains("[possible values: lb, mongo, webapp]"),
        "{err}"
    );
}

/// `deploy` and `test` take role names after `--allow-missing` too, and
/// nothing else.
#[test]
fn an_unknown_role_to_allow_missing_is_a_usage_error() {
    let d = tempfile::tempdir().unwrap();
    for cmd in ["deploy", "test"] {
        let (code, _, err) = haimg(d.path(), &[cmd, "--allow-missing", "webapp,db"]);
        assert_eq!(code, 2, "{cmd}");
        assert!(
            err.contains("invalid value 'db' for '--allow-missing <ROLE>'"),
            "{cmd}: {err}"
        );
        assert!(
            err.contains("[possible values: lb, mongo, webapp]"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn outside_a_project_it_says_where_to_run() {
    let d = tempfile::tempdir().unwrap();
    let (code, out, err) = haimg(d.path(), &["build", "--role", "lb", "--json"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    let err = err.replace(&d.path().display().to_string(), "[DIR]");
    assert_eq!(
        err,
        "error: [DIR] has no images/ directory; run haimg from the project root\n"
    );
}

#[test]
fn a_bad_recipe_is_reported_with_its_path() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("images")).unwrap();
    std::fs::write(
        d.path().join("images/lb.yaml"),
        "schema_version: 1\nrole: lb\nsuite: bookworm\nsources: []\npakages: [nginx]\n",
    )
    .unwrap();
    let (code, _, err) = haimg(d.path(), &["lock", "--role", "lb"]);
    assert_eq!(code, 1);
    let err = err.replace(&d.path().display().to_string(), "[DIR]");
    assert!(
        err.starts_with("[lb] [DIR]/images/lb.yaml: unknown field `pakages`"),
        "{err}"
    );
}

#[test]
fn a_missing_lock_names_the_command_that_makes_it() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("images")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/images/lb.yaml"),
        d.path().join("images/lb.yaml"),
    )
    .unwrap();
    let (code, _, err) = haimg(d.path(), &["lock", "--role", "lb", "--json"]);
    assert_eq!(code, 1);
    let err = err.replace(&d.path().display().to_string(), "[DIR]");
    assert_eq!(
        err,
        "[lb] [DIR]/images/lb.lock is missing; create it with `haimg lock --update --role lb`\n"
    );
}

#[test]
fn the_committed_lb_lock_matches_its_recipe() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, _, err) = haimg(root, &["lock", "--role", "lb"]);
    assert_eq!(code, 0, "{err}");
}
