//! The delete sweep: records deleted for good before a poll saw them (the recycle bin emptied, merge losers,
//! objects without a bin) never show in `queryAll`; Salesforce's delete log (`sobjects/X/deleted`) lists them for
//! 15 days. A sweep asks it for the window since the last one; the rows of the ids it names are checked by Id (an
//! id listed may be undeleted since). A window Salesforce refuses (`INVALID_REPLICATION_DATE`: its log was purged
//! since) or one that starts before `earliestDateAvailable` is a gap: every record is compared (a reload), never
//! guessed.

use serde_json::Value;

use super::values::epoch_seconds;
use crate::convert::soql_datetime;

/// Ids per by-Id query: 200 ids keep the SOQL well under its length limit.
pub const IDS_PER_QUERY: usize = 200;

/// The delete log's path and query for `[start, end)` (seconds since 1970 UTC; Salesforce floors both to the minute).
pub fn deleted_path(api_version: &str, object: &str, start: i64, end: i64) -> (String, [(&'static str, String); 2]) {
    (
        format!("/services/data/v{api_version}/sobjects/{object}/deleted/"),
        [("start", soql_datetime(start)), ("end", soql_datetime(end))],
    )
}

/// What a delete log answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swept {
    /// These ids were deleted in the window; the next sweep starts at `covered` (`latestDateCovered`).
    Deleted { ids: Vec<String>, covered: i64 },
    /// The log no longer reaches back to the window's start: everything must be compared.
    Gap,
}

/// Reads a delete log answer for a window that started at `start`.
pub fn parse_deleted(answer: &Value, start: i64) -> Result<Swept, String> {
    let date = |name: &str| answer.get(name).and_then(Value::as_str).and_then(epoch_seconds);
    if date("earliestDateAvailable").is_some_and(|earliest| earliest > start) {
        return Ok(Swept::Gap);
    }
    let covered = date("latestDateCovered").ok_or("the delete log's answer has no latestDateCovered")?;
    let ids = answer
        .get("deletedRecords")
        .and_then(Value::as_array)
        .ok_or("the delete log's answer has no deletedRecords")?
        .iter()
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    Ok(Swept::Deleted { ids, covered })
}

/// Whether an error code of the delete log means a gap.
pub fn is_gap(code: &str) -> bool {
    code == "INVALID_REPLICATION_DATE"
}

/// `object`'s records of `ids` (at most `IDS_PER_QUERY`), deleted ones included (through `queryAll`).
pub fn by_ids(object: &str, fields: &[String], ids: &[String]) -> String {
    let mut select: Vec<&str> = super::soql::SYSTEM_FIELDS.to_vec();
    for f in fields {
        if !select.iter().any(|s| s.eq_ignore_ascii_case(f)) {
            select.push(f);
        }
    }
    let list: Vec<String> = ids.iter().map(|id| format!("'{}'", super::soql::quote(id))).collect();
    format!("SELECT {} FROM {object} WHERE Id IN ({})", select.join(", "), list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_sweep_lists_ids_or_finds_a_gap() {
        let answer = json!({"deletedRecords": [{"id": "003A", "deletedDate": "2024-01-02T03:04:05.000+0000"}],
                            "earliestDateAvailable": "2024-01-01T00:00:00.000+0000",
                            "latestDateCovered": "2024-01-02T03:05:00.000+0000"});
        let start = epoch_seconds("2024-01-02T03:00:00.000+0000").expect("start");
        assert_eq!(
            parse_deleted(&answer, start),
            Ok(Swept::Deleted { ids: vec!["003A".into()], covered: start + 300 })
        );
        let early = epoch_seconds("2023-12-31T00:00:00.000+0000").expect("early");
        assert_eq!(parse_deleted(&answer, early), Ok(Swept::Gap), "the log starts after the window");
        assert!(parse_deleted(&json!({"deletedRecords": []}), start).is_err());
        assert!(is_gap("INVALID_REPLICATION_DATE") && !is_gap("MALFORMED_QUERY"));
        assert_eq!(
            by_ids("Contact", &["LastName".into()], &["003A".into(), "003'B".into()]),
            "SELECT Id, SystemModstamp, IsDeleted, CreatedDate, LastName FROM Contact WHERE Id IN ('003A', '003\\'B')"
        );
        let (path, query) = deleted_path("62.0", "Contact", start, start + 300);
        assert_eq!(path, "/services/data/v62.0/sobjects/Contact/deleted/");
        assert_eq!(query[0], ("start", "2024-01-02T03:00:00Z".to_string()));
    }
}
