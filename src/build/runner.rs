//! The seam between the build and every external program it runs
//! (mmdebstrap, apt-get, dpkg-deb, strip, chroot, unshare, cargo).
//!
//! [`CommandRunner`] takes a fully described [`Cmd`] — program, argv,
//! environment, working directory, timeout — and returns its captured output.
//! [`RealRunner`] spawns the process in its own process group so a timeout
//! kills the whole tree; [`FakeRunner`] records every call and answers from a
//! script, so tests see the exact argv the build would run without running it.
//!
//! Invariants: every command has a timeout; a failure always names the
//! program, the argv, the exit code or signal, and the tail of stderr, with a
//! hint for the common cases (exit 127 / not found → not installed).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much of stderr a failure report keeps.
const STDERR_TAIL_LINES: usize = 15;

/// One external command, fully described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    /// The complete environment of the child: nothing is inherited, so a
    /// build does not depend on the caller's shell (TZ, LANG, umask-setting rc files).
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub timeout: Duration,
    /// Show the child's stderr live (long steps at debug log level).
    pub stream_stderr: bool,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: base_env(),
            cwd: None,
            timeout: Duration::from_secs(60),
            stream_stderr: false,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Cmd {
        self.env.insert(k.into(), v.into());
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Cmd {
        self.cwd = Some(dir.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }

    pub fn stream_stderr(mut self, on: bool) -> Cmd {
        self.stream_stderr = on;
        self
    }

    /// `program arg1 arg2`, shell-quoted where needed, for messages and snapshots.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The environment every child starts from: a fixed PATH, C.UTF-8, UTC.
pub fn base_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    env.insert("LC_ALL".into(), "C.UTF-8".into());
    env.insert("TZ".into(), "UTC".into());
    env.insert("HOME".into(), "/root".into());
    env
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A finished command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// How a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("`{program}` is not installed (running `{argv}`){}", hint_suffix(.hint))]
    NotFound {
        program: String,
        argv: String,
        hint: Option<String>,
    },
    #[error("`{argv}` did not finish within {}s and was killed{}", .timeout.as_secs(), tail_suffix(.stderr_tail))]
    Timeout {
        program: String,
        argv: String,
        timeout: Duration,
        stderr_tail: String,
    },
    #[error("`{argv}` {how}{}{}", tail_suffix(.stderr_tail), hint_suffix(.hint))]
    Failed {
        program: String,
        argv: String,
        /// "exited with code 1" or "was killed by signal 9".
        how: String,
        code: Option<i32>,
        stderr_tail: String,
        hint: Option<String>,
    },
    #[error("failed to run `{argv}`: {message}")]
    Spawn {
        program: String,
        argv: String,
        message: String,
    },
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        let indented: Vec<String> = tail.lines().map(|l| format!("    {l}")).collect();
        format!("; stderr ends with:\n{}", indented.join("\n"))
    }
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!("\n  hint: {h}"))
        .unwrap_or_default()
}

impl RunError {
    /// The exit code, when the program ran and exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            RunError::Failed { code, .. } => *code,
            _ => None,
        }
    }

    pub fn stderr_tail(&self) -> &str {
        match self {
            RunError::Failed { stderr_tail, .. } | RunError::Timeout { stderr_tail, .. } => {
                stderr_tail
            }
            _ => "",
        }
    }
}

/// The last lines of a stream, for error reports.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A hint for programs whose absence has a known fix.
fn install_hint(program: &str) -> Option<String> {
    let pkg = match program {
        "mmdebstrap" => "mmdebstrap",
        "apt-get" | "apt-cache" => "apt",
        "dpkg-deb" => "dpkg",
        "strip" => "binutils",
        "unshare" => "util-linux",
        "cargo" => return Some("install Rust with rustup (https://rustup.rs)".into()),
        _ => return None,
    };
    Some(format!(
        "install it with `apt-get install {pkg}` (or run `make setup`)"
    ))
}

/// Runs external commands.
pub trait CommandRunner: Send + Sync {
    /// Run to completion; `Ok` only for exit status 0.
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError>;
}

/// Spawns real processes.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealRunner;

impl CommandRunner for RealRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        use std::os::unix::process::{CommandExt, ExitStatusExt};

        let argv = cmd.display();
        tracing::debug!("run: {argv}");
        let mut c = Command::new(&cmd.program);
        c.args(&cmd.args)
            .env_clear()
            .envs(&cmd.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: a timeout kills the whole tree (mmdebstrap forks apt, dpkg, …).
            .process_group(0);
        if let Some(d) = &cmd.cwd {
            c.current_dir(d);
        }
        let mut child = c.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RunError::NotFound {
                    program: cmd.program.clone(),
                    argv: argv.clone(),
                    hint: install_hint(&cmd.program),
                }
            } else {
                RunError::Spawn {
                    program: cmd.program.clone(),
                    argv: argv.clone(),
                    message: e.to_string(),
                }
            }
        })?;
        let pid = child.id() as i32;
        let out = child.stdout.take().map(|s| read_all(s, false));
        let err = child.stderr.take().map(|s| read_all(s, cmd.stream_stderr));
        let deadline = Instant::now() + cmd.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() >= deadline => {
                    // SAFETY: pid is our child's process group id (process_group(0) above).
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    return Err(RunError::Spawn {
                        program: cmd.program.clone(),
                        argv,
                        message: format!("waiting failed: {e}"),
                    })
                }
            }
        };
        let stdout = out
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let stderr = err
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let Some(status) = status else {
            return Err(RunError::Timeout {
                program: cmd.program.clone(),
                argv,
                timeout: cmd.timeout,
                stderr_tail: tail(&stderr, STDERR_TAIL_LINES),
            });
        };
        if status.success() {
            return Ok(Output { stdout, stderr });
        }
        let (how, code) = match (status.code(), status.signal()) {
            (Some(c), _) => (format!("exited with code {c}"), Some(c)),
            (None, Some(s)) => (format!("was killed by signal {s}"), None),
            (None, None) => ("ended abnormally".to_string(), None),
        };
        let hint = if code == Some(127) {
            install_hint(&cmd.program)
        } else {
            None
        };
        Err(RunError::Failed {
            program: cmd.program.clone(),
            argv,
            how,
            code,
            stderr_tail: tail(&stderr, STDERR_TAIL_LINES),
            hint,
        })
    }
}

fn read_all<R: Read + Send + 'static>(mut r: R, echo: bool) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if echo {
                        use std::io::Write;
                        let _ = std::io::stderr().write_all(&chunk[..n]);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        buf
    })
}

/// What a scripted fake answers.
pub type FakeReply = Result<Output, RunError>;
type Handler = dyn Fn(&Cmd) -> Option<FakeReply> + Send + Sync;

/// A recording fake: keeps every [`Cmd`] it was given, answers from handlers
/// (first match wins), and succeeds with empty output otherwise.
#[derive(Clone, Default)]
pub struct FakeRunner {
    calls: Arc<Mutex<Vec<Cmd>>>,
    handlers: Arc<Mutex<Vec<Box<Handler>>>>,
}

impl FakeRunner {
    pub fn new() -> FakeRunner {
        FakeRunner::default()
    }

    /// Answer commands for which `f` returns `Some`.
    pub fn on(&self, f: impl Fn(&Cmd) -> Option<FakeReply> + Send + Sync + 'static) -> &Self {
        self.handlers
            .lock()
            .expect("fake runner lock poisoned")
            .push(Box::new(f));
        self
    }

    /// Like [`FakeRunner::on`], but tried before every handler added so far.
    pub fn first(&self, f: impl Fn(&Cmd) -> Option<FakeReply> + Send + Sync + 'static) -> &Self {
        self.handlers
            .lock()
            .expect("fake runner lock poisoned")
            .insert(0, Box::new(f));
        self
    }

    /// Make calls of `program` fail with `code` and `stderr`.
    pub fn fail(&self, program: &str, code: i32, stderr: &str) -> &Self {
        let program = program.to_string();
        let stderr = stderr.to_string();
        self.on(move |c| {
            (c.program == program).then(|| {
                Err(RunError::Failed {
                    program: c.program.clone(),
                    argv: c.display(),
                    how: format!("exited with code {code}"),
                    code: Some(code),
                    stderr_tail: stderr.clone(),
                    hint: None,
                })
            })
        })
    }

    /// Every command run so far, in order.
    pub fn calls(&self) -> Vec<Cmd> {
        self.calls
            .lock()
            .expect("fake runner lock poisoned")
            .clone()
    }
}

impl CommandRunner for FakeRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        self.calls
            .lock()
            .expect("fake runner lock poisoned")
            .push(cmd.clone());
        let handlers = self.handlers.lock().expect("fake runner lock poisoned");
        for h in handlers.iter() {
            if let Some(reply) = h(cmd) {
                return reply;
            }
        }
        Ok(Output::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_runner_reports_exit_code_and_stderr_tail() {
        let cmd = Cmd::new("sh").args(["-c", "echo one >&2; echo two >&2; exit 3"]);
        let err = RealRunner.run(&cmd).unwrap_err();
        assert_eq!(err.code(), Some(3));
        let msg = err.to_string();
        assert!(
            msg.contains("`sh -c 'echo one >&2; echo two >&2; exit 3'` exited with code 3"),
            "{msg}"
        );
        assert!(msg.contains("    one\n    two"), "{msg}");
    }

    #[test]
    fn real_runner_kills_on_timeout() {
        let cmd = Cmd::new("sh")
            .args(["-c", "echo started >&2; sleep 30"])
            .timeout(Duration::from_millis(300));
        let t = Instant::now();
        let err = RealRunner.run(&cmd).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(matches!(err, RunError::Timeout { .. }), "{err:?}");
        assert!(
            err.to_string().contains("did not finish within 0s"),
            "{err}"
        );
    }

    #[test]
    fn real_runner_names_a_missing_program_with_a_hint() {
        let err = RealRunner
            .run(&Cmd::new("haimg-no-such-program-xyz").arg("--version"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`haimg-no-such-program-xyz` is not installed (running `haimg-no-such-program-xyz --version`)"
        );
        let err = Cmd::new("mmdebstrap");
        let e = RunError::NotFound {
            program: err.program.clone(),
            argv: err.display(),
            hint: install_hint("mmdebstrap"),
        };
        assert!(e.to_string().contains("apt-get install mmdebstrap"));
    }

    #[test]
    fn real_runner_passes_only_the_given_environment() {
        let out = RealRunner
            .run(
                &Cmd::new("sh")
                    .args(["-c", "echo \"$TZ|$HAIMG_X|${USER:-unset}\""])
                    .env("HAIMG_X", "1"),
            )
            .unwrap();
        assert_eq!(out.stdout_str(), "UTC|1|unset\n");
    }

    #[test]
    fn fake_runner_records_and_fails_on_request() {
        let fake = FakeRunner::new();
        fake.fail("apt-get", 100, "E: boom");
        assert!(fake.run(&Cmd::new("true")).is_ok());
        let err = fake.run(&Cmd::new("apt-get").arg("update")).unwrap_err();
        assert_eq!(err.code(), Some(100));
        let calls: Vec<String> = fake.calls().iter().map(Cmd::display).collect();
        assert_eq!(calls, ["true", "apt-get update"]);
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let c = Cmd::new("mmdebstrap").args(["--include=a,b", "deb [trusted=yes] copy:///x ./"]);
        assert_eq!(
            c.display(),
            "mmdebstrap --include=a,b 'deb [trusted=yes] copy:///x ./'"
        );
    }
}
