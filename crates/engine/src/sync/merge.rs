//! The three-way merge of one linked pair, field by field. Pure: no I/O, no clock.
//!
//! All three versions are in the target's terms: the base is what was last synced, the source
//! side is the source record mapped forward, the target side is the target record's own
//! mapped fields, each in canonical form. A field changed on one side only takes that side's
//! value; changed on both to different values, the mapping's conflict policy decides and the
//! decision is recorded; unchanged fields are never written. A field absent from a side
//! (not null: absent) says nothing, so a field missing from a record never blanks the other
//! side.
//!
//! Under the `manual` policy a conflict has no winner: the field is left as it is on both
//! sides, the base keeps the last synced value, and the conflict is returned as held. While
//! it is held the field is not merged at all ([`Decision::Held`]); once a person chose, the
//! merge writes the choice to each side that differs ([`Decision::Take`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::spec::flow::{ConflictPolicy, Direction, Side};
use crate::store::Choice;

/// Canonical mapped fields: target path -> canonical value. A missing key is an absent field.
pub type Fields = BTreeMap<String, Value>;

/// The policies of the mapping that shape a merge.
#[derive(Debug, Clone, Copy)]
pub struct MergePolicy {
    pub conflict: ConflictPolicy,
    pub tie_breaker: Side,
    pub keep_filled: bool,
}

/// One side of a pair as the merge sees it.
#[derive(Debug, Clone, Copy)]
pub struct Version<'a> {
    pub fields: &'a Fields,
    /// When the record was last modified, if the system says.
    pub modified: Option<DateTime<Utc>>,
}

/// A field changed on both sides to different values, and how it was resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    pub field: String,
    pub base: Option<Value>,
    pub source: Option<Value>,
    pub target: Option<Value>,
    /// The side whose value was kept (for a held conflict, nobody's: the tie-breaker).
    pub winner: Side,
    /// Why the winner won ("newest wins: target modified later"), or why it is held.
    pub reason: String,
    /// Held for a person to decide (the `manual` policy): neither side was written.
    pub held: bool,
}

/// A person's decision on one field of a pair, from a conflict held earlier.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Still held: the field is left as it is on both sides and out of the merge.
    Held,
    /// Chosen: the field takes this value on both sides.
    Take(Choice),
}

/// What a merge decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// Fields to write to the target record (target paths and values).
    pub to_target: Fields,
    /// Fields whose target-side value must be written back to the source (through the rules'
    /// inverses), in target terms.
    pub to_source: Fields,
    /// The new base: what both sides hold once the writes are done.
    pub base: Fields,
    pub conflicts: Vec<Conflict>,
    /// Fields whose chosen value ([`Decision::Take`]) this merge wrote (or found in place).
    pub resolved: Vec<String>,
}

impl Merged {
    pub fn is_noop(&self) -> bool {
        self.to_target.is_empty() && self.to_source.is_empty()
    }
}

fn is_empty(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(Value::Array(items)) => items.is_empty(),
        Some(_) => false,
    }
}

/// Merges one pair. `direction` gives each field's direction (a rule may be one-way in a
/// two-way mapping). `base` is `None` for a pair linked by match keys and not yet synced:
/// every field that differs is then decided by the conflict policy, but not recorded as a
/// conflict, since nobody edited it against a synced value.
pub fn merge(
    base: Option<&Fields>,
    source: Version<'_>,
    target: Version<'_>,
    policy: MergePolicy,
    direction: &dyn Fn(&str) -> Direction,
) -> Merged {
    merge_with(base, source, target, policy, direction, &|_| false)
}

/// [`merge`], with `changes_only` naming the one-way fields that are written only when the
/// side they come from changes them: an edit the other side makes to such a field is kept
/// (not reverted), and the base keeps the value the field came with, so the next change of
/// the origin is still seen as one.
pub fn merge_with(
    base: Option<&Fields>,
    source: Version<'_>,
    target: Version<'_>,
    policy: MergePolicy,
    direction: &dyn Fn(&str) -> Direction,
    changes_only: &dyn Fn(&str) -> bool,
) -> Merged {
    merge_decided(
        base,
        source,
        target,
        policy,
        direction,
        changes_only,
        &|_| None,
    )
}

/// [`merge_with`], with `decided` giving the fields of held conflicts: left out of the merge
/// while held, written with the chosen value once a person decided. A chosen side's value is
/// the one the side holds now.
pub fn merge_decided(
    base: Option<&Fields>,
    source: Version<'_>,
    target: Version<'_>,
    policy: MergePolicy,
    direction: &dyn Fn(&str) -> Direction,
    changes_only: &dyn Fn(&str) -> bool,
    decided: &dyn Fn(&str) -> Option<Decision>,
) -> Merged {
    let mut out = Merged::default();
    let mut names: Vec<&String> = source.fields.keys().chain(target.fields.keys()).collect();
    if let Some(base) = base {
        names.extend(base.keys());
    }
    names.sort();
    names.dedup();
    for name in names {
        let field_direction = direction(name);
        let s = source.fields.get(name);
        let t = target.fields.get(name);
        let b = base.and_then(|b| b.get(name));
        match decided(name) {
            Some(Decision::Held) => {
                if let Some(b) = b {
                    out.base.insert(name.clone(), b.clone());
                }
                continue;
            }
            Some(Decision::Take(choice)) => {
                out.resolved.push(name.clone());
                let value = match choice {
                    Choice::Source => s.cloned(),
                    Choice::Target => t.cloned(),
                    Choice::Value(value) => Some(value),
                };
                match value {
                    Some(value) => {
                        if field_direction.forward() && t != Some(&value) {
                            out.to_target.insert(name.clone(), value.clone());
                        }
                        if field_direction.backward() && s != Some(&value) {
                            out.to_source.insert(name.clone(), value.clone());
                        }
                        out.base.insert(name.clone(), value);
                    }
                    None => {
                        if let Some(b) = b {
                            out.base.insert(name.clone(), b.clone());
                        }
                    }
                }
                continue;
            }
            None => {}
        }
        // What each side says: a changed value, or nothing (absent, or equal to the base).
        let s_changed = s.is_some() && (base.is_none() || s != b) && field_direction.forward();
        let t_changed = t.is_some() && (base.is_none() || t != b) && field_direction.backward();
        let chosen: Option<&Value> = match (s_changed, t_changed) {
            (false, false) => b.or(match field_direction {
                Direction::TargetToSource => t,
                _ => s.or(t),
            }),
            (true, false) => s,
            (false, true) => t,
            (true, true) if s == t => s,
            (true, true) if policy.conflict == ConflictPolicy::Manual && base.is_some() => {
                // Nobody wins: both sides keep their value, the base its synced one.
                out.conflicts.push(Conflict {
                    field: name.clone(),
                    base: b.cloned(),
                    source: s.cloned(),
                    target: t.cloned(),
                    winner: policy.tie_breaker,
                    reason: "held for a person to decide (conflict: manual)".to_owned(),
                    held: true,
                });
                if let Some(b) = b {
                    out.base.insert(name.clone(), b.clone());
                }
                continue;
            }
            (true, true) => {
                let (winner, reason) = resolve(policy, source.modified, target.modified);
                let (mut value, loser) = match winner {
                    Side::Source => (s, t),
                    Side::Target => (t, s),
                };
                let mut reason = reason;
                if policy.keep_filled && is_empty(value) && !is_empty(loser) {
                    value = loser;
                    reason = "an empty value never overwrites a filled one".to_owned();
                }
                if base.is_some() {
                    out.conflicts.push(Conflict {
                        field: name.clone(),
                        base: b.cloned(),
                        source: s.cloned(),
                        target: t.cloned(),
                        winner: if value == s {
                            Side::Source
                        } else {
                            Side::Target
                        },
                        reason,
                        held: false,
                    });
                }
                value
            }
        };
        // An empty value from one side never overwrites a filled one when the mapping says so.
        let chosen = if policy.keep_filled && is_empty(chosen) {
            [s, t, b]
                .into_iter()
                .find(|v| !is_empty(*v))
                .flatten()
                .or(chosen)
        } else {
            chosen
        };
        let Some(value) = chosen else { continue };
        // A side that lacks the field is written only when the other side changed it: a
        // field an API did not return is not a difference to repair. A changes-only field is
        // written only when its origin changed it.
        let only_changes = base.is_some() && changes_only(name);
        let repair = |present: bool| present && !only_changes;
        if field_direction.forward() && t != Some(value) && (repair(t.is_some()) || s_changed) {
            out.to_target.insert(name.clone(), value.clone());
        }
        if field_direction.backward() && s != Some(value) && (repair(s.is_some()) || t_changed) {
            out.to_source.insert(name.clone(), value.clone());
        }
        out.base.insert(name.clone(), value.clone());
    }
    out
}

fn resolve(
    policy: MergePolicy,
    source: Option<DateTime<Utc>>,
    target: Option<DateTime<Utc>>,
) -> (Side, String) {
    match policy.conflict {
        ConflictPolicy::SourceWins => (Side::Source, "source wins".to_owned()),
        ConflictPolicy::TargetWins => (Side::Target, "target wins".to_owned()),
        // Only a pair linked just now, with nothing synced to hold against, gets here.
        ConflictPolicy::Manual => (
            policy.tie_breaker,
            format!(
                "manual, but the records were just linked: the tie-breaker picks the {}",
                match policy.tie_breaker {
                    Side::Source => "source",
                    Side::Target => "target",
                }
            ),
        ),
        ConflictPolicy::NewestWins => match (source, target) {
            (Some(s), Some(t)) if s > t => (
                Side::Source,
                "newest wins: the source was modified later".to_owned(),
            ),
            (Some(s), Some(t)) if t > s => (
                Side::Target,
                "newest wins: the target was modified later".to_owned(),
            ),
            _ => (
                policy.tie_breaker,
                format!(
                    "newest wins, but the times {}: the tie-breaker picks the {}",
                    if source.is_some() && target.is_some() {
                        "are equal"
                    } else {
                        "are not both known"
                    },
                    match policy.tie_breaker {
                        Side::Source => "source",
                        Side::Target => "target",
                    }
                ),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(pairs: &[(&str, Value)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn at(secs: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(secs, 0)
    }

    const NEWEST: MergePolicy = MergePolicy {
        conflict: ConflictPolicy::NewestWins,
        tie_breaker: Side::Source,
        keep_filled: false,
    };
    fn both(_: &str) -> Direction {
        Direction::Both
    }

    #[test]
    fn unchanged_pairs_write_nothing() {
        let base = fields(&[("name", json!("Acme")), ("city", json!("Oslo"))]);
        let m = merge(
            Some(&base),
            Version {
                fields: &base,
                modified: at(1),
            },
            Version {
                fields: &base,
                modified: at(2),
            },
            NEWEST,
            &both,
        );
        assert!(m.is_noop());
        assert_eq!(m.base, base);
    }

    #[test]
    fn edits_on_different_fields_are_both_kept() {
        let base = fields(&[("name", json!("Acme")), ("city", json!("Oslo"))]);
        let source = fields(&[("name", json!("Acme AS")), ("city", json!("Oslo"))]);
        let target = fields(&[("name", json!("Acme")), ("city", json!("Bergen"))]);
        let m = merge(
            Some(&base),
            Version {
                fields: &source,
                modified: at(5),
            },
            Version {
                fields: &target,
                modified: at(6),
            },
            NEWEST,
            &both,
        );
        assert_eq!(m.to_target, fields(&[("name", json!("Acme AS"))]));
        assert_eq!(m.to_source, fields(&[("city", json!("Bergen"))]));
        assert_eq!(
            m.base,
            fields(&[("name", json!("Acme AS")), ("city", json!("Bergen"))])
        );
        assert!(m.conflicts.is_empty());
    }

    #[test]
    fn the_same_field_edited_on_both_sides_follows_the_policy_and_is_recorded() {
        let base = fields(&[("name", json!("Acme"))]);
        let source = fields(&[("name", json!("Acme AS"))]);
        let target = fields(&[("name", json!("ACME Ltd"))]);
        let m = merge(
            Some(&base),
            Version {
                fields: &source,
                modified: at(5),
            },
            Version {
                fields: &target,
                modified: at(9),
            },
            NEWEST,
            &both,
        );
        assert_eq!(m.to_source, fields(&[("name", json!("ACME Ltd"))]));
        assert!(m.to_target.is_empty());
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].winner, Side::Target);
        let source_wins = MergePolicy {
            conflict: ConflictPolicy::SourceWins,
            ..NEWEST
        };
        let m = merge(
            Some(&base),
            Version {
                fields: &source,
                modified: at(5),
            },
            Version {
                fields: &target,
                modified: at(9),
            },
            source_wins,
            &both,
        );
        assert_eq!(m.to_target, fields(&[("name", json!("Acme AS"))]));
        assert_eq!(m.conflicts[0].winner, Side::Source);
    }

    #[test]
    fn missing_times_fall_back_to_the_tie_breaker() {
        let base = fields(&[("name", json!("A"))]);
        let source = fields(&[("name", json!("B"))]);
        let target = fields(&[("name", json!("C"))]);
        let policy = MergePolicy {
            tie_breaker: Side::Target,
            ..NEWEST
        };
        let m = merge(
            Some(&base),
            Version {
                fields: &source,
                modified: None,
            },
            Version {
                fields: &target,
                modified: at(1),
            },
            policy,
            &both,
        );
        assert_eq!(m.conflicts[0].winner, Side::Target);
        assert!(
            m.conflicts[0].reason.contains("tie-breaker"),
            "{}",
            m.conflicts[0].reason
        );
    }

    #[test]
    fn an_absent_field_never_blanks_the_other_side_but_null_does() {
        let base = fields(&[("phone", json!("+4711111111"))]);
        let absent = fields(&[]);
        let m = merge(
            Some(&base),
            Version {
                fields: &absent,
                modified: at(5),
            },
            Version {
                fields: &base,
                modified: at(1),
            },
            NEWEST,
            &both,
        );
        assert!(m.is_noop());
        let null = fields(&[("phone", Value::Null)]);
        let m = merge(
            Some(&base),
            Version {
                fields: &null,
                modified: at(5),
            },
            Version {
                fields: &base,
                modified: at(1),
            },
            NEWEST,
            &both,
        );
        assert_eq!(m.to_target, fields(&[("phone", Value::Null)]));
    }

    #[test]
    fn keep_filled_stops_an_empty_value_overwriting() {
        let base = fields(&[("phone", json!("+4711111111"))]);
        let emptied = fields(&[("phone", json!(""))]);
        let policy = MergePolicy {
            keep_filled: true,
            ..NEWEST
        };
        let m = merge(
            Some(&base),
            Version {
                fields: &emptied,
                modified: at(5),
            },
            Version {
                fields: &base,
                modified: at(1),
            },
            policy,
            &both,
        );
        assert!(m.to_target.is_empty());
        assert_eq!(m.to_source, fields(&[("phone", json!("+4711111111"))]));
    }

    #[test]
    fn one_way_fields_ignore_the_other_side() {
        let base = fields(&[("number", json!("C-1")), ("name", json!("A"))]);
        let source = fields(&[("number", json!("C-1")), ("name", json!("A"))]);
        let target = fields(&[("number", json!("C-9")), ("name", json!("A"))]);
        let direction = |f: &str| {
            if f == "number" {
                Direction::SourceToTarget
            } else {
                Direction::Both
            }
        };
        let m = merge(
            Some(&base),
            Version {
                fields: &source,
                modified: at(1),
            },
            Version {
                fields: &target,
                modified: at(2),
            },
            NEWEST,
            &direction,
        );
        assert!(
            m.to_source.is_empty(),
            "a source-to-target field never flows back: {m:?}"
        );
        assert_eq!(m.base.get("number"), Some(&json!("C-1")));
    }

    #[test]
    fn a_first_link_merges_by_policy_without_recording_conflicts() {
        let source = fields(&[("name", json!("Acme")), ("city", json!("Oslo"))]);
        let target = fields(&[("name", json!("ACME")), ("phone", json!("+47"))]);
        let m = merge(
            None,
            Version {
                fields: &source,
                modified: None,
            },
            Version {
                fields: &target,
                modified: None,
            },
            NEWEST,
            &both,
        );
        assert!(m.conflicts.is_empty());
        assert_eq!(
            m.to_target,
            fields(&[("name", json!("Acme")), ("city", json!("Oslo"))])
        );
        assert_eq!(m.to_source, fields(&[("phone", json!("+47"))]));
    }

    const MANUAL: MergePolicy = MergePolicy {
        conflict: ConflictPolicy::Manual,
        tie_breaker: Side::Source,
        keep_filled: false,
    };

    #[test]
    fn a_manual_conflict_is_held_and_both_sides_keep_their_value() {
        let base = fields(&[("name", json!("Acme")), ("city", json!("Oslo"))]);
        let source = fields(&[("name", json!("Acme AS")), ("city", json!("Bergen"))]);
        let target = fields(&[("name", json!("ACME Ltd")), ("city", json!("Oslo"))]);
        let m = merge(
            Some(&base),
            Version {
                fields: &source,
                modified: at(5),
            },
            Version {
                fields: &target,
                modified: at(9),
            },
            MANUAL,
            &both,
        );
        assert_eq!(
            m.to_target,
            fields(&[("city", json!("Bergen"))]),
            "other fields sync"
        );
        assert!(m.to_source.is_empty(), "{m:?}");
        assert_eq!(
            m.base.get("name"),
            Some(&json!("Acme")),
            "the base keeps the synced value"
        );
        assert_eq!(m.conflicts.len(), 1);
        let held = &m.conflicts[0];
        assert!(held.held);
        assert_eq!(
            (held.base.clone(), held.source.clone(), held.target.clone()),
            (
                Some(json!("Acme")),
                Some(json!("Acme AS")),
                Some(json!("ACME Ltd"))
            )
        );
    }

    #[test]
    fn a_held_field_stays_out_of_the_merge_until_a_choice_is_written_both_ways() {
        let base = fields(&[("name", json!("Acme")), ("city", json!("Oslo"))]);
        let source = fields(&[("name", json!("Acme AS")), ("city", json!("Oslo"))]);
        let target = fields(&[("name", json!("ACME Ltd")), ("city", json!("Oslo"))]);
        let version = |f| Version {
            fields: f,
            modified: at(1),
        };
        let merge_as = |decision: Option<Decision>| {
            merge_decided(
                Some(&base),
                version(&source),
                version(&target),
                MANUAL,
                &both,
                &|_| false,
                &|field: &str| (field == "name").then(|| decision.clone()).flatten(),
            )
        };
        let held = merge_as(Some(Decision::Held));
        assert!(held.is_noop() && held.conflicts.is_empty(), "{held:?}");
        assert_eq!(held.base, base);

        let take_source = merge_as(Some(Decision::Take(Choice::Source)));
        assert_eq!(take_source.to_target, fields(&[("name", json!("Acme AS"))]));
        assert!(take_source.to_source.is_empty());
        assert_eq!(take_source.resolved, vec!["name".to_owned()]);
        assert_eq!(take_source.base.get("name"), Some(&json!("Acme AS")));

        let take_target = merge_as(Some(Decision::Take(Choice::Target)));
        assert_eq!(
            take_target.to_source,
            fields(&[("name", json!("ACME Ltd"))])
        );
        assert!(take_target.to_target.is_empty());

        let value = merge_as(Some(Decision::Take(Choice::Value(json!("Acme Group")))));
        assert_eq!(value.to_source, fields(&[("name", json!("Acme Group"))]));
        assert_eq!(value.to_target, fields(&[("name", json!("Acme Group"))]));
        assert_eq!(value.base.get("name"), Some(&json!("Acme Group")));
    }

    #[test]
    fn manual_on_a_first_link_falls_back_to_the_tie_breaker() {
        let source = fields(&[("name", json!("Acme"))]);
        let target = fields(&[("name", json!("ACME"))]);
        let m = merge(
            None,
            Version {
                fields: &source,
                modified: None,
            },
            Version {
                fields: &target,
                modified: None,
            },
            MANUAL,
            &both,
        );
        assert!(m.conflicts.is_empty());
        assert_eq!(m.to_target, fields(&[("name", json!("Acme"))]));
    }

    #[test]
    fn a_changes_only_field_keeps_the_other_sides_edit_until_its_origin_changes() {
        let one_way = |_: &str| Direction::SourceToTarget;
        let changes_only = |_: &str| true;
        let policy = MergePolicy {
            conflict: ConflictPolicy::SourceWins,
            tie_breaker: Side::Source,
            keep_filled: false,
        };
        let fields = |v: &str| Fields::from([("status".to_owned(), Value::from(v))]);
        let version = |f| Version {
            fields: f,
            modified: None,
        };
        // The warehouse shipped the order; the rep is still active: nothing to write.
        let (base, source, target) = (fields("pending"), fields("pending"), fields("fulfilled"));
        let merged = merge_with(
            Some(&base),
            version(&source),
            version(&target),
            policy,
            &one_way,
            &changes_only,
        );
        assert!(merged.is_noop(), "{merged:?}");
        assert_eq!(merged.base, base, "the base keeps the origin's value");
        // Without the flag the origin's value is asserted again.
        let reverted = merge(
            Some(&base),
            version(&source),
            version(&target),
            policy,
            &one_way,
        );
        assert_eq!(reverted.to_target, fields("pending"));
        // The rep is deactivated: the change goes through.
        let source = fields("cancelled");
        let merged = merge_with(
            Some(&base),
            version(&source),
            version(&target),
            policy,
            &one_way,
            &changes_only,
        );
        assert_eq!(merged.to_target, fields("cancelled"));
    }
}
