//! The MongoDB users, created by the init on the primary once rs0 exists.
//!
//! With a keyfile mongod runs with authorization, and until the first user
//! exists the **localhost exception** lets a client on 127.0.0.1 create it.
//! [`ensure`] runs on the local member while it is primary, idempotently:
//!
//! 1. authenticate as the admin user (SCRAM-SHA-256, `haimg_mongo::scram`);
//!    18 AuthenticationFailed means it does not exist yet, so
//! 2. `createUser` admin (`root`) through the localhost exception, then
//!    authenticate as it;
//! 3. `createRole` the step-down role (`replSetStateChange` on the cluster,
//!    which `clusterMonitor` lacks); it may exist;
//! 4. the app user (`readWrite` on the spec's database only) and the monitor
//!    user (`clusterMonitor` + the step-down role): `createUser`, or
//!    `updateUser` when it exists, so a rotated password takes effect on the
//!    next primary that runs this.
//!
//! The admin password cannot be rotated this way (changing it needs the old
//! one): a 13 Unauthorized at step 2 says the users exist with another admin
//! password. Errors never carry a password.

use bson::{doc, Bson, Document};

use haimg_model::image::mongo_users::{ADMIN, APP, MONITOR, STEPDOWN_ROLE};
use haimg_mongo::scram::{self, ScramError};
use haimg_mongo::wire::{self, Conn};

/// `createUser` of a user that exists (mongod's `user_management_commands.cpp`).
pub const USER_EXISTS: i32 = 51003;
/// `createRole` of a role that exists.
pub const ROLE_EXISTS: i32 = 51002;
pub const AUTHENTICATION_FAILED: i32 = 18;
pub const UNAUTHORIZED: i32 = 13;

/// The three passwords from the store. `Debug` shows none.
#[derive(Clone, PartialEq, Eq)]
pub struct Passwords {
    pub admin: String,
    pub app: String,
    pub monitor: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords(<redacted>)")
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Done {
    pub admin_created: bool,
    pub created: Vec<String>,
    pub updated: Vec<String>,
}

fn roles(list: &[(&str, &str)]) -> Bson {
    Bson::Array(
        list.iter()
            .map(|(role, db)| Bson::Document(doc! {"role": *role, "db": *db}))
            .collect(),
    )
}

fn check(reply: &Document, what: &str) -> Result<(), String> {
    if wire::ok(reply) {
        return Ok(());
    }
    let (code, name, msg) = wire::error_of(reply);
    Err(format!("{what}: {code} {name}: {msg}"))
}

/// Create or update the users on `conn` (the local primary); `nonce` draws a SCRAM nonce.
pub fn ensure(
    conn: &mut Conn,
    pw: &Passwords,
    database: &str,
    nonce: &mut dyn FnMut() -> Result<String, String>,
) -> Result<Done, String> {
    let mut done = Done {
        admin_created: false,
        created: Vec::new(),
        updated: Vec::new(),
    };
    let mut auth = |conn: &mut Conn| -> Result<(), ScramError> {
        let n = nonce().map_err(|detail| ScramError::Protocol {
            user: ADMIN.into(),
            detail,
        })?;
        scram::authenticate_with_nonce(conn, ADMIN, &pw.admin, &n)
    };
    match auth(conn) {
        Ok(()) => {}
        Err(ScramError::Refused { .. }) => {
            let reply = conn
                .command(&doc! {
                    "createUser": ADMIN,
                    "pwd": pw.admin.as_str(),
                    "roles": roles(&[("root", "admin")]),
                    "mechanisms": ["SCRAM-SHA-256"],
                })
                .map_err(|e| e.to_string())?;
            if !wire::ok(&reply) && wire::error_of(&reply).0 == UNAUTHORIZED {
                return Err(format!(
                    "users exist but {ADMIN} does not accept the store's password (was mongo-admin-password rotated? it cannot be: see README, \"Secrets\")"
                ));
            }
            check(&reply, &format!("createUser {ADMIN}"))?;
            done.admin_created = true;
            auth(conn).map_err(|e| e.to_string())?;
        }
        Err(e) => return Err(e.to_string()),
    }
    let reply = conn
        .command(&doc! {
            "createRole": STEPDOWN_ROLE,
            "privileges": [{"resource": {"cluster": true}, "actions": ["replSetStateChange"]}],
            "roles": [],
        })
        .map_err(|e| e.to_string())?;
    if wire::ok(&reply) {
        done.created.push(STEPDOWN_ROLE.to_string());
    } else if wire::error_of(&reply).0 != ROLE_EXISTS {
        check(&reply, &format!("createRole {STEPDOWN_ROLE}"))?;
    }
    let users = [
        (APP, pw.app.as_str(), roles(&[("readWrite", database)])),
        (
            MONITOR,
            pw.monitor.as_str(),
            roles(&[("clusterMonitor", "admin"), (STEPDOWN_ROLE, "admin")]),
        ),
    ];
    for (user, pwd, r) in users {
        let reply = conn
            .command(&doc! {
                "createUser": user,
                "pwd": pwd,
                "roles": r.clone(),
                "mechanisms": ["SCRAM-SHA-256"],
            })
            .map_err(|e| e.to_string())?;
        if wire::ok(&reply) {
            done.created.push(user.to_string());
            continue;
        }
        if wire::error_of(&reply).0 != USER_EXISTS {
            check(&reply, &format!("createUser {user}"))?;
        }
        let reply = conn
            .command(&doc! {
                "updateUser": user,
                "pwd": pwd,
                "roles": r,
                "mechanisms": ["SCRAM-SHA-256"],
            })
            .map_err(|e| e.to_string())?;
        check(&reply, &format!("updateUser {user}"))?;
        done.updated.push(user.to_string());
    }
    Ok(done)
}
