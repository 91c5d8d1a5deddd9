//! Alerts: after every run, `tether serve` works out which incidents are open (a flow's run
//! failed, a circuit breaker stopped a mapping, a system refused its credentials, a system's
//! allowance runs low, too many records are parked) and posts to the configured webhooks
//! once when an incident opens and once when it clears, never once per run while it lasts.
//! Open incidents are kept in the store, so a restarted server neither alerts again nor
//! forgets a recovery.
//!
//! Which incidents are open and which cleared is decided by pure functions ([`active`],
//! [`decide`]) over the previous incidents, this run's report and the store's parked count;
//! [`after_run`] applies them, and delivery ([`deliver`]) runs in the background with a few
//! retries, so a slow receiver never holds up the sync. Webhook URLs are secrets (Slack's
//! carry their token in the path): only their scheme and host are ever logged.
//!
//! The body is `{"text": "...", "tether": {...}}`: Slack incoming webhooks post `text`
//! (Slack API docs, "Sending messages using incoming webhooks": a JSON payload with a `text`
//! field); other receivers read the structured `tether` object.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};
use tether_engine::store::AlertIncident;
use tether_engine::sync::report::{RunReport, SystemReport};
use tracing::{info, warn};

/// The environment variable with webhook URLs (separated by commas or whitespace).
pub const WEBHOOKS_VAR: &str = "TETHER_ALERT_WEBHOOKS";
/// Delivery attempts of one message to one webhook.
const ATTEMPTS: u32 = 4;
/// The first wait between attempts; doubled after each.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Why the alert settings cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AlertError {
    #[error(
        "alert webhook {0} is not an http or https URL: give the full URL the receiver gave you (https://hooks.slack.com/services/...)"
    )]
    BadUrl(String),
    #[error("--alert-allowance-below must be a percentage between 0 and 100, not {0}")]
    BadPercent(String),
}

/// A webhook URL. It is a secret: `Debug` and [`Webhook::redacted`] show only its scheme
/// and host.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook(reqwest::Url);

impl Webhook {
    pub fn parse(text: &str) -> Result<Webhook, AlertError> {
        let url = reqwest::Url::parse(text.trim()).map_err(|_| AlertError::BadUrl(redact(text)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(AlertError::BadUrl(redact(text)));
        }
        Ok(Webhook(url))
    }

    /// `https://hooks.slack.com/…`: what logs may say of it.
    pub fn redacted(&self) -> String {
        format!(
            "{}://{}/…",
            self.0.scheme(),
            self.0.host_str().unwrap_or("?")
        )
    }
}

/// What may be shown of a text given as a URL: its scheme and host when it has them.
fn redact(text: &str) -> String {
    match reqwest::Url::parse(text.trim()) {
        Ok(url) => format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or("?")),
        Err(_) => "(not a URL)".to_owned(),
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Webhook({})", self.redacted())
    }
}

/// The alert settings of a server.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertOptions {
    pub webhooks: Vec<Webhook>,
    /// More parked records than this (all mappings together) is an incident.
    pub parked_above: u64,
    /// A system allowance with less than this share left (percent) is an incident.
    pub allowance_below_percent: f64,
}

impl Default for AlertOptions {
    fn default() -> Self {
        AlertOptions {
            webhooks: Vec::new(),
            parked_above: 100,
            allowance_below_percent: 10.0,
        }
    }
}

impl AlertOptions {
    /// The settings from `--alert-webhook` flags and the environment's list, checked.
    pub fn new(
        flags: &[String],
        env: Option<&str>,
        parked_above: u64,
        allowance_below_percent: f64,
    ) -> Result<AlertOptions, AlertError> {
        if !(allowance_below_percent.is_finite()
            && (0.0..=100.0).contains(&allowance_below_percent))
        {
            return Err(AlertError::BadPercent(allowance_below_percent.to_string()));
        }
        let mut webhooks = Vec::new();
        let listed = env
            .into_iter()
            .flat_map(|v| v.split(|c: char| c == ',' || c.is_whitespace()))
            .chain(flags.iter().map(String::as_str))
            .filter(|s| !s.trim().is_empty());
        for text in listed {
            let webhook = Webhook::parse(text)?;
            if !webhooks.contains(&webhook) {
                webhooks.push(webhook);
            }
        }
        Ok(AlertOptions {
            webhooks,
            parked_above,
            allowance_below_percent,
        })
    }
}

/// An incident as this run shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// Stable across runs: `run-failed:FLOW`, `circuit-breaker:MAPPING`, `auth:SYSTEM`,
    /// `allowance:SYSTEM`, `parked`, `run-failed`.
    pub incident: String,
    pub kind: &'static str,
    pub subject: String,
    pub message: String,
}

/// What one run showed, for the alert rules.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The run's report, or why it could not run at all.
    pub report: Result<&'a RunReport, &'a str>,
    /// The systems the flows know (to tell which one refused its credentials).
    pub systems: &'a [String],
    /// Parked records in the store after the run (all mappings).
    pub parked: u64,
}

const BREAKER_PREFIX: &str = "stopped before writing";
const AUTH_WORDS: &str = "authentication failed";

/// The system a stop message is about: the known system it starts with.
fn system_of<'a>(message: &str, systems: &'a [String]) -> Option<&'a String> {
    systems
        .iter()
        .filter(|s| message.starts_with(s.as_str()))
        .max_by_key(|s| s.len())
}

/// A system's daily allowance as its run report gives it: what is left and the allowance,
/// from the last answer's usage figures (systems whose file has an `allowance`).
fn allowance(system: &SystemReport) -> Option<(u64, u64)> {
    let limit = system.allowance_limit.filter(|limit| *limit > 0)?;
    let used = system.allowance_used?;
    Some((limit.saturating_sub(used), limit))
}

/// The incidents this run shows. Pure.
pub fn active(observed: &Observed<'_>, options: &AlertOptions) -> Vec<Incident> {
    let mut found = Vec::new();
    match observed.report {
        Err(error) => found.push(Incident {
            incident: "run-failed".into(),
            kind: "run-failed",
            subject: "server".into(),
            message: format!("a run could not go on: {error}"),
        }),
        Ok(report) if report.interrupted => {}
        Ok(report) => {
            let mut failed_flows: Vec<(&str, &str)> = Vec::new();
            for m in &report.mappings {
                let Some(stopped) = &m.stopped else { continue };
                if stopped.starts_with(BREAKER_PREFIX) {
                    found.push(Incident {
                        incident: format!("circuit-breaker:{}", m.mapping),
                        kind: "circuit-breaker",
                        subject: m.mapping.clone(),
                        message: format!("the circuit breaker stopped `{}`: {stopped}", m.mapping),
                    });
                    continue;
                }
                if !failed_flows.iter().any(|(f, _)| *f == m.flow) {
                    failed_flows.push((&m.flow, stopped));
                }
                if stopped.contains(AUTH_WORDS)
                    && let Some(system) = system_of(stopped, observed.systems)
                    && !found.iter().any(|i| i.incident == format!("auth:{system}"))
                {
                    found.push(Incident {
                        incident: format!("auth:{system}"),
                        kind: "auth",
                        subject: system.clone(),
                        message: format!("{system} refused Tether's credentials: {stopped}"),
                    });
                }
            }
            for (flow, stopped) in failed_flows {
                found.push(Incident {
                    incident: format!("run-failed:{flow}"),
                    kind: "run-failed",
                    subject: flow.to_owned(),
                    message: format!("a run of flow `{flow}` failed: {stopped}"),
                });
            }
            for system in &report.systems {
                let name = &system.system;
                let low = allowance(system).and_then(|(remaining, limit)| {
                    let left = remaining as f64 / limit as f64 * 100.0;
                    (left < options.allowance_below_percent).then(|| {
                        format!(
                            "{name}'s daily allowance runs low: {remaining} of {limit} requests left ({left:.1}%, alert below {}%)",
                            options.allowance_below_percent
                        )
                    })
                });
                let message = match (&system.stopped, low) {
                    (Some(stopped), _) => Some(format!("{name} took no more requests: {stopped}")),
                    (None, low) => low,
                };
                if let Some(message) = message {
                    found.push(Incident {
                        incident: format!("allowance:{name}"),
                        kind: "allowance",
                        subject: name.clone(),
                        message,
                    });
                }
            }
        }
    }
    if observed.parked > options.parked_above {
        found.push(Incident {
            incident: "parked".into(),
            kind: "parked",
            subject: "parked records".into(),
            message: format!(
                "{} records are parked, more than the alert threshold of {} (see `tether parked`)",
                observed.parked, options.parked_above
            ),
        });
    }
    found
}

/// What changed since the previous run: incidents to alert about and incidents to send a
/// recovery for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub opened: Vec<Incident>,
    pub cleared: Vec<AlertIncident>,
}

/// Whether this run looked at what an open incident is about, so that its absence means it
/// cleared: a run of one flow says nothing about another flow's failure. Pure.
fn looked_at(open: &AlertIncident, observed: &Observed<'_>) -> bool {
    let Ok(report) = observed.report else {
        return open.kind == "parked";
    };
    if report.interrupted {
        return open.kind == "parked";
    }
    let systems: BTreeSet<&str> = report.systems.iter().map(|s| s.system.as_str()).collect();
    match open.kind.as_str() {
        "run-failed" if open.subject == "server" => true,
        "run-failed" => report.mappings.iter().any(|m| m.flow == open.subject),
        "circuit-breaker" => report
            .mappings
            .iter()
            .any(|m| m.mapping == open.subject && m.held_by.is_none()),
        "auth" | "allowance" => systems.contains(open.subject.as_str()),
        _ => true,
    }
}

/// The incidents to open (active now, not open before) and to clear (open before, looked at
/// by this run and not active). Pure.
pub fn decide(open: &[AlertIncident], active: &[Incident], observed: &Observed<'_>) -> Changes {
    Changes {
        opened: active
            .iter()
            .filter(|a| !open.iter().any(|o| o.incident == a.incident))
            .cloned()
            .collect(),
        cleared: open
            .iter()
            .filter(|o| !active.iter().any(|a| a.incident == o.incident) && looked_at(o, observed))
            .cloned()
            .collect(),
    }
}

/// The body of an alert. Pure.
pub fn alert_body(incident: &Incident, worker: &str) -> Value {
    json!({
        "text": format!(":rotating_light: Tether: {}", incident.message),
        "tether": {
            "event": "alert",
            "incident": incident.incident,
            "kind": incident.kind,
            "subject": incident.subject,
            "message": incident.message,
            "worker": worker,
        }
    })
}

/// The body of a recovery. Pure.
pub fn recovery_body(incident: &AlertIncident, worker: &str) -> Value {
    json!({
        "text": format!(":white_check_mark: Tether recovered: {}", incident.message),
        "tether": {
            "event": "recovery",
            "incident": incident.incident,
            "kind": incident.kind,
            "subject": incident.subject,
            "message": incident.message,
            "opened_at": incident.opened_at,
            "worker": worker,
        }
    })
}

/// Posts `body` to every webhook in the background, each with a few attempts and a
/// doubling backoff; failures are logged (with the webhook's host only).
pub fn deliver(client: &reqwest::Client, webhooks: &[Webhook], body: Value) {
    for webhook in webhooks {
        let (client, webhook, body) = (client.clone(), webhook.clone(), body.clone());
        tokio::spawn(async move {
            let mut wait = FIRST_BACKOFF;
            for attempt in 1..=ATTEMPTS {
                let sent = client
                    .post(webhook.0.clone())
                    .json(&body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                let failure = match sent {
                    Ok(response) if response.status().is_success() => return,
                    Ok(response) => format!("answered {}", response.status().as_u16()),
                    // The error's text may hold the URL: only its kind is logged.
                    Err(e) if e.is_timeout() => "no answer in time".to_owned(),
                    Err(e) if e.is_connect() => "connection failed".to_owned(),
                    Err(_) => "the request failed".to_owned(),
                };
                warn!(webhook = %webhook.redacted(), attempt, %failure, "alert not delivered");
                if attempt < ATTEMPTS {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
            warn!(webhook = %webhook.redacted(), "alert given up after {ATTEMPTS} attempts");
        });
    }
}

/// After a run: reads the open incidents and the parked count, decides, records the
/// changes and sends the messages. Errors of the store are logged; the sync goes on.
pub async fn after_run(shared: &crate::serve::Shared, report: Result<&RunReport, &str>) {
    let Some(alerts) = shared.alerts.as_ref() else {
        return;
    };
    let store = &shared.store;
    let open = match store.alert_incidents().await {
        Ok(open) => open,
        Err(error) => {
            warn!(%error, "alerts: cannot read the open incidents");
            return;
        }
    };
    let parked = store
        .parked_counts()
        .await
        .map(|counts| counts.iter().map(|(_, n)| n).sum())
        .unwrap_or(0);
    let systems: Vec<String> = shared.loaded().project.systems.keys().cloned().collect();
    let observed = Observed {
        report,
        systems: &systems,
        parked,
    };
    let changes = decide(&open, &active(&observed, &alerts.options), &observed);
    for incident in changes.opened {
        let record = AlertIncident {
            incident: incident.incident.clone(),
            kind: incident.kind.to_owned(),
            subject: incident.subject.clone(),
            message: incident.message.clone(),
            opened_at: chrono::Utc::now(),
        };
        if let Err(error) = store.open_alert_incident(&record).await {
            warn!(%error, "alerts: cannot record an incident; not alerting it now");
            continue;
        }
        info!(incident = %incident.incident, "alert");
        deliver(
            &alerts.client,
            &alerts.options.webhooks,
            alert_body(&incident, &shared.worker),
        );
    }
    for incident in changes.cleared {
        match store.close_alert_incident(&incident.incident).await {
            // Another worker sent its recovery already.
            Ok(false) => continue,
            Ok(true) => {}
            Err(error) => {
                warn!(%error, "alerts: cannot clear an incident");
                continue;
            }
        }
        info!(incident = %incident.incident, "recovery");
        deliver(
            &alerts.client,
            &alerts.options.webhooks,
            recovery_body(&incident, &shared.worker),
        );
    }
}

/// The alert settings and the client that posts them.
pub struct Alerts {
    pub options: AlertOptions,
    pub client: reqwest::Client,
}

impl Alerts {
    /// `None` without webhooks: nothing is decided or sent.
    pub fn new(options: AlertOptions) -> Option<Alerts> {
        (!options.webhooks.is_empty()).then(|| Alerts {
            options,
            client: reqwest::Client::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_engine::sync::report::{MappingReport, SystemReport};

    fn report(mappings: Vec<MappingReport>, systems: &[&str]) -> RunReport {
        RunReport {
            mappings,
            systems: systems
                .iter()
                .map(|s| SystemReport {
                    system: (*s).to_owned(),
                    requests: 3,
                    ..SystemReport::default()
                })
                .collect(),
            ..RunReport::default()
        }
    }

    fn mapping(name: &str, flow: &str, stopped: Option<&str>) -> MappingReport {
        MappingReport {
            mapping: name.into(),
            flow: flow.into(),
            stopped: stopped.map(str::to_owned),
            ..MappingReport::default()
        }
    }

    fn systems() -> Vec<String> {
        vec!["keap".into(), "customerp".into()]
    }

    fn stored(incident: &Incident) -> AlertIncident {
        AlertIncident {
            incident: incident.incident.clone(),
            kind: incident.kind.to_owned(),
            subject: incident.subject.clone(),
            message: incident.message.clone(),
            opened_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_failing_flow_opens_once_and_clears_once_when_a_run_of_it_succeeds() {
        let options = AlertOptions::default();
        let systems = systems();
        let failing = report(
            vec![mapping(
                "companies",
                "keap-to-customerp",
                Some("customerp GET customers: connection failed: refused"),
            )],
            &["keap"],
        );
        let observed = Observed {
            report: Ok(&failing),
            systems: &systems,
            parked: 0,
        };
        let now = active(&observed, &options);
        assert_eq!(now.len(), 1, "{now:?}");
        assert_eq!(now[0].incident, "run-failed:keap-to-customerp");
        let first = decide(&[], &now, &observed);
        assert_eq!(first.opened.len(), 1);
        // The same failure again: already open, nothing to send.
        let open = vec![stored(&now[0])];
        assert_eq!(decide(&open, &now, &observed), Changes::default());

        // A run of another flow says nothing about it.
        let other = report(
            vec![mapping("orders", "salesforce-to-customerp", None)],
            &[],
        );
        let observed = Observed {
            report: Ok(&other),
            systems: &systems,
            parked: 0,
        };
        assert_eq!(
            decide(&open, &active(&observed, &options), &observed),
            Changes::default()
        );

        // A good run of the flow clears it.
        let good = report(
            vec![mapping("companies", "keap-to-customerp", None)],
            &["keap"],
        );
        let observed = Observed {
            report: Ok(&good),
            systems: &systems,
            parked: 0,
        };
        let cleared = decide(&open, &active(&observed, &options), &observed);
        assert!(cleared.opened.is_empty());
        assert_eq!(cleared.cleared, open);
    }

    #[test]
    fn breakers_credentials_and_parked_records_are_their_own_incidents() {
        let options = AlertOptions {
            parked_above: 5,
            ..AlertOptions::default()
        };
        let systems = systems();
        let run = report(
            vec![
                mapping(
                    "companies",
                    "keap-to-customerp",
                    Some("stopped before writing: this run would overwrite 40 of 50"),
                ),
                mapping(
                    "contacts",
                    "keap-to-customerp",
                    Some("keap GET contacts: authentication failed: 401"),
                ),
            ],
            &["keap"],
        );
        let observed = Observed {
            report: Ok(&run),
            systems: &systems,
            parked: 6,
        };
        let kinds: Vec<String> = active(&observed, &options)
            .into_iter()
            .map(|i| i.incident)
            .collect();
        assert_eq!(
            kinds,
            vec![
                "circuit-breaker:companies",
                "auth:keap",
                "run-failed:keap-to-customerp",
                "parked"
            ]
        );
        let fewer = Observed {
            parked: 5,
            ..observed
        };
        assert!(
            !active(&fewer, &options)
                .iter()
                .any(|i| i.incident == "parked")
        );
    }

    #[test]
    fn a_daily_allowance_below_the_threshold_or_spent_is_an_incident() {
        let system = |used, stopped: Option<&str>| SystemReport {
            system: "salesforce".into(),
            allowance_used: Some(used),
            allowance_limit: Some(15000),
            stopped: stopped.map(str::to_owned),
            ..SystemReport::default()
        };
        assert_eq!(allowance(&system(14600, None)), Some((400, 15000)));
        assert_eq!(allowance(&SystemReport::default()), None);
        let options = AlertOptions::default();
        let incidents = |s: SystemReport| {
            let report = RunReport {
                systems: vec![s],
                ..RunReport::default()
            };
            let observed = Observed {
                report: Ok(&report),
                systems: &[],
                parked: 0,
            };
            active(&observed, &options)
                .into_iter()
                .filter(|i| i.kind == "allowance")
                .map(|i| (i.incident, i.message))
                .collect::<Vec<_>>()
        };
        let low = incidents(system(14600, None));
        assert_eq!(low.len(), 1);
        assert_eq!(low[0].0, "allowance:salesforce");
        assert!(low[0].1.contains("400 of 15000"), "{}", low[0].1);
        assert!(incidents(system(1000, None)).is_empty());
        let spent = incidents(system(1000, Some("daily allowance spent")));
        assert!(
            spent[0].1.contains("daily allowance spent"),
            "{}",
            spent[0].1
        );
    }

    #[test]
    fn a_server_wide_failure_clears_with_the_next_run_that_goes_through() {
        let options = AlertOptions::default();
        let systems = systems();
        let observed = Observed {
            report: Err("the state store does not answer"),
            systems: &systems,
            parked: 0,
        };
        let now = active(&observed, &options);
        assert_eq!(now[0].incident, "run-failed");
        let open = vec![stored(&now[0])];
        let good = report(Vec::new(), &[]);
        let observed = Observed {
            report: Ok(&good),
            systems: &systems,
            parked: 0,
        };
        assert_eq!(decide(&open, &[], &observed).cleared, open);
    }

    #[test]
    fn webhook_urls_are_checked_and_never_shown_whole() {
        let options = AlertOptions::new(
            &["https://hooks.slack.com/services/T0/B0/secret".into()],
            Some("http://127.0.0.1:9/a, http://127.0.0.1:9/a"),
            100,
            10.0,
        )
        .expect("valid");
        assert_eq!(options.webhooks.len(), 2, "duplicates are one webhook");
        let shown = format!("{options:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("https://hooks.slack.com/…"), "{shown}");
        let bad = AlertOptions::new(&["hooks.slack.com/services/x".into()], None, 100, 10.0)
            .expect_err("no scheme");
        assert!(
            bad.to_string().contains("not an http or https URL"),
            "{bad}"
        );
        assert!(!bad.to_string().contains("services/x"), "{bad}");
        assert!(AlertOptions::new(&["ftp://x/y".into()], None, 100, 10.0).is_err());
        assert!(AlertOptions::new(&[], None, 100, 150.0).is_err());
    }

    #[test]
    fn bodies_carry_text_for_slack_and_the_incident_for_other_receivers() {
        let incident = Incident {
            incident: "auth:keap".into(),
            kind: "auth",
            subject: "keap".into(),
            message: "keap refused Tether's credentials".into(),
        };
        let body = alert_body(&incident, "w1");
        assert!(
            body["text"]
                .as_str()
                .is_some_and(|t| t.contains("keap refused"))
        );
        assert_eq!(body["tether"]["event"], "alert");
        assert_eq!(body["tether"]["kind"], "auth");
        let body = recovery_body(&stored(&incident), "w1");
        assert!(
            body["text"]
                .as_str()
                .is_some_and(|t| t.contains("recovered"))
        );
        assert_eq!(body["tether"]["event"], "recovery");
    }
}
