//! haimg: immutable, reproducible, self-configuring LXC templates for an HA web
//! cluster on Proxmox VE.
//!
//! The library holds everything the `haimg` binary does; `main.rs` only calls
//! [`cli::main`]. The cluster spec and its validation live in `haimg-model`,
//! shared with `haimg-init`.

pub mod backend;
pub mod build;
pub mod cli;
pub mod deploy;
pub mod digest;
pub mod doctor;
pub mod exec;
pub mod fleet;
pub mod golden;
pub mod orchestrate;
pub mod probe;
pub mod rollout;
pub mod secrets;
pub mod spec_file;

pub use haimg_model as model;
