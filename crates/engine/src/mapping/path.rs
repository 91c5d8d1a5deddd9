//! Paths into records, parsed once.
//!
//! A [`RecordPath`] is either *direct* (a list of [`Step`]s: object keys, list indexes and
//! `key == value` list selectors), read and written without any query engine, or a real
//! JSONPath *query* (wildcards, slices, descendants, other filters), evaluated by the
//! JSONPath engine and only ever read. Source paths are written as JSONPath
//! (`$.addresses[?(@.type=='billing')].city`); target paths are dotted
//! (`addresses[type=billing].city`); both syntaxes are accepted on both sides and give the
//! same steps. The JSONPath engine stays behind this type so it can be changed in one place.

use std::borrow::Cow;
use std::fmt;

use jsonpath_rust::parser::model::{
    Comparable, Comparison, Filter, FilterAtom, JpQuery, Literal, Segment, Selector, SingularQuery,
    SingularQuerySegment,
};
use serde_json::{Map, Value};

/// One step of a direct path.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// An object key.
    Key(String),
    /// A list index, from 0.
    Index(usize),
    /// The first list item whose `key` equals `value` (compared as text for scalars).
    Select { key: String, value: Value },
}

#[derive(Debug, Clone)]
enum Kind {
    Direct(Vec<Step>),
    Query(Box<JpQuery>),
}

/// A compiled path into a record.
#[derive(Debug, Clone)]
pub struct RecordPath {
    text: String,
    kind: Kind,
}

/// Why a path does not parse or cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid JSONPath `{path}`: {reason}")]
    InvalidJsonPath { path: String, reason: String },
    #[error("invalid path `{path}`: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("`{path}` is a JSONPath query and can only be read")]
    ReadOnly { path: String },
    #[error("cannot write `{path}`: {reason}")]
    Conflict { path: String, reason: String },
}

impl fmt::Display for RecordPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl RecordPath {
    /// Parses a path: JSONPath when it starts with `$`, dotted otherwise.
    pub fn parse(text: &str) -> Result<RecordPath, PathError> {
        let trimmed = text.trim();
        if trimmed.starts_with('$') {
            parse_json_path(trimmed)
        } else {
            Ok(RecordPath {
                text: trimmed.to_string(),
                kind: Kind::Direct(parse_dotted(trimmed)?),
            })
        }
    }

    /// Parses a path that must be writable (a target path, or a source path written back).
    pub fn parse_writable(text: &str) -> Result<RecordPath, PathError> {
        let path = RecordPath::parse(text)?;
        match &path.kind {
            Kind::Query(_) => Err(PathError::ReadOnly {
                path: path.text.clone(),
            }),
            Kind::Direct(steps) if steps.is_empty() => Err(PathError::InvalidPath {
                path: path.text.clone(),
                reason: "the path names no field".into(),
            }),
            Kind::Direct(_) => Ok(path),
        }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The steps of a direct path; `None` for a JSONPath query.
    pub fn steps(&self) -> Option<&[Step]> {
        match &self.kind {
            Kind::Direct(steps) => Some(steps),
            Kind::Query(_) => None,
        }
    }

    /// Whether the path can be written (it is direct and names at least one field).
    pub fn is_writable(&self) -> bool {
        matches!(&self.kind, Kind::Direct(steps) if !steps.is_empty())
    }

    /// The names a query path walks through, for checking them against field lists: object
    /// keys, and `None` for a step into list items. Stops at a descendant segment, after
    /// which the names cannot be placed.
    pub fn query_names(&self) -> Vec<Option<String>> {
        match &self.kind {
            Kind::Direct(steps) => steps
                .iter()
                .map(|s| match s {
                    Step::Key(k) => Some(k.clone()),
                    Step::Index(_) | Step::Select { .. } => None,
                })
                .collect(),
            Kind::Query(query) => {
                let mut names = Vec::new();
                for segment in &query.segments {
                    match segment {
                        Segment::Selector(Selector::Name(name)) => names.push(Some(name.clone())),
                        Segment::Selector(_) | Segment::Selectors(_) => names.push(None),
                        Segment::Descendant(_) => break,
                    }
                }
                names
            }
        }
    }

    /// Reads the value at the path. `None` means absent (distinct from a JSON null). A query
    /// matching one node gives that node; several give a list of them.
    pub fn get<'a>(&self, record: &'a Value) -> Option<Cow<'a, Value>> {
        match &self.kind {
            Kind::Direct(steps) => get_steps(steps, record).map(Cow::Borrowed),
            Kind::Query(query) => {
                let found = jsonpath_rust::query::js_path_process(query, record).ok()?;
                match found.len() {
                    0 => None,
                    1 => found.into_iter().next().map(|r| Cow::Borrowed(r.val)),
                    _ => Some(Cow::Owned(Value::Array(
                        found.into_iter().map(|r| r.val.clone()).collect(),
                    ))),
                }
            }
        }
    }

    /// Writes `value` at the path, creating objects, lists and selected list items
    /// (`{key: value}`) on the way.
    pub fn set(&self, record: &mut Value, value: Value) -> Result<(), PathError> {
        let steps = match &self.kind {
            Kind::Direct(steps) if !steps.is_empty() => steps,
            _ => {
                return Err(PathError::ReadOnly {
                    path: self.text.clone(),
                });
            }
        };
        set_steps(steps, record, value).map_err(|reason| PathError::Conflict {
            path: self.text.clone(),
            reason,
        })
    }
}

fn get_steps<'a>(steps: &[Step], record: &'a Value) -> Option<&'a Value> {
    let mut current = record;
    for step in steps {
        current = match step {
            Step::Key(key) => object_get(current.as_object()?, key)?,
            Step::Index(index) => current.as_array()?.get(*index)?,
            Step::Select { key, value } => current
                .as_array()?
                .iter()
                .find(|item| item.get(key).is_some_and(|v| scalar_eq(v, value)))?,
        };
    }
    Some(current)
}

/// Looks a key up in an object. Records have few fields, and comparing a handful of short
/// keys is cheaper than hashing the key, so small objects are scanned.
fn object_get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if map.len() <= 24 {
        map.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    } else {
        map.get(key)
    }
}

fn set_steps(steps: &[Step], record: &mut Value, value: Value) -> Result<(), String> {
    let mut current = record;
    let last = steps.len() - 1;
    for (position, step) in steps.iter().enumerate() {
        if current.is_null() {
            *current = match step {
                Step::Key(_) => Value::Object(Map::new()),
                Step::Index(_) | Step::Select { .. } => Value::Array(Vec::new()),
            };
        }
        let slot: &mut Value = match (step, current) {
            (Step::Key(key), Value::Object(map)) => {
                if position == last {
                    map.insert(key.clone(), value);
                    return Ok(());
                }
                map.entry(key.clone()).or_insert(Value::Null)
            }
            (Step::Index(index), Value::Array(items)) => {
                if *index > items.len() + 1024 {
                    return Err(format!("index {index} is far past the end of the list"));
                }
                while items.len() <= *index {
                    items.push(Value::Null);
                }
                &mut items[*index]
            }
            (Step::Select { key, value: wanted }, Value::Array(items)) => {
                let found = items
                    .iter()
                    .position(|item| item.get(key).is_some_and(|v| scalar_eq(v, wanted)));
                let at = match found {
                    Some(at) => at,
                    None => {
                        let mut item = Map::new();
                        item.insert(key.clone(), wanted.clone());
                        items.push(Value::Object(item));
                        items.len() - 1
                    }
                };
                &mut items[at]
            }
            (Step::Key(key), other) => {
                return Err(format!(
                    "`{key}` is inside {}, not an object",
                    kind_name(other)
                ));
            }
            (_, other) => return Err(format!("expected a list, found {}", kind_name(other))),
        };
        if position == last {
            *slot = value;
            return Ok(());
        }
        current = slot;
    }
    Ok(())
}

/// A short name of a JSON value's kind, for messages.
pub fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Compares two scalars as text (`5` equals `"5"`), other values structurally.
pub fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            n.to_string() == *s
        }
        (Value::String(s), Value::Bool(b)) | (Value::Bool(b), Value::String(s)) => {
            s == if *b { "true" } else { "false" }
        }
        _ => a == b,
    }
}

fn parse_json_path(text: &str) -> Result<RecordPath, PathError> {
    let query =
        jsonpath_rust::parser::parse_json_path(text).map_err(|e| PathError::InvalidJsonPath {
            path: text.to_string(),
            reason: json_path_reason(&e.to_string()),
        })?;
    let kind = match direct_steps(&query) {
        Some(steps) => Kind::Direct(steps),
        None => Kind::Query(Box::new(query)),
    };
    Ok(RecordPath {
        text: text.to_string(),
        kind,
    })
}

/// The JSONPath parser's error in one line: "expected X at character N" for syntax errors.
fn json_path_reason(text: &str) -> String {
    let expected = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("= "))
        .map(str::trim);
    let at = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("--> "))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|c| c.trim().parse::<usize>().ok());
    match (expected, at) {
        (Some(expected), Some(at)) => format!("{expected} at character {at}"),
        (Some(expected), None) => expected.to_string(),
        _ => first_line(text),
    }
}

fn first_line(text: &str) -> String {
    let mut line: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.len() > 200 {
        let mut cut = 200;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// The steps of a JSONPath that needs no query engine: names, non-negative indexes and
/// single `@.key == literal` filters.
fn direct_steps(query: &JpQuery) -> Option<Vec<Step>> {
    let mut steps = Vec::with_capacity(query.segments.len());
    for segment in &query.segments {
        let selector = match segment {
            Segment::Selector(selector) => selector,
            Segment::Selectors(selectors) if selectors.len() == 1 => &selectors[0],
            _ => return None,
        };
        steps.push(match selector {
            Selector::Name(name) => Step::Key(name.clone()),
            Selector::Index(index) if *index >= 0 => Step::Index(usize::try_from(*index).ok()?),
            Selector::Filter(filter) => equality_filter(filter)?,
            _ => return None,
        });
    }
    Some(steps)
}

fn equality_filter(filter: &Filter) -> Option<Step> {
    let atom = match filter {
        Filter::Atom(atom) => atom,
        Filter::Or(items) | Filter::And(items) if items.len() == 1 => {
            return equality_filter(&items[0]);
        }
        _ => return None,
    };
    let comparison = match atom {
        FilterAtom::Comparison(comparison) => comparison,
        FilterAtom::Filter { expr, not: false } => return equality_filter(expr),
        _ => return None,
    };
    let Comparison::Eq(left, right) = comparison.as_ref() else {
        return None;
    };
    let (key, literal) = match (left, right) {
        (Comparable::SingularQuery(q), Comparable::Literal(l))
        | (Comparable::Literal(l), Comparable::SingularQuery(q)) => (q, l),
        _ => return None,
    };
    let SingularQuery::Current(segments) = key else {
        return None;
    };
    let [SingularQuerySegment::Name(key)] = segments.as_slice() else {
        return None;
    };
    let value = match literal {
        Literal::String(s) => Value::String(s.clone()),
        Literal::Int(i) => Value::from(*i),
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Float(_) | Literal::Null => return None,
    };
    Some(Step::Select {
        key: key.clone(),
        value,
    })
}

/// Parses `a.b[0].c[type=billing].d`.
fn parse_dotted(text: &str) -> Result<Vec<Step>, PathError> {
    let invalid = |reason: String| PathError::InvalidPath {
        path: text.to_string(),
        reason,
    };
    if text.is_empty() {
        return Err(invalid("the path is empty".into()));
    }
    let mut steps = Vec::new();
    for part in text.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if name.is_empty() {
            return Err(invalid(if part.is_empty() {
                "empty field name (two dots, or a dot at an end)".into()
            } else {
                format!("`{part}` has no field name before `[`")
            }));
        }
        if name.contains(']') {
            return Err(invalid(format!("unexpected `]` in `{part}`")));
        }
        steps.push(Step::Key(name.to_string()));
        while !rest.is_empty() {
            let Some(close) = rest.find(']') else {
                return Err(invalid(format!("`{part}` has an unclosed `[`")));
            };
            if !rest.starts_with('[') {
                return Err(invalid(format!("unexpected text `{rest}` in `{part}`")));
            }
            let inside = rest[1..close].trim();
            rest = &rest[close + 1..];
            if let Some((key, value)) = inside.split_once('=') {
                let key = key.trim();
                let value = value.trim();
                let value = value
                    .strip_prefix('\'')
                    .and_then(|v| v.strip_suffix('\''))
                    .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                    .unwrap_or(value);
                if key.is_empty() {
                    return Err(invalid(format!("`[{inside}]` names no key")));
                }
                steps.push(Step::Select {
                    key: key.to_string(),
                    value: Value::String(value.to_string()),
                });
            } else {
                let index: usize = inside.parse().map_err(|_| {
                    invalid(format!(
                        "`[{inside}]` is neither an index `[0]` nor a selector `[key=value]`"
                    ))
                })?;
                steps.push(Step::Index(index));
            }
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn steps(text: &str) -> Vec<Step> {
        RecordPath::parse(text)
            .expect("parses")
            .steps()
            .expect("direct")
            .to_vec()
    }

    #[test]
    fn plain_json_paths_are_direct() {
        assert_eq!(
            steps("$.a.b[0]"),
            vec![Step::Key("a".into()), Step::Key("b".into()), Step::Index(0)]
        );
        assert_eq!(
            steps("$.addresses[?(@.field=='BILLING')].line1"),
            vec![
                Step::Key("addresses".into()),
                Step::Select {
                    key: "field".into(),
                    value: json!("BILLING")
                },
                Step::Key("line1".into())
            ]
        );
        assert_eq!(steps("$['odd name']"), vec![Step::Key("odd name".into())]);
    }

    #[test]
    fn dotted_target_paths_parse() {
        assert_eq!(
            steps("addresses[type=billing].city"),
            vec![
                Step::Key("addresses".into()),
                Step::Select {
                    key: "type".into(),
                    value: json!("billing")
                },
                Step::Key("city".into())
            ]
        );
        assert_eq!(
            steps("lines[2].sku"),
            vec![
                Step::Key("lines".into()),
                Step::Index(2),
                Step::Key("sku".into())
            ]
        );
        for bad in ["", "a..b", ".a", "a[", "a[x]", "[0]", "a[=x]"] {
            assert!(RecordPath::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn real_queries_are_read_only() {
        let path = RecordPath::parse("$.items[*].sku").expect("parses");
        assert!(!path.is_writable());
        let record = json!({"items": [{"sku": "a"}, {"sku": "b"}]});
        assert_eq!(
            path.get(&record).map(Cow::into_owned),
            Some(json!(["a", "b"]))
        );
        assert!(matches!(
            RecordPath::parse_writable("$.items[*].sku"),
            Err(PathError::ReadOnly { .. })
        ));
        assert!(matches!(
            RecordPath::parse("$.a[?(@.x >"),
            Err(PathError::InvalidJsonPath { .. })
        ));
    }

    #[test]
    fn reads_tell_absent_from_null() {
        let record = json!({"a": null, "b": {"c": 1}, "l": [{"k": "v", "x": 2}]});
        let get = |p: &str| {
            RecordPath::parse(p)
                .unwrap()
                .get(&record)
                .map(Cow::into_owned)
        };
        assert_eq!(get("$.a"), Some(Value::Null));
        assert_eq!(get("$.missing"), None);
        assert_eq!(get("$.b.c"), Some(json!(1)));
        assert_eq!(get("$.b.c.d"), None);
        assert_eq!(get("$.l[?(@.k=='v')].x"), Some(json!(2)));
        assert_eq!(get("$.l[?(@.k=='w')].x"), None);
        assert_eq!(get("l[k=v].x"), Some(json!(2)));
    }

    #[test]
    fn writes_build_nested_objects_and_selected_items() {
        let mut record = json!({});
        let set = |record: &mut Value, p: &str, v: Value| {
            RecordPath::parse_writable(p)
                .unwrap()
                .set(record, v)
                .unwrap()
        };
        set(&mut record, "billing.city", json!("Oslo"));
        set(&mut record, "addresses[type=billing].city", json!("Oslo"));
        set(&mut record, "addresses[type=billing].zip", json!("0150"));
        set(
            &mut record,
            "addresses[type=shipping].city",
            json!("Bergen"),
        );
        set(&mut record, "lines[1].sku", json!("x"));
        assert_eq!(
            record,
            json!({
                "billing": {"city": "Oslo"},
                "addresses": [
                    {"type": "billing", "city": "Oslo", "zip": "0150"},
                    {"type": "shipping", "city": "Bergen"}
                ],
                "lines": [null, {"sku": "x"}]
            })
        );
        let path = RecordPath::parse_writable("name.first").unwrap();
        let mut scalar = json!({"name": "x"});
        assert!(matches!(
            path.set(&mut scalar, json!(1)),
            Err(PathError::Conflict { .. })
        ));
    }
}
