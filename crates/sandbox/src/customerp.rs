//! The Customerp (ERP) simulator (`/api/v1`): snake_case, offset/limit paging with a
//! total, `modified_since` at or after, PATCH, deletes that leave tombstones under
//! `GET /deleted`, server-assigned customer, order and quote numbers, a fixed bearer token.
//! This module is the system's description; the in-house backend (`inhouse`) serves it.

use crate::credentials;
use crate::inhouse::{
    Auth, Conventions, DeleteMode, EntityDef, IdKind, NumberFormat, Paging, UpdateMethod,
};

fn customer_number(number: u64) -> String {
    format!("C-{number:06}")
}

fn order_number(number: u64) -> String {
    format!("SO-{number:06}")
}

fn quote_number(number: u64) -> String {
    format!("QT-{number:06}")
}

/// Customerp as the in-house backend serves it.
pub fn conventions() -> Conventions {
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
        auth: Auth::FixedBearer {
            token: credentials::CUSTOMERP_TOKEN,
        },
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
        // The ERP's contract: a customer, contact or product that live orders, quotes or
        // contacts still refer to cannot be deleted (409 `still_referenced`), so no order is
        // left pointing at nothing (and refusing every later PATCH of it).
        refuse_referenced_delete: true,
    }
}
