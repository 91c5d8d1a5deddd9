//! The Custom CRM simulator (`/crm/api`): camelCase, page/per_page paging, `since` at or
//! after, PATCH, hard deletes, and OAuth2 client credentials at `POST /oauth/token` whose
//! tokens expire after `expires_in` seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::http::{ApiRequest, ApiResponse, Simulator, Window};
use crate::inhouse::{
    Conventions, DeleteMode, EntityDef, IdKind, InHouse, NumberFormat, Paging, UpdateMethod, error,
};
use crate::store::{Stamp, Store};
use crate::{Backend, FaultKind, SandboxError, Shared, credentials};

const BASE_PATH: &str = "/crm/api";

pub struct CustomCrm {
    core: InHouse,
    /// Issued access tokens and when they expire.
    tokens: Mutex<HashMap<String, Stamp>>,
}

fn quote_number(number: u64) -> String {
    format!("Q-{number:06}")
}

fn order_number(number: u64) -> String {
    format!("ORD-{number:06}")
}

fn conventions() -> Conventions {
    let entity = |name, read, write, patch, number: NumberFormat| EntityDef {
        name,
        read,
        write,
        patch,
        number,
        unique: &[],
    };
    Conventions {
        system: "customcrm",
        base_path: BASE_PATH,
        contract: include_str!("../../../contracts/customcrm.openapi.json"),
        entities: vec![
            entity(
                "customers",
                "Customer",
                "CustomerWrite",
                "CustomerPatch",
                None,
            ),
            entity("users", "User", "UserWrite", "UserPatch", None),
            entity("products", "Product", "ProductWrite", "ProductPatch", None),
            entity(
                "quotes",
                "Quote",
                "QuoteWrite",
                "QuotePatch",
                Some(("quoteNumber", quote_number)),
            ),
            entity(
                "orders",
                "Order",
                "OrderWrite",
                "OrderPatch",
                Some(("orderNumber", order_number)),
            ),
        ],
        paging: Paging::Pages,
        since_param: "since",
        since_strict: false,
        update: UpdateMethod::Patch,
        delete: DeleteMode::Hard,
        ids: IdKind::Integer,
        created_field: None,
        modified_field: "lastModified",
        deleted_field: None,
        limit_text: "10 requests/s",
        references: &[
            ("quotes", "customerId", "customers"),
            ("quotes", "ownerUserId", "users"),
            ("quotes", "lines[].productId", "products"),
            ("orders", "customerId", "customers"),
            ("orders", "quoteId", "quotes"),
            ("orders", "lines[].productId", "products"),
        ],
    }
}

impl CustomCrm {
    pub fn new(shared: Arc<Shared>, windows: Vec<Window>) -> Result<Self, SandboxError> {
        Ok(Self {
            core: InHouse::new(conventions(), shared, windows)?,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn unauthorized(code: &str, message: &str) -> ApiResponse {
        error(StatusCode::UNAUTHORIZED, code, message, None)
            .with_header(header::WWW_AUTHENTICATE, format!("Bearer error=\"{code}\""))
    }

    /// The client credentials grant (RFC 6749 4.4); client credentials in the form body
    /// or in a Basic `Authorization` header.
    fn token(&self, request: &ApiRequest) -> ApiResponse {
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
            _ => basic_credentials(request).unwrap_or_default(),
        };
        if client_id != credentials::CUSTOMCRM_CLIENT_ID
            || client_secret != credentials::CUSTOMCRM_CLIENT_SECRET
        {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
                None,
            );
        }
        let ttl = self.core.shared.options.token_ttl.as_secs().max(1);
        let token = format!("crm-{}", self.core.shared.token(40));
        let now = self.core.shared.clock.now();
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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
            return Err(Self::unauthorized("unauthorized", "missing bearer token"));
        };
        let expires = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(token)
            .copied();
        match expires {
            None => Err(Self::unauthorized("invalid_token", "invalid access token")),
            Some(expires) if expires <= self.core.shared.clock.now() => {
                Err(Self::unauthorized("invalid_token", "access token expired"))
            }
            Some(_) => Ok(()),
        }
    }
}

/// `Authorization: Basic base64(id:secret)`.
pub fn basic_credentials(request: &ApiRequest) -> Option<(String, String)> {
    let value = request.header("authorization")?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = decode_base64(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

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

impl Simulator for CustomCrm {
    fn system(&self) -> &'static str {
        "customcrm"
    }

    fn handle(&self, request: &ApiRequest) -> ApiResponse {
        if request.path == format!("{BASE_PATH}/oauth/token") {
            return self.token(request);
        }
        if let Err(response) = self.authorize(request) {
            return response;
        }
        if let Some(response) = self.core.throttle() {
            return response;
        }
        self.core.route(request)
    }

    fn fault(&self, kind: FaultKind) -> ApiResponse {
        self.core.fault(kind)
    }
}

impl Backend for CustomCrm {
    fn entities(&self) -> Vec<&'static str> {
        self.core.entity_names()
    }

    fn route(&self, request: &ApiRequest) -> ApiResponse {
        self.core.route(request)
    }

    fn collection_path(&self, entity: &str) -> String {
        self.core.collection_path(entity)
    }

    fn records(&self, entity: &str) -> Vec<Value> {
        self.core.records(entity)
    }

    fn create_at(
        &self,
        store: &mut Store,
        entity: &str,
        body: Value,
        at: Stamp,
    ) -> Result<String, ApiResponse> {
        self.core.create_at(store, entity, body, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_basic_credentials() {
        assert_eq!(decode_base64("dXNlcjpwYXNz"), Some(b"user:pass".to_vec()));
        assert_eq!(decode_base64("YQ=="), Some(b"a".to_vec()));
        assert_eq!(decode_base64("!!"), None);
    }
}
