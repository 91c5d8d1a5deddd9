//! `tether serve` end to end: the real binary as a child process, over the simulators, with
//! flow files edited under it, signals sent to it, and several workers on one PostgreSQL
//! store (that test needs `TETHER_TEST_POSTGRES` and says it was skipped without it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tether_engine::store::{RunOutcome, Store, StoreUrl};
use tether_engine::sync::engine::RunOptions;
use tether_engine::sync::open::{OpenOptions, open};
use tether_sandbox::{RateLimits, Sandbox, SandboxOptions};

const COMPANIES: &str = "keap-companies-to-customerp-customers";
const HOOK_TOKEN: &str = "hook-token-for-tests";
const SIGNING_SECRET: &str = "signing-secret-for-tests";

/// A folder removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "tether-serve-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(dir.join("flows/systems")).expect("temp dir");
        TempDir(dir)
    }

    /// A copy of the shipped flows, each flow run every `every` when given.
    fn flows(&self, every: Option<&str>) -> PathBuf {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
        let flows = self.0.join("flows");
        for (from, to) in [
            (shipped.clone(), flows.clone()),
            (shipped.join("systems"), flows.join("systems")),
        ] {
            for entry in std::fs::read_dir(&from).expect("flows folder") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    let mut text = std::fs::read_to_string(&path).expect("read");
                    if let (Some(every), false) = (every, from.ends_with("systems")) {
                        text = with_schedule(&text, every);
                    }
                    std::fs::write(to.join(path.file_name().expect("name")), text).expect("write");
                }
            }
        }
        flows
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The flow file with `schedule: { every: ... }` before its mappings.
fn with_schedule(text: &str, every: &str) -> String {
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("schedule:"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.replacen(
        "\nmappings:\n",
        &format!("\nschedule: {{ every: {every} }}\nmappings:\n"),
        1,
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `tether serve` child process.
struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
}

/// How a test server is started beyond the defaults.
#[derive(Default)]
struct Extra<'a> {
    /// More environment variables.
    env: &'a [(&'a str, &'a str)],
    /// Where stderr goes (inherited when `None`).
    stderr: Option<&'a Path>,
    /// The `--log` filter (`warn` when `None`).
    log: Option<&'a str>,
}

impl Server {
    fn start(flows: &Path, state: &StoreUrl, sandbox: &Sandbox, worker: &str) -> Server {
        Server::start_with(flows, state, sandbox, worker, &Extra::default())
    }

    fn start_with(
        flows: &Path,
        state: &StoreUrl,
        sandbox: &Sandbox,
        worker: &str,
        extra: &Extra<'_>,
    ) -> Server {
        let port = free_port();
        let stderr = match extra.stderr {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::inherit(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("--flows")
            .arg(flows)
            .args([
                "--log",
                extra.log.unwrap_or("warn"),
                "serve",
                "--no-rate-limits",
                "--lease-seconds",
                "3",
            ])
            .args(["--worker", worker, "--listen", &format!("127.0.0.1:{port}")])
            .arg("--state")
            .arg(state.to_string())
            .envs(sandbox.env())
            .env("KEAP_HOOK_TOKEN", HOOK_TOKEN)
            .env_remove("TETHER_ADMIN_TOKEN")
            .envs(extra.env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("tether serve starts");
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Option<reqwest::Response> {
        self.http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .ok()
    }

    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(r) = self.get("/ready").await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server did not get ready within a minute");
    }

    async fn json(&self, path: &str) -> Value {
        self.get(path)
            .await
            .expect("the server answers")
            .json()
            .await
            .expect("JSON")
    }

    async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .expect("the server answers")
            .text()
            .await
            .expect("text")
    }

    /// `POST /runs?...&wait=true`: the run's report.
    async fn run_now(&self, query: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/runs?wait=true{query}", self.base))
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST path` (not sent yet).
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30))
    }

    /// Waits until `/status` satisfies `check`.
    async fn until(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.json("/status").await;
            if check(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}: {status:#}");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGTERM sent");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server stops within a minute of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sandbox(seed: usize) -> Sandbox {
    Sandbox::start(SandboxOptions {
        seed,
        rate_limits: RateLimits::unlimited(),
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts")
}

fn keap_company(name: &str, email: &str) -> Value {
    json!({
        "company_name": name,
        "email_address": email,
        "address": { "line1": "1 Main St", "locality": "Oslo", "zip_code": "0150", "country_code": "NOR" }
    })
}

/// How many records of `system`/`entity` have `field` equal to `value`.
fn count(sandbox: &Sandbox, system: &str, entity: &str, field: &str, value: &str) -> usize {
    sandbox
        .records(system, entity)
        .expect("records")
        .iter()
        .filter(|r| r.get(field).and_then(Value::as_str) == Some(value))
        .count()
}

/// Waits until a record with `field` = `value` exists (`what` says why it should).
async fn appears(
    sandbox: &Sandbox,
    system: &str,
    entity: &str,
    field: &str,
    value: &str,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(sandbox, system, entity, field, value) == 0 {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes the ERP's system file take signed change notifications under [`SIGNING_SECRET`].
fn erp_signs_notifications(flows: &Path) {
    let erp = flows.join("systems/customerp.yaml");
    let text = std::fs::read_to_string(&erp).expect("read");
    let text = text.replacen(
        "\nentities:\n",
        &format!("\nwebhooks:\n  style: signed\n  secret: {SIGNING_SECRET}\n\nentities:\n"),
        1,
    );
    std::fs::write(&erp, text).expect("write");
}

fn flow_interval(status: &Value, flow: &str) -> Option<f64> {
    status["server"]["flows"]
        .as_array()?
        .iter()
        .find(|f| f["flow"] == flow)
        .and_then(|f| f["every_seconds"].as_f64())
}

/// The value of one sample line of the metrics text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// A Keap company's email is on exactly one ERP customer and one shop customer.
fn assert_synced_once(sandbox: &Sandbox, email: &str) {
    for (system, entity) in [("customerp", "customers"), ("customwebshop", "customers")] {
        assert_eq!(
            count(sandbox, system, entity, "email", email),
            1,
            "{email} once in {system}"
        );
    }
}

async fn open_engine(
    state: &StoreUrl,
    sandbox: &Sandbox,
    flows: &Path,
) -> tether_engine::sync::engine::Engine {
    let env: std::collections::HashMap<String, String> = sandbox.env().into_iter().collect();
    let lookup = move |name: &str| env.get(name).cloned();
    open(
        flows,
        state,
        &lookup,
        OpenOptions {
            ignore_rate_limits: true,
        },
    )
    .await
    .expect("engine opens")
}

async fn in_process_run(state: &StoreUrl, sandbox: &Sandbox, flows: &Path) -> u64 {
    in_process_run_with(state, sandbox, flows, RunOptions::default()).await
}

async fn in_process_run_with(
    state: &StoreUrl,
    sandbox: &Sandbox,
    flows: &Path,
    options: RunOptions,
) -> u64 {
    let engine = open_engine(state, sandbox, flows).await;
    let report = engine.run(&options).await.expect("run succeeds");
    report.writes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_takes_good_edits_refuses_bad_ones_and_reports_metrics() {
    let dir = TempDir::new("reload");
    let flows = dir.flows(None);
    // The ERP sends signed change notifications in this setup.
    erp_signs_notifications(&flows);
    let sandbox = sandbox(3).await;
    let state = StoreUrl::parse(&dir.0.join("state.db").display().to_string()).expect("url");
    let server = Server::start(&flows, &state, &sandbox, "solo");
    server.ready().await;

    assert_eq!(
        server.get("/health").await.map(|r| r.status().as_u16()),
        Some(200)
    );
    let (code, report) = server.run_now("&flow=keap-to-customerp").await;
    assert_eq!(code, 200, "{report:#}");
    assert_eq!(report["outcome"], "ok", "{report:#}");
    let metrics = server.metrics().await;
    let read = sample(
        &metrics,
        &format!("tether_records_read_total{{mapping=\"{COMPANIES}\",side=\"source\"}}"),
    );
    assert!(
        read.is_some_and(|n| n >= 3.0),
        "Keap companies read: {metrics}"
    );
    assert!(
        sample(
            &metrics,
            "tether_runs_total{trigger=\"api\",outcome=\"ok\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "tether_http_requests_total{system=\"keap\"}").is_some_and(|n| n > 0.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            &format!("tether_linked_pairs{{mapping=\"{COMPANIES}\"}}")
        )
        .is_some_and(|n| n >= 3.0),
        "{metrics}"
    );
    assert!(
        metrics.contains("tether_run_duration_seconds_bucket"),
        "{metrics}"
    );

    // A good edit is picked up without a restart.
    let file = flows.join("keap-to-customerp.yaml");
    let original = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, with_schedule(&original, "5m")).expect("edit");
    server
        .until("the new schedule is loaded", |s| {
            flow_interval(s, "keap-to-customerp") == Some(300.0)
        })
        .await;

    // Keap REST hooks: the subscription handshake, a forged event, and a real one that runs
    // the Keap company mappings now instead of in five minutes.
    let hook = |token: &str| format!("{}/hooks/keap?token={token}", server.base);
    let handshake = server
        .http
        .post(hook(HOOK_TOKEN))
        .header("X-Hook-Secret", "handshake-42")
        .send()
        .await
        .expect("handshake answered");
    assert_eq!(handshake.status().as_u16(), 200);
    assert_eq!(
        handshake
            .headers()
            .get("x-hook-secret")
            .and_then(|v| v.to_str().ok()),
        Some("handshake-42"),
        "the handshake secret is echoed"
    );
    let company = sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Hook Test AS", "hook@test.example"),
        )
        .expect("insert");
    let event = json!({ "event_key": "company.add", "object_type": "company", "object_keys": [{ "id": company["id"] }] });
    let forged = server
        .http
        .post(hook("guess"))
        .json(&event)
        .send()
        .await
        .expect("answered");
    assert_eq!(forged.status().as_u16(), 401, "a wrong token is refused");
    let accepted = server
        .http
        .post(hook(HOOK_TOKEN))
        .json(&event)
        .send()
        .await
        .expect("answered");
    assert_eq!(accepted.status().as_u16(), 202);
    appears(
        &sandbox,
        "customerp",
        "customers",
        "email",
        "hook@test.example",
        "the hook's run brings the company to the ERP",
    )
    .await;
    let metrics = server.metrics().await;
    assert!(
        sample(
            &metrics,
            "tether_webhooks_total{system=\"keap\",result=\"accepted\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    // A signed notification from the ERP: checked, then the ERP customer mappings run.
    sandbox
        .insert(
            "customerp",
            "customers",
            json!({ "name": "Signed Hook GmbH", "email": "signed@test.example", "currency": "EUR", "is_active": true }),
        )
        .expect("insert");
    let body = br#"{"entity":"customers","ids":["any"]}"#.to_vec();
    let now = chrono::Utc::now().timestamp();
    let send = |secret: &str| {
        server
            .http
            .post(format!("{}/hooks/customerp", server.base))
            .header("X-Tether-Timestamp", now.to_string())
            .header("X-Tether-Signature", sign(secret, now, &body))
            .body(body.clone())
            .send()
    };
    let forged = send("not-the-secret").await.expect("answered");
    assert_eq!(
        forged.status().as_u16(),
        401,
        "a wrong signature is refused"
    );
    let accepted = send(SIGNING_SECRET).await.expect("answered");
    assert_eq!(accepted.status().as_u16(), 202);
    appears(
        &sandbox,
        "keap",
        "companies",
        "email_address",
        "signed@test.example",
        "the notification's run brings the ERP customer to Keap",
    )
    .await;

    // A bad edit is refused with its position, and the old version keeps running.
    let shop = flows.join("keap-to-customwebshop.yaml");
    let good_shop = std::fs::read_to_string(&shop).expect("read");
    std::fs::write(
        &shop,
        good_shop.replacen("    source: companies\n", "    sourse: companies\n", 1),
    )
    .expect("bad edit");
    let status = server
        .until("the bad edit is refused", |s| {
            !s["server"]["rejected_reload"].is_null()
        })
        .await;
    let refused = status["server"]["rejected_reload"].to_string();
    assert!(
        refused.contains("keap-to-customwebshop.yaml:") && refused.contains("sourse"),
        "the refusal names the file, position and key: {refused}"
    );
    assert_eq!(flow_interval(&status, "keap-to-customerp"), Some(300.0));
    sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Reload Test AS", "reload@test.example"),
        )
        .expect("insert");
    let (code, report) = server.run_now("&flow=keap-to-customwebshop").await;
    assert_eq!(code, 200, "{report:#}");
    assert_eq!(
        count(
            &sandbox,
            "customwebshop",
            "customers",
            "email",
            "reload@test.example"
        ),
        1,
        "the old version of the flow still syncs"
    );
    let metrics = server.metrics().await;
    assert!(
        sample(&metrics, "tether_flow_reloads_total{result=\"rejected\"}")
            .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    // Fixed again, then a removed flow is no longer scheduled.
    std::fs::write(&shop, &good_shop).expect("fix");
    server
        .until("the fixed file is loaded", |s| {
            s["server"]["rejected_reload"].is_null()
        })
        .await;
    std::fs::remove_file(flows.join("customcrm-to-customwebshop.yaml")).expect("remove");
    server
        .until("the removed flow is unscheduled", |s| {
            flow_interval(s, "customcrm-to-customwebshop").is_none()
                && flow_interval(s, "keap-to-customwebshop").is_some()
        })
        .await;
    let (code, _) = server.run_now("&flow=customcrm-to-customwebshop").await;
    assert_eq!(code, 404, "a removed flow cannot be run");

    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM ends the server with 0: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_stops_after_the_batch_and_leaves_a_consistent_store() {
    let dir = TempDir::new("shutdown");
    let flows = dir.flows(None);
    let sandbox = sandbox(0).await;
    for i in 0..400 {
        sandbox
            .insert(
                "keap",
                "companies",
                keap_company(
                    &format!("Shutdown {i:03}"),
                    &format!("s{i}@shutdown.example"),
                ),
            )
            .expect("insert");
    }
    let state = StoreUrl::parse(&dir.0.join("state.db").display().to_string()).expect("url");
    let server = Server::start(&flows, &state, &sandbox, "solo");
    server.ready().await;
    // The first scheduled run starts at once; stop it once it has written its first batch.
    server
        .until("a mapping is leased", |s| {
            s["server"]["leases"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandbox
        .records("customerp", "customers")
        .expect("records")
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the run writes its first batch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM ends the server with 0: {status:?}"
    );

    let store = Store::open(&state).await.expect("store");
    assert!(
        store.leases().await.expect("leases").is_empty(),
        "the leases are released"
    );
    let runs = store.recent_runs(5).await.expect("runs");
    let last = runs.first().expect("a run was recorded");
    assert!(
        matches!(last.outcome, Some(RunOutcome::Cancelled | RunOutcome::Ok)),
        "the run is finished in the history, not left open: {last:#?}"
    );
    for mapping in [COMPANIES, "keap-companies-to-customwebshop-customers"] {
        assert!(
            store
                .open_intents(mapping)
                .await
                .expect("intents")
                .is_empty(),
            "no create is left half-done"
        );
    }
    drop(store);

    // The next run carries on from where the stopped one was; nothing exists twice, and
    // finishing the stopped run's work is not a mass change.
    in_process_run(&state, &sandbox, &flows).await;
    assert_eq!(
        in_process_run(&state, &sandbox, &flows).await,
        0,
        "then everything is in sync"
    );
    for i in 0..400 {
        let email = format!("s{i}@shutdown.example");
        assert_synced_once(&sandbox, &email);
    }
}

/// A fresh PostgreSQL schema for one test, dropped at the end; `None` without
/// `TETHER_TEST_POSTGRES`.
struct PgSchema {
    admin_url: String,
    schema: String,
    url: StoreUrl,
}

impl PgSchema {
    async fn new() -> Option<PgSchema> {
        let admin_url = crate::test_postgres()?;
        let schema = format!("tether_serve_{}", fastrand::u64(..));
        let admin = sqlx::postgres::PgPool::connect(&admin_url)
            .await
            .expect("test PostgreSQL reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("schema created");
        admin.close().await;
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = StoreUrl::parse(&format!(
            "{admin_url}{separator}options[search_path]={schema}"
        ))
        .expect("url");
        Some(PgSchema {
            admin_url,
            schema,
            url,
        })
    }

    async fn drop_schema(self) {
        if let Ok(admin) = sqlx::postgres::PgPool::connect(&self.admin_url).await {
            let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
            admin.close().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_postgres_one_killed_every_record_synced_once() {
    let Some(pg) = PgSchema::new().await else {
        return;
    };
    let dir = TempDir::new("workers");
    let flows = dir.flows(Some("2s"));
    let sandbox = sandbox(0).await;
    let mut keap_ids = Vec::new();
    for i in 0..200 {
        let record = sandbox
            .insert(
                "keap",
                "companies",
                keap_company(&format!("Worker {i:03}"), &format!("w{i}@workers.example")),
            )
            .expect("insert");
        keap_ids.push(record["id"].to_string());
    }
    for i in 0..60 {
        sandbox
            .insert(
                "customerp",
                "customers",
                json!({ "name": format!("Erp Worker {i:03}"), "currency": "EUR", "is_active": true }),
            )
            .expect("insert");
    }
    // Opening the store once first applies the migrations.
    drop(Store::open(&pg.url).await.expect("store opens"));
    let workers: Vec<Server> = ["w1", "w2", "w3"]
        .iter()
        .map(|w| Server::start(&flows, &pg.url, &sandbox, w))
        .collect();
    for w in &workers {
        w.ready().await;
    }
    // Kill the first worker while it holds a lease, mid-run.
    let store = Store::open(&pg.url).await.expect("store");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leases = store.leases().await.expect("leases");
        if leases.iter().any(|l| l.worker == "w1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "w1 never took a lease: {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut workers = workers.into_iter();
    let mut killed = workers.next().expect("w1");
    killed.child.kill().expect("SIGKILL");
    let _ = killed.child.wait();
    let survivors: Vec<Server> = workers.collect();

    // Edits while the workers take over must all arrive.
    for i in (0..200).step_by(20) {
        sandbox
            .update(
                "keap",
                "companies",
                &keap_ids[i],
                json!({ "company_name": format!("Worker {i:03}"), "website": format!("https://edited-{i}.example") }),
            )
            .expect("edit");
    }

    // The survivors take over w1's mappings once its leases expire, and settle.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let (code, report) = survivors[0].run_now("").await;
        assert_eq!(code, 200, "{report:#}");
        let writes: u64 = report["mappings"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        [
                            "created_source",
                            "created_target",
                            "updated_source",
                            "updated_target",
                            "deleted_source",
                            "deleted_target",
                        ]
                        .iter()
                        .map(|k| m[k].as_u64().unwrap_or(0))
                        .sum::<u64>()
                    })
                    .sum()
            })
            .unwrap_or(0);
        let skipped = report["mappings"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| !m["held_by"].is_null()));
        if writes == 0 && !skipped {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the workers did not settle: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for server in survivors {
        assert!(server.terminate().success(), "a survivor stops cleanly");
    }

    for i in 0..200 {
        let email = format!("w{i}@workers.example");
        assert_eq!(
            count(&sandbox, "keap", "companies", "email_address", &email),
            1
        );
        assert_synced_once(&sandbox, &email);
    }
    for i in (0..200).step_by(20) {
        let email = format!("w{i}@workers.example");
        let customer = sandbox
            .records("customerp", "customers")
            .expect("records")
            .into_iter()
            .find(|r| r["email"] == email.as_str())
            .expect("customer");
        assert_eq!(
            customer["website"],
            format!("https://edited-{i}.example"),
            "the edit of {email} made during the takeover arrived"
        );
    }
    for i in 0..60 {
        let name = format!("Erp Worker {i:03}");
        assert_eq!(
            count(&sandbox, "keap", "companies", "company_name", &name),
            1,
            "{name} in Keap"
        );
    }
    let leases = store.leases().await.expect("leases");
    assert!(
        leases.iter().all(|l| l.worker == "w1"),
        "only the killed worker's leases can be left, expired: {leases:?}"
    );
    for mapping in [COMPANIES, "keap-companies-to-customwebshop-customers"] {
        assert!(
            store
                .open_intents(mapping)
                .await
                .expect("intents")
                .is_empty()
        );
    }
    drop(store);
    pg.drop_schema().await;
}

/// The engine under a lease: an identity leased to another worker is skipped and reported,
/// taken once that lease expires, and released after the run; a cancelled run writes nothing
/// and is recorded as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_cancel_in_the_engine() {
    use tether_engine::sync::control::{Cancel, LeaseOptions};

    let dir = TempDir::new("lease");
    let flows = dir.flows(None);
    let sandbox = sandbox(3).await;
    let state = StoreUrl::parse(&dir.0.join("state.db").display().to_string()).expect("url");
    let engine = open_engine(&state, &sandbox, &flows).await;
    let store = engine.store().clone();
    let lease = LeaseOptions {
        worker: "me".into(),
        ttl: Duration::from_secs(30),
    };

    let cancel = Cancel::new();
    cancel.cancel();
    let report = engine
        .run(&RunOptions {
            mappings: vec![COMPANIES.into()],
            cancel: Some(cancel),
            ..RunOptions::default()
        })
        .await
        .expect("run");
    assert!(report.interrupted);
    assert_eq!(report.outcome, Some(RunOutcome::Cancelled));
    assert_eq!(report.writes(), 0, "a cancelled run writes nothing");

    let now = chrono::Utc::now();
    let held = store
        .try_acquire_lease(
            "identity:customer",
            "other",
            now,
            now + chrono::Duration::seconds(2),
        )
        .await
        .expect("lease");
    assert!(held.is_some(), "the other worker holds the customers");
    let options = RunOptions {
        mappings: vec![COMPANIES.into()],
        lease: Some(lease.clone()),
        worker: Some("me".into()),
        ..RunOptions::default()
    };
    let report = engine.run(&options).await.expect("run");
    let companies = report
        .mappings
        .iter()
        .find(|m| m.mapping == COMPANIES)
        .expect("report");
    assert_eq!(
        companies.held_by.as_deref(),
        Some("other"),
        "{companies:#?}"
    );
    assert_eq!(
        report.writes(),
        0,
        "nothing is written under another worker's lease"
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = engine.run(&options).await.expect("run");
    assert!(
        report.mappings.iter().all(|m| m.held_by.is_none()),
        "the expired lease is taken over: {report:#?}"
    );
    assert!(report.writes() > 0, "and the customers sync");
    assert!(
        store.leases().await.expect("leases").is_empty(),
        "the leases are released after the run"
    );
}

/// The `X-Tether-Signature` a sender computes, as the README describes it: the hex
/// HMAC-SHA256 of `"<timestamp>.<body>"` under the shared secret.
fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// The runs the store recorded that started at or after `since`.
async fn runs_since(store: &Store, since: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
    store
        .recent_runs(1000)
        .await
        .expect("runs")
        .into_iter()
        .filter(|run| run.started_at >= since)
        .map(|run| json!({ "started_at": run.started_at, "flows": run.flows, "mappings": run.mappings }))
        .collect()
}

/// `POST /runs?wait=true...` with a deadline: `(0, null)` when the server did not answer in
/// time (so that the caller can say how many runs it had made by then).
async fn run_now_within(server: &Server, query: &str, within: Duration) -> (u16, Value) {
    match server
        .http
        .post(format!("{}/runs?wait=true{query}", server.base))
        .timeout(within)
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// A loop of `POST /runs` must not start a run per request: requests for a scope already
/// pending (or covered by a pending run) join it, so 50 in a row make at most one run that
/// is going on and one pending; a `wait=true` request that joins gets that run's report.
/// Change notifications coalesce the same way. Every request is sent without a token: on
/// loopback without `TETHER_ADMIN_TOKEN` the endpoints are open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_run_requests_in_a_row_make_at_most_two_runs() {
    let dir = TempDir::new("coalesce");
    let flows = dir.flows(Some("1h"));
    // Some latency on every request makes a run last longer than the burst of requests.
    let sandbox = Sandbox::start(SandboxOptions {
        seed: 0,
        rate_limits: RateLimits::unlimited(),
        faults: "latency=40ms".parse().expect("fault spec"),
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts");
    let state = StoreUrl::parse(&dir.0.join("state.db").display().to_string()).expect("url");
    // The endpoint's rate limit is lifted here: this test is about coalescing.
    let server = Server::start_with(
        &flows,
        &state,
        &sandbox,
        "solo",
        &Extra {
            env: &[
                ("TETHER_RUNS_PER_SECOND", "1000"),
                ("TETHER_RUNS_BURST", "1000"),
            ],
            ..Extra::default()
        },
    );
    server.ready().await;
    let store = Store::open(&state).await.expect("store");

    let since = chrono::Utc::now();
    for i in 0..50 {
        let response = server.post("/runs").send().await.expect("answered");
        assert_eq!(response.status().as_u16(), 202, "request {i} is accepted");
    }
    let (code, report) = run_now_within(&server, "", Duration::from_secs(120)).await;
    let runs = runs_since(&store, since).await;
    println!("51 requests for all flows in a row: {} runs", runs.len());
    assert!(
        runs.len() <= 2,
        "51 requests for all flows made {} runs (at most one going on and one pending): {runs:#?}",
        runs.len()
    );
    assert_eq!(code, 200, "the waiting request gets the report: {report:#}");
    assert_eq!(report["outcome"], "ok", "{report:#}");

    // Keap notifications in a row, then a request for one of the mappings they run: it is
    // covered by the pending run, joins it and gets its report.
    let since = chrono::Utc::now();
    let event = json!({ "event_key": "company.edit", "object_type": "company", "object_keys": [{ "id": 1 }] });
    for i in 0..20 {
        let response = server
            .post(&format!("/hooks/keap?token={HOOK_TOKEN}"))
            .json(&event)
            .send()
            .await
            .expect("answered");
        assert_eq!(
            response.status().as_u16(),
            202,
            "notification {i} is accepted"
        );
    }
    let (code, report) = run_now_within(
        &server,
        &format!("&mapping={COMPANIES}"),
        Duration::from_secs(120),
    )
    .await;
    let runs = runs_since(&store, since).await;
    println!("20 notifications and a request: {} runs", runs.len());
    assert!(
        runs.len() <= 2,
        "20 notifications and a request made {} runs: {runs:#?}",
        runs.len()
    );
    assert_eq!(code, 200, "{report:#}");
    assert!(
        report["mappings"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["mapping"] == COMPANIES)),
        "the report is of a run that covers the mapping asked for: {report:#}"
    );
    let metrics = server.metrics().await;
    assert!(
        sample(
            &metrics,
            "tether_run_requests_total{trigger=\"api\",result=\"joined\"}"
        )
        .is_some_and(|n| n >= 49.0),
        "{metrics}"
    );
    assert!(server.terminate().success());
}

/// `POST /runs` beyond the endpoint's token bucket is refused with 429 and `Retry-After`,
/// before anything is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_requests_beyond_the_rate_limit_get_429_with_retry_after() {
    let dir = TempDir::new("ratelimit");
    let flows = dir.flows(Some("1h"));
    let sandbox = sandbox(0).await;
    let state = StoreUrl::parse(&dir.0.join("state.db").display().to_string()).expect("url");
    let server = Server::start_with(
        &flows,
        &state,
        &sandbox,
        "solo",
        &Extra {
            env: &[
                ("TETHER_RUNS_PER_SECOND", "0.1"),
                ("TETHER_RUNS_BURST", "3"),
            ],
            ..Extra::default()
        },
    );
    server.ready().await;
    let mut accepted = 0;
    let mut refused = Vec::new();
    for _ in 0..10 {
        let response = server.post("/runs").send().await.expect("answered");
        match response.status().as_u16() {
            202 => accepted += 1,
            429 => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let body: Value = response.json().await.unwrap_or(Value::Null);
                refused.push((retry_after, body));
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        (1..=4).contains(&accepted),
        "a burst of 3 (plus at most one refill) is accepted, not {accepted}; refused: {refused:?}"
    );
    assert!(refused.len() >= 6, "{refused:?}");
    for (retry_after, body) in &refused {
        assert!(
            retry_after.is_some_and(|s| (1..=10).contains(&s)),
            "Retry-After in whole seconds, at most one token's time: {retry_after:?}"
        );
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("rate")),
            "the refusal says why: {body}"
        );
    }
    let metrics = server.metrics().await;
    assert!(
        sample(
            &metrics,
            "tether_run_requests_total{trigger=\"api\",result=\"rate_limited\"}"
        )
        .is_some_and(|n| n >= 6.0),
        "{metrics}"
    );
    assert!(server.terminate().success());
}

/// A signed notification sent again inside its five-minute window is a replay: refused with
/// 409, while a new notification is still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_signed_notification_is_refused() {
    let dir = TempDir::new("replay");
    let flows = dir.flows(Some("1h"));
    erp_signs_notifications(&flows);
    let sandbox = sandbox(0).await;
    let state = StoreUrl::parse(&dir.0.join("state.db").display().to_string()).expect("url");
    let server = Server::start(&flows, &state, &sandbox, "solo");
    server.ready().await;

    let send = |body: &'static [u8], now: i64| {
        server
            .post("/hooks/customerp")
            .header("X-Tether-Timestamp", now.to_string())
            .header("X-Tether-Signature", sign(SIGNING_SECRET, now, body))
            .body(body)
            .send()
    };
    let now = chrono::Utc::now().timestamp();
    let body: &[u8] = br#"{"entity":"customers","ids":["7"]}"#;
    let first = send(body, now).await.expect("answered");
    assert_eq!(first.status().as_u16(), 202, "the notification is accepted");
    let replay = send(body, now).await.expect("answered");
    let status = replay.status().as_u16();
    let answer: Value = replay.json().await.unwrap_or(Value::Null);
    assert_eq!(
        status, 409,
        "the same notification again is a replay: {answer}"
    );
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("replay")),
        "the refusal says why: {answer}"
    );
    let other: &[u8] = br#"{"entity":"customers","ids":["8"]}"#;
    let next = send(other, now).await.expect("answered");
    assert_eq!(
        next.status().as_u16(),
        202,
        "another notification is accepted"
    );
    let metrics = server.metrics().await;
    assert!(
        sample(
            &metrics,
            "tether_webhooks_total{system=\"customerp\",result=\"replayed\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(server.terminate().success());
}

/// `TETHER_ADMIN_TOKEN` guards `/status`, `POST /runs`, `/api/` and `/console` (bearer
/// header, no or a wrong token: 401); `/health`, `/ready`, `/metrics` and `/hooks/` stay
/// open; a cross-site `POST` is refused even with the token; the token is never logged.
/// Listening beyond loopback without a token refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_the_token_and_refuse_cross_site_posts() {
    const TOKEN: &str = "admin-token-for-tests-0123456789";
    let dir = TempDir::new("access");
    let flows = dir.flows(Some("1h"));
    let sandbox = sandbox(0).await;
    let state = StoreUrl::parse(&dir.0.join("state.db").display().to_string()).expect("url");

    // Beyond loopback without a token: a clear refusal to start.
    let mut open = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("--flows")
        .arg(&flows)
        .args(["serve", "--no-watch", "--listen"])
        .arg(format!("0.0.0.0:{}", free_port()))
        .arg("--state")
        .arg(dir.0.join("open.db"))
        .envs(sandbox.env())
        .env_remove("TETHER_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tether serve starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = loop {
        if let Some(status) = open.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = open.kill();
            let _ = open.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = open.stderr.take() {
        use std::io::Read as _;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(
        exited.is_some_and(|s| !s.success()),
        "listening on 0.0.0.0 without a token must not start: {exited:?} {stderr}"
    );
    assert!(
        stderr.contains("TETHER_ADMIN_TOKEN"),
        "the refusal names the token to set: {stderr}"
    );

    let log = dir.0.join("serve.log");
    let server = Server::start_with(
        &flows,
        &state,
        &sandbox,
        "solo",
        &Extra {
            env: &[("TETHER_ADMIN_TOKEN", TOKEN)],
            stderr: Some(&log),
            log: Some("debug"),
        },
    );
    server.ready().await;
    let status_of = |request: reqwest::RequestBuilder| async move {
        request.send().await.expect("answered").status().as_u16()
    };
    let get = |path: &str| {
        server
            .http
            .get(format!("{}{path}", server.base))
            .timeout(Duration::from_secs(30))
    };
    let bearer = |token: &str| format!("Bearer {token}");

    for path in ["/status", "/api/parked", "/console", "/console/runs"] {
        assert_eq!(
            status_of(get(path)).await,
            401,
            "GET {path} without a token"
        );
        assert_eq!(
            status_of(get(path).header("Authorization", bearer("wrong-token"))).await,
            401,
            "GET {path} with a wrong token"
        );
    }
    let missing = get("/status").send().await.expect("answered");
    assert!(
        missing.headers().contains_key("www-authenticate"),
        "a 401 says how to authenticate"
    );
    let text = missing.text().await.expect("body");
    assert!(text.contains("TETHER_ADMIN_TOKEN"), "{text}");
    assert!(!text.contains(TOKEN), "the token is never shown");
    let status = get("/status")
        .header("Authorization", bearer(TOKEN))
        .send()
        .await
        .expect("answered");
    assert_eq!(
        status.status().as_u16(),
        200,
        "the right token opens /status"
    );
    let status: Value = status.json().await.expect("JSON");
    assert_eq!(status["server"]["worker"], "solo");
    assert!(
        !status.to_string().contains(TOKEN),
        "the token is never shown"
    );
    for path in ["/health", "/ready", "/metrics"] {
        assert_eq!(status_of(get(path)).await, 200, "{path} stays open");
    }

    assert_eq!(
        status_of(server.post("/runs")).await,
        401,
        "POST /runs without a token"
    );
    assert_eq!(
        status_of(server.post("/runs").header("Authorization", bearer("nope"))).await,
        401
    );
    assert_eq!(
        status_of(server.post("/runs").header("Authorization", bearer(TOKEN))).await,
        202,
        "the right token starts a run"
    );
    // What a page on another site can make a browser send, token or not.
    for (header, value) in [
        ("Origin", "https://evil.example"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let response = server
            .post("/runs")
            .header("Authorization", bearer(TOKEN))
            .header(header, value)
            .send()
            .await
            .expect("answered");
        assert_eq!(
            response.status().as_u16(),
            403,
            "a cross-site POST ({header}: {value}) is refused"
        );
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("cross-site")),
            "{body}"
        );
    }
    assert_eq!(
        status_of(
            server
                .post("/runs")
                .header("Authorization", bearer(TOKEN))
                .header("Origin", server.base.as_str())
                .header("Sec-Fetch-Site", "same-origin")
        )
        .await,
        202,
        "a same-origin POST is accepted"
    );
    // Change notifications have their own verification, not the admin token.
    let event = json!({ "event_key": "company.edit", "object_type": "company", "object_keys": [{ "id": 1 }] });
    assert_eq!(
        status_of(
            server
                .post(&format!("/hooks/keap?token={HOOK_TOKEN}"))
                .json(&event)
        )
        .await,
        202,
        "/hooks/ takes no admin token"
    );

    assert!(server.terminate().success());
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(logged.contains("serving"), "the log was written: {logged}");
    assert!(
        !logged.contains(TOKEN),
        "the token never appears in the log"
    );
}

/// Whether `promtool` can be run; when it cannot, the check is skipped with a notice, or
/// fails when `CI` or `TETHER_REQUIRE_TOOLS` is set.
fn promtool() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let required = ["CI", "TETHER_REQUIRE_TOOLS"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        assert!(
            !required,
            "promtool is missing (Debian: apt-get install prometheus) and CI or \
             TETHER_REQUIRE_TOOLS is set"
        );
        println!(
            "SKIPPED: `promtool check metrics` (promtool is not installed; Debian: apt-get \
             install prometheus; set TETHER_REQUIRE_TOOLS=1 to make this a failure)"
        );
    }
    found
}

/// `/metrics` answers the classic Prometheus text format (0.0.4) that `promtool check
/// metrics` accepts, OpenMetrics when asked for it, and every counter family is there from
/// the start at zero for every mapping, system, trigger and outcome known at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_classic_text_that_promtool_accepts_with_every_counter_from_the_start() {
    let dir = TempDir::new("metrics");
    let flows = dir.flows(Some("1h"));
    let sandbox = sandbox(0).await;
    let state = StoreUrl::parse(&dir.0.join("state.db").display().to_string()).expect("url");
    let server = Server::start(&flows, &state, &sandbox, "solo");
    server.ready().await;

    let response = server.get("/metrics").await.expect("answered");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "the classic format by default: {content_type}"
    );
    let classic = response.text().await.expect("text");
    assert!(!classic.contains("# EOF"), "{classic}");
    assert!(
        classic.contains("# TYPE tether_runs_total counter"),
        "a classic counter's TYPE names the sample: {classic}"
    );

    // Nothing has been refused, rate-limited or rejected yet, yet every series is there.
    for series in [
        "tether_webhooks_total{system=\"keap\",result=\"refused\"}",
        "tether_runs_total{trigger=\"webhook\",outcome=\"failed\"}",
        "tether_runs_total{trigger=\"api\",outcome=\"circuit-breaker\"}",
        "tether_run_requests_total{trigger=\"api\",result=\"rate_limited\"}",
        "tether_flow_reloads_total{result=\"rejected\"}",
        &format!("tether_mappings_skipped_total{{mapping=\"{COMPANIES}\"}}"),
        "tether_mappings_skipped_total{mapping=\"salesforce-orders-to-customerp-orders\"}",
    ] {
        assert_eq!(
            sample(&classic, series),
            Some(0.0),
            "{series} at 0: {classic}"
        );
    }
    for series in [
        &format!("tether_records_parked_total{{mapping=\"{COMPANIES}\"}}"),
        &format!(
            "tether_records_written_total{{mapping=\"{COMPANIES}\",side=\"source\",op=\"delete\"}}"
        ),
        "tether_http_errors_total{system=\"salesforce\"}",
        "tether_http_retries_total{system=\"customcrm\"}",
        "tether_rate_limit_waits_total{system=\"keap\"}",
    ] {
        assert!(
            sample(&classic, series).is_some(),
            "{series} is present: {classic}"
        );
    }

    if promtool() {
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool runs");
        {
            use std::io::Write as _;
            let mut stdin = check.stdin.take().expect("stdin");
            stdin
                .write_all(classic.as_bytes())
                .expect("metrics written");
        }
        let output = check.wait_with_output().expect("promtool ends");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && said.trim().is_empty(),
            "promtool check metrics: {said}"
        );
    }

    let openmetrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .expect("answered");
    let content_type = openmetrics
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "OpenMetrics when asked: {content_type}"
    );
    let text = openmetrics.text().await.expect("text");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert!(text.contains("# TYPE tether_runs counter"), "{text}");
    assert!(server.terminate().success());
}

/// A flow edit whose rule would cost gigabytes per record (nine `replace` steps that each
/// make the text ten times longer) passes `validate` with a warning and is loaded; a run then
/// parks the records that rule fails on, naming the bound, and the server stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_costly_rule_parks_records_and_the_server_stays_up() {
    let dir = TempDir::new("costly");
    let flows = dir.flows(None);
    let sandbox = sandbox(3).await;
    let state = StoreUrl::parse(&dir.0.join("state.db").display().to_string()).expect("url");
    let server = Server::start(&flows, &state, &sandbox, "solo");
    server.ready().await;

    let file = flows.join("keap-to-customerp.yaml");
    let original = std::fs::read_to_string(&file).expect("read");
    let chain = " | replace('a', 'aaaaaaaaaa')".repeat(9);
    let costly = original.replace(
        "      - { source: $.website, target: website, type: string }",
        &format!(
            "      - {{ template: \"{{{{ record.company_name{chain} }}}}\", target: website, type: string, direction: source-to-target }}"
        ),
    );
    assert_ne!(costly, original, "the rule is edited");
    std::fs::write(&file, with_schedule(&costly, "7m")).expect("edit");
    server
        .until("the costly version is loaded", |s| {
            flow_interval(s, "keap-to-customerp") == Some(420.0)
        })
        .await;

    let (code, report) = server.run_now("&flow=keap-to-customerp").await;
    assert_eq!(code, 200, "{report:#}");
    let companies = report["mappings"]
        .as_array()
        .expect("mappings")
        .iter()
        .find(|m| m["mapping"] == COMPANIES)
        .expect("the companies mapping ran")
        .clone();
    assert!(
        companies["parked"].as_u64().is_some_and(|n| n > 0),
        "records the rule fails on are parked: {companies:#}"
    );
    assert_eq!(
        server.get("/health").await.map(|r| r.status().as_u16()),
        Some(200),
        "the server is still up"
    );
    let store = Store::open(&state).await.expect("store");
    let parked = store.parked(Some(COMPANIES)).await.expect("parked");
    assert!(
        parked.iter().any(|p| p.reason.contains("rule `website`")
            && p.reason.contains("one template step may produce")),
        "the parked reason names the rule and the bound: {parked:#?}"
    );
    let status = server.terminate();
    assert!(status.success(), "exits cleanly: {status:?}");
}

/// A local webhook receiver: every JSON body posted to it, in order.
struct Receiver {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start(path: &str) -> Receiver {
        let bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            path,
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let kept = kept.clone();
                async move {
                    kept.lock().expect("bodies").push(body);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}{path}"),
            bodies,
        }
    }

    /// The `(event, kind)` of every message received.
    fn events(&self) -> Vec<(String, String)> {
        self.bodies
            .lock()
            .expect("bodies")
            .iter()
            .map(|b| {
                (
                    b["tether"]["event"].as_str().unwrap_or_default().to_owned(),
                    b["tether"]["kind"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Waits until `count` messages of `event` arrived (and a moment more, so that a
    /// message too many would be seen).
    async fn wait_for(&self, event: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.events().iter().filter(|(e, _)| e == event).count() < count {
            assert!(
                Instant::now() < deadline,
                "{count} {event} messages: {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Two requested runs, each of which fails.
async fn failing_runs(server: &Server) {
    for _ in 0..2 {
        let (status, report) = server.run_now("").await;
        assert_eq!(status, 200, "{report:#}");
        assert_eq!(report["outcome"], "failed", "{report:#}");
    }
}

/// A failing flow alerts once across several failing runs and a restart of the server, and
/// sends one recovery when a run of it goes through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_alerts_once_across_runs_and_restarts_then_recovers_once() {
    let sandbox = sandbox(0).await;
    let dir = TempDir::new("alerts");
    let flows = dir.flows(Some("1h"));
    for entry in std::fs::read_dir(&flows).expect("flows") {
        let path = entry.expect("entry").path();
        if path.is_file() && !path.ends_with("keap-to-customerp.yaml") {
            std::fs::remove_file(path).expect("remove");
        }
    }
    let erp_file = flows.join("systems/customerp.yaml");
    let erp = std::fs::read_to_string(&erp_file).expect("system file");
    // Nothing listens on a port just freed: every request to the ERP fails.
    let broken = erp
        .replacen(
            "base_url: ${CUSTOMERP_BASE_URL}",
            &format!("base_url: http://127.0.0.1:{}/api/v1", free_port()),
            1,
        )
        .replacen("\nhttp:\n", "\nhttp:\n  max_retries: 0\n", 1);
    assert_eq!(
        broken.matches("max_retries: 0").count(),
        1,
        "the ERP's file is pointed at a closed port with no retries"
    );
    assert!(broken.contains("base_url: http://127.0.0.1:"));
    std::fs::write(&erp_file, &broken).expect("write");

    let secret_path = "/hooks/T000/B000/alert-secret-in-the-path";
    let receiver = Receiver::start(secret_path).await;
    let state = StoreUrl::parse(&dir.0.join("state.db").display().to_string()).expect("url");
    let log = dir.0.join("serve.log");
    let env = [("TETHER_ALERT_WEBHOOKS", receiver.url.as_str())];
    let extra = Extra {
        env: &env,
        stderr: Some(&log),
        log: Some("info"),
    };
    {
        let server = Server::start_with(&flows, &state, &sandbox, "alerts", &extra);
        server.ready().await;
        failing_runs(&server).await;
        receiver.wait_for("alert", 1).await;
    }
    // A restarted server knows the incident is open: it does not alert again.
    let server = Server::start_with(&flows, &state, &sandbox, "alerts", &extra);
    server.ready().await;
    failing_runs(&server).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.events(),
        vec![("alert".to_owned(), "run-failed".to_owned())],
        "one alert for the incident"
    );

    // Fixed: the next run goes through and the recovery is sent once.
    std::fs::write(&erp_file, &erp).expect("write");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = server.metrics().await;
        if sample(&metrics, "tether_flow_reloads_total{result=\"ok\"}").unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the fixed system file is loaded");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for _ in 0..2 {
        let (status, report) = server.run_now("").await;
        assert_eq!(
            (status, &report["outcome"]),
            (200, &json!("ok")),
            "{report:#}"
        );
    }
    receiver.wait_for("recovery", 1).await;
    assert_eq!(
        receiver.events(),
        vec![
            ("alert".to_owned(), "run-failed".to_owned()),
            ("recovery".to_owned(), "run-failed".to_owned())
        ]
    );
    let first = &receiver.bodies.lock().expect("bodies")[0];
    assert!(
        first["text"]
            .as_str()
            .is_some_and(|t| t.contains("keap-to-customerp")),
        "{first:#}"
    );
    drop(server);
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        !logged.contains("alert-secret-in-the-path"),
        "the webhook URL is a secret"
    );
}
