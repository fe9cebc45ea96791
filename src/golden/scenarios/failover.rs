//! Losing members: the VIP moving on a hard and a graceful stop of the
//! master, a webapp killed under load, the app crashing inside its
//! container, and every member stopping cleanly on the halt signal.

use super::*;
use crate::golden::criteria;

/// When a probe was sent, and which lb answered it (`None`: no 200 answer).
type Samples = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

/// A probe of the VIP waits this long for an answer (an lb answers its own
/// page in a few ms; nobody answers while nobody holds the VIP)...
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);
/// ...and the next one starts this much later.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// The client /24s the user-like load of `vip-failover` spreads over.
const LOAD_CLIENTS: u8 = 10;

/// Samples of the VIP taken every [`PROBE_INTERVAL`] by a background prober.
struct Prober {
    stop: Arc<AtomicBool>,
    samples: Samples,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(tb: &dyn Testbed, source: Ipv4Addr, max: Duration) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        // The lb's own page: it answers from nginx itself (no webapp, no
        // rate limit), so a probe measures the VIP and nothing else.
        let mut spec = spec_from(tb, vip(tb), "/haimg/lb-health", source);
        spec.timeout = PROBE_TIMEOUT;
        let (st, sa) = (stop.clone(), samples.clone());
        let handle = std::thread::spawn(move || {
            if let Some(ns) = &spec.netns {
                if netns::enter(ns).is_err() {
                    return;
                }
            }
            let end = Instant::now() + max;
            while !st.load(Ordering::SeqCst) && Instant::now() < end {
                let t = Instant::now();
                let who = http_probe::get(&spec.request())
                    .ok()
                    .filter(|r| r.status == 200)
                    .map(|r| r.served_by.unwrap_or_default());
                if let Ok(mut g) = sa.lock() {
                    g.push((t, who));
                }
                std::thread::sleep(PROBE_INTERVAL); // probe interval
            }
        });
        Prober {
            stop,
            samples,
            handle: Some(handle),
        }
    }

    /// First time at or after `since` that an lb other than `not` answered.
    fn first_answer_not_from(&self, since: Instant, not: &str) -> Option<Instant> {
        let g = self.samples.lock().ok()?;
        g.iter()
            .find(|(t, who)| *t >= since && who.as_deref().is_some_and(|w| w != not))
            .map(|(t, _)| *t)
    }

    /// Probes sent at or after `since`, and how many of them got no 200.
    fn counts_since(&self, since: Instant) -> (usize, usize) {
        self.samples
            .lock()
            .map(|g| {
                let s: Vec<_> = g.iter().filter(|(t, _)| *t >= since).collect();
                (s.len(), s.iter().filter(|(_, w)| w.is_none()).count())
            })
            .unwrap_or((0, 0))
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Wait until the VIP is answered by the lb in `slot` (its own page, so
/// also on a cluster of lbs only).
pub(super) fn wait_vip_on(
    tb: &dyn Testbed,
    slot: &str,
    source: Ipv4Addr,
    deadline: Duration,
) -> Option<Duration> {
    let t0 = Instant::now();
    wait_for(deadline, Duration::from_millis(100), || {
        let r = probe(
            tb,
            vip(tb),
            "/haimg/lb-health",
            source,
            Duration::from_millis(500),
        )
        .ok()?;
        (r.served_by.as_deref() == Some(slot)).then(|| t0.elapsed())
    })
}

pub(super) fn vip_failover(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let c = tb.cluster();
    let master = super::vip::master_of(c)?;
    let (hard_goal, graceful_goal) = criteria::vip_goals(c).map_err(anyhow::Error::msg)?;
    let src = r.client(0);
    super::vip::wait_vip_on_master(tb, &master, src)?;

    // Hard stop: the master's container is killed; the VIP moves after master-down (~3 x advert).
    // Besides the prober, a user-like load (100 r/s from the scenario's
    // clients, 10 s timeout) counts the requests each move costs.
    let spec = super::vip::spread_load(r, LOAD_CLIENTS, Duration::from_secs(60));
    let prober = Prober::start(tb, src, Duration::from_secs(60));
    let ((moved, t_kill), hard_load) = super::vip::under_load(
        &spec,
        Duration::from_secs(1),
        Duration::from_secs(2),
        || {
            let t_kill = Instant::now();
            tb.kill(&master.slot)?;
            let moved = wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
                prober.first_answer_not_from(t_kill, &master.slot)
            });
            Ok((moved, t_kill))
        },
    )?;
    let (_, hard_fail) = prober.counts_since(t_kill);
    prober.finish();
    // An unplanned failover: what it costs is reported, not gated.
    o.figure("hard_requests_sent", hard_load.sent)
        .figure("hard_requests_failed", hard_load.failed)
        .figure("hard_requests_resets", hard_load.resets);
    let hard = moved.map(|t| t.duration_since(t_kill).as_secs_f64());
    // The goals follow the spec (`criteria::vip_goals`); a move is seen up
    // to one probe (timeout + interval) after it happened.
    let step = PROBE_TIMEOUT + PROBE_INTERVAL;
    o.figure("hard_s", hard.unwrap_or(f64::NAN))
        .figure("hard_goal_s", hard_goal.as_secs_f64())
        .figure("probe_step_s", step.as_secs_f64())
        .figure("hard_failed_probes", hard_fail);
    if let Err(e) = criteria::vip_moved_in_time("hard stop", hard, hard_goal, step) {
        o.fail(e);
    }

    // Take-back: the master starts again and preempts (highest priority).
    let t_start = Instant::now();
    tb.start(&master.slot)?;
    let back = wait_vip_on(tb, &master.slot, src, Duration::from_secs(30));
    o.figure(
        "takeback_s",
        back.map(|_| t_start.elapsed().as_secs_f64())
            .unwrap_or(f64::NAN),
    );
    o.expect(
        back.is_some(),
        "the master did not take the VIP back within 30 s",
    );

    // Graceful stop: keepalived leaves first and sends priority 0; the VIP moves at once.
    let spec = super::vip::spread_load(r, LOAD_CLIENTS, Duration::from_secs(60));
    let prober = Prober::start(tb, src, Duration::from_secs(60));
    let (t_halt, graceful_load) = super::vip::under_load(
        &spec,
        Duration::from_secs(1),
        Duration::from_secs(1),
        || {
            let t_halt = Instant::now();
            std::thread::scope(|sc| -> anyhow::Result<()> {
                let halt = sc.spawn(|| tb.halt(&master.slot, Duration::from_secs(10)));
                let moved = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
                    prober.first_answer_not_from(t_halt, &master.slot)
                });
                let grace = moved.map(|t| t.duration_since(t_halt).as_secs_f64());
                o.figure("graceful_s", grace.unwrap_or(f64::NAN))
                    .figure("graceful_goal_s", graceful_goal.as_secs_f64());
                if let Err(e) =
                    criteria::vip_moved_in_time("graceful stop", grace, graceful_goal, step)
                {
                    o.fail(e);
                }
                halt.join().map_err(|_| anyhow::anyhow!("halt panicked"))?
            })?;
            Ok(t_halt)
        },
    )?;
    let (_, failed) = prober.counts_since(t_halt);
    o.figure("graceful_failed_probes", failed);
    prober.finish();
    // A planned move: nothing may fail (issue 16).
    super::vip::expect_lossless(&mut o, "graceful_requests", &graceful_load);
    tb.start(&master.slot)?;
    let back = wait_vip_on(tb, &master.slot, src, Duration::from_secs(30));
    o.expect(
        back.is_some(),
        "the master did not take the VIP back after the graceful test",
    );
    Ok(o)
}

pub(super) fn webapp_loss(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let src = r.client(0);
    let r = probe(tb, vip(tb), "/api/health", src, Duration::from_secs(5))?;
    let victim = health_slot(&r.body).ok_or_else(|| anyhow::anyhow!("/api/health has no slot"))?;
    let mut s = spec_from(tb, vip(tb), "/api/health", src);
    s.total = 300;
    s.concurrency = 8;
    s.rate_per_s = Some(20.0);
    s.timeout = Duration::from_secs(10);
    s.deadline = Duration::from_secs(40);
    let result = std::thread::scope(|sc| -> anyhow::Result<load::LoadResult> {
        let load = sc.spawn(|| load::run(&s, false));
        std::thread::sleep(Duration::from_secs(3)); // let steady load establish before the kill
        tb.kill(&victim)?;
        load.join()
            .map_err(|_| anyhow::anyhow!("load panicked"))?
            .map_err(Into::into)
    })?;
    o.figure("killed", victim.as_str())
        .figure("sent", result.sent)
        .figure("failed", result.failed);
    // A user sees anything but a 200 as a failure here.
    let not_ok = result.sent - result.count(200);
    criteria::expect_load(&mut o, result.sent, not_ok, 20.0, 300.0 / 20.0);
    o.figure("non_200", result.sent - result.failed - result.count(200))
        .figure("p99_ms", result.p99_ms);
    o.expect(
        result.failed == 0,
        format!(
            "{} requests failed: {:?}",
            result.failed, result.failure_samples
        ),
    );
    o.expect(
        result.count(200) + result.failed == result.sent,
        "some answers were not 200",
    );
    tb.start(&victim)?;
    // Leave the cluster as found: the next scenarios expect every webapp up.
    let m = tb
        .cluster()
        .member_by_slot(&victim)
        .ok_or_else(|| anyhow::anyhow!("no member {victim}"))?
        .clone();
    let back = wait_healthy(tb, &m, Duration::from_secs(30));
    o.expect(
        back.is_some(),
        format!("{victim} did not come back within 30 s"),
    );
    Ok(o)
}

/// Wait until a webapp member answers `/api/health` with 200 (from the admin address).
fn wait_healthy(tb: &dyn Testbed, m: &haimg_model::Member, deadline: Duration) -> Option<Duration> {
    let target = SocketAddr::new(m.ip.into(), tb.cluster().webapp.port);
    let t0 = Instant::now();
    wait_for(deadline, Duration::from_millis(100), || {
        let r = probe(
            tb,
            target,
            "/api/health",
            tb.admin_source(),
            Duration::from_millis(500),
        )
        .ok()?;
        (r.status == 200).then(|| t0.elapsed())
    })
}

/// The pid of the Next.js server inside a webapp (PM2's child), found through /proc.
/// The Next.js server sets its process title to `next-server (vX)`; the
/// script's own shell (whose command line contains the pattern) is skipped.
const FIND_APP_PID: &str = "for d in /proc/[0-9]*; do p=${d#/proc/}; [ \"$p\" = $$ ] && continue; \
    c=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null); \
    case \"$c\" in next-server*) echo $p; exit 0;; esac; done; exit 1";

pub(super) fn app_crash(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let m = tb
        .cluster()
        .webapp
        .members
        .first()
        .ok_or_else(|| anyhow::anyhow!("no webapp"))?
        .clone();
    wait_healthy(tb, &m, Duration::from_secs(30))
        .ok_or_else(|| anyhow::anyhow!("{} is not healthy before the test", m.slot))?;
    let pid = tb
        .exec(&m.slot, &["sh", "-c", FIND_APP_PID])?
        .trim()
        .to_string();
    anyhow::ensure!(!pid.is_empty(), "no app process found in {}", m.slot);
    let target = SocketAddr::new(m.ip.into(), tb.cluster().webapp.port);
    let t0 = Instant::now();
    tb.exec(&m.slot, &["sh", "-c", &format!("kill -9 {pid}")])?; // no procps in the image: the shell's kill
    let healthy = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        let r = probe(
            tb,
            target,
            "/api/health",
            tb.admin_source(),
            Duration::from_millis(500),
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        (r.status == 200 && v.get("pid")?.as_u64()?.to_string() != pid).then(|| t0.elapsed())
    });
    o.figure("slot", m.slot.as_str()).figure("killed_pid", pid);
    o.figure(
        "restart_s",
        healthy.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN),
    );
    o.expect(
        healthy.is_some(),
        "PM2 did not bring the app back within 20 s",
    );
    Ok(o)
}

/// Zombie processes inside a member.
const COUNT_ZOMBIES: &str = "n=0; for s in /proc/[0-9]*/stat; do case \"$(cut -d' ' -f3 $s 2>/dev/null)\" in Z) n=$((n+1));; esac; done; echo $n";

pub(super) fn shutdown(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let c = tb.cluster();
    let mut worst = 0.0f64;
    let mut zombies = 0usize;
    for m in c.members().filter(|m| tb.has_role(m.role)) {
        let out = tb.exec(&m.slot, &["sh", "-c", COUNT_ZOMBIES])?;
        match out.trim().parse::<usize>() {
            Ok(n) => zombies += n,
            Err(_) => {
                o.fail(format!(
                    "{}: the zombie count {:?} is not a number",
                    m.slot,
                    out.trim()
                ));
            }
        }
        let t0 = Instant::now();
        let r = tb.halt(&m.slot, Duration::from_secs(10));
        let secs = t0.elapsed().as_secs_f64();
        o.figure(&format!("{}_s", m.slot), secs);
        worst = worst.max(secs);
        if let Err(e) = r {
            o.fail(format!("{} did not stop on the halt signal: {e:#}", m.slot));
        }
    }
    o.figure("worst_s", worst).figure("zombies", zombies);
    o.expect(
        worst < 5.0,
        format!("a member took {worst:.2} s to stop (limit 5 s)"),
    );
    o.expect(
        zombies == 0,
        format!("{zombies} zombie process(es) before the halt"),
    );
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::report::Status;

    /// An unparsable zombie count fails `shutdown`, naming the member and
    /// what it printed; a count of 0 is not the failure (the fake cannot
    /// halt, which fails it afterwards for another reason).
    #[test]
    fn an_unparsable_zombie_count_fails_shutdown() {
        let c = haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster;
        let first = c.members().next().unwrap().slot.clone();
        let garbled = Fake::new(c.clone(), |_| Ok("sh: cut: not found\n".into()));
        let o = run(find("shutdown").unwrap(), &garbled);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(
            o.reason.as_deref(),
            Some(
                format!("{first}: the zombie count \"sh: cut: not found\" is not a number")
                    .as_str()
            )
        );
        let counted = Fake::new(c, |_| Ok("0\n".into()));
        let o = run(find("shutdown").unwrap(), &counted);
        assert!(
            o.reason
                .as_deref()
                .is_some_and(|r| r.contains("did not stop on the halt signal")),
            "{o:?}"
        );
    }
}
