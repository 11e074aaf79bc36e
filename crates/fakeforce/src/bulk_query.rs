//! Bulk API 2.0 query jobs (`jobs/query`), as Salesforce serves them: `query` or `queryAll`, no `COUNT()`; the job
//! goes `UploadComplete` → `InProgress` → `JobComplete` over `bulk_processing_ms`; its results come as CSV sets by an
//! opaque, stable locator (`Sforce-Locator`, the string `null` after the last set) and `Sforce-NumberOfRecords`.
//! Empty cells are nulls and nothing else is; datetimes end in `Z`; a results call before the job is complete is 412,
//! with another API version than the job's 409.

use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::org::State;
use crate::reply::Reply;
use crate::soql;
use crate::values;

/// Records per result set when the caller gives no `maxRecords`.
const DEFAULT_SET: usize = 50_000;

#[derive(Debug)]
pub struct QueryJob {
    pub id: String,
    operation: String,
    object: String,
    query: String,
    version: String,
    pub state: &'static str,
    created_by: String,
    created_date: String,
    /// The CSV header and rows, once the job ran.
    header: Vec<String>,
    rows: Vec<String>,
    error: Option<String>,
}

fn info(job: &QueryJob) -> Value {
    json!({"id": job.id, "operation": job.operation, "object": job.object, "createdById": job.created_by,
           "createdDate": job.created_date, "systemModstamp": values::now_datetime(), "state": job.state,
           "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": job.version.trim_start_matches('v'),
           "jobType": "V2Query", "lineEnding": "LF", "columnDelimiter": "COMMA",
           "numberRecordsProcessed": job.rows.len(), "retries": 0, "totalProcessingTime": 0,
           "errorMessage": job.error})
}

pub fn create(st: &mut State, version: &str, created_by: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let body: Value = serde_json::from_slice(body).map_err(|e| ApiError::json_parse(e.to_string()))?;
    let operation = body.get("operation").and_then(Value::as_str).unwrap_or_default().to_string();
    if operation != "query" && operation != "queryAll" {
        return Err(ApiError::new(400, "INVALIDJOB", format!("Invalid operation: {operation:?}")));
    }
    let query = body.get("query").and_then(Value::as_str).unwrap_or_default().to_string();
    let parsed = soql::parse(&query)?;
    if parsed.is_count() {
        return Err(ApiError::new(400, "API_ERROR", "Aggregate queries are not supported by Bulk API 2.0 query"));
    }
    soql::run(&st.store, version, &parsed, false)?; // the fields exist
    let id = format!("750Dn{:013}", st.next_serial());
    let job = QueryJob {
        id: id.clone(),
        object: parsed.object().to_string(),
        operation,
        query,
        version: version.to_string(),
        state: "UploadComplete",
        created_by: created_by.to_string(),
        created_date: values::now_datetime(),
        header: Vec::new(),
        rows: Vec::new(),
        error: None,
    };
    let reply = Reply::json(200, &info(&job));
    st.query_jobs.insert(id, job);
    Ok(reply)
}

pub fn get(st: &State, id: &str) -> Result<Reply, ApiError> {
    st.query_jobs.get(id).map(|j| Reply::json(200, &info(j))).ok_or_else(ApiError::not_found)
}

pub fn abort_or_delete(st: &mut State, id: &str, delete: bool) -> Result<Reply, ApiError> {
    let job = st.query_jobs.get_mut(id).ok_or_else(ApiError::not_found)?;
    if delete {
        st.query_jobs.remove(id);
        return Ok(Reply::empty(204));
    }
    if matches!(job.state, "UploadComplete" | "InProgress") {
        job.state = "Aborted";
    }
    Ok(Reply::json(200, &info(job)))
}

/// `InProgress` (the server calls it after the first half of the processing delay).
pub fn start(st: &mut State, id: &str) -> bool {
    match st.query_jobs.get_mut(id) {
        Some(job) if job.state == "UploadComplete" => {
            job.state = "InProgress";
            true
        }
        _ => false,
    }
}

/// Runs the query and completes the job.
pub fn process(st: &mut State, id: &str) {
    let Some(job) = st.query_jobs.get(id).filter(|j| j.state == "InProgress") else { return };
    let (query, version, all) = (job.query.clone(), job.version.clone(), job.operation == "queryAll");
    let outcome = soql::parse(&query).and_then(|q| {
        let result = soql::run(&st.store, &version, &q, all)?;
        let header: Vec<String> = q.fields().to_vec();
        let rows = result.records.iter().map(|r| csv_row(r, &header)).collect();
        Ok((header, rows))
    });
    let Some(job) = st.query_jobs.get_mut(id) else { return };
    match outcome {
        Ok((header, rows)) => {
            job.header = header;
            job.rows = rows;
            job.state = "JobComplete";
        }
        Err(e) => {
            job.error = Some(e.message);
            job.state = "Failed";
        }
    }
}

/// One record as a CSV line, its fields in the order asked for (a relationship path through its parent).
fn csv_row(record: &Value, header: &[String]) -> String {
    header
        .iter()
        .map(|path| {
            let mut value = record;
            for part in path.split('.') {
                value = match value.as_object().and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(part))) {
                    Some((_, v)) => v,
                    None => &Value::Null,
                };
            }
            csv_cell(value)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A value as a CSV cell: null is empty, text is quoted when it must be (an empty text is `""`), datetimes end in `Z`.
fn csv_cell(value: &Value) -> String {
    let text = match value {
        Value::Null => return String::new(),
        Value::String(s) => match s.strip_suffix("+0000") {
            Some(utc) if s.len() == 28 && s.as_bytes()[10] == b'T' => format!("{utc}Z"),
            _ => s.clone(),
        },
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    };
    if text.is_empty() || text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

pub fn results(st: &State, version: &str, id: &str, query: &[(String, String)]) -> Result<Reply, ApiError> {
    let job = st.query_jobs.get(id).ok_or_else(ApiError::not_found)?;
    if job.version != version {
        return Err(ApiError::new(409, "INVALIDJOBSTATE", "the job was created with another API version"));
    }
    if job.state != "JobComplete" {
        return Err(ApiError::new(412, "JOB_NOT_COMPLETE", format!("Job {id} is {}", job.state)));
    }
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let max = param("maxRecords").and_then(|m| m.parse::<usize>().ok()).filter(|m| *m > 0).unwrap_or(DEFAULT_SET);
    let start = match param("locator") {
        None | Some("") => 0,
        Some(l) => decode_locator(l).ok_or_else(|| ApiError::new(400, "INVALID_LOCATOR", format!("locator {l:?}")))?,
    };
    let end = (start + max).min(job.rows.len());
    let mut body = job.header.join(",");
    body.push('\n');
    for row in &job.rows[start.min(end)..end] {
        body.push_str(row);
        body.push('\n');
    }
    let next = if end < job.rows.len() { encode_locator(end) } else { "null".to_string() };
    Ok(Reply::csv(body.into_bytes())
        .with_header("Sforce-Locator", next)
        .with_header("Sforce-NumberOfRecords", (end - start.min(end)).to_string()))
}

/// An opaque locator (Salesforce's look like `MTAwMDA`): the offset, hex, behind a fixed prefix.
fn encode_locator(offset: usize) -> String {
    format!("MTA{offset:x}")
}

fn decode_locator(locator: &str) -> Option<usize> {
    usize::from_str_radix(locator.strip_prefix("MTA")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_strict_csv_and_locators_round_trip() {
        assert_eq!(csv_cell(&Value::Null), "");
        assert_eq!(csv_cell(&json!("")), "\"\"", "an empty text is not a null");
        assert_eq!(csv_cell(&json!("N/A")), "N/A");
        assert_eq!(csv_cell(&json!("a,\"b\"")), "\"a,\"\"b\"\"\"");
        assert_eq!(csv_cell(&json!("2024-09-24T03:26:07.000+0000")), "2024-09-24T03:26:07.000Z");
        assert_eq!(csv_cell(&json!(12.5)), "12.5");
        let row = csv_row(
            &json!({"Id": "003A", "Account": {"External_Id__c": "A-1"}}),
            &["Id".into(), "Account.External_Id__c".into(), "Email".into()],
        );
        assert_eq!(row, "003A,A-1,");
        assert_eq!(decode_locator(&encode_locator(50_000)), Some(50_000));
    }
}
