//! `tether serve`: the flows run on their schedules in one long-running process, with
//! health, readiness, metrics, status, run-now and webhook endpoints, flow files reloaded
//! when they change, and leases so several workers can share one PostgreSQL store. The admin
//! token comes from `TETHER_ADMIN_TOKEN` only (never a flag, which process lists show).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::serve::access::{self, AdminToken};
use crate::serve::{ServeOptions, serve, signal};
use anyhow::Context as _;
use clap::Args;
use tether_engine::sync::open::OpenOptions;

use crate::cli::run::{StateArg, env_lookup, runtime, start_sandbox};
use crate::exit;

/// Options of `tether serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// Address of the HTTP endpoints (/health, /ready, /metrics, /status, /runs, /hooks).
    /// Beyond loopback, TETHER_ADMIN_TOKEN must be set: /status and POST /runs then need
    /// `Authorization: Bearer <token>`.
    #[arg(long, env = "TETHER_LISTEN", default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Run requests (POST /runs) accepted per second on average; beyond the burst, 429.
    #[arg(long, env = "TETHER_RUNS_PER_SECOND", default_value_t = 2.0)]
    pub runs_per_second: f64,
    /// Run requests accepted in a burst before the rate applies.
    #[arg(long, env = "TETHER_RUNS_BURST", default_value_t = 10)]
    pub runs_burst: u32,
    /// This worker's name, unique among the workers sharing one store (default: host name
    /// and process id).
    #[arg(long, env = "TETHER_WORKER")]
    pub worker: Option<String>,
    /// Seconds a mapping stays leased to this worker without renewal; a killed worker's
    /// mappings are taken over after this.
    #[arg(long, env = "TETHER_LEASE_SECONDS", default_value_t = 30.0)]
    pub lease_seconds: f64,
    /// How many days the change log (`tether history`) keeps a write; older ones are removed
    /// at the end of each run.
    #[arg(long, env = "TETHER_HISTORY_DAYS", default_value_t = tether_engine::ops::history::DEFAULT_RETENTION_DAYS)]
    pub history_days: u32,
    /// Do not watch the flows folder for changes.
    #[arg(long)]
    pub no_watch: bool,
    /// Run against the built-in simulators (started in-process, as `run --sandbox`).
    #[arg(long)]
    pub sandbox: bool,
    /// Send requests as fast as the systems answer, ignoring the system files' rate limits.
    #[arg(long)]
    pub no_rate_limits: bool,
    /// A webhook to post alerts to (repeatable; Slack incoming webhooks and any receiver of
    /// JSON); TETHER_ALERT_WEBHOOKS adds more, separated by commas. The URLs are secrets:
    /// prefer the environment, which process lists do not show.
    #[arg(long = "alert-webhook", value_name = "URL")]
    pub alert_webhooks: Vec<String>,
    /// Alert when more records than this are parked (all mappings together).
    #[arg(long, env = "TETHER_ALERT_PARKED_ABOVE", default_value_t = 100)]
    pub alert_parked_above: u64,
    /// Alert when a system's allowance (as the run report gives it) has less than this
    /// percentage left.
    #[arg(long, env = "TETHER_ALERT_ALLOWANCE_BELOW", default_value_t = 10.0)]
    pub alert_allowance_below: f64,
}

fn default_worker() -> String {
    format!("{}-{}", crate::cli::host_name(), std::process::id())
}

pub fn run(flows: &Path, args: ServeArgs) -> anyhow::Result<u8> {
    if !(args.lease_seconds.is_finite() && args.lease_seconds >= 1.0) {
        anyhow::bail!("--lease-seconds must be at least 1");
    }
    if !(args.runs_per_second.is_finite() && args.runs_per_second > 0.0) {
        anyhow::bail!("--runs-per-second must be a positive number");
    }
    if args.runs_burst == 0 {
        anyhow::bail!("--runs-burst must be at least 1");
    }
    let token = std::env::var(access::TOKEN_VAR).ok();
    let admin_token = AdminToken::from_env_value(token)?;
    access::check_listen(args.listen, admin_token.as_ref())?;
    let alerts = crate::serve::alerts::AlertOptions::new(
        &args.alert_webhooks,
        std::env::var(crate::serve::alerts::WEBHOOKS_VAR)
            .ok()
            .as_deref(),
        args.alert_parked_above,
        args.alert_allowance_below,
    )?;
    runtime()?.block_on(async move {
        let sandbox = if args.sandbox {
            Some(start_sandbox(20).await?)
        } else {
            None
        };
        let lookup = env_lookup(
            sandbox
                .as_ref()
                .map(tether_sandbox::Sandbox::env)
                .unwrap_or_default(),
        );
        let options = ServeOptions {
            flows: flows.to_owned(),
            state: args.state.url.clone(),
            listen: args.listen,
            worker: args.worker.clone().unwrap_or_else(default_worker),
            lease_ttl: Duration::from_secs_f64(args.lease_seconds),
            history_days: args.history_days,
            watch: !args.no_watch,
            open: OpenOptions {
                ignore_rate_limits: args.sandbox || args.no_rate_limits,
            },
            lookup: Arc::new(lookup),
            admin_token,
            runs_per_second: args.runs_per_second,
            runs_burst: args.runs_burst,
            alerts,
        };
        let result = serve(options, signal()).await;
        if let Some(sandbox) = sandbox {
            sandbox
                .shutdown()
                .await
                .context("cannot save the sandbox state")?;
        }
        result?;
        Ok(exit::OK)
    })
}
