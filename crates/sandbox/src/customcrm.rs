//! The Custom CRM simulator (`/crm/api`): camelCase, page/per_page paging, `since` at or
//! after, PATCH, hard deletes, and OAuth2 client credentials at `POST /oauth/token` whose
//! tokens expire after `expires_in` seconds. This module is the system's description; the
//! in-house backend (`inhouse`) serves it.

use crate::credentials;
use crate::inhouse::{
    Auth, Conventions, DeleteMode, EntityDef, IdKind, NumberFormat, Paging, UpdateMethod,
};

fn quote_number(number: u64) -> String {
    format!("Q-{number:06}")
}

fn order_number(number: u64) -> String {
    format!("ORD-{number:06}")
}

/// The Custom CRM as the in-house backend serves it.
pub fn conventions() -> Conventions {
    let entity = |name, read, write, patch, number: NumberFormat| EntityDef {
        name,
        read,
        write,
        patch,
        number,
        unique: &[],
    };
    Conventions {
        system: "customcrm",
        auth: Auth::ClientCredentials {
            client_id: credentials::CUSTOMCRM_CLIENT_ID,
            client_secret: credentials::CUSTOMCRM_CLIENT_SECRET,
            token_prefix: "crm-",
        },
        base_path: "/crm/api",
        contract: include_str!("../../../contracts/customcrm.openapi.json"),
        entities: vec![
            entity(
                "customers",
                "Customer",
                "CustomerWrite",
                "CustomerPatch",
                None,
            ),
            entity("users", "User", "UserWrite", "UserPatch", None),
            entity("products", "Product", "ProductWrite", "ProductPatch", None),
            entity(
                "quotes",
                "Quote",
                "QuoteWrite",
                "QuotePatch",
                Some(("quoteNumber", quote_number)),
            ),
            entity(
                "orders",
                "Order",
                "OrderWrite",
                "OrderPatch",
                Some(("orderNumber", order_number)),
            ),
        ],
        paging: Paging::Pages,
        since_param: "since",
        since_strict: false,
        update: UpdateMethod::Patch,
        delete: DeleteMode::Hard,
        ids: IdKind::Integer,
        created_field: None,
        modified_field: "lastModified",
        deleted_field: None,
        limit_text: "10 requests/s",
        references: &[
            ("quotes", "customerId", "customers"),
            ("quotes", "ownerUserId", "users"),
            ("quotes", "lines[].productId", "products"),
            ("orders", "customerId", "customers"),
            ("orders", "quoteId", "quotes"),
            ("orders", "lines[].productId", "products"),
        ],
        refuse_referenced_delete: false,
    }
}
