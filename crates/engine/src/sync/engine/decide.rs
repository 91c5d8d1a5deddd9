//! One pass of one mapping, as effects around a pure planner: reading both sides (a large
//! read in chunks), the records retried, intents resolved, everything a chunk's plan needs
//! gathered at once ([`Engine::look_up`]); the plan itself is [`Planner::plan_chunk`]
//! (`planner.rs`); then the circuit breaker, the writes and the cursors.

use futures_util::stream::{self, StreamExt};

use super::planner::{Lookups, PairOf, Planner};
use super::*;

/// The pairs of a pass's mapping linked before the run, counted at most once per pass.
type LinkedBefore = tokio::sync::OnceCell<u64>;

/// How a pass reads its large side.
#[derive(Debug, Default, Clone, Copy)]
struct Chunking {
    /// Records per chunk, for an initial sync; `None`: whole.
    size: Option<usize>,
    /// An earlier run's initial sync in chunks did not finish.
    unfinished: bool,
}

/// One chunk of a pass as read, or the whole pass.
struct Chunk {
    /// What was read of each side.
    reads: Sides<SideRead>,
    /// Records that waited for references in the pass before, tried again.
    carried: Vec<(Side, String)>,
    /// Which side's intents can be judged from its read.
    intents_fresh: Sides<bool>,
    /// The side read whole while the other is read in chunks: its records without a
    /// counterpart are not created on the other side but carried to the next chunk (a
    /// later chunk may hold their match), and its cursor waits until none is carried.
    hold: Option<Side>,
    /// The pass's references by key, loaded once for all its chunks.
    keyed: Arc<KeyedRefs>,
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
    /// `RunOptions::initial_chunk` records: the side records come from (the source, or
    /// the target of a mapping that only carries records from it), or the target when only
    /// the target is read again (a later pass reading what the run created). One reader goes on from
    /// chunk to chunk; each chunk is decided and written and its cursor stored before the
    /// next is read, so memory holds one chunk beside the other side's records that wait
    /// for a match, and a run stopped midway starts again from the last chunk written (an
    /// entity listed whole, with no incremental read, is listed again from its beginning).
    /// Later runs read whole, so the circuit breaker weighs all of a run's changes at once;
    /// records at rest are let go as they are read ([`Self::read_side_lean`]).
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
        // passes is not a mass change). Counted when a chunk would overwrite or delete
        // something, before it writes; a pass in chunks counts before its first.
        let linked_before = LinkedBefore::default();
        let chunk = self.chunking(pass, fresh).await?;
        if chunk.size.is_some() {
            self.linked_before(pass, &linked_before).await?;
        }
        let keyed = self.keyed_references(m).await?;
        // The side read in chunks is the one records come from: the source, unless the
        // mapping only carries records from the target (ERP products into Keap), or only the
        // target is read again (a later pass reading what the run created there).
        let streamed = match (fresh[Side::Source], fresh[Side::Target]) {
            (true, true) if !m.spec.direction.from(Side::Source) => Side::Target,
            (true, _) => Side::Source,
            _ => Side::Target,
        };
        let other = streamed.other();
        // The two sides are different systems (or entities): read at once, each at its own
        // system's pace, so a pass waits for the slower side, not for both in turn.
        // Of a side read whole, only what the pass can act on is kept (records at rest are
        // let go page by page), but not in a resync, which compares every record read.
        let lean = pass.resync.is_none();
        let (first, whole) = tokio::join!(
            async {
                if chunk.size.is_none() && lean {
                    self.read_side_lean(m, streamed, fresh[streamed]).await
                } else {
                    self.read_side_chunk(m, streamed, fresh[streamed], chunk.size)
                        .await
                }
            },
            async {
                if lean {
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
            let input = Chunk {
                reads,
                carried,
                intents_fresh: fresh,
                hold: None,
                keyed,
            };
            let done =
                Box::pin(self.sync_chunk(pass, input, &linked_before, started, actions)).await?;
            // An unfinished initial sync whose rest fitted in one read is done.
            if chunk.unfinished && done.report.stopped.is_none() && done.report.postponed.is_none()
            {
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
            let input = Chunk {
                reads,
                carried: carried.take().unwrap_or_default(),
                intents_fresh: intents,
                hold: more.then_some(other),
                keyed: keyed.clone(),
            };
            let done =
                Box::pin(self.sync_chunk(pass, input, &linked_before, started, actions)).await?;
            first_chunk = false;
            waiting.extend(done.waiting);
            let stopped = done.report.stopped.is_some() || done.report.postponed.is_some();
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

    /// The pairs of the pass's mapping linked before the run, counted once for the pass.
    async fn linked_before(
        &self,
        pass: &Pass<'_>,
        linked_before: &LinkedBefore,
    ) -> Result<usize, EngineError> {
        let count = linked_before
            .get_or_try_init(|| async {
                self.store
                    .count_pairs_synced_before(&pass.m.name, pass.run_started)
                    .await
            })
            .await?;
        Ok(*count as usize)
    }

    /// How this pass reads (see [`Self::sync_mapping`]).
    async fn chunking(&self, pass: &Pass<'_>, fresh: Sides<bool>) -> Result<Chunking, EngineError> {
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
        let initial = unfinished
            || finished_now
            || !self
                .store
                .any_pair_synced_before(&m.name, pass.run_started)
                .await?;
        Ok(Chunking {
            size: initial.then_some(size),
            unfinished,
        })
    }

    /// One chunk of a pass, or the whole pass (see [`Chunk`]): the records it retries are
    /// read, intents resolved, everything the plan needs looked up ([`Self::look_up`]), the
    /// chunk planned ([`Self::plan`]) and its work written; then the cursors move.
    /// `linked_before`, the pairs linked before the run, is the circuit breaker's measure.
    async fn sync_chunk(
        &self,
        pass: &Pass<'_>,
        chunk: Chunk,
        linked_before: &LinkedBefore,
        started: std::time::Instant,
        actions: &mut Vec<Action>,
    ) -> Result<ChunkDone, EngineError> {
        let Pass {
            m,
            options,
            last_pass,
            run_started,
            resync,
            ..
        } = *pass;
        let Chunk {
            mut reads,
            carried,
            intents_fresh,
            hold,
            keyed,
        } = chunk;
        let mut report = MappingReport {
            mapping: m.name.clone(),
            flow: m.flow.clone(),
            ..Default::default()
        };
        if let Some(resync) = resync {
            self.read_for_resync(m, resync, &mut reads).await?;
        }
        // A side whose listing was not due was not read: its intents wait too.
        let fresh = Sides([
            intents_fresh[Side::Source] && !reads[Side::Source].skipped,
            intents_fresh[Side::Target] && !reads[Side::Target].skipped,
        ]);
        let read_at = started.elapsed();
        for side in Side::BOTH {
            let read = &mut reads[side];
            let count = match side {
                Side::Source => &mut report.read_source,
                Side::Target => &mut report.read_target,
            };
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
            .filter(|(side, id)| !reads[*side].records.contains_key(id))
            .collect();
        for ((side, id), fetched) in retry.iter().zip(self.get_all(m, &retry).await?) {
            match fetched {
                Some(record) => reads[*side].insert(id.clone(), record),
                None if !options.dry_run => {
                    self.store.unpark(&m.name, *side, id).await?;
                }
                None => {}
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
                let rt = m.side(side);
                if !reads[side].records.contains_key(&id)
                    && let Some(record) = rt.connector.get(&rt.entity, &id).await?
                {
                    reads[side].insert(id, record);
                }
            }
        }

        // Records set aside by an operator stay aside while their content is as it was then.
        for p in parked.iter().filter(|p| p.is_skipped()) {
            let read = &mut reads[p.side];
            if read.records.get(&p.record_id).is_some_and(|r| {
                p.skipped_hash.as_deref() == Some(&crate::ops::parked::content_hash(&r.data))
            }) {
                read.remove(&p.record_id);
            }
        }

        // Records whose delete their system refused are not synced while they wait for it.
        let deleting: Vec<&ParkedRecord> = parked.iter().filter(|p| p.deleting).collect();
        for p in &deleting {
            reads[p.side].remove(&p.record_id);
        }

        // A chunk looks up the links its records refer to, never every link of a large
        // referenced mapping.
        let resolver = self.resolver(m, keyed);
        self.links_ready(&resolver, || map_all(m, &reads, &resolver))
            .await?;
        // Intents left open by a crash or a lost answer are resolved before anything is
        // decided, so a record created then is linked, not created again.
        if !options.dry_run {
            let resolved = self
                .resolve_intents(m, &mut reads, fresh, &resolver)
                .await?;
            for (side, id) in &resolved.held {
                reads[*side].remove(id);
            }
            if resolved.fetched {
                self.links_ready(&resolver, || map_all(m, &reads, &resolver))
                    .await?;
            }
        }
        let pairs = self.pairs_of(m, &reads).await?;
        // Match keys are computed once per record: a record read whole is a candidate for
        // every chunk of the other side.
        for side in Side::BOTH {
            reads[side].index_keys(&m.compiled, side);
        }
        let planner = Planner {
            m,
            mappings: &self.mappings,
            resolver: &resolver,
            decisions: &decisions,
            compare_all: resync.is_some(),
            hold,
        };
        // Boxed, as are the writes: a pass's futures are large, and debug builds keep every
        // one inline in the frames that poll them.
        let lookups = Box::pin(self.look_up(&planner, &reads, &pairs)).await?;
        let loaded_at = started.elapsed();
        let mut work = self.plan(&planner, &reads, &lookups).await?;
        drop(lookups);
        let deleting_pairs = self.pairs_of_parked(m, &deleting).await?;
        plan::hold_deletes(
            &mut work.deletes,
            &mut work.unlinks,
            &deleting,
            &deleting_pairs,
            Utc::now(),
        );
        let decided_at = started.elapsed();

        // The circuit breaker counts overwrites and deletes of pairs that existed before.
        let changes =
            overwrites(&work.pairs, run_started) + work.deletes.len() + work.unlinks.len();
        // With nothing to overwrite or delete the breaker has nothing to weigh.
        let linked = match changes {
            0 => 0,
            _ => self.linked_before(pass, linked_before).await?,
        };
        if let Some(message) = plan::breaker(
            changes,
            linked,
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
        let carry = hold.map(|side| reads[side].carry(&work.held, &work.released));
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

        match Box::pin(self.execute(pass, &resolver, work, &mut report, &parked)).await {
            Ok(()) => {}
            // A system's day's allowance ran out while writing: what was written stands and
            // is counted, the mapping waits for the next run, and the cursors stay where
            // they were, so that run reads the rest again.
            Err(EngineError::Connector(error)) if error.is_allowance() => {
                warn!(mapping = %m.name, %error, "the system's daily allowance stops this mapping for the run");
                report.postponed = Some(error.to_string());
                report.postponed_by = Some(error.system().to_owned());
                return Ok(ChunkDone {
                    report,
                    waiting,
                    carry: None,
                });
            }
            Err(error) => return Err(error),
        }

        // Everything read is done, parked or carried: the cursors move, but the held side's
        // only once none of its records is carried (they would not be read again).
        let mut tx = self.store.transaction().await?;
        for side in Side::BOTH {
            let read = &reads[side];
            let waits = carry
                .as_ref()
                .is_some_and(|c| hold == Some(side) && !c.records.is_empty());
            if let Some(position) = read.cursor.as_ref().filter(|_| !waits) {
                tx.set_cursor(&cursor_key(m, side, false), &position.to_string())
                    .await?;
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

    /// Records read by id, side by side up to the mapping's requests in flight (each
    /// system's limiter still paces its own); `None` for one that no longer exists.
    async fn get_all(
        &self,
        m: &MappingRuntime,
        ids: &[(Side, String)],
    ) -> Result<Vec<Option<Record>>, EngineError> {
        let width = m
            .source
            .connector
            .concurrency()
            .max(m.target.connector.concurrency());
        stream::iter(ids)
            .map(|(side, id)| async move {
                let rt = m.side(*side);
                Ok(rt.connector.get(&rt.entity, id).await?)
            })
            .buffered(width)
            .collect::<Vec<Result<_, EngineError>>>()
            .await
            .into_iter()
            .collect()
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
        reads: &mut Sides<SideRead>,
    ) -> Result<(), EngineError> {
        if resync.records.is_empty() {
            for side in Side::BOTH {
                let (rt, read) = (m.side(side), &mut reads[side]);
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
            for side in Side::BOTH {
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
                    wanted.push((side.other(), pair.id(side.other()).to_owned()));
                }
                for (side, id) in wanted {
                    let (rt, read) = (m.side(side), &mut reads[side]);
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

    /// The pair states of records that wait for their refused delete.
    async fn pairs_of_parked(
        &self,
        m: &MappingRuntime,
        parked: &[&ParkedRecord],
    ) -> Result<Vec<PairState>, EngineError> {
        let mut pairs = Vec::new();
        for side in Side::BOTH {
            let ids: Vec<String> = parked
                .iter()
                .filter(|p| p.side == side)
                .map(|p| p.record_id.clone())
                .collect();
            if !ids.is_empty() {
                pairs.extend(
                    self.store
                        .pair_states_of_records(&m.name, side, &ids)
                        .await?,
                );
            }
        }
        Ok(pairs)
    }

    /// Everything the planning of a chunk needs besides its reads, for the whole chunk at
    /// once: the pass's store lookups in a few batched queries, and the records it reads by
    /// id side by side up to each system's requests in flight. The pure decisions that say
    /// what to look up (deletions, the sorting of records) run here too.
    async fn look_up<'r>(
        &self,
        planner: &Planner<'_>,
        reads: &'r Sides<SideRead>,
        pairs: &'r [PairState],
    ) -> Result<Lookups<'r>, EngineError> {
        let m = planner.m;
        let compiled = &m.compiled;
        let identity = m.identity();
        let mut paired_by_id: Sides<PairOf<'r>> = Sides::default();
        for pair in pairs {
            for side in Side::BOTH {
                paired_by_id[side].insert(pair.id(side), pair);
            }
        }
        let paired = &paired_by_id;

        // Deletions: explicit, or by absence from a complete listing.
        let deletions = plan::plan_deletions(
            Sides([
                reads[Side::Source].deleted.as_slice(),
                reads[Side::Target].deleted.as_slice(),
            ]),
            Sides([
                reads[Side::Source].listed.as_ref(),
                reads[Side::Target].listed.as_ref(),
            ]),
            paired.as_ref(),
            m.spec.deletes,
            m.spec.direction,
            Sides([m.source.info.can_delete, m.target.info.can_delete]),
        );
        // Survivors not read are read by id: they are remembered as they are now.
        let mut wanted: Vec<(Side, String)> = deletions
            .survivors
            .iter()
            .filter(|(side, id, _)| !reads[*side].records.contains_key(id))
            .map(|(side, id, _)| (*side, id.clone()))
            .collect();

        // Links of the records read, for records that are not in a pair of this mapping.
        // Records carried from an earlier chunk were looked up there.
        let mut links: Sides<HashMap<String, GlobalId>> = Sides::default();
        for side in Side::BOTH {
            let read = &reads[side];
            if read.carried {
                continue;
            }
            let ids: Vec<String> = read
                .records
                .keys()
                .filter(|id| !paired[side].contains_key(id.as_str()))
                .cloned()
                .collect();
            links[side] = self.global_ids(m, side, &ids).await?;
        }

        // Records linked (by another mapping of the identity) but not paired in this one:
        // their counterparts by global id, and whether those are paired here already.
        let mut counterparts: Sides<HashMap<GlobalId, String>> = Sides::default();
        for side in Side::BOTH {
            if links[side].is_empty() {
                continue;
            }
            let mut globals: Vec<GlobalId> = links[side].values().cloned().collect();
            globals.sort_unstable();
            globals.dedup();
            let other = side.other();
            let other_rt = m.side(other);
            let linked = self
                .store
                .links_by_globals(identity, &globals, &other_rt.system, &other_rt.entity)
                .await?;
            let loaded = &paired[other];
            let unloaded: Vec<String> = linked
                .iter()
                .map(|l| l.record.id.clone())
                .filter(|id| !loaded.contains_key(id.as_str()))
                .collect();
            let paired_here = self.paired_among(m, other, &unloaded).await?;
            // Only counterparts free in this mapping.
            counterparts[side] = linked
                .into_iter()
                .filter(|l| {
                    !loaded.contains_key(l.record.id.as_str())
                        && !paired_here.contains(&l.record.id)
                })
                .map(|l| (l.global_id, l.record.id))
                .collect();
        }

        // A side read again with the content last seen or written has not changed: a full
        // listing (Keap companies) costs its pages, not a read of every counterpart.
        let unchanged = |side: Side, record: &Record, pair: &PairState| {
            !planner.compare_all
                && at_rest(
                    m,
                    side,
                    &record.data,
                    planner.resolver,
                    pair.seen(side).hash.as_deref(),
                )
        };
        let plan::Classified {
            touched,
            unlinked,
            ok,
        } = plan::classify(
            Sides([
                (!reads[Side::Source].carried).then_some(&reads[Side::Source].records),
                (!reads[Side::Target].carried).then_some(&reads[Side::Target].records),
            ]),
            &deletions.gone,
            paired.as_ref(),
            links.as_ref(),
            &counterparts,
            |side, record, pair| {
                unchanged(side, record, pair)
                    && !has_choice(planner.decisions, pair.global_id.as_str())
            },
        );
        // Linked pairs: the sides not read are read by id.
        let touched: Vec<(GlobalId, String, String, Option<&PairState>)> = touched
            .into_iter()
            .filter_map(|(global, (source_id, target_id, pair))| {
                let (Some(source_id), Some(target_id)) = (source_id, target_id) else {
                    return None;
                };
                let gone = deletions.gone.contains(&(Side::Source, source_id.clone()))
                    || deletions.gone.contains(&(Side::Target, target_id.clone()));
                (!gone).then_some((GlobalId::new(global), source_id, target_id, pair))
            })
            .collect();
        for (_, source_id, target_id, _) in &touched {
            for (side, id) in [(Side::Source, source_id), (Side::Target, target_id)] {
                if !reads[side].records.contains_key(id) {
                    wanted.push((side, id.clone()));
                }
            }
        }

        // Unlinked records with their match keys, and those whose counterpart was deleted,
        // with their content then.
        let unlinked = unlinked.map(|side, records| keyed_records(compiled, side, records));
        let mut forgotten: HashMap<(Side, String), String> = HashMap::new();
        for side in Side::BOTH {
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
        // The records of earlier passes with the unlinked records' keys on the other side.
        let mut known_keys: Sides<HashMap<String, Vec<String>>> = Sides::default();
        for side in Side::BOTH {
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
        // Those found by key but not read in this pass: the ones paired already are no
        // candidates; the others are read again (one that no longer exists is no candidate).
        for side in Side::BOTH {
            let read = &reads[side];
            let mut ids: Vec<String> = known_keys[side]
                .values()
                .flatten()
                .filter(|id| {
                    !read.records.contains_key(*id) && !paired[side].contains_key(id.as_str())
                })
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
            wanted.extend(
                ids.into_iter()
                    .filter(|id| !paired_elsewhere.contains(id))
                    .map(|id| (side, id)),
            );
        }
        // The links of every record that could be a candidate, so that a match finds the
        // global id its candidate may have.
        let mut candidate_links: Sides<HashMap<String, GlobalId>> = Sides::default();
        for side in Side::BOTH {
            let read = &reads[side];
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
            candidate_links[side] = self.global_ids(m, side, &ids).await?;
        }

        // Every record the plan reads by id, read side by side.
        wanted.sort_unstable();
        wanted.dedup();
        let mut fetched: Sides<HashMap<String, Option<Record>>> = Sides::default();
        for ((side, id), record) in wanted.iter().zip(self.get_all(m, &wanted).await?) {
            fetched[*side].insert(id.clone(), record);
        }
        Ok(Lookups {
            paired: paired_by_id,
            deletions,
            links,
            touched,
            unlinked,
            ok,
            fetched,
            forgotten,
            known_keys,
            candidate_links,
        })
    }

    /// The global ids of the records `ids` of `side`, linked in the mapping's identity (by
    /// this mapping or another of it), by record id.
    async fn global_ids(
        &self,
        m: &MappingRuntime,
        side: Side,
        ids: &[String],
    ) -> Result<HashMap<String, GlobalId>, EngineError> {
        let rt = m.side(side);
        Ok(self
            .store
            .links_by_records(m.identity(), &rt.system, &rt.entity, ids)
            .await?
            .into_iter()
            .map(|l| (l.record.id, l.global_id))
            .collect())
    }

    /// Plans a chunk ([`Planner::plan_chunk`]) once the links its records refer to are
    /// loaded: those of the records read by id are looked up first, all at once; a plan
    /// that asked for a link not loaded yet (a value only a merge produces) has it looked
    /// up and is made again.
    async fn plan(
        &self,
        planner: &Planner<'_>,
        reads: &Sides<SideRead>,
        lookups: &Lookups<'_>,
    ) -> Result<MappingWork, EngineError> {
        let (m, resolver) = (planner.m, planner.resolver);
        self.links_ready(resolver, || {
            for side in Side::BOTH {
                for record in lookups.fetched[side].values().flatten() {
                    map_one(m, side, record, resolver);
                }
            }
        })
        .await?;
        let mut rounds = 1;
        loop {
            let work = planner.plan_chunk(reads, lookups);
            if rounds == LOOKUP_ROUNDS || !self.load_missed(resolver).await? {
                return Ok(work);
            }
            rounds += 1;
        }
    }
}

/// Maps a record of `side` the way the mapping carries it, the result dropped: the links
/// it refers to are noted by the resolver for one lookup.
fn map_one(m: &MappingRuntime, side: Side, record: &Record, resolver: &LinkResolver) {
    let _ = match side {
        Side::Source => mapping::apply_forward(&m.compiled, &record.data, resolver),
        Side::Target => mapping::apply_inverse(&m.compiled, &record.data, resolver),
    };
}

/// Maps every record read (not carried from an earlier chunk), see [`map_one`].
fn map_all(m: &MappingRuntime, reads: &Sides<SideRead>, resolver: &LinkResolver) {
    for side in Side::BOTH.into_iter().filter(|side| !reads[*side].carried) {
        for record in reads[side].records.values() {
            map_one(m, side, record, resolver);
        }
    }
}
