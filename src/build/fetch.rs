//! Downloads into the content-addressed cache.
//!
//! Every artifact a build uses is stored once under
//! `<cache>/blobs/sha256/<hex>` and looked up by the sha256 its lock pins, so
//! a build whose inputs are all cached needs no network. A download is
//! written to a temporary file, hashed on the way (sha256, and sha512 for npm
//! integrities), and only renamed into place when it matches; a mismatch or a
//! URL the mirror no longer serves is an error naming the URL.
//!
//! URLs are `http(s)://`, `file://`, or a plain path (local `.deb` files).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::hash::{integrity_matches, DualHasher};

/// The content-addressed store.
#[derive(Debug, Clone)]
pub struct Cas {
    pub root: PathBuf,
}

impl Cas {
    pub fn new(root: impl Into<PathBuf>) -> Cas {
        Cas { root: root.into() }
    }

    pub fn blob(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join("sha256").join(sha256)
    }

    pub fn has(&self, sha256: &str) -> bool {
        self.blob(sha256).is_file()
    }
}

/// What a download must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    pub sha256: Option<String>,
    /// npm SRI, e.g. `sha512-…`.
    pub integrity: Option<String>,
    pub size: Option<u64>,
}

/// A stored download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub path: PathBuf,
    pub sha256: String,
    pub integrity: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url} is no longer served (HTTP {status})")]
    NotServed { url: String, status: u16 },
    #[error("{url} does not match its pin: expected {expected}, got {got}")]
    Mismatch {
        url: String,
        expected: String,
        got: String,
    },
    #[error("cannot download {url}: {message}")]
    Network { url: String, message: String },
    #[error("{url} is not in the download cache and downloads are off (--offline)")]
    Offline { url: String },
    #[error("failed to write the download cache at {path}: {error}")]
    Store {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Downloads over HTTP(S) with the host's trust store (the local CA in front
/// of the npm registry included), with progress on stderr.
pub struct Fetcher {
    agent: ureq::Agent,
    pub cas: Cas,
    /// Project root, for relative (local-file) URLs.
    pub root: PathBuf,
    pub offline: bool,
    pub quiet: bool,
}

impl Fetcher {
    pub fn new(cas: Cas, root: PathBuf, offline: bool, quiet: bool) -> Fetcher {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Fetcher {
            agent,
            cas,
            root,
            offline,
            quiet,
        }
    }

    /// Small documents (registry metadata, keys), not cached.
    pub fn get_bytes(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        if self.offline {
            return Err(FetchError::Offline { url: url.into() });
        }
        let mut r = self.open(url)?.0;
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).map_err(|e| FetchError::Network {
            url: url.into(),
            message: e.to_string(),
        })?;
        Ok(buf)
    }

    fn open(&self, url: &str) -> Result<(Box<dyn Read + Send>, Option<u64>), FetchError> {
        if let Some(p) = url.strip_prefix("file://") {
            return open_file(url, Path::new(p));
        }
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return open_file(url, &self.root.join(url));
        }
        let resp = self
            .agent
            .get(url)
            .call()
            .map_err(|e| FetchError::Network {
                url: url.into(),
                message: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(FetchError::NotServed {
                url: url.into(),
                status,
            });
        }
        let len = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = resp.into_body().into_reader();
        Ok((Box::new(body), len))
    }

    /// Make sure each item is in the cache; download what is missing.
    /// One progress bar for the whole batch.
    pub fn ensure_all(
        &self,
        label: &str,
        items: &[(String, Expect)],
    ) -> Result<Vec<Fetched>, FetchError> {
        let missing: Vec<&(String, Expect)> = items
            .iter()
            .filter(|(_, e)| !e.sha256.as_deref().is_some_and(|s| self.cas.has(s)))
            .collect();
        let total: u64 = missing.iter().filter_map(|(_, e)| e.size).sum();
        let bar = self.bar(label, total, missing.len());
        let mut out = Vec::with_capacity(items.len());
        for (url, expect) in items {
            if let Some(sha) = &expect.sha256 {
                let path = self.cas.blob(sha);
                if path.is_file() {
                    out.push(Fetched {
                        size: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
                        path,
                        sha256: sha.clone(),
                        integrity: expect.integrity.clone().unwrap_or_default(),
                    });
                    continue;
                }
            }
            if self.offline {
                return Err(FetchError::Offline { url: url.clone() });
            }
            out.push(self.download(url, expect, &bar)?);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    fn bar(&self, label: &str, total: u64, n: usize) -> ProgressBar {
        if self.quiet || n == 0 {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr_with_hz(4),
        );
        bar.set_style(
            ProgressStyle::with_template(
                "    {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("{label} ({n} files)"));
        bar
    }

    fn download(
        &self,
        url: &str,
        expect: &Expect,
        bar: &ProgressBar,
    ) -> Result<Fetched, FetchError> {
        let (mut body, _) = self.open(url)?;
        let dir = self.cas.root.join("blobs").join("sha256");
        let store = |error| FetchError::Store {
            path: dir.clone(),
            error,
        };
        std::fs::create_dir_all(&dir).map_err(store)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(store)?;
        let mut h = DualHasher::default();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = body.read(&mut buf).map_err(|e| FetchError::Network {
                url: url.into(),
                message: e.to_string(),
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(store)?;
            size += n as u64;
            bar.inc(n as u64);
        }
        let (sha256, integrity) = h.finish();
        if let Some(want) = &expect.sha256 {
            if *want != sha256 {
                return Err(FetchError::Mismatch {
                    url: url.into(),
                    expected: format!("sha256 {want}"),
                    got: format!("sha256 {sha256}"),
                });
            }
        }
        if let Some(want) = &expect.integrity {
            if !integrity_matches(want, &integrity) {
                return Err(FetchError::Mismatch {
                    url: url.into(),
                    expected: want.clone(),
                    got: integrity,
                });
            }
        }
        let path = self.cas.blob(&sha256);
        tmp.persist(&path).map_err(|e| store(e.error))?;
        Ok(Fetched {
            path,
            sha256,
            integrity,
            size,
        })
    }
}

fn open_file(url: &str, p: &Path) -> Result<(Box<dyn Read + Send>, Option<u64>), FetchError> {
    match std::fs::File::open(p) {
        Ok(f) => {
            let len = f.metadata().ok().map(|m| m.len());
            Ok((Box::new(f), len))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FetchError::NotServed {
            url: url.into(),
            status: 404,
        }),
        Err(e) => Err(FetchError::Network {
            url: url.into(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::hash::sha256_hex;

    fn fetcher(dir: &Path) -> Fetcher {
        Fetcher::new(Cas::new(dir.join("cache")), dir.to_path_buf(), false, true)
    }

    #[test]
    fn stores_by_sha256_and_then_works_offline() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x.deb"), b"deb bytes").unwrap();
        let sha = sha256_hex(b"deb bytes");
        let f = fetcher(d.path());
        let item = (
            "x.deb".to_string(),
            Expect {
                sha256: Some(sha.clone()),
                ..Expect::default()
            },
        );
        let got = f.ensure_all("debs", std::slice::from_ref(&item)).unwrap();
        assert_eq!(got[0].path, f.cas.blob(&sha));
        std::fs::remove_file(d.path().join("x.deb")).unwrap();
        let mut off = fetcher(d.path());
        off.offline = true;
        assert_eq!(off.ensure_all("debs", &[item]).unwrap()[0].sha256, sha);
    }

    #[test]
    fn a_changed_file_is_refused_and_not_stored() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x.deb"), b"other bytes").unwrap();
        let f = fetcher(d.path());
        let want = sha256_hex(b"deb bytes");
        let err = f
            .ensure_all(
                "debs",
                &[(
                    "x.deb".into(),
                    Expect {
                        sha256: Some(want.clone()),
                        ..Expect::default()
                    },
                )],
            )
            .unwrap_err();
        assert!(matches!(err, FetchError::Mismatch { .. }), "{err}");
        assert!(err.to_string().starts_with(&format!(
            "x.deb does not match its pin: expected sha256 {want}"
        )));
        assert!(!f.cas.has(&want));
    }

    #[test]
    fn a_missing_file_is_not_served() {
        let d = tempfile::tempdir().unwrap();
        let err = fetcher(d.path())
            .ensure_all(
                "debs",
                &[(
                    "gone.deb".into(),
                    Expect {
                        sha256: Some("00".repeat(32)),
                        ..Expect::default()
                    },
                )],
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "gone.deb is no longer served (HTTP 404)");
    }
}
