//! Reads page by page: entity listings (whole, modified-since, SOQL, sync-token feeds),
//! tombstone listings and Salesforce deletion windows. (Over 1,000 lines: the readers share
//! the pager, the guard and the clock bookkeeping, and their unit tests live here.)
//!
//! Each reader computes everything that can fail for a page (request, answer, next
//! position) before it changes any state, so an error leaves it where it was and the same
//! page can be asked for again. Pagination follows the system file: offset/limit (stops on
//! the total, or on a short page without one), page numbers (stops at the total page
//! count), opaque cursors (stops when the cursor is null or empty, or an empty page sends
//! back the cursor it was asked with) and next links (stops on a done flag, a missing link,
//! an empty page, or a short page where the API sends a link even on the last page). Next
//! links are resolved against the page's URL and refused, when followed, if they leave the
//! allowed origins.
//!
//! A listing whose API does not let it end is stopped with
//! [`ConnectorError::EndlessListing`] ([`Guard`]): a page with the same ids as an earlier
//! page of the listing (an API that ignores the offset, page or cursor), a cursor or next
//! link already followed, or more pages than the entity's `list.max_pages`.
//!
//! A listed item's nested query results that came back in part (a Salesforce child
//! relationship past about 200 children: `done: false` and a next link of its own) are
//! read to the end before the page is handed out ([`complete_children`]), for listings and
//! for single-record reads alike.
//!
//! Every page's versions are compared with the system's clock when it answered (its `Date`
//! header, or this machine's clock at the read): one stamped further ahead than
//! [`crate::connector::CLOCK_TOLERANCE`] is handed out and reported in [`Page::ahead`], and
//! does not move the cursor. Items that cannot be records (no id, or an id that cannot
//! address one) are reported in [`Page::malformed`].

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use reqwest::Url;
use serde_json::Value;

use crate::connector::compiled::{Deletes, EntityRt, IncrementalRt, Paging, Tombstones};
use crate::connector::cursor::{Admit, Tracker, minus};
use crate::connector::describe;
use crate::connector::error::ConnectorError;
use crate::connector::http::{HttpCore, Request, join_path};
use crate::connector::project::Projection;
use crate::connector::value::{self, JsonPath};
use crate::connector::{Ahead, BoxFuture, Cursor, Deletion, Malformed, Page, PageReader, Record};

/// The largest SOQL `LIMIT` a sliced read grows to when one timestamp holds more records.
const MAX_SOQL_LIMIT: u64 = 50_000;
/// How far back a first `getDeleted` read starts: inside the 15 days Salesforce keeps
/// deletions, with a day to spare for clocks that differ.
const SALESFORCE_FIRST_DAYS: i64 = 14;
/// The longest window one `getDeleted` request may cover.
const SALESFORCE_WINDOW_DAYS: i64 = 15;

/// Where the next page of a listing is.
#[derive(Debug, Clone, PartialEq)]
enum Position {
    First,
    Offset(u64),
    Page(u64),
    Cursor(String),
    Url(Url),
    Done,
}

/// The request side of one paginated listing.
#[derive(Debug)]
struct Pager {
    path: String,
    query: Vec<(String, String)>,
    position: Position,
    /// The page size asked for instead of the entity's (a probe asks for one record).
    size: Option<u64>,
}

impl Pager {
    fn new(path: &str, query: Vec<(String, String)>) -> Pager {
        Pager {
            path: path.to_owned(),
            query,
            position: Position::First,
            size: None,
        }
    }

    fn done(&self) -> bool {
        self.position == Position::Done
    }

    /// The URL of the current page.
    fn url(&self, api_base: &Url, paging: &Paging) -> Result<Url, String> {
        if let Position::Url(url) = &self.position {
            return Ok(url.clone());
        }
        let size_of = |size: &u64| self.size.unwrap_or(*size).to_string();
        let mut url = join_path(api_base, &self.path)?;
        let mut params: Vec<(String, String)> = self.query.clone();
        match (paging, &self.position) {
            (
                Paging::Offset {
                    offset_param,
                    limit_param,
                    size,
                    ..
                },
                position,
            ) => {
                let offset = match position {
                    Position::Offset(offset) => *offset,
                    _ => 0,
                };
                params.push((offset_param.clone(), offset.to_string()));
                params.push((limit_param.clone(), size_of(size)));
            }
            (
                Paging::Page {
                    page_param,
                    size_param,
                    size,
                    first_page,
                    ..
                },
                position,
            ) => {
                let page = match position {
                    Position::Page(page) => *page,
                    _ => *first_page,
                };
                params.push((page_param.clone(), page.to_string()));
                params.push((size_param.clone(), size_of(size)));
            }
            (
                Paging::Cursor {
                    cursor_param,
                    size_param,
                    size,
                    ..
                },
                position,
            ) => {
                if let Some(size_param) = size_param {
                    params.push((size_param.clone(), size_of(size)));
                }
                if let Position::Cursor(cursor) = position {
                    params.push((cursor_param.clone(), cursor.clone()));
                }
            }
            (
                Paging::NextUrl {
                    size_param: Some(size_param),
                    size: Some(size),
                    ..
                },
                _,
            ) => params.push((size_param.clone(), size_of(size))),
            _ => {}
        }
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        Ok(url)
    }

    /// Adds to a next link every parameter of the listing's own query that the link lacks.
    ///
    /// A next link that carries the page size is the request's query rebuilt with the
    /// offset moved, and real APIs rebuild it from part of the query only. Real behaviour:
    /// Keap v1 builds `next` from `limit`, `offset`, `since` and `order` and drops
    /// `optional_properties` (`contracts/keap.md`, "v1 list envelope example"), so a client
    /// that follows it as it is reads contacts without `job_title` from the second page on.
    /// Parameters the link does carry keep the link's value.
    fn reapply_query(&self, url: &mut Url) {
        let present: HashSet<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let missing: Vec<&(String, String)> = self
            .query
            .iter()
            .filter(|(key, _)| !present.contains(key))
            .collect();
        if !missing.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(missing.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
    }

    /// Where the page after this one is, from its answer and its number of items.
    fn next(
        &self,
        paging: &Paging,
        body: &Value,
        count: usize,
        answered: &Url,
    ) -> Result<Position, String> {
        let count = count as u64;
        let number = |path: &JsonPath| {
            path.first(body).and_then(|v| match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
        };
        Ok(match paging {
            Paging::None => Position::Done,
            Paging::Offset { size, total, .. } => {
                let offset = match self.position {
                    Position::Offset(offset) => offset,
                    _ => 0,
                };
                let next = offset + count;
                let finished = count == 0
                    || match total.as_ref().and_then(number) {
                        Some(total) => next >= total,
                        None => count < *size,
                    };
                if finished {
                    Position::Done
                } else {
                    Position::Offset(next)
                }
            }
            Paging::Page {
                size,
                first_page,
                total_pages,
                ..
            } => {
                let page = match self.position {
                    Position::Page(page) => page,
                    _ => *first_page,
                };
                let finished = count == 0
                    || match number(total_pages) {
                        Some(total) => page + 1 - first_page >= total,
                        None => count < *size,
                    };
                if finished {
                    Position::Done
                } else {
                    Position::Page(page + 1)
                }
            }
            Paging::Cursor { next_cursor, .. } => {
                match next_cursor.first(body).and_then(value::id_string) {
                    None => Position::Done,
                    Some(cursor)
                        if count == 0 && self.position == Position::Cursor(cursor.clone()) =>
                    {
                        Position::Done
                    }
                    Some(cursor) => Position::Cursor(cursor),
                }
            }
            Paging::NextUrl {
                next,
                done,
                size,
                size_param,
                stop_on_short_page,
            } => {
                let flagged_done = done
                    .as_ref()
                    .and_then(|d| d.first(body))
                    .is_some_and(|v| v.as_bool() == Some(true));
                let short = *stop_on_short_page && size.is_some_and(|size| count < size);
                let link = next
                    .first(body)
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty());
                match link {
                    _ if flagged_done || short || count == 0 => Position::Done,
                    None => Position::Done,
                    Some(link) => {
                        let mut url = answered
                            .join(link)
                            .map_err(|e| format!("the next link is not a URL: {e}"))?;
                        if size_param.is_some() {
                            self.reapply_query(&mut url);
                        }
                        Position::Url(url)
                    }
                }
            }
        })
    }
}

/// What stops a listing that would not end: a page bound, pages already seen (by their
/// ids) and cursors or links already followed. Checked before a page is taken, so a
/// listing that trips it stays where it was.
#[derive(Debug)]
struct Guard {
    max_pages: u64,
    /// Pages taken so far.
    pages: u64,
    /// One hash of the sorted ids of each page taken.
    seen_pages: HashSet<u64>,
    /// The URLs asked and answered, and the cursors sent (`cursor:<c>`).
    followed: HashSet<String>,
}

impl Guard {
    fn new(max_pages: u64) -> Guard {
        Guard {
            max_pages,
            pages: 0,
            seen_pages: HashSet::new(),
            followed: HashSet::new(),
        }
    }

    /// Before a request: why no further page may be asked for.
    fn before(&self) -> Option<String> {
        (self.pages >= self.max_pages).then(|| {
            format!(
                "it has more than {} pages (`list.max_pages`)",
                self.max_pages
            )
        })
    }

    /// The key of a page with these ids; `None` for an empty page.
    fn key(mut ids: Vec<String>) -> Option<u64> {
        if ids.is_empty() {
            return None;
        }
        ids.sort_unstable();
        let mut hasher = DefaultHasher::new();
        ids.hash(&mut hasher);
        Some(hasher.finish())
    }

    /// After an answer to a request for `current` (asked at `asked`, answered by
    /// `answered`): why it shows that the listing does not end.
    fn check(
        &self,
        key: Option<u64>,
        (current, asked, answered): (&Position, &Url, &Url),
        next: &Position,
    ) -> Option<String> {
        if key.is_some_and(|key| self.seen_pages.contains(&key)) {
            return Some(
                "the API answered a page with the same records as an earlier page \
                 (it ignores the paging parameters)"
                    .to_owned(),
            );
        }
        match next {
            Position::Cursor(cursor)
                if current == next || self.followed.contains(&format!("cursor:{cursor}")) =>
            {
                Some(format!(
                    "the API sent back the cursor `{}` already followed",
                    value::truncate(cursor, 60)
                ))
            }
            Position::Url(url)
                if url == asked || url == answered || self.followed.contains(url.as_str()) =>
            {
                Some(format!(
                    "the API sent back a next link already followed ({})",
                    value::redact_url(url)
                ))
            }
            _ => None,
        }
    }

    /// Takes a page: its key, the URLs that asked and answered it and the cursor it was
    /// asked with.
    fn take(&mut self, key: Option<u64>, asked: &Url, answered: &Url, position: &Position) {
        self.pages += 1;
        if let Some(key) = key {
            self.seen_pages.insert(key);
        }
        self.followed.insert(asked.as_str().to_owned());
        self.followed.insert(answered.as_str().to_owned());
        if let Position::Cursor(cursor) = position {
            self.followed.insert(format!("cursor:{cursor}"));
        }
    }

    /// A new query within the same read (a SOQL slice): its pages may repeat records of
    /// the last slice; the page bound still counts every page.
    fn restart(&mut self) {
        self.seen_pages.clear();
        self.followed.clear();
    }
}

/// The ids of a page's items at `id`, or an item's text when it has none.
fn page_ids(id: &JsonPath, items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| {
            id.first(item)
                .and_then(value::id_text)
                .unwrap_or_else(|| item.to_string())
        })
        .collect()
}

fn endless(core: &HttpCore, entity: &str, guard: &Guard, reason: String) -> ConnectorError {
    ConnectorError::EndlessListing {
        system: core.system.clone(),
        entity: entity.to_owned(),
        pages: guard.pages,
        reason,
    }
}

/// Logs the versions of a page stamped ahead of the system's clock.
fn log_ahead(core: &HttpCore, entity: &str, ahead: &[Ahead]) {
    if let Some(first) = ahead.first() {
        let ids: Vec<&str> = ahead.iter().take(20).map(|a| a.id.as_str()).collect();
        tracing::warn!(system = %core.system, entity, count = ahead.len(),
            ids = %ids.join(", "), clock = %first.clock,
            "records are stamped ahead of the system's clock; they are synced, but their \
             times do not move the cursor");
    }
}

/// How many items [`take_items`] would take from a page; `None` when `path` selects nothing.
fn count_items(path: &JsonPath, body: &Value) -> Option<usize> {
    match path.select(body).as_slice() {
        [] => None,
        [Value::Array(items)] => Some(items.len()),
        [Value::Null] => Some(0),
        many => Some(many.len()),
    }
}

/// The items at `path` in a page, taken out of it (a page of a thousand records is not
/// copied): the elements of the array it selects, or every value it selects; `None` when
/// it selects nothing.
fn take_items(path: &JsonPath, body: &mut Value) -> Option<Vec<Value>> {
    let mut selected = path.take(body);
    match selected.len() {
        0 => None,
        1 => Some(match selected.pop() {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => Vec::new(),
            Some(one) => vec![one],
        }),
        _ => Some(selected),
    }
}

pub(crate) fn truthy(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        _ => false,
    }
}

/// Fetches one page and returns its JSON body and the URL that answered.
async fn fetch(
    core: &HttpCore,
    entity: &str,
    pager: &Pager,
    paging: &Paging,
    projection: Option<&Arc<Projection>>,
) -> Result<(Value, Url, Url, Option<DateTime<Utc>>), ConnectorError> {
    let api_base = core.api_base().await?;
    let url = pager
        .url(&api_base, paging)
        .map_err(|message| ConnectorError::Config {
            system: core.system.clone(),
            message: format!("entity `{entity}`: {message}"),
        })?;
    let (body, answered, date) = fetch_url(core, entity, url.clone(), projection).await?;
    Ok((body, answered, url, date))
}

/// GETs one URL of a listing and returns its JSON body, the URL that answered and its `Date`.
async fn fetch_url(
    core: &HttpCore,
    entity: &str,
    url: Url,
    projection: Option<&Arc<Projection>>,
) -> Result<(Value, Url, Option<DateTime<Utc>>), ConnectorError> {
    let mut request = Request::get(url, entity);
    request.projection = projection.cloned();
    let reply = core.send(&request).await?;
    if !reply.is_success() {
        return Err(ConnectorError::Status {
            context: core.context(&request.method, &reply.url, entity),
            status: reply.status,
            error: core.api_error(reply.status, reply.json.as_ref(), &reply.text),
            retry_after: None,
        });
    }
    match reply.json {
        Some(body) => Ok((body, reply.url, reply.date)),
        None => Err(ConnectorError::Malformed {
            context: core.context(&request.method, &reply.url, entity),
            message: "the body is empty".to_owned(),
            transient: true,
        }),
    }
}

/// Completes the nested query results of one listed item: a field whose value has the
/// page's own shape (records at the entity's `records` path, a `done` flag that is false
/// and a next link) is a child relationship that came back in part, and its further pages
/// are read and appended until it is done. Only entities paged by next links with a `done`
/// flag have such results (Salesforce SOQL).
///
/// Real behaviour (SOQL and SOSL Reference, "Understanding Relationship Query Results";
/// REST API Developer Guide, "Query More Results"): a parent-to-child subquery with more
/// than about 200 children answers the first batch with `done: false` and a
/// `nextRecordsUrl` of its own; the client reads it like the next page of a query.
/// Clients that read only the top level lose the rest silently (simple-salesforce issue
/// 311, jsforce pull request 1752).
pub(crate) async fn complete_children(
    core: &HttpCore,
    entity: &EntityRt,
    item: &mut Value,
    answered: &Url,
) -> Result<(), ConnectorError> {
    let Paging::NextUrl {
        next,
        done: Some(done),
        ..
    } = &entity.paging
    else {
        return Ok(());
    };
    let Some(fields) = item.as_object_mut() else {
        return Ok(());
    };
    for (field, child) in fields.iter_mut() {
        if !child.is_object() || done.first(child).and_then(Value::as_bool) != Some(false) {
            continue;
        }
        let Some(Value::Array(records)) = entity.records.first(child).cloned() else {
            continue;
        };
        let mut records = records;
        let mut link = next_link(next, child, answered);
        let mut followed: HashSet<String> = HashSet::new();
        let mut pages = 0u64;
        while let Some(url) = link {
            pages += 1;
            if !followed.insert(url.as_str().to_owned()) || pages > entity.max_pages {
                return Err(ConnectorError::EndlessListing {
                    system: core.system.clone(),
                    entity: entity.name.clone(),
                    pages,
                    reason: format!(
                        "the child records at `{field}` do not end (a next link already followed, or more than `list.max_pages` pages)"
                    ),
                });
            }
            let (body, answered, _) = fetch_url(core, &entity.name, url.clone(), None).await?;
            let Some(Value::Array(more)) = entity.records.first(&body) else {
                return Err(shape_error(
                    core,
                    &entity.name,
                    &url,
                    format!(
                        "a page of the child records at `{field}` has no array at `{}`",
                        entity.records.as_str()
                    ),
                ));
            };
            let empty = more.is_empty();
            records.extend(more.iter().cloned());
            let finished = done.first(&body).and_then(Value::as_bool) != Some(false);
            link = if finished || empty {
                None
            } else {
                next_link(next, &body, &answered)
            };
        }
        if let Some(object) = child.as_object_mut() {
            object.insert("records".to_owned(), Value::Array(records));
            object.insert("done".to_owned(), Value::Bool(true));
            if let Some(key) = next.as_str().strip_prefix("$.") {
                object.remove(key);
            }
        }
    }
    Ok(())
}

/// The next link of a page (or of a nested result), resolved against the URL that
/// answered it.
fn next_link(next: &JsonPath, body: &Value, answered: &Url) -> Option<Url> {
    next.first(body)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|link| answered.join(link).ok())
}

/// When the system answered the pages of one read, by its own clock (`clock: date_header`).
///
/// A complete read whose first page the system answered at `D` has handed out every record
/// modified before `D` that was there to be read, so its cursor may move to `D` even when
/// it found nothing newer than the last change. The next read asks from `D` minus the
/// lookback, so a record stamped just before `D` but not yet visible (a late commit, an
/// update racing the read) is still read then, as it is after a watermark set by a record.
/// Without this, the cursor stays at the newest change and every read asks again for the
/// lookback window before it. The earliest `Date` of the read counts (the first page's);
/// a page without one leaves the cursor to the records.
#[derive(Debug, Default)]
enum AnsweredAt {
    #[default]
    NoPage,
    At(DateTime<Utc>),
    Unknown,
}

impl AnsweredAt {
    fn page(&mut self, date: Option<DateTime<Utc>>) {
        *self = match (&*self, date) {
            (AnsweredAt::NoPage, Some(d)) => AnsweredAt::At(d),
            (AnsweredAt::At(at), Some(d)) => AnsweredAt::At((*at).min(d)),
            _ => AnsweredAt::Unknown,
        };
    }

    fn earliest(&self) -> Option<DateTime<Utc>> {
        match self {
            AnsweredAt::At(at) => Some(*at),
            _ => None,
        }
    }
}

fn shape_error(core: &HttpCore, entity: &str, url: &Url, message: String) -> ConnectorError {
    ConnectorError::Malformed {
        context: core.context(&reqwest::Method::GET, url, entity),
        message,
        transient: false,
    }
}

fn since_param(since: DateTime<Utc>, inclusive: bool) -> String {
    let since = if inclusive {
        since
    } else {
        minus(since, chrono::Duration::milliseconds(1))
    };
    value::format_param_time(since)
}

/// What an entity listing reads.
#[derive(Debug)]
enum Source {
    /// The list endpoint, whole or filtered by a modified-since parameter.
    List,
    /// A SOQL query; `sliced` when the template has `LIMIT {limit}`.
    Soql { limit: u64, sliced: bool },
    /// A sync-token change feed, with the newest token seen.
    Feed { token: Option<String> },
}

/// Reads an entity's list endpoint, SOQL query or change feed.
pub(crate) struct ListReader {
    core: Arc<HttpCore>,
    entity: Arc<EntityRt>,
    source: Source,
    pager: Pager,
    tracker: Option<Tracker>,
    start: Cursor,
    finished: bool,
    /// When the system answered the pages read so far, by its clock (the earliest `Date`).
    answered_at: AnsweredAt,
    guard: Guard,
    /// For a keyset read (`modified_since.keyset`): the modified time the current page was
    /// asked from (`None` for a first page without one).
    keyset: Option<Option<DateTime<Utc>>>,
    /// For a SOQL read of a described entity: the fields the org has, once read (the
    /// query asks only for those).
    present: Option<describe::Columns>,
    /// For a listing read for its ids: each item parsed for its id and modified time only.
    projection: Option<Arc<Projection>>,
}

impl ListReader {
    /// Lists the entity whole: the list endpoint, or for a SOQL entity whose list
    /// endpoint has no query of its own, the SOQL read from the beginning (its
    /// `initial_query`).
    ///
    /// A keyset entity is listed whole by the keyset read from the beginning: an offset
    /// listing of it skips a record when another is edited during the read, and a full
    /// listing that finds deletions would take the skipped record for deleted.
    pub fn full(core: Arc<HttpCore>, entity: Arc<EntityRt>) -> ListReader {
        let keyset = matches!(
            entity.incremental,
            Some(IncrementalRt::ModifiedSince { keyset: true, .. })
        );
        if keyset
            || (matches!(entity.incremental, Some(IncrementalRt::Soql { .. }))
                && entity.spec.list.query.is_empty())
        {
            return ListReader::changes(core, entity, None);
        }
        Self::list_endpoint(core, entity)
    }

    /// [`Self::full`] for the ids alone: each item of a page is parsed for its id and
    /// modified time (what a keyset read goes on from), the rest skipped, where the system
    /// file's paths to the items, the id and the modified time are plain member chains.
    pub fn ids(core: Arc<HttpCore>, entity: Arc<EntityRt>) -> ListReader {
        let projection = entity.ids_projection();
        let mut reader = Self::full(core, entity);
        reader.projection = projection.map(Arc::new);
        reader
    }

    /// Lists the entity's list endpoint whole.
    fn list_endpoint(core: Arc<HttpCore>, entity: Arc<EntityRt>) -> ListReader {
        let query = list_query(&entity);
        let max_pages = entity.max_pages;
        ListReader {
            pager: Pager::new(&entity.spec.list.path, query),
            core,
            entity,
            source: Source::List,
            tracker: None,
            start: Cursor::beginning(),
            finished: false,
            answered_at: AnsweredAt::default(),
            guard: Guard::new(max_pages),
            keyset: None,
            present: None,
            projection: None,
        }
    }

    /// Reads what changed since `cursor`, per the entity's incremental read.
    pub fn changes(
        core: Arc<HttpCore>,
        entity: Arc<EntityRt>,
        cursor: Option<&Cursor>,
    ) -> ListReader {
        match &entity.incremental {
            None => ListReader::list_endpoint(core, entity),
            Some(IncrementalRt::ModifiedSince {
                param,
                inclusive,
                keyset,
            }) => {
                let tracker = Tracker::new(cursor, entity.lookback);
                let mut query = list_query(&entity);
                if let Some(since) = tracker.since() {
                    query.push((param.clone(), since_param(since, *inclusive)));
                }
                let keyset = keyset.then_some(tracker.since());
                ListReader {
                    pager: Pager::new(&entity.spec.list.path, query),
                    core,
                    source: Source::List,
                    tracker: Some(tracker),
                    start: cursor.cloned().unwrap_or_else(Cursor::beginning),
                    finished: false,
                    answered_at: AnsweredAt::default(),
                    guard: Guard::new(entity.max_pages),
                    keyset,
                    present: None,
                    projection: None,
                    entity,
                }
            }
            Some(IncrementalRt::Soql {
                path,
                query,
                initial_query,
            }) => {
                let tracker = Tracker::new(cursor, entity.lookback);
                let limit = entity.paging.size().unwrap_or(2000);
                let text = match tracker.since() {
                    Some(since) => soql(&entity, query, since, limit),
                    None => soql(&entity, initial_query, DateTime::<Utc>::MIN_UTC, limit),
                };
                let sliced = query.contains("{limit}") || initial_query.contains("{limit}");
                ListReader {
                    pager: Pager::new(path, vec![("q".to_owned(), text)]),
                    core,
                    source: Source::Soql { limit, sliced },
                    tracker: Some(tracker),
                    start: cursor.cloned().unwrap_or_else(Cursor::beginning),
                    finished: false,
                    answered_at: AnsweredAt::default(),
                    guard: Guard::new(entity.max_pages),
                    keyset: None,
                    present: None,
                    projection: None,
                    entity,
                }
            }
            Some(IncrementalRt::SyncToken { path, param, .. }) => {
                let start = cursor
                    .filter(|c| c.token().is_some())
                    .cloned()
                    .unwrap_or_else(Cursor::beginning);
                let mut query = Vec::new();
                if let Some(token) = start.token() {
                    query.push((param.clone(), token.to_owned()));
                }
                ListReader {
                    pager: Pager::new(path, query),
                    core,
                    source: Source::Feed { token: None },
                    tracker: None,
                    start,
                    finished: false,
                    answered_at: AnsweredAt::default(),
                    guard: Guard::new(entity.max_pages),
                    keyset: None,
                    present: None,
                    projection: None,
                    entity,
                }
            }
        }
    }

    async fn read(&mut self) -> Result<Option<Page>, ConnectorError> {
        if self.finished {
            return Ok(None);
        }
        let entity = self.entity.clone();
        if let Some(reason) = self.guard.before() {
            return Err(endless(&self.core, &entity.name, &self.guard, reason));
        }
        if matches!(self.source, Source::Soql { .. })
            && self.present.is_none()
            && let Some(present) = describe::columns(&self.core, &entity).await?
        {
            for (key, text) in &mut self.pager.query {
                if key == "q" {
                    *text = present.restrict(text);
                }
            }
            self.present = Some(present);
        }
        let (mut body, answered, asked, date) = fetch(
            &self.core,
            &entity.name,
            &self.pager,
            &entity.paging,
            self.projection.as_ref(),
        )
        .await?;
        let clock = date.unwrap_or_else(Utc::now);
        let item_path = match (&self.source, &entity.incremental) {
            (Source::Feed { .. }, Some(IncrementalRt::SyncToken { changes, .. })) => changes,
            _ => &entity.records,
        };
        let Some(count) = count_items(item_path, &body) else {
            return Err(shape_error(
                &self.core,
                &entity.name,
                &asked,
                format!("the page has nothing at `{}`", item_path.as_str()),
            ));
        };
        let next = self
            .pager
            .next(&entity.paging, &body, count, &answered)
            .map_err(|message| shape_error(&self.core, &entity.name, &asked, message))?;
        let mut items = take_items(item_path, &mut body).unwrap_or_default();
        for item in &mut items {
            complete_children(&self.core, &entity, item, &answered).await?;
        }
        let key = Guard::key(page_ids(&entity.id, &items));
        if let Some(reason) =
            self.guard
                .check(key, (&self.pager.position, &asked, &answered), &next)
        {
            return Err(endless(&self.core, &entity.name, &self.guard, reason));
        }

        // Nothing below can fail: the page is taken.
        self.guard
            .take(key, &asked, &answered, &self.pager.position);
        if let Some(tracker) = &mut self.tracker {
            tracker.clock(clock);
        }
        let mut page = Page {
            records: Vec::new(),
            deleted: Vec::new(),
            malformed: Vec::new(),
            ahead: Vec::new(),
            cursor: Cursor::beginning(),
            last: false,
        };
        let mut admitted = 0usize;
        let mut newest: Option<DateTime<Utc>> = None;
        for item in items {
            let (data, deleted_status) = match &entity.incremental {
                Some(IncrementalRt::SyncToken {
                    record,
                    status,
                    deleted_status,
                    ..
                }) if matches!(self.source, Source::Feed { .. }) => {
                    let is_deleted = status
                        .first(&item)
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.eq_ignore_ascii_case(deleted_status));
                    match record.first(&item) {
                        Some(data) => (data.clone(), is_deleted),
                        None => {
                            page.malformed.push(Malformed {
                                id: None,
                                reason: format!("no record at `{}`", record.as_str()),
                                data: item,
                            });
                            continue;
                        }
                    }
                }
                _ => (item, false),
            };
            let record = match entity.to_record(data) {
                Ok(record) => record,
                Err(malformed) => {
                    page.malformed.push(malformed);
                    continue;
                }
            };
            newest = newest.max(record.modified);
            if let Some(tracker) = &mut self.tracker {
                match tracker.admit(&record.id, record.modified) {
                    Admit::Repeat => continue,
                    Admit::New => {}
                    Admit::Ahead => page.ahead.extend(record.modified.map(|modified| Ahead {
                        id: record.id.clone(),
                        modified,
                        clock,
                    })),
                }
            }
            admitted += 1;
            push_record(&entity, &mut page, record, deleted_status);
        }
        if let (Source::Feed { token }, Some(IncrementalRt::SyncToken { token: path, .. })) =
            (&mut self.source, &entity.incremental)
            && let Some(found) = path.first(&body).and_then(value::id_string)
        {
            *token = Some(found);
        }
        log_ahead(&self.core, &entity.name, &page.ahead);
        self.answered_at.page(date);
        match self
            .keyset
            .and_then(|from| keyset_restart(from, newest, &next))
        {
            Some(at) => self.restart_at(at),
            None => self.pager.position = next,
        }
        if self.pager.done() {
            self.slice_again(count, admitted);
        }
        let last = self.pager.done();
        page.last = last;
        if last
            && self.core.date_is_record_clock
            && let (Some(tracker), Some(at)) = (&mut self.tracker, self.answered_at.earliest())
        {
            tracker.cover(at);
        }
        page.cursor = match (&self.tracker, &self.source) {
            (Some(tracker), _) => tracker.checkpoint(last),
            (None, Source::Feed { token: Some(token) }) if last => {
                Cursor::sync_token(token.clone())
            }
            (None, Source::Feed { .. }) => self.start.clone(),
            (None, _) => Cursor::beginning(),
        };
        self.finished = last;
        Ok(Some(page))
    }

    /// A keyset read asks for its next page from `at`, the newest modified time read.
    fn restart_at(&mut self, at: DateTime<Utc>) {
        let Some(IncrementalRt::ModifiedSince {
            param, inclusive, ..
        }) = &self.entity.incremental
        else {
            return;
        };
        let mut query = list_query(&self.entity);
        query.push((param.clone(), since_param(at, *inclusive)));
        self.pager = Pager::new(&self.entity.spec.list.path, query);
        self.keyset = Some(Some(at));
    }

    /// A sliced SOQL read whose slice was full runs the query again from the newest
    /// modified time read, with a larger limit when the slice brought nothing new.
    fn slice_again(&mut self, count: usize, admitted: usize) {
        let Source::Soql {
            limit,
            sliced: true,
        } = &mut self.source
        else {
            return;
        };
        if (count as u64) < *limit {
            return;
        }
        let Some(IncrementalRt::Soql { query, .. }) = &self.entity.incremental else {
            return;
        };
        let Some(newest) = self.tracker.as_ref().and_then(Tracker::max_seen) else {
            return;
        };
        if admitted == 0 {
            if *limit >= MAX_SOQL_LIMIT {
                tracing::warn!(system = %self.core.system, entity = %self.entity.name,
                    "more records share one modified time than a SOQL query may return; \
                     the rest comes in a later run");
                return;
            }
            *limit = (*limit * 2).min(MAX_SOQL_LIMIT);
        }
        let since = minus(newest, chrono::Duration::seconds(1));
        let mut text = soql(&self.entity, query, since, *limit);
        if let Some(present) = &self.present {
            text = present.restrict(&text);
        }
        self.pager = Pager::new(&self.pager.path, vec![("q".to_owned(), text)]);
        self.guard.restart();
    }
}

/// Where a keyset read asks for its next page: from the newest modified time of the page
/// just read (`newest`) when there is a next page and that time is past the one this page
/// was asked from (`from`). Otherwise `None`: the listing is done, or every record of a
/// full page shares one modified time and the ordinary next page (offset or link) goes on
/// through them.
///
/// Real behaviour (Keap REST v1, `GET /contacts`: `since`, `order=last_updated`,
/// `limit`/`offset`; the offset counts into the list as it is at each request): a contact
/// edited after its page was read moves to the end of the list, every later contact moves
/// one place up, and the next offset page begins one contact too late; the contact that
/// moved up is never read. Asking again from the newest time read loses nothing: a record
/// not read yet was modified at or after that time, or is edited later and moves past it.
fn keyset_restart(
    from: Option<DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
    next: &Position,
) -> Option<DateTime<Utc>> {
    if *next == Position::Done {
        return None;
    }
    let newest = newest?;
    from.is_none_or(|from| newest > from).then_some(newest)
}

/// Files a record as changed or deleted (soft-delete flag or feed status).
fn push_record(entity: &EntityRt, page: &mut Page, record: Record, deleted_status: bool) {
    let soft_deleted = match &entity.deletes {
        Deletes::SoftDelete { flag, .. } => truthy(flag.first(&record.data)),
        _ => false,
    };
    if soft_deleted || deleted_status {
        page.deleted.push(Deletion {
            deleted_at: if soft_deleted { record.modified } else { None },
            id: record.id,
        });
    } else {
        page.records.push(record);
    }
}

/// The fixed query of the list endpoint, with the soft-delete parameter.
fn list_query(entity: &EntityRt) -> Vec<(String, String)> {
    let mut query: Vec<(String, String)> = entity
        .spec
        .list
        .query
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Deletes::SoftDelete { include_param, .. } = &entity.deletes {
        query.push((include_param.clone(), "true".to_owned()));
    }
    query
}

/// Fills a SOQL template: `{fields}`, `{since}` (an unquoted datetime literal) and `{limit}`.
fn soql(entity: &EntityRt, template: &str, since: DateTime<Utc>, limit: u64) -> String {
    let fields: Vec<&str> = entity.spec.fields.keys().map(String::as_str).collect();
    template
        .replace("{fields}", &fields.join(", "))
        .replace("{since}", &value::format_soql_time(since))
        .replace("{limit}", &limit.to_string())
}

impl ListReader {
    /// A read of at most one record, to see that the entity can be read at all (`tether
    /// check`): the entity's whole listing with a page size of one, or its SOQL query
    /// with `LIMIT 1`.
    pub fn probe(core: Arc<HttpCore>, entity: Arc<EntityRt>) -> ListReader {
        let mut reader = ListReader::full(core, entity);
        reader.pager.size = Some(1);
        if matches!(reader.source, Source::Soql { .. }) {
            for (key, text) in &mut reader.pager.query {
                if key == "q" {
                    *text = soql_limit_one(text);
                }
            }
        }
        reader
    }
}

/// A SOQL query asking for one row: its outer `LIMIT` set to 1, or `LIMIT 1` added at the
/// end (SOQL and SOSL Reference, "LIMIT": the clause comes last but for `OFFSET` and `FOR`,
/// which the shipped queries do not use).
pub(crate) fn soql_limit_one(query: &str) -> String {
    let outer_limit = describe::outer_keywords(query, "limit")
        .last()
        .map(|at| at + 6);
    match outer_limit {
        Some(at) => {
            let rest = &query[at..];
            let number_start = rest.len() - rest.trim_start().len();
            let number_len = rest[number_start..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len() - number_start);
            format!(
                "{}1{}",
                &query[..at + number_start],
                &rest[number_start + number_len..]
            )
        }
        None => format!("{} LIMIT 1", query.trim_end()),
    }
}

impl PageReader for ListReader {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>, ConnectorError>> {
        Box::pin(self.read())
    }
}

/// Reads a tombstone endpoint (Customerp `/deleted`) from a watermark on deletion times.
pub(crate) struct TombstoneReader {
    core: Arc<HttpCore>,
    entity: Arc<EntityRt>,
    pager: Pager,
    tracker: Tracker,
    finished: bool,
    answered_at: AnsweredAt,
    guard: Guard,
}

impl TombstoneReader {
    pub fn new(core: Arc<HttpCore>, entity: Arc<EntityRt>, cursor: Option<&Cursor>) -> Self {
        let tracker = Tracker::new(cursor, entity.lookback);
        let (path, mut query) = match &entity.deletes {
            Deletes::Tombstones(tombstones) => (tombstones.path.clone(), tombstones.query.clone()),
            _ => (String::new(), Vec::new()),
        };
        if let (Deletes::Tombstones(tombstones), Some(since)) = (&entity.deletes, tracker.since()) {
            query.push((tombstones.since_param.clone(), since_param_value(since)));
        }
        TombstoneReader {
            pager: Pager::new(&path, query),
            core,
            guard: Guard::new(entity.max_pages),
            entity,
            tracker,
            finished: false,
            answered_at: AnsweredAt::default(),
        }
    }

    async fn read(&mut self) -> Result<Option<Page>, ConnectorError> {
        if self.finished {
            return Ok(None);
        }
        let entity = self.entity.clone();
        let Deletes::Tombstones(tombstones) = &entity.deletes else {
            return Ok(None);
        };
        let Tombstones {
            records,
            id,
            deleted_at,
            paging,
            ..
        } = tombstones.as_ref();
        if let Some(reason) = self.guard.before() {
            return Err(endless(&self.core, &entity.name, &self.guard, reason));
        }
        let (mut body, answered, asked, date) =
            fetch(&self.core, &entity.name, &self.pager, paging, None).await?;
        let clock = date.unwrap_or_else(Utc::now);
        let Some(count) = count_items(records, &body) else {
            return Err(shape_error(
                &self.core,
                &entity.name,
                &asked,
                format!("the page has nothing at `{}`", records.as_str()),
            ));
        };
        let next = self
            .pager
            .next(paging, &body, count, &answered)
            .map_err(|message| shape_error(&self.core, &entity.name, &asked, message))?;
        let items = take_items(records, &mut body).unwrap_or_default();
        let key = Guard::key(page_ids(id, &items));
        if let Some(reason) =
            self.guard
                .check(key, (&self.pager.position, &asked, &answered), &next)
        {
            return Err(endless(&self.core, &entity.name, &self.guard, reason));
        }
        self.guard
            .take(key, &asked, &answered, &self.pager.position);
        self.tracker.clock(clock);
        let mut page = Page {
            records: Vec::new(),
            deleted: Vec::new(),
            malformed: Vec::new(),
            ahead: Vec::new(),
            cursor: Cursor::beginning(),
            last: false,
        };
        for item in items {
            let at = deleted_at.first(&item).and_then(value::parse_time);
            let deleted_id = match entity.listed_id(id, item) {
                Ok((deleted_id, _)) => deleted_id,
                Err(malformed) => {
                    page.malformed.push(malformed);
                    continue;
                }
            };
            let admit = self.tracker.admit(&deleted_id, at);
            if let (Admit::Ahead, Some(modified)) = (admit, at) {
                page.ahead.push(Ahead {
                    id: deleted_id.clone(),
                    modified,
                    clock,
                });
            }
            if admit.is_new() {
                page.deleted.push(Deletion {
                    id: deleted_id,
                    deleted_at: at,
                });
            }
        }
        log_ahead(&self.core, &entity.name, &page.ahead);
        self.answered_at.page(date);
        self.pager.position = next;
        page.last = self.pager.done();
        if page.last
            && self.core.date_is_record_clock
            && let Some(at) = self.answered_at.earliest()
        {
            self.tracker.cover(at);
        }
        page.cursor = self.tracker.checkpoint(page.last);
        self.finished = page.last;
        Ok(Some(page))
    }
}

/// Tombstone filters are taken as inclusive and asked one millisecond early, which costs
/// nothing since repeats are dropped.
fn since_param_value(since: DateTime<Utc>) -> String {
    since_param(since, false)
}

impl PageReader for TombstoneReader {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>, ConnectorError>> {
        Box::pin(self.read())
    }
}

/// Reads Salesforce `getDeleted` in windows of at most 15 days up to now, each window one
/// page; the watermark is the API's `latestDateCovered`.
pub(crate) struct DeletedWindowReader {
    core: Arc<HttpCore>,
    entity: Arc<EntityRt>,
    tracker: Tracker,
    next_start: DateTime<Utc>,
    end: DateTime<Utc>,
    finished: bool,
}

impl DeletedWindowReader {
    pub fn new(core: Arc<HttpCore>, entity: Arc<EntityRt>, cursor: Option<&Cursor>) -> Self {
        let tracker = Tracker::new(cursor, entity.lookback);
        let end = Utc::now();
        // A stored start older than Salesforce keeps deletions (15 days, less after the
        // recycle bin was emptied) is sent as it is: the service answers
        // `INVALID_REPLICATION_DATE`, and the engine finds the deletions by a full listing
        // instead of losing those before the window.
        let start = tracker
            .since()
            .unwrap_or_else(|| end - chrono::Duration::days(SALESFORCE_FIRST_DAYS));
        let start = start.min(end - chrono::Duration::minutes(1));
        DeletedWindowReader {
            core,
            entity,
            tracker,
            next_start: start,
            end,
            finished: false,
        }
    }

    async fn read(&mut self) -> Result<Option<Page>, ConnectorError> {
        if self.finished {
            return Ok(None);
        }
        let Deletes::GetDeleted { path } = &self.entity.deletes else {
            return Ok(None);
        };
        let window_end =
            (self.next_start + chrono::Duration::days(SALESFORCE_WINDOW_DAYS)).min(self.end);
        let format = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
        let pager = Pager::new(
            path,
            vec![
                ("start".to_owned(), format(self.next_start)),
                ("end".to_owned(), format(window_end)),
            ],
        );
        let (body, _, asked, date) =
            fetch(&self.core, &self.entity.name, &pager, &Paging::None, None).await?;
        let clock = date.unwrap_or_else(Utc::now);
        let Some(Value::Array(deleted)) = body.get("deletedRecords") else {
            return Err(shape_error(
                &self.core,
                &self.entity.name,
                &asked,
                "the answer has no `deletedRecords` array".to_owned(),
            ));
        };
        self.tracker.clock(clock);
        let mut page = Page {
            records: Vec::new(),
            deleted: Vec::new(),
            malformed: Vec::new(),
            ahead: Vec::new(),
            cursor: Cursor::beginning(),
            last: false,
        };
        let id_path = JsonPath::compile("$.id").unwrap_or_else(|_| self.entity.id.clone());
        for item in deleted {
            let at = item.get("deletedDate").and_then(value::parse_time);
            let id = match self.entity.listed_id(&id_path, item.clone()) {
                Ok((id, _)) => id,
                Err(malformed) => {
                    page.malformed.push(malformed);
                    continue;
                }
            };
            let admit = self.tracker.admit(&id, at);
            if let (Admit::Ahead, Some(modified)) = (admit, at) {
                page.ahead.push(Ahead {
                    id: id.clone(),
                    modified,
                    clock,
                });
            }
            if admit.is_new() {
                page.deleted.push(Deletion { id, deleted_at: at });
            }
        }
        log_ahead(&self.core, &self.entity.name, &page.ahead);
        if let Some(covered) = body.get("latestDateCovered").and_then(value::parse_time) {
            self.tracker.cover(covered);
        }
        self.next_start = window_end;
        page.last = window_end >= self.end;
        page.cursor = self.tracker.checkpoint(page.last);
        self.finished = page.last;
        Ok(Some(page))
    }
}

impl PageReader for DeletedWindowReader {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>, ConnectorError>> {
        Box::pin(self.read())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn a_probe_asks_soql_for_one_row() {
        assert_eq!(
            soql_limit_one(
                "SELECT Id, (SELECT Id FROM OrderItems LIMIT 5) FROM Order ORDER BY Id LIMIT 2000"
            ),
            "SELECT Id, (SELECT Id FROM OrderItems LIMIT 5) FROM Order ORDER BY Id LIMIT 1"
        );
        assert_eq!(
            soql_limit_one("SELECT Id FROM Contact WHERE Name = ' limit 3' ORDER BY Id\n"),
            "SELECT Id FROM Contact WHERE Name = ' limit 3' ORDER BY Id LIMIT 1"
        );
    }

    #[test]
    fn a_keyset_read_asks_again_from_the_newest_time_unless_the_page_made_no_progress() {
        let t = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
        let more = Position::Url(url("http://127.0.0.1:1/next"));
        let newest = t("2026-01-02T00:00:00Z");
        assert_eq!(keyset_restart(None, newest, &more), newest);
        assert_eq!(
            keyset_restart(t("2026-01-01T00:00:00Z"), newest, &more),
            newest
        );
        assert_eq!(
            keyset_restart(newest, newest, &more),
            None,
            "a full page of ties"
        );
        assert_eq!(keyset_restart(None, newest, &Position::Done), None);
        assert_eq!(keyset_restart(None, None, &more), None);
    }

    #[test]
    fn offset_pages_stop_on_total_or_short_page() {
        let with_total = Paging::Offset {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            size: 2,
            total: Some(JsonPath::compile("$.total").unwrap()),
        };
        let mut pager = Pager::new("/customers", vec![("modified_since".into(), "x".into())]);
        let base = url("http://127.0.0.1:1/api");
        assert_eq!(
            pager.url(&base, &with_total).unwrap().as_str(),
            "http://127.0.0.1:1/api/customers?modified_since=x&offset=0&limit=2"
        );
        let answered = url("http://127.0.0.1:1/api/customers");
        let next = pager
            .next(&with_total, &json!({"total": 3}), 2, &answered)
            .unwrap();
        assert_eq!(next, Position::Offset(2));
        pager.position = next;
        assert_eq!(
            pager
                .next(&with_total, &json!({"total": 3}), 1, &answered)
                .unwrap(),
            Position::Done
        );
        let without_total = Paging::Offset {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            size: 2,
            total: None,
        };
        assert_eq!(
            pager
                .next(&without_total, &json!({}), 2, &answered)
                .unwrap(),
            Position::Offset(4)
        );
        assert_eq!(
            pager
                .next(&without_total, &json!({}), 1, &answered)
                .unwrap(),
            Position::Done
        );
    }

    #[test]
    fn next_links_resolve_and_stop() {
        let paging = Paging::NextUrl {
            next: JsonPath::compile("$.nextRecordsUrl").unwrap(),
            done: Some(JsonPath::compile("$.done").unwrap()),
            size_param: None,
            size: None,
            stop_on_short_page: false,
        };
        let pager = Pager::new("/query", Vec::new());
        let answered = url("https://na1.example.test/services/data/v60.0/query?q=x");
        assert_eq!(
            pager
                .next(
                    &paging,
                    &json!({"done": false, "nextRecordsUrl": "/services/data/v60.0/query/01g-500"}),
                    5,
                    &answered
                )
                .unwrap(),
            Position::Url(url(
                "https://na1.example.test/services/data/v60.0/query/01g-500"
            ))
        );
        assert_eq!(
            pager
                .next(
                    &paging,
                    &json!({"done": true, "nextRecordsUrl": "/x"}),
                    5,
                    &answered
                )
                .unwrap(),
            Position::Done
        );
        let keap = Paging::NextUrl {
            next: JsonPath::compile("$.next").unwrap(),
            done: None,
            size_param: Some("limit".into()),
            size: Some(3),
            stop_on_short_page: true,
        };
        assert_eq!(
            pager
                .next(
                    &keap,
                    &json!({"next": "https://h/v1/contacts?offset=3"}),
                    2,
                    &answered
                )
                .unwrap(),
            Position::Done
        );
    }

    #[test]
    fn a_next_link_that_drops_parameters_gets_them_back() {
        let keap = Paging::NextUrl {
            next: JsonPath::compile("$.next").unwrap(),
            done: None,
            size_param: Some("limit".into()),
            size: Some(2),
            stop_on_short_page: true,
        };
        let pager = Pager::new(
            "/contacts",
            vec![
                ("optional_properties".into(), "job_title".into()),
                ("order".into(), "last_updated".into()),
            ],
        );
        let answered = url("https://h/crm/rest/v1/contacts?limit=2");
        let next = pager
            .next(
                &keap,
                &json!({"next": "https://h/crm/rest/v1/contacts/?limit=2&offset=2&order=id"}),
                2,
                &answered,
            )
            .unwrap();
        assert_eq!(
            next,
            Position::Url(url(
                "https://h/crm/rest/v1/contacts/?limit=2&offset=2&order=id&optional_properties=job_title"
            )),
            "the dropped parameter is added, the link's own `order` is kept"
        );
    }

    #[test]
    fn cursors_stop_when_null_or_sent_back_on_an_empty_page() {
        let paging = Paging::Cursor {
            cursor_param: "cursor".into(),
            size_param: Some("page_size".into()),
            size: 2,
            next_cursor: JsonPath::compile("$.next_cursor").unwrap(),
        };
        let mut pager = Pager::new("/customers", Vec::new());
        let answered = url("http://h/shop/api/customers");
        assert_eq!(
            pager
                .next(&paging, &json!({"next_cursor": "c2"}), 2, &answered)
                .unwrap(),
            Position::Cursor("c2".into())
        );
        pager.position = Position::Cursor("c2".into());
        assert_eq!(
            pager
                .url(&url("http://h/shop/api"), &paging)
                .unwrap()
                .as_str(),
            "http://h/shop/api/customers?page_size=2&cursor=c2"
        );
        // The same cursor with records: the guard refuses to follow it again.
        let again = pager
            .next(&paging, &json!({"next_cursor": "c2"}), 2, &answered)
            .unwrap();
        assert_eq!(again, Position::Cursor("c2".into()));
        let guard = Guard::new(10);
        let asked = url("http://h/shop/api/customers?cursor=c2");
        let page = (&pager.position, &asked, &asked);
        assert!(
            guard
                .check(Guard::key(vec!["b".into()]), page, &again)
                .is_some()
        );
        assert_eq!(
            pager
                .next(&paging, &json!({"next_cursor": "c2"}), 0, &answered)
                .unwrap(),
            Position::Done
        );
        assert_eq!(
            pager
                .next(&paging, &json!({"next_cursor": null}), 2, &answered)
                .unwrap(),
            Position::Done
        );
    }

    #[test]
    fn the_guard_stops_repeated_pages_links_and_too_many_pages() {
        let mut guard = Guard::new(3);
        let first = url("http://h/api/customers?offset=0&limit=2");
        let second = url("http://h/api/customers?offset=2&limit=2");
        assert_eq!(guard.before(), None);
        let key = Guard::key(vec!["2".into(), "1".into()]);
        let page = (&Position::First, &first, &first);
        assert_eq!(guard.check(key, page, &Position::Offset(2)), None);
        assert!(
            guard
                .check(key, page, &Position::Url(first.clone()))
                .is_some()
        );
        guard.take(key, &first, &first, &Position::First);
        // The same ids in another order are the same page.
        let same = Guard::key(vec!["1".into(), "2".into()]);
        let page = (&Position::Offset(2), &second, &second);
        assert!(guard.check(same, page, &Position::Offset(4)).is_some());
        // Empty pages are never the same page; links already followed are.
        assert_eq!(guard.check(None, page, &Position::Done), None);
        assert!(
            guard
                .check(None, page, &Position::Url(first.clone()))
                .is_some()
        );
        let third = url("http://h/api/customers?offset=4&limit=2");
        assert_eq!(guard.check(None, page, &Position::Url(third)), None);
        guard.take(
            Guard::key(vec!["3".into()]),
            &second,
            &second,
            &Position::Offset(2),
        );
        guard.take(None, &second, &second, &Position::Offset(4));
        assert!(
            guard
                .before()
                .is_some_and(|reason| reason.contains("max_pages"))
        );
        // A new SOQL slice may repeat records; the page count stays.
        guard.restart();
        assert_eq!(guard.check(same, page, &Position::Done), None);
        assert!(guard.before().is_some());
    }

    #[test]
    fn pages_stop_at_total_pages() {
        let paging = Paging::Page {
            page_param: "page".into(),
            size_param: "per_page".into(),
            size: 2,
            first_page: 1,
            total_pages: JsonPath::compile("$.total_pages").unwrap(),
        };
        let mut pager = Pager::new("/customers", Vec::new());
        let answered = url("http://h/crm/api/customers");
        assert_eq!(
            pager
                .next(&paging, &json!({"total_pages": 2}), 2, &answered)
                .unwrap(),
            Position::Page(2)
        );
        pager.position = Position::Page(2);
        assert_eq!(
            pager
                .next(&paging, &json!({"total_pages": 2}), 2, &answered)
                .unwrap(),
            Position::Done
        );
    }
}
