//! No input makes the spec parser panic: random text, random edits of the
//! default spec, and pathological YAML all end in `Ok` or a `SpecError`.
#![cfg(feature = "yaml")]

use haimg_model::spec::{parse_plan_json, parse_yaml};
use haimg_model::DEFAULT_SPEC;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_text(s in "\\PC{0,400}") {
        let _ = parse_yaml(&s);
        let _ = parse_plan_json(&s);
    }

    #[test]
    fn edited_default_spec(pos in 0usize..DEFAULT_SPEC.len(), len in 0usize..40, insert in "[ -~\\n\\t]{0,12}") {
        let mut bytes = DEFAULT_SPEC.as_bytes().to_vec();
        let end = (pos + len).min(bytes.len());
        bytes.splice(pos..end, insert.bytes());
        if let Ok(text) = String::from_utf8(bytes) {
            let _ = parse_yaml(&text);
        }
    }

    #[test]
    fn numbers_anywhere(n in any::<i128>(), line in 0usize..80) {
        let text: String = DEFAULT_SPEC
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i == line {
                    match l.split_once(": ") {
                        Some((k, _)) => format!("{k}: {n}\n"),
                        None => format!("{l}\n"),
                    }
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let _ = parse_yaml(&text);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = "[".repeat(100_000);
    assert!(parse_yaml(&deep).is_err());
    let deep_map = "a: ".repeat(50_000) + "1";
    assert!(parse_yaml(&deep_map).is_err());
}

#[test]
fn huge_file_is_refused() {
    let big = "# padding\n".repeat(200_000);
    let err = parse_yaml(&big).unwrap_err();
    assert!(err.problems[0].message.contains("bytes"));
}

#[test]
fn plan_json_round_trip() {
    let raw = haimg_model::spec::parse_yaml_raw(DEFAULT_SPEC).unwrap();
    let json = serde_json::to_string(&raw).unwrap();
    let checked = parse_plan_json(&json).unwrap();
    let direct = parse_yaml(DEFAULT_SPEC).unwrap();
    assert_eq!(checked.cluster, direct.cluster);
}
