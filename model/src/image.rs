//! What every image carries under `/etc/haimg/`: the contract between
//! `haimg build` (which writes it) and `haimg-init` (which reads it at boot).
//!
//! ```text
//! /sbin/init                      haimg-init (static)
//! /etc/haimg/role                 "lb\n" | "mongo\n" | "webapp\n"
//! /etc/haimg/plan.json            the cluster spec (RawSpec as JSON), validated again at boot
//! /etc/haimg/image.json           ImageInfo: role, version, input hash
//! /etc/haimg/templates/<name>     the role's boot-time templates (roles/<role>/templates)
//! ```
//!
//! The tarball's own sha256 cannot be inside the tarball; the image is named by
//! the hash of every build input instead (`input_hash`), which is also the
//! build cache key. Deploy tags carry both.

use serde::{Deserialize, Serialize};

use crate::Role;

pub const ETC_DIR: &str = "/etc/haimg";
pub const ROLE_FILE: &str = "/etc/haimg/role";
pub const PLAN_FILE: &str = "/etc/haimg/plan.json";
pub const IMAGE_FILE: &str = "/etc/haimg/image.json";
pub const TEMPLATES_DIR: &str = "/etc/haimg/templates";
/// Where the init reports its state at run time.
pub const STATUS_FILE: &str = "/run/haimg/status.json";
/// keepalived's VRRP state (`MASTER`, `BACKUP`, `FAULT`), written by its
/// notify scripts through `haimg-init vrrp-state`; nginx serves it at
/// [`VRRP_STATE_URL`] for the rollout's lb gate.
pub const VRRP_STATE_FILE: &str = "/run/haimg/keepalived/state";
pub const VRRP_STATE_URL: &str = "/haimg/vrrp-state";

/// The unprivileged user the web app (PM2 and Node) runs as in webapp
/// images. The build adds it with these fixed ids (reproducible), and the
/// init falls back to the same ids when /etc/passwd lacks it, so the app never
/// runs as root. Port 3000 is above 1024: no capability is needed.
pub const WEBAPP_USER: &str = "webapp";
pub const WEBAPP_UID: u32 = 990;
pub const WEBAPP_GID: u32 = 990;

/// Identity of a built image, baked at `/etc/haimg/image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    pub role: String,
    pub version: String,
    /// sha256 (hex) over every input of the build: lock, recipe, templates, init, app.
    pub input_hash: String,
    /// SOURCE_DATE_EPOCH the image was built with.
    pub source_date_epoch: u64,
}

impl ImageInfo {
    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }

    /// The first 12 hex digits, as shown in tags and `/api/health`. The file
    /// is read at boot: a hash that is not hex comes back as its first 12
    /// characters (never a slice inside a character).
    pub fn short_hash(&self) -> &str {
        let h = &self.input_hash;
        h.char_indices()
            .nth(12)
            .map_or(h.as_str(), |(i, _)| &h[..i])
    }
}

/// Variables PID 1 finds in its environment when the target can set one
/// (Proxmox >= 9.1 `env`, and the local backend). Identity only, never secrets;
/// on older Proxmox the init reads the same facts from the hostname and
/// `/etc/network/interfaces`.
pub mod env {
    /// `lb` | `mongo` | `webapp`
    pub const ROLE: &str = "HAIMG_ROLE";
    /// The member's slot, e.g. `nginx1`.
    pub const SLOT: &str = "HAIMG_SLOT";
    /// eth0's address in CIDR form, e.g. `192.168.30.100/24`.
    pub const IP: &str = "HAIMG_IP";
    /// The default gateway.
    pub const GATEWAY: &str = "HAIMG_GATEWAY";
}

/// Secrets PID 1 finds in its environment, from the deploy host's secrets
/// store (`haimg secrets`): each role gets only its own. The init writes them
/// where the services need them and passes none on to a service's environment.
pub mod secret_env {
    /// mongo: the replica set's internal-auth keyfile (base64).
    pub const MONGO_KEY: &str = "HAIMG_MONGO_KEY";
    /// mongo: the passwords of the users the init creates on the primary.
    pub const MONGO_ADMIN_PASSWORD: &str = "HAIMG_MONGO_ADMIN_PASSWORD";
    pub const MONGO_APP_PASSWORD: &str = "HAIMG_MONGO_APP_PASSWORD";
    pub const MONGO_MONITOR_PASSWORD: &str = "HAIMG_MONGO_MONITOR_PASSWORD";
    /// webapp: the app user's name and password, for `MONGODB_URI`.
    pub const DB_USER: &str = "HAIMG_DB_USER";
    pub const DB_PASSWORD: &str = "HAIMG_DB_PASSWORD";
    /// webapp: Next.js' server-actions key (`NEXT_SERVER_ACTIONS_ENCRYPTION_KEY`).
    pub const NEXT_ACTIONS_KEY: &str = "HAIMG_NEXT_ACTIONS_KEY";
    /// lb: keepalived's `auth_pass`.
    pub const VRRP_PASS: &str = "HAIMG_VRRP_PASS";
}

/// The MongoDB users the init creates (all in the `admin` database).
pub mod mongo_users {
    /// `root`: only for people, never used by haimg after the setup.
    pub const ADMIN: &str = "haimg-admin";
    /// `readWrite` on the spec's database: the web app.
    pub const APP: &str = "app";
    /// `clusterMonitor` plus [`STEPDOWN_ROLE`]: the rollout's health gates
    /// (`replSetGetStatus`, `replSetStepDown`).
    pub const MONITOR: &str = "haimg-monitor";
    /// A role with the one action `replSetStepDown` needs
    /// (`replSetStateChange` on the cluster), which `clusterMonitor` lacks.
    pub const STEPDOWN_ROLE: &str = "haimg-stepdown";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hash_of_any_text() {
        let info = |h: &str| ImageInfo {
            role: "lb".into(),
            version: "1".into(),
            input_hash: h.into(),
            source_date_epoch: 0,
        };
        assert_eq!(info("0123456789abcdef").short_hash(), "0123456789ab");
        assert_eq!(info("01234").short_hash(), "01234");
        assert_eq!(info("ééééééééééééé").short_hash(), "éééééééééééé");
        assert_eq!(info("0123456789aé").short_hash(), "0123456789aé");
        assert_eq!(info("").short_hash(), "");
    }
}
