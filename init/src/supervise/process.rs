//! The thin process layer under the [`Supervisor`]: signals, spawn, reap, probe.
//!
//! All signals the init cares about are blocked and read from a signalfd, so
//! the loop is one `poll` with the supervisor's next deadline as timeout;
//! blocking SIGRTMIN+3 is also what makes LXC choose it as the halt signal.
//! Children start with an empty signal mask (reset
//! between fork and exec: std keeps the parent's), default dispositions, their
//! own process group, a clean environment and stdin on
//! /dev/null; their stdout and stderr are the init's (the console). Every exit
//! is reaped with `waitpid(-1, WNOHANG)` until nothing is left, whether the
//! pid is a service or an orphan re-parented to the init.
//!
//! [`classify`] is the pure signal → decision map that the tests pin.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{Action, Event, ExitStatus, Finish, Millis, ServiceSpec, Sig, Supervisor};
use crate::log::{self, Level};

/// What a signal means to the init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalMeaning {
    Shutdown(Finish),
    Child,
    Ignore,
}

/// SIGPWR (LXC's default halt), SIGRTMIN+3 (LXC's halt when PID 1 blocks it,
/// systemd's convention) and SIGTERM halt; SIGINT reboots (ctrl-alt-del, and
/// what `reboot` in the container sends); SIGCHLD means reap.
pub fn classify(signo: i32) -> SignalMeaning {
    if signo == libc::SIGPWR || signo == libc::SIGTERM || signo == libc::SIGRTMIN() + 3 {
        SignalMeaning::Shutdown(Finish::Halt)
    } else if signo == libc::SIGINT {
        SignalMeaning::Shutdown(Finish::Reboot)
    } else if signo == libc::SIGCHLD {
        SignalMeaning::Child
    } else {
        SignalMeaning::Ignore
    }
}

/// Signals the init blocks and reads from its signalfd.
pub fn handled_signals() -> Vec<i32> {
    vec![
        libc::SIGCHLD,
        libc::SIGPWR,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGRTMIN() + 3,
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("failed to block signals: {0}")]
    Block(Errno),
    #[error("failed to create the signalfd: {0}")]
    SignalFd(Errno),
}

/// Block the handled signals in the calling thread (threads spawned later
/// inherit the mask) and return the signalfd that reports them. Their
/// dispositions are reset to the default first: an ignored SIGCHLD would make
/// the kernel reap children before the init sees their exit, and ignored
/// dispositions are inherited across exec by every service.
pub fn block_signals() -> Result<SignalFd, ProcessError> {
    for s in handled_signals() {
        // SAFETY: installing SIG_DFL has no handler code to run; the signals are
        // blocked right after, so the default actions never trigger.
        unsafe {
            libc::signal(s, libc::SIG_DFL);
        }
    }
    // SAFETY: sigemptyset/sigaddset only write the local set.
    let set = unsafe {
        let mut raw: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut raw);
        for s in handled_signals() {
            libc::sigaddset(&mut raw, s);
        }
        SigSet::from_sigset_t_unchecked(raw)
    };
    set.thread_block().map_err(ProcessError::Block)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(ProcessError::SignalFd)
}

/// Become the reaper of orphaned descendants when not PID 1 (tests, `supervise`).
pub fn become_subreaper() -> Result<(), Errno> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Spawn a service. `Err((message, permanent))`: permanent when the program is
/// missing or not executable, so restarting cannot help.
pub fn spawn(spec: &ServiceSpec) -> Result<i32, (String, bool)> {
    if let Some(missing) = std::iter::once(&spec.program)
        .chain(&spec.requires)
        .find(|p| !p.exists())
    {
        return Err((format!("{} not found", missing.display()), true));
    }
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .process_group(0);
    if let Some((uid, gid)) = spec.user {
        cmd.uid(uid).gid(gid);
    }
    // std keeps the parent's signal mask across exec; the init blocks the
    // signals it reads from its signalfd, and a service must not inherit that
    // (a blocked SIGTERM would make every stop wait for SIGKILL).
    // SAFETY: only pthread_sigmask on a local empty set, which is
    // async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            match libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) {
                0 => Ok(()),
                e => Err(std::io::Error::from_raw_os_error(e)),
            }
        });
    }
    match cmd.spawn() {
        // The Child handle is dropped without waiting: the init reaps by pid.
        Ok(child) => Ok(child.id() as i32),
        Err(e) => {
            let permanent = matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            );
            Err((format!("{}: {e}", spec.program.display()), permanent))
        }
    }
}

fn to_signal(s: Sig) -> Signal {
    match s {
        Sig::Term => Signal::SIGTERM,
        Sig::Int => Signal::SIGINT,
        Sig::Quit => Signal::SIGQUIT,
        Sig::Kill => Signal::SIGKILL,
    }
}

/// Signal a whole process group; a group that is already gone is fine.
pub fn kill_group(pgid: i32, sig: Sig) {
    if pgid <= 1 {
        return; // never the init's own group or "every process"
    }
    match killpg(Pid::from_raw(pgid), to_signal(sig)) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => log::emit(
            Level::Warn,
            &format!("failed to send {} to process group {pgid}: {e}", sig.name()),
        ),
    }
}

/// Readiness: does a TCP connection to `addr` succeed?
pub fn probe(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Reap every child that has ended.
pub fn reap() -> Vec<(i32, ExitStatus)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid.as_raw(), ExitStatus::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                out.push((pid.as_raw(), ExitStatus::Signal(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                log::emit(Level::Warn, &format!("waitpid failed: {e}"));
                break;
            }
        }
    }
    out
}

/// Wait up to `timeout_ms` with no services (between boot attempts), reaping
/// whatever exits meanwhile. `Some` when a halt or reboot signal arrived.
pub fn idle(sfd: &SignalFd, timeout_ms: u64) -> Option<Finish> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                log::emit(Level::Warn, &format!("poll failed: {e}"));
                // Never spin: sleep out the rest of the wait.
                std::thread::sleep(left.min(Duration::from_secs(1)));
            }
        }
        let mut finish = None;
        while let Ok(Some(info)) = sfd.read_signal() {
            let signo = info.ssi_signo as i32;
            match classify(signo) {
                SignalMeaning::Shutdown(kind) => finish = finish.or(Some(kind)),
                SignalMeaning::Child => {}
                SignalMeaning::Ignore => {
                    log::emit(Level::Info, &format!("ignoring signal {signo}"))
                }
            }
        }
        reap();
        if finish.is_some() {
            return finish;
        }
    }
}

/// Called after every loop turn so the owner can publish state (status file).
pub trait Observer {
    fn changed(&mut self, sup: &Supervisor, now: Millis);
}

/// The loop: poll the signalfd until the next deadline, turn what happened
/// into events, and carry out the supervisor's actions. Returns how to end.
pub fn run(
    sup: &mut Supervisor,
    sfd: &SignalFd,
    start: Instant,
    observer: &mut dyn Observer,
) -> Finish {
    let now = || start.elapsed().as_millis() as Millis;
    let mut queue = std::collections::VecDeque::from([Event::Start]);
    loop {
        let mut finish = None;
        while let Some(ev) = queue.pop_front() {
            for action in sup.handle(now(), ev) {
                match action {
                    Action::Spawn { svc } => queue.push_back(match spawn(sup.spec(svc)) {
                        Ok(pid) => Event::Spawned { svc, pid },
                        Err((error, permanent)) => Event::SpawnFailed {
                            svc,
                            error,
                            permanent,
                        },
                    }),
                    Action::Probe { svc, addr } => queue.push_back(Event::Probed {
                        svc,
                        ok: probe(addr),
                    }),
                    Action::Kill { pgid, signal, .. } => kill_group(pgid, signal),
                    Action::Log(level, msg) => log::emit(level, &msg),
                    Action::Finish(kind) => finish = Some(kind),
                }
            }
        }
        observer.changed(sup, now());
        if let Some(kind) = finish {
            return kind;
        }
        // Wake at least once a second so observers see outside changes (the join thread).
        let wait = sup
            .next_wakeup()
            .map_or(1000, |t| t.saturating_sub(now()).min(1000));
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => log::emit(Level::Warn, &format!("poll failed: {e}")),
        }
        while let Ok(Some(info)) = sfd.read_signal() {
            let signo = info.ssi_signo as i32;
            match classify(signo) {
                SignalMeaning::Shutdown(kind) => queue.push_back(Event::Shutdown(kind)),
                SignalMeaning::Child => {}
                SignalMeaning::Ignore => {
                    log::emit(Level::Info, &format!("ignoring signal {signo}"))
                }
            }
        }
        // SIGCHLDs coalesce: reap on every turn, not once per signal.
        for (pid, status) in reap() {
            queue.push_back(Event::Exited { pid, status });
        }
        queue.push_back(Event::Tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_and_reboot_signals() {
        assert_eq!(
            classify(libc::SIGPWR),
            SignalMeaning::Shutdown(Finish::Halt)
        );
        assert_eq!(
            classify(libc::SIGRTMIN() + 3),
            SignalMeaning::Shutdown(Finish::Halt)
        );
        assert_eq!(
            classify(libc::SIGTERM),
            SignalMeaning::Shutdown(Finish::Halt)
        );
        assert_eq!(
            classify(libc::SIGINT),
            SignalMeaning::Shutdown(Finish::Reboot)
        );
        assert_eq!(classify(libc::SIGCHLD), SignalMeaning::Child);
        assert_eq!(classify(libc::SIGHUP), SignalMeaning::Ignore);
        assert_eq!(classify(libc::SIGRTMIN() + 4), SignalMeaning::Ignore);
    }

    #[test]
    fn every_meaningful_signal_is_blocked() {
        for s in [
            libc::SIGPWR,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGCHLD,
            libc::SIGRTMIN() + 3,
        ] {
            assert!(handled_signals().contains(&s), "{s}");
        }
    }

    #[test]
    fn a_missing_program_is_permanent() {
        let spec = ServiceSpec {
            name: "x".into(),
            program: "/nonexistent/haimg-test-binary".into(),
            args: vec![],
            requires: vec![],
            env: vec![],
            user: None,
            ready: super::super::Readiness::Spawned,
            stop_signal: Sig::Term,
            grace_ms: 10,
            linger_ms: 0,
        };
        let (msg, permanent) = spawn(&spec).unwrap_err();
        assert!(permanent);
        assert_eq!(msg, "/nonexistent/haimg-test-binary not found");
    }
}
