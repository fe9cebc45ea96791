//! An in-process Proxmox VE API for tests: real HTTPS on 127.0.0.1:0.
//!
//! Every request is checked the way pveproxy and the API handler check it
//! (see `http.rs` and `schema.rs`): token auth, the route (501 otherwise), GET/DELETE
//! parameters only in the query string, form booleans `0`/`1`, unknown
//! parameters → 400 with Proxmox's text, multipart field order and the file part's
//! headers for uploads. It models nodes, storages (shared or node-local),
//! containers and tasks (UPIDs polled until done), and can inject faults.
//! Every request is recorded for snapshots.

#![allow(dead_code)]

pub mod firewall;
pub mod http;
pub mod schema;
mod state;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

#[allow(unused_imports)]
pub use schema::NOT_DEFINED as NOT_DEFINED_TEXT;
pub use state::{State, Storage};

pub const TOKEN_ID: &str = "root@pam!haimg";
pub const TOKEN_SECRET: &str = "0b7a6ad2-3c1f-4bd3-9a4e-6f1e8c2d5a90";

pub fn token() -> String {
    format!("{TOKEN_ID}={TOKEN_SECRET}")
}

pub fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/pve/tls/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A fault, applied to the next `times` requests that match.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: &'static str,
    /// Substring of the decoded path (below /api2/json).
    pub path: String,
    pub times: u32,
    pub kind: FaultKind,
}

#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Before the call runs: answer with this status (401 and 595-599 with an
    /// empty body, the message as the reason phrase) and do nothing.
    Status(u16, String),
    /// The call runs (a task is started, a config written), then the answer is
    /// lost: this status with an empty body instead, as pveproxy sends 596-599
    /// when the node it forwarded to did the work but the reply did not come back.
    After(u16),
    /// The call runs, then the connection closes without an answer (a dropped
    /// connection or a client timeout after the node did the work).
    DropAfter,
    /// The call is accepted, but its task fails with this exit status and log.
    /// A `vzcreate` that fails on its config lock leaves `lock: create` behind,
    /// as Proxmox does (see `state.rs`, `leaves_create_lock`).
    TaskFails(String),
    /// A `vzcreate` task fails with this error after the create lock was taken
    /// and its cleanup fails too (e.g. pmxcfs lost quorum and refuses to
    /// remove the config): the config stays, holding only `lock: create`.
    CreateLeavesLock(String),
    /// The task stays running for this long.
    SlowTask(Duration),
    /// Read this many body bytes, then close the connection without an answer.
    DropMidUpload(usize),
}

impl Fault {
    pub fn new(method: &'static str, path: &str, times: u32, kind: FaultKind) -> Fault {
        Fault {
            method,
            path: path.to_string(),
            times,
            kind,
        }
    }
}

/// The lock timeout text `PVE::Tools::lock_file_full` dies with.
pub fn lock_timeout_msg(vmid: u32) -> String {
    format!("can't lock file '/run/lock/lxc/pve-config-{vmid}.lock' - got timeout")
}

/// What `PVE::Cluster::check_cfs_quorum` dies with when the node has lost quorum.
pub const NO_QUORUM: &str = "cluster not ready - no quorum?";

/// One request as the fake saw it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// Decoded, below /api2/json.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Body,
    pub status: u16,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub enum Body {
    None,
    Form(Vec<(String, String)>),
    Multipart {
        content_length: usize,
        parts: Vec<Part>,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Part {
    pub headers: Vec<String>,
    /// Text value, or `<N bytes>` for the file part.
    pub value: String,
}

pub struct Config {
    pub nodes: Vec<String>,
    pub storages: Vec<Storage>,
    /// `/version` release, e.g. "9.1"; below 9.1 `env`, `entrypoint` and
    /// `host-managed` are unknown parameters.
    pub release: String,
    /// Status polls answered "running" before a task stops.
    pub task_polls: u32,
    /// How the server closes TLS sessions (pve-http-server < 5.2.1: unclean).
    pub tls_close: http::TlsClose,
    /// The datacenter firewall (`cluster.fw` `enable`) at start. On by default:
    /// the setup haimg asks for, where a mongo member may be deployed; a fresh
    /// Proxmox has it off, which the tests of that case set.
    pub datacenter_firewall: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nodes: vec!["pve1".into(), "pve2".into(), "pve3".into()],
            storages: vec![
                Storage::new("local", "dir", false, "iso,vztmpl,backup"),
                Storage::new("templates", "nfs", true, "vztmpl,iso"),
                Storage::new("local-lvm", "lvmthin", false, "rootdir,images"),
            ],
            release: "9.1".into(),
            task_polls: 1,
            tls_close: http::TlsClose::Clean,
            datacenter_firewall: true,
        }
    }
}

/// Shared access to the fake's model.
#[derive(Clone)]
pub struct StateHandle(Arc<state::Shared>);

impl StateHandle {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap()
    }
}

pub struct FakePve {
    pub addr: SocketAddr,
    shared: Arc<state::Shared>,
    stop: Arc<AtomicBool>,
}

impl FakePve {
    pub fn start(cfg: Config) -> FakePve {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(fixture("node.pem"))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_file(fixture("node.key")).unwrap();
        let tls = Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(state::Shared::new(cfg));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let (tls, h) = (tls.clone(), s2.clone() as Arc<dyn http::Handler>);
                std::thread::spawn(move || http::serve_connection(tcp, tls, h));
            }
        });
        FakePve { addr, shared, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn inject(&self, f: Fault) {
        self.shared.faults.lock().unwrap().push(f);
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    pub fn containers_len(&self) -> usize {
        self.state().containers.len()
    }

    /// A handle on the model that outlives borrows of the fake (for gates and observers).
    pub fn shared_state(&self) -> StateHandle {
        StateHandle(self.shared.clone())
    }

    /// Replace the whole model (containers, storages, volumes; tasks dropped),
    /// e.g. with a copy taken after a deploy, to start many tests from it.
    pub fn set_state(&self, mut s: State) {
        s.tasks.clear();
        *self.shared.state.lock().unwrap() = s;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Requests per "METHOD kind", e.g. "POST create".
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.requests() {
            *m.entry(format!("{} {}", r.method, kind_of(&r.path)))
                .or_insert(0) += 1;
        }
        m
    }

    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// Unused faults left.
    pub fn faults_left(&self) -> usize {
        self.shared
            .faults
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.times as usize)
            .sum()
    }
}

impl Drop for FakePve {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// A short name for an API path, for counting.
pub fn kind_of(path: &str) -> &'static str {
    let p = path.trim_end_matches('/');
    if p.contains("/firewall") {
        "firewall"
    } else if p.ends_with("/upload") {
        "upload"
    } else if p.contains("/tasks/") && p.ends_with("/status") {
        "task-status"
    } else if p.contains("/tasks/") && p.ends_with("/log") {
        "task-log"
    } else if p.ends_with("/status/start") {
        "start"
    } else if p.ends_with("/status/stop") {
        "stop"
    } else if p.ends_with("/status/shutdown") {
        "shutdown"
    } else if p.ends_with("/status/current") {
        "ct-status"
    } else if p.ends_with("/move_volume") {
        "move-volume"
    } else if p.ends_with("/tasks") {
        "task-list"
    } else if p.ends_with("/lxc") {
        "create-or-list"
    } else if p.contains("/storage/") && p.ends_with("/status") {
        "storage-status"
    } else if p.contains("/content") {
        "content"
    } else if p == "/version" {
        "version"
    } else if p == "/cluster/resources" {
        "resources"
    } else if p.ends_with("/config") {
        "config"
    } else if p
        .rsplit('/')
        .next()
        .is_some_and(|x| x.parse::<u32>().is_ok())
        && p.contains("/lxc/")
    {
        "ct"
    } else {
        "other"
    }
}
