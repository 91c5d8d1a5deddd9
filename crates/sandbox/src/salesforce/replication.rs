//! The replication API: `getUpdated` (at most 30 days back) and `getDeleted` over a window
//! of whole minutes, with the deleted records the recycle bin still holds: at most 15 days
//! back, and not before the recycle bin was last emptied.
//!
//! Real behaviour (SOAP API Developer Guide, `getDeleted()`, "Rules and Guidelines"):
//! "Results are returned for no more than 15 days previous to the day the call is executed
//! (or earlier if an administrator has purged the Recycle Bin). If the purge has been
//! performed before your getDeleted() call is executed, an INVALID_REPLICATION_DATE error
//! is returned"; "If you get this exception, you should do a full pull of the table".
//! `GetDeletedResult.earliestDateAvailable` is "the timestamp of the last physically deleted
//! object". The REST resource `sobjects/{object}/deleted` answers the same.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::http::{ApiRequest, ApiResponse};
use crate::salesforce::describe::ObjectDef;
use crate::salesforce::{DAY_MS, SYSTEM, Salesforce, SfError, lock};
use crate::store::{Stamp, offset_datetime, parse_lenient_datetime};

impl Salesforce {
    /// The earliest start `getDeleted` accepts: 15 days back, or the last time the recycle
    /// bin was emptied when that is later.
    pub(super) fn earliest_deleted(&self) -> Stamp {
        let now = self.shared.clock.now();
        let window = now - 15 * DAY_MS;
        let window = window - window.rem_euclid(60_000);
        window.max(*lock(&self.purged))
    }

    /// Empties the recycle bin: every deleted record is gone for good (`queryAll` no longer
    /// sees it) and `getDeleted` refuses a start before now.
    pub(super) fn purge_recycle_bin(&self) {
        let now = self.shared.clock.now();
        let mut store = self.shared.store();
        for object in &self.objects {
            if let Some(records) = store.entity(SYSTEM, object.name)
                && records.records.values().any(|r| r.deleted.is_some())
            {
                store.entity_mut(SYSTEM, object.name).purge_deleted();
            }
        }
        drop(store);
        *lock(&self.purged) = now;
        self.shared.mark_dirty();
    }

    pub(super) fn window(&self, request: &ApiRequest) -> Result<(Stamp, Stamp), SfError> {
        let instant = |name: &str| -> Result<Stamp, SfError> {
            let text = request
                .query(name)
                .ok_or_else(|| SfError::bad("MISSING_ARGUMENT", format!("{name} not specified")))?;
            parse_lenient_datetime(text).ok_or_else(|| {
                SfError::bad(
                    "INVALID_REPLICATION_DATE",
                    format!("{name}: invalid date time value: {text}"),
                )
            })
        };
        let minute = |at: Stamp| at - at.rem_euclid(60_000);
        let (start, end) = (minute(instant("start")?), minute(instant("end")?));
        let now = self.shared.clock.now();
        if end < start {
            return Err(SfError::bad(
                "INVALID_REPLICATION_DATE",
                "EndDate must be after StartDate",
            ));
        }
        if start < now - 30 * DAY_MS {
            return Err(SfError::bad(
                "INVALID_REPLICATION_DATE",
                "startDate cannot be more than 30 days ago",
            ));
        }
        Ok((start, end.min(minute(now))))
    }

    pub(super) fn get_deleted(
        &self,
        request: &ApiRequest,
        object: &ObjectDef,
    ) -> Result<ApiResponse, SfError> {
        let (start, end) = self.window(request)?;
        let earliest = self.earliest_deleted();
        if start < earliest {
            return Err(SfError::bad(
                "INVALID_REPLICATION_DATE",
                format!(
                    "startDate is before the earliest date available for getDeleted: {}",
                    offset_datetime(earliest)
                ),
            ));
        }
        let store = self.shared.store();
        let mut deleted: Vec<(&str, Stamp)> = store
            .entity(SYSTEM, object.name)
            .map(|records| {
                records
                    .records
                    .values()
                    .filter_map(|record| Some((record.id.as_str(), record.deleted?)))
                    .filter(|(_, at)| *at >= start && *at < end + 60_000)
                    .collect()
            })
            .unwrap_or_default();
        deleted.sort_by_key(|(_, at)| *at);
        let records: Vec<Value> = deleted
            .iter()
            .map(|(id, at)| json!({"id": id, "deletedDate": offset_datetime(*at)}))
            .collect();
        Ok(ApiResponse::json(
            StatusCode::OK,
            json!({
                "deletedRecords": records,
                "earliestDateAvailable": offset_datetime(earliest),
                "latestDateCovered": offset_datetime(end),
            }),
        ))
    }

    pub(super) fn get_updated(
        &self,
        request: &ApiRequest,
        object: &ObjectDef,
    ) -> Result<ApiResponse, SfError> {
        let (start, end) = self.window(request)?;
        let store = self.shared.store();
        let ids: Vec<&str> = store
            .entity(SYSTEM, object.name)
            .map(|records| {
                records
                    .by_change(false)
                    .into_iter()
                    .filter(|record| record.touched >= start && record.touched < end + 60_000)
                    .map(|record| record.id.as_str())
                    .collect()
            })
            .unwrap_or_default();
        Ok(ApiResponse::json(
            StatusCode::OK,
            json!({"ids": ids, "latestDateCovered": offset_datetime(end)}),
        ))
    }
}
