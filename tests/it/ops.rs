//! What an operator does day to day, over the simulators: parked records grouped by cause,
//! retried and set aside; a record's history; conflicts held for a person to decide. The
//! library's operations (`tether_engine::ops`) and the commands over them.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use tether_engine::ops::parked::{self, CauseKind, Selection};
use tether_engine::ops::{Names, RecordRef};
use tether_engine::spec::load::Project;
use tether_engine::sync::engine::Engine;
use tether_engine::sync::open::{OpenOptions, open};

use super::sync::{COMPANIES, FlowsCopy, World, edited_flows, flows, id_of, keap_company, world};

async fn engine(w: &World) -> Engine {
    let env: std::collections::HashMap<String, String> = w.sandbox.env().into_iter().collect();
    let lookup = move |name: &str| env.get(name).cloned();
    open(
        &flows(),
        &w.state,
        &lookup,
        OpenOptions {
            ignore_rate_limits: true,
        },
    )
    .await
    .expect("engine opens")
}

fn names() -> Names {
    Names::of(&Project::load_dir(&flows()))
}

/// `tether ARGS` against the world's store and simulators.
fn tether(w: &World, args: &[&str]) -> Command {
    tether_with(w, &flows(), args)
}

/// `tether ARGS` with the flows of `dir`.
fn tether_with(w: &World, dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
    command
        .arg("--flows")
        .arg(dir)
        .args(["--log", "error"])
        .args(args)
        .arg("--state")
        .arg(w.state.to_string())
        .envs(w.sandbox.env());
    command
}

fn output(mut command: Command) -> String {
    let out = command.output().expect("tether runs");
    assert!(
        out.status.success(),
        "tether fails: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A Keap company whose country the ERP cannot take: parked by the companies mapping.
fn bad_company(name: &str, website: &str) -> Value {
    json!({ "company_name": name, "website": website, "address": { "country_code": "XXX" } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_record_retried_after_its_cause_is_fixed_syncs() {
    let w = world("ops-retry", 0).await;
    let bad = w
        .sandbox
        .insert(
            "keap",
            "companies",
            bad_company("Feil Land AS", "https://a.example"),
        )
        .expect("insert");
    w.run(&[COMPANIES]).await;
    let store = w.store().await;
    let parked = store.parked(Some(COMPANIES)).await.expect("parked");
    assert_eq!(parked.len(), 1, "{parked:#?}");
    assert!(
        w.find("customerp", "customers", "name", "Feil Land AS")
            .is_empty()
    );

    // Fixed in Keap, then retried from the command line: its mapping runs at once.
    w.sandbox
        .update(
            "keap",
            "companies",
            &id_of(&bad),
            json!({ "company_name": "Feil Land AS", "address": { "country_code": "DNK" } }),
        )
        .expect("fix");
    let id = format!("keap:companies:{}", id_of(&bad));
    let text = output(tether(
        &w,
        &["parked", "retry", "--id", &id, "--no-rate-limits"],
    ));
    assert!(
        text.contains(&format!(
            "1 parked record to try again; running {COMPANIES}"
        )),
        "{text}"
    );
    let customer = w.one("customerp", "customers", "name", "Feil Land AS");
    assert_eq!(customer["billing_address"]["country"], "DK");
    assert!(
        store
            .parked(Some(COMPANIES))
            .await
            .expect("parked")
            .is_empty(),
        "synced records are off the parked list"
    );
    assert!(
        store
            .parked_attempts(Some(COMPANIES))
            .await
            .expect("attempts")
            .is_empty(),
        "and so are their attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_record_stays_aside_until_its_source_changes() {
    let w = world("ops-skip", 0).await;
    let bad = w
        .sandbox
        .insert(
            "keap",
            "companies",
            bad_company("Til Side AS", "https://a.example"),
        )
        .expect("insert");
    w.run(&[COMPANIES]).await;
    w.run(&[COMPANIES]).await;
    let store = w.store().await;
    let before = store.parked(Some(COMPANIES)).await.expect("parked");
    assert_eq!(before[0].attempts, 2, "tried on every run: {before:#?}");

    let names = names();
    let selection = Selection {
        mapping: Some(COMPANIES.into()),
        record: None,
    };
    let outcome = parked::skip(&engine(&w).await, &names, &selection)
        .await
        .expect("skip");
    assert_eq!(outcome.skipped.len(), 1, "{outcome:#?}");
    let overview = parked::overview(&store, &names, false)
        .await
        .expect("overview");
    assert_eq!((overview.parked, overview.skipped), (0, 1), "{overview:#?}");
    let aside = parked::overview(&store, &names, true)
        .await
        .expect("overview");
    assert_eq!(aside.groups.len(), 1);
    assert_eq!(aside.groups[0].record_ids, vec![id_of(&bad)]);

    // Keap companies are listed whole on every run: the record is read and left alone.
    for _ in 0..2 {
        let report = w.run(&[COMPANIES]).await;
        assert_eq!(report.parked(), 0, "{report:#?}");
    }
    let still = store.parked(Some(COMPANIES)).await.expect("parked");
    assert_eq!(still.len(), 1, "recorded, not lost");
    assert!(still[0].is_skipped());
    assert_eq!(
        still[0].attempts, 2,
        "not tried while unchanged: {still:#?}"
    );
    let listed = output(tether(&w, &["parked", "--skipped"]));
    assert!(
        listed.contains("1 record set aside until their source changes")
            && listed.contains(&format!("keap:companies:{}", id_of(&bad))),
        "{listed}"
    );

    // Edited (still with the bad country): tried again, parked again, no longer aside.
    w.sandbox
        .update(
            "keap",
            "companies",
            &id_of(&bad),
            json!({ "company_name": "Til Side AS", "website": "https://b.example" }),
        )
        .expect("edit");
    let report = w.run(&[COMPANIES]).await;
    assert_eq!(report.parked(), 1, "{report:#?}");
    let again = store.parked(Some(COMPANIES)).await.expect("parked");
    assert!(!again[0].is_skipped(), "{again:#?}");
    assert_eq!(again[0].attempts, 3);
    let tries = store
        .parked_attempts(Some(COMPANIES))
        .await
        .expect("attempts");
    assert_eq!(tries.len(), 3, "each attempt is kept: {tries:#?}");
    assert!(tries.windows(2).all(|t| t[0].at < t[1].at));
    assert!(tries.iter().all(|t| t.reason == again[0].reason));

    // Fixed: it syncs.
    w.sandbox
        .update(
            "keap",
            "companies",
            &id_of(&bad),
            json!({ "company_name": "Til Side AS", "address": { "country_code": "FIN" } }),
        )
        .expect("fix");
    w.run(&[COMPANIES]).await;
    assert_eq!(
        w.one("customerp", "customers", "name", "Til Side AS")["billing_address"]["country"],
        "FI"
    );
    assert!(
        store
            .parked(Some(COMPANIES))
            .await
            .expect("parked")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_set_aside_and_taken_back_by_retry_is_tried_again() {
    let w = world("ops-unskip", 0).await;
    let bad = w
        .sandbox
        .insert(
            "keap",
            "companies",
            bad_company("Tilbake AS", "https://a.example"),
        )
        .expect("insert");
    w.run(&[COMPANIES]).await;
    let names = names();
    let record: RecordRef = format!("keap:companies:{}", id_of(&bad))
        .parse()
        .expect("record");
    let selection = Selection {
        mapping: None,
        record: Some(record),
    };
    parked::skip(&engine(&w).await, &names, &selection)
        .await
        .expect("skip");
    w.run(&[COMPANIES]).await;
    let store = w.store().await;
    assert_eq!(store.parked(None).await.expect("parked")[0].attempts, 1);

    let plan = parked::retry(&store, &names, &selection)
        .await
        .expect("retry");
    assert_eq!((plan.records, plan.unskipped), (1, 1), "{plan:#?}");
    assert_eq!(plan.mappings, vec![COMPANIES.to_owned()]);
    w.run(&[COMPANIES]).await;
    let parked = store.parked(None).await.expect("parked");
    assert_eq!(
        parked[0].attempts, 2,
        "tried again though unchanged: {parked:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grouped_listing_counts_records_and_the_products_they_name() {
    let w = world("ops-grouped", 20).await;
    w.run(&[]).await;
    let store = w.store().await;
    let all = store.parked(None).await.expect("parked");
    assert!(!all.is_empty(), "the seed data parks order lines");
    let overview = parked::overview(&store, &names(), false)
        .await
        .expect("overview");
    assert_eq!(overview.parked, all.len());
    assert_eq!(
        overview.groups.iter().map(|g| g.count).sum::<usize>(),
        all.len(),
        "every parked record is in one group: {overview:#?}"
    );
    for group in &overview.groups {
        let members: HashSet<&str> = all
            .iter()
            .filter(|p| p.mapping == group.mapping && p.side == group.side)
            .map(|p| p.record_id.as_str())
            .collect();
        assert!(
            group
                .record_ids
                .iter()
                .all(|id| members.contains(id.as_str()))
        );
        assert_eq!(group.record_ids.len(), group.count);
    }

    // Salesforce orders: one cause; the products counted are the distinct Product2 records
    // their lines name that no mapping linked to an ERP product.
    let orders: Vec<&str> = all
        .iter()
        .filter(|p| p.mapping == "salesforce-orders-to-customerp-orders")
        .map(|p| p.record_id.as_str())
        .collect();
    let group = overview
        .groups
        .iter()
        .find(|g| g.mapping == "salesforce-orders-to-customerp-orders")
        .expect("a group of Salesforce orders");
    assert_eq!(group.cause, CauseKind::MissingReference);
    assert_eq!(group.count, orders.len(), "one cause: {overview:#?}");
    let linked: HashSet<String> = store
        .links_of_entity("product", "salesforce", "Product2")
        .await
        .expect("links")
        .into_iter()
        .map(|l| l.record.id)
        .collect();
    let named: BTreeSet<String> = w
        .sandbox
        .records("salesforce", "OrderItem")
        .expect("order items")
        .into_iter()
        .filter(|item| {
            item["OrderId"]
                .as_str()
                .is_some_and(|order| orders.contains(&order))
        })
        .filter_map(|item| item["Product2Id"].as_str().map(str::to_owned))
        .filter(|product| !linked.contains(product))
        .collect();
    assert_eq!(
        group.values,
        named.iter().cloned().collect::<Vec<_>>(),
        "{group:#?}"
    );
    assert!(
        group.summary.starts_with(&format!(
            "{} Salesforce Order records name {} Salesforce Product2 records not set up in Customerp",
            orders.len(),
            named.len()
        )),
        "{}",
        group.summary
    );

    // The command prints one paragraph per cause, and the same groups as JSON.
    let text = output(tether(&w, &["parked"]));
    assert!(
        text.starts_with(&format!(
            "{} records parked, tried again on every run, {} causes",
            all.len(),
            overview.groups.len()
        )),
        "{text}"
    );
    assert!(text.contains(&group.summary), "{text}");
    let old_flag = output(tether(&w, &["status", "--parked"]));
    assert_eq!(old_flag, text, "`status --parked` shows the grouped view");
    let json: Value =
        serde_json::from_str(&output(tether(&w, &["parked", "--format", "json"]))).expect("JSON");
    assert_eq!(
        json["groups"].as_array().map(Vec::len),
        Some(overview.groups.len())
    );
    let every: Value = serde_json::from_str(&output(tether(
        &w,
        &["parked", "--all", "--format", "json"],
    )))
    .expect("JSON");
    assert_eq!(every.as_array().map(Vec::len), Some(all.len()));
    assert!(
        every
            .as_array()
            .into_iter()
            .flatten()
            .all(|item| item["tries"].as_array().is_some_and(|t| !t.is_empty())),
        "each record comes with its attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_a_create_an_update_from_each_side_and_a_conflict_in_order() {
    let w = world("ops-history", 0).await;
    let keap = w
        .sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Historie AS", "post@historie.example"),
        )
        .expect("insert");
    w.run(&[COMPANIES]).await;
    let erp = w.one("customerp", "customers", "name", "Historie AS");
    let edit = |system: &str, entity: &str, id: &str, body: Value| {
        w.sandbox.update(system, entity, id, body).expect("edit");
    };
    edit(
        "keap",
        "companies",
        &id_of(&keap),
        json!({ "company_name": "Historie AS", "website": "https://historie.example" }),
    );
    w.run(&[COMPANIES]).await;
    edit(
        "customerp",
        "customers",
        &id_of(&erp),
        json!({ "phone": "+4722000000" }),
    );
    w.run(&[COMPANIES]).await;
    // The same field on both sides: this mapping's policy is target-wins.
    edit(
        "keap",
        "companies",
        &id_of(&keap),
        json!({ "company_name": "Historie AS", "email_address": "keap@historie.example" }),
    );
    edit(
        "customerp",
        "customers",
        &id_of(&erp),
        json!({ "email": "erp@historie.example" }),
    );
    let report = w.run(&[COMPANIES]).await;
    assert_eq!(report.mappings[0].conflicts, 1, "{report:#?}");

    let keap_id = id_of(&keap);
    let json: Value = serde_json::from_str(&output(tether(
        &w,
        &["history", "keap", "companies", &keap_id, "--format", "json"],
    )))
    .expect("JSON");
    let entries = json["entries"].as_array().expect("entries");
    let story: Vec<(String, String, Vec<String>)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["record"]["system"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["changes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c["field"].as_str().unwrap_or_default().to_owned())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(story.len(), 4, "{story:#?}");
    assert_eq!(
        (story[0].0.as_str(), story[0].1.as_str()),
        ("create", "customerp")
    );
    assert!(story[0].2.contains(&"name".to_owned()), "{story:#?}");
    assert_eq!(
        &story[1],
        &("update".into(), "customerp".into(), vec!["website".into()])
    );
    assert_eq!(
        &story[2],
        &("update".into(), "keap".into(), vec!["phone".into()])
    );
    assert_eq!(
        &story[3],
        &("update".into(), "keap".into(), vec!["email".into()])
    );
    let conflict = &entries[3]["changes"][0];
    assert_eq!(conflict["old"], "keap@historie.example");
    assert_eq!(conflict["new"], "erp@historie.example");
    assert!(
        conflict["why"]
            .as_str()
            .is_some_and(|why| why.starts_with("conflict resolution (target-wins)")),
        "{conflict:#?}"
    );
    assert!(
        entries[1]["changes"][0]["why"]
            .as_str()
            .is_some_and(|why| why.starts_with("update from the other side")),
        "{entries:#?}"
    );
    let run_ids: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["run_id"].as_str())
        .collect();
    assert_eq!(run_ids.len(), 4, "each write names its run");

    // The same story from the ERP's side, through the global id.
    let from_erp: Value = serde_json::from_str(&output(tether(
        &w,
        &[
            "history",
            "customerp",
            "customers",
            &id_of(&erp),
            "--format",
            "json",
        ],
    )))
    .expect("JSON");
    assert_eq!(from_erp["entries"], json["entries"]);

    // One field's story.
    let text = output(tether(
        &w,
        &["history", "keap", "companies", &keap_id, "--field", "email"],
    ));
    let writes: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  email: "))
        .collect();
    assert_eq!(writes.len(), 2, "the create and the conflict: {text}");
    assert!(
        writes[1].contains("\"keap@historie.example\" -> \"erp@historie.example\""),
        "{text}"
    );

    // No credential of any system is in the log.
    let log = json.to_string();
    for (name, value) in w.sandbox.env() {
        if name.ends_with("_URL") || value.len() < 6 {
            continue;
        }
        assert!(!log.contains(&value), "{name} appears in the history");
    }

    // Retention: a run told to keep 0 days removes every entry at its end.
    output(tether(
        &w,
        &[
            "run",
            "--no-rate-limits",
            "--history-days",
            "0",
            "--mapping",
            COMPANIES,
        ],
    ));
    let after: Value = serde_json::from_str(&output(tether(
        &w,
        &["history", "keap", "companies", &keap_id, "--format", "json"],
    )))
    .expect("JSON");
    assert_eq!(after["entries"], json!([]));
}

/// The shipped flows with the Keap companies mapping's conflicts held for a person
/// (`conflict: manual`), in a folder removed when dropped.
fn manual_flows() -> FlowsCopy {
    edited_flows(
        "keap-to-customerp.yaml",
        "    conflict: target-wins # Keap companies",
        "    conflict: manual # Keap companies",
    )
}

async fn run_with(w: &World, dir: &Path, mapping: &str) -> tether_engine::sync::report::RunReport {
    super::sync::run_chunked(w, dir, mapping, 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_conflict_is_held_resolved_from_the_command_line_and_written() {
    let w = world("ops-manual", 0).await;
    let flows = manual_flows();
    let keap = w
        .sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Hold AS", "post@hold.example"),
        )
        .expect("insert");
    run_with(&w, &flows.0, COMPANIES).await;
    let erp = w.one("customerp", "customers", "name", "Hold AS");

    // The same field on both sides, and another field on one side.
    w.sandbox
        .update(
            "keap",
            "companies",
            &id_of(&keap),
            json!({ "company_name": "Hold AS", "email_address": "keap@hold.example", "website": "https://hold.example" }),
        )
        .expect("edit keap");
    w.sandbox
        .update(
            "customerp",
            "customers",
            &id_of(&erp),
            json!({ "email": "erp@hold.example" }),
        )
        .expect("edit erp");
    let report = run_with(&w, &flows.0, COMPANIES).await;
    assert_eq!(report.mappings[0].conflicts, 1, "{report:#?}");
    let keap_now = |w: &World| w.one("keap", "companies", "company_name", "Hold AS");
    let erp_now = |w: &World| w.one("customerp", "customers", "name", "Hold AS");
    assert_eq!(
        keap_now(&w)["email_address"],
        "keap@hold.example",
        "left as it is"
    );
    assert_eq!(erp_now(&w)["email"], "erp@hold.example", "left as it is");
    assert_eq!(
        erp_now(&w)["website"],
        "https://hold.example",
        "the record's other fields sync"
    );

    let listed: Value = serde_json::from_str(&output(tether_with(
        &w,
        &flows.0,
        &["conflicts", "--format", "json"],
    )))
    .expect("JSON");
    let held = listed["held"].as_array().expect("held");
    assert_eq!(held.len(), 1, "{listed:#}");
    let conflict = &held[0];
    assert_eq!(
        (
            &conflict["field"],
            &conflict["source_value"],
            &conflict["target_value"],
            &conflict["base_value"]
        ),
        (
            &json!("email"),
            &json!("keap@hold.example"),
            &json!("erp@hold.example"),
            &json!("post@hold.example")
        )
    );
    assert_eq!(conflict["state"], "held");
    assert_eq!(conflict["winner"], Value::Null);
    assert_eq!(
        conflict["source"],
        json!({ "system": "keap", "entity": "companies", "id": id_of(&keap) })
    );

    // Held: later runs leave the field alone and record nothing new.
    let quiet = run_with(&w, &flows.0, COMPANIES).await;
    assert_eq!(
        (quiet.writes(), quiet.mappings[0].conflicts),
        (0, 0),
        "{quiet:#?}"
    );

    let id = conflict["id"].as_str().expect("id").to_owned();
    let said = output(tether_with(
        &w,
        &flows.0,
        &[
            "conflicts",
            "resolve",
            &id,
            "--take",
            "value",
            "agreed@hold.example",
        ],
    ));
    assert!(said.contains("resolved"), "{said}");
    // Resolved once only.
    let again = tether_with(
        &w,
        &flows.0,
        &["conflicts", "resolve", &id, "--take", "source"],
    )
    .output()
    .expect("tether runs");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("only a held conflict can be resolved"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let written = run_with(&w, &flows.0, COMPANIES).await;
    assert_eq!(
        written.writes(),
        2,
        "the choice goes to both sides: {written:#?}"
    );
    assert_eq!(keap_now(&w)["email_address"], "agreed@hold.example");
    assert_eq!(erp_now(&w)["email"], "agreed@hold.example");
    let store = w.store().await;
    let recorded = store
        .conflict(&tether_engine::store::ConflictId::new(id.as_str()))
        .await
        .expect("conflict")
        .expect("recorded");
    assert_eq!(recorded.state, tether_engine::store::ConflictState::Applied);
    assert!(store.open_conflicts(None).await.expect("open").is_empty());

    let story = tether_engine::ops::history::of_record(
        &store,
        &format!("keap:companies:{}", id_of(&keap))
            .parse()
            .expect("record"),
        Some("email"),
    )
    .await
    .expect("history");
    let resolves: Vec<_> = story
        .entries
        .iter()
        .filter(|e| e.action == tether_engine::store::HistoryAction::Resolve)
        .collect();
    assert_eq!(resolves.len(), 2, "{story:#?}");
    assert!(
        resolves
            .iter()
            .all(|e| e.changes[0].why.starts_with("manual resolve"))
    );

    let after = run_with(&w, &flows.0, COMPANIES).await;
    assert_eq!(after.writes(), 0, "{after:#?}");
}

/// The ERP customer of a Keap company, its phone changed behind Tether's back: in the
/// ERP's store, without its modified time moving, so reads by modified time do not see it.
fn phone_changed_quietly(w: &World, name: &str, phone: &str) -> String {
    let erp = w.one("customerp", "customers", "name", name);
    w.sandbox
        .edit_unstamped(
            "customerp",
            "customers",
            &id_of(&erp),
            json!({ "phone": phone }),
        )
        .expect("quiet edit");
    id_of(&erp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_repairs_counterparts_edited_behind_tethers_back() {
    let w = world("ops-resync", 0).await;
    let names = ["Resync Een AS", "Resync Twee AS", "Resync Drie AS"];
    let keap: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            w.sandbox
                .insert(
                    "keap",
                    "companies",
                    keap_company(name, &format!("post{i}@resync.example")),
                )
                .expect("insert")
        })
        .collect();
    w.run(&[COMPANIES]).await;
    let keap_phone = |w: &World, name: &str| {
        w.one("keap", "companies", "company_name", name)["phone_number"].to_string()
    };

    // One record: an incremental run does not see the edit; a resync of the Keap company
    // compares it with its ERP customer and repairs the pair.
    phone_changed_quietly(&w, names[0], "+4722000001");
    let blind = w.run(&[COMPANIES]).await;
    assert_eq!(blind.writes(), 0, "{blind:#?}");
    assert!(!keap_phone(&w, names[0]).contains("22000001"));

    let record = format!("keap:companies:{}", id_of(&keap[0]));
    let said = output(tether(
        &w,
        &[
            "resync",
            "--no-rate-limits",
            "--mapping",
            COMPANIES,
            "--record",
            &record,
        ],
    ));
    assert!(said.contains(&format!("resync of {record}")), "{said}");
    assert!(
        keap_phone(&w, names[0]).contains("22000001"),
        "the pair agrees again: {}",
        keap_phone(&w, names[0])
    );
    assert!(!keap_phone(&w, names[1]).contains("2200000"));

    // Recorded as a run with the trigger `resync`, and in the history with why = resync.
    let store = w.store().await;
    let runs = store.recent_runs(1).await.expect("runs");
    assert_eq!(runs[0].trigger.as_deref(), Some("resync"));
    let story = tether_engine::ops::history::of_record(
        &store,
        &record.parse().expect("record"),
        Some("phone"),
    )
    .await
    .expect("history");
    let last = story.entries.last().expect("an entry");
    assert!(
        last.changes[0].why.starts_with("resync: "),
        "{:#?}",
        story.entries
    );
    assert_eq!(last.run_id.as_ref(), Some(&runs[0].id));

    // The whole mapping: two counterparts edited quietly, both repaired.
    phone_changed_quietly(&w, names[1], "+4722000002");
    phone_changed_quietly(&w, names[2], "+4722000003");
    assert_eq!(w.run(&[COMPANIES]).await.writes(), 0);
    let json: Value = serde_json::from_str(&output(tether(
        &w,
        &[
            "resync",
            "--no-rate-limits",
            "--mapping",
            COMPANIES,
            "--reset-cursors",
            "--format",
            "json",
        ],
    )))
    .expect("JSON");
    assert_eq!(json["request"]["reset_cursors"], true);
    assert!(
        json["cursors_cleared"].as_u64().is_some_and(|n| n > 0),
        "{json:#}"
    );
    assert_eq!(
        json["report"]["mappings"][0]["updated_source"], 2,
        "{json:#}"
    );
    assert!(keap_phone(&w, names[1]).contains("22000002"));
    assert!(keap_phone(&w, names[2]).contains("22000003"));

    // The run after writes nothing.
    let after = w.run(&[COMPANIES]).await;
    assert_eq!(after.writes(), 0, "{after:#?}");

    // A record that is not one of the mapping's entities is refused.
    let wrong = tether(
        &w,
        &[
            "resync",
            "--mapping",
            COMPANIES,
            "--record",
            "keap:contacts:1",
        ],
    )
    .output()
    .expect("tether runs");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("is not a record of"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_shows_a_manual_conflict_held_and_a_resolved_one_as_the_chosen_write() {
    let w = world("ops-plan-held", 0).await;
    let flows = manual_flows();
    let keap = w
        .sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Plan Hold AS", "post@planhold.example"),
        )
        .expect("insert");
    run_with(&w, &flows.0, COMPANIES).await;
    let erp = w.one("customerp", "customers", "name", "Plan Hold AS");
    w.sandbox
        .update(
            "keap",
            "companies",
            &id_of(&keap),
            json!({ "company_name": "Plan Hold AS", "email_address": "keap@planhold.example" }),
        )
        .expect("edit keap");
    w.sandbox
        .update(
            "customerp",
            "customers",
            &id_of(&erp),
            json!({ "email": "erp@planhold.example" }),
        )
        .expect("edit erp");
    let plan = |w: &World| -> (Value, String) {
        let json: Value = serde_json::from_str(&output(tether_with(
            w,
            &flows.0,
            &["plan", "--mapping", COMPANIES, "--format", "json"],
        )))
        .expect("JSON");
        let text = output(tether_with(w, &flows.0, &["plan", "--mapping", COMPANIES]));
        (json, text)
    };
    let actions_of = |json: &Value, kind: &str| -> Vec<Value> {
        json["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["action"] == kind)
            .cloned()
            .collect()
    };

    // Before a run: the plan says the conflict would be held, no winner, both values.
    let (json, text) = plan(&w);
    assert!(actions_of(&json, "conflict").is_empty(), "{json:#}");
    let held = actions_of(&json, "held");
    assert_eq!(held.len(), 1, "{json:#}");
    assert_eq!(held[0]["source"], "keap@planhold.example");
    assert_eq!(held[0]["target"], "erp@planhold.example");
    assert_eq!(held[0]["base"], "post@planhold.example");
    assert_eq!(held[0]["conflict"], Value::Null);
    assert!(held[0].get("winner").is_none());
    assert!(
        text.contains("conflict on email held for a decision, nothing written"),
        "{text}"
    );
    assert!(!text.contains("wins"), "{text}");

    // Held by a run: the plan still shows it held, with its id.
    run_with(&w, &flows.0, COMPANIES).await;
    let (json, _) = plan(&w);
    let held = actions_of(&json, "held");
    assert_eq!(held.len(), 1, "{json:#}");
    let id = held[0]["conflict"].as_str().expect("id").to_owned();
    assert!(actions_of(&json, "update").is_empty(), "{json:#}");

    // Resolved: the plan shows the chosen write, to both sides.
    output(tether_with(
        &w,
        &flows.0,
        &["conflicts", "resolve", &id, "--take", "target"],
    ));
    let (json, text) = plan(&w);
    assert!(actions_of(&json, "held").is_empty(), "{json:#}");
    let resolve = actions_of(&json, "resolve");
    assert_eq!(resolve.len(), 1, "{json:#}");
    assert_eq!(resolve[0]["conflict"], id.as_str());
    assert_eq!(resolve[0]["value"], "erp@planhold.example");
    let updates = actions_of(&json, "update");
    assert_eq!(
        updates.len(),
        1,
        "only the source holds another value: {json:#}"
    );
    assert_eq!(updates[0]["on"], "source");
    assert_eq!(updates[0]["changes"][0]["after"], "erp@planhold.example");
    assert!(
        text.contains(&format!("write the choice made for conflict {id} on email")),
        "{text}"
    );
}

const SHOP_CUSTOMERS: &str = "customerp-customers-to-customwebshop-customers";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_the_erp_refuses_is_parked_with_its_pair_and_sent_again_on_retry() {
    let w = world("ops-refused-delete", 0).await;
    // The shipped flow unlinks on delete; this one deletes an ERP customer whose shop
    // customer was deleted.
    let flows = edited_flows(
        "customerp-to-customwebshop.yaml",
        "    identity: customer\n",
        "    identity: customer\n    deletes: propagate\n",
    );
    let erp = w
        .sandbox
        .insert(
            "customerp",
            "customers",
            json!({ "name": "Referert AS", "email": "post@referert.example", "currency": "NOK", "is_active": true,
                    "billing_address": { "street": "Kaigata 1", "city": "Bergen", "postal_code": "5016", "country": "NO" } }),
        )
        .expect("ERP customer");
    let order = w
        .sandbox
        .insert(
            "customerp",
            "orders",
            json!({ "customer_id": erp["id"], "status": "confirmed", "order_date": "2026-11-02", "currency": "NOK", "total_amount": "0.00", "lines": [] }),
        )
        .expect("ERP order");
    let first = run_with(&w, &flows.0, SHOP_CUSTOMERS).await;
    assert_eq!(
        first.mappings[0].created_target,
        1,
        "{:#?}",
        w.store().await.parked(None).await
    );
    let shop = w.one(
        "customwebshop",
        "customers",
        "email",
        "post@referert.example",
    );
    let store = w.store().await;
    let linked = |pairs: &[tether_engine::store::PairState]| {
        pairs
            .iter()
            .any(|p| p.source_id == id_of(&erp) && p.target_id == id_of(&shop))
    };
    assert!(linked(
        &store.pair_states(SHOP_CUSTOMERS).await.expect("pairs")
    ));

    // The shop customer is deleted; the ERP refuses to delete a customer its orders name.
    w.sandbox
        .delete("customwebshop", "customers", &id_of(&shop))
        .expect("shop delete");
    let report = run_with(&w, &flows.0, SHOP_CUSTOMERS).await;
    assert_eq!(
        (report.mappings[0].deleted_source, report.mappings[0].parked),
        (0, 1),
        "{report:#?}"
    );
    assert_eq!(
        w.one("customerp", "customers", "email", "post@referert.example")["id"],
        erp["id"],
        "the ERP customer and its order stay"
    );
    let parked = store.parked(Some(SHOP_CUSTOMERS)).await.expect("parked");
    assert_eq!(parked.len(), 1, "{parked:#?}");
    assert_eq!(parked[0].record_id, id_of(&erp));
    assert!(
        parked[0].deleting && parked[0].retry_at.is_some(),
        "{parked:#?}"
    );
    assert!(
        parked[0].reason.contains("the delete was refused")
            && parked[0].reason.contains("still_referenced"),
        "{parked:#?}"
    );
    assert!(
        linked(&store.pair_states(SHOP_CUSTOMERS).await.expect("pairs")),
        "the pair stays linked while the delete waits"
    );
    let grouped = output(tether_with(&w, &flows.0, &["parked"]));
    assert!(
        grouped.contains("the pairs stay linked") && grouped.contains("still referenced"),
        "{grouped}"
    );
    // The ERP's order can still be changed: it names a customer that exists.
    w.sandbox
        .update(
            "customerp",
            "orders",
            &id_of(&order),
            json!({ "status": "shipped" }),
        )
        .expect("the order is still editable");

    // The next run does not send the delete again: it waits for its backoff or a retry.
    w.sandbox.reset_request_counts();
    let quiet = run_with(&w, &flows.0, SHOP_CUSTOMERS).await;
    assert_eq!(quiet.writes(), 0, "{quiet:#?}");
    assert_eq!(w.sandbox.request_counts()["customerp"].writes, 0);
    let parked = store.parked(Some(SHOP_CUSTOMERS)).await.expect("parked");
    assert_eq!((parked.len(), parked[0].attempts), (1, 1), "{parked:#?}");

    // Retried while the order still names the customer: refused again, still linked.
    let retried = output(tether_with(
        &w,
        &flows.0,
        &[
            "parked",
            "retry",
            "--id",
            &format!("customerp:customers:{}", id_of(&erp)),
        ],
    ));
    assert!(retried.contains(SHOP_CUSTOMERS), "{retried}");
    let parked = store.parked(Some(SHOP_CUSTOMERS)).await.expect("parked");
    assert_eq!((parked.len(), parked[0].attempts), (1, 2), "{parked:#?}");
    assert!(linked(
        &store.pair_states(SHOP_CUSTOMERS).await.expect("pairs")
    ));

    // Once the order is gone, a retry deletes the customer and forgets the pair.
    w.sandbox
        .delete("customerp", "orders", &id_of(&order))
        .expect("order delete");
    output(tether_with(
        &w,
        &flows.0,
        &[
            "parked",
            "retry",
            "--id",
            &format!("customerp:customers:{}", id_of(&erp)),
        ],
    ));
    assert!(
        w.find("customerp", "customers", "email", "post@referert.example")
            .is_empty(),
        "the ERP customer is deleted"
    );
    assert!(store.parked(None).await.expect("parked").is_empty());
    let pairs = store.pair_states(SHOP_CUSTOMERS).await.expect("pairs");
    assert!(pairs.is_empty(), "{pairs:#?}");
    let after = run_with(&w, &flows.0, SHOP_CUSTOMERS).await;
    assert_eq!(after.writes(), 0, "{after:#?}");
}
