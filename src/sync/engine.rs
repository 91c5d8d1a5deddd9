//! The engine: one run over the selected mappings, in dependency order, repeated in passes
//! until nothing changes.
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
//! The engine knows systems only through the `Connector` trait and state only through the
//! store; it never imports the simulators.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::Utc;
use indexmap::IndexMap;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use crate::connector::{
    Connector, ConnectorError, Connectors, Cursor as ConnectorCursor, EntityInfo, Record,
};
use crate::mapping::{
    self, Canonical, KeepIds, MappingPlan, RecordError, ReferenceRequest, ResolveReference,
};
use crate::spec::flow::{DeletePolicy, Direction, MappingSpec, Side};
use crate::spec::load::Project;
use crate::spec::system::{FieldSpec, IdType};
use crate::store::{
    CursorKey, GlobalId, LinkOrigin, NewConflict, NewIntent, NewRun, PairState, Park, RecordKey,
    RunId, RunOutcome, SideSeen, Store, StoreError,
};
use crate::sync::control::{Cancel, LeaseOptions};
use crate::sync::merge::{self, Fields, MergePolicy, Version};
use crate::sync::order::dependency_order;
use crate::sync::report::{Action, FieldChange, MappingReport, RunReport, SystemReport};

/// Linked pairs a mapping needs before its circuit breaker can trip: a share of a handful
/// of records says little.
const BREAKER_MIN_LINKED: usize = 10;
/// Records written per batch and store transaction.
const BATCH: usize = 50;
/// A pass that maps more records than this loads every link of the mappings it refers to
/// at once; one that maps fewer looks up only the links its records ask for.
const LINKS_BY_RECORD: usize = 1_000;
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
    pub plan: Arc<MappingPlan>,
    pub source: SideRuntime,
    pub target: SideRuntime,
    /// Mappings named by reference rules.
    pub references: Vec<String>,
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

fn other(side: Side) -> Side {
    match side {
        Side::Source => Side::Target,
        Side::Target => Side::Source,
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Source => "source",
        Side::Target => "target",
    }
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

/// The match key of a record on one side of a mapping.
fn match_key(plan: &MappingPlan, side: Side, record: &Value) -> Option<String> {
    if plan.match_keys.is_empty() {
        return None;
    }
    let values: Vec<Option<Value>> = plan
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
fn synced_fields(plan: &MappingPlan, record: &Value) -> Fields {
    without_create_only(plan, Canonical::of(plan, record).into_fields())
}

fn without_create_only(plan: &MappingPlan, mut fields: Fields) -> Fields {
    for rule in plan.rules.rules.iter().filter(|r| r.create_only) {
        fields.remove(rule.target.as_str());
    }
    fields
}

fn fields_hash(fields: &Fields) -> String {
    format!("{:016x}", mapping::canonical::hash_fields(fields))
}

/// Writes `fields` (target paths -> values) into a target-shaped record.
fn set_fields(plan: &MappingPlan, record: &mut Value, fields: &Fields) {
    for (path, value) in fields {
        if let Some(rule) = plan.rules.rules.iter().find(|r| r.target.as_str() == path) {
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
    plan: &MappingPlan,
    current: &Value,
    forward: &Value,
    source_fields: &Fields,
    changed: &Fields,
) -> Value {
    let mut out = Map::new();
    for path in changed.keys() {
        if let Some(rule) = plan.rules.rules.iter().find(|r| r.target.as_str() == path) {
            mapping::seed_list(&mut out, &rule.target, current);
        }
    }
    let mut out = Value::Object(out);
    for (path, value) in changed {
        let Some(rule) = plan.rules.rules.iter().find(|r| r.target.as_str() == path) else {
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
    plan: &MappingPlan,
    rule: &mapping::RulePlan,
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
    match mapping::apply_inverse_selected_onto(plan, &shaped, resolver, &only, source) {
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
            if !map.contains_key(name)
                && let Some(value) = current.get(name)
            {
                map.insert(name.clone(), value.clone());
            }
        }
    }
}

/// An id to translate: (mapping, from system, id).
type IdKey = (String, String, String);

/// Translates ids through the links of other mappings.
///
/// A pass that maps many records loads every link of the mappings it refers to up front
/// (`whole`). One that maps a few loads only the links its records ask for: an id neither
/// loaded nor looked up yet is noted as missed (and not linked, for now); the engine looks
/// the missed ids up in the store ([`Engine::load_missed`]) and maps again
/// ([`Engine::links_ready`]) before a mapping counts. So a record fetched later in the pass
/// (a counterpart, a record re-read before its update) is translated with the same links
/// as one read at the start.
struct LinkResolver {
    /// Every link of the referenced mappings is in `ids`.
    whole: bool,
    /// (mapping, from system, id) -> id on the other side.
    ids: Mutex<HashMap<IdKey, Value>>,
    /// Ids looked up in the store, linked or not.
    looked_up: Mutex<HashSet<IdKey>>,
    /// Ids asked for that were neither loaded nor looked up.
    missed: Mutex<HashSet<IdKey>>,
    /// (mapping, key path, from system, id or key value) -> key value or id on the other
    /// side, for references by key (`ref_key`), from the referenced mapping's synced values.
    keyed: HashMap<(String, String, String, String), Value>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LinkResolver {
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
    cursor: Option<String>,
    deletion_cursor: Option<String>,
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
enum Planned {
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
struct PairPlan {
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
}

/// Everything one pass of one mapping decided.
#[derive(Default)]
struct MappingWork {
    pairs: Vec<PairPlan>,
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
}

impl Engine {
    /// Builds the engine: every compiled mapping with its connectors, in dependency order.
    pub fn new(
        project: &Project,
        plans: &IndexMap<String, Arc<MappingPlan>>,
        connectors: Connectors,
        store: Store,
    ) -> Result<Engine, EngineError> {
        let mut runtimes: IndexMap<String, Arc<MappingRuntime>> = IndexMap::new();
        for (flow, spec) in project.mappings() {
            let name = spec.name.value.clone();
            let Some(plan) = plans.get(&name) else {
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
            let references = plan
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
                    plan: plan.clone(),
                    source,
                    target,
                    references,
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
        let selected = self.selected(options)?;
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
                    let fresh = [Side::Source, Side::Target].map(|side| {
                        read_at
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
                    let outcome = self
                        .sync_mapping(
                            mapping,
                            options,
                            run_id.as_ref(),
                            carry,
                            fresh,
                            last_pass,
                            started_at,
                            &mut report.actions,
                        )
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
                SystemReport::delta(system, &previous, stats)
            })
            .filter(|s| s.requests > 0)
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

    /// Whether a record the pair would update changed since this pass read it (re-read where
    /// the entity asks for it). A record gone since is left to the update, which reports it.
    ///
    /// The record is read again even when this pass fetched it moments ago as the pair's
    /// counterpart: that fetch happened while the pass was deciding, before every other pair
    /// of the pass was decided and the earlier write batches went out, so trusting it would
    /// widen the window in which someone else's edit is overwritten from one request to the
    /// whole pass.
    async fn moved_since_read(
        &self,
        m: &MappingRuntime,
        pair: &PairPlan,
        resolver: &LinkResolver,
    ) -> Result<bool, EngineError> {
        for update in &pair.updates {
            let rt = m.side(update.on);
            if !rt.verify_updates {
                continue;
            }
            let Some(current) = rt.connector.get(&rt.entity, &update.id).await? else {
                continue;
            };
            self.links_ready(resolver, || {
                let _ = seen_hash(m, update.on, &current.data, resolver);
            })
            .await?;
            if seen_hash(m, update.on, &current.data, resolver).as_deref()
                != Some(update.read_hash.as_str())
            {
                return Ok(true);
            }
        }
        Ok(false)
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

    /// The stored cursor of one side of a mapping (of its deletion feed with `deletions`).
    async fn stored_cursor(
        &self,
        m: &MappingRuntime,
        side: Side,
        deletions: bool,
    ) -> Result<Option<ConnectorCursor>, EngineError> {
        let stored = self.store.cursor(&cursor_key(m, side, deletions)).await?;
        stored
            .as_deref()
            .map(|text| text.parse::<ConnectorCursor>())
            .transpose()
            .map_err(|e| EngineError::BadCursor {
                mapping: m.name.clone(),
                reason: e.to_string(),
            })
    }

    /// Reads one side of a mapping from its stored cursor; without `fresh`, reads nothing
    /// and leaves the cursor where it is.
    async fn read_side(
        &self,
        m: &MappingRuntime,
        side: Side,
        fresh: bool,
    ) -> Result<SideRead, EngineError> {
        if !fresh {
            return Ok(SideRead::default());
        }
        let rt = m.side(side);
        let cursor = self.stored_cursor(m, side, false).await?;
        let mut read = SideRead::default();
        let mut reader = rt.connector.changes(&rt.entity, cursor.as_ref())?;
        let mut complete = false;
        let mut last_cursor = None;
        while let Some(page) = reader.next_page().await? {
            for record in page.records {
                read.records.insert(record.id.clone(), record);
            }
            read.deleted.extend(page.deleted.into_iter().map(|d| d.id));
            for malformed in page.malformed {
                warn!(mapping = %m.name, side = side_name(side), reason = %malformed.reason, "listed item skipped");
            }
            last_cursor = Some(page.cursor.to_string());
            complete = page.last;
        }
        read.cursor = last_cursor;
        match rt.info.deletions {
            crate::connector::DeletionDiscovery::Feed => {
                let cursor = self.stored_cursor(m, side, true).await?;
                let mut reader = rt.connector.deletions(&rt.entity, cursor.as_ref())?;
                while let Some(page) = reader.next_page().await? {
                    read.deleted.extend(page.deleted.into_iter().map(|d| d.id));
                    read.deletion_cursor = Some(page.cursor.to_string());
                }
            }
            crate::connector::DeletionDiscovery::FullListing => {
                if !rt.info.incremental && complete {
                    read.listed = Some(read.records.keys().cloned().collect());
                } else {
                    let mut reader = rt.connector.list_all(&rt.entity)?;
                    let mut ids = HashSet::new();
                    let mut done = false;
                    while let Some(page) = reader.next_page().await? {
                        ids.extend(page.records.into_iter().map(|r| r.id));
                        done = page.last;
                    }
                    if done {
                        read.listed = Some(ids);
                    }
                }
            }
            _ => {}
        }
        Ok(read)
    }

    /// The id translations of the mappings `m` refers to, for a pass that maps `records`
    /// records: all of them loaded when that is many records, else none yet (see
    /// [`LinkResolver`]).
    async fn resolver(
        &self,
        m: &MappingRuntime,
        records: usize,
    ) -> Result<LinkResolver, EngineError> {
        let whole = records > LINKS_BY_RECORD;
        let loaded: &[String] = if whole { &m.references } else { &[] };
        let mut ids = HashMap::new();
        for name in loaded {
            let Some(referenced) = self.mappings.iter().find(|r| &r.name == name) else {
                continue;
            };
            let identity = referenced.identity();
            let source_links = self
                .store
                .links_of_entity(
                    identity,
                    &referenced.source.system,
                    &referenced.source.entity,
                )
                .await?;
            let target_links = self
                .store
                .links_of_entity(
                    identity,
                    &referenced.target.system,
                    &referenced.target.entity,
                )
                .await?;
            let target_by_global: HashMap<&str, &str> = target_links
                .iter()
                .map(|l| (l.global_id.as_str(), l.record.id.as_str()))
                .collect();
            for link in &source_links {
                if let Some(target_id) = target_by_global.get(link.global_id.as_str()) {
                    ids.insert(
                        (
                            name.clone(),
                            referenced.source.system.clone(),
                            link.record.id.clone(),
                        ),
                        id_value(target_id, referenced.target.id_type),
                    );
                    ids.insert(
                        (
                            name.clone(),
                            referenced.target.system.clone(),
                            (*target_id).to_owned(),
                        ),
                        id_value(&link.record.id, referenced.source.id_type),
                    );
                }
            }
        }
        // References by key: the referenced mapping's synced value at the key path stands for
        // the record on its target side.
        let mut keyed = HashMap::new();
        for reference in m.plan.references() {
            let Some(key) = reference.key else { continue };
            let Some(referenced) = self.mappings.iter().find(|r| r.name == reference.mapping)
            else {
                continue;
            };
            for pair in self.store.pair_states(&referenced.name).await? {
                let Some(value) = pair.base.get(key).filter(|v| !v.is_null()) else {
                    continue;
                };
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                keyed.insert(
                    (
                        referenced.name.clone(),
                        key.to_owned(),
                        referenced.source.system.clone(),
                        pair.source_id.clone(),
                    ),
                    value.clone(),
                );
                keyed.insert(
                    (
                        referenced.name.clone(),
                        key.to_owned(),
                        referenced.target.system.clone(),
                        text,
                    ),
                    id_value(&pair.source_id, referenced.source.id_type),
                );
            }
        }
        Ok(LinkResolver {
            whole: whole || m.references.is_empty(),
            ids: Mutex::new(ids),
            looked_up: Mutex::new(HashSet::new()),
            missed: Mutex::new(HashSet::new()),
            keyed,
        })
    }

    /// Looks up the links of the ids mappings asked `resolver` for and did not find loaded;
    /// false when there were none, so what was mapped stands.
    async fn load_missed(&self, resolver: &LinkResolver) -> Result<bool, EngineError> {
        let missed = resolver.take_missed();
        if missed.is_empty() {
            return Ok(false);
        }
        let mut wanted: HashMap<(&str, &str), Vec<String>> = HashMap::new();
        for (mapping, system, id) in &missed {
            wanted
                .entry((mapping.as_str(), system.as_str()))
                .or_default()
                .push(id.clone());
        }
        let mut found = Vec::new();
        for ((name, system), record_ids) in wanted {
            let Some(referenced) = self.mappings.iter().find(|r| r.name == name) else {
                continue;
            };
            for (from, to) in [
                (&referenced.source, &referenced.target),
                (&referenced.target, &referenced.source),
            ] {
                if from.system != system {
                    continue;
                }
                for (from_id, to_id) in self
                    .store
                    .linked_counterparts(
                        referenced.identity(),
                        &from.system,
                        &from.entity,
                        &to.system,
                        &to.entity,
                        &record_ids,
                    )
                    .await?
                {
                    found.push((
                        (name.to_owned(), from.system.clone(), from_id.clone()),
                        id_value(&to_id, to.id_type),
                    ));
                    found.push((
                        (name.to_owned(), to.system.clone(), to_id),
                        id_value(&from_id, from.id_type),
                    ));
                }
            }
        }
        locked(&resolver.ids).extend(found);
        locked(&resolver.looked_up).extend(missed);
        Ok(true)
    }

    /// Runs `map` (a mapping whose result is dropped) and loads the links it asked for that
    /// were not loaded, until it asks for none: a mapping made afterwards with the same
    /// records and `resolver` finds every link there is.
    async fn links_ready(
        &self,
        resolver: &LinkResolver,
        map: impl Fn(),
    ) -> Result<(), EngineError> {
        if resolver.whole {
            return Ok(());
        }
        for _ in 0..LOOKUP_ROUNDS {
            map();
            if !self.load_missed(resolver).await? {
                break;
            }
        }
        Ok(())
    }

    /// One pass of one mapping. Returns its counts and the records waiting for references.
    #[allow(clippy::too_many_arguments)]
    async fn sync_mapping(
        &self,
        m: &MappingRuntime,
        options: &RunOptions,
        run_id: Option<&RunId>,
        carried: Vec<(Side, String)>,
        fresh: [bool; 2],
        last_pass: bool,
        run_started: chrono::DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) -> Result<(MappingReport, Vec<(Side, String)>), EngineError> {
        let mut report = MappingReport {
            mapping: m.name.clone(),
            flow: m.flow.clone(),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let mut source = self.read_side(m, Side::Source, fresh[0]).await?;
        let mut target = self.read_side(m, Side::Target, fresh[1]).await?;
        let read_at = started.elapsed();
        report.read_source = source.records.len() as u64;
        report.read_target = target.records.len() as u64;

        // Parked records and records waiting for references are tried again.
        let parked = self.store.parked(Some(&m.name)).await?;
        // Records parked earlier in this run wait for the next run: a later pass would only
        // park them again.
        let retry: Vec<(Side, String)> = parked
            .iter()
            .filter(|p| p.last_tried_at < run_started)
            .map(|p| (p.side, p.record_id.clone()))
            .chain(carried)
            .collect();
        for (side, id) in retry {
            let read = match side {
                Side::Source => &mut source,
                Side::Target => &mut target,
            };
            if read.records.contains_key(&id) {
                continue;
            }
            let rt = m.side(side);
            match rt.connector.get(&rt.entity, &id).await? {
                Some(record) => {
                    read.records.insert(id, record);
                }
                None => {
                    if !options.dry_run {
                        self.store.unpark(&m.name, side, &id).await?;
                    }
                }
            }
        }

        // Intents left open by a crash are resolved before anything is decided, so a record
        // created just before the crash is linked, not created again.
        if !options.dry_run {
            self.resolve_intents(m, &source, &target).await?;
        }
        let pairs = self.pairs_of(m, &source, &target).await?;
        // Pairs made earlier in this run do not count for the circuit breaker: an initial
        // sync in several passes is not a mass change.
        let linked_before = self
            .store
            .count_pairs_synced_before(&m.name, run_started)
            .await? as usize;
        let resolver = self
            .resolver(m, source.records.len() + target.records.len())
            .await?;
        // The links the records read refer to, looked up at once.
        self.links_ready(&resolver, || {
            for record in source.records.values() {
                let _ = mapping::apply_forward(&m.plan, &record.data, &resolver);
            }
            for record in target.records.values() {
                let _ = mapping::apply_inverse(&m.plan, &record.data, &resolver);
            }
        })
        .await?;
        let loaded_at = started.elapsed();
        let mut work = self.decide(m, &source, &target, pairs, &resolver).await?;
        let decided_at = started.elapsed();

        // The circuit breaker counts overwrites and deletes of pairs that existed before.
        let overwrites = work
            .pairs
            .iter()
            .filter(|p| p.synced_at.is_some_and(|t| t < run_started) && !p.updates.is_empty())
            .count();
        let deletes = work.deletes.len() + work.unlinks.len();
        let share = if linked_before == 0 {
            0.0
        } else {
            (overwrites + deletes) as f64 / linked_before as f64
        };
        if linked_before >= BREAKER_MIN_LINKED
            && share > m.spec.max_change_share
            && !options.allow_mass_change
        {
            let message = format!(
                "stopped before writing: this run would overwrite or delete {} of {} linked records ({:.0}%), more than the mapping's max_change_share of {:.0}%; check the source data, then run again with --allow-mass-change to let it through",
                overwrites + deletes,
                linked_before,
                share * 100.0,
                m.spec.max_change_share * 100.0
            );
            warn!(mapping = %m.name, %message, "circuit breaker");
            report.stopped = Some(message);
            if !options.dry_run {
                return Ok((report, Vec::new()));
            }
        }

        if options.dry_run {
            plan_actions(m, &work, actions);
            report.linked = work
                .pairs
                .iter()
                .filter(|p| !p.new_links.is_empty())
                .count() as u64;
            report.created_source =
                work.creates.iter().filter(|c| c.on == Side::Source).count() as u64;
            report.created_target =
                work.creates.iter().filter(|c| c.on == Side::Target).count() as u64;
            report.updated_source = count_updates(&work, Side::Source);
            report.updated_target = count_updates(&work, Side::Target);
            report.conflicts = work.pairs.iter().map(|p| p.conflicts.len() as u64).sum();
            report.parked = work.parked.len() as u64;
            return Ok((report, Vec::new()));
        }

        // Records waiting for references are parked with their reason (so a run that ends,
        // or is killed, before they are linked retries them next time) and tried again in the
        // next pass of this run, which unparks them once their references are linked.
        let deferred = std::mem::take(&mut work.deferred);
        let waiting: Vec<(Side, String)> = if last_pass {
            Vec::new()
        } else {
            deferred.iter().map(|p| (p.side, p.id.clone())).collect()
        };
        // Parked once per run: a record that waits in several passes is one attempt.
        work.parked.extend(deferred.into_iter().filter(|waiting| {
            !parked.iter().any(|p| {
                p.side == waiting.side
                    && p.record_id == waiting.id
                    && p.last_tried_at >= run_started
            })
        }));

        self.execute(
            m,
            options,
            run_id,
            work,
            &mut report,
            &parked,
            run_started,
            &resolver,
        )
        .await?;

        // Everything read is done or parked: the cursors move.
        let mut tx = self.store.transaction().await?;
        for (side, read) in [(Side::Source, &source), (Side::Target, &target)] {
            if let Some(position) = &read.cursor {
                tx.set_cursor(&cursor_key(m, side, false), position).await?;
            }
            if let Some(position) = &read.deletion_cursor {
                tx.set_cursor(&cursor_key(m, side, true), position).await?;
            }
        }
        tx.commit().await?;
        debug!(
            mapping = %m.name,
            ?report,
            read_ms = read_at.as_millis() as u64,
            load_ms = (loaded_at - read_at).as_millis() as u64,
            decide_ms = (decided_at - loaded_at).as_millis() as u64,
            write_ms = (started.elapsed() - decided_at).as_millis() as u64,
            "mapping pass done"
        );
        Ok((report, waiting))
    }

    /// The pair states a pass needs: those of the records read or reported deleted and,
    /// beside a complete listing, those of paired records missing from it. A run that read
    /// a few changes loads a few merge bases, not every pair of the mapping.
    async fn pairs_of(
        &self,
        m: &MappingRuntime,
        source: &SideRead,
        target: &SideRead,
    ) -> Result<Vec<PairState>, EngineError> {
        let mut pairs: HashMap<String, PairState> = HashMap::new();
        for (side, read) in [(Side::Source, source), (Side::Target, target)] {
            let mut ids: Vec<String> = read
                .records
                .keys()
                .chain(read.deleted.iter())
                .cloned()
                .collect();
            if let Some(listed) = &read.listed {
                ids.extend(
                    self.store
                        .paired_ids(&m.name, side)
                        .await?
                        .into_iter()
                        .filter(|id| !listed.contains(id)),
                );
            }
            ids.sort_unstable();
            ids.dedup();
            for pair in self
                .store
                .pair_states_of_records(&m.name, side, &ids)
                .await?
            {
                pairs
                    .entry(pair.global_id.as_str().to_owned())
                    .or_insert(pair);
            }
        }
        Ok(pairs.into_values().collect())
    }

    /// Whether the record `id` of `side` is in a pair of the mapping: among the pairs loaded
    /// for the pass, or, for a record the pass did not read, in the store.
    async fn is_paired(
        &self,
        m: &MappingRuntime,
        side: Side,
        id: &str,
        loaded: &HashMap<&str, &PairState>,
    ) -> Result<bool, EngineError> {
        if loaded.contains_key(id) {
            return Ok(true);
        }
        Ok(!self
            .store
            .pair_states_of_records(&m.name, side, &[id.to_owned()])
            .await?
            .is_empty())
    }

    /// Sorts the records of a pass into pairs, matches, creates, deletes and parked records.
    async fn decide(
        &self,
        m: &MappingRuntime,
        source: &SideRead,
        target: &SideRead,
        pairs: Vec<PairState>,
        resolver: &LinkResolver,
    ) -> Result<MappingWork, EngineError> {
        let plan = &m.plan;
        let identity = m.identity();
        let mut work = MappingWork::default();
        let pairs_by_global: HashMap<String, PairState> = pairs
            .into_iter()
            .map(|p| (p.global_id.as_str().to_owned(), p))
            .collect();
        let pair_of_source: HashMap<&str, &PairState> = pairs_by_global
            .values()
            .map(|p| (p.source_id.as_str(), p))
            .collect();
        let pair_of_target: HashMap<&str, &PairState> = pairs_by_global
            .values()
            .map(|p| (p.target_id.as_str(), p))
            .collect();

        // Deletions: explicit, or by absence from a complete listing.
        let mut deleted: Vec<(Side, String)> = Vec::new();
        for (side, read) in [(Side::Source, source), (Side::Target, target)] {
            deleted.extend(read.deleted.iter().map(|id| (side, id.clone())));
            if let Some(listed) = &read.listed {
                let ids = match side {
                    Side::Source => pair_of_source.keys(),
                    Side::Target => pair_of_target.keys(),
                };
                deleted.extend(
                    ids.filter(|id| !listed.contains(**id))
                        .map(|id| (side, (*id).to_owned())),
                );
            }
        }
        let mut gone: HashSet<(Side, String)> = HashSet::new();
        // Survivors of forgotten pairs: (side, id), once the deletions are all known.
        let mut survivors: Vec<(Side, String, Option<String>)> = Vec::new();
        for (side, id) in deleted {
            let pair = match side {
                Side::Source => pair_of_source.get(id.as_str()),
                Side::Target => pair_of_target.get(id.as_str()),
            };
            let Some(pair) = pair else { continue };
            if !gone.insert((side, id.clone())) {
                continue;
            }
            let counterpart = match side {
                Side::Source => pair.target_id.clone(),
                Side::Target => pair.source_id.clone(),
            };
            let seen = match side {
                Side::Source => pair.target.hash.clone(),
                Side::Target => pair.source.hash.clone(),
            };
            // A delete propagates the way the mapping carries records: in a one-way mapping,
            // a delete on the side that never creates (a shop order of a CRM user) only
            // forgets the pair.
            let carried = match side {
                Side::Source => m.spec.direction.forward(),
                Side::Target => m.spec.direction.backward(),
            };
            match m.spec.deletes {
                DeletePolicy::Ignore => {}
                DeletePolicy::Propagate if carried && m.side(other(side)).info.can_delete => {
                    work.deletes
                        .push((other(side), counterpart.clone(), pair.global_id.clone()));
                    gone.insert((other(side), counterpart));
                    work.unlinks.push((side, id, pair.global_id.clone()));
                }
                DeletePolicy::Unlink | DeletePolicy::Propagate => {
                    survivors.push((other(side), counterpart, seen));
                    work.unlinks.push((side, id, pair.global_id.clone()));
                }
            }
        }
        // A survivor is remembered with its mapped content as it is now, read in this pass
        // or fetched, so that it is not created again on the other side on a later run.
        for (side, id, seen) in survivors {
            if gone.contains(&(side, id.clone())) {
                continue;
            }
            let read = match side {
                Side::Source => source,
                Side::Target => target,
            };
            let record = match read.records.get(&id) {
                Some(record) => Some(record.clone()),
                None => {
                    m.side(side)
                        .connector
                        .get(&m.side(side).entity, &id)
                        .await?
                }
            };
            if let Some(record) = &record {
                self.links_ready(resolver, || {
                    let _ = self.content_hash(m, side, &record.data, resolver);
                })
                .await?;
            }
            let hash = record
                .and_then(|r| self.content_hash(m, side, &r.data, resolver))
                .or(seen);
            if let Some(hash) = hash {
                work.forgotten.push((side, id, hash));
            }
        }
        let forgotten: HashMap<(Side, String), String> = self
            .store
            .unlinked(&m.name)
            .await?
            .into_iter()
            .map(|u| ((u.side, u.record_id), u.content_hash))
            .collect();

        // Links of the records read, for records that are not in a pair of this mapping.
        let source_ids: Vec<String> = source
            .records
            .keys()
            .filter(|id| !pair_of_source.contains_key(id.as_str()))
            .cloned()
            .collect();
        let target_ids: Vec<String> = target
            .records
            .keys()
            .filter(|id| !pair_of_target.contains_key(id.as_str()))
            .cloned()
            .collect();
        let source_links: HashMap<String, GlobalId> = self
            .store
            .links_by_records(identity, &m.source.system, &m.source.entity, &source_ids)
            .await?
            .into_iter()
            .map(|l| (l.record.id, l.global_id))
            .collect();
        let target_links: HashMap<String, GlobalId> = self
            .store
            .links_by_records(identity, &m.target.system, &m.target.entity, &target_ids)
            .await?
            .into_iter()
            .map(|l| (l.record.id, l.global_id))
            .collect();

        // Pairs touched by this pass, by global id: (source id, target id, pair state).
        let mut touched: IndexMap<String, Touched<'_>> = IndexMap::new();
        let mut unlinked_source: Vec<&Record> = Vec::new();
        let mut unlinked_target: Vec<&Record> = Vec::new();
        // A side read again with the content last seen or written has not changed: a full
        // listing (Keap companies) costs its pages, not a read of every counterpart.
        let source_unchanged = |record: &Record, pair: &PairState| {
            pair.source.hash.is_some()
                && mapping::apply_forward_existing(plan, &record.data, resolver)
                    .ok()
                    .map(|body| fields_hash(&Canonical::of(plan, &body).into_fields()))
                    == pair.source.hash
        };
        let target_unchanged = |record: &Record, pair: &PairState| {
            pair.target.hash.is_some()
                && Some(fields_hash(&synced_fields(plan, &record.data))) == pair.target.hash
        };
        for record in source.records.values() {
            if gone.contains(&(Side::Source, record.id.clone())) {
                continue;
            }
            if let Some(pair) = pair_of_source.get(record.id.as_str()) {
                if source_unchanged(record, pair) {
                    work.ok_ids.push((Side::Source, record.id.clone()));
                    continue;
                }
                touched.insert(
                    pair.global_id.as_str().to_owned(),
                    (
                        Some(record.id.clone()),
                        Some(pair.target_id.clone()),
                        Some(*pair),
                    ),
                );
            } else if let Some(global) = source_links.get(&record.id) {
                match self
                    .store
                    .link_by_global(identity, global, &m.target.system, &m.target.entity)
                    .await?
                {
                    Some(link)
                        if !self
                            .is_paired(m, Side::Target, &link.record.id, &pair_of_target)
                            .await? =>
                    {
                        touched.insert(
                            global.as_str().to_owned(),
                            (Some(record.id.clone()), Some(link.record.id), None),
                        );
                    }
                    _ => unlinked_source.push(record),
                }
            } else {
                unlinked_source.push(record);
            }
        }
        for record in target.records.values() {
            if gone.contains(&(Side::Target, record.id.clone())) {
                continue;
            }
            if let Some(pair) = pair_of_target.get(record.id.as_str()) {
                if target_unchanged(record, pair) {
                    if let Some(entry) = touched.get_mut(pair.global_id.as_str()) {
                        entry.1 = Some(record.id.clone());
                    } else {
                        work.ok_ids.push((Side::Target, record.id.clone()));
                    }
                    continue;
                }
                let entry = touched
                    .entry(pair.global_id.as_str().to_owned())
                    .or_insert((Some(pair.source_id.clone()), None, Some(*pair)));
                entry.1 = Some(record.id.clone());
            } else if let Some(global) = target_links.get(&record.id) {
                if touched.contains_key(global.as_str()) {
                    continue;
                }
                match self
                    .store
                    .link_by_global(identity, global, &m.source.system, &m.source.entity)
                    .await?
                {
                    Some(link)
                        if !self
                            .is_paired(m, Side::Source, &link.record.id, &pair_of_source)
                            .await? =>
                    {
                        touched.insert(
                            global.as_str().to_owned(),
                            (Some(link.record.id), Some(record.id.clone()), None),
                        );
                    }
                    _ => unlinked_target.push(record),
                }
            } else {
                unlinked_target.push(record);
            }
        }

        // Linked pairs: fetch the side that was not read, then merge.
        for (global, (source_id, target_id, pair)) in touched {
            let (Some(source_id), Some(target_id)) = (source_id, target_id) else {
                continue;
            };
            if gone.contains(&(Side::Source, source_id.clone()))
                || gone.contains(&(Side::Target, target_id.clone()))
            {
                continue;
            }
            let source_record = match source.records.get(&source_id) {
                Some(r) => r.clone(),
                None => match m.source.connector.get(&m.source.entity, &source_id).await? {
                    Some(r) => r,
                    None => continue,
                },
            };
            let target_record = match target.records.get(&target_id) {
                Some(r) => r.clone(),
                None => match m.target.connector.get(&m.target.entity, &target_id).await? {
                    Some(r) => r,
                    None => continue,
                },
            };
            let global_id = GlobalId::new(global);
            self.links_ready(resolver, || {
                let _ = self.merge_pair(
                    m,
                    global_id.clone(),
                    &source_record,
                    &target_record,
                    pair,
                    resolver,
                    &mut MappingWork::default(),
                );
            })
            .await?;
            match self.merge_pair(
                m,
                global_id,
                &source_record,
                &target_record,
                pair,
                resolver,
                &mut work,
            ) {
                Ok(Some(pair_plan)) => work.pairs.push(pair_plan),
                Ok(None) => {}
                Err(parking) => work.parked.push(parking),
            }
        }

        // Unlinked records: match, or create on the other side.
        let mut claimed: HashSet<(Side, String)> = HashSet::new();
        for (side, records) in [
            (Side::Source, unlinked_source),
            (Side::Target, unlinked_target),
        ] {
            let allowed = match side {
                Side::Source => m.spec.direction.forward(),
                Side::Target => m.spec.direction.backward(),
            };
            for record in records {
                if claimed.contains(&(side, record.id.clone())) {
                    continue;
                }
                // A record whose counterpart was deleted stays forgotten while it is as it
                // was then; once a mapped field changes it syncs again.
                if let Some(hash) = forgotten.get(&(side, record.id.clone())) {
                    if self.content_hash(m, side, &record.data, resolver).as_ref() == Some(hash) {
                        continue;
                    }
                    work.revived.push((side, record.id.clone()));
                }
                let key = match_key(plan, side, &record.data);
                work.record_keys
                    .push((side, record.id.clone(), key.clone()));
                if side == Side::Source {
                    match mapping::accepts(plan, &record.data) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(error) => {
                            work.parked.push(parking_from(side, &record.id, &error));
                            continue;
                        }
                    }
                }
                let own_global = match side {
                    Side::Source => source_links.get(&record.id).cloned(),
                    Side::Target => target_links.get(&record.id).cloned(),
                };
                let other_side = other(side);
                let other_read = match other_side {
                    Side::Source => source,
                    Side::Target => target,
                };
                let candidates = match &key {
                    Some(key) => {
                        self.candidates(
                            m,
                            other_side,
                            key,
                            other_read,
                            &pair_of_source,
                            &pair_of_target,
                            &claimed,
                        )
                        .await?
                    }
                    None => Vec::new(),
                };
                // Candidates known only from earlier passes are read again: one that no longer
                // exists is no candidate, and its match key is forgotten.
                let mut fetched: HashMap<String, Record> = HashMap::new();
                let mut live = Vec::with_capacity(candidates.len());
                for id in candidates {
                    if other_read.records.contains_key(&id) {
                        live.push(id);
                        continue;
                    }
                    let rt = m.side(other_side);
                    match rt.connector.get(&rt.entity, &id).await? {
                        Some(found) => {
                            fetched.insert(id.clone(), found);
                            live.push(id);
                        }
                        None => work.record_keys.push((other_side, id, None)),
                    }
                }
                let candidates = live;
                match candidates.len() {
                    0 if !allowed => {}
                    0 => {
                        self.links_ready(resolver, || {
                            let _ = self.plan_create(
                                m,
                                side,
                                record,
                                own_global.clone(),
                                key.clone(),
                                resolver,
                            );
                        })
                        .await?;
                        match self.plan_create(m, side, record, own_global, key.clone(), resolver) {
                            Planned::Create(create) => work.creates.push(create),
                            Planned::Park(parking) => work.parked.push(parking),
                            Planned::Wait(parking) => work.deferred.push(parking),
                        }
                    }
                    1 => {
                        let candidate_id = candidates[0].clone();
                        let Some(candidate) = other_read
                            .records
                            .get(&candidate_id)
                            .or_else(|| fetched.get(&candidate_id))
                            .cloned()
                        else {
                            continue;
                        };
                        claimed.insert((other_side, candidate_id.clone()));
                        let other_rt = m.side(other_side);
                        let candidate_global = self
                            .store
                            .link_by_record(
                                identity,
                                &RecordKey::new(&other_rt.system, &other_rt.entity, &candidate_id),
                            )
                            .await?
                            .map(|l| l.global_id);
                        let (global, new_global) = match (own_global, candidate_global) {
                            (Some(a), Some(b)) if a != b => {
                                work.parked.push(Parking {
                                    side,
                                    id: record.id.clone(),
                                    reason: format!(
                                        "matches {} `{candidate_id}` by key, but the two are already different {identity}s ({} and {}); link them by hand or fix the data",
                                        other_rt.system,
                                        a.as_str(),
                                        b.as_str()
                                    ),
                                    field: None,
                                    value: key.clone(),
                                });
                                continue;
                            }
                            (Some(a), _) => (a, false),
                            (None, Some(b)) => (b, false),
                            (None, None) => (GlobalId::new(String::new()), true),
                        };
                        let (source_record, target_record) = match side {
                            Side::Source => (record.clone(), candidate),
                            Side::Target => (candidate, record.clone()),
                        };
                        self.links_ready(resolver, || {
                            let _ = self.merge_pair(
                                m,
                                global.clone(),
                                &source_record,
                                &target_record,
                                None,
                                resolver,
                                &mut MappingWork::default(),
                            );
                        })
                        .await?;
                        match self.merge_pair(
                            m,
                            global,
                            &source_record,
                            &target_record,
                            None,
                            resolver,
                            &mut work,
                        ) {
                            Ok(Some(mut pair_plan)) => {
                                pair_plan.new_links = vec![
                                    (Side::Source, source_record.id.clone()),
                                    (Side::Target, target_record.id.clone()),
                                ];
                                pair_plan.new_global = new_global;
                                work.pairs.push(pair_plan);
                            }
                            Ok(None) => {}
                            Err(parking) => work.parked.push(parking),
                        }
                    }
                    _ => {
                        let reason = format!(
                            "ambiguous match: {} records of {} {} have the same match key; link one by hand or make the key unique",
                            candidates.len(),
                            m.side(other_side).system,
                            m.side(other_side).entity
                        );
                        work.ambiguous.push(Action::Ambiguous {
                            mapping: m.name.clone(),
                            side,
                            record_id: record.id.clone(),
                            key: key.clone().unwrap_or_default(),
                            candidates: candidates.clone(),
                        });
                        work.parked.push(Parking {
                            side,
                            id: record.id.clone(),
                            reason,
                            field: None,
                            value: key.clone(),
                        });
                    }
                }
            }
        }
        // Match keys of linked records too, so later records can find them.
        let keyed: HashSet<(Side, String)> = work
            .record_keys
            .iter()
            .map(|(side, id, _)| (*side, id.clone()))
            .collect();
        for (side, read) in [(Side::Source, source), (Side::Target, target)] {
            for record in read.records.values() {
                if !keyed.contains(&(side, record.id.clone())) {
                    work.record_keys.push((
                        side,
                        record.id.clone(),
                        match_key(plan, side, &record.data),
                    ));
                }
            }
        }
        Ok(work)
    }

    /// Records of `side` with match key `key` that are free to link: read in this pass or
    /// known from earlier ones, and not in a pair of this mapping or claimed in this pass.
    #[allow(clippy::too_many_arguments)]
    async fn candidates(
        &self,
        m: &MappingRuntime,
        side: Side,
        key: &str,
        read: &SideRead,
        pair_of_source: &HashMap<&str, &PairState>,
        pair_of_target: &HashMap<&str, &PairState>,
        claimed: &HashSet<(Side, String)>,
    ) -> Result<Vec<String>, EngineError> {
        let mut ids: Vec<String> = read
            .records
            .values()
            .filter(|r| match_key(&m.plan, side, &r.data).as_deref() == Some(key))
            .map(|r| r.id.clone())
            .collect();
        for id in self.store.find_record_keys(&m.name, side, key).await? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let paired = match side {
            Side::Source => pair_of_source,
            Side::Target => pair_of_target,
        };
        ids.retain(|id| {
            !paired.contains_key(id.as_str()) && !claimed.contains(&(side, id.clone()))
        });
        // Records known from earlier passes may be paired without being read in this one.
        let unread: Vec<String> = ids
            .iter()
            .filter(|id| !read.records.contains_key(*id))
            .cloned()
            .collect();
        if !unread.is_empty() {
            let paired_elsewhere: HashSet<String> = self
                .store
                .pair_states_of_records(&m.name, side, &unread)
                .await?
                .into_iter()
                .map(|p| match side {
                    Side::Source => p.source_id,
                    Side::Target => p.target_id,
                })
                .collect();
            ids.retain(|id| !paired_elsewhere.contains(id));
        }
        Ok(ids)
    }

    /// The hash of a record's mapped fields, in the target's terms (a source record mapped
    /// forward): the content the engine compares to tell whether a record changed.
    fn content_hash(
        &self,
        m: &MappingRuntime,
        side: Side,
        data: &Value,
        resolver: &LinkResolver,
    ) -> Option<String> {
        match side {
            Side::Source => mapping::apply_forward_existing(&m.plan, data, resolver)
                .ok()
                .map(|body| fields_hash(&Canonical::of(&m.plan, &body).into_fields())),
            Side::Target => Some(fields_hash(&synced_fields(&m.plan, data))),
        }
    }

    /// Plans the create of `record`'s counterpart on the other side.
    fn plan_create(
        &self,
        m: &MappingRuntime,
        side: Side,
        record: &Record,
        own_global: Option<GlobalId>,
        key: Option<String>,
        resolver: &LinkResolver,
    ) -> Planned {
        let plan = &m.plan;
        let mapped = match side {
            Side::Source => mapping::apply_forward(plan, &record.data, resolver),
            Side::Target => mapping::apply_inverse(plan, &record.data, resolver),
        };
        let mut body = match mapped {
            Ok(body) => body,
            Err(error) if error.waits_for_references() => {
                return Planned::Wait(self.waiting(m, side, &record.id, &error));
            }
            Err(error) => return Planned::Park(parking_from(side, &record.id, &error)),
        };
        // The base is in the target's terms: the created target record, or the source
        // record as it maps forward.
        let fields = match side {
            Side::Source => Canonical::of(plan, &body).into_fields(),
            Side::Target => Canonical::of(plan, &record.data).into_fields(),
        };
        shape_body(&mut body, &m.side(other(side)).fields, None);
        let (global_id, new_global) = match own_global {
            Some(global) => (global, false),
            None => (GlobalId::new(String::new()), true),
        };
        Planned::Create(Create {
            on: other(side),
            from_id: record.id.clone(),
            global_id,
            new_global,
            body,
            fields,
            match_values: key,
        })
    }

    /// A record that waits for referenced records, with a reason that names each reference,
    /// the mapping whose link is missing and what would make it: the referenced mapping
    /// creating the record on the other side, or, where that mapping never creates records
    /// from this side, the record being set up there first.
    fn waiting(&self, m: &MappingRuntime, side: Side, id: &str, error: &RecordError) -> Parking {
        let from = m.side(side);
        let mut parts: Vec<String> = Vec::new();
        for rule_error in &error.errors {
            let Some(name) = &rule_error.reference else {
                continue;
            };
            let value = rule_error.value.clone().unwrap_or_default();
            let Some(referenced) = self.mappings.iter().find(|r| &r.name == name) else {
                parts.push(format!(
                    "`{}` names {value}, not linked through `{name}` yet",
                    rule_error.rule
                ));
                continue;
            };
            let (from_side, to_side) = if referenced.source.system == from.system {
                (Side::Source, Side::Target)
            } else {
                (Side::Target, Side::Source)
            };
            let (from_rt, to_rt) = (referenced.side(from_side), referenced.side(to_side));
            let creates = match from_side {
                Side::Source => referenced.spec.direction.forward(),
                Side::Target => referenced.spec.direction.backward(),
            };
            let hint = if creates {
                format!(
                    "`{name}` makes it when it syncs that {} {} record: check that the record exists and is not parked there",
                    from_rt.system, from_rt.entity
                )
            } else {
                format!(
                    "`{name}` never creates {} {} from {}, so it has to be set up in {} first, where it is linked by its match key",
                    to_rt.system, to_rt.entity, from_rt.system, to_rt.system
                )
            };
            parts.push(format!(
                "`{}` names {} {} {value}, which has no linked {} {} ({hint})",
                rule_error.rule, from_rt.system, from_rt.entity, to_rt.system, to_rt.entity
            ));
        }
        let first = error
            .errors
            .iter()
            .find(|e| e.kind == crate::mapping::RuleErrorKind::ReferenceNotLinked);
        Parking {
            side,
            id: id.to_owned(),
            reason: format!(
                "waiting for a referenced record: {}; retried on every run",
                parts.join("; ")
            ),
            field: first.map(|e| e.rule.clone()),
            value: first.and_then(|e| e.value.clone()),
        }
    }

    /// Merges one pair. `Ok(None)`: nothing to do and nothing to record.
    #[allow(clippy::too_many_arguments)]
    fn merge_pair(
        &self,
        m: &MappingRuntime,
        global_id: GlobalId,
        source: &Record,
        target: &Record,
        pair: Option<&PairState>,
        resolver: &LinkResolver,
        work: &mut MappingWork,
    ) -> Result<Option<PairPlan>, Parking> {
        let plan = &m.plan;
        let forward = match mapping::apply_forward_existing(plan, &source.data, resolver) {
            Ok(value) => value,
            Err(error) if error.waits_for_references() => {
                work.deferred
                    .push(self.waiting(m, Side::Source, &source.id, &error));
                return Ok(None);
            }
            Err(error) => return Err(parking_from(Side::Source, &source.id, &error)),
        };
        let source_fields = Canonical::of(plan, &forward).into_fields();
        let target_fields = synced_fields(plan, &target.data);
        let source_hash = fields_hash(&source_fields);
        let target_hash = fields_hash(&target_fields);
        let base: Option<Fields> = pair.map(|p| match &p.base {
            Value::Object(map) => without_create_only(
                plan,
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ),
            _ => BTreeMap::new(),
        });
        // A side whose content hash is what the engine last saw or wrote has not changed,
        // even if the system normalised the values it stored: it counts as the base.
        let unchanged = |seen: &SideSeen, hash: &str| seen.hash.as_deref() == Some(hash);
        let mut source_view = match (pair, &base) {
            (Some(p), Some(base)) if unchanged(&p.source, &source_hash) => base.clone(),
            _ => source_fields.clone(),
        };
        // A two-way field whose source holds exactly what the base reads back as (a quote
        // Accepted for a paid shop order, an order date for an order time) has not changed
        // on the source, though it maps forward to something else: a value map or a type
        // that is not one-to-one. Only a different source value is an edit.
        if let Some(base) = &base {
            for rule in plan
                .rules
                .rules
                .iter()
                .filter(|r| r.direction == Direction::Both)
            {
                let field = rule.target.as_str();
                let (Some(now), Some(was)) = (source_view.get(field), base.get(field)) else {
                    continue;
                };
                if now != was && holds_base(plan, rule, &source.data, &target.data, was, resolver) {
                    source_view.insert(field.to_owned(), was.clone());
                }
            }
        }
        let target_view = match (pair, &base) {
            (Some(p), Some(base)) if unchanged(&p.target, &target_hash) => base.clone(),
            _ => target_fields.clone(),
        };
        let directions: HashMap<&str, Direction> = plan
            .rules
            .rules
            .iter()
            .map(|r| (r.target.as_str(), r.direction))
            .collect();
        let direction = |field: &str| directions.get(field).copied().unwrap_or(m.spec.direction);
        let policy = MergePolicy {
            conflict: m.spec.conflict,
            tie_breaker: m.spec.tie_breaker,
            keep_filled: m.spec.keep_filled,
        };
        let changes_only: HashSet<&str> = plan
            .rules
            .rules
            .iter()
            .filter(|r| r.changes_only)
            .map(|r| r.target.as_str())
            .collect();
        let merged = merge::merge_with(
            base.as_ref(),
            Version {
                fields: &source_view,
                modified: source.modified,
            },
            Version {
                fields: &target_view,
                modified: target.modified,
            },
            policy,
            &direction,
            &|field: &str| changes_only.contains(field),
        );
        let mut updates = Vec::new();
        if !merged.to_target.is_empty() {
            let changes = field_changes(&merged.to_target, &target_fields);
            updates.push(Update {
                on: Side::Target,
                id: target.id.clone(),
                body: {
                    let mut body = target_update(
                        plan,
                        &target.data,
                        &forward,
                        &source_fields,
                        &merged.to_target,
                    );
                    shape_body(&mut body, &m.target.fields, Some(&target.data));
                    body
                },
                changes,
                read_hash: target_hash.clone(),
            });
        }
        if !merged.to_source.is_empty() {
            // The target record with the values to send back, mapped backwards through the
            // rules of those fields only.
            let mut overlaid = target.data.clone();
            set_fields(plan, &mut overlaid, &merged.to_source);
            let selected: HashSet<&str> = merged.to_source.keys().map(String::as_str).collect();
            match mapping::apply_inverse_selected_onto(
                plan,
                &overlaid,
                resolver,
                &selected,
                &source.data,
            ) {
                Ok(mut body) if body.as_object().is_some_and(|o| !o.is_empty()) => {
                    shape_body(&mut body, &m.source.fields, Some(&source.data));
                    let changes = field_changes(&merged.to_source, &source_fields);
                    updates.push(Update {
                        on: Side::Source,
                        id: source.id.clone(),
                        body,
                        changes,
                        read_hash: source_hash.clone(),
                    });
                }
                Ok(_) => {}
                Err(error) if error.waits_for_references() => {
                    work.deferred
                        .push(self.waiting(m, Side::Target, &target.id, &error));
                    return Ok(None);
                }
                Err(error) => return Err(parking_from(Side::Target, &target.id, &error)),
            }
        }
        if updates.is_empty()
            && pair.is_some()
            && pair.is_some_and(|p| p.base_hash == fields_hash(&merged.base))
        {
            // Nothing changed and the stored state is current.
            if pair.is_some_and(|p| {
                unchanged(&p.source, &source_hash) && unchanged(&p.target, &target_hash)
            }) {
                work.ok_ids.push((Side::Source, source.id.clone()));
                work.ok_ids.push((Side::Target, target.id.clone()));
                return Ok(None);
            }
        }
        let written_hash = fields_hash(&merged.base);
        Ok(Some(PairPlan {
            global_id,
            source_id: source.id.clone(),
            target_id: target.id.clone(),
            source_seen: SideSeen {
                hash: Some(if merged.to_source.is_empty() {
                    source_hash
                } else {
                    written_hash.clone()
                }),
                modified_at: source.modified,
            },
            target_seen: SideSeen {
                hash: Some(if merged.to_target.is_empty() {
                    target_hash
                } else {
                    written_hash
                }),
                modified_at: target.modified,
            },
            base: merged.base,
            updates,
            conflicts: merged.conflicts,
            synced_at: pair.map(|p| p.synced_at),
            new_links: Vec::new(),
            new_global: false,
        }))
    }

    /// Finds the records that crashed creates left behind, and links them.
    async fn resolve_intents(
        &self,
        m: &MappingRuntime,
        source: &SideRead,
        target: &SideRead,
    ) -> Result<(), EngineError> {
        let intents = self.store.open_intents(&m.name).await?;
        for intent in intents {
            let (side_read, rt) = match intent.side {
                Side::Source => (source, &m.source),
                Side::Target => (target, &m.target),
            };
            let key = intent.match_values.as_str().map(str::to_owned);
            let mut found: Option<String> = None;
            if let Some(key) = &key {
                let mut ids: Vec<String> = side_read
                    .records
                    .values()
                    .filter(|r| {
                        match_key(&m.plan, intent.side, &r.data).as_deref() == Some(key.as_str())
                    })
                    .map(|r| r.id.clone())
                    .collect();
                for id in self
                    .store
                    .find_record_keys(&m.name, intent.side, key)
                    .await?
                {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                if ids.len() == 1 {
                    found = ids.pop();
                }
            }
            if found.is_none() {
                // Without a key, a record with exactly the content the create sent.
                found = side_read
                    .records
                    .values()
                    .filter(|r| {
                        let fields = match intent.side {
                            Side::Target => Canonical::of(&m.plan, &r.data).into_fields(),
                            Side::Source => {
                                match mapping::apply_forward(&m.plan, &r.data, &KeepIds) {
                                    Ok(body) => Canonical::of(&m.plan, &body).into_fields(),
                                    Err(_) => return false,
                                }
                            }
                        };
                        fields_hash(&fields) == intent.payload_hash
                    })
                    .map(|r| r.id.clone())
                    .next();
            }
            let mut tx = self.store.transaction().await?;
            match found {
                Some(id)
                    if tx
                        .link_by_record(m.identity(), &RecordKey::new(&rt.system, &rt.entity, &id))
                        .await?
                        .is_none() =>
                {
                    info!(mapping = %m.name, record = %id, "a create interrupted by a crash is found and linked");
                    tx.link(
                        m.identity(),
                        &intent.global_id,
                        &RecordKey::new(&rt.system, &rt.entity, &id),
                        LinkOrigin::Create,
                    )
                    .await?;
                    tx.complete_intent(&intent.id, &id).await?;
                }
                _ => {
                    debug!(mapping = %m.name, intent = %intent.id.as_str(), "abandoning an intent whose create did not happen");
                    tx.abandon_intent(&intent.id).await?;
                }
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Sends the writes of one pass and records their results, a batch per transaction.
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        m: &MappingRuntime,
        options: &RunOptions,
        run_id: Option<&RunId>,
        work: MappingWork,
        report: &mut MappingReport,
        parked_before: &[crate::store::ParkedRecord],
        run_started: chrono::DateTime<Utc>,
        resolver: &LinkResolver,
    ) -> Result<(), EngineError> {
        let identity = m.identity().to_owned();
        let was_parked: HashSet<(Side, &str)> = parked_before
            .iter()
            .map(|p| (p.side, p.record_id.as_str()))
            .collect();
        // Records that only waited for a reference during this run are not reported as
        // unparked when they go through.
        let parked_by_earlier_runs: HashSet<(Side, &str)> = parked_before
            .iter()
            .filter(|p| p.first_parked_at < run_started)
            .map(|p| (p.side, p.record_id.as_str()))
            .collect();
        let mut done_ids: Vec<(Side, String)> = work.ok_ids;

        self.checkpoint(m, options).await?;
        // Record keys first, so a crash mid-way can still find what was read; only those
        // that differ from the stored ones are written.
        let mut stored: HashSet<(Side, String, String)> = HashSet::new();
        for side in [Side::Source, Side::Target] {
            let ids: Vec<String> = work
                .record_keys
                .iter()
                .filter(|(s, _, _)| *s == side)
                .map(|(_, id, _)| id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            for (id, key) in self.store.record_keys_of(&m.name, side, &ids).await? {
                stored.insert((side, id, key));
            }
        }
        let stored_ids: HashSet<(Side, &str)> = stored
            .iter()
            .map(|(side, id, _)| (*side, id.as_str()))
            .collect();
        let mut tx = self.store.transaction().await?;
        for (side, id, key) in &work.record_keys {
            let unchanged = match key {
                Some(key) => stored.contains(&(*side, id.clone(), key.clone())),
                None => !stored_ids.contains(&(*side, id.as_str())),
            };
            if !unchanged {
                tx.put_record_key(&m.name, *side, id, key.as_deref())
                    .await?;
            }
        }
        tx.commit().await?;

        // Deletes and unlinks.
        for (side, id, global) in &work.deletes {
            let rt = m.side(*side);
            match rt.connector.delete(&rt.entity, id).await {
                Ok(_) => match side {
                    Side::Source => report.deleted_source += 1,
                    Side::Target => report.deleted_target += 1,
                },
                Err(error) if error.is_permanent() => {
                    self.store
                        .park(&park_of(m, parking_from_write(*side, id, &error)))
                        .await?;
                    report.parked += 1;
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
            let mut tx = self.store.transaction().await?;
            tx.unlink(&identity, &RecordKey::new(&rt.system, &rt.entity, id))
                .await?;
            tx.put_record_key(&m.name, *side, id, None).await?;
            tx.delete_pair_state(&m.name, global).await?;
            tx.commit().await?;
        }
        for (side, id, global) in &work.unlinks {
            let rt = m.side(*side);
            let mut tx = self.store.transaction().await?;
            tx.unlink(&identity, &RecordKey::new(&rt.system, &rt.entity, id))
                .await?;
            // The deleted record no longer stands for its match key.
            tx.put_record_key(&m.name, *side, id, None).await?;
            tx.delete_pair_state(&m.name, global).await?;
            tx.commit().await?;
            report.unlinked += 1;
        }
        if !work.forgotten.is_empty() || !work.revived.is_empty() {
            let mut tx = self.store.transaction().await?;
            for (side, id, hash) in &work.forgotten {
                tx.put_unlinked(&m.name, *side, id, hash).await?;
            }
            for (side, id) in &work.revived {
                tx.remove_unlinked(&m.name, *side, id).await?;
            }
            tx.commit().await?;
        }

        // Pairs: links made by match keys, updates, conflicts, new bases.
        for chunk in work.pairs.chunks(BATCH) {
            self.checkpoint(m, options).await?;
            // Per pair: the seen hashes of the sides as the systems stored them, when the
            // writes answered the stored record, so a value a system normalises is not taken
            // for an edit on the next read.
            // `Ok(None)`: a record moved since it was read; the pair waits for the next read.
            let mut results: Vec<Result<Option<StoredHashes>, Parking>> =
                Vec::with_capacity(chunk.len());
            for pair in chunk {
                if self.moved_since_read(m, pair, resolver).await? {
                    debug!(mapping = %m.name, source = %pair.source_id, target = %pair.target_id, "edited during the run; the update waits for the next read");
                    report.deferred += 1;
                    results.push(Ok(None));
                    continue;
                }
                let mut outcome = Ok(Some((None, None)));
                for update in &pair.updates {
                    let rt = m.side(update.on);
                    match rt
                        .connector
                        .update(&rt.entity, &update.id, update.body.clone())
                        .await
                    {
                        Ok(written) => {
                            if let Some(record) = &written.record {
                                self.links_ready(resolver, || {
                                    let _ = seen_hash(m, update.on, &record.data, resolver);
                                })
                                .await?;
                            }
                            let stored = written
                                .record
                                .as_ref()
                                .and_then(|record| seen_hash(m, update.on, &record.data, resolver));
                            if let Ok(Some(hashes)) = &mut outcome {
                                match update.on {
                                    Side::Source => hashes.0 = stored,
                                    Side::Target => hashes.1 = stored,
                                }
                            }
                            match update.on {
                                Side::Source => report.updated_source += 1,
                                Side::Target => report.updated_target += 1,
                            }
                        }
                        Err(error) if error.is_permanent() => {
                            outcome = Err(parking_from_write(
                                other(update.on),
                                if update.on == Side::Source {
                                    &pair.target_id
                                } else {
                                    &pair.source_id
                                },
                                &error,
                            ));
                            break;
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
                results.push(outcome);
            }
            let mut tx = self.store.transaction().await?;
            for (pair, result) in chunk.iter().zip(results) {
                match result {
                    Ok(None) => {}
                    Ok(Some((source_stored, target_stored))) => {
                        let global = if pair.new_global {
                            tx.new_global_id(&identity).await?
                        } else {
                            pair.global_id.clone()
                        };
                        for (side, id) in &pair.new_links {
                            let rt = m.side(*side);
                            tx.remove_unlinked(&m.name, *side, id).await?;
                            tx.link(
                                &identity,
                                &global,
                                &RecordKey::new(&rt.system, &rt.entity, id),
                                LinkOrigin::MatchKey,
                            )
                            .await?;
                        }
                        if !pair.new_links.is_empty() {
                            report.linked += 1;
                        }
                        if let Some(run_id) = run_id {
                            for conflict in &pair.conflicts {
                                tx.record_conflict(&NewConflict {
                                    run_id: run_id.clone(),
                                    mapping: m.name.clone(),
                                    global_id: global.clone(),
                                    field: conflict.field.clone(),
                                    source_value: conflict.source.clone().unwrap_or(Value::Null),
                                    target_value: conflict.target.clone().unwrap_or(Value::Null),
                                    base_value: conflict.base.clone(),
                                    resolution: conflict.reason.clone(),
                                    winner: conflict.winner,
                                })
                                .await?;
                                report.conflicts += 1;
                            }
                        }
                        tx.put_pair_state(&PairState {
                            mapping: m.name.clone(),
                            global_id: global,
                            source_id: pair.source_id.clone(),
                            target_id: pair.target_id.clone(),
                            base: Value::Object(
                                pair.base
                                    .iter()
                                    .map(|(k, v)| (k.clone(), v.clone()))
                                    .collect(),
                            ),
                            base_hash: fields_hash(&pair.base),
                            source: SideSeen {
                                hash: source_stored.or_else(|| pair.source_seen.hash.clone()),
                                modified_at: pair.source_seen.modified_at,
                            },
                            target: SideSeen {
                                hash: target_stored.or_else(|| pair.target_seen.hash.clone()),
                                modified_at: pair.target_seen.modified_at,
                            },
                            synced_at: Utc::now(),
                        })
                        .await?;
                        done_ids.push((Side::Source, pair.source_id.clone()));
                        done_ids.push((Side::Target, pair.target_id.clone()));
                    }
                    Err(parking) => {
                        tx.park(&park_of(m, parking)).await?;
                        report.parked += 1;
                    }
                }
            }
            tx.commit().await?;
        }

        // Creates, each recorded as an intent before it is sent.
        for chunk in work.creates.chunks(BATCH) {
            self.checkpoint(m, options).await?;
            let mut tx = self.store.transaction().await?;
            let mut prepared = Vec::with_capacity(chunk.len());
            for create in chunk {
                let global = if create.new_global {
                    tx.new_global_id(&identity).await?
                } else {
                    create.global_id.clone()
                };
                let from_rt = m.side(other(create.on));
                tx.link(
                    &identity,
                    &global,
                    &RecordKey::new(&from_rt.system, &from_rt.entity, &create.from_id),
                    LinkOrigin::Create,
                )
                .await?;
                let intent = tx
                    .record_intent(&NewIntent {
                        mapping: m.name.clone(),
                        side: create.on,
                        source_record_id: create.from_id.clone(),
                        global_id: global.clone(),
                        match_values: create
                            .match_values
                            .clone()
                            .map_or(Value::Null, Value::String),
                        payload_hash: fields_hash(&create.fields),
                    })
                    .await?;
                prepared.push((create, global, intent.id));
            }
            tx.commit().await?;
            for on in [Side::Source, Side::Target] {
                let group: Vec<&(&Create, GlobalId, crate::store::IntentId)> =
                    prepared.iter().filter(|(c, _, _)| c.on == on).collect();
                if group.is_empty() {
                    continue;
                }
                let rt = m.side(on);
                let bodies: Vec<Value> = group.iter().map(|(c, _, _)| c.body.clone()).collect();
                let results = rt.connector.create_many(&rt.entity, bodies).await;
                let mut tx = self.store.transaction().await?;
                for ((create, global, intent_id), result) in group.into_iter().zip(results) {
                    match result {
                        Ok(written) => {
                            tx.link(
                                &identity,
                                global,
                                &RecordKey::new(&rt.system, &rt.entity, &written.id),
                                LinkOrigin::Create,
                            )
                            .await?;
                            tx.complete_intent(intent_id, &written.id).await?;
                            let base = without_create_only(&m.plan, create.fields.clone());
                            let hash = fields_hash(&base);
                            // The created record as the system stored it. A value the system
                            // assigned to a field that flows only back (an order number) is
                            // not in the base: the created side then counts as changed since,
                            // so the next pass reads it and writes the value to the origin.
                            // Otherwise the stored form is what was written, normalised.
                            let stored_hash = match (&written.record, on) {
                                (Some(record), Side::Target) => {
                                    let stored = synced_fields(&m.plan, &record.data);
                                    let assigned = m.plan.rules.rules.iter().any(|r| {
                                        r.direction == Direction::TargetToSource
                                            && stored
                                                .get(r.target.as_str())
                                                .is_some_and(|v| !v.is_null())
                                            && stored.get(r.target.as_str())
                                                != base.get(r.target.as_str())
                                    });
                                    if assigned {
                                        hash.clone()
                                    } else {
                                        fields_hash(&stored)
                                    }
                                }
                                _ => hash.clone(),
                            };
                            let (source_id, target_id) = match on {
                                Side::Target => (create.from_id.clone(), written.id.clone()),
                                Side::Source => (written.id.clone(), create.from_id.clone()),
                            };
                            tx.put_pair_state(&PairState {
                                mapping: m.name.clone(),
                                global_id: global.clone(),
                                source_id,
                                target_id,
                                base: Value::Object(
                                    base.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                                ),
                                base_hash: hash.clone(),
                                source: SideSeen {
                                    hash: Some(if on == Side::Source {
                                        stored_hash.clone()
                                    } else {
                                        hash.clone()
                                    }),
                                    modified_at: None,
                                },
                                target: SideSeen {
                                    hash: Some(if on == Side::Target {
                                        stored_hash
                                    } else {
                                        hash
                                    }),
                                    modified_at: written.record.as_ref().and_then(|r| r.modified),
                                },
                                synced_at: Utc::now(),
                            })
                            .await?;
                            if let Some(key) = &create.match_values {
                                tx.put_record_key(&m.name, on, &written.id, Some(key))
                                    .await?;
                            }
                            match on {
                                Side::Source => report.created_source += 1,
                                Side::Target => report.created_target += 1,
                            }
                            done_ids.push((other(on), create.from_id.clone()));
                        }
                        Err(error) if !error.may_have_applied() => {
                            tx.abandon_intent(intent_id).await?;
                            tx.park(&park_of(
                                m,
                                parking_from_write(other(on), &create.from_id, &error),
                            ))
                            .await?;
                            report.parked += 1;
                        }
                        Err(error) => {
                            // The create may have happened: the intent stays open and the next
                            // run finds the record before creating anything.
                            warn!(mapping = %m.name, %error, "a create may have happened; it is resolved on the next run");
                        }
                    }
                }
                tx.commit().await?;
            }
        }

        // Parked records and unparking.
        let mut tx = self.store.transaction().await?;
        for parking in work.parked {
            tx.park(&park_of(m, parking)).await?;
            report.parked += 1;
        }
        for (side, id) in &done_ids {
            if was_parked.contains(&(*side, id.as_str()))
                && tx.unpark(&m.name, *side, id).await?
                && parked_by_earlier_runs.contains(&(*side, id.as_str()))
            {
                report.unparked += 1;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The hash of a record's mapped content as merges compare it: the target as it is, the
/// source mapped forward; `None` when the source no longer maps.
fn seen_hash(
    m: &MappingRuntime,
    side: Side,
    data: &Value,
    resolver: &LinkResolver,
) -> Option<String> {
    match side {
        Side::Target => Some(fields_hash(&synced_fields(&m.plan, data))),
        Side::Source => mapping::apply_forward_existing(&m.plan, data, resolver)
            .ok()
            .map(|body| fields_hash(&Canonical::of(&m.plan, &body).into_fields())),
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
    }
}

fn count_updates(work: &MappingWork, side: Side) -> u64 {
    work.pairs
        .iter()
        .flat_map(|p| &p.updates)
        .filter(|u| u.on == side)
        .count() as u64
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
        for conflict in &pair.conflicts {
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

    fn shipped(name: &str) -> Arc<MappingPlan> {
        let project =
            Project::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows"));
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
        let plan = shipped("keap-companies-to-customwebshop-customers");
        let current = json!({ "email": "a@example.com", "addresses": [
            { "type": "billing", "line1": "Munkegata 4", "city": "Trondheim", "zip": "7011", "country": "NO" },
            { "type": "shipping", "line1": "Lager 1", "city": "Oslo" } ] });
        let forward = json!({ "addresses": [{ "type": "billing", "line1": "Nyveien 1", "city": "Trondheim" }] });
        let source_fields = Canonical::of(&plan, &forward).into_fields();
        let changed: Fields = [(
            "addresses[type=billing].line1".to_owned(),
            json!("Nyveien 1"),
        )]
        .into();
        assert_eq!(
            target_update(&plan, &current, &forward, &source_fields, &changed),
            json!({ "addresses": [
                { "type": "billing", "line1": "Nyveien 1", "city": "Trondheim", "zip": "7011", "country": "NO" },
                { "type": "shipping", "line1": "Lager 1", "city": "Oslo" } ] })
        );

        // Order lines as the mapping made them (ids as numbers), not in canonical text.
        let plan = shipped("salesforce-orders-to-customerp-orders");
        let forward =
            json!({ "lines": [{ "product_id": 8, "quantity": 2.0, "unit_price": "89.5" }] });
        let source_fields = Canonical::of(&plan, &forward).into_fields();
        let changed: Fields = [("lines".to_owned(), source_fields["lines"].clone())].into();
        assert_eq!(
            target_update(
                &plan,
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
}
