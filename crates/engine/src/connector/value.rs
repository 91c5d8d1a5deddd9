//! Small pure helpers the connector applies to API payloads: compiled JSONPaths, record ids
//! and timestamps, the merge for read-merge-write updates, path templates and URLs without
//! secrets.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use indexmap::IndexMap;
use jsonpath_rust::parser::model::JpQuery;
use serde_json::Value;

use crate::spec::system::FieldSpec;

/// A JSONPath compiled once. Plain member chains (`$.data`, `$.error.message`) are looked up
/// directly; anything else goes through jsonpath-rust.
#[derive(Debug, Clone)]
pub struct JsonPath {
    text: String,
    kind: PathKind,
}

#[derive(Debug, Clone)]
enum PathKind {
    Members(Vec<String>),
    Query(Box<JpQuery>),
}

impl JsonPath {
    /// Compiles a path; the error is the parser's message.
    pub fn compile(text: &str) -> Result<JsonPath, String> {
        let trimmed = text.trim();
        if let Some(members) = plain_members(trimmed) {
            return Ok(JsonPath {
                text: trimmed.to_owned(),
                kind: PathKind::Members(members),
            });
        }
        let query = jsonpath_rust::parser::parse_json_path(trimmed)
            .map_err(|e| format!("`{trimmed}` is not a valid JSONPath: {e}"))?;
        Ok(JsonPath {
            text: trimmed.to_owned(),
            kind: PathKind::Query(Box::new(query)),
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The member names of a plain member chain (`$.a.b`: `a`, `b`; `$`: none); `None`
    /// for any other path.
    pub fn members(&self) -> Option<&[String]> {
        match &self.kind {
            PathKind::Members(members) => Some(members),
            PathKind::Query(_) => None,
        }
    }

    /// Every value the path selects.
    pub fn select<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        match &self.kind {
            PathKind::Members(members) => {
                let mut current = value;
                for member in members {
                    match current.get(member) {
                        Some(next) => current = next,
                        None => return Vec::new(),
                    }
                }
                vec![current]
            }
            PathKind::Query(query) => jsonpath_rust::query::js_path_process(query, value)
                .map(|refs| refs.into_iter().map(|r| r.val()).collect())
                .unwrap_or_default(),
        }
    }

    /// Every value the path selects, taken out of `value` (left `null` there). Plain member
    /// chains move the value without copying it; other paths copy what they select and
    /// leave `value` as it was.
    pub fn take(&self, value: &mut Value) -> Vec<Value> {
        match &self.kind {
            PathKind::Members(members) => {
                let mut current = value;
                for member in members {
                    match current.get_mut(member) {
                        Some(next) => current = next,
                        None => return Vec::new(),
                    }
                }
                vec![current.take()]
            }
            PathKind::Query(_) => self.select(value).into_iter().cloned().collect(),
        }
    }

    /// The first selected value that is not null.
    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.select(value).into_iter().find(|v| !v.is_null())
    }
}

/// `$`, `$.a`, `$.a.b` with plain member names.
fn plain_members(text: &str) -> Option<Vec<String>> {
    let rest = text.strip_prefix('$')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let rest = rest.strip_prefix('.')?;
    let members: Vec<String> = rest.split('.').map(str::to_owned).collect();
    let plain = members.iter().all(|m| {
        let mut chars = m.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    plain.then_some(members)
}

/// A record id as a string: strings as they are, numbers in their JSON form.
pub fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The id text of a listed value, empty strings included: strings as they are, numbers in
/// their JSON form (`1e30` reads as `1e+30`); `None` for anything else.
pub fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Why an id cannot address a record, or `None` when it can. An id must be one URL path
/// segment: not empty, and not `.` or `..`, which every URL parser removes as dot segments
/// even when they are percent-encoded (`%2E` is a dot segment too), so a request for such
/// a record would go to the collection or the API root. Where the system file says
/// `id_type: integer`, it must be an integer written in digits (`-` before them allowed).
pub fn id_problem(id: &str, integer: bool) -> Option<&'static str> {
    if id.is_empty() {
        return Some("the id is empty");
    }
    if id == "." || id == ".." {
        return Some(
            "the id is a dot segment, which a URL cannot carry as a path segment \
             (it would address the collection or the API root)",
        );
    }
    let digits = id.strip_prefix('-').unwrap_or(id);
    if integer && (digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit())) {
        return Some("the id is not an integer, as the system file says (`id_type: integer`)");
    }
    None
}

/// Reads a timestamp: RFC 3339 (`2024-05-01T10:00:00Z`), Salesforce's and Keap's
/// `2024-05-01T10:00:00.000+0000`, a date-time without offset (taken as UTC), a date
/// (midnight UTC), or epoch milliseconds (seconds when the number is small).
pub fn parse_time(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => parse_time_str(s),
        Value::Number(n) => {
            let n = n.as_i64()?;
            if n.abs() >= 100_000_000_000 {
                DateTime::from_timestamp_millis(n)
            } else {
                DateTime::from_timestamp(n, 0)
            }
        }
        _ => None,
    }
}

/// [`parse_time`] for text.
pub fn parse_time_str(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// An instant for a query parameter: RFC 3339 in UTC with milliseconds
/// (`2024-05-01T10:00:00.000Z`), the form every API here accepts.
pub fn format_param_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A SOQL datetime literal (unquoted, whole seconds, rounded down so nothing is skipped).
pub fn format_soql_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Merges `changes` into `base` as JSON Merge Patch does for objects (nested objects merge,
/// everything else replaces), except that null is kept as a value: a PUT must be able to
/// clear a field.
pub fn merge(base: &mut Value, changes: &Value) {
    match (base, changes) {
        (Value::Object(base), Value::Object(changes)) => {
            for (key, change) in changes {
                match base.get_mut(key) {
                    Some(existing) if existing.is_object() && change.is_object() => {
                        merge(existing, change)
                    }
                    _ => {
                        base.insert(key.clone(), change.clone());
                    }
                }
            }
        }
        (base, changes) => *base = changes.clone(),
    }
}

/// Removes the fields the system file marks read-only (also inside nested objects and
/// arrays of objects), for a PUT body built from a read record.
pub fn strip_read_only(record: &mut Value, fields: &IndexMap<String, FieldSpec>) {
    let Value::Object(object) = record else {
        return;
    };
    for (name, field) in fields {
        if field.read_only {
            object.shift_remove(name);
            continue;
        }
        let Some(nested) = &field.fields else {
            continue;
        };
        match object.get_mut(name) {
            Some(value @ Value::Object(_)) => strip_read_only(value, nested),
            Some(Value::Array(items)) => {
                for item in items {
                    strip_read_only(item, nested);
                }
            }
            _ => {}
        }
    }
}

/// Whether an id is plain enough to be inserted into a query parameter as it is: letters,
/// digits, `-`, `_` and `.` only (Salesforce ids, numbers, UUIDs).
pub fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Fills `{id}` in an endpoint path, percent-encoding the id so it stays one path segment.
pub fn fill_id(path: &str, id: &str) -> String {
    path.replace("{id}", &encode_segment(id))
}

/// Percent-encodes a text as one path segment: everything but letters, digits and
/// `-._~`, and the dots of a dot segment (`.` -> `%2E`, `..` -> `%2E%2E`). URL parsers
/// still take `%2E` for a dot; [`id_problem`] refuses such ids before they get here, and
/// the caller checks that the segment survived parsing.
pub fn encode_segment(text: &str) -> String {
    let dots = text == "." || text == "..";
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if !dots && (byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Query parameter names whose values are never shown.
fn secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "key",
        "secret",
        "password",
        "signature",
        "auth",
        "sig",
        "code",
    ]
    .iter()
    .any(|s| name.contains(s))
        && name != "sync_token"
}

/// A URL for logs and errors: no user info, and secret-looking query values replaced.
pub fn redact_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let value = if secret_param(&k) {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), value)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// Replaces every occurrence of a known secret in `text`.
pub fn redact_secrets(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// The first `max` characters of `text`, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_path_takes_what_it_selects_out_of_a_page() {
        let mut body = json!({"data": [{"id": 1}], "next": "/page/2"});
        let data = JsonPath::compile("$.data").unwrap();
        assert_eq!(data.take(&mut body), vec![json!([{"id": 1}])]);
        assert_eq!(body, json!({"data": null, "next": "/page/2"}));
        assert!(
            JsonPath::compile("$.missing")
                .unwrap()
                .take(&mut body)
                .is_empty()
        );
        let ids = JsonPath::compile("$.list[*].id").unwrap();
        let mut listed = json!({"list": [{"id": 1}, {"id": 2}]});
        assert_eq!(ids.take(&mut listed), vec![json!(1), json!(2)]);
        assert_eq!(listed, json!({"list": [{"id": 1}, {"id": 2}]}));
    }

    #[test]
    fn paths_select_members_and_filters() {
        let body = json!({"data": [{"id": 1}, {"id": 2}], "error": {"message": "no"},
                          "errs": [{"message": "first"}]});
        let data = JsonPath::compile("$.data").unwrap();
        assert_eq!(data.select(&body), vec![&json!([{"id": 1}, {"id": 2}])]);
        let ids = JsonPath::compile("$.data[*].id").unwrap();
        assert_eq!(ids.select(&body), vec![&json!(1), &json!(2)]);
        let message = JsonPath::compile("$.errs[0].message").unwrap();
        assert_eq!(message.first(&body), Some(&json!("first")));
        assert!(
            JsonPath::compile("$.missing")
                .unwrap()
                .first(&body)
                .is_none()
        );
        assert_eq!(JsonPath::compile("$").unwrap().select(&body), vec![&body]);
        assert!(JsonPath::compile("$[").is_err());
    }

    #[test]
    fn ids_from_strings_and_numbers() {
        assert_eq!(id_string(&json!(42)).as_deref(), Some("42"));
        assert_eq!(id_string(&json!("003A")).as_deref(), Some("003A"));
        assert_eq!(id_string(&json!("")), None);
        assert_eq!(id_string(&json!(null)), None);
    }

    #[test]
    fn times_in_every_form() {
        let expected = DateTime::parse_from_rfc3339("2024-11-07T20:35:13Z")
            .unwrap()
            .with_timezone(&Utc);
        for text in [
            "2024-11-07T20:35:13Z",
            "2024-11-07T20:35:13.000+0000",
            "2024-11-07T21:35:13+01:00",
            "2024-11-07T20:35:13.000",
        ] {
            assert_eq!(parse_time(&json!(text)), Some(expected), "{text}");
        }
        assert_eq!(parse_time(&json!(1731011713000_i64)), Some(expected));
        assert_eq!(parse_time(&json!(1731011713)), Some(expected));
        assert_eq!(
            parse_time(&json!("2024-11-07")).map(format_param_time),
            Some("2024-11-07T00:00:00.000Z".to_owned())
        );
        assert_eq!(parse_time(&json!("yesterday")), None);
        assert_eq!(format_soql_time(expected), "2024-11-07T20:35:13Z");
        let precise = parse_time(&json!("2024-11-07T20:35:13.123456Z")).unwrap();
        assert_eq!(precise.timestamp_subsec_micros(), 123_456);
    }

    #[test]
    fn merge_keeps_nested_fields_and_nulls() {
        let mut base =
            json!({"name": "A", "address": {"city": "Oslo", "zip": "0150"}, "tags": [1]});
        merge(
            &mut base,
            &json!({"address": {"city": "Bergen"}, "tags": [2], "phone": null}),
        );
        assert_eq!(
            base,
            json!({"name": "A", "address": {"city": "Bergen", "zip": "0150"}, "tags": [2], "phone": null})
        );
    }

    #[test]
    fn only_plain_ids_go_into_query_parameters() {
        assert!(is_plain_id("8018d000000001eAAA"));
        assert!(is_plain_id("42"));
        assert!(is_plain_id("3841d3a7-394e-4440-85db-5c02bd54a320"));
        assert!(!is_plain_id(""));
        assert!(!is_plain_id("x' OR Name != '"));
        assert!(!is_plain_id("a/b"));
    }

    #[test]
    fn ids_stay_one_segment_and_urls_hide_secrets() {
        assert_eq!(
            fill_id("/customers/{id}", "a/../b c"),
            "/customers/a%2F..%2Fb%20c"
        );
        let url = reqwest::Url::parse(
            "http://user:pw@127.0.0.1:8080/x?api_key=abc&offset=10&sync_token=t1",
        )
        .unwrap();
        assert_eq!(
            redact_url(&url),
            "http://127.0.0.1:8080/x?api_key=***&offset=10&sync_token=t1"
        );
        assert_eq!(
            redact_secrets("token s3cret-value leaked", &["s3cret-value".into()]),
            "token *** leaked"
        );
        assert_eq!(truncate("abcdef", 3), "abc...");
    }

    #[test]
    fn dot_segments_are_encoded_and_unusable_ids_named() {
        assert_eq!(fill_id("/customers/{id}", "."), "/customers/%2E");
        assert_eq!(fill_id("/customers/{id}", ".."), "/customers/%2E%2E");
        assert_eq!(fill_id("/customers/{id}", "a.b"), "/customers/a.b");
        for (id, integer) in [(".", false), ("..", false), ("", false), ("1e30", true)] {
            assert!(id_problem(id, integer).is_some(), "{id:?}");
        }
        for id in ["-", "1.5", "+1", "12a", " 1"] {
            assert!(id_problem(id, true).is_some(), "{id:?}");
        }
        for (id, integer) in [("42", true), ("-7", true), ("a.b", false), ("...", false)] {
            assert_eq!(id_problem(id, integer), None, "{id:?}");
        }
        assert_eq!(id_text(&json!("")).as_deref(), Some(""));
        assert_eq!(
            id_text(&serde_json::from_str::<Value>("1e30").unwrap()).as_deref(),
            Some("1e+30")
        );
        assert_eq!(id_text(&json!(null)), None);
    }
}
