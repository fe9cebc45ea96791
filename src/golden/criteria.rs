//! Pass criteria of the golden scenarios, derived from the spec: each is the
//! goal the scenario stands for, with only the tolerance that measuring it
//! really needs (derived here, next to the number). Pure functions, so a
//! planted regression can be shown to fail without a cluster.

use std::time::Duration;

use haimg_model::Cluster;

/// The load a scenario drove must have run as planned: `sent` within ±10 %
/// of `rate_per_s × seconds`. Without it a load thread that never entered
/// the client namespace (0 requests, so 0 failures) would pass.
pub fn load_ran(sent: usize, rate_per_s: f64, seconds: f64) -> Result<(), String> {
    let want = rate_per_s * seconds;
    let (lo, hi) = (want * 0.9, want * 1.1);
    if (sent as f64) < lo || (sent as f64) > hi {
        return Err(format!(
            "the load did not run as planned: {sent} requests sent, {want:.0} expected ({rate_per_s} r/s for {seconds:.1} s, ±10 %)"
        ));
    }
    Ok(())
}

/// How many of `sent` requests arriving at once nginx's `limit_req` serves.
///
/// nginx (`ngx_http_limit_req_module`, without `nodelay`) admits a request
/// when the zone's excess after it stays within `burst`; the excess drains
/// at `rate`. Requests arriving together: the first is served at once, the
/// next `burst` are queued (served at `rate`), the rest get `limit_req_status`.
/// While they are still arriving, the excess drains by `rate × spread`, so up
/// to `floor(rate × spread)` more are queued — `spread` is the time between
/// the first and the last request reaching nginx, which the load measures as
/// the time its workers took to start them all, plus [`ARRIVAL_SLACK`] for
/// the last one's connect and request to reach nginx. That is the only
/// tolerance: the seed (rate 10/s, burst 100) gives 101, or 102 at most
/// when the sends spread over more than 0 s.
pub fn rate_limit_ok(c: &Cluster, sent: usize, spread_s: f64) -> (usize, usize) {
    let rl = &c.lb.nginx.rate_limit;
    let first = (1 + rl.burst as usize).min(sent);
    let window = spread_s.max(0.0) + ARRIVAL_SLACK.as_secs_f64();
    let extra = (f64::from(rl.rate_per_s) * window).floor() as usize;
    (first, (first + extra).min(sent))
}

/// From a worker starting a request to nginx reading it: a connect and one
/// small write on the cluster's bridge, well under this even on a loaded
/// 2-core machine.
pub const ARRIVAL_SLACK: Duration = Duration::from_millis(100);

/// keepalived's skew (VRRPv2, `VRRP_TIMER_SKEW`): `(256 − priority) × advert / 256`.
fn skew(priority: u8, advert: Duration) -> Duration {
    advert.mul_f64(f64::from(256 - u32::from(priority)) / 256.0)
}

/// The backup that takes the VIP when the master goes: the highest priority
/// after the master's.
fn next_priority(c: &Cluster) -> Option<u8> {
    let k = &c.lb.keepalived;
    let master = c.member_by_slot(&k.master)?;
    c.lb.members
        .iter()
        .filter(|m| m.slot != master.slot)
        .filter_map(|m| k.priorities.get(m.index).copied())
        .max()
}

/// The goals of `vip-failover`, from the spec's advert interval and priorities:
/// `(hard, graceful)`.
///
/// * hard stop: keepalived's master-down interval of the backup that takes
///   over, `3 × advert_int + skew` (3.609 s for the seed: advert 1 s, backup
///   priority 100). Its timer runs from the last advert it heard, which came
///   before the kill, so the VIP moves no later than that after the kill.
/// * graceful stop: the master's keepalived leaves first and sends priority 0;
///   the backup then takes over after only its skew (0.609 s for the seed).
///   The goal is one advert interval (1 s for the seed): a planned move
///   must never take as long as one missed advert.
///
/// Measured with probes `probe_step` apart (each waits up to its timeout for
/// an answer), an answer from the new holder is seen up to one step late; the
/// scenario passes at the goal plus that step.
pub fn vip_goals(c: &Cluster) -> (Duration, Duration) {
    let advert = Duration::from_secs(u64::from(c.lb.keepalived.advert_int_s.max(1)));
    let backup = next_priority(c).unwrap_or(0);
    (advert * 3 + skew(backup, advert), advert)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(patch: impl FnOnce(String) -> String) -> Cluster {
        let text = patch(haimg_model::DEFAULT_SPEC.to_string());
        haimg_model::spec::parse_yaml(&text).unwrap().cluster
    }

    #[test]
    fn the_load_must_have_run() {
        assert!(load_ran(600, 20.0, 30.0).is_ok());
        assert!(load_ran(545, 20.0, 30.0).is_ok());
        // A load thread that never ran: 0 sent, so 0 failed — not a pass.
        let e = load_ran(0, 20.0, 30.0).unwrap_err();
        assert_eq!(e, "the load did not run as planned: 0 requests sent, 600 expected (20 r/s for 30.0 s, ±10 %)");
        assert!(load_ran(530, 20.0, 30.0).is_err());
        assert!(load_ran(700, 20.0, 30.0).is_err());
    }

    #[test]
    fn the_seed_rate_limit_serves_exactly_101_of_300_sent_together() {
        let c = spec(|s| s);
        assert_eq!(rate_limit_ok(&c, 300, 0.0), (101, 102));
        assert_eq!(rate_limit_ok(&c, 300, 0.05), (101, 102));
        // Sent over 0.35 s: the zone drained 4 more meanwhile (with the slack).
        assert_eq!(rate_limit_ok(&c, 300, 0.35), (101, 105));
    }

    /// What a regressed nginx serves of 300 sent together fails the seed's
    /// criterion: no `burst` (1 served), half the burst (51), no limit at
    /// all (300), `nodelay` with rate refill counted twice (say 105).
    #[test]
    fn a_planted_rate_limit_regression_fails() {
        let (lo, hi) = rate_limit_ok(&spec(|s| s), 300, 0.02);
        for regressed in [1, 51, 300, 105] {
            assert!(
                !(lo..=hi).contains(&regressed),
                "{regressed} in {lo}..={hi}"
            );
        }
        // And the criterion follows the spec: burst 50 expects 51.
        let (lo, hi) = rate_limit_ok(&spec(|s| s.replace("burst: 100", "burst: 50")), 300, 0.02);
        assert_eq!((lo, hi), (51, 52));
        let fast = spec(|s| s.replace("rate_per_s: 10", "rate_per_s: 1000"));
        let (lo, hi) = rate_limit_ok(&fast, 300, 0.05);
        assert_eq!((lo, hi), (101, 251), "1000 r/s drains 150 in 0.15 s");
    }

    #[test]
    fn vip_goals_follow_the_advert_interval_and_priorities() {
        let (hard, graceful) = vip_goals(&spec(|s| s));
        assert_eq!(hard.as_millis(), 3609);
        assert_eq!(graceful, Duration::from_secs(1));
        let slow = spec(|s| s.replace("advert_int_s: 1", "advert_int_s: 2"));
        let (hard, graceful) = vip_goals(&slow);
        assert_eq!(hard.as_millis(), 7218);
        assert_eq!(graceful, Duration::from_secs(2));
        // Planted: a hard move of 4.2 s (the old limit 4.5 s let it pass)
        // and a graceful one of 1.3 s fail the seed's goals.
        let (hard, graceful) = vip_goals(&spec(|s| s));
        assert!(Duration::from_secs_f64(4.2) > hard);
        assert!(Duration::from_secs_f64(1.3) > graceful);
    }
}
