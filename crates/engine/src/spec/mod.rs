//! The spec module owns what users write: flow files and system files.
//!
//! It is the only module that knows YAML. [`node`] parses a file into a located tree and
//! deserializes the typed model ([`flow`], [`system`]) from it; [`env`](mod@env) resolves `${VAR}`
//! where URLs and credentials go.

pub mod check;
pub mod diagnostic;
pub mod env;
pub mod flow;
pub mod load;
pub mod node;
pub mod schema;
pub mod system;
