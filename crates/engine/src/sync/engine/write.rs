//! Writing what a pass decided: open create intents resolved first, then updates (each record
//! read again just before), creates through recorded intents and deletes, each batch one store
//! transaction.

use futures_util::stream::{self, StreamExt};

use super::*;
use crate::ops::history;
use crate::store::NewHistory;

/// What writing one pair did.
struct PairWritten {
    /// The hashes of the sides as stored, `Ok(None)` for a deferred pair, or why the pair's
    /// record is parked.
    outcome: Result<Option<StoredHashes>, Parking>,
    deferred: bool,
    /// Updates sent, per side.
    updated: Sides<u64>,
}

/// What resolving the open create intents left for the pass.
pub(super) struct ResolvedIntents {
    /// Origins of intents that stay open: not to be created again by this pass.
    pub held: HashSet<(Side, String)>,
    /// Whether origin records were read by id to be created again.
    pub fetched: bool,
}

impl Engine {
    /// Whether a record the pair would update changed since this pass read it (re-read where
    /// the entity asks for it). A record gone since is left to the update, which reports it.
    ///
    /// The record is read again even when this pass fetched it moments ago as the pair's
    /// counterpart: that fetch happened while the pass was deciding, before every other pair
    /// of the pass was decided and the earlier write batches went out, so trusting it would
    /// widen the window in which someone else's edit is overwritten from one request to the
    /// whole pass.
    pub(super) async fn moved_since_read(
        &self,
        m: &MappingRuntime,
        pair: &PairDecision,
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

    /// Resolves the create intents left open by a crash or by a create whose answer was
    /// lost (a timeout, a 5xx, a broken connection): the record the create may have made is
    /// looked for by its match key, or without one by the fields the create wrote. Found:
    /// it is linked. Not found: the intent is abandoned and the create is sent again in this
    /// pass, its origin record read by id when its own side's read did not list it (that
    /// side's cursor may have moved past it in the run whose create failed).
    ///
    /// Whether the create happened can only be told from a read of the side it was sent to
    /// made after it: an intent whose side this pass did not read stays open, and its origin
    /// is returned, to be left alone by this pass rather than created a second time.
    pub(super) async fn resolve_intents(
        &self,
        m: &MappingRuntime,
        reads: &mut Sides<SideRead>,
        fresh: Sides<bool>,
        resolver: &LinkResolver,
    ) -> Result<ResolvedIntents, EngineError> {
        let intents = self.store.open_intents(&m.name).await?;
        let mut held = HashSet::new();
        let mut fetched = false;
        for intent in intents {
            let origin = intent.side.other();
            if !fresh[intent.side] {
                held.insert((origin, intent.source_record_id.clone()));
                continue;
            }
            // The origin, read by id when its own side's read did not list it: the create
            // it made is recognised by what the create sent, and a create that did not
            // happen is sent again from it.
            let (origin_read, origin_rt) = (&mut reads[origin], m.side(origin));
            if !origin_read.records.contains_key(&intent.source_record_id)
                && let Some(record) = origin_rt
                    .connector
                    .get(&origin_rt.entity, &intent.source_record_id)
                    .await?
            {
                origin_read
                    .records
                    .insert(intent.source_record_id.clone(), record);
                fetched = true;
            }
            let sent = origin_read
                .records
                .get(&intent.source_record_id)
                .and_then(|record| sent_body(m, origin, &record.data, resolver));
            let (side_read, rt) = (&reads[intent.side], m.side(intent.side));
            let key = intent.match_values.as_str().map(str::to_owned);
            let mut candidates: Vec<String> = Vec::new();
            if let Some(key) = &key {
                let mut ids: Vec<String> = side_read
                    .records
                    .values()
                    .filter(|r| {
                        match_key(&m.compiled, intent.side, &r.data).as_deref()
                            == Some(key.as_str())
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
                    candidates = ids;
                }
            }
            if candidates.is_empty() {
                // Without a key: a record that holds everything the create sent (the system
                // may have added its own fields, such as an order number), or, for an
                // origin edited since, one with exactly the fields the create wrote.
                candidates = side_read
                    .records
                    .values()
                    .filter(|r| {
                        if sent.as_ref().is_some_and(|body| holds(body, &r.data)) {
                            return true;
                        }
                        let fields = match intent.side {
                            Side::Target => Canonical::of(&m.compiled, &r.data).into_fields(),
                            Side::Source => {
                                match mapping::apply_forward(&m.compiled, &r.data, resolver) {
                                    Ok(body) => Canonical::of(&m.compiled, &body).into_fields(),
                                    Err(_) => return false,
                                }
                            }
                        };
                        created_fields_hash(&m.compiled, intent.side, &fields)
                            == intent.payload_hash
                    })
                    .map(|r| r.id.clone())
                    .collect();
            }
            let mut tx = self.store.transaction().await?;
            let mut found = None;
            for id in candidates {
                // A record already linked is some other record's counterpart.
                if tx
                    .link_by_record(m.identity(), &RecordKey::new(&rt.system, &rt.entity, &id))
                    .await?
                    .is_none()
                {
                    found = Some(id);
                    break;
                }
            }
            match found {
                Some(id) => {
                    info!(mapping = %m.name, record = %id, "a create whose answer was lost is found and linked");
                    tx.link(
                        m.identity(),
                        &intent.global_id,
                        &RecordKey::new(&rt.system, &rt.entity, &id),
                        LinkOrigin::Create,
                    )
                    .await?;
                    tx.complete_intent(&intent.id, &id).await?;
                }
                None => {
                    info!(mapping = %m.name, origin = %intent.source_record_id, "a create that did not happen is sent again");
                    tx.abandon_intent(&intent.id).await?;
                }
            }
            tx.commit().await?;
        }
        Ok(ResolvedIntents { held, fetched })
    }

    /// The writes of one pair: its records read again where the entity asks (an edit since
    /// the read defers the pair), then its updates in order; a refusal parks the record the
    /// update came from.
    async fn write_pair(
        &self,
        m: &MappingRuntime,
        pair: &PairDecision,
        resolver: &LinkResolver,
    ) -> Result<PairWritten, EngineError> {
        let mut written = PairWritten {
            outcome: Ok(Some((None, None))),
            deferred: false,
            updated: Sides::default(),
        };
        if self.moved_since_read(m, pair, resolver).await? {
            debug!(mapping = %m.name, source = %pair.source_id, target = %pair.target_id, "edited during the run; the update waits for the next read");
            written.deferred = true;
            written.outcome = Ok(None);
            return Ok(written);
        }
        for update in &pair.updates {
            let rt = m.side(update.on);
            match rt
                .connector
                .update(&rt.entity, &update.id, update.body.clone())
                .await
            {
                Ok(result) => {
                    if let Some(record) = &result.record {
                        self.links_ready(resolver, || {
                            let _ = seen_hash(m, update.on, &record.data, resolver);
                        })
                        .await?;
                    }
                    let stored = result
                        .record
                        .as_ref()
                        .and_then(|record| seen_hash(m, update.on, &record.data, resolver));
                    if let Ok(Some(hashes)) = &mut written.outcome {
                        match update.on {
                            Side::Source => hashes.0 = stored,
                            Side::Target => hashes.1 = stored,
                        }
                    }
                    written.updated[update.on] += 1;
                }
                Err(error) if error.is_permanent() => {
                    written.outcome = Err(parking_from_write(
                        update.on.other(),
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
        Ok(written)
    }

    /// Sends the writes of one pass and records their results, a batch per transaction.
    pub(super) async fn execute(
        &self,
        pass: &Pass<'_>,
        resolver: &LinkResolver,
        work: MappingWork,
        report: &mut MappingReport,
        parked_before: &[crate::store::ParkedRecord],
    ) -> Result<(), EngineError> {
        let Pass {
            m,
            options,
            run_id,
            run_started,
            ..
        } = *pass;
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
        for side in [Side::Source, Side::Target] {
            let changed: Vec<(String, Option<String>)> = work
                .record_keys
                .iter()
                .filter(|(s, id, key)| {
                    *s == side
                        && match key {
                            Some(key) => !stored.contains(&(side, id.clone(), key.clone())),
                            None => stored_ids.contains(&(side, id.as_str())),
                        }
                })
                .map(|(_, id, key)| (id.clone(), key.clone()))
                .collect();
            if !changed.is_empty() {
                tx.put_record_keys(&m.name, side, &changed).await?;
            }
        }
        tx.commit().await?;

        // Deletes and unlinks. A delete the system refused keeps its pair: the record waits
        // to be deleted, parked, and the pair is not unlinked.
        let mut refused: HashSet<GlobalId> = HashSet::new();
        for (side, id, global) in &work.deletes {
            let rt = m.side(*side);
            match rt.connector.delete(&rt.entity, id).await {
                Ok(_) => {
                    match side {
                        Side::Source => report.deleted_source += 1,
                        Side::Target => report.deleted_target += 1,
                    }
                    self.store
                        .record_history(&history::delete(
                            history::Writer {
                                run_id,
                                mapping: &m.name,
                                identity: &identity,
                                global_id: global,
                                resync: options.resync.is_some(),
                            },
                            RecordKey::new(&rt.system, &rt.entity, id),
                            m.spec.deletes,
                        ))
                        .await?;
                }
                Err(error) if error.is_permanent() => {
                    let attempts = parked_before
                        .iter()
                        .find(|p| p.side == *side && p.record_id == *id && p.deleting)
                        .map_or(0, |p| p.attempts)
                        + 1;
                    let mut park = park_of(m, parking_from_write(*side, id, &error));
                    park.reason = format!("the delete was refused: {}", park.reason);
                    park.deleting = true;
                    park.retry_at = Some(Utc::now() + delete_backoff(attempts));
                    warn!(mapping = %m.name, side = side.as_str(), %id, reason = %park.reason, "delete refused; the pair stays linked");
                    self.store.park(&park).await?;
                    report.parked += 1;
                    refused.insert(global.clone());
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
            self.forget_pair(m, &identity, *side, id, global).await?;
            if was_parked.contains(&(*side, id.as_str())) {
                self.store.unpark(&m.name, *side, id).await?;
            }
        }
        for (side, id, global) in &work.unlinks {
            if refused.contains(global) {
                continue;
            }
            self.forget_pair(m, &identity, *side, id, global).await?;
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
            // The pairs of a batch are independent: their re-reads and updates go out side by
            // side (each system caps its own requests in flight); the results are committed
            // in one transaction, in order.
            let width = m
                .source
                .connector
                .concurrency()
                .max(m.target.connector.concurrency());
            let written: Vec<Result<PairWritten, EngineError>> = stream::iter(chunk)
                .map(|pair| self.write_pair(m, pair, resolver))
                .buffered(width)
                .collect()
                .await;
            let mut results: Vec<Result<Option<StoredHashes>, Parking>> =
                Vec::with_capacity(chunk.len());
            for written in written {
                let written = written?;
                if written.deferred {
                    report.deferred += 1;
                }
                report.updated_source += written.updated[Side::Source];
                report.updated_target += written.updated[Side::Target];
                results.push(written.outcome);
            }
            let mut tx = self.store.transaction().await?;
            let mut fresh = tx
                .new_global_ids(
                    &identity,
                    chunk
                        .iter()
                        .zip(&results)
                        .filter(|(pair, result)| pair.new_global && matches!(result, Ok(Some(_))))
                        .count(),
                )
                .await?
                .into_iter();
            // What the pairs leave in the store, written table by table after the loop.
            let mut links: Vec<(GlobalId, RecordKey)> = Vec::new();
            let mut relinked: Sides<Vec<String>> = Sides::default();
            let mut histories: Vec<NewHistory> = Vec::new();
            let mut pair_states: Vec<PairState> = Vec::new();
            for (pair, result) in chunk.iter().zip(results) {
                match result {
                    Ok(None) => {}
                    Ok(Some((source_stored, target_stored))) => {
                        let global = if pair.new_global {
                            fresh.next().unwrap_or_else(|| pair.global_id.clone())
                        } else {
                            pair.global_id.clone()
                        };
                        for (side, id) in &pair.new_links {
                            let rt = m.side(*side);
                            relinked[*side].push(id.clone());
                            links
                                .push((global.clone(), RecordKey::new(&rt.system, &rt.entity, id)));
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
                                    winner: (!conflict.held).then_some(conflict.winner),
                                })
                                .await?;
                                report.conflicts += 1;
                            }
                        }
                        for (conflict, _) in &pair.applied {
                            tx.apply_conflict(conflict).await?;
                        }
                        for update in &pair.updates {
                            let (rt, from) = (m.side(update.on), m.side(update.on.other()));
                            let from_id = match update.on {
                                Side::Source => &pair.target_id,
                                Side::Target => &pair.source_id,
                            };
                            histories.push(history::update(
                                history::Writer {
                                    run_id,
                                    mapping: &m.name,
                                    identity: &identity,
                                    global_id: &global,
                                    resync: options.resync.is_some(),
                                },
                                RecordKey::new(&rt.system, &rt.entity, &update.id),
                                &RecordKey::new(&from.system, &from.entity, from_id),
                                &update.changes,
                                &pair.conflicts,
                                &pair.applied,
                                m.spec.conflict,
                            ));
                        }
                        pair_states.push(PairState {
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
                        });
                        done_ids.push((Side::Source, pair.source_id.clone()));
                        done_ids.push((Side::Target, pair.target_id.clone()));
                    }
                    Err(parking) => {
                        tx.park(&park_of(m, parking)).await?;
                        report.parked += 1;
                    }
                }
            }
            for side in [Side::Source, Side::Target] {
                if !relinked[side].is_empty() {
                    tx.remove_unlinked_all(&m.name, side, &relinked[side])
                        .await?;
                }
            }
            tx.link_all(&identity, &links, LinkOrigin::MatchKey).await?;
            tx.record_histories(&histories).await?;
            tx.put_pair_states(&pair_states).await?;
            tx.commit().await?;
        }

        // Creates, each recorded as an intent before it is sent.
        for chunk in work.creates.chunks(BATCH) {
            self.checkpoint(m, options).await?;
            // The intents of a batch, with the links of their origins, in one transaction
            // and a few statements.
            let mut tx = self.store.transaction().await?;
            let mut fresh = tx
                .new_global_ids(&identity, chunk.iter().filter(|c| c.new_global).count())
                .await?
                .into_iter();
            let globals: Vec<GlobalId> = chunk
                .iter()
                .map(|create| {
                    if create.new_global {
                        fresh.next().unwrap_or_else(|| create.global_id.clone())
                    } else {
                        create.global_id.clone()
                    }
                })
                .collect();
            let origins: Vec<(GlobalId, RecordKey)> = chunk
                .iter()
                .zip(&globals)
                .map(|(create, global)| {
                    let from_rt = m.side(create.on.other());
                    (
                        global.clone(),
                        RecordKey::new(&from_rt.system, &from_rt.entity, &create.from_id),
                    )
                })
                .collect();
            tx.link_all(&identity, &origins, LinkOrigin::Create).await?;
            let intents: Vec<NewIntent> = chunk
                .iter()
                .zip(&globals)
                .map(|(create, global)| NewIntent {
                    mapping: m.name.clone(),
                    side: create.on,
                    source_record_id: create.from_id.clone(),
                    global_id: global.clone(),
                    match_values: create
                        .match_values
                        .clone()
                        .map_or(Value::Null, Value::String),
                    payload_hash: created_fields_hash(&m.compiled, create.on, &create.fields),
                })
                .collect();
            let recorded = tx.record_intents(&intents).await?;
            let prepared: Vec<(&Create, GlobalId, crate::store::IntentId)> = chunk
                .iter()
                .zip(globals)
                .zip(recorded)
                .map(|((create, global), intent)| (create, global, intent.id))
                .collect();
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
                let mut uncertain = 0;
                let mut stopped: Option<ConnectorError> = None;
                let mut tx = self.store.transaction().await?;
                // What the created records leave in the store, written table by table after
                // the loop (a batch costs a few statements, not a few per record).
                let mut links: Vec<(GlobalId, RecordKey)> = Vec::new();
                let mut completed: Vec<(crate::store::IntentId, String)> = Vec::new();
                let mut histories: Vec<NewHistory> = Vec::new();
                let mut pair_states: Vec<PairState> = Vec::new();
                let mut keys: Vec<(String, Option<String>)> = Vec::new();
                for ((create, global, intent_id), result) in group.into_iter().zip(results) {
                    match result {
                        Ok(written) => {
                            links.push((
                                global.clone(),
                                RecordKey::new(&rt.system, &rt.entity, &written.id),
                            ));
                            completed.push((intent_id.clone(), written.id.clone()));
                            let base = without_create_only(&m.compiled, create.fields.clone());
                            let hash = fields_hash(&base);
                            // The created record as the system stored it. A value the system
                            // assigned to a field that flows only back (an order number) is
                            // not in the base: the created side then counts as changed since,
                            // so the next pass reads it and writes the value to the origin.
                            // Otherwise the stored form is what was written, normalised.
                            let stored_hash = match (&written.record, on) {
                                (Some(record), Side::Target) => {
                                    let stored = synced_fields(&m.compiled, &record.data);
                                    let assigned = m.compiled.rules.rules.iter().any(|r| {
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
                            let from_rt = m.side(on.other());
                            histories.push(history::create(
                                history::Writer {
                                    run_id,
                                    mapping: &m.name,
                                    identity: &identity,
                                    global_id: global,
                                    resync: options.resync.is_some(),
                                },
                                RecordKey::new(&rt.system, &rt.entity, &written.id),
                                &RecordKey::new(&from_rt.system, &from_rt.entity, &create.from_id),
                                &create.fields,
                            ));
                            pair_states.push(PairState {
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
                            });
                            if let Some(key) = &create.match_values {
                                keys.push((written.id.clone(), Some(key.clone())));
                            }
                            match on {
                                Side::Source => report.created_source += 1,
                                Side::Target => report.created_target += 1,
                            }
                            done_ids.push((on.other(), create.from_id.clone()));
                        }
                        // A system stopped for the run (its day's allowance spent, its wait
                        // budget gone) stops the mapping after this batch: the creates not
                        // sent wait, unparked, for a run that reads their records again from
                        // the cursors this pass leaves where they were.
                        Err(error) if error.stops_system() && !error.may_have_applied() => {
                            tx.abandon_intent(intent_id).await?;
                            stopped.get_or_insert(error);
                        }
                        Err(error) if !error.may_have_applied() => {
                            tx.abandon_intent(intent_id).await?;
                            tx.park(&park_of(
                                m,
                                parking_from_write(on.other(), &create.from_id, &error),
                            ))
                            .await?;
                            report.parked += 1;
                        }
                        Err(error) => {
                            // The create may have happened: the intent stays open, and the
                            // origin is parked so that the next run reads it again whatever
                            // its cursor says. That run links the record if the create made
                            // it, or sends the create again; never nothing.
                            warn!(mapping = %m.name, %error, "a create may have happened; the next run links it or sends it again");
                            uncertain += 1;
                            tx.park(&park_of(
                                m,
                                Parking {
                                    side: on.other(),
                                    id: create.from_id.clone(),
                                    reason: format!(
                                        "the create in {} {} may have happened ({error}); the next run links the record it made, or sends the create again",
                                        rt.system, rt.entity
                                    ),
                                    field: None,
                                    value: None,
                                },
                            ))
                            .await?;
                            report.parked += 1;
                        }
                    }
                }
                tx.link_all(&identity, &links, LinkOrigin::Create).await?;
                tx.complete_intents(&completed).await?;
                tx.record_histories(&histories).await?;
                tx.put_pair_states(&pair_states).await?;
                tx.put_record_keys(&m.name, on, &keys).await?;
                tx.commit().await?;
                if uncertain > 0 {
                    // Looked for at once, in a fresh read of the side the creates went to:
                    // before the next mapping of this identity reads that entity, or it would
                    // take a record these creates made for one of its own and sync it again.
                    let mut reads: Sides<SideRead> = Sides::default();
                    reads[on] = self.read_side_spaced(m, on, true, false, None).await?;
                    let fresh = Sides([on == Side::Source, on == Side::Target]);
                    self.resolve_intents(m, &mut reads, fresh, resolver).await?;
                }
                if let Some(error) = stopped {
                    return Err(error.into());
                }
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

    /// Forgets a pair whose record on `side` was deleted: the record's link, its match key
    /// (a deleted record no longer stands for it) and the pair's base, in one transaction.
    async fn forget_pair(
        &self,
        m: &MappingRuntime,
        identity: &str,
        side: Side,
        id: &str,
        global: &GlobalId,
    ) -> Result<(), EngineError> {
        let rt = m.side(side);
        let mut tx = self.store.transaction().await?;
        tx.unlink(identity, &RecordKey::new(&rt.system, &rt.entity, id))
            .await?;
        tx.put_record_key(&m.name, side, id, None).await?;
        tx.delete_pair_state(&m.name, global).await?;
        tx.commit().await?;
        Ok(())
    }
}
