//! Golden-image tests: boot the built templates on the local backend and check
//! the cluster as a user sees it through the VIP.
//!
//! [`load`] is the bounded load generator, [`report`] the result shape,
//! [`criteria`] the pass criteria derived from the spec.

pub mod criteria;
pub mod keepalive;
pub mod load;
pub mod local;
pub mod report;
pub mod scenarios;
