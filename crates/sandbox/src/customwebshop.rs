//! The Custom Webshop simulator (`/shop/api`): UUID ids, cursor paging (`next_cursor`
//! null on the last page), `updated_after` strictly after, PUT replaces the whole record,
//! soft deletes (`deleted: true`, listed only with `include_deleted=true`; a GET of a
//! deleted record still answers it), unique customer email and product SKU (422), and an
//! `X-Api-Key` header.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::Value;

use crate::http::{ApiRequest, ApiResponse, Simulator, Window};
use crate::inhouse::{
    Conventions, DeleteMode, EntityDef, IdKind, InHouse, Paging, UpdateMethod, error,
};
use crate::store::{Stamp, Store};
use crate::{Backend, FaultKind, SandboxError, Shared, credentials, request};

pub struct CustomWebshop {
    core: InHouse,
}

fn order_number(number: u64) -> String {
    format!("#{}", 1000 + number)
}

fn conventions() -> Conventions {
    Conventions {
        system: "customwebshop",
        base_path: "/shop/api",
        contract: include_str!("../../../contracts/customwebshop.openapi.json"),
        entities: vec![
            EntityDef {
                name: "customers",
                read: "Customer",
                write: "CustomerWrite",
                patch: "CustomerPatch",
                number: None,
                unique: &["email"],
            },
            EntityDef {
                name: "products",
                read: "Product",
                write: "ProductWrite",
                patch: "ProductPatch",
                number: None,
                unique: &["sku"],
            },
            EntityDef {
                name: "orders",
                read: "Order",
                write: "OrderWrite",
                patch: "OrderPatch",
                number: Some(("number", order_number)),
                unique: &[],
            },
        ],
        paging: Paging::Cursor,
        since_param: "updated_after",
        since_strict: true,
        update: UpdateMethod::Put,
        delete: DeleteMode::Soft,
        ids: IdKind::Uuid,
        created_field: Some("created_at"),
        modified_field: "updated_at",
        deleted_field: Some("deleted"),
        limit_text: "10 requests/s",
        references: &[("orders", "customer_id", "customers")],
    }
}

impl CustomWebshop {
    pub fn new(shared: Arc<Shared>, windows: Vec<Window>) -> Result<Self, SandboxError> {
        Ok(Self {
            core: InHouse::new(conventions(), shared, windows)?,
        })
    }
}

impl Simulator for CustomWebshop {
    fn system(&self) -> &'static str {
        "customwebshop"
    }

    fn handle(&self, request: &ApiRequest) -> ApiResponse {
        let message = match request.header("x-api-key") {
            None => Some("missing X-Api-Key header"),
            Some(key) if key != credentials::CUSTOMWEBSHOP_API_KEY => Some("invalid API key"),
            Some(_) => None,
        };
        if let Some(message) = message {
            return error(StatusCode::UNAUTHORIZED, "unauthorized", message, None);
        }
        if let Some(response) = self.core.throttle() {
            return response;
        }
        self.core.route(request)
    }

    fn fault(&self, kind: FaultKind) -> ApiResponse {
        self.core.fault(kind)
    }
}

impl Backend for CustomWebshop {
    fn entities(&self) -> Vec<&'static str> {
        self.core.entity_names()
    }

    fn route(&self, request: &ApiRequest) -> ApiResponse {
        self.core.route(request)
    }

    fn collection_path(&self, entity: &str) -> String {
        self.core.collection_path(entity)
    }

    fn records(&self, entity: &str) -> Vec<Value> {
        self.core.records(entity)
    }

    fn create_at(
        &self,
        store: &mut Store,
        entity: &str,
        body: Value,
        at: Stamp,
    ) -> Result<String, ApiResponse> {
        self.core.create_at(store, entity, body, at)
    }

    /// The API only has PUT: merge the patch into the record's writable fields and PUT.
    fn edit(&self, entity: &str, id: &str, patch: Value) -> ApiResponse {
        let Some(mut fields) = self.core.writable(entity, id) else {
            return error(StatusCode::NOT_FOUND, "not_found", "record not found", None);
        };
        if let Value::Object(changes) = patch {
            fields.extend(changes);
        }
        let path = format!("{}/{}", self.core.collection_path(entity), id);
        self.core
            .route(&request(Method::PUT, &path, Some(&Value::Object(fields))))
    }
}
