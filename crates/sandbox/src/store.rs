//! The simulators' shared in-memory store: records per system and entity, the monotonic
//! server clock, id generation, modified times, tombstones, change logs and unique keys.
//!
//! The store knows nothing about HTTP or any system's wire format: each simulator renders
//! its records from what is kept here. Everything in [`Store`] is serialisable, so the
//! whole simulated world can be written to a state file and read back.
//!
//! It also owns the indexes that keep a request's cost flat as the data grows: each entity's
//! live records in the orders listings use (`touched`, `modified`, `created`, numeric id,
//! each with the creation sequence as tie-break), with rank and position lookups for offset
//! and keyset paging ([`Ordered`]), and `(field, value) -> records` lookups for references
//! and unique keys. Indexes are derived data: never serialised, rebuilt after a state file
//! is read ([`Store::rebuild_indexes`]), kept current by every write through
//! [`EntityStore`]'s methods.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::compact::Fields;

/// A point in server time: milliseconds since the Unix epoch, UTC.
pub type Stamp = i64;

/// The server clock: wall-clock time plus an offset that tests can move forward.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// The current server time in milliseconds.
    pub fn now(&self) -> Stamp {
        chrono::Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves server time forward (token expiry, rate-limit windows, timestamps).
    pub fn advance(&self, by_ms: i64) {
        self.offset_ms.fetch_add(by_ms, Ordering::Relaxed);
    }
}

/// Keys per chunk of [`Ordered`]: a chunk is split when it doubles.
const CHUNK: usize = 512;

/// A sorted set of keys kept in chunks of at most `2 * CHUNK`: insert and remove cost
/// `O(CHUNK + n / CHUNK)`, and so do the rank of a key and the key at a position, which a
/// `BTreeMap` cannot answer without walking every key before it. At 1,000,000 keys that is
/// about 2,000 chunk lengths summed, a few microseconds.
#[derive(Debug, Clone)]
pub struct Ordered<K> {
    chunks: Vec<Vec<K>>,
    len: usize,
}

impl<K> Default for Ordered<K> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<K: Ord + Clone> Ordered<K> {
    /// Builds the set from keys in any order.
    pub fn from_keys(mut keys: Vec<K>) -> Self {
        keys.sort();
        keys.dedup();
        let len = keys.len();
        let chunks = keys.chunks(CHUNK).map(<[K]>::to_vec).collect();
        Self { chunks, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The chunk a key belongs in: the first whose last key is at or after it.
    fn chunk_of(&self, key: &K) -> usize {
        self.chunks
            .partition_point(|chunk| chunk.last().is_some_and(|last| last < key))
    }

    /// Adds a key; false when it was there already.
    pub fn insert(&mut self, key: K) -> bool {
        if self.chunks.is_empty() {
            self.chunks.push(vec![key]);
            self.len = 1;
            return true;
        }
        let index = self.chunk_of(&key).min(self.chunks.len() - 1);
        let chunk = &mut self.chunks[index];
        match chunk.binary_search(&key) {
            Ok(_) => return false,
            Err(position) => chunk.insert(position, key),
        }
        self.len += 1;
        if chunk.len() >= 2 * CHUNK {
            let tail = chunk.split_off(CHUNK);
            self.chunks.insert(index + 1, tail);
        }
        true
    }

    /// Removes a key; false when it was not there.
    pub fn remove(&mut self, key: &K) -> bool {
        let index = self.chunk_of(key);
        let Some(chunk) = self.chunks.get_mut(index) else {
            return false;
        };
        let Ok(position) = chunk.binary_search(key) else {
            return false;
        };
        chunk.remove(position);
        self.len -= 1;
        if chunk.is_empty() {
            self.chunks.remove(index);
        }
        true
    }

    /// How many keys sort before `key`.
    pub fn rank(&self, key: &K) -> usize {
        let index = self.chunk_of(key);
        let before: usize = self.chunks[..index].iter().map(Vec::len).sum();
        before
            + self
                .chunks
                .get(index)
                .map_or(0, |chunk| chunk.partition_point(|item| item < key))
    }

    /// The keys from position `start` on, in order.
    #[cfg(test)]
    pub fn iter_from(&self, start: usize) -> impl DoubleEndedIterator<Item = &K> + '_ {
        self.iter_range(start, self.len)
    }

    /// The keys at positions `from..to`, in order (reversible).
    pub fn iter_range(&self, from: usize, to: usize) -> impl DoubleEndedIterator<Item = &K> + '_ {
        let to = to.min(self.len);
        let mut slices: Vec<&[K]> = Vec::new();
        let mut start = 0;
        for chunk in &self.chunks {
            let end = start + chunk.len();
            if end > from && start < to {
                slices.push(&chunk[from.max(start) - start..to.min(end) - start]);
            }
            if end >= to {
                break;
            }
            start = end;
        }
        slices.into_iter().flatten()
    }

    /// Every key, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &K> + '_ {
        self.chunks.iter().flatten()
    }
}

/// The orders a listing can ask for; each is kept for the live records of an entity as
/// `(value, seq)` keys, so records with one value keep their creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// The system modification stamp (`touched`): change order.
    Touched,
    /// The user-visible last-modified time.
    Modified,
    Created,
    /// Ids read as numbers (Keap, the integer in-house ids); 0 for others.
    NumericId,
}

const SORTS: [Sort; 4] = [
    Sort::Touched,
    Sort::Modified,
    Sort::Created,
    Sort::NumericId,
];

/// A position in one of the [`Sort`] orders.
pub type Key = (i64, u64);

impl Sort {
    fn slot(self) -> usize {
        self as usize
    }

    /// The key of a record in this order.
    pub fn key(self, record: &Record) -> Key {
        let value = match self {
            Sort::Touched => record.touched,
            Sort::Modified => record.modified,
            Sort::Created => record.created,
            Sort::NumericId => record
                .id
                .parse::<u64>()
                .ok()
                .and_then(|id| i64::try_from(id).ok())
                .unwrap_or(0),
        };
        (value, record.seq)
    }
}

/// How a lookup field's value becomes its key (trimmed and lower-cased text by default;
/// Salesforce ids are first brought to their 18-character form).
pub type KeyFn = fn(&Value) -> Option<String>;

/// One stored record. `fields` holds what clients wrote plus values the server computes;
/// ids, numbers and times are kept beside them and rendered by each simulator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: String,
    /// Creation order inside its entity; breaks ties between equal modified times.
    pub seq: u64,
    /// A server-assigned display number such as `C-000042`, where the system has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    pub created: Stamp,
    /// The user-visible last-modified time.
    pub modified: Stamp,
    /// The system modification stamp (Salesforce `SystemModstamp`): at or after `modified`,
    /// also moved by server-side changes such as recalculated totals.
    pub touched: Stamp,
    /// Set when the record is soft-deleted (web shop, Salesforce recycle bin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Stamp>,
    /// Encoded compactly ([`Fields`]); a JSON object in the state file.
    pub fields: Fields,
}

impl Record {
    pub fn is_live(&self) -> bool {
        self.deleted.is_none()
    }
}

/// What is left of a hard-deleted record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tombstone {
    pub id: String,
    pub deleted_at: Stamp,
}

/// What happened to a record, for change feeds (Keap `/products/sync`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Change {
    pub seq: u64,
    pub id: String,
    pub kind: ChangeKind,
    pub at: Stamp,
}

/// The records, tombstones and counters of one entity of one system.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct EntityStore {
    pub records: IndexMap<String, Record>,
    #[serde(default)]
    pub tombstones: Vec<Tombstone>,
    #[serde(default)]
    pub changes: Vec<Change>,
    #[serde(default)]
    pub next_id: u64,
    #[serde(default)]
    pub next_number: u64,
    #[serde(default)]
    pub next_seq: u64,
    #[serde(default)]
    pub next_change: u64,
    /// Top-level fields whose values must be unique among live records.
    #[serde(skip)]
    unique: Vec<String>,
    /// For each unique field, its normalised values -> the live records holding them.
    #[serde(skip)]
    unique_index: Vec<KeyIndex>,
    /// Whether writes are kept in `changes` (only entities with a change feed read it).
    #[serde(skip)]
    log_changes: bool,
    /// The derived indexes (see the module comment).
    #[serde(skip)]
    indexes: Indexes,
}

/// An entity's derived indexes.
#[derive(Debug, Default, Clone)]
struct Indexes {
    /// The live records in each [`Sort`] order.
    live: [Ordered<Key>; 4],
    /// Every record, soft-deleted ones too, in change order (`queryAll`, `include_deleted`).
    all_touched: Ordered<Key>,
    /// `seq -> id` for every record.
    ids: HashMap<u64, String, BuildU64>,
    /// Records whose `modified` and `touched` differ: while there are none, a
    /// modified-since filter is a range of the change order.
    skewed: usize,
    /// The lookup fields and how their values become keys.
    lookup_fields: Vec<(String, KeyFn)>,
    /// For each lookup field, key -> seqs of every record (soft-deleted too) holding it.
    lookups: Vec<KeyIndex>,
}

impl Indexes {
    fn add(&mut self, record: &Record) {
        if record.is_live() {
            for sort in SORTS {
                self.live[sort.slot()].insert(sort.key(record));
            }
        }
        self.all_touched.insert(Sort::Touched.key(record));
        self.ids.insert(record.seq, record.id.clone());
        if record.modified != record.touched {
            self.skewed += 1;
        }
        for ((field, key), index) in self.lookup_fields.iter().zip(&mut self.lookups) {
            if let Some(value) = lookup_value(record, field).and_then(|value| key(&value)) {
                index.insert(&value, record.seq);
            }
        }
    }

    fn remove(&mut self, record: &Record) {
        if record.is_live() {
            for sort in SORTS {
                self.live[sort.slot()].remove(&sort.key(record));
            }
        }
        self.all_touched.remove(&Sort::Touched.key(record));
        self.ids.remove(&record.seq);
        if record.modified != record.touched {
            self.skewed -= 1;
        }
        for ((field, key), index) in self.lookup_fields.iter().zip(&mut self.lookups) {
            if let Some(value) = lookup_value(record, field).and_then(|value| key(&value)) {
                index.remove(&value, record.seq);
            }
        }
    }
}

/// Applies `change` (add or remove) for each unique field's key of a record.
fn unique_keys(
    unique: &[String],
    indexes: &mut [KeyIndex],
    record: &Record,
    change: fn(&mut KeyIndex, &str, u64),
) {
    for (field, index) in unique.iter().zip(indexes) {
        if let Some(key) = record.fields.get(field).as_ref().and_then(normalise_key) {
            change(index, &key, record.seq);
        }
    }
}

/// Hashes a `u64` key (a creation sequence, or a key already hashed) with one multiply:
/// enough to spread sequential numbers, far cheaper than SipHash on every index write.
#[derive(Debug, Default, Clone, Copy)]
struct BuildU64;

struct U64Hasher(u64);

impl std::hash::BuildHasher for BuildU64 {
    type Hasher = U64Hasher;

    fn build_hasher(&self) -> U64Hasher {
        U64Hasher(0)
    }
}

impl std::hash::Hasher for U64Hasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0 ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The records holding one key.
#[derive(Debug, Clone)]
enum Seqs {
    One(u64),
    Many(BTreeSet<u64>),
}

/// `key -> seqs`, the key kept as a 64-bit hash: no key text is held per record. Every
/// answer is a candidate list, checked against the records' own values by the caller, so
/// a collision of two keys costs a look at one more record, never a wrong answer.
#[derive(Debug, Default, Clone)]
struct KeyIndex {
    map: HashMap<u64, Seqs, BuildU64>,
}

fn key_hash(key: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

impl KeyIndex {
    fn insert(&mut self, key: &str, seq: u64) {
        match self.map.entry(key_hash(key)) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(Seqs::One(seq));
            }
            std::collections::hash_map::Entry::Occupied(mut slot) => match slot.get_mut() {
                Seqs::One(one) if *one == seq => {}
                Seqs::One(one) => {
                    let both = BTreeSet::from([*one, seq]);
                    slot.insert(Seqs::Many(both));
                }
                Seqs::Many(many) => {
                    many.insert(seq);
                }
            },
        }
    }

    fn remove(&mut self, key: &str, seq: u64) {
        let hash = key_hash(key);
        let Some(seqs) = self.map.get_mut(&hash) else {
            return;
        };
        match seqs {
            Seqs::One(one) if *one == seq => {
                self.map.remove(&hash);
            }
            Seqs::One(_) => {}
            Seqs::Many(many) => {
                many.remove(&seq);
                if many.len() == 1
                    && let Some(&last) = many.first()
                {
                    *seqs = Seqs::One(last);
                }
            }
        }
    }

    /// The records that may hold `key`, in creation order.
    fn candidates(&self, key: &str) -> Vec<u64> {
        match self.map.get(&key_hash(key)) {
            None => Vec::new(),
            Some(Seqs::One(one)) => vec![*one],
            Some(Seqs::Many(many)) => many.iter().copied().collect(),
        }
    }
}

/// Where field values are read from for a unique-key check: stored fields or a request's.
pub trait FieldValues {
    fn value(&self, name: &str) -> Option<Value>;
}

impl FieldValues for serde_json::Map<String, Value> {
    fn value(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }
}

impl FieldValues for Fields {
    fn value(&self, name: &str) -> Option<Value> {
        self.get(name)
    }
}

/// Normalises a unique-key value: trimmed and lower-cased.
pub fn normalise_key(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_lowercase()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

impl EntityStore {
    /// Declares the unique fields and rebuilds their index.
    pub fn set_unique(&mut self, fields: &[&str]) {
        self.unique = fields.iter().map(|field| field.to_string()).collect();
        self.rebuild_unique();
    }

    fn rebuild_unique(&mut self) {
        let mut indexes = vec![KeyIndex::default(); self.unique.len()];
        for record in self.records.values().filter(|record| record.is_live()) {
            for (field, index) in self.unique.iter().zip(&mut indexes) {
                if let Some(key) = record.fields.get(field).as_ref().and_then(normalise_key) {
                    index.insert(&key, record.seq);
                }
            }
        }
        self.unique_index = indexes;
    }

    /// Keeps the entity's writes in [`EntityStore::changes`], for a change feed.
    pub fn log_changes(&mut self) {
        self.log_changes = true;
    }

    /// The first unique field whose value in `fields` is held by another live record.
    pub fn unique_conflict(
        &self,
        fields: &impl FieldValues,
        own_id: Option<&str>,
    ) -> Option<String> {
        self.unique
            .iter()
            .zip(&self.unique_index)
            .find_map(|(field, index)| {
                let key = normalise_key(&fields.value(field)?)?;
                index
                    .candidates(&key)
                    .into_iter()
                    .filter_map(|seq| self.by_seq(seq))
                    .any(|holder| {
                        holder.is_live()
                            && Some(holder.id.as_str()) != own_id
                            && holder.fields.get(field).as_ref().and_then(normalise_key)
                                == Some(key.clone())
                    })
                    .then(|| field.clone())
            })
    }

    /// Declares fields looked up by value ([`EntityStore::lookup`]) and rebuilds their index.
    pub fn set_lookup(&mut self, fields: &[&str], key: KeyFn) {
        for field in fields {
            if !self
                .indexes
                .lookup_fields
                .iter()
                .any(|(name, _)| name == field)
            {
                self.indexes.lookup_fields.push((field.to_string(), key));
            }
        }
        self.rebuild_indexes();
    }

    /// Rebuilds every derived index from the records (after a state file is read).
    pub fn rebuild_indexes(&mut self) {
        let lookup_fields = std::mem::take(&mut self.indexes.lookup_fields);
        self.indexes = Indexes {
            lookup_fields,
            ..Indexes::default()
        };
        self.indexes.lookups = vec![KeyIndex::default(); self.indexes.lookup_fields.len()];
        let records: Vec<&Record> = self.records.values().collect();
        let mut live: [Vec<Key>; 4] = Default::default();
        let mut all = Vec::with_capacity(records.len());
        for record in &records {
            if record.is_live() {
                for sort in SORTS {
                    live[sort.slot()].push(sort.key(record));
                }
            }
            all.push(Sort::Touched.key(record));
            self.indexes.ids.insert(record.seq, record.id.clone());
            if record.modified != record.touched {
                self.indexes.skewed += 1;
            }
            for ((field, key), index) in self
                .indexes
                .lookup_fields
                .iter()
                .zip(&mut self.indexes.lookups)
            {
                if let Some(value) = lookup_value(record, field).and_then(|value| key(&value)) {
                    index.insert(&value, record.seq);
                }
            }
        }
        self.indexes.live = live.map(Ordered::from_keys);
        self.indexes.all_touched = Ordered::from_keys(all);
    }

    /// Takes a record out of the derived indexes (before it changes or goes).
    fn forget(&mut self, id: &str) {
        if let Some(record) = self.records.get(id) {
            self.indexes.remove(record);
        }
    }

    /// Puts a stored record into the derived indexes.
    fn remember(&mut self, id: &str) {
        if let Some(record) = self.records.get(id) {
            self.indexes.add(record);
        }
    }

    /// The record created `seq`-th, if it is still stored.
    pub fn by_seq(&self, seq: u64) -> Option<&Record> {
        self.records.get(self.indexes.ids.get(&seq)?)
    }

    /// Live records in `sort` order (soft-deleted ones too when `include_deleted`, only in
    /// [`Sort::Touched`]), from position `start`.
    pub fn ordered(&self, sort: Sort, include_deleted: bool) -> &Ordered<Key> {
        if include_deleted && sort == Sort::Touched {
            &self.indexes.all_touched
        } else {
            &self.indexes.live[sort.slot()]
        }
    }

    /// True when every record's `modified` equals its `touched`, so that a filter on the
    /// modified time is a range of [`Sort::Touched`].
    pub fn modified_is_touched(&self) -> bool {
        self.indexes.skewed == 0
    }

    /// Records (soft-deleted ones too) whose lookup field holds a value with this key, in
    /// creation order; `None` when the field is not a lookup field.
    pub fn lookup(&self, field: &str, value: &Value) -> Option<Vec<&Record>> {
        let position = self
            .indexes
            .lookup_fields
            .iter()
            .position(|(name, _)| name == field)?;
        let key_of = self.indexes.lookup_fields[position].1;
        let Some(key) = key_of(value) else {
            return Some(Vec::new());
        };
        let index = self.indexes.lookups.get(position)?;
        Some(
            index
                .candidates(&key)
                .into_iter()
                .filter_map(|seq| self.by_seq(seq))
                .filter(|record| {
                    lookup_value(record, field).and_then(|value| key_of(&value))
                        == Some(key.clone())
                })
                .collect(),
        )
    }

    /// True when `field` is a lookup field.
    pub fn is_lookup(&self, field: &str) -> bool {
        self.indexes
            .lookup_fields
            .iter()
            .any(|(name, _)| name == field)
    }

    /// Removes every soft-deleted record for good (an emptied recycle bin).
    pub fn purge_deleted(&mut self) {
        let gone: Vec<String> = self
            .records
            .values()
            .filter(|record| !record.is_live())
            .map(|record| record.id.clone())
            .collect();
        for id in gone {
            self.forget(&id);
            self.records.shift_remove(&id);
        }
    }

    fn unindex(&mut self, id: &str) {
        if let Some(record) = self.records.get(id) {
            unique_keys(
                &self.unique,
                &mut self.unique_index,
                record,
                KeyIndex::remove,
            );
        }
    }

    pub fn allocate_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn allocate_number(&mut self) -> u64 {
        self.next_number += 1;
        self.next_number
    }

    pub fn get(&self, id: &str) -> Option<&Record> {
        self.records.get(id)
    }

    /// A new record with the given id and fields, created and modified at `at`.
    pub fn new_record(&mut self, id: String, fields: impl Into<Fields>, at: Stamp) -> Record {
        self.next_seq += 1;
        Record {
            id,
            seq: self.next_seq,
            number: None,
            created: at,
            modified: at,
            touched: at,
            deleted: None,
            fields: fields.into(),
        }
    }

    fn log(&mut self, id: &str, kind: ChangeKind, at: Stamp) {
        self.next_change += 1;
        if !self.log_changes {
            return;
        }
        self.changes.push(Change {
            seq: self.next_change,
            id: id.to_string(),
            kind,
            at,
        });
    }

    /// Stores a record (new or replaced), keeping the unique index and change log current.
    pub fn put(&mut self, record: Record) {
        let kind = match self.records.get(&record.id) {
            Some(old) => {
                unique_keys(&self.unique, &mut self.unique_index, old, KeyIndex::remove);
                self.indexes.remove(old);
                ChangeKind::Updated
            }
            None => ChangeKind::Created,
        };
        if record.is_live() {
            unique_keys(
                &self.unique,
                &mut self.unique_index,
                &record,
                KeyIndex::insert,
            );
        }
        self.indexes.add(&record);
        self.log(&record.id, kind, record.touched);
        self.records.insert(record.id.clone(), record);
    }

    /// Removes a record for good, leaving a tombstone.
    pub fn remove(&mut self, id: &str, at: Stamp) -> Option<Record> {
        self.unindex(id);
        self.forget(id);
        let record = self.records.shift_remove(id)?;
        self.tombstones.push(Tombstone {
            id: id.to_string(),
            deleted_at: at,
        });
        self.log(id, ChangeKind::Deleted, at);
        Some(record)
    }

    /// Marks a record deleted but keeps it; its unique keys are released.
    pub fn soft_delete(&mut self, id: &str, at: Stamp) -> bool {
        self.unindex(id);
        self.forget(id);
        let Some(record) = self.records.get_mut(id) else {
            return false;
        };
        record.deleted = Some(at);
        record.modified = at;
        record.touched = at;
        self.remember(id);
        self.log(id, ChangeKind::Deleted, at);
        true
    }

    /// Records sorted oldest change first (by `touched`, then creation order).
    pub fn by_change(&self, include_deleted: bool) -> Vec<&Record> {
        self.ordered(Sort::Touched, include_deleted)
            .iter()
            .filter_map(|(_, seq)| self.by_seq(*seq))
            .collect()
    }

    /// Records sorted oldest change first, by scanning every record (the reference the
    /// indexes are tested against).
    #[cfg(test)]
    pub fn by_change_scan(&self, include_deleted: bool) -> Vec<&Record> {
        let mut records: Vec<&Record> = self
            .records
            .values()
            .filter(|record| include_deleted || record.is_live())
            .collect();
        records.sort_by_key(|record| (record.touched, record.seq));
        records
    }
}

/// The records a listing matched, in its order: a run of an index (nothing scanned), or
/// the result of a scan where no index serves the request.
pub enum Listing<'a> {
    Indexed {
        entity: &'a EntityStore,
        order: &'a Ordered<Key>,
        /// Positions `from..to` of `order`.
        from: usize,
        to: usize,
        descending: bool,
    },
    Scanned(Vec<&'a Record>),
}

impl<'a> Listing<'a> {
    /// The run of `sort` (live records, or all in change order with `include_deleted`)
    /// whose values lie in `low..=high`.
    pub fn range(
        entity: &'a EntityStore,
        sort: Sort,
        include_deleted: bool,
        low: Option<i64>,
        high: Option<i64>,
        descending: bool,
    ) -> Self {
        let order = entity.ordered(sort, include_deleted);
        let from = low.map_or(0, |low| order.rank(&(low, 0)));
        let to = high.map_or(order.len(), |high| {
            order.rank(&(high.saturating_add(1), 0)).max(from)
        });
        Listing::Indexed {
            entity,
            order,
            from,
            to,
            descending,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Listing::Indexed { from, to, .. } => to - from,
            Listing::Scanned(records) => records.len(),
        }
    }

    /// The records at positions `start..end` of the listing.
    pub fn slice(&self, start: usize, end: usize) -> Vec<&'a Record> {
        let end = end.min(self.len());
        let start = start.min(end);
        match self {
            Listing::Indexed {
                entity,
                order,
                from,
                to,
                descending: false,
            } => order
                .iter_range(from + start, (from + end).min(*to))
                .filter_map(|(_, seq)| entity.by_seq(*seq))
                .collect(),
            Listing::Indexed {
                entity,
                order,
                to,
                descending: true,
                ..
            } => {
                // Position i counts from the end: the records at to-end..to-start, reversed.
                order
                    .iter_range(to - end, to - start)
                    .rev()
                    .filter_map(|(_, seq)| entity.by_seq(*seq))
                    .collect()
            }
            Listing::Scanned(records) => records[start..end].to_vec(),
        }
    }

    /// The position of the first record after `key` in change order (keyset paging); the
    /// listing must be in ascending change order.
    pub fn position_after(&self, key: Key) -> usize {
        match self {
            Listing::Indexed {
                order, from, to, ..
            } => {
                let rank = order.rank(&(key.0, key.1.saturating_add(1)));
                rank.clamp(*from, *to) - from
            }
            Listing::Scanned(records) => {
                records.partition_point(|record| (record.touched, record.seq) <= key)
            }
        }
    }
}

/// The value of a lookup field: a top-level field, or the record's id for `Id`.
fn lookup_value(record: &Record, field: &str) -> Option<Value> {
    if field == "Id" {
        return Some(Value::String(record.id.clone()));
    }
    record.fields.get(field)
}

/// All simulated data: per system, per entity.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Store {
    pub systems: BTreeMap<String, BTreeMap<String, EntityStore>>,
    /// The last stamp handed out; stamps never go backwards, even across restarts.
    #[serde(default)]
    pub last_stamp: Stamp,
    /// Per-system counters that are not tied to one entity (Salesforce id sequence).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

impl Store {
    pub fn entity(&self, system: &str, entity: &str) -> Option<&EntityStore> {
        self.systems.get(system)?.get(entity)
    }

    pub fn entity_mut(&mut self, system: &str, entity: &str) -> &mut EntityStore {
        self.systems
            .entry(system.to_string())
            .or_default()
            .entry(entity.to_string())
            .or_default()
    }

    /// A modification stamp: the clock's time, but always after the previous stamp, so
    /// every write has its own instant unless one operation covers several records.
    pub fn stamp(&mut self, clock: &Clock) -> Stamp {
        let stamp = clock.now().max(self.last_stamp + 1);
        self.last_stamp = stamp;
        stamp
    }

    /// Raises the last stamp to `at` (seed data written with historical times).
    pub fn observe(&mut self, at: Stamp) {
        self.last_stamp = self.last_stamp.max(at);
    }

    pub fn next_counter(&mut self, name: &str) -> u64 {
        let counter = self.counters.entry(name.to_string()).or_default();
        *counter += 1;
        *counter
    }

    /// Rebuilds every entity's derived indexes (after a state file is read).
    pub fn rebuild_indexes(&mut self) {
        for entity in self.systems.values_mut().flat_map(BTreeMap::values_mut) {
            entity.rebuild_indexes();
        }
    }

    /// True when no system holds any record or tombstone.
    pub fn is_empty(&self) -> bool {
        self.systems
            .values()
            .flat_map(|entities| entities.values())
            .all(|entity| entity.records.is_empty() && entity.tombstones.is_empty())
    }
}

/// A random version-4 UUID in its lower-case text form.
pub fn uuid_v4(rng: &mut fastrand::Rng) -> String {
    let mut bytes = [0u8; 16];
    for byte in &mut bytes {
        *byte = rng.u8(..);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// `2024-05-01T12:00:00.123Z`: RFC 3339 with milliseconds, as the in-house systems write it.
pub fn rfc3339(at: Stamp) -> String {
    datetime(at, "Z")
}

/// `2024-11-07T20:35:13.000+0000`: the form Keap v1 and Salesforce write.
pub fn offset_datetime(at: Stamp) -> String {
    datetime(at, "+0000")
}

/// `YYYY-MM-DDThh:mm:ss.mmm` and `zone`, as chrono's `%Y-%m-%dT%H:%M:%S%.3f` writes it, but
/// digit by digit: every rendered record carries two or three of these, and chrono reads
/// its format string again on every call. Years chrono writes otherwise (before 0, after
/// 9999) are left to chrono.
fn datetime(at: Stamp, zone: &str) -> String {
    use chrono::{Datelike as _, Timelike as _};
    let moment = chrono::DateTime::from_timestamp_millis(at).unwrap_or_default();
    let year = moment.year();
    if !(0..=9999).contains(&year) {
        return format!("{}{zone}", moment.format("%Y-%m-%dT%H:%M:%S%.3f"));
    }
    let mut out = String::with_capacity(24 + zone.len());
    push_digits(&mut out, year as u32, 4);
    out.push('-');
    push_digits(&mut out, moment.month(), 2);
    out.push('-');
    push_digits(&mut out, moment.day(), 2);
    out.push('T');
    push_digits(&mut out, moment.hour(), 2);
    out.push(':');
    push_digits(&mut out, moment.minute(), 2);
    out.push(':');
    push_digits(&mut out, moment.second(), 2);
    out.push('.');
    // A leap second's millisecond count runs past 999; chrono writes it as it is.
    push_digits(&mut out, moment.timestamp_subsec_millis(), 3);
    out.push_str(zone);
    out
}

/// `value` in decimal, padded with zeros to `width` digits (more when it needs more).
pub(crate) fn push_digits(out: &mut String, value: u32, width: usize) {
    let mut digits = [0u8; 10];
    let mut rest = value;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for _ in len..width {
        out.push('0');
    }
    for digit in digits[..len].iter().rev() {
        out.push(char::from(*digit));
    }
}

/// Parses an RFC 3339 instant (`Z` or `+hh:mm`) to a stamp.
pub fn parse_rfc3339(text: &str) -> Option<Stamp> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|at| at.timestamp_millis())
}

/// Parses the instants Keap and Salesforce accept: RFC 3339, or `+hhmm` offsets
/// (`2024-11-07T20:35:13.000+0000`).
pub fn parse_lenient_datetime(text: &str) -> Option<Stamp> {
    let text = text.trim();
    parse_rfc3339(text).or_else(|| {
        ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"]
            .iter()
            .find_map(|format| chrono::DateTime::parse_from_str(text, format).ok())
            .map(|at| at.timestamp_millis())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn fields(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn stamps_never_repeat_or_go_backwards() {
        let clock = Clock::default();
        let mut store = Store::default();
        store.observe(clock.now() + 60_000);
        let first = store.stamp(&clock);
        let second = store.stamp(&clock);
        assert!(second > first);
        assert!(first > clock.now());
    }

    #[test]
    fn unique_keys_ignore_case_and_are_released_by_deletes() {
        let mut entity = EntityStore::default();
        entity.set_unique(&["email"]);
        let record = entity.new_record("1".into(), fields(json!({"email": "Ann@Example.com"})), 1);
        entity.put(record);
        let duplicate = fields(json!({"email": " ann@example.COM"}));
        assert_eq!(
            entity.unique_conflict(&duplicate, None),
            Some("email".to_string())
        );
        assert_eq!(entity.unique_conflict(&duplicate, Some("1")), None);
        assert!(entity.soft_delete("1", 2));
        assert_eq!(entity.unique_conflict(&duplicate, None), None);
    }

    #[test]
    fn hard_deletes_leave_tombstones_and_change_log_entries() {
        let mut entity = EntityStore::default();
        entity.log_changes();
        let record = entity.new_record("7".into(), Map::new(), 10);
        entity.put(record);
        assert!(entity.remove("7", 20).is_some());
        assert!(entity.get("7").is_none());
        assert_eq!(
            entity.tombstones,
            vec![Tombstone {
                id: "7".into(),
                deleted_at: 20
            }]
        );
        let kinds: Vec<ChangeKind> = entity.changes.iter().map(|change| change.kind).collect();
        assert_eq!(kinds, vec![ChangeKind::Created, ChangeKind::Deleted]);
    }

    #[test]
    fn uuids_are_version_4() {
        // The same random bytes give the same text as before (seed data stays the same).
        let mut rng = fastrand::Rng::with_seed(1);
        let mut again = fastrand::Rng::with_seed(1);
        for _ in 0..100 {
            let mut bytes = [0u8; 16];
            for byte in &mut bytes {
                *byte = again.u8(..);
            }
            bytes[6] = (bytes[6] & 0x0f) | 0x40;
            bytes[8] = (bytes[8] & 0x3f) | 0x80;
            let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            let expected = format!(
                "{}-{}-{}-{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..32]
            );
            assert_eq!(uuid_v4(&mut rng), expected);
        }
        let id = uuid_v4(&mut rng);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn ordered_answers_rank_and_position_across_chunks() {
        let mut ordered = Ordered::default();
        for key in (0..3_000u64).rev() {
            assert!(ordered.insert(key * 2));
        }
        assert!(!ordered.insert(10));
        assert_eq!(ordered.len(), 3_000);
        assert_eq!(ordered.rank(&0), 0);
        assert_eq!(ordered.rank(&1_001), 501);
        assert_eq!(
            ordered.iter_from(2_999).copied().collect::<Vec<_>>(),
            vec![5_998]
        );
        assert_eq!(ordered.iter_from(3_000).count(), 0);
        assert!(ordered.remove(&1_000));
        assert!(!ordered.remove(&1_000));
        assert_eq!(ordered.rank(&1_002), 500);
    }

    #[test]
    fn listings_page_by_offset_and_after_a_key() {
        let mut entity = EntityStore::default();
        for at in 1..=10 {
            let record = entity.new_record(at.to_string(), Map::new(), at * 100);
            entity.put(record);
        }
        let listing = Listing::range(&entity, Sort::Touched, false, Some(300), Some(800), false);
        assert_eq!(listing.len(), 6);
        let ids = |records: Vec<&Record>| -> Vec<String> {
            records.iter().map(|record| record.id.clone()).collect()
        };
        assert_eq!(ids(listing.slice(1, 3)), vec!["4", "5"]);
        assert_eq!(listing.position_after((500, 5)), 3);
        let descending = Listing::range(&entity, Sort::Touched, false, None, None, true);
        assert_eq!(ids(descending.slice(0, 2)), vec!["10", "9"]);
        assert_eq!(ids(descending.slice(9, 20)), vec!["1"]);
    }

    /// One step of a random history of an entity.
    #[derive(Debug, Clone)]
    enum Step {
        Create {
            at: i64,
            tag: u8,
        },
        Update {
            pick: usize,
            at: i64,
            touch_only: bool,
            tag: u8,
        },
        SoftDelete {
            pick: usize,
            at: i64,
        },
        Remove {
            pick: usize,
            at: i64,
        },
        Purge,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..50i64, 0..4u8).prop_map(|(at, tag)| Step::Create { at, tag }),
            3 => (any::<usize>(), 0..50i64, any::<bool>(), 0..4u8)
                .prop_map(|(pick, at, touch_only, tag)| Step::Update { pick, at, touch_only, tag }),
            1 => (any::<usize>(), 0..50i64).prop_map(|(pick, at)| Step::SoftDelete { pick, at }),
            1 => (any::<usize>(), 0..50i64).prop_map(|(pick, at)| Step::Remove { pick, at }),
            1 => Just(Step::Purge),
        ]
    }

    fn replay(steps: &[Step]) -> EntityStore {
        let mut entity = EntityStore::default();
        entity.set_lookup(&["tag"], normalise_key);
        for (index, step) in steps.iter().enumerate() {
            let ids: Vec<String> = entity.records.keys().cloned().collect();
            let pick = |pick: &usize| (!ids.is_empty()).then(|| ids[pick % ids.len()].clone());
            match step {
                Step::Create { at, tag } => {
                    let record = entity.new_record(
                        format!("{}", 1_000 - index),
                        fields(json!({"tag": format!("T{tag}")})),
                        *at,
                    );
                    entity.put(record);
                }
                Step::Update {
                    pick: chosen,
                    at,
                    touch_only,
                    tag,
                } => {
                    if let Some(mut record) = pick(chosen).and_then(|id| entity.get(&id).cloned()) {
                        record.touched = *at;
                        if !touch_only {
                            record.modified = *at;
                        }
                        record.fields.insert("tag".into(), json!(format!("T{tag}")));
                        entity.put(record);
                    }
                }
                Step::SoftDelete { pick: chosen, at } => {
                    if let Some(id) = pick(chosen) {
                        entity.soft_delete(&id, *at);
                    }
                }
                Step::Remove { pick: chosen, at } => {
                    if let Some(id) = pick(chosen) {
                        entity.remove(&id, *at);
                    }
                }
                Step::Purge => entity.purge_deleted(),
            }
        }
        entity
    }

    fn seqs(records: &[&Record]) -> Vec<u64> {
        records.iter().map(|record| record.seq).collect()
    }

    proptest::proptest! {
        #[test]
        fn ordered_agrees_with_a_btree_set(ops in proptest::collection::vec((proptest::prelude::any::<bool>(), 0..3_000u32), 0..4_000), probe in 0..3_100u32) {
            let mut ordered = Ordered::default();
            let mut reference = std::collections::BTreeSet::new();
            for (insert, key) in ops {
                if insert {
                    proptest::prop_assert_eq!(ordered.insert(key), reference.insert(key));
                } else {
                    proptest::prop_assert_eq!(ordered.remove(&key), reference.remove(&key));
                }
            }
            proptest::prop_assert_eq!(ordered.len(), reference.len());
            proptest::prop_assert_eq!(ordered.rank(&probe), reference.range(..probe).count());
            let position = probe as usize % (reference.len() + 1);
            let from: Vec<u32> = ordered.iter_from(position).copied().collect();
            let expected: Vec<u32> = reference.iter().skip(position).copied().collect();
            proptest::prop_assert_eq!(from, expected);
        }

        /// The indexed listings give what scanning every record gives, after any history of
        /// creates, updates (some moving only the change stamp), soft and hard deletes and
        /// purges; so do indexes rebuilt as after reading a state file.
        #[test]
        fn indexed_listings_equal_scans(steps in proptest::collection::vec(step(), 0..120), low in 0..50i64, high in 0..50i64, offset in 0..40usize, descending in proptest::prelude::any::<bool>()) {
            let mut entity = replay(&steps);
            for rebuilt in [false, true] {
                if rebuilt {
                    entity.rebuild_indexes();
                }
                for include_deleted in [false, true] {
                    proptest::prop_assert_eq!(
                        seqs(&entity.by_change(include_deleted)),
                        seqs(&entity.by_change_scan(include_deleted))
                    );
                    let listing = Listing::range(&entity, Sort::Touched, include_deleted, Some(low), Some(high), false);
                    let expected: Vec<&Record> = entity
                        .by_change_scan(include_deleted)
                        .into_iter()
                        .filter(|record| record.touched >= low && record.touched <= high)
                        .collect();
                    proptest::prop_assert_eq!(listing.len(), expected.len());
                    proptest::prop_assert_eq!(seqs(&listing.slice(offset, offset + 7)), seqs(&expected.iter().skip(offset).take(7).copied().collect::<Vec<_>>()));
                    let after = (low, offset as u64);
                    proptest::prop_assert_eq!(listing.position_after(after), expected.partition_point(|record| (record.touched, record.seq) <= after));
                }
                for sort in SORTS {
                    let listing = Listing::range(&entity, sort, false, Some(low), None, descending);
                    let mut expected: Vec<&Record> = entity
                        .records
                        .values()
                        .filter(|record| record.is_live() && sort.key(record).0 >= low)
                        .collect();
                    expected.sort_by_key(|record| sort.key(record));
                    if descending {
                        expected.reverse();
                    }
                    proptest::prop_assert_eq!(seqs(&listing.slice(0, usize::MAX)), seqs(&expected));
                }
                proptest::prop_assert_eq!(entity.modified_is_touched(), entity.records.values().all(|record| record.modified == record.touched));
                for tag in 0..4 {
                    let value = json!(format!("t{tag}"));
                    let found = entity.lookup("tag", &value).unwrap_or_default();
                    let mut expected: Vec<&Record> = entity
                        .records
                        .values()
                        .filter(|record| record.fields.get("tag") == Some(json!(format!("T{tag}"))))
                        .collect();
                    expected.sort_by_key(|record| record.seq);
                    proptest::prop_assert_eq!(seqs(&found), seqs(&expected));
                }
            }
        }
    }

    #[test]
    fn datetimes_are_written_as_chrono_writes_them() {
        let chrono_form = |at: Stamp, format: &str| {
            chrono::DateTime::from_timestamp_millis(at)
                .unwrap_or_default()
                .format(format)
                .to_string()
        };
        let mut stamps = vec![
            0,
            1,
            999,
            -1,
            -86_400_001,
            951_782_400_000,     // 2000-02-29
            1_731_011_713_217,   // 2024-11-07
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000, // 10000-01-01
            -62_167_219_200_001, // just before year 0
            i64::MAX,
            i64::MIN,
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        stamps.extend((0..2_000).map(|_| rng.i64(-70_000_000_000_000..300_000_000_000_000)));
        for at in stamps {
            assert_eq!(
                rfc3339(at),
                chrono_form(at, "%Y-%m-%dT%H:%M:%S%.3fZ"),
                "{at}"
            );
            assert_eq!(
                offset_datetime(at),
                chrono_form(at, "%Y-%m-%dT%H:%M:%S%.3f+0000"),
                "{at}"
            );
        }
    }

    #[test]
    fn datetime_formats_round_trip() {
        let at = 1_731_011_713_217;
        assert_eq!(offset_datetime(at), "2024-11-07T20:35:13.217+0000");
        assert_eq!(rfc3339(at), "2024-11-07T20:35:13.217Z");
        assert_eq!(
            parse_lenient_datetime("2024-11-07T20:35:13.217+0000"),
            Some(at)
        );
        assert_eq!(parse_rfc3339("2024-11-07T21:35:13.217+01:00"), Some(at));
        assert_eq!(parse_rfc3339("2024-11-07T20:35:13.217+0000"), None);
    }
}
