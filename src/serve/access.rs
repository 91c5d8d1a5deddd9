//! Who may use the admin endpoints (`/status`, `POST /runs`, `/api/`, `/console`):
//!
//! - With `TETHER_ADMIN_TOKEN` set, a request must carry `Authorization: Bearer <token>`,
//!   or the console's session cookie (set by its login page: `HttpOnly`, `SameSite=Strict`,
//!   holding [`session_value`], a MAC of a fixed text under the token, never the token
//!   itself); both are compared in constant time and never logged or shown. The token is
//!   never taken from the URL. A browser without a session asking for a console page gets
//!   the login page (401).
//! - Without a token the admin endpoints are open, and only on a loopback address: a server
//!   listening beyond loopback without a token refuses to start ([`check_listen`]).
//! - Mutations (anything but `GET`, `HEAD`, `OPTIONS`) coming from another site are refused
//!   whatever they carry: `Sec-Fetch-Site: cross-site`, or an `Origin` that is not this
//!   server's own (`Host`, or `X-Forwarded-Host` behind a proxy).
//!
//! `/health`, `/ready`, `/metrics` and `/hooks/` stay open: probes and scrapers carry no
//! token, and notifications have their own verification. The decisions are pure functions;
//! [`guard`] is the middleware that applies them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit as _, Mac as _};
use serde_json::json;

use crate::serve::Shared;

/// The environment variable that holds the admin token.
pub const TOKEN_VAR: &str = "TETHER_ADMIN_TOKEN";

/// The admin token. Its `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token from the environment's value; `None` when unset, an error when empty.
    pub fn from_env_value(value: Option<String>) -> Result<Option<AdminToken>, AccessError> {
        match value {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Err(AccessError::EmptyToken),
            Some(v) => Ok(Some(AdminToken(v.trim().to_owned()))),
        }
    }

    /// Whether `given` is this token, in time independent of where they differ.
    pub fn matches(&self, given: &str) -> bool {
        same_secret(given, &self.0)
    }

    /// The token's length, for a warning about short tokens (never the token).
    pub fn length(&self) -> usize {
        self.0.chars().count()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Why the server will not start with these access settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error(
        "refusing to listen on {0} without an admin token: /status and POST /runs would be open \
         to the network. Set {TOKEN_VAR} to a long random string (clients send \
         `Authorization: Bearer <token>`), or listen on loopback (--listen 127.0.0.1:9464)"
    )]
    NoTokenBeyondLoopback(SocketAddr),
    #[error("{TOKEN_VAR} is set but empty: set it to a long random string, or unset it")]
    EmptyToken,
}

/// The start-up rule: beyond loopback, a token is required.
pub fn check_listen(listen: SocketAddr, token: Option<&AdminToken>) -> Result<(), AccessError> {
    if token.is_none() && !listen.ip().is_loopback() {
        return Err(AccessError::NoTokenBeyondLoopback(listen));
    }
    Ok(())
}

/// Why a request to an admin endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    MissingToken,
    WrongToken,
    CrossSite(String),
}

impl Denied {
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::MissingToken | Denied::WrongToken => StatusCode::UNAUTHORIZED,
            Denied::CrossSite(_) => StatusCode::FORBIDDEN,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Denied::MissingToken => format!(
                "this endpoint needs the admin token ({TOKEN_VAR}) as `Authorization: Bearer <token>`"
            ),
            Denied::WrongToken => {
                format!("the bearer token is not the admin token ({TOKEN_VAR}) of this server")
            }
            Denied::CrossSite(why) => format!(
                "a cross-site request cannot change anything here ({why}); send it from this \
                 server's own pages or from a client that is not a browser"
            ),
        }
    }
}

/// The bearer check: `authorization` is the `Authorization` header, if any.
pub fn authorize(token: Option<&AdminToken>, authorization: Option<&str>) -> Result<(), Denied> {
    let Some(token) = token else {
        return Ok(());
    };
    let Some(value) = authorization else {
        return Err(Denied::MissingToken);
    };
    let value = value.trim();
    let given = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => return Err(Denied::MissingToken),
    };
    if token.matches(given) {
        Ok(())
    } else {
        Err(Denied::WrongToken)
    }
}

/// The value of the console's session cookie for a token: HMAC-SHA256 of a fixed text keyed
/// by the token, in hex. It proves the browser was given the token once, without holding it.
pub fn session_value(token: &AdminToken) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.0.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"tether console session v1");
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A cookie's value from a `Cookie` header.
pub fn cookie_value<'a>(cookies: Option<&'a str>, name: &str) -> Option<&'a str> {
    cookies?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The whole check: the bearer header when there is one, the session cookie otherwise.
pub fn authorize_request(
    token: Option<&AdminToken>,
    authorization: Option<&str>,
    session: Option<&str>,
) -> Result<(), Denied> {
    let Some(t) = token else {
        return Ok(());
    };
    if authorization.is_some() {
        return authorize(token, authorization);
    }
    match session {
        Some(value) if same_secret(value, &session_value(t)) => Ok(()),
        Some(_) => Err(Denied::WrongToken),
        None => Err(Denied::MissingToken),
    }
}

/// The headers a browser sets that tell where a request comes from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Provenance<'a> {
    pub origin: Option<&'a str>,
    pub sec_fetch_site: Option<&'a str>,
    pub host: Option<&'a str>,
    pub forwarded_host: Option<&'a str>,
}

/// The cross-site check of a mutation. Requests without `Origin` and `Sec-Fetch-Site` come
/// from clients that are not browsers (curl, scripts, other servers) and pass.
pub fn same_site(p: &Provenance<'_>) -> Result<(), Denied> {
    if let Some(site) = p.sec_fetch_site
        && site.trim().eq_ignore_ascii_case("cross-site")
    {
        return Err(Denied::CrossSite("Sec-Fetch-Site: cross-site".into()));
    }
    let Some(origin) = p.origin.map(str::trim) else {
        return Ok(());
    };
    let foreign = || Denied::CrossSite(format!("Origin `{origin}` is not this server"));
    let Some(origin_authority) = authority_of_origin(origin) else {
        return Err(foreign());
    };
    let ours = [p.host, p.forwarded_host]
        .into_iter()
        .flatten()
        .flat_map(|h| h.split(','))
        .map(|h| normalise(h.trim(), None));
    for authority in ours {
        if authority == origin_authority {
            return Ok(());
        }
    }
    Err(foreign())
}

/// `http://Host:80` -> `host`; `https://host:8443` -> `host:8443`; `null` and anything not an
/// origin -> `None`.
fn authority_of_origin(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") || rest.is_empty() || rest.contains('/') {
        return None;
    }
    Some(normalise(rest, Some(&scheme)))
}

/// Lower case, without the scheme's default port.
fn normalise(authority: &str, scheme: Option<&str>) -> String {
    let authority = authority.to_ascii_lowercase();
    let default_port = match scheme {
        Some("http") => Some(":80"),
        Some("https") => Some(":443"),
        _ => None,
    };
    match default_port.and_then(|p| authority.strip_suffix(p)) {
        Some(stripped) => stripped.to_owned(),
        None => authority,
    }
}

/// Compares two secrets in time independent of where they differ: both are reduced to MACs
/// under one fixed key, and the MACs compared in constant time, whatever their lengths.
pub fn same_secret(given: &str, expected: &str) -> bool {
    let mac = |text: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"tether-compare")
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(text.as_bytes());
        mac
    };
    let reference = mac(expected).finalize().into_bytes();
    mac(given).verify_slice(&reference).is_ok()
}

/// Whether a method changes something.
fn is_mutation(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn header(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The middleware in front of the admin endpoints.
pub async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let mut decision = Ok(());
    if is_mutation(request.method()) {
        decision = same_site(&Provenance {
            origin: header(headers, header::ORIGIN),
            sec_fetch_site: header(headers, "sec-fetch-site"),
            host: header(headers, header::HOST),
            forwarded_host: header(headers, "x-forwarded-host"),
        });
    }
    let decision = decision.and_then(|()| {
        authorize_request(
            shared.admin_token.as_ref(),
            header(headers, header::AUTHORIZATION),
            cookie_value(
                header(headers, header::COOKIE),
                crate::serve::console::COOKIE,
            ),
        )
    });
    match decision {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            let path = request.uri().path();
            if *request.method() == Method::GET
                && (path == "/console" || path.starts_with("/console/"))
                && denied.status() == StatusCode::UNAUTHORIZED
            {
                let wanted = request.uri().path_and_query().map_or(path, |p| p.as_str());
                let had_session = header(headers, header::COOKIE)
                    .and_then(|c| cookie_value(Some(c), crate::serve::console::COOKIE))
                    .is_some_and(|v| !v.is_empty());
                return crate::serve::console::login_required(&shared, wanted, had_session);
            }
            tracing::info!(
                method = %request.method(),
                path = %request.uri().path(),
                status = denied.status().as_u16(),
                "admin request refused"
            );
            let mut response = (
                denied.status(),
                axum::Json(json!({ "error": denied.message() })),
            )
                .into_response();
            if denied.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tether\""),
                );
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(t: &str) -> AdminToken {
        AdminToken::from_env_value(Some(t.into()))
            .expect("valid")
            .expect("set")
    }

    #[test]
    fn a_token_is_needed_beyond_loopback() {
        let loopback: SocketAddr = "127.0.0.1:9464".parse().expect("addr");
        let v6_loopback: SocketAddr = "[::1]:9464".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:9464".parse().expect("addr");
        let lan: SocketAddr = "10.1.2.3:9464".parse().expect("addr");
        assert_eq!(check_listen(loopback, None), Ok(()));
        assert_eq!(check_listen(v6_loopback, None), Ok(()));
        assert_eq!(
            check_listen(any, None),
            Err(AccessError::NoTokenBeyondLoopback(any))
        );
        assert!(check_listen(lan, None).is_err());
        assert_eq!(check_listen(lan, Some(&token("long-enough"))), Ok(()));
        assert_eq!(
            AdminToken::from_env_value(Some("  ".into())).map(|t| t.is_some()),
            Err(AccessError::EmptyToken)
        );
        assert!(
            AccessError::NoTokenBeyondLoopback(any)
                .to_string()
                .contains(TOKEN_VAR)
        );
    }

    #[test]
    fn the_bearer_token_is_checked() {
        let t = token("s3cret-token");
        assert_eq!(authorize(None, None), Ok(()), "no token set: open");
        assert_eq!(authorize(Some(&t), None), Err(Denied::MissingToken));
        assert_eq!(
            authorize(Some(&t), Some("Basic czNjcmV0")),
            Err(Denied::MissingToken)
        );
        assert_eq!(
            authorize(Some(&t), Some("Bearer s3cret")),
            Err(Denied::WrongToken)
        );
        assert_eq!(
            authorize(Some(&t), Some("Bearer s3cret-token-and-more")),
            Err(Denied::WrongToken)
        );
        assert_eq!(authorize(Some(&t), Some("Bearer s3cret-token")), Ok(()));
        assert_eq!(authorize(Some(&t), Some("bearer  s3cret-token ")), Ok(()));
        let padded = AdminToken::from_env_value(Some("s3cret-token\n".into()))
            .expect("valid")
            .expect("set");
        assert_eq!(
            authorize(Some(&padded), Some("Bearer s3cret-token")),
            Ok(()),
            "a trailing newline in the environment is not part of the token"
        );
        for denied in [Denied::MissingToken, Denied::WrongToken] {
            assert!(!denied.message().contains("s3cret"));
            assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        }
        assert!(
            !format!("{t:?}").contains("s3cret"),
            "Debug hides the token"
        );
    }

    #[test]
    fn cross_site_mutations_are_refused() {
        let host = Some("127.0.0.1:9464");
        let p = |origin: Option<&'static str>, site: Option<&'static str>| Provenance {
            origin,
            sec_fetch_site: site,
            host,
            forwarded_host: None,
        };
        assert_eq!(same_site(&p(None, None)), Ok(()), "curl and scripts");
        assert_eq!(
            same_site(&p(Some("http://127.0.0.1:9464"), Some("same-origin"))),
            Ok(())
        );
        assert!(same_site(&p(Some("https://evil.example"), None)).is_err());
        assert!(same_site(&p(Some("http://127.0.0.1:9465"), None)).is_err());
        assert!(same_site(&p(Some("null"), None)).is_err());
        assert!(same_site(&p(None, Some("cross-site"))).is_err());
        assert!(
            same_site(&p(Some("http://127.0.0.1:9464"), Some("cross-site"))).is_err(),
            "either header is enough to refuse"
        );
        assert_eq!(
            same_site(&p(None, Some("none"))),
            Ok(()),
            "typed in the bar"
        );
        // Default ports and case; behind a proxy.
        let proxied = Provenance {
            origin: Some("https://Tether.Example.com"),
            sec_fetch_site: Some("same-origin"),
            host: Some("10.0.0.5:9464"),
            forwarded_host: Some("tether.example.com"),
        };
        assert_eq!(same_site(&proxied), Ok(()));
        let default_port = Provenance {
            origin: Some("http://tether.example.com:80"),
            host: Some("tether.example.com"),
            ..Provenance::default()
        };
        assert_eq!(same_site(&default_port), Ok(()));
        assert!(
            same_site(&p(Some("https://evil.example"), None))
                .expect_err("refused")
                .message()
                .contains("cross-site")
        );
    }

    #[test]
    fn the_session_cookie_opens_what_the_bearer_opens_without_holding_the_token() {
        let t = token("s3cret-token");
        let session = session_value(&t);
        assert!(!session.contains("s3cret"), "the cookie is not the token");
        assert_eq!(session.len(), 64);
        assert_ne!(session, session_value(&token("another-token")));
        assert_eq!(authorize_request(Some(&t), None, Some(&session)), Ok(()));
        assert_eq!(
            authorize_request(Some(&t), None, Some("s3cret-token")),
            Err(Denied::WrongToken),
            "the token itself is not a session"
        );
        assert_eq!(
            authorize_request(Some(&t), None, None),
            Err(Denied::MissingToken)
        );
        assert_eq!(
            authorize_request(Some(&t), Some("Bearer wrong"), Some(&session)),
            Err(Denied::WrongToken),
            "a wrong bearer is wrong whatever the cookie"
        );
        assert_eq!(
            authorize_request(Some(&t), Some("Bearer s3cret-token"), None),
            Ok(())
        );
        assert_eq!(authorize_request(None, None, None), Ok(()));
        assert_eq!(
            cookie_value(Some("a=1; tether_session=abc ; b=2"), "tether_session"),
            Some("abc")
        );
        assert_eq!(
            cookie_value(Some("xtether_session=abc"), "tether_session"),
            None
        );
        assert_eq!(cookie_value(None, "tether_session"), None);
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("", "abc"));
        assert!(!same_secret("abcd", "abc"));
    }
}
