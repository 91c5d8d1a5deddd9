//! Fields that differ per Salesforce org: the simulator's org profiles (without State and
//! Country picklists, without reduction orders, a field hidden by field-level security)
//! answer `INVALID_FIELD` for a column the org lacks, as Salesforce does; the connector
//! reads each object's describe once per run and queries only the columns the org has,
//! and a mapping that uses a missing field stops with the field and the mapping named
//! while the other mappings go on.

use serde_json::{Value, json};
use tether_engine::connector::Connector;
use tether_sandbox::{RateLimits, SalesforceOrg, Sandbox, SandboxOptions};

use super::{
    SF_CONTACTS, SF_ORDERS, SF_PRODUCTS, World, big_order, read_all, salesforce_request,
    shipped_connector,
};

fn options(org: SalesforceOrg) -> SandboxOptions {
    SandboxOptions {
        rate_limits: RateLimits::unlimited(),
        salesforce_org: org,
        ..SandboxOptions::default()
    }
}

fn lean_org() -> SalesforceOrg {
    SalesforceOrg {
        state_country_picklists: false,
        reduction_orders: false,
        // Order and quote lines' service dates hidden too: columns of the subqueries that
        // read the lines with their order or quote, which no mapping uses.
        hidden_fields: vec![
            "Contact.Title".to_owned(),
            "OrderItem.ServiceDate".to_owned(),
            "QuoteLineItem.ServiceDate".to_owned(),
        ],
    }
}

/// GETs a Salesforce REST path (after `/services/data/v60.0`) with a session.
async fn sf_get(sandbox: &Sandbox, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let response = salesforce_request(sandbox, reqwest::Method::GET, path)
        .await
        .query(query)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn names(describe: &Value) -> Vec<String> {
    describe["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_without_a_field_refuses_the_column_and_leaves_it_out_of_its_describe() {
    let full = Sandbox::start(options(SalesforceOrg::default()))
        .await
        .expect("sandbox starts");
    let lean = Sandbox::start(options(lean_org()))
        .await
        .expect("sandbox starts");
    let query = [("q", "SELECT Id, BillingStateCode FROM Quote")];
    let (status, _) = sf_get(&full, "/query", &query).await;
    assert_eq!(status, 200, "an org with State and Country picklists");
    let (status, body) = sf_get(&lean, "/query", &query).await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD", "{body}");
    assert!(
        body[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("No such column 'BillingStateCode' on entity 'Quote'")),
        "{body}"
    );

    let (_, order) = sf_get(&lean, "/sobjects/Order/describe", &[]).await;
    let order = names(&order);
    assert!(
        !order
            .iter()
            .any(|n| n == "OriginalOrderId" || n == "IsReductionOrder")
    );
    assert!(order.iter().any(|n| n == "Status"));
    let (_, contact) = sf_get(&lean, "/sobjects/Contact/describe", &[]).await;
    assert!(
        !names(&contact).iter().any(|n| n == "Title"),
        "hidden by field-level security"
    );
    let (status, body) = sf_get(&lean, "/query", &[("q", "SELECT Id, Title FROM Contact")]).await;
    assert_eq!(
        (status, body[0]["errorCode"].clone()),
        (400, json!("INVALID_FIELD"))
    );
    let (_, contact) = sf_get(&full, "/sobjects/Contact/describe", &[]).await;
    assert!(names(&contact).iter().any(|n| n == "Title"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_queries_only_the_columns_the_org_has() {
    let w = World::with_options("orgs-connector", options(lean_org())).await;
    let order = big_order(&w, 3);
    let connector = shipped_connector(&w.sandbox, "salesforce");
    for entity in ["Contact", "Order", "Product2", "Quote"] {
        let pages = read_all(connector.changes(entity, None).expect("reader"))
            .await
            .unwrap_or_else(|e| panic!("{entity} reads in an org without the fields: {e}"));
        assert!(pages.iter().all(|p| p.malformed.is_empty()));
    }
    let got = connector
        .get("Order", &order)
        .await
        .expect("get")
        .expect("the order");
    assert_eq!(
        got.data["OrderItems"]["records"]
            .as_array()
            .map_or(0, Vec::len),
        3
    );
    assert!(got.data.get("OriginalOrderId").is_none());
    let missing = connector.missing_fields("Order").await.expect("describe");
    assert_eq!(missing, vec!["OriginalOrderId", "IsReductionOrder"]);
    let missing = connector.missing_fields("Contact").await.expect("describe");
    assert!(missing.contains(&"Title".to_owned()), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_field_the_org_lacks_stops_that_mapping_only_with_the_field_named() {
    let w = World::with_options("orgs-e2e", options(lean_org())).await;
    big_order(&w, 3);
    w.insert(
        "salesforce",
        "Contact",
        json!({"FirstName": "Lea", "LastName": "Lean", "Email": "lea@lean.example", "MailingCountry": "NO"}),
    );
    let report = w.run(&[SF_CONTACTS, SF_PRODUCTS, SF_ORDERS]).await;
    let by_name = |name: &str| {
        report
            .mappings
            .iter()
            .find(|m| m.mapping == name)
            .unwrap_or_else(|| panic!("{name} in {report:#?}"))
    };
    let contacts = by_name(SF_CONTACTS);
    let stopped = contacts
        .stopped
        .as_deref()
        .expect("the contacts mapping stops");
    assert!(stopped.contains("Title"), "{stopped}");
    assert!(stopped.contains(SF_CONTACTS), "{stopped}");
    assert!(stopped.contains("field-level security"), "{stopped}");
    let products = by_name(SF_PRODUCTS);
    assert_eq!(products.stopped, None, "{products:#?}");
    assert!(products.read_source >= 1, "products go on: {products:#?}");
    let orders = by_name(SF_ORDERS);
    assert_eq!(orders.stopped, None, "{orders:#?}");
    assert_eq!(orders.created_target, 1, "the order goes on: {orders:#?}");
}
