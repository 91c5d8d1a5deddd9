//! `tether status` and `tether explain`: what the store knows, for people and programs.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};
use tether_engine::spec::load::Project;
use tether_engine::store::{RecordKey, Store, StoreUrl};

use crate::cli::run::runtime;
use crate::{Format, exit};

pub fn status(flows: &Path, state: &StoreUrl, format: Format) -> anyhow::Result<u8> {
    let names = tether_engine::ops::Names::of(&Project::load_dir(flows));
    runtime()?.block_on(async move {
        let store = Store::open(state)
            .await
            .with_context(|| format!("cannot open the state store {state}"))?;
        let report = store.status_report().await?;
        let allowances = allowances(report.mappings.iter().filter_map(|m| m.last_run.as_ref()));
        if format == Format::Json {
            let mut value = serde_json::to_value(&report)?;
            if let Some(object) = value.as_object_mut() {
                object.insert("allowances".into(), serde_json::to_value(&allowances)?);
            }
            crate::cli::emit(&format!("{}\n", serde_json::to_string_pretty(&value)?))?;
            return Ok(exit::OK);
        }
        let statuses = report.mappings;
        let mut out = String::new();
        if statuses.is_empty() {
            let _ = writeln!(out, "no mapping has run yet: try `tether run`");
        }
        for s in &statuses {
            let last = match &s.last_run {
                Some(run) => format!(
                    "last run {} at {} ({})",
                    run.id.as_str(),
                    run.started_at.format("%Y-%m-%d %H:%M:%S"),
                    run.outcome
                        .map_or("unfinished".to_owned(), |o| o.as_str().to_owned())
                ),
                None => "never run".to_owned(),
            };
            let _ = writeln!(
                out,
                "{}: {} linked, {} parked, {} open intents; {last}",
                s.mapping, s.pairs, s.parked, s.open_intents
            );
            for cursor in &s.cursors {
                let position = if cursor.position.chars().count() > 80 {
                    format!("{}…", cursor.position.chars().take(80).collect::<String>())
                } else {
                    cursor.position.clone()
                };
                let _ = writeln!(
                    out,
                    "  cursor {:?} {}/{}: {position}",
                    cursor.key.side, cursor.key.system, cursor.key.entity
                );
            }
        }
        for a in &allowances {
            let share = a
                .used
                .saturating_mul(100)
                .checked_div(a.limit)
                .map_or_else(String::new, |percent| format!(" ({percent}%)"));
            let stopped = match &a.stopped {
                Some(why) => format!("; stopped in that run: {why}"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "{}: {} of {} daily API requests used{share} at {}{stopped}",
                a.system,
                a.used,
                a.limit,
                a.at.format("%Y-%m-%d %H:%M:%S")
            );
        }
        let now = chrono::Utc::now();
        for lease in store.leases().await? {
            let state = if lease.expires_at > now {
                "held"
            } else {
                "expired"
            };
            let _ = writeln!(
                out,
                "lease {} {state} by worker {} until {}",
                lease.mapping,
                lease.worker,
                lease.expires_at.format("%Y-%m-%d %H:%M:%S")
            );
        }
        if !report.parked.is_empty() {
            let overview = tether_engine::ops::parked::overview(&store, &names, false).await?;
            let _ = writeln!(out);
            for group in &overview.groups {
                let _ = writeln!(out, "{}", group.summary);
            }
            let _ = writeln!(
                out,
                "{} records parked, {} set aside: `tether parked` shows each cause with an example",
                overview.parked, overview.skipped
            );
        }
        crate::cli::emit(&out)?;
        Ok(exit::OK)
    })
}

/// A system's daily API allowance as the latest run that talked to it saw it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Allowance {
    system: String,
    used: u64,
    limit: u64,
    /// When that run started.
    at: chrono::DateTime<chrono::Utc>,
    /// Why the system stopped in that run, when its allowance stopped it.
    stopped: Option<String>,
}

/// The allowance each system's answers reported in the latest of `runs` that has it (from
/// the run summaries' `systems`), by system name.
fn allowances<'a>(runs: impl Iterator<Item = &'a tether_engine::store::Run>) -> Vec<Allowance> {
    let mut latest: std::collections::BTreeMap<String, Allowance> = Default::default();
    for run in runs {
        let systems = run
            .summary
            .as_ref()
            .and_then(|s| s.get("systems"))
            .and_then(Value::as_array);
        for system in systems.into_iter().flatten() {
            let (Some(name), Some(used), Some(limit)) = (
                system.get("system").and_then(Value::as_str),
                system.get("allowance_used").and_then(Value::as_u64),
                system.get("allowance_limit").and_then(Value::as_u64),
            ) else {
                continue;
            };
            if latest
                .get(name)
                .is_some_and(|seen| seen.at >= run.started_at)
            {
                continue;
            }
            latest.insert(
                name.to_owned(),
                Allowance {
                    system: name.to_owned(),
                    used,
                    limit,
                    at: run.started_at,
                    stopped: system
                        .get("stopped")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                },
            );
        }
    }
    latest.into_values().collect()
}

/// `tether explain SYSTEM ENTITY ID`: the record's global ids and counterparts, and per
/// mapping each synced field with the rule that made it and its last synced value.
pub fn explain(
    flows: &Path,
    state: &StoreUrl,
    system: &str,
    entity: &str,
    id: &str,
    format: Format,
) -> anyhow::Result<u8> {
    let project = Project::load_dir(flows);
    runtime()?.block_on(async move {
        let store = Store::open(state).await.with_context(|| format!("cannot open the state store {state}"))?;
        let record = RecordKey::new(system, entity, id);
        let mut explained = Vec::new();
        for (flow, mapping) in project.mappings() {
            let side = if flow.spec.source.value == system && mapping.source.value == entity {
                "source"
            } else if flow.spec.target.value == system && mapping.target.value == entity {
                "target"
            } else {
                continue;
            };
            let identity = &mapping.identity.value;
            let Some(link) = store.link_by_record(identity, &record).await? else {
                explained.push(json!({ "mapping": mapping.name.value, "side": side, "identity": identity, "linked": false }));
                continue;
            };
            let counterparts: Vec<Value> = store
                .links_of_global(identity, &link.global_id)
                .await?
                .into_iter()
                .filter(|l| l.record != record)
                .map(|l| json!({ "system": l.record.system, "entity": l.record.entity, "id": l.record.id, "origin": l.origin }))
                .collect();
            let pair = store.pair_state(&mapping.name.value, &link.global_id).await?;
            let rules: Vec<Value> = mapping
                .properties
                .iter()
                .filter_map(|r| r.valid())
                .map(|rule| {
                    let synced = pair.as_ref().and_then(|p| p.base.get(&rule.target.value).cloned());
                    json!({
                        "target": rule.target.value,
                        "source": rule.source.as_ref().map(|s| s.value.clone()).or_else(|| rule.template.as_ref().map(|t| t.value.clone())),
                        "type": rule.data_type.value.name(),
                        "last_synced": synced,
                    })
                })
                .collect();
            let parked: Vec<Value> = store
                .parked(Some(&mapping.name.value))
                .await?
                .into_iter()
                .filter(|p| p.record_id == id)
                .map(|p| json!({ "side": p.side, "reason": p.reason, "field": p.field, "value": p.value, "attempts": p.attempts }))
                .collect();
            explained.push(json!({
                "mapping": mapping.name.value,
                "side": side,
                "identity": identity,
                "linked": true,
                "global_id": link.global_id.as_str(),
                "origin": link.origin,
                "counterparts": counterparts,
                "synced_at": pair.as_ref().map(|p| p.synced_at),
                "fields": rules,
                "parked": parked,
            }));
        }
        if explained.is_empty() {
            anyhow::bail!("no mapping reads {system} `{entity}`: check the system and entity names (`tether validate` lists the flows)");
        }
        if format == Format::Json {
            crate::cli::emit(&format!("{}\n", serde_json::to_string_pretty(&explained)?))?;
            return Ok(exit::OK);
        }
        let mut out = String::new();
        let _ = writeln!(out, "{system} {entity} {id}");
        for item in &explained {
            let _ = writeln!(out, "\nmapping {} ({} side, identity {})", item["mapping"].as_str().unwrap_or(""), item["side"].as_str().unwrap_or(""), item["identity"].as_str().unwrap_or(""));
            if item["linked"] == json!(false) {
                let _ = writeln!(out, "  not linked yet");
                continue;
            }
            let _ = writeln!(out, "  global id {} (linked by {})", item["global_id"].as_str().unwrap_or(""), item["origin"].as_str().unwrap_or(""));
            for c in item["counterparts"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "  same as {} {} {}", c["system"].as_str().unwrap_or(""), c["entity"].as_str().unwrap_or(""), c["id"].as_str().unwrap_or(""));
            }
            for field in item["fields"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "  {:<28} <- {:<40} {:<14} last synced {}",
                    field["target"].as_str().unwrap_or(""),
                    field["source"].as_str().unwrap_or(""),
                    field["type"].as_str().unwrap_or(""),
                    if field["last_synced"].is_null() { "-".to_owned() } else { field["last_synced"].to_string() }
                );
            }
            for p in item["parked"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "  parked: {}", p["reason"].as_str().unwrap_or(""));
            }
        }
        crate::cli::emit(&out)?;
        Ok(exit::OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use tether_engine::store::{Run, RunId};

    fn run(minute: u32, systems: Value) -> Run {
        Run {
            id: RunId::new(format!("run-{minute}")),
            flows: vec![],
            mappings: vec![],
            worker: None,
            trigger: None,
            started_at: chrono::Utc
                .with_ymd_and_hms(2026, 5, 4, 12, minute, 0)
                .unwrap(),
            finished_at: None,
            outcome: None,
            summary: Some(json!({ "systems": systems })),
        }
    }

    #[test]
    fn the_latest_run_that_saw_an_allowance_tells_it() {
        let runs = [
            run(
                1,
                json!([{"system": "salesforce", "allowance_used": 10, "allowance_limit": 100}]),
            ),
            run(
                3,
                json!([{"system": "salesforce", "allowance_used": 81, "allowance_limit": 100,
                          "stopped": "salesforce: stopped for this run"},
                         {"system": "customerp", "requests": 4}]),
            ),
            run(
                2,
                json!([{"system": "salesforce", "allowance_used": 50, "allowance_limit": 100},
                         {"system": "keap", "allowance_used": 7, "allowance_limit": 30000}]),
            ),
        ];
        let seen = allowances(runs.iter());
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].system, "keap");
        assert_eq!((seen[0].used, seen[0].limit), (7, 30_000));
        assert_eq!(seen[1].system, "salesforce");
        assert_eq!((seen[1].used, seen[1].limit), (81, 100));
        assert!(seen[1].stopped.is_some());
    }
}
