//! People-facing progress on stderr: one line when a step starts, one with
//! its duration when it ends, and the timings kept for the `--json` summary.
//!
//! Invariant: nothing here writes to stdout (stdout is data).

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// A finished step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepTime {
    pub name: String,
    pub seconds: f64,
}

/// Step reporter for one role.
pub struct Steps {
    role: String,
    quiet: bool,
    done: Mutex<Vec<StepTime>>,
}

impl Steps {
    pub fn new(role: &str, quiet: bool) -> Steps {
        Steps {
            role: role.to_string(),
            quiet,
            done: Mutex::new(Vec::new()),
        }
    }

    pub fn say(&self, msg: &str) {
        if !self.quiet {
            eprintln!("[{}] {msg}", self.role);
        }
    }

    /// Run `f` as step `name`; `detail` is shown at the start.
    pub fn run<T, E>(
        &self,
        name: &str,
        detail: &str,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        if !self.quiet {
            if detail.is_empty() {
                eprintln!("[{}] {name} …", self.role);
            } else {
                eprintln!("[{}] {name}: {detail} …", self.role);
            }
        }
        let t = Instant::now();
        let r = f();
        let secs = t.elapsed().as_secs_f64();
        if !self.quiet {
            let how = if r.is_ok() { "done" } else { "FAILED" };
            eprintln!("[{}] {name} {how} in {secs:.1} s", self.role);
        }
        self.done
            .lock()
            .expect("steps lock poisoned")
            .push(StepTime {
                name: name.to_string(),
                seconds: (secs * 10.0).round() / 10.0,
            });
        r
    }

    pub fn times(&self) -> Vec<StepTime> {
        self.done.lock().expect("steps lock poisoned").clone()
    }
}

/// A byte-counting progress bar on stderr (hidden when quiet or not a terminal).
pub fn bytes_bar(label: &str, total: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "    {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}
