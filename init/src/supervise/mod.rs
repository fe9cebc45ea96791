//! The supervisor as a pure state machine: events in, actions out.
//!
//! [`Supervisor::handle`] takes the time (milliseconds since the init
//! started) and one [`Event`] (a child spawned or exited, a readiness probe's
//! answer, a shutdown signal, a tick) and returns the [`Action`]s to carry out
//! (spawn, probe, signal a process group, log, finish). It does no I/O, so
//! every behaviour — start order, readiness, exponential backoff with a cap,
//! reverse-order stop with a grace period and SIGKILL — is tested without
//! processes; [`process`] is the thin layer that turns actions into syscalls.
//!
//! Invariants: service *i* is first started only once service *i − 1* is
//! ready; a service whose binary is missing is `failed` and never retried (no
//! restart loop); on shutdown services stop one at a time in reverse order
//! (keepalived before nginx, so the VIP leaves first), each gets its stop
//! signal, then SIGKILL to its whole process group after its grace period;
//! `Finish` is emitted exactly once, after every service is down.

pub mod process;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::log::Level;

/// Milliseconds since the init started (monotonic).
pub type Millis = u64;

/// The signals the supervisor sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Sig {
    Term,
    Int,
    Quit,
    Kill,
}

impl Sig {
    pub fn name(self) -> &'static str {
        match self {
            Sig::Term => "SIGTERM",
            Sig::Int => "SIGINT",
            Sig::Quit => "SIGQUIT",
            Sig::Kill => "SIGKILL",
        }
    }
}

/// When a started service counts as ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// As soon as it is spawned.
    Spawned,
    /// When a TCP connection to this address succeeds.
    Tcp(SocketAddr),
}

/// How to run one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Other files that must exist (a script the program runs); missing → failed, not retried.
    #[serde(default)]
    pub requires: Vec<PathBuf>,
    /// The whole environment of the service (nothing is inherited).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Run as this uid/gid instead of root.
    #[serde(default)]
    pub user: Option<(u32, u32)>,
    pub ready: Readiness,
    pub stop_signal: Sig,
    /// Time between the stop signal and SIGKILL to the process group.
    pub grace_ms: u64,
    /// On a halt, how long after this service stopped the service before it
    /// is stopped (keepalived: nginx serves on while the VIP moves).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub linger_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Restart delays: `initial_ms`, doubled after each quick failure, at most
/// `max_ms`; back to `initial_ms` once a run lasted `reset_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub reset_after_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 100,
            max_ms: 30_000,
            reset_after_ms: 30_000,
        }
    }
}

/// How the init was asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// Stop the container: SIGPWR, SIGRTMIN+3, SIGTERM.
    Halt,
    /// Restart the container: SIGINT → reboot(2).
    Reboot,
}

/// How a child ended, as waitpid reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Begin starting the services.
    Start,
    /// Time passed; timers may be due.
    Tick,
    Spawned {
        svc: usize,
        pid: i32,
    },
    SpawnFailed {
        svc: usize,
        error: String,
        /// The program does not exist: restarting cannot help.
        permanent: bool,
    },
    Exited {
        pid: i32,
        status: ExitStatus,
    },
    Probed {
        svc: usize,
        ok: bool,
    },
    Shutdown(Finish),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Spawn {
        svc: usize,
    },
    Probe {
        svc: usize,
        addr: SocketAddr,
    },
    /// Send `signal` to the process group `pgid` (each service leads its own).
    Kill {
        svc: usize,
        pgid: i32,
        signal: Sig,
    },
    Log(Level, String),
    /// Every service is down; end as asked.
    Finish(Finish),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Not started yet: an earlier service is not ready.
    Waiting,
    /// Spawn requested, pid not known yet.
    Spawning,
    Starting {
        pid: i32,
        since: Millis,
        next_probe: Millis,
    },
    Running {
        pid: i32,
        since: Millis,
    },
    Backoff {
        until: Millis,
    },
    Stopping {
        pid: i32,
        deadline: Millis,
        killed: bool,
    },
    /// Stopped on a halt; the next service stops at `until` ([`ServiceSpec::linger_ms`]).
    Lingering {
        until: Millis,
    },
    Stopped,
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct Svc {
    spec: ServiceSpec,
    state: State,
    restarts: u32,
    delay_ms: u64,
    last_exit: Option<ExitStatus>,
    ever_ready: bool,
    ever_spawned: bool,
}

/// What the status file shows of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: &'static str,
    pub pid: Option<i32>,
    pub ready: bool,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Idle,
    Starting,
    Running,
    Stopping,
    Done,
}

/// Probe every 10 ms while a service starts (boot time matters), then every 250 ms.
const PROBE_FAST_MS: u64 = 10;
const PROBE_SLOW_MS: u64 = 250;
const PROBE_FAST_FOR_MS: u64 = 2_000;
/// After SIGKILL, how long to wait for the exit before giving up on a process.
const KILL_WAIT_MS: u64 = 2_000;

#[derive(Debug)]
pub struct Supervisor {
    svcs: Vec<Svc>,
    backoff: Backoff,
    phase: Phase,
    finish: Option<Finish>,
    finished: bool,
    all_spawned_logged: bool,
}

impl Supervisor {
    pub fn new(specs: Vec<ServiceSpec>, backoff: Backoff) -> Supervisor {
        Supervisor {
            svcs: specs
                .into_iter()
                .map(|spec| Svc {
                    spec,
                    state: State::Waiting,
                    restarts: 0,
                    delay_ms: backoff.initial_ms,
                    last_exit: None,
                    ever_ready: false,
                    ever_spawned: false,
                })
                .collect(),
            backoff,
            phase: Phase::Idle,
            finish: None,
            finished: false,
            all_spawned_logged: false,
        }
    }

    pub fn spec(&self, svc: usize) -> &ServiceSpec {
        &self.svcs[svc].spec
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Which service, if any, `pid` leads.
    pub fn service_of(&self, pid: i32) -> Option<usize> {
        self.svcs.iter().position(|s| s.pid() == Some(pid))
    }

    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => {
                if self.phase == Phase::Idle {
                    self.phase = Phase::Starting;
                    self.start_next(&mut out);
                }
            }
            Event::Tick => self.tick(now, &mut out),
            Event::Spawned { svc, pid } => self.spawned(now, svc, pid, &mut out),
            Event::SpawnFailed {
                svc,
                error,
                permanent,
            } => self.spawn_failed(now, svc, error, permanent, &mut out),
            Event::Exited { pid, status } => self.exited(now, pid, status, &mut out),
            Event::Probed { svc, ok } => self.probed(now, svc, ok, &mut out),
            Event::Shutdown(kind) => self.shutdown(now, kind, &mut out),
        }
        if self.phase == Phase::Stopping {
            self.advance_stop(now, &mut out);
        }
        out
    }

    /// The earliest time a timer is due, for the process layer's poll timeout.
    pub fn next_wakeup(&self) -> Option<Millis> {
        self.svcs
            .iter()
            .filter_map(|s| match s.state {
                State::Starting { next_probe, .. } => Some(next_probe),
                State::Backoff { until } => Some(until),
                State::Stopping { deadline, .. } => Some(deadline),
                State::Lingering { until } => Some(until),
                _ => None,
            })
            .min()
    }

    pub fn status(&self) -> Vec<ServiceStatus> {
        self.svcs
            .iter()
            .map(|s| ServiceStatus {
                name: s.spec.name.clone(),
                state: match s.state {
                    State::Waiting => "waiting",
                    State::Spawning => "spawning",
                    State::Starting { .. } => "starting",
                    State::Running { .. } => "running",
                    State::Backoff { .. } => "backoff",
                    State::Stopping { .. } => "stopping",
                    State::Stopped | State::Lingering { .. } => "stopped",
                    State::Failed { .. } => "failed",
                },
                pid: s.pid(),
                ready: matches!(s.state, State::Running { .. }),
                restarts: s.restarts,
                last_exit: s.last_exit,
                reason: match &s.state {
                    State::Failed { reason } => Some(reason.clone()),
                    _ => None,
                },
            })
            .collect()
    }

    fn log(out: &mut Vec<Action>, level: Level, msg: String) {
        out.push(Action::Log(level, msg));
    }

    /// Start the first waiting service whose predecessor is ready.
    fn start_next(&mut self, out: &mut Vec<Action>) {
        if self.phase != Phase::Starting && self.phase != Phase::Running {
            return;
        }
        for i in 0..self.svcs.len() {
            match self.svcs[i].state {
                State::Waiting => {
                    self.svcs[i].state = State::Spawning;
                    out.push(Action::Spawn { svc: i });
                    return;
                }
                // A later service waits until this one has been ready once.
                _ if !self.svcs[i].ever_ready => return,
                _ => {}
            }
        }
        if self.phase == Phase::Starting {
            self.phase = Phase::Running;
        }
    }

    fn spawned(&mut self, now: Millis, svc: usize, pid: i32, out: &mut Vec<Action>) {
        let Some(s) = self.svcs.get_mut(svc) else {
            return;
        };
        if s.state != State::Spawning {
            // Spawned after a shutdown began: it must not outlive the init.
            out.push(Action::Kill {
                svc,
                pgid: pid,
                signal: Sig::Kill,
            });
            return;
        }
        s.ever_spawned = true;
        Self::log(
            out,
            Level::Info,
            format!("{} started pid {pid}", s.spec.name),
        );
        match s.spec.ready {
            Readiness::Spawned => {
                s.state = State::Running { pid, since: now };
                s.ever_ready = true;
            }
            Readiness::Tcp(addr) => {
                s.state = State::Starting {
                    pid,
                    since: now,
                    next_probe: now.saturating_add(PROBE_FAST_MS),
                };
                out.push(Action::Probe { svc, addr });
            }
        }
        if !self.all_spawned_logged && self.svcs.iter().all(|s| s.ever_spawned) {
            self.all_spawned_logged = true;
            Self::log(
                out,
                Level::Info,
                format!("all services spawned {now} ms after exec"),
            );
        }
        self.start_next(out);
    }

    fn spawn_failed(
        &mut self,
        now: Millis,
        svc: usize,
        error: String,
        permanent: bool,
        out: &mut Vec<Action>,
    ) {
        let stopping = self.phase == Phase::Stopping;
        let Some(s) = self.svcs.get_mut(svc) else {
            return;
        };
        if permanent {
            Self::log(
                out,
                Level::Error,
                format!("{}: {error}; not restarting", s.spec.name),
            );
            s.state = State::Failed { reason: error };
        } else if stopping {
            s.state = State::Stopped;
        } else {
            let delay = s.delay_ms;
            s.delay_ms = s.delay_ms.saturating_mul(2).min(self.backoff.max_ms);
            s.restarts += 1;
            Self::log(
                out,
                Level::Error,
                format!("{}: {error}; retry in {delay} ms", s.spec.name),
            );
            s.state = State::Backoff {
                until: now.saturating_add(delay),
            };
        }
    }

    fn exited(&mut self, now: Millis, pid: i32, status: ExitStatus, out: &mut Vec<Action>) {
        let Some(i) = self.service_of(pid) else {
            return; // an orphan the init reaped; nothing to do
        };
        let backoff = self.backoff;
        let s = &mut self.svcs[i];
        s.last_exit = Some(status);
        // What the leader leaves behind in its group (nginx workers, the app under pm2-runtime) must go too.
        out.push(Action::Kill {
            svc: i,
            pgid: pid,
            signal: Sig::Kill,
        });
        match s.state {
            State::Stopping { .. } => {
                Self::log(
                    out,
                    Level::Info,
                    format!("{} stopped ({status})", s.spec.name),
                );
                s.state = State::Stopped;
                if s.spec.linger_ms > 0 && self.phase == Phase::Stopping {
                    Self::log(
                        out,
                        Level::Info,
                        format!("the next service stops in {} ms", s.spec.linger_ms),
                    );
                    s.state = State::Lingering {
                        until: now.saturating_add(s.spec.linger_ms),
                    };
                }
            }
            State::Starting { since, .. } | State::Running { since, .. } => {
                let ran = now.saturating_sub(since);
                if ran >= backoff.reset_after_ms {
                    s.delay_ms = backoff.initial_ms;
                }
                let delay = s.delay_ms;
                s.delay_ms = s.delay_ms.saturating_mul(2).min(backoff.max_ms);
                s.restarts += 1;
                Self::log(
                    out,
                    Level::Warn,
                    format!(
                        "{} exited ({status}) after {ran} ms; restart in {delay} ms",
                        s.spec.name
                    ),
                );
                s.state = State::Backoff {
                    until: now.saturating_add(delay),
                };
            }
            _ => {}
        }
    }

    fn probed(&mut self, now: Millis, svc: usize, ok: bool, out: &mut Vec<Action>) {
        let Some(s) = self.svcs.get_mut(svc) else {
            return;
        };
        let State::Starting { pid, since, .. } = s.state else {
            return;
        };
        if ok {
            s.state = State::Running { pid, since };
            s.ever_ready = true;
            Self::log(
                out,
                Level::Info,
                format!(
                    "{} ready after {} ms",
                    s.spec.name,
                    now.saturating_sub(since)
                ),
            );
            self.start_next(out);
        } else {
            let step = if now.saturating_sub(since) < PROBE_FAST_FOR_MS {
                PROBE_FAST_MS
            } else {
                PROBE_SLOW_MS
            };
            s.state = State::Starting {
                pid,
                since,
                next_probe: now.saturating_add(step),
            };
        }
    }

    fn tick(&mut self, now: Millis, out: &mut Vec<Action>) {
        for i in 0..self.svcs.len() {
            match self.svcs[i].state {
                State::Starting {
                    pid,
                    since,
                    next_probe,
                } if now >= next_probe => {
                    if let Readiness::Tcp(addr) = self.svcs[i].spec.ready {
                        // Re-armed when the answer comes; no second probe meanwhile.
                        self.svcs[i].state = State::Starting {
                            pid,
                            since,
                            next_probe: Millis::MAX,
                        };
                        out.push(Action::Probe { svc: i, addr });
                    }
                }
                State::Lingering { until } if now >= until => {
                    self.svcs[i].state = State::Stopped;
                }
                State::Backoff { until } if now >= until && self.phase != Phase::Stopping => {
                    self.svcs[i].state = State::Spawning;
                    out.push(Action::Spawn { svc: i });
                }
                State::Stopping {
                    pid,
                    deadline,
                    killed,
                } if now >= deadline => {
                    let name = self.svcs[i].spec.name.clone();
                    if killed {
                        Self::log(
                            out,
                            Level::Error,
                            format!("{name} pid {pid} did not exit after SIGKILL; giving up on it"),
                        );
                        self.svcs[i].state = State::Stopped;
                    } else {
                        Self::log(
                            out,
                            Level::Warn,
                            format!("{name} still running after its grace period; SIGKILL"),
                        );
                        out.push(Action::Kill {
                            svc: i,
                            pgid: pid,
                            signal: Sig::Kill,
                        });
                        self.svcs[i].state = State::Stopping {
                            pid,
                            deadline: now.saturating_add(KILL_WAIT_MS),
                            killed: true,
                        };
                    }
                }
                _ => {}
            }
        }
    }

    fn shutdown(&mut self, _now: Millis, kind: Finish, out: &mut Vec<Action>) {
        if self.phase == Phase::Stopping || self.phase == Phase::Done {
            Self::log(
                out,
                Level::Info,
                "already stopping; signal ignored".to_string(),
            );
            return;
        }
        Self::log(
            out,
            Level::Info,
            format!(
                "{} requested: stopping services in reverse order",
                match kind {
                    Finish::Halt => "halt",
                    Finish::Reboot => "reboot",
                }
            ),
        );
        self.phase = Phase::Stopping;
        self.finish = Some(kind);
        for s in &mut self.svcs {
            if matches!(
                s.state,
                State::Waiting | State::Backoff { .. } | State::Spawning
            ) {
                s.state = State::Stopped;
            }
        }
    }

    /// Stop the last live service, one at a time; finish when none is left.
    fn advance_stop(&mut self, now: Millis, out: &mut Vec<Action>) {
        if self
            .svcs
            .iter()
            .any(|s| matches!(s.state, State::Stopping { .. } | State::Lingering { .. }))
        {
            return;
        }
        if let Some(i) = self
            .svcs
            .iter()
            .rposition(|s| matches!(s.state, State::Starting { .. } | State::Running { .. }))
        {
            let s = &mut self.svcs[i];
            // Invariant: Starting and Running always carry a pid.
            let pid = s.pid().unwrap_or(0);
            Self::log(
                out,
                Level::Info,
                format!(
                    "stopping {} pid {pid} ({})",
                    s.spec.name,
                    s.spec.stop_signal.name()
                ),
            );
            out.push(Action::Kill {
                svc: i,
                pgid: pid,
                signal: s.spec.stop_signal,
            });
            s.state = State::Stopping {
                pid,
                deadline: now.saturating_add(s.spec.grace_ms),
                killed: false,
            };
            return;
        }
        if !self.finished {
            self.finished = true;
            self.phase = Phase::Done;
            // Invariant: the Stopping phase is only entered with a finish kind.
            let kind = self.finish.unwrap_or(Finish::Halt);
            Self::log(out, Level::Info, "all services stopped".to_string());
            out.push(Action::Finish(kind));
        }
    }
}

impl Svc {
    fn pid(&self) -> Option<i32> {
        match self.state {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
