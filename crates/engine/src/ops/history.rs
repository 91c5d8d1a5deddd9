//! A record's story: the append-only change log the engine writes with every write (the run,
//! the time, the mapping, the record written, each field's old and new value and why), read
//! back across all the record's counterparts through its global ids.
//!
//! The entries are built here, by pure functions the engine calls at each write point
//! ([`create`], [`update`], [`delete`]), so the words for why a field was written live in
//! one place. Fields are named by the mapping's target paths, the canonical names both sides
//! are compared under; values are the mapped fields' canonical values, never anything a
//! request carried besides (no header, no credential). Entries older than the retention
//! (default [`DEFAULT_RETENTION_DAYS`]) are removed at the end of each run; nothing else
//! changes or removes one.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use crate::ops::{OpsError, RecordRef};
use crate::spec::flow::{ConflictPolicy, DeletePolicy};
use crate::store::{
    ConflictId, GlobalId, HistoryAction, HistoryChange, HistoryEntry, Link, NewHistory, RecordKey,
    RunId, Store,
};
use crate::sync::merge::Conflict;
use crate::sync::report::FieldChange;

/// How long the change log keeps a write unless told otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

/// Who wrote: the run, the mapping and the pair's identity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Writer<'a> {
    pub run_id: Option<&'a RunId>,
    pub mapping: &'a str,
    pub identity: &'a str,
    pub global_id: &'a GlobalId,
    /// Written by a resync (`tether resync`): each why says so first.
    pub resync: bool,
}

impl Writer<'_> {
    fn entry(
        &self,
        record: RecordKey,
        action: HistoryAction,
        mut changes: Vec<HistoryChange>,
    ) -> NewHistory {
        if self.resync {
            for change in &mut changes {
                change.why = format!("resync: {}", change.why);
            }
        }
        NewHistory {
            run_id: self.run_id.cloned(),
            mapping: self.mapping.to_owned(),
            identity: self.identity.to_owned(),
            global_id: self.global_id.clone(),
            record,
            action,
            changes,
        }
    }
}

fn policy_name(policy: ConflictPolicy) -> &'static str {
    match policy {
        ConflictPolicy::NewestWins => "newest-wins",
        ConflictPolicy::SourceWins => "source-wins",
        ConflictPolicy::TargetWins => "target-wins",
        ConflictPolicy::Manual => "manual",
    }
}

/// A record created from its counterpart `from`, with the fields the create wrote.
pub(crate) fn create(
    writer: Writer<'_>,
    record: RecordKey,
    from: &RecordKey,
    fields: &BTreeMap<String, Value>,
) -> NewHistory {
    let why = format!("create from {from}");
    let changes = fields
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(field, value)| HistoryChange {
            field: field.clone(),
            old: None,
            new: Some(value.clone()),
            why: why.clone(),
        })
        .collect();
    writer.entry(record, HistoryAction::Create, changes)
}

/// An update of `record` from its counterpart `from`: each changed field, with a conflict's
/// resolution and the policy that decided it where the field was edited on both sides, or
/// the choice a person made for a held conflict (`resolved`: conflict and field). An update
/// of chosen values only is a `resolve`.
pub(crate) fn update(
    writer: Writer<'_>,
    record: RecordKey,
    from: &RecordKey,
    changes: &[FieldChange],
    conflicts: &[Conflict],
    resolved: &[(ConflictId, String)],
    policy: ConflictPolicy,
) -> NewHistory {
    let chosen = |field: &str| resolved.iter().find(|(_, f)| f == field);
    let action = if !changes.is_empty() && changes.iter().all(|c| chosen(&c.field).is_some()) {
        HistoryAction::Resolve
    } else {
        HistoryAction::Update
    };
    let changes = changes
        .iter()
        .map(|change| HistoryChange {
            field: change.field.clone(),
            old: change.before.clone(),
            new: Some(change.after.clone()),
            why: match (
                chosen(&change.field),
                conflicts.iter().find(|c| c.field == change.field),
            ) {
                (Some((conflict, _)), _) => {
                    format!("manual resolve: the choice made for conflict {conflict}")
                }
                (None, Some(conflict)) => format!(
                    "conflict resolution ({}): {}",
                    policy_name(policy),
                    conflict.reason
                ),
                (None, None) => format!("update from the other side ({from})"),
            },
        })
        .collect();
    writer.entry(record, action, changes)
}

/// A record deleted because its counterpart was.
pub(crate) fn delete(writer: Writer<'_>, record: RecordKey, policy: DeletePolicy) -> NewHistory {
    let why = format!(
        "delete: its counterpart was deleted (deletes: {})",
        match policy {
            DeletePolicy::Propagate => "propagate",
            DeletePolicy::Unlink => "unlink",
            DeletePolicy::Ignore => "ignore",
        }
    );
    writer.entry(
        record,
        HistoryAction::Delete,
        vec![HistoryChange {
            field: String::new(),
            old: None,
            new: None,
            why,
        }],
    )
}

/// A record's story: its links, and every write to it or to its counterparts, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Story {
    pub record: RecordRef,
    /// The record's links: its global id per identity type.
    pub links: Vec<Link>,
    /// The records linked to the same global ids.
    pub counterparts: Vec<RecordKey>,
    pub entries: Vec<HistoryEntry>,
}

/// The story of a record across all its counterparts; with `field`, only the writes of that
/// field (and deletes, which end every field).
pub async fn of_record(
    store: &Store,
    record: &RecordRef,
    field: Option<&str>,
) -> Result<Story, OpsError> {
    let key = record.key();
    let links = store.links_of_record(&key).await?;
    let mut entries = store.history_of_record(&key).await?;
    let mut counterparts = Vec::new();
    for link in &links {
        entries.extend(
            store
                .history_of_global(&link.identity, &link.global_id)
                .await?,
        );
        for other in store
            .links_of_global(&link.identity, &link.global_id)
            .await?
        {
            if other.record != key && !counterparts.contains(&other.record) {
                counterparts.push(other.record);
            }
        }
    }
    let mut seen = HashSet::new();
    entries.retain(|e| seen.insert(e.id.clone()));
    entries.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    if let Some(field) = field {
        entries = only_field(entries, field);
    }
    Ok(Story {
        record: record.clone(),
        links,
        counterparts,
        entries,
    })
}

/// The entries that wrote `field`, with only that field's change; deletes stay. Pure.
pub fn only_field(entries: Vec<HistoryEntry>, field: &str) -> Vec<HistoryEntry> {
    entries
        .into_iter()
        .filter_map(|mut entry| {
            if entry.action == HistoryAction::Delete {
                return Some(entry);
            }
            entry.changes.retain(|c| c.field == field);
            (!entry.changes.is_empty()).then_some(entry)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::flow::Side;
    use serde_json::json;

    fn writer<'a>(global: &'a GlobalId) -> Writer<'a> {
        Writer {
            run_id: None,
            mapping: "companies",
            identity: "customer",
            global_id: global,
            resync: false,
        }
    }

    #[test]
    fn a_resync_says_so_in_every_why() {
        let global = GlobalId::new("G");
        let changes = vec![FieldChange {
            field: "phone".into(),
            before: Some(json!("+4722000000")),
            after: json!("+4722111111"),
        }];
        let entry = update(
            Writer {
                resync: true,
                ..writer(&global)
            },
            RecordKey::new("keap", "companies", "1"),
            &RecordKey::new("customerp", "customers", "9"),
            &changes,
            &[],
            &[],
            ConflictPolicy::TargetWins,
        );
        assert_eq!(
            entry.changes[0].why,
            "resync: update from the other side (customerp/customers/9)"
        );
    }

    #[test]
    fn an_update_says_which_fields_came_across_and_which_a_conflict_decided() {
        let global = GlobalId::new("G");
        let changes = vec![
            FieldChange {
                field: "name".into(),
                before: Some(json!("Acme")),
                after: json!("Acme AS"),
            },
            FieldChange {
                field: "email".into(),
                before: Some(json!("a@x.example")),
                after: json!("b@x.example"),
            },
        ];
        let conflicts = vec![Conflict {
            field: "email".into(),
            base: Some(json!("a@x.example")),
            source: Some(json!("c@x.example")),
            target: Some(json!("b@x.example")),
            winner: Side::Target,
            reason: "target wins".into(),
            held: false,
        }];
        let entry = update(
            writer(&global),
            RecordKey::new("keap", "companies", "1"),
            &RecordKey::new("customerp", "customers", "9"),
            &changes,
            &conflicts,
            &[],
            ConflictPolicy::TargetWins,
        );
        assert_eq!(entry.action, HistoryAction::Update);
        assert_eq!(
            entry.changes[0].why,
            "update from the other side (customerp/customers/9)"
        );
        assert_eq!(
            entry.changes[1].why,
            "conflict resolution (target-wins): target wins"
        );
        assert_eq!(entry.changes[1].old, Some(json!("a@x.example")));
    }

    #[test]
    fn a_create_lists_the_fields_it_wrote() {
        let global = GlobalId::new("G");
        let fields: BTreeMap<String, Value> = [
            ("name".to_owned(), json!("Acme")),
            ("phone".to_owned(), Value::Null),
        ]
        .into();
        let entry = create(
            writer(&global),
            RecordKey::new("customerp", "customers", "9"),
            &RecordKey::new("keap", "companies", "1"),
            &fields,
        );
        assert_eq!(entry.changes.len(), 1, "empty fields are not written");
        assert_eq!(entry.changes[0].why, "create from keap/companies/1");
        assert_eq!(entry.changes[0].old, None);
    }

    #[test]
    fn one_fields_story_keeps_its_writes_and_the_deletes() {
        let global = GlobalId::new("G");
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let entry = |id: &str, action, fields: &[&str]| HistoryEntry {
            id: id.into(),
            at,
            run_id: None,
            mapping: "m".into(),
            identity: "customer".into(),
            global_id: global.clone(),
            record: RecordKey::new("keap", "companies", "1"),
            action,
            changes: fields
                .iter()
                .map(|f| HistoryChange {
                    field: (*f).into(),
                    old: None,
                    new: Some(json!(1)),
                    why: "w".into(),
                })
                .collect(),
        };
        let entries = vec![
            entry("1", HistoryAction::Create, &["name", "email"]),
            entry("2", HistoryAction::Update, &["phone"]),
            entry("3", HistoryAction::Update, &["email"]),
            entry("4", HistoryAction::Delete, &[""]),
        ];
        let kept = only_field(entries, "email");
        let ids: Vec<&str> = kept.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec!["1", "3", "4"]);
        assert_eq!(kept[0].changes.len(), 1);
    }
}
