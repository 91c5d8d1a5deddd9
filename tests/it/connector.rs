//! The generic HTTP connector against small loopback mock servers: every auth style,
//! pagination style and incremental read, writes and batches, and the bad days (rate
//! limits, server errors, timeouts, garbled and oversized bodies, links to other hosts).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path as UrlPath, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tether_engine::connector::{
    Connector, ConnectorError, Connectors, Cursor, Deleted, DeletionDiscovery, HttpConnector, Page,
    PageReader,
};
use tether_engine::spec::load::load_text;
use tether_engine::spec::system::SystemFile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod hostile;

const TOKEN: &str = "tok-7f3a9c41";
const API_KEY: &str = "key-51d2e8aa";
const CLIENT_ID: &str = "client-1";
const CLIENT_SECRET: &str = "secret-9b8c7d66";

type Q = Query<HashMap<String, String>>;

fn env(name: &str) -> Option<String> {
    match name {
        "TEST_TOKEN" => Some(TOKEN.to_owned()),
        "TEST_KEY" => Some(API_KEY.to_owned()),
        "TEST_CLIENT_ID" => Some(CLIENT_ID.to_owned()),
        "TEST_CLIENT_SECRET" => Some(CLIENT_SECRET.to_owned()),
        _ => None,
    }
}

fn system(yaml: &str) -> SystemFile {
    let (loaded, diagnostics) = load_text::<SystemFile>(Path::new("test.yaml"), yaml.to_owned());
    match loaded {
        Some(loaded) if diagnostics.is_empty() => loaded.spec,
        _ => panic!("the test system file does not load: {diagnostics:?}"),
    }
}

fn connect(yaml: &str) -> HttpConnector {
    match HttpConnector::with_env(&system(yaml), &env) {
        Ok(connector) => connector,
        Err(error) => panic!("{error}"),
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{address}")
}

async fn read_all(mut reader: Box<dyn PageReader>) -> Result<Vec<Page>, ConnectorError> {
    let mut pages = Vec::new();
    while let Some(page) = reader.next_page().await? {
        pages.push(page);
    }
    Ok(pages)
}

fn ids(pages: &[Page]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.records.iter().map(|r| r.id.clone()))
        .collect()
}

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn num(query: &HashMap<String, String>, name: &str, default: usize) -> usize {
    query
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn window(items: &[Value], offset: usize, limit: usize) -> Vec<Value> {
    items.iter().skip(offset).take(limit).cloned().collect()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// One request a mock saw: method and path with query, and the JSON body.
type Line = (String, Option<Value>);

/// Every request a mock saw.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Line>>>);

impl Log {
    fn push(&self, line: String, body: Option<Value>) {
        self.0.lock().unwrap().push((line, body));
    }
    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(l, _)| l.clone())
            .collect()
    }
    fn bodies(&self) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, b)| b.clone())
            .collect()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

// ---------------------------------------------------------------------------------------
// A Customerp-like mock: bearer token, offset/limit with total, inclusive modified_since,
// PATCH, tombstones, and planned faults.

#[derive(Clone, Debug)]
enum Fault {
    Status(u16, Option<&'static str>),
    Slow(u64),
    Garbled,
    Huge,
}

#[derive(Default)]
struct Erp {
    records: Vec<Value>,
    tombstones: Vec<Value>,
    faults: VecDeque<Fault>,
    /// Where record 7 redirects to.
    elsewhere: Option<String>,
    /// The server clock its `Date` header shows; the HTTP server's own when unset.
    clock: Option<DateTime<Utc>>,
}

/// A response dated by the mock's clock, when it has one.
fn dated(mut response: Response, clock: Option<DateTime<Utc>>) -> Response {
    if let Some(at) = clock {
        let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        response
            .headers_mut()
            .insert(axum::http::header::DATE, date.parse().unwrap());
    }
    response
}

type Shared = Arc<Mutex<Erp>>;

fn erp_customer(id: i64, name: &str, modified: &str) -> Value {
    json!({"id": id, "customer_number": format!("C-{id:06}"), "name": name, "modified_at": modified})
}

fn modified_of(record: &Value) -> DateTime<Utc> {
    t(record["modified_at"]
        .as_str()
        .unwrap_or("1970-01-01T00:00:00Z"))
}

async fn take_fault(state: &Shared) -> Option<Response> {
    let fault = state.lock().unwrap().faults.pop_front();
    match fault? {
        Fault::Status(status, retry_after) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap(),
                axum::Json(
                    json!({"error": {"code": "fault", "message": format!("planned {status}")}}),
                ),
            )
                .into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.parse().unwrap());
            }
            Some(response)
        }
        Fault::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            None
        }
        Fault::Garbled => Some(
            (
                [("content-type", "application/json")],
                "{\"data\": [{\"id\": 1,",
            )
                .into_response(),
        ),
        Fault::Huge => Some(
            (
                [("content-type", "application/json")],
                format!("{{\"data\": [], \"pad\": \"{}\"}}", "x".repeat(10_000)),
            )
                .into_response(),
        ),
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": {"code": "unauthorized", "message": "bad token"}})),
    )
        .into_response()
}

async fn erp_server(state: Shared, log: Log) -> String {
    let list = {
        let (state, log) = (state.clone(), log.clone());
        move |headers: HeaderMap, Query(q): Q, uri: axum::http::Uri| {
            let (state, log) = (state.clone(), log.clone());
            async move {
                log.push(format!("GET {uri}"), None);
                if bearer(&headers).as_deref() != Some(TOKEN) {
                    return unauthorized();
                }
                if let Some(response) = take_fault(&state).await {
                    return response;
                }
                let since = q.get("modified_since").map(|s| t(s));
                let erp = state.lock().unwrap();
                let mut rows: Vec<Value> = erp
                    .records
                    .iter()
                    .filter(|r| since.is_none_or(|s| modified_of(r) >= s))
                    .cloned()
                    .collect();
                rows.sort_by_key(|r| (modified_of(r), r["id"].as_i64()));
                let (offset, limit) = (num(&q, "offset", 0), num(&q, "limit", 100));
                let page = axum::Json(
                    json!({"data": window(&rows, offset, limit), "total": rows.len(),
                    "offset": offset, "limit": limit}),
                )
                .into_response();
                dated(page, erp.clock)
            }
        }
    };
    let create = {
        let (state, log) = (state.clone(), log.clone());
        move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
            let (state, log) = (state.clone(), log.clone());
            async move {
                log.push("POST /api/customers".to_owned(), Some(body.clone()));
                if bearer(&headers).as_deref() != Some(TOKEN) {
                    return unauthorized();
                }
                if let Some(response) = take_fault(&state).await {
                    return response;
                }
                let mut erp = state.lock().unwrap();
                let name = body["name"].as_str().unwrap_or_default().to_owned();
                if name.is_empty() {
                    return (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        axum::Json(json!({"error": {"code": "required", "message": "name is required", "field": "name"}})),
                    )
                        .into_response();
                }
                let id = erp.records.len() as i64 + 1;
                let record = erp_customer(id, &name, "2024-06-01T00:00:00Z");
                erp.records.push(record.clone());
                (StatusCode::CREATED, axum::Json(record)).into_response()
            }
        }
    };
    let one = {
        let (state, log) = (state.clone(), log.clone());
        move |method: axum::http::Method,
              headers: HeaderMap,
              UrlPath(id): UrlPath<String>,
              body: Option<axum::Json<Value>>| {
            let (state, log) = (state.clone(), log.clone());
            async move {
                log.push(
                    format!("{method} /api/customers/{id}"),
                    body.as_ref().map(|b| b.0.clone()),
                );
                if bearer(&headers).as_deref() != Some(TOKEN) {
                    return unauthorized();
                }
                if let Some(response) = take_fault(&state).await {
                    return response;
                }
                if id == "8" {
                    return (
                        StatusCode::MOVED_PERMANENTLY,
                        [("location", "/api/customers/1")],
                    )
                        .into_response();
                }
                let elsewhere = state.lock().unwrap().elsewhere.clone();
                if let (Some(other), "7") = (elsewhere, id.as_str()) {
                    return (StatusCode::FOUND, [("location", format!("{other}/steal"))])
                        .into_response();
                }
                let mut erp = state.lock().unwrap();
                let position = erp
                    .records
                    .iter()
                    .position(|r| r["id"].as_i64().map(|i| i.to_string()) == Some(id.clone()));
                let not_found = || {
                    (
                        StatusCode::NOT_FOUND,
                        axum::Json(
                            json!({"error": {"code": "not_found", "message": "no such customer"}}),
                        ),
                    )
                        .into_response()
                };
                let Some(position) = position else {
                    return not_found();
                };
                match method.as_str() {
                    "GET" => axum::Json(erp.records[position].clone()).into_response(),
                    "PATCH" => {
                        if let (Some(Value::Object(changes)), Value::Object(record)) =
                            (body.map(|b| b.0), &mut erp.records[position])
                        {
                            for (k, v) in changes {
                                record.insert(k, v);
                            }
                            record.insert("modified_at".into(), json!("2024-06-02T00:00:00Z"));
                        }
                        axum::Json(erp.records[position].clone()).into_response()
                    }
                    "DELETE" => {
                        erp.records.remove(position);
                        StatusCode::NO_CONTENT.into_response()
                    }
                    _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
                }
            }
        }
    };
    let deleted = {
        let (state, log) = (state.clone(), log.clone());
        move |headers: HeaderMap, Query(q): Q, uri: axum::http::Uri| {
            let (state, log) = (state.clone(), log.clone());
            async move {
                log.push(format!("GET {uri}"), None);
                if bearer(&headers).as_deref() != Some(TOKEN) {
                    return unauthorized();
                }
                let since = q.get("since").map(|s| t(s));
                let erp = state.lock().unwrap();
                let rows: Vec<Value> = erp
                    .tombstones
                    .iter()
                    .filter(|r| r.get("deleted_at").is_some())
                    .filter(|r| {
                        since.is_none_or(|s| t(r["deleted_at"].as_str().unwrap_or_default()) >= s)
                    })
                    .cloned()
                    .collect();
                let (offset, limit) = (num(&q, "offset", 0), num(&q, "limit", 100));
                let page = axum::Json(
                    json!({"data": window(&rows, offset, limit), "total": rows.len(),
                    "offset": offset, "limit": limit}),
                )
                .into_response();
                dated(page, erp.clock)
            }
        }
    };
    let router = Router::new()
        .route("/api/customers", get(list).post(create))
        .route(
            "/api/customers/{id}",
            get(one.clone()).patch(one.clone()).delete(one),
        )
        .route("/api/deleted", get(deleted));
    serve(router).await
}

fn erp_yaml(base: &str, http: &str) -> String {
    r#"
system: customerp
title: Customerp
base_url: "BASE/api"
auth:
  bearer:
    token: "${TEST_TOKEN}"
http: HTTP
errors:
  message: $.error.message
  code: $.error.code
  field: $.error.field
entities:
  customers:
    id: $.id
    id_type: integer
    modified: $.modified_at
    fields:
      id: { type: id, read_only: true }
      customer_number: { type: string, read_only: true }
      name: { type: string, required: true }
      modified_at: { type: datetime, read_only: true }
    list:
      path: /customers
      records: $.data
      pagination:
        offset: { offset_param: offset, limit_param: limit, size: 2, total: $.total }
      incremental:
        modified_since: { param: modified_since, inclusive: true }
      lookback_seconds: 10
    get: { path: "/customers/{id}" }
    create: { path: /customers }
    update: { path: "/customers/{id}", method: PATCH }
    delete: { path: "/customers/{id}" }
    deletes:
      tombstones:
        path: /deleted
        query: { entity: customers }
        since_param: since
        records: $.data
        id: $.id
        deleted_at: $.deleted_at
        pagination:
          offset: { offset_param: offset, limit_param: limit, size: 2, total: $.total }
"#
    .replace("BASE", base)
    .replace("HTTP", http)
}

const FAST: &str = "{ timeout_seconds: 2, max_retries: 3, retry_delay_ms: 5 }";

async fn erp(records: Vec<Value>, http: &str) -> (HttpConnector, Shared, Log, String) {
    let state: Shared = Arc::new(Mutex::new(Erp {
        records,
        ..Erp::default()
    }));
    let log = Log::default();
    let base = erp_server(state.clone(), log.clone()).await;
    (connect(&erp_yaml(&base, http)), state, log, base)
}

fn five_records() -> Vec<Value> {
    (1..=5)
        .map(|i| erp_customer(i, &format!("c{i}"), &format!("2024-05-01T10:00:0{i}Z")))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Incremental reads and cursors

#[tokio::test]
async fn modified_since_reads_resume_from_the_cursor_with_a_lookback() {
    let (connector, state, log, _) = erp(five_records(), FAST).await;
    let pages = read_all(connector.changes("customers", None).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["1", "2", "3", "4", "5"]);
    assert_eq!(pages.len(), 3);
    assert!(pages.iter().rev().skip(1).all(|p| !p.last) && pages[2].last);
    assert!(!log.lines()[0].contains("modified_since"));
    let cursor = pages[2].cursor.clone();
    assert_eq!(cursor.watermark(), Some(t("2024-05-01T10:00:05Z")));

    // The store keeps the cursor as a string.
    let cursor: Cursor = cursor.to_string().parse().unwrap();

    // A record committed late with an older stamp, and a new version of record 1.
    {
        let mut erp = state.lock().unwrap();
        erp.records
            .push(erp_customer(6, "late", "2024-05-01T10:00:00Z"));
        erp.records[0] = erp_customer(1, "c1 renamed", "2024-05-01T10:00:09Z");
    }
    let before = log.len();
    let pages = read_all(connector.changes("customers", Some(&cursor)).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["6", "1"]);
    assert_eq!(
        pages.last().unwrap().records.len() + pages[0].records.len(),
        2
    );
    let asked = &log.lines()[before];
    assert!(
        asked.contains("modified_since=2024-05-01T09%3A59%3A55.000Z"),
        "{asked}"
    );
    assert_eq!(
        pages.last().unwrap().cursor.watermark(),
        Some(t("2024-05-01T10:00:09Z"))
    );

    // Nothing changed: nothing is handed out again.
    let cursor = pages.last().unwrap().cursor.clone();
    let pages = read_all(connector.changes("customers", Some(&cursor)).unwrap())
        .await
        .unwrap();
    assert!(ids(&pages).is_empty());
    assert_eq!(pages.last().unwrap().cursor.watermark(), cursor.watermark());
}

#[tokio::test]
async fn equal_timestamps_across_a_page_boundary_survive_a_crash() {
    let records: Vec<Value> = (1..=5)
        .map(|i| erp_customer(i, "same", "2024-05-01T10:00:00Z"))
        .collect();
    let (connector, _, _, _) = erp(records, FAST).await;

    // Read one page, store its cursor, and "crash".
    let mut reader = connector.changes("customers", None).unwrap();
    let first = reader.next_page().await.unwrap().unwrap();
    assert_eq!(first.records.len(), 2);
    drop(reader);
    let stored = first.cursor.to_string();

    // Resume: the rest comes exactly once.
    let cursor: Cursor = stored.parse().unwrap();
    let rest = read_all(connector.changes("customers", Some(&cursor)).unwrap())
        .await
        .unwrap();
    let mut all: Vec<String> = first.records.iter().map(|r| r.id.clone()).collect();
    all.extend(ids(&rest));
    assert_eq!(all, ["1", "2", "3", "4", "5"]);

    // An uninterrupted read hands out each record once too.
    let pages = read_all(connector.changes("customers", None).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["1", "2", "3", "4", "5"]);
}

#[tokio::test]
async fn tombstones_are_read_from_their_own_cursor() {
    let (connector, state, log, _) = erp(Vec::new(), FAST).await;
    state.lock().unwrap().tombstones = vec![
        json!({"id": 10, "deleted_at": "2024-05-01T10:00:00Z"}),
        json!({"id": 11, "deleted_at": "2024-05-01T10:00:01Z"}),
    ];
    assert_eq!(
        connector.entity("customers").unwrap().deletions,
        DeletionDiscovery::Feed
    );
    let pages = read_all(connector.deletions("customers", None).unwrap())
        .await
        .unwrap();
    let deleted: Vec<String> = pages
        .iter()
        .flat_map(|p| p.deleted.iter().map(|d| d.id.clone()))
        .collect();
    assert_eq!(deleted, ["10", "11"]);
    assert!(log.lines()[0].contains("entity=customers"));
    let cursor = pages.last().unwrap().cursor.clone();
    assert_eq!(cursor.watermark(), Some(t("2024-05-01T10:00:01Z")));

    state
        .lock()
        .unwrap()
        .tombstones
        .push(json!({"id": 12, "deleted_at": "2024-05-01T10:00:02Z"}));
    let pages = read_all(connector.deletions("customers", Some(&cursor)).unwrap())
        .await
        .unwrap();
    let deleted: Vec<String> = pages
        .iter()
        .flat_map(|p| p.deleted.iter().map(|d| d.id.clone()))
        .collect();
    assert_eq!(deleted, ["12"]);
    assert!(
        log.lines()
            .last()
            .unwrap()
            .contains("since=2024-05-01T09%3A59%3A50.999Z")
    );
}

#[tokio::test]
async fn the_server_date_moves_the_cursor_when_nothing_newer_is_read() {
    let state: Shared = Arc::new(Mutex::new(Erp {
        records: five_records(),
        clock: Some(t("2024-05-01T12:00:00Z")),
        ..Erp::default()
    }));
    let log = Log::default();
    let base = erp_server(state.clone(), log.clone()).await;
    let yaml = erp_yaml(&base, FAST).replace("errors:", "clock: date_header\nerrors:");
    let connector = connect(&yaml);

    // A complete read moves the cursor to when the server answered, past the newest change.
    let pages = read_all(connector.changes("customers", None).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["1", "2", "3", "4", "5"]);
    let cursor: Cursor = pages.last().unwrap().cursor.to_string().parse().unwrap();
    assert_eq!(cursor.watermark(), Some(t("2024-05-01T12:00:00Z")));

    // The next read asks for the lookback before that time, not before the last change.
    state.lock().unwrap().clock = Some(t("2024-05-01T12:10:00Z"));
    let before = log.len();
    let pages = read_all(connector.changes("customers", Some(&cursor)).unwrap())
        .await
        .unwrap();
    assert!(ids(&pages).is_empty());
    assert!(
        log.lines()[before].contains("modified_since=2024-05-01T11%3A59%3A50.000Z"),
        "{}",
        log.lines()[before]
    );
    let cursor = pages.last().unwrap().cursor.clone();
    assert_eq!(cursor.watermark(), Some(t("2024-05-01T12:10:00Z")));

    // Records stamped just before that read's Date, committed after it answered, and one
    // changed since: none is lost.
    {
        let mut erp = state.lock().unwrap();
        erp.records
            .push(erp_customer(6, "late", "2024-05-01T12:09:59.999Z"));
        erp.records
            .push(erp_customer(7, "at the date", "2024-05-01T12:10:00Z"));
        erp.records[0] = erp_customer(1, "c1 renamed", "2024-05-01T12:15:00Z");
        erp.clock = Some(t("2024-05-01T12:20:00Z"));
    }
    let pages = read_all(connector.changes("customers", Some(&cursor)).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["6", "7", "1"]);
    let cursor = pages.last().unwrap().cursor.clone();
    assert_eq!(cursor.watermark(), Some(t("2024-05-01T12:20:00Z")));

    // A server clock behind the records never moves the cursor back.
    state.lock().unwrap().clock = Some(t("2024-05-01T08:00:00Z"));
    let pages = read_all(connector.changes("customers", Some(&cursor)).unwrap())
        .await
        .unwrap();
    assert!(ids(&pages).is_empty());
    assert_eq!(
        pages.last().unwrap().cursor.watermark(),
        Some(t("2024-05-01T12:20:00Z"))
    );

    // Tombstones move the same way.
    {
        let mut erp = state.lock().unwrap();
        erp.tombstones = vec![json!({"id": 10, "deleted_at": "2024-05-01T12:00:00Z"})];
        erp.clock = Some(t("2024-05-01T13:00:00Z"));
    }
    let pages = read_all(connector.deletions("customers", None).unwrap())
        .await
        .unwrap();
    assert_eq!(pages.last().unwrap().deleted.len(), 1);
    assert_eq!(
        pages.last().unwrap().cursor.watermark(),
        Some(t("2024-05-01T13:00:00Z"))
    );
}

#[tokio::test]
async fn without_the_clock_setting_the_date_header_is_not_trusted() {
    let state: Shared = Arc::new(Mutex::new(Erp {
        records: five_records(),
        clock: Some(t("2024-05-01T12:00:00Z")),
        ..Erp::default()
    }));
    let base = erp_server(state, Log::default()).await;
    let connector = connect(&erp_yaml(&base, FAST));
    let pages = read_all(connector.changes("customers", None).unwrap())
        .await
        .unwrap();
    assert_eq!(
        pages.last().unwrap().cursor.watermark(),
        Some(t("2024-05-01T10:00:05Z"))
    );
}

// ---------------------------------------------------------------------------------------
// Writes

#[tokio::test]
async fn patch_create_delete_and_get() {
    let (connector, _, log, _) = erp(five_records(), FAST).await;
    let written = connector
        .update("customers", "2", json!({"name": "Renamed"}))
        .await
        .unwrap();
    assert_eq!(written.id, "2");
    assert_eq!(log.bodies().last().unwrap(), &json!({"name": "Renamed"}));
    let record = written.record.unwrap();
    assert_eq!(record.data["name"], "Renamed");
    assert_eq!(record.modified, Some(t("2024-06-02T00:00:00Z")));

    let created = connector
        .create("customers", json!({"name": "New"}))
        .await
        .unwrap();
    assert_eq!(created.id, "6");
    assert_eq!(created.record.unwrap().data["customer_number"], "C-000006");

    let refused = connector
        .create("customers", json!({"name": ""}))
        .await
        .unwrap_err();
    assert!(refused.is_permanent());
    let api = refused.api_error().unwrap();
    assert_eq!(api.status, Some(422));
    assert_eq!(api.code.as_deref(), Some("required"));
    assert_eq!(api.field.as_deref(), Some("name"));
    assert_eq!(api.message, "name is required");
    assert!(
        refused
            .to_string()
            .starts_with("customerp customers: POST http://127.0.0.1:")
    );

    assert_eq!(
        connector.delete("customers", "6").await.unwrap(),
        Deleted::Deleted
    );
    assert_eq!(
        connector.delete("customers", "6").await.unwrap(),
        Deleted::AlreadyGone
    );
    assert!(connector.get("customers", "6").await.unwrap().is_none());
    let one = connector.get("customers", "1").await.unwrap().unwrap();
    assert_eq!(
        (one.id.as_str(), one.data["name"].as_str()),
        ("1", Some("c1"))
    );
    let moved = connector.get("customers", "8").await.unwrap().unwrap();
    assert_eq!(moved.id, "1", "a redirect within the origin is followed");
}

// ---------------------------------------------------------------------------------------
// Bad days

#[tokio::test]
async fn a_429_storm_is_waited_out() {
    let (connector, state, log, _) = erp(five_records(), FAST).await;
    state.lock().unwrap().faults = VecDeque::from(vec![
        Fault::Status(429, Some("0")),
        Fault::Status(429, Some("0")),
        Fault::Status(429, None),
    ]);
    let pages = read_all(connector.changes("customers", None).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["1", "2", "3", "4", "5"]);
    let stats = connector.stats();
    assert_eq!(stats.retries, 3);
    assert!(stats.rate_limit_waits >= 3);
    assert_eq!(log.len(), 6);
}

#[tokio::test]
async fn retry_after_seconds_are_honoured() {
    let (connector, state, _, _) = erp(five_records(), FAST).await;
    state.lock().unwrap().faults = VecDeque::from(vec![Fault::Status(429, Some("1"))]);
    assert!(connector.get("customers", "1").await.unwrap().is_some());
    assert!(connector.stats().rate_limit_wait_ms >= 1000);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let (connector, state, log, _) = erp(five_records(), FAST).await;
    state.lock().unwrap().faults = VecDeque::from(vec![
        Fault::Status(500, None),
        Fault::Status(502, None),
        Fault::Status(503, None),
    ]);
    assert!(connector.get("customers", "1").await.unwrap().is_some());
    assert_eq!(connector.stats().retries, 3);

    state.lock().unwrap().faults = (0..10).map(|_| Fault::Status(500, None)).collect();
    let before = log.len();
    let error = connector.get("customers", "1").await.unwrap_err();
    assert_eq!(error.status(), Some(500));
    assert!(error.is_retryable());
    assert_eq!(log.len() - before, 4, "one try and max_retries retries");
}

#[tokio::test]
async fn a_create_that_may_have_been_applied_is_not_sent_twice() {
    let (connector, state, log, _) = erp(Vec::new(), FAST).await;
    state.lock().unwrap().faults = VecDeque::from(vec![Fault::Status(500, None)]);
    let error = connector
        .create("customers", json!({"name": "X"}))
        .await
        .unwrap_err();
    assert!(error.may_have_applied());
    assert_eq!(log.len(), 1);

    state.lock().unwrap().faults = VecDeque::from(vec![Fault::Status(429, Some("0"))]);
    let created = connector
        .create("customers", json!({"name": "Y"}))
        .await
        .unwrap();
    assert_eq!(created.id, "1");
    assert_eq!(log.len(), 3, "a refused create (429) is sent again");
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retried() {
    let http = "{ timeout_seconds: 0.3, max_retries: 1, retry_delay_ms: 5 }";
    let (connector, state, log, _) = erp(five_records(), http).await;
    state.lock().unwrap().faults = VecDeque::from(vec![Fault::Slow(1500)]);
    assert!(connector.get("customers", "1").await.unwrap().is_some());
    assert_eq!(connector.stats().retries, 1);

    state.lock().unwrap().faults = VecDeque::from(vec![Fault::Slow(1500), Fault::Slow(1500)]);
    let before = log.len();
    let error = connector.get("customers", "1").await.unwrap_err();
    assert!(matches!(error, ConnectorError::Timeout { .. }), "{error}");
    assert!(error.is_retryable());
    let message = error.to_string();
    assert!(
        message.starts_with("customerp customers: GET http://127.0.0.1:"),
        "{message}"
    );
    assert!(message.contains("/api/customers/1"), "{message}");
    assert_eq!(log.len() - before, 2);
}

#[tokio::test]
async fn garbled_json_is_retried_and_a_failed_page_can_be_read_again() {
    let (connector, state, log, _) = erp(five_records(), FAST).await;
    state.lock().unwrap().faults = VecDeque::from(vec![Fault::Garbled]);
    let pages = read_all(connector.changes("customers", None).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["1", "2", "3", "4", "5"]);

    let mut reader = connector.changes("customers", None).unwrap();
    let first = reader.next_page().await.unwrap().unwrap();
    state.lock().unwrap().faults = (0..4).map(|_| Fault::Garbled).collect();
    let before = log.len();
    let error = reader.next_page().await.unwrap_err();
    assert!(matches!(error, ConnectorError::Malformed { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with("customerp customers: GET http://127.0.0.1:"),
        "{message}"
    );
    assert!(
        message.contains("/api/customers?offset=2&limit=2"),
        "{message}"
    );
    assert_eq!(log.len() - before, 4, "bounded retries");

    // The server recovers: the same reader goes on where it failed, nothing is lost.
    let mut rest = Vec::new();
    while let Some(page) = reader.next_page().await.unwrap() {
        rest.push(page);
    }
    let mut all: Vec<String> = first.records.iter().map(|r| r.id.clone()).collect();
    all.extend(ids(&rest));
    assert_eq!(all, ["1", "2", "3", "4", "5"]);
}

#[tokio::test]
async fn oversized_bodies_are_refused_without_retry() {
    let http =
        "{ timeout_seconds: 2, max_retries: 3, retry_delay_ms: 5, max_response_bytes: 2000 }";
    let (connector, state, log, _) = erp(five_records(), http).await;
    state.lock().unwrap().faults = VecDeque::from(vec![Fault::Huge]);
    let error = read_all(connector.changes("customers", None).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ConnectorError::TooLarge { limit: 2000, .. }),
        "{error}"
    );
    assert_eq!(log.len(), 1);
}

#[tokio::test]
async fn a_redirect_to_another_host_is_refused() {
    let other_hits = Arc::new(AtomicUsize::new(0));
    let other = {
        let hits = other_hits.clone();
        serve(Router::new().fallback(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async { "{}" }
        }))
        .await
    };
    let (connector, state, _, _) = erp(five_records(), FAST).await;
    state.lock().unwrap().elsewhere = Some(other);
    let error = connector.get("customers", "7").await.unwrap_err();
    assert!(
        matches!(error, ConnectorError::ForeignOrigin { .. }),
        "{error}"
    );
    assert!(error.is_permanent());
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);
}

/// A server that answers every connection with the same raw bytes.
async fn raw_server(response: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let response = response.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{address}"), hits)
}

#[tokio::test]
async fn truncated_bodies_are_retried_then_reported() {
    let response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\nconnection: close\r\n\r\n{\"data\": [{\"id\": 1, \"na".to_vec();
    let (base, hits) = raw_server(response).await;
    let connector = connect(&erp_yaml(&base, FAST));
    let error = read_all(connector.changes("customers", None).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ConnectorError::Transport { .. } | ConnectorError::Malformed { .. }
        ),
        "{error}"
    );
    assert!(error.is_retryable());
    assert!(
        error
            .to_string()
            .starts_with("customerp customers: GET http://127.0.0.1:")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn chunked_bodies_stop_at_the_size_limit() {
    let mut response =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..10 {
        response.extend_from_slice(b"3e8\r\n");
        response.extend_from_slice(&[b' '; 1000]);
        response.extend_from_slice(b"\r\n");
    }
    response.extend_from_slice(b"0\r\n\r\n");
    let (base, hits) = raw_server(response).await;
    let http =
        "{ timeout_seconds: 2, max_retries: 3, retry_delay_ms: 5, max_response_bytes: 2500 }";
    let connector = connect(&erp_yaml(&base, http));
    let error = connector.get("customers", "1").await.unwrap_err();
    assert!(
        matches!(error, ConnectorError::TooLarge { limit: 2500, .. }),
        "{error}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// Pagination styles

fn items(n: i64) -> Vec<Value> {
    (1..=n)
        .map(|i| json!({"id": i, "name": format!("r{i}")}))
        .collect()
}

async fn pagination_server(log: Log) -> String {
    let five = items(5);
    let four = items(4);
    let logged = move |log: &Log, uri: &axum::http::Uri| log.push(format!("GET {uri}"), None);
    let router = Router::new()
        .route(
            "/api/offset",
            get({
                let (five, log) = (five.clone(), log.clone());
                move |Query(q): Q, uri: axum::http::Uri| {
                    logged(&log, &uri);
                    let page = window(&five, num(&q, "offset", 0), num(&q, "limit", 100));
                    async move { axum::Json(json!({"data": page, "total": 5})) }
                }
            }),
        )
        .route(
            "/api/bare",
            get({
                let four = four.clone();
                move |Query(q): Q| {
                    let page = window(&four, num(&q, "offset", 0), num(&q, "limit", 100));
                    async move { axum::Json(json!({"data": page})) }
                }
            }),
        )
        .route(
            "/api/paged",
            get({
                let five = five.clone();
                move |Query(q): Q| {
                    let (page, size) = (num(&q, "page", 1), num(&q, "per_page", 25));
                    let rows = window(&five, (page - 1) * size, size);
                    async move {
                        axum::Json(json!({"results": rows, "page": page, "per_page": size,
                        "total_pages": 5_usize.div_ceil(size)}))
                    }
                }
            }),
        )
        .route(
            "/api/cursor",
            get({
                let five = five.clone();
                move |Query(q): Q| {
                    let offset: usize = q
                        .get("cursor")
                        .and_then(|c| c.strip_prefix('c')?.parse().ok())
                        .unwrap_or(0);
                    let size = num(&q, "page_size", 50);
                    let rows = window(&five, offset, size);
                    let next = (offset + size < 5).then(|| format!("c{}", offset + size));
                    async move { axum::Json(json!({"items": rows, "next_cursor": next})) }
                }
            }),
        )
        .route(
            "/api/next",
            get({
                let four = four.clone();
                move |Query(q): Q, headers: HeaderMap| {
                    let (offset, limit) = (num(&q, "offset", 0), num(&q, "limit", 1000));
                    let rows = window(&four, offset, limit);
                    let host = headers
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    // Like Keap: `next` is there even on the last, empty page.
                    let next = format!(
                        "http://{host}/api/next/?limit={limit}&offset={}",
                        offset + limit
                    );
                    async move {
                        axum::Json(json!({"contacts": rows, "count": rows.len(), "next": next}))
                    }
                }
            }),
        )
        .route(
            "/api/next/",
            get({
                let four = four.clone();
                move |Query(q): Q, headers: HeaderMap| {
                    let (offset, limit) = (num(&q, "offset", 0), num(&q, "limit", 1000));
                    let rows = window(&four, offset, limit);
                    let host = headers
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let next = format!(
                        "http://{host}/api/next/?limit={limit}&offset={}",
                        offset + limit
                    );
                    async move {
                        axum::Json(json!({"contacts": rows, "count": rows.len(), "next": next}))
                    }
                }
            }),
        )
        .route(
            "/api/all",
            get(move || {
                let mut rows = five.clone();
                rows.push(json!({"name": "no id"}));
                async move { axum::Json(json!({"rows": rows})) }
            }),
        );
    serve(router).await
}

const PAGINATION_YAML: &str = r#"
system: paging
title: Paging
base_url: "BASE/api"
auth: none
entities:
  offset:
    id: $.id
    id_type: integer
    fields: { id: { type: id }, name: { type: string } }
    list:
      path: /offset
      records: $.data
      pagination: { offset: { offset_param: offset, limit_param: limit, size: 2, total: $.total } }
  bare:
    id: $.id
    id_type: integer
    fields: { id: { type: id } }
    list:
      path: /bare
      records: $.data
      pagination: { offset: { offset_param: offset, limit_param: limit, size: 2 } }
  paged:
    id: $.id
    id_type: integer
    fields: { id: { type: id } }
    list:
      path: /paged
      records: $.results
      pagination: { page: { page_param: page, size_param: per_page, size: 2, total_pages: $.total_pages } }
  cursor:
    id: $.id
    id_type: integer
    fields: { id: { type: id } }
    list:
      path: /cursor
      records: $.items
      pagination: { cursor: { cursor_param: cursor, size_param: page_size, size: 2, next_cursor: $.next_cursor } }
  next:
    id: $.id
    id_type: integer
    fields: { id: { type: id } }
    list:
      path: /next
      records: $.contacts
      pagination: { next_url: { next: $.next, size_param: limit, size: 2, stop_on_short_page: true } }
  all:
    id: $.id
    id_type: integer
    fields: { id: { type: id } }
    list:
      path: /all
      records: $.rows
      pagination: none
"#;

#[tokio::test]
async fn every_pagination_style_reads_every_record_once() {
    let log = Log::default();
    let base = pagination_server(log.clone()).await;
    let connector = connect(&PAGINATION_YAML.replace("BASE", &base));
    for (entity, expected, pages) in [
        ("offset", 5, 3),
        ("bare", 4, 3),
        ("paged", 5, 3),
        ("cursor", 5, 3),
        ("next", 4, 3),
        ("all", 5, 1),
    ] {
        let read = read_all(connector.changes(entity, None).unwrap())
            .await
            .unwrap();
        let expected: Vec<String> = (1..=expected).map(|i: i64| i.to_string()).collect();
        assert_eq!(ids(&read), expected, "{entity}");
        assert_eq!(read.len(), pages, "{entity}");
        assert!(read.last().unwrap().last, "{entity}");
        assert!(read.last().unwrap().cursor.is_beginning(), "{entity}");
        assert!(!connector.entity(entity).unwrap().incremental);
    }
    let all = read_all(connector.list_all("all").unwrap()).await.unwrap();
    assert_eq!(all[0].malformed.len(), 1);
    assert_eq!(all[0].malformed[0].reason, "no id at `$.id`");
    assert_eq!(
        log.lines(),
        [
            "GET /api/offset?offset=0&limit=2",
            "GET /api/offset?offset=2&limit=2",
            "GET /api/offset?offset=4&limit=2"
        ]
    );
}

#[tokio::test]
async fn a_next_link_to_another_host_is_refused() {
    let other_log = Log::default();
    let other = {
        let log = other_log.clone();
        serve(Router::new().fallback(move |headers: HeaderMap| {
            log.push(format!("{:?}", headers.get("x-keap-api-key")), None);
            async { axum::Json(json!({"contacts": []})) }
        }))
        .await
    };
    let first_page = json!({"contacts": [{"id": 1}, {"id": 2}], "next": format!("{other}/v1/contacts?offset=2")});
    let base = serve(Router::new().route(
        "/v1/contacts",
        get(move |headers: HeaderMap| {
            let page = first_page.clone();
            async move {
                if headers.get("x-keap-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                axum::Json(page).into_response()
            }
        }),
    ))
    .await;
    let yaml = r#"
system: keap
title: Keap
base_url: "BASE/v1"
auth:
  api_key: { header: X-Keap-API-Key, key: "${TEST_KEY}" }
entities:
  contacts:
    id: $.id
    id_type: integer
    fields: { id: { type: id } }
    list:
      path: /contacts
      records: $.contacts
      pagination: { next_url: { next: $.next, size_param: limit, size: 2, stop_on_short_page: true } }
"#
    .replace("BASE", &base);
    let connector = connect(&yaml);
    let mut reader = connector.changes("contacts", None).unwrap();
    let first = reader.next_page().await.unwrap().unwrap();
    assert_eq!(first.records.len(), 2);
    let error = reader.next_page().await.unwrap_err();
    assert!(
        matches!(error, ConnectorError::ForeignOrigin { .. }),
        "{error}"
    );
    assert!(!error.to_string().contains(API_KEY));
    assert_eq!(other_log.len(), 0, "the other host saw no request");
}

// ---------------------------------------------------------------------------------------
// Auth

#[tokio::test]
async fn unset_credentials_name_the_variable() {
    let yaml =
        erp_yaml("http://127.0.0.1:9", FAST).replace("${TEST_TOKEN}", "${TETHER_TEST_UNSET_TOKEN}");
    let error = HttpConnector::with_env(&system(&yaml), &env).unwrap_err();
    assert!(
        error.to_string().contains("TETHER_TEST_UNSET_TOKEN"),
        "{error}"
    );

    let other = PAGINATION_YAML.replace("BASE", "${TETHER_TEST_UNSET_BASE}");
    let errors =
        Connectors::from_systems_with([&system(&yaml), &system(&other)], &env).unwrap_err();
    assert_eq!(errors.0.len(), 2);
    assert!(errors.to_string().contains("TETHER_TEST_UNSET_BASE"));
}

#[tokio::test]
async fn secrets_never_appear_in_errors() {
    let base = serve(Router::new().route(
        "/api/customers/{id}",
        get(|headers: HeaderMap| async move {
            let token = bearer(&headers).unwrap_or_default();
            (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"error": {"code": "forbidden", "message": format!("token {token} may not read this")}})),
            )
        }),
    ))
    .await;
    let connector = connect(&erp_yaml(&base, FAST));
    let error = connector.get("customers", "1").await.unwrap_err();
    assert_eq!(error.status(), Some(403));
    let message = error.to_string();
    assert!(!message.contains(TOKEN), "{message}");
    assert!(message.contains("token *** may not read this"), "{message}");
}

/// A log sink for one test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

thread_local! {
    /// Where the log lines of this thread go, when a test captures them.
    static SINK: std::cell::RefCell<Option<Captured>> = const { std::cell::RefCell::new(None) };
}

/// Hands each log line to the sink of the thread that logged it.
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        SINK.with(|sink| {
            if let Some(captured) = sink.borrow_mut().as_mut() {
                let _ = captured.write(bytes);
            }
        });
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the log lines of the calling thread (a `#[tokio::test]` runs its requests on its
/// own thread). One global subscriber for the test binary: with a subscriber set only for
/// this thread, a log statement first reached by another test's thread is remembered by
/// tracing as wanted by no one, and its lines are lost here too.
fn capture_logs() -> Captured {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(|| ThreadSink)
            .try_init();
        tracing::callsite::rebuild_interest_cache();
    });
    let captured = Captured::default();
    SINK.with(|sink| *sink.borrow_mut() = Some(captured.clone()));
    captured
}

#[tokio::test]
async fn requests_are_logged_without_secrets() {
    let captured = capture_logs();
    let (connector, state, _, _) = erp(five_records(), FAST).await;
    state.lock().unwrap().faults = VecDeque::from(vec![Fault::Status(500, None)]);
    connector.get("customers", "1").await.unwrap();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("http request"), "{logs}");
    assert!(logs.contains("method=GET"), "{logs}");
    assert!(logs.contains("/api/customers/1"), "{logs}");
    assert!(
        logs.contains("status=500") && logs.contains("status=200"),
        "{logs}"
    );
    assert!(logs.contains("duration_ms="), "{logs}");
    assert!(logs.contains("retrying"), "{logs}");
    assert!(!logs.contains(TOKEN), "{logs}");
}

#[derive(Default)]
struct OAuth {
    fetches: usize,
    valid: Vec<String>,
    expires_in: u64,
    always_refuse: bool,
    refusals: usize,
}

async fn oauth_server(state: Arc<Mutex<OAuth>>) -> String {
    let token = {
        let state = state.clone();
        move |Form(form): Form<HashMap<String, String>>| {
            let state = state.clone();
            async move {
                if form.get("grant_type").map(String::as_str) != Some("client_credentials")
                    || form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
                    || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
                {
                    return (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"error": "invalid_client"})),
                    )
                        .into_response();
                }
                let mut oauth = state.lock().unwrap();
                oauth.fetches += 1;
                let token = format!("crm-token-{}", oauth.fetches);
                oauth.valid.push(token.clone());
                axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": oauth.expires_in}))
                    .into_response()
            }
        }
    };
    let customer = move |headers: HeaderMap| {
        let state = state.clone();
        async move {
            let mut oauth = state.lock().unwrap();
            let known = bearer(&headers).is_some_and(|t| oauth.valid.contains(&t));
            if !known || oauth.always_refuse {
                oauth.refusals += 1;
                return unauthorized();
            }
            axum::Json(
                json!({"id": 1, "companyName": "Acme", "lastModified": "2024-05-01T10:00:00Z"}),
            )
            .into_response()
        }
    };
    serve(
        Router::new()
            .route("/crm/api/oauth/token", post(token))
            .route("/crm/api/customers/{id}", get(customer)),
    )
    .await
}

fn crm_yaml(base: &str) -> String {
    r#"
system: customcrm
title: Custom CRM
base_url: "BASE/crm/api"
auth:
  oauth2_client_credentials:
    token_url: /oauth/token
    client_id: "${TEST_CLIENT_ID}"
    client_secret: "${TEST_CLIENT_SECRET}"
http: { timeout_seconds: 2, max_retries: 2, retry_delay_ms: 5 }
entities:
  customers:
    id: $.id
    id_type: integer
    modified: $.lastModified
    fields: { id: { type: id, read_only: true }, companyName: { type: string } }
    list:
      path: /customers
      records: $.results
      pagination: { page: { page_param: page, size_param: per_page, size: 2, total_pages: $.total_pages } }
    get: { path: "/customers/{id}" }
"#
    .replace("BASE", base)
}

#[tokio::test]
async fn oauth2_tokens_are_cached_and_refreshed_once_on_401() {
    let state = Arc::new(Mutex::new(OAuth {
        expires_in: 3600,
        ..OAuth::default()
    }));
    let connector = connect(&crm_yaml(&oauth_server(state.clone()).await));
    for _ in 0..3 {
        assert!(connector.get("customers", "1").await.unwrap().is_some());
    }
    assert_eq!(state.lock().unwrap().fetches, 1);
    assert_eq!(connector.stats().token_fetches, 1);

    // The server forgets its tokens: one 401, one fresh token, success.
    state.lock().unwrap().valid.clear();
    assert!(connector.get("customers", "1").await.unwrap().is_some());
    assert_eq!(state.lock().unwrap().fetches, 2);
    assert_eq!(state.lock().unwrap().refusals, 1);

    // A 401 with a fresh token too: one refresh, then an authentication error.
    state.lock().unwrap().always_refuse = true;
    let error = connector.get("customers", "1").await.unwrap_err();
    assert!(matches!(error, ConnectorError::Auth { .. }), "{error}");
    assert!(error.is_permanent());
    assert_eq!(state.lock().unwrap().fetches, 3);
    assert_eq!(state.lock().unwrap().refusals, 3);
    let message = error.to_string();
    assert!(
        !message.contains("crm-token") && !message.contains(CLIENT_SECRET),
        "{message}"
    );
}

#[tokio::test]
async fn oauth2_tokens_are_fetched_again_when_they_expire() {
    let state = Arc::new(Mutex::new(OAuth {
        expires_in: 0,
        ..OAuth::default()
    }));
    let connector = connect(&crm_yaml(&oauth_server(state.clone()).await));
    assert!(connector.get("customers", "1").await.unwrap().is_some());
    assert!(connector.get("customers", "1").await.unwrap().is_some());
    let oauth = state.lock().unwrap();
    assert_eq!(oauth.fetches, 2);
    assert_eq!(
        oauth.refusals, 0,
        "an expired token is replaced before it is refused"
    );
}

#[tokio::test]
async fn refused_client_credentials_are_an_auth_error() {
    let state = Arc::new(Mutex::new(OAuth::default()));
    let base = oauth_server(state).await;
    let yaml = crm_yaml(&base).replace("${TEST_CLIENT_SECRET}", "wrong-secret");
    let error = connect(&yaml).get("customers", "1").await.unwrap_err();
    assert!(matches!(error, ConnectorError::Auth { .. }), "{error}");
    assert!(error.to_string().contains("invalid_client"), "{error}");
    assert!(!error.to_string().contains("wrong-secret"), "{error}");
}

// ---------------------------------------------------------------------------------------
// Salesforce: token with instance_url, SOQL, getDeleted, create by id, collections

#[derive(Default)]
struct Org {
    contacts: Vec<Value>,
    /// The rest of a query result, for `nextRecordsUrl`.
    pending: Vec<Value>,
    queries: Vec<String>,
    login_api_calls: usize,
    composite: Vec<(String, Value)>,
    deleted_windows: Vec<(String, String)>,
}

fn sf_contact(id: &str, name: &str, stamp: &str) -> Value {
    json!({"attributes": {"type": "Contact", "url": format!("/services/data/v60.0/sobjects/Contact/{id}")},
           "Id": id, "LastName": name, "SystemModstamp": stamp})
}

fn soql_since(query: &str) -> Option<DateTime<Utc>> {
    let at = query
        .find("SystemModstamp > ")
        .map(|i| i + "SystemModstamp > ".len())
        .or_else(|| {
            query
                .find("SystemModstamp >= ")
                .map(|i| i + "SystemModstamp >= ".len())
        })?;
    let literal: String = query[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    Some(t(&literal))
}

fn soql_limit(query: &str) -> Option<usize> {
    let at = query.find("LIMIT ")? + "LIMIT ".len();
    query[at..].split_whitespace().next()?.parse().ok()
}

async fn salesforce(org: Arc<Mutex<Org>>) -> (String, String) {
    let instance_routes = {
        let query = {
            let org = org.clone();
            move |headers: HeaderMap, Query(q): Q| {
                let org = org.clone();
                async move {
                    if bearer(&headers).as_deref() != Some("sf-access") {
                        return (StatusCode::UNAUTHORIZED, axum::Json(json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]))).into_response();
                    }
                    let text = q.get("q").cloned().unwrap_or_default();
                    let mut org = org.lock().unwrap();
                    org.queries.push(text.clone());
                    let since = soql_since(&text);
                    let strict = text.contains("SystemModstamp > ");
                    let mut rows: Vec<Value> = org
                        .contacts
                        .iter()
                        .filter(|c| {
                            let stamp = t(c["SystemModstamp"]
                                .as_str()
                                .unwrap_or_default()
                                .replace("+0000", "Z")
                                .as_str());
                            since.is_none_or(|s| if strict { stamp > s } else { stamp >= s })
                        })
                        .cloned()
                        .collect();
                    rows.sort_by_key(|c| {
                        (
                            c["SystemModstamp"].as_str().unwrap_or_default().to_owned(),
                            c["Id"].as_str().unwrap_or_default().to_owned(),
                        )
                    });
                    if let Some(limit) = soql_limit(&text) {
                        rows.truncate(limit);
                    }
                    if rows.len() > 2 && soql_limit(&text).is_none() {
                        let rest = rows.split_off(2);
                        org.pending = rest.clone();
                        return axum::Json(
                            json!({"totalSize": rows.len() + rest.len(), "done": false,
                            "nextRecordsUrl": "/services/data/v60.0/query/01g-2", "records": rows}),
                        )
                        .into_response();
                    }
                    axum::Json(json!({"totalSize": rows.len(), "done": true, "records": rows}))
                        .into_response()
                }
            }
        };
        let more = {
            let org = org.clone();
            move || {
                let org = org.clone();
                async move {
                    let rest = std::mem::take(&mut org.lock().unwrap().pending);
                    axum::Json(json!({"done": true, "records": rest}))
                }
            }
        };
        let create = {
            let org = org.clone();
            move |axum::Json(body): axum::Json<Value>| {
                let org = org.clone();
                async move {
                    let mut org = org.lock().unwrap();
                    let id = format!("003N{:014}", org.contacts.len());
                    let name = body["LastName"].as_str().unwrap_or_default();
                    org.contacts
                        .push(sf_contact(&id, name, "2024-05-02T00:00:00.000+0000"));
                    (
                        StatusCode::CREATED,
                        axum::Json(json!({"id": id, "success": true, "errors": []})),
                    )
                }
            }
        };
        let get_one = {
            let org = org.clone();
            move |UrlPath(id): UrlPath<String>| {
                let org = org.clone();
                async move {
                    let org = org.lock().unwrap();
                    match org.contacts.iter().find(|c| c["Id"] == id.as_str()) {
                        Some(contact) => axum::Json(contact.clone()).into_response(),
                        None => (StatusCode::NOT_FOUND, axum::Json(json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]))).into_response(),
                    }
                }
            }
        };
        let composite = {
            let org = org.clone();
            move |method: axum::http::Method, axum::Json(body): axum::Json<Value>| {
                let org = org.clone();
                async move {
                    let mut org = org.lock().unwrap();
                    org.composite.push((method.to_string(), body.clone()));
                    let results: Vec<Value> = body["records"]
                        .as_array()
                        .map(|records| {
                            records
                                .iter()
                                .enumerate()
                                .map(|(i, r)| {
                                    if r["LastName"] == "Duplicate" {
                                        json!({"success": false, "errors": [{"statusCode": "DUPLICATES_DETECTED", "message": "Use one of these records?", "fields": ["Email"]}]})
                                    } else {
                                        let id = r.get("id").and_then(Value::as_str).map(str::to_owned)
                                            .unwrap_or_else(|| format!("003B{:014}", i));
                                        json!({"id": id, "success": true, "errors": []})
                                    }
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    axum::Json(Value::Array(results))
                }
            }
        };
        let deleted = {
            let org = org.clone();
            move |Query(q): Q| {
                let org = org.clone();
                async move {
                    let (start, end) = (
                        q.get("start").cloned().unwrap_or_default(),
                        q.get("end").cloned().unwrap_or_default(),
                    );
                    org.lock()
                        .unwrap()
                        .deleted_windows
                        .push((start.clone(), end.clone()));
                    axum::Json(
                        json!({"deletedRecords": [{"id": "003D00000000000001", "deletedDate": start}],
                        "earliestDateAvailable": start, "latestDateCovered": end}),
                    )
                }
            }
        };
        Router::new()
            .route("/services/data/v60.0/query", get(query))
            .route("/services/data/v60.0/query/01g-2", get(more))
            .route("/services/data/v60.0/sobjects/Contact", post(create))
            .route("/services/data/v60.0/sobjects/Contact/{id}", get(get_one))
            .route(
                "/services/data/v60.0/sobjects/Contact/deleted/",
                get(deleted),
            )
            .route(
                "/services/data/v60.0/composite/sobjects",
                post(composite.clone()).patch(composite),
            )
    };
    let instance = serve(instance_routes).await;
    let login = {
        let instance = instance.clone();
        let org = org.clone();
        serve(
            Router::new()
                .route(
                    "/services/oauth2/token",
                    post(move |Form(form): Form<HashMap<String, String>>| {
                        let instance = instance.clone();
                        async move {
                            if form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET) {
                                return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_client", "error_description": "invalid client credentials"}))).into_response();
                            }
                            axum::Json(json!({"access_token": "sf-access", "instance_url": instance,
                                "id": "https://login.example/id/00D/005", "token_type": "Bearer",
                                "issued_at": "1558553873237", "signature": "x"}))
                            .into_response()
                        }
                    }),
                )
                .fallback(move || {
                    org.lock().unwrap().login_api_calls += 1;
                    async { StatusCode::NOT_FOUND }
                }),
        )
        .await
    };
    (login, instance)
}

fn sf_yaml(login: &str, query: &str, initial: &str) -> String {
    r#"
system: salesforce
title: Salesforce
base_url: "LOGIN"
auth:
  salesforce:
    token_path: /services/oauth2/token
    api_path: /services/data/v60.0
    client_id: "${TEST_CLIENT_ID}"
    client_secret: "${TEST_CLIENT_SECRET}"
http: { timeout_seconds: 2, max_retries: 2, retry_delay_ms: 5 }
errors: { message: "$[0].message", code: "$[0].errorCode", field: "$[0].fields[0]" }
entities:
  contacts:
    object: Contact
    id: $.Id
    id_type: string
    modified: $.SystemModstamp
    fields:
      Id: { type: id, read_only: true }
      LastName: { type: string, required: true }
      SystemModstamp: { type: datetime, read_only: true }
    list:
      path: /query
      records: $.records
      pagination: { next_url: { next: $.nextRecordsUrl, done: $.done, size: 2 } }
      incremental:
        soql:
          path: /query
          query: "QUERY"
          initial_query: "INITIAL"
      lookback_seconds: 10
    get: { path: "/sobjects/Contact/{id}" }
    create: { path: /sobjects/Contact, response: { id: { path: $.id } } }
    update: { path: "/sobjects/Contact/{id}", method: PATCH }
    deletes: { get_deleted: { path: /sobjects/Contact/deleted/ } }
    batch: { style: salesforce_collections, path: /composite/sobjects, size: 2 }
"#
    .replace("LOGIN", login)
    .replace("QUERY", query)
    .replace("INITIAL", initial)
}

#[tokio::test]
async fn salesforce_reads_go_to_the_instance_url_with_soql_paging() {
    let org = Arc::new(Mutex::new(Org {
        contacts: vec![
            sf_contact("003A", "Ada", "2024-05-01T10:00:00.000+0000"),
            sf_contact("003B", "Bo", "2024-05-01T10:00:01.000+0000"),
            sf_contact("003C", "Cy", "2024-05-01T10:00:02.000+0000"),
        ],
        ..Org::default()
    }));
    let (login, _) = salesforce(org.clone()).await;
    let connector = connect(&sf_yaml(
        &login,
        "SELECT {fields} FROM Contact WHERE SystemModstamp > {since} ORDER BY SystemModstamp, Id",
        "SELECT {fields} FROM Contact ORDER BY SystemModstamp, Id",
    ));
    let pages = read_all(connector.changes("contacts", None).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["003A", "003B", "003C"]);
    assert_eq!(pages.len(), 2);
    assert_eq!(
        pages[0].records[0].modified,
        Some(t("2024-05-01T10:00:00Z"))
    );
    let cursor = pages[1].cursor.clone();
    assert_eq!(cursor.watermark(), Some(t("2024-05-01T10:00:02Z")));

    org.lock()
        .unwrap()
        .contacts
        .push(sf_contact("003D", "Di", "2024-05-01T10:00:03.000+0000"));
    let pages = read_all(connector.changes("contacts", Some(&cursor)).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["003D"]);
    let org = org.lock().unwrap();
    assert_eq!(
        org.queries,
        [
            "SELECT Id, LastName, SystemModstamp FROM Contact ORDER BY SystemModstamp, Id",
            "SELECT Id, LastName, SystemModstamp FROM Contact WHERE SystemModstamp > 2024-05-01T09:59:52Z ORDER BY SystemModstamp, Id",
        ]
    );
    assert_eq!(
        org.login_api_calls, 0,
        "API calls never go to the login host"
    );
    assert_eq!(connector.stats().token_fetches, 1);
}

#[tokio::test]
async fn sliced_soql_reads_lose_nothing_when_timestamps_tie() {
    let org = Arc::new(Mutex::new(Org {
        contacts: vec![
            sf_contact("003A", "A", "2024-05-01T10:00:00.000+0000"),
            sf_contact("003B", "B", "2024-05-01T10:00:05.000+0000"),
            sf_contact("003C", "C", "2024-05-01T10:00:05.000+0000"),
            sf_contact("003D", "D", "2024-05-01T10:00:05.000+0000"),
            sf_contact("003E", "E", "2024-05-01T10:00:09.000+0000"),
        ],
        ..Org::default()
    }));
    let (login, _) = salesforce(org.clone()).await;
    let connector = connect(&sf_yaml(
        &login,
        "SELECT {fields} FROM Contact WHERE SystemModstamp >= {since} ORDER BY SystemModstamp, Id LIMIT {limit}",
        "SELECT {fields} FROM Contact ORDER BY SystemModstamp, Id LIMIT {limit}",
    ));
    let pages = read_all(connector.changes("contacts", None).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["003A", "003B", "003C", "003D", "003E"]);
    assert_eq!(
        pages.last().unwrap().cursor.watermark(),
        Some(t("2024-05-01T10:00:09Z"))
    );
    assert!(
        org.lock()
            .unwrap()
            .queries
            .iter()
            .any(|q| q.ends_with("LIMIT 4"))
    );
}

#[tokio::test]
async fn salesforce_creates_read_back_and_batches_report_each_record() {
    let org = Arc::new(Mutex::new(Org::default()));
    let (login, _) = salesforce(org.clone()).await;
    let connector = connect(&sf_yaml(&login, "x {since}", "x"));

    let created = connector
        .create("contacts", json!({"LastName": "Solo"}))
        .await
        .unwrap();
    assert_eq!(created.id, "003N00000000000000");
    let record = created.record.unwrap();
    assert_eq!(record.data["LastName"], "Solo");
    assert_eq!(record.modified, Some(t("2024-05-02T00:00:00Z")));

    let results = connector
        .create_many(
            "contacts",
            vec![
                json!({"LastName": "One"}),
                json!({"LastName": "Duplicate"}),
                json!({"LastName": "Three"}),
            ],
        )
        .await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap().id, "003B00000000000000");
    let refused = results[1].as_ref().unwrap_err();
    assert!(
        matches!(refused, ConnectorError::Rejected { .. }),
        "{refused}"
    );
    assert!(refused.is_permanent());
    let api = refused.api_error().unwrap();
    assert_eq!(api.code.as_deref(), Some("DUPLICATES_DETECTED"));
    assert_eq!(api.field.as_deref(), Some("Email"));
    assert_eq!(api.message, "Use one of these records?");
    assert_eq!(results[2].as_ref().unwrap().id, "003B00000000000000");

    let updated = connector
        .update_many(
            "contacts",
            vec![("003X".into(), json!({"LastName": "Changed"}))],
        )
        .await;
    assert_eq!(updated[0].as_ref().unwrap().id, "003X");

    let org = org.lock().unwrap();
    assert_eq!(
        org.composite.len(),
        3,
        "two create chunks of at most 2, one update"
    );
    assert_eq!(org.composite[0].0, "POST");
    assert_eq!(
        org.composite[0].1,
        json!({"allOrNone": false, "records": [
            {"attributes": {"type": "Contact"}, "LastName": "One"},
            {"attributes": {"type": "Contact"}, "LastName": "Duplicate"}]})
    );
    assert_eq!(org.composite[2].0, "PATCH");
    assert_eq!(
        org.composite[2].1["records"][0],
        json!({"attributes": {"type": "Contact"}, "id": "003X", "LastName": "Changed"})
    );
}

#[tokio::test]
async fn salesforce_deletions_come_in_windows_up_to_now() {
    let org = Arc::new(Mutex::new(Org::default()));
    let (login, _) = salesforce(org.clone()).await;
    let connector = connect(&sf_yaml(&login, "x {since}", "x"));
    let old = Cursor::at(Utc::now() - chrono::Duration::days(20));
    let pages = read_all(connector.deletions("contacts", Some(&old)).unwrap())
        .await
        .unwrap();
    assert_eq!(pages.len(), 2, "20 days take two windows of at most 15");
    assert_eq!(pages[0].deleted[0].id, "003D00000000000001");
    let windows = org.lock().unwrap().deleted_windows.clone();
    assert_eq!(windows[0].1, windows[1].0, "windows are contiguous");
    let covered = pages[1].cursor.watermark().unwrap();
    assert_eq!(
        covered,
        DateTime::parse_from_rfc3339(&windows[1].1)
            .unwrap()
            .with_timezone(&Utc)
    );
}

// ---------------------------------------------------------------------------------------
// Custom Webshop: API key, cursor pages, strict updated_after, soft deletes, PUT

#[derive(Default)]
struct Shop {
    customers: Vec<Value>,
    puts: Vec<Value>,
    asked: Vec<String>,
}

fn shop_customer(id: &str, updated: &str, deleted: bool) -> Value {
    json!({"id": id, "email": format!("{id}@example.com"), "first_name": "Ann", "last_name": "Lee",
           "addresses": [{"type": "billing", "line1": "Main 1", "city": "Oslo", "zip": "0150", "country": "NO"}],
           "marketing_opt_in": false, "created_at": "2024-01-01T00:00:00Z", "updated_at": updated, "deleted": deleted})
}

async fn shop_server(shop: Arc<Mutex<Shop>>) -> String {
    let list = {
        let shop = shop.clone();
        move |headers: HeaderMap, Query(q): Q, uri: axum::http::Uri| {
            let shop = shop.clone();
            async move {
                if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                let mut shop = shop.lock().unwrap();
                shop.asked.push(uri.to_string());
                let after = q.get("updated_after").map(|s| t(s));
                let include_deleted = q.get("include_deleted").map(String::as_str) == Some("true");
                let mut rows: Vec<Value> = shop
                    .customers
                    .iter()
                    .filter(|c| include_deleted || c["deleted"] == false)
                    .filter(|c| {
                        after.is_none_or(|a| t(c["updated_at"].as_str().unwrap_or_default()) > a)
                    })
                    .cloned()
                    .collect();
                rows.sort_by_key(|c| {
                    (
                        c["updated_at"].as_str().unwrap_or_default().to_owned(),
                        c["id"].as_str().unwrap_or_default().to_owned(),
                    )
                });
                let offset: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
                let size = num(&q, "page_size", 50);
                let page = window(&rows, offset, size);
                let next = (offset + size < rows.len()).then(|| (offset + size).to_string());
                axum::Json(json!({"items": page, "next_cursor": next})).into_response()
            }
        }
    };
    let one = move |method: axum::http::Method,
                    UrlPath(id): UrlPath<String>,
                    body: Option<axum::Json<Value>>| {
        let shop = shop.clone();
        async move {
            let mut shop = shop.lock().unwrap();
            let Some(position) = shop.customers.iter().position(|c| c["id"] == id.as_str()) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            if method == axum::http::Method::PUT {
                let body = body.map(|b| b.0).unwrap_or_default();
                shop.puts.push(body.clone());
                let allowed = [
                    "email",
                    "first_name",
                    "last_name",
                    "company",
                    "phone",
                    "addresses",
                    "marketing_opt_in",
                ];
                if body
                    .as_object()
                    .is_none_or(|o| o.keys().any(|k| !allowed.contains(&k.as_str())))
                {
                    return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"error": {"code": "invalid", "message": "unknown field", "field": null}}))).into_response();
                }
                let mut record = body;
                for key in ["id", "created_at", "deleted"] {
                    record[key] = shop.customers[position][key].clone();
                }
                record["updated_at"] = json!("2024-06-01T00:00:00Z");
                shop.customers[position] = record;
            }
            axum::Json(shop.customers[position].clone()).into_response()
        }
    };
    serve(
        Router::new()
            .route("/shop/api/customers", get(list))
            .route("/shop/api/customers/{id}", get(one.clone()).put(one)),
    )
    .await
}

fn shop_yaml(base: &str) -> String {
    r#"
system: customwebshop
title: Custom Webshop
base_url: "BASE/shop/api"
auth:
  api_key: { header: X-Api-Key, key: "${TEST_KEY}" }
http: { timeout_seconds: 2, max_retries: 2, retry_delay_ms: 5 }
entities:
  customers:
    id: $.id
    id_type: string
    modified: $.updated_at
    fields:
      id: { type: id, read_only: true }
      email: { type: email, required: true, unique: true }
      first_name: { type: string, nullable: true }
      last_name: { type: string, nullable: true }
      addresses:
        type: array
        fields:
          type: { type: enum, values: [billing, shipping] }
          line1: { type: string }
          city: { type: string }
          zip: { type: string }
          country: { type: country-code }
      marketing_opt_in: { type: boolean }
      created_at: { type: datetime, read_only: true }
      updated_at: { type: datetime, read_only: true }
      deleted: { type: boolean, read_only: true }
    list:
      path: /customers
      records: $.items
      pagination: { cursor: { cursor_param: cursor, size_param: page_size, size: 2, next_cursor: $.next_cursor } }
      incremental: { modified_since: { param: updated_after, inclusive: false } }
      lookback_seconds: 0
    get: { path: "/customers/{id}" }
    update: { path: "/customers/{id}", method: PUT }
    deletes: { soft_delete: { flag: $.deleted, include_param: include_deleted } }
"#
    .replace("BASE", base)
}

#[tokio::test]
async fn strict_filters_and_soft_deletes() {
    let shop = Arc::new(Mutex::new(Shop {
        customers: vec![
            shop_customer("a", "2024-05-01T10:00:00Z", false),
            shop_customer("b", "2024-05-01T10:00:01Z", false),
            shop_customer("c", "2024-05-01T10:00:01Z", true),
        ],
        ..Shop::default()
    }));
    let connector = connect(&shop_yaml(&shop_server(shop.clone()).await));
    assert_eq!(
        connector.entity("customers").unwrap().deletions,
        DeletionDiscovery::InChanges
    );
    let pages = read_all(connector.changes("customers", None).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["a", "b"]);
    let deleted: Vec<&str> = pages
        .iter()
        .flat_map(|p| p.deleted.iter().map(|d| d.id.as_str()))
        .collect();
    assert_eq!(deleted, ["c"]);
    let cursor = pages.last().unwrap().cursor.clone();
    assert_eq!(cursor.watermark(), Some(t("2024-05-01T10:00:01Z")));

    // Committed late with the watermark's own timestamp: a strict filter must still see it.
    shop.lock()
        .unwrap()
        .customers
        .push(shop_customer("d", "2024-05-01T10:00:01Z", false));
    let pages = read_all(connector.changes("customers", Some(&cursor)).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["d"]);
    assert!(
        pages.iter().all(|p| p.deleted.is_empty()),
        "c was handed out already"
    );
    let asked = shop.lock().unwrap().asked.last().cloned().unwrap();
    assert!(asked.contains("include_deleted=true"), "{asked}");
    assert!(
        asked.contains("updated_after=2024-05-01T10%3A00%3A00.999Z"),
        "{asked}"
    );
}

#[tokio::test]
async fn put_updates_read_merge_and_write_the_whole_record() {
    let shop = Arc::new(Mutex::new(Shop {
        customers: vec![shop_customer("a", "2024-05-01T10:00:00Z", false)],
        ..Shop::default()
    }));
    let connector = connect(&shop_yaml(&shop_server(shop.clone()).await));
    let written = connector
        .update(
            "customers",
            "a",
            json!({"first_name": "Bea", "phone": null}),
        )
        .await
        .unwrap();
    let record = written.record.unwrap();
    assert_eq!(record.data["first_name"], "Bea");
    assert_eq!(record.data["last_name"], "Lee");
    assert_eq!(record.modified, Some(t("2024-06-01T00:00:00Z")));
    let put = shop.lock().unwrap().puts[0].clone();
    assert_eq!(
        put,
        json!({"email": "a@example.com", "first_name": "Bea", "last_name": "Lee",
               "addresses": [{"type": "billing", "line1": "Main 1", "city": "Oslo", "zip": "0150", "country": "NO"}],
               "marketing_opt_in": false, "phone": null})
    );
    let missing = connector
        .update("customers", "zz", json!({"first_name": "X"}))
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(404));
}

// ---------------------------------------------------------------------------------------
// Keap: sync-token product feed, throttle headers

#[tokio::test]
async fn sync_token_feeds_hand_out_changes_and_deletions() {
    let asked = Log::default();
    let base = {
        let asked = asked.clone();
        serve(Router::new().route(
            "/v1/products/sync",
            get(move |Query(q): Q, uri: axum::http::Uri| {
                asked.push(uri.to_string(), None);
                let body = match q.get("sync_token").map(String::as_str) {
                    None => json!({"product_statuses": [
                        {"product": {"id": 1, "product_name": "One"}, "status": "CREATED"},
                        {"product": {"id": 2, "product_name": "Two"}, "status": "CREATED"}],
                        "sync_token": "t1", "next": null}),
                    Some("t1") => json!({"product_statuses": [
                        {"product": {"id": 2}, "status": "DELETED"},
                        {"product": {"id": 3, "product_name": "Three"}, "status": "UPDATED"}],
                        "sync_token": "t2", "next": null}),
                    Some(_) => json!({"product_statuses": [], "sync_token": "t2", "next": null}),
                };
                async move { axum::Json(body) }
            }),
        ))
        .await
    };
    let yaml = r#"
system: keap
title: Keap
base_url: "BASE/v1"
auth: { api_key: { header: X-Keap-API-Key, key: "${TEST_KEY}" } }
entities:
  products:
    id: $.id
    id_type: integer
    fields: { id: { type: id }, product_name: { type: string } }
    list:
      path: /products
      records: $.products
      pagination: { next_url: { next: $.next, size_param: limit, size: 1000, stop_on_short_page: true } }
      incremental:
        sync_token:
          path: /products/sync
          param: sync_token
          token: $.sync_token
          changes: $.product_statuses
          record: $.product
          status: $.status
          deleted_status: DELETED
    deletes: change_feed
"#
    .replace("BASE", &base);
    let connector = connect(&yaml);
    let pages = read_all(connector.changes("products", None).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["1", "2"]);
    let cursor = pages.last().unwrap().cursor.clone();
    assert_eq!(cursor.token(), Some("t1"));
    let pages = read_all(connector.changes("products", Some(&cursor)).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&pages), ["3"]);
    assert_eq!(pages[0].deleted[0].id, "2");
    assert_eq!(pages.last().unwrap().cursor.token(), Some("t2"));
    assert_eq!(
        asked.lines()[1],
        "/v1/products/sync?sync_token=t1&limit=1000"
    );
    assert!(connector.deletions("products", None).is_err());
}

#[tokio::test]
async fn low_throttle_headers_and_the_token_bucket_slow_requests_down() {
    let remaining = Arc::new(AtomicUsize::new(500));
    let base = {
        let remaining = remaining.clone();
        serve(Router::new().route(
            "/v1/contacts/{id}",
            get(move || {
                let left = remaining.load(Ordering::SeqCst).to_string();
                async move {
                    (
                        [("x-keap-product-throttle-available", left)],
                        axum::Json(json!({"id": 1})),
                    )
                }
            }),
        ))
        .await
    };
    let yaml = r#"
system: keap
title: Keap
base_url: "BASE/v1"
auth: { api_key: { header: X-Keap-API-Key, key: "${TEST_KEY}" } }
rate_limit: { requests: 1000, per: second, burst: 100, remaining_headers: [x-keap-product-throttle-available] }
entities:
  contacts:
    id: $.id
    id_type: integer
    fields: { id: { type: id } }
    list: { path: /contacts, records: $.contacts, pagination: none }
    get: { path: "/v1/contacts/{id}" }
"#
    .replace("BASE/v1", &base);
    let connector = connect(&yaml);
    connector.get("contacts", "1").await.unwrap();
    connector.get("contacts", "1").await.unwrap();
    assert_eq!(connector.stats().rate_limit_waits, 0);
    remaining.store(0, Ordering::SeqCst);
    connector.get("contacts", "1").await.unwrap();
    connector.get("contacts", "1").await.unwrap();
    assert!(
        connector.stats().rate_limit_waits >= 1,
        "{:?}",
        connector.stats()
    );

    let bucket = yaml.replace(
        "{ requests: 1000, per: second, burst: 100, remaining_headers: [x-keap-product-throttle-available] }",
        "{ requests: 5, per: second, burst: 1 }",
    );
    remaining.store(500, Ordering::SeqCst);
    let connector = connect(&bucket);
    for _ in 0..4 {
        connector.get("contacts", "1").await.unwrap();
    }
    let stats = connector.stats();
    assert!(stats.rate_limit_waits >= 1, "{stats:?}");
    assert_eq!(stats.requests, 4);
}

// ---------------------------------------------------------------------------------------
// The registry

#[tokio::test]
async fn the_registry_hands_out_one_connector_per_system() {
    let shop = Arc::new(Mutex::new(Shop {
        customers: vec![shop_customer("a", "2024-05-01T10:00:00Z", false)],
        ..Shop::default()
    }));
    let shop_base = shop_server(shop).await;
    let erp_system = system(&erp_yaml("http://127.0.0.1:9", FAST));
    let shop_system = system(&shop_yaml(&shop_base));
    let connectors = Connectors::from_systems_with([&erp_system, &shop_system], &env).unwrap();
    assert_eq!(
        connectors.systems().collect::<Vec<_>>(),
        ["customerp", "customwebshop"]
    );
    let first = connectors.get("customwebshop").unwrap();
    let second = connectors.get("customwebshop").unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    first.get("customers", "a").await.unwrap();
    second.get("customers", "a").await.unwrap();
    assert_eq!(connectors.stats()["customwebshop"].requests, 2);
    assert_eq!(connectors.stats()["customerp"].requests, 0);
    assert!(connectors.get("keap").is_none());
    assert!(matches!(
        first.changes("orders", None).err(),
        Some(ConnectorError::UnknownEntity { .. })
    ));
}
