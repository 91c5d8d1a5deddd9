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

mod soql;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderName, Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::http::{ApiRequest, ApiResponse, Limiter, Simulator, Window};
use crate::salesforce::soql::{Condition, Literal, Op};
use crate::schema::is_email;
use crate::store::{EntityStore, Record, Stamp, Store, offset_datetime, parse_lenient_datetime};
use crate::{Backend, FaultKind, Shared, credentials};

const SYSTEM: &str = "salesforce";
const API_PREFIX: &str = "/services/data/";
const DEFAULT_VERSION: &str = "v60.0";
const USER_PREFIX: &str = "005";
const NOMINAL_DAILY_LIMIT: u64 = 100_000;
const DAY_MS: i64 = 86_400_000;
const CURSOR_TTL_MS: i64 = 15 * 60 * 1000;
const MAX_COLLECTION: usize = 200;

/// The simulated objects and their key prefixes.
const OBJECTS: [(&str, &str); 10] = [
    ("Account", "001"),
    ("Contact", "003"),
    ("Opportunity", "006"),
    ("Order", "801"),
    ("OrderItem", "802"),
    ("Product2", "01t"),
    ("Pricebook2", "01s"),
    ("PricebookEntry", "01u"),
    ("Quote", "0Q0"),
    ("QuoteLineItem", "0QL"),
];

#[derive(Debug, Clone)]
struct FieldDef {
    name: String,
    label: String,
    kind: String,
    nillable: bool,
    createable: bool,
    updateable: bool,
}

#[derive(Debug, Clone)]
struct ObjectDef {
    name: &'static str,
    prefix: &'static str,
    fields: Vec<FieldDef>,
}

impl ObjectDef {
    fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields
            .iter()
            .find(|field| field.name.eq_ignore_ascii_case(name))
    }
}

fn load_objects() -> Vec<ObjectDef> {
    let mut objects: Vec<ObjectDef> = OBJECTS
        .iter()
        .map(|(name, prefix)| ObjectDef {
            name,
            prefix,
            fields: Vec::new(),
        })
        .collect();
    let tables = [
        include_str!("../../../contracts/salesforce-fields.csv"),
        include_str!("contracts/salesforce-extra-fields.csv"),
    ];
    for line in tables.iter().flat_map(|table| table.lines().skip(1)) {
        let columns: Vec<&str> = line.trim().split(',').collect();
        let [object, name, label, kind, nillable, createable, updateable] = columns.as_slice()
        else {
            continue;
        };
        if let Some(definition) = objects
            .iter_mut()
            .find(|definition| definition.name == *object)
        {
            definition.fields.push(FieldDef {
                name: name.to_string(),
                label: label.to_string(),
                kind: kind.to_string(),
                nillable: *nillable == "True",
                createable: *createable == "True",
                updateable: *updateable == "True",
            });
        }
    }
    objects
}

/// The object a reference field points at.
fn reference_target(object: &str, field: &str) -> Option<&'static str> {
    Some(match field {
        "AccountId" => "Account",
        "ContactId"
        | "ReportsToId"
        | "BillToContactId"
        | "ShipToContactId"
        | "CustomerAuthorizedById" => "Contact",
        "OrderId" | "OriginalOrderId" => "Order",
        "OriginalOrderItemId" => "OrderItem",
        "Product2Id" => "Product2",
        "Pricebook2Id" => "Pricebook2",
        "PricebookEntryId" => "PricebookEntry",
        "QuoteId" | "SyncedQuoteId" => "Quote",
        "OpportunityId" => "Opportunity",
        "ParentId" if object == "Account" => "Account",
        "OwnerId"
        | "CreatedById"
        | "LastModifiedById"
        | "CompanyAuthorizedById"
        | "ActivatedById" => "User",
        _ => return None,
    })
}

const ID_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The three-character suffix that makes a 15-character id case-insensitively unique.
fn id_suffix(id15: &str) -> String {
    const SUFFIX: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    id15.as_bytes()
        .chunks(5)
        .map(|chunk| {
            let flags = chunk
                .iter()
                .enumerate()
                .filter(|(_, byte)| byte.is_ascii_uppercase())
                .fold(0usize, |flags, (index, _)| flags | (1 << index));
            SUFFIX[flags] as char
        })
        .collect()
}

/// An 18-character id: key prefix, pod, sequence number in base 62, suffix.
pub fn sf_id(prefix: &str, number: u64) -> String {
    let mut digits = Vec::new();
    let mut rest = number;
    for _ in 0..10 {
        digits.push(ID_ALPHABET[(rest % 62) as usize]);
        rest /= 62;
    }
    digits.reverse();
    let id15 = format!("{prefix}8d{}", String::from_utf8_lossy(&digits));
    format!("{id15}{}", id_suffix(&id15))
}

/// Accepts a 15- or 18-character id and returns its 18-character form.
fn normalize_id(text: &str) -> Option<String> {
    if !text.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
        return None;
    }
    match text.len() {
        15 => Some(format!("{text}{}", id_suffix(text))),
        18 => {
            let suffix = id_suffix(&text[..15]);
            text[15..]
                .eq_ignore_ascii_case(&suffix)
                .then(|| format!("{}{suffix}", &text[..15]))
        }
        _ => None,
    }
}

fn cents(value: Option<&Value>) -> i64 {
    value
        .and_then(Value::as_f64)
        .map_or(0, |value| (value * 100.0).round() as i64)
}

fn money(cents: i64) -> Value {
    json!(cents as f64 / 100.0)
}

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

/// A validated write, ready to apply.
struct Prepared {
    object: &'static str,
    id: Option<String>,
    fields: Map<String, Value>,
}

struct QueryCursor {
    records: Vec<Value>,
    batch: usize,
    created: Stamp,
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
        let simulator = Self {
            shared,
            root: root.to_string(),
            objects: load_objects(),
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
        };
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
                .any(|book| book.fields.get("IsStandard") == Some(&json!(true)))
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

    // ---- auth ----------------------------------------------------------------------

    fn token(&self, request: &ApiRequest) -> ApiResponse {
        let oauth_error = |error: &str, description: &str| {
            ApiResponse::json(
                StatusCode::BAD_REQUEST,
                json!({"error": error, "error_description": description}),
            )
        };
        if request.method != Method::POST {
            return oauth_error("invalid_request", "must use HTTP POST");
        }
        let form = request.form();
        let field = |name: &str| {
            form.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        if field("grant_type").as_deref() != Some("client_credentials") {
            return oauth_error("unsupported_grant_type", "grant type not supported");
        }
        let (client_id, client_secret) = match (field("client_id"), field("client_secret")) {
            (Some(id), Some(secret)) => (id, secret),
            _ => request.basic_credentials().unwrap_or_default(),
        };
        if client_id != credentials::SALESFORCE_CLIENT_ID {
            return oauth_error("invalid_client_id", "client identifier invalid");
        }
        if client_secret != credentials::SALESFORCE_CLIENT_SECRET {
            return oauth_error("invalid_client", "invalid client credentials");
        }
        let now = self.shared.clock.now();
        let ttl = i64::try_from(self.shared.options.session_ttl.as_millis()).unwrap_or(i64::MAX);
        let token = format!("{}!AQ{}", &self.org_id[..15], self.shared.token(96));
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, expires| *expires > now);
        sessions.insert(token.clone(), now.saturating_add(ttl));
        let signature = self.shared.token(43);
        ApiResponse::json(
            StatusCode::OK,
            json!({
                "access_token": token,
                "signature": format!("{signature}="),
                "scope": "api",
                "instance_url": self.root,
                "id": format!("{}/id/{}/{}", self.root, self.org_id, self.user_id),
                "token_type": "Bearer",
                "issued_at": now.to_string(),
            }),
        )
    }

    fn authorize(&self, request: &ApiRequest) -> Result<(), SfError> {
        let invalid = || {
            SfError::new(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION_ID",
                "Session expired or invalid",
            )
        };
        let token = request.bearer().ok_or_else(invalid)?;
        let expires = lock(&self.sessions)
            .get(token)
            .copied()
            .ok_or_else(invalid)?;
        if expires <= self.shared.clock.now() {
            return Err(invalid());
        }
        Ok(())
    }

    // ---- values and validation -------------------------------------------------------

    fn find_live<'a>(store: &'a Store, object: &str, id: &str) -> Option<&'a Record> {
        store
            .entity(SYSTEM, object)?
            .get(id)
            .filter(|record| record.is_live())
    }

    /// Checks and normalises one value for a field.
    fn normalize_value(
        &self,
        store: &Store,
        object: &ObjectDef,
        field: &FieldDef,
        value: &Value,
    ) -> Result<Value, SfError> {
        let parse_error = |expected: &str| {
            SfError::bad(
                "JSON_PARSER_ERROR",
                format!(
                    "Cannot deserialize instance of {expected} from {} value {value} or request may be missing a required field",
                    json_kind(value)
                ),
            )
        };
        if value.is_null() {
            if field.kind == "boolean" {
                return Ok(json!(false));
            }
            if !field.nillable {
                return Err(SfError::bad(
                    "REQUIRED_FIELD_MISSING",
                    format!("Required fields are missing: [{}]", field.name),
                )
                .with_fields(vec![field.name.clone()]));
            }
            return Ok(Value::Null);
        }
        match field.kind.as_str() {
            "id" | "reference" => {
                let text = value.as_str().ok_or_else(|| parse_error("reference"))?;
                let id = normalize_id(text).ok_or_else(|| {
                    SfError::bad(
                        "MALFORMED_ID",
                        format!("{}: id value of incorrect type: {text}", field.label),
                    )
                    .with_fields(vec![field.name.clone()])
                })?;
                let invalid = || {
                    SfError::bad(
                        "INVALID_CROSS_REFERENCE_KEY",
                        format!("invalid cross reference id: {text}"),
                    )
                    .with_fields(vec![field.name.clone()])
                };
                match reference_target(object.name, &field.name) {
                    Some("User") if id != self.user_id => return Err(invalid()),
                    Some("User") | None => {}
                    Some(target) => {
                        let prefix = self.object(target).map_or("", |object| object.prefix);
                        if !id.starts_with(prefix) || Self::find_live(store, target, &id).is_none()
                        {
                            return Err(invalid());
                        }
                    }
                }
                Ok(Value::String(id))
            }
            "boolean" => match value {
                Value::Bool(_) => Ok(value.clone()),
                Value::String(text) if text == "true" || text == "false" => {
                    Ok(json!(text == "true"))
                }
                _ => Err(parse_error("boolean")),
            },
            "double" | "currency" | "percent" => match value {
                Value::Number(_) => Ok(value.clone()),
                Value::String(text) => text
                    .trim()
                    .parse::<f64>()
                    .map(|number| json!(number))
                    .map_err(|_| parse_error("double")),
                _ => Err(parse_error("double")),
            },
            "int" => match value {
                Value::Number(number) if number.is_i64() => Ok(value.clone()),
                Value::String(text) => text
                    .trim()
                    .parse::<i64>()
                    .map(|number| json!(number))
                    .map_err(|_| parse_error("int")),
                _ => Err(parse_error("int")),
            },
            "date" => {
                let text = value.as_str().ok_or_else(|| parse_error("date"))?;
                chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .map(|_| value.clone())
                    .map_err(|_| parse_error("date"))
            }
            "datetime" => {
                let text = value.as_str().ok_or_else(|| parse_error("datetime"))?;
                parse_lenient_datetime(text)
                    .map(|at| Value::String(offset_datetime(at)))
                    .ok_or_else(|| parse_error("datetime"))
            }
            "email" => {
                let text = value.as_str().ok_or_else(|| parse_error("String"))?;
                if !text.is_empty() && !is_email(text) {
                    return Err(SfError::bad(
                        "INVALID_EMAIL_ADDRESS",
                        format!("{}: invalid email address: {text}", field.label),
                    )
                    .with_fields(vec![field.name.clone()]));
                }
                Ok(value.clone())
            }
            _ => match value {
                Value::String(_) => Ok(value.clone()),
                Value::Number(_) | Value::Bool(_) => Ok(Value::String(value.to_string())),
                _ => Err(parse_error("String")),
            },
        }
    }

    /// Resolves body keys to fields and normalises their values.
    fn normalize_body(
        &self,
        store: &Store,
        object: &ObjectDef,
        body: &Map<String, Value>,
        creating: bool,
    ) -> Result<Map<String, Value>, SfError> {
        let mut out = Map::new();
        let mut locked = Vec::new();
        for (key, value) in body {
            if key == "attributes" || (!creating && key.eq_ignore_ascii_case("id")) {
                continue;
            }
            let field = object.field(key).ok_or_else(|| {
                SfError::bad(
                    "INVALID_FIELD",
                    format!("No such column '{key}' on sobject of type {}", object.name),
                )
            })?;
            let allowed = if creating {
                field.createable
            } else {
                field.updateable
            };
            if !allowed {
                locked.push(field.name.clone());
                continue;
            }
            out.insert(
                field.name.clone(),
                self.normalize_value(store, object, field, value)?,
            );
        }
        if !locked.is_empty() {
            return Err(SfError::bad(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                    locked.join(", ")
                ),
            )
            .with_fields(locked));
        }
        Ok(out)
    }

    fn prepare_create(
        &self,
        store: &Store,
        object: &ObjectDef,
        body: &Map<String, Value>,
    ) -> Result<Prepared, SfError> {
        if body.keys().any(|key| key.eq_ignore_ascii_case("id")) {
            return Err(SfError::bad(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                "cannot specify Id in an insert call",
            )
            .with_fields(vec!["Id".into()]));
        }
        let mut fields = self.normalize_body(store, object, body, true)?;
        let mut missing: Vec<String> = object
            .fields
            .iter()
            .filter(|field| {
                field.createable
                    && !field.nillable
                    && field.kind != "boolean"
                    && field.name != "OwnerId"
            })
            .filter(|field| fields.get(&field.name).is_none_or(Value::is_null))
            .map(|field| field.name.clone())
            .collect();
        let practically_required: &[&str] = match object.name {
            "Order" => &["AccountId"],
            "OrderItem" | "QuoteLineItem" => &["UnitPrice"],
            _ => &[],
        };
        for name in practically_required {
            if fields.get(*name).is_none_or(Value::is_null)
                && !missing.iter().any(|field| field == name)
            {
                missing.push(name.to_string());
            }
        }
        if object.name == "QuoteLineItem"
            && fields.get("PricebookEntryId").is_none_or(Value::is_null)
            && fields.get("Product2Id").is_none_or(Value::is_null)
        {
            missing.push("PricebookEntryId".into());
        }
        if !missing.is_empty() {
            return Err(SfError::bad(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
            )
            .with_fields(missing));
        }
        self.object_rules(store, object, None, &mut fields)?;
        Ok(Prepared {
            object: object.name,
            id: None,
            fields,
        })
    }

    fn prepare_update(
        &self,
        store: &Store,
        object: &ObjectDef,
        id: &str,
        body: &Map<String, Value>,
    ) -> Result<Prepared, SfError> {
        let current = self.existing(store, object, id)?;
        let mut fields = self.normalize_body(store, object, body, false)?;
        self.object_rules(store, object, Some(current), &mut fields)?;
        Ok(Prepared {
            object: object.name,
            id: Some(current.id.clone()),
            fields,
        })
    }

    fn existing<'a>(
        &self,
        store: &'a Store,
        object: &ObjectDef,
        id: &str,
    ) -> Result<&'a Record, SfError> {
        let id = normalize_id(id)
            .filter(|id| id.starts_with(object.prefix))
            .ok_or_else(not_found)?;
        let record = store
            .entity(SYSTEM, object.name)
            .and_then(|records| records.get(&id))
            .ok_or_else(not_found)?;
        if !record.is_live() {
            return Err(entity_is_deleted());
        }
        Ok(record)
    }

    /// Object rules beyond field types.
    fn object_rules(
        &self,
        store: &Store,
        object: &ObjectDef,
        current: Option<&Record>,
        fields: &mut Map<String, Value>,
    ) -> Result<(), SfError> {
        let merged = |name: &str| -> Option<Value> {
            fields
                .get(name)
                .cloned()
                .or_else(|| current.and_then(|record| record.fields.get(name).cloned()))
                .filter(|value| !value.is_null())
        };
        let integrity = |message: &str, field: &str| {
            SfError::bad(
                "FIELD_INTEGRITY_EXCEPTION",
                format!("field integrity exception: {message}"),
            )
            .with_fields(vec![field.to_string()])
        };
        match object.name {
            "Order" => {
                if let Some(status) = fields.get("Status").and_then(Value::as_str) {
                    if status != "Draft" && status != "Activated" {
                        return Err(SfError::bad(
                            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                            format!("Status: bad value for restricted picklist field: {status}"),
                        )
                        .with_fields(vec!["Status".into()]));
                    }
                    if current.is_none() && status != "Draft" {
                        return Err(integrity(
                            "Status (new orders must have a Draft status)",
                            "Status",
                        ));
                    }
                }
            }
            "OrderItem" | "QuoteLineItem" if current.is_none() => {
                let (parent_field, parent_object) = if object.name == "OrderItem" {
                    ("OrderId", "Order")
                } else {
                    ("QuoteId", "Quote")
                };
                let parent = merged(parent_field)
                    .and_then(|id| id.as_str().map(str::to_string))
                    .and_then(|id| Self::find_live(store, parent_object, &id));
                let book = parent
                    .and_then(|parent| parent.fields.get("Pricebook2Id"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let entry = match merged("PricebookEntryId")
                    .and_then(|id| id.as_str().map(str::to_string))
                {
                    Some(entry_id) => Self::find_live(store, "PricebookEntry", &entry_id),
                    None => {
                        let product = merged("Product2Id");
                        store.entity(SYSTEM, "PricebookEntry").and_then(|entries| {
                            entries.records.values().find(|entry| {
                                entry.is_live()
                                    && entry.fields.get("Product2Id") == product.as_ref()
                                    && entry.fields.get("Pricebook2Id").and_then(Value::as_str)
                                        == book.as_deref()
                            })
                        })
                    }
                };
                let Some(entry) = entry else {
                    return Err(integrity(
                        "PricebookEntryId (no price book entry for this product)",
                        "PricebookEntryId",
                    ));
                };
                if book.is_none()
                    || entry.fields.get("Pricebook2Id").and_then(Value::as_str) != book.as_deref()
                {
                    return Err(integrity(
                        &format!(
                            "PricebookEntryId (pricebook entry is in a different pricebook than the one assigned to the {}, or {} has no pricebook assigned)",
                            parent_object, parent_object
                        ),
                        "PricebookEntryId",
                    ));
                }
                if let Some(product) = merged("Product2Id")
                    && entry.fields.get("Product2Id") != Some(&product)
                {
                    return Err(integrity(
                        "Product2Id (does not match the price book entry)",
                        "Product2Id",
                    ));
                }
                fields.insert("PricebookEntryId".into(), json!(entry.id));
                fields.insert(
                    "Product2Id".into(),
                    entry
                        .fields
                        .get("Product2Id")
                        .cloned()
                        .unwrap_or(Value::Null),
                );
                if fields.get("ListPrice").is_none_or(Value::is_null) {
                    fields.insert(
                        "ListPrice".into(),
                        entry
                            .fields
                            .get("UnitPrice")
                            .cloned()
                            .unwrap_or(Value::Null),
                    );
                }
            }
            "PricebookEntry" if current.is_none() => {
                let book_id = merged("Pricebook2Id").and_then(|id| id.as_str().map(str::to_string));
                let product = merged("Product2Id");
                let standard = book_id
                    .as_deref()
                    .and_then(|id| Self::find_live(store, "Pricebook2", id))
                    .is_some_and(|book| book.fields.get("IsStandard") == Some(&json!(true)));
                let entries: Vec<&Record> = store
                    .entity(SYSTEM, "PricebookEntry")
                    .map(|entries| {
                        entries
                            .records
                            .values()
                            .filter(|entry| {
                                entry.is_live()
                                    && entry.fields.get("Product2Id") == product.as_ref()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if entries.iter().any(|entry| {
                    entry.fields.get("Pricebook2Id").and_then(Value::as_str) == book_id.as_deref()
                }) {
                    return Err(SfError::bad(
                        "DUPLICATE_VALUE",
                        "This price definition already exists in this price book",
                    ));
                }
                let has_standard = entries.iter().any(|entry| {
                    entry
                        .fields
                        .get("Pricebook2Id")
                        .and_then(Value::as_str)
                        .and_then(|id| Self::find_live(store, "Pricebook2", id))
                        .is_some_and(|book| book.fields.get("IsStandard") == Some(&json!(true)))
                });
                if !standard && !has_standard {
                    return Err(SfError::bad(
                        "STANDARD_PRICE_NOT_DEFINED",
                        "Before creating a custom price, create a standard price.",
                    ));
                }
            }
            "Quote"
                if current.is_none() && fields.get("Pricebook2Id").is_none_or(Value::is_null) =>
            {
                let book = merged("OpportunityId")
                    .and_then(|id| id.as_str().map(str::to_string))
                    .and_then(|id| Self::find_live(store, "Opportunity", &id))
                    .and_then(|opportunity| opportunity.fields.get("Pricebook2Id").cloned());
                if let Some(book) = book {
                    fields.insert("Pricebook2Id".into(), book);
                }
            }
            _ => {}
        }
        Ok(())
    }

    // ---- applying writes ---------------------------------------------------------------

    fn derived(object: &str, fields: &mut Map<String, Value>) {
        match object {
            "Order" => {
                let status = fields
                    .get("Status")
                    .and_then(Value::as_str)
                    .unwrap_or("Draft");
                let code = if status == "Activated" {
                    "Activated"
                } else {
                    "Draft"
                };
                fields.insert("StatusCode".into(), json!(code));
            }
            "OrderItem" => {
                let quantity = fields
                    .get("Quantity")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let total = (quantity * cents(fields.get("UnitPrice")) as f64).round() as i64;
                fields.insert("TotalPrice".into(), money(total));
                fields.insert("AvailableQuantity".into(), json!(quantity));
            }
            "QuoteLineItem" => {
                let quantity = fields
                    .get("Quantity")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let subtotal = (quantity * cents(fields.get("UnitPrice")) as f64).round() as i64;
                let discount = fields
                    .get("Discount")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let total = (subtotal as f64 * (1.0 - discount / 100.0)).round() as i64;
                fields.insert("Subtotal".into(), money(subtotal));
                fields.insert("TotalPrice".into(), money(total));
            }
            "Quote" => {
                let subtotal = cents(fields.get("Subtotal"));
                let total = cents(fields.get("TotalPrice"));
                let grand =
                    total + cents(fields.get("Tax")) + cents(fields.get("ShippingHandling"));
                fields.insert("GrandTotal".into(), money(grand));
                let discount = if subtotal > 0 {
                    json!(((1.0 - total as f64 / subtotal as f64) * 10_000.0).round() / 100.0)
                } else {
                    Value::Null
                };
                fields.insert("Discount".into(), discount);
            }
            "Opportunity" => {
                let stage = fields
                    .get("StageName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let (probability, category) = match stage.as_str() {
                    "Prospecting" => (10, "Pipeline"),
                    "Qualification" => (10, "Pipeline"),
                    "Needs Analysis" => (20, "Pipeline"),
                    "Value Proposition" => (50, "Pipeline"),
                    "Id. Decision Makers" => (60, "Pipeline"),
                    "Perception Analysis" => (70, "Pipeline"),
                    "Proposal/Price Quote" => (75, "Pipeline"),
                    "Negotiation/Review" => (90, "Commit"),
                    "Closed Won" => (100, "Closed"),
                    "Closed Lost" => (0, "Omitted"),
                    _ => (10, "Pipeline"),
                };
                if fields.get("Probability").is_none_or(Value::is_null) {
                    fields.insert("Probability".into(), json!(probability));
                }
                let probability = fields
                    .get("Probability")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let expected =
                    (cents(fields.get("Amount")) as f64 * probability / 100.0).round() as i64;
                let expected = if fields.get("Amount").is_none_or(Value::is_null) {
                    Value::Null
                } else {
                    money(expected)
                };
                fields.insert("ExpectedRevenue".into(), expected);
                fields.insert("IsClosed".into(), json!(stage.starts_with("Closed")));
                fields.insert("IsWon".into(), json!(stage == "Closed Won"));
                fields.insert("ForecastCategory".into(), json!(category));
                if fields
                    .get("ForecastCategoryName")
                    .is_none_or(Value::is_null)
                {
                    fields.insert(
                        "ForecastCategoryName".into(),
                        json!(if category == "Closed" {
                            "Closed"
                        } else {
                            category
                        }),
                    );
                }
            }
            _ => {}
        }
    }

    /// Moves a parent's roll-up totals by a child's change.
    fn roll_up(store: &mut Store, object: &str, fields: &Map<String, Value>, sign: i64, at: Stamp) {
        let (parent_object, parent_field) = match object {
            "OrderItem" => ("Order", "OrderId"),
            "QuoteLineItem" => ("Quote", "QuoteId"),
            _ => return,
        };
        let Some(parent_id) = fields
            .get(parent_field)
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return;
        };
        let parents = store.entity_mut(SYSTEM, parent_object);
        let Some(mut parent) = parents.get(&parent_id).cloned() else {
            return;
        };
        if object == "OrderItem" {
            let total =
                cents(parent.fields.get("TotalAmount")) + sign * cents(fields.get("TotalPrice"));
            parent.fields.insert("TotalAmount".into(), money(total));
        } else {
            let subtotal =
                cents(parent.fields.get("Subtotal")) + sign * cents(fields.get("Subtotal"));
            let total =
                cents(parent.fields.get("TotalPrice")) + sign * cents(fields.get("TotalPrice"));
            let count = parent
                .fields
                .get("LineItemCount")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + sign;
            parent.fields.insert("Subtotal".into(), money(subtotal));
            parent.fields.insert("TotalPrice".into(), money(total));
            parent.fields.insert("LineItemCount".into(), json!(count));
            Self::derived("Quote", &mut parent.fields);
        }
        parent.touched = parent.touched.max(at);
        parents.put(parent);
    }

    fn apply(&self, store: &mut Store, prepared: Prepared, at: Stamp) -> String {
        let object = prepared.object;
        match prepared.id {
            Some(id) => {
                let Some(mut record) = store.entity_mut(SYSTEM, object).get(&id).cloned() else {
                    return id;
                };
                let before = record.fields.clone();
                for (name, value) in prepared.fields {
                    record.fields.insert(name, value);
                }
                Self::derived(object, &mut record.fields);
                record.modified = at;
                record.touched = at;
                let after = record.fields.clone();
                store.entity_mut(SYSTEM, object).put(record);
                Self::roll_up(store, object, &before, -1, at);
                Self::roll_up(store, object, &after, 1, at);
                id
            }
            None => {
                let prefix = self
                    .object(object)
                    .map_or("000", |definition| definition.prefix);
                let id = sf_id(prefix, store.next_counter("salesforce.id"));
                let definition = self.object(object);
                let mut fields = prepared.fields;
                for field in definition
                    .map(|definition| definition.fields.as_slice())
                    .unwrap_or_default()
                {
                    if field.kind == "boolean" && !fields.contains_key(&field.name) {
                        fields.insert(field.name.clone(), json!(false));
                    }
                }
                if definition.is_some_and(|definition| definition.field("OwnerId").is_some()) {
                    fields
                        .entry("OwnerId")
                        .or_insert_with(|| json!(self.user_id));
                }
                let entity = store.entity_mut(SYSTEM, object);
                match object {
                    "Order" => {
                        let number = entity.allocate_number() + 99;
                        fields.insert("OrderNumber".into(), json!(format!("{number:08}")));
                        fields.insert("TotalAmount".into(), json!(0.0));
                    }
                    "OrderItem" => {
                        let number = entity.allocate_number();
                        fields.insert("OrderItemNumber".into(), json!(format!("{number:010}")));
                    }
                    "Quote" => {
                        let number = entity.allocate_number();
                        fields.insert("QuoteNumber".into(), json!(format!("{number:08}")));
                        fields.insert("Subtotal".into(), json!(0.0));
                        fields.insert("TotalPrice".into(), json!(0.0));
                        fields.insert("LineItemCount".into(), json!(0));
                        fields.insert("CanCreateQuoteLineItems".into(), json!(true));
                    }
                    "QuoteLineItem" => {
                        let number = entity.allocate_number();
                        fields.insert("LineNumber".into(), json!(format!("{number:08}")));
                    }
                    _ => {}
                }
                Self::derived(object, &mut fields);
                let record = entity.new_record(id.clone(), fields.clone(), at);
                entity.put(record);
                Self::roll_up(store, object, &fields, 1, at);
                store.observe(at);
                id
            }
        }
    }

    /// Children deleted with their parent, and references that block a delete.
    fn delete_record(
        &self,
        store: &mut Store,
        object: &str,
        id: &str,
        at: Stamp,
    ) -> Result<(), SfError> {
        const CASCADE: [(&str, &str, &str); 7] = [
            ("Order", "OrderItem", "OrderId"),
            ("Quote", "QuoteLineItem", "QuoteId"),
            ("Opportunity", "Quote", "OpportunityId"),
            ("Account", "Contact", "AccountId"),
            ("Account", "Opportunity", "AccountId"),
            ("Product2", "PricebookEntry", "Product2Id"),
            ("Pricebook2", "PricebookEntry", "Pricebook2Id"),
        ];
        const BLOCKING: [(&str, &str, &str); 6] = [
            ("Product2", "OrderItem", "Product2Id"),
            ("Product2", "QuoteLineItem", "Product2Id"),
            ("PricebookEntry", "OrderItem", "PricebookEntryId"),
            ("PricebookEntry", "QuoteLineItem", "PricebookEntryId"),
            ("Account", "Order", "AccountId"),
            ("Pricebook2", "Order", "Pricebook2Id"),
        ];
        let referencing = |store: &Store, child: &str, field: &str| -> Vec<String> {
            store
                .entity(SYSTEM, child)
                .map(|children| {
                    children
                        .records
                        .values()
                        .filter(|record| {
                            record.is_live()
                                && record.fields.get(field).and_then(Value::as_str) == Some(id)
                        })
                        .map(|record| record.id.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        if object == "Pricebook2"
            && Self::find_live(store, object, id)
                .is_some_and(|book| book.fields.get("IsStandard") == Some(&json!(true)))
        {
            return Err(SfError::bad(
                "DELETE_FAILED",
                "The standard price book cannot be deleted",
            ));
        }
        for (parent, child, field) in BLOCKING {
            if parent == object && !referencing(store, child, field).is_empty() {
                return Err(SfError::bad(
                    "DELETE_FAILED",
                    format!(
                        "Your attempt to delete this {object} could not be completed because it is associated with {child} records."
                    ),
                ));
            }
        }
        for (parent, child, field) in CASCADE {
            if parent == object {
                for child_id in referencing(store, child, field) {
                    self.delete_record(store, child, &child_id, at)?;
                }
            }
        }
        let fields = store
            .entity(SYSTEM, object)
            .and_then(|records| records.get(id))
            .map(|record| record.fields.clone())
            .unwrap_or_default();
        store.entity_mut(SYSTEM, object).soft_delete(id, at);
        Self::roll_up(store, object, &fields, -1, at);
        Ok(())
    }

    // ---- rendering -----------------------------------------------------------------------

    fn url(&self, version: &str, object: &str, id: &str) -> String {
        format!("{API_PREFIX}{version}/sobjects/{object}/{id}")
    }

    fn value_of(
        &self,
        store: &Store,
        object: &ObjectDef,
        record: &Record,
        field: &FieldDef,
    ) -> Value {
        match field.name.as_str() {
            "Id" => return json!(record.id),
            "IsDeleted" => return json!(!record.is_live()),
            "CreatedDate" => return json!(offset_datetime(record.created)),
            "LastModifiedDate" => return json!(offset_datetime(record.modified)),
            "SystemModstamp" => return json!(offset_datetime(record.touched)),
            "CreatedById" | "LastModifiedById" => return json!(self.user_id),
            _ => {}
        }
        match (object.name, field.name.as_str()) {
            ("Contact", "Name") => {
                let first = record
                    .fields
                    .get("FirstName")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let last = record
                    .fields
                    .get("LastName")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                return json!(format!("{first} {last}").trim());
            }
            ("PricebookEntry", "Name" | "ProductCode") => {
                let source = if field.name == "Name" {
                    "Name"
                } else {
                    "ProductCode"
                };
                return record
                    .fields
                    .get("Product2Id")
                    .and_then(Value::as_str)
                    .and_then(|id| store.entity(SYSTEM, "Product2")?.get(id))
                    .and_then(|product| product.fields.get(source).cloned())
                    .unwrap_or(Value::Null);
            }
            ("Quote", "AccountId") => {
                return record
                    .fields
                    .get("OpportunityId")
                    .and_then(Value::as_str)
                    .and_then(|id| store.entity(SYSTEM, "Opportunity")?.get(id))
                    .and_then(|opportunity| opportunity.fields.get("AccountId").cloned())
                    .unwrap_or(Value::Null);
            }
            _ => {}
        }
        if field.kind == "address" {
            let prefix = field.name.trim_end_matches("Address");
            const PARTS: [(&str, &str); 10] = [
                ("street", "Street"),
                ("city", "City"),
                ("state", "State"),
                ("postalCode", "PostalCode"),
                ("country", "Country"),
                ("stateCode", "StateCode"),
                ("countryCode", "CountryCode"),
                ("latitude", "Latitude"),
                ("longitude", "Longitude"),
                ("geocodeAccuracy", "GeocodeAccuracy"),
            ];
            let parts: Vec<(String, Value)> = PARTS
                .iter()
                .filter(|(_, suffix)| object.field(&format!("{prefix}{suffix}")).is_some())
                .map(|(key, suffix)| {
                    let value = record
                        .fields
                        .get(&format!("{prefix}{suffix}"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    (key.to_string(), value)
                })
                .collect();
            if parts.iter().all(|(_, value)| value.is_null()) {
                return Value::Null;
            }
            return Value::Object(parts.into_iter().collect());
        }
        match record.fields.get(&field.name) {
            Some(value) => value.clone(),
            None if field.kind == "boolean" => json!(false),
            None => Value::Null,
        }
    }

    /// A record with `attributes` and the given fields (all fields when `None`).
    fn render(
        &self,
        store: &Store,
        version: &str,
        object: &ObjectDef,
        record: &Record,
        fields: Option<&[String]>,
    ) -> Value {
        let mut out = Map::new();
        out.insert(
            "attributes".into(),
            json!({"type": object.name, "url": self.url(version, object.name, &record.id)}),
        );
        match fields {
            Some(names) => {
                for name in names {
                    if let Some(field) = object.field(name) {
                        out.insert(
                            field.name.clone(),
                            self.value_of(store, object, record, field),
                        );
                    }
                }
            }
            None => {
                for field in &object.fields {
                    out.insert(
                        field.name.clone(),
                        self.value_of(store, object, record, field),
                    );
                }
            }
        }
        Value::Object(out)
    }

    // ---- routing -------------------------------------------------------------------------

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

    fn versions(&self) -> ApiResponse {
        let versions: Vec<Value> = [("Spring '24", "60.0"), ("Summer '24", "61.0"), ("Winter '25", "62.0")]
            .iter()
            .map(|(label, version)| json!({"label": label, "url": format!("{API_PREFIX}v{version}"), "version": version}))
            .collect();
        ApiResponse::json(StatusCode::OK, Value::Array(versions))
    }

    /// `GET /limits`: the daily API request allowance and what is left of it.
    fn limits(&self) -> ApiResponse {
        let used = lock(&self.usage)
            .usage(self.shared.clock.now())
            .first()
            .map_or(0, |usage| usage.used);
        ApiResponse::json(
            StatusCode::OK,
            json!({"DailyApiRequests": {"Max": self.daily_limit, "Remaining": self.daily_limit.saturating_sub(used)}}),
        )
    }

    fn global_describe(&self, version: &str) -> ApiResponse {
        let objects: Vec<Value> = self
            .objects
            .iter()
            .map(|object| {
                json!({
                    "name": object.name, "label": object.name, "keyPrefix": object.prefix,
                    "createable": true, "updateable": true, "deletable": true, "queryable": true,
                    "urls": {"sobject": format!("{API_PREFIX}{version}/sobjects/{}", object.name)},
                })
            })
            .collect();
        ApiResponse::json(
            StatusCode::OK,
            json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": objects}),
        )
    }

    fn describe(&self, object: &ObjectDef) -> ApiResponse {
        let fields: Vec<Value> = object
            .fields
            .iter()
            .map(|field| {
                json!({
                    "name": field.name, "label": field.label, "type": field.kind,
                    "nillable": field.nillable, "createable": field.createable, "updateable": field.updateable,
                    "referenceTo": reference_target(object.name, &field.name).map(|target| vec![target]).unwrap_or_default(),
                })
            })
            .collect();
        ApiResponse::json(
            StatusCode::OK,
            json!({"name": object.name, "label": object.name, "keyPrefix": object.prefix, "fields": fields}),
        )
    }

    fn body_object(request: &ApiRequest) -> Result<Map<String, Value>, SfError> {
        match request.json() {
            Ok(Value::Object(object)) => Ok(object),
            Ok(_) => Err(SfError::bad(
                "JSON_PARSER_ERROR",
                "The request body must be a JSON object",
            )),
            Err(error) => Err(SfError::bad(
                "JSON_PARSER_ERROR",
                format!("Unexpected character: {error}"),
            )),
        }
    }

    fn sobject(
        &self,
        request: &ApiRequest,
        version: &str,
        object_name: &str,
        rest: &[&str],
    ) -> Result<ApiResponse, SfError> {
        let object = self.object(object_name).ok_or_else(not_found)?;
        match (&request.method, rest) {
            (&Method::GET, []) => Ok(ApiResponse::json(
                StatusCode::OK,
                json!({"objectDescribe": {"name": object.name, "keyPrefix": object.prefix}, "recentItems": []}),
            )),
            (&Method::GET, ["describe"]) => Ok(self.describe(object)),
            (&Method::POST, []) => {
                let body = Self::body_object(request)?;
                let mut store = self.shared.store();
                let prepared = self.prepare_create(&store, object, &body)?;
                let at = self.shared.stamp(&mut store);
                let id = self.apply(&mut store, prepared, at);
                Ok(ApiResponse::json(
                    StatusCode::CREATED,
                    json!({"id": id, "success": true, "errors": []}),
                ))
            }
            (&Method::GET, ["deleted"]) => self.get_deleted(request, object),
            (&Method::GET, ["updated"]) => self.get_updated(request, object),
            (&Method::GET, [id]) => {
                let store = self.shared.store();
                let record = self.existing(&store, object, id)?;
                let fields: Option<Vec<String>> = request.query("fields").map(|fields| {
                    fields
                        .split(',')
                        .map(|name| name.trim().to_string())
                        .filter(|name| !name.is_empty())
                        .collect()
                });
                if let Some(unknown) = fields
                    .iter()
                    .flatten()
                    .find(|name| object.field(name).is_none())
                {
                    return Err(SfError::bad(
                        "INVALID_FIELD",
                        format!("No such column '{unknown}' on entity '{}'", object.name),
                    ));
                }
                Ok(ApiResponse::json(
                    StatusCode::OK,
                    self.render(&store, version, object, record, fields.as_deref()),
                ))
            }
            (&Method::PATCH, [id]) => {
                let body = Self::body_object(request)?;
                let mut store = self.shared.store();
                let prepared = self.prepare_update(&store, object, id, &body)?;
                let at = self.shared.stamp(&mut store);
                self.apply(&mut store, prepared, at);
                Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
            }
            (&Method::DELETE, [id]) => {
                let mut store = self.shared.store();
                let id = self.existing(&store, object, id)?.id.clone();
                let at = self.shared.stamp(&mut store);
                self.delete_record(&mut store, object.name, &id, at)?;
                Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
            }
            (method, [] | [_]) => Err(SfError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                format!("HTTP Method '{method}' not allowed. Allowed are GET,PATCH,DELETE,HEAD"),
            )),
            _ => Err(not_found()),
        }
    }

    fn window(&self, request: &ApiRequest) -> Result<(Stamp, Stamp), SfError> {
        let instant = |name: &str| -> Result<Stamp, SfError> {
            let text = request
                .query(name)
                .ok_or_else(|| SfError::bad("MISSING_ARGUMENT", format!("{name} not specified")))?;
            parse_lenient_datetime(text).ok_or_else(|| {
                SfError::bad(
                    "INVALID_REPLICATION_DATE",
                    format!("{name}: invalid date time value: {text}"),
                )
            })
        };
        let minute = |at: Stamp| at - at.rem_euclid(60_000);
        let (start, end) = (minute(instant("start")?), minute(instant("end")?));
        let now = self.shared.clock.now();
        if end < start {
            return Err(SfError::bad(
                "INVALID_REPLICATION_DATE",
                "EndDate must be after StartDate",
            ));
        }
        if start < now - 30 * DAY_MS {
            return Err(SfError::bad(
                "INVALID_REPLICATION_DATE",
                "startDate cannot be more than 30 days ago",
            ));
        }
        Ok((start, end.min(minute(now))))
    }

    fn get_deleted(
        &self,
        request: &ApiRequest,
        object: &ObjectDef,
    ) -> Result<ApiResponse, SfError> {
        let (start, end) = self.window(request)?;
        let store = self.shared.store();
        let mut deleted: Vec<(&str, Stamp)> = store
            .entity(SYSTEM, object.name)
            .map(|records| {
                records
                    .records
                    .values()
                    .filter_map(|record| Some((record.id.as_str(), record.deleted?)))
                    .filter(|(_, at)| *at >= start && *at < end + 60_000)
                    .collect()
            })
            .unwrap_or_default();
        deleted.sort_by_key(|(_, at)| *at);
        let earliest = self.shared.clock.now() - 15 * DAY_MS;
        let records: Vec<Value> = deleted
            .iter()
            .map(|(id, at)| json!({"id": id, "deletedDate": offset_datetime(*at)}))
            .collect();
        Ok(ApiResponse::json(
            StatusCode::OK,
            json!({
                "deletedRecords": records,
                "earliestDateAvailable": offset_datetime(earliest - earliest.rem_euclid(60_000)),
                "latestDateCovered": offset_datetime(end),
            }),
        ))
    }

    fn get_updated(
        &self,
        request: &ApiRequest,
        object: &ObjectDef,
    ) -> Result<ApiResponse, SfError> {
        let (start, end) = self.window(request)?;
        let store = self.shared.store();
        let ids: Vec<&str> = store
            .entity(SYSTEM, object.name)
            .map(|records| {
                records
                    .by_change(false)
                    .into_iter()
                    .filter(|record| record.touched >= start && record.touched < end + 60_000)
                    .map(|record| record.id.as_str())
                    .collect()
            })
            .unwrap_or_default();
        Ok(ApiResponse::json(
            StatusCode::OK,
            json!({"ids": ids, "latestDateCovered": offset_datetime(end)}),
        ))
    }

    // ---- query -----------------------------------------------------------------------------

    fn query(
        &self,
        request: &ApiRequest,
        version: &str,
        include_deleted: bool,
    ) -> Result<ApiResponse, SfError> {
        let text = request
            .query("q")
            .ok_or_else(|| SfError::bad("MALFORMED_QUERY", "A query string has to be specified"))?;
        let parsed = soql::parse(text).map_err(|error| SfError::bad("MALFORMED_QUERY", error.0))?;
        let object = self.object(&parsed.object).ok_or_else(|| {
            SfError::bad(
                "INVALID_TYPE",
                format!(
                    "sObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.",
                    parsed.object
                ),
            )
        })?;
        let mut columns = Vec::new();
        let mut plain = Vec::new();
        for item in &parsed.items {
            match item {
                soql::Item::Field(name) => {
                    let name = resolve_field(object, name)?;
                    if plain.contains(&name) {
                        return Err(SfError::bad(
                            "DUPLICATE_FIELD",
                            format!("duplicate field selected: {name}"),
                        ));
                    }
                    plain.push(name.clone());
                    columns.push(Column::Field(name));
                }
                soql::Item::Subquery(inner) => {
                    columns.push(Column::Children(self.child_column(object, inner)?))
                }
            }
        }
        if let Some(condition) = &parsed.condition {
            self.check_condition(object, condition)?;
        }
        let order = resolve_order(object, &parsed.order)?;
        let store = self.shared.store();
        let mut rows = self.select_rows(
            &store,
            version,
            object,
            parsed.condition.as_ref(),
            &order,
            include_deleted,
        );
        rows = rows
            .into_iter()
            .skip(parsed.offset.unwrap_or(0))
            .take(parsed.limit.unwrap_or(usize::MAX))
            .collect();
        let children: Vec<HashMap<String, Vec<Value>>> = columns
            .iter()
            .map(|column| match column {
                Column::Children(child) => self.child_rows(&store, version, child),
                Column::Field(_) => HashMap::new(),
            })
            .collect();
        drop(store);
        let rows: Vec<Value> = rows
            .iter()
            .map(|row| {
                let mut out = Map::new();
                if let Some(attributes) = row.get("attributes") {
                    out.insert("attributes".into(), attributes.clone());
                }
                let id = row.get("Id").and_then(Value::as_str).unwrap_or_default();
                for (column, groups) in columns.iter().zip(&children) {
                    match column {
                        Column::Field(name) => {
                            out.insert(name.clone(), row.get(name).cloned().unwrap_or(Value::Null));
                        }
                        Column::Children(child) => {
                            let value = match groups.get(id) {
                                Some(records) if !records.is_empty() => json!({
                                    "totalSize": records.len(),
                                    "done": true,
                                    "records": records,
                                }),
                                _ => Value::Null,
                            };
                            out.insert(child.relationship.to_string(), value);
                        }
                    }
                }
                Value::Object(out)
            })
            .collect();
        let batch = request
            .header("sforce-query-options")
            .and_then(|options| {
                options
                    .split(',')
                    .find_map(|option| option.trim().strip_prefix("batchSize="))
                    .and_then(|size| size.trim().parse::<usize>().ok())
            })
            .unwrap_or(2000)
            .clamp(200, 2000);
        let total = rows.len();
        if total <= batch {
            return Ok(ApiResponse::json(
                StatusCode::OK,
                json!({"totalSize": total, "done": true, "records": rows}),
            ));
        }
        let locator = format!("01g{}", self.shared.token(15));
        let first: Vec<Value> = rows[..batch].to_vec();
        let now = self.shared.clock.now();
        {
            let mut cursors = lock(&self.cursors);
            cursors.retain(|_, cursor| cursor.created + CURSOR_TTL_MS > now);
            if cursors.len() >= 50
                && let Some(oldest) = cursors
                    .iter()
                    .min_by_key(|(_, cursor)| cursor.created)
                    .map(|(key, _)| key.clone())
            {
                cursors.remove(&oldest);
            }
            cursors.insert(
                locator.clone(),
                QueryCursor {
                    records: rows,
                    batch,
                    created: now,
                },
            );
        }
        Ok(ApiResponse::json(
            StatusCode::OK,
            json!({
                "totalSize": total,
                "done": false,
                "nextRecordsUrl": format!("{API_PREFIX}{version}/query/{locator}-{batch}"),
                "records": first,
            }),
        ))
    }

    /// Every matching record rendered in full, sorted.
    fn select_rows(
        &self,
        store: &Store,
        version: &str,
        object: &ObjectDef,
        condition: Option<&Condition>,
        order: &[(FieldDef, bool, bool)],
        include_deleted: bool,
    ) -> Vec<Value> {
        let mut rows: Vec<Value> = store
            .entity(SYSTEM, object.name)
            .map(|records| records.by_change(include_deleted))
            .unwrap_or_default()
            .into_iter()
            .map(|record| self.render(store, version, object, record, None))
            .filter(|row| condition.is_none_or(|condition| self.matches(object, condition, row)))
            .collect();
        if !order.is_empty() {
            rows.sort_by(|left, right| {
                for (field, descending, nulls_last) in order {
                    let ordering = compare_values(
                        left.get(&field.name),
                        right.get(&field.name),
                        *nulls_last,
                        *descending,
                    );
                    if ordering != std::cmp::Ordering::Equal {
                        return ordering;
                    }
                }
                std::cmp::Ordering::Equal
            });
        }
        rows
    }

    /// Resolves a parent-to-child subquery (`(SELECT Id FROM OrderItems)`).
    fn child_column<'a>(
        &'a self,
        parent: &ObjectDef,
        inner: &'a soql::Query,
    ) -> Result<ChildColumn<'a>, SfError> {
        let (child, parent_field, relationship) = child_relationship(parent.name, &inner.object).ok_or_else(|| {
            SfError::bad(
                "INVALID_TYPE",
                format!(
                    "Didn't understand relationship '{}' in FROM part of query call. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. Please reference your WSDL or the describe call for the appropriate names.",
                    inner.object
                ),
            )
        })?;
        let child = self.object(child).ok_or_else(not_found)?;
        let mut fields = Vec::new();
        for item in &inner.items {
            if let soql::Item::Field(name) = item {
                fields.push(resolve_field(child, name)?);
            }
        }
        if let Some(condition) = &inner.condition {
            self.check_condition(child, condition)?;
        }
        Ok(ChildColumn {
            relationship,
            child,
            parent_field,
            fields,
            condition: inner.condition.as_ref(),
            order: resolve_order(child, &inner.order)?,
            limit: inner.limit,
        })
    }

    /// The rows of a subquery, grouped by the parent they belong to.
    fn child_rows(
        &self,
        store: &Store,
        version: &str,
        column: &ChildColumn,
    ) -> HashMap<String, Vec<Value>> {
        let mut groups: HashMap<String, Vec<Value>> = HashMap::new();
        let rows = self.select_rows(
            store,
            version,
            column.child,
            column.condition,
            &column.order,
            false,
        );
        for row in rows {
            let Some(parent) = row
                .get(column.parent_field)
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                continue;
            };
            let group = groups.entry(parent).or_default();
            if column.limit.is_none_or(|limit| group.len() < limit) {
                group.push(project(&row, &column.fields));
            }
        }
        groups
    }

    fn query_more(&self, version: &str, locator: &str) -> Result<ApiResponse, SfError> {
        let invalid = || SfError::bad("INVALID_QUERY_LOCATOR", "invalid query locator");
        let (id, offset) = locator.rsplit_once('-').ok_or_else(invalid)?;
        let offset: usize = offset.parse().map_err(|_| invalid())?;
        let now = self.shared.clock.now();
        let cursors = lock(&self.cursors);
        let cursor = cursors
            .get(id)
            .filter(|cursor| cursor.created + CURSOR_TTL_MS > now)
            .ok_or_else(invalid)?;
        if offset > cursor.records.len() {
            return Err(invalid());
        }
        let end = (offset + cursor.batch).min(cursor.records.len());
        let mut body = json!({
            "totalSize": cursor.records.len(),
            "done": end >= cursor.records.len(),
            "records": cursor.records[offset..end].to_vec(),
        });
        if end < cursor.records.len()
            && let Some(object) = body.as_object_mut()
        {
            object.insert(
                "nextRecordsUrl".into(),
                json!(format!("{API_PREFIX}{version}/query/{id}-{end}")),
            );
        }
        Ok(ApiResponse::json(StatusCode::OK, body))
    }

    /// Checks field names and literal types in a condition.
    fn check_condition(&self, object: &ObjectDef, condition: &Condition) -> Result<(), SfError> {
        match condition {
            Condition::And(terms) | Condition::Or(terms) => terms
                .iter()
                .try_for_each(|term| self.check_condition(object, term)),
            Condition::Not(inner) => self.check_condition(object, inner),
            Condition::Compare { field, value, op } => {
                let definition = self.filter_field(object, field)?;
                if *op == Op::Like && !is_text_kind(&definition.kind) {
                    return Err(SfError::bad(
                        "INVALID_QUERY_FILTER_OPERATOR",
                        format!(
                            "invalid operator on {} field: {}",
                            definition.kind, definition.name
                        ),
                    ));
                }
                check_literal(definition, value)
            }
            Condition::In { field, values, .. } => {
                let definition = self.filter_field(object, field)?;
                values
                    .iter()
                    .try_for_each(|value| check_literal(definition, value))
            }
        }
    }

    fn filter_field<'a>(&self, object: &'a ObjectDef, name: &str) -> Result<&'a FieldDef, SfError> {
        let field = object.field(name).ok_or_else(|| {
            SfError::bad(
                "INVALID_FIELD",
                format!("No such column '{name}' on entity '{}'", object.name),
            )
        })?;
        if field.kind == "address" {
            return Err(SfError::bad(
                "INVALID_FIELD",
                format!("field '{}' can not be filtered in a query call", field.name),
            ));
        }
        Ok(field)
    }

    fn matches(&self, object: &ObjectDef, condition: &Condition, row: &Value) -> bool {
        match condition {
            Condition::And(terms) => terms.iter().all(|term| self.matches(object, term, row)),
            Condition::Or(terms) => terms.iter().any(|term| self.matches(object, term, row)),
            Condition::Not(inner) => !self.matches(object, inner, row),
            Condition::Compare { field, op, value } => {
                let Some(definition) = object.field(field) else {
                    return false;
                };
                compare(
                    definition,
                    row.get(&definition.name).unwrap_or(&Value::Null),
                    *op,
                    value,
                )
            }
            Condition::In {
                field,
                values,
                negated,
            } => {
                let Some(definition) = object.field(field) else {
                    return false;
                };
                let actual = row.get(&definition.name).unwrap_or(&Value::Null);
                let found = values
                    .iter()
                    .any(|value| compare(definition, actual, Op::Eq, value));
                found != *negated
            }
        }
    }

    // ---- sObject Collections -----------------------------------------------------------------

    fn collection(&self, request: &ApiRequest, version: &str) -> Result<ApiResponse, SfError> {
        match request.method {
            Method::POST | Method::PATCH => {
                let body = Self::body_object(request)?;
                let all_or_none = body
                    .get("allOrNone")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let records = body
                    .get("records")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        SfError::bad(
                            "JSON_PARSER_ERROR",
                            "records: a list of records is required",
                        )
                    })?;
                if records.len() > MAX_COLLECTION {
                    return Err(SfError::bad(
                        "EXCEEDED_ID_LIMIT",
                        "record limit reached. cannot submit more than 200 records into this call",
                    ));
                }
                let creating = request.method == Method::POST;
                let results = self.collection_write(records, creating, all_or_none);
                Ok(ApiResponse::json(StatusCode::OK, Value::Array(results)))
            }
            Method::DELETE => {
                let ids: Vec<String> = request
                    .query("ids")
                    .unwrap_or_default()
                    .split(',')
                    .map(|id| id.trim().to_string())
                    .filter(|id| !id.is_empty())
                    .collect();
                if ids.len() > MAX_COLLECTION {
                    return Err(SfError::bad(
                        "EXCEEDED_ID_LIMIT",
                        "record limit reached. cannot submit more than 200 records into this call",
                    ));
                }
                let all_or_none = request.query("allOrNone") == Some("true");
                Ok(ApiResponse::json(
                    StatusCode::OK,
                    Value::Array(self.collection_delete(&ids, all_or_none)),
                ))
            }
            _ => {
                let _ = version;
                Err(SfError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "METHOD_NOT_ALLOWED",
                    format!(
                        "HTTP Method '{}' not allowed. Allowed are POST,PATCH,DELETE",
                        request.method
                    ),
                ))
            }
        }
    }

    fn snapshot(store: &Store) -> Option<std::collections::BTreeMap<String, EntityStore>> {
        store.systems.get(SYSTEM).cloned()
    }

    fn restore(
        store: &mut Store,
        snapshot: Option<std::collections::BTreeMap<String, EntityStore>>,
    ) {
        match snapshot {
            Some(entities) => {
                store.systems.insert(SYSTEM.to_string(), entities);
            }
            None => {
                store.systems.remove(SYSTEM);
            }
        }
    }

    fn collection_write(&self, records: &[Value], creating: bool, all_or_none: bool) -> Vec<Value> {
        let mut store = self.shared.store();
        let at = self.shared.stamp(&mut store);
        let snapshot = all_or_none.then(|| Self::snapshot(&store));
        let mut outcomes: Vec<Result<String, SfError>> = Vec::new();
        for record in records {
            let outcome = (|| -> Result<String, SfError> {
                let body = record.as_object().ok_or_else(|| {
                    SfError::bad("JSON_PARSER_ERROR", "each record must be a JSON object")
                })?;
                let type_name = body
                    .get("attributes")
                    .and_then(|attributes| attributes.get("type"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        SfError::bad("INVALID_TYPE", "Must send a concrete entity type.")
                    })?;
                let object = self.object(type_name).ok_or_else(|| {
                    SfError::bad(
                        "INVALID_TYPE",
                        format!("sObject type '{type_name}' is not supported."),
                    )
                })?;
                let prepared = if creating {
                    self.prepare_create(&store, object, body)?
                } else {
                    let id = body
                        .get("id")
                        .or_else(|| body.get("Id"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            SfError::bad("MISSING_ARGUMENT", "Id not specified in an update call")
                        })?;
                    self.prepare_update(&store, object, id, body)?
                };
                Ok(self.apply(&mut store, prepared, at))
            })();
            outcomes.push(outcome);
        }
        let failed = outcomes.iter().any(Result::is_err);
        if let Some(snapshot) = snapshot
            && failed
        {
            Self::restore(&mut store, snapshot);
            return outcomes
                .into_iter()
                .map(|outcome| match outcome {
                    Ok(_) => json!({"success": false, "errors": [rolled_back()]}),
                    Err(error) => json!({"success": false, "errors": [error.record_error()]}),
                })
                .collect();
        }
        outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(id) => json!({"id": id, "success": true, "errors": []}),
                Err(error) => json!({"success": false, "errors": [error.record_error()]}),
            })
            .collect()
    }

    fn collection_delete(&self, ids: &[String], all_or_none: bool) -> Vec<Value> {
        let mut store = self.shared.store();
        let at = self.shared.stamp(&mut store);
        let snapshot = all_or_none.then(|| Self::snapshot(&store));
        let mut outcomes = Vec::new();
        for id in ids {
            let outcome = (|| -> Result<String, SfError> {
                let normalized = normalize_id(id)
                    .ok_or_else(|| SfError::bad("MALFORMED_ID", format!("malformed id {id}")))?;
                let object = self.object_of_id(&normalized).ok_or_else(|| {
                    SfError::bad("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
                })?;
                let record = store
                    .entity(SYSTEM, object.name)
                    .and_then(|records| records.get(&normalized))
                    .ok_or_else(|| {
                        SfError::bad("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
                    })?;
                if !record.is_live() {
                    return Err(SfError::bad("ENTITY_IS_DELETED", "entity is deleted"));
                }
                self.delete_record(&mut store, object.name, &normalized, at)?;
                Ok(normalized)
            })();
            outcomes.push((id.clone(), outcome));
        }
        let failed = outcomes.iter().any(|(_, outcome)| outcome.is_err());
        if let Some(snapshot) = snapshot
            && failed
        {
            Self::restore(&mut store, snapshot);
            return outcomes
                .into_iter()
                .map(|(id, outcome)| match outcome {
                    Ok(_) => json!({"id": id, "success": false, "errors": [rolled_back()]}),
                    Err(error) => {
                        json!({"id": id, "success": false, "errors": [error.record_error()]})
                    }
                })
                .collect();
        }
        outcomes
            .into_iter()
            .map(|(id, outcome)| match outcome {
                Ok(id) => json!({"id": id, "success": true, "errors": []}),
                Err(error) => json!({"id": id, "success": false, "errors": [error.record_error()]}),
            })
            .collect()
    }

    fn collection_retrieve(
        &self,
        request: &ApiRequest,
        version: &str,
        object_name: &str,
    ) -> Result<ApiResponse, SfError> {
        let object = self.object(object_name).ok_or_else(not_found)?;
        let fields: Option<Vec<String>> = request.query("fields").map(|fields| {
            fields
                .split(',')
                .map(|name| name.trim().to_string())
                .collect()
        });
        let store = self.shared.store();
        let records: Vec<Value> = request
            .query("ids")
            .unwrap_or_default()
            .split(',')
            .filter(|id| !id.trim().is_empty())
            .map(|id| {
                normalize_id(id.trim())
                    .and_then(|id| Self::find_live(&store, object.name, &id))
                    .map(|record| self.render(&store, version, object, record, fields.as_deref()))
                    .unwrap_or(Value::Null)
            })
            .collect();
        Ok(ApiResponse::json(StatusCode::OK, Value::Array(records)))
    }
}

/// A column of a query result.
enum Column<'a> {
    Field(String),
    Children(ChildColumn<'a>),
}

/// A resolved parent-to-child subquery.
struct ChildColumn<'a> {
    relationship: &'static str,
    child: &'a ObjectDef,
    parent_field: &'static str,
    fields: Vec<String>,
    condition: Option<&'a Condition>,
    order: Vec<(FieldDef, bool, bool)>,
    limit: Option<usize>,
}

/// Child relationships: `(parent, relationship) -> (child object, field on the child, name)`.
fn child_relationship(
    parent: &str,
    name: &str,
) -> Option<(&'static str, &'static str, &'static str)> {
    const RELATIONSHIPS: [(&str, &str, &str, &str); 8] = [
        ("Order", "OrderItems", "OrderItem", "OrderId"),
        ("Quote", "QuoteLineItems", "QuoteLineItem", "QuoteId"),
        ("Account", "Contacts", "Contact", "AccountId"),
        ("Account", "Opportunities", "Opportunity", "AccountId"),
        ("Account", "Orders", "Order", "AccountId"),
        ("Opportunity", "Quotes", "Quote", "OpportunityId"),
        (
            "Pricebook2",
            "PricebookEntries",
            "PricebookEntry",
            "Pricebook2Id",
        ),
        (
            "Product2",
            "PricebookEntries",
            "PricebookEntry",
            "Product2Id",
        ),
    ];
    RELATIONSHIPS
        .iter()
        .find(|(owner, relationship, _, _)| {
            *owner == parent && relationship.eq_ignore_ascii_case(name)
        })
        .map(|(_, relationship, child, field)| (*child, *field, *relationship))
}

fn no_column(object: &ObjectDef, name: &str) -> SfError {
    SfError::bad(
        "INVALID_FIELD",
        format!(
            "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
            object.name
        ),
    )
}

fn resolve_field(object: &ObjectDef, name: &str) -> Result<String, SfError> {
    object
        .field(name)
        .map(|field| field.name.clone())
        .ok_or_else(|| no_column(object, name))
}

fn resolve_order(
    object: &ObjectDef,
    order: &[soql::OrderBy],
) -> Result<Vec<(FieldDef, bool, bool)>, SfError> {
    order
        .iter()
        .map(|item| {
            object
                .field(&item.field)
                .map(|field| (field.clone(), item.descending, item.nulls_last))
                .ok_or_else(|| no_column(object, &item.field))
        })
        .collect()
}

fn rolled_back() -> Value {
    json!({
        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
        "fields": [],
    })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER",
        Value::Bool(_) => "VALUE_BOOLEAN",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
        Value::Null => "VALUE_NULL",
    }
}

fn is_text_kind(kind: &str) -> bool {
    !matches!(
        kind,
        "boolean" | "double" | "currency" | "percent" | "int" | "date" | "datetime" | "address"
    )
}

fn check_literal(field: &FieldDef, value: &Literal) -> Result<(), SfError> {
    let expected = match field.kind.as_str() {
        "datetime" => (
            "dateTime",
            matches!(value, Literal::DateTime(_) | Literal::Null),
        ),
        "date" => ("date", matches!(value, Literal::Date(_) | Literal::Null)),
        "boolean" => ("boolean", matches!(value, Literal::Bool(_) | Literal::Null)),
        "double" | "currency" | "percent" | "int" => (
            "number",
            matches!(value, Literal::Number(_) | Literal::Null),
        ),
        _ => ("string", matches!(value, Literal::Text(_) | Literal::Null)),
    };
    if expected.1 {
        Ok(())
    } else {
        let quoting = if expected.0 == "string" {
            "should be enclosed in quotes"
        } else {
            "should not be enclosed in quotes"
        };
        Err(SfError::bad(
            "INVALID_QUERY_FILTER_OPERATOR",
            format!(
                "value of filter criterion for field '{}' must be of type {} and {quoting}",
                field.name, expected.0
            ),
        ))
    }
}

fn like(pattern: &str, text: &str) -> bool {
    fn matches(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('%', rest)) => (0..=text.len()).any(|skip| matches(rest, &text[skip..])),
            Some(('_', rest)) => !text.is_empty() && matches(rest, &text[1..]),
            Some((c, rest)) => {
                text.first().is_some_and(|first| first == c) && matches(rest, &text[1..])
            }
        }
    }
    let pattern: Vec<char> = pattern.to_lowercase().chars().collect();
    let text: Vec<char> = text.to_lowercase().chars().collect();
    matches(&pattern, &text)
}

/// Evaluates one comparison of a rendered value with a literal.
fn compare(field: &FieldDef, actual: &Value, op: Op, literal: &Literal) -> bool {
    use std::cmp::Ordering;
    if matches!(literal, Literal::Null) {
        return match op {
            Op::Eq => actual.is_null(),
            Op::Ne => !actual.is_null(),
            _ => false,
        };
    }
    if actual.is_null() {
        return op == Op::Ne;
    }
    if op == Op::Like {
        return match (actual.as_str(), literal) {
            (Some(text), Literal::Text(pattern)) => like(pattern, text),
            _ => false,
        };
    }
    let ordering: Option<Ordering> = match literal {
        Literal::DateTime(at) => actual
            .as_str()
            .and_then(parse_lenient_datetime)
            .map(|value| value.cmp(at)),
        Literal::Date(date) => actual.as_str().map(|value| value.cmp(date.as_str())),
        Literal::Number(number) => actual.as_f64().and_then(|value| value.partial_cmp(number)),
        Literal::Bool(flag) => actual.as_bool().map(|value| value.cmp(flag)),
        Literal::Text(text) => actual.as_str().map(|value| {
            if matches!(field.kind.as_str(), "id" | "reference") {
                let normalize = |id: &str| {
                    normalize_id(id)
                        .unwrap_or_else(|| id.to_string())
                        .to_lowercase()
                };
                normalize(value).cmp(&normalize(text))
            } else {
                value.to_lowercase().cmp(&text.to_lowercase())
            }
        }),
        Literal::Null => None,
    };
    let Some(ordering) = ordering else {
        return false;
    };
    match op {
        Op::Eq => ordering == Ordering::Equal,
        Op::Ne => ordering != Ordering::Equal,
        Op::Lt => ordering == Ordering::Less,
        Op::Le => ordering != Ordering::Greater,
        Op::Gt => ordering == Ordering::Greater,
        Op::Ge => ordering != Ordering::Less,
        Op::Like => false,
    }
}

fn compare_values(
    left: Option<&Value>,
    right: Option<&Value>,
    nulls_last: bool,
    descending: bool,
) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let left = left.filter(|value| !value.is_null());
    let right = right.filter(|value| !value.is_null());
    match (left, right) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => {
            if nulls_last {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Some(_), None) => {
            if nulls_last {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (Some(left), Some(right)) => {
            let ordering = match (left, right) {
                (Value::Number(a), Value::Number(b)) => a
                    .as_f64()
                    .partial_cmp(&b.as_f64())
                    .unwrap_or(Ordering::Equal),
                (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
                _ => left
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase()
                    .cmp(&right.as_str().unwrap_or_default().to_lowercase()),
            };
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        }
    }
}

/// Keeps `attributes` and the selected fields, in the order selected.
fn project(row: &Value, fields: &[String]) -> Value {
    let mut out = Map::new();
    if let Some(attributes) = row.get("attributes") {
        out.insert("attributes".into(), attributes.clone());
    }
    for name in fields {
        out.insert(name.clone(), row.get(name).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
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

    fn create_at(
        &self,
        store: &mut Store,
        entity: &str,
        body: Value,
        at: Stamp,
    ) -> Result<String, ApiResponse> {
        let object = self.object(entity).ok_or_else(|| not_found().response())?;
        let body = body.as_object().cloned().unwrap_or_default();
        let prepared = self
            .prepare_create(store, object, &body)
            .map_err(|error| error.response())?;
        Ok(self.apply(store, prepared, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_case_safe_suffix() {
        let id = sf_id("003", 1);
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("003"));
        assert_eq!(normalize_id(&id[..15]), Some(id.clone()));
        assert_eq!(normalize_id(&id), Some(id.clone()));
        // The documented example: 001A0000006Vm9r -> 001A0000006Vm9rIAC.
        assert_eq!(
            normalize_id("001A0000006Vm9r").as_deref(),
            Some("001A0000006Vm9rIAC")
        );
        assert_eq!(normalize_id("not-an-id"), None);
    }

    #[test]
    fn field_tables_cover_every_object() {
        let objects = load_objects();
        for object in &objects {
            assert!(object.field("Id").is_some(), "{} has no Id", object.name);
            assert!(
                object.field("SystemModstamp").is_some(),
                "{} has no SystemModstamp",
                object.name
            );
        }
        let order = objects
            .iter()
            .find(|object| object.name == "Order")
            .expect("Order is simulated");
        let total = order.field("TotalAmount").expect("Order has TotalAmount");
        assert!(!total.createable && !total.updateable);
    }

    #[test]
    fn like_matches_wildcards_case_insensitively() {
        assert!(like("Ac%", "acme"));
        assert!(like("%me", "Acme"));
        assert!(like("A_me", "acme"));
        assert!(!like("A_me", "acmme"));
    }
}
