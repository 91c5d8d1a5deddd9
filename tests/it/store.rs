//! The state store as the engine meets it, on both backends: every test below runs once
//! against SQLite (a fresh file) and once against PostgreSQL (a fresh schema of the database
//! named by `TETHER_TEST_POSTGRES`; without that variable the PostgreSQL runs say they were
//! skipped and pass).

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tether_engine::store::{
    Choice, ConflictState, CursorKey, GlobalId, HistoryAction, HistoryChange, IntentState,
    LinkConflict, LinkOrigin, NewConflict, NewHistory, NewIntent, NewRun, PARKED_ATTEMPTS_KEPT,
    PARKED_VALUE_MAX_CHARS, PairState, Park, RecordKey, RunOutcome, SCHEMA_VERSION, Side, SideSeen,
    Store, StoreError, StoreUrl,
};

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty store location of one backend, removed again when dropped.
struct TestDb {
    url: StoreUrl,
    place: Place,
}

enum Place {
    SqliteDir(PathBuf),
    PostgresSchema { admin_url: String, schema: String },
}

fn unique_name(prefix: &str) -> String {
    let suffix: String = std::iter::repeat_with(fastrand::lowercase)
        .take(12)
        .collect();
    format!("{prefix}_{suffix}")
}

impl TestDb {
    /// A new location, or `None` (after saying so) when the backend is not configured.
    async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                // A folder that does not exist yet: opening the store must create it.
                let dir = std::env::temp_dir().join(unique_name("tether-store-test"));
                let url = StoreUrl::parse(&format!(
                    "sqlite://{}",
                    dir.join("nested/state.db").display()
                ))
                .expect("temporary path is a valid location");
                Some(TestDb {
                    url,
                    place: Place::SqliteDir(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = crate::test_postgres()?;
                let schema = unique_name("tether_test");
                let admin = PgPool::connect(&admin_url)
                    .await
                    .expect("test PostgreSQL reachable");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&admin)
                    .await
                    .expect("test schema created");
                admin.close().await;
                let separator = if admin_url.contains('?') { '&' } else { '?' };
                let url = StoreUrl::parse(&format!(
                    "{admin_url}{separator}options[search_path]={schema}"
                ))
                .expect("test URL is a valid location");
                Some(TestDb {
                    url,
                    place: Place::PostgresSchema { admin_url, schema },
                })
            }
        }
    }

    async fn open(&self) -> Store {
        Store::open(&self.url).await.expect("store opens")
    }

    /// Marks a migration this build does not have as applied, as a newer tether would.
    async fn record_future_migration(&self, version: i64) {
        const SQL: &str = "INSERT INTO _sqlx_migrations \
            (version, description, success, checksum, execution_time) \
            VALUES ($1, 'from a newer tether', TRUE, $2, 0)";
        let checksum = vec![0u8; 48];
        match &self.url {
            StoreUrl::Sqlite(path) => {
                let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
                    .await
                    .expect("raw SQLite connection");
                let query = sqlx::query(SQL).bind(version).bind(checksum);
                query.execute(&pool).await.expect("raw insert");
                pool.close().await;
            }
            StoreUrl::Postgres(url) => {
                let pool = PgPool::connect(url)
                    .await
                    .expect("raw PostgreSQL connection");
                let query = sqlx::query(SQL).bind(version).bind(checksum);
                query.execute(&pool).await.expect("raw insert");
                pool.close().await;
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.place {
            Place::SqliteDir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Place::PostgresSchema { admin_url, schema } => {
                let (admin_url, schema) = (admin_url.clone(), schema.clone());
                // Dropping runs outside any runtime's async context, on a thread of its own.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("cleanup runtime");
                    runtime.block_on(async move {
                        if let Ok(admin) = PgPool::connect(&admin_url).await {
                            let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
                            admin.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// Declares each test once per backend: `sqlite::name` and `postgres::name`.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = super::TestDb::new(super::Backend::Sqlite).await {
                        super::$name(db).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = super::TestDb::new(super::Backend::Postgres).await {
                        super::$name(db).await;
                    }
                }
            )*
        }
    };
}

store_tests!(
    opens_a_fresh_store_and_reopens_it_with_its_data,
    refuses_a_store_written_by_a_newer_tether,
    two_processes_opening_a_fresh_store_both_succeed,
    links_resolve_from_either_end,
    a_second_link_is_reported_as_a_conflict,
    pair_states_round_trip,
    cursors_are_kept_per_mapping_side_and_entity,
    create_intents_stay_open_until_resolved,
    parked_records_count_their_attempts,
    parked_records_are_set_aside_and_keep_their_latest_attempts,
    the_change_log_is_found_by_global_id_and_by_record_and_pruned_by_age,
    unlinked_records_are_remembered_until_removed,
    conflicts_are_listed_newest_first,
    runs_are_recorded_and_found_per_mapping,
    a_dropped_transaction_writes_nothing,
    a_committed_transaction_writes_everything_at_once,
    leases_are_exclusive_and_expire,
    concurrent_lease_requests_have_one_winner,
    concurrent_transactions_all_land,
    status_sums_up_each_mapping,
    batch_writes_leave_what_one_by_one_writes_leave,
);

fn record(system: &str, entity: &str, id: &str) -> RecordKey {
    RecordKey::new(system, entity, id)
}

/// A time the database stores exactly (microseconds).
fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_750_000_000_000_000 + seconds * 1_000_000 + 123)
        .expect("valid time")
}

async fn opens_a_fresh_store_and_reopens_it_with_its_data(db: TestDb) {
    let store = db.open().await;
    assert!(store.status().await.expect("status").is_empty());
    let global_id = store.new_global_id("customer").await.expect("global id");
    let keap = record("keap", "companies", "17");
    store
        .link("customer", &global_id, &keap, LinkOrigin::Create)
        .await
        .expect("link");
    store.close().await;

    // Opening an existing store applies nothing twice and keeps the data.
    let store = db.open().await;
    let link = store
        .link_by_record("customer", &keap)
        .await
        .expect("lookup")
        .expect("link survived reopening");
    assert_eq!(link.global_id, global_id);
    store.close().await;
    let store = db.open().await;
    assert!(
        store
            .link_by_record("customer", &keap)
            .await
            .expect("lookup")
            .is_some()
    );
    store.close().await;
    if let Some(path) = db.url.sqlite_path() {
        assert!(path.exists(), "the store file and its folders were created");
    }
}

async fn refuses_a_store_written_by_a_newer_tether(db: TestDb) {
    db.open().await.close().await;
    db.record_future_migration(9999).await;
    let error = Store::open(&db.url).await.expect_err("newer store refused");
    match &error {
        StoreError::SchemaTooNew {
            found, supported, ..
        } => {
            assert_eq!(*found, 9999);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(
        error.to_string().contains("newer than this tether knows"),
        "{error}"
    );
}

async fn two_processes_opening_a_fresh_store_both_succeed(db: TestDb) {
    // Both race to create the schema; the loser must see the winner's and go on.
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { Store::open(&url).await })
        })
        .collect();
    for open in opens {
        let store = open.await.expect("task").expect("concurrent open succeeds");
        store.new_global_id("customer").await.expect("store usable");
        store.close().await;
    }
}

async fn links_resolve_from_either_end(db: TestDb) {
    let store = db.open().await;
    let global_id = store.new_global_id("customer").await.expect("global id");
    let keap = record("keap", "companies", "17");
    let erp = record("customerp", "customers", "C-9");
    store
        .link("customer", &global_id, &keap, LinkOrigin::MatchKey)
        .await
        .expect("link keap");
    let created = store
        .link("customer", &global_id, &erp, LinkOrigin::Create)
        .await
        .expect("link erp");
    assert_eq!(created.origin, LinkOrigin::Create);

    let by_record = store
        .link_by_record("customer", &keap)
        .await
        .expect("lookup")
        .expect("keap linked");
    assert_eq!(by_record.global_id, global_id);
    assert_eq!(by_record.origin, LinkOrigin::MatchKey);
    let counterpart = store
        .link_by_global("customer", &global_id, "customerp", "customers")
        .await
        .expect("lookup")
        .expect("counterpart linked");
    assert_eq!(counterpart.record, erp);
    assert_eq!(counterpart, created);
    let all = store
        .links_of_global("customer", &global_id)
        .await
        .expect("links");
    assert_eq!(all.len(), 2);
    // The same record under another identity type is another link.
    assert!(
        store
            .link_by_record("contact", &keap)
            .await
            .expect("lookup")
            .is_none()
    );

    // Many records at once, across more than one IN list.
    let mut tx = store.transaction().await.expect("tx");
    let mut ids = Vec::new();
    for n in 0..1_100 {
        let id = format!("bulk-{n}");
        let gid = tx.new_global_id("customer").await.expect("global id");
        tx.link(
            "customer",
            &gid,
            &record("keap", "companies", &id),
            LinkOrigin::Create,
        )
        .await
        .expect("bulk link");
        if n % 2 == 0 {
            tx.link(
                "customer",
                &gid,
                &record("customerp", "customers", &format!("erp-{n}")),
                LinkOrigin::Create,
            )
            .await
            .expect("bulk counterpart");
        }
        ids.push(id);
    }
    tx.commit().await.expect("commit");
    ids.push("never-linked".to_owned());
    let found = store
        .links_by_records("customer", "keap", "companies", &ids)
        .await
        .expect("bulk lookup");
    assert_eq!(found.len(), 1_100);
    assert!(found.iter().all(|link| link.record.id.starts_with("bulk-")));
    // The counterparts of many records in another entity, both ways.
    ids.push(keap.id.clone());
    let mut counterparts = store
        .linked_counterparts(
            "customer",
            "keap",
            "companies",
            "customerp",
            "customers",
            &ids,
        )
        .await
        .expect("counterparts");
    counterparts.sort();
    assert_eq!(counterparts.len(), 551);
    assert!(counterparts.contains(&("bulk-1098".to_owned(), "erp-1098".to_owned())));
    assert!(counterparts.contains(&(keap.id.clone(), erp.id.clone())));
    assert!(!counterparts.iter().any(|(from, _)| from == "bulk-1"));
    let back = store
        .linked_counterparts(
            "customer",
            "customerp",
            "customers",
            "keap",
            "companies",
            &[erp.id.clone(), "erp-4".to_owned(), "erp-5".to_owned()],
        )
        .await
        .expect("counterparts back");
    assert_eq!(back.len(), 2);
    assert!(back.contains(&("erp-4".to_owned(), "bulk-4".to_owned())));

    assert!(store.unlink("customer", &keap).await.expect("unlink"));
    assert!(!store.unlink("customer", &keap).await.expect("unlink again"));
    assert!(
        store
            .link_by_record("customer", &keap)
            .await
            .expect("lookup")
            .is_none()
    );
    // Once unlinked, the record may link to another global id.
    let other = store.new_global_id("customer").await.expect("global id");
    store
        .link("customer", &other, &keap, LinkOrigin::Manual)
        .await
        .expect("relink");
}

async fn a_second_link_is_reported_as_a_conflict(db: TestDb) {
    let store = db.open().await;
    let first = store.new_global_id("customer").await.expect("global id");
    let second = store.new_global_id("customer").await.expect("global id");
    let keap = record("keap", "companies", "17");
    let keap_other = record("keap", "companies", "18");
    let original = store
        .link("customer", &first, &keap, LinkOrigin::MatchKey)
        .await
        .expect("link");

    // Linking the same pair again is harmless and keeps the original link.
    let again = store
        .link("customer", &first, &keap, LinkOrigin::Create)
        .await
        .expect("same link again");
    assert_eq!(again, original);

    // Inside a transaction, the conflicts are errors the engine can handle and go on.
    let mut tx = store.transaction().await.expect("tx");
    match tx
        .link("customer", &second, &keap, LinkOrigin::Create)
        .await
    {
        Err(StoreError::LinkConflict(conflict)) => assert_eq!(
            *conflict,
            LinkConflict::RecordLinked {
                identity: "customer".into(),
                record: keap.clone(),
                existing: first.clone(),
            }
        ),
        other => panic!("expected RecordLinked, got {other:?}"),
    }
    match tx
        .link("customer", &first, &keap_other, LinkOrigin::Create)
        .await
    {
        Err(StoreError::LinkConflict(conflict)) => {
            assert_eq!(
                *conflict,
                LinkConflict::GlobalIdTaken {
                    identity: "customer".into(),
                    global_id: first.clone(),
                    existing: keap.clone(),
                }
            );
            assert!(
                conflict.to_string().contains("keap/companies/17"),
                "{conflict}"
            );
        }
        other => panic!("expected GlobalIdTaken, got {other:?}"),
    }
    tx.link("customer", &second, &keap_other, LinkOrigin::Create)
        .await
        .expect("a free pair links after the conflicts");
    tx.commit().await.expect("commit after conflicts");
    let links = store
        .links_of_global("customer", &first)
        .await
        .expect("links");
    assert_eq!(links.len(), 1, "no duplicate was written");
    assert!(
        store
            .link_by_record("customer", &keap_other)
            .await
            .expect("lookup")
            .is_some()
    );

    let never_created = GlobalId::new("not-a-global-id");
    match store
        .link(
            "customer",
            &never_created,
            &record("keap", "companies", "99"),
            LinkOrigin::Manual,
        )
        .await
    {
        Err(StoreError::UnknownGlobalId { global_id, .. }) => assert_eq!(global_id, never_created),
        other => panic!("expected UnknownGlobalId, got {other:?}"),
    }
}

async fn pair_states_round_trip(db: TestDb) {
    let store = db.open().await;
    let global_id = store.new_global_id("customer").await.expect("global id");
    let mut state = PairState {
        mapping: "companies-to-customers".into(),
        global_id: global_id.clone(),
        source_id: "17".into(),
        target_id: "C-9".into(),
        base: json!({"name": "Acme", "billing_address": {"country": "NL"}, "tags": ["a", "b"]}),
        base_hash: "h1".into(),
        source: SideSeen {
            hash: Some("s1".into()),
            modified_at: Some(at(10)),
        },
        target: SideSeen {
            hash: None,
            modified_at: None,
        },
        synced_at: at(20),
    };
    store.put_pair_state(&state).await.expect("put");
    let read = store
        .pair_state("companies-to-customers", &global_id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(read, state);

    state.base = json!({"name": "Acme B.V."});
    state.base_hash = "h2".into();
    state.target = SideSeen {
        hash: Some("t2".into()),
        modified_at: Some(at(30)),
    };
    state.synced_at = at(40);
    store.put_pair_state(&state).await.expect("upsert");
    let all = store
        .pair_states("companies-to-customers")
        .await
        .expect("list");
    assert_eq!(all, vec![state.clone()]);
    // What a read lets records at rest go by: the hash each side last saw, by record id.
    let ids = ["17".to_owned(), "C-9".to_owned(), "99".to_owned()];
    let seen = |side| store.seen_hashes_of_records("companies-to-customers", side, &ids);
    assert_eq!(
        seen(Side::Source).await.expect("source hashes"),
        vec![("17".to_owned(), "s1".to_owned())]
    );
    assert_eq!(
        seen(Side::Target).await.expect("target hashes"),
        vec![("C-9".to_owned(), "t2".to_owned())]
    );
    state.source.hash = None;
    store.put_pair_state(&state).await.expect("upsert");
    assert!(seen(Side::Source).await.expect("source hashes").is_empty());
    // Pairs synced before a run began: counted for the circuit breaker, and whether there
    // is any (a mapping without one starts with an initial sync).
    for (before, count) in [(at(50), 1), (at(40), 0)] {
        let mapping = "companies-to-customers";
        assert_eq!(
            store
                .count_pairs_synced_before(mapping, before)
                .await
                .expect("count"),
            count
        );
        assert_eq!(
            store
                .any_pair_synced_before(mapping, before)
                .await
                .expect("any"),
            count > 0
        );
    }
    assert!(
        store
            .pair_state("contacts-to-contacts", &global_id)
            .await
            .expect("read")
            .is_none()
    );

    assert!(
        store
            .delete_pair_state("companies-to-customers", &global_id)
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_pair_state("companies-to-customers", &global_id)
            .await
            .expect("delete")
    );
    assert!(
        store
            .pair_states("companies-to-customers")
            .await
            .expect("list")
            .is_empty()
    );
}

async fn cursors_are_kept_per_mapping_side_and_entity(db: TestDb) {
    let store = db.open().await;
    let source = keap_companies_cursor("companies-to-customers");
    let target = CursorKey {
        side: Side::Target,
        system: "customerp".into(),
        entity: "customers".into(),
        ..source.clone()
    };
    assert_eq!(store.cursor(&source).await.expect("read"), None);
    store
        .set_cursor(&source, r#"{"since":"2025-01-01"}"#)
        .await
        .expect("write");
    store.set_cursor(&target, "page-3").await.expect("write");
    store
        .set_cursor(&source, r#"{"since":"2025-02-01"}"#)
        .await
        .expect("overwrite");
    assert_eq!(
        store.cursor(&source).await.expect("read").as_deref(),
        Some(r#"{"since":"2025-02-01"}"#)
    );
    assert_eq!(
        store.cursor(&target).await.expect("read").as_deref(),
        Some("page-3")
    );
    let listed = store.cursors("companies-to-customers").await.expect("list");
    let keys: Vec<&CursorKey> = listed.iter().map(|cursor| &cursor.key).collect();
    assert_eq!(keys, vec![&source, &target]);
    assert!(store.cursors("other").await.expect("list").is_empty());
}

async fn create_intents_stay_open_until_resolved(db: TestDb) {
    let store = db.open().await;
    let global_id = store.new_global_id("customer").await.expect("global id");
    let new_intent = |source_record_id: &str| NewIntent {
        mapping: "companies-to-customers".into(),
        side: Side::Target,
        source_record_id: source_record_id.into(),
        global_id: global_id.clone(),
        match_values: json!({"email": "ops@acme.test"}),
        payload_hash: "p1".into(),
    };
    let first = store
        .record_intent(&new_intent("17"))
        .await
        .expect("record");
    let second = store
        .record_intent(&new_intent("18"))
        .await
        .expect("record");
    assert_eq!(first.state, IntentState::Pending);
    assert_eq!(first.match_values, json!({"email": "ops@acme.test"}));
    assert_ne!(first.id, second.id);

    // What a run after a crash sees: both intents still open, oldest first.
    let open = store
        .open_intents("companies-to-customers")
        .await
        .expect("open");
    let open_ids: Vec<_> = open.iter().map(|intent| intent.id.clone()).collect();
    assert_eq!(open_ids, vec![first.id.clone(), second.id.clone()]);
    assert!(store.open_intents("other").await.expect("open").is_empty());

    store
        .complete_intent(&first.id, "C-100")
        .await
        .expect("done");
    store.abandon_intent(&second.id).await.expect("abandoned");
    assert!(
        store
            .open_intents("companies-to-customers")
            .await
            .expect("open")
            .is_empty()
    );
    let done = store.intent(&first.id).await.expect("read").expect("kept");
    assert_eq!(done.state, IntentState::Done);
    assert_eq!(done.created_record_id.as_deref(), Some("C-100"));
    assert!(done.resolved_at.is_some());
    let abandoned = store.intent(&second.id).await.expect("read").expect("kept");
    assert_eq!(abandoned.state, IntentState::Abandoned);

    match store.complete_intent(&second.id, "C-101").await {
        Err(StoreError::IntentNotPending(id)) => assert_eq!(id, second.id),
        other => panic!("expected IntentNotPending, got {other:?}"),
    }
}

async fn unlinked_records_are_remembered_until_removed(db: TestDb) {
    let store = db.open().await;
    let mapping = "opportunities-to-orders";
    store
        .put_unlinked(mapping, Side::Source, "7", "aaaa")
        .await
        .expect("put");
    store
        .put_unlinked(mapping, Side::Target, "7", "bbbb")
        .await
        .expect("put");
    store
        .put_unlinked("other-mapping", Side::Source, "7", "cccc")
        .await
        .expect("put");
    // Remembering a record again replaces its content hash.
    let mut tx = store.transaction().await.expect("tx");
    tx.put_unlinked(mapping, Side::Source, "7", "dddd")
        .await
        .expect("put again");
    tx.commit().await.expect("commit");
    let unlinked = store.unlinked(mapping).await.expect("unlinked");
    assert_eq!(
        unlinked
            .iter()
            .map(|u| (u.side, u.record_id.as_str(), u.content_hash.as_str()))
            .collect::<Vec<_>>(),
        [(Side::Source, "7", "dddd"), (Side::Target, "7", "bbbb")]
    );
    assert!(unlinked.iter().all(|u| u.mapping == mapping));
    assert!(
        store
            .remove_unlinked(mapping, Side::Source, "7")
            .await
            .expect("remove")
    );
    assert!(
        !store
            .remove_unlinked(mapping, Side::Source, "7")
            .await
            .expect("remove again")
    );
    assert_eq!(store.unlinked(mapping).await.expect("unlinked").len(), 1);
    assert_eq!(
        store
            .unlinked("other-mapping")
            .await
            .expect("unlinked")
            .len(),
        1
    );
}

async fn parked_records_count_their_attempts(db: TestDb) {
    let store = db.open().await;
    let long_value = "é".repeat(PARKED_VALUE_MAX_CHARS + 50);
    let park = Park {
        mapping: "companies-to-customers".into(),
        side: Side::Source,
        record_id: "17".into(),
        reason: "required field is empty".into(),
        field: Some("name".into()),
        value: Some(long_value),
        deleting: false,
        retry_at: None,
    };
    let first = store.park(&park).await.expect("park");
    assert_eq!(first.attempts, 1);
    assert_eq!(
        first.value.as_deref().map(|value| value.chars().count()),
        Some(PARKED_VALUE_MAX_CHARS)
    );
    let again = store
        .park(&Park {
            reason: "target refused: 422".into(),
            ..park.clone()
        })
        .await
        .expect("park again");
    assert_eq!(again.attempts, 2);
    assert_eq!(again.reason, "target refused: 422");
    assert_eq!(again.first_parked_at, first.first_parked_at);
    assert!(again.last_tried_at >= first.last_tried_at);

    store
        .park(&Park {
            record_id: "C-1".into(),
            side: Side::Target,
            field: None,
            value: None,
            ..park.clone()
        })
        .await
        .expect("park target record");
    store
        .park(&Park {
            mapping: "contacts-to-contacts".into(),
            ..park.clone()
        })
        .await
        .expect("park in another mapping");

    let all = store.parked(None).await.expect("list all");
    assert_eq!(all.len(), 3);
    let one_mapping = store
        .parked(Some("companies-to-customers"))
        .await
        .expect("list");
    assert_eq!(one_mapping.len(), 2);
    assert_eq!(
        store.parked_counts().await.expect("counts"),
        vec![
            ("companies-to-customers".to_owned(), 2),
            ("contacts-to-contacts".to_owned(), 1)
        ]
    );

    assert!(
        store
            .unpark("companies-to-customers", Side::Source, "17")
            .await
            .expect("unpark")
    );
    assert!(
        !store
            .unpark("companies-to-customers", Side::Source, "17")
            .await
            .expect("unpark")
    );
    // Parked again after being unparked, the count starts over.
    assert_eq!(store.park(&park).await.expect("park").attempts, 1);
}

async fn parked_records_are_set_aside_and_keep_their_latest_attempts(db: TestDb) {
    let store = db.open().await;
    let park = |reason: String| Park {
        mapping: "orders".into(),
        side: Side::Source,
        record_id: "801".into(),
        reason,
        field: None,
        value: None,
        deleting: false,
        retry_at: None,
    };
    for n in 0..PARKED_ATTEMPTS_KEPT + 3 {
        store.park(&park(format!("try {n}"))).await.expect("park");
        // Distinct times, as runs have.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let attempts = store.parked_attempts(None).await.expect("attempts");
    let reasons: Vec<&str> = attempts.iter().map(|a| a.reason.as_str()).collect();
    let latest: Vec<String> = (3..PARKED_ATTEMPTS_KEPT + 3)
        .map(|n| format!("try {n}"))
        .collect();
    assert_eq!(reasons, latest, "the latest attempts, oldest first");
    let parked = store.parked(None).await.expect("parked");
    assert_eq!(parked[0].attempts as usize, PARKED_ATTEMPTS_KEPT + 3);
    assert!(!parked[0].is_skipped());

    assert!(
        store
            .skip_parked("orders", Side::Source, "801", "hash-1")
            .await
            .expect("skip")
    );
    assert!(
        !store
            .skip_parked("orders", Side::Source, "802", "hash-1")
            .await
            .expect("skip"),
        "only parked records can be set aside"
    );
    let aside = store.parked(Some("orders")).await.expect("parked");
    assert!(aside[0].is_skipped());
    assert_eq!(aside[0].skipped_hash.as_deref(), Some("hash-1"));
    assert!(
        store
            .unskip_parked("orders", Side::Source, "801")
            .await
            .expect("unskip")
    );
    assert!(
        !store
            .unskip_parked("orders", Side::Source, "801")
            .await
            .expect("unskip"),
        "no longer aside"
    );
    // Parked again after being set aside: it was tried because it changed; the mark goes.
    store
        .skip_parked("orders", Side::Source, "801", "hash-2")
        .await
        .expect("skip");
    let again = store.park(&park("changed".into())).await.expect("park");
    assert!(
        !again.is_skipped() && again.skipped_hash.is_none(),
        "{again:#?}"
    );

    assert!(
        store
            .unpark("orders", Side::Source, "801")
            .await
            .expect("unpark")
    );
    assert!(
        store
            .parked_attempts(Some("orders"))
            .await
            .expect("attempts")
            .is_empty(),
        "attempts go with the record"
    );
}

async fn the_change_log_is_found_by_global_id_and_by_record_and_pruned_by_age(db: TestDb) {
    let store = db.open().await;
    let global_id = store.new_global_id("customer").await.expect("global id");
    let write = |record: RecordKey, action, field: &str, new: serde_json::Value| NewHistory {
        run_id: None,
        mapping: "companies-to-customers".into(),
        identity: "customer".into(),
        global_id: global_id.clone(),
        record,
        action,
        changes: vec![HistoryChange {
            field: field.into(),
            old: None,
            new: Some(new),
            why: "because".into(),
        }],
    };
    let keap = record("keap", "companies", "17");
    let erp = record("customerp", "customers", "4");
    store
        .record_history(&write(
            erp.clone(),
            HistoryAction::Create,
            "name",
            json!("Acme"),
        ))
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(2)).await;
    store
        .record_history(&write(
            keap.clone(),
            HistoryAction::Update,
            "phone",
            json!({"n": 1}),
        ))
        .await
        .expect("append");
    let all = store
        .history_of_global("customer", &global_id)
        .await
        .expect("history");
    let actions: Vec<HistoryAction> = all.iter().map(|e| e.action).collect();
    assert_eq!(actions, vec![HistoryAction::Create, HistoryAction::Update]);
    assert_eq!(all[1].changes[0].new, Some(json!({"n": 1})));
    assert_eq!(all[1].record, keap);
    let of_erp = store.history_of_record(&erp).await.expect("history");
    assert_eq!(of_erp, vec![all[0].clone()]);

    let removed = store.prune_history(all[1].at).await.expect("prune");
    assert_eq!(removed, 1, "only what is older than the retention goes");
    let left = store
        .history_of_global("customer", &global_id)
        .await
        .expect("history");
    assert_eq!(left, vec![all[1].clone()]);
}

async fn conflicts_are_listed_newest_first(db: TestDb) {
    let store = db.open().await;
    let run = store
        .start_run(&NewRun {
            mappings: vec![
                "companies-to-customers".into(),
                "contacts-to-contacts".into(),
            ],
            ..NewRun::default()
        })
        .await
        .expect("run");
    let global_id = store.new_global_id("customer").await.expect("global id");
    let mut recorded = Vec::new();
    for (mapping, field) in [
        ("companies-to-customers", "name"),
        ("companies-to-customers", "email"),
        ("contacts-to-contacts", "phone"),
    ] {
        let conflict = store
            .record_conflict(&NewConflict {
                run_id: run.id.clone(),
                mapping: mapping.into(),
                global_id: global_id.clone(),
                field: field.into(),
                source_value: json!("from keap"),
                target_value: json!({"v": 2}),
                base_value: (field != "phone").then(|| json!(null)),
                resolution: "newest-wins".into(),
                winner: Some(Side::Target),
            })
            .await
            .expect("record conflict");
        recorded.push(conflict);
        // Distinct timestamps make "newest first" observable.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let latest_two = store.recent_conflicts(None, 2).await.expect("list");
    let fields: Vec<&str> = latest_two.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, vec!["phone", "email"]);
    let of_mapping = store
        .recent_conflicts(Some("companies-to-customers"), 10)
        .await
        .expect("list");
    assert_eq!(of_mapping, vec![recorded[1].clone(), recorded[0].clone()]);
    assert_eq!(of_mapping[0].base_value, Some(json!(null)));
    assert_eq!(latest_two[0].base_value, None);
    assert_eq!(of_mapping[0].target_value, json!({"v": 2}));
    assert_eq!(of_mapping[0].run_id, run.id);
    assert!(
        of_mapping
            .iter()
            .all(|c| c.state == ConflictState::Decided && c.choice.is_none())
    );

    // Held for a person, resolved once, then applied once.
    let held = store
        .record_conflict(&NewConflict {
            run_id: run.id.clone(),
            mapping: "companies-to-customers".into(),
            global_id: global_id.clone(),
            field: "city".into(),
            source_value: json!("Oslo"),
            target_value: json!("Bergen"),
            base_value: Some(json!("Trondheim")),
            resolution: "held".into(),
            winner: None,
        })
        .await
        .expect("record held conflict");
    assert_eq!((held.state, held.winner), (ConflictState::Held, None));
    let open = store
        .open_conflicts(Some("companies-to-customers"))
        .await
        .expect("open");
    assert_eq!(open, vec![held.clone()]);
    let choice = Choice::Value(json!({"city": "Stavanger"}));
    let resolved = store
        .resolve_conflict(&held.id, &choice)
        .await
        .expect("resolve")
        .expect("it was held");
    assert_eq!(resolved.state, ConflictState::Resolved);
    assert_eq!(resolved.choice, Some(choice.clone()));
    assert!(resolved.resolved_at.is_some());
    assert_eq!(
        store
            .resolve_conflict(&held.id, &Choice::Source)
            .await
            .expect("resolve"),
        None,
        "resolved once"
    );
    assert_eq!(
        store
            .conflict(&held.id)
            .await
            .expect("read")
            .map(|c| c.choice),
        Some(Some(choice))
    );
    assert!(store.apply_conflict(&held.id).await.expect("apply"));
    assert!(!store.apply_conflict(&held.id).await.expect("apply"));
    assert!(store.open_conflicts(None).await.expect("open").is_empty());
    let applied = store.conflict(&held.id).await.expect("read").expect("kept");
    assert_eq!(applied.state, ConflictState::Applied);
    assert!(applied.applied_at.is_some());
}

async fn runs_are_recorded_and_found_per_mapping(db: TestDb) {
    let store = db.open().await;
    let first = store
        .start_run(&NewRun {
            flows: vec!["keap-to-customerp".into()],
            mappings: vec![
                "companies-to-customers".into(),
                "contacts-to-contacts".into(),
            ],
            worker: Some("worker-a".into()),
            trigger: Some("resync".into()),
        })
        .await
        .expect("start");
    assert_eq!(first.trigger.as_deref(), Some("resync"));
    assert_eq!(first.outcome, None);
    assert_eq!(first.worker.as_deref(), Some("worker-a"));
    let summary = json!({"created": 3, "updated": 1, "parked": 0});
    let finished = store
        .finish_run(&first.id, RunOutcome::Ok, &summary)
        .await
        .expect("finish");
    assert_eq!(finished.outcome, Some(RunOutcome::Ok));
    assert_eq!(finished.summary, Some(summary.clone()));
    assert!(finished.finished_at.is_some());
    match store
        .finish_run(&first.id, RunOutcome::Failed, &json!({}))
        .await
    {
        Err(StoreError::RunNotOpen(id)) => assert_eq!(id, first.id),
        other => panic!("expected RunNotOpen, got {other:?}"),
    }

    tokio::time::sleep(Duration::from_millis(2)).await;
    let second = store
        .start_run(&NewRun {
            flows: vec!["keap-to-customerp".into()],
            mappings: vec!["contacts-to-contacts".into()],
            worker: None,
            trigger: None,
        })
        .await
        .expect("start");
    store
        .finish_run(
            &second.id,
            RunOutcome::CircuitBreaker,
            &json!({"failures": 10}),
        )
        .await
        .expect("finish");

    let last_companies = store
        .last_run("companies-to-customers")
        .await
        .expect("last")
        .expect("a run covered it");
    assert_eq!(last_companies.id, first.id);
    assert_eq!(last_companies.flows, vec!["keap-to-customerp".to_owned()]);
    let last_contacts = store
        .last_run("contacts-to-contacts")
        .await
        .expect("last")
        .expect("a run covered it");
    assert_eq!(last_contacts.id, second.id);
    assert_eq!(last_contacts.outcome, Some(RunOutcome::CircuitBreaker));
    assert!(store.last_run("never-ran").await.expect("last").is_none());

    let recent = store.recent_runs(10).await.expect("recent");
    let ids: Vec<_> = recent.iter().map(|run| run.id.clone()).collect();
    assert_eq!(ids, vec![second.id.clone(), first.id.clone()]);
    assert_eq!(store.run(&first.id).await.expect("read"), Some(finished));
}

async fn a_dropped_transaction_writes_nothing(db: TestDb) {
    let store = db.open().await;
    let run = store.start_run(&NewRun::default()).await.expect("run");
    let keap = record("keap", "companies", "17");
    let cursor = keap_companies_cursor("companies-to-customers");
    let global_id;
    {
        let mut tx = store.transaction().await.expect("tx");
        global_id = tx.new_global_id("customer").await.expect("global id");
        tx.link("customer", &global_id, &keap, LinkOrigin::Create)
            .await
            .expect("link");
        tx.put_pair_state(&pair_state("companies-to-customers", &global_id))
            .await
            .expect("pair");
        tx.set_cursor(&cursor, "page-2").await.expect("cursor");
        tx.record_intent(&target_intent("companies-to-customers", &global_id))
            .await
            .expect("intent");
        tx.park(&parked_source("companies-to-customers", "18"))
            .await
            .expect("park");
        tx.finish_run(&run.id, RunOutcome::Ok, &json!({}))
            .await
            .expect("finish");
        // The transaction sees its own writes; nobody else does.
        assert!(
            tx.link_by_record("customer", &keap)
                .await
                .expect("lookup")
                .is_some()
        );
        assert!(
            store
                .link_by_record("customer", &keap)
                .await
                .expect("lookup")
                .is_none()
        );
        assert_eq!(store.cursor(&cursor).await.expect("cursor"), None);
        // Dropped here without commit, as when the process dies mid-batch.
    }
    assert!(
        store
            .link_by_record("customer", &keap)
            .await
            .expect("lookup")
            .is_none()
    );
    assert!(
        store
            .links_of_global("customer", &global_id)
            .await
            .expect("links")
            .is_empty()
    );
    assert!(
        store
            .pair_state("companies-to-customers", &global_id)
            .await
            .expect("pair")
            .is_none()
    );
    assert_eq!(store.cursor(&cursor).await.expect("cursor"), None);
    assert!(
        store
            .open_intents("companies-to-customers")
            .await
            .expect("intents")
            .is_empty()
    );
    assert!(store.parked(None).await.expect("parked").is_empty());
    let run = store.run(&run.id).await.expect("run").expect("run kept");
    assert_eq!(run.outcome, None);

    // An explicit rollback behaves the same.
    let mut tx = store.transaction().await.expect("tx");
    tx.set_cursor(&cursor, "page-9").await.expect("cursor");
    tx.rollback().await.expect("rollback");
    assert_eq!(store.cursor(&cursor).await.expect("cursor"), None);
}

async fn a_committed_transaction_writes_everything_at_once(db: TestDb) {
    let store = db.open().await;
    let keap = record("keap", "companies", "17");
    let erp = record("customerp", "customers", "C-9");
    let mut tx = store.transaction().await.expect("tx");
    let global_id = tx.new_global_id("customer").await.expect("global id");
    tx.link("customer", &global_id, &keap, LinkOrigin::MatchKey)
        .await
        .expect("link");
    tx.link("customer", &global_id, &erp, LinkOrigin::MatchKey)
        .await
        .expect("link");
    tx.put_pair_state(&pair_state("companies-to-customers", &global_id))
        .await
        .expect("pair");
    tx.park(&parked_source("companies-to-customers", "18"))
        .await
        .expect("park");
    tx.commit().await.expect("commit");

    assert_eq!(
        store
            .links_of_global("customer", &global_id)
            .await
            .expect("links")
            .len(),
        2
    );
    assert!(
        store
            .pair_state("companies-to-customers", &global_id)
            .await
            .expect("pair")
            .is_some()
    );
    assert_eq!(store.parked(None).await.expect("parked").len(), 1);
}

async fn leases_are_exclusive_and_expire(db: TestDb) {
    let store = db.open().await;
    let minute = TimeDelta::minutes(1);
    let t0 = at(0);
    let lease = store
        .try_acquire_lease("companies-to-customers", "worker-a", t0, t0 + minute)
        .await
        .expect("acquire")
        .expect("free lease taken");
    assert_eq!(lease.worker, "worker-a");
    assert_eq!(lease.acquired_at, t0);

    // Another worker cannot take a live lease; its holder can renew it.
    let t1 = t0 + TimeDelta::seconds(30);
    assert!(
        store
            .try_acquire_lease("companies-to-customers", "worker-b", t1, t1 + minute)
            .await
            .expect("acquire")
            .is_none()
    );
    let renewed = store
        .try_acquire_lease("companies-to-customers", "worker-a", t1, t1 + minute)
        .await
        .expect("renew")
        .expect("holder renews");
    assert_eq!(renewed.acquired_at, t0);
    assert_eq!(renewed.expires_at, t1 + minute);

    // Worker A dies; once its lease has expired, worker B takes over and A is out.
    let t2 = t1 + minute;
    let taken = store
        .try_acquire_lease("companies-to-customers", "worker-b", t2, t2 + minute)
        .await
        .expect("acquire")
        .expect("expired lease taken over");
    assert_eq!(taken.worker, "worker-b");
    assert_eq!(taken.acquired_at, t2);
    assert!(
        store
            .try_acquire_lease("companies-to-customers", "worker-a", t2, t2 + minute)
            .await
            .expect("acquire")
            .is_none()
    );
    // Leases are per mapping.
    assert!(
        store
            .try_acquire_lease("contacts-to-contacts", "worker-a", t2, t2 + minute)
            .await
            .expect("acquire")
            .is_some()
    );
    let holders: Vec<(String, String)> = store
        .leases()
        .await
        .expect("list")
        .into_iter()
        .map(|lease| (lease.mapping, lease.worker))
        .collect();
    assert_eq!(
        holders,
        vec![
            ("companies-to-customers".to_owned(), "worker-b".to_owned()),
            ("contacts-to-contacts".to_owned(), "worker-a".to_owned()),
        ]
    );

    assert!(
        !store
            .release_lease("companies-to-customers", "worker-a")
            .await
            .expect("release")
    );
    assert!(
        store
            .release_lease("companies-to-customers", "worker-b")
            .await
            .expect("release")
    );
    assert!(
        store
            .try_acquire_lease("companies-to-customers", "worker-a", t2, t2 + minute)
            .await
            .expect("acquire")
            .is_some(),
        "a released lease is free at once"
    );
}

async fn concurrent_lease_requests_have_one_winner(db: TestDb) {
    let store = db.open().await;
    let t0 = at(0);
    let mut tasks = Vec::new();
    for n in 0..8 {
        // Two handles on the same database, as two `tether serve` processes would have.
        let store = if n % 2 == 0 {
            store.clone()
        } else {
            db.open().await
        };
        tasks.push(tokio::spawn(async move {
            store
                .try_acquire_lease(
                    "companies-to-customers",
                    &format!("worker-{n}"),
                    t0,
                    t0 + TimeDelta::minutes(1),
                )
                .await
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(lease) = task.await.expect("task").expect("acquire") {
            winners.push(lease.worker);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one worker holds the lease: {winners:?}"
    );
    let holders = store.leases().await.expect("list");
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].worker, winners[0]);
}

async fn concurrent_transactions_all_land(db: TestDb) {
    let store = db.open().await;
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.transaction().await?;
            // Every batch parks the same record and writes its own cursor and link.
            tx.park(&parked_source("companies-to-customers", "17"))
                .await?;
            let global_id = tx.new_global_id("customer").await?;
            tx.link(
                "customer",
                &global_id,
                &record("keap", "companies", &format!("r{n}")),
                LinkOrigin::Create,
            )
            .await?;
            tx.set_cursor(&keap_companies_cursor(&format!("mapping-{n}")), "done")
                .await?;
            tx.commit().await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("transaction commits");
    }
    let parked = store.parked(None).await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].attempts, 8, "no attempt was lost");
    let ids: Vec<String> = (0..8).map(|n| format!("r{n}")).collect();
    let links = store
        .links_by_records("customer", "keap", "companies", &ids)
        .await
        .expect("links");
    assert_eq!(links.len(), 8);
    for n in 0..8 {
        assert_eq!(
            store
                .cursors(&format!("mapping-{n}"))
                .await
                .expect("cursors")
                .len(),
            1
        );
    }
}

async fn status_sums_up_each_mapping(db: TestDb) {
    let store = db.open().await;
    let mut tx = store.transaction().await.expect("tx");
    for n in 0..3 {
        let global_id = tx.new_global_id("customer").await.expect("global id");
        tx.put_pair_state(&pair_state("companies-to-customers", &global_id))
            .await
            .expect("pair");
        if n == 0 {
            tx.record_intent(&target_intent("companies-to-customers", &global_id))
                .await
                .expect("intent");
        }
    }
    tx.park(&parked_source("contacts-to-contacts", "5"))
        .await
        .expect("park");
    tx.set_cursor(
        &keap_companies_cursor("companies-to-customers"),
        "2025-03-01T00:00:00Z",
    )
    .await
    .expect("cursor");
    tx.commit().await.expect("commit");
    let run = store
        .start_run(&NewRun {
            mappings: vec!["companies-to-customers".into()],
            ..NewRun::default()
        })
        .await
        .expect("run");
    store
        .finish_run(&run.id, RunOutcome::Failed, &json!({"error": "timeout"}))
        .await
        .expect("finish");

    let status = store.status().await.expect("status");
    let names: Vec<&str> = status.iter().map(|s| s.mapping.as_str()).collect();
    assert_eq!(
        names,
        vec!["companies-to-customers", "contacts-to-contacts"]
    );
    let companies = &status[0];
    assert_eq!(companies.pairs, 3);
    assert_eq!(companies.parked, 0);
    assert_eq!(companies.open_intents, 1);
    assert_eq!(
        companies.last_run.as_ref().and_then(|run| run.outcome),
        Some(RunOutcome::Failed)
    );
    assert_eq!(companies.cursors.len(), 1);
    assert_eq!(companies.cursors[0].position, "2025-03-01T00:00:00Z");
    let contacts = &status[1];
    assert_eq!(
        (contacts.pairs, contacts.parked, contacts.open_intents),
        (0, 1, 0)
    );
    assert!(contacts.last_run.is_none());
}

/// The writes a batch of creates or matches makes in a few statements: each leaves what
/// the one-by-one write leaves, batches larger than one statement's rows included.
async fn batch_writes_leave_what_one_by_one_writes_leave(db: TestDb) {
    let store = db.open().await;
    let mapping = "customers-to-shop";
    let mut tx = store.transaction().await.expect("tx");
    let globals = tx
        .new_global_ids("customer", 250)
        .await
        .expect("global ids");
    assert_eq!(globals.len(), 250);
    let distinct: std::collections::HashSet<&GlobalId> = globals.iter().collect();
    assert_eq!(distinct.len(), 250, "every global id is new");

    // Links: in the order given; one already there with the same global id is kept.
    let already = record("customerp", "customers", "0");
    tx.link("customer", &globals[0], &already, LinkOrigin::Manual)
        .await
        .expect("link");
    let wanted: Vec<(GlobalId, RecordKey)> = globals
        .iter()
        .enumerate()
        .map(|(n, g)| (g.clone(), record("customerp", "customers", &n.to_string())))
        .collect();
    let links = tx
        .link_all("customer", &wanted, LinkOrigin::Create)
        .await
        .expect("links");
    assert_eq!(links.len(), 250);
    assert_eq!(
        links[0].origin,
        LinkOrigin::Manual,
        "the existing link is kept"
    );
    assert_eq!(links[249].record, record("customerp", "customers", "249"));
    assert_eq!(links[249].global_id, globals[249]);
    // A record linked to another global id, in a batch, is the conflict `link` reports,
    // and the transaction goes on.
    match tx
        .link_all(
            "customer",
            &[
                (
                    globals[1].clone(),
                    record("customwebshop", "customers", "S-1"),
                ),
                (globals[2].clone(), record("customerp", "customers", "1")),
            ],
            LinkOrigin::Create,
        )
        .await
    {
        Err(StoreError::LinkConflict(conflict)) => assert_eq!(
            *conflict,
            LinkConflict::RecordLinked {
                identity: "customer".into(),
                record: record("customerp", "customers", "1"),
                existing: globals[1].clone(),
            }
        ),
        other => panic!("expected RecordLinked, got {other:?}"),
    }
    let never_created = GlobalId::new("not-a-global-id");
    match tx
        .link_all(
            "customer",
            &[(
                never_created.clone(),
                record("customwebshop", "customers", "S-9"),
            )],
            LinkOrigin::Create,
        )
        .await
    {
        Err(StoreError::UnknownGlobalId { global_id, .. }) => assert_eq!(global_id, never_created),
        other => panic!("expected UnknownGlobalId, got {other:?}"),
    }

    // Intents: pending in the order given, completed each with its own record.
    let intents: Vec<NewIntent> = globals
        .iter()
        .take(150)
        .map(|g| target_intent(mapping, g))
        .collect();
    let recorded = tx.record_intents(&intents).await.expect("intents");
    let done: Vec<_> = recorded
        .iter()
        .enumerate()
        .map(|(n, intent)| (intent.id.clone(), format!("S-{n}")))
        .collect();
    tx.commit().await.expect("commit");
    let open = store.open_intents(mapping).await.expect("open");
    assert_eq!(
        open.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        recorded.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        "oldest first is the order given"
    );
    assert_eq!(open[3].global_id, globals[3]);
    store.complete_intents(&done).await.expect("complete");
    assert!(store.open_intents(mapping).await.expect("open").is_empty());
    let one = store
        .intent(&done[120].0)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(one.state, IntentState::Done);
    assert_eq!(one.created_record_id.as_deref(), Some("S-120"));
    match store.complete_intents(&done[5..7]).await {
        Err(StoreError::IntentNotPending(id)) => assert_eq!(id, done[5].0),
        other => panic!("expected IntentNotPending, got {other:?}"),
    }

    // Pair states: a pair given twice keeps the last.
    let mut states: Vec<PairState> = globals
        .iter()
        .take(150)
        .map(|g| pair_state(mapping, g))
        .collect();
    let mut again = pair_state(mapping, &globals[7]);
    again.target_id = "S-7b".into();
    states.push(again);
    store.put_pair_states(&states).await.expect("pair states");
    let stored = store.pair_states(mapping).await.expect("pairs");
    assert_eq!(stored.len(), 150);
    let seventh = store
        .pair_state(mapping, &globals[7])
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(seventh.target_id, "S-7b");

    // Match keys: the last key of a record is kept, `None` removes one.
    let mut keys: Vec<(String, Option<String>)> = (0..150)
        .map(|n| (n.to_string(), Some(format!("key-{}", n % 75))))
        .collect();
    keys.push(("3".into(), Some("moved".into())));
    store
        .put_record_keys(mapping, Side::Source, &keys)
        .await
        .expect("keys");
    store
        .put_record_keys(mapping, Side::Source, &[("4".into(), None)])
        .await
        .expect("key removed");
    let found = store
        .find_records_by_keys(
            mapping,
            Side::Source,
            &[
                "key-3".into(),
                "moved".into(),
                "key-4".into(),
                "absent".into(),
            ],
        )
        .await
        .expect("found");
    assert_eq!(
        found,
        [
            ("key-3".to_owned(), "78".to_owned()),
            ("key-4".to_owned(), "79".to_owned()),
            ("moved".to_owned(), "3".to_owned()),
        ]
    );
    assert!(
        store
            .find_records_by_keys(mapping, Side::Target, &["key-3".into()])
            .await
            .expect("other side")
            .is_empty()
    );

    // Change log rows read back in the order given; forgotten records removed at once.
    let writes: Vec<NewHistory> = (0..3)
        .map(|n| NewHistory {
            run_id: None,
            mapping: mapping.into(),
            identity: "customer".into(),
            global_id: globals[0].clone(),
            record: record("customwebshop", "customers", &format!("S-{n}")),
            action: HistoryAction::Update,
            changes: Vec::new(),
        })
        .collect();
    store.record_histories(&writes).await.expect("history");
    let log = store
        .history_of_global("customer", &globals[0])
        .await
        .expect("log");
    assert_eq!(
        log.iter().map(|e| e.record.id.as_str()).collect::<Vec<_>>(),
        ["S-0", "S-1", "S-2"]
    );
    for id in ["1", "2", "3"] {
        store
            .put_unlinked(mapping, Side::Target, id, "h")
            .await
            .expect("put");
    }
    let removed = store
        .remove_unlinked_all(mapping, Side::Target, &["1".into(), "3".into(), "9".into()])
        .await
        .expect("removed");
    assert_eq!(removed, 2);
    let left = store.unlinked(mapping).await.expect("unlinked");
    assert_eq!(
        left.iter()
            .map(|u| u.record_id.as_str())
            .collect::<Vec<_>>(),
        ["2"]
    );
    let of_records = store
        .unlinked_of_records(mapping, Side::Target, &["2".into(), "3".into()])
        .await
        .expect("of records");
    assert_eq!(of_records, left);
    assert!(
        store
            .unlinked_of_records(mapping, Side::Source, &["2".into()])
            .await
            .expect("other side")
            .is_empty()
    );
}

fn pair_state(mapping: &str, global_id: &GlobalId) -> PairState {
    PairState {
        mapping: mapping.into(),
        global_id: global_id.clone(),
        source_id: "17".into(),
        target_id: "C-9".into(),
        base: json!({"name": "Acme"}),
        base_hash: "h".into(),
        source: SideSeen::default(),
        target: SideSeen::default(),
        synced_at: at(0),
    }
}

fn parked_source(mapping: &str, record_id: &str) -> Park {
    Park {
        mapping: mapping.into(),
        side: Side::Source,
        record_id: record_id.into(),
        reason: "invalid email".into(),
        field: Some("email".into()),
        value: Some("not-an-email".into()),
        deleting: false,
        retry_at: None,
    }
}

fn target_intent(mapping: &str, global_id: &GlobalId) -> NewIntent {
    NewIntent {
        mapping: mapping.into(),
        side: Side::Target,
        source_record_id: "17".into(),
        global_id: global_id.clone(),
        match_values: json!({}),
        payload_hash: "p".into(),
    }
}

fn keap_companies_cursor(mapping: &str) -> CursorKey {
    CursorKey {
        mapping: mapping.into(),
        side: Side::Source,
        system: "keap".into(),
        entity: "companies".into(),
    }
}
