//! Probes: HTTP and TCP from a network namespace and a source address, as
//! the health gates, the golden scenarios and the tests send them.
//!
//! [`Origin`] says where a probe comes from: the caller's namespace or one
//! given by path (a local cluster's client namespace, or
//! `HAIMG_PROBE_NETNS`), and optionally a source address (the spec's admin
//! address, which the network policy lets reach the health ports). Entering
//! a namespace changes only the calling thread, so every probe that needs one
//! runs on a scoped thread of its own ([`netns::run_in`]); a socket keeps the
//! namespace it was opened in, also when handed back to another thread.
//!
//! Probes do no retries and no waiting: callers poll with deadlines.

pub mod http;
pub mod netns;
pub mod tcp;
pub mod vrrp;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// Where probes come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// Enter this network namespace (`/run/netns/<name>`) for every probe.
    pub netns: Option<PathBuf>,
    /// Bind probes to this source address.
    pub source: Option<IpAddr>,
}

impl Origin {
    /// This thread's namespace, the kernel's choice of source address.
    pub fn here() -> Origin {
        Origin::default()
    }

    pub fn new(netns: Option<PathBuf>, source: Option<IpAddr>) -> Origin {
        Origin { netns, source }
    }

    /// Run `f` inside the namespace (on a thread of its own), or here.
    pub fn run<T: Send>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> std::io::Result<T> {
        match &self.netns {
            None => f(),
            Some(ns) => netns::run_in(ns, f)?,
        }
    }

    /// One HTTP `GET` of `path` at `target`.
    pub fn get(
        &self,
        target: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> std::io::Result<http::Response> {
        let mut req = http::Request::new(target, path);
        req.timeout = timeout;
        req.source = self.source;
        self.run(|| http::get(&req))
    }

    /// A TCP connection to `addr`, opened in the namespace.
    pub fn connect(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        self.run(|| tcp::connect(addr, self.source, timeout))
    }

    /// Whether a connection to `addr` gets through.
    pub fn reach(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<tcp::Reach> {
        self.run(|| Ok(tcp::reach(addr, self.source, timeout)))
    }
}
