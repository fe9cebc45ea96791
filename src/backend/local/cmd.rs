//! Running host programs (`lxc-*`, `ip`, `tar`, `umount`) under a contract.
//!
//! Every command goes through a [`CommandRunner`]: [`SystemRunner`] runs it for
//! real, [`FakeRunner`] records it and answers from a script (tests). Invariants:
//! every command has a timeout and is killed when it runs over; stdin is
//! `/dev/null`; stdout and stderr are spooled to anonymous temp files, not
//! pipes, because `lxc-start -d` leaves a daemon holding the inherited
//! descriptors and a pipe reader would wait for the container to stop.
//! Failures name the program, the argv, the exit code or signal and the tail
//! of stderr, with a hint for the common cases.

use std::collections::VecDeque;
use std::fmt;
use std::io::{Read, Seek};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One program invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub timeout: Duration,
}

impl Cmd {
    pub fn new(program: &str, timeout: Duration) -> Cmd {
        Cmd {
            program: program.to_string(),
            args: Vec::new(),
            timeout,
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

    /// `program arg1 arg2`, each word shell-quoted when it needs it.
    pub fn argv(&self) -> String {
        std::iter::once(&self.program)
            .chain(self.args.iter())
            .map(|w| quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv())
    }
}

fn quote(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Code(i32),
    Signal(i32),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Code(c) => write!(f, "exit code {c}"),
            Ended::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// What a finished program left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub ended: Ended,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(stdout: &str) -> Output {
        Output {
            ended: Ended::Code(0),
            stdout: stdout.to_string(),
            stderr: String::new(),
        }
    }

    pub fn fail(code: i32, stderr: &str) -> Output {
        Output {
            ended: Ended::Code(code),
            stdout: String::new(),
            stderr: stderr.to_string(),
        }
    }

    pub fn success(&self) -> bool {
        self.ended == Ended::Code(0)
    }
}

/// A command that could not be run, ran too long, or failed.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("failed to run `{argv}`: {source}{}", hint_spawn(.source))]
    Spawn {
        program: String,
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` timed out after {}s and was killed", .after.as_secs_f32())]
    Timeout {
        program: String,
        argv: String,
        after: Duration,
    },
    #[error("`{argv}` failed with {ended}{}{}", tail_suffix(.stderr_tail), hint_exit(*.ended))]
    Failed {
        program: String,
        argv: String,
        ended: Ended,
        stderr_tail: String,
    },
}

fn hint_spawn(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::NotFound {
        " (not installed? the local backend needs lxc, iproute2, tar and zstd: `apt-get install lxc uidmap iproute2 tar zstd`)"
    } else {
        ""
    }
}

fn hint_exit(e: Ended) -> &'static str {
    match e {
        Ended::Code(127) => " (command not found: is it installed?)",
        Ended::Code(126) => " (not executable: permission denied?)",
        _ => "",
    }
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// The last `n` non-empty lines of `text`, joined with " | ".
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

impl CmdError {
    /// The failed command's stderr tail, if it ran to the end.
    pub fn stderr_tail(&self) -> Option<&str> {
        match self {
            CmdError::Failed { stderr_tail, .. } => Some(stderr_tail),
            _ => None,
        }
    }
}

/// Runs host programs. `run` returns the output whatever the exit status;
/// [`CommandRunner::run_ok`] turns a non-zero exit into [`CmdError::Failed`].
pub trait CommandRunner: Send + Sync {
    fn run(&self, cmd: &Cmd) -> Result<Output, CmdError>;

    fn run_ok(&self, cmd: &Cmd) -> Result<Output, CmdError> {
        let out = self.run(cmd)?;
        if out.success() {
            Ok(out)
        } else {
            Err(failed(cmd, &out))
        }
    }
}

/// The [`CmdError::Failed`] for a finished command.
pub fn failed(cmd: &Cmd, out: &Output) -> CmdError {
    CmdError::Failed {
        program: cmd.program.clone(),
        argv: cmd.argv(),
        ended: out.ended,
        stderr_tail: tail(&out.stderr, 3),
    }
}

/// Runs programs on this host.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output, CmdError> {
        let spawn_err = |source| CmdError::Spawn {
            program: cmd.program.clone(),
            argv: cmd.argv(),
            source,
        };
        let mut out_file = tempfile::tempfile().map_err(spawn_err)?;
        let mut err_file = tempfile::tempfile().map_err(spawn_err)?;
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(out_file.try_clone().map_err(spawn_err)?)
            .stderr(err_file.try_clone().map_err(spawn_err)?)
            .spawn()
            .map_err(spawn_err)?;
        tracing::debug!("run: {cmd}");
        let deadline = Instant::now() + cmd.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    // The child is ours: kill it by its PID and reap it.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CmdError::Timeout {
                        program: cmd.program.clone(),
                        argv: cmd.argv(),
                        after: cmd.timeout,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(spawn_err(e)),
            }
        };
        let ended = match (status.code(), status.signal()) {
            (Some(c), _) => Ended::Code(c),
            (None, Some(s)) => Ended::Signal(s),
            // A status has either a code or a signal on Unix.
            (None, None) => Ended::Code(-1),
        };
        Ok(Output {
            ended,
            stdout: read_all(&mut out_file),
            stderr: read_all(&mut err_file),
        })
    }
}

fn read_all(f: &mut std::fs::File) -> String {
    let mut buf = Vec::new();
    let _ = f.rewind();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

type Handler = Box<dyn Fn(&Cmd) -> Result<Output, CmdError> + Send + Sync>;

struct Rule {
    /// Matches when the argv (as [`Cmd::argv`]) contains this text.
    pattern: String,
    handler: Handler,
    /// Answer at most this many times (`None`: always).
    remaining: Option<usize>,
}

/// A recording fake: answers from rules (first match wins, later rules
/// shadow earlier ones), records every call, and fails the Nth call on
/// request. Unmatched commands succeed with empty output.
#[derive(Clone, Default)]
pub struct FakeRunner {
    inner: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<Cmd>,
    rules: VecDeque<Rule>,
    fail_call: Option<usize>,
}

impl FakeRunner {
    pub fn new() -> FakeRunner {
        FakeRunner::default()
    }

    /// Answer commands whose argv contains `pattern` with `handler`.
    pub fn on(
        &self,
        pattern: &str,
        handler: impl Fn(&Cmd) -> Result<Output, CmdError> + Send + Sync + 'static,
    ) {
        self.push(pattern, Box::new(handler), None);
    }

    /// Like [`FakeRunner::on`], but only for the next `times` matches.
    pub fn on_times(
        &self,
        pattern: &str,
        times: usize,
        handler: impl Fn(&Cmd) -> Result<Output, CmdError> + Send + Sync + 'static,
    ) {
        self.push(pattern, Box::new(handler), Some(times));
    }

    fn push(&self, pattern: &str, handler: Handler, remaining: Option<usize>) {
        self.lock().rules.push_front(Rule {
            pattern: pattern.to_string(),
            handler,
            remaining,
        });
    }

    /// Make call number `n` (1-based, counting every recorded call) exit 1, once.
    pub fn fail_call(&self, n: usize) {
        self.lock().fail_call = Some(n);
    }

    pub fn calls(&self) -> Vec<Cmd> {
        self.lock().calls.clone()
    }

    /// Every call as one argv line, for snapshots.
    pub fn transcript(&self) -> String {
        self.calls()
            .iter()
            .map(|c| c.argv() + "\n")
            .collect::<String>()
    }

    pub fn clear(&self) {
        self.lock().calls.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A panic while holding the lock only happens in a failing test.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CommandRunner for FakeRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output, CmdError> {
        let argv = cmd.argv();
        let mut st = self.lock();
        st.calls.push(cmd.clone());
        if st.fail_call == Some(st.calls.len()) {
            st.fail_call = None;
            return Ok(Output::fail(1, "fake: injected failure"));
        }
        let idx = st
            .rules
            .iter()
            .position(|r| argv.contains(&r.pattern) && r.remaining.is_none_or(|n| n > 0));
        let Some(idx) = idx else {
            return Ok(Output::ok(""));
        };
        if let Some(n) = st.rules[idx].remaining.as_mut() {
            *n -= 1;
        }
        // Run the handler without the lock: it may call back into the fake.
        // `idx` came from `position()` on this locked list, so it is in range.
        let rule = st.rules.remove(idx).expect("index from position()");
        drop(st);
        let result = (rule.handler)(cmd);
        self.lock().rules.insert(idx, rule);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout_ms: u64) -> Cmd {
        Cmd::new("sh", Duration::from_millis(timeout_ms)).args(["-c", script])
    }

    #[test]
    fn captures_output_and_exit_code() {
        let out = SystemRunner
            .run(&sh("echo out; echo err >&2; exit 3", 5000))
            .unwrap();
        assert_eq!(out.ended, Ended::Code(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn failure_names_argv_code_and_stderr_tail() {
        let e = SystemRunner
            .run_ok(&sh(
                "echo one >&2; echo two >&2; echo three >&2; echo four >&2; exit 2",
                5000,
            ))
            .unwrap_err();
        insta::assert_snapshot!(e.to_string(), @"`sh -c 'echo one >&2; echo two >&2; echo three >&2; echo four >&2; exit 2'` failed with exit code 2: two | three | four");
    }

    #[test]
    fn signal_is_reported() {
        let e = SystemRunner.run_ok(&sh("kill -9 $$", 5000)).unwrap_err();
        assert_eq!(e.to_string(), "`sh -c 'kill -9 $$'` failed with signal 9");
    }

    #[test]
    fn timeout_kills_the_child() {
        let start = Instant::now();
        let e = SystemRunner.run(&sh("exec sleep 30", 200)).unwrap_err();
        assert!(matches!(e, CmdError::Timeout { .. }), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(
            e.to_string(),
            "`sh -c 'exec sleep 30'` timed out after 0.2s and was killed"
        );
    }

    #[test]
    fn missing_program_has_a_hint() {
        let e = SystemRunner
            .run(&Cmd::new("haimg-no-such-program", Duration::from_secs(1)))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("failed to run `haimg-no-such-program`: "),
            "{msg}"
        );
        assert!(msg.contains("not installed?"), "{msg}");
    }

    #[test]
    fn daemon_holding_stdout_does_not_block() {
        // Like `lxc-start -d`: a background child keeps the descriptors open.
        let start = Instant::now();
        let out = SystemRunner
            .run(&sh("sleep 3 & echo started", 5000))
            .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, "started\n");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn fake_records_matches_and_fails_nth() {
        let fake = FakeRunner::new();
        fake.on("lxc-info", |_| Ok(Output::ok("State: RUNNING\n")));
        fake.on_times("lxc-info", 1, |_| Ok(Output::fail(1, "x doesn't exist")));
        fake.fail_call(4);
        let info = Cmd::new("lxc-info", Duration::from_secs(1))
            .arg("-n")
            .arg("x");
        assert!(!fake.run(&info).unwrap().success());
        assert_eq!(fake.run(&info).unwrap().stdout, "State: RUNNING\n");
        assert!(fake
            .run(&Cmd::new("ip", Duration::from_secs(1)))
            .unwrap()
            .success());
        assert!(!fake
            .run(&Cmd::new("ip", Duration::from_secs(1)))
            .unwrap()
            .success());
        insta::assert_snapshot!(fake.transcript(), @r"
        lxc-info -n x
        lxc-info -n x
        ip
        ip
        ");
    }

    #[test]
    fn quoting() {
        let c = Cmd::new("lxc-attach", Duration::from_secs(1)).args(["-n", "a b", "it's", ""]);
        assert_eq!(c.argv(), r"lxc-attach -n 'a b' 'it'\''s' ''");
    }
}
