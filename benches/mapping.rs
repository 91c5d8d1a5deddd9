//! Records per second of the mapping interpreter, forward and inverse, for (a) a contact with
//! 12 properties, 2 templates and a value map and (b) an order with 20 lines, using the
//! flow in `benches/fixtures/` (independent of the shipped flows). Run with
//! `cargo bench --bench mapping`; criterion reports the throughput in records per second.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use tether_engine::mapping::{Canonical, CompiledMapping, KeepIds, apply_forward, apply_inverse};
use tether_engine::spec::load::Project;

const RECORDS: usize = 1_000;

fn plans() -> (CompiledMapping, CompiledMapping) {
    let project =
        Project::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures"));
    assert!(project.diagnostics.is_empty(), "{:#?}", project.diagnostics);
    let (mut plans, diagnostics) = tether_engine::mapping::compile_project(&project);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let take = |plans: &mut indexmap::IndexMap<_, std::sync::Arc<CompiledMapping>>, name: &str| {
        std::sync::Arc::into_inner(plans.shift_remove(name).expect("the bench mapping exists"))
            .expect("one owner")
    };
    let contact = take(&mut plans, "people-to-contacts");
    let order = take(&mut plans, "orders-to-invoices");
    (contact, order)
}

const FIRST: &[&str] = &[
    "Ann", "Bjørn", "Carla", "Dmitri", "Eve", "Fatima", "Gustav", "Hana",
];
const LAST: &[&str] = &[
    "Lee", "Olsen", "Rossi", "Ivanov", "Smith", "Haddad", "Berg", "Sato",
];
const COUNTRIES: &[&str] = &[
    "NOR", "SWE", "DNK", "DEU", "FRA", "USA", "GBR", "JPN", "ITA", "ESP",
];

/// A contact record like those of `benches/compare.sh`.
fn contact(rng: &mut fastrand::Rng, id: usize) -> Value {
    let first = FIRST[rng.usize(..FIRST.len())];
    let last = LAST[rng.usize(..LAST.len())];
    let status = ["A", "I", "B"][rng.usize(..3)];
    json!({
        "id": id,
        "first_name": first,
        "last_name": last,
        "email": format!(" {}.{}{id}@Example.com", first.to_lowercase(), last.to_lowercase()),
        "phone": format!("+47 {} {} {}", rng.u32(20..99), rng.u32(10..99), rng.u32(100..999)),
        "country": COUNTRIES[rng.usize(..COUNTRIES.len())],
        "status": status,
        "birthday": format!("{}-{:02}-{:02}", rng.u32(1950..2005), rng.u32(1..13), rng.u32(1..29)),
        "newsletter": rng.bool(),
        "notes": format!("  customer since {}  ", rng.u32(2000..2024)),
        "seen_at": format!("2024-{:02}-{:02}T{:02}:{:02}:00Z", rng.u32(1..13), rng.u32(1..29), rng.u32(0..24), rng.u32(0..60)),
        "address": {"city": "Oslo"},
        "updated": "2024-05-01T00:00:00Z"
    })
}

/// An order with 20 lines.
fn order(rng: &mut fastrand::Rng, id: usize) -> Value {
    let lines: Vec<Value> = (0..20)
        .map(|i| {
            let cents = rng.u32(100..100_000);
            let price: Value = serde_json::from_str(&format!("{}.{:02}", cents / 100, cents % 100))
                .unwrap_or(Value::Null);
            json!({"sku": format!("SKU-{i:03}"), "qty": rng.u32(1..20), "price": price})
        })
        .collect();
    json!({
        "id": id,
        "number": format!("SO-{id}"),
        "customer_id": rng.u32(1..10_000),
        "currency": "EUR",
        "total": 1234.56,
        "placed_at": "2024-05-01T10:00:00.000+0000",
        "lines": lines
    })
}

fn bench(c: &mut Criterion) {
    let (contact_plan, order_plan) = plans();
    let mut rng = fastrand::Rng::with_seed(7);
    let contacts: Vec<Value> = (0..RECORDS).map(|i| contact(&mut rng, i)).collect();
    let orders: Vec<Value> = (0..RECORDS).map(|i| order(&mut rng, i)).collect();
    let contact_targets: Vec<Value> = contacts
        .iter()
        .map(|r| apply_forward(&contact_plan, r, &KeepIds).expect("bench contacts map"))
        .collect();
    let order_targets: Vec<Value> = orders
        .iter()
        .map(|r| apply_forward(&order_plan, r, &KeepIds).expect("bench orders map"))
        .collect();

    let contact_texts: Vec<String> = contacts.iter().map(Value::to_string).collect();

    let mut group = c.benchmark_group("contact");
    group.throughput(Throughput::Elements(RECORDS as u64));
    // The reference the mapping is measured against: parsing the same records from JSON.
    group.bench_function("parse_json", |b| {
        b.iter(|| {
            for text in &contact_texts {
                black_box(serde_json::from_str::<Value>(black_box(text)).ok());
            }
        })
    });
    group.bench_function("forward", |b| {
        b.iter(|| {
            for record in &contacts {
                black_box(apply_forward(&contact_plan, black_box(record), &KeepIds).ok());
            }
        })
    });
    group.bench_function("inverse", |b| {
        b.iter(|| {
            for record in &contact_targets {
                black_box(apply_inverse(&contact_plan, black_box(record), &KeepIds).ok());
            }
        })
    });
    group.bench_function("canonical_hash", |b| {
        b.iter(|| {
            for record in &contact_targets {
                black_box(Canonical::of(&contact_plan, black_box(record)).hash());
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("order_20_lines");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("forward", |b| {
        b.iter(|| {
            for record in &orders {
                black_box(apply_forward(&order_plan, black_box(record), &KeepIds).ok());
            }
        })
    });
    group.bench_function("inverse", |b| {
        b.iter(|| {
            for record in &order_targets {
                black_box(apply_inverse(&order_plan, black_box(record), &KeepIds).ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
