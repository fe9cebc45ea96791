//! How plans, progress and reports look: tables and lines for people
//! (stderr), tables for `status` and `test` (stdout). The layers below
//! return data; only the face turns it into text.

use std::ops::ControlFlow;

use haimg_model::Cluster;

use super::output::table;
use crate::fleet::status::{MemberLine, Phase, Status};
use crate::golden;
use crate::rollout::executor::{Event, Report, SlotOutcome};
use crate::rollout::gc::GcPlan;
use crate::rollout::machine::Step;
use crate::rollout::plan::{Brief, Kind, Plan};

/// The plan for people (stderr): one line per slot, then what each slot does.
pub fn plan(plan: &Plan) -> String {
    let mut out = String::new();
    let what = match plan.kind {
        Kind::Rollout => "rollout",
        Kind::Rollback => "rollback",
    };
    if plan.slots.is_empty() {
        out.push_str(&format!(
            "{what} of cluster {}: nothing to do{}\n",
            plan.cluster,
            plan.nothing
                .as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        ));
    } else {
        let gen = match (plan.kind, plan.gen) {
            (Kind::Rollout, Some(g)) => format!(", generation {g}"),
            (Kind::Rollback, Some(g)) => format!(", undoing generation {g}"),
            _ => String::new(),
        };
        let change = if plan.from == plan.to {
            format!("{} (new templates)", plan.to.join(", "))
        } else {
            format!("{} -> {}", plan.from.join(", "), plan.to.join(", "))
        };
        out.push_str(&format!(
            "{what} of cluster {}: {change}{gen}; {} slot(s), one at a time\n",
            plan.cluster,
            plan.slots.len()
        ));
        let (b, g) = match plan.kind {
            Kind::Rollout => ("blue (now)", "green (next)"),
            Kind::Rollback => ("live (now)", "standby (back)"),
        };
        let brief = |x: &Brief| {
            format!(
                "CT {} {} {}{}",
                x.vmid,
                x.version,
                x.template,
                if x.exists { "" } else { " (new)" }
            )
        };
        let rows: Vec<Vec<String>> = plan
            .slots
            .iter()
            .map(|s| {
                vec![
                    format!("{}.", s.order),
                    s.slot.clone(),
                    s.role.to_string(),
                    s.node.clone(),
                    brief(&s.blue),
                    "->".into(),
                    brief(&s.green),
                    s.note.clone(),
                ]
            })
            .collect();
        let table = table(&["#", "slot", "tier", "node", b, "", g, "note"], &rows);
        for l in table.lines() {
            out.push_str(&format!("  {l}\n"));
        }
        out.push_str("steps per slot:\n");
        for s in &plan.slots {
            let steps: Vec<String> = s.steps.iter().map(Step::to_string).collect();
            out.push_str(&format!("  {}: {}\n", s.slot, steps.join(", ")));
        }
        if plan.kind == Kind::Rollout {
            out.push_str(
                "blue stays stopped as the standby for `haimg rollback` until `haimg gc`\n",
            );
        }
    }
    for b in &plan.blocked {
        out.push_str(&format!("blocked: {}: {}\n", b.slot, b.reason));
    }
    if let Some(r) = &plan.refusal {
        out.push_str(&format!("cannot proceed: {r}\n"));
    }
    out
}

/// What gc removes, for people (stderr).
pub fn gc(plan: &GcPlan, cluster: &Cluster) -> String {
    let mut out = String::new();
    if let Some(r) = &plan.refusal {
        out.push_str(&format!("gc: nothing removed: {r}\n"));
        return out;
    }
    let kept = if plan.keep_gens.is_empty() {
        "no member deployed".to_string()
    } else {
        format!(
            "keeping generation(s) {}",
            plan.keep_gens
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    out.push_str(&format!(
        "gc of cluster {}: {kept} (rollout.keep_versions = {})\n",
        cluster.name, cluster.rollout.keep_versions
    ));
    if plan.members.is_empty() && plan.templates.is_empty() {
        out.push_str("  nothing to remove\n");
    }
    for m in &plan.members {
        out.push_str(&format!(
            "  remove standby {} CT {} on {}: {} ({}), generation {}\n",
            m.slot, m.vmid, m.node, m.version, m.template, m.gen
        ));
    }
    for t in &plan.templates {
        out.push_str(&format!(
            "  remove template {} on {}: no haimg container uses it\n",
            t.template.volid, t.node
        ));
    }
    out
}

/// The status table (stdout).
pub fn status(st: &Status) -> String {
    let line = |m: &Option<MemberLine>| match m {
        Some(m) => format!(
            "CT {} {} {} g{} {}",
            m.vmid, m.version, m.template, m.gen, m.power
        ),
        None => "-".to_string(),
    };
    let rows: Vec<Vec<String>> = st
        .slots
        .iter()
        .map(|s| {
            vec![
                s.slot.clone(),
                s.role.to_string(),
                s.node.clone(),
                line(&s.live),
                line(&s.standby),
                match s.phase {
                    Phase::AtRest => match &s.drift {
                        None => "ok".to_string(),
                        Some(d) => format!("DRIFT: {d} (`haimg deploy` rolls it out)"),
                    },
                    Phase::Interrupted => {
                        "INTERRUPTED: `haimg deploy` finishes, `haimg rollback` undoes".to_string()
                    }
                    Phase::Down => "DOWN: `haimg deploy` starts it".to_string(),
                    Phase::Absent => "not deployed".to_string(),
                    Phase::Problem => format!("PROBLEM: {}", s.problem.as_deref().unwrap_or("")),
                },
            ]
        })
        .collect();
    let mut out = format!(
        "cluster {} (spec version {})\n",
        st.cluster, st.spec_version
    );
    out.push_str(&table(
        &["slot", "tier", "node", "live", "standby", "state"],
        &rows,
    ));
    out
}

/// The golden results table (stdout).
pub fn golden(r: &golden::report::Report) -> String {
    let rows: Vec<Vec<String>> = r
        .scenarios
        .iter()
        .map(|s| {
            let figures: Vec<String> = s.figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                s.name.clone(),
                format!("{:?}", s.status).to_lowercase(),
                figures.join(" "),
                s.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["SCENARIO", "STATUS", "FIGURES", "REASON"], &rows)
}

/// Progress of a rollout on stderr; never stops it.
pub fn progress(total: usize) -> impl FnMut(&Event<'_>) -> ControlFlow<()> {
    move |e| {
        match e {
            Event::SlotStarted { plan } => eprintln!(
                "[{}/{total}] {} ({}): CT {} {} -> CT {} {}",
                plan.order,
                plan.slot,
                plan.node,
                plan.blue.vmid,
                plan.blue.version,
                plan.green.vmid,
                plan.green.version
            ),
            Event::StepDone {
                step,
                seconds,
                detail,
                ..
            } => eprintln!(
                "    {step} ({seconds:.1}s){}",
                detail.map(|d| format!(": {d}")).unwrap_or_default()
            ),
            Event::GateFailed { error, .. } => {
                eprintln!("    HEALTH GATE FAILED: {error}; restoring the previous member")
            }
            Event::SlotFinished { report } => match &report.outcome {
                SlotOutcome::Done => eprintln!(
                    "    done in {:.1}s{}",
                    report.seconds,
                    report
                        .down_s
                        .map(|d| format!(" (slot down {d:.1}s)"))
                        .unwrap_or_default()
                ),
                other => eprintln!("    {}", outcome_text(other)),
            },
        }
        ControlFlow::Continue(())
    }
}

pub fn outcome_text(o: &SlotOutcome) -> String {
    match o {
        SlotOutcome::Done => "done".into(),
        SlotOutcome::GateFailed { error, restored } => format!(
            "FAILED its health gate: {error}; {}",
            if *restored {
                "the previous member serves again"
            } else {
                "NOT RESTORED: run haimg again"
            }
        ),
        SlotOutcome::Failed { error, restored } => format!(
            "FAILED: {error}; {}",
            if *restored {
                "the previous member serves again"
            } else {
                "NOT RESTORED: run haimg again"
            }
        ),
        SlotOutcome::Refused(why) => format!("not touched: {why}"),
        SlotOutcome::NotStarted => "not started".into(),
    }
}

/// One line per slot and a total, on stderr.
pub fn summary(r: &Report, cluster: &Cluster) {
    let what = match r.kind {
        crate::rollout::Kind::Rollout => "rollout",
        crate::rollout::Kind::Rollback => "rollback",
    };
    for s in &r.slots {
        eprintln!(
            "  {:<10} CT {:<6} -> CT {:<6} {:>6.1}s  {}",
            s.slot,
            s.from.vmid,
            s.to.vmid,
            s.seconds,
            if r.dry_run && s.ok() {
                "would be swapped".to_string()
            } else {
                outcome_text(&s.outcome)
            }
        );
        if let Some(a) = &s.after_restore {
            eprintln!("             {a}");
        }
    }
    let done = r.slots.iter().filter(|s| s.ok()).count();
    eprintln!(
        "{}{what} of cluster {}: {done}/{} slot(s) {} in {:.1}s{}",
        if r.dry_run { "dry-run: " } else { "" },
        cluster.name,
        r.slots.len(),
        if r.dry_run {
            "would be swapped"
        } else {
            "done"
        },
        r.seconds,
        r.stopped
            .as_deref()
            .map(|s| format!("; STOPPED at {s}"))
            .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::report::{Report, ScenarioReport};

    #[test]
    fn table_and_json() {
        let mut a = ScenarioReport::new("vip-failover");
        a.figure("hard_s", 3.4567).figure("failed", 0usize);
        let mut b = ScenarioReport::new("rate-limit");
        b.figure("ok", 101usize)
            .expect(false, "expected about 101 x 200");
        let r = Report {
            scenarios: vec![a, b, ScenarioReport::skip("mongo-rs0", "no mongo template")],
        };
        assert!(!r.passed());
        insta::assert_snapshot!(golden(&r), @r"
        SCENARIO      STATUS  FIGURES                REASON
        vip-failover  pass    failed=0 hard_s=3.457
        rate-limit    fail    ok=101                 expected about 101 x 200
        mongo-rs0     skip                           no mongo template
        ");
        insta::assert_json_snapshot!(r, @r#"
        {
          "scenarios": [
            {
              "name": "vip-failover",
              "status": "pass",
              "reason": null,
              "figures": {
                "failed": 0.0,
                "hard_s": 3.457
              },
              "load": null
            },
            {
              "name": "rate-limit",
              "status": "fail",
              "reason": "expected about 101 x 200",
              "figures": {
                "ok": 101.0
              },
              "load": null
            },
            {
              "name": "mongo-rs0",
              "status": "skip",
              "reason": "no mongo template",
              "figures": {},
              "load": null
            }
          ]
        }
        "#);
    }
}
