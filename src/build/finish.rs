//! The last steps on a root filesystem before it is packed: bake the haimg
//! contract in, then normalize.
//!
//! [`bake`] writes `/sbin/init` (the static haimg-init, a regular file), and
//! under `/etc/haimg/` the role, the plan, the image identity and the role's
//! templates (see `haimg_model::image`), plus the files every image needs
//! (`/etc/hosts` with localhost, a neutral `/etc/hostname`, the recipe's apt
//! sources, an empty `/etc/machine-id`).
//!
//! [`normalize`] removes what must never ship: anything of the build host
//! (resolv.conf, mmdebstrap's apt/dpkg settings, the build CA), apt lists and
//! caches, logs, `*-old` backups, the ld.so aux cache, temp files, npm and
//! PM2 state in /root, documentation (copyright files stay), man and info
//! pages, translations beyond the recipe's `keep_locales`; and every setuid
//! and setgid bit except those in [`KEEP_SETID`] (none: see there). It never
//! follows a symlink out of the tree.
//!
//! [`add_user`] gives an image a system user with fixed ids (the web app's),
//! so the passwd, group and shadow files are the same in every build.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use haimg_model::image::ImageInfo;

#[derive(Debug, thiserror::Error)]
#[error("failed to {what} {path}: {error}")]
pub struct FinishError {
    pub what: &'static str,
    pub path: PathBuf,
    pub error: io::Error,
}

fn err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FinishError {
    let path = path.to_path_buf();
    move |error| FinishError { what, path, error }
}

/// Write `data` at `root/rel` with `mode`, creating parents (0755).
pub fn put(root: &Path, rel: &str, data: &[u8], mode: u32) -> Result<(), FinishError> {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        mkdirs(parent)?;
    }
    if p.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        std::fs::remove_file(&p).map_err(err("replace", &p))?;
    }
    std::fs::write(&p, data).map_err(err("write", &p))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).map_err(err("chmod", &p))
}

fn mkdirs(p: &Path) -> Result<(), FinishError> {
    if p.is_dir() {
        return Ok(());
    }
    if let Some(parent) = p.parent() {
        mkdirs(parent)?;
    }
    std::fs::create_dir(p).map_err(err("create", p))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(err("chmod", p))
}

/// What [`bake`] puts in.
pub struct Bake<'a> {
    pub init: &'a Path,
    pub info: &'a ImageInfo,
    pub plan_json: &'a [u8],
    /// `roles/<role>/templates` (may be absent).
    pub templates: &'a Path,
    /// `deb …` lines for `/etc/apt/sources.list`.
    pub apt_sources: &'a [String],
}

pub const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n";

pub fn bake(root: &Path, b: &Bake) -> Result<Vec<String>, FinishError> {
    let init = std::fs::read(b.init).map_err(err("read", b.init))?;
    put(root, "sbin/init", &init, 0o755)?;
    let role = &b.info.role;
    put(
        root,
        "etc/haimg/role",
        format!("{role}\n").as_bytes(),
        0o644,
    )?;
    put(root, "etc/haimg/plan.json", b.plan_json, 0o644)?;
    let mut info = serde_json::to_vec_pretty(b.info).unwrap_or_default();
    info.push(b'\n');
    put(root, "etc/haimg/image.json", &info, 0o644)?;
    mkdirs(&root.join("etc/haimg/templates"))?;
    let mut copied = Vec::new();
    if b.templates.is_dir() {
        copy_tree(b.templates, &root.join("etc/haimg/templates"), &mut copied)?;
    }
    put(root, "etc/hosts", HOSTS.as_bytes(), 0o644)?;
    put(root, "etc/hostname", b"localhost\n", 0o644)?;
    put(root, "etc/machine-id", b"", 0o444)?;
    let mut sources =
        String::from("# The sources this image was built from (apt is not used at run time).\n");
    for l in b.apt_sources {
        sources.push_str(l);
        sources.push('\n');
    }
    put(root, "etc/apt/sources.list", sources.as_bytes(), 0o644)?;
    Ok(copied)
}

/// Copy a tree of regular files and directories (templates); modes 0644/0755.
pub fn copy_tree(from: &Path, to: &Path, copied: &mut Vec<String>) -> Result<(), FinishError> {
    mkdirs(to)?;
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .map_err(err("read", from))?
        .collect::<Result<_, _>>()
        .map_err(err("read", from))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let src = e.path();
        let dst = to.join(e.file_name());
        let meta = std::fs::metadata(&src).map_err(err("read", &src))?;
        if meta.is_dir() {
            copy_tree(&src, &dst, copied)?;
        } else {
            let data = std::fs::read(&src).map_err(err("read", &src))?;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            std::fs::write(&dst, data).map_err(err("write", &dst))?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))
                .map_err(err("chmod", &dst))?;
            copied.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Paths removed outright (relative to the root).
const REMOVE: &[&str] = &[
    "etc/resolv.conf",
    "etc/apt/apt.conf.d/99mmdebstrap",
    "etc/dpkg/dpkg.cfg.d/99mmdebstrap",
    "var/lib/dbus/machine-id",
    "var/cache/ldconfig/aux-cache",
    "root/.npm",
    "root/.pm2",
    "root/.cache",
    "root/.config",
    "root/.node_repl_history",
    "root/.bash_history",
    "root/.wget-hsts",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/linda",
    ".dockerenv",
    "build",
];

/// Directories whose contents go (the directory itself stays).
const EMPTY: &[&str] = &[
    "tmp",
    "var/tmp",
    "run",
    "dev",
    "var/lib/apt/lists",
    "var/cache/apt",
];

/// Setuid and setgid bits an image keeps, with the reason; all others are
/// cleared by [`normalize`]. None is kept. Debian minbase and the role
/// packages bring `su`, `mount`, `umount`, `passwd`, `chsh`, `chfn`,
/// `gpasswd`, `newgrp` (setuid root) and `chage`, `expiry`, `unix_chkpwd`
/// (setgid shadow), and setgid directories such as `/var/mail` and
/// `/var/local`. In a haimg image nobody logs in and nothing changes user
/// through them: haimg-init starts every service as its user, `pct enter` and
/// `lxc-attach` give root directly, and no mail is delivered. And an
/// unprivileged container's files are owned by host uids (0..65535 mapped),
/// so a setuid binary is a risk on the host side too. To keep one, list it
/// here with the reason; the test beside this module pins the list.
pub const KEEP_SETID: &[(&str, &str)] = &[];

/// What [`normalize`] did, for the build log.
#[derive(Debug, Default)]
pub struct Normalized {
    pub removed: usize,
    /// `path (mode before)` of every entry whose setuid/setgid bits were cleared.
    pub setid_cleared: Vec<String>,
}

pub fn normalize(
    root: &Path,
    keep_locales: &[String],
    build_paths: &[&str],
) -> Result<Normalized, FinishError> {
    let mut n = Normalized::default();
    for rel in REMOVE.iter().chain(build_paths) {
        n.removed += remove(&root.join(rel))?;
    }
    for rel in EMPTY {
        let dir = root.join(rel);
        if dir.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            for e in std::fs::read_dir(&dir).map_err(err("read", &dir))? {
                let e = e.map_err(err("read", &dir))?;
                n.removed += remove(&e.path())?;
            }
        }
    }
    // Logs: keep the directories (daemons expect them), drop the files.
    n.removed += remove_files_below(&root.join("var/log"))?;
    // dpkg and debconf backups.
    for dir in ["var/lib/dpkg", "var/cache/debconf"] {
        let d = root.join(dir);
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with("-old") {
                    n.removed += remove(&e.path())?;
                }
            }
        }
    }
    // Documentation: only copyright files stay.
    let doc = root.join("usr/share/doc");
    if let Ok(rd) = std::fs::read_dir(&doc) {
        for e in rd.flatten() {
            let p = e.path();
            if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                for f in std::fs::read_dir(&p).map_err(err("read", &p))?.flatten() {
                    if f.file_name() != "copyright" {
                        n.removed += remove(&f.path())?;
                    }
                }
            }
        }
    }
    let locale = root.join("usr/share/locale");
    if let Ok(rd) = std::fs::read_dir(&locale) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != "locale.alias" && !keep_locales.contains(&name) {
                n.removed += remove(&e.path())?;
            }
        }
    }
    n.setid_cleared = clear_setid(root, Path::new(""))?;
    // The dpkg filters stay documented in the image, without build-only options.
    put(
        root,
        "etc/dpkg/dpkg.cfg.d/haimg-slim",
        (super::rootfs::dpkg_filters(keep_locales).join("\n") + "\n").as_bytes(),
        0o644,
    )?;
    Ok(n)
}

/// Clear setuid and setgid on every file and directory below `root/rel`
/// (never following a symlink), except [`KEEP_SETID`]; sorted by path.
fn clear_setid(root: &Path, rel: &Path) -> Result<Vec<String>, FinishError> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(err("read", &dir))?
        .collect::<Result<_, _>>()
        .map_err(err("read", &dir))?;
    entries.sort_by_key(|e| e.file_name());
    let mut cleared = Vec::new();
    for e in entries {
        let rel = rel.join(e.file_name());
        let p = root.join(&rel);
        let m = p.symlink_metadata().map_err(err("inspect", &p))?;
        if m.file_type().is_symlink() {
            continue;
        }
        let mode = m.permissions().mode() & 0o7777;
        let shown = format!("/{}", rel.display());
        if mode & 0o6000 != 0 && !KEEP_SETID.iter().any(|(k, _)| *k == shown) {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & !0o6000))
                .map_err(err("chmod", &p))?;
            cleared.push(format!("{shown} ({mode:04o})"));
        }
        if m.is_dir() {
            cleared.extend(clear_setid(root, &rel)?);
        }
    }
    Ok(cleared)
}

/// Add system user `name` with group `name`, fixed `uid`/`gid`, no login and
/// no password, to the image's passwd, group, shadow and gshadow files (same
/// bytes in every build). Already there with these ids: nothing to do; the
/// name or an id taken otherwise: an error.
pub fn add_user(
    root: &Path,
    name: &str,
    uid: u32,
    gid: u32,
    gecos: &str,
) -> Result<bool, FinishError> {
    let taken = |what: &str| FinishError {
        what: "add user to",
        path: root.join(what),
        error: io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{name} ({uid}:{gid}) clashes with an entry there"),
        ),
    };
    let read = |rel: &str| -> Result<String, FinishError> {
        let p = root.join(rel);
        std::fs::read_to_string(&p).map_err(err("read", &p))
    };
    let passwd = read("etc/passwd")?;
    let want = format!("{name}:x:{uid}:{gid}:{gecos}:/nonexistent:/usr/sbin/nologin");
    let fields = |l: &str| l.split(':').map(str::to_string).collect::<Vec<_>>();
    let clash = |text: &str, id: u32| {
        text.lines()
            .map(fields)
            .any(|f| f.len() > 2 && (f[0] == name || f[2] == id.to_string()))
    };
    if passwd.lines().any(|l| l == want) {
        return Ok(false);
    }
    if clash(&passwd, uid) {
        return Err(taken("etc/passwd"));
    }
    let group = read("etc/group")?;
    if clash(&group, gid) {
        return Err(taken("etc/group"));
    }
    let append = |rel: &str, line: &str| -> Result<(), FinishError> {
        let p = root.join(rel);
        let Ok(mut text) = std::fs::read_to_string(&p) else {
            // shadow files are optional (minbase has them; tests may not).
            return Ok(());
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(line);
        text.push('\n');
        let mode = std::fs::metadata(&p)
            .map_err(err("read", &p))?
            .permissions();
        std::fs::write(&p, text).map_err(err("write", &p))?;
        std::fs::set_permissions(&p, mode).map_err(err("chmod", &p))
    };
    append("etc/passwd", &want)?;
    append("etc/group", &format!("{name}:x:{gid}:"))?;
    // `!` : no password, never a login; 0 as the change date keeps builds equal.
    append("etc/shadow", &format!("{name}:!:0::::::"))?;
    append("etc/gshadow", &format!("{name}:!::"))?;
    Ok(true)
}

/// Remove a file, symlink or tree without following symlinks; count entries.
fn remove(p: &Path) -> Result<usize, FinishError> {
    match p.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(err("inspect", p)(e)),
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(p).map_err(err("remove", p))?;
            Ok(1)
        }
        Ok(_) => {
            std::fs::remove_file(p).map_err(err("remove", p))?;
            Ok(1)
        }
    }
}

fn remove_files_below(dir: &Path) -> Result<usize, FinishError> {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    for e in rd.flatten() {
        let p = e.path();
        let m = p.symlink_metadata().map_err(err("inspect", &p))?;
        if m.is_dir() {
            n += remove_files_below(&p)?;
        } else {
            std::fs::remove_file(&p).map_err(err("remove", &p))?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_removes_host_traces_and_keeps_structure() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for (p, data) in [
            ("etc/resolv.conf", "nameserver 10.0.0.1\n"),
            ("var/log/nginx/error.log", "x"),
            ("var/lib/apt/lists/deb_InRelease", "x"),
            ("usr/share/doc/nginx/copyright", "c"),
            ("usr/share/doc/nginx/changelog.gz", "x"),
            ("usr/share/locale/de/LC_MESSAGES/apt.mo", "x"),
            ("usr/share/locale/locale.alias", "x"),
            ("var/lib/dpkg/status-old", "x"),
            ("root/.npm/_cacache/x", "x"),
            ("tmp/build-ca.pem", "x"),
        ] {
            put(r, p, data.as_bytes(), 0o644).unwrap();
        }
        std::os::unix::fs::symlink("/etc", r.join("tmp/escape")).unwrap();
        normalize(r, &[], &[]).unwrap();
        for gone in [
            "etc/resolv.conf",
            "var/log/nginx/error.log",
            "var/lib/apt/lists/deb_InRelease",
            "usr/share/doc/nginx/changelog.gz",
            "usr/share/locale/de",
            "var/lib/dpkg/status-old",
            "root/.npm",
            "tmp/build-ca.pem",
            "tmp/escape",
        ] {
            assert!(
                r.join(gone).symlink_metadata().is_err(),
                "{gone} still there"
            );
        }
        for kept in [
            "var/log/nginx",
            "usr/share/doc/nginx/copyright",
            "usr/share/locale/locale.alias",
            "tmp",
        ] {
            assert!(r.join(kept).exists(), "{kept} is gone");
        }
        assert!(
            Path::new("/etc/hostname").exists(),
            "normalize followed a symlink out of the tree"
        );
    }

    /// No image keeps a setuid or setgid bit; the list of exceptions is empty
    /// (see [`KEEP_SETID`] for why each of Debian's is not needed).
    #[test]
    fn setid_bits_are_cleared() {
        assert!(KEEP_SETID.is_empty(), "review the reasons: {KEEP_SETID:?}");
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for (p, mode) in [
            ("usr/bin/su", 0o4755),
            ("usr/bin/chage", 0o2755),
            ("usr/bin/sudoedit", 0o6755),
            ("usr/bin/ls", 0o755),
            ("etc/shadow", 0o640),
        ] {
            put(r, p, b"x", mode).unwrap();
        }
        mkdirs(&r.join("var/mail")).unwrap();
        std::fs::set_permissions(r.join("var/mail"), std::fs::Permissions::from_mode(0o2775))
            .unwrap();
        std::fs::set_permissions(r.join("tmp"), std::fs::Permissions::from_mode(0o1777)).ok();
        // A setuid file outside the tree, reached through a symlink, is not touched.
        let outside = tempfile::tempdir().unwrap();
        let o = outside.path().join("outside");
        std::fs::write(&o, b"x").unwrap();
        std::fs::set_permissions(&o, std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink(&o, r.join("usr/bin/link")).unwrap();
        let n = normalize(r, &[], &[]).unwrap();
        assert_eq!(
            n.setid_cleared,
            [
                "/usr/bin/chage (2755)",
                "/usr/bin/su (4755)",
                "/usr/bin/sudoedit (6755)",
                "/var/mail (2775)"
            ]
        );
        let mode = |p: &str| std::fs::metadata(r.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            (
                mode("usr/bin/su"),
                mode("usr/bin/chage"),
                mode("usr/bin/sudoedit")
            ),
            (0o755, 0o755, 0o755)
        );
        assert_eq!(
            (mode("var/mail"), mode("usr/bin/ls"), mode("etc/shadow")),
            (0o775, 0o755, 0o640)
        );
        assert_eq!(
            std::fs::metadata(&o).unwrap().permissions().mode() & 0o7777,
            0o4755
        );
    }

    #[test]
    fn the_webapp_user_is_added_the_same_way_every_time() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        put(r, "etc/passwd", b"root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n", 0o644).unwrap();
        put(r, "etc/group", b"root:x:0:\nwww-data:x:33:\n", 0o644).unwrap();
        put(r, "etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640).unwrap();
        put(r, "etc/gshadow", b"root:*::\n", 0o640).unwrap();
        assert!(add_user(r, "webapp", 990, 990, "haimg web app").unwrap());
        let first: Vec<String> = ["passwd", "group", "shadow", "gshadow"]
            .iter()
            .map(|f| std::fs::read_to_string(r.join("etc").join(f)).unwrap())
            .collect();
        assert!(
            !add_user(r, "webapp", 990, 990, "haimg web app").unwrap(),
            "idempotent"
        );
        insta::assert_snapshot!(first.join("----\n"), @r"
        root:x:0:0:root:/root:/bin/bash
        www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
        webapp:x:990:990:haimg web app:/nonexistent:/usr/sbin/nologin
        ----
        root:x:0:
        www-data:x:33:
        webapp:x:990:
        ----
        root:*:19000:0:99999:7:::
        webapp:!:0::::::
        ----
        root:*::
        webapp:!::
        ");
        assert_eq!(
            std::fs::metadata(r.join("etc/shadow"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o640
        );
        let e = add_user(r, "other", 33, 991, "x").unwrap_err();
        assert!(e.to_string().contains("clashes"), "{e}");
    }
}
