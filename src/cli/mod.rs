//! Command-line interface: clap definitions, logging, exit codes.
//!
//! Each subcommand lives in its own module and returns `anyhow::Result<Exit>`.
//! stdout carries data (`--json`), stderr carries people-facing text.
//! Exit codes: 0 ok, 1 error, 2 usage or invalid spec, 3 golden mismatch.
//! A closed stdout (`haimg check | head`) ends the program quietly.

pub mod build;
mod check;
pub mod deploy;
pub mod doctor;
pub mod down;
mod gc;
pub mod local_outcome;
pub mod lock;
pub mod output;
mod rollback;
pub mod runlock;
pub mod secrets;
pub mod show;
mod status;
pub mod target;
mod test;

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::spec_file::LoadError;

/// How a command ended, beyond plain failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Error = 1,
    Usage = 2,
    GoldenMismatch = 3,
    /// `haimg status`: at rest, but not on the spec's version.
    Drift = 4,
}

#[derive(Debug, Parser)]
#[command(name = "haimg", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Cluster spec [default: ./haimg.yaml, else the embedded default]
    #[arg(long, global = true, value_name = "FILE", env = "HAIMG_SPEC")]
    pub spec: Option<PathBuf>,

    /// Log verbosity on stderr (RUST_LOG overrides it)
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the spec; print the plan and each tier's fault tolerance
    Check {
        /// Print the plan as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Print the embedded default spec (a starting point for haimg.yaml)
    Spec,
    /// Build the role templates (lb, mongo, webapp)
    Build(build::BuildArgs),
    /// Check the image locks (images/<role>.lock); `--update` re-resolves them
    Lock(lock::LockArgs),
    /// Upload templates and create or roll out the containers
    Deploy(deploy::DeployArgs),
    /// Show the members: state, template version and hash
    Status(status::StatusArgs),
    /// Swap back to the standby members of the previous version
    Rollback(rollback::RollbackArgs),
    /// Boot the templates locally and run the golden scenarios
    Test(test::TestArgs),
    /// Remove standby members and old templates
    Gc(gc::GcArgs),
    /// Remove everything a local deploy created
    Down(down::DownArgs),
    /// List the cluster's secrets (names, ages, fingerprints; never values) or rotate one
    Secrets(secrets::SecretsArgs),
    /// Check this host's prerequisites of build, deploy and test, with fixes
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Parse the command line, run, and return the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage as i32
            } else {
                0
            };
            let _ = e.print();
            return code;
        }
    };
    init_logging(cli.log_level);
    match run(&cli) {
        Ok(exit) => exit as i32,
        Err(e) => report(&e),
    }
}

fn run(cli: &Cli) -> anyhow::Result<Exit> {
    match &cli.command {
        Command::Check { json } => check::run(cli.spec.as_deref(), *json),
        Command::Spec => {
            output::stdout(haimg_model::DEFAULT_SPEC)?;
            Ok(Exit::Ok)
        }
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "haimg", &mut buf);
            output::stdout(&String::from_utf8_lossy(&buf))?;
            Ok(Exit::Ok)
        }
        Command::Build(args) => build::run(cli.spec.as_deref(), args),
        Command::Lock(args) => lock::run(cli.spec.as_deref(), args),
        Command::Deploy(args) => deploy::run(cli.spec.as_deref(), args),
        Command::Status(args) => status::run(cli.spec.as_deref(), args),
        Command::Rollback(args) => rollback::run(cli.spec.as_deref(), args),
        Command::Test(args) => test::run(cli.spec.as_deref(), args),
        Command::Gc(args) => gc::run(cli.spec.as_deref(), args),
        Command::Down(args) => down::run(cli.spec.as_deref(), args),
        Command::Secrets(args) => secrets::run(cli.spec.as_deref(), args),
        Command::Doctor(args) => doctor::run(args),
    }
}

/// Print an error chain on stderr and pick the exit code.
fn report(e: &anyhow::Error) -> i32 {
    if output::is_broken_pipe(e) {
        return 0;
    }
    if let Some(LoadError::Invalid { source_name, err }) = e.downcast_ref::<LoadError>() {
        output::print_problems(&source_name.to_string(), &err.problems);
        return Exit::Usage as i32;
    }
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    Exit::Error as i32
}

fn init_logging(level: LogLevel) {
    use tracing_subscriber::EnvFilter;
    let default = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own checks of the definitions (conflicting flags, bad defaults,
    /// ids used twice), which otherwise fire only when a command is run.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
