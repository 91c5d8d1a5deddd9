//! SOQL evaluation (`soql` parses): `query` and `queryAll` over the store, with the
//! conditions checked against the object's fields, parent fields and child subqueries as
//! columns, ordering, `LIMIT`/`OFFSET`, and `nextRecordsUrl` paging through cursors that
//! expire.

use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::http::{ApiRequest, ApiResponse};
use crate::salesforce::describe::{FieldDef, ObjectDef, normalize_id};
use crate::salesforce::soql::{self, Condition, Literal, Op};
use crate::salesforce::{API_PREFIX, CURSOR_TTL_MS, SYSTEM, Salesforce, SfError, lock, not_found};
use crate::store::{Stamp, Store, parse_lenient_datetime};

/// Children of one parent a query answers at once; the rest is behind the child
/// relationship's own `nextRecordsUrl` (see [`Salesforce::child_result`]).
pub(crate) const CHILD_BATCH: usize = 200;
/// Open query locators kept; the oldest is dropped past this.
const MAX_CURSORS: usize = 50;

pub(super) struct QueryCursor {
    pub(super) records: Vec<Value>,
    pub(super) batch: usize,
    pub(super) created: Stamp,
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
        if let Some(condition) = &parsed.condition {
            self.check_condition(object, condition)?;
        }
        let order = resolve_order(object, &parsed.order)?;
        let store = self.shared.store();
        let mut rows = self.select_rows(
            &store,
            version,
            object,
            parsed.condition.as_ref(),
            &order,
            include_deleted,
        );
        rows = rows
            .into_iter()
            .skip(parsed.offset.unwrap_or(0))
            .take(parsed.limit.unwrap_or(usize::MAX))
            .collect();
        let children: Vec<HashMap<String, Vec<Value>>> = columns
            .iter()
            .map(|column| match column {
                Column::Children(child) => self.child_rows(&store, version, child),
                Column::Field(_) => HashMap::new(),
            })
            .collect();
        drop(store);
        let mut out_rows = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut out = Map::new();
            if let Some(attributes) = row.get("attributes") {
                out.insert("attributes".into(), attributes.clone());
            }
            let id = row.get("Id").and_then(Value::as_str).unwrap_or_default();
            for (column, groups) in columns.iter().zip(&children) {
                match column {
                    Column::Field(name) => {
                        out.insert(name.clone(), row.get(name).cloned().unwrap_or(Value::Null));
                    }
                    Column::Children(child) => {
                        let value = match groups.get(id) {
                            Some(records) if !records.is_empty() => {
                                self.child_result(version, records.clone())
                            }
                            _ => Value::Null,
                        };
                        out.insert(child.relationship.to_string(), value);
                    }
                }
            }
            out_rows.push(Value::Object(out));
        }
        let rows = out_rows;
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
        let total = rows.len();
        if total <= batch {
            return Ok(ApiResponse::json(
                StatusCode::OK,
                json!({"totalSize": total, "done": true, "records": rows}),
            ));
        }
        let first: Vec<Value> = rows[..batch].to_vec();
        let locator = self.open_cursor(rows, batch);
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

    /// Keeps the rest of a result for `query/{locator}-{offset}` and names its locator.
    fn open_cursor(&self, records: Vec<Value>, batch: usize) -> String {
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
                records,
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
        let locator = self.open_cursor(records, CHILD_BATCH);
        json!({
            "totalSize": total,
            "done": false,
            "nextRecordsUrl": format!("{API_PREFIX}{version}/query/{locator}-{CHILD_BATCH}"),
            "records": first,
        })
    }

    /// Every matching record rendered in full, sorted.
    pub(super) fn select_rows(
        &self,
        store: &Store,
        version: &str,
        object: &ObjectDef,
        condition: Option<&Condition>,
        order: &[(FieldDef, bool, bool)],
        include_deleted: bool,
    ) -> Vec<Value> {
        let mut rows: Vec<Value> = store
            .entity(SYSTEM, object.name)
            .map(|records| records.by_change(include_deleted))
            .unwrap_or_default()
            .into_iter()
            .map(|record| self.render(store, version, object, record, None))
            .filter(|row| condition.is_none_or(|condition| self.matches(object, condition, row)))
            .collect();
        if !order.is_empty() {
            rows.sort_by(|left, right| {
                for (field, descending, nulls_last) in order {
                    let ordering = compare_values(
                        left.get(&field.name),
                        right.get(&field.name),
                        *nulls_last,
                        *descending,
                    );
                    if ordering != std::cmp::Ordering::Equal {
                        return ordering;
                    }
                }
                std::cmp::Ordering::Equal
            });
        }
        rows
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

    /// The rows of a subquery, grouped by the parent they belong to.
    pub(super) fn child_rows(
        &self,
        store: &Store,
        version: &str,
        column: &ChildColumn,
    ) -> HashMap<String, Vec<Value>> {
        let mut groups: HashMap<String, Vec<Value>> = HashMap::new();
        let rows = self.select_rows(
            store,
            version,
            column.child,
            column.condition,
            &column.order,
            false,
        );
        for row in rows {
            let Some(parent) = row
                .get(column.parent_field)
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                continue;
            };
            let group = groups.entry(parent).or_default();
            if column.limit.is_none_or(|limit| group.len() < limit) {
                group.push(project(&row, &column.fields));
            }
        }
        groups
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
        if offset > cursor.records.len() {
            return Err(invalid());
        }
        let end = (offset + cursor.batch).min(cursor.records.len());
        let mut body = json!({
            "totalSize": cursor.records.len(),
            "done": end >= cursor.records.len(),
            "records": cursor.records[offset..end].to_vec(),
        });
        if end < cursor.records.len()
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

    pub(super) fn matches(&self, object: &ObjectDef, condition: &Condition, row: &Value) -> bool {
        match condition {
            Condition::And(terms) => terms.iter().all(|term| self.matches(object, term, row)),
            Condition::Or(terms) => terms.iter().any(|term| self.matches(object, term, row)),
            Condition::Not(inner) => !self.matches(object, inner, row),
            Condition::Compare { field, op, value } => {
                let Some(definition) = object.field(field) else {
                    return false;
                };
                compare(
                    definition,
                    row.get(&definition.name).unwrap_or(&Value::Null),
                    *op,
                    value,
                )
            }
            Condition::In {
                field,
                values,
                negated,
            } => {
                let Some(definition) = object.field(field) else {
                    return false;
                };
                let actual = row.get(&definition.name).unwrap_or(&Value::Null);
                let found = values
                    .iter()
                    .any(|value| compare(definition, actual, Op::Eq, value));
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

/// Keeps `attributes` and the selected fields, in the order selected.
pub(super) fn project(row: &Value, fields: &[String]) -> Value {
    let mut out = Map::new();
    if let Some(attributes) = row.get("attributes") {
        out.insert("attributes".into(), attributes.clone());
    }
    for name in fields {
        out.insert(name.clone(), row.get(name).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
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
}
