//! The Keap REST v1 simulator (`/crm/rest/v1`): companies (no timestamps, no modified-since
//! filter, no DELETE), contacts (`since`/`until` on `last_updated`, DELETE 204),
//! opportunities (POST answers 200, PATCH requires title, contact and stage, no DELETE, no
//! filter on time, `GET /opportunity/stage_pipeline`), products (DELETE 204, `GET
//! /products/sync` change feed with a sync token, deleted products left out of it).
//! `limit`/`offset` paging with `count`, `next` and `previous` URLs (`next` is present even
//! on the last page), Keap's timestamp form `2024-11-07T20:35:13.000+0000`, v1
//! `{"message"}` errors, the API gateway's 401 and 429 bodies, and the `x-keap-*` throttle
//! headers on every answer.
//!
//! Request bodies are validated against the schemas of Keap's published v1 OpenAPI file
//! (`contracts/keap-v1.subset.json` holds the ones used, copied verbatim; Apache-2.0).
//!
//! This module holds the state, auth and throttling, validation and the writes; `render`
//! shapes records as the API answers them, `list` pages and filters lists and serves the
//! product change feed.

mod list;
mod render;

use std::sync::{Arc, Mutex};

use axum::http::{HeaderName, Method, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::http::{ApiRequest, ApiResponse, Limiter, Simulator, Window, retry_after_seconds};
use crate::schema::{Mode, SchemaDoc, is_email};
use crate::store::{Record, Stamp, Store};
use crate::{Backend, FaultKind, SandboxError, Shared, credentials};

const BASE_PATH: &str = "/crm/rest/v1";
const SYSTEM: &str = "keap";
const ENTITIES: [&str; 4] = ["companies", "contacts", "opportunities", "products"];
const MAX_LIMIT: i64 = 1000;
const NOMINAL_THROTTLE: u64 = 240;
const NOMINAL_QUOTA: u64 = 30_000;
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// The sales pipeline every simulated Keap account has: `(id, name, probability %)`.
const STAGES: [(i64, &str, i64); 6] = [
    (10, "New Opportunity", 10),
    (20, "Qualification", 25),
    (30, "Proposal Sent", 50),
    (40, "Negotiation", 75),
    (50, "Won", 100),
    (60, "Lost", 0),
];

/// The stages of [`STAGES`] a deal ends in (won, lost).
const END_STAGES: [i64; 2] = [50, 60];

/// The users opportunities can be assigned to: `(id, first name, last name)`.
const USERS: [(i64, &str, &str); 2] = [(1, "Sandbox", "Admin"), (2, "Sam", "Seller")];

pub struct Keap {
    shared: Arc<Shared>,
    root: String,
    doc: SchemaDoc,
    enforce: Mutex<Limiter>,
    report: Mutex<Limiter>,
    throttle_limit: u64,
    quota_limit: u64,
    /// Contact list pages after which a person edits the page's first contact
    /// ([`crate::Sandbox::edit_between_pages`]).
    edits_between_pages: std::sync::atomic::AtomicUsize,
}

fn message(status: StatusCode, text: impl Into<String>) -> ApiResponse {
    ApiResponse::json(status, json!({"message": text.into()}))
}

fn gateway_fault(status: StatusCode, faultstring: &str, errorcode: &str) -> ApiResponse {
    ApiResponse::json(
        status,
        json!({"fault": {"faultstring": faultstring, "detail": {"errorcode": errorcode}}}),
    )
}

fn throttled_body() -> Value {
    json!({"code": "429", "message": "Quota Exceeded", "status": "Request Throttled", "details": null})
}

fn singular(entity: &str) -> &'static str {
    match entity {
        "companies" => "Company",
        "contacts" => "Contact",
        "opportunities" => "Opportunity",
        _ => "Product",
    }
}

fn not_found(entity: &str) -> ApiResponse {
    message(
        StatusCode::NOT_FOUND,
        format!("Unable to find this {}", singular(entity)),
    )
}

fn bad_request(text: impl Into<String>) -> ApiResponse {
    message(StatusCode::BAD_REQUEST, text)
}

fn non_null(value: Option<&Value>) -> Option<&Value> {
    value.filter(|value| !value.is_null())
}

impl Keap {
    pub fn new(
        shared: Arc<Shared>,
        root: &str,
        windows: Vec<Window>,
    ) -> Result<Self, SandboxError> {
        let doc = SchemaDoc::parse(include_str!("../contracts/keap-v1.subset.json"))?;
        let throttle_limit = windows
            .iter()
            .find(|window| window.per_ms == MINUTE_MS)
            .map_or(NOMINAL_THROTTLE, |window| window.requests);
        let quota_limit = windows
            .iter()
            .find(|window| window.per_ms == DAY_MS)
            .map_or(NOMINAL_QUOTA, |window| window.requests);
        let report = Limiter::new(&[
            Window {
                requests: u64::MAX,
                per_ms: MINUTE_MS,
            },
            Window {
                requests: u64::MAX,
                per_ms: DAY_MS,
            },
        ]);
        // Only products have a change feed (`/products/sync`); other entities keep no log.
        shared.store().entity_mut(SYSTEM, "products").log_changes();
        Ok(Self {
            shared,
            root: root.to_string(),
            doc,
            enforce: Mutex::new(Limiter::new(&windows)),
            report: Mutex::new(report),
            throttle_limit,
            quota_limit,
            edits_between_pages: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn authorized(request: &ApiRequest) -> bool {
        let key = request
            .header("x-keap-api-key")
            .or_else(|| request.bearer());
        key == Some(credentials::KEAP_API_KEY)
    }

    /// The `x-keap-*` informational headers.
    fn throttle_headers(&self, mut response: ApiResponse) -> ApiResponse {
        let now = self.shared.clock.now();
        let usage = self
            .report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .usage(now);
        let (minute, day) = match usage.as_slice() {
            [minute, day] => (*minute, *day),
            _ => return response,
        };
        let headers = [
            ("x-keap-product-quota-limit", self.quota_limit.to_string()),
            ("x-keap-product-quota-time-unit", "day".to_string()),
            ("x-keap-product-quota-interval", "1".to_string()),
            (
                "x-keap-product-quota-available",
                self.quota_limit.saturating_sub(day.used).to_string(),
            ),
            ("x-keap-product-quota-used", day.used.to_string()),
            (
                "x-keap-product-quota-expiry-time",
                day.resets_at.to_string(),
            ),
            (
                "x-keap-product-throttle-limit",
                self.throttle_limit.to_string(),
            ),
            ("x-keap-product-throttle-time-unit", "minute".to_string()),
            ("x-keap-product-throttle-interval", "1".to_string()),
            (
                "x-keap-product-throttle-available",
                self.throttle_limit.saturating_sub(minute.used).to_string(),
            ),
            ("x-keap-product-throttle-used", minute.used.to_string()),
            ("x-keap-tenant-throttle-limit", "10000".to_string()),
            ("x-keap-tenant-throttle-time-unit", "minute".to_string()),
            ("x-keap-tenant-throttle-interval", "1".to_string()),
            (
                "x-keap-tenant-throttle-available",
                10_000u64.saturating_sub(minute.used).to_string(),
            ),
            ("x-keap-tenant-throttle-used", minute.used.to_string()),
            ("x-keap-tenant-id", "sandbox.infusionsoft.com".to_string()),
            ("x-keap-product-spike-limit", "10ps".to_string()),
        ];
        for (name, value) in headers {
            response = response.with_header(HeaderName::from_static(name), value);
        }
        response
    }

    fn entity_store<'a>(store: &'a Store, entity: &str) -> Option<&'a crate::store::EntityStore> {
        store.entity(SYSTEM, entity)
    }

    fn find<'a>(store: &'a Store, entity: &str, id: &str) -> Option<&'a Record> {
        let id = id.parse::<u64>().ok()?.to_string();
        Self::entity_store(store, entity)?
            .get(&id)
            .filter(|record| record.is_live())
    }

    fn validate(&self, schema_name: &str, body: &Value) -> Result<(), ApiResponse> {
        let schema = json!({ "$ref": format!("#/components/schemas/{schema_name}") });
        let mode = Mode {
            null_as_absent: true,
            lenient_datetime: true,
        };
        let violation = self
            .doc
            .validate(&schema, body, mode)
            .into_iter()
            // Custom field content is free-form in practice, whatever the file says.
            .find(|violation| {
                !(violation.path.starts_with("custom_fields[")
                    && violation.path.ends_with(".content"))
            });
        match violation {
            Some(violation) => Err(bad_request(violation.message)),
            None => Ok(()),
        }
    }

    /// Rules the schemas do not express.
    fn check_rules(
        &self,
        store: &Store,
        entity: &str,
        fields: &Map<String, Value>,
        creating: bool,
    ) -> Result<(), ApiResponse> {
        match entity {
            "companies" => {
                if let Some(email) = non_null(fields.get("email_address")).and_then(Value::as_str)
                    && !email.is_empty()
                    && !is_email(email)
                {
                    return Err(bad_request(format!("Email address '{email}' is not valid")));
                }
                if let Some(address) = non_null(fields.get("address")) {
                    check_region(address)?;
                }
            }
            "contacts" => {
                let emails = fields.get("email_addresses").and_then(Value::as_array);
                let phones = fields.get("phone_numbers").and_then(Value::as_array);
                if creating && emails.is_none_or(Vec::is_empty) && phones.is_none_or(Vec::is_empty)
                {
                    return Err(bad_request(
                        "Contact must contain an e-mail address or phone number",
                    ));
                }
                for email in emails.into_iter().flatten() {
                    if let Some(address) = email.get("email").and_then(Value::as_str)
                        && !is_email(address)
                    {
                        return Err(bad_request(format!(
                            "Email address '{address}' is not valid"
                        )));
                    }
                }
                if emails.is_some_and(|emails| emails.len() > 3) {
                    return Err(bad_request("A contact can have at most 3 email addresses"));
                }
                for address in fields
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    check_region(address)?;
                }
                if let Some(company_id) =
                    non_null(fields.get("company")).and_then(|company| company.get("id"))
                {
                    let known = company_id.as_u64().is_some_and(|id| {
                        Self::find(store, "companies", &id.to_string()).is_some()
                    });
                    if !known {
                        return Err(bad_request(format!(
                            "Company with id {company_id} not found"
                        )));
                    }
                }
            }
            "opportunities" => {
                if let Some(contact_id) =
                    non_null(fields.get("contact")).and_then(|contact| contact.get("id"))
                {
                    let known = contact_id
                        .as_u64()
                        .is_some_and(|id| Self::find(store, "contacts", &id.to_string()).is_some());
                    if !known {
                        return Err(bad_request(format!(
                            "Contact with id {contact_id} not found"
                        )));
                    }
                }
                if let Some(stage_id) =
                    non_null(fields.get("stage")).and_then(|stage| stage.get("id"))
                    && !STAGES
                        .iter()
                        .any(|(id, _, _)| stage_id.as_i64() == Some(*id))
                {
                    return Err(bad_request(format!("Stage with id {stage_id} not found")));
                }
                if let Some(user_id) = non_null(fields.get("user")).and_then(|user| user.get("id"))
                    && !USERS.iter().any(|(id, _, _)| user_id.as_i64() == Some(*id))
                {
                    return Err(bad_request(format!("User with id {user_id} not found")));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn write_schema(entity: &str) -> &'static str {
        match entity {
            "companies" => "CreateOrPatchCompany",
            "contacts" => "CreateOrPatchContact",
            "opportunities" => "UpdateOpportunityRequest",
            _ => "CreateProduct",
        }
    }

    /// Keeps only what a client may write; read-only fields in a body are ignored.
    fn writable(&self, entity: &str, body: &Value) -> Map<String, Value> {
        let schema =
            json!({ "$ref": format!("#/components/schemas/{}", Self::write_schema(entity)) });
        let names = self.doc.property_names(&schema);
        body.as_object()
            .map(|object| {
                object
                    .iter()
                    .filter(|(name, _)| names.contains(&name.as_str()))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn create_in(
        &self,
        store: &mut Store,
        entity: &str,
        body: Value,
        at: Stamp,
        check_schema: bool,
    ) -> Result<String, ApiResponse> {
        if !body.is_object() {
            return Err(bad_request(
                "Input could not be converted to a valid request",
            ));
        }
        if check_schema {
            self.validate(Self::write_schema(entity), &body)?;
        }
        let fields = self.writable(entity, &body);
        self.check_rules(store, entity, &fields, true)?;
        let entity_store = store.entity_mut(SYSTEM, entity);
        let id = entity_store.allocate_id().to_string();
        let record = entity_store.new_record(id.clone(), fields, at);
        entity_store.put(record);
        store.observe(at);
        Ok(id)
    }

    fn route_inner(&self, request: &ApiRequest) -> ApiResponse {
        let Some(segments) = request.segments_after(BASE_PATH) else {
            return message(StatusCode::NOT_FOUND, "Resource not found");
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = &request.method;
        match segments.as_slice() {
            ["opportunity", "stage_pipeline"] if method == Method::GET => self.stage_pipeline(),
            ["products", "sync"] if method == Method::GET => self.product_sync(request),
            [entity] if ENTITIES.contains(entity) => match *method {
                Method::GET => self.list(entity, request),
                Method::POST => self.create(entity, request),
                Method::PUT if *entity == "contacts" => self.upsert_contact(request),
                _ => not_supported(method),
            },
            [entity, id] if ENTITIES.contains(entity) => match *method {
                Method::GET => self.get(entity, id, request),
                Method::PATCH => self.update(entity, id, request),
                Method::DELETE if matches!(*entity, "contacts" | "products") => {
                    self.delete(entity, id)
                }
                _ => not_supported(method),
            },
            _ => message(StatusCode::NOT_FOUND, "Resource not found"),
        }
    }

    /// `GET /opportunity/stage_pipeline`: the account's opportunity stages.
    ///
    /// Real behaviour: the official v1 OpenAPI answers 200 with a flat array of
    /// `SalesPipeline` objects, one per stage: `stage_id`, `stage_name`, `stage_order`,
    /// `stage_count`, `is_default` and `end_stage` ("Retrieves a list of all opportunity
    /// stages with pipeline details"); there is no pipeline object around the stages. What
    /// the last three mean is not documented; here `stage_count` is the number of stages
    /// in the pipeline, `is_default` marks the stage a new opportunity starts in (the
    /// first) and `end_stage` the stages a deal ends in (won, lost).
    fn stage_pipeline(&self) -> ApiResponse {
        let stages: Vec<Value> = STAGES
            .iter()
            .enumerate()
            .map(|(index, (id, name, _))| {
                json!({
                    "stage_id": id,
                    "stage_name": name,
                    "stage_order": index + 1,
                    "stage_count": STAGES.len(),
                    "is_default": index == 0,
                    "end_stage": END_STAGES.contains(id),
                })
            })
            .collect();
        ApiResponse::json(StatusCode::OK, Value::Array(stages))
    }

    fn body(request: &ApiRequest) -> Result<Value, ApiResponse> {
        request
            .json()
            .map_err(|_| bad_request("Input could not be converted to a valid request"))
    }

    fn create(&self, entity: &str, request: &ApiRequest) -> ApiResponse {
        let body = match Self::body(request) {
            Ok(body) => body,
            Err(response) => return response,
        };
        let mut store = self.shared.store();
        let at = self.shared.stamp(&mut store);
        match self.create_in(&mut store, entity, body, at, true) {
            Ok(id) => {
                let Some(record) = Self::find(&store, entity, &id) else {
                    return not_found(entity);
                };
                let status = if entity == "opportunities" {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                Self::answer(request, status, &store, entity, record, &[], true)
            }
            Err(response) => response,
        }
    }

    /// An answer carrying one record: companies and contacts are written out as JSON text
    /// straight from their stored fields over HTTP; other entities, and every answer to
    /// direct access (read back as a value), are rendered as values. A contact read by id
    /// carries `tag_ids` besides what `render` gives (`full` off).
    fn answer(
        request: &ApiRequest,
        status: StatusCode,
        store: &Store,
        entity: &str,
        record: &Record,
        optional: &[String],
        full: bool,
    ) -> ApiResponse {
        let tag_ids = request.method == Method::GET && entity == "contacts";
        if !request.direct
            && let Some(text) = Self::text(store, entity, record, optional, full, tag_ids)
            && let Ok(text) = serde_json::to_vec(&text)
        {
            return ApiResponse::json_text(status, text);
        }
        let mut body = Self::render(store, entity, record, optional, full);
        if tag_ids && let Some(object) = body.as_object_mut() {
            object.insert("tag_ids".into(), json!([]));
        }
        ApiResponse::json(status, body)
    }

    /// `PUT /contacts`: create or update by `duplicate_option` (`Email` or
    /// `EmailAndName`); answers 200 either way.
    fn upsert_contact(&self, request: &ApiRequest) -> ApiResponse {
        let body = match Self::body(request) {
            Ok(Value::Object(body)) => body,
            Ok(_) => return bad_request("Input could not be converted to a valid request"),
            Err(response) => return response,
        };
        let with_name = match body.get("duplicate_option").and_then(Value::as_str) {
            Some("Email") => false,
            Some("EmailAndName") => true,
            _ => return bad_request("duplicate_option must be Email or EmailAndName"),
        };
        if let Err(response) = self.validate("CreateOrPatchContact", &Value::Object(body.clone())) {
            return response;
        }
        let changes = self.writable("contacts", &Value::Object(body.clone()));
        let email = changes
            .get("email_addresses")
            .and_then(Value::as_array)
            .and_then(|emails| emails.first())
            .and_then(|email| email.get("email"))
            .and_then(Value::as_str)
            .map(str::to_lowercase);
        let Some(email) = email else {
            return bad_request("Contact must contain an e-mail address to match on");
        };
        let same = |record: &Record, name: &str| {
            let wanted = changes
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default();
            let found = record.fields.get_str(name).unwrap_or_default();
            wanted.eq_ignore_ascii_case(found)
        };
        let mut store = self.shared.store();
        let existing = Self::entity_store(&store, "contacts").and_then(|contacts| {
            contacts
                .by_change(false)
                .into_iter()
                .find(|record| {
                    let emails = record.fields.get("email_addresses");
                    let emails = emails.as_ref().and_then(Value::as_array);
                    let matches_email = emails.into_iter().flatten().any(|entry| {
                        entry
                            .get("email")
                            .and_then(Value::as_str)
                            .is_some_and(|address| address.eq_ignore_ascii_case(&email))
                    });
                    matches_email
                        && (!with_name
                            || (same(record, "given_name") && same(record, "family_name")))
                })
                .cloned()
        });
        let at = self.shared.stamp(&mut store);
        let id = match existing {
            Some(mut record) => {
                for (name, value) in changes {
                    record.fields.insert(name, value);
                }
                if let Err(response) =
                    self.check_rules(&store, "contacts", &record.fields.to_map(), false)
                {
                    return response;
                }
                record.modified = at;
                record.touched = at;
                let id = record.id.clone();
                store.entity_mut(SYSTEM, "contacts").put(record);
                id
            }
            None => {
                match self.create_in(&mut store, "contacts", Value::Object(changes), at, true) {
                    Ok(id) => id,
                    Err(response) => return response,
                }
            }
        };
        match Self::find(&store, "contacts", &id) {
            Some(record) => ApiResponse::json(
                StatusCode::OK,
                Self::render(&store, "contacts", record, &[], true),
            ),
            None => not_found("contacts"),
        }
    }

    fn get(&self, entity: &str, id: &str, request: &ApiRequest) -> ApiResponse {
        let store = self.shared.store();
        match Self::find(&store, entity, id) {
            Some(record) => {
                let optional = Self::optional_properties(request);
                let full = matches!(entity, "opportunities" | "products");
                Self::answer(
                    request,
                    StatusCode::OK,
                    &store,
                    entity,
                    record,
                    &optional,
                    full,
                )
            }
            None => not_found(entity),
        }
    }

    fn update(&self, entity: &str, id: &str, request: &ApiRequest) -> ApiResponse {
        let body = match Self::body(request) {
            Ok(body) => body,
            Err(response) => return response,
        };
        let mut store = self.shared.store();
        let Some(current) = Self::find(&store, entity, id).cloned() else {
            return not_found(entity);
        };
        if !body.is_object() {
            return bad_request("Input could not be converted to a valid request");
        }
        // Real behaviour: a PATCH body is checked against the schema the official v1 OpenAPI
        // gives it, `required` fields included. Companies: `CreateOrPatchCompany` requires
        // `company_name`; products: `CreateProduct` requires `product_name`. Opportunities:
        // the file gives `PATCH /opportunities/{opportunityId}` no body schema of its own
        // but says "the POST payload for this request is identical to 'Replace an
        // Opportunity'", whose body (`UpdateOpportunityRequest`) requires `contact`,
        // `opportunity_title` and `stage`: a PATCH changing one field carries the three.
        if let Err(response) = self.validate(Self::write_schema(entity), &body) {
            return response;
        }
        let mut changes = self.writable(entity, &body);
        if entity == "contacts" {
            let mask: Vec<String> = Self::list_parameter(request, "update_mask");
            if !mask.is_empty() {
                changes.retain(|name, _| mask.contains(name));
            }
        }
        let mut record = current;
        for (name, value) in changes {
            record.fields.insert(name, value);
        }
        if let Err(response) = self.check_rules(&store, entity, &record.fields.to_map(), false) {
            return response;
        }
        let at = self.shared.stamp(&mut store);
        record.modified = at;
        record.touched = at;
        let answer = Self::answer(request, StatusCode::OK, &store, entity, &record, &[], true);
        store.entity_mut(SYSTEM, entity).put(record);
        answer
    }

    fn list_parameter(request: &ApiRequest, name: &str) -> Vec<String> {
        request
            .query
            .iter()
            .filter(|(key, _)| key == name)
            .flat_map(|(_, value)| value.split(',').map(|item| item.trim().to_string()))
            .filter(|item| !item.is_empty())
            .collect()
    }

    fn delete(&self, entity: &str, id: &str) -> ApiResponse {
        let mut store = self.shared.store();
        let Some(record) = Self::find(&store, entity, id) else {
            return not_found(entity);
        };
        let id = record.id.clone();
        let at = self.shared.stamp(&mut store);
        store.entity_mut(SYSTEM, entity).remove(&id, at);
        ApiResponse::empty(StatusCode::NO_CONTENT)
    }
}

fn check_region(address: &Value) -> Result<(), ApiResponse> {
    let region = non_null(address.get("region"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let country = non_null(address.get("country_code"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !region.is_empty() && country.is_empty() {
        return Err(bad_request("country_code is required when region is given"));
    }
    Ok(())
}

fn not_supported(method: &Method) -> ApiResponse {
    message(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Request method '{method}' not supported"),
    )
}

impl Simulator for Keap {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    fn handle(&self, request: &ApiRequest) -> ApiResponse {
        if !Self::authorized(request) {
            return gateway_fault(
                StatusCode::UNAUTHORIZED,
                "Invalid Access Token",
                "keymanagement.service.invalid_access_token",
            );
        }
        let now = self.shared.clock.now();
        let refused = self
            .enforce
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .check(now)
            .err();
        if let Some(wait) = refused {
            let response = ApiResponse::json(StatusCode::TOO_MANY_REQUESTS, throttled_body())
                .with_header(header::RETRY_AFTER, retry_after_seconds(wait).to_string())
                .throttled();
            return self.throttle_headers(response);
        }
        let _ = self
            .report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .check(now);
        let response = self.route_inner(request);
        self.throttle_headers(response)
    }

    fn fault(&self, kind: FaultKind) -> ApiResponse {
        match kind {
            FaultKind::TooManyRequests => {
                ApiResponse::json(StatusCode::TOO_MANY_REQUESTS, throttled_body())
                    .with_header(header::RETRY_AFTER, "1")
            }
            FaultKind::ServerError => message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            ),
            FaultKind::Unavailable => gateway_fault(
                StatusCode::SERVICE_UNAVAILABLE,
                "The Service is temporarily unavailable",
                "messaging.adaptors.http.flow.ServiceUnavailable",
            ),
            FaultKind::Timeout => gateway_fault(
                StatusCode::GATEWAY_TIMEOUT,
                "Gateway Timeout",
                "messaging.adaptors.http.flow.GatewayTimeout",
            ),
            FaultKind::LostResponse => gateway_fault(
                StatusCode::BAD_GATEWAY,
                "Unexpected EOF at target",
                "messaging.adaptors.http.flow.UnexpectedEOFAtTarget",
            ),
        }
    }
}

impl Backend for Keap {
    fn entities(&self) -> Vec<&'static str> {
        ENTITIES.to_vec()
    }

    fn route(&self, request: &ApiRequest) -> ApiResponse {
        self.route_inner(request)
    }

    fn collection_path(&self, entity: &str) -> String {
        format!("{BASE_PATH}/{entity}")
    }

    fn records(&self, entity: &str) -> Vec<Value> {
        let store = self.shared.store();
        let Some(entity_store) = Self::entity_store(&store, entity) else {
            return Vec::new();
        };
        entity_store
            .by_change(false)
            .into_iter()
            .map(|record| Self::render(&store, entity, record, &[], true))
            .collect()
    }

    fn create_at(
        &self,
        store: &mut Store,
        entity: &str,
        body: Value,
        at: Stamp,
        check_schema: bool,
    ) -> Result<String, ApiResponse> {
        self.create_in(store, entity, body, at, check_schema)
    }

    fn edit_between_pages(&self, pages: usize) -> bool {
        self.edits_between_pages
            .store(pages, std::sync::atomic::Ordering::Relaxed);
        true
    }

    fn record(&self, entity: &str, id: &str) -> Option<Value> {
        let store = self.shared.store();
        Self::find(&store, entity, id).map(|record| Self::render(&store, entity, record, &[], true))
    }

    /// A person's edit: the API's PATCH requires the name of companies and products, and
    /// the title, contact and stage of opportunities, even when they do not change (see
    /// [`Keap::update`]), so the current ones are filled in.
    fn edit(&self, entity: &str, id: &str, patch: Value) -> ApiResponse {
        let mut patch = patch;
        let required: &[&str] = match entity {
            "companies" => &["company_name"],
            "products" => &["product_name"],
            "opportunities" => &["opportunity_title", "contact", "stage"],
            _ => &[],
        };
        if let Some(object) = patch.as_object_mut() {
            let store = self.shared.store();
            let current = Self::find(&store, entity, id);
            for name in required {
                if object.contains_key(*name) {
                    continue;
                }
                let Some(value) = current.and_then(|record| record.fields.get(name)) else {
                    continue;
                };
                // References are written as `{id}`.
                let value = match value.get("id") {
                    Some(ref_id) if value.is_object() => json!({ "id": ref_id }),
                    _ => value.clone(),
                };
                object.insert((*name).to_string(), value);
            }
        }
        let path = format!("{BASE_PATH}/{entity}/{id}");
        self.route_inner(&crate::request(Method::PATCH, &path, Some(&patch)))
    }
}
