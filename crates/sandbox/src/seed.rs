//! Realistic, deterministic seed data: one imagined company world (organisations, people,
//! products) projected into each system with the overlaps a real business has: the same
//! organisation in Keap, the ERP and Salesforce (same name and email), the same person in
//! Keap and Salesforce (same email), web-shop customers that exist in the ERP, products with
//! the same SKU everywhere, and orders, quotes and lines that reference existing records.
//!
//! Every record goes through its simulator's own create rules (validation, numbering,
//! computed fields), with historical timestamps spread over 2024 (some records share one
//! instant, as bulk imports do). The same `seed_rng` gives the same data.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::store::{Stamp, Store};
use crate::{Backend, SandboxError};

const FIRST_NAMES: [&str; 40] = [
    "Ada", "Bjorn", "Camille", "Daniel", "Elif", "Farah", "Gustav", "Hanna", "Ivan", "Julia",
    "Kari", "Lars", "Maja", "Nils", "Olivia", "Pedro", "Quinn", "Rosa", "Sven", "Tuva", "Ugo",
    "Vera", "William", "Xenia", "Yusuf", "Zara", "Amir", "Beatrice", "Carlos", "Dina", "Emil",
    "Frida", "Georg", "Helena", "Isak", "Jonas", "Klara", "Leo", "Mia", "Noah",
];
const LAST_NAMES: [&str; 40] = [
    "Andersen",
    "Berg",
    "Carlsen",
    "Dahl",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Hansen",
    "Iversen",
    "Johansen",
    "Kowalski",
    "Lund",
    "Moreau",
    "Nilsen",
    "Olsen",
    "Petersen",
    "Quist",
    "Rossi",
    "Solberg",
    "Tanaka",
    "Umar",
    "Vik",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zimmermann",
    "Aasen",
    "Bakke",
    "Costa",
    "Dubois",
    "Engel",
    "Foss",
    "Gomez",
    "Holm",
    "Jensen",
    "Karlsen",
    "Larsen",
    "Meyer",
    "Novak",
    "Ortiz",
];
const COMPANY_FIRST: [&str; 24] = [
    "Nordic",
    "Blue",
    "Granite",
    "Fjord",
    "Aurora",
    "Summit",
    "Harbor",
    "Evergreen",
    "Polar",
    "Silver",
    "Copper",
    "Birch",
    "Atlas",
    "Bright",
    "Coastal",
    "Delta",
    "Iron",
    "Lumen",
    "Maple",
    "North",
    "Oak",
    "Pine",
    "River",
    "Stone",
];
const COMPANY_SECOND: [&str; 20] = [
    "Lumber",
    "Logistics",
    "Analytics",
    "Foods",
    "Robotics",
    "Textiles",
    "Energy",
    "Marine",
    "Software",
    "Furniture",
    "Pharma",
    "Builders",
    "Optics",
    "Outfitters",
    "Media",
    "Farms",
    "Instruments",
    "Design",
    "Motors",
    "Supplies",
];
const COMPANY_SUFFIX: [&str; 5] = ["AS", "Ltd", "GmbH", "Inc", "AB"];
const JOB_TITLES: [&str; 8] = [
    "Purchasing Manager",
    "CFO",
    "Office Manager",
    "Head of Operations",
    "Buyer",
    "CEO",
    "IT Director",
    "Sales Coordinator",
];
/// `(city, ISO alpha-2, ISO alpha-3, region, street, postal code)`.
const PLACES: [(&str, &str, &str, &str, &str, &str); 10] = [
    ("Oslo", "NO", "NOR", "Oslo", "Karl Johans gate", "0154"),
    ("Bergen", "NO", "NOR", "Vestland", "Strandkaien", "5013"),
    (
        "Stockholm",
        "SE",
        "SWE",
        "Stockholm",
        "Drottninggatan",
        "111 51",
    ),
    (
        "Copenhagen",
        "DK",
        "DNK",
        "Capital Region",
        "Strøget",
        "1160",
    ),
    ("Berlin", "DE", "DEU", "Berlin", "Friedrichstraße", "10117"),
    ("Hamburg", "DE", "DEU", "Hamburg", "Jungfernstieg", "20354"),
    ("London", "GB", "GBR", "England", "Baker Street", "NW1 6XE"),
    ("Austin", "US", "USA", "Texas", "Congress Avenue", "78701"),
    (
        "Chicago",
        "US",
        "USA",
        "Illinois",
        "Michigan Avenue",
        "60611",
    ),
    (
        "Amsterdam",
        "NL",
        "NLD",
        "North Holland",
        "Damrak",
        "1012 LG",
    ),
];
const PRODUCT_ADJECTIVES: [&str; 12] = [
    "Ergonomic",
    "Compact",
    "Heavy-Duty",
    "Wireless",
    "Recycled",
    "Premium",
    "Modular",
    "Portable",
    "Insulated",
    "Smart",
    "Classic",
    "Industrial",
];
const PRODUCT_NOUNS: [&str; 14] = [
    "Office Chair",
    "Standing Desk",
    "Label Printer",
    "Pallet Jack",
    "Safety Helmet",
    "Work Lamp",
    "Storage Rack",
    "Coffee Machine",
    "Headset",
    "Monitor Arm",
    "Toolbox",
    "Rain Jacket",
    "Water Bottle",
    "Backpack",
];

struct Organisation {
    name: String,
    email: String,
    phone: String,
    website: String,
    org_number: String,
    place: usize,
    street_number: u32,
}

struct Person {
    first: String,
    last: String,
    email: String,
    phone: String,
    title: &'static str,
    organisation: usize,
}

struct Product {
    sku: String,
    name: String,
    description: String,
    price_cents: i64,
    stock: i64,
}

struct World {
    organisations: Vec<Organisation>,
    people: Vec<Person>,
    products: Vec<Product>,
}

fn slug(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
}

fn pick<'a, T>(rng: &mut fastrand::Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

fn phone(rng: &mut fastrand::Rng, country: &str) -> String {
    let code = match country {
        "NO" => "+47",
        "SE" => "+46",
        "DK" => "+45",
        "DE" => "+49",
        "GB" => "+44",
        "NL" => "+31",
        _ => "+1",
    };
    format!(
        "{code} {:03} {:02} {:03}",
        rng.u32(200..999),
        rng.u32(10..99),
        rng.u32(100..999)
    )
}

fn world(rng: &mut fastrand::Rng, count: usize) -> World {
    let pool = count * 2;
    let mut names = HashSet::new();
    let organisations: Vec<Organisation> = (0..pool)
        .map(|index| {
            let base = format!(
                "{} {} {}",
                pick(rng, &COMPANY_FIRST),
                pick(rng, &COMPANY_SECOND),
                pick(rng, &COMPANY_SUFFIX)
            );
            let name = if names.contains(&base) {
                format!("{base} {}", index + 1)
            } else {
                base
            };
            names.insert(name.clone());
            let domain = format!("{}.example", slug(&name));
            let place = rng.usize(..PLACES.len());
            Organisation {
                email: format!("info@{domain}"),
                phone: phone(rng, PLACES[place].1),
                website: format!("https://www.{domain}"),
                org_number: format!("{}", 900_000_000 + rng.u32(..99_999_999)),
                street_number: rng.u32(1..120),
                place,
                name,
            }
        })
        .collect();
    let people = (0..pool)
        .map(|index| {
            let first = pick(rng, &FIRST_NAMES).to_string();
            let last = pick(rng, &LAST_NAMES).to_string();
            let organisation = rng.usize(..organisations.len());
            let domain = organisations[organisation]
                .email
                .trim_start_matches("info@")
                .to_string();
            Person {
                email: format!(
                    "{}.{}{}@{domain}",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    index + 1
                ),
                phone: phone(rng, PLACES[organisations[organisation].place].1),
                title: JOB_TITLES[rng.usize(..JOB_TITLES.len())],
                first,
                last,
                organisation,
            }
        })
        .collect();
    let products = (0..pool)
        .map(|index| {
            let name = format!(
                "{} {}",
                pick(rng, &PRODUCT_ADJECTIVES),
                pick(rng, &PRODUCT_NOUNS)
            );
            Product {
                sku: format!("SKU-{:05}", 10_001 + index),
                description: format!("{name} for professional use."),
                name,
                price_cents: i64::from(rng.u32(5..400)) * 100 + [0, 50, 90, 95][rng.usize(..4)],
                stock: i64::from(rng.u32(0..500)),
            }
        })
        .collect();
    World {
        organisations,
        people,
        products,
    }
}

fn decimal(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Hands out historical timestamps across 2024; about one in ten repeats the previous one.
#[derive(Clone)]
struct SeedClock {
    at: Stamp,
    step: i64,
}

impl SeedClock {
    fn next(&mut self, rng: &mut fastrand::Rng) -> Stamp {
        if rng.u8(..10) != 0 {
            self.at += 1 + rng.i64(0..self.step.max(1) * 2);
        }
        self.at
    }

    fn date(&self) -> String {
        chrono::DateTime::from_timestamp_millis(self.at)
            .unwrap_or_default()
            .format("%Y-%m-%d")
            .to_string()
    }
}

struct Seeder<'a> {
    store: &'a mut Store,
    backends: &'a [(&'static str, Arc<dyn Backend>)],
    rng: fastrand::Rng,
    clock: SeedClock,
    /// Only draws what a real pass draws (random numbers, times), creating nothing: how a
    /// thread seeding a later system finds the state the earlier systems leave behind.
    dry: bool,
    /// Records created per entity so far: each entity's generator makes one shape of body,
    /// so its first [`SCHEMA_CHECKED`] are checked against the contract's write schema and
    /// the rest skip that check (every other create rule still applies).
    created: HashMap<(&'static str, &'static str), usize>,
}

/// Seed records per entity checked against the write schema.
const SCHEMA_CHECKED: usize = 100;

impl Seeder<'_> {
    fn create(
        &mut self,
        system: &'static str,
        entity: &'static str,
        body: Value,
    ) -> Result<String, SandboxError> {
        let at = self.clock.next(&mut self.rng);
        if self.dry {
            return Ok(String::new());
        }
        let backend = self
            .backends
            .iter()
            .find(|(name, _)| *name == system)
            .map(|(_, backend)| backend.clone())
            .ok_or_else(|| SandboxError::UnknownSystem(system.to_string()))?;
        let created = self.created.entry((system, entity)).or_default();
        *created += 1;
        let check_schema = *created <= SCHEMA_CHECKED;
        backend
            .create_at(self.store, entity, body, at, check_schema)
            .map_err(|response| SandboxError::Seed {
                system: system.to_string(),
                entity: entity.to_string(),
                status: response.status.as_u16(),
                body: response.into_body().unwrap_or(Value::Null),
            })
    }

    fn int(id: &str) -> Value {
        id.parse::<u64>().map(Value::from).unwrap_or(Value::Null)
    }
}

/// Fills every system with `count` records per entity.
pub fn seed(
    store: &mut Store,
    backends: &[(&'static str, Arc<dyn Backend>)],
    count: usize,
    seed_rng: u64,
) -> Result<(), SandboxError> {
    if count == 0 {
        return Ok(());
    }
    let mut rng = fastrand::Rng::with_seed(seed_rng);
    let world = world(&mut rng, count);
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-02T08:00:00Z")
        .map(|at| at.timestamp_millis())
        .unwrap_or_default();
    let year_ms: i64 = 360 * 86_400_000;
    let records = (count * 30) as i64;
    let clock = SeedClock {
        at: start,
        step: year_ms / records.max(1) / 2,
    };
    let half = count / 2;
    let quarter = count / 4;
    // The systems' data are disjoint, and the random numbers and times each system's part
    // draws do not depend on what creating its records answers. So Salesforce (the largest
    // part) is seeded on a second thread, into its own part of the store, starting from
    // the state the three systems before it leave (found by drawing through them without
    // creating anything), while this thread seeds the others; the result is the data a
    // single pass makes, to the byte. The web shop is the only part that draws from the
    // shared random source (its UUIDs), and only this thread seeds it.
    let mut salesforce = Store {
        systems: store
            .systems
            .remove("salesforce")
            .map(|entities| {
                std::collections::BTreeMap::from([("salesforce".to_string(), entities)])
            })
            .unwrap_or_default(),
        last_stamp: store.last_stamp,
        counters: std::mem::take(&mut store.counters),
    };
    let (helper_rng, helper_clock) = (rng.clone(), clock.clone());
    let helper_store = &mut salesforce;
    let world = &world;
    let (first, second) = std::thread::scope(|scope| {
        let helper = scope.spawn(move || -> Result<(), SandboxError> {
            let mut seeder = Seeder {
                store: helper_store,
                backends,
                rng: helper_rng,
                clock: helper_clock,
                dry: true,
                created: HashMap::new(),
            };
            seed_keap(&mut seeder, world, 0, count)?;
            seed_customerp(&mut seeder, world, half, count)?;
            seed_customwebshop(&mut seeder, world, half, count)?;
            seeder.dry = false;
            seed_salesforce(&mut seeder, world, quarter, count)
        });
        let mut seeder = Seeder {
            store: &mut *store,
            backends,
            rng,
            clock,
            dry: false,
            created: HashMap::new(),
        };
        let first = (|| {
            seed_keap(&mut seeder, world, 0, count)?;
            seed_customerp(&mut seeder, world, half, count)?;
            seed_customwebshop(&mut seeder, world, half, count)?;
            seeder.dry = true;
            seed_salesforce(&mut seeder, world, quarter, count)?;
            seeder.dry = false;
            seed_customcrm(&mut seeder, world, count, count)
        })();
        let second = helper
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (first, second)
    });
    store.systems.append(&mut salesforce.systems);
    store.last_stamp = store.last_stamp.max(salesforce.last_stamp);
    for (name, value) in salesforce.counters {
        let counter = store.counters.entry(name).or_default();
        *counter = (*counter).max(value);
    }
    first.and(second)
}

fn seed_keap(
    seeder: &mut Seeder,
    world: &World,
    from: usize,
    count: usize,
) -> Result<(), SandboxError> {
    let mut companies = Vec::new();
    for organisation in &world.organisations[from..from + count] {
        let (city, _, alpha3, region, street, postal) = PLACES[organisation.place];
        let id = seeder.create(
            "keap",
            "companies",
            json!({
                "company_name": organisation.name,
                "email_address": organisation.email,
                "phone_number": {"number": organisation.phone, "type": "Work"},
                "address": {"line1": format!("{street} {}", organisation.street_number), "locality": city,
                            "region": region, "zip_code": postal, "country_code": alpha3},
                "website": organisation.website,
            }),
        )?;
        companies.push(id);
    }
    let mut contacts = Vec::new();
    for person in &world.people[from..from + count] {
        let organisation = &world.organisations[person.organisation];
        let (city, _, alpha3, region, street, postal) = PLACES[organisation.place];
        let company = person
            .organisation
            .checked_sub(from)
            .and_then(|index| companies.get(index))
            .map(|id| json!({"id": Seeder::int(id)}));
        let mut body = json!({
            "given_name": person.first,
            "family_name": person.last,
            "job_title": person.title,
            "email_addresses": [{"email": person.email, "field": "EMAIL1"}],
            "phone_numbers": [{"number": person.phone, "field": "PHONE1", "type": "Work"}],
            "addresses": [{"field": "BILLING", "line1": format!("{street} {}", organisation.street_number),
                           "locality": city, "region": region, "postal_code": postal, "country_code": alpha3}],
        });
        if let (Some(company), Some(object)) = (company, body.as_object_mut()) {
            object.insert("company".into(), company);
        }
        contacts.push(seeder.create("keap", "contacts", body)?);
    }
    for product in &world.products[from..from + count] {
        let short: String = product.description.chars().take(40).collect();
        seeder.create(
            "keap",
            "products",
            json!({
                "product_name": product.name,
                "sku": product.sku,
                "product_price": product.price_cents as f64 / 100.0,
                "product_desc": product.description,
                "product_short_desc": short,
                "active": true,
            }),
        )?;
    }
    let stages = [10, 20, 30, 40, 50, 60];
    for index in 0..count {
        let contact = &contacts[seeder.rng.usize(..contacts.len())];
        let low = i64::from(seeder.rng.u32(10..200)) * 100;
        let title = format!("{} deal {}", world.people[from + index].last, index + 1);
        let body = json!({
            "opportunity_title": title,
            "contact": {"id": Seeder::int(contact)},
            "stage": {"id": stages[seeder.rng.usize(..stages.len())]},
            "user": {"id": 1},
            "projected_revenue_low": low as f64,
            "projected_revenue_high": (low * 3 / 2) as f64,
            "estimated_close_date": format!("{}T12:00:00.000+0000", seeder.clock.date()),
            "include_in_forecast": 1,
        });
        seeder.create("keap", "opportunities", body)?;
    }
    Ok(())
}

fn lines(seeder: &mut Seeder, products: &[(String, i64)]) -> (Vec<(usize, i64)>, i64) {
    let count = seeder.rng.usize(1..=3).min(products.len());
    let mut picked: Vec<(usize, i64)> = Vec::with_capacity(count);
    while picked.len() < count {
        let product = seeder.rng.usize(..products.len());
        if !picked.iter().any(|(chosen, _)| *chosen == product) {
            picked.push((product, i64::from(seeder.rng.u32(1..6))));
        }
    }
    let total = picked
        .iter()
        .map(|(index, quantity)| products[*index].1 * quantity)
        .sum();
    (picked, total)
}

fn seed_customerp(
    seeder: &mut Seeder,
    world: &World,
    from: usize,
    count: usize,
) -> Result<(), SandboxError> {
    let mut customers = Vec::new();
    for organisation in &world.organisations[from..from + count] {
        let (city, alpha2, _, _, street, postal) = PLACES[organisation.place];
        let limit = i64::from(seeder.rng.u32(5..100)) * 100_000;
        customers.push(seeder.create(
            "customerp",
            "customers",
            json!({
                "name": organisation.name,
                "org_number": organisation.org_number,
                "email": organisation.email,
                "phone": organisation.phone,
                "website": organisation.website,
                "billing_address": {"street": format!("{street} {}", organisation.street_number), "city": city,
                                    "postal_code": postal, "country": alpha2},
                "currency": "USD",
                "credit_limit": decimal(limit),
                "is_active": true,
            }),
        )?);
    }
    let offset = count / 4;
    let mut contacts = Vec::new();
    for person in &world.people[offset..offset + count] {
        let customer = person
            .organisation
            .checked_sub(from)
            .and_then(|index| customers.get(index))
            .map(|id| Seeder::int(id))
            .unwrap_or(Value::Null);
        contacts.push(seeder.create(
            "customerp",
            "contacts",
            json!({
                "customer_id": customer,
                "first_name": person.first,
                "last_name": person.last,
                "email": person.email,
                "phone": person.phone,
                "job_title": person.title,
            }),
        )?);
    }
    let mut products = Vec::new();
    for product in &world.products[from..from + count] {
        let id = seeder.create(
            "customerp",
            "products",
            json!({
                "sku": product.sku,
                "name": product.name,
                "description": product.description,
                "unit_price": decimal(product.price_cents),
                "currency": "USD",
                "vat_rate": "25.00",
                "is_active": true,
                "stock_quantity": product.stock,
            }),
        )?;
        products.push((id, product.price_cents));
    }
    // The sample kit every active sales rep of the CRM gets from the shop (flow
    // customcrm-to-customwebshop): an article of the product master like any other, free,
    // so that kit orders reach the ERP and the CRM as the flows describe.
    seeder.create(
        "customerp",
        "products",
        json!({
            "sku": "SAMPLE-KIT",
            "name": "Sales sample kit",
            "description": "Demo kit for the company's sales reps, shipped free of charge.",
            "unit_price": "0.00",
            "currency": "USD",
            "vat_rate": "25.00",
            "is_active": true,
            "stock_quantity": 50,
        }),
    )?;
    for entity in ["orders", "quotes"] {
        for index in 0..count {
            let customer = Seeder::int(&customers[seeder.rng.usize(..customers.len())]);
            let contact = Seeder::int(&contacts[seeder.rng.usize(..contacts.len())]);
            let (picked, total) = lines(seeder, &products);
            let line_items: Vec<Value> = picked
                .iter()
                .map(|(product, quantity)| {
                    json!({"product_id": Seeder::int(&products[*product].0), "quantity": quantity,
                           "unit_price": decimal(products[*product].1)})
                })
                .collect();
            let date = seeder.clock.date();
            let body = if entity == "orders" {
                let statuses = ["draft", "confirmed", "shipped", "invoiced", "cancelled"];
                json!({"customer_id": customer, "contact_id": contact, "status": statuses[seeder.rng.usize(..5)],
                       "order_date": date, "currency": "USD", "total_amount": decimal(total), "lines": line_items})
            } else {
                let statuses = ["draft", "sent", "accepted", "rejected", "expired"];
                json!({"customer_id": customer, "contact_id": contact, "title": format!("Quote {} for {}", index + 1, world.organisations[from].name),
                       "status": statuses[seeder.rng.usize(..5)], "valid_until": date, "currency": "USD",
                       "total_amount": decimal(total), "lines": line_items})
            };
            seeder.create("customerp", entity, body)?;
        }
    }
    Ok(())
}

fn seed_customwebshop(
    seeder: &mut Seeder,
    world: &World,
    from: usize,
    count: usize,
) -> Result<(), SandboxError> {
    let mut customers = Vec::new();
    // Most web-shop customers are ERP customers (same organisation email); the rest are new.
    let known = count * 3 / 4;
    let indices: Vec<usize> = (from..from + known)
        .chain(from + count..from + count + (count - known))
        .collect();
    for index in indices {
        let organisation = &world.organisations[index.min(world.organisations.len() - 1)];
        let contact = &world.people[index.min(world.people.len() - 1)];
        let (city, alpha2, _, _, street, postal) = PLACES[organisation.place];
        let body = json!({
            "email": organisation.email,
            "first_name": contact.first,
            "last_name": contact.last,
            "company": organisation.name,
            "phone": organisation.phone,
            "addresses": [{"type": "billing", "line1": format!("{street} {}", organisation.street_number),
                           "city": city, "zip": postal, "country": alpha2}],
            "marketing_opt_in": seeder.rng.bool(),
        });
        let id = seeder.create("customwebshop", "customers", body);
        match id {
            Ok(id) => customers.push((id, organisation.email.clone())),
            Err(SandboxError::Seed { status: 422, .. }) => {}
            Err(error) => return Err(error),
        }
    }
    let offset = count / 4;
    let mut products = Vec::new();
    for product in &world.products[offset..offset + count] {
        seeder.create(
            "customwebshop",
            "products",
            json!({
                "sku": product.sku,
                "title": product.name,
                "description_html": format!("<p>{}</p>", product.description),
                "price_cents": product.price_cents,
                "currency": "USD",
                "active": true,
                "inventory": product.stock,
            }),
        )?;
        products.push((
            product.sku.clone(),
            product.price_cents,
            product.name.clone(),
        ));
    }
    if customers.is_empty() {
        return Ok(());
    }
    let prices: Vec<(String, i64)> = products
        .iter()
        .map(|(sku, price, _)| (sku.clone(), *price))
        .collect();
    for _ in 0..count {
        let (customer, email) = customers[seeder.rng.usize(..customers.len())].clone();
        let (picked, total) = lines(seeder, &prices);
        let items: Vec<Value> = picked
            .iter()
            .map(|(product, quantity)| {
                let (sku, price, title) = &products[*product];
                json!({"sku": sku, "title": title, "quantity": quantity, "price_cents": price})
            })
            .collect();
        let statuses = ["pending", "paid", "fulfilled", "cancelled", "refunded"];
        let placed = format!("{}T10:30:00Z", seeder.clock.date());
        let body = json!({"customer_id": customer, "email": email, "status": statuses[seeder.rng.usize(..5)],
                   "currency": "USD", "total_cents": total, "placed_at": placed, "items": items});
        seeder.create("customwebshop", "orders", body)?;
    }
    Ok(())
}

fn seed_salesforce(
    seeder: &mut Seeder,
    world: &World,
    from: usize,
    count: usize,
) -> Result<(), SandboxError> {
    let mut accounts = Vec::new();
    for organisation in &world.organisations[from..from + count] {
        let (city, _, _, region, street, postal) = PLACES[organisation.place];
        let country = PLACES[organisation.place].1;
        accounts.push(seeder.create(
            "salesforce",
            "Account",
            json!({
                "Name": organisation.name, "Phone": organisation.phone, "Website": organisation.website,
                "BillingStreet": format!("{street} {}", organisation.street_number), "BillingCity": city,
                "BillingState": region, "BillingPostalCode": postal, "BillingCountry": country,
                "AccountNumber": organisation.org_number, "Type": "Customer - Direct",
            }),
        )?);
    }
    let half = count / 2;
    for person in &world.people[half..half + count] {
        let account = person
            .organisation
            .checked_sub(from)
            .and_then(|index| accounts.get(index))
            .map(|id| json!(id))
            .unwrap_or(Value::Null);
        seeder.create(
            "salesforce",
            "Contact",
            json!({"FirstName": person.first, "LastName": person.last, "Email": person.email,
                   "Phone": person.phone, "Title": person.title, "AccountId": account, "LeadSource": "Web"}),
        )?;
    }
    let standard = {
        let books = seeder.store.entity("salesforce", "Pricebook2");
        books
            .and_then(|books| {
                books
                    .records
                    .values()
                    .find(|book| book.fields.get("IsStandard") == Some(json!(true)))
                    .map(|book| book.id.clone())
            })
            .unwrap_or_default()
    };
    let mut entries = Vec::new();
    for product in &world.products[0..count] {
        let product_id = seeder.create(
            "salesforce",
            "Product2",
            json!({"Name": product.name, "ProductCode": product.sku, "StockKeepingUnit": product.sku,
                   "Description": product.description, "IsActive": true, "Family": "Hardware"}),
        )?;
        let entry = seeder.create(
            "salesforce",
            "PricebookEntry",
            json!({"Pricebook2Id": standard, "Product2Id": product_id,
                   "UnitPrice": product.price_cents as f64 / 100.0, "IsActive": true}),
        )?;
        entries.push((entry, product.price_cents));
    }
    let stages = [
        "Prospecting",
        "Qualification",
        "Proposal/Price Quote",
        "Negotiation/Review",
        "Closed Won",
        "Closed Lost",
    ];
    let mut opportunities = Vec::new();
    for index in 0..count {
        let account = accounts[seeder.rng.usize(..accounts.len())].clone();
        let amount = i64::from(seeder.rng.u32(10..500)) * 100;
        let body = json!({"Name": format!("{} - {}", world.organisations[from + index % count].name, index + 1),
                   "AccountId": account, "StageName": stages[seeder.rng.usize(..stages.len())],
                   "CloseDate": seeder.clock.date(), "Amount": amount as f64, "Pricebook2Id": standard});
        opportunities.push(seeder.create("salesforce", "Opportunity", body)?);
    }
    for _ in 0..count {
        let account = accounts[seeder.rng.usize(..accounts.len())].clone();
        let body = json!({"AccountId": account, "EffectiveDate": seeder.clock.date(), "Status": "Draft",
                   "Pricebook2Id": standard, "Description": "Seeded order"});
        let order = seeder.create("salesforce", "Order", body)?;
        let (picked, _) = lines(seeder, &entries);
        for (entry, quantity) in picked {
            seeder.create(
                "salesforce",
                "OrderItem",
                json!({"OrderId": order, "PricebookEntryId": entries[entry].0, "Quantity": quantity as f64,
                       "UnitPrice": entries[entry].1 as f64 / 100.0}),
            )?;
        }
    }
    for index in 0..count {
        let opportunity = opportunities[seeder.rng.usize(..opportunities.len())].clone();
        let body = json!({"Name": format!("Quote Q-{}", index + 1), "OpportunityId": opportunity,
                   "Status": "Draft", "ExpirationDate": seeder.clock.date()});
        let quote = seeder.create("salesforce", "Quote", body)?;
        let (picked, _) = lines(seeder, &entries);
        for (entry, quantity) in picked {
            seeder.create(
                "salesforce",
                "QuoteLineItem",
                json!({"QuoteId": quote, "PricebookEntryId": entries[entry].0, "Quantity": quantity as f64,
                       "UnitPrice": entries[entry].1 as f64 / 100.0}),
            )?;
        }
    }
    Ok(())
}

fn seed_customcrm(
    seeder: &mut Seeder,
    world: &World,
    from: usize,
    count: usize,
) -> Result<(), SandboxError> {
    let mut customers = Vec::new();
    for organisation in &world.organisations[from..from + count] {
        let (city, alpha2, _, _, street, postal) = PLACES[organisation.place];
        customers.push(seeder.create(
            "customcrm",
            "customers",
            json!({"companyName": organisation.name, "contactEmail": organisation.email, "phoneNumber": organisation.phone,
                   "address": {"street": format!("{street} {}", organisation.street_number), "city": city,
                               "zip": postal, "countryCode": alpha2}}),
        )?);
    }
    let roles = ["sales", "support", "admin"];
    let mut users = Vec::new();
    for (index, person) in world.people[from..from + count].iter().enumerate() {
        let body = json!({"fullName": format!("{} {}", person.first, person.last),
                   "email": format!("{}.{}{}@crm-staff.example", person.first.to_lowercase(), person.last.to_lowercase(), index + 1),
                   "phone": person.phone, "role": roles[seeder.rng.usize(..3)], "active": seeder.rng.u8(..10) != 0});
        users.push(seeder.create("customcrm", "users", body)?);
    }
    let mut products = Vec::new();
    for product in &world.products[count / 2..count / 2 + count] {
        let id = seeder.create(
            "customcrm",
            "products",
            json!({"name": product.name, "sku": product.sku, "listPrice": decimal(product.price_cents),
                   "currencyCode": "USD", "isActive": true}),
        )?;
        products.push((id, product.price_cents));
    }
    let mut quotes: Vec<String> = Vec::new();
    for entity in ["quotes", "orders"] {
        for _ in 0..count {
            let customer = Seeder::int(&customers[seeder.rng.usize(..customers.len())]);
            let owner = Seeder::int(&users[seeder.rng.usize(..users.len())]);
            let (picked, total) = lines(seeder, &products);
            let line_items: Vec<Value> = picked
                .iter()
                .map(|(product, quantity)| {
                    json!({"productId": Seeder::int(&products[*product].0), "qty": quantity,
                           "unitPrice": decimal(products[*product].1)})
                })
                .collect();
            let date = seeder.clock.date();
            let body = if entity == "quotes" {
                let statuses = ["Draft", "Presented", "Accepted", "Declined"];
                json!({"customerId": customer, "ownerUserId": owner, "status": statuses[seeder.rng.usize(..4)],
                       "expiresOn": date, "totalAmount": decimal(total), "currencyCode": "USD", "lines": line_items})
            } else {
                let statuses = ["Open", "Won", "Shipped", "Closed", "Cancelled"];
                let quote = if quotes.is_empty() || seeder.rng.bool() {
                    Value::Null
                } else {
                    Seeder::int(&quotes[seeder.rng.usize(..quotes.len())])
                };
                json!({"customerId": customer, "quoteId": quote, "status": statuses[seeder.rng.usize(..5)],
                       "orderedAt": format!("{date}T09:15:00Z"), "totalAmount": decimal(total), "currencyCode": "USD",
                       "lines": line_items})
            };
            let id = seeder.create("customcrm", entity, body)?;
            if entity == "quotes" {
                quotes.push(id);
            }
        }
    }
    Ok(())
}
