//! The server's HTTP endpoints:
//!
//! | endpoint | access | answers |
//! |---|---|---|
//! | `GET /health` | open | 200 while the process is up |
//! | `GET /ready` | open | 200 when flows are loaded and the store answers; 503 otherwise or when shutting down |
//! | `GET /metrics` | open | the classic Prometheus text format, or OpenMetrics when `Accept` asks for it |
//! | `GET /status` | admin | the JSON of `tether status --format json`, plus this worker, its loaded flows, leases, the run going on and the pending one, and the last rejected reload |
//! | `POST /runs` | admin | a run now: all flows, or `?flow=NAME` / `?mapping=NAME` (repeatable), coalesced with the pending run; 202, or with `?wait=true` the report of the run that covered it; 429 with `Retry-After` beyond the rate limit |
//! | `POST /api/resync` | admin | a resync of a mapping or one record ([`crate::serve::resync`]); 202, or with `?wait=true` its outcome |
//! | `/api/` | admin | the operator's API ([`crate::serve::api`]) |
//! | `/console` | admin | the web console ([`crate::serve::console`]); its login page and assets are open |
//! | `POST /hooks/{system}` | own verification | change notifications ([`crate::serve::hooks`]); 202 and a run of the mappings that read the entity; 409 for a replayed signed one |
//!
//! "admin" is [`crate::serve::access`]: the bearer token when one is set, and no cross-site
//! mutations.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;

use crate::serve::hooks::{self, HookError, HookRequest, Notice};
use crate::serve::metrics::Format;
use crate::serve::{Requested, Scope, Shared, access, limit, lock};

pub fn router(shared: Arc<Shared>) -> Router {
    let admin = Router::new()
        .route("/status", get(status))
        .route("/runs", post(runs))
        .route("/api/resync", post(crate::serve::resync::post))
        .route("/api", any(reserved))
        .route("/api/{*rest}", any(reserved))
        .route("/console/{*rest}", any(reserved))
        .merge(crate::serve::api::routes())
        .merge(crate::serve::console::pages())
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            access::guard,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/hooks/{system}", post(hook))
        .merge(admin)
        .merge(crate::serve::console::open())
        .layer(axum::extract::DefaultBodyLimit::max(hooks::MAX_BODY))
        .with_state(shared)
}

/// Paths under the console and its API that nothing answers, behind the admin check already.
async fn reserved() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    if shared.is_shutting_down() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match shared.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the state store does not answer: {e}"),
        ),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match shared.store.status().await {
        Ok(statuses) => shared.metrics.observe_store(&statuses),
        Err(e) => tracing::warn!(error = %e, "metrics: the store does not answer"),
    }
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let mut response = shared.metrics.render(format).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let report = match shared.store.status_report().await {
        Ok(report) => report,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let leases = shared.store.leases().await.unwrap_or_default();
    let loaded = shared.loaded();
    let flows: Vec<_> = loaded
        .flows
        .iter()
        .map(|(flow, every)| json!({ "flow": flow, "every_seconds": every.as_secs_f64() }))
        .collect();
    let mut value = match serde_json::to_value(&report) {
        Ok(value) => value,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "server".into(),
            json!({
                "worker": shared.worker,
                "flows": flows,
                "leases": leases,
                "runs": shared.queue_status(),
                "rejected_reload": shared.last_reload_error(),
            }),
        );
    }
    axum::Json(value).into_response()
}

/// Query parameters in order, repeated keys kept (`flow=a&flow=b`).
type Params = Query<Vec<(String, String)>>;

async fn runs(State(shared): State<Arc<Shared>>, Query(params): Params) -> Response {
    let mut scope = Scope::default();
    let mut wait = false;
    for (key, value) in params {
        match key.as_str() {
            "flow" => scope.flows.push(value),
            "mapping" => scope.mappings.push(value),
            "wait" => wait = matches!(value.as_str(), "" | "true" | "1" | "yes"),
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter `{other}` (flow, mapping, wait)"),
                );
            }
        }
    }
    let loaded = shared.loaded();
    for flow in &scope.flows {
        if !loaded.flows.iter().any(|(f, _)| f == flow) {
            return error(StatusCode::NOT_FOUND, format!("no flow `{flow}` is loaded"));
        }
    }
    for mapping in &scope.mappings {
        if !loaded
            .engine
            .mappings()
            .iter()
            .any(|m| &m.name == mapping || format!("{}/{}", m.flow, m.name) == *mapping)
        {
            return error(
                StatusCode::NOT_FOUND,
                format!("no mapping `{mapping}` is loaded"),
            );
        }
    }
    if let Err(wait) = lock(&shared.runs_limit).take(Instant::now()) {
        shared.metrics.record_run_request("api", "rate_limited");
        let seconds = limit::retry_after_seconds(wait);
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many run requests: over the rate limit of POST /runs (--runs-per-second, \
                 --runs-burst); retry in {seconds} s"
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    queue(&shared, scope, "api", wait).await
}

async fn queue(shared: &Shared, scope: Scope, trigger: &'static str, wait: bool) -> Response {
    let (submitted, answer) = match shared.request(scope.clone(), trigger, wait) {
        Requested::ShuttingDown => return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        Requested::Accepted { submitted, report } => (submitted, report),
    };
    match answer {
        None => (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "queued": true,
                "coalesced": submitted != crate::serve::queue::Submitted::Queued,
                "flows": scope.flows,
                "mappings": scope.mappings,
            })),
        )
            .into_response(),
        Some(rx) => match rx.await {
            Ok(Ok(report)) => axum::Json(report).into_response(),
            Ok(Err(message)) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
            Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        },
    }
}

async fn hook(
    State(shared): State<Arc<Shared>>,
    Path(system): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let loaded = shared.loaded();
    // Series only for systems that exist, so that requests cannot make series up.
    let label = if loaded.project.systems.contains_key(&system) {
        system.as_str()
    } else {
        "unknown"
    };
    let refuse = |e: HookError| {
        let result = if matches!(e, HookError::Replay(_)) {
            "replayed"
        } else {
            "refused"
        };
        shared.metrics.record_webhook(label, result);
        tracing::warn!(%system, error = %e, "change notification refused");
        error(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            e.to_string(),
        )
    };
    let Some(spec) = loaded.project.systems.get(&system).map(|s| &s.spec) else {
        return refuse(HookError::NotConfigured(system.clone()));
    };
    let Some(webhooks) = &spec.webhooks else {
        return refuse(HookError::NotConfigured(system.clone()));
    };
    let lookup = shared.lookup().clone();
    let secret = match webhooks.secret.value.resolve_with(|name| lookup(name)) {
        Ok(secret) if !secret.is_empty() => secret,
        Ok(_) => {
            return refuse(HookError::Secret {
                system: system.clone(),
                reason: "it is empty".into(),
            });
        }
        Err(e) => {
            return refuse(HookError::Secret {
                system: system.clone(),
                reason: e.to_string(),
            });
        }
    };
    let token = params
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let request = HookRequest {
        token,
        hook_secret: header("x-hook-secret"),
        timestamp: header("x-tether-timestamp"),
        signature: header("x-tether-signature"),
        body: &body,
        now: chrono::Utc::now().timestamp(),
    };
    match hooks::receive(&system, webhooks, &secret, &request) {
        Err(e) => refuse(e),
        Ok(Notice::Handshake(secret)) => {
            shared.metrics.record_webhook(label, "verified");
            let mut response = (StatusCode::OK, "").into_response();
            if let Ok(value) = HeaderValue::from_str(&secret) {
                response.headers_mut().insert("x-hook-secret", value);
            }
            response
        }
        Ok(Notice::Changed { entities, signed }) => {
            if let Some(signed) = signed
                && let Err(e) = lock(&shared.replays).admit(&system, &signed, request.now)
            {
                return refuse(e);
            }
            let mappings: Vec<String> = loaded
                .engine
                .mappings()
                .iter()
                .filter(|m| {
                    [&m.source, &m.target]
                        .iter()
                        .any(|side| side.system == system && entities.contains(&side.entity))
                })
                .map(|m| m.name.clone())
                .collect();
            if mappings.is_empty() {
                shared.metrics.record_webhook(label, "ignored");
                return (
                    StatusCode::ACCEPTED,
                    axum::Json(
                        json!({ "queued": false, "reason": "no mapping reads that entity" }),
                    ),
                )
                    .into_response();
            }
            shared.metrics.record_webhook(label, "accepted");
            let scope = Scope {
                flows: Vec::new(),
                mappings,
            };
            queue(&shared, scope, "webhook", false).await
        }
    }
}
