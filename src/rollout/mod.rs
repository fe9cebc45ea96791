//! Versioned blue/green rollouts, rollback and garbage collection,
//! written once against [`crate::backend::Backend`].
//!
//! Every slot owns two VMIDs (the spec's and `+ rollout.green_vmid_offset`);
//! a rollout creates the new member (green) on the free one, stopped, swaps it
//! in for the serving one (blue) and keeps blue stopped as the standby for
//! `haimg rollback`. The next rollout alternates back. State lives only in
//! the target's tags (`state-live`/`state-standby`, `gen-<n>-<id>`, see
//! [`crate::fleet::tags`]) and power states; there is no state file, and a
//! run killed at any point is continued by the next run.
//!
//! * [`machine`]: the pure step machine of one slot;
//! * [`plan`]: which slots change, in which order (deploy and rollback);
//! * [`executor`]: carrying a plan out, with health gates and automatic restore;
//! * [`gate`]: the health gates (HTTP/TCP from the deploy host, mongo over OP_MSG via a probe trait);
//! * [`gc`]: removing old standbys and templates.
//!
//! What the target holds for a slot ([`crate::fleet::slot`]) and the tag
//! scheme ([`crate::fleet::tags`]) are shared with `deploy`.

pub mod executor;
pub mod gate;
pub mod gc;
pub mod machine;
pub mod plan;

pub use executor::{Aborted, Event, Executor, Observer, Options, Report};
pub use gate::{HealthGate, NetGate, WireMongo};
pub use plan::{Kind, Plan};
