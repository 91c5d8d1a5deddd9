//! A small JSON Schema validator for the subset the API contracts use: local `$ref`s,
//! `type` (one or several, `null` included), `properties`, `required`,
//! `additionalProperties: false`, `enum`, `minLength`, `minimum`, `maximum`, `pattern`,
//! `items` and the formats `email`, `uri`, `date`, `date-time`, `uuid`, `int32`.
//!
//! The simulators validate request bodies with it against the contracts' own write
//! schemas, and the tests validate response bodies against the read schemas.

use std::collections::HashMap;

use regex::Regex;
use serde_json::Value;

/// One way a value breaks its schema. `path` names the field (`address.country`,
/// `lines[0].quantity`); it is empty for the root value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub code: &'static str,
    pub message: String,
}

/// How strictly to read a schema.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// OpenAPI 3.0 documents without `nullable`: a `null` value counts as absent.
    pub null_as_absent: bool,
    /// Accept `+hhmm` offsets (`2024-11-07T20:35:13.000+0000`) as `date-time`.
    pub lenient_datetime: bool,
}

/// A schema document (an OpenAPI file or a fragment of one) with its patterns compiled.
#[derive(Debug)]
pub struct SchemaDoc {
    root: Value,
    patterns: HashMap<String, Regex>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaDocError {
    #[error("contract document is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("contract pattern `{pattern}` does not compile: {source}")]
    Pattern {
        pattern: String,
        source: regex::Error,
    },
}

impl SchemaDoc {
    pub fn parse(text: &str) -> Result<Self, SchemaDocError> {
        Self::new(serde_json::from_str(text)?)
    }

    pub fn new(root: Value) -> Result<Self, SchemaDocError> {
        let mut patterns = HashMap::new();
        collect_patterns(&root, &mut patterns)?;
        Ok(Self { root, patterns })
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// `#/components/schemas/{name}`.
    pub fn component(&self, name: &str) -> Option<&Value> {
        self.root.get("components")?.get("schemas")?.get(name)
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let mut current = schema;
        for _ in 0..32 {
            match current.get("$ref").and_then(Value::as_str) {
                Some(reference) => match reference.strip_prefix('#') {
                    Some(pointer) => match self.root.pointer(pointer) {
                        Some(target) => current = target,
                        None => return current,
                    },
                    None => return current,
                },
                None => return current,
            }
        }
        current
    }

    /// Every violation of `schema` by `value`.
    pub fn validate(&self, schema: &Value, value: &Value, mode: Mode) -> Vec<Violation> {
        let mut violations = Vec::new();
        self.check(schema, value, mode, &Path::Root, &mut violations);
        violations
    }

    /// The property names of an object schema, in document order.
    pub fn property_names<'a>(&'a self, schema: &'a Value) -> Vec<&'a str> {
        self.resolve(schema)
            .get("properties")
            .and_then(Value::as_object)
            .map(|properties| properties.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The (resolved) schema of one property of an object schema.
    pub fn property<'a>(&'a self, schema: &'a Value, name: &str) -> Option<&'a Value> {
        self.resolve(schema)
            .get("properties")?
            .get(name)
            .map(|property| self.resolve(property))
    }

    fn check(
        &self,
        schema: &Value,
        value: &Value,
        mode: Mode,
        path: &Path,
        out: &mut Vec<Violation>,
    ) {
        let schema = self.resolve(schema);
        if value.is_null() && mode.null_as_absent {
            return;
        }
        if let Some(expected) = schema.get("type") {
            let fits = match expected {
                Value::String(one) => has_type(value, one),
                Value::Array(many) => {
                    many.iter().all(|kind| !kind.is_string())
                        || many
                            .iter()
                            .filter_map(Value::as_str)
                            .any(|kind| has_type(value, kind))
                }
                _ => true,
            };
            if !fits {
                let types: Vec<&str> = match expected {
                    Value::String(one) => vec![one.as_str()],
                    Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                let path = path.text();
                out.push(Violation {
                    code: "invalid_type",
                    message: format!("{} must be {}", field_name(&path), types.join(" or ")),
                    path,
                });
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
            let path = path.text();
            out.push(Violation {
                code: "invalid_value",
                message: format!("{} must be one of {}", field_name(&path), names.join(", ")),
                path,
            });
            return;
        }
        match value {
            Value::String(text) => self.check_string(schema, text, mode, path, out),
            Value::Number(number) => check_number(schema, number, path, out),
            Value::Object(object) => {
                if let Some(required) = schema.get("required").and_then(Value::as_array) {
                    for name in required.iter().filter_map(Value::as_str) {
                        let present = object
                            .get(name)
                            .is_some_and(|value| !(mode.null_as_absent && value.is_null()));
                        if !present {
                            let child = Path::Field(path, name).text();
                            out.push(Violation {
                                message: format!("{child} is required"),
                                path: child,
                                code: "required",
                            });
                        }
                    }
                }
                let properties = schema.get("properties").and_then(Value::as_object);
                let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
                for (name, child_value) in object {
                    let child = Path::Field(path, name);
                    match properties.and_then(|properties| properties.get(name)) {
                        Some(child_schema) => {
                            self.check(child_schema, child_value, mode, &child, out)
                        }
                        None if closed => {
                            let child = child.text();
                            out.push(Violation {
                                message: format!("unknown field {child}"),
                                path: child,
                                code: "unknown_field",
                            });
                        }
                        None => {}
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (index, item) in items.iter().enumerate() {
                        self.check(item_schema, item, mode, &Path::Index(path, index), out);
                    }
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn check_string(
        &self,
        schema: &Value,
        text: &str,
        mode: Mode,
        path: &Path,
        out: &mut Vec<Violation>,
    ) {
        if let Some(minimum) = schema.get("minLength").and_then(Value::as_u64)
            && (text.chars().count() as u64) < minimum
        {
            let path = path.text();
            out.push(Violation {
                path: path.clone(),
                code: "too_short",
                message: format!(
                    "{} must have at least {minimum} characters",
                    field_name(&path)
                ),
            });
            return;
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && let Some(regex) = self.patterns.get(pattern)
            && !regex.is_match(text)
        {
            let path = path.text();
            out.push(Violation {
                path: path.clone(),
                code: "invalid_format",
                message: format!("{} must match {pattern}", field_name(&path)),
            });
            return;
        }
        if let Some(format) = schema.get("format").and_then(Value::as_str)
            && !format_ok(format, text, mode)
        {
            let path = path.text();
            out.push(Violation {
                path: path.clone(),
                code: "invalid_format",
                message: format!("{} must be a valid {format}", field_name(&path)),
            });
        }
    }
}

fn collect_patterns(
    value: &Value,
    patterns: &mut HashMap<String, Regex>,
) -> Result<(), SchemaDocError> {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(pattern)) = object.get("pattern")
                && !patterns.contains_key(pattern)
            {
                let regex = Regex::new(pattern).map_err(|source| SchemaDocError::Pattern {
                    pattern: pattern.clone(),
                    source,
                })?;
                patterns.insert(pattern.clone(), regex);
            }
            for child in object.values() {
                collect_patterns(child, patterns)?;
            }
        }
        Value::Array(items) => {
            for child in items {
                collect_patterns(child, patterns)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn has_type(value: &Value, kind: &str) -> bool {
    match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(number) => {
                number.is_i64()
                    || number.is_u64()
                    || number.as_f64().is_some_and(|float| float.fract() == 0.0)
            }
            _ => false,
        },
        _ => true,
    }
}

fn check_number(
    schema: &Value,
    number: &serde_json::Number,
    path: &Path,
    out: &mut Vec<Violation>,
) {
    let Some(value) = number.as_f64() else {
        return;
    };
    let below = schema
        .get("minimum")
        .and_then(Value::as_f64)
        .filter(|minimum| value < *minimum);
    let above = schema
        .get("maximum")
        .and_then(Value::as_f64)
        .filter(|maximum| value > *maximum);
    let int32 = schema.get("format").and_then(Value::as_str) == Some("int32")
        && !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&value);
    if let Some(minimum) = below {
        let path = path.text();
        out.push(Violation {
            path: path.clone(),
            code: "out_of_range",
            message: format!("{} must be at least {minimum}", field_name(&path)),
        });
    } else if let Some(maximum) = above {
        let path = path.text();
        out.push(Violation {
            path: path.clone(),
            code: "out_of_range",
            message: format!("{} must be at most {maximum}", field_name(&path)),
        });
    } else if int32 {
        let path = path.text();
        out.push(Violation {
            path: path.clone(),
            code: "out_of_range",
            message: format!("{} must fit in 32 bits", field_name(&path)),
        });
    }
}

/// Checks the string formats the contracts use; unknown formats pass.
pub fn format_ok(format: &str, text: &str, mode: Mode) -> bool {
    match format {
        "email" => is_email(text),
        "uri" => is_uri(text),
        "date" => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
        "date-time" => {
            crate::store::parse_rfc3339(text).is_some()
                || (mode.lenient_datetime && crate::store::parse_lenient_datetime(text).is_some())
        }
        "uuid" => is_uuid(text),
        _ => true,
    }
}

pub fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.chars().any(char::is_whitespace)
}

fn is_uri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !text.chars().any(char::is_whitespace)
}

pub fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(index, c)| match index {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Where a value sits in the body, written out only for a violation.
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    /// `address.country`, `lines[0].quantity`; empty for the root.
    fn text(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Field(parent, name) => {
                let parent = parent.text();
                if parent.is_empty() {
                    name.to_string()
                } else {
                    format!("{parent}.{name}")
                }
            }
            Path::Index(parent, index) => format!("{}[{index}]", parent.text()),
        }
    }
}

fn field_name(path: &str) -> &str {
    if path.is_empty() { "the body" } else { path }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> SchemaDoc {
        SchemaDoc::new(json!({"components": {"schemas": {
            "Money": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,2})?$"},
            "Thing": {"type": "object", "additionalProperties": false, "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "email": {"type": ["string", "null"], "format": "email"},
                    "price": {"$ref": "#/components/schemas/Money"},
                    "status": {"type": "string", "enum": ["open", "closed"]},
                    "lines": {"type": "array", "items": {"type": "object",
                        "properties": {"qty": {"type": "integer", "minimum": 1}}}}
                }}
        }}}))
        .expect("test schema compiles")
    }

    fn codes(value: Value) -> Vec<(String, &'static str)> {
        let doc = doc();
        let schema = json!({"$ref": "#/components/schemas/Thing"});
        doc.validate(&schema, &value, Mode::default())
            .into_iter()
            .map(|violation| (violation.path, violation.code))
            .collect()
    }

    #[test]
    fn a_valid_value_has_no_violations() {
        let value = json!({"name": "A", "email": null, "price": "12.50", "status": "open", "lines": [{"qty": 2}]});
        assert_eq!(codes(value), vec![]);
    }

    #[test]
    fn each_rule_reports_its_field() {
        assert_eq!(codes(json!({})), vec![("name".to_string(), "required")]);
        assert_eq!(
            codes(json!({"name": ""})),
            vec![("name".to_string(), "too_short")]
        );
        assert_eq!(
            codes(json!({"name": "A", "email": "nope"})),
            vec![("email".to_string(), "invalid_format")]
        );
        assert_eq!(
            codes(json!({"name": "A", "price": "1.234"})),
            vec![("price".to_string(), "invalid_format")]
        );
        assert_eq!(
            codes(json!({"name": "A", "status": "lost"})),
            vec![("status".to_string(), "invalid_value")]
        );
        assert_eq!(
            codes(json!({"name": "A", "lines": [{"qty": 0}]})),
            vec![("lines[0].qty".to_string(), "out_of_range")]
        );
        assert_eq!(
            codes(json!({"name": 5})),
            vec![("name".to_string(), "invalid_type")]
        );
        assert_eq!(
            codes(json!({"name": "A", "x": 1})),
            vec![("x".to_string(), "unknown_field")]
        );
    }

    #[test]
    fn formats_follow_their_rfcs_loosely() {
        let strict = Mode::default();
        assert!(format_ok("date-time", "2024-05-01T10:00:00Z", strict));
        assert!(!format_ok(
            "date-time",
            "2024-05-01T10:00:00.000+0000",
            strict
        ));
        let lenient = Mode {
            lenient_datetime: true,
            ..Mode::default()
        };
        assert!(format_ok(
            "date-time",
            "2024-05-01T10:00:00.000+0000",
            lenient
        ));
        assert!(format_ok("date", "2024-02-29", strict));
        assert!(!format_ok("date", "2023-02-29", strict));
        assert!(format_ok("uri", "https://example.com", strict));
        assert!(!format_ok("uri", "example.com", strict));
        assert!(is_uuid("123e4567-e89b-42d3-a456-426614174000"));
    }
}
