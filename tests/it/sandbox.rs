//! The sandbox simulators driven over real HTTP on loopback, through their contracts:
//! auth, paging to the end, modified-since semantics, writes, deletes and tombstones,
//! unique keys, rate limits, token expiry, SOQL paging, composite partial failures, Keap's
//! `next` links and product sync, seed data, state files, faults, and conformance of the
//! responses to the contract schemas vendored in `contracts/`.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tether_sandbox::schema::{Mode, SchemaDoc};
use tether_sandbox::{FaultSpec, RateLimit, RateLimits, Sandbox, SandboxOptions, credentials};

fn options() -> SandboxOptions {
    SandboxOptions {
        rate_limits: RateLimits::unlimited(),
        ..SandboxOptions::default()
    }
}

async fn start(options: SandboxOptions) -> Sandbox {
    Sandbox::start(options).await.expect("sandbox starts")
}

fn url(sandbox: &Sandbox, system: &str, path: &str) -> String {
    format!(
        "{}{path}",
        sandbox.base_url(system).expect("system is served")
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body reads");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is JSON: {text}"))
    };
    (status, value)
}

async fn crm_token(sandbox: &Sandbox) -> String {
    let (status, body) = json_of(
        client()
            .post(url(sandbox, "customcrm", "/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", credentials::CUSTOMCRM_CLIENT_ID),
                ("client_secret", credentials::CUSTOMCRM_CLIENT_SECRET),
            ])
            .send()
            .await
            .expect("token request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    body["access_token"]
        .as_str()
        .expect("token is a string")
        .to_string()
}

async fn sf_token(sandbox: &Sandbox) -> (String, String) {
    let (status, body) = json_of(
        client()
            .post(url(sandbox, "salesforce", "/services/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", credentials::SALESFORCE_CLIENT_ID),
                ("client_secret", credentials::SALESFORCE_CLIENT_SECRET),
            ])
            .send()
            .await
            .expect("token request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["access_token"].as_str().expect("token").to_string(),
        body["instance_url"]
            .as_str()
            .expect("instance url")
            .to_string(),
    )
}

// ---- Custom CRM ------------------------------------------------------------------------

#[tokio::test]
async fn customcrm_oauth_paging_since_and_hard_deletes() {
    let sandbox = start(SandboxOptions {
        seed: 7,
        ..options()
    })
    .await;
    let http = client();

    let (status, body) = json_of(
        http.post(url(&sandbox, "customcrm", "/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "x"),
                ("client_secret", "y"),
            ])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_client");
    let unauthenticated = http
        .get(url(&sandbox, "customcrm", "/customers"))
        .send()
        .await
        .expect("request");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    let token = crm_token(&sandbox).await;
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let (status, body) = json_of(
            http.get(url(&sandbox, "customcrm", "/customers"))
                .bearer_auth(&token)
                .query(&[("page", page.to_string()), ("per_page", "3".to_string())])
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        for customer in body["results"].as_array().expect("results") {
            seen.push(customer["id"].as_i64().expect("integer id"));
        }
        if page >= body["total_pages"].as_i64().expect("total_pages") {
            break;
        }
        page += 1;
    }
    assert_eq!(seen.len(), 7);
    let (status, far) = json_of(
        http.get(url(&sandbox, "customcrm", "/customers"))
            .bearer_auth(&token)
            .query(&[("page", i64::MAX.to_string())])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a page far past the end is empty, not an error"
    );
    assert_eq!(far["results"], json!([]));
    let (status, bad) = json_of(
        http.get(url(&sandbox, "customcrm", "/customers"))
            .bearer_auth(&token)
            .query(&[("per_page", "101")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "per_page is at most 100"
    );
    assert_eq!(bad["error"]["field"], "per_page");

    let records = sandbox.records("customcrm", "customers").expect("records");
    let middle = records[3]["lastModified"]
        .as_str()
        .expect("lastModified")
        .to_string();
    let (_, body) = json_of(
        http.get(url(&sandbox, "customcrm", "/customers"))
            .bearer_auth(&token)
            .query(&[("since", middle.as_str()), ("per_page", "100")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    let since: Vec<&str> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|customer| customer["lastModified"].as_str())
        .collect();
    assert!(since.contains(&middle.as_str()), "since is inclusive");
    assert!(since.iter().all(|modified| *modified >= middle.as_str()));

    let (status, created) = json_of(
        http.post(url(&sandbox, "customcrm", "/customers"))
            .bearer_auth(&token)
            .json(&json!({"companyName": "Fresh Co", "contactEmail": "hello@fresh.example"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_i64().expect("server-assigned id");
    let (status, updated) = json_of(
        http.patch(url(&sandbox, "customcrm", &format!("/customers/{id}")))
            .bearer_auth(&token)
            .json(&json!({"phoneNumber": "+47 555 12 345"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        updated["companyName"], "Fresh Co",
        "PATCH keeps the other fields"
    );
    assert!(updated["lastModified"].as_str() > created["lastModified"].as_str());
    let (status, invalid) = json_of(
        http.post(url(&sandbox, "customcrm", "/customers"))
            .bearer_auth(&token)
            .json(&json!({"contactEmail": "no-name@fresh.example"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid["error"]["field"], "companyName");
    let deleted = http
        .delete(url(&sandbox, "customcrm", &format!("/customers/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = http
        .get(url(&sandbox, "customcrm", &format!("/customers/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);

    sandbox.advance_clock(Duration::from_secs(3601));
    let (status, body) = json_of(
        http.get(url(&sandbox, "customcrm", "/customers"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "tokens expire after expires_in"
    );
    assert_eq!(body["error"]["message"], "access token expired");
}

#[tokio::test]
async fn inhouse_systems_answer_429_with_retry_after_over_their_limit() {
    let limits = RateLimits {
        customerp: vec![RateLimit::new(3, Duration::from_secs(60))],
        ..RateLimits::unlimited()
    };
    let sandbox = start(SandboxOptions {
        rate_limits: limits,
        ..options()
    })
    .await;
    let http = client();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let response = http
            .get(url(&sandbox, "customerp", "/customers"))
            .bearer_auth(credentials::CUSTOMERP_TOKEN)
            .send()
            .await
            .expect("request");
        statuses.push(response.status());
        if let Some(value) = response.headers().get("retry-after") {
            retry_after = value
                .to_str()
                .ok()
                .and_then(|value| value.parse::<u64>().ok());
        }
    }
    assert_eq!(
        statuses,
        vec![
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert!(retry_after.is_some_and(|seconds| (1..=60).contains(&seconds)));
    assert_eq!(sandbox.request_counts()["customerp"].throttled, 1);
    sandbox.advance_clock(Duration::from_secs(61));
    let again = http
        .get(url(&sandbox, "customerp", "/customers"))
        .bearer_auth(credentials::CUSTOMERP_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), StatusCode::OK, "the window slides on");
}

// ---- Customerp ------------------------------------------------------------------------

#[tokio::test]
async fn customerp_offsets_numbers_unique_skus_and_tombstones() {
    let sandbox = start(SandboxOptions {
        seed: 5,
        ..options()
    })
    .await;
    let http = client();
    let get = |path: &str, query: Vec<(&str, String)>| {
        http.get(url(&sandbox, "customerp", path))
            .bearer_auth(credentials::CUSTOMERP_TOKEN)
            .query(&query)
            .send()
    };
    let wrong = http
        .get(url(&sandbox, "customerp", "/customers"))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let mut offset = 0;
    let mut ids = Vec::new();
    loop {
        let (_, body) = json_of(
            get(
                "/products",
                vec![("offset", offset.to_string()), ("limit", "2".into())],
            )
            .await
            .expect("request"),
        )
        .await;
        let data = body["data"].as_array().expect("data").clone();
        ids.extend(data.iter().filter_map(|product| product["id"].as_i64()));
        offset += 2;
        if offset >= body["total"].as_i64().expect("total") {
            break;
        }
    }
    assert_eq!(ids.len(), 6, "5 seeded articles and the sales sample kit");

    let (status, customer) = json_of(
        http.post(url(&sandbox, "customerp", "/customers"))
            .bearer_auth(credentials::CUSTOMERP_TOKEN)
            .json(&json!({"name": "Tidal Works AS", "currency": "NOK", "is_active": true, "credit_limit": "1000.50"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(customer["customer_number"], "C-000006");
    let modified = customer["modified_at"]
        .as_str()
        .expect("modified_at")
        .to_string();
    let (_, listed) = json_of(
        get("/customers", vec![("modified_since", modified.clone())])
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        listed["total"], 1,
        "modified_since includes the instant itself"
    );
    assert_eq!(listed["data"][0]["id"], customer["id"]);

    let existing_sku = sandbox.records("customerp", "products").expect("records")[0]["sku"].clone();
    let (status, duplicate) = json_of(
        http.post(url(&sandbox, "customerp", "/products"))
            .bearer_auth(credentials::CUSTOMERP_TOKEN)
            .json(&json!({"sku": existing_sku, "name": "Copy", "unit_price": "1.00", "currency": "USD",
                          "vat_rate": "25.00", "is_active": true}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(duplicate["error"]["code"], "duplicate");
    assert_eq!(duplicate["error"]["field"], "sku");

    let id = customer["id"].as_i64().expect("id");
    let (status, patched) = json_of(
        http.patch(url(&sandbox, "customerp", &format!("/customers/{id}")))
            .bearer_auth(credentials::CUSTOMERP_TOKEN)
            .json(&json!({"email": "ar@tidal.example"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["credit_limit"], "1000.50");
    let before_delete = sandbox.now();
    let deleted = http
        .delete(url(&sandbox, "customerp", &format!("/customers/{id}")))
        .bearer_auth(credentials::CUSTOMERP_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, tombstones) = json_of(
        get(
            "/deleted",
            vec![("entity", "customers".into()), ("since", before_delete)],
        )
        .await
        .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tombstones["total"], 1);
    assert_eq!(tombstones["data"][0]["id"], id);
    let (status, dangling) = json_of(
        http.post(url(&sandbox, "customerp", "/orders"))
            .bearer_auth(credentials::CUSTOMERP_TOKEN)
            .json(&json!({"customer_id": id, "status": "draft", "order_date": "2024-06-01", "currency": "NOK",
                          "total_amount": "0.00", "lines": []}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an order cannot name a deleted customer"
    );
    assert_eq!(dangling["error"]["code"], "invalid_reference");
    assert_eq!(dangling["error"]["field"], "customer_id");
    let (status, bad) = json_of(
        get("/deleted", vec![("entity", "planets".into())])
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad["error"]["field"], "entity");
}

/// The ERP's contract (`StillReferenced`): a customer, contact or product that live records
/// still name is not deleted, so no order is left naming nothing.
#[tokio::test]
async fn customerp_refuses_to_delete_a_customer_its_orders_name() {
    let sandbox = start(options()).await;
    let http = client();
    let post = |path: &'static str, body: Value| {
        http.post(url(&sandbox, "customerp", path))
            .bearer_auth(credentials::CUSTOMERP_TOKEN)
            .json(&body)
            .send()
    };
    let (_, customer) = json_of(
        post(
            "/customers",
            json!({"name": "Bundet AS", "currency": "NOK", "is_active": true}),
        )
        .await
        .expect("request"),
    )
    .await;
    let id = customer["id"].as_i64().expect("id");
    let (_, product) = json_of(
        post(
            "/products",
            json!({"sku": "BUNDET-1", "name": "Tau", "unit_price": "10.00", "currency": "NOK",
                   "vat_rate": "25.00", "is_active": true, "stock_quantity": 3}),
        )
        .await
        .expect("request"),
    )
    .await;
    let (status, order) = json_of(
        post(
            "/orders",
            json!({"customer_id": id, "status": "draft", "order_date": "2024-06-01", "currency": "NOK",
                   "total_amount": "10.00",
                   "lines": [{"product_id": product["id"], "quantity": 1, "unit_price": "10.00"}]}),
        )
        .await
        .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let delete = |path: String| {
        http.delete(url(&sandbox, "customerp", &path))
            .bearer_auth(credentials::CUSTOMERP_TOKEN)
            .send()
    };
    for (path, named) in [
        (format!("/customers/{id}"), format!("order {}", order["id"])),
        (
            format!("/products/{}", product["id"]),
            format!("order {}", order["id"]),
        ),
    ] {
        let (status, refused) = json_of(delete(path.clone()).await.expect("request")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {refused}");
        assert_eq!(refused["error"]["code"], "still_referenced");
        let message = refused["error"]["message"].as_str().expect("message");
        assert!(message.contains(&named), "{message}");
    }
    assert_eq!(
        sandbox
            .record("customerp", "customers", &id.to_string())
            .expect("record")
            .expect("still there")["name"],
        "Bundet AS"
    );
    // The order can still be changed: the customer it names exists.
    let patched = http
        .patch(url(
            &sandbox,
            "customerp",
            &format!("/orders/{}", order["id"]),
        ))
        .bearer_auth(credentials::CUSTOMERP_TOKEN)
        .json(&json!({"status": "confirmed"}))
        .send()
        .await
        .expect("request");
    assert_eq!(patched.status(), StatusCode::OK);
    // Once the order is gone, the customer can be deleted.
    let gone = delete(format!("/orders/{}", order["id"]))
        .await
        .expect("request");
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let deleted = delete(format!("/customers/{id}")).await.expect("request");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
}

// ---- Custom Webshop ---------------------------------------------------------------------

#[tokio::test]
async fn customwebshop_cursors_strict_updated_after_put_and_soft_deletes() {
    let sandbox = start(SandboxOptions {
        seed: 6,
        ..options()
    })
    .await;
    let http = client();
    let request = |method: reqwest::Method, path: &str| {
        http.request(method, url(&sandbox, "customwebshop", path))
            .header("X-Api-Key", credentials::CUSTOMWEBSHOP_API_KEY)
    };
    let denied = http
        .get(url(&sandbox, "customwebshop", "/customers"))
        .send()
        .await
        .expect("request");
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);

    let mut cursor: Option<String> = None;
    let mut seen = 0;
    loop {
        let mut query = vec![("page_size", "4".to_string())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let (status, body) = json_of(
            request(reqwest::Method::GET, "/products")
                .query(&query)
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        seen += body["items"].as_array().expect("items").len();
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, 6);

    let (status, created) = json_of(
        request(reqwest::Method::POST, "/customers")
            .json(
                &json!({"email": "Kim@Shop.example", "first_name": "Kim", "phone": "+1 555 0100",
                          "addresses": [], "marketing_opt_in": true}),
            )
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().expect("uuid").to_string();
    assert_eq!(id.len(), 36);
    let updated_at = created["updated_at"]
        .as_str()
        .expect("updated_at")
        .to_string();
    let (_, after) = json_of(
        request(reqwest::Method::GET, "/customers")
            .query(&[("updated_after", updated_at.as_str())])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert!(
        after["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|item| item["id"] != id.as_str()),
        "updated_after is strict"
    );

    let (status, duplicate) = json_of(
        request(reqwest::Method::POST, "/customers")
            .json(&json!({"email": "kim@shop.EXAMPLE", "addresses": [], "marketing_opt_in": false}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(duplicate["error"]["field"], "email");

    let (status, replaced) = json_of(
        request(reqwest::Method::PUT, &format!("/customers/{id}"))
            .json(&json!({"email": "kim@shop.example", "addresses": [], "marketing_opt_in": false}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replaced["phone"], Value::Null, "PUT clears fields left out");
    assert_eq!(replaced["first_name"], Value::Null);

    let deleted = request(reqwest::Method::DELETE, &format!("/customers/{id}"))
        .send()
        .await
        .expect("request");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, fetched) = json_of(
        request(reqwest::Method::GET, &format!("/customers/{id}"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["deleted"], true);
    let listed = |include: bool| {
        let mut query = vec![
            ("updated_after", updated_at.clone()),
            ("page_size", "250".to_string()),
        ];
        if include {
            query.push(("include_deleted", "true".into()));
        }
        request(reqwest::Method::GET, "/customers")
            .query(&query)
            .send()
    };
    let (_, without) = json_of(listed(false).await.expect("request")).await;
    assert!(without["items"].as_array().expect("items").is_empty());
    let (_, with) = json_of(listed(true).await.expect("request")).await;
    assert_eq!(with["items"][0]["id"], id.as_str());
    assert_eq!(with["items"][0]["deleted"], true);
    let (status, _) = json_of(
        request(reqwest::Method::POST, "/customers")
            .json(&json!({"email": "kim@shop.example", "addresses": [], "marketing_opt_in": false}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a soft-deleted customer releases its email"
    );
}

// ---- Keap ---------------------------------------------------------------------------------

#[tokio::test]
async fn keap_paging_links_since_statuses_and_product_sync() {
    let sandbox = start(SandboxOptions {
        seed: 4,
        ..options()
    })
    .await;
    let http = client();
    let keap = |method: reqwest::Method, path: &str| {
        http.request(method, url(&sandbox, "keap", path))
            .header("X-Keap-API-Key", credentials::KEAP_API_KEY)
    };
    let (status, denied) = json_of(
        http.get(url(&sandbox, "keap", "/contacts"))
            .header("X-Keap-API-Key", "nope")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        denied["fault"]["detail"]["errorcode"],
        "keymanagement.service.invalid_access_token"
    );
    let bearer = http
        .get(url(&sandbox, "keap", "/companies"))
        .bearer_auth(credentials::KEAP_API_KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(
        bearer.status(),
        StatusCode::OK,
        "the key is also accepted as a bearer token"
    );
    assert!(
        bearer
            .headers()
            .contains_key("x-keap-product-throttle-available")
    );

    let mut next = url(&sandbox, "keap", "/contacts?limit=3");
    let mut total = 0;
    loop {
        let (status, page) = json_of(
            http.get(&next)
                .header("X-Keap-API-Key", credentials::KEAP_API_KEY)
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let contacts = page["contacts"].as_array().expect("contacts").len();
        total += contacts;
        assert!(
            page["next"].is_string(),
            "next is present on every page, the last one included"
        );
        if contacts < 3 {
            break;
        }
        next = page["next"].as_str().expect("next").to_string();
        assert!(next.starts_with(sandbox.base_url("keap").expect("keap")));
    }
    assert_eq!(total, 4);

    let (status, company) = json_of(
        keap(reqwest::Method::POST, "/companies")
            .json(&json!({"company_name": "Harbor Optics Inc", "email_address": "info@harbor.example"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        company.get("last_updated").is_none(),
        "v1 companies carry no timestamps"
    );
    let delete_company = keap(
        reqwest::Method::DELETE,
        &format!("/companies/{}", company["id"]),
    )
    .send()
    .await
    .expect("request");
    assert_eq!(delete_company.status(), StatusCode::METHOD_NOT_ALLOWED);

    let (status, missing) = json_of(
        keap(reqwest::Method::POST, "/contacts")
            .json(&json!({"given_name": "Nobody"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing["message"],
        "Contact must contain an e-mail address or phone number"
    );
    let (status, contact) = json_of(
        keap(reqwest::Method::POST, "/contacts")
            .json(&json!({"given_name": "Ada", "family_name": "Lovelace",
                          "email_addresses": [{"email": "ada@harbor.example", "field": "EMAIL1"}],
                          "company": {"id": company["id"]}}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(contact["company"]["company_name"], "Harbor Optics Inc");
    let last_updated = contact["last_updated"]
        .as_str()
        .expect("last_updated")
        .to_string();
    assert!(last_updated.ends_with("+0000"));
    let since = format!("{}Z", &last_updated[..23]);
    let (_, recent) = json_of(
        keap(reqwest::Method::GET, "/contacts")
            .query(&[("since", since.as_str()), ("order", "last_updated")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    let recent_ids: Vec<&Value> = recent["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(recent_ids, vec![&contact["id"]]);

    let (status, opportunity) = json_of(
        keap(reqwest::Method::POST, "/opportunities")
            .json(&json!({"opportunity_title": "Big deal", "contact": {"id": contact["id"]}, "stage": {"id": 10}}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "opportunity create answers 200");
    assert_eq!(opportunity["contact"]["first_name"], "Ada");
    let (status, upserted) = json_of(
        keap(reqwest::Method::PUT, "/contacts")
            .json(&json!({"duplicate_option": "Email", "job_title": "Analyst",
                          "email_addresses": [{"email": "ADA@harbor.example", "field": "EMAIL1"}]}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        upserted["id"], contact["id"],
        "PUT matched the contact by email"
    );
    assert_eq!(upserted["job_title"], "Analyst");
    let contact_deleted = keap(
        reqwest::Method::DELETE,
        &format!("/contacts/{}", contact["id"]),
    )
    .send()
    .await
    .expect("request");
    assert_eq!(contact_deleted.status(), StatusCode::NO_CONTENT);

    let (_, first_sync) = json_of(
        keap(reqwest::Method::GET, "/products/sync")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        first_sync["product_statuses"]
            .as_array()
            .expect("statuses")
            .len(),
        4
    );
    let token = first_sync["sync_token"]
        .as_str()
        .expect("sync token")
        .to_string();
    let (status, product) = json_of(
        keap(reqwest::Method::POST, "/products")
            .json(&json!({"product_name": "Polar Headset", "sku": "SKU-99999", "product_price": 49.5}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let products = sandbox.records("keap", "products").expect("records");
    let first_id = products[0]["id"].clone();
    let second_id = products[1]["id"].clone();
    let deleted = keap(reqwest::Method::DELETE, &format!("/products/{first_id}"))
        .send()
        .await
        .expect("request");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    // A product edited and then deleted since the token is left out as well.
    sandbox
        .update(
            "keap",
            "products",
            &second_id.to_string(),
            json!({"product_desc": "Discontinued"}),
        )
        .expect("edited");
    sandbox
        .delete("keap", "products", &second_id.to_string())
        .expect("deleted");
    let (_, changes) = json_of(
        keap(reqwest::Method::GET, "/products/sync")
            .query(&[("sync_token", token.as_str())])
            .send()
            .await
            .expect("request"),
    )
    .await;
    let statuses: Vec<(Value, Value)> = changes["product_statuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .map(|entry| (entry["product"]["id"].clone(), entry["status"].clone()))
        .collect();
    // The official v1 OpenAPI: the feed returns what was created or updated since the token
    // "minus any products that have been deleted".
    assert_eq!(
        statuses,
        vec![(product["id"].clone(), json!("CREATED"))],
        "deleted products are not in the feed"
    );
    assert_eq!(changes["count"], 1);
}

#[tokio::test]
async fn keap_opportunity_patches_carry_title_contact_and_stage() {
    let sandbox = start(SandboxOptions {
        seed: 4,
        ..options()
    })
    .await;
    let http = client();
    let keap = |method: reqwest::Method, path: &str| {
        http.request(method, url(&sandbox, "keap", path))
            .header("X-Keap-API-Key", credentials::KEAP_API_KEY)
    };
    let contact = &sandbox.records("keap", "contacts").expect("contacts")[0];
    let (status, deal) = json_of(
        keap(reqwest::Method::POST, "/opportunities")
            .json(
                &json!({"opportunity_title": "Fjord deal", "contact": {"id": contact["id"]},
                          "stage": {"id": 10}, "projected_revenue_high": 1500.0}),
            )
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/opportunities/{}", deal["id"]);

    // The PATCH body is the replace's `UpdateOpportunityRequest`, whose contact, title and
    // stage are required: a PATCH of one field alone is refused as a company's PATCH
    // without its name is.
    let (status, refused) = json_of(
        keap(reqwest::Method::PATCH, &path)
            .json(&json!({"stage": {"id": 60}}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let company = &sandbox.records("keap", "companies").expect("companies")[0];
    let (company_status, company_refused) = json_of(
        keap(
            reqwest::Method::PATCH,
            &format!("/companies/{}", company["id"]),
        )
        .json(&json!({"notes": "Called"}))
        .send()
        .await
        .expect("request"),
    )
    .await;
    assert_eq!(company_status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["message"], "contact is required");
    assert_eq!(company_refused["message"], "company_name is required");
    let (status, refused) = json_of(
        keap(reqwest::Method::PATCH, &path)
            .json(&json!({"contact": {"id": contact["id"]}, "stage": {"id": 60}}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["message"], "opportunity_title is required");
    let unchanged = sandbox
        .record("keap", "opportunities", &deal["id"].to_string())
        .expect("lookup")
        .expect("exists");
    assert_eq!(
        unchanged["stage"]["id"], 10,
        "a refused PATCH changes nothing"
    );

    let (status, patched) = json_of(
        keap(reqwest::Method::PATCH, &path)
            .json(
                &json!({"opportunity_title": "Fjord deal", "contact": {"id": contact["id"]},
                          "stage": {"id": 60}}),
            )
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["stage"]["id"], 60);
    assert_eq!(patched["stage"]["name"], "Lost");
    assert_eq!(
        patched["projected_revenue_high"], 1500.0,
        "fields left out keep their values"
    );

    // A person's edit in Keap's screens changes the one field.
    let edited = sandbox
        .update(
            "keap",
            "opportunities",
            &deal["id"].to_string(),
            json!({"next_action_notes": "Call back"}),
        )
        .expect("a person edits one field");
    assert_eq!(edited["next_action_notes"], "Call back");
    assert_eq!(edited["stage"]["id"], 60);
}

#[tokio::test]
async fn keap_stage_pipeline_is_the_specs_flat_list_of_stages() {
    let dir = contracts_dir();
    let doc = contract(&dir, "keap-v1.openapi.json");
    let sandbox = start(SandboxOptions {
        seed: 4,
        ..options()
    })
    .await;
    let http = client();
    let (status, stages) = json_of(
        http.get(url(&sandbox, "keap", "/opportunity/stage_pipeline"))
            .header("X-Keap-API-Key", credentials::KEAP_API_KEY)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let schema = &doc.root()["paths"]["/v1/opportunity/stage_pipeline"]["get"]["responses"]["200"]
        ["content"]["application/json"]["schema"];
    assert_eq!(schema["type"], "array", "the spec answers an array");
    let mode = Mode {
        null_as_absent: true,
        lenient_datetime: true,
    };
    assert_conforms(&doc, schema, &stages, mode, "keap stage_pipeline");
    // Each item is one stage, with the spec's properties and no others: no pipeline object
    // with stages inside.
    let properties: std::collections::BTreeSet<&str> = schema["items"]["properties"]
        .as_object()
        .expect("item properties")
        .keys()
        .map(String::as_str)
        .collect();
    let items = stages.as_array().expect("an array");
    assert_eq!(items.len(), 6);
    for (index, item) in items.iter().enumerate() {
        let keys: std::collections::BTreeSet<&str> = item
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, properties, "{item}");
        assert_eq!(item["stage_order"], index + 1);
        assert_eq!(item["stage_count"], items.len());
    }
    assert_eq!(items[0]["stage_name"], "New Opportunity");
    assert_eq!(items[0]["is_default"], true);
    // The ids listed are the ones an opportunity is written with.
    let contact = &sandbox.records("keap", "contacts").expect("contacts")[0];
    for item in items {
        let (status, deal) = json_of(
            http.post(url(&sandbox, "keap", "/opportunities"))
                .header("X-Keap-API-Key", credentials::KEAP_API_KEY)
                .json(
                    &json!({"opportunity_title": "Staged", "contact": {"id": contact["id"]},
                              "stage": {"id": item["stage_id"]}}),
                )
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{deal}");
        assert_eq!(deal["stage"]["name"], item["stage_name"]);
    }
}

#[tokio::test]
async fn keap_throttles_with_the_gateway_body() {
    let limits = RateLimits {
        keap: vec![RateLimit::new(2, Duration::from_secs(60))],
        ..RateLimits::unlimited()
    };
    let sandbox = start(SandboxOptions {
        rate_limits: limits,
        ..options()
    })
    .await;
    let http = client();
    let mut last = None;
    for _ in 0..3 {
        last = Some(
            http.get(url(&sandbox, "keap", "/products"))
                .header("X-Keap-API-Key", credentials::KEAP_API_KEY)
                .send()
                .await
                .expect("request"),
        );
    }
    let response = last.expect("three requests");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response
            .headers()
            .get("x-keap-product-throttle-limit")
            .and_then(|value| value.to_str().ok()),
        Some("2")
    );
    let (_, body) = json_of(response).await;
    assert_eq!(body["status"], "Request Throttled");
}

// ---- Salesforce ----------------------------------------------------------------------------

#[tokio::test]
async fn salesforce_auth_query_paging_and_errors() {
    let sandbox = start(options()).await;
    let http = client();
    let (status, refused) = json_of(
        http.post(url(&sandbox, "salesforce", "/services/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "nope"),
                ("client_secret", "x"),
            ])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"], "invalid_client_id");
    let (token, instance) = sf_token(&sandbox).await;
    assert_eq!(
        instance,
        sandbox.base_url("salesforce").expect("salesforce")
    );
    let api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{instance}/services/data/v60.0{path}"))
            .bearer_auth(&token)
    };

    let records: Vec<Value> = (0..250)
        .map(|index| json!({"attributes": {"type": "Contact"}, "LastName": format!("Person {index:03}"), "Email": format!("p{index}@example.com")}))
        .collect();
    for chunk in records.chunks(200) {
        let (status, results) = json_of(
            api(reqwest::Method::POST, "/composite/sobjects")
                .json(&json!({"allOrNone": true, "records": chunk}))
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            results
                .as_array()
                .expect("results")
                .iter()
                .all(|result| result["success"] == true)
        );
    }

    let query = "SELECT Id, LastName, SystemModstamp FROM Contact WHERE SystemModstamp > 2020-01-01T00:00:00Z ORDER BY SystemModstamp, Id";
    let response = api(reqwest::Method::GET, "/query")
        .query(&[("q", query)])
        .header("Sforce-Query-Options", "batchSize=200")
        .send()
        .await
        .expect("request");
    assert!(response.headers().get("sforce-limit-info").is_some());
    let (status, page) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["totalSize"], 250);
    assert_eq!(page["done"], false);
    assert_eq!(page["records"].as_array().expect("records").len(), 200);
    assert_eq!(page["records"][0]["attributes"]["type"], "Contact");
    let next = page["nextRecordsUrl"]
        .as_str()
        .expect("nextRecordsUrl")
        .to_string();
    let (_, rest) = json_of(
        http.get(format!("{instance}{next}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(rest["done"], true);
    assert_eq!(rest["records"].as_array().expect("records").len(), 50);
    assert!(rest.get("nextRecordsUrl").is_none());

    let (status, malformed) = json_of(
        api(reqwest::Method::GET, "/query")
            .query(&[("q", "SELECT FROM Contact")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed[0]["errorCode"], "MALFORMED_QUERY");
    let (status, unknown) = json_of(
        api(reqwest::Method::GET, "/query")
            .query(&[("q", "SELECT Id, Foo FROM Contact")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown[0]["errorCode"], "INVALID_FIELD");

    let (status, created) = json_of(
        api(reqwest::Method::POST, "/sobjects/Contact")
            .json(&json!({"FirstName": "Grace", "LastName": "Hopper"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("003") && id.len() == 18);
    let patched = api(reqwest::Method::PATCH, &format!("/sobjects/Contact/{id}"))
        .json(&json!({"Title": "Rear Admiral"}))
        .send()
        .await
        .expect("request");
    assert_eq!(patched.status(), StatusCode::NO_CONTENT);
    let (_, contact) = json_of(
        api(reqwest::Method::GET, &format!("/sobjects/Contact/{id}"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(contact["Name"], "Grace Hopper");
    assert_eq!(contact["Title"], "Rear Admiral");
    assert!(
        contact["SystemModstamp"]
            .as_str()
            .expect("stamp")
            .ends_with("+0000")
    );
    let (status, read_only) = json_of(
        api(reqwest::Method::PATCH, &format!("/sobjects/Contact/{id}"))
            .json(&json!({"Name": "X"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(read_only[0]["errorCode"], "INVALID_FIELD_FOR_INSERT_UPDATE");

    let before = sandbox.now();
    let deleted = api(reqwest::Method::DELETE, &format!("/sobjects/Contact/{id}"))
        .send()
        .await
        .expect("request");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, again) = json_of(
        api(reqwest::Method::DELETE, &format!("/sobjects/Contact/{id}"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(again[0]["errorCode"], "ENTITY_IS_DELETED");
    sandbox.advance_clock(Duration::from_secs(120));
    let end = sandbox.now();
    let (status, deleted_list) = json_of(
        api(reqwest::Method::GET, "/sobjects/Contact/deleted/")
            .query(&[("start", before.as_str()), ("end", end.as_str())])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{deleted_list}");
    assert_eq!(deleted_list["deletedRecords"][0]["id"], id.as_str());

    sandbox.advance_clock(Duration::from_secs(7200));
    let (status, expired) = json_of(
        api(reqwest::Method::GET, "/query")
            .query(&[("q", "SELECT Id FROM Contact")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired[0]["errorCode"], "INVALID_SESSION_ID");
}

#[tokio::test]
async fn salesforce_collections_report_partial_failures_and_roll_back() {
    let sandbox = start(options()).await;
    let http = client();
    let (token, instance) = sf_token(&sandbox).await;
    let post = |body: Value| {
        http.post(format!("{instance}/services/data/v60.0/composite/sobjects"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let records = json!([
        {"attributes": {"type": "Account"}, "Name": "Acme"},
        {"attributes": {"type": "Contact"}, "FirstName": "No Last Name"},
    ]);
    let (status, partial) = json_of(
        post(json!({"allOrNone": false, "records": records}))
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(partial[0]["success"], true);
    assert_eq!(partial[1]["success"], false);
    assert_eq!(
        partial[1]["errors"][0]["statusCode"],
        "REQUIRED_FIELD_MISSING"
    );
    assert_eq!(partial[1]["errors"][0]["fields"], json!(["LastName"]));
    assert_eq!(
        sandbox
            .records("salesforce", "Account")
            .expect("records")
            .len(),
        1
    );

    let (_, rolled) = json_of(
        post(json!({"allOrNone": true, "records": records}))
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        rolled[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(
        rolled[1]["errors"][0]["statusCode"],
        "REQUIRED_FIELD_MISSING"
    );
    assert_eq!(
        sandbox
            .records("salesforce", "Account")
            .expect("records")
            .len(),
        1,
        "nothing of a rolled-back request stays"
    );
    let too_many: Vec<Value> = (0..201)
        .map(|_| json!({"attributes": {"type": "Account"}, "Name": "X"}))
        .collect();
    let (status, refused) =
        json_of(post(json!({"records": too_many})).await.expect("request")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused[0]["errorCode"], "EXCEEDED_ID_LIMIT");

    let account = sandbox.records("salesforce", "Account").expect("records")[0]["Id"].clone();
    let (status, updated) = json_of(
        http.patch(format!("{instance}/services/data/v60.0/composite/sobjects"))
            .bearer_auth(&token)
            .json(&json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Account"}, "id": account, "Phone": "+1 555 0199"},
                {"attributes": {"type": "Account"}, "id": "001000000000000AAA", "Phone": "+1 555 0100"},
            ]}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated[0]["success"], true);
    assert_eq!(updated[1]["success"], false);
    assert_eq!(updated[1]["errors"][0]["statusCode"], "NOT_FOUND");
    let (status, deleted) = json_of(
        http.delete(format!("{instance}/services/data/v60.0/composite/sobjects"))
            .bearer_auth(&token)
            .query(&[(
                "ids",
                format!("{},not-an-id", account.as_str().expect("id")),
            )])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted[0]["success"], true);
    assert_eq!(deleted[1]["errors"][0]["statusCode"], "MALFORMED_ID");
    assert!(
        sandbox
            .records("salesforce", "Account")
            .expect("records")
            .is_empty()
    );
}

#[tokio::test]
async fn salesforce_computes_order_totals_and_checks_price_books() {
    let sandbox = start(SandboxOptions {
        seed: 2,
        ..options()
    })
    .await;
    let order = sandbox.records("salesforce", "Order").expect("orders")[0].clone();
    let items: Vec<Value> = sandbox
        .records("salesforce", "OrderItem")
        .expect("items")
        .into_iter()
        .filter(|item| item["OrderId"] == order["Id"])
        .collect();
    let sum: f64 = items
        .iter()
        .filter_map(|item| item["TotalPrice"].as_f64())
        .sum();
    assert!((order["TotalAmount"].as_f64().expect("total") - sum).abs() < 0.005);
    assert_eq!(order["OrderNumber"].as_str().map(str::len), Some(8));

    let entry = sandbox
        .records("salesforce", "PricebookEntry")
        .expect("entries")[0]
        .clone();
    let added = sandbox
        .insert(
            "salesforce",
            "OrderItem",
            json!({"OrderId": order["Id"], "PricebookEntryId": entry["Id"], "Quantity": 2, "UnitPrice": 10.25}),
        )
        .expect("line is added");
    assert_eq!(added["TotalPrice"], 20.5);
    let id = order["Id"].as_str().expect("id");
    let after = sandbox
        .record("salesforce", "Order", id)
        .expect("lookup")
        .expect("order exists");
    assert!((after["TotalAmount"].as_f64().expect("total") - (sum + 20.5)).abs() < 0.005);
    assert!(after["SystemModstamp"].as_str() > order["SystemModstamp"].as_str());

    let custom_book = sandbox
        .insert(
            "salesforce",
            "Pricebook2",
            json!({"Name": "Partners", "IsActive": true}),
        )
        .expect("book is created");
    let product = sandbox
        .insert("salesforce", "Product2", json!({"Name": "Loose Part"}))
        .expect("product is created");
    let refused = sandbox
        .insert(
            "salesforce",
            "PricebookEntry",
            json!({"Pricebook2Id": custom_book["Id"], "Product2Id": product["Id"], "UnitPrice": 3}),
        )
        .expect_err("no standard price yet");
    assert!(
        refused.to_string().contains("STANDARD_PRICE_NOT_DEFINED"),
        "{refused}"
    );

    let empty = sandbox
        .insert(
            "salesforce",
            "Order",
            json!({"AccountId": order["AccountId"], "EffectiveDate": "2024-07-01", "Status": "Draft"}),
        )
        .expect("an order without lines");
    let (token, instance) = sf_token(&sandbox).await;
    let query = "SELECT Id, TotalAmount, (SELECT Id, TotalPrice FROM OrderItems ORDER BY OrderItemNumber) FROM Order ORDER BY SystemModstamp, Id";
    let (status, result) = json_of(
        client()
            .get(format!("{instance}/services/data/v60.0/query"))
            .bearer_auth(&token)
            .query(&[("q", query)])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    for row in result["records"].as_array().expect("records") {
        let items = &row["OrderItems"];
        if row["Id"] == empty["Id"] {
            assert!(
                items.is_null(),
                "an order without lines has a null subquery"
            );
            continue;
        }
        let lines: f64 = items["records"]
            .as_array()
            .expect("child records")
            .iter()
            .filter_map(|item| item["TotalPrice"].as_f64())
            .sum();
        assert!((row["TotalAmount"].as_f64().expect("total") - lines).abs() < 0.005);
        assert_eq!(
            items["totalSize"],
            items["records"].as_array().map_or(0, Vec::len)
        );
    }
}

// ---- Sandbox-wide behaviour --------------------------------------------------------------------

#[tokio::test]
async fn seed_data_is_deterministic_and_overlaps_across_systems() {
    let first = start(SandboxOptions {
        seed: 12,
        seed_rng: 42,
        ..options()
    })
    .await;
    let second = start(SandboxOptions {
        seed: 12,
        seed_rng: 42,
        ..options()
    })
    .await;
    for system in tether_sandbox::SYSTEMS {
        for entity in first.entities(system).expect("entities") {
            let records = first.records(system, entity).expect("records");
            assert_eq!(
                records,
                second.records(system, entity).expect("records"),
                "{system} {entity}"
            );
            if entity != "Pricebook2" {
                assert!(
                    records.len() >= 12,
                    "{system} {entity} has {}",
                    records.len()
                );
            }
        }
    }
    let emails = |records: Vec<Value>, pick: &dyn Fn(&Value) -> Option<String>| -> Vec<String> {
        records
            .iter()
            .filter_map(pick)
            .map(|email| email.to_lowercase())
            .collect()
    };
    let keap_people = emails(
        first.records("keap", "contacts").expect("records"),
        &|contact| {
            contact["email_addresses"][0]["email"]
                .as_str()
                .map(str::to_string)
        },
    );
    let salesforce_people = emails(
        first.records("salesforce", "Contact").expect("records"),
        &|contact| contact["Email"].as_str().map(str::to_string),
    );
    assert!(
        keap_people
            .iter()
            .any(|email| salesforce_people.contains(email))
    );
    let keap_companies = emails(
        first.records("keap", "companies").expect("records"),
        &|company| company["email_address"].as_str().map(str::to_string),
    );
    let erp_customers = emails(
        first.records("customerp", "customers").expect("records"),
        &|customer| customer["email"].as_str().map(str::to_string),
    );
    let shop_customers = emails(
        first
            .records("customwebshop", "customers")
            .expect("records"),
        &|customer| customer["email"].as_str().map(str::to_string),
    );
    assert!(
        keap_companies
            .iter()
            .any(|email| erp_customers.contains(email))
    );
    assert!(
        shop_customers
            .iter()
            .any(|email| erp_customers.contains(email))
    );
    let skus = |system: &str, field: &str, entity: &str| -> Vec<String> {
        first
            .records(system, entity)
            .expect("records")
            .iter()
            .filter_map(|product| product[field].as_str().map(str::to_string))
            .collect()
    };
    let erp_skus = skus("customerp", "sku", "products");
    assert!(
        skus("keap", "sku", "products")
            .iter()
            .any(|sku| erp_skus.contains(sku))
    );
    assert!(
        skus("customwebshop", "sku", "products")
            .iter()
            .any(|sku| erp_skus.contains(sku))
    );
    assert!(
        skus("salesforce", "ProductCode", "Product2")
            .iter()
            .any(|sku| erp_skus.contains(sku))
    );
}

/// Every record of every system renders the same after a restart from the state file as
/// before it (the stored layout is compact; the file and the answers are not changed by it),
/// and a file that is not a state file is refused with its name.
#[tokio::test]
async fn every_record_renders_the_same_after_a_restart() {
    let path =
        std::env::temp_dir().join(format!("tether-sandbox-render-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let first = start(SandboxOptions {
        state_file: Some(path.clone()),
        seed: 3,
        ..options()
    })
    .await;
    let systems: Vec<String> = first.systems().into_iter().map(|(name, _)| name).collect();
    let mut before = Vec::new();
    for system in &systems {
        for entity in first.entities(system).expect("entities") {
            before.push((
                system.clone(),
                entity,
                first.records(system, entity).expect("records"),
            ));
        }
    }
    assert!(before.iter().all(|(_, _, records)| !records.is_empty()));
    first.shutdown().await.expect("shutdown saves");
    let second = start(SandboxOptions {
        state_file: Some(path.clone()),
        ..options()
    })
    .await;
    for (system, entity, records) in &before {
        assert_eq!(
            &second.records(system, entity).expect("records"),
            records,
            "{system} {entity}"
        );
    }
    drop(second);
    std::fs::write(&path, b"[1, 2, 3]").expect("written");
    let error = Sandbox::start(SandboxOptions {
        state_file: Some(path.clone()),
        ..options()
    })
    .await
    .err()
    .expect("not a state file")
    .to_string();
    assert!(
        error.contains(&path.display().to_string()) && error.contains("not valid"),
        "{error}"
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn state_file_keeps_data_across_restarts() {
    let path =
        std::env::temp_dir().join(format!("tether-sandbox-state-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let first = start(SandboxOptions {
        state_file: Some(path.clone()),
        seed: 2,
        ..options()
    })
    .await;
    let added = first
        .insert(
            "customerp",
            "customers",
            json!({"name": "Kept AS", "currency": "NOK", "is_active": true}),
        )
        .expect("insert");
    first.shutdown().await.expect("shutdown saves");
    let second = start(SandboxOptions {
        state_file: Some(path.clone()),
        seed: 5,
        ..options()
    })
    .await;
    let customers = second.records("customerp", "customers").expect("records");
    assert_eq!(customers.len(), 3, "the saved state wins over seeding");
    assert!(customers.contains(&added));
    let next = second
        .insert(
            "customerp",
            "customers",
            json!({"name": "Next AS", "currency": "NOK", "is_active": true}),
        )
        .expect("insert");
    assert_eq!(next["customer_number"], "C-000004", "numbering continues");
    assert!(next["modified_at"].as_str() > added["modified_at"].as_str());
    second.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn direct_edits_move_modified_times_and_go_through_the_rules() {
    let sandbox = start(SandboxOptions {
        seed: 3,
        ..options()
    })
    .await;
    let customer = sandbox
        .records("customwebshop", "customers")
        .expect("records")[0]
        .clone();
    let id = customer["id"].as_str().expect("id");
    let edited = sandbox
        .update(
            "customwebshop",
            "customers",
            id,
            json!({"first_name": "Edited"}),
        )
        .expect("edit");
    assert_eq!(edited["first_name"], "Edited");
    assert_eq!(
        edited["email"], customer["email"],
        "a direct edit keeps the other fields"
    );
    assert!(edited["updated_at"].as_str() > customer["updated_at"].as_str());
    let other = sandbox
        .records("customwebshop", "customers")
        .expect("records")[1]
        .clone();
    let refused = sandbox
        .update(
            "customwebshop",
            "customers",
            id,
            json!({"email": other["email"]}),
        )
        .expect_err("duplicate email");
    assert!(matches!(
        refused,
        tether_sandbox::SandboxError::Rejected { status: 422, .. }
    ));
    sandbox
        .delete("customwebshop", "customers", id)
        .expect("delete");
    assert_eq!(
        sandbox
            .record("customwebshop", "customers", id)
            .expect("lookup")
            .expect("still there")["deleted"],
        true
    );
    let company = sandbox
        .update(
            "keap",
            "companies",
            "1",
            json!({"notes": "Called about renewal"}),
        )
        .expect("a person edits a note; the name the API requires on PATCH stays");
    assert_eq!(company["notes"], "Called about renewal");
    let refused = sandbox
        .delete("keap", "companies", "1")
        .expect_err("no DELETE for Keap companies");
    assert!(matches!(
        refused,
        tether_sandbox::SandboxError::Rejected { status: 405, .. }
    ));
    assert_eq!(
        sandbox.request_counts()["customwebshop"].total,
        0,
        "direct access is not counted"
    );
}

#[tokio::test]
async fn faults_hit_only_the_chosen_system_and_are_counted() {
    let faults: FaultSpec = "rate=1,kinds=503,systems=customerp"
        .parse()
        .expect("valid spec");
    let sandbox = start(SandboxOptions {
        faults,
        ..options()
    })
    .await;
    let http = client();
    let faulty = http
        .get(url(&sandbox, "customerp", "/customers"))
        .bearer_auth(credentials::CUSTOMERP_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(faulty.status(), StatusCode::SERVICE_UNAVAILABLE);
    let healthy = http
        .get(url(&sandbox, "customwebshop", "/customers"))
        .header("X-Api-Key", credentials::CUSTOMWEBSHOP_API_KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(healthy.status(), StatusCode::OK);
    let counts = sandbox.request_counts();
    assert_eq!(counts["customerp"].injected_faults, 1);
    assert_eq!(counts["customwebshop"].injected_faults, 0);
    assert_eq!(counts["customwebshop"].reads, 1);

    let stalls: FaultSpec = "rate=1,kinds=timeout,stall=20ms,systems=keap"
        .parse()
        .expect("valid spec");
    let stalled = start(SandboxOptions {
        faults: stalls,
        ..options()
    })
    .await;
    let response = client()
        .get(url(&stalled, "keap", "/contacts"))
        .header("X-Keap-API-Key", credentials::KEAP_API_KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let (_, body) = json_of(response).await;
    assert_eq!(body["fault"]["faultstring"], "Gateway Timeout");
}

#[tokio::test]
async fn a_lost_response_still_applies_the_write() {
    let faults: FaultSpec = "rate=1,kinds=lost,systems=customerp"
        .parse()
        .expect("valid spec");
    let sandbox = start(SandboxOptions {
        faults,
        ..options()
    })
    .await;
    let response = client()
        .post(url(&sandbox, "customerp", "/customers"))
        .bearer_auth(credentials::CUSTOMERP_TOKEN)
        .json(&json!({"name": "Ghost Writes AS", "currency": "EUR", "is_active": true}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let customers = sandbox.records("customerp", "customers").expect("records");
    assert_eq!(
        customers.len(),
        1,
        "the create happened although its answer was lost"
    );
    assert_eq!(customers[0]["name"], "Ghost Writes AS");
}

#[test]
fn the_command_prints_exports_and_system_lines_then_serves() {
    use std::io::{BufRead as _, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["sandbox", "--port-base", "0", "--seed", "1", "--print-env"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tether starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .take(17)
        .map(|line| line.expect("line reads"))
        .collect();
    let exports = lines
        .iter()
        .filter(|line| line.starts_with("export "))
        .count();
    assert_eq!(exports, 12);
    let systems: Vec<&str> = lines[12..]
        .iter()
        .filter_map(|line| line.split_once(' ').map(|(system, _)| system))
        .collect();
    assert_eq!(systems, tether_sandbox::SYSTEMS.to_vec());
    let keap = lines[15]
        .split_once(' ')
        .map(|(_, url)| url.to_string())
        .expect("keap line");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let status = runtime.block_on(async {
        client()
            .get(format!("{keap}/products"))
            .send()
            .await
            .map(|response| response.status())
    });
    child.kill().expect("the sandbox stops");
    let _ = child.wait();
    assert_eq!(
        status.expect("the served API answers"),
        StatusCode::UNAUTHORIZED,
        "Keap wants a key"
    );
}

#[test]
fn the_command_prints_one_json_line_with_format_json() {
    use std::io::{BufRead as _, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["sandbox", "--port-base", "0", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tether starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    child.kill().expect("the sandbox stops");
    let _ = child.wait();
    assert!(read.is_ok_and(|bytes| bytes > 0));
    let printed: Value = serde_json::from_str(&line).expect("one JSON line");
    let systems: Vec<&str> = printed["systems"]
        .as_object()
        .expect("systems")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(systems, tether_sandbox::SYSTEMS.to_vec());
    assert_eq!(
        printed["env"]["SALESFORCE_LOGIN_URL"],
        printed["systems"]["salesforce"]
    );
}

#[tokio::test]
async fn env_names_every_system_file_variable() {
    let sandbox = start(options()).await;
    let env = sandbox.env();
    let names: Vec<&str> = env.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "CUSTOMCRM_BASE_URL",
            "CUSTOMCRM_CLIENT_ID",
            "CUSTOMCRM_CLIENT_SECRET",
            "CUSTOMERP_BASE_URL",
            "CUSTOMERP_TOKEN",
            "CUSTOMWEBSHOP_BASE_URL",
            "CUSTOMWEBSHOP_API_KEY",
            "KEAP_BASE_URL",
            "KEAP_API_KEY",
            "SALESFORCE_LOGIN_URL",
            "SALESFORCE_CLIENT_ID",
            "SALESFORCE_CLIENT_SECRET",
        ]
    );
    let value = |name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    assert!(value("CUSTOMERP_BASE_URL").is_some_and(|url| url.ends_with("/api/v1")));
    assert!(value("KEAP_BASE_URL").is_some_and(|url| url.ends_with("/crm/rest/v1")));
    assert_eq!(
        value("SALESFORCE_LOGIN_URL"),
        sandbox.base_url("salesforce")
    );
}

// ---- Conformance with the contract files -----------------------------------------------------

/// The APIs' contracts, vendored at the repository root (`contracts/`).
fn contracts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contracts")
}

fn contract(dir: &std::path::Path, file: &str) -> SchemaDoc {
    let text = std::fs::read_to_string(dir.join(file)).expect("contract file reads");
    SchemaDoc::parse(&text).expect("contract parses")
}

fn assert_conforms(doc: &SchemaDoc, schema: &Value, body: &Value, mode: Mode, what: &str) {
    let violations = doc.validate(schema, body, mode);
    assert!(
        violations.is_empty(),
        "{what} breaks its contract: {violations:?}\n{body}"
    );
}

#[test]
fn keap_subset_matches_the_official_contract() {
    // The in-house contracts and Salesforce's field table are compiled into the simulators
    // from `contracts/` itself; only Keap's subset is a derived copy.
    let dir = contracts_dir();
    let embedded = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crates/sandbox/src/contracts");
    let full: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("keap-v1.openapi.json")).expect("keap reads"),
    )
    .expect("keap parses");
    let subset: Value = serde_json::from_str(
        &std::fs::read_to_string(embedded.join("keap-v1.subset.json")).expect("subset reads"),
    )
    .expect("subset parses");
    let mut titles = std::collections::BTreeMap::new();
    collect_titled(&full["paths"], &mut titles);
    for (title, schema) in subset["components"]["schemas"]
        .as_object()
        .expect("schemas")
    {
        assert_eq!(
            titles.get(title.as_str()).copied(),
            Some(schema),
            "Keap schema {title} differs from the contract"
        );
    }
}

fn collect_titled<'a>(value: &'a Value, out: &mut std::collections::BTreeMap<&'a str, &'a Value>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(title)) = object.get("title")
                && object.contains_key("properties")
            {
                out.entry(title.as_str()).or_insert(value);
            }
            object.values().for_each(|child| collect_titled(child, out));
        }
        Value::Array(items) => items.iter().for_each(|child| collect_titled(child, out)),
        _ => {}
    }
}

#[tokio::test]
async fn inhouse_responses_conform_to_their_openapi_schemas() {
    let dir = contracts_dir();
    let sandbox = start(SandboxOptions {
        seed: 3,
        ..options()
    })
    .await;
    let http = client();
    let token = crm_token(&sandbox).await;
    let systems: [(&str, &str, &[&str]); 3] = [
        (
            "customcrm",
            "customcrm.openapi.json",
            &["customers", "users", "products", "quotes", "orders"],
        ),
        (
            "customerp",
            "customerp.openapi.json",
            &["customers", "contacts", "products", "orders", "quotes"],
        ),
        (
            "customwebshop",
            "customwebshop.openapi.json",
            &["customers", "products", "orders"],
        ),
    ];
    for (system, file, entities) in systems {
        let doc = contract(&dir, file);
        let authorize = |request: reqwest::RequestBuilder| match system {
            "customcrm" => request.bearer_auth(&token),
            "customerp" => request.bearer_auth(credentials::CUSTOMERP_TOKEN),
            _ => request.header("X-Api-Key", credentials::CUSTOMWEBSHOP_API_KEY),
        };
        for entity in entities {
            let collection = format!("/{entity}");
            let (status, list) = json_of(
                authorize(http.get(url(&sandbox, system, &collection)))
                    .send()
                    .await
                    .expect("request"),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            let list_schema = &doc.root()["paths"][&collection]["get"]["responses"]["200"]["content"]
                ["application/json"]["schema"];
            assert_conforms(
                &doc,
                list_schema,
                &list,
                Mode::default(),
                &format!("{system} list {entity}"),
            );
            let first = list.as_object().and_then(|page| {
                ["results", "data", "items"]
                    .iter()
                    .find_map(|key| page.get(*key))
                    .and_then(|items| items.get(0))
                    .cloned()
            });
            let first = first.expect("seeded records are listed");
            let item = format!("/{entity}/{{id}}");
            let id = match &first["id"] {
                Value::String(id) => id.clone(),
                other => other.to_string(),
            };
            let (status, one) = json_of(
                authorize(http.get(url(&sandbox, system, &format!("/{entity}/{id}"))))
                    .send()
                    .await
                    .expect("request"),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            let one_schema = &doc.root()["paths"][&item]["get"]["responses"]["200"]["content"]["application/json"]
                ["schema"];
            assert_conforms(
                &doc,
                one_schema,
                &one,
                Mode::default(),
                &format!("{system} get {entity}"),
            );
        }
        let error_schema = json!({"$ref": "#/components/schemas/Error"});
        let (status, not_found) = json_of(
            authorize(http.get(url(
                &sandbox,
                system,
                if system == "customwebshop" {
                    "/customers/00000000-0000-4000-8000-000000000000"
                } else {
                    "/customers/999999"
                },
            )))
            .send()
            .await
            .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_conforms(
            &doc,
            &error_schema,
            &not_found,
            Mode::default(),
            &format!("{system} 404"),
        );
        let (status, unauthorized) = json_of(
            http.get(url(&sandbox, system, "/customers"))
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_conforms(
            &doc,
            &error_schema,
            &unauthorized,
            Mode::default(),
            &format!("{system} 401"),
        );
    }
    let doc = contract(&dir, "customerp.openapi.json");
    let (_, tombstones) = json_of(
        http.get(url(&sandbox, "customerp", "/deleted"))
            .bearer_auth(credentials::CUSTOMERP_TOKEN)
            .query(&[("entity", "orders")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    let schema = &doc.root()["paths"]["/deleted"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    assert_conforms(
        &doc,
        schema,
        &tombstones,
        Mode::default(),
        "customerp deleted",
    );
}

#[tokio::test]
async fn keap_responses_conform_to_the_v1_schemas() {
    let dir = contracts_dir();
    let doc = contract(&dir, "keap-v1.openapi.json");
    let sandbox = start(SandboxOptions {
        seed: 3,
        ..options()
    })
    .await;
    let http = client();
    // Keap's file is OpenAPI 3.0 without `nullable`; real answers carry nulls and `+0000` offsets.
    let mode = Mode {
        null_as_absent: true,
        lenient_datetime: true,
    };
    for (path, operation) in [
        ("/companies", "/v1/companies"),
        ("/contacts", "/v1/contacts"),
        ("/opportunities", "/v1/opportunities"),
        ("/products", "/v1/products"),
        ("/products/sync", "/v1/products/sync"),
    ] {
        let (status, body) = json_of(
            http.get(url(&sandbox, "keap", path))
                .header("X-Keap-API-Key", credentials::KEAP_API_KEY)
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let schema = &doc.root()["paths"][operation]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"];
        assert_conforms(&doc, schema, &body, mode, &format!("keap {path}"));
    }
    let contact = &sandbox.records("keap", "contacts").expect("records")[0];
    let (_, full) = json_of(
        http.get(url(
            &sandbox,
            "keap",
            &format!("/contacts/{}", contact["id"]),
        ))
        .header("X-Keap-API-Key", credentials::KEAP_API_KEY)
        .send()
        .await
        .expect("request"),
    )
    .await;
    let schema = &doc.root()["paths"]["/v1/contacts/{id}"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    assert_conforms(&doc, schema, &full, mode, "keap get contact");
}

// ---- Real-service behaviour the simulators must not hide ---------------------------------

/// An order with `lines` order products, on a fresh seeded sandbox; returns its id.
fn order_with_lines(sandbox: &Sandbox, lines: usize) -> String {
    let order = sandbox.records("salesforce", "Order").expect("orders")[0].clone();
    let entry = sandbox
        .records("salesforce", "PricebookEntry")
        .expect("entries")
        .into_iter()
        .find(|entry| entry["Pricebook2Id"] == order["Pricebook2Id"])
        .expect("an entry of the order's price book");
    let existing = sandbox
        .records("salesforce", "OrderItem")
        .expect("items")
        .into_iter()
        .filter(|item| item["OrderId"] == order["Id"])
        .count();
    for n in existing..lines {
        sandbox
            .insert(
                "salesforce",
                "OrderItem",
                json!({"OrderId": order["Id"], "PricebookEntryId": entry["Id"], "Quantity": 1, "UnitPrice": 1.0 + n as f64, "Description": format!("line {n}")}),
            )
            .expect("line is added");
    }
    order["Id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn salesforce_pages_the_children_of_a_subquery_past_200() {
    let sandbox = start(SandboxOptions {
        seed: 1,
        ..options()
    })
    .await;
    let order = order_with_lines(&sandbox, 450);
    let (token, instance) = sf_token(&sandbox).await;
    let query = format!(
        "SELECT Id, (SELECT Id, Description FROM OrderItems ORDER BY OrderItemNumber) FROM Order WHERE Id = '{order}'"
    );
    let (status, result) = json_of(
        client()
            .get(format!("{instance}/services/data/v60.0/query"))
            .bearer_auth(&token)
            .query(&[("q", query.as_str())])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(
        result["done"], true,
        "one order: the parent result is whole"
    );
    let mut children = result["records"][0]["OrderItems"].clone();
    assert_eq!(children["totalSize"], 450);
    assert_eq!(
        children["done"], false,
        "past 200 children the relationship is not done"
    );
    let mut ids: Vec<Value> = children["records"].as_array().expect("records").clone();
    assert_eq!(ids.len(), 200, "the first child batch");
    let mut pages = 1;
    while children["done"] == false {
        let next = children["nextRecordsUrl"]
            .as_str()
            .expect("a child relationship that is not done has its own next link");
        let (status, more) = json_of(
            client()
                .get(format!("{instance}{next}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{more}");
        ids.extend(more["records"].as_array().expect("records").iter().cloned());
        children = more;
        pages += 1;
    }
    assert_eq!(pages, 3, "200 + 200 + 50");
    let distinct: std::collections::HashSet<String> = ids
        .iter()
        .map(|item| item["Id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(distinct.len(), 450, "every line once");
}

#[tokio::test]
async fn keap_next_links_drop_optional_properties_and_order_direction() {
    let sandbox = start(SandboxOptions {
        seed: 0,
        ..options()
    })
    .await;
    for n in 0..3 {
        sandbox
            .insert(
                "keap",
                "contacts",
                json!({"given_name": "Ada", "family_name": format!("Link{n}"), "job_title": "Buyer",
                       "email_addresses": [{"email": format!("ada{n}@links.example"), "field": "EMAIL1"}]}),
            )
            .expect("contact");
    }
    let get = |link: String| async move {
        json_of(
            client()
                .get(link)
                .header("X-Keap-API-Key", credentials::KEAP_API_KEY)
                .send()
                .await
                .expect("request"),
        )
        .await
    };
    let (status, first) = get(url(
        &sandbox,
        "keap",
        "/contacts?limit=2&optional_properties=job_title&order=last_updated&order_direction=ASCENDING&since=2000-01-01T00:00:00.000Z",
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["contacts"][0]["job_title"], "Buyer");
    let next = first["next"].as_str().expect("next").to_owned();
    for kept in ["limit=2", "offset=2", "order=last_updated", "since="] {
        assert!(next.contains(kept), "the link keeps {kept}: {next}");
    }
    for dropped in ["optional_properties", "order_direction"] {
        assert!(!next.contains(dropped), "the link drops {dropped}: {next}");
    }
    let (status, second) = get(next).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let contact = &second["contacts"][0];
    assert_eq!(contact["family_name"], "Link2");
    assert!(
        contact.get("job_title").is_none(),
        "a page read through the link has no job title: {contact}"
    );
}

#[tokio::test]
async fn salesforce_get_deleted_keeps_15_days_and_refuses_starts_before_a_purge() {
    let sandbox = start(SandboxOptions {
        seed: 1,
        ..options()
    })
    .await;
    let contact = sandbox.records("salesforce", "Contact").expect("contacts")[0].clone();
    let id = contact["Id"].as_str().expect("id").to_owned();
    sandbox
        .delete("salesforce", "Contact", &id)
        .expect("contact deleted");
    let (token, instance) = sf_token(&sandbox).await;
    let deleted = |start: chrono::DateTime<chrono::Utc>| {
        let (token, instance) = (token.clone(), instance.clone());
        async move {
            let end = chrono::Utc::now() + chrono::Duration::minutes(2);
            let format =
                |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
            json_of(
                client()
                    .get(format!(
                        "{instance}/services/data/v60.0/sobjects/Contact/deleted/"
                    ))
                    .bearer_auth(&token)
                    .query(&[("start", format(start)), ("end", format(end))])
                    .send()
                    .await
                    .expect("request"),
            )
            .await
        }
    };
    let now = chrono::Utc::now();
    let (status, body) = deleted(now - chrono::Duration::days(16)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body[0]["errorCode"], "INVALID_REPLICATION_DATE");

    let (status, body) = deleted(now - chrono::Duration::days(1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["deletedRecords"]
            .as_array()
            .expect("deleted records")
            .iter()
            .any(|d| d["id"] == json!(id)),
        "{body}"
    );

    sandbox
        .empty_recycle_bin("salesforce")
        .expect("the recycle bin is emptied");
    let (status, body) = deleted(now - chrono::Duration::days(1)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body[0]["errorCode"], "INVALID_REPLICATION_DATE",
        "a start before the purge is refused"
    );
    let (status, body) = deleted(chrono::Utc::now() + chrono::Duration::minutes(1)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a start after the purge is read: {body}"
    );
}

#[tokio::test]
async fn a_generic_salesforce_login_host_refuses_client_credentials() {
    let sandbox = start(SandboxOptions {
        salesforce_generic_login: true,
        ..options()
    })
    .await;
    let (status, body) = json_of(
        client()
            .post(url(&sandbox, "salesforce", "/services/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", credentials::SALESFORCE_CLIENT_ID),
                ("client_secret", credentials::SALESFORCE_CLIENT_SECRET),
            ])
            .send()
            .await
            .expect("token request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(
        body["error_description"],
        "request not supported on this domain"
    );
}
