//! `tether check`: before the first run against real services, whether every system the
//! flows use can be reached and authenticates, and whether every entity a mapping uses can
//! be read, written (where the API can say so without a write) and has the fields the
//! mappings use; with the daily allowance where the system reports one. One line per
//! system and per entity, ok or a clear reason (never a credential), exit 0 when everything
//! passes and 1 otherwise. The checks and their verdicts are `tether_engine::ops::check`;
//! this file builds the connectors and prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tether_engine::connector::HttpConnector;
use tether_engine::ops::check::{self, CheckLine, EntityUse};
use tether_engine::spec::load::Project;
use tether_engine::spec::system::DEFAULT_ALLOWANCE_RESERVE;

use crate::cli::run::runtime;
use crate::{Format, exit};

pub fn run(flows: &Path, only: Option<&str>, format: Format) -> anyhow::Result<u8> {
    let project = Arc::new(Project::load_dir(flows));
    let Ok((compiled, _warnings)) = tether_engine::validate::compile(&project) else {
        anyhow::bail!(
            "the flows in {} do not validate; `tether validate` says why",
            flows.display()
        );
    };
    // The entities each system is used with, by the mappings of every flow.
    let mut used: BTreeMap<String, Vec<EntityUse>> = BTreeMap::new();
    for use_ in check::uses(&compiled) {
        used.entry(use_.system.clone()).or_default().push(use_);
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
            let failed = |detail: String| CheckLine {
                system: system.clone(),
                entity: None,
                ok: false,
                detail,
            };
            let Some(file) = project.systems.get(system) else {
                lines.push(failed("no system file (run `tether validate`)".to_owned()));
                continue;
            };
            let connector = match HttpConnector::new(&file.spec) {
                Ok(connector) => connector,
                Err(error) => {
                    lines.push(failed(error.to_string()));
                    continue;
                }
            };
            let reserve = file
                .spec
                .allowance
                .as_ref()
                .and_then(|allowance| allowance.reserve().ok())
                .unwrap_or(DEFAULT_ALLOWANCE_RESERVE);
            lines.extend(check::check_system(&connector, entities, reserve).await);
        }
        lines
    });
    let all_ok = lines.iter().all(|line| line.ok);
    if format == Format::Json {
        let text = serde_json::to_string_pretty(&lines).context("check lines as JSON")?;
        crate::cli::emit(&format!("{text}\n"))?;
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
