//! The pure decisions of a pass, taken from what was read and the stored pair states, with
//! no store or connector at hand: unit-tested without HTTP, like `merge.rs`. The pass
//! (`decide.rs`) gathers their inputs and applies their results.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;

use super::Touched;
use crate::connector::Record;
use crate::spec::flow::{DeletePolicy, Direction, Side, Sides};
use crate::store::{GlobalId, PairState, ParkedRecord};
use chrono::{DateTime, Utc};

/// What the deletions a pass found do to the pairs of its mapping.
#[derive(Debug, Default, PartialEq)]
pub(super) struct DeletionPlan {
    /// Counterparts to delete: (side, id, pair).
    pub deletes: Vec<(Side, String, GlobalId)>,
    /// Pairs to forget, by the record that is gone: (side, id, pair).
    pub unlinks: Vec<(Side, String, GlobalId)>,
    /// Records left by a forgotten pair, with the hash of their content last seen: they
    /// are remembered so that they are not created again on the other side.
    pub survivors: Vec<(Side, String, Option<String>)>,
    /// Every record gone or to be deleted: none of them is synced in this pass.
    pub gone: HashSet<(Side, String)>,
}

/// The deletions of a pass: the ids each side reported deleted, and, beside a complete
/// listing of a side, its paired records missing from it. A delete propagates (with
/// `propagate`) only the way the mapping carries records and only where the other side can
/// delete; otherwise the pair is forgotten and its other record survives. Pure.
pub(super) fn plan_deletions(
    deleted: Sides<&[String]>,
    listed: Sides<Option<&HashSet<String>>>,
    pair_of: Sides<&HashMap<&str, &PairState>>,
    policy: DeletePolicy,
    direction: Direction,
    can_delete: Sides<bool>,
) -> DeletionPlan {
    let mut found: Vec<(Side, String)> = Vec::new();
    for side in [Side::Source, Side::Target] {
        found.extend(deleted[side].iter().map(|id| (side, id.clone())));
        if let Some(listed) = listed[side] {
            let mut missing: Vec<&str> = pair_of[side]
                .keys()
                .copied()
                .filter(|id| !listed.contains(*id))
                .collect();
            // In a stable order, whatever the map's.
            missing.sort_unstable();
            found.extend(missing.into_iter().map(|id| (side, id.to_owned())));
        }
    }
    let mut plan = DeletionPlan::default();
    for (side, id) in found {
        let Some(pair) = pair_of[side].get(id.as_str()) else {
            continue;
        };
        if !plan.gone.insert((side, id.clone())) {
            continue;
        }
        let other = side.other();
        let (counterpart, seen) = (pair.id(other).to_owned(), pair.seen(other).hash.clone());
        // A delete propagates the way the mapping carries records: in a one-way mapping,
        // a delete on the side that never creates (a shop order of a CRM user) only
        // forgets the pair.
        let carried = direction.from(side);
        match policy {
            DeletePolicy::Ignore => {}
            DeletePolicy::Propagate if carried && can_delete[side.other()] => {
                plan.deletes
                    .push((side.other(), counterpart.clone(), pair.global_id.clone()));
                plan.gone.insert((side.other(), counterpart));
                plan.unlinks.push((side, id, pair.global_id.clone()));
            }
            DeletePolicy::Unlink | DeletePolicy::Propagate => {
                plan.survivors.push((side.other(), counterpart, seen));
                plan.unlinks.push((side, id, pair.global_id.clone()));
            }
        }
    }
    // A survivor that is itself gone is no survivor.
    let gone = &plan.gone;
    plan.survivors
        .retain(|(side, id, _)| !gone.contains(&(*side, id.clone())));
    plan
}

/// The circuit breaker: the message that stops a pass before it writes, when it would
/// overwrite or delete more than `max_share` of the `linked` pairs linked before the run (at
/// least [`BREAKER_MIN_LINKED`] of them) and the run does not let mass changes through.
/// Pure.
pub(super) fn breaker(
    changes: usize,
    linked: usize,
    max_share: f64,
    allow_mass_change: bool,
) -> Option<String> {
    if linked < BREAKER_MIN_LINKED || allow_mass_change {
        return None;
    }
    let share = changes as f64 / linked as f64;
    (share > max_share).then(|| {
        format!(
            "stopped before writing: this run would overwrite or delete {changes} of {linked} linked records ({:.0}%), more than the mapping's max_change_share of {:.0}%; check the source data, then run again with --allow-mass-change to let it through",
            share * 100.0,
            max_share * 100.0
        )
    })
}

/// Below this many linked pairs the circuit breaker stays quiet: a share of very few
/// records says nothing.
pub(super) const BREAKER_MIN_LINKED: usize = 10;

/// Refused deletes: a pair whose record waits to be deleted (`deleting`, with the pair
/// states `pairs` of those records) is neither deleted again nor unlinked by the pass's
/// deletion discovery; a wait that is over at `now` sends the delete again (and forgets the
/// pair once it lands). Pure.
pub(super) fn hold_deletes(
    deletes: &mut Vec<(Side, String, GlobalId)>,
    unlinks: &mut Vec<(Side, String, GlobalId)>,
    deleting: &[&ParkedRecord],
    pairs: &[PairState],
    now: DateTime<Utc>,
) {
    if deleting.is_empty() {
        return;
    }
    let mut held: HashSet<&str> = HashSet::new();
    let mut due = Vec::new();
    for parked in deleting {
        let Some(pair) = pairs
            .iter()
            .find(|pair| pair.id(parked.side) == parked.record_id)
        else {
            continue;
        };
        held.insert(pair.global_id.as_str());
        if parked.is_due(now) {
            due.push((parked.side, pair));
        }
    }
    deletes.retain(|(_, _, global)| !held.contains(global.as_str()));
    unlinks.retain(|(_, _, global)| !held.contains(global.as_str()));
    for (side, pair) in due {
        deletes.push((side, pair.id(side).to_owned(), pair.global_id.clone()));
        unlinks.push((
            side.other(),
            pair.id(side.other()).to_owned(),
            pair.global_id.clone(),
        ));
    }
}

/// Where the records a pass read stand, before anything is merged or matched.
#[derive(Debug, Default)]
pub(super) struct Classified<'r> {
    /// Pairs touched, by global id: (source id, target id, pair state), in the order met.
    /// A record linked by another mapping of the identity whose counterpart there is free
    /// in this mapping makes a pair without a state yet.
    pub touched: IndexMap<String, Touched<'r>>,
    /// Records without a counterpart in this mapping: to match or create.
    pub unlinked: Sides<Vec<&'r Record>>,
    /// Paired records read as their pair last saw them: nothing to do.
    pub ok: Vec<(Side, String)>,
}

/// Sorts the records read (`records`, `None` for a side carried from an earlier chunk) into
/// pairs touched, records without a counterpart and records with nothing to do. `gone`
/// records are left out; `pair_of` are the pair states by record id; `links` the global
/// ids of unpaired records (linked by other mappings) and `counterparts` the free records
/// of the other side under those global ids; `settled` says whether a paired record is as
/// its pair last saw it with no person's choice waiting. Pure.
pub(super) fn classify<'r>(
    records: Sides<Option<&'r IndexMap<String, Record>>>,
    gone: &HashSet<(Side, String)>,
    pair_of: Sides<&HashMap<&str, &'r PairState>>,
    links: Sides<&HashMap<String, GlobalId>>,
    counterparts: &Sides<HashMap<GlobalId, String>>,
    settled: impl Fn(Side, &Record, &PairState) -> bool,
) -> Classified<'r> {
    let mut out = Classified::default();
    for side in [Side::Source, Side::Target] {
        for record in records[side].into_iter().flat_map(IndexMap::values) {
            if gone.contains(&(side, record.id.clone())) {
                continue;
            }
            if let Some(pair) = pair_of[side].get(record.id.as_str()) {
                if settled(side, record, pair) {
                    match out.touched.get_mut(pair.global_id.as_str()) {
                        // The other side changed: the pair is merged with this record.
                        Some(entry) if side == Side::Target => {
                            entry.1 = Some(record.id.clone());
                        }
                        _ => out.ok.push((side, record.id.clone())),
                    }
                    continue;
                }
                match side {
                    Side::Source => {
                        out.touched.insert(
                            pair.global_id.as_str().to_owned(),
                            (
                                Some(record.id.clone()),
                                Some(pair.target_id.clone()),
                                Some(*pair),
                            ),
                        );
                    }
                    Side::Target => {
                        let entry = out
                            .touched
                            .entry(pair.global_id.as_str().to_owned())
                            .or_insert((Some(pair.source_id.clone()), None, Some(*pair)));
                        entry.1 = Some(record.id.clone());
                    }
                }
            } else if let Some(global) = links[side].get(&record.id) {
                if side == Side::Target && out.touched.contains_key(global.as_str()) {
                    continue;
                }
                match counterparts[side].get(global) {
                    Some(other) => {
                        let ids = match side {
                            Side::Source => (Some(record.id.clone()), Some(other.clone())),
                            Side::Target => (Some(other.clone()), Some(record.id.clone())),
                        };
                        out.touched
                            .insert(global.as_str().to_owned(), (ids.0, ids.1, None));
                    }
                    None => out.unlinked[side].push(record),
                }
            } else {
                out.unlinked[side].push(record);
            }
        }
    }
    out
}

/// What a record without a counterpart does, from the records its match key found on the
/// other side (`candidates`, free to link and alive).
#[derive(Debug, PartialEq)]
pub(super) enum MatchPlan {
    /// No candidate, and the mapping does not carry records this way: nothing.
    Nothing,
    /// No candidate: its counterpart is created.
    Create,
    /// One candidate: the two are linked, under `global` (the record's own global id or
    /// the candidate's), or under a new one when neither has one.
    Link {
        candidate: String,
        global: Option<GlobalId>,
    },
    /// One candidate, but the two are already different global ids of the identity (linked
    /// by other mappings): the record is parked for a person.
    Different {
        candidate: String,
        own: GlobalId,
        theirs: GlobalId,
    },
    /// More than one candidate: the record is parked as ambiguous.
    Ambiguous(Vec<String>),
}

/// The match of a record without a counterpart: `allowed` when the mapping carries records
/// from its side, `own` its global id (linked by another mapping of the identity), `links`
/// the global ids of candidate records. Pure.
pub(super) fn plan_match(
    mut candidates: Vec<String>,
    allowed: bool,
    own: Option<&GlobalId>,
    links: &HashMap<String, GlobalId>,
) -> MatchPlan {
    match candidates.len() {
        0 if allowed => MatchPlan::Create,
        0 => MatchPlan::Nothing,
        1 => {
            let candidate = candidates.remove(0);
            match (own, links.get(&candidate)) {
                (Some(own), Some(theirs)) if own != theirs => MatchPlan::Different {
                    candidate,
                    own: own.clone(),
                    theirs: theirs.clone(),
                },
                (Some(own), _) => MatchPlan::Link {
                    candidate,
                    global: Some(own.clone()),
                },
                (None, theirs) => MatchPlan::Link {
                    candidate,
                    global: theirs.cloned(),
                },
            }
        }
        _ => MatchPlan::Ambiguous(candidates),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SideSeen;
    use chrono::Utc;
    use serde_json::json;

    fn pair(global: &str, source: &str, target: &str) -> PairState {
        PairState {
            mapping: "m".into(),
            global_id: GlobalId::new(global),
            source_id: source.into(),
            target_id: target.into(),
            base: json!({}),
            base_hash: String::new(),
            source: SideSeen {
                hash: Some(format!("seen-{source}")),
                modified_at: None,
            },
            target: SideSeen {
                hash: Some(format!("seen-{target}")),
                modified_at: None,
            },
            synced_at: Utc::now(),
        }
    }

    fn plan(
        pairs: &[PairState],
        deleted: Sides<&[String]>,
        listed: Sides<Option<&HashSet<String>>>,
        policy: DeletePolicy,
        direction: Direction,
    ) -> DeletionPlan {
        let of_source: HashMap<&str, &PairState> =
            pairs.iter().map(|p| (p.source_id.as_str(), p)).collect();
        let of_target: HashMap<&str, &PairState> =
            pairs.iter().map(|p| (p.target_id.as_str(), p)).collect();
        plan_deletions(
            deleted,
            listed,
            Sides([&of_source, &of_target]),
            policy,
            direction,
            Sides([true, true]),
        )
    }

    const NONE: &[String] = &[];

    #[test]
    fn a_source_delete_propagates_to_its_counterpart_and_forgets_the_pair() {
        let pairs = [pair("g1", "s1", "t1"), pair("g2", "s2", "t2")];
        let deleted = ["s1".to_owned()];
        let plan = plan(
            &pairs,
            Sides([&deleted, NONE]),
            Sides([None, None]),
            DeletePolicy::Propagate,
            Direction::Both,
        );
        assert_eq!(
            plan.deletes,
            [(Side::Target, "t1".to_owned(), GlobalId::new("g1"))]
        );
        assert_eq!(
            plan.unlinks,
            [(Side::Source, "s1".to_owned(), GlobalId::new("g1"))]
        );
        assert!(plan.survivors.is_empty());
        assert!(plan.gone.contains(&(Side::Target, "t1".to_owned())));
    }

    #[test]
    fn a_delete_against_the_mappings_direction_only_forgets_the_pair() {
        // A one-way mapping: the target never creates source records, so its deletes do not
        // reach the source; the source record survives, remembered as last seen.
        let pairs = [pair("g1", "s1", "t1")];
        let deleted = ["t1".to_owned()];
        let plan = plan(
            &pairs,
            Sides([NONE, &deleted]),
            Sides([None, None]),
            DeletePolicy::Propagate,
            Direction::SourceToTarget,
        );
        assert!(plan.deletes.is_empty());
        assert_eq!(
            plan.survivors,
            [(Side::Source, "s1".to_owned(), Some("seen-s1".to_owned()))]
        );
    }

    #[test]
    fn paired_records_missing_from_a_complete_listing_are_deleted_ones() {
        let pairs = [pair("g1", "s1", "t1"), pair("g2", "s2", "t2")];
        let listed: HashSet<String> = ["t2".to_owned()].into();
        let plan = plan(
            &pairs,
            Sides([NONE, NONE]),
            Sides([None, Some(&listed)]),
            DeletePolicy::Unlink,
            Direction::Both,
        );
        assert_eq!(
            plan.unlinks,
            [(Side::Target, "t1".to_owned(), GlobalId::new("g1"))]
        );
        assert_eq!(
            plan.survivors,
            [(Side::Source, "s1".to_owned(), Some("seen-s1".to_owned()))]
        );
    }

    #[test]
    fn a_pair_deleted_on_both_sides_leaves_no_survivor_and_ignore_does_nothing() {
        let pairs = [pair("g1", "s1", "t1")];
        let (s, t) = (["s1".to_owned()], ["t1".to_owned()]);
        let both = plan(
            &pairs,
            Sides([&s, &t]),
            Sides([None, None]),
            DeletePolicy::Unlink,
            Direction::Both,
        );
        assert!(both.survivors.is_empty(), "{both:?}");
        assert_eq!(both.unlinks.len(), 2);
        let ignored = plan(
            &pairs,
            Sides([&s, NONE]),
            Sides([None, None]),
            DeletePolicy::Ignore,
            Direction::Both,
        );
        assert!(ignored.deletes.is_empty() && ignored.unlinks.is_empty());
        assert!(ignored.survivors.is_empty());
    }

    fn waiting_delete(side: Side, id: &str, retry_at: Option<DateTime<Utc>>) -> ParkedRecord {
        let now = Utc::now();
        ParkedRecord {
            mapping: "m".into(),
            side,
            record_id: id.into(),
            reason: "the system refused the delete".into(),
            field: None,
            value: None,
            attempts: 1,
            first_parked_at: now,
            last_tried_at: now,
            skipped_at: None,
            skipped_hash: None,
            deleting: true,
            retry_at,
        }
    }

    #[test]
    fn a_refused_delete_waits_then_is_sent_again_and_the_pair_forgotten_once_due() {
        let now = Utc::now();
        let pairs = [pair("g1", "s1", "t1"), pair("g2", "s2", "t2")];
        let later = waiting_delete(Side::Target, "t1", Some(now + chrono::Duration::hours(1)));
        let due = waiting_delete(Side::Target, "t2", Some(now - chrono::Duration::minutes(1)));
        let g = |id: &str| GlobalId::new(id);
        // The pass's deletion discovery found both pairs' sources gone, and a third pair.
        let mut deletes = vec![
            (Side::Target, "t1".to_owned(), g("g1")),
            (Side::Target, "t2".to_owned(), g("g2")),
            (Side::Target, "t3".to_owned(), g("g3")),
        ];
        let mut unlinks = vec![
            (Side::Source, "s1".to_owned(), g("g1")),
            (Side::Source, "s2".to_owned(), g("g2")),
            (Side::Source, "s3".to_owned(), g("g3")),
        ];
        hold_deletes(&mut deletes, &mut unlinks, &[&later, &due], &pairs, now);
        // The pair whose delete waits is left alone; the due one is deleted (once) and its
        // pair forgotten by the record left; the pair nothing waits for goes on.
        assert_eq!(
            deletes,
            [
                (Side::Target, "t3".to_owned(), g("g3")),
                (Side::Target, "t2".to_owned(), g("g2")),
            ]
        );
        assert_eq!(
            unlinks,
            [
                (Side::Source, "s3".to_owned(), g("g3")),
                (Side::Source, "s2".to_owned(), g("g2")),
            ]
        );
        // A record waiting for a delete whose pair is gone changes nothing.
        let mut none = Vec::new();
        let mut also_none = Vec::new();
        let orphan = waiting_delete(Side::Source, "s9", None);
        hold_deletes(&mut none, &mut also_none, &[&orphan], &pairs, now);
        assert!(none.is_empty() && also_none.is_empty());
    }

    #[test]
    fn the_breaker_stops_a_pass_that_changes_more_than_its_share_of_linked_pairs() {
        let stopped = breaker(6, 10, 0.5, false).expect("60% of 10 is over 50%");
        assert!(
            stopped.contains("6 of 10 linked records (60%)")
                && stopped.contains("max_change_share of 50%"),
            "{stopped}"
        );
        assert_eq!(breaker(5, 10, 0.5, false), None, "exactly the share passes");
        assert_eq!(breaker(6, 10, 0.5, true), None, "--allow-mass-change");
        assert_eq!(breaker(9, 9, 0.5, false), None, "too few pairs to judge");
        assert_eq!(breaker(0, 0, 0.5, false), None, "an initial sync");
    }

    #[test]
    fn a_record_reported_twice_is_planned_once() {
        let pairs = [pair("g1", "s1", "t1")];
        let deleted = ["s1".to_owned(), "s1".to_owned()];
        let listed: HashSet<String> = HashSet::new();
        let plan = plan(
            &pairs,
            Sides([&deleted, NONE]),
            Sides([Some(&listed), None]),
            DeletePolicy::Propagate,
            Direction::Both,
        );
        assert_eq!(plan.deletes.len(), 1);
        assert_eq!(plan.unlinks.len(), 1);
    }

    #[test]
    fn a_record_without_candidates_is_created_only_the_way_the_mapping_carries_records() {
        let links = HashMap::new();
        assert_eq!(plan_match(vec![], true, None, &links), MatchPlan::Create);
        assert_eq!(plan_match(vec![], false, None, &links), MatchPlan::Nothing);
        let own = GlobalId::new("g1");
        assert_eq!(
            plan_match(vec![], true, Some(&own), &links),
            MatchPlan::Create
        );
    }

    #[test]
    fn one_candidate_links_under_the_global_id_either_has_and_a_second_one_is_a_conflict() {
        let (g1, g2) = (GlobalId::new("g1"), GlobalId::new("g2"));
        let none = HashMap::new();
        let theirs: HashMap<String, GlobalId> = [("c".to_owned(), g2.clone())].into();
        let same: HashMap<String, GlobalId> = [("c".to_owned(), g1.clone())].into();
        let link = |global: Option<&GlobalId>| MatchPlan::Link {
            candidate: "c".into(),
            global: global.cloned(),
        };
        assert_eq!(plan_match(vec!["c".into()], true, None, &none), link(None));
        assert_eq!(
            plan_match(vec!["c".into()], true, Some(&g1), &none),
            link(Some(&g1))
        );
        assert_eq!(
            plan_match(vec!["c".into()], true, None, &theirs),
            link(Some(&g2))
        );
        assert_eq!(
            plan_match(vec!["c".into()], false, Some(&g1), &same),
            link(Some(&g1)),
            "a match links even where the mapping creates nothing"
        );
        assert_eq!(
            plan_match(vec!["c".into()], true, Some(&g1), &theirs),
            MatchPlan::Different {
                candidate: "c".into(),
                own: g1,
                theirs: g2,
            }
        );
    }

    #[test]
    fn several_candidates_are_ambiguous_in_the_order_found() {
        assert_eq!(
            plan_match(vec!["b".into(), "a".into()], true, None, &HashMap::new()),
            MatchPlan::Ambiguous(vec!["b".into(), "a".into()])
        );
    }

    fn records(ids: &[&str]) -> IndexMap<String, Record> {
        ids.iter()
            .map(|id| {
                (
                    (*id).to_owned(),
                    Record {
                        id: (*id).to_owned(),
                        modified: None,
                        data: json!({ "id": id }),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn records_read_are_sorted_into_pairs_to_merge_records_to_match_and_records_at_rest() {
        let (p1, p2, p3) = (
            pair("g1", "s1", "t1"),
            pair("g2", "s2", "t2"),
            pair("g3", "s3", "t3"),
        );
        let source = records(&["s1", "s2", "s4", "s5", "s6", "gone"]);
        let target = records(&["t1", "t2", "t3", "t7"]);
        let pair_of_source: HashMap<&str, &PairState> =
            [("s1", &p1), ("s2", &p2), ("s3", &p3)].into();
        let pair_of_target: HashMap<&str, &PairState> =
            [("t1", &p1), ("t2", &p2), ("t3", &p3)].into();
        // s4 is linked by another mapping to g9, whose record t9 is free in this one; s5 to
        // g8, without a free counterpart here.
        let source_links: HashMap<String, GlobalId> = [
            ("s4".to_owned(), GlobalId::new("g9")),
            ("s5".to_owned(), GlobalId::new("g8")),
        ]
        .into();
        let counterparts = Sides([
            [(GlobalId::new("g9"), "t9".to_owned())].into(),
            HashMap::new(),
        ]);
        let gone: HashSet<(Side, String)> = [(Side::Source, "gone".to_owned())].into();
        // Changed since their pair last saw them: s1 (its target at rest), t2 and t3.
        let changed = ["s1", "t2", "t3"];
        let plan = classify(
            Sides([Some(&source), Some(&target)]),
            &gone,
            Sides([&pair_of_source, &pair_of_target]),
            Sides([&source_links, &HashMap::new()]),
            &counterparts,
            |_, record, _| !changed.contains(&record.id.as_str()),
        );
        // (global id, source id, target id, the pair state's global id)
        type Row<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
        let touched: Vec<Row<'_>> = plan
            .touched
            .iter()
            .map(|(global, (s, t, p))| {
                (
                    global.as_str(),
                    s.as_deref(),
                    t.as_deref(),
                    p.map(|p| p.global_id.as_str()),
                )
            })
            .collect();
        assert_eq!(
            touched,
            [
                ("g1", Some("s1"), Some("t1"), Some("g1")),
                ("g9", Some("s4"), Some("t9"), None),
                ("g2", Some("s2"), Some("t2"), Some("g2")),
                ("g3", Some("s3"), Some("t3"), Some("g3")),
            ]
        );
        let ids = |side: Side| -> Vec<&str> {
            plan.unlinked[side].iter().map(|r| r.id.as_str()).collect()
        };
        assert_eq!(ids(Side::Source), ["s5", "s6"]);
        assert_eq!(ids(Side::Target), ["t7"]);
        assert_eq!(plan.ok, [(Side::Source, "s2".to_owned())]);
    }

    #[test]
    fn a_side_carried_from_an_earlier_chunk_is_not_sorted_again() {
        let target = records(&["t1"]);
        let plan = classify(
            Sides([None, Some(&target)]),
            &HashSet::new(),
            Sides([&HashMap::new(), &HashMap::new()]),
            Sides([&HashMap::new(), &HashMap::new()]),
            &Sides::default(),
            |_, _, _| false,
        );
        assert!(plan.touched.is_empty() && plan.ok.is_empty());
        assert!(plan.unlinked[Side::Source].is_empty());
        assert_eq!(plan.unlinked[Side::Target].len(), 1);
    }
}
