//! `mongo-rs0`: the replica set under the loss of its primary, as haimg's
//! own probes see it.

use super::*;

/// The scenario's name, for its report (also from its unit tests).
const MONGO_RS0: &str = "mongo-rs0";

/// `mongo-rs0`: the replica set as haimg's own probes see it (a
/// [`NetGate`](crate::rollout::NetGate) in the client netns, bound to the
/// admin address; `replSetGetStatus`, or `hello` when authorization is on).
///
/// 1. Within [`RsDeadlines::settle`], every member of the spec answers as a
///    member of the spec's set, exactly one PRIMARY and the others SECONDARY
///    caught up.
/// 2. The primary is killed (power cut); within [`RsDeadlines::election`]
///    another member answers PRIMARY. Figure `election_s`: from the kill to
///    the first probe that saw it (an upper bound, by the polling interval).
/// 3. The killed member is started again (always, also when step 2 failed)
///    and within [`RsDeadlines::rejoin`] answers SECONDARY of the set and
///    caught up (figure `rejoin_s`), while the new primary stays primary.
///
/// It needs a mongo template, which needs `mongodb-org-server` from
/// repo.mongodb.org: not reachable from the machine this was written on, so
/// there it skips and has never run against a real replica set. Its unit
/// tests drive it with replay servers and check what it asks and reports,
/// not how MongoDB elects.
pub(super) fn mongo_rs0(r: &Run<'_>) -> anyhow::Result<ScenarioReport> {
    let tb = r.tb;
    if !tb.has_role(Role::Mongo) {
        return Ok(r.skip(
            "no mongo template: mongodb-org-server is not reachable from this machine (see README)",
        ));
    }
    let gate = crate::rollout::NetGate::wire(crate::probe::Origin::new(
        tb.client_netns(),
        Some(tb.admin_source().into()),
    ));
    mongo_rs0_with(tb, &gate, &RsDeadlines::default())
}

/// How long each step of `mongo-rs0` may take.
#[derive(Debug, Clone, Copy)]
struct RsDeadlines {
    /// Until the set shows one PRIMARY and the rest SECONDARY: the goal of a
    /// fresh `rs0`, 30 s (the init initiates as soon as all three members
    /// answer; an election takes `electionTimeoutMillis`, 10 s, at most).
    settle: Duration,
    /// From the kill until another member is PRIMARY. A healthy set elects
    /// after `electionTimeoutMillis` (10 s by default) without heartbeats.
    election: Duration,
    /// From the start until the killed member is a caught-up SECONDARY.
    rejoin: Duration,
    every: Duration,
}

impl Default for RsDeadlines {
    fn default() -> RsDeadlines {
        RsDeadlines {
            settle: Duration::from_secs(30),
            election: Duration::from_secs(30),
            rejoin: Duration::from_secs(120),
            every: Duration::from_millis(250),
        }
    }
}

/// Every member's status line (`mongo1 PRIMARY`, `mongo2 SECONDARY 0.0s`,
/// `mongo3 error: …`) and the slot of the one PRIMARY when the set is whole:
/// one PRIMARY, every other member a SECONDARY of the set and caught up.
fn rs_view(gate: &crate::rollout::NetGate, c: &Cluster) -> (Vec<String>, Option<String>) {
    let mut lines = Vec::new();
    let mut primaries = Vec::new();
    let mut whole = true;
    for m in &c.mongo.members {
        let addr = SocketAddr::new(m.ip.into(), c.mongo.port);
        match gate.mongo_status(addr) {
            Ok(st) => {
                let in_set = st.set_name.as_deref() == Some(c.mongo.replica_set.as_str());
                match st.state.as_str() {
                    "PRIMARY" if in_set => primaries.push(m.slot.clone()),
                    "SECONDARY" if in_set => {
                        whole &=
                            crate::rollout::gate::check_mongo(&st, &c.mongo.replica_set).is_ok();
                    }
                    _ => whole = false,
                }
                let lag = st.lag_s.map(|l| format!(" {l:.1}s")).unwrap_or_default();
                let set = match &st.set_name {
                    Some(_) if in_set => String::new(),
                    Some(s) => format!(" of {s:?}"),
                    None => " (no set)".into(),
                };
                lines.push(format!("{} {}{set}{lag}", m.slot, st.state));
            }
            Err(e) => {
                whole = false;
                lines.push(format!("{} error: {e}", m.slot));
            }
        }
    }
    let primary = match primaries.as_slice() {
        [p] if whole => Some(p.clone()),
        _ => None,
    };
    (lines, primary)
}

fn mongo_rs0_with(
    tb: &dyn Testbed,
    gate: &crate::rollout::NetGate,
    t: &RsDeadlines,
) -> anyhow::Result<ScenarioReport> {
    use crate::rollout::gate::HealthGate;
    let c = tb.cluster();
    let mut o = ScenarioReport::new(MONGO_RS0);
    let mut last = Vec::new();
    let t0 = Instant::now();
    let Some(primary) = wait_for(t.settle, t.every, || {
        let (lines, p) = rs_view(gate, c);
        last = lines;
        p
    }) else {
        o.fail(format!(
            "within {}s the set did not show one PRIMARY and the other members SECONDARY caught up: {}",
            t.settle.as_secs(),
            last.join("; ")
        ));
        return Ok(o);
    };
    o.figure("settle_s", t0.elapsed().as_secs_f64())
        .figure("primary", primary.as_str());
    tb.kill(&primary)?;
    let killed = Instant::now();
    let elected = wait_for(t.election, t.every, || {
        gate.mongo_primary(c)
            .ok()
            .flatten()
            .filter(|p| *p != primary)
    });
    let election_s = killed.elapsed().as_secs_f64();
    // Restore before judging: scenarios leave the cluster as they found it.
    tb.start(&primary)?;
    let Some(new_primary) = elected else {
        o.figure("election_s", f64::NAN);
        o.fail(format!(
            "no other member became PRIMARY within {}s after {primary} was killed",
            t.election.as_secs()
        ));
        return Ok(o);
    };
    o.figure("election_s", election_s)
        .figure("new_primary", new_primary.as_str());
    let started = Instant::now();
    let killed_member = c
        .member_by_slot(&primary)
        .ok_or_else(|| anyhow::anyhow!("{primary} is not a member of the spec"))?;
    let addr = SocketAddr::new(killed_member.ip.into(), c.mongo.port);
    let mut seen = String::from("no answer yet");
    let rejoined = wait_for(t.rejoin, t.every, || {
        let st = match gate.mongo_status(addr) {
            Ok(st) => st,
            Err(e) => {
                seen = e;
                return None;
            }
        };
        match crate::rollout::gate::check_mongo(&st, &c.mongo.replica_set) {
            Ok(d) if st.state == "SECONDARY" => Some(d),
            Ok(d) => {
                seen = d;
                None
            }
            Err(e) => {
                seen = e;
                None
            }
        }
    });
    match rejoined {
        Some(_) => {
            o.figure("rejoin_s", started.elapsed().as_secs_f64());
            let still = gate.mongo_primary(c).ok().flatten();
            o.expect(
                still.as_deref() == Some(new_primary.as_str()),
                format!(
                    "{primary} rejoined, but the primary is now {} instead of {new_primary}",
                    still.as_deref().unwrap_or("nobody")
                ),
            );
        }
        None => {
            o.figure("rejoin_s", f64::NAN);
            o.fail(format!(
                "{primary} was started again but did not rejoin as a caught-up SECONDARY within {}s: {seen}",
                t.rejoin.as_secs()
            ));
        }
    }
    Ok(o)
}

#[cfg(test)]
/// `mongo-rs0`'s own logic (what it asks, when it kills and restarts,
/// what it reports) against replay servers that answer with recorded
/// mongod replies. The replay servers hold no election: their answers
/// change only as scripted when the testbed's kill and start move a
/// shared phase on. Nothing here shows how MongoDB behaves.
mod tests {
    use super::*;
    use haimg_mongo::bson::Document;
    use haimg_mongo::member::MemberState::{self, Primary, Secondary, Startup2};
    use haimg_mongo::replay::recorded::{self, NOW};
    use haimg_mongo::replay::{Answer, Phase, Replay, Script};
    use std::collections::HashMap;

    /// A testbed whose kill and start only record the call and move `phase` on.
    struct Scripted {
        cluster: Cluster,
        phase: Phase,
        calls: Mutex<Vec<String>>,
    }

    impl Testbed for Scripted {
        fn cluster(&self) -> &Cluster {
            &self.cluster
        }
        fn client_netns(&self) -> Option<PathBuf> {
            None
        }
        fn client_source(&self, n: u8) -> Ipv4Addr {
            Ipv4Addr::new(10, 99, n, 2)
        }
        fn admin_source(&self) -> Ipv4Addr {
            Ipv4Addr::new(192, 168, 30, 1)
        }
        fn kill(&self, slot: &str) -> anyhow::Result<()> {
            self.calls.lock().unwrap().push(format!("kill {slot}"));
            self.phase.advance();
            Ok(())
        }
        fn halt(&self, _: &str, _: Duration) -> anyhow::Result<()> {
            anyhow::bail!("mongo-rs0 never halts")
        }
        fn start(&self, slot: &str) -> anyhow::Result<()> {
            self.calls.lock().unwrap().push(format!("start {slot}"));
            self.phase.advance();
            Ok(())
        }
        fn exec(&self, _: &str, _: &[&str]) -> anyhow::Result<String> {
            anyhow::bail!("mongo-rs0 never execs")
        }
        fn has_role(&self, _: Role) -> bool {
            true
        }
    }

    fn host(i: usize) -> String {
        format!("192.168.30.{}:27017", 103 + i)
    }

    /// `hello` of member `me` in `state` naming `primary`, last write `at`.
    fn hello(me: usize, state: MemberState, primary: Option<usize>, at: u32) -> Answer {
        let hosts = [host(0), host(1), host(2)];
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        Answer::Reply(recorded::hello_rs(
            "rs0",
            &hosts,
            &host(me),
            state,
            primary.map(host).as_deref(),
            at,
        ))
    }

    /// `replSetGetStatus` of member `me` when the members are in `states`.
    fn status(states: [(MemberState, u32); 3], me: usize) -> Answer {
        let members: Vec<recorded::RsMember> = states
            .iter()
            .enumerate()
            .map(|(i, (s, at))| recorded::RsMember::new(&host(i), *s, *at))
            .collect();
        Answer::Reply(recorded::rs_status("rs0", &members, me))
    }

    /// With authorization on: only `hello` answers.
    fn authed(phase: &Phase) -> Script {
        let no = |c: &str| -> Document { recorded::unauthorized(c) };
        Script::new()
            .phase(phase)
            .reply("replSetGetStatus", no("replSetGetStatus"))
    }

    fn deadlines(settle_ms: u64) -> RsDeadlines {
        RsDeadlines {
            settle: Duration::from_millis(settle_ms),
            election: Duration::from_millis(500),
            rejoin: Duration::from_secs(10),
            every: Duration::from_millis(2),
        }
    }

    fn run_with(
        scripts: [Script; 3],
        phase: Phase,
        t: RsDeadlines,
    ) -> (ScenarioReport, Vec<String>, [Replay; 3]) {
        let cluster = haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
            .unwrap()
            .cluster;
        let servers = scripts.map(|s| Replay::start(s).unwrap());
        let map: HashMap<SocketAddr, SocketAddr> = cluster
            .mongo
            .members
            .iter()
            .zip(&servers)
            .map(|(m, r)| (SocketAddr::new(m.ip.into(), 27017), r.addr()))
            .collect();
        let mut gate = crate::rollout::NetGate::wire(crate::probe::Origin::here());
        gate.resolve = Box::new(move |a| map.get(&a).copied().unwrap_or(a));
        let tb = Scripted {
            cluster,
            phase,
            calls: Mutex::new(Vec::new()),
        };
        let o = mongo_rs0_with(&tb, &gate, &t).unwrap();
        let calls = tb.calls.into_inner().unwrap();
        (o, calls, servers)
    }

    fn num(o: &ScenarioReport, k: &str) -> f64 {
        match o.figures.get(k) {
            Some(crate::golden::report::Figure::Num(n)) => *n,
            other => panic!("{k}: {other:?}"),
        }
    }

    #[test]
    fn under_auth_kill_the_primary_see_another_elected_and_the_old_one_rejoin() {
        let phase = Phase::new();
        // Phase 0: mongo1 primary. 1: mongo1 killed (connections close);
        // mongo2 and mongo3 see no primary twice, then mongo2 answers
        // PRIMARY. 2: mongo1 started: initial state, behind, caught up.
        let scripts = [
            authed(&phase)
                .in_phase(0, "hello", vec![hello(0, Primary, Some(0), NOW)])
                .in_phase(1, "hello", vec![Answer::Close])
                .in_phase(1, "replSetGetStatus", vec![Answer::Close])
                .in_phase(
                    2,
                    "hello",
                    vec![
                        hello(0, Startup2, Some(1), 0),
                        hello(0, Secondary, Some(1), NOW - 30),
                        hello(0, Secondary, Some(1), NOW),
                    ],
                ),
            authed(&phase)
                .in_phase(0, "hello", vec![hello(1, Secondary, Some(0), NOW)])
                .in_phase(
                    1,
                    "hello",
                    vec![
                        hello(1, Secondary, None, NOW),
                        hello(1, Secondary, None, NOW),
                        hello(1, Primary, Some(1), NOW),
                    ],
                )
                .in_phase(2, "hello", vec![hello(1, Primary, Some(1), NOW)]),
            authed(&phase)
                .in_phase(0, "hello", vec![hello(2, Secondary, Some(0), NOW)])
                .in_phase(1, "hello", vec![hello(2, Secondary, None, NOW)])
                .in_phase(2, "hello", vec![hello(2, Secondary, Some(1), NOW)]),
        ];
        let (o, calls, servers) = run_with(scripts, phase, deadlines(10_000));
        assert_eq!(o.status, crate::golden::report::Status::Pass, "{o:?}");
        assert_eq!(calls, ["kill mongo1", "start mongo1"]);
        assert_eq!(o.figures["primary"].to_string(), "mongo1");
        assert_eq!(o.figures["new_primary"].to_string(), "mongo2");
        assert!(num(&o, "election_s") >= 0.0 && num(&o, "election_s") < 0.5);
        assert!(num(&o, "rejoin_s") >= 0.0);
        // mongo1 was asked until it was caught up: STARTUP2, behind, caught up.
        let hellos = servers[0]
            .commands()
            .iter()
            .filter(|c| *c == "hello")
            .count();
        assert!(hellos >= 4, "{:?}", servers[0].commands());
    }

    #[test]
    fn no_election_within_the_deadline_fails_and_still_restarts_the_member() {
        let phase = Phase::new();
        let before = [(Primary, NOW), (Secondary, NOW), (Secondary, NOW)];
        let leaderless = [(Secondary, NOW), (Secondary, NOW), (Secondary, NOW)];
        let script = |me: usize| {
            Script::new()
                .phase(&phase)
                .in_phase(0, "replSetGetStatus", vec![status(before, me)])
                .in_phase(1, "replSetGetStatus", vec![status(leaderless, me)])
                .in_phase(2, "replSetGetStatus", vec![status(leaderless, me)])
        };
        let scripts = [
            script(0).in_phase(1, "replSetGetStatus", vec![Answer::Close]),
            script(1),
            script(2),
        ];
        let (o, calls, _servers) = run_with(scripts, phase, deadlines(10_000));
        assert_eq!(o.status, crate::golden::report::Status::Fail);
        insta::assert_snapshot!(o.reason.clone().unwrap(), @"no other member became PRIMARY within 0s after mongo1 was killed");
        assert_eq!(calls, ["kill mongo1", "start mongo1"]);
        assert!(num(&o, "election_s").is_nan());
    }

    #[test]
    fn a_set_that_never_settles_is_reported_member_by_member() {
        let phase = Phase::new();
        let two = [(Primary, NOW), (Primary, NOW), (Secondary, NOW - 30)];
        let scripts = [
            Script::new().sequence("replSetGetStatus", vec![status(two, 0)]),
            Script::new().sequence("replSetGetStatus", vec![status(two, 1)]),
            Script::new().sequence("replSetGetStatus", vec![status(two, 2)]),
        ];
        let (o, calls, _servers) = run_with(scripts, phase, deadlines(200));
        assert!(
            calls.is_empty(),
            "nothing is killed before the set is whole"
        );
        insta::assert_snapshot!(o.reason.unwrap(), @"within 0s the set did not show one PRIMARY and the other members SECONDARY caught up: mongo1 PRIMARY 0.0s; mongo2 PRIMARY 0.0s; mongo3 SECONDARY 30.0s");
    }
}
