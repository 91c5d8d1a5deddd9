//! The planner of one chunk of a pass: from the records read, their pair states and what
//! the pass looked up for them ([`Lookups`]), the work to do: merges of linked pairs, links
//! by match key, creates, deletes, parked records and conflicts. No store and no connector:
//! the link resolver answers from the links loaded before planning and notes an id it
//! lacks, and the pass loads those and plans again ([`Engine::plan`]). Unit-tested without
//! HTTP below, like `merge.rs`.

use super::*;

/// Pair states by record id, on one side.
pub(super) type PairOf<'p> = HashMap<&'p str, &'p PairState>;

/// What planning a chunk knows besides what was read and looked up: the mapping and the
/// settings of its pass.
pub(super) struct Planner<'a> {
    pub m: &'a MappingRuntime,
    /// The engine's mappings: a record waiting for a reference is told which one makes it.
    pub mappings: &'a [Arc<MappingRuntime>],
    pub resolver: &'a LinkResolver,
    /// The fields of the mapping's open conflicts, held or chosen, by global id.
    pub decisions: &'a Decisions,
    /// A resync: every pair read is merged field by field, its stored content hashes not
    /// trusted to say that a side is as it was.
    pub compare_all: bool,
    /// The side read whole beside chunks of the other: its records without a counterpart
    /// wait for a later chunk, which may hold their match.
    pub hold: Option<Side>,
}

/// What planning a chunk needs beyond its reads, looked up by the pass beforehand
/// ([`Engine::look_up`]): store lookups for the chunk at once, and records read by id.
#[derive(Default)]
pub(super) struct Lookups<'r> {
    /// The pair states of the records read or gone, by record id on each side.
    pub paired: Sides<PairOf<'r>>,
    /// What the deletions found do: deletes, pairs to forget, their survivors.
    pub deletions: plan::DeletionPlan,
    /// The global ids of unpaired records read that other mappings of the identity linked.
    pub links: Sides<HashMap<String, GlobalId>>,
    /// Pairs to merge: global id, source id, target id, and the pair's state when it has
    /// one (a record linked by another mapping makes a pair without a state yet).
    pub touched: Vec<(GlobalId, String, String, Option<&'r PairState>)>,
    /// Records without a counterpart in this mapping, with their match keys.
    pub unlinked: Sides<Vec<(&'r Record, Option<String>)>>,
    /// Paired records read as their pair last saw them: nothing to do.
    pub ok: Vec<(Side, String)>,
    /// Records read by id besides the reads: survivors of forgotten pairs, the side of a
    /// touched pair that was not read, candidates known from earlier passes. `None`: it no
    /// longer exists.
    pub fetched: Sides<HashMap<String, Option<Record>>>,
    /// Unlinked records whose counterpart was deleted, with their content hash then.
    pub forgotten: HashMap<(Side, String), String>,
    /// Records of earlier passes by match key, free in this mapping (not read again here).
    pub known_keys: Sides<HashMap<String, Vec<String>>>,
    /// The global ids of every record that could be a candidate, linked by other mappings.
    pub candidate_links: Sides<HashMap<String, GlobalId>>,
}

impl Lookups<'_> {
    /// A record of `side` read in the pass or fetched by id, while it exists.
    fn record<'a>(
        &'a self,
        reads: &'a Sides<SideRead>,
        side: Side,
        id: &str,
    ) -> Option<&'a Record> {
        reads[side]
            .records
            .get(id)
            .or_else(|| self.fetched[side].get(id).and_then(Option::as_ref))
    }
}

impl Planner<'_> {
    /// Sorts the records of a chunk into pairs, matches, creates, deletes and parked
    /// records. Pure: everything it needs was read or looked up before.
    pub(super) fn plan_chunk(&self, reads: &Sides<SideRead>, lookups: &Lookups<'_>) -> MappingWork {
        let m = self.m;
        let compiled = &m.compiled;
        let identity = m.identity();
        let mut work = MappingWork {
            deletes: lookups.deletions.deletes.clone(),
            unlinks: lookups.deletions.unlinks.clone(),
            ok_ids: lookups.ok.clone(),
            ..MappingWork::default()
        };
        // A survivor is remembered with its mapped content as it is now, read in this pass
        // or fetched, so that it is not created again on the other side on a later run.
        for (side, id, seen) in &lookups.deletions.survivors {
            let hash = lookups
                .record(reads, *side, id)
                .and_then(|r| seen_hash(m, *side, &r.data, self.resolver))
                .or_else(|| seen.clone());
            if let Some(hash) = hash {
                work.forgotten.push((*side, id.clone(), hash));
            }
        }

        // Linked pairs, merged in the order met.
        for (global, source_id, target_id, pair) in &lookups.touched {
            let (Some(source_record), Some(target_record)) = (
                lookups.record(reads, Side::Source, source_id),
                lookups.record(reads, Side::Target, target_id),
            ) else {
                continue;
            };
            match self.merge_pair(
                global.clone(),
                source_record,
                target_record,
                *pair,
                &mut work,
            ) {
                Ok(Some(pair_decision)) => work.pairs.push(pair_decision),
                Ok(None) => {}
                Err(parking) => work.parked.push(parking),
            }
        }

        // Unlinked records: match, or create on the other side.
        let mut claimed: HashSet<(Side, String)> = HashSet::new();
        for side in Side::BOTH {
            let allowed = m.spec.direction.from(side);
            for (record, key) in &lookups.unlinked[side] {
                let record: &Record = record;
                if claimed.contains(&(side, record.id.clone())) {
                    continue;
                }
                // A record whose counterpart was deleted stays forgotten while it is as it
                // was then; once a mapped field changes it syncs again.
                if let Some(hash) = lookups.forgotten.get(&(side, record.id.clone())) {
                    if seen_hash(m, side, &record.data, self.resolver).as_ref() == Some(hash) {
                        continue;
                    }
                    work.revived.push((side, record.id.clone()));
                }
                work.record_keys
                    .push((side, record.id.clone(), key.clone()));
                if side == Side::Source {
                    match mapping::accepts(compiled, &record.data) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(error) => {
                            work.parked.push(parking_from(side, &record.id, &error));
                            continue;
                        }
                    }
                }
                // The other side is read in chunks: a later chunk may hold its counterpart,
                // and its records look for this one as they come.
                if self.hold == Some(side) {
                    work.held.push(record.id.clone());
                    continue;
                }
                let own_global = lookups.links[side].get(&record.id).cloned();
                let other_side = side.other();
                let other_read = &reads[other_side];
                let candidates = match key {
                    Some(key) => candidates(
                        other_side,
                        key,
                        lookups.known_keys[other_side]
                            .get(key)
                            .map_or(&[], Vec::as_slice),
                        other_read,
                        &lookups.paired[other_side],
                        &claimed,
                    ),
                    None => Vec::new(),
                };
                // Candidates known only from earlier passes were read again: one that no
                // longer exists is no candidate, and its match key is forgotten.
                let mut live = Vec::with_capacity(candidates.len());
                for id in candidates {
                    if lookups.record(reads, other_side, &id).is_some() {
                        live.push(id);
                    } else {
                        work.record_keys.push((other_side, id, None));
                    }
                }
                let links = &lookups.candidate_links[other_side];
                match plan::plan_match(live, allowed, own_global.as_ref(), links) {
                    plan::MatchPlan::Nothing => {}
                    plan::MatchPlan::Create => {
                        match self.create(side, record, own_global, key.clone()) {
                            Decision::Create(create) => work.creates.push(create),
                            Decision::Park(parking) => work.parked.push(parking),
                            Decision::Wait(parking) => work.deferred.push(parking),
                        }
                    }
                    plan::MatchPlan::Different {
                        candidate,
                        own,
                        theirs,
                    } => {
                        claimed.insert((other_side, candidate.clone()));
                        let other_rt = m.side(other_side);
                        work.parked.push(Parking {
                            side,
                            id: record.id.clone(),
                            reason: format!(
                                "matches {} `{candidate}` by key, but the two are already different {identity}s ({} and {}); link them by hand or fix the data",
                                other_rt.system,
                                own.as_str(),
                                theirs.as_str()
                            ),
                            field: None,
                            value: key.clone(),
                        });
                    }
                    plan::MatchPlan::Link { candidate, global } => {
                        let Some(candidate_record) = lookups.record(reads, other_side, &candidate)
                        else {
                            continue;
                        };
                        claimed.insert((other_side, candidate));
                        let (global, new_global) = global_or_new(global);
                        let (source_record, target_record) = match side {
                            Side::Source => (record, candidate_record),
                            Side::Target => (candidate_record, record),
                        };
                        match self.merge_pair(global, source_record, target_record, None, &mut work)
                        {
                            Ok(Some(mut pair_decision)) => {
                                pair_decision.new_links = vec![
                                    (Side::Source, source_record.id.clone()),
                                    (Side::Target, target_record.id.clone()),
                                ];
                                pair_decision.new_global = new_global;
                                work.pairs.push(pair_decision);
                            }
                            Ok(None) => {}
                            Err(parking) => work.parked.push(parking),
                        }
                    }
                    plan::MatchPlan::Ambiguous(candidates) => {
                        let reason = format!(
                            "ambiguous match: {} records of {} {} have the same match key; link one by hand or make the key unique",
                            candidates.len(),
                            m.side(other_side).system,
                            m.side(other_side).entity
                        );
                        work.parked.push(Parking {
                            side,
                            id: record.id.clone(),
                            reason,
                            field: None,
                            value: key.clone(),
                        });
                        work.ambiguous.push(Action::Ambiguous {
                            mapping: m.name.clone(),
                            side,
                            record_id: record.id.clone(),
                            key: key.clone().unwrap_or_default(),
                            candidates,
                        });
                    }
                }
            }
        }
        // What the held side keeps waiting: its records no record of this chunk claimed.
        if let Some(side) = self.hold {
            work.held
                .retain(|id| !claimed.contains(&(side, id.clone())));
            if reads[side].carried {
                work.released = claimed
                    .iter()
                    .filter(|(s, _)| *s == side)
                    .map(|(_, id)| id.clone())
                    .collect();
            }
        }
        // Match keys of linked records too, so later records can find them; not those of
        // records at rest (their mapped content is as when their key was stored, and a
        // paired record is no candidate for a match anyway): a full listing of an entity
        // costs no key work for the records that did not change.
        let keyed: HashSet<(Side, &str)> = work
            .record_keys
            .iter()
            .map(|(side, id, _)| (*side, id.as_str()))
            .chain(work.ok_ids.iter().map(|(side, id)| (*side, id.as_str())))
            .collect();
        let mut linked = Vec::new();
        for side in Side::BOTH {
            let read = &reads[side];
            for record in read.records.values().filter(|_| !read.carried) {
                if !keyed.contains(&(side, record.id.as_str())) {
                    linked.push((
                        side,
                        record.id.clone(),
                        match_key(compiled, side, &record.data),
                    ));
                }
            }
        }
        work.record_keys.extend(linked);
        work
    }

    /// Plans the create of `record`'s counterpart on the other side.
    fn create(
        &self,
        side: Side,
        record: &Record,
        own_global: Option<GlobalId>,
        key: Option<String>,
    ) -> Decision {
        let (m, resolver) = (self.m, self.resolver);
        let compiled = &m.compiled;
        let mapped = match side {
            Side::Source => mapping::apply_forward(compiled, &record.data, resolver),
            Side::Target => mapping::apply_inverse(compiled, &record.data, resolver),
        };
        let mut body = match mapped {
            Ok(body) => body,
            Err(error) if error.waits_for_references() => {
                return Decision::Wait(self.waiting(side, &record.id, &error));
            }
            Err(error) => return Decision::Park(parking_from(side, &record.id, &error)),
        };
        // The base is in the target's terms: the created target record, or the source
        // record as it maps forward.
        let fields = match side {
            Side::Source => Canonical::of(compiled, &body).into_fields(),
            Side::Target => Canonical::of(compiled, &record.data).into_fields(),
        };
        shape_body(&mut body, &m.side(side.other()).fields, None);
        let (global_id, new_global) = global_or_new(own_global);
        Decision::Create(Create {
            on: side.other(),
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
    fn waiting(&self, side: Side, id: &str, error: &RecordError) -> Parking {
        let m = self.m;
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
            let creates = referenced.spec.direction.from(from_side);
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
    fn merge_pair(
        &self,
        global_id: GlobalId,
        source: &Record,
        target: &Record,
        pair: Option<&PairState>,
        work: &mut MappingWork,
    ) -> Result<Option<PairDecision>, Parking> {
        let (m, resolver) = (self.m, self.resolver);
        let compiled = &m.compiled;
        let forward = match mapping::apply_forward_existing(compiled, &source.data, resolver) {
            Ok(value) => value,
            Err(error) if error.waits_for_references() => {
                work.deferred
                    .push(self.waiting(Side::Source, &source.id, &error));
                return Ok(None);
            }
            Err(error) => return Err(parking_from(Side::Source, &source.id, &error)),
        };
        let source_fields = Canonical::of(compiled, &forward).into_fields();
        let target_fields = synced_fields(compiled, &target.data);
        let source_hash = fields_hash(&source_fields);
        let target_hash = fields_hash(&target_fields);
        let base: Option<Fields> = pair.map(|p| match &p.base {
            Value::Object(map) => without_create_only(
                compiled,
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ),
            _ => BTreeMap::new(),
        });
        // A side whose content hash is what the engine last saw or wrote has not changed,
        // even if the system normalised the values it stored: it counts as the base.
        let unchanged = |seen: &SideSeen, hash: &str| seen.hash.as_deref() == Some(hash);
        // A resync trusts no hash: each side is what it holds now.
        let compare_all = self.compare_all;
        let trusted = |seen: &SideSeen, hash: &str| !compare_all && unchanged(seen, hash);
        let mut source_view = match (pair, &base) {
            (Some(p), Some(base)) if trusted(&p.source, &source_hash) => base.clone(),
            _ => source_fields.clone(),
        };
        // A two-way field whose source holds exactly what the base reads back as (a quote
        // Accepted for a paid shop order, an order date for an order time) has not changed
        // on the source, though it maps forward to something else: a value map or a type
        // that is not one-to-one. Only a different source value is an edit.
        if let Some(base) = &base {
            for rule in compiled
                .rules
                .rules
                .iter()
                .filter(|r| r.direction == Direction::Both)
            {
                let field = rule.target.as_str();
                let (Some(now), Some(was)) = (source_view.get(field), base.get(field)) else {
                    continue;
                };
                if now != was
                    && holds_base(compiled, rule, &source.data, &target.data, was, resolver)
                {
                    source_view.insert(field.to_owned(), was.clone());
                }
            }
        }
        let mut target_view = match (pair, &base) {
            (Some(p), Some(base)) if trusted(&p.target, &target_hash) => base.clone(),
            _ => target_fields.clone(),
        };
        let direction = |field: &str| {
            m.field_directions
                .get(field)
                .copied()
                .unwrap_or(m.spec.direction)
        };
        let policy = MergePolicy {
            conflict: m.spec.conflict,
            tie_breaker: m.spec.tie_breaker,
            keep_filled: m.spec.keep_filled,
        };
        // Fields of held conflicts; a chosen one is compared as each side holds it now.
        let decided = self
            .decisions
            .get(global_id.as_str())
            .cloned()
            .unwrap_or_default();
        for (_, field, decision) in &decided {
            if matches!(decision, merge::Decision::Take(_)) {
                for (view, real) in [
                    (&mut source_view, &source_fields),
                    (&mut target_view, &target_fields),
                ] {
                    match real.get(field) {
                        Some(value) => view.insert(field.clone(), value.clone()),
                        None => view.remove(field),
                    };
                }
            }
        }
        let merged = merge::merge_decided(
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
            &|field: &str| m.changes_only.contains(field),
            &|field: &str| {
                decided
                    .iter()
                    .find(|(_, f, _)| f == field)
                    .map(|(_, _, d)| d.clone())
            },
        );
        let applied: Vec<(ConflictId, String)> = decided
            .iter()
            .filter(|(_, field, _)| merged.resolved.contains(field))
            .map(|(id, field, _)| (id.clone(), field.clone()))
            .collect();
        let mut updates = Vec::new();
        if !merged.to_target.is_empty() {
            let changes = field_changes(&merged.to_target, &target_fields);
            updates.push(Update {
                on: Side::Target,
                id: target.id.clone(),
                body: {
                    let mut body = target_update(
                        compiled,
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
            set_fields(compiled, &mut overlaid, &merged.to_source);
            let selected: HashSet<&str> = merged.to_source.keys().map(String::as_str).collect();
            match mapping::apply_inverse_selected_onto(
                compiled,
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
                        .push(self.waiting(Side::Target, &target.id, &error));
                    return Ok(None);
                }
                Err(error) => return Err(parking_from(Side::Target, &target.id, &error)),
            }
        }
        let written_hash = fields_hash(&merged.base);
        // Nothing changed and the stored state is current.
        if updates.is_empty()
            && applied.is_empty()
            && pair.is_some_and(|p| {
                p.base_hash == written_hash
                    && unchanged(&p.source, &source_hash)
                    && unchanged(&p.target, &target_hash)
            })
        {
            work.ok_ids.push((Side::Source, source.id.clone()));
            work.ok_ids.push((Side::Target, target.id.clone()));
            return Ok(None);
        }
        Ok(Some(PairDecision {
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
            applied,
        }))
    }
}

/// The global id a record is linked under, or a new one to be made (`true`).
fn global_or_new(global: Option<GlobalId>) -> (GlobalId, bool) {
    match global {
        Some(global) => (global, false),
        None => (GlobalId::new(String::new()), true),
    }
}

/// Records of `side` with match key `key` that are free to link: read in this pass or known
/// from earlier ones (`known`, looked up for the chunk, those paired already left out), and
/// not in a pair of this mapping or claimed in this pass.
fn candidates(
    side: Side,
    key: &str,
    known: &[String],
    read: &SideRead,
    pair_of: &PairOf<'_>,
    claimed: &HashSet<(Side, String)>,
) -> Vec<String> {
    let mut ids: Vec<String> = read.with_key(key).cloned().collect();
    for id in known {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids.retain(|id| !pair_of.contains_key(id.as_str()) && !claimed.contains(&(side, id.clone())));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreUrl;
    use crate::sync::open::{OpenOptions, build, compile};
    use serde_json::json;

    const CUSTOMERS: &str = "customerp-customers-to-customwebshop-customers";

    /// The shipped flows' engine, on a store the planner never touches, with systems at an
    /// address nothing answers: planning must not need either.
    async fn engine(name: &str) -> (Engine, std::path::PathBuf) {
        let flows = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows");
        let project = Arc::new(crate::spec::load::Project::load_dir(&flows));
        let compiled = compile(&project).expect("the shipped flows compile");
        let dir = std::env::temp_dir().join(format!("tether-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = Store::open(&StoreUrl::Sqlite(dir.join("state.db")))
            .await
            .expect("store opens");
        let lookup = |name: &str| {
            Some(if name.ends_with("_URL") {
                "http://127.0.0.1:9".to_owned()
            } else {
                "secret".to_owned()
            })
        };
        let engine = build(&compiled, store, &lookup, OpenOptions::default()).expect("builds");
        (engine, dir)
    }

    fn erp(id: &str, name: &str, email: &str, phone: &str) -> Record {
        Record {
            id: id.into(),
            modified: None,
            data: json!({ "id": id, "name": name, "email": email, "phone": phone,
                "is_active": true, "currency": "USD" }),
        }
    }

    fn shop(id: &str, company: &str, email: &str) -> Record {
        Record {
            id: id.into(),
            modified: None,
            data: json!({ "id": id, "company": company, "email": email, "phone": null,
                "addresses": [], "marketing_opt_in": false, "deleted": false }),
        }
    }

    fn reads(m: &MappingRuntime, source: Vec<Record>, target: Vec<Record>) -> Sides<SideRead> {
        let mut reads: Sides<SideRead> = Sides::default();
        for (side, records) in [(Side::Source, source), (Side::Target, target)] {
            for record in records {
                reads[side].insert(record.id.clone(), record);
            }
            reads[side].index_keys(&m.compiled, side);
        }
        reads
    }

    /// The unlinked records of `reads`, with their keys, as the pass sorts them.
    fn unlinked<'r>(m: &MappingRuntime, reads: &'r Sides<SideRead>) -> Lookups<'r> {
        Lookups {
            unlinked: Sides([Side::Source, Side::Target]).map(|_, side| {
                keyed_records(&m.compiled, side, reads[side].records.values().collect())
            }),
            ..Lookups::default()
        }
    }

    fn planner<'a>(
        engine: &'a Engine,
        resolver: &'a LinkResolver,
        decisions: &'a Decisions,
    ) -> Planner<'a> {
        let m = engine
            .mappings()
            .iter()
            .find(|m| m.name == CUSTOMERS)
            .expect("the customers mapping");
        Planner {
            m,
            mappings: engine.mappings(),
            resolver,
            decisions,
            compare_all: false,
            hold: None,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn records_are_linked_by_key_created_without_one_and_a_linked_pair_merges_an_edit() {
        let (engine, dir) = engine("planner-link").await;
        let (resolver, decisions) = (LinkResolver::unlinked(), Decisions::new());
        let planner = planner(&engine, &resolver, &decisions);
        let m = planner.m;
        let chunk = reads(
            m,
            vec![
                erp("1", "Acme", "ann@acme.test", "+1 555 0100"),
                erp("2", "Birch", "bo@birch.test", "+1 555 0101"),
            ],
            vec![shop("s-a", "Acme", "ann@acme.test")],
        );
        let work = planner.plan_chunk(&chunk, &unlinked(m, &chunk));
        // Acme is in both systems: linked under a new global id, the shop's empty phone
        // filled from the ERP.
        assert_eq!(work.pairs.len(), 1, "one pair linked");
        let linked = &work.pairs[0];
        assert!(linked.new_global);
        assert_eq!(
            linked.new_links,
            [
                (Side::Source, "1".to_owned()),
                (Side::Target, "s-a".to_owned())
            ]
        );
        assert_eq!(linked.updates.len(), 1);
        assert_eq!(linked.updates[0].on, Side::Target);
        assert_eq!(linked.updates[0].body["phone"], json!("+15550100"));
        // Birch is only in the ERP: created in the shop, as a customer who has not opted in.
        assert_eq!(work.creates.len(), 1);
        let create = &work.creates[0];
        assert_eq!((create.on, create.from_id.as_str()), (Side::Target, "2"));
        assert_eq!(create.body["email"], json!("bo@birch.test"));
        assert_eq!(create.body["marketing_opt_in"], json!(false));
        assert!(work.parked.is_empty() && work.deferred.is_empty());
        // Every record read keeps its match key, for later chunks to find.
        let mut keyed: Vec<&str> = work
            .record_keys
            .iter()
            .map(|(_, id, _)| id.as_str())
            .collect();
        keyed.sort_unstable();
        assert_eq!(keyed, ["1", "2", "s-a"]);

        // The next pass reads an edit of Acme's phone in the ERP: the pair merges it.
        let pair = PairState {
            mapping: CUSTOMERS.into(),
            global_id: GlobalId::new("g-acme"),
            source_id: "1".into(),
            target_id: "s-a".into(),
            base: Value::Object(linked.base.clone().into_iter().collect()),
            base_hash: fields_hash(&linked.base),
            source: linked.source_seen.clone(),
            target: linked.target_seen.clone(),
            synced_at: Utc::now(),
        };
        // Birch, linked since, is listed again as its pair last saw it: at rest.
        let edited = reads(
            m,
            vec![
                erp("1", "Acme", "ann@acme.test", "+1 555 0199"),
                erp("2", "Birch", "bo@birch.test", "+1 555 0101"),
            ],
            vec![],
        );
        let mut fetched: Sides<HashMap<String, Option<Record>>> = Sides::default();
        let mut written = shop("s-a", "Acme", "ann@acme.test");
        written.data["phone"] = json!("+15550100");
        fetched[Side::Target].insert("s-a".into(), Some(written));
        let lookups = Lookups {
            touched: vec![(
                GlobalId::new("g-acme"),
                "1".into(),
                "s-a".into(),
                Some(&pair),
            )],
            ok: vec![(Side::Source, "2".into())],
            fetched,
            ..Lookups::default()
        };
        let work = planner.plan_chunk(&edited, &lookups);
        assert_eq!(work.pairs.len(), 1);
        let merged = &work.pairs[0];
        assert!(
            merged.new_links.is_empty(),
            "an existing pair is not linked again"
        );
        assert_eq!(merged.updates.len(), 1);
        assert_eq!(merged.updates[0].id, "s-a");
        assert_eq!(merged.updates[0].body["phone"], json!("+15550199"));
        assert!(work.creates.is_empty());
        // The record at rest costs nothing: no write, no match key to check again.
        assert_eq!(work.ok_ids, [(Side::Source, "2".to_owned())]);
        let keyed: Vec<&str> = work
            .record_keys
            .iter()
            .map(|(_, id, _)| id.as_str())
            .collect();
        assert_eq!(keyed, ["1"]);
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_candidate_known_from_an_earlier_pass_links_while_it_exists_and_is_forgotten_when_gone()
     {
        let (engine, dir) = engine("planner-known").await;
        let (resolver, decisions) = (LinkResolver::unlinked(), Decisions::new());
        let planner = planner(&engine, &resolver, &decisions);
        let m = planner.m;
        let chunk = reads(m, vec![erp("1", "Acme", "ann@acme.test", "")], vec![]);
        let known = |record: Option<Record>| {
            let mut lookups = unlinked(m, &chunk);
            lookups.known_keys[Side::Target].insert("ann@acme.test".into(), vec!["s-old".into()]);
            lookups.fetched[Side::Target].insert("s-old".into(), record);
            lookups
        };
        // Still in the shop: the two are linked.
        let work = planner.plan_chunk(&chunk, &known(Some(shop("s-old", "Acme", "ann@acme.test"))));
        assert_eq!(work.pairs.len(), 1);
        assert_eq!(work.pairs[0].target_id, "s-old");
        assert!(work.creates.is_empty());
        // Deleted from the shop since: no candidate; its key is forgotten and Acme created.
        let work = planner.plan_chunk(&chunk, &known(None));
        assert!(work.pairs.is_empty());
        assert_eq!(work.creates.len(), 1);
        assert!(
            work.record_keys
                .contains(&(Side::Target, "s-old".to_owned(), None))
        );
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn two_candidates_park_the_record_and_a_held_side_waits_for_later_chunks() {
        let (engine, dir) = engine("planner-ambiguous").await;
        let (resolver, decisions) = (LinkResolver::unlinked(), Decisions::new());
        let mut planner = planner(&engine, &resolver, &decisions);
        let m = planner.m;
        let chunk = reads(
            m,
            vec![erp("1", "Acme", "ann@acme.test", "")],
            vec![
                shop("s-a", "Acme", "ann@acme.test"),
                shop("s-b", "Acme Inc", "ann@acme.test"),
                shop("s-c", "Cedar", "cy@cedar.test"),
            ],
        );
        // The shop is read whole beside chunks of the ERP: its records without a match wait.
        planner.hold = Some(Side::Target);
        let work = planner.plan_chunk(&chunk, &unlinked(m, &chunk));
        let parked: Vec<&str> = work.parked.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            parked,
            ["1"],
            "the ERP record with two shop candidates is parked"
        );
        assert!(work.parked[0].reason.contains("ambiguous match: 2 records"));
        let Some(Action::Ambiguous { candidates, .. }) = work.ambiguous.first() else {
            panic!("the ambiguity is reported");
        };
        assert_eq!(candidates, &["s-a".to_owned(), "s-b".to_owned()]);
        assert!(work.pairs.is_empty() && work.creates.is_empty());
        assert_eq!(work.held, ["s-a", "s-b", "s-c"]);
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
