//! The wire rules the fake enforces (so the deploy tests mean something), the
//! errors a user sees when Proxmox refuses a request, TLS trust modes, and
//! `haimg deploy` end to end through the binary.

use crate::support;

use std::io::Read;
use std::process::Command;

use haimg::backend::proxmox::tls::{fingerprint, format_fingerprint};
use haimg::backend::Backend;
use haimg::model::TlsMode;
use rustls::pki_types::pem::PemObject;
use support::pve_fake::{self, Config, FakePve, NOT_DEFINED_TEXT};

fn raw_client() -> reqwest::blocking::Client {
    haimg::backend::proxmox::tls::install_provider();
    let ca = std::fs::read(pve_fake::fixture("ca.pem")).unwrap();
    reqwest::blocking::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
        .build()
        .unwrap()
}

fn auth() -> String {
    format!("PVEAPIToken={}", pve_fake::token())
}

fn post_form(fake: &FakePve, path: &str, body: &str) -> (u16, serde_json::Value) {
    let r = raw_client()
        .post(format!("{}/api2/json{path}", fake.endpoint()))
        .header("Authorization", auth())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}

#[test]
fn fake_rejects_unknown_parameters_and_non_0_1_booleans_like_proxmox() {
    let fake = FakePve::start(Config::default());
    let (s, v) = post_form(
        &fake,
        "/nodes/pve1/lxc",
        "vmid=100&ostemplate=local:vztmpl/x.tar.zst&bogus=1&onboot=true",
    );
    assert_eq!(s, 400);
    insta::assert_json_snapshot!(v, @r#"
    {
      "data": null,
      "errors": {
        "bogus": "property is not defined in schema and the schema does not allow additional properties",
        "onboot": "type check ('boolean') failed - got 'true'"
      },
      "message": "Parameter verification failed.\n"
    }
    "#);
    assert_eq!(v["errors"]["bogus"], NOT_DEFINED_TEXT);
    let (s, v) = post_form(
        &fake,
        "/nodes/pve1/lxc",
        "vmid=100&ostemplate=x&net0=name%3Deth0%2Cbogus%3D1",
    );
    assert_eq!(s, 400);
    assert!(
        v["errors"]["net0"].as_str().unwrap().contains("bogus"),
        "{v}"
    );
    let (s, v) = post_form(&fake, "/nodes/pve1/lxc", "ostemplate=x");
    assert_eq!(
        (s, v["errors"]["vmid"].as_str()),
        (400, Some("property is missing and it is not optional"))
    );
}

#[test]
fn fake_refuses_bodies_on_get_chunked_bodies_and_unknown_paths_with_501() {
    let fake = FakePve::start(Config::default());
    let c = raw_client();
    let r = c
        .get(format!("{}/api2/json/version", fake.endpoint()))
        .header("Authorization", auth())
        .body("x=1")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 501);
    let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(b"vmid=100".to_vec()));
    let r = c
        .post(format!("{}/api2/json/nodes/pve1/lxc", fake.endpoint()))
        .header("Authorization", auth())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(chunked)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 501);
    let r = c
        .get(format!("{}/api2/json/nodes/pve1/qemu", fake.endpoint()))
        .header("Authorization", auth())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 501);
    let mut t = String::new();
    r.take(200).read_to_string(&mut t).unwrap();
    let r = c
        .get(format!("{}/api2/json/version", fake.endpoint()))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn fake_enforces_the_multipart_field_order() {
    let fake = FakePve::start(Config::default());
    let part = reqwest::blocking::multipart::Part::bytes(b"abc".to_vec())
        .file_name("x.tar.zst")
        .mime_str("application/octet-stream")
        .unwrap();
    let form = reqwest::blocking::multipart::Form::new()
        .text("checksum", "00")
        .text("content", "vztmpl")
        .part("filename", part);
    let r = raw_client()
        .post(format!(
            "{}/api2/json/nodes/pve1/storage/local/upload",
            fake.endpoint()
        ))
        .header("Authorization", auth())
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().unwrap();
    insta::assert_snapshot!(v["message"].as_str().unwrap().trim(), @"multipart field 'content' out of order (expected content, checksum-algorithm, checksum, file)");
    let part = reqwest::blocking::multipart::Part::bytes(b"abc".to_vec()).file_name("x.tar.zst");
    let form = reqwest::blocking::multipart::Form::new()
        .text("content", "vztmpl")
        .part("file", part);
    let r = raw_client()
        .post(format!(
            "{}/api2/json/nodes/pve1/storage/local/upload",
            fake.endpoint()
        ))
        .header("Authorization", auth())
        .multipart(form)
        .send()
        .unwrap();
    let v: serde_json::Value = r.json().unwrap();
    insta::assert_snapshot!(v["message"].as_str().unwrap().trim(), @"wrong field name 'file' for file upload, expected 'filename'");
}

#[test]
fn a_400_names_the_parameter_node_vmid_and_call() {
    // What a user would see if env were sent to PVE 9.0.
    let fake = FakePve::start(Config {
        release: "9.0".into(),
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::cluster(&fake, "templates");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let tpl = support::find_templates(&out, &cluster);
    let b = support::backend(&cluster);
    let lb = &tpl[&haimg::model::Role::Lb];
    let stored = b
        .upload_template("pve1", &lb.path, &lb.stored_name(), &lb.sha256)
        .unwrap();
    let caps = haimg::backend::Capabilities {
        env: true,
        entrypoint: false,
        host_managed: false,
    };
    let m = cluster.member_by_slot("nginx1").unwrap();
    let spec = haimg::fleet::members::container_spec(&cluster, m, lb, &stored, caps);
    let e = b.create(&spec).unwrap_err();
    insta::assert_snapshot!(e.to_string(), @"POST /nodes/pve1/lxc on node pve1 for CT 100: 400 parameter 'env': property is not defined in schema and the schema does not allow additional properties");
}

fn tls_backend(
    fake: &FakePve,
    tls: TlsMode,
) -> Result<Vec<haimg::backend::ContainerStatus>, String> {
    let mut cluster = support::cluster(fake, "templates");
    cluster.proxmox.tls = tls;
    let b = support::backend(&cluster);
    b.inventory().map_err(|e| e.to_string())
}

#[test]
fn tls_ca_file_pin_and_insecure_connect_and_a_wrong_pin_or_unknown_ca_refuse() {
    let fake = FakePve::start(Config::default());
    let der =
        rustls::pki_types::CertificateDer::from_pem_file(pve_fake::fixture("node.pem")).unwrap();
    let pin = fingerprint(der.as_ref());
    assert!(tls_backend(&fake, TlsMode::CaFile(pve_fake::fixture("ca.pem"))).is_ok());
    assert!(tls_backend(&fake, TlsMode::Fingerprint(pin.clone())).is_ok());
    assert!(tls_backend(&fake, TlsMode::Insecure).is_ok());
    let mut wrong = pin.clone();
    wrong[0] ^= 0xff;
    let e = tls_backend(&fake, TlsMode::Fingerprint(wrong.clone())).unwrap_err();
    assert!(e.starts_with("GET /cluster/resources: no answer: "), "{e}");
    assert!(
        e.contains(&format!(
            "certificate fingerprint {} does not match the pinned {}",
            format_fingerprint(&pin),
            format_fingerprint(&wrong)
        )),
        "{e}"
    );
    assert!(e.contains("hint: set proxmox.tls.ca_file"), "{e}");
    // The test CA is in no system trust store.
    let e = tls_backend(&fake, TlsMode::System).unwrap_err();
    assert!(
        e.contains("no answer") && e.contains("hint: set proxmox.tls.ca_file"),
        "{e}"
    );
    // The token never shows up in errors.
    assert!(!e.contains(pve_fake::TOKEN_SECRET));
}

fn haimg(args: &[&str], spec: &std::path::Path, token: Option<&str>) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_haimg"));
    c.arg("--spec")
        .arg(spec)
        .args(args)
        .env_remove("HAIMG_PVE_TOKEN")
        .env("HAIMG_SECRETS_DIR", spec.with_file_name(".secrets"))
        .env("RUST_LOG", "warn");
    if let Some(t) = token {
        c.env("HAIMG_PVE_TOKEN", t);
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn haimg_deploy_end_to_end_through_the_binary() {
    let fake = FakePve::start(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("haimg.yaml");
    std::fs::write(
        &spec,
        support::spec_text(&fake.endpoint(), "templates", &support::ca_tls()),
    )
    .unwrap();
    let cluster = support::cluster(&fake, "templates");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let out_s = out.to_str().unwrap();
    let token = pve_fake::token();

    let (code, _, err) = haimg(&["deploy", "--templates", out_s], &spec, None);
    assert_eq!(code, 1);
    assert!(err.contains("HAIMG_PVE_TOKEN is not set"), "{err}");

    let (code, stdout, err) = haimg(
        &["deploy", "--dry-run", "--templates", out_s],
        &spec,
        Some(&token),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.starts_with("# Authorization: PVEAPIToken=root@pam!haimg=<redacted>\n"),
        "{stdout}"
    );
    let member_posts = stdout
        .lines()
        .filter(|l| l.starts_with("POST /nodes/") && !l.contains("/firewall"))
        .count();
    assert_eq!(member_posts, 21, "{stdout}");
    assert!(!stdout.contains(pve_fake::TOKEN_SECRET) && !err.contains(pve_fake::TOKEN_SECRET));
    assert!(fake.state().containers.is_empty());

    let (code, _, err) = haimg(
        &["deploy", "--no-progress", "--templates", out_s],
        &spec,
        Some(&token),
    );
    assert_eq!(code, 0, "{err}");
    let summary = err.lines().last().unwrap();
    eprintln!("first run: {summary}");
    assert!(!err.contains("older than 9.1"), "{err}");
    assert!(
        summary
            .starts_with("9 created, 0 started, 0 reconfigured, 0 unchanged, 0 blocked, 0 failed"),
        "{err}"
    );

    let (code, stdout, err) = haimg(
        &["deploy", "--json", "--templates", out_s],
        &spec,
        Some(&token),
    );
    assert_eq!(code, 0, "{err}");
    eprintln!("second run: {}", err.lines().last().unwrap());
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // Only reads (the member phase's and the firewall step's), and the run
    // lease taken (its release comes after the report).
    assert_eq!(v["api_calls"]["post"], 1, "{stdout}");
    assert_eq!(v["api_calls"]["put"], 0, "{stdout}");
    assert_eq!(v["api_calls"]["delete"], 0, "{stdout}");
    assert!(
        v["firewall"]["changes"].as_array().unwrap().is_empty(),
        "{stdout}"
    );
    assert!(v["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["action"] == "unchanged"));
    assert!(!stdout.contains(pve_fake::TOKEN_SECRET) && !err.contains(pve_fake::TOKEN_SECRET));
}

#[test]
fn deploy_without_endpoint_goes_local_and_needs_templates() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("haimg.yaml");
    std::fs::write(&spec, haimg::model::DEFAULT_SPEC).unwrap();
    let (code, _, err) = haimg(&["deploy", "--templates", "no-such-dir"], &spec, None);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "no lb template at no-such-dir/haimg-lb_1.0.0_amd64.tar.zst; run `haimg build` first"
        ),
        "{err}"
    );
}

#[test]
fn insecure_mode_warns_on_every_run() {
    let fake = FakePve::start(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("haimg.yaml");
    std::fs::write(
        &spec,
        support::spec_text(&fake.endpoint(), "templates", "{ insecure: true }"),
    )
    .unwrap();
    let cluster = support::cluster(&fake, "templates");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    for _ in 0..2 {
        let (code, _, err) = haimg(
            &["deploy", "--dry-run", "--templates", out.to_str().unwrap()],
            &spec,
            Some(&pve_fake::token()),
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("warning: proxmox.tls.insecure is set"),
            "{err}"
        );
    }
}

/// Proxmox VE before 9.1 has no container `env`: haimg has no channel for
/// the cluster's secrets there, so a deploy that would create members stops
/// before it creates anything (README, "Secrets").
#[test]
fn an_older_proxmox_is_refused_before_anything_is_created() {
    let fake = FakePve::start(Config {
        release: "8.4".into(),
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("haimg.yaml");
    std::fs::write(
        &spec,
        support::spec_text(&fake.endpoint(), "templates", &support::ca_tls()),
    )
    .unwrap();
    let cluster = support::cluster(&fake, "templates");
    let out = support::write_templates(dir.path(), &cluster, "v1");
    let (code, _, err) = haimg(
        &[
            "deploy",
            "--no-progress",
            "--templates",
            out.to_str().unwrap(),
        ],
        &spec,
        Some(&pve_fake::token()),
    );
    assert_eq!(code, 1, "{err}");
    insta::assert_snapshot!(err.trim_end().lines().last().unwrap(), @r#"error: refusing to create members: this Proxmox VE is older than 9.1 and has no container `env`, the only channel haimg has to deliver the cluster's secrets (MongoDB keyfile and users, VRRP password, the app's keys) at start without baking them into a template; upgrade to Proxmox VE 9.1 or later (see README, "Secrets")"#);
    let st = fake.state();
    assert!(st.containers.is_empty(), "nothing is created");
}

#[test]
fn the_fake_validates_firewall_calls_against_the_official_schema() {
    let fake = FakePve::start(Config::default());
    // Unknown parameter, a group name below minLength, a bad enum, a bad port.
    let (s, v) = post_form(
        &fake,
        "/cluster/firewall/groups",
        "group=g&comment=x&bogus=1",
    );
    assert_eq!(s, 400);
    insta::assert_json_snapshot!(v["errors"], @r#"
    {
      "bogus": "property is not defined in schema and the schema does not allow additional properties",
      "group": "value must be at least 2 characters long"
    }
    "#);
    let r = raw_client()
        .put(format!(
            "{}/api2/json/nodes/pve1/lxc/100/firewall/options",
            fake.endpoint()
        ))
        .header("Authorization", auth())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("policy_in=drop&enable=true")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().unwrap();
    insta::assert_json_snapshot!(v["errors"], @r#"
    {
      "enable": "type check ('boolean') failed - got 'true'",
      "policy_in": "value 'drop' does not have a value in the enumeration 'ACCEPT, REJECT, DROP'"
    }
    "#);
    let (s, v) = post_form(
        &fake,
        "/nodes/pve1/lxc/100/firewall/rules",
        "type=in&action=ACCEPT&proto=tcp&dport=70000&iface=e&enable=1",
    );
    assert_eq!(s, 400);
    insta::assert_json_snapshot!(v["errors"], @r#"
    {
      "dport": "invalid port '70000'",
      "iface": "value must be at least 2 characters long"
    }
    "#);
    // HA: in the schema file, validated, not modelled.
    let (s, v) = post_form(&fake, "/cluster/ha/resources", "sid=ct:100&bogus=1");
    assert_eq!(
        (s, v["errors"]["bogus"].as_str()),
        (400, Some(NOT_DEFINED_TEXT))
    );
}
