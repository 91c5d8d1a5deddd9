//! [`HttpConnector`]: the [`Connector`] every system file gets. It compiles the file once
//! (URLs and credentials in `http.rs`, entities in `compiled.rs`) and then serves reads
//! through [`crate::connector::listing`] and writes here: get, create (reading back an id-only
//! answer), PATCH or read-merge-PUT updates, deletes, and Salesforce sObject Collections
//! batches with per-record results.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use indexmap::IndexMap;
use reqwest::{Method, Url};
use serde_json::{Value, json};

use crate::connector::compiled::{Deletes, EntityRt};
use crate::connector::describe;
use crate::connector::error::{ApiError, ConnectorError};
use crate::connector::http::{Body, HttpCore, Reply, Request, join_path};
use crate::connector::listing::{self, ListReader};
use crate::connector::value;
use crate::connector::{
    BoxFuture, Connector, ConnectorStats, Cursor, Deleted, DeletionDiscovery, EntityInfo,
    Malformed, PageReader, Record, Written,
};
use crate::spec::node::Checked;
use crate::spec::system::{BatchSpec, BatchStyle, SystemFile, UpdateMethod};

/// Records one Salesforce sObject Collections request may carry.
const SALESFORCE_COLLECTION_LIMIT: u32 = 200;

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
        if let Some(id) = id {
            self.check_id(entity, id)?;
        }
        let api_base = self.core.api_base().await?;
        let filled = match id {
            Some(id) => value::fill_id(path, id),
            None => path.to_owned(),
        };
        let mut url = join_path(&api_base, &filled).map_err(|message| ConnectorError::Config {
            system: self.core.system.clone(),
            message: format!("entity `{entity}`: {message}"),
        })?;
        // The id must still be its own segment once the URL is parsed: nothing the parser
        // normalises away may send the request (and the credential) elsewhere.
        if let Some(id) = id
            && path.contains("{id}")
        {
            let segment = value::encode_segment(id);
            if !url
                .path_segments()
                .is_some_and(|mut segments| segments.any(|s| s == segment))
            {
                return Err(self.invalid_id(entity, id, "a URL cannot carry it as a path segment"));
            }
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Refuses an id that cannot address a record before anything is sent.
    fn check_id(&self, entity: &str, id: &str) -> Result<(), ConnectorError> {
        let rt = self.entity_rt(entity)?;
        match rt.id_problem(id) {
            Some(problem) => Err(self.invalid_id(entity, id, problem)),
            None => Ok(()),
        }
    }

    fn invalid_id(&self, entity: &str, id: &str, reason: &str) -> ConnectorError {
        ConnectorError::InvalidId {
            system: self.core.system.clone(),
            entity: entity.to_owned(),
            id: value::truncate(id, 100),
            reason: reason.to_owned(),
        }
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
        self.check_id(entity, id)?;
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
        // A SOQL read asks only for the columns the org has.
        let mut query = query;
        if let Some(present) = describe::columns(&self.core, &rt).await? {
            for (key, text) in query.iter_mut() {
                if key == "q" {
                    *text = present.restrict(text);
                }
            }
        }
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
        let mut data = rt.record_in(&body).clone();
        listing::complete_children(&self.core, &rt, &mut data, &reply.url).await?;
        let record = rt
            .to_record(data)
            .map_err(|malformed| self.malformed(&request, malformed.reason, false))?;
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
            projection: None,
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
                    .map_err(|malformed| self.malformed(&request, malformed.reason, false))?;
                Ok(Written {
                    id: record.id.clone(),
                    record: Some(record),
                })
            }
            Some(path) => {
                let (id, _) = rt
                    .listed_id(path, body)
                    .map_err(|malformed| self.malformed(&request, malformed.reason, false))?;
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
        let parts = split_alone(&changes, &update.alone);
        if parts.len() > 1 {
            let mut written = None;
            for part in parts {
                written = Some(Box::pin(self.update_record(entity, id, part)).await?);
            }
            if let Some(written) = written {
                return Ok(written);
            }
        }
        let (method, body) = match update.method {
            UpdateMethod::Patch => {
                // What the engine copies from the current record for a field the system
                // wants with every update (`required_on_update`: Keap's opportunity
                // `contact` and `stage`) comes with the parts the system only reports.
                let mut changes = changes;
                value::strip_read_only(&mut changes, &rt.spec.fields);
                (Method::PATCH, changes)
            }
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
            projection: None,
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
                Err(Malformed { data, .. }) => Record {
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
            projection: None,
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
            projection: None,
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
            full_listing_every: spec.full_listing_every().ok().flatten(),
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

    fn list_ids(&self, entity: &str) -> Result<Box<dyn PageReader>, ConnectorError> {
        let rt = self.entity_rt(entity)?;
        Ok(Box::new(ListReader::ids(self.core.clone(), rt)))
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
            // One request per record, up to `http.concurrency` in flight, results in order.
            stream::iter(records)
                .map(|fields| self.create_record(entity, fields))
                .buffered(self.core.concurrency)
                .collect()
                .await
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
                && let Some(update) = rt.spec.update.as_ref()
                && update.method == UpdateMethod::Patch
                && updates
                    .iter()
                    .all(|(_, changes)| split_alone(changes, &update.alone).len() == 1)
            {
                let items = updates
                    .into_iter()
                    .map(|(id, changes)| (Some(id), changes))
                    .collect();
                return self.batch(rt, batch, Method::PATCH, items).await;
            }
            stream::iter(updates)
                .map(|(id, changes)| async move { self.update_record(entity, &id, changes).await })
                .buffered(self.core.concurrency)
                .collect()
                .await
        })
    }

    fn concurrency(&self) -> usize {
        self.core.concurrency
    }

    fn stats(&self) -> ConnectorStats {
        self.core.stats()
    }

    fn start_run(&self) {
        self.core.start_run();
    }

    fn missing_fields<'a>(
        &'a self,
        entity: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, ConnectorError>> {
        Box::pin(async move {
            let rt = self.entity_rt(entity)?;
            Ok(match describe::present_fields(&self.core, &rt).await? {
                Some(present) => describe::missing(&rt, &present),
                None => Vec::new(),
            })
        })
    }

    fn probe<'a>(&'a self, entity: &'a str) -> BoxFuture<'a, Result<usize, ConnectorError>> {
        Box::pin(async move {
            let rt = self.entity_rt(entity)?;
            let mut reader = ListReader::probe(self.core.clone(), rt);
            Ok(reader
                .next_page()
                .await?
                .map_or(0, |page| page.records.len()))
        })
    }

    fn write_access<'a>(
        &'a self,
        entity: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::connector::WriteAccess>, ConnectorError>> {
        Box::pin(async move {
            let rt = self.entity_rt(entity)?;
            describe::access(&self.core, &rt).await
        })
    }
}
/// The updates that carry `changes`: one, or where a field changes to a value the API
/// takes only alone (`update.alone`) together with other fields, the other fields first
/// and that field after them.
///
/// Real behaviour (Salesforce Help, "Editing and Deletion Limitations for Orders and
/// Reduction Orders"; Object Reference, Order `Status`): an order is activated by a change
/// of its status category from Draft to Activated, which Salesforce takes only as the
/// only change of the update, and once activated its fields are locked to users without
/// Edit Activated Orders; so the other fields go first, while the order is still a draft.
pub(crate) fn split_alone(changes: &Value, alone: &IndexMap<String, Vec<String>>) -> Vec<Value> {
    let Some(object) = changes.as_object() else {
        return vec![changes.clone()];
    };
    let (solo, rest): (
        serde_json::Map<String, Value>,
        serde_json::Map<String, Value>,
    ) = object
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(name, value)| {
            alone.get(name).is_some_and(|values| {
                value
                    .as_str()
                    .is_some_and(|text| values.iter().any(|v| v == text))
            })
        });
    if solo.is_empty() || rest.is_empty() {
        return vec![changes.clone()];
    }
    let mut parts = vec![Value::Object(rest)];
    parts.extend(solo.into_iter().map(|(k, v)| json!({ k: v })));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activation_goes_alone_after_the_other_fields() {
        let alone: IndexMap<String, Vec<String>> =
            [("Status".to_owned(), vec!["Activated".to_owned()])].into();
        let both = json!({"Status": "Activated", "EffectiveDate": "2026-05-04"});
        assert_eq!(
            split_alone(&both, &alone),
            vec![
                json!({"EffectiveDate": "2026-05-04"}),
                json!({"Status": "Activated"})
            ]
        );
        for one in [
            json!({"Status": "Activated"}),
            json!({"Status": "Draft", "EffectiveDate": "2026-05-04"}),
            json!({"EffectiveDate": "2026-05-04"}),
        ] {
            assert_eq!(split_alone(&one, &alone), vec![one.clone()]);
        }
    }
}
