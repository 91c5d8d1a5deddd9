//! The operator's HTTP API under `/api/`, behind the admin access rules ([`crate::serve::access`]):
//! what the web console uses, and what scripts and the command line can use too. Every
//! handler calls a `tether_engine::ops` function and only turns its answer into JSON.
//!
//! | endpoint | answers |
//! |---|---|
//! | `GET /api/overview` | every flow and mapping with health, last run, records linked, parked and held counts; each system's figures from its latest run; the latest runs; anything else `/status` reports (`status`) |
//! | `GET /api/runs?limit=N` | the latest runs in short, newest first (20 by default, at most 200) |
//! | `GET /api/runs/{id}` | one run with its per-mapping and per-system reports |
//! | `GET /api/parked?skipped=true` | parked (or set-aside) records grouped by cause |
//! | `GET /api/parked/records?mapping=M&record=S:E:ID&skipped=true` | parked records one by one with their attempts |
//! | `POST /api/parked/retry` | `{"mapping": M?, "records": ["S:E:ID", ...]?, "run": true}`: try them again; with `run` (the default) a run of their mappings is queued |
//! | `POST /api/parked/skip` | `{"mapping": M?, "records": [...]?}`: set them aside until their source changes |
//! | `GET /api/conflicts?mapping=M` | held, resolved and recent conflicts |
//! | `POST /api/conflicts/{id}/resolve` | `{"take": "source" \| "target" \| "value", "value": V, "run": true}`: a person's choice, written by the next run of the mapping (queued with `run`) |
//! | `GET /api/record?q=S:E:ID` or `?q=EMAIL` | a record (or the records with that match key): identity, counterparts, fields as last synced, parked entries, history |
//!
//! Mutations take a JSON body (`Content-Type: application/json`, which a cross-site form
//! cannot send) and answer JSON with a `message` in words. Errors are `{"error": "..."}`
//! with 400 (bad request), 404 (unknown mapping, run, conflict), 409 (a conflict no longer
//! held), 415 (not JSON) or 503 (the store does not answer).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use tether_engine::ops::parked::{self, RetryPlan, Selection, SkipOutcome};
use tether_engine::ops::{Names, OpsError, RecordRef, conflicts, count_of, record, runs};
use tether_engine::store::Choice;

use crate::serve::{Requested, Scope, Shared};

/// The API's routes (the caller puts them behind the access guard).
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/runs", get(run_list))
        .route("/api/runs/{id}", get(run_one))
        .route("/api/parked", get(parked_groups))
        .route("/api/parked/records", get(parked_records))
        .route("/api/parked/retry", post(parked_retry))
        .route("/api/parked/skip", post(parked_skip))
        .route("/api/conflicts", get(conflict_list))
        .route("/api/conflicts/{id}/resolve", post(conflict_resolve))
        .route("/api/record", get(record_lookup))
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// The status code of an operation's error.
pub(crate) fn status_of(e: &OpsError) -> StatusCode {
    match e {
        OpsError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        OpsError::Connector(_) => StatusCode::BAD_GATEWAY,
        OpsError::BadRecord(_)
        | OpsError::NoSelection
        | OpsError::BadChoice(_)
        | OpsError::NotInMapping { .. } => StatusCode::BAD_REQUEST,
        OpsError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
        OpsError::UnknownMapping(_) | OpsError::UnknownConflict(_) | OpsError::UnknownRun(_) => {
            StatusCode::NOT_FOUND
        }
        OpsError::NotHeld { .. } => StatusCode::CONFLICT,
    }
}

fn failed(e: &OpsError) -> Response {
    error(status_of(e), e.to_string())
}

fn ok(value: impl serde::Serialize) -> Response {
    match serde_json::to_value(value) {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Whether a query flag is on (`?skipped`, `?skipped=true`, `=1`, `=yes`).
pub(crate) fn flag(value: Option<&str>) -> bool {
    matches!(value, Some("" | "true" | "1" | "yes" | "on"))
}

/// A JSON body, refused unless it says it is JSON.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Refused> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send a JSON body with Content-Type: application/json".to_owned(),
        ));
    }
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| {
        Refused(
            StatusCode::BAD_REQUEST,
            format!("the JSON body does not fit: {e}"),
        )
    })
}

/// A body refused: its status and why.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn names(shared: &Shared) -> Names {
    Names::of(&shared.loaded().project)
}

async fn overview(State(shared): State<Arc<Shared>>) -> Response {
    let names = names(&shared);
    let overview = match runs::overview(&shared.store, &names).await {
        Ok(o) => o,
        Err(e) => return failed(&e),
    };
    let mut value = match serde_json::to_value(&overview) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // Whatever else the status report carries (figures added by later versions), without
    // the per-mapping and per-record lists the overview already has in its own shape.
    let mut status = match shared
        .store
        .status_report()
        .await
        .map(|r| serde_json::to_value(&r))
    {
        Ok(Ok(Value::Object(map))) => map,
        _ => serde_json::Map::new(),
    };
    status.remove("mappings");
    status.remove("parked");
    if let Some(object) = value.as_object_mut() {
        object.insert("status".into(), Value::Object(status));
        object.insert(
            "server".into(),
            json!({
                "worker": shared.worker,
                "runs": shared.queue_status(),
                "rejected_reload": shared.last_reload_error(),
            }),
        );
    }
    axum::Json(value).into_response()
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

async fn run_list(State(shared): State<Arc<Shared>>, Query(q): Query<Limit>) -> Response {
    let limit = q.limit.unwrap_or(20).clamp(1, 200);
    match runs::list(&shared.store, limit).await {
        Ok(list) => ok(json!({ "runs": list })),
        Err(e) => failed(&e),
    }
}

async fn run_one(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match runs::one(&shared.store, &id).await {
        Ok(detail) => ok(detail),
        Err(e) => failed(&e),
    }
}

#[derive(Deserialize, Default)]
struct ParkedQuery {
    mapping: Option<String>,
    record: Option<String>,
    skipped: Option<String>,
}

async fn parked_groups(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ParkedQuery>,
) -> Response {
    match parked::overview(&shared.store, &names(&shared), flag(q.skipped.as_deref())).await {
        Ok(o) => ok(o),
        Err(e) => failed(&e),
    }
}

async fn parked_records(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ParkedQuery>,
) -> Response {
    let record = match q
        .record
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(str::parse::<RecordRef>)
    {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => return failed(&e),
    };
    let selection = Selection {
        mapping: q.mapping.filter(|m| !m.is_empty()),
        record,
    };
    match parked::records(
        &shared.store,
        &names(&shared),
        &selection,
        flag(q.skipped.as_deref()),
    )
    .await
    {
        Ok(items) => ok(json!({ "records": items })),
        Err(e) => failed(&e),
    }
}

/// Which parked records a mutation is about: a mapping, records, or both.
#[derive(Deserialize, Default)]
struct Which {
    mapping: Option<String>,
    #[serde(default)]
    records: Vec<String>,
    /// Queue a run of the affected mappings (default true).
    run: Option<bool>,
}

impl Which {
    /// One selection per record, or one for the mapping (or for everything with neither).
    fn selections(&self) -> Result<Vec<Selection>, OpsError> {
        let mapping = self.mapping.clone().filter(|m| !m.is_empty());
        if self.records.is_empty() {
            return Ok(vec![Selection {
                mapping,
                record: None,
            }]);
        }
        self.records
            .iter()
            .map(|r| {
                Ok(Selection {
                    mapping: mapping.clone(),
                    record: Some(r.trim().parse()?),
                })
            })
            .collect()
    }
}

/// Queues a run of `mappings` (coalesced with the pending one); whether it was queued.
fn queue_run(shared: &Shared, mappings: Vec<String>) -> bool {
    if mappings.is_empty() {
        return false;
    }
    let scope = Scope {
        flows: Vec::new(),
        mappings,
    };
    matches!(
        shared.request(scope, "api", false),
        Requested::Accepted { .. }
    )
}

async fn parked_retry(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let which: Which = match json_body(&headers, &body) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let selections = match which.selections() {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    let names = names(&shared);
    let mut plan = RetryPlan::default();
    for selection in &selections {
        match parked::retry(&shared.store, &names, selection).await {
            Ok(p) => {
                plan.records += p.records;
                plan.unskipped += p.unskipped;
                for m in p.mappings {
                    if !plan.mappings.contains(&m) {
                        plan.mappings.push(m);
                    }
                }
            }
            Err(e) => return failed(&e),
        }
    }
    plan.mappings.sort();
    let queued = which.run.unwrap_or(true) && queue_run(&shared, plan.mappings.clone());
    let message = format!(
        "{} to try again{}",
        count_of(plan.records, "parked record", "parked records"),
        if queued {
            format!("; a run of {} is queued", plan.mappings.join(", "))
        } else if plan.records > 0 {
            "; the next run tries them".to_owned()
        } else {
            String::new()
        }
    );
    ok(json!({
        "records": plan.records,
        "unskipped": plan.unskipped,
        "mappings": plan.mappings,
        "queued": queued,
        "message": message,
    }))
}

async fn parked_skip(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let which: Which = match json_body(&headers, &body) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let selections = match which.selections() {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    let loaded = shared.loaded();
    let names = Names::of(&loaded.project);
    let mut outcome = SkipOutcome::default();
    for selection in &selections {
        match parked::skip(&loaded.engine, &names, selection).await {
            Ok(o) => {
                outcome.skipped.extend(o.skipped);
                outcome.gone.extend(o.gone);
                outcome.unknown.extend(o.unknown);
            }
            Err(e) => return failed(&e),
        }
    }
    let mut message = format!(
        "{} set aside until their source changes",
        count_of(outcome.skipped.len(), "record", "records")
    );
    if !outcome.gone.is_empty() {
        message.push_str(&format!(
            "; {} no longer in their system, taken off the list",
            count_of(outcome.gone.len(), "record", "records")
        ));
    }
    let mut value = serde_json::to_value(&outcome).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("message".into(), Value::String(message));
    }
    axum::Json(value).into_response()
}

#[derive(Deserialize)]
struct ConflictQuery {
    mapping: Option<String>,
    recent: Option<u32>,
}

async fn conflict_list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ConflictQuery>,
) -> Response {
    let recent = q.recent.unwrap_or(20).min(200);
    let mapping = q.mapping.filter(|m| !m.is_empty());
    match conflicts::list(&shared.store, &names(&shared), mapping.as_deref(), recent).await {
        Ok(listing) => ok(listing),
        Err(e) => failed(&e),
    }
}

#[derive(Deserialize)]
struct Resolve {
    take: String,
    value: Option<Value>,
    run: Option<bool>,
}

/// A choice from the API's body. Pure.
fn choice_of(resolve: &Resolve) -> Result<Choice, OpsError> {
    match (resolve.take.as_str(), &resolve.value) {
        ("source", _) => Ok(Choice::Source),
        ("target", _) => Ok(Choice::Target),
        ("value", Some(value)) => Ok(Choice::Value(value.clone())),
        (other, _) => Err(OpsError::BadChoice(other.to_owned())),
    }
}

async fn conflict_resolve(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resolve: Resolve = match json_body(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let choice = match choice_of(&resolve) {
        Ok(c) => c,
        Err(e) => return failed(&e),
    };
    let conflict = match conflicts::resolve(&shared.store, &id, choice).await {
        Ok(c) => c,
        Err(e) => return failed(&e),
    };
    let queued = resolve.run.unwrap_or(true) && queue_run(&shared, vec![conflict.mapping.clone()]);
    let message = format!(
        "conflict on `{}` resolved: {}{}",
        conflict.field,
        match &conflict.choice {
            Some(Choice::Source) => "the source's value".to_owned(),
            Some(Choice::Target) => "the target's value".to_owned(),
            Some(Choice::Value(v)) => format!("the value {v}"),
            None => "no choice".to_owned(),
        },
        if queued {
            format!("; a run of {} is queued to write it", conflict.mapping)
        } else {
            "; the next run of its mapping writes it".to_owned()
        }
    );
    ok(json!({ "conflict": conflict, "queued": queued, "message": message }))
}

#[derive(Deserialize)]
struct RecordQuery {
    q: Option<String>,
}

async fn record_lookup(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<RecordQuery>,
) -> Response {
    let Some(text) = q.q.filter(|t| !t.trim().is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "say which record: ?q=SYSTEM:ENTITY:ID or ?q= a match key value such as an email",
        );
    };
    let loaded = shared.loaded();
    let names = Names::of(&loaded.project);
    let rules = record::rule_fields(&loaded.engine);
    match record::lookup(&shared.store, &names, &rules, &text).await {
        Ok(found) => ok(found),
        Err(e) => failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_is_a_side_or_a_value() {
        let r = |take: &str, value: Option<Value>| Resolve {
            take: take.into(),
            value,
            run: None,
        };
        assert_eq!(choice_of(&r("source", None)).ok(), Some(Choice::Source));
        assert_eq!(choice_of(&r("target", None)).ok(), Some(Choice::Target));
        assert_eq!(
            choice_of(&r("value", Some(json!("Acme")))).ok(),
            Some(Choice::Value(json!("Acme")))
        );
        assert!(choice_of(&r("value", None)).is_err(), "a value needs one");
        assert!(choice_of(&r("both", None)).is_err());
    }

    #[test]
    fn a_selection_per_record_or_one_for_the_mapping() {
        let which = Which {
            mapping: Some("m".into()),
            records: vec!["keap:companies:1".into(), " keap:companies:2 ".into()],
            run: None,
        };
        let s = which.selections().expect("valid");
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].record.as_ref().map(|r| r.id.as_str()), Some("2"));
        let bad = Which {
            records: vec!["nope".into()],
            ..Which::default()
        };
        assert!(matches!(bad.selections(), Err(OpsError::BadRecord(_))));
        assert_eq!(Which::default().selections().expect("all").len(), 1);
        assert_eq!(
            status_of(&OpsError::UnknownRun("x".into())),
            StatusCode::NOT_FOUND
        );
        assert!(flag(Some("true")) && flag(Some("")) && !flag(Some("false")) && !flag(None));
    }
}
