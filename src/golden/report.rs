//! Golden scenario results: a table for people, JSON for programs.
//!
//! JSON shape: `{"scenarios":[{"name","status","reason","figures":{…}}]}`.
//! Figures are measured values (seconds, counts); a scenario without figures
//! did not measure anything and is suspicious by construction.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// A measured figure: a number with its unit in the key (`failover_s`), or text.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Figure {
    Num(f64),
    Text(String),
}

impl From<f64> for Figure {
    fn from(v: f64) -> Self {
        Figure::Num((v * 1000.0).round() / 1000.0)
    }
}
impl From<usize> for Figure {
    fn from(v: usize) -> Self {
        Figure::Num(v as f64)
    }
}
impl From<&str> for Figure {
    fn from(v: &str) -> Self {
        Figure::Text(v.to_string())
    }
}
impl From<String> for Figure {
    fn from(v: String) -> Self {
        Figure::Text(v)
    }
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Figure::Num(n) if n.fract() == 0.0 => write!(f, "{}", *n as i64),
            Figure::Num(n) => write!(f, "{n}"),
            Figure::Text(t) => f.write_str(t),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub status: Status,
    pub reason: Option<String>,
    pub figures: BTreeMap<String, Figure>,
}

impl ScenarioReport {
    pub fn new(name: &str) -> ScenarioReport {
        ScenarioReport {
            name: name.to_string(),
            status: Status::Pass,
            reason: None,
            figures: BTreeMap::new(),
        }
    }

    pub fn figure(&mut self, key: &str, v: impl Into<Figure>) -> &mut ScenarioReport {
        self.figures.insert(key.to_string(), v.into());
        self
    }

    /// Fail with a reason; the first failure's reason is kept.
    pub fn fail(&mut self, reason: impl Into<String>) -> &mut ScenarioReport {
        if self.status != Status::Fail {
            self.status = Status::Fail;
            self.reason = Some(reason.into());
        }
        self
    }

    /// Check a condition; on false, fail with the reason.
    pub fn expect(&mut self, ok: bool, reason: impl Into<String>) -> &mut ScenarioReport {
        if !ok {
            self.fail(reason);
        }
        self
    }

    pub fn skip(name: &str, reason: impl Into<String>) -> ScenarioReport {
        ScenarioReport {
            status: Status::Skip,
            reason: Some(reason.into()),
            ..ScenarioReport::new(name)
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.scenarios.iter().all(|s| s.status != Status::Fail)
    }
}
