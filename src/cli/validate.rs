//! `tether validate`: loads flow and system files and reports every problem.

use std::path::{Path, PathBuf};

use tether::spec::diagnostic::{Diagnostic, Summary};
use tether::spec::load::Project;

use crate::{Format, exit};

/// Loads the project named by `flows` and `paths` the way `validate` does.
pub fn load(flows: &Path, paths: &[PathBuf]) -> Project {
    if paths.is_empty() {
        return Project::load_dir(flows);
    }
    let mut project = Project::default();
    for path in paths {
        if path.is_dir() {
            let dir = Project::load_dir(path);
            project.flows_dir = dir.flows_dir;
            project.systems.extend(dir.systems);
            project.flows.extend(dir.flows);
            project.sources.extend(dir.sources);
            project.diagnostics.extend(dir.diagnostics);
            project.files += dir.files;
        } else if path
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "systems")
        {
            project.add_system_file(path);
        } else {
            project.add_flow_file(path);
        }
    }
    // Flow files given alone are checked against the system files of the flows directory.
    if project.systems.is_empty() {
        let systems = Project::load_dir(flows);
        project.systems = systems.systems;
        project.sources.extend(systems.sources);
    }
    project
}

pub fn run(flows: &Path, paths: &[PathBuf], format: Format) -> anyhow::Result<u8> {
    let project = load(flows, paths);
    let mut diagnostics: Vec<Diagnostic> = project.diagnostics.clone();
    diagnostics.extend(tether::spec::check::check(&project));
    diagnostics.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
    diagnostics.dedup();
    let summary = Summary {
        files: project.files,
        mappings: project.mappings().count(),
        rules: project.mappings().map(|(_, m)| m.properties.len()).sum(),
        errors: diagnostics.iter().filter(|d| d.is_error()).count(),
        warnings: diagnostics.iter().filter(|d| !d.is_error()).count(),
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&diagnostics)?),
        Format::Text => {
            for diagnostic in &diagnostics {
                let source = project.sources.get(&diagnostic.path).map(String::as_str);
                print!("{}", diagnostic.render(source));
            }
            println!("{summary}");
        }
    }
    Ok(if summary.errors > 0 {
        exit::FAILED
    } else {
        exit::OK
    })
}
