//! The supervisor with real, short-lived processes: `haimg-init supervise`
//! runs in its own process (a subreaper, as it is not PID 1), so the signals
//! these tests send reach it and not the test harness. Services are small
//! shell and Python programs that write what happens to them into an events
//! file; the tests wait on conditions (status file, events, /proc) with a
//! deadline, never on a fixed sleep.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PY: &str = "/usr/bin/python3";

struct Run {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Run {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn status(&self) -> Value {
        fs::read_to_string(self.path("status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    fn console(&self) -> String {
        fs::read_to_string(self.path("console.log")).unwrap_or_default()
    }

    fn events(&self) -> Vec<String> {
        fs::read_to_string(self.path("events"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn wait_for(&self, what: &str, secs: u64, mut cond: impl FnMut(&Run) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nstatus: {}\nconsole:\n{}\nevents: {:?}",
                self.status(),
                self.console(),
                self.events()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn all_ready(&self) -> bool {
        self.status()["services"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|x| x["ready"] == true))
    }

    fn signal(&self, signo: i32) {
        // SAFETY: plain kill(2) on the pid of the child this test started.
        assert_eq!(unsafe { libc::kill(self.pid(), signo) }, 0);
    }

    /// Wait for the supervisor to exit; its exit code.
    fn wait_exit(&mut self, secs: u64) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "supervisor did not exit\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; it counts as dead only once reaped.
    Path::new(&format!("/proc/{pid}")).exists()
}

fn zombies_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        if f.len() > 1 && f[0] == "Z" && f[1] == pid.to_string() {
            out.push(e.file_name().to_string_lossy().parse().unwrap_or(0));
        }
    }
    out
}

/// An nginx stand-in: listens on `port`, records start and the stop signal.
fn web(dir: &Path, port: u16) -> Value {
    let ev = dir.join("events");
    let script = format!(
        "import signal,socket,sys\n\
         ev=open({ev:?},'a')\n\
         def stop(n,f):\n    ev.write('web stop %d\\n'%n); ev.flush(); sys.exit(0)\n\
         signal.signal(signal.SIGTERM,stop); signal.signal(signal.SIGQUIT,stop)\n\
         s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('127.0.0.1',{port})); s.listen(8)\n\
         ev.write('web start\\n'); ev.flush()\n\
         while True:\n    c,_=s.accept(); c.close()\n"
    );
    json!({"name": "web", "program": PY, "args": ["-c", script],
           "ready": {"tcp": format!("127.0.0.1:{port}")}, "stop_signal": "QUIT", "grace_ms": 3000})
}

/// A keepalived stand-in: leaves a child in its process group when it stops.
fn vip(dir: &Path) -> Value {
    let d = dir.display();
    json!({"name": "vip", "program": "/bin/sh", "args": ["-c", format!(
        "trap 'echo vip stop >> {d}/events; exit 0' TERM; echo vip start >> {d}/events; \
         sleep 1000 & echo $! > {d}/vip.child; wait")],
        "ready": "spawned", "stop_signal": "TERM", "grace_ms": 2000})
}

fn start_in(dir: tempfile::TempDir, services: Value, backoff: Value) -> Run {
    let file = dir.path().join("services.json");
    fs::write(
        &file,
        serde_json::to_vec_pretty(&json!({"services": services, "backoff": backoff})).unwrap(),
    )
    .unwrap();
    let log = fs::File::create(dir.path().join("console.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_haimg-init"))
        .arg("supervise")
        .arg(&file)
        .arg("--status")
        .arg(dir.path().join("status.json"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Run {
        dir,
        child: Some(child),
    }
}

fn backoff() -> Value {
    json!({"initial_ms": 100, "max_ms": 400, "reset_after_ms": 10000})
}

/// Start web then vip, send `signo`, and check the stop order, the group
/// cleanup and how the supervisor ends.
fn stop_by(signo: i32, expect_finish: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let services = json!([web(dir.path(), port), vip(dir.path())]);
    let mut run = start_in(dir, services, backoff());
    run.wait_for("both services ready", 15, Run::all_ready);
    run.wait_for("vip's child pid", 5, |r| {
        r.path("vip.child").exists()
            && !fs::read_to_string(r.path("vip.child"))
                .unwrap()
                .trim()
                .is_empty()
    });
    let vip_child: i32 = fs::read_to_string(run.path("vip.child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(vip_child));

    // LXC picks SIGRTMIN+3 as the halt signal only if PID 1 blocks it.
    let status = fs::read_to_string(format!("/proc/{}/status", run.pid())).unwrap();
    let sigblk = status.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
    let mask = u64::from_str_radix(sigblk.split_whitespace().nth(1).unwrap(), 16).unwrap();
    for s in [
        libc::SIGRTMIN() + 3,
        libc::SIGPWR,
        libc::SIGTERM,
        libc::SIGINT,
    ] {
        assert!(
            mask & (1 << (s - 1)) != 0,
            "signal {s} is not blocked: {sigblk}"
        );
    }

    let t0 = Instant::now();
    run.signal(signo);
    let code = run.wait_exit(10);
    let took = t0.elapsed();
    assert_eq!(code, 0, "{}", run.console());
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert_eq!(
        run.events(),
        [
            "web start",
            "vip start",
            "vip stop",
            &format!("web stop {}", libc::SIGQUIT)
        ],
        "keepalived's stand-in must stop before nginx's"
    );
    let console = run.console();
    assert!(
        console.contains("haimg-init[info]: stopping vip pid"),
        "{console}"
    );
    assert!(
        console.contains("haimg-init[info]: all services stopped"),
        "{console}"
    );
    assert_eq!(run.status()["finish"], expect_finish);
    // What vip left in its process group was killed with the group.
    run.wait_for("vip's leftover child to be gone", 5, |_| {
        !alive(vip_child) || zombie(vip_child)
    });
}

fn zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

#[test]
fn sigpwr_halts_in_reverse_order() {
    stop_by(libc::SIGPWR, "halt");
}

#[test]
fn sigrtmin_plus_3_halts_in_reverse_order() {
    stop_by(libc::SIGRTMIN() + 3, "halt");
}

#[test]
fn sigterm_halts_in_reverse_order() {
    stop_by(libc::SIGTERM, "halt");
}

#[test]
fn sigint_decides_reboot_but_only_pid1_reboots() {
    stop_by(libc::SIGINT, "reboot");
}

#[test]
fn restarts_with_backoff_and_reaps_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let services = json!([
        // Exits at once; leaves a background child in its group.
        {"name": "crashy", "program": "/bin/sh", "args": ["-c", format!("echo crash >> {d}/events; sleep 1000 & exit 3")],
         "ready": "spawned", "stop_signal": "TERM", "grace_ms": 500},
        // Orphans a grandchild outside its control: the subreaper must reap it.
        {"name": "parent", "program": "/bin/sh", "args": ["-c", format!(
            "/bin/sh -c 'sleep 0.3 & echo $! > {d}/orphan.pid'; exec sleep 1000")],
         "ready": "spawned", "stop_signal": "TERM", "grace_ms": 500},
    ]);
    let mut run = start_in(dir, services, backoff());
    run.wait_for("four starts of crashy", 10, |r| {
        r.events().iter().filter(|e| *e == "crash").count() >= 4
    });
    let console = run.console();
    for delay in [100, 200, 400] {
        let line = "crashy exited (code 3) after";
        let want = format!("restart in {delay} ms");
        assert!(
            console.lines().any(|l| l.starts_with("haimg-init[warn]: ")
                && l.contains(line)
                && l.ends_with(&want)),
            "no restart in {delay} ms:\n{console}"
        );
    }
    run.wait_for("restart count in the status file", 5, |r| {
        r.status()["services"][0]["restarts"].as_u64().unwrap_or(0) >= 3
    });
    assert_eq!(run.status()["services"][0]["last_exit"], json!({"code": 3}));

    run.wait_for("the orphan's pid", 5, |r| {
        r.path("orphan.pid").exists()
            && !fs::read_to_string(r.path("orphan.pid"))
                .unwrap()
                .trim()
                .is_empty()
    });
    let orphan: i32 = fs::read_to_string(run.path("orphan.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    run.wait_for("the orphan to be reaped (not left a zombie)", 5, |_| {
        !alive(orphan)
    });
    run.wait_for("no zombie children", 5, |r| zombies_of(r.pid()).is_empty());

    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(10), 0);
}

#[test]
fn a_missing_binary_is_reported_and_the_supervisor_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let services = json!([
        {"name": "ghost", "program": "/nonexistent/haimg-ghost", "ready": "spawned", "stop_signal": "TERM", "grace_ms": 100},
    ]);
    let mut run = start_in(dir, services, backoff());
    run.wait_for("ghost to be failed", 5, |r| {
        r.status()["services"][0]["state"] == "failed"
    });
    assert_eq!(
        run.status()["services"][0]["reason"],
        "/nonexistent/haimg-ghost not found"
    );
    let errors: Vec<String> = run
        .console()
        .lines()
        .filter(|l| l.starts_with("haimg-init[error]"))
        .map(String::from)
        .collect();
    assert_eq!(
        errors,
        ["haimg-init[error]: ghost: /nonexistent/haimg-ghost not found; not restarting"]
    );
    // Still alive and still answering the halt signal.
    assert!(run.child.as_mut().unwrap().try_wait().unwrap().is_none());
    run.signal(libc::SIGPWR);
    assert_eq!(run.wait_exit(5), 0);
}

#[test]
fn sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let services = json!([
        {"name": "stubborn", "program": "/bin/sh", "args": ["-c", format!(
            "trap '' TERM; echo up >> {d}/events; while :; do sleep 0.05; done")],
         "ready": "spawned", "stop_signal": "TERM", "grace_ms": 300},
    ]);
    let mut run = start_in(dir, services, backoff());
    run.wait_for("stubborn up", 5, |r| r.events() == ["up"]);
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(5), 0);
    assert!(
        run.console()
            .contains("haimg-init[warn]: stubborn still running after its grace period; SIGKILL"),
        "{}",
        run.console()
    );
    assert!(
        run.console()
            .contains("haimg-init[info]: stubborn stopped (signal 9)"),
        "{}",
        run.console()
    );
}
