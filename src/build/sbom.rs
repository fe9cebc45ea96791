//! The SPDX 2.3 JSON software bill of materials of one template.
//!
//! It lists every Debian package with its version and `.deb` sha256, every
//! npm package shipped in the image (found in the root filesystem's
//! `node_modules`, with the lock's sha512 integrity), the Node tarball, and
//! the crates compiled into haimg-init (from `cargo metadata`, with their
//! declared licenses). Deterministic: no wall-clock time (`created` is
//! `SOURCE_DATE_EPOCH`), no random namespace (derived from the input hash),
//! packages in a fixed order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use serde_json::{json, Value};

use super::hash::hex;
use super::lock::{BlobPin, DebPin, NpmPin};

/// A crate compiled into the init.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    pub license: Option<String>,
    pub registry: bool,
}

/// An npm package found in the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShippedNpm {
    pub name: String,
    pub version: String,
    /// Where in the image (`/opt/pm2/node_modules/pm2`).
    pub path: String,
    pub integrity: Option<String>,
}

pub struct SbomInput<'a> {
    /// `haimg-lb_1.0.0_amd64`.
    pub name: &'a str,
    pub role: &'a str,
    pub version: &'a str,
    pub input_hash: &'a str,
    pub source_date_epoch: u64,
    pub debian: &'a [DebPin],
    pub vendor: &'a [DebPin],
    pub node: Option<&'a BlobPin>,
    pub npm: &'a [ShippedNpm],
    pub init_crates: &'a [Crate],
}

pub fn render(i: &SbomInput) -> String {
    let mut ids = BTreeSet::new();
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-image",
        "name": format!("haimg-{}", i.role),
        "versionInfo": i.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": format!("input hash {}", i.input_hash),
    })];
    let mut add = |kind: &str, name: &str, p: Value| {
        let id = unique_id(&mut ids, kind, name);
        let mut p = p;
        p["SPDXID"] = json!(id);
        packages.push(p);
    };
    for (d, supplier) in i
        .debian
        .iter()
        .map(|d| (d, "Organization: Debian"))
        .chain(i.vendor.iter().map(|d| (d, "NOASSERTION")))
    {
        let distro = if supplier == "NOASSERTION" {
            ""
        } else {
            "&distro=debian-12"
        };
        add(
            "deb",
            &d.name,
            json!({
                "name": d.name,
                "versionInfo": d.version,
                "supplier": supplier,
                "downloadLocation": if d.url.starts_with("http") { d.url.clone() } else { "NOASSERTION".into() },
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": d.sha256}],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "externalRefs": [purl(format!("pkg:deb/debian/{}@{}?arch={}{distro}", d.name, enc(&d.version), d.arch))],
            }),
        );
    }
    if let Some(n) = i.node {
        add(
            "npm",
            &n.package,
            json!({
                "name": n.package,
                "versionInfo": n.version,
                "downloadLocation": n.url,
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": n.sha256}],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "MIT",
                "copyrightText": "NOASSERTION",
                "comment": "Node.js: only bin/node (stripped) and LICENSE are installed, at /opt/node",
                "externalRefs": [purl(format!("pkg:npm/{}@{}", n.package, n.version))],
            }),
        );
    }
    for n in i.npm {
        let mut p = json!({
            "name": n.name,
            "versionInfo": n.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": format!("installed at {}", n.path),
            "externalRefs": [purl(format!("pkg:npm/{}@{}", enc(&n.name), n.version))],
        });
        if let Some(sum) = n.integrity.as_deref().and_then(sri_sha512_hex) {
            p["checksums"] = json!([{"algorithm": "SHA512", "checksumValue": sum}]);
        }
        add("npm", &format!("{}-{}", n.name, n.path), p);
    }
    for c in i.init_crates {
        add(
            "crate",
            &c.name,
            json!({
                "name": c.name,
                "versionInfo": c.version,
                "downloadLocation": if c.registry { format!("https://crates.io/api/v1/crates/{}/{}/download", c.name, c.version) } else { "NOASSERTION".into() },
                "filesAnalyzed": false,
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": c.license.clone().unwrap_or_else(|| "NOASSERTION".into()),
                "copyrightText": "NOASSERTION",
                "comment": "compiled into /sbin/init (haimg-init)",
                "externalRefs": [purl(format!("pkg:cargo/{}@{}", c.name, c.version))],
            }),
        );
    }
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-image",
    })];
    for p in packages.iter().skip(1) {
        relationships.push(json!({
            "spdxElementId": "SPDXRef-image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": p["SPDXID"],
        }));
    }
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": i.name,
        "documentNamespace": format!("https://haimg.invalid/spdx/{}/{}", i.name, i.input_hash),
        "creationInfo": {
            "created": iso8601(i.source_date_epoch),
            "creators": [format!("Tool: haimg-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

fn purl(locator: String) -> Value {
    json!({"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": locator})
}

/// Percent-encode what a purl cannot carry literally (`:`, `+`, `@` in names).
fn enc(s: &str) -> String {
    s.replace('%', "%25")
        .replace(':', "%3A")
        .replace('+', "%2B")
        .replace('@', "%40")
}

fn unique_id(ids: &mut BTreeSet<String>, kind: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let base = format!("SPDXRef-{kind}-{clean}");
    let mut id = base.clone();
    let mut n = 2;
    while !ids.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

fn sri_sha512_hex(sri: &str) -> Option<String> {
    let b64 = sri
        .split_whitespace()
        .find_map(|s| s.strip_prefix("sha512-"))?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .map(|b| hex(&b))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn iso8601(t: u64) -> String {
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// npm packages under every `node_modules` below `root/<under>`, with integrities from the locks.
pub fn shipped_npm(root: &Path, under: &[&str], pins: &[NpmPin]) -> Vec<ShippedNpm> {
    let by_name: BTreeMap<(&str, &str), &str> = pins
        .iter()
        .map(|p| ((p.name(), p.version.as_str()), p.integrity.as_str()))
        .collect();
    let mut out = Vec::new();
    for u in under {
        find_packages(&root.join(u), &format!("/{u}"), &by_name, &mut out);
    }
    out.sort();
    out
}

fn find_packages(
    dir: &Path,
    shown: &str,
    pins: &BTreeMap<(&str, &str), &str>,
    out: &mut Vec<ShippedNpm>,
) {
    let nm = dir.join("node_modules");
    for (name, p) in sorted_dirs(&nm) {
        if name.starts_with('.') {
            continue;
        }
        if name.starts_with('@') {
            for (sub, sp) in sorted_dirs(&p) {
                package(
                    &sp,
                    &format!("{shown}/node_modules/{name}/{sub}"),
                    pins,
                    out,
                );
            }
        } else {
            package(&p, &format!("{shown}/node_modules/{name}"), pins, out);
        }
    }
}

fn package(
    dir: &Path,
    shown: &str,
    pins: &BTreeMap<(&str, &str), &str>,
    out: &mut Vec<ShippedNpm>,
) {
    if let Ok(text) = std::fs::read_to_string(dir.join("package.json")) {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            if let (Some(name), Some(version)) = (v["name"].as_str(), v["version"].as_str()) {
                out.push(ShippedNpm {
                    name: name.to_string(),
                    version: version.to_string(),
                    path: shown.to_string(),
                    integrity: pins.get(&(name, version)).map(|s| s.to_string()),
                });
            }
        }
    }
    find_packages(dir, shown, pins, out);
}

fn sorted_dirs(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, std::path::PathBuf)> = rd
        .flatten()
        .filter(|e| e.path().symlink_metadata().is_ok_and(|m| m.is_dir()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    v.sort();
    v
}

/// The crates linked into `haimg-init`, from
/// `cargo tree -p haimg-init -e normal,no-proc-macro --format '{p}|{l}' --prefix none`
/// (the features of that build alone; no proc-macros, which are not linked).
pub fn init_crates(tree: &str) -> Vec<Crate> {
    let mut out: Vec<Crate> = tree
        .lines()
        .filter_map(|l| {
            let (pkg, license) = l.split_once('|')?;
            let mut words = pkg.split_whitespace();
            let name = words.next()?.to_string();
            let version = words.next()?.trim_start_matches('v').to_string();
            let local = words.next().is_some_and(|w| w.starts_with('('));
            let license = license.trim_end_matches("(*)").trim();
            Some(Crate {
                name,
                version,
                license: (!license.is_empty()).then(|| license.to_string()),
                registry: !local,
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_crates_from_cargo_tree() {
        let tree = "haimg-init v0.1.0 (/w/init)|Apache-2.0\nserde_json v1.0.154|MIT OR Apache-2.0\nserde_json v1.0.154|MIT OR Apache-2.0 (*)\nitoa v1.0.19|\n";
        let c = init_crates(tree);
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[0],
            Crate {
                name: "haimg-init".into(),
                version: "0.1.0".into(),
                license: Some("Apache-2.0".into()),
                registry: false
            }
        );
        assert_eq!(c[1].license, None);
        assert_eq!(c[2].license.as_deref(), Some("MIT OR Apache-2.0"));
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_783_763_594), "2026-07-11T09:53:14Z");
        assert_eq!(days_from_civil(2026, 7, 11) * 86400, 1_783_728_000);
    }

    #[test]
    fn sbom_snapshot() {
        let deb = DebPin {
            name: "libc6".into(),
            version: "2.36-9+deb12u14".into(),
            arch: "amd64".into(),
            size: 1,
            sha256: "ab".repeat(32),
            url: "http://deb.debian.org/debian/pool/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb"
                .into(),
        };
        let npm = ShippedNpm {
            name: "@pm2/io".into(),
            version: "6.0.0".into(),
            path: "/opt/pm2/node_modules/@pm2/io".into(),
            integrity: Some("sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOMXMR1Hdms0FGbE2FsyT7OnxyWkg==".into()),
        };
        let krate = Crate {
            name: "serde".into(),
            version: "1.0.0".into(),
            license: Some("MIT OR Apache-2.0".into()),
            registry: true,
        };
        let s = render(&SbomInput {
            name: "haimg-lb_1.0.0_amd64",
            role: "lb",
            version: "1.0.0",
            input_hash: "00",
            source_date_epoch: 1_700_000_000,
            debian: &[deb],
            vendor: &[],
            node: None,
            npm: &[npm],
            init_crates: &[krate],
        });
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["packages"].as_array().unwrap().len(), 4);
        insta::assert_snapshot!(s.replace(env!("CARGO_PKG_VERSION"), "[VERSION]"));
    }
}
