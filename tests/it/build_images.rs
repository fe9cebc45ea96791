//! Real builds (nothing mocked): `haimg build` of lb and webapp twice from
//! scratch, from two checkouts of this project in different directories —
//! this repository, and a copy elsewhere whose Cargo output goes to a
//! `CARGO_TARGET_DIR` outside it (with a decoy init where Cargo's default
//! output would be) — the second also with another TMPDIR, umask 077 and
//! another TZ and LANG; both must give the same sha256. Then a third, warm run that
//! must do no work. The produced tarballs are read member by member.
//!
//! Needs root, mmdebstrap, the Debian mirror and the npm registry (or a warm
//! download cache), and minutes of time, so it runs with
//! `HAIMG_BUILD_TESTS=1` (`make unit` sets it); otherwise it says why it
//! skips, and under `CI=true` a skip is a failure.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use haimg::build::hash::sha256_hex;
use haimg::model::image::ImageInfo;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `Some(why)` when the test is not asked for; a missing prerequisite of a
/// run that was asked for fails instead.
fn skip_reason() -> Option<String> {
    if std::env::var("HAIMG_BUILD_TESTS").as_deref() != Ok("1") {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs the real builds: set HAIMG_BUILD_TESTS=1 (make unit does)"
        );
        return Some("set HAIMG_BUILD_TESTS=1 (make unit does) to build real templates".into());
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "real builds need root (mmdebstrap --mode=root, chroot, mounts)"
    );
    assert!(
        Command::new("mmdebstrap").arg("--version").output().is_ok(),
        "mmdebstrap is not installed (`make setup`)"
    );
    None
}

/// Run `haimg build` in `dir` with extra environment and an umask; returns the JSON summary.
fn haimg_build(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
    (tz, lang): (&str, &str),
    umask: &str,
) -> Value {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_haimg"))
        .arg("build")
        .args(args)
        .arg("--json")
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("HAIMG_SPEC")
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env("TZ", tz)
        .env("LANG", lang)
        .env("LC_ALL", lang)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "haimg build {args:?} in {} failed:\n{stderr}",
        dir.display()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Copy the project's sources to `to`: everything but Cargo's and haimg's
/// output, git's data and installed node modules.
fn copy_project(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let top_level_output = from == root()
            && matches!(
                name.to_str(),
                Some("target" | ".haimg" | "out" | "out-next" | ".git")
            );
        if top_level_output || matches!(name.to_str(), Some("node_modules" | ".next")) {
            continue;
        }
        let ty = e.file_type().unwrap();
        let dst = to.join(&name);
        if ty.is_dir() {
            copy_project(&e.path(), &dst);
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &dst).unwrap();
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Members of a `.tar.zst`: name → (type, mode, size, content or link target).
struct Member {
    kind: tar::EntryType,
    mode: u32,
    data: Vec<u8>,
    link: Option<String>,
}

fn read_template(path: &Path) -> (Vec<String>, BTreeMap<String, Member>) {
    let dec = zstd::stream::read::Decoder::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut ar = tar::Archive::new(dec);
    let mut order = Vec::new();
    let mut map = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let kind = e.header().entry_type();
        let mode = e.header().mode().unwrap();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        order.push(name.clone());
        map.insert(
            name,
            Member {
                kind,
                mode,
                data,
                link,
            },
        );
    }
    (order, map)
}

fn file<'a>(m: &'a BTreeMap<String, Member>, name: &str) -> &'a Member {
    let f = m.get(name).unwrap_or_else(|| panic!("{name} is missing"));
    assert_eq!(
        f.kind,
        tar::EntryType::Regular,
        "{name} is not a regular file"
    );
    f
}

fn check_common(
    role: &str,
    tpl: &Path,
    summary_role: &Value,
    init_sha: &str,
) -> BTreeMap<String, Member> {
    let (order, m) = read_template(tpl);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "{role}: members are not sorted bytewise");
    assert!(
        order.iter().all(|n| n.starts_with("./")),
        "{role}: a member name lacks ./"
    );
    for (name, e) in &m {
        assert!(
            !matches!(
                e.kind,
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
            ),
            "{role}: special file {name}"
        );
        if name.starts_with("./dev/") {
            assert_eq!(name, "./dev/", "{role}: {name} under /dev");
        }
    }
    // /sbin/init is the init: /sbin → usr/sbin (merged /usr), usr/sbin/init a regular file.
    assert_eq!(m["./sbin"].link.as_deref(), Some("usr/sbin"));
    let init = file(&m, "./usr/sbin/init");
    assert_eq!(
        sha256_hex(&init.data),
        init_sha,
        "{role}: /sbin/init is not the haimg-init that was built"
    );
    assert_eq!(init.mode & 0o777, 0o755);
    assert!(String::from_utf8_lossy(&file(&m, "./etc/debian_version").data).starts_with("12."));
    assert!(String::from_utf8_lossy(&file(&m, "./usr/lib/os-release").data).contains("bookworm"));
    assert!(m.contains_key("./etc/os-release"));
    let hosts = String::from_utf8_lossy(&file(&m, "./etc/hosts").data).into_owned();
    assert!(hosts.contains("127.0.0.1\tlocalhost"), "{hosts}");
    assert_eq!(file(&m, "./etc/hostname").data, b"localhost\n");
    assert!(file(&m, "./etc/machine-id").data.is_empty());
    assert_eq!(
        file(&m, "./etc/haimg/role").data,
        format!("{role}\n").as_bytes()
    );
    let info: ImageInfo = serde_json::from_slice(&file(&m, "./etc/haimg/image.json").data).unwrap();
    assert_eq!(info.role, role);
    assert_eq!(
        Some(info.input_hash.as_str()),
        summary_role["input_hash"].as_str()
    );
    let plan = String::from_utf8(file(&m, "./etc/haimg/plan.json").data.clone()).unwrap();
    haimg::model::spec::parse_plan_json(&plan).expect("the baked plan validates");
    assert!(m.contains_key("./etc/haimg/templates/"));
    // Nothing of the build host or of the build.
    let host_ca = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    for absent in [
        "./etc/resolv.conf",
        "./root/.npm/",
        "./root/.pm2/",
        "./build/",
        "./usr/share/man/",
        "./.dockerenv",
        "./var/cache/ldconfig/aux-cache",
        "./usr/sbin/policy-rc.d",
    ] {
        assert!(!m.contains_key(absent), "{role}: {absent} is in the image");
    }
    for (name, e) in &m {
        assert!(
            !(name.starts_with("./var/lib/apt/lists/") && name != "./var/lib/apt/lists/"),
            "{role}: {name} is in the image"
        );
        if name.starts_with("./var/log/")
            || name.starts_with("./tmp/")
            || name.starts_with("./var/cache/apt/")
        {
            assert_eq!(
                e.kind,
                tar::EntryType::Directory,
                "{role}: {name} is in the image"
            );
        }
        if name.starts_with("./usr/share/doc/") && e.kind == tar::EntryType::Regular {
            assert!(
                name.ends_with("/copyright"),
                "{role}: {name} is in the image"
            );
        }
        if e.kind == tar::EntryType::Regular && !host_ca.is_empty() && e.data.len() == host_ca.len()
        {
            assert_ne!(e.data, host_ca, "{role}: {name} is the host CA bundle");
        }
    }
    let sources = String::from_utf8_lossy(&file(&m, "./etc/apt/sources.list").data).into_owned();
    assert!(
        !sources.contains("copy://") && !sources.contains("/tmp"),
        "{sources}"
    );
    // The text manifest describes exactly these members.
    let manifest =
        std::fs::read_to_string(tpl.to_string_lossy().replace(".tar.zst", ".manifest.txt"))
            .unwrap();
    let names: Vec<&str> = manifest
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(names, order.iter().map(String::as_str).collect::<Vec<_>>());
    m
}

#[test]
fn templates_build_reproducibly_and_hold_what_they_should() {
    if let Some(why) = skip_reason() {
        crate::support::skip(
            "templates_build_reproducibly_and_hold_what_they_should",
            &why,
        );
        return;
    }
    assert!(
        root().join("roles/webapp/app/package.json").is_file(),
        "roles/webapp/app is missing from this tree"
    );
    let roles = "lb,webapp";
    let scratch = tempfile::tempdir().unwrap();
    let out_a = scratch.path().join("a");
    let out_b = scratch.path().join("b");
    // One build secret and one download cache for both checkouts.
    let secret = scratch.path().join("build-secret");
    std::fs::write(&secret, sha256_hex(b"the build secret of this test")).unwrap();
    let cache = haimg::build::Project { root: root() }.cache_dir();
    let tmp_a = scratch.path().join("tmp-a");
    std::fs::create_dir_all(&tmp_a).unwrap();
    let a = haimg_build(
        &root(),
        &[
            "--role",
            roles,
            "--no-cache",
            "--out",
            out_a.to_str().unwrap(),
        ],
        &[
            ("TMPDIR", &tmp_a),
            ("HAIMG_BUILD_SECRET_FILE", &secret),
            ("HAIMG_CACHE_DIR", &cache),
        ],
        ("UTC", "C.UTF-8"),
        "022",
    );
    // The second checkout: another directory, another depth, Cargo's output
    // elsewhere, and a decoy where the default target directory would be.
    let clone = scratch.path().join("elsewhere/deeper/haimg");
    copy_project(&root(), &clone);
    let decoy = clone.join("target/x86_64-unknown-linux-gnu/init/haimg-init");
    std::fs::create_dir_all(decoy.parent().unwrap()).unwrap();
    std::fs::write(&decoy, b"not the init").unwrap();
    let cargo_target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clone-target");
    let tmp_b = scratch.path().join("elsewhere/tmp-b");
    std::fs::create_dir_all(&tmp_b).unwrap();
    let b = haimg_build(
        &clone,
        &[
            "--role",
            roles,
            "--no-cache",
            "--out",
            out_b.to_str().unwrap(),
        ],
        &[
            ("TMPDIR", &tmp_b),
            ("HAIMG_BUILD_SECRET_FILE", &secret),
            ("HAIMG_CACHE_DIR", &cache),
            ("CARGO_TARGET_DIR", &cargo_target),
        ],
        ("Asia/Tokyo", "POSIX"),
        "077",
    );
    assert!(
        Path::new(b["init"]["path"].as_str().unwrap()).starts_with(&cargo_target),
        "the second checkout's init is not Cargo's artifact: {}",
        b["init"]
    );
    assert_eq!(
        a["init"]["sha256"], b["init"]["sha256"],
        "haimg-init differs between the two checkouts"
    );
    let init_sha = a["init"]["sha256"].as_str().unwrap().to_string();
    assert_ne!(init_sha, sha256_hex(b"not the init"));
    for s in [&a, &b] {
        let built: Vec<&str> = s["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["role"].as_str().unwrap())
            .collect();
        assert_eq!(built, ["lb", "webapp"]);
    }
    for (ra, rb) in a["roles"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["roles"].as_array().unwrap())
    {
        let role = ra["role"].as_str().unwrap();
        assert_eq!(ra["status"], "built");
        assert_eq!(rb["status"], "built");
        assert_eq!(
            ra["sha256"], rb["sha256"],
            "{role}: two clean builds differ"
        );
        let size = ra["size"].as_u64().unwrap();
        eprintln!(
            "{role}: {:.1} MB, sha256 {}",
            size as f64 / 1e6,
            ra["sha256"]
        );
        let tpl = PathBuf::from(ra["template"].as_str().unwrap());
        let m = check_common(role, &tpl, ra, &init_sha);
        match role {
            "lb" => {
                assert!(
                    size <= 40_000_000,
                    "lb is {size} bytes, over the 40 MB target"
                );
                file(&m, "./usr/sbin/nginx");
                file(&m, "./usr/sbin/keepalived");
            }
            "webapp" => {
                assert!(
                    size <= 60_000_000,
                    "webapp is {size} bytes, over the 60 MB target"
                );
                let node = file(&m, "./opt/node/bin/node");
                assert_eq!(&node.data[..4], b"\x7fELF");
                assert_eq!(
                    m["./usr/local/bin/node"].link.as_deref(),
                    Some("/opt/node/bin/node")
                );
                file(&m, "./opt/node/LICENSE");
                file(&m, "./opt/pm2/node_modules/pm2/bin/pm2-runtime");
                file(&m, "./opt/pm2/package-lock.json");
                file(&m, "./srv/webapp/server.js");
                file(&m, "./srv/webapp/.next/BUILD_ID");
                assert!(m
                    .keys()
                    .any(|k| k.starts_with("./srv/webapp/.next/static/")));
                for gone in [
                    "./srv/webapp/node_modules/sharp/",
                    "./srv/webapp/node_modules/@img/",
                    "./srv/webapp/.next/cache/",
                ] {
                    assert!(!m.contains_key(gone), "{gone} is in the image");
                }
                assert!(!m.keys().any(|k| k.starts_with("./opt/npm")
                    || k.contains("/npm-cli.js") && !k.contains("node_modules/pm2")));
            }
            _ => unreachable!(),
        }
    }
    // Warm: nothing changed, nothing to do.
    let t = std::time::Instant::now();
    let tmp_c = scratch.path().join("tmp-c");
    std::fs::create_dir_all(&tmp_c).unwrap();
    let c = haimg_build(
        &root(),
        &["--role", roles, "--out", out_a.to_str().unwrap()],
        &[
            ("TMPDIR", &tmp_c),
            ("HAIMG_BUILD_SECRET_FILE", &secret),
            ("HAIMG_CACHE_DIR", &cache),
        ],
        ("UTC", "C.UTF-8"),
        "022",
    );
    for r in c["roles"].as_array().unwrap() {
        assert_eq!(r["status"], "cached", "{r}");
    }
    eprintln!("warm no-op build: {:.1} s", t.elapsed().as_secs_f64());
}
