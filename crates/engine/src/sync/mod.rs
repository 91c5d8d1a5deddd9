//! The sync engine: runs mappings in dependency order, links records to global ids, merges
//! linked pairs three ways, and writes through connectors with crash-safe create intents.
//!
//! [`engine`] runs the mappings; [`merge`] is its pure heart (one pair, field by field);
//! [`order`] puts mappings after the ones they reference; [`report`] says what a run did;
//! [`control`] lets a long-running caller stop a run and share mappings between workers.

pub mod control;
pub mod engine;
pub mod merge;
pub mod open;
pub mod order;
pub mod report;
