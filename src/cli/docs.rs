//! `tether docs`: writes (or checks) the dataflow documents generated from the flow files.

use std::path::Path;

use anyhow::{Context as _, bail};
use tether_engine::docs::{DocFormat, Document};
use tether_engine::spec::load::Project;

use crate::{DocsFormat, exit};

/// The `Generated:` timestamp: `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
fn generated_at() -> String {
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(chrono::Utc::now);
    now.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The text without its `Generated:` line, for staleness checks.
pub fn without_timestamp(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("Generated: ") && !l.starts_with("<p class=\"generated\">"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn run(flows: &Path, out: &Path, format: DocsFormat, check: bool) -> anyhow::Result<u8> {
    let project = Project::load_dir(flows);
    let diagnostics = tether_engine::validate::diagnostics(&project);
    if let Some(first) = diagnostics.iter().find(|d| d.is_error()) {
        bail!(
            "the flows do not validate ({} errors; first: {}:{}:{}: {}); run `tether validate`",
            diagnostics.iter().filter(|d| d.is_error()).count(),
            first.path.display(),
            first.line,
            first.column,
            first.message
        );
    }
    let format = match format {
        DocsFormat::Rst => DocFormat::Rst,
        DocsFormat::Html => DocFormat::Html,
    };
    let documents: Vec<Document> = tether_engine::docs::generate(&project, format, &generated_at());
    if check {
        let stale: Vec<String> = documents
            .iter()
            .filter(|d| {
                let current = std::fs::read_to_string(out.join(&d.file_name)).unwrap_or_default();
                without_timestamp(&current) != without_timestamp(&d.text)
            })
            .map(|d| out.join(&d.file_name).display().to_string())
            .collect();
        if stale.is_empty() {
            println!("{} documents are up to date", documents.len());
            return Ok(exit::OK);
        }
        for path in &stale {
            eprintln!("{path} is stale: run `tether docs`");
        }
        return Ok(exit::FAILED);
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for document in &documents {
        let path = out.join(&document.file_name);
        std::fs::write(&path, &document.text)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(exit::OK)
}
