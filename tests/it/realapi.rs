//! The real Keap and Salesforce behaviours the simulators now reproduce, end to end: the
//! shipped system files' connectors against the stricter simulators (children of a SOQL
//! subquery in pages of their own, Keap `next` links that drop parameters, getDeleted's
//! window and purges, the login host of the client-credentials flow, fields that differ per
//! org, records that move during an offset-paged read), and the shipped flows carrying
//! every record through them. `quota` holds the daily allowances (Salesforce's
//! `Sforce-Limit-Info`, Keap's quota headers) and the spaced full listings; `keap` the
//! opportunity PATCH's required fields and product deletions the sync feed leaves out.

mod check;
mod keap;
mod moving;
mod orders;
mod orgs;
mod quota;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tether_engine::connector::{Connector, ConnectorError, HttpConnector, Page, PageReader};
use tether_engine::spec::load::load_text;
use tether_engine::spec::system::SystemFile;
use tether_engine::store::StoreUrl;
use tether_engine::sync::engine::RunOptions;
use tether_engine::sync::open::{OpenOptions, open};
use tether_engine::sync::report::RunReport;
use tether_sandbox::{RateLimits, Sandbox, SandboxOptions};

fn flows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("flows")
}

async fn sandbox(seed: usize) -> Sandbox {
    Sandbox::start(SandboxOptions {
        seed,
        rate_limits: RateLimits::unlimited(),
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts")
}

/// The connector of a shipped system file, pointed at the sandbox.
fn shipped_connector(sandbox: &Sandbox, system: &str) -> HttpConnector {
    let path = flows().join("systems").join(format!("{system}.yaml"));
    let text = std::fs::read_to_string(&path).expect("system file reads");
    let (loaded, diagnostics) = load_text::<SystemFile>(&path, text);
    let file = match loaded {
        Some(loaded) if diagnostics.is_empty() => loaded.spec,
        _ => panic!("{system}.yaml does not load: {diagnostics:?}"),
    };
    let env: std::collections::HashMap<String, String> = sandbox.env().into_iter().collect();
    HttpConnector::with_env(&file, &|name| env.get(name).cloned()).expect("connector builds")
}

async fn read_all(mut reader: Box<dyn PageReader>) -> Result<Vec<Page>, ConnectorError> {
    let mut pages = Vec::new();
    while let Some(page) = reader.next_page().await? {
        pages.push(page);
    }
    Ok(pages)
}

/// A folder removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A sandbox and a SQLite store, run through the shipped flows.
struct World {
    sandbox: Sandbox,
    state: StoreUrl,
    _dir: TempDir,
}

impl World {
    async fn new(name: &str, seed: usize) -> World {
        Self::with_options(
            name,
            SandboxOptions {
                seed,
                rate_limits: RateLimits::unlimited(),
                ..SandboxOptions::default()
            },
        )
        .await
    }

    /// A world whose sandbox starts with `options`.
    async fn with_options(name: &str, options: SandboxOptions) -> World {
        let dir = std::env::temp_dir().join(format!(
            "tether-realapi-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let state =
            StoreUrl::parse(&dir.join("state.db").display().to_string()).expect("store url");
        World {
            sandbox: Sandbox::start(options).await.expect("sandbox starts"),
            state,
            _dir: TempDir(dir),
        }
    }

    async fn run(&self, mappings: &[&str]) -> RunReport {
        self.run_with(
            mappings,
            OpenOptions {
                ignore_rate_limits: true,
            },
        )
        .await
    }

    /// A run of `mappings` with the engine opened with `open_options`.
    async fn run_with(&self, mappings: &[&str], open_options: OpenOptions) -> RunReport {
        let env: std::collections::HashMap<String, String> =
            self.sandbox.env().into_iter().collect();
        let lookup = move |name: &str| env.get(name).cloned();
        let engine = open(&flows(), &self.state, &lookup, open_options)
            .await
            .expect("engine opens");
        let options = RunOptions {
            mappings: mappings.iter().map(|m| (*m).to_owned()).collect(),
            ..RunOptions::default()
        };
        engine.run(&options).await.expect("run succeeds")
    }

    fn insert(&self, system: &str, entity: &str, body: Value) -> Value {
        self.sandbox
            .insert(system, entity, body.clone())
            .unwrap_or_else(|e| panic!("insert {system} {entity} {body}: {e}"))
    }
}

/// A request to the Salesforce simulator's REST API (`path` after `/services/data/v60.0`) as
/// the integration user, with a fresh client-credentials session.
async fn salesforce_request(
    sandbox: &Sandbox,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    let http = reqwest::Client::new();
    let login = sandbox
        .env()
        .into_iter()
        .find(|(n, _)| n == "SALESFORCE_LOGIN_URL")
        .map(|(_, v)| v)
        .expect("login URL");
    let token: Value = http
        .post(format!("{login}/services/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_id",
                tether_sandbox::credentials::SALESFORCE_CLIENT_ID,
            ),
            (
                "client_secret",
                tether_sandbox::credentials::SALESFORCE_CLIENT_SECRET,
            ),
        ])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token JSON");
    http.request(
        method,
        format!(
            "{}/services/data/v60.0{path}",
            token["instance_url"].as_str().expect("instance_url")
        ),
    )
    .bearer_auth(token["access_token"].as_str().expect("access_token"))
}

fn sf_id(record: &Value) -> String {
    record["Id"].as_str().expect("Id").to_owned()
}

// ---- Salesforce: children of a subquery come in pages of their own ------------------------

const SF_CONTACTS: &str = "salesforce-contacts-to-customerp-contacts";
const SF_PRODUCTS: &str = "salesforce-product2-to-customerp-products";
const SF_ORDERS: &str = "salesforce-orders-to-customerp-orders";

/// A Salesforce order with `lines` order products of one product that the ERP has too.
fn big_order(w: &World, lines: usize) -> String {
    let book = w
        .sandbox
        .records("salesforce", "Pricebook2")
        .expect("price books")
        .into_iter()
        .find(|b| b["IsStandard"] == json!(true))
        .map(|b| sf_id(&b))
        .expect("a standard price book");
    let account = sf_id(&w.insert("salesforce", "Account", json!({"Name": "Bulk Buyer AS"})));
    let product = sf_id(&w.insert(
        "salesforce",
        "Product2",
        json!({"Name": "Bolt M8", "ProductCode": "BOLT-M8", "Description": "Bolt", "IsActive": true}),
    ));
    let entry = sf_id(&w.insert(
        "salesforce",
        "PricebookEntry",
        json!({"Pricebook2Id": book, "Product2Id": product, "UnitPrice": 2.5, "IsActive": true}),
    ));
    w.insert(
        "customerp",
        "products",
        json!({"sku": "BOLT-M8", "name": "Bolt M8", "description": "Bolt", "unit_price": "2.50",
               "currency": "USD", "vat_rate": "25.00", "stock_quantity": 1000, "is_active": true}),
    );
    let order = sf_id(&w.insert(
        "salesforce",
        "Order",
        json!({"AccountId": account, "EffectiveDate": "2026-05-04", "Status": "Draft", "Pricebook2Id": book}),
    ));
    for n in 0..lines {
        w.insert(
            "salesforce",
            "OrderItem",
            json!({"OrderId": order, "PricebookEntryId": entry, "Quantity": 1 + n % 3, "UnitPrice": 2.5, "Description": format!("line {n}")}),
        );
    }
    order
}

fn order_lines(record: &Value) -> usize {
    record["OrderItems"]["records"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_reads_every_child_page_of_a_salesforce_order() {
    let w = World::new("children-connector", 0).await;
    let order = big_order(&w, 450);
    let connector = shipped_connector(&w.sandbox, "salesforce");
    let pages = read_all(connector.changes("Order", None).expect("reader"))
        .await
        .expect("orders read");
    let read = pages
        .iter()
        .flat_map(|page| &page.records)
        .find(|record| record.id == order)
        .expect("the order is read");
    assert_eq!(order_lines(&read.data), 450, "every line of the listing");
    assert_eq!(read.data["OrderItems"]["done"], true);
    let got = connector
        .get("Order", &order)
        .await
        .expect("get")
        .expect("the order exists");
    assert_eq!(order_lines(&got.data), 450, "every line of a single read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salesforce_order_with_450_lines_reaches_the_erp_with_450_lines() {
    let w = World::new("children-e2e", 0).await;
    let order = big_order(&w, 450);
    let report = w.run(&[SF_CONTACTS, SF_PRODUCTS, SF_ORDERS]).await;
    assert_eq!(report.parked(), 0, "{report:#?}");
    let reference = w
        .sandbox
        .record("salesforce", "Order", &order)
        .expect("lookup")
        .expect("order")["OrderReferenceNumber"]
        .as_str()
        .expect("the ERP's number came back")
        .to_owned();
    let erp: Vec<Value> = w
        .sandbox
        .records("customerp", "orders")
        .expect("orders")
        .into_iter()
        .filter(|o| o["order_number"] == json!(reference))
        .collect();
    assert_eq!(erp.len(), 1, "one ERP order");
    assert_eq!(
        erp[0]["lines"].as_array().map_or(0, Vec::len),
        450,
        "every line reaches the ERP"
    );
}

// ---- Keap: `next` links drop the request's other parameters --------------------------------

const KEAP_CONTACTS: &str = "keap-contacts-to-customerp-contacts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keap_contacts_past_the_first_page_keep_their_job_titles() {
    let w = World::new("keap-links", 0).await;
    for n in 0..1050 {
        w.insert(
            "keap",
            "contacts",
            json!({"given_name": "Kari", "family_name": format!("Keap{n:04}"), "job_title": format!("Buyer {n}"),
                   "email_addresses": [{"email": format!("kari{n}@links.example"), "field": "EMAIL1"}]}),
        );
    }
    let report = w.run(&[KEAP_CONTACTS]).await;
    assert_eq!(report.parked(), 0, "{report:#?}");
    let contacts = w
        .sandbox
        .records("customerp", "contacts")
        .expect("contacts");
    let synced: Vec<&Value> = contacts
        .iter()
        .filter(|c| {
            c["email"]
                .as_str()
                .is_some_and(|e| e.ends_with("@links.example"))
        })
        .collect();
    assert_eq!(synced.len(), 1050, "every contact reaches the ERP");
    let without: Vec<&&Value> = synced
        .iter()
        .filter(|c| {
            !c["job_title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Buyer "))
        })
        .collect();
    assert!(
        without.is_empty(),
        "{} contacts reached the ERP without their job title, e.g. {:?}",
        without.len(),
        without.first()
    );
}

// ---- Salesforce: getDeleted keeps 15 days, and nothing before a purge -----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_recycle_bin_neither_stops_the_mapping_nor_hides_deletions() {
    let w = World::new("purge", 0).await;
    let contact = |n: usize| {
        json!({"FirstName": "Sol", "LastName": format!("Purge{n}"), "Email": format!("sol{n}@purge.example"),
               "MailingCountry": "NO"})
    };
    let gone = sf_id(&w.insert("salesforce", "Contact", contact(1)));
    let kept = sf_id(&w.insert("salesforce", "Contact", contact(2)));
    let first = w.run(&[SF_CONTACTS]).await;
    assert_eq!(first.parked(), 0, "{first:#?}");

    w.sandbox
        .delete("salesforce", "Contact", &gone)
        .expect("deleted");
    w.sandbox
        .update(
            "salesforce",
            "Contact",
            &kept,
            json!({"Title": "Chief Buyer"}),
        )
        .expect("edited");
    w.sandbox
        .empty_recycle_bin("salesforce")
        .expect("the recycle bin is emptied");
    let report = w.run(&[SF_CONTACTS]).await;
    let contacts = report
        .mappings
        .iter()
        .find(|m| m.mapping == SF_CONTACTS)
        .expect("the mapping's report");
    assert_eq!(contacts.stopped, None, "{contacts:#?}");
    assert_eq!(
        contacts.updated_target, 1,
        "the edit is synced: {contacts:#?}"
    );
    assert_eq!(
        contacts.unlinked, 1,
        "the deletion is found by a full listing: {contacts:#?}"
    );
    let erp = w
        .sandbox
        .records("customerp", "contacts")
        .expect("contacts");
    assert!(
        erp.iter()
            .any(|c| c["email"] == "sol2@purge.example" && c["job_title"] == "Chief Buyer")
    );

    // The next run reads getDeleted again from where the listing left it.
    let again = w.run(&[SF_CONTACTS]).await;
    assert_eq!(again.writes(), 0, "{again:#?}");
}

// ---- Salesforce: the client-credentials flow needs the My Domain host ----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_login_host_fails_with_a_hint_to_set_the_my_domain_url() {
    let sandbox = Sandbox::start(SandboxOptions {
        rate_limits: RateLimits::unlimited(),
        salesforce_generic_login: true,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts");
    let connector = shipped_connector(&sandbox, "salesforce");
    let error = read_all(connector.changes("Contact", None).expect("reader"))
        .await
        .expect_err("the token is refused");
    let text = error.to_string();
    assert!(text.contains("My Domain"), "{text}");
    assert!(text.contains("SALESFORCE_LOGIN_URL"), "{text}");
    assert!(
        !text.contains(tether_sandbox::credentials::SALESFORCE_CLIENT_SECRET),
        "{text}"
    );

    // The shipped file names no generic host: without the variable the connector says
    // which one to set instead of asking login.salesforce.com.
    let path = flows().join("systems").join("salesforce.yaml");
    let text = std::fs::read_to_string(&path).expect("reads");
    let (loaded, _) = load_text::<SystemFile>(&path, text);
    let file = loaded.expect("loads").spec;
    let error = HttpConnector::with_env(&file, &|name| match name {
        "SALESFORCE_CLIENT_ID" | "SALESFORCE_CLIENT_SECRET" => Some("x".to_owned()),
        _ => None,
    })
    .expect_err("no base URL");
    assert!(
        error.to_string().contains("SALESFORCE_LOGIN_URL"),
        "{error}"
    );
}
