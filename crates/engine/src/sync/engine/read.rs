//! Reading one side of a mapping: from its stored cursor (or whole), its deletions, full
//! listings spaced by `full_listing_every`, and the links its references need (loaded for
//! what a pass read, looked up for what it fetches later); the pair states of what was read.

use super::*;

/// The ids of a complete listing of `rt`'s entity; `None` when the listing ended before its
/// last page.
async fn listed_ids(rt: &SideRuntime) -> Result<Option<HashSet<String>>, ConnectorError> {
    let mut reader = rt.connector.list_ids(&rt.entity)?;
    let mut ids = HashSet::new();
    let mut done = false;
    while let Some(page) = reader.next_page().await? {
        ids.extend(page.records.into_iter().map(|r| r.id));
        done = page.last;
    }
    Ok(done.then_some(ids))
}

/// Whether a full listing spaced by `every` is due at `now`, the last complete one having
/// been at `last` (`None`: never). A last listing stamped after `now` (a clock set back)
/// makes it due, so a wrong clock cannot hold listings back.
pub(super) fn listing_due(
    last: Option<chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
    every: std::time::Duration,
) -> bool {
    let Some(last) = last else { return true };
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
    last > now || now.signed_duration_since(last) >= every
}

/// The top-level field a record path starts with (`Title` of `$.Title`, `address` of
/// `address.city`, `OrderItems` of `$.OrderItems.records[*].Id`).
fn root_field(path: &str) -> Option<String> {
    let path = path.trim();
    let path = path.strip_prefix('$').unwrap_or(path);
    let path = path.strip_prefix('.').unwrap_or(path);
    let path = path.strip_prefix("['").unwrap_or(path);
    let end = path.find(['.', '[', '\'']).unwrap_or(path.len());
    let field = &path[..end];
    (!field.is_empty() && field != "*").then(|| field.to_owned())
}

/// The top-level fields a mapping reads or writes on one side: its rules' source paths and
/// the fields its templates read (source), or its rules' target paths and what their
/// inverses read (target), and the match keys.
pub(crate) fn fields_used(mapping: &CompiledMapping, side: Side) -> HashSet<String> {
    let mut used = HashSet::new();
    let rules = &mapping.rules;
    let needs = match side {
        Side::Source => &rules.forward_needs,
        Side::Target => &rules.inverse_needs,
    };
    used.extend(needs.fields.iter().map(|f| f.to_string()));
    if side == Side::Source {
        used.extend(mapping.filter_needs.fields.iter().map(|f| f.to_string()));
    }
    for rule in &rules.rules {
        let path = match side {
            Side::Source => rule.source_path().map(|p| p.as_str()),
            Side::Target => Some(rule.target.as_str()),
        };
        used.extend(path.and_then(root_field));
    }
    for key in &mapping.match_keys {
        let path = match side {
            Side::Source => &key.source,
            Side::Target => &key.target,
        };
        used.extend(root_field(path.as_str()));
    }
    used
}

/// The missing fields a mapping uses and those it does not (case-insensitive, as
/// Salesforce names fields).
pub(crate) fn split_missing(
    missing: &[String],
    used: &HashSet<String>,
) -> (Vec<String>, Vec<String>) {
    let used: HashSet<String> = used.iter().map(|f| f.to_ascii_lowercase()).collect();
    missing
        .iter()
        .cloned()
        .partition(|f| used.contains(&f.to_ascii_lowercase()))
}

impl Engine {
    /// Stops a mapping that uses a field its system does not have for the signed-in user
    /// (an entity's `describe`, read once per run), with an error naming the fields; fields
    /// of the system file that the mapping does not use and the system lacks are left out
    /// of its queries and logged once per run.
    pub(super) async fn check_fields(&self, m: &MappingRuntime) -> Result<(), EngineError> {
        for side in [Side::Source, Side::Target] {
            let rt = m.side(side);
            let missing = rt.connector.missing_fields(&rt.entity).await?;
            if missing.is_empty() {
                continue;
            }
            let (mapped, unused) = split_missing(&missing, &fields_used(&m.compiled, side));
            if !unused.is_empty() {
                debug!(mapping = %m.name, system = %rt.system, entity = %rt.entity,
                    fields = %unused.join(", "),
                    "fields of the system file that this org does not have are not queried");
            }
            if !mapped.is_empty() {
                return Err(EngineError::MissingFields {
                    mapping: m.name.clone(),
                    system: rt.system.clone(),
                    entity: rt.entity.clone(),
                    fields: mapped.join(", "),
                });
            }
        }
        Ok(())
    }

    /// The stored cursor of one side of a mapping (of its deletion feed with `deletions`).
    pub(super) async fn stored_cursor(
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

    /// The time of the side's last complete full listing, when one is kept.
    async fn last_listing(
        &self,
        m: &MappingRuntime,
        side: Side,
    ) -> Result<Option<chrono::DateTime<Utc>>, EngineError> {
        let stored = self.store.cursor(&listing_key(m, side)).await?;
        Ok(stored
            .as_deref()
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
            .map(|at| at.with_timezone(&Utc)))
    }

    /// Reads one side of a mapping from its stored cursor; without `fresh`, reads nothing
    /// and leaves the cursor where it is. Full listings wait for their `full_listing_every`:
    /// an entity without an incremental read is not read at all until its listing is due
    /// (the read is `skipped`), and one that finds deletions by a full listing looks for
    /// them only then.
    pub(super) async fn read_side(
        &self,
        m: &MappingRuntime,
        side: Side,
        fresh: bool,
    ) -> Result<SideRead, EngineError> {
        self.read_side_spaced(m, side, fresh, true, None).await
    }

    /// [`Self::read_side`] that keeps only what a pass can act on: a record whose mapped
    /// content hashes as its pair last saw it is counted and let go page by page
    /// (`passed`; its id kept in `passed_ids` where a complete listing finds deletions by
    /// absence), so a full listing of a large entity, or a side the engine filled itself
    /// (the records a stopped initial sync created, read again when it resumes), does not
    /// fill memory. A pair whose record was let go and whose other side changed reads it
    /// again by id, as it does when the side was not read at all. A source side is read
    /// lean only when the mapping refers to no other mapping (its content hash needs no
    /// link lookups); the target side's never does.
    pub(super) async fn read_side_lean(
        &self,
        m: &MappingRuntime,
        side: Side,
        fresh: bool,
    ) -> Result<SideRead, EngineError> {
        let mut read = SideRead {
            lean: side == Side::Target || m.references.is_empty(),
            ..SideRead::default()
        };
        if !read.lean {
            return self.read_side(m, side, fresh).await;
        }
        self.read_side_into(m, side, fresh, true, None, &mut read)
            .await?;
        Ok(read)
    }

    /// [`Self::read_side`] that stops at the end of the page where it holds `chunk`
    /// records, when more pages follow (`partial`; its cursor is that page's, safe to store
    /// once the chunk is written; a full listing ignores it, and a run stopped midway lists
    /// the entity again, its records of earlier chunks at rest).
    pub(super) async fn read_side_chunk(
        &self,
        m: &MappingRuntime,
        side: Side,
        fresh: bool,
        chunk: Option<usize>,
    ) -> Result<SideRead, EngineError> {
        self.read_side_spaced(m, side, fresh, true, chunk).await
    }

    /// [`Self::read_side`]; without `spaced`, a full listing is made whatever
    /// `full_listing_every` says (a fresh read that must see what the run just created).
    pub(super) async fn read_side_spaced(
        &self,
        m: &MappingRuntime,
        side: Side,
        fresh: bool,
        spaced: bool,
        chunk: Option<usize>,
    ) -> Result<SideRead, EngineError> {
        let mut read = SideRead::default();
        self.read_side_into(m, side, fresh, spaced, chunk, &mut read)
            .await?;
        Ok(read)
    }

    /// [`Self::read_side_spaced`] into `read`.
    async fn read_side_into(
        &self,
        m: &MappingRuntime,
        side: Side,
        fresh: bool,
        spaced: bool,
        chunk: Option<usize>,
        read: &mut SideRead,
    ) -> Result<(), EngineError> {
        if !fresh {
            return Ok(());
        }
        let rt = m.side(side);
        let every = rt.info.full_listing_every.filter(|_| spaced);
        let listing_due = match every {
            None => true,
            Some(every) => {
                let last = self.last_listing(m, side).await?;
                let due = listing_due(last, Utc::now(), every);
                if !due {
                    debug!(mapping = %m.name, side = side.as_str(), entity = %rt.entity,
                        last = ?last, every_s = every.as_secs(), "the full listing is not due yet");
                }
                due
            }
        };
        if !rt.info.incremental && !listing_due {
            read.skipped = true;
            return Ok(());
        }
        let listing_began = Utc::now();
        let cursor = self.stored_cursor(m, side, false).await?;
        let mut reader = rt.connector.changes(&rt.entity, cursor.as_ref())?;
        let complete = self
            .read_pages(m, side, reader.as_mut(), read, chunk)
            .await?;
        if read.partial {
            read.rest = Some(reader);
        }
        if every.is_some() && !rt.info.incremental && complete {
            read.listing_cursor = Some(listing_began.to_rfc3339());
        }
        match rt.info.deletions {
            crate::connector::DeletionDiscovery::Feed => {
                let cursor = self.stored_cursor(m, side, true).await?;
                if let Err(error) = Self::read_deletion_feed(rt, cursor.as_ref(), read).await {
                    if error.stops_system() {
                        return Err(error.into());
                    }
                    self.deletions_by_listing(m, side, &error, read).await?;
                }
            }
            // A full listing read in chunks finds deletions on a later run's complete
            // listing: the ids of one chunk are not the entity's, and listing them apart
            // would read it twice.
            crate::connector::DeletionDiscovery::FullListing
                if !rt.info.incremental && read.partial => {}
            crate::connector::DeletionDiscovery::FullListing => {
                if !rt.info.incremental && complete {
                    read.listed = Some(
                        read.records
                            .keys()
                            .cloned()
                            .chain(std::mem::take(&mut read.passed_ids))
                            .collect(),
                    );
                } else if listing_due {
                    let began = Utc::now();
                    if let Some(ids) = listed_ids(rt).await? {
                        read.listed = Some(ids);
                        if every.is_some() {
                            read.listing_cursor = Some(began.to_rfc3339());
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The next chunk of a read that stopped at a chunk's end: from where `reader` stopped,
    /// about `chunk` records more (`partial` again when there are more still).
    pub(super) async fn read_more(
        &self,
        m: &MappingRuntime,
        side: Side,
        reader: &mut Box<dyn PageReader>,
        chunk: usize,
    ) -> Result<SideRead, EngineError> {
        let mut read = SideRead::default();
        self.read_pages(m, side, reader.as_mut(), &mut read, Some(chunk))
            .await?;
        Ok(read)
    }

    /// Pulls pages into `read` until the last page, or, with `chunk`, until the read holds
    /// that many records and more pages follow (`partial`); `cursor` is the last page's.
    /// True when the last page was read.
    async fn read_pages(
        &self,
        m: &MappingRuntime,
        side: Side,
        reader: &mut dyn PageReader,
        read: &mut SideRead,
        chunk: Option<usize>,
    ) -> Result<bool, EngineError> {
        let mut complete = false;
        let mut following = None;
        loop {
            let fetched = match following.take() {
                Some(fetched) => fetched,
                None => reader.next_page().await,
            };
            let Some(mut page) = fetched? else {
                break;
            };
            let records = std::mem::take(&mut page.records);
            let records = if !read.lean {
                records
            } else if chunk.is_none() && !page.last {
                // A whole read lets go of a page's records at rest while the next page is
                // fetched (its error, if any, comes once this page is taken).
                let (kept, next) = tokio::join!(
                    self.pass_unchanged(m, side, records, read),
                    reader.next_page()
                );
                following = Some(next);
                kept?
            } else {
                self.pass_unchanged(m, side, records, read).await?
            };
            for record in records {
                read.records.insert(record.id.clone(), record);
            }
            read.deleted.extend(page.deleted.into_iter().map(|d| d.id));
            for malformed in page.malformed {
                warn!(mapping = %m.name, side = side.as_str(), id = ?malformed.id, reason = %malformed.reason, "listed item skipped");
                read.malformed.push(ListedProblem {
                    side,
                    id: malformed.id,
                    reason: malformed.reason,
                });
            }
            for ahead in page.ahead {
                read.ahead.push(ListedProblem {
                    side,
                    reason: format!(
                        "modified at {}, after the system's clock ({}): synced, but it does not move the cursor",
                        ahead.modified.to_rfc3339(),
                        ahead.clock.to_rfc3339()
                    ),
                    id: Some(ahead.id),
                });
            }
            read.cursor = Some(page.cursor);
            complete = page.last;
            // A full listing (no incremental read) stops at a chunk's end too: a stopped
            // run lists it again from the beginning, its records of earlier chunks at rest.
            if !page.last && chunk.is_some_and(|chunk| read.records.len() >= chunk) {
                read.partial = true;
                break;
            }
        }
        Ok(complete)
    }

    /// The records of a page of a lean read that it keeps: those whose mapped content does
    /// not hash as their pair last saw it; the others are let go (see
    /// [`Self::read_side_lean`]).
    async fn pass_unchanged(
        &self,
        m: &MappingRuntime,
        side: Side,
        records: Vec<Record>,
        read: &mut SideRead,
    ) -> Result<Vec<Record>, EngineError> {
        if records.is_empty() {
            return Ok(records);
        }
        let keep_ids = !m.side(side).info.incremental;
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let seen: HashMap<String, String> = self
            .store
            .seen_hashes_of_records(&m.name, side, &ids)
            .await?
            .into_iter()
            .collect();
        // Only a mapping that refers to no other reads its source lean: nothing to resolve.
        let resolver = LinkResolver::unlinked();
        let mut kept: Vec<Record> =
            Vec::with_capacity(records.len() - seen.len().min(records.len()));
        let mut kept_ids = HashSet::new();
        for record in records {
            let seen = seen.get(&record.id).map(String::as_str);
            if !at_rest(m, side, &record.data, &resolver, seen) {
                kept_ids.insert(record.id.clone());
                kept.push(record);
                continue;
            }
            // A record listed twice whose earlier copy was kept is at rest as last listed.
            if kept_ids.remove(&record.id) {
                kept.retain(|earlier| earlier.id != record.id);
            }
            read.records.shift_remove(&record.id);
            read.passed += 1;
            if keep_ids {
                read.passed_ids.push(record.id);
            }
        }
        Ok(kept)
    }

    /// Reads a deletion feed from `cursor` into `read`.
    async fn read_deletion_feed(
        rt: &SideRuntime,
        cursor: Option<&ConnectorCursor>,
        read: &mut SideRead,
    ) -> Result<(), ConnectorError> {
        let mut reader = rt.connector.deletions(&rt.entity, cursor)?;
        while let Some(page) = reader.next_page().await? {
            read.deleted.extend(page.deleted.into_iter().map(|d| d.id));
            read.deletion_cursor = Some(page.cursor.to_string());
        }
        Ok(())
    }

    /// When a deletion feed cannot be read, deletions are found as a full listing finds
    /// them: linked records missing from a complete id listing are gone. The changes read
    /// are synced either way; a listing that fails too leaves deletions to the next run.
    ///
    /// Real behaviour (SOAP API Developer Guide, `getDeleted()`): Salesforce keeps deletions
    /// for 15 days at most and answers `INVALID_REPLICATION_DATE` for an older start or
    /// after the recycle bin was emptied, for as long as the start stays where it is; "If
    /// you get this exception, you should do a full pull of the table". A complete listing
    /// found every deletion made before it began, so the feed's cursor moves to that time.
    async fn deletions_by_listing(
        &self,
        m: &MappingRuntime,
        side: Side,
        error: &ConnectorError,
        read: &mut SideRead,
    ) -> Result<(), EngineError> {
        let rt = m.side(side);
        warn!(mapping = %m.name, side = side.as_str(), system = %rt.connector.system(),
            entity = %rt.entity, %error,
            "the deletion feed cannot be read; deletions are found by a full listing of ids instead");
        let began = chrono::Utc::now();
        match listed_ids(rt).await {
            Ok(Some(ids)) => {
                warn!(mapping = %m.name, side = side.as_str(), entity = %rt.entity,
                    listed = ids.len(),
                    "deletions were found by a full listing; the deletion feed resumes from its start");
                read.notes.push(format!(
                    "{} {} {}: the deletion feed could not be read ({error}); deletions were found by a full listing of {} ids instead",
                    side.as_str(),
                    rt.connector.system(),
                    rt.entity,
                    ids.len()
                ));
                read.listed = Some(ids);
                read.deletion_cursor = Some(ConnectorCursor::at(began).to_string());
            }
            Ok(None) => {}
            Err(listing) if listing.stops_system() => return Err(listing.into()),
            Err(listing) => {
                warn!(mapping = %m.name, side = side.as_str(), entity = %rt.entity, error = %listing,
                    "the full listing for deletions failed too; deletions are looked for again next run");
                read.notes.push(format!(
                    "{} {} {}: the deletion feed could not be read ({error}), nor a full listing ({listing}); deletions are looked for again next run",
                    side.as_str(),
                    rt.connector.system(),
                    rt.entity
                ));
            }
        }
        Ok(())
    }

    /// The translations of `m`'s references by key (`ref_key`): the referenced mapping's
    /// synced value at the key path stands for the record on its target side. Loaded once
    /// per pass and shared by its chunks (the referenced mapping does not write meanwhile).
    pub(super) async fn keyed_references(
        &self,
        m: &MappingRuntime,
    ) -> Result<Arc<KeyedRefs>, EngineError> {
        let mut keyed = KeyedRefs::new();
        for reference in m.compiled.references() {
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
        Ok(Arc::new(keyed))
    }

    /// The id translations of the mappings `m` refers to: none loaded yet; the links a
    /// chunk's records refer to are looked up for the chunk at once (see [`LinkResolver`]),
    /// never every link of a large referenced mapping. `keyed`: the pass's references by
    /// key ([`Self::keyed_references`]).
    pub(super) fn resolver(&self, m: &MappingRuntime, keyed: Arc<KeyedRefs>) -> LinkResolver {
        LinkResolver {
            whole: m.references.is_empty(),
            ids: Mutex::new(HashMap::new()),
            looked_up: Mutex::new(HashSet::new()),
            missed: Mutex::new(HashSet::new()),
            keyed,
        }
    }

    /// Looks up the links of the ids mappings asked `resolver` for and did not find loaded;
    /// false when there were none, so what was mapped stands.
    pub(super) async fn load_missed(&self, resolver: &LinkResolver) -> Result<bool, EngineError> {
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
    pub(super) async fn links_ready(
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

    /// Which of the records `ids` of `side` are in a pair of the mapping.
    pub(super) async fn paired_among(
        &self,
        m: &MappingRuntime,
        side: Side,
        ids: &[String],
    ) -> Result<HashSet<String>, EngineError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(self
            .store
            .pair_states_of_records(&m.name, side, ids)
            .await?
            .into_iter()
            .map(|p| p.id(side).to_owned())
            .collect())
    }

    /// The pair states a pass needs: those of the records read or reported deleted and,
    /// beside a complete listing, those of paired records missing from it. A run that read
    /// a few changes loads a few merge bases, not every pair of the mapping.
    pub(super) async fn pairs_of(
        &self,
        m: &MappingRuntime,
        reads: &Sides<SideRead>,
    ) -> Result<Vec<PairState>, EngineError> {
        let mut pairs: HashMap<String, PairState> = HashMap::new();
        // Records carried from an earlier chunk were found unpaired there.
        for side in Side::BOTH.into_iter().filter(|side| !reads[*side].carried) {
            let read = &reads[side];
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
}

#[cfg(test)]
mod tests {
    use super::{listing_due, root_field, split_missing};

    #[test]
    fn the_root_field_of_a_path_and_the_missing_fields_a_mapping_uses() {
        assert_eq!(root_field("$.Title").as_deref(), Some("Title"));
        assert_eq!(root_field("address.city").as_deref(), Some("address"));
        assert_eq!(
            root_field("$.OrderItems.records[*].Id").as_deref(),
            Some("OrderItems")
        );
        assert_eq!(root_field("$['Name']").as_deref(), Some("Name"));
        assert_eq!(root_field("$"), None);
        let used = ["Title".to_owned(), "Email".to_owned()]
            .into_iter()
            .collect();
        let (mapped, unused) =
            split_missing(&["title".to_owned(), "BillingStateCode".to_owned()], &used);
        assert_eq!(mapped, vec!["title".to_owned()]);
        assert_eq!(unused, vec!["BillingStateCode".to_owned()]);
    }
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn a_full_listing_is_due_once_its_interval_has_passed() {
        let now = Utc.with_ymd_and_hms(2026, 5, 4, 12, 0, 0).unwrap();
        let every = std::time::Duration::from_secs(6 * 3600);
        assert!(listing_due(None, now, every), "never listed");
        assert!(!listing_due(Some(now - Duration::minutes(1)), now, every));
        assert!(!listing_due(Some(now - Duration::hours(5)), now, every));
        assert!(listing_due(Some(now - Duration::hours(6)), now, every));
        assert!(listing_due(Some(now - Duration::days(3)), now, every));
        assert!(
            listing_due(Some(now + Duration::hours(1)), now, every),
            "a listing stamped in the future does not hold the next one back"
        );
        assert!(!listing_due(
            Some(now - Duration::hours(1)),
            now,
            std::time::Duration::MAX
        ));
    }
}
