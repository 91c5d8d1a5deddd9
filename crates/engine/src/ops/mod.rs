//! What an operator can ask and do, once, for every front end: the command line, the HTTP
//! API and the web console call these functions and only format what they return.
//!
//! - [`check`]: before a first run, whether every system the flows use answers, authenticates
//!   and lets the mappings read, write and use the fields they need.
//! - [`parked`]: parked records grouped by cause, in words; retrying them; setting them aside
//!   until their source changes.
//! - [`history`]: a record's story across all its counterparts, from the append-only change
//!   log the engine writes with every write.
//! - [`conflicts`]: conflicts listed, held ones (the `manual` policy) decided.
//! - [`resync`]: a mapping or one record read again and compared field by field with the
//!   other side, what differs written; cursors cleared.
//! - [`runs`]: the latest runs, one run's per-mapping report, and the overview of every flow
//!   and mapping with its health.
//! - [`record`]: one record looked up by `SYSTEM:ENTITY:ID` or a match key value, with its
//!   identity, counterparts, fields as last synced and history.
//!
//! Decisions are pure functions (grouping parked records by cause); the effects (the store,
//! a system's API) are at the edges, in the `async` functions.

pub mod check;
pub mod conflicts;
pub mod history;
pub mod parked;
pub mod record;
pub mod resync;
pub mod runs;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::connector::ConnectorError;
use crate::spec::flow::Side;
use crate::spec::load::Project;
use crate::store::{RecordKey, StoreError};

/// Why an operation could not be done.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("`{0}` is not a record: write SYSTEM:ENTITY:ID (`keap:companies:42`)")]
    BadRecord(String),
    #[error("no loaded mapping is named `{0}`")]
    UnknownMapping(String),
    #[error("say which records: --mapping M, --id SYSTEM:ENTITY:ID, or both")]
    NoSelection,
    #[error("no conflict has the id `{0}`")]
    UnknownConflict(String),
    #[error("conflict `{id}` is {state}: only a held conflict can be resolved")]
    NotHeld { id: String, state: String },
    #[error("`{0}` is not a choice: take `source`, `target` or `value V`")]
    BadChoice(String),
    #[error("`{record}` is not a record of `{mapping}`, which syncs {sides}")]
    NotInMapping {
        record: String,
        mapping: String,
        sides: String,
    },
    #[error(transparent)]
    Engine(Box<crate::sync::engine::EngineError>),
    #[error("no run has the id `{0}`")]
    UnknownRun(String),
}

/// A record named by an operator: `SYSTEM:ENTITY:ID` (the id may itself hold colons).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RecordRef {
    pub system: String,
    pub entity: String,
    pub id: String,
}

impl RecordRef {
    pub fn key(&self) -> RecordKey {
        RecordKey::new(&self.system, &self.entity, &self.id)
    }
}

impl FromStr for RecordRef {
    type Err = OpsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(system), Some(entity), Some(id))
                if !system.is_empty() && !entity.is_empty() && !id.is_empty() =>
            {
                Ok(RecordRef {
                    system: system.to_owned(),
                    entity: entity.to_owned(),
                    id: id.to_owned(),
                })
            }
            _ => Err(OpsError::BadRecord(text.to_owned())),
        }
    }
}

impl fmt::Display for RecordRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.system, self.entity, self.id)
    }
}

/// One side of a mapping as people name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntityName {
    pub system: String,
    pub entity: String,
    /// How the flow file names it ("Salesforce Order").
    pub label: String,
}

/// A mapping's sides and the identity type its records share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingNames {
    pub flow: String,
    pub identity: String,
    pub source: EntityName,
    pub target: EntityName,
}

impl MappingNames {
    pub fn side(&self, side: Side) -> &EntityName {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }
}

/// What the flows call things: every mapping's systems, entities and labels. Built from the
/// loaded flow files; the store alone knows mappings only by name.
#[derive(Debug, Clone, Default)]
pub struct Names {
    mappings: HashMap<String, MappingNames>,
    labels: HashMap<(String, String), String>,
    systems: HashMap<String, String>,
}

impl Names {
    /// The names of every valid mapping of a loaded project.
    pub fn of(project: &Project) -> Names {
        let mut names = Names::default();
        for (name, system) in &project.systems {
            names
                .systems
                .insert(name.clone(), system.spec.title.clone());
        }
        for (flow, mapping) in project.mappings() {
            let side = |system: &str, entity: &str, label: &str| EntityName {
                system: system.to_owned(),
                entity: entity.to_owned(),
                label: if label.trim().is_empty() {
                    format!("{system} {entity}")
                } else {
                    label.to_owned()
                },
            };
            let entry = MappingNames {
                flow: flow.spec.flow.value.clone(),
                identity: mapping.identity.value.clone(),
                source: side(
                    &flow.spec.source.value,
                    &mapping.source.value,
                    &mapping.source_label,
                ),
                target: side(
                    &flow.spec.target.value,
                    &mapping.target.value,
                    &mapping.target_label,
                ),
            };
            for e in [&entry.source, &entry.target] {
                names
                    .labels
                    .entry((e.system.clone(), e.entity.clone()))
                    .or_insert_with(|| e.label.clone());
            }
            names.mappings.insert(mapping.name.value.clone(), entry);
        }
        names
    }

    /// Whether a system is loaded.
    pub fn knows_system(&self, system: &str) -> bool {
        self.systems.contains_key(system)
    }

    /// Names that know only these systems (for tests of lookups).
    #[cfg(test)]
    pub(crate) fn with_systems(systems: &[&str]) -> Names {
        let mut names = Names::default();
        for system in systems {
            names
                .systems
                .insert((*system).to_owned(), (*system).to_owned());
        }
        names
    }

    /// A mapping's names, when it is loaded.
    pub fn mapping(&self, name: &str) -> Option<&MappingNames> {
        self.mappings.get(name)
    }

    /// Every loaded mapping's name, sorted.
    pub fn mapping_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.mappings.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// How people name a system's entity: a flow's label, or the system's title and the
    /// entity.
    pub fn label(&self, system: &str, entity: &str) -> String {
        self.labels
            .get(&(system.to_owned(), entity.to_owned()))
            .cloned()
            .unwrap_or_else(|| format!("{} {entity}", self.system(system)))
    }

    /// A system's title ("Salesforce"), or its name when it is not loaded.
    pub fn system(&self, system: &str) -> String {
        self.systems
            .get(system)
            .cloned()
            .unwrap_or_else(|| system.to_owned())
    }

    /// The label of one side of a mapping, or the mapping and side when it is not loaded.
    pub fn side_label(&self, mapping: &str, side: Side) -> String {
        self.mappings.get(mapping).map_or_else(
            || {
                format!(
                    "`{mapping}` {}",
                    match side {
                        Side::Source => "source",
                        Side::Target => "target",
                    }
                )
            },
            |m| m.side(side).label.clone(),
        )
    }

    /// The mappings that read a system's entity, with the side it is on.
    pub fn mappings_of(&self, system: &str, entity: &str) -> Vec<(&str, Side)> {
        let mut found: Vec<(&str, Side)> = self
            .mappings
            .iter()
            .flat_map(|(name, m)| {
                [Side::Source, Side::Target]
                    .into_iter()
                    .filter(move |side| {
                        let e = m.side(*side);
                        e.system == system && e.entity == entity
                    })
                    .map(move |side| (name.as_str(), side))
            })
            .collect();
        found.sort_unstable_by(|a, b| a.0.cmp(b.0));
        found
    }
}

/// `n` and a noun, in the singular for one (`1 record`, `3 records`).
pub fn count_of(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_named_system_entity_and_id() {
        let record: RecordRef = "salesforce:Order:8018d:01".parse().expect("parses");
        assert_eq!(
            (
                record.system.as_str(),
                record.entity.as_str(),
                record.id.as_str()
            ),
            ("salesforce", "Order", "8018d:01")
        );
        assert_eq!(record.to_string(), "salesforce:Order:8018d:01");
        for bad in [
            "keap",
            "keap:companies",
            "keap::1",
            ":companies:1",
            "keap:companies:",
        ] {
            assert!(
                matches!(bad.parse::<RecordRef>(), Err(OpsError::BadRecord(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn counts_read_in_the_singular_for_one() {
        assert_eq!(count_of(1, "record", "records"), "1 record");
        assert_eq!(count_of(0, "record", "records"), "0 records");
        assert_eq!(count_of(22, "record", "records"), "22 records");
    }
}
