//! The validation pipeline shared by `validate`, `run` and `serve`: a loaded [`Project`] goes
//! through the cross-file checks of `spec::check` and, once the mapping compiler is in, the
//! compilation of every mapping. Startup and reload take this one path.

use crate::spec::diagnostic::{Diagnostic, Summary};
use crate::spec::load::Project;

/// Everything wrong with a project, sorted by file and position, without duplicates.
pub fn diagnostics(project: &Project) -> Vec<Diagnostic> {
    let mut diagnostics: Vec<Diagnostic> = project.diagnostics.clone();
    diagnostics.extend(crate::spec::check::check(project));
    diagnostics.extend(crate::mapping::compile_project(project).1);
    diagnostics.sort_by(|a, b| {
        (&a.path, a.line, a.column, a.code).cmp(&(&b.path, b.line, b.column, b.code))
    });
    diagnostics.dedup();
    diagnostics
}

/// The counts for the summary line.
pub fn summary(project: &Project, diagnostics: &[Diagnostic]) -> Summary {
    Summary {
        files: project.files,
        mappings: project.mappings().count(),
        rules: project
            .mappings()
            .map(|(_, m)| crate::spec::check::all_rules(&m.properties).len())
            .sum(),
        errors: diagnostics.iter().filter(|d| d.is_error()).count(),
        warnings: diagnostics.iter().filter(|d| !d.is_error()).count(),
    }
}
