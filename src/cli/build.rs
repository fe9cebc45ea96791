//! `haimg build`: the role templates into `out/`.
//!
//! Loads the spec (baked into every image as `/etc/haimg/plan.json`), wires
//! the real command runner and downloader, and prints a summary: a table on
//! stderr, the whole [`build::Summary`] as JSON on stdout with `--json`.
//! Exit 0 when every requested role was built or reused (or is missing and
//! allowed to be), else 1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::ValueEnum;
use haimg_model::Role;

use super::{output, Exit};
use crate::build::fetch::{Cas, Fetcher};
use crate::build::{self, BuildOptions, Env, Project, Status, Summary};
use crate::exec::SystemRunner;
use crate::spec_file;

/// A role on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Lb,
    Mongo,
    Webapp,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Lb => Role::Lb,
            RoleArg::Mongo => Role::Mongo,
            RoleArg::Webapp => Role::Webapp,
        }
    }
}

/// The way back, so a new [`Role`] fails to compile until the command line
/// knows it.
impl From<Role> for RoleArg {
    fn from(r: Role) -> RoleArg {
        match r {
            Role::Lb => RoleArg::Lb,
            Role::Mongo => RoleArg::Mongo,
            Role::Webapp => RoleArg::Webapp,
        }
    }
}

/// Every role when none are named, in build order: from the entry inwards
/// (lb, webapp, then mongo).
pub fn roles_or_all(roles: &[RoleArg]) -> Vec<Role> {
    if roles.is_empty() {
        return Role::from_entry().to_vec();
    }
    let mut out: Vec<Role> = Vec::new();
    for r in roles {
        let r = Role::from(*r);
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Roles to build, comma-separated [default: lb,webapp,mongo]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ROLES")]
    pub role: Vec<RoleArg>,
    /// Output directory
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
    /// Print the summary as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Build each role twice from scratch in different temporary paths and compare
    #[arg(long)]
    pub verify: bool,
    /// Roles whose inputs may be unobtainable here (reported, exit 0)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ROLES")]
    pub allow_missing: Vec<RoleArg>,
    /// Use this haimg-init binary instead of building it from the workspace
    #[arg(long, value_name = "PATH")]
    pub init: Option<PathBuf>,
    /// Rebuild even when the inputs are unchanged (downloads stay cached)
    #[arg(long)]
    pub no_cache: bool,
    /// Never download; build only from the download cache
    #[arg(long)]
    pub offline: bool,
    /// Only build haimg-init (as the images get it) and print where it is
    #[arg(long, conflicts_with_all = ["role", "verify", "allow_missing", "init", "no_cache"])]
    pub init_only: bool,
}

/// The project root: the current directory, which must hold `images/`.
pub fn project() -> Result<Project> {
    let root = std::env::current_dir().context("failed to read the current directory")?;
    if !root.join("images").is_dir() {
        anyhow::bail!(
            "{} has no images/ directory; run haimg from the project root",
            root.display()
        );
    }
    Ok(Project { root })
}

/// The spec as baked into images: validated, then its raw form as JSON.
pub fn plan(spec: Option<&Path>) -> Result<(String, Vec<u8>)> {
    let loaded = spec_file::load(spec)?;
    let raw = haimg_model::spec::parse_yaml_raw(&loaded.text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", loaded.source))?;
    let mut json = serde_json::to_vec_pretty(&raw).context("failed to serialize the plan")?;
    json.push(b'\n');
    Ok((loaded.checked.cluster.version.clone(), json))
}

pub fn env(spec: Option<&Path>, offline: bool) -> Result<Env> {
    let project = project()?;
    let (version, plan_json) = plan(spec)?;
    let fetcher = Fetcher::new(
        Cas::new(project.cache_dir()),
        project.root.clone(),
        offline,
        false,
    );
    Ok(Env::new(
        Arc::new(SystemRunner),
        fetcher,
        project,
        version,
        plan_json,
    ))
}

pub fn run(spec: Option<&Path>, args: &BuildArgs) -> Result<Exit> {
    if args.init_only {
        return init_only(args.json);
    }
    let env = env(spec, args.offline)?;
    super::doctor::preflight("haimg build", crate::doctor::Need::Build, None)?;
    let opts = BuildOptions {
        roles: roles_or_all(&args.role),
        out_dir: args.out.clone(),
        init: args.init.clone(),
        verify: args.verify,
        allow_missing: args.allow_missing.iter().map(|r| Role::from(*r)).collect(),
        quiet: false,
        no_cache: args.no_cache,
        offline: args.offline,
    };
    let summary = build::build(&env, &opts).context("failed to build")?;
    eprint!("\n{}", render_summary(&summary, &opts.allow_missing));
    if args.json {
        output::json(&summary)?;
    }
    Ok(if summary.ok { Exit::Ok } else { Exit::Error })
}

/// `--init-only`: the init every image gets, from the workspace here.
fn init_only(json: bool) -> Result<Exit> {
    let root = project()?.root;
    let a = build::init::build(&SystemRunner, &root).context("failed to build haimg-init")?;
    eprintln!(
        "haimg-init: {} ({} bytes, limit {}), sha256 {}",
        a.path.display(),
        a.size,
        build::init::MAX_INIT_BYTES,
        a.sha256
    );
    if json {
        output::json(&a)?;
    }
    Ok(Exit::Ok)
}

/// The table people read at the end of a build.
pub fn render_summary(s: &Summary, allow_missing: &[Role]) -> String {
    let rows: Vec<Vec<String>> = s
        .roles
        .iter()
        .map(|r| {
            let status = match r.status {
                Status::Built => "built".to_string(),
                Status::Cached => "up to date".into(),
                Status::Missing if allow_missing.contains(&r.role) => "not built (allowed)".into(),
                Status::Missing => "NOT BUILT".into(),
                Status::Failed => "FAILED".into(),
                Status::Mismatch => "NOT REPRODUCIBLE".into(),
            };
            vec![
                r.role.to_string(),
                status,
                r.size
                    .map(|b| format!("{:.1} MB", b as f64 / 1e6))
                    .unwrap_or_else(|| "-".into()),
                r.sha256
                    .as_deref()
                    .map(|h| h[..16].to_string())
                    .unwrap_or_else(|| "-".into()),
                format!("{:.1} s", r.seconds),
                r.template
                    .as_ref()
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|| {
                        r.error
                            .as_deref()
                            .and_then(|e| e.lines().next())
                            .unwrap_or("")
                            .to_string()
                    }),
            ]
        })
        .collect();
    let mut out = output::table(
        &["ROLE", "STATUS", "SIZE", "SHA256", "TIME", "TEMPLATE"],
        &rows,
    );
    if !s.ok {
        let missing: Vec<String> = s
            .roles
            .iter()
            .filter(|r| r.status == Status::Missing && !allow_missing.contains(&r.role))
            .map(|r| r.role.to_string())
            .collect();
        if !missing.is_empty() {
            out.push_str(&format!(
                "{} could not be built here; `--allow-missing {}` accepts that\n",
                missing.join(", "),
                missing.join(",")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_can_be_named_on_the_command_line() {
        for r in Role::ALL {
            assert_eq!(Role::from(RoleArg::from(r)), r);
            let arg = RoleArg::from_str(r.as_str(), false).unwrap();
            assert_eq!(Role::from(arg), r);
        }
        assert_eq!(RoleArg::value_variants().len(), Role::ALL.len());
    }
}
