//! The engine: one run over the selected mappings, in dependency order, repeated in passes
//! until nothing changes. (Over 1,000 lines: the run loop, the engine's vocabulary and their
//! unit tests.)
//!
//! One pass of one mapping:
//! 1. Read both sides from their cursors (changes only, where the API allows), deletions
//!    too, and retry the mapping's parked records.
//! 2. Resolve create intents left open by a crash: the record was created if it can be found
//!    by its match values (or its content); then it is linked, otherwise the intent is
//!    abandoned and the create happens again.
//! 3. Sort the records into linked pairs (counterpart found through the global id, across
//!    flows) and unlinked records, which are matched by their match keys (one candidate:
//!    link; several: park, never guess; none: create).
//! 4. Merge each pair three ways ([`crate::sync::merge`]) and plan the writes; apply the
//!    delete policy to deleted records.
//! 5. Stop before writing if the writes would overwrite or delete more than the mapping's
//!    `max_change_share` of its linked pairs (the circuit breaker).
//! 6. Write: creates through recorded intents, updates, deletes, each batch followed by one
//!    store transaction (links, pair states, intents, parked records), so a crash leaves no
//!    half-written state and no duplicate. A record is read again just before its update;
//!    one edited since it was read is left for the next read (no system here has conditional
//!    writes). Then the cursors move.
//!
//! Between batches the run checks its [`crate::sync::control`]: a cancelled run stops (the
//! mapping keeps its old cursors), and under leases a worker that lost its lease stops
//! writing that identity.
//!
//! This file holds the run (passes, leases, cancel) and the engine's vocabulary (pair plans,
//! bodies, hashes); `read.rs` reads a side and the links it needs (step 1), `decide.rs` is one
//! pass of one mapping (steps 2 to 5) around the pure `planner.rs` (steps 3 and 4) and
//! `plan.rs`, `write.rs` sends and records the writes (step 6).
//!
//! The engine knows systems only through the `Connector` trait and state only through the
//! store; it never imports the simulators.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::Utc;
use indexmap::IndexMap;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use crate::connector::{
    Connector, ConnectorError, Connectors, Cursor as ConnectorCursor, EntityInfo, PageReader,
    Record,
};
use crate::mapping::{
    self, Canonical, CompiledMapping, RecordError, ReferenceRequest, ResolveReference,
};
use crate::spec::flow::{Direction, MappingSpec, Side, Sides};
use crate::spec::load::Project;
use crate::spec::system::{FieldSpec, IdType};
use crate::store::{
    ConflictId, CursorKey, GlobalId, LinkOrigin, NewConflict, NewIntent, NewRun, PairState, Park,
    ParkedRecord, RecordKey, RunId, RunOutcome, SideSeen, Store, StoreError,
};
use crate::sync::control::{Cancel, LeaseOptions};
use crate::sync::merge::{self, Fields, MergePolicy, Version};
use crate::sync::order::dependency_order;
use crate::sync::report::{
    Action, EXAMPLES, FieldChange, ListedProblem, MappingReport, RunReport, SystemReport,
};

mod decide;
mod plan;
mod planner;
mod read;
pub(crate) use read::{fields_used, split_missing};
mod write;

/// Records written per batch and store transaction.
const BATCH: usize = 50;

/// Records per chunk of an initial sync's large read (`RunOptions::initial_chunk`): a few
/// pages of any API, small beside the memory of a run, large beside the cost of a chunk
/// (a few store queries and one transaction of cursors).
pub const DEFAULT_INITIAL_CHUNK: usize = 2_000;

/// What each step of one pass of one mapping knows of the run it belongs to.
#[derive(Clone, Copy)]
pub(super) struct Pass<'a> {
    pub m: &'a MappingRuntime,
    pub options: &'a RunOptions,
    pub run_id: Option<&'a RunId>,
    /// The run's last pass: records waiting for references are not carried further.
    pub last_pass: bool,
    pub run_started: chrono::DateTime<Utc>,
    /// What a resync reads again, in its first pass.
    pub resync: Option<&'a Resync>,
}
/// Rounds of link lookups for one mapping of one record (each round looks up ids the
/// record asked for and were not looked up before, so a few always suffice).
const LOOKUP_ROUNDS: usize = 8;

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("mapping `{0}` is not loaded")]
    UnknownMapping(String),
    #[error("flow `{0}` is not loaded")]
    UnknownFlow(String),
    #[error("mapping `{mapping}` has no connector for system `{system}`")]
    NoConnector { mapping: String, system: String },
    #[error("mapping `{mapping}`: {system} has no entity `{entity}`")]
    NoEntity {
        mapping: String,
        system: String,
        entity: String,
    },
    #[error(
        "mapping `{mapping}` uses {system} {entity} field(s) {fields}, which {system} does not have for this user (not in the org, or hidden by field-level security); give the integration user access or take the rule out of the mapping"
    )]
    MissingFields {
        mapping: String,
        system: String,
        entity: String,
        fields: String,
    },
    #[error("stored cursor of `{mapping}` is unreadable: {reason}")]
    BadCursor { mapping: String, reason: String },
    #[error(
        "interrupted before the next batch of `{mapping}`; its records are read again on the next run"
    )]
    Interrupted { mapping: String },
    #[error("the lease on `{mapping}` was lost to another worker; this worker stopped writing it")]
    LeaseLost { mapping: String },
}

/// What a run covers and how.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Only these flows (all when empty).
    pub flows: Vec<String>,
    /// Only these mappings (all when empty).
    pub mappings: Vec<String>,
    /// Plan only: read, decide, write nothing (no store changes either).
    pub dry_run: bool,
    /// Passes at most; a pass that writes nothing ends the run earlier.
    pub max_passes: u32,
    /// Let the circuit breaker pass.
    pub allow_mass_change: bool,
    /// The worker running this (`tether serve`).
    pub worker: Option<String>,
    /// Told what the run is doing ("pass 1: mapping-name"), for a progress line.
    pub progress: Option<Progress>,
    /// Stops the run at the next safe point when set (graceful shutdown).
    pub cancel: Option<Cancel>,
    /// Hold each mapping under a lease in the store (several workers on one store).
    pub lease: Option<LeaseOptions>,
    /// How many days the change log keeps a write; older writes are removed at the end of
    /// the run.
    pub history_days: u32,
    /// Read again and compare every mapped field with the other side, trusting no stored
    /// content hash ([`Resync`]); `None` for an ordinary run.
    pub resync: Option<Resync>,
    /// What started the run (`schedule`, `api`, `webhook`, `resync`), recorded with it.
    pub trigger: Option<String>,
    /// An initial sync reads its large side in chunks of about this many records, each
    /// decided, written and its cursor stored before the next is read (0: whole).
    pub initial_chunk: usize,
}

/// A resync: the selected mappings' records read again (the whole of each side from the
/// beginning, whatever the cursors say, or only the named records and their counterparts),
/// every mapped field compared with the other side instead of trusting the pair states'
/// content hashes, and what differs written through the same merge, guarantees and change
/// log as a run (why: `resync: ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resync {
    /// Only these records and their counterparts (without reading the sides' changes);
    /// every record of the selected mappings when empty.
    pub records: Vec<RecordKey>,
}

impl RunOptions {
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(Cancel::is_cancelled)
    }
}

/// A callback for progress messages.
#[derive(Clone)]
pub struct Progress(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            flows: Vec::new(),
            mappings: Vec::new(),
            dry_run: false,
            max_passes: 8,
            allow_mass_change: false,
            worker: None,
            progress: None,
            cancel: None,
            lease: None,
            history_days: crate::ops::history::DEFAULT_RETENTION_DAYS,
            resync: None,
            trigger: None,
            initial_chunk: DEFAULT_INITIAL_CHUNK,
        }
    }
}

/// One side of a mapping at run time.
#[derive(Clone)]
pub struct SideRuntime {
    pub system: String,
    pub entity: String,
    pub connector: Arc<dyn Connector>,
    pub info: EntityInfo,
    pub id_type: IdType,
    /// The entity's fields from its system file.
    pub fields: IndexMap<String, FieldSpec>,
    /// Re-read a record before updating it, and leave the update when it moved.
    pub verify_updates: bool,
}

/// A mapping ready to run.
pub struct MappingRuntime {
    pub name: String,
    pub flow: String,
    pub spec: MappingSpec,
    pub compiled: Arc<CompiledMapping>,
    pub source: SideRuntime,
    pub target: SideRuntime,
    /// Mappings named by reference rules.
    pub references: Vec<String>,
    /// Each rule's direction by target field (a field without a rule flows the mapping's way).
    field_directions: HashMap<String, Direction>,
    /// Target fields of `changes_only` rules.
    changes_only: HashSet<String>,
}

impl MappingRuntime {
    fn side(&self, side: Side) -> &SideRuntime {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }
    /// The lease a worker holds while it syncs this mapping: one per identity type, because
    /// mappings of one identity link records to the same global ids (a Keap company reaches
    /// the shop directly and through the ERP) and must not decide those links concurrently.
    pub fn lease_name(&self) -> String {
        format!("identity:{}", self.identity())
    }

    fn identity(&self) -> &str {
        &self.spec.identity.value
    }
}

/// The sync engine over a loaded project.
pub struct Engine {
    store: Store,
    connectors: Connectors,
    /// In dependency order.
    mappings: Vec<Arc<MappingRuntime>>,
}

/// Text that identifies the same thing on both sides: case, surrounding and repeated
/// whitespace ignored; several keys joined.
fn key_text(values: &[Option<Value>]) -> Option<String> {
    let mut parts = Vec::with_capacity(values.len());
    for value in values {
        let text = match value.as_ref()? {
            Value::String(s) => s
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase(),
            Value::Null => return None,
            other => other.to_string(),
        };
        if text.is_empty() {
            return None;
        }
        parts.push(text);
    }
    (!parts.is_empty()).then(|| parts.join("\u{1f}"))
}

/// Records of one side with their match keys.
fn keyed_records<'r>(
    compiled: &CompiledMapping,
    side: Side,
    records: Vec<&'r Record>,
) -> Vec<(&'r Record, Option<String>)> {
    records
        .into_iter()
        .map(|record| (record, match_key(compiled, side, &record.data)))
        .collect()
}

/// The match key of a record on one side of a mapping.
fn match_key(compiled: &CompiledMapping, side: Side, record: &Value) -> Option<String> {
    if compiled.match_keys.is_empty() {
        return None;
    }
    let values: Vec<Option<Value>> = compiled
        .match_keys
        .iter()
        .map(|k| {
            let path = match side {
                Side::Source => &k.source,
                Side::Target => &k.target,
            };
            path.get(record).map(|v| v.into_owned())
        })
        .collect();
    key_text(&values)
}

/// The fields of a target-shaped record that a linked pair keeps in sync: its canonical form
/// without the `create_only` rules, which fill a field when the record is created and never
/// overwrite it afterwards (so a later change of such a field is nobody's edit to merge).
fn synced_fields(compiled: &CompiledMapping, record: &Value) -> Fields {
    without_create_only(compiled, Canonical::of(compiled, record).into_fields())
}

fn without_create_only(compiled: &CompiledMapping, mut fields: Fields) -> Fields {
    for rule in compiled.rules.rules.iter().filter(|r| r.create_only) {
        fields.remove(rule.target.as_str());
    }
    fields
}

/// The body a create of `record`'s counterpart sends (as `decide_create` builds it), without
/// its empty fields (a system may fill in its own default): what a record the create made
/// holds.
fn sent_body(
    m: &MappingRuntime,
    origin: Side,
    record: &Value,
    resolver: &LinkResolver,
) -> Option<Value> {
    let mut body = match origin {
        Side::Source => mapping::apply_forward(&m.compiled, record, resolver),
        Side::Target => mapping::apply_inverse(&m.compiled, record, resolver),
    }
    .ok()?;
    shape_body(&mut body, &m.side(origin.other()).fields, None);
    if let Value::Object(fields) = &mut body {
        fields.retain(|_, value| !value.is_null());
    }
    Some(body)
}

/// What a created record is recognised by when no match key finds it: the fields its
/// create wrote. Fields whose rules flow only away from the created side are left out (the
/// system assigns them, as the ERP assigns order numbers), and so are empty ones (a system
/// may fill in its own default).
fn created_fields_hash(compiled: &CompiledMapping, on: Side, fields: &Fields) -> String {
    let away = match on {
        Side::Target => Direction::TargetToSource,
        Side::Source => Direction::SourceToTarget,
    };
    let written: Fields = fields
        .iter()
        .filter(|(path, value)| {
            !value.is_null()
                && !compiled
                    .rules
                    .rules
                    .iter()
                    .any(|r| r.target.as_str() == path.as_str() && r.direction == away)
        })
        .map(|(path, value)| (path.clone(), value.clone()))
        .collect();
    fields_hash(&written)
}

fn fields_hash(fields: &Fields) -> String {
    format!("{:016x}", mapping::canonical::hash_fields(fields))
}

/// Writes `fields` (target paths -> values) into a target-shaped record.
fn set_fields(compiled: &CompiledMapping, record: &mut Value, fields: &Fields) {
    for (path, value) in fields {
        if let Some(rule) = compiled
            .rules
            .rules
            .iter()
            .find(|r| r.target.as_str() == path)
        {
            let _ = rule.target.set(record, value.clone());
        }
    }
}

/// The body of an update of a target record from `changed` (target paths and canonical
/// values). A value inside a list item (`addresses[type=billing].city`) comes with the whole
/// list from the current record, the other items and their fields as they are, since an
/// update replaces a list whole. A value the source holds is written as the mapping produced
/// it (ids typed as the target has them, not the canonical text); other values (a base the
/// source no longer maps to) as they are.
fn target_update(
    compiled: &CompiledMapping,
    current: &Value,
    forward: &Value,
    source_fields: &Fields,
    changed: &Fields,
) -> Value {
    let mut out = Map::new();
    for path in changed.keys() {
        if let Some(rule) = compiled
            .rules
            .rules
            .iter()
            .find(|r| r.target.as_str() == path)
        {
            mapping::seed_list(&mut out, &rule.target, current);
        }
    }
    let mut out = Value::Object(out);
    for (path, value) in changed {
        let Some(rule) = compiled
            .rules
            .rules
            .iter()
            .find(|r| r.target.as_str() == path)
        else {
            continue;
        };
        let raw = (source_fields.get(path) == Some(value))
            .then(|| rule.target.get(forward).map(|v| v.into_owned()))
            .flatten()
            .unwrap_or_else(|| value.clone());
        let _ = rule.target.set(&mut out, raw);
    }
    out
}

/// Whether a source record holds what `base` (a field's synced value, canonical) reads back
/// as through `rule`: the rule's inverse of the base, compared with the record in the
/// source's own terms (numbers as numbers, text exactly).
fn holds_base(
    compiled: &CompiledMapping,
    rule: &mapping::CompiledRule,
    source: &Value,
    target: &Value,
    base: &Value,
    resolver: &LinkResolver,
) -> bool {
    let mut shaped = target.clone();
    if rule.target.set(&mut shaped, base.clone()).is_err() {
        return false;
    }
    let only: HashSet<&str> = [rule.target.as_str()].into_iter().collect();
    match mapping::apply_inverse_selected_onto(compiled, &shaped, resolver, &only, source) {
        Ok(patch) => patch.as_object().is_some_and(|o| !o.is_empty()) && holds(&patch, source),
        Err(_) => false,
    }
}

/// Whether every leaf of `patch` is what `record` holds at the same place.
fn holds(patch: &Value, record: &Value) -> bool {
    match (patch, record) {
        (Value::Object(patch), Value::Object(record)) => patch.iter().all(|(key, value)| {
            record
                .get(key)
                .map_or(value.is_null(), |inner| holds(value, inner))
        }),
        (Value::Object(patch), Value::Null) => patch.values().all(Value::is_null),
        (Value::Array(items), Value::Array(current)) => {
            items.len() == current.len() && items.iter().zip(current).all(|(a, b)| holds(a, b))
        }
        (a, b) if a == b => true,
        (a, b) => match (number_text(a), number_text(b)) {
            (Some(x), Some(y)) => match (
                x.parse::<rust_decimal::Decimal>(),
                y.parse::<rust_decimal::Decimal>(),
            ) {
                (Ok(x), Ok(y)) => x == y,
                _ => false,
            },
            _ => false,
        },
    }
}

fn number_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// Each changed field with its value before, for plans and reports.
fn field_changes(changed: &Fields, before: &Fields) -> Vec<FieldChange> {
    changed
        .iter()
        .map(|(field, after)| FieldChange {
            field: field.clone(),
            before: before.get(field).cloned(),
            after: after.clone(),
        })
        .collect()
}

/// Shapes a write body for a system: nulls are left out of fields the system does not let
/// be null (a missing reference, an empty address part), fields a create (or an update) may
/// not carry are left out, and fields the system wants with every update are copied from the
/// current record. `current` is the record being updated; `None` for a create.
fn shape_body(body: &mut Value, fields: &IndexMap<String, FieldSpec>, current: Option<&Value>) {
    if let Value::Object(map) = &mut *body {
        let creating = current.is_none();
        map.retain(|name, _| {
            fields.get(name).is_none_or(|f| {
                if creating {
                    !f.update_only
                } else {
                    !f.create_only
                }
            })
        });
    }
    fn strip(value: &mut Value, fields: &IndexMap<String, FieldSpec>) {
        let Value::Object(map) = value else { return };
        map.retain(|name, v| !(v.is_null() && fields.get(name).is_some_and(|f| !f.nullable)));
        for (name, v) in map.iter_mut() {
            let Some(nested) = fields.get(name).and_then(|f| f.fields.as_ref()) else {
                continue;
            };
            match v {
                Value::Object(_) => strip(v, nested),
                Value::Array(items) => items.iter_mut().for_each(|item| strip(item, nested)),
                _ => {}
            }
        }
    }
    strip(body, fields);
    // Bodies built on a current record carry what the system reports but does not take.
    crate::connector::strip_read_only(body, fields);
    if let (Some(current), Value::Object(map)) = (current, body) {
        for (name, _) in fields.iter().filter(|(_, f)| f.required_on_update) {
            // An object left empty by the stripping (a reference that did not resolve, such
            // as a contact's id) says nothing: the current value goes instead.
            let empty = map
                .get(name)
                .is_none_or(|v| v.as_object().is_some_and(Map::is_empty));
            if empty && let Some(value) = current.get(name) {
                map.insert(name.clone(), value.clone());
            }
        }
    }
}

/// An id to translate: (mapping, from system, id).
type IdKey = (String, String, String);

/// Translates ids through the links of other mappings.
///
/// A pass loads only the links its records ask for: an id neither loaded nor looked up yet
/// is noted as missed (and not linked, for now); the engine looks the missed ids up in the
/// store, all of a chunk's at once ([`Engine::load_missed`]), and maps again
/// ([`Engine::links_ready`]) before a mapping counts. So a record fetched later in the pass
/// (a counterpart, a record re-read before its update) is translated with the same links
/// as one read at the start.
struct LinkResolver {
    /// Nothing to look up: the mapping refers to no other by id.
    whole: bool,
    /// (mapping, from system, id) -> id on the other side.
    ids: Mutex<HashMap<IdKey, Value>>,
    /// Ids looked up in the store, linked or not.
    looked_up: Mutex<HashSet<IdKey>>,
    /// Ids asked for that were neither loaded nor looked up.
    missed: Mutex<HashSet<IdKey>>,
    /// (mapping, key path, from system, id or key value) -> key value or id on the other
    /// side, for references by key (`ref_key`), from the referenced mapping's synced values.
    keyed: Arc<KeyedRefs>,
}

/// (mapping, key path, from system, id or key value) -> key value or id on the other side.
type KeyedRefs = HashMap<(String, String, String, String), Value>;

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LinkResolver {
    /// A resolver for a mapping that refers to no other: it never looks anything up.
    fn unlinked() -> LinkResolver {
        LinkResolver {
            whole: true,
            ids: Mutex::new(HashMap::new()),
            looked_up: Mutex::new(HashSet::new()),
            missed: Mutex::new(HashSet::new()),
            keyed: Arc::default(),
        }
    }

    fn take_missed(&self) -> Vec<IdKey> {
        locked(&self.missed).drain().collect()
    }
}

impl ResolveReference for LinkResolver {
    fn resolve(&self, request: &ReferenceRequest<'_>) -> Option<Value> {
        let id = match request.id {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        match request.target_key {
            Some(key) => self
                .keyed
                .get(&(
                    request.mapping.to_owned(),
                    key.to_owned(),
                    request.from_system.to_owned(),
                    id,
                ))
                .cloned(),
            None => {
                let key = (
                    request.mapping.to_owned(),
                    request.from_system.to_owned(),
                    id,
                );
                if let Some(value) = locked(&self.ids).get(&key) {
                    return Some(value.clone());
                }
                if !self.whole && !locked(&self.looked_up).contains(&key) {
                    locked(&self.missed).insert(key);
                }
                None
            }
        }
    }
}

fn id_value(id: &str, id_type: IdType) -> Value {
    match id_type {
        IdType::Integer => id
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(id.to_owned())),
        IdType::String => Value::String(id.to_owned()),
    }
}

/// The content hashes of a pair's source and target as the systems stored a write.
type StoredHashes = (Option<String>, Option<String>);

/// A pair touched by a pass: source id, target id, and its state when it has one.
type Touched<'a> = (Option<String>, Option<String>, Option<&'a PairState>);

/// What one side of one pass read.
#[derive(Default)]
struct SideRead {
    records: IndexMap<String, Record>,
    deleted: Vec<String>,
    /// The ids of a complete full listing, when the read was one (deletions by absence).
    listed: Option<HashSet<String>>,
    /// Where the next read starts once what was read is done (written as text only when
    /// stored: a page's cursor can remember thousands of versions).
    cursor: Option<ConnectorCursor>,
    deletion_cursor: Option<String>,
    /// Listed items that could not be records, and records stamped ahead of the clock.
    malformed: Vec<ListedProblem>,
    ahead: Vec<ListedProblem>,
    /// What the run report should say about the read (a deletion feed replaced by a full
    /// listing).
    notes: Vec<String>,
    /// The side was not read: its full listing is not due yet (`full_listing_every`).
    skipped: bool,
    /// When a full listing spaced by `full_listing_every` was complete: the time to keep.
    listing_cursor: Option<String>,
    /// The read stopped at a chunk's end with more to read (`cursor` is where it stopped).
    partial: bool,
    /// The reader of a `partial` read, to go on with the next chunk.
    rest: Option<Box<dyn PageReader>>,
    /// Records carried from an earlier chunk of the pass: only candidates for the other
    /// side's matches until the last chunk (they were mapped, keyed and found unlinked then).
    carried: bool,
    /// The records were counted in the report of an earlier chunk.
    counted: bool,
    /// A lean read ([`Engine::read_side_lean`]): target records as their pair last saw
    /// them are let go as they are read, counted in `passed` (their ids in `passed_ids`
    /// where a complete listing needs them).
    lean: bool,
    passed: u64,
    passed_ids: Vec<String>,
    /// The records' ids by match key, computed once ([`SideRead::index_keys`]); an id
    /// whose record has left the read since is skipped.
    keys: Option<HashMap<String, Vec<String>>>,
}

impl SideRead {
    fn insert(&mut self, id: String, record: Record) {
        self.keys = None;
        self.records.insert(id, record);
    }

    fn remove(&mut self, id: &str) {
        self.records.shift_remove(id);
    }

    /// Computes the match key of every record once.
    fn index_keys(&mut self, compiled: &CompiledMapping, side: Side) {
        if self.keys.is_some() {
            return;
        }
        let mut keys: HashMap<String, Vec<String>> = HashMap::new();
        for record in self.records.values() {
            if let Some(key) = match_key(compiled, side, &record.data) {
                keys.entry(key).or_default().push(record.id.clone());
            }
        }
        self.keys = Some(keys);
    }

    /// The ids of the records read with match key `key` (after [`Self::index_keys`]).
    fn with_key(&self, key: &str) -> impl Iterator<Item = &String> {
        self.keys
            .as_ref()
            .and_then(|keys| keys.get(key))
            .into_iter()
            .flatten()
            .filter(|id| self.records.contains_key(id.as_str()))
    }

    /// What is carried to the next chunk: of a read carried already, all but the records
    /// `released` (matched in this chunk); of a fresh read, the records `held`. Either way
    /// with the read's cursor, stored once nothing is carried.
    fn carry(&mut self, held: &[String], released: &[String]) -> SideRead {
        if self.carried {
            if !released.is_empty() {
                let released: HashSet<&str> = released.iter().map(String::as_str).collect();
                self.records.retain(|id, _| !released.contains(id.as_str()));
            }
            return std::mem::take(self);
        }
        let held: HashSet<&str> = held.iter().map(String::as_str).collect();
        let records: IndexMap<String, Record> = self
            .records
            .iter()
            .filter(|(id, _)| held.contains(id.as_str()))
            .map(|(id, record)| (id.clone(), record.clone()))
            .collect();
        SideRead {
            records,
            cursor: self.cursor.clone(),
            carried: true,
            counted: true,
            ..SideRead::default()
        }
    }
}

/// A record that failed a rule, was refused, or waits for a referenced record.
#[derive(Clone)]
struct Parking {
    side: Side,
    id: String,
    reason: String,
    field: Option<String>,
    value: Option<String>,
}

fn parking_from(side: Side, id: &str, error: &RecordError) -> Parking {
    let first = error.errors.first();
    Parking {
        side,
        id: id.to_owned(),
        reason: error.to_string(),
        field: first.map(|e| e.rule.clone()),
        value: first.and_then(|e| e.value.clone()),
    }
}

fn parking_from_write(side: Side, id: &str, error: &ConnectorError) -> Parking {
    let api = error.api_error();
    Parking {
        side,
        id: id.to_owned(),
        reason: error.to_string(),
        field: api.and_then(|a| a.field.clone()),
        value: None,
    }
}

/// A create to send.
struct Create {
    on: Side,
    from_id: String,
    global_id: GlobalId,
    new_global: bool,
    body: Value,
    /// The canonical fields the new record will hold (the pair's first base).
    fields: Fields,
    match_values: Option<String>,
}

/// What planning a create decided.
enum Decision {
    Create(Create),
    /// The record fails a rule.
    Park(Parking),
    /// The record waits for referenced records to be linked.
    Wait(Parking),
}

/// An update to send to one side of a linked pair.
struct Update {
    on: Side,
    id: String,
    body: Value,
    changes: Vec<FieldChange>,
    /// The hash of the record's mapped content as this pass read it.
    read_hash: String,
}

/// The decisions for one linked pair.
struct PairDecision {
    global_id: GlobalId,
    source_id: String,
    target_id: String,
    base: Fields,
    source_seen: SideSeen,
    target_seen: SideSeen,
    updates: Vec<Update>,
    conflicts: Vec<merge::Conflict>,
    /// When the pair was last synced, if it existed before this pass (the circuit breaker
    /// counts pairs that existed before the run).
    synced_at: Option<chrono::DateTime<Utc>>,
    /// Linked now by match keys (links to write).
    new_links: Vec<(Side, String)>,
    new_global: bool,
    /// Held conflicts whose chosen value this plan writes, with their fields.
    applied: Vec<(ConflictId, String)>,
}

/// Pairs synced before the run whose updates would replace a value a record holds: what the
/// circuit breaker counts. Filling an empty field is not an overwrite: a value a system
/// assigned when a record was created (an order number) flows back to the origin's empty
/// field, even when the run that created the record stopped before it could.
fn overwrites(pairs: &[PairDecision], run_started: chrono::DateTime<Utc>) -> usize {
    pairs
        .iter()
        .filter(|p| p.synced_at.is_some_and(|t| t < run_started))
        .filter(|p| {
            p.updates.iter().any(|u| {
                u.changes
                    .iter()
                    .any(|c| c.before.as_ref().is_some_and(|v| !v.is_null()))
            })
        })
        .count()
}

/// Everything one pass of one mapping decided.
#[derive(Default)]
struct MappingWork {
    pairs: Vec<PairDecision>,
    creates: Vec<Create>,
    deletes: Vec<(Side, String, GlobalId)>,
    unlinks: Vec<(Side, String, GlobalId)>,
    /// Records left when their counterparts were deleted and the pair is forgotten, with the
    /// hash of their mapped fields: they are not created again while they stay so.
    forgotten: Vec<(Side, String, String)>,
    /// Records forgotten earlier that changed since, and sync again.
    revived: Vec<(Side, String)>,
    parked: Vec<Parking>,
    /// Records waiting for referenced records to be linked, with the reason they wait.
    deferred: Vec<Parking>,
    ambiguous: Vec<Action>,
    ok_ids: Vec<(Side, String)>,
    record_keys: Vec<(Side, String, Option<String>)>,
    /// Records of the held side without a counterpart, left for a later chunk of the
    /// other side (read fresh in this chunk).
    held: Vec<String>,
    /// Records carried from earlier chunks that found their match in this one.
    released: Vec<String>,
}

/// The fields of a mapping's held conflicts by global id: (conflict, field, decision).
type Decisions = HashMap<String, Vec<(ConflictId, String, merge::Decision)>>;

/// The decisions of a mapping's open conflicts: held ones are left alone, resolved ones
/// written.
fn decisions_of(open: Vec<crate::store::Conflict>) -> Decisions {
    let mut decisions = Decisions::new();
    for conflict in open {
        let decision = match (conflict.state, conflict.choice) {
            (crate::store::ConflictState::Resolved, Some(choice)) => merge::Decision::Take(choice),
            _ => merge::Decision::Held,
        };
        decisions
            .entry(conflict.global_id.as_str().to_owned())
            .or_default()
            .push((conflict.id, conflict.field, decision));
    }
    decisions
}

/// Whether a pair has a chosen value to write: it is merged even when neither side changed.
fn has_choice(decisions: &Decisions, global_id: &str) -> bool {
    decisions.get(global_id).is_some_and(|fields| {
        fields
            .iter()
            .any(|(_, _, d)| matches!(d, merge::Decision::Take(_)))
    })
}

impl Engine {
    /// Builds the engine: every compiled mapping with its connectors, in dependency order.
    pub fn new(
        project: &Project,
        plans: &IndexMap<String, Arc<CompiledMapping>>,
        connectors: Connectors,
        store: Store,
    ) -> Result<Engine, EngineError> {
        let mut runtimes: IndexMap<String, Arc<MappingRuntime>> = IndexMap::new();
        for (flow, spec) in project.mappings() {
            let name = spec.name.value.clone();
            let Some(compiled) = plans.get(&name) else {
                continue;
            };
            let side = |system: &str, entity: &str| -> Result<SideRuntime, EngineError> {
                let connector = connectors
                    .get(system)
                    .ok_or_else(|| EngineError::NoConnector {
                        mapping: name.clone(),
                        system: system.to_owned(),
                    })?;
                let info = connector
                    .entity(entity)
                    .ok_or_else(|| EngineError::NoEntity {
                        mapping: name.clone(),
                        system: system.to_owned(),
                        entity: entity.to_owned(),
                    })?;
                let entity_spec = project
                    .systems
                    .get(system)
                    .and_then(|s| s.spec.entities.get(entity))
                    .and_then(|e| e.valid());
                let id_type = entity_spec.map_or(IdType::String, |e| e.id_type);
                let fields = entity_spec.map(|e| e.fields.clone()).unwrap_or_default();
                let verify_updates = info.can_get
                    && entity_spec
                        .and_then(|e| e.update.as_ref())
                        .is_some_and(|u| u.verify);
                Ok(SideRuntime {
                    verify_updates,
                    system: system.to_owned(),
                    entity: entity.to_owned(),
                    connector,
                    info,
                    id_type,
                    fields,
                })
            };
            let source = side(&flow.spec.source.value, &spec.source.value)?;
            let target = side(&flow.spec.target.value, &spec.target.value)?;
            let references = compiled
                .references()
                .iter()
                .map(|r| r.mapping.to_owned())
                .collect::<Vec<_>>();
            runtimes.insert(
                name.clone(),
                Arc::new(MappingRuntime {
                    name,
                    flow: flow.spec.flow.value.clone(),
                    spec: spec.clone(),
                    compiled: compiled.clone(),
                    source,
                    target,
                    references,
                    field_directions: compiled
                        .rules
                        .rules
                        .iter()
                        .map(|r| (r.target.as_str().to_owned(), r.direction))
                        .collect(),
                    changes_only: compiled
                        .rules
                        .rules
                        .iter()
                        .filter(|r| r.changes_only)
                        .map(|r| r.target.as_str().to_owned())
                        .collect(),
                }),
            );
        }
        let nodes: Vec<(String, Vec<String>)> = runtimes
            .values()
            .map(|m| (m.name.clone(), m.references.clone()))
            .collect();
        let mappings = dependency_order(&nodes)
            .into_iter()
            .filter_map(|n| runtimes.get(&n).cloned())
            .collect();
        Ok(Engine {
            store,
            connectors,
            mappings,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn mappings(&self) -> &[Arc<MappingRuntime>] {
        &self.mappings
    }

    fn selected(&self, options: &RunOptions) -> Result<Vec<Arc<MappingRuntime>>, EngineError> {
        for flow in &options.flows {
            if !self.mappings.iter().any(|m| &m.flow == flow) {
                return Err(EngineError::UnknownFlow(flow.clone()));
            }
        }
        for name in &options.mappings {
            if !self
                .mappings
                .iter()
                .any(|m| &m.name == name || format!("{}/{}", m.flow, m.name) == *name)
            {
                return Err(EngineError::UnknownMapping(name.clone()));
            }
        }
        Ok(self
            .mappings
            .iter()
            .filter(|m| options.flows.is_empty() || options.flows.contains(&m.flow))
            .filter(|m| {
                options.mappings.is_empty()
                    || options
                        .mappings
                        .iter()
                        .any(|n| *n == m.name || *n == format!("{}/{}", m.flow, m.name))
            })
            .cloned()
            .collect())
    }

    /// Runs (or, with `dry_run`, plans) the selected mappings.
    pub async fn run(&self, options: &RunOptions) -> Result<RunReport, EngineError> {
        // Boxed: a run's future is large, and a debug build keeps a copy of it in the frame
        // of every function that awaits a run.
        Box::pin(self.run_passes(options)).await
    }

    async fn run_passes(&self, options: &RunOptions) -> Result<RunReport, EngineError> {
        let selected = self.selected(options)?;
        self.connectors.start_run();
        let before = self.connectors.stats();
        let mut report = RunReport {
            dry_run: options.dry_run,
            ..RunReport::default()
        };
        let run_id = if options.dry_run {
            None
        } else {
            let run = self
                .store
                .start_run(&NewRun {
                    flows: options.flows.clone(),
                    mappings: selected.iter().map(|m| m.name.clone()).collect(),
                    worker: options.worker.clone(),
                    trigger: options.trigger.clone(),
                })
                .await?;
            Some(run.id)
        };
        report.run_id = run_id.as_ref().map(|id| id.as_str().to_owned());
        let mut totals: IndexMap<String, MappingReport> = selected
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    MappingReport {
                        mapping: m.name.clone(),
                        flow: m.flow.clone(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let mut deferred: HashMap<String, Vec<(Side, String)>> = HashMap::new();
        let passes = if options.dry_run {
            1
        } else {
            options.max_passes.max(1)
        };
        let started_at = Utc::now();
        let mut failure: Option<EngineError> = None;
        let mut allowance_stops: HashMap<String, String> = HashMap::new();
        // Leases this worker took (renewed in the background while the run goes on), and
        // leases another worker holds (skipped this run).
        let leased: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let held = |name: &str| {
            leased
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .any(|n| n == name)
        };
        let mut held_elsewhere: HashSet<String> = HashSet::new();
        // Every side is read in the first pass; later passes read a side again only when the
        // run has written to its entity since the mapping last read it, so an incremental
        // run pays for each full listing (and each lookback window) once. What others change
        // during the run is read by the next run, as what they change after it.
        let mut step = 0usize;
        let mut written_at: HashMap<(String, String), usize> = HashMap::new();
        let mut read_at: HashMap<(String, Side), usize> = HashMap::new();
        let passes_done = async {
            'passes: for pass in 1..=passes {
                report.passes = pass;
                let last_pass = pass == passes;
                let mut writes = 0;
                let mut linked = 0;
                for mapping in &selected {
                    if options.cancelled() {
                        report.interrupted = true;
                        break 'passes;
                    }
                    let lease_name = mapping.lease_name();
                    if held_elsewhere.contains(&lease_name) {
                        if let Some(total) = totals.get_mut(&mapping.name) {
                            total.held_by.get_or_insert_with(|| "another worker".into());
                        }
                        continue;
                    }
                    if let (Some(lease), false) = (&options.lease, options.dry_run)
                        && !held(&lease_name)
                    {
                        match self.take_lease(&lease_name, lease).await? {
                            None => leased
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(lease_name.clone()),
                            Some(holder) => {
                                debug!(mapping = %mapping.name, %holder, "leased to another worker; skipped");
                                if let Some(total) = totals.get_mut(&mapping.name) {
                                    total.held_by = Some(holder);
                                }
                                held_elsewhere.insert(lease_name);
                                continue;
                            }
                        }
                    }
                    if let Some(progress) = &options.progress {
                        (progress.0)(&format!("pass {pass}: {}", mapping.name));
                    }
                    let carry = deferred.remove(&mapping.name).unwrap_or_default();
                    let entity_of = |side: Side| {
                        let rt = mapping.side(side);
                        (rt.system.clone(), rt.entity.clone())
                    };
                    // A resync of named records reads those records only, never the sides'
                    // changes (their cursors stay where they are).
                    let records_only = options
                        .resync
                        .as_ref()
                        .is_some_and(|r| !r.records.is_empty());
                    let fresh = [Side::Source, Side::Target].map(|side| {
                        !records_only
                            && read_at
                                .get(&(mapping.name.clone(), side))
                                .is_none_or(|read| {
                                    written_at
                                        .get(&entity_of(side))
                                        .is_some_and(|written| written >= read)
                                })
                    });
                    for (side, fresh) in [Side::Source, Side::Target].into_iter().zip(fresh) {
                        if fresh {
                            read_at.insert((mapping.name.clone(), side), step);
                        }
                    }
                    let pass_of = Pass {
                        m: mapping,
                        options,
                        run_id: run_id.as_ref(),
                        last_pass,
                        run_started: started_at,
                        // What a resync reads again is read in the first pass; later passes
                        // go on as a run does.
                        resync: options.resync.as_ref().filter(|_| pass == 1),
                    };
                    // Boxed: a pass's future is large, and a debug build keeps it inline in
                    // every frame that polls it.
                    let outcome = Box::pin(self.sync_mapping(
                        &pass_of,
                        carry,
                        Sides(fresh),
                        &mut report.actions,
                    ))
                    .await;
                    let wrote = match &outcome {
                        Ok((r, _)) => [
                            r.created_source + r.updated_source + r.deleted_source > 0,
                            r.created_target + r.updated_target + r.deleted_target > 0,
                        ],
                        Err(_) => [true, true],
                    };
                    for (side, wrote) in [Side::Source, Side::Target].into_iter().zip(wrote) {
                        if wrote {
                            written_at.insert(entity_of(side), step);
                        }
                    }
                    step += 1;
                    match outcome {
                        Ok((pass_report, waiting)) => {
                            if let (Some(system), Some(why)) =
                                (&pass_report.postponed_by, &pass_report.postponed)
                            {
                                allowance_stops
                                    .entry(system.clone())
                                    .or_insert_with(|| why.clone());
                            }
                            writes += pass_report.writes();
                            linked += pass_report.linked;
                            if !waiting.is_empty() {
                                deferred.insert(mapping.name.clone(), waiting);
                            }
                            if let Some(total) = totals.get_mut(&mapping.name) {
                                total.absorb(&pass_report);
                            }
                        }
                        Err(EngineError::LeaseLost { .. }) => {
                            // Another worker took over after this one stalled: it goes on from
                            // what was recorded; this worker leaves the identity alone.
                            warn!(mapping = %mapping.name, "lease lost to another worker; skipped for the rest of the run");
                            if let Some(total) = totals.get_mut(&mapping.name) {
                                total.held_by = Some("another worker (lease lost)".into());
                            }
                            leased
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .retain(|n| *n != lease_name);
                            held_elsewhere.insert(lease_name);
                        }
                        Err(EngineError::Connector(error)) if error.is_allowance() => {
                            // A daily allowance is no failure: the system's work waits for
                            // the next run, which reads from the same cursors.
                            warn!(mapping = %mapping.name, %error, "the system's daily allowance stops this mapping for the run");
                            if let Some(total) = totals.get_mut(&mapping.name) {
                                total.postponed = Some(error.to_string());
                            }
                            allowance_stops
                                .entry(error.system().to_owned())
                                .or_insert_with(|| error.to_string());
                        }
                        Err(error @ EngineError::Interrupted { .. }) => {
                            info!(mapping = %mapping.name, "run interrupted");
                            if let Some(total) = totals.get_mut(&mapping.name) {
                                total.stopped = Some(error.to_string());
                            }
                            report.interrupted = true;
                            break 'passes;
                        }
                        Err(error) => {
                            warn!(mapping = %mapping.name, %error, "mapping failed");
                            if let Some(total) = totals.get_mut(&mapping.name) {
                                total.stopped = Some(error.to_string());
                            }
                            failure.get_or_insert(error);
                        }
                    }
                }
                info!(pass, writes, linked, "pass done");
                // Records waiting for references can only get further when a pass wrote or
                // linked something; they are parked with their reason already and retried
                // next run.
                if writes == 0 && (deferred.is_empty() || linked == 0) {
                    break;
                }
            }
            Ok::<(), EngineError>(())
        };
        match &options.lease {
            Some(lease) if !options.dry_run => {
                tokio::select! {
                    done = passes_done => done?,
                    () = self.renew_leases(lease, &leased) => {}
                }
            }
            _ => passes_done.await?,
        }
        if let Some(lease) = &options.lease {
            let names = std::mem::take(
                &mut *leased
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            for name in &names {
                if let Err(error) = self.store.release_lease(name, &lease.worker).await {
                    warn!(lease = %name, %error, "cannot release the lease; it expires on its own");
                }
            }
        }
        if !options.dry_run {
            // A record parked in several passes is one parked record.
            let parked = self.store.parked(None).await?;
            for total in totals.values_mut() {
                total.parked = parked
                    .iter()
                    .filter(|p| p.mapping == total.mapping && p.last_tried_at >= started_at)
                    .count() as u64;
            }
        }
        report.mappings = totals.into_values().collect();
        let after = self.connectors.stats();
        report.systems = after
            .iter()
            .map(|(system, stats)| {
                let previous = before.get(system).copied().unwrap_or_default();
                let mut system_report = SystemReport::delta(system, &previous, stats);
                system_report.stopped = allowance_stops.get(system).cloned();
                system_report
            })
            .filter(|s| s.requests > 0 || s.stopped.is_some())
            .collect();
        if let Some(id) = &run_id {
            let outcome = if report.interrupted {
                RunOutcome::Cancelled
            } else if failure.is_some() {
                RunOutcome::Failed
            } else if report.mappings.iter().any(|m| m.stopped.is_some()) {
                RunOutcome::CircuitBreaker
            } else {
                RunOutcome::Ok
            };
            report.outcome = Some(outcome);
            let summary = serde_json::to_value(&report).unwrap_or(Value::Null);
            self.store.finish_run(id, outcome, &summary).await?;
            let keep = chrono::Duration::days(i64::from(options.history_days));
            if let Err(error) = self.store.prune_history(Utc::now() - keep).await {
                warn!(%error, "cannot remove old entries of the change log; the next run tries again");
            }
        }
        Ok(report)
    }

    /// Takes or renews the lease `name`; the holder's name when another worker has it.
    async fn take_lease(
        &self,
        name: &str,
        lease: &LeaseOptions,
    ) -> Result<Option<String>, EngineError> {
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(lease.ttl).unwrap_or(chrono::Duration::MAX);
        let expires = now
            .checked_add_signed(ttl)
            .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
        if self
            .store
            .try_acquire_lease(name, &lease.worker, now, expires)
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let holder = self
            .store
            .leases()
            .await?
            .into_iter()
            .find(|l| l.mapping == name)
            .map_or_else(|| "another worker".to_owned(), |l| l.worker);
        if crate::sync::control::left_by_dead_run(
            &holder,
            &lease.worker,
            crate::sync::control::process_alive,
        ) {
            // A run killed on this host: what it recorded stands (create intents make its
            // unfinished creates safe), so its lease is taken over now.
            info!(lease = %name, %holder, "taking over the lease of a run that is gone");
            self.store.release_lease(name, &holder).await?;
            if self
                .store
                .try_acquire_lease(name, &lease.worker, now, expires)
                .await?
                .is_some()
            {
                return Ok(None);
            }
        }
        Ok(Some(holder))
    }

    /// Renews the leases in `leased` every third of their lifetime, so a live worker keeps
    /// them through long reads; never returns. A lease another worker took is dropped from
    /// the set (the next write batch's checkpoint stops the mapping).
    async fn renew_leases(&self, lease: &LeaseOptions, leased: &std::sync::Mutex<Vec<String>>) {
        let every = (lease.ttl / 3).max(std::time::Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let names = leased
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            for name in names {
                match self.take_lease(&name, lease).await {
                    Ok(None) => {}
                    Ok(Some(holder)) => {
                        warn!(lease = %name, %holder, "lease taken over by another worker");
                        leased
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .retain(|n| *n != name);
                    }
                    Err(error) => warn!(lease = %name, %error, "cannot renew the lease"),
                }
            }
        }
    }
    /// A safe point before a write batch: stops when the run is cancelled, and renews the
    /// mapping's lease, stopping when another worker has taken it.
    async fn checkpoint(
        &self,
        m: &MappingRuntime,
        options: &RunOptions,
    ) -> Result<(), EngineError> {
        if options.cancelled() {
            return Err(EngineError::Interrupted {
                mapping: m.name.clone(),
            });
        }
        if let Some(lease) = &options.lease
            && self.take_lease(&m.lease_name(), lease).await?.is_some()
        {
            return Err(EngineError::LeaseLost {
                mapping: m.name.clone(),
            });
        }
        Ok(())
    }
}

/// The hash of a record's mapped content as merges compare it: the target as it is, the
/// source mapped forward; `None` when the source no longer maps.
/// Whether a record of `side` is as its pair last saw it: its mapped content hashes as
/// `seen` (a pair that saw nothing never is).
fn at_rest(
    m: &MappingRuntime,
    side: Side,
    data: &Value,
    resolver: &LinkResolver,
    seen: Option<&str>,
) -> bool {
    seen.is_some() && seen_hash(m, side, data, resolver).as_deref() == seen
}

fn seen_hash(
    m: &MappingRuntime,
    side: Side,
    data: &Value,
    resolver: &LinkResolver,
) -> Option<String> {
    match side {
        Side::Target => Some(fields_hash(&synced_fields(&m.compiled, data))),
        Side::Source => mapping::apply_forward_existing(&m.compiled, data, resolver)
            .ok()
            .map(|body| fields_hash(&Canonical::of(&m.compiled, &body).into_fields())),
    }
}

fn park_of(m: &MappingRuntime, parking: Parking) -> Park {
    Park {
        mapping: m.name.clone(),
        side: parking.side,
        record_id: parking.id,
        reason: parking.reason,
        field: parking.field,
        value: parking.value,
        deleting: false,
        retry_at: None,
    }
}

/// How long a refused delete waits before it is sent again, after `attempts` refusals: an
/// hour, doubling to a day. A refusal such as the ERP's `still_referenced` lasts until
/// someone acts, so sending it on every run would only spend the API's allowance. Pure.
fn delete_backoff(attempts: u32) -> chrono::Duration {
    let hours = 1i64 << attempts.saturating_sub(1).min(5);
    chrono::Duration::hours(hours.min(24))
}

fn count_updates(work: &MappingWork, side: Side) -> u64 {
    work.pairs
        .iter()
        .flat_map(|p| &p.updates)
        .filter(|u| u.on == side)
        .count() as u64
}

/// Where the time of a side's last complete full listing is kept (`full_listing_every`).
fn listing_key(m: &MappingRuntime, side: Side) -> CursorKey {
    let rt = m.side(side);
    CursorKey {
        mapping: m.name.clone(),
        side,
        system: rt.system.clone(),
        entity: format!("{}#full-listing", rt.entity),
    }
}

/// Where a mapping keeps whether its initial sync went in chunks and is unfinished
/// ([`INITIAL_IN_CHUNKS`]) or done ([`initial_done`]).
fn initial_key(m: &MappingRuntime) -> CursorKey {
    CursorKey {
        mapping: m.name.clone(),
        side: Side::Source,
        system: m.source.system.clone(),
        entity: format!("{}#initial-sync", m.source.entity),
    }
}

/// An initial sync in chunks has begun and not reached the end of its reads.
const INITIAL_IN_CHUNKS: &str = "in chunks";
/// An initial sync in chunks read to the end in the run started at `run_started`.
fn initial_done(run_started: chrono::DateTime<Utc>) -> String {
    format!("done in the run of {}", run_started.to_rfc3339())
}

fn cursor_key(m: &MappingRuntime, side: Side, deletions: bool) -> CursorKey {
    let rt = m.side(side);
    CursorKey {
        mapping: m.name.clone(),
        side,
        system: rt.system.clone(),
        entity: if deletions {
            format!("{}#deletions", rt.entity)
        } else {
            rt.entity.clone()
        },
    }
}

/// The actions of a planned pass, for `tether plan`.
fn plan_actions(m: &MappingRuntime, work: &MappingWork, actions: &mut Vec<Action>) {
    for pair in &work.pairs {
        if !pair.new_links.is_empty() {
            actions.push(Action::Link {
                mapping: m.name.clone(),
                source_id: pair.source_id.clone(),
                target_id: pair.target_id.clone(),
                key: "match key".to_owned(),
            });
        }
        for conflict in pair.conflicts.iter().filter(|c| c.held) {
            actions.push(Action::Held {
                mapping: m.name.clone(),
                field: conflict.field.clone(),
                base: conflict.base.clone(),
                source: conflict.source.clone(),
                target: conflict.target.clone(),
                source_id: Some(pair.source_id.clone()),
                target_id: Some(pair.target_id.clone()),
                conflict: None,
            });
        }
        for (conflict, field) in &pair.applied {
            actions.push(Action::Resolve {
                mapping: m.name.clone(),
                conflict: conflict.as_str().to_owned(),
                field: field.clone(),
                value: pair.base.get(field).cloned(),
            });
        }
        for conflict in pair.conflicts.iter().filter(|c| !c.held) {
            actions.push(Action::Conflict {
                mapping: m.name.clone(),
                field: conflict.field.clone(),
                base: conflict.base.clone(),
                source: conflict.source.clone(),
                target: conflict.target.clone(),
                winner: conflict.winner,
                reason: conflict.reason.clone(),
            });
        }
        for update in &pair.updates {
            actions.push(Action::Update {
                mapping: m.name.clone(),
                on: update.on,
                id: update.id.clone(),
                changes: update.changes.clone(),
            });
        }
    }
    actions.extend(work.ambiguous.iter().cloned());
    for create in &work.creates {
        actions.push(Action::Create {
            mapping: m.name.clone(),
            on: create.on,
            from_id: create.from_id.clone(),
            fields: create.body.clone(),
        });
    }
    for (side, id, _) in &work.deletes {
        actions.push(Action::Delete {
            mapping: m.name.clone(),
            on: *side,
            id: id.clone(),
        });
    }
    for (side, id, _) in &work.unlinks {
        actions.push(Action::Unlink {
            mapping: m.name.clone(),
            side: *side,
            id: id.clone(),
        });
    }
    for parking in &work.parked {
        actions.push(Action::Park {
            mapping: m.name.clone(),
            side: parking.side,
            id: parking.id.clone(),
            reason: parking.reason.clone(),
            field: parking.field.clone(),
            value: parking.value.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_of(ids: &[&str]) -> SideRead {
        let mut read = SideRead {
            cursor: Some(ConnectorCursor::sync_token("page 3")),
            ..SideRead::default()
        };
        for id in ids {
            read.records.insert(
                (*id).to_owned(),
                Record {
                    id: (*id).to_owned(),
                    modified: None,
                    data: json!({ "id": id }),
                },
            );
        }
        read
    }

    #[test]
    fn a_chunk_carries_its_held_records_with_the_cursor_and_drops_those_matched_later() {
        let mut fresh = read_of(&["a", "b", "c"]);
        let mut carried = fresh.carry(&["a".to_owned(), "c".to_owned()], &[]);
        assert!(carried.carried && carried.counted);
        assert_eq!(carried.records.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(carried.cursor, Some(ConnectorCursor::sync_token("page 3")));
        carried.keys = Some(HashMap::from([(
            "k".to_owned(),
            vec!["a".to_owned(), "c".to_owned()],
        )]));
        // A later chunk matched `a`: it is no longer carried, nor a candidate by its key.
        let next = carried.carry(&[], &["a".to_owned()]);
        assert_eq!(next.records.keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(next.with_key("k").collect::<Vec<_>>(), ["c"]);
        assert_eq!(next.with_key("other").count(), 0);
        assert_eq!(next.cursor, Some(ConnectorCursor::sync_token("page 3")));
    }

    fn field(spec: &str) -> FieldSpec {
        serde_json::from_str(spec).expect("field spec")
    }

    #[test]
    fn write_bodies_carry_only_what_the_system_accepts() {
        let fields: IndexMap<String, FieldSpec> = [
            (
                "name".to_owned(),
                field(r#"{"type": "string", "required_on_update": true}"#),
            ),
            (
                "opened".to_owned(),
                field(r#"{"type": "date", "update_only": true}"#),
            ),
            (
                "origin".to_owned(),
                field(r#"{"type": "string", "create_only": true}"#),
            ),
            ("city".to_owned(), field(r#"{"type": "string"}"#)),
            (
                "note".to_owned(),
                field(r#"{"type": "string", "nullable": true}"#),
            ),
        ]
        .into_iter()
        .collect();
        let mut create = json!({ "name": "A", "opened": "2026-01-01", "origin": "web", "city": null, "note": null });
        shape_body(&mut create, &fields, None);
        assert_eq!(
            create,
            json!({ "name": "A", "origin": "web", "note": null })
        );
        let mut update = json!({ "opened": "2026-01-01", "origin": "web", "city": "Oslo" });
        shape_body(
            &mut update,
            &fields,
            Some(&json!({ "name": "A", "city": "Bergen" })),
        );
        assert_eq!(
            update,
            json!({ "opened": "2026-01-01", "city": "Oslo", "name": "A" })
        );
    }

    #[test]
    fn a_required_object_emptied_by_an_unresolved_reference_is_sent_as_it_is() {
        let fields: IndexMap<String, FieldSpec> = [
            (
                "contact".to_owned(),
                field(
                    r#"{"type": "object", "required_on_update": true,
                        "fields": {"id": {"type": "integer", "required": true}}}"#,
                ),
            ),
            ("title".to_owned(), field(r#"{"type": "string"}"#)),
        ]
        .into_iter()
        .collect();
        let mut update = json!({ "contact": { "id": null }, "title": "Deal" });
        shape_body(
            &mut update,
            &fields,
            Some(&json!({ "contact": { "id": 7 }, "title": "Old" })),
        );
        assert_eq!(update, json!({ "contact": { "id": 7 }, "title": "Deal" }));
    }

    fn shipped(name: &str) -> Arc<CompiledMapping> {
        let project = Project::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows"),
        );
        mapping::compile_project(&project)
            .0
            .get(name)
            .cloned()
            .expect("a shipped mapping")
    }

    #[test]
    fn update_bodies_keep_the_other_items_of_a_list_and_write_values_typed() {
        // One address line of the shop's billing address: the whole list goes, the billing
        // address with its other fields and the shipping address as they are.
        let compiled = shipped("keap-companies-to-customwebshop-customers");
        let current = json!({ "email": "a@example.com", "addresses": [
            { "type": "billing", "line1": "Munkegata 4", "city": "Trondheim", "zip": "7011", "country": "NO" },
            { "type": "shipping", "line1": "Lager 1", "city": "Oslo" } ] });
        let forward = json!({ "addresses": [{ "type": "billing", "line1": "Nyveien 1", "city": "Trondheim" }] });
        let source_fields = Canonical::of(&compiled, &forward).into_fields();
        let changed: Fields = [(
            "addresses[type=billing].line1".to_owned(),
            json!("Nyveien 1"),
        )]
        .into();
        assert_eq!(
            target_update(&compiled, &current, &forward, &source_fields, &changed),
            json!({ "addresses": [
                { "type": "billing", "line1": "Nyveien 1", "city": "Trondheim", "zip": "7011", "country": "NO" },
                { "type": "shipping", "line1": "Lager 1", "city": "Oslo" } ] })
        );

        // Order lines as the mapping made them (ids as numbers), not in canonical text.
        let compiled = shipped("salesforce-orders-to-customerp-orders");
        let forward =
            json!({ "lines": [{ "product_id": 8, "quantity": 2.0, "unit_price": "89.5" }] });
        let source_fields = Canonical::of(&compiled, &forward).into_fields();
        let changed: Fields = [("lines".to_owned(), source_fields["lines"].clone())].into();
        assert_eq!(
            target_update(
                &compiled,
                &json!({ "lines": [] }),
                &forward,
                &source_fields,
                &changed
            ),
            forward
        );
    }

    #[test]
    fn match_keys_ignore_case_and_spacing() {
        assert_eq!(
            key_text(&[Some(json!("  Ada@Example.com "))]),
            Some("ada@example.com".into())
        );
        assert_eq!(
            key_text(&[Some(json!("Acme   AS"))]),
            key_text(&[Some(json!("acme as"))])
        );
        assert_eq!(key_text(&[Some(json!(""))]), None);
        assert_eq!(key_text(&[None]), None);
        assert_eq!(key_text(&[Some(json!(42))]), Some("42".into()));
    }

    #[test]
    fn a_refused_delete_waits_an_hour_doubling_to_a_day() {
        let hours: Vec<i64> = (1..=8).map(|n| delete_backoff(n).num_hours()).collect();
        assert_eq!(hours, [1, 2, 4, 8, 16, 24, 24, 24]);
        assert_eq!(delete_backoff(0).num_hours(), 1);
        assert_eq!(delete_backoff(u32::MAX).num_hours(), 24);
    }
}
