//! `tether sandbox`: simulators of the five APIs Tether talks to (customcrm, customerp,
//! customwebshop, keap, salesforce), served over real HTTP on loopback, faithful to the
//! contracts: paths, envelopes, field names and types, status codes, error bodies,
//! pagination, server-assigned ids and times, modified-since filters, deletes, unique
//! keys, auth, token expiry and rate limits.
//!
//! Tests and the demo use [`Sandbox`] in-process; the CLI serves it until interrupted.
//! Besides HTTP, [`Sandbox`] gives direct access that simulates a person editing in a
//! system: [`Sandbox::insert`], [`Sandbox::update`] and [`Sandbox::delete`] go through the
//! same store rules as the API (validation, modified times, tombstones) without auth,
//! rate limits or request counting.
//!
//! Invariants: the engine never imports this module; only the CLI and tests do. The
//! simulators share one in-memory store (`store`), and each system module owns its wire
//! format. The three in-house systems share one backend (`inhouse`), driven by their
//! OpenAPI files (`contracts/`) and a description of each system; Keap is driven by the
//! schemas of its v1 file, Salesforce by describe-derived field tables.
//!
//! Where a contract is silent the simulators choose, and say so here:
//! - Every write moves the modified time, even one that changes nothing. Writes get strictly
//!   increasing stamps; seed data has historical times, some shared (bulk imports), and one
//!   Salesforce collection request shares one stamp.
//! - In-house systems: unknown fields in a body are 422 (`additionalProperties: false`),
//!   malformed JSON is 422 `invalid_json`, list parameters outside the contract's bounds are
//!   422, and a reference to a record that does not exist (or is deleted) is 422
//!   `invalid_reference`. Customerp `/deleted?since=` is at or after, like `modified_since`.
//!   Custom CRM `total_pages` is 0 for an empty list; the token endpoint answers 401 for a
//!   wrong grant or client. The web shop answers a GET of a soft-deleted record with the
//!   record (`deleted: true`), 404 to a PUT or DELETE of it, and releases its unique keys.
//! - Keap: `count` is the number of matches, not of the page; `since`/`until` are
//!   inclusive; `limit` above 1000 is cut to 1000; a sync token names a position in the
//!   product change log and a first call lists every product ever seen; the product feed
//!   reports no deletion (the file says it leaves deleted products out but lists a
//!   `DELETED` status); the stage pipeline's `stage_count` is the number of stages,
//!   `is_default` the first stage and `end_stage` won and lost.
//! - Salesforce: deletes go to the recycle bin (`queryAll` and getDeleted see them, a GET
//!   answers 404 `ENTITY_IS_DELETED`) until it is emptied ([`Sandbox::empty_recycle_bin`]); a body naming a field that is not createable (or not
//!   updateable), even with null, is refused with `INVALID_FIELD_FOR_INSERT_UPDATE`; SOQL
//!   datetimes take `Z` or `+hh:mm` only; deleting an Order, Quote, Opportunity, Account,
//!   Product2 or Pricebook2 removes its children, and a product or entry still used by a
//!   line cannot be deleted (`DELETE_FAILED`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use serde_json::Value;

use crate::http::{ApiRequest, ApiResponse, Simulator, Window};
use crate::inhouse::InHouse;
use crate::store::{Clock, Stamp, Store};

mod compact;
mod customcrm;
mod customerp;
mod customwebshop;
pub mod faults;
mod http;
mod inhouse;
mod keap;
mod salesforce;
pub mod schema;
mod seed;
mod store;

pub use faults::{FaultKind, FaultSpec, FaultSpecError};

/// The simulated systems, in the order of their ports (`port_base + 1` to `+ 5`).
pub const SYSTEMS: [&str; 5] = [
    "customcrm",
    "customerp",
    "customwebshop",
    "keap",
    "salesforce",
];

/// The fixed credentials the simulators accept (and [`Sandbox::env`] hands out).
pub mod credentials {
    pub const CUSTOMCRM_CLIENT_ID: &str = "sandbox-customcrm-client";
    pub const CUSTOMCRM_CLIENT_SECRET: &str = "sandbox-customcrm-secret";
    pub const CUSTOMERP_TOKEN: &str = "sandbox-customerp-token";
    pub const CUSTOMWEBSHOP_API_KEY: &str = "sandbox-customwebshop-key";
    pub const KEAP_API_KEY: &str = "sandbox-keap-api-key";
    pub const SALESFORCE_CLIENT_ID: &str = "sandbox-salesforce-client-id";
    pub const SALESFORCE_CLIENT_SECRET: &str = "sandbox-salesforce-secret";
}

/// A rate limit: at most `requests` in any sliding window of length `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u64,
    pub per: Duration,
}

impl RateLimit {
    pub const fn new(requests: u64, per: Duration) -> Self {
        Self { requests, per }
    }

    fn window(self) -> Window {
        Window {
            requests: self.requests,
            per_ms: i64::try_from(self.per.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
        }
    }
}

/// Rate limits per system. [`RateLimits::contract`] (the default) has the limits the
/// contracts state; [`RateLimits::unlimited`] has none, for benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Custom CRM: 10 requests/s.
    pub customcrm: Vec<RateLimit>,
    /// Customerp: 20 requests/s.
    pub customerp: Vec<RateLimit>,
    /// Custom Webshop: 10 requests/s.
    pub customwebshop: Vec<RateLimit>,
    /// Keap API key: 10/s spike arrest, 240/minute throttle, 30,000/day quota.
    pub keap: Vec<RateLimit>,
    /// Salesforce: 100,000 API requests per 24 hours (`Sforce-Limit-Info`).
    pub salesforce: Vec<RateLimit>,
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

impl RateLimits {
    pub fn contract() -> Self {
        Self {
            customcrm: vec![RateLimit::new(10, SECOND)],
            customerp: vec![RateLimit::new(20, SECOND)],
            customwebshop: vec![RateLimit::new(10, SECOND)],
            keap: vec![
                RateLimit::new(10, SECOND),
                RateLimit::new(240, MINUTE),
                RateLimit::new(30_000, DAY),
            ],
            salesforce: vec![RateLimit::new(100_000, DAY)],
        }
    }

    /// No limits at all; Keap and Salesforce still report usage headers against a
    /// nominal daily quota.
    pub fn unlimited() -> Self {
        Self {
            customcrm: Vec::new(),
            customerp: Vec::new(),
            customwebshop: Vec::new(),
            keap: Vec::new(),
            salesforce: Vec::new(),
        }
    }

    fn windows(limits: &[RateLimit]) -> Vec<Window> {
        limits.iter().map(|limit| limit.window()).collect()
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::contract()
    }
}

/// How to start a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// The address to listen on (loopback by default).
    pub bind: IpAddr,
    /// Systems listen on `port_base + 1` to `port_base + 5` in [`SYSTEMS`] order; 0 picks
    /// free ports.
    pub port_base: u16,
    /// Seed records per entity in each system (0 = empty systems). Ignored when the
    /// state file already holds data.
    pub seed: usize,
    /// Makes the seed data (and generated ids) reproducible.
    pub seed_rng: u64,
    /// Keeps the simulated data across restarts (JSON; read at start, written
    /// periodically and at shutdown).
    pub state_file: Option<PathBuf>,
    /// Injected faults and latency.
    pub faults: FaultSpec,
    /// Lifetime of Custom CRM access tokens (`expires_in`).
    pub token_ttl: Duration,
    /// Lifetime of Salesforce sessions (the token response carries no expiry).
    pub session_ttl: Duration,
    pub rate_limits: RateLimits,
    /// Salesforce's token endpoint answers as the generic login hosts do
    /// (`login.salesforce.com`, `test.salesforce.com`), which refuse the client-credentials
    /// flow; off, it answers as an org's My Domain host.
    pub salesforce_generic_login: bool,
    /// Which optional fields the Salesforce org has and which the integration user cannot
    /// see; by default every field of the describe tables.
    pub salesforce_org: SalesforceOrg,
}

/// A Salesforce org's profile: fields differ per org and per user.
///
/// Real behaviour (Salesforce Object Reference, Account and Order; Help, "State and Country
/// Picklists", "Reduction Orders", "Field-Level Security"): `…StateCode`/`…CountryCode`
/// exist only where State and Country picklists are enabled, `OriginalOrderId`/
/// `IsReductionOrder` only where reduction orders are, and a field hidden by field-level
/// security is absent from the user's describe and refused in SOQL as if it did not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesforceOrg {
    /// State and Country picklists (`BillingStateCode`, `BillingCountryCode`, …).
    pub state_country_picklists: bool,
    /// Reduction orders (`Order.OriginalOrderId`, `Order.IsReductionOrder`).
    pub reduction_orders: bool,
    /// Fields hidden from the integration user by field-level security, as
    /// `Object.Field` (`Contact.Title`).
    pub hidden_fields: Vec<String>,
}

impl Default for SalesforceOrg {
    fn default() -> Self {
        Self {
            state_country_picklists: true,
            reduction_orders: true,
            hidden_fields: Vec::new(),
        }
    }
}

impl SalesforceOrg {
    /// Whether the org has `field` of `object` for the integration user.
    pub fn has(&self, object: &str, field: &str) -> bool {
        let picklist = field.ends_with("StateCode") || field.ends_with("CountryCode");
        let reduction =
            object == "Order" && matches!(field, "OriginalOrderId" | "IsReductionOrder");
        let hidden = self
            .hidden_fields
            .iter()
            .any(|name| name.eq_ignore_ascii_case(&format!("{object}.{field}")));
        !(picklist && !self.state_country_picklists
            || reduction && !self.reduction_orders
            || hidden)
    }
}

/// A `--salesforce-org` text that is not a profile.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not part of a Salesforce org profile (expected no-picklists, no-reduction-orders or hide=Object.Field+Object.Field)"
)]
pub struct SalesforceOrgError(String);

/// `no-picklists,no-reduction-orders,hide=Contact.Title+OrderItem.ServiceDate`: an org
/// without State and Country picklists, without reduction orders, with those fields hidden
/// by field-level security. Each part is optional; the empty text is the default org.
impl std::str::FromStr for SalesforceOrg {
    type Err = SalesforceOrgError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut org = SalesforceOrg::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "no-picklists" => org.state_country_picklists = false,
                "no-reduction-orders" => org.reduction_orders = false,
                _ => {
                    let fields = part
                        .strip_prefix("hide=")
                        .ok_or_else(|| SalesforceOrgError(part.to_owned()))?;
                    for field in fields.split('+') {
                        let valid = field.split_once('.').is_some_and(|(object, name)| {
                            !object.is_empty()
                                && !name.is_empty()
                                && field
                                    .chars()
                                    .all(|c| c.is_ascii_alphanumeric() || "._".contains(c))
                        });
                        if !valid {
                            return Err(SalesforceOrgError(field.to_owned()));
                        }
                        org.hidden_fields.push(field.to_owned());
                    }
                }
            }
        }
        Ok(org)
    }
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_base: 0,
            seed: 0,
            seed_rng: 1,
            state_file: None,
            faults: FaultSpec::default(),
            token_ttl: Duration::from_secs(3600),
            session_ttl: Duration::from_secs(7200),
            rate_limits: RateLimits::contract(),
            salesforce_generic_login: false,
            salesforce_org: SalesforceOrg::default(),
        }
    }
}

/// Requests one system has answered over HTTP since start (or the last reset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub total: u64,
    /// GET and HEAD requests.
    pub reads: u64,
    /// Every other method.
    pub writes: u64,
    /// Refused for being over a rate limit (not counting injected 429s).
    pub throttled: u64,
    pub injected_faults: u64,
    /// Requests being answered now (latency included).
    pub in_flight: u64,
    /// The most requests that were being answered at once.
    pub max_in_flight: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot listen on {addr} for {system}: {source}")]
    Bind {
        system: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read or write sandbox state {path}: {source}")]
    StateIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sandbox state {path} is not valid: {source}")]
    StateFormat {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("embedded contract is broken: {0}")]
    Contract(#[from] schema::SchemaDocError),
    #[error(
        "unknown system `{0}` (expected customcrm, customerp, customwebshop, keap or salesforce)"
    )]
    UnknownSystem(String),
    #[error("{system} has no entity `{entity}` (it has {known})")]
    UnknownEntity {
        system: String,
        entity: String,
        known: String,
    },
    #[error("{system} {entity} {id} does not exist")]
    NotFound {
        system: String,
        entity: String,
        id: String,
    },
    /// The system refused the change the way its API would have: `status` and `body` are
    /// what an HTTP client would have received.
    #[error("{system} refused the change with {status}: {body}")]
    Rejected {
        system: String,
        status: u16,
        body: Value,
    },
    #[error("seeding {system} {entity} failed with {status}: {body}")]
    Seed {
        system: String,
        entity: String,
        status: u16,
        body: Value,
    },
}

/// State shared by all simulators of one sandbox.
pub(crate) struct Shared {
    store: Mutex<Store>,
    pub clock: Clock,
    pub faults: FaultSpec,
    pub options: SandboxOptions,
    fault_rng: Mutex<fastrand::Rng>,
    rng: Mutex<fastrand::Rng>,
    counts: Mutex<BTreeMap<&'static str, RequestCounts>>,
    dirty: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Marks the store as changed (for the periodic state save).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// A stamp for a write happening now.
    pub fn stamp(&self, store: &mut Store) -> Stamp {
        self.mark_dirty();
        store.stamp(&self.clock)
    }

    pub fn with_rng<T>(&self, f: impl FnOnce(&mut fastrand::Rng) -> T) -> T {
        f(&mut lock(&self.rng))
    }

    /// A random token of `length` letters and digits.
    pub fn token(&self, length: usize) -> String {
        self.with_rng(|rng| (0..length).map(|_| rng.alphanumeric()).collect())
    }

    fn draw_fault(&self) -> Option<FaultKind> {
        self.faults.draw(&mut lock(&self.fault_rng))
    }

    pub(crate) fn count(&self, system: &'static str, update: impl FnOnce(&mut RequestCounts)) {
        update(lock(&self.counts).entry(system).or_default());
    }
}

/// State for a simulator under a unit test: an empty store, the default options.
#[cfg(test)]
pub(crate) fn test_shared() -> Arc<Shared> {
    Arc::new(Shared {
        store: Mutex::new(Store::default()),
        clock: Clock::default(),
        faults: FaultSpec::default(),
        options: SandboxOptions::default(),
        fault_rng: Mutex::new(fastrand::Rng::with_seed(1)),
        rng: Mutex::new(fastrand::Rng::with_seed(1)),
        counts: Mutex::new(BTreeMap::new()),
        dirty: AtomicBool::new(false),
    })
}

/// What the sandbox needs from each simulator beyond HTTP: direct access and seeding.
pub(crate) trait Backend: Simulator {
    /// The entities, named as in the system's API (`customers`, `Contact`).
    fn entities(&self) -> Vec<&'static str>;
    /// Routes a request without auth, rate limits or counting (direct access).
    fn route(&self, request: &ApiRequest) -> ApiResponse;
    /// The collection path of an entity (`/api/v1/customers`).
    fn collection_path(&self, entity: &str) -> String;
    /// Every live record of an entity, rendered as a GET of it would return it.
    fn records(&self, entity: &str) -> Vec<Value>;
    /// Creates a record with the API's validation and server-assigned fields at time `at`
    /// (seed data has historical times); returns its id. `check_schema` false skips the
    /// check of the body against the contract's write schema (and nothing else), for seed
    /// records of a shape already checked.
    fn create_at(
        &self,
        store: &mut Store,
        entity: &str,
        body: Value,
        at: Stamp,
        check_schema: bool,
    ) -> Result<String, ApiResponse>;
    /// Empties the system's recycle bin, where it has one (Salesforce); false otherwise.
    fn empty_recycle_bin(&self) -> bool {
        false
    }
    /// After each of the next `pages` list pages that have a page after them, a person
    /// edits the page's first record (Keap contacts); false where not simulated.
    fn edit_between_pages(&self, _pages: usize) -> bool {
        false
    }
    /// One record as `records` renders it; `None` where a GET of it answers 404.
    fn record(&self, entity: &str, id: &str) -> Option<Value> {
        let path = format!("{}/{}", self.collection_path(entity), id);
        let response = self.route(&request(Method::GET, &path, None));
        response
            .status
            .is_success()
            .then(|| response.into_body())
            .flatten()
    }
    /// A person's partial edit: PATCH where the API has it; the web shop merges the
    /// patch into the current record and PUTs the result.
    fn edit(&self, entity: &str, id: &str, patch: Value) -> ApiResponse {
        let path = format!("{}/{}", self.collection_path(entity), id);
        self.route(&request(Method::PATCH, &path, Some(&patch)))
    }
}

/// Builds an in-process request.
pub(crate) fn request(method: Method, path: &str, body: Option<&Value>) -> ApiRequest {
    let body = body
        .map(|value| Bytes::from(serde_json::to_vec(value).unwrap_or_default()))
        .unwrap_or_default();
    ApiRequest {
        direct: true,
        ..ApiRequest::new(method, path, HeaderMap::new(), body)
    }
}

/// How often a changed store is written to its state file, at most.
const SAVE_EVERY: Duration = Duration::from_secs(2);

/// A running sandbox: five simulators on loopback ports.
pub struct Sandbox {
    shared: Arc<Shared>,
    backends: Vec<(&'static str, Arc<dyn Backend>)>,
    urls: Vec<(String, String)>,
    stop: tokio::sync::watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    saver: Option<tokio::task::JoinHandle<()>>,
}

impl Sandbox {
    /// Binds the five ports, loads or seeds the data and starts serving.
    pub async fn start(options: SandboxOptions) -> Result<Sandbox, SandboxError> {
        let mut store = match &options.state_file {
            Some(path) => load_state(path)?,
            None => Store::default(),
        };
        store.rebuild_indexes();
        let needs_seed = options.seed > 0 && store.is_empty();
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            clock: Clock::default(),
            faults: options.faults.clone(),
            fault_rng: Mutex::new(fastrand::Rng::with_seed(options.seed_rng ^ 0x5eed_fa17)),
            rng: Mutex::new(fastrand::Rng::with_seed(options.seed_rng)),
            counts: Mutex::new(BTreeMap::new()),
            dirty: AtomicBool::new(false),
            options: options.clone(),
        });

        let mut listeners = Vec::new();
        for (index, system) in SYSTEMS.into_iter().enumerate() {
            let port = if options.port_base == 0 {
                0
            } else {
                options.port_base.saturating_add(index as u16 + 1)
            };
            let addr = SocketAddr::new(options.bind, port);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| SandboxError::Bind {
                    system,
                    addr,
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| SandboxError::Bind {
                system,
                addr,
                source,
            })?;
            listeners.push((system, listener, format!("http://{local}")));
        }

        let limits = &options.rate_limits;
        let mut backends: Vec<(&'static str, Arc<dyn Backend>)> = Vec::new();
        let mut urls = Vec::new();
        let (stop, _) = tokio::sync::watch::channel(false);
        let mut servers = Vec::new();
        for (system, listener, root) in listeners {
            let backend: Arc<dyn Backend> = match system {
                "customcrm" => Arc::new(InHouse::new(
                    customcrm::conventions(),
                    shared.clone(),
                    RateLimits::windows(&limits.customcrm),
                )?),
                "customerp" => Arc::new(InHouse::new(
                    customerp::conventions(),
                    shared.clone(),
                    RateLimits::windows(&limits.customerp),
                )?),
                "customwebshop" => Arc::new(InHouse::new(
                    customwebshop::conventions(),
                    shared.clone(),
                    RateLimits::windows(&limits.customwebshop),
                )?),
                "keap" => Arc::new(keap::Keap::new(
                    shared.clone(),
                    &root,
                    RateLimits::windows(&limits.keap),
                )?),
                _ => Arc::new(salesforce::Salesforce::new(
                    shared.clone(),
                    &root,
                    RateLimits::windows(&limits.salesforce),
                )),
            };
            let url = match system {
                "customcrm" => format!("{root}/crm/api"),
                "customerp" => format!("{root}/api/v1"),
                "customwebshop" => format!("{root}/shop/api"),
                "keap" => format!("{root}/crm/rest/v1"),
                _ => root.clone(),
            };
            urls.push((system.to_string(), url));
            let mut receiver = stop.subscribe();
            let shutdown = async move {
                let _ = receiver.wait_for(|stopped| *stopped).await;
            };
            let simulator: Arc<dyn Simulator> = backend.clone();
            servers.push(tokio::spawn(http::serve(
                listener,
                simulator,
                shared.clone(),
                shutdown,
            )));
            backends.push((system, backend));
        }

        if needs_seed {
            let mut store = shared.store();
            seed::seed(&mut store, &backends, options.seed, options.seed_rng)?;
            drop(store);
            shared.mark_dirty();
        }

        let saver = options.state_file.clone().map(|path| {
            let shared = shared.clone();
            let mut receiver = stop.subscribe();
            tokio::spawn(async move {
                // Every 2 s while data changes, but never more than a tenth of the time
                // saving: a save holds the store, and at a million records takes seconds.
                let mut pause = SAVE_EVERY;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = receiver.wait_for(|stopped| *stopped) => break,
                    }
                    if shared.dirty.swap(false, Ordering::Relaxed) {
                        let saving = std::time::Instant::now();
                        let saved = {
                            let shared = shared.clone();
                            let path = path.clone();
                            tokio::task::spawn_blocking(move || save_state(&shared, &path)).await
                        };
                        if let Ok(Err(error)) = saved {
                            tracing::warn!(%error, "cannot save sandbox state");
                        }
                        pause = SAVE_EVERY.max(saving.elapsed() * 10);
                    }
                }
            })
        });

        tracing::info!(systems = ?urls, "sandbox ready");
        Ok(Sandbox {
            shared,
            backends,
            urls,
            stop,
            servers,
            saver,
        })
    }

    /// `(system, base URL)` in [`SYSTEMS`] order. The base URL is what the system file's
    /// `*_BASE_URL` takes (`http://127.0.0.1:8702/api/v1`); Salesforce's is the login host.
    pub fn systems(&self) -> Vec<(String, String)> {
        self.urls.clone()
    }

    /// The base URL of one system.
    pub fn base_url(&self, system: &str) -> Option<&str> {
        self.urls
            .iter()
            .find(|(name, _)| name == system)
            .map(|(_, url)| url.as_str())
    }

    /// The environment variables that point the system files at this sandbox.
    pub fn env(&self) -> Vec<(String, String)> {
        let url = |system: &str| self.base_url(system).unwrap_or_default().to_string();
        let pairs = [
            ("CUSTOMCRM_BASE_URL", url("customcrm")),
            (
                "CUSTOMCRM_CLIENT_ID",
                credentials::CUSTOMCRM_CLIENT_ID.to_string(),
            ),
            (
                "CUSTOMCRM_CLIENT_SECRET",
                credentials::CUSTOMCRM_CLIENT_SECRET.to_string(),
            ),
            ("CUSTOMERP_BASE_URL", url("customerp")),
            ("CUSTOMERP_TOKEN", credentials::CUSTOMERP_TOKEN.to_string()),
            ("CUSTOMWEBSHOP_BASE_URL", url("customwebshop")),
            (
                "CUSTOMWEBSHOP_API_KEY",
                credentials::CUSTOMWEBSHOP_API_KEY.to_string(),
            ),
            ("KEAP_BASE_URL", url("keap")),
            ("KEAP_API_KEY", credentials::KEAP_API_KEY.to_string()),
            ("SALESFORCE_LOGIN_URL", url("salesforce")),
            (
                "SALESFORCE_CLIENT_ID",
                credentials::SALESFORCE_CLIENT_ID.to_string(),
            ),
            (
                "SALESFORCE_CLIENT_SECRET",
                credentials::SALESFORCE_CLIENT_SECRET.to_string(),
            ),
        ];
        pairs
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect()
    }

    fn backend(&self, system: &str, entity: &str) -> Result<&Arc<dyn Backend>, SandboxError> {
        let backend = self
            .backends
            .iter()
            .find(|(name, _)| *name == system)
            .map(|(_, backend)| backend)
            .ok_or_else(|| SandboxError::UnknownSystem(system.to_string()))?;
        let entities = backend.entities();
        if !entities.contains(&entity) {
            return Err(SandboxError::UnknownEntity {
                system: system.to_string(),
                entity: entity.to_string(),
                known: entities.join(", "),
            });
        }
        Ok(backend)
    }

    /// The entities of one system, named as in its API.
    pub fn entities(&self, system: &str) -> Result<Vec<&'static str>, SandboxError> {
        self.backends
            .iter()
            .find(|(name, _)| *name == system)
            .map(|(_, backend)| backend.entities())
            .ok_or_else(|| SandboxError::UnknownSystem(system.to_string()))
    }

    /// Every live record of an entity, as the system's API renders it, oldest change first.
    pub fn records(&self, system: &str, entity: &str) -> Result<Vec<Value>, SandboxError> {
        Ok(self.backend(system, entity)?.records(entity))
    }

    /// One record as [`Sandbox::records`] renders it (what a GET of it returns, with every
    /// optional property); `None` when a GET would answer 404. A soft-deleted web shop
    /// record is still returned, with `deleted: true`.
    pub fn record(
        &self,
        system: &str,
        entity: &str,
        id: &str,
    ) -> Result<Option<Value>, SandboxError> {
        Ok(self.backend(system, entity)?.record(entity, id))
    }

    /// Creates a record as a person in the system would; returns it as the API renders it.
    pub fn insert(&self, system: &str, entity: &str, record: Value) -> Result<Value, SandboxError> {
        let backend = self.backend(system, entity)?;
        let response = backend.route(&request(
            Method::POST,
            &backend.collection_path(entity),
            Some(&record),
        ));
        let body = accepted(system, response)?.unwrap_or_default();
        let id = match body.get("id") {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(id)) => id.to_string(),
            _ => String::new(),
        };
        self.record(system, entity, &id)?
            .ok_or_else(|| SandboxError::NotFound {
                system: system.to_string(),
                entity: entity.to_string(),
                id,
            })
    }

    /// Changes some fields of a record as a person would (its modified time moves);
    /// returns the record as the API renders it.
    pub fn update(
        &self,
        system: &str,
        entity: &str,
        id: &str,
        patch: Value,
    ) -> Result<Value, SandboxError> {
        let backend = self.backend(system, entity)?;
        let response = backend.edit(entity, id, patch);
        if response.status.as_u16() == 404 {
            return Err(SandboxError::NotFound {
                system: system.to_string(),
                entity: entity.to_string(),
                id: id.to_string(),
            });
        }
        accepted(system, response)?;
        self.record(system, entity, id)?
            .ok_or_else(|| SandboxError::NotFound {
                system: system.to_string(),
                entity: entity.to_string(),
                id: id.to_string(),
            })
    }

    /// Changes stored top-level fields of a record without moving its modified times or
    /// logging a change, as a bulk import or a fix made in the database behind the API does:
    /// reads by modified time do not see it. Meant for fields that are not unique keys (the
    /// index of unique values is left as it is). Returns the record as the API renders it.
    pub fn edit_unstamped(
        &self,
        system: &str,
        entity: &str,
        id: &str,
        fields: Value,
    ) -> Result<Value, SandboxError> {
        self.backend(system, entity)?;
        let not_found = || SandboxError::NotFound {
            system: system.to_string(),
            entity: entity.to_string(),
            id: id.to_string(),
        };
        {
            let mut store = self.shared.store();
            let record = store
                .entity_mut(system, entity)
                .records
                .get_mut(id)
                .ok_or_else(not_found)?;
            if let Value::Object(patch) = fields {
                record.fields.extend(patch);
            }
        }
        self.shared.mark_dirty();
        self.record(system, entity, id)?.ok_or_else(not_found)
    }

    /// Deletes a record as the system's own DELETE does (hard delete, tombstone or soft
    /// delete); Keap companies and opportunities cannot be deleted ([`SandboxError::Rejected`]).
    pub fn delete(&self, system: &str, entity: &str, id: &str) -> Result<(), SandboxError> {
        let backend = self.backend(system, entity)?;
        let path = format!("{}/{}", backend.collection_path(entity), id);
        let response = backend.route(&request(Method::DELETE, &path, None));
        if response.status.as_u16() == 404 {
            return Err(SandboxError::NotFound {
                system: system.to_string(),
                entity: entity.to_string(),
                id: id.to_string(),
            });
        }
        accepted(system, response).map(|_| ())
    }

    /// Empties Salesforce's recycle bin as an administrator would: deleted records are
    /// gone for good, and getDeleted answers `INVALID_REPLICATION_DATE` for any start
    /// before now.
    pub fn empty_recycle_bin(&self, system: &str) -> Result<(), SandboxError> {
        let backend = self
            .backends
            .iter()
            .find(|(name, _)| *name == system)
            .map(|(_, backend)| backend)
            .ok_or_else(|| SandboxError::UnknownSystem(system.to_string()))?;
        if backend.empty_recycle_bin() {
            Ok(())
        } else {
            Err(SandboxError::Rejected {
                system: system.to_string(),
                status: 404,
                body: serde_json::json!({"message": "this system has no recycle bin"}),
            })
        }
    }

    /// How many records (live and soft-deleted) all systems hold.
    pub fn record_count(&self) -> usize {
        self.shared
            .store()
            .systems
            .values()
            .flat_map(|entities| entities.values())
            .map(|entity| entity.records.len())
            .sum()
    }

    /// Makes a person edit a record while a client pages through a list: after each of the
    /// next `pages` contact list pages answered with more to come, the first contact of
    /// that page is edited (its `job_title` gets ` (edited during a read)`), so that it
    /// moves to the end of a list ordered by `last_updated`. Keap only.
    pub fn edit_between_pages(&self, system: &str, pages: usize) -> Result<(), SandboxError> {
        let backend = self
            .backends
            .iter()
            .find(|(name, _)| *name == system)
            .map(|(_, backend)| backend)
            .ok_or_else(|| SandboxError::UnknownSystem(system.to_string()))?;
        if backend.edit_between_pages(pages) {
            Ok(())
        } else {
            Err(SandboxError::Rejected {
                system: system.to_string(),
                status: 404,
                body: serde_json::json!({"message": "edits between pages are simulated for Keap only"}),
            })
        }
    }

    /// Requests answered over HTTP per system since start or the last reset.
    pub fn request_counts(&self) -> BTreeMap<String, RequestCounts> {
        let counts = lock(&self.shared.counts);
        SYSTEMS
            .iter()
            .map(|system| {
                (
                    system.to_string(),
                    counts.get(system).copied().unwrap_or_default(),
                )
            })
            .collect()
    }

    pub fn reset_request_counts(&self) {
        lock(&self.shared.counts).clear();
    }

    /// Moves the server clock forward: tokens and sessions expire, rate-limit windows
    /// pass, and later writes get later timestamps. Only the sandbox's clock moves: a client
    /// that bounds a window with its own clock (Salesforce getDeleted `end`) does not see
    /// what the sandbox stamped in its future.
    pub fn advance_clock(&self, by: Duration) {
        self.shared
            .clock
            .advance(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
    }

    /// The server's current time (RFC 3339, milliseconds, UTC).
    pub fn now(&self) -> String {
        store::rfc3339(self.shared.clock.now())
    }

    /// Writes the state file now (no-op without one).
    pub fn save(&self) -> Result<(), SandboxError> {
        match &self.shared.options.state_file {
            Some(path) => save_state(&self.shared, path),
            None => Ok(()),
        }
    }

    /// Stops serving, waits for the servers to finish and writes the state file.
    pub async fn shutdown(mut self) -> Result<(), SandboxError> {
        let _ = self.stop.send(true);
        for server in self.servers.drain(..) {
            match server.await {
                Ok(Err(error)) => tracing::warn!(%error, "sandbox server stopped with an error"),
                Err(error) => tracing::warn!(%error, "sandbox server task failed"),
                Ok(Ok(())) => {}
            }
        }
        if let Some(saver) = self.saver.take() {
            let _ = saver.await;
        }
        self.save()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn accepted(system: &str, response: ApiResponse) -> Result<Option<Value>, SandboxError> {
    let status = response.status;
    if status.is_success() {
        Ok(response.into_body())
    } else {
        Err(SandboxError::Rejected {
            system: system.to_string(),
            status: status.as_u16(),
            body: response.into_body().unwrap_or(Value::Null),
        })
    }
}

/// Reads a state file as it streams in: no copy of its text is held beside the store.
fn load_state(path: &PathBuf) -> Result<Store, SandboxError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Store::default()),
        Err(source) => {
            return Err(SandboxError::StateIo {
                path: path.clone(),
                source,
            });
        }
    };
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    serde_json::from_reader(reader).map_err(|source| {
        if source.is_io() {
            SandboxError::StateIo {
                path: path.clone(),
                source: source.into(),
            }
        } else {
            SandboxError::StateFormat {
                path: path.clone(),
                source,
            }
        }
    })
}

/// Writes the state file as it is serialised (no copy of its text in memory), to a
/// temporary file renamed over the old one, so a crash leaves the old file whole.
fn save_state(shared: &Shared, path: &PathBuf) -> Result<(), SandboxError> {
    use std::io::Write as _;
    let temporary = path.with_extension("tmp");
    let io = |source: std::io::Error| SandboxError::StateIo {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::create(&temporary).map_err(io)?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    {
        let store = shared.store();
        serde_json::to_writer(&mut writer, &*store).map_err(|source| {
            if source.is_io() {
                io(source.into())
            } else {
                SandboxError::StateFormat {
                    path: path.clone(),
                    source,
                }
            }
        })?;
    }
    writer.flush().map_err(io)?;
    drop(writer);
    std::fs::rename(&temporary, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_with(store: Store, path: &std::path::Path) -> Shared {
        Shared {
            store: Mutex::new(store),
            clock: Clock::default(),
            faults: FaultSpec::default(),
            options: SandboxOptions {
                state_file: Some(path.to_path_buf()),
                ..SandboxOptions::default()
            },
            fault_rng: Mutex::new(fastrand::Rng::with_seed(1)),
            rng: Mutex::new(fastrand::Rng::with_seed(1)),
            counts: Mutex::new(BTreeMap::new()),
            dirty: AtomicBool::new(false),
        }
    }

    /// A state file as earlier versions wrote it (fields as a JSON object per record, a
    /// change log on every entity): still read, and written back the same way.
    const OLD_STATE: &str = r#"{"systems":{"customerp":{"products":{"records":{"1":{"id":"1","seq":1,"created":10,"modified":10,"touched":12,"fields":{"sku":"A-1","name":"Æble ✓","unit_price":"12.50","is_active":true,"stock_quantity":5,"weight":0.25,"tags":["x",{"y":null}],"offset":-3}},"2":{"id":"2","seq":2,"number":"P-2","created":11,"modified":11,"touched":11,"deleted":13,"fields":{}}},"tombstones":[{"id":"3","deleted_at":9}],"changes":[{"seq":1,"id":"1","kind":"Created","at":10}],"next_id":3,"next_number":2,"next_seq":2,"next_change":1}}},"last_stamp":13,"counters":{"salesforce.id":4}}"#;

    #[test]
    fn state_files_round_trip_and_old_ones_still_read() {
        let dir = std::env::temp_dir().join(format!("tether-state-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let old = dir.join("old.json");
        std::fs::write(&old, OLD_STATE).expect("written");
        let mut store = load_state(&old).expect("an old state file reads");
        store.rebuild_indexes();
        let products = store.entity("customerp", "products").expect("products");
        let record = products.get("1").expect("record 1");
        assert_eq!(record.fields.get_str("name"), Some("Æble ✓"));
        assert_eq!(record.fields.get("offset"), Some(serde_json::json!(-3)));
        assert_eq!(
            products.by_change(false).len(),
            1,
            "record 2 is soft-deleted"
        );
        assert_eq!(products.by_change(true).len(), 2);

        let saved = dir.join("saved.json");
        save_state(&shared_with(store, &saved), &saved).expect("saved");
        let text = std::fs::read_to_string(&saved).expect("read");
        let expected: Value = serde_json::from_str(OLD_STATE).expect("json");
        let written: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(written, expected, "written back as it was read");
        assert!(
            !dir.join("saved.tmp").exists(),
            "the temporary file is renamed"
        );
        let again = load_state(&saved).expect("reads back");
        assert_eq!(
            again
                .entity("customerp", "products")
                .map(|e| e.records.clone()),
            load_state(&old)
                .expect("old")
                .entity("customerp", "products")
                .map(|e| e.records.clone())
        );

        assert!(
            load_state(&dir.join("missing.json"))
                .expect("absent")
                .is_empty()
        );
        let broken = dir.join("broken.json");
        std::fs::write(&broken, &OLD_STATE[..OLD_STATE.len() / 2]).expect("written");
        let error = load_state(&broken)
            .expect_err("a cut file is refused")
            .to_string();
        assert!(
            error.contains("broken.json") && error.contains("not valid"),
            "{error}"
        );
        let wrong = dir.join("wrong.json");
        std::fs::write(&wrong, r#"{"systems":{"erp":{"x":{"records":{"1":{"id":"1","seq":1,"created":1,"modified":1,"touched":1,"fields":[1]}}}}}}"#).expect("written");
        let error = load_state(&wrong)
            .expect_err("fields must be an object")
            .to_string();
        assert!(error.contains("wrong.json"), "{error}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_org_profile_reads_from_its_text() {
        let org: SalesforceOrg = "no-picklists, hide=Contact.Title+OrderItem.ServiceDate"
            .parse()
            .expect("profile");
        assert!(!org.state_country_picklists && org.reduction_orders);
        assert!(!org.has("Contact", "Title") && !org.has("OrderItem", "ServiceDate"));
        assert!(!org.has("Account", "BillingStateCode") && org.has("Order", "IsReductionOrder"));
        assert_eq!(
            "".parse::<SalesforceOrg>().expect("empty"),
            SalesforceOrg::default()
        );
        for wrong in [
            "picklists",
            "hide=Title",
            "hide=Contact.",
            "hide=Contact.Ti tle",
        ] {
            let error = wrong.parse::<SalesforceOrg>().expect_err(wrong).to_string();
            assert!(
                error.contains("is not part of a Salesforce org profile"),
                "{error}"
            );
        }
    }
}
