//! One record as an operator looks it up: by `SYSTEM:ENTITY:ID`, or by a match key value
//! such as an email. For each record found: its global identity, every counterpart, each
//! mapped field as last synced (per mapping, with the field's name on both systems), whether
//! it is parked, and its history across its counterparts.
//!
//! Reading the query and laying out the fields are pure ([`parse_query`], [`key_text`],
//! [`field_rows`]); the rest reads the store. Nothing is sent to a system.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::ops::{Names, OpsError, RecordRef, history};
use crate::spec::flow::Side;
use crate::store::{HistoryEntry, LinkOrigin, ParkedRecord, Store};
use crate::sync::engine::Engine;

/// What an operator typed: a record, or a match key value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Record(RecordRef),
    /// A match key value, as the store keeps keys (trimmed, spaces collapsed, lower case).
    Key(String),
}

/// Reads a lookup: `SYSTEM:ENTITY:ID` when it starts with a loaded system's name and an
/// entity, a match key value otherwise (an email, a company number). `None` for an empty
/// query. Pure.
pub fn parse_query(text: &str, names: &Names) -> Option<Query> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(record) = text.parse::<RecordRef>()
        && names.knows_system(&record.system)
    {
        return Some(Query::Record(record));
    }
    Some(Query::Key(key_text(text)))
}

/// A typed value as the engine keeps match keys: spaces trimmed and collapsed, lower case.
/// Pure.
pub fn key_text(value: &str) -> String {
    value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Each mapping's rules as (target field, source field), for naming fields on both systems.
pub type RuleFields = HashMap<String, Vec<(String, Option<String>)>>;

/// The rules of every loaded mapping, from the running engine.
pub fn rule_fields(engine: &Engine) -> RuleFields {
    engine
        .mappings()
        .iter()
        .map(|m| {
            let rules = m
                .compiled
                .rules
                .rules
                .iter()
                .map(|r| {
                    (
                        r.target.as_str().to_owned(),
                        r.source_path().map(|p| p.as_str().to_owned()),
                    )
                })
                .collect();
            (m.name.clone(), rules)
        })
        .collect()
}

/// One mapped field of a pair as last synced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldRow {
    /// The field on the target system (the mapping's canonical name).
    pub target_field: String,
    /// Where the source system keeps it (`None` for a computed field).
    pub source_field: Option<String>,
    pub value: Value,
}

/// The fields of a pair's base (the canonical fields last synced), in the order of the
/// mapping's rules, then any others by name. Pure.
pub fn field_rows(base: &Value, rules: &[(String, Option<String>)]) -> Vec<FieldRow> {
    let Some(fields) = base.as_object() else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    let mut seen = Vec::new();
    for (target, source) in rules {
        if let Some(value) = fields.get(target) {
            rows.push(FieldRow {
                target_field: target.clone(),
                source_field: source.clone(),
                value: value.clone(),
            });
            seen.push(target.as_str());
        }
    }
    let rest: BTreeMap<&String, &Value> = fields
        .iter()
        .filter(|(k, _)| !seen.contains(&k.as_str()))
        .collect();
    for (field, value) in rest {
        rows.push(FieldRow {
            target_field: field.clone(),
            source_field: None,
            value: value.clone(),
        });
    }
    rows
}

/// A record linked to the same global id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counterpart {
    pub record: RecordRef,
    pub label: String,
    pub origin: LinkOrigin,
    pub linked_at: DateTime<Utc>,
}

/// One global identity of the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    pub identity: String,
    pub global_id: String,
    pub origin: LinkOrigin,
    pub linked_at: DateTime<Utc>,
    pub counterparts: Vec<Counterpart>,
}

/// One mapping's pair that holds the record, with its fields as last synced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairFields {
    pub mapping: String,
    pub flow: Option<String>,
    pub source: RecordRef,
    pub source_label: String,
    pub target: RecordRef,
    pub target_label: String,
    pub synced_at: DateTime<Utc>,
    pub fields: Vec<FieldRow>,
}

/// A record and everything known about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordView {
    pub record: RecordRef,
    pub label: String,
    pub identities: Vec<Identity>,
    pub pairs: Vec<PairFields>,
    /// Where the record is parked (or set aside), by mapping.
    pub parked: Vec<ParkedRecord>,
    /// Writes to the record and its counterparts, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    pub query: String,
    /// `record` or `key`.
    pub by: &'static str,
    pub records: Vec<RecordView>,
}

/// Looks a record up by `SYSTEM:ENTITY:ID` or by a match key value.
pub async fn lookup(
    store: &Store,
    names: &Names,
    rules: &RuleFields,
    text: &str,
) -> Result<Found, OpsError> {
    let Some(query) = parse_query(text, names) else {
        return Err(OpsError::BadRecord(text.to_owned()));
    };
    let (by, records) = match query {
        Query::Record(record) => ("record", vec![record]),
        Query::Key(key) => ("key", by_key(store, names, &key).await?),
    };
    let mut views = Vec::new();
    for record in records {
        views.push(view(store, names, rules, &record).await?);
    }
    Ok(Found {
        query: text.trim().to_owned(),
        by,
        records: views,
    })
}

/// The records of every mapping's sides whose stored match key is `key`.
async fn by_key(store: &Store, names: &Names, key: &str) -> Result<Vec<RecordRef>, OpsError> {
    let mut found: Vec<RecordRef> = Vec::new();
    for mapping in names.mapping_names() {
        let Some(m) = names.mapping(mapping) else {
            continue;
        };
        for side in [Side::Source, Side::Target] {
            let entity = m.side(side);
            for id in store.find_record_keys(mapping, side, key).await? {
                let record = RecordRef {
                    system: entity.system.clone(),
                    entity: entity.entity.clone(),
                    id,
                };
                if !found.contains(&record) {
                    found.push(record);
                }
            }
        }
    }
    Ok(found)
}

/// Everything the store knows about one record.
pub async fn view(
    store: &Store,
    names: &Names,
    rules: &RuleFields,
    record: &RecordRef,
) -> Result<RecordView, OpsError> {
    let story = history::of_record(store, record, None).await?;
    let mut identities = Vec::new();
    let mut pairs = Vec::new();
    for link in &story.links {
        let mut counterparts = Vec::new();
        for other in store
            .links_of_global(&link.identity, &link.global_id)
            .await?
        {
            if other.record == link.record {
                continue;
            }
            counterparts.push(Counterpart {
                label: names.label(&other.record.system, &other.record.entity),
                record: RecordRef {
                    system: other.record.system,
                    entity: other.record.entity,
                    id: other.record.id,
                },
                origin: other.origin,
                linked_at: other.created_at,
            });
        }
        identities.push(Identity {
            identity: link.identity.clone(),
            global_id: link.global_id.to_string(),
            origin: link.origin,
            linked_at: link.created_at,
            counterparts,
        });
        for (mapping, side) in names.mappings_of(&record.system, &record.entity) {
            let Some(m) = names.mapping(mapping) else {
                continue;
            };
            if m.identity != link.identity {
                continue;
            }
            let Some(pair) = store.pair_state(mapping, &link.global_id).await? else {
                continue;
            };
            let own = match side {
                Side::Source => &pair.source_id,
                Side::Target => &pair.target_id,
            };
            if own != &record.id {
                continue;
            }
            let side_ref = |side: Side, id: &str| {
                let e = m.side(side);
                RecordRef {
                    system: e.system.clone(),
                    entity: e.entity.clone(),
                    id: id.to_owned(),
                }
            };
            pairs.push(PairFields {
                mapping: mapping.to_owned(),
                flow: Some(m.flow.clone()),
                source: side_ref(Side::Source, &pair.source_id),
                source_label: m.source.label.clone(),
                target: side_ref(Side::Target, &pair.target_id),
                target_label: m.target.label.clone(),
                synced_at: pair.synced_at,
                fields: field_rows(
                    &pair.base,
                    rules.get(mapping).map(Vec::as_slice).unwrap_or_default(),
                ),
            });
        }
    }
    let mut parked = Vec::new();
    for (mapping, side) in names.mappings_of(&record.system, &record.entity) {
        parked.extend(
            store
                .parked(Some(mapping))
                .await?
                .into_iter()
                .filter(|p| p.side == side && p.record_id == record.id),
        );
    }
    Ok(RecordView {
        label: names.label(&record.system, &record.entity),
        record: record.clone(),
        identities,
        pairs,
        parked,
        history: story.entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lookup_is_a_record_when_it_names_a_system_and_a_key_otherwise() {
        let names = Names::with_systems(&["keap", "salesforce"]);
        assert_eq!(
            parse_query(" keap:companies:42 ", &names),
            Some(Query::Record(RecordRef {
                system: "keap".into(),
                entity: "companies".into(),
                id: "42".into()
            }))
        );
        assert_eq!(
            parse_query("  Post@Hold.Example ", &names),
            Some(Query::Key("post@hold.example".into()))
        );
        assert_eq!(
            parse_query("urn:isbn:123", &names),
            Some(Query::Key("urn:isbn:123".into())),
            "colons alone do not make a record"
        );
        assert_eq!(parse_query("   ", &names), None);
        assert_eq!(key_text("  Acme \t  Group  AS "), "acme group as");
    }

    #[test]
    fn fields_come_in_the_order_of_the_rules_with_both_names() {
        let rules = vec![
            ("name".to_owned(), Some("company_name".to_owned())),
            ("email".to_owned(), Some("email_address".to_owned())),
            ("missing".to_owned(), None),
        ];
        let rows = field_rows(
            &json!({ "zeta": 1, "email": "a@b.example", "name": "Acme", "alpha": true }),
            &rules,
        );
        let order: Vec<(&str, Option<&str>)> = rows
            .iter()
            .map(|r| (r.target_field.as_str(), r.source_field.as_deref()))
            .collect();
        assert_eq!(
            order,
            vec![
                ("name", Some("company_name")),
                ("email", Some("email_address")),
                ("alpha", None),
                ("zeta", None)
            ]
        );
        assert_eq!(rows[0].value, json!("Acme"));
        assert!(field_rows(&json!(null), &rules).is_empty());
    }
}
