//! Resync and backfill: a mapping's records (or one record and its counterpart) read again
//! whatever the cursors say, every mapped field compared with the other side, and what
//! differs written through the same merge, guarantees, echo suppression and change log as a
//! run ([`crate::sync::engine::Resync`]); optionally the mapping's stored cursors cleared
//! first, so its incremental reads start again from the beginning. Each resync is a run
//! (trigger `resync`) and its writes are in the history with why `resync: ...`.
//!
//! [`check`] decides whether a request names things the flows know (pure); [`resync`] does
//! it.

use serde::Serialize;

use crate::ops::{Names, OpsError, RecordRef};
use crate::sync::engine::{Engine, Resync, RunOptions};
use crate::sync::report::RunReport;

/// The trigger a resync is recorded with in the runs.
pub const TRIGGER: &str = "resync";

/// What to resync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResyncRequest {
    /// The mapping, by name or `FLOW/NAME`.
    pub mapping: String,
    /// One record of the mapping (either side) and its counterpart; the whole mapping when
    /// `None`.
    pub record: Option<RecordRef>,
    /// Clear the mapping's stored cursors first: its incremental reads start again from the
    /// beginning.
    pub reset_cursors: bool,
}

/// What a resync did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResyncOutcome {
    pub request: ResyncRequest,
    /// Stored cursors cleared (with `reset_cursors`).
    pub cursors_cleared: u64,
    /// The run of the resync.
    pub report: RunReport,
}

/// The mapping's name as the store knows it, when the request names a loaded mapping and,
/// with a record, one of that mapping's entities. Pure.
pub fn check(request: &ResyncRequest, names: &Names) -> Result<String, OpsError> {
    let name = names
        .mapping_names()
        .into_iter()
        .find(|name| {
            *name == request.mapping
                || names
                    .mapping(name)
                    .is_some_and(|m| format!("{}/{name}", m.flow) == request.mapping)
        })
        .ok_or_else(|| OpsError::UnknownMapping(request.mapping.clone()))?
        .to_owned();
    if let (Some(record), Some(mapping)) = (&request.record, names.mapping(&name)) {
        let on_a_side = [&mapping.source, &mapping.target]
            .iter()
            .any(|side| side.system == record.system && side.entity == record.entity);
        if !on_a_side {
            return Err(OpsError::NotInMapping {
                record: record.to_string(),
                mapping: name,
                sides: format!(
                    "{}:{} and {}:{}",
                    mapping.source.system,
                    mapping.source.entity,
                    mapping.target.system,
                    mapping.target.entity
                ),
            });
        }
    }
    Ok(name)
}

/// The run options of a resync, from the caller's (`base`: worker, leases, history
/// retention, cancel).
pub fn run_options(mapping: &str, request: &ResyncRequest, base: RunOptions) -> RunOptions {
    RunOptions {
        flows: Vec::new(),
        mappings: vec![mapping.to_owned()],
        dry_run: false,
        resync: Some(Resync {
            records: request.record.iter().map(RecordRef::key).collect(),
        }),
        trigger: Some(TRIGGER.to_owned()),
        ..base
    }
}

/// Resyncs: checks the request against the engine's flows, clears the cursors when asked,
/// and runs the resync.
pub async fn resync(
    engine: &Engine,
    names: &Names,
    request: &ResyncRequest,
    base: RunOptions,
) -> Result<ResyncOutcome, OpsError> {
    let mapping = check(request, names)?;
    let cursors_cleared = if request.reset_cursors {
        let cleared = engine.store().clear_cursors(&mapping).await?;
        tracing::info!(%mapping, cleared, "cursors cleared: reads start from the beginning");
        cleared
    } else {
        0
    };
    let report = engine
        .run(&run_options(&mapping, request, base))
        .await
        .map_err(|e| OpsError::Engine(Box::new(e)))?;
    Ok(ResyncOutcome {
        request: request.clone(),
        cursors_cleared,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::load::Project;

    fn names() -> Names {
        Names::of(&Project::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows"),
        ))
    }

    fn request(mapping: &str, record: Option<&str>) -> ResyncRequest {
        ResyncRequest {
            mapping: mapping.to_owned(),
            record: record.map(|r| r.parse().expect("record")),
            reset_cursors: false,
        }
    }

    #[test]
    fn a_request_names_a_loaded_mapping_and_one_of_its_entities() {
        let names = names();
        let mapping = "keap-companies-to-customerp-customers";
        assert_eq!(check(&request(mapping, None), &names).expect("ok"), mapping);
        assert_eq!(
            check(
                &request(&format!("keap-to-customerp/{mapping}"), None),
                &names
            )
            .expect("flow/name"),
            mapping
        );
        assert!(check(&request(mapping, Some("customerp:customers:7")), &names).is_ok());
        assert!(check(&request(mapping, Some("keap:companies:42")), &names).is_ok());
        let wrong = check(&request(mapping, Some("keap:contacts:42")), &names)
            .expect_err("not one of its entities");
        assert!(
            wrong
                .to_string()
                .contains("keap:companies and customerp:customers"),
            "{wrong}"
        );
        assert!(matches!(
            check(&request("no-such-mapping", None), &names),
            Err(OpsError::UnknownMapping(_))
        ));
    }

    #[test]
    fn the_options_name_the_mapping_the_records_and_the_trigger() {
        let options = run_options(
            "m",
            &request("m", Some("keap:companies:42")),
            RunOptions {
                flows: vec!["other".into()],
                history_days: 3,
                ..RunOptions::default()
            },
        );
        assert_eq!(options.mappings, vec!["m".to_owned()]);
        assert!(options.flows.is_empty());
        assert_eq!(options.history_days, 3);
        assert_eq!(options.trigger.as_deref(), Some("resync"));
        assert_eq!(
            options.resync.expect("resync").records,
            vec![crate::store::RecordKey::new("keap", "companies", "42")]
        );
        let whole = run_options("m", &request("m", None), RunOptions::default());
        assert!(whole.resync.expect("resync").records.is_empty());
    }
}
