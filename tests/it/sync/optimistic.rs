//! Optimistic checks before updates: a record someone edits while a run goes on (after the
//! run read it, before the run writes it) is not overwritten; the update waits for the next
//! read, where the three-way merge sees both edits and the conflict policy decides.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use tether_engine::sync::engine::RunOptions;

use super::tapped::Tapped;
use super::{COMPANIES, id_of, keap_company, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_made_during_a_run_is_merged_not_overwritten() {
    let w = world("optimistic", 0).await;
    let company = w
        .sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Mid Run AS", "post@midrun.example"),
        )
        .expect("insert");
    w.run(&[COMPANIES]).await;
    let customer = w.one("customerp", "customers", "email", "post@midrun.example");

    // Keap changes the website; while the run is under way, someone sets another one in the
    // ERP.
    w.sandbox
        .update(
            "keap",
            "companies",
            &id_of(&company),
            json!({ "company_name": "Mid Run AS", "website": "https://keap-edit.example" }),
        )
        .expect("keap edit");
    // Someone edits the ERP customer through the API the moment the engine reads it again
    // before updating it, as if the edit landed during the run. The run reads the record
    // once for the merge (the ERP side is read incrementally, so the counterpart of a
    // changed Keap company is fetched by id) and once more just before the update.
    let customer_id = id_of(&customer);
    let engine = w
        .engine_tapping("customerp", |erp| {
            let gets = Arc::new(AtomicUsize::new(0));
            let inner = erp.clone();
            Tapped {
                before_get: Some(Box::new(move |entity, id| {
                    let (gets, inner, customer_id) =
                        (gets.clone(), inner.clone(), customer_id.clone());
                    Box::pin(async move {
                        if entity == "customers"
                            && id == customer_id
                            && gets.fetch_add(1, Ordering::SeqCst) == 1
                        {
                            let edit = json!({ "website": "https://erp-edit.example" });
                            inner.update(entity, id, edit).await?;
                        }
                        Ok(())
                    })
                })),
                ..Tapped::new(erp)
            }
        })
        .await;
    let report = engine
        .run(&RunOptions {
            mappings: vec![COMPANIES.into()],
            max_passes: 1,
            ..RunOptions::default()
        })
        .await
        .expect("run");
    let companies = report
        .mappings
        .iter()
        .find(|m| m.mapping == COMPANIES)
        .expect("report");
    assert_eq!(companies.deferred, 1, "{companies:#?}");
    assert_eq!(companies.updated_target, 0, "{companies:#?}");
    let customer = w.one("customerp", "customers", "email", "post@midrun.example");
    assert_eq!(
        customer["website"], "https://erp-edit.example",
        "the ERP edit made during the run is not overwritten"
    );

    // The next run sees both edits: the conflict policy decides, and the conflict is recorded.
    let report = w.run(&[COMPANIES]).await;
    let companies = report
        .mappings
        .iter()
        .find(|m| m.mapping == COMPANIES)
        .expect("report");
    assert_eq!(companies.conflicts, 1, "{companies:#?}");
    let keap = w.one("keap", "companies", "email_address", "post@midrun.example");
    let customer = w.one("customerp", "customers", "email", "post@midrun.example");
    assert_eq!(
        keap["website"], customer["website"],
        "both sides agree after the merge"
    );
    assert_eq!(w.run(&[COMPANIES]).await.writes(), 0);
}
