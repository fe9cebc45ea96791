//! The root crate's integration tests, one binary: the support code (the
//! Proxmox fake, the local LXC helpers, the rollout bed) compiles once and
//! every test file is a module.
//!
//! Tests that need root, LXC or network namespaces say why they skip
//! without them; under `CI=true` they must run.

mod local_support;
mod rollout_support;
mod support;

mod build_cli;
mod build_images;
mod build_pipeline;
mod build_tarball;
mod layers;
mod local_cli_deploy_outcome;
mod local_cli_down;
mod local_cli_rollout;
mod local_debian;
mod local_deploy;
mod local_lxc;
mod proxmox_converge;
mod proxmox_deploy;
mod proxmox_faults;
mod proxmox_firewall;
mod proxmox_lease;
mod proxmox_wire;
mod rollout_cli;
mod rollout_gate;
mod rollout_gc;
mod rollout_mongo;
mod rollout_resume;
mod rollout_rollback;
mod rollout_swap;
mod secrets_cli;
mod spec_check;
mod spec_worst;
mod vendor_repo;
