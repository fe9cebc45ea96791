//! haimg-mongo: the small, blocking MongoDB client that haimg-init (the rs0
//! join inside every mongo container) and haimg (the rollout's health gates
//! on the deploy host) share.
//!
//! * [`wire`]: OP_MSG framing over a TCP stream, documents by the `bson` crate;
//! * [`member`]: the host-side replica-set commands: a member's state, set and
//!   lag behind the primary (`replSetGetStatus`), and `replSetStepDown`;
//! * [`scram`]: SCRAM-SHA-256 authentication (`saslStart`/`saslContinue`),
//!   with its own SHA-256, HMAC and PBKDF2;
//! * [`hello`]: the same state and lag from `hello`, which needs no
//!   credentials: what the host falls back to when authorization is on and
//!   `replSetGetStatus` answers 13 Unauthorized;
//! * `replay` (feature `replay`, tests only): a server on 127.0.0.1 that
//!   answers with replies recorded from real mongod shapes. It is a replay,
//!   not a MongoDB: tests against it pin what the client sends and how it
//!   reads the answers, never how a mongod behaves.
//!
//! Invariants: no async runtime, no dependencies beyond `bson` (without
//! default features), `thiserror` and `std`, because the init is a static
//! binary under 2 MiB; every network wait is bounded by a timeout the caller
//! chooses; errors name the address they concern.

pub mod hello;
pub mod member;
pub mod scram;
pub mod wire;

/// The `bson` this crate speaks, for callers that build or read documents.
pub use bson;

#[cfg(feature = "replay")]
pub mod replay;
