//! The replication API: `getUpdated` and `getDeleted` over a window of whole minutes, at
//! most 30 days back, with the deleted records the recycle bin still holds.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::http::{ApiRequest, ApiResponse};
use crate::salesforce::describe::ObjectDef;
use crate::salesforce::{DAY_MS, SYSTEM, Salesforce, SfError};
use crate::store::{Stamp, offset_datetime, parse_lenient_datetime};

impl Salesforce {
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
        let earliest = self.shared.clock.now() - 15 * DAY_MS;
        let records: Vec<Value> = deleted
            .iter()
            .map(|(id, at)| json!({"id": id, "deletedDate": offset_datetime(*at)}))
            .collect();
        Ok(ApiResponse::json(
            StatusCode::OK,
            json!({
                "deletedRecords": records,
                "earliestDateAvailable": offset_datetime(earliest - earliest.rem_euclid(60_000)),
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
