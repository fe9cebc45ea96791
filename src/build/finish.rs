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
//! pages, translations beyond the recipe's `keep_locales`. It never follows a
//! symlink out of the tree.

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

/// What [`normalize`] did, for the build log.
#[derive(Debug, Default)]
pub struct Normalized {
    pub removed: usize,
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
    // The dpkg filters stay documented in the image, without build-only options.
    put(
        root,
        "etc/dpkg/dpkg.cfg.d/haimg-slim",
        (super::rootfs::dpkg_filters(keep_locales).join("\n") + "\n").as_bytes(),
        0o644,
    )?;
    Ok(n)
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
}
