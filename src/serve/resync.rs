//! `POST /api/resync`: a resync of a mapping or of one record and its counterpart
//! (`tether_engine::ops::resync`), queued like a run and done by the scheduler between runs,
//! one at a time. The body is `{"mapping": M, "record": "SYSTEM:ENTITY:ID" or null,
//! "reset_cursors": bool}`; the answer is 202 with what was queued, or with `?wait=true` the
//! resync's outcome once it is done. Behind the admin check ([`crate::serve::access`]) like
//! `POST /runs`, cross-site posts refused, and counted against the same rate limit.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use tracing::{info, warn};

use tether_engine::ops::resync::{self, ResyncOutcome, ResyncRequest};
use tether_engine::ops::{Names, OpsError, RecordRef};
use tether_engine::sync::control::Cancel;

use crate::serve::{ServeOptions, Shared, limit, lock};

/// Told the outcome of a resync when it is done.
pub type ResyncWaiter = oneshot::Sender<Result<ResyncOutcome, String>>;

/// A resync waiting for the scheduler.
pub struct Job {
    pub request: ResyncRequest,
    pub waiter: Option<ResyncWaiter>,
}

/// The body of `POST /api/resync`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    mapping: String,
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    reset_cursors: bool,
}

/// A request from a body, or why it is not one. Pure.
fn request_of(body: &[u8]) -> Result<ResyncRequest, String> {
    let body: Body = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body is not a resync request ({e}): send {{\"mapping\": M, \"record\": \"SYSTEM:ENTITY:ID\" or null, \"reset_cursors\": false}}"
        )
    })?;
    let record = body
        .record
        .as_deref()
        .map(str::parse::<RecordRef>)
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(ResyncRequest {
        mapping: body.mapping,
        record,
        reset_cursors: body.reset_cursors,
    })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

pub async fn post(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let mut wait = false;
    for (key, value) in params {
        match key.as_str() {
            "wait" => wait = matches!(value.as_str(), "" | "true" | "1" | "yes"),
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter `{other}` (wait)"),
                );
            }
        }
    }
    let request = match request_of(&body) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let names = Names::of(&shared.loaded().project);
    match resync::check(&request, &names) {
        Ok(_) => {}
        Err(e @ OpsError::UnknownMapping(_)) => return error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    }
    if shared.is_shutting_down() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if let Err(wait) = lock(&shared.runs_limit).take(Instant::now()) {
        shared.metrics.record_run_request("api", "rate_limited");
        let seconds = limit::retry_after_seconds(wait);
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many run requests: over the rate limit; retry in {seconds} s"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    let (waiter, answer) = if wait {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let position = {
        let mut queue = lock(&shared.resyncs);
        queue.push_back(Job {
            request: request.clone(),
            waiter,
        });
        queue.len()
    };
    shared.queued.notify_one();
    match answer {
        None => (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "queued": true,
                "resync": request,
                "position": position,
                "message": format!(
                    "resync of {} queued ({} in line); done between runs",
                    request.record.as_ref().map_or_else(|| format!("mapping `{}`", request.mapping), |r| r.to_string()),
                    position
                ),
            })),
        )
            .into_response(),
        Some(rx) => match rx.await {
            Ok(Ok(outcome)) => axum::Json(outcome).into_response(),
            Ok(Err(message)) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
            Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        },
    }
}

/// Does one queued resync with the loaded flows; its waiter gets the outcome.
pub async fn run(shared: &Shared, options: &ServeOptions, cancel: &Cancel, job: Job) {
    let loaded = shared.loaded();
    let names = Names::of(&loaded.project);
    let base = options.run_options(cancel);
    let started = Instant::now();
    let outcome = resync::resync(&loaded.engine, &names, &job.request, base)
        .await
        .map_err(|e| e.to_string());
    match &outcome {
        Ok(done) => {
            let outcome = done
                .report
                .outcome
                .unwrap_or(tether_engine::store::RunOutcome::Ok);
            shared
                .metrics
                .record_run("api", &done.report, outcome, started.elapsed());
            info!(mapping = %job.request.mapping, writes = done.report.writes(), outcome = outcome.as_str(), "resync done");
            crate::serve::alerts::after_run(shared, Ok(&done.report)).await;
        }
        Err(error) => {
            warn!(mapping = %job.request.mapping, %error, "resync failed");
            shared.metrics.record_failed_run("api");
        }
    }
    if let Some(waiter) = job.waiter {
        let _ = waiter.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_names_the_mapping_and_maybe_a_record() {
        let request = request_of(
            br#"{"mapping": "m", "record": "keap:companies:42", "reset_cursors": true}"#,
        )
        .expect("request");
        assert_eq!(request.mapping, "m");
        assert_eq!(
            request.record.map(|r| r.to_string()).as_deref(),
            Some("keap:companies:42")
        );
        assert!(request.reset_cursors);
        let whole = request_of(br#"{"mapping": "m", "record": null}"#).expect("request");
        assert_eq!((whole.record, whole.reset_cursors), (None, false));
        assert!(request_of(br#"{"mapping": "m", "record": "keap"}"#).is_err());
        assert!(request_of(br#"{"mapping": "m", "what": 1}"#).is_err());
        assert!(request_of(b"not json").is_err());
    }
}
