//! haimg-mongo's integration tests, one binary: each file is a module.

mod fuzz_wire;
mod hello;
mod member;
mod scram;
