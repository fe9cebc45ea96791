//! Bounds on a YAML document before anything builds it.
//!
//! libyaml's scanner does work proportional to the flow nesting depth for
//! every token (it revisits each level's possible simple key), so `[` × 32,000
//! took 6.7 s and the 1 MiB limit allowed ~500,000 levels; and an alias
//! expands its anchor wherever it appears, so 40 KB of `*a` pointing at a
//! 20 KB sequence took 78 s to deserialize. [`check`] streams the same
//! parser's events (the `libyaml-rs` that `serde_yaml` uses, so both read the
//! document alike) and stops at the first event past [`MAX_DEPTH`] levels or
//! the first alias: the scanner never sees a deeper document, and the cost is
//! linear in the input. It also stops past [`MAX_NODES`] values, so no later
//! pass builds more than that. A syntax error is left to the real parse, which stops
//! at the same place and reports it with the usual message.
//!
//! This is the only `unsafe` in the crate: libyaml-rs keeps libyaml's C API.
//! The parser lives in one function, is deleted on every path, and reads a
//! `&str` that outlives it.

use std::mem::MaybeUninit;

use libyaml_rs as sys;

use super::Problem;

/// A haimg.yaml nests 6 levels (`roles.lb.members[0].slot`); this leaves room
/// for any reasonable layout and bounds the scanner's cost.
pub const MAX_DEPTH: usize = 32;

/// A haimg.yaml has a few hundred values (about 15 per member); this allows
/// some 4,000 members and keeps every later pass (a generic parse for the
/// secret scan, the typed parse) small: building 500,000 values took 0.3 s in
/// a release build.
pub const MAX_NODES: usize = 65_536;

/// Refuse a document nested deeper than [`MAX_DEPTH`], with more than
/// [`MAX_NODES`] values, or using an alias.
pub(crate) fn check(text: &str) -> Result<(), Problem> {
    let mut parser = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
    let p = parser.as_mut_ptr();
    // SAFETY: `p` points to memory for one parser; initialize fills it. It only
    // fails when out of memory, in which case nothing was allocated.
    if unsafe { sys::yaml_parser_initialize(p) }.fail {
        return Ok(());
    }
    struct Delete(*mut sys::yaml_parser_t);
    impl Drop for Delete {
        fn drop(&mut self) {
            // SAFETY: the parser was initialized and is deleted exactly once,
            // before the box that holds it is freed (declared after it).
            unsafe { sys::yaml_parser_delete(self.0) }
        }
    }
    let _delete = Delete(p);
    // SAFETY: an initialized parser with no input yet; `text` outlives it.
    unsafe {
        sys::yaml_parser_set_encoding(p, sys::YAML_UTF8_ENCODING);
        sys::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as u64);
    }
    let mut depth = 0usize;
    let mut nodes = 0usize;
    loop {
        let mut event = MaybeUninit::<sys::yaml_event_t>::uninit();
        // SAFETY: an initialized parser and memory for one event. On failure
        // no event is produced (the error goes to the real parse).
        if unsafe { sys::yaml_parser_parse(p, event.as_mut_ptr()) }.fail {
            return Ok(());
        }
        // SAFETY: parse succeeded, so the event is initialized; it is read
        // (two plain fields) and then deleted once.
        let (kind, mark) = unsafe {
            let e = event.assume_init_mut();
            let seen = (e.type_, e.start_mark);
            sys::yaml_event_delete(e);
            seen
        };
        let at = |p: Problem| p.at(mark.line as usize + 1, mark.column as usize + 1);
        if matches!(
            kind,
            sys::YAML_SCALAR_EVENT | sys::YAML_SEQUENCE_START_EVENT | sys::YAML_MAPPING_START_EVENT
        ) {
            nodes += 1;
            if nodes > MAX_NODES {
                return Err(at(Problem::error(
                    "",
                    format!("the document has more than {MAX_NODES} values"),
                )
                .hint("a haimg.yaml has a few hundred; is this the right file?")));
            }
        }
        match kind {
            sys::YAML_SEQUENCE_START_EVENT | sys::YAML_MAPPING_START_EVENT => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(at(Problem::error(
                        "",
                        format!("the document nests deeper than {MAX_DEPTH} levels"),
                    )
                    .hint("a haimg.yaml nests about 6 levels; is this the right file?")));
                }
            }
            sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => {
                depth = depth.saturating_sub(1);
            }
            sys::YAML_ALIAS_EVENT => {
                return Err(at(Problem::error(
                    "",
                    "a YAML alias (`*name`) is used; haimg.yaml takes none",
                )
                .hint("write the value out where the alias stands: an alias can make a small file expand into a huge one")));
            }
            sys::YAML_STREAM_END_EVENT => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spec_passes() {
        assert_eq!(check(crate::DEFAULT_SPEC), Ok(()));
    }

    #[test]
    fn depth_is_counted_in_flow_and_block_style() {
        let ok_flow = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(check(&ok_flow), Ok(()));
        let deep_flow = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(check(&deep_flow).is_err());
        let block: String = (0..=MAX_DEPTH)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect::<String>()
            + &" ".repeat(MAX_DEPTH + 1)
            + "v: 1\n";
        let e = check(&block).unwrap_err();
        assert_eq!(e.message, "the document nests deeper than 32 levels");
        assert_eq!((e.line, e.column), (Some(33), Some(33)));
        assert!(check(&("- ".repeat(MAX_DEPTH + 1) + "a")).is_err());
    }

    #[test]
    fn values_are_counted() {
        let ok = format!("[{}]", vec!["a"; MAX_NODES - 1].join(","));
        assert_eq!(check(&ok), Ok(()));
        let e = check(&format!("[{}]", vec!["a"; MAX_NODES].join(","))).unwrap_err();
        assert_eq!(e.message, "the document has more than 65536 values");
    }

    #[test]
    fn aliases_are_refused_anchors_alone_are_not() {
        assert_eq!(check("a: &x 1\nb: 2\n"), Ok(()));
        let e = check("a: &x [1, 2]\nb: *x\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(4)));
    }

    #[test]
    fn syntax_errors_are_left_to_the_parser() {
        assert_eq!(check("a: [1, 2\n"), Ok(()));
        assert_eq!(check("\t- x"), Ok(()));
    }
}
