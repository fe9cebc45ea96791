//! `network-policy`: the flows the spec allows get through, the others are
//! dropped, tried from the client namespace and from inside members.

use super::*;
use crate::probe::tcp::Reach;

/// `timeout` + bash's /dev/tcp inside a member: 0 open, 124 timed out, else refused.
fn reach_from_member(
    tb: &dyn Testbed,
    slot: &str,
    ip: Ipv4Addr,
    port: u16,
) -> anyhow::Result<Reach> {
    let script = format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' 2>/dev/null; echo $?");
    let out = tb.exec(slot, &["sh", "-c", &script])?;
    Ok(match out.trim() {
        "0" => Reach::Open,
        "124" => Reach::Silent,
        _ => Reach::Refused,
    })
}

/// A TCP connect from the client namespace, from `source`.
fn reach_from_client(tb: &dyn Testbed, source: Ipv4Addr, ip: Ipv4Addr, port: u16) -> Reach {
    let origin = Origin::new(tb.client_netns(), Some(source.into()));
    origin
        .reach(SocketAddr::new(ip.into(), port), Duration::from_secs(3))
        .unwrap_or(Reach::Silent)
}

/// Allowed flows get through (open or refused), denied ones are dropped
/// (no answer). Flows to roles that are not deployed cannot be told apart
/// from "nobody there" and are reported as `n/a`.
pub(super) fn network_policy(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    let mut o = r.report();
    let c = tb.cluster();
    let lb =
        c.lb.members
            .first()
            .ok_or_else(|| anyhow::anyhow!("no lb"))?
            .clone();
    let web = c
        .webapp
        .members
        .first()
        .ok_or_else(|| anyhow::anyhow!("no webapp"))?
        .clone();
    let web2 = c.webapp.members.get(1).unwrap_or(&web).clone();
    let mongo = c.mongo.members.first().cloned();
    let (app, http, db) = (c.webapp.port, c.lb.nginx.listen_port, c.mongo.port);
    let client = r.client(0);
    let mut matrix = Vec::new();
    let mut check =
        |name: &str, allowed: bool, r: anyhow::Result<Reach>, o: &mut ScenarioReport| match r {
            Ok(r) => {
                let ok = r.passed() == allowed;
                matrix.push(format!(
                    "{name}={}",
                    if r.passed() { "pass" } else { "drop" }
                ));
                o.expect(
                    ok,
                    format!(
                        "{name}: expected {}, saw {r:?}",
                        if allowed { "allowed" } else { "denied" }
                    ),
                );
            }
            Err(e) => {
                o.fail(format!("{name}: {e:#}"));
            }
        };
    check(
        "client>vip:80",
        true,
        Ok(reach_from_client(tb, client, c.network.vip, http)),
        &mut o,
    );
    check(
        "client>webapp:3000",
        false,
        Ok(reach_from_client(tb, client, web.ip, app)),
        &mut o,
    );
    check(
        "client>lb:80",
        false,
        Ok(reach_from_client(tb, client, lb.ip, http)),
        &mut o,
    );
    check(
        "admin>webapp:3000",
        true,
        Ok(reach_from_client(tb, tb.admin_source(), web.ip, app)),
        &mut o,
    );
    check(
        "lb>webapp:3000",
        true,
        reach_from_member(tb, &lb.slot, web.ip, app),
        &mut o,
    );
    check(
        "webapp>lb:22",
        false,
        reach_from_member(tb, &web.slot, lb.ip, 22),
        &mut o,
    );
    check(
        "webapp>webapp:3000",
        false,
        reach_from_member(tb, &web.slot, web2.ip, app),
        &mut o,
    );
    match mongo.filter(|_| tb.has_role(Role::Mongo)) {
        Some(m) => {
            check(
                "lb>mongo:27017",
                false,
                reach_from_member(tb, &lb.slot, m.ip, db),
                &mut o,
            );
            check(
                "webapp>mongo:27017",
                true,
                reach_from_member(tb, &web.slot, m.ip, db),
                &mut o,
            );
        }
        None => matrix.push("lb>mongo:27017=n/a webapp>mongo:27017=n/a (no mongo deployed)".into()),
    }
    o.figure("matrix", matrix.join(" "));
    Ok(o)
}
