//! Runs and the state of every mapping as an operator meets them: the latest runs in short,
//! one run with its per-mapping report, and the overview of every flow and mapping (health,
//! last run, records linked, parked and held counts) with each system's figures from the
//! latest run that used it.
//!
//! A run's report is kept as the JSON the engine stored with it, so figures added to reports
//! later (a system's allowance, ...) reach every front end without a change here. The
//! decisions ([`summarise`], [`health`], [`latest_systems`]) are pure.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::ops::{EntityName, Names, OpsError};
use crate::store::{ConflictState, MappingStatus, Run, RunId, RunOutcome, Store};

/// A run in short: what it covered, when, how it ended, and its totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub id: String,
    pub flows: Vec<String>,
    pub mappings: Vec<String>,
    pub worker: Option<String>,
    /// What started it (`schedule`, `api`, `webhook`, `resync`), when recorded.
    pub trigger: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `None` while the run is going on, or when it died without finishing.
    pub outcome: Option<RunOutcome>,
    pub seconds: Option<f64>,
    /// Records created, updated and deleted on either side.
    pub writes: u64,
    pub parked: u64,
    pub conflicts: u64,
    /// Mappings the run stopped (circuit breaker, a failing system), with why.
    pub stopped: Vec<Stopped>,
}

/// A mapping a run stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stopped {
    pub mapping: String,
    pub reason: String,
}

/// One run with its report per mapping and per system, as the engine stored them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    /// One object per mapping: read, linked, created, updated, deleted, parked, ...
    pub reports: Vec<Value>,
    /// One object per system: requests, errors, retries, waits, and whatever else the
    /// connector reports.
    pub systems: Vec<Value>,
}

const WRITE_FIELDS: [&str; 6] = [
    "created_source",
    "created_target",
    "updated_source",
    "updated_target",
    "deleted_source",
    "deleted_target",
];

fn reports_of(run: &Run, key: &str) -> Vec<Value> {
    run.summary
        .as_ref()
        .and_then(|s| s.get(key))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn number(report: &Value, field: &str) -> u64 {
    report.get(field).and_then(Value::as_u64).unwrap_or(0)
}

/// A run in short, its totals added up from its stored report. Pure.
pub fn summarise(run: &Run) -> RunSummary {
    let reports = reports_of(run, "mappings");
    let sum = |fields: &[&str]| -> u64 {
        reports
            .iter()
            .map(|r| fields.iter().map(|f| number(r, f)).sum::<u64>())
            .sum()
    };
    let stopped = reports
        .iter()
        .filter_map(|r| {
            Some(Stopped {
                mapping: r.get("mapping")?.as_str()?.to_owned(),
                reason: r.get("stopped")?.as_str()?.to_owned(),
            })
        })
        .collect();
    RunSummary {
        id: run.id.to_string(),
        flows: run.flows.clone(),
        mappings: run.mappings.clone(),
        worker: run.worker.clone(),
        trigger: run.trigger.clone(),
        started_at: run.started_at,
        finished_at: run.finished_at,
        outcome: run.outcome,
        seconds: run
            .finished_at
            .map(|end| (end - run.started_at).num_milliseconds() as f64 / 1000.0),
        writes: sum(&WRITE_FIELDS),
        parked: sum(&["parked"]),
        conflicts: sum(&["conflicts"]),
        stopped,
    }
}

/// One run with its reports. Pure.
pub fn detail(run: &Run) -> RunDetail {
    RunDetail {
        run: summarise(run),
        reports: reports_of(run, "mappings"),
        systems: reports_of(run, "systems"),
    }
}

/// The latest `limit` runs, newest first.
pub async fn list(store: &Store, limit: u32) -> Result<Vec<RunSummary>, OpsError> {
    Ok(store
        .recent_runs(limit)
        .await?
        .iter()
        .map(summarise)
        .collect())
}

/// One run with its reports.
pub async fn one(store: &Store, id: &str) -> Result<RunDetail, OpsError> {
    match store.run(&RunId::new(id)).await? {
        Some(run) => Ok(detail(&run)),
        None => Err(OpsError::UnknownRun(id.to_owned())),
    }
}

/// How a mapping is doing, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Its last run went through and nothing waits for a person.
    Ok,
    /// It runs, but records are parked or conflicts held.
    Attention,
    /// Its last run failed or stopped it.
    Failing,
    /// It has not run yet.
    NotRun,
}

/// A mapping's health and the words for it, from its status, its part of its last run's
/// report, and its held conflicts. Pure.
pub fn health(
    status: Option<&MappingStatus>,
    report: Option<&Value>,
    held: u64,
) -> (Health, String) {
    let Some(run) = status.and_then(|s| s.last_run.as_ref()) else {
        return (Health::NotRun, "not run yet".to_owned());
    };
    if let Some(reason) = report
        .and_then(|r| r.get("stopped"))
        .and_then(Value::as_str)
    {
        return (Health::Failing, format!("stopped: {reason}"));
    }
    match run.outcome {
        Some(RunOutcome::Failed) => return (Health::Failing, "its last run failed".to_owned()),
        Some(RunOutcome::CircuitBreaker) => {
            return (
                Health::Failing,
                "the circuit breaker stopped its last run".to_owned(),
            );
        }
        Some(RunOutcome::Cancelled) | Some(RunOutcome::Ok) | None => {}
    }
    let parked = status.map_or(0, |s| s.parked);
    let mut words = Vec::new();
    if parked > 0 {
        words.push(format!("{parked} parked"));
    }
    if held > 0 {
        words.push(format!("{held} held"));
    }
    if words.is_empty() {
        (Health::Ok, "in sync".to_owned())
    } else {
        (Health::Attention, words.join(", "))
    }
}

/// One mapping in the overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappingOverview {
    pub mapping: String,
    pub flow: String,
    pub identity: String,
    pub source: EntityName,
    pub target: EntityName,
    pub health: Health,
    pub health_reason: String,
    /// Linked pairs.
    pub pairs: u64,
    pub parked: u64,
    pub held: u64,
    pub open_intents: u64,
    pub last_run: Option<RunSummary>,
    /// This mapping's part of its last run's report.
    pub last_report: Option<Value>,
}

/// One flow and its mappings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowOverview {
    pub flow: String,
    pub mappings: Vec<MappingOverview>,
}

/// A system's figures from the latest run that used it: every field the run's report has
/// for it (requests, errors, retries, waits, and allowance figures where the connector
/// reports them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemFigures {
    pub system: String,
    pub title: String,
    pub run_id: String,
    pub at: DateTime<Utc>,
    pub figures: Map<String, Value>,
}

/// Everything at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub flows: Vec<FlowOverview>,
    pub systems: Vec<SystemFigures>,
    pub recent_runs: Vec<RunSummary>,
    pub parked: u64,
    pub held: u64,
}

/// Each system's figures from the newest run (of `runs`, newest first) that reports it.
/// Pure.
pub fn latest_systems(runs: &[Run], names: &Names) -> Vec<SystemFigures> {
    let mut found: BTreeMap<String, SystemFigures> = BTreeMap::new();
    for run in runs {
        for report in reports_of(run, "systems") {
            let Some(mut figures) = report.as_object().cloned() else {
                continue;
            };
            let Some(system) = figures
                .remove("system")
                .and_then(|s| s.as_str().map(str::to_owned))
            else {
                continue;
            };
            found
                .entry(system.clone())
                .or_insert_with(|| SystemFigures {
                    title: names.system(&system),
                    system,
                    run_id: run.id.to_string(),
                    at: run.finished_at.unwrap_or(run.started_at),
                    figures,
                });
        }
    }
    found.into_values().collect()
}

/// The part of a run's report about one mapping. Pure.
pub fn report_of(run: &Run, mapping: &str) -> Option<Value> {
    reports_of(run, "mappings")
        .into_iter()
        .find(|r| r.get("mapping").and_then(Value::as_str) == Some(mapping))
}

/// How many runs the overview looks at for system figures and lists.
pub const RECENT: u32 = 20;

/// The overview: every loaded flow and mapping with its health, the systems' figures and the
/// latest runs.
pub async fn overview(store: &Store, names: &Names) -> Result<Overview, OpsError> {
    let statuses: HashMap<String, MappingStatus> = store
        .status()
        .await?
        .into_iter()
        .map(|s| (s.mapping.clone(), s))
        .collect();
    let mut held: HashMap<String, u64> = HashMap::new();
    for conflict in store.open_conflicts(None).await? {
        if conflict.state == ConflictState::Held {
            *held.entry(conflict.mapping).or_default() += 1;
        }
    }
    let runs = store.recent_runs(RECENT).await?;
    let mut flows: BTreeMap<String, Vec<MappingOverview>> = BTreeMap::new();
    for name in names.mapping_names() {
        let Some(m) = names.mapping(name) else {
            continue;
        };
        let status = statuses.get(name);
        let last = status.and_then(|s| s.last_run.as_ref());
        let report = last.and_then(|run| report_of(run, name));
        let held_here = held.get(name).copied().unwrap_or(0);
        let (health, health_reason) = health(status, report.as_ref(), held_here);
        flows
            .entry(m.flow.clone())
            .or_default()
            .push(MappingOverview {
                mapping: name.to_owned(),
                flow: m.flow.clone(),
                identity: m.identity.clone(),
                source: m.source.clone(),
                target: m.target.clone(),
                health,
                health_reason,
                pairs: status.map_or(0, |s| s.pairs),
                parked: status.map_or(0, |s| s.parked),
                held: held_here,
                open_intents: status.map_or(0, |s| s.open_intents),
                last_run: last.map(summarise),
                last_report: report,
            });
    }
    Ok(Overview {
        parked: statuses.values().map(|s| s.parked).sum(),
        held: held.values().sum(),
        systems: latest_systems(&runs, names),
        recent_runs: runs.iter().take(10).map(summarise).collect(),
        flows: flows
            .into_iter()
            .map(|(flow, mappings)| FlowOverview { flow, mappings })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(id: &str, outcome: Option<RunOutcome>, summary: Value) -> Run {
        let started = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .expect("time")
            .with_timezone(&Utc);
        Run {
            id: RunId::new(id),
            flows: vec!["f".into()],
            mappings: vec![],
            worker: None,
            trigger: None,
            started_at: started,
            finished_at: outcome.map(|_| started + chrono::Duration::milliseconds(1500)),
            outcome,
            summary: Some(summary),
        }
    }

    fn status(parked: u64, last_run: Option<Run>) -> MappingStatus {
        MappingStatus {
            mapping: "m".into(),
            pairs: 3,
            parked,
            open_intents: 0,
            last_run,
            cursors: vec![],
        }
    }

    #[test]
    fn a_run_is_summed_up_from_its_report() {
        let r = run(
            "R1",
            Some(RunOutcome::Ok),
            json!({ "mappings": [
                { "mapping": "a", "created_target": 2, "updated_source": 1, "parked": 4, "conflicts": 1, "stopped": null },
                { "mapping": "b", "deleted_target": 1, "stopped": "keap does not answer" }
            ], "systems": [{ "system": "keap", "requests": 9 }] }),
        );
        let s = summarise(&r);
        assert_eq!((s.writes, s.parked, s.conflicts), (4, 4, 1));
        assert_eq!(s.seconds, Some(1.5));
        assert_eq!(
            s.stopped,
            vec![Stopped {
                mapping: "b".into(),
                reason: "keap does not answer".into()
            }]
        );
        let d = detail(&r);
        assert_eq!(d.reports.len(), 2);
        assert_eq!(d.systems[0]["requests"], 9);
        assert_eq!(
            report_of(&r, "b").map(|v| v["deleted_target"].clone()),
            Some(json!(1))
        );
        assert_eq!(report_of(&r, "c"), None);
        // A run that died without a report is still listed.
        let died = Run {
            summary: None,
            ..run("R2", None, Value::Null)
        };
        let s = summarise(&died);
        assert_eq!((s.writes, s.seconds, s.outcome), (0, None, None));
    }

    #[test]
    fn health_says_what_needs_a_person() {
        let ok = run("R", Some(RunOutcome::Ok), json!({}));
        assert_eq!(health(None, None, 0).0, Health::NotRun);
        assert_eq!(
            health(Some(&status(0, None)), None, 0).0,
            Health::NotRun,
            "known to the store but never run"
        );
        assert_eq!(
            health(Some(&status(0, Some(ok.clone()))), None, 0),
            (Health::Ok, "in sync".to_owned())
        );
        assert_eq!(
            health(Some(&status(2, Some(ok.clone()))), None, 1),
            (Health::Attention, "2 parked, 1 held".to_owned())
        );
        let report = json!({ "mapping": "m", "stopped": "circuit breaker: 10 failures in a row" });
        let (h, why) = health(Some(&status(0, Some(ok))), Some(&report), 0);
        assert_eq!(h, Health::Failing);
        assert!(why.contains("circuit breaker"), "{why}");
        let failed = run("R", Some(RunOutcome::Failed), json!({}));
        assert_eq!(
            health(Some(&status(5, Some(failed))), None, 0).0,
            Health::Failing
        );
    }

    #[test]
    fn each_system_shows_its_newest_figures_whatever_fields_they_have() {
        let newer = run(
            "R2",
            Some(RunOutcome::Ok),
            json!({ "systems": [{ "system": "keap", "requests": 5, "allowance_left": 9000 }] }),
        );
        let older = run(
            "R1",
            Some(RunOutcome::Ok),
            json!({ "systems": [
                { "system": "keap", "requests": 50 },
                { "system": "salesforce", "requests": 7 },
                "not an object",
                { "requests": 1 }
            ] }),
        );
        let found = latest_systems(&[newer, older], &Names::default());
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].system, "keap");
        assert_eq!(found[0].run_id, "R2");
        assert_eq!(found[0].figures.get("allowance_left"), Some(&json!(9000)));
        assert_eq!(found[0].figures.get("requests"), Some(&json!(5)));
        assert!(!found[0].figures.contains_key("system"));
        assert_eq!(
            (found[1].system.as_str(), found[1].run_id.as_str()),
            ("salesforce", "R1")
        );
    }
}
