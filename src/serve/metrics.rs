//! The server's Prometheus metrics: what runs read, wrote and parked per mapping, how long
//! runs took, and the HTTP requests, errors, retries and rate-limit waits per system, fed from
//! each run's [`RunReport`]. `/metrics` renders them in the text exposition format.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use tether_engine::store::RunOutcome;
use tether_engine::sync::report::RunReport;

type Labels = Vec<(&'static str, String)>;

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    records_read: Family<Labels, Counter>,
    records_written: Family<Labels, Counter>,
    records_parked: Family<Labels, Counter>,
    conflicts: Family<Labels, Counter>,
    mappings_skipped: Family<Labels, Counter>,
    runs: Family<Labels, Counter>,
    run_duration: Family<Labels, Histogram>,
    http_requests: Family<Labels, Counter>,
    http_errors: Family<Labels, Counter>,
    http_retries: Family<Labels, Counter>,
    rate_limit_waits: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    webhooks: Family<Labels, Counter>,
    last_run: Gauge<f64, std::sync::atomic::AtomicU64>,
    parked_now: Family<Labels, Gauge>,
    linked_now: Family<Labels, Gauge>,
}

fn run_histogram() -> Histogram {
    // 50 ms to about 14 minutes.
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("tether"),
            records_read: Family::default(),
            records_written: Family::default(),
            records_parked: Family::default(),
            conflicts: Family::default(),
            mappings_skipped: Family::default(),
            runs: Family::default(),
            run_duration: Family::new_with_constructor(run_histogram),
            http_requests: Family::default(),
            http_errors: Family::default(),
            http_retries: Family::default(),
            rate_limit_waits: Family::default(),
            reloads: Family::default(),
            webhooks: Family::default(),
            last_run: Gauge::default(),
            parked_now: Family::default(),
            linked_now: Family::default(),
        };
        metrics.registry.register(
            "records_read",
            "Records read, per mapping and side",
            metrics.records_read.clone(),
        );
        metrics.registry.register(
            "records_written",
            "Records created, updated or deleted, per mapping, side and operation",
            metrics.records_written.clone(),
        );
        metrics.registry.register(
            "records_parked",
            "Records parked by runs (bad values, refused writes, ambiguous matches), per mapping",
            metrics.records_parked.clone(),
        );
        metrics.registry.register(
            "conflicts",
            "Fields edited on both sides and resolved by the conflict policy, per mapping",
            metrics.conflicts.clone(),
        );
        metrics.registry.register(
            "mappings_skipped",
            "Mappings a run skipped because another worker held their lease",
            metrics.mappings_skipped.clone(),
        );
        metrics
            .registry
            .register("runs", "Runs, by trigger and outcome", metrics.runs.clone());
        metrics.registry.register(
            "run_duration_seconds",
            "How long runs took, by trigger",
            metrics.run_duration.clone(),
        );
        metrics.registry.register(
            "http_requests",
            "HTTP requests sent, per system",
            metrics.http_requests.clone(),
        );
        metrics.registry.register(
            "http_errors",
            "HTTP requests that failed, per system",
            metrics.http_errors.clone(),
        );
        metrics.registry.register(
            "http_retries",
            "HTTP requests retried, per system",
            metrics.http_retries.clone(),
        );
        metrics.registry.register(
            "rate_limit_waits",
            "Times a request waited for the system's rate limit, per system",
            metrics.rate_limit_waits.clone(),
        );
        metrics.registry.register(
            "flow_reloads",
            "Reloads of the flow files, by result (ok, rejected)",
            metrics.reloads.clone(),
        );
        metrics.registry.register(
            "webhooks",
            "Change notifications received, per system and result",
            metrics.webhooks.clone(),
        );
        metrics.registry.register(
            "last_run_timestamp_seconds",
            "When the last run finished (Unix time)",
            metrics.last_run.clone(),
        );
        metrics.registry.register(
            "parked_records",
            "Records parked now, per mapping (read from the store at each scrape)",
            metrics.parked_now.clone(),
        );
        metrics.registry.register(
            "linked_pairs",
            "Linked pairs now, per mapping (read from the store at each scrape)",
            metrics.linked_now.clone(),
        );
        metrics
    }

    /// Sets the gauges that describe the store now.
    pub fn observe_store(&self, statuses: &[tether_engine::store::MappingStatus]) {
        for status in statuses {
            let labels = vec![("mapping", status.mapping.clone())];
            self.parked_now
                .get_or_create(&labels)
                .set(i64::try_from(status.parked).unwrap_or(i64::MAX));
            self.linked_now
                .get_or_create(&labels)
                .set(i64::try_from(status.pairs).unwrap_or(i64::MAX));
        }
    }

    /// Counts what a run did.
    pub fn record_run(
        &self,
        trigger: &str,
        report: &RunReport,
        outcome: RunOutcome,
        took: Duration,
    ) {
        for m in &report.mappings {
            let mapping = || m.mapping.clone();
            self.records_read
                .get_or_create(&vec![("mapping", mapping()), ("side", "source".into())])
                .inc_by(m.read_source);
            self.records_read
                .get_or_create(&vec![("mapping", mapping()), ("side", "target".into())])
                .inc_by(m.read_target);
            for (side, op, n) in [
                ("source", "create", m.created_source),
                ("target", "create", m.created_target),
                ("source", "update", m.updated_source),
                ("target", "update", m.updated_target),
                ("source", "delete", m.deleted_source),
                ("target", "delete", m.deleted_target),
            ] {
                self.records_written
                    .get_or_create(&vec![
                        ("mapping", mapping()),
                        ("side", side.into()),
                        ("op", op.into()),
                    ])
                    .inc_by(n);
            }
            self.records_parked
                .get_or_create(&vec![("mapping", mapping())])
                .inc_by(m.parked);
            self.conflicts
                .get_or_create(&vec![("mapping", mapping())])
                .inc_by(m.conflicts);
            if m.held_by.is_some() {
                self.mappings_skipped
                    .get_or_create(&vec![("mapping", mapping())])
                    .inc();
            }
        }
        for s in &report.systems {
            let labels = vec![("system", s.system.clone())];
            self.http_requests.get_or_create(&labels).inc_by(s.requests);
            self.http_errors.get_or_create(&labels).inc_by(s.errors);
            self.http_retries.get_or_create(&labels).inc_by(s.retries);
            self.rate_limit_waits
                .get_or_create(&labels)
                .inc_by(s.rate_limit_waits);
        }
        self.runs
            .get_or_create(&vec![
                ("trigger", trigger.to_owned()),
                ("outcome", outcome.as_str().to_owned()),
            ])
            .inc();
        self.run_duration
            .get_or_create(&vec![("trigger", trigger.to_owned())])
            .observe(took.as_secs_f64());
        self.last_run.set(chrono::Utc::now().timestamp() as f64);
    }

    /// Counts a run that failed before it could report.
    pub fn record_failed_run(&self, trigger: &str) {
        self.runs
            .get_or_create(&vec![
                ("trigger", trigger.to_owned()),
                ("outcome", RunOutcome::Failed.as_str().to_owned()),
            ])
            .inc();
    }

    /// Counts a reload of the flow files (`ok` or `rejected`).
    pub fn record_reload(&self, result: &str) {
        self.reloads
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// Counts a change notification (`accepted`, `refused`, `verified`).
    pub fn record_webhook(&self, system: &str, result: &str) {
        self.webhooks
            .get_or_create(&vec![
                ("system", system.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_engine::sync::report::{MappingReport, SystemReport};

    #[test]
    fn a_run_shows_up_in_the_text_format() {
        let metrics = Metrics::new();
        let report = RunReport {
            mappings: vec![MappingReport {
                mapping: "companies".into(),
                flow: "crm".into(),
                read_source: 12,
                created_target: 3,
                parked: 1,
                ..MappingReport::default()
            }],
            systems: vec![SystemReport {
                system: "keap".into(),
                requests: 7,
                ..SystemReport::default()
            }],
            ..RunReport::default()
        };
        metrics.record_run(
            "schedule",
            &report,
            RunOutcome::Ok,
            Duration::from_millis(120),
        );
        let text = metrics.render();
        assert!(
            text.contains(r#"tether_records_read_total{mapping="companies",side="source"} 12"#),
            "{text}"
        );
        assert!(text.contains(
            r#"tether_records_written_total{mapping="companies",side="target",op="create"} 3"#
        ));
        assert!(text.contains(r#"tether_records_parked_total{mapping="companies"} 1"#));
        assert!(text.contains(r#"tether_http_requests_total{system="keap"} 7"#));
        assert!(text.contains(r#"tether_runs_total{trigger="schedule",outcome="ok"} 1"#));
        assert!(text.contains("tether_run_duration_seconds_count{trigger=\"schedule\"} 1"));
    }
}
