//! The web console under `/console`: server-rendered pages over the same
//! `tether_engine::ops` functions as the API, one small vendored stylesheet and script, no
//! build step. Pages read; every action is a form the script sends as JSON to `/api/`, so
//! the console can do nothing the API cannot.
//!
//! Logging in: the login page takes the admin token once and sets a session cookie
//! (`HttpOnly`, `SameSite=Strict`) holding a value derived from the token, never the token
//! itself ([`crate::serve::access::session_value`]); the access guard accepts it like the
//! bearer header. The assets and the login page are open; every other page is behind the
//! guard, which answers a browser without a session with the login page (401).

mod html;
pub mod pages;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::Value;

use tether_engine::ops::parked::{self, Selection};
use tether_engine::ops::{Names, conflicts, record, runs};

use crate::serve::Shared;
use crate::serve::access::{self, Provenance};
use crate::serve::api::flag;

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// The session cookie's name.
pub const COOKIE: &str = "tether_session";

/// The pages behind the access guard.
pub fn pages() -> Router<Arc<Shared>> {
    Router::new()
        .route("/console", get(overview))
        .route("/console/runs", get(run_list))
        .route("/console/runs/{id}", get(run_one))
        .route("/console/parked", get(parked_page))
        .route("/console/conflicts", get(conflict_page))
        .route("/console/record", get(record_page))
}

/// The open part: assets, logging in and out.
pub fn open() -> Router<Arc<Shared>> {
    Router::new()
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", axum::routing::post(logout))
}

/// Headers every page carries: no caching, no framing, scripts and styles from here only.
fn page(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// A page saying the store could not answer.
fn unavailable(title: &str, e: &dyn std::fmt::Display) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        html::layout(
            title,
            "",
            &format!("<p class=\"error\">{}</p>", html::esc(&e.to_string())),
            true,
        ),
    )
}

async fn overview(State(shared): State<Arc<Shared>>) -> Response {
    let names = Names::of(&shared.loaded().project);
    match runs::overview(&shared.store, &names).await {
        Ok(o) => {
            let mut status = match shared
                .store
                .status_report()
                .await
                .map(|r| serde_json::to_value(&r))
            {
                Ok(Ok(Value::Object(map))) => map,
                _ => serde_json::Map::new(),
            };
            status.remove("mappings");
            status.remove("parked");
            page(StatusCode::OK, pages::overview(&o, &status))
        }
        Err(e) => unavailable("Overview", &e),
    }
}

async fn run_list(State(shared): State<Arc<Shared>>) -> Response {
    match runs::list(&shared.store, 50).await {
        Ok(list) => page(StatusCode::OK, pages::runs(&list)),
        Err(e) => unavailable("Runs", &e),
    }
}

async fn run_one(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match runs::one(&shared.store, &id).await {
        Ok(d) => page(StatusCode::OK, pages::run(&d)),
        Err(e) => {
            let status = crate::serve::api::status_of(&e);
            page(
                status,
                html::layout(
                    "Run",
                    "Runs",
                    &format!("<p class=\"error\">{}</p>", html::esc(&e.to_string())),
                    true,
                ),
            )
        }
    }
}

#[derive(Deserialize)]
struct ParkedQuery {
    skipped: Option<String>,
}

async fn parked_page(State(shared): State<Arc<Shared>>, Query(q): Query<ParkedQuery>) -> Response {
    let skipped = flag(q.skipped.as_deref());
    let names = Names::of(&shared.loaded().project);
    let overview = match parked::overview(&shared.store, &names, skipped).await {
        Ok(o) => o,
        Err(e) => return unavailable("Parked records", &e),
    };
    match parked::records(&shared.store, &names, &Selection::default(), skipped).await {
        Ok(items) => page(StatusCode::OK, pages::parked(&overview, &items, skipped)),
        Err(e) => unavailable("Parked records", &e),
    }
}

async fn conflict_page(State(shared): State<Arc<Shared>>) -> Response {
    let names = Names::of(&shared.loaded().project);
    match conflicts::list(&shared.store, &names, None, 20).await {
        Ok(l) => page(StatusCode::OK, pages::conflicts(&l)),
        Err(e) => unavailable("Conflicts", &e),
    }
}

#[derive(Deserialize)]
struct RecordQuery {
    q: Option<String>,
}

async fn record_page(State(shared): State<Arc<Shared>>, Query(q): Query<RecordQuery>) -> Response {
    let query = q.q.unwrap_or_default();
    if query.trim().is_empty() {
        return page(StatusCode::OK, pages::record("", None, None));
    }
    let loaded = shared.loaded();
    let names = Names::of(&loaded.project);
    let rules = record::rule_fields(&loaded.engine);
    match record::lookup(&shared.store, &names, &rules, &query).await {
        Ok(found) => page(StatusCode::OK, pages::record(&query, Some(&found), None)),
        Err(e) => page(
            crate::serve::api::status_of(&e),
            pages::record(&query, None, Some(&e.to_string())),
        ),
    }
}

/// Where to go after logging in: a console page, nothing else.
fn next_page(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n == "/console" || n.starts_with("/console/") || n.starts_with("/console?"))
                && !n.contains("//")
                && !n.contains('\\')
                && !n.starts_with("/console/log") =>
        {
            n
        }
        _ => "/console",
    }
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

async fn login_form(State(shared): State<Arc<Shared>>, Query(q): Query<Next>) -> Response {
    page(
        StatusCode::OK,
        pages::login(
            None,
            shared.admin_token.is_some(),
            next_page(q.next.as_deref()),
        ),
    )
}

/// The login page answered to a browser without a session, in place of a console page.
pub fn login_required(shared: &Shared, path_and_query: &str, wrong: bool) -> Response {
    page(
        StatusCode::UNAUTHORIZED,
        pages::login(
            wrong.then_some("That session is not valid any more: log in again."),
            shared.admin_token.is_some(),
            next_page(Some(path_and_query)),
        ),
    )
}

#[derive(Deserialize)]
struct Login {
    token: String,
    next: Option<String>,
}

fn provenance(headers: &HeaderMap) -> Provenance<'_> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    Provenance {
        origin: h("origin"),
        sec_fetch_site: h("sec-fetch-site"),
        host: h("host"),
        forwarded_host: h("x-forwarded-host"),
    }
}

/// The cookie's attributes: the browser session only, this server only, never to scripts.
fn cookie(value: &str, headers: &HeaderMap, clear: bool) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let mut text = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    if clear {
        text.push_str("; Max-Age=0");
    }
    if secure {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("tether_session=; Max-Age=0"))
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

async fn login(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Response {
    if let Err(denied) = access::same_site(&provenance(&headers)) {
        return page(
            denied.status(),
            pages::login(
                Some(&denied.message()),
                shared.admin_token.is_some(),
                "/console",
            ),
        );
    }
    let next = next_page(form.next.as_deref()).to_owned();
    let Some(token) = &shared.admin_token else {
        return see_other(&next);
    };
    if !token.matches(form.token.trim()) {
        tracing::info!("console login refused: not the admin token");
        return page(
            StatusCode::UNAUTHORIZED,
            pages::login(Some("That is not this server's admin token."), true, &next),
        );
    }
    let mut response = see_other(&next);
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&access::session_value(token), &headers, false),
    );
    response
}

async fn logout(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(denied) = access::same_site(&provenance(&headers)) {
        return page(
            denied.status(),
            pages::login(
                Some(&denied.message()),
                shared.admin_token.is_some(),
                "/console",
            ),
        );
    }
    let mut response = see_other("/console/login");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", &headers, true));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_logging_in_only_console_pages_are_a_destination() {
        assert_eq!(
            next_page(Some("/console/parked?skipped=true")),
            "/console/parked?skipped=true"
        );
        assert_eq!(next_page(Some("/console")), "/console");
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/console//evil.example",
            "/consolex",
            "/console/login",
            "/status",
            "/console\\@evil",
        ] {
            assert_eq!(next_page(Some(bad)), "/console", "{bad}");
        }
        assert_eq!(next_page(None), "/console");
    }

    #[test]
    fn the_session_cookie_is_http_only_and_strict() {
        let mut headers = HeaderMap::new();
        let set = cookie("abc", &headers, false);
        let set = set.to_str().expect("ascii");
        assert!(set.contains("tether_session=abc"));
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert!(
            !set.contains("Max-Age") && !set.contains("Expires"),
            "a session cookie"
        );
        assert!(!set.contains("Secure"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(
            cookie("abc", &headers, false)
                .to_str()
                .expect("ascii")
                .contains("Secure")
        );
        assert!(
            cookie("", &headers, true)
                .to_str()
                .expect("ascii")
                .contains("Max-Age=0")
        );
    }
}
