//! Measures the simulators at scale and prints the figures (no assertions):
//!
//! - `scale seed N STATE`: seeds N records per entity of every system (as `tether sandbox
//!   --seed N`), then writes the state file; prints the seed and write times, the file's size
//!   and the peak memory.
//! - `scale fill N STATE [SYSTEM:ENTITY ...]`: creates N records in each named entity
//!   (default `customerp:products salesforce:Contact`) through the simulators' own create,
//!   as a benchmark fills the entities it uses, then writes the state file.
//! - `scale read STATE`: reads a state file as `tether sandbox --state` does, prints the
//!   read time and peak memory, then times page reads over HTTP: ERP products by offset,
//!   Keap contacts, Salesforce SOQL (first page, a `nextRecordsUrl` page, an incremental
//!   query) on whichever of those entities hold records.
//!
//! Run each step as its own process (`cargo run --release -p tether-sandbox --example scale
//! -- ...`), so that each peak is that step's alone.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};
use tether_sandbox::{RateLimits, Sandbox, SandboxOptions, credentials};

fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn options(state: &str, seed: usize) -> SandboxOptions {
    SandboxOptions {
        port_base: 0,
        seed,
        state_file: Some(PathBuf::from(state)),
        rate_limits: RateLimits::unlimited(),
        ..SandboxOptions::default()
    }
}

fn file_mib(path: &str) -> f64 {
    std::fs::metadata(path).map_or(0.0, |meta| meta.len() as f64 / 1_048_576.0)
}

async fn save(sandbox: Sandbox, state: &str) {
    let writing = Instant::now();
    sandbox.shutdown().await.expect("state written");
    println!(
        "state written in {:.2} s: {:.1} MiB; peak {:.0} MiB",
        writing.elapsed().as_secs_f64(),
        file_mib(state),
        peak_mib()
    );
}

fn body(target: &str, i: usize) -> Value {
    match target {
        "customerp:products" => json!({
            "sku": format!("SCALE-{i:07}"), "name": format!("Scale Product {i}"),
            "description": format!("A product made for measuring, number {i}"),
            "unit_price": format!("{}.{:02}", 10 + i % 90, i % 100), "currency": "EUR",
            "vat_rate": "25.00", "is_active": true, "stock_quantity": i % 50,
        }),
        "keap:contacts" => json!({
            "given_name": "Scale", "family_name": format!("Person {i:07}"),
            "email_addresses": [{"email": format!("person{i}@scale.example"), "field": "EMAIL1"}],
            "phone_numbers": [{"number": format!("+47 {:08}", i), "field": "PHONE1", "type": "Work"}],
        }),
        "keap:companies" => json!({
            "company_name": format!("Scale Company {i:07}"),
            "email_address": format!("company{i}@scale.example"),
        }),
        "salesforce:Contact" => json!({
            "FirstName": "Scale", "LastName": format!("Person {i:07}"),
            "Email": format!("person{i}@scale.example"), "Phone": format!("+47 {:08}", i),
            "MailingCity": "Oslo", "MailingPostalCode": "0150",
        }),
        "salesforce:Account" => json!({
            "Name": format!("Scale Account {i:07}"), "BillingCity": "Oslo",
        }),
        other => panic!("no body for {other}"),
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the body.
fn http(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    let authority = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let mut stream = TcpStream::connect(authority).expect("connects");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).expect("request sent");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("answer read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Times a request: the best and the median of five.
fn timed(label: &str, mut request: impl FnMut() -> (u16, String)) -> String {
    let mut times = Vec::new();
    let mut last = (0, String::new());
    for _ in 0..5 {
        let started = Instant::now();
        last = request();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    if last.0 != 200 {
        println!("{label}: answered {}", last.1);
    }
    println!(
        "{label}: {} ({} bytes), best {:.2} ms, median {:.2} ms",
        last.0,
        last.1.len(),
        times[0],
        times[2]
    );
    last.1
}

fn total(body: &str, name: &str) -> usize {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|body| body[name].as_u64())
        .map_or(0, |total| total as usize)
}

fn path_of(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    rest.find('/')
        .map_or_else(|| "/".to_string(), |at| rest[at..].to_string())
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

async fn read(state: &str) {
    let reading = Instant::now();
    let sandbox = Sandbox::start(options(state, 0))
        .await
        .expect("sandbox starts");
    println!(
        "state read in {:.2} s: {} records; peak {:.0} MiB",
        reading.elapsed().as_secs_f64(),
        sandbox.record_count(),
        peak_mib()
    );
    let erp = sandbox
        .base_url("customerp")
        .unwrap_or_default()
        .to_string();
    let auth = [(
        "Authorization",
        format!("Bearer {}", credentials::CUSTOMERP_TOKEN),
    )];
    let base = path_of(&erp);
    let (_, probe) = http(
        &erp,
        "GET",
        &format!("{base}/products?offset=0&limit=1"),
        &auth,
        "",
    );
    let products = total(&probe, "total");
    if products > 0 {
        for offset in [0, products / 2, products.saturating_sub(100)] {
            timed(
                &format!("ERP GET /products?offset={offset}&limit=100 of {products}"),
                || {
                    http(
                        &erp,
                        "GET",
                        &format!("{base}/products?offset={offset}&limit=100"),
                        &auth,
                        "",
                    )
                },
            );
        }
    }
    let keap = sandbox.base_url("keap").unwrap_or_default().to_string();
    let auth = [("X-Keap-API-Key", credentials::KEAP_API_KEY.to_string())];
    let base = path_of(&keap);
    let (_, probe) = http(&keap, "GET", &format!("{base}/contacts?limit=1"), &auth, "");
    let contacts = total(&probe, "count");
    if contacts > 0 {
        for offset in [0, contacts / 2] {
            timed(
                &format!("Keap GET /contacts?limit=1000&offset={offset} of {contacts}"),
                || {
                    http(
                        &keap,
                        "GET",
                        &format!("{base}/contacts?limit=1000&offset={offset}"),
                        &auth,
                        "",
                    )
                },
            );
        }
    }
    let salesforce = sandbox
        .base_url("salesforce")
        .unwrap_or_default()
        .to_string();
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        credentials::SALESFORCE_CLIENT_ID,
        credentials::SALESFORCE_CLIENT_SECRET
    );
    let (_, token) = http(
        &salesforce,
        "POST",
        "/services/oauth2/token",
        &[(
            "Content-Type",
            "application/x-www-form-urlencoded".to_string(),
        )],
        &form,
    );
    let token: Value = serde_json::from_str(&token).unwrap_or_default();
    let auth = [(
        "Authorization",
        format!(
            "Bearer {}",
            token["access_token"].as_str().unwrap_or_default()
        ),
    )];
    let query = |soql: &str| format!("/services/data/v60.0/query?q={}", encode(soql));
    let fields = "Id, FirstName, LastName, Email, Phone, AccountId, SystemModstamp";
    let initial = query(&format!(
        "SELECT {fields} FROM Contact ORDER BY SystemModstamp, Id"
    ));
    let (_, probe) = http(&salesforce, "GET", &initial, &auth, "");
    let sf_contacts = total(&probe, "totalSize");
    if sf_contacts > 0 {
        let first = timed(
            &format!("SOQL first page of {sf_contacts} Contacts"),
            || http(&salesforce, "GET", &initial, &auth, ""),
        );
        let first: Value = serde_json::from_str(&first).unwrap_or_default();
        if let Some(next) = first["nextRecordsUrl"].as_str() {
            timed("SOQL nextRecordsUrl page", || {
                http(&salesforce, "GET", next, &auth, "")
            });
        }
        let since = first["records"]
            .as_array()
            .and_then(|records| records.get(records.len() / 2))
            .and_then(|record| record["SystemModstamp"].as_str())
            .unwrap_or("2000-01-01T00:00:00.000+0000")
            .replace("+0000", "Z");
        timed(
            "SOQL incremental (WHERE SystemModstamp >= a stamp, LIMIT 200)",
            || {
                http(
                    &salesforce,
                    "GET",
                    &query(&format!(
                        "SELECT {fields} FROM Contact WHERE SystemModstamp >= {since} ORDER BY SystemModstamp, Id LIMIT 200"
                    )),
                    &auth,
                    "",
                )
            },
        );
    }
    println!("peak after the reads {:.0} MiB", peak_mib());
    drop(sandbox);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: scale seed N STATE | scale fill N STATE [SYSTEM:ENTITY ...] | scale read STATE";
    match args.first().map(String::as_str) {
        Some("seed") if args.len() == 3 => {
            let count: usize = args[1].parse().expect("N is a number");
            let _ = std::fs::remove_file(&args[2]);
            let seeding = Instant::now();
            let sandbox = Sandbox::start(options(&args[2], count))
                .await
                .expect("sandbox starts");
            println!(
                "seeded {} records ({count} per entity) in {:.2} s; peak {:.0} MiB",
                sandbox.record_count(),
                seeding.elapsed().as_secs_f64(),
                peak_mib()
            );
            save(sandbox, &args[2]).await;
        }
        Some("fill") if args.len() >= 3 => {
            let count: usize = args[1].parse().expect("N is a number");
            let _ = std::fs::remove_file(&args[2]);
            let mut targets: Vec<String> = args[3..].to_vec();
            if targets.is_empty() {
                targets = vec!["customerp:products".into(), "salesforce:Contact".into()];
            }
            let sandbox = Sandbox::start(options(&args[2], 0))
                .await
                .expect("sandbox starts");
            for target in &targets {
                let (system, entity) = target.split_once(':').expect("SYSTEM:ENTITY");
                let filling = Instant::now();
                for i in 0..count {
                    sandbox
                        .insert(system, entity, body(target, i))
                        .expect("created");
                }
                let seconds = filling.elapsed().as_secs_f64();
                println!(
                    "{count} {target} created in {seconds:.2} s ({:.0} records/s); peak {:.0} MiB",
                    count as f64 / seconds.max(1e-9),
                    peak_mib()
                );
            }
            save(sandbox, &args[2]).await;
        }
        Some("read") if args.len() == 2 => read(&args[1]).await,
        _ => eprintln!("{usage}"),
    }
}
