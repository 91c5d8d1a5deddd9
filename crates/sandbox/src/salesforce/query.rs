//! SOQL evaluation (`soql` parses): `query` and `queryAll` over the store, with the
//! conditions checked against the object's fields, parent fields and child subqueries as
//! columns, ordering, `LIMIT`/`OFFSET`, and `nextRecordsUrl` paging through cursors that
//! expire.
//!
//! Rows are found through the store's indexes where the query allows it ([`Plan`]): `Id =`
//! and `Id IN (...)`, a reference field that is a lookup (`AccountId = '...'`), or a range of
//! `SystemModstamp`, `LastModifiedDate` or `CreatedDate`; with `ORDER BY` on that same stamp
//! (or none) and a `LIMIT`, evaluation stops once enough rows are found. Children of a
//! subquery are found by their parent's id. Only what the indexes cannot narrow is scanned.
//! The rows come out in the order a full scan would give: change order (`SystemModstamp`,
//! then creation), then stably sorted by `ORDER BY`.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::http::{ApiRequest, ApiResponse};
use crate::salesforce::describe::{FieldDef, ObjectDef, normalize_id};
use crate::salesforce::soql::{self, Condition, Literal, Op};
use crate::salesforce::{API_PREFIX, CURSOR_TTL_MS, SYSTEM, Salesforce, SfError, lock, not_found};
use crate::store::{EntityStore, Key, Record, Sort, Stamp, Store, parse_lenient_datetime};

/// Children of one parent a query answers at once; the rest is behind the child
/// relationship's own `nextRecordsUrl` (see [`Salesforce::child_result`]).
pub(crate) const CHILD_BATCH: usize = 200;
/// Open query locators kept; the oldest is dropped past this.
const MAX_CURSORS: usize = 50;

/// An open query locator.
pub(super) struct QueryCursor {
    pub(super) rows: CursorRows,
    pub(super) batch: usize,
    pub(super) created: Stamp,
}

/// What a query locator pages through.
pub(super) enum CursorRows {
    /// Rows rendered when the query ran (a child relationship's rows).
    Rendered(Vec<Value>),
    /// The rows of a query: which records, in which order, fixed when it ran, rendered
    /// batch by batch as they are fetched.
    ///
    /// Real behaviour (SOAP API Developer Guide, "queryMore()"): "The query() call retrieves
    /// the first [batch of] records and creates a server-side cursor"; the records a cursor
    /// returns are those the query found. Whether a later batch shows field values as they
    /// were at the query or at the fetch is not documented; the simulator reads them at the
    /// fetch, so memory holds one id per row rather than every row rendered.
    Planned { query: soql::Query, seqs: Vec<u64> },
}

impl CursorRows {
    fn len(&self) -> usize {
        match self {
            CursorRows::Rendered(rows) => rows.len(),
            CursorRows::Planned { seqs, .. } => seqs.len(),
        }
    }
}

/// The stamp fields that are indexed, and their order in the store.
fn stamp_sort(field: &str) -> Option<Sort> {
    match field {
        "SystemModstamp" => Some(Sort::Touched),
        "LastModifiedDate" => Some(Sort::Modified),
        "CreatedDate" => Some(Sort::Created),
        _ => None,
    }
}

/// How the rows of a query are found: the candidates an index gives (`None`: every record
/// of the object, in change order), and whether they come in the order of the first
/// `ORDER BY` item so that evaluation can stop early.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Plan {
    /// Records with these ids (`Id = ...`, `Id IN (...)`).
    Ids(Vec<String>),
    /// Records whose lookup field holds this value.
    Lookup(String, Value),
    /// Records whose stamp lies in `low..=high`.
    Range {
        sort: Sort,
        low: Option<Stamp>,
        high: Option<Stamp>,
    },
    /// Every record.
    All,
}

/// Chooses how to find the rows of a condition: pure, from the condition and what the
/// object's store indexes (`is_lookup`).
pub(super) fn plan(
    object: &ObjectDef,
    condition: Option<&Condition>,
    is_lookup: &dyn Fn(&str) -> bool,
) -> Plan {
    let conjuncts: Vec<&Condition> = match condition {
        None => Vec::new(),
        Some(Condition::And(terms)) => terms.iter().collect(),
        Some(other) => vec![other],
    };
    let text = |literal: &Literal| match literal {
        Literal::Text(text) => Some(text.clone()),
        _ => None,
    };
    // An id or lookup equality narrows most.
    for conjunct in &conjuncts {
        match conjunct {
            Condition::Compare {
                field,
                op: Op::Eq,
                value,
            } => {
                let Some(definition) = object.field(field) else {
                    continue;
                };
                if definition.name == "Id" {
                    return Plan::Ids(text(value).into_iter().collect());
                }
                if is_lookup(&definition.name)
                    && let Some(value) = text(value)
                {
                    return Plan::Lookup(definition.name.clone(), Value::String(value));
                }
            }
            Condition::In {
                field,
                values,
                negated: false,
            } if object
                .field(field)
                .is_some_and(|definition| definition.name == "Id") =>
            {
                return Plan::Ids(values.iter().filter_map(text).collect());
            }
            _ => {}
        }
    }
    // Then a range of one stamp: every bound on it at the top level.
    let mut range: Option<(Sort, Option<Stamp>, Option<Stamp>)> = None;
    for conjunct in &conjuncts {
        let Condition::Compare {
            field,
            op,
            value: Literal::DateTime(at),
        } = conjunct
        else {
            continue;
        };
        let Some(sort) = object
            .field(field)
            .and_then(|definition| stamp_sort(&definition.name))
        else {
            continue;
        };
        let (low, high) = match op {
            Op::Eq => (Some(*at), Some(*at)),
            Op::Gt => (Some(at.saturating_add(1)), None),
            Op::Ge => (Some(*at), None),
            Op::Lt => (None, Some(at.saturating_sub(1))),
            Op::Le => (None, Some(*at)),
            Op::Ne | Op::Like => continue,
        };
        match &mut range {
            None => range = Some((sort, low, high)),
            Some((current, current_low, current_high)) if *current == sort => {
                *current_low = match (*current_low, low) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                *current_high = match (*current_high, high) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            Some(_) => {}
        }
    }
    match range {
        Some((sort, low, high)) => Plan::Range { sort, low, high },
        None => Plan::All,
    }
}

/// The key of an id or reference value in a lookup: its 18-character form, lower-cased, as
/// SOQL compares ids.
fn id_key(value: &Value) -> Option<String> {
    let text = value.as_str()?;
    Some(
        normalize_id(text)
            .unwrap_or_else(|| text.to_string())
            .to_lowercase(),
    )
}

/// The reference fields looked up by value: every child relationship's field on the child,
/// and the references a delete or a price book entry is checked against.
const LOOKUPS: [(&str, &str); 10] = [
    ("OrderItem", "OrderId"),
    ("QuoteLineItem", "QuoteId"),
    ("Contact", "AccountId"),
    ("Opportunity", "AccountId"),
    ("Order", "AccountId"),
    ("Quote", "OpportunityId"),
    ("PricebookEntry", "Pricebook2Id"),
    ("PricebookEntry", "Product2Id"),
    ("OrderItem", "PricebookEntryId"),
    ("QuoteLineItem", "PricebookEntryId"),
];

/// Declares the lookups of every object: `Id`, and [`LOOKUPS`].
pub(super) fn declare_lookups(store: &mut Store, objects: &[ObjectDef]) {
    for object in objects {
        let fields: Vec<&str> = std::iter::once("Id")
            .chain(
                LOOKUPS
                    .iter()
                    .filter(|(owner, _)| *owner == object.name)
                    .map(|(_, field)| *field),
            )
            .collect();
        store
            .entity_mut(SYSTEM, object.name)
            .set_lookup(&fields, id_key);
    }
}

/// A record's place in change order, the order rows have before `ORDER BY`.
fn change_key(record: &Record) -> Key {
    Sort::Touched.key(record)
}

impl Salesforce {
    pub(super) fn query(
        &self,
        request: &ApiRequest,
        version: &str,
        include_deleted: bool,
    ) -> Result<ApiResponse, SfError> {
        let text = request
            .query("q")
            .ok_or_else(|| SfError::bad("MALFORMED_QUERY", "A query string has to be specified"))?;
        let parsed = soql::parse(text).map_err(|error| SfError::bad("MALFORMED_QUERY", error.0))?;
        let object = self.object(&parsed.object).ok_or_else(|| {
            SfError::bad(
                "INVALID_TYPE",
                format!(
                    "sObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.",
                    parsed.object
                ),
            )
        })?;
        let columns = self.columns(object, &parsed)?;
        if let Some(condition) = &parsed.condition {
            self.check_condition(object, condition)?;
        }
        let order = resolve_order(object, &parsed.order)?;
        let batch = request
            .header("sforce-query-options")
            .and_then(|options| {
                options
                    .split(',')
                    .find_map(|option| option.trim().strip_prefix("batchSize="))
                    .and_then(|size| size.trim().parse::<usize>().ok())
            })
            .unwrap_or(2000)
            .clamp(200, 2000);
        let store = self.shared.store();
        let empty = EntityStore::default();
        let entity = store.entity(SYSTEM, object.name).unwrap_or(&empty);
        let matched = self.select(
            &store,
            entity,
            object,
            parsed.condition.as_ref(),
            &order,
            include_deleted,
            parsed.offset.unwrap_or(0),
            parsed.limit,
        );
        let total = matched.len();
        let first: Vec<Value> = matched
            .iter()
            .take(batch)
            .filter_map(|seq| entity.by_seq(*seq))
            .map(|record| self.row(&store, version, object, record, &columns))
            .collect();
        if total <= batch {
            return Ok(ApiResponse::json(
                StatusCode::OK,
                json!({"totalSize": total, "done": true, "records": first}),
            ));
        }
        let seqs = matched;
        drop(store);
        let locator = self.open_cursor(
            CursorRows::Planned {
                query: parsed,
                seqs,
            },
            batch,
        );
        Ok(ApiResponse::json(
            StatusCode::OK,
            json!({
                "totalSize": total,
                "done": false,
                "nextRecordsUrl": format!("{API_PREFIX}{version}/query/{locator}-{batch}"),
                "records": first,
            }),
        ))
    }

    /// The select list resolved against the object: plain fields and child subqueries.
    fn columns<'a>(
        &'a self,
        object: &ObjectDef,
        parsed: &'a soql::Query,
    ) -> Result<Vec<Column<'a>>, SfError> {
        let mut columns = Vec::new();
        let mut plain = Vec::new();
        for item in &parsed.items {
            match item {
                soql::Item::Field(name) => {
                    let name = resolve_field(object, name)?;
                    if plain.contains(&name) {
                        return Err(SfError::bad(
                            "DUPLICATE_FIELD",
                            format!("duplicate field selected: {name}"),
                        ));
                    }
                    plain.push(name.clone());
                    columns.push(Column::Field(name));
                }
                soql::Item::Subquery(inner) => {
                    columns.push(Column::Children(self.child_column(object, inner)?))
                }
            }
        }
        Ok(columns)
    }

    /// One result row: `attributes`, then the columns in the order selected.
    fn row(
        &self,
        store: &Store,
        version: &str,
        object: &ObjectDef,
        record: &Record,
        columns: &[Column],
    ) -> Value {
        let mut out = Map::new();
        out.insert(
            "attributes".into(),
            json!({"type": object.name, "url": self.url(version, object.name, &record.id)}),
        );
        for column in columns {
            match column {
                Column::Field(name) => {
                    let value = object.field(name).map_or(Value::Null, |field| {
                        self.value_of(store, object, record, field)
                    });
                    out.insert(name.clone(), value);
                }
                Column::Children(child) => {
                    let children = self.children_of(store, version, child, &record.id);
                    let value = if children.is_empty() {
                        Value::Null
                    } else {
                        self.child_result(version, children)
                    };
                    out.insert(child.relationship.to_string(), value);
                }
            }
        }
        Value::Object(out)
    }

    /// Keeps the rest of a result for `query/{locator}-{offset}` and names its locator.
    fn open_cursor(&self, rows: CursorRows, batch: usize) -> String {
        let locator = format!("01g{}", self.shared.token(15));
        let now = self.shared.clock.now();
        let mut cursors = lock(&self.cursors);
        cursors.retain(|_, cursor| cursor.created + CURSOR_TTL_MS > now);
        if cursors.len() >= MAX_CURSORS
            && let Some(oldest) = cursors
                .iter()
                .min_by_key(|(_, cursor)| cursor.created)
                .map(|(key, _)| key.clone())
        {
            cursors.remove(&oldest);
        }
        cursors.insert(
            locator.clone(),
            QueryCursor {
                rows,
                batch,
                created: now,
            },
        );
        locator
    }

    /// The child relationship of one parent row: a query result of its own. Past
    /// [`CHILD_BATCH`] children it holds the first batch, `done: false` and a
    /// `nextRecordsUrl` of its own, read like any query locator.
    ///
    /// Real behaviour (SOQL and SOSL Reference, "Understanding Relationship Query
    /// Results": "Subquery results are like regular query results in that you might need
    /// to use queryMore() to retrieve all the records if there are many children"; REST API
    /// Developer Guide, "Query More Results"): a child relationship past about 200 records
    /// comes back with `done: false` and a locator such as
    /// `/services/data/v60.0/query/01gXXXXXXXXXXXXXXX-200`, whatever batch size the
    /// parent query uses.
    fn child_result(&self, version: &str, records: Vec<Value>) -> Value {
        let total = records.len();
        if total <= CHILD_BATCH {
            return json!({"totalSize": total, "done": true, "records": records});
        }
        let first: Vec<Value> = records[..CHILD_BATCH].to_vec();
        let locator = self.open_cursor(CursorRows::Rendered(records), CHILD_BATCH);
        json!({
            "totalSize": total,
            "done": false,
            "nextRecordsUrl": format!("{API_PREFIX}{version}/query/{locator}-{CHILD_BATCH}"),
            "records": first,
        })
    }

    /// The records a query matches, in result order, `OFFSET` and `LIMIT` applied.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn select(
        &self,
        store: &Store,
        entity: &EntityStore,
        object: &ObjectDef,
        condition: Option<&Condition>,
        order: &[(FieldDef, bool, bool)],
        include_deleted: bool,
        offset: usize,
        limit: Option<usize>,
    ) -> Vec<u64> {
        let wanted = limit.map(|limit| offset.saturating_add(limit));
        let matches = |record: &Record| {
            (include_deleted || record.is_live())
                && condition.is_none_or(|condition| self.matches(store, object, condition, record))
        };
        let plan = plan(object, condition, &|field| entity.is_lookup(field));
        // The first ORDER BY item, when it is the stamp the candidates come sorted by.
        let streamed = |sort: Sort| -> Option<bool> {
            match order.first() {
                None if sort == Sort::Touched => Some(false),
                Some((field, descending, _)) if stamp_sort(&field.name) == Some(sort) => {
                    Some(*descending)
                }
                _ => None,
            }
        };
        let (sort, low, high) = match plan {
            Plan::Range { sort, low, high } => (sort, low, high),
            Plan::All => match order
                .first()
                .and_then(|(field, _, _)| stamp_sort(&field.name))
            {
                Some(sort) => (sort, None, None),
                None => (Sort::Touched, None, None),
            },
            Plan::Ids(ids) => {
                let mut found: Vec<&Record> = Vec::new();
                for id in ids {
                    let canonical = normalize_id(&id).unwrap_or(id);
                    let record = entity.get(&canonical).or_else(|| {
                        entity
                            .lookup("Id", &Value::String(canonical.clone()))
                            .and_then(|records| records.into_iter().next())
                    });
                    if let Some(record) = record
                        && !found.iter().any(|seen| seen.seq == record.seq)
                    {
                        found.push(record);
                    }
                }
                return self.finish(store, object, found, matches, order, offset, limit);
            }
            Plan::Lookup(field, value) => {
                let found = entity.lookup(&field, &value).unwrap_or_default();
                return self.finish(store, object, found, matches, order, offset, limit);
            }
        };
        // Soft-deleted records are in the change-order index only.
        let sort = if include_deleted && sort != Sort::Touched {
            return self.finish(
                store,
                object,
                entity.by_change(true),
                matches,
                order,
                offset,
                limit,
            );
        } else {
            sort
        };
        let index = entity.ordered(sort, include_deleted);
        let from = low.map_or(0, |low| index.rank(&(low, 0)));
        let to = high.map_or(index.len(), |high| {
            index.rank(&(high.saturating_add(1), 0)).max(from)
        });
        let keys = index.iter_range(from, to);
        let Some(descending) = streamed(sort) else {
            let found = keys.filter_map(|(_, seq)| entity.by_seq(*seq)).collect();
            return self.finish(store, object, found, matches, order, offset, limit);
        };
        // Without a condition every candidate matches (the index holds exactly the live
        // records, or every record for `queryAll` in change order): rows are taken from the
        // index keys alone, and a record is read only to order a group of equal stamps. A
        // query over a million records then costs a walk of its index, not a million
        // record reads.
        let unconditional = condition.is_none();
        // Streamed: the candidates come in groups of one stamp value, in the order of the
        // first ORDER BY item; each group is put in change order and sorted by the whole
        // ORDER BY, and reading stops once OFFSET + LIMIT rows are complete.
        let keys: Box<dyn Iterator<Item = &Key>> = if descending {
            Box::new(keys.rev())
        } else {
            Box::new(keys)
        };
        let mut rows: Vec<u64> = Vec::new();
        let mut group: Vec<u64> = Vec::new();
        let mut group_value = None;
        for (value, seq) in keys {
            if group_value != Some(*value) {
                self.flush(store, entity, object, &mut group, order, &mut rows);
                if wanted.is_some_and(|wanted| rows.len() >= wanted) {
                    break;
                }
                group_value = Some(*value);
            }
            if unconditional || entity.by_seq(*seq).is_some_and(&matches) {
                group.push(*seq);
            }
        }
        self.flush(store, entity, object, &mut group, order, &mut rows);
        rows.into_iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .collect()
    }

    /// Appends one group of equal first-order values: in change order, then sorted.
    fn flush(
        &self,
        store: &Store,
        entity: &EntityStore,
        object: &ObjectDef,
        group: &mut Vec<u64>,
        order: &[(FieldDef, bool, bool)],
        rows: &mut Vec<u64>,
    ) {
        if group.len() > 1 {
            let mut records: Vec<&Record> =
                group.iter().filter_map(|seq| entity.by_seq(*seq)).collect();
            records.sort_by_key(|record| change_key(record));
            self.sort_rows(store, object, &mut records, order);
            rows.extend(records.iter().map(|record| record.seq));
            group.clear();
        } else {
            rows.append(group);
        }
    }

    /// Filters candidates, puts them in change order, sorts them by ORDER BY and applies
    /// OFFSET and LIMIT.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        store: &Store,
        object: &ObjectDef,
        candidates: Vec<&Record>,
        matches: impl Fn(&Record) -> bool,
        order: &[(FieldDef, bool, bool)],
        offset: usize,
        limit: Option<usize>,
    ) -> Vec<u64> {
        let mut rows: Vec<&Record> = candidates.into_iter().filter(|r| matches(r)).collect();
        rows.sort_by_key(|record| change_key(record));
        self.sort_rows(store, object, &mut rows, order);
        rows.into_iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .map(|record| record.seq)
            .collect()
    }

    /// Sorts rows stably by ORDER BY, each row's sort values computed once.
    fn sort_rows(
        &self,
        store: &Store,
        object: &ObjectDef,
        rows: &mut Vec<&Record>,
        order: &[(FieldDef, bool, bool)],
    ) {
        if order.is_empty() || rows.len() < 2 {
            return;
        }
        let mut keyed: Vec<(Vec<Value>, &Record)> = rows
            .iter()
            .map(|record| {
                let values = order
                    .iter()
                    .map(|(field, _, _)| self.value_of(store, object, record, field))
                    .collect();
                (values, *record)
            })
            .collect();
        keyed.sort_by(|(left, _), (right, _)| {
            for (index, (_, descending, nulls_last)) in order.iter().enumerate() {
                let ordering =
                    compare_values(left.get(index), right.get(index), *nulls_last, *descending);
                if ordering != std::cmp::Ordering::Equal {
                    return ordering;
                }
            }
            std::cmp::Ordering::Equal
        });
        *rows = keyed.into_iter().map(|(_, record)| record).collect();
    }

    /// Resolves a parent-to-child subquery (`(SELECT Id FROM OrderItems)`).
    pub(super) fn child_column<'a>(
        &'a self,
        parent: &ObjectDef,
        inner: &'a soql::Query,
    ) -> Result<ChildColumn<'a>, SfError> {
        let (child, parent_field, relationship) = child_relationship(parent.name, &inner.object).ok_or_else(|| {
            SfError::bad(
                "INVALID_TYPE",
                format!(
                    "Didn't understand relationship '{}' in FROM part of query call. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. Please reference your WSDL or the describe call for the appropriate names.",
                    inner.object
                ),
            )
        })?;
        let child = self.object(child).ok_or_else(not_found)?;
        let mut fields = Vec::new();
        for item in &inner.items {
            if let soql::Item::Field(name) = item {
                fields.push(resolve_field(child, name)?);
            }
        }
        if let Some(condition) = &inner.condition {
            self.check_condition(child, condition)?;
        }
        Ok(ChildColumn {
            relationship,
            child,
            parent_field,
            fields,
            condition: inner.condition.as_ref(),
            order: resolve_order(child, &inner.order)?,
            limit: inner.limit,
        })
    }

    /// The rows of a subquery for one parent, found by the parent's id: live children
    /// holding exactly that id, in change order, then sorted, limited and projected.
    pub(super) fn children_of(
        &self,
        store: &Store,
        version: &str,
        column: &ChildColumn,
        parent_id: &str,
    ) -> Vec<Value> {
        let Some(entity) = store.entity(SYSTEM, column.child.name) else {
            return Vec::new();
        };
        let parent = Value::String(parent_id.to_string());
        let candidates = match entity.lookup(column.parent_field, &parent) {
            Some(found) => found,
            None => entity.records.values().collect(),
        };
        let candidates: Vec<&Record> = candidates
            .into_iter()
            .filter(|record| record.fields.get_str(column.parent_field) == Some(parent_id))
            .collect();
        let matches = |record: &Record| {
            record.is_live()
                && column
                    .condition
                    .is_none_or(|condition| self.matches(store, column.child, condition, record))
        };
        self.finish(
            store,
            column.child,
            candidates,
            matches,
            &column.order,
            0,
            column.limit,
        )
        .into_iter()
        .filter_map(|seq| entity.by_seq(seq))
        .map(|record| self.render(store, version, column.child, record, Some(&column.fields)))
        .collect()
    }

    pub(super) fn query_more(&self, version: &str, locator: &str) -> Result<ApiResponse, SfError> {
        let invalid = || SfError::bad("INVALID_QUERY_LOCATOR", "invalid query locator");
        let (id, offset) = locator.rsplit_once('-').ok_or_else(invalid)?;
        let offset: usize = offset.parse().map_err(|_| invalid())?;
        let now = self.shared.clock.now();
        let cursors = lock(&self.cursors);
        let cursor = cursors
            .get(id)
            .filter(|cursor| cursor.created + CURSOR_TTL_MS > now)
            .ok_or_else(invalid)?;
        let total = cursor.rows.len();
        if offset > total {
            return Err(invalid());
        }
        let end = (offset + cursor.batch).min(total);
        // The cursor lock is let go before the store is locked: rendering a row can open a
        // child cursor, which takes the locks the other way round.
        let page = match &cursor.rows {
            CursorRows::Rendered(rows) => Err(rows[offset..end].to_vec()),
            CursorRows::Planned { query, seqs } => Ok((query.clone(), seqs[offset..end].to_vec())),
        };
        drop(cursors);
        let records: Vec<Value> = match page {
            Err(rows) => rows,
            Ok((query, seqs)) => {
                let object = self.object(&query.object).ok_or_else(invalid)?;
                let columns = self.columns(object, &query)?;
                let store = self.shared.store();
                let entity = store.entity(SYSTEM, object.name);
                seqs.iter()
                    .filter_map(|seq| entity?.by_seq(*seq))
                    .map(|record| self.row(&store, version, object, record, &columns))
                    .collect()
            }
        };
        let mut body = json!({
            "totalSize": total,
            "done": end >= total,
            "records": records,
        });
        if end < total
            && let Some(object) = body.as_object_mut()
        {
            object.insert(
                "nextRecordsUrl".into(),
                json!(format!("{API_PREFIX}{version}/query/{id}-{end}")),
            );
        }
        Ok(ApiResponse::json(StatusCode::OK, body))
    }

    /// Checks field names and literal types in a condition.
    pub(super) fn check_condition(
        &self,
        object: &ObjectDef,
        condition: &Condition,
    ) -> Result<(), SfError> {
        match condition {
            Condition::And(terms) | Condition::Or(terms) => terms
                .iter()
                .try_for_each(|term| self.check_condition(object, term)),
            Condition::Not(inner) => self.check_condition(object, inner),
            Condition::Compare { field, value, op } => {
                let definition = self.filter_field(object, field)?;
                if *op == Op::Like && !is_text_kind(&definition.kind) {
                    return Err(SfError::bad(
                        "INVALID_QUERY_FILTER_OPERATOR",
                        format!(
                            "invalid operator on {} field: {}",
                            definition.kind, definition.name
                        ),
                    ));
                }
                check_literal(definition, value)
            }
            Condition::In { field, values, .. } => {
                let definition = self.filter_field(object, field)?;
                values
                    .iter()
                    .try_for_each(|value| check_literal(definition, value))
            }
        }
    }

    pub(super) fn filter_field<'a>(
        &self,
        object: &'a ObjectDef,
        name: &str,
    ) -> Result<&'a FieldDef, SfError> {
        let field = object.field(name).ok_or_else(|| {
            SfError::bad(
                "INVALID_FIELD",
                format!("No such column '{name}' on entity '{}'", object.name),
            )
        })?;
        if field.kind == "address" {
            return Err(SfError::bad(
                "INVALID_FIELD",
                format!("field '{}' can not be filtered in a query call", field.name),
            ));
        }
        Ok(field)
    }

    /// Whether a record meets a condition; only the fields it names are computed.
    pub(super) fn matches(
        &self,
        store: &Store,
        object: &ObjectDef,
        condition: &Condition,
        record: &Record,
    ) -> bool {
        match condition {
            Condition::And(terms) => terms
                .iter()
                .all(|term| self.matches(store, object, term, record)),
            Condition::Or(terms) => terms
                .iter()
                .any(|term| self.matches(store, object, term, record)),
            Condition::Not(inner) => !self.matches(store, object, inner, record),
            Condition::Compare { field, op, value } => {
                let Some(definition) = object.field(field) else {
                    return false;
                };
                let actual = self.value_of(store, object, record, definition);
                compare(definition, &actual, *op, value)
            }
            Condition::In {
                field,
                values,
                negated,
            } => {
                let Some(definition) = object.field(field) else {
                    return false;
                };
                let actual = self.value_of(store, object, record, definition);
                let found = values
                    .iter()
                    .any(|value| compare(definition, &actual, Op::Eq, value));
                found != *negated
            }
        }
    }
}

/// A column of a query result.
pub(super) enum Column<'a> {
    Field(String),
    Children(ChildColumn<'a>),
}

/// A resolved parent-to-child subquery.
pub(super) struct ChildColumn<'a> {
    pub(super) relationship: &'static str,
    pub(super) child: &'a ObjectDef,
    pub(super) parent_field: &'static str,
    pub(super) fields: Vec<String>,
    pub(super) condition: Option<&'a Condition>,
    pub(super) order: Vec<(FieldDef, bool, bool)>,
    pub(super) limit: Option<usize>,
}

/// Child relationships: `(parent, relationship) -> (child object, field on the child, name)`.
pub(super) fn child_relationship(
    parent: &str,
    name: &str,
) -> Option<(&'static str, &'static str, &'static str)> {
    const RELATIONSHIPS: [(&str, &str, &str, &str); 8] = [
        ("Order", "OrderItems", "OrderItem", "OrderId"),
        ("Quote", "QuoteLineItems", "QuoteLineItem", "QuoteId"),
        ("Account", "Contacts", "Contact", "AccountId"),
        ("Account", "Opportunities", "Opportunity", "AccountId"),
        ("Account", "Orders", "Order", "AccountId"),
        ("Opportunity", "Quotes", "Quote", "OpportunityId"),
        (
            "Pricebook2",
            "PricebookEntries",
            "PricebookEntry",
            "Pricebook2Id",
        ),
        (
            "Product2",
            "PricebookEntries",
            "PricebookEntry",
            "Product2Id",
        ),
    ];
    RELATIONSHIPS
        .iter()
        .find(|(owner, relationship, _, _)| {
            *owner == parent && relationship.eq_ignore_ascii_case(name)
        })
        .map(|(_, relationship, child, field)| (*child, *field, *relationship))
}

pub(super) fn no_column(object: &ObjectDef, name: &str) -> SfError {
    SfError::bad(
        "INVALID_FIELD",
        format!(
            "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
            object.name
        ),
    )
}

pub(super) fn resolve_field(object: &ObjectDef, name: &str) -> Result<String, SfError> {
    object
        .field(name)
        .map(|field| field.name.clone())
        .ok_or_else(|| no_column(object, name))
}

pub(super) fn resolve_order(
    object: &ObjectDef,
    order: &[soql::OrderBy],
) -> Result<Vec<(FieldDef, bool, bool)>, SfError> {
    order
        .iter()
        .map(|item| {
            object
                .field(&item.field)
                .map(|field| (field.clone(), item.descending, item.nulls_last))
                .ok_or_else(|| no_column(object, &item.field))
        })
        .collect()
}

pub(super) fn is_text_kind(kind: &str) -> bool {
    !matches!(
        kind,
        "boolean" | "double" | "currency" | "percent" | "int" | "date" | "datetime" | "address"
    )
}

pub(super) fn check_literal(field: &FieldDef, value: &Literal) -> Result<(), SfError> {
    let expected = match field.kind.as_str() {
        "datetime" => (
            "dateTime",
            matches!(value, Literal::DateTime(_) | Literal::Null),
        ),
        "date" => ("date", matches!(value, Literal::Date(_) | Literal::Null)),
        "boolean" => ("boolean", matches!(value, Literal::Bool(_) | Literal::Null)),
        "double" | "currency" | "percent" | "int" => (
            "number",
            matches!(value, Literal::Number(_) | Literal::Null),
        ),
        _ => ("string", matches!(value, Literal::Text(_) | Literal::Null)),
    };
    if expected.1 {
        Ok(())
    } else {
        let quoting = if expected.0 == "string" {
            "should be enclosed in quotes"
        } else {
            "should not be enclosed in quotes"
        };
        Err(SfError::bad(
            "INVALID_QUERY_FILTER_OPERATOR",
            format!(
                "value of filter criterion for field '{}' must be of type {} and {quoting}",
                field.name, expected.0
            ),
        ))
    }
}

pub(super) fn like(pattern: &str, text: &str) -> bool {
    fn matches(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('%', rest)) => (0..=text.len()).any(|skip| matches(rest, &text[skip..])),
            Some(('_', rest)) => !text.is_empty() && matches(rest, &text[1..]),
            Some((c, rest)) => {
                text.first().is_some_and(|first| first == c) && matches(rest, &text[1..])
            }
        }
    }
    let pattern: Vec<char> = pattern.to_lowercase().chars().collect();
    let text: Vec<char> = text.to_lowercase().chars().collect();
    matches(&pattern, &text)
}

/// Evaluates one comparison of a rendered value with a literal.
pub(super) fn compare(field: &FieldDef, actual: &Value, op: Op, literal: &Literal) -> bool {
    use std::cmp::Ordering;
    if matches!(literal, Literal::Null) {
        return match op {
            Op::Eq => actual.is_null(),
            Op::Ne => !actual.is_null(),
            _ => false,
        };
    }
    if actual.is_null() {
        return op == Op::Ne;
    }
    if op == Op::Like {
        return match (actual.as_str(), literal) {
            (Some(text), Literal::Text(pattern)) => like(pattern, text),
            _ => false,
        };
    }
    let ordering: Option<Ordering> = match literal {
        Literal::DateTime(at) => actual
            .as_str()
            .and_then(parse_lenient_datetime)
            .map(|value| value.cmp(at)),
        Literal::Date(date) => actual.as_str().map(|value| value.cmp(date.as_str())),
        Literal::Number(number) => actual.as_f64().and_then(|value| value.partial_cmp(number)),
        Literal::Bool(flag) => actual.as_bool().map(|value| value.cmp(flag)),
        Literal::Text(text) => actual.as_str().map(|value| {
            if matches!(field.kind.as_str(), "id" | "reference") {
                let normalize = |id: &str| {
                    normalize_id(id)
                        .unwrap_or_else(|| id.to_string())
                        .to_lowercase()
                };
                normalize(value).cmp(&normalize(text))
            } else {
                value.to_lowercase().cmp(&text.to_lowercase())
            }
        }),
        Literal::Null => None,
    };
    let Some(ordering) = ordering else {
        return false;
    };
    match op {
        Op::Eq => ordering == Ordering::Equal,
        Op::Ne => ordering != Ordering::Equal,
        Op::Lt => ordering == Ordering::Less,
        Op::Le => ordering != Ordering::Greater,
        Op::Gt => ordering == Ordering::Greater,
        Op::Ge => ordering != Ordering::Less,
        Op::Like => false,
    }
}

pub(super) fn compare_values(
    left: Option<&Value>,
    right: Option<&Value>,
    nulls_last: bool,
    descending: bool,
) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let left = left.filter(|value| !value.is_null());
    let right = right.filter(|value| !value.is_null());
    match (left, right) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => {
            if nulls_last {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Some(_), None) => {
            if nulls_last {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (Some(left), Some(right)) => {
            let ordering = match (left, right) {
                (Value::Number(a), Value::Number(b)) => a
                    .as_f64()
                    .partial_cmp(&b.as_f64())
                    .unwrap_or(Ordering::Equal),
                (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
                _ => left
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase()
                    .cmp(&right.as_str().unwrap_or_default().to_lowercase()),
            };
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_wildcards_case_insensitively() {
        assert!(like("Ac%", "acme"));
        assert!(like("%me", "Acme"));
        assert!(like("A_me", "acme"));
        assert!(!like("A_me", "acmme"));
    }

    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use crate::salesforce::describe::sf_id;
    use crate::store::rfc3339;
    use crate::{SandboxOptions, Shared};

    fn simulator() -> Salesforce {
        let shared = Arc::new(Shared {
            store: std::sync::Mutex::new(Store::default()),
            clock: crate::store::Clock::default(),
            faults: crate::FaultSpec::default(),
            fault_rng: std::sync::Mutex::new(fastrand::Rng::with_seed(1)),
            rng: std::sync::Mutex::new(fastrand::Rng::with_seed(1)),
            counts: std::sync::Mutex::new(Default::default()),
            dirty: AtomicBool::new(false),
            options: SandboxOptions::default(),
        });
        Salesforce::new(shared, "http://127.0.0.1:1", Vec::new())
    }

    const BASE: Stamp = 1_700_000_000_000;

    /// Contacts with clashing stamps (the seed's bulk imports, a collection's one stamp),
    /// change stamps past their modified times (roll-ups), three accounts and some in the
    /// recycle bin.
    fn contacts(store: &mut Store, rows: &[(i64, i64, u8, u8, bool)]) -> Vec<String> {
        let objects = super::super::describe::load_objects();
        declare_lookups(store, &objects);
        let entity = store.entity_mut(SYSTEM, "Contact");
        let mut ids = Vec::new();
        for (index, (modified, extra, name, account, deleted)) in rows.iter().enumerate() {
            let id = sf_id("003", index as u64 + 1);
            let last_name = ["A", "B", "C"][*name as usize % 3];
            let fields = json!({
                "LastName": last_name,
                "AccountId": sf_id("001", u64::from(*account % 3) + 1),
            });
            let mut record = entity.new_record(
                id.clone(),
                fields.as_object().cloned().unwrap_or_default(),
                BASE,
            );
            record.modified = BASE + modified;
            record.touched = BASE + modified + extra;
            if *deleted {
                record.deleted = Some(record.touched);
            }
            entity.put(record);
            ids.push(id);
        }
        ids
    }

    /// What the simulator did before its indexes: every record in change order, filtered
    /// on its values, stably sorted, then OFFSET and LIMIT.
    fn scanned<'a>(
        sf: &Salesforce,
        store: &'a Store,
        object: &ObjectDef,
        query: &soql::Query,
        include_deleted: bool,
    ) -> Vec<&'a Record> {
        let order = resolve_order(object, &query.order).unwrap_or_default();
        let entity = store.entity(SYSTEM, object.name).expect("entity");
        let mut rows: Vec<&Record> = entity
            .by_change_scan(include_deleted)
            .into_iter()
            .filter(|record| {
                query
                    .condition
                    .as_ref()
                    .is_none_or(|condition| sf.matches(store, object, condition, record))
            })
            .collect();
        rows.sort_by(|left, right| {
            for (field, descending, nulls_last) in &order {
                let ordering = compare_values(
                    Some(&sf.value_of(store, object, left, field)),
                    Some(&sf.value_of(store, object, right, field)),
                    *nulls_last,
                    *descending,
                );
                if ordering != std::cmp::Ordering::Equal {
                    return ordering;
                }
            }
            std::cmp::Ordering::Equal
        });
        rows.into_iter()
            .skip(query.offset.unwrap_or(0))
            .take(query.limit.unwrap_or(usize::MAX))
            .collect()
    }

    fn at(offset: i64) -> String {
        rfc3339(BASE + offset)
    }

    #[test]
    fn plans_use_ids_lookups_and_stamp_ranges() {
        let objects = super::super::describe::load_objects();
        let contact = objects
            .iter()
            .find(|o| o.name == "Contact")
            .expect("Contact");
        let lookup = |field: &str| field == "AccountId";
        let condition = |text: &str| soql::parse(text).expect("parses").condition;
        let q = format!(
            "SELECT Id FROM Contact WHERE SystemModstamp >= {} AND SystemModstamp < {} AND LastName = 'A'",
            at(5),
            at(9)
        );
        assert_eq!(
            plan(contact, condition(&q).as_ref(), &lookup),
            Plan::Range {
                sort: Sort::Touched,
                low: Some(BASE + 5),
                high: Some(BASE + 8)
            }
        );
        let q = "SELECT Id FROM Contact WHERE LastName = 'A' AND AccountId = '001000000000001AAA'";
        assert!(
            matches!(plan(contact, condition(q).as_ref(), &lookup), Plan::Lookup(field, _) if field == "AccountId")
        );
        let q = "SELECT Id FROM Contact WHERE Id IN ('a', 'b')";
        assert_eq!(
            plan(contact, condition(q).as_ref(), &lookup),
            Plan::Ids(vec!["a".into(), "b".into()])
        );
        let q = format!(
            "SELECT Id FROM Contact WHERE SystemModstamp >= {} OR LastName = 'A'",
            at(1)
        );
        assert_eq!(plan(contact, condition(&q).as_ref(), &lookup), Plan::All);
    }

    proptest::proptest! {
        /// Every query gives through the indexes what a scan of every record gives: the
        /// same rows in the same order, for ranges, keyset and offset paging, lookups, ids,
        /// conditions the indexes cannot serve, and with the recycle bin included.
        #[test]
        fn indexed_queries_equal_scans(
            rows in proptest::collection::vec((0..30i64, proptest::prop_oneof![3 => proptest::strategy::Just(0i64), 1 => 0..5i64], 0..3u8, 0..3u8, proptest::bool::weighted(0.15)), 0..80),
            low in 0..30i64,
            high in 0..30i64,
            limit in 1..20usize,
            offset in 0..20usize,
            pick in 0..80usize,
        ) {
            let sf = simulator();
            let mut store = Store::default();
            let ids = contacts(&mut store, &rows);
            let id = |n: usize| ids.get(n % ids.len().max(1)).cloned().unwrap_or_default();
            let queries = [
                format!("SELECT Id FROM Contact WHERE SystemModstamp >= {} ORDER BY SystemModstamp, Id LIMIT {limit}", at(low)),
                "SELECT Id FROM Contact ORDER BY SystemModstamp, Id".to_string(),
                format!("SELECT Id FROM Contact ORDER BY SystemModstamp DESC, LastName OFFSET {offset}"),
                format!("SELECT Id FROM Contact WHERE LastModifiedDate > {} AND LastModifiedDate <= {} ORDER BY LastModifiedDate, LastName LIMIT {limit} OFFSET {offset}", at(low), at(high)),
                format!("SELECT Id FROM Contact WHERE AccountId = '{}' ORDER BY LastName", sf_id("001", (pick % 3) as u64 + 1)),
                format!("SELECT Id FROM Contact WHERE Id IN ('{}', '{}', '{}')", id(pick), id(pick / 2), id(pick).to_lowercase()),
                format!("SELECT Id FROM Contact WHERE CreatedDate < {} OR LastName = 'B'", at(high)),
                format!("SELECT Id FROM Contact WHERE SystemModstamp > {} AND LastName != 'A' ORDER BY SystemModstamp LIMIT {limit}", at(low)),
                format!("SELECT Id FROM Contact WHERE SystemModstamp = {}", at(low)),
                "SELECT Id FROM Contact".to_string(),
                format!("SELECT Id FROM Contact ORDER BY LastModifiedDate DESC LIMIT {limit}"),
            ];
            let object = sf.object("Contact").expect("Contact");
            let entity = store.entity(SYSTEM, "Contact").expect("entity");
            for text in &queries {
                let query = soql::parse(text).expect("parses");
                let order = resolve_order(object, &query.order).expect("order");
                for include_deleted in [false, true] {
                    let indexed = sf.select(&store, entity, object, query.condition.as_ref(), &order, include_deleted, query.offset.unwrap_or(0), query.limit);
                    let expected = scanned(&sf, &store, object, &query, include_deleted);
                    let seqs = |records: &[&Record]| records.iter().map(|record| record.seq).collect::<Vec<_>>();
                    proptest::prop_assert_eq!(&indexed, &seqs(&expected), "{} (queryAll: {})", text, include_deleted);
                }
            }
        }
    }
}
