//! Tether: declarative two-way data sync between business systems.
//!
//! The crate is split by concept; `ARCHITECTURE.md` at the repository root is the map.
//!
//! - [`spec`] owns what users write: the flow and system file model, YAML loading with
//!   source locations, `${VAR}` interpolation, and validation with diagnostics.

pub mod spec;
pub mod store;
pub mod validate;
