//! Time-bounded property runs for the decoders of outside input (feature
//! `fuzz`, tests only; never in a release build).
//!
//! [`run`] draws cases from a proptest strategy until its time budget is
//! spent, so `make test` fuzzes each target for a fixed time instead of a
//! fixed count: [`BUDGET_ENV`] sets the seconds per target (default
//! [`DEFAULT_SECS`]; 0 runs 64 cases, for a quick check). A failure is shrunk
//! by proptest and reported with the minimal input; what it finds is fixed
//! and kept as a plain regression test beside the target.

use std::time::{Duration, Instant};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Seconds each target runs, from the environment.
pub const BUDGET_ENV: &str = "HAIMG_FUZZ_SECS";
/// The default budget per target: `make test` runs five targets, about a minute.
pub const DEFAULT_SECS: u64 = 12;

/// The budget per target, from [`BUDGET_ENV`].
pub fn budget() -> Duration {
    let secs = std::env::var(BUDGET_ENV)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_SECS);
    Duration::from_secs(secs)
}

/// Run `test` on cases from `strategy` until the budget is spent (at least 64
/// cases). Panics with the shrunk failing input. Returns the number of cases.
pub fn run<S, F>(name: &str, strategy: S, test: F) -> u64
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError>,
{
    let budget = budget();
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let start = Instant::now();
    let mut cases = 0u64;
    while cases < 64 || start.elapsed() < budget {
        let tree = match strategy.new_tree(&mut runner) {
            Ok(t) => t,
            Err(e) => panic!("{name}: cannot generate a case: {e}"),
        };
        let first = format!("{:?}", tree.current());
        if let Err(e) = runner.run_one(tree, &test) {
            panic!("{name}: failed after {cases} cases: {e}\nfirst failing input: {first}");
        }
        cases += 1;
    }
    eprintln!(
        "{name}: {cases} cases in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    cases
}
