//! The server's Prometheus metrics: what runs read, wrote and parked per mapping, how long
//! runs took, and the HTTP requests, errors, retries and rate-limit waits per system, fed from
//! each run's [`RunReport`]; requests for runs and notifications as the endpoints decide them.
//!
//! `/metrics` renders them in the classic Prometheus text format (0.0.4) that every scraper
//! and `promtool` read, or in OpenMetrics when the scraper asks for it ([`Format`]). Every
//! counter is there from the start at zero for the label values known then (each mapping,
//! system, trigger, outcome and result; again after a reload), so an alert on a counter has
//! data before the first event.

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
    run_requests: Family<Labels, Counter>,
    last_run: Gauge<f64, std::sync::atomic::AtomicU64>,
    parked_now: Family<Labels, Gauge>,
    linked_now: Family<Labels, Gauge>,
    allowance_used: Family<Labels, Gauge>,
    allowance_limit: Family<Labels, Gauge>,
    allowance_stops: Family<Labels, Counter>,
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
            run_requests: Family::default(),
            last_run: Gauge::default(),
            parked_now: Family::default(),
            linked_now: Family::default(),
            allowance_used: Family::default(),
            allowance_limit: Family::default(),
            allowance_stops: Family::default(),
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
            "run_requests",
            "Runs asked for through POST /runs and notifications, by trigger and result (queued: \
             a new pending run; joined: covered by the pending run; rate_limited: refused)",
            metrics.run_requests.clone(),
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
        metrics.registry.register(
            "api_allowance_used",
            "Requests of the daily API allowance used, as the system's last answer reported \
             (Sforce-Limit-Info, x-keap-product-quota-used), per system; 0 until reported",
            metrics.allowance_used.clone(),
        );
        metrics.registry.register(
            "api_allowance_limit",
            "The daily API allowance, as the system's last answer reported, per system; 0 \
             until reported",
            metrics.allowance_limit.clone(),
        );
        metrics.registry.register(
            "api_allowance_stops",
            "Runs in which a system's daily allowance (its reserve reached, or spent) stopped \
             the system's work, per system",
            metrics.allowance_stops.clone(),
        );
        metrics
    }

    /// Creates every series known from the loaded flows at zero: per mapping, per system,
    /// per system that takes notifications, and every trigger, outcome and result.
    pub fn init(&self, known: &Known) {
        for mapping in &known.mappings {
            let m = || ("mapping", mapping.clone());
            for side in SIDES {
                let _ = self
                    .records_read
                    .get_or_create(&vec![m(), ("side", side.into())]);
                for op in OPS {
                    let _ = self.records_written.get_or_create(&vec![
                        m(),
                        ("side", side.into()),
                        ("op", op.into()),
                    ]);
                }
            }
            for family in [
                &self.records_parked,
                &self.conflicts,
                &self.mappings_skipped,
            ] {
                let _ = family.get_or_create(&vec![m()]);
            }
            let _ = self.parked_now.get_or_create(&vec![m()]);
            let _ = self.linked_now.get_or_create(&vec![m()]);
        }
        for system in &known.systems {
            for family in [
                &self.http_requests,
                &self.http_errors,
                &self.http_retries,
                &self.rate_limit_waits,
                &self.allowance_stops,
            ] {
                let _ = family.get_or_create(&vec![("system", system.clone())]);
            }
            let _ = self
                .allowance_used
                .get_or_create(&vec![("system", system.clone())]);
            let _ = self
                .allowance_limit
                .get_or_create(&vec![("system", system.clone())]);
        }
        for system in &known.hook_systems {
            for result in HOOK_RESULTS {
                let _ = self
                    .webhooks
                    .get_or_create(&vec![("system", system.clone()), ("result", result.into())]);
            }
        }
        for trigger in TRIGGERS {
            for outcome in OUTCOMES {
                let _ = self.runs.get_or_create(&vec![
                    ("trigger", trigger.into()),
                    ("outcome", outcome.as_str().into()),
                ]);
            }
            let _ = self
                .run_duration
                .get_or_create(&vec![("trigger", trigger.into())]);
        }
        for trigger in REQUEST_TRIGGERS {
            for result in REQUEST_RESULTS {
                let _ = self.run_requests.get_or_create(&vec![
                    ("trigger", trigger.into()),
                    ("result", result.into()),
                ]);
            }
        }
        for result in ["ok", "rejected"] {
            let _ = self.reloads.get_or_create(&vec![("result", result.into())]);
        }
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
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            if let (Some(used), Some(limit)) = (s.allowance_used, s.allowance_limit) {
                self.allowance_used.get_or_create(&labels).set(gauge(used));
                self.allowance_limit
                    .get_or_create(&labels)
                    .set(gauge(limit));
            }
            if s.stopped.is_some() {
                self.allowance_stops.get_or_create(&labels).inc();
            }
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

    /// Counts a request for a run (`queued`, `joined`, `rate_limited`).
    pub fn record_run_request(&self, trigger: &str, result: &str) {
        self.run_requests
            .get_or_create(&vec![
                ("trigger", trigger.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }

    /// Counts a change notification (one of [`HOOK_RESULTS`]); `system` must be a known
    /// system or `unknown`, so that requests cannot make series up.
    pub fn record_webhook(&self, system: &str, result: &str) {
        self.webhooks
            .get_or_create(&vec![
                ("system", system.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }

    /// The metrics in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        match format {
            Format::OpenMetrics => out,
            Format::Classic => to_classic(&out),
        }
    }
}

/// The label values known from the loaded flows.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub mappings: Vec<String>,
    pub systems: Vec<String>,
    /// Systems with a `webhooks` section.
    pub hook_systems: Vec<String>,
}

const SIDES: [&str; 2] = ["source", "target"];
const OPS: [&str; 3] = ["create", "update", "delete"];
/// What starts a run.
pub const TRIGGERS: [&str; 3] = ["schedule", "api", "webhook"];
const OUTCOMES: [RunOutcome; 4] = [
    RunOutcome::Ok,
    RunOutcome::Failed,
    RunOutcome::CircuitBreaker,
    RunOutcome::Cancelled,
];
const REQUEST_TRIGGERS: [&str; 2] = ["api", "webhook"];
const REQUEST_RESULTS: [&str; 3] = ["queued", "joined", "rate_limited"];
/// What becomes of a change notification.
pub const HOOK_RESULTS: [&str; 5] = ["accepted", "refused", "verified", "ignored", "replayed"];

/// The two text formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format, version 0.0.4.
    Classic,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, the classic format otherwise.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let asks = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                let refused = parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if asks {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// OpenMetrics text as the classic format: a counter's `HELP` and `TYPE` name its samples
/// (`x_total`), `unknown` is `untyped`, and there is no `# UNIT` or `# EOF`.
fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, kind)| kind.trim() == "counter")
        .map(|(name, _)| name)
        .collect();
    let family = |name: &str| {
        if counters.contains(name) {
            format!("{name}_total")
        } else {
            name.to_owned()
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some((name, help)) = line.strip_prefix("# HELP ").and_then(|r| r.split_once(' ')) {
            // Classic HELP escapes only backslash and line feed.
            let help = help.replace("\\\"", "\"");
            out.push_str(&format!("# HELP {} {help}\n", family(name)));
        } else if let Some((name, kind)) =
            line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' '))
        {
            let kind = if kind.trim() == "unknown" {
                "untyped"
            } else {
                kind.trim()
            };
            out.push_str(&format!("# TYPE {} {kind}\n", family(name)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
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
        let text = metrics.render(Format::OpenMetrics);
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

    #[test]
    fn the_last_seen_allowance_and_its_stops_are_exported_per_system() {
        let metrics = Metrics::new();
        metrics.init(&Known {
            mappings: vec![],
            systems: vec!["salesforce".into()],
            hook_systems: vec![],
        });
        let before = metrics.render(Format::Classic);
        for line in [
            r#"tether_api_allowance_used{system="salesforce"} 0"#,
            r#"tether_api_allowance_limit{system="salesforce"} 0"#,
            r#"tether_api_allowance_stops_total{system="salesforce"} 0"#,
            "# TYPE tether_api_allowance_used gauge",
        ] {
            assert!(before.lines().any(|l| l == line), "{line} in:\n{before}");
        }
        let report = RunReport {
            systems: vec![SystemReport {
                system: "salesforce".into(),
                requests: 3,
                allowance_used: Some(80),
                allowance_limit: Some(100),
                stopped: Some("salesforce: stopped for this run".into()),
                ..SystemReport::default()
            }],
            ..RunReport::default()
        };
        metrics.record_run("schedule", &report, RunOutcome::Ok, Duration::ZERO);
        let after = metrics.render(Format::OpenMetrics);
        for line in [
            r#"tether_api_allowance_used{system="salesforce"} 80"#,
            r#"tether_api_allowance_limit{system="salesforce"} 100"#,
            r#"tether_api_allowance_stops_total{system="salesforce"} 1"#,
        ] {
            assert!(after.lines().any(|l| l == line), "{line} in:\n{after}");
        }
    }

    #[test]
    fn every_counter_starts_at_zero_and_the_classic_format_names_counters_by_samples() {
        let metrics = Metrics::new();
        metrics.init(&Known {
            mappings: vec!["companies".into()],
            systems: vec!["keap".into()],
            hook_systems: vec!["keap".into()],
        });
        let classic = metrics.render(Format::Classic);
        for line in [
            "# TYPE tether_runs_total counter",
            "# HELP tether_runs_total Runs, by trigger and outcome.",
            r#"tether_runs_total{trigger="webhook",outcome="circuit-breaker"} 0"#,
            r#"tether_records_written_total{mapping="companies",side="source",op="delete"} 0"#,
            r#"tether_webhooks_total{system="keap",result="replayed"} 0"#,
            r#"tether_http_errors_total{system="keap"} 0"#,
            r#"tether_run_requests_total{trigger="api",result="rate_limited"} 0"#,
            r#"tether_flow_reloads_total{result="rejected"} 0"#,
            "# TYPE tether_parked_records gauge",
            "# TYPE tether_run_duration_seconds histogram",
        ] {
            assert!(classic.lines().any(|l| l == line), "{line} in:\n{classic}");
        }
        assert!(!classic.contains("# EOF"));
        assert!(!classic.contains("# TYPE tether_runs counter"));
        let openmetrics = metrics.render(Format::OpenMetrics);
        assert!(openmetrics.contains("# TYPE tether_runs counter"));
        assert!(openmetrics.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert_eq!(Format::from_accept(None), Format::Classic);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Classic);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4;q=0.9,*/*;q=0.1")),
            Format::Classic
        );
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text;q=0,text/plain")),
            Format::Classic
        );
        assert!(
            Format::Classic
                .content_type()
                .starts_with("text/plain; version=0.0.4")
        );
    }

    #[test]
    fn classic_help_and_types() {
        let om = "# HELP a_b Say \\\"hi\\\".\n# TYPE a_b counter\na_b_total 1\n# HELP c x.\n# TYPE c unknown\nc 2\n# UNIT d seconds\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP a_b_total Say \"hi\".\n# TYPE a_b_total counter\na_b_total 1\n# HELP c x.\n# TYPE c untyped\nc 2\n"
        );
    }
}
