//! [`HttpConnector`]: the [`Connector`] every system file gets. It compiles the file once
//! (URLs, credentials, JSONPaths, pagination) and then serves reads through
//! [`crate::connector::listing`] and writes here: get, create (reading back an id-only
//! answer), PATCH or read-merge-PUT updates, deletes, and Salesforce sObject Collections
//! batches with per-record results.

use std::sync::Arc;

use indexmap::IndexMap;
use reqwest::{Method, Url};
use serde_json::{Value, json};

use crate::connector::error::{ApiError, ConnectorError};
use crate::connector::http::{Body, HttpCore, Reply, Request, join_path};
use crate::connector::listing::{self, ListReader};
use crate::connector::value::{self, JsonPath};
use crate::connector::{
    BoxFuture, Connector, ConnectorStats, Cursor, Deleted, DeletionDiscovery, EntityInfo,
    PageReader, Record, Written,
};
use crate::spec::node::Checked;
use crate::spec::system::{
    BatchSpec, BatchStyle, CreateResponse, DeleteDiscovery, EntitySpec, Incremental, Pagination,
    SystemFile, UpdateMethod,
};

/// Records one Salesforce sObject Collections request may carry.
const SALESFORCE_COLLECTION_LIMIT: u32 = 200;

/// Pagination with its JSONPaths compiled.
#[derive(Debug)]
pub(crate) enum Paging {
    None,
    Offset {
        offset_param: String,
        limit_param: String,
        size: u64,
        total: Option<JsonPath>,
    },
    Page {
        page_param: String,
        size_param: String,
        size: u64,
        first_page: u64,
        total_pages: JsonPath,
    },
    Cursor {
        cursor_param: String,
        size_param: Option<String>,
        size: u64,
        next_cursor: JsonPath,
    },
    NextUrl {
        next: JsonPath,
        done: Option<JsonPath>,
        size_param: Option<String>,
        size: Option<u64>,
        stop_on_short_page: bool,
    },
}

impl Paging {
    pub fn compile(pagination: &Pagination) -> Result<Paging, String> {
        Ok(match pagination {
            Pagination::None => Paging::None,
            Pagination::Offset {
                offset_param,
                limit_param,
                size,
                total,
            } => Paging::Offset {
                offset_param: offset_param.clone(),
                limit_param: limit_param.clone(),
                size: positive(*size)?,
                total: total.as_deref().map(JsonPath::compile).transpose()?,
            },
            Pagination::Page {
                page_param,
                size_param,
                size,
                first_page,
                total_pages,
            } => Paging::Page {
                page_param: page_param.clone(),
                size_param: size_param.clone(),
                size: positive(*size)?,
                first_page: u64::from(*first_page),
                total_pages: JsonPath::compile(total_pages)?,
            },
            Pagination::Cursor {
                cursor_param,
                size_param,
                size,
                next_cursor,
            } => Paging::Cursor {
                cursor_param: cursor_param.clone(),
                size_param: size_param.clone(),
                size: positive(*size)?,
                next_cursor: JsonPath::compile(next_cursor)?,
            },
            Pagination::NextUrl {
                next,
                done,
                size_param,
                size,
                stop_on_short_page,
            } => {
                if *stop_on_short_page && size.is_none() {
                    return Err("`stop_on_short_page` needs `size`".to_owned());
                }
                Paging::NextUrl {
                    next: JsonPath::compile(next)?,
                    done: done.as_deref().map(JsonPath::compile).transpose()?,
                    size_param: size_param.clone(),
                    size: size.map(positive).transpose()?,
                    stop_on_short_page: *stop_on_short_page,
                }
            }
        })
    }

    /// The page size, where the style has one.
    pub fn size(&self) -> Option<u64> {
        match self {
            Paging::None => None,
            Paging::Offset { size, .. }
            | Paging::Page { size, .. }
            | Paging::Cursor { size, .. } => Some(*size),
            Paging::NextUrl { size, .. } => *size,
        }
    }
}

fn positive(size: u32) -> Result<u64, String> {
    if size == 0 {
        Err("a page size must be at least 1".to_owned())
    } else {
        Ok(u64::from(size))
    }
}

/// The incremental read of an entity, compiled.
#[derive(Debug)]
pub(crate) enum IncrementalRt {
    ModifiedSince {
        param: String,
        inclusive: bool,
    },
    Soql {
        path: String,
        query: String,
        initial_query: String,
    },
    SyncToken {
        path: String,
        param: String,
        token: JsonPath,
        changes: JsonPath,
        record: JsonPath,
        status: JsonPath,
        deleted_status: String,
    },
}

/// A tombstone endpoint, compiled.
#[derive(Debug)]
pub(crate) struct Tombstones {
    pub path: String,
    pub query: Vec<(String, String)>,
    pub since_param: String,
    pub records: JsonPath,
    pub id: JsonPath,
    pub deleted_at: JsonPath,
    pub paging: Paging,
}

/// How deletions are found, compiled.
#[derive(Debug)]
pub(crate) enum Deletes {
    None,
    Tombstones(Box<Tombstones>),
    SoftDelete {
        flag: JsonPath,
        include_param: String,
    },
    FullListing,
    GetDeleted {
        path: String,
    },
    ChangeFeed,
}

/// One entity of a system, compiled once.
#[derive(Debug)]
pub(crate) struct EntityRt {
    pub name: String,
    pub spec: EntitySpec,
    pub id: JsonPath,
    pub modified: Option<JsonPath>,
    pub records: JsonPath,
    /// Where a single-record answer keeps the record (the `get` endpoint's `record`).
    pub record: Option<JsonPath>,
    pub paging: Paging,
    pub incremental: Option<IncrementalRt>,
    pub deletes: Deletes,
    pub create_id: Option<JsonPath>,
    pub lookback: chrono::Duration,
}

impl EntityRt {
    fn compile(name: &str, spec: &EntitySpec) -> Result<EntityRt, String> {
        let incremental = match &spec.list.incremental {
            None => None,
            Some(Incremental::ModifiedSince { param, inclusive }) => {
                Some(IncrementalRt::ModifiedSince {
                    param: param.clone(),
                    inclusive: *inclusive,
                })
            }
            Some(Incremental::Soql {
                path,
                query,
                initial_query,
            }) => Some(IncrementalRt::Soql {
                path: path.clone(),
                query: query.clone(),
                initial_query: initial_query.clone(),
            }),
            Some(Incremental::SyncToken {
                path,
                param,
                token,
                changes,
                record,
                status,
                deleted_status,
            }) => Some(IncrementalRt::SyncToken {
                path: path.clone(),
                param: param.clone(),
                token: JsonPath::compile(token)?,
                changes: JsonPath::compile(changes)?,
                record: JsonPath::compile(record)?,
                status: JsonPath::compile(status)?,
                deleted_status: deleted_status.clone(),
            }),
        };
        if matches!(
            incremental,
            Some(IncrementalRt::ModifiedSince { .. }) | Some(IncrementalRt::Soql { .. })
        ) && spec.modified.is_none()
        {
            return Err("an incremental read by time needs `modified`".to_owned());
        }
        let deletes = match &spec.deletes {
            DeleteDiscovery::None => Deletes::None,
            DeleteDiscovery::Tombstones {
                path,
                query,
                since_param,
                records,
                id,
                deleted_at,
                pagination,
            } => Deletes::Tombstones(Box::new(Tombstones {
                path: path.clone(),
                query: query.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                since_param: since_param.clone(),
                records: JsonPath::compile(records)?,
                id: JsonPath::compile(id)?,
                deleted_at: JsonPath::compile(deleted_at)?,
                paging: Paging::compile(pagination)?,
            })),
            DeleteDiscovery::SoftDelete {
                flag,
                include_param,
            } => Deletes::SoftDelete {
                flag: JsonPath::compile(flag)?,
                include_param: include_param.clone(),
            },
            DeleteDiscovery::FullListing => Deletes::FullListing,
            DeleteDiscovery::GetDeleted { path } => Deletes::GetDeleted { path: path.clone() },
            DeleteDiscovery::ChangeFeed => {
                if !matches!(incremental, Some(IncrementalRt::SyncToken { .. })) {
                    return Err(
                        "`change_feed` deletions need a `sync_token` incremental read".to_owned(),
                    );
                }
                Deletes::ChangeFeed
            }
        };
        if let Some(batch) = &spec.batch
            && batch.size == 0
        {
            return Err("a batch size must be at least 1".to_owned());
        }
        Ok(EntityRt {
            name: name.to_owned(),
            id: JsonPath::compile(&spec.id)?,
            modified: spec
                .modified
                .as_ref()
                .map(|m| JsonPath::compile(m))
                .transpose()?,
            records: JsonPath::compile(&spec.list.records)?,
            record: spec
                .get
                .as_ref()
                .and_then(|g| g.record.as_deref())
                .map(JsonPath::compile)
                .transpose()?,
            paging: Paging::compile(&spec.list.pagination)?,
            incremental,
            deletes,
            create_id: match spec.create.as_ref().map(|c| &c.response) {
                Some(CreateResponse::Id { path }) => Some(JsonPath::compile(path)?),
                _ => None,
            },
            lookback: chrono::Duration::seconds(
                i64::try_from(spec.list.lookback_seconds)
                    .unwrap_or(i64::MAX / 1000)
                    .min(10 * 365 * 86_400),
            ),
            spec: spec.clone(),
        })
    }

    /// The object name the API uses (Salesforce sObject), defaulting to the entity's key.
    pub fn object(&self) -> &str {
        self.spec.object.as_deref().unwrap_or(&self.name)
    }

    /// Builds a record from an item; the reason when it has no id.
    pub fn to_record(&self, data: Value) -> Result<Record, (Value, String)> {
        let Some(id) = self.id.first(&data).and_then(value::id_string) else {
            let reason = format!("no id at `{}`", self.id.as_str());
            return Err((data, reason));
        };
        let modified = self
            .modified
            .as_ref()
            .and_then(|path| path.first(&data))
            .and_then(value::parse_time);
        Ok(Record { id, modified, data })
    }

    /// The record inside a single-record answer.
    fn record_in<'a>(&self, body: &'a Value) -> &'a Value {
        self.record
            .as_ref()
            .and_then(|path| path.first(body))
            .filter(|v| v.is_object())
            .unwrap_or(body)
    }
}

/// The generic connector of one system file.
#[derive(Debug, Clone)]
pub struct HttpConnector {
    core: Arc<HttpCore>,
    entities: Arc<IndexMap<String, Arc<EntityRt>>>,
}

impl HttpConnector {
    /// Builds the connector of a system file, reading `${VAR}`s from the process
    /// environment.
    pub fn new(system_file: &SystemFile) -> Result<HttpConnector, ConnectorError> {
        Self::with_env(system_file, &|name| std::env::var(name).ok())
    }

    /// Builds the connector of a system file, reading `${VAR}`s with `lookup`.
    pub fn with_env(
        system_file: &SystemFile,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HttpConnector, ConnectorError> {
        let core = HttpCore::new(system_file, lookup)?;
        let mut entities = IndexMap::new();
        for (name, spec) in &system_file.entities {
            let Checked::Valid(spec) = spec else {
                return Err(ConnectorError::Config {
                    system: core.system.clone(),
                    message: format!("entity `{name}` is invalid (run `tether validate`)"),
                });
            };
            let entity =
                EntityRt::compile(name, spec).map_err(|message| ConnectorError::Config {
                    system: core.system.clone(),
                    message: format!("entity `{name}`: {message}"),
                })?;
            entities.insert(name.clone(), Arc::new(entity));
        }
        Ok(HttpConnector {
            core: Arc::new(core),
            entities: Arc::new(entities),
        })
    }

    fn entity_rt(&self, entity: &str) -> Result<Arc<EntityRt>, ConnectorError> {
        self.entities
            .get(entity)
            .cloned()
            .ok_or_else(|| ConnectorError::UnknownEntity {
                system: self.core.system.clone(),
                entity: entity.to_owned(),
            })
    }

    fn unsupported(&self, entity: &str, operation: &'static str) -> ConnectorError {
        ConnectorError::Unsupported {
            system: self.core.system.clone(),
            entity: entity.to_owned(),
            operation,
        }
    }

    /// The URL of an endpoint path (with `{id}` filled) and its fixed query.
    async fn endpoint_url(
        &self,
        entity: &str,
        path: &str,
        id: Option<&str>,
        query: &IndexMap<String, String>,
    ) -> Result<Url, ConnectorError> {
        let api_base = self.core.api_base().await?;
        let path = match id {
            Some(id) => value::fill_id(path, id),
            None => path.to_owned(),
        };
        let mut url = join_path(&api_base, &path).map_err(|message| ConnectorError::Config {
            system: self.core.system.clone(),
            message: format!("entity `{entity}`: {message}"),
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// A status error for a final answer that is not success.
    fn failure(&self, request: &Request, reply: &Reply) -> ConnectorError {
        ConnectorError::Status {
            context: self
                .core
                .context(&request.method, &reply.url, &request.entity),
            status: reply.status,
            error: self
                .core
                .api_error(reply.status, reply.json.as_ref(), &reply.text),
            retry_after: None,
        }
    }

    fn malformed(&self, request: &Request, message: String, transient: bool) -> ConnectorError {
        ConnectorError::Malformed {
            context: self
                .core
                .context(&request.method, &request.url, &request.entity),
            message,
            transient,
        }
    }

    async fn get_record(&self, entity: &str, id: &str) -> Result<Option<Record>, ConnectorError> {
        let rt = self.entity_rt(entity)?;
        let get = rt
            .spec
            .get
            .as_ref()
            .ok_or_else(|| self.unsupported(entity, "read one record"))?;
        // A query parameter may name the id too (a Salesforce SOQL read `WHERE Id = '{id}'`,
        // which reads the record in the shape of the listing, child records included). Such
        // an id is inserted as it is, so only plain ids are accepted there.
        let query = if get.query.values().any(|v| v.contains("{id}")) {
            if !value::is_plain_id(id) {
                return Err(ConnectorError::Config {
                    system: self.core.system.clone(),
                    message: format!(
                        "entity `{entity}`: the id `{id}` cannot go into a query parameter (only letters, digits, `-`, `_` and `.`)"
                    ),
                });
            }
            get.query
                .iter()
                .map(|(k, v)| (k.clone(), v.replace("{id}", id)))
                .collect()
        } else {
            get.query.clone()
        };
        let url = self
            .endpoint_url(entity, &get.path, Some(id), &query)
            .await?;
        let request = Request::get(url, entity);
        let reply = self.core.send(&request).await?;
        if matches!(reply.status, 404 | 410) {
            return Ok(None);
        }
        if !reply.is_success() {
            return Err(self.failure(&request, &reply));
        }
        let Some(body) = reply.json else {
            return Err(self.malformed(&request, "the body is empty".to_owned(), true));
        };
        // A read through a query answers a list: an empty one means there is no such record.
        if let Some(path) = &rt.record
            && !path.first(&body).is_some_and(Value::is_object)
            && query.values().any(|v| v.contains(id))
        {
            return Ok(None);
        }
        let record = rt
            .to_record(rt.record_in(&body).clone())
            .map_err(|(_, reason)| self.malformed(&request, reason, false))?;
        // A soft-deleted record reads as the listing files it: deleted.
        if let Deletes::SoftDelete { flag, .. } = &rt.deletes
            && listing::truthy(flag.first(&record.data))
        {
            return Ok(None);
        }
        Ok(Some(record))
    }

    async fn create_record(&self, entity: &str, fields: Value) -> Result<Written, ConnectorError> {
        let rt = self.entity_rt(entity)?;
        let create = rt
            .spec
            .create
            .as_ref()
            .ok_or_else(|| self.unsupported(entity, "create"))?;
        let url = self
            .endpoint_url(entity, &create.path, None, &IndexMap::new())
            .await?;
        let request = Request {
            method: Method::POST,
            url,
            body: Body::Json(fields),
            entity: entity.to_owned(),
            idempotent: false,
        };
        let reply = self.core.send(&request).await?;
        if !reply.is_success() {
            return Err(self.failure(&request, &reply));
        }
        let body = reply.json.unwrap_or(Value::Null);
        match &rt.create_id {
            None => {
                let record = rt
                    .to_record(rt.record_in(&body).clone())
                    .map_err(|(_, reason)| self.malformed(&request, reason, false))?;
                Ok(Written {
                    id: record.id.clone(),
                    record: Some(record),
                })
            }
            Some(path) => {
                let id = path
                    .first(&body)
                    .and_then(value::id_string)
                    .ok_or_else(|| {
                        self.malformed(&request, format!("no id at `{}`", path.as_str()), false)
                    })?;
                let record = if rt.spec.get.is_some() {
                    match self.get_record(entity, &id).await {
                        Ok(record) => record,
                        Err(error) => {
                            tracing::warn!(system = %self.core.system, entity, id, %error,
                                "created the record but could not read it back");
                            None
                        }
                    }
                } else {
                    None
                };
                Ok(Written { id, record })
            }
        }
    }

    async fn update_record(
        &self,
        entity: &str,
        id: &str,
        changes: Value,
    ) -> Result<Written, ConnectorError> {
        let rt = self.entity_rt(entity)?;
        let update = rt
            .spec
            .update
            .as_ref()
            .ok_or_else(|| self.unsupported(entity, "update"))?;
        let (method, body) = match update.method {
            UpdateMethod::Patch => (Method::PATCH, changes),
            UpdateMethod::Put => {
                if rt.spec.get.is_none() {
                    return Err(self.unsupported(entity, "read the record a PUT must replace"));
                }
                let Some(current) = self.get_record(entity, id).await? else {
                    let url = self
                        .endpoint_url(entity, &update.path, Some(id), &IndexMap::new())
                        .await?;
                    return Err(ConnectorError::Status {
                        context: self.core.context(&Method::GET, &url, entity),
                        status: 404,
                        error: ApiError {
                            status: Some(404),
                            code: None,
                            message: "the record to update no longer exists".to_owned(),
                            field: None,
                        },
                        retry_after: None,
                    });
                };
                let mut whole = current.data;
                value::merge(&mut whole, &changes);
                value::strip_read_only(&mut whole, &rt.spec.fields);
                (Method::PUT, whole)
            }
        };
        let url = self
            .endpoint_url(entity, &update.path, Some(id), &IndexMap::new())
            .await?;
        let request = Request {
            method,
            url,
            body: Body::Json(body),
            entity: entity.to_owned(),
            idempotent: true,
        };
        let reply = self.core.send(&request).await?;
        if !reply.is_success() {
            return Err(self.failure(&request, &reply));
        }
        let record = reply
            .json
            .as_ref()
            .map(|body| rt.record_in(body))
            .filter(|data| data.is_object())
            .map(|data| match rt.to_record(data.clone()) {
                Ok(record) => record,
                Err((data, _)) => Record {
                    id: id.to_owned(),
                    modified: rt
                        .modified
                        .as_ref()
                        .and_then(|p| p.first(&data))
                        .and_then(value::parse_time),
                    data,
                },
            });
        Ok(Written {
            id: id.to_owned(),
            record,
        })
    }

    async fn delete_record(&self, entity: &str, id: &str) -> Result<Deleted, ConnectorError> {
        let rt = self.entity_rt(entity)?;
        let delete = rt
            .spec
            .delete
            .as_ref()
            .ok_or_else(|| self.unsupported(entity, "delete"))?;
        let url = self
            .endpoint_url(entity, &delete.path, Some(id), &delete.query)
            .await?;
        let request = Request {
            method: Method::DELETE,
            url,
            body: Body::None,
            entity: entity.to_owned(),
            idempotent: true,
        };
        let reply = self.core.send(&request).await?;
        match reply.status {
            404 | 410 => Ok(Deleted::AlreadyGone),
            _ if reply.is_success() => Ok(Deleted::Deleted),
            _ => Err(self.failure(&request, &reply)),
        }
    }

    /// Sends one Salesforce sObject Collections request and reads its per-record results.
    async fn collection_chunk(
        &self,
        rt: &EntityRt,
        path: &str,
        method: Method,
        records: Vec<(Option<String>, Value)>,
    ) -> Vec<Result<Written, ConnectorError>> {
        let count = records.len();
        let all_fail = |error: ConnectorError| (0..count).map(|_| Err(error.clone())).collect();
        let url = match self
            .endpoint_url(&rt.name, path, None, &IndexMap::new())
            .await
        {
            Ok(url) => url,
            Err(error) => return all_fail(error),
        };
        let ids: Vec<Option<String>> = records.iter().map(|(id, _)| id.clone()).collect();
        let items: Vec<Value> = records
            .into_iter()
            .map(|(id, fields)| {
                let mut item = serde_json::Map::new();
                item.insert("attributes".to_owned(), json!({ "type": rt.object() }));
                if let Some(id) = id {
                    item.insert("id".to_owned(), Value::String(id));
                }
                if let Value::Object(fields) = fields {
                    for (key, value) in fields {
                        if key != "attributes" && !key.eq_ignore_ascii_case("id") {
                            item.insert(key, value);
                        }
                    }
                }
                Value::Object(item)
            })
            .collect();
        let request = Request {
            idempotent: method != Method::POST,
            method,
            url,
            body: Body::Json(json!({ "allOrNone": false, "records": items })),
            entity: rt.name.clone(),
        };
        let reply = match self.core.send(&request).await {
            Ok(reply) if reply.is_success() => reply,
            Ok(reply) => return all_fail(self.failure(&request, &reply)),
            Err(error) => return all_fail(error),
        };
        let results = match reply.json {
            Some(Value::Array(results)) if results.len() == count => results,
            _ => {
                return all_fail(self.malformed(
                    &request,
                    format!("expected an array of {count} results"),
                    true,
                ));
            }
        };
        results
            .into_iter()
            .zip(ids)
            .map(|(result, id)| {
                let success = result
                    .get("success")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let answered = result.get("id").and_then(value::id_string);
                if success {
                    match answered.or(id) {
                        Some(id) => Ok(Written { id, record: None }),
                        None => Err(self.malformed(
                            &request,
                            "a created record has no id".to_owned(),
                            true,
                        )),
                    }
                } else {
                    Err(ConnectorError::Rejected {
                        context: self
                            .core
                            .context(&request.method, &request.url, &request.entity),
                        error: salesforce_record_error(&result),
                    })
                }
            })
            .collect()
    }

    /// Sends records through the batch endpoint in chunks: creates (no id) with POST,
    /// updates with PATCH.
    async fn batch(
        &self,
        rt: &EntityRt,
        batch: &BatchSpec,
        method: Method,
        records: Vec<(Option<String>, Value)>,
    ) -> Vec<Result<Written, ConnectorError>> {
        let BatchStyle::SalesforceCollections = batch.style;
        let size = batch.size.clamp(1, SALESFORCE_COLLECTION_LIMIT) as usize;
        let mut results = Vec::with_capacity(records.len());
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let chunk: Vec<_> = records.by_ref().take(size).collect();
            results.extend(
                self.collection_chunk(rt, &batch.path, method.clone(), chunk)
                    .await,
            );
        }
        results
    }
}

/// The error of one record in a Salesforce collection answer.
fn salesforce_record_error(result: &Value) -> ApiError {
    let errors = result
        .get("errors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let first = errors.first();
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let message = errors
        .iter()
        .filter_map(|e| e.get("message").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("; ");
    ApiError {
        status: None,
        code: text(first.and_then(|e| e.get("statusCode"))),
        message: if message.is_empty() {
            "the record was refused without a message".to_owned()
        } else {
            message
        },
        field: first
            .and_then(|e| e.get("fields"))
            .and_then(Value::as_array)
            .and_then(|f| f.first())
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

impl Connector for HttpConnector {
    fn system(&self) -> &str {
        &self.core.system
    }

    fn entity(&self, entity: &str) -> Option<EntityInfo> {
        let rt = self.entities.get(entity)?;
        let spec = &rt.spec;
        Some(EntityInfo {
            incremental: rt.incremental.is_some(),
            modified_times: rt.modified.is_some(),
            deletions: match rt.deletes {
                Deletes::None => DeletionDiscovery::None,
                Deletes::Tombstones(_) | Deletes::GetDeleted { .. } => DeletionDiscovery::Feed,
                Deletes::SoftDelete { .. } | Deletes::ChangeFeed => DeletionDiscovery::InChanges,
                Deletes::FullListing => DeletionDiscovery::FullListing,
            },
            can_get: spec.get.is_some(),
            can_create: spec.create.is_some(),
            can_update: spec.update.is_some(),
            can_delete: spec.delete.is_some(),
            batch_size: spec
                .batch
                .as_ref()
                .map(|b| b.size.clamp(1, SALESFORCE_COLLECTION_LIMIT) as usize),
        })
    }

    fn changes(
        &self,
        entity: &str,
        cursor: Option<&Cursor>,
    ) -> Result<Box<dyn PageReader>, ConnectorError> {
        let rt = self.entity_rt(entity)?;
        Ok(Box::new(ListReader::changes(self.core.clone(), rt, cursor)))
    }

    fn list_all(&self, entity: &str) -> Result<Box<dyn PageReader>, ConnectorError> {
        let rt = self.entity_rt(entity)?;
        Ok(Box::new(ListReader::full(self.core.clone(), rt)))
    }

    fn deletions(
        &self,
        entity: &str,
        cursor: Option<&Cursor>,
    ) -> Result<Box<dyn PageReader>, ConnectorError> {
        let rt = self.entity_rt(entity)?;
        match &rt.deletes {
            Deletes::Tombstones(_) => Ok(Box::new(listing::TombstoneReader::new(
                self.core.clone(),
                rt.clone(),
                cursor,
            ))),
            Deletes::GetDeleted { .. } => Ok(Box::new(listing::DeletedWindowReader::new(
                self.core.clone(),
                rt.clone(),
                cursor,
            ))),
            _ => Err(self.unsupported(entity, "read deletions apart from changes and listings")),
        }
    }

    fn get<'a>(
        &'a self,
        entity: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Record>, ConnectorError>> {
        Box::pin(self.get_record(entity, id))
    }

    fn create<'a>(
        &'a self,
        entity: &'a str,
        fields: Value,
    ) -> BoxFuture<'a, Result<Written, ConnectorError>> {
        Box::pin(self.create_record(entity, fields))
    }

    fn update<'a>(
        &'a self,
        entity: &'a str,
        id: &'a str,
        changes: Value,
    ) -> BoxFuture<'a, Result<Written, ConnectorError>> {
        Box::pin(self.update_record(entity, id, changes))
    }

    fn delete<'a>(
        &'a self,
        entity: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Deleted, ConnectorError>> {
        Box::pin(self.delete_record(entity, id))
    }

    fn create_many<'a>(
        &'a self,
        entity: &'a str,
        records: Vec<Value>,
    ) -> BoxFuture<'a, Vec<Result<Written, ConnectorError>>> {
        Box::pin(async move {
            let rt = self.entities.get(entity).cloned();
            if let Some(rt) = &rt
                && let Some(batch) = &rt.spec.batch
            {
                let items = records.into_iter().map(|fields| (None, fields)).collect();
                return self.batch(rt, batch, Method::POST, items).await;
            }
            let mut results = Vec::with_capacity(records.len());
            for fields in records {
                results.push(self.create_record(entity, fields).await);
            }
            results
        })
    }

    fn update_many<'a>(
        &'a self,
        entity: &'a str,
        updates: Vec<(String, Value)>,
    ) -> BoxFuture<'a, Vec<Result<Written, ConnectorError>>> {
        Box::pin(async move {
            let rt = self.entities.get(entity).cloned();
            if let Some(rt) = &rt
                && let Some(batch) = &rt.spec.batch
                && rt
                    .spec
                    .update
                    .as_ref()
                    .is_some_and(|u| u.method == UpdateMethod::Patch)
            {
                let items = updates
                    .into_iter()
                    .map(|(id, changes)| (Some(id), changes))
                    .collect();
                return self.batch(rt, batch, Method::PATCH, items).await;
            }
            let mut results = Vec::with_capacity(updates.len());
            for (id, changes) in updates {
                results.push(self.update_record(entity, &id, changes).await);
            }
            results
        })
    }

    fn stats(&self) -> ConnectorStats {
        self.core.stats()
    }
}
