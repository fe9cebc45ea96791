//! `haimg status`: per slot the live and the standby member, their version,
//! template hash, generation and power state, and whether the slot is at rest.

use haimg_model::{Cluster, Role};
use serde::Serialize;

use super::slot::{Ct, SlotView};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberLine {
    pub vmid: u32,
    pub version: String,
    pub template: String,
    pub gen: u32,
    /// `running` | `stopped`
    pub power: &'static str,
}

impl MemberLine {
    fn of(c: &Ct) -> MemberLine {
        MemberLine {
            vmid: c.vmid,
            version: c.version().to_string(),
            template: c.template().to_string(),
            gen: c.gen(),
            power: if c.running { "running" } else { "stopped" },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Live runs, the standby (if any) is stopped.
    AtRest,
    /// Left between two steps by a killed run.
    Interrupted,
    /// The live member is stopped and nothing else runs.
    Down,
    /// Nothing deployed.
    Absent,
    /// A foreign guest or a moved member: haimg keeps out.
    Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotStatus {
    pub slot: String,
    pub role: Role,
    pub node: String,
    pub phase: Phase,
    pub live: Option<MemberLine>,
    pub standby: Option<MemberLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// At rest, but the live member runs another version than the spec's:
    /// what differs (`haimg deploy` rolls it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub cluster: String,
    /// The version the spec asks for.
    pub spec_version: String,
    pub slots: Vec<SlotStatus>,
}

impl Status {
    /// Every slot is at rest on the spec's version.
    pub fn converged(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.phase == Phase::AtRest && s.drift.is_none())
    }

    /// Every slot is at rest (some may run another version than the spec's).
    pub fn at_rest(&self) -> bool {
        self.slots.iter().all(|s| s.phase == Phase::AtRest)
    }
}

pub fn of(cluster: &Cluster, views: &[SlotView]) -> Status {
    let slots = views
        .iter()
        .map(|v| {
            let live = v.live();
            let phase = if v.problem.is_some() {
                Phase::Problem
            } else if v.is_empty() {
                Phase::Absent
            } else if v.at_rest() {
                Phase::AtRest
            } else if v.cts().all(|c| !c.running)
                && v.standby().is_none_or(|s| !s.live_tagged())
                && live.is_some_and(|l| l.data != Some(false))
            {
                Phase::Down
            } else {
                Phase::Interrupted
            };
            let drift = live
                .filter(|l| phase == Phase::AtRest && l.version() != cluster.version)
                .map(|l| format!("runs {}, the spec says {}", l.version(), cluster.version));
            SlotStatus {
                slot: v.slot().to_string(),
                role: v.member.role,
                node: v.member.node.clone(),
                phase,
                live: live.map(MemberLine::of),
                standby: v.standby().map(MemberLine::of),
                problem: v.problem.clone(),
                drift,
            }
        })
        .collect();
    Status {
        cluster: cluster.name.clone(),
        spec_version: cluster.version.clone(),
        slots,
    }
}
