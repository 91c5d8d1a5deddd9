//! The canonical form of a record's mapped fields, and its hash.
//!
//! The canonical form holds, for every rule of a plan, the value found at the rule's target
//! path in a target-shaped record (a target record, or the result of
//! [`apply_forward`](crate::mapping::apply_forward)), normalised by the rule's type: decimals
//! without trailing zeros, instants in UTC, e-mail addresses in lower case, countries as
//! alpha-2, phones in E.164, ids as text. Keys are the rule target paths in sorted order;
//! a field the record lacks is absent, which is distinct from null. The engine compares
//! canonical forms for its three-way merge and stores their hashes to recognise its own
//! writes when they come back.
//!
//! The hash is XXH3-64 (seed 0) of the canonical text: compact JSON with object keys sorted
//! by their UTF-8 bytes, strings escaped only where JSON requires (`"`, `\`, and control
//! characters as `\u00XX`), integers in decimal. XXH3 is a fixed, published algorithm, so the
//! hash is the same on every machine, in every run and in every version of Tether that keeps
//! [`CANONICAL_VERSION`]; a change to the normal forms or the text increases that version,
//! and stored hashes of an older version are recomputed rather than compared.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::mapping::compile::{CompiledMapping, RuleSet};
use crate::mapping::types;
use crate::spec::flow::DataType;

/// The version of the normal forms and canonical text; stored next to hashes.
pub const CANONICAL_VERSION: u32 = 2;

/// The canonical form of a record's mapped fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Canonical {
    fields: BTreeMap<String, Value>,
}

impl Canonical {
    /// The canonical form of a target-shaped record under `plan`.
    pub fn of(plan: &CompiledMapping, record: &Value) -> Canonical {
        Canonical {
            fields: fields_of(&plan.rules, record, false),
        }
    }

    /// A canonical form from fields already normalised (a stored base).
    pub fn from_fields(fields: BTreeMap<String, Value>) -> Canonical {
        Canonical { fields }
    }

    /// The normalised fields, by rule target path.
    pub fn fields(&self) -> &BTreeMap<String, Value> {
        &self.fields
    }

    /// The normalised fields, by rule target path, taken out.
    pub fn into_fields(self) -> BTreeMap<String, Value> {
        self.fields
    }

    /// The canonical text (compact JSON, keys sorted).
    pub fn text(&self) -> String {
        fields_text(&self.fields)
    }

    /// The stable 64-bit hash of the canonical text.
    pub fn hash(&self) -> u64 {
        hash_fields(&self.fields)
    }

    /// The canonical form as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

/// The stable 64-bit hash of fields already normalised: [`Canonical::hash`] without taking
/// them into a [`Canonical`].
pub fn hash_fields(fields: &BTreeMap<String, Value>) -> u64 {
    xxhash_rust::xxh3::xxh3_64(fields_text(fields).as_bytes())
}

fn fields_text(fields: &BTreeMap<String, Value>) -> String {
    let mut out = String::with_capacity(64 * fields.len());
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(&mut out, key);
        out.push(':');
        write_value(&mut out, value);
    }
    out.push('}');
    out
}

/// The canonical fields of a record, or of one list item (`item`): inside an item a null
/// field is no field, since a system that drops empty fields of a line (and one that keeps
/// them as null) hold the same line.
fn fields_of(set: &RuleSet, record: &Value, item: bool) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::new();
    for rule in &set.rules {
        let Some(value) = rule.target.get(record) else {
            continue;
        };
        if item && value.is_null() {
            continue;
        }
        let normal = match (&rule.items, rule.data_type, value.as_ref()) {
            (Some(items), DataType::Array, Value::Array(list)) => Value::Array(
                list.iter()
                    .map(|item| Value::Object(fields_of(items, item, true).into_iter().collect()))
                    .collect(),
            ),
            _ => types::normalise(rule.data_type, &value),
        };
        fields.insert(rule.target.as_str().to_string(), normal);
    }
    fields
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_text_is_sorted_and_escaped() {
        let mut canonical = Canonical::default();
        canonical
            .fields
            .insert("b".into(), json!({"z": 1, "a": "x\"\n"}));
        canonical
            .fields
            .insert("a".into(), json!([true, null, "é"]));
        assert_eq!(
            canonical.text(),
            r#"{"a":[true,null,"é"],"b":{"a":"x\"\u000a","z":1}}"#
        );
    }

    #[test]
    fn the_hash_is_fixed() {
        // These values are part of the stored state of every deployment: if this test
        // fails, the hash changed and CANONICAL_VERSION must change with it.
        let mut canonical = Canonical::default();
        assert_eq!(canonical.hash(), xxhash_rust::xxh3::xxh3_64(b"{}"));
        canonical
            .fields
            .insert("email".into(), json!("ann@example.com"));
        canonical.fields.insert("price".into(), json!("12.5"));
        assert_eq!(
            canonical.text(),
            r#"{"email":"ann@example.com","price":"12.5"}"#
        );
        // The value is that of the reference XXH3 implementation for this text.
        assert_eq!(canonical.hash(), 0xb307_00a7_3f49_1451);
    }
}
