//! The `tether` command line: argument parsing, logging setup and exit codes. Each
//! subcommand is a thin call into the library; `anyhow` carries errors to this edge.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod cli;
mod serve;

/// Tether keeps business records in sync between systems, in both directions, from
/// declarative YAML flow files.
#[derive(Debug, Parser)]
#[command(name = "tether", version, about, long_about = None)]
pub struct Cli {
    /// The flows directory; system files are in its `systems/` folder.
    #[arg(long, global = true, env = "TETHER_FLOWS", default_value = "flows")]
    pub flows: PathBuf,

    /// Log filter (`info`, `debug`, `tether=debug`); also RUST_LOG.
    #[arg(long, global = true, env = "TETHER_LOG")]
    pub log: Option<String>,

    /// Log lines as text, or as JSON objects (one per line, for log collectors).
    #[arg(
        long,
        global = true,
        env = "TETHER_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Output formats for commands whose output a program may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Formats of `tether docs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum DocsFormat {
    #[default]
    Rst,
    Html,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync the flows: both ways, every mapping, until nothing changes.
    Run(cli::run::RunArgs),
    /// Show what `run` would do (links, creates, updates with before and after, deletes,
    /// conflicts), writing nothing.
    Plan {
        #[command(flatten)]
        selection: cli::run::Selection,
        #[command(flatten)]
        state: cli::run::StateArg,
        /// Plan against the built-in simulators, as `run --sandbox` would run.
        #[arg(long)]
        sandbox: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Checks every system the flows use: reachable, authenticated, each entity readable.
    Check {
        /// Check only this system.
        #[arg(long)]
        system: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Per mapping: links, last run and its outcome, cursors, and parked records.
    Status {
        #[command(flatten)]
        state: cli::run::StateArg,
        /// Show only the parked records, grouped by cause (as `tether parked`).
        #[arg(long)]
        parked: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Parked records grouped by cause (`--all`: one by one, with their attempts); `retry`
    /// tries them again now, `skip` sets them aside until their source changes.
    Parked(cli::parked::ParkedArgs),
    /// Conflicts held for a person to decide (the `manual` policy), decided and waiting, and
    /// the latest a policy decided; `resolve` records a choice for the next run to write.
    Conflicts(cli::conflicts::ConflictsArgs),
    /// A record's story across all its counterparts: every write, each field's old and new
    /// value and why, from the change log.
    History(cli::history::HistoryArgs),
    /// Read a mapping (or one record and its counterpart) again whatever the cursors say,
    /// compare every mapped field with the other side and write what differs, as a run does;
    /// `--reset-cursors` restarts the mapping's incremental reads from the beginning.
    Resync(cli::resync::ResyncArgs),
    /// Explain one record: its global id and counterparts, each mapped field with its rule
    /// and last synced value, and any parked reason.
    Explain {
        #[command(flatten)]
        state: cli::run::StateArg,
        /// The system (`keap`).
        system: String,
        /// The entity (`companies`).
        entity: String,
        /// The record's id in that system.
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Check flow and system files and report every problem with its file, line and column.
    Validate {
        /// Files or directories to check (default: the flows directory).
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Generate the dataflow documents of the flows (reStructuredText or HTML).
    Docs {
        /// Directory to write into.
        #[arg(long, default_value = "docs/dataflows")]
        out: PathBuf,
        /// Document format.
        #[arg(long, value_enum, default_value_t)]
        format: DocsFormat,
        /// Only check that the files there are up to date (the `Generated:` line aside).
        #[arg(long)]
        check: bool,
    },
    /// Write the JSON Schemas of flow and system files (used by editors).
    Schema {
        /// Directory to write `flow.schema.json` and `system.schema.json` into.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
        /// Only check that the files there are up to date; exit 1 when they are not.
        #[arg(long)]
        check: bool,
    },
    /// Keep the flows in sync all day: scheduled runs, flow files reloaded when they change,
    /// /health /ready /metrics /status /runs /hooks endpoints, several workers on one store.
    Serve(cli::serve::ServeArgs),
    /// Serve simulators of the five APIs on loopback (seed data, auth, rate limits, faults).
    Sandbox(cli::sandbox::SandboxArgs),
    /// Apply one mapping to records on stdin (JSON Lines or a JSON array); write the mapped
    /// records to stdout as JSON Lines, in input order. Failed records go to stderr.
    Map {
        /// The mapping's name, or `FLOW/MAPPING` where names repeat.
        mapping: String,
        /// Map target records back to source fields.
        #[arg(long)]
        inverse: bool,
    },
}

/// Exit codes by failure class.
pub mod exit {
    pub const OK: u8 = 0;
    /// Invalid flows, failed records, stale files.
    pub const FAILED: u8 = 1;
    /// Wrong arguments.
    pub const USAGE: u8 = 2;
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let default_log = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    cli::init_logging(cli.log.as_deref(), default_log, cli.log_format);
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}
