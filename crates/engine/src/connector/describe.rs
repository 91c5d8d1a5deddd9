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

use std::collections::HashSet;
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
    let Some((path, names, relationships)) = &entity.describe else {
        return Ok(None);
    };
    if let Some(found) = core
        .described
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&entity.name)
    {
        return Ok(Some(found.clone()));
    }
    let (body, method, url) = fetch(core, entity, path).await?;
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
    let Some((path, _, _)) = &entity.describe else {
        return Ok(None);
    };
    let (body, _, _) = fetch(core, entity, path).await?;
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
/// does not have left out; subqueries, relationship paths (`Account.Name`) and functions
/// are kept as they are. A query that is not `SELECT ... FROM` comes back unchanged.
pub(crate) fn restrict_soql(query: &str, present: &HashSet<String>) -> String {
    let Some(start) = query
        .get(..6)
        .filter(|head| head.eq_ignore_ascii_case("select"))
        .map(|_| 6)
    else {
        return query.to_owned();
    };
    // The outer FROM: the first `from` word at depth 0 after SELECT.
    let bytes = query.as_bytes();
    let mut depth = 0i32;
    let mut columns_end = None;
    let mut i = start;
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
            _ if depth == 0
                && bytes[i].is_ascii_whitespace()
                && query
                    .get(i + 1..i + 5)
                    .is_some_and(|w| w.eq_ignore_ascii_case("from"))
                && query
                    .as_bytes()
                    .get(i + 5)
                    .is_some_and(|c| c.is_ascii_whitespace()) =>
            {
                columns_end = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
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
    let kept: Vec<&str> = columns
        .iter()
        .map(|column| column.trim())
        .filter(|column| {
            let plain = !column.is_empty()
                && column
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            !plain || present.contains(&column.to_ascii_lowercase())
        })
        .collect();
    if kept.is_empty() {
        return query.to_owned();
    }
    format!("SELECT {}{}", kept.join(", "), &query[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| n.to_ascii_lowercase()).collect()
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
