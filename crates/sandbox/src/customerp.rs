//! The Customerp (ERP) simulator (`/api/v1`): snake_case, offset/limit paging with a
//! total, `modified_since` at or after, PATCH, deletes that leave tombstones under
//! `GET /deleted`, server-assigned customer, order and quote numbers, a fixed bearer token.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use serde_json::Value;

use crate::http::{ApiRequest, ApiResponse, Simulator, Window};
use crate::inhouse::{
    Conventions, DeleteMode, EntityDef, IdKind, InHouse, NumberFormat, Paging, UpdateMethod, error,
};
use crate::store::{Stamp, Store};
use crate::{Backend, FaultKind, SandboxError, Shared, credentials};

pub struct Customerp {
    core: InHouse,
}

fn customer_number(number: u64) -> String {
    format!("C-{number:06}")
}

fn order_number(number: u64) -> String {
    format!("SO-{number:06}")
}

fn quote_number(number: u64) -> String {
    format!("QT-{number:06}")
}

fn conventions() -> Conventions {
    let entity =
        |name, read, write, patch, number: NumberFormat, unique: &'static [&'static str]| {
            EntityDef {
                name,
                read,
                write,
                patch,
                number,
                unique,
            }
        };
    Conventions {
        system: "customerp",
        base_path: "/api/v1",
        contract: include_str!("../../../contracts/customerp.openapi.json"),
        entities: vec![
            entity(
                "customers",
                "Customer",
                "CustomerWrite",
                "CustomerPatch",
                Some(("customer_number", customer_number)),
                &[],
            ),
            entity(
                "contacts",
                "Contact",
                "ContactWrite",
                "ContactPatch",
                None,
                &[],
            ),
            entity(
                "products",
                "Product",
                "ProductWrite",
                "ProductPatch",
                None,
                &["sku"],
            ),
            entity(
                "orders",
                "Order",
                "OrderWrite",
                "OrderPatch",
                Some(("order_number", order_number)),
                &[],
            ),
            entity(
                "quotes",
                "Quote",
                "QuoteWrite",
                "QuotePatch",
                Some(("quote_number", quote_number)),
                &[],
            ),
        ],
        paging: Paging::Offset,
        since_param: "modified_since",
        since_strict: false,
        update: UpdateMethod::Patch,
        delete: DeleteMode::Tombstone,
        ids: IdKind::Integer,
        created_field: Some("created_at"),
        modified_field: "modified_at",
        deleted_field: None,
        limit_text: "20 requests/s",
        references: &[
            ("contacts", "customer_id", "customers"),
            ("orders", "customer_id", "customers"),
            ("orders", "contact_id", "contacts"),
            ("orders", "lines[].product_id", "products"),
            ("quotes", "customer_id", "customers"),
            ("quotes", "contact_id", "contacts"),
            ("quotes", "lines[].product_id", "products"),
        ],
    }
}

impl Customerp {
    pub fn new(shared: Arc<Shared>, windows: Vec<Window>) -> Result<Self, SandboxError> {
        Ok(Self {
            core: InHouse::new(conventions(), shared, windows)?,
        })
    }
}

impl Simulator for Customerp {
    fn system(&self) -> &'static str {
        "customerp"
    }

    fn handle(&self, request: &ApiRequest) -> ApiResponse {
        let message = match request.bearer() {
            None => Some("missing bearer token"),
            Some(token) if token != credentials::CUSTOMERP_TOKEN => Some("invalid bearer token"),
            Some(_) => None,
        };
        if let Some(message) = message {
            return error(StatusCode::UNAUTHORIZED, "unauthorized", message, None)
                .with_header(header::WWW_AUTHENTICATE, "Bearer");
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

impl Backend for Customerp {
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
}
