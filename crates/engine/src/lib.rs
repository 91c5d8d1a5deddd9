//! The Tether engine: everything between the flow files and the systems' APIs, with no
//! command line, web server or simulator in it (those are the `tether` binary and the
//! `tether-sandbox` crate, which the engine never imports).
//!
//! The crate is split by concept; `ARCHITECTURE.md` at the repository root is the map.
//!
//! - [`spec`] owns what users write: the flow and system file model, YAML loading with
//!   source locations, `${VAR}` interpolation, and cross-file checks with diagnostics.
//! - [`validate`] is the one path from loaded files to a checked project, shared by every
//!   command that loads flows.
//! - [`connector`] is how the engine talks to systems: the `Connector` trait and the generic
//!   HTTP connector driven by system files.
//! - [`store`] keeps the engine's state (links, bases, cursors, intents, parked records,
//!   runs, leases) behind one interface over SQLite and PostgreSQL.
//! - [`sync`] is the engine: links, three-way merges and writes.
//! - [`docs`] generates the dataflow documents (RST and HTML) back from the flow files.
//! - [`mapping`] compiles mappings once and applies them to records, both ways; no I/O.
//! - [`ops`] is what an operator can ask and do (parked records, history, conflicts), once
//!   for the command line, the HTTP API and the web console.

pub mod connector;
pub mod docs;
pub mod mapping;
pub mod ops;
pub mod spec;
pub mod store;
pub mod sync;
pub mod validate;
