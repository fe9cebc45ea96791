//! The base root filesystem: mmdebstrap over exactly the locked packages.
//!
//! The locked `.deb` files (from the content-addressed cache) are served to
//! mmdebstrap as a flat `copy://` repository holding one version of each
//! package, and installed with `--variant=custom` and the full locked name
//! list — so the result is the lock, no more and no less, and the build needs
//! no mirror once the cache holds the files. Documentation, man pages, info
//! and translations are kept out with dpkg path filters (copyright files
//! stay). mmdebstrap runs in root mode with `SOURCE_DATE_EPOCH` from the lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lock::DebPin;
use crate::exec::{Cmd, CommandRunner, RunError};

/// dpkg path filters: what no template needs.
pub fn dpkg_filters(keep_locales: &[String]) -> Vec<String> {
    let mut f = vec![
        "path-exclude=/usr/share/man/*".to_string(),
        "path-exclude=/usr/share/info/*".into(),
        "path-exclude=/usr/share/doc/*".into(),
        "path-include=/usr/share/doc/*/copyright".into(),
        "path-exclude=/usr/share/locale/*".into(),
        "path-include=/usr/share/locale/locale.alias".into(),
        "path-exclude=/usr/share/lintian/*".into(),
        "path-exclude=/usr/share/linda/*".into(),
    ];
    for l in keep_locales {
        f.push(format!("path-include=/usr/share/locale/{l}/*"));
    }
    f
}

/// The control stanza of a `.deb` plus the repository fields, via `dpkg-deb -f`.
pub fn deb_stanza(
    runner: &dyn CommandRunner,
    deb: &Path,
    file_name: &str,
) -> Result<String, RunError> {
    let out = runner.run(
        &Cmd::hermetic("dpkg-deb", Duration::from_secs(60))
            .arg("-f")
            .arg(deb.display().to_string()),
    )?;
    let meta = std::fs::metadata(deb).map(|m| m.len()).unwrap_or(0);
    let sha = super::hash::sha256_file(deb).unwrap_or_default();
    let mut s = out.stdout_str();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(&format!(
        "Filename: ./{file_name}\nSize: {meta}\nSHA256: {sha}\n"
    ));
    Ok(s)
}

/// Lay out a flat repository of `debs` (cache paths) in `dir` with its `Packages` index.
/// Control stanzas are cached beside the blobs (`<sha256>.control`).
pub fn write_flat_repo(
    runner: &dyn CommandRunner,
    dir: &Path,
    debs: &[(DebPin, PathBuf)],
) -> Result<(), RepoError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| RepoError::Io { path, error }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut index = String::new();
    for (pin, blob) in debs {
        let name = pin.file_name();
        let link = dir.join(&name);
        std::os::unix::fs::symlink(blob, &link).map_err(io(&link))?;
        let cached = blob.with_extension("control");
        let stanza = match std::fs::read_to_string(&cached) {
            Ok(s) => s,
            Err(_) => {
                let s = deb_stanza(runner, blob, &name).map_err(|e| RepoError::Control {
                    package: format!("{} {}", pin.name, pin.version),
                    error: e,
                })?;
                std::fs::write(&cached, &s).map_err(io(&cached))?;
                s
            }
        };
        index.push_str(&stanza);
        index.push('\n');
    }
    let p = dir.join("Packages");
    std::fs::write(&p, index).map_err(io(&p))
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("failed to write {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot read the control data of {package}: {error}")]
    Control { package: String, error: RunError },
}

/// Everything the mmdebstrap call depends on.
#[derive(Debug, Clone)]
pub struct Bootstrap<'a> {
    pub suite: &'a str,
    pub packages: Vec<String>,
    pub repo: &'a Path,
    pub target: &'a Path,
    pub source_date_epoch: u64,
    pub keep_locales: &'a [String],
    pub tmpdir: &'a Path,
}

/// mmdebstrap's hook that lays out a merged /usr the way debootstrap does.
pub const MERGED_USR_HOOK: &str = "/usr/share/mmdebstrap/hooks/merged-usr/setup00.sh";

/// The mmdebstrap command line.
pub fn mmdebstrap(b: &Bootstrap) -> Cmd {
    let mut cmd = Cmd::hermetic("mmdebstrap", Duration::from_secs(1800))
        .args([
            "--mode=root",
            "--variant=custom",
            "--format=directory",
            "--architectures=amd64",
            "--skip=output/dev",
            "--dpkgopt=force-unsafe-io",
        ])
        // /bin, /sbin, /lib* as symlinks into /usr before anything is unpacked (see apt::MINBASE).
        .arg(format!("--setup-hook={MERGED_USR_HOOK}"))
        .env("SOURCE_DATE_EPOCH", b.source_date_epoch.to_string())
        .env("TMPDIR", b.tmpdir.display().to_string());
    for f in dpkg_filters(b.keep_locales) {
        cmd = cmd.arg(format!("--dpkgopt={f}"));
    }
    cmd.arg(format!("--include={}", b.packages.join(",")))
        .arg(b.suite)
        .arg(b.target.display().to_string())
        .arg(format!("deb [trusted=yes] copy://{} ./", b.repo.display()))
}
