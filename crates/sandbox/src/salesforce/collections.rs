//! sObject Collections at `/composite/sobjects`: create, update and delete of at most 200
//! records with `allOrNone` (a snapshot of the store to roll back to), per-record results
//! with `statusCode` errors, and retrieve by ids.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::http::{ApiRequest, ApiResponse};
use crate::salesforce::describe::normalize_id;
use crate::salesforce::{MAX_COLLECTION, SYSTEM, Salesforce, SfError, not_found};
use crate::store::{EntityStore, Store};

impl Salesforce {
    pub(super) fn collection(
        &self,
        request: &ApiRequest,
        version: &str,
    ) -> Result<ApiResponse, SfError> {
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
                let integration = request
                    .headers
                    .contains_key(axum::http::header::AUTHORIZATION);
                let results = self.collection_write(records, creating, all_or_none, integration);
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

    pub(super) fn snapshot(
        store: &Store,
    ) -> Option<std::collections::BTreeMap<String, EntityStore>> {
        store.systems.get(SYSTEM).cloned()
    }

    pub(super) fn restore(
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

    pub(super) fn collection_write(
        &self,
        records: &[Value],
        creating: bool,
        all_or_none: bool,
        integration: bool,
    ) -> Vec<Value> {
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
                    self.prepare_update(&store, object, id, body, integration)?
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

    pub(super) fn collection_delete(&self, ids: &[String], all_or_none: bool) -> Vec<Value> {
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

    pub(super) fn collection_retrieve(
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

pub(super) fn rolled_back() -> Value {
    json!({
        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
        "fields": [],
    })
}
