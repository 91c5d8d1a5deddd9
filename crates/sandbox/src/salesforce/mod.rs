//! The Salesforce simulator: OAuth2 client credentials at `POST /services/oauth2/token`
//! (no `expires_in`; sessions expire after the configured time and then get 401
//! `INVALID_SESSION_ID`), and under `/services/data/vNN.0`: SOQL `query`/`queryAll` with
//! `nextRecordsUrl` paging, sObject rows (create 201, update PATCH 204, delete 204 then
//! `ENTITY_IS_DELETED`), sObject Collections (`/composite/sobjects`, at most 200 records,
//! `allOrNone`, per-record `statusCode` errors), `getUpdated`/`getDeleted`, describe, and
//! `Sforce-Limit-Info` on every answer.
//!
//! Objects and fields come from describe-derived tables: `contracts/salesforce-fields.csv`
//! (Contact, Order, OrderItem, Product2, PricebookEntry, Pricebook2, Account; API v64, from
//! the NetCoreForce project, MIT) and `contracts/salesforce-extra-fields.csv` (Opportunity,
//! Quote, QuoteLineItem, written from the object reference). Ids are 18 characters with the
//! real key prefixes and case-safe suffix; read-only and calculated fields (Contact `Name`,
//! Order `OrderNumber`/`TotalAmount`, line totals, Quote totals) are computed here.
//!
//! The simulator is split by concern: `auth` (sessions), `describe` (objects, fields, ids
//! and the describe endpoints), `rules` (checking a write), `writes` (applying it: derived
//! fields, roll-ups, deletes), `render` (records as the API answers them), `sobject` (rows),
//! `replication` (getUpdated/getDeleted), `soql` (the parser) and `query` (evaluating it),
//! `collections` (sObject Collections). This module holds the state, the errors and the
//! routing.

mod auth;
mod collections;
mod describe;
mod query;
mod render;
mod replication;
mod rules;
mod sobject;
mod soql;
mod writes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderName, Method, StatusCode};
use serde_json::{Value, json};

use crate::http::{ApiRequest, ApiResponse, Limiter, Simulator, Window};
use crate::salesforce::describe::{ObjectDef, load_objects, sf_id};
use crate::salesforce::query::QueryCursor;
use crate::store::{Stamp, Store};
use crate::{Backend, FaultKind, Shared};

const SYSTEM: &str = "salesforce";
const API_PREFIX: &str = "/services/data/";
const DEFAULT_VERSION: &str = "v60.0";
const USER_PREFIX: &str = "005";
const NOMINAL_DAILY_LIMIT: u64 = 100_000;
const DAY_MS: i64 = 86_400_000;
const CURSOR_TTL_MS: i64 = 15 * 60 * 1000;
const MAX_COLLECTION: usize = 200;

/// A Salesforce error: top-level answers carry `errorCode`, collection results `statusCode`.
#[derive(Debug, Clone)]
struct SfError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Vec<String>,
}

impl SfError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn with_fields(mut self, fields: Vec<String>) -> Self {
        self.fields = fields;
        self
    }

    fn response(&self) -> ApiResponse {
        ApiResponse::json(
            self.status,
            json!([{"message": self.message, "errorCode": self.code, "fields": self.fields}]),
        )
    }

    fn record_error(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }
}

fn not_found() -> SfError {
    SfError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
    )
}

fn entity_is_deleted() -> SfError {
    SfError::new(
        StatusCode::NOT_FOUND,
        "ENTITY_IS_DELETED",
        "entity is deleted",
    )
}

pub struct Salesforce {
    shared: Arc<Shared>,
    root: String,
    objects: Vec<ObjectDef>,
    user_id: String,
    org_id: String,
    sessions: Mutex<HashMap<String, Stamp>>,
    enforce: Mutex<Limiter>,
    usage: Mutex<Limiter>,
    daily_limit: u64,
    cursors: Mutex<HashMap<String, QueryCursor>>,
    /// When the recycle bin was last emptied (0: never).
    purged: Mutex<Stamp>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Salesforce {
    pub fn new(shared: Arc<Shared>, root: &str, windows: Vec<Window>) -> Self {
        let daily_limit = windows
            .iter()
            .find(|window| window.per_ms == DAY_MS)
            .map_or(NOMINAL_DAILY_LIMIT, |window| window.requests);
        // The org's profile: its optional features and the integration user's field-level
        // security decide which fields exist (see `SalesforceOrg`).
        let mut objects = load_objects();
        for object in &mut objects {
            let name = object.name;
            let org = &shared.options.salesforce_org;
            object.fields.retain(|field| org.has(name, &field.name));
        }
        let simulator = Self {
            shared,
            root: root.to_string(),
            objects,
            user_id: sf_id(USER_PREFIX, 1),
            org_id: sf_id("00D", 1),
            sessions: Mutex::new(HashMap::new()),
            enforce: Mutex::new(Limiter::new(&windows)),
            usage: Mutex::new(Limiter::new(&[Window {
                requests: u64::MAX,
                per_ms: DAY_MS,
            }])),
            daily_limit,
            cursors: Mutex::new(HashMap::new()),
            purged: Mutex::new(0),
        };
        query::declare_lookups(&mut simulator.shared.store(), &simulator.objects);
        simulator.ensure_standard_pricebook();
        simulator
    }

    /// Every org has a standard price book.
    fn ensure_standard_pricebook(&self) {
        let mut store = self.shared.store();
        let exists = store.entity(SYSTEM, "Pricebook2").is_some_and(|books| {
            books
                .records
                .values()
                .any(|book| book.fields.get("IsStandard") == Some(json!(true)))
        });
        if exists {
            return;
        }
        let at = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
            .map(|at| at.timestamp_millis())
            .unwrap_or_default();
        let id = sf_id("01s", store.next_counter("salesforce.id"));
        let fields = json!({"Name": "Standard Price Book", "IsActive": true, "IsStandard": true, "IsArchived": false, "Description": null});
        let books = store.entity_mut(SYSTEM, "Pricebook2");
        let record = books.new_record(id, fields.as_object().cloned().unwrap_or_default(), at);
        books.put(record);
        store.observe(at);
    }

    fn object(&self, name: &str) -> Option<&ObjectDef> {
        self.objects
            .iter()
            .find(|object| object.name.eq_ignore_ascii_case(name))
    }

    fn object_of_id(&self, id: &str) -> Option<&ObjectDef> {
        self.objects
            .iter()
            .find(|object| id.starts_with(object.prefix))
    }

    fn limit_header(&self, response: ApiResponse) -> ApiResponse {
        let used = lock(&self.usage)
            .usage(self.shared.clock.now())
            .first()
            .map_or(0, |usage| usage.used);
        response.with_header(
            HeaderName::from_static("sforce-limit-info"),
            format!("api-usage={used}/{}", self.daily_limit),
        )
    }

    fn route_inner(&self, request: &ApiRequest) -> ApiResponse {
        if request.path == "/services/data" || request.path == "/services/data/" {
            return self.versions();
        }
        let Some(rest) = request.path.strip_prefix(API_PREFIX) else {
            return not_found().response();
        };
        let (version, _) = rest.split_once('/').unwrap_or((rest, ""));
        let supported = version
            .strip_prefix('v')
            .and_then(|number| number.strip_suffix(".0"))
            .and_then(|number| number.parse::<u32>().ok())
            .is_some_and(|number| (20..=64).contains(&number));
        if !supported {
            return not_found().response();
        }
        let Some(segments) = request.segments_after(&format!("{API_PREFIX}{version}")) else {
            return not_found().response();
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let result = match (&request.method, segments.as_slice()) {
            (&Method::GET, ["query"]) => self.query(request, version, false),
            (&Method::GET, ["queryAll"]) => self.query(request, version, true),
            (&Method::GET, ["query" | "queryAll", locator]) => self.query_more(version, locator),
            (&Method::GET, ["sobjects"]) => Ok(self.global_describe(version)),
            (&Method::GET, ["limits"]) => Ok(self.limits()),
            (_, ["composite", "sobjects"]) => self.collection(request, version),
            (&Method::GET, ["composite", "sobjects", object]) => {
                self.collection_retrieve(request, version, object)
            }
            (_, ["sobjects", object, rest @ ..]) => self.sobject(request, version, object, rest),
            _ => Err(not_found()),
        };
        match result {
            Ok(response) => response,
            Err(error) => error.response(),
        }
    }
}

impl Simulator for Salesforce {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    fn handle(&self, request: &ApiRequest) -> ApiResponse {
        if request.path == "/services/oauth2/token" {
            return self.token(request);
        }
        if request.path == "/services/data" || request.path == "/services/data/" {
            return self.versions();
        }
        if let Err(error) = self.authorize(request) {
            return self
                .limit_header(error.response())
                .with_header(axum::http::header::WWW_AUTHENTICATE, "Token");
        }
        let now = self.shared.clock.now();
        if lock(&self.enforce).check(now).is_err() {
            let error = SfError::new(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            );
            return self.limit_header(error.response().throttled());
        }
        let _ = lock(&self.usage).check(now);
        self.limit_header(self.route_inner(request))
    }

    fn fault(&self, kind: FaultKind) -> ApiResponse {
        let error = match kind {
            FaultKind::TooManyRequests => SfError::new(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentPerOrgLongTxn Limit exceeded.",
            ),
            FaultKind::ServerError => SfError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact support: 1234567890-12345 (-1234567890)",
            ),
            FaultKind::Unavailable => SfError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER_UNAVAILABLE",
                "Server is unavailable. Please try again later.",
            ),
            FaultKind::Timeout => return ApiResponse::empty(StatusCode::GATEWAY_TIMEOUT),
            FaultKind::LostResponse => return ApiResponse::empty(StatusCode::BAD_GATEWAY),
        };
        error.response()
    }
}

impl Backend for Salesforce {
    fn entities(&self) -> Vec<&'static str> {
        self.objects.iter().map(|object| object.name).collect()
    }

    fn route(&self, request: &ApiRequest) -> ApiResponse {
        self.route_inner(request)
    }

    fn collection_path(&self, entity: &str) -> String {
        format!("{API_PREFIX}{DEFAULT_VERSION}/sobjects/{entity}")
    }

    fn records(&self, entity: &str) -> Vec<Value> {
        let Some(object) = self.object(entity) else {
            return Vec::new();
        };
        let store = self.shared.store();
        store
            .entity(SYSTEM, object.name)
            .map(|records| {
                records
                    .by_change(false)
                    .into_iter()
                    .map(|record| self.render(&store, DEFAULT_VERSION, object, record, None))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn empty_recycle_bin(&self) -> bool {
        self.purge_recycle_bin();
        true
    }

    fn create_at(
        &self,
        store: &mut Store,
        entity: &str,
        body: Value,
        at: Stamp,
        _check_schema: bool,
    ) -> Result<String, ApiResponse> {
        // No write schema: every field is checked against the describe as it is stored.
        let object = self.object(entity).ok_or_else(|| not_found().response())?;
        let body = match body {
            Value::Object(body) => body,
            _ => serde_json::Map::new(),
        };
        let prepared = self
            .prepare_create(store, object, &body)
            .map_err(|error| error.response())?;
        Ok(self.apply(store, prepared, at))
    }
}
