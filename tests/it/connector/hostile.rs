//! The connector against APIs that misbehave on purpose or by accident: ids that are not
//! one path segment, records stamped in the future, paging that never ends, long
//! `Retry-After`s and a spent daily allowance. Each mock logs every request it sees, so the
//! tests can say what reached the server and what did not.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tether_engine::connector::{CLOCK_TOLERANCE, Connector, ConnectorError, Cursor};

use super::{FAST, Fault, Log, connect, erp, erp_customer, ids, read_all, serve};

/// A listing that went on for a minute has not ended: fail instead of hanging the suite.
const HANG: Duration = Duration::from_secs(60);

fn json_response(status: StatusCode, body: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_owned(),
    )
        .into_response()
}

/// A system file for a mock at `base` with one entity, `customers`, integer ids, offset
/// paging, and the given extra `list` and `http` settings.
fn yaml(base: &str, pagination: &str, list_extra: &str, http: &str) -> String {
    format!(
        r#"
system: customerp
title: Customerp
base_url: "{base}/api"
auth:
  bearer:
    token: "${{TEST_TOKEN}}"
http: {http}
entities:
  customers:
    id: $.id
    id_type: integer
    fields:
      id: {{ type: id, read_only: true }}
      name: {{ type: string }}
    list:
      path: /customers
      records: $.data
      pagination: {pagination}
{list_extra}
    get: {{ path: "/customers/{{id}}" }}
    update: {{ path: "/customers/{{id}}", method: PATCH }}
    delete: {{ path: "/customers/{{id}}" }}
"#
    )
}

const OFFSET: &str =
    "{ offset: { offset_param: offset, limit_param: limit, size: 100, total: $.total } }";

// ---------------------------------------------------------------------------------------
// 15.3: ids that cannot be one path segment

/// Lists `.`, `..`, `""`, `1e30` and `-` among two good ids, and answers any other
/// request with success, as a careless API would: only the log tells where requests went.
async fn dot_id_server(log: Log) -> String {
    serve(Router::new().fallback(move |method: Method, uri: Uri| {
        let log = log.clone();
        async move {
            log.push(format!("{method} {}", uri.path()), None);
            if uri.path() == "/api/customers" && method == Method::GET {
                return json_response(
                    StatusCode::OK,
                    r#"{"data": [{"id": 1, "name": "one"}, {"id": ".", "name": "dot"},
                        {"id": "..", "name": "dot dot"}, {"id": "", "name": "empty"},
                        {"id": 1e30, "name": "huge"}, {"id": "-", "name": "dash"},
                        {"name": "no id"}, {"id": 2, "name": "two"}], "total": 8}"#,
                );
            }
            if method == Method::DELETE {
                return StatusCode::NO_CONTENT.into_response();
            }
            let id = uri.path().rsplit('/').next().unwrap_or_default().to_owned();
            json_response(
                StatusCode::OK,
                &json!({"id": id.parse::<i64>().ok(), "name": "x"}).to_string(),
            )
        }
    }))
    .await
}

#[tokio::test]
async fn ids_that_cannot_be_one_path_segment_are_malformed_and_never_requested() {
    let log = Log::default();
    let base = dot_id_server(log.clone()).await;
    let connector = connect(&yaml(&base, OFFSET, "", FAST));
    let pages = read_all(connector.changes("customers", None).unwrap())
        .await
        .unwrap();

    assert_eq!(ids(&pages), ["1", "2"]);
    let malformed: Vec<(Option<String>, String)> = pages
        .iter()
        .flat_map(|p| p.malformed.iter())
        .map(|m| (m.id.clone(), m.reason.clone()))
        .collect();
    let malformed_ids: Vec<Option<&str>> = malformed.iter().map(|(id, _)| id.as_deref()).collect();
    assert_eq!(
        malformed_ids,
        [
            Some("."),
            Some(".."),
            Some(""),
            Some("1e+30"),
            Some("-"),
            None
        ]
    );
    assert!(malformed[0].1.contains("dot segment"), "{malformed:?}");
    assert!(malformed[2].1.contains("empty"), "{malformed:?}");
    assert!(malformed[3].1.contains("id_type: integer"), "{malformed:?}");
    assert!(malformed[5].1.contains("no id at `$.id`"), "{malformed:?}");

    // What an engine would do with every id it saw: read, update and delete it. The good
    // ids reach their own paths; the others are refused before anything is sent.
    let mut seen: Vec<String> = ids(&pages);
    seen.extend(malformed.iter().filter_map(|(id, _)| id.clone()));
    for id in &seen {
        let good = id == "1" || id == "2";
        let get = connector.get("customers", id).await;
        let update = connector
            .update("customers", id, json!({"name": "changed"}))
            .await;
        let delete = connector.delete("customers", id).await;
        if good {
            assert!(get.is_ok() && update.is_ok() && delete.is_ok(), "{id}");
        } else {
            for error in [get.err(), update.err(), delete.err()] {
                match error {
                    Some(ConnectorError::InvalidId {
                        system,
                        entity,
                        id: refused,
                        ..
                    }) => {
                        assert_eq!(
                            (system.as_str(), entity.as_str()),
                            ("customerp", "customers")
                        );
                        assert_eq!(&refused, id);
                    }
                    other => panic!("the id {id:?} was not refused: {other:?}"),
                }
            }
        }
    }
    for line in log.lines() {
        let path = line.split_once(' ').map(|(_, p)| p).unwrap_or_default();
        assert!(
            matches!(
                path,
                "/api/customers" | "/api/customers/1" | "/api/customers/2"
            ),
            "a request went elsewhere than a record's own path: {line}"
        );
    }
    assert_eq!(
        log.len(),
        1 + 2 * 3,
        "one listing, then get, PATCH, DELETE per good id"
    );
}

// ---------------------------------------------------------------------------------------
// 15.4: a record stamped in the future

fn stamp(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[tokio::test]
async fn a_record_stamped_ahead_of_the_server_clock_does_not_hide_later_changes() {
    let now = Utc::now();
    let ahead = now + chrono::Duration::hours(20);
    let (connector, state, _, _) = erp(
        vec![
            erp_customer(1, "an hour ago", &stamp(now - chrono::Duration::hours(1))),
            erp_customer(2, "twenty hours ahead", &stamp(ahead)),
        ],
        FAST,
    )
    .await;

    // Both are read (and so synced); the one stamped ahead is reported, and the cursor
    // stays within the server's clock plus the tolerance.
    let pages = read_all(connector.changes("customers", None).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["1", "2"]);
    let reported: Vec<(&str, chrono::DateTime<Utc>)> = pages
        .iter()
        .flat_map(|p| p.ahead.iter())
        .map(|a| (a.id.as_str(), a.modified))
        .collect();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].0, "2");
    assert_eq!(stamp(reported[0].1), stamp(ahead));
    let cursor: Cursor = pages.last().unwrap().cursor.to_string().parse().unwrap();
    let tolerance = chrono::Duration::from_std(CLOCK_TOLERANCE).unwrap();
    let watermark = cursor.watermark().unwrap();
    assert!(
        watermark <= Utc::now() + tolerance,
        "the cursor moved past the server's clock: {watermark}"
    );

    // A customer created after that read, stamped now, is read by the next one; the
    // record stamped ahead is not handed out twice.
    let created = Utc::now();
    state
        .lock()
        .unwrap()
        .records
        .push(erp_customer(3, "created later", &stamp(created)));
    let pages = read_all(connector.changes("customers", Some(&cursor)).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["3"]);
    assert!(pages.iter().all(|p| p.ahead.is_empty()));
}

// ---------------------------------------------------------------------------------------
// 15.7: paging that never ends

#[tokio::test]
async fn a_listing_whose_api_ignores_the_offset_stops_with_an_error() {
    let log = Log::default();
    let base = {
        let log = log.clone();
        serve(Router::new().fallback(move |uri: Uri| {
            let log = log.clone();
            async move {
                log.push(format!("GET {uri}"), None);
                json_response(
                    StatusCode::OK,
                    r#"{"data": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                        "total": 100000000}"#,
                )
            }
        }))
        .await
    };
    let connector = connect(&yaml(&base, OFFSET, "", FAST));
    let read = tokio::time::timeout(
        HANG,
        read_all(connector.changes("customers", None).unwrap()),
    )
    .await
    .expect("the listing never ended");
    match read {
        Err(ConnectorError::EndlessListing {
            system,
            entity,
            pages,
            reason,
        }) => {
            assert_eq!(
                (system.as_str(), entity.as_str()),
                ("customerp", "customers")
            );
            assert_eq!(pages, 1);
            assert!(reason.contains("same records"), "{reason}");
        }
        other => panic!("expected an endless listing error, got {other:?}"),
    }
    assert_eq!(log.len(), 2, "{:?}", log.lines());
}

/// Cursor paging whose next cursor is `cursors[n % len]` on the n-th request, with new
/// records on every page: only the cursors can tell the listing does not end.
async fn cursor_server(log: Log, cursors: &'static [&'static str]) -> String {
    let served = Arc::new(AtomicUsize::new(0));
    serve(Router::new().fallback(move |uri: Uri| {
        let (log, served) = (log.clone(), served.clone());
        async move {
            log.push(format!("GET {uri}"), None);
            let n = served.fetch_add(1, Ordering::SeqCst);
            let cursor = cursors[n % cursors.len()];
            json_response(
                StatusCode::OK,
                &json!({"data": [{"id": 2 * n + 1}, {"id": 2 * n + 2}], "next_cursor": cursor})
                    .to_string(),
            )
        }
    }))
    .await
}

const CURSOR: &str =
    "{ cursor: { cursor_param: cursor, size_param: limit, size: 2, next_cursor: $.next_cursor } }";

#[tokio::test]
async fn a_cursor_sent_back_again_stops_the_listing_with_an_error() {
    for cursors in [&["same"][..], &["a", "b"][..]] {
        let log = Log::default();
        let cursors: &'static [&'static str] = cursors;
        let base = cursor_server(log.clone(), cursors).await;
        let connector = connect(&yaml(&base, CURSOR, "", FAST));
        let read = tokio::time::timeout(
            HANG,
            read_all(connector.changes("customers", None).unwrap()),
        )
        .await
        .expect("the listing never ended");
        match read {
            Err(ConnectorError::EndlessListing {
                system,
                entity,
                reason,
                ..
            }) => {
                assert_eq!(
                    (system.as_str(), entity.as_str()),
                    ("customerp", "customers")
                );
                assert!(reason.contains("cursor"), "{reason}");
            }
            other => panic!("{cursors:?}: expected an endless listing error, got {other:?}"),
        }
        assert_eq!(log.len(), cursors.len() + 1, "{:?}", log.lines());
    }
}

#[tokio::test]
async fn a_listing_stops_at_its_page_bound() {
    let log = Log::default();
    let served = Arc::new(AtomicUsize::new(0));
    let base = {
        let log = log.clone();
        serve(Router::new().fallback(move |uri: Uri| {
            let (log, served) = (log.clone(), served.clone());
            async move {
                log.push(format!("GET {uri}"), None);
                let n = served.fetch_add(1, Ordering::SeqCst);
                json_response(
                    StatusCode::OK,
                    &json!({"data": [{"id": n + 1}], "next_cursor": format!("c{n}")}).to_string(),
                )
            }
        }))
        .await
    };
    let connector = connect(&yaml(&base, CURSOR, "      max_pages: 5", FAST));
    let pages = read_all(connector.list_all("customers").unwrap()).await;
    match pages {
        Err(ConnectorError::EndlessListing { pages, reason, .. }) => {
            assert_eq!(pages, 5);
            assert!(reason.contains("max_pages"), "{reason}");
        }
        other => panic!("expected an endless listing error, got {other:?}"),
    }
    assert_eq!(log.len(), 5);
}

// ---------------------------------------------------------------------------------------
// 15.8: waits the operator cannot see

fn budget(seconds: f64) -> String {
    format!(
        "{{ timeout_seconds: 2, max_retries: 5, retry_delay_ms: 5, max_wait_seconds: {seconds} }}"
    )
}

#[tokio::test]
async fn a_long_retry_after_stops_the_system_for_the_run() {
    let records = vec![erp_customer(1, "one", "2024-05-01T10:00:00Z")];
    let (connector, state, log, _) = erp(records, &budget(1.0)).await;
    state.lock().unwrap().faults = (0..5).map(|_| Fault::Status(429, Some("300"))).collect();

    let error = tokio::time::timeout(HANG, connector.get("customers", "1"))
        .await
        .expect("the run waited for the Retry-After")
        .unwrap_err();
    match &error {
        ConnectorError::WaitBudgetSpent {
            system,
            asked,
            limit,
            ..
        } => {
            assert_eq!(system, "customerp");
            assert_eq!(*asked, Duration::from_secs(300));
            assert_eq!(*limit, Duration::from_secs(1));
        }
        other => panic!("expected the wait budget error, got {other:?}"),
    }
    assert!(error.stops_system() && error.is_retryable() && !error.is_permanent());
    assert!(
        error.to_string().contains("stopped for this run"),
        "{error}"
    );
    assert_eq!(log.len(), 1, "one request, no retry");

    // The rest of the run: nothing more is sent to the system.
    let again = connector.get("customers", "1").await.unwrap_err();
    assert!(
        matches!(again, ConnectorError::WaitBudgetSpent { .. }),
        "{again}"
    );
    assert!(matches!(
        read_all(connector.changes("customers", None).unwrap()).await,
        Err(ConnectorError::WaitBudgetSpent { .. })
    ));
    assert_eq!(log.len(), 1);

    // The next run starts with the whole budget; waits that fit in it are honoured.
    connector.start_run();
    state.lock().unwrap().faults = vec![
        Fault::Status(429, Some("0.4")),
        Fault::Status(429, Some("0.4")),
        Fault::Status(429, Some("0.4")),
    ]
    .into();
    let error = connector.get("customers", "1").await.unwrap_err();
    match error {
        ConnectorError::WaitBudgetSpent { waited, asked, .. } => {
            assert_eq!(asked, Duration::from_millis(400));
            assert!(
                waited > Duration::from_millis(700) && waited <= Duration::from_millis(800),
                "two waits were honoured: {waited:?}"
            );
        }
        other => panic!("expected the wait budget error, got {other:?}"),
    }
    assert_eq!(log.len(), 1 + 3);
    connector.start_run();
    assert!(connector.get("customers", "1").await.unwrap().is_some());
}

/// A Salesforce-like API that answers every request 403 `REQUEST_LIMIT_EXCEEDED` with
/// `message`, `failures` times, then success.
async fn limit_server(log: Log, message: &'static str, failures: usize) -> String {
    let served = Arc::new(AtomicUsize::new(0));
    serve(Router::new().fallback(move |method: Method, uri: Uri| {
        let (log, served) = (log.clone(), served.clone());
        async move {
            log.push(format!("{method} {}", uri.path()), None);
            if served.fetch_add(1, Ordering::SeqCst) < failures {
                return Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .header("content-type", "application/json")
                    .body(Body::from(
                        json!([{"message": message, "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
                            .to_string(),
                    ))
                    .unwrap();
            }
            json_response(StatusCode::OK, r#"{"id": 1, "name": "one"}"#)
        }
    }))
    .await
}

#[tokio::test]
async fn a_spent_daily_allowance_is_asked_once_and_stops_the_system_for_the_run() {
    let log = Log::default();
    let base = limit_server(log.clone(), "TotalRequests Limit exceeded.", usize::MAX).await;
    let connector = connect(&yaml(&base, OFFSET, "", FAST));
    let error = connector.get("customers", "1").await.unwrap_err();
    match &error {
        ConnectorError::AllowanceSpent { context, error } => {
            assert_eq!(context.system, "customerp");
            assert_eq!(error.code.as_deref(), Some("REQUEST_LIMIT_EXCEEDED"));
            assert_eq!(error.message, "TotalRequests Limit exceeded.");
        }
        other => panic!("expected the allowance error, got {other:?}"),
    }
    assert!(error.stops_system() && !error.is_permanent());
    assert!(
        error.to_string().contains("daily request allowance"),
        "{error}"
    );
    assert_eq!(log.len(), 1, "asked once, not retried");
    let again = connector
        .update("customers", "1", json!({"name": "x"}))
        .await
        .unwrap_err();
    assert!(
        matches!(again, ConnectorError::AllowanceSpent { .. }),
        "{again}"
    );
    assert_eq!(log.len(), 1, "nothing more is sent in this run");
}

#[tokio::test]
async fn salesforce_concurrency_limits_are_waited_out() {
    let log = Log::default();
    let base = limit_server(log.clone(), "ConcurrentPerOrgLongTxn Limit exceeded.", 2).await;
    let connector = connect(&yaml(&base, OFFSET, "", FAST));
    let record = connector.get("customers", "1").await.unwrap();
    assert_eq!(
        record.map(|r| r.data["name"].clone()),
        Some(Value::from("one"))
    );
    assert_eq!(log.len(), 3);
    assert!(connector.stats().rate_limit_waits >= 2);
}
