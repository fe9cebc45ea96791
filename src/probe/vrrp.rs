//! VRRP adverts as they cross a bridge: who sent one, when, with what
//! priority. The golden VIP scenarios count transitions from the wire rather
//! than from keepalived's own view: only a master sends adverts, so adverts
//! from an lb that is not the master are a transition, and the longest gap
//! between the master's adverts says how close a backup came to taking over.
//!
//! A packet socket (`AF_PACKET`, IPv4 frames) bound to the bridge, which is
//! put in promiscuous mode for the socket's lifetime so frames forwarded
//! between its ports (lb to lb) reach it. Bounded: it stops at `max` or
//! when asked.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One advert seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    pub at: Instant,
    pub src: Ipv4Addr,
    /// 2 or 3.
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
}

/// The VRRP part of an IPv4 packet (protocol 112, RFC 3768 / RFC 5798 §5.1:
/// version and type in the first byte, VRID, priority): `(src, version,
/// vrid, priority)`; `None` for anything else or a truncated packet.
pub fn parse(ip: &[u8]) -> Option<(Ipv4Addr, u8, u8, u8)> {
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || ihl < 20 || *ip.get(9)? != 112 {
        return None;
    }
    let src = Ipv4Addr::new(*ip.get(12)?, *ip.get(13)?, *ip.get(14)?, *ip.get(15)?);
    let v = ip.get(ihl..ihl + 3)?;
    let (version, kind) = (v[0] >> 4, v[0] & 0x0f);
    (kind == 1).then_some((src, version, v[1], v[2]))
}

/// A capture running in a thread.
pub struct Watch {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<std::io::Result<Vec<Advert>>>,
}

impl Watch {
    /// Start capturing VRRP adverts of `vrid` on `bridge` (host side), for at most `max`.
    pub fn start(bridge: &str, vrid: u8, max: Duration) -> std::io::Result<Watch> {
        let fd = open(bridge)?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let handle = std::thread::spawn(move || {
            let end = Instant::now() + max;
            let mut seen = Vec::new();
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::SeqCst) && Instant::now() < end {
                // SAFETY: recv into a buffer we own, with its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    match e.kind() {
                        std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted => continue,
                        _ => return Err(e),
                    }
                }
                if let Some((src, version, v, priority)) = parse(&buf[..n as usize]) {
                    if v == vrid {
                        seen.push(Advert {
                            at: Instant::now(),
                            src,
                            version,
                            vrid: v,
                            priority,
                        });
                    }
                }
            }
            Ok(seen)
        });
        Ok(Watch { stop, handle })
    }

    /// Stop and return what was seen.
    pub fn finish(self) -> std::io::Result<Vec<Advert>> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .join()
            .map_err(|_| std::io::Error::other("the VRRP capture panicked"))?
    }
}

/// A packet socket for IPv4 on `ifname`, promiscuous, 100 ms receive timeout.
fn open(ifname: &str) -> std::io::Result<OwnedFd> {
    let name = std::ffi::CString::new(ifname)
        .map_err(|_| std::io::Error::other(format!("bad interface name {ifname:?}")))?;
    // SAFETY: a NUL-terminated name we own.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let proto = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: plain socket(2); the fd is owned right after.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh, valid fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: zeroed sockaddr_ll is valid; the fields set are plain integers.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    // SAFETY: bind with a sockaddr_ll of its size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: zeroed packet_mreq is valid.
    let mut mr: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mr.mr_ifindex = index as i32;
    mr.mr_type = libc::PACKET_MR_PROMISC as u16;
    setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mr)?;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    Ok(fd)
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> std::io::Result<()> {
    // SAFETY: value points to a T of its size for the call's duration.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What a capture says about one VRRP instance whose master is `master`:
/// adverts from other sources (each run of them is a transition away from
/// `master` and back), and the longest gap between the master's adverts.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub from_master: usize,
    /// Adverts (priority > 0) from any source but `master`.
    pub from_others: usize,
    /// Runs of adverts from others: each is one lb that became master.
    pub takeovers: usize,
    pub max_gap_s: f64,
}

pub fn summarize(adverts: &[Advert], master: Ipv4Addr) -> Summary {
    let mut s = Summary {
        from_master: 0,
        from_others: 0,
        takeovers: 0,
        max_gap_s: 0.0,
    };
    let mut last_master: Option<Instant> = None;
    let mut in_other_run = false;
    for a in adverts {
        if a.src == master {
            if let Some(t) = last_master {
                s.max_gap_s = s.max_gap_s.max(a.at.duration_since(t).as_secs_f64());
            }
            last_master = Some(a.at);
            s.from_master += 1;
            in_other_run = false;
        } else if a.priority > 0 {
            s.from_others += 1;
            if !in_other_run {
                s.takeovers += 1;
                in_other_run = true;
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 packet carrying a VRRP advert (header fields that matter only).
    fn packet(src: [u8; 4], version: u8, vrid: u8, priority: u8) -> Vec<u8> {
        let mut p = vec![0u8; 20 + 16];
        p[0] = 0x45;
        p[9] = 112;
        p[12..16].copy_from_slice(&src);
        p[20] = (version << 4) | 1;
        p[21] = vrid;
        p[22] = priority;
        p
    }

    #[test]
    fn adverts_are_read_and_other_packets_are_not() {
        let p = packet([192, 168, 30, 100], 3, 51, 150);
        assert_eq!(
            parse(&p),
            Some((Ipv4Addr::new(192, 168, 30, 100), 3, 51, 150))
        );
        let mut tcp = p.clone();
        tcp[9] = 6;
        assert_eq!(parse(&tcp), None);
        assert_eq!(parse(&p[..21]), None, "truncated");
        let mut v6 = p.clone();
        v6[0] = 0x65;
        assert_eq!(parse(&v6), None);
        let mut not_advert = p;
        not_advert[20] = (3 << 4) | 2;
        assert_eq!(parse(&not_advert), None);
    }

    /// A backup that sent adverts twice is two takeovers; the master's
    /// longest silence is the gap figure; priority 0 (a master leaving) is
    /// no takeover.
    #[test]
    fn takeovers_and_gaps_are_counted_from_the_wire() {
        let t0 = Instant::now();
        let m = Ipv4Addr::new(192, 168, 30, 100);
        let b = Ipv4Addr::new(192, 168, 30, 101);
        let at = |ms: u64, src, priority| Advert {
            at: t0 + Duration::from_millis(ms),
            src,
            version: 3,
            vrid: 51,
            priority,
        };
        let seen = [
            at(0, m, 150),
            at(100, m, 150),
            at(450, b, 100),
            at(550, b, 100),
            at(600, m, 150),
            at(700, m, 0),
            at(800, b, 100),
            at(900, m, 150),
        ];
        let s = summarize(&seen, m);
        assert_eq!(s.from_master, 5);
        assert_eq!(s.from_others, 3);
        assert_eq!(s.takeovers, 2);
        assert!((s.max_gap_s - 0.5).abs() < 1e-9, "{s:?}");
        let quiet = summarize(&seen[..2], m);
        assert_eq!((quiet.takeovers, quiet.from_others), (0, 0));
    }
}
