//! No input makes the spec parser panic: random text, random edits of the
//! default spec, and pathological YAML all end in `Ok` or a `SpecError`.
#![cfg(all(feature = "yaml", feature = "fuzz"))]

use haimg_model::spec::{parse_plan_json, parse_yaml};
use haimg_model::DEFAULT_SPEC;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

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

/// YAML syntax a hostile or careless edit could bring in.
fn yaml_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[".to_string()),
        Just("{".to_string()),
        Just("]".to_string()),
        Just("}".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!binary ".to_string()),
        Just("!tag ".to_string()),
        Just("? ".to_string()),
        Just("- ".to_string()),
        Just(": ".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("|\n".to_string()),
        Just("\t".to_string()),
        Just("---\n".to_string()),
        Just("...\n".to_string()),
        Just("<<: ".to_string()),
        Just("%YAML 1.2\n".to_string()),
        Just("\u{feff}".to_string()),
        Just("mongodb://a:b@c".to_string()),
        Just("https://x@y:8006".to_string()),
        Just("$x;{}".to_string()),
        "[0-9]{1,12}",
        "\\PC{0,6}",
    ]
}

/// Fuzz target: the spec loader (YAML, and the JSON plan the init reads at
/// boot) on random edits of the default spec. Nothing panics; a spec that is
/// accepted round-trips through the baked JSON plan to the same cluster, and
/// every member's configs render (validation lets through nothing the
/// quoting functions refuse).
#[test]
fn fuzz_spec_loader() {
    let edit = (
        0usize..DEFAULT_SPEC.len(),
        0usize..12,
        proptest::collection::vec(yaml_piece(), 1..4),
    );
    let input = proptest::collection::vec(edit, 1..4);
    haimg_model::fuzz::run("spec loader", input, |edits| {
        let mut text = DEFAULT_SPEC.to_string();
        for (pos, len, pieces) in edits {
            let mut pos = pos.min(text.len());
            while !text.is_char_boundary(pos) {
                pos -= 1;
            }
            let mut end = (pos + len).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(pos..end, &pieces.concat());
        }
        let _ = parse_plan_json(&text);
        let Ok(checked) = parse_yaml(&text) else {
            return Ok(());
        };
        let raw = haimg_model::spec::parse_yaml_raw(&text)
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let json = serde_json::to_string(&raw).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again =
            parse_plan_json(&json).map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
        prop_assert_eq!(&again.cluster, &checked.cluster);
        let extras = haimg_model::render::Extras {
            image_hash: "0123456789ab".into(),
            db_credentials: Some(("app".into(), "p@ss:w/rd\"'\\".into())),
            // An lb renders only with the store's VRRP password (placeholder).
            ..haimg_model::render::Extras::placeholders("0123456789ab")
        };
        for m in checked.cluster.members() {
            for t in haimg_model::render::templates_for(m.role) {
                haimg_model::render::render_default(t, &checked.cluster, m, &extras)
                    .map_err(|e| TestCaseError::fail(format!("{}: {e}\n{text}", t.name)))?;
            }
        }
        Ok(())
    });
}
