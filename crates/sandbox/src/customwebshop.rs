//! The Custom Webshop simulator (`/shop/api`): UUID ids, cursor paging (`next_cursor`
//! null on the last page), `updated_after` strictly after, PUT replaces the whole record,
//! soft deletes (`deleted: true`, listed only with `include_deleted=true`; a GET of a
//! deleted record still answers it), unique customer email and product SKU (422), and an
//! `X-Api-Key` header. This module is the system's description; the in-house backend
//! (`inhouse`) serves it.

use crate::credentials;
use crate::inhouse::{Auth, Conventions, DeleteMode, EntityDef, IdKind, Paging, UpdateMethod};

fn order_number(number: u64) -> String {
    format!("#{}", 1000 + number)
}

/// The Custom Webshop as the in-house backend serves it.
pub fn conventions() -> Conventions {
    Conventions {
        system: "customwebshop",
        auth: Auth::ApiKey {
            header: "X-Api-Key",
            key: credentials::CUSTOMWEBSHOP_API_KEY,
        },
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
        refuse_referenced_delete: false,
    }
}
