//! `haimg secrets`: what the cluster's secrets store holds (names, ages,
//! fingerprints — never a value), and `haimg secrets rotate NAME`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::{output, Exit};
use crate::secrets::{scan, Entry, Store, StoreError};
use crate::spec_file;

#[derive(Debug, clap::Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    pub action: Option<SecretsAction>,
    /// Print the list as JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretsAction {
    /// List the secrets: name, age, fingerprint, the roles that receive it (the default)
    List,
    /// Replace one secret with a fresh value; the next `haimg deploy` rolls the members that receive it
    Rotate {
        /// e.g. vrrp-password, mongo-app-password
        name: String,
    },
    /// Scan built templates for the store's values, private keys and credentials; exit 1 on a hit
    Scan {
        /// Directories holding `.tar.zst` templates
        #[arg(default_value = "out")]
        dirs: Vec<PathBuf>,
    },
}

#[derive(Serialize)]
struct ListJson<'a> {
    cluster: &'a str,
    store: String,
    secrets: &'a [Entry],
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The table `haimg secrets` prints.
pub fn table(entries: &[Entry]) -> String {
    let mut out = format!(
        "{:<24} {:>6}  {:<12}  {}\n",
        "NAME", "AGE", "FINGERPRINT", "ROLES"
    );
    for e in entries {
        let roles: Vec<&str> = e.roles.iter().map(|r| r.as_str()).collect();
        out.push_str(&format!(
            "{:<24} {:>6}  {:<12}  {}\n",
            e.name.as_str(),
            age(e.age_s),
            e.fingerprint,
            roles.join(",")
        ));
    }
    out
}

pub fn run(spec: Option<&Path>, args: &SecretsArgs) -> Result<Exit> {
    let cluster = spec_file::load(spec)?.checked.cluster.name;
    let store = Store::open(&Store::default_root(), &cluster);
    match &args.action {
        Some(SecretsAction::Scan { dirs }) => return run_scan(&store, &cluster, dirs),
        None | Some(SecretsAction::List) => {
            let entries = store.list()?;
            if args.json {
                output::json(&ListJson {
                    cluster: &cluster,
                    store: store.dir().display().to_string(),
                    secrets: &entries,
                })?;
            } else {
                eprintln!("secrets of cluster {cluster} in {}", store.dir().display());
                output::stdout(&table(&entries))?;
            }
        }
        Some(SecretsAction::Rotate { name }) => {
            let e = store.rotate(name)?;
            let roles: Vec<&str> = e.roles.iter().map(|r| r.as_str()).collect();
            eprintln!(
                "rotated {} (fingerprint {}); `haimg deploy` now rolls the {} members out blue/green with it",
                e.name,
                e.fingerprint,
                roles.join(" and ")
            );
        }
    }
    Ok(Exit::Ok)
}

fn run_scan(store: &Store, cluster: &str, dirs: &[PathBuf]) -> Result<Exit> {
    let needles = match store.load() {
        Ok(s) => s.needles(),
        Err(StoreError::Missing { .. }) => {
            eprintln!("scan: no secrets store for cluster {cluster}; checking for private keys and credentials only");
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    let mut templates = Vec::new();
    for d in dirs {
        templates.extend(
            scan::templates_in(d)
                .map_err(|e| anyhow::anyhow!("failed to list {}: {e}", d.display()))?,
        );
    }
    if templates.is_empty() {
        anyhow::bail!(
            "no .tar.zst template in {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut hits = Vec::new();
    for t in &templates {
        hits.extend(scan::scan_template(t, &needles)?);
    }
    for h in &hits {
        eprintln!(
            "FOUND {} in {}: /{}",
            h.what,
            h.template.display(),
            h.file.trim_start_matches("./")
        );
    }
    eprintln!(
        "scan: {} template(s), {} secret value(s) looked for: {}",
        templates.len(),
        needles.len(),
        if hits.is_empty() {
            "clean".to_string()
        } else {
            format!("{} hit(s)", hits.len())
        }
    );
    Ok(if hits.is_empty() {
        Exit::Ok
    } else {
        Exit::Error
    })
}
