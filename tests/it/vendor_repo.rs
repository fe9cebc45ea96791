//! The mongo recipe's vendor path end to end — signing key, signed release
//! file, package index, lock, download, build — against a faithful local copy
//! of a vendor apt repository served on 127.0.0.1 by this test.
//!
//! The repository is laid out like MongoDB's (`dists/bookworm/mongodb-org/8.0`
//! with `InRelease`, `Release`, `Release.gpg`, `main/binary-amd64/Packages`,
//! and `pool/`), signed with an ed25519 key the test generates, and holds one
//! package: a STAND-IN `mongodb-org-server` built here by `dpkg-deb`, with the
//! real package's Debian dependencies and no mongod in it (a file says so).
//! It lives in a temporary directory and is never shipped. The recipe is a
//! copy of `images/mongo.yaml` whose vendor `repository.uri` and `key_url`
//! point at the local server (and whose zstd level is low, for time).
//!
//! Then `haimg lock --update --role mongo` and `haimg build --role mongo`,
//! and the failures a user can meet: a package changed after it was locked,
//! a release file whose signature does not verify, and a signing key that is
//! gone. Each is a clear error (snapshot), and leaves nothing in `out/`, the
//! lock, or the cache.
//!
//! Needs root, gpg, dpkg-deb, mmdebstrap and the Debian mirror; runs with
//! `HAIMG_BUILD_TESTS=1` (`make unit`), says why it skips otherwise, and
//! under `CI=true` a skip is a failure.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use haimg::digest::{sha256_file, sha256_hex};

const BIN: &str = env!("CARGO_BIN_EXE_haimg");
const PACKAGE: &str = "mongodb-org-server";
/// Clearly not a MongoDB release.
const VERSION: &str = "8.0.99~haimg.standin";
const SUITE: &str = "bookworm/mongodb-org/8.0";
const MARKER: &str = "/usr/lib/haimg-test/STAND-IN-NOT-MONGODB";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn asked_for() -> bool {
    if std::env::var("HAIMG_BUILD_TESTS").as_deref() != Ok("1") {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs the vendor repository test: set HAIMG_BUILD_TESTS=1 (make unit does)"
        );
        eprintln!(
            "skipped: set HAIMG_BUILD_TESTS=1 (make unit does) to run the vendor path end to end"
        );
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the build needs root");
    true
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A static file server on 127.0.0.1 for one directory: GET and HEAD,
/// keep-alive (apt pipelines), 404 for anything missing.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(dir: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let dir = dir.clone();
                std::thread::spawn(move || serve(conn, &dir));
            }
        });
        Server { addr, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

fn serve(conn: TcpStream, dir: &Path) {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
        }
        let mut parts = request.split_whitespace();
        let method = parts.next().unwrap_or("");
        let path = percent_decode(parts.next().unwrap_or("/"));
        let file = (!path.contains(".."))
            .then(|| dir.join(path.trim_start_matches('/')))
            .filter(|p| p.is_file());
        let (status, body) = match file {
            Some(p) => ("200 OK", std::fs::read(p).unwrap_or_default()),
            None => ("404 Not Found", b"not found\n".to_vec()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
            body.len()
        );
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method != "HEAD" && conn.write_all(&body).is_err() {
            return;
        }
    }
}

/// `%7e` → `~`, as a web server maps a URL path to a file name.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = || u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok();
        match (b[i], hex()) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The signing key, in a GNUPGHOME of its own; its agent is stopped on drop.
struct Signer {
    home: tempfile::TempDir,
}

impl Signer {
    fn new(uid: &str) -> Signer {
        let home = tempfile::Builder::new()
            .prefix("haimg-gpg-")
            .tempdir()
            .unwrap();
        let s = Signer { home };
        run(s.gpg().args([
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
        ]));
        s
    }

    fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path()).args([
            "--batch",
            "--quiet",
            "--pinentry-mode",
            "loopback",
        ]);
        c
    }

    fn public_key(&self) -> String {
        run(self.gpg().args(["--armor", "--export"]))
    }

    /// `InRelease` (clear-signed) and `Release.gpg` (detached) for `release`.
    fn sign(&self, release: &Path) {
        let dir = release.parent().unwrap();
        for (args, out) in [
            (["--clearsign", "-o"], "InRelease"),
            (["--detach-sign", "-o"], "Release.gpg"),
        ] {
            let _ = std::fs::remove_file(dir.join(out));
            run(self
                .gpg()
                .args(["--armor"])
                .args(args)
                .arg(dir.join(out))
                .arg(release));
        }
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .status();
    }
}

/// The stand-in package: the real one's Debian dependencies, a file saying
/// what it is, no mongod. `variant` changes its bytes (a republished package).
fn standin_deb(work: &Path, variant: &str) -> PathBuf {
    let tree = work.join(format!("deb-{variant}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: {PACKAGE}\nVersion: {VERSION}\nArchitecture: amd64\n\
             Maintainer: haimg tests <tests@haimg.invalid>\n\
             Depends: libc6 (>= 2.36), libcurl4 (>= 7.16.2), libssl3 (>= 3.0.0)\n\
             Section: database\nPriority: optional\n\
             Description: STAND-IN made by haimg's tests, not MongoDB\n \
             Built by tests/vendor_repo.rs to run the vendor repository path of haimg\n \
             lock and haimg build. It holds no mongod and is never shipped.\n"
        ),
    )
    .unwrap();
    let marker = tree.join(MARKER.trim_start_matches('/'));
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    std::fs::write(
        &marker,
        format!("a stand-in for {PACKAGE} made by haimg's tests ({variant}); not MongoDB\n"),
    )
    .unwrap();
    let deb = work.join(format!("{PACKAGE}_{VERSION}_amd64-{variant}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    deb
}

/// The repository tree under `<www>/apt/debian`, publishing `deb`, signed by `signer`.
fn publish(www: &Path, deb: &Path, signer: &Signer) {
    let base = www.join("apt/debian");
    let pool_rel = format!("pool/main/m/{PACKAGE}/{PACKAGE}_{VERSION}_amd64.deb");
    let pool = base.join(&pool_rel);
    std::fs::create_dir_all(pool.parent().unwrap()).unwrap();
    std::fs::copy(deb, &pool).unwrap();
    let control = run(Command::new("dpkg-deb").arg("-f").arg(&pool));
    let packages = format!(
        "{}Filename: {pool_rel}\nSize: {}\nSHA256: {}\n\n",
        control,
        std::fs::metadata(&pool).unwrap().len(),
        sha256_file(&pool).unwrap()
    );
    let dist = base.join("dists").join(SUITE);
    let index_rel = "main/binary-amd64/Packages";
    std::fs::create_dir_all(dist.join("main/binary-amd64")).unwrap();
    std::fs::write(dist.join(index_rel), &packages).unwrap();
    let release = format!(
        "Origin: mongodb\nLabel: mongodb\nSuite: bookworm\nCodename: {SUITE}\n\
         Date: Sat, 01 Jan 2022 00:00:00 UTC\nArchitectures: amd64\nComponents: main\n\
         Description: stand-in of MongoDB's apt repository for haimg's tests\n\
         SHA256:\n {} {} {index_rel}\n",
        sha256_hex(packages.as_bytes()),
        packages.len()
    );
    std::fs::write(dist.join("Release"), release).unwrap();
    signer.sign(&dist.join("Release"));
}

/// A project with the real mongo recipe, its vendor repository and key at `server`.
fn project(dir: &Path, server: &Server) -> PathBuf {
    let p = dir.join("project");
    std::fs::create_dir_all(p.join("images")).unwrap();
    let recipe = std::fs::read_to_string(root().join("images/mongo.yaml")).unwrap();
    let copy = recipe
        .replace(
            "uri: https://repo.mongodb.org/apt/debian",
            &format!("uri: {}", server.url("/apt/debian")),
        )
        .replace(
            "key_url: https://pgp.mongodb.com/server-8.0.asc",
            &format!("key_url: {}", server.url("/server-8.0.asc")),
        )
        .replace("zstd_level: 19", "zstd_level: 3");
    for (from, what) in [
        ("repo.mongodb.org", "uri"),
        ("pgp.mongodb.com", "key_url"),
        ("zstd_level: 19", "zstd"),
    ] {
        assert!(
            !copy.contains(from),
            "the recipe copy still has the real {what}:\n{copy}"
        );
    }
    std::fs::write(p.join("images/mongo.yaml"), copy).unwrap();
    let templates = p.join("roles/mongo/templates");
    std::fs::create_dir_all(&templates).unwrap();
    for e in std::fs::read_dir(root().join("roles/mongo/templates")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), templates.join(e.file_name())).unwrap();
    }
    p
}

/// A cache of its own whose blobs start as links to the project's download
/// cache, so the Debian packages need not be downloaded again.
fn cache(dir: &Path) -> PathBuf {
    let c = dir.join("cache");
    let blobs = c.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let shared = haimg::build::Project { root: root() }
        .cache_dir()
        .join("blobs/sha256");
    if let Ok(rd) = std::fs::read_dir(&shared) {
        for e in rd.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().len() == 64 {
                std::os::unix::fs::symlink(e.path(), blobs.join(&name)).unwrap();
            }
        }
    }
    c
}

/// The haimg-init of this workspace, as `haimg build` builds it (the
/// recipe copy's project has no workspace to build one from).
fn init_binary() -> PathBuf {
    let out = run(Command::new(BIN)
        .args(["build", "--init-only", "--json"])
        .current_dir(root())
        .env_remove("HAIMG_SPEC"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    PathBuf::from(v["path"].as_str().unwrap())
}

/// Run the binary in `project`; (exit code, stderr).
fn haimg(project: &Path, cache: &Path, args: &[&str]) -> (i32, String) {
    let o = Command::new(BIN)
        .args(args)
        .current_dir(project)
        .env("HAIMG_CACHE_DIR", cache)
        .env_remove("HAIMG_SPEC")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every file under `dir`, for "nothing was written" checks.
fn files(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            } else {
                v.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    v.sort();
    v
}

struct Redact<'a> {
    server: &'a Server,
    dir: &'a Path,
}

impl Redact<'_> {
    fn apply(&self, s: &str) -> String {
        let s = s
            .replace(&self.server.addr.to_string(), "127.0.0.1:[PORT]")
            .replace(&self.dir.display().to_string(), "[DIR]");
        let s = regex::Regex::new(r"[0-9a-f]{64}")
            .unwrap()
            .replace_all(&s, "[SHA256]");
        let s = regex::Regex::new(r"\b[0-9A-F]{16}\b")
            .unwrap()
            .replace_all(&s, "[KEYID]");
        regex::Regex::new(r"\d+\.\d+ s\b")
            .unwrap()
            .replace_all(&s, "[T] s")
            .into_owned()
    }
}

/// The lines of `stderr` from the first `error:` on.
fn error_part(stderr: &str) -> &str {
    stderr.find("error:").map_or(stderr, |i| &stderr[i..])
}

#[test]
fn the_vendor_repository_path_end_to_end() {
    if !asked_for() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("haimg-vendor-")
        .tempdir()
        .unwrap();
    let work = dir.path().join("work");
    let www = dir.path().join("www");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&www).unwrap();
    let signer = Signer::new("haimg test vendor repository (stand-in) <tests@haimg.invalid>");
    std::fs::write(www.join("server-8.0.asc"), signer.public_key()).unwrap();
    let good = standin_deb(&work, "a");
    publish(&www, &good, &signer);
    let server = Server::start(www.clone());
    let project = project(dir.path(), &server);
    let cache = cache(dir.path());
    let red = Redact {
        server: &server,
        dir: dir.path(),
    };
    let lock_path = project.join("images/mongo.lock");
    let out = project.join("out");
    let init = init_binary();
    let build = ["build", "--role", "mongo", "--init", init.to_str().unwrap()];

    // 1. Lock: the stand-in from the signed local repository, its Debian dependencies from Debian.
    let (code, err) = haimg(&project, &cache, &["lock", "--update", "--role", "mongo"]);
    assert_eq!(code, 0, "{err}");
    let lock =
        haimg::build::lock::Lock::parse(&std::fs::read_to_string(&lock_path).unwrap()).unwrap();
    assert_eq!(lock.vendor.len(), 1, "{:?}", lock.vendor);
    let v = &lock.vendor[0];
    assert_eq!((v.name.as_str(), v.version.as_str()), (PACKAGE, VERSION));
    assert_eq!(v.sha256, sha256_file(&good).unwrap());
    assert_eq!(
        v.url,
        // apt writes the `~` of the version percent-encoded, as for Debian's `+`.
        server.url(&format!(
            "/apt/debian/pool/main/m/{PACKAGE}/{PACKAGE}_{}_amd64.deb",
            VERSION.replace('~', "%7e")
        ))
    );
    for dep in ["libcurl4", "libssl3", "libc6"] {
        assert!(
            lock.debian.iter().any(|d| d.name == dep),
            "{dep} is not locked"
        );
    }
    let locked = std::fs::read(&lock_path).unwrap();

    // 2. The package changed after it was locked (republished, validly signed): the build refuses it.
    let changed = standin_deb(&work, "b");
    let changed_sha = sha256_file(&changed).unwrap();
    publish(&www, &changed, &signer);
    let (code, err) = haimg(&project, &cache, &build);
    assert_eq!(code, 1, "{err}");
    let shown = red.apply(
        err.lines()
            .filter(|l| l.starts_with("[mongo] failed") || l.starts_with("  "))
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
    );
    insta::assert_snapshot!("vendor_changed_package", shown);
    assert!(
        files(&out).is_empty(),
        "out/ after a refused build: {:?}",
        files(&out)
    );
    assert!(!cache.join("blobs/sha256").join(&changed_sha).exists());
    assert!(!cache.join("images/mongo").exists());
    assert_eq!(std::fs::read(&lock_path).unwrap(), locked);

    // 3. Back to the locked bytes: the mongo template builds from the lock.
    publish(&www, &good, &signer);
    let (code, err) = haimg(&project, &cache, &build);
    assert_eq!(code, 0, "{err}");
    let tpl = out.join("haimg-mongo_1.0.0_amd64.tar.zst");
    let listing = run(Command::new("tar").arg("--zstd").arg("-tvf").arg(&tpl));
    assert!(
        listing.contains(&format!(".{MARKER}")),
        "no stand-in marker in the template"
    );
    assert!(
        !listing.contains("./usr/bin/mongod"),
        "the stand-in holds no mongod"
    );
    let status = run(Command::new("tar")
        .arg("--zstd")
        .arg("-xOf")
        .arg(&tpl)
        .arg("./var/lib/dpkg/status"));
    assert!(
        status.contains(&format!("Package: {PACKAGE}\n")),
        "{PACKAGE} not installed"
    );
    let role = run(Command::new("tar")
        .arg("--zstd")
        .arg("-xOf")
        .arg(&tpl)
        .arg("./etc/haimg/role"));
    assert_eq!(role, "mongo\n");
    assert_eq!(files(&out).len(), 5, "{:?}", files(&out));

    // 4. A release file whose signature does not verify: nothing is locked.
    let dist = www.join("apt/debian/dists").join(SUITE);
    let inrelease = std::fs::read_to_string(dist.join("InRelease")).unwrap();
    std::fs::write(
        dist.join("InRelease"),
        inrelease.replace("Label: mongodb", "Label: mongodb-tampered"),
    )
    .unwrap();
    let cache_before = files(&cache);
    let (code, err) = haimg(&project, &cache, &["lock", "--update", "--role", "mongo"]);
    assert_eq!(code, 1, "{err}");
    insta::assert_snapshot!("vendor_bad_signature", red.apply(error_part(&err)));
    assert_eq!(std::fs::read(&lock_path).unwrap(), locked);
    assert_eq!(files(&cache), cache_before);

    // 5. The signing key is gone: the package cannot be had, and the error says why.
    signer.sign(&dist.join("Release"));
    std::fs::remove_file(www.join("server-8.0.asc")).unwrap();
    let (code, err) = haimg(&project, &cache, &["lock", "--update", "--role", "mongo"]);
    assert_eq!(code, 1, "{err}");
    insta::assert_snapshot!("vendor_missing_key", red.apply(error_part(&err)));
    assert_eq!(std::fs::read(&lock_path).unwrap(), locked);
    assert_eq!(files(&cache), cache_before);
    drop(server);
}
