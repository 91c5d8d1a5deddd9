//! `tether check`: before the first run against real services, whether every system the
//! flows use can be reached and authenticates, and whether every entity a mapping uses can
//! be read. One line per system and per entity, ok or a clear reason (never a credential),
//! exit 0 when everything passes and 1 otherwise.
//!
//! Each entity is checked by reading the first page of its listing, which is also what
//! authenticates: a wrong credential or a login host that refuses the flow shows on the
//! system's line and every entity of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use tether_engine::connector::{Connector, HttpConnector};
use tether_engine::spec::load::Project;

use crate::cli::run::runtime;
use crate::{Format, exit};

/// The outcome of one check.
#[derive(Debug, Serialize)]
struct Line {
    system: String,
    /// `None` for the system's own line.
    #[serde(skip_serializing_if = "Option::is_none")]
    entity: Option<String>,
    ok: bool,
    /// What was found, or why it failed.
    detail: String,
}

pub fn run(flows: &Path, only: Option<&str>, format: Format) -> anyhow::Result<u8> {
    let project = Project::load_dir(flows);
    // The entities each system is used with, by the mappings of every flow.
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (flow, mapping) in project.mappings() {
        for (system, entity) in [
            (&flow.spec.source.value, &mapping.source.value),
            (&flow.spec.target.value, &mapping.target.value),
        ] {
            let entities = used.entry(system.clone()).or_default();
            if !entities.contains(entity) {
                entities.push(entity.clone());
            }
        }
    }
    if let Some(only) = only {
        used.retain(|system, _| system == only);
        if used.is_empty() {
            anyhow::bail!("no flow uses a system named `{only}`");
        }
    }
    let lines = runtime()?.block_on(async {
        let mut lines = Vec::new();
        for (system, entities) in &used {
            let Some(file) = project.systems.get(system) else {
                lines.push(Line {
                    system: system.clone(),
                    entity: None,
                    ok: false,
                    detail: "no system file (run `tether validate`)".to_owned(),
                });
                continue;
            };
            let connector = match HttpConnector::new(&file.spec) {
                Ok(connector) => connector,
                Err(error) => {
                    lines.push(Line {
                        system: system.clone(),
                        entity: None,
                        ok: false,
                        detail: error.to_string(),
                    });
                    continue;
                }
            };
            let mut entity_lines = Vec::new();
            for entity in entities {
                let detail = check_entity(&connector, entity).await;
                entity_lines.push(Line {
                    system: system.clone(),
                    entity: Some(entity.clone()),
                    ok: detail.is_ok(),
                    detail: detail.unwrap_or_else(|e| e),
                });
            }
            let failed = entity_lines.iter().find(|line| !line.ok);
            lines.push(Line {
                system: system.clone(),
                entity: None,
                ok: failed.is_none(),
                detail: match failed {
                    None => "reachable, authenticated".to_owned(),
                    Some(line) => line.detail.clone(),
                },
            });
            lines.extend(entity_lines);
        }
        lines
    });
    let all_ok = lines.iter().all(|line| line.ok);
    if format == Format::Json {
        crate::cli::emit(&format!("{}\n", serde_json::to_string_pretty(&lines)?))?;
    } else {
        let mut out = String::new();
        for line in &lines {
            let what = match &line.entity {
                Some(entity) => format!("{} {entity}", line.system),
                None => line.system.clone(),
            };
            let verdict = if line.ok { "ok" } else { "FAILED" };
            let _ = writeln!(out, "{what}: {verdict}: {}", line.detail);
        }
        crate::cli::emit(&out)?;
    }
    Ok(if all_ok { exit::OK } else { exit::FAILED })
}

/// Reads the first page of an entity's listing: what it found, or why it failed.
async fn check_entity(connector: &HttpConnector, entity: &str) -> Result<String, String> {
    let mut reader = connector
        .list_all(entity)
        .map_err(|error| error.to_string())?;
    match reader.next_page().await {
        Ok(Some(page)) => Ok(format!(
            "readable ({} records on the first page)",
            page.records.len()
        )),
        Ok(None) => Ok("readable (empty)".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}
