//! `haimg.yaml`: parse loose, validate strict.
//!
//! [`raw`] holds the file's shape. [`parse_yaml`] (host only, feature `yaml`)
//! and [`parse_plan_json`] (the plan baked into images) read it; [`validate()`]
//! checks the whole spec and either returns a [`Cluster`] or every problem at
//! once, each with its YAML path and a hint. Warnings (legal but risky
//! choices) travel with the `Cluster` so `haimg check` can print them.

#[cfg(feature = "yaml")]
mod guard;
pub mod raw;
mod secrets;
mod validate;

use std::fmt;

use serde::Serialize;

use crate::Cluster;
pub use raw::RawSpec;
pub use validate::{validate, MAX_VMID};

/// The spec schema this haimg understands.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// YAML path, e.g. `roles.lb.members[1].ip`; empty for the whole file.
    pub path: String,
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// 1-based position in the file, when the parser knows it.
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl Problem {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
            hint: None,
            line: None,
            column: None,
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Warning,
            ..Problem::error(path, message)
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(hint.into());
        self
    }

    pub fn at(mut self, line: usize, column: usize) -> Problem {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}")?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, " at line {l} column {c}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)?;
        } else {
            write!(f, ": `{}`: {}", self.path, self.message)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// The spec could not be accepted; `problems` holds every error (and the warnings seen so far).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cluster spec: {} error(s)", self.errors().count())]
pub struct SpecError {
    pub problems: Vec<Problem>,
}

impl SpecError {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    fn single(p: Problem) -> SpecError {
        SpecError { problems: vec![p] }
    }
}

/// A cluster together with the warnings its spec produced.
#[derive(Debug, Clone)]
pub struct Checked {
    pub cluster: Cluster,
    pub warnings: Vec<Problem>,
}

/// Largest spec haimg reads; a cluster spec is a few KiB.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// Parse and validate `haimg.yaml` text.
#[cfg(feature = "yaml")]
pub fn parse_yaml(text: &str) -> Result<Checked, SpecError> {
    let raw = parse_yaml_raw(text)?;
    validate(&raw)
}

/// Parse `haimg.yaml` text into its raw shape (no cross-field checks).
#[cfg(feature = "yaml")]
pub fn parse_yaml_raw(text: &str) -> Result<RawSpec, SpecError> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(SpecError::single(
            Problem::error(
                "",
                format!(
                    "the file is {} bytes; a spec is at most {MAX_SPEC_BYTES} bytes",
                    text.len()
                ),
            )
            .hint("is this the right file?"),
        ));
    }
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(SpecError::single(
            Problem::error("", "the file is empty")
                .hint("start from the default spec: `haimg spec > haimg.yaml`"),
        ));
    }
    if let Some((n, line)) = text.lines().enumerate().find(|(_, l)| {
        let indent: String = l.chars().take_while(|c| c.is_whitespace()).collect();
        indent.contains('\t')
    }) {
        let col = line.find('\t').unwrap_or(0) + 1;
        return Err(SpecError::single(
            Problem::error("", "a tab is used for indentation")
                .hint("YAML indents with spaces only; replace the tab with spaces")
                .at(n + 1, col),
        ));
    }
    // Bound the nesting and refuse aliases before anything builds the document:
    // past that the parser's time grows with the square of the depth, and an
    // alias can expand a small file into a huge one.
    guard::check(text).map_err(SpecError::single)?;
    // Scan for secrets first, so a secret is reported as such and not as an unknown key.
    // A file that does not even parse as YAML gets its error from the typed parse below.
    let value = serde_yaml::from_str::<serde_yaml::Value>(text);
    if let Ok(value) = &value {
        let secret_problems = secrets::find(value);
        if !secret_problems.is_empty() {
            return Err(SpecError {
                problems: secret_problems,
            });
        }
    }
    // Deserialize from the text (not the Value) so errors keep their line and column.
    let de = serde_yaml::Deserializer::from_str(text);
    let raw = serde_path_to_error::deserialize::<_, RawSpec>(de).map_err(|e| {
        let path = shorten(yaml_path(&e.path().to_string()));
        yaml_problem(&path, e.inner())
    })?;
    value.map_err(|e| yaml_problem("", &e))?;
    Ok(raw)
}

#[cfg(feature = "yaml")]
fn yaml_problem(path: &str, e: &serde_yaml::Error) -> SpecError {
    let mut msg = e.to_string();
    // The location and the path are reported in their own fields; drop
    // serde_yaml's own copies of them.
    if let Some(i) = msg.find(" at line ") {
        msg.truncate(i);
    }
    if let Some((head, rest)) = msg.split_once(": ") {
        if !head.contains(' ') && path.starts_with(head) {
            msg = rest.to_string();
        }
    }
    msg = msg.replace(
        "expected struct RawSpec",
        "expected a mapping of haimg.yaml keys",
    );
    if msg.contains("as u128") || msg.contains("as i128") {
        msg = "the number is too large".to_string();
    }
    // serde_yaml quotes the offending value whole; a value can be as long as the file.
    msg = shorten(msg);
    let mut p = Problem::error(path, msg);
    if let Some(loc) = e.location() {
        p = p.at(loc.line(), loc.column());
    }
    if p.message.starts_with("unknown field") {
        p = p.hint("check the spelling; `haimg spec` prints every key with its default");
    } else if p.message.starts_with("missing field") {
        p = p.hint("add the key; `haimg spec` prints a complete spec");
    } else if p.message.starts_with("invalid type")
        || p.message.starts_with("invalid value")
        || p.message.starts_with("the number is too large")
    {
        p = p.hint("see the key reference in README.md");
    }
    SpecError::single(p)
}

/// A path or message cut to 300 characters: keys and values can be as long as the file.
#[cfg(feature = "yaml")]
fn shorten(s: String) -> String {
    if s.chars().count() > 300 {
        s.chars().take(299).chain(['…']).collect()
    } else {
        s
    }
}

/// serde_path_to_error writes `roles.lb.members[1].ip`; `.` alone means the root.
#[cfg(feature = "yaml")]
fn yaml_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// Read the plan baked into an image (`/etc/haimg/plan.json`) and validate it again.
pub fn parse_plan_json(text: &str) -> Result<Checked, SpecError> {
    let raw: RawSpec = serde_json::from_str(text).map_err(|e| {
        SpecError::single(
            Problem::error("", format!("baked plan is not valid: {e}")).at(e.line(), e.column()),
        )
    })?;
    validate(&raw)
}
