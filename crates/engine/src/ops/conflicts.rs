//! Conflicts as an operator meets them: the ones held for a person to decide (the `manual`
//! policy) with both values and the last synced one, the ones decided and waiting for the
//! next run, and the latest ones the policies decided; and the decision itself.
//!
//! A decision is recorded in the store ([`resolve`]); the next run of the conflict's mapping
//! reads the pair whatever its cursors say and writes the chosen value to each side that
//! holds another, then marks the conflict applied. Nothing is sent to a system here.

use serde::Serialize;
use serde_json::Value;

use crate::ops::{Names, OpsError, RecordRef};
use crate::spec::flow::Side;
use crate::store::{Choice, Conflict, ConflictId, ConflictState, Store};

/// A conflict with the records of its pair, as the flows name them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictItem {
    #[serde(flatten)]
    pub conflict: Conflict,
    /// The pair's source record, while the pair exists.
    pub source: Option<RecordRef>,
    /// The pair's target record, while the pair exists.
    pub target: Option<RecordRef>,
}

/// The conflicts an operator looks at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing {
    /// Held for a person to decide, oldest first.
    pub held: Vec<ConflictItem>,
    /// Decided by a person, written by the next run of their mapping.
    pub resolved: Vec<ConflictItem>,
    /// The latest ones decided by a policy or written after a person's choice, newest first.
    pub recent: Vec<ConflictItem>,
}

/// The held and resolved conflicts, and the latest `recent` others, of one mapping or all.
pub async fn list(
    store: &Store,
    names: &Names,
    mapping: Option<&str>,
    recent: u32,
) -> Result<Listing, OpsError> {
    let mut listing = Listing {
        held: Vec::new(),
        resolved: Vec::new(),
        recent: Vec::new(),
    };
    for conflict in store.open_conflicts(mapping).await? {
        let item = item(store, names, conflict).await?;
        match item.conflict.state {
            ConflictState::Held => listing.held.push(item),
            _ => listing.resolved.push(item),
        }
    }
    for conflict in store.recent_conflicts(mapping, recent).await? {
        if matches!(
            conflict.state,
            ConflictState::Decided | ConflictState::Applied
        ) {
            listing.recent.push(item(store, names, conflict).await?);
        }
    }
    Ok(listing)
}

async fn item(store: &Store, names: &Names, conflict: Conflict) -> Result<ConflictItem, OpsError> {
    let pair = store
        .pair_state(&conflict.mapping, &conflict.global_id)
        .await?;
    let side = |side: Side, id: &str| {
        names.mapping(&conflict.mapping).map(|m| {
            let e = m.side(side);
            RecordRef {
                system: e.system.clone(),
                entity: e.entity.clone(),
                id: id.to_owned(),
            }
        })
    };
    let (source, target) = match &pair {
        Some(pair) => (
            side(Side::Source, &pair.source_id),
            side(Side::Target, &pair.target_id),
        ),
        None => (None, None),
    };
    Ok(ConflictItem {
        conflict,
        source,
        target,
    })
}

/// Reads an operator's choice: `source`, `target`, or `value` and the value (JSON when it
/// parses as JSON, text otherwise: `value 42` is a number, `value Acme` text).
pub fn parse_choice(words: &[String]) -> Result<Choice, OpsError> {
    match words {
        [side] if side == "source" => Ok(Choice::Source),
        [side] if side == "target" => Ok(Choice::Target),
        [kind, value] if kind == "value" => Ok(Choice::Value(
            serde_json::from_str::<Value>(value).unwrap_or_else(|_| Value::String(value.clone())),
        )),
        _ => Err(OpsError::BadChoice(words.join(" "))),
    }
}

/// Records a person's choice for a held conflict; the next run of its mapping writes it.
pub async fn resolve(store: &Store, id: &str, choice: Choice) -> Result<Conflict, OpsError> {
    let id = ConflictId::new(id);
    let Some(conflict) = store.conflict(&id).await? else {
        return Err(OpsError::UnknownConflict(id.to_string()));
    };
    if conflict.state != ConflictState::Held {
        return Err(OpsError::NotHeld {
            id: id.to_string(),
            state: conflict.state.as_str().to_owned(),
        });
    }
    store
        .resolve_conflict(&id, &choice)
        .await?
        .ok_or_else(|| OpsError::NotHeld {
            id: id.to_string(),
            state: "no longer held".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn a_choice_is_a_side_or_a_value() {
        assert_eq!(parse_choice(&words("source")).ok(), Some(Choice::Source));
        assert_eq!(parse_choice(&words("target")).ok(), Some(Choice::Target));
        assert_eq!(
            parse_choice(&["value".into(), "Acme Group".into()]).ok(),
            Some(Choice::Value(json!("Acme Group")))
        );
        assert_eq!(
            parse_choice(&words("value 42")).ok(),
            Some(Choice::Value(json!(42)))
        );
        for bad in ["both", "value", "source target"] {
            assert!(
                matches!(parse_choice(&words(bad)), Err(OpsError::BadChoice(_))),
                "{bad}"
            );
        }
    }
}
