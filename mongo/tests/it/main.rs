//! haimg-mongo's integration tests, one binary: each file is a module.

mod hello;
mod member;
