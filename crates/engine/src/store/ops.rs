//! Every query of the state store, written once and compiled for both backends. (Over 1,000
//! lines: one statement per operation, kept together so the SQL can be read as one schema.)
//!
//! Each function takes a [`Conn`] (a pooled connection or an open transaction of either
//! backend) and runs the same SQL on it: the schema and the statements keep to what SQLite
//! and PostgreSQL share (`$n` parameters, `ON CONFLICT ... DO UPDATE`, `RETURNING`, text and
//! BIGINT columns). The `on!` macro expands a body (written like a closure) once per
//! backend, so the queries stay concrete (no generic executor bounds) while the text exists
//! once.
//!
//! No statement here is allowed to fail on data the engine can produce: unique conflicts are
//! absorbed with `ON CONFLICT` and reported as values, so that a PostgreSQL transaction is
//! never left aborted by an expected error.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Row};

use crate::store::StoreError;
use crate::store::model::{
    AlertIncident, Choice, Conflict, ConflictId, ConflictState, CreateIntent, Cursor, CursorKey,
    GlobalId, HistoryAction, HistoryChange, HistoryEntry, IntentId, IntentState, Lease, Link,
    LinkConflict, LinkOrigin, MappingStatus, NewConflict, NewHistory, NewIntent, NewRun,
    PARKED_ATTEMPTS_KEPT, PARKED_VALUE_MAX_CHARS, PairState, Park, ParkAttempt, ParkedRecord,
    RecordKey, Run, RunId, RunOutcome, Side, SideSeen, Unlinked, cut, new_id, parse_side, side_str,
};

/// A connection of either backend, borrowed from a pool or from a transaction.
pub(crate) enum Conn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

/// Runs `$body` with `$c` bound to the backend's connection, once per backend.
macro_rules! on {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => $body,
            Conn::Postgres($c) => $body,
        }
    };
}

/// How many record ids one `IN (...)` list carries.
const IN_LIST_CHUNK: usize = 500;

/// How many rows one multi-row statement writes. A statement is a round trip to the
/// database (for SQLite, to its worker thread): a batch of creates writes each table once,
/// not once per record. At a dozen columns this stays far below both backends' limits on
/// bound parameters.
const ROWS_PER_STATEMENT: usize = 100;

/// The `VALUES` rows of a multi-row statement: `rows` groups of `columns` numbered
/// placeholders, the first numbered `first`.
fn values_rows(rows: usize, columns: usize, first: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for column in 0..columns {
            if column > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(first + row * columns + column).to_string());
        }
        out.push(')');
    }
    out
}

/// `$first, $first+1, …`: the placeholders of an `IN (...)` list of `count` values.
fn in_list(count: usize, first: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `sql` with its `{ids}` replaced by the placeholders of `count` values that follow `head`
/// leading ones. Only numbered placeholders are spliced into the text; the values are bound.
fn with_in_list(sql: &str, head: usize, count: usize) -> String {
    sql.replace("{ids}", &in_list(count, head + 1))
}

/// The rows of `sql` for many values: one statement per [`IN_LIST_CHUNK`] of `ids`, the
/// `head` values bound first (`$1`…) and the chunk in `{ids}` (see [`with_in_list`]), each
/// row read by `read`.
async fn select_in<T>(
    mut conn: Conn<'_>,
    sql: &str,
    head: &[&str],
    ids: &[&str],
    read: impl Fn(&dyn Get) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(IN_LIST_CHUNK) {
        let sql = with_in_list(sql, head.len(), chunk.len());
        on!(&mut conn, |c| {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for value in head.iter().chain(chunk) {
                query = query.bind(*value);
            }
            for row in query.fetch_all(&mut **c).await? {
                out.push(read(&row)?);
            }
        });
    }
    Ok(out)
}

/// [`select_in`] for a statement that returns no rows; how many rows it changed.
async fn execute_in(
    mut conn: Conn<'_>,
    sql: &str,
    head: &[&str],
    ids: &[&str],
) -> Result<u64, StoreError> {
    let mut changed = 0;
    for chunk in ids.chunks(IN_LIST_CHUNK) {
        let sql = with_in_list(sql, head.len(), chunk.len());
        changed += on!(&mut conn, |c| {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for value in head.iter().chain(chunk) {
                query = query.bind(*value);
            }
            query.execute(&mut **c).await?.rows_affected()
        });
    }
    Ok(changed)
}

/// The text of each string, for binding.
fn strs(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Typed column reads shared by both backends' rows.
trait Get {
    fn text(&self, column: &'static str) -> Result<String, StoreError>;
    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError>;
    fn int(&self, column: &'static str) -> Result<i64, StoreError>;
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>, StoreError>;

    fn time(&self, column: &'static str) -> Result<DateTime<Utc>, StoreError> {
        let micros = self.int(column)?;
        DateTime::from_timestamp_micros(micros).ok_or_else(|| StoreError::Corrupt {
            what: column,
            value: micros.to_string(),
        })
    }

    fn opt_time(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self.opt_int(column)? {
            Some(_) => self.time(column).map(Some),
            None => Ok(None),
        }
    }

    fn json(&self, column: &'static str) -> Result<Value, StoreError> {
        let text = self.text(column)?;
        serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
            what: column,
            value: cut(&text, 80).to_owned(),
        })
    }

    fn opt_json(&self, column: &'static str) -> Result<Option<Value>, StoreError> {
        match self.opt_text(column)? {
            Some(_) => self.json(column).map(Some),
            None => Ok(None),
        }
    }

    fn names(&self, column: &'static str) -> Result<Vec<String>, StoreError> {
        let text = self.text(column)?;
        serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
            what: column,
            value: cut(&text, 80).to_owned(),
        })
    }

    fn side(&self, column: &'static str) -> Result<Side, StoreError> {
        parsed(column, self.text(column)?, parse_side)
    }
}

fn parsed<T>(
    what: &'static str,
    text: String,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, StoreError> {
    parse(&text).ok_or(StoreError::Corrupt { what, value: text })
}

macro_rules! impl_get {
    ($row:ty) => {
        impl Get for $row {
            fn text(&self, column: &'static str) -> Result<String, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn int(&self, column: &'static str) -> Result<i64, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn opt_int(&self, column: &'static str) -> Result<Option<i64>, StoreError> {
                Ok(self.try_get(column)?)
            }
        }
    };
}

impl_get!(SqliteRow);
impl_get!(PgRow);

fn all<R, T>(rows: &[R], read: impl Fn(&R) -> Result<T, StoreError>) -> Result<Vec<T>, StoreError> {
    rows.iter().map(read).collect()
}

// Global ids and links.

pub(crate) async fn new_global_id(conn: Conn<'_>, identity: &str) -> Result<GlobalId, StoreError> {
    let id = new_id();
    insert_global_ids(conn, identity, std::slice::from_ref(&id)).await?;
    Ok(GlobalId::new(id))
}

pub(crate) async fn new_global_ids(
    conn: Conn<'_>,
    identity: &str,
    count: usize,
) -> Result<Vec<GlobalId>, StoreError> {
    let ids: Vec<String> = (0..count).map(|_| new_id()).collect();
    insert_global_ids(conn, identity, &ids).await?;
    Ok(ids.into_iter().map(GlobalId::new).collect())
}

async fn insert_global_ids(
    mut conn: Conn<'_>,
    identity: &str,
    ids: &[String],
) -> Result<(), StoreError> {
    let now = micros(Utc::now());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        // Only numbered placeholders are spliced into the text; the values are bound.
        let sql = format!(
            "INSERT INTO global_ids (identity, global_id, created_at) VALUES {}",
            values_rows(chunk.len(), 3, 1)
        );
        on!(&mut conn, |c| {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(identity).bind(id).bind(now);
            }
            query.execute(&mut **c).await?;
        });
    }
    Ok(())
}

macro_rules! link_columns {
    () => {
        "system, entity, record_id, identity, global_id, origin, created_at"
    };
}

fn read_link(row: &(impl Get + ?Sized)) -> Result<Link, StoreError> {
    Ok(Link {
        identity: row.text("identity")?,
        global_id: GlobalId::new(row.text("global_id")?),
        record: RecordKey {
            system: row.text("system")?,
            entity: row.text("entity")?,
            id: row.text("record_id")?,
        },
        origin: parsed("origin", row.text("origin")?, LinkOrigin::parse)?,
        created_at: row.time("created_at")?,
    })
}

pub(crate) async fn link(
    mut conn: Conn<'_>,
    identity: &str,
    global_id: &GlobalId,
    record: &RecordKey,
    origin: LinkOrigin,
) -> Result<Link, StoreError> {
    // Nothing inserted means a link is in the way; the lookups find it unless a concurrent
    // unlink removed it in between, in which case the insert is tried again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Some(link) =
            insert_link(reborrow(&mut conn), identity, global_id, record, origin).await?
        {
            return Ok(link);
        }
        if let Some(existing) = link_by_record(reborrow(&mut conn), identity, record).await? {
            if existing.global_id == *global_id {
                return Ok(existing);
            }
            return Err(StoreError::LinkConflict(Box::new(
                LinkConflict::RecordLinked {
                    identity: identity.to_owned(),
                    record: record.clone(),
                    existing: existing.global_id,
                },
            )));
        }
        let taken = link_by_global(
            reborrow(&mut conn),
            identity,
            global_id,
            &record.system,
            &record.entity,
        )
        .await?;
        if let Some(taken) = taken {
            return Err(StoreError::LinkConflict(Box::new(
                LinkConflict::GlobalIdTaken {
                    identity: identity.to_owned(),
                    global_id: global_id.clone(),
                    existing: taken.record,
                },
            )));
        }
        if attempts == 3 {
            return Err(StoreError::Contended("link"));
        }
    }
}

/// Links records to global ids, as [`link`] does one by one: in one statement per
/// [`ROWS_PER_STATEMENT`] (and a check that the global ids exist), each link that meets one
/// in the way then settled by [`link`]. The links are returned in the order given.
pub(crate) async fn link_all(
    mut conn: Conn<'_>,
    identity: &str,
    links: &[(GlobalId, RecordKey)],
    origin: LinkOrigin,
) -> Result<Vec<Link>, StoreError> {
    let now = Utc::now();
    let created_at = DateTime::from_timestamp_micros(micros(now)).unwrap_or(now);
    let mut out = Vec::with_capacity(links.len());
    for chunk in links.chunks(ROWS_PER_STATEMENT) {
        // Checked first, so that the insert cannot break a PostgreSQL transaction on the
        // foreign key, and the error names the global id.
        let mut globals: Vec<&str> = chunk.iter().map(|(global, _)| global.as_str()).collect();
        globals.sort_unstable();
        globals.dedup();
        let known: std::collections::HashSet<String> = select_in(
            reborrow(&mut conn),
            "SELECT global_id FROM global_ids WHERE identity = $1 AND global_id IN ({ids})",
            &[identity],
            &globals,
            |row| row.text("global_id"),
        )
        .await?
        .into_iter()
        .collect();
        if let Some((global, _)) = chunk.iter().find(|(g, _)| !known.contains(g.as_str())) {
            return Err(StoreError::UnknownGlobalId {
                identity: identity.to_owned(),
                global_id: global.clone(),
            });
        }
        // Only numbered placeholders are spliced into the text; the values are bound.
        let sql = format!(
            "INSERT INTO links (system, entity, record_id, identity, global_id, origin, \
             created_at) VALUES {} ON CONFLICT DO NOTHING RETURNING system, entity, record_id",
            values_rows(chunk.len(), 7, 1)
        );
        let inserted: std::collections::HashSet<(String, String, String)> = on!(&mut conn, |c| {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (global, record) in chunk {
                query = query
                    .bind(&record.system)
                    .bind(&record.entity)
                    .bind(&record.id)
                    .bind(identity)
                    .bind(global.as_str())
                    .bind(origin.as_str())
                    .bind(micros(created_at));
            }
            let rows = query.fetch_all(&mut **c).await?;
            all(&rows, |row| {
                Ok((
                    row.text("system")?,
                    row.text("entity")?,
                    row.text("record_id")?,
                ))
            })?
        })
        .into_iter()
        .collect();
        let mut seen: std::collections::HashSet<&RecordKey> = std::collections::HashSet::new();
        for (global, record) in chunk {
            let key = (
                record.system.clone(),
                record.entity.clone(),
                record.id.clone(),
            );
            // A record given twice was inserted by its first row: the second is settled by
            // `link`, as it would be one after the other.
            if seen.insert(record) && inserted.contains(&key) {
                out.push(Link {
                    identity: identity.to_owned(),
                    global_id: global.clone(),
                    record: record.clone(),
                    origin,
                    created_at,
                });
            } else {
                out.push(link(reborrow(&mut conn), identity, global, record, origin).await?);
            }
        }
    }
    Ok(out)
}

/// Inserts a link unless one is in the way; `None` when one is.
async fn insert_link(
    conn: Conn<'_>,
    identity: &str,
    global_id: &GlobalId,
    record: &RecordKey,
    origin: LinkOrigin,
) -> Result<Option<Link>, StoreError> {
    // Stored with microsecond precision; the returned link says what was stored.
    let now = Utc::now();
    let created_at = DateTime::from_timestamp_micros(micros(now)).unwrap_or(now);
    let inserted = on!(conn, |c| {
        sqlx::query(
        "INSERT INTO links (system, entity, record_id, identity, global_id, origin, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(&record.system)
    .bind(&record.entity)
    .bind(&record.id)
    .bind(identity)
    .bind(global_id.as_str())
    .bind(origin.as_str())
    .bind(micros(created_at))
    .execute(c)
    .await
    .map(|done| done.rows_affected())
    });
    match inserted {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(Link {
            identity: identity.to_owned(),
            global_id: global_id.clone(),
            record: record.clone(),
            origin,
            created_at,
        })),
        Err(sqlx::Error::Database(error)) if error.kind() == ErrorKind::ForeignKeyViolation => {
            Err(StoreError::UnknownGlobalId {
                identity: identity.to_owned(),
                global_id: global_id.clone(),
            })
        }
        Err(error) => Err(error.into()),
    }
}

fn reborrow<'a>(conn: &'a mut Conn<'_>) -> Conn<'a> {
    match conn {
        Conn::Sqlite(c) => Conn::Sqlite(c),
        Conn::Postgres(c) => Conn::Postgres(c),
    }
}

pub(crate) async fn link_by_record(
    conn: Conn<'_>,
    identity: &str,
    record: &RecordKey,
) -> Result<Option<Link>, StoreError> {
    on!(conn, |c| sqlx::query(concat!(
        "SELECT ",
        link_columns!(),
        " FROM links \
         WHERE system = $1 AND entity = $2 AND record_id = $3 AND identity = $4"
    ))
    .bind(&record.system)
    .bind(&record.entity)
    .bind(&record.id)
    .bind(identity)
    .fetch_optional(c)
    .await?
    .map(|row| read_link(&row))
    .transpose())
}

pub(crate) async fn links_by_records(
    conn: Conn<'_>,
    identity: &str,
    system: &str,
    entity: &str,
    record_ids: &[String],
) -> Result<Vec<Link>, StoreError> {
    select_in(
        conn,
        concat!(
            "SELECT ",
            link_columns!(),
            " FROM links \
             WHERE identity = $1 AND system = $2 AND entity = $3 AND record_id IN ({ids})"
        ),
        &[identity, system, entity],
        &strs(record_ids),
        |row| read_link(row),
    )
    .await
}

/// The records of entity `to` linked to the same global ids as some records of entity
/// `from`, as (record id in `from`, record id in `to`); records without such a counterpart
/// are left out.
pub(crate) async fn linked_counterparts(
    conn: Conn<'_>,
    identity: &str,
    from_system: &str,
    from_entity: &str,
    to_system: &str,
    to_entity: &str,
    record_ids: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    select_in(
        conn,
        "SELECT a.record_id AS from_id, b.record_id AS to_id FROM links a \
         JOIN links b ON b.identity = a.identity AND b.global_id = a.global_id \
         AND b.system = $4 AND b.entity = $5 \
         WHERE a.identity = $1 AND a.system = $2 AND a.entity = $3 AND a.record_id IN ({ids})",
        &[identity, from_system, from_entity, to_system, to_entity],
        &strs(record_ids),
        |row| Ok((row.text("from_id")?, row.text("to_id")?)),
    )
    .await
}

/// Every link of one entity for an identity type.
pub(crate) async fn links_of_entity(
    conn: Conn<'_>,
    identity: &str,
    system: &str,
    entity: &str,
) -> Result<Vec<Link>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            link_columns!(),
            " FROM links WHERE identity = $1 AND system = $2 AND entity = $3"
        ))
        .bind(identity)
        .bind(system)
        .bind(entity)
        .fetch_all(c)
        .await?;
        all(&rows, read_link)
    })
}

/// Records the match key of a record a mapping read (`None` removes it).
pub(crate) async fn put_record_key(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    record_id: &str,
    key: Option<&str>,
) -> Result<(), StoreError> {
    put_record_keys(
        conn,
        mapping,
        side,
        &[(record_id.to_owned(), key.map(str::to_owned))],
    )
    .await
}

/// Records the match keys of records of one side (`None` removes a record's key); the last
/// key given for a record is the one kept.
pub(crate) async fn put_record_keys(
    mut conn: Conn<'_>,
    mapping: &str,
    side: Side,
    keys: &[(String, Option<String>)],
) -> Result<(), StoreError> {
    let keys = last_of_each(keys, |(id, _)| id.as_str());
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        // Only numbered placeholders are spliced into the text; the values are bound.
        let delete = format!(
            "DELETE FROM record_keys WHERE mapping = $1 AND side = $2 AND record_id IN ({})",
            in_list(chunk.len(), 3)
        );
        let kept: Vec<(&String, &String)> = chunk
            .iter()
            .filter_map(|(id, key)| key.as_ref().map(|key| (id, key)))
            .collect();
        let insert = format!(
            "INSERT INTO record_keys (mapping, side, record_id, match_key) VALUES {}",
            values_rows(kept.len(), 4, 1)
        );
        on!(&mut conn, |c| {
            let mut query = sqlx::query(AssertSqlSafe(delete))
                .bind(mapping)
                .bind(side_str(side));
            for (id, _) in chunk {
                query = query.bind(id);
            }
            query.execute(&mut **c).await?;
            if !kept.is_empty() {
                let mut query = sqlx::query(AssertSqlSafe(insert));
                for (id, key) in &kept {
                    query = query
                        .bind(mapping)
                        .bind(side_str(side))
                        .bind(*id)
                        .bind(*key);
                }
                query.execute(&mut **c).await?;
            }
        });
    }
    Ok(())
}

/// The stored match keys of some records of one side of a mapping, by record id (records
/// without one are left out).
pub(crate) async fn record_keys_of(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    record_ids: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    select_in(
        conn,
        "SELECT record_id, match_key FROM record_keys \
         WHERE mapping = $1 AND side = $2 AND record_id IN ({ids})",
        &[mapping, side_str(side)],
        &strs(record_ids),
        |row| Ok((row.text("record_id")?, row.text("match_key")?)),
    )
    .await
}

/// The records of one side of a mapping whose match key is `key`.
pub(crate) async fn find_record_keys(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    key: &str,
) -> Result<Vec<String>, StoreError> {
    let mut ids = on!(conn, |c| {
        let rows = sqlx::query(FIND_RECORD_KEYS)
            .bind(mapping)
            .bind(side_str(side))
            .bind(key)
            .fetch_all(c)
            .await?;
        all(&rows, |row| row.text("record_id"))
    })?;
    ids.sort_unstable();
    Ok(ids)
}

/// The records of one side of a mapping with one of `keys` as match key, as (key, record
/// id), sorted: the lookups of a chunk's records in one statement per [`IN_LIST_CHUNK`].
pub(crate) async fn find_records_by_keys(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    keys: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    let mut found = select_in(
        conn,
        FIND_RECORDS_BY_KEYS,
        &[mapping, side_str(side)],
        &strs(keys),
        |row| Ok((row.text("match_key")?, row.text("record_id")?)),
    )
    .await?;
    found.sort_unstable();
    found.dedup();
    Ok(found)
}

/// The lookup of many match keys (see [`select_in`]). Sorted by the caller, for the reason
/// below.
const FIND_RECORDS_BY_KEYS: &str = "SELECT match_key, record_id FROM record_keys \
     WHERE mapping = $1 AND side = $2 AND match_key IN ({ids})";

/// The records of one side with one match key. Sorted by the caller: with an `ORDER BY
/// record_id`, SQLite walks the primary key (every key of the mapping's side, one lookup
/// per record of a pass) instead of searching the key index.
const FIND_RECORD_KEYS: &str =
    "SELECT record_id FROM record_keys WHERE mapping = $1 AND side = $2 AND match_key = $3";

pub(crate) async fn link_by_global(
    conn: Conn<'_>,
    identity: &str,
    global_id: &GlobalId,
    system: &str,
    entity: &str,
) -> Result<Option<Link>, StoreError> {
    on!(conn, |c| sqlx::query(concat!(
        "SELECT ",
        link_columns!(),
        " FROM links \
         WHERE identity = $1 AND global_id = $2 AND system = $3 AND entity = $4"
    ))
    .bind(identity)
    .bind(global_id.as_str())
    .bind(system)
    .bind(entity)
    .fetch_optional(c)
    .await?
    .map(|row| read_link(&row))
    .transpose())
}

/// The records of a system entity linked to some global ids (any order; global ids without
/// one are left out).
pub(crate) async fn links_by_globals(
    conn: Conn<'_>,
    identity: &str,
    global_ids: &[GlobalId],
    system: &str,
    entity: &str,
) -> Result<Vec<Link>, StoreError> {
    let globals: Vec<&str> = global_ids.iter().map(GlobalId::as_str).collect();
    select_in(
        conn,
        concat!(
            "SELECT ",
            link_columns!(),
            " FROM links \
             WHERE identity = $1 AND system = $2 AND entity = $3 AND global_id IN ({ids})"
        ),
        &[identity, system, entity],
        &globals,
        |row| read_link(row),
    )
    .await
}

pub(crate) async fn links_of_global(
    conn: Conn<'_>,
    identity: &str,
    global_id: &GlobalId,
) -> Result<Vec<Link>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            link_columns!(),
            " FROM links WHERE identity = $1 AND global_id = $2 \
             ORDER BY system, entity"
        ))
        .bind(identity)
        .bind(global_id.as_str())
        .fetch_all(c)
        .await?;
        all(&rows, read_link)
    })
}

pub(crate) async fn unlink(
    conn: Conn<'_>,
    identity: &str,
    record: &RecordKey,
) -> Result<bool, StoreError> {
    let done = on!(conn, |c| {
        sqlx::query(
        "DELETE FROM links WHERE system = $1 AND entity = $2 AND record_id = $3 AND identity = $4",
    )
    .bind(&record.system)
    .bind(&record.entity)
    .bind(&record.id)
    .bind(identity)
    .execute(c)
    .await?
    .rows_affected()
    });
    Ok(done > 0)
}

// Pair states.

macro_rules! pair_columns {
    () => {
        "mapping, global_id, source_id, target_id, base, base_hash, \
    source_hash, source_modified_at, target_hash, target_modified_at, synced_at"
    };
}

fn read_pair(row: &(impl Get + ?Sized)) -> Result<PairState, StoreError> {
    Ok(PairState {
        mapping: row.text("mapping")?,
        global_id: GlobalId::new(row.text("global_id")?),
        source_id: row.text("source_id")?,
        target_id: row.text("target_id")?,
        base: row.json("base")?,
        base_hash: row.text("base_hash")?,
        source: SideSeen {
            hash: row.opt_text("source_hash")?,
            modified_at: row.opt_time("source_modified_at")?,
        },
        target: SideSeen {
            hash: row.opt_text("target_hash")?,
            modified_at: row.opt_time("target_modified_at")?,
        },
        synced_at: row.time("synced_at")?,
    })
}

pub(crate) async fn pair_state(
    conn: Conn<'_>,
    mapping: &str,
    global_id: &GlobalId,
) -> Result<Option<PairState>, StoreError> {
    on!(conn, |c| sqlx::query(concat!(
        "SELECT ",
        pair_columns!(),
        " FROM pair_states WHERE mapping = $1 AND global_id = $2"
    ))
    .bind(mapping)
    .bind(global_id.as_str())
    .fetch_optional(c)
    .await?
    .map(|row| read_pair(&row))
    .transpose())
}

pub(crate) async fn pair_states(
    conn: Conn<'_>,
    mapping: &str,
) -> Result<Vec<PairState>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            pair_columns!(),
            " FROM pair_states WHERE mapping = $1 ORDER BY global_id"
        ))
        .bind(mapping)
        .fetch_all(c)
        .await?;
        all(&rows, read_pair)
    })
}

/// The pair states of a mapping whose record on `side` is one of `record_ids`.
pub(crate) async fn pair_states_of_records(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    record_ids: &[String],
) -> Result<Vec<PairState>, StoreError> {
    let sql = match side {
        Side::Source => concat!(
            "SELECT ",
            pair_columns!(),
            " FROM pair_states WHERE mapping = $1 AND source_id IN ({ids})"
        ),
        Side::Target => concat!(
            "SELECT ",
            pair_columns!(),
            " FROM pair_states WHERE mapping = $1 AND target_id IN ({ids})"
        ),
    };
    select_in(conn, sql, &[mapping], &strs(record_ids), |row| {
        read_pair(row)
    })
    .await
}

pub(crate) async fn seen_hashes_of_records(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    record_ids: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    let sql = match side {
        Side::Source => {
            "SELECT source_id AS id, source_hash AS hash FROM pair_states \
             WHERE mapping = $1 AND source_hash IS NOT NULL AND source_id IN ({ids})"
        }
        Side::Target => {
            "SELECT target_id AS id, target_hash AS hash FROM pair_states \
             WHERE mapping = $1 AND target_hash IS NOT NULL AND target_id IN ({ids})"
        }
    };
    select_in(conn, sql, &[mapping], &strs(record_ids), |row| {
        Ok((row.text("id")?, row.text("hash")?))
    })
    .await
}

/// The record ids on one side of every pair of a mapping.
pub(crate) async fn paired_ids(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
) -> Result<Vec<String>, StoreError> {
    let sql = match side {
        Side::Source => "SELECT source_id AS record_id FROM pair_states WHERE mapping = $1",
        Side::Target => "SELECT target_id AS record_id FROM pair_states WHERE mapping = $1",
    };
    on!(conn, |c| {
        let rows = sqlx::query(sql).bind(mapping).fetch_all(c).await?;
        all(&rows, |row| row.text("record_id"))
    })
}

/// Whether any pair of a mapping was last synced before `before`.
pub(crate) async fn any_pair_synced_before(
    conn: Conn<'_>,
    mapping: &str,
    before: DateTime<Utc>,
) -> Result<bool, StoreError> {
    on!(conn, |c| {
        let row = sqlx::query(
            "SELECT 1 AS one FROM pair_states WHERE mapping = $1 AND synced_at < $2 LIMIT 1",
        )
        .bind(mapping)
        .bind(micros(before))
        .fetch_optional(c)
        .await?;
        Ok(row.is_some())
    })
}

/// How many pairs of a mapping were last synced before `before`.
pub(crate) async fn count_pairs_synced_before(
    conn: Conn<'_>,
    mapping: &str,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    on!(conn, |c| {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM pair_states WHERE mapping = $1 AND synced_at < $2",
        )
        .bind(mapping)
        .bind(micros(before))
        .fetch_one(c)
        .await?;
        Ok(count(row.int("n")?))
    })
}

pub(crate) async fn put_pair_state(conn: Conn<'_>, state: &PairState) -> Result<(), StoreError> {
    put_pair_states(conn, std::slice::from_ref(state)).await
}

pub(crate) async fn put_pair_states(
    mut conn: Conn<'_>,
    states: &[PairState],
) -> Result<(), StoreError> {
    // One statement may not upsert a row twice (PostgreSQL refuses): the last state of a
    // pair is the one written, as if they were written one after the other.
    let states = last_of_each(states, |state| (&state.mapping, state.global_id.as_str()));
    for chunk in states.chunks(ROWS_PER_STATEMENT) {
        // Only numbered placeholders are spliced into the text; the values are bound.
        let sql = format!(
            "INSERT INTO pair_states (mapping, global_id, source_id, target_id, base, \
             base_hash, source_hash, source_modified_at, target_hash, target_modified_at, \
             synced_at) VALUES {} \
             ON CONFLICT (mapping, global_id) DO UPDATE SET \
             source_id = excluded.source_id, target_id = excluded.target_id, \
             base = excluded.base, base_hash = excluded.base_hash, \
             source_hash = excluded.source_hash, \
             source_modified_at = excluded.source_modified_at, \
             target_hash = excluded.target_hash, \
             target_modified_at = excluded.target_modified_at, synced_at = excluded.synced_at",
            values_rows(chunk.len(), 11, 1)
        );
        on!(&mut conn, |c| {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for state in chunk {
                query = query
                    .bind(&state.mapping)
                    .bind(state.global_id.as_str())
                    .bind(&state.source_id)
                    .bind(&state.target_id)
                    .bind(state.base.to_string())
                    .bind(&state.base_hash)
                    .bind(state.source.hash.as_deref())
                    .bind(state.source.modified_at.map(micros))
                    .bind(state.target.hash.as_deref())
                    .bind(state.target.modified_at.map(micros))
                    .bind(micros(state.synced_at));
            }
            query.execute(&mut **c).await?;
        });
    }
    Ok(())
}

/// The last of the items sharing a key, in the order of their first appearance.
fn last_of_each<'a, T, K: std::hash::Hash + Eq>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut at: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    let mut out: Vec<&T> = Vec::with_capacity(items.len());
    for item in items {
        match at.entry(key(item)) {
            std::collections::hash_map::Entry::Occupied(slot) => out[*slot.get()] = item,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(out.len());
                out.push(item);
            }
        }
    }
    out
}

pub(crate) async fn delete_pair_state(
    conn: Conn<'_>,
    mapping: &str,
    global_id: &GlobalId,
) -> Result<bool, StoreError> {
    let done = on!(conn, |c| sqlx::query(
        "DELETE FROM pair_states WHERE mapping = $1 AND global_id = $2",
    )
    .bind(mapping)
    .bind(global_id.as_str())
    .execute(c)
    .await?
    .rows_affected());
    Ok(done > 0)
}

// Cursors.

pub(crate) async fn cursor(conn: Conn<'_>, key: &CursorKey) -> Result<Option<String>, StoreError> {
    on!(conn, |c| Ok(sqlx::query(
        "SELECT position FROM cursors \
         WHERE mapping = $1 AND side = $2 AND system = $3 AND entity = $4",
    )
    .bind(&key.mapping)
    .bind(side_str(key.side))
    .bind(&key.system)
    .bind(&key.entity)
    .fetch_optional(c)
    .await?
    .map(|row| row.text("position"))
    .transpose()?))
}

fn read_cursor(row: &impl Get) -> Result<Cursor, StoreError> {
    Ok(Cursor {
        key: CursorKey {
            mapping: row.text("mapping")?,
            side: row.side("side")?,
            system: row.text("system")?,
            entity: row.text("entity")?,
        },
        position: row.text("position")?,
        updated_at: row.time("updated_at")?,
    })
}

macro_rules! cursor_columns {
    () => {
        "mapping, side, system, entity, position, updated_at"
    };
}

pub(crate) async fn cursors(conn: Conn<'_>, mapping: &str) -> Result<Vec<Cursor>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            cursor_columns!(),
            " FROM cursors WHERE mapping = $1 \
             ORDER BY side, system, entity"
        ))
        .bind(mapping)
        .fetch_all(c)
        .await?;
        all(&rows, read_cursor)
    })
}

pub(crate) async fn set_cursor(
    conn: Conn<'_>,
    key: &CursorKey,
    position: &str,
) -> Result<(), StoreError> {
    on!(conn, |c| sqlx::query(
        "INSERT INTO cursors (mapping, side, system, entity, position, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (mapping, side, system, entity) DO UPDATE SET \
         position = excluded.position, updated_at = excluded.updated_at",
    )
    .bind(&key.mapping)
    .bind(side_str(key.side))
    .bind(&key.system)
    .bind(&key.entity)
    .bind(position)
    .bind(micros(Utc::now()))
    .execute(c)
    .await
    .map(|_| ())?);
    Ok(())
}

/// Removes every stored cursor of a mapping (both sides, records and deletion feeds), so its
/// next reads start from the beginning; how many there were.
pub(crate) async fn clear_cursors(conn: Conn<'_>, mapping: &str) -> Result<u64, StoreError> {
    on!(conn, |c| Ok(sqlx::query(
        "DELETE FROM cursors WHERE mapping = $1"
    )
    .bind(mapping)
    .execute(c)
    .await?
    .rows_affected()))
}

// Create intents.

macro_rules! intent_columns {
    () => {
        "id, mapping, side, source_record_id, global_id, match_values, \
    payload_hash, state, created_record_id, created_at, resolved_at"
    };
}

fn read_intent(row: &impl Get) -> Result<CreateIntent, StoreError> {
    Ok(CreateIntent {
        id: IntentId::new(row.text("id")?),
        mapping: row.text("mapping")?,
        side: row.side("side")?,
        source_record_id: row.text("source_record_id")?,
        global_id: GlobalId::new(row.text("global_id")?),
        match_values: row.json("match_values")?,
        payload_hash: row.text("payload_hash")?,
        state: parsed("intent state", row.text("state")?, IntentState::parse)?,
        created_record_id: row.opt_text("created_record_id")?,
        created_at: row.time("created_at")?,
        resolved_at: row.opt_time("resolved_at")?,
    })
}

pub(crate) async fn record_intent(
    conn: Conn<'_>,
    intent: &NewIntent,
) -> Result<CreateIntent, StoreError> {
    let mut recorded = record_intents(conn, std::slice::from_ref(intent)).await?;
    recorded.pop().ok_or(StoreError::Corrupt {
        what: "create intent",
        value: "(none recorded)".to_owned(),
    })
}

pub(crate) async fn record_intents(
    mut conn: Conn<'_>,
    intents: &[NewIntent],
) -> Result<Vec<CreateIntent>, StoreError> {
    // Each a microsecond after the one before: "oldest first" is the order given.
    let first = micros(Utc::now());
    let mut recorded = Vec::with_capacity(intents.len());
    for (n, chunk) in intents.chunks(ROWS_PER_STATEMENT).enumerate() {
        let stamps: Vec<i64> = (0..chunk.len())
            .map(|i| first + i64::try_from(n * ROWS_PER_STATEMENT + i).unwrap_or(i64::MAX))
            .collect();
        let ids: Vec<String> = chunk.iter().map(|_| new_id()).collect();
        // Only numbered placeholders are spliced into the text; the values are bound.
        let sql = format!(
            "INSERT INTO create_intents (id, mapping, side, source_record_id, global_id, \
             match_values, payload_hash, state, created_at) VALUES {}",
            values_rows(chunk.len(), 9, 1)
        );
        on!(&mut conn, |c| {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for ((intent, id), stamp) in chunk.iter().zip(&ids).zip(&stamps) {
                query = query
                    .bind(id)
                    .bind(&intent.mapping)
                    .bind(side_str(intent.side))
                    .bind(&intent.source_record_id)
                    .bind(intent.global_id.as_str())
                    .bind(intent.match_values.to_string())
                    .bind(&intent.payload_hash)
                    .bind(IntentState::Pending.as_str())
                    .bind(*stamp);
            }
            query.execute(&mut **c).await?;
        });
        let stamped = ids.into_iter().zip(stamps);
        recorded.extend(
            chunk
                .iter()
                .zip(stamped)
                .map(|(intent, (id, stamp))| CreateIntent {
                    id: IntentId::new(id),
                    mapping: intent.mapping.clone(),
                    side: intent.side,
                    source_record_id: intent.source_record_id.clone(),
                    global_id: intent.global_id.clone(),
                    match_values: intent.match_values.clone(),
                    payload_hash: intent.payload_hash.clone(),
                    state: IntentState::Pending,
                    created_record_id: None,
                    created_at: DateTime::from_timestamp_micros(stamp).unwrap_or_else(Utc::now),
                    resolved_at: None,
                }),
        );
    }
    Ok(recorded)
}

pub(crate) async fn open_intents(
    conn: Conn<'_>,
    mapping: &str,
) -> Result<Vec<CreateIntent>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            intent_columns!(),
            " FROM create_intents \
             WHERE mapping = $1 AND state = 'pending' ORDER BY created_at, id"
        ))
        .bind(mapping)
        .fetch_all(c)
        .await?;
        all(&rows, read_intent)
    })
}

pub(crate) async fn intent(
    conn: Conn<'_>,
    id: &IntentId,
) -> Result<Option<CreateIntent>, StoreError> {
    on!(conn, |c| sqlx::query(concat!(
        "SELECT ",
        intent_columns!(),
        " FROM create_intents WHERE id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(c)
    .await?
    .map(|row| read_intent(&row))
    .transpose())
}

async fn resolve_intent(
    conn: Conn<'_>,
    id: &IntentId,
    state: IntentState,
    created_record_id: Option<&str>,
) -> Result<(), StoreError> {
    let done = on!(conn, |c| sqlx::query(
        "UPDATE create_intents SET state = $2, created_record_id = $3, resolved_at = $4 \
         WHERE id = $1 AND state = 'pending'",
    )
    .bind(id.as_str())
    .bind(state.as_str())
    .bind(created_record_id)
    .bind(micros(Utc::now()))
    .execute(c)
    .await?
    .rows_affected());
    if done == 0 {
        return Err(StoreError::IntentNotPending(id.clone()));
    }
    Ok(())
}

pub(crate) async fn complete_intent(
    conn: Conn<'_>,
    id: &IntentId,
    created_record_id: &str,
) -> Result<(), StoreError> {
    resolve_intent(conn, id, IntentState::Done, Some(created_record_id)).await
}

/// Marks pending intents done, each with the id of its created record, in one statement
/// per [`ROWS_PER_STATEMENT`]; an intent that was not pending fails it as
/// [`complete_intent`] does.
pub(crate) async fn complete_intents(
    mut conn: Conn<'_>,
    done: &[(IntentId, String)],
) -> Result<(), StoreError> {
    let now = micros(Utc::now());
    for chunk in done.chunks(ROWS_PER_STATEMENT) {
        // Only numbered placeholders are spliced into the text; the values are bound.
        let cases = (0..chunk.len())
            .map(|n| format!("WHEN ${} THEN ${}", 3 + 2 * n, 4 + 2 * n))
            .collect::<Vec<_>>()
            .join(" ");
        let ids = in_list(chunk.len(), 3 + 2 * chunk.len());
        let sql = format!(
            "UPDATE create_intents SET state = $1, resolved_at = $2, \
             created_record_id = CASE id {cases} END \
             WHERE state = 'pending' AND id IN ({ids}) RETURNING id"
        );
        let updated: std::collections::HashSet<String> = on!(&mut conn, |c| {
            let mut query = sqlx::query(AssertSqlSafe(sql))
                .bind(IntentState::Done.as_str())
                .bind(now);
            for (id, created) in chunk {
                query = query.bind(id.as_str()).bind(created);
            }
            for (id, _) in chunk {
                query = query.bind(id.as_str());
            }
            let rows = query.fetch_all(&mut **c).await?;
            all(&rows, |row| row.text("id"))?
        })
        .into_iter()
        .collect();
        if let Some((id, _)) = chunk.iter().find(|(id, _)| !updated.contains(id.as_str())) {
            return Err(StoreError::IntentNotPending(id.clone()));
        }
    }
    Ok(())
}

pub(crate) async fn abandon_intent(conn: Conn<'_>, id: &IntentId) -> Result<(), StoreError> {
    resolve_intent(conn, id, IntentState::Abandoned, None).await
}

// Parked records.

macro_rules! parked_columns {
    () => {
        "mapping, side, record_id, reason, field, value, attempts, \
    first_parked_at, last_tried_at, skipped_at, skipped_hash, deleting, retry_at"
    };
}

fn read_parked(row: &impl Get) -> Result<ParkedRecord, StoreError> {
    Ok(ParkedRecord {
        mapping: row.text("mapping")?,
        side: row.side("side")?,
        record_id: row.text("record_id")?,
        reason: row.text("reason")?,
        field: row.opt_text("field")?,
        value: row.opt_text("value")?,
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
        first_parked_at: row.time("first_parked_at")?,
        last_tried_at: row.time("last_tried_at")?,
        skipped_at: row.opt_time("skipped_at")?,
        skipped_hash: row.opt_text("skipped_hash")?,
        deleting: row.int("deleting")? != 0,
        retry_at: row.opt_time("retry_at")?,
    })
}

pub(crate) async fn park(mut conn: Conn<'_>, park: &Park) -> Result<ParkedRecord, StoreError> {
    let value = park
        .value
        .as_deref()
        .map(|value| cut(value, PARKED_VALUE_MAX_CHARS));
    let now = micros(Utc::now());
    // Parked again means tried again: a record set aside is tried only once its content
    // changed, so the mark goes with the new attempt.
    on!(&mut conn, |c| {
        let row = sqlx::query(concat!(
            "INSERT INTO parked (mapping, side, record_id, reason, field, value, attempts, \
             first_parked_at, last_tried_at, deleting, retry_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7, $8, $9) \
             ON CONFLICT (mapping, side, record_id) DO UPDATE SET \
             reason = excluded.reason, field = excluded.field, value = excluded.value, \
             attempts = parked.attempts + 1, last_tried_at = excluded.last_tried_at, \
             skipped_at = NULL, skipped_hash = NULL, deleting = excluded.deleting, \
             retry_at = excluded.retry_at \
             RETURNING ",
            parked_columns!()
        ))
        .bind(&park.mapping)
        .bind(side_str(park.side))
        .bind(&park.record_id)
        .bind(&park.reason)
        .bind(park.field.as_deref())
        .bind(value)
        .bind(now)
        .bind(i64::from(park.deleting))
        .bind(park.retry_at.map(micros))
        .fetch_one(&mut **c)
        .await?;
        sqlx::query(
            "INSERT INTO parked_attempts (mapping, side, record_id, at, reason) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&park.mapping)
        .bind(side_str(park.side))
        .bind(&park.record_id)
        .bind(now)
        .bind(&park.reason)
        .execute(&mut **c)
        .await?;
        // The latest attempts are kept; older ones go.
        sqlx::query(
            "DELETE FROM parked_attempts \
             WHERE mapping = $1 AND side = $2 AND record_id = $3 AND at < (\
             SELECT at FROM parked_attempts \
             WHERE mapping = $1 AND side = $2 AND record_id = $3 \
             ORDER BY at DESC LIMIT 1 OFFSET $4)",
        )
        .bind(&park.mapping)
        .bind(side_str(park.side))
        .bind(&park.record_id)
        .bind(i64::try_from(PARKED_ATTEMPTS_KEPT - 1).unwrap_or(0))
        .execute(&mut **c)
        .await?;
        read_parked(&row)
    })
}

pub(crate) async fn unpark(
    mut conn: Conn<'_>,
    mapping: &str,
    side: Side,
    record_id: &str,
) -> Result<bool, StoreError> {
    delete_record_row(
        reborrow(&mut conn),
        "DELETE FROM parked_attempts WHERE mapping = $1 AND side = $2 AND record_id = $3",
        mapping,
        side,
        record_id,
    )
    .await?;
    delete_record_row(
        conn,
        "DELETE FROM parked WHERE mapping = $1 AND side = $2 AND record_id = $3",
        mapping,
        side,
        record_id,
    )
    .await
}

pub(crate) async fn skip_parked(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    record_id: &str,
    content_hash: &str,
) -> Result<bool, StoreError> {
    let done = on!(conn, |c| sqlx::query(
        "UPDATE parked SET skipped_at = $4, skipped_hash = $5 \
         WHERE mapping = $1 AND side = $2 AND record_id = $3",
    )
    .bind(mapping)
    .bind(side_str(side))
    .bind(record_id)
    .bind(micros(Utc::now()))
    .bind(content_hash)
    .execute(c)
    .await?
    .rows_affected());
    Ok(done > 0)
}

pub(crate) async fn unskip_parked(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    record_id: &str,
) -> Result<bool, StoreError> {
    delete_record_row(
        conn,
        "UPDATE parked SET skipped_at = NULL, skipped_hash = NULL \
         WHERE mapping = $1 AND side = $2 AND record_id = $3 AND skipped_at IS NOT NULL",
        mapping,
        side,
        record_id,
    )
    .await
}

pub(crate) async fn retry_parked_now(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    record_id: &str,
) -> Result<bool, StoreError> {
    delete_record_row(
        conn,
        "UPDATE parked SET retry_at = NULL \
         WHERE mapping = $1 AND side = $2 AND record_id = $3 AND retry_at IS NOT NULL",
        mapping,
        side,
        record_id,
    )
    .await
}

pub(crate) async fn parked_attempts(
    conn: Conn<'_>,
    mapping: Option<&str>,
) -> Result<Vec<ParkAttempt>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(
            "SELECT mapping, side, record_id, at, reason FROM parked_attempts \
             WHERE ($1 IS NULL OR mapping = $1) ORDER BY mapping, side, record_id, at",
        )
        .bind(mapping)
        .fetch_all(c)
        .await?;
        all(&rows, |row| {
            Ok(ParkAttempt {
                mapping: row.text("mapping")?,
                side: row.side("side")?,
                record_id: row.text("record_id")?,
                at: row.time("at")?,
                reason: row.text("reason")?,
            })
        })
    })
}

/// Runs a statement keyed by mapping, side and record id (`$1` to `$3`); whether a row was
/// touched.
async fn delete_record_row(
    conn: Conn<'_>,
    sql: &'static str,
    mapping: &str,
    side: Side,
    record_id: &str,
) -> Result<bool, StoreError> {
    let done = on!(conn, |c| sqlx::query(sql)
        .bind(mapping)
        .bind(side_str(side))
        .bind(record_id)
        .execute(c)
        .await?
        .rows_affected());
    Ok(done > 0)
}

pub(crate) async fn parked(
    conn: Conn<'_>,
    mapping: Option<&str>,
) -> Result<Vec<ParkedRecord>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            parked_columns!(),
            " FROM parked WHERE ($1 IS NULL OR mapping = $1) \
             ORDER BY mapping, side, record_id"
        ))
        .bind(mapping)
        .fetch_all(c)
        .await?;
        all(&rows, read_parked)
    })
}

pub(crate) async fn parked_counts(conn: Conn<'_>) -> Result<Vec<(String, u64)>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(
            "SELECT mapping, COUNT(*) AS n FROM parked GROUP BY mapping ORDER BY mapping",
        )
        .fetch_all(c)
        .await?;
        all(&rows, |row| {
            Ok((row.text("mapping")?, count(row.int("n")?)))
        })
    })
}

// Unlinked records.

pub(crate) async fn put_unlinked(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    record_id: &str,
    content_hash: &str,
) -> Result<(), StoreError> {
    on!(conn, |c| sqlx::query(
        "INSERT INTO unlinked (mapping, side, record_id, content_hash, unlinked_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (mapping, side, record_id) \
         DO UPDATE SET content_hash = excluded.content_hash, unlinked_at = excluded.unlinked_at",
    )
    .bind(mapping)
    .bind(side_str(side))
    .bind(record_id)
    .bind(content_hash)
    .bind(micros(Utc::now()))
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

pub(crate) async fn remove_unlinked(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    record_id: &str,
) -> Result<bool, StoreError> {
    delete_record_row(
        conn,
        "DELETE FROM unlinked WHERE mapping = $1 AND side = $2 AND record_id = $3",
        mapping,
        side,
        record_id,
    )
    .await
}

/// [`remove_unlinked`] for many records of one side; how many entries there were.
pub(crate) async fn remove_unlinked_all(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    record_ids: &[String],
) -> Result<u64, StoreError> {
    execute_in(
        conn,
        "DELETE FROM unlinked WHERE mapping = $1 AND side = $2 AND record_id IN ({ids})",
        &[mapping, side_str(side)],
        &strs(record_ids),
    )
    .await
}

fn read_unlinked(row: &(impl Get + ?Sized)) -> Result<Unlinked, StoreError> {
    Ok(Unlinked {
        mapping: row.text("mapping")?,
        side: row.side("side")?,
        record_id: row.text("record_id")?,
        content_hash: row.text("content_hash")?,
        unlinked_at: row.time("unlinked_at")?,
    })
}

pub(crate) async fn unlinked(conn: Conn<'_>, mapping: &str) -> Result<Vec<Unlinked>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(
            "SELECT mapping, side, record_id, content_hash, unlinked_at FROM unlinked \
             WHERE mapping = $1 ORDER BY side, record_id",
        )
        .bind(mapping)
        .fetch_all(c)
        .await?;
        all(&rows, read_unlinked)
    })
}

/// The entries of some records of one side among [`unlinked`] (any order).
pub(crate) async fn unlinked_of_records(
    conn: Conn<'_>,
    mapping: &str,
    side: Side,
    record_ids: &[String],
) -> Result<Vec<Unlinked>, StoreError> {
    select_in(
        conn,
        "SELECT mapping, side, record_id, content_hash, unlinked_at FROM unlinked \
         WHERE mapping = $1 AND side = $2 AND record_id IN ({ids})",
        &[mapping, side_str(side)],
        &strs(record_ids),
        |row| read_unlinked(row),
    )
    .await
}

// The change log.

macro_rules! history_columns {
    () => {
        "id, run_id, at, mapping, identity, global_id, system, entity, record_id, action, changes"
    };
}

fn read_history(row: &impl Get) -> Result<HistoryEntry, StoreError> {
    let text = row.text("changes")?;
    let changes: Vec<HistoryChange> =
        serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
            what: "changes",
            value: cut(&text, 80).to_owned(),
        })?;
    Ok(HistoryEntry {
        id: row.text("id")?,
        at: row.time("at")?,
        run_id: row.opt_text("run_id")?.map(RunId::new),
        mapping: row.text("mapping")?,
        identity: row.text("identity")?,
        global_id: GlobalId::new(row.text("global_id")?),
        record: RecordKey {
            system: row.text("system")?,
            entity: row.text("entity")?,
            id: row.text("record_id")?,
        },
        action: parsed("history action", row.text("action")?, HistoryAction::parse)?,
        changes,
    })
}

pub(crate) async fn record_history(conn: Conn<'_>, entry: &NewHistory) -> Result<(), StoreError> {
    record_histories(conn, std::slice::from_ref(entry)).await
}

pub(crate) async fn record_histories(
    mut conn: Conn<'_>,
    entries: &[NewHistory],
) -> Result<(), StoreError> {
    // Each a microsecond after the one before: the change log reads in the order given.
    let first = micros(Utc::now());
    for (n, chunk) in entries.chunks(ROWS_PER_STATEMENT).enumerate() {
        let changes = chunk
            .iter()
            .map(|entry| {
                serde_json::to_string(&entry.changes).map_err(|error| StoreError::Corrupt {
                    what: "changes",
                    value: error.to_string(),
                })
            })
            .collect::<Result<Vec<String>, StoreError>>()?;
        // Only numbered placeholders are spliced into the text; the values are bound.
        let sql = format!(
            concat!("INSERT INTO history (", history_columns!(), ") VALUES {}"),
            values_rows(chunk.len(), 11, 1)
        );
        on!(&mut conn, |c| {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (i, (entry, changes)) in chunk.iter().zip(&changes).enumerate() {
                let stamp = first + i64::try_from(n * ROWS_PER_STATEMENT + i).unwrap_or(0);
                query = query
                    .bind(new_id())
                    .bind(entry.run_id.as_ref().map(RunId::as_str))
                    .bind(stamp)
                    .bind(&entry.mapping)
                    .bind(&entry.identity)
                    .bind(entry.global_id.as_str())
                    .bind(&entry.record.system)
                    .bind(&entry.record.entity)
                    .bind(&entry.record.id)
                    .bind(entry.action.as_str())
                    .bind(changes);
            }
            query.execute(&mut **c).await?;
        });
    }
    Ok(())
}

pub(crate) async fn history_of_global(
    conn: Conn<'_>,
    identity: &str,
    global_id: &GlobalId,
) -> Result<Vec<HistoryEntry>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            history_columns!(),
            " FROM history WHERE identity = $1 AND global_id = $2 ORDER BY at, id"
        ))
        .bind(identity)
        .bind(global_id.as_str())
        .fetch_all(c)
        .await?;
        all(&rows, read_history)
    })
}

pub(crate) async fn history_of_record(
    conn: Conn<'_>,
    record: &RecordKey,
) -> Result<Vec<HistoryEntry>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            history_columns!(),
            " FROM history WHERE system = $1 AND entity = $2 AND record_id = $3 ORDER BY at, id"
        ))
        .bind(&record.system)
        .bind(&record.entity)
        .bind(&record.id)
        .fetch_all(c)
        .await?;
        all(&rows, read_history)
    })
}

pub(crate) async fn prune_history(
    conn: Conn<'_>,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    Ok(on!(conn, |c| sqlx::query(
        "DELETE FROM history WHERE at < $1"
    )
    .bind(micros(before))
    .execute(c)
    .await?
    .rows_affected()))
}

/// Every link of a record, whatever its identity type.
pub(crate) async fn links_of_record(
    conn: Conn<'_>,
    record: &RecordKey,
) -> Result<Vec<Link>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            link_columns!(),
            " FROM links WHERE system = $1 AND entity = $2 AND record_id = $3 ORDER BY identity"
        ))
        .bind(&record.system)
        .bind(&record.entity)
        .bind(&record.id)
        .fetch_all(c)
        .await?;
        all(&rows, read_link)
    })
}

// Conflicts.

macro_rules! conflict_columns {
    () => {
        "id, run_id, mapping, global_id, field, source_value, target_value, base_value, \
    resolution, winner, at, state, choice, resolved_at, applied_at"
    };
}

fn read_conflict(row: &impl Get) -> Result<Conflict, StoreError> {
    Ok(Conflict {
        id: ConflictId::new(row.text("id")?),
        run_id: RunId::new(row.text("run_id")?),
        mapping: row.text("mapping")?,
        global_id: GlobalId::new(row.text("global_id")?),
        field: row.text("field")?,
        source_value: row.json("source_value")?,
        target_value: row.json("target_value")?,
        base_value: row.opt_json("base_value")?,
        resolution: row.text("resolution")?,
        winner: match row.opt_text("winner")? {
            Some(text) => Some(parsed("winner", text, parse_side)?),
            None => None,
        },
        at: row.time("at")?,
        state: parsed("conflict state", row.text("state")?, ConflictState::parse)?,
        choice: match row.opt_json("choice")? {
            Some(value) => {
                Some(
                    serde_json::from_value(value.clone()).map_err(|_| StoreError::Corrupt {
                        what: "choice",
                        value: cut(&value.to_string(), 80).to_owned(),
                    })?,
                )
            }
            None => None,
        },
        resolved_at: row.opt_time("resolved_at")?,
        applied_at: row.opt_time("applied_at")?,
    })
}

pub(crate) async fn record_conflict(
    conn: Conn<'_>,
    conflict: &NewConflict,
) -> Result<Conflict, StoreError> {
    let state = match conflict.winner {
        Some(_) => ConflictState::Decided,
        None => ConflictState::Held,
    };
    on!(conn, |c| {
        let row = sqlx::query(concat!(
            "INSERT INTO conflicts (id, run_id, mapping, global_id, field, source_value, \
             target_value, base_value, resolution, winner, at, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING ",
            conflict_columns!()
        ))
        .bind(new_id())
        .bind(conflict.run_id.as_str())
        .bind(&conflict.mapping)
        .bind(conflict.global_id.as_str())
        .bind(&conflict.field)
        .bind(conflict.source_value.to_string())
        .bind(conflict.target_value.to_string())
        .bind(conflict.base_value.as_ref().map(Value::to_string))
        .bind(&conflict.resolution)
        .bind(conflict.winner.map(side_str))
        .bind(micros(Utc::now()))
        .bind(state.as_str())
        .fetch_one(c)
        .await?;
        read_conflict(&row)
    })
}

pub(crate) async fn recent_conflicts(
    conn: Conn<'_>,
    mapping: Option<&str>,
    limit: u32,
) -> Result<Vec<Conflict>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            conflict_columns!(),
            " FROM conflicts WHERE ($1 IS NULL OR mapping = $1) \
             ORDER BY at DESC, id DESC LIMIT $2"
        ))
        .bind(mapping)
        .bind(i64::from(limit))
        .fetch_all(c)
        .await?;
        all(&rows, read_conflict)
    })
}

pub(crate) async fn open_conflicts(
    conn: Conn<'_>,
    mapping: Option<&str>,
) -> Result<Vec<Conflict>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            conflict_columns!(),
            " FROM conflicts WHERE state IN ('held', 'resolved') \
             AND ($1 IS NULL OR mapping = $1) ORDER BY at, id"
        ))
        .bind(mapping)
        .fetch_all(c)
        .await?;
        all(&rows, read_conflict)
    })
}

pub(crate) async fn conflict(
    conn: Conn<'_>,
    id: &ConflictId,
) -> Result<Option<Conflict>, StoreError> {
    on!(conn, |c| sqlx::query(concat!(
        "SELECT ",
        conflict_columns!(),
        " FROM conflicts WHERE id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(c)
    .await?
    .map(|row| read_conflict(&row))
    .transpose())
}

pub(crate) async fn resolve_conflict(
    conn: Conn<'_>,
    id: &ConflictId,
    choice: &Choice,
) -> Result<Option<Conflict>, StoreError> {
    let winner = match choice {
        Choice::Source => Some(Side::Source),
        Choice::Target => Some(Side::Target),
        Choice::Value(_) => None,
    };
    let choice = serde_json::to_string(choice).map_err(|error| StoreError::Corrupt {
        what: "choice",
        value: error.to_string(),
    })?;
    on!(conn, |c| sqlx::query(concat!(
        "UPDATE conflicts SET state = 'resolved', choice = $2, winner = $3, resolved_at = $4 \
         WHERE id = $1 AND state = 'held' RETURNING ",
        conflict_columns!()
    ))
    .bind(id.as_str())
    .bind(choice)
    .bind(winner.map(side_str))
    .bind(micros(Utc::now()))
    .fetch_optional(c)
    .await?
    .map(|row| read_conflict(&row))
    .transpose())
}

pub(crate) async fn apply_conflict(conn: Conn<'_>, id: &ConflictId) -> Result<bool, StoreError> {
    let done = on!(conn, |c| sqlx::query(
        "UPDATE conflicts SET state = 'applied', applied_at = $2 \
         WHERE id = $1 AND state = 'resolved'",
    )
    .bind(id.as_str())
    .bind(micros(Utc::now()))
    .execute(c)
    .await?
    .rows_affected());
    Ok(done > 0)
}

// Runs.

macro_rules! run_columns {
    () => {
        "id, flows, mappings, worker, run_trigger, started_at, finished_at, outcome, summary"
    };
}

fn read_run(row: &impl Get) -> Result<Run, StoreError> {
    Ok(Run {
        id: RunId::new(row.text("id")?),
        flows: row.names("flows")?,
        mappings: row.names("mappings")?,
        worker: row.opt_text("worker")?,
        trigger: row.opt_text("run_trigger")?,
        started_at: row.time("started_at")?,
        finished_at: row.opt_time("finished_at")?,
        outcome: match row.opt_text("outcome")? {
            Some(text) => Some(parsed("run outcome", text, RunOutcome::parse)?),
            None => None,
        },
        summary: row.opt_json("summary")?,
    })
}

fn names_json(names: &[String]) -> String {
    Value::from(names.to_vec()).to_string()
}

pub(crate) async fn start_run(mut conn: Conn<'_>, run: &NewRun) -> Result<Run, StoreError> {
    let id = new_id();
    let started_at = micros(Utc::now());
    let row = on!(&mut conn, |c| {
        let row = sqlx::query(concat!(
            "INSERT INTO runs (id, flows, mappings, worker, started_at, run_trigger) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
            run_columns!()
        ))
        .bind(&id)
        .bind(names_json(&run.flows))
        .bind(names_json(&run.mappings))
        .bind(run.worker.as_deref())
        .bind(started_at)
        .bind(run.trigger.as_deref())
        .fetch_one(&mut **c)
        .await?;
        for mapping in &run.mappings {
            sqlx::query(
                "INSERT INTO run_mappings (mapping, run_id, started_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(mapping)
            .bind(&id)
            .bind(started_at)
            .execute(&mut **c)
            .await?;
        }
        read_run(&row)?
    });
    Ok(row)
}

pub(crate) async fn finish_run(
    conn: Conn<'_>,
    id: &RunId,
    outcome: RunOutcome,
    summary: &Value,
) -> Result<Run, StoreError> {
    let row = on!(conn, |c| sqlx::query(concat!(
        "UPDATE runs SET finished_at = $2, outcome = $3, summary = $4 \
         WHERE id = $1 AND finished_at IS NULL RETURNING ",
        run_columns!()
    ))
    .bind(id.as_str())
    .bind(micros(Utc::now()))
    .bind(outcome.as_str())
    .bind(summary.to_string())
    .fetch_optional(c)
    .await?
    .map(|row| read_run(&row))
    .transpose()?);
    row.ok_or_else(|| StoreError::RunNotOpen(id.clone()))
}

pub(crate) async fn run(conn: Conn<'_>, id: &RunId) -> Result<Option<Run>, StoreError> {
    on!(conn, |c| sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(c)
    .await?
    .map(|row| read_run(&row))
    .transpose())
}

pub(crate) async fn last_run(conn: Conn<'_>, mapping: &str) -> Result<Option<Run>, StoreError> {
    on!(conn, |c| sqlx::query(
        "SELECT runs.* FROM run_mappings JOIN runs ON runs.id = run_mappings.run_id \
         WHERE run_mappings.mapping = $1 \
         ORDER BY run_mappings.started_at DESC, run_mappings.run_id DESC LIMIT 1",
    )
    .bind(mapping)
    .fetch_optional(c)
    .await?
    .map(|row| read_run(&row))
    .transpose())
}

pub(crate) async fn recent_runs(conn: Conn<'_>, limit: u32) -> Result<Vec<Run>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs ORDER BY started_at DESC, id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(c)
        .await?;
        all(&rows, read_run)
    })
}

// Alert incidents.

fn read_incident(row: &impl Get) -> Result<AlertIncident, StoreError> {
    Ok(AlertIncident {
        incident: row.text("incident")?,
        kind: row.text("kind")?,
        subject: row.text("subject")?,
        message: row.text("message")?,
        opened_at: row.time("opened_at")?,
    })
}

pub(crate) async fn alert_incidents(conn: Conn<'_>) -> Result<Vec<AlertIncident>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(
            "SELECT incident, kind, subject, message, opened_at FROM alert_incidents \
             ORDER BY opened_at, incident",
        )
        .fetch_all(c)
        .await?;
        all(&rows, read_incident)
    })
}

pub(crate) async fn open_alert_incident(
    conn: Conn<'_>,
    incident: &AlertIncident,
) -> Result<(), StoreError> {
    on!(conn, |c| sqlx::query(
        "INSERT INTO alert_incidents (incident, kind, subject, message, opened_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (incident) DO NOTHING",
    )
    .bind(&incident.incident)
    .bind(&incident.kind)
    .bind(&incident.subject)
    .bind(&incident.message)
    .bind(micros(incident.opened_at))
    .execute(c)
    .await
    .map(|_| ())?);
    Ok(())
}

pub(crate) async fn close_alert_incident(
    conn: Conn<'_>,
    incident: &str,
) -> Result<bool, StoreError> {
    on!(conn, |c| Ok(sqlx::query(
        "DELETE FROM alert_incidents WHERE incident = $1"
    )
    .bind(incident)
    .execute(c)
    .await?
    .rows_affected()
        > 0))
}

// Leases.

macro_rules! lease_columns {
    () => {
        "mapping, worker, acquired_at, expires_at"
    };
}

fn read_lease(row: &impl Get) -> Result<Lease, StoreError> {
    Ok(Lease {
        mapping: row.text("mapping")?,
        worker: row.text("worker")?,
        acquired_at: row.time("acquired_at")?,
        expires_at: row.time("expires_at")?,
    })
}

pub(crate) async fn try_acquire_lease(
    conn: Conn<'_>,
    mapping: &str,
    worker: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<Option<Lease>, StoreError> {
    // One statement: the row lock taken by the upsert makes the check and the takeover
    // atomic on PostgreSQL, and SQLite runs it under its single write lock.
    on!(conn, |c| sqlx::query(concat!(
        "INSERT INTO leases (mapping, worker, acquired_at, expires_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (mapping) DO UPDATE SET \
         acquired_at = CASE WHEN leases.worker = excluded.worker \
             AND leases.expires_at > excluded.acquired_at \
             THEN leases.acquired_at ELSE excluded.acquired_at END, \
         worker = excluded.worker, expires_at = excluded.expires_at \
         WHERE leases.worker = excluded.worker OR leases.expires_at <= excluded.acquired_at \
         RETURNING ",
        lease_columns!()
    ))
    .bind(mapping)
    .bind(worker)
    .bind(micros(now))
    .bind(micros(expires_at))
    .fetch_optional(c)
    .await?
    .map(|row| read_lease(&row))
    .transpose())
}

pub(crate) async fn release_lease(
    conn: Conn<'_>,
    mapping: &str,
    worker: &str,
) -> Result<bool, StoreError> {
    let done = on!(conn, |c| sqlx::query(
        "DELETE FROM leases WHERE mapping = $1 AND worker = $2",
    )
    .bind(mapping)
    .bind(worker)
    .execute(c)
    .await?
    .rows_affected());
    Ok(done > 0)
}

pub(crate) async fn leases(conn: Conn<'_>) -> Result<Vec<Lease>, StoreError> {
    on!(conn, |c| {
        let rows = sqlx::query(concat!(
            "SELECT ",
            lease_columns!(),
            " FROM leases ORDER BY mapping"
        ))
        .fetch_all(c)
        .await?;
        all(&rows, read_lease)
    })
}

// Status.

pub(crate) async fn status(mut conn: Conn<'_>) -> Result<Vec<MappingStatus>, StoreError> {
    let mut by_mapping: BTreeMap<String, MappingStatus> = BTreeMap::new();
    fn entry(
        by_mapping: &mut BTreeMap<String, MappingStatus>,
        mapping: String,
    ) -> &mut MappingStatus {
        by_mapping
            .entry(mapping.clone())
            .or_insert_with(|| MappingStatus {
                mapping,
                pairs: 0,
                parked: 0,
                open_intents: 0,
                last_run: None,
                cursors: Vec::new(),
            })
    }
    const COUNTS: &str = "SELECT 'pairs' AS what, mapping, COUNT(*) AS n FROM pair_states \
        GROUP BY mapping \
        UNION ALL SELECT 'parked', mapping, COUNT(*) FROM parked GROUP BY mapping \
        UNION ALL SELECT 'intents', mapping, COUNT(*) FROM create_intents \
        WHERE state = 'pending' GROUP BY mapping";
    const CURSORS: &str = concat!(
        "SELECT ",
        cursor_columns!(),
        " FROM cursors ORDER BY mapping, side, system, entity"
    );
    const LAST_RUNS: &str = "SELECT run_mappings.mapping AS run_mapping, runs.* \
         FROM run_mappings JOIN runs ON runs.id = run_mappings.run_id \
         WHERE run_mappings.started_at = (SELECT MAX(latest.started_at) FROM run_mappings latest \
         WHERE latest.mapping = run_mappings.mapping) \
         ORDER BY run_mappings.mapping, run_mappings.run_id DESC";
    on!(&mut conn, |c| {
        for row in sqlx::query(COUNTS).fetch_all(&mut **c).await? {
            let n = count(row.int("n")?);
            let status = entry(&mut by_mapping, row.text("mapping")?);
            match row.text("what")?.as_str() {
                "pairs" => status.pairs = n,
                "parked" => status.parked = n,
                _ => status.open_intents = n,
            }
        }
        for row in sqlx::query(CURSORS).fetch_all(&mut **c).await? {
            let cursor = read_cursor(&row)?;
            entry(&mut by_mapping, cursor.key.mapping.clone())
                .cursors
                .push(cursor);
        }
        for row in sqlx::query(LAST_RUNS).fetch_all(&mut **c).await? {
            let status = entry(&mut by_mapping, row.text("run_mapping")?);
            if status.last_run.is_none() {
                status.last_run = Some(read_run(&row)?);
            }
        }
    });
    Ok(by_mapping.into_values().collect())
}

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;

    use super::*;

    #[tokio::test]
    async fn a_match_key_lookup_searches_the_key_index() {
        let mut c = SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite");
        sqlx::raw_sql(include_str!("migrations/0002_record_keys.sql"))
            .execute(&mut c)
            .await
            .expect("table");
        let uses_key_index = |details: &[String]| {
            details
                .iter()
                .any(|d| d.contains("record_keys_by_key (mapping=? AND side=? AND match_key=?)"))
        };
        let details = query_plan(&mut c, FIND_RECORD_KEYS.to_owned(), &["m", "source", "k"]).await;
        assert!(uses_key_index(&details), "{details:?}");
        // The lookup of a chunk's keys at once searches the same index, key by key.
        let details = query_plan(
            &mut c,
            with_in_list(FIND_RECORDS_BY_KEYS, 2, 3),
            &["m", "source", "k1", "k2", "k3"],
        )
        .await;
        assert!(uses_key_index(&details), "{details:?}");
    }

    /// The lines of SQLite's plan for `sql` with `binds`.
    async fn query_plan(c: &mut SqliteConnection, sql: String, binds: &[&str]) -> Vec<String> {
        let mut query = sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
        for bind in binds {
            query = query.bind(*bind);
        }
        let plan = query.fetch_all(c).await.expect("plan");
        plan.iter()
            .map(|row| row.try_get::<String, _>("detail").expect("detail"))
            .collect()
    }

    #[test]
    fn multi_row_statements_number_their_placeholders_row_by_row() {
        assert_eq!(values_rows(2, 3, 1), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values_rows(1, 2, 4), "($4, $5)");
        assert_eq!(values_rows(0, 2, 1), "");
        assert_eq!(in_list(3, 3), "$3, $4, $5");
    }

    #[test]
    fn a_batch_keeps_the_last_of_each_key_in_the_place_of_the_first() {
        let items = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)];
        let kept: Vec<&(&str, i32)> = last_of_each(&items, |(key, _)| *key);
        assert_eq!(kept, [&("a", 3), &("b", 5), &("c", 4)]);
    }
}
