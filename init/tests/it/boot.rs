//! The boot steps against a directory (`haimg-init boot --root DIR`), as a
//! separate process: bad inputs give one `haimg-init[error]:` line, the same
//! reason in the status file, and an init that stays up (no services, still
//! answering the halt signal). The good path renders the role's configs into
//! DIR/run/haimg and spawns the services found under DIR. No network changes,
//! no mounts, no traffic: outside PID 1 the boot skips them.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    /// A rootfs as the image build and Proxmox leave it for `slot`.
    fn new(role: &str, slot: &str, ip: &str) -> Root {
        let dir = tempfile::tempdir().unwrap();
        let r = Root { dir };
        let raw = haimg_model::spec::parse_yaml_raw(haimg_model::DEFAULT_SPEC).unwrap();
        r.write(
            "etc/haimg/plan.json",
            &serde_json::to_string_pretty(&raw).unwrap(),
        );
        r.write("etc/haimg/role", &format!("{role}\n"));
        r.write(
            "etc/haimg/image.json",
            &format!(r#"{{"role":"{role}","version":"1.0.0","input_hash":"ab12cd34ef56ab12cd34ef56","source_date_epoch":1700000000}}"#),
        );
        for t in haimg_model::render::TEMPLATES
            .iter()
            .filter(|t| t.role.as_str() == role)
        {
            r.write(&format!("etc/haimg/templates/{}", t.name), t.source);
        }
        r.write("etc/hostname", &format!("{slot}\n"));
        r.write(
            "etc/network/interfaces",
            &format!("auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n\taddress {ip}/24\n\tgateway 192.168.30.1\n\n"),
        );
        r
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn executable(&self, rel: &str, script: &str) {
        self.write(rel, script);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn boot(&self, uts: &str) -> Boot {
        let log = fs::File::create(self.path("console.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_haimg-init"))
            .args(["boot", "--root"])
            .arg(self.dir.path())
            .env_clear()
            .env("HAIMG_TEST_UTS", uts)
            // What `haimg deploy` delivers to an lb (placeholder value).
            .env("HAIMG_VRRP_PASS", "VRRPPASS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Boot {
            child: Some(child),
            root: self.dir.path().to_path_buf(),
        }
    }
}

struct Boot {
    child: Option<Child>,
    root: std::path::PathBuf,
}

impl Boot {
    fn status(&self) -> Value {
        fs::read_to_string(self.root.join("run/haimg/status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    fn console(&self) -> String {
        fs::read_to_string(self.root.join("console.log")).unwrap_or_default()
    }

    fn wait_for(&self, what: &str, mut cond: impl FnMut(&Boot) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nstatus: {}\nconsole:\n{}",
                self.status(),
                self.console()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Halt it and return its exit code.
    fn halt(&mut self) -> i32 {
        let mut c = self.child.take().unwrap();
        // SAFETY: kill(2) on the pid of the child this test started.
        unsafe { libc::kill(c.id() as i32, libc::SIGPWR) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "did not halt\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn errors(&self) -> Vec<String> {
        self.console()
            .lines()
            .filter(|l| l.starts_with("haimg-init[error]: "))
            .map(String::from)
            .collect()
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Boot, wait for the error in the status file, check it is also the console
/// line, that the init stays up, and that it still halts cleanly.
fn fails_and_stays_up(root: &Root, uts: &str, expected: &str) {
    let mut b = root.boot(uts);
    b.wait_for("an error in the status file", |b| {
        b.status()["error"].is_string()
    });
    assert_eq!(b.status()["error"], expected);
    assert_eq!(b.status()["services"], serde_json::json!([]));
    assert_eq!(b.status()["phase"], "idle");
    assert_eq!(b.status()["boot_attempts"], 1);
    assert!(b.status()["next_attempt_ms"].is_number());
    assert_eq!(
        b.errors(),
        [
            format!("haimg-init[error]: {expected}"),
            "haimg-init[error]: boot attempt 1 failed; no services started; retrying in 1 s (the init stays up and answers the halt signal)"
                .to_string()
        ]
    );
    // The same failure again is one info line, not another error.
    b.wait_for("the second attempt", |b| b.status()["boot_attempts"] == 2);
    b.wait_for("its console line", |b| {
        b.console()
            .contains("haimg-init[info]: boot attempt 2 failed the same way; next in 2 s")
    });
    assert_eq!(b.errors().len(), 2, "{}", b.console());
    assert!(b.running(), "the init exited:\n{}", b.console());
    assert_eq!(b.halt(), 0);
    assert_eq!(b.status()["finish"], "halt");
}

#[test]
fn missing_role_file() {
    let r = Root::new("lb", "nginx1", "192.168.30.100");
    fs::remove_file(r.path("etc/haimg/role")).unwrap();
    fails_and_stays_up(
        &r,
        "nginx1",
        "identity: /etc/haimg/role: missing; the image must name its role (lb, mongo or webapp)",
    );
}

#[test]
fn unknown_role() {
    let r = Root::new("lb", "nginx1", "192.168.30.100");
    r.write("etc/haimg/role", "cache\n");
    fails_and_stays_up(
        &r,
        "nginx1",
        "identity: /etc/haimg/role: unknown role \"cache\"; expected lb, mongo or webapp",
    );
}

/// Identity reads only eth0's address from /etc/network/interfaces: a stray
/// line and a bad gateway are warnings, and the boot goes on.
#[test]
fn stray_lines_in_interfaces_do_not_stop_the_boot() {
    let r = Root::new("lb", "nginx1", "192.168.30.100");
    r.write(
        "etc/network/interfaces",
        "\tmtu 1400\niface eth0 inet static\n\taddress 192.168.30.100/24\n\tgateway 192.168.30.x\n",
    );
    r.executable("usr/sbin/nginx", "#!/bin/sh\nexec sleep 1000\n");
    r.executable("usr/sbin/keepalived", "#!/bin/sh\nexec sleep 1000\n");
    let mut b = r.boot("nginx1");
    b.wait_for("nginx to be spawned", |b| {
        b.status()["services"][0]["pid"].is_number()
    });
    let st = b.status();
    assert_eq!(st["error"], Value::Null);
    assert_eq!(st["identity"]["slot"], "nginx1");
    assert_eq!(
        st["warnings"],
        serde_json::json!([
            "/etc/network/interfaces: line 1: option `mtu` is outside an iface stanza; ignored",
            "/etc/network/interfaces: line 4: \"192.168.30.x\" is not an IPv4 gateway; using the plan's gateway"
        ])
    );
    assert_eq!(b.halt(), 0);
}

/// A non-UTF-8 environment variable and a non-ASCII image hash used to abort
/// PID 1 (`std::env::vars` and byte slicing panic; the init has panic=abort).
#[test]
fn hostile_environment_and_image_json_do_not_abort() {
    use std::os::unix::ffi::OsStrExt;
    let r = Root::new("lb", "nginx1", "192.168.30.100");
    r.write(
        "etc/haimg/image.json",
        r#"{"role":"lb","version":"1.0.0","input_hash":"ééééééééééééééé","source_date_epoch":1700000000}"#,
    );
    r.executable("usr/sbin/nginx", "#!/bin/sh\nexec sleep 1000\n");
    r.executable("usr/sbin/keepalived", "#!/bin/sh\nexec sleep 1000\n");
    let log = fs::File::create(r.path("console.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_haimg-init"))
        .args(["boot", "--root"])
        .arg(r.dir.path())
        .env_clear()
        .env("HAIMG_TEST_UTS", "nginx1")
        .env("HAIMG_VRRP_PASS", "VRRPPASS")
        .env(
            std::ffi::OsStr::from_bytes(b"HAIMG_NOTE"),
            std::ffi::OsStr::from_bytes(b"caf\xe9"),
        )
        .env(
            std::ffi::OsStr::from_bytes(b"HAIMG_\xff"),
            std::ffi::OsStr::from_bytes(b"x"),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut b = Boot {
        child: Some(child),
        root: r.dir.path().to_path_buf(),
    };
    b.wait_for("nginx to be spawned", |b| {
        b.status()["services"][0]["pid"].is_number()
    });
    let nginx = fs::read_to_string(r.path("run/haimg/nginx/nginx.conf")).unwrap();
    assert!(nginx.contains("image unknown)."), "{nginx}");
    assert_eq!(
        b.status()["warnings"],
        serde_json::json!([
            "/etc/haimg/image.json: input_hash is not hex; the image is shown as unknown"
        ])
    );
    let c = b.console();
    assert!(
        c.contains("haimg-init[warn]: environment variable HAIMG_NOTE is not UTF-8; ignored"),
        "{c}"
    );
    assert!(b.running());
    assert_eq!(b.halt(), 0);
}

/// A boot step that fails for a reason that can pass (here: something in the
/// way of /run/haimg/nginx) is retried with backoff and reported in the
/// status file meanwhile; once the cause is gone the services start.
#[test]
fn a_failed_boot_step_is_retried_until_it_succeeds() {
    let r = Root::new("lb", "nginx1", "192.168.30.100");
    r.executable("usr/sbin/nginx", "#!/bin/sh\nexec sleep 1000\n");
    r.executable("usr/sbin/keepalived", "#!/bin/sh\nexec sleep 1000\n");
    r.write("run/haimg/nginx", "a file where a directory belongs\n");
    let mut b = r.boot("nginx1");
    b.wait_for("the failure in the status file", |b| {
        b.status()["error"].is_string()
    });
    let st = b.status();
    let err = st["error"].as_str().unwrap();
    assert!(err.starts_with("render: failed to write "), "{err}");
    assert_eq!(st["phase"], "idle");
    assert_eq!(st["boot_attempts"], 1);
    assert_eq!(st["services"], serde_json::json!([]));
    fs::remove_file(r.path("run/haimg/nginx")).unwrap();
    b.wait_for("the retry to start nginx", |b| {
        b.status()["services"][0]["pid"].is_number()
    });
    let st = b.status();
    assert_eq!(st["error"], Value::Null);
    assert_eq!(st["boot_attempts"], 2);
    assert_eq!(st["next_attempt_ms"], Value::Null);
    assert!(b
        .console()
        .contains("haimg-init[info]: boot attempt 2 succeeded"));
    assert_eq!(b.halt(), 0);
}

/// The same with a real ENOSPC: a 4 KiB tmpfs at /run/haimg/nginx, full.
/// Needs root (mount); CI runs as root and must not skip it.
#[test]
fn enospc_on_run_is_retried() {
    if !nix::unistd::geteuid().is_root() {
        crate::skip("enospc_on_run_is_retried", "mounting a tmpfs needs root");
        return;
    }
    let r = Root::new("lb", "nginx1", "192.168.30.100");
    r.executable("usr/sbin/nginx", "#!/bin/sh\nexec sleep 1000\n");
    r.executable("usr/sbin/keepalived", "#!/bin/sh\nexec sleep 1000\n");
    let dir = r.path("run/haimg/nginx");
    fs::create_dir_all(&dir).unwrap();
    let mounted = Mount::tmpfs(&dir, "size=4k");
    // Fill it: the first write that does not fit fails with ENOSPC.
    let filler = dir.join("filler");
    let mut f = fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut f, &[0u8; 1024]).is_ok() {}
    drop(f);
    let mut b = r.boot("nginx1");
    b.wait_for("ENOSPC in the status file", |b| {
        b.status()["error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device"))
    });
    assert!(b.running());
    fs::remove_file(&filler).unwrap();
    b.wait_for("the retry to start nginx", |b| {
        b.status()["services"][0]["pid"].is_number()
    });
    assert!(b.status()["boot_attempts"].as_u64().unwrap() >= 2);
    assert_eq!(b.halt(), 0);
    drop(mounted);
}

/// A mount this test made, unmounted when dropped (also when the test fails).
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, opts: &str) -> Mount {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "haimg-test"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs on {}", at.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn hostname_and_address_disagree() {
    let r = Root::new("lb", "nginx2", "192.168.30.100");
    fails_and_stays_up(
        &r,
        "nginx2",
        "identity: kernel hostname \"nginx2\" names nginx2 but /etc/network/interfaces \"192.168.30.100\" names nginx1; expected one of: nginx1 (nginx1, 192.168.30.100), nginx2 (nginx2, 192.168.30.101), nginx3 (nginx3, 192.168.30.102)",
    );
}

#[test]
fn garbled_plan() {
    let r = Root::new("lb", "nginx1", "192.168.30.100");
    r.write("etc/haimg/plan.json", "{\"schema_version\": 1,");
    let mut b = r.boot("nginx1");
    b.wait_for("an error", |b| b.status()["error"].is_string());
    let e = b.status()["error"].as_str().unwrap().to_string();
    assert!(
        e.starts_with("plan: /etc/haimg/plan.json: error at line 1 column"),
        "{e}"
    );
    assert!(b.running());
    assert_eq!(b.halt(), 0);
}

#[test]
fn a_template_that_fails_to_render() {
    let r = Root::new("lb", "nginx1", "192.168.30.100");
    r.write(
        "etc/haimg/templates/nginx.conf",
        "worker_processes auto;\nlisten {{ lb.listen_prot }};\n",
    );
    fails_and_stays_up(
        &r,
        "nginx1",
        "render: template nginx.conf: undefined value (line 2)",
    );
}

#[test]
fn a_bad_secret() {
    let r = Root::new("mongo", "mongo2", "192.168.30.104");
    let log = fs::File::create(r.path("console.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_haimg-init"))
        .args(["boot", "--root"])
        .arg(r.dir.path())
        .env_clear()
        .env("HAIMG_TEST_UTS", "mongo2")
        .env("HAIMG_MONGO_KEY", "short")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let b = Boot {
        child: None,
        root: r.dir.path().to_path_buf(),
    };
    b.wait_for("an error", |b| b.status()["error"].is_string());
    assert_eq!(
        b.status()["error"],
        "HAIMG_MONGO_KEY: a keyfile is 6 to 1024 base64 characters (got 5 characters)"
    );
    // The secret itself is never printed.
    assert!(!b.console().contains("short"));
    // SAFETY: kill(2) on the pid of the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_missing_service_binary() {
    // The webapp image without Node: the service fails once, the init stays up.
    let r = Root::new("webapp", "webapp2", "192.168.30.107");
    let mut b = r.boot("webapp2");
    b.wait_for("the service to fail", |b| {
        b.status()["services"][0]["state"] == "failed"
    });
    let reason = b.status()["services"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    let node = r.path("opt/node/bin/node");
    assert_eq!(reason, format!("{} not found", node.display()));
    assert_eq!(
        b.errors(),
        [format!(
            "haimg-init[error]: pm2-runtime: {reason}; not restarting"
        )]
    );
    // The config was rendered all the same.
    let eco = fs::read_to_string(r.path("run/haimg/pm2/ecosystem.config.js")).unwrap();
    assert!(eco.contains("\"HOSTNAME\": \"192.168.30.107\""));
    assert!(b.running());
    assert_eq!(b.halt(), 0);
}

/// PM2 and the app run as the image's unprivileged web app user, with
/// PM2_HOME and the rendered ecosystem file theirs; never as root.
#[test]
fn the_web_app_runs_unprivileged() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let r = Root::new("webapp", "webapp2", "192.168.30.107");
    r.write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nwebapp:x:990:990:haimg web app:/nonexistent:/usr/sbin/nologin\n",
    );
    let seen = r.path("seen");
    fs::create_dir(&seen).unwrap();
    fs::set_permissions(&seen, fs::Permissions::from_mode(0o777)).unwrap();
    r.executable("opt/pm2/node_modules/pm2/bin/pm2-runtime", "");
    r.executable(
        "opt/node/bin/node",
        &format!(
            "#!/bin/sh\necho \"$(id -u):$(id -g):$(id -G):$HOME\" > {}/id\nexec sleep 1000\n",
            seen.display()
        ),
    );
    let mut b = r.boot("webapp2");
    b.wait_for("the app's id", |_| seen.join("id").is_file());
    b.wait_for("the whole line", |_| {
        fs::read_to_string(seen.join("id")).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(
        fs::read_to_string(seen.join("id")).unwrap(),
        "990:990:990:/run/pm2\n"
    );
    let home = fs::metadata(r.path("run/pm2")).unwrap();
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (990, 990, 0o700)
    );
    let eco = fs::metadata(r.path("run/haimg/pm2/ecosystem.config.js")).unwrap();
    assert_eq!((eco.uid(), eco.gid()), (990, 990));
    assert_eq!(b.halt(), 0);
}

#[test]
fn a_good_boot_renders_and_spawns() {
    let r = Root::new("lb", "nginx2", "192.168.30.101");
    // Stand-ins for the image's programs (they only need to run; nothing here tests nginx).
    r.executable("usr/sbin/nginx", "#!/bin/sh\nexec sleep 1000\n");
    r.executable("usr/sbin/keepalived", "#!/bin/sh\nexec sleep 1000\n");
    let mut b = r.boot("nginx2");
    b.wait_for("nginx to be spawned", |b| {
        b.status()["services"][0]["pid"].is_number()
    });
    let st = b.status();
    assert_eq!(st["error"], Value::Null);
    assert_eq!(st["identity"]["slot"], "nginx2");
    assert_eq!(st["identity"]["address"], "192.168.30.101/24");
    assert_eq!(st["image"]["input_hash"], "ab12cd34ef56ab12cd34ef56");
    for k in ["identity_ms", "network_ms", "render_ms"] {
        assert!(st["boot"][k].is_number(), "{k}: {st}");
    }
    let nginx = fs::read_to_string(r.path("run/haimg/nginx/nginx.conf")).unwrap();
    assert!(nginx.contains("# nginx for nginx2 (haimg 1.0.0, image ab12cd34ef56)."));
    let ka = fs::read_to_string(r.path("run/haimg/keepalived/keepalived.conf")).unwrap();
    assert!(ka.contains("state BACKUP") && ka.contains("priority 100"));
    let c = b.console();
    assert!(c.contains("haimg-init[info]: identity: lb nginx2 (vmid 101, 192.168.30.101/24) from kernel hostname \"nginx2\", /etc/network/interfaces \"192.168.30.101\""), "{c}");
    assert!(c.contains("haimg-init[info]: rendered 3 config(s)"), "{c}");
    assert!(c.contains("haimg-init[info]: nginx started pid"), "{c}");
    assert!(b.errors().is_empty(), "{c}");
    assert_eq!(b.halt(), 0);
}

/// A mongo member started with the store's secrets (placeholders here):
/// the keyfile lands 0400 on the tmpfs path mongod.conf names, the config
/// turns authorization on, and mongod's environment holds no secret.
#[test]
fn secrets_reach_their_files_and_no_service_environment() {
    use std::os::unix::fs::PermissionsExt;
    let r = Root::new("mongo", "mongo2", "192.168.30.104");
    // The stand-in mongod writes its environment where the test can read it.
    r.executable(
        "usr/bin/mongod",
        &format!(
            "#!/bin/sh\nenv > {}\nexec sleep 1000\n",
            r.path("mongod.env").display()
        ),
    );
    let log = fs::File::create(r.path("console.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_haimg-init"))
        .args(["boot", "--root"])
        .arg(r.dir.path())
        .env_clear()
        .env("HAIMG_TEST_UTS", "mongo2")
        .env("HAIMG_MONGO_KEY", "KEYFILEPLACEHOLDER0123456789")
        .env("HAIMG_MONGO_ADMIN_PASSWORD", "ADMIN-PASSWORD-PLACEHOLDER")
        .env("HAIMG_MONGO_APP_PASSWORD", "APP-PASSWORD-PLACEHOLDER")
        .env(
            "HAIMG_MONGO_MONITOR_PASSWORD",
            "MONITOR-PASSWORD-PLACEHOLDER",
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut b = Boot {
        child: Some(child),
        root: r.dir.path().to_path_buf(),
    };
    b.wait_for("mongod to write its environment", |_| {
        fs::read_to_string(r.path("mongod.env")).is_ok_and(|e| e.contains("PATH="))
    });
    let key = r.path("run/haimg/mongod/keyfile");
    assert_eq!(
        fs::read_to_string(&key).unwrap(),
        "KEYFILEPLACEHOLDER0123456789"
    );
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o400
    );
    let conf = fs::read_to_string(r.path("run/haimg/mongod/mongod.conf")).unwrap();
    assert!(
        conf.contains("  keyFile: /run/haimg/mongod/keyfile\n  authorization: enabled\n"),
        "{conf}"
    );
    let env = fs::read_to_string(r.path("mongod.env")).unwrap();
    assert!(!env.contains("HAIMG_"), "{env}");
    assert!(!env.contains("PLACEHOLDER"), "{env}");
    let c = b.console();
    assert!(!c.contains("PLACEHOLDER"), "{c}");
    assert_eq!(b.halt(), 0);
}
