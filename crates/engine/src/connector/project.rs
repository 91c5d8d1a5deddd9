//! Parsing a listing page for a few fields of each item: [`Projection`] reads a JSON page
//! as a whole, except that the items at its member chain keep only some member paths (the
//! id and the modified time), the rest of each item skipped as it is parsed. A listing read
//! only for its ids (the full listing that finds deletions: a thousand Keap contacts a page,
//! each with addresses, phones and custom fields) then allocates a few strings per item
//! instead of the whole record.
//!
//! Only plain member chains can be projected (`$.contacts`, `$.id`); the page's other
//! members (next links, counts, tokens) are parsed as they are.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Which items of a page to cut down, and what of each to keep.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The member chain to the items (empty: the page is the items).
    items: Vec<String>,
    /// The member paths kept in each item.
    keep: Vec<Vec<String>>,
}

impl Projection {
    /// A projection of the items at `items` to the member paths `keep`.
    pub fn new(items: Vec<String>, keep: Vec<Vec<String>>) -> Projection {
        Projection { items, keep }
    }

    /// Parses `bytes` as JSON, projected.
    pub fn parse(&self, bytes: &[u8]) -> Result<Value, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let value = Walk {
            chain: &self.items,
            keep: &self.keep,
        }
        .deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }
}

/// Where a value sits: on the chain to the items (`chain` left to walk), at the items
/// (`chain` empty), or inside one item (`keep` the paths below it).
#[derive(Clone, Copy)]
struct Walk<'p> {
    chain: &'p [String],
    keep: &'p [Vec<String>],
}

/// One item, or a value inside one: only the members on `paths` (relative to it) are kept.
#[derive(Clone, Copy)]
struct Item<'p> {
    paths: &'p [&'p [String]],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> DeserializeSeed<'de> for Item<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// The scalar visits shared by both walks: a scalar is kept as it is.
macro_rules! scalars {
    () => {
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
    };
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    scalars!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        if self.chain.is_empty() {
            let paths: Vec<&[String]> = self.keep.iter().map(Vec::as_slice).collect();
            while let Some(item) = seq.next_element_seed(Item { paths: &paths })? {
                out.push(item);
            }
        } else {
            // Off the chain: an array on the way is kept whole.
            while let Some(value) = seq.next_element::<Value>()? {
                out.push(value);
            }
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some((member, rest)) = self.chain.split_first() else {
            // At the items with a page that is one object: it is the one item.
            let paths: Vec<&[String]> = self.keep.iter().map(Vec::as_slice).collect();
            return keep_members(map, &paths);
        };
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = if *member == key {
                map.next_value_seed(Walk {
                    chain: rest,
                    keep: self.keep,
                })?
            } else {
                map.next_value::<Value>()?
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// The members of an object on `paths` (relative to it), the others skipped; a path that
/// ends here keeps the whole object.
fn keep_members<'de, A: MapAccess<'de>>(
    mut map: A,
    paths: &[&[String]],
) -> Result<Value, A::Error> {
    let mut out = Map::new();
    if paths.iter().any(|p| p.is_empty()) {
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            out.insert(key, value);
        }
        return Ok(Value::Object(out));
    }
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        let below: Vec<&[String]> = paths
            .iter()
            .filter(|p| p.first().is_some_and(|m| *m == key))
            .map(|p| &p[1..])
            .collect();
        if below.is_empty() {
            map.next_value::<IgnoredAny>()?;
            continue;
        }
        let value = map.next_value_seed(Item { paths: &below })?;
        out.insert(key.into_owned(), value);
    }
    Ok(Value::Object(out))
}

impl<'de> Visitor<'de> for Item<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    scalars!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // A kept path ends here or goes on through an array: kept whole either way.
        let mut out = Vec::new();
        while let Some(value) = seq.next_element::<Value>()? {
            out.push(value);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        keep_members(map, self.paths)
    }
}

/// A member name, borrowed from the page where it has no escapes: the names of the members
/// skipped cost no allocation.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chain(text: &str) -> Vec<String> {
        text.split('.')
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn each_item_keeps_its_id_and_modified_time_and_the_page_the_rest() {
        let page = json!({
            "contacts": [
                {"id": 7, "given_name": "Ada", "last_updated": "2026-01-02T03:04:05Z",
                 "addresses": [{"line1": "1 Main St"}], "meta": {"owner": {"id": 3}, "x": 1}},
                {"id": "8", "email_addresses": [], "meta": {"x": 2}},
                "not an object"
            ],
            "count": 3,
            "next": "https://api.example/contacts?offset=1000"
        });
        let projection = Projection::new(
            chain("contacts"),
            vec![chain("id"), chain("last_updated"), chain("meta.owner")],
        );
        let projected = projection
            .parse(page.to_string().as_bytes())
            .expect("parsed");
        assert_eq!(
            projected,
            json!({
                "contacts": [
                    {"id": 7, "last_updated": "2026-01-02T03:04:05Z", "meta": {"owner": {"id": 3}}},
                    {"id": "8", "meta": {}},
                    "not an object"
                ],
                "count": 3,
                "next": "https://api.example/contacts?offset=1000"
            })
        );
    }

    #[test]
    fn items_deeper_in_the_page_or_the_page_itself_are_projected() {
        let page = json!({"data": {"items": [{"id": 1, "name": "x"}], "total": 1}, "ok": true});
        let projected = Projection::new(chain("data.items"), vec![chain("id")])
            .parse(page.to_string().as_bytes())
            .expect("parsed");
        assert_eq!(
            projected,
            json!({"data": {"items": [{"id": 1}], "total": 1}, "ok": true})
        );
        let bare = json!([{"id": 1, "name": "x"}, {"id": 2.5, "tags": ["a"]}]);
        let projected = Projection::new(Vec::new(), vec![chain("id")])
            .parse(bare.to_string().as_bytes())
            .expect("parsed");
        assert_eq!(projected, json!([{"id": 1}, {"id": 2.5}]));
    }

    #[test]
    fn member_names_written_with_escapes_are_read_as_the_names_they_spell() {
        let page = br#"{"items": [{"\u0069d": 5, "n\u00e4me": "x", "last": 1}]}"#;
        let projected = Projection::new(chain("items"), vec![chain("id")])
            .parse(page)
            .expect("parsed");
        assert_eq!(projected, json!({"items": [{"id": 5}]}));
    }

    #[test]
    fn a_page_that_is_not_json_is_an_error() {
        let projection = Projection::new(chain("contacts"), vec![chain("id")]);
        assert!(projection.parse(b"{\"contacts\": [").is_err());
        assert!(projection.parse(b"{} trailing").is_err());
        assert!(projection.parse(b"<html>").is_err());
    }
}
