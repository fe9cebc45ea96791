//! `haimg doctor`: the host prerequisites of build, local deploy and test,
//! one line each with the fix ([`crate::doctor`]); `--json` on stdout.
//! Exit 0 when nothing is missing, else 1.
//!
//! [`preflight`] is how `build`, `deploy` and `test` run their part of the
//! same checks before they start.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{output, Exit};
use crate::doctor::host::SystemHost;
use crate::doctor::{self, Need, Options};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NeedArg {
    Build,
    Deploy,
    Test,
}

impl From<NeedArg> for Need {
    fn from(n: NeedArg) -> Need {
        match n {
            NeedArg::Build => Need::Build,
            NeedArg::Deploy => Need::Deploy,
            NeedArg::Test => Need::Test,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// What to check for: build, deploy (local LXC, also `haimg test`), test
    /// (`make test`: build and deploy, plus the test suite's tools)
    /// [default: build,deploy]
    #[arg(long = "for", value_enum, value_delimiter = ',', value_name = "PARTS")]
    pub needs: Vec<NeedArg>,
    /// Print the checks as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// The cache directory of the project in the current directory (else of `./`).
fn cache_dir() -> PathBuf {
    let root = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    crate::build::Project { root }.cache_dir()
}

pub fn run(args: &DoctorArgs) -> Result<Exit> {
    let needs: Vec<Need> = if args.needs.is_empty() {
        vec![Need::Build, Need::Deploy]
    } else {
        args.needs.iter().map(|n| Need::from(*n)).collect()
    };
    let opts = Options::detect(&needs, cache_dir());
    let report = doctor::run(&SystemHost::new(), &opts);
    if args.json {
        output::json(&report)?;
    } else {
        eprint!("{}", report.render());
    }
    Ok(if report.ok { Exit::Ok } else { Exit::Error })
}

/// Stop `command` with the missing prerequisites of `need` and their fixes.
/// `state_root` overrides where local containers would live (`haimg test`).
pub fn preflight(command: &str, need: Need, state_root: Option<&Path>) -> Result<()> {
    let mut opts = Options::detect(&[need], cache_dir());
    if let Some(r) = state_root {
        opts.state_root = r.to_path_buf();
    }
    doctor::preflight(&SystemHost::new(), command, need, &opts)?;
    Ok(())
}
