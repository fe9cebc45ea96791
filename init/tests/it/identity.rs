//! Identity from fixture directories: one directory per case, holding the
//! files Proxmox writes into the rootfs (`etc/...`) and, under `runtime/`, the
//! facts that are not files: `env` (PID 1's `KEY=VALUE` lines, as Proxmox ≥ 9.1
//! `env` delivers them), `uts` (the kernel hostname) and `eth0` (addresses
//! already on eth0, one CIDR a line). Each case's outcome is a snapshot: the
//! identity, or the exact console line a user would see.

use std::fs;
use std::path::{Path, PathBuf};

use haimg_init::identity::{resolve, Evidence, Runtime};
use haimg_model::{Cluster, Ipv4Net};

fn cluster() -> Cluster {
    haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
        .expect("default spec is valid")
        .cluster
}

fn runtime(dir: &Path) -> Runtime {
    let read = |name: &str| fs::read_to_string(dir.join("runtime").join(name)).ok();
    Runtime {
        env: read("env")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        uts: read("uts").map(|s| s.trim_end_matches('\n').to_string()),
        eth0: read("eth0")
            .unwrap_or_default()
            .lines()
            .filter_map(Ipv4Net::parse)
            .collect(),
    }
}

fn outcome(dir: &Path) -> String {
    let ev = Evidence::read(dir, runtime(dir));
    match resolve(&cluster(), &ev) {
        Ok(id) => {
            let mut s = format!(
                "ok: {} {} (vmid {}) {} gw {}\n",
                id.role, id.member.slot, id.member.vmid, id.address, id.gateway
            );
            for c in &id.evidence {
                s.push_str(&format!("evidence: {c}\n"));
            }
            for w in &id.warnings {
                s.push_str(&format!("warning: {w}\n"));
            }
            s
        }
        Err(e) => haimg_init::log::line(haimg_init::log::Level::Error, &format!("identity: {e}")),
    }
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/identity");
    let mut v: Vec<PathBuf> = fs::read_dir(root)
        .expect("fixture dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn every_fixture_case() {
    let cases = cases();
    assert!(
        cases.len() >= 15,
        "fixture cases went missing: {}",
        cases.len()
    );
    for dir in cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let out = outcome(&dir);
        let expect_ok = !name.starts_with("err-");
        assert_eq!(out.starts_with("ok:"), expect_ok, "{name}: {out}");
        insta::with_settings!({ snapshot_suffix => name.clone(), description => format!("fixture {name}") }, {
            insta::assert_snapshot!("identity", out);
        });
    }
}
