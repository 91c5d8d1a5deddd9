//! `tether run` and `tether plan`: one run over the flows (or its plan), with a progress line
//! on a terminal and a summary of reads, links, creates, updates, deletes, conflicts, parked
//! records and HTTP requests per system. `--sandbox` runs against in-process simulators.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use tether_engine::store::StoreUrl;
use tether_engine::sync::control::LeaseOptions;
use tether_engine::sync::engine::RunOptions;
use tether_engine::sync::report::{Action, RunReport};
use tether_sandbox::{RateLimits, Sandbox, SandboxOptions};

use crate::{Format, exit};

/// Which mappings a run covers.
#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// Only this flow (repeatable).
    #[arg(long = "flow", id = "flow", value_name = "NAME")]
    pub flows: Vec<String>,
    /// Only this mapping, or `FLOW/MAPPING` (repeatable).
    #[arg(long = "mapping", id = "mapping", value_name = "NAME")]
    pub mappings: Vec<String>,
}

/// Where the engine keeps its state.
#[derive(Debug, Clone, Args)]
pub struct StateArg {
    /// The state store: a SQLite file path or `sqlite://PATH`, or `postgres://...`.
    #[arg(
        long = "state",
        env = "TETHER_STATE",
        default_value = ".tether/state.db"
    )]
    pub url: StoreUrl,
}

/// Options of `tether run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub selection: Selection,
    #[command(flatten)]
    pub state: StateArg,
    /// Let a run through that would overwrite or delete more than a mapping's
    /// `max_change_share` of its linked records.
    #[arg(long)]
    pub allow_mass_change: bool,
    /// Run against the built-in simulators of all five systems (started in-process, with
    /// seed data on first use, kept in `.tether/sandbox.json`).
    #[arg(long)]
    pub sandbox: bool,
    /// Send requests as fast as the systems answer, ignoring the system files' rate limits
    /// (for simulators and benchmarks; `--sandbox` implies it).
    #[arg(long)]
    pub no_rate_limits: bool,
    /// With `--sandbox`: records per entity seeded when the simulated data is new.
    #[arg(long, default_value_t = 20)]
    pub seed: usize,
    /// How many days the change log (`tether history`) keeps a write; older ones are removed
    /// at the end of the run.
    #[arg(long, env = "TETHER_HISTORY_DAYS", default_value_t = tether_engine::ops::history::DEFAULT_RETENTION_DAYS)]
    pub history_days: u32,
    /// Records per chunk of an initial sync's large read: each chunk is written and its
    /// cursor stored before the next is read, so memory holds one chunk and a run stopped
    /// midway goes on from the last chunk. 0 reads whole.
    #[arg(long, value_name = "RECORDS", default_value_t = tether_engine::sync::engine::DEFAULT_INITIAL_CHUNK)]
    pub initial_chunk: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// The sandbox state file used by `--sandbox`, next to the default store.
pub fn sandbox_state_path() -> PathBuf {
    PathBuf::from(".tether/sandbox.json")
}

/// Starts the in-process simulators for `--sandbox`, seeding them when their state is new.
pub async fn start_sandbox(seed: usize) -> anyhow::Result<Sandbox> {
    let state = sandbox_state_path();
    let fresh = !state.exists();
    if let Some(parent) = state.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let options = SandboxOptions {
        seed: if fresh { seed } else { 0 },
        state_file: Some(state),
        rate_limits: RateLimits::unlimited(),
        ..SandboxOptions::default()
    };
    Sandbox::start(options)
        .await
        .context("cannot start the sandbox")
}

/// A lookup for `${VAR}` that prefers the sandbox's values, then the process environment.
pub fn env_lookup(overlay: Vec<(String, String)>) -> impl Fn(&str) -> Option<String> {
    let overlay: HashMap<String, String> = overlay.into_iter().collect();
    move |name: &str| {
        overlay
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A spinner on a terminal while the run goes; nothing otherwise.
fn spinner(enabled: bool) -> Option<indicatif::ProgressBar> {
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// How long a run's lease lasts without renewal (renewed every third of it while the run
/// goes on; a killed run's leases are taken over at once by the next run on the same host).
const LEASE_TTL: Duration = Duration::from_secs(30);

pub fn run(flows: &Path, args: RunArgs, dry_run: bool) -> anyhow::Result<u8> {
    let state = args.state.url.clone();
    let state = &state;
    runtime()?.block_on(async move {
        let sandbox = if args.sandbox {
            Some(start_sandbox(args.seed).await?)
        } else {
            None
        };
        let lookup = env_lookup(sandbox.as_ref().map(Sandbox::env).unwrap_or_default());
        let open_options = tether_engine::sync::open::OpenOptions {
            ignore_rate_limits: args.sandbox || args.no_rate_limits,
        };
        let engine = tether_engine::sync::open::open(flows, state, &lookup, open_options).await?;
        let bar = spinner(args.format == Format::Text);
        let progress_bar = bar.clone();
        let options = RunOptions {
            flows: args.selection.flows.clone(),
            mappings: args.selection.mappings.clone(),
            dry_run,
            allow_mass_change: args.allow_mass_change,
            // Overlapping runs on one store (a cron job and a long initial sync, or a run
            // beside `tether serve`) take the same leases as servers do: one syncs an
            // identity while the others skip it and say so.
            lease: (!dry_run).then(|| LeaseOptions::for_run(&crate::cli::host_name(), LEASE_TTL)),
            history_days: args.history_days,
            initial_chunk: args.initial_chunk,
            progress: progress_bar.map(|bar| {
                tether_engine::sync::engine::Progress(std::sync::Arc::new(move |message: &str| {
                    bar.set_message(message.to_owned())
                }))
            }),
            ..RunOptions::default()
        };
        let started = Instant::now();
        let result = engine.run(&options).await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if let Some(sandbox) = sandbox {
            sandbox
                .shutdown()
                .await
                .context("cannot save the sandbox state")?;
        }
        let report = result?;
        match args.format {
            Format::Json => {
                crate::cli::emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?
            }
            Format::Text => crate::cli::emit(&summary(&report, started.elapsed()))?,
        }
        Ok(exit_code(&report))
    })
}

/// A run that stopped a mapping or skipped listed items did not do all it was asked: the
/// exit code says so, as the summary does.
pub(crate) fn exit_code(report: &RunReport) -> u8 {
    if report.stopped().is_empty() && report.mappings.iter().all(|m| m.malformed == 0) {
        exit::OK
    } else {
        exit::FAILED
    }
}

pub(crate) fn summary(report: &RunReport, elapsed: Duration) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let what = if report.dry_run { "plan" } else { "run" };
    let _ = writeln!(
        out,
        "{what}{} finished in {:.1} s, {} pass{}",
        report
            .run_id
            .as_deref()
            .map(|id| format!(" {id}"))
            .unwrap_or_default(),
        elapsed.as_secs_f64(),
        report.passes,
        if report.passes == 1 { "" } else { "es" }
    );
    let width = report
        .mappings
        .iter()
        .map(|m| m.mapping.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let _ = writeln!(
        out,
        "{:width$}  {:>11}  {:>6}  {:>11}  {:>11}  {:>9}  {:>9}  {:>6}",
        "mapping",
        "read s/t",
        "linked",
        "created s/t",
        "updated s/t",
        "deleted",
        "conflicts",
        "parked"
    );
    for m in &report.mappings {
        let _ = writeln!(
            out,
            "{:width$}  {:>11}  {:>6}  {:>11}  {:>11}  {:>9}  {:>9}  {:>6}",
            m.mapping,
            format!("{}/{}", m.read_source, m.read_target),
            m.linked,
            format!("{}/{}", m.created_source, m.created_target),
            format!("{}/{}", m.updated_source, m.updated_target),
            m.deleted_source + m.deleted_target,
            m.conflicts,
            m.parked,
        );
        if m.deferred > 0 {
            let _ = writeln!(
                out,
                "  {} records were edited during the run; their updates wait for the next run",
                m.deferred
            );
        }
        if let Some(held_by) = &m.held_by {
            let _ = writeln!(out, "  skipped: leased to {held_by}");
        }
        if let Some(reason) = &m.stopped {
            let _ = writeln!(out, "  stopped: {reason}");
        }
        if m.malformed > 0 {
            let _ = writeln!(
                out,
                "  {} listed item{} skipped, not records:",
                m.malformed,
                if m.malformed == 1 { "" } else { "s" }
            );
            for example in &m.malformed_examples {
                let _ = writeln!(out, "    {}", listed_problem(m, example));
            }
        }
        if m.stamped_ahead > 0 {
            let _ = writeln!(
                out,
                "  {} record{} stamped later than the system's clock (synced; the cursor does not follow them):",
                m.stamped_ahead,
                if m.stamped_ahead == 1 { "" } else { "s" }
            );
            for example in &m.stamped_ahead_examples {
                let _ = writeln!(out, "    {}", listed_problem(m, example));
            }
        }
    }
    let requests: Vec<String> = report
        .systems
        .iter()
        .map(|s| format!("{} {}", s.system, s.requests))
        .collect();
    if !requests.is_empty() {
        let _ = writeln!(out, "HTTP requests: {}", requests.join(", "));
    }
    let writes = report.writes();
    let stopped = report.stopped();
    let malformed: u64 = report.mappings.iter().map(|m| m.malformed).sum();
    if !stopped.is_empty() {
        let names: Vec<&str> = stopped.iter().map(|m| m.mapping.as_str()).collect();
        let _ = writeln!(
            out,
            "{} mapping{} stopped before finishing ({}): the run is incomplete; they go on from where they stopped next time",
            stopped.len(),
            if stopped.len() == 1 { "" } else { "s" },
            names.join(", ")
        );
    }
    if malformed > 0 {
        let _ = writeln!(
            out,
            "{malformed} listed item{} skipped as malformed (listed above per mapping)",
            if malformed == 1 { " was" } else { "s were" }
        );
    }
    let complete = stopped.is_empty() && malformed == 0;
    if report.dry_run {
        let _ = writeln!(
            out,
            "{} actions planned; nothing was written",
            report.actions.len()
        );
        for action in &report.actions {
            let _ = writeln!(out, "  {}", describe(action));
        }
    } else if writes == 0 && complete {
        let _ = writeln!(out, "nothing changed: every linked record is in sync");
        if report.parked() > 0 {
            let _ = writeln!(
                out,
                "{} records stay parked (see `tether parked`)",
                report.parked()
            );
        }
    } else {
        let _ = writeln!(
            out,
            "{writes} writes, {} records parked (see `tether parked`)",
            report.parked()
        );
    }
    out
}

/// One skipped or suspicious listed item: `system entity id: reason`.
fn listed_problem(
    mapping: &tether_engine::sync::report::MappingReport,
    problem: &tether_engine::sync::report::ListedProblem,
) -> String {
    let side = match problem.side {
        tether_engine::spec::flow::Side::Source => "source",
        tether_engine::spec::flow::Side::Target => "target",
    };
    let id = problem
        .id
        .as_deref()
        .map_or_else(|| "(no id)".to_owned(), |id| format!("{id:?}"));
    format!("{} {side} {id}: {}", mapping.mapping, problem.reason)
}

fn short(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// One line for a planned action.
fn describe(action: &Action) -> String {
    match action {
        Action::Link {
            mapping,
            source_id,
            target_id,
            key,
        } => format!("{mapping}: link source {source_id} to target {target_id} ({key})"),
        Action::Ambiguous {
            mapping,
            side,
            record_id,
            candidates,
            ..
        } => {
            format!(
                "{mapping}: {side:?} {record_id} matches {} records ({}): parked",
                candidates.len(),
                candidates.join(", ")
            )
        }
        Action::Create {
            mapping,
            on,
            from_id,
            fields,
        } => format!(
            "{mapping}: create on {on:?} from {from_id}: {}",
            short(fields)
        ),
        Action::Update {
            mapping,
            on,
            id,
            changes,
        } => format!(
            "{mapping}: update {on:?} {id}: {}",
            changes
                .iter()
                .map(|c| format!(
                    "{} {} -> {}",
                    c.field,
                    c.before.as_ref().map_or("(none)".to_owned(), short),
                    short(&c.after)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Action::Delete { mapping, on, id } => format!("{mapping}: delete {on:?} {id}"),
        Action::Unlink { mapping, side, id } => {
            format!("{mapping}: unlink {side:?} {id} (deleted)")
        }
        Action::Conflict {
            mapping,
            field,
            winner,
            reason,
            ..
        } => format!("{mapping}: conflict on {field}: {winner:?} wins ({reason})"),
        Action::Held {
            mapping,
            field,
            base,
            source,
            target,
            source_id,
            target_id,
            conflict,
        } => {
            let value =
                |v: &Option<serde_json::Value>| v.as_ref().map_or("(none)".to_owned(), short);
            let id =
                |id: &Option<String>| id.as_deref().map(|id| format!(" {id}")).unwrap_or_default();
            format!(
                "{mapping}: conflict on {field} held for a decision, nothing written: source{} {}, target{} {} (last synced {}); {}",
                id(source_id),
                value(source),
                id(target_id),
                value(target),
                value(base),
                match conflict {
                    Some(conflict) => format!(
                        "held since an earlier run: `tether conflicts resolve {conflict} --take source|target|value V`"
                    ),
                    None =>
                        "a run holds it (conflict: manual); then see `tether conflicts`".to_owned(),
                }
            )
        }
        Action::Resolve {
            mapping,
            conflict,
            field,
            value,
        } => format!(
            "{mapping}: write the choice made for conflict {conflict} on {field}: {}",
            value.as_ref().map_or("(none)".to_owned(), short)
        ),
        Action::Park {
            mapping,
            side,
            id,
            reason,
            ..
        } => format!("{mapping}: park {side:?} {id}: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_engine::spec::flow::Side;
    use tether_engine::sync::report::{ListedProblem, MappingReport};

    fn report(mappings: Vec<MappingReport>) -> RunReport {
        RunReport {
            passes: 1,
            mappings,
            ..RunReport::default()
        }
    }

    #[test]
    fn a_stopped_mapping_is_named_and_the_run_is_not_called_in_sync() {
        let stopped = MappingReport {
            mapping: "keap-contacts-to-customerp-contacts".into(),
            stopped: Some("keap contacts: the answer is not JSON".into()),
            ..MappingReport::default()
        };
        let report = report(vec![stopped]);
        let text = summary(&report, Duration::from_secs(1));
        assert!(!text.contains("nothing changed"), "{text}");
        assert!(
            text.contains(
                "1 mapping stopped before finishing (keap-contacts-to-customerp-contacts)"
            ),
            "{text}"
        );
        assert_eq!(exit_code(&report), exit::FAILED);
    }

    #[test]
    fn malformed_listed_items_are_listed_and_fail_the_exit_code() {
        let mapping = MappingReport {
            mapping: "customerp-customers-to-customwebshop-customers".into(),
            malformed: 2,
            malformed_examples: vec![
                ListedProblem {
                    side: Side::Source,
                    id: Some("..".into()),
                    reason: "a dot segment cannot be a record id".into(),
                },
                ListedProblem {
                    side: Side::Source,
                    id: None,
                    reason: "the item has no id".into(),
                },
            ],
            ..MappingReport::default()
        };
        let report = report(vec![mapping]);
        let text = summary(&report, Duration::from_secs(1));
        assert!(!text.contains("nothing changed"), "{text}");
        assert!(
            text.contains("2 listed items skipped, not records"),
            "{text}"
        );
        assert!(
            text.contains("source \"..\": a dot segment cannot be a record id"),
            "{text}"
        );
        assert!(
            text.contains("source (no id): the item has no id"),
            "{text}"
        );
        assert_eq!(exit_code(&report), exit::FAILED);
    }

    #[test]
    fn a_quiet_complete_run_says_nothing_changed_and_succeeds() {
        let report = report(vec![MappingReport {
            mapping: "keap-companies-to-customerp-customers".into(),
            ..MappingReport::default()
        }]);
        let text = summary(&report, Duration::from_secs(1));
        assert!(
            text.contains("nothing changed: every linked record is in sync"),
            "{text}"
        );
        assert_eq!(exit_code(&report), exit::OK);
    }
}
