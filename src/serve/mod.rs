//! `tether serve`: the flows kept in sync all day by one long-running process.
//!
//! - A scheduler runs each flow every `schedule.every` (60 s by default), one run at a time;
//!   `POST /runs` and change notifications (`POST /hooks/{system}`) bring runs forward,
//!   coalesced into at most one pending run ([`queue`]); `POST /runs` is rate-limited
//!   ([`limit`]).
//! - The flows folder is watched: a change that validates replaces the running version
//!   between runs; one that does not is logged with its diagnostics and the old version keeps
//!   running ([`reload`]).
//! - With `--worker` names on one PostgreSQL store, several servers share the mappings: each
//!   mapping is leased to one worker at a time, and a killed worker's mappings are taken over
//!   when its leases expire (the engine's create intents make the takeover safe).
//! - SIGTERM or SIGINT: the run in flight stops after its current batch (its unfinished
//!   mappings keep their old cursors), leases are released, and the process exits 0.
//!
//! [`http`] has the endpoints, [`access`] who may use the admin ones, [`api`] the operator's
//! API under `/api/`, [`console`] the web console, [`metrics`] the Prometheus metrics,
//! [`hooks`] the webhooks, [`resync`] `POST /api/resync`, [`alerts`] the alerts posted to
//! webhooks when an incident opens and clears.

pub mod access;
pub mod alerts;
pub mod api;
pub mod console;
pub mod hooks;
pub mod http;
pub mod limit;
pub mod metrics;
pub mod queue;
pub mod reload;
pub mod resync;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{info, warn};

use tether_engine::store::{RunOutcome, Store, StoreError, StoreUrl};
use tether_engine::sync::control::{Cancel, LeaseOptions};
use tether_engine::sync::engine::RunOptions;
use tether_engine::sync::open::{OpenError, OpenOptions};
use tether_engine::sync::report::RunReport;

pub use reload::Loaded;

/// A lookup for `${VAR}` in system files, shared by reloads.
pub type Lookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How the server runs.
#[derive(Clone)]
pub struct ServeOptions {
    pub flows: PathBuf,
    pub state: StoreUrl,
    pub listen: SocketAddr,
    /// This worker's name in leases and run history; unique among workers on one store.
    pub worker: String,
    /// How long a mapping lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How many days the change log keeps a write.
    pub history_days: u32,
    /// Watch the flows folder and reload changed files.
    pub watch: bool,
    pub open: OpenOptions,
    pub lookup: Lookup,
    /// The token of the admin endpoints ([`access`]).
    pub admin_token: Option<access::AdminToken>,
    /// `POST /runs` accepted per second, and in a burst ([`limit`]).
    pub runs_per_second: f64,
    pub runs_burst: u32,
    /// Where and when to alert ([`alerts`]).
    pub alerts: alerts::AlertOptions,
}

/// Why the server could not start or went down.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot watch {path}: {reason}")]
    Watch { path: PathBuf, reason: String },
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Access(#[from] access::AccessError),
    #[error("the rate limit of POST /runs: {0}")]
    Limit(#[from] limit::LimitError),
}

/// Which mappings a run covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub flows: Vec<String>,
    pub mappings: Vec<String>,
}

/// Told the report of the run that covered a request, when it is done.
pub type Waiter = oneshot::Sender<Result<RunReport, String>>;

/// What became of a request for a run.
#[derive(Debug)]
pub enum Requested {
    /// Queued or joined; with a waiter, the report comes on the receiver.
    Accepted {
        submitted: queue::Submitted,
        report: Option<oneshot::Receiver<Result<RunReport, String>>>,
    },
    /// The server is going down.
    ShuttingDown,
}

/// What the endpoints and the scheduler share.
pub struct Shared {
    pub store: Store,
    pub metrics: metrics::Metrics,
    pub worker: String,
    loaded: RwLock<Arc<Loaded>>,
    /// The last reload's diagnostics when it was rejected, for `/status`.
    last_reload_error: RwLock<Option<Vec<String>>>,
    /// The pending run asked for through HTTP, and the scope of the one going on.
    queue: Mutex<queue::Queue<Waiter>>,
    running: Mutex<Option<(Scope, &'static str)>>,
    queued: Notify,
    shutting_down: AtomicBool,
    lookup: Lookup,
    pub admin_token: Option<access::AdminToken>,
    /// The rate limit of `POST /runs`.
    pub runs_limit: Mutex<limit::TokenBucket>,
    /// Signed notifications seen in their window.
    pub replays: Mutex<hooks::ReplayGuard>,
    /// Resyncs asked for (`POST /api/resync`), done in order between runs.
    pub resyncs: Mutex<VecDeque<resync::Job>>,
    /// The alert webhooks and their client; `None` without webhooks.
    pub alerts: Option<alerts::Alerts>,
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// The flows running now.
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, loaded: Loaded) {
        *self
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
    }

    pub fn last_reload_error(&self) -> Option<Vec<String>> {
        self.last_reload_error
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_reload_error(&self, error: Option<Vec<String>>) {
        *self
            .last_reload_error
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Asks for a run of `scope`: it becomes the pending run, or joins or widens it.
    pub fn request(&self, scope: Scope, trigger: &'static str, wait: bool) -> Requested {
        if self.is_shutting_down() {
            return Requested::ShuttingDown;
        }
        let mappings: Vec<(String, String)> = self
            .loaded()
            .engine
            .mappings()
            .iter()
            .map(|m| (m.flow.clone(), m.name.clone()))
            .collect();
        let cover = queue::Cover::of(&scope, &mappings);
        let (waiter, report) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let submitted = lock(&self.queue).submit(scope, cover, trigger, waiter);
        self.metrics.record_run_request(trigger, submitted.as_str());
        self.queued.notify_one();
        Requested::Accepted { submitted, report }
    }

    /// The run going on and the pending one, for `/status`.
    pub fn queue_status(&self) -> serde_json::Value {
        let scope = |s: &Scope| serde_json::json!({ "flows": s.flows, "mappings": s.mappings });
        let running = lock(&self.running)
            .as_ref()
            .map(|(s, trigger)| serde_json::json!({ "scope": scope(s), "trigger": trigger }));
        let pending = lock(&self.queue).pending().map(|p| {
            serde_json::json!({ "scope": scope(&p.scope), "trigger": p.trigger, "requests": p.requests })
        });
        serde_json::json!({ "running": running, "pending": pending })
    }

    pub fn lookup(&self) -> &Lookup {
        &self.lookup
    }
}

/// Runs the server until `shutdown` resolves (or SIGTERM/SIGINT when the caller passes
/// [`signal`]). Returns once the run in flight has stopped and the leases are released.
pub async fn serve(
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    access::check_listen(options.listen, options.admin_token.as_ref())?;
    let runs_limit = limit::TokenBucket::new(options.runs_per_second, options.runs_burst)?;
    let store = Store::open(&options.state).await?;
    let loaded = reload::load(&options, store.clone()).map_err(|e| match e {
        reload::ReloadError::Invalid(diagnostics) => {
            for d in &diagnostics {
                warn!("{d}");
            }
            ServeError::Open(OpenError::Invalid {
                errors: diagnostics.len(),
                first: diagnostics.first().cloned().unwrap_or_default(),
            })
        }
        reload::ReloadError::Open(e) => ServeError::Open(e),
    })?;
    info!(
        flows = loaded.flows.len(),
        mappings = loaded.engine.mappings().len(),
        worker = %options.worker,
        "flows loaded"
    );
    let metrics = metrics::Metrics::new();
    metrics.init(&known(&loaded));
    let shared = Arc::new(Shared {
        store: store.clone(),
        metrics,
        worker: options.worker.clone(),
        loaded: RwLock::new(Arc::new(loaded)),
        last_reload_error: RwLock::new(None),
        queue: Mutex::new(queue::Queue::default()),
        running: Mutex::new(None),
        queued: Notify::new(),
        shutting_down: AtomicBool::new(false),
        lookup: options.lookup.clone(),
        admin_token: options.admin_token.clone(),
        runs_limit: Mutex::new(runs_limit),
        replays: Mutex::new(hooks::ReplayGuard::default()),
        resyncs: Mutex::new(VecDeque::new()),
        alerts: alerts::Alerts::new(options.alerts.clone()),
    });

    // Shutdown: the flag stops the run in flight at its next batch; the notify wakes the loop.
    let cancel = Cancel::new();
    let stop = Arc::new(Notify::new());
    {
        let (cancel, stop, shared) = (cancel.clone(), stop.clone(), shared.clone());
        tokio::spawn(async move {
            shutdown.await;
            info!("shutting down: finishing the batch in flight");
            shared.shutting_down.store(true, Ordering::SeqCst);
            cancel.cancel();
            stop.notify_one();
        });
    }

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: options.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(options.listen);
    info!(
        listen = %local,
        admin = if options.admin_token.is_some() { "bearer token" } else { "open on loopback" },
        "serving /health /ready /metrics /status /runs /hooks /api /console"
    );
    if let Some(token) = &options.admin_token
        && token.length() < 16
    {
        warn!(
            length = token.length(),
            "{} is short: use a long random string (32 characters or more)",
            access::TOKEN_VAR
        );
    }
    let http_stop = Arc::new(Notify::new());
    let server = {
        let app = http::router(shared.clone());
        let http_stop = http_stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { http_stop.notified().await })
                .await
        })
    };

    let (reload_tx, mut reloads) = mpsc::channel::<()>(1);
    let _watcher = if options.watch {
        Some(reload::watch(&options.flows, reload_tx)?)
    } else {
        None
    };

    let mut due: HashMap<String, Instant> = HashMap::new();
    loop {
        if shared.is_shutting_down() {
            break;
        }
        let loaded = shared.loaded();
        // New flows are due now; removed flows are no longer scheduled.
        due.retain(|flow, _| loaded.flows.iter().any(|(f, _)| f == flow));
        for (flow, _) in &loaded.flows {
            due.entry(flow.clone()).or_insert_with(Instant::now);
        }
        let next = due.values().min().copied();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = stop.notified() => break,
            Some(()) = reloads.recv() => {
                reload_now(&options, &shared);
            }
            () = shared.queued.notified() => {
                let pending = lock(&shared.queue).take();
                if let Some(pending) = pending {
                    if pending.requests > 1 {
                        info!(
                            trigger = pending.trigger,
                            requests = pending.requests,
                            "requested run: several requests coalesced"
                        );
                    }
                    *lock(&shared.running) = Some((pending.scope.clone(), pending.trigger));
                    let report = run(&shared, &options, &cancel, &pending.scope, pending.trigger).await;
                    *lock(&shared.running) = None;
                    for waiter in pending.waiters {
                        let _ = waiter.send(report.clone());
                    }
                }
                // Resyncs asked for, one at a time, in the order they came.
                loop {
                    if shared.is_shutting_down() {
                        break;
                    }
                    let Some(job) = lock(&shared.resyncs).pop_front() else {
                        break;
                    };
                    let scope = Scope { flows: Vec::new(), mappings: vec![job.request.mapping.clone()] };
                    *lock(&shared.running) = Some((scope, "resync"));
                    resync::run(&shared, &options, &cancel, job).await;
                    *lock(&shared.running) = None;
                }
            }
            () = sleep => {
                let now = Instant::now();
                let flows: Vec<String> = due
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(flow, _)| flow.clone())
                    .collect();
                let scope = Scope { flows: flows.clone(), mappings: Vec::new() };
                *lock(&shared.running) = Some((scope.clone(), "schedule"));
                let _ = run(&shared, &options, &cancel, &scope, "schedule").await;
                *lock(&shared.running) = None;
                let finished = Instant::now();
                for flow in flows {
                    let every = loaded
                        .flows
                        .iter()
                        .find(|(f, _)| *f == flow)
                        .map_or(tether_engine::spec::flow::DEFAULT_INTERVAL, |(_, every)| *every);
                    due.insert(flow, finished + every);
                }
            }
        }
    }

    // Runs asked for and not started are answered, not dropped silently.
    if let Some(pending) = lock(&shared.queue).take() {
        for waiter in pending.waiters {
            let _ = waiter.send(Err("the server is shutting down".into()));
        }
    }
    for job in lock(&shared.resyncs).drain(..) {
        if let Some(waiter) = job.waiter {
            let _ = waiter.send(Err("the server is shutting down".into()));
        }
    }
    http_stop.notify_one();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ServeError::Http(e)),
        Err(e) => warn!(error = %e, "the HTTP server task ended abnormally"),
    }
    info!("stopped");
    Ok(())
}

/// Loads the flows again; keeps the running version when the new one does not validate.
fn reload_now(options: &ServeOptions, shared: &Shared) {
    match reload::load(options, shared.store.clone()) {
        Ok(loaded) => {
            info!(
                flows = loaded.flows.len(),
                mappings = loaded.engine.mappings().len(),
                "flow files changed: reloaded"
            );
            shared.metrics.init(&known(&loaded));
            shared.replace(loaded);
            shared.set_reload_error(None);
            shared.metrics.record_reload("ok");
        }
        Err(reload::ReloadError::Invalid(diagnostics)) => {
            for d in &diagnostics {
                warn!("{d}");
            }
            warn!(
                errors = diagnostics.len(),
                "flow files changed but do not validate: the running version stays"
            );
            shared.set_reload_error(Some(diagnostics));
            shared.metrics.record_reload("rejected");
        }
        Err(reload::ReloadError::Open(error)) => {
            warn!(%error, "flow files changed but cannot be loaded: the running version stays");
            shared.set_reload_error(Some(vec![error.to_string()]));
            shared.metrics.record_reload("rejected");
        }
    }
}

/// The label values the metrics start with for `loaded`.
fn known(loaded: &Loaded) -> metrics::Known {
    metrics::Known {
        mappings: loaded
            .engine
            .mappings()
            .iter()
            .map(|m| m.name.clone())
            .collect(),
        systems: loaded.project.systems.keys().cloned().collect(),
        hook_systems: loaded
            .project
            .systems
            .iter()
            .filter(|(_, s)| s.spec.webhooks.is_some())
            .map(|(name, _)| name.clone())
            .collect(),
    }
}

impl ServeOptions {
    /// What every run of this server shares: its worker name, leases, cancel flag and the
    /// change log's retention.
    pub(crate) fn run_options(&self, cancel: &Cancel) -> RunOptions {
        RunOptions {
            worker: Some(self.worker.clone()),
            cancel: Some(cancel.clone()),
            lease: Some(LeaseOptions {
                worker: self.worker.clone(),
                ttl: self.lease_ttl,
            }),
            history_days: self.history_days,
            ..RunOptions::default()
        }
    }
}

/// One run over `scope` with the loaded flows.
async fn run(
    shared: &Shared,
    options: &ServeOptions,
    cancel: &Cancel,
    scope: &Scope,
    trigger: &'static str,
) -> Result<RunReport, String> {
    let loaded = shared.loaded();
    let run_options = RunOptions {
        flows: scope.flows.clone(),
        mappings: scope.mappings.clone(),
        trigger: Some(trigger.to_owned()),
        ..options.run_options(cancel)
    };
    let started = Instant::now();
    let result = loaded.engine.run(&run_options).await;
    match &result {
        Ok(report) => alerts::after_run(shared, Ok(report)).await,
        Err(error) => alerts::after_run(shared, Err(&error.to_string())).await,
    }
    match result {
        Ok(report) => {
            let outcome = report.outcome.unwrap_or(RunOutcome::Ok);
            shared
                .metrics
                .record_run(trigger, &report, outcome, started.elapsed());
            info!(
                trigger,
                writes = report.writes(),
                parked = report.parked(),
                outcome = outcome.as_str(),
                took_ms = started.elapsed().as_millis() as u64,
                "run done"
            );
            Ok(report)
        }
        Err(error) => {
            warn!(trigger, %error, "run failed");
            shared.metrics.record_failed_run(trigger);
            Err(error.to_string())
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
