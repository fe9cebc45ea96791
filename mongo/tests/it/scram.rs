//! `haimg_mongo::scram` at the wire level: the RFC 7677 §3 conversation
//! carried in `saslStart`/`saslContinue` replies of the shapes mongod sends
//! (`haimg_mongo::replay::recorded`). A replay, not a MongoDB: it pins the
//! commands and payloads the client sends and how it reads the answers.

use std::time::Duration;

use haimg_mongo::bson::{Bson, Document};
use haimg_mongo::replay::recorded;
use haimg_mongo::replay::{Answer, Replay, Script};
use haimg_mongo::scram;
use haimg_mongo::wire::Conn;

const T: Duration = Duration::from_secs(2);
const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn payload(d: &Document) -> String {
    match d.get("payload") {
        Some(Bson::Binary(b)) => String::from_utf8(b.bytes.clone()).unwrap(),
        other => panic!("payload: {other:?}"),
    }
}

#[test]
fn rfc7677_conversation_over_op_msg() {
    let r = Replay::start(
        Script::new()
            .reply("saslStart", recorded::sasl_step(1, false, SERVER_FIRST))
            .reply("saslContinue", recorded::sasl_step(1, true, SERVER_FINAL)),
    )
    .unwrap();
    let mut c = Conn::connect(r.addr(), T).unwrap();
    scram::authenticate_with_nonce(&mut c, "user", "pencil", NONCE).unwrap();
    assert_eq!(r.commands(), ["saslStart", "saslContinue"]);
    let start = r.request("saslStart").unwrap();
    assert_eq!(start.get_str("mechanism").unwrap(), "SCRAM-SHA-256");
    assert_eq!(start.get_str("$db").unwrap(), "admin");
    assert_eq!(payload(&start), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
    let cont = r.request("saslContinue").unwrap();
    assert_eq!(cont.get_i32("conversationId").unwrap(), 1);
    assert_eq!(
        payload(&cont),
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
}

/// Servers before 4.4 (or without skipEmptyExchange) need one empty round.
#[test]
fn an_empty_last_round_when_the_server_is_not_done() {
    let r = Replay::start(
        Script::new()
            .reply("saslStart", recorded::sasl_step(1, false, SERVER_FIRST))
            .sequence(
                "saslContinue",
                vec![
                    Answer::Reply(recorded::sasl_step(1, false, SERVER_FINAL)),
                    Answer::Reply(recorded::sasl_step(1, true, "")),
                ],
            ),
    )
    .unwrap();
    let mut c = Conn::connect(r.addr(), T).unwrap();
    scram::authenticate_with_nonce(&mut c, "user", "pencil", NONCE).unwrap();
    assert_eq!(r.commands(), ["saslStart", "saslContinue", "saslContinue"]);
}

#[test]
fn a_wrong_password_is_refused_by_the_server() {
    let r = Replay::start(
        Script::new()
            .reply("saslStart", recorded::sasl_step(1, false, SERVER_FIRST))
            .reply("saslContinue", recorded::auth_failed()),
    )
    .unwrap();
    let mut c = Conn::connect(r.addr(), T).unwrap();
    let e = scram::authenticate_with_nonce(&mut c, "user", "pencil2", NONCE).unwrap_err();
    let text = e.to_string();
    assert_eq!(
        text,
        "authentication of user failed: 18 AuthenticationFailed: Authentication failed."
    );
    assert!(!text.contains("pencil"));
}

/// A server that answers with the right shapes but does not know the
/// password's keys (RFC 7677's server-final for "pencil", the client used
/// another password) is caught by the signature check.
#[test]
fn a_server_that_does_not_know_the_keys_is_not_trusted() {
    let r = Replay::start(
        Script::new()
            .reply("saslStart", recorded::sasl_step(1, false, SERVER_FIRST))
            .reply("saslContinue", recorded::sasl_step(1, true, SERVER_FINAL)),
    )
    .unwrap();
    let mut c = Conn::connect(r.addr(), T).unwrap();
    let e = scram::authenticate_with_nonce(&mut c, "user", "other", NONCE).unwrap_err();
    assert_eq!(
        e.to_string(),
        "SCRAM conversation with user: the server's signature is wrong: it does not know this user's keys"
    );
}
