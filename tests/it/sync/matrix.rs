//! The behaviour matrix: every mapping of the shipped flows, driven end to end over HTTP
//! against the simulators by one generic driver and a small fixture per mapping.
//!
//! For each mapping the driver checks, as far as the mapping's directions allow:
//! - **create**: a record created on each side that may create (the mapping's `direction`)
//!   appears on the other side with every mapped field right. "Right" is decided by the
//!   mapping interpreter, not by expected values written here: the compiled plan is applied
//!   to the records read back and the canonical forms are compared rule by rule. The fixture
//!   must give every rule of the direction a value, so a field the engine leaves out fails.
//! - **edit source / edit target**: an edit on a side flows across through the rules whose
//!   direction carries it; the other mapped fields of the counterpart stay as they were.
//! - **both kept**: different fields edited on both sides before a run are both kept.
//! - **conflict**: the same field edited on both sides is resolved by the mapping's
//!   `conflict` policy, both sides end with the winner's value, and the conflict is recorded.
//! - **delete**: a deleted record's counterpart follows the mapping's `deletes` policy
//!   (on each side whose system can delete), and is not created again on later runs.
//! - after every step, a run straight after writes nothing.
//!
//! Each mapping gets its own sandbox world and store (the fixture's referenced mappings run
//! with it), so the mappings run in parallel and do not see each other's records.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value, json};
use tether_engine::mapping::{
    self, Canonical, CompiledMapping, ReferenceRequest, ResolveReference,
};
use tether_engine::spec::flow::{ConflictPolicy, DeletePolicy, Direction, MappingSpec, Side};
use tether_engine::store::PairState;
use tether_engine::sync::report::MappingReport;

use super::{World, flows, id_of, world};

/// Values the fixture's setup made (ids of referenced records), by name.
type Ctx = Map<String, Value>;
/// Canonical mapped fields: target path -> normal value.
type Fields = BTreeMap<String, Value>;

/// Creates a new record on one side (`n` tells records of one test apart); returns its id.
type Maker = fn(&World, &Ctx, u32) -> String;
/// A person's edit of a record: the patch, from the fixture context, the current record
/// (as the sandbox renders it) and the round (1 or 2: the second edit differs).
type Patch = fn(&Ctx, &Value, u32) -> Value;

struct Fixture {
    mapping: &'static str,
    /// Mappings that run with it: the ones its reference rules name.
    with: &'static [&'static str],
    /// Inserts the referenced records on both sides (linked by match keys when `with` runs).
    setup: fn(&World) -> Ctx,
    /// A new source record; used when the mapping lets the source create.
    source: Option<Maker>,
    /// A new target record; used when the mapping lets the target create.
    target: Option<Maker>,
    /// An edit of the source record that a forward rule carries.
    source_edit: Option<Patch>,
    /// An edit of the target record that a backward rule carries.
    target_edit: Option<Patch>,
    /// The same field edited on both sides: (target path, source patch, target patch).
    conflict: Option<(&'static str, Patch, Patch)>,
}

fn no_setup(_: &World) -> Ctx {
    Ctx::new()
}

fn ctx(pairs: &[(&str, Value)]) -> Ctx {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn insert(w: &World, system: &str, entity: &str, body: Value) -> String {
    let record = w
        .sandbox
        .insert(system, entity, body.clone())
        .unwrap_or_else(|e| panic!("insert {system} {entity} {body}: {e}"));
    record_id(&record)
}

/// A record's id: `id`, or Salesforce's `Id`.
fn record_id(record: &Value) -> String {
    match record.get("Id") {
        Some(Value::String(id)) => id.clone(),
        _ => id_of(record),
    }
}

/// An id as the systems take it in a reference (a number where the id is one).
fn num(c: &Ctx, name: &str) -> Value {
    match &c[name] {
        Value::String(s) => s.parse::<i64>().map(Value::from).unwrap_or(json!(s)),
        other => other.clone(),
    }
}

// ---- records of the five systems ----------------------------------------------------------

fn crm_customer(email: &str, name: &str) -> Value {
    json!({ "companyName": name, "contactEmail": email, "phoneNumber": "+4722000001",
            "address": { "street": "Kirkegata 1", "city": "Oslo", "zip": "0153", "countryCode": "NO" } })
}

fn shop_customer(email: &str, company: &str) -> Value {
    json!({ "email": email, "first_name": "Siri", "last_name": "Shop", "company": company,
            "phone": "+46701234567",
            "addresses": [{ "type": "billing", "line1": "Drottninggatan 2", "line2": "2 tr",
                            "city": "Stockholm", "zip": "11151", "country": "SE" }],
            "marketing_opt_in": true })
}

fn erp_customer(email: &str, name: &str) -> Value {
    json!({ "name": name, "email": email, "phone": "+4755000001", "website": "https://erp.example",
            "billing_address": { "street": "Bryggen 3", "city": "Bergen", "postal_code": "5003", "country": "NO" },
            "currency": "USD", "is_active": true })
}

fn keap_company(email: &str, name: &str) -> Value {
    json!({ "company_name": name, "email_address": email,
            "phone_number": { "number": "+4773000001", "type": "Work" },
            "address": { "line1": "Munkegata 4", "line2": "Inngang B", "locality": "Trondheim",
                         "zip_code": "7011", "country_code": "NOR" },
            "website": "https://keap.example" })
}

fn crm_product(sku: &str) -> Value {
    json!({ "name": format!("Product {sku}"), "sku": sku, "listPrice": "50.00", "currencyCode": "USD", "isActive": true })
}

fn shop_product(sku: &str) -> Value {
    json!({ "sku": sku, "title": format!("Product {sku}"), "description_html": format!("<p>About {sku}</p>"),
            "price_cents": 5000, "currency": "USD", "active": true, "inventory": 7 })
}

fn erp_product(sku: &str) -> Value {
    json!({ "sku": sku, "name": format!("Product {sku}"), "description": format!("About {sku}"),
            "unit_price": "50.00", "currency": "USD", "vat_rate": "25.00", "is_active": true, "stock_quantity": 7 })
}

fn keap_contact(email: &str, company: Option<Value>) -> Value {
    let mut body = json!({
        "given_name": "Kari", "family_name": "Keap", "job_title": "Buyer",
        "email_addresses": [{ "email": email, "field": "EMAIL1" }],
        "phone_numbers": [{ "number": "+4791000001", "field": "PHONE1", "type": "Work" },
                          { "number": "+4792000002", "field": "PHONE2", "type": "Mobile" }],
        "addresses": [{ "field": "BILLING", "line1": "Storgata 5", "locality": "Tromso",
                        "postal_code": "9008", "country_code": "NOR" }],
    });
    if let Some(company) = company {
        body["company"] = json!({ "id": company });
    }
    body
}

fn erp_contact(email: &str, customer: Option<Value>) -> Value {
    json!({ "customer_id": customer, "first_name": "Eva", "last_name": "Erp", "email": email,
            "phone": "+4755100001", "mobile": "+4795100001", "job_title": "Controller",
            "address": { "street": "Torget 6", "city": "Bergen", "postal_code": "5014", "country": "NO" } })
}

fn sf_contact(email: &str) -> Value {
    json!({ "FirstName": "Sol", "LastName": "Force", "Email": email, "Phone": "+4722200001",
            "MobilePhone": "+4790200001", "Title": "Head of Purchasing", "MailingStreet": "Karl Johans gate 7",
            "MailingCity": "Oslo", "MailingPostalCode": "0154", "MailingCountry": "NO" })
}

fn standard_pricebook(w: &World) -> String {
    let books = w
        .sandbox
        .records("salesforce", "Pricebook2")
        .expect("price books");
    books
        .iter()
        .find(|b| b["IsStandard"] == json!(true))
        .map(record_id)
        .expect("a standard price book")
}

/// A Salesforce product with a standard price, and the ERP product with the same SKU.
fn sf_and_erp_product(w: &World, sku: &str) -> (String, String, String) {
    let book = standard_pricebook(w);
    let product = insert(
        w,
        "salesforce",
        "Product2",
        json!({ "Name": format!("Product {sku}"), "ProductCode": sku, "Description": format!("About {sku}"), "IsActive": true }),
    );
    let entry = insert(
        w,
        "salesforce",
        "PricebookEntry",
        json!({ "Pricebook2Id": book, "Product2Id": product, "UnitPrice": 30.0, "IsActive": true }),
    );
    insert(w, "customerp", "products", erp_product(sku));
    (book, product, entry)
}

// ---- the fixtures -------------------------------------------------------------------------

const CRM_CUSTOMERS: &str = "customcrm-customers-to-customwebshop-customers";
const CRM_PRODUCTS: &str = "customcrm-products-to-customwebshop-products";
const ERP_SHOP_CUSTOMERS: &str = "customerp-customers-to-customwebshop-customers";
const ERP_SHOP_PRODUCTS: &str = "customerp-products-to-customwebshop-products";
const KEAP_COMPANIES: &str = "keap-companies-to-customerp-customers";
const KEAP_CONTACTS: &str = "keap-contacts-to-customerp-contacts";
const SF_CONTACTS: &str = "salesforce-contacts-to-customerp-contacts";
const SF_PRODUCTS: &str = "salesforce-product2-to-customerp-products";

/// A CRM customer and a CRM product, each with its shop counterpart (same email, same SKU).
fn crm_shop_references(w: &World) -> Ctx {
    let customer = insert(
        w,
        "customcrm",
        "customers",
        crm_customer("buyer@deal.example", "Deal Buyer AS"),
    );
    let shop_customer_id = insert(
        w,
        "customwebshop",
        "customers",
        shop_customer("buyer@deal.example", "Deal Buyer AS"),
    );
    let product = insert(w, "customcrm", "products", crm_product("MX-TENT"));
    insert(w, "customwebshop", "products", shop_product("MX-TENT"));
    ctx(&[
        ("customer", json!(customer)),
        ("shop_customer", json!(shop_customer_id)),
        ("product", json!(product)),
    ])
}

/// An ERP customer and product, each with its shop counterpart.
fn erp_shop_references(w: &World) -> Ctx {
    let customer = insert(
        w,
        "customerp",
        "customers",
        erp_customer("buyer@sale.example", "Sale Buyer AS"),
    );
    let shop_customer_id = insert(
        w,
        "customwebshop",
        "customers",
        shop_customer("buyer@sale.example", "Sale Buyer AS"),
    );
    let product = insert(w, "customerp", "products", erp_product("MX-STOVE"));
    insert(w, "customwebshop", "products", shop_product("MX-STOVE"));
    ctx(&[
        ("customer", json!(customer)),
        ("shop_customer", json!(shop_customer_id)),
        ("product", json!(product)),
    ])
}

/// A Keap contact with its ERP counterpart (same email).
fn keap_erp_contact(w: &World) -> Ctx {
    let contact = insert(
        w,
        "keap",
        "contacts",
        keap_contact("deal@keap.example", None),
    );
    let erp = insert(
        w,
        "customerp",
        "contacts",
        erp_contact("deal@keap.example", None),
    );
    ctx(&[("contact", json!(contact)), ("erp_contact", json!(erp))])
}

/// A Salesforce account and contact, and a product with its price, each contact and product
/// with its ERP counterpart.
fn sf_erp_references(w: &World) -> Ctx {
    let account = insert(
        w,
        "salesforce",
        "Account",
        json!({ "Name": "Force Buyer AS" }),
    );
    let contact = insert(
        w,
        "salesforce",
        "Contact",
        sf_contact("buyer@force.example"),
    );
    insert(
        w,
        "customerp",
        "contacts",
        erp_contact("buyer@force.example", None),
    );
    let (book, product, entry) = sf_and_erp_product(w, "MX-FORCE");
    let opportunity = insert(
        w,
        "salesforce",
        "Opportunity",
        json!({ "Name": "Force deal", "AccountId": account, "StageName": "Prospecting", "CloseDate": "2026-09-30", "Pricebook2Id": book }),
    );
    ctx(&[
        ("account", json!(account)),
        ("contact", json!(contact)),
        ("book", json!(book)),
        ("product", json!(product)),
        ("entry", json!(entry)),
        ("opportunity", json!(opportunity)),
    ])
}

fn shop_order(c: &Ctx, n: u32, sku: &str) -> Value {
    json!({ "customer_id": c["shop_customer"], "email": "buyer@example.com", "status": "pending", "currency": "USD",
            "total_cents": 10000 + n as i64, "placed_at": format!("2026-03-{:02}T10:30:00Z", n),
            "items": [{ "sku": sku, "title": "Line", "quantity": 2, "price_cents": 5000 }] })
}

fn fixtures() -> Vec<Fixture> {
    vec![
        Fixture {
            mapping: "customcrm-quotes-to-customwebshop-orders",
            with: &[CRM_CUSTOMERS, CRM_PRODUCTS],
            setup: crm_shop_references,
            source: Some(|w, c, n| {
                insert(
                    w,
                    "customcrm",
                    "quotes",
                    json!({
                    "customerId": num(c, "customer"), "status": "Presented", "expiresOn": "2026-12-31",
                    "totalAmount": format!("{}.50", 100 + n), "currencyCode": "USD",
                    "lines": [{ "productId": num(c, "product"), "qty": 2, "unitPrice": "50.25" }] }),
                )
            }),
            target: None,
            source_edit: Some(|_, _, r| json!({ "totalAmount": format!("{}.75", 300 + r) })),
            target_edit: Some(
                |_, _, r| json!({ "status": if r == 1 { "paid" } else { "cancelled" } }),
            ),
            conflict: Some((
                "status",
                |_, _, _| json!({ "status": "Presented" }),
                |_, _, _| json!({ "status": "fulfilled" }),
            )),
        },
        Fixture {
            mapping: "customcrm-users-to-customwebshop-orders",
            with: &[],
            setup: no_setup,
            source: Some(|w, _, n| {
                insert(
                    w,
                    "customcrm",
                    "users",
                    json!({ "fullName": format!("Sam Seller {n}"),
                    "email": format!("sam{n}@crm-staff.example"), "phone": "+4799000001", "role": "sales", "active": true }),
                )
            }),
            target: None,
            source_edit: Some(|_, _, r| {
                if r == 1 {
                    json!({ "active": false })
                } else {
                    json!({ "email": "sam.renamed@crm-staff.example" })
                }
            }),
            target_edit: None,
            conflict: None,
        },
        Fixture {
            mapping: CRM_CUSTOMERS,
            with: &[],
            setup: no_setup,
            source: Some(|w, _, n| {
                insert(
                    w,
                    "customcrm",
                    "customers",
                    crm_customer(
                        &format!("crm{n}@customers.example"),
                        &format!("Crm Customer {n} AS"),
                    ),
                )
            }),
            target: Some(|w, _, n| {
                insert(
                    w,
                    "customwebshop",
                    "customers",
                    shop_customer(
                        &format!("shop{n}@customers.example"),
                        &format!("Shop Customer {n} AB"),
                    ),
                )
            }),
            source_edit: Some(|_, _, r| json!({ "companyName": format!("Renamed {r} AS") })),
            target_edit: Some(|_, _, r| json!({ "phone": format!("+4670123450{r}") })),
            conflict: Some((
                "phone",
                |_, _, _| json!({ "phoneNumber": "+4722333333" }),
                |_, _, _| json!({ "phone": "+4722444444" }),
            )),
        },
        Fixture {
            mapping: "customcrm-orders-to-customwebshop-orders",
            with: &[CRM_CUSTOMERS, CRM_PRODUCTS],
            setup: crm_shop_references,
            source: Some(|w, c, n| {
                insert(
                    w,
                    "customcrm",
                    "orders",
                    json!({
                    "customerId": num(c, "customer"), "status": "Open", "orderedAt": format!("2026-02-{:02}T09:15:00Z", n),
                    "totalAmount": format!("{}.50", 100 + n), "currencyCode": "USD",
                    "lines": [{ "productId": num(c, "product"), "qty": 2, "unitPrice": "50.25" }] }),
                )
            }),
            target: Some(|w, c, n| {
                insert(w, "customwebshop", "orders", shop_order(c, n, "MX-TENT"))
            }),
            source_edit: Some(|_, _, r| json!({ "totalAmount": format!("{}.75", 300 + r) })),
            target_edit: Some(
                |_, _, r| json!({ "status": if r == 1 { "paid" } else { "fulfilled" } }),
            ),
            conflict: Some((
                "status",
                |_, _, _| json!({ "status": "Won" }),
                |_, _, _| json!({ "status": "cancelled" }),
            )),
        },
        Fixture {
            mapping: CRM_PRODUCTS,
            with: &[],
            setup: no_setup,
            source: None,
            target: Some(|w, _, n| {
                insert(
                    w,
                    "customwebshop",
                    "products",
                    shop_product(&format!("MX-CRM-{n}")),
                )
            }),
            source_edit: Some(|_, _, r| json!({ "listPrice": format!("{}.90", 20 + r) })),
            target_edit: Some(
                |_, current, r| json!({ "title": format!("{} mk{r}", current["title"].as_str().unwrap_or_default()) }),
            ),
            conflict: Some((
                "title",
                |_, _, _| json!({ "name": "Named in the CRM" }),
                |_, _, _| json!({ "title": "Named in the shop" }),
            )),
        },
        Fixture {
            mapping: ERP_SHOP_CUSTOMERS,
            with: &[],
            setup: no_setup,
            source: Some(|w, _, n| {
                insert(
                    w,
                    "customerp",
                    "customers",
                    erp_customer(
                        &format!("erp{n}@customers.example"),
                        &format!("Erp Customer {n} AS"),
                    ),
                )
            }),
            target: Some(|w, _, n| {
                insert(
                    w,
                    "customwebshop",
                    "customers",
                    shop_customer(
                        &format!("shop{n}@customers.example"),
                        &format!("Shop Customer {n} AB"),
                    ),
                )
            }),
            source_edit: Some(|_, _, r| json!({ "name": format!("Renamed {r} AS") })),
            target_edit: Some(|_, _, r| json!({ "phone": format!("+4670123450{r}") })),
            conflict: Some((
                "phone",
                |_, _, _| json!({ "phone": "+4755333333" }),
                |_, _, _| json!({ "phone": "+4755444444" }),
            )),
        },
        Fixture {
            mapping: "customerp-orders-to-customwebshop-orders",
            with: &[ERP_SHOP_CUSTOMERS, ERP_SHOP_PRODUCTS],
            setup: erp_shop_references,
            source: Some(|w, c, n| {
                insert(
                    w,
                    "customerp",
                    "orders",
                    json!({
                    "customer_id": num(c, "customer"), "status": "confirmed", "order_date": format!("2026-04-{:02}", n),
                    "currency": "USD", "total_amount": format!("{}.50", 100 + n),
                    "lines": [{ "product_id": num(c, "product"), "description": "Stove", "quantity": 2, "unit_price": "50.25" }] }),
                )
            }),
            target: Some(|w, c, n| {
                insert(w, "customwebshop", "orders", shop_order(c, n, "MX-STOVE"))
            }),
            source_edit: Some(|_, _, r| json!({ "total_amount": format!("{}.75", 300 + r) })),
            target_edit: Some(
                |_, _, r| json!({ "status": if r == 1 { "paid" } else { "cancelled" } }),
            ),
            conflict: Some((
                "status",
                |_, _, _| json!({ "status": "shipped" }),
                |_, _, _| json!({ "status": "refunded" }),
            )),
        },
        Fixture {
            mapping: ERP_SHOP_PRODUCTS,
            with: &[],
            setup: no_setup,
            source: Some(|w, _, n| {
                insert(
                    w,
                    "customerp",
                    "products",
                    erp_product(&format!("MX-ERP-{n}")),
                )
            }),
            target: None,
            source_edit: Some(|_, _, r| json!({ "unit_price": format!("{}.90", 20 + r) })),
            target_edit: Some(
                |_, current, r| json!({ "title": format!("{} mk{r}", current["title"].as_str().unwrap_or_default()) }),
            ),
            conflict: Some((
                "title",
                |_, _, _| json!({ "name": "Named in the ERP" }),
                |_, _, _| json!({ "title": "Named in the shop" }),
            )),
        },
        Fixture {
            mapping: KEAP_COMPANIES,
            with: &[],
            setup: no_setup,
            source: Some(|w, _, n| {
                insert(
                    w,
                    "keap",
                    "companies",
                    keap_company(
                        &format!("keap{n}@companies.example"),
                        &format!("Keap Company {n} AS"),
                    ),
                )
            }),
            target: Some(|w, _, n| {
                insert(
                    w,
                    "customerp",
                    "customers",
                    erp_customer(
                        &format!("erp{n}@companies.example"),
                        &format!("Erp Company {n} AS"),
                    ),
                )
            }),
            source_edit: Some(
                |_, current, r| json!({ "company_name": current["company_name"], "website": format!("https://edit{r}.keap.example") }),
            ),
            target_edit: Some(|_, _, r| json!({ "phone": format!("+475500000{r}") })),
            conflict: Some((
                "email",
                |_, current, _| json!({ "company_name": current["company_name"], "email_address": "keap@conflict.example" }),
                |_, _, _| json!({ "email": "erp@conflict.example" }),
            )),
        },
        Fixture {
            mapping: KEAP_CONTACTS,
            with: &[KEAP_COMPANIES],
            setup: |w| {
                let company = insert(
                    w,
                    "keap",
                    "companies",
                    keap_company("people@contacts.example", "People AS"),
                );
                let customer = insert(
                    w,
                    "customerp",
                    "customers",
                    erp_customer("people@contacts.example", "People AS"),
                );
                ctx(&[("company", json!(company)), ("customer", json!(customer))])
            },
            source: Some(|w, c, n| {
                insert(
                    w,
                    "keap",
                    "contacts",
                    keap_contact(
                        &format!("keap{n}@contacts.example"),
                        Some(num(c, "company")),
                    ),
                )
            }),
            target: Some(|w, c, n| {
                insert(
                    w,
                    "customerp",
                    "contacts",
                    erp_contact(
                        &format!("erp{n}@contacts.example"),
                        Some(num(c, "customer")),
                    ),
                )
            }),
            source_edit: Some(|_, _, r| json!({ "job_title": format!("Chief Buyer {r}") })),
            target_edit: Some(|_, _, r| json!({ "mobile": format!("+479510000{r}") })),
            conflict: Some((
                "first_name",
                |_, _, _| json!({ "given_name": "Kaja" }),
                |_, _, _| json!({ "first_name": "Kristin" }),
            )),
        },
        Fixture {
            mapping: "keap-opportunities-to-customerp-orders",
            with: &[KEAP_CONTACTS],
            setup: keap_erp_contact,
            source: Some(|w, c, n| {
                insert(
                    w,
                    "keap",
                    "opportunities",
                    json!({
                    "opportunity_title": format!("Keap deal {n}"), "contact": { "id": num(c, "contact") },
                    "stage": { "id": 30 }, "user": { "id": 1 }, "projected_revenue_low": 1000.0,
                    "projected_revenue_high": 1500.0 + f64::from(n), "estimated_close_date": format!("2026-05-{:02}T00:00:00.000+0000", n) }),
                )
            }),
            target: None,
            source_edit: Some(|_, _, r| json!({ "projected_revenue_high": 2000.0 + f64::from(r) })),
            target_edit: Some(
                |_, _, r| json!({ "status": if r == 1 { "confirmed" } else { "cancelled" } }),
            ),
            conflict: Some((
                "total_amount",
                |_, _, _| json!({ "projected_revenue_high": 2500.0 }),
                |_, _, _| json!({ "total_amount": "2600.00" }),
            )),
        },
        Fixture {
            mapping: "keap-products-to-customerp-products",
            with: &[],
            setup: no_setup,
            source: None,
            target: Some(|w, _, n| {
                insert(
                    w,
                    "customerp",
                    "products",
                    erp_product(&format!("MX-KEAP-{n}")),
                )
            }),
            source_edit: Some(
                |_, current, r| json!({ "product_name": current["product_name"], "product_desc": format!("Edited in Keap {r}") }),
            ),
            target_edit: Some(|_, _, r| json!({ "unit_price": format!("{}.10", 60 + r) })),
            conflict: Some((
                "name",
                |_, _, _| json!({ "product_name": "Named in Keap" }),
                |_, _, _| json!({ "name": "Named in the ERP" }),
            )),
        },
        Fixture {
            mapping: "keap-companies-to-customwebshop-customers",
            with: &[],
            setup: no_setup,
            source: Some(|w, _, n| {
                insert(
                    w,
                    "keap",
                    "companies",
                    keap_company(
                        &format!("keap{n}@shop.example"),
                        &format!("Keap Company {n} AS"),
                    ),
                )
            }),
            target: Some(|w, _, n| {
                insert(
                    w,
                    "customwebshop",
                    "customers",
                    shop_customer(
                        &format!("shop{n}@shop.example"),
                        &format!("Shop Customer {n} AB"),
                    ),
                )
            }),
            source_edit: Some(
                |_, current, r| json!({ "company_name": current["company_name"], "address": { "line1": format!("Nyveien {r}"), "line2": "Inngang B", "locality": "Trondheim", "zip_code": "7011", "country_code": "NOR" } }),
            ),
            target_edit: Some(|_, _, r| json!({ "phone": format!("+4670123450{r}") })),
            conflict: Some((
                "phone",
                |_, current, _| json!({ "company_name": current["company_name"], "phone_number": { "number": "+4773333333", "type": "Work" } }),
                |_, _, _| json!({ "phone": "+4773444444" }),
            )),
        },
        Fixture {
            mapping: "keap-opportunities-to-customwebshop-orders",
            with: &[],
            setup: |w| {
                let contact = insert(
                    w,
                    "keap",
                    "contacts",
                    keap_contact("deal@keapshop.example", None),
                );
                ctx(&[("contact", json!(contact))])
            },
            source: Some(|w, c, n| {
                insert(
                    w,
                    "keap",
                    "opportunities",
                    json!({
                    "opportunity_title": format!("Keap shop deal {n}"), "contact": { "id": num(c, "contact") },
                    "stage": { "id": 20 }, "user": { "id": 1 }, "projected_revenue_high": 990.5 + f64::from(n) }),
                )
            }),
            target: None,
            source_edit: Some(|_, _, r| json!({ "projected_revenue_high": 1990.0 + f64::from(r) })),
            target_edit: Some(
                |_, _, r| json!({ "status": if r == 1 { "paid" } else { "cancelled" } }),
            ),
            conflict: Some((
                "total_cents",
                |_, _, _| json!({ "projected_revenue_high": 2500.0 }),
                |_, _, _| json!({ "total_cents": 260000 }),
            )),
        },
        Fixture {
            mapping: "keap-products-to-customwebshop-products",
            with: &[],
            setup: no_setup,
            source: None,
            target: Some(|w, _, n| {
                insert(
                    w,
                    "customwebshop",
                    "products",
                    shop_product(&format!("MX-KSHOP-{n}")),
                )
            }),
            source_edit: Some(
                |_, current, r| json!({ "product_name": current["product_name"], "product_desc": format!("<p>Edited in Keap {r}</p>") }),
            ),
            target_edit: Some(|_, _, r| json!({ "price_cents": 6000 + r })),
            conflict: Some((
                "title",
                |_, _, _| json!({ "product_name": "Named in Keap" }),
                |_, _, _| json!({ "title": "Named in the shop" }),
            )),
        },
        Fixture {
            mapping: SF_CONTACTS,
            with: &[],
            setup: no_setup,
            source: Some(|w, _, n| {
                insert(
                    w,
                    "salesforce",
                    "Contact",
                    sf_contact(&format!("sf{n}@contacts.example")),
                )
            }),
            target: Some(|w, _, n| {
                insert(
                    w,
                    "customerp",
                    "contacts",
                    erp_contact(&format!("erp{n}@contacts.example"), None),
                )
            }),
            source_edit: Some(|_, _, r| json!({ "Title": format!("Purchasing lead {r}") })),
            target_edit: Some(|_, _, r| json!({ "mobile": format!("+479510000{r}") })),
            conflict: Some((
                "phone",
                |_, _, _| json!({ "Phone": "+4722333333" }),
                |_, _, _| json!({ "phone": "+4722444444" }),
            )),
        },
        Fixture {
            mapping: "salesforce-orders-to-customerp-orders",
            with: &[SF_CONTACTS, SF_PRODUCTS],
            setup: sf_erp_references,
            source: Some(|w, c, n| {
                let order = insert(
                    w,
                    "salesforce",
                    "Order",
                    json!({
                    "AccountId": c["account"], "EffectiveDate": format!("2026-06-{:02}", n), "Status": "Draft",
                    "Pricebook2Id": c["book"], "BillToContactId": c["contact"] }),
                );
                insert(
                    w,
                    "salesforce",
                    "OrderItem",
                    json!({
                    "OrderId": order, "PricebookEntryId": c["entry"], "Quantity": 2.0, "UnitPrice": 30.0, "Description": "Force line" }),
                );
                order
            }),
            target: None,
            source_edit: Some(|_, _, r| json!({ "EffectiveDate": format!("2026-06-2{r}") })),
            target_edit: Some(
                |_, _, r| json!({ "status": if r == 1 { "confirmed" } else { "draft" } }),
            ),
            conflict: Some((
                "order_date",
                |_, _, _| json!({ "EffectiveDate": "2026-07-01" }),
                |_, _, _| json!({ "order_date": "2026-07-02" }),
            )),
        },
        Fixture {
            mapping: SF_PRODUCTS,
            with: &[],
            setup: no_setup,
            source: None,
            target: Some(|w, _, n| {
                insert(
                    w,
                    "customerp",
                    "products",
                    erp_product(&format!("MX-SF-{n}")),
                )
            }),
            source_edit: Some(
                |_, _, r| json!({ "Description": format!("Edited in Salesforce {r}") }),
            ),
            target_edit: Some(
                |_, current, r| json!({ "name": format!("{} mk{r}", current["name"].as_str().unwrap_or_default()) }),
            ),
            conflict: Some((
                "name",
                |_, _, _| json!({ "Name": "Named in Salesforce" }),
                |_, _, _| json!({ "name": "Named in the ERP" }),
            )),
        },
        Fixture {
            mapping: "salesforce-quotes-to-customerp-quotes",
            with: &[SF_CONTACTS, SF_PRODUCTS],
            setup: sf_erp_references,
            source: Some(|w, c, n| {
                let quote = insert(
                    w,
                    "salesforce",
                    "Quote",
                    json!({
                    "Name": format!("Force quote {n}"), "OpportunityId": c["opportunity"], "Status": "Presented",
                    "ExpirationDate": format!("2026-08-{:02}", n), "ContactId": c["contact"] }),
                );
                insert(
                    w,
                    "salesforce",
                    "QuoteLineItem",
                    json!({
                    "QuoteId": quote, "PricebookEntryId": c["entry"], "Quantity": 3.0, "UnitPrice": 30.0, "Description": "Force quote line" }),
                );
                quote
            }),
            target: None,
            source_edit: Some(|_, _, r| json!({ "ExpirationDate": format!("2026-08-2{r}") })),
            target_edit: Some(|_, _, r| json!({ "title": format!("Retitled in the ERP {r}") })),
            conflict: Some((
                "status",
                |_, _, _| json!({ "Status": "Accepted" }),
                |_, _, _| json!({ "status": "rejected" }),
            )),
        },
    ]
}

// ---- what the driver knows of a mapping -----------------------------------------------------

struct Project {
    plans: indexmap::IndexMap<String, Arc<CompiledMapping>>,
    specs: HashMap<String, MappingSpec>,
}

fn project() -> &'static Project {
    static PROJECT: OnceLock<Project> = OnceLock::new();
    PROJECT.get_or_init(|| {
        let loaded = tether_engine::spec::load::Project::load_dir(&flows());
        let (plans, diagnostics) = tether_engine::mapping::compile_project(&loaded);
        assert!(
            diagnostics
                .iter()
                .all(|d| d.severity != tether_engine::spec::diagnostic::Severity::Error),
            "the shipped flows compile: {diagnostics:#?}"
        );
        let specs = loaded
            .mappings()
            .map(|(_, spec)| (spec.name.value.clone(), spec.clone()))
            .collect();
        Project { plans, specs }
    })
}

/// Translates referenced ids the way the engine does, from the pair states of the
/// referenced mappings.
struct Links(HashMap<(String, String, Option<String>, String), Value>);

impl ResolveReference for Links {
    fn resolve(&self, request: &ReferenceRequest<'_>) -> Option<Value> {
        let id = match request.id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.0
            .get(&(
                request.mapping.to_owned(),
                request.from_system.to_owned(),
                request.target_key.map(str::to_owned),
                id,
            ))
            .cloned()
    }
}

async fn links(w: &World, plan: &CompiledMapping) -> Links {
    let mut out = HashMap::new();
    let store = w.store().await;
    for reference in plan.references() {
        let referenced = &project().plans[reference.mapping];
        for pair in store.pair_states(reference.mapping).await.expect("pairs") {
            let (from, to) = (&referenced.source_system, &referenced.target_system);
            out.insert(
                (
                    reference.mapping.to_owned(),
                    from.clone(),
                    None,
                    pair.source_id.clone(),
                ),
                json!(pair.target_id),
            );
            out.insert(
                (
                    reference.mapping.to_owned(),
                    to.clone(),
                    None,
                    pair.target_id.clone(),
                ),
                json!(pair.source_id),
            );
            if let Some(key) = reference.key
                && let Some(value) = pair.base.get(key)
            {
                let value_text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.insert(
                    (
                        reference.mapping.to_owned(),
                        from.clone(),
                        Some(key.to_owned()),
                        pair.source_id.clone(),
                    ),
                    value.clone(),
                );
                out.insert(
                    (
                        reference.mapping.to_owned(),
                        to.clone(),
                        Some(key.to_owned()),
                        value_text,
                    ),
                    json!(pair.source_id),
                );
            }
        }
    }
    Links(out)
}

/// A record as the engine reads it: Salesforce orders and quotes carry their lines, which
/// the engine reads with them through a subquery.
fn read(w: &World, system: &str, entity: &str, id: &str) -> Option<Value> {
    let mut record = w.sandbox.record(system, entity, id).expect("record")?;
    let children = match (system, entity) {
        ("salesforce", "Order") => Some(("OrderItem", "OrderId", "OrderItems")),
        ("salesforce", "Quote") => Some(("QuoteLineItem", "QuoteId", "QuoteLineItems")),
        _ => None,
    };
    if let Some((child, parent_field, relation)) = children {
        let lines: Vec<Value> = w
            .sandbox
            .records("salesforce", child)
            .expect("children")
            .into_iter()
            .filter(|line| line[parent_field] == json!(id))
            .collect();
        record[relation] = if lines.is_empty() {
            Value::Null
        } else {
            json!({ "totalSize": lines.len(), "done": true, "records": lines })
        };
    }
    Some(record)
}

/// Whether a record reads as deleted (gone, or soft-deleted).
fn is_deleted(record: &Option<Value>) -> bool {
    record
        .as_ref()
        .is_none_or(|r| r.get("deleted") == Some(&json!(true)))
}

fn absent(value: Option<&Value>) -> bool {
    value.is_none_or(Value::is_null)
}

/// Two values in a source's own terms: equal, or equal as numbers, or as text ignoring case.
fn same_source_value(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match (text(a), text(b)) {
        (Some(x), Some(y)) => {
            if let (Ok(p), Ok(q)) = (
                x.parse::<rust_decimal::Decimal>(),
                y.parse::<rust_decimal::Decimal>(),
            ) {
                return p == q;
            }
            x.eq_ignore_ascii_case(&y)
        }
        _ => match (a, b) {
            (Value::Object(x), Value::Object(y)) => x.iter().all(|(k, v)| {
                y.get(k).is_some_and(|w| same_source_value(v, w)) || v.is_null() && absent(y.get(k))
            }),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_source_value(p, q))
            }
            _ => false,
        },
    }
}

/// Every leaf of a source patch equals the record's value at the same place.
fn patch_holds(patch: &Value, record: &Value) -> Result<(), String> {
    match patch {
        Value::Object(map) => {
            for (key, value) in map {
                let inner = record.get(key).cloned().unwrap_or(Value::Null);
                match value {
                    Value::Object(_) => {
                        patch_holds(value, &inner).map_err(|e| format!("{key}.{e}"))?
                    }
                    Value::Array(items)
                        if items.iter().all(Value::is_object) && inner.is_array() =>
                    {
                        // A list written through a filter (`$.addresses[?(@.field=='BILLING')]`)
                        // holds when some item holds each written item.
                        let found = inner.as_array().into_iter().flatten();
                        for item in items {
                            if !found
                                .clone()
                                .any(|candidate| patch_holds(item, candidate).is_ok())
                            {
                                return Err(format!("{key}: no item holds {item} in {inner}"));
                            }
                        }
                    }
                    _ => {
                        if !(same_source_value(value, &inner) || value.is_null() && inner.is_null())
                        {
                            return Err(format!("{key}: expected {value}, found {inner}"));
                        }
                    }
                }
            }
            Ok(())
        }
        other => {
            if same_source_value(other, record) {
                Ok(())
            } else {
                Err(format!("expected {other}, found {record}"))
            }
        }
    }
}

/// One linked pair as the driver sees it.
struct Pair {
    source_id: String,
    target_id: String,
}

struct Driver<'w> {
    w: &'w World,
    name: &'static str,
    plan: Arc<CompiledMapping>,
    runs: Vec<&'static str>,
    /// Behaviours checked, for the summary.
    covered: Vec<String>,
}

impl Driver<'_> {
    fn source(&self, pair: &Pair) -> Option<Value> {
        read(
            self.w,
            &self.plan.source_system,
            &self.plan.source_entity,
            &pair.source_id,
        )
    }

    fn target(&self, pair: &Pair) -> Option<Value> {
        read(
            self.w,
            &self.plan.target_system,
            &self.plan.target_entity,
            &pair.target_id,
        )
    }

    /// The source record mapped forward (every rule, or only the ones an existing record
    /// keeps in sync), in canonical form.
    async fn forward(&self, source: &Value, creating: bool) -> Fields {
        let links = links(self.w, &self.plan).await;
        let mapped = if creating {
            mapping::apply_forward(&self.plan, source, &links)
        } else {
            mapping::apply_forward_existing(&self.plan, source, &links)
        };
        let mapped = mapped
            .unwrap_or_else(|e| panic!("{}: the source record maps: {e}\n{source:#}", self.name));
        Canonical::of(&self.plan, &mapped).into_fields()
    }

    fn canonical(&self, target: &Value) -> Fields {
        Canonical::of(&self.plan, target).into_fields()
    }

    /// Runs the mapping with the ones it refers to; nothing of this mapping may be parked.
    async fn run(&self, step: &str) -> MappingReport {
        let report = self.w.run(&self.runs).await;
        let mine = report
            .mappings
            .iter()
            .find(|m| m.mapping == self.name)
            .cloned()
            .expect("the mapping's report");
        let parked = self.w.store().await.parked(None).await.expect("parked");
        assert!(
            parked.is_empty(),
            "{}: {step}: nothing is parked: {parked:#?}",
            self.name
        );
        assert!(
            report.stopped().is_empty(),
            "{}: {step}: {report:#?}",
            self.name
        );
        mine
    }

    /// A run straight after writes nothing.
    async fn quiet(&mut self, step: &str) {
        let report = self.w.run(&self.runs).await;
        assert_eq!(
            report.writes(),
            0,
            "{}: a run straight after {step} writes nothing: {:#?}",
            self.name,
            report
                .mappings
                .iter()
                .filter(|m| m.writes() > 0)
                .collect::<Vec<_>>()
        );
        self.covered.push(format!("quiet after {step}"));
    }

    async fn pair_of(&self, side: Side, id: &str) -> Pair {
        let pairs = self
            .w
            .store()
            .await
            .pair_states(self.name)
            .await
            .expect("pairs");
        let pair: &PairState = pairs
            .iter()
            .find(|p| match side {
                Side::Source => p.source_id == id,
                Side::Target => p.target_id == id,
            })
            .unwrap_or_else(|| panic!("{}: {side:?} record {id} is linked: {pairs:#?}", self.name));
        Pair {
            source_id: pair.source_id.clone(),
            target_id: pair.target_id.clone(),
        }
    }

    /// Both records of a pair agree under every rule that carries values between them:
    /// forward rules compare in the target's terms (or, for a two-way rule, the target's
    /// value read backwards is the source's); backward-only rules compare in the source's
    /// terms. `creating` includes the create-only rules (right after the create).
    async fn assert_agree(&self, pair: &Pair, step: &str, origin: Option<Side>) -> (Value, Value) {
        let source = self
            .source(pair)
            .unwrap_or_else(|| panic!("{}: {step}: source {} exists", self.name, pair.source_id));
        let target = self
            .target(pair)
            .unwrap_or_else(|| panic!("{}: {step}: target {} exists", self.name, pair.target_id));
        let creating = origin == Some(Side::Source);
        let forward = self.forward(&source, creating).await;
        let canonical = self.canonical(&target);
        let links = links(self.w, &self.plan).await;
        let mut problems = Vec::new();
        for rule in &self.plan.rules.rules {
            let field = rule.target.as_str();
            if rule.create_only && !creating {
                continue;
            }
            if rule.direction.forward() {
                let (a, b) = (forward.get(field), canonical.get(field));
                if absent(a) && absent(b) || a == b {
                    continue;
                }
                if absent(a) && !creating {
                    // The source has no value: an absent field never blanks the other side.
                    continue;
                }
                // A two-way rule whose value map or inverse is not one-to-one: the target's
                // value read backwards must be the source's.
                if rule.direction.backward() {
                    let only: HashSet<&str> = [field].into_iter().collect();
                    if let Ok(patch) =
                        mapping::apply_inverse_selected(&self.plan, &target, &links, &only)
                        && patch.as_object().is_some_and(|o| !o.is_empty())
                        && patch_holds(&patch, &source).is_ok()
                    {
                        continue;
                    }
                }
                problems.push(format!(
                    "`{field}`: source maps to {a:?}, target holds {b:?}"
                ));
            } else {
                let only: HashSet<&str> = [field].into_iter().collect();
                match mapping::apply_inverse_selected(&self.plan, &target, &links, &only) {
                    Ok(patch) => {
                        if let Err(e) = patch_holds(&patch, &source) {
                            problems.push(format!("`{field}` (backwards): {e}"));
                        }
                    }
                    Err(e) => problems.push(format!("`{field}` (backwards): {e}")),
                }
            }
        }
        assert!(
            problems.is_empty(),
            "{}: {step}: the pair {} / {} disagrees:\n  {}\nsource: {source:#}\ntarget: {target:#}",
            self.name,
            pair.source_id,
            pair.target_id,
            problems.join("\n  ")
        );
        (source, target)
    }
}

/// Fields whose value differs between two canonical forms.
fn changed(before: &Fields, after: &Fields) -> HashSet<String> {
    before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

/// Runs every behaviour that applies to one mapping; returns what was checked.
pub async fn check(name: &'static str) -> Vec<String> {
    let fixture = fixtures()
        .into_iter()
        .find(|f| f.mapping == name)
        .unwrap_or_else(|| panic!("no fixture for {name}"));
    let plan = project()
        .plans
        .get(name)
        .cloned()
        .expect("compiled mapping");
    let spec = project().specs[name].clone();
    let w = world(&format!("matrix-{name}"), 0).await;
    let c = (fixture.setup)(&w);
    let mut runs: Vec<&'static str> = fixture.with.to_vec();
    runs.push(name);
    let mut d = Driver {
        w: &w,
        name,
        plan: plan.clone(),

        runs,
        covered: Vec::new(),
    };
    if !fixture.with.is_empty() {
        let report = w.run(fixture.with).await;
        assert_eq!(
            report.parked(),
            0,
            "{name}: the referenced records link: {report:#?}"
        );
    }
    let (system_s, entity_s) = (plan.source_system.clone(), plan.source_entity.clone());
    let (system_t, entity_t) = (plan.target_system.clone(), plan.target_entity.clone());

    // Every rule of a creating direction has a value in the fixture, so a field the engine
    // leaves out cannot go unnoticed.
    let forward_rules: Vec<&str> = plan
        .rules
        .rules
        .iter()
        .filter(|r| r.direction.forward())
        .map(|r| r.target.as_str())
        .collect();
    let backward_rules: Vec<&str> = plan
        .rules
        .rules
        .iter()
        .filter(|r| r.direction.backward())
        .map(|r| r.target.as_str())
        .collect();

    // ---- create on each side that may create ----
    let mut pairs: Vec<(Side, Pair)> = Vec::new();
    let mut created = Vec::new();
    if spec.direction.forward() {
        let make = fixture.source.unwrap_or_else(|| {
            panic!("{name}: the source creates; the fixture needs a source record")
        });
        created.push((Side::Source, make(&w, &c, 1)));
    }
    if spec.direction.backward() {
        let make = fixture.target.unwrap_or_else(|| {
            panic!("{name}: the target creates; the fixture needs a target record")
        });
        created.push((Side::Target, make(&w, &c, 1)));
    }
    // The origin records as the person made them, in the target's terms.
    let mut origins: HashMap<(Side, String), Fields> = HashMap::new();
    for (side, id) in &created {
        let fields = match side {
            Side::Source => {
                d.forward(&read(&w, &system_s, &entity_s, id).expect("source"), false)
                    .await
            }
            Side::Target => d.canonical(&read(&w, &system_t, &entity_t, id).expect("target")),
        };
        origins.insert((*side, id.clone()), fields);
    }
    let report = d.run("create").await;
    for (side, id) in &created {
        let (made_here, made_there) = match side {
            Side::Source => (report.created_target, report.created_source),
            Side::Target => (report.created_source, report.created_target),
        };
        let _ = made_there;
        assert!(
            made_here >= 1,
            "{name}: the {side:?} record is created on the other side: {report:#?}"
        );
        let pair = d.pair_of(*side, id).await;
        let (source, target) = d.assert_agree(&pair, "create", Some(*side)).await;
        match side {
            Side::Source => {
                let mapped = d.forward(&source, true).await;
                let empty: Vec<&&str> = forward_rules
                    .iter()
                    .filter(|f| absent(mapped.get(**f)))
                    .collect();
                assert!(
                    empty.is_empty(),
                    "{name}: the source fixture gives every forward rule a value; empty: {empty:?}"
                );
            }
            Side::Target => {
                let mapped = d.canonical(&target);
                let empty: Vec<&&str> = backward_rules
                    .iter()
                    .filter(|f| absent(mapped.get(**f)))
                    .collect();
                assert!(
                    empty.is_empty(),
                    "{name}: the target fixture gives every backward rule a value; empty: {empty:?}"
                );
            }
        }
        // The sync does not change the origin: every field that flows from it, or that only
        // its creation fills, stays as the person made it. (A field the other side owns, a
        // one-way rule towards the origin, may be set from there.)
        let now = match side {
            Side::Source => d.forward(&source, false).await,
            Side::Target => d.canonical(&target),
        };
        let before = &origins[&(*side, id.clone())];
        for rule in &plan.rules.rules {
            let field = rule.target.as_str();
            let owned_by_other = !rule.create_only
                && match side {
                    Side::Source => rule.direction == Direction::TargetToSource,
                    Side::Target => rule.direction == Direction::SourceToTarget,
                };
            if !owned_by_other {
                assert_eq!(
                    now.get(field),
                    before.get(field),
                    "{name}: creating its counterpart changed the {side:?} record's `{field}`"
                );
            }
        }
        d.covered.push(format!("create on {side:?}"));
        pairs.push((*side, pair));
    }
    d.quiet("create").await;
    let main = &pairs[0].1;

    // ---- edits ----
    let can_edit_source = plan
        .rules
        .rules
        .iter()
        .any(|r| r.direction.forward() && !r.create_only);
    let can_edit_target = plan.rules.rules.iter().any(|r| r.direction.backward());
    for round in [1, 2] {
        let both = round == 2;
        if both && !(can_edit_source && can_edit_target) {
            continue;
        }
        let (source_before, target_before) = d.assert_agree(main, "before the edit", None).await;
        let forward_before = d.forward(&source_before, false).await;
        let target_canonical_before = d.canonical(&target_before);
        let mut expect_target: HashSet<String> = HashSet::new();
        let mut expect_source: HashSet<String> = HashSet::new();
        if can_edit_source && (round == 1 || both) {
            let patch = fixture.source_edit.expect("a source edit")(&c, &source_before, round);
            w.sandbox
                .update(&system_s, &entity_s, &main.source_id, patch.clone())
                .unwrap_or_else(|e| panic!("{name}: edit source {patch}: {e}"));
            let edited = d.source(main).expect("source");
            expect_target = changed(&forward_before, &d.forward(&edited, false).await);
            assert!(
                !expect_target.is_empty(),
                "{name}: the source edit {patch} changes a mapped field"
            );
        }
        if can_edit_target && (round == 2 || !can_edit_source) {
            let patch = fixture.target_edit.expect("a target edit")(&c, &target_before, round);
            w.sandbox
                .update(&system_t, &entity_t, &main.target_id, patch.clone())
                .unwrap_or_else(|e| panic!("{name}: edit target {patch}: {e}"));
            let edited = d.target(main).expect("target");
            expect_source = changed(&target_canonical_before, &d.canonical(&edited));
            expect_source.retain(|f| backward_rules.contains(&f.as_str()));
            assert!(
                !expect_source.is_empty(),
                "{name}: the target edit {patch} changes a field a backward rule carries"
            );
        }
        let step = if both {
            "both edited".to_owned()
        } else if !expect_target.is_empty() {
            "source edit".to_owned()
        } else {
            "target edit".to_owned()
        };
        let report = d.run(&step).await;
        let (source_after, target_after) = d.assert_agree(main, &step, None).await;
        let forward_after = d.forward(&source_after, false).await;
        let target_canonical_after = d.canonical(&target_after);
        if !expect_target.is_empty() {
            assert!(
                report.updated_target >= 1,
                "{name}: {step}: the target is updated: {report:#?}"
            );
        }
        if !expect_source.is_empty() {
            assert!(
                report.updated_source >= 1,
                "{name}: {step}: the source is updated: {report:#?}"
            );
        }
        // The edits arrived (the agreement check says how), and nothing else moved.
        for field in changed(&target_canonical_before, &target_canonical_after) {
            assert!(
                expect_target.contains(&field) || expect_source.contains(&field),
                "{name}: {step}: `{field}` of the target changed though no edit touched it: {:?} -> {:?}",
                target_canonical_before.get(&field),
                target_canonical_after.get(&field)
            );
        }
        for field in changed(&forward_before, &forward_after) {
            assert!(
                expect_target.contains(&field) || expect_source.contains(&field),
                "{name}: {step}: `{field}` of the source changed though no edit touched it: {:?} -> {:?}",
                forward_before.get(&field),
                forward_after.get(&field)
            );
        }
        for field in &expect_target {
            assert_eq!(
                target_canonical_after.get(field),
                forward_after.get(field),
                "{name}: {step}: the source's `{field}` reached the target"
            );
        }
        for field in &expect_source {
            assert_eq!(
                target_canonical_after.get(field),
                d.canonical(&d.target(main).expect("target")).get(field),
                "{name}: {step}: the target keeps its `{field}`"
            );
        }
        let label = if both {
            "different fields edited on both sides are both kept".to_owned()
        } else if can_edit_source {
            "edit on source flows to target".to_owned()
        } else {
            "edit on target flows to source".to_owned()
        };
        d.covered.push(label);
        d.quiet(&step).await;
        if round == 1 && can_edit_source && can_edit_target {
            // The target's own edit, alone.
            let (_, target_before) = d.assert_agree(main, "before the target edit", None).await;
            let target_canonical_before = d.canonical(&target_before);
            let (source_before, _) = d.assert_agree(main, "before the target edit", None).await;
            let forward_before = d.forward(&source_before, false).await;
            let patch = fixture.target_edit.expect("a target edit")(&c, &target_before, 1);
            w.sandbox
                .update(&system_t, &entity_t, &main.target_id, patch.clone())
                .unwrap_or_else(|e| panic!("{name}: edit target {patch}: {e}"));
            let mut expect = changed(
                &target_canonical_before,
                &d.canonical(&d.target(main).expect("target")),
            );
            expect.retain(|f| backward_rules.contains(&f.as_str()));
            assert!(
                !expect.is_empty(),
                "{name}: the target edit {patch} changes a field a backward rule carries"
            );
            let report = d.run("target edit").await;
            assert!(
                report.updated_source >= 1,
                "{name}: target edit: the source is updated: {report:#?}"
            );
            let (source_after, target_after) = d.assert_agree(main, "target edit", None).await;
            for field in changed(&target_canonical_before, &d.canonical(&target_after)) {
                assert!(
                    expect.contains(&field),
                    "{name}: target edit: `{field}` of the target changed though the edit did not touch it"
                );
            }
            let forward_after = d.forward(&source_after, false).await;
            for field in changed(&forward_before, &forward_after) {
                assert!(
                    expect.contains(&field),
                    "{name}: target edit: `{field}` of the source changed though no edit touched it: {:?} -> {:?}",
                    forward_before.get(&field),
                    forward_after.get(&field)
                );
            }
            d.covered.push("edit on target flows to source".to_owned());
            d.quiet("target edit").await;
        }
    }

    // ---- the same field edited on both sides ----
    if let Some((field, source_patch, target_patch)) = fixture.conflict {
        let (source_before, target_before) =
            d.assert_agree(main, "before the conflict", None).await;
        let rule = plan
            .rules
            .rules
            .iter()
            .find(|r| r.target.as_str() == field)
            .expect("the conflict field is a rule");
        assert_eq!(
            rule.direction,
            Direction::Both,
            "{name}: a conflict needs a two-way rule"
        );
        let patch = source_patch(&c, &source_before, 1);
        w.sandbox
            .update(&system_s, &entity_s, &main.source_id, patch.clone())
            .unwrap_or_else(|e| panic!("{name}: edit source {patch}: {e}"));
        let source_value = d
            .forward(&d.source(main).expect("source"), false)
            .await
            .get(field)
            .cloned();
        let patch = target_patch(&c, &target_before, 1);
        w.sandbox
            .update(&system_t, &entity_t, &main.target_id, patch.clone())
            .unwrap_or_else(|e| panic!("{name}: edit target {patch}: {e}"));
        let target_value = d
            .canonical(&d.target(main).expect("target"))
            .get(field)
            .cloned();
        assert_ne!(
            source_value, target_value,
            "{name}: the conflict edits differ"
        );
        let report = d.run("conflict").await;
        assert_eq!(
            report.conflicts, 1,
            "{name}: the conflict is counted: {report:#?}"
        );
        let conflicts = w
            .store()
            .await
            .recent_conflicts(Some(name), 10)
            .await
            .expect("conflicts");
        let recorded = conflicts
            .iter()
            .find(|x| x.field == field)
            .unwrap_or_else(|| {
                panic!("{name}: the conflict on `{field}` is recorded: {conflicts:#?}")
            });
        // The target was edited last, so it is the newer side.
        let expected = match spec.conflict {
            ConflictPolicy::SourceWins => Side::Source,
            ConflictPolicy::TargetWins | ConflictPolicy::NewestWins => Side::Target,
            ConflictPolicy::Manual => panic!("{name}: no shipped mapping holds its conflicts"),
        };
        assert_eq!(
            recorded.winner,
            Some(expected),
            "{name}: the {:?} policy decides: {recorded:#?}",
            spec.conflict
        );
        let (_, target_after) = d.assert_agree(main, "conflict", None).await;
        let winner_value = match expected {
            Side::Source => source_value,
            Side::Target => target_value,
        };
        assert_eq!(
            d.canonical(&target_after).get(field).cloned(),
            winner_value,
            "{name}: both sides hold the winner's `{field}`"
        );
        d.covered
            .push(format!("same field on both sides: {:?} recorded", spec.conflict).to_lowercase());
        d.quiet("conflict").await;
    }

    // ---- deletes ----
    // One pair per side to delete on; a side whose system cannot delete (Keap companies and
    // opportunities) is skipped.
    let creating_side = if spec.direction.forward() {
        Side::Source
    } else {
        Side::Target
    };
    let mut extra = 10;
    let mut planned: Vec<(Side, Pair)> = Vec::new();
    for delete_on in [Side::Source, Side::Target] {
        let pair = match pairs
            .iter()
            .position(|(origin, _)| *origin != delete_on || pairs.len() == 1)
        {
            Some(index) => pairs.remove(index).1,
            None => {
                extra += 1;
                let make = match creating_side {
                    Side::Source => fixture.source.expect("source maker"),
                    Side::Target => fixture.target.expect("target maker"),
                };
                let id = make(&w, &c, extra);
                d.run("create for delete").await;
                d.pair_of(creating_side, &id).await
            }
        };
        planned.push((delete_on, pair));
    }
    let mut victims: Vec<(Side, Pair)> = Vec::new();
    for (delete_on, pair) in planned {
        let (system, entity, id) = match delete_on {
            Side::Source => (&system_s, &entity_s, &pair.source_id),
            Side::Target => (&system_t, &entity_t, &pair.target_id),
        };
        match w.sandbox.delete(system, entity, id) {
            Ok(()) => victims.push((delete_on, pair)),
            Err(tether_sandbox::SandboxError::Rejected { .. }) => {}
            Err(e) => panic!("{name}: delete {system} {entity} {id}: {e}"),
        }
    }
    if !victims.is_empty() {
        let mut propagated = 0u64;
        let report = d.run("delete").await;
        let store = w.store().await;
        let states = store.pair_states(name).await.expect("pairs");
        for (side, pair) in &victims {
            let counterpart = match side {
                Side::Source => d.target(pair),
                Side::Target => d.source(pair),
            };
            let linked = states
                .iter()
                .any(|p| p.source_id == pair.source_id && p.target_id == pair.target_id);
            // A delete propagates the way the mapping carries records; on the other side of a
            // one-way mapping it only forgets the pair.
            let carried = match side {
                Side::Source => spec.direction.forward(),
                Side::Target => spec.direction.backward(),
            };
            let policy = match spec.deletes {
                DeletePolicy::Propagate if !carried => DeletePolicy::Unlink,
                policy => policy,
            };
            match policy {
                DeletePolicy::Propagate => {
                    assert!(
                        is_deleted(&counterpart),
                        "{name}: propagate: the counterpart of the deleted {side:?} record is deleted: {counterpart:#?}"
                    );
                    assert!(!linked, "{name}: propagate: the pair is gone");
                }
                DeletePolicy::Unlink => {
                    assert!(
                        !is_deleted(&counterpart),
                        "{name}: unlink: the counterpart of the deleted {side:?} record stays"
                    );
                    assert!(!linked, "{name}: unlink: the pair is forgotten");
                }
                DeletePolicy::Ignore => {
                    assert!(
                        !is_deleted(&counterpart),
                        "{name}: ignore: the counterpart stays"
                    );
                    assert!(linked, "{name}: ignore: the pair stays");
                }
            }
            d.covered
                .push(format!("delete on {side:?}: {policy:?}").to_lowercase());
            if policy == DeletePolicy::Propagate {
                propagated += 1;
            }
        }
        let expected_deletes = propagated;
        assert_eq!(
            report.deleted_source + report.deleted_target,
            expected_deletes,
            "{name}: {report:#?}"
        );
        // Not created again, on this run or the next.
        d.quiet("delete").await;
        d.quiet("delete, again").await;
        for (side, pair) in &victims {
            let survivor = match side {
                Side::Source => d.target(pair),
                Side::Target => d.source(pair),
            };
            let carried = match side {
                Side::Source => spec.direction.forward(),
                Side::Target => spec.direction.backward(),
            };
            if !(spec.deletes == DeletePolicy::Propagate && carried) {
                assert!(!is_deleted(&survivor), "{name}: the survivor stays");
            }
        }
    }
    println!("matrix {name}: {}", d.covered.join(", "));
    d.covered
}

/// Every mapping in `flows/` has a fixture, and every fixture names a mapping that exists.
#[test]
fn every_mapping_of_the_shipped_flows_has_a_fixture() {
    let shipped: HashSet<String> = project().specs.keys().cloned().collect();
    let fixtures: HashSet<String> = fixtures().iter().map(|f| f.mapping.to_owned()).collect();
    let missing: Vec<&String> = shipped.difference(&fixtures).collect();
    let unknown: Vec<&String> = fixtures.difference(&shipped).collect();
    assert!(
        missing.is_empty(),
        "mappings without a matrix fixture: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "fixtures of mappings that do not exist: {unknown:?}"
    );
    let tested: HashSet<&str> = TESTED.iter().copied().collect();
    let untested: Vec<&String> = fixtures
        .iter()
        .filter(|f| !tested.contains(f.as_str()))
        .collect();
    assert!(
        untested.is_empty(),
        "fixtures without a matrix test: {untested:?}"
    );
    assert_eq!(shipped.len(), 19, "the shipped flows have 19 mappings");
}

macro_rules! matrix_tests {
    ($($test:ident => $mapping:literal,)*) => {
        const TESTED: &[&str] = &[$($mapping),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                check($mapping).await;
            }
        )*
    };
}

matrix_tests! {
    matrix_customcrm_quotes_to_customwebshop_orders => "customcrm-quotes-to-customwebshop-orders",
    matrix_customcrm_users_to_customwebshop_orders => "customcrm-users-to-customwebshop-orders",
    matrix_customcrm_customers_to_customwebshop_customers => "customcrm-customers-to-customwebshop-customers",
    matrix_customcrm_orders_to_customwebshop_orders => "customcrm-orders-to-customwebshop-orders",
    matrix_customcrm_products_to_customwebshop_products => "customcrm-products-to-customwebshop-products",
    matrix_customerp_customers_to_customwebshop_customers => "customerp-customers-to-customwebshop-customers",
    matrix_customerp_orders_to_customwebshop_orders => "customerp-orders-to-customwebshop-orders",
    matrix_customerp_products_to_customwebshop_products => "customerp-products-to-customwebshop-products",
    matrix_keap_companies_to_customerp_customers => "keap-companies-to-customerp-customers",
    matrix_keap_contacts_to_customerp_contacts => "keap-contacts-to-customerp-contacts",
    matrix_keap_opportunities_to_customerp_orders => "keap-opportunities-to-customerp-orders",
    matrix_keap_products_to_customerp_products => "keap-products-to-customerp-products",
    matrix_keap_companies_to_customwebshop_customers => "keap-companies-to-customwebshop-customers",
    matrix_keap_opportunities_to_customwebshop_orders => "keap-opportunities-to-customwebshop-orders",
    matrix_keap_products_to_customwebshop_products => "keap-products-to-customwebshop-products",
    matrix_salesforce_contacts_to_customerp_contacts => "salesforce-contacts-to-customerp-contacts",
    matrix_salesforce_orders_to_customerp_orders => "salesforce-orders-to-customerp-orders",
    matrix_salesforce_product2_to_customerp_products => "salesforce-product2-to-customerp-products",
    matrix_salesforce_quotes_to_customerp_quotes => "salesforce-quotes-to-customerp-quotes",
}

/// The first link of records that both exist (matched by key) adopts what each side holds
/// for fields the other side cannot tell: an inactive EUR customer in the ERP (the master)
/// matched to a live shop customer keeps its active flag and currency. Those one-way rules
/// only fill the fields when the ERP customer is created from the shop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_link_does_not_write_constants_over_the_masters_values() {
    let w = world("first-link-constants", 0).await;
    let mut erp = erp_customer("dormant@first-link.example", "Dormant GmbH");
    erp["currency"] = json!("EUR");
    erp["is_active"] = json!(false);
    let erp_id = insert(&w, "customerp", "customers", erp);
    insert(
        &w,
        "customwebshop",
        "customers",
        shop_customer("dormant@first-link.example", "Dormant GmbH"),
    );
    let report = w.run(&[ERP_SHOP_CUSTOMERS]).await;
    assert_eq!(report.mappings[0].linked, 1, "{report:#?}");
    let after = read(&w, "customerp", "customers", &erp_id).expect("the ERP customer");
    assert_eq!(after["currency"], "EUR", "the currency stays: {after}");
    assert_eq!(after["is_active"], false, "still inactive: {after}");

    // A customer who signs up in the shop still gets the shop's currency and is active.
    insert(
        &w,
        "customwebshop",
        "customers",
        shop_customer("new@first-link.example", "New Signup AB"),
    );
    w.run(&[ERP_SHOP_CUSTOMERS]).await;
    let created = w.one("customerp", "customers", "email", "new@first-link.example");
    assert_eq!(created["currency"], "USD", "{created}");
    assert_eq!(created["is_active"], true, "{created}");
}
