//! Loads through a Bulk API 2.0 query job: above `pgforce.read_bulk_threshold` records a load (the first read, a
//! reload, the periodic comparison) asks Salesforce for a `queryAll` job instead of REST pages, and reads its results
//! as CSV sets by locator. The job's results come in no order (ORDER BY would disable PK chunking), so the load keeps
//! its job and the next set's locator instead of a keyset position; polling goes on from the job's start afterwards.
//! CSV is read strictly: an empty cell is NULL and nothing else is (`N/A`, `null`, `0012` and `""` stay the text they
//! are).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::page::{Page, SfRecord};
use super::soql::SYSTEM_FIELDS;
use super::values::epoch_seconds;

/// Records per result set asked for.
pub const SET_SIZE: usize = 50_000;

/// The job's state, as Salesforce names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Complete,
    /// `Failed` or `Aborted`: the load starts over.
    Ended,
}

impl JobState {
    pub fn parse(name: &str) -> JobState {
        match name {
            "JobComplete" => JobState::Complete,
            "Failed" | "Aborted" => JobState::Ended,
            _ => JobState::Running,
        }
    }
}

/// The body that creates the job: every record (deleted ones too) with the system fields and `fields`.
pub fn job_body(object: &str, fields: &[String]) -> Vec<u8> {
    let mut select: Vec<&str> = SYSTEM_FIELDS.to_vec();
    for f in fields {
        if !select.iter().any(|s| s.eq_ignore_ascii_case(f)) {
            select.push(f);
        }
    }
    let query = format!("SELECT {} FROM {object}", select.join(", "));
    serde_json::to_vec(&json!({"operation": "queryAll", "query": query, "contentType": "CSV"})).unwrap_or_default()
}

/// When to look at a running job again: within half a second first (peers' fixed 5 s checks put a 10 s floor under
/// every small load), then twice as long each time, at most 10 s.
pub fn next_check(previous: Option<Duration>) -> Duration {
    match previous {
        None => Duration::from_millis(500),
        Some(d) => (d * 2).min(Duration::from_secs(10)),
    }
}

/// The locator of the next result set: `None` after the last (Salesforce says `null`).
pub fn next_locator(header: Option<&str>) -> Option<String> {
    header.filter(|l| !l.is_empty() && *l != "null").map(str::to_string)
}

/// A result set as a page of records. Headers name the fields as asked for; a relationship path
/// (`Account.External_Id__c`) becomes the nested object a REST answer has (`"account": {"External_Id__c": …}`).
pub fn records(csv: &str) -> Result<Page, String> {
    let mut rows = parse_csv(csv)?.into_iter();
    let Some(header) = rows.next() else { return Ok(Page::default()) };
    let header: Vec<String> = header.into_iter().map(Option::unwrap_or_default).collect();
    let mut page = Page::default();
    for (n, row) in rows.enumerate() {
        if row.len() != header.len() {
            return Err(format!("result row {} has {} cells, the header {}", n + 1, row.len(), header.len()));
        }
        let mut fields: HashMap<String, Value> = HashMap::new();
        for (name, cell) in header.iter().zip(row) {
            let value = cell.map(Value::String).unwrap_or(Value::Null);
            match name.split_once('.') {
                Some((parent, field)) => {
                    let entry = fields.entry(parent.to_ascii_lowercase()).or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(o) = entry {
                        o.insert(field.to_string(), value);
                    }
                }
                None => {
                    fields.insert(name.to_ascii_lowercase(), value);
                }
            }
        }
        // A parent that is not there reads as NULL, as in a REST answer.
        for v in fields.values_mut() {
            if v.as_object().is_some_and(|o| o.values().all(Value::is_null)) {
                *v = Value::Null;
            }
        }
        let id = fields.get("id").and_then(Value::as_str).ok_or(format!("result row {} has no Id", n + 1))?.to_string();
        let stamp = fields
            .get("systemmodstamp")
            .and_then(Value::as_str)
            .and_then(epoch_seconds)
            .ok_or_else(|| format!("record {id} has no readable SystemModstamp"))?;
        let deleted = fields.get("isdeleted").and_then(Value::as_str) == Some("true");
        for flag in ["isdeleted"] {
            if let Some(Value::String(s)) = fields.get(flag) {
                let b = s == "true";
                fields.insert(flag.to_string(), Value::Bool(b));
            }
        }
        page.records.push(SfRecord { id, stamp, deleted, fields });
    }
    Ok(page)
}

/// RFC 4180 CSV: cells separated by commas, lines by LF or CRLF, quoted cells may hold commas, quotes (doubled) and
/// line breaks. An empty unquoted cell is `None`; a quoted empty cell is `Some("")`.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut rows = Vec::new();
    let mut row: Vec<Option<String>> = Vec::new();
    let mut cell = String::new();
    let (mut quoted, mut in_quotes, mut started) = (false, false, false);
    let mut chars = text.chars().peekable();
    let end_cell = |row: &mut Vec<Option<String>>, cell: &mut String, quoted: &mut bool| {
        row.push(if cell.is_empty() && !*quoted { None } else { Some(std::mem::take(cell)) });
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        started = true;
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => in_quotes = false,
                other => cell.push(other),
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() && !quoted => {
                quoted = true;
                in_quotes = true;
            }
            '"' => return Err(format!("a quote inside an unquoted cell, line {}", rows.len() + 1)),
            ',' => end_cell(&mut row, &mut cell, &mut quoted),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                end_cell(&mut row, &mut cell, &mut quoted);
                rows.push(std::mem::take(&mut row));
                started = false;
            }
            other if quoted => return Err(format!("{other:?} after a closing quote, line {}", rows.len() + 1)),
            other => cell.push(other),
        }
    }
    if in_quotes {
        return Err("a quoted cell is not closed".into());
    }
    if started {
        end_cell(&mut row, &mut cell, &mut quoted);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_is_read_strictly() {
        let rows = parse_csv("a,b,c\n1,,\"\"\n\"x,\"\"y\"\"\nz\",N/A,null\r\n").expect("csv");
        assert_eq!(rows[1], vec![Some("1".into()), None, Some(String::new())], "empty is NULL, \"\" is text");
        assert_eq!(rows[2], vec![Some("x,\"y\"\nz".into()), Some("N/A".into()), Some("null".into())]);
        assert_eq!(rows.len(), 3);
        assert!(parse_csv("a\"b\n").is_err());
        assert!(parse_csv("\"open\n").is_err());
        assert!(parse_csv("\"a\"b\n").is_err());
    }

    #[test]
    fn result_sets_become_records_like_rest_answers() {
        let csv = "Id,SystemModstamp,IsDeleted,CreatedDate,LastName,Account.External_Id__c,Amount__c\n\
                   003A,2024-01-02T03:04:05.000Z,false,2024-01-01T00:00:00.000Z,Lee,A-1,0012\n\
                   003B,2024-01-02T03:04:06.000Z,true,2024-01-01T00:00:00.000Z,,,\n";
        let page = records(csv).expect("records");
        let (a, b) = (&page.records[0], &page.records[1]);
        assert_eq!((a.id.as_str(), a.stamp, a.deleted), ("003A", 1_704_164_645, false));
        assert_eq!(a.fields["account"], json!({"External_Id__c": "A-1"}));
        assert_eq!(a.fields["amount__c"], json!("0012"), "digits stay text for the column to take");
        assert_eq!((b.deleted, &b.fields["lastname"], &b.fields["account"]), (true, &Value::Null, &Value::Null));
        assert!(records("Id,SystemModstamp\n003A\n").is_err());
        assert_eq!(next_locator(Some("null")), None);
        assert_eq!(next_locator(Some("MTAwMDA")).as_deref(), Some("MTAwMDA"));
        assert_eq!(next_check(None), Duration::from_millis(500));
        assert_eq!(next_check(Some(Duration::from_secs(8))), Duration::from_secs(10));
        assert_eq!(JobState::parse("InProgress"), JobState::Running);
    }
}
