//! The MongoDB users the init creates on the primary, at the wire level.
//!
//! The "primary" is a replay server (`haimg_mongo::replay`) answering with
//! replies of the shapes mongod sends (sources in
//! `haimg_mongo::replay::recorded`: SASL steps, 18 AuthenticationFailed,
//! 13 Unauthorized, 51003 for a user that exists). Not a MongoDB: these tests
//! pin the sequence of commands the init sends and how it reads the answers.
//! The SCRAM server messages are constructed for the admin user with the
//! same primitives RFC 7677's vectors check (`haimg_mongo::scram`).

use std::time::Duration;

use bson::{Bson, Document};
use haimg_init::join::users::{self, Passwords};
use haimg_mongo::replay::recorded;
use haimg_mongo::replay::{Answer, Replay, Script};
use haimg_mongo::scram;
use haimg_mongo::wire::Conn;

const T: Duration = Duration::from_secs(2);
const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const SERVER_NONCE: &str = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

fn passwords() -> Passwords {
    Passwords {
        admin: "ADMIN-PASSWORD-PLACEHOLDER".into(),
        app: "APP-PASSWORD-PLACEHOLDER".into(),
        monitor: "MONITOR-PASSWORD-PLACEHOLDER".into(),
    }
}

fn server_first() -> String {
    format!("r={SERVER_NONCE},s={SALT},i=4096")
}

/// What a server that holds `password`'s keys for `user` answers last.
fn server_final(user: &str, password: &str) -> String {
    let salt = scram::b64_decode(SALT).unwrap();
    let salted = scram::hi(password.as_bytes(), &salt, 4096);
    let server_key = scram::hmac(&salted, b"Server Key");
    let auth = format!(
        "n={user},r={NONCE},{},c=biws,r={SERVER_NONCE}",
        server_first()
    );
    format!(
        "v={}",
        scram::b64_encode(&scram::hmac(&server_key, auth.as_bytes()))
    )
}

fn sasl_ok() -> Vec<Answer> {
    vec![Answer::Reply(recorded::sasl_step(
        1,
        false,
        &server_first(),
    ))]
}

fn ok() -> Document {
    let mut d = bson::doc! {"ok": 1.0};
    recorded::gossip(&mut d);
    d
}

fn run(r: &Replay) -> Result<users::Done, String> {
    let mut c = Conn::connect(r.addr(), T).unwrap();
    users::ensure(&mut c, &passwords(), "app", &mut || Ok(NONCE.to_string()))
}

fn roles_of(d: &Document) -> Vec<String> {
    d.get_array("roles")
        .unwrap()
        .iter()
        .map(|r| match r {
            Bson::Document(r) => format!(
                "{}@{}",
                r.get_str("role").unwrap(),
                r.get_str("db").unwrap()
            ),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// A fresh primary: no user, so the admin's first SCRAM attempt fails, the
/// localhost exception creates it, and the rest follows authenticated.
#[test]
fn a_fresh_primary_gets_admin_role_app_and_monitor() {
    let fin = server_final(haimg_model::image::mongo_users::ADMIN, &passwords().admin);
    let r = Replay::start(
        Script::new()
            .sequence(
                "saslStart",
                vec![
                    Answer::Reply(recorded::sasl_step(1, false, &server_first())),
                    Answer::Reply(recorded::sasl_step(2, false, &server_first())),
                ],
            )
            .sequence(
                "saslContinue",
                vec![
                    Answer::Reply(recorded::auth_failed()),
                    Answer::Reply(recorded::sasl_step(2, true, &fin)),
                ],
            )
            .reply("createUser", ok())
            .reply("createRole", ok()),
    )
    .unwrap();
    let done = run(&r).unwrap();
    assert!(done.admin_created);
    assert_eq!(done.created, ["haimg-stepdown", "app", "haimg-monitor"]);
    assert_eq!(
        r.commands(),
        [
            "saslStart",
            "saslContinue",
            "createUser",
            "saslStart",
            "saslContinue",
            "createRole",
            "createUser",
            "createUser"
        ]
    );
    let reqs: Vec<Document> = r
        .requests()
        .into_iter()
        .filter(|q| q.command() == "createUser")
        .map(|q| q.body)
        .collect();
    let summary: Vec<String> = reqs
        .iter()
        .map(|d| {
            format!(
                "{} {} pwd={} mechanisms={:?} db={}",
                d.get_str("createUser").unwrap(),
                roles_of(d).join(","),
                d.get_str("pwd").unwrap(),
                d.get_array("mechanisms").unwrap(),
                d.get_str("$db").unwrap()
            )
        })
        .collect();
    insta::assert_snapshot!(summary.join("\n"), @r#"
    haimg-admin root@admin pwd=ADMIN-PASSWORD-PLACEHOLDER mechanisms=[String("SCRAM-SHA-256")] db=admin
    app readWrite@app pwd=APP-PASSWORD-PLACEHOLDER mechanisms=[String("SCRAM-SHA-256")] db=admin
    haimg-monitor clusterMonitor@admin,haimg-stepdown@admin pwd=MONITOR-PASSWORD-PLACEHOLDER mechanisms=[String("SCRAM-SHA-256")] db=admin
    "#);
    let role = r.request("createRole").unwrap();
    insta::assert_snapshot!(format!("{role}"), @r#"{ "createRole": "haimg-stepdown", "privileges": [{ "resource": { "cluster": true }, "actions": ["replSetStateChange"] }], "roles": [], "$db": "admin" }"#);
}

/// A primary where the users exist (a replaced member, a rotation): the admin
/// authenticates, the role exists, app and monitor get `updateUser` with the
/// store's (maybe rotated) passwords.
#[test]
fn existing_users_are_updated_with_the_stores_passwords() {
    let fin = server_final(haimg_model::image::mongo_users::ADMIN, &passwords().admin);
    let r = Replay::start(
        Script::new()
            .sequence("saslStart", sasl_ok())
            .reply("saslContinue", recorded::sasl_step(1, true, &fin))
            .reply(
                "createRole",
                recorded::error(
                    51002,
                    "Location51002",
                    "Role \"haimg-stepdown@admin\" already exists",
                ),
            )
            .reply("createUser", recorded::user_exists("app"))
            .reply("updateUser", ok()),
    )
    .unwrap();
    let done = run(&r).unwrap();
    assert!(!done.admin_created);
    assert!(done.created.is_empty());
    assert_eq!(done.updated, ["app", "haimg-monitor"]);
    let upd = r.request("updateUser").unwrap();
    assert_eq!(upd.get_str("pwd").unwrap(), "APP-PASSWORD-PLACEHOLDER");
}

/// Users exist but not with the store's admin password: the localhost
/// exception is closed (13), and the error says what it means, no password.
#[test]
fn another_admin_password_is_a_clear_error() {
    let r = Replay::start(
        Script::new()
            .sequence("saslStart", sasl_ok())
            .reply("saslContinue", recorded::auth_failed())
            .reply("createUser", recorded::unauthorized("createUser")),
    )
    .unwrap();
    let e = run(&r).unwrap_err();
    assert!(!e.contains("PLACEHOLDER"), "{e}");
    insta::assert_snapshot!(e, @r#"users exist but haimg-admin does not accept the store's password (was mongo-admin-password rotated? it cannot be: see README, "Secrets")"#);
}
