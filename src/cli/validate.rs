//! `tether validate`: loads flow and system files and reports every problem.

use std::path::{Path, PathBuf};

use tether_engine::spec::diagnostic::{Diagnostic, Summary};
use tether_engine::spec::load::Project;

use crate::{Format, exit};

pub fn run(flows: &Path, paths: &[PathBuf], format: Format) -> anyhow::Result<u8> {
    let project = Project::load_paths(flows, paths);
    let diagnostics: Vec<Diagnostic> = tether_engine::validate::diagnostics(&project);
    let summary: Summary = tether_engine::validate::summary(&project, &diagnostics);
    match format {
        Format::Json => crate::cli::emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&diagnostics)?
        ))?,
        Format::Text => {
            let mut text = String::new();
            for diagnostic in &diagnostics {
                let source = project.sources.get(&diagnostic.path).map(String::as_str);
                text.push_str(&diagnostic.render(source));
            }
            text.push_str(&format!("{summary}\n"));
            crate::cli::emit(&text)?;
        }
    }
    Ok(if summary.errors > 0 {
        exit::FAILED
    } else {
        exit::OK
    })
}
