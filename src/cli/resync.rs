//! `tether resync`: a mapping, or one record and its counterpart, read again whatever the
//! cursors say and compared field by field with the other side; what differs is written as
//! a run writes it. `--reset-cursors` clears the mapping's cursors first. Prints what
//! `tether_engine::ops::resync` returns, with the run's summary.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use tether_engine::ops::resync::{self, ResyncRequest};
use tether_engine::ops::{Names, RecordRef};
use tether_engine::spec::load::Project;
use tether_engine::sync::control::LeaseOptions;
use tether_engine::sync::engine::RunOptions;
use tether_sandbox::Sandbox;

use crate::Format;
use crate::cli::run::{StateArg, env_lookup, runtime, start_sandbox};

/// Options of `tether resync`.
#[derive(Debug, Clone, Args)]
pub struct ResyncArgs {
    /// The mapping to resync, or `FLOW/MAPPING`.
    #[arg(long, value_name = "NAME")]
    pub mapping: String,
    /// Only this record (either side of the mapping) and its counterpart.
    #[arg(long, value_name = "SYSTEM:ENTITY:ID")]
    pub record: Option<RecordRef>,
    /// Clear the mapping's stored cursors first: its incremental reads start again from the
    /// beginning.
    #[arg(long)]
    pub reset_cursors: bool,
    #[command(flatten)]
    pub state: StateArg,
    /// Run against the built-in simulators, as `run --sandbox`.
    #[arg(long)]
    pub sandbox: bool,
    /// Ignore the system files' rate limits, as `run --no-rate-limits`.
    #[arg(long)]
    pub no_rate_limits: bool,
    /// How many days the change log keeps a write.
    #[arg(long, env = "TETHER_HISTORY_DAYS", default_value_t = tether_engine::ops::history::DEFAULT_RETENTION_DAYS)]
    pub history_days: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// How long the resync's lease lasts without renewal, as for `tether run`.
const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

pub fn run(flows: &Path, args: ResyncArgs) -> anyhow::Result<u8> {
    let names = Names::of(&Project::load_dir(flows));
    let request = ResyncRequest {
        mapping: args.mapping.clone(),
        record: args.record.clone(),
        reset_cursors: args.reset_cursors,
    };
    // A request the flows do not know is refused before anything is opened.
    resync::check(&request, &names)?;
    let state = args.state.url.clone();
    runtime()?.block_on(async move {
        let sandbox = if args.sandbox {
            Some(start_sandbox(20).await?)
        } else {
            None
        };
        let lookup = env_lookup(sandbox.as_ref().map(Sandbox::env).unwrap_or_default());
        let open_options = tether_engine::sync::open::OpenOptions {
            ignore_rate_limits: args.sandbox || args.no_rate_limits,
        };
        let engine =
            tether_engine::sync::open::open(flows, &state, &lookup, open_options).await?;
        let base = RunOptions {
            lease: Some(LeaseOptions::for_run(&crate::cli::host_name(), LEASE_TTL)),
            history_days: args.history_days,
            ..RunOptions::default()
        };
        let started = Instant::now();
        let outcome = resync::resync(&engine, &names, &request, base).await;
        if let Some(sandbox) = sandbox {
            sandbox
                .shutdown()
                .await
                .context("cannot save the sandbox state")?;
        }
        let outcome = outcome?;
        match args.format {
            Format::Json => {
                crate::cli::emit(&format!("{}\n", serde_json::to_string_pretty(&outcome)?))?
            }
            Format::Text => {
                let what = match &request.record {
                    Some(record) => format!("{record} and its counterpart in {}", request.mapping),
                    None => format!("every record of {}", request.mapping),
                };
                let mut text = format!("resync of {what}\n");
                if request.reset_cursors {
                    text.push_str(&format!(
                        "{} stored cursor{} cleared: incremental reads start again from the beginning\n",
                        outcome.cursors_cleared,
                        if outcome.cursors_cleared == 1 { "" } else { "s" }
                    ));
                }
                text.push_str(&crate::cli::run::summary(&outcome.report, started.elapsed()));
                crate::cli::emit(&text)?;
            }
        }
        Ok(crate::cli::run::exit_code(&outcome.report))
    })
}
