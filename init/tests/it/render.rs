//! Snapshots of every boot-time config for every slot of every role, rendered
//! from the committed templates (`roles/<role>/templates/`), plus the options
//! the default plan does not exercise and the errors a broken template gives.

use haimg_model::render::{self, Extras, RenderError, TEMPLATES};
use haimg_model::{Cluster, Role};

fn spec(patch: impl FnOnce(&mut String)) -> Cluster {
    let mut text = haimg_model::DEFAULT_SPEC.to_string();
    patch(&mut text);
    haimg_model::spec::parse_yaml(&text)
        .expect("spec is valid")
        .cluster
}

/// Every secret present, as a placeholder: the configs as a deployed member
/// renders them (mongod with keyFile and authorization, keepalived with the
/// store's password, the app's URI with its user), never a real value.
fn extras() -> Extras {
    Extras::placeholders("0123456789ab")
}

#[test]
fn every_slot_of_every_role() {
    let c = spec(|_| {});
    let mut n = 0;
    for role in Role::ALL {
        for m in c.members_of(role) {
            for t in render::templates_for(role) {
                let out = render::render_default(t, &c, m, &extras()).unwrap();
                insta::assert_snapshot!(format!("{}@{}", t.name, m.slot), out);
                n += 1;
            }
        }
    }
    // 3 lb × 3 + 3 mongo × 1 + 3 webapp × 1
    assert_eq!(n, 15);
}

#[test]
fn nginx_consistent_hash_and_tls() {
    let c = spec(|t| {
        *t = t.replace(
            "upstream_hash: ip_hash",
            "upstream_hash: remote_addr_consistent",
        );
        *t = t.replace(
            "      listen_port: 80\n",
            "      listen_port: 80\n      tls: { certificate: /etc/haimg/tls/cert.pem, certificate_key: /run/haimg/tls/key.pem }\n",
        );
    });
    let m = &c.lb.members[1];
    let out = render::render_default(&TEMPLATES[0], &c, m, &extras()).unwrap();
    assert!(out.contains("hash $remote_addr consistent;"));
    assert!(!out.contains("ip_hash;"));
    assert!(out.contains("listen 443 ssl"));
    insta::assert_snapshot!("nginx.conf@nginx2-consistent-tls", out);
}

/// The addresses of the lb members other than `m`, in spec order.
fn other_lbs(c: &Cluster, m: &haimg_model::Member) -> Vec<String> {
    c.lb.members
        .iter()
        .filter(|o| o.slot != m.slot)
        .map(|o| o.ip.to_string())
        .collect()
}

/// Unicast VRRP: each lb member advertises to the other lb members only, and
/// keepalived drops adverts from any source not in that list
/// (`check_unicast_src`) before it looks at their priority.
#[test]
fn keepalived_peers_are_the_other_lb_members_and_only_they_count() {
    let c = spec(|_| {});
    for m in &c.lb.members {
        let out = render::render_default(&TEMPLATES[1], &c, m, &extras()).unwrap();
        let block = out
            .split("unicast_peer {")
            .nth(1)
            .and_then(|b| b.split('}').next())
            .expect("a unicast_peer block");
        let peers: Vec<&str> = block.split_whitespace().collect();
        assert_eq!(peers, other_lbs(&c, m), "{}", m.slot);
        assert!(out.contains(&format!("unicast_src_ip {}", m.ip)));
        assert!(out.contains("\n    check_unicast_src\n"), "{out}");
    }
}

/// `vip.nft`: each lb copies strays to the other lb members (never to
/// itself), and nowhere when the spec deploys to Proxmox with its firewall
/// (whose `ipfilter` would drop the copies). The kernel accepts the ruleset
/// (`nft -c`, root and nftables as `make setup` installs).
#[test]
fn vip_nft_copies_strays_to_the_other_lbs_only() {
    let c = spec(|_| {});
    let t = render::templates_for(Role::Lb)
        .find(|t| t.name == "vip.nft")
        .unwrap();
    for m in &c.lb.members {
        let out = render::render_default(t, &c, m, &extras()).unwrap();
        let copies: Vec<&str> = out
            .split("dup to \"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        assert_eq!(copies, other_lbs(&c, m), "{}", m.slot);
        nft_check(&out);
    }
    let pve = spec(|t| {
        *t = t.replace(
            "  # endpoint: https://pve1:8006",
            "  endpoint: https://pve1:8006",
        )
    });
    assert!(!render::forwards_strays(&pve));
    let out = render::render_default(t, &pve, &pve.lb.members[0], &extras()).unwrap();
    assert!(!out.contains("dup to"), "{out}");
    assert!(out.contains("ip dscp cs6 counter drop"), "{out}");
    insta::assert_snapshot!("vip.nft@nginx1-proxmox-firewall", out);
    nft_check(&out);
    let open = spec(|t| {
        *t = t.replace(
            "  # endpoint: https://pve1:8006",
            "  endpoint: https://pve1:8006",
        );
        *t = t.replace(
            "  # firewall: { enforce: true, datacenter: check }",
            "  firewall: { enforce: false }",
        );
    });
    assert!(render::forwards_strays(&open));
}

/// `nft -c -f -`: the kernel parses and checks the ruleset without applying it.
fn nft_check(rules: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-c", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nft not found: run `make setup` (installs nftables)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft -c: {}\n{rules}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keepalived_multicast_and_pass_override() {
    let c = spec(|t| *t = t.replace("mode: unicast", "mode: multicast"));
    let m = &c.lb.members[2];
    let e = Extras {
        vrrp_pass: Some("s3cret+1".into()),
        ..extras()
    };
    let out = render::render_default(&TEMPLATES[1], &c, m, &e).unwrap();
    assert!(!out.contains("unicast_peer"));
    assert!(!out.contains("check_unicast_src"));
    assert!(out.contains("auth_pass s3cret+1"));
    insta::assert_snapshot!("keepalived.conf@nginx3-multicast", out);

    // keepalived strips `!` and `#` comments and expands `$NAME`: such a password
    // would silently become a shorter one.
    for bad in ["too long password", "s3cret!", "pa#ss", "$PASS", "a b"] {
        let bad = Extras {
            vrrp_pass: Some(bad.into()),
            ..extras()
        };
        let err = render::render_default(&TEMPLATES[1], &c, m, &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "HAIMG_VRRP_PASS must be 1 to 8 letters, digits or ._:/,+=-"
        );
    }
}

/// The fast profile, `advert_interval_ms: 100`: VRRPv3, whose advert interval
/// is in hundredths of a second (`advert_int 0.1`) and which has no
/// authentication, so the VRRP password is neither printed nor needed.
#[test]
fn keepalived_vrrp_v3_at_100_ms() {
    let c = spec(|t| *t = t.replace("advert_int_s: 1", "advert_interval_ms: 100"));
    let m = &c.lb.members[0];
    let out = render::render_default(&TEMPLATES[1], &c, m, &extras()).unwrap();
    assert!(out.contains("\n    vrrp_version 3\n"), "{out}");
    assert!(out.contains("\n    advert_int 0.1\n"), "{out}");
    assert!(
        !out.contains("authentication {") && !out.contains("auth_"),
        "{out}"
    );
    assert!(!out.contains("VRRPPASS"), "{out}");
    assert!(out.contains("\n    check_unicast_src\n"), "{out}");
    insta::assert_snapshot!("keepalived.conf@nginx1-vrrp3-100ms", out);

    let without = Extras {
        vrrp_pass: None,
        ..extras()
    };
    let same = render::render_default(&TEMPLATES[1], &c, m, &without).unwrap();
    assert_eq!(same, out, "the password changes nothing in a v3 config");

    // Other intervals print as decimal seconds from the integer.
    for (ms, text) in [(50, "0.05"), (10, "0.01"), (1500, "1.5"), (40950, "40.95")] {
        let c = spec(|t| *t = t.replace("advert_int_s: 1", &format!("advert_interval_ms: {ms}")));
        let out = render::render_default(&TEMPLATES[1], &c, m, &without).unwrap();
        assert!(
            out.contains(&format!("\n    advert_int {text}\n")),
            "{ms}: {out}"
        );
        assert!(out.contains("vrrp_version 3"), "{ms}");
    }
}

/// A whole number of seconds in milliseconds is the seed's VRRPv2 profile,
/// byte for byte.
#[test]
fn keepalived_whole_seconds_in_ms_is_the_v2_config() {
    let seed = spec(|_| {});
    let ms = spec(|t| *t = t.replace("advert_int_s: 1", "advert_interval_ms: 1000"));
    let neither = spec(|t| *t = t.replace("      advert_int_s: 1\n", ""));
    let m = &seed.lb.members[0];
    let want = render::render_default(&TEMPLATES[1], &seed, m, &extras()).unwrap();
    assert!(!want.contains("vrrp_version"));
    for c in [&ms, &neither] {
        assert_eq!(
            render::render_default(&TEMPLATES[1], c, m, &extras()).unwrap(),
            want
        );
    }
}

/// Values that got past validation (a plan edited in an image, a hostile
/// image.json) cannot add a directive to any config: each is quoted for the
/// file's language, or the render fails naming the character.
#[test]
fn hostile_values_are_quoted_or_refused() {
    let mut c = spec(|t| {
        *t = t.replace(
            "      listen_port: 80\n",
            "      listen_port: 80\n      tls: { certificate: /etc/haimg/tls/cert.pem, certificate_key: /run/haimg/tls/key.pem }\n",
        );
    });
    let inject = "x;\n}\nevil {\n";
    if let Some(t) = c.lb.nginx.tls.as_mut() {
        t.certificate = format!("/etc/c.pem{inject}");
        t.certificate_key = "/etc/k \"quoted\" \\ key".into();
    }
    c.lb.nginx.rate_limit.zone = format!("z{inject}");
    c.webapp.database = "app&replicaSet=evil#x".into();
    c.webapp.env = vec![("BANNER".into(), format!("*/\n}};evil();//{inject}\u{2028}"))];
    c.mongo.replica_set = format!("rs0{inject}");
    let hostile_image = Extras {
        image_hash: format!("ab{inject}"),
        ..extras()
    };
    let mut out = String::new();
    for role in Role::ALL {
        let m = &c.members_of(role)[0];
        for t in render::templates_for(role) {
            out += &format!("==== {} ({})\n", t.name, t.lang);
            match render::render_default(t, &c, m, &hostile_image) {
                Ok(text) => {
                    for line in text.lines() {
                        assert!(!line.trim_start().starts_with("evil"), "{}: {line}", t.name);
                    }
                    out += &text;
                }
                Err(e) => out += &format!("error: {e}\n"),
            }
        }
    }
    assert!(
        out.contains("app%26replicaSet%3Devil%23x?replicaSet=rs0x%3B%0A"),
        "{out}"
    );
    insta::assert_snapshot!("hostile-values", out);

    // An nginx value with `$` (a variable reference) is refused, not expanded.
    if let Some(t) = c.lb.nginx.tls.as_mut() {
        t.certificate = "/etc/$ssl_server_name.pem".into();
    }
    let err = render::render_default(&TEMPLATES[0], &c, &c.lb.members[0], &extras()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "template nginx.conf: invalid operation: a value cannot be written into nginx: '$' at character 6 (nginx expands `$` as a variable and has no escape for it) (line 48)"
    );
}

#[test]
fn no_filter_bypasses_the_quoting() {
    let c = spec(|_| {});
    let lb = &c.lb.members[0];
    for f in ["safe", "escape", "e", "tojson"] {
        let err = render::render(
            "nginx.conf",
            &format!("{{{{ member.slot | {f} }}}}"),
            &c,
            lb,
            &extras(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown filter"), "{f}: {err}");
    }
    let err = render::render("other.conf", "x", &c, lb, &extras()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "template other.conf is not one haimg knows, so there are no quoting rules for it"
    );
}

#[test]
fn mongod_keyfile_and_cgroup_memory() {
    let c = spec(|_| {});
    let m = &c.mongo.members[0];
    let e = Extras {
        mongo_keyfile: true,
        memory_mb: Some(4096),
        ..extras()
    };
    let out = render::render_default(&TEMPLATES[3], &c, m, &e).unwrap();
    assert!(out.contains("keyFile: /run/haimg/mongod/keyfile"));
    assert!(out.contains("cacheSizeGB: 1.50"));
    insta::assert_snapshot!("mongod.conf@mongo1-keyfile-4g", out);
}

#[test]
fn wiredtiger_cache_sizes() {
    assert_eq!(render::wiredtiger_cache_centi_gb(256), 25);
    assert_eq!(render::wiredtiger_cache_centi_gb(1536), 25);
    assert_eq!(render::wiredtiger_cache_centi_gb(2048), 50);
    assert_eq!(render::wiredtiger_cache_centi_gb(3000), 96);
    assert_eq!(render::wiredtiger_cache_centi_gb(65536), 3150);
}

#[test]
fn ecosystem_credentials_and_spec_env() {
    let c = spec(|t| {
        *t = t.replace(
            "    env: {}",
            "    env: { APP_BANNER: \"it's \\\"quoted\\\" </script>\", FEATURE_X: \"1\" }",
        )
    });
    let m = &c.webapp.members[2];
    let e = Extras {
        db_credentials: Some(("app".into(), "p@ss:w/rd".into())),
        ..extras()
    };
    let out = render::render_default(&TEMPLATES[4], &c, m, &e).unwrap();
    assert_eq!(
        render::mongodb_uri(&c, e.db_credentials.as_ref()),
        "mongodb://app:p%40ss%3Aw%2Frd@192.168.30.103:27017,192.168.30.104:27017,192.168.30.105:27017/app?replicaSet=rs0&authSource=admin"
    );
    assert!(out.contains("rs0&authSource=admin\","));
    insta::assert_snapshot!("ecosystem.config.js@webapp3-credentials-env", out);
}

/// No VRRP password, no keepalived.conf: the hash of the cluster name that
/// stood in for it could be computed by anyone on the segment.
#[test]
fn keepalived_needs_the_stores_password() {
    let c = spec(|_| {});
    let e = Extras {
        vrrp_pass: None,
        ..extras()
    };
    let err = render::render_default(&TEMPLATES[1], &c, &c.lb.members[0], &e).unwrap_err();
    insta::assert_snapshot!(err.to_string(), @"HAIMG_VRRP_PASS is not set: an lb member needs the cluster's VRRP password, which `haimg deploy` delivers from the deploy host's secrets store");
}

#[test]
fn broken_templates_say_what_and_where() {
    let c = spec(|_| {});
    let lb = &c.lb.members[0];
    let e = extras();
    let err = |name: &str, src: &str| {
        render::render(name, src, &c, lb, &e)
            .unwrap_err()
            .to_string()
    };
    insta::assert_snapshot!(
        "error-undefined",
        err("nginx.conf", "a\nlisten {{ lb.listen_prot }};\n")
    );
    insta::assert_snapshot!("error-syntax", err("nginx.conf", "{% if lb.tls %}\nx\n"));
    insta::assert_snapshot!(
        "error-other-role-value",
        err("nginx.conf", "{{ mongo.replica_set }}")
    );
    let e2 = render::render_default(&TEMPLATES[3], &c, lb, &e).unwrap_err();
    assert!(matches!(e2, RenderError::WrongRole { .. }));
    insta::assert_snapshot!("error-wrong-role", e2.to_string());
}
