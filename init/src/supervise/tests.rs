//! State-machine tests: no processes, only events and the actions they cause.

use super::*;

fn tcp(port: u16) -> Readiness {
    Readiness::Tcp(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn spec(name: &str, ready: Readiness, stop: Sig, grace_ms: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        program: format!("/usr/sbin/{name}").into(),
        args: vec![],
        requires: vec![],
        env: vec![],
        user: None,
        ready,
        stop_signal: stop,
        grace_ms,
        linger_ms: 0,
    }
}

/// The lb role's shape: nginx (ready on a port, graceful SIGQUIT), then keepalived.
fn lb() -> Supervisor {
    Supervisor::new(
        vec![
            spec("nginx", tcp(80), Sig::Quit, 3000),
            spec("keepalived", Readiness::Spawned, Sig::Term, 2000),
        ],
        Backoff {
            initial_ms: 100,
            max_ms: 1000,
            reset_after_ms: 5000,
        },
    )
}

fn non_log(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| !matches!(a, Action::Log(..)))
        .collect()
}

fn logs(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(l, m) => Some(format!("[{l}] {m}")),
            _ => None,
        })
        .collect()
}

/// nginx pid 10 ready, keepalived pid 11 running.
fn running_lb() -> Supervisor {
    let mut s = lb();
    s.handle(0, Event::Start);
    s.handle(1, Event::Spawned { svc: 0, pid: 10 });
    s.handle(5, Event::Probed { svc: 0, ok: true });
    s.handle(6, Event::Spawned { svc: 1, pid: 11 });
    assert_eq!(s.phase(), Phase::Running);
    s
}

#[test]
fn starts_in_order_and_waits_for_readiness() {
    let mut s = lb();
    assert_eq!(
        non_log(s.handle(0, Event::Start)),
        [Action::Spawn { svc: 0 }]
    );
    let a = s.handle(2, Event::Spawned { svc: 0, pid: 10 });
    assert_eq!(logs(&a), ["[info] nginx started pid 10"]);
    assert_eq!(
        non_log(a),
        [Action::Probe {
            svc: 0,
            addr: "127.0.0.1:80".parse().unwrap()
        }]
    );
    // Not ready: keepalived must not start; the next probe is 10 ms later.
    assert_eq!(
        non_log(s.handle(3, Event::Probed { svc: 0, ok: false })),
        []
    );
    assert_eq!(s.next_wakeup(), Some(13));
    assert_eq!(non_log(s.handle(8, Event::Tick)), []);
    assert_eq!(non_log(s.handle(13, Event::Tick)).len(), 1);
    let a = s.handle(14, Event::Probed { svc: 0, ok: true });
    assert_eq!(logs(&a), ["[info] nginx ready after 12 ms"]);
    assert_eq!(non_log(a), [Action::Spawn { svc: 1 }]);
    let a = s.handle(15, Event::Spawned { svc: 1, pid: 11 });
    assert_eq!(
        logs(&a),
        [
            "[info] keepalived started pid 11",
            "[info] all services spawned 15 ms after exec"
        ]
    );
    assert_eq!(s.phase(), Phase::Running);
    let st = s.status();
    assert_eq!(
        (st[0].state, st[0].pid, st[0].ready),
        ("running", Some(10), true)
    );
    assert_eq!((st[1].state, st[1].pid), ("running", Some(11)));
}

#[test]
fn restarts_with_exponential_backoff_and_a_cap() {
    let mut s = running_lb();
    let mut now = 100;
    let mut pid = 20;
    let mut delays = Vec::new();
    for _ in 0..6 {
        let a = s.handle(
            now,
            Event::Exited {
                pid: if pid == 20 { 11 } else { pid - 1 },
                status: ExitStatus::Code(1),
            },
        );
        // The leftover group is always cleaned before a restart.
        assert!(a.contains(&Action::Kill {
            svc: 1,
            pgid: if pid == 20 { 11 } else { pid - 1 },
            signal: Sig::Kill
        }));
        let until = s.next_wakeup().unwrap();
        delays.push(until - now);
        assert_eq!(non_log(s.handle(until - 1, Event::Tick)), []);
        assert_eq!(
            non_log(s.handle(until, Event::Tick)),
            [Action::Spawn { svc: 1 }]
        );
        s.handle(until, Event::Spawned { svc: 1, pid });
        now = until + 50;
        pid += 1;
    }
    assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(s.status()[1].restarts, 6);
    // A run longer than reset_after_ms starts the delays over.
    let a = s.handle(
        now + 6000,
        Event::Exited {
            pid: pid - 1,
            status: ExitStatus::Signal(9),
        },
    );
    assert_eq!(
        logs(&a),
        ["[warn] keepalived exited (signal 9) after 6050 ms; restart in 100 ms"]
    );
}

#[test]
fn a_crash_before_ready_is_retried_and_holds_back_later_services() {
    let mut s = lb();
    s.handle(0, Event::Start);
    s.handle(1, Event::Spawned { svc: 0, pid: 10 });
    let a = s.handle(
        5,
        Event::Exited {
            pid: 10,
            status: ExitStatus::Code(1),
        },
    );
    assert_eq!(
        logs(&a),
        ["[warn] nginx exited (code 1) after 4 ms; restart in 100 ms"]
    );
    assert_eq!(
        non_log(s.handle(105, Event::Tick)),
        [Action::Spawn { svc: 0 }]
    );
    assert_eq!(s.status()[1].state, "waiting");
}

#[test]
fn a_missing_binary_fails_once_and_never_loops() {
    let mut s = lb();
    s.handle(0, Event::Start);
    let a = s.handle(
        1,
        Event::SpawnFailed {
            svc: 0,
            error: "/usr/sbin/nginx: not found".into(),
            permanent: true,
        },
    );
    assert_eq!(
        logs(&a),
        ["[error] nginx: /usr/sbin/nginx: not found; not restarting"]
    );
    assert_eq!(non_log(a), []);
    for t in [10, 1000, 100_000] {
        assert_eq!(non_log(s.handle(t, Event::Tick)), []);
    }
    assert_eq!(s.next_wakeup(), None);
    let st = s.status();
    assert_eq!(st[0].state, "failed");
    assert_eq!(st[0].reason.as_deref(), Some("/usr/sbin/nginx: not found"));
    assert_eq!(st[1].state, "waiting");
    // Shutdown still works and finishes.
    let a = non_log(s.handle(100_001, Event::Shutdown(Finish::Halt)));
    assert_eq!(a, [Action::Finish(Finish::Halt)]);
}

#[test]
fn a_transient_spawn_error_backs_off() {
    let mut s = lb();
    s.handle(0, Event::Start);
    let a = s.handle(
        1,
        Event::SpawnFailed {
            svc: 0,
            error: "resource busy".into(),
            permanent: false,
        },
    );
    assert_eq!(logs(&a), ["[error] nginx: resource busy; retry in 100 ms"]);
    assert_eq!(
        non_log(s.handle(101, Event::Tick)),
        [Action::Spawn { svc: 0 }]
    );
}

/// SIGPWR, SIGRTMIN+3 and SIGTERM all arrive as Shutdown(Halt); SIGINT as Shutdown(Reboot).
/// Either way keepalived stops first, then nginx, and the finish kind is kept.
fn stops_in_reverse(kind: Finish) {
    let mut s = running_lb();
    let a = non_log(s.handle(1000, Event::Shutdown(kind)));
    assert_eq!(
        a,
        [Action::Kill {
            svc: 1,
            pgid: 11,
            signal: Sig::Term
        }]
    );
    assert_eq!(s.phase(), Phase::Stopping);
    // nginx is untouched while keepalived stops.
    assert_eq!(non_log(s.handle(1100, Event::Tick)), []);
    let a = non_log(s.handle(
        1200,
        Event::Exited {
            pid: 11,
            status: ExitStatus::Code(0),
        },
    ));
    assert_eq!(
        a,
        [
            Action::Kill {
                svc: 1,
                pgid: 11,
                signal: Sig::Kill
            },
            Action::Kill {
                svc: 0,
                pgid: 10,
                signal: Sig::Quit
            },
        ]
    );
    let a = non_log(s.handle(
        1300,
        Event::Exited {
            pid: 10,
            status: ExitStatus::Code(0),
        },
    ));
    assert_eq!(
        a,
        [
            Action::Kill {
                svc: 0,
                pgid: 10,
                signal: Sig::Kill
            },
            Action::Finish(kind)
        ]
    );
    assert_eq!(s.phase(), Phase::Done);
    // Nothing after the finish, ever.
    assert_eq!(non_log(s.handle(5000, Event::Tick)), []);
    assert_eq!(non_log(s.handle(5000, Event::Shutdown(Finish::Halt))), []);
}

#[test]
fn halt_stops_keepalived_before_nginx() {
    stops_in_reverse(Finish::Halt);
}

#[test]
fn reboot_stops_the_same_way_and_finishes_with_reboot() {
    stops_in_reverse(Finish::Reboot);
}

#[test]
fn sigkill_after_the_grace_period() {
    let mut s = running_lb();
    s.handle(1000, Event::Shutdown(Finish::Halt));
    assert_eq!(s.next_wakeup(), Some(3000));
    let a = s.handle(3000, Event::Tick);
    assert_eq!(
        logs(&a),
        ["[warn] keepalived still running after its grace period; SIGKILL"]
    );
    assert_eq!(
        non_log(a),
        [Action::Kill {
            svc: 1,
            pgid: 11,
            signal: Sig::Kill
        }]
    );
    s.handle(
        3001,
        Event::Exited {
            pid: 11,
            status: ExitStatus::Signal(9),
        },
    );
    // nginx's turn, with its own grace.
    assert_eq!(s.next_wakeup(), Some(6001));
    // A process that survives SIGKILL (stuck in D state) is given up, not waited on forever.
    s.handle(6001, Event::Tick);
    let a = s.handle(6001 + KILL_WAIT_MS, Event::Tick);
    assert!(logs(&a)[0].contains("did not exit after SIGKILL"));
    assert_eq!(non_log(a), [Action::Finish(Finish::Halt)]);
}

#[test]
fn shutdown_cancels_pending_restarts_and_starts() {
    let mut s = running_lb();
    s.handle(
        100,
        Event::Exited {
            pid: 11,
            status: ExitStatus::Code(1),
        },
    );
    let a = non_log(s.handle(150, Event::Shutdown(Finish::Halt)));
    assert_eq!(
        a,
        [Action::Kill {
            svc: 0,
            pgid: 10,
            signal: Sig::Quit
        }]
    );
    // The backoff timer of keepalived never fires a spawn.
    assert_eq!(non_log(s.handle(1000, Event::Tick)), []);
    let a = non_log(s.handle(
        1001,
        Event::Exited {
            pid: 10,
            status: ExitStatus::Code(0),
        },
    ));
    assert_eq!(a.last(), Some(&Action::Finish(Finish::Halt)));
}

#[test]
fn shutdown_while_spawning_waits_for_nothing() {
    let mut s = lb();
    s.handle(0, Event::Start);
    let a = non_log(s.handle(1, Event::Shutdown(Finish::Halt)));
    assert_eq!(a, [Action::Finish(Finish::Halt)]);
    // A spawn that completes late is not adopted: it is killed.
    assert_eq!(
        non_log(s.handle(2, Event::Spawned { svc: 0, pid: 10 })),
        [Action::Kill {
            svc: 0,
            pgid: 10,
            signal: Sig::Kill
        }]
    );
}

#[test]
fn orphans_are_ignored() {
    let mut s = running_lb();
    assert_eq!(
        s.handle(
            10,
            Event::Exited {
                pid: 999,
                status: ExitStatus::Code(0)
            }
        ),
        []
    );
}

#[test]
fn no_services_means_idle_until_a_signal() {
    let mut s = Supervisor::new(vec![], Backoff::default());
    s.handle(0, Event::Start);
    assert_eq!(s.phase(), Phase::Running);
    assert_eq!(s.next_wakeup(), None);
    assert_eq!(
        non_log(s.handle(5, Event::Shutdown(Finish::Reboot))),
        [Action::Finish(Finish::Reboot)]
    );
}

/// A `supervise` file can carry any numbers: backoff and grace times at the
/// top of the u64 range, at times near the end of it, never overflow (a
/// panic ends PID 1; without overflow checks the deadline would wrap to 0).
#[test]
fn huge_times_saturate() {
    let mut s = Supervisor::new(
        vec![spec("x", tcp(80), Sig::Term, u64::MAX)],
        Backoff {
            initial_ms: u64::MAX / 2 + 1,
            max_ms: u64::MAX,
            reset_after_ms: u64::MAX,
        },
    );
    let late = u64::MAX - 10;
    s.handle(late, Event::Start);
    s.handle(late, Event::Spawned { svc: 0, pid: 10 });
    s.handle(
        late,
        Event::Exited {
            pid: 10,
            status: ExitStatus::Code(1),
        },
    );
    assert_eq!(s.next_wakeup(), Some(u64::MAX));
    s.handle(u64::MAX, Event::Tick);
    s.handle(u64::MAX, Event::Spawned { svc: 0, pid: 11 });
    s.handle(
        u64::MAX,
        Event::Exited {
            pid: 11,
            status: ExitStatus::Code(1),
        },
    );
    s.handle(u64::MAX, Event::Tick);
    s.handle(u64::MAX, Event::Spawned { svc: 0, pid: 12 });
    let a = s.handle(u64::MAX, Event::Shutdown(Finish::Halt));
    assert!(a.iter().any(|a| matches!(a, Action::Kill { pgid: 12, .. })));
}

/// keepalived with `linger_ms`: after it stopped on a halt, nginx is left
/// alone for that long (it answers from the VIP on `lo` while the next lb
/// takes the VIP), then stopped; the wakeup time says when.
#[test]
fn a_lingering_service_holds_back_the_next_stop() {
    let mut s = running_lb();
    s.svcs[1].spec.linger_ms = 1500;
    s.handle(1000, Event::Shutdown(Finish::Halt));
    let a = s.handle(
        1200,
        Event::Exited {
            pid: 11,
            status: ExitStatus::Code(0),
        },
    );
    assert_eq!(
        non_log(a.clone()),
        [Action::Kill {
            svc: 1,
            pgid: 11,
            signal: Sig::Kill
        }]
    );
    assert!(
        logs(&a).contains(&"[info] the next service stops in 1500 ms".to_string()),
        "{a:?}"
    );
    assert_eq!(s.next_wakeup(), Some(2700));
    assert_eq!(non_log(s.handle(2699, Event::Tick)), []);
    assert_eq!(
        non_log(s.handle(2700, Event::Tick)),
        [Action::Kill {
            svc: 0,
            pgid: 10,
            signal: Sig::Quit
        }]
    );
    // Outside a halt (keepalived crashed and restarts) there is no lingering.
    let mut s = running_lb();
    s.svcs[1].spec.linger_ms = 1500;
    let a = non_log(s.handle(
        3000,
        Event::Exited {
            pid: 11,
            status: ExitStatus::Code(1),
        },
    ));
    assert!(!a.iter().any(|x| matches!(x, Action::Kill { svc: 0, .. })));
    assert_eq!(s.status()[1].state, "backoff");
}
