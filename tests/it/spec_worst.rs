//! `haimg check` answers the worst 1 MiB specs we could construct within
//! [`BUDGET`]: deep flow and block nesting, alias fan-out and "billion
//! laughs", long keys and values, many values, many members, many nodes,
//! secret-scanner traps, and files past the limit (`/dev/zero` included).
//! Each ends in exit 0 (valid) or 2 (invalid, with a message), never a hang.
//! The tests run the debug binary; the spec path in it (haimg-model and the
//! YAML crates) is built optimized (`[profile.dev.package]` in Cargo.toml).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use haimg_model::spec::MAX_SPEC_BYTES;
use haimg_model::DEFAULT_SPEC;

const BUDGET: Duration = Duration::from_secs(1);

/// `unit` repeated until the text is just under the size limit, after `head`, before `tail`.
fn fill(head: &str, unit: &str, tail: &str) -> String {
    let n = (MAX_SPEC_BYTES - head.len() - tail.len()) / unit.len();
    let mut s = String::with_capacity(MAX_SPEC_BYTES);
    s.push_str(head);
    for _ in 0..n {
        s.push_str(unit);
    }
    s.push_str(tail);
    assert!(s.len() <= MAX_SPEC_BYTES);
    s
}

/// The default spec on 10.0.0.0/8 with `members` more webapp members, all on pve1.
fn big_valid_spec(members: usize) -> String {
    let mut s = DEFAULT_SPEC.replace("    env: {}\n", "    env: {}\n    allow_colocation: true\n");
    let mut list = String::new();
    for i in 0..members {
        let ip = std::net::Ipv4Addr::from(
            u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) + 2 + i as u32,
        );
        list += &format!(
            "      - {{ slot: w{i}, vmid: {}, hostname: w{i}, ip: {ip}, node: pve1 }}\n",
            1_000_000 + i
        );
    }
    s = s.replace("green_vmid_offset: 1000", "green_vmid_offset: 3000000");
    s = s.replace("cidr: 192.168.30.0/24", "cidr: 10.0.0.0/8");
    s = s.replace("gateway: 192.168.30.1", "gateway: 10.255.255.254");
    s = s.replace("dns: [192.168.30.1]", "dns: [10.255.255.254]");
    s = s.replace("vip: 192.168.30.200", "vip: 10.255.255.253");
    for o in 100..=108 {
        s = s.replace(
            &format!("ip: 192.168.30.{o},"),
            &format!("ip: 10.200.0.{o},"),
        );
    }
    let marker = "  webapp:\n    members:\n";
    let at = s.find(marker).expect("webapp members") + marker.len();
    s.insert_str(at, &list);
    s
}

fn cases() -> Vec<(&'static str, String)> {
    let deep_block: String = {
        let mut s = String::new();
        let mut i = 0;
        while s.len() + i + 8 < MAX_SPEC_BYTES {
            s += &format!("{}k{}:\n", " ".repeat(i), i % 10);
            i += 1;
        }
        s
    };
    let anchor_seq = format!("a: &a [{}]\n", vec!["x"; 20_000].join(","));
    vec![
        ("deep [", fill("", "[", "")),
        ("deep {", fill("", "{", "")),
        ("deep {a: ", fill("", "{a: ", "")),
        ("deep - ", fill("", "- ", "a")),
        ("deep ? ", fill("", "? ", "a")),
        ("deep block indentation", deep_block),
        (
            "depth 31 then 1 MiB of items",
            fill(&"[".repeat(31), "a,", ""),
        ),
        ("alias fan-out", fill(&anchor_seq, "*a,", "")),
        ("billion laughs", {
            let mut s = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
            for c in b'b'..=b'z' {
                let prev = (c - 1) as char;
                s += &format!(
                    "{}: &{} [{}]\n",
                    c as char,
                    c as char,
                    vec![format!("*{prev}"); 10].join(",")
                );
            }
            s
        }),
        ("many anchors", fill("", "- &a x\n", "")),
        ("long plain key", fill("", "k", ": 1\n")),
        ("long complex key", fill("? ", "k", "\n: [1, 2]\n")),
        (
            "long complex key over many items",
            fill(&format!("? {}\n: [", "k".repeat(500_000)), "1,", "]\n"),
        ),
        (
            "long quoted value with escapes",
            fill("a: \"", "\\u0041", "\"\n"),
        ),
        ("long multi-line plain scalar", fill("a: x\n", "  y\n", "")),
        ("many top-level keys", fill("", "k: 1\n", "")),
        ("many tags", fill("", "- !t x\n", "")),
        ("many documents", fill("", "---\na: 1\n", "")),
        ("url scheme soup", fill("a: \"", "://", "\"\n")),
        ("token soup", fill("a: \"u@r", "!x=", "\"\n")),
        ("entropy soup", fill("a: \"", "aZ3+", "\"\n")),
        ("secret-name soup", fill("a: {", "dbPassX: 1, ", "}\n")),
        ("60,000 Proxmox nodes (valid)", {
            let nodes: Vec<String> = (0..60_000).map(|i| format!("n{i}")).collect();
            let s = DEFAULT_SPEC.replace(
                "  nodes: [pve1, pve2, pve3]",
                &format!("  nodes: [pve1, pve2, pve3, {}]", nodes.join(", ")),
            );
            assert!(s.len() < MAX_SPEC_BYTES, "{}", s.len());
            s
        }),
        // 11 values a member: 5,000 is about as many as the value bound allows.
        ("5,000 webapp members (valid)", big_valid_spec(5_000)),
    ]
}

/// Run `haimg check --spec path`: exit code, stderr, wall time.
fn check(path: &Path) -> (Option<i32>, String, Duration) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_haimg"))
        .args(["check", "--spec"])
        .arg(path)
        .env_remove("HAIMG_SPEC")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("failed to run haimg");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed(),
    )
}

#[test]
fn every_worst_input_is_answered_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut report = String::new();
    let mut slow = Vec::new();
    for (name, text) in cases() {
        assert!(text.len() <= MAX_SPEC_BYTES, "{name}: {} bytes", text.len());
        let path = dir.path().join("haimg.yaml");
        std::fs::write(&path, &text).unwrap();
        let (code, stderr, took) = check(&path);
        assert!(
            matches!(code, Some(0) | Some(2)),
            "{name}: exit {code:?}\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(
            stderr.len() < 64 * 1024,
            "{name}: {} bytes of messages",
            stderr.len()
        );
        let first = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or("valid");
        report += &format!(
            "{name:40} {:>8} bytes {:>7.3} s  {}\n",
            text.len(),
            took.as_secs_f64(),
            first.chars().take(70).collect::<String>()
        );
        if took > BUDGET {
            slow.push(name);
        }
    }
    eprintln!("{report}");
    assert!(slow.is_empty(), "over {BUDGET:?}: {slow:?}\n{report}");
}

/// A spec file larger than the limit, or endless, is refused without reading it whole.
#[test]
fn oversized_and_endless_files_are_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, "#".repeat(64 << 20)).unwrap();
    for path in [big.as_path(), Path::new("/dev/zero")] {
        let (code, stderr, took) = check(path);
        assert_eq!(code, Some(2), "{}: {stderr}", path.display());
        assert!(
            stderr.contains("a spec is at most 1048576 bytes"),
            "{}: {stderr}",
            path.display()
        );
        assert!(took < BUDGET, "{}: {took:?}", path.display());
    }
}

#[test]
fn no_message_carries_a_whole_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haimg.yaml");
    std::fs::write(&path, fill("schema_version: \"", "k", "\"\n")).unwrap();
    let (code, stderr, _) = check(&path);
    assert_eq!(code, Some(2));
    assert!(
        stderr.len() < 1000,
        "{} bytes: {}",
        stderr.len(),
        &stderr[..200]
    );
}
