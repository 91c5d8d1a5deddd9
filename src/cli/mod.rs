//! Subcommand implementations: each turns parsed arguments into library calls and output.

use crate::{Cli, Command};

mod docs;
mod map;
mod schema;
mod validate;

/// Sets up `tracing` to stderr, filtered by `--log`, `TETHER_LOG` or `RUST_LOG`.
pub fn init_logging(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs one subcommand and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Validate { paths, format } => validate::run(&cli.flows, &paths, format),
        Command::Schema { out, check } => schema::run(&out, check),
        Command::Docs { out, format, check } => docs::run(&cli.flows, &out, format, check),
        Command::Map { mapping, inverse } => map::run(&cli.flows, &mapping, inverse),
    }
}
