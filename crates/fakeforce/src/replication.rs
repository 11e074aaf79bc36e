//! `sobjects/X/updated` and `sobjects/X/deleted` (REST getUpdated / getDeleted), as Salesforce serves them: both
//! ends of the window lose their seconds; `deleted` refuses a window of a minute or less, a start more than 15 days
//! back (30 for `updated`) or before the delete log was purged (`INVALID_REPLICATION_DATE`: the caller must compare
//! everything); `latestDateCovered` is the end, on a whole minute.

use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::reply::Reply;
use crate::store::Store;
use crate::values::{format_datetime, now_ms, parse_datetime};

const DAY: i64 = 86_400_000;
/// More ids than this in one window: `EXCEEDED_ID_LIMIT`.
const ID_LIMIT: usize = 600_000;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "INVALID_REPLICATION_DATE", message)
}

/// The window `[start, end)` from the query string, both floored to the minute (`unit` ms).
fn window(query: &[(String, String)], max_days: i64, unit: i64) -> Result<(i64, i64), ApiError> {
    let param = |name: &str| -> Result<i64, ApiError> {
        let text = query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| ApiError::new(400, "MISSING_ARGUMENT", format!("{name} was not specified")))?;
        parse_datetime(text)
            .map(|ms| ms - ms.rem_euclid(unit))
            .ok_or_else(|| ApiError::new(400, "INVALID_DATE_FORMAT", format!("{name}: {text} is not a dateTime")))
    };
    let (start, end) = (param("start")?, param("end")?);
    if start >= end {
        return Err(invalid("startDate must chronologically precede endDate"));
    }
    if start < now_ms() - max_days * DAY {
        return Err(invalid(format!("startDate cannot be more than {max_days} days ago")));
    }
    Ok((start, end))
}

pub fn deleted(store: &Store, object: usize, query: &[(String, String)], unit: i64) -> Result<Reply, ApiError> {
    let (start, end) = window(query, 15, unit)?;
    if end - start <= unit {
        return Err(invalid("startDate must chronologically precede endDate by more than one minute"));
    }
    if start < store.delete_log_floor {
        return Err(invalid("startDate is before the delete log was purged: replicate the whole object again"));
    }
    let records = store.deleted_between(object, start, end);
    if records.len() > ID_LIMIT {
        return Err(ApiError::new(400, "EXCEEDED_ID_LIMIT", "choose start and end dates that are closer together"));
    }
    let list: Vec<Value> =
        records.iter().map(|(id, at)| json!({"id": id, "deletedDate": format_datetime(*at)})).collect();
    let earliest = store.delete_log_floor.max(0);
    Ok(Reply::json(
        200,
        &json!({"deletedRecords": list, "earliestDateAvailable": format_datetime(earliest - earliest.rem_euclid(unit)),
                "latestDateCovered": format_datetime(end)}),
    ))
}

pub fn updated(store: &Store, object: usize, query: &[(String, String)], unit: i64) -> Result<Reply, ApiError> {
    let (start, end) = window(query, 30, unit)?;
    let ids = store.updated_between(object, start, end);
    if ids.len() > ID_LIMIT {
        return Err(ApiError::new(400, "EXCEEDED_ID_LIMIT", "choose start and end dates that are closer together"));
    }
    Ok(Reply::json(200, &json!({"ids": ids, "latestDateCovered": format_datetime(end)})))
}
