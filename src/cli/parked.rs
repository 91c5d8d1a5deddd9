//! `tether parked`: parked records grouped by cause, one by one with their attempts, retried
//! or set aside. A thin layer over `tether_engine::ops::parked`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use tether_engine::ops::parked::{self, Overview, ParkedItem, Selection};
use tether_engine::ops::{Names, RecordRef};
use tether_engine::spec::load::Project;
use tether_engine::store::{Side, Store, StoreUrl};
use tether_sandbox::Sandbox;

use crate::cli::run::{RunArgs, StateArg, env_lookup, runtime, start_sandbox};
use crate::{Format, exit};

/// Options of `tether parked`.
#[derive(Debug, Args)]
pub struct ParkedArgs {
    #[command(subcommand)]
    pub action: Option<ParkedAction>,
    #[command(flatten)]
    pub state: StateArg,
    /// One line per record, with its attempts, instead of one line per cause.
    #[arg(long)]
    pub all: bool,
    /// The records set aside (`tether parked skip`) instead of the parked ones.
    #[arg(long)]
    pub skipped: bool,
    #[command(flatten)]
    pub which: Which,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Which parked records a command is about.
#[derive(Debug, Clone, Args)]
pub struct Which {
    /// Only this mapping's records (`FLOW/MAPPING` accepted).
    #[arg(long, value_name = "NAME")]
    pub mapping: Option<String>,
    /// Only this record: its system, entity and id (`salesforce:Order:8018d000000001pAAA`).
    #[arg(long = "id", value_name = "SYSTEM:ENTITY:ID")]
    pub id: Option<RecordRef>,
}

impl Which {
    fn selection(&self) -> Selection {
        Selection {
            mapping: self.mapping.clone(),
            record: self.id.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ParkedAction {
    /// Try parked records again now: records set aside are tried again too, and the mappings
    /// of the selected records run at once (`--no-run`: on their next run).
    Retry {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        state: StateArg,
        /// Only mark them; the next run (`tether run`, or the server's schedule) tries them.
        #[arg(long)]
        no_run: bool,
        /// Run against the built-in simulators, as `run --sandbox`.
        #[arg(long)]
        sandbox: bool,
        /// Send requests as fast as the systems answer, as `run --no-rate-limits`.
        #[arg(long)]
        no_rate_limits: bool,
        /// Output format of the run.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Set parked records aside until their source changes: recorded as skipped with the
    /// hash of the record now, not tried again while it stays the same (`--skipped` lists
    /// them; `retry` takes them back).
    Skip {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        state: StateArg,
        /// Read the records from the built-in simulators, as `run --sandbox`.
        #[arg(long)]
        sandbox: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub fn run(flows: &Path, args: ParkedArgs) -> anyhow::Result<u8> {
    match args.action {
        None => list(
            flows,
            &args.state.url,
            &args.which,
            args.all,
            args.skipped,
            args.format,
        ),
        Some(ParkedAction::Retry {
            which,
            state,
            no_run,
            sandbox,
            no_rate_limits,
            format,
        }) => retry(
            flows,
            state,
            &which,
            no_run,
            (sandbox, no_rate_limits),
            format,
        ),
        Some(ParkedAction::Skip {
            which,
            state,
            sandbox,
            format,
        }) => skip(flows, &state.url, &which, sandbox, format),
    }
}

/// The grouped view (or every record with `all`), as `tether parked` and `tether status
/// --parked` print it.
pub fn list(
    flows: &Path,
    state: &StoreUrl,
    which: &Which,
    all: bool,
    skipped: bool,
    format: Format,
) -> anyhow::Result<u8> {
    let names = Names::of(&Project::load_dir(flows));
    runtime()?.block_on(async move {
        let store = Store::open(state)
            .await
            .with_context(|| format!("cannot open the state store {state}"))?;
        let selection = which.selection();
        if all || selection != Selection::default() {
            let items = parked::records(&store, &names, &selection, skipped).await?;
            let text = match format {
                Format::Json => format!("{}\n", serde_json::to_string_pretty(&items)?),
                Format::Text => records_text(&items, skipped),
            };
            crate::cli::emit(&text)?;
        } else {
            let overview = parked::overview(&store, &names, skipped).await?;
            let text = match format {
                Format::Json => format!("{}\n", serde_json::to_string_pretty(&overview)?),
                Format::Text => overview_text(&overview, skipped),
            };
            crate::cli::emit(&text)?;
        }
        Ok(exit::OK)
    })
}

fn overview_text(overview: &Overview, skipped: bool) -> String {
    let mut out = String::new();
    let shown = if skipped {
        overview.skipped
    } else {
        overview.parked
    };
    let what = if skipped {
        "set aside until their source changes"
    } else {
        "parked, tried again on every run"
    };
    let _ = writeln!(
        out,
        "{shown} record{} {what}{}",
        if shown == 1 { "" } else { "s" },
        match overview.groups.len() {
            0 => String::new(),
            1 => ", 1 cause".to_owned(),
            n => format!(", {n} causes"),
        }
    );
    for group in &overview.groups {
        let _ = writeln!(out, "\n{}", group.summary);
        let _ = writeln!(out, "  mapping {}", group.mapping);
        let record = match (&group.system, &group.entity) {
            (Some(system), Some(entity)) => {
                format!("{system}:{entity}:{}", group.example.record_id)
            }
            _ => group.example.record_id.clone(),
        };
        let _ = writeln!(out, "  e.g. {record}: {}", group.example.reason);
    }
    if !skipped && overview.skipped > 0 {
        let _ = writeln!(
            out,
            "\n{} more set aside until their source changes: `tether parked --skipped`",
            overview.skipped
        );
    }
    if !overview.groups.is_empty() {
        let _ = writeln!(
            out,
            "\nEvery record: `tether parked --all`; try again: `tether parked retry [--mapping M] [--id SYSTEM:ENTITY:ID]`; set aside: `tether parked skip ...`"
        );
    }
    out
}

fn records_text(items: &[ParkedItem], skipped: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} record{} {}",
        items.len(),
        if items.len() == 1 { "" } else { "s" },
        if skipped { "set aside" } else { "parked" }
    );
    for item in items {
        let p = &item.record;
        let record = match (&item.system, &item.entity) {
            (Some(system), Some(entity)) => format!("{system}:{entity}:{}", p.record_id),
            _ => format!("{} {}", side_name(p.side), p.record_id),
        };
        let _ = writeln!(
            out,
            "\n{record}  ({}, {} attempt{}, parked since {}{})",
            p.mapping,
            p.attempts,
            if p.attempts == 1 { "" } else { "s" },
            p.first_parked_at.format("%Y-%m-%d %H:%M:%S"),
            p.skipped_at
                .map(|at| format!(", set aside {}", at.format("%Y-%m-%d %H:%M:%S")))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "  {}", p.reason);
        if let Some(field) = &p.field {
            let _ = writeln!(
                out,
                "  field {field}{}",
                p.value
                    .as_ref()
                    .map(|v| format!(", value {v}"))
                    .unwrap_or_default()
            );
        }
        for attempt in &item.tries {
            let reason = if attempt.reason == p.reason {
                "the same reason".to_owned()
            } else {
                attempt.reason.clone()
            };
            let _ = writeln!(
                out,
                "  tried {}: {reason}",
                attempt.at.format("%Y-%m-%d %H:%M:%S")
            );
        }
    }
    out
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Source => "source",
        Side::Target => "target",
    }
}

fn retry(
    flows: &Path,
    state: StateArg,
    which: &Which,
    no_run: bool,
    (sandbox, no_rate_limits): (bool, bool),
    format: Format,
) -> anyhow::Result<u8> {
    let names = Names::of(&Project::load_dir(flows));
    let url = state.url.clone();
    let plan = runtime()?.block_on(async {
        let store = Store::open(&url)
            .await
            .with_context(|| format!("cannot open the state store {url}"))?;
        anyhow::Ok(parked::retry(&store, &names, &which.selection()).await?)
    })?;
    if plan.records == 0 {
        crate::cli::emit("no parked record is selected: nothing to retry\n")?;
        return Ok(exit::OK);
    }
    let mut note = format!(
        "{} parked record{} to try again",
        plan.records,
        if plan.records == 1 { "" } else { "s" }
    );
    if plan.unskipped > 0 {
        let _ = write!(note, " ({} of them set aside until now)", plan.unskipped);
    }
    if no_run {
        let _ = writeln!(
            note,
            "; the next run of {} tries them",
            plan.mappings.join(", ")
        );
        crate::cli::emit(&note)?;
        return Ok(exit::OK);
    }
    if format == Format::Text {
        let _ = writeln!(note, "; running {}", plan.mappings.join(", "));
        crate::cli::emit(&note)?;
    }
    crate::cli::run::run(
        flows,
        RunArgs {
            selection: crate::cli::run::Selection {
                flows: Vec::new(),
                mappings: plan.mappings,
            },
            state,
            allow_mass_change: false,
            sandbox,
            no_rate_limits,
            seed: 20,
            history_days: tether_engine::ops::history::DEFAULT_RETENTION_DAYS,
            initial_chunk: tether_engine::sync::engine::DEFAULT_INITIAL_CHUNK,
            format,
        },
        false,
    )
}

fn skip(
    flows: &Path,
    state: &StoreUrl,
    which: &Which,
    sandbox: bool,
    format: Format,
) -> anyhow::Result<u8> {
    let project = Project::load_dir(flows);
    let names = Names::of(&project);
    runtime()?.block_on(async move {
        let simulators = if sandbox {
            Some(start_sandbox(20).await?)
        } else {
            None
        };
        let lookup = env_lookup(simulators.as_ref().map(Sandbox::env).unwrap_or_default());
        let options = tether_engine::sync::open::OpenOptions {
            ignore_rate_limits: sandbox,
        };
        let engine = tether_engine::sync::open::open(flows, state, &lookup, options).await?;
        let outcome = parked::skip(&engine, &names, &which.selection()).await;
        if let Some(simulators) = simulators {
            simulators
                .shutdown()
                .await
                .context("cannot save the sandbox state")?;
        }
        let outcome = outcome?;
        if format == Format::Json {
            crate::cli::emit(&format!("{}\n", serde_json::to_string_pretty(&outcome)?))?;
            return Ok(exit::OK);
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} record{} set aside until their source changes (`tether parked --skipped` lists them)",
            outcome.skipped.len(),
            if outcome.skipped.len() == 1 { "" } else { "s" }
        );
        for gone in &outcome.gone {
            let _ = writeln!(
                out,
                "  {} {} {} no longer exists: taken off the parked list",
                gone.mapping,
                side_name(gone.side),
                gone.record_id
            );
        }
        for unknown in &outcome.unknown {
            let _ = writeln!(
                out,
                "  {} {} {}: the mapping is not loaded; left as it is",
                unknown.mapping,
                side_name(unknown.side),
                unknown.record_id
            );
        }
        crate::cli::emit(&out)?;
        Ok(exit::OK)
    })
}
