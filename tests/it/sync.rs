//! The sync engine end to end: the shipped flows, over real HTTP, against the simulators of
//! all five systems, on a SQLite store in a temporary folder. Each test edits the systems the
//! way a person would (through the simulators' own store rules) and runs the engine again.

mod faults;
mod matrix;
mod optimistic;
mod repeats;
mod tapped;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tether_engine::store::{Store, StoreUrl};
use tether_engine::sync::engine::RunOptions;
use tether_engine::sync::open::{OpenOptions, open};
use tether_engine::sync::report::RunReport;
use tether_sandbox::{FaultSpec, RateLimits, Sandbox, SandboxOptions};

pub(crate) struct World {
    pub(crate) sandbox: Sandbox,
    pub(crate) state: StoreUrl,
    _dir: TempDir,
}

/// A folder removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "tether-sync-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

pub(crate) async fn world(name: &str, seed: usize) -> World {
    world_with(
        name,
        SandboxOptions {
            seed,
            rate_limits: RateLimits::unlimited(),
            ..SandboxOptions::default()
        },
    )
    .await
}

async fn world_with(name: &str, options: SandboxOptions) -> World {
    let dir = temp_dir(name);
    let sandbox = Sandbox::start(options).await.expect("sandbox starts");
    let state = StoreUrl::parse(&dir.0.join("state.db").display().to_string()).expect("store url");
    World {
        sandbox,
        state,
        _dir: dir,
    }
}

pub(crate) fn flows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("flows")
}

impl World {
    pub(crate) async fn run(&self, mappings: &[&str]) -> RunReport {
        let env: std::collections::HashMap<String, String> =
            self.sandbox.env().into_iter().collect();
        let lookup = move |name: &str| env.get(name).cloned();
        let engine = open(
            &flows(),
            &self.state,
            &lookup,
            OpenOptions {
                ignore_rate_limits: true,
            },
        )
        .await
        .expect("engine opens");
        let options = RunOptions {
            mappings: mappings.iter().map(|m| (*m).to_owned()).collect(),
            ..RunOptions::default()
        };
        engine.run(&options).await.expect("run succeeds")
    }

    pub(crate) async fn store(&self) -> Store {
        Store::open(&self.state).await.expect("store opens")
    }

    pub(crate) fn find(&self, system: &str, entity: &str, field: &str, value: &str) -> Vec<Value> {
        self.sandbox
            .records(system, entity)
            .expect("records")
            .into_iter()
            .filter(|r| {
                r.get(field)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.eq_ignore_ascii_case(value))
            })
            .collect()
    }

    pub(crate) fn one(&self, system: &str, entity: &str, field: &str, value: &str) -> Value {
        let found = self.find(system, entity, field, value);
        assert_eq!(
            found.len(),
            1,
            "exactly one {system} {entity} with {field} = {value}: {found:#?}"
        );
        found.into_iter().next().expect("one")
    }
}

pub(crate) fn id_of(record: &Value) -> String {
    match &record["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) const COMPANIES: &str = "keap-companies-to-customerp-customers";
const CONTACTS: &str = "keap-contacts-to-customerp-contacts";
const SF_CONTACTS: &str = "salesforce-contacts-to-customerp-contacts";

pub(crate) fn keap_company(name: &str, email: &str) -> Value {
    json!({
        "company_name": name,
        "email_address": email,
        "website": "https://example.com",
        "address": { "line1": "1 Main St", "locality": "Oslo", "zip_code": "0150", "country_code": "NOR" }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_created_on_either_side_appear_on_the_other_and_a_second_run_writes_nothing() {
    let w = world("create", 3).await;
    let first = w.run(&[COMPANIES, CONTACTS]).await;
    assert!(
        first.writes() > 0,
        "the first run syncs the seed data: {first:#?}"
    );

    w.sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Fjord Tools AS", "post@fjordtools.example"),
        )
        .expect("insert keap company");
    w.sandbox
        .insert("customerp", "customers", json!({ "name": "Nordlys Handel", "email": "hei@nordlys.example", "currency": "NOK", "is_active": true }))
        .expect("insert erp customer");
    let report = w.run(&[COMPANIES, CONTACTS]).await;
    let companies = report
        .mappings
        .iter()
        .find(|m| m.mapping == COMPANIES)
        .expect("companies report");
    assert_eq!(
        (companies.created_target, companies.created_source),
        (1, 1),
        "{companies:#?}"
    );

    let customer = w.one("customerp", "customers", "name", "Fjord Tools AS");
    assert_eq!(customer["email"], "post@fjordtools.example");
    assert_eq!(
        customer["billing_address"]["country"], "NO",
        "Keap's alpha-3 NOR becomes alpha-2 NO"
    );
    assert_eq!(customer["billing_address"]["city"], "Oslo");
    let company = w.one("keap", "companies", "company_name", "Nordlys Handel");
    assert_eq!(company["email_address"], "hei@nordlys.example");

    let again = w.run(&[COMPANIES, CONTACTS]).await;
    assert_eq!(
        again.writes(),
        0,
        "a run straight after writes nothing: {again:#?}"
    );
    assert_eq!(again.parked(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_is_synced_and_a_whole_listing_is_read_once_per_run() {
    let w = world("listing-once", 3).await;
    w.run(&[COMPANIES]).await;
    let company = w
        .sandbox
        .records("keap", "companies")
        .expect("companies")
        .into_iter()
        .next()
        .expect("a seeded company");
    let name = company["company_name"]
        .as_str()
        .expect("company name")
        .to_owned();
    w.sandbox
        .update(
            "keap",
            "companies",
            &id_of(&company),
            json!({ "company_name": name, "website": "https://changed.example" }),
        )
        .expect("edit keap company");
    w.sandbox.reset_request_counts();

    let report = w.run(&[COMPANIES]).await;
    assert_eq!(report.writes(), 1, "one edit, one write: {report:#?}");
    assert_eq!(
        w.one("customerp", "customers", "name", &name)["website"],
        "https://changed.example"
    );
    // Keap companies are listed whole (one page here); the write to the ERP makes a second
    // pass, which does not list Keap again since nothing wrote to it.
    assert!(report.passes >= 2, "{report:#?}");
    let keap = w.sandbox.request_counts()["keap"];
    assert_eq!(
        (keap.reads, keap.writes),
        (1, 0),
        "Keap is read once: {keap:#?}"
    );
}

/// Keap companies have no modified time: each run lists them whole. The records at rest are
/// let go page by page as they are listed (memory does not grow with the entity), and what
/// the pass needs of them is still there: their ids, so that none is taken for deleted by
/// its absence, and the record itself, read by id, when its ERP customer changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listing_lets_go_of_records_at_rest_yet_an_edit_on_the_other_side_syncs() {
    let w = world("lean-listing", 0).await;
    for (name, email) in [
        ("Aker Tools", "post@aker.example"),
        ("Bergen Bakeri", "hei@bergen.example"),
        ("Dovre Data", "kontakt@dovre.example"),
    ] {
        w.sandbox
            .insert("keap", "companies", keap_company(name, email))
            .expect("keap company");
    }
    w.run(&[COMPANIES]).await;
    let bergen = w.one("customerp", "customers", "name", "Bergen Bakeri");
    w.sandbox
        .update(
            "customerp",
            "customers",
            &id_of(&bergen),
            json!({ "website": "https://bergen.example" }),
        )
        .expect("edit erp customer");

    let report = w.run(&[COMPANIES]).await;
    let companies = report
        .mappings
        .iter()
        .find(|m| m.mapping == COMPANIES)
        .expect("companies report");
    assert_eq!(
        w.one("keap", "companies", "company_name", "Bergen Bakeri")["website"],
        "https://bergen.example",
        "the ERP's edit reaches the Keap company let go by the listing: {report:#?}"
    );
    // The companies let go are still in the listing: none is taken for deleted.
    assert_eq!(
        (
            companies.unlinked,
            companies.deleted_source,
            companies.deleted_target
        ),
        (0, 0, 0),
        "{report:#?}"
    );
    // Counted as read in each pass that listed them (the write to Keap makes a second).
    assert_eq!(
        companies.read_source,
        3 * report.passes as u64,
        "{report:#?}"
    );
    let pairs = w.store().await.pair_states(COMPANIES).await.expect("pairs");
    assert_eq!(pairs.len(), 3, "every company stays linked");
    let again = w.run(&[COMPANIES]).await;
    assert_eq!(again.writes(), 0, "{again:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_flow_both_ways_and_the_same_field_edited_twice_follows_the_policy() {
    let w = world("edits", 0).await;
    let keap = w
        .sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Bryggen Bakeri", "ordre@bryggen.example"),
        )
        .expect("insert");
    w.run(&[COMPANIES]).await;
    let customer = w.one("customerp", "customers", "name", "Bryggen Bakeri");

    // Different fields on both sides: both kept.
    w.sandbox
        .update(
            "keap",
            "companies",
            &id_of(&keap),
            json!({ "company_name": "Bryggen Bakeri", "website": "https://bryggen.example" }),
        )
        .expect("edit keap");
    w.sandbox
        .update(
            "customerp",
            "customers",
            &id_of(&customer),
            json!({ "phone": "+4755000000" }),
        )
        .expect("edit erp");
    let report = w.run(&[COMPANIES]).await;
    assert_eq!(report.writes(), 2, "one write each way: {report:#?}");
    let customer = w.one("customerp", "customers", "name", "Bryggen Bakeri");
    assert_eq!(customer["website"], "https://bryggen.example");
    let keap = w.one("keap", "companies", "company_name", "Bryggen Bakeri");
    assert_eq!(keap["phone_number"]["number"], "+4755000000");

    // The same field on both sides: this mapping's policy is target-wins, and it is recorded.
    w.sandbox
        .update(
            "keap",
            "companies",
            &id_of(&keap),
            json!({ "company_name": "Bryggen Bakeri", "email_address": "keap@bryggen.example" }),
        )
        .expect("edit keap");
    w.sandbox
        .update(
            "customerp",
            "customers",
            &id_of(&customer),
            json!({ "email": "erp@bryggen.example" }),
        )
        .expect("edit erp");
    let report = w.run(&[COMPANIES]).await;
    assert_eq!(report.mappings[0].conflicts, 1, "{report:#?}");
    assert_eq!(
        w.one("keap", "companies", "company_name", "Bryggen Bakeri")["email_address"],
        "erp@bryggen.example"
    );
    assert_eq!(
        w.one("customerp", "customers", "name", "Bryggen Bakeri")["email"],
        "erp@bryggen.example"
    );
    let conflicts = w
        .store()
        .await
        .recent_conflicts(Some(COMPANIES), 10)
        .await
        .expect("conflicts");
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].field, "email");
    assert_eq!(conflicts[0].source_value, "keap@bryggen.example");

    let again = w.run(&[COMPANIES]).await;
    assert_eq!(again.writes(), 0, "{again:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_is_parked_while_the_rest_syncs_and_syncs_once_fixed() {
    let w = world("parked", 0).await;
    let bad = w
        .sandbox
        .insert(
            "keap",
            "companies",
            json!({ "company_name": "Bad Country Ltd", "address": { "country_code": "XXX" } }),
        )
        .expect("insert");
    w.sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Good Country AS", "hello@good.example"),
        )
        .expect("insert");
    let report = w.run(&[COMPANIES]).await;
    assert_eq!(report.mappings[0].parked, 1, "{report:#?}");
    assert_eq!(
        w.find("customerp", "customers", "name", "Good Country AS")
            .len(),
        1,
        "the good record synced"
    );
    assert!(
        w.find("customerp", "customers", "name", "Bad Country Ltd")
            .is_empty()
    );
    let parked = w
        .store()
        .await
        .parked(Some(COMPANIES))
        .await
        .expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].record_id, id_of(&bad));
    assert!(
        parked[0].reason.contains("billing_address.country") && parked[0].reason.contains("XXX"),
        "{}",
        parked[0].reason
    );

    w.sandbox
        .update(
            "keap",
            "companies",
            &id_of(&bad),
            json!({ "company_name": "Bad Country Ltd", "address": { "country_code": "SWE" } }),
        )
        .expect("fix");
    let report = w.run(&[COMPANIES]).await;
    assert_eq!(report.mappings[0].unparked, 1, "{report:#?}");
    assert_eq!(
        w.one("customerp", "customers", "name", "Bad Country Ltd")["billing_address"]["country"],
        "SE"
    );
    assert!(
        w.store()
            .await
            .parked(Some(COMPANIES))
            .await
            .expect("parked")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_across_flows() {
    let w = world("identity", 0).await;
    // A Keap company reaches the web shop directly and through the ERP: one shop customer.
    w.sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Vestland Sykkel", "kontakt@vestland.example"),
        )
        .expect("insert");
    w.run(&[
        COMPANIES,
        "keap-companies-to-customwebshop-customers",
        "customerp-customers-to-customwebshop-customers",
    ])
    .await;
    let shop = w.find(
        "customwebshop",
        "customers",
        "email",
        "kontakt@vestland.example",
    );
    assert_eq!(shop.len(), 1, "one web-shop customer: {shop:#?}");
    assert_eq!(
        w.find("customerp", "customers", "name", "Vestland Sykkel")
            .len(),
        1
    );

    // A Salesforce contact and a Keap contact with the same email are one ERP contact.
    w.sandbox
        .insert("keap", "contacts", json!({ "given_name": "Ada", "family_name": "Lovelace", "email_addresses": [{ "email": "ada@engine.example", "field": "EMAIL1" }] }))
        .expect("keap contact");
    w.sandbox
        .insert(
            "salesforce",
            "Contact",
            json!({ "FirstName": "Ada", "LastName": "Lovelace", "Email": "ada@engine.example" }),
        )
        .expect("salesforce contact");
    w.run(&[CONTACTS, SF_CONTACTS]).await;
    assert_eq!(
        w.find("customerp", "contacts", "email", "ada@engine.example")
            .len(),
        1,
        "one ERP contact"
    );
    let again = w.run(&[CONTACTS, SF_CONTACTS]).await;
    assert_eq!(again.writes(), 0, "{again:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_moved_to_another_company_on_either_side_follows() {
    let w = world("moved-contact", 0).await;
    let alfa = w
        .sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Alfa Bygg AS", "post@alfa.example"),
        )
        .expect("insert");
    let beta = w
        .sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Beta Bygg AS", "post@beta.example"),
        )
        .expect("insert");
    let contact = w
        .sandbox
        .insert("keap", "contacts", json!({ "given_name": "Kari", "family_name": "Nordmann", "email_addresses": [{ "email": "kari@alfa.example", "field": "EMAIL1" }], "company": { "id": alfa["id"] } }))
        .expect("insert");
    w.run(&[COMPANIES, CONTACTS]).await;
    let erp_alfa = w.one("customerp", "customers", "name", "Alfa Bygg AS");
    let erp_beta = w.one("customerp", "customers", "name", "Beta Bygg AS");
    let erp_contact = w.one("customerp", "contacts", "email", "kari@alfa.example");
    assert_eq!(erp_contact["customer_id"], erp_alfa["id"]);

    // Moved in the ERP: the run reads that one contact there, and the Keap contact it
    // fetches still names the old company; both companies are translated.
    w.sandbox
        .update(
            "customerp",
            "contacts",
            &id_of(&erp_contact),
            json!({ "customer_id": erp_beta["id"] }),
        )
        .expect("move in the ERP");
    let report = w.run(&[COMPANIES, CONTACTS]).await;
    assert_eq!((report.writes(), report.parked()), (1, 0), "{report:#?}");
    let keap_contact = w
        .sandbox
        .record("keap", "contacts", &id_of(&contact))
        .expect("record")
        .expect("the Keap contact");
    assert_eq!(keap_contact["company"]["id"], beta["id"]);

    // Moved back in Keap.
    w.sandbox
        .update(
            "keap",
            "contacts",
            &id_of(&contact),
            json!({ "company": { "id": alfa["id"] } }),
        )
        .expect("move in Keap");
    let report = w.run(&[COMPANIES, CONTACTS]).await;
    assert_eq!((report.writes(), report.parked()), (1, 0), "{report:#?}");
    assert_eq!(
        w.one("customerp", "contacts", "email", "kari@alfa.example")["customer_id"],
        erp_alfa["id"]
    );
    let again = w.run(&[COMPANIES, CONTACTS]).await;
    assert_eq!(again.writes(), 0, "{again:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_follows_the_policy() {
    let w = world("delete", 0).await;
    let contact = w
        .sandbox
        .insert("keap", "contacts", json!({ "given_name": "Grace", "family_name": "Hopper", "email_addresses": [{ "email": "grace@navy.example", "field": "EMAIL1" }] }))
        .expect("keap contact");
    w.run(&[CONTACTS]).await;
    assert_eq!(
        w.find("customerp", "contacts", "email", "grace@navy.example")
            .len(),
        1
    );
    // The contacts mapping unlinks on delete: the ERP contact stays, the pair is forgotten.
    w.sandbox
        .delete("keap", "contacts", &id_of(&contact))
        .expect("delete");
    let report = w.run(&[CONTACTS]).await;
    assert_eq!(report.mappings[0].unlinked, 1, "{report:#?}");
    assert_eq!(
        w.find("customerp", "contacts", "email", "grace@navy.example")
            .len(),
        1,
        "kept by policy"
    );
    let pairs = w.store().await.pair_states(CONTACTS).await.expect("pairs");
    assert!(pairs.iter().all(|p| p.source_id != id_of(&contact)));
}

/// A copy of the shipped flows in a folder removed when dropped.
pub(crate) struct FlowsCopy(pub(crate) PathBuf);

impl Drop for FlowsCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A copy of the shipped flows with the first `from` of `file` replaced by `to`.
pub(crate) fn edited_flows(file: &str, from: &str, to: &str) -> FlowsCopy {
    let dir = std::env::temp_dir().join(format!(
        "tether-edited-flows-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).expect("folder");
        for entry in std::fs::read_dir(from).expect("flows").flatten() {
            if entry.path().is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
            }
        }
    };
    copy(&flows(), &dir);
    copy(&flows().join("systems"), &dir.join("systems"));
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("flow");
    let edited = text.replacen(from, to, 1);
    assert_ne!(edited, text, "{file}: `{from}` is replaced");
    std::fs::write(&path, edited).expect("write flow");
    FlowsCopy(dir)
}

/// Runs `tether run` as a child process against the simulators.
fn tether_run(w: &World, mappings: &[&str]) -> std::process::Command {
    tether_run_with(w, &flows(), mappings)
}

/// Runs `tether run` with the flows of `dir` as a child process against the simulators.
fn tether_run_with(w: &World, dir: &Path, mappings: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tether"));
    command
        .arg("--flows")
        .arg(dir)
        .args(["--log", "error", "run", "--no-rate-limits", "--state"])
        .arg(w.state.to_string())
        .args(mappings.iter().flat_map(|m| ["--mapping", m]))
        .envs(w.sandbox.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_run_at_random_moments_leaves_no_duplicate_and_no_lost_edit() {
    let w = world("crash", 0).await;
    let kills: usize = std::env::var("TETHER_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut companies = Vec::new();
    for i in 0..120 {
        let record = w
            .sandbox
            .insert(
                "keap",
                "companies",
                keap_company(
                    &format!("Crash Test {i:03}"),
                    &format!("c{i}@crash.example"),
                ),
            )
            .expect("insert");
        companies.push(id_of(&record));
    }
    for i in 0..60 {
        w.sandbox
            .insert(
                "customerp",
                "customers",
                json!({ "name": format!("Erp Only {i:03}"), "currency": "EUR", "is_active": true }),
            )
            .expect("insert");
    }
    let mut rng = fastrand::Rng::with_seed(7);
    let mut edited: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for round in 0..kills {
        // An edit between runs must survive whatever the kill interrupted.
        let id = &companies[rng.usize(..companies.len())];
        let name = w
            .sandbox
            .record("keap", "companies", id)
            .expect("record")
            .expect("exists")["company_name"]
            .clone();
        let website = format!("https://edit-{round}.example");
        w.sandbox
            .update(
                "keap",
                "companies",
                id,
                json!({ "company_name": name, "website": website }),
            )
            .expect("edit");
        edited.insert(id.clone());
        let mut child = tether_run(&w, &[COMPANIES])
            .spawn()
            .expect("spawn tether run");
        tokio::time::sleep(std::time::Duration::from_millis(rng.u64(30..900))).await;
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let status = tether_run(&w, &[COMPANIES]).status().expect("final run");
    assert!(status.success(), "the run after the kills completes");
    let report = w.run(&[COMPANIES]).await;
    assert_eq!(
        report.writes(),
        0,
        "the last run finds everything in sync: {report:#?}"
    );

    for i in 0..120 {
        w.one(
            "customerp",
            "customers",
            "name",
            &format!("Crash Test {i:03}"),
        );
    }
    for i in 0..60 {
        w.one(
            "keap",
            "companies",
            "company_name",
            &format!("Erp Only {i:03}"),
        );
    }
    for id in &edited {
        let name = w
            .sandbox
            .record("keap", "companies", id)
            .expect("record")
            .expect("exists")["company_name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let customer = w.one("customerp", "customers", "name", &name);
        let latest = w
            .sandbox
            .record("keap", "companies", id)
            .expect("record")
            .expect("exists")["website"]
            .clone();
        assert_eq!(
            customer["website"], latest,
            "the latest edit of {name} reached the ERP"
        );
    }
}

/// Random creates, edits and deletes on both sides, interleaved with runs, always end with
/// every linked pair equal under its mapping (seeded, so a failure can be replayed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_converge() {
    let seeds: Vec<u64> = match std::env::var("TETHER_CONVERGENCE_SEED") {
        Ok(seed) => vec![seed.parse().expect("a number")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        let w = world(&format!("converge-{seed}"), 0).await;
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut next = 0;
        for _round in 0..4 {
            for _ in 0..6 {
                next += 1;
                let keap = w.sandbox.records("keap", "companies").expect("records");
                let erp = w
                    .sandbox
                    .records("customerp", "customers")
                    .expect("records");
                match rng.u8(..6) {
                    0 => {
                        w.sandbox
                            .insert(
                                "keap",
                                "companies",
                                keap_company(
                                    &format!("Random {seed}-{next}"),
                                    &format!("r{next}@random.example"),
                                ),
                            )
                            .expect("insert");
                    }
                    1 => {
                        w.sandbox
                            .insert("customerp", "customers", json!({ "name": format!("Erp Random {seed}-{next}"), "currency": "EUR", "is_active": true, "phone": format!("+47{:08}", next) }))
                            .expect("insert");
                    }
                    2 if !keap.is_empty() => {
                        let record = &keap[rng.usize(..keap.len())];
                        w.sandbox
                            .update("keap", "companies", &id_of(record), json!({ "company_name": record["company_name"], "website": format!("https://k{next}.example") }))
                            .expect("edit");
                    }
                    3 if !erp.is_empty() => {
                        let record = &erp[rng.usize(..erp.len())];
                        w.sandbox
                            .update(
                                "customerp",
                                "customers",
                                &id_of(record),
                                json!({ "phone": format!("+4790{:06}", next) }),
                            )
                            .expect("edit");
                    }
                    4 if !keap.is_empty() => {
                        let record = &keap[rng.usize(..keap.len())];
                        w.sandbox.update("keap", "companies", &id_of(record), json!({ "company_name": record["company_name"], "email_address": format!("k{next}@random.example") })).expect("edit");
                    }
                    5 if !erp.is_empty() => {
                        let record = &erp[rng.usize(..erp.len())];
                        w.sandbox
                            .delete("customerp", "customers", &id_of(record))
                            .expect("delete");
                    }
                    _ => {}
                }
            }
            if rng.bool() {
                w.run(&[COMPANIES]).await;
            }
        }
        w.run(&[COMPANIES]).await;
        let quiet = w.run(&[COMPANIES]).await;
        assert_eq!(
            quiet.writes(),
            0,
            "seed {seed}: a run after convergence writes nothing: {quiet:#?}"
        );

        // Every linked pair is equal under the mapping's two-way rules.
        let project = tether_engine::spec::load::Project::load_dir(&flows());
        let (plans, _) = tether_engine::mapping::compile_project(&project);
        let plan = plans.get(COMPANIES).expect("plan");
        let pairs = w.store().await.pair_states(COMPANIES).await.expect("pairs");
        assert!(!pairs.is_empty(), "seed {seed}: something was linked");
        for pair in pairs {
            let keap = w
                .sandbox
                .record("keap", "companies", &pair.source_id)
                .expect("record")
                .expect("linked Keap company exists");
            let erp = w
                .sandbox
                .record("customerp", "customers", &pair.target_id)
                .expect("record")
                .expect("linked ERP customer exists");
            let forward = tether_engine::mapping::apply_forward_existing(
                plan,
                &keap,
                &tether_engine::mapping::KeepIds,
            )
            .expect("maps");
            let mapped = tether_engine::mapping::Canonical::of(plan, &forward);
            let stored = tether_engine::mapping::Canonical::of(plan, &erp);
            for rule in plan.rules.rules.iter().filter(|r| {
                r.direction == tether_engine::spec::flow::Direction::Both && !r.create_only
            }) {
                let field = rule.target.as_str();
                if let (Some(a), Some(b)) = (mapped.fields().get(field), stored.fields().get(field))
                {
                    assert_eq!(
                        a, b,
                        "seed {seed}: `{field}` differs between Keap {} and ERP {}",
                        pair.source_id, pair.target_id
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_lines_name_the_shops_product_by_its_sku() {
    let w = world("ref-key", 0).await;
    let product = w
        .sandbox
        .insert("customerp", "products", json!({ "sku": "REF-KEY-1", "name": "Tent", "unit_price": "199.00", "currency": "EUR", "vat_rate": "25.00", "is_active": true, "stock_quantity": 3 }))
        .expect("product");
    let product_id = product["id"].as_i64().expect("integer id");
    w.sandbox
        .insert(
            "customerp",
            "orders",
            json!({ "status": "confirmed", "order_date": "2026-11-20", "currency": "EUR", "total_amount": "398.00",
                    "lines": [{ "product_id": product_id, "description": "Tent", "quantity": 2, "unit_price": "199.00" }] }),
        )
        .expect("order");
    w.run(&[
        "customerp-products-to-customwebshop-products",
        "customerp-orders-to-customwebshop-orders",
    ])
    .await;
    let orders = w
        .sandbox
        .records("customwebshop", "orders")
        .expect("orders");
    assert_eq!(orders.len(), 1, "{orders:#?}");
    assert_eq!(
        orders[0]["items"][0]["sku"], "REF-KEY-1",
        "the line names the shop product by its SKU"
    );
    assert_eq!(orders[0]["items"][0]["quantity"], 2);
    assert_eq!(orders[0]["total_cents"], 39800);
    let again = w
        .run(&[
            "customerp-products-to-customwebshop-products",
            "customerp-orders-to-customwebshop-orders",
        ])
        .await;
    assert_eq!(again.writes(), 0, "{again:#?}");
}

/// The demo: all five flows on the seed data. One run brings everything in sync (the order
/// mappings that share the web shop's orders included); the run straight after writes
/// nothing. What stays parked are order lines naming products that exist only outside the
/// product master, each saying what is missing; the sales reps' sample-kit orders reach the
/// ERP and the CRM like any web order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_five_flows_on_seed_data_are_in_sync_after_one_run() {
    let w = world("seeded", 20).await;
    let first = w.run(&[]).await;
    assert!(first.writes() > 0, "{first:#?}");
    assert!(first.stopped().is_empty(), "{first:#?}");
    let second = w.run(&[]).await;
    assert_eq!(
        second.writes(),
        0,
        "the second run writes nothing: {:#?}",
        second
            .mappings
            .iter()
            .filter(|m| m.writes() > 0)
            .collect::<Vec<_>>()
    );

    let parked = w.store().await.parked(None).await.expect("parked");
    for record in &parked {
        assert!(
            record.reason.starts_with("waiting for a referenced record")
                && record
                    .reason
                    .contains("has to be set up in customerp first"),
            "only lines naming products the ERP (the product master) does not stock wait: {record:#?}"
        );
    }

    let kit = w.one("customerp", "products", "sku", "SAMPLE-KIT");
    let kit_orders = w
        .sandbox
        .records("customwebshop", "orders")
        .expect("orders")
        .into_iter()
        .filter(|o| o["items"][0]["sku"] == "SAMPLE-KIT")
        .count();
    assert!(kit_orders > 0, "the seed has sales reps with kits");
    let erp_kit_orders = w
        .sandbox
        .records("customerp", "orders")
        .expect("orders")
        .into_iter()
        .filter(|o| o["lines"][0]["product_id"] == kit["id"])
        .count();
    assert_eq!(
        erp_kit_orders, kit_orders,
        "every kit order reached the ERP"
    );
    let crm_kit = w.one("customcrm", "products", "sku", "SAMPLE-KIT");
    let crm_kit_orders = w
        .sandbox
        .records("customcrm", "orders")
        .expect("orders")
        .into_iter()
        .filter(|o| o["lines"][0]["productId"] == crm_kit["id"])
        .count();
    assert_eq!(
        crm_kit_orders, kit_orders,
        "every kit order reached the CRM"
    );
}

/// Under `unlink`, a record whose counterpart was deleted is forgotten, not created again on
/// the next runs, even where its system is listed whole on every run (Keap opportunities);
/// once a mapped field of it changes, it is a record to sync again and gets a new counterpart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_record_is_not_created_again_until_it_changes() {
    const OPPORTUNITIES: &str = "keap-opportunities-to-customerp-orders";
    let w = world("unlinked", 0).await;
    let contact = w
        .sandbox
        .insert("keap", "contacts", json!({ "given_name": "Lin", "family_name": "Ked", "email_addresses": [{ "email": "lin@deal.example", "field": "EMAIL1" }] }))
        .expect("contact");
    let opportunity = w
        .sandbox
        .insert(
            "keap",
            "opportunities",
            json!({ "opportunity_title": "Forgotten deal", "contact": { "id": contact["id"] }, "stage": { "id": 20 },
                    "projected_revenue_high": 1200.0, "estimated_close_date": "2026-10-01T00:00:00.000+0000" }),
        )
        .expect("opportunity");
    w.run(&[CONTACTS, OPPORTUNITIES]).await;
    let orders = w.sandbox.records("customerp", "orders").expect("orders");
    assert_eq!(orders.len(), 1, "{orders:#?}");

    w.sandbox
        .delete("customerp", "orders", &id_of(&orders[0]))
        .expect("delete the ERP order");
    let report = w.run(&[CONTACTS, OPPORTUNITIES]).await;
    assert_eq!(report.mappings[1].unlinked, 1, "{report:#?}");
    for _ in 0..2 {
        let again = w.run(&[CONTACTS, OPPORTUNITIES]).await;
        assert_eq!(
            again.writes(),
            0,
            "the opportunity stays forgotten: {again:#?}"
        );
    }
    assert!(
        w.sandbox
            .records("customerp", "orders")
            .expect("orders")
            .is_empty(),
        "no ERP order is created again"
    );
    assert_eq!(
        w.store()
            .await
            .unlinked(OPPORTUNITIES)
            .await
            .expect("unlinked")
            .len(),
        1
    );

    // A change of a field that is not mapped does not bring it back; a mapped one does.
    w.sandbox
        .update(
            "keap",
            "opportunities",
            &id_of(&opportunity),
            json!({ "opportunity_notes": "called" }),
        )
        .expect("edit notes");
    assert_eq!(w.run(&[CONTACTS, OPPORTUNITIES]).await.writes(), 0);
    w.sandbox
        .update(
            "keap",
            "opportunities",
            &id_of(&opportunity),
            json!({ "projected_revenue_high": 1500.0 }),
        )
        .expect("edit revenue");
    let report = w.run(&[CONTACTS, OPPORTUNITIES]).await;
    assert_eq!(report.mappings[1].created_target, 1, "{report:#?}");
    let orders = w.sandbox.records("customerp", "orders").expect("orders");
    assert_eq!(orders.len(), 1);
    assert_eq!(
        orders[0]["total_amount"]
            .as_str()
            .and_then(|t| t.parse::<f64>().ok()),
        Some(1500.0)
    );
    assert!(
        w.store()
            .await
            .unlinked(OPPORTUNITIES)
            .await
            .expect("unlinked")
            .is_empty()
    );
    assert_eq!(w.run(&[CONTACTS, OPPORTUNITIES]).await.writes(), 0);
}

/// A kit order follows its rep one way, but only the rep's changes are written: when the
/// warehouse ships the kit in the ERP, the shop shows it fulfilled and the ERP keeps it shipped;
/// deactivating the rep later still cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipped_kit_order_stays_shipped_until_the_rep_changes() {
    const KITS: &str = "customcrm-users-to-customwebshop-orders";
    const ERP_ORDERS: &str = "customerp-orders-to-customwebshop-orders";
    let w = world("kit", 3).await;
    let user = w
        .sandbox
        .insert(
            "customcrm",
            "users",
            json!({ "fullName": "Kit Rep", "email": "kit.rep@crm-staff.example", "role": "sales", "active": true }),
        )
        .expect("insert user");
    w.run(&[]).await;
    let kit = w.one(
        "customwebshop",
        "orders",
        "email",
        "kit.rep@crm-staff.example",
    );
    assert_eq!(kit["status"], "pending");
    let pairs = w
        .store()
        .await
        .pair_states(ERP_ORDERS)
        .await
        .expect("pairs");
    let erp_id = pairs
        .iter()
        .find(|p| p.target_id == id_of(&kit))
        .map(|p| p.source_id.clone())
        .expect("the kit order reached the ERP");

    w.sandbox
        .update(
            "customerp",
            "orders",
            &erp_id,
            json!({ "status": "shipped" }),
        )
        .expect("ship");
    w.run(&[]).await;
    let kit = w.one(
        "customwebshop",
        "orders",
        "email",
        "kit.rep@crm-staff.example",
    );
    assert_eq!(kit["status"], "fulfilled", "the shop shows the shipment");
    let erp = w
        .sandbox
        .record("customerp", "orders", &erp_id)
        .expect("record")
        .expect("exists");
    assert_eq!(erp["status"], "shipped", "the warehouse's shipment is kept");
    assert_eq!(w.run(&[]).await.writes(), 0, "and everything is in sync");

    w.sandbox
        .update(
            "customcrm",
            "users",
            &id_of(&user),
            json!({ "active": false }),
        )
        .expect("deactivate");
    let report = w.run(&[KITS, ERP_ORDERS]).await;
    assert!(report.writes() > 0, "{report:#?}");
    let kit = w.one(
        "customwebshop",
        "orders",
        "email",
        "kit.rep@crm-staff.example",
    );
    assert_eq!(
        kit["status"], "cancelled",
        "deactivating the rep cancels the kit"
    );
}

/// `tether run --no-rate-limits` against simulators that allow anything: the connector's own
/// limiter never makes a request wait (without the flag it paces each system at its file's
/// rate and counts the waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_rate_limits_never_waits_for_the_limiter() {
    let w = world("no-rate-limits", 4).await;
    let output = tether_run(&w, &[])
        .args(["--format", "json"])
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("tether run");
    assert!(output.status.success(), "the run succeeds");
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let systems = report["systems"].as_array().expect("systems");
    let requests: u64 = systems.iter().filter_map(|s| s["requests"].as_u64()).sum();
    assert!(requests > 100, "the run talked to the systems: {report}");
    for system in systems {
        assert_eq!(system["rate_limit_waits"], 0, "no wait: {system}");
    }
}

/// Two `tether run` at once on one store (a cron job overlapping a long initial sync): the
/// store's leases let one sync an identity while the other skips it, so no record is created
/// twice; a later run does what the skipping one left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_on_one_store_create_nothing_twice() {
    let reference = world("overlap-reference", 8).await;
    reference.run(&[]).await;
    reference.run(&[]).await;
    let expected = faults::census(&reference);

    let w = world("overlap", 8).await;
    let mut first = tether_run(&w, &[]).spawn().expect("first run");
    let mut second = tether_run(&w, &[]).spawn().expect("second run");
    let first = first.wait().expect("first ends");
    let second = second.wait().expect("second ends");
    assert!(
        first.code().is_some() && second.code().is_some(),
        "both runs end on their own: {first:?} {second:?}"
    );
    let after = tether_run(&w, &[]).status().expect("a later run");
    assert!(after.success(), "a later run completes: {after:?}");
    let last = w.run(&[]).await;
    assert_eq!(last.writes(), 0, "everything is in sync: {last:#?}");
    assert_eq!(
        faults::census(&w),
        expected,
        "every record exactly once, as after runs one at a time"
    );
}

/// A sandbox whose ERP answers every request `latency` late, as a real API 100 to 300 ms
/// away does.
async fn slow_erp_world(name: &str, latency: Duration) -> World {
    world_with(
        name,
        SandboxOptions {
            faults: FaultSpec {
                latency,
                systems: vec!["customerp".to_owned()],
                ..FaultSpec::default()
            },
            rate_limits: RateLimits::unlimited(),
            ..SandboxOptions::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_slow_system_go_out_side_by_side_within_its_concurrency() {
    let w = slow_erp_world("in-flight", Duration::from_millis(40)).await;
    let names: Vec<String> = (0..30).map(|i| format!("Samtidig {i:02} AS")).collect();
    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let company = w
            .sandbox
            .insert(
                "keap",
                "companies",
                keap_company(name, &format!("post{i}@samtidig.example")),
            )
            .expect("keap company");
        ids.push(id_of(&company));
    }
    let report = w.run(&[COMPANIES]).await;
    assert_eq!(report.mappings[0].created_target, 30, "{report:#?}");
    for name in &names {
        w.one("customerp", "customers", "name", name);
    }
    // The shipped ERP file allows 8 requests in flight: the creates went out side by side,
    // never more than 8 at once.
    let erp = w.sandbox.request_counts()["customerp"];
    assert!(
        (2..=8).contains(&erp.max_in_flight),
        "requests in flight at once: {erp:?}"
    );

    // A third of the companies edited (under the circuit breaker's share): the re-reads
    // before the updates and the updates go out side by side too, each edit arrives once.
    const EDITED: usize = 12;
    for (i, id) in ids.iter().enumerate().take(EDITED) {
        w.sandbox
            .update(
                "keap",
                "companies",
                id,
                json!({ "company_name": names[i], "email_address": format!("ny{i}@samtidig.example") }),
            )
            .expect("edit");
    }
    w.sandbox.reset_request_counts();
    let report = w.run(&[COMPANIES]).await;
    assert_eq!(
        report.mappings[0].updated_target, EDITED as u64,
        "{report:#?}"
    );
    for (i, name) in names.iter().enumerate() {
        let email = if i < EDITED {
            format!("ny{i}@samtidig.example")
        } else {
            format!("post{i}@samtidig.example")
        };
        assert_eq!(
            w.one("customerp", "customers", "name", name)["email"],
            email
        );
    }
    let erp = w.sandbox.request_counts()["customerp"];
    assert!(
        (2..=8).contains(&erp.max_in_flight),
        "requests in flight at once: {erp:?}"
    );
    assert_eq!(w.run(&[COMPANIES]).await.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_known_from_earlier_runs_are_read_again_side_by_side_and_matched() {
    // CRM products the mapping has seen (their SKUs kept) but that did not change since: new
    // shop products with those SKUs are linked to them, the CRM products read again at
    // once, not one after the other.
    let w = world_with(
        "unread-candidates",
        SandboxOptions {
            faults: FaultSpec {
                latency: Duration::from_millis(40),
                systems: vec!["customcrm".to_owned()],
                ..FaultSpec::default()
            },
            rate_limits: RateLimits::unlimited(),
            ..SandboxOptions::default()
        },
    )
    .await;
    let mapping = "customcrm-products-to-customwebshop-products";
    const PRODUCTS: usize = 20;
    for i in 0..PRODUCTS {
        w.sandbox
            .insert(
                "customcrm",
                "products",
                json!({ "name": format!("Sykkelhjelm {i:02}"), "sku": format!("HJELM-{i:02}"),
                        "listPrice": "49.50", "currencyCode": "USD", "isActive": true }),
            )
            .expect("CRM product");
    }
    // A CRM product creates nothing in the shop; the run keeps the SKUs it read.
    let report = w.run(&[mapping]).await;
    assert_eq!(report.writes(), 0, "{report:#?}");
    w.sandbox.advance_clock(Duration::from_secs(600));
    for i in 0..PRODUCTS {
        w.sandbox
            .insert(
                "customwebshop",
                "products",
                json!({ "sku": format!("HJELM-{i:02}"), "title": format!("Sykkelhjelm {i:02}"),
                        "price_cents": 4950, "currency": "USD", "active": true, "inventory": 3 }),
            )
            .expect("shop product");
    }
    w.sandbox.reset_request_counts();
    let report = w.run(&[mapping]).await;
    let m = &report.mappings[0];
    assert_eq!(
        (m.linked, m.created_source, m.created_target, m.parked),
        (PRODUCTS as u64, 0, 0, 0),
        "{report:#?}"
    );
    assert_eq!(
        w.sandbox
            .records("customcrm", "products")
            .expect("records")
            .len(),
        PRODUCTS,
        "nothing created twice"
    );
    let crm = w.sandbox.request_counts()["customcrm"];
    assert!(crm.reads >= PRODUCTS as u64, "{crm:?}");
    assert!(
        crm.max_in_flight >= 2,
        "the CRM products were read one after the other: {crm:?}"
    );
    assert_eq!(w.run(&[mapping]).await.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_never_has_more_requests_in_flight_than_its_concurrency() {
    let w = slow_erp_world("in-flight-cap", Duration::from_millis(150)).await;
    let path = flows().join("systems").join("customerp.yaml");
    let text = std::fs::read_to_string(&path).expect("system file");
    let capped = text.replacen("  concurrency: 8\n", "  concurrency: 2\n", 1);
    assert_ne!(capped, text, "the ERP's concurrency is replaced");
    let (loaded, diagnostics) = tether_engine::spec::load::load_text::<
        tether_engine::spec::system::SystemFile,
    >(&path, capped);
    let file = match loaded {
        Some(loaded) if diagnostics.is_empty() => loaded.spec,
        _ => panic!("customerp.yaml does not load: {diagnostics:?}"),
    };
    let env: std::collections::HashMap<String, String> = w.sandbox.env().into_iter().collect();
    let erp =
        tether_engine::connector::HttpConnector::with_env(&file, &|name| env.get(name).cloned())
            .expect("connector");
    use tether_engine::connector::Connector as _;
    let bodies: Vec<Value> = (0..12)
        .map(|i| json!({ "name": format!("Kapasitet {i}"), "currency": "NOK", "is_active": true }))
        .collect();
    let results = erp.create_many("customers", bodies).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // Results come back in the order the records were sent.
    for (i, result) in results.iter().enumerate() {
        let written = result.as_ref().expect("created");
        let record = w
            .sandbox
            .record("customerp", "customers", &written.id)
            .expect("record")
            .expect("exists");
        assert_eq!(record["name"], format!("Kapasitet {i}"));
    }
    let counts = w.sandbox.request_counts()["customerp"];
    assert_eq!(counts.writes, 12);
    assert_eq!(counts.max_in_flight, 2, "{counts:?}");
}

const ERP_SHOP_CUSTOMERS: &str = "customerp-customers-to-customwebshop-customers";

/// A run in-process with the flows of `dir`, its initial sync read in chunks of `chunk`
/// (0: whole).
pub(crate) async fn run_chunked(w: &World, dir: &Path, mapping: &str, chunk: usize) -> RunReport {
    let env: std::collections::HashMap<String, String> = w.sandbox.env().into_iter().collect();
    let lookup = move |name: &str| env.get(name).cloned();
    let engine = open(
        dir,
        &w.state,
        &lookup,
        OpenOptions {
            ignore_rate_limits: true,
        },
    )
    .await
    .expect("engine opens");
    engine
        .run(&RunOptions {
            mappings: vec![mapping.to_owned()],
            initial_chunk: chunk,
            ..RunOptions::default()
        })
        .await
        .expect("run succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_sync_stopped_midway_goes_on_from_its_last_chunk() {
    const CUSTOMERS: usize = 300;
    const CHUNK: usize = 50;
    // ERP pages of 50, so that each page is a chunk; the shop answers 40 ms late, so the
    // initial sync takes long enough to be stopped halfway.
    let flows = edited_flows("systems/customerp.yaml", "size: 500\n", "size: 50\n");
    let w = world_with(
        "resume",
        SandboxOptions {
            faults: FaultSpec {
                latency: Duration::from_millis(40),
                systems: vec!["customwebshop".to_owned()],
                ..FaultSpec::default()
            },
            rate_limits: RateLimits::unlimited(),
            ..SandboxOptions::default()
        },
    )
    .await;
    for i in 0..CUSTOMERS {
        w.sandbox
            .insert(
                "customerp",
                "customers",
                json!({ "name": format!("Gjenoppta {i:03} AS"), "email": format!("k{i}@gjenoppta.example"),
                        "currency": "NOK", "is_active": true,
                        "billing_address": { "street": "Torget 1", "city": "Oslo", "postal_code": "0150", "country": "NO" } }),
            )
            .expect("ERP customer");
        // Ten seconds apart, as records entered over time are: the read's lookback (60 s)
        // covers a few of them, not all.
        w.sandbox.advance_clock(Duration::from_secs(10));
    }
    let shop_count = |w: &World| {
        w.sandbox
            .records("customwebshop", "customers")
            .expect("records")
            .len()
    };

    // `tether run` stopped by SIGKILL once 120 customers reached the shop.
    let mut child = tether_run_with(&w, &flows.0, &[ERP_SHOP_CUSTOMERS])
        .args(["--initial-chunk", &CHUNK.to_string()])
        .spawn()
        .expect("tether run starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while shop_count(&w) < 120 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("kill");
    let _ = child.wait();
    let written = shop_count(&w);
    assert!(
        (120..CUSTOMERS).contains(&written),
        "the run is stopped midway: {written} of {CUSTOMERS} in the shop"
    );

    // The next run reads the source from the last chunk written, not from the beginning:
    // at most the chunk that was being written, the rest, and the lookback's few.
    let report = run_chunked(&w, &flows.0, ERP_SHOP_CUSTOMERS, CHUNK).await;
    let read = report.mappings[0].read_source as usize;
    let committed_chunks = (written / CHUNK).saturating_sub(1) * CHUNK;
    assert!(
        read <= CUSTOMERS - committed_chunks + 10,
        "read {read} of {CUSTOMERS} again after {written} were written: {report:#?}"
    );
    assert!(read < CUSTOMERS, "{report:#?}");
    // Every customer exactly once in the shop.
    let emails: Vec<String> = w
        .sandbox
        .records("customwebshop", "customers")
        .expect("records")
        .iter()
        .map(|c| c["email"].as_str().expect("email").to_owned())
        .collect();
    let unique: std::collections::HashSet<&String> = emails.iter().collect();
    assert_eq!(
        (emails.len(), unique.len()),
        (CUSTOMERS, CUSTOMERS),
        "each ERP customer once in the shop"
    );
    assert_eq!(
        run_chunked(&w, &flows.0, ERP_SHOP_CUSTOMERS, CHUNK)
            .await
            .writes(),
        0
    );
}

/// Keap companies have no incremental read: their initial sync is listed in chunks all the
/// same, each chunk written before the next page is read, once; an ERP customer that
/// matches a company of a later chunk is linked to it, not created in Keap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_listed_whole_is_synced_in_chunks_once_and_matched_across_chunks() {
    // Pages of 10: five full ones and a short one that ends the listing.
    const COUNT: usize = 55;
    let flows = edited_flows("systems/keap.yaml", "size: 1000\n", "size: 10\n");
    let w = world("listing-chunks", 0).await;
    for i in 0..COUNT {
        w.sandbox
            .insert(
                "keap",
                "companies",
                keap_company(&format!("Bolk {i:03} AS"), &format!("b{i}@bolk.example")),
            )
            .expect("keap company");
    }
    // The ERP already holds the last few, which the first chunks cannot match.
    for i in COUNT - 5..COUNT {
        w.sandbox
            .insert("customerp", "customers", json!({ "name": format!("Bolk {i:03} AS"), "email": format!("b{i}@bolk.example"), "currency": "NOK", "is_active": true }))
            .expect("erp customer");
    }
    w.sandbox.reset_request_counts();
    let report = run_chunked(&w, &flows.0, COMPANIES, 20).await;
    let companies = &report.mappings[0];
    assert_eq!(companies.created_target, (COUNT - 5) as u64, "{report:#?}");
    assert_eq!(
        companies.created_source, 0,
        "nothing comes back to Keap: {report:#?}"
    );
    assert_eq!(companies.linked, 5, "{report:#?}");
    let keap = w.sandbox.request_counts()["keap"];
    // Each pass lists the six pages once (a pass that wrote to Keap makes another), with
    // no second listing for deletions; a company is read again just before its update.
    assert_eq!(
        keap.reads,
        6 * report.passes as u64 + keap.writes,
        "{keap:#?} {report:#?}"
    );
    let names: std::collections::HashSet<String> = w
        .sandbox
        .records("customerp", "customers")
        .expect("records")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names.len(), COUNT, "each company once in the ERP");
    assert_eq!(
        w.sandbox
            .records("customerp", "customers")
            .expect("records")
            .len(),
        COUNT
    );
    assert_eq!(run_chunked(&w, &flows.0, COMPANIES, 20).await.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_sync_in_chunks_matches_records_of_later_chunks_and_creates_nothing_twice() {
    // Both sides hold the same customers, the shop's in the opposite order, and records
    // of their own: every shop customer that matches an ERP customer of a later chunk is
    // linked to it, not created in the ERP.
    let flows = edited_flows("systems/customerp.yaml", "size: 500\n", "size: 50\n");
    let w = world("chunks-match", 0).await;
    let address =
        json!({ "street": "Torget 1", "city": "Oslo", "postal_code": "0150", "country": "NO" });
    for i in 0..200 {
        w.sandbox
            .insert(
                "customerp",
                "customers",
                json!({ "name": format!("Felles {i:03} AS"), "email": format!("f{i}@felles.example"),
                        "currency": "NOK", "is_active": true, "billing_address": address }),
            )
            .expect("ERP customer");
    }
    for i in (0..200).rev().chain(200..230) {
        w.sandbox
            .insert(
                "customwebshop",
                "customers",
                json!({ "email": format!("f{i}@felles.example"), "company": format!("Felles {i:03} AS"),
                        "first_name": "Kari", "last_name": "Nordmann", "marketing_opt_in": false,
                        "addresses": [{ "type": "billing", "line1": "Torget 1", "city": "Oslo", "zip": "0150", "country": "NO" }] }),
            )
            .expect("shop customer");
    }
    let report = run_chunked(&w, &flows.0, ERP_SHOP_CUSTOMERS, 50).await;
    let m = &report.mappings[0];
    assert_eq!(
        (m.linked, m.created_source, m.created_target),
        (200, 30, 0),
        "{report:#?}"
    );
    assert_eq!(
        w.sandbox
            .records("customerp", "customers")
            .expect("records")
            .len(),
        230
    );
    assert_eq!(
        w.sandbox
            .records("customwebshop", "customers")
            .expect("records")
            .len(),
        230
    );
    assert_eq!(
        run_chunked(&w, &flows.0, ERP_SHOP_CUSTOMERS, 50)
            .await
            .writes(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_with_a_record_that_is_already_another_customer_is_parked_not_merged() {
    // The ERP's "Nordlys Holding" and the shop login with its email are one customer.
    let w = world("already-another", 0).await;
    let address =
        json!({ "street": "Torget 1", "city": "Oslo", "postal_code": "0150", "country": "NO" });
    w.sandbox
        .insert(
            "customerp",
            "customers",
            json!({ "name": "Nordlys Holding", "email": "post@nordlys.example",
                    "currency": "NOK", "is_active": true, "billing_address": address }),
        )
        .expect("ERP customer");
    w.sandbox
        .insert(
            "customwebshop",
            "customers",
            json!({ "email": "post@nordlys.example", "company": "Nordlys Holding",
                    "first_name": "Kari", "last_name": "Nordmann", "marketing_opt_in": false,
                    "addresses": [{ "type": "billing", "line1": "Torget 1", "city": "Oslo", "zip": "0150", "country": "NO" }] }),
        )
        .expect("shop customer");
    let report = w.run(&[ERP_SHOP_CUSTOMERS]).await;
    assert_eq!(report.mappings[0].linked, 1, "{report:#?}");
    // Keap's "Nordlys AS" (matched to the ERP by name: none) becomes another ERP customer.
    let company = w
        .sandbox
        .insert(
            "keap",
            "companies",
            keap_company("Nordlys AS", "post@nordlys.example"),
        )
        .expect("Keap company");
    let report = w.run(&[COMPANIES]).await;
    assert_eq!(report.mappings[0].created_target, 1, "{report:#?}");

    // Keap to the shop: the company's email finds the shop login, but the two are already
    // different customers; neither is merged into the other nor created again.
    let mapping = "keap-companies-to-customwebshop-customers";
    let report = w.run(&[mapping]).await;
    let m = &report.mappings[0];
    assert_eq!(
        (m.parked, m.linked, m.created_source, m.created_target),
        (1, 0, 0, 0),
        "{report:#?}"
    );
    let parked = w.store().await.parked(Some(mapping)).await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].record_id, id_of(&company));
    assert!(
        parked[0].reason.contains("already different"),
        "{}",
        parked[0].reason
    );
    assert_eq!(
        w.find(
            "customwebshop",
            "customers",
            "email",
            "post@nordlys.example"
        )
        .len(),
        1
    );
    assert_eq!(
        w.one(
            "customwebshop",
            "customers",
            "email",
            "post@nordlys.example"
        )["company"],
        "Nordlys Holding"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_sync_in_chunks_reads_each_page_of_its_source_once() {
    // 300 ERP customers made in one burst (an import): every one inside the read's lookback
    // of the others. The chunks go on from where the one before stopped, so the source is
    // read once, page by page, not again from the lookback for every chunk.
    const CUSTOMERS: usize = 300;
    let flows = edited_flows("systems/customerp.yaml", "size: 500\n", "size: 50\n");
    let w = world("chunks-once", 0).await;
    for i in 0..CUSTOMERS {
        w.sandbox
            .insert(
                "customerp",
                "customers",
                json!({ "name": format!("Import {i:03} AS"), "email": format!("i{i}@import.example"),
                        "currency": "NOK", "is_active": true,
                        "billing_address": { "street": "Torget 1", "city": "Oslo", "postal_code": "0150", "country": "NO" } }),
            )
            .expect("ERP customer");
    }
    let before = w.sandbox.request_counts()["customerp"];
    let report = run_chunked(&w, &flows.0, ERP_SHOP_CUSTOMERS, 50).await;
    let erp = w.sandbox.request_counts()["customerp"];
    let m = &report.mappings[0];
    assert_eq!(
        (m.read_source, m.created_target),
        (CUSTOMERS as u64, CUSTOMERS as u64),
        "{report:#?}"
    );
    // Six pages of 50, the deletion feed and nothing else: no page read twice.
    let reads = erp.reads - before.reads;
    assert!(
        reads <= (CUSTOMERS / 50) as u64 + 2,
        "{reads} ERP reads for {CUSTOMERS} customers in pages of 50"
    );
    let shop = w
        .sandbox
        .records("customwebshop", "customers")
        .expect("records");
    let emails: std::collections::HashSet<&str> = shop
        .iter()
        .map(|c| c["email"].as_str().expect("email"))
        .collect();
    assert_eq!((shop.len(), emails.len()), (CUSTOMERS, CUSTOMERS));
    assert_eq!(
        run_chunked(&w, &flows.0, ERP_SHOP_CUSTOMERS, 50)
            .await
            .writes(),
        0
    );
}
