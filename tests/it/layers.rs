//! The module graph of `src/` against the layering in README.md ("Layout"):
//! every `crate::<module>` path outside comments is an edge, and an edge the
//! table below does not allow fails the test with its file and line. A new
//! module must be placed in the table before it can be imported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which top-level modules each one may use, downwards only. `model` is the
/// `haimg-model` crate (re-exported as `crate::model`).
const ALLOWED: &[(&str, &[&str])] = &[
    // face
    (
        "cli",
        &[
            "golden",
            "orchestrate",
            "deploy",
            "rollout",
            "fleet",
            "backend",
            "probe",
            "build",
            "doctor",
            "exec",
            "digest",
            "spec_file",
            "secrets",
            "model",
        ],
    ),
    ("main", &["cli"]),
    ("lib", &[]),
    // harness: a client of the library like the CLI, never of the CLI
    (
        "golden",
        &[
            "orchestrate",
            "rollout",
            "fleet",
            "backend",
            "probe",
            "exec",
            "secrets",
            "model",
        ],
    ),
    // orchestration
    (
        "orchestrate",
        &["deploy", "rollout", "fleet", "backend", "model"],
    ),
    ("deploy", &["fleet", "backend", "model"]),
    ("rollout", &["fleet", "backend", "probe", "model"]),
    // fleet facts
    ("fleet", &["backend", "digest", "model"]),
    // targets
    ("backend", &["probe", "exec", "digest", "model"]),
    ("probe", &["model"]),
    // host preflight: what build, local deploy and test need of this host; used by the face only
    ("doctor", &["backend", "exec", "model"]),
    // build: its own pillar, used by the face only
    ("build", &["exec", "digest", "model"]),
    // base
    ("exec", &["model"]),
    ("digest", &[]),
    ("spec_file", &["model"]),
    ("secrets", &["model"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/cli/deploy.rs` -> `cli`, `src/orchestrate.rs` -> `orchestrate`.
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The modules a line names after `crate::`, comments left out.
fn edges(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("crate::")
        .filter(|(i, _)| {
            // `haimg_crate::` or `mycrate::` are not `crate::`.
            !code[..*i]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn no_module_imports_upwards_or_sideways() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    let mut seen = 0;
    for f in &files {
        let from = top_module(&src, f);
        let Some(ok) = allowed.get(from.as_str()) else {
            bad.push(format!(
                "{}: module `{from}` is not placed in a layer (tests/it/layers.rs)",
                f.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            for to in edges(line) {
                seen += 1;
                if to != from && !ok.contains(&to.as_str()) {
                    bad.push(format!(
                        "{}:{}: {from} -> {to}: {}",
                        f.strip_prefix(root).unwrap().display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        seen > 100,
        "only {seen} crate:: paths found: is src/ there?"
    );
    assert!(bad.is_empty(), "forbidden edges:\n{}", bad.join("\n"));
}

#[test]
fn the_edges_the_layering_forbids_are_not_allowed() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    for (from, to) in [
        ("rollout", "golden"),
        ("rollout", "cli"),
        ("golden", "cli"),
        ("deploy", "rollout"),
        ("rollout", "deploy"),
        ("backend", "deploy"),
        ("backend", "rollout"),
        ("backend", "fleet"),
        ("deploy", "build"),
        ("backend", "build"),
        ("fleet", "deploy"),
        ("fleet", "rollout"),
        ("fleet", "build"),
    ] {
        assert!(
            !allowed[from].contains(&to),
            "{from} -> {to} must stay forbidden"
        );
    }
    // Nothing in production code may use the test harness.
    for (from, to) in ALLOWED {
        assert!(
            *from == "cli" || !to.contains(&"golden"),
            "{from} may not use golden"
        );
    }
}

#[test]
fn edges_are_read_from_code_not_comments() {
    assert_eq!(edges("use crate::fleet::slot::{Ct, SlotView};"), ["fleet"]);
    assert_eq!(
        edges("let x = crate::backend::per_node(&g, f); // crate::cli"),
        ["backend"]
    );
    assert!(edges("//! see [`crate::deploy`]").is_empty());
    assert!(edges("use haimg_crate::x;").is_empty());
}

/// Lines (0-based) of `#[error("…")]` attributes whose variant prints a
/// cause it also chains.
fn doubled(lines: &[&str]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(attr) = line.trim().strip_prefix("#[error(\"") else {
            continue;
        };
        // A field named `source` is chained by thiserror whatever its attributes.
        let shows_source = ["{source}", "{source:", ".source)", ".source,"]
            .iter()
            .any(|p| attr.contains(p));
        // The variant itself: the next line that is not a doc comment.
        let variant = lines[i + 1..]
            .iter()
            .find(|l| !l.trim().starts_with("///"))
            .unwrap_or(&"");
        let shows_0 = attr.contains("{0}") || attr.contains("{0:");
        let chains_0 = variant.contains("(#[source]") || variant.contains("(#[from]");
        if shows_source || (shows_0 && chains_0) {
            out.push(i);
        }
    }
    out
}

/// Each cause is printed once: an error variant either shows its source in
/// its message or chains it (`#[source]`, `#[from]`, a field named `source`),
/// never both, since the CLI prints the chain after the message.
#[test]
fn no_error_prints_and_chains_its_cause() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "model/src", "mongo/src", "init/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for i in doubled(&lines) {
            bad.push(format!(
                "{}:{}: {}",
                f.strip_prefix(root).unwrap().display(),
                i + 1,
                lines[i].trim()
            ));
        }
    }
    assert!(bad.is_empty(), "causes printed twice:\n{}", bad.join("\n"));
}

#[test]
fn doubled_causes_are_recognised() {
    let src = r#"
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("mmdebstrap failed: {0}")]
    /// why
    Bootstrap(#[source] RunError),
    #[error("{source_name}: {err}")]
    Invalid { source_name: Source, err: SpecError },
    #[error("failed: {0}")]
    Printed(RunError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("deploy failed")]
    Chained(#[source] DeployError),
    "#;
    let lines: Vec<&str> = src.lines().collect();
    assert_eq!(doubled(&lines), [1, 3]);
}

/// Every test that cannot run here goes through one of the two `skip`
/// helpers (`tests/it/support`, `init/tests/it/main.rs`), which fail under
/// `CI=true`: no test prints its own skip and returns.
#[test]
fn tests_skip_only_through_the_helper_that_fails_in_ci() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["tests", "init/tests", "mongo/tests", "model/tests"] {
        if root.join(dir).is_dir() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    assert!(files.len() > 30, "{} test files", files.len());
    let mut own = Vec::new();
    for f in files.iter().filter(|f| !f.ends_with("tests/it/layers.rs")) {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let l = line.to_ascii_lowercase();
            let prints = l.contains("eprintln!(") || l.contains("println!(");
            let says_skip =
                l.contains("\"skip") || l.contains("\"skipped") || l.contains("\"skipping");
            let helper = l.contains("eprintln!(\"skip {test}: {why}\")");
            if prints && says_skip && !helper {
                own.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        own.is_empty(),
        "skips that CI would not notice:\n{}",
        own.join("\n")
    );
}
