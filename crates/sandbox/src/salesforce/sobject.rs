//! sObject rows under `/sobjects/{Object}`: describe, create (201), get, update (PATCH 204),
//! delete (204, then `ENTITY_IS_DELETED`), and the replication calls routed to `replication`.

use axum::http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::http::{ApiRequest, ApiResponse};
use crate::salesforce::{Salesforce, SfError, not_found};

impl Salesforce {
    pub(super) fn body_object(request: &ApiRequest) -> Result<Map<String, Value>, SfError> {
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

    pub(super) fn sobject(
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
                let integration = request
                    .headers
                    .contains_key(axum::http::header::AUTHORIZATION);
                let prepared = self.prepare_update(&store, object, id, &body, integration)?;
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
}
