//! How the in-house simulators authenticate a request, as each contract says: one fixed bearer
//! token (Customerp), one fixed key in a header (Custom Webshop), or OAuth2 client
//! credentials at `POST {base}/oauth/token` whose tokens expire after `expires_in` seconds
//! (Custom CRM).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{Method, StatusCode, header};
use serde_json::json;

use crate::http::{ApiRequest, ApiResponse};
use crate::inhouse::{InHouse, error};
use crate::store::Stamp;

/// An in-house system's auth.
#[derive(Debug, Clone, Copy)]
pub enum Auth {
    /// `Authorization: Bearer TOKEN` with one fixed token; 401s carry
    /// `WWW-Authenticate: Bearer`.
    FixedBearer { token: &'static str },
    /// One fixed key in a request header (`X-Api-Key`).
    ApiKey {
        header: &'static str,
        key: &'static str,
    },
    /// The client credentials grant (RFC 6749 4.4) at `POST {base}/oauth/token`, credentials
    /// in the form body or a Basic `Authorization` header; tokens start with `token_prefix`
    /// and expire after the sandbox's token lifetime.
    ClientCredentials {
        client_id: &'static str,
        client_secret: &'static str,
        token_prefix: &'static str,
    },
}

/// Issued access tokens and when they expire.
#[derive(Default)]
pub(super) struct Tokens(Mutex<HashMap<String, Stamp>>);

impl Tokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stamp>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl InHouse {
    /// `Some` answer when the request is not let through: a 401, or the token endpoint's
    /// answer.
    pub(super) fn authenticate(&self, request: &ApiRequest) -> Option<ApiResponse> {
        match self.conventions.auth {
            Auth::FixedBearer { token } => {
                let message = match request.bearer() {
                    None => "missing bearer token",
                    Some(given) if given != token => "invalid bearer token",
                    Some(_) => return None,
                };
                Some(
                    error(StatusCode::UNAUTHORIZED, "unauthorized", message, None)
                        .with_header(header::WWW_AUTHENTICATE, "Bearer"),
                )
            }
            Auth::ApiKey { header, key } => {
                let message = match request.header(&header.to_ascii_lowercase()) {
                    None => format!("missing {header} header"),
                    Some(given) if given != key => "invalid API key".to_string(),
                    Some(_) => return None,
                };
                Some(error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    message,
                    None,
                ))
            }
            Auth::ClientCredentials {
                client_id,
                client_secret,
                token_prefix,
            } => {
                if request.path == format!("{}/oauth/token", self.conventions.base_path) {
                    return Some(self.token(request, client_id, client_secret, token_prefix));
                }
                self.authorize(request).err()
            }
        }
    }

    fn token(
        &self,
        request: &ApiRequest,
        expected_id: &str,
        expected_secret: &str,
        prefix: &str,
    ) -> ApiResponse {
        if request.method != Method::POST {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use POST for the token endpoint",
                None,
            );
        }
        let form = request.form();
        let field = |name: &str| {
            form.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        if field("grant_type").as_deref() != Some("client_credentials") {
            return error(
                StatusCode::UNAUTHORIZED,
                "unsupported_grant_type",
                "grant_type must be client_credentials",
                Some("grant_type"),
            );
        }
        let (client_id, client_secret) = match (field("client_id"), field("client_secret")) {
            (Some(id), Some(secret)) => (id, secret),
            _ => request.basic_credentials().unwrap_or_default(),
        };
        if client_id != expected_id || client_secret != expected_secret {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
                None,
            );
        }
        let ttl = self.shared.options.token_ttl.as_secs().max(1);
        let token = format!("{prefix}{}", self.shared.token(40));
        let now = self.shared.clock.now();
        let mut tokens = self.tokens.lock();
        tokens.retain(|_, expires| *expires > now);
        tokens.insert(
            token.clone(),
            now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX).saturating_mul(1000)),
        );
        ApiResponse::json(
            StatusCode::OK,
            json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl}),
        )
        .with_header(header::CACHE_CONTROL, "no-store")
    }

    fn authorize(&self, request: &ApiRequest) -> Result<(), ApiResponse> {
        let Some(token) = request.bearer() else {
            return Err(unauthorized("unauthorized", "missing bearer token"));
        };
        let expires = self.tokens.lock().get(token).copied();
        match expires {
            None => Err(unauthorized("invalid_token", "invalid access token")),
            Some(expires) if expires <= self.shared.clock.now() => {
                Err(unauthorized("invalid_token", "access token expired"))
            }
            Some(_) => Ok(()),
        }
    }
}

fn unauthorized(code: &str, message: &str) -> ApiResponse {
    error(StatusCode::UNAUTHORIZED, code, message, None)
        .with_header(header::WWW_AUTHENTICATE, format!("Bearer error=\"{code}\""))
}
