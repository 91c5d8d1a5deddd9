//! The server's HTTP endpoints:
//!
//! | endpoint | answers |
//! |---|---|
//! | `GET /health` | 200 while the process is up |
//! | `GET /ready` | 200 when flows are loaded and the store answers; 503 otherwise or when shutting down |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /status` | the JSON of `tether status --format json`, plus this worker, its loaded flows, leases and the last rejected reload |
//! | `POST /runs` | a run now: all flows, or `?flow=NAME` / `?mapping=NAME` (repeatable); 202, or with `?wait=true` the run's report |
//! | `POST /hooks/{system}` | change notifications ([`crate::serve::hooks`]); 202 and a run of the mappings that read the entity |

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::oneshot;

use crate::serve::hooks::{self, HookError, HookRequest, Notice};
use crate::serve::{RunRequest, Scope, Shared};

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/runs", post(runs))
        .route("/hooks/{system}", post(hook))
        .layer(axum::extract::DefaultBodyLimit::max(hooks::MAX_BODY))
        .with_state(shared)
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

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match shared.store.status().await {
        Ok(statuses) => shared.metrics.observe_store(&statuses),
        Err(e) => tracing::warn!(error = %e, "metrics: the store does not answer"),
    }
    let mut response = shared.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
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
    queue(&shared, scope, "api", wait).await
}

async fn queue(shared: &Shared, scope: Scope, trigger: &'static str, wait: bool) -> Response {
    let (reply, answer) = if wait {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let request = RunRequest {
        scope: scope.clone(),
        trigger,
        reply,
    };
    if !shared.request(request).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match answer {
        None => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "queued": true, "flows": scope.flows, "mappings": scope.mappings })),
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
    let refuse = |e: HookError| {
        shared.metrics.record_webhook(&system, "refused");
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
            shared.metrics.record_webhook(&system, "verified");
            let mut response = (StatusCode::OK, "").into_response();
            if let Ok(value) = HeaderValue::from_str(&secret) {
                response.headers_mut().insert("x-hook-secret", value);
            }
            response
        }
        Ok(Notice::Changed(entities)) => {
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
                shared.metrics.record_webhook(&system, "ignored");
                return (
                    StatusCode::ACCEPTED,
                    axum::Json(
                        json!({ "queued": false, "reason": "no mapping reads that entity" }),
                    ),
                )
                    .into_response();
            }
            shared.metrics.record_webhook(&system, "accepted");
            let scope = Scope {
                flows: Vec::new(),
                mappings,
            };
            queue(&shared, scope, "webhook", false).await
        }
    }
}
