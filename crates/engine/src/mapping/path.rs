//! Paths into records, parsed once. (Over 1,000 lines: parsing, reading, writing and the
//! query bounds of one path type, with their unit tests.)
//!
//! A [`RecordPath`] is either *direct* (a list of [`Step`]s: object keys, list indexes and
//! `key == value` list selectors), read and written without any query engine, or a real
//! JSONPath *query* (wildcards, slices, descendants, other filters), evaluated by the
//! JSONPath engine and only ever read. Source paths are written as JSONPath
//! (`$.addresses[?(@.type=='billing')].city`); target paths are dotted
//! (`addresses[type=billing].city`); both syntaxes are accepted on both sides and give the
//! same steps. The JSONPath engine stays behind this type so it can be changed in one place.
//!
//! A query's cost depends on the record it reads (`$..*..*` visits every node below every
//! node), so before a query runs on a record its work is measured on that record, without
//! building anything: how many nodes it would produce, how deep a recursive descent (`..`)
//! would go and how many bytes of node paths the engine would build. A query over one of
//! those bounds fails for that record with a [`QueryBound`] instead of running.

use std::borrow::Cow;
use std::fmt;

use jsonpath_rust::parser::model::{
    Comparable, Comparison, Filter, FilterAtom, FnArg, JpQuery, Literal, Segment, Selector,
    SingularQuery, SingularQuerySegment, Test, TestFunction,
};
use serde_json::{Map, Value};

/// The most nodes one evaluation of a query may produce or visit (filters count the work
/// of their sub-queries).
pub const MAX_QUERY_NODES: usize = 10_000;
/// The most levels a recursive descent (`..`) may go below the node it starts from.
pub const MAX_QUERY_DEPTH: usize = 64;
/// The most bytes of node paths one evaluation may build (the engine names every node it
/// produces by its path from the root).
pub const MAX_QUERY_PATH_BYTES: usize = 4 * 1024 * 1024;

/// A query that would go over a bound on one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryBound {
    #[error(
        "the path `{path}` would visit more than {MAX_QUERY_NODES} nodes of the record (the limit of one path)"
    )]
    Nodes { path: String },
    #[error(
        "the path `{path}` would descend more than {MAX_QUERY_DEPTH} levels into the record with `..` (the limit of one path)"
    )]
    Depth { path: String },
    #[error(
        "the path `{path}` would build more than {MAX_QUERY_PATH_BYTES} bytes of node paths (the limit of one path)"
    )]
    PathBytes { path: String },
}

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

    /// Reads the value at the path. `None` means absent (distinct from a JSON null), and also
    /// a query over its bounds on this record (see [`RecordPath::try_get`]). A query
    /// matching one node gives that node; several give a list of them.
    pub fn get<'a>(&self, record: &'a Value) -> Option<Cow<'a, Value>> {
        self.try_get(record).ok().flatten()
    }

    /// Reads the value at the path, or says which bound a query would go over on this record.
    pub fn try_get<'a>(&self, record: &'a Value) -> Result<Option<Cow<'a, Value>>, QueryBound> {
        match &self.kind {
            Kind::Direct(steps) => Ok(get_steps(steps, record).map(Cow::Borrowed)),
            Kind::Query(query) => {
                measure(query, record).map_err(|bound| bound.of(&self.text))?;
                let Ok(found) = jsonpath_rust::query::js_path_process(query, record) else {
                    return Ok(None);
                };
                Ok(match found.len() {
                    0 => None,
                    1 => found.into_iter().next().map(|r| Cow::Borrowed(r.val)),
                    _ => Some(Cow::Owned(Value::Array(
                        found.into_iter().map(|r| r.val.clone()).collect(),
                    ))),
                })
            }
        }
    }

    /// Whether the path has a recursive descent (`..`), anywhere (filters included): its
    /// cost grows with the depth and size of the record.
    pub fn has_recursive_descent(&self) -> bool {
        match &self.kind {
            Kind::Direct(_) => false,
            Kind::Query(query) => segments_descend(&query.segments),
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

// ----- measuring a query on a record -----

/// Which bound a measured query went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Nodes,
    Depth,
    PathBytes,
}

impl Over {
    fn of(self, path: &str) -> QueryBound {
        let path = path.to_string();
        match self {
            Over::Nodes => QueryBound::Nodes { path },
            Over::Depth => QueryBound::Depth { path },
            Over::PathBytes => QueryBound::PathBytes { path },
        }
    }
}

/// The work a query has done so far.
struct Work<'a> {
    root: &'a Value,
    nodes: usize,
    path_bytes: usize,
    /// The record's node count (up to the bound), for filters whose sub-queries walk it.
    record_nodes: Option<usize>,
}

impl Work<'_> {
    fn add(&mut self, nodes: usize, path_bytes: usize) -> Result<(), Over> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.path_bytes = self.path_bytes.saturating_add(path_bytes);
        if self.nodes > MAX_QUERY_NODES {
            return Err(Over::Nodes);
        }
        if self.path_bytes > MAX_QUERY_PATH_BYTES {
            return Err(Over::PathBytes);
        }
        Ok(())
    }

    fn record_nodes(&mut self) -> usize {
        if let Some(n) = self.record_nodes {
            return n;
        }
        fn count(value: &Value, left: &mut usize) {
            if *left == 0 {
                return;
            }
            *left -= 1;
            match value {
                Value::Array(items) => items.iter().for_each(|v| count(v, left)),
                Value::Object(map) => map.values().for_each(|v| count(v, left)),
                _ => {}
            }
        }
        // Iterative enough: records are at most as deep as JSON parsing allows.
        let mut left = MAX_QUERY_NODES + 1;
        count(self.root, &mut left);
        let n = MAX_QUERY_NODES + 1 - left;
        self.record_nodes = Some(n);
        n
    }
}

/// A node the query would produce, with the length of the path the engine would give it.
type Reached<'a> = (&'a Value, usize);

/// Measures a query on a record: an upper bound of what it would produce (a filter is taken
/// to keep every item), without building any of it.
fn measure(query: &JpQuery, record: &Value) -> Result<(), Over> {
    let mut work = Work {
        root: record,
        nodes: 0,
        path_bytes: 0,
        record_nodes: None,
    };
    let mut current: Vec<Reached<'_>> = vec![(record, 1)];
    for segment in &query.segments {
        current = measure_segment(segment, &current, &mut work)?;
        if current.is_empty() {
            break;
        }
    }
    Ok(())
}

fn measure_segment<'a>(
    segment: &Segment,
    current: &[Reached<'a>],
    work: &mut Work<'a>,
) -> Result<Vec<Reached<'a>>, Over> {
    match segment {
        Segment::Selector(selector) => {
            measure_selectors(std::slice::from_ref(selector), current, work)
        }
        Segment::Selectors(selectors) => measure_selectors(selectors, current, work),
        Segment::Descendant(inner) => {
            let mut all = Vec::new();
            for &(node, path) in current {
                descend(node, path, 0, &mut all, work)?;
            }
            measure_segment(inner, &all, work)
        }
    }
}

/// A node and everything below it, in document order, as `..` visits them.
fn descend<'a>(
    node: &'a Value,
    path: usize,
    depth: usize,
    out: &mut Vec<Reached<'a>>,
    work: &mut Work<'a>,
) -> Result<(), Over> {
    work.add(1, path)?;
    out.push((node, path));
    let has_children = match node {
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        _ => false,
    };
    if has_children && depth >= MAX_QUERY_DEPTH {
        return Err(Over::Depth);
    }
    for (child, step) in children(node) {
        descend(child, path + step, depth + 1, out, work)?;
    }
    Ok(())
}

/// The children of a node with the length each adds to a node path (`['key']`, `[3]`).
fn children(node: &Value) -> Box<dyn Iterator<Item = (&Value, usize)> + '_> {
    match node {
        Value::Array(items) => Box::new(items.iter().enumerate().map(|(i, v)| (v, index_bytes(i)))),
        Value::Object(map) => Box::new(map.iter().map(|(k, v)| (v, key_bytes(k)))),
        _ => Box::new(std::iter::empty()),
    }
}

fn index_bytes(index: usize) -> usize {
    index.checked_ilog10().map_or(1, |d| d as usize + 1) + 2
}

/// `['key']`, with escapes.
fn key_bytes(key: &str) -> usize {
    key.len()
        + 4
        + key
            .chars()
            .map(|c| match c {
                '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' | '\'' | '\\' => 1,
                c if c < ' ' => 5,
                _ => 0,
            })
            .sum::<usize>()
}

fn measure_selectors<'a>(
    selectors: &[Selector],
    current: &[Reached<'a>],
    work: &mut Work<'a>,
) -> Result<Vec<Reached<'a>>, Over> {
    let mut out = Vec::new();
    for selector in selectors {
        for &(node, path) in current {
            match selector {
                Selector::Name(name) => {
                    if let Some(child) = node.as_object().and_then(|m| m.get(name)) {
                        let bytes = path + key_bytes(name);
                        work.add(1, bytes)?;
                        out.push((child, bytes));
                    }
                }
                Selector::Index(index) => {
                    if let Some(items) = node.as_array() {
                        let at = if *index < 0 {
                            usize::try_from(index.unsigned_abs())
                                .ok()
                                .and_then(|back| items.len().checked_sub(back))
                        } else {
                            usize::try_from(*index).ok()
                        };
                        if let Some(child) = at.and_then(|i| items.get(i)) {
                            let bytes = path + index_bytes(at.unwrap_or(0));
                            work.add(1, bytes)?;
                            out.push((child, bytes));
                        }
                    }
                }
                Selector::Wildcard | Selector::Slice(..) => {
                    for (child, step) in children(node) {
                        work.add(1, path + step)?;
                        out.push((child, path + step));
                    }
                }
                Selector::Filter(filter) => {
                    let weight = filter_weight(filter, work);
                    for (child, step) in children(node) {
                        work.add(weight, path + step)?;
                        out.push((child, path + step));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The work of testing one item against a filter: one per singular query or literal; a
/// sub-query that can reach many nodes counts the whole record for each such segment.
fn filter_weight(filter: &Filter, work: &mut Work<'_>) -> usize {
    match filter {
        Filter::Or(items) | Filter::And(items) => items.iter().fold(1, |sum: usize, f| {
            sum.saturating_add(filter_weight(f, work))
        }),
        Filter::Atom(FilterAtom::Filter { expr, .. }) => filter_weight(expr, work),
        Filter::Atom(FilterAtom::Test { expr, .. }) => test_weight(expr, work),
        Filter::Atom(FilterAtom::Comparison(comparison)) => {
            let (left, right) = match comparison.as_ref() {
                Comparison::Eq(l, r)
                | Comparison::Ne(l, r)
                | Comparison::Gt(l, r)
                | Comparison::Gte(l, r)
                | Comparison::Lt(l, r)
                | Comparison::Lte(l, r) => (l, r),
            };
            comparable_weight(left, work).saturating_add(comparable_weight(right, work))
        }
    }
}

fn comparable_weight(comparable: &Comparable, work: &mut Work<'_>) -> usize {
    match comparable {
        Comparable::Literal(_) | Comparable::SingularQuery(_) => 1,
        Comparable::Function(function) => function_weight(function, work),
    }
}

fn test_weight(test: &Test, work: &mut Work<'_>) -> usize {
    match test {
        Test::RelQuery(segments) => query_weight(segments, work),
        Test::AbsQuery(query) => query_weight(&query.segments, work),
        Test::Function(function) => function_weight(function, work),
    }
}

fn function_weight(function: &TestFunction, work: &mut Work<'_>) -> usize {
    let args: Vec<&FnArg> = match function {
        TestFunction::Custom(_, args) => args.iter().collect(),
        TestFunction::Length(arg) => vec![arg.as_ref()],
        TestFunction::Value(arg) | TestFunction::Count(arg) => vec![arg],
        TestFunction::Search(a, b) | TestFunction::Match(a, b) => vec![a, b],
    };
    args.into_iter().fold(1, |sum: usize, arg| {
        sum.saturating_add(match arg {
            FnArg::Literal(_) => 1,
            FnArg::Test(test) => test_weight(test, work),
            FnArg::Filter(filter) => filter_weight(filter, work),
        })
    })
}

/// A sub-query's work: the record's size for every segment that can reach many nodes.
fn query_weight(segments: &[Segment], work: &mut Work<'_>) -> usize {
    let mut weight: usize = 1;
    for segment in segments {
        let many = match segment {
            Segment::Selector(Selector::Name(_) | Selector::Index(_)) => 1,
            Segment::Selector(Selector::Filter(filter)) => work
                .record_nodes()
                .saturating_mul(filter_weight(filter, work)),
            _ => work.record_nodes(),
        };
        weight = weight.saturating_mul(many.max(1));
    }
    weight
}

fn segments_descend(segments: &[Segment]) -> bool {
    segments.iter().any(|segment| match segment {
        Segment::Descendant(_) => true,
        Segment::Selector(selector) => selector_descends(selector),
        Segment::Selectors(selectors) => selectors.iter().any(selector_descends),
    })
}

fn selector_descends(selector: &Selector) -> bool {
    let Selector::Filter(filter) = selector else {
        return false;
    };
    filter_descends(filter)
}

fn filter_descends(filter: &Filter) -> bool {
    fn test(test: &Test) -> bool {
        match test {
            Test::RelQuery(segments) => segments_descend(segments),
            Test::AbsQuery(query) => segments_descend(&query.segments),
            Test::Function(function) => function_descends(function),
        }
    }
    fn function_descends(function: &TestFunction) -> bool {
        let args: Vec<&FnArg> = match function {
            TestFunction::Custom(_, args) => args.iter().collect(),
            TestFunction::Length(arg) => vec![arg.as_ref()],
            TestFunction::Value(arg) | TestFunction::Count(arg) => vec![arg],
            TestFunction::Search(a, b) | TestFunction::Match(a, b) => vec![a, b],
        };
        args.into_iter().any(|arg| match arg {
            FnArg::Literal(_) => false,
            FnArg::Test(t) => test(t),
            FnArg::Filter(f) => filter_descends(f),
        })
    }
    match filter {
        Filter::Or(items) | Filter::And(items) => items.iter().any(filter_descends),
        Filter::Atom(FilterAtom::Filter { expr, .. }) => filter_descends(expr),
        Filter::Atom(FilterAtom::Test { expr, .. }) => test(expr),
        Filter::Atom(FilterAtom::Comparison(comparison)) => {
            let (left, right) = match comparison.as_ref() {
                Comparison::Eq(l, r)
                | Comparison::Ne(l, r)
                | Comparison::Gt(l, r)
                | Comparison::Gte(l, r)
                | Comparison::Lt(l, r)
                | Comparison::Lte(l, r) => (l, r),
            };
            [left, right].into_iter().any(|c| match c {
                Comparable::Function(function) => function_descends(function),
                Comparable::Literal(_) | Comparable::SingularQuery(_) => false,
            })
        }
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

    /// A record of about 2.4 KB nested `depth` levels deep, with a few fields per level.
    fn deep_record(depth: usize) -> Value {
        let mut record = json!({"id": 0, "name": "leaf"});
        for level in 1..depth {
            record = json!({"id": level, "tag": "t", "child": record});
        }
        record
    }

    #[test]
    fn recursive_descent_on_a_deep_record_stops_at_a_bound() {
        let record = deep_record(100);
        let path = RecordPath::parse("$..*..*..*").unwrap();
        assert!(path.has_recursive_descent());
        let error = path.try_get(&record).unwrap_err();
        assert_eq!(
            error,
            QueryBound::Depth {
                path: "$..*..*..*".into()
            }
        );
        assert!(error.to_string().contains("more than 64 levels"), "{error}");
        // Within the depth, the number of nodes is the bound.
        let error = path.try_get(&deep_record(40)).unwrap_err();
        assert!(matches!(error, QueryBound::Nodes { .. }), "{error:?}");
        assert!(error.to_string().contains("10000 nodes"), "{error}");
        // `get` treats a query over its bounds as absent.
        assert_eq!(path.get(&record), None);
    }

    #[test]
    fn queries_within_the_bounds_give_what_they_gave() {
        let record = deep_record(5);
        let get = |p: &str| {
            RecordPath::parse(p)
                .unwrap()
                .try_get(&record)
                .unwrap()
                .map(Cow::into_owned)
        };
        assert_eq!(get("$..name"), Some(json!("leaf")));
        assert_eq!(get("$..child.child.child.child.name"), Some(json!("leaf")));
        assert_eq!(get("$.child..tag"), Some(json!(["t", "t", "t"])));
        assert_eq!(get("$.child.child.child.child.*"), Some(json!([0, "leaf"])));
        let list = json!({"items": [{"k": 1}, {"k": 2}, {"k": 3}]});
        let path = RecordPath::parse("$.items[?(@.k > 1)].k").unwrap();
        assert_eq!(
            path.try_get(&list).unwrap().map(Cow::into_owned),
            Some(json!([2, 3]))
        );
        assert!(!path.has_recursive_descent());
        assert!(
            RecordPath::parse("$.items[?(@..k)]")
                .unwrap()
                .has_recursive_descent()
        );
    }

    #[test]
    fn repeated_selectors_and_long_keys_are_bounded() {
        // Every `[*,*,*,*]` multiplies the nodes by four.
        let wide = json!({"a": (0..20).collect::<Vec<_>>()});
        let path = RecordPath::parse("$.a[*,*,*,*][*,*,*,*]").unwrap();
        assert!(path.try_get(&wide).is_ok());
        let path = RecordPath::parse(
            "$[*,*,*,*,*,*,*,*,*,*][*,*,*,*,*,*,*,*,*,*][*,*,*,*,*,*,*,*,*,*][*,*,*,*,*,*,*,*,*,*]",
        )
        .unwrap();
        let nested = json!([[[[1, 2, 3]]]]);
        assert!(matches!(
            path.try_get(&nested),
            Err(QueryBound::Nodes { .. })
        ));
        // Every node's path repeats a long key.
        let key = "k".repeat(100_000);
        let long = json!({ key: (0..5_000).collect::<Vec<_>>() });
        assert!(matches!(
            RecordPath::parse("$.*.*").unwrap().try_get(&long),
            Err(QueryBound::PathBytes { .. })
        ));
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
