//! `haimg status`: per slot the live and the standby member, their version,
//! template hash, generation and power state (table on stdout, or `--json`).
//! On the local backend a role with no container at all (mongo, when its
//! template could not be built) is left out rather than reported missing
//! ([`Target::scope`]).
//!
//! Exit codes: 0 every slot at rest on the spec's version; 4 every slot at
//! rest, some on another version than the spec's (drift: `haimg deploy`
//! rolls it out); 1 a slot down, interrupted, absent or held by something
//! haimg keeps out of.

use std::path::Path;

use anyhow::{Context, Result};

use super::target::Target;
use super::{output, show, Exit};
use crate::fleet::slot;
use crate::fleet::status;
use crate::spec_file;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the status as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(spec: Option<&Path>, args: &StatusArgs) -> Result<Exit> {
    let loaded = spec_file::load(spec)?;
    let target = Target::open(&loaded, false, false)?;
    let backend = target.backend();
    let inventory = backend.inventory().context("failed to read the target")?;
    let cluster = target.scope(&loaded.checked.cluster, &inventory);
    let views =
        slot::observe_from(backend, &cluster, &inventory).context("failed to read the target")?;
    let st = status::of(&cluster, &views);
    if args.json {
        output::json(&st)?;
    } else {
        output::stdout(&show::status(&st))?;
    }
    Ok(if st.converged() {
        Exit::Ok
    } else if st.at_rest() {
        Exit::Drift
    } else {
        Exit::Error
    })
}
