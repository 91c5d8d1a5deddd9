//! Salesforce OAuth2 client credentials at `POST /services/oauth2/token`: the token answer
//! has no `expires_in`; sessions expire after the sandbox's session lifetime and then get 401
//! `INVALID_SESSION_ID`. As a generic login host (`SandboxOptions::salesforce_generic_login`)
//! it refuses the flow, as `login.salesforce.com` does.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::credentials;
use crate::http::{ApiRequest, ApiResponse};
use crate::salesforce::{Salesforce, SfError, lock};

impl Salesforce {
    pub(super) fn token(&self, request: &ApiRequest) -> ApiResponse {
        let oauth_error = |error: &str, description: &str| {
            ApiResponse::json(
                StatusCode::BAD_REQUEST,
                json!({"error": error, "error_description": description}),
            )
        };
        if request.method != Method::POST {
            return oauth_error("invalid_request", "must use HTTP POST");
        }
        let form = request.form();
        let field = |name: &str| {
            form.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        if field("grant_type").as_deref() != Some("client_credentials") {
            return oauth_error("unsupported_grant_type", "grant type not supported");
        }
        // Real behaviour (Salesforce Help, "Configure a Connected App for the OAuth 2.0
        // Client Credentials Flow": the token request goes to the org's My Domain URL;
        // `login.salesforce.com` and `test.salesforce.com` do not support the flow): the
        // generic hosts answer 400 `invalid_grant`, "request not supported on this domain".
        if self.shared.options.salesforce_generic_login {
            return oauth_error("invalid_grant", "request not supported on this domain");
        }
        let (client_id, client_secret) = match (field("client_id"), field("client_secret")) {
            (Some(id), Some(secret)) => (id, secret),
            _ => request.basic_credentials().unwrap_or_default(),
        };
        if client_id != credentials::SALESFORCE_CLIENT_ID {
            return oauth_error("invalid_client_id", "client identifier invalid");
        }
        if client_secret != credentials::SALESFORCE_CLIENT_SECRET {
            return oauth_error("invalid_client", "invalid client credentials");
        }
        let now = self.shared.clock.now();
        let ttl = i64::try_from(self.shared.options.session_ttl.as_millis()).unwrap_or(i64::MAX);
        let token = format!("{}!AQ{}", &self.org_id[..15], self.shared.token(96));
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, expires| *expires > now);
        sessions.insert(token.clone(), now.saturating_add(ttl));
        let signature = self.shared.token(43);
        ApiResponse::json(
            StatusCode::OK,
            json!({
                "access_token": token,
                "signature": format!("{signature}="),
                "scope": "api",
                "instance_url": self.root,
                "id": format!("{}/id/{}/{}", self.root, self.org_id, self.user_id),
                "token_type": "Bearer",
                "issued_at": now.to_string(),
            }),
        )
    }

    pub(super) fn authorize(&self, request: &ApiRequest) -> Result<(), SfError> {
        let invalid = || {
            SfError::new(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION_ID",
                "Session expired or invalid",
            )
        };
        let token = request.bearer().ok_or_else(invalid)?;
        let expires = lock(&self.sessions)
            .get(token)
            .copied()
            .ok_or_else(invalid)?;
        if expires <= self.shared.clock.now() {
            return Err(invalid());
        }
        Ok(())
    }
}
