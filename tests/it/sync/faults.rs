//! Runs under faults: APIs that answer 500, 429 and time-outs, or apply a write and lose
//! the answer. Whatever a run could not do is done by a later one: every record ends present
//! exactly once, within a bounded number of runs, and nothing is silently given up.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use tether_engine::sync::report::RunReport;
use tether_sandbox::{FaultKind, FaultSpec, RateLimits, SandboxOptions};

use super::{World, world_with};

const SHOP_CUSTOMERS: &str = "customcrm-customers-to-customwebshop-customers";

fn faults(rate: f64, kinds: &[FaultKind], systems: &[&str]) -> FaultSpec {
    FaultSpec {
        rate,
        kinds: kinds.to_vec(),
        stall: Duration::from_millis(200),
        systems: systems.iter().map(|s| (*s).to_owned()).collect(),
        ..FaultSpec::default()
    }
}

fn options(seed: usize, faults: FaultSpec) -> SandboxOptions {
    SandboxOptions {
        seed,
        faults,
        rate_limits: RateLimits::unlimited(),
        ..SandboxOptions::default()
    }
}

/// Runs until a run writes nothing, stops no mapping and leaves no create whose outcome is
/// unknown, at most `bound` runs; returns the reports of every run.
async fn run_until_settled(w: &World, mappings: &[&str], bound: usize) -> Vec<RunReport> {
    let mut reports = Vec::new();
    for _ in 0..bound {
        let report = w.run(mappings).await;
        let uncertain = w
            .store()
            .await
            .parked(None)
            .await
            .expect("parked")
            .iter()
            .any(|p| p.reason.contains("may have happened"));
        let settled = report.writes() == 0 && report.stopped().is_empty() && !uncertain;
        reports.push(report);
        if settled {
            break;
        }
    }
    reports
}

fn summary(reports: &[RunReport]) -> String {
    reports
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "run {}: {} writes, {} parked, stopped {:?}",
                i + 1,
                r.writes(),
                r.parked(),
                r.stopped().iter().map(|m| &m.mapping).collect::<Vec<_>>()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The CRM answers 500 to 30% of requests: a create it refused is sent again on a later
/// run, never given up, and none is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_the_api_refused_is_sent_again_until_it_lands() {
    let w = world_with(
        "refused-create",
        options(0, faults(0.3, &[FaultKind::ServerError], &["customcrm"])),
    )
    .await;
    for i in 0..30 {
        w.sandbox
            .insert(
                "customwebshop",
                "customers",
                json!({
                    "email": format!("buyer{i:02}@shop.example"),
                    "first_name": "Buyer",
                    "last_name": format!("Number {i:02}"),
                    "company": format!("Buyer {i:02} Ltd"),
                    "addresses": [{ "type": "billing", "line1": "1 Main St", "city": "Oslo", "zip": "0150", "country": "NO" }],
                    "marketing_opt_in": false,
                }),
            )
            .expect("shop customer");
    }
    let reports = run_until_settled(&w, &[SHOP_CUSTOMERS], 8).await;
    let last = reports.last().expect("a run");
    assert!(
        last.writes() == 0 && last.stopped().is_empty(),
        "settles within 8 runs:\n{}",
        summary(&reports)
    );
    for i in 0..30 {
        w.one(
            "customcrm",
            "customers",
            "contactEmail",
            &format!("buyer{i:02}@shop.example"),
        );
    }
    let parked = w.store().await.parked(None).await.expect("parked");
    assert!(parked.is_empty(), "nothing left parked: {parked:#?}");
}

/// Record counts per system and entity.
pub(super) fn census(w: &World) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (system, _) in w.sandbox.systems() {
        for entity in w.sandbox.entities(&system).expect("entities") {
            let records = w.sandbox.records(&system, entity).expect("records");
            let live = records
                .iter()
                .filter(|r| r.get("deleted") != Some(&serde_json::Value::Bool(true)))
                .count();
            counts.insert(format!("{system}/{entity}"), live);
        }
    }
    counts
}

/// All five flows over the full seed data with 15% of every request failing in every way a
/// network and an API fail (429, 500, 503, a stall then 504, a write applied whose answer
/// is lost): within a bounded number of runs the systems hold exactly the records a run
/// without faults makes, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_five_flows_converge_under_faults_with_every_record_exactly_once() {
    const SEED: usize = 12;
    const BOUND: usize = 10;
    let clean = world_with("faults-reference", options(SEED, FaultSpec::default())).await;
    let reference = run_until_settled(&clean, &[], 4).await;
    assert!(
        reference.last().is_some_and(|r| r.writes() == 0),
        "{}",
        summary(&reference)
    );
    let expected = census(&clean);
    let expected_parked = clean
        .store()
        .await
        .parked(None)
        .await
        .expect("parked")
        .len();

    let w = world_with(
        "faults-all",
        options(SEED, faults(0.15, &FaultKind::ALL, &[])),
    )
    .await;
    let reports = run_until_settled(&w, &[], BOUND).await;
    let last = reports.last().expect("a run");
    assert!(
        last.writes() == 0 && last.stopped().is_empty(),
        "settles within {BOUND} runs:\n{}",
        summary(&reports)
    );
    assert_eq!(
        census(&w),
        expected,
        "every record exactly once, as without faults:\n{}",
        summary(&reports)
    );
    let parked = w.store().await.parked(None).await.expect("parked");
    assert_eq!(
        parked.len(),
        expected_parked,
        "only what a run without faults parks stays parked: {parked:#?}"
    );
}
