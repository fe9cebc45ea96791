//! haimg-init's integration tests, one binary: each file is a module.

mod boot;
mod fuzz_identity;
mod identity;
mod mongo_join;
mod mongo_users;
mod net;
mod render;
mod supervise;
