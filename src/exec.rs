//! Running external programs under one contract: the build's (mmdebstrap,
//! apt-get, dpkg-deb, strip, unshare, cargo) and the local backend's
//! (`lxc-*`, `ip`, `nft`, `tar`, `umount`).
//!
//! Every command goes through a [`CommandRunner`]: [`SystemRunner`] runs it,
//! [`FakeRunner`] records it and answers from a script (tests). Invariants:
//! - every [`Cmd`] has a timeout (a constructor argument); the child leads its
//!   own process group, and when it runs over the whole group is killed
//!   (mmdebstrap's apt and dpkg go with it);
//! - the environment is stated by the [`Cmd`]: the caller's plus additions
//!   ([`Cmd::new`]), or exactly the given variables ([`Cmd::hermetic`]);
//! - stdin is `/dev/null`; stdout and stderr are spooled to anonymous temp
//!   files, not pipes, because `lxc-start -d` leaves a daemon holding the
//!   inherited descriptors and a pipe reader would wait for the container to
//!   stop. Live stderr ([`Cmd::stream_stderr`]) is copied from that file while
//!   the child runs;
//! - a failure names the program, the argv, the exit code or signal and the
//!   tail of stderr, with a hint for the common cases (not installed, exit 127
//!   or 126).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many non-blank lines of stderr a failure report keeps.
const STDERR_TAIL_LINES: usize = 15;

/// The PATH of a hermetic command (and of commands run inside a CT).
pub const STANDARD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a child's environment starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvBase {
    /// The caller's environment, with [`Cmd::env`] set on top.
    Inherit,
    /// Nothing inherited: [`Cmd::env`] is the child's complete environment.
    Empty,
}

/// One program invocation, fully described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env_base: EnvBase,
    /// Variables set for the child (on top of `env_base`).
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub timeout: Duration,
    /// Copy the child's stderr to ours while it runs (long build steps).
    pub stream_stderr: bool,
}

impl Cmd {
    /// `program` with the caller's environment (host tools: `lxc-*`, `ip`, `tar`).
    pub fn new(program: impl Into<String>, timeout: Duration) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env_base: EnvBase::Inherit,
            env: BTreeMap::new(),
            cwd: None,
            timeout,
            stream_stderr: false,
        }
    }

    /// `program` with nothing inherited, so its result does not depend on
    /// the caller's shell (TZ, LANG, rc files): it starts from a fixed PATH,
    /// `LC_ALL=C.UTF-8`, `TZ=UTC` and `HOME=/root`.
    pub fn hermetic(program: impl Into<String>, timeout: Duration) -> Cmd {
        let mut c = Cmd::new(program, timeout);
        c.env_base = EnvBase::Empty;
        c.env("PATH", STANDARD_PATH)
            .env("LC_ALL", "C.UTF-8")
            .env("TZ", "UTC")
            .env("HOME", "/root")
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

    /// `program arg1 arg2`, each word shell-quoted when it needs it, for
    /// messages and snapshots.
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
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+%^".contains(&b));
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
            Ended::Code(c) => write!(f, "exited with code {c}"),
            Ended::Signal(s) => write!(f, "was killed by signal {s}"),
        }
    }
}

/// What a finished program left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub ended: Ended,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Default for Output {
    /// Exit 0, nothing written.
    fn default() -> Output {
        Output::ok("")
    }
}

impl Output {
    pub fn ok(stdout: &str) -> Output {
        Output {
            ended: Ended::Code(0),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    pub fn fail(code: i32, stderr: &str) -> Output {
        Output {
            ended: Ended::Code(code),
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    pub fn success(&self) -> bool {
        self.ended == Ended::Code(0)
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A command that could not be run, ran too long, or failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("`{program}` is not installed (running `{argv}`){}", hint_suffix(.hint))]
    NotFound {
        program: String,
        argv: String,
        hint: Option<String>,
    },
    #[error("failed to run `{argv}`: {error}")]
    Spawn {
        program: String,
        argv: String,
        error: std::io::Error,
    },
    #[error("`{argv}` timed out after {}s and was killed{}", .after.as_secs_f32(), tail_suffix(.stderr_tail))]
    Timeout {
        program: String,
        argv: String,
        after: Duration,
        stderr_tail: String,
    },
    #[error("`{argv}` {ended}{}{}", tail_suffix(.stderr_tail), hint_suffix(.hint))]
    Failed {
        program: String,
        argv: String,
        ended: Ended,
        stderr_tail: String,
        hint: Option<String>,
    },
}

impl RunError {
    /// The [`RunError::Failed`] for a command that ran to its end.
    pub fn failed(cmd: &Cmd, out: &Output) -> RunError {
        RunError::Failed {
            program: cmd.program.clone(),
            argv: cmd.argv(),
            ended: out.ended,
            stderr_tail: tail(&out.stderr, STDERR_TAIL_LINES),
            hint: failure_hint(&cmd.program, out.ended),
        }
    }

    /// The exit code, when the program ran and exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            RunError::Failed {
                ended: Ended::Code(c),
                ..
            } => Some(*c),
            _ => None,
        }
    }

    /// The last lines of stderr, when the program ran (empty otherwise).
    pub fn stderr_tail(&self) -> &str {
        match self {
            RunError::Failed { stderr_tail, .. } | RunError::Timeout { stderr_tail, .. } => {
                stderr_tail
            }
            _ => "",
        }
    }
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        return String::new();
    }
    let indented: Vec<String> = tail.lines().map(|l| format!("    {l}")).collect();
    format!("; stderr ends with:\n{}", indented.join("\n"))
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!("\n  hint: {h}"))
        .unwrap_or_default()
}

/// The last `n` non-blank lines of a stream, for error reports.
pub fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How to install a program whose absence has a known fix.
fn install_hint(program: &str) -> Option<String> {
    let name = program.rsplit('/').next().unwrap_or(program);
    let pkg = match name {
        "mmdebstrap" => "mmdebstrap",
        "apt-get" | "apt-cache" => "apt",
        "dpkg-deb" => "dpkg",
        "strip" => "binutils",
        "unshare" => "util-linux",
        "umount" => "mount",
        "ip" => "iproute2",
        "nft" => "nftables",
        "tar" => "tar",
        "zstd" => "zstd",
        n if n.starts_with("lxc-") => "lxc uidmap",
        "cargo" => return Some("install Rust with rustup (https://rustup.rs)".into()),
        _ => return None,
    };
    Some(format!(
        "install it with `apt-get install {pkg}` (or run `make setup`)"
    ))
}

/// A hint for exit statuses with a usual cause (shells and `chroot` report
/// a missing command as 127, a non-executable one as 126).
fn failure_hint(program: &str, ended: Ended) -> Option<String> {
    match ended {
        Ended::Code(127) => install_hint(program)
            .or_else(|| Some("a command was not found: is it installed?".into())),
        Ended::Code(126) => Some("a command could not be executed: permission denied?".into()),
        _ => None,
    }
}

/// Runs external programs.
pub trait CommandRunner: Send + Sync {
    /// Run `cmd` to its end and return what it left, whatever its exit
    /// status; an error only when it could not start or ran over its timeout.
    fn output(&self, cmd: &Cmd) -> Result<Output, RunError>;

    /// Like [`CommandRunner::output`], but a non-zero exit or a signal is
    /// [`RunError::Failed`].
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let out = self.output(cmd)?;
        if out.success() {
            Ok(out)
        } else {
            Err(RunError::failed(cmd, &out))
        }
    }
}

/// Runs programs on this host.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn output(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let argv = cmd.argv();
        let spawn_err = |error| RunError::Spawn {
            program: cmd.program.clone(),
            argv: argv.clone(),
            error,
        };
        let out_file = tempfile::tempfile().map_err(spawn_err)?;
        let err_file = tempfile::tempfile().map_err(spawn_err)?;
        let mut c = Command::new(&cmd.program);
        c.args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(out_file.try_clone().map_err(spawn_err)?)
            .stderr(err_file.try_clone().map_err(spawn_err)?)
            .process_group(0);
        if cmd.env_base == EnvBase::Empty {
            c.env_clear();
        }
        c.envs(&cmd.env);
        if let Some(d) = &cmd.cwd {
            c.current_dir(d);
        }
        tracing::debug!("run: {argv}");
        let mut child = c.spawn().map_err(|e| {
            // ENOENT also comes from a missing working directory.
            let missing_cwd = cmd.cwd.as_ref().is_some_and(|d| !d.is_dir());
            if e.kind() == std::io::ErrorKind::NotFound && !missing_cwd {
                RunError::NotFound {
                    program: cmd.program.clone(),
                    argv: argv.clone(),
                    hint: install_hint(&cmd.program),
                }
            } else {
                spawn_err(e)
            }
        })?;
        // A pid fits in pid_t; `Child::id` only widens it.
        let pgid = child.id() as libc::pid_t;
        let deadline = Instant::now() + cmd.timeout;
        let mut echoed = 0;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if cmd.stream_stderr {
                echoed = echo_new(&err_file, echoed);
            }
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    // SAFETY: kill(2) touches no memory; the child leads group
                    // `pgid` (process_group(0)) and is not reaped yet, so the
                    // id cannot have been reused.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => {
                    // Short commands return fast; long ones do not spin.
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(spawn_err(e)),
            }
        };
        if cmd.stream_stderr {
            echo_new(&err_file, echoed);
        }
        let stderr = read_from(&err_file, 0);
        let Some(status) = status else {
            return Err(RunError::Timeout {
                program: cmd.program.clone(),
                argv,
                after: cmd.timeout,
                stderr_tail: tail(&stderr, STDERR_TAIL_LINES),
            });
        };
        let ended = match (status.code(), status.signal()) {
            (Some(c), _) => Ended::Code(c),
            (None, Some(s)) => Ended::Signal(s),
            // A status has either a code or a signal on Unix.
            (None, None) => Ended::Code(-1),
        };
        Ok(Output {
            ended,
            stdout: read_from(&out_file, 0),
            stderr,
        })
    }
}

/// Everything in `f` from byte `pos` on. Positioned reads: the child shares
/// the file offset of its copy of the descriptor.
fn read_from(f: &File, mut pos: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = f.read_at(&mut chunk, pos) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        pos += n as u64;
    }
    buf
}

/// Copy what was written to `f` since `pos` to our stderr; the new position.
fn echo_new(f: &File, pos: u64) -> u64 {
    use std::io::Write;
    let new = read_from(f, pos);
    let _ = std::io::stderr().write_all(&new);
    pos + new.len() as u64
}

/// What a [`FakeRunner`] answers.
pub type Reply = Result<Output, RunError>;
type Answer = Arc<dyn Fn(&Cmd) -> Option<Reply> + Send + Sync>;

struct Rule {
    id: u64,
    answer: Answer,
    /// Answer at most this many times (`None`: always).
    remaining: Option<usize>,
}

/// A recording fake: records every call and answers from rules, the newest
/// first (a test's rule shadows its fixture's); a rule may pass a command on
/// to older rules. Unmatched commands exit 0 with no output, and the Nth call
/// can be made to fail.
#[derive(Clone, Default)]
pub struct FakeRunner {
    inner: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<Cmd>,
    rules: VecDeque<Rule>,
    next_id: u64,
    fail_call: Option<usize>,
}

impl FakeRunner {
    pub fn new() -> FakeRunner {
        FakeRunner::default()
    }

    /// Answer commands for which `answer` returns `Some`; `None` passes the
    /// command on to older rules.
    pub fn when(&self, answer: impl Fn(&Cmd) -> Option<Reply> + Send + Sync + 'static) -> &Self {
        self.push(Arc::new(answer), None)
    }

    /// Answer commands whose argv (as [`Cmd::argv`]) contains `pattern`.
    pub fn on(
        &self,
        pattern: &str,
        reply: impl Fn(&Cmd) -> Reply + Send + Sync + 'static,
    ) -> &Self {
        self.push(matching(pattern, reply), None)
    }

    /// Like [`FakeRunner::on`], but only for the next `times` matches.
    pub fn on_times(
        &self,
        pattern: &str,
        times: usize,
        reply: impl Fn(&Cmd) -> Reply + Send + Sync + 'static,
    ) -> &Self {
        self.push(matching(pattern, reply), Some(times))
    }

    /// Make every call of `program` exit with `code`, writing `stderr`.
    pub fn fail(&self, program: &str, code: i32, stderr: &str) -> &Self {
        let program = program.to_string();
        let stderr = stderr.to_string();
        self.when(move |c| (c.program == program).then(|| Ok(Output::fail(code, &stderr))))
    }

    /// Make call number `n` (1-based, counting every call) exit 1, once.
    pub fn fail_call(&self, n: usize) {
        self.lock().fail_call = Some(n);
    }

    fn push(&self, answer: Answer, remaining: Option<usize>) -> &Self {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.rules.push_front(Rule {
            id,
            answer,
            remaining,
        });
        drop(st);
        self
    }

    /// Every command run so far, in order.
    pub fn calls(&self) -> Vec<Cmd> {
        self.lock().calls.clone()
    }

    /// Every call as one argv line, for snapshots.
    pub fn transcript(&self) -> String {
        self.calls().iter().map(|c| c.argv() + "\n").collect()
    }

    /// Forget the calls so far (the rules stay).
    pub fn clear(&self) {
        self.lock().calls.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A panic while holding the lock only happens in a failing test.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn matching(pattern: &str, reply: impl Fn(&Cmd) -> Reply + Send + Sync + 'static) -> Answer {
    let pattern = pattern.to_string();
    Arc::new(move |c: &Cmd| c.argv().contains(&pattern).then(|| reply(c)))
}

impl CommandRunner for FakeRunner {
    fn output(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let rules: Vec<(u64, Answer)> = {
            let mut st = self.lock();
            st.calls.push(cmd.clone());
            if st.fail_call == Some(st.calls.len()) {
                st.fail_call = None;
                return Ok(Output::fail(1, "fake: injected failure"));
            }
            st.rules
                .iter()
                .filter(|r| r.remaining != Some(0))
                .map(|r| (r.id, r.answer.clone()))
                .collect()
        };
        // Answers run without the lock: they may call back into the fake.
        for (id, answer) in rules {
            if let Some(reply) = answer(cmd) {
                let mut st = self.lock();
                if let Some(n) = st
                    .rules
                    .iter_mut()
                    .find(|r| r.id == id)
                    .and_then(|r| r.remaining.as_mut())
                {
                    *n = n.saturating_sub(1);
                }
                return reply;
            }
        }
        Ok(Output::default())
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
            .output(&sh("echo out; echo err >&2; exit 3", 5000))
            .unwrap();
        assert_eq!(out.ended, Ended::Code(3));
        assert_eq!(out.stdout_str(), "out\n");
        assert_eq!(out.stderr_str(), "err\n");
    }

    #[test]
    fn failure_names_argv_code_and_stderr_tail() {
        let script = "for i in $(seq 1 20); do echo line $i >&2; done; echo >&2; exit 2";
        let e = SystemRunner.run(&sh(script, 5000)).unwrap_err();
        assert_eq!(e.code(), Some(2));
        insta::assert_snapshot!(e.to_string(), @r"
        `sh -c 'for i in $(seq 1 20); do echo line $i >&2; done; echo >&2; exit 2'` exited with code 2; stderr ends with:
            line 6
            line 7
            line 8
            line 9
            line 10
            line 11
            line 12
            line 13
            line 14
            line 15
            line 16
            line 17
            line 18
            line 19
            line 20
        ");
    }

    #[test]
    fn signal_is_reported() {
        let e = SystemRunner.run(&sh("kill -9 $$", 5000)).unwrap_err();
        assert_eq!(e.code(), None);
        assert_eq!(e.to_string(), "`sh -c 'kill -9 $$'` was killed by signal 9");
    }

    #[test]
    fn exit_127_and_126_have_hints() {
        let e = SystemRunner.run(&sh("exit 127", 5000)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`sh -c 'exit 127'` exited with code 127\n  hint: a command was not found: is it installed?"
        );
        let e = RunError::failed(&Cmd::new("apt-get", Duration::ZERO), &Output::fail(127, ""));
        assert!(
            e.to_string()
                .ends_with("hint: install it with `apt-get install apt` (or run `make setup`)"),
            "{e}"
        );
        let e = SystemRunner.run(&sh("exit 126", 5000)).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("hint: a command could not be executed: permission denied?"),
            "{e}"
        );
    }

    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // reparented and not reaped yet: dead all the same
            Ok(stat) => stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z')),
        }
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!(
            "echo started >&2; sleep 30 & echo $! > {}; wait",
            pidfile.display()
        );
        let start = Instant::now();
        let e = SystemRunner.output(&sh(&script, 300)).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(matches!(e, RunError::Timeout { .. }), "{e:?}");
        assert_eq!(e.stderr_tail(), "started");
        assert!(
            e.to_string().starts_with("`sh -c '")
                && e.to_string().contains(
                    "` timed out after 0.3s and was killed; stderr ends with:\n    started"
                ),
            "{e}"
        );
        // the grandchild went with its parent
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone(pid.trim()) {
            assert!(
                Instant::now() < deadline,
                "sleep {pid} survived the timeout"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn missing_program_is_named_with_a_hint() {
        let e = SystemRunner
            .output(&Cmd::new("haimg-no-such-program", Duration::from_secs(1)).arg("--version"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`haimg-no-such-program` is not installed (running `haimg-no-such-program --version`)"
        );
        let e = SystemRunner
            .output(&Cmd::new("/nonexistent/lxc-start", Duration::from_secs(1)))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/nonexistent/lxc-start` is not installed (running `/nonexistent/lxc-start`)\n  hint: install it with `apt-get install lxc uidmap` (or run `make setup`)"
        );
    }

    #[test]
    fn missing_working_directory_is_not_a_missing_program() {
        let e = SystemRunner
            .output(&Cmd::new("true", Duration::from_secs(1)).cwd("/nonexistent/haimg"))
            .unwrap_err();
        assert!(matches!(e, RunError::Spawn { .. }), "{e:?}");
        assert!(e.to_string().starts_with("failed to run `true`: "), "{e}");
    }

    #[test]
    fn daemon_holding_stdout_does_not_block() {
        // Like `lxc-start -d`: a background child keeps the descriptors open.
        for stream in [false, true] {
            let start = Instant::now();
            let out = SystemRunner
                .output(&sh("sleep 3 & echo started; echo warned >&2", 5000).stream_stderr(stream))
                .unwrap();
            assert!(out.success());
            assert_eq!(out.stdout_str(), "started\n");
            assert_eq!(out.stderr_str(), "warned\n");
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{:?}",
                start.elapsed()
            );
        }
    }

    #[test]
    fn environment_is_inherited_or_exactly_the_given_one() {
        let script = "echo \"${TZ:-unset}|$HAIMG_X|${CARGO_MANIFEST_DIR:-unset}\"";
        let run = |c: Cmd| {
            SystemRunner
                .run(&c.args(["-c", script]))
                .unwrap()
                .stdout_str()
        };
        let hermetic = Cmd::hermetic("sh", Duration::from_secs(5)).env("HAIMG_X", "1");
        assert_eq!(run(hermetic), "UTC|1|unset\n");
        let ours = |k: &str| std::env::var(k).unwrap_or_else(|_| "unset".into());
        let inherited = Cmd::new("sh", Duration::from_secs(5)).env("HAIMG_X", "2");
        assert_eq!(
            run(inherited),
            format!("{}|2|{}\n", ours("TZ"), ours("CARGO_MANIFEST_DIR"))
        );
    }

    #[test]
    fn runs_in_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = SystemRunner
            .run(&Cmd::new("pwd", Duration::from_secs(5)).cwd(dir.path()))
            .unwrap();
        assert_eq!(out.stdout_str().trim(), dir.path().display().to_string());
    }

    #[test]
    fn fake_records_matches_and_fails_nth() {
        let fake = FakeRunner::new();
        fake.on("lxc-info", |_| Ok(Output::ok("State: RUNNING\n")));
        fake.on_times("lxc-info", 1, |_| Ok(Output::fail(1, "x doesn't exist")));
        fake.fail_call(4);
        let info = Cmd::new("lxc-info", Duration::from_secs(1)).args(["-n", "x"]);
        assert!(!fake.output(&info).unwrap().success());
        assert_eq!(fake.output(&info).unwrap().stdout_str(), "State: RUNNING\n");
        let ip = Cmd::new("ip", Duration::from_secs(1));
        assert!(fake.output(&ip).unwrap().success());
        assert!(!fake.output(&ip).unwrap().success());
        insta::assert_snapshot!(fake.transcript(), @r"
        lxc-info -n x
        lxc-info -n x
        ip
        ip
        ");
    }

    #[test]
    fn fake_newest_rule_first_and_pass_on() {
        let fake = FakeRunner::new();
        fake.fail("apt-get", 100, "E: boom");
        fake.when(|c| (c.args == ["update"]).then(|| Ok(Output::ok("updated"))));
        fake.when(|_| None); // passes everything on
        let apt = |a: &str| Cmd::hermetic("apt-get", Duration::from_secs(1)).arg(a);
        assert_eq!(fake.run(&apt("update")).unwrap().stdout_str(), "updated");
        let e = fake.run(&apt("install")).unwrap_err();
        assert_eq!(e.code(), Some(100));
        assert_eq!(
            e.to_string(),
            "`apt-get install` exited with code 100; stderr ends with:\n    E: boom"
        );
        assert!(fake.run(&Cmd::new("true", Duration::from_secs(1))).is_ok());
        let calls: Vec<String> = fake.calls().iter().map(Cmd::argv).collect();
        assert_eq!(calls, ["apt-get update", "apt-get install", "true"]);
    }

    #[test]
    fn quoting() {
        let c = Cmd::new("lxc-attach", Duration::from_secs(1)).args(["-n", "a b", "it's", ""]);
        assert_eq!(c.argv(), r"lxc-attach -n 'a b' 'it'\''s' ''");
        let c = Cmd::new("mmdebstrap", Duration::from_secs(1))
            .args(["--include=a,b", "deb [trusted=yes] copy:///x ./"]);
        assert_eq!(
            c.to_string(),
            "mmdebstrap --include=a,b 'deb [trusted=yes] copy:///x ./'"
        );
    }
}
