//! `tether sandbox`: serves the simulators of customcrm, customerp, customwebshop, keap and
//! salesforce on `port_base + 1` to `+ 5`, prints where they are, and stays up until Ctrl-C
//! or SIGTERM (saving the state file, if any, on the way out).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tether_sandbox::{FaultSpec, RateLimits, Sandbox, SandboxOptions};

use crate::{Format, exit};

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Systems listen on PORT_BASE+1 (customcrm) to PORT_BASE+5 (salesforce); 0 picks free ports.
    #[arg(long, default_value_t = 8700)]
    pub port_base: u16,
    /// Seed N realistic records per entity in each system (when the state is empty).
    #[arg(long, default_value_t = 0)]
    pub seed: usize,
    /// Random seed that makes the seed data reproducible.
    #[arg(long, default_value_t = 1)]
    pub seed_rng: u64,
    /// Keep the simulated data in this JSON file across restarts.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Inject faults, e.g. `rate=0.1,kinds=429+500+timeout,latency=200ms`.
    #[arg(long)]
    pub faults: Option<FaultSpec>,
    /// Print `export NAME=value` lines that point the system files at the sandbox.
    #[arg(long)]
    pub print_env: bool,
    /// Lifetime of Custom CRM access tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,
    /// Lifetime of Salesforce sessions, in seconds.
    #[arg(long, default_value_t = 7200)]
    pub session_ttl: u64,
    /// Serve without the contracts' rate limits (for benchmarks).
    #[arg(long)]
    pub no_rate_limits: bool,
    /// Simulate a Salesforce org that differs from the default:
    /// `no-picklists,no-reduction-orders,hide=Contact.Title+OrderItem.ServiceDate` (State and
    /// Country picklists off, reduction orders off, fields hidden by field-level security).
    #[arg(long, value_name = "PROFILE")]
    pub salesforce_org: Option<tether_sandbox::SalesforceOrg>,
    /// `json` prints one line `{"systems": {...}, "env": {...}}` instead of text lines.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(args: SandboxArgs) -> anyhow::Result<u8> {
    let options = SandboxOptions {
        bind: args.bind,
        port_base: args.port_base,
        seed: args.seed,
        seed_rng: args.seed_rng,
        state_file: args.state,
        faults: args.faults.unwrap_or_default(),
        token_ttl: Duration::from_secs(args.token_ttl),
        session_ttl: Duration::from_secs(args.session_ttl),
        salesforce_generic_login: false,
        salesforce_org: args.salesforce_org.unwrap_or_default(),
        rate_limits: if args.no_rate_limits {
            RateLimits::unlimited()
        } else {
            RateLimits::contract()
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let seed = options.seed;
        let started = std::time::Instant::now();
        let sandbox = Sandbox::start(options)
            .await
            .context("cannot start the sandbox")?;
        if seed > 0 {
            // On stderr, so that stdout stays the list of systems (or the one JSON line).
            let seconds = started.elapsed().as_secs_f64();
            let records = sandbox.record_count();
            let cpu = cpu_seconds().map_or_else(String::new, |cpu| format!(", {cpu:.1} s of CPU"));
            eprintln!(
                "ready in {seconds:.1} s{cpu}: {records} records ({seed} per entity seeded, unless the state file held data; {:.0} records/s)",
                records as f64 / seconds.max(1e-9)
            );
        }
        let mut out = std::io::stdout().lock();
        match args.format {
            Format::Json => {
                let systems: serde_json::Map<String, serde_json::Value> = sandbox
                    .systems()
                    .into_iter()
                    .map(|(system, url)| (system, url.into()))
                    .collect();
                let env: serde_json::Map<String, serde_json::Value> = sandbox
                    .env()
                    .into_iter()
                    .map(|(name, value)| (name, value.into()))
                    .collect();
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"systems": systems, "env": env})
                )?;
            }
            Format::Text => {
                if args.print_env {
                    for (name, value) in sandbox.env() {
                        writeln!(out, "export {name}={value}")?;
                    }
                }
                for (system, url) in sandbox.systems() {
                    writeln!(out, "{system} {url}")?;
                }
            }
        }
        out.flush()?;
        drop(out);
        wait_for_stop().await;
        sandbox
            .shutdown()
            .await
            .context("cannot shut the sandbox down cleanly")?;
        Ok(exit::OK)
    })
}

/// CPU time this process has used so far (user and system), where `/proc` tells it: on a
/// shared machine the wall time of seeding says little.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after its `)`.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks of 1/100 s (USER_HZ) on every architecture it supports.
    Some((user + system) / 100.0)
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
