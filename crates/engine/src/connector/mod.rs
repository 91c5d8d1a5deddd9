//! The connector module owns every conversation with an external system: the [`Connector`]
//! trait the sync engine talks to, and [`HttpConnector`], the one generic implementation
//! driven entirely by a system file (`flows/systems/<system>.yaml`), so that a new REST
//! system needs a YAML file, not code. Connectors written in Rust implement the same trait
//! and go into the same [`Connectors`] registry.
//!
//! The engine knows systems only through this trait; the connector knows nothing of flows,
//! mappings, links or the store. Records travel as `serde_json::Value` with their id (as a
//! string) and modified time extracted by the system file's JSONPaths.
//!
//! # Reading changes and cursors
//!
//! [`Connector::changes`] reads an entity page by page from a [`Cursor`]. Every [`Page`]
//! carries the cursor that is safe to store once each record of that page (and of the
//! pages before it) is done or parked; after a crash, reading again from the last stored
//! cursor hands out everything not yet done. An error from [`PageReader::next_page`] leaves
//! the reader where it was, so calling it again retries the same page and nothing is lost.
//!
//! What a cursor means depends on the entity's incremental read:
//!
//! - **Modified-since parameter and SOQL**: a watermark `W` (every version modified before
//!   `W` was handed out) and the versions `(id, modified)` handed out at or after
//!   `W - lookback`. The next read asks for records modified since `W - lookback`
//!   (`lookback_seconds` in the system file; one millisecond earlier still when the API's
//!   filter is strict) and drops the versions it already handed out. So records that share
//!   a timestamp across a page or run boundary, records stamped by a clock running behind,
//!   or committed late, by up to the lookback, and the difference between inclusive and
//!   strict filters lose nothing and hand out nothing twice. A newer version of the same
//!   record (a later modified time) is a new change and is handed out again. Within a read
//!   the watermark moves page by page while records come oldest change first (the APIs'
//!   documented order; the SOQL template's `ORDER BY`); if they do not, it stays where the
//!   read started until the last page. The watermark never moves past the system's own
//!   clock when it answered (the page's `Date` header, or this machine's clock at the read
//!   when there is none) plus [`CLOCK_TOLERANCE`]: a record stamped later is handed out and
//!   reported ([`Page::ahead`]), but cannot hide the changes made before its time. Where
//!   the system file says its `Date` header is the clock of its
//!   records (`clock: date_header`), a complete read also moves the watermark to the `Date`
//!   of its first page, so a read that finds nothing new does not leave the next one asking
//!   again from the last change. A SOQL template with `LIMIT {limit}` is read in slices: when a
//!   slice is full, the query runs again from the newest modified time read (one second
//!   earlier, de-duplicated), with a doubled limit if a slice brought nothing new.
//! - **Sync token** (Keap's product feed): the token of the last completed read. Pages
//!   before the last carry the cursor the read started from, since a feed cannot be
//!   resumed half-way; a crash mid-feed reads the feed again (at least once).
//! - **No incremental read**: the beginning; every read lists the entity whole and the
//!   engine finds changes by comparing content.
//!
//! Deletions are found per the system file: inside the change pages ([`Page::deleted`]:
//! soft-delete flags, change-feed statuses), through [`Connector::deletions`] (tombstones,
//! Salesforce `getDeleted`, with watermark cursors of their own), or by comparing a
//! [`Connector::list_all`] listing with the links ([`DeletionDiscovery`]).
//!
//! Within one read the connector follows the API's own pagination with a fixed `since`. A
//! next link that carries the page size (Keap's) gets back every parameter of the first
//! request it lacks, since real APIs rebuild such links from part of the query; a nested
//! query result that is not done (a Salesforce child relationship) is read to its end. An
//! offset-paginated listing whose records change while it is being read can shift records
//! across a page boundary; the next read's lookback catches only those modified within it.
//!
//! # What the engine reports
//!
//! Besides records and deletions, every [`Page`] carries what the run report should name:
//!
//! - [`Page::malformed`]: listed items that are not handed out, each a [`Malformed`] with
//!   the id as listed (`None` when there is none) and the reason. An id must be able to
//!   address its record as one URL path segment: empty ids, `.` and `..` (which URL
//!   parsers remove even when percent-encoded, so a request would reach the collection or
//!   the API root) and, for `id_type: integer`, anything but digits (`1e30`, `-`) are
//!   malformed. [`Connector::get`], `update` and `delete` refuse such ids with
//!   [`ConnectorError::InvalidId`] before anything is sent.
//! - [`Page::ahead`]: records (and deletions) stamped ahead of the system's clock, each an
//!   [`Ahead`] with its id, its time and the clock; they are in `records` (or `deleted`)
//!   too.
//!
//! A listing that would not end stops with [`ConnectorError::EndlessListing`] (system,
//! entity, pages read, why): a page with the same ids as an earlier page of the listing, a
//! cursor or next link already followed, or more pages than `list.max_pages`.
//!
//! A system can be stopped for the rest of a run ([`ConnectorError::stops_system`]): when
//! the waits its rate limits ask for would exceed `http.max_wait_seconds` in one run
//! ([`ConnectorError::WaitBudgetSpent`]), when its daily allowance is spent (Salesforce's
//! 403 `REQUEST_LIMIT_EXCEEDED`, [`ConnectorError::AllowanceSpent`]), or when the last
//! answer says the allowance is used up to the reserve the system file leaves to other
//! integrations (`allowance`: Salesforce's `Sforce-Limit-Info`, Keap's
//! `x-keap-product-quota-*`; [`ConnectorError::AllowanceReserve`]). Every later call of
//! that system fails at once with the same error, which is retryable (a later run may
//! succeed; never a reason to park a record). The engine calls
//! [`Connector::start_run`] (or [`Connectors::start_run`]) at the start of every run, which
//! gives every system its whole budget again.
//!
//! # Writes
//!
//! PATCH sends the changed fields; PUT replaces the record, so the connector reads it,
//! merges the changes, drops read-only fields and writes the whole record. A create that
//! answers only an id is read back when the entity has a `get` endpoint. Batches go through
//! the system's batch endpoint (Salesforce sObject Collections) in chunks of its size, and
//! answer one result per record, in order; without a batch endpoint they are sent one by
//! one. A failure is a [`ConnectorError`] that says whether it is retryable, whether a
//! write may have been applied anyway, and what the API said (status, code, message,
//! field), so the engine can park a refused record with a clear reason.
//!
//! # Politeness and secrets
//!
//! Every request of a system goes through one place (`http.rs`): one rate limiter per
//! system shared by every flow, `Retry-After` and throttle headers honoured within the
//! run's wait budget, bounded retries with backoff and jitter, timeouts, a body size
//! limit, logging without secrets,
//! and credentials sent only to the base URL's origin, the token endpoint and Salesforce's
//! instance URL.

mod compiled;
mod cursor;
mod describe;
mod error;
mod generic;
mod http;
mod listing;
mod project;
mod registry;
mod value;

pub(crate) use http::reserve_reached;
pub(crate) use value::strip_read_only;

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

pub use cursor::{Cursor, InvalidCursor, MAX_SEEN};
pub use error::{ApiError, ConnectorError, RequestContext};
pub use generic::HttpConnector;
pub use registry::{Connectors, ConnectorsError};

/// A boxed future, so the traits stay usable as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One record of an entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The id, as a string (`"42"`, `"003RO0000035WQgYAM"`).
    pub id: String,
    /// The last-modified time, when the entity has one and the record carries it.
    pub modified: Option<DateTime<Utc>>,
    /// The record as the API returned it.
    pub data: Value,
}

/// A record that was deleted in the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub id: String,
    /// When it was deleted, when the API says.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A listed item that cannot be used as a record: no id where the system file says, or an
/// id that cannot address a record (see [`Page::malformed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    /// The id as listed (`"."`, `""`, `"1e30"`), or `None` when the item has none.
    pub id: Option<String>,
    /// Why it cannot be a record, for the run report (`the id is not an integer ...`).
    pub reason: String,
    /// The item as the API listed it.
    pub data: Value,
}

/// A record (or deletion) stamped later than the system's own clock when it was read,
/// plus [`CLOCK_TOLERANCE`] (see [`Page::ahead`]). It is handed out as usual, but its time
/// does not move the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ahead {
    pub id: String,
    /// The modified (or deletion) time the record carries.
    pub modified: DateTime<Utc>,
    /// The system's clock when it answered: its `Date` header, or this machine's clock at
    /// the read when the answer has none.
    pub clock: DateTime<Utc>,
}

/// How far past the system's own clock a modified time may lie and still move a cursor:
/// enough for a `Date` header's whole seconds and a little clock drift between the API's
/// servers, far less than any gap that would hide later changes.
pub const CLOCK_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// One page of a read.
#[derive(Debug, Clone)]
pub struct Page {
    /// Changed (or, for full listings, all) records, in the API's order.
    pub records: Vec<Record>,
    /// Records found deleted.
    pub deleted: Vec<Deletion>,
    /// Listed items that are not records and are not handed out: no id, or an id that
    /// cannot address a record (empty, `.` or `..`, not an integer where the system file
    /// says `id_type: integer`). The engine counts and lists them in the run report.
    pub malformed: Vec<Malformed>,
    /// Records (and deletions) of this page stamped ahead of the system's clock. They are
    /// also in `records` (or `deleted`): they are synced, but their times do not move the
    /// cursor. The engine counts and lists them in the run report.
    pub ahead: Vec<Ahead>,
    /// Safe to store once everything in this page and the pages before it is done or
    /// parked.
    pub cursor: Cursor,
    /// Whether this is the last page of the read; a full listing is complete only when
    /// its last page was read.
    pub last: bool,
}

/// What a write returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The record's id (new for a create).
    pub id: String,
    /// The stored record, when the API answered it (or it was read back).
    pub record: Option<Record>,
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The record was deleted now.
    Deleted,
    /// The record was already gone (404).
    AlreadyGone,
}

/// How deletions of an entity are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionDiscovery {
    /// They cannot be seen.
    None,
    /// They arrive in the change pages ([`Page::deleted`]).
    InChanges,
    /// [`Connector::deletions`] reads them from a cursor.
    Feed,
    /// By listing everything ([`Connector::list_all`]) and looking for linked ids that are
    /// gone; deletions a change feed reports besides ([`Page::deleted`]) count too.
    FullListing,
}

/// What a connector can do with an entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntityInfo {
    /// Whether [`Connector::changes`] reads only what changed since its cursor; if not,
    /// every read lists the entity whole.
    pub incremental: bool,
    /// Whether records carry a modified time.
    pub modified_times: bool,
    pub deletions: DeletionDiscovery,
    pub can_get: bool,
    pub can_create: bool,
    pub can_update: bool,
    pub can_delete: bool,
    /// Records per batch request, when the system has a batch endpoint.
    pub batch_size: Option<usize>,
    /// How often at most the entity is listed whole (`full_listing_every`): to find
    /// deletions by absence, or, without an incremental read, to read it at all. `None`:
    /// every run.
    pub full_listing_every: Option<std::time::Duration>,
}

/// Counters of one system, for the run summary and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConnectorStats {
    /// Requests sent (every attempt, token requests included).
    pub requests: u64,
    /// Attempts that failed: status 400 or above, timeouts, broken connections, bad bodies.
    pub errors: u64,
    /// Attempts that were retries (including the one after a 401 token refresh).
    pub retries: u64,
    /// Times a request waited for the rate limit, a `Retry-After` or low throttle headers.
    pub rate_limit_waits: u64,
    /// Milliseconds spent in those waits.
    pub rate_limit_wait_ms: u64,
    /// Access tokens fetched.
    pub token_fetches: u64,
    /// The daily allowance the last answer reported (`allowance` in the system file):
    /// requests used, and the allowance.
    pub allowance_used: Option<u64>,
    pub allowance_limit: Option<u64>,
}

/// What the signed-in user may do with an entity's records, as the API says without a
/// write being tried (Salesforce's describe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WriteAccess {
    pub create: bool,
    pub update: bool,
    pub delete: bool,
}

/// A read in progress: pages are pulled one at a time.
pub trait PageReader: Send {
    /// The next page, or `None` after the last one. An error leaves the reader where it
    /// was: calling again retries the same page.
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>, ConnectorError>>;
}

/// A system, as the sync engine sees it. Used as `Arc<dyn Connector>`, shared by every flow
/// that uses the system.
pub trait Connector: Send + Sync {
    /// The system's name (`keap`).
    fn system(&self) -> &str;

    /// What the connector can do with an entity; `None` for an unknown entity.
    fn entity(&self, entity: &str) -> Option<EntityInfo>;

    /// Reads the records changed since `cursor` (`None`: from the beginning).
    fn changes(
        &self,
        entity: &str,
        cursor: Option<&Cursor>,
    ) -> Result<Box<dyn PageReader>, ConnectorError>;

    /// Lists every record of the entity, ignoring any incremental read.
    fn list_all(&self, entity: &str) -> Result<Box<dyn PageReader>, ConnectorError>;

    /// [`Connector::list_all`] for the ids alone: the records' `data` may hold no more than
    /// their id and modified time (a full listing that finds deletions reads nothing else).
    fn list_ids(&self, entity: &str) -> Result<Box<dyn PageReader>, ConnectorError> {
        self.list_all(entity)
    }

    /// Reads the deletions since `cursor`, for entities whose deletions are a
    /// [`DeletionDiscovery::Feed`].
    fn deletions(
        &self,
        entity: &str,
        cursor: Option<&Cursor>,
    ) -> Result<Box<dyn PageReader>, ConnectorError>;

    /// Reads one record; `None` when it does not exist.
    fn get<'a>(
        &'a self,
        entity: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Record>, ConnectorError>>;

    /// Creates a record.
    fn create<'a>(
        &'a self,
        entity: &'a str,
        fields: Value,
    ) -> BoxFuture<'a, Result<Written, ConnectorError>>;

    /// Changes fields of a record; `changes` holds only what changed.
    fn update<'a>(
        &'a self,
        entity: &'a str,
        id: &'a str,
        changes: Value,
    ) -> BoxFuture<'a, Result<Written, ConnectorError>>;

    /// Deletes a record.
    fn delete<'a>(
        &'a self,
        entity: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Deleted, ConnectorError>>;

    /// Creates several records; one result per record, in order. The default sends them
    /// one by one.
    fn create_many<'a>(
        &'a self,
        entity: &'a str,
        records: Vec<Value>,
    ) -> BoxFuture<'a, Vec<Result<Written, ConnectorError>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(records.len());
            for fields in records {
                results.push(self.create(entity, fields).await);
            }
            results
        })
    }

    /// Updates several records (`(id, changes)`); one result per record, in order. The
    /// default sends them one by one.
    fn update_many<'a>(
        &'a self,
        entity: &'a str,
        updates: Vec<(String, Value)>,
    ) -> BoxFuture<'a, Vec<Result<Written, ConnectorError>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(updates.len());
            for (id, changes) in updates {
                results.push(self.update(entity, &id, changes).await);
            }
            results
        })
    }

    /// The counters so far.
    fn stats(&self) -> ConnectorStats;

    /// Requests the system takes in flight at once (`http.concurrency`); the engine sends
    /// independent requests side by side up to this many. The default: one at a time.
    fn concurrency(&self) -> usize {
        1
    }

    /// A run starts: budgets kept per run start again (the time the system's rate limits
    /// may make a run wait), and a system stopped in the last run
    /// ([`ConnectorError::stops_system`]) takes requests again. The engine calls it once
    /// at the start of every run; the default does nothing.
    fn start_run(&self) {}

    /// The entity's fields in the system file that the API does not have for the
    /// signed-in user (its `describe`, read once per run): fields differ per org. Empty
    /// for an entity without a describe; the default has none.
    fn missing_fields<'a>(
        &'a self,
        _entity: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, ConnectorError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Reads at most one record of the entity (a listing of one, a query with `LIMIT
    /// 1`), to see that it can be read: how many records came back. The default reads
    /// the first page of the whole listing.
    fn probe<'a>(&'a self, entity: &'a str) -> BoxFuture<'a, Result<usize, ConnectorError>> {
        Box::pin(async move {
            let mut reader = self.list_all(entity)?;
            Ok(reader
                .next_page()
                .await?
                .map_or(0, |page| page.records.len()))
        })
    }

    /// What the signed-in user may write, where the API says so without a write (an
    /// entity's describe); `None` where it cannot be asked. The default cannot ask.
    fn write_access<'a>(
        &'a self,
        _entity: &'a str,
    ) -> BoxFuture<'a, Result<Option<WriteAccess>, ConnectorError>> {
        Box::pin(async { Ok(None) })
    }
}
