//! One pass of one mapping, and its decisions: reading both sides (a large read in chunks),
//! resolving intents, sorting records into pairs, matches, creates, deletes and parked
//! records, merging each pair three ways, the circuit breaker; then the writes and the
//! cursors. (Over 1,000 lines until the pass is split into a pure planner and its effects,
//! the next step of the engine's renovation.)

use futures_util::stream::{self, StreamExt};

use super::*;

/// How a pass reads its large side.
#[derive(Debug, Default, Clone, Copy)]
struct Chunking {
    /// Records per chunk, for an initial sync; `None`: whole.
    size: Option<usize>,
    /// An earlier run's initial sync in chunks did not finish.
    unfinished: bool,
}

/// What one chunk of a pass did, and what it leaves for the next.
struct ChunkDone {
    report: MappingReport,
    /// Records waiting for references, tried again in the next pass of the run.
    waiting: Vec<(Side, String)>,
    /// The records of the side read whole that wait for the streamed side's later chunks
    /// (they may match one of its records), with that side's cursor.
    carry: Option<SideRead>,
}

impl Engine {
    /// One pass of one mapping. Returns its counts and the records waiting for references.
    ///
    /// An initial sync (no pair of the mapping linked before this run, or an initial sync
    /// a stopped run left unfinished) reads one side in chunks of about
    /// `RunOptions::initial_chunk` records: the source, or the target when only the target
    /// is read again (a later pass reading what the run created). One reader goes on from
    /// chunk to chunk; each chunk is decided and written and its cursor stored before the
    /// next is read, so memory holds one chunk beside the other side's records that wait
    /// for a match, and a run stopped midway starts again from the last chunk written.
    /// Later runs read whole, so the circuit breaker weighs all of a run's changes at once.
    pub(super) async fn sync_mapping(
        &self,
        pass: &Pass<'_>,
        carried: Vec<(Side, String)>,
        fresh: Sides<bool>,
        actions: &mut Vec<Action>,
    ) -> Result<(MappingReport, Vec<(Side, String)>), EngineError> {
        let m = pass.m;
        let started = std::time::Instant::now();
        self.check_fields(m).await?;
        // Pairs linked before the run, counted once for the pass: the circuit breaker's
        // measure (pairs made earlier in this run do not count: an initial sync in several
        // passes is not a mass change).
        let linked_before = self
            .store
            .count_pairs_synced_before(&m.name, pass.run_started)
            .await? as usize;
        let chunk = self.chunking(pass, fresh, linked_before).await?;
        let streamed = if fresh[Side::Source] {
            Side::Source
        } else {
            Side::Target
        };
        let other = streamed.other();
        // The two sides are different systems (or entities): read at once, each at its own
        // system's pace, so a pass waits for the slower side, not for both in turn.
        let (first, whole) = tokio::join!(
            self.read_side_chunk(m, streamed, fresh[streamed], chunk.size),
            // Of the side read whole beside chunks, only what the pass can act on is kept.
            async {
                if chunk.size.is_some() {
                    self.read_side_lean(m, other, fresh[other]).await
                } else {
                    self.read_side(m, other, fresh[other]).await
                }
            }
        );
        let (mut read, mut whole) = (first?, whole?);
        let Some(size) = chunk.size.filter(|_| read.partial) else {
            // One read of each side: the pass as a whole.
            let mut reads = Sides([SideRead::default(), SideRead::default()]);
            reads[streamed] = read;
            reads[other] = whole;
            let done = self
                .sync_chunk(
                    pass,
                    reads,
                    carried,
                    fresh,
                    None,
                    linked_before,
                    started,
                    actions,
                )
                .await?;
            // An unfinished initial sync whose rest fitted in one read is done.
            if chunk.unfinished && done.report.stopped.is_none() {
                self.store
                    .set_cursor(&initial_key(m), &initial_done(pass.run_started))
                    .await?;
            }
            return Ok((done.report, done.waiting));
        };
        // An initial sync in chunks: marked, so a run stopped midway goes on in chunks.
        self.store
            .set_cursor(&initial_key(m), INITIAL_IN_CHUNKS)
            .await?;
        let mut reader = read.rest.take();
        let mut carried = Some(carried);
        let mut total: Option<MappingReport> = None;
        let mut waiting = Vec::new();
        let mut first_chunk = true;
        loop {
            let more = read.partial;
            let mut reads = Sides([SideRead::default(), SideRead::default()]);
            reads[streamed] = read;
            reads[other] = std::mem::take(&mut whole);
            // With the last chunk, the records carried so far are matched or created.
            reads[other].carried &= more;
            // Intents on the streamed side are judged from a whole read only (a record an
            // intent made may be in another chunk); those on the other side from its one
            // read, with the first chunk.
            let mut intents = Sides([false, false]);
            intents[other] = first_chunk && fresh[other];
            let done = self
                .sync_chunk(
                    pass,
                    reads,
                    carried.take().unwrap_or_default(),
                    intents,
                    more.then_some(other),
                    linked_before,
                    started,
                    actions,
                )
                .await?;
            first_chunk = false;
            waiting.extend(done.waiting);
            let stopped = done.report.stopped.is_some();
            match &mut total {
                Some(total) => {
                    total.absorb(&done.report);
                    if total.stopped.is_none() {
                        total.stopped = done.report.stopped;
                    }
                }
                None => total = Some(done.report),
            }
            if stopped {
                break;
            }
            if !more {
                self.store
                    .set_cursor(&initial_key(m), &initial_done(pass.run_started))
                    .await?;
                break;
            }
            whole = done.carry.unwrap_or_default();
            debug!(mapping = %m.name, side = streamed.as_str(), waiting = whole.records.len(),
                "initial sync: the next chunk");
            self.checkpoint(m, pass.options).await?;
            let Some(reader) = reader.as_mut() else {
                break;
            };
            read = self.read_more(m, streamed, reader, size).await?;
        }
        Ok((total.unwrap_or_default(), waiting))
    }

    /// How this pass reads (see [`Self::sync_mapping`]).
    async fn chunking(
        &self,
        pass: &Pass<'_>,
        fresh: Sides<bool>,
        linked_before: usize,
    ) -> Result<Chunking, EngineError> {
        let size = pass.options.initial_chunk;
        if size == 0
            || pass.options.dry_run
            || pass.resync.is_some()
            || !(fresh[Side::Source] || fresh[Side::Target])
        {
            return Ok(Chunking::default());
        }
        let m = pass.m;
        let marker = self.store.cursor(&initial_key(m)).await?;
        let unfinished = marker.as_deref() == Some(INITIAL_IN_CHUNKS);
        // An initial sync that went on from a stopped run and finished in this run: the
        // run's later passes (reading what it created) are part of it.
        let finished_now = marker.as_deref() == Some(initial_done(pass.run_started).as_str());
        let initial = unfinished || finished_now || linked_before == 0;
        Ok(Chunking {
            size: initial.then_some(size),
            unfinished,
        })
    }

    /// One chunk of a pass, or the whole pass: `reads` are what was read of each side.
    /// With `hold`, that side was read whole while the other is read in chunks: its records
    /// without a counterpart are not created on the other side but carried to the next
    /// chunk (a later chunk may hold their match), and its cursor waits until none is
    /// carried. `intents_fresh` says which side's intents can be judged from its read;
    /// `linked_before`, the pairs linked before the run, is the circuit breaker's measure.
    #[allow(clippy::too_many_arguments)]
    async fn sync_chunk(
        &self,
        pass: &Pass<'_>,
        reads: Sides<SideRead>,
        carried: Vec<(Side, String)>,
        intents_fresh: Sides<bool>,
        hold: Option<Side>,
        linked_before: usize,
        started: std::time::Instant,
        actions: &mut Vec<Action>,
    ) -> Result<ChunkDone, EngineError> {
        let Pass {
            m,
            options,
            run_id,
            last_pass,
            run_started,
            resync,
        } = *pass;
        let mut report = MappingReport {
            mapping: m.name.clone(),
            flow: m.flow.clone(),
            ..Default::default()
        };
        let Sides([mut source, mut target]) = reads;
        if let Some(resync) = resync {
            self.read_for_resync(m, resync, &mut source, &mut target)
                .await?;
        }
        // A side whose listing was not due was not read: its intents wait too.
        let fresh = [
            intents_fresh[Side::Source] && !source.skipped,
            intents_fresh[Side::Target] && !target.skipped,
        ];
        let read_at = started.elapsed();
        for (read, count) in [
            (&mut source, &mut report.read_source),
            (&mut target, &mut report.read_target),
        ] {
            if !read.counted {
                *count = read.records.len() as u64 + read.passed;
            }
            report.notes.append(&mut read.notes);
            report.malformed += read.malformed.len() as u64;
            report.stamped_ahead += read.ahead.len() as u64;
            for (examples, found) in [
                (&mut report.malformed_examples, &mut read.malformed),
                (&mut report.stamped_ahead_examples, &mut read.ahead),
            ] {
                let room = EXAMPLES.saturating_sub(examples.len());
                examples.extend(found.drain(..).take(room));
            }
        }

        // Parked records and records waiting for references are tried again.
        let parked = self.store.parked(Some(&m.name)).await?;
        // Records parked earlier in this run wait for the next run: a later pass would only
        // park them again.
        // A record that waits to be deleted is not read: its delete is sent again when due.
        let retry: Vec<(Side, String)> = parked
            .iter()
            .filter(|p| p.last_tried_at < run_started && !p.is_skipped() && !p.deleting)
            .map(|p| (p.side, p.record_id.clone()))
            .chain(carried)
            .collect();
        let retry: Vec<(Side, String)> = retry
            .into_iter()
            .filter(|(side, id)| {
                let read = match side {
                    Side::Source => &source,
                    Side::Target => &target,
                };
                !read.records.contains_key(id)
            })
            .collect();
        // Read side by side, up to each system's requests in flight.
        let width = m
            .source
            .connector
            .concurrency()
            .max(m.target.connector.concurrency());
        let fetched: Vec<_> = stream::iter(&retry)
            .map(|(side, id)| {
                let rt = m.side(*side);
                rt.connector.get(&rt.entity, id)
            })
            .buffered(width)
            .collect()
            .await;
        for ((side, id), fetched) in retry.into_iter().zip(fetched) {
            let read = match side {
                Side::Source => &mut source,
                Side::Target => &mut target,
            };
            match fetched? {
                Some(record) => {
                    read.insert(id, record);
                }
                None => {
                    if !options.dry_run {
                        self.store.unpark(&m.name, side, &id).await?;
                    }
                }
            }
        }

        // Pairs with a chosen value for a held conflict are read, whatever the cursors say.
        let open_conflicts = self.store.open_conflicts(Some(&m.name)).await?;
        let decisions = decisions_of(open_conflicts.clone());
        for global in decisions.keys().filter(|g| has_choice(&decisions, g)) {
            let Some(pair) = self
                .store
                .pair_state(&m.name, &GlobalId::new(global.as_str()))
                .await?
            else {
                continue;
            };
            for (side, id) in [
                (Side::Source, pair.source_id),
                (Side::Target, pair.target_id),
            ] {
                let read = match side {
                    Side::Source => &mut source,
                    Side::Target => &mut target,
                };
                let rt = m.side(side);
                if !read.records.contains_key(&id)
                    && let Some(record) = rt.connector.get(&rt.entity, &id).await?
                {
                    read.insert(id, record);
                }
            }
        }

        // Records set aside by an operator stay aside while their content is as it was then.
        for p in parked.iter().filter(|p| p.is_skipped()) {
            let read = match p.side {
                Side::Source => &mut source,
                Side::Target => &mut target,
            };
            if read.records.get(&p.record_id).is_some_and(|r| {
                p.skipped_hash.as_deref() == Some(&crate::ops::parked::content_hash(&r.data))
            }) {
                read.remove(&p.record_id);
            }
        }

        // Records whose delete their system refused are not synced while they wait for it.
        let deleting: Vec<&ParkedRecord> = parked.iter().filter(|p| p.deleting).collect();
        for p in &deleting {
            match p.side {
                Side::Source => source.remove(&p.record_id),
                Side::Target => target.remove(&p.record_id),
            };
        }

        // A chunk looks up the links its records refer to, never every link of a large
        // referenced mapping.
        let resolver = self.resolver(m).await?;
        // The links the records read refer to, looked up at once.
        let map_all = |source: &SideRead, target: &SideRead| {
            for record in source.records.values().filter(|_| !source.carried) {
                let _ = mapping::apply_forward(&m.compiled, &record.data, &resolver);
            }
            for record in target.records.values().filter(|_| !target.carried) {
                let _ = mapping::apply_inverse(&m.compiled, &record.data, &resolver);
            }
        };
        self.links_ready(&resolver, || map_all(&source, &target))
            .await?;
        // Intents left open by a crash or a lost answer are resolved before anything is
        // decided, so a record created then is linked, not created again.
        if !options.dry_run {
            let resolved = self
                .resolve_intents(m, &mut source, &mut target, fresh, &resolver)
                .await?;
            for (side, id) in &resolved.held {
                match side {
                    Side::Source => source.remove(id),
                    Side::Target => target.remove(id),
                };
            }
            if resolved.fetched {
                self.links_ready(&resolver, || map_all(&source, &target))
                    .await?;
            }
        }
        let pairs = self.pairs_of(m, &source, &target).await?;
        let loaded_at = started.elapsed();
        // Match keys are computed once per record: a record read whole is a candidate for
        // every chunk of the other side.
        source.index_keys(&m.compiled, Side::Source);
        target.index_keys(&m.compiled, Side::Target);
        let mut work = self
            .decide(
                m,
                &source,
                &target,
                pairs,
                &resolver,
                decisions,
                resync.is_some(),
                hold,
            )
            .await?;
        self.held_deletes(m, &mut work, &deleting).await?;
        let decided_at = started.elapsed();

        // The circuit breaker counts overwrites and deletes of pairs that existed before.
        let changes =
            overwrites(&work.pairs, run_started) + work.deletes.len() + work.unlinks.len();
        if let Some(message) = plan::breaker(
            changes,
            linked_before,
            m.spec.max_change_share,
            options.allow_mass_change,
        ) {
            warn!(mapping = %m.name, %message, "circuit breaker");
            report.stopped = Some(message);
            if !options.dry_run {
                return Ok(ChunkDone {
                    report,
                    waiting: Vec::new(),
                    carry: None,
                });
            }
        }

        if options.dry_run {
            plan_actions(m, &work, actions);
            // Conflicts held by earlier runs stay held: the plan shows them with both values.
            for conflict in open_conflicts
                .iter()
                .filter(|c| c.state == crate::store::ConflictState::Held)
            {
                let pair = self.store.pair_state(&m.name, &conflict.global_id).await?;
                actions.push(Action::Held {
                    mapping: m.name.clone(),
                    field: conflict.field.clone(),
                    base: conflict.base_value.clone(),
                    source: Some(conflict.source_value.clone()),
                    target: Some(conflict.target_value.clone()),
                    source_id: pair.as_ref().map(|p| p.source_id.clone()),
                    target_id: pair.map(|p| p.target_id),
                    conflict: Some(conflict.id.as_str().to_owned()),
                });
            }
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
            return Ok(ChunkDone {
                report,
                waiting: Vec::new(),
                carry: None,
            });
        }

        // The records of the held side that wait for a later chunk, with its cursor: carried
        // to the next chunk, never read again.
        let carry = hold.map(|side| {
            let read = match side {
                Side::Source => &mut source,
                Side::Target => &mut target,
            };
            read.carry(&work.held, &work.released)
        });
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

        // Everything read is done, parked or carried: the cursors move, but the held side's
        // only once none of its records is carried (they would not be read again).
        let mut tx = self.store.transaction().await?;
        for (side, read) in [(Side::Source, &source), (Side::Target, &target)] {
            let waits = carry
                .as_ref()
                .is_some_and(|c| hold == Some(side) && !c.records.is_empty());
            if let Some(position) = read.cursor.as_ref().filter(|_| !waits) {
                tx.set_cursor(&cursor_key(m, side, false), position).await?;
            }
            if let Some(position) = &read.deletion_cursor {
                tx.set_cursor(&cursor_key(m, side, true), position).await?;
            }
            if let Some(position) = &read.listing_cursor {
                tx.set_cursor(&listing_key(m, side), position).await?;
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
        Ok(ChunkDone {
            report,
            waiting,
            carry,
        })
    }

    /// What a resync reads besides the pass's own reads. Named records: each one of this
    /// mapping's entities, and its counterpart in the mapping's pair (a paired record that
    /// no longer exists counts as deleted). Otherwise, each side whose stored cursor made
    /// the pass read only changes is read again from the beginning (the cursors still move
    /// as the pass's own read says).
    pub(super) async fn read_for_resync(
        &self,
        m: &MappingRuntime,
        resync: &super::Resync,
        source: &mut SideRead,
        target: &mut SideRead,
    ) -> Result<(), EngineError> {
        if resync.records.is_empty() {
            for (side, read) in [(Side::Source, &mut *source), (Side::Target, &mut *target)] {
                let rt = m.side(side);
                if !rt.info.incremental || self.stored_cursor(m, side, false).await?.is_none() {
                    continue;
                }
                let mut reader = rt.connector.changes(&rt.entity, None)?;
                while let Some(page) = reader.next_page().await? {
                    for record in page.records {
                        read.records.insert(record.id.clone(), record);
                    }
                    read.deleted.extend(page.deleted.into_iter().map(|d| d.id));
                }
                read.deleted.sort_unstable();
                read.deleted.dedup();
            }
            return Ok(());
        }
        for key in &resync.records {
            for side in [Side::Source, Side::Target] {
                let rt = m.side(side);
                if rt.system != key.system || rt.entity != key.entity {
                    continue;
                }
                let mut wanted = vec![(side, key.id.clone())];
                if let Some(pair) = self
                    .store
                    .pair_states_of_records(&m.name, side, std::slice::from_ref(&key.id))
                    .await?
                    .into_iter()
                    .next()
                {
                    let other = match side {
                        Side::Source => pair.target_id,
                        Side::Target => pair.source_id,
                    };
                    wanted.push((side.other(), other));
                }
                for (side, id) in wanted {
                    let rt = m.side(side);
                    let read = match side {
                        Side::Source => &mut *source,
                        Side::Target => &mut *target,
                    };
                    match rt.connector.get(&rt.entity, &id).await? {
                        Some(record) => {
                            read.records.insert(id, record);
                        }
                        None if !read.deleted.contains(&id) => read.deleted.push(id),
                        None => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Refused deletes: a pair whose record waits to be deleted is neither deleted again nor
    /// unlinked by this pass's deletion discovery; a wait that is over sends the delete again
    /// (and forgets the pair once it lands).
    async fn held_deletes(
        &self,
        m: &MappingRuntime,
        work: &mut MappingWork,
        deleting: &[&ParkedRecord],
    ) -> Result<(), EngineError> {
        if deleting.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut held: HashSet<String> = HashSet::new();
        let mut due = Vec::new();
        for side in [Side::Source, Side::Target] {
            let ids: Vec<String> = deleting
                .iter()
                .filter(|p| p.side == side)
                .map(|p| p.record_id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            for pair in self
                .store
                .pair_states_of_records(&m.name, side, &ids)
                .await?
            {
                let (id, counterpart) = match side {
                    Side::Source => (&pair.source_id, &pair.target_id),
                    Side::Target => (&pair.target_id, &pair.source_id),
                };
                let Some(parked) = deleting
                    .iter()
                    .find(|p| p.side == side && &p.record_id == id)
                else {
                    continue;
                };
                held.insert(pair.global_id.as_str().to_owned());
                if parked.is_due(now) {
                    due.push((
                        side,
                        id.clone(),
                        counterpart.clone(),
                        pair.global_id.clone(),
                    ));
                }
            }
        }
        work.deletes
            .retain(|(_, _, global)| !held.contains(global.as_str()));
        work.unlinks
            .retain(|(_, _, global)| !held.contains(global.as_str()));
        for (side, id, counterpart, global) in due {
            work.deletes.push((side, id, global.clone()));
            work.unlinks.push((side.other(), counterpart, global));
        }
        Ok(())
    }

    /// Sorts the records of a pass into pairs, matches, creates, deletes and parked records.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn decide(
        &self,
        m: &MappingRuntime,
        source: &SideRead,
        target: &SideRead,
        pairs: Vec<PairState>,
        resolver: &LinkResolver,
        decisions: Decisions,
        compare_all: bool,
        hold: Option<Side>,
    ) -> Result<MappingWork, EngineError> {
        let compiled = &m.compiled;
        let identity = m.identity();
        let mut work = MappingWork {
            decisions,
            compare_all,
            ..MappingWork::default()
        };
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
        let plan = plan::plan_deletions(
            Sides([source.deleted.as_slice(), target.deleted.as_slice()]),
            Sides([source.listed.as_ref(), target.listed.as_ref()]),
            Sides([&pair_of_source, &pair_of_target]),
            m.spec.deletes,
            m.spec.direction,
            Sides([m.source.info.can_delete, m.target.info.can_delete]),
        );
        work.deletes = plan.deletes;
        work.unlinks = plan.unlinks;
        let gone = plan.gone;
        let survivors = plan.survivors;
        // A survivor is remembered with its mapped content as it is now, read in this pass
        // or fetched, so that it is not created again on the other side on a later run.
        for (side, id, seen) in survivors {
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
                    let _ = seen_hash(m, side, &record.data, resolver);
                })
                .await?;
            }
            let hash = record
                .and_then(|r| seen_hash(m, side, &r.data, resolver))
                .or(seen);
            if let Some(hash) = hash {
                work.forgotten.push((side, id, hash));
            }
        }
        // Links of the records read, for records that are not in a pair of this mapping.
        // Records carried from an earlier chunk were looked up there.
        let unpaired = |read: &SideRead, pair_of: &HashMap<&str, &PairState>| -> Vec<String> {
            if read.carried {
                return Vec::new();
            }
            read.records
                .keys()
                .filter(|id| !pair_of.contains_key(id.as_str()))
                .cloned()
                .collect()
        };
        let source_ids = unpaired(source, &pair_of_source);
        let target_ids = unpaired(target, &pair_of_target);
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

        // Records linked (by another mapping of the identity) but not paired in this one:
        // their counterparts by global id, and whether those are paired here already, looked
        // up for the chunk at once.
        let mut counterparts: Sides<HashMap<GlobalId, String>> = Sides::default();
        for (side, links) in [(Side::Source, &source_links), (Side::Target, &target_links)] {
            if links.is_empty() {
                continue;
            }
            let mut globals: Vec<GlobalId> = links.values().cloned().collect();
            globals.sort_unstable();
            globals.dedup();
            let other_rt = m.side(side.other());
            let found = self
                .store
                .links_by_globals(identity, &globals, &other_rt.system, &other_rt.entity)
                .await?;
            let loaded = match side.other() {
                Side::Source => &pair_of_source,
                Side::Target => &pair_of_target,
            };
            let unloaded: Vec<String> = found
                .iter()
                .map(|l| l.record.id.clone())
                .filter(|id| !loaded.contains_key(id.as_str()))
                .collect();
            let paired = self.paired_among(m, side.other(), &unloaded).await?;
            // Only counterparts free in this mapping.
            counterparts[side] = found
                .into_iter()
                .filter(|l| {
                    !loaded.contains_key(l.record.id.as_str()) && !paired.contains(&l.record.id)
                })
                .map(|l| (l.global_id, l.record.id))
                .collect();
        }

        // A side read again with the content last seen or written has not changed: a full
        // listing (Keap companies) costs its pages, not a read of every counterpart.
        let unchanged = |side: Side, record: &Record, pair: &PairState| match side {
            Side::Source => {
                !compare_all
                    && pair.source.hash.is_some()
                    && mapping::apply_forward_existing(compiled, &record.data, resolver)
                        .ok()
                        .map(|body| fields_hash(&Canonical::of(compiled, &body).into_fields()))
                        == pair.source.hash
            }
            Side::Target => {
                !compare_all
                    && pair.target.hash.is_some()
                    && Some(fields_hash(&synced_fields(compiled, &record.data))) == pair.target.hash
            }
        };
        let plan::Classified {
            touched,
            unlinked: Sides([unlinked_source, unlinked_target]),
            ok,
        } = plan::classify(
            Sides([
                (!source.carried).then_some(&source.records),
                (!target.carried).then_some(&target.records),
            ]),
            &gone,
            Sides([&pair_of_source, &pair_of_target]),
            Sides([&source_links, &target_links]),
            &counterparts,
            |side, record, pair| {
                unchanged(side, record, pair)
                    && !has_choice(&work.decisions, pair.global_id.as_str())
            },
        );
        work.ok_ids.extend(ok);

        // Linked pairs: the side that was not read is fetched, side by side up to each
        // system's requests in flight, then the pairs are merged in order.
        let touched: Vec<(String, String, String, Option<&PairState>)> = touched
            .into_iter()
            .filter_map(|(global, (source_id, target_id, pair))| {
                let (Some(source_id), Some(target_id)) = (source_id, target_id) else {
                    return None;
                };
                let gone = gone.contains(&(Side::Source, source_id.clone()))
                    || gone.contains(&(Side::Target, target_id.clone()));
                (!gone).then_some((global, source_id, target_id, pair))
            })
            .collect();
        let width = m
            .source
            .connector
            .concurrency()
            .max(m.target.connector.concurrency());
        let fetched: Vec<Result<_, EngineError>> = stream::iter(&touched)
            .map(|(_, source_id, target_id, _)| async move {
                let source_record = match source.records.get(source_id) {
                    Some(r) => Some(r.clone()),
                    None => m.source.connector.get(&m.source.entity, source_id).await?,
                };
                let Some(source_record) = source_record else {
                    return Ok(None);
                };
                let target_record = match target.records.get(target_id) {
                    Some(r) => Some(r.clone()),
                    None => m.target.connector.get(&m.target.entity, target_id).await?,
                };
                Ok(target_record.map(|target_record| (source_record, target_record)))
            })
            .buffered(width)
            .collect()
            .await;
        for ((global, _, _, pair), records) in touched.into_iter().zip(fetched) {
            let Some((source_record, target_record)) = records? else {
                continue;
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
                Ok(Some(pair_decision)) => work.pairs.push(pair_decision),
                Ok(None) => {}
                Err(parking) => work.parked.push(parking),
            }
        }

        // Unlinked records: match, or create on the other side. Their match keys first, and
        // the records of earlier passes with those keys on the other side, looked up for the
        // whole chunk at once.
        let unlinked: Sides<Vec<(&Record, Option<String>)>> = Sides([
            keyed_records(compiled, Side::Source, unlinked_source),
            keyed_records(compiled, Side::Target, unlinked_target),
        ]);
        // Those whose counterpart was deleted, with their content then.
        let mut forgotten: HashMap<(Side, String), String> = HashMap::new();
        for side in [Side::Source, Side::Target] {
            let ids: Vec<String> = unlinked[side]
                .iter()
                .map(|(record, _)| record.id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            forgotten.extend(
                self.store
                    .unlinked_of_records(&m.name, side, &ids)
                    .await?
                    .into_iter()
                    .map(|u| ((u.side, u.record_id), u.content_hash)),
            );
        }
        let mut known_keys: Sides<HashMap<String, Vec<String>>> = Sides::default();
        for side in [Side::Source, Side::Target] {
            let mut keys: Vec<String> = unlinked[side.other()]
                .iter()
                .filter_map(|(_, key)| key.clone())
                .collect();
            if keys.is_empty() {
                continue;
            }
            keys.sort_unstable();
            keys.dedup();
            for (key, id) in self
                .store
                .find_records_by_keys(&m.name, side, &keys)
                .await?
            {
                known_keys[side].entry(key).or_default().push(id);
            }
        }
        // Records of earlier passes found by key but not read in this one: those paired
        // already are no candidates; the others are read again, side by side up to their
        // system's requests in flight (one that no longer exists is no candidate).
        let mut unread: Sides<HashMap<String, Option<Record>>> = Sides::default();
        for side in [Side::Source, Side::Target] {
            let read = match side {
                Side::Source => source,
                Side::Target => target,
            };
            let paired = match side {
                Side::Source => &pair_of_source,
                Side::Target => &pair_of_target,
            };
            let mut ids: Vec<String> = known_keys[side]
                .values()
                .flatten()
                .filter(|id| !read.records.contains_key(*id) && !paired.contains_key(id.as_str()))
                .cloned()
                .collect();
            if ids.is_empty() {
                continue;
            }
            ids.sort_unstable();
            ids.dedup();
            let paired_elsewhere = self.paired_among(m, side, &ids).await?;
            for ids in known_keys[side].values_mut() {
                ids.retain(|id| !paired_elsewhere.contains(id));
            }
            ids.retain(|id| !paired_elsewhere.contains(id));
            let rt = m.side(side);
            let found: Vec<Result<(String, Option<Record>), EngineError>> = stream::iter(ids)
                .map(|id| async move {
                    let record = rt.connector.get(&rt.entity, &id).await?;
                    Ok((id, record))
                })
                .buffered(rt.connector.concurrency())
                .collect()
                .await;
            for found in found {
                let (id, record) = found?;
                unread[side].insert(id, record);
            }
        }
        // The links of every record that could be a candidate, so that a match finds the
        // global id its candidate may have without a lookup of its own.
        let mut candidate_links: Sides<HashMap<String, GlobalId>> = Sides::default();
        for side in [Side::Source, Side::Target] {
            let read = match side {
                Side::Source => source,
                Side::Target => target,
            };
            let mut ids: Vec<String> = unlinked[side.other()]
                .iter()
                .filter_map(|(_, key)| key.as_deref())
                .flat_map(|key| {
                    read.with_key(key)
                        .chain(known_keys[side].get(key).into_iter().flatten())
                })
                .cloned()
                .collect();
            if ids.is_empty() {
                continue;
            }
            ids.sort_unstable();
            ids.dedup();
            let rt = m.side(side);
            candidate_links[side] = self
                .store
                .links_by_records(identity, &rt.system, &rt.entity, &ids)
                .await?
                .into_iter()
                .map(|l| (l.record.id, l.global_id))
                .collect();
        }
        let mut claimed: HashSet<(Side, String)> = HashSet::new();
        for (side, records) in [Side::Source, Side::Target].into_iter().zip(unlinked.0) {
            let allowed = match side {
                Side::Source => m.spec.direction.forward(),
                Side::Target => m.spec.direction.backward(),
            };
            for (record, key) in records {
                if claimed.contains(&(side, record.id.clone())) {
                    continue;
                }
                // A record whose counterpart was deleted stays forgotten while it is as it
                // was then; once a mapped field changes it syncs again.
                if let Some(hash) = forgotten.get(&(side, record.id.clone())) {
                    if seen_hash(m, side, &record.data, resolver).as_ref() == Some(hash) {
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
                if hold == Some(side) {
                    work.held.push(record.id.clone());
                    continue;
                }
                let own_global = match side {
                    Side::Source => source_links.get(&record.id).cloned(),
                    Side::Target => target_links.get(&record.id).cloned(),
                };
                let other_side = side.other();
                let other_read = match other_side {
                    Side::Source => source,
                    Side::Target => target,
                };
                let candidates = match &key {
                    Some(key) => candidates(
                        other_side,
                        key,
                        known_keys[other_side].get(key).map_or(&[], Vec::as_slice),
                        other_read,
                        Sides([&pair_of_source, &pair_of_target]),
                        &claimed,
                    ),
                    None => Vec::new(),
                };
                // Candidates known only from earlier passes were read again above: one that
                // no longer exists is no candidate, and its match key is forgotten.
                let mut live = Vec::with_capacity(candidates.len());
                for id in candidates {
                    if other_read.records.contains_key(&id) {
                        live.push(id);
                        continue;
                    }
                    match unread[other_side].get(&id) {
                        Some(Some(_)) => live.push(id),
                        _ => work.record_keys.push((other_side, id, None)),
                    }
                }
                let fetched = &unread[other_side];
                let links = &candidate_links[other_side];
                match plan::plan_match(live, allowed, own_global.as_ref(), links) {
                    plan::MatchPlan::Nothing => {}
                    plan::MatchPlan::Create => {
                        self.links_ready(resolver, || {
                            let _ = self.decide_create(
                                m,
                                side,
                                record,
                                own_global.clone(),
                                key.clone(),
                                resolver,
                            );
                        })
                        .await?;
                        match self.decide_create(m, side, record, own_global, key.clone(), resolver)
                        {
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
                        if !other_read.records.contains_key(&candidate)
                            && !matches!(fetched.get(&candidate), Some(Some(_)))
                        {
                            continue;
                        }
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
                        let Some(candidate_record) = other_read
                            .records
                            .get(&candidate)
                            .or_else(|| fetched.get(&candidate).and_then(Option::as_ref))
                            .cloned()
                        else {
                            continue;
                        };
                        claimed.insert((other_side, candidate));
                        let (global, new_global) = match global {
                            Some(global) => (global, false),
                            None => (GlobalId::new(String::new()), true),
                        };
                        let (source_record, target_record) = match side {
                            Side::Source => (record.clone(), candidate_record),
                            Side::Target => (candidate_record, record.clone()),
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
        if let Some(side) = hold {
            work.held
                .retain(|id| !claimed.contains(&(side, id.clone())));
            let read = match side {
                Side::Source => source,
                Side::Target => target,
            };
            if read.carried {
                work.released = claimed
                    .iter()
                    .filter(|(s, _)| *s == side)
                    .map(|(_, id)| id.clone())
                    .collect();
            }
        }
        // Match keys of linked records too, so later records can find them.
        let keyed: HashSet<(Side, String)> = work
            .record_keys
            .iter()
            .map(|(side, id, _)| (*side, id.clone()))
            .collect();
        for (side, read) in [(Side::Source, source), (Side::Target, target)] {
            for record in read.records.values().filter(|_| !read.carried) {
                if !keyed.contains(&(side, record.id.clone())) {
                    work.record_keys.push((
                        side,
                        record.id.clone(),
                        match_key(compiled, side, &record.data),
                    ));
                }
            }
        }
        Ok(work)
    }

    /// Plans the create of `record`'s counterpart on the other side.
    pub(super) fn decide_create(
        &self,
        m: &MappingRuntime,
        side: Side,
        record: &Record,
        own_global: Option<GlobalId>,
        key: Option<String>,
        resolver: &LinkResolver,
    ) -> Decision {
        let compiled = &m.compiled;
        let mapped = match side {
            Side::Source => mapping::apply_forward(compiled, &record.data, resolver),
            Side::Target => mapping::apply_inverse(compiled, &record.data, resolver),
        };
        let mut body = match mapped {
            Ok(body) => body,
            Err(error) if error.waits_for_references() => {
                return Decision::Wait(self.waiting(m, side, &record.id, &error));
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
        let (global_id, new_global) = match own_global {
            Some(global) => (global, false),
            None => (GlobalId::new(String::new()), true),
        };
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
    pub(super) fn waiting(
        &self,
        m: &MappingRuntime,
        side: Side,
        id: &str,
        error: &RecordError,
    ) -> Parking {
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
    pub(super) fn merge_pair(
        &self,
        m: &MappingRuntime,
        global_id: GlobalId,
        source: &Record,
        target: &Record,
        pair: Option<&PairState>,
        resolver: &LinkResolver,
        work: &mut MappingWork,
    ) -> Result<Option<PairDecision>, Parking> {
        let compiled = &m.compiled;
        let forward = match mapping::apply_forward_existing(compiled, &source.data, resolver) {
            Ok(value) => value,
            Err(error) if error.waits_for_references() => {
                work.deferred
                    .push(self.waiting(m, Side::Source, &source.id, &error));
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
        let compare_all = work.compare_all;
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
        let decided = work
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
                        .push(self.waiting(m, Side::Target, &target.id, &error));
                    return Ok(None);
                }
                Err(error) => return Err(parking_from(Side::Target, &target.id, &error)),
            }
        }
        if updates.is_empty()
            && applied.is_empty()
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

/// Records of `side` with match key `key` that are free to link: read in this pass or known
/// from earlier ones (`known`, looked up for the chunk, those paired already left out), and
/// not in a pair of this mapping or claimed in this pass.
fn candidates(
    side: Side,
    key: &str,
    known: &[String],
    read: &SideRead,
    pair_of: Sides<&HashMap<&str, &PairState>>,
    claimed: &HashSet<(Side, String)>,
) -> Vec<String> {
    let mut ids: Vec<String> = read.with_key(key).cloned().collect();
    for id in known {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids.retain(|id| {
        !pair_of[side].contains_key(id.as_str()) && !claimed.contains(&(side, id.clone()))
    });
    ids
}
