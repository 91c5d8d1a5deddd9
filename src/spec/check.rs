//! Checks across files that the schema cannot express.

use crate::spec::diagnostic::Diagnostic;
use crate::spec::load::Project;

/// Runs every cross-file check and returns what it found.
pub fn check(_project: &Project) -> Vec<Diagnostic> {
    Vec::new()
}
