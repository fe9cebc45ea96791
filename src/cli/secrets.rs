//! `haimg secrets`: what the cluster's secrets store holds (names, ages,
//! fingerprints — never a value), and `haimg secrets rotate NAME`.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::{output, Exit};
use crate::secrets::{Entry, Store};
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
