//! A system file's entities compiled once: JSONPaths, pagination, the incremental read and
//! how deletions are found. [`EntityRt`] is what the readers (`listing.rs`) and the writes
//! (`generic.rs`) share; it turns a listed item into a [`Record`] or says why it cannot be
//! one (with an id that can address it).

use serde_json::Value;

use crate::connector::project::Projection;
use crate::connector::value::{self, JsonPath};
use crate::connector::{Malformed, Record};
use crate::spec::system::{
    CreateResponse, DeleteDiscovery, EntitySpec, IdType, Incremental, Pagination,
};

/// Pagination with its JSONPaths compiled.
#[derive(Debug)]
pub(crate) enum Paging {
    None,
    Offset {
        offset_param: String,
        limit_param: String,
        size: u64,
        total: Option<JsonPath>,
    },
    Page {
        page_param: String,
        size_param: String,
        size: u64,
        first_page: u64,
        total_pages: JsonPath,
    },
    Cursor {
        cursor_param: String,
        size_param: Option<String>,
        size: u64,
        next_cursor: JsonPath,
    },
    NextUrl {
        next: JsonPath,
        done: Option<JsonPath>,
        size_param: Option<String>,
        size: Option<u64>,
        stop_on_short_page: bool,
    },
}

impl Paging {
    pub fn compile(pagination: &Pagination) -> Result<Paging, String> {
        Ok(match pagination {
            Pagination::None => Paging::None,
            Pagination::Offset {
                offset_param,
                limit_param,
                size,
                total,
            } => Paging::Offset {
                offset_param: offset_param.clone(),
                limit_param: limit_param.clone(),
                size: positive(*size)?,
                total: total.as_deref().map(JsonPath::compile).transpose()?,
            },
            Pagination::Page {
                page_param,
                size_param,
                size,
                first_page,
                total_pages,
            } => Paging::Page {
                page_param: page_param.clone(),
                size_param: size_param.clone(),
                size: positive(*size)?,
                first_page: u64::from(*first_page),
                total_pages: JsonPath::compile(total_pages)?,
            },
            Pagination::Cursor {
                cursor_param,
                size_param,
                size,
                next_cursor,
            } => Paging::Cursor {
                cursor_param: cursor_param.clone(),
                size_param: size_param.clone(),
                size: positive(*size)?,
                next_cursor: JsonPath::compile(next_cursor)?,
            },
            Pagination::NextUrl {
                next,
                done,
                size_param,
                size,
                stop_on_short_page,
            } => {
                if *stop_on_short_page && size.is_none() {
                    return Err("`stop_on_short_page` needs `size`".to_owned());
                }
                Paging::NextUrl {
                    next: JsonPath::compile(next)?,
                    done: done.as_deref().map(JsonPath::compile).transpose()?,
                    size_param: size_param.clone(),
                    size: size.map(positive).transpose()?,
                    stop_on_short_page: *stop_on_short_page,
                }
            }
        })
    }

    /// The page size, where the style has one.
    pub fn size(&self) -> Option<u64> {
        match self {
            Paging::None => None,
            Paging::Offset { size, .. }
            | Paging::Page { size, .. }
            | Paging::Cursor { size, .. } => Some(*size),
            Paging::NextUrl { size, .. } => *size,
        }
    }
}

fn positive(size: u32) -> Result<u64, String> {
    if size == 0 {
        Err("a page size must be at least 1".to_owned())
    } else {
        Ok(u64::from(size))
    }
}

/// The incremental read of an entity, compiled.
#[derive(Debug)]
pub(crate) enum IncrementalRt {
    ModifiedSince {
        param: String,
        inclusive: bool,
        /// Each page asks from the newest modified time of the page before.
        keyset: bool,
    },
    Soql {
        path: String,
        query: String,
        initial_query: String,
    },
    SyncToken {
        path: String,
        param: String,
        token: JsonPath,
        changes: JsonPath,
        record: JsonPath,
        status: JsonPath,
        deleted_status: String,
    },
}

/// A tombstone endpoint, compiled.
#[derive(Debug)]
pub(crate) struct Tombstones {
    pub path: String,
    pub query: Vec<(String, String)>,
    pub since_param: String,
    pub records: JsonPath,
    pub id: JsonPath,
    pub deleted_at: JsonPath,
    pub paging: Paging,
}

/// How deletions are found, compiled.
#[derive(Debug)]
pub(crate) enum Deletes {
    None,
    Tombstones(Box<Tombstones>),
    SoftDelete {
        flag: JsonPath,
        include_param: String,
    },
    FullListing,
    GetDeleted {
        path: String,
    },
    ChangeFeed,
}

/// One entity of a system, compiled once.
#[derive(Debug)]
pub(crate) struct EntityRt {
    pub name: String,
    pub spec: EntitySpec,
    pub id: JsonPath,
    pub modified: Option<JsonPath>,
    pub records: JsonPath,
    /// Where a single-record answer keeps the record (the `get` endpoint's `record`).
    pub record: Option<JsonPath>,
    pub paging: Paging,
    pub incremental: Option<IncrementalRt>,
    pub deletes: Deletes,
    pub create_id: Option<JsonPath>,
    pub lookback: chrono::Duration,
    /// The most pages one listing may take (`list.max_pages`).
    pub max_pages: u64,
    /// The describe endpoint and the paths of its field and relationship names, and the
    /// describe of the child object of each child relationship (lowercase) (`describe`).
    pub describe: Option<DescribeRt>,
}

/// An entity's compiled `describe`.
#[derive(Debug, Clone)]
pub struct DescribeRt {
    pub path: String,
    pub names: JsonPath,
    pub relationships: JsonPath,
    /// Child relationship name (lowercase) -> the child object's describe path.
    pub children: Vec<(String, String)>,
}

impl EntityRt {
    pub fn compile(name: &str, spec: &EntitySpec) -> Result<EntityRt, String> {
        let incremental = match &spec.list.incremental {
            None => None,
            Some(Incremental::ModifiedSince {
                param,
                inclusive,
                keyset,
            }) => Some(IncrementalRt::ModifiedSince {
                param: param.clone(),
                inclusive: *inclusive,
                keyset: *keyset,
            }),
            Some(Incremental::Soql {
                path,
                query,
                initial_query,
            }) => Some(IncrementalRt::Soql {
                path: path.clone(),
                query: query.clone(),
                initial_query: initial_query.clone(),
            }),
            Some(Incremental::SyncToken {
                path,
                param,
                token,
                changes,
                record,
                status,
                deleted_status,
            }) => Some(IncrementalRt::SyncToken {
                path: path.clone(),
                param: param.clone(),
                token: JsonPath::compile(token)?,
                changes: JsonPath::compile(changes)?,
                record: JsonPath::compile(record)?,
                status: JsonPath::compile(status)?,
                deleted_status: deleted_status.clone(),
            }),
        };
        if matches!(
            incremental,
            Some(IncrementalRt::ModifiedSince { .. }) | Some(IncrementalRt::Soql { .. })
        ) && spec.modified.is_none()
        {
            return Err("an incremental read by time needs `modified`".to_owned());
        }
        let deletes = match &spec.deletes {
            DeleteDiscovery::None => Deletes::None,
            DeleteDiscovery::Tombstones {
                path,
                query,
                since_param,
                records,
                id,
                deleted_at,
                pagination,
            } => Deletes::Tombstones(Box::new(Tombstones {
                path: path.clone(),
                query: query.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                since_param: since_param.clone(),
                records: JsonPath::compile(records)?,
                id: JsonPath::compile(id)?,
                deleted_at: JsonPath::compile(deleted_at)?,
                paging: Paging::compile(pagination)?,
            })),
            DeleteDiscovery::SoftDelete {
                flag,
                include_param,
            } => Deletes::SoftDelete {
                flag: JsonPath::compile(flag)?,
                include_param: include_param.clone(),
            },
            DeleteDiscovery::FullListing => Deletes::FullListing,
            DeleteDiscovery::GetDeleted { path } => Deletes::GetDeleted { path: path.clone() },
            DeleteDiscovery::ChangeFeed => {
                if !matches!(incremental, Some(IncrementalRt::SyncToken { .. })) {
                    return Err(
                        "`change_feed` deletions need a `sync_token` incremental read".to_owned(),
                    );
                }
                Deletes::ChangeFeed
            }
        };
        if let Some(batch) = &spec.batch
            && batch.size == 0
        {
            return Err("a batch size must be at least 1".to_owned());
        }
        Ok(EntityRt {
            name: name.to_owned(),
            id: JsonPath::compile(&spec.id)?,
            modified: spec
                .modified
                .as_ref()
                .map(|m| JsonPath::compile(m))
                .transpose()?,
            records: JsonPath::compile(&spec.list.records)?,
            record: spec
                .get
                .as_ref()
                .and_then(|g| g.record.as_deref())
                .map(JsonPath::compile)
                .transpose()?,
            paging: Paging::compile(&spec.list.pagination)?,
            incremental,
            deletes,
            create_id: match spec.create.as_ref().map(|c| &c.response) {
                Some(CreateResponse::Id { path }) => Some(JsonPath::compile(path)?),
                _ => None,
            },
            lookback: chrono::Duration::seconds(
                i64::try_from(spec.list.lookback_seconds)
                    .unwrap_or(i64::MAX / 1000)
                    .min(10 * 365 * 86_400),
            ),
            max_pages: spec.list.max_pages.max(1),
            describe: spec
                .describe
                .as_ref()
                .map(|d| {
                    Ok::<_, String>(DescribeRt {
                        path: d.path.clone(),
                        names: JsonPath::compile(&d.names)?,
                        relationships: JsonPath::compile(&d.relationships)?,
                        children: d
                            .children
                            .iter()
                            .map(|(name, path)| (name.to_ascii_lowercase(), path.clone()))
                            .collect(),
                    })
                })
                .transpose()?,
            spec: spec.clone(),
        })
    }

    /// The object name the API uses (Salesforce sObject), defaulting to the entity's key.
    pub fn object(&self) -> &str {
        self.spec.object.as_deref().unwrap_or(&self.name)
    }

    /// Why an id cannot address a record of this entity (see [`value::id_problem`]).
    pub fn id_problem(&self, id: &str) -> Option<&'static str> {
        value::id_problem(id, self.spec.id_type == IdType::Integer)
    }

    /// The id an item holds at `path`, checked: what a listing reports as malformed when
    /// there is none or it cannot address a record.
    pub fn listed_id(&self, path: &JsonPath, item: Value) -> Result<(String, Value), Malformed> {
        let Some(id) = path.first(&item).and_then(value::id_text) else {
            return Err(Malformed {
                id: None,
                reason: format!("no id at `{}`", path.as_str()),
                data: item,
            });
        };
        if let Some(problem) = self.id_problem(&id) {
            return Err(Malformed {
                reason: format!("{problem}: `{}`", value::truncate(&id, 100)),
                id: Some(id),
                data: item,
            });
        }
        Ok((id, item))
    }

    /// What a listing read for its ids keeps of each item: its id and modified time (what
    /// a keyset read goes on from). `None` when a path to them or to the items is not a
    /// plain member chain: such a listing is parsed whole.
    pub fn ids_projection(&self) -> Option<Projection> {
        let mut keep = vec![self.id.members()?.to_vec()];
        if let Some(modified) = &self.modified {
            keep.push(modified.members()?.to_vec());
        }
        Some(Projection::new(self.records.members()?.to_vec(), keep))
    }

    /// Builds a record from an item; [`Malformed`] when it has no id or one that cannot
    /// address a record.
    pub fn to_record(&self, data: Value) -> Result<Record, Malformed> {
        let (id, data) = self.listed_id(&self.id, data)?;
        let modified = self
            .modified
            .as_ref()
            .and_then(|path| path.first(&data))
            .and_then(value::parse_time);
        Ok(Record { id, modified, data })
    }

    /// The record inside a single-record answer.
    pub fn record_in<'a>(&self, body: &'a Value) -> &'a Value {
        self.record
            .as_ref()
            .and_then(|path| path.first(body))
            .filter(|v| v.is_object())
            .unwrap_or(body)
    }
}
