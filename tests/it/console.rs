//! The operator's HTTP API (`/api/`) and the web console (`/console`) of a real `tether
//! serve` over the simulators: the API's answers and access rules without a browser, then
//! the console in Debian's headless `chromium`, driven over the W3C WebDriver protocol by
//! `chromedriver` (plain HTTP, from `reqwest`). Without them the browser test says it was
//! skipped, or fails when `CI` or `TETHER_REQUIRE_TOOLS` is set. With `TETHER_SCREENSHOTS=1`
//! it saves the pages it sees to `docs/console/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tether_engine::store::{ConflictState, Store};

use super::sync::{COMPANIES, World, flows, id_of, keap_company, world};

const TOKEN: &str = "console-admin-token-0123456789abcdef";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A copy of the shipped flows, run once an hour, with the Keap companies' conflicts held
/// for a person (`conflict: manual`); removed when dropped.
struct Flows(PathBuf);

impl Drop for Flows {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn manual_flows() -> Flows {
    let dir = std::env::temp_dir().join(format!(
        "tether-console-flows-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let copy = |from: &Path, to: &Path, flow: bool| {
        std::fs::create_dir_all(to).expect("folder");
        for entry in std::fs::read_dir(from).expect("flows").flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let mut text = std::fs::read_to_string(&path).expect("read");
                if flow {
                    text = text
                        .lines()
                        .filter(|l| !l.starts_with("schedule:"))
                        .map(|l| format!("{l}\n"))
                        .collect::<String>()
                        .replacen("\nmappings:\n", "\nschedule: { every: 1h }\nmappings:\n", 1);
                }
                std::fs::write(to.join(entry.file_name()), text).expect("write");
            }
        }
    };
    copy(&flows(), &dir, true);
    copy(&flows().join("systems"), &dir.join("systems"), false);
    let file = dir.join("keap-to-customerp.yaml");
    let text = std::fs::read_to_string(&file).expect("flow");
    let held = text.replacen(
        "    conflict: target-wins # Keap companies",
        "    conflict: manual # Keap companies",
        1,
    );
    assert_ne!(held, text, "the companies mapping's policy is replaced");
    std::fs::write(&file, held).expect("write flow");
    Flows(dir)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `tether serve` child process with the admin token set.
struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(flows: &Path, w: &World) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("--flows")
            .arg(flows)
            .args(["--log", "warn", "serve", "--no-rate-limits", "--no-watch"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--state")
            .arg(w.state.to_string())
            .envs(w.sandbox.env())
            .env("TETHER_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tether serve starts");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(300))
                .build()
                .expect("client"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = server
                .http
                .get(format!("{}/ready", server.base))
                .send()
                .await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the server gets ready within a minute"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(body)
    }

    async fn json(&self, path: &str) -> Value {
        let response = self.get(path).send().await.expect("answered");
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.expect("JSON")
    }

    /// A run of everything (or `?mapping=M`), waited for.
    async fn run(&self, query: &str) -> Value {
        let response = self
            .http
            .post(format!("{}/runs?wait=true{query}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status().as_u16(), 200, "the run is done");
        response.json().await.expect("report")
    }
}

/// Waits until `check` holds, up to a minute.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} within a minute");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Keap company whose country the ERP cannot take: parked by the companies mapping.
fn bad_company(name: &str) -> Value {
    json!({ "company_name": name, "website": "https://bad.example", "address": { "country_code": "XXX" } })
}

/// The world the console is shown: the demo data synced once, a company parked for its
/// country, and a company whose email was changed on both sides (a held conflict).
struct Scene {
    w: World,
    flows: Flows,
    server: Server,
    bad: String,
    hold: String,
    hold_erp: String,
}

async fn scene(name: &str) -> Scene {
    let w = world(name, 20).await;
    let flows = manual_flows();
    let bad = id_of(
        &w.sandbox
            .insert("keap", "companies", bad_company("Feil Land AS"))
            .expect("insert"),
    );
    let hold = id_of(
        &w.sandbox
            .insert(
                "keap",
                "companies",
                keap_company("Hold AS", "post@hold.example"),
            )
            .expect("insert"),
    );
    let server = Server::start(&flows.0, &w).await;
    server.run("").await;
    let hold_erp = id_of(&w.one("customerp", "customers", "name", "Hold AS"));
    w.sandbox
        .update(
            "keap",
            "companies",
            &hold,
            json!({ "company_name": "Hold AS", "email_address": "keap@hold.example" }),
        )
        .expect("edit keap");
    w.sandbox
        .update(
            "customerp",
            "customers",
            &hold_erp,
            json!({ "email": "erp@hold.example" }),
        )
        .expect("edit erp");
    let report = server.run(&format!("&mapping={COMPANIES}")).await;
    assert_eq!(report["mappings"][0]["conflicts"], 1, "{report:#}");
    Scene {
        w,
        flows,
        server,
        bad,
        hold,
        hold_erp,
    }
}

async fn store(w: &World) -> Store {
    Store::open(&w.state).await.expect("store opens")
}

/// The API without a browser: its JSON, its status codes, and who may use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_json_to_the_admin_and_refuses_everyone_else() {
    let s = scene("console-api").await;
    let server = &s.server;
    let url = |path: &str| format!("{}{path}", server.base);

    // Access: no token, a wrong one, a cross-site mutation, a body that is not JSON.
    for path in [
        "/api/overview",
        "/api/runs",
        "/api/parked",
        "/api/conflicts",
        "/api/record?q=x",
    ] {
        let r = server.http.get(url(path)).send().await.expect("answered");
        assert_eq!(r.status().as_u16(), 401, "GET {path} without a token");
        let r = server
            .http
            .get(url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status().as_u16(), 401, "GET {path} with a wrong token");
    }
    let cross = server
        .post("/api/parked/retry", &json!({ "mapping": COMPANIES }))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .expect("answered");
    assert_eq!(cross.status().as_u16(), 403, "a cross-site POST is refused");
    let plain = server
        .http
        .post(url("/api/parked/retry"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(plain.status().as_u16(), 415, "only JSON bodies");
    let unknown = server
        .get("/api/nothing-here")
        .send()
        .await
        .expect("answered");
    assert_eq!(unknown.status().as_u16(), 404);

    // The overview: flows, mappings with health and counts, systems, runs.
    let overview = server.json("/api/overview").await;
    let mappings: Vec<&Value> = overview["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .flat_map(|f| f["mappings"].as_array().expect("mappings").iter())
        .collect();
    let companies = mappings
        .iter()
        .find(|m| m["mapping"] == COMPANIES)
        .expect("the companies mapping");
    assert_eq!(companies["held"], 1, "{companies:#}");
    assert_eq!(companies["health"], "attention");
    assert!(companies["pairs"].as_u64().is_some_and(|n| n > 0));
    assert!(companies["last_run"]["id"].is_string());
    assert!(
        overview["parked"].as_u64().is_some_and(|n| n > 1),
        "{overview:#}"
    );
    let systems = overview["systems"].as_array().expect("systems");
    assert!(
        systems
            .iter()
            .any(|s| s["system"] == "keap" && s["figures"]["requests"].as_u64().is_some()),
        "{systems:#?}"
    );
    assert!(!overview.to_string().contains(TOKEN));

    // Runs: the list, one run with a report per mapping; an unknown run.
    let runs = server.json("/api/runs?limit=5").await;
    let latest = &runs["runs"][0];
    assert_eq!(latest["outcome"], "ok");
    let id = latest["id"].as_str().expect("id");
    let run = server.json(&format!("/api/runs/{id}")).await;
    assert_eq!(run["reports"][0]["mapping"], COMPANIES, "{run:#}");
    assert_eq!(run["conflicts"], 1);
    let none = server
        .get("/api/runs/NO-SUCH-RUN")
        .send()
        .await
        .expect("answered");
    assert_eq!(none.status().as_u16(), 404);

    // Parked: grouped, per record, retried, set aside.
    let grouped = server.json("/api/parked").await;
    let groups = grouped["groups"].as_array().expect("groups");
    assert!(groups.len() >= 2, "{grouped:#}");
    assert!(
        groups
            .iter()
            .all(|g| g["summary"].is_string() && g["count"].as_u64() > Some(0))
    );
    let bad_ref = format!("keap:companies:{}", s.bad);
    // The company is parked by both mappings that take Keap companies.
    let records = server
        .json(&format!("/api/parked/records?record={bad_ref}"))
        .await;
    let records = records["records"].as_array().expect("records").clone();
    assert!(
        records.iter().all(|r| r["record_id"] == s.bad.as_str()),
        "{records:#?}"
    );
    let in_companies = records
        .iter()
        .find(|r| r["mapping"] == COMPANIES)
        .expect("parked by the companies mapping");
    assert_eq!(in_companies["cause"], "rule-failed");
    assert!(
        in_companies["tries"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );
    let r = server
        .post(
            "/api/parked/retry",
            &json!({ "mapping": "no-such-mapping" }),
        )
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 404);
    let r = server
        .post("/api/parked/retry", &json!({ "records": ["not a record"] }))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 400);
    let retried: Value = server
        .post(
            "/api/parked/retry",
            &json!({ "records": [bad_ref], "run": false }),
        )
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert_eq!(retried["records"], records.len(), "{retried:#}");
    assert_eq!(retried["queued"], false);
    assert!(
        retried["mappings"]
            .as_array()
            .is_some_and(|m| m.contains(&json!(COMPANIES))),
        "{retried:#}"
    );
    let skipped: Value = server
        .post(
            "/api/parked/skip",
            &json!({ "mapping": COMPANIES, "records": [bad_ref] }),
        )
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        skipped["skipped"].as_array().map(Vec::len),
        Some(1),
        "{skipped:#}"
    );
    assert!(
        skipped["message"]
            .as_str()
            .is_some_and(|m| m.contains("set aside"))
    );
    let aside = server.json("/api/parked?skipped=true").await;
    assert_eq!(aside["skipped"], 1);
    let parked = store(&s.w)
        .await
        .parked(Some(COMPANIES))
        .await
        .expect("parked");
    assert!(
        parked
            .iter()
            .any(|p| p.record_id == s.bad && p.is_skipped()),
        "the store keeps it, set aside"
    );

    // Conflicts: held with both values and the base; an unknown one; a bad choice.
    let conflicts = server.json("/api/conflicts").await;
    let held = &conflicts["held"][0];
    assert_eq!(
        (
            &held["field"],
            &held["source_value"],
            &held["target_value"],
            &held["base_value"]
        ),
        (
            &json!("email"),
            &json!("keap@hold.example"),
            &json!("erp@hold.example"),
            &json!("post@hold.example")
        )
    );
    let r = server
        .post(
            "/api/conflicts/NO-SUCH/resolve",
            &json!({ "take": "source" }),
        )
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 404);
    let conflict_id = held["id"].as_str().expect("id");
    let r = server
        .post(
            &format!("/api/conflicts/{conflict_id}/resolve"),
            &json!({ "take": "both" }),
        )
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 400);
    let resolved: Value = server
        .post(
            &format!("/api/conflicts/{conflict_id}/resolve"),
            &json!({ "take": "value", "value": "chosen@hold.example" }),
        )
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert_eq!(resolved["conflict"]["state"], "resolved", "{resolved:#}");
    assert_eq!(resolved["queued"], true);
    let again = server
        .post(
            &format!("/api/conflicts/{conflict_id}/resolve"),
            &json!({ "take": "source" }),
        )
        .send()
        .await
        .expect("answered");
    assert_eq!(again.status().as_u16(), 409, "decided once");
    let w = &s.w;
    eventually("the chosen value is written to both sides", async || {
        let keap = w.one("keap", "companies", "company_name", "Hold AS");
        let erp = w.one("customerp", "customers", "name", "Hold AS");
        (keap["email_address"] == "chosen@hold.example" && erp["email"] == "chosen@hold.example")
            .then_some(())
    })
    .await;

    // A record by its id and by its match key: identity, counterpart, fields, history.
    let found = server
        .json(&format!("/api/record?q=keap:companies:{}", s.hold))
        .await;
    assert_eq!(found["by"], "record");
    let view = &found["records"][0];
    let identity = &view["identities"][0];
    assert_eq!(identity["identity"], "customer");
    assert!(
        identity["counterparts"]
            .as_array()
            .expect("counterparts")
            .iter()
            .any(|c| c["record"]
                == json!({ "system": "customerp", "entity": "customers", "id": s.hold_erp })),
        "{view:#}"
    );
    let pair = view["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .find(|p| p["mapping"] == COMPANIES)
        .expect("the companies pair");
    assert!(
        pair["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .any(|f| f["target_field"] == "name"
                && f["source_field"] == "$.company_name"
                && f["value"] == "Hold AS"),
        "{pair:#}"
    );
    let actions: Vec<&str> = view["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions.first(), Some(&"create"), "{actions:?}");
    assert!(actions.contains(&"resolve"), "{actions:?}");
    let by_key = server.json("/api/record?q=%20hold%20AS").await;
    assert_eq!(by_key["by"], "key");
    assert!(
        by_key["records"]
            .as_array()
            .expect("records")
            .iter()
            .any(|r| r["record"]["id"] == s.hold.as_str()),
        "{by_key:#}"
    );
    let missing = server.get("/api/record").send().await.expect("answered");
    assert_eq!(missing.status().as_u16(), 400);

    // The console's login: a page for browsers without a session, a cookie that is not
    // the token, no login from another site.
    let page = server
        .http
        .get(url("/console/parked"))
        .send()
        .await
        .expect("answered");
    assert_eq!(page.status().as_u16(), 401);
    assert!(page.text().await.expect("html").contains("Admin token"));
    let wrong = server
        .http
        .post(url("/console/login"))
        .form(&[("token", "wrong"), ("next", "/console/parked")])
        .send()
        .await
        .expect("answered");
    assert_eq!(wrong.status().as_u16(), 401);
    let cross = server
        .http
        .post(url("/console/login"))
        .header("Origin", "https://evil.example")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .expect("answered");
    assert_eq!(cross.status().as_u16(), 403);
    let login = server
        .http
        .post(url("/console/login"))
        .form(&[("token", TOKEN), ("next", "/console/parked")])
        .send()
        .await
        .expect("answered");
    assert_eq!(login.status().as_u16(), 303);
    assert_eq!(
        login.headers()["location"].to_str().expect("ascii"),
        "/console/parked"
    );
    let set = login.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(TOKEN), "the cookie is not the token");
    let session = set.split(';').next().expect("pair").to_owned();
    let with_session = server
        .http
        .get(url("/api/overview"))
        .header("Cookie", &session)
        .send()
        .await
        .expect("answered");
    assert_eq!(
        with_session.status().as_u16(),
        200,
        "the session opens the API"
    );
    let page = server
        .http
        .get(url("/console/parked"))
        .header("Cookie", &session)
        .send()
        .await
        .expect("answered");
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.expect("html");
    assert!(html.contains("Parked records") && !html.contains(TOKEN));
    let forged = server
        .http
        .get(url("/api/overview"))
        .header("Cookie", format!("tether_session={TOKEN}"))
        .send()
        .await
        .expect("answered");
    assert_eq!(forged.status().as_u16(), 401, "the token is not a session");
    drop(s.flows);
}

/// Whether chromium and chromedriver are here; when not, the browser test is skipped with
/// a notice, or fails when `CI` or `TETHER_REQUIRE_TOOLS` is set.
fn browser_available() -> bool {
    let found = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !found {
        let required = ["CI", "TETHER_REQUIRE_TOOLS"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        assert!(
            !required,
            "chromium and chromedriver are missing (Debian: apt-get install chromium \
             chromium-driver) and CI or TETHER_REQUIRE_TOOLS is set"
        );
        println!(
            "skipped: the console in a browser (Debian: apt-get install chromium \
             chromium-driver; set TETHER_REQUIRE_TOOLS=1 to make this a failure)"
        );
    }
    found
}

/// A chromedriver process and one headless chromium session, over W3C WebDriver.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: Flows,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver gets ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = Flows(std::env::temp_dir().join(format!(
            "tether-console-chromium-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        )));
        std::fs::create_dir_all(&profile.0).expect("profile folder");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.0.display()),
                ]
            }
        } } });
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("JSON");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a browser session: {created:#}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    /// A WebDriver command: its value, or the error it answered.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("JSON");
        if answer["value"]["error"].is_null() {
            Ok(answer["value"].clone())
        } else {
            Err(answer)
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_call(method, path, body).await {
            Ok(value) => value,
            Err(answer) => panic!("WebDriver {path}: {answer:#}"),
        }
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found[ELEMENT].as_str().expect("an element").to_owned()
    }

    async fn find_xpath(&self, xpath: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "xpath", "value": xpath })),
            )
            .await;
        found[ELEMENT].as_str().expect("an element").to_owned()
    }

    async fn click(&self, element: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, element: &str, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The page's text as the user sees it (empty while a page is being replaced).
    async fn text(&self) -> String {
        let Ok(found) = self
            .try_call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": "body" })),
            )
            .await
        else {
            return String::new();
        };
        let Some(body) = found[ELEMENT].as_str() else {
            return String::new();
        };
        self.try_call(reqwest::Method::GET, &format!("/element/{body}/text"), None)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    async fn title(&self) -> String {
        self.call(reqwest::Method::GET, "/title", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the page's text holds `what`.
    async fn until_text(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text().await;
            if text.contains(what) {
                return text;
            }
            assert!(Instant::now() < deadline, "the page shows `{what}`: {text}");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Saves the page as `docs/console/NAME.png` when `TETHER_SCREENSHOTS=1`.
    async fn screenshot(&self, name: &str) {
        if std::env::var("TETHER_SCREENSHOTS").as_deref() != Ok("1") {
            return;
        }
        // The whole page (up to 2400 pixels), then the window as it was.
        let height = self
            .call(
                reqwest::Method::POST,
                "/execute/sync",
                Some(
                    json!({ "script": "return document.documentElement.scrollHeight", "args": [] }),
                ),
            )
            .await
            .as_u64()
            .unwrap_or(1000)
            .clamp(600, 2400);
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": 1280, "height": height })),
        )
        .await;
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": 1280, "height": 1000 })),
        )
        .await;
        let png = base64_decode(data.as_str().expect("base64"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console");
        std::fs::create_dir_all(&dir).expect("docs/console");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    }

    async fn quit(&self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

/// Standard base64 (what WebDriver screenshots are), without a dependency for it.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0);
    for sextet in text.bytes().filter_map(value) {
        bits = (bits << 6) | u32::from(sextet);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
    assert_eq!(base64_decode("iVBORw=="), b"\x89PNG");
}

/// The console in a real browser: log in with the token, see the demo's parked records
/// grouped by cause, retry one whose cause was fixed, resolve a held conflict, open a
/// record and see its history; the store changes as the pages say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser_logs_in_retries_resolves_and_shows_a_record() {
    if !browser_available() {
        return;
    }
    let s = scene("console-browser").await;
    let base = &s.server.base;
    let browser = Browser::start().await;

    // Logging in: the console asks for the token once.
    browser.go(&format!("{base}/console")).await;
    assert_eq!(browser.title().await, "Log in · Tether");
    let token = browser.find("#token").await;
    browser.type_into(&token, TOKEN).await;
    let submit = browser.find("form.login button[type=submit]").await;
    browser.click(&submit).await;
    let overview = browser.until_text("parked records").await;
    assert_eq!(browser.title().await, "Overview · Tether");
    assert!(overview.contains(COMPANIES), "{overview}");
    assert!(overview.contains("needs attention"), "{overview}");
    assert!(overview.contains("conflicts held for you"), "{overview}");
    assert!(!overview.contains(TOKEN));
    browser.screenshot("overview").await;

    // Parked records, grouped by cause as the API groups them.
    let grouped = s.server.json("/api/parked").await;
    browser.go(&format!("{base}/console/parked")).await;
    let parked = browser.until_text("By cause").await;
    for group in grouped["groups"].as_array().expect("groups") {
        let summary = group["summary"].as_str().expect("summary");
        assert!(
            parked.contains(summary),
            "the page shows `{summary}`: {parked}"
        );
    }
    let bad_ref = format!("keap:companies:{}", s.bad);
    assert!(parked.contains(&bad_ref), "{parked}");
    browser.screenshot("parked").await;

    // Its cause fixed in Keap, the company is retried from its row: it syncs.
    s.w.sandbox
        .update(
            "keap",
            "companies",
            &s.bad,
            json!({ "company_name": "Feil Land AS", "address": { "country_code": "DNK" } }),
        )
        .expect("fix");
    let retry = browser
        .find_xpath(&format!(
            "//tr[contains(@class,'parked-record')][.//a[text()='{bad_ref}']]\
             [.//input[@name='mapping' and @value='{COMPANIES}']]\
             //form[@data-api='/api/parked/retry']//button"
        ))
        .await;
    browser.click(&retry).await;
    let answer = browser.until_text("1 parked record to try again").await;
    assert!(answer.contains(COMPANIES), "{answer}");
    let w = &s.w;
    let customer = eventually("the retried company reaches the ERP", async || {
        w.find("customerp", "customers", "name", "Feil Land AS")
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(customer["billing_address"]["country"], "DK");
    let store = store(&s.w).await;
    eventually("the company is off the parked list", async || {
        let parked = store.parked(Some(COMPANIES)).await.expect("parked");
        (!parked.iter().any(|p| p.record_id == s.bad)).then_some(())
    })
    .await;

    // The held conflict: both values and the base; the target's value is taken.
    browser.go(&format!("{base}/console/conflicts")).await;
    let page = browser.until_text("Held for you (1)").await;
    for value in ["keap@hold.example", "erp@hold.example", "post@hold.example"] {
        assert!(page.contains(value), "{value}: {page}");
    }
    browser.screenshot("conflicts").await;
    let take = browser
        .find("article.conflict button[name=take][value=target]")
        .await;
    browser.click(&take).await;
    let answer = browser.until_text("resolved: the target's value").await;
    assert!(answer.contains("Held for you (0)"), "{answer}");
    let held = store
        .open_conflicts(Some(COMPANIES))
        .await
        .expect("conflicts");
    assert!(
        held.iter().all(|c| c.state != ConflictState::Held),
        "nothing held any more: {held:#?}"
    );
    eventually("the choice is written to Keap", async || {
        let keap = w.one("keap", "companies", "company_name", "Hold AS");
        (keap["email_address"] == "erp@hold.example").then_some(())
    })
    .await;

    // The record page, found from the search form: identity, counterpart, history.
    browser.go(&format!("{base}/console/record")).await;
    let q = browser.find("#q").await;
    browser
        .type_into(&q, &format!("keap:companies:{}", s.hold))
        .await;
    let look = browser.find("form.search button").await;
    browser.click(&look).await;
    let page = browser.until_text("History").await;
    assert!(page.contains("customer"), "{page}");
    assert!(
        page.contains(&format!("customerp:customers:{}", s.hold_erp)),
        "the counterpart: {page}"
    );
    assert!(page.contains("Fields as last synced"), "{page}");
    assert!(page.contains("create"), "the create in its history: {page}");
    assert!(
        page.contains("resolve"),
        "the manual resolve in its history: {page}"
    );
    assert!(page.contains("erp@hold.example"), "{page}");
    assert!(page.contains("Resync this record"), "{page}");
    browser.screenshot("record").await;
    let resync = browser
        .find_xpath("//button[normalize-space()='Resync this record']")
        .await;
    browser.click(&resync).await;
    let answer = browser.until_text("queued").await;
    assert!(
        answer.contains(&format!("resync of keap:companies:{} queued", s.hold)),
        "{answer}"
    );
    eventually("the resync asked from the console is a run", async || {
        let runs = store.recent_runs(5).await.expect("runs");
        runs.iter()
            .any(|r| r.trigger.as_deref() == Some("resync") && r.finished_at.is_some())
            .then_some(())
    })
    .await;

    // Logging out ends the session.
    let logout = browser.find("form.logout button").await;
    browser.click(&logout).await;
    browser.until_text("Admin token").await;
    browser.go(&format!("{base}/console/parked")).await;
    assert_eq!(browser.title().await, "Log in · Tether");
    browser.quit().await;
}

/// `POST /api/resync`: a record edited behind Tether's back (no modified time moved) is
/// repaired by a resync asked over HTTP, which is refused to strangers and for bad requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_over_the_api_repairs_a_record_edited_behind_tethers_back() {
    let w = world("console-resync", 0).await;
    let flows = manual_flows();
    let keap = id_of(
        &w.sandbox
            .insert(
                "keap",
                "companies",
                keap_company("Stille AS", "post@stille.example"),
            )
            .expect("insert"),
    );
    let server = Server::start(&flows.0, &w).await;
    server.run(&format!("&mapping={COMPANIES}")).await;
    let erp = id_of(&w.one("customerp", "customers", "name", "Stille AS"));
    w.sandbox
        .edit_unstamped(
            "customerp",
            "customers",
            &erp,
            json!({ "phone": "+4722000077" }),
        )
        .expect("quiet edit");
    let keap_phone =
        || w.one("keap", "companies", "company_name", "Stille AS")["phone_number"].to_string();
    let blind = server.run(&format!("&mapping={COMPANIES}")).await;
    assert!(
        !keap_phone().contains("22000077"),
        "a run does not see it: {blind:#}"
    );

    let record = format!("keap:companies:{keap}");
    let body = json!({ "mapping": COMPANIES, "record": record, "reset_cursors": false });
    let url = format!("{}/api/resync", server.base);
    // Strangers, cross-site requests and bad requests are refused, and change nothing.
    let r = server
        .http
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 401, "no token");
    let r = server
        .post("/api/resync", &body)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 403, "cross-site");
    let r = server
        .post("/api/resync", &json!({ "mapping": "no-such-mapping" }))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 404, "unknown mapping");
    let r = server
        .post("/api/resync", &json!({ "record": record }))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 400, "no mapping named");
    assert!(!keap_phone().contains("22000077"), "nothing written yet");

    // Queued without waiting: 202 with what was queued; then done between runs.
    let queued = server
        .post("/api/resync", &body)
        .send()
        .await
        .expect("answered");
    assert_eq!(queued.status().as_u16(), 202);
    let queued: Value = queued.json().await.expect("JSON");
    assert_eq!(queued["resync"]["mapping"], COMPANIES, "{queued:#}");
    eventually("the queued resync repairs the pair", async || {
        keap_phone().contains("22000077").then_some(())
    })
    .await;

    // Waited for: the outcome names the run, which is recorded with the trigger `resync`.
    let done = server
        .post("/api/resync?wait=true", &body)
        .send()
        .await
        .expect("answered");
    assert_eq!(done.status().as_u16(), 200);
    let done: Value = done.json().await.expect("JSON");
    assert!(!done.to_string().contains(TOKEN));
    let store = store(&w).await;
    let runs = store.recent_runs(5).await.expect("runs");
    assert!(
        runs.iter()
            .filter(|r| r.trigger.as_deref() == Some("resync"))
            .count()
            >= 2,
        "both resyncs are runs with the trigger `resync`: {:?}",
        runs.iter().map(|r| &r.trigger).collect::<Vec<_>>()
    );
}
