//! Fleet facts shared by the two orchestrations (`deploy` converges, `rollout`
//! swaps blue/green): what a member is and what the target holds for it.
//!
//! * [`tags`]: the tag scheme that carries every member's state on the target;
//! * [`slot`]: what the target holds for one slot (its two VMIDs), read from
//!   tags and power states alone, and what the slot needs;
//! * [`status`]: the live and standby member of every slot, for `haimg status`;
//! * [`members`]: the container spec of a member, derived from the cluster;
//! * [`templates`]: the built templates on this machine and their content hash;
//! * [`upload`]: storing them on the target.
//!
//! Invariant: this layer reads the target and derives; its one write is
//! storing templates ([`upload`]), never a container.
//! `deploy` and `rollout` both build on it and never on each other.

pub mod members;
pub mod slot;
pub mod status;
pub mod tags;
pub mod templates;
pub mod upload;
