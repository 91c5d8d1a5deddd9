//! The sync engine: runs mappings in dependency order, links records to global ids, merges
//! linked pairs three ways, and writes through connectors with crash-safe create intents.
//!
//! [`merge`] is the pure heart: one pair, field by field.

pub mod merge;
pub mod order;
