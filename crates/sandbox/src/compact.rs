//! A record's fields in one byte buffer ([`Fields`]): what a `serde_json::Map` holds, in a
//! fraction of the memory.
//!
//! A `Map<String, Value>` spends a heap string on every field name of every record and a
//! `Value` (tens of bytes, plus a heap block for a string) on every value, about 3 KiB for a
//! record of a dozen fields. Here a record's fields are one boxed slice: each field is its
//! name, as an index into a process-wide table of names (the same few dozen names recur in
//! every record), followed by its value in a tagged binary form (strings as their UTF-8
//! bytes, integers as variable-length numbers, arrays and objects with their byte length,
//! so a lookup skips them without reading them). Values are decoded when a request renders
//! or filters a record; the order of the fields is kept, as `preserve_order` keeps it.
//!
//! The table of names only grows, so it is bounded: past [`MAX_NAMES`] names, or for a
//! name longer than [`MAX_NAME_LEN`], the name is kept in the record itself.

use std::collections::HashMap;
use std::fmt;
use std::sync::{OnceLock, RwLock};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

/// Names kept in the shared table at most; later new names are stored in the records.
pub const MAX_NAMES: usize = 1 << 16;
/// Longer names are stored in the records.
pub const MAX_NAME_LEN: usize = 64;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
/// A non-negative integer (`u64`), as a variable-length number.
const POS_INT: u8 = 3;
/// A negative integer `n`, as the variable-length number `!n`.
const NEG_INT: u8 = 4;
/// A float, as its 8 little-endian bytes.
const FLOAT: u8 = 5;
/// A string: its length, then its bytes.
const STRING: u8 = 6;
/// An array: its length in bytes, then its values.
const ARRAY: u8 = 7;
/// An object: its length in bytes, then its fields.
const OBJECT: u8 = 8;
/// A string of at most 127 bytes: `SHORT | length`, then its bytes.
const SHORT: u8 = 0x80;
const SHORT_MAX: usize = 0x7f;

#[derive(Default)]
struct Names {
    ids: HashMap<&'static str, u32, BuildFnv>,
    names: Vec<&'static str>,
}

/// FNV-1a: the names are short and not chosen to collide on purpose in any way that
/// matters (a collision costs a comparison), and every field of every write is looked up.
#[derive(Default, Clone, Copy)]
struct BuildFnv;

struct Fnv(u64);

impl std::hash::BuildHasher for BuildFnv {
    type Hasher = Fnv;

    fn build_hasher(&self) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn names() -> &'static RwLock<Names> {
    static NAMES: OnceLock<RwLock<Names>> = OnceLock::new();
    NAMES.get_or_init(RwLock::default)
}

fn read_names() -> std::sync::RwLockReadGuard<'static, Names> {
    names()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The id of an interned name, interning it when there is room.
fn intern(name: &str) -> Option<u32> {
    if name.len() > MAX_NAME_LEN {
        return None;
    }
    if let Some(id) = read_names().ids.get(name) {
        return Some(*id);
    }
    let mut table = names()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(id) = table.ids.get(name) {
        return Some(*id);
    }
    if table.names.len() >= MAX_NAMES {
        return None;
    }
    let id = u32::try_from(table.names.len()).ok()?;
    // Bounded by MAX_NAMES * MAX_NAME_LEN bytes for the life of the process.
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    table.names.push(name);
    table.ids.insert(name, id);
    Some(id)
}

/// The id of a name if it is interned (no name is interned by a lookup).
fn interned(name: &str) -> Option<u32> {
    read_names().ids.get(name).copied()
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_bytes(mut value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(2);
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

/// Reads a variable-length number from the front of `bytes`.
fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if bytes.len() < len {
        return None;
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    Some(head)
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    match intern(name) {
        Some(id) => put_varint(out, u64::from(id) << 1),
        None => {
            put_varint(out, ((name.len() as u64) << 1) | 1);
            out.extend_from_slice(name.as_bytes());
        }
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    if text.len() <= SHORT_MAX {
        out.push(SHORT | text.len() as u8);
    } else {
        out.push(STRING);
        put_varint(out, text.len() as u64);
    }
    out.extend_from_slice(text.as_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.push(POS_INT);
    put_varint(out, value);
}

fn put_i64(out: &mut Vec<u8>, value: i64) {
    match u64::try_from(value) {
        Ok(value) => put_u64(out, value),
        Err(_) => {
            out.push(NEG_INT);
            put_varint(out, !(value as u64));
        }
    }
}

fn put_f64(out: &mut Vec<u8>, value: f64) {
    out.push(FLOAT);
    out.extend_from_slice(&value.to_le_bytes());
}

/// Starts an array or object: its tag; [`close`] puts its byte length after the tag.
fn open(out: &mut Vec<u8>, tag: u8) -> usize {
    out.push(tag);
    out.len()
}

fn close(out: &mut Vec<u8>, start: usize) {
    let len = varint_bytes((out.len() - start) as u64);
    out.splice(start..start, len);
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(number) => put_number(out, number),
        Value::String(text) => put_str(out, text),
        Value::Array(items) => {
            let start = open(out, ARRAY);
            for item in items {
                put_value(out, item);
            }
            close(out, start);
        }
        Value::Object(map) => {
            let start = open(out, OBJECT);
            put_fields(out, map.iter());
            close(out, start);
        }
    }
}

fn put_number(out: &mut Vec<u8>, number: &Number) {
    if let Some(value) = number.as_u64() {
        put_u64(out, value);
    } else if let Some(value) = number.as_i64() {
        put_i64(out, value);
    } else {
        put_f64(out, number.as_f64().unwrap_or_default());
    }
}

fn put_fields<'a>(out: &mut Vec<u8>, fields: impl Iterator<Item = (&'a String, &'a Value)>) {
    for (name, value) in fields {
        put_name(out, name);
        put_value(out, value);
    }
}

/// A field name read from a buffer: interned (by id) or stored in place.
#[derive(Clone, Copy)]
enum NameRef<'a> {
    Id(u32),
    Inline(&'a str),
}

fn take_name<'a>(bytes: &mut &'a [u8]) -> Option<NameRef<'a>> {
    let head = take_varint(bytes)?;
    if head & 1 == 0 {
        u32::try_from(head >> 1).ok().map(NameRef::Id)
    } else {
        let text = take(bytes, usize::try_from(head >> 1).ok()?)?;
        std::str::from_utf8(text).ok().map(NameRef::Inline)
    }
}

impl<'a> NameRef<'a> {
    fn resolve(self, table: &Names) -> &'a str {
        match self {
            NameRef::Id(id) => table.names.get(id as usize).copied().unwrap_or_default(),
            NameRef::Inline(text) => text,
        }
    }

    fn is(self, wanted: &str, id: Option<u32>) -> bool {
        match self {
            NameRef::Id(own) => Some(own) == id,
            NameRef::Inline(text) => text == wanted,
        }
    }
}

/// Skips one value; false when the buffer is cut short.
fn skip_value(bytes: &mut &[u8]) -> Option<()> {
    let (&tag, rest) = bytes.split_first()?;
    *bytes = rest;
    match tag {
        NULL | FALSE | TRUE => {}
        POS_INT | NEG_INT => {
            take_varint(bytes)?;
        }
        FLOAT => {
            take(bytes, 8)?;
        }
        STRING | ARRAY | OBJECT => {
            let len = usize::try_from(take_varint(bytes)?).ok()?;
            take(bytes, len)?;
        }
        short if short & SHORT != 0 => {
            take(bytes, usize::from(short & !SHORT))?;
        }
        _ => return None,
    }
    Some(())
}

/// A string value at the front of `bytes`, borrowed; `None` for other kinds.
fn peek_str(bytes: &[u8]) -> Option<&str> {
    let mut rest = bytes;
    let (&tag, after) = rest.split_first()?;
    rest = after;
    let len = match tag {
        STRING => usize::try_from(take_varint(&mut rest)?).ok()?,
        short if short & SHORT != 0 => usize::from(short & !SHORT),
        _ => return None,
    };
    std::str::from_utf8(take(&mut rest, len)?).ok()
}

fn take_value(bytes: &mut &[u8], table: &Names) -> Option<Value> {
    let (&tag, rest) = bytes.split_first()?;
    *bytes = rest;
    Some(match tag {
        NULL => Value::Null,
        FALSE => Value::Bool(false),
        TRUE => Value::Bool(true),
        POS_INT => Value::from(take_varint(bytes)?),
        NEG_INT => Value::from(!take_varint(bytes)? as i64),
        FLOAT => {
            let raw: [u8; 8] = take(bytes, 8)?.try_into().ok()?;
            Number::from_f64(f64::from_le_bytes(raw)).map_or(Value::Null, Value::Number)
        }
        STRING => {
            let len = usize::try_from(take_varint(bytes)?).ok()?;
            Value::String(std::str::from_utf8(take(bytes, len)?).ok()?.to_owned())
        }
        ARRAY => {
            let len = usize::try_from(take_varint(bytes)?).ok()?;
            let mut inner = take(bytes, len)?;
            // Sized to its items, as a copy of a `Value` would be: a decoded record whose
            // values are kept (a rendering) holds no spare room.
            let mut items = Vec::with_capacity(count_values(inner));
            while !inner.is_empty() {
                items.push(take_value(&mut inner, table)?);
            }
            Value::Array(items)
        }
        OBJECT => {
            let len = usize::try_from(take_varint(bytes)?).ok()?;
            Value::Object(take_fields(take(bytes, len)?, table)?)
        }
        short if short & SHORT != 0 => {
            let text = take(bytes, usize::from(short & !SHORT))?;
            Value::String(std::str::from_utf8(text).ok()?.to_owned())
        }
        _ => return None,
    })
}

/// How many values follow one another in `bytes` (an array's items).
fn count_values(mut bytes: &[u8]) -> usize {
    let mut count = 0;
    while !bytes.is_empty() && skip_value(&mut bytes).is_some() {
        count += 1;
    }
    count
}

/// How many fields follow one another in `bytes` (an object's).
fn count_fields(mut bytes: &[u8]) -> usize {
    let mut count = 0;
    while !bytes.is_empty() && take_name(&mut bytes).is_some() && skip_value(&mut bytes).is_some() {
        count += 1;
    }
    count
}

fn take_fields(mut bytes: &[u8], table: &Names) -> Option<Map<String, Value>> {
    let mut map = Map::with_capacity(count_fields(bytes));
    while !bytes.is_empty() {
        let name = take_name(&mut bytes)?.resolve(table).to_owned();
        let value = take_value(&mut bytes, table)?;
        map.insert(name, value);
    }
    Some(map)
}

/// A record's fields, encoded (see the module comment). Behaves as the
/// `serde_json::Map` it stands for: insertion order, one value per name; serialises as
/// that map, so state files hold plain JSON objects.
#[derive(Clone, Default)]
pub struct Fields {
    bytes: Box<[u8]>,
}

/// Where one field sits in a buffer: the whole entry, and its value.
struct Entry {
    #[cfg_attr(not(test), allow(dead_code))]
    start: usize,
    value: usize,
    end: usize,
}

impl Fields {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_map(map: &Map<String, Value>) -> Self {
        let mut out = Vec::new();
        put_fields(&mut out, map.iter());
        Self {
            bytes: out.into_boxed_slice(),
        }
    }

    /// The fields as a JSON map (every value decoded).
    pub fn to_map(&self) -> Map<String, Value> {
        take_fields(&self.bytes, &read_names()).unwrap_or_default()
    }

    /// Every field's encoded value, found in one pass ([`EncodedView`]).
    pub fn encoded(&self) -> EncodedView<'_> {
        let table = read_names();
        let mut entries = Vec::with_capacity(16);
        let mut bytes = &self.bytes[..];
        while !bytes.is_empty() {
            let Some(name) = take_name(&mut bytes) else {
                break;
            };
            let name: &str = match name {
                NameRef::Id(id) => table.names.get(id as usize).copied().unwrap_or_default(),
                NameRef::Inline(text) => text,
            };
            let before = bytes;
            if skip_value(&mut bytes).is_none() {
                break;
            }
            entries.push((name, &before[..before.len() - bytes.len()]));
        }
        EncodedView { table, entries }
    }

    /// Every field decoded in one pass, its name borrowed: what a rendering that reads most
    /// fields of a record needs, without a lookup (and a scan of the buffer) per field or
    /// a copy of every name as `to_map` makes.
    pub fn decode(&self) -> Decoded<'_> {
        let table = read_names();
        let mut entries = Vec::with_capacity(16);
        let mut bytes = &self.bytes[..];
        while !bytes.is_empty() {
            let Some(name) = take_name(&mut bytes) else {
                break;
            };
            let name: &str = match name {
                // Interned names live as long as the process.
                NameRef::Id(id) => table.names.get(id as usize).copied().unwrap_or_default(),
                NameRef::Inline(text) => text,
            };
            let Some(value) = take_value(&mut bytes, &table) else {
                break;
            };
            entries.push((name, value));
        }
        Decoded { entries }
    }

    #[cfg(test)]
    /// The encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        let mut count = 0;
        let mut bytes = &self.bytes[..];
        while !bytes.is_empty() {
            if take_name(&mut bytes)
                .and_then(|_| skip_value(&mut bytes))
                .is_none()
            {
                break;
            }
            count += 1;
        }
        count
    }

    /// The entry of a field, if present.
    fn find(&self, name: &str) -> Option<Entry> {
        let id = interned(name);
        let total = self.bytes.len();
        let mut bytes = &self.bytes[..];
        while !bytes.is_empty() {
            let start = total - bytes.len();
            let found = take_name(&mut bytes)?;
            let value = total - bytes.len();
            skip_value(&mut bytes)?;
            if found.is(name, id) {
                return Some(Entry {
                    start,
                    value,
                    end: total - bytes.len(),
                });
            }
        }
        None
    }

    /// A field's value, decoded.
    pub fn get(&self, name: &str) -> Option<Value> {
        let entry = self.find(name)?;
        take_value(&mut &self.bytes[entry.value..entry.end], &read_names())
    }

    /// A field's value when it is a string, borrowed from the buffer.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        let entry = self.find(name)?;
        peek_str(&self.bytes[entry.value..entry.end])
    }

    #[cfg(test)]
    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Sets a field: in its place when present, else at the end (as `Map::insert`).
    pub fn insert(&mut self, name: String, value: Value) {
        let name = name.as_str();
        let mut encoded = Vec::new();
        match self.find(name) {
            Some(entry) => {
                encoded.extend_from_slice(&self.bytes[..entry.value]);
                put_value(&mut encoded, &value);
                encoded.extend_from_slice(&self.bytes[entry.end..]);
            }
            None => {
                encoded.reserve(self.bytes.len() + 16);
                encoded.extend_from_slice(&self.bytes);
                put_name(&mut encoded, name);
                put_value(&mut encoded, &value);
            }
        }
        self.bytes = encoded.into_boxed_slice();
    }

    #[cfg(test)]
    /// Takes a field out, keeping the order of the others; its value, if it was there.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let entry = self.find(name)?;
        let value = take_value(&mut &self.bytes[entry.value..entry.end], &read_names());
        let mut encoded = Vec::with_capacity(self.bytes.len());
        encoded.extend_from_slice(&self.bytes[..entry.start]);
        encoded.extend_from_slice(&self.bytes[entry.end..]);
        self.bytes = encoded.into_boxed_slice();
        value
    }

    /// Sets each field in turn (as `Map::extend`).
    pub fn extend(&mut self, fields: impl IntoIterator<Item = (String, Value)>) {
        let mut map = self.to_map();
        map.extend(fields);
        *self = Self::from_map(&map);
    }
}

/// A record's fields as they are encoded ([`Fields::encoded`]): each value serialises as
/// JSON straight from the buffer, with no `Value` built and no text copied. It holds the
/// table of names for reading while it lives, so nothing that looks a name up (any other
/// method of [`Fields`]) may run on its thread until it is dropped.
pub struct EncodedView<'a> {
    table: std::sync::RwLockReadGuard<'static, Names>,
    entries: Vec<(&'a str, &'a [u8])>,
}

impl EncodedView<'_> {
    fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(own, _)| *own == name)
            .map(|(_, bytes)| *bytes)
    }

    /// A field's value, ready to serialise; the first of its name, as [`Fields::get`].
    pub fn value(&self, name: &str) -> Option<impl Serialize + '_> {
        Some(Encoded {
            bytes: self.bytes(name)?,
            table: &self.table,
        })
    }

    /// Whether a field is there and not null.
    pub fn is_set(&self, name: &str) -> bool {
        self.bytes(name)
            .is_some_and(|bytes| bytes.first().is_some_and(|tag| *tag != NULL))
    }

    /// Whether a field is `true`.
    pub fn is_true(&self, name: &str) -> bool {
        self.bytes(name) == Some(&[TRUE][..])
    }

    /// Whether a field is an array with at least one item.
    pub fn is_nonempty_array(&self, name: &str) -> bool {
        self.bytes(name).is_some_and(|bytes| {
            let mut rest = bytes;
            matches!(rest.split_first(), Some((&ARRAY, _))) && {
                rest = &rest[1..];
                take_varint(&mut rest).is_some_and(|len| len > 0)
            }
        })
    }
}

/// A record's fields decoded ([`Fields::decode`]): looked up by name, and taken out by a
/// rendering that moves each value into its answer instead of copying it.
pub struct Decoded<'a> {
    entries: Vec<(&'a str, Value)>,
}

impl Decoded<'_> {
    fn position(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|(own, _)| *own == name)
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.position(name).map(|at| &self.entries[at].1)
    }

    /// A field's value, moved out; a later `get` or `take` of the name finds nothing.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        let at = self.position(name)?;
        Some(self.entries.swap_remove(at).1)
    }
}

impl From<Map<String, Value>> for Fields {
    fn from(map: Map<String, Value>) -> Self {
        Self::from_map(&map)
    }
}

impl From<&Map<String, Value>> for Fields {
    fn from(map: &Map<String, Value>) -> Self {
        Self::from_map(map)
    }
}

impl PartialEq for Fields {
    /// Equal when they stand for equal maps (as `Map`'s equality, order aside).
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes || self.to_map() == other.to_map()
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_map(), formatter)
    }
}

/// One encoded value, serialised as JSON without building a `Value`.
struct Encoded<'a> {
    bytes: &'a [u8],
    table: &'a Names,
}

/// Encoded fields, serialised as a JSON object.
struct EncodedFields<'a> {
    bytes: &'a [u8],
    table: &'a Names,
}

fn broken<E: serde::ser::Error>() -> E {
    E::custom("a record's stored fields are cut short")
}

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = self.bytes;
        let (&tag, rest) = bytes.split_first().ok_or_else(broken::<S::Error>)?;
        bytes = rest;
        match tag {
            NULL => serializer.serialize_unit(),
            FALSE => serializer.serialize_bool(false),
            TRUE => serializer.serialize_bool(true),
            POS_INT => serializer.serialize_u64(take_varint(&mut bytes).ok_or_else(broken)?),
            NEG_INT => {
                serializer.serialize_i64(!take_varint(&mut bytes).ok_or_else(broken)? as i64)
            }
            FLOAT => {
                let raw: [u8; 8] = take(&mut bytes, 8)
                    .and_then(|raw| raw.try_into().ok())
                    .ok_or_else(broken)?;
                serializer.serialize_f64(f64::from_le_bytes(raw))
            }
            ARRAY => {
                let len = take_varint(&mut bytes)
                    .and_then(|len| usize::try_from(len).ok())
                    .ok_or_else(broken)?;
                let mut inner = take(&mut bytes, len).ok_or_else(broken)?;
                let mut seq = serializer.serialize_seq(None)?;
                while !inner.is_empty() {
                    let before = inner;
                    skip_value(&mut inner).ok_or_else(broken)?;
                    seq.serialize_element(&Encoded {
                        bytes: &before[..before.len() - inner.len()],
                        table: self.table,
                    })?;
                }
                seq.end()
            }
            OBJECT => {
                let len = take_varint(&mut bytes)
                    .and_then(|len| usize::try_from(len).ok())
                    .ok_or_else(broken)?;
                EncodedFields {
                    bytes: take(&mut bytes, len).ok_or_else(broken)?,
                    table: self.table,
                }
                .serialize(serializer)
            }
            _ => serializer.serialize_str(peek_str(self.bytes).ok_or_else(broken)?),
        }
    }
}

impl Serialize for EncodedFields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        let mut bytes = self.bytes;
        while !bytes.is_empty() {
            let name = take_name(&mut bytes).ok_or_else(broken::<S::Error>)?;
            let before = bytes;
            skip_value(&mut bytes).ok_or_else(broken::<S::Error>)?;
            map.serialize_entry(
                name.resolve(self.table),
                &Encoded {
                    bytes: &before[..before.len() - bytes.len()],
                    table: self.table,
                },
            )?;
        }
        map.end()
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let table = read_names();
        EncodedFields {
            bytes: &self.bytes,
            table: &table,
        }
        .serialize(serializer)
    }
}

/// Reads one JSON value straight into the encoded form.
struct ValueSeed<'o> {
    out: &'o mut Vec<u8>,
}

/// Reads a JSON object's fields straight into the encoded form.
struct FieldsVisitor<'o> {
    out: &'o mut Vec<u8>,
}

/// A field name, borrowed from the input where it can be.
struct NameSeed<'o> {
    out: &'o mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<(), E> {
        put_name(self.out, name);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.out.push(NULL);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.out.push(if value { TRUE } else { FALSE });
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        put_u64(self.out, value);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        put_i64(self.out, value);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        // As `Value` does: a float that is not finite is null.
        match Number::from_f64(value) {
            Some(_) => put_f64(self.out, value),
            None => self.out.push(NULL),
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        put_str(self.out, text);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let start = open(self.out, ARRAY);
        while seq
            .next_element_seed(ValueSeed {
                out: &mut *self.out,
            })?
            .is_some()
        {}
        close(self.out, start);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let start = open(self.out, OBJECT);
        FieldsVisitor {
            out: &mut *self.out,
        }
        .visit_map(map)?;
        close(self.out, start);
        Ok(())
    }
}

impl<'de> Visitor<'de> for FieldsVisitor<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Names are unique in what this crate writes; a repeated name in a hand-edited
        // file keeps its last value, as `Map` does.
        let mut seen: Vec<(usize, usize)> = Vec::new();
        let base = self.out.len();
        let mut duplicate = false;
        loop {
            let start = self.out.len();
            if map
                .next_key_seed(NameSeed {
                    out: &mut *self.out,
                })?
                .is_none()
            {
                break;
            }
            let name_end = self.out.len();
            if !duplicate {
                let name = &self.out[start..name_end];
                duplicate = seen.iter().any(|&(from, to)| &self.out[from..to] == name);
                seen.push((start, name_end));
            }
            map.next_value_seed(ValueSeed {
                out: &mut *self.out,
            })?;
        }
        if duplicate {
            let table = read_names();
            let fields = take_fields(&self.out[base..], &table)
                .ok_or_else(|| de::Error::custom("fields cut short"))?;
            drop(table);
            self.out.truncate(base);
            put_fields(self.out, fields.iter());
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        deserializer.deserialize_map(FieldsVisitor { out: &mut out })?;
        Ok(Self {
            bytes: out.into_boxed_slice(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn every_kind() -> Map<String, Value> {
        let long = "x".repeat(300);
        map(json!({
            "null": null,
            "yes": true,
            "no": false,
            "zero": 0,
            "big": u64::MAX,
            "negative": -42,
            "most_negative": i64::MIN,
            "float": 12.5,
            "whole_float": 3.0,
            "tiny": -1.0e-300,
            "empty": "",
            "text": "æøå ✓ \"quoted\"\n",
            "long": long,
            "list": [1, "two", [3.5, null], {"four": 4}],
            "nothing": [],
            "object": {"a": {"b": {"c": [true]}}, "z": ""},
            "empty_object": {},
            "a name longer than the limit of names kept in the shared table, so kept here": 1,
        }))
    }

    #[test]
    fn every_json_kind_round_trips_with_its_order() {
        let original = every_kind();
        let fields = Fields::from_map(&original);
        let back = fields.to_map();
        assert_eq!(back, original);
        let names: Vec<&String> = back.keys().collect();
        let expected: Vec<&String> = original.keys().collect();
        assert_eq!(names, expected);
        // Integers stay integers and floats floats, as the JSON text shows.
        assert_eq!(
            serde_json::to_string(&back).expect("text"),
            serde_json::to_string(&original).expect("text")
        );
        for (name, value) in &original {
            assert_eq!(fields.get(name).as_ref(), Some(value), "{name}");
        }
        assert_eq!(fields.get("missing"), None);
        assert_eq!(fields.get_str("text"), Some("æøå ✓ \"quoted\"\n"));
        assert_eq!(fields.get_str("zero"), None);
        assert_eq!(fields.len(), original.len());
        assert!(fields.encoded_len() < serde_json::to_string(&original).expect("text").len());
    }

    #[test]
    fn decoded_fields_are_the_map_and_give_each_value_once() {
        let original = every_kind();
        let fields = Fields::from_map(&original);
        let mut decoded = fields.decode();
        for (name, value) in &original {
            assert_eq!(decoded.get(name), Some(value), "{name}");
        }
        assert_eq!(decoded.get("missing"), None);
        for (name, value) in original.iter().rev() {
            assert_eq!(decoded.take(name).as_ref(), Some(value), "{name}");
            assert_eq!(decoded.take(name), None, "{name} taken twice");
        }
        assert!(Fields::new().decode().get("a").is_none());
        // Decoded arrays hold no spare room (a rendering keeps them).
        let list = fields.get("list").expect("list");
        let items = list.as_array().expect("array");
        assert_eq!(items.capacity(), items.len());
    }

    #[test]
    fn encoded_values_serialise_as_the_decoded_ones() {
        let original = every_kind();
        let fields = Fields::from_map(&original);
        let view = fields.encoded();
        for (name, value) in &original {
            let encoded = view.value(name).expect("present");
            assert_eq!(
                serde_json::to_string(&encoded).expect("text"),
                serde_json::to_string(value).expect("text"),
                "{name}"
            );
        }
        assert!(view.value("missing").is_none());
        assert!(view.is_set("yes") && view.is_set("empty") && view.is_set("nothing"));
        assert!(view.is_true("yes") && !view.is_true("no") && !view.is_true("text"));
        assert!(!view.is_set("null") && !view.is_set("missing"));
        assert!(view.is_nonempty_array("list"));
        assert!(!view.is_nonempty_array("nothing") && !view.is_nonempty_array("object"));
        assert!(!view.is_nonempty_array("missing") && !view.is_nonempty_array("text"));
    }

    #[test]
    fn serialises_as_the_map_and_reads_back_from_it() {
        let original = every_kind();
        let fields = Fields::from_map(&original);
        let text = serde_json::to_string(&fields).expect("text");
        assert_eq!(text, serde_json::to_string(&original).expect("text"));
        let read: Fields = serde_json::from_str(&text).expect("read");
        assert_eq!(read.to_map(), original);
        let read: Fields = serde_json::from_reader(text.as_bytes()).expect("read");
        assert_eq!(read.to_map(), original);
        // Encoded as `from_map` encodes, byte for byte.
        assert_eq!(read.bytes, fields.bytes);
    }

    #[test]
    fn a_repeated_name_keeps_its_last_value_in_the_first_place() {
        let read: Fields = serde_json::from_str(r#"{"a": 1, "b": 2, "a": 3}"#).expect("read");
        let expected: Map<String, Value> =
            serde_json::from_str(r#"{"a": 1, "b": 2, "a": 3}"#).expect("map");
        assert_eq!(read.to_map(), expected);
        assert_eq!(
            serde_json::to_string(&read).expect("text"),
            serde_json::to_string(&expected).expect("text")
        );
    }

    #[test]
    fn not_an_object_is_refused() {
        assert!(serde_json::from_str::<Fields>("[1]").is_err());
        assert!(serde_json::from_str::<Fields>(r#"{"a": }"#).is_err());
    }

    #[test]
    fn edits_behave_as_the_map_does() {
        let mut fields = Fields::from_map(&map(json!({"a": 1, "b": "two", "c": [3]})));
        let mut reference = fields.to_map();
        for (name, value) in [
            ("b", json!({"nested": "longer than before"})),
            ("d", json!(null)),
            ("a", json!(-1)),
        ] {
            fields.insert(name.to_string(), value.clone());
            reference.insert(name.to_string(), value);
            assert_eq!(fields.to_map(), reference);
            assert_eq!(
                fields.to_map().keys().collect::<Vec<_>>(),
                reference.keys().collect::<Vec<_>>()
            );
        }
        assert_eq!(fields.remove("b"), reference.shift_remove("b"));
        assert_eq!(fields.remove("b"), None);
        assert_eq!(fields.to_map(), reference);
        fields.extend(map(json!({"a": 7, "e": "new"})));
        reference.extend(map(json!({"a": 7, "e": "new"})));
        assert_eq!(
            serde_json::to_string(&fields).expect("text"),
            serde_json::to_string(&reference).expect("text")
        );
        assert!(fields.contains_key("e") && !fields.contains_key("b"));
        assert!(Fields::new().is_empty() && Fields::new().to_map().is_empty());
    }

    proptest::proptest! {
        /// Any JSON object round-trips: through the encoding, and through its JSON text.
        #[test]
        fn any_object_round_trips(value in json_object()) {
            let original = map(value);
            let fields = Fields::from_map(&original);
            let text = serde_json::to_string(&fields).expect("text");
            proptest::prop_assert_eq!(&text, &serde_json::to_string(&original).expect("text"));
            proptest::prop_assert_eq!(fields.to_map(), original);
            // Read back as `Map` reads the same text (floats parse as serde_json parses them).
            let read: Fields = serde_json::from_str(&text).expect("read");
            let expected: Map<String, Value> = serde_json::from_str(&text).expect("map");
            proptest::prop_assert_eq!(read.to_map(), expected);
        }
    }

    fn json_object() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1.0e12..1.0e12f64).prop_map(Value::from),
            "[a-z0-9 ]{0,8}|.{0,200}".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(3, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        });
        proptest::collection::vec(("[a-zA-Z_]{1,70}", value), 0..8)
            .prop_map(|fields| Value::Object(fields.into_iter().collect()))
    }
}
