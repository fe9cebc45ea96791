//! The init's command line. As PID 1 it takes no arguments and boots; the
//! subcommands exist for keepalived (`check-tcp`), for tests and debugging
//! (`supervise`), and for the image build (`render`, to check templates).
//!
//! Exit codes: 0 ok, 1 error (a failed check), 2 usage.

use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// PID 1: the whole boot.
    Boot,
    /// `check-tcp ADDR`: exit 0 when a TCP connection to ADDR succeeds.
    CheckTcp(String),
    /// `vrrp-state STATE`: keepalived's notify scripts record its state.
    VrrpState(String),
    /// `supervise FILE [--status PATH]`: run the services described in FILE
    /// (JSON: `{"services": [...], "backoff": {...}}`) until a halt signal.
    Supervise {
        file: PathBuf,
        status: PathBuf,
    },
    /// `render --root DIR --slot SLOT [--out DIR]`: render a member's configs
    /// from DIR/etc/haimg (plan, image, templates) and print or write them.
    Render {
        root: PathBuf,
        slot: String,
        out: Option<PathBuf>,
    },
    /// `boot --root DIR [--status PATH]`: the boot steps against a directory,
    /// not as PID 1 (tests): no mounts, no network changes.
    BootDir {
        root: PathBuf,
        status: PathBuf,
    },
    Version,
    Help,
}

pub const USAGE: &str = "usage: haimg-init                      (as PID 1: boot the container)
       haimg-init check-tcp ADDR:PORT
       haimg-init vrrp-state MASTER|BACKUP|FAULT
       haimg-init supervise FILE.json [--status PATH]
       haimg-init render --root DIR --slot SLOT [--out DIR]
       haimg-init boot --root DIR [--status PATH]   (tests: boot steps against DIR)
       haimg-init --version";

/// Parse arguments (without `argv[0]`).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let Some(first) = p.next()? else {
        return Ok(Command::Boot);
    };
    let sub = match first {
        Long("version") | Short('V') => return Ok(Command::Version),
        Long("help") | Short('h') => return Ok(Command::Help),
        Value(v) => v.string()?,
        other => return Err(other.unexpected()),
    };
    let cmd = match sub.as_str() {
        "check-tcp" => Command::CheckTcp(p.value()?.string()?),
        "vrrp-state" => match p.value()?.string()?.as_str() {
            s @ ("MASTER" | "BACKUP" | "FAULT") => Command::VrrpState(s.into()),
            other => return Err(format!("unknown VRRP state {other:?}").into()),
        },
        "supervise" => {
            let file = PathBuf::from(p.value()?);
            let mut status = PathBuf::from(haimg_model::image::STATUS_FILE);
            while let Some(arg) = p.next()? {
                match arg {
                    Long("status") => status = p.value()?.into(),
                    other => return Err(other.unexpected()),
                }
            }
            return Ok(Command::Supervise { file, status });
        }
        "boot" => {
            let (mut root, mut status) = (None, None);
            while let Some(arg) = p.next()? {
                match arg {
                    Long("root") => root = Some(PathBuf::from(p.value()?)),
                    Long("status") => status = Some(PathBuf::from(p.value()?)),
                    other => return Err(other.unexpected()),
                }
            }
            let root: PathBuf = root.ok_or("missing --root")?;
            let status = status.unwrap_or_else(|| root.join("run/haimg/status.json"));
            return Ok(Command::BootDir { root, status });
        }
        "render" => {
            let (mut root, mut slot, mut out) = (None, None, None);
            while let Some(arg) = p.next()? {
                match arg {
                    Long("root") => root = Some(PathBuf::from(p.value()?)),
                    Long("slot") => slot = Some(p.value()?.string()?),
                    Long("out") => out = Some(PathBuf::from(p.value()?)),
                    other => return Err(other.unexpected()),
                }
            }
            return Ok(Command::Render {
                root: root.ok_or("missing --root")?,
                slot: slot.ok_or("missing --slot")?,
                out,
            });
        }
        other => return Err(format!("unknown command {other:?}").into()),
    };
    if let Some(arg) = p.next()? {
        return Err(arg.unexpected());
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Command, String> {
        parse(a.iter().map(OsString::from)).map_err(|e| e.to_string())
    }

    #[test]
    fn commands() {
        assert_eq!(args(&[]), Ok(Command::Boot));
        assert_eq!(
            args(&["check-tcp", "127.0.0.1:80"]),
            Ok(Command::CheckTcp("127.0.0.1:80".into()))
        );
        assert_eq!(
            args(&["supervise", "s.json", "--status", "/tmp/x.json"]),
            Ok(Command::Supervise {
                file: "s.json".into(),
                status: "/tmp/x.json".into()
            })
        );
        assert_eq!(args(&["--version"]), Ok(Command::Version));
        assert_eq!(args(&["bogus"]), Err("unknown command \"bogus\"".into()));
        assert_eq!(args(&["check-tcp"]), Err("missing argument".into()));
        assert_eq!(
            args(&["vrrp-state", "BACKUP"]),
            Ok(Command::VrrpState("BACKUP".into()))
        );
        assert_eq!(
            args(&["vrrp-state", "backup"]),
            Err("unknown VRRP state \"backup\"".into())
        );
        assert_eq!(
            args(&["render", "--slot", "nginx1"]),
            Err("missing --root".into())
        );
    }
}
