//! `tether validate`: loads flow and system files, compiles them as `run` and `serve` do,
//! and reports every problem.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tether_engine::spec::diagnostic::{Diagnostic, Summary};
use tether_engine::spec::load::Project;

use crate::{Format, exit};

pub fn run(flows: &Path, paths: &[PathBuf], format: Format) -> anyhow::Result<u8> {
    let project = Arc::new(Project::load_paths(flows, paths));
    // The same compilation `run` and `serve` build their engine from.
    let diagnostics: Vec<Diagnostic> = match tether_engine::validate::compile(&project) {
        Ok((_compiled, warnings)) => warnings,
        Err(diagnostics) => diagnostics,
    };
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
