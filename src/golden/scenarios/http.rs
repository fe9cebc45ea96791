//! What a user sees of a healthy cluster through the VIP: a page, the same
//! backend for the same client (`ip_hash`), and the rate limit.

use super::*;

pub(super) fn http(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let t0 = Instant::now();
    let r = probe(tb, vip(tb), "/", r.client(0), Duration::from_secs(5))?;
    o.figure("latency_ms", t0.elapsed().as_secs_f64() * 1000.0);
    o.figure("status", r.status as usize);
    o.expect(r.status == 200, format!("GET / answered {}", r.status));
    let text = r.body.replace("<!-- -->", "");
    let slot = tb
        .cluster()
        .webapp
        .members
        .iter()
        .find(|m| text.contains(&format!("served by {}", m.slot)));
    match slot {
        Some(m) => {
            o.figure("served_by", m.slot.as_str());
        }
        None => {
            o.fail("the page does not name a webapp slot (\"served by <slot>\")");
        }
    }
    if let Some(lb) = r.served_by {
        o.figure("lb", lb);
    }
    Ok(o)
}

pub(super) fn sticky(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let slot_from = |src: Ipv4Addr| -> anyhow::Result<String> {
        let r = probe(tb, vip(tb), "/api/health", src, Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!("GET /api/health via the VIP from {src}: {e}"))?;
        health_slot(&r.body).ok_or_else(|| anyhow::anyhow!("/api/health has no slot: {:?}", r.body))
    };
    let one = r.client(0);
    let mut slots = std::collections::BTreeSet::new();
    for _ in 0..20 {
        slots.insert(slot_from(one)?);
    }
    o.figure("requests", 20usize)
        .figure("distinct_backends", slots.len());
    o.expect(
        slots.len() == 1,
        format!("one client reached {} webapps", slots.len()),
    );
    // ip_hash keys on the first three octets: another address in the same /24 lands on the same backend.
    let o3 = one.octets();
    let neighbour = Ipv4Addr::new(o3[0], o3[1], o3[2], o3[3].wrapping_add(1).max(2));
    let same = slot_from(neighbour)? == *slots.iter().next().unwrap_or(&String::new());
    o.figure("same_24_same_backend", if same { "yes" } else { "no" });
    if tb.cluster().lb.nginx.upstream_hash == haimg_model::UpstreamHash::IpHash {
        o.expect(
            same,
            "ip_hash sent two clients of one /24 to different backends",
        );
    }
    let spread: std::collections::BTreeSet<String> =
        (1..9).filter_map(|i| slot_from(r.client(i)).ok()).collect();
    o.figure("backends_over_8_subnets", spread.len());
    Ok(o)
}

pub(super) fn rate_limit(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let rl = &tb.cluster().lb.nginx.rate_limit;
    let mut s = spec_from(tb, vip(tb), "/api/health", r.client(0));
    s.total = 300;
    s.concurrency = 300;
    s.timeout = Duration::from_secs(20);
    s.deadline = Duration::from_secs(40);
    let r = load::run(&s, false)?;
    let ok = r.count(200);
    let limited = r.count(rl.status);
    // Exactly what limit_req admits of requests arriving together
    // (`criteria::rate_limit_ok` derives it and its one tolerance).
    let (expect_min, expect_max) =
        crate::golden::criteria::rate_limit_ok(tb.cluster(), r.sent, r.send_spread_s);
    o.figure("send_spread_s", r.send_spread_s);
    o.figure("sent", r.sent)
        .figure("ok_200", ok)
        .figure(&format!("limited_{}", rl.status), limited);
    o.figure("failed", r.failed)
        .figure("elapsed_s", r.elapsed_s);
    // A 429 is the answer this scenario wants, not a failure.
    o.load(r.sent, r.failed, Some(300));
    o.figure("expected_ok", format!("{expect_min}..={expect_max}"));
    o.expect(
        r.failed == 0,
        format!("{} requests failed: {:?}", r.failed, r.failure_samples),
    );
    o.expect(
        r.sent == 300,
        format!(
            "the load did not run as planned: {} of 300 requests sent",
            r.sent
        ),
    );
    o.expect(
        (expect_min..=expect_max).contains(&ok),
        format!("{ok} x 200, expected {expect_min}..={expect_max}"),
    );
    o.expect(
        ok + limited == r.sent,
        format!(
            "{} answers were neither 200 nor {}",
            r.sent - ok - limited,
            rl.status
        ),
    );
    Ok(o)
}

/// The app's deadline for a database answer (`roles/webapp/app/lib/db.mjs`,
/// `DEADLINE_MS`), and what the request around it may add on a loaded machine.
const DB_DEADLINE: Duration = Duration::from_millis(2000);
const DB_SLACK: Duration = Duration::from_millis(500);

/// `/api/db` through the VIP: with the database unreachable (no mongo
/// deployed), a JSON 503 `database_unavailable` within the app's 2 s
/// deadline (+ 0.5 s), as the README promises — nginx passes the 503 on
/// instead of asking the next webapp for another 2 s; with mongo, a 200
/// within the same time.
pub(super) fn api_db(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let limit = DB_DEADLINE + DB_SLACK;
    let t0 = Instant::now();
    let resp = probe(tb, vip(tb), "/api/db", r.client(0), Duration::from_secs(15))?;
    let took = t0.elapsed();
    o.figure("status", resp.status as usize)
        .figure("ms", took.as_secs_f64() * 1000.0)
        .figure("limit_ms", limit.as_secs_f64() * 1000.0);
    let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap_or_default();
    if tb.has_role(Role::Mongo) {
        o.expect(
            resp.status == 200 && body["ok"] == true,
            format!("/api/db answered {} {}", resp.status, resp.body),
        );
    } else {
        o.expect(
            resp.status == 503 && body["error"] == "database_unavailable",
            format!(
                "/api/db without a database answered {} {:?}, not a JSON 503 database_unavailable",
                resp.status, resp.body
            ),
        );
    }
    o.expect(
        took <= limit,
        format!(
            "/api/db answered after {:.2} s; the promise is about 2 s ({:.1} s)",
            took.as_secs_f64(),
            limit.as_secs_f64()
        ),
    );
    Ok(o)
}
