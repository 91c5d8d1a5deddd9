//! Daily allowances and spaced full listings: the simulators count requests per org (per
//! key for Keap) against a configurable day's allowance and say so on every answer; the
//! connector stops a system's work for the run before the reserve is spent, a spent
//! allowance is not a failed run, and the next run (the next day) carries on with nothing
//! lost. Keap's full listings run at their `full_listing_every`, remembered in the store.

use std::time::Duration;

use serde_json::{Value, json};
use tether_engine::connector::{Connector, ConnectorError};
use tether_engine::store::{CursorKey, RunOutcome, Store};
use tether_engine::sync::open::OpenOptions;
use tether_sandbox::{RateLimit, RateLimits, Sandbox, SandboxOptions, credentials};

use super::{SF_CONTACTS, World, read_all, shipped_connector};

const DAY: Duration = Duration::from_secs(86_400);
const KEAP_CONTACTS: &str = "keap-contacts-to-customerp-contacts";
const KEAP_COMPANIES: &str = "keap-companies-to-customerp-customers";
const KEAP_PRODUCTS: &str = "keap-products-to-customerp-products";

fn env(sandbox: &Sandbox, name: &str) -> String {
    sandbox
        .env()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("{name} in the sandbox's environment"))
}

/// Sends `count` Salesforce API requests (a describe of the limits) and returns the last
/// answer's status and `Sforce-Limit-Info`.
async fn spend_salesforce(sandbox: &Sandbox, count: usize) -> (u16, String, Value) {
    let http = reqwest::Client::new();
    let login = env(sandbox, "SALESFORCE_LOGIN_URL");
    let token: Value = http
        .post(format!("{login}/services/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", credentials::SALESFORCE_CLIENT_ID),
            ("client_secret", credentials::SALESFORCE_CLIENT_SECRET),
        ])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token JSON");
    let instance = token["instance_url"].as_str().expect("instance_url");
    let access = token["access_token"].as_str().expect("access_token");
    let mut last = (0, String::new(), Value::Null);
    for _ in 0..count {
        let response = http
            .get(format!("{instance}/services/data/v60.0/limits"))
            .bearer_auth(access)
            .send()
            .await
            .expect("request");
        let info = response
            .headers()
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        last = (status, info, body);
    }
    last
}

/// Sends `count` Keap requests and returns the last answer's status and quota headers
/// `(limit, used, available)`.
async fn spend_keap(sandbox: &Sandbox, count: usize) -> (u16, [String; 3]) {
    let http = reqwest::Client::new();
    let base = env(sandbox, "KEAP_BASE_URL");
    let mut last = (0, Default::default());
    for _ in 0..count {
        let response = http
            .get(format!("{base}/contacts?limit=1"))
            .header("X-Keap-API-Key", credentials::KEAP_API_KEY)
            .send()
            .await
            .expect("request");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        last = (
            response.status().as_u16(),
            [
                header("x-keap-product-quota-limit"),
                header("x-keap-product-quota-used"),
                header("x-keap-product-quota-available"),
            ],
        );
    }
    last
}

fn allowance_world_options(salesforce_per_day: u64, keap_per_day: u64) -> SandboxOptions {
    SandboxOptions {
        rate_limits: RateLimits {
            salesforce: vec![RateLimit::new(salesforce_per_day, DAY)],
            keap: vec![RateLimit::new(keap_per_day, DAY)],
            ..RateLimits::unlimited()
        },
        ..SandboxOptions::default()
    }
}

// ---- The simulators count a day's allowance and say so on every answer ---------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_count_the_daily_allowance_on_every_answer_and_refuse_past_it() {
    let sandbox = Sandbox::start(allowance_world_options(5, 4))
        .await
        .expect("sandbox starts");

    // Salesforce: `api-usage=used/allowed` for the org; past it, 403 REQUEST_LIMIT_EXCEEDED.
    let (status, info, _) = spend_salesforce(&sandbox, 3).await;
    assert_eq!((status, info.as_str()), (200, "api-usage=3/5"));
    let (status, info, body) = spend_salesforce(&sandbox, 3).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED", "{body}");
    assert_eq!(body[0]["message"], "TotalRequests Limit exceeded.");
    assert!(info.starts_with("api-usage="), "{info}");

    // Keap: the quota headers of the key; past the quota, the gateway's 429.
    let (status, [limit, used, available]) = spend_keap(&sandbox, 3).await;
    assert_eq!(status, 200);
    assert_eq!(
        (limit.as_str(), used.as_str(), available.as_str()),
        ("4", "3", "1")
    );
    let (status, _) = spend_keap(&sandbox, 2).await;
    assert_eq!(status, 429);

    // A day later both allowances are whole again.
    sandbox.advance_clock(DAY + Duration::from_secs(1));
    let (status, info, _) = spend_salesforce(&sandbox, 1).await;
    assert_eq!((status, info.as_str()), (200, "api-usage=1/5"));
    let (status, [_, used, _]) = spend_keap(&sandbox, 1).await;
    assert_eq!((status, used.as_str()), (200, "1"));
}

// ---- The connector stops before the reserve is spent ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_stops_a_system_before_the_reserve_of_its_allowance_is_spent() {
    let sandbox = Sandbox::start(allowance_world_options(10, 10))
        .await
        .expect("sandbox starts");
    // Another integration of the org used 7 of the 10 requests.
    spend_salesforce(&sandbox, 7).await;
    let connector = shipped_connector(&sandbox, "salesforce");
    sandbox.reset_request_counts();
    let error = read_all(connector.changes("Contact", None).expect("reader"))
        .await
        .err();
    // The first answer says 8 of 10 are used: 80% reaches the 20% reserve, so nothing more
    // is sent in this run.
    let first = connector.stats();
    assert_eq!(
        (first.allowance_used, first.allowance_limit),
        (Some(8), Some(10))
    );
    let error = match error {
        Some(error) => error,
        None => connector
            .get("Contact", "003000000000000AAA")
            .await
            .expect_err("the reserve stops the next request"),
    };
    match &error {
        ConnectorError::AllowanceReserve {
            used,
            allowed,
            system,
            ..
        } => {
            assert_eq!((*used, *allowed, system.as_str()), (8, 10, "salesforce"));
        }
        other => panic!("expected the reserve to stop Salesforce, got {other:?}"),
    }
    assert!(error.stops_system() && error.is_allowance() && !error.is_permanent());
    assert!(error.to_string().contains("8 of the 10"), "{error}");
    let sent = sandbox.request_counts()["salesforce"].total;
    let again = connector.get("Contact", "003000000000000AAA").await;
    assert!(matches!(
        again,
        Err(ConnectorError::AllowanceReserve { .. })
    ));
    assert_eq!(
        sandbox.request_counts()["salesforce"].total,
        sent,
        "a stopped system sends nothing more in the run"
    );

    // Keap: the same mechanism reads its quota headers.
    spend_keap(&sandbox, 7).await;
    let keap = shipped_connector(&sandbox, "keap");
    let error = read_all(keap.changes("contacts", None).expect("reader")).await;
    let stats = keap.stats();
    assert_eq!(
        (stats.allowance_used, stats.allowance_limit),
        (Some(8), Some(10))
    );
    let error = match error {
        Err(error) => error,
        Ok(_) => keap
            .get("contacts", "1")
            .await
            .expect_err("the reserve stops the next request"),
    };
    assert!(
        matches!(error, ConnectorError::AllowanceReserve { .. }),
        "{error:?}"
    );
}

// ---- A spent allowance stops that system cleanly; the next day carries on ------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_salesforce_allowance_is_reported_not_failed_and_the_next_day_syncs_everything() {
    let w = World::with_options("allowance", allowance_world_options(10, 30_000)).await;
    for n in 0..5 {
        w.insert(
            "salesforce",
            "Contact",
            json!({"FirstName": "Ada", "LastName": format!("Quota{n}"), "Email": format!("ada{n}@quota.example"),
                   "MailingCountry": "NO"}),
        );
        w.insert(
            "keap",
            "contacts",
            json!({"given_name": "Kai", "family_name": format!("Quota{n}"),
                   "email_addresses": [{"email": format!("kai{n}@quota.example"), "field": "EMAIL1"}]}),
        );
    }
    // The org's other integrations spent the whole day's allowance.
    let (status, _, _) = spend_salesforce(&w.sandbox, 10).await;
    assert_eq!(status, 200);

    let report = w.run(&[SF_CONTACTS, KEAP_CONTACTS]).await;
    assert_eq!(
        report.outcome,
        Some(RunOutcome::Ok),
        "a spent allowance is not a failed run: {report:#?}"
    );
    let salesforce = report
        .systems
        .iter()
        .find(|s| s.system == "salesforce")
        .expect("Salesforce in the report");
    let stopped = salesforce.stopped.as_deref().expect("Salesforce stopped");
    assert!(stopped.contains("daily request allowance"), "{stopped}");
    assert_eq!(salesforce.allowance_limit, Some(10), "{salesforce:?}");
    let sf = report
        .mappings
        .iter()
        .find(|m| m.mapping == SF_CONTACTS)
        .expect("the Salesforce mapping");
    assert!(sf.postponed.is_some(), "{sf:#?}");
    assert_eq!(sf.stopped, None, "{sf:#?}");
    let keap = report
        .mappings
        .iter()
        .find(|m| m.mapping == KEAP_CONTACTS)
        .expect("the Keap mapping");
    assert_eq!(keap.created_target, 5, "Keap goes on: {keap:#?}");
    assert_eq!(report.parked(), 0, "nothing is parked for an allowance");

    // The next day the allowance is whole again: every Salesforce contact arrives.
    w.sandbox.advance_clock(DAY + Duration::from_secs(1));
    let next = w.run(&[SF_CONTACTS, KEAP_CONTACTS]).await;
    assert_eq!(next.outcome, Some(RunOutcome::Ok), "{next:#?}");
    let erp = w
        .sandbox
        .records("customerp", "contacts")
        .expect("contacts");
    let arrived = erp
        .iter()
        .filter(|c| {
            c["email"]
                .as_str()
                .is_some_and(|e| e.ends_with("@quota.example"))
        })
        .count();
    assert_eq!(arrived, 10, "every contact of both systems reached the ERP");
    let seen = next
        .systems
        .iter()
        .find(|s| s.system == "salesforce")
        .expect("Salesforce in the report");
    assert_eq!(seen.stopped, None);
    assert!(
        seen.allowance_used.is_some_and(|used| used < 10),
        "{seen:?}"
    );
}

// ---- Keap's full listings are spaced by `full_listing_every` -------------------------------

/// Moves the time of the last full listing of a mapping's source back by `hours`.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keap_full_listings_run_every_six_hours_not_every_run_and_still_find_deletions() {
    let w = World::new("full-listing", 0).await;
    let quoted = OpenOptions {
        ignore_rate_limits: false,
    };
    let contact = |n: usize| {
        json!({"given_name": "Liv", "family_name": format!("Listing{n}"),
               "email_addresses": [{"email": format!("liv{n}@listing.example"), "field": "EMAIL1"}]})
    };
    let gone = w.insert("keap", "contacts", contact(1))["id"].clone();
    let kept = w.insert("keap", "contacts", contact(2))["id"].clone();
    let company = w.insert(
        "keap",
        "companies",
        json!({"company_name": "Listing AS", "email_address": "post@listing.example"}),
    )["id"]
        .clone();
    let first = w.run_with(&[KEAP_CONTACTS, KEAP_COMPANIES], quoted).await;
    assert_eq!(first.parked(), 0, "{first:#?}");

    let id = |v: &Value| v.as_i64().expect("integer id").to_string();
    w.sandbox
        .delete("keap", "contacts", &id(&gone))
        .expect("deleted");
    w.sandbox
        .update(
            "keap",
            "contacts",
            &id(&kept),
            json!({"job_title": "Planner"}),
        )
        .expect("edited");
    w.sandbox
        .update(
            "keap",
            "companies",
            &id(&company),
            json!({"company_name": "Listing Holding AS"}),
        )
        .expect("edited");

    // Minutes later: the contact's edit syncs through the incremental read, but neither the
    // deletion listing nor the company listing runs.
    let soon = w.run_with(&[KEAP_CONTACTS, KEAP_COMPANIES], quoted).await;
    let contacts = soon
        .mappings
        .iter()
        .find(|m| m.mapping == KEAP_CONTACTS)
        .expect("contacts");
    assert_eq!(contacts.updated_target, 1, "{contacts:#?}");
    assert_eq!(
        contacts.unlinked, 0,
        "no deletion listing yet: {contacts:#?}"
    );
    let companies = soon
        .mappings
        .iter()
        .find(|m| m.mapping == KEAP_COMPANIES)
        .expect("companies");
    assert_eq!(
        companies.read_source, 0,
        "companies are not listed: {companies:#?}"
    );

    // Six hours after the last listings they run again: the deletion is found and the
    // company's edit arrives.
    age_listing(&w, KEAP_CONTACTS, "contacts", 6).await;
    age_listing(&w, KEAP_COMPANIES, "companies", 6).await;
    let later = w.run_with(&[KEAP_CONTACTS, KEAP_COMPANIES], quoted).await;
    let contacts = later
        .mappings
        .iter()
        .find(|m| m.mapping == KEAP_CONTACTS)
        .expect("contacts");
    assert_eq!(contacts.unlinked, 1, "the deletion is found: {contacts:#?}");
    let erp = w
        .sandbox
        .records("customerp", "customers")
        .expect("customers");
    assert!(
        erp.iter().any(|c| c["name"] == "Listing Holding AS"),
        "the company's edit arrives with its listing"
    );
}

// ---- Creates that meet a spent allowance wait unread, not parked ---------------------------

/// The ERP's products reach Keap one create each. When Keap's day's allowance runs out in
/// the middle, the mapping stops for the run: the creates not sent are not parked one by one
/// (a large initial sync would park most of its records, and retry them all by id the next
/// day); their records are read again from the last cursor the next day, and each product
/// arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_that_meet_a_spent_allowance_wait_for_the_next_day_unparked() {
    const PRODUCTS: usize = 40;
    let w = World::with_options("allowance-creates", allowance_world_options(10_000, 30)).await;
    for n in 0..PRODUCTS {
        w.insert(
            "customerp",
            "products",
            json!({ "sku": format!("QUOTA-{n:03}"), "name": format!("Quota Product {n}"), "unit_price": "12.50",
                    "currency": "EUR", "vat_rate": "25.00", "is_active": true, "stock_quantity": 5 }),
        );
    }
    let report = w.run(&[KEAP_PRODUCTS]).await;
    assert_eq!(report.outcome, Some(RunOutcome::Ok), "{report:#?}");
    let products = &report.mappings[0];
    assert!(products.postponed.is_some(), "{products:#?}");
    assert!(
        (1..PRODUCTS as u64).contains(&products.created_source),
        "Keap took some before its allowance ran out: {products:#?}"
    );
    assert_eq!(report.parked(), 0, "nothing is parked for an allowance");
    let keap = report
        .systems
        .iter()
        .find(|s| s.system == "keap")
        .expect("Keap in the report");
    assert!(
        keap.stopped
            .as_deref()
            .is_some_and(|s| s.contains("daily allowance")),
        "{keap:?}"
    );

    w.sandbox.advance_clock(DAY + Duration::from_secs(1));
    let next = w.run(&[KEAP_PRODUCTS]).await;
    assert_eq!(next.outcome, Some(RunOutcome::Ok), "{next:#?}");
    assert_eq!(next.parked(), 0, "{next:#?}");
    let skus: Vec<String> = w
        .sandbox
        .records("keap", "products")
        .expect("products")
        .iter()
        .filter_map(|p| p["sku"].as_str().map(str::to_owned))
        .filter(|sku| sku.starts_with("QUOTA-"))
        .collect();
    let unique: std::collections::HashSet<&String> = skus.iter().collect();
    assert_eq!(
        (skus.len(), unique.len()),
        (PRODUCTS, PRODUCTS),
        "every product once in Keap"
    );
}
