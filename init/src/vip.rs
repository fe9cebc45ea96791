//! lb: lossless VIP moves (`roles/lb/templates/vip.nft` says how).
//!
//! At boot, before keepalived starts: ARP answered only for addresses on the
//! interface asked (`arp_ignore=1`) and sent from the interface's own address
//! (`arp_announce=2`); then the VIP as a /32 on `lo`, so this lb can accept
//! and answer connections to the VIP whether or not keepalived has put it on
//! eth0; then the stray rules (`nft -f`). The steps depend on each other in
//! that order: without the ARP settings an lb with the VIP on `lo` would
//! answer ARP for it on eth0 and pull the VIP's traffic away from the master,
//! so the VIP goes on `lo` only after they are in place.
//!
//! On keepalived's notifies ([`on_state`]): entering MASTER limits the window
//! in which this lb copies strays to the other lbs (open until then) to the
//! next seconds; leaving it opens the window again and makes nginx close its
//! idle keep-alive connections (a graceful reload), so the clients of those
//! connections open new ones to the new holder instead of sending their next
//! request to an lb that no longer receives it.
//!
//! Written for size: every format string and generic here lands in PID 1,
//! which must stay under 2 MiB.

use std::net::Ipv4Addr;

use haimg_model::Ipv4Net;

use crate::net;

pub const NFT: &str = "/usr/sbin/nft";
/// nginx's pid file, as `roles/lb/templates/nginx.conf` names it.
pub const NGINX_PID: &str = "/run/haimg/nginx/nginx.pid";

/// The sysctls the VIP on `lo` needs (the kernel uses the larger of `all`
/// and the interface's value).
pub const ARP_SYSCTLS: [(&str, &str); 2] = [
    ("/proc/sys/net/ipv4/conf/all/arp_ignore", "1"),
    ("/proc/sys/net/ipv4/conf/all/arp_announce", "2"),
];

/// The ARP settings, the VIP on `lo`, the stray rules; `Err` names the step
/// that failed (nothing after it ran).
pub fn setup(vip: Ipv4Addr) -> Result<(), String> {
    for (path, value) in ARP_SYSCTLS {
        std::fs::write(path, value).map_err(|e| format!("{path}: {e}"))?;
    }
    let lo = Ipv4Net {
        addr: vip,
        prefix: 32,
    };
    net::ensure_addr("lo", lo).map_err(|e| format!("the VIP on lo: {e}"))?;
    nft(&["-f", haimg_model::render::VIP_NFT])
}

/// keepalived entered `state` (MASTER, BACKUP or FAULT) from `previous`
/// (the last recorded state, if any).
pub fn on_state(previous: Option<&str>, state: &str) -> Result<(), String> {
    // The table and set of vip.nft (`render::VIP_NFT_TABLE`, `VIP_NFT_WINDOW_SET`),
    // replaced in one nft transaction: the window never closes in between.
    let window = format!("{}s", haimg_model::render::VIP_STRAY_WINDOW_S);
    let flush = ["flush", "set", "ip", "haimg_vip", "window", ";"];
    let add = ["add", "element", "ip", "haimg_vip", "window", "{", "tcp"];
    if state == "MASTER" {
        // Open for the window after the move, then closed while master.
        return nft(&[&flush[..], &add[..], &["timeout", &window, "}"]].concat());
    }
    // Not master: open, so it is open already when this lb takes the VIP
    // (the reload below does not depend on it).
    let opened = nft(&[&flush[..], &add[..], &["}"]].concat());
    if previous == Some("MASTER") {
        // SIGHUP: new workers; the old ones finish the requests they serve
        // and close idle keep-alive connections at once.
        let pid = std::fs::read_to_string(NGINX_PID)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .ok_or("no nginx pid to reload")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .map_err(|e| format!("SIGHUP to nginx: {e}"))?;
    }
    opened
}

/// Run nft; its messages go to the console with the init's own.
fn nft(args: &[&str]) -> Result<(), String> {
    match std::process::Command::new(NFT).args(args).status() {
        Ok(s) if s.success() => Ok(()),
        _ => Err(format!("nft {args:?} failed")),
    }
}
