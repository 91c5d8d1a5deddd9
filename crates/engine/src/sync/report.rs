//! What a run did (or, for `plan`, would do): counts per mapping and per system, and the
//! planned actions with their reasons. Serialisable for `--format json`.

use serde::Serialize;
use serde_json::Value;

use crate::connector::ConnectorStats;
use crate::spec::flow::Side;

/// Examples of skipped or suspicious listed items kept per mapping in a report.
pub const EXAMPLES: usize = 10;

/// A listed item worth telling the user about: which side, which id, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedProblem {
    pub side: Side,
    /// The id as the API listed it (`None` when the item had none).
    pub id: Option<String>,
    pub reason: String,
}

/// Counts of one mapping over a run (all passes).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MappingReport {
    pub mapping: String,
    pub flow: String,
    /// Records read from each side.
    pub read_source: u64,
    pub read_target: u64,
    /// Pairs linked by match keys.
    pub linked: u64,
    pub created_source: u64,
    pub created_target: u64,
    pub updated_source: u64,
    pub updated_target: u64,
    pub deleted_source: u64,
    pub deleted_target: u64,
    /// Pairs forgotten because one side was deleted.
    pub unlinked: u64,
    pub conflicts: u64,
    /// Records parked in this run (bad values, refused writes, ambiguous matches).
    pub parked: u64,
    /// Parked records that synced this time.
    pub unparked: u64,
    /// Pairs whose record was edited while the run went on: their update waits for the next
    /// read, so the edit is merged instead of overwritten.
    pub deferred: u64,
    /// Listed items that could not be records (no usable id, an id that cannot be one path
    /// segment, an answer that is not a record): skipped, not synced.
    pub malformed: u64,
    /// Up to [`EXAMPLES`] of them, each naming the side, the id as listed and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub malformed_examples: Vec<ListedProblem>,
    /// Records stamped later than their system's clock: synced, but they do not move the
    /// cursor (a clock or data problem in that system worth a look).
    pub stamped_ahead: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stamped_ahead_examples: Vec<ListedProblem>,
    /// Why the mapping stopped before writing, if it did (circuit breaker, errors).
    pub stopped: Option<String>,
    /// Why the mapping's work waits for the next run, when a system's daily allowance
    /// stopped it (not a failure: the next run reads from the same cursors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postponed: Option<String>,
    /// The system whose allowance postponed the mapping.
    #[serde(skip)]
    pub postponed_by: Option<String>,
    /// What the run did differently and why (a deletion feed replaced by a full listing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The worker that held the mapping's lease, when this run skipped it for that reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

impl MappingReport {
    /// Writes (creates, updates, deletes) on either side.
    pub fn writes(&self) -> u64 {
        self.created_source
            + self.created_target
            + self.updated_source
            + self.updated_target
            + self.deleted_source
            + self.deleted_target
    }

    pub(crate) fn absorb(&mut self, other: &MappingReport) {
        self.read_source += other.read_source;
        self.read_target += other.read_target;
        self.linked += other.linked;
        self.created_source += other.created_source;
        self.created_target += other.created_target;
        self.updated_source += other.updated_source;
        self.updated_target += other.updated_target;
        self.deleted_source += other.deleted_source;
        self.deleted_target += other.deleted_target;
        self.unlinked += other.unlinked;
        self.conflicts += other.conflicts;
        self.parked += other.parked;
        self.unparked += other.unparked;
        self.deferred += other.deferred;
        self.malformed += other.malformed;
        self.stamped_ahead += other.stamped_ahead;
        for (ours, theirs) in [
            (&mut self.malformed_examples, &other.malformed_examples),
            (
                &mut self.stamped_ahead_examples,
                &other.stamped_ahead_examples,
            ),
        ] {
            for example in theirs {
                if ours.len() < EXAMPLES && !ours.contains(example) {
                    ours.push(example.clone());
                }
            }
        }
        if other.stopped.is_some() {
            self.stopped.clone_from(&other.stopped);
        }
        if other.postponed.is_some() {
            self.postponed.clone_from(&other.postponed);
            self.postponed_by.clone_from(&other.postponed_by);
        }
        for note in &other.notes {
            if !self.notes.contains(note) {
                self.notes.push(note.clone());
            }
        }
    }
}

/// Requests made to one system during the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SystemReport {
    pub system: String,
    pub requests: u64,
    pub errors: u64,
    pub retries: u64,
    pub rate_limit_waits: u64,
    /// The daily allowance the system's last answer reported: requests used, and the
    /// allowance (systems whose file has an `allowance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowance_used: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowance_limit: Option<u64>,
    /// Why the system took no more requests in this run, when its daily allowance stopped
    /// it; the next run carries on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl SystemReport {
    pub(crate) fn delta(
        system: &str,
        before: &ConnectorStats,
        after: &ConnectorStats,
    ) -> SystemReport {
        SystemReport {
            system: system.to_owned(),
            requests: after.requests.saturating_sub(before.requests),
            errors: after.errors.saturating_sub(before.errors),
            retries: after.retries.saturating_sub(before.retries),
            rate_limit_waits: after
                .rate_limit_waits
                .saturating_sub(before.rate_limit_waits),
            allowance_used: after.allowance_used,
            allowance_limit: after.allowance_limit,
            stopped: None,
        }
    }
}

/// One field's change in a planned or done update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<Value>,
    pub after: Value,
}

/// Something a run does, or `plan` says it would do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Two existing records found to be the same thing by match keys.
    Link {
        mapping: String,
        source_id: String,
        target_id: String,
        key: String,
    },
    /// More than one candidate matched: the record is parked, not guessed.
    Ambiguous {
        mapping: String,
        side: Side,
        record_id: String,
        key: String,
        candidates: Vec<String>,
    },
    /// A record to create on `on`, copied from `from_id` on the other side.
    Create {
        mapping: String,
        on: Side,
        from_id: String,
        fields: Value,
    },
    /// Fields to change in an existing record.
    Update {
        mapping: String,
        on: Side,
        id: String,
        changes: Vec<FieldChange>,
    },
    /// A counterpart to delete because its linked record was deleted.
    Delete {
        mapping: String,
        on: Side,
        id: String,
    },
    /// A pair forgotten because one side was deleted (`deletes: unlink`).
    Unlink {
        mapping: String,
        side: Side,
        id: String,
    },
    /// The same field changed on both sides; `winner` decided.
    Conflict {
        mapping: String,
        field: String,
        base: Option<Value>,
        source: Option<Value>,
        target: Option<Value>,
        winner: Side,
        reason: String,
    },
    /// The same field changed on both sides of a `manual` mapping: held for a person, with
    /// both values and the last synced one, and no winner; neither side is written until
    /// `tether conflicts resolve` decides. `conflict` is its id once a run has held it
    /// (`None`: this run would hold it).
    Held {
        mapping: String,
        field: String,
        base: Option<Value>,
        source: Option<Value>,
        target: Option<Value>,
        source_id: Option<String>,
        target_id: Option<String>,
        conflict: Option<String>,
    },
    /// A person's choice for a held conflict, written by this run (the update beside it).
    Resolve {
        mapping: String,
        conflict: String,
        field: String,
        value: Option<Value>,
    },
    /// A record that cannot sync now, with the reason.
    Park {
        mapping: String,
        side: Side,
        id: String,
        reason: String,
        field: Option<String>,
        value: Option<String>,
    },
}

/// The outcome of a run or plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunReport {
    pub run_id: Option<String>,
    /// True for `plan`: nothing was written.
    pub dry_run: bool,
    pub passes: u32,
    pub mappings: Vec<MappingReport>,
    pub systems: Vec<SystemReport>,
    /// Planned actions (`plan` only).
    pub actions: Vec<Action>,
    /// The run was stopped (shutdown) before it was done; the rest happens next run.
    pub interrupted: bool,
    /// How the run ended, as recorded in the run history (`None` for plans).
    pub outcome: Option<crate::store::RunOutcome>,
}

impl RunReport {
    /// Writes across all mappings.
    pub fn writes(&self) -> u64 {
        self.mappings.iter().map(MappingReport::writes).sum()
    }

    pub fn parked(&self) -> u64 {
        self.mappings.iter().map(|m| m.parked).sum()
    }

    pub fn stopped(&self) -> Vec<&MappingReport> {
        self.mappings
            .iter()
            .filter(|m| m.stopped.is_some())
            .collect()
    }
}
