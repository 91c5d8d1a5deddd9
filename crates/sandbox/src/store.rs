//! The simulators' shared in-memory store: records per system and entity, the monotonic
//! server clock, id generation, modified times, tombstones, change logs and unique keys.
//!
//! The store knows nothing about HTTP or any system's wire format: each simulator renders
//! its records from what is kept here. Everything in [`Store`] is serialisable, so the
//! whole simulated world can be written to a state file and read back.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    pub fields: Map<String, Value>,
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
    /// `(field, normalised value) -> id` for the unique fields.
    #[serde(skip)]
    unique_index: HashMap<(String, String), String>,
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
        self.unique_index.clear();
        let entries: Vec<(String, String, String)> = self
            .records
            .values()
            .filter(|record| record.is_live())
            .flat_map(|record| {
                self.unique.iter().filter_map(|field| {
                    let key = normalise_key(record.fields.get(field)?)?;
                    Some((field.clone(), key, record.id.clone()))
                })
            })
            .collect();
        for (field, key, id) in entries {
            self.unique_index.insert((field, key), id);
        }
    }

    /// The first unique field whose value in `fields` is held by another live record.
    pub fn unique_conflict(
        &self,
        fields: &Map<String, Value>,
        own_id: Option<&str>,
    ) -> Option<String> {
        self.unique.iter().find_map(|field| {
            let key = normalise_key(fields.get(field)?)?;
            let holder = self.unique_index.get(&(field.clone(), key))?;
            (Some(holder.as_str()) != own_id).then(|| field.clone())
        })
    }

    fn unindex(&mut self, id: &str) {
        if let Some(record) = self.records.get(id) {
            let keys: Vec<(String, String)> = self
                .unique
                .iter()
                .filter_map(|field| {
                    Some((field.clone(), normalise_key(record.fields.get(field)?)?))
                })
                .collect();
            for key in keys {
                if self.unique_index.get(&key).map(String::as_str) == Some(id) {
                    self.unique_index.remove(&key);
                }
            }
        }
    }

    fn index(&mut self, id: &str) {
        if let Some(record) = self.records.get(id).filter(|record| record.is_live()) {
            let keys: Vec<(String, String)> = self
                .unique
                .iter()
                .filter_map(|field| {
                    Some((field.clone(), normalise_key(record.fields.get(field)?)?))
                })
                .collect();
            for key in keys {
                self.unique_index.insert(key, id.to_string());
            }
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
    pub fn new_record(&mut self, id: String, fields: Map<String, Value>, at: Stamp) -> Record {
        self.next_seq += 1;
        Record {
            id,
            seq: self.next_seq,
            number: None,
            created: at,
            modified: at,
            touched: at,
            deleted: None,
            fields,
        }
    }

    fn log(&mut self, id: &str, kind: ChangeKind, at: Stamp) {
        self.next_change += 1;
        self.changes.push(Change {
            seq: self.next_change,
            id: id.to_string(),
            kind,
            at,
        });
    }

    /// Stores a record (new or replaced), keeping the unique index and change log current.
    pub fn put(&mut self, record: Record) {
        let id = record.id.clone();
        let kind = if self.records.contains_key(&id) {
            ChangeKind::Updated
        } else {
            ChangeKind::Created
        };
        let at = record.touched;
        self.unindex(&id);
        self.records.insert(id.clone(), record);
        self.index(&id);
        self.log(&id, kind, at);
    }

    /// Removes a record for good, leaving a tombstone.
    pub fn remove(&mut self, id: &str, at: Stamp) -> Option<Record> {
        self.unindex(id);
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
        let Some(record) = self.records.get_mut(id) else {
            return false;
        };
        record.deleted = Some(at);
        record.modified = at;
        record.touched = at;
        self.log(id, ChangeKind::Deleted, at);
        true
    }

    /// Records sorted oldest change first (by `touched`, then creation order).
    pub fn by_change(&self, include_deleted: bool) -> Vec<&Record> {
        let mut records: Vec<&Record> = self
            .records
            .values()
            .filter(|record| include_deleted || record.is_live())
            .collect();
        records.sort_by_key(|record| (record.touched, record.seq));
        records
    }
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
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `2024-05-01T12:00:00.123Z`: RFC 3339 with milliseconds, as the in-house systems write it.
pub fn rfc3339(at: Stamp) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `2024-11-07T20:35:13.000+0000`: the form Keap v1 and Salesforce write.
pub fn offset_datetime(at: Stamp) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3f+0000")
        .to_string()
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
    use serde_json::json;

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
        let mut rng = fastrand::Rng::with_seed(1);
        let id = uuid_v4(&mut rng);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
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
