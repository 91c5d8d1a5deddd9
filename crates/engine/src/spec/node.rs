//! A YAML document as a tree of located nodes, and a serde deserializer over it.
//!
//! Loading goes in two steps. serde-saphyr parses the text (with its budgets against alias
//! bombs and deep nesting) into a [`Node`] tree where every scalar, sequence and mapping knows
//! its line and column. The typed model is then deserialized from that tree by [`from_node`],
//! which gives every error the position of the node it is about, turns serde's
//! `unknown field` into a "did you mean" help, and lets [`Checked`] and [`Loc`] fields work:
//! [`Checked<T>`] catches an error inside one list item (a mapping, a rule) so the rest of the
//! file is still read and checked, and [`Loc<T>`] keeps the position of a value for the
//! semantic checks that run after deserialization.

use std::cell::{Cell, RefCell};
use std::fmt;

use schemars::JsonSchema;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde::{Deserialize, Serialize};

use crate::spec::diagnostic::Code;

/// A 1-based line and column in a source file, plus the length of the spanned text in
/// characters (at least 1) for the caret under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
    #[serde(skip)]
    pub len: u32,
}

impl Pos {
    pub const fn new(line: u32, column: u32) -> Self {
        Pos {
            line,
            column,
            len: 1,
        }
    }

    fn from_location(location: &serde_saphyr::Location) -> Self {
        let len = location.span().len().clamp(1, u32::MAX as u64) as u32;
        Pos {
            line: location.line().min(u32::MAX as u64) as u32,
            column: location.column().min(u32::MAX as u64) as u32,
            len,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: NodeValue,
    pub pos: Pos,
}

/// The value of a YAML node. Mappings keep their key order and their keys' positions.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl NodeValue {
    /// A short name of the node's kind, for messages ("a string", "a mapping").
    pub fn kind(&self) -> &'static str {
        match self {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) => "an integer",
            NodeValue::Float(_) => "a number",
            NodeValue::Str(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// Looks up a key of a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, NodeValue::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Converts the node to JSON (used for free-form values such as defaults and value maps).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            NodeValue::Null => serde_json::Value::Null,
            NodeValue::Bool(b) => serde_json::Value::Bool(*b),
            NodeValue::Int(i) => serde_json::Value::from(*i),
            NodeValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            NodeValue::Str(s) => serde_json::Value::String(s.clone()),
            NodeValue::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            NodeValue::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (scalar_key(k), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Calls `f` for every string scalar of the tree (keys included), with its position.
    pub fn visit_strings(&self, f: &mut impl FnMut(&str, Pos)) {
        match &self.value {
            NodeValue::Str(s) => f(s, self.pos),
            NodeValue::Seq(items) => items.iter().for_each(|n| n.visit_strings(f)),
            NodeValue::Map(entries) => {
                for (k, v) in entries {
                    k.visit_strings(f);
                    v.visit_strings(f);
                }
            }
            _ => {}
        }
    }
}

fn scalar_key(node: &Node) -> String {
    match &node.value {
        NodeValue::Str(s) => s.clone(),
        NodeValue::Int(i) => i.to_string(),
        NodeValue::Bool(b) => b.to_string(),
        NodeValue::Float(f) => f.to_string(),
        NodeValue::Null => "null".to_string(),
        other => other.kind().to_string(),
    }
}

/// The deepest nesting a spec file may have. Real flow files stay under 10 levels.
pub const MAX_DEPTH: usize = 32;

thread_local! {
    static PARSE_DEPTH: Cell<usize> = const { Cell::new(0) };
}

struct DepthGuard;

impl DepthGuard {
    fn enter<E: de::Error>() -> Result<Self, E> {
        let depth = PARSE_DEPTH.with(|d| {
            let next = d.get() + 1;
            d.set(next);
            next
        });
        if depth > MAX_DEPTH {
            PARSE_DEPTH.with(|d| d.set(d.get() - 1));
            return Err(E::custom(format!(
                "the document is nested more than {MAX_DEPTH} levels deep"
            )));
        }
        Ok(DepthGuard)
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        PARSE_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<NodeValue>::deserialize(deserializer)?;
        Ok(Node {
            value: spanned.value,
            pos: Pos::from_location(&spanned.referenced),
        })
    }
}

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let _guard = DepthGuard::enter::<D::Error>()?;
        deserializer.deserialize_any(NodeValueVisitor)
    }
}

struct NodeValueVisitor;

impl<'de> Visitor<'de> for NodeValueVisitor {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<NodeValue, E> {
        Ok(NodeValue::Int(v))
    }
    fn visit_i128<E>(self, v: i128) -> Result<NodeValue, E> {
        Ok(i64::try_from(v)
            .map(NodeValue::Int)
            .unwrap_or(NodeValue::Str(v.to_string())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<NodeValue, E> {
        Ok(i64::try_from(v)
            .map(NodeValue::Int)
            .unwrap_or(NodeValue::Str(v.to_string())))
    }
    fn visit_u128<E>(self, v: u128) -> Result<NodeValue, E> {
        Ok(i64::try_from(v)
            .map(NodeValue::Int)
            .unwrap_or(NodeValue::Str(v.to_string())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<NodeValue, E> {
        Ok(NodeValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, _v: &[u8]) -> Result<NodeValue, E> {
        Err(E::custom("binary values are not allowed in spec files"))
    }
    fn visit_unit<E>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }
    fn visit_none<E>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        NodeValue::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(NodeValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            if let NodeValue::Str(name) = &key.value
                && entries
                    .iter()
                    .any(|(k, _)| matches!(&k.value, NodeValue::Str(s) if s == name))
            {
                return Err(de::Error::custom(format!("duplicate key `{name}`")));
            }
            entries.push((key, value));
        }
        Ok(NodeValue::Map(entries))
    }
}

/// An error found while deserializing the typed model from a [`Node`] tree.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    /// Stable diagnostic code (`unknown-key`, `invalid-type`, ...).
    pub code: Code,
    pub message: String,
    pub pos: Option<Pos>,
    pub help: Option<String>,
}

impl DeError {
    fn new(code: Code, message: String) -> Self {
        DeError {
            code,
            message,
            pos: None,
            help: None,
        }
    }

    fn at(mut self, pos: Pos) -> Self {
        if self.pos.is_none() {
            self.pos = Some(pos);
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

/// The closest of `candidates` to `name`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn one_of(expected: &[&str]) -> String {
    expected
        .iter()
        .map(|e| format!("`{e}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(Code::InvalidValue, msg.to_string())
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        DeError::new(Code::InvalidType, format!("expected {exp}, found {unexp}"))
    }

    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        DeError::new(Code::InvalidValue, format!("expected {exp}, found {unexp}"))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut error = DeError::new(Code::UnknownKey, format!("unknown key `{field}`"));
        error.help = Some(match did_you_mean(field, expected.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("expected one of {}", one_of(expected)),
        });
        error
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut error = DeError::new(Code::UnknownVariant, format!("unknown value `{variant}`"));
        error.help = Some(match did_you_mean(variant, expected.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("expected one of {}", one_of(expected)),
        });
        error
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::new(Code::MissingKey, format!("missing required key `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::new(Code::DuplicateKey, format!("key `{field}` is given twice"))
    }
}

const LOC_MARKER: &str = "$tether::Loc";
const CHECKED_MARKER: &str = "$tether::Checked";

/// Errors caught by [`Checked`] fields while deserializing one file.
pub type ErrorSink = RefCell<Vec<DeError>>;

/// Deserializes `T` from a node tree. Errors caught inside [`Checked`] fields go to `sink`;
/// the first error outside them is returned.
pub fn from_node<'n, T: Deserialize<'n>>(
    node: &'n Node,
    sink: &'n ErrorSink,
) -> Result<T, DeError> {
    T::deserialize(NodeDe { node, sink })
}

/// A serde deserializer reading one [`Node`].
#[derive(Clone, Copy)]
pub struct NodeDe<'n> {
    node: &'n Node,
    sink: &'n ErrorSink,
}

impl<'n> NodeDe<'n> {
    fn child(&self, node: &'n Node) -> NodeDe<'n> {
        NodeDe {
            node,
            sink: self.sink,
        }
    }
}

macro_rules! forward_to_any {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.deserialize_any(visitor)
        })*
    };
}

impl<'de, 'n> Deserializer<'de> for NodeDe<'n> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let pos = self.node.pos;
        let result = match &self.node.value {
            NodeValue::Null => visitor.visit_unit(),
            NodeValue::Bool(b) => visitor.visit_bool(*b),
            NodeValue::Int(i) => visitor.visit_i64(*i),
            NodeValue::Float(f) => visitor.visit_f64(*f),
            NodeValue::Str(s) => visitor.visit_str(s),
            NodeValue::Seq(items) => visitor.visit_seq(NodeSeq {
                items: items.iter(),
                de: self,
            }),
            NodeValue::Map(entries) => visitor.visit_map(NodeMap {
                entries: entries.iter(),
                value: None,
                de: self,
            }),
        };
        result.map_err(|e| e.at(pos))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let pos = self.node.pos;
        match self.node.value {
            NodeValue::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| e.at(pos))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let pos = self.node.pos;
        visitor.visit_newtype_struct(self).map_err(|e| e.at(pos))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let pos = self.node.pos;
        match name {
            LOC_MARKER => visitor.visit_seq(LocSeq { de: self, step: 0 }),
            CHECKED_MARKER => visitor.visit_seq(CheckedSeq {
                de: self,
                done: false,
            }),
            _ => match &self.node.value {
                NodeValue::Map(_) => self.deserialize_any(visitor),
                other => Err(DeError::new(
                    Code::InvalidType,
                    format!(
                        "expected a mapping with keys {}, found {}",
                        one_of(fields),
                        other.kind()
                    ),
                )),
            },
        }
        .map_err(|e| e.at(pos))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let pos = self.node.pos;
        match &self.node.value {
            NodeValue::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            NodeValue::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                visitor.visit_enum(NodeEnum { key, value, de: self })
            }
            other => Err(DeError::new(
                Code::InvalidType,
                format!("expected one of {} (a name, or a mapping with one of them as its only key), found {}", one_of(variants), other.kind()),
            )),
        }
        .map_err(|e| e.at(pos))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    forward_to_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_seq deserialize_map deserialize_identifier
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }
}

struct NodeSeq<'n, I> {
    items: I,
    de: NodeDe<'n>,
}

impl<'de, 'n, I: Iterator<Item = &'n Node>> SeqAccess<'de> for NodeSeq<'n, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(self.de.child(node))
                .map(Some)
                .map_err(|e| e.at(node.pos)),
            None => Ok(None),
        }
    }
}

struct NodeMap<'n, I> {
    entries: I,
    value: Option<&'n Node>,
    de: NodeDe<'n>,
}

impl<'de, 'n, I: Iterator<Item = &'n (Node, Node)>> MapAccess<'de> for NodeMap<'n, I> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(self.de.child(key))
                    .map(Some)
                    .map_err(|e| e.at(key.pos))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, DeError> {
        match self.value.take() {
            Some(node) => seed
                .deserialize(self.de.child(node))
                .map_err(|e| e.at(node.pos)),
            None => Err(DeError::new(
                Code::InvalidValue,
                "a mapping value was read before its key".into(),
            )),
        }
    }
}

struct NodeEnum<'n> {
    key: &'n Node,
    value: &'n Node,
    de: NodeDe<'n>,
}

impl<'de, 'n> de::EnumAccess<'de> for NodeEnum<'n> {
    type Error = DeError;
    type Variant = NodeDe<'n>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'n>), DeError> {
        let key = seed
            .deserialize(self.de.child(self.key))
            .map_err(|e| e.at(self.key.pos))?;
        Ok((key, self.de.child(self.value)))
    }
}

impl<'de, 'n> de::VariantAccess<'de> for NodeDe<'n> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.node.value {
            NodeValue::Null => Ok(()),
            _ => Err(
                DeError::new(Code::InvalidType, "this option takes no settings".into())
                    .at(self.node.pos),
            ),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // `oauth2:` with nothing under it is an empty mapping for a struct variant.
        if matches!(self.node.value, NodeValue::Null) {
            return visitor
                .visit_map(NodeMap {
                    entries: [].iter(),
                    value: None,
                    de: self,
                })
                .map_err(|e| e.at(self.node.pos));
        }
        self.deserialize_struct("", fields, visitor)
    }
}

/// Yields the line, the column and the value of a [`Loc`] node.
struct LocSeq<'n> {
    de: NodeDe<'n>,
    step: u8,
}

impl<'de, 'n> SeqAccess<'de> for LocSeq<'n> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let pos = self.de.node.pos;
        self.step += 1;
        match self.step {
            1 => seed.deserialize(pos.line.into_deserializer()).map(Some),
            2 => seed.deserialize(pos.column.into_deserializer()).map(Some),
            3 => seed.deserialize(pos.len.into_deserializer()).map(Some),
            4 => seed.deserialize(self.de).map(Some),
            _ => Ok(None),
        }
    }
}

/// Yields the value of a [`Checked`] node, or nothing when it does not deserialize (the
/// error goes to the sink).
struct CheckedSeq<'n> {
    de: NodeDe<'n>,
    done: bool,
}

impl<'de, 'n> SeqAccess<'de> for CheckedSeq<'n> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(None);
        }
        match seed.deserialize(self.de) {
            Ok(value) => Ok(Some(value)),
            Err(error) => {
                self.de.sink.borrow_mut().push(error.at(self.de.node.pos));
                Ok(None)
            }
        }
    }
}

/// A value with the position it was written at.
#[derive(Debug, Clone)]
pub struct Loc<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Loc<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Loc { value, pos }
    }
}

impl<T: PartialEq> PartialEq for Loc<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T> std::ops::Deref for Loc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Display> fmt::Display for Loc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: Serialize> Serialize for Loc<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loc<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LocVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for LocVisitor<T> {
            type Value = Loc<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a located value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loc<T>, A::Error> {
                let missing = || de::Error::custom("a located value is missing its position");
                let line: u32 = seq.next_element()?.ok_or_else(missing)?;
                let column: u32 = seq.next_element()?.ok_or_else(missing)?;
                let len: u32 = seq.next_element()?.ok_or_else(missing)?;
                let value: T = seq.next_element()?.ok_or_else(missing)?;
                Ok(Loc {
                    value,
                    pos: Pos { line, column, len },
                })
            }
        }
        deserializer.deserialize_struct(
            LOC_MARKER,
            &["line", "column", "len", "value"],
            LocVisitor(Default::default()),
        )
    }
}

impl<T: JsonSchema> JsonSchema for Loc<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// A list item that is checked on its own: when it does not deserialize, its error is
/// recorded and the rest of the file is still read.
#[derive(Debug, Clone)]
pub enum Checked<T> {
    Valid(T),
    Invalid,
}

impl<T> Checked<T> {
    pub fn valid(&self) -> Option<&T> {
        match self {
            Checked::Valid(v) => Some(v),
            Checked::Invalid => None,
        }
    }
}

impl<T: Serialize> Serialize for Checked<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Checked::Valid(value) => value.serialize(serializer),
            Checked::Invalid => serializer.serialize_unit(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CheckedVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for CheckedVisitor<T> {
            type Value = Checked<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a checked value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked<T>, A::Error> {
                Ok(match seq.next_element::<T>()? {
                    Some(value) => Checked::Valid(value),
                    None => Checked::Invalid,
                })
            }
        }
        deserializer.deserialize_struct(
            CHECKED_MARKER,
            &["value"],
            CheckedVisitor(Default::default()),
        )
    }
}

impl<T: JsonSchema> JsonSchema for Checked<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Node {
        crate::spec::load::parse_yaml(text).expect("parses")
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        source: Loc<String>,
        target: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        rules: Vec<Checked<Rule>>,
    }

    #[test]
    fn nodes_know_their_positions() {
        let node = parse("a: 1\nb:\n  - x\n  - y: true\n");
        let b = node.get("b").unwrap();
        assert_eq!(b.pos.line, 3);
        let NodeValue::Seq(items) = &b.value else {
            panic!("a list")
        };
        assert_eq!(items[1].get("y").unwrap().value, NodeValue::Bool(true));
        assert_eq!(
            items[1].get("y").unwrap().pos,
            Pos {
                line: 4,
                column: 8,
                len: 4
            }
        );
    }

    #[test]
    fn checked_items_collect_errors_and_keep_going() {
        let node = parse(
            "rules:\n  - source: $.a\n    target: a\n  - source: $.b\n    tagret: b\n  - source: $.c\n    target: c\n",
        );
        let sink = ErrorSink::default();
        let doc: Doc = from_node(&node, &sink).expect("top level is fine");
        assert_eq!(doc.rules.iter().filter(|r| r.valid().is_some()).count(), 2);
        let errors = sink.into_inner();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].code, Code::UnknownKey);
        assert_eq!(errors[0].pos.map(|p| (p.line, p.column)), Some((5, 5)));
        assert_eq!(errors[0].help.as_deref(), Some("did you mean `target`?"));
        let first = doc.rules[0].valid().unwrap();
        assert_eq!((first.source.pos.line, first.source.pos.column), (2, 13));
        assert_eq!(first.target, "a");
    }

    #[test]
    fn missing_keys_point_at_the_mapping() {
        let node = parse("rules:\n  - source: $.a\n");
        let sink = ErrorSink::default();
        let _doc: Doc = from_node(&node, &sink).unwrap();
        let errors = sink.into_inner();
        assert_eq!(errors[0].code, Code::MissingKey);
        assert_eq!(errors[0].pos.map(|p| p.line), Some(2));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(crate::spec::load::parse_yaml(&text).is_err());
        let text = "- ".repeat(500) + "x";
        assert!(crate::spec::load::parse_yaml(&text).is_err());
    }
}
