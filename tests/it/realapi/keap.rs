//! Keap v1 as the official OpenAPI describes it, through the shipped system file and flows:
//! an opportunity PATCH carries the title, contact and stage the replace's body requires,
//! so an order edited in the ERP on one field reaches its Keap opportunity.

use serde_json::{Value, json};
use tether_engine::sync::report::{MappingReport, RunReport};

use super::World;

const KEAP_CONTACTS: &str = "keap-contacts-to-customerp-contacts";
const KEAP_DEALS: &str = "keap-opportunities-to-customerp-orders";

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
