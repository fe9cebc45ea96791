//! The VIP under planned moves and under CPU load (issue 16): the goals are
//! that a move haimg or an operator causes loses nothing, and that a fast
//! advert interval causes no transition nobody asked for.

use super::failover::wait_vip_on;
use super::*;
use crate::golden::{criteria, keepalive};
use crate::probe::vrrp;

/// Graceful stops of the master and take-backs: 10 of each.
const MOVES: usize = 20;
/// The load during the moves, spread over the scenario's 20 client /24s
/// (5 r/s each, under the seed's 10 r/s per client).
const RATE_PER_S: f64 = 100.0;
/// How long the stability scenario keeps the CPU saturated.
const BUSY_FOR: Duration = Duration::from_secs(60);

/// The lb that holds the VIP when all are healthy.
pub(super) fn master_of(c: &Cluster) -> anyhow::Result<haimg_model::Member> {
    c.member_by_slot(&c.lb.keepalived.master)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no master slot"))
}

/// Wait until the master holds the VIP, as a scenario that moves it needs
/// before it starts.
pub(super) fn wait_vip_on_master(
    tb: &dyn Testbed,
    master: &haimg_model::Member,
    source: Ipv4Addr,
) -> anyhow::Result<()> {
    wait_vip_on(tb, &master.slot, source, Duration::from_secs(20))
        .map(drop)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the VIP is not on the master {} before the test",
                master.slot
            )
        })
}

/// The master, and the lb that takes the VIP when it goes (the highest
/// priority after it).
fn master_and_next(c: &Cluster) -> anyhow::Result<(haimg_model::Member, haimg_model::Member)> {
    let k = &c.lb.keepalived;
    let master = master_of(c)?;
    let next =
        c.lb.members
            .iter()
            .filter(|m| m.slot != master.slot)
            .max_by_key(|m| k.priorities.get(m.index).copied().unwrap_or(0))
            .ok_or_else(|| anyhow::anyhow!("no lb besides the master {}", master.slot))?
            .clone();
    Ok((master, next))
}

/// Fail the scenario for every lb whose init turned the lossless moves off
/// (its status.json carries the warning `crate::vip` in the init writes).
fn expect_lossless_on(tb: &dyn Testbed, o: &mut ScenarioReport) -> anyhow::Result<()> {
    for m in &tb.cluster().lb.members {
        let status = tb.exec(&m.slot, &["cat", "/run/haimg/status.json"])?;
        let v: serde_json::Value = serde_json::from_str(&status)
            .map_err(|e| anyhow::anyhow!("{}: status.json is not JSON: {e}", m.slot))?;
        let off = v["warnings"].as_array().and_then(|w| {
            w.iter()
                .filter_map(|x| x.as_str())
                .find(|x| x.starts_with("lossless VIP moves are off"))
                .map(str::to_string)
        });
        if let Some(w) = off {
            o.fail(format!("{}: {w}", m.slot));
        }
    }
    Ok(())
}

/// A load of [`RATE_PER_S`] spread over `clients` of the scenario's /24s,
/// waiting like a user (10 s), at most `max`, ended by its `stop` flag
/// ([`under_load`] sets it).
pub(super) fn spread_load(r: &Run<'_>, clients: u8, max: Duration) -> LoadSpec {
    let tb = r.tb;
    // Through the webapps when they are deployed (the rate limit applies),
    // else the lbs' own page.
    let path = if tb.has_role(Role::Webapp) {
        Role::Webapp.health_path().unwrap_or("/")
    } else {
        "/haimg/lb-health"
    };
    let mut s = spec_from(tb, vip(tb), path, r.client(0));
    s.spread = (0..clients).map(|i| r.client(i).into()).collect();
    s.rate_per_s = Some(RATE_PER_S);
    s.total = (RATE_PER_S * max.as_secs_f64()) as usize;
    s.concurrency = 16;
    s.timeout = Duration::from_secs(10);
    s.deadline = max;
    s.stop = Some(Arc::new(AtomicBool::new(false)));
    s
}

/// Run `f` under the load `spec`: the load starts `lead` before `f`, and is
/// stopped (its `stop` flag) `tail` after `f` returned, also when `f` failed,
/// so what was in flight at the end is counted.
pub(super) fn under_load<T>(
    spec: &LoadSpec,
    lead: Duration,
    tail: Duration,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, load::LoadResult)> {
    let stop = spec
        .stop
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a load to run under has no stop flag"))?;
    std::thread::scope(|sc| {
        let load = sc.spawn(|| load::run(spec, false));
        std::thread::sleep(lead); // a steady load first
        let out = f();
        std::thread::sleep(tail); // what was in flight at the end
        stop.store(true, Ordering::SeqCst);
        let res = load
            .join()
            .map_err(|_| anyhow::anyhow!("load panicked"))??;
        Ok((out?, res))
    })
}

/// Record a load's outcome: it ran at its pace, nothing failed, nothing was reset,
/// and every answer was a 200.
pub(super) fn expect_lossless(o: &mut ScenarioReport, what: &str, res: &load::LoadResult) {
    criteria::expect_load(o, res.sent, res.failed, RATE_PER_S, res.elapsed_s);
    let not_200 = res.sent - res.failed - res.count(200);
    o.figure(&format!("{what}_sent"), res.sent)
        .figure(&format!("{what}_failed"), res.failed)
        .figure(&format!("{what}_resets"), res.resets)
        .figure(&format!("{what}_non_200"), not_200)
        .figure(&format!("{what}_p99_ms"), res.p99_ms);
    o.expect(
        res.failed == 0,
        format!(
            "{what}: {} of {} requests failed ({} resets): {:?}",
            res.failed, res.sent, res.resets, res.failure_samples
        ),
    );
    o.expect(
        not_200 == 0,
        format!("{what}: {not_200} answers were not 200: {:?}", res.statuses),
    );
}

pub(super) fn vip_planned_moves(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let c = tb.cluster();
    let (master, next) = master_and_next(c)?;
    let src = r.client(0);
    wait_vip_on_master(tb, &master, src)?;
    expect_lossless_on(tb, &mut o)?;
    let spec = spread_load(r, 20, Duration::from_secs(240));
    // Besides, browsers' way: 4 clients, each a request every 50 ms on one
    // kept-alive connection, to the lbs' own page; ended with the load.
    let kept = keepalive::KeepAliveSpec {
        target: vip(tb),
        path: "/haimg/lb-health".into(),
        sources: (0..4).map(|i| r.client(i).into()).collect(),
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(10),
        deadline: Duration::from_secs(240),
        stop: spec.stop.clone().unwrap_or_default(),
        netns: tb.client_netns(),
    };
    let mut moves = 0usize;
    let mut slowest_takeback = 0.0f64;
    let (moved, k) = std::thread::scope(|sc| -> anyhow::Result<_> {
        let kept_load = sc.spawn(|| keepalive::run(&kept));
        let moved = under_load(
            &spec,
            Duration::from_secs(2),
            Duration::from_secs(2),
            || {
                let made = make_moves(tb, &master, &next, src, &mut moves, &mut slowest_takeback);
                if made.is_err() {
                    // Leave the cluster as found: the master may be the one stopped.
                    let _ = tb.start(&master.slot);
                }
                made
            },
        );
        // under_load has set the stop flag the keep-alive clients share.
        let kept = kept_load
            .join()
            .map_err(|_| anyhow::anyhow!("keep-alive clients panicked"))??;
        Ok((moved, kept))
    })?;
    let ((), result) = moved?;
    o.figure("moves", moves)
        .figure("slowest_takeback_s", slowest_takeback);
    expect_lossless(&mut o, "moves", &result);
    o.figure("keepalive_requests", k.requests)
        .figure("keepalive_failed", k.failed)
        .figure("keepalive_retried", k.retried)
        .figure("keepalive_reopened", k.reopened)
        .figure("keepalive_on_reused", k.on_reused);
    // Clients that reused no connection tested nothing of keep-alive.
    o.expect(
        k.on_reused * 2 >= k.answered,
        format!(
            "keep-alive: only {} of {} answers came on a reused connection",
            k.on_reused, k.answered
        ),
    );
    o.expect(
        k.failed == 0,
        format!(
            "keep-alive: {} of {} requests failed: {:?}",
            k.failed, k.requests, k.failure_samples
        ),
    );
    o.expect(moves == MOVES, format!("{moves} of {MOVES} moves made"));
    Ok(o)
}

/// [`MOVES`] planned moves: a graceful stop of the master, then its take-back,
/// counting each in `moves`.
fn make_moves(
    tb: &dyn Testbed,
    master: &haimg_model::Member,
    next: &haimg_model::Member,
    src: Ipv4Addr,
    moves: &mut usize,
    slowest_takeback: &mut f64,
) -> anyhow::Result<()> {
    while *moves < MOVES {
        // A graceful stop: keepalived leaves (priority 0), nginx serves on
        // until the next lb holds the VIP, then finishes.
        tb.halt(&master.slot, Duration::from_secs(10))?;
        wait_vip_on(tb, &next.slot, src, Duration::from_secs(10)).ok_or_else(|| {
            anyhow::anyhow!("move {}: the VIP did not go to {}", *moves + 1, next.slot)
        })?;
        *moves += 1;
        // The take-back: the master starts and preempts.
        let t = Instant::now();
        tb.start(&master.slot)?;
        wait_vip_on(tb, &master.slot, src, Duration::from_secs(30)).ok_or_else(|| {
            anyhow::anyhow!(
                "move {}: {} did not take the VIP back",
                *moves + 1,
                master.slot
            )
        })?;
        *slowest_takeback = slowest_takeback.max(t.elapsed().as_secs_f64());
        *moves += 1;
    }
    Ok(())
}

pub(super) fn vip_stability(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let c = tb.cluster();
    let Some(bridge) = tb.bridge() else {
        return Ok(r.skip("no bridge on this host to watch VRRP on"));
    };
    let master = master_of(c)?;
    let (hard_goal, _) = criteria::vip_goals(c).map_err(anyhow::Error::msg)?;
    wait_vip_on_master(tb, &master, r.client(0))?;
    let k = &c.lb.keepalived;
    let watch = vrrp::Watch::start(&bridge, k.virtual_router_id, BUSY_FOR * 2)?;
    // A busy loop per core, in this process, bounded by BUSY_FOR.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..cores {
            sc.spawn(|| {
                let mut x = 0u64;
                while t0.elapsed() < BUSY_FOR {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                }
                x
            });
        }
    });
    let seen = watch.finish()?;
    let s = vrrp::summarize(&seen, master.ip);
    let interval_s = f64::from(k.advert_interval_ms) / 1000.0;
    let expected = BUSY_FOR.as_secs_f64() / interval_s;
    o.figure("busy_threads", cores)
        .figure("busy_s", BUSY_FOR.as_secs_f64())
        .figure("advert_interval_s", interval_s)
        .figure("master_down_s", hard_goal.as_secs_f64())
        .figure("adverts_from_master", s.from_master)
        .figure("adverts_from_others", s.from_others)
        .figure("spurious_transitions", s.takeovers)
        .figure("max_master_gap_s", s.max_gap_s);
    // The master advertises to each of its peers once per interval; a
    // capture that saw fewer than 90 % of one peer's share saw too little to
    // count transitions with.
    o.expect(
        (s.from_master as f64) >= 0.9 * expected,
        format!(
            "the capture saw {} adverts from the master {} in {:.0} s, expected at least {:.0}",
            s.from_master,
            master.slot,
            BUSY_FOR.as_secs_f64(),
            0.9 * expected
        ),
    );
    o.expect(
        s.takeovers == 0,
        format!(
            "{} spurious VRRP transition(s) with the CPU saturated ({} adverts from lbs other than {}; longest silence of the master {:.3} s, master-down {:.3} s)",
            s.takeovers,
            s.from_others,
            master.slot,
            s.max_gap_s,
            hard_goal.as_secs_f64()
        ),
    );
    Ok(o)
}
