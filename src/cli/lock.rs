//! `haimg lock`: check the image locks, or (`--update`) re-resolve them.
//!
//! Without `--update` it only checks that each lock still matches its recipe
//! and the committed package-locks (exit 1 naming what drifted). With
//! `--update` it resolves against the configured sources and rewrites
//! `images/<role>.lock`, listing the package changes on stderr.

use std::path::Path;

use anyhow::Result;
use haimg_model::Role;
use serde::Serialize;

use super::build::{env, roles_or_all, RoleArg};
use super::{output, Exit};
use crate::build::lock::Lock;
use crate::build::lockup::{self, Updated};
use crate::build::recipe::Recipe;

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// Re-resolve and rewrite the locks (else only check them)
    #[arg(long)]
    pub update: bool,
    /// Roles, comma-separated [default: lb,webapp,mongo]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ROLES")]
    pub role: Vec<RoleArg>,
    /// Roles whose sources may be unreachable here (reported, exit 0)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ROLES")]
    pub allow_missing: Vec<RoleArg>,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct RoleLock {
    role: Role,
    ok: bool,
    #[serde(flatten)]
    updated: Option<Updated>,
    error: Option<String>,
}

pub fn run(spec: Option<&Path>, args: &LockArgs) -> Result<Exit> {
    let env = env(spec, false)?;
    let allow: Vec<Role> = args.allow_missing.iter().map(|r| Role::from(*r)).collect();
    let mut results = Vec::new();
    let mut ok = true;
    for role in roles_or_all(&args.role) {
        let r = if args.update {
            eprintln!(
                "[{role}] resolving {} …",
                Recipe::path_for(&env.project.root, role).display()
            );
            match lockup::update(&env, role) {
                Ok(u) => {
                    let what = if u.changed { "updated" } else { "unchanged" };
                    eprintln!(
                        "[{role}] {} {what}: {} packages",
                        u.path.display(),
                        u.packages
                    );
                    for c in &u.changes {
                        eprintln!("    {c}");
                    }
                    RoleLock {
                        role,
                        ok: true,
                        updated: Some(u),
                        error: None,
                    }
                }
                Err(e) => {
                    let tolerated = e.is_missing_input() && allow.contains(&role);
                    eprintln!(
                        "[{role}] {}: {e}",
                        if tolerated {
                            "not locked (allowed)"
                        } else {
                            "error"
                        }
                    );
                    ok &= tolerated;
                    RoleLock {
                        role,
                        ok: tolerated,
                        updated: None,
                        error: Some(e.to_string()),
                    }
                }
            }
        } else {
            match check(&env.project.root, role) {
                Ok(()) => {
                    eprintln!(
                        "[{role}] {} matches its recipe",
                        Lock::path_for(&env.project.root, role).display()
                    );
                    RoleLock {
                        role,
                        ok: true,
                        updated: None,
                        error: None,
                    }
                }
                Err(e) => {
                    eprintln!("[{role}] {e}");
                    let tolerated = allow.contains(&role);
                    ok &= tolerated;
                    RoleLock {
                        role,
                        ok: tolerated,
                        updated: None,
                        error: Some(e.to_string()),
                    }
                }
            }
        };
        results.push(r);
    }
    if args.json {
        output::json(&results)?;
    }
    Ok(if ok { Exit::Ok } else { Exit::Error })
}

fn check(root: &Path, role: Role) -> Result<()> {
    let recipe = Recipe::load(root, role)?;
    match Lock::load(root, role)? {
        Some((lock, _)) => Ok(lock.check_fresh(root, &recipe)?),
        None => Err(crate::build::lock::LockError::Missing {
            path: Lock::path_for(root, role),
            role,
        }
        .into()),
    }
}
