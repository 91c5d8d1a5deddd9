//! Tether: declarative two-way data sync between business systems.
//!
//! The crate is split by concept; `ARCHITECTURE.md` at the repository root is the map.
//!
//! - [`spec`] owns what users write: the flow and system file model, YAML loading with
//!   source locations, `${VAR}` interpolation, and validation with diagnostics.
//! - [`mapping`] compiles mappings once and applies them to records, both ways; no I/O.

pub mod docs;
pub mod mapping;
pub mod spec;
pub mod sync;
pub mod validate;
