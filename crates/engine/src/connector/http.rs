//! The HTTP side of one system: one client, one rate limiter, one token cache and one set
//! of counters, shared by every entity and every flow that uses the system. (Over 1,000
//! lines: every request goes through this one place, and splitting the retry loop from
//! the waits and credentials it needs would spread one decision over several files.)
//!
//! [`HttpCore::send`] is the only way a request leaves the connector. In order, it waits
//! for its turn (a pause the API asked for with `Retry-After`, a slowdown when the API's
//! throttle headers run low, the token bucket of `rate_limit`), attaches credentials, sends
//! only to an allowed origin (the base URL's, the token endpoint's, and Salesforce's
//! instance URL), reads the body in chunks up to `max_response_bytes`, parses JSON, and
//! retries 429, 5xx, timeouts, broken connections and garbled bodies with exponential
//! backoff and jitter, at most `max_retries` times. A request that may already have been
//! applied (a create that timed out) is not sent again. A 401 with a refreshable token gets
//! one fresh token and one more try. Redirects are not followed by the client: a redirect
//! within the origin is followed for reads, one to another origin is refused.
//!
//! The waits the API's rate limits ask for (429s, `Retry-After`, Salesforce's concurrency
//! limit) come out of one budget per system and run, `http.max_wait_seconds`: a wait that
//! does not fit in what remains is not waited; the system is stopped for the rest of the
//! run ([`ConnectorError::WaitBudgetSpent`]). Salesforce's spent daily allowance stops it
//! the same way at once ([`ConnectorError::AllowanceSpent`]). A stopped system sends
//! nothing more: every request fails with the same error until
//! [`HttpCore::start_run`].
//!
//! Each attempt is logged at debug level (method, URL without secrets, status, duration)
//! and counted; errors never carry credentials.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use backon::BackoffBuilder;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::Value;
use tokio::time::Instant;

use crate::connector::ConnectorStats;
use crate::connector::error::{ApiError, ConnectorError, RequestContext};
use crate::connector::project::Projection;
use crate::connector::value::{self, JsonPath};
use crate::spec::env::EnvError;
use crate::spec::system::{
    Auth, ErrorFormat, HttpSettings, RateLimit, RatePeriod, SystemClock, SystemFile,
};

/// The longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The longest slowdown for one request when throttle headers run low.
const MAX_THROTTLE_DELAY: Duration = Duration::from_secs(30);
/// Redirects within the origin followed for one read.
const MAX_REDIRECTS: usize = 5;

/// What a request carries.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
}

/// One request, with the entity it is about (for errors and logs).
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: Method,
    pub url: Url,
    pub body: Body,
    pub entity: String,
    /// Whether sending it twice does no harm; creates are not.
    pub idempotent: bool,
    /// A success's body parsed for some fields of its items only (a listing read for ids).
    pub projection: Option<Arc<Projection>>,
}

impl Request {
    pub fn get(url: Url, entity: &str) -> Request {
        Request {
            method: Method::GET,
            url,
            body: Body::None,
            entity: entity.to_owned(),
            idempotent: true,
            projection: None,
        }
    }
}

/// A final answer: a success, or a client error the caller interprets (404, 422, ...).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    /// The URL that answered (after redirects within the origin).
    pub url: Url,
    /// The body as JSON; `None` when it is empty.
    pub json: Option<Value>,
    /// The body as text, for error messages (empty for a success: only errors quote it).
    pub text: String,
    /// The `Date` header: when the system answered, by its clock.
    pub date: Option<chrono::DateTime<chrono::Utc>>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Counters of one system.
#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    rate_limit_waits: AtomicU64,
    rate_limit_wait_ms: AtomicU64,
    token_fetches: AtomicU64,
}

/// Slowing down when the API's own throttle headers say few requests remain.
#[derive(Debug)]
struct Throttle {
    headers: Vec<HeaderName>,
    /// The time one request is worth under the rate limit.
    interval: Duration,
    /// Below this many remaining requests the connector slows down.
    threshold: i64,
    /// The lowest remaining count of the last answer; -1 when unknown.
    remaining: AtomicI64,
}

impl Throttle {
    fn delay(&self) -> Option<Duration> {
        let remaining = self.remaining.load(Ordering::Relaxed);
        (remaining >= 0 && remaining < self.threshold)
            .then(|| (self.interval * (self.threshold - remaining) as u32).min(MAX_THROTTLE_DELAY))
    }

    fn observe(&self, headers: &HeaderMap) {
        let lowest = self
            .headers
            .iter()
            .filter_map(|name| headers.get(name))
            .filter_map(|v| v.to_str().ok()?.trim().parse::<i64>().ok())
            .min();
        if let Some(lowest) = lowest {
            self.remaining.store(lowest.max(0), Ordering::Relaxed);
        }
    }
}

/// The system's daily request allowance as its answers report it (`allowance` in the
/// system file), and the reserve to leave to the account's other integrations.
#[derive(Debug)]
struct AllowanceWatch {
    /// A `used/allowed` header and the item to read in it (Salesforce's
    /// `Sforce-Limit-Info: api-usage=18/5000`).
    usage: Option<(HeaderName, Option<String>)>,
    /// Headers of the allowance and of what is used (Keap's `x-keap-product-quota-*`).
    limit: Option<HeaderName>,
    used: Option<HeaderName>,
    reserve: f64,
    /// The last answer's figures; -1 while unknown.
    used_seen: AtomicI64,
    allowed_seen: AtomicI64,
}

impl AllowanceWatch {
    fn observe(&self, headers: &HeaderMap) {
        let text = |name: &HeaderName| headers.get(name)?.to_str().ok().map(str::to_owned);
        let figures = match &self.usage {
            Some((name, item)) => text(name).and_then(|t| parse_usage(&t, item.as_deref())),
            None => None,
        }
        .or_else(|| {
            let number = |name: &Option<HeaderName>| {
                text(name.as_ref()?).and_then(|t| t.trim().parse::<u64>().ok())
            };
            Some((number(&self.used)?, number(&self.limit)?))
        });
        if let Some((used, allowed)) = figures {
            let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.used_seen.store(clamp(used), Ordering::Relaxed);
            self.allowed_seen.store(clamp(allowed), Ordering::Relaxed);
        }
    }

    /// The last seen `(used, allowed)`.
    fn seen(&self) -> Option<(u64, u64)> {
        let used = u64::try_from(self.used_seen.load(Ordering::Relaxed)).ok()?;
        let allowed = u64::try_from(self.allowed_seen.load(Ordering::Relaxed)).ok()?;
        Some((used, allowed))
    }
}

/// `(used, allowed)` from a usage header: `18/5000`, or the named item of a list such as
/// Salesforce's `api-usage=25/5000; per-app-api-usage=17/250(appName=sample-app)`. Without
/// an item name the first `used/allowed` pair counts. `None` when there is no such pair.
///
/// Real behaviour (REST API Developer Guide, "Limit Info Header"): "`api-usage` — the API
/// usage for the organization against which the call was made in the format nn/nnnn. The
/// first number is the number of API calls used, and the second number is the API limit
/// for the organization"; `per-app-api-usage` may follow.
pub(crate) fn parse_usage(text: &str, item: Option<&str>) -> Option<(u64, u64)> {
    text.split([';', ',']).find_map(|part| {
        let part = part.trim();
        let (name, value) = match part.split_once('=') {
            Some((name, value)) => (Some(name.trim()), value.trim()),
            None => (None, part),
        };
        if let Some(item) = item
            && !name.is_some_and(|name| name.eq_ignore_ascii_case(item))
        {
            return None;
        }
        let (used, allowed) = value.split_once('/')?;
        let allowed: String = allowed
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some((used.trim().parse().ok()?, allowed.parse().ok()?))
    })
}

/// Whether `used` of `allowed` requests reaches the share `reserve` left to others: the
/// system takes no more requests in this run. An allowance of 0 says nothing.
pub(crate) fn reserve_reached(used: u64, allowed: u64, reserve: f64) -> bool {
    allowed > 0 && used as f64 >= allowed as f64 * (1.0 - reserve)
}

/// What one run has spent of a system: the time its rate limits made the run wait, and
/// why the system takes no more requests in this run.
#[derive(Debug, Default)]
struct RunState {
    waited: Duration,
    stopped: Option<ConnectorError>,
}

/// The total wait after one more wait of `extra`, when it fits in `limit`.
fn charge(waited: Duration, limit: Duration, extra: Duration) -> Option<Duration> {
    let total = waited.checked_add(extra)?;
    (total <= limit).then_some(total)
}

/// What a Salesforce `REQUEST_LIMIT_EXCEEDED` says. The REST API Developer Guide
/// ("Status Codes and Error Responses",
/// <https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm>)
/// documents it as a 403: "If the error code is REQUEST_LIMIT_EXCEEDED, you've exceeded API
/// request limits in your org" — the org's allowance of API requests over a rolling 24
/// hours (message `TotalRequests Limit exceeded.`), which no retry within a run can
/// restore. The same code also reports the limit on concurrent long-running requests
/// (`ConcurrentPerOrgLongTxn Limit exceeded.`, `ConcurrentRequests ...`), which frees up
/// in seconds: that one is waited out like a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestLimit {
    /// The daily allowance is spent: stop the system for this run.
    Allowance,
    /// Too many concurrent requests: retry after a backoff.
    Concurrency,
}

fn request_limit(status: u16, error: &ApiError) -> Option<RequestLimit> {
    if status != 403 || error.code.as_deref() != Some("REQUEST_LIMIT_EXCEEDED") {
        return None;
    }
    if error.message.trim_start().starts_with("Concurrent") {
        Some(RequestLimit::Concurrency)
    } else {
        Some(RequestLimit::Allowance)
    }
}

/// Error paths compiled from the system file.
#[derive(Debug)]
struct ErrorPaths {
    message: JsonPath,
    code: Option<JsonPath>,
    field: Option<JsonPath>,
}

/// A cached access token.
#[derive(Debug, Clone)]
struct Token {
    access: String,
    expires_at: Option<Instant>,
    generation: u64,
    /// Salesforce: the instance URL followed by the API path.
    api_base: Option<Url>,
}

#[derive(Debug)]
enum TokenKind {
    OAuth2 { scope: Option<String> },
    Salesforce { api_path: String },
}

#[derive(Debug)]
struct TokenSource {
    kind: TokenKind,
    url: Url,
    client_id: String,
    client_secret: String,
    cache: tokio::sync::Mutex<Option<Token>>,
    generations: AtomicU64,
}

#[derive(Debug)]
enum Credentials {
    None,
    Header(HeaderName, HeaderValue),
    Token(Box<TokenSource>),
}

/// The credentials of one request, and the API base they go with.
pub(crate) struct Authorized {
    header: Option<(HeaderName, HeaderValue)>,
    generation: Option<u64>,
    pub api_base: Url,
}

/// The HTTP side of one system (see the module comment).
#[derive(Debug)]
pub(crate) struct HttpCore {
    pub system: String,
    client: reqwest::Client,
    base_url: Url,
    timeout_seconds: f64,
    max_retries: u32,
    retry_delay: Duration,
    max_response_bytes: u64,
    limiter: Option<DefaultDirectRateLimiter>,
    throttle: Option<Throttle>,
    allowance: Option<AllowanceWatch>,
    paused_until: Mutex<Option<Instant>>,
    /// Requests in flight at most (`http.concurrency`): a permit is held from the request's
    /// turn under the rate limit until its answer is read.
    in_flight: tokio::sync::Semaphore,
    pub concurrency: usize,
    /// The most one run may wait for the API's rate limits (`http.max_wait_seconds`).
    max_wait: Duration,
    run: Mutex<RunState>,
    allowed: RwLock<Vec<String>>,
    secrets: RwLock<Vec<String>>,
    errors: Option<ErrorPaths>,
    credentials: Credentials,
    stats: Stats,
    /// Whether the `Date` header of an answer is the clock of the records' times
    /// (`clock: date_header`).
    pub date_is_record_clock: bool,
    /// Each described entity's field names (lowercase), read once per run
    /// ([`crate::connector::describe`]).
    pub(crate) described:
        Mutex<std::collections::HashMap<String, std::sync::Arc<std::collections::HashSet<String>>>>,
}

fn config(system: &str, message: impl Into<String>) -> ConnectorError {
    ConnectorError::Config {
        system: system.to_owned(),
        message: message.into(),
    }
}

fn env_error(system: &str, what: &str, error: EnvError) -> ConnectorError {
    config(system, format!("{what}: {error}"))
}

/// Joins an endpoint path to a base URL by concatenation (`http://h/api` + `/customers`).
pub(crate) fn join_path(base: &Url, path: &str) -> Result<Url, String> {
    let base = base.as_str().trim_end_matches('/');
    let path = path.trim();
    let joined = if path.starts_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    };
    Url::parse(&joined).map_err(|e| format!("`{joined}` is not a valid URL: {e}"))
}

/// The share of a stated rate limit the connector paces itself at.
const PACE_SHARE: f64 = 0.97;

fn quota(system: &str, rate: &RateLimit) -> Result<(Quota, Duration), ConnectorError> {
    let period = match rate.per {
        RatePeriod::Second => Duration::from_secs(1),
        RatePeriod::Minute => Duration::from_secs(60),
        RatePeriod::Hour => Duration::from_secs(3600),
        RatePeriod::Day => Duration::from_secs(86_400),
    };
    let requests = std::num::NonZeroU32::new(rate.requests)
        .ok_or_else(|| config(system, "rate_limit.requests must be at least 1"))?;
    // A little under the stated pace: a request the network holds back a few milliseconds
    // must still arrive inside the API's window, which may slide (any `per` holds at most
    // `requests`), not merely refill.
    let interval = period.mul_f64(1.0 / (f64::from(requests.get()) * PACE_SHARE));
    let burst = std::num::NonZeroU32::new(rate.burst.unwrap_or(1)).unwrap_or(requests);
    let quota = Quota::with_period(interval)
        .ok_or_else(|| config(system, "rate_limit is too fast"))?
        .allow_burst(burst);
    Ok((quota, interval))
}

impl HttpCore {
    /// Builds the HTTP side of a system, resolving URLs and credentials with `lookup`.
    pub fn new(
        system_file: &SystemFile,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HttpCore, ConnectorError> {
        let system = system_file.system.value.clone();
        let resolve = |what: &str, text: &crate::spec::env::EnvString| {
            text.resolve_with(lookup)
                .map_err(|e| env_error(&system, what, e))
        };
        let base_text = resolve("base_url", &system_file.base_url)?;
        let base_url = Url::parse(base_text.trim())
            .map_err(|e| config(&system, format!("base_url `{base_text}` is not a URL: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(config(&system, "base_url must be an http or https URL"));
        }
        let mut allowed = vec![base_url.origin().ascii_serialization()];
        let mut secrets = Vec::new();
        let token_url = |text: &str| -> Result<Url, ConnectorError> {
            let text = text.trim();
            if text.starts_with("http://") || text.starts_with("https://") {
                Url::parse(text).map_err(|e| config(&system, format!("token URL: {e}")))
            } else {
                join_path(&base_url, text).map_err(|e| config(&system, e))
            }
        };
        let credentials = match &system_file.auth.value {
            Auth::None => Credentials::None,
            Auth::Bearer { token } => {
                let token = resolve("auth.bearer.token", token)?;
                secrets.push(token.clone());
                Credentials::Header(
                    header::AUTHORIZATION,
                    sensitive(&system, &format!("Bearer {token}"))?,
                )
            }
            Auth::ApiKey { header: name, key } => {
                let key = resolve("auth.api_key.key", key)?;
                secrets.push(key.clone());
                let name = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| config(&system, format!("`{name}` is not a header name")))?;
                Credentials::Header(name, sensitive(&system, &key)?)
            }
            Auth::Oauth2ClientCredentials {
                token_url: url,
                client_id,
                client_secret,
                scope,
            } => {
                let url = token_url(&resolve("auth.oauth2_client_credentials.token_url", url)?)?;
                let client_secret = resolve(
                    "auth.oauth2_client_credentials.client_secret",
                    client_secret,
                )?;
                secrets.push(client_secret.clone());
                allowed.push(url.origin().ascii_serialization());
                Credentials::Token(Box::new(TokenSource {
                    kind: TokenKind::OAuth2 {
                        scope: scope.clone(),
                    },
                    url,
                    client_id: resolve("auth.oauth2_client_credentials.client_id", client_id)?,
                    client_secret,
                    cache: tokio::sync::Mutex::new(None),
                    generations: AtomicU64::new(0),
                }))
            }
            Auth::Salesforce {
                token_path,
                api_path,
                client_id,
                client_secret,
            } => {
                let url = token_url(token_path)?;
                let client_secret = resolve("auth.salesforce.client_secret", client_secret)?;
                secrets.push(client_secret.clone());
                allowed.push(url.origin().ascii_serialization());
                Credentials::Token(Box::new(TokenSource {
                    kind: TokenKind::Salesforce {
                        api_path: api_path.clone(),
                    },
                    url,
                    client_id: resolve("auth.salesforce.client_id", client_id)?,
                    client_secret,
                    cache: tokio::sync::Mutex::new(None),
                    generations: AtomicU64::new(0),
                }))
            }
        };
        let loopback = matches!(
            base_url.host_str(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
        );
        if !matches!(credentials, Credentials::None) && base_url.scheme() == "http" && !loopback {
            tracing::warn!(system = %system, "credentials are sent over plain HTTP; use https");
        }
        let settings: &HttpSettings = &system_file.http;
        if !(settings.timeout_seconds > 0.0 && settings.timeout_seconds.is_finite()) {
            return Err(config(&system, "http.timeout_seconds must be positive"));
        }
        let timeout = Duration::from_secs_f64(settings.timeout_seconds);
        if !(settings.max_wait_seconds >= 0.0 && settings.max_wait_seconds.is_finite()) {
            return Err(config(&system, "http.max_wait_seconds must be 0 or more"));
        }
        let max_wait = Duration::from_secs_f64(settings.max_wait_seconds.min(1e9));
        if !(1..=crate::spec::system::MAX_CONCURRENCY).contains(&settings.concurrency) {
            return Err(config(
                &system,
                format!(
                    "http.concurrency must be 1 to {}",
                    crate::spec::system::MAX_CONCURRENCY
                ),
            ));
        }
        let concurrency = settings.concurrency as usize;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("tether/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| config(&system, format!("cannot build the HTTP client: {e}")))?;
        let (limiter, throttle) = match &system_file.rate_limit {
            Some(rate) => {
                let (quota, interval) = quota(&system, rate)?;
                let headers = rate
                    .remaining_headers
                    .iter()
                    .map(|h| {
                        HeaderName::from_bytes(h.trim().as_bytes())
                            .map_err(|_| config(&system, format!("`{h}` is not a header name")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let throttle = (!headers.is_empty()).then(|| Throttle {
                    headers,
                    interval,
                    threshold: i64::from((rate.requests / 10).max(1)),
                    remaining: AtomicI64::new(-1),
                });
                (Some(RateLimiter::direct(quota)), throttle)
            }
            None => (None, None),
        };
        let errors = match &system_file.errors {
            Some(format) => Some(compile_errors(&system, format)?),
            None => None,
        };
        let header_name = |h: &str| {
            HeaderName::from_bytes(h.trim().as_bytes())
                .map_err(|_| config(&system, format!("`{h}` is not a header name")))
        };
        let allowance = match &system_file.allowance {
            Some(spec) => {
                let reserve = spec.reserve().map_err(|e| config(&system, e))?;
                if !spec.complete() {
                    return Err(config(
                        &system,
                        "allowance needs usage_header, or both limit_header and used_header",
                    ));
                }
                Some(AllowanceWatch {
                    usage: spec
                        .usage_header
                        .as_deref()
                        .map(header_name)
                        .transpose()?
                        .map(|name| (name, spec.usage_item.clone())),
                    limit: spec.limit_header.as_deref().map(header_name).transpose()?,
                    used: spec.used_header.as_deref().map(header_name).transpose()?,
                    reserve,
                    used_seen: AtomicI64::new(-1),
                    allowed_seen: AtomicI64::new(-1),
                })
            }
            None => None,
        };
        Ok(HttpCore {
            system,
            client,
            base_url,
            timeout_seconds: settings.timeout_seconds,
            max_retries: settings.max_retries,
            retry_delay: Duration::from_millis(settings.retry_delay_ms),
            max_response_bytes: settings.max_response_bytes,
            limiter,
            throttle,
            allowance,
            paused_until: Mutex::new(None),
            in_flight: tokio::sync::Semaphore::new(concurrency),
            concurrency,
            max_wait,
            run: Mutex::new(RunState::default()),
            allowed: RwLock::new(allowed),
            secrets: RwLock::new(secrets),
            errors,
            credentials,
            stats: Stats::default(),
            date_is_record_clock: system_file.clock == Some(SystemClock::DateHeader),
            described: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> ConnectorStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConnectorStats {
            requests: load(&self.stats.requests),
            errors: load(&self.stats.errors),
            retries: load(&self.stats.retries),
            rate_limit_waits: load(&self.stats.rate_limit_waits),
            rate_limit_wait_ms: load(&self.stats.rate_limit_wait_ms),
            token_fetches: load(&self.stats.token_fetches),
            allowance_used: self.allowance_seen().map(|(used, _)| used),
            allowance_limit: self.allowance_seen().map(|(_, allowed)| allowed),
        }
    }

    /// The daily allowance the last answer reported: `(used, allowed)`.
    pub fn allowance_seen(&self) -> Option<(u64, u64)> {
        self.allowance.as_ref().and_then(AllowanceWatch::seen)
    }

    /// Stops the system for the run when the last answer says the allowance is used up
    /// to its reserve.
    fn check_allowance(&self) -> Result<(), ConnectorError> {
        let Some(watch) = &self.allowance else {
            return Ok(());
        };
        match watch.seen() {
            Some((used, allowed)) if reserve_reached(used, allowed, watch.reserve) => {
                let error = ConnectorError::AllowanceReserve {
                    system: self.system.clone(),
                    used,
                    allowed,
                    reserve: watch.reserve,
                };
                self.stop(&error);
                Err(error)
            }
            _ => Ok(()),
        }
    }

    /// The context of a request, for errors.
    pub fn context(&self, method: &Method, url: &Url, entity: &str) -> Box<RequestContext> {
        Box::new(RequestContext {
            system: self.system.clone(),
            entity: entity.to_owned(),
            method: method.to_string(),
            url: self.redact(&value::redact_url(url)),
        })
    }

    /// Removes every known secret from a text.
    pub fn redact(&self, text: &str) -> String {
        match self.secrets.read() {
            Ok(secrets) => value::redact_secrets(text, &secrets),
            Err(_) => text.to_owned(),
        }
    }

    /// Whether credentials may go to this URL.
    pub fn allowed(&self, url: &Url) -> bool {
        let origin = url.origin().ascii_serialization();
        self.allowed
            .read()
            .map(|allowed| allowed.contains(&origin))
            .unwrap_or(false)
    }

    /// Credentials for the next request, fetching a token when there is none or it expired.
    pub async fn authorize(&self) -> Result<Authorized, ConnectorError> {
        match &self.credentials {
            Credentials::None => Ok(Authorized {
                header: None,
                generation: None,
                api_base: self.base_url.clone(),
            }),
            Credentials::Header(name, value) => Ok(Authorized {
                header: Some((name.clone(), value.clone())),
                generation: None,
                api_base: self.base_url.clone(),
            }),
            Credentials::Token(source) => {
                let mut cache = source.cache.lock().await;
                let fresh = cache
                    .as_ref()
                    .filter(|t| t.expires_at.is_none_or(|at| Instant::now() < at))
                    .cloned();
                let token = match fresh {
                    Some(token) => token,
                    None => {
                        let token = self.fetch_token(source).await?;
                        *cache = Some(token.clone());
                        token
                    }
                };
                Ok(Authorized {
                    header: Some((
                        header::AUTHORIZATION,
                        sensitive(&self.system, &format!("Bearer {}", token.access))?,
                    )),
                    generation: Some(token.generation),
                    api_base: token.api_base.unwrap_or_else(|| self.base_url.clone()),
                })
            }
        }
    }

    /// The URL endpoint paths are appended to: the base URL, or for Salesforce the instance
    /// URL of the current token followed by the API path (a token is fetched when there is
    /// none; an expired one still names the instance).
    pub async fn api_base(&self) -> Result<Url, ConnectorError> {
        if let Credentials::Token(source) = &self.credentials
            && let TokenKind::Salesforce { .. } = source.kind
        {
            let cached = source
                .cache
                .lock()
                .await
                .as_ref()
                .and_then(|t| t.api_base.clone());
            return match cached {
                Some(api_base) => Ok(api_base),
                None => Ok(self.authorize().await?.api_base),
            };
        }
        Ok(self.base_url.clone())
    }

    /// Drops the token a request was refused with, unless another request already
    /// replaced it.
    async fn invalidate(&self, generation: u64) {
        if let Credentials::Token(source) = &self.credentials {
            let mut cache = source.cache.lock().await;
            if cache.as_ref().is_some_and(|t| t.generation == generation) {
                *cache = None;
            }
        }
    }

    async fn fetch_token(&self, source: &TokenSource) -> Result<Token, ConnectorError> {
        self.stats.token_fetches.fetch_add(1, Ordering::Relaxed);
        let mut form = vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("client_id".to_owned(), source.client_id.clone()),
            ("client_secret".to_owned(), source.client_secret.clone()),
        ];
        if let TokenKind::OAuth2 { scope: Some(scope) } = &source.kind {
            form.push(("scope".to_owned(), scope.clone()));
        }
        let request = Request {
            method: Method::POST,
            url: source.url.clone(),
            body: Body::Form(form),
            entity: String::new(),
            idempotent: true,
            projection: None,
        };
        let context = self.context(&request.method, &request.url, "");
        let salesforce = matches!(source.kind, TokenKind::Salesforce { .. });
        if salesforce && generic_salesforce_login(&source.url) {
            return Err(ConnectorError::Auth {
                context,
                message: MY_DOMAIN_HINT.to_owned(),
            });
        }
        let reply = self.send_with(&request, None).await?;
        if !reply.is_success() {
            let error = self.api_error(reply.status, reply.json.as_ref(), &reply.text);
            let hint = if salesforce && reply.text.contains("not supported on this domain") {
                format!(" ({MY_DOMAIN_HINT})")
            } else {
                String::new()
            };
            return Err(ConnectorError::Auth {
                context,
                message: format!(
                    "the token endpoint answered {}: {error}{hint}",
                    reply.status
                ),
            });
        }
        let body = reply.json.unwrap_or(Value::Null);
        let Some(access) = body.get("access_token").and_then(Value::as_str) else {
            return Err(ConnectorError::Auth {
                context,
                message: "the token response has no access_token".to_owned(),
            });
        };
        if let Ok(mut secrets) = self.secrets.write() {
            secrets.push(access.to_owned());
        }
        let expires_at = match body.get("expires_in") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|seconds| {
            let lifetime = Duration::from_secs_f64(seconds.min(1e9));
            Instant::now() + lifetime - (lifetime / 10).min(Duration::from_secs(30))
        });
        let api_base = match &source.kind {
            TokenKind::OAuth2 { .. } => None,
            TokenKind::Salesforce { api_path } => {
                let instance = body
                    .get("instance_url")
                    .and_then(Value::as_str)
                    .and_then(|s| Url::parse(s).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| ConnectorError::Auth {
                        context: context.clone(),
                        message: "the token response has no valid instance_url".to_owned(),
                    })?;
                if let Ok(mut allowed) = self.allowed.write() {
                    let origin = instance.origin().ascii_serialization();
                    if !allowed.contains(&origin) {
                        allowed.push(origin);
                    }
                }
                Some(
                    join_path(&instance, api_path).map_err(|message| ConnectorError::Auth {
                        context: context.clone(),
                        message,
                    })?,
                )
            }
        };
        tracing::debug!(system = %self.system, "fetched an access token");
        Ok(Token {
            access: access.to_owned(),
            expires_at,
            generation: source.generations.fetch_add(1, Ordering::Relaxed) + 1,
            api_base,
        })
    }

    /// Sends a request with the system's credentials. Success and client errors come back
    /// as a [`Reply`]; a 401 with a refreshable token is tried once more with a fresh one.
    pub async fn send(&self, request: &Request) -> Result<Reply, ConnectorError> {
        let mut refreshed = false;
        loop {
            let authorized = self.authorize().await?;
            let reply = self.send_with(request, authorized.header).await?;
            if reply.status != 401 {
                return Ok(reply);
            }
            match authorized.generation {
                Some(generation) if !refreshed => {
                    refreshed = true;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(system = %self.system, "401: fetching a fresh token");
                    self.invalidate(generation).await;
                }
                _ => {
                    let error = self.api_error(reply.status, reply.json.as_ref(), &reply.text);
                    return Err(ConnectorError::Auth {
                        context: self.context(&request.method, &reply.url, &request.entity),
                        message: format!("the API answered 401: {error}"),
                    });
                }
            }
        }
    }

    /// Waits for the request's turn: a pause the API asked for, a slowdown when its
    /// throttle headers run low, and the token bucket.
    async fn wait_turn(&self) {
        let started = Instant::now();
        let mut waited = false;
        loop {
            let until = self.paused_until.lock().ok().and_then(|p| *p);
            match until {
                Some(until) if until > Instant::now() => {
                    waited = true;
                    tokio::time::sleep_until(until).await;
                }
                _ => break,
            }
        }
        if let Some(delay) = self.throttle.as_ref().and_then(Throttle::delay) {
            waited = true;
            tracing::debug!(system = %self.system, delay_ms = delay.as_millis() as u64,
                "throttle headers run low: slowing down");
            tokio::time::sleep(delay).await;
        }
        if let Some(limiter) = &self.limiter
            && limiter.check().is_err()
        {
            waited = true;
            limiter.until_ready().await;
        }
        if waited {
            self.stats.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
            self.stats
                .rate_limit_wait_ms
                .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Starts a run: the whole wait budget again, and a system stopped in the last run
    /// takes requests again.
    pub fn start_run(&self) {
        *lock(&self.run) = RunState::default();
        lock(&self.described).clear();
    }

    /// Why the system takes no more requests in this run.
    fn stopped(&self) -> Option<ConnectorError> {
        lock(&self.run).stopped.clone()
    }

    /// Stops the system's requests for the rest of the run.
    fn stop(&self, error: &ConnectorError) {
        tracing::warn!(system = %self.system, %error, "no more requests to this system in this run");
        let mut run = lock(&self.run);
        if run.stopped.is_none() {
            run.stopped = Some(error.clone());
        }
    }

    /// Makes every request of this system wait `wait` from now, when it fits in the run's
    /// wait budget (the pauses of concurrent requests overlap and count once); otherwise
    /// stops the system for the run.
    fn reserve_wait(&self, wait: Duration) -> Result<(), ConnectorError> {
        let now = Instant::now();
        let mut paused = lock(&self.paused_until);
        let mut run = lock(&self.run);
        if let Some(stopped) = &run.stopped {
            return Err(stopped.clone());
        }
        let current = paused.filter(|p| *p > now).unwrap_or(now);
        let until = now + wait;
        let extra = until.saturating_duration_since(current);
        match charge(run.waited, self.max_wait, extra) {
            Some(total) => {
                run.waited = total;
                if until > current {
                    *paused = Some(until);
                }
                Ok(())
            }
            None => {
                let error = ConnectorError::WaitBudgetSpent {
                    system: self.system.clone(),
                    waited: run.waited,
                    asked: wait,
                    limit: self.max_wait,
                };
                tracing::warn!(system = %self.system, %error,
                    "no more requests to this system in this run");
                run.stopped = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Sends with the given credentials header, with retries (see the module comment).
    async fn send_with(
        &self,
        request: &Request,
        auth: Option<(HeaderName, HeaderValue)>,
    ) -> Result<Reply, ConnectorError> {
        let mut backoff = backon::ExponentialBuilder::new()
            .with_min_delay(self.retry_delay)
            .with_max_delay(MAX_BACKOFF)
            .with_max_times(self.max_retries as usize)
            .with_jitter()
            .build();
        let mut url = request.url.clone();
        let mut redirects = 0;
        loop {
            if !self.allowed(&url) {
                return Err(ConnectorError::ForeignOrigin {
                    context: self.context(&request.method, &request.url, &request.entity),
                    target: url.origin().ascii_serialization(),
                });
            }
            if let Some(stopped) = self.stopped() {
                return Err(stopped);
            }
            self.check_allowance()?;
            // The semaphore is never closed, so acquiring only fails if it were.
            let permit = self.in_flight.acquire().await.ok();
            self.wait_turn().await;
            if let Some(stopped) = self.stopped() {
                return Err(stopped);
            }
            let started = Instant::now();
            let outcome = self.attempt(request, &url, auth.as_ref()).await;
            drop(permit);
            let elapsed_ms = started.elapsed().as_millis() as u64;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let shown_url = self.redact(&value::redact_url(&url));
            let (error, retry_after, throttled) = match outcome {
                Ok((status, headers, bytes)) => {
                    tracing::debug!(system = %self.system, entity = %request.entity,
                        method = %request.method, url = %shown_url, status, duration_ms = elapsed_ms,
                        "http request");
                    if let Some(throttle) = &self.throttle {
                        throttle.observe(&headers);
                    }
                    if let Some(allowance) = &self.allowance {
                        allowance.observe(&headers);
                    }
                    if status >= 400 {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let success = (200..300).contains(&status);
                    // A page of a thousand records is not copied for an error it is not.
                    let text = if success {
                        String::new()
                    } else {
                        String::from_utf8_lossy(&bytes).into_owned()
                    };
                    let json = if bytes.iter().all(u8::is_ascii_whitespace) {
                        Ok(None)
                    } else {
                        match request.projection.as_deref().filter(|_| success) {
                            Some(projection) => projection.parse(&bytes).map(Some),
                            None => serde_json::from_slice::<Value>(&bytes).map(Some),
                        }
                    };
                    match status {
                        200..=299 => match json {
                            Ok(json) => {
                                return Ok(Reply {
                                    status,
                                    url,
                                    json,
                                    text,
                                    date: date_header(&headers),
                                });
                            }
                            Err(e) => {
                                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                                let error = ConnectorError::Malformed {
                                    context: self.context(&request.method, &url, &request.entity),
                                    message: format!("the body is not valid JSON: {e}"),
                                    transient: true,
                                };
                                (error, None, false)
                            }
                        },
                        300..=399 => {
                            let location = headers
                                .get(header::LOCATION)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|l| url.join(l).ok());
                            match location {
                                Some(target) if !self.allowed(&target) => {
                                    return Err(ConnectorError::ForeignOrigin {
                                        context: self.context(
                                            &request.method,
                                            &url,
                                            &request.entity,
                                        ),
                                        target: target.origin().ascii_serialization(),
                                    });
                                }
                                Some(target)
                                    if request.method == Method::GET
                                        && redirects < MAX_REDIRECTS =>
                                {
                                    redirects += 1;
                                    url = target;
                                    continue;
                                }
                                _ => {
                                    let error = self.status_error(
                                        request,
                                        &url,
                                        status,
                                        json.ok().flatten().as_ref(),
                                        &text,
                                        None,
                                    );
                                    return Err(error);
                                }
                            }
                        }
                        429 | 408 | 500..=599 => {
                            let retry_after = retry_after(&headers);
                            let json = json.ok().flatten();
                            let error = self.status_error(
                                request,
                                &url,
                                status,
                                json.as_ref(),
                                &text,
                                retry_after,
                            );
                            (error, retry_after, status == 429)
                        }
                        403 => {
                            let json = json.ok().flatten();
                            let api = self.api_error(status, json.as_ref(), &text);
                            match request_limit(status, &api) {
                                None => {
                                    return Ok(Reply {
                                        status,
                                        url,
                                        json,
                                        text,
                                        date: date_header(&headers),
                                    });
                                }
                                Some(RequestLimit::Allowance) => {
                                    let error = ConnectorError::AllowanceSpent {
                                        context: self.context(
                                            &request.method,
                                            &url,
                                            &request.entity,
                                        ),
                                        error: api,
                                    };
                                    self.stop(&error);
                                    return Err(error);
                                }
                                Some(RequestLimit::Concurrency) => {
                                    let retry_after = retry_after(&headers);
                                    let error = ConnectorError::Status {
                                        context: self.context(
                                            &request.method,
                                            &url,
                                            &request.entity,
                                        ),
                                        status,
                                        error: api,
                                        retry_after,
                                    };
                                    (error, retry_after, true)
                                }
                            }
                        }
                        _ => {
                            return Ok(Reply {
                                status,
                                url,
                                json: json.ok().flatten(),
                                text,
                                date: date_header(&headers),
                            });
                        }
                    }
                }
                Err(error) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(system = %self.system, entity = %request.entity,
                        method = %request.method, url = %shown_url, duration_ms = elapsed_ms,
                        error = %error, "http request failed");
                    (error, None, false)
                }
            };
            let may_retry =
                error.is_retryable() && (request.idempotent || !error.may_have_applied());
            if !may_retry {
                return Err(error);
            }
            let Some(delay) = backoff.next() else {
                return Err(error);
            };
            // A wait the API asked for (or a backoff after its rate limit) pauses every
            // request of the system and comes out of the run's wait budget.
            let delay = retry_after.unwrap_or(delay);
            if retry_after.is_some() || throttled {
                self.reserve_wait(delay)?;
                self.stats.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .rate_limit_wait_ms
                    .fetch_add(delay.as_millis() as u64, Ordering::Relaxed);
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(system = %self.system, entity = %request.entity,
                delay_ms = delay.as_millis() as u64, error = %error, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt: sends and reads the body within the size limit.
    async fn attempt(
        &self,
        request: &Request,
        url: &Url,
        auth: Option<&(HeaderName, HeaderValue)>,
    ) -> Result<(u16, HeaderMap, Vec<u8>), ConnectorError> {
        let mut builder = self
            .client
            .request(request.method.clone(), url.clone())
            .header(header::ACCEPT, "application/json");
        if let Some((name, value)) = auth {
            builder = builder.header(name.clone(), value.clone());
        }
        builder = match &request.body {
            Body::None => builder,
            Body::Json(json) => builder.json(json),
            Body::Form(form) => builder.form(form),
        };
        let context = || self.context(&request.method, url, &request.entity);
        let mut response = builder
            .send()
            .await
            .map_err(|e| self.transport(e, context()))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let limit = self.max_response_bytes;
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(ConnectorError::TooLarge {
                context: context(),
                limit,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport(e, context()))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(ConnectorError::TooLarge {
                    context: context(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body))
    }

    fn transport(&self, error: reqwest::Error, context: Box<RequestContext>) -> ConnectorError {
        if error.is_timeout() {
            return ConnectorError::Timeout {
                context,
                seconds: self.timeout_seconds,
            };
        }
        let before_sending = error.is_connect();
        let error = error.without_url();
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        let message = self.redact(&message);
        ConnectorError::Transport {
            context,
            message,
            before_sending,
        }
    }

    fn status_error(
        &self,
        request: &Request,
        url: &Url,
        status: u16,
        json: Option<&Value>,
        text: &str,
        retry_after: Option<Duration>,
    ) -> ConnectorError {
        ConnectorError::Status {
            context: self.context(&request.method, url, &request.entity),
            status,
            error: self.api_error(status, json, text),
            retry_after,
        }
    }

    /// Reads an error body with the system file's `errors` paths, falling back on the
    /// usual shapes (`{"error":{"message"}}`, `{"message"}`, Salesforce's array, OAuth's
    /// `error_description`) and then on the start of the body.
    pub fn api_error(&self, status: u16, json: Option<&Value>, text: &str) -> ApiError {
        let as_text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            Value::Array(items) => items.first().and_then(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            }),
            other => Some(other.to_string()),
        };
        let mut error = ApiError {
            status: Some(status),
            code: None,
            message: String::new(),
            field: None,
        };
        if let Some(json) = json {
            if let Some(paths) = &self.errors {
                error.message = paths
                    .message
                    .first(json)
                    .and_then(as_text)
                    .unwrap_or_default();
                error.code = paths
                    .code
                    .as_ref()
                    .and_then(|p| p.first(json))
                    .and_then(as_text);
                error.field = paths
                    .field
                    .as_ref()
                    .and_then(|p| p.first(json))
                    .and_then(as_text);
            }
            let item = match json {
                Value::Array(items) => items.first().unwrap_or(json),
                _ => json,
            };
            let nested = item.get("error").filter(|e| e.is_object());
            if error.message.is_empty() {
                error.message = [
                    nested.and_then(|e| e.get("message")),
                    item.get("message"),
                    item.get("error_description"),
                    item.get("error").filter(|e| e.is_string()),
                    item.get("fault").and_then(|f| f.get("faultstring")),
                ]
                .into_iter()
                .flatten()
                .find_map(as_text)
                .unwrap_or_default();
            }
            if error.code.is_none() {
                error.code = [
                    nested.and_then(|e| e.get("code")),
                    item.get("errorCode"),
                    item.get("statusCode"),
                    item.get("code"),
                    item.get("error_description").and(item.get("error")),
                ]
                .into_iter()
                .flatten()
                .find_map(as_text);
            }
            if error.field.is_none() {
                error.field = [
                    nested.and_then(|e| e.get("field")),
                    item.get("field"),
                    item.get("fields"),
                ]
                .into_iter()
                .flatten()
                .find_map(as_text);
            }
        }
        if error.message.is_empty() {
            let trimmed = text.trim();
            error.message = if trimmed.is_empty() {
                reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("no message")
                    .to_lowercase()
            } else {
                value::truncate(trimmed, 300)
            };
        }
        error.message = self.redact(&error.message);
        error
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A header value that is never printed.
fn sensitive(system: &str, text: &str) -> Result<HeaderValue, ConnectorError> {
    let mut value = HeaderValue::from_str(text).map_err(|_| {
        config(
            system,
            "a credential contains characters a header cannot carry",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn compile_errors(system: &str, format: &ErrorFormat) -> Result<ErrorPaths, ConnectorError> {
    let compile =
        |p: &str| JsonPath::compile(p).map_err(|e| config(system, format!("errors: {e}")));
    Ok(ErrorPaths {
        message: compile(&format.message)?,
        code: format.code.as_deref().map(compile).transpose()?,
        field: format.field.as_deref().map(compile).transpose()?,
    })
}

/// The `Date` header (an HTTP-date, `Sun, 06 Nov 1994 08:49:37 GMT`); `None` when it is
/// missing or not a date.
fn date_header(headers: &HeaderMap) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = headers.get(header::DATE)?.to_str().ok()?.trim();
    chrono::DateTime::parse_from_rfc2822(text)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(1e6)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// What to do when a Salesforce token request goes to a generic login host.
const MY_DOMAIN_HINT: &str = "Salesforce refuses the client-credentials flow on login.salesforce.com \
     and test.salesforce.com: set the system's base URL (SALESFORCE_LOGIN_URL in the shipped \
     system file) to the org's My Domain URL, such as https://yourcompany.my.salesforce.com";

/// Whether a Salesforce token URL is one of the generic login hosts, which refuse the
/// client-credentials flow.
///
/// Real behaviour (Salesforce Help, "Configure a Connected App for the OAuth 2.0 Client
/// Credentials Flow"): the token request must go to the org's My Domain URL;
/// `login.salesforce.com` and `test.salesforce.com` answer 400 `invalid_grant`, "request
/// not supported on this domain".
fn generic_salesforce_login(url: &Url) -> bool {
    url.host_str().is_some_and(|host| {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host == "login.salesforce.com" || host == "test.salesforce.com"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_salesforce_login_hosts_are_recognised() {
        let url = |text: &str| Url::parse(text).unwrap();
        assert!(generic_salesforce_login(&url(
            "https://login.salesforce.com/services/oauth2/token"
        )));
        assert!(generic_salesforce_login(&url(
            "https://TEST.salesforce.com./services/oauth2/token"
        )));
        assert!(!generic_salesforce_login(&url(
            "https://acme.my.salesforce.com/services/oauth2/token"
        )));
        assert!(!generic_salesforce_login(&url(
            "http://127.0.0.1:8705/services/oauth2/token"
        )));
    }

    #[test]
    fn usage_headers_are_read_as_used_and_allowed() {
        assert_eq!(parse_usage("api-usage=18/5000", None), Some((18, 5000)));
        assert_eq!(
            parse_usage(
                "api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)",
                Some("api-usage")
            ),
            Some((25, 5000))
        );
        assert_eq!(
            parse_usage(
                "per-app-api-usage=17/250(appName=sample-connected-app); api-usage=25/5000",
                Some("api-usage")
            ),
            Some((25, 5000))
        );
        assert_eq!(
            parse_usage("per-app-api-usage=17/250(appName=x)", None),
            Some((17, 250))
        );
        assert_eq!(parse_usage(" 7 / 100 ", None), Some((7, 100)));
        assert_eq!(parse_usage("api-usage=", Some("api-usage")), None);
        assert_eq!(parse_usage("api-usage=x/100", None), None);
        assert_eq!(parse_usage("", None), None);
        assert_eq!(parse_usage("api-usage=1/2", Some("other")), None);
    }

    #[test]
    fn the_reserve_is_left_to_others() {
        assert!(!reserve_reached(79, 100, 0.2));
        assert!(reserve_reached(80, 100, 0.2));
        assert!(reserve_reached(150, 100, 0.2));
        assert!(!reserve_reached(99, 100, 0.0));
        assert!(reserve_reached(100, 100, 0.0));
        assert!(
            !reserve_reached(5, 0, 0.2),
            "an allowance of 0 says nothing"
        );
        assert!(reserve_reached(1, 10, 0.95));
    }

    #[test]
    fn waits_come_out_of_one_budget() {
        let limit = Duration::from_secs(120);
        assert_eq!(
            charge(Duration::ZERO, limit, Duration::from_secs(30)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            charge(Duration::from_secs(90), limit, Duration::from_secs(30)),
            Some(limit)
        );
        assert_eq!(
            charge(Duration::from_secs(90), limit, Duration::from_secs(31)),
            None
        );
        assert_eq!(
            charge(Duration::ZERO, limit, Duration::from_secs(300)),
            None
        );
        assert_eq!(charge(Duration::MAX, limit, Duration::from_secs(1)), None);
        assert_eq!(
            charge(Duration::ZERO, Duration::ZERO, Duration::ZERO),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn salesforce_request_limits_are_told_apart() {
        let error = |message: &str, code: Option<&str>| ApiError {
            status: Some(403),
            code: code.map(str::to_owned),
            message: message.to_owned(),
            field: None,
        };
        let code = Some("REQUEST_LIMIT_EXCEEDED");
        assert_eq!(
            request_limit(403, &error("TotalRequests Limit exceeded.", code)),
            Some(RequestLimit::Allowance)
        );
        assert_eq!(
            request_limit(403, &error("ConcurrentPerOrgLongTxn Limit exceeded.", code)),
            Some(RequestLimit::Concurrency)
        );
        assert_eq!(
            request_limit(403, &error("anything else", code)),
            Some(RequestLimit::Allowance)
        );
        assert_eq!(
            request_limit(
                403,
                &error("insufficient access", Some("INSUFFICIENT_ACCESS"))
            ),
            None
        );
        assert_eq!(
            request_limit(400, &error("TotalRequests Limit exceeded.", code)),
            None
        );
    }
}
