//! Subcommand implementations: each turns parsed arguments into library calls and output.

use crate::{Cli, Command};

mod check;
pub mod conflicts;
mod docs;
pub mod history;
mod map;
pub mod parked;
pub mod resync;
pub mod run;
pub mod sandbox;
mod schema;
pub mod serve;
mod status;
mod validate;

/// Writes command output to stdout. A closed pipe (`tether validate | head`) ends the output
/// quietly instead of failing: the reader has what it wanted.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Sets up `tracing` to stderr, filtered by `--log`, `TETHER_LOG` or `RUST_LOG`, else
/// `default` (`warn` for commands, `info` for the server), as text or JSON lines.
pub fn init_logging(filter: Option<&str>, default: &str, format: crate::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        crate::LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}

/// Runs one subcommand and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => run::run(&cli.flows, args, false),
        Command::Plan {
            selection,
            state,
            sandbox,
            format,
        } => {
            let args = run::RunArgs {
                selection,
                state,
                allow_mass_change: false,
                sandbox,
                no_rate_limits: false,
                seed: 20,
                history_days: tether_engine::ops::history::DEFAULT_RETENTION_DAYS,
                initial_chunk: tether_engine::sync::engine::DEFAULT_INITIAL_CHUNK,
                format,
            };
            run::run(&cli.flows, args, true)
        }
        Command::Status {
            state,
            parked: true,
            format,
        } => parked::list(
            &cli.flows,
            &state.url,
            &parked::Which {
                mapping: None,
                id: None,
            },
            false,
            false,
            format,
        ),
        Command::Status { state, format, .. } => status::status(&cli.flows, &state.url, format),
        Command::Parked(args) => parked::run(&cli.flows, args),
        Command::History(args) => history::run(args),
        Command::Conflicts(args) => conflicts::run(&cli.flows, args),
        Command::Resync(args) => resync::run(&cli.flows, args),
        Command::Explain {
            state,
            system,
            entity,
            id,
            format,
        } => status::explain(&cli.flows, &state.url, &system, &entity, &id, format),
        Command::Validate { paths, format } => validate::run(&cli.flows, &paths, format),
        Command::Schema { out, check } => schema::run(&out, check),
        Command::Docs { out, format, check } => docs::run(&cli.flows, &out, format, check),
        Command::Sandbox(args) => sandbox::run(args),
        Command::Serve(args) => serve::run(&cli.flows, args),
        Command::Map { mapping, inverse } => map::run(&cli.flows, &mapping, inverse),
        Command::Check { system, format } => check::run(&cli.flows, system.as_deref(), format),
    }
}

/// This machine's host name, for lease holder names (`HOSTNAME`, else `/etc/hostname`).
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tether".to_owned())
}
