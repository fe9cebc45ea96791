//! Rollouts and rollbacks under a steady load through the VIP, and a rollout
//! whose new webapp fails its health gate: no request may fail, and the
//! report names the rollout step each failure happened in.

use super::*;

/// One request of a steady load: when, from which source, what came back.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    /// `None`: no HTTP answer (refused, reset, timed out).
    status: Option<u16>,
    version: Option<String>,
    /// How long the answer took.
    ms: f64,
    /// Why there was no answer (the I/O error), or the lb that answered.
    detail: String,
}

/// A steady, bounded load through the VIP: `rate_per_s` requests a second,
/// spread over `sources` (each its own /24, so neither the rate limit nor
/// `ip_hash` sees one hot client), until stopped or `max` has passed.
struct Steady {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<Sample>>>,
}

impl Steady {
    fn start(tb: &dyn Testbed, sources: Vec<Ipv4Addr>, rate_per_s: f64, max: Duration) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let mut spec = spec_from(tb, vip(tb), "/api/health", sources[0]);
        // A user waits longer than nginx's 2 s connect timeout to a member that
        // just went away (it then tries the next one); slow answers are
        // reported as `slowest_ms`, not counted as lost.
        spec.timeout = Duration::from_secs(10);
        let st = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(ns) = &spec.netns {
                if netns::enter(ns).is_err() {
                    return out;
                }
            }
            let t0 = Instant::now();
            let every = Duration::from_secs_f64(1.0 / rate_per_s.max(0.1));
            let mut i = 0usize;
            while !st.load(Ordering::SeqCst) && t0.elapsed() < max {
                let due = t0 + every * i as u32;
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w); // pacing, not synchronisation
                }
                spec.source = Some(sources[i % sources.len()].into());
                let at = Instant::now();
                let r = http_probe::get(&spec.request());
                let detail = match &r {
                    Ok(r) => r.served_by.clone().unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                let r = r.ok();
                let version = r.as_ref().and_then(|r| {
                    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
                    v.get("version")?.as_str().map(str::to_string)
                });
                out.push(Sample {
                    at,
                    status: r.map(|r| r.status),
                    version,
                    ms: at.elapsed().as_secs_f64() * 1000.0,
                    detail,
                });
                i += 1;
            }
            out
        });
        Steady {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// A user sees a failure: no answer, or a 5xx.
fn failed(s: &Sample) -> bool {
    s.status.is_none_or(|c| c >= 500)
}

/// The scenario's first four client addresses, each in its own /24 (5
/// requests/s each at 20/s).
fn steady_sources(r: &Run<'_>) -> Vec<Ipv4Addr> {
    (0..4).map(|i| r.client(i)).collect()
}

/// When each step of a rollout ran, from the executor's events.
#[derive(Default)]
struct Timeline {
    /// (start, end, "slot: step")
    steps: Vec<(Instant, Instant, String)>,
}

impl Timeline {
    /// What the rollout was doing at `t`: the step running then, or the last one before.
    fn at(&self, t: Instant) -> String {
        if let Some((_, _, what)) = self.steps.iter().find(|(a, b, _)| *a <= t && t <= *b) {
            return format!("during {what}");
        }
        match self.steps.iter().rev().find(|(_, b, _)| *b < t) {
            Some((_, b, what)) => {
                format!("{:.1}s after {what}", t.duration_since(*b).as_secs_f64())
            }
            None => "before the first step".into(),
        }
    }
}

/// A failed request as the report names it: what, when, how long, why, and
/// the rollout step then; the lb that answered the request before it.
fn describe_failure(samples: &[Sample], i: usize, settle: Instant, tl: &Timeline) -> String {
    let f = &samples[i];
    let t = f.at.duration_since(settle).as_secs_f64();
    let what = match f.status {
        Some(c) => format!("{c}"),
        None => format!("no answer ({})", f.detail),
    };
    let before = samples[..i]
        .iter()
        .rev()
        .find(|s| !failed(s))
        .map(|s| s.detail.as_str())
        .filter(|d| !d.is_empty())
        .map(|d| format!(", previous answer from {d}"))
        .unwrap_or_default();
    format!(
        "{what} at +{t:.1}s after {:.0}ms, {}{before}",
        f.ms,
        tl.at(f.at)
    )
}

/// Run `f` (a rollout or rollback) under the steady load; figures for both.
fn under_load(
    r: &Run<'_>,
    o: &mut ScenarioReport,
    f: impl FnOnce(&mut dyn crate::rollout::Observer) -> anyhow::Result<crate::rollout::Report>,
) -> anyhow::Result<(crate::rollout::Report, Vec<Sample>)> {
    let tb = r.tb;
    const RATE: f64 = 20.0;
    let load_started = Instant::now();
    let load = Steady::start(tb, steady_sources(r), RATE, Duration::from_secs(1800));
    // Let the load settle before the first change.
    let settle = Instant::now();
    std::thread::sleep(Duration::from_secs(2)); // load warm-up, not synchronisation
    let mut tl = Timeline::default();
    let mut record = |e: &crate::rollout::Event<'_>| {
        if let crate::rollout::Event::StepDone {
            slot,
            step,
            seconds,
            ..
        } = e
        {
            let end = Instant::now();
            let start = end
                .checked_sub(Duration::from_secs_f64(*seconds))
                .unwrap_or(end);
            tl.steps.push((start, end, format!("{slot}: {step}")));
        }
        std::ops::ControlFlow::Continue(())
    };
    let result = f(&mut record);
    std::thread::sleep(Duration::from_secs(2)); // trailing load after the last swap
    let samples = load.finish();
    let load_s = load_started.elapsed().as_secs_f64();
    let report = result?;
    let failed_at: Vec<usize> = (0..samples.len())
        .filter(|i| failed(&samples[*i]))
        .collect();
    let fails: Vec<&Sample> = failed_at.iter().map(|i| &samples[*i]).collect();
    crate::golden::criteria::expect_load(o, samples.len(), fails.len(), RATE, load_s);
    let slowest = samples.iter().map(|s| s.ms).fold(0.0, f64::max);
    let what: Vec<String> = failed_at
        .iter()
        .take(5)
        .map(|i| describe_failure(&samples, *i, settle, &tl))
        .collect();
    if !what.is_empty() {
        o.figure("failures", what.join("; "));
    }
    o.figure("sent", samples.len())
        .figure("failed", fails.len())
        .figure("slowest_ms", slowest)
        .figure(
            "limited_429",
            samples.iter().filter(|s| s.status == Some(429)).count(),
        );
    let secs = samples
        .last()
        .map(|l| l.at.duration_since(settle).as_secs_f64())
        .unwrap_or(0.0);
    o.figure(
        "load_rate_per_s",
        if secs > 0.0 {
            samples.len() as f64 / secs
        } else {
            0.0
        },
    );
    let seen: std::collections::BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| s.version.as_deref())
        .collect();
    o.figure(
        "versions_seen",
        seen.into_iter().collect::<Vec<_>>().join(","),
    );
    o.figure("total_s", report.seconds);
    for s in &report.slots {
        o.figure(&format!("{}_s", s.slot), s.seconds);
        if let Some(d) = s.down_s {
            o.figure(&format!("{}_down_s", s.slot), d);
        }
    }
    o.expect(
        fails.is_empty(),
        format!(
            "{} of {} requests failed, first at +{:.1}s",
            fails.len(),
            samples.len(),
            fails
                .first()
                .map(|f| f.at.duration_since(settle).as_secs_f64())
                .unwrap_or(0.0)
        ),
    );
    Ok((report, samples))
}

/// The versions `/api/health` reports through the VIP, from the scenario's
/// clients 4 to 11 (each its own /24).
fn served_versions(r: &Run<'_>) -> std::collections::BTreeSet<String> {
    let tb = r.tb;
    (4..12)
        .filter_map(|i| {
            let r = probe(
                tb,
                vip(tb),
                "/api/health",
                r.client(i),
                Duration::from_secs(3),
            )
            .ok()?;
            let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
            v.get("version")?.as_str().map(str::to_string)
        })
        .collect()
}

pub(super) fn rollout(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let Some(dir) = tb.rollout_templates(NextBuild::Good) else {
        return Ok(r.skip("the testbed has no second build to roll out to"));
    };
    let mut o = r.report();
    let (report, _) = under_load(r, &mut o, |obs| tb.rollout(&dir, obs))?;
    let want: std::collections::BTreeSet<String> = report
        .slots
        .iter()
        .filter(|s| s.role == Role::Webapp)
        .map(|s| s.to.version.clone())
        .collect();
    o.figure("slots", report.slots.len());
    o.expect(
        report.ok(),
        format!(
            "the rollout stopped: {}",
            report.stopped.as_deref().unwrap_or("?")
        ),
    );
    o.expect(
        !report.slots.is_empty(),
        "nothing was rolled out (same build as running?)",
    );
    expect_served(r, &mut o, &want);
    Ok(o)
}

/// The webapp versions seen through the VIP after a rollout or rollback must be `want`.
fn expect_served(r: &Run<'_>, o: &mut ScenarioReport, want: &std::collections::BTreeSet<String>) {
    let served = served_versions(r);
    o.figure(
        "served_versions",
        served.iter().cloned().collect::<Vec<_>>().join(","),
    );
    o.expect(
        want.is_empty() || served == *want,
        format!("through the VIP the webapps report {served:?}, expected {want:?}"),
    );
}

pub(super) fn rollback(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    if tb.rollout_templates(NextBuild::Good).is_none() {
        return Ok(r.skip("no rollout to undo (the testbed has no second build)"));
    }
    let mut o = r.report();
    let (report, _) = under_load(r, &mut o, |obs| tb.rollback(obs))?;
    o.figure("slots", report.slots.len());
    o.expect(
        !report.slots.is_empty(),
        "nothing to roll back: run the rollout scenario first",
    );
    o.expect(
        report.ok(),
        format!(
            "the rollback stopped: {}",
            report.stopped.as_deref().unwrap_or("?")
        ),
    );
    let want: std::collections::BTreeSet<String> = report
        .slots
        .iter()
        .filter(|s| s.role == Role::Webapp)
        .map(|s| s.to.version.clone())
        .collect();
    expect_served(r, &mut o, &want);
    Ok(o)
}

pub(super) fn rollout_bad_green(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let Some(dir) = tb.rollout_templates(NextBuild::BadGreen) else {
        return Ok(r.skip("the testbed has no failing build to roll out to"));
    };
    let mut o = r.report();
    let before = served_versions(r);
    let (report, _) = under_load(r, &mut o, |obs| tb.rollout_bad_green(&dir, obs))?;
    use crate::rollout::executor::SlotOutcome;
    let failed_slot = report
        .slots
        .iter()
        .find(|s| !s.ok() && s.outcome != SlotOutcome::NotStarted);
    match failed_slot {
        Some(s) => {
            o.figure("failed_slot", s.slot.as_str());
            o.figure("restore_s", s.seconds);
            let restored = matches!(s.outcome, SlotOutcome::GateFailed { restored: true, .. });
            o.expect(
                restored,
                format!(
                    "{}: expected a failed gate and a restore, got {:?}",
                    s.slot, s.outcome
                ),
            );
            if let Some(a) = &s.after_restore {
                o.figure("after_restore", a.as_str());
            }
        }
        None => {
            o.fail("the bad build passed every health gate");
        }
    }
    o.expect(
        !report.ok(),
        "the rollout reported success with a failing build",
    );
    let after = served_versions(r);
    o.figure(
        "served_versions",
        after.iter().cloned().collect::<Vec<_>>().join(","),
    );
    o.expect(
        after == before,
        format!("served versions changed from {before:?} to {after:?}"),
    );
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_no_answer_or_5xx() {
        let s = |status| Sample {
            at: Instant::now(),
            status,
            version: None,
            ms: 1.0,
            detail: String::new(),
        };
        assert!(failed(&s(None)) && failed(&s(Some(502))));
        assert!(!failed(&s(Some(200))) && !failed(&s(Some(429))));
    }
}
