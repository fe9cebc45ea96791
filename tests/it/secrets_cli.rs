//! `haimg secrets` and the template scan, through the binary: the store is
//! made, listed without values, rotated; the scan passes a clean template and
//! fails once a value of the store (or a private key) is planted in one.

use std::path::Path;
use std::process::Command;

use haimg::secrets::Store;

fn haimg(store: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_haimg"))
        .args(args)
        .env("HAIMG_SECRETS_DIR", store)
        .env_remove("HAIMG_SPEC")
        .env("RUST_LOG", "warn")
        .current_dir(store.parent().unwrap())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// A `.tar.zst` with the given files.
fn template(path: &Path, files: &[(&str, &[u8])]) {
    let f = std::fs::File::create(path).unwrap();
    let enc = zstd::stream::write::Encoder::new(f, 1)
        .unwrap()
        .auto_finish();
    let mut b = tar::Builder::new(enc);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn list_rotate_and_never_a_value() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("secrets");
    let (code, _, err) = haimg(&root, &["secrets"]);
    assert_eq!(code, 1);
    assert!(err.contains("no secrets store for cluster haimg"), "{err}");
    let s = Store::open(&root, "haimg").ensure().unwrap();
    let (code, out, err) = haimg(&root, &["secrets"]);
    assert_eq!(code, 0, "{err}");
    for (_, v) in s.values() {
        assert!(!out.contains(v) && !err.contains(v));
    }
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "mongo-keyfile",
            "mongo-admin-password",
            "mongo-app-password",
            "mongo-monitor-password",
            "vrrp-password",
            "next-server-actions-key"
        ]
    );
    let (code, json, _) = haimg(&root, &["secrets", "--json"]);
    assert_eq!(code, 0);
    for (_, v) in s.values() {
        assert!(!json.contains(v));
    }
    let (code, _, err) = haimg(&root, &["secrets", "rotate", "vrrp-password"]);
    assert_eq!(code, 0, "{err}");
    let err = err.replace(
        &Store::open(&root, "haimg").list().unwrap()[4].fingerprint,
        "[FP]",
    );
    insta::assert_snapshot!(err.trim_end(), @"rotated vrrp-password (fingerprint [FP]); `haimg deploy` now rolls the lb members out blue/green with it");
    let after = Store::open(&root, "haimg").load().unwrap();
    assert_ne!(
        after.get(haimg::secrets::Name::VrrpPassword),
        s.get(haimg::secrets::Name::VrrpPassword)
    );
}

/// The scan `make test` runs over `out/`: clean templates pass; a template
/// with a planted store value, or with a private key, fails it, and the
/// message names the file and the secret, never the value.
#[test]
fn the_template_scan_fails_on_a_planted_value() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("secrets");
    let s = Store::open(&root, "haimg").ensure().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Things that look close but are not secrets: a PEM header in a parser's
    // string literal, AWS's documented example key.
    template(
        &out.join("haimg-lb_1.0.0_amd64.tar.zst"),
        &[
            ("./etc/haimg/plan.json", b"{\"cluster\":\"haimg\"}"),
            (
                "./srv/webapp/node_modules/x/pem.js",
                b"const H = '-----BEGIN PRIVATE KEY-----\\n'; const K = 'AKIAIOSFODNN7EXAMPLE';",
            ),
        ],
    );
    // Compiled code holds such bytes without holding a key (libgnutls, Node):
    // patterns are not looked for in ELF files, the store's values are.
    let mut elf = b"\x7fELF\x02\x01\x01-----BEGIN RSA PRIVATE KEY-----\n".to_vec();
    elf.extend_from_slice(&[b'A'; 64]);
    template(
        &out.join("haimg-mongo_1.0.0_amd64.tar.zst"),
        &[("./usr/lib/libtls.so", &elf)],
    );
    let (code, _, err) = haimg(&root, &["secrets", "scan", "out"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("scan: 2 template(s), 6 secret value(s) looked for: clean"),
        "{err}"
    );

    let planted = format!("auth_pass {}\n", s.get(haimg::secrets::Name::VrrpPassword));
    let key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBx0Yh2f7mJ4nQ8kq3lT0Zr9uX1c2d3e4f5g6h7i8j9kAoGCCqGSM49\n-----END EC PRIVATE KEY-----\n";
    template(
        &out.join("haimg-webapp_1.0.0_amd64.tar.zst"),
        &[
            ("./etc/haimg/templates/keepalived.conf", planted.as_bytes()),
            ("./etc/ssl/private/leaked.pem", key.as_bytes()),
        ],
    );
    let mut elf_with_value = b"\x7fELF\x02\x01\x01".to_vec();
    elf_with_value.extend_from_slice(s.get(haimg::secrets::Name::MongoKeyfile).as_bytes());
    template(
        &out.join("haimg-mongo_1.0.0_amd64.tar.zst"),
        &[("./usr/bin/mongod", &elf_with_value)],
    );
    let (code, _, err) = haimg(&root, &["secrets", "scan", "out"]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains(s.get(haimg::secrets::Name::VrrpPassword)));
    insta::assert_snapshot!(err.trim_end(), @r"
    FOUND the value of secret mongo-keyfile in out/haimg-mongo_1.0.0_amd64.tar.zst: /usr/bin/mongod
    FOUND the value of secret vrrp-password in out/haimg-webapp_1.0.0_amd64.tar.zst: /etc/haimg/templates/keepalived.conf
    FOUND a PEM private key in out/haimg-webapp_1.0.0_amd64.tar.zst: /etc/ssl/private/leaked.pem
    scan: 3 template(s), 6 secret value(s) looked for: 3 hit(s)
    ");
}
