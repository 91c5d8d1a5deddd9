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
        if format == Format::Json {
            let value = serde_json::to_value(&report)?;
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
