//! Mappings as the engine and a user meet them: the fixture flow in `tests/mapping/` compiled
//! once and applied to records both ways, errors that name what failed, references, arrays,
//! canonical forms, the round trip of two-way mappings on generated records, and `tether map`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use indexmap::IndexMap;
use proptest::prelude::*;
use serde_json::{Value, json};
use tether_engine::mapping::compile::RuleSource;
use tether_engine::mapping::types;
use tether_engine::mapping::{
    Canonical, CompiledMapping, KeepIds, ReferenceRequest, RuleErrorKind, apply_forward,
    apply_inverse,
};
use tether_engine::spec::flow::Direction;
use tether_engine::spec::load::Project;

fn flows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mapping")
}

fn plans() -> &'static IndexMap<String, Arc<CompiledMapping>> {
    static PLANS: OnceLock<IndexMap<String, Arc<CompiledMapping>>> = OnceLock::new();
    PLANS.get_or_init(|| {
        let project = Project::load_dir(&flows_dir());
        assert!(project.diagnostics.is_empty(), "{:#?}", project.diagnostics);
        let (plans, diagnostics) = tether_engine::mapping::compile_project(&project);
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        plans
    })
}

fn plan(name: &str) -> &'static CompiledMapping {
    plans().get(name).expect("the fixture mapping exists")
}

fn customer() -> Value {
    json!({
        "id": 17,
        "first_name": "Ann",
        "last_name": "Lee",
        "email": " Ann@Example.com ",
        "phone": "+47 22 33 44 55",
        "country": "NOR",
        "status": "B",
        "vip": true,
        "balance": 1234.5,
        "birthday": "1990-02-28",
        "currency": "nok",
        "company_id": 7,
        "address": {"street": "Storgata 1", "city": "Oslo"},
        "addresses": [
            {"type": "billing", "city": "Oslo"},
            {"type": "shipping", "city": "Bergen"}
        ],
        "notes": "  likes tea ",
        "seen_at": "2024-05-01T14:00:00.000+0200",
        "updated": "2024-05-02T00:00:00Z"
    })
}

#[test]
fn the_fixture_flow_compiles_into_plans() {
    let plans = plans();
    assert_eq!(
        plans.keys().collect::<Vec<_>>(),
        ["customers-to-contacts", "orders-to-invoices"]
    );
    let customers = plan("customers-to-contacts");
    assert_eq!(customers.source_system, "shop");
    assert_eq!(customers.target_entity, "contacts");
    let references = customers.references();
    assert_eq!(references.len(), 1);
    assert_eq!(references[0].target, "organisation_id");
    assert_eq!(references[0].mapping, "customers-to-contacts");
}

#[test]
fn forward_converts_every_type_into_the_target_representation() {
    let mapped = apply_forward(plan("customers-to-contacts"), &customer(), &KeepIds).unwrap();
    assert_eq!(
        mapped,
        json!({
            "given_name": "Ann",
            "family_name": "Lee",
            "full_name": "Ann Lee",
            "email": "Ann@Example.com",
            "phone": "+4722334455",
            "country": "NO",
            "state": "blocked",
            "is_vip": true,
            "balance": "1234.5",
            "balance_minor": 123450,
            "date_of_birth": "1990-02-28",
            "currency": "NOK",
            "organisation_id": 7,
            "billing": {"street": "Storgata 1", "city": "Oslo"},
            "shipping_city": "Bergen",
            "notes": "likes tea",
            "last_seen": "2024-05-01T12:00:00Z",
            "source_id": "17"
        })
    );
}

#[test]
fn inverse_gives_the_source_fields_back_in_the_source_representation() {
    let contact = json!({
        "id": "c-1",
        "given_name": "Ann",
        "family_name": "Lee",
        "full_name": "ignored: the rule is one-way",
        "email": "ann@example.com",
        "country": "SE",
        "state": "inactive",
        "is_vip": false,
        "balance": "19.99",
        "balance_minor": 1999,
        "billing": {"city": "Malmö"},
        "shipping_city": "Lund",
        "last_seen": "2024-05-01T12:00:00Z",
        "modified_at": "2024-05-02T00:00:00Z"
    });
    let source = apply_inverse(plan("customers-to-contacts"), &contact, &KeepIds).unwrap();
    assert_eq!(
        source,
        json!({
            "first_name": "Ann",
            "last_name": "Lee",
            "email": "ann@example.com",
            "country": "SWE",
            "status": "I",
            "vip": false,
            "balance": 19.99,
            "address": {"city": "Malmö"},
            "addresses": [{"type": "shipping", "city": "Lund"}],
            "seen_at": "2024-05-01T12:00:00Z"
        })
    );
}

#[test]
fn absent_null_and_empty_stay_distinct() {
    let plan = plan("customers-to-contacts");
    let mapped = apply_forward(
        plan,
        &json!({"first_name": "", "last_name": null, "status": "A", "birthday": ""}),
        &KeepIds,
    )
    .unwrap();
    // An absent field writes nothing; null writes null; an empty text stays empty; an empty
    // date is no date. `vip` is absent and has a default.
    assert_eq!(
        mapped,
        json!({
            "given_name": "",
            "family_name": null,
            "full_name": "",
            "state": "active",
            "is_vip": false,
            "date_of_birth": null
        })
    );
    assert!(mapped.get("email").is_none());
}

#[test]
fn every_failing_rule_is_reported_with_its_rule_source_and_value() {
    let plan = plan("customers-to-contacts");
    let mut record = customer();
    record["email"] = json!("not-an-address");
    record["country"] = json!("Atlantis");
    record["status"] = json!("X");
    record["balance"] = json!("12.345");
    let error = apply_forward(plan, &record, &KeepIds).unwrap_err();
    let found: Vec<(&str, RuleErrorKind)> = error
        .errors
        .iter()
        .map(|e| (e.rule.as_str(), e.kind))
        .collect();
    assert_eq!(
        found,
        [
            ("email", RuleErrorKind::Type),
            ("country", RuleErrorKind::Type),
            ("state", RuleErrorKind::ValueMap),
            ("balance_minor", RuleErrorKind::Template),
        ]
    );
    let email = &error.errors[0];
    assert_eq!(email.mapping, "customers-to-contacts");
    assert_eq!(email.source_path.as_deref(), Some("$.email"));
    assert_eq!(email.value.as_deref(), Some("\"not-an-address\""));
    assert_eq!(
        email.to_string(),
        "mapping `customers-to-contacts`, rule `email` (from `$.email`): not an e-mail address (no `@`) (value \"not-an-address\")"
    );
    assert!(
        error.errors[3]
            .reason
            .contains("more than 2 decimal places")
    );
    assert!(!error.waits_for_references());
    // The next record is not affected.
    assert!(apply_forward(plan, &customer(), &KeepIds).is_ok());
}

#[test]
fn long_values_are_cut_short_in_errors() {
    let mut record = customer();
    record["email"] = json!("x".repeat(500));
    let error = apply_forward(plan("customers-to-contacts"), &record, &KeepIds).unwrap_err();
    let shown = error.errors[0].value.as_deref().unwrap();
    assert!(shown.chars().count() <= 81, "{shown}");
    assert!(shown.ends_with('…'));
}

#[test]
fn references_are_translated_through_the_resolver() {
    let plan = plan("customers-to-contacts");
    let linked = |request: &ReferenceRequest<'_>| {
        assert_eq!(request.mapping, "customers-to-contacts");
        match (request.from_system, request.id) {
            ("shop", id) if *id == json!(7) => Some(json!("org-7")),
            ("books", id) if *id == json!("org-7") => Some(json!(7)),
            _ => None,
        }
    };
    let mapped = apply_forward(plan, &customer(), &linked).unwrap();
    assert_eq!(mapped["organisation_id"], json!("org-7"));
    let back = apply_inverse(plan, &json!({"organisation_id": "org-7"}), &linked).unwrap();
    assert_eq!(back, json!({"company_id": 7}));

    let mut record = customer();
    record["company_id"] = json!(8);
    let error = apply_forward(plan, &record, &linked).unwrap_err();
    assert_eq!(error.errors.len(), 1);
    assert_eq!(error.errors[0].kind, RuleErrorKind::ReferenceNotLinked);
    assert!(error.waits_for_references());
    // A null reference needs no link.
    record["company_id"] = Value::Null;
    assert_eq!(
        apply_forward(plan, &record, &linked).unwrap()["organisation_id"],
        Value::Null
    );
}

/// A shop customer of about 2.4 KB whose `address` nests 100 levels deep, with twenty `x`
/// in its notes.
fn deep_customer() -> Value {
    let mut address = json!({"street": "Storgata 1", "city": "Oslo"});
    for level in 1..100 {
        address = json!({"level": level, "next": address});
    }
    json!({"id": 1, "first_name": "Ann", "notes": "x".repeat(20), "address": address})
}

#[test]
fn a_rule_over_its_bounds_fails_for_that_record_naming_the_mapping_rule_and_bound() {
    let dir = flows_dir();
    let project = Project::load_paths(&dir, &[dir.join("bounds/costly.yaml")]);
    assert!(project.diagnostics.is_empty(), "{:#?}", project.diagnostics);
    let (mut mappings, diagnostics) = tether_engine::mapping::compile_project(&project);
    // Both costly rules compile, with a warning each.
    let warnings: Vec<(&str, u32)> = diagnostics
        .iter()
        .map(|d| (d.code.as_str(), d.line))
        .collect();
    assert_eq!(warnings, [("unbounded-cost", 18), ("unbounded-cost", 21)]);
    assert!(diagnostics.iter().all(|d| !d.is_error()));
    let mapping = mappings.swap_remove("costly-customers").expect("compiled");

    // Eight `replace` steps on twenty characters (2 GB of text) and `$..*..*..*` on a record
    // nested 100 deep (5.7 GB of node paths) fail fast, each with its bound.
    let error = apply_forward(&mapping, &deep_customer(), &KeepIds).unwrap_err();
    let found: Vec<(&str, RuleErrorKind)> = error
        .errors
        .iter()
        .map(|e| (e.rule.as_str(), e.kind))
        .collect();
    assert_eq!(
        found,
        [
            ("notes", RuleErrorKind::Bound),
            ("full_name", RuleErrorKind::Bound)
        ]
    );
    let text = error.to_string();
    assert!(
        text.contains("mapping `costly-customers`, rule `notes` (from `$..*..*..*`): the path `$..*..*..*` would descend more than 64 levels"),
        "{text}"
    );
    assert!(
        text.contains(
            "mapping `costly-customers`, rule `full_name` (from `{{ record.notes | replace("
        ),
        "{text}"
    );
    assert!(
        text.contains("): `replace` would give 2000000 bytes, more than the 262144 bytes one template step may produce"),
        "{text}"
    );

    // The same rules on a small record map as written (`$..*..*..*` finds nothing there).
    let small = json!({"first_name": "Ann", "notes": "ab"});
    assert_eq!(
        apply_forward(&mapping, &small, &KeepIds),
        Ok(json!({"given_name": "Ann", "full_name": "ab"}))
    );
}

fn order() -> Value {
    json!({
        "id": 1001,
        "number": "SO-1001",
        "customer_id": 17,
        "currency": "EUR",
        "total": 60.5,
        "placed_at": "2024-05-01T10:00:00.000+0000",
        "lines": [
            {"sku": "TEA", "qty": 2, "price": 10.25},
            {"sku": "CUP", "qty": 4, "price": 10}
        ]
    })
}

#[test]
fn array_items_have_their_own_rules_both_ways() {
    let plan = plan("orders-to-invoices");
    let mapped = apply_forward(plan, &order(), &KeepIds).unwrap();
    assert_eq!(
        mapped,
        json!({
            "invoice_no": "SO-1001",
            "contact_id": 17,
            "currency": "EUR",
            "total_amount": "60.5",
            "issued_at": "2024-05-01T10:00:00Z",
            "items": [
                {"article": "TEA", "quantity": 2, "unit_price": "10.25", "unit_price_minor": 1025},
                {"article": "CUP", "quantity": 4, "unit_price": "10", "unit_price_minor": 1000}
            ]
        })
    );
    let back = apply_inverse(plan, &mapped, &KeepIds).unwrap();
    assert_eq!(
        back["lines"],
        json!([
            {"sku": "TEA", "qty": 2, "price": 10.25},
            {"sku": "CUP", "qty": 4, "price": 10}
        ])
    );

    let mut broken = order();
    broken["lines"][1] = json!({"qty": "four", "price": 1});
    let error = apply_forward(plan, &broken, &KeepIds).unwrap_err();
    let rules: Vec<&str> = error.errors.iter().map(|e| e.rule.as_str()).collect();
    assert_eq!(rules, ["items[1].article", "items[1].quantity", "items"]);
    assert_eq!(error.errors[0].kind, RuleErrorKind::Missing);
}

#[test]
fn a_required_rule_without_a_value_fails() {
    let mut record = order();
    record.as_object_mut().unwrap().remove("number");
    let error = apply_forward(plan("orders-to-invoices"), &record, &KeepIds).unwrap_err();
    assert_eq!(error.errors[0].rule, "invoice_no");
    assert_eq!(error.errors[0].kind, RuleErrorKind::Missing);
}

#[test]
fn canonical_forms_compare_meanings_not_spellings() {
    let plan = plan("customers-to-contacts");
    let a = json!({
        "email": "Ann@Example.com", "balance": "12.50", "last_seen": "2024-05-01T14:00:00+02:00",
        "country": "no", "organisation_id": 7, "phone": "+47 22 33 44 55"
    });
    let b = json!({
        "phone": "+4722334455", "organisation_id": "7", "country": "NO",
        "last_seen": "2024-05-01T12:00:00Z", "balance": "12.5", "email": " ann@example.com"
    });
    let (ca, cb) = (Canonical::of(plan, &a), Canonical::of(plan, &b));
    assert_eq!(ca, cb);
    assert_eq!(ca.hash(), cb.hash());
    assert_eq!(
        ca.text(),
        r#"{"balance":"12.5","country":"NO","email":"ann@example.com","last_seen":"2024-05-01T12:00:00Z","organisation_id":"7","phone":"+4722334455"}"#
    );
    let changed = json!({"email": "ann@example.org"});
    assert_ne!(
        Canonical::of(plan, &changed).hash(),
        Canonical::of(plan, &json!({"email": "ann@example.com"})).hash()
    );
    // Absent and null differ.
    assert_ne!(
        Canonical::of(plan, &json!({})).hash(),
        Canonical::of(plan, &json!({"email": null})).hash()
    );
    // Fields outside the mapping do not count.
    assert_eq!(
        Canonical::of(plan, &json!({"email": "a@b.c", "unmapped": 1})),
        Canonical::of(plan, &json!({"email": "a@b.c"}))
    );
}

#[test]
fn canonical_forms_of_arrays_follow_the_item_rules() {
    let plan = plan("orders-to-invoices");
    let mapped = apply_forward(plan, &order(), &KeepIds).unwrap();
    let canonical = Canonical::of(plan, &mapped);
    assert_eq!(
        canonical.fields()["items"][0],
        json!({"article": "TEA", "quantity": 2, "unit_price": "10.25", "unit_price_minor": 1025})
    );
}

// ----- round trip of two-way rules on generated records -----

/// The rules that work both ways, with their source paths.
fn two_way_sources(
    plan: &CompiledMapping,
) -> Vec<(&tether_engine::mapping::compile::CompiledRule, &str)> {
    plan.rules
        .rules
        .iter()
        .filter(|r| r.direction == Direction::Both)
        .filter_map(|r| match &r.source {
            RuleSource::Path(p) => Some((r, p.as_str())),
            RuleSource::Template(_) => None,
        })
        .collect()
}

/// The value at a source path, normalised by the rule's type (value-mapped enums as they are).
fn normal_at(
    rule: &tether_engine::mapping::compile::CompiledRule,
    path: &str,
    record: &Value,
) -> Option<Value> {
    let path = tether_engine::mapping::path::RecordPath::parse(path).ok()?;
    let value = path.get(record)?.into_owned();
    if rule.value_map.is_some() || rule.items.is_some() {
        return Some(value);
    }
    Some(types::normalise(rule.data_type, &value))
}

fn optional<T: std::fmt::Debug + Clone + 'static>(
    strategy: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<Option<T>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(None)),
        6 => strategy.prop_map(|v| Some(Some(v))),
    ]
    .boxed()
}

fn put(record: &mut serde_json::Map<String, Value>, key: &str, value: Option<Option<Value>>) {
    match value {
        None => {}
        Some(None) => {
            record.insert(key.into(), Value::Null);
        }
        Some(Some(v)) => {
            record.insert(key.into(), v);
        }
    }
}

fn money() -> impl Strategy<Value = Value> {
    (-10_000_000i64..10_000_000).prop_map(|cents| {
        let text = format!(
            "{}{}.{:02}",
            if cents < 0 { "-" } else { "" },
            cents.abs() / 100,
            cents.abs() % 100
        );
        serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
    })
}

fn customers() -> impl Strategy<Value = Value> {
    let countries: Vec<&'static str> = tether_engine::mapping::country::COUNTRIES
        .iter()
        .map(|c| c.alpha3)
        .collect();
    let names = (optional("\\PC{0,12}"), optional("\\PC{0,12}"));
    let contact = (
        optional("[a-z]{1,8}@[a-z]{1,8}\\.(com|no)"),
        optional("\\+47[2-9][0-9]{7}"),
        optional(proptest::sample::select(countries)),
        optional(proptest::sample::select(vec!["A", "I", "B"])),
        optional(any::<bool>()),
        optional(money()),
    );
    let more = (
        optional(
            (1950i32..2030, 1u32..13, 1u32..29)
                .prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        ),
        optional(proptest::sample::select(vec!["NOK", "EUR", "USD", "SEK"])),
        optional(1i64..1_000_000),
        optional("[A-Za-z0-9 ]{0,10}"),
        optional("[A-Za-z]{1,10}"),
        optional("([a-zA-Z0-9éø]([a-zA-Z0-9éø ,.]{0,10}[a-zA-Z0-9éø])?)?"),
        optional((0i64..4_000_000_000).prop_map(|s| {
            chrono::DateTime::from_timestamp(s, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        })),
    );
    (names, contact, more).prop_map(
        |(
            (first, last),
            (email, phone, country, status, vip, balance),
            (birthday, currency, company, street, shipping, notes, seen),
        )| {
            let mut record = serde_json::Map::new();
            record.insert("id".into(), json!(1));
            put(&mut record, "first_name", first.map(|o| o.map(Value::from)));
            put(&mut record, "last_name", last.map(|o| o.map(Value::from)));
            put(&mut record, "email", email.map(|o| o.map(Value::from)));
            put(&mut record, "phone", phone.map(|o| o.map(Value::from)));
            put(&mut record, "country", country.map(|o| o.map(Value::from)));
            put(&mut record, "status", status.map(|o| o.map(Value::from)));
            put(&mut record, "vip", vip.map(|o| o.map(Value::from)));
            put(&mut record, "balance", balance);
            put(
                &mut record,
                "birthday",
                birthday.map(|o| o.map(Value::from)),
            );
            put(
                &mut record,
                "currency",
                currency.map(|o| o.map(Value::from)),
            );
            put(
                &mut record,
                "company_id",
                company.map(|o| o.map(Value::from)),
            );
            if let Some(Some(street)) = street {
                record.insert("address".into(), json!({"street": street}));
            }
            if let Some(Some(city)) = shipping {
                record.insert(
                    "addresses".into(),
                    json!([{"type": "billing", "city": "X"}, {"type": "shipping", "city": city}]),
                );
            }
            put(&mut record, "notes", notes.map(|o| o.map(Value::from)));
            put(&mut record, "seen_at", seen.map(|o| o.map(Value::from)));
            Value::Object(record)
        },
    )
}

fn orders() -> impl Strategy<Value = Value> {
    let line = (
        "[A-Z]{1,6}",
        0i64..1000,
        money().prop_filter("a price", |v| !v.is_null()),
    )
        .prop_map(|(sku, qty, price)| json!({"sku": sku, "qty": qty, "price": price}));
    (
        "SO-[0-9]{1,6}",
        1i64..100_000,
        proptest::sample::select(vec!["NOK", "EUR", "USD"]),
        money(),
        proptest::collection::vec(line, 0..25),
    )
        .prop_map(|(number, customer, currency, total, lines)| {
            json!({
                "id": 5, "number": number, "customer_id": customer, "currency": currency,
                "total": total, "placed_at": "2024-05-01T10:00:00.000+0000", "lines": lines
            })
        })
}

fn assert_round_trip(plan: &CompiledMapping, record: &Value) -> Result<(), TestCaseError> {
    let forward = apply_forward(plan, record, &KeepIds)
        .map_err(|e| TestCaseError::fail(format!("forward failed: {e}")))?;
    let back = apply_inverse(plan, &forward, &KeepIds)
        .map_err(|e| TestCaseError::fail(format!("inverse failed: {e}")))?;
    for (rule, path) in two_way_sources(plan) {
        let before = normal_at(rule, path, record);
        let after = normal_at(rule, path, &back);
        // A rule with a default writes the default where the source had nothing.
        if rule.default.is_some() && before.as_ref().is_none_or(Value::is_null) {
            continue;
        }
        prop_assert_eq!(
            &before,
            &after,
            "rule `{}` from `{}`, record {}",
            rule.target,
            path,
            record
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn two_way_customer_rules_give_the_source_back(record in customers()) {
        assert_round_trip(plan("customers-to-contacts"), &record)?;
    }

    #[test]
    fn two_way_order_rules_give_the_source_back(record in orders()) {
        assert_round_trip(plan("orders-to-invoices"), &record)?;
    }

    #[test]
    fn canonical_hashes_do_not_depend_on_key_order(record in customers()) {
        let plan = plan("customers-to-contacts");
        let forward = apply_forward(plan, &record, &KeepIds).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut reversed = serde_json::Map::new();
        if let Value::Object(map) = &forward {
            for (k, v) in map.iter().rev() {
                reversed.insert(k.clone(), v.clone());
            }
        }
        prop_assert_eq!(Canonical::of(plan, &forward).hash(), Canonical::of(plan, &Value::Object(reversed)).hash());
    }
}

// ----- tether map -----

fn tether_map(args: &[&str], stdin: &str) -> (String, String, i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("--flows")
        .arg(flows_dir())
        .arg("map")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tether runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    let output = child.wait_with_output().expect("tether ends");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code().unwrap_or(-1),
    )
}

#[test]
fn map_writes_json_lines_in_input_order_and_reports_failures() {
    let input = concat!(
        r#"{"number": "SO-1", "total": 1.5, "currency": "EUR"}"#,
        "\n",
        r#"{"number": "SO-2", "currency": "EURO"}"#,
        "\n",
        "\n",
        "{not json\n",
        r#"{"number": "SO-3", "customer_id": 9}"#,
        "\n",
    );
    let (stdout, stderr, code) = tether_map(&["orders-to-invoices"], input);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            json!({"invoice_no": "SO-1", "currency": "EUR", "total_amount": "1.5"}),
            json!({"invoice_no": "SO-3", "contact_id": 9}),
        ]
    );
    assert!(stderr.contains("record 2 (line 2): mapping `orders-to-invoices`, rule `currency` (from `$.currency`): not an ISO 4217 currency code (value \"EURO\")"), "{stderr}");
    assert!(
        stderr.contains("record 4 (line 4): invalid JSON"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("keep their ids unchanged").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("2 record(s) failed"), "{stderr}");
}

#[test]
fn map_reads_a_json_array_and_maps_backwards() {
    let (stdout, stderr, code) = tether_map(
        &["shop-to-books/customers-to-contacts", "--inverse"],
        r#"[{"email": "a@b.no", "state": "active"}, {"country": "DK"}]"#,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "{\"email\":\"a@b.no\",\"status\":\"A\"}\n{\"country\":\"DNK\"}\n"
    );
}

#[test]
fn map_names_an_unknown_mapping() {
    let (_, stderr, code) = tether_map(&["orders-to-invoice"], "");
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no mapping `orders-to-invoice`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean `orders-to-invoices`?"),
        "{stderr}"
    );
}

// ----- the shipped flows -----

/// A value of a field as its API carries it, generated from the system file.
fn field_value(
    spec: &tether_engine::spec::system::FieldSpec,
    depth: usize,
) -> BoxedStrategy<Value> {
    use tether_engine::spec::system::FieldType as F;
    let countries = || {
        tether_engine::mapping::country::COUNTRIES
            .iter()
            .collect::<Vec<_>>()
    };
    match spec.field_type {
        F::String | F::Url => "[A-Za-z][A-Za-z0-9]{0,10}".prop_map(Value::from).boxed(),
        F::Integer | F::Reference | F::Id => (1i64..1_000_000).prop_map(Value::from).boxed(),
        // Whole numbers: a `number` field may feed an integer field (a CRM's quantity into a
        // shop's); fractions are covered by the fixture flow's properties above.
        F::Number => (0i64..100_000).prop_map(Value::from).boxed(),
        F::Decimal => money().prop_map(|v| Value::String(v.to_string())).boxed(),
        F::Boolean => any::<bool>().prop_map(Value::from).boxed(),
        F::Date => (1950i32..2030, 1u32..13, 1u32..29)
            .prop_map(|(y, m, d)| Value::String(format!("{y:04}-{m:02}-{d:02}")))
            .boxed(),
        F::Datetime => (0i64..4_000_000_000)
            .prop_map(|s| {
                Value::String(
                    chrono::DateTime::from_timestamp(s, 0)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_default(),
                )
            })
            .boxed(),
        F::Email => "[a-z]{1,8}@[a-z]{1,8}\\.com".prop_map(Value::from).boxed(),
        F::Phone => "\\+47[2-9][0-9]{7}".prop_map(Value::from).boxed(),
        F::CountryCode => proptest::sample::select(countries())
            .prop_map(|c| Value::from(c.alpha2))
            .boxed(),
        F::CountryCodeAlpha3 => proptest::sample::select(countries())
            .prop_map(|c| Value::from(c.alpha3))
            .boxed(),
        F::CurrencyCode => proptest::sample::select(vec!["USD", "EUR", "NOK"])
            .prop_map(Value::from)
            .boxed(),
        F::Enum => match &spec.values {
            Some(values) if !values.is_empty() => proptest::sample::select(values.clone())
                .prop_map(Value::from)
                .boxed(),
            _ => "[a-z]{1,6}".prop_map(Value::from).boxed(),
        },
        F::Object => object_value(spec.fields.as_ref(), depth + 1),
        F::Array if depth < 3 => match (&spec.fields, spec.items) {
            (Some(_), _) => {
                proptest::collection::vec(object_value(spec.fields.as_ref(), depth + 1), 0..4)
                    .prop_map(Value::Array)
                    .boxed()
            }
            (None, Some(item)) => {
                let item_spec = tether_engine::spec::system::FieldSpec {
                    field_type: item,
                    ..spec.clone()
                };
                proptest::collection::vec(field_value(&item_spec, depth + 1), 0..4)
                    .prop_map(Value::Array)
                    .boxed()
            }
            (None, None) => Just(Value::Array(Vec::new())).boxed(),
        },
        F::Array => Just(Value::Array(Vec::new())).boxed(),
    }
}

fn object_value(
    fields: Option<&IndexMap<String, tether_engine::spec::system::FieldSpec>>,
    depth: usize,
) -> BoxedStrategy<Value> {
    let Some(fields) = fields else {
        return Just(json!({})).boxed();
    };
    let parts: Vec<BoxedStrategy<(String, Value)>> = fields
        .iter()
        .map(|(name, spec)| {
            let name = name.clone();
            field_value(spec, depth)
                .prop_map(move |v| (name.clone(), v))
                .boxed()
        })
        .collect();
    parts
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
        .boxed()
}

/// Two-way rules whose way back is exact: a plain path, no templates, no inverse value map.
fn exact_two_way(
    plan: &CompiledMapping,
) -> Vec<(&tether_engine::mapping::compile::CompiledRule, &str)> {
    two_way_sources(plan)
        .into_iter()
        .filter(|(rule, _)| {
            matches!(
                rule.inverse,
                tether_engine::mapping::compile::CompiledInverse::Direct
            ) && rule.transform.is_none()
                && rule.items.is_none()
                && rule.value_map.as_ref().is_none_or(|m| {
                    // One-to-one maps only: an `inverse_value_map` may fold values together.
                    let backward = m.backward.as_ref();
                    m.forward.iter().all(|(key, value)| {
                        backward
                            .and_then(|b| {
                                b.get(&tether_engine::mapping::compile::scalar_text(value))
                            })
                            .is_some_and(|back| {
                                tether_engine::mapping::compile::scalar_text(back) == *key
                            })
                    })
                })
        })
        .collect()
}

#[test]
fn shipped_two_way_rules_give_the_source_back() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    let project = Project::load_dir(&dir);
    let (plans, diagnostics) = tether_engine::mapping::compile_project(&project);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    let mut failures = Vec::new();
    for (flow, mapping) in project.mappings() {
        let Some(plan) = plans.get(&mapping.name.value) else {
            continue;
        };
        let Some((source, _)) =
            tether_engine::mapping::compile::entities(&project, &flow.spec, mapping)
        else {
            continue;
        };
        let strategy = object_value(Some(&source.fields), 0);
        let result = runner.run(&strategy, |record| assert_round_trip_exact(plan, &record));
        if let Err(error) = result {
            failures.push(format!("{}: {error}", plan.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn assert_round_trip_exact(plan: &CompiledMapping, record: &Value) -> Result<(), TestCaseError> {
    let forward = apply_forward(plan, record, &KeepIds)
        .map_err(|e| TestCaseError::fail(format!("forward failed: {e}")))?;
    let back = apply_inverse(plan, &forward, &KeepIds)
        .map_err(|e| TestCaseError::fail(format!("inverse failed: {e}")))?;
    for (rule, path) in exact_two_way(plan) {
        let before = normal_at(rule, path, record);
        let after = normal_at(rule, path, &back);
        if rule.default.is_some() && before.as_ref().is_none_or(Value::is_null) {
            continue;
        }
        prop_assert_eq!(&before, &after, "rule `{}` from `{}`", rule.target, path);
    }
    Ok(())
}

fn shipped(name: &str) -> Arc<CompiledMapping> {
    static SHIPPED: OnceLock<IndexMap<String, Arc<CompiledMapping>>> = OnceLock::new();
    SHIPPED
        .get_or_init(|| {
            let project = Project::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("flows"));
            tether_engine::mapping::compile_project(&project).0
        })
        .get(name)
        .cloned()
        .expect("a shipped mapping")
}

/// Writing one list item back (a Keap contact's mobile, its second phone) keeps the other
/// items of the list: the update replaces the list whole.
#[test]
fn an_update_of_one_list_item_keeps_the_others() {
    let plan = shipped("keap-contacts-to-customerp-contacts");
    let current = json!({
        "id": 5,
        "phone_numbers": [
            {"number": "+4791000001", "field": "PHONE1", "type": "Work", "number_e164": "+4791000001"},
            {"number": "+4792000002", "field": "PHONE2", "type": "Mobile"}
        ],
    });
    let erp = json!({"last_name": "Keap", "mobile": "+4795100009"});
    let only: std::collections::HashSet<&str> = ["mobile"].into_iter().collect();
    let body =
        tether_engine::mapping::apply_inverse_selected_onto(&plan, &erp, &KeepIds, &only, &current)
            .expect("maps");
    assert_eq!(
        body,
        json!({"phone_numbers": [
            {"number": "+4791000001", "field": "PHONE1", "type": "Work", "number_e164": "+4791000001"},
            {"number": "+4795100009", "field": "PHONE2", "type": "Mobile"}
        ]})
    );
    // Without a current list, the item is made.
    let body = tether_engine::mapping::apply_inverse_selected_onto(
        &plan,
        &erp,
        &KeepIds,
        &only,
        &json!({}),
    )
    .expect("maps");
    assert_eq!(
        body,
        json!({"phone_numbers": [{"field": "PHONE2", "number": "+4795100009"}]})
    );
}

/// Inside list items a null field and a missing one are the same line.
#[test]
fn null_fields_of_list_items_are_no_fields() {
    let plan = shipped("salesforce-orders-to-customerp-orders");
    let with_null = json!({"lines": [{"product_id": 8, "description": null, "quantity": 2, "unit_price": "89.50"}]});
    let without = json!({"lines": [{"product_id": "8", "quantity": "2.0", "unit_price": 89.5}]});
    assert_eq!(
        Canonical::of(&plan, &with_null).hash(),
        Canonical::of(&plan, &without).hash()
    );
}

/// An instant written back into a date field is written as its date.
#[test]
fn an_instant_written_back_into_a_date_field_is_a_date() {
    let plan = shipped("customerp-orders-to-customwebshop-orders");
    let only: std::collections::HashSet<&str> = ["placed_at"].into_iter().collect();
    let body = tether_engine::mapping::apply_inverse_selected(
        &plan,
        &json!({"placed_at": "2026-03-01T10:30:00Z"}),
        &KeepIds,
        &only,
    )
    .expect("maps");
    assert_eq!(body, json!({"order_date": "2026-03-01"}));
}
