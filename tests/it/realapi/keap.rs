//! Keap v1 as the official OpenAPI describes it, through the shipped system file and flows:
//! an opportunity PATCH carries the title, contact and stage the replace's body requires,
//! so an order edited in the ERP on one field reaches its Keap opportunity; the product
//! sync feed leaves deleted products out, so a spaced full listing of the products finds
//! them, and no listing is made before it is due.

use serde_json::{Value, json};
use tether_engine::store::{CursorKey, Store};
use tether_engine::sync::open::OpenOptions;
use tether_engine::sync::report::{MappingReport, RunReport};

use super::World;

const KEAP_CONTACTS: &str = "keap-contacts-to-customerp-contacts";
const KEAP_DEALS: &str = "keap-opportunities-to-customerp-orders";
const KEAP_PRODUCTS: &str = "keap-products-to-customerp-products";

fn mapping<'a>(report: &'a RunReport, name: &str) -> &'a MappingReport {
    report
        .mappings
        .iter()
        .find(|m| m.mapping == name)
        .unwrap_or_else(|| panic!("{name} in the report: {report:#?}"))
}

fn id_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erp_order_edited_on_one_field_reaches_its_keap_opportunity() {
    let w = World::new("keap-deal-patch", 0).await;
    let contact = w.insert(
        "keap",
        "contacts",
        json!({"given_name": "Dina", "family_name": "Deal",
               "email_addresses": [{"email": "dina@deal.example", "field": "EMAIL1"}]}),
    )["id"]
        .clone();
    let deal = w.insert(
        "keap",
        "opportunities",
        json!({"opportunity_title": "Fjord deal", "contact": {"id": contact},
               "stage": {"id": 30}, "projected_revenue_high": 1500.0}),
    )["id"]
        .clone();
    let first = w.run(&[KEAP_CONTACTS, KEAP_DEALS]).await;
    assert_eq!(first.parked(), 0, "{first:#?}");
    assert_eq!(mapping(&first, KEAP_DEALS).created_target, 1, "{first:#?}");
    let orders = w.sandbox.records("customerp", "orders").expect("orders");
    assert_eq!(orders.len(), 1);
    let order = id_text(&orders[0]["id"]);

    // Cancelled in the ERP: the one change is the opportunity's stage. Keap's PATCH wants
    // the title, contact and stage with it, which the connector copies from the record.
    w.sandbox
        .update(
            "customerp",
            "orders",
            &order,
            json!({"status": "cancelled"}),
        )
        .expect("a person cancels the order");
    let second = w.run(&[KEAP_CONTACTS, KEAP_DEALS]).await;
    assert_eq!(second.parked(), 0, "nothing refused: {second:#?}");
    assert_eq!(
        mapping(&second, KEAP_DEALS).updated_source,
        1,
        "{second:#?}"
    );
    let opportunity = w
        .sandbox
        .record("keap", "opportunities", &id_text(&deal))
        .expect("lookup")
        .expect("the opportunity is there");
    assert_eq!(opportunity["stage"]["id"], 60, "{opportunity}");
    assert_eq!(opportunity["stage"]["name"], "Lost");
    assert_eq!(opportunity["opportunity_title"], "Fjord deal");
    assert_eq!(opportunity["contact"]["id"], contact);
    assert_eq!(opportunity["projected_revenue_high"], 1500.0);

    // Nothing is left to write.
    let third = w.run(&[KEAP_CONTACTS, KEAP_DEALS]).await;
    assert_eq!(third.parked(), 0, "{third:#?}");
    assert_eq!(mapping(&third, KEAP_DEALS).updated_source, 0, "{third:#?}");
    assert_eq!(mapping(&third, KEAP_DEALS).updated_target, 0, "{third:#?}");
}

/// Moves the time of the last full listing of a mapping's Keap side back by `hours`.
async fn age_listing(w: &World, mapping: &str, entity: &str, hours: i64) {
    let store = Store::open(&w.state).await.expect("store opens");
    let key = CursorKey {
        mapping: mapping.to_owned(),
        side: tether_engine::spec::flow::Side::Source,
        system: "keap".to_owned(),
        entity: format!("{entity}#full-listing"),
    };
    let last = store
        .cursor(&key)
        .await
        .expect("cursor reads")
        .expect("the time of the last full listing is kept");
    let at = chrono::DateTime::parse_from_rfc3339(&last).expect("a time")
        - chrono::Duration::hours(hours);
    let mut tx = store.transaction().await.expect("tx");
    tx.set_cursor(&key, &at.to_rfc3339()).await.expect("set");
    tx.commit().await.expect("commit");
}

/// Requests the Keap simulator answered so far.
fn keap_requests(w: &World) -> u64 {
    w.sandbox.request_counts()["keap"].total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keap_product_deleted_without_a_feed_entry_is_found_by_the_spaced_listing() {
    let w = World::new("keap-product-listing", 0).await;
    let quoted = OpenOptions {
        ignore_rate_limits: false,
    };
    let product = |sku: &str| {
        json!({"sku": sku, "name": format!("Product {sku}"), "description": format!("About {sku}"),
               "unit_price": "50.00", "currency": "USD", "vat_rate": "25.00", "is_active": true,
               "stock_quantity": 7})
    };
    let gone_erp = id_text(&w.insert("customerp", "products", product("LST-GONE"))["id"]);
    w.insert("customerp", "products", product("LST-KEPT"));
    let first = w.run_with(&[KEAP_PRODUCTS], quoted).await;
    assert_eq!(first.parked(), 0, "{first:#?}");
    assert_eq!(
        mapping(&first, KEAP_PRODUCTS).created_source,
        2,
        "{first:#?}"
    );
    let keap_id = |sku: &str| {
        w.sandbox
            .records("keap", "products")
            .expect("products")
            .iter()
            .find(|p| p["sku"] == sku)
            .map(|p| id_text(&p["id"]))
    };
    let gone = keap_id("LST-GONE").expect("created in Keap");
    let kept = keap_id("LST-KEPT").expect("created in Keap");
    w.sandbox
        .delete("keap", "products", &gone)
        .expect("deleted in Keap");
    w.sandbox
        .update(
            "keap",
            "products",
            &kept,
            json!({"product_desc": "Edited in Keap"}),
        )
        .expect("edited in Keap");

    // Minutes later: the edit comes through the sync feed, which leaves the deletion out;
    // the listing is not due, so the feed is all that is read.
    let before = keap_requests(&w);
    let soon = w.run_with(&[KEAP_PRODUCTS], quoted).await;
    let products = mapping(&soon, KEAP_PRODUCTS);
    assert_eq!(products.updated_target, 1, "{products:#?}");
    assert_eq!(products.unlinked, 0, "no listing yet: {products:#?}");
    assert_eq!(
        keap_requests(&w) - before,
        1,
        "one request: the feed's page, no listing"
    );
    let erp = w
        .sandbox
        .records("customerp", "products")
        .expect("products");
    assert!(
        erp.iter()
            .any(|p| p["sku"] == "LST-KEPT" && p["description"] == "Edited in Keap"),
        "the edit arrives: {erp:?}"
    );

    // Six hours after the last listing the products are listed again: the deleted product
    // is missing from it, and its ERP product is unlinked (the mapping's delete policy).
    age_listing(&w, KEAP_PRODUCTS, "products", 6).await;
    let before = keap_requests(&w);
    let later = w.run_with(&[KEAP_PRODUCTS], quoted).await;
    let products = mapping(&later, KEAP_PRODUCTS);
    assert_eq!(products.unlinked, 1, "the deletion is found: {products:#?}");
    assert_eq!(later.parked(), 0, "{later:#?}");
    assert_eq!(
        keap_requests(&w) - before,
        2,
        "the feed's page and one listing page"
    );
    let erp = w
        .sandbox
        .records("customerp", "products")
        .expect("products");
    assert!(
        erp.iter().any(|p| id_text(&p["id"]) == gone_erp),
        "unlinked, not deleted: the ERP product stays"
    );

    // The unlinked product is not created in Keap again, and nothing is left to do.
    let after = w.run_with(&[KEAP_PRODUCTS], quoted).await;
    let products = mapping(&after, KEAP_PRODUCTS);
    assert_eq!(products.created_source, 0, "{products:#?}");
    assert_eq!(after.parked(), 0, "{after:#?}");
    assert_eq!(keap_id("LST-GONE"), None);
}
