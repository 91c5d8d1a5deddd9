//! The one backend of the three in-house simulators (customcrm, customerp, customwebshop),
//! driven by their OpenAPI files: request bodies are validated against the contract's
//! `*Write`/`*Patch` schemas, records are rendered in the order and with the defaults of the
//! read schema, and list parameters take their bounds from the contract. What differs between
//! the systems is data, not code: each system module gives its [`Conventions`] (paths, paging,
//! modified-since semantics, update method, delete mode, ids, references) and its [`Auth`]
//! (`auth`), and [`InHouse`] serves any of them.

mod auth;

use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode, header};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value, json};

use crate::http::{ApiRequest, ApiResponse, Limiter, Simulator, Window, retry_after_seconds};
pub use crate::inhouse::auth::Auth;
use crate::schema::{Mode, SchemaDoc, SchemaDocError, Violation};
use crate::store::{
    EntityStore, Listing, Record, Sort, Stamp, Store, parse_rfc3339, rfc3339, uuid_v4,
};
use crate::{Backend, FaultKind, Shared, request};

/// How a list is paged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// `page`/`per_page` -> `{results, page, per_page, total_pages}`.
    Pages,
    /// `offset`/`limit` -> `{data, total, offset, limit}`.
    Offset,
    /// `cursor`/`page_size` -> `{items, next_cursor}`.
    Cursor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMethod {
    Patch,
    /// PUT replaces the whole record.
    Put,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// The record is gone (404 afterwards) and nothing tells that it was there.
    Hard,
    /// The record is gone and a tombstone is listed under `/deleted`.
    Tombstone,
    /// The record stays with `deleted: true`.
    Soft,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Integer,
    Uuid,
}

/// A server-assigned number: its field and how the n-th number reads.
pub type NumberFormat = Option<(&'static str, fn(u64) -> String)>;

/// One entity of an in-house system and its schemas in the contract.
#[derive(Debug, Clone)]
pub struct EntityDef {
    pub name: &'static str,
    pub read: &'static str,
    pub write: &'static str,
    pub patch: &'static str,
    /// A server-assigned number: its field and how to format it.
    pub number: NumberFormat,
    /// Fields unique among live records (422 on duplicates).
    pub unique: &'static [&'static str],
}

/// What distinguishes one in-house system from another: its wire format and its auth.
#[derive(Debug, Clone)]
pub struct Conventions {
    pub system: &'static str,
    pub auth: Auth,
    pub base_path: &'static str,
    pub contract: &'static str,
    pub entities: Vec<EntityDef>,
    pub paging: Paging,
    pub since_param: &'static str,
    /// `true`: only records modified strictly after the instant; `false`: at or after.
    pub since_strict: bool,
    pub update: UpdateMethod,
    pub delete: DeleteMode,
    pub ids: IdKind,
    pub created_field: Option<&'static str>,
    pub modified_field: &'static str,
    pub deleted_field: Option<&'static str>,
    /// How the rate limit reads in 429 messages (`10 requests/s`).
    pub limit_text: &'static str,
    /// Foreign keys checked on writes: `(entity, field, target entity)`; a field
    /// `lines[].product_id` is checked in every item of `lines`.
    pub references: &'static [(&'static str, &'static str, &'static str)],
    /// Whether a delete of a record that live records still reference through
    /// [`Conventions::references`] is refused (409 `still_referenced`) rather than leaving
    /// references to nothing behind.
    pub refuse_referenced_delete: bool,
}

/// Where one property of a read schema comes from when a record is rendered.
#[derive(Debug, Clone)]
enum Source {
    Id,
    /// The server-assigned number (absent while the record has none).
    Number,
    Created,
    Modified,
    Deleted,
    /// A stored field, else the schema's default for an absent optional value (if any).
    Field(Option<Value>),
}

/// How an entity's records are rendered: its read schema's properties in order, each with
/// its [`Source`]; worked out once from the contract, not on every record.
type RenderPlan = Vec<(String, Source)>;

/// An in-house simulator: one system's [`Conventions`] served over the shared store.
pub struct InHouse {
    pub conventions: Conventions,
    pub doc: SchemaDoc,
    pub shared: Arc<Shared>,
    /// Per entity of [`Conventions::entities`], in its order; `None` without a read schema.
    plans: Vec<Option<RenderPlan>>,
    limiter: Mutex<Limiter>,
    /// Access tokens issued by a client credentials grant, and when they expire.
    tokens: auth::Tokens,
}

/// The contract's error body: `{"error":{"code","message","field"}}`.
pub fn error(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    field: Option<&str>,
) -> ApiResponse {
    ApiResponse::json(
        status,
        json!({"error": {"code": code, "message": message.into(), "field": field}}),
    )
}

fn invalid(violation: &Violation) -> ApiResponse {
    let field = (!violation.path.is_empty()).then_some(violation.path.as_str());
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        violation.code,
        &violation.message,
        field,
    )
}

impl InHouse {
    pub fn new(
        conventions: Conventions,
        shared: Arc<Shared>,
        windows: Vec<Window>,
    ) -> Result<Self, SchemaDocError> {
        let doc = SchemaDoc::parse(conventions.contract)?;
        let plans = conventions
            .entities
            .iter()
            .map(|entity| render_plan(&conventions, &doc, entity))
            .collect();
        {
            let mut store = shared.store();
            for entity in &conventions.entities {
                store
                    .entity_mut(conventions.system, entity.name)
                    .set_unique(entity.unique);
            }
        }
        Ok(Self {
            conventions,
            doc,
            shared,
            plans,
            limiter: Mutex::new(Limiter::new(&windows)),
            tokens: auth::Tokens::default(),
        })
    }

    pub fn entity(&self, name: &str) -> Option<&EntityDef> {
        self.conventions
            .entities
            .iter()
            .find(|entity| entity.name == name)
    }

    /// 429 with `Retry-After` when over the rate limit; counts the request otherwise.
    fn throttle(&self) -> Option<ApiResponse> {
        let now = self.shared.clock.now();
        let wait = self
            .limiter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .check(now)
            .err()?;
        let seconds = retry_after_seconds(wait);
        Some(
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "rate limit exceeded ({}); retry after {seconds} s",
                    self.conventions.limit_text
                ),
                None,
            )
            .with_header(header::RETRY_AFTER, seconds.to_string())
            .throttled(),
        )
    }

    fn not_found(&self, what: &str) -> ApiResponse {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
            None,
        )
    }

    fn canonical_id(&self, text: &str) -> Option<String> {
        match self.conventions.ids {
            IdKind::Integer => text.parse::<u64>().ok().map(|id| id.to_string()),
            IdKind::Uuid => crate::schema::is_uuid(text).then(|| text.to_ascii_lowercase()),
        }
    }

    fn render_id(&self, id: &str) -> Value {
        match self.conventions.ids {
            IdKind::Integer => id.parse::<u64>().map(Value::from).unwrap_or(Value::Null),
            IdKind::Uuid => Value::String(id.to_string()),
        }
    }

    fn plan(&self, entity: &EntityDef) -> Option<&RenderPlan> {
        self.conventions
            .entities
            .iter()
            .position(|known| known.name == entity.name)
            .and_then(|index| self.plans.get(index)?.as_ref())
    }

    /// An answer carrying one record: written out as JSON text straight from the stored
    /// fields over HTTP, rendered as a value for direct access (which reads it as one).
    fn record_answer(
        &self,
        request: &ApiRequest,
        status: StatusCode,
        entity: &EntityDef,
        record: &Record,
    ) -> ApiResponse {
        if request.direct {
            ApiResponse::json(status, self.render(entity, record))
        } else {
            ApiResponse::json_text(status, self.render_text(entity, record))
        }
    }

    /// A record as [`InHouse::render`] gives it, written out as JSON text straight from the
    /// stored fields (no `Value` built): the body of a GET, a create or an update.
    fn render_text(&self, entity: &EntityDef, record: &Record) -> Vec<u8> {
        let rendered = Rendered {
            house: self,
            plan: self.plan(entity),
            record,
        };
        serde_json::to_vec(&rendered).unwrap_or_else(|_| {
            serde_json::to_vec(&self.render(entity, record)).unwrap_or_default()
        })
    }

    /// A record as the API returns it: the read schema's properties in order, absent
    /// optional values as their defaults.
    pub fn render(&self, entity: &EntityDef, record: &Record) -> Value {
        let Some(plan) = self.plan(entity) else {
            return Value::Null;
        };
        let mut fields = record.fields.decode();
        let mut out = Map::with_capacity(plan.len());
        for (name, source) in plan {
            let value = match source {
                Source::Id => Some(self.render_id(&record.id)),
                Source::Number => record.number.clone().map(Value::String),
                Source::Created => Some(Value::String(rfc3339(record.created))),
                Source::Modified => Some(Value::String(rfc3339(record.modified))),
                Source::Deleted => Some(Value::Bool(!record.is_live())),
                Source::Field(default) => fields.take(name).or_else(|| default.clone()),
            };
            if let Some(value) = value {
                out.insert(name.clone(), value);
            }
        }
        Value::Object(out)
    }

    fn validate(&self, schema_name: &str, body: &Value) -> Result<(), ApiResponse> {
        // The component itself, as a `$ref` to it resolves (none: everything passes).
        let Some(schema) = self.doc.component(schema_name) else {
            return Ok(());
        };
        match self.doc.validate(schema, body, Mode::default()).first() {
            Some(violation) => Err(invalid(violation)),
            None => Ok(()),
        }
    }

    /// 422 when a reference names no live record of its target entity.
    fn check_references(
        &self,
        store: &Store,
        entity: &EntityDef,
        fields: &Map<String, Value>,
    ) -> Result<(), ApiResponse> {
        let references = self
            .conventions
            .references
            .iter()
            .filter(|(owner, _, _)| *owner == entity.name);
        for (_, path, target) in references {
            let mut values: Vec<(String, &Value)> = Vec::new();
            match path.split_once("[].") {
                Some((list, field)) => {
                    for (index, item) in fields
                        .get(list)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        if let Some(value) = item.get(field) {
                            values.push((format!("{list}[{index}].{field}"), value));
                        }
                    }
                }
                None => {
                    if let Some(value) = fields.get(*path) {
                        values.push((path.to_string(), value));
                    }
                }
            }
            for (field, value) in values {
                let id = match value {
                    Value::Null => continue,
                    Value::String(text) => self.canonical_id(text),
                    other => self.canonical_id(&other.to_string()),
                };
                let exists = id.is_some_and(|id| {
                    store
                        .entity(self.conventions.system, target)
                        .and_then(|records| records.get(&id))
                        .is_some_and(Record::is_live)
                });
                if !exists {
                    return Err(error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_reference",
                        format!(
                            "{field} {value} does not refer to an existing {}",
                            singular(target)
                        ),
                        Some(&field),
                    ));
                }
            }
        }
        Ok(())
    }

    fn duplicate(&self, entity: &EntityDef, field: &str) -> ApiResponse {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "duplicate",
            format!("another {} already has this {field}", singular(entity.name)),
            Some(field),
        )
    }

    fn body(&self, request: &ApiRequest) -> Result<Value, ApiResponse> {
        request.json().map_err(|source| {
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_json",
                format!("request body is not valid JSON: {source}"),
                None,
            )
        })
    }

    fn create(&self, entity: &EntityDef, request: &ApiRequest) -> ApiResponse {
        let body = match self.body(request) {
            Ok(body) => body,
            Err(response) => return response,
        };
        let mut store = self.shared.store();
        let at = self.shared.stamp(&mut store);
        match self.create_at(&mut store, entity.name, body, at, true) {
            Ok(id) => match store
                .entity(self.conventions.system, entity.name)
                .and_then(|entity_store| entity_store.get(&id))
            {
                Some(record) => self.record_answer(request, StatusCode::CREATED, entity, record),
                None => self.not_found(singular(entity.name)),
            },
            Err(response) => response,
        }
    }

    fn get(&self, entity: &EntityDef, id: &str, request: &ApiRequest) -> ApiResponse {
        let store = self.shared.store();
        let record = self
            .canonical_id(id)
            .and_then(|id| store.entity(self.conventions.system, entity.name)?.get(&id));
        match record {
            Some(record) => self.record_answer(request, StatusCode::OK, entity, record),
            None => self.not_found(singular(entity.name)),
        }
    }

    fn update(&self, entity: &EntityDef, id: &str, request: &ApiRequest) -> ApiResponse {
        let body = match self.body(request) {
            Ok(body) => body,
            Err(response) => return response,
        };
        let Some(id) = self.canonical_id(id) else {
            return self.not_found(singular(entity.name));
        };
        let replace = self.conventions.update == UpdateMethod::Put;
        let schema = if replace { entity.write } else { entity.patch };
        let mut store = self.shared.store();
        let Some(current) = store
            .entity(self.conventions.system, entity.name)
            .and_then(|entity_store| entity_store.get(&id))
            .filter(|record| record.is_live())
            .cloned()
        else {
            return self.not_found(singular(entity.name));
        };
        if let Err(response) = self.validate(schema, &body) {
            return response;
        }
        let changes = body.as_object().cloned().unwrap_or_default();
        let mut record = current;
        if replace {
            record.fields = changes.into();
        } else {
            for (name, value) in changes {
                record.fields.insert(name, value);
            }
        }
        if let Err(response) = self.check_references(&store, entity, &record.fields.to_map()) {
            return response;
        }
        if let Some(field) = store
            .entity_mut(self.conventions.system, entity.name)
            .unique_conflict(&record.fields, Some(id.as_str()))
        {
            return self.duplicate(entity, &field);
        }
        let at = self.shared.stamp(&mut store);
        record.modified = at;
        record.touched = at;
        let answer = self.record_answer(request, StatusCode::OK, entity, &record);
        store
            .entity_mut(self.conventions.system, entity.name)
            .put(record);
        answer
    }

    fn delete(&self, entity: &EntityDef, id: &str) -> ApiResponse {
        let Some(id) = self.canonical_id(id) else {
            return self.not_found(singular(entity.name));
        };
        let mut store = self.shared.store();
        let live = store
            .entity(self.conventions.system, entity.name)
            .and_then(|entity_store| entity_store.get(&id))
            .is_some_and(Record::is_live);
        if !live {
            return self.not_found(singular(entity.name));
        }
        if self.conventions.refuse_referenced_delete
            && let Some((owner, owner_id, field)) = self.referenced_by(&store, entity.name, &id)
        {
            return error(
                StatusCode::CONFLICT,
                "still_referenced",
                format!(
                    "{} {id} is still referenced by {} {owner_id} ({field}); delete or reassign that first",
                    singular(entity.name),
                    singular(owner),
                ),
                None,
            );
        }
        let at = self.shared.stamp(&mut store);
        let entity_store = store.entity_mut(self.conventions.system, entity.name);
        match self.conventions.delete {
            DeleteMode::Soft => {
                entity_store.soft_delete(&id, at);
            }
            DeleteMode::Hard | DeleteMode::Tombstone => {
                entity_store.remove(&id, at);
            }
        }
        ApiResponse::empty(StatusCode::NO_CONTENT)
    }

    /// The first live record that refers to `target`'s record `id`: its entity, id and the
    /// referring field. Deletes are rare, so the owners are scanned rather than indexed.
    fn referenced_by(
        &self,
        store: &Store,
        target: &str,
        id: &str,
    ) -> Option<(&'static str, String, String)> {
        let refers = |value: &Value| match value {
            Value::String(text) => self.canonical_id(text).as_deref() == Some(id),
            Value::Null => false,
            other => self.canonical_id(&other.to_string()).as_deref() == Some(id),
        };
        for (owner, path, to) in self.conventions.references {
            if *to != target {
                continue;
            }
            let Some(records) = store.entity(self.conventions.system, owner) else {
                continue;
            };
            for record in records.by_change(false) {
                let found = match path.split_once("[].") {
                    Some((list, field)) => record
                        .fields
                        .get(list)
                        .as_ref()
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|item| item.get(field))
                        .any(refers),
                    None => record.fields.get(path).as_ref().is_some_and(refers),
                };
                if found {
                    return Some((owner, record.id.clone(), path.to_string()));
                }
            }
        }
        None
    }

    /// The schema of a list parameter in the contract.
    fn parameter(&self, path: &str, name: &str) -> Option<&Value> {
        self.doc
            .root()
            .get("paths")?
            .get(path)?
            .get("get")?
            .get("parameters")?
            .as_array()?
            .iter()
            .find(|parameter| parameter.get("name").and_then(Value::as_str) == Some(name))?
            .get("schema")
    }

    /// An integer list parameter, with the contract's default and bounds.
    fn int_parameter(
        &self,
        request: &ApiRequest,
        path: &str,
        name: &str,
    ) -> Result<i64, ApiResponse> {
        let schema = self.parameter(path, name);
        let default = schema
            .and_then(|schema| schema.get("default"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let Some(text) = request.query(name) else {
            return Ok(default);
        };
        let value: i64 = text.trim().parse().map_err(|_| {
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_type",
                format!("{name} must be an integer"),
                Some(name),
            )
        })?;
        let minimum = schema
            .and_then(|schema| schema.get("minimum"))
            .and_then(Value::as_i64);
        let maximum = schema
            .and_then(|schema| schema.get("maximum"))
            .and_then(Value::as_i64);
        if let Some(minimum) = minimum.filter(|minimum| value < *minimum) {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "out_of_range",
                format!("{name} must be at least {minimum}"),
                Some(name),
            ));
        }
        if let Some(maximum) = maximum.filter(|maximum| value > *maximum) {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "out_of_range",
                format!("{name} must be at most {maximum}"),
                Some(name),
            ));
        }
        Ok(value)
    }

    fn instant_parameter(request: &ApiRequest, name: &str) -> Result<Option<Stamp>, ApiResponse> {
        match request.query(name) {
            None => Ok(None),
            Some(text) => parse_rfc3339(text).map(Some).ok_or_else(|| {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_format",
                    format!("{name} must be an RFC 3339 date-time such as 2024-05-01T00:00:00Z"),
                    Some(name),
                )
            }),
        }
    }

    fn list(&self, entity: &EntityDef, request: &ApiRequest) -> ApiResponse {
        match self.try_list(entity, request) {
            Ok(response) | Err(response) => response,
        }
    }

    fn try_list(
        &self,
        entity: &EntityDef,
        request: &ApiRequest,
    ) -> Result<ApiResponse, ApiResponse> {
        let conventions = &self.conventions;
        let path = format!("/{}", entity.name);
        let since = Self::instant_parameter(request, conventions.since_param)?;
        let include_deleted = match request.query("include_deleted") {
            None | Some("false") => false,
            Some("true") => conventions.delete == DeleteMode::Soft,
            Some(_) => {
                return Err(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_type",
                    "include_deleted must be true or false",
                    Some("include_deleted"),
                ));
            }
        };
        let store = self.shared.store();
        let empty = EntityStore::default();
        let entity_store = store
            .entity(conventions.system, entity.name)
            .unwrap_or(&empty);
        let records = listing(
            entity_store,
            include_deleted,
            since,
            conventions.since_strict,
        );
        let plan = self.plan(entity);
        let render = |records| Page {
            house: self,
            plan,
            records,
        };
        let text = match conventions.paging {
            Paging::Pages => {
                let page = self.int_parameter(request, &path, "page")?;
                let per_page = self.int_parameter(request, &path, "per_page")?.max(1);
                let total = records.len() as i64;
                let start = (page - 1).max(0).saturating_mul(per_page).min(total) as usize;
                let end = (start + per_page as usize).min(records.len());
                serde_json::to_vec(&PagesBody {
                    results: render(records.slice(start, end)),
                    page,
                    per_page,
                    total_pages: (total + per_page - 1) / per_page,
                })
            }
            Paging::Offset => {
                let offset = self.int_parameter(request, &path, "offset")?;
                let limit = self.int_parameter(request, &path, "limit")?.max(1);
                let start = (offset.max(0) as usize).min(records.len());
                let end = (start + limit as usize).min(records.len());
                serde_json::to_vec(&OffsetBody {
                    data: render(records.slice(start, end)),
                    total: records.len(),
                    offset,
                    limit,
                })
            }
            Paging::Cursor => {
                let page_size = self.int_parameter(request, &path, "page_size")?.max(1) as usize;
                let after = match request.query("cursor") {
                    None | Some("") => None,
                    Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| {
                        error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "invalid_value",
                            "cursor is not a cursor this API issued",
                            Some("cursor"),
                        )
                    })?),
                };
                let start = match after {
                    None => 0,
                    Some(position) => records.position_after(position),
                };
                let end = (start + page_size).min(records.len());
                let page = records.slice(start, end);
                let next_cursor = match page.last() {
                    Some(last) if end < records.len() => {
                        Some(encode_cursor(last.touched, last.seq))
                    }
                    _ => None,
                };
                serde_json::to_vec(&CursorBody {
                    items: render(page),
                    next_cursor,
                })
            }
        };
        let text = text.map_err(|source| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                format!("a stored record cannot be rendered: {source}"),
                None,
            )
        })?;
        Ok(ApiResponse::json_text(StatusCode::OK, text))
    }

    fn list_deleted(&self, request: &ApiRequest) -> ApiResponse {
        match self.try_list_deleted(request) {
            Ok(response) | Err(response) => response,
        }
    }

    fn try_list_deleted(&self, request: &ApiRequest) -> Result<ApiResponse, ApiResponse> {
        let entity = match request.query("entity") {
            None => {
                return Err(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "required",
                    "entity is required",
                    Some("entity"),
                ));
            }
            Some(name) => self.entity(name).ok_or_else(|| {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_value",
                    format!("entity must be one of {}", self.entities().join(", ")),
                    Some("entity"),
                )
            })?,
        };
        let since = Self::instant_parameter(request, "since")?;
        let offset = self.int_parameter(request, "/deleted", "offset")?;
        let limit = self.int_parameter(request, "/deleted", "limit")?.max(1);
        let store = self.shared.store();
        // Tombstones are appended as deletes happen, with stamps that never go backwards,
        // so `since` is a binary search and a page a slice.
        let tombstones = store
            .entity(self.conventions.system, entity.name)
            .map_or(&[][..], |entity_store| entity_store.tombstones.as_slice());
        let from = since.map_or(0, |since| {
            tombstones.partition_point(|tombstone| tombstone.deleted_at < since)
        });
        let tombstones = &tombstones[from..];
        let total = tombstones.len();
        let page: Vec<Value> = tombstones
            .iter()
            .skip(offset.max(0) as usize)
            .take(limit as usize)
            .map(|tombstone| json!({"id": self.render_id(&tombstone.id), "deleted_at": rfc3339(tombstone.deleted_at)}))
            .collect();
        Ok(ApiResponse::json(
            StatusCode::OK,
            json!({"data": page, "total": total, "offset": offset, "limit": limit}),
        ))
    }

    /// The writable view of a stored record: the properties of the write schema.
    fn writable(&self, entity_name: &str, id: &str) -> Option<Map<String, Value>> {
        let entity = self.entity(entity_name)?;
        let id = self.canonical_id(id)?;
        let store = self.shared.store();
        let record = store
            .entity(self.conventions.system, entity.name)?
            .get(&id)
            .filter(|record| record.is_live())?;
        let rendered = self.render(entity, record);
        let schema = self.doc.component(entity.write)?;
        let names = self.doc.property_names(schema);
        Some(
            rendered
                .as_object()?
                .iter()
                .filter(|(name, _)| names.contains(&name.as_str()))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        )
    }
}

impl Simulator for InHouse {
    fn system(&self) -> &'static str {
        self.conventions.system
    }

    fn handle(&self, request: &ApiRequest) -> ApiResponse {
        if let Some(response) = self.authenticate(request) {
            return response;
        }
        if let Some(response) = self.throttle() {
            return response;
        }
        self.route(request)
    }

    fn fault(&self, kind: FaultKind) -> ApiResponse {
        match kind {
            FaultKind::TooManyRequests => error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "rate limit exceeded ({}); retry after 1 s",
                    self.conventions.limit_text
                ),
                None,
            )
            .with_header(header::RETRY_AFTER, "1"),
            FaultKind::ServerError => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal server error",
                None,
            ),
            FaultKind::Unavailable => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "service temporarily unavailable",
                None,
            ),
            FaultKind::Timeout => ApiResponse::empty(StatusCode::GATEWAY_TIMEOUT),
            FaultKind::LostResponse => ApiResponse::empty(StatusCode::BAD_GATEWAY),
        }
    }
}

impl Backend for InHouse {
    fn entities(&self) -> Vec<&'static str> {
        self.conventions
            .entities
            .iter()
            .map(|entity| entity.name)
            .collect()
    }

    /// Routes a request that has passed auth and rate limits.
    fn route(&self, request: &ApiRequest) -> ApiResponse {
        let Some(segments) = request.segments_after(self.conventions.base_path) else {
            return self.not_found("resource");
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        if self.conventions.delete == DeleteMode::Tombstone && segments == ["deleted"] {
            return if request.method == Method::GET {
                self.list_deleted(request)
            } else {
                method_not_allowed()
            };
        }
        let Some(entity) = segments.first().and_then(|name| self.entity(name)) else {
            return self.not_found("resource");
        };
        match (&request.method, &segments[1..]) {
            (&Method::GET, []) => self.list(entity, request),
            (&Method::POST, []) => self.create(entity, request),
            (&Method::GET, [id]) => self.get(entity, id, request),
            (&Method::PATCH, [id]) if self.conventions.update == UpdateMethod::Patch => {
                self.update(entity, id, request)
            }
            (&Method::PUT, [id]) if self.conventions.update == UpdateMethod::Put => {
                self.update(entity, id, request)
            }
            (&Method::DELETE, [id]) => self.delete(entity, id),
            (_, []) | (_, [_]) => method_not_allowed(),
            _ => self.not_found("resource"),
        }
    }

    fn collection_path(&self, entity: &str) -> String {
        format!("{}/{}", self.conventions.base_path, entity)
    }

    /// Every live record of an entity, oldest change first.
    fn records(&self, entity_name: &str) -> Vec<Value> {
        let Some(entity) = self.entity(entity_name) else {
            return Vec::new();
        };
        let store = self.shared.store();
        store
            .entity(self.conventions.system, entity.name)
            .map(|entity_store| {
                entity_store
                    .by_change(false)
                    .into_iter()
                    .map(|record| self.render(entity, record))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Validates and stores a new record written at `at`; returns its id.
    fn create_at(
        &self,
        store: &mut Store,
        entity_name: &str,
        body: Value,
        at: Stamp,
        check_schema: bool,
    ) -> Result<String, ApiResponse> {
        let entity = self
            .entity(entity_name)
            .ok_or_else(|| self.not_found("collection"))?;
        if check_schema {
            self.validate(entity.write, &body)?;
        }
        let fields = match body {
            Value::Object(fields) => fields,
            _ => Map::new(),
        };
        self.check_references(store, entity, &fields)?;
        let system = self.conventions.system;
        let entity_store = store.entity_mut(system, entity.name);
        if let Some(field) = entity_store.unique_conflict(&fields, None) {
            return Err(self.duplicate(entity, &field));
        }
        let id = match self.conventions.ids {
            IdKind::Integer => entity_store.allocate_id().to_string(),
            IdKind::Uuid => self.shared.with_rng(uuid_v4),
        };
        let mut record = entity_store.new_record(id.clone(), fields, at);
        if let Some((_, format)) = entity.number {
            record.number = Some(format(entity_store.allocate_number()));
        }
        entity_store.put(record);
        store.observe(at);
        Ok(id)
    }

    /// A person's partial edit: PATCH where the API has it; where it only has PUT (the web
    /// shop), the patch is merged into the record's writable fields and PUT.
    fn edit(&self, entity: &str, id: &str, patch: Value) -> ApiResponse {
        let path = format!("{}/{}", self.collection_path(entity), id);
        match self.conventions.update {
            UpdateMethod::Patch => self.route(&request(Method::PATCH, &path, Some(&patch))),
            UpdateMethod::Put => {
                let Some(mut fields) = self.writable(entity, id) else {
                    return error(StatusCode::NOT_FOUND, "not_found", "record not found", None);
                };
                if let Value::Object(changes) = patch {
                    fields.extend(changes);
                }
                self.route(&request(Method::PUT, &path, Some(&Value::Object(fields))))
            }
        }
    }
}

/// A record as [`InHouse::render`] renders it, serialised straight from its encoded fields.
struct Rendered<'a> {
    house: &'a InHouse,
    /// `None` without a read schema: the record renders as `null`, as `render` gives it.
    plan: Option<&'a RenderPlan>,
    record: &'a Record,
}

impl Serialize for Rendered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(plan) = self.plan else {
            return serializer.serialize_unit();
        };
        let record = self.record;
        // Holds the table of field names for reading until the record is written.
        let fields = record.fields.encoded();
        let mut map = serializer.serialize_map(Some(plan.len()))?;
        for (name, source) in plan {
            match source {
                Source::Id => match self.house.conventions.ids {
                    IdKind::Integer => match record.id.parse::<u64>() {
                        Ok(id) => map.serialize_entry(name, &id)?,
                        Err(_) => map.serialize_entry(name, &())?,
                    },
                    IdKind::Uuid => map.serialize_entry(name, &record.id)?,
                },
                Source::Number => {
                    if let Some(number) = &record.number {
                        map.serialize_entry(name, number)?;
                    }
                }
                Source::Created => map.serialize_entry(name, &rfc3339(record.created))?,
                Source::Modified => map.serialize_entry(name, &rfc3339(record.modified))?,
                Source::Deleted => map.serialize_entry(name, &!record.is_live())?,
                Source::Field(default) => match fields.value(name) {
                    Some(value) => map.serialize_entry(name, &value)?,
                    None => {
                        if let Some(default) = default {
                            map.serialize_entry(name, default)?;
                        }
                    }
                },
            }
        }
        map.end()
    }
}

/// The records of a list page, each as [`Rendered`].
struct Page<'a> {
    house: &'a InHouse,
    plan: Option<&'a RenderPlan>,
    records: Vec<&'a Record>,
}

impl Serialize for Page<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.records.iter().map(|record| Rendered {
            house: self.house,
            plan: self.plan,
            record,
        }))
    }
}

/// `page`/`per_page` paging's answer.
#[derive(Serialize)]
struct PagesBody<'a> {
    results: Page<'a>,
    page: i64,
    per_page: i64,
    total_pages: i64,
}

/// `offset`/`limit` paging's answer.
#[derive(Serialize)]
struct OffsetBody<'a> {
    data: Page<'a>,
    total: usize,
    offset: i64,
    limit: i64,
}

/// Cursor paging's answer; `next_cursor` is null on the last page.
#[derive(Serialize)]
struct CursorBody<'a> {
    items: Page<'a>,
    next_cursor: Option<String>,
}

/// The [`RenderPlan`] of an entity: where each property of its read schema comes from.
fn render_plan(
    conventions: &Conventions,
    doc: &SchemaDoc,
    entity: &EntityDef,
) -> Option<RenderPlan> {
    let schema = doc.component(entity.read)?;
    let plan = doc
        .property_names(schema)
        .into_iter()
        .map(|name| {
            let source = if name == "id" {
                Source::Id
            } else if entity.number.is_some_and(|(field, _)| field == name) {
                Source::Number
            } else if conventions.created_field == Some(name) {
                Source::Created
            } else if conventions.modified_field == name {
                Source::Modified
            } else if conventions.deleted_field == Some(name) {
                Source::Deleted
            } else {
                Source::Field(default_value(doc, schema, name))
            };
            (name.to_string(), source)
        })
        .collect();
    Some(plan)
}

/// What an absent optional property reads as: null where the schema allows it, else the
/// empty value of its type; `None` (left out) for other types.
fn default_value(doc: &SchemaDoc, schema: &Value, name: &str) -> Option<Value> {
    let property = doc.property(schema, name)?;
    let types: Vec<&str> = match property.get("type") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"null") {
        Some(Value::Null)
    } else if types.contains(&"array") {
        Some(json!([]))
    } else if types.contains(&"boolean") {
        Some(Value::Bool(false))
    } else if types.contains(&"integer") || types.contains(&"number") {
        Some(json!(0))
    } else {
        None
    }
}

/// The records of a list in change order (`touched`, then creation), those modified at or
/// after `since` (strictly after with `strict`). While every record's modified time is its
/// change stamp (always, in the in-house systems) this is a run of the change-order index;
/// otherwise the records are scanned.
fn listing(
    entity: &EntityStore,
    include_deleted: bool,
    since: Option<Stamp>,
    strict: bool,
) -> Listing<'_> {
    let low = since.map(|since| {
        if strict {
            since.saturating_add(1)
        } else {
            since
        }
    });
    if entity.modified_is_touched() {
        return Listing::range(entity, Sort::Touched, include_deleted, low, None, false);
    }
    Listing::Scanned(
        entity
            .by_change(include_deleted)
            .into_iter()
            .filter(|record| low.is_none_or(|low| record.modified >= low))
            .collect(),
    )
}

fn method_not_allowed() -> ApiResponse {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this resource",
        None,
    )
}

fn singular(entity: &str) -> &str {
    entity.strip_suffix('s').unwrap_or(entity)
}

fn encode_cursor(touched: Stamp, seq: u64) -> String {
    format!("{touched:x}.{seq:x}")
}

fn decode_cursor(text: &str) -> Option<(Stamp, u64)> {
    let (touched, seq) = text.split_once('.')?;
    Some((
        i64::from_str_radix(touched, 16).ok()?,
        u64::from_str_radix(seq, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        crate::test_shared()
    }

    /// A record as the read schema renders it, worked out from the contract for every
    /// property of every record (as rendering did before its plan was kept per entity).
    fn reference_render(house: &InHouse, entity: &EntityDef, record: &Record) -> Value {
        let conventions = &house.conventions;
        let Some(schema) = house.doc.component(entity.read) else {
            return Value::Null;
        };
        let mut out = Map::new();
        for name in house.doc.property_names(schema) {
            let value = if name == "id" {
                Some(house.render_id(&record.id))
            } else if entity.number.is_some_and(|(field, _)| field == name) {
                record.number.clone().map(Value::String)
            } else if conventions.created_field == Some(name) {
                Some(Value::String(rfc3339(record.created)))
            } else if conventions.modified_field == name {
                Some(Value::String(rfc3339(record.modified)))
            } else if conventions.deleted_field == Some(name) {
                Some(Value::Bool(!record.is_live()))
            } else {
                record
                    .fields
                    .get(name)
                    .or_else(|| default_value(&house.doc, schema, name))
            };
            if let Some(value) = value {
                out.insert(name.to_string(), value);
            }
        }
        Value::Object(out)
    }

    /// Records of every shape rendering meets: no fields, every property of the read
    /// schema (in reverse order, with values of several kinds), fields the schema does not
    /// know, a server number or none, soft-deleted or live, ids that are not numbers.
    fn records_of(house: &InHouse, entity: &EntityDef) -> Vec<Record> {
        let names: Vec<String> = house
            .doc
            .component(entity.read)
            .map(|schema| {
                house
                    .doc
                    .property_names(schema)
                    .into_iter()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let mut store = EntityStore::default();
        let mut out = Vec::new();
        for (index, id) in ["7", "3f2b8c1e-0000-4000-8000-000000000001", "x"]
            .into_iter()
            .enumerate()
        {
            let mut full = Map::new();
            for (at, name) in names.iter().rev().enumerate() {
                let value = match (at + index) % 5 {
                    0 => json!(format!("{name} \"quoted\" ✓")),
                    1 => json!(at as i64 - 2),
                    2 => json!([{"line1": "a"}, null, 1.5]),
                    3 => Value::Null,
                    _ => json!({"nested": {"deep": [true]}}),
                };
                full.insert(name.clone(), value);
            }
            full.insert("not_in_the_schema".into(), json!("kept but not rendered"));
            let at = 1_700_000_000_000 + index as i64;
            for fields in [Map::new(), full] {
                let mut record = store.new_record(id.to_string(), fields, at);
                record.modified = at + 5;
                if index == 1 {
                    record.number = Some(format!("N-{index}"));
                    record.deleted = Some(at + 9);
                }
                out.push(record);
            }
        }
        out
    }

    #[test]
    fn records_render_as_their_read_schema_says() {
        for conventions in [
            crate::customcrm::conventions(),
            crate::customerp::conventions(),
            crate::customwebshop::conventions(),
        ] {
            let house = InHouse::new(conventions, shared(), Vec::new()).expect("contract");
            for entity in &house.conventions.entities {
                for record in records_of(&house, entity) {
                    let expected = reference_render(&house, entity, &record);
                    assert_eq!(
                        String::from_utf8(house.render_text(entity, &record)).expect("UTF-8"),
                        serde_json::to_string(&expected).expect("text"),
                        "{} {}: written straight from the store",
                        house.system(),
                        entity.name
                    );
                    let rendered = house.render(entity, &record);
                    assert_eq!(rendered, expected, "{} {}", house.system(), entity.name);
                    assert_eq!(
                        serde_json::to_string(&rendered).expect("text"),
                        serde_json::to_string(&expected).expect("text"),
                        "{} {}: the order of the properties",
                        house.system(),
                        entity.name
                    );
                }
            }
        }
    }

    /// Pages, single reads, updates and creates answer the records as rendered, in the
    /// envelope of each system's paging.
    #[test]
    fn answers_carry_the_rendered_records() {
        for conventions in [
            crate::customcrm::conventions(),
            crate::customerp::conventions(),
            crate::customwebshop::conventions(),
        ] {
            let house = InHouse::new(conventions, shared(), Vec::new()).expect("contract");
            let entity = &house.conventions.entities[0];
            let path = house.collection_path(entity.name);
            let ids: Vec<String> = (1..=7)
                .map(|n| match house.conventions.ids {
                    IdKind::Integer => n.to_string(),
                    IdKind::Uuid => format!("3f2b8c1e-0000-4000-8000-{n:012}"),
                })
                .collect();
            {
                let mut store = house.shared.store();
                let entity_store = store.entity_mut(house.conventions.system, entity.name);
                for (n, id) in ids.iter().enumerate() {
                    let full = records_of(&house, entity).pop().expect("a record");
                    let mut record =
                        entity_store.new_record(id.clone(), full.fields.to_map(), 1_000 + n as i64);
                    record.number = entity.number.map(|(_, format)| format(n as u64));
                    entity_store.put(record);
                }
            }
            // As received over HTTP (direct access answers values; see below).
            let over_http = |method: Method, path: &str, body: Option<&Value>| ApiRequest {
                direct: false,
                ..request(method, path, body)
            };
            let get = |query: &str| {
                let response =
                    house.route(&over_http(Method::GET, &format!("{path}{query}"), None));
                assert_eq!(response.status, StatusCode::OK, "{query}");
                String::from_utf8(response.text.expect("written out").into_vec()).expect("UTF-8")
            };
            let expected = |ids: &[String]| -> Vec<Value> {
                let store = house.shared.store();
                let entity_store = store
                    .entity(house.conventions.system, entity.name)
                    .expect("entity");
                ids.iter()
                    .map(|id| {
                        reference_render(&house, entity, entity_store.get(id).expect("record"))
                    })
                    .collect()
            };
            let text = |value: Value| serde_json::to_string(&value).expect("text");
            match house.conventions.paging {
                Paging::Pages => assert_eq!(
                    get("?page=2&per_page=3"),
                    text(
                        json!({"results": expected(&ids[3..6]), "page": 2, "per_page": 3, "total_pages": 3})
                    )
                ),
                Paging::Offset => assert_eq!(
                    get("?offset=5&limit=3"),
                    text(json!({"data": expected(&ids[5..]), "total": 7, "offset": 5, "limit": 3}))
                ),
                Paging::Cursor => {
                    let first = get("?page_size=4");
                    let cursor =
                        serde_json::from_str::<Value>(&first).expect("json")["next_cursor"]
                            .as_str()
                            .expect("a cursor")
                            .to_string();
                    assert_eq!(
                        first,
                        text(json!({"items": expected(&ids[..4]), "next_cursor": cursor}))
                    );
                    assert_eq!(
                        get(&format!("?page_size=4&cursor={cursor}")),
                        text(json!({"items": expected(&ids[4..]), "next_cursor": null}))
                    );
                }
            }
            assert_eq!(
                get(&format!("/{}", ids[2])),
                text(expected(&ids[2..3]).remove(0))
            );
            // An update answers the record as stored after it.
            let patch = json!({});
            let method = match house.conventions.update {
                UpdateMethod::Patch => Method::PATCH,
                UpdateMethod::Put => Method::PUT,
            };
            // The web shop's PUT replaces the customer: a whole valid one.
            let body = match method {
                Method::PUT => {
                    json!({"email": "ann@example.com", "addresses": [], "marketing_opt_in": true})
                }
                _ => patch,
            };
            let response = house.route(&over_http(
                method,
                &format!("{path}/{}", ids[1]),
                Some(&body),
            ));
            assert_eq!(response.status, StatusCode::OK, "{}", house.system());
            assert_eq!(
                String::from_utf8(response.text.clone().expect("written out").into_vec())
                    .expect("UTF-8"),
                text(expected(&ids[1..2]).remove(0))
            );
            assert_eq!(response.into_body(), Some(expected(&ids[1..2]).remove(0)));
            // Direct access gets the same record as a value.
            let direct = house.route(&request(Method::GET, &format!("{path}/{}", ids[1]), None));
            assert!(direct.text.is_none());
            assert_eq!(direct.body, Some(expected(&ids[1..2]).remove(0)));
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = encode_cursor(1_700_000_000_123, 42);
        assert_eq!(decode_cursor(&cursor), Some((1_700_000_000_123, 42)));
        assert_eq!(decode_cursor("not-a-cursor"), None);
    }
}
