//! Building haimg-init, the static PID 1 of every image: the one place that
//! says how (`haimg build` and `make init`, which calls `haimg build
//! --init-only`, both come here).
//!
//! The flags: static glibc, not position-independent, no unwind tables (the
//! profile has panic=abort), which keeps the stripped binary under
//! [`MAX_INIT_BYTES`]; and the workspace, `$CARGO_HOME` and Cargo's target
//! directory remapped to fixed names, so the bytes do not depend on where the
//! project is checked out or where Cargo puts its output. They are passed as
//! `CARGO_ENCODED_RUSTFLAGS` (paths may hold spaces), which also overrides
//! any `RUSTFLAGS` or Cargo configuration of the caller.
//!
//! The artifact's path is the one Cargo reports (`--message-format=json`,
//! the `compiler-artifact` of `haimg-init`), never a guess: with
//! `CARGO_TARGET_DIR` set the binary is not under the project.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::exec::{Cmd, CommandRunner, RunError};

pub const INIT_PACKAGE: &str = "haimg-init";
pub const INIT_PROFILE: &str = "init";
pub const INIT_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The size the init must stay under: 2 MiB + 64 KiB. It was 2 MiB until
/// the lossless VIP moves (issue 16) put the VIP on `lo`, two sysctls and
/// nft into the lb's boot, 10 KB past it; what it holds is listed in
/// init/README.md.
pub const MAX_INIT_BYTES: u64 = (2 << 20) + (64 << 10);
/// How the init is compiled, besides the path remapping.
pub const INIT_RUSTFLAGS: [&str; 6] = [
    "-C",
    "target-feature=+crt-static",
    "-C",
    "relocation-model=static",
    "-C",
    "force-unwind-tables=no",
];

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("cargo reported no haimg-init executable (its messages: {0})")]
    NoArtifact(String),
    #[error("failed to read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is {size} bytes, over the {max}-byte limit of haimg-init")]
    TooBig { path: PathBuf, size: u64, max: u64 },
}

/// The built init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitArtifact {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Where the workspace and `$CARGO_HOME` are, for the remapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub workspace: PathBuf,
    pub cargo_home: PathBuf,
    pub target_dir: PathBuf,
}

/// Every flag rustc gets: [`INIT_RUSTFLAGS`] and the remapping. The target
/// directory comes last so it wins over the workspace when it lies inside it
/// (rustc applies the last matching prefix), making `<workspace>/target` and
/// any `CARGO_TARGET_DIR` the same `/target`.
pub fn rustflags(p: &Paths) -> Vec<String> {
    let mut v: Vec<String> = INIT_RUSTFLAGS.iter().map(|s| s.to_string()).collect();
    for (from, to) in [
        (&p.workspace, "/haimg"),
        (&p.cargo_home, "/cargo"),
        (&p.target_dir, "/target"),
    ] {
        v.push(format!("--remap-path-prefix={}={to}", from.display()));
    }
    v
}

/// `cargo` with the caller's environment minus what would change the build
/// (`RUSTFLAGS` and friends; the package variables of a `cargo run`).
pub fn cargo(root: &Path, timeout: Duration) -> Cmd {
    let mut c = Cmd::hermetic(
        std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
        timeout,
    )
    .cwd(root);
    for (k, v) in std::env::vars() {
        let build_flags = matches!(
            k.as_str(),
            "RUSTFLAGS" | "CARGO_ENCODED_RUSTFLAGS" | "CARGO_BUILD_RUSTFLAGS" | "RUSTC_WRAPPER"
        );
        if !build_flags && !k.starts_with("CARGO_PKG") && !k.starts_with("CARGO_CRATE") {
            c = c.env(k, v);
        }
    }
    c
}

/// The `cargo build` of the init.
pub fn build_command(root: &Path, p: &Paths) -> Cmd {
    cargo(root, Duration::from_secs(1800))
        .args([
            "build",
            "--locked",
            "-p",
            INIT_PACKAGE,
            "--profile",
            INIT_PROFILE,
            "--target",
            INIT_TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags(p).join("\u{1f}"))
        .stream_stderr(true)
}

/// The executable of `haimg-init` among Cargo's JSON messages (one per line).
pub fn artifact_from_messages(stdout: &str) -> Option<PathBuf> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == INIT_PACKAGE)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
}

/// Cargo's target directory for the workspace at `root` (`CARGO_TARGET_DIR`,
/// `build.target-dir`, or `<root>/target`), as `cargo metadata` reports it.
pub fn target_dir(runner: &dyn CommandRunner, root: &Path) -> Result<PathBuf, InitError> {
    let out = runner.run(&cargo(root, Duration::from_secs(120)).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ]))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| InitError::NoArtifact(format!("cargo metadata: {e}")))?;
    v["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| InitError::NoArtifact("cargo metadata has no target_directory".into()))
}

/// `$CARGO_HOME`, else `$HOME/.cargo`.
pub fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

/// Build the init of the workspace at `root` and check its size.
pub fn build(runner: &dyn CommandRunner, root: &Path) -> Result<InitArtifact, InitError> {
    let paths = Paths {
        workspace: root.to_path_buf(),
        cargo_home: cargo_home(),
        target_dir: target_dir(runner, root)?,
    };
    let out = runner.run(&build_command(root, &paths))?;
    let stdout = out.stdout_str();
    let path = artifact_from_messages(&stdout)
        .ok_or_else(|| InitError::NoArtifact(crate::exec::tail(&out.stdout, 3)))?;
    let read = |error| InitError::Read {
        path: path.clone(),
        error,
    };
    let size = std::fs::metadata(&path).map_err(read)?.len();
    if size > MAX_INIT_BYTES {
        return Err(InitError::TooBig {
            path,
            size,
            max: MAX_INIT_BYTES,
        });
    }
    let sha256 = super::hash::sha256_file(&path).map_err(read)?;
    Ok(InitArtifact { path, size, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            workspace: "/src/my haimg".into(),
            cargo_home: "/root/.cargo".into(),
            target_dir: "/src/my haimg/target".into(),
        }
    }

    #[test]
    fn one_definition_of_the_flags_with_the_paths_remapped() {
        let cmd = build_command(Path::new("/src/my haimg"), &paths());
        insta::assert_snapshot!(cmd.args.join(" "), @"build --locked -p haimg-init --profile init --target x86_64-unknown-linux-gnu --message-format=json-render-diagnostics");
        assert_eq!(
            cmd.env["CARGO_ENCODED_RUSTFLAGS"]
                .split('\u{1f}')
                .collect::<Vec<_>>(),
            [
                "-C",
                "target-feature=+crt-static",
                "-C",
                "relocation-model=static",
                "-C",
                "force-unwind-tables=no",
                "--remap-path-prefix=/src/my haimg=/haimg",
                "--remap-path-prefix=/root/.cargo=/cargo",
                "--remap-path-prefix=/src/my haimg/target=/target",
            ]
        );
        assert!(!cmd.env.contains_key("RUSTFLAGS"));
    }

    #[test]
    fn the_artifact_path_is_what_cargo_reports() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"haimg-model","kind":["lib"]},"executable":null}"#,
            "\n",
            r#"{"reason":"build-script-executed","package_id":"x"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"haimg-init","kind":["bin"]},"executable":"/elsewhere/tgt/x86_64-unknown-linux-gnu/init/haimg-init","fresh":true}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n"
        );
        assert_eq!(
            artifact_from_messages(messages),
            Some(PathBuf::from(
                "/elsewhere/tgt/x86_64-unknown-linux-gnu/init/haimg-init"
            ))
        );
        assert_eq!(
            artifact_from_messages(r#"{"reason":"build-finished","success":true}"#),
            None
        );
    }

    #[test]
    fn the_target_dir_and_the_artifact_come_from_cargo() {
        use crate::exec::{FakeRunner, Output};
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("haimg-init");
        std::fs::write(&bin, b"\x7fELF init").unwrap();
        let fake = FakeRunner::new();
        let tgt = d.path().join("tgt");
        let meta = format!(
            r#"{{"target_directory":"{}","packages":[]}}"#,
            tgt.display()
        );
        fake.on("cargo metadata", move |_| Ok(Output::ok(&meta)));
        let msg = format!(
            r#"{{"reason":"compiler-artifact","target":{{"name":"haimg-init"}},"executable":"{}"}}"#,
            bin.display()
        );
        fake.on("cargo build", move |_| Ok(Output::ok(&msg)));
        let a = build(&fake, Path::new("/src/haimg")).unwrap();
        assert_eq!(a.path, bin);
        assert_eq!(a.size, 9);
        let calls = fake.calls();
        assert!(calls[1].env["CARGO_ENCODED_RUSTFLAGS"]
            .ends_with(&format!("--remap-path-prefix={}=/target", tgt.display())));
        std::fs::write(&bin, vec![0u8; (MAX_INIT_BYTES + 1) as usize]).unwrap();
        let err = build(&fake, Path::new("/src/haimg")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is 2162689 bytes, over the 2162688-byte limit of haimg-init",
                bin.display()
            )
        );
    }
}
