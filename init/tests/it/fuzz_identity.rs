//! Fuzz targets: `/etc/network/interfaces` parsing and identity resolution
//! (both run in PID 1 on files and variables the host wrote), and the rs0
//! join's reading of `hello` replies. Nothing may panic (PID 1 runs with
//! panic=abort), and stray lines anywhere in the interfaces file never change
//! what eth0's address is or who the container is.
//! Time budget: `HAIMG_FUZZ_SECS` per target (haimg_model::fuzz).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use haimg_init::identity::{interfaces, resolve, Evidence, FileRead};
use haimg_model::{Cluster, Ipv4Net, Role};
use proptest::prelude::*;

fn cluster() -> Cluster {
    haimg_model::spec::parse_yaml(haimg_model::DEFAULT_SPEC)
        .expect("default spec is valid")
        .cluster
}

/// A line a person, a tool or a broken disk could leave in the file.
fn stray_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ \t]*(address|netmask|gateway|mtu|dns-nameservers|up|post-up|pre-down) [ -~]{0,20}",
        "(iface|mapping|source|source-directory|allow-hotplug|auto)( [a-z0-9*]{0,6}){0,2}",
        "iface eth[1-9] (inet|inet6|inet4|ipx|bogus) (static|dhcp|manual)",
        "#[ -~]{0,30}",
        "[ -~]{0,30}",
        "\\PC{0,20}",
        Just("\\".to_string()),
        Just(String::new()),
    ]
}

/// What Proxmox writes for `address` (CIDR) and gateway.
fn pve_file(addr: Ipv4Addr, prefix: u8) -> Vec<String> {
    vec![
        "auto lo".into(),
        "iface lo inet loopback".into(),
        String::new(),
        "auto eth0".into(),
        "iface eth0 inet static".into(),
        format!("\taddress {addr}/{prefix}"),
        "\tgateway 192.168.30.1".into(),
    ]
}

/// `base` with `strays` put before line `at` of it; a stray that would end up
/// inside eth0's stanza (after line 4) is placed before `auto eth0` instead,
/// where it cannot be one of eth0's options. A trailing `\` would join the
/// next line to it, so continuation strays are only put at the very top.
fn with_strays(base: &[String], strays: &[(usize, String)]) -> String {
    let mut lines: Vec<String> = base.to_vec();
    for (at, s) in strays {
        if s.trim_end().ends_with('\\') {
            lines.insert(0, format!("{s} x"));
            continue;
        }
        lines.insert((*at).min(3), s.clone());
    }
    lines.join("\n") + "\n"
}

#[test]
fn fuzz_interfaces_parser() {
    let input = (
        prop_oneof![
            (100u8..109).prop_map(|o| Ipv4Addr::new(192, 168, 30, o)),
            any::<u32>().prop_map(Ipv4Addr::from)
        ],
        0u8..=32,
        proptest::collection::vec((0usize..8, stray_line()), 0..8),
        "\\PC{0,200}",
    );
    haimg_model::fuzz::run(
        "interfaces parser",
        input,
        |(addr, prefix, strays, noise)| {
            // Anything at all: no panic.
            if let Ok(i) = interfaces::parse(&noise) {
                let _ = i.static_v4("eth0");
            }
            // Stray lines outside eth0's stanza never change eth0's address.
            let text = with_strays(&pve_file(addr, prefix), &strays);
            let i = interfaces::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let eth0 = i
                .static_v4("eth0")
                .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            let eth0 = eth0.ok_or_else(|| TestCaseError::fail(format!("eth0 lost\n{text}")))?;
            prop_assert_eq!(eth0.address, Ipv4Net { addr, prefix }, "{}", text);
            Ok(())
        },
    );
}

fn file(s: Option<String>) -> FileRead {
    s.map_or(FileRead::Missing, FileRead::Text)
}

#[test]
fn fuzz_identity_resolution() {
    let c = cluster();
    let slots: Vec<(Role, String, String, Ipv4Addr)> = c
        .members()
        .map(|m| (m.role, m.slot.clone(), m.hostname.clone(), m.ip))
        .collect();
    let input = (
        0..slots.len(),
        proptest::collection::vec((0usize..8, stray_line()), 0..6),
        proptest::option::of(prop_oneof![
            Just("lb\n".to_string()),
            Just("webapp".to_string()),
            "\\PC{0,12}"
        ]),
        proptest::option::of("\\PC{0,20}"),
        proptest::collection::vec(
            (
                prop_oneof![
                    Just("HAIMG_SLOT"),
                    Just("HAIMG_IP"),
                    Just("HAIMG_ROLE"),
                    Just("HAIMG_X")
                ],
                "\\PC{0,20}",
            ),
            0..4,
        ),
        proptest::collection::vec((any::<u32>(), 0u8..=40), 0..3),
        proptest::option::of("\\PC{0,80}"),
    );
    haimg_model::fuzz::run(
        "identity resolution",
        input,
        |(pick, strays, role, host, env, eth0, ifaces)| {
            // Random evidence: no panic, and a success names a member of the baked role.
            let ev = Evidence {
                root: PathBuf::from("/"),
                role_file: file(role),
                etc_hostname: file(host.clone()),
                interfaces: file(ifaces),
                env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                uts: host,
                eth0: eth0
                    .into_iter()
                    .map(|(a, p)| Ipv4Net {
                        addr: Ipv4Addr::from(a),
                        prefix: p,
                    })
                    .collect(),
            };
            if let Ok(id) = resolve(&c, &ev) {
                prop_assert!(c.members_of(id.role).contains(&id.member));
            }
            // The hostname and eth0's address agree: stray lines never stop the match.
            let (role, slot, hostname, ip) = &slots[pick];
            let text = with_strays(&pve_file(*ip, 24), &strays);
            let ev = Evidence {
                root: PathBuf::from("/"),
                role_file: FileRead::Text(format!("{role}\n")),
                etc_hostname: FileRead::Text(format!("{hostname}\n")),
                interfaces: FileRead::Text(text.clone()),
                env: Default::default(),
                uts: Some(hostname.clone()),
                eth0: vec![],
            };
            let id = resolve(&c, &ev).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(&id.member.slot, slot);
            Ok(())
        },
    );
}

#[test]
fn fuzz_hello_classification() {
    use haimg_mongo::bson::{Bson, Document};
    let value = prop_oneof![
        any::<bool>().prop_map(Bson::Boolean),
        any::<i32>().prop_map(Bson::Int32),
        any::<f64>().prop_map(Bson::Double),
        "\\PC{0,10}".prop_map(Bson::String),
        Just(Bson::Null),
        proptest::collection::vec("\\PC{0,6}".prop_map(Bson::String), 0..3).prop_map(Bson::Array),
    ];
    let key = prop_oneof![
        Just("ok"),
        Just("setName"),
        Just("isreplicaset"),
        Just("isWritablePrimary"),
        Just("secondary"),
        Just("primary"),
        Just("me"),
        Just("hosts"),
        Just("code"),
        Just("codeName"),
        Just("errmsg"),
        Just("arbiterOnly"),
    ];
    let doc = proptest::collection::vec((key, value), 0..8).prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<Document>()
    });
    haimg_model::fuzz::run("hello classification", doc, |d| {
        let _ = haimg_init::join::mongo::classify_hello(&d);
        Ok(())
    });
}
