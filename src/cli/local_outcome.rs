//! The end of a local `haimg deploy`: either what failed and how to see why
//! (each failed member's console log, LXC's log of its start, and the LXC
//! command that starts it in the foreground), or whether the VIP answers.
//!
//! Invariant: "reachable" is printed only after an HTTP answer to `GET /` on
//! the VIP came back inside the cluster's client namespace (the only place
//! the cluster network exists); a deploy with a failed member, or whose VIP
//! did not answer below 500 within [`VIP_DEADLINE`], is a failed deploy.
//! The texts are pure functions of what was seen ([`Failed`], [`VipSeen`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use haimg_model::{Cluster, Role};

use crate::backend::local::LocalBackend;
use crate::deploy::{Action, Report};
use crate::rollout::NetGate;

/// How long the VIP may take to answer after the containers started (boot,
/// nginx, keepalived's election; the webapps behind it).
pub const VIP_DEADLINE: Duration = Duration::from_secs(45);

/// A member that did not come up, and where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub slot: String,
    pub vmid: u32,
    pub error: String,
    /// The LXC container name and path (`lxc-* -P <lxcpath> -n <name>`).
    pub name: String,
    pub lxcpath: PathBuf,
    /// `(path, exists)`.
    pub console: (PathBuf, bool),
    pub lxc_log: (PathBuf, bool),
}

/// What the VIP probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VipSeen {
    /// An answer below 500: the cluster serves.
    Answered {
        status: u16,
        served_by: Option<String>,
    },
    /// Only 5xx answers: the lb is there, what is behind it is not.
    Errors {
        status: u16,
        served_by: Option<String>,
    },
    /// No HTTP answer at all; the last error.
    Silent(String),
}

fn path_line(label: &str, (path, exists): &(PathBuf, bool)) -> String {
    let note = if *exists {
        ""
    } else {
        " (not written: the container never ran)"
    };
    format!("      {label:<9}{}{note}\n", path.display())
}

/// The failed members, each with the files and the command that show why.
pub fn render_failures(failed: &[Failed], total: usize) -> String {
    let mut s = format!(
        "deploy FAILED: {} of {total} member{} did not come up; to see why:\n",
        failed.len(),
        if total == 1 { "" } else { "s" }
    );
    for f in failed {
        let first = f.error.lines().next().unwrap_or("");
        s.push_str(&format!("  {} (CT {}): {first}\n", f.slot, f.vmid));
        s.push_str(&path_line("console", &f.console));
        s.push_str(&path_line("lxc log", &f.lxc_log));
        s.push_str(&format!(
            "      start it in the foreground: lxc-start -F -P {} -n {}\n",
            f.lxcpath.display(),
            f.name
        ));
    }
    s.push_str("remove everything with: haimg down\n");
    s
}

/// The VIP's answer (or silence), with the command to reach it, or the
/// consoles to read: the webapps' when the lb answered with errors, the lbs'
/// when nothing answered.
pub fn render_vip(
    seen: &VipSeen,
    vip: SocketAddr,
    curl: &str,
    consoles: &Consoles,
    waited: Duration,
) -> String {
    let by = |s: &Option<String>| {
        s.as_deref()
            .map(|b| format!(" from {b}"))
            .unwrap_or_default()
    };
    let list = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|p| format!("  console: {}\n", p.display()))
            .collect::<String>()
    };
    match seen {
        VipSeen::Answered { status, served_by } => format!(
            "the VIP {vip} answered GET / with HTTP {status}{} after {:.1} s in the cluster's client namespace; reach it with:\n  {curl}\nremove everything with: haimg down\n",
            by(served_by),
            waited.as_secs_f64()
        ),
        VipSeen::Errors { status, served_by } => format!(
            "deploy FAILED: the VIP {vip} answered GET / only with HTTP {status}{} for {:.0} s: the lb is up, what is behind it is not; see the webapp consoles:\n{}remove everything with: haimg down\n",
            by(served_by),
            waited.as_secs_f64(),
            list(&consoles.webapp)
        ),
        VipSeen::Silent(e) => format!(
            "deploy FAILED: the VIP {vip} did not answer within {:.0} s in the cluster's client namespace ({e}); see the lb consoles:\n{}remove everything with: haimg down\n",
            waited.as_secs_f64(),
            list(&consoles.lb)
        ),
    }
}

/// Console logs of the lb and webapp members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consoles {
    pub lb: Vec<PathBuf>,
    pub webapp: Vec<PathBuf>,
}

/// The failed members of a local deploy.
pub fn failed_members(backend: &LocalBackend, report: &Report) -> Vec<Failed> {
    let exists = |p: PathBuf| {
        let e = p.is_file();
        (p, e)
    };
    report
        .members
        .iter()
        .filter_map(|m| match &m.action {
            Action::Failed(e) | Action::Blocked(e) => Some(Failed {
                slot: m.slot.clone(),
                vmid: m.vmid,
                error: e.clone(),
                name: backend.container_name(m.vmid),
                lxcpath: backend.lxcpath(),
                console: exists(backend.console_log(m.vmid)),
                lxc_log: exists(backend.lxc_log(m.vmid)),
            }),
            _ => None,
        })
        .collect()
}

/// Probe `GET /` on the VIP through `gate` until an answer below 500 or the deadline.
pub fn probe_vip(gate: &NetGate, vip: SocketAddr, deadline: Duration) -> VipSeen {
    let until = Instant::now() + deadline;
    let mut seen = VipSeen::Silent("no probe ran".into());
    loop {
        seen = match gate.origin.get(vip, "/", gate.probe_timeout) {
            Ok(r) if r.status < 500 => {
                return VipSeen::Answered {
                    status: r.status,
                    served_by: r.served_by,
                }
            }
            Ok(r) => VipSeen::Errors {
                status: r.status,
                served_by: r.served_by,
            },
            // An earlier 5xx says more than a later timeout.
            Err(e) if !matches!(seen, VipSeen::Errors { .. }) => VipSeen::Silent(e.to_string()),
            Err(_) => seen,
        };
        if Instant::now() >= until {
            return seen;
        }
        std::thread::sleep(gate.every); // the polling interval of the health gates
    }
}

/// Print how the local deploy ended; `false` when it failed.
pub fn report(backend: &LocalBackend, cluster: &Cluster, report: &Report, gate: &NetGate) -> bool {
    let failed = failed_members(backend, report);
    if !failed.is_empty() {
        eprint!("{}", render_failures(&failed, report.members.len()));
        return false;
    }
    if cluster.lb.members.is_empty() {
        return true;
    }
    let Ok(Some(net)) = backend.network() else {
        eprintln!(
            "deploy FAILED: the local cluster has no network recorded; run `haimg deploy` again"
        );
        return false;
    };
    let vip = SocketAddr::new(cluster.network.vip.into(), cluster.lb.nginx.listen_port);
    let t = Instant::now();
    eprintln!(
        "waiting up to {} s for the VIP {vip} to answer …",
        VIP_DEADLINE.as_secs()
    );
    let seen = probe_vip(gate, vip, VIP_DEADLINE);
    let of = |role| {
        cluster
            .members_of(role)
            .iter()
            .map(|m| backend.console_log(m.vmid))
            .collect()
    };
    let consoles = Consoles {
        lb: of(Role::Lb),
        webapp: of(Role::Webapp),
    };
    let url = format!(
        "http://{}:{}/",
        cluster.network.vip, cluster.lb.nginx.listen_port
    );
    eprint!(
        "{}",
        render_vip(&seen, vip, &net.curl_hint(&url), &consoles, t.elapsed())
    );
    matches!(seen, VipSeen::Answered { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The state paths under `dir` as `[STATE]`.
    fn redact(s: &str, dir: &Path) -> String {
        s.replace(&dir.display().to_string(), "[STATE]")
    }

    fn failed(vmid: u32, slot: &str, ran: bool) -> Failed {
        let ct = PathBuf::from(format!("/var/lib/haimg/haimg/lxc/haimg-0a1b2c3d-{vmid}"));
        Failed {
            slot: slot.into(),
            vmid,
            error: format!("CT {vmid} failed to start: Failed to load config for haimg-0a1b2c3d-{vmid} (log: {})\n  more", ct.join("lxc.log").display()),
            name: format!("haimg-0a1b2c3d-{vmid}"),
            lxcpath: "/var/lib/haimg/haimg/lxc".into(),
            console: (ct.join("console.log"), ran),
            lxc_log: (ct.join("lxc.log"), true),
        }
    }

    #[test]
    fn failures_name_the_logs_and_the_command() {
        let text = render_failures(
            &[failed(100, "nginx1", false), failed(106, "webapp1", true)],
            6,
        );
        let text = redact(&text, Path::new("/var/lib/haimg"));
        insta::assert_snapshot!(text, @r"
        deploy FAILED: 2 of 6 members did not come up; to see why:
          nginx1 (CT 100): CT 100 failed to start: Failed to load config for haimg-0a1b2c3d-100 (log: [STATE]/haimg/lxc/haimg-0a1b2c3d-100/lxc.log)
              console  [STATE]/haimg/lxc/haimg-0a1b2c3d-100/console.log (not written: the container never ran)
              lxc log  [STATE]/haimg/lxc/haimg-0a1b2c3d-100/lxc.log
              start it in the foreground: lxc-start -F -P [STATE]/haimg/lxc -n haimg-0a1b2c3d-100
          webapp1 (CT 106): CT 106 failed to start: Failed to load config for haimg-0a1b2c3d-106 (log: [STATE]/haimg/lxc/haimg-0a1b2c3d-106/lxc.log)
              console  [STATE]/haimg/lxc/haimg-0a1b2c3d-106/console.log
              lxc log  [STATE]/haimg/lxc/haimg-0a1b2c3d-106/lxc.log
              start it in the foreground: lxc-start -F -P [STATE]/haimg/lxc -n haimg-0a1b2c3d-106
        remove everything with: haimg down
        ");
        assert!(!text.contains("reachable") && !text.contains("answered"));
    }

    #[test]
    fn the_vip_is_reachable_only_when_it_answered() {
        let vip: SocketAddr = "192.168.30.200:80".parse().unwrap();
        let curl = "ip netns exec haimg-haimg-0a1b2c3d curl http://192.168.30.200:80/";
        let consoles = Consoles {
            lb: vec!["/s/lxc/haimg-0a1b2c3d-100/console.log".into()],
            webapp: vec!["/s/lxc/haimg-0a1b2c3d-106/console.log".into()],
        };
        let w = Duration::from_secs(45);
        let answered = VipSeen::Answered {
            status: 200,
            served_by: Some("nginx1".into()),
        };
        let errors = VipSeen::Errors {
            status: 502,
            served_by: Some("nginx1".into()),
        };
        let silent = VipSeen::Silent("connection timed out".into());
        let text: String = [answered, errors, silent]
            .iter()
            .map(|s| render_vip(s, vip, curl, &consoles, w))
            .collect();
        insta::assert_snapshot!(text, @r"
        the VIP 192.168.30.200:80 answered GET / with HTTP 200 from nginx1 after 45.0 s in the cluster's client namespace; reach it with:
          ip netns exec haimg-haimg-0a1b2c3d curl http://192.168.30.200:80/
        remove everything with: haimg down
        deploy FAILED: the VIP 192.168.30.200:80 answered GET / only with HTTP 502 from nginx1 for 45 s: the lb is up, what is behind it is not; see the webapp consoles:
          console: /s/lxc/haimg-0a1b2c3d-106/console.log
        remove everything with: haimg down
        deploy FAILED: the VIP 192.168.30.200:80 did not answer within 45 s in the cluster's client namespace (connection timed out); see the lb consoles:
          console: /s/lxc/haimg-0a1b2c3d-100/console.log
        remove everything with: haimg down
        ");
    }
}
