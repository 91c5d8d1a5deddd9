//! Which of an entity's fields the API has for the signed-in user (its describe endpoint),
//! read once per run and kept in the system's [`HttpCore`]; SOQL select lists cut down to
//! the columns that exist; the fields of a system file an org lacks.
//!
//! Real behaviour (Salesforce SOQL and SOSL Reference, and REST API Developer Guide, "Describe
//! an Object"): the fields of an object differ per org (State and Country picklists add
//! `BillingStateCode`/`BillingCountryCode`, reduction orders add `OriginalOrderId`/
//! `IsReductionOrder`, field-level security hides fields from the integration user), and a
//! query naming one column the org does not have fails whole with `400 INVALID_FIELD`
//! ("No such column 'X' on entity 'Y'"), on every run. The describe lists exactly the
//! fields the user can see.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::connector::WriteAccess;
use crate::connector::compiled::EntityRt;
use crate::connector::error::ConnectorError;
use crate::connector::http::{HttpCore, Request, join_path};

/// The entity's field names (lowercase) from its describe, read once per run; `None` for
/// an entity without a describe endpoint.
pub(crate) async fn present_fields(
    core: &HttpCore,
    entity: &EntityRt,
) -> Result<Option<Arc<HashSet<String>>>, ConnectorError> {
    let Some(describe) = &entity.describe else {
        return Ok(None);
    };
    let (names, relationships) = (&describe.names, &describe.relationships);
    if let Some(found) = cached(core, &entity.name) {
        return Ok(Some(found));
    }
    let (body, method, url) = fetch(core, entity, &describe.path).await?;
    let listed = |path: &crate::connector::value::JsonPath| -> Vec<String> {
        path.select(&body)
            .into_iter()
            .filter_map(Value::as_str)
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let mut fields: HashSet<String> = listed(names).into_iter().collect();
    if fields.is_empty() {
        return Err(ConnectorError::Malformed {
            context: core.context(&method, &url, &entity.name),
            message: format!("the describe lists no fields at `{}`", names.as_str()),
            transient: false,
        });
    }
    fields.extend(listed(relationships));
    let lacking = missing(entity, &fields);
    if !lacking.is_empty() {
        tracing::warn!(system = %core.system, entity = %entity.name, fields = %lacking.join(", "),
            "fields of the system file that the API does not have for this user are left out of its queries");
    }
    let fields = Arc::new(fields);
    core.described
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(entity.name.clone(), fields.clone());
    Ok(Some(fields))
}

fn cached(core: &HttpCore, key: &str) -> Option<Arc<HashSet<String>>> {
    core.described
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(key)
        .cloned()
}

/// The columns a SOQL query of the entity may name: the object's fields and, per child
/// relationship (lowercase) whose describe the system file names, the child's fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct Columns {
    pub fields: Arc<HashSet<String>>,
    pub children: HashMap<String, Arc<HashSet<String>>>,
}

impl Columns {
    /// The query with the columns the org lacks left out (see [`restrict_soql`]).
    pub(crate) fn restrict(&self, query: &str) -> String {
        restrict_soql(query, &self.fields, &self.children)
    }
}

/// The entity's [`Columns`], read once per run; `None` without a describe endpoint.
pub(crate) async fn columns(
    core: &HttpCore,
    entity: &EntityRt,
) -> Result<Option<Columns>, ConnectorError> {
    let Some(fields) = present_fields(core, entity).await? else {
        return Ok(None);
    };
    let Some(describe) = &entity.describe else {
        return Ok(None);
    };
    let mut children = HashMap::new();
    for (relationship, path) in &describe.children {
        let key = format!("{}\u{1f}{relationship}", entity.name);
        let found = match cached(core, &key) {
            Some(found) => found,
            None => {
                let (body, _, _) = fetch(core, entity, path).await?;
                let names: HashSet<String> = describe
                    .names
                    .select(&body)
                    .into_iter()
                    .filter_map(Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .collect();
                let lacking = missing_children(entity, relationship, &names);
                if !lacking.is_empty() {
                    tracing::warn!(system = %core.system, entity = %entity.name, %relationship,
                        fields = %lacking.join(", "),
                        "fields of the system file's child records that the API does not have for this user are left out of its subqueries");
                }
                let names = Arc::new(names);
                core.described
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(key, names.clone());
                names
            }
        };
        children.insert(relationship.clone(), found);
    }
    Ok(Some(Columns { fields, children }))
}

/// The fields the system file declares for the records of a child relationship (at any
/// depth under the relationship's field, `OrderItems.records[].Quantity`) that the child's
/// describe does not list.
fn missing_children(
    entity: &EntityRt,
    relationship: &str,
    present: &HashSet<String>,
) -> Vec<String> {
    fn leaves(
        fields: &indexmap::IndexMap<String, crate::spec::system::FieldSpec>,
        out: &mut Vec<String>,
    ) {
        for (name, field) in fields {
            match &field.fields {
                Some(nested) if !nested.is_empty() => leaves(nested, out),
                _ => out.push(name.clone()),
            }
        }
    }
    let Some((_, field)) = entity
        .spec
        .fields
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(relationship))
    else {
        return Vec::new();
    };
    let Some(records) = field.fields.as_ref().and_then(|f| f.get("records")) else {
        return Vec::new();
    };
    let mut declared = Vec::new();
    if let Some(nested) = &records.fields {
        leaves(nested, &mut declared);
    }
    declared
        .into_iter()
        .filter(|name| !present.contains(&name.to_ascii_lowercase()))
        .collect()
}

/// The describe's answer, with the request's method and URL for errors.
async fn fetch(
    core: &HttpCore,
    entity: &EntityRt,
    path: &str,
) -> Result<(Value, reqwest::Method, reqwest::Url), ConnectorError> {
    let base = core.api_base().await?;
    let url = join_path(&base, path).map_err(|message| ConnectorError::Config {
        system: core.system.clone(),
        message: format!("entity `{}`: describe: {message}", entity.name),
    })?;
    let request = Request::get(url, &entity.name);
    let reply = core.send(&request).await?;
    if !reply.is_success() {
        return Err(ConnectorError::Status {
            context: core.context(&request.method, &reply.url, &entity.name),
            status: reply.status,
            error: core.api_error(reply.status, reply.json.as_ref(), &reply.text),
            retry_after: None,
        });
    }
    Ok((reply.json.unwrap_or(Value::Null), request.method, reply.url))
}

/// What the signed-in user may do with the entity's records, from its describe; `None`
/// for an entity without a describe. Read afresh (only `tether check` asks).
pub(crate) async fn access(
    core: &HttpCore,
    entity: &EntityRt,
) -> Result<Option<WriteAccess>, ConnectorError> {
    let Some(describe) = &entity.describe else {
        return Ok(None);
    };
    let (body, _, _) = fetch(core, entity, &describe.path).await?;
    Ok(Some(access_of(&body)))
}

/// The object-level permissions of a describe.
///
/// Real behaviour (REST API Developer Guide, "sObject Describe", and SOAP API Developer
/// Guide, `DescribeSObjectResult`): the describe carries `createable`, `updateable` and
/// `deletable` for the signed-in user, from the profile's and permission sets' object
/// permissions. One that is absent is taken as not granted (the stricter reading).
pub(crate) fn access_of(describe: &Value) -> WriteAccess {
    let flag = |name: &str| describe.get(name).and_then(Value::as_bool).unwrap_or(false);
    WriteAccess {
        create: flag("createable"),
        update: flag("updateable"),
        delete: flag("deletable"),
    }
}

/// The system file's fields of `entity` that the describe does not list, in file order.
pub(crate) fn missing(entity: &EntityRt, present: &HashSet<String>) -> Vec<String> {
    entity
        .spec
        .fields
        .keys()
        .filter(|name| !present.contains(&name.to_ascii_lowercase()))
        .cloned()
        .collect()
}

/// The query with the columns of its outer select list that are plain field names the org
/// does not have left out, and likewise the columns of each subquery over a child
/// relationship in `children` (by the child's fields); relationship paths (`Account.Name`),
/// functions and other subqueries are kept as they are. A query that is not
/// `SELECT ... FROM` comes back unchanged. Pure.
pub(crate) fn restrict_soql(
    query: &str,
    present: &HashSet<String>,
    children: &HashMap<String, Arc<HashSet<String>>>,
) -> String {
    let Some(start) = query
        .get(..6)
        .filter(|head| head.eq_ignore_ascii_case("select"))
        .map(|_| 6)
    else {
        return query.to_owned();
    };
    // The outer FROM.
    let columns_end = outer_keywords(query, "from").first().copied();
    let Some(end) = columns_end else {
        return query.to_owned();
    };
    let mut columns = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in query[start..end].chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            columns.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    columns.push(current);
    let kept: Vec<String> = columns
        .iter()
        .map(|column| column.trim())
        .filter(|column| {
            let plain = !column.is_empty()
                && column
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            !plain || present.contains(&column.to_ascii_lowercase())
        })
        .map(|column| {
            let inner = column
                .strip_prefix('(')
                .and_then(|rest| rest.strip_suffix(')'))
                .map(str::trim);
            match inner.and_then(|inner| Some((inner, children.get(&from_name(inner)?)?))) {
                Some((inner, child)) => {
                    format!("({})", restrict_soql(inner, child, &HashMap::new()))
                }
                None => column.to_owned(),
            }
        })
        .collect();
    if kept.is_empty() {
        return query.to_owned();
    }
    format!("SELECT {}{}", kept.join(", "), &query[end..])
}

/// The lowercase object or relationship name after the outer `FROM` of a query.
fn from_name(query: &str) -> Option<String> {
    let at = *outer_keywords(query, "from").first()?;
    let rest = query[at + 5..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_ascii_lowercase())
}

/// Where `keyword` (lowercase ASCII) stands as a word of the query's outer level, outside
/// parentheses and quoted literals: the index of the whitespace before each occurrence.
/// Pure.
pub(crate) fn outer_keywords(query: &str, keyword: &str) -> Vec<usize> {
    let bytes = query.as_bytes();
    let len = keyword.len();
    let mut found = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b'\'' => {
                // Skip a quoted literal.
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            c if depth == 0
                && c.is_ascii_whitespace()
                && query
                    .get(i + 1..i + 1 + len)
                    .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
                && bytes.get(i + 1 + len).is_some_and(u8::is_ascii_whitespace) =>
            {
                found.push(i);
            }
            _ => {}
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| n.to_ascii_lowercase()).collect()
    }

    fn restrict_soql(query: &str, present: &HashSet<String>) -> String {
        super::restrict_soql(query, present, &HashMap::new())
    }

    #[test]
    fn subquery_columns_are_cut_by_the_childs_fields() {
        let present = fields(&["Id", "Name"]);
        let children = HashMap::from([(
            "orderitems".to_owned(),
            Arc::new(fields(&["Id", "Quantity"])),
        )]);
        let query = "SELECT Id, (SELECT Id, ServiceDate, Quantity FROM OrderItems ORDER BY Id),                      (SELECT Id, Gone FROM Notes), Name FROM Order";
        assert_eq!(
            super::restrict_soql(query, &present, &children),
            "SELECT Id, (SELECT Id, Quantity FROM OrderItems ORDER BY Id), (SELECT Id, Gone FROM Notes), Name FROM Order"
        );
        assert_eq!(
            from_name("SELECT Id, (SELECT Id FROM A) FROM B WHERE x"),
            Some("b".into())
        );
    }

    #[test]
    fn object_permissions_come_from_the_describe_and_absent_ones_are_refused() {
        let access = access_of(&serde_json::json!({
            "name": "Order", "createable": true, "updateable": false, "fields": []
        }));
        assert_eq!(
            access,
            WriteAccess {
                create: true,
                update: false,
                delete: false
            }
        );
    }

    #[test]
    fn columns_the_org_lacks_are_left_out_of_the_outer_select() {
        let present = fields(&["Id", "Name", "Status"]);
        let query = "SELECT Id, OriginalOrderId, Name,\n IsReductionOrder, Status, \
                     (SELECT Id, Gone FROM OrderItems), Account.Name FROM Order WHERE Name = 'a, from b' ORDER BY Id";
        assert_eq!(
            restrict_soql(query, &present),
            "SELECT Id, Name, Status, (SELECT Id, Gone FROM OrderItems), Account.Name FROM Order WHERE Name = 'a, from b' ORDER BY Id"
        );
    }

    #[test]
    fn a_query_with_every_column_or_no_select_is_kept() {
        let present = fields(&["Id", "Name"]);
        assert_eq!(
            restrict_soql("select Id, Name from Contact", &present),
            "SELECT Id, Name from Contact"
        );
        assert_eq!(restrict_soql("/contacts", &present), "/contacts");
        assert_eq!(
            restrict_soql("SELECT Gone FROM Contact", &present),
            "SELECT Gone FROM Contact",
            "never an empty select list: the API's error says what is wrong"
        );
    }
}
