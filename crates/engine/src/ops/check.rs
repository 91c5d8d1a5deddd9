//! `tether check`: whether every system the flows use answers and authenticates, and
//! whether each entity a mapping uses can be read (one record at most), written where the
//! API can say so without a write (Salesforce's describe), and has the fields the mappings
//! use; with the daily allowance the system reports. What each check concludes from what
//! was answered is decided by pure functions ([`uses`], [`entity_verdict`],
//! [`allowance_verdict`], [`system_verdict`]); [`check_system`] asks the connector.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::connector::{Connector, ConnectorStats, WriteAccess, reserve_reached};
use crate::spec::flow::{DeletePolicy, Side};
use crate::sync::engine::{fields_used, split_missing};
use crate::validate::CompiledProject;

/// What the mappings need of one entity of one system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityUse {
    pub system: String,
    pub entity: String,
    /// The mappings that create, update and delete its records (each at most once).
    pub create: Vec<String>,
    pub update: Vec<String>,
    pub delete: Vec<String>,
    /// The top-level fields the mappings use, each with the mappings using it.
    pub fields: BTreeMap<String, Vec<String>>,
}

/// What the system answered about one entity; `None` for what was not asked (after the
/// read failed, or writes that no mapping makes).
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Records the one-record read returned, or why it failed.
    pub read: Option<Result<usize, String>>,
    /// The system file's fields the API lacks for the signed-in user, or why the describe
    /// could not be read.
    pub missing: Option<Result<Vec<String>, String>>,
    /// What the user may write (`None` inside: the API cannot be asked), or why not known.
    pub access: Option<Result<Option<WriteAccess>, String>>,
}

/// One line of the check: a system (`entity: None`) or one of its entities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckLine {
    pub system: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    pub ok: bool,
    /// What was found, or why it failed; never a credential.
    pub detail: String,
}

/// Said of a write access that no API call can show without writing.
pub const WRITES_NOT_CHECKED: &str = "writes not checked: the API cannot be asked without writing";

/// Every entity the mappings use, per system (systems and entities in name order): the
/// engine reads both sides of a mapping, creates and updates the side a direction writes
/// to, and deletes there when deletes propagate.
pub fn uses(project: &CompiledProject) -> Vec<EntityUse> {
    let mut found: BTreeMap<(String, String), EntityUse> = BTreeMap::new();
    for (_, spec) in project.project().mappings() {
        let Some(compiled) = project.mappings().get(&spec.name.value) else {
            continue;
        };
        let name = &compiled.name;
        for side in [Side::Source, Side::Target] {
            let (system, entity, written) = match side {
                Side::Source => (
                    &compiled.source_system,
                    &compiled.source_entity,
                    compiled.direction.backward(),
                ),
                Side::Target => (
                    &compiled.target_system,
                    &compiled.target_entity,
                    compiled.direction.forward(),
                ),
            };
            let entry = found
                .entry((system.clone(), entity.clone()))
                .or_insert_with(|| EntityUse {
                    system: system.clone(),
                    entity: entity.clone(),
                    ..EntityUse::default()
                });
            let add = |list: &mut Vec<String>| {
                if !list.contains(name) {
                    list.push(name.clone());
                }
            };
            if written {
                add(&mut entry.create);
                add(&mut entry.update);
                if spec.deletes == DeletePolicy::Propagate {
                    add(&mut entry.delete);
                }
            }
            let mut fields: Vec<String> = fields_used(compiled, side).into_iter().collect();
            fields.sort();
            for field in fields {
                let users = entry.fields.entry(field).or_default();
                if !users.contains(name) {
                    users.push(name.clone());
                }
            }
        }
    }
    found.into_values().collect()
}

impl EntityUse {
    /// Whether a mapping writes this entity.
    pub fn written(&self) -> bool {
        !(self.create.is_empty() && self.update.is_empty() && self.delete.is_empty())
    }
}

/// The verdict on one entity: passed, and what was found or every reason it failed.
pub fn entity_verdict(use_: &EntityUse, found: &Found) -> (bool, String) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    match &found.read {
        Some(Ok(0)) => good.push("readable (empty)".to_owned()),
        Some(Ok(_)) => good.push("readable".to_owned()),
        Some(Err(error)) => bad.push(format!("cannot be read: {error}")),
        None => bad.push("not read".to_owned()),
    }
    match &found.missing {
        Some(Ok(missing)) => {
            let used: HashSet<String> = use_.fields.keys().cloned().collect();
            let (mapped, _unused) = split_missing(missing, &used);
            for field in mapped {
                let mappings = use_
                    .fields
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(&field))
                    .map(|(_, mappings)| mappings.join(", "))
                    .unwrap_or_default();
                bad.push(format!(
                    "field `{field}` is missing for this user; mapping {mappings} uses it"
                ));
            }
        }
        Some(Err(error)) => bad.push(format!("its fields cannot be checked: {error}")),
        None => {}
    }
    if use_.written() {
        match &found.access {
            Some(Ok(Some(access))) => {
                let mut refused = Vec::new();
                for (may, what, mappings) in [
                    (access.create, "create", &use_.create),
                    (access.update, "update", &use_.update),
                    (access.delete, "delete", &use_.delete),
                ] {
                    if !mappings.is_empty() && !may {
                        refused.push(format!(
                            "may not {what} (mapping {} does)",
                            mappings.join(", ")
                        ));
                    }
                }
                if refused.is_empty() {
                    good.push(format!("writable ({})", granted(use_)));
                }
                bad.extend(refused);
            }
            Some(Ok(None)) => good.push(WRITES_NOT_CHECKED.to_owned()),
            Some(Err(error)) => bad.push(format!("its write access cannot be checked: {error}")),
            None => {}
        }
    }
    if bad.is_empty() {
        (true, good.join("; "))
    } else {
        (false, bad.join("; "))
    }
}

/// The writes the mappings make, in words (`create, update`).
fn granted(use_: &EntityUse) -> String {
    [
        ("create", &use_.create),
        ("update", &use_.update),
        ("delete", &use_.delete),
    ]
    .into_iter()
    .filter(|(_, mappings)| !mappings.is_empty())
    .map(|(what, _)| what)
    .collect::<Vec<_>>()
    .join(", ")
}

/// The daily allowance the last answer reported, against the share left to others
/// (`reserve`): `None` when the system reported none. At the reserve, a run sends that
/// system nothing, so the check fails.
pub fn allowance_verdict(stats: &ConnectorStats, reserve: f64) -> Option<(bool, String)> {
    let (used, limit) = (stats.allowance_used?, stats.allowance_limit?);
    let stop = (limit as f64 * (1.0 - reserve)).ceil() as u64;
    if reserve_reached(used, limit, reserve) {
        Some((
            false,
            format!(
                "daily allowance: {used} of {limit} used, at the reserve left to other integrations (runs stop at {stop}); runs send this system nothing until it resets"
            ),
        ))
    } else {
        Some((
            true,
            format!(
                "daily allowance: {used} of {limit} used, {} left before the reserve",
                stop.saturating_sub(used)
            ),
        ))
    }
}

/// The system's own line from its entities' lines and its allowance: it passes when they
/// all do. When every entity failed for the same reason (an unreachable system, a refused
/// credential), that reason is the system's.
pub fn system_verdict(entities: &[CheckLine], allowance: Option<(bool, String)>) -> (bool, String) {
    let failed: Vec<&CheckLine> = entities.iter().filter(|line| !line.ok).collect();
    let mut parts = Vec::new();
    let mut ok = failed.is_empty();
    if failed.is_empty() {
        parts.push("reachable, authenticated".to_owned());
    } else if failed.len() == entities.len()
        && failed.iter().all(|line| line.detail == failed[0].detail)
    {
        parts.push(failed[0].detail.clone());
    } else {
        let names: Vec<&str> = failed
            .iter()
            .filter_map(|line| line.entity.as_deref())
            .collect();
        parts.push(format!(
            "{} of {} entities fail: {}",
            failed.len(),
            entities.len(),
            names.join(", ")
        ));
    }
    match allowance {
        Some((allowance_ok, text)) => {
            ok &= allowance_ok;
            parts.push(text);
        }
        None if failed.is_empty() => parts.push("no daily allowance reported".to_owned()),
        None => {}
    }
    (ok, parts.join("; "))
}

/// Checks one system's entities through its connector (a read of one record each, the
/// describe where there is one) and then its allowance: the system's line, then one line
/// per entity. Nothing is written.
pub async fn check_system(
    connector: &dyn Connector,
    entities: &[EntityUse],
    reserve: f64,
) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    for use_ in entities {
        let mut found = Found {
            read: Some(
                connector
                    .probe(&use_.entity)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            ..Found::default()
        };
        if matches!(found.read, Some(Ok(_))) {
            found.missing = Some(
                connector
                    .missing_fields(&use_.entity)
                    .await
                    .map_err(|e| e.to_string()),
            );
            if use_.written() {
                found.access = Some(
                    connector
                        .write_access(&use_.entity)
                        .await
                        .map_err(|e| e.to_string()),
                );
            }
        }
        let (ok, detail) = entity_verdict(use_, &found);
        lines.push(CheckLine {
            system: use_.system.clone(),
            entity: Some(use_.entity.clone()),
            ok,
            detail,
        });
    }
    let allowance = allowance_verdict(&connector.stats(), reserve);
    let (ok, detail) = system_verdict(&lines, allowance);
    let system = entities
        .first()
        .map(|u| u.system.clone())
        .unwrap_or_else(|| connector.system().to_owned());
    lines.insert(
        0,
        CheckLine {
            system,
            entity: None,
            ok,
            detail,
        },
    );
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> EntityUse {
        EntityUse {
            system: "salesforce".into(),
            entity: "Order".into(),
            create: vec!["orders".into()],
            update: vec!["orders".into()],
            delete: vec![],
            fields: BTreeMap::from([
                ("Status".to_owned(), vec!["orders".to_owned()]),
                ("OriginalOrderId".to_owned(), vec!["orders".to_owned()]),
            ]),
        }
    }

    fn all(create: bool, update: bool, delete: bool) -> WriteAccess {
        WriteAccess {
            create,
            update,
            delete,
        }
    }

    #[test]
    fn a_readable_writable_entity_with_its_fields_passes() {
        let found = Found {
            read: Some(Ok(1)),
            missing: Some(Ok(vec!["BillingStateCode".into()])),
            access: Some(Ok(Some(all(true, true, false)))),
        };
        assert_eq!(
            entity_verdict(&order(), &found),
            (true, "readable; writable (create, update)".to_owned()),
            "a missing field no mapping uses does not fail"
        );
    }

    #[test]
    fn a_missing_mapped_field_is_named_with_its_mapping() {
        let found = Found {
            read: Some(Ok(0)),
            missing: Some(Ok(vec!["originalorderid".into()])),
            access: Some(Ok(Some(all(true, true, true)))),
        };
        let (ok, detail) = entity_verdict(&order(), &found);
        assert!(!ok);
        assert_eq!(
            detail,
            "field `originalorderid` is missing for this user; mapping orders uses it"
        );
    }

    #[test]
    fn a_refused_write_names_what_and_who_needs_it() {
        let found = Found {
            read: Some(Ok(3)),
            missing: Some(Ok(vec![])),
            access: Some(Ok(Some(all(true, false, false)))),
        };
        assert_eq!(
            entity_verdict(&order(), &found),
            (false, "may not update (mapping orders does)".to_owned())
        );
    }

    #[test]
    fn writes_that_cannot_be_asked_are_said_not_checked_not_ok() {
        let found = Found {
            read: Some(Ok(0)),
            missing: Some(Ok(vec![])),
            access: Some(Ok(None)),
        };
        let (ok, detail) = entity_verdict(&order(), &found);
        assert!(ok);
        assert_eq!(detail, format!("readable (empty); {WRITES_NOT_CHECKED}"));
        let read_only = EntityUse {
            create: vec![],
            update: vec![],
            ..order()
        };
        assert_eq!(entity_verdict(&read_only, &found).1, "readable (empty)");
    }

    #[test]
    fn a_failed_read_is_the_reason() {
        let found = Found {
            read: Some(Err("401 Unauthorized".into())),
            ..Found::default()
        };
        assert_eq!(
            entity_verdict(&order(), &found),
            (false, "cannot be read: 401 Unauthorized".to_owned())
        );
    }

    fn line(entity: &str, ok: bool, detail: &str) -> CheckLine {
        CheckLine {
            system: "s".into(),
            entity: Some(entity.into()),
            ok,
            detail: detail.into(),
        }
    }

    #[test]
    fn the_system_line_sums_up_its_entities_and_allowance() {
        let good = [line("a", true, "readable"), line("b", true, "readable")];
        assert_eq!(
            system_verdict(&good, None),
            (
                true,
                "reachable, authenticated; no daily allowance reported".to_owned()
            )
        );
        let refused = [
            line("a", false, "cannot be read: 401"),
            line("b", false, "cannot be read: 401"),
        ];
        assert_eq!(
            system_verdict(&refused, None),
            (false, "cannot be read: 401".to_owned())
        );
        let one = [
            line("a", true, "readable"),
            line("b", false, "field `X` is missing"),
        ];
        assert_eq!(
            system_verdict(&one, Some((true, "daily allowance: 1 of 10 used".into()))),
            (
                false,
                "1 of 2 entities fail: b; daily allowance: 1 of 10 used".to_owned()
            )
        );
        assert!(!system_verdict(&good, Some((false, "spent".into()))).0);
    }

    #[test]
    fn the_allowance_fails_at_the_reserve() {
        let stats = |used, limit| ConnectorStats {
            allowance_used: Some(used),
            allowance_limit: Some(limit),
            ..ConnectorStats::default()
        };
        assert_eq!(allowance_verdict(&ConnectorStats::default(), 0.2), None);
        assert_eq!(
            allowance_verdict(&stats(30, 15_000), 0.2),
            Some((
                true,
                "daily allowance: 30 of 15000 used, 11970 left before the reserve".to_owned()
            ))
        );
        let (ok, text) = allowance_verdict(&stats(12_000, 15_000), 0.2).expect("reported");
        assert!(!ok);
        assert!(text.contains("12000 of 15000 used"), "{text}");
    }
}
