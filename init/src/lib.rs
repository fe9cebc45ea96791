//! haimg-init: PID 1 of every haimg image, as a library so each part is
//! tested on its own; `main.rs` only wires them to the real system.
//!
//! Boot order: mount what PID 1 needs, [`identity`] (who am
//! I), [`net`] (bring eth0 up when the host did not), [`boot`] (render the
//! role's configs), [`supervise`] (start, watch, restart and stop the role's
//! services), [`join`] (rs0 on mongo), [`status`] (`/run/haimg/status.json`).
//! The pure parts (identity, rendering, the supervisor's state machine, the
//! join decision) carry the tests; the I/O around them is thin. Nothing here
//! may make PID 1 exit on bad input: errors become one console line and a
//! reason in the status file.

pub mod boot;
pub mod cli;
pub mod identity;
pub mod join;
pub mod log;
pub mod net;
pub mod services;
pub mod status;
pub mod supervise;
pub mod vip;
