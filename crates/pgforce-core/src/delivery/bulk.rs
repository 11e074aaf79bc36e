//! Large runs through the Bulk API 2.0: one ingest job carries a whole batch of one object and one operation
//! (upsert by the mapping's external id, update or delete by Salesforce id) as CSV — a handful of calls where
//! sObject Collections would take one per 200 records. The job is created, its id kept in Postgres with its changes
//! marked, its CSV uploaded and the job closed; then Salesforce runs it on its own while the worker goes on with
//! other changes (a record in the job waits for it). The worker looks at the job now and then; once it is over,
//! the changes are read back and planned again, and the job's results (successful, failed, unprocessed rows, in no
//! particular order) are matched to them by the key each row carries and become verdicts like those of a
//! collections call. A restarted worker does the same with the jobs it finds kept: nothing is sent twice. Inserts
//! never go this way: without a key, a row's result could not be told from another's.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::batch::{key_of, operation, Batch, Delivery, KeepJob, Verdict};
use super::plan::Plan;
use super::Table;
use crate::salesforce::{CallError, CallKind, Client};

/// A job's state, as Salesforce reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Open,
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl JobState {
    fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "Open" => JobState::Open,
            "UploadComplete" => JobState::UploadComplete,
            "InProgress" => JobState::InProgress,
            "JobComplete" => JobState::JobComplete,
            "Failed" => JobState::Failed,
            "Aborted" => JobState::Aborted,
            _ => return None,
        })
    }

    pub fn finished(self) -> bool {
        matches!(self, JobState::JobComplete | JobState::Failed | JobState::Aborted)
    }
}

/// A value as a CSV cell: NULL is `#N/A` (Bulk's way to clear a field), a relationship `{"ext__c": v}` its value.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "#N/A".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => o.values().next().map(cell).unwrap_or_default(),
        Value::Array(_) => value.to_string(),
    }
}

/// The CSV of a batch: one header of every field the records carry (a relationship by external id as
/// `account__r.external_id__c`), one row per item in item order; a field a record does not carry is left empty
/// (unchanged). A delete's rows hold the id only.
pub fn csv(batch: &Batch) -> Vec<u8> {
    let mut header: Vec<(String, Option<String>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let column = |field: &str, nested: Option<&str>| match nested {
        Some(n) => format!("{field}.{n}"),
        None => field.to_string(),
    };
    for (_, item) in &batch.items {
        let Value::Object(record) = item else { continue };
        for (field, value) in record.iter().filter(|(k, _)| *k != "attributes") {
            let nested = match value {
                Value::Object(o) => o.keys().find(|k| *k != "attributes").cloned(),
                _ => None,
            };
            if let std::collections::hash_map::Entry::Vacant(e) = index.entry(column(field, nested.as_deref())) {
                e.insert(header.len());
                header.push((field.clone(), nested));
            }
        }
    }
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    // Writing into a Vec cannot fail.
    if batch.kind == CallKind::Delete {
        let _ = w.write_record(["Id"]);
        for (_, item) in &batch.items {
            let _ = w.write_record([item.as_str().unwrap_or_default()]);
        }
    } else {
        let _ = w.write_record(header.iter().map(|(f, n)| column(f, n.as_deref())));
        for (_, item) in &batch.items {
            let record = item.as_object();
            let row = header.iter().map(|(field, _)| match record.and_then(|r| r.get(field)) {
                Some(v) => cell(v),
                None => String::new(),
            });
            let _ = w.write_record(row);
        }
    }
    w.into_inner().unwrap_or_default()
}

/// Creates an ingest job for `object`; returns its id.
pub fn create_job(client: &Client, object: &str, kind: &CallKind) -> Result<String, CallError> {
    let (operation, key) = operation(kind).ok_or_else(|| CallError::Rejected {
        status: 400,
        code: "INVALIDJOB".into(),
        message: "inserts do not go through the Bulk API".into(),
    })?;
    let mut spec = json!({"object": object, "operation": operation, "contentType": "CSV", "lineEnding": "LF"});
    if operation == "upsert" {
        spec["externalIdFieldName"] = json!(key);
    }
    let body = serde_json::to_vec(&spec).unwrap_or_default();
    let text = client.rest("POST", &jobs_path(client, None), Some(("application/json", &body)))?;
    let info: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    info["id"].as_str().map(str::to_string).ok_or_else(|| CallError::Failed {
        code: "UNEXPECTED_ANSWER".into(),
        message: "the new Bulk job has no id".into(),
    })
}

fn jobs_path(client: &Client, id: Option<&str>) -> String {
    let base = format!("/services/data/v{}/jobs/ingest", client.api_version());
    match id {
        Some(id) => format!("{base}/{id}"),
        None => base,
    }
}

/// Uploads the job's CSV and closes it: Salesforce queues it.
pub fn upload_and_close(client: &Client, id: &str, csv: &[u8]) -> Result<(), CallError> {
    client.rest("PUT", &format!("{}/batches", jobs_path(client, Some(id))), Some(("text/csv", csv)))?;
    let body = br#"{"state":"UploadComplete"}"#;
    client.rest("PATCH", &jobs_path(client, Some(id)), Some(("application/json", body)))?;
    Ok(())
}

/// Aborts a job (one never closed, or one a restarted worker found still open).
pub fn abort_job(client: &Client, id: &str) -> Result<(), CallError> {
    client.rest("PATCH", &jobs_path(client, Some(id)), Some(("application/json", br#"{"state":"Aborted"}"#)))?;
    Ok(())
}

/// The job's state and, when it failed, why.
pub fn state(client: &Client, id: &str) -> Result<(JobState, Option<String>), CallError> {
    let text = client.rest("GET", &jobs_path(client, Some(id)), None)?;
    let info: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let state = info["state"].as_str().and_then(JobState::parse).ok_or_else(|| CallError::Failed {
        code: "UNEXPECTED_ANSWER".into(),
        message: format!("Bulk job {id} has no known state"),
    })?;
    Ok((state, info["errorMessage"].as_str().map(str::to_string)))
}

/// How often a running job is looked at: soon at first, then less and less often (each look is an API call).
pub const FIRST_POLL: Duration = Duration::from_millis(500);
pub const MAX_POLL: Duration = Duration::from_secs(10);

/// The wait before the next look at a job last looked at after waiting `every`.
pub fn next_poll(every: Duration) -> Duration {
    (every * 3 / 2).clamp(FIRST_POLL, MAX_POLL)
}

/// Sends a batch as one Bulk job: creates it, has its id kept (with the items it carries), uploads the CSV and
/// closes it. Salesforce then runs it on its own: every item is `Queued` in it, and the worker reads the outcomes
/// when the job is over, while other changes go on. Before the upload nothing was applied: a failure then leaves
/// the records as a collections call's would (an outage: unsent at no cost).
pub fn send(client: &Client, batch: &Batch, keep_job: KeepJob<'_>, out: &mut Delivery) {
    if batch.bulk.is_none() || operation(&batch.kind).is_none() {
        return;
    }
    let everyone = |out: &mut Delivery, verdict: Verdict| {
        out.verdicts.extend(batch.items.iter().map(|(k, _)| (*k, verdict.clone())));
    };
    let fail = |out: &mut Delivery, e: CallError| match e {
        CallError::Rejected { code, message, .. } => {
            everyone(out, Verdict::Failed { code, message, transient: false, in_doubt: false })
        }
        CallError::Failed { code, message } => {
            everyone(out, Verdict::Failed { code, message, transient: true, in_doubt: false })
        }
        other => {
            everyone(out, Verdict::Unsent);
            out.trouble = Some(other);
        }
    };
    let Some(object) = &batch.bulk else { return };
    let id = match create_job(client, object, &batch.kind) {
        Ok(id) => id,
        Err(e) => return fail(out, e),
    };
    let keys: Vec<usize> = batch.items.iter().map(|(k, _)| *k).collect();
    if !keep_job(&id, &keys) {
        let _ = abort_job(client, &id);
        let message = "the Bulk job's id could not be kept in Postgres; sent again later".to_string();
        let verdict = Verdict::Failed { code: "BULK_JOB_NOT_KEPT".into(), message, transient: true, in_doubt: false };
        return everyone(out, verdict);
    }
    if let Err(e) = upload_and_close(client, &id, &csv(batch)) {
        // Not closed, the job never runs: it is aborted so it does not linger Open.
        let _ = abort_job(client, &id);
        return fail(out, e);
    }
    everyone(out, Verdict::Queued { job: id });
}

/// A finished job's result sets, each row as column → value.
#[derive(Debug, Default)]
pub struct Results {
    pub succeeded: Vec<HashMap<String, String>>,
    pub failed: Vec<HashMap<String, String>>,
    pub unprocessed: Vec<HashMap<String, String>>,
}

/// Reads a finished job's results (three calls).
pub fn results(client: &Client, id: &str) -> Result<Results, CallError> {
    let path = jobs_path(client, Some(id));
    Ok(Results {
        succeeded: rows(&client.rest("GET", &format!("{path}/successfulResults/"), None)?),
        failed: rows(&client.rest("GET", &format!("{path}/failedResults/"), None)?),
        unprocessed: rows(&client.rest("GET", &format!("{path}/unprocessedrecords/"), None)?),
    })
}

/// The verdicts of a finished job for the writes of its entries planned again (`plan`, read back from the log):
/// each write's record is matched to the results by the key it was sent with. A write the results do not name (its
/// key changed, or the job lost it) costs an attempt and is in doubt.
pub fn verdicts_for(
    plan: &mut Plan,
    tables: &HashMap<String, Table>,
    results: &Results,
    job_error: Option<&str>,
) -> Vec<(usize, Verdict)> {
    let mut verdicts = Vec::new();
    for batch in plan.items_by_call(tables) {
        match operation(&batch.kind) {
            Some((_, key_column)) => verdicts.extend(match_results(
                &batch,
                &key_column,
                &results.succeeded,
                &results.failed,
                &results.unprocessed,
                job_error,
            )),
            None => verdicts.extend(batch.items.iter().map(|(k, _)| (*k, no_result()))),
        }
    }
    verdicts
}

fn no_result() -> Verdict {
    Verdict::Failed {
        code: "BULK_NO_RESULT".into(),
        message: "the Bulk job's results do not name this record".into(),
        transient: true,
        in_doubt: true,
    }
}

/// Rows of one result set, each as column → value.
fn rows(text: &str) -> Vec<HashMap<String, String>> {
    let mut r = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(text.as_bytes());
    let header: Vec<String> = match r.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(_) => return Vec::new(),
    };
    r.records()
        .filter_map(Result::ok)
        .map(|rec| header.iter().cloned().zip(rec.iter().map(str::to_string)).collect())
        .collect()
}

/// Matches result rows to the batch's items by key (`key_column`). A row failed as `STATUS_CODE:message:fields`
/// fails its record as a collections call would; a row the job never processed (it failed) costs an attempt; an
/// item no result names is in doubt.
pub fn match_results(
    batch: &Batch,
    key_column: &str,
    succeeded: &[HashMap<String, String>],
    failed: &[HashMap<String, String>],
    unprocessed: &[HashMap<String, String>],
    job_error: Option<&str>,
) -> Vec<(usize, Verdict)> {
    let key = |row: &HashMap<String, String>| {
        row.iter().find(|(k, _)| k.eq_ignore_ascii_case(key_column)).map(|(_, v)| v.clone())
    };
    let mut by_key: HashMap<String, Verdict> = HashMap::new();
    for row in succeeded {
        let Some(k) = key(row) else { continue };
        let id = row.get("sf__Id").filter(|s| !s.is_empty()).cloned();
        let created = row.get("sf__Created").is_some_and(|c| c.eq_ignore_ascii_case("true"));
        by_key.insert(k, Verdict::Done { id, created });
    }
    for row in failed {
        let Some(k) = key(row) else { continue };
        let error = row.get("sf__Error").cloned().unwrap_or_default();
        let (code, message) = error.split_once(':').unwrap_or(("UNKNOWN", error.as_str()));
        // `message:fields`, the fields `--` when none.
        let message = message.strip_suffix(":--").unwrap_or(message).to_string();
        let verdict = if batch.kind == CallKind::Delete && code == "ENTITY_IS_DELETED" {
            Verdict::Done { id: None, created: false }
        } else {
            let transient = crate::retry::is_transient(code, &message);
            Verdict::Failed { code: code.to_string(), message, transient, in_doubt: false }
        };
        by_key.insert(k, verdict);
    }
    let why = job_error.unwrap_or("the Bulk job ended before processing it");
    for row in unprocessed {
        let Some(k) = key(row) else { continue };
        by_key.entry(k).or_insert_with(|| Verdict::Failed {
            code: "BULK_JOB_FAILED".into(),
            message: why.to_string(),
            transient: true,
            in_doubt: false,
        });
    }
    batch
        .items
        .iter()
        .map(|(i, item)| {
            let verdict = key_of(item, key_column).and_then(|k| by_key.remove(&k)).unwrap_or_else(no_result);
            (*i, verdict)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(items: Vec<Value>) -> Batch {
        Batch {
            kind: CallKind::Upsert { object: "Contact".into(), field: "External_Id__c".into() },
            items: items.into_iter().enumerate().collect(),
            bytes: 0,
            links: Vec::new(),
            bulk: Some("Contact".into()),
        }
    }

    #[test]
    fn records_become_csv_with_one_header() {
        let batch = upsert(vec![
            json!({"attributes": {"type": "Contact"}, "LastName": "O'Brien, \"Jr\"", "External_Id__c": "E1",
                   "Account__r": {"External_Id__c": "A1"}}),
            json!({"LastName": "Two", "External_Id__c": "E2", "Email": null, "Age__c": 42, "Active__c": true}),
        ]);
        let text = String::from_utf8(csv(&batch)).unwrap();
        assert_eq!(
            text,
            "LastName,External_Id__c,Account__r.External_Id__c,Email,Age__c,Active__c\n\
             \"O'Brien, \"\"Jr\"\"\",E1,A1,,,\n\
             Two,E2,,#N/A,42,true\n"
        );
        let delete = Batch {
            kind: CallKind::Delete,
            items: vec![(0, json!("003A")), (1, json!("003B"))],
            bytes: 0,
            links: Vec::new(),
            bulk: Some("Contact".into()),
        };
        assert_eq!(String::from_utf8(csv(&delete)).unwrap(), "Id\n003A\n003B\n");
    }

    #[test]
    fn results_are_matched_by_key_in_any_order() {
        let batch = upsert(vec![
            json!({"External_Id__c": "E1"}),
            json!({"External_Id__c": "E2"}),
            json!({"External_Id__c": "E3"}),
            json!({"External_Id__c": "E4"}),
        ]);
        let row = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let succeeded = vec![
            row(&[("sf__Id", "003B"), ("sf__Created", "false"), ("External_Id__c", "E2")]),
            row(&[("sf__Id", "003A"), ("sf__Created", "true"), ("External_Id__c", "E1")]),
        ];
        let failed = vec![row(&[
            ("sf__Id", ""),
            ("sf__Error", "FIELD_CUSTOM_VALIDATION_EXCEPTION:Email blocked: no:--"),
            ("External_Id__c", "E3"),
        ])];
        let v = match_results(&batch, "External_Id__c", &succeeded, &failed, &[], None);
        assert_eq!(v[0], (0, Verdict::Done { id: Some("003A".into()), created: true }));
        assert_eq!(v[1], (1, Verdict::Done { id: Some("003B".into()), created: false }));
        assert_eq!(
            v[2],
            (
                2,
                Verdict::Failed {
                    code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
                    message: "Email blocked: no".into(),
                    transient: false,
                    in_doubt: false
                }
            )
        );
        assert!(matches!(&v[3].1, Verdict::Failed { code, in_doubt: true, .. } if code == "BULK_NO_RESULT"));
    }
}
