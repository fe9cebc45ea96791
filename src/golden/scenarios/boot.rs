//! `boot`: how fast each member's haimg-init brought its services up, read
//! from the init's own `/run/haimg/status.json` (milliseconds after its
//! exec), gated on the goals per role. `nginx-crash`: nginx killed on an lb
//! backup, timed until the init's supervisor has it serving again.

use super::*;

/// Exec → every service ready, per role: the goals of the boot half
/// (DESIGN.md: an lb serves within half a second, a webapp within 1.5 s).
fn ready_goal_ms(role: Role) -> Option<u64> {
    match role {
        Role::Lb => Some(500),
        Role::Webapp => Some(1500),
        // mongod's own start (journal, WiredTiger) is not the init's to promise.
        Role::Mongo => None,
    }
}

/// What status.json says about the boot: (all spawned, all ready) in ms.
fn boot_times(status: &str) -> Result<(u64, u64), String> {
    let v: serde_json::Value =
        serde_json::from_str(status).map_err(|e| format!("status.json is not JSON: {e}"))?;
    let ms = |k: &str| {
        v["boot"][k]
            .as_u64()
            .ok_or_else(|| format!("status.json has no boot.{k} (services not all up?)"))
    };
    Ok((ms("all_spawned_ms")?, ms("all_ready_ms")?))
}

pub(super) fn boot(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let c = tb.cluster();
    let mut members = 0;
    for m in c.members().filter(|m| tb.has_role(m.role)) {
        members += 1;
        let status = tb.exec(&m.slot, &["cat", "/run/haimg/status.json"])?;
        match boot_times(&status) {
            Ok((spawned, ready)) => {
                o.figure(&format!("{}_spawned_ms", m.slot), spawned as usize);
                o.figure(&format!("{}_ready_ms", m.slot), ready as usize);
                if let Some(goal) = ready_goal_ms(m.role) {
                    o.expect(
                        ready < goal,
                        format!(
                            "{} was ready {ready} ms after exec; the goal for a {} member is < {goal} ms",
                            m.slot, m.role
                        ),
                    );
                }
            }
            Err(e) => {
                o.fail(format!("{}: {e}", m.slot));
            }
        }
    }
    o.expect(members > 0, "no member to read");
    Ok(o)
}

/// The pid of `service` in a status.json, while it runs and is ready.
fn ready_pid(status: &str, service: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(status).ok()?;
    let s = v["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == service)?;
    (s["ready"] == true).then(|| s["pid"].as_i64()).flatten()
}

/// keepalived checks nginx every second and gives the VIP up after two
/// failures (`chk_nginx`: interval 1, fall 2): nginx must be back sooner.
const NGINX_RESTART_GOAL: Duration = Duration::from_secs(2);

pub(super) fn nginx_crash(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let c = tb.cluster();
    // A backup (the lowest priority): the VIP stays where it is.
    let m =
        c.lb.members
            .iter()
            .filter(|m| m.slot != c.lb.keepalived.master)
            .min_by_key(|m| c.lb.keepalived.priorities.get(m.index).copied())
            .or_else(|| c.lb.members.first())
            .context("no lb member")?
            .clone();
    let status = || tb.exec(&m.slot, &["cat", "/run/haimg/status.json"]);
    let pid = ready_pid(&status()?, "nginx").with_context(|| {
        format!(
            "nginx is not running and ready in {} before the test",
            m.slot
        )
    })?;
    let health = SocketAddr::new(m.ip.into(), c.lb.nginx.listen_port);
    let t0 = Instant::now();
    tb.exec(&m.slot, &["sh", "-c", &format!("kill -9 {pid}")])?;
    let back = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        let new = ready_pid(&status().ok()?, "nginx").filter(|p| *p != pid)?;
        let r = probe(
            tb,
            health,
            "/haimg/lb-health",
            tb.admin_source(),
            Duration::from_millis(500),
        )
        .ok()?;
        (r.status == 200).then(|| (t0.elapsed(), new))
    });
    o.figure("slot", m.slot.as_str())
        .figure("killed_pid", pid.to_string());
    match back {
        Some((d, new)) => {
            o.figure("restart_s", d.as_secs_f64())
                .figure("new_pid", new.to_string());
            o.expect(
                d < NGINX_RESTART_GOAL,
                format!(
                    "nginx served again after {:.2} s; keepalived gives the VIP up after 2 s",
                    d.as_secs_f64()
                ),
            );
        }
        None => {
            o.fail("the init did not bring nginx back within 20 s");
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::super::Fake;
    use super::*;

    #[test]
    fn boot_times_come_from_the_inits_status() {
        let s =
            r#"{"boot":{"identity_ms":3,"all_spawned_ms":40,"all_ready_ms":210},"services":[]}"#;
        assert_eq!(boot_times(s), Ok((40, 210)));
        // Not yet ready, or not JSON: a failure, never a 0.
        let e = boot_times(r#"{"boot":{"all_spawned_ms":40,"all_ready_ms":null}}"#).unwrap_err();
        assert!(e.contains("boot.all_ready_ms"), "{e}");
        assert!(boot_times("garbage").is_err());
    }

    #[test]
    fn the_ready_pid_is_the_ready_services() {
        let s = r#"{"services":[{"name":"nginx","pid":12,"ready":true},{"name":"keepalived","pid":13,"ready":false}]}"#;
        assert_eq!(ready_pid(s, "nginx"), Some(12));
        assert_eq!(ready_pid(s, "keepalived"), None);
        assert_eq!(ready_pid(s, "app"), None);
    }

    /// A webapp ready after 1.6 s (a planted slow boot) fails the scenario.
    #[test]
    fn a_slow_boot_fails_the_gate() {
        let c = haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster;
        // Every member answers `cat status.json` with a canned boot.
        let canned = |c: &Cluster, webapp_ms: u64| {
            Fake::new(c.clone(), move |slot| {
                let ready = if slot.starts_with("webapp") {
                    webapp_ms
                } else {
                    20
                };
                Ok(format!(
                    r#"{{"boot":{{"all_spawned_ms":5,"all_ready_ms":{ready}}}}}"#
                ))
            })
        };
        let ok = run(find("boot").unwrap(), &canned(&c, 900));
        assert_eq!(ok.status, crate::golden::report::Status::Pass, "{ok:?}");
        let slow = run(find("boot").unwrap(), &canned(&c, 1600));
        assert_eq!(slow.status, crate::golden::report::Status::Fail);
        insta::assert_snapshot!(slow.reason.unwrap(), @"webapp1 was ready 1600 ms after exec; the goal for a webapp member is < 1500 ms");
    }

    #[test]
    fn goals_per_role() {
        assert_eq!(ready_goal_ms(Role::Lb), Some(500));
        assert_eq!(ready_goal_ms(Role::Webapp), Some(1500));
        assert_eq!(ready_goal_ms(Role::Mongo), None);
    }
}
