//! The state store owns everything the sync engine remembers between runs: global ids and
//! links, the base snapshots of linked pairs, cursors, create intents, parked records,
//! conflicts, run history and worker leases.
//!
//! One interface, two backends: SQLite in a local file (the default) and PostgreSQL (several
//! `tether serve` workers sharing one database). [`Store`] is a cheap `Clone + Send + Sync`
//! handle over a connection pool. Every write method on [`Store`] commits on its own; a batch
//! that must land whole goes through [`Store::transaction`], whose [`Tx`] has the same write
//! (and read) methods and writes nothing unless [`Tx::commit`] is called.
//!
//! The store knows nothing about flow files, connectors or HTTP. Every query is written once
//! in `ops` and compiled for both backends; the schema is one list of migrations in
//! `migrations/`, applied when a store is opened.
//!
//! Keep a [`Tx`] short: on SQLite it holds the database's single write lock from its start
//! (so that concurrent transactions queue instead of failing), and a write through the
//! [`Store`] from the task that holds an open [`Tx`] waits for that lock until it times out.

mod migrate;
pub mod model;
mod ops;
mod url;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};

pub use migrate::SCHEMA_VERSION;
pub use model::*;
pub use url::{DEFAULT_STATE_PATH, StoreUrl};

use ops::Conn;

/// How long a SQLite connection waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a caller waits for a free connection of the pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);
const SQLITE_MAX_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 8;

/// What can go wrong in the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid state store location `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot create the folder {} for the state store: {source}", path.display())]
    CreateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the state store {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: Box<sqlx::Error>,
    },
    #[error(
        "the state store {url} has schema version {found}, newer than this tether knows \
         (up to {supported}): use a newer tether with this store"
    )]
    SchemaTooNew {
        url: String,
        found: i64,
        supported: i64,
    },
    #[error("cannot migrate the state store {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: Box<sqlx::migrate::MigrateError>,
    },
    /// A link would give a record a second global id, or a global id a second record.
    #[error(transparent)]
    LinkConflict(Box<LinkConflict>),
    #[error("{identity} {global_id} was never created in this store")]
    UnknownGlobalId {
        identity: String,
        global_id: GlobalId,
    },
    #[error("create intent {0} is not pending")]
    IntentNotPending(IntentId),
    #[error("run {0} does not exist or is already finished")]
    RunNotOpen(RunId),
    #[error("the {0} kept meeting concurrent changes; try again")]
    Contended(&'static str),
    #[error("the state store holds an invalid {what}: `{value}`")]
    Corrupt { what: &'static str, value: String },
    #[error("state store query failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// A handle on an open state store. Clones share one connection pool.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    url: StoreUrl,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

enum Pooled {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Pooled {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Pooled::Sqlite(conn) => Conn::Sqlite(conn),
            Pooled::Postgres(conn) => Conn::Postgres(conn),
        }
    }
}

/// An open transaction. Dropping it without [`Tx::commit`] rolls everything back.
pub struct Tx {
    inner: TxInner,
}

enum TxInner {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    fn conn(&mut self) -> Conn<'_> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => Conn::Sqlite(tx),
            TxInner::Postgres(tx) => Conn::Postgres(tx),
        }
    }

    /// Makes every write of the transaction visible at once.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self.inner {
            TxInner::Sqlite(tx) => tx.commit().await?,
            TxInner::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// Drops every write of the transaction (as dropping it does, but waiting for it).
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.inner {
            TxInner::Sqlite(tx) => tx.rollback().await?,
            TxInner::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

/// How often opening a SQLite file is tried while another process holds the lock that
/// switching a fresh file to WAL needs.
const SQLITE_OPEN_ATTEMPTS: u32 = 20;

/// Whether an error is SQLite's "database is locked" (SQLITE_BUSY).
fn is_locked(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => {
            database.code().as_deref() == Some("5")
                || database.message().contains("database is locked")
        }
        _ => false,
    }
}

impl Store {
    /// Opens the store at `url`, creating it (and a SQLite file's folders) when missing, and
    /// brings its schema up to date. A store written by a newer tether is refused with
    /// [`StoreError::SchemaTooNew`].
    pub async fn open(url: &StoreUrl) -> Result<Store, StoreError> {
        let open_error = |source: sqlx::Error| StoreError::Open {
            url: url.to_string(),
            source: Box::new(source),
        };
        let pool = match url {
            StoreUrl::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(parent).await.map_err(|source| {
                        StoreError::CreateFolder {
                            path: parent.to_path_buf(),
                            source,
                        }
                    })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // Every commit reaches the disk before it returns: a create intent must
                    // survive a power cut once the create has been sent.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true);
                // Switching a fresh file to WAL takes an exclusive lock that SQLite does not
                // wait for: a process opening the same new file at the same moment gets
                // "database is locked" and tries again shortly.
                let mut attempt = 0u32;
                let pool = loop {
                    attempt += 1;
                    match SqlitePoolOptions::new()
                        .max_connections(SQLITE_MAX_CONNECTIONS)
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .connect_with(options.clone())
                        .await
                    {
                        Ok(pool) => break pool,
                        Err(error) if attempt < SQLITE_OPEN_ATTEMPTS && is_locked(&error) => {
                            tokio::time::sleep(std::time::Duration::from_millis(
                                20 * u64::from(attempt),
                            ))
                            .await;
                        }
                        Err(error) => return Err(open_error(error)),
                    }
                };
                Pool::Sqlite(pool)
            }
            StoreUrl::Postgres(text) => {
                let options =
                    PgConnectOptions::from_str(text).map_err(|error| StoreError::InvalidUrl {
                        url: url.to_string(),
                        reason: error.to_string(),
                    })?;
                let pool = PgPoolOptions::new()
                    .max_connections(POSTGRES_MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                Pool::Postgres(pool)
            }
        };
        match &pool {
            Pool::Sqlite(pool) => migrate::run(url, pool).await?,
            Pool::Postgres(pool) => migrate::run(url, pool).await?,
        }
        tracing::debug!(store = %url, schema_version = SCHEMA_VERSION, "state store opened");
        Ok(Store {
            pool,
            url: url.clone(),
        })
    }

    /// Where this store lives (passwords hidden when displayed).
    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// Starts a transaction. On SQLite it takes the write lock at once, waiting for another
    /// writer to finish if needed.
    pub async fn transaction(&self) -> Result<Tx, StoreError> {
        let inner = match &self.pool {
            Pool::Sqlite(pool) => TxInner::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(pool) => TxInner::Postgres(pool.begin().await?),
        };
        Ok(Tx { inner })
    }

    /// Closes every connection; waits for the ones in use to come back.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    async fn acquire(&self) -> Result<Pooled, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Pooled::Sqlite(pool.acquire().await?),
            Pool::Postgres(pool) => Pooled::Postgres(pool.acquire().await?),
        })
    }

    /// Takes or renews the lease on `mapping` for `worker` until `expires_at`, when nobody
    /// else holds it or the holder's lease has expired by `now`. Returns the lease when
    /// `worker` holds it afterwards, `None` when another worker does. Atomic on both
    /// backends: of several workers asking at once, at most one gets a free lease.
    ///
    /// Expiry is judged by the callers' clocks (`now`), so the workers' clocks must agree to
    /// within a small part of the lease time.
    pub async fn try_acquire_lease(
        &self,
        mapping: &str,
        worker: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<Lease>, StoreError> {
        let mut pooled = self.acquire().await?;
        ops::try_acquire_lease(pooled.conn(), mapping, worker, now, expires_at).await
    }

    /// Gives up `worker`'s lease on `mapping`; `false` when it did not hold it.
    pub async fn release_lease(&self, mapping: &str, worker: &str) -> Result<bool, StoreError> {
        let mut pooled = self.acquire().await?;
        ops::release_lease(pooled.conn(), mapping, worker).await
    }

    /// Every lease, expired or not, by mapping.
    pub async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let mut pooled = self.acquire().await?;
        ops::leases(pooled.conn()).await
    }

    /// What `tether status` shows: per mapping with any state, its pair and parked counts,
    /// open intents, last run and cursors, by mapping name.
    pub async fn status(&self) -> Result<Vec<MappingStatus>, StoreError> {
        let mut pooled = self.acquire().await?;
        ops::status(pooled.conn()).await
    }

    /// What `tether status --format json` and the server's `/status` show: every mapping's
    /// status and every parked record.
    pub async fn status_report(&self) -> Result<StatusReport, StoreError> {
        Ok(StatusReport {
            mappings: self.status().await?,
            parked: self.parked(None).await?,
        })
    }

    /// Checks that the store answers (for readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut pooled = self.acquire().await?;
        match pooled.conn() {
            Conn::Sqlite(c) => {
                sqlx::query("SELECT 1").execute(&mut *c).await?;
            }
            Conn::Postgres(c) => {
                sqlx::query("SELECT 1").execute(&mut *c).await?;
            }
        }
        Ok(())
    }
}

/// Declares the methods that [`Store`] and [`Tx`] share, each backed by the function of the
/// same name in `ops`. Reads on a [`Store`] see committed data; reads on a [`Tx`] also see
/// its own writes. Writes on a [`Store`] commit on their own.
macro_rules! shared_methods {
    (
        reads { $( $(#[$rmeta:meta])* fn $rname:ident($($rarg:ident: $rty:ty),*) -> $rret:ty; )* }
        writes { $( $(#[$wmeta:meta])* fn $wname:ident($($warg:ident: $wty:ty),*) -> $wret:ty; )* }
    ) => {
        impl Store {
            $(
                $(#[$rmeta])*
                pub async fn $rname(&self, $($rarg: $rty),*) -> Result<$rret, StoreError> {
                    let mut pooled = self.acquire().await?;
                    ops::$rname(pooled.conn(), $($rarg),*).await
                }
            )*
            $(
                $(#[$wmeta])*
                pub async fn $wname(&self, $($warg: $wty),*) -> Result<$wret, StoreError> {
                    let mut tx = self.transaction().await?;
                    let out = ops::$wname(tx.conn(), $($warg),*).await?;
                    tx.commit().await?;
                    Ok(out)
                }
            )*
        }

        impl Tx {
            $(
                $(#[$rmeta])*
                pub async fn $rname(&mut self, $($rarg: $rty),*) -> Result<$rret, StoreError> {
                    ops::$rname(self.conn(), $($rarg),*).await
                }
            )*
            $(
                $(#[$wmeta])*
                pub async fn $wname(&mut self, $($warg: $wty),*) -> Result<$wret, StoreError> {
                    ops::$wname(self.conn(), $($warg),*).await
                }
            )*
        }
    };
}

shared_methods! {
    reads {
        /// The link of a record for an identity type.
        fn link_by_record(identity: &str, record: &RecordKey) -> Option<Link>;
        /// The links of many records of one entity for an identity type (any order; records
        /// without a link are left out).
        fn links_by_records(
            identity: &str, system: &str, entity: &str, record_ids: &[String]
        ) -> Vec<Link>;
        /// The records of entity `to` linked to the same global ids as some records of
        /// entity `from`, as (record id in `from`, record id in `to`); records without such a
        /// counterpart are left out.
        fn linked_counterparts(
            identity: &str, from_system: &str, from_entity: &str, to_system: &str,
            to_entity: &str, record_ids: &[String]
        ) -> Vec<(String, String)>;
        /// Every link of one entity for an identity type.
        fn links_of_entity(identity: &str, system: &str, entity: &str) -> Vec<Link>;
        /// The stored match keys of some records of one side of a mapping, as (record id,
        /// key); records without one are left out.
        fn record_keys_of(mapping: &str, side: Side, record_ids: &[String]) -> Vec<(String, String)>;
        /// The records of one side of a mapping whose match key is `key`.
        fn find_record_keys(mapping: &str, side: Side, key: &str) -> Vec<String>;
        /// The records of one side of a mapping whose match key is one of `keys`, as
        /// (key, record id), sorted.
        fn find_records_by_keys(mapping: &str, side: Side, keys: &[String]) -> Vec<(String, String)>;
        /// The record of a system entity linked to a global id.
        fn link_by_global(
            identity: &str, global_id: &GlobalId, system: &str, entity: &str
        ) -> Option<Link>;
        /// The records of a system entity linked to some global ids (any order; global ids
        /// without one are left out).
        fn links_by_globals(
            identity: &str, global_ids: &[GlobalId], system: &str, entity: &str
        ) -> Vec<Link>;
        /// Every record linked to a global id, across systems.
        fn links_of_global(identity: &str, global_id: &GlobalId) -> Vec<Link>;
        /// Every link of a record, whatever its identity type, by identity.
        fn links_of_record(record: &RecordKey) -> Vec<Link>;
        /// The change log of a global id (every counterpart's writes), oldest first.
        fn history_of_global(identity: &str, global_id: &GlobalId) -> Vec<HistoryEntry>;
        /// The change log of one record's writes, oldest first.
        fn history_of_record(record: &RecordKey) -> Vec<HistoryEntry>;
        /// The pair state of a global id in a mapping.
        fn pair_state(mapping: &str, global_id: &GlobalId) -> Option<PairState>;
        /// Every pair state of a mapping, by global id.
        fn pair_states(mapping: &str) -> Vec<PairState>;
        /// The pair states of a mapping whose record on `side` is one of `record_ids` (any
        /// order).
        fn pair_states_of_records(
            mapping: &str, side: Side, record_ids: &[String]
        ) -> Vec<PairState>;
        /// The hash each pair last saw on `side`, of the pairs of a mapping whose record on
        /// that side is one of `record_ids`, as (record id, hash) (any order; pairs that saw
        /// none and records without a pair are left out). What a read lets go of records at
        /// rest by, without loading their pairs.
        fn seen_hashes_of_records(
            mapping: &str, side: Side, record_ids: &[String]
        ) -> Vec<(String, String)>;
        /// The record ids on one side of every pair of a mapping (any order).
        fn paired_ids(mapping: &str, side: Side) -> Vec<String>;
        /// Whether any pair of a mapping was last synced before `before`.
        fn any_pair_synced_before(mapping: &str, before: DateTime<Utc>) -> bool;
        /// How many pairs of a mapping were last synced before `before`.
        fn count_pairs_synced_before(mapping: &str, before: DateTime<Utc>) -> u64;
        /// A stored cursor position.
        fn cursor(key: &CursorKey) -> Option<String>;
        /// Every cursor of a mapping.
        fn cursors(mapping: &str) -> Vec<Cursor>;
        /// The pending create intents of a mapping, oldest first.
        fn open_intents(mapping: &str) -> Vec<CreateIntent>;
        /// A create intent in any state.
        fn intent(id: &IntentId) -> Option<CreateIntent>;
        /// Parked records of one mapping, or of all when `mapping` is `None`, by mapping,
        /// side and record id.
        fn parked(mapping: Option<&str>) -> Vec<ParkedRecord>;
        /// How many records each mapping has parked (mappings without any are left out).
        fn parked_counts() -> Vec<(String, u64)>;
        /// The kept attempts of the parked records of one mapping or of all, oldest first
        /// per record (the latest [`PARKED_ATTEMPTS_KEPT`] of each).
        fn parked_attempts(mapping: Option<&str>) -> Vec<ParkAttempt>;
        /// The latest conflicts, newest first, of one mapping or of all.
        fn recent_conflicts(mapping: Option<&str>, limit: u32) -> Vec<Conflict>;
        /// The conflicts held for a person or resolved and not yet written, of one mapping or
        /// of all, oldest first.
        fn open_conflicts(mapping: Option<&str>) -> Vec<Conflict>;
        /// A conflict in any state.
        fn conflict(id: &ConflictId) -> Option<Conflict>;
        /// The records of a mapping whose pairs were forgotten when their counterparts were
        /// deleted (the `unlink` policy), by side and record id.
        fn unlinked(mapping: &str) -> Vec<Unlinked>;
        /// The entries of some records of one side among [`Store::unlinked`] (any order).
        fn unlinked_of_records(mapping: &str, side: Side, record_ids: &[String]) -> Vec<Unlinked>;
        /// A run.
        fn run(id: &RunId) -> Option<Run>;
        /// The latest run that covered a mapping, finished or not.
        fn last_run(mapping: &str) -> Option<Run>;
        /// The latest runs, newest first.
        fn recent_runs(limit: u32) -> Vec<Run>;
        /// The alert incidents told and not yet cleared, oldest first.
        fn alert_incidents() -> Vec<AlertIncident>;
    }
    writes {
        /// Creates a global id of an identity type.
        fn new_global_id(identity: &str) -> GlobalId;
        /// Creates `count` global ids of an identity type.
        fn new_global_ids(identity: &str, count: usize) -> Vec<GlobalId>;
        /// Links a record to a global id. Linking a record again to the same global id
        /// returns the existing link; a link that would give the record a second global id
        /// of this identity type, or the global id a second record in this entity, fails with
        /// [`StoreError::LinkConflict`] and leaves the transaction usable.
        fn link(
            identity: &str, global_id: &GlobalId, record: &RecordKey, origin: LinkOrigin
        ) -> Link;
        /// [`Store::link`] for many records, in few statements; the links in the order
        /// given, or the first conflict.
        fn link_all(
            identity: &str, links: &[(GlobalId, RecordKey)], origin: LinkOrigin
        ) -> Vec<Link>;
        /// Removes a record's link for an identity type; `false` when there was none.
        fn unlink(identity: &str, record: &RecordKey) -> bool;
        /// Records the match key of a record a mapping read (`None` removes it).
        fn put_record_key(mapping: &str, side: Side, record_id: &str, key: Option<&str>) -> ();
        /// Records the match keys of many records of one side (`None` removes one); the
        /// last key given for a record is kept.
        fn put_record_keys(mapping: &str, side: Side, keys: &[(String, Option<String>)]) -> ();
        /// Writes a pair state, replacing the one of the same mapping and global id.
        fn put_pair_state(state: &PairState) -> ();
        /// Writes pair states, each replacing the one of the same mapping and global id (the
        /// last given for a pair is kept).
        fn put_pair_states(states: &[PairState]) -> ();
        /// Removes a pair state; `false` when there was none.
        fn delete_pair_state(mapping: &str, global_id: &GlobalId) -> bool;
        /// Writes a cursor position.
        fn set_cursor(key: &CursorKey, position: &str) -> ();
        /// Removes every cursor of a mapping (its next reads start from the beginning); how
        /// many there were.
        fn clear_cursors(mapping: &str) -> u64;
        /// Records an alert incident as told (nothing when it is recorded already).
        fn open_alert_incident(incident: &AlertIncident) -> ();
        /// Forgets a cleared alert incident; `false` when it was not open.
        fn close_alert_incident(incident: &str) -> bool;
        /// Records a create intent as pending, before the create is sent.
        fn record_intent(intent: &NewIntent) -> CreateIntent;
        /// Records create intents as pending, in the order given.
        fn record_intents(intents: &[NewIntent]) -> Vec<CreateIntent>;
        /// Marks a pending intent done with the id of the created (or found) record.
        fn complete_intent(id: &IntentId, created_record_id: &str) -> ();
        /// Marks pending intents done, each with the id of its created record.
        fn complete_intents(done: &[(IntentId, String)]) -> ();
        /// Marks a pending intent abandoned.
        fn abandon_intent(id: &IntentId) -> ();
        /// Parks a record, or counts one more attempt (with the new reason) when it is
        /// parked already; either way the attempt is kept with its time and reason, and a
        /// record set aside is no longer (it was tried again because it changed).
        fn park(park: &Park) -> ParkedRecord;
        /// Takes a record off the parked list, with its attempts; `false` when it was not on
        /// it.
        fn unpark(mapping: &str, side: Side, record_id: &str) -> bool;
        /// Sets a parked record aside with the hash of its content now: the engine leaves it
        /// alone until its content hashes differently. `false` when it is not parked.
        fn skip_parked(mapping: &str, side: Side, record_id: &str, content_hash: &str) -> bool;
        /// Makes a record set aside a parked record again, tried on every run; `false` when
        /// it was not set aside.
        fn unskip_parked(mapping: &str, side: Side, record_id: &str) -> bool;
        /// Makes a parked record that waits for its `retry_at` due on the next run; `false`
        /// when it had no such time.
        fn retry_parked_now(mapping: &str, side: Side, record_id: &str) -> bool;
        /// Remembers a record whose pair was forgotten when its counterpart was deleted, with
        /// the hash of its mapped fields then (replacing an earlier entry).
        fn put_unlinked(mapping: &str, side: Side, record_id: &str, content_hash: &str) -> ();
        /// Forgets that a record's pair was forgotten (it was linked again, or changed);
        /// `false` when there was no entry.
        fn remove_unlinked(mapping: &str, side: Side, record_id: &str) -> bool;
        /// [`Store::remove_unlinked`] for many records of one side; how many entries there
        /// were.
        fn remove_unlinked_all(mapping: &str, side: Side, record_ids: &[String]) -> u64;
        /// Appends a write to the change log, stamped now. Nothing changes a row once
        /// written; only [`Store::prune_history`] removes rows, by age.
        fn record_history(entry: &NewHistory) -> ();
        /// Appends many writes to the change log, stamped now.
        fn record_histories(entries: &[NewHistory]) -> ();
        /// Removes the change log's rows written before `before` (the retention); how many.
        fn prune_history(before: DateTime<Utc>) -> u64;
        /// Records a conflict of a run: decided when it has a winner, held otherwise.
        fn record_conflict(conflict: &NewConflict) -> Conflict;
        /// Records a person's choice for a held conflict, to be written by the next run;
        /// `None` when the conflict is not held (unknown, already resolved, or decided).
        fn resolve_conflict(id: &ConflictId, choice: &Choice) -> Option<Conflict>;
        /// Marks a resolved conflict written; `false` when it was not resolved.
        fn apply_conflict(id: &ConflictId) -> bool;
        /// Starts a run now.
        fn start_run(run: &NewRun) -> Run;
        /// Finishes a run with its outcome and summary.
        fn finish_run(id: &RunId, outcome: RunOutcome, summary: &Value) -> Run;
    }
}
