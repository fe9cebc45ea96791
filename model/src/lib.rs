//! haimg-model: the contract between the host CLI (`haimg`) and the init
//! (`haimg-init`).
//!
//! It holds the cluster spec ([`spec`]: raw shape, strict validation), the
//! validated [`Cluster`] and what follows from it alone ([`tolerance`]), and
//! the one quoting function per config language ([`quote`]). Both
//! binaries depend on it, so a plan baked at build time means the same thing
//! at boot. It does no I/O.

mod cluster;
pub mod endpoint;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod image;
pub mod policy;
pub mod quote;
pub mod render;
mod role;
pub mod secrets;
pub mod spec;
mod template;
pub mod tolerance;

pub use cluster::*;
pub use spec::{Checked, Problem, Severity, SpecError};
pub use template::TemplateName;

/// The default cluster spec: the seed's plan, embedded so `haimg` works
/// without a file and `haimg spec` can print it.
pub const DEFAULT_SPEC: &str = include_str!("../../haimg.yaml");
