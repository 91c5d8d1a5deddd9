//! Measures what the simulators cost per request, as a benchmark that runs them in its
//! own process sees it, and prints the figures (no assertions).
//!
//! `requests [N] [http|direct]` (default 10,000, `http`) starts the simulators in this
//! process on loopback and, for each of web shop customers, ERP customers, Keap companies
//! and Keap contacts, creates N records, lists them page by page, reads each one and
//! updates a tenth of them:
//!
//! - `http`: over real HTTP, one keep-alive connection per system (what a client pays);
//! - `direct`: through [`Sandbox`]'s direct access (`insert`, `records`, `record`,
//!   `update`), the same routing and store without HTTP, so the figures are the
//!   simulators' own work (`insert` and `update` also render the record, as a GET does).
//!
//! Each step prints its operations per second and the process CPU time per operation (over
//! HTTP the client's share is small: it writes and reads raw HTTP/1.1 and parses only what
//! it needs); the end prints the peak memory.
//!
//! Run it as `cargo run --release -p tether-sandbox --example requests -- 10000 http`.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::time::Instant;

use serde_json::{Value, json};
use tether_sandbox::{RateLimits, Sandbox, SandboxOptions, credentials};

fn peak_mib() -> f64 {
    status_kib("VmHWM:") / 1024.0
}

fn status_kib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// The process's user and system CPU time in seconds (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces; the fields after it are space separated.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// One keep-alive HTTP/1.1 connection to a system.
struct Client {
    authority: String,
    headers: Vec<(&'static str, String)>,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn new(url: &str, headers: Vec<(&'static str, String)>) -> Self {
        let authority = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let stream = TcpStream::connect(&authority).expect("connects");
        stream.set_nodelay(true).expect("no delay");
        Self {
            authority,
            headers,
            reader: BufReader::with_capacity(1 << 16, stream),
        }
    }

    /// Sends one request and reads its answer: the status and the body.
    fn send(&mut self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.authority);
        for (name, value) in &self.headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("request sent");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header");
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("a length");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.trim().eq_ignore_ascii_case("chunked");
            }
        }
        let mut bytes = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).expect("chunk size");
                let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).expect("chunk");
                if size == 0 {
                    break;
                }
                bytes.extend_from_slice(&chunk[..size]);
            }
        } else {
            bytes.resize(length, 0);
            self.reader.read_exact(&mut bytes).expect("body");
        }
        (status, String::from_utf8(bytes).expect("a UTF-8 body"))
    }

    fn expect(&mut self, method: &str, path: &str, body: Option<&Value>, wanted: u16) -> String {
        let (status, text) = self.send(method, path, body);
        assert_eq!(status, wanted, "{method} {path}: {text}");
        text
    }
}

/// Times one step of `count` requests and prints its rate.
fn step<T>(label: &str, run: impl FnOnce() -> (usize, T)) -> T {
    let cpu = cpu_seconds();
    let started = Instant::now();
    let (count, out) = run();
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    println!(
        "{label:<32} {count:>6} requests in {seconds:>6.2} s: {:>7.0} requests/s, {:>6.1} µs CPU each; peak {:.0} MiB",
        count as f64 / seconds.max(1e-9),
        cpu * 1e6 / (count.max(1) as f64),
        peak_mib(),
    );
    out
}

/// How one entity is written, listed and read.
struct Entity {
    label: &'static str,
    /// The system and the entity, as direct access names them.
    system: &'static str,
    entity: &'static str,
    /// Its collection path over HTTP.
    collection: String,
    create: fn(usize) -> Value,
    create_status: u16,
    /// The update method and the body updating record `i` over HTTP.
    update: (&'static str, fn(usize) -> Value),
    /// What a person's edit of record `i` changes (direct access).
    edit: fn(usize) -> Value,
    paging: Paging,
}

/// What the benchmark reads of a list page, whichever system's envelope it is in.
#[derive(serde::Deserialize)]
struct PageBody {
    #[serde(default, alias = "data", alias = "companies", alias = "contacts")]
    items: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    next_cursor: Option<String>,
    #[serde(default)]
    total: Option<usize>,
    #[serde(default)]
    count: Option<usize>,
}

impl PageBody {
    fn records(&self) -> usize {
        self.items.len()
    }
}

enum Paging {
    /// `cursor`/`page_size`, `items`, `next_cursor` (web shop).
    Cursor,
    /// `offset`/`limit`, `data`, `total` (ERP).
    Offset,
    /// `offset`/`limit`, the entity's own array, `count` (Keap).
    Keap,
}

fn webshop_customer(i: usize) -> Value {
    json!({
        "email": format!("customer{i}@shop.example"),
        "first_name": "Bench", "last_name": format!("Customer {i:06}"),
        "company": null, "phone": format!("+47 {:08}", i),
        "addresses": [{"type": "billing", "line1": format!("Street {i}"), "city": "Oslo", "zip": "0150", "country": "NO"}],
        "marketing_opt_in": i.is_multiple_of(2),
    })
}

fn webshop_put(i: usize) -> Value {
    let mut body = webshop_customer(i);
    body["first_name"] = json!(format!("Changed {i}"));
    body
}

/// A person's edit through direct access: what changes.
fn webshop_edit(i: usize) -> Value {
    json!({"first_name": format!("Changed {i}")})
}

fn erp_customer(i: usize) -> Value {
    json!({
        "name": format!("Bench Customer {i:06}"), "org_number": format!("9{i:08}"),
        "email": format!("customer{i}@erp.example"), "phone": format!("+47 {:08}", i),
        "website": format!("https://customer{i}.example"),
        "billing_address": {"street": format!("Street {i}"), "city": "Oslo", "postal_code": "0150", "country": "NO"},
        "currency": "NOK", "credit_limit": "10000.00", "is_active": true,
    })
}

fn erp_patch(i: usize) -> Value {
    json!({"phone": format!("+46 {:08}", i)})
}

fn keap_company(i: usize) -> Value {
    json!({
        "company_name": format!("Bench Company {i:06}"),
        "email_address": format!("company{i}@keap.example"),
        "phone_number": {"number": format!("+47 {:08}", i), "type": "Work"},
    })
}

fn keap_company_patch(i: usize) -> Value {
    json!({"company_name": format!("Bench Company {i:06} (changed)")})
}

fn keap_contact(i: usize) -> Value {
    json!({
        "given_name": "Bench", "family_name": format!("Person {i:06}"),
        "email_addresses": [{"email": format!("person{i}@keap.example"), "field": "EMAIL1"}],
        "phone_numbers": [{"number": format!("+47 {:08}", i), "field": "PHONE1", "type": "Work"}],
    })
}

fn keap_contact_patch(i: usize) -> Value {
    json!({"given_name": format!("Changed {i}")})
}

/// The id of a rendered record: its first property in every system's rendering.
fn id_of(body: &str) -> String {
    let rest = body
        .split_once("\"id\":")
        .map(|(_, rest)| rest.trim_start())
        .expect("an id");
    match rest.strip_prefix('"') {
        Some(text) => text.split('"').next().unwrap_or_default().to_string(),
        None => rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

fn id_text(value: &Value) -> String {
    match &value["id"] {
        Value::String(id) => id.clone(),
        other => other.to_string(),
    }
}

fn over_http(client: &mut Client, entity: &Entity, count: usize) {
    let collection = entity.collection.as_str();
    let ids: Vec<String> = step(&format!("{} POST", entity.label), || {
        let ids = (0..count)
            .map(|i| {
                id_of(&client.expect(
                    "POST",
                    collection,
                    Some(&(entity.create)(i)),
                    entity.create_status,
                ))
            })
            .collect();
        (count, ids)
    });
    let listed = step(&format!("{} list pages", entity.label), || {
        let mut pages = 0;
        let mut listed = 0;
        // Only the counts and the cursor are read; the records are skipped, not built.
        let parse =
            |text: String| -> PageBody { serde_json::from_str(&text).expect("a JSON page") };
        match entity.paging {
            Paging::Cursor => {
                let mut cursor = String::new();
                loop {
                    let page = parse(client.expect(
                        "GET",
                        &format!("{collection}?page_size=250&cursor={cursor}"),
                        None,
                        200,
                    ));
                    pages += 1;
                    listed += page.records();
                    match page.next_cursor {
                        Some(next) => cursor = next,
                        None => break,
                    }
                }
            }
            Paging::Offset | Paging::Keap => {
                let limit = match entity.paging {
                    Paging::Keap => 1000,
                    _ => 500,
                };
                loop {
                    let page = parse(client.expect(
                        "GET",
                        &format!("{collection}?limit={limit}&offset={listed}"),
                        None,
                        200,
                    ));
                    pages += 1;
                    let got = page.records();
                    listed += got;
                    if got == 0 || listed >= page.count.or(page.total).unwrap_or(0) {
                        break;
                    }
                }
            }
        }
        (pages, listed)
    });
    assert_eq!(listed, count, "{} listed", entity.label);
    step(&format!("{} GET one", entity.label), || {
        for id in &ids {
            client.expect("GET", &format!("{collection}/{id}"), None, 200);
        }
        (ids.len(), ())
    });
    step(&format!("{} {}", entity.label, entity.update.0), || {
        let mut updated = 0;
        for (i, id) in ids.iter().enumerate().step_by(10) {
            client.expect(
                entity.update.0,
                &format!("{collection}/{id}"),
                Some(&(entity.update.1)(i)),
                200,
            );
            updated += 1;
        }
        (updated, ())
    });
}

fn direct(sandbox: &Sandbox, entity: &Entity, count: usize) {
    let (system, name) = (entity.system, entity.entity);
    let ids: Vec<String> = step(&format!("{} insert", entity.label), || {
        let ids = (0..count)
            .map(|i| {
                id_text(
                    &sandbox
                        .insert(system, name, (entity.create)(i))
                        .expect("created"),
                )
            })
            .collect();
        (count, ids)
    });
    step(&format!("{} records", entity.label), || {
        let records = sandbox.records(system, name).expect("records");
        assert_eq!(records.len(), count, "{} listed", entity.label);
        (1, ())
    });
    step(&format!("{} record", entity.label), || {
        for id in &ids {
            sandbox
                .record(system, name, id)
                .expect("read")
                .expect("found");
        }
        (ids.len(), ())
    });
    step(&format!("{} update", entity.label), || {
        let mut updated = 0;
        for (i, id) in ids.iter().enumerate().step_by(10) {
            sandbox
                .update(system, name, id, (entity.edit)(i))
                .expect("updated");
            updated += 1;
        }
        (updated, ())
    });
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: usize = args
        .first()
        .map_or(10_000, |n| n.parse().expect("N is a number"));
    let http = match args.get(1).map(String::as_str) {
        None | Some("http") => true,
        Some("direct") => false,
        Some(other) => panic!("{other}: expected http or direct"),
    };
    let sandbox = Sandbox::start(SandboxOptions {
        rate_limits: RateLimits::unlimited(),
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts");
    let url = |system: &str| sandbox.base_url(system).unwrap_or_default().to_string();
    let path = |url: &str| {
        let rest = url.trim_start_matches("http://");
        rest.find('/')
            .map_or(String::new(), |at| rest[at..].to_string())
    };
    let shop = url("customwebshop");
    let erp = url("customerp");
    let keap = url("keap");
    let keap_key = || vec![("X-Keap-API-Key", credentials::KEAP_API_KEY.to_string())];
    let plan = vec![
        (
            shop.clone(),
            vec![("X-Api-Key", credentials::CUSTOMWEBSHOP_API_KEY.to_string())],
            Entity {
                label: "web shop customers",
                system: "customwebshop",
                entity: "customers",
                collection: format!("{}/customers", path(&shop)),
                create: webshop_customer,
                create_status: 201,
                update: ("PUT", webshop_put),
                edit: webshop_edit,
                paging: Paging::Cursor,
            },
        ),
        (
            erp.clone(),
            vec![(
                "Authorization",
                format!("Bearer {}", credentials::CUSTOMERP_TOKEN),
            )],
            Entity {
                label: "ERP customers",
                system: "customerp",
                entity: "customers",
                collection: format!("{}/customers", path(&erp)),
                create: erp_customer,
                create_status: 201,
                update: ("PATCH", erp_patch),
                edit: erp_patch,
                paging: Paging::Offset,
            },
        ),
        (
            keap.clone(),
            keap_key(),
            Entity {
                label: "Keap companies",
                system: "keap",
                entity: "companies",
                collection: format!("{}/companies", path(&keap)),
                create: keap_company,
                create_status: 201,
                update: ("PATCH", keap_company_patch),
                edit: keap_company_patch,
                paging: Paging::Keap,
            },
        ),
        (
            keap.clone(),
            keap_key(),
            Entity {
                label: "Keap contacts",
                system: "keap",
                entity: "contacts",
                collection: format!("{}/contacts", path(&keap)),
                create: keap_contact,
                create_status: 201,
                update: ("PATCH", keap_contact_patch),
                edit: keap_contact_patch,
                paging: Paging::Keap,
            },
        ),
    ];
    let started = Instant::now();
    let cpu = cpu_seconds();
    if http {
        tokio::task::spawn_blocking(move || {
            for (url, headers, entity) in plan {
                let mut client = Client::new(&url, headers);
                over_http(&mut client, &entity, count);
            }
        })
        .await
        .expect("the client finishes");
    } else {
        for (_, _, entity) in &plan {
            direct(&sandbox, entity, count);
        }
    }
    println!(
        "all steps in {:.2} s, {:.2} s CPU; {} records; peak {:.0} MiB, now {:.0} MiB",
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu,
        sandbox.record_count(),
        peak_mib(),
        status_kib("VmRSS:") / 1024.0
    );
}
