//! The HTTP edge shared by the simulators: one axum server per system whose single
//! fallback handler counts the request, applies latency and injected faults, reads the
//! body and hands a plain [`ApiRequest`] to the system's [`Simulator`]. Routing, auth and
//! error bodies are each simulator's own, so no framework rejection ever reaches a client
//! in a shape its contract does not know.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use crate::Shared;
use crate::faults::FaultKind;
use crate::store::{Stamp, push_digits};

/// The largest request body the simulators read.
const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// A request as a simulator sees it: method, raw path, decoded query, headers, body.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Made by [`crate::Sandbox`]'s direct access, not received over HTTP: an answer is
    /// read back as a value, so records are answered as values rather than JSON text.
    pub direct: bool,
}

impl ApiRequest {
    pub fn new(method: Method, path_and_query: &str, headers: HeaderMap, body: Bytes) -> Self {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        Self {
            method,
            path: path.to_string(),
            query: parse_urlencoded(query),
            headers,
            body,
            direct: false,
        }
    }

    /// The first value of a query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The bearer token of the `Authorization` header.
    pub fn bearer(&self) -> Option<&str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    /// `Authorization: Basic base64(id:secret)`.
    pub fn basic_credentials(&self) -> Option<(String, String)> {
        let value = self.header("authorization")?;
        let (scheme, encoded) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = decode_base64(encoded.trim())?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        Some((id.to_string(), secret.to_string()))
    }

    /// The path segments after `prefix`, percent-decoded; `None` when the path is elsewhere.
    /// A trailing slash is ignored (`/contacts/` is `/contacts`).
    pub fn segments_after(&self, prefix: &str) -> Option<Vec<String>> {
        let rest = self.path.strip_prefix(prefix)?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        Some(
            rest.split('/')
                .filter(|segment| !segment.is_empty())
                .map(|segment| decode_component(segment, false))
                .collect(),
        )
    }

    pub fn json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body read as `application/x-www-form-urlencoded`.
    pub fn form(&self) -> Vec<(String, String)> {
        parse_urlencoded(&String::from_utf8_lossy(&self.body))
    }
}

/// A simulator's answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Option<Value>,
    /// A JSON body already written out (records rendered straight from the store), sent
    /// instead of `body` (boxed, so that a refusal stays small to return).
    pub text: Option<Box<[u8]>>,
    /// Set on answers that refuse a request for being over a rate limit.
    pub throttled: bool,
}

impl ApiResponse {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
            text: None,
            throttled: false,
        }
    }

    /// A JSON answer whose body is already written out.
    pub fn json_text(status: StatusCode, text: Vec<u8>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
            text: Some(text.into_boxed_slice()),
            throttled: false,
        }
    }

    /// The body as a JSON value, read back from its text when it was written out.
    pub fn into_body(self) -> Option<Value> {
        match self.text {
            Some(text) => serde_json::from_slice(&text).ok(),
            None => self.body,
        }
    }

    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
            text: None,
            throttled: false,
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn throttled(mut self) -> Self {
        self.throttled = true;
        self
    }

    /// The HTTP response, dated `date` by the server clock.
    fn into_response(self, date: Stamp) -> Response {
        let mut builder = Response::builder()
            .status(self.status)
            .header(header::DATE, http_date(date));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::try_from(value) {
                builder = builder.header(name, value);
            }
        }
        let body = match (self.text, self.body) {
            (Some(text), _) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json;charset=UTF-8");
                Body::from(Bytes::from(text))
            }
            (None, Some(value)) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json;charset=UTF-8");
                Body::from(serde_json::to_vec(&value).unwrap_or_default())
            }
            (None, None) => Body::empty(),
        };
        builder
            .body(body)
            .unwrap_or_else(|_| Response::new(Body::empty()))
    }
}

/// One simulated system behind its HTTP server.
pub trait Simulator: Send + Sync + 'static {
    /// The system name (`keap`, `salesforce`, ...).
    fn system(&self) -> &'static str;
    /// Answers one request: auth, rate limits, routing, the store.
    fn handle(&self, request: &ApiRequest) -> ApiResponse;
    /// The system's own answer for an injected fault.
    fn fault(&self, kind: FaultKind) -> ApiResponse;
}

#[derive(Clone)]
struct App {
    simulator: Arc<dyn Simulator>,
    shared: Arc<Shared>,
}

/// A request being answered: counted in `in_flight` until its answer is made (or the
/// client goes away and the handler is dropped).
struct InFlight {
    shared: Arc<Shared>,
    system: &'static str,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.count(self.system, |counts| {
            counts.in_flight = counts.in_flight.saturating_sub(1);
        });
    }
}

/// Serves one simulator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    simulator: Arc<dyn Simulator>,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(App { simulator, shared });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn handle(State(app): State<App>, request: Request) -> Response {
    // The `Date` of the answer, by the server clock that also stamps the records: taken as
    // the request arrives, so every record stamped before it is in what the request reads.
    let date = app.shared.clock.now();
    let system = app.simulator.system();
    let (parts, body) = request.into_parts();
    let is_read = matches!(parts.method, Method::GET | Method::HEAD);
    app.shared.count(system, |counts| {
        counts.total += 1;
        if is_read {
            counts.reads += 1;
        } else {
            counts.writes += 1;
        }
        counts.in_flight += 1;
        counts.max_in_flight = counts.max_in_flight.max(counts.in_flight);
    });
    let _in_flight = InFlight {
        shared: app.shared.clone(),
        system,
    };
    let faults = &app.shared.faults;
    let mut fault = None;
    if faults.applies_to(system) {
        if !faults.latency.is_zero() {
            tokio::time::sleep(faults.latency).await;
        }
        fault = app.shared.draw_fault();
    }
    if let Some(kind) = fault {
        app.shared
            .count(system, |counts| counts.injected_faults += 1);
        tracing::debug!(system, fault = %kind, path = %parts.uri.path(), "injecting fault");
        match kind {
            FaultKind::LostResponse => {}
            FaultKind::Timeout => {
                tokio::time::sleep(faults.stall).await;
                return app.simulator.fault(kind).into_response(date);
            }
            _ => return app.simulator.fault(kind).into_response(date),
        }
    }
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiResponse::empty(StatusCode::PAYLOAD_TOO_LARGE).into_response(date),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|value| value.as_str())
        .unwrap_or("/");
    let api_request = ApiRequest::new(parts.method, path_and_query, parts.headers, bytes);
    let response = app.simulator.handle(&api_request);
    if response.throttled {
        app.shared.count(system, |counts| counts.throttled += 1);
    }
    tracing::debug!(system, method = %api_request.method, path = %api_request.path, status = response.status.as_u16(), "request");
    if fault == Some(FaultKind::LostResponse) {
        return app
            .simulator
            .fault(FaultKind::LostResponse)
            .into_response(date);
    }
    response.into_response(date)
}

/// An HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`) of a server time: chrono's
/// `%a, %d %b %Y %H:%M:%S GMT`, written digit by digit (every answer carries one).
fn http_date(at: Stamp) -> String {
    use chrono::{Datelike as _, Timelike as _};
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let moment = chrono::DateTime::from_timestamp_millis(at).unwrap_or_default();
    let year = moment.year();
    if !(0..=9999).contains(&year) {
        return moment.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    }
    let mut out = String::with_capacity(29);
    out.push_str(DAYS[moment.weekday().num_days_from_monday() as usize]);
    out.push_str(", ");
    push_digits(&mut out, moment.day(), 2);
    out.push(' ');
    out.push_str(MONTHS[moment.month0() as usize]);
    out.push(' ');
    push_digits(&mut out, year as u32, 4);
    out.push(' ');
    push_digits(&mut out, moment.hour(), 2);
    out.push(':');
    push_digits(&mut out, moment.minute(), 2);
    out.push(':');
    push_digits(&mut out, moment.second(), 2);
    out.push_str(" GMT");
    out
}

/// Splits and decodes `a=1&b=x+y` (query strings and form bodies).
pub fn parse_urlencoded(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(key, true), decode_component(value, true))
        })
        .collect()
}

/// Percent-decodes one URL component; `+` becomes a space when `plus_is_space`.
pub fn decode_component(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = text
                    .get(index + 1..index + 3)
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A query string from pairs, encoded.
pub fn encode_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{}={}", encode_component(key), encode_component(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A rate limit: at most `requests` in any window of `per_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub requests: u64,
    pub per_ms: i64,
}

/// Sliding-window rate limiting over the server clock.
#[derive(Debug, Default)]
pub struct Limiter {
    windows: Vec<(Window, VecDeque<Stamp>)>,
}

/// How full one window is.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub used: u64,
    /// When the oldest counted request leaves the window.
    pub resets_at: Stamp,
}

impl Limiter {
    pub fn new(windows: &[Window]) -> Self {
        Self {
            windows: windows
                .iter()
                .map(|window| (*window, VecDeque::new()))
                .collect(),
        }
    }

    fn expire(&mut self, now: Stamp) {
        for (window, hits) in &mut self.windows {
            while hits
                .front()
                .is_some_and(|hit| *hit <= now.saturating_sub(window.per_ms))
            {
                hits.pop_front();
            }
        }
    }

    /// Counts one request, or refuses it with the milliseconds until it would be allowed.
    pub fn check(&mut self, now: Stamp) -> Result<(), i64> {
        self.expire(now);
        let wait = self
            .windows
            .iter()
            .filter(|(window, hits)| hits.len() as u64 >= window.requests)
            .map(|(window, hits)| {
                hits.front().map_or(window.per_ms, |oldest| {
                    oldest.saturating_add(window.per_ms).saturating_sub(now)
                })
            })
            .max();
        if let Some(wait) = wait {
            return Err(wait.max(1));
        }
        for (_, hits) in &mut self.windows {
            hits.push_back(now);
        }
        Ok(())
    }

    pub fn usage(&mut self, now: Stamp) -> Vec<Usage> {
        self.expire(now);
        self.windows
            .iter()
            .map(|(window, hits)| Usage {
                used: hits.len() as u64,
                resets_at: hits
                    .front()
                    .map_or(now.saturating_add(window.per_ms), |oldest| {
                        oldest.saturating_add(window.per_ms)
                    }),
            })
            .collect()
    }
}

/// Whole seconds to wait, rounded up, at least one (the `Retry-After` value).
pub fn retry_after_seconds(wait_ms: i64) -> i64 {
    ((wait_ms + 999) / 1000).max(1)
}

/// Standard or URL-safe base64, padding optional.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_written_as_chrono_writes_them() {
        let mut rng = fastrand::Rng::with_seed(3);
        let stamps = [0, -1, 784_111_777_000, 253_402_300_800_000, i64::MIN]
            .into_iter()
            .chain((0..2_000).map(|_| rng.i64(-70_000_000_000_000..300_000_000_000_000)));
        for at in stamps {
            let expected = chrono::DateTime::from_timestamp_millis(at)
                .unwrap_or_default()
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            assert_eq!(http_date(at), expected, "{at}");
        }
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn base64_decodes_basic_credentials() {
        assert_eq!(decode_base64("dXNlcjpwYXNz"), Some(b"user:pass".to_vec()));
        assert_eq!(decode_base64("YQ=="), Some(b"a".to_vec()));
        assert_eq!(decode_base64("!!"), None);
    }

    #[test]
    fn decodes_percent_and_plus() {
        assert_eq!(decode_component("a%2Bb+c%3D", true), "a+b c=");
        assert_eq!(decode_component("a+b", false), "a+b");
        assert_eq!(decode_component("100%", true), "100%");
        assert_eq!(decode_component("%zz", true), "%zz");
        let pairs =
            parse_urlencoded("q=SELECT+Id+FROM+Contact&since=2024-01-01T00%3A00%3A00%2B00%3A00");
        assert_eq!(pairs[0].1, "SELECT Id FROM Contact");
        assert_eq!(pairs[1].1, "2024-01-01T00:00:00+00:00");
        assert_eq!(
            decode_component(&encode_component("a b+c/é"), false),
            "a b+c/é"
        );
    }

    #[test]
    fn limiter_refuses_over_the_limit_and_recovers_after_the_window() {
        let mut limiter = Limiter::new(&[Window {
            requests: 2,
            per_ms: 1000,
        }]);
        assert!(limiter.check(0).is_ok());
        assert!(limiter.check(100).is_ok());
        assert_eq!(limiter.check(200), Err(800));
        assert_eq!(limiter.usage(200)[0].used, 2);
        assert!(limiter.check(1000).is_ok());
        assert_eq!(retry_after_seconds(800), 1);
        assert_eq!(retry_after_seconds(1001), 2);
    }

    #[test]
    fn segments_ignore_trailing_slashes_and_decode() {
        let request = ApiRequest::new(
            Method::GET,
            "/crm/rest/v1/contacts/?limit=2",
            HeaderMap::new(),
            Bytes::new(),
        );
        assert_eq!(
            request.segments_after("/crm/rest/v1"),
            Some(vec!["contacts".to_string()])
        );
        assert_eq!(request.segments_after("/crm/rest/v2"), None);
        assert_eq!(request.segments_after("/crm/rest/v"), None);
        assert_eq!(request.query("limit"), Some("2"));
    }
}
