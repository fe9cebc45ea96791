//! Response shapes of the Proxmox API, deserialized leniently.
//!
//! Perl scalars do not keep their JSON type: numbers arrive as numbers or as
//! numeric strings depending on version and code path, booleans as `0`/`1`,
//! `"0"`/`"1"` or `true`/`false`. Every numeric or boolean field here goes
//! through [`num`], [`opt_num`] or [`flag`], so none of that fails a deploy.
//! Unknown fields are ignored: Proxmox adds fields between releases.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

fn value_to_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| *f >= 0.0)
                    .map(|f| f as u64)
            })
        }
        Value::Bool(b) => Some(u64::from(*b)),
        _ => None,
    }
}

/// A non-negative integer given as number or numeric string.
pub fn num<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    value_to_u64(&v).ok_or_else(|| serde::de::Error::custom(format!("expected a number, got {v}")))
}

/// Like [`num`], but `null` or a missing field is `None`.
pub fn opt_num<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => value_to_u64(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a number, got {v}"))),
    }
}

/// A boolean given as `true`/`false`, `0`/`1` or `"0"`/`"1"`; `null` is false.
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(ref x) => match value_to_u64(x) {
            Some(n) => Ok(n != 0),
            None => match x.as_str().map(str::trim) {
                Some("true") | Some("yes") | Some("on") => Ok(true),
                Some("false") | Some("no") | Some("off") | Some("") => Ok(false),
                _ => Err(serde::de::Error::custom(format!(
                    "expected a boolean, got {x}"
                ))),
            },
        },
    }
}

/// `GET /version`.
#[derive(Debug, Clone, Deserialize)]
pub struct VersionInfo {
    /// `x.y`, the point release.
    pub release: String,
    pub version: String,
}

impl VersionInfo {
    /// `(major, minor)` from `release`, or from `version` when `release` is odd.
    pub fn release_pair(&self) -> Option<(u32, u32)> {
        let parse = |s: &str| {
            let mut it = s.split(['.', '-', '~']);
            let a = it.next()?.trim().parse().ok()?;
            let b = it.next().and_then(|x| x.trim().parse().ok()).unwrap_or(0);
            Some((a, b))
        };
        parse(&self.release).or_else(|| parse(&self.version))
    }

    /// PVE 9.1 added container `env`, `entrypoint` and `net[n].host-managed`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.release_pair().is_some_and(|v| v >= (major, minor))
    }
}

/// One entry of `GET /cluster/resources?type=vm`.
#[derive(Debug, Clone, Deserialize)]
pub struct Resource {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "opt_num")]
    pub vmid: Option<u64>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    pub template: bool,
}

/// `GET /nodes/{node}/storage/{storage}/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageStatus {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, deserialize_with = "flag")]
    pub shared: bool,
    #[serde(default, deserialize_with = "opt_num")]
    pub avail: Option<u64>,
}

/// One entry of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentItem {
    pub volid: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "num")]
    pub size: u64,
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskStatus {
    pub status: String,
    #[serde(default)]
    pub exitstatus: Option<String>,
}

impl TaskStatus {
    pub fn running(&self) -> bool {
        self.status == "running"
    }

    /// Success is `OK` or `WARNINGS: n` (`PVE::UPID::read_status`).
    pub fn succeeded(&self) -> bool {
        matches!(self.exitstatus.as_deref(), Some(s) if s == "OK" || s.starts_with("WARNINGS: "))
    }
}

/// A string field that Perl may send as a number.
fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

/// One entry of `GET /nodes/{node}/tasks` (`pve-manager:PVE/API2/Tasks.pm`
/// `node_tasks`). A token's task has `user` and `tokenid` split
/// (`$convert_token_task`); an active task's `status` is `RUNNING`, a finished
/// one's is its exit status (`OK`, `WARNINGS: n`, the error text).
#[derive(Debug, Clone, Deserialize)]
pub struct TaskEntry {
    pub upid: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "opt_text")]
    pub id: Option<String>,
    #[serde(default)]
    pub user: String,
    #[serde(default, deserialize_with = "opt_text")]
    pub tokenid: Option<String>,
    #[serde(default, deserialize_with = "opt_num")]
    pub starttime: Option<u64>,
    #[serde(default, deserialize_with = "opt_text")]
    pub status: Option<String>,
}

impl TaskEntry {
    /// Still running (listed from the active tasks without an end status).
    pub fn running(&self) -> bool {
        self.status.as_deref().is_none_or(|s| s == "RUNNING")
    }

    /// Started by this token (`user@realm!tokenid`).
    pub fn by_token(&self, token_id: &str) -> bool {
        match (token_id.split_once('!'), &self.tokenid) {
            (Some((user, id)), Some(t)) => self.user == user && t == id,
            _ => false,
        }
    }

    /// `OK` or `WARNINGS: n`.
    pub fn succeeded(&self) -> bool {
        matches!(self.status.as_deref(), Some(s) if s == "OK" || s.starts_with("WARNINGS: "))
    }
}

/// One line of `GET /nodes/{node}/tasks/{upid}/log`.
#[derive(Debug, Clone, Deserialize)]
pub struct LogLine {
    #[serde(deserialize_with = "num")]
    pub n: u64,
    pub t: String,
}

/// `GET /nodes/{node}/lxc/{vmid}/status/current`.
#[derive(Debug, Clone, Deserialize)]
pub struct CtStatus {
    #[serde(default, deserialize_with = "opt_num")]
    pub vmid: Option<u64>,
    pub status: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default)]
    pub lock: Option<String>,
}

/// Whether a config value read back equals the value haimg sends, the way
/// Proxmox stores it: tags as a set (it sorts them), property strings such as
/// `net0` as a set of `key=value` (it writes its own key order, MACs in upper
/// case), and an unset option as its schema default.
pub fn same_setting(key: &str, have: &str, want: &str) -> bool {
    let lower_set = |v: Vec<String>| -> std::collections::BTreeSet<String> {
        v.into_iter().map(|t| t.to_ascii_lowercase()).collect()
    };
    match key {
        "tags" => lower_set(split_tags(have)) == lower_set(split_tags(want)),
        // A volume property string (`local-lvm:vm-100-disk-0,size=4G`)
        // against the wanted `size=4G`: only the size is compared.
        "rootfs" => {
            let size = |s: &str| {
                s.split(',')
                    .find_map(|p| p.strip_prefix("size="))
                    .map(str::to_string)
            };
            size(have) == size(want)
        }
        k if k.starts_with("net") => {
            let parts = |s: &str| lower_set(s.split(',').map(str::to_string).collect());
            parts(have) == parts(want)
        }
        _ => {
            let default = match key {
                "onboot" => "0",
                "cores" => "1",
                "memory" => "512",
                _ => "",
            };
            let h = if have.is_empty() { default } else { have };
            h == want
        }
    }
}

/// Split a Proxmox tag list (`;`, `,` or whitespace separated).
pub fn split_tags(s: &str) -> Vec<String> {
    s.split([';', ',', ' ', '\t', '\n'])
        .filter(|t| !t.is_empty())
        .map(|t| t.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_compare_the_way_proxmox_stores_them() {
        assert!(same_setting("tags", "b;a;C", "a;c;b"));
        assert!(!same_setting("tags", "a;b;extra", "a;b"));
        assert!(same_setting(
            "net0",
            "name=eth0,hwaddr=02:AA:BB:CC:DD:EE,firewall=1",
            "firewall=1,name=eth0,hwaddr=02:aa:bb:cc:dd:ee"
        ));
        assert!(!same_setting("net0", "name=eth0", "name=eth0,firewall=1"));
        assert!(same_setting(
            "rootfs",
            "local-lvm:vm-100-disk-0,size=4G",
            "size=4G"
        ));
        assert!(!same_setting(
            "rootfs",
            "local-lvm:vm-100-disk-0,size=6G",
            "size=4G"
        ));
        // Unset options are their schema defaults.
        assert!(same_setting("onboot", "", "0"));
        assert!(!same_setting("onboot", "", "1"));
        assert!(same_setting("cores", "", "1"));
        assert!(!same_setting("memory", "2048", "1024"));
    }

    #[test]
    fn numbers_and_flags_arrive_in_any_shape() {
        let r: Resource = serde_json::from_value(serde_json::json!({
            "type": "lxc", "vmid": "103", "template": "0", "tags": "haimg;role-mongo"
        }))
        .unwrap();
        assert_eq!(r.vmid, Some(103));
        assert!(!r.template);
        let r: Resource =
            serde_json::from_value(serde_json::json!({"type": "lxc", "vmid": 104, "template": 1}))
                .unwrap();
        assert_eq!(r.vmid, Some(104));
        assert!(r.template);
        let s: StorageStatus = serde_json::from_value(
            serde_json::json!({"type": "nfs", "content": "vztmpl,iso", "shared": "1", "avail": "12.0"}),
        )
        .unwrap();
        assert!(s.shared);
        assert_eq!(s.avail, Some(12));
        let s: StorageStatus =
            serde_json::from_value(serde_json::json!({"type": "dir", "shared": true})).unwrap();
        assert!(s.shared);
        let c: ContentItem = serde_json::from_value(
            serde_json::json!({"volid": "a:vztmpl/x.tar.zst", "size": "77"}),
        )
        .unwrap();
        assert_eq!(c.size, 77);
        let bad = serde_json::from_value::<ContentItem>(
            serde_json::json!({"volid": "x", "size": "lots"}),
        );
        assert!(bad.unwrap_err().to_string().contains("expected a number"));
    }

    #[test]
    fn version_gates() {
        let v = |r: &str| VersionInfo {
            release: r.into(),
            version: format!("{r}.2"),
        };
        assert!(v("9.1").at_least(9, 1));
        assert!(v("9.2").at_least(9, 1));
        assert!(v("10.0").at_least(9, 1));
        assert!(!v("9.0").at_least(9, 1));
        assert!(!v("8.4").at_least(9, 1));
    }

    #[test]
    fn task_success_rule() {
        let t = |s: &str, e: Option<&str>| TaskStatus {
            status: s.into(),
            exitstatus: e.map(Into::into),
        };
        assert!(t("stopped", Some("OK")).succeeded());
        assert!(t("stopped", Some("WARNINGS: 2")).succeeded());
        assert!(!t("stopped", Some("command 'lxc-start' failed")).succeeded());
        assert!(!t("stopped", Some("unexpected status")).succeeded());
        assert!(t("running", None).running());
    }

    #[test]
    fn task_entries_tell_whose_and_whether_done() {
        let e: TaskEntry = serde_json::from_value(serde_json::json!({
            "upid": "UPID:pve1:0000002A:00000007:68000000:vzcreate:101:root@pam!haimg:",
            "type": "vzcreate", "id": 101, "user": "root@pam", "tokenid": "haimg",
            "starttime": "1744000000", "status": "RUNNING"
        }))
        .unwrap();
        assert!(e.running() && e.by_token("root@pam!haimg"));
        assert_eq!(e.id.as_deref(), Some("101"));
        assert!(!e.by_token("root@pam!other") && !e.by_token("root@pam"));
        let admin: TaskEntry = serde_json::from_value(serde_json::json!({
            "upid": "x", "type": "vzcreate", "user": "root@pam", "status": "OK"
        }))
        .unwrap();
        assert!(!admin.running() && admin.succeeded() && !admin.by_token("root@pam!haimg"));
    }

    #[test]
    fn tag_lists_split_on_every_separator() {
        assert_eq!(split_tags("a;b,c d"), ["a", "b", "c", "d"]);
        assert!(split_tags("").is_empty());
    }
}
