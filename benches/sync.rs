//! The sync benchmark: an initial sync of Keap companies and contacts and the ERP's
//! products (the product master) between Keap and Customerp through the simulators, then an
//! incremental run after 1% of the records changed. Prints records/s, HTTP requests per
//! record and peak memory for both runs.
//!
//! `cargo bench --bench sync` (10,000 records per entity), or with a count:
//! `cargo bench --bench sync -- 2000`. Rate limits are off on both sides: the figures are
//! the engine's own, not the contracts' request budgets. `--latency MS` adds that much
//! latency to every simulated request, as a real API 100 to 300 ms away has
//! (`cargo bench --bench sync -- 300 --latency 100`); the figures then also give the
//! requests per second the run achieved, to set beside the APIs' budgets.
//!
//! `--sandbox-process` runs the simulators in a separate process (`tether sandbox`, started
//! by the benchmark with the data in a state file written beforehand by another child), so
//! the peak memory printed is the engine's alone (`VmHWM` of this process; the simulators'
//! is printed beside it) and N can go to 1,000,000
//! (`cargo bench --bench sync -- 100000 --sandbox-process --latency 100`). It runs the
//! initial sync and prints records/s, time per record, requests per record and peak memory.
//! With `--rate-limits` the simulators keep their contracts' rate limits and the engine its
//! system files' (`rate_limit`, `http.concurrency`), and each system's requests per second
//! are printed beside its limit; `--only companies` (or `contacts`, `products`) runs one
//! mapping, so the figure is that of the one system it writes to; `--only customers` runs
//! the ERP's customers to the web shop, two in-house systems (`--only` repeats).
//! `--initial-chunk N` sets the records per chunk of the initial sync's large read (0 reads
//! it whole). `--resume` runs `tether run` as a child, SIGKILLs it once half the records are
//! linked, then measures the run that goes on from there and prints how many source records
//! it read again.

use std::time::Instant;

use serde_json::json;
use tether_engine::store::StoreUrl;
use tether_engine::sync::engine::RunOptions;
use tether_engine::sync::open::{OpenOptions, open};
use tether_sandbox::{FaultSpec, RateLimits, Sandbox, SandboxOptions};

/// The mappings the benchmark runs, by the name `--only` picks them with. Without
/// `--only`, the first three: Keap and the ERP.
const MAPPINGS: [(&str, &str); 4] = [
    ("companies", "keap-companies-to-customerp-customers"),
    ("contacts", "keap-contacts-to-customerp-contacts"),
    ("products", "keap-products-to-customerp-products"),
    // Two in-house systems: the ERP's customers to the web shop.
    (
        "customers",
        "customerp-customers-to-customwebshop-customers",
    ),
];

/// The kinds `--only` selects (repeatable; the first three without it).
fn selected(args: &[String]) -> Vec<&'static str> {
    let only: Vec<&String> = args
        .iter()
        .zip(args.iter().skip(1))
        .filter(|(flag, _)| *flag == "--only")
        .map(|(_, kind)| kind)
        .collect();
    let kinds: Vec<&'static str> = MAPPINGS
        .iter()
        .enumerate()
        .filter(|(i, (kind, _))| {
            if only.is_empty() {
                *i < 3
            } else {
                only.iter().any(|o| o == kind)
            }
        })
        .map(|(_, (kind, _))| *kind)
        .collect();
    assert!(!kinds.is_empty(), "--only names no mapping");
    kinds
}

fn mapping_of(kind: &str) -> &'static str {
    MAPPINGS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, mapping)| *mapping)
        .expect("a kind of MAPPINGS")
}

/// Peak resident memory of this process (Linux), in MiB.
fn peak_memory_mib() -> Option<f64> {
    peak_memory_of("self")
}

/// Peak resident memory of a process (`self` or a pid; Linux), in MiB.
fn peak_memory_of(process: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn total_requests(sandbox: &Sandbox) -> u64 {
    sandbox.request_counts().values().map(|c| c.total).sum()
}

/// Fills the bench's systems with N records for each kind: Keap companies and contacts,
/// ERP products, ERP customers (for the web shop).
fn seed(sandbox: &Sandbox, count: usize, kinds: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut companies = Vec::with_capacity(count);
    let mut contacts = Vec::with_capacity(count);
    for i in 0..count {
        if kinds.contains(&"companies") {
            let company = sandbox
                .insert(
                    "keap",
                    "companies",
                    json!({ "company_name": format!("Bench Company {i:06}"), "email_address": format!("company{i}@bench.example"),
                            "address": { "line1": format!("{i} Main St"), "locality": "Oslo", "zip_code": "0150", "country_code": "NOR" } }),
                )
                .expect("company");
            companies.push(company["id"].to_string());
        }
        if kinds.contains(&"contacts") {
            let contact = sandbox
                .insert(
                    "keap",
                    "contacts",
                    json!({ "given_name": "Bench", "family_name": format!("Person {i:06}"),
                            "email_addresses": [{ "email": format!("person{i}@bench.example"), "field": "EMAIL1" }] }),
                )
                .expect("contact");
            contacts.push(contact["id"].to_string());
        }
        if kinds.contains(&"products") {
            sandbox
                .insert(
                    "customerp",
                    "products",
                    json!({ "sku": format!("BENCH-{i:06}"), "name": format!("Bench Product {i}"), "unit_price": "12.50",
                            "currency": "EUR", "vat_rate": "25.00", "is_active": true, "stock_quantity": 5 }),
                )
                .expect("product");
        }
        if kinds.contains(&"customers") {
            sandbox
                .insert(
                    "customerp",
                    "customers",
                    json!({ "name": format!("Bench Customer {i:07} AS"), "email": format!("customer{i}@bench.example"),
                            "currency": "NOK", "is_active": true,
                            "billing_address": { "street": format!("Storgata {i}"), "city": "Oslo", "postal_code": "0150", "country": "NO" } }),
                )
                .expect("customer");
        }
    }
    (companies, contacts)
}

/// The child that writes the seed data to a state file (`TETHER_BENCH_SEED=PATH`, the count
/// as the first argument), so that the benchmark's own memory never holds it.
async fn write_state(path: &str, count: usize, kinds: &[&str]) {
    let sandbox = Sandbox::start(SandboxOptions {
        rate_limits: RateLimits::unlimited(),
        state_file: Some(path.into()),
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts");
    let seeding = Instant::now();
    seed(&sandbox, count, kinds);
    let seeded = seeding.elapsed().as_secs_f64();
    let saving = Instant::now();
    sandbox.shutdown().await.expect("state written");
    println!(
        "seeded {count} records of each of {} in {seeded:.1} s, state written in {:.1} s",
        kinds.join(", "),
        saving.elapsed().as_secs_f64()
    );
}

/// A `tether sandbox` child serving a state file; killed when dropped.
struct SandboxProcess {
    child: std::process::Child,
    env: std::collections::HashMap<String, String>,
}

impl SandboxProcess {
    fn start(state: &std::path::Path, latency_ms: u64, rate_limits: bool) -> SandboxProcess {
        use std::io::BufRead as _;
        let started = Instant::now();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tether"));
        command
            .args(["sandbox", "--port-base", "0", "--format", "json"])
            .arg("--state")
            .arg(state)
            .stdout(std::process::Stdio::piped());
        if !rate_limits {
            command.arg("--no-rate-limits");
        }
        if latency_ms > 0 {
            command.args(["--faults", &format!("latency={latency_ms}ms")]);
        }
        let mut child = command.spawn().expect("tether sandbox starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("sandbox ready line");
        let ready: serde_json::Value = serde_json::from_str(&line).expect("sandbox JSON line");
        let env = ready["env"]
            .as_object()
            .expect("env")
            .iter()
            .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
            .collect();
        println!(
            "sandbox process {} ready in {:.1} s",
            child.id(),
            started.elapsed().as_secs_f64()
        );
        SandboxProcess { child, env }
    }

    fn peak_memory_mib(&self) -> Option<f64> {
        peak_memory_of(&self.child.id().to_string())
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the out-of-process run is made.
struct Setup {
    latency_ms: u64,
    /// The simulators' and system files' rate limits kept.
    rate_limits: bool,
    /// The kinds of [`MAPPINGS`] to run.
    kinds: Vec<&'static str>,
    /// Records per chunk of the initial sync's large read (`--initial-chunk`; 0: whole).
    initial_chunk: usize,
    /// `--resume`: `tether run` is killed (SIGKILL) once half the records are linked, and
    /// the measured run is the one that goes on from there.
    resume: bool,
}

/// The initial sync against a sandbox in another process.
async fn out_of_process(count: usize, setup: &Setup, dir: &std::path::Path, state: &StoreUrl) {
    let latency_ms = setup.latency_ms;
    let sandbox_state = dir.join("sandbox.json");
    let seeding = Instant::now();
    let mut only = Vec::new();
    for kind in &setup.kinds {
        only.extend(["--only", kind]);
    }
    let status = std::process::Command::new(std::env::current_exe().expect("bench binary"))
        .arg(count.to_string())
        .args(only)
        .env("TETHER_BENCH_SEED", &sandbox_state)
        .status()
        .expect("seeding child runs");
    assert!(status.success(), "seeding child failed");
    println!(
        "state file of {:.0} MiB ready in {:.1} s",
        std::fs::metadata(&sandbox_state).map_or(0.0, |m| m.len() as f64 / 1_048_576.0),
        seeding.elapsed().as_secs_f64()
    );
    let sandbox = SandboxProcess::start(&sandbox_state, latency_ms, setup.rate_limits);
    let env = sandbox.env.clone();
    let lookup = move |name: &str| env.get(name).cloned();
    let flows = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    let options = RunOptions {
        mappings: setup
            .kinds
            .iter()
            .map(|k| mapping_of(k).to_owned())
            .collect(),
        initial_chunk: setup.initial_chunk,
        ..RunOptions::default()
    };
    let engine = open(
        &flows,
        state,
        &lookup,
        OpenOptions {
            ignore_rate_limits: !setup.rate_limits,
        },
    )
    .await
    .expect("engine opens");
    let records = setup.kinds.len() * count;
    let killed_at = if setup.resume {
        Some(kill_midway(setup, &flows, state, &sandbox.env, records as u64).await)
    } else {
        None
    };
    let started = Instant::now();
    let report = engine.run(&options).await.expect("run");
    let seconds = started.elapsed().as_secs_f64();
    if let Some(linked) = killed_at {
        let read: u64 = report.mappings.iter().map(|m| m.read_source).sum();
        let left = records as u64 - linked;
        let again = read.saturating_sub(left);
        println!(
            "resumed after a SIGKILL with {linked} of {records} records linked: the next run read {read} source records, {again} of them read again ({:.1}% of the {linked} done)",
            100.0 * again as f64 / linked.max(1) as f64
        );
    }
    let requests: u64 = report.systems.iter().map(|system| system.requests).sum();
    println!(
        "initial, sandbox in another process, latency {latency_ms} ms: {seconds:.2} s, {:.0} records/s over {records} records, {:.3} ms per record, {requests} HTTP requests ({:.3} per record, {:.1} per second), {} writes, {} parked, peak memory of the engine {:.0} MiB (simulators {:.0} MiB)",
        records as f64 / seconds,
        1000.0 * seconds / records as f64,
        requests as f64 / records as f64,
        requests as f64 / seconds,
        report.writes(),
        report.parked(),
        peak_memory_mib().unwrap_or(f64::NAN),
        sandbox.peak_memory_mib().unwrap_or(f64::NAN),
    );
    for system in &report.systems {
        let limit = match (setup.rate_limits, system.system.as_str()) {
            (false, _) => "rate limits off".to_owned(),
            (true, "customerp") => "limit 20 per second".to_owned(),
            (true, "customwebshop") => "limit 10 per second".to_owned(),
            (true, "keap") => "limit 10 per second and 240 per minute".to_owned(),
            (true, _) => "see its system file".to_owned(),
        };
        println!(
            "  {}: {} requests, {:.1} per second over the run ({limit}), {} rate-limit waits",
            system.system,
            system.requests,
            system.requests as f64 / seconds,
            system.rate_limit_waits
        );
    }
}

/// Runs `tether run` as a child until half of `records` are linked, then SIGKILLs it;
/// returns the records linked then.
async fn kill_midway(
    setup: &Setup,
    flows: &std::path::Path,
    state: &StoreUrl,
    env: &std::collections::HashMap<String, String>,
    records: u64,
) -> u64 {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tether"));
    command
        .arg("--flows")
        .arg(flows)
        .args(["--log", "error", "run", "--state"])
        .arg(state.to_string())
        .args(["--initial-chunk", &setup.initial_chunk.to_string()])
        .envs(env)
        .stdout(std::process::Stdio::null());
    if !setup.rate_limits {
        command.arg("--no-rate-limits");
    }
    for kind in &setup.kinds {
        command.args(["--mapping", mapping_of(kind)]);
    }
    let mut child = command.spawn().expect("tether run starts");
    let store = tether_engine::store::Store::open(state)
        .await
        .expect("store opens");
    let far = chrono::Utc::now() + chrono::Duration::days(1);
    let linked = || async {
        let mut linked = 0;
        for kind in &setup.kinds {
            linked += store
                .count_pairs_synced_before(mapping_of(kind), far)
                .await
                .unwrap_or(0);
        }
        linked
    };
    loop {
        if linked().await * 2 >= records {
            break;
        }
        if child.try_wait().expect("child state").is_some() {
            panic!("tether run ended before half the records were linked");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    linked().await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `RUST_LOG=tether=debug` shows where a run's time goes (each mapping pass's phases).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let latency_ms: u64 = args
        .iter()
        .position(|a| a == "--latency")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let count: usize = args
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            *i == 0 || !["--latency", "--only", "--initial-chunk"].contains(&args[i - 1].as_str())
        })
        .find_map(|(_, a)| a.parse().ok())
        .unwrap_or(10_000);
    if let Some(path) = std::env::var_os("TETHER_BENCH_SEED") {
        write_state(&path.to_string_lossy(), count, &selected(&args)).await;
        return;
    }
    let dir = std::env::temp_dir().join(format!("tether-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let state = StoreUrl::parse(&dir.join("state.db").display().to_string()).expect("store url");
    if args.iter().any(|a| a == "--sandbox-process") {
        let setup = Setup {
            initial_chunk: args
                .iter()
                .position(|a| a == "--initial-chunk")
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(tether_engine::sync::engine::DEFAULT_INITIAL_CHUNK),
            latency_ms,
            rate_limits: args.iter().any(|a| a == "--rate-limits"),
            kinds: selected(&args),
            resume: args.iter().any(|a| a == "--resume"),
        };
        out_of_process(count, &setup, &dir, &state).await;
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let sandbox = Sandbox::start(SandboxOptions {
        rate_limits: RateLimits::unlimited(),
        faults: FaultSpec {
            latency: std::time::Duration::from_millis(latency_ms),
            ..FaultSpec::default()
        },
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts");

    let seeding = Instant::now();
    let kinds = selected(&[]);
    let (companies, contacts) = seed(&sandbox, count, &kinds);
    println!(
        "seeded {count} Keap companies, {count} Keap contacts and {count} ERP products in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let env: std::collections::HashMap<String, String> = sandbox.env().into_iter().collect();
    let lookup = move |name: &str| env.get(name).cloned();
    let flows = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    let options = RunOptions {
        mappings: kinds.iter().map(|k| mapping_of(k).to_owned()).collect(),
        ..RunOptions::default()
    };

    // The first incremental run after the initial sync re-reads, on the sides read by a
    // modified time, what the initial sync wrote in the connectors' lookback window (60 s
    // before the newest change; here the whole initial sync, as rate limits are off); the
    // second is a run in the steady state.
    let runs = [
        "initial",
        "incremental (1% changed, first after the initial sync)",
        "incremental (another 1% changed)",
    ];
    let mut figures = Vec::new();
    for (run, label) in runs.into_iter().enumerate() {
        if run > 0 {
            // Scheduled runs come minutes apart, so the changes are stamped later.
            sandbox.advance_clock(std::time::Duration::from_secs(600));
            let changed = (count / 100).max(1);
            for i in 0..changed {
                let n = i * (count / changed) + run - 1;
                let Some(company) = companies.get(n) else {
                    break;
                };
                let id = company.trim_matches('"').to_owned();
                sandbox
                    .update("keap", "companies", &id, json!({ "company_name": format!("Bench Company {n:06}"), "website": format!("https://changed-{run}-{i}.example") }))
                    .expect("edit company");
                let id = contacts[n].trim_matches('"').to_owned();
                sandbox
                    .update(
                        "keap",
                        "contacts",
                        &id,
                        json!({ "job_title": format!("Changed {run} {i}") }),
                    )
                    .expect("edit contact");
            }
        }
        sandbox.reset_request_counts();
        let engine = open(
            &flows,
            &state,
            &lookup,
            OpenOptions {
                ignore_rate_limits: true,
            },
        )
        .await
        .expect("engine opens");
        let started = Instant::now();
        let report = engine.run(&options).await.expect("run");
        let seconds = started.elapsed().as_secs_f64();
        let records = 3 * count;
        let requests = total_requests(&sandbox);
        println!(
            "{label}: {seconds:.2} s, {:.0} records/s over {records} records, {requests} HTTP requests ({:.3} per record, {:.1} per second), {} writes, {} parked, peak memory {:.0} MiB",
            records as f64 / seconds,
            requests as f64 / records as f64,
            requests as f64 / seconds,
            report.writes(),
            report.parked(),
            peak_memory_mib().unwrap_or(f64::NAN)
        );
        figures.push((seconds, requests));
    }
    if let [(initial_s, initial_r), ref incrementals @ ..] = figures[..] {
        for ((seconds, requests), label) in incrementals.iter().zip(&runs[1..]) {
            println!(
                "{label}: {:.1}% of the initial run's time, {:.1}% of its requests",
                100.0 * seconds / initial_s,
                100.0 * *requests as f64 / initial_r as f64
            );
        }
    }
    let _ = sandbox.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
