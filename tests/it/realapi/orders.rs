//! Salesforce order activation: an order is activated by its status alone, and an activated
//! order's fields are locked to an integration user without Edit Activated Orders. The
//! simulator refuses both as Salesforce does; the connector sends an activation as its own
//! update after the other fields (the system file's `update.alone`), and a change to a
//! locked field is parked with Salesforce's message.

use serde_json::{Value, json};
use tether_engine::connector::Connector;

use super::{
    SF_CONTACTS, SF_ORDERS, SF_PRODUCTS, World, big_order, salesforce_request, shipped_connector,
};

/// PATCHes a Salesforce order as the integration user (over the API, with a session).
async fn patch_order(sandbox: &tether_sandbox::Sandbox, id: &str, body: Value) -> (u16, String) {
    let response = salesforce_request(
        sandbox,
        reqwest::Method::PATCH,
        &format!("/sobjects/Order/{id}"),
    )
    .await
    .json(&body)
    .send()
    .await
    .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_takes_an_activation_alone_and_locks_an_activated_order() {
    let w = World::new("orders-sim", 0).await;
    let order = big_order(&w, 2);
    let (status, body) = patch_order(
        &w.sandbox,
        &order,
        json!({"Status": "Activated", "Description": "rush"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("FIELD_INTEGRITY_EXCEPTION") && body.contains("Status on its own"),
        "{body}"
    );
    let (status, body) = patch_order(&w.sandbox, &order, json!({"Status": "Activated"})).await;
    assert_eq!(status, 204, "the activation alone is taken: {body}");
    let (status, body) = patch_order(&w.sandbox, &order, json!({"Description": "too late"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Edit Activated Orders"), "{body}");
    // A person (an administrator, with Edit Activated Orders) may still edit it.
    w.sandbox
        .update(
            "salesforce",
            "Order",
            &order,
            json!({"Description": "by an admin"}),
        )
        .expect("a person's edit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_sends_the_activation_after_the_other_fields() {
    let w = World::new("orders-connector", 0).await;
    let one = big_order(&w, 1);
    let connector = shipped_connector(&w.sandbox, "salesforce");
    connector
        .update(
            "Order",
            &one,
            json!({"Status": "Activated", "Description": "rush"}),
        )
        .await
        .expect("the update goes through in two");
    let got = w
        .sandbox
        .record("salesforce", "Order", &one)
        .expect("lookup")
        .expect("order");
    assert_eq!(
        (got["Status"].clone(), got["Description"].clone()),
        (json!("Activated"), json!("rush"))
    );

    // Batched updates split the same way.
    let first = w
        .sandbox
        .record("salesforce", "Order", &one)
        .expect("lookup")
        .expect("order");
    let two = w.insert(
        "salesforce",
        "Order",
        json!({"AccountId": first["AccountId"], "EffectiveDate": "2026-05-04", "Status": "Draft",
               "Pricebook2Id": first["Pricebook2Id"]}),
    )["Id"]
        .as_str()
        .expect("Id")
        .to_owned();
    let results = connector
        .update_many(
            "Order",
            vec![(
                two.clone(),
                json!({"Status": "Activated", "Description": "batch"}),
            )],
        )
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let got = w
        .sandbox
        .record("salesforce", "Order", &two)
        .expect("lookup")
        .expect("order");
    assert_eq!(
        (got["Status"].clone(), got["Description"].clone()),
        (json!("Activated"), json!("batch"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erp_confirmation_activates_the_order_and_a_locked_change_is_parked() {
    let w = World::new("orders-e2e", 0).await;
    let order = big_order(&w, 2);
    let first = w.run(&[SF_CONTACTS, SF_PRODUCTS, SF_ORDERS]).await;
    assert_eq!(first.parked(), 0, "{first:#?}");
    let reference = w
        .sandbox
        .record("salesforce", "Order", &order)
        .expect("lookup")
        .expect("order")["OrderReferenceNumber"]
        .as_str()
        .expect("the ERP's number")
        .to_owned();
    let erp_id = w
        .sandbox
        .records("customerp", "orders")
        .expect("orders")
        .into_iter()
        .find(|o| o["order_number"] == json!(reference))
        .map(|o| o["id"].to_string().trim_matches('"').to_owned())
        .expect("the ERP order");

    // Confirmed in the ERP with a new date: Salesforce gets the date, then the activation.
    w.sandbox
        .update(
            "customerp",
            "orders",
            &erp_id,
            json!({"status": "confirmed", "order_date": "2026-06-01"}),
        )
        .expect("ERP edit");
    let report = w.run(&[SF_ORDERS]).await;
    assert_eq!(report.parked(), 0, "{report:#?}");
    let sf = w
        .sandbox
        .record("salesforce", "Order", &order)
        .expect("lookup")
        .expect("order");
    assert_eq!(sf["Status"], "Activated", "{sf}");
    assert_eq!(sf["EffectiveDate"], "2026-06-01", "{sf}");

    // The order is activated: a later date change is locked, and parked with the reason.
    w.sandbox
        .update(
            "customerp",
            "orders",
            &erp_id,
            json!({"order_date": "2026-06-15"}),
        )
        .expect("ERP edit");
    let report = w.run(&[SF_ORDERS]).await;
    assert_eq!(report.parked(), 1, "{report:#?}");
    let store = tether_engine::store::Store::open(&w.state)
        .await
        .expect("store opens");
    let parked = store.parked(Some(SF_ORDERS)).await.expect("parked");
    assert_eq!(parked.len(), 1, "{parked:#?}");
    let reason = format!("{:?}", parked[0]);
    assert!(reason.contains("Edit Activated Orders"), "{reason}");
}
