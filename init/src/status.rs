//! `/run/haimg/status.json`: what the init is doing, for people and for
//! `haimg status`/health gates.
//!
//! The file is rewritten whole (temp file + rename, so a reader never sees
//! half a document) and only when its content changed. It holds the
//! identity, the image, the phase, a boot error if any (the same text as the
//! console line) with the attempts so far and when the next is due, each
//! service's state, the rs0 join state and the boot timings.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use haimg_model::image::ImageInfo;
use serde::Serialize;

use crate::supervise::process::Observer;
use crate::supervise::{Finish, Millis, Phase, ServiceStatus, Supervisor};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdentitySummary {
    pub role: String,
    pub slot: String,
    pub vmid: u32,
    pub hostname: String,
    pub address: String,
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BootTimes {
    /// Milliseconds after exec when each step finished.
    pub identity_ms: Option<Millis>,
    pub network_ms: Option<Millis>,
    pub render_ms: Option<Millis>,
    pub all_spawned_ms: Option<Millis>,
    pub all_ready_ms: Option<Millis>,
}

/// The parts of the status that are not the supervisor's.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub phase: Option<Phase>,
    /// Why the init is idle instead of running services.
    pub error: Option<String>,
    /// Boot attempts so far (identity, network, render); a failed one is
    /// retried with backoff.
    pub boot_attempts: u32,
    /// When the next boot attempt is due (ms after exec), while one failed.
    pub next_attempt_ms: Option<Millis>,
    pub identity: Option<IdentitySummary>,
    pub image: Option<ImageInfo>,
    pub services: Vec<ServiceStatus>,
    /// rs0 join (mongo only), as the join thread last reported it.
    pub join: Option<serde_json::Value>,
    pub boot: BootTimes,
    pub finish: Option<Finish>,
    pub warnings: Vec<String>,
}

/// Write `bytes` to `path` atomically (same directory temp file, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("status")
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Publishes the status file after every supervisor turn.
pub struct StatusFile {
    pub path: PathBuf,
    pub status: Status,
    /// Filled by the join thread.
    pub join: Option<Arc<Mutex<serde_json::Value>>>,
    last: String,
}

impl StatusFile {
    pub fn new(path: PathBuf, status: Status) -> StatusFile {
        StatusFile {
            path,
            status,
            join: None,
            last: String::new(),
        }
    }

    /// Write now if anything changed; a failed write is logged once per change.
    pub fn publish(&mut self) {
        if let Some(j) = &self.join {
            if let Ok(v) = j.lock() {
                self.status.join = Some(v.clone());
            }
        }
        let text = match serde_json::to_string_pretty(&self.status) {
            Ok(t) => t,
            Err(e) => {
                crate::error!("failed to encode the status: {e}");
                return;
            }
        };
        if text == self.last {
            return;
        }
        if let Err(e) = write_atomic(&self.path, text.as_bytes()) {
            crate::warn!("failed to write {}: {e}", self.path.display());
        }
        self.last = text;
    }
}

impl Observer for StatusFile {
    fn changed(&mut self, sup: &Supervisor, now: Millis) {
        let phase = sup.phase();
        // A boot that failed runs the loop with no services: that is idle, not running.
        self.status.phase = Some(if self.status.error.is_some() && phase == Phase::Running {
            Phase::Idle
        } else {
            phase
        });
        self.status.services = sup.status();
        let services = &self.status.services;
        let b = &mut self.status.boot;
        if !services.is_empty() {
            if b.all_spawned_ms.is_none()
                && services.iter().all(|s| s.pid.is_some() || s.restarts > 0)
            {
                b.all_spawned_ms = Some(now);
            }
            if b.all_ready_ms.is_none() && services.iter().all(|s| s.ready) {
                b.all_ready_ms = Some(now);
                crate::info!("all services ready {now} ms after exec");
            }
        }
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/status.json");
        write_atomic(&p, b"{\"a\":1}").unwrap();
        write_atomic(&p, b"{\"a\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":2}\n");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
