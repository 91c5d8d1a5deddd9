//! The records the state store keeps, as the engine sees them: links, pair states, cursors,
//! create intents, parked records, conflicts, runs and leases.
//!
//! These types know nothing about SQL; `ops` turns them into rows and back.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

pub use crate::spec::flow::Side;

/// How many characters of an offending value a parked record keeps.
pub const PARKED_VALUE_MAX_CHARS: usize = 300;
/// How many attempts (time and error) the store keeps per parked record, the latest ones.
pub const PARKED_ATTEMPTS_KEPT: usize = 10;

/// A new time-ordered id: 26 characters of Crockford base32, the first ten of which encode
/// the milliseconds since the Unix epoch (so ids sort by creation time), the rest 80 random
/// bits.
pub(crate) fn new_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = u128::try_from(Utc::now().timestamp_millis()).unwrap_or(0) & ((1 << 48) - 1);
    let random = (u128::from(fastrand::u64(..)) << 16) | u128::from(fastrand::u16(..));
    let mut bits = (millis << 80) | random;
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(bits & 31) as usize];
        bits >>= 5;
    }
    out.iter().map(|&byte| char::from(byte)).collect()
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id read back from the store or from the engine's own records.
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_owned())
            }
        }
    };
}

string_id!(
    /// The id that records of every system share when they are the same real-world thing
    /// (of one identity type). Created by [`crate::store::Store::new_global_id`].
    GlobalId
);
string_id!(
    /// The id of a recorded create intent.
    IntentId
);
string_id!(
    /// The id of a run.
    RunId
);
string_id!(
    /// The id of a recorded conflict.
    ConflictId
);

/// A record of one system: system name, entity name and the record's id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RecordKey {
    pub system: String,
    pub entity: String,
    pub id: String,
}

impl RecordKey {
    pub fn new(
        system: impl Into<String>,
        entity: impl Into<String>,
        id: impl Into<String>,
    ) -> Self {
        RecordKey {
            system: system.into(),
            entity: entity.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.system, self.entity, self.id)
    }
}

/// How a link came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkOrigin {
    /// An existing counterpart was found by the mapping's match keys.
    MatchKey,
    /// The engine created the counterpart.
    Create,
    /// A user linked the records by hand.
    Manual,
}

/// A record attached to a global id of an identity type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    pub identity: String,
    pub global_id: GlobalId,
    pub record: RecordKey,
    pub origin: LinkOrigin,
    pub created_at: DateTime<Utc>,
}

/// Why a link was refused: it would give a record a second global id of one identity type,
/// or a global id a second record in one entity.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LinkConflict {
    /// The record is already linked to another global id of this identity type.
    #[error("record {record} is already linked to {identity} {existing}")]
    RecordLinked {
        identity: String,
        record: RecordKey,
        existing: GlobalId,
    },
    /// The global id already has another record in this system's entity.
    #[error("{identity} {global_id} is already linked to record {existing}")]
    GlobalIdTaken {
        identity: String,
        global_id: GlobalId,
        existing: RecordKey,
    },
}

/// What the engine last saw of one side of a linked pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SideSeen {
    /// The hash of the side's mapped content when it was last read or written.
    pub hash: Option<String>,
    /// The side's own modification time then, when its API has one.
    pub modified_at: Option<DateTime<Utc>>,
}

/// The state of one linked pair in one mapping: the base of its next three-way merge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairState {
    pub mapping: String,
    pub global_id: GlobalId,
    pub source_id: String,
    pub target_id: String,
    /// The canonical mapped fields as last synced.
    pub base: Value,
    pub base_hash: String,
    pub source: SideSeen,
    pub target: SideSeen,
    pub synced_at: DateTime<Utc>,
}

impl PairState {
    /// The pair's record on `side`.
    pub fn id(&self, side: Side) -> &str {
        match side {
            Side::Source => &self.source_id,
            Side::Target => &self.target_id,
        }
    }

    /// What the engine last saw or wrote on `side`.
    pub fn seen(&self, side: Side) -> &SideSeen {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }
}

/// Where a cursor belongs: one side of one mapping, reading one system's entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CursorKey {
    pub mapping: String,
    pub side: Side,
    pub system: String,
    pub entity: String,
}

/// A stored cursor: the connector's serialised position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cursor {
    pub key: CursorKey,
    pub position: String,
    pub updated_at: DateTime<Utc>,
}

/// A create the engine is about to send, recorded first so that a crash cannot duplicate it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewIntent {
    pub mapping: String,
    /// The side the record is created on.
    pub side: Side,
    /// The id of the record being copied, on the other side.
    pub source_record_id: String,
    pub global_id: GlobalId,
    /// The match key values the created record will carry, to find it after a crash.
    pub match_values: Value,
    pub payload_hash: String,
}

/// Where a create intent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IntentState {
    /// Recorded; the create may or may not have reached the system.
    Pending,
    /// The record was created (or found) and linked.
    Done,
    /// The create did not happen and will not be retried under this intent.
    Abandoned,
}

/// A recorded create intent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateIntent {
    pub id: IntentId,
    pub mapping: String,
    pub side: Side,
    pub source_record_id: String,
    pub global_id: GlobalId,
    pub match_values: Value,
    pub payload_hash: String,
    pub state: IntentState,
    /// The id of the created record, once done.
    pub created_record_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Why a record is parked; the store adds the attempt count and times.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Park {
    pub mapping: String,
    /// The side the record was read from.
    pub side: Side,
    pub record_id: String,
    pub reason: String,
    /// The rule or field at fault, when there is one.
    pub field: Option<String>,
    /// The offending value; the store keeps its first [`PARKED_VALUE_MAX_CHARS`] characters.
    pub value: Option<String>,
    /// The record waits to be deleted: the sync decided to delete it (its counterpart was
    /// deleted) and its system refused. Its pair stays linked until the delete lands.
    pub deleting: bool,
    /// Not tried again before this time (`None`: on the next run).
    pub retry_at: Option<DateTime<Utc>>,
}

/// A parked record as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParkedRecord {
    pub mapping: String,
    pub side: Side,
    pub record_id: String,
    pub reason: String,
    pub field: Option<String>,
    pub value: Option<String>,
    /// How many times the record was parked (1 after the first time).
    pub attempts: u32,
    pub first_parked_at: DateTime<Utc>,
    pub last_tried_at: DateTime<Utc>,
    /// When an operator set the record aside (`tether parked skip`); `None` while it is
    /// retried on every run.
    pub skipped_at: Option<DateTime<Utc>>,
    /// The hash of the record's content when it was set aside: the engine leaves it alone
    /// while its content hashes the same.
    pub skipped_hash: Option<String>,
    /// The record waits to be deleted (see [`Park::deleting`]).
    pub deleting: bool,
    /// Not tried again before this time; `None`: on the next run.
    pub retry_at: Option<DateTime<Utc>>,
}

impl ParkedRecord {
    /// Whether an operator set the record aside.
    pub fn is_skipped(&self) -> bool {
        self.skipped_at.is_some()
    }

    /// Whether the record is due to be tried on a run at `now`.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        !self.is_skipped() && self.retry_at.is_none_or(|at| at <= now)
    }
}

/// One attempt at a parked record: when, and what went wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParkAttempt {
    pub mapping: String,
    pub side: Side,
    pub record_id: String,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// A record whose counterpart was deleted and whose pair was forgotten (the `unlink` delete
/// policy): it is not created again on the other side while its mapped content is the one
/// recorded here.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unlinked {
    pub mapping: String,
    pub side: Side,
    pub record_id: String,
    /// The hash of the record's mapped fields when the pair was forgotten.
    pub content_hash: String,
    pub unlinked_at: DateTime<Utc>,
}

/// What a write did to a record, as the change log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HistoryAction {
    /// The record was created from its counterpart.
    Create,
    /// Fields of the record were updated.
    Update,
    /// The record was deleted because its counterpart was.
    Delete,
    /// A field took the value an operator chose for a held conflict.
    Resolve,
    /// The record was compared again whole and repaired.
    Resync,
}

/// One field of a write: its value before and after, and why it was written.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct HistoryChange {
    /// The field, by the mapping's target path (the canonical name on both sides).
    pub field: String,
    /// `None` when the record had no value before (a create).
    pub old: Option<Value>,
    /// `None` when the record has none after (a delete).
    pub new: Option<Value>,
    /// Why: "create from keap companies 42", "update from the other side", "conflict
    /// resolution (newest-wins): ...", "manual resolve: ...", "delete: ...".
    pub why: String,
}

/// A write to record in the change log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewHistory {
    pub run_id: Option<RunId>,
    pub mapping: String,
    pub identity: String,
    pub global_id: GlobalId,
    /// The record written.
    pub record: RecordKey,
    pub action: HistoryAction,
    pub changes: Vec<HistoryChange>,
}

/// A write as the change log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// A time-ordered id (its first ten characters are the millisecond it was written).
    pub id: String,
    pub at: DateTime<Utc>,
    pub run_id: Option<RunId>,
    pub mapping: String,
    pub identity: String,
    pub global_id: GlobalId,
    pub record: RecordKey,
    pub action: HistoryAction,
    pub changes: Vec<HistoryChange>,
}

/// A field changed on both sides to different values, and how it was decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewConflict {
    pub run_id: RunId,
    pub mapping: String,
    pub global_id: GlobalId,
    pub field: String,
    pub source_value: Value,
    pub target_value: Value,
    /// The last synced value, when the pair had one.
    pub base_value: Option<Value>,
    /// What decided (`newest-wins`, `source-wins`, `tie-breaker`, ...), or why it is held.
    pub resolution: String,
    /// The side whose value was kept; `None` for a conflict held for a person to decide.
    pub winner: Option<Side>,
}

/// Where a conflict stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictState {
    /// The mapping's policy decided it when it was recorded.
    Decided,
    /// Held (the `manual` policy): the field is left as it is on both sides until a person
    /// decides.
    Held,
    /// A person decided; the next run of the mapping writes the choice.
    Resolved,
    /// The choice was written.
    Applied,
}

/// What a person chose for a held conflict.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "take", content = "value", rename_all = "kebab-case")]
pub enum Choice {
    /// The source's value, as it is when the choice is written.
    Source,
    /// The target's value, as it is when the choice is written.
    Target,
    /// This value, in the mapping's canonical terms (as the conflict shows the sides').
    Value(Value),
}

/// A recorded conflict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    pub id: ConflictId,
    pub run_id: RunId,
    pub mapping: String,
    pub global_id: GlobalId,
    pub field: String,
    pub source_value: Value,
    pub target_value: Value,
    pub base_value: Option<Value>,
    pub resolution: String,
    /// `None` while held, and for a choice of a value of neither side.
    pub winner: Option<Side>,
    pub at: DateTime<Utc>,
    pub state: ConflictState,
    pub choice: Option<Choice>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub applied_at: Option<DateTime<Utc>>,
}

/// What a run covers and who runs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewRun {
    pub flows: Vec<String>,
    pub mappings: Vec<String>,
    /// The worker running it (`tether serve`), if any.
    pub worker: Option<String>,
    /// What started it (`schedule`, `api`, `webhook`, `resync`), when the caller says.
    pub trigger: Option<String>,
}

/// An incident `tether serve` alerted its webhooks about and has not seen clear yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertIncident {
    /// What the incident is, stable across runs (`run-failed`, `auth:keap`, ...).
    pub incident: String,
    /// Its kind (`run-failed`, `circuit-breaker`, `auth`, `allowance`, `parked`).
    pub kind: String,
    /// What it is about: a mapping, a system, or the server.
    pub subject: String,
    /// The message the alert said.
    pub message: String,
    pub opened_at: DateTime<Utc>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    /// Every selected mapping ran; parked records do not make a run fail.
    Ok,
    /// The run stopped on an error.
    Failed,
    /// A circuit breaker stopped the run (too many failures in a row).
    CircuitBreaker,
    /// A user or a shutdown stopped the run.
    Cancelled,
}

/// A run, finished or not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: RunId,
    pub flows: Vec<String>,
    pub mappings: Vec<String>,
    pub worker: Option<String>,
    /// What started it, when recorded (`resync`, `schedule`, `api`, `webhook`).
    pub trigger: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `None` while the run is going on (or when it died without finishing).
    pub outcome: Option<RunOutcome>,
    pub summary: Option<Value>,
}

/// A mapping held by one worker until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub mapping: String,
    pub worker: String,
    /// When this worker took the lease (renewals keep it).
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The state of every mapping and every parked record, as `tether status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub mappings: Vec<MappingStatus>,
    pub parked: Vec<ParkedRecord>,
}

/// What `tether status` shows for one mapping.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappingStatus {
    pub mapping: String,
    /// Linked pairs with a base snapshot.
    pub pairs: u64,
    pub parked: u64,
    pub open_intents: u64,
    pub last_run: Option<Run>,
    pub cursors: Vec<Cursor>,
}

macro_rules! text_enum {
    ($name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        impl $name {
            /// The name stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }

            pub(crate) fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

text_enum!(LinkOrigin { MatchKey = "match-key", Create = "create", Manual = "manual" });
text_enum!(HistoryAction {
    Create = "create",
    Update = "update",
    Delete = "delete",
    Resolve = "resolve",
    Resync = "resync",
});
text_enum!(ConflictState {
    Decided = "decided",
    Held = "held",
    Resolved = "resolved",
    Applied = "applied",
});
text_enum!(IntentState { Pending = "pending", Done = "done", Abandoned = "abandoned" });
text_enum!(RunOutcome {
    Ok = "ok",
    Failed = "failed",
    CircuitBreaker = "circuit-breaker",
    Cancelled = "cancelled",
});

pub(crate) fn side_str(side: Side) -> &'static str {
    match side {
        Side::Source => "source",
        Side::Target => "target",
    }
}

pub(crate) fn parse_side(text: &str) -> Option<Side> {
    match text {
        "source" => Some(Side::Source),
        "target" => Some(Side::Target),
        _ => None,
    }
}

/// The first `max` characters of `value`, on a character boundary.
pub(crate) fn cut(value: &str, max: usize) -> &str {
    match value.char_indices().nth(max) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_26_base32_characters_and_sort_by_time() {
        let first = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_id();
        assert_eq!(first.len(), 26);
        assert!(first.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(first < second, "{first} should sort before {second}");
    }

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("héllo", 2), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }

    #[test]
    fn enums_round_trip_through_their_stored_names() {
        for outcome in [
            RunOutcome::Ok,
            RunOutcome::Failed,
            RunOutcome::CircuitBreaker,
            RunOutcome::Cancelled,
        ] {
            assert_eq!(RunOutcome::parse(outcome.as_str()), Some(outcome));
        }
        for side in [Side::Source, Side::Target] {
            assert_eq!(parse_side(side_str(side)), Some(side));
        }
        assert_eq!(LinkOrigin::parse("somewhere"), None);
    }
}
