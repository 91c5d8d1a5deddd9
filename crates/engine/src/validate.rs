//! The validation pipeline shared by every command that loads flows (`validate`, `run`,
//! `plan`, `serve` and its reloads): a loaded [`Project`] goes through the cross-file checks
//! of `spec::check` and the compilation of every mapping, once, and comes out as a
//! [`CompiledProject`] with its warnings, or as every problem found. The engine is built from
//! the compiled project only, so nothing is compiled twice for one load.

use std::sync::Arc;

use indexmap::IndexMap;

use crate::mapping::CompiledMapping;
use crate::spec::diagnostic::{Diagnostic, Summary};
use crate::spec::load::Project;

/// A project whose every mapping compiled: what an engine is built from. Dropping it (and the
/// engine built from it) frees its compiled mappings and their templates.
#[derive(Debug, Clone)]
pub struct CompiledProject {
    project: Arc<Project>,
    mappings: IndexMap<String, Arc<CompiledMapping>>,
}

impl CompiledProject {
    /// The loaded project it was compiled from.
    pub fn project(&self) -> &Arc<Project> {
        &self.project
    }

    /// Every compiled mapping, by name, in the order of the flow files.
    pub fn mappings(&self) -> &IndexMap<String, Arc<CompiledMapping>> {
        &self.mappings
    }
}

/// Checks and compiles a project: the compiled project and its warnings, or every diagnostic
/// (errors and warnings, sorted) when there is an error. Each mapping, path and template is
/// compiled once.
pub fn compile(
    project: &Arc<Project>,
) -> Result<(CompiledProject, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (mappings, diagnostics) = analyse(project);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(diagnostics);
    }
    let compiled = CompiledProject {
        project: Arc::clone(project),
        mappings,
    };
    Ok((compiled, diagnostics))
}

/// Everything wrong with a project, sorted by file and position, without duplicates. (The
/// same analysis as [`compile`], for callers that only report.)
pub fn diagnostics(project: &Project) -> Vec<Diagnostic> {
    analyse(project).1
}

fn analyse(project: &Project) -> (IndexMap<String, Arc<CompiledMapping>>, Vec<Diagnostic>) {
    let mut diagnostics: Vec<Diagnostic> = project.diagnostics.clone();
    diagnostics.extend(crate::spec::check::check(project));
    let (mappings, found) = crate::mapping::compile_project(project);
    diagnostics.extend(found);
    diagnostics.sort_by(|a, b| {
        (&a.path, a.line, a.column, a.code).cmp(&(&b.path, b.line, b.column, b.code))
    });
    diagnostics.dedup();
    (mappings, diagnostics)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::template;
    use crate::spec::flow::{Inverse, RuleSpec};
    use std::path::Path;

    fn shipped() -> Arc<Project> {
        let flows = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows");
        Arc::new(Project::load_dir(&flows))
    }

    /// How many template texts the project's mappings hold (filters, templates, transforms,
    /// inverses, in array items too).
    fn templates_in(project: &Project) -> usize {
        fn rules(specs: &[crate::spec::node::Checked<RuleSpec>]) -> usize {
            specs
                .iter()
                .filter_map(|r| r.valid())
                .map(|rule| {
                    usize::from(rule.template.is_some())
                        + usize::from(rule.transform.is_some())
                        + match rule.inverse.as_ref().map(|i| &i.value) {
                            Some(Inverse::Template(_)) => 1,
                            Some(Inverse::PerSource(list)) => list.len(),
                            None => 0,
                        }
                        + rule.items.as_deref().map_or(0, rules)
                })
                .sum()
        }
        project
            .mappings()
            .map(|(_, m)| usize::from(m.filter.is_some()) + rules(&m.properties))
            .sum()
    }

    #[test]
    fn compiling_a_project_compiles_each_template_once() {
        let project = shipped();
        let templates = templates_in(&project);
        assert!(
            templates > 20,
            "the shipped flows have templates: {templates}"
        );
        let before = template::compiled_on_this_thread();
        let (compiled, warnings) = compile(&project).expect("the shipped flows compile");
        assert_eq!(template::compiled_on_this_thread() - before, templates);
        assert!(warnings.iter().all(|d| !d.is_error()));
        assert_eq!(compiled.mappings().len(), project.mappings().count());
    }

    #[test]
    fn dropping_compiled_projects_frees_their_templates() {
        let project = shipped();
        let templates = templates_in(&project);
        let live = template::live_on_this_thread();
        for _ in 0..50 {
            let (compiled, _) = compile(&project).expect("the shipped flows compile");
            assert_eq!(template::live_on_this_thread(), live + templates as isize);
            drop(compiled);
            assert_eq!(template::live_on_this_thread(), live);
        }
    }

    #[test]
    fn a_project_with_errors_gives_every_diagnostic_and_no_compiled_project() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/validate");
        let project = Arc::new(Project::load_paths(
            &dir,
            &[
                dir.join("unknown-field.yaml"),
                dir.join("missing-inverse.yaml"),
            ],
        ));
        let errors = compile(&project).expect_err("errors");
        let codes: Vec<&str> = errors.iter().map(|d| d.code.as_str()).collect();
        assert!(codes.contains(&"unknown-field"), "{codes:?}");
        assert!(codes.contains(&"missing-inverse"), "{codes:?}");
        assert_eq!(errors, diagnostics(&project));
    }
}
