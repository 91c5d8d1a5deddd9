//! Parked records as an operator meets them: grouped by cause in words (one line per cause
//! with its count and an example), one by one with their attempts, retried, or set aside
//! until their source changes.
//!
//! Grouping is pure ([`classify`], [`group`]): a cause is the mapping, the side and a kind
//! read from the reason the engine wrote (a referenced record that is not linked, a rule that
//! fails, an ambiguous match, ...), with the record-specific parts (ids, values, list
//! positions) left out, so 22 order lines naming 8 products are one line, not 22.
//!
//! Retrying: the engine tries every parked record again on every run, so a retry takes a
//! record out of the set-aside state (if it was) and the caller runs the affected mappings
//! ([`RetryPlan::mappings`]): the command line does it at once, the server on its next run
//! or when asked. Setting aside reads the record from its system and keeps the hash of its
//! content; the engine leaves the record alone while it hashes the same, and tries it again
//! (and forgets the mark) once it changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::ops::{Names, OpsError, RecordRef, count_of};
use crate::spec::flow::Side;
use crate::store::{ParkedRecord, Store};
use crate::sync::engine::Engine;

/// What kind of trouble keeps a record parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CauseKind {
    /// The record names a record that is not linked on the other side yet.
    MissingReference,
    /// A rule of the mapping fails on the record's value.
    RuleFailed,
    /// Several records on the other side have the record's match key.
    AmbiguousMatch,
    /// The record matches one that is already a different real-world thing.
    LinkedElsewhere,
    /// A create may have happened; the next run finds it or sends it again.
    UncertainCreate,
    /// The record's system refused to delete it (its counterpart was deleted); the pair
    /// stays linked and the delete is sent again later or on a retry.
    DeleteRefused,
    /// Anything else: the system refused a write, ...
    Other,
}

/// A parked record's cause: its kind, what records of the same cause share (`key`), the
/// values that differ between them, and the words for a group of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub kind: CauseKind,
    /// What records of one cause share (with the mapping and side).
    pub key: String,
    /// The record-specific values: referenced ids, offending values.
    pub values: BTreeSet<String>,
    detail: Detail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Detail {
    Reference {
        from_system: String,
        from_entity: String,
        to_system: String,
        to_entity: String,
        via: String,
        creates: bool,
    },
    Rule {
        rule: String,
        reason: String,
    },
    Text(String),
}

/// One line of the grouped view: records of one mapping and side with one cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParkedGroup {
    pub mapping: String,
    pub side: Side,
    pub system: Option<String>,
    pub entity: Option<String>,
    pub cause: CauseKind,
    pub count: usize,
    /// The cause in words, with the count ("13 Salesforce Order records name 7 ...").
    pub summary: String,
    /// The distinct record-specific values (referenced ids, offending values).
    pub values: Vec<String>,
    /// The records, by id.
    pub record_ids: Vec<String>,
    /// One of the records, with its full reason.
    pub example: Example,
}

/// A record standing for its group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    pub record_id: String,
    pub reason: String,
}

/// One parked record with its cause and its kept attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParkedItem {
    #[serde(flatten)]
    pub record: ParkedRecord,
    pub system: Option<String>,
    pub entity: Option<String>,
    pub cause: CauseKind,
    /// The latest attempts, oldest first: when, and what went wrong.
    pub tries: Vec<Attempt>,
}

/// One attempt at a parked record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// The grouped view of the parked records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    /// Records parked and retried on every run.
    pub parked: usize,
    /// Records set aside until their source changes.
    pub skipped: usize,
    /// The groups of the records shown (parked ones, or with `skipped` the set-aside ones),
    /// largest first.
    pub groups: Vec<ParkedGroup>,
}

/// Which parked records an operation is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only this mapping (`FLOW/MAPPING` accepted).
    pub mapping: Option<String>,
    /// Only this record.
    pub record: Option<RecordRef>,
}

impl Selection {
    fn is_empty(&self) -> bool {
        self.mapping.is_none() && self.record.is_none()
    }

    fn mapping_name(&self) -> Option<&str> {
        self.mapping
            .as_deref()
            .map(|m| m.rsplit_once('/').map_or(m, |(_, name)| name))
    }

    /// Whether the selection covers a parked record.
    pub fn covers(&self, names: &Names, parked: &ParkedRecord) -> bool {
        if self.mapping_name().is_some_and(|m| m != parked.mapping) {
            return false;
        }
        match &self.record {
            None => true,
            Some(record) => {
                record.id == parked.record_id
                    && names.mapping(&parked.mapping).is_some_and(|m| {
                        let side = m.side(parked.side);
                        side.system == record.system && side.entity == record.entity
                    })
            }
        }
    }

    fn check(&self, names: &Names) -> Result<(), OpsError> {
        match self.mapping_name() {
            Some(name) if names.mapping(name).is_none() => {
                Err(OpsError::UnknownMapping(name.to_owned()))
            }
            _ => Ok(()),
        }
    }
}

const WAITING: &str = "waiting for a referenced record: ";
const RETRIED: &str = "; retried on every run";

/// Reads a parked record's cause from its reason. Pure.
pub fn classify(record: &ParkedRecord) -> Cause {
    let reason = record.reason.as_str();
    if let Some(rest) = reason.strip_prefix(WAITING) {
        let rest = rest.strip_suffix(RETRIED).unwrap_or(rest);
        let references: Vec<(Detail, String)> =
            rest.split("; ").filter_map(parse_reference).collect();
        if let Some((detail, _)) = references.first() {
            let values = references
                .iter()
                .filter(|(d, _)| d == detail)
                .map(|(_, value)| value.clone())
                .collect();
            let Detail::Reference {
                to_system,
                to_entity,
                via,
                ..
            } = detail
            else {
                unreachable!("parse_reference returns references");
            };
            return Cause {
                kind: CauseKind::MissingReference,
                key: format!("{via}\u{1f}{to_system}\u{1f}{to_entity}"),
                values,
                detail: detail.clone(),
            };
        }
    }
    if let Some((rule, text, value)) = parse_rule_failure(reason) {
        let rule = normalise_positions(&rule);
        // The reason may repeat the value in its own words.
        let text = match value.as_deref().map(unquote) {
            Some(value) if !value.is_empty() => normalise(&text.replace(&value, "…")),
            _ => normalise(&text),
        };
        return Cause {
            kind: CauseKind::RuleFailed,
            key: format!("{rule}\u{1f}{text}"),
            values: record.value.iter().map(|v| unquote(v)).collect(),
            detail: Detail::Rule { rule, reason: text },
        };
    }
    let kind = if record.deleting {
        CauseKind::DeleteRefused
    } else if reason.starts_with("ambiguous match:") {
        CauseKind::AmbiguousMatch
    } else if reason.contains("by key, but the two are already different") {
        CauseKind::LinkedElsewhere
    } else if reason.starts_with("the create in ") && reason.contains("may have happened") {
        CauseKind::UncertainCreate
    } else {
        CauseKind::Other
    };
    let text = match kind {
        // Why a create may have happened differs by the error; the cause is one.
        CauseKind::UncertainCreate => reason
            .split_once(" may have happened")
            .map_or_else(|| normalise(reason), |(head, _)| normalise(head)),
        _ => normalise(reason),
    };
    Cause {
        kind,
        key: text.clone(),
        values: record.value.iter().map(|v| unquote(v)).collect(),
        detail: Detail::Text(text),
    }
}

/// One part of a waiting reason: "`RULE` names SYSTEM ENTITY VALUE, which has no linked
/// SYSTEM ENTITY (`MAPPING` makes it ... | `MAPPING` never creates ...)", with its value.
fn parse_reference(part: &str) -> Option<(Detail, String)> {
    let (_, rest) = part.split_once("` names ")?;
    let (from_system, rest) = rest.split_once(' ')?;
    let (from_entity, rest) = rest.split_once(' ')?;
    let (value, rest) = rest.split_once(", which has no linked ")?;
    let (to_system, rest) = rest.split_once(' ')?;
    let (to_entity, hint) = rest.split_once(" (`")?;
    let (via, hint) = hint.split_once('`')?;
    let creates = hint.trim_start().starts_with("makes it");
    Some((
        Detail::Reference {
            from_system: from_system.to_owned(),
            from_entity: from_entity.to_owned(),
            to_system: to_system.to_owned(),
            to_entity: to_entity.to_owned(),
            via: via.to_owned(),
            creates,
        },
        unquote(value),
    ))
}

/// "mapping `M`, rule `R` (from `S`): REASON (value V)" -> (R, REASON, V), of the first
/// failing rule.
fn parse_rule_failure(reason: &str) -> Option<(String, String, Option<String>)> {
    let rest = reason.strip_prefix("mapping `")?;
    let (_, rest) = rest.split_once("`, rule `")?;
    let (rule, rest) = rest.split_once('`')?;
    let rest = match rest.strip_prefix(" (from `") {
        Some(after) => after.split_once("`)")?.1,
        None => rest,
    };
    let text = rest.strip_prefix(": ")?;
    let text = text.split("; mapping `").next().unwrap_or(text);
    let (text, value) = match text.rfind(" (value ") {
        Some(at) if text.ends_with(')') => (
            &text[..at],
            Some(text[at + " (value ".len()..text.len() - 1].to_owned()),
        ),
        _ => (text, None),
    };
    Some((rule.to_owned(), text.to_owned(), value))
}

fn unquote(value: &str) -> String {
    match serde_json::from_str::<Value>(value) {
        Ok(Value::String(text)) => text,
        _ => value.to_owned(),
    }
}

/// `items[3].sku` -> `items[].sku`: a rule inside list items, whatever the item.
fn normalise_positions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '[' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
        }
    }
    out
}

/// A reason without what differs from record to record: quoted values become `…`, list
/// positions are dropped, and words with digits in them (ids, counts, amounts) become `…`,
/// but for three-digit numbers (HTTP statuses).
fn normalise(text: &str) -> String {
    let mut unquoted = String::with_capacity(text.len());
    let mut in_quote = false;
    for c in text.chars() {
        if c == '"' {
            if !in_quote {
                unquoted.push('…');
            }
            in_quote = !in_quote;
        } else if !in_quote {
            unquoted.push(c);
        }
    }
    normalise_positions(&unquoted)
        .split(' ')
        .map(|word| {
            let core = word.trim_matches(|c: char| !c.is_alphanumeric());
            // Three digits alone are kept: an HTTP status says what kind of refusal it was.
            let status = core.len() == 3 && core.chars().all(|c| c.is_ascii_digit());
            if core.chars().any(|c| c.is_ascii_digit()) && !status && !word.contains('[') {
                word.replace(core, "…")
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What parked records of one group share: mapping, side, kind and cause key.
type GroupKey<'a> = (String, &'a str, CauseKind, String);

/// Groups parked records by mapping, side and cause, largest group first. Pure.
pub fn group(records: &[ParkedRecord], names: &Names) -> Vec<ParkedGroup> {
    // Keyed by the side's name: sides have no order of their own.
    let mut groups: BTreeMap<GroupKey<'_>, (Side, Cause, Vec<&ParkedRecord>)> = BTreeMap::new();
    for record in records {
        let cause = classify(record);
        let key = (
            record.mapping.clone(),
            crate::store::side_str(record.side),
            cause.kind,
            cause.key.clone(),
        );
        let entry = groups
            .entry(key)
            .or_insert_with(|| (record.side, cause.clone(), Vec::new()));
        entry.1.values.extend(cause.values);
        entry.2.push(record);
    }
    let mut out: Vec<ParkedGroup> = groups
        .into_iter()
        .map(|((mapping, _, kind, _), (side, cause, members))| {
            let side_names = names.mapping(&mapping).map(|m| m.side(side).clone());
            let label = names.side_label(&mapping, side);
            let summary = summary(&cause, members.len(), &label, names);
            let example = members[0];
            ParkedGroup {
                system: side_names.as_ref().map(|n| n.system.clone()),
                entity: side_names.as_ref().map(|n| n.entity.clone()),
                mapping,
                side,
                cause: kind,
                count: members.len(),
                summary,
                values: cause.values.iter().cloned().collect(),
                record_ids: members.iter().map(|r| r.record_id.clone()).collect(),
                example: Example {
                    record_id: example.record_id.clone(),
                    reason: example.reason.clone(),
                },
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.mapping.cmp(&b.mapping))
            .then_with(|| a.summary.cmp(&b.summary))
    });
    out
}

/// The words for `n` records of one cause.
fn summary(cause: &Cause, n: usize, label: &str, names: &Names) -> String {
    let records = count_of(n, &format!("{label} record"), &format!("{label} records"));
    let values = cause.values.len();
    match &cause.detail {
        Detail::Reference {
            from_system,
            from_entity,
            to_system,
            to_entity,
            via,
            creates,
        } => {
            // The referenced mapping's own labels first: flows name one entity differently.
            let label = |system: &str, entity: &str| {
                names
                    .mapping(via)
                    .and_then(|m| {
                        [&m.source, &m.target]
                            .into_iter()
                            .find(|e| e.system == system && e.entity == entity)
                            .map(|e| e.label.clone())
                    })
                    .unwrap_or_else(|| names.label(system, entity))
            };
            let from = label(from_system, from_entity);
            let to = label(to_system, to_entity);
            let verb = if n == 1 { "names" } else { "name" };
            let named = count_of(
                values,
                &format!("{from} record"),
                &format!("{from} records"),
            );
            if *creates {
                format!(
                    "{records} {verb} {named} not linked to a {to} yet: `{via}` makes the link when it syncs them; check that they exist and are not parked there"
                )
            } else {
                let system = names.system(to_system);
                format!(
                    "{records} {verb} {named} not set up in {system}: `{via}` never creates a {to} from {}, so set them up in {system}, where they are linked by their match key",
                    names.system(from_system)
                )
            }
        }
        Detail::Rule { rule, reason } => {
            let verb = if n == 1 { "fails" } else { "fail" };
            let shown: Vec<&str> = cause.values.iter().take(5).map(String::as_str).collect();
            let values = match values {
                0 => String::new(),
                _ if values > shown.len() => {
                    format!(" (values {}, … {} in all)", shown.join(", "), values)
                }
                _ => format!(" (values {})", shown.join(", ")),
            };
            format!("{records} {verb} rule `{rule}`: {reason}{values}")
        }
        Detail::Text(text) => match cause.kind {
            CauseKind::AmbiguousMatch => format!(
                "{records} match several records on the other side by their match key: link one by hand or make the key unique"
            ),
            CauseKind::LinkedElsewhere => format!(
                "{records} match a record by key that is already a different one: link them by hand or fix the data"
            ),
            CauseKind::UncertainCreate => format!(
                "{records}: a create may have happened; the next run links the record it made or sends the create again"
            ),
            CauseKind::DeleteRefused => format!(
                "{records}: {text}; the pairs stay linked and each delete is sent again after a backoff, or at once on retry"
            ),
            _ => format!("{records}: {text}"),
        },
    }
}

/// The grouped view: the parked records' groups, or with `skipped` the groups of the records
/// set aside.
pub async fn overview(store: &Store, names: &Names, skipped: bool) -> Result<Overview, OpsError> {
    let all = store.parked(None).await?;
    let (aside, parked): (Vec<ParkedRecord>, Vec<ParkedRecord>) =
        all.into_iter().partition(ParkedRecord::is_skipped);
    let groups = group(if skipped { &aside } else { &parked }, names);
    Ok(Overview {
        parked: parked.len(),
        skipped: aside.len(),
        groups,
    })
}

/// The parked records one by one, with their causes and attempts: the parked ones, or with
/// `skipped` the records set aside.
pub async fn records(
    store: &Store,
    names: &Names,
    selection: &Selection,
    skipped: bool,
) -> Result<Vec<ParkedItem>, OpsError> {
    selection.check(names)?;
    let parked = store.parked(selection.mapping_name()).await?;
    let mut attempts: HashMap<(String, Side, String), Vec<Attempt>> = HashMap::new();
    for attempt in store.parked_attempts(selection.mapping_name()).await? {
        attempts
            .entry((attempt.mapping, attempt.side, attempt.record_id))
            .or_default()
            .push(Attempt {
                at: attempt.at,
                reason: attempt.reason,
            });
    }
    Ok(parked
        .into_iter()
        .filter(|p| p.is_skipped() == skipped && selection.covers(names, p))
        .map(|record| {
            let side = names
                .mapping(&record.mapping)
                .map(|m| m.side(record.side).clone());
            let tries = attempts
                .remove(&(
                    record.mapping.clone(),
                    record.side,
                    record.record_id.clone(),
                ))
                .unwrap_or_default();
            ParkedItem {
                system: side.as_ref().map(|s| s.system.clone()),
                entity: side.as_ref().map(|s| s.entity.clone()),
                cause: classify(&record).kind,
                record,
                tries,
            }
        })
        .collect())
}

/// What a retry did, and what is left for the caller: running the mappings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RetryPlan {
    /// Parked records selected (set aside or not).
    pub records: usize,
    /// Of those, records that were set aside and are tried again now.
    pub unskipped: usize,
    /// The mappings to run so the records are tried, sorted.
    pub mappings: Vec<String>,
}

/// Makes the selected parked records be tried on the next run of their mappings: a record
/// set aside is tried again too. The caller runs [`RetryPlan::mappings`] (now, or leaves it
/// to the schedule). An empty selection means every parked record.
pub async fn retry(
    store: &Store,
    names: &Names,
    selection: &Selection,
) -> Result<RetryPlan, OpsError> {
    selection.check(names)?;
    let mut plan = RetryPlan::default();
    let mut mappings = BTreeSet::new();
    for parked in store.parked(selection.mapping_name()).await? {
        if !selection.covers(names, &parked) {
            continue;
        }
        plan.records += 1;
        if parked.is_skipped()
            && store
                .unskip_parked(&parked.mapping, parked.side, &parked.record_id)
                .await?
        {
            plan.unskipped += 1;
        }
        // A record waiting for a later attempt (a refused delete's backoff) is tried now.
        if parked.retry_at.is_some() {
            store
                .retry_parked_now(&parked.mapping, parked.side, &parked.record_id)
                .await?;
        }
        mappings.insert(parked.mapping);
    }
    plan.mappings = mappings.into_iter().collect();
    Ok(plan)
}

/// What setting records aside did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SkipOutcome {
    /// Records set aside now, as `mapping`, side and id.
    pub skipped: Vec<SkippedRecord>,
    /// Records that no longer exist in their system: taken off the parked list.
    pub gone: Vec<SkippedRecord>,
    /// Records whose mapping is not loaded, left as they were.
    pub unknown: Vec<SkippedRecord>,
}

/// A parked record an operation touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedRecord {
    pub mapping: String,
    pub side: Side,
    pub record_id: String,
}

/// Sets the selected parked records aside until their source changes: each is read from its
/// system and stored as skipped with the hash of its content now. A record that no longer
/// exists is taken off the parked list. The selection must name a mapping or a record.
pub async fn skip(
    engine: &Engine,
    names: &Names,
    selection: &Selection,
) -> Result<SkipOutcome, OpsError> {
    if selection.is_empty() {
        return Err(OpsError::NoSelection);
    }
    selection.check(names)?;
    let store = engine.store();
    let mut outcome = SkipOutcome::default();
    for parked in store.parked(selection.mapping_name()).await? {
        if parked.is_skipped() || !selection.covers(names, &parked) {
            continue;
        }
        let touched = SkippedRecord {
            mapping: parked.mapping.clone(),
            side: parked.side,
            record_id: parked.record_id.clone(),
        };
        let Some(runtime) = engine.mappings().iter().find(|m| m.name == parked.mapping) else {
            outcome.unknown.push(touched);
            continue;
        };
        let side = match parked.side {
            Side::Source => &runtime.source,
            Side::Target => &runtime.target,
        };
        match side.connector.get(&side.entity, &parked.record_id).await? {
            Some(record) => {
                store
                    .skip_parked(
                        &parked.mapping,
                        parked.side,
                        &parked.record_id,
                        &content_hash(&record.data),
                    )
                    .await?;
                outcome.skipped.push(touched);
            }
            None => {
                store
                    .unpark(&parked.mapping, parked.side, &parked.record_id)
                    .await?;
                outcome.gone.push(touched);
            }
        }
    }
    Ok(outcome)
}

/// The hash of a record's content as its system returned it (object keys in sorted order,
/// so the order a system lists fields in does not matter): what tells a record set aside
/// that changed from one that did not.
pub fn content_hash(data: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_unstable();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(&map[key], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    write(data, &mut text);
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parked(
        mapping: &str,
        side: Side,
        id: &str,
        reason: &str,
        value: Option<&str>,
    ) -> ParkedRecord {
        let at = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        ParkedRecord {
            mapping: mapping.into(),
            side,
            record_id: id.into(),
            reason: reason.into(),
            field: None,
            value: value.map(str::to_owned),
            attempts: 1,
            first_parked_at: at,
            last_tried_at: at,
            skipped_at: None,
            skipped_hash: None,
            deleting: false,
            retry_at: None,
        }
    }

    const ORDERS: &str = "salesforce-orders-to-customerp-orders";

    fn waiting(parts: &[(&str, &str)]) -> String {
        let parts: Vec<String> = parts
            .iter()
            .map(|(rule, product)| format!(
                "`{rule}` names salesforce Product2 \"{product}\", which has no linked customerp products (`salesforce-product2-to-customerp-products` never creates customerp products from salesforce, so it has to be set up in customerp first, where it is linked by its match key)"
            ))
            .collect();
        format!("{WAITING}{}{RETRIED}", parts.join("; "))
    }

    #[test]
    fn order_lines_naming_missing_products_are_one_cause_counting_the_products() {
        let records = vec![
            parked(
                ORDERS,
                Side::Source,
                "801A",
                &waiting(&[
                    ("lines[0].product_id", "01tS"),
                    ("lines[1].product_id", "01tQ"),
                ]),
                Some("\"01tS\""),
            ),
            parked(
                ORDERS,
                Side::Source,
                "801B",
                &waiting(&[("lines[0].product_id", "01tK")]),
                Some("\"01tK\""),
            ),
            parked(
                ORDERS,
                Side::Source,
                "801C",
                &waiting(&[("lines[1].product_id", "01tS")]),
                Some("\"01tS\""),
            ),
        ];
        let groups = group(&records, &Names::default());
        assert_eq!(groups.len(), 1, "{groups:#?}");
        let g = &groups[0];
        assert_eq!((g.count, g.cause), (3, CauseKind::MissingReference));
        assert_eq!(g.values, vec!["01tK", "01tQ", "01tS"]);
        assert_eq!(g.record_ids, vec!["801A", "801B", "801C"]);
        assert!(
            g.summary.starts_with(&format!("3 `{ORDERS}` source records name 3 salesforce Product2 records not set up in customerp")),
            "{}",
            g.summary
        );
        assert!(g.summary.contains("never creates"), "{}", g.summary);
        assert_eq!(g.example.record_id, "801A");
    }

    #[test]
    fn one_record_reads_in_the_singular() {
        let records = vec![parked(
            ORDERS,
            Side::Source,
            "801A",
            &waiting(&[("lines[0].product_id", "01tS")]),
            None,
        )];
        let groups = group(&records, &Names::default());
        assert!(
            groups[0].summary.starts_with(&format!(
                "1 `{ORDERS}` source record names 1 salesforce Product2 record "
            )),
            "{}",
            groups[0].summary
        );
    }

    #[test]
    fn a_rule_failing_on_different_values_is_one_cause_and_other_rules_are_others() {
        let country = |v: &str| {
            format!(
                "mapping `companies`, rule `billing_address.country` (from `$.address.country_code`): not an ISO 3166 country: {v} (value \"{v}\")"
            )
        };
        let records = vec![
            parked(
                "companies",
                Side::Source,
                "1",
                &country("XXX"),
                Some("\"XXX\""),
            ),
            parked(
                "companies",
                Side::Source,
                "2",
                &country("QQQ"),
                Some("\"QQQ\""),
            ),
            parked(
                "companies",
                Side::Source,
                "3",
                "mapping `companies`, rule `name`: required field is empty",
                None,
            ),
            parked(
                "companies",
                Side::Target,
                "4",
                &country("XXX"),
                Some("\"XXX\""),
            ),
        ];
        let groups = group(&records, &Names::default());
        assert_eq!(groups.len(), 3, "{groups:#?}");
        assert_eq!(
            (groups[0].count, groups[0].cause),
            (2, CauseKind::RuleFailed)
        );
        assert!(
            groups[0]
                .summary
                .contains("fail rule `billing_address.country`")
                && groups[0].summary.contains("(values QQQ, XXX)"),
            "{}",
            groups[0].summary
        );
        assert!(groups.iter().all(|g| g.cause == CauseKind::RuleFailed));
        assert_eq!(groups.iter().map(|g| g.count).sum::<usize>(), 4);
    }

    #[test]
    fn other_reasons_group_without_their_ids() {
        let refused = |id: &str| {
            format!(
                "customerp refused the write of order {id}: 422 duplicate order number \"SO-{id}\""
            )
        };
        let ambiguous = "ambiguous match: 2 records of customerp customers have the same match key; link one by hand or make the key unique";
        let records = vec![
            parked("orders", Side::Source, "17", &refused("17"), None),
            parked("orders", Side::Source, "18", &refused("18"), None),
            parked("orders", Side::Source, "19", ambiguous, None),
        ];
        let groups = group(&records, &Names::default());
        assert_eq!(groups.len(), 2, "{groups:#?}");
        assert_eq!((groups[0].count, groups[0].cause), (2, CauseKind::Other));
        assert_eq!(groups[1].cause, CauseKind::AmbiguousMatch);
        assert!(!groups[0].summary.contains("17"), "{}", groups[0].summary);
    }

    #[test]
    fn the_content_hash_ignores_key_order_and_sees_any_change() {
        let a = json!({ "name": "Acme", "address": { "city": "Oslo", "zip": "0150" } });
        let b = json!({ "address": { "zip": "0150", "city": "Oslo" }, "name": "Acme" });
        assert_eq!(content_hash(&a), content_hash(&b));
        let c = json!({ "name": "Acme", "address": { "city": "Bergen", "zip": "0150" } });
        assert_ne!(content_hash(&a), content_hash(&c));
    }

    #[test]
    fn a_selection_by_record_needs_the_mapping_side_to_be_that_entity() {
        let selection = Selection {
            mapping: None,
            record: Some("keap:companies:7".parse().expect("record")),
        };
        let record = parked("m", Side::Source, "7", "x", None);
        // Without the mapping's names the record's system is unknown: not covered.
        assert!(!selection.covers(&Names::default(), &record));
        let by_mapping = Selection {
            mapping: Some("flow/m".into()),
            record: None,
        };
        assert!(by_mapping.covers(&Names::default(), &record));
    }
}
