//! Fuzz target: the OP_MSG decoder, which reads whatever answers on a peer's
//! port 27017 (in haimg-init's rs0 join, PID 1 of every mongo container) and
//! on the deploy host (the rollout's gates). Frames are built valid and then
//! broken: bytes replaced, cut, extended, section sizes set to any `i32`,
//! sections added. The decoder must return `Ok` or `Err`, never panic (PID 1
//! runs with panic=abort), and whatever it accepts must survive a re-encode.
//! Time budget: `HAIMG_FUZZ_SECS` per target (haimg_model::fuzz).

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use haimg_mongo::bson::{doc, Binary, Bson, DateTime, Document, Timestamp};
use haimg_mongo::wire::{self, Conn, WireError, OP_MSG};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = Bson> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        any::<f64>().prop_map(Bson::Double),
        any::<bool>().prop_map(Bson::Boolean),
        "\\PC{0,12}".prop_map(Bson::String),
        any::<i64>().prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms))),
        (any::<u32>(), any::<u32>())
            .prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|bytes| Bson::Binary(Binary {
            subtype: haimg_mongo::bson::spec::BinarySubtype::Generic,
            bytes
        })),
        Just(Bson::Null),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
            proptest::collection::vec(("[a-zA-Z]{1,6}", inner), 0..4)
                .prop_map(|kv| Bson::Document(kv.into_iter().collect::<Document>())),
        ]
    })
}

fn document() -> impl Strategy<Value = Document> {
    proptest::collection::vec(("[a-zA-Z$]{1,8}", value()), 0..5)
        .prop_map(|kv| kv.into_iter().collect::<Document>())
}

/// One way of breaking a frame.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
    /// Overwrite the i32 at this offset (section sizes, length fields).
    SetI32(usize, i32),
    /// A second section of this kind and size field.
    Section(u8, i32, Vec<u8>),
    /// Fix the header's length field to the frame's real length.
    FixLength,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0usize..200, any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (0usize..200).prop_map(Edit::Truncate),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Edit::Append),
        (
            0usize..200,
            prop_oneof![any::<i32>(), -40i32..40, Just(i32::MIN), Just(i32::MAX)]
        )
            .prop_map(|(i, v)| Edit::SetI32(i, v)),
        (
            0u8..3,
            prop_oneof![any::<i32>(), -8i32..64],
            proptest::collection::vec(any::<u8>(), 0..24)
        )
            .prop_map(|(k, s, b)| Edit::Section(k, s, b)),
        Just(Edit::FixLength),
    ]
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        match e {
            Edit::Set(i, v) => {
                if let Some(x) = b.get_mut(*i) {
                    *x = *v;
                }
            }
            Edit::Truncate(n) => b.truncate(*n),
            Edit::Append(extra) => b.extend_from_slice(extra),
            Edit::SetI32(i, v) => {
                if let Some(x) = b.get_mut(*i..*i + 4) {
                    x.copy_from_slice(&v.to_le_bytes());
                }
            }
            Edit::Section(kind, size, bytes) => {
                b.push(*kind);
                b.extend_from_slice(&size.to_le_bytes());
                b.extend_from_slice(bytes);
            }
            Edit::FixLength => {
                if b.len() >= 4 {
                    let n = b.len() as i32;
                    b[0..4].copy_from_slice(&n.to_le_bytes());
                }
            }
        }
    }
    b
}

fn frames() -> impl Strategy<Value = Vec<u8>> {
    let broken = (
        document(),
        any::<bool>(),
        proptest::collection::vec(edit(), 0..6),
    )
        .prop_map(|(doc, checksum, edits)| {
            let mut b = wire::encode_reply(7, 1, &doc).expect("a generated document encodes");
            if checksum {
                b[16] |= 1;
                b.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
                let n = b.len() as i32;
                b[0..4].copy_from_slice(&n.to_le_bytes());
            }
            apply(b, &edits)
        });
    let raw = (
        any::<u32>(),
        proptest::collection::vec(
            (
                0u8..3,
                any::<i32>(),
                proptest::collection::vec(any::<u8>(), 0..16),
            ),
            0..4,
        ),
    )
        .prop_map(|(flags, sections)| {
            let mut b = vec![0u8; 16];
            b[12..16].copy_from_slice(&OP_MSG.to_le_bytes());
            b.extend_from_slice(&flags.to_le_bytes());
            for (kind, size, bytes) in sections {
                b.push(kind);
                b.extend_from_slice(&size.to_le_bytes());
                b.extend_from_slice(&bytes);
            }
            let n = b.len() as i32;
            b[0..4].copy_from_slice(&n.to_le_bytes());
            b
        });
    prop_oneof![3 => broken, 1 => raw, 1 => proptest::collection::vec(any::<u8>(), 0..64)]
}

/// A reply document in the shapes the readers look at, with any values.
fn reply() -> impl Strategy<Value = Document> {
    let keys = prop_oneof![
        Just("ok"),
        Just("code"),
        Just("codeName"),
        Just("errmsg"),
        Just("setName"),
        Just("isWritablePrimary"),
        Just("secondary"),
        Just("primary"),
        Just("me"),
        Just("lastWrite"),
        Just("lastWriteDate"),
        Just("opTime"),
        Just("ts"),
        Just("myState"),
        Just("set"),
        Just("members"),
        Just("self"),
        Just("state"),
        Just("optime"),
        Just("optimeDate"),
        Just("name"),
        Just("stateStr"),
        Just("isreplicaset"),
        Just("arbiterOnly"),
        Just("hidden"),
    ];
    let entry = (keys, value()).prop_map(|(k, v)| (k.to_string(), v));
    proptest::collection::vec(entry, 0..8).prop_map(|kv| kv.into_iter().collect::<Document>())
}

#[test]
fn fuzz_op_msg_decoder_and_reply_readers() {
    let addr = "192.168.30.104:27017".parse().unwrap();
    let input = (frames(), reply());
    haimg_model::fuzz::run("op_msg decoder and reply readers", input, |(bytes, doc)| {
        if let Ok(m) = wire::decode(&bytes) {
            let again = wire::encode_reply(m.request_id, m.response_to, &m.body)
                .map_err(TestCaseError::fail)?;
            let back = wire::decode(&again).map_err(TestCaseError::fail)?;
            // Compared as bytes: a NaN is not equal to itself as a value.
            let bytes = |d: &Document| d.to_vec().map_err(|e| TestCaseError::fail(e.to_string()));
            prop_assert_eq!(bytes(&back.body)?, bytes(&m.body)?);
        }
        // What the gates and the join read out of a reply: never a panic.
        for d in [
            &doc,
            &Document::from_iter([("lastWrite".to_string(), Bson::Document(doc.clone()))]),
        ] {
            let _ = haimg_mongo::hello::parse_hello(addr, d);
            let _ = haimg_mongo::member::parse_status(addr, d);
            let _ = haimg_mongo::member::parse_step_down(addr, d, 10);
            let _ = wire::ok(d);
            let _ = wire::error_of(d);
        }
        Ok(())
    });
}

/// Found by the fuzz target (a flaw of its first property, which compared
/// documents by value): a reply holding NaN round-trips byte for byte.
#[test]
fn a_nan_round_trips() {
    let reply = doc! {"ok": 1.0, "x": f64::NAN, "y": {"z": f64::NAN}};
    let b = wire::encode_reply(1, 1, &reply).unwrap();
    let m = wire::decode(&b).unwrap();
    assert_eq!(m.body.to_vec().unwrap(), reply.to_vec().unwrap());
}

/// Whatever answers on 127.0.0.1 with a hostile frame makes `command` fail
/// with an error naming the address; nothing panics.
#[test]
fn a_hostile_peer_is_an_error() {
    let mut negative = Vec::new();
    negative.extend_from_slice(&26i32.to_le_bytes());
    negative.extend_from_slice(&9i32.to_le_bytes());
    negative.extend_from_slice(&1i32.to_le_bytes());
    negative.extend_from_slice(&OP_MSG.to_le_bytes());
    negative.extend_from_slice(&0u32.to_le_bytes());
    negative.push(0);
    negative.extend_from_slice(&(-1i32).to_le_bytes());
    negative.push(0);
    let replies: [(&[u8], &str); 4] = [
        (&negative, "malformed reply: section size -1 does not fit"),
        (&(-5i32).to_le_bytes(), "malformed reply: message length -5"),
        (
            &i32::MAX.to_le_bytes(),
            "malformed reply: message length 2147483647",
        ),
        (
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
            "malformed reply: message length",
        ),
    ];
    for (reply, want) in replies {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = reply.to_vec();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 512];
            let _ = std::io::Read::read(&mut s, &mut req);
            let _ = s.write_all(&reply);
        });
        let mut c = Conn::connect(addr, Duration::from_secs(5)).unwrap();
        let e = c.command(&doc! {"hello": 1}).unwrap_err();
        assert!(matches!(e, WireError::Malformed { .. }), "{e}");
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("{addr}: {want}")), "{shown}");
        server.join().unwrap();
    }
}
