//! Golden scenario results: a table for people, JSON for programs.
//!
//! JSON shape: `{"scenarios":[{"name","status","reason","figures":{…},"load"}]}`.
//! Figures are measured values (seconds, counts); a scenario without figures
//! did not measure anything and is suspicious by construction. `load` is the
//! load a scenario drove through the VIP, as its client counted it
//! (`{"sent","failed","planned"}`), or `null` for a scenario that drove none.

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
    /// The load the scenario drove, if any.
    pub load: Option<LoadCounts>,
}

/// One scenario's load, as its client counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LoadCounts {
    /// Requests sent.
    pub sent: usize,
    /// Requests a user saw fail: no answer, a cut answer, a timeout (and a
    /// 5xx where the scenario counts it so).
    pub failed: usize,
    /// What the scenario meant to send (rate × duration, or its request
    /// count); `None` for probes sent until something happened.
    pub planned: Option<usize>,
}

impl ScenarioReport {
    pub fn new(name: &str) -> ScenarioReport {
        ScenarioReport {
            name: name.to_string(),
            status: Status::Pass,
            reason: None,
            figures: BTreeMap::new(),
            load: None,
        }
    }

    pub fn figure(&mut self, key: &str, v: impl Into<Figure>) -> &mut ScenarioReport {
        self.figures.insert(key.to_string(), v.into());
        self
    }

    /// Record the load the scenario drove (the JSON's `load`); a second
    /// load adds to the first (a scenario with two phases).
    pub fn load(
        &mut self,
        sent: usize,
        failed: usize,
        planned: Option<usize>,
    ) -> &mut ScenarioReport {
        let l = self.load.get_or_insert(LoadCounts {
            sent: 0,
            failed: 0,
            planned: Some(0),
        });
        l.sent += sent;
        l.failed += failed;
        l.planned = l.planned.zip(planned).map(|(a, b)| a + b);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `haimg test --json` prints: per scenario its figures and
    /// its load counts (`null` without a load).
    #[test]
    fn json_carries_the_load_counts_per_scenario() {
        let mut under_load = ScenarioReport::new("webapp-loss");
        under_load
            .figure("killed", "webapp2")
            .load(300, 0, Some(300));
        let mut probed = ScenarioReport::new("vip-failover");
        probed
            .figure("hard_s", 3.571)
            .load(41, 30, None)
            .load(12, 5, None);
        let mut failed = ScenarioReport::new("rollout");
        failed
            .load(0, 0, Some(600))
            .fail("the load did not run as planned: 0 requests sent, 600 expected (20 r/s for 30.0 s, ±10 %)");
        let r = Report {
            scenarios: vec![
                under_load,
                probed,
                failed,
                ScenarioReport::skip("mongo-rs0", "no mongo template"),
            ],
        };
        insta::assert_json_snapshot!(r, @r#"
        {
          "scenarios": [
            {
              "name": "webapp-loss",
              "status": "pass",
              "reason": null,
              "figures": {
                "killed": "webapp2"
              },
              "load": {
                "sent": 300,
                "failed": 0,
                "planned": 300
              }
            },
            {
              "name": "vip-failover",
              "status": "pass",
              "reason": null,
              "figures": {
                "hard_s": 3.571
              },
              "load": {
                "sent": 53,
                "failed": 35,
                "planned": null
              }
            },
            {
              "name": "rollout",
              "status": "fail",
              "reason": "the load did not run as planned: 0 requests sent, 600 expected (20 r/s for 30.0 s, ±10 %)",
              "figures": {},
              "load": {
                "sent": 0,
                "failed": 0,
                "planned": 600
              }
            },
            {
              "name": "mongo-rs0",
              "status": "skip",
              "reason": "no mongo template",
              "figures": {},
              "load": null
            }
          ]
        }
        "#);
    }

    #[test]
    fn loads_add_up_and_an_open_ended_one_has_no_plan() {
        let mut o = ScenarioReport::new("x");
        o.load(10, 1, Some(10)).load(5, 0, Some(6));
        assert_eq!(
            o.load,
            Some(LoadCounts {
                sent: 15,
                failed: 1,
                planned: Some(16)
            })
        );
        o.load(3, 3, None);
        assert_eq!(o.load.and_then(|l| l.planned), None);
    }
}
