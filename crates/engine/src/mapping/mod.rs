//! The mapping module owns the translation of records between two systems: it compiles each
//! mapping of a flow once into a [`CompiledMapping`] and applies it to records, forward (source
//! record to target fields) and inverse (target record to source fields).
//!
//! It does no I/O: records come in as JSON values and go out as JSON values, ids of
//! referenced records are translated through a [`ResolveReference`] the engine passes in,
//! and every problem is data (a [`Diagnostic`](crate::spec::diagnostic::Diagnostic) when
//! flows load, a [`RecordError`] per record) rather than a panic.
//!
//! - [`compile`]: compiling mappings, checking them against the system files' field lists.
//! - [`apply`]: applying a compiled mapping to records, both ways.
//! - [`canonical`]: the normal form of a record's mapped fields and its stable hash.
//! - [`types`]: conversion and checking per rule type.
//! - [`template`]: the minijinja environment and Tether's filters.
//! - [`path`]: source and target paths, parsed once.
//! - [`country`]: the ISO 3166-1 and ISO 4217 tables.

pub mod apply;
pub mod canonical;
pub mod compile;
pub mod country;
pub mod path;
pub mod template;
pub mod types;

pub use apply::{
    KeepIds, RecordError, ReferenceRequest, ResolveReference, RuleError, RuleErrorKind, accepts,
    apply_forward, apply_forward_existing, apply_inverse, apply_inverse_selected,
    apply_inverse_selected_onto, seed_list,
};
pub use canonical::{CANONICAL_VERSION, Canonical};
pub use compile::{CompiledMapping, CompiledRule, ReferenceRule, compile, compile_project};
