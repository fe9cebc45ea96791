//! The blue/green step machine of one slot: pure, from a [`SlotView`] and a
//! [`Goal`] to the next [`Step`].
//!
//! A rollout is not a script that remembers where it was: every step is
//! derived again from what the target shows (tags, power states, who holds
//! the data volume), so a run killed after any step is continued by the next
//! run, and each step is idempotent because it is only chosen when its effect
//! is absent. [`apply`] is each step's effect on the view; the executor uses it
//! instead of re-reading the target after every call, and dry-run uses it to
//! show every call a rollout would make.
//!
//! Order inside a slot (deploy): free the green's VMID (destroy an older
//! standby), create green stopped, shut blue down (drain), move the data
//! volume (mongo), start green, promote green (health gate, then tag live),
//! demote blue (tag standby). Green is tagged live *before* blue is tagged
//! standby: a run killed between the two writes leaves two live tags, which
//! [`SlotView::live`] resolves to the running member. At no point do both
//! colours run: they share hostname, IP and MAC.

use serde::Serialize;

use crate::fleet::slot::{Ct, SlotView};
use crate::fleet::tags::{Gen, MemberTags, State};

/// What a deploy rolls a slot to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Want {
    /// The green's tags: new version and template, `state-standby`, the rollout's generation.
    pub tags: MemberTags,
}

impl Want {
    pub fn version(&self) -> &str {
        self.tags.version.as_deref().unwrap_or("")
    }
    pub fn template(&self) -> &str {
        self.tags.template.as_deref().unwrap_or("")
    }
    pub fn gen(&self) -> Option<Gen> {
        self.tags.gen.clone()
    }
    fn matches(&self, c: &Ct) -> bool {
        c.tags.template.as_deref() == Some(self.template())
            && c.tags.version.as_deref() == Some(self.version())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// Deploy: the member running this template is live (created if missing).
    Template(Want),
    /// Rollback, or restore after a failed gate: this container is live.
    Container { vmid: u32 },
}

/// One change to the target; each is a single backend call (plus, for
/// `Promote`, the health gate, and for a serving mongo `Shutdown`, a step-down).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Remove a stopped standby to free its VMID for the green.
    Destroy {
        vmid: u32,
    },
    /// Create the green, stopped, tagged standby.
    Create {
        vmid: u32,
    },
    /// Graceful shutdown (the halt signal). `serving`: it is the slot's live,
    /// running member, so this is the drain that takes the slot down.
    Shutdown {
        vmid: u32,
        serving: bool,
    },
    /// Hand the data volume (`mp0`) over; both containers are stopped.
    MoveData {
        from: u32,
        to: u32,
    },
    Start {
        vmid: u32,
    },
    /// Health gate, then tag live (with the rollout's generation in a deploy).
    Promote {
        vmid: u32,
        gen: Option<Gen>,
    },
    /// Tag standby.
    Demote {
        vmid: u32,
    },
}

impl Step {
    /// The container the step changes.
    pub fn vmid(&self) -> u32 {
        match self {
            Step::Destroy { vmid }
            | Step::Create { vmid }
            | Step::Shutdown { vmid, .. }
            | Step::Start { vmid }
            | Step::Promote { vmid, .. }
            | Step::Demote { vmid } => *vmid,
            Step::MoveData { from, .. } => *from,
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Destroy { vmid } => write!(f, "destroy standby CT {vmid}"),
            Step::Create { vmid } => write!(f, "create CT {vmid} stopped"),
            Step::Shutdown {
                vmid,
                serving: true,
            } => write!(f, "drain and shut down CT {vmid}"),
            Step::Shutdown { vmid, .. } => write!(f, "shut down CT {vmid}"),
            Step::MoveData { from, to } => write!(f, "move mp0 CT {from} -> CT {to}"),
            Step::Start { vmid } => write!(f, "start CT {vmid}"),
            Step::Promote { vmid, .. } => write!(f, "health gate, tag CT {vmid} live"),
            Step::Demote { vmid } => write!(f, "tag CT {vmid} standby"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Next {
    Step(Step),
    Done,
    /// The slot needs a person: the reason says what to do.
    Blocked(String),
}

/// The next step of `view` towards `goal`.
pub fn next(view: &SlotView, goal: &Goal) -> Next {
    if let Some(p) = &view.problem {
        return Next::Blocked(p.clone());
    }
    let Some(live) = view.live() else {
        return Next::Blocked(format!(
            "slot {} has no member; `haimg deploy` creates it",
            view.slot()
        ));
    };
    let target = match goal {
        Goal::Container { vmid } => match view.get(*vmid) {
            Some(c) => c,
            None => {
                return Next::Blocked(format!(
                    "CT {vmid} of slot {} does not exist any more",
                    view.slot()
                ))
            }
        },
        Goal::Template(w) => {
            if w.matches(live) {
                live
            } else if let Some(o) = view.other_of(live.vmid).filter(|o| w.matches(o)) {
                o
            } else if !view.at_rest() {
                // Another rollout's leftovers: back to rest on the live member first.
                return next(view, &Goal::Container { vmid: live.vmid });
            } else {
                let green = view.other_vmid(live.vmid);
                return Next::Step(match view.get(green) {
                    None => Step::Create { vmid: green },
                    Some(_) => Step::Destroy { vmid: green },
                });
            }
        }
    };
    converge(view, target, goal)
}

/// Steps that make `g` the live, running member and its partner a stopped standby.
fn converge(view: &SlotView, g: &Ct, goal: &Goal) -> Next {
    let other = view.other_of(g.vmid);
    if let Some(b) = other.filter(|b| b.running) {
        let (vmid, serving) = match (g.running, g.live_tagged()) {
            // Both up (never by haimg's doing): keep the live one.
            (true, true) => (b.vmid, false),
            (true, false) => (g.vmid, false),
            (false, _) => (b.vmid, b.live_tagged()),
        };
        return Next::Step(Step::Shutdown { vmid, serving });
    }
    if view.member.role.has_data_volume() && g.data != Some(true) {
        return match other {
            Some(b) if b.data == Some(true) => Next::Step(Step::MoveData {
                from: b.vmid,
                to: g.vmid,
            }),
            _ => Next::Blocked(format!(
                "no container of slot {} holds the data volume (mp0); restore it by hand before rolling",
                view.slot()
            )),
        };
    }
    if !g.running {
        return Next::Step(Step::Start { vmid: g.vmid });
    }
    if !g.live_tagged() {
        let gen = match goal {
            Goal::Template(w) => w.gen(),
            Goal::Container { .. } => None,
        };
        return Next::Step(Step::Promote { vmid: g.vmid, gen });
    }
    if let Some(b) = other.filter(|b| b.live_tagged()) {
        return Next::Step(Step::Demote { vmid: b.vmid });
    }
    Next::Done
}

/// The effect of a step that succeeded, on the view.
pub fn apply(view: &mut SlotView, step: &Step, goal: &Goal) {
    let node = view.member.node.clone();
    let mongo = view.member.role.has_data_volume();
    match step {
        Step::Destroy { vmid } => {
            if view.base.as_ref().is_some_and(|c| c.vmid == *vmid) {
                view.base = None;
            } else if view.alt.as_ref().is_some_and(|c| c.vmid == *vmid) {
                view.alt = None;
            }
        }
        Step::Create { vmid } => {
            let tags = match goal {
                Goal::Template(w) => w.tags.clone(),
                Goal::Container { .. } => MemberTags::default(),
            };
            let ct = Ct {
                vmid: *vmid,
                node,
                running: false,
                tags,
                data: mongo.then_some(false),
            };
            if *vmid == view.member.vmid {
                view.base = Some(ct);
            } else {
                view.alt = Some(ct);
            }
        }
        Step::Shutdown { vmid, .. } => set(view, *vmid, |c| c.running = false),
        Step::Start { vmid } => set(view, *vmid, |c| c.running = true),
        Step::MoveData { from, to } => {
            set(view, *from, |c| c.data = Some(false));
            set(view, *to, |c| c.data = Some(true));
        }
        Step::Promote { vmid, gen } => set(view, *vmid, |c| {
            c.tags.state = Some(State::Live);
            if let Some(g) = gen {
                c.tags.gen = Some(g.clone());
            }
        }),
        Step::Demote { vmid } => set(view, *vmid, |c| c.tags.state = Some(State::Standby)),
    }
}

fn set(view: &mut SlotView, vmid: u32, f: impl FnOnce(&mut Ct)) {
    if let Some(c) = view.get_mut(vmid) {
        f(c);
    }
}

/// At most this many steps per slot; the longest path is about ten.
pub const MAX_STEPS: usize = 24;

/// Every step from `view` to `goal`, assuming each succeeds.
pub fn simulate(view: &SlotView, goal: &Goal) -> Result<Vec<Step>, String> {
    let mut v = view.clone();
    let mut steps = Vec::new();
    loop {
        match next(&v, goal) {
            Next::Done => return Ok(steps),
            Next::Blocked(why) => return Err(why),
            Next::Step(s) => {
                if steps.len() >= MAX_STEPS {
                    return Err(format!(
                        "slot {}: no end after {MAX_STEPS} steps (a bug): {steps:?}",
                        view.slot()
                    ));
                }
                apply(&mut v, &s, goal);
                steps.push(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::slot::tests::{cluster, status, tags};
    use haimg_model::Cluster;

    fn want(c: &Cluster, slot: &str, ver: &str, tpl: &str, n: u32) -> Goal {
        let m = c.member_by_slot(slot).unwrap();
        Goal::Template(Want {
            tags: MemberTags {
                cluster: Some(c.name.clone()),
                role: Some(m.role),
                slot: Some(slot.into()),
                version: Some(ver.into()),
                template: Some(tpl.into()),
                secrets: None,
                state: Some(State::Standby),
                gen: Some(Gen {
                    n,
                    id: Some("0000000b".into()),
                }),
                extra: vec![],
            },
        })
    }

    fn view(c: &Cluster, slot: &str, inv: &[crate::backend::ContainerStatus]) -> SlotView {
        let m = c.member_by_slot(slot).unwrap();
        let mut v = SlotView::from_inventory(c, m, inv);
        if m.role.has_data_volume() {
            // The first deploy's member holds the data.
            for ct in [&mut v.base, &mut v.alt].into_iter().flatten() {
                ct.data = Some(ct.vmid == m.vmid);
            }
        }
        v
    }

    fn text(steps: &[Step]) -> String {
        steps.iter().map(|s| format!("{s}\n")).collect()
    }

    /// From every intermediate state the machine continues with the rest of
    /// the same sequence, and ends at rest on the goal.
    fn assert_resumable(v: &SlotView, goal: &Goal) -> Vec<Step> {
        let all = simulate(v, goal).unwrap();
        let mut cur = v.clone();
        for (i, s) in all.iter().enumerate() {
            assert_eq!(
                simulate(&cur, goal).unwrap(),
                all[i..].to_vec(),
                "after {i} steps"
            );
            apply(&mut cur, s, goal);
        }
        assert!(cur.at_rest(), "{cur:#?}");
        assert_eq!(next(&cur, goal), Next::Done);
        all
    }

    #[test]
    fn first_rollout_of_an_lb_member() {
        let c = cluster();
        let v = view(
            &c,
            "nginx1",
            &[status(
                100,
                "pve1",
                true,
                tags(&c, "nginx1", "1.0.0", "aaa", None, 0),
            )],
        );
        let steps = assert_resumable(&v, &want(&c, "nginx1", "1.1.0", "bbb", 1));
        insta::assert_snapshot!(text(&steps), @r"
        create CT 1100 stopped
        drain and shut down CT 100
        start CT 1100
        health gate, tag CT 1100 live
        tag CT 100 standby
        ");
    }

    #[test]
    fn mongo_hands_the_data_volume_over() {
        let c = cluster();
        let v = view(
            &c,
            "mongo1",
            &[status(
                103,
                "pve1",
                true,
                tags(&c, "mongo1", "1.0.0", "aaa", None, 0),
            )],
        );
        let steps = assert_resumable(&v, &want(&c, "mongo1", "1.1.0", "bbb", 1));
        insta::assert_snapshot!(text(&steps), @r"
        create CT 1103 stopped
        drain and shut down CT 103
        move mp0 CT 103 -> CT 1103
        start CT 1103
        health gate, tag CT 1103 live
        tag CT 103 standby
        ");
    }

    #[test]
    fn the_second_rollout_alternates_back_to_the_spec_vmid() {
        let c = cluster();
        let inv = [
            status(
                100,
                "pve1",
                false,
                tags(&c, "nginx1", "1.0.0", "aaa", Some(State::Standby), 0),
            ),
            status(
                1100,
                "pve1",
                true,
                tags(&c, "nginx1", "1.1.0", "bbb", Some(State::Live), 1),
            ),
        ];
        let v = view(&c, "nginx1", &inv);
        let steps = assert_resumable(&v, &want(&c, "nginx1", "1.2.0", "ccc", 2));
        insta::assert_snapshot!(text(&steps), @r"
        destroy standby CT 100
        create CT 100 stopped
        drain and shut down CT 1100
        start CT 100
        health gate, tag CT 100 live
        tag CT 1100 standby
        ");
    }

    #[test]
    fn rollback_swaps_to_the_standby_and_restore_undoes_a_half_swap() {
        let c = cluster();
        let inv = [
            status(
                104,
                "pve2",
                false,
                tags(&c, "mongo2", "1.0.0", "aaa", Some(State::Standby), 0),
            ),
            status(
                1104,
                "pve2",
                true,
                tags(&c, "mongo2", "1.1.0", "bbb", Some(State::Live), 1),
            ),
        ];
        let mut v = view(&c, "mongo2", &inv);
        v.base.as_mut().unwrap().data = Some(false);
        v.alt.as_mut().unwrap().data = Some(true);
        let steps = assert_resumable(&v, &Goal::Container { vmid: 104 });
        insta::assert_snapshot!(text(&steps), @r"
        drain and shut down CT 1104
        move mp0 CT 1104 -> CT 104
        start CT 104
        health gate, tag CT 104 live
        tag CT 1104 standby
        ");
        assert_eq!(
            steps[3],
            Step::Promote {
                vmid: 104,
                gen: None
            }
        );

        // A green that failed its gate: running, still standby; blue stopped, data on green.
        let inv = [
            status(
                104,
                "pve2",
                false,
                tags(&c, "mongo2", "1.0.0", "aaa", None, 0),
            ),
            status(
                1104,
                "pve2",
                true,
                tags(&c, "mongo2", "1.1.0", "bbb", Some(State::Standby), 1),
            ),
        ];
        let mut v = view(&c, "mongo2", &inv);
        v.base.as_mut().unwrap().data = Some(false);
        v.alt.as_mut().unwrap().data = Some(true);
        let steps = assert_resumable(&v, &Goal::Container { vmid: 104 });
        insta::assert_snapshot!(text(&steps), @r"
        shut down CT 1104
        move mp0 CT 1104 -> CT 104
        start CT 104
        ");
    }

    #[test]
    fn a_deploy_to_a_third_version_first_restores_a_half_swap() {
        let c = cluster();
        // Rollout to 1.1.0 killed after green started; the spec now wants 1.2.0.
        let inv = [
            status(
                101,
                "pve2",
                false,
                tags(&c, "nginx2", "1.0.0", "aaa", None, 0),
            ),
            status(
                1101,
                "pve2",
                true,
                tags(&c, "nginx2", "1.1.0", "bbb", Some(State::Standby), 1),
            ),
        ];
        let v = view(&c, "nginx2", &inv);
        let steps = assert_resumable(&v, &want(&c, "nginx2", "1.2.0", "ccc", 2));
        insta::assert_snapshot!(text(&steps), @r"
        shut down CT 1101
        start CT 101
        destroy standby CT 1101
        create CT 1101 stopped
        drain and shut down CT 101
        start CT 1101
        health gate, tag CT 1101 live
        tag CT 101 standby
        ");
    }

    #[test]
    fn a_kept_standby_of_the_wanted_version_is_reused() {
        let c = cluster();
        // After a rollback: 1.0.0 live again, 1.1.0 standby; deploying 1.1.0 again swaps.
        let inv = [
            status(
                106,
                "pve1",
                true,
                tags(&c, "webapp1", "1.0.0", "aaa", Some(State::Live), 0),
            ),
            status(
                1106,
                "pve1",
                false,
                tags(&c, "webapp1", "1.1.0", "bbb", Some(State::Standby), 1),
            ),
        ];
        let v = view(&c, "webapp1", &inv);
        let steps = assert_resumable(&v, &want(&c, "webapp1", "1.1.0", "bbb", 1));
        assert_eq!(
            steps[0],
            Step::Shutdown {
                vmid: 106,
                serving: true
            }
        );
        assert_eq!(steps.len(), 4);
    }

    #[test]
    fn both_colours_running_keeps_the_live_one() {
        let c = cluster();
        let inv = [
            status(
                106,
                "pve1",
                true,
                tags(&c, "webapp1", "1.0.0", "aaa", None, 0),
            ),
            status(
                1106,
                "pve1",
                true,
                tags(&c, "webapp1", "1.1.0", "bbb", Some(State::Standby), 1),
            ),
        ];
        let v = view(&c, "webapp1", &inv);
        let g = want(&c, "webapp1", "1.1.0", "bbb", 1);
        assert_eq!(
            next(&v, &g),
            Next::Step(Step::Shutdown {
                vmid: 1106,
                serving: false
            })
        );
        assert_eq!(next(&v, &Goal::Container { vmid: 106 }), next(&v, &g));
    }

    #[test]
    fn blocked_without_data_or_members() {
        let c = cluster();
        let mut v = view(
            &c,
            "mongo3",
            &[status(
                105,
                "pve3",
                true,
                tags(&c, "mongo3", "1.0.0", "aaa", None, 0),
            )],
        );
        v.base.as_mut().unwrap().data = Some(false);
        let g = want(&c, "mongo3", "1.1.0", "bbb", 1);
        let steps = simulate(&v, &g);
        insta::assert_snapshot!(steps.unwrap_err(), @"no container of slot mongo3 holds the data volume (mp0); restore it by hand before rolling");
        let empty = view(&c, "mongo3", &[]);
        assert!(matches!(next(&empty, &g), Next::Blocked(_)));
    }
}
