//! Resolving a recipe's Debian package set with a scratch apt configuration.
//!
//! `haimg lock --update` (and the mongo build's diagnosis) use a private apt
//! tree (`APT_CONFIG`, an empty dpkg status) so nothing touches the host's apt
//! state. The package set is what `mmdebstrap --variant=minbase` would
//! install — `?essential`, `?priority(required)`, `apt` — plus the recipe's
//! packages and its vendor package; each is then pinned by name, version,
//! architecture, size, sha256 and URL.
//!
//! Pure parts (config text, argv, output parsers) are separate from the
//! [`CommandRunner`] calls so tests can snapshot them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fetch::Fetcher;
use super::lock::DebPin;
use super::recipe::Recipe;
use crate::exec::{Cmd, CommandRunner, RunError};

/// The minbase selection, as apt patterns, plus `usr-is-merged`: it satisfies
/// init-system-helpers' `usrmerge | usr-is-merged` on a /usr merged by
/// mmdebstrap's merged-usr setup hook (as debootstrap does), instead of
/// `usrmerge`, which would pull in the whole of perl (~45 MB) for a one-time
/// conversion no template needs.
pub const MINBASE: [&str; 4] = ["?essential", "?priority(required)", "apt", "usr-is-merged"];

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("failed to prepare the scratch apt tree at {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}", vendor_message(.package, .recipe, .reasons, .hints))]
    VendorUnavailable {
        package: String,
        recipe: PathBuf,
        reasons: Vec<String>,
        hints: Vec<String>,
    },
    #[error("{recipe}: package {package} is not in the configured sources ({detail})")]
    UnknownPackage {
        package: String,
        recipe: PathBuf,
        detail: String,
    },
    #[error("{recipe}: the release file of {repository} does not verify against the signing key ({reason}); nothing was locked.\n  hint: the repository or its key changed since they were trusted: find out which from the vendor before you run `haimg lock --update --role {role}`")]
    VendorSignature {
        repository: String,
        reason: String,
        recipe: PathBuf,
        role: haimg_model::Role,
    },
    #[error("the Debian source {repository} failed: {reason}")]
    DebianSource { repository: String, reason: String },
    #[error("apt printed something haimg does not understand: {0}")]
    Parse(String),
}

fn vendor_message(package: &str, recipe: &Path, reasons: &[String], hints: &[String]) -> String {
    let mut s = format!(
        "{package} cannot be obtained from any source named in {}",
        recipe.display()
    );
    for r in reasons {
        s.push_str(&format!("\n  - {r}"));
    }
    s.push_str(&format!("\n  provide {package} in one of these ways:"));
    for (i, h) in hints.iter().enumerate() {
        s.push_str(&format!("\n    {}. {h}", i + 1));
    }
    s
}

/// A resolved package set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub debian: Vec<DebPin>,
    pub vendor: Vec<DebPin>,
    /// Newest `Date:` of the Debian suites' InRelease files (seconds since the epoch).
    pub newest_release: Option<u64>,
}

/// The scratch apt tree under `dir`.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn conf_path(&self) -> PathBuf {
        self.dir.join("apt.conf")
    }

    pub fn vendor_keyring(&self) -> PathBuf {
        self.dir.join("etc/apt/keyrings/vendor.asc")
    }

    pub fn local_repo(&self) -> PathBuf {
        self.dir.join("local-repo")
    }

    /// The apt configuration: everything under `dir`, amd64 only, no recommends.
    pub fn apt_conf(&self) -> String {
        let d = self.dir.display();
        format!(
            "Dir \"{d}/\";\n\
             Dir::State::status \"{d}/var/lib/dpkg/status\";\n\
             Dir::Etc::Trusted \"{d}/etc/apt/trusted.gpg\";\n\
             Dir::Etc::TrustedParts \"{d}/etc/apt/trusted.gpg.d\";\n\
             Dir::Cache::archives \"{d}/var/cache/apt/archives\";\n\
             APT::Architecture \"amd64\";\n\
             APT::Architectures {{ \"amd64\"; }};\n\
             APT::Install-Recommends \"false\";\n\
             APT::Install-Suggests \"false\";\n\
             Acquire::Languages \"none\";\n\
             Acquire::Check-Valid-Until \"false\";\n\
             Debug::NoLocking \"true\";\n"
        )
    }

    /// sources.list: the recipe's sources plus, for local `.deb` files, a flat repository.
    pub fn sources_list(&self, recipe: &Recipe) -> String {
        let keyring = self.vendor_keyring().display().to_string();
        let mut lines = recipe.apt_lines(&keyring);
        if recipe
            .raw
            .vendor
            .as_ref()
            .is_some_and(|v| !v.local_debs.is_empty())
        {
            lines.push(format!(
                "deb [trusted=yes] file:{} ./",
                self.local_repo().display()
            ));
        }
        lines.join("\n") + "\n"
    }

    pub fn prepare(&self, recipe: &Recipe) -> Result<(), ResolveError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| ResolveError::Io { path, error }
        };
        for sub in [
            "etc/apt/sources.list.d",
            "etc/apt/preferences.d",
            "etc/apt/apt.conf.d",
            "etc/apt/trusted.gpg.d",
            "etc/apt/keyrings",
            "var/lib/apt/lists/partial",
            "var/lib/dpkg",
            "var/cache/apt/archives/partial",
        ] {
            let p = self.dir.join(sub);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        let status = self.dir.join("var/lib/dpkg/status");
        std::fs::write(&status, "").map_err(io(&status))?;
        std::fs::write(self.conf_path(), self.apt_conf()).map_err(io(&self.conf_path()))?;
        let sl = self.dir.join("etc/apt/sources.list");
        std::fs::write(&sl, self.sources_list(recipe)).map_err(io(&sl))?;
        Ok(())
    }

    pub fn apt(&self, program: &str) -> Cmd {
        Cmd::hermetic(program, Duration::from_secs(600))
            .env("APT_CONFIG", self.conf_path().display().to_string())
            .env("DEBIAN_FRONTEND", "noninteractive")
            .cwd(&self.dir)
    }
}

/// The selection passed to apt: minbase plus the recipe's packages.
pub fn selection(recipe: &Recipe) -> Vec<String> {
    MINBASE
        .iter()
        .map(|s| s.to_string())
        .chain(recipe.requested())
        .collect()
}

/// Resolve `recipe` to pinned packages.
pub fn resolve(
    recipe: &Recipe,
    runner: &dyn CommandRunner,
    fetcher: &Fetcher,
    scratch: &Scratch,
) -> Result<Resolved, ResolveError> {
    scratch.prepare(recipe)?;
    let vendor = recipe.raw.vendor.as_ref();
    let mut reasons = Vec::new();
    if let Some(v) = vendor {
        if let Some(repo) = &v.repository {
            if let (None, Some(url)) = (&repo.signed_by, &repo.key_url) {
                match fetcher.get_bytes(url) {
                    Ok(key) => {
                        let p = scratch.vendor_keyring();
                        std::fs::write(&p, key)
                            .map_err(|error| ResolveError::Io { path: p, error })?;
                    }
                    Err(e) => reasons.push(format!("signing key: {e}")),
                }
            }
        }
        if !v.local_debs.is_empty() {
            write_local_repo(recipe, runner, scratch)?;
        }
    }
    let update_cmd = scratch.apt("apt-get").args(["-q", "update"]);
    let update = runner.output(&update_cmd)?;
    let stderr = String::from_utf8_lossy(&update.stderr);
    let debian_uris: Vec<&str> = recipe.raw.sources.iter().map(|s| s.uri.as_str()).collect();
    let key_missing = reasons.iter().any(|r| r.starts_with("signing key:"));
    for (repository, reason) in signature_errors(&stderr) {
        if debian_uris.iter().any(|u| repository.starts_with(u)) {
            return Err(ResolveError::DebianSource { repository, reason });
        }
        if !key_missing {
            return Err(ResolveError::VendorSignature {
                repository,
                reason,
                recipe: recipe.path.clone(),
                role: recipe.role,
            });
        }
        // Without its key the repository cannot verify: the key is the reason.
        reasons.push(format!("apt repository: {repository}: {reason}"));
    }
    for f in failed_fetches(&stderr) {
        if debian_uris.iter().any(|u| f.starts_with(u)) {
            return Err(ResolveError::DebianSource {
                repository: f,
                reason: "failed to fetch".into(),
            });
        }
        if !reasons
            .iter()
            .any(|r| r.contains(f.split_whitespace().next().unwrap_or("")))
        {
            reasons.push(format!("apt repository: {f}"));
        }
    }
    if !update.success() && reasons.is_empty() {
        return Err(RunError::failed(&update_cmd, &update).into());
    }
    let mut install = vec!["-s".to_string(), "install".to_string()];
    install.extend(selection(recipe));
    let sim = runner
        .run(&scratch.apt("apt-get").args(install.clone()))
        .map_err(|e| {
            unlocatable(&e)
                .map(|pkg| match vendor {
                    Some(v) if v.package == pkg => {
                        vendor_unavailable(recipe, &pkg, reasons.clone())
                    }
                    _ => ResolveError::UnknownPackage {
                        package: pkg,
                        recipe: recipe.path.clone(),
                        detail: e.stderr_tail().lines().last().unwrap_or("").to_string(),
                    },
                })
                .unwrap_or(ResolveError::Run(e))
        })?;
    let chosen = parse_simulation(&sim.stdout_str());
    if chosen.is_empty() {
        return Err(ResolveError::Parse(
            "`apt-get -s install` selected no package".into(),
        ));
    }
    let show_args: Vec<String> = std::iter::once("show".to_string())
        .chain(chosen.iter().map(|(n, v, _)| format!("{n}={v}")))
        .collect();
    let show = runner.run(&scratch.apt("apt-cache").args(show_args))?;
    let stanzas = parse_stanzas(&show.stdout_str());
    let mut uris_args = vec![
        "-qq".to_string(),
        "--print-uris".into(),
        "-y".into(),
        "install".into(),
    ];
    uris_args.extend(selection(recipe));
    let uris = runner.run(&scratch.apt("apt-get").args(uris_args))?;
    let urls = parse_print_uris(&uris.stdout_str());
    let local_dir = scratch.local_repo();
    let mut out = Resolved {
        debian: Vec::new(),
        vendor: Vec::new(),
        newest_release: newest_release(&scratch.dir.join("var/lib/apt/lists"), &debian_uris),
    };
    for (name, version, arch) in chosen {
        let st = stanzas
            .iter()
            .find(|s| s.get("Package") == Some(&name) && s.get("Version") == Some(&version))
            .ok_or_else(|| {
                ResolveError::Parse(format!("apt-cache show has no stanza for {name} {version}"))
            })?;
        let field = |k: &str| {
            st.get(k)
                .cloned()
                .ok_or_else(|| ResolveError::Parse(format!("{name} {version} has no {k} field")))
        };
        let filename = field("Filename")?;
        let url = urls
            .iter()
            .find(|u| {
                percent_decode(u).ends_with(&format!("/{}", filename.trim_start_matches("./")))
            })
            .cloned()
            .ok_or_else(|| ResolveError::Parse(format!("no download URL for {filename}")))?;
        let url = match url.strip_prefix(&format!("file:{}/", local_dir.display())) {
            Some(local) => local_debs_path(recipe, local).unwrap_or(url.clone()),
            None => url,
        };
        let size = field("Size")?
            .parse()
            .map_err(|_| ResolveError::Parse(format!("{name}: bad Size")))?;
        let sha256 = field("SHA256")?;
        let arch = if arch.is_empty() {
            field("Architecture")?
        } else {
            arch
        };
        let pin = DebPin {
            size,
            sha256,
            name,
            version,
            arch,
            url,
        };
        if debian_uris.iter().any(|u| pin.url.starts_with(u)) {
            out.debian.push(pin);
        } else {
            out.vendor.push(pin);
        }
    }
    out.debian.sort();
    out.vendor.sort();
    Ok(out)
}

/// The error for a vendor package nothing provides, with every way to provide it.
pub fn vendor_unavailable(
    recipe: &Recipe,
    package: &str,
    mut reasons: Vec<String>,
) -> ResolveError {
    let v = recipe.raw.vendor.as_ref();
    if reasons.is_empty() {
        reasons.push("no configured source offers it".into());
    }
    let repo = v
        .and_then(|v| v.repository.as_ref())
        .map(|r| format!("{} {}", r.uri, r.suites.join(" ")))
        .unwrap_or_else(|| "the vendor's apt repository".into());
    let role = recipe.role;
    let key = v
        .and_then(|v| v.repository.as_ref())
        .and_then(|r| r.key_url.as_deref())
        .filter(|_| reasons.iter().any(|r| r.starts_with("signing key:")));
    let reach = match key {
        // haimg uses a vendor repository only with its signing key.
        Some(k) => format!("make {repo} and its signing key {k} reachable from this host, then run `haimg lock --update --role {role}`"),
        None => format!("make {repo} reachable from this host, then run `haimg lock --update --role {role}`"),
    };
    ResolveError::VendorUnavailable {
        package: package.into(),
        recipe: recipe.path.clone(),
        reasons,
        hints: vec![
            reach,
            format!(
                "set `vendor.mirror:` in {} to a reachable mirror of that repository (same suite layout), then run `haimg lock --update --role {role}`",
                recipe.path.display()
            ),
            format!(
                "download {package} and the non-Debian packages it depends on as .deb files, list them under `vendor.local_debs:` in {} (paths relative to the project), then run `haimg lock --update --role {role}`",
                recipe.path.display()
            ),
            format!("or build without this role: `haimg build --allow-missing {role}`"),
        ],
    }
}

fn local_debs_path(recipe: &Recipe, file_name: &str) -> Option<String> {
    recipe
        .raw
        .vendor
        .as_ref()?
        .local_debs
        .iter()
        .find(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|f| f.to_string_lossy() == file_name)
        })
        .cloned()
}

/// A flat repository (Packages index) for the recipe's local `.deb` files.
fn write_local_repo(
    recipe: &Recipe,
    runner: &dyn CommandRunner,
    scratch: &Scratch,
) -> Result<(), ResolveError> {
    let dir = scratch.local_repo();
    std::fs::create_dir_all(&dir).map_err(|error| ResolveError::Io {
        path: dir.clone(),
        error,
    })?;
    let root = recipe
        .path
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let mut index = String::new();
    for rel in recipe.raw.vendor.iter().flat_map(|v| &v.local_debs) {
        let src = root.join(rel);
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dst = dir.join(&name);
        std::fs::copy(&src, &dst).map_err(|error| ResolveError::Io {
            path: src.clone(),
            error,
        })?;
        let stanza = super::rootfs::deb_stanza(runner, &dst, &name)
            .map_err(|e| ResolveError::Parse(format!("{}: {e}", src.display())))?;
        index.push_str(&stanza);
        index.push('\n');
    }
    let p = dir.join("Packages");
    std::fs::write(&p, index).map_err(|error| ResolveError::Io { path: p, error })
}

/// `W: Failed to fetch URL  reason` lines of `apt-get update`.
pub fn failed_fetches(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("W: Failed to fetch ")
                .or_else(|| l.strip_prefix("E: Failed to fetch "))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Repositories whose release file did not verify, from `apt-get update`'s
/// `W: GPG error: URI SUITE InRelease: REASON` and `E: The repository 'URI
/// SUITE Release' is not signed.` lines, as (`URI SUITE`, reason); one entry
/// per repository, the GPG reason preferred.
pub fn signature_errors(stderr: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |repo: String, reason: String| {
        if !out.iter().any(|(r, _)| *r == repo) {
            out.push((repo, reason));
        }
    };
    for l in stderr.lines() {
        if let Some(rest) = l
            .strip_prefix("W: GPG error: ")
            .or_else(|| l.strip_prefix("E: GPG error: "))
        {
            if let Some((what, reason)) = rest.split_once(": ") {
                let repo = what
                    .trim_end_matches(" InRelease")
                    .trim_end_matches(" Release")
                    .to_string();
                add(repo, reason.trim().to_string());
            }
        }
    }
    for l in stderr.lines() {
        if let Some(rest) = l.strip_prefix("E: The repository '") {
            if let Some(what) = rest.strip_suffix("' is not signed.") {
                let repo = what
                    .trim_end_matches(" InRelease")
                    .trim_end_matches(" Release")
                    .to_string();
                add(
                    repo,
                    "the release file is not signed by a trusted key".into(),
                );
            }
        }
    }
    out
}

/// The package apt could not locate, from `E: Unable to locate package X`.
fn unlocatable(e: &RunError) -> Option<String> {
    e.stderr_tail().lines().find_map(|l| {
        l.strip_prefix("E: Unable to locate package ")
            .or_else(|| {
                l.strip_prefix("E: Version '")
                    .and_then(|r| r.split("' for '").nth(1))
                    .map(|r| r.trim_end_matches("' was not found"))
            })
            .map(|p| p.trim().to_string())
    })
}

/// `Inst name (version suite [arch])` lines → (name, version, arch).
pub fn parse_simulation(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            let inner = rest.strip_prefix('(')?;
            let version = inner.split_whitespace().next()?;
            let arch = inner
                .split('[')
                .nth(1)
                .and_then(|a| a.split(']').next())
                .unwrap_or("")
                .to_string();
            Some((name.to_string(), version.to_string(), arch))
        })
        .collect()
}

/// Debian control stanzas (only single-line fields are kept).
pub fn parse_stanzas(out: &str) -> Vec<BTreeMap<String, String>> {
    out.split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.lines()
                .filter(|l| !l.starts_with(' '))
                .filter_map(|l| l.split_once(": ").or_else(|| l.split_once(':')))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect()
        })
        .collect()
}

/// `'URL' file size hash` lines of `--print-uris` → URLs.
pub fn parse_print_uris(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix('\'')?.split('\'').next().map(str::to_string))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The newest `Date:` among the InRelease files of the Debian sources.
fn newest_release(lists: &Path, debian_uris: &[&str]) -> Option<u64> {
    let prefixes: Vec<String> = debian_uris
        .iter()
        .map(|u| u.split("://").nth(1).unwrap_or(u).replace('/', "_"))
        .collect();
    let mut newest = None;
    for e in std::fs::read_dir(lists).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with("InRelease") || !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).ok()?;
        if let Some(t) = text
            .lines()
            .find_map(|l| l.strip_prefix("Date: "))
            .and_then(parse_rfc2822)
        {
            newest = newest.max(Some(t));
        }
    }
    newest
}

/// `Sat, 11 Jul 2026 09:53:14 UTC` → seconds since the epoch.
pub fn parse_rfc2822(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, time, ..] = parts.as_slice() else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x == mon)? as u32 + 1;
    let hms: Vec<u64> = time.split(':').filter_map(|x| x.parse().ok()).collect();
    let [h, mi, se] = hms.as_slice() else {
        return None;
    };
    let days = super::sbom::days_from_civil(year.parse().ok()?, m, day.parse().ok()?);
    Some(days as u64 * 86400 + h * 3600 + mi * 60 + se)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_simulation_lines() {
        let out = "NOTE: This is only a simulation!\nInst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])\nInst keepalived (1:2.2.7-1+b2 Debian:12.15/oldstable [amd64])\nConf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])\nInst tzdata (2025b-0+deb12u2 Debian:12.15/oldstable [all])\n";
        assert_eq!(
            parse_simulation(out),
            [
                (
                    "gcc-12-base".into(),
                    "12.2.0-14+deb12u1".into(),
                    "amd64".into()
                ),
                ("keepalived".into(), "1:2.2.7-1+b2".into(), "amd64".into()),
                ("tzdata".into(), "2025b-0+deb12u2".into(), "all".into()),
            ]
        );
    }

    #[test]
    fn parses_print_uris_and_decodes() {
        let out = "'http://deb.debian.org/debian/pool/main/k/keepalived/keepalived_2.2.7-1%2bb2_amd64.deb' keepalived_1%3a2.2.7-1+b2_amd64.deb 1 MD5Sum:x\n";
        let urls = parse_print_uris(out);
        assert_eq!(urls.len(), 1);
        assert!(percent_decode(&urls[0]).ends_with(
            "/pool/main/k/keepalived/keepalived_2.2.7-1+bb2_amd64.deb"
                .replace("+bb2", "+b2")
                .as_str()
        ));
    }

    #[test]
    fn finds_failed_fetches() {
        let err = "W: Failed to fetch https://repo.mongodb.org/apt/debian/dists/bookworm/mongodb-org/8.0/InRelease  Could not resolve 'repo.mongodb.org'\nW: Some index files failed to download.\n";
        assert_eq!(
            failed_fetches(err),
            ["https://repo.mongodb.org/apt/debian/dists/bookworm/mongodb-org/8.0/InRelease Could not resolve 'repo.mongodb.org'"]
        );
    }

    #[test]
    fn finds_signature_errors() {
        let err = "W: GPG error: http://127.0.0.1:4711/apt/debian bookworm/mongodb-org/8.0 InRelease: The following signatures were invalid: BADSIG 0123456789ABCDEF haimg stand-in\n\
                   E: The repository 'http://127.0.0.1:4711/apt/debian bookworm/mongodb-org/8.0 InRelease' is not signed.\n\
                   E: The repository 'http://x.example/debian bookworm Release' is not signed.\n";
        assert_eq!(
            signature_errors(err),
            [
                (
                    "http://127.0.0.1:4711/apt/debian bookworm/mongodb-org/8.0".to_string(),
                    "The following signatures were invalid: BADSIG 0123456789ABCDEF haimg stand-in"
                        .to_string()
                ),
                (
                    "http://x.example/debian bookworm".to_string(),
                    "the release file is not signed by a trusted key".to_string()
                ),
            ]
        );
        assert!(signature_errors("W: Some index files failed to download.\n").is_empty());
    }

    #[test]
    fn parses_release_dates() {
        assert_eq!(
            parse_rfc2822("Sat, 11 Jul 2026 09:53:14 UTC"),
            Some(1_783_763_594)
        );
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
    }
}
