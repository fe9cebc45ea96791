//! `haimg check`: validate the spec, print the plan and what it survives.

use std::path::Path;

use anyhow::Result;
use haimg_model::tolerance::{self, Report};
use haimg_model::{Cluster, Role};
use serde::Serialize;

use super::{output, Exit};
use crate::spec_file;

#[derive(Serialize)]
struct CheckJson<'a> {
    source: String,
    valid: bool,
    cluster: &'a Cluster,
    tolerance: &'a Report,
    policy: &'a haimg_model::policy::Policy,
    warnings: &'a [haimg_model::Problem],
}

pub fn run(spec: Option<&Path>, json: bool) -> Result<Exit> {
    let loaded = spec_file::load(spec)?;
    let cluster = &loaded.checked.cluster;
    let report = tolerance::report(cluster);
    if !loaded.checked.warnings.is_empty() {
        output::print_problems(&loaded.source.to_string(), &loaded.checked.warnings);
    }
    if json {
        output::json(&CheckJson {
            source: loaded.source.to_string(),
            valid: true,
            cluster,
            tolerance: &report,
            policy: &haimg_model::policy::derive(cluster),
            warnings: &loaded.checked.warnings,
        })?;
    } else {
        output::stdout(&render_human(cluster, &report))?;
        eprintln!("{}: valid", loaded.source);
    }
    Ok(Exit::Ok)
}

/// The plan as people read it.
pub fn render_human(c: &Cluster, r: &Report) -> String {
    let n = &c.network;
    let k = &c.lb.keepalived;
    let mut out = format!(
        "cluster {} version {}: network {} gateway {} bridge {}\n",
        c.name, c.version, n.cidr, n.gateway, n.bridge
    );
    let mut ports = vec![c.lb.nginx.listen_port.to_string()];
    if c.lb.nginx.tls.is_some() {
        ports.push("443".into());
    }
    out += &format!(
        "VIP {} ports {}: keepalived VRID {} {:?} advert {}s{}, master {}\n",
        n.vip,
        ports.join("/"),
        k.virtual_router_id,
        k.mode,
        k.advert_int(),
        if k.vrrp_version() == 3 {
            " (VRRPv3)"
        } else {
            ""
        },
        k.master
    )
    .replace("Unicast", "unicast")
    .replace("Multicast", "multicast");
    out += &format!("deploy target: {}\n\n", target(c));

    let rows: Vec<Vec<String>> = c
        .members()
        .map(|m| {
            let note = match m.role {
                Role::Lb => {
                    let prio = c.lb_priority(m).unwrap_or(0);
                    let state = if m.slot == k.master {
                        "MASTER"
                    } else {
                        "BACKUP"
                    };
                    format!("{state} priority {prio}")
                }
                Role::Mongo => format!("{} :{}", c.mongo.replica_set, c.mongo.port),
                Role::Webapp => format!("pm2 {:?} :{}", c.webapp.pm2.exec_mode, c.webapp.port)
                    .replace("Fork", "fork")
                    .replace("Cluster", "cluster"),
            };
            vec![
                m.slot.clone(),
                m.vmid.to_string(),
                m.hostname.clone(),
                m.ip.to_string(),
                m.node.clone(),
                m.role.to_string(),
                note,
            ]
        })
        .collect();
    out += &output::table(
        &["SLOT", "VMID", "HOSTNAME", "IP", "NODE", "ROLE", "NOTE"],
        &rows,
    );

    out += "\nfault tolerance (worst case)\n";
    let rows: Vec<Vec<String>> = r
        .tiers
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.members.to_string(),
                t.needs.to_string(),
                t.member_losses.to_string(),
                t.host_losses.to_string(),
                t.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out += &output::table(
        &[
            "TIER",
            "MEMBERS",
            "NEEDS UP",
            "MEMBER LOSSES",
            "HOST LOSSES",
            "WHY",
        ],
        &rows,
    );
    out += "\nmembers lost together with a host\n";
    for h in &r.hosts {
        out += &format!("{}: {}\n", h.node, h.slots.join(", "));
    }
    out += &format!("\n{}\n", r.verdict);
    let (header, rows) = haimg_model::policy::derive(c).matrix();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    out += "\nnetwork policy (inbound; everything else to a member is dropped)\n";
    out += &output::table(&header, &rows);
    out
}

fn target(c: &Cluster) -> String {
    match &c.proxmox.endpoint {
        Some(ep) => format!("proxmox {ep} (nodes {})", c.proxmox.nodes.join(", ")),
        None => "local LXC on this host (no proxmox.endpoint)".into(),
    }
}
