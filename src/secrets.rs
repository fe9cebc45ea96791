//! The per-cluster secrets store on the deploy host.
//!
//! A directory per cluster, `<root>/<cluster>/` (root: `$HAIMG_SECRETS_DIR`,
//! else `$XDG_CONFIG_HOME/haimg/secrets`, else `~/.config/haimg/secrets`),
//! mode 0700, one file per secret, mode 0600, holding only the value. The
//! first deploy generates what is missing from the kernel's random source;
//! `haimg secrets rotate NAME` replaces one value. Nothing here prints a
//! value: [`Secrets`]' `Debug` shows names only, and what `haimg secrets`
//! lists is the name, the age (the file's mtime) and a fingerprint
//! (SHA-256 of a label and the value, 12 hex digits; every value has at
//! least 47 bits from the kernel, so the fingerprint does not help guessing
//! it beyond what the length of a fingerprint allows).
//!
//! Invariants: a store whose directory or a file is readable or writable by
//! anyone but its owner is refused, never silently fixed (someone else may
//! have read it); a file is written to a temporary name in the same
//! directory and renamed, so a crash leaves the old value or the new one.
//! What a role receives ([`Secrets::env_for`]) is only what its services
//! need, and its fingerprint ([`Secrets::fingerprint_for`]) changes exactly
//! when one of those values does: that is what puts a rotation into the
//! member's desired state, and so into a rollout.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use haimg_model::image::{mongo_users, secret_env};
use haimg_model::Role;
use sha2::{Digest, Sha256};

pub const ROOT_ENV: &str = "HAIMG_SECRETS_DIR";

/// Every secret a cluster has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Name {
    MongoKeyfile,
    MongoAdminPassword,
    MongoAppPassword,
    MongoMonitorPassword,
    VrrpPassword,
    NextActionsKey,
}

impl Name {
    pub const ALL: [Name; 6] = [
        Name::MongoKeyfile,
        Name::MongoAdminPassword,
        Name::MongoAppPassword,
        Name::MongoMonitorPassword,
        Name::VrrpPassword,
        Name::NextActionsKey,
    ];

    /// The file name in the store and the name `haimg secrets` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Name::MongoKeyfile => "mongo-keyfile",
            Name::MongoAdminPassword => "mongo-admin-password",
            Name::MongoAppPassword => "mongo-app-password",
            Name::MongoMonitorPassword => "mongo-monitor-password",
            Name::VrrpPassword => "vrrp-password",
            Name::NextActionsKey => "next-server-actions-key",
        }
    }

    pub fn parse(s: &str) -> Option<Name> {
        Name::ALL.into_iter().find(|n| n.as_str() == s)
    }

    /// The roles whose members receive it.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Name::MongoKeyfile | Name::MongoAdminPassword | Name::MongoMonitorPassword => {
                &[Role::Mongo]
            }
            Name::MongoAppPassword => &[Role::Mongo, Role::Webapp],
            Name::VrrpPassword => &[Role::Lb],
            Name::NextActionsKey => &[Role::Webapp],
        }
    }

    /// A fresh value from `random` bytes.
    fn generate(self, random: &mut dyn FnMut(&mut [u8])) -> String {
        match self {
            // mongod: 6 to 1024 base64 characters; 48 bytes = 64 characters, no padding.
            Name::MongoKeyfile => b64(&bytes(random, 48), STD),
            // Printable ASCII for SCRAM without SASLprep, no `%`/`@`/`:` trouble in a URI.
            Name::MongoAdminPassword | Name::MongoAppPassword | Name::MongoMonitorPassword => {
                b64(&bytes(random, 24), URL)
            }
            // keepalived: at most 8 characters (VRRPv2 PASS); letters and digits.
            Name::VrrpPassword => alnum(random, 8),
            // Next.js: base64 of a 32-byte AES-GCM key.
            Name::NextActionsKey => b64(&bytes(random, 32), STD),
        }
    }

    /// Whether `v` has the shape [`Name::generate`] gives (a file edited by
    /// hand into something a service cannot take is refused at deploy).
    fn valid(self, v: &str) -> bool {
        let set = |extra: &str| {
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        };
        match self {
            Name::MongoKeyfile => (6..=1024).contains(&v.len()) && set("+/="),
            Name::MongoAdminPassword | Name::MongoAppPassword | Name::MongoMonitorPassword => {
                (16..=128).contains(&v.len()) && set("-_")
            }
            Name::VrrpPassword => (1..=8).contains(&v.len()) && set(""),
            Name::NextActionsKey => matches!(v.len(), 24 | 32 | 44) && set("+/="),
        }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const STD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn bytes(random: &mut dyn FnMut(&mut [u8]), n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    random(&mut b);
    b
}

fn b64(b: &[u8], engine: base64::engine::GeneralPurpose) -> String {
    use base64::Engine as _;
    engine.encode(b)
}

/// `n` letters and digits, uniform (rejection sampling).
fn alnum(random: &mut dyn FnMut(&mut [u8]), n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::new();
    while out.len() < n {
        let mut b = [0u8; 1];
        random(&mut b);
        // 248 = 4 * 62: the bytes above are dropped so every character is equally likely.
        if b[0] < 248 {
            out.push(A[usize::from(b[0]) % 62] as char);
        }
    }
    out
}

fn os_random(buf: &mut [u8]) {
    // Invariant: /dev/urandom exists on every Linux host haimg runs on; a
    // failure here is a broken host, and a predictable secret is worse than a stop.
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("reading /dev/urandom");
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("secrets store {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("secrets store {path} is mode {mode:o} (owner uid {uid}); it must be owned by uid {me} and not reachable by group or others (0700 for the directory, 0600 for files). Someone else may have read it: check, then `chmod` it or rotate every secret")]
    Exposed {
        path: PathBuf,
        mode: u32,
        uid: u32,
        me: u32,
    },
    #[error("secrets store {path}: the value does not have the shape of a {name} (edited by hand?); `haimg secrets rotate {name}` makes a new one")]
    Malformed { path: PathBuf, name: Name },
    #[error("no secret named {0:?}; the names are: {names}", names = Name::ALL.map(Name::as_str).join(", "))]
    UnknownName(String),
    #[error(
        "no secrets store for cluster {cluster} at {path}; the first `haimg deploy` makes one"
    )]
    Missing { cluster: String, path: PathBuf },
}

/// One cluster's store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    cluster: String,
}

/// What `haimg secrets` shows of one secret.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub name: Name,
    /// Seconds since the value was written.
    pub age_s: u64,
    pub fingerprint: String,
    pub roles: Vec<Role>,
}

/// The values of a cluster's store. `Debug` shows the names only.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeMap<Name, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

pub fn fingerprint(name: Name, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"haimg-secret-fingerprint/");
    h.update(name.as_str().as_bytes());
    h.update(b"/");
    h.update(value.as_bytes());
    h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Secrets {
    /// Values built from `random` (tests; [`Store::ensure`] uses the kernel's).
    pub fn generate_with(random: &mut dyn FnMut(&mut [u8])) -> Secrets {
        Secrets {
            values: Name::ALL
                .map(|n| (n, n.generate(random)))
                .into_iter()
                .collect(),
        }
    }

    /// Fresh values from the kernel, kept nowhere (a dry run's stand-ins).
    pub fn generate() -> Secrets {
        Secrets::generate_with(&mut os_random)
    }

    pub fn get(&self, name: Name) -> &str {
        // Invariant: every constructor fills every name.
        self.values.get(&name).map(String::as_str).unwrap_or("")
    }

    /// Every value, for the template scan (never printed).
    pub fn values(&self) -> impl Iterator<Item = (Name, &str)> {
        self.values.iter().map(|(n, v)| (*n, v.as_str()))
    }

    /// PID 1's secret environment for a member of `role`: only what its
    /// services need.
    pub fn env_for(&self, role: Role) -> Vec<(String, String)> {
        let v = |n| self.get(n).to_string();
        match role {
            Role::Lb => vec![(secret_env::VRRP_PASS.into(), v(Name::VrrpPassword))],
            Role::Mongo => vec![
                (secret_env::MONGO_KEY.into(), v(Name::MongoKeyfile)),
                (
                    secret_env::MONGO_ADMIN_PASSWORD.into(),
                    v(Name::MongoAdminPassword),
                ),
                (
                    secret_env::MONGO_APP_PASSWORD.into(),
                    v(Name::MongoAppPassword),
                ),
                (
                    secret_env::MONGO_MONITOR_PASSWORD.into(),
                    v(Name::MongoMonitorPassword),
                ),
            ],
            Role::Webapp => vec![
                (secret_env::DB_USER.into(), mongo_users::APP.into()),
                (secret_env::DB_PASSWORD.into(), v(Name::MongoAppPassword)),
                (secret_env::NEXT_ACTIONS_KEY.into(), v(Name::NextActionsKey)),
            ],
        }
    }

    /// 8 hex digits over the values `role` receives: a member's desired state.
    pub fn fingerprint_for(&self, role: Role) -> String {
        let mut h = Sha256::new();
        for (k, v) in self.env_for(role) {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        h.finalize()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// `(name, value)` of every secret, for the template scan.
    pub fn needles(&self) -> Vec<(String, Vec<u8>)> {
        self.values()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    /// The monitor user's credentials (the rollout's mongo gates).
    pub fn monitor(&self) -> (String, String) {
        (
            mongo_users::MONITOR.to_string(),
            self.get(Name::MongoMonitorPassword).to_string(),
        )
    }
}

impl Store {
    /// `$HAIMG_SECRETS_DIR`, else `$XDG_CONFIG_HOME/haimg/secrets`, else `~/.config/haimg/secrets`.
    pub fn default_root() -> PathBuf {
        if let Some(d) = std::env::var_os(ROOT_ENV).filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("haimg/secrets");
        }
        let home = std::env::var_os("HOME")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(".config/haimg/secrets")
    }

    pub fn open(root: &Path, cluster: &str) -> Store {
        Store {
            dir: root.join(cluster),
            cluster: cluster.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
        move |error| StoreError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    fn check_private(path: &Path) -> Result<std::fs::Metadata, StoreError> {
        let md = std::fs::symlink_metadata(path).map_err(Self::io(path))?;
        let me = nix_uid();
        let mode = md.mode() & 0o7777;
        if md.uid() != me || mode & 0o077 != 0 || md.file_type().is_symlink() {
            return Err(StoreError::Exposed {
                path: path.to_path_buf(),
                mode,
                uid: md.uid(),
                me,
            });
        }
        Ok(md)
    }

    fn file(&self, name: Name) -> PathBuf {
        self.dir.join(name.as_str())
    }

    fn write(&self, name: Name, value: &str) -> Result<(), StoreError> {
        let path = self.file(name);
        let tmp = self.dir.join(format!(".{}.new", name.as_str()));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(Self::io(&tmp))?;
        f.write_all(value.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(Self::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Self::io(&path))
    }

    fn read(&self, name: Name) -> Result<Option<(String, SystemTime)>, StoreError> {
        let path = self.file(name);
        if !path.exists() {
            return Ok(None);
        }
        let md = Self::check_private(&path)?;
        let v = std::fs::read_to_string(&path).map_err(Self::io(&path))?;
        let v = v.trim_end_matches('\n').to_string();
        if !name.valid(&v) {
            return Err(StoreError::Malformed { path, name });
        }
        let t = md.modified().map_err(Self::io(&path))?;
        Ok(Some((v, t)))
    }

    /// Create the directory (0700) if missing, else check it.
    fn ensure_dir(&self) -> Result<(), StoreError> {
        if !self.dir.exists() {
            if let Some(parent) = self.dir.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(Self::io(parent))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&self.dir)
                .map_err(Self::io(&self.dir))?;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(Self::io(&self.dir))?;
        }
        Self::check_private(&self.dir).map(|_| ())
    }

    /// Every secret, generating the missing ones (the first deploy makes them all).
    pub fn ensure(&self) -> Result<Secrets, StoreError> {
        self.ensure_with(&mut os_random)
    }

    pub fn ensure_with(&self, random: &mut dyn FnMut(&mut [u8])) -> Result<Secrets, StoreError> {
        self.ensure_dir()?;
        let mut values = BTreeMap::new();
        for n in Name::ALL {
            let v = match self.read(n)? {
                Some((v, _)) => v,
                None => {
                    let v = n.generate(random);
                    self.write(n, &v)?;
                    v
                }
            };
            values.insert(n, v);
        }
        Ok(Secrets { values })
    }

    /// The values, if the store exists and is whole (nothing is generated).
    pub fn load(&self) -> Result<Secrets, StoreError> {
        let missing = || StoreError::Missing {
            cluster: self.cluster.clone(),
            path: self.dir.clone(),
        };
        if !self.dir.exists() {
            return Err(missing());
        }
        Self::check_private(&self.dir)?;
        let mut values = BTreeMap::new();
        for n in Name::ALL {
            let (v, _) = self.read(n)?.ok_or_else(missing)?;
            values.insert(n, v);
        }
        Ok(Secrets { values })
    }

    /// Names, ages and fingerprints of what exists.
    pub fn list(&self) -> Result<Vec<Entry>, StoreError> {
        if !self.dir.exists() {
            return Err(StoreError::Missing {
                cluster: self.cluster.clone(),
                path: self.dir.clone(),
            });
        }
        Self::check_private(&self.dir)?;
        let now = SystemTime::now();
        let mut out = Vec::new();
        for n in Name::ALL {
            if let Some((v, t)) = self.read(n)? {
                out.push(Entry {
                    name: n,
                    age_s: now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0),
                    fingerprint: fingerprint(n, &v),
                    roles: n.roles().to_vec(),
                });
            }
        }
        Ok(out)
    }

    /// A new value for `name`; the next deploy rolls the members that receive it.
    pub fn rotate(&self, name: &str) -> Result<Entry, StoreError> {
        self.rotate_with(name, &mut os_random)
    }

    pub fn rotate_with(
        &self,
        name: &str,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Entry, StoreError> {
        let n = Name::parse(name).ok_or_else(|| StoreError::UnknownName(name.to_string()))?;
        self.ensure_dir()?;
        let v = n.generate(random);
        self.write(n, &v)?;
        Ok(Entry {
            name: n,
            age_s: 0,
            fingerprint: fingerprint(n, &v),
            roles: n.roles().to_vec(),
        })
    }
}

fn nix_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic "random" source for tests: a counter.
    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |b: &mut [u8]| {
            for x in b {
                *x = n;
                n = n.wrapping_add(97);
            }
        }
    }

    #[test]
    fn generated_values_have_the_shapes_services_take() {
        let s = Secrets::generate_with(&mut counter());
        for (n, v) in s.values() {
            assert!(n.valid(v), "{n}: {v}");
        }
        assert_eq!(s.get(Name::MongoKeyfile).len(), 64);
        assert_eq!(s.get(Name::VrrpPassword).len(), 8);
        assert_eq!(s.get(Name::NextActionsKey).len(), 44);
        assert_eq!(s.get(Name::MongoAppPassword).len(), 32);
    }

    #[test]
    fn debug_never_shows_a_value() {
        let s = Secrets::generate_with(&mut counter());
        let d = format!("{s:?}");
        for (_, v) in s.values() {
            assert!(!d.contains(v), "{d}");
        }
        assert!(d.contains("MongoKeyfile"), "{d}");
    }

    #[test]
    fn each_role_gets_only_its_own() {
        let s = Secrets::generate_with(&mut counter());
        let keys = |r| {
            s.env_for(r)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(keys(Role::Lb), "HAIMG_VRRP_PASS");
        assert_eq!(
            keys(Role::Mongo),
            "HAIMG_MONGO_KEY,HAIMG_MONGO_ADMIN_PASSWORD,HAIMG_MONGO_APP_PASSWORD,HAIMG_MONGO_MONITOR_PASSWORD"
        );
        assert_eq!(
            keys(Role::Webapp),
            "HAIMG_DB_USER,HAIMG_DB_PASSWORD,HAIMG_NEXT_ACTIONS_KEY"
        );
        let lb = s.env_for(Role::Lb);
        assert!(!lb.iter().any(|(_, v)| v == s.get(Name::MongoKeyfile)));
    }

    #[test]
    fn store_generates_once_lists_and_rotates() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "c1");
        assert!(matches!(store.load(), Err(StoreError::Missing { .. })));
        let a = store.ensure().unwrap();
        let dir_mode = std::fs::metadata(store.dir()).unwrap().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        for n in Name::ALL {
            let m = std::fs::metadata(store.dir().join(n.as_str()))
                .unwrap()
                .mode()
                & 0o777;
            assert_eq!(m, 0o600, "{n}");
        }
        // A second deploy reads the same values.
        assert_eq!(store.ensure().unwrap(), a);
        assert_eq!(store.load().unwrap(), a);
        let list = store.list().unwrap();
        assert_eq!(list.len(), 6);
        let json = serde_json::to_string(&list).unwrap();
        for (_, v) in a.values() {
            assert!(!json.contains(v));
        }
        // Rotating the VRRP password changes the lb's fingerprint only.
        let before: Vec<String> = Role::ALL.iter().map(|r| a.fingerprint_for(*r)).collect();
        let e = store.rotate("vrrp-password").unwrap();
        let b = store.load().unwrap();
        assert_ne!(b.get(Name::VrrpPassword), a.get(Name::VrrpPassword));
        assert_eq!(
            e.fingerprint,
            fingerprint(Name::VrrpPassword, b.get(Name::VrrpPassword))
        );
        let after: Vec<String> = Role::ALL.iter().map(|r| b.fingerprint_for(*r)).collect();
        for (i, r) in Role::ALL.iter().enumerate() {
            assert_eq!(before[i] != after[i], *r == Role::Lb, "{r}");
        }
        // The app password reaches mongo and webapp.
        store.rotate("mongo-app-password").unwrap();
        let c = store.load().unwrap();
        assert_ne!(
            c.fingerprint_for(Role::Mongo),
            b.fingerprint_for(Role::Mongo)
        );
        assert_ne!(
            c.fingerprint_for(Role::Webapp),
            b.fingerprint_for(Role::Webapp)
        );
        assert_eq!(c.fingerprint_for(Role::Lb), b.fingerprint_for(Role::Lb));
    }

    #[test]
    fn an_exposed_or_edited_store_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "c1");
        store.ensure().unwrap();
        let f = store.dir().join("vrrp-password");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("vrrp-password is mode 644"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&f, "has space").unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(
            e.ends_with("`haimg secrets rotate vrrp-password` makes a new one"),
            "{e}"
        );
        assert!(!e.contains("has space"));
        std::fs::set_permissions(store.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(store.load(), Err(StoreError::Exposed { .. })));
        let e = store.rotate("nope").unwrap_err().to_string();
        insta::assert_snapshot!(e, @r#"no secret named "nope"; the names are: mongo-keyfile, mongo-admin-password, mongo-app-password, mongo-monitor-password, vrrp-password, next-server-actions-key"#);
    }
}

/// The template scan (`haimg secrets scan`, run by `make test` over every
/// built template): no store value and no private key or credential in any
/// file of a `.tar.zst` template. A hit names the template, the file and what
/// was found, never the value.
pub mod scan {
    use std::io::Read;
    use std::path::{Path, PathBuf};

    use memchr::memmem;

    /// What matched.
    #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
    pub struct Hit {
        pub template: PathBuf,
        pub file: String,
        pub what: String,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("failed to read template {path}: {error}")]
    pub struct ScanError {
        pub path: PathBuf,
        pub error: std::io::Error,
    }

    /// Fixed strings that start a credential, and how many `[A-Za-z0-9_-]`
    /// bytes must follow for it to be one (the vendors' documented formats).
    const TOKENS: [(&str, usize, &str); 8] = [
        ("ghp_", 36, "a GitHub token"),
        ("github_pat_", 40, "a GitHub token"),
        ("glpat-", 20, "a GitLab token"),
        ("xoxb-", 20, "a Slack token"),
        ("xoxp-", 20, "a Slack token"),
        ("sk_live_", 20, "a Stripe key"),
        ("AKIA", 16, "an AWS access key id"),
        ("PVEAPIToken=", 20, "a Proxmox API token"),
    ];

    fn token_char(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
    }

    /// A PEM private key: the header, a line break, then a base64 line (a
    /// header inside a string literal of a PEM parser is not a key).
    fn private_key(data: &[u8]) -> bool {
        memmem::find_iter(data, b"PRIVATE KEY-----").any(|i| {
            let rest = &data[i + 16..];
            let rest = rest.strip_prefix(b"\r").unwrap_or(rest);
            rest.strip_prefix(b"\n").is_some_and(|body| {
                body.iter()
                    .take(40)
                    .filter(|b| b.is_ascii_alphanumeric() || **b == b'+' || **b == b'/')
                    .count()
                    == 40
            })
        })
    }

    fn token(data: &[u8]) -> Option<&'static str> {
        TOKENS.iter().find_map(|(prefix, len, what)| {
            memmem::find_iter(data, prefix.as_bytes())
                .any(|i| {
                    // A token starts a word, and its body has the length the vendor uses.
                    let starts = i == 0 || !token_char(data[i - 1]);
                    let body = &data[i + prefix.len()..];
                    let n = body.iter().take_while(|b| token_char(**b)).count();
                    let example = body[..n].ends_with(b"EXAMPLE");
                    starts && n >= *len && !example
                })
                .then_some(*what)
        })
    }

    /// What is wrong with one file's bytes; `needles` are the store's values, by name.
    /// The store's values are looked for everywhere; the patterns only in
    /// files that are not ELF executables or libraries: compiled code and its
    /// data hold such byte sequences without holding a credential (seen in
    /// Debian's `libgnutls` (a test key), Node's binary (`AKIA…`) and
    /// haimg-init itself (the spec check's own patterns)).
    pub fn scan_bytes(data: &[u8], needles: &[(String, Vec<u8>)]) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v) in needles {
            if !v.is_empty() && memmem::find(data, v).is_some() {
                out.push(format!("the value of secret {name}"));
            }
        }
        if data.starts_with(b"\x7fELF") {
            return out;
        }
        if private_key(data) {
            out.push("a PEM private key".into());
        }
        if let Some(what) = token(data) {
            out.push(what.into());
        }
        out
    }

    /// Every hit in the template at `path` (a `.tar.zst`).
    pub fn scan_template(
        path: &Path,
        needles: &[(String, Vec<u8>)],
    ) -> Result<Vec<Hit>, ScanError> {
        let err = |error| ScanError {
            path: path.to_path_buf(),
            error,
        };
        let f = std::fs::File::open(path).map_err(err)?;
        let dec = zstd::stream::read::Decoder::new(f).map_err(err)?;
        let mut ar = tar::Archive::new(dec);
        let mut hits = Vec::new();
        for e in ar.entries().map_err(err)? {
            let mut e = e.map_err(err)?;
            let name = e.path().map_err(err)?.to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).map_err(err)?;
            // A symlink's target and a name can carry a value too.
            if let Ok(Some(t)) = e.link_name() {
                data.extend_from_slice(t.to_string_lossy().as_bytes());
            }
            data.extend_from_slice(name.as_bytes());
            for what in scan_bytes(&data, needles) {
                hits.push(Hit {
                    template: path.to_path_buf(),
                    file: name.clone(),
                    what,
                });
            }
        }
        Ok(hits)
    }

    /// The `.tar.zst` files in `dir`, sorted.
    pub fn templates_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
            .collect();
        out.sort();
        Ok(out)
    }
}
