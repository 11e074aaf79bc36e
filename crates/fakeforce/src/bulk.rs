//! Bulk API 2.0 ingest: jobs that take one CSV upload, are closed, wait their turn (so clients must poll), process
//! every row with the same record rules as the REST calls, and serve successful, failed and unprocessed rows as CSV
//! in an order that is not the upload order.

use crate::errors::ApiError;
use crate::jobs::{Job, JobState};
use crate::org::State;
use crate::reply::Reply;
use crate::store::Prepared;
use crate::values;
use crate::writes::{apply_all, upsert_target, Item, Kind};
use rand::seq::SliceRandom;
use serde_json::{json, Map, Value};

const DELIMITERS: [(&str, u8); 6] =
    [("COMMA", b','), ("BACKQUOTE", b'`'), ("CARET", b'^'), ("PIPE", b'|'), ("SEMICOLON", b';'), ("TAB", b'\t')];
const OPERATIONS: [&str; 5] = ["insert", "update", "upsert", "delete", "hardDelete"];

fn invalid_job(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "INVALIDJOB", message)
}

fn job_info(job: &Job, detail: bool) -> Value {
    let mut v = json!({
        "id": job.id,
        "operation": job.operation,
        "object": job.object,
        "createdById": job.created_by,
        "createdDate": job.created_date,
        "systemModstamp": job.modstamp,
        "state": job.state.name(),
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": values_version(&job.api_version),
        "jobType": "V2Ingest",
        "contentUrl": format!("services/data/{}/jobs/ingest/{}/batches", job.api_version, job.id),
        "lineEnding": job.line_ending,
        "columnDelimiter": job.delimiter.0,
    });
    if let Some(ext) = &job.external_id_field {
        v["externalIdFieldName"] = json!(ext);
    }
    if detail {
        v["numberRecordsProcessed"] = json!(job.processed);
        v["numberRecordsFailed"] = json!(job.failed);
        v["retries"] = json!(0);
        v["totalProcessingTime"] = json!(job.processing_ms);
        v["apiActiveProcessingTime"] = json!(job.processing_ms);
        v["apexProcessingTime"] = json!(0);
        if let Some(m) = &job.error_message {
            v["errorMessage"] = json!(m);
        }
    }
    v
}

fn values_version(v: &str) -> f64 {
    crate::writes::version_number(v)
}

fn job_mut<'s>(state: &'s mut State, id: &str) -> Result<&'s mut Job, ApiError> {
    state.jobs.get_mut(id).ok_or_else(ApiError::not_found)
}

/// `POST /jobs/ingest`.
pub fn create(state: &mut State, version: &str, created_by: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let spec: Map<String, Value> = serde_json::from_slice(body).map_err(|e| ApiError::json_parse(e.to_string()))?;
    let text = |k: &str| spec.get(k).and_then(Value::as_str).map(str::to_string);
    let object_name = text("object").ok_or_else(|| invalid_job("InvalidJob : Object is required"))?;
    let object = state
        .store
        .model
        .object(&object_name)
        .ok_or_else(|| invalid_job(format!("InvalidJob : Invalid object: {object_name}")))?;
    let object_name = object.def.name.clone();
    let operation = text("operation")
        .filter(|o| OPERATIONS.contains(&o.as_str()))
        .ok_or_else(|| invalid_job("InvalidJob : Invalid operation"))?;
    let external_id_field = text("externalIdFieldName");
    if operation == "upsert" {
        let field = external_id_field.clone().ok_or_else(|| {
            invalid_job(format!(
                "InvalidJob : External ID was blank for {object_name}. An External ID must be specified for upsert."
            ))
        })?;
        upsert_target(state, &object_name, &field).map_err(|e| invalid_job(format!("InvalidJob : {}", e.message)))?;
    }
    if text("contentType").is_some_and(|c| c != "CSV") {
        return Err(invalid_job("InvalidJob : Unsupported content type; only CSV is supported"));
    }
    let delimiter_name = text("columnDelimiter").unwrap_or_else(|| "COMMA".into());
    let delimiter = DELIMITERS
        .iter()
        .find(|(n, _)| *n == delimiter_name)
        .map(|(n, b)| (n.to_string(), *b))
        .ok_or_else(|| invalid_job(format!("InvalidJob : Invalid column delimiter: {delimiter_name}")))?;
    let line_ending = text("lineEnding").unwrap_or_else(|| "LF".into());
    if line_ending != "LF" && line_ending != "CRLF" {
        return Err(invalid_job(format!("InvalidJob : Invalid line ending: {line_ending}")));
    }
    let serial = state.next_serial();
    let id15 = format!("750Dn{serial:010}");
    let id = format!("{id15}{}", crate::ids::checksum(&id15));
    let now = values::now_datetime();
    let job = Job {
        id: id.clone(),
        object: object_name,
        operation,
        external_id_field,
        delimiter,
        line_ending,
        api_version: version.to_string(),
        state: JobState::Open,
        created_by: created_by.to_string(),
        created_date: now.clone(),
        modstamp: now,
        data: None,
        header: Vec::new(),
        successes: Vec::new(),
        failures: Vec::new(),
        unprocessed: Vec::new(),
        processed: 0,
        failed: 0,
        error_message: None,
        processing_ms: 0,
    };
    let info = job_info(&job, false);
    state.jobs.insert(id, job);
    Ok(Reply::json(200, &info))
}

/// `PUT /jobs/ingest/{id}/batches`: 201, once per job.
pub fn upload(state: &mut State, id: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let job = job_mut(state, id)?;
    if job.state != JobState::Open {
        return Err(ApiError::new(
            409,
            "INVALIDJOBSTATE",
            format!("Job state is {}; data can be uploaded only while it is Open", job.state.name()),
        ));
    }
    if job.data.is_some() {
        return Err(ApiError::new(
            400,
            "API_ERROR",
            format!("Found multiple contents for job: <{id}>, please 'Close' / 'Abort' / 'Delete' the current Job then create a new Job and make sure you only do 'PUT' once on a given Job."),
        ));
    }
    job.data = Some(body.to_vec());
    Ok(Reply::empty(201))
}

/// `PATCH /jobs/ingest/{id}` with `{"state": "UploadComplete" | "Aborted"}`. Returns whether processing must start.
pub fn change_state(state: &mut State, id: &str, body: &[u8]) -> Result<(Reply, bool), ApiError> {
    let spec: Map<String, Value> = serde_json::from_slice(body).map_err(|e| ApiError::json_parse(e.to_string()))?;
    let wanted = spec.get("state").and_then(Value::as_str).unwrap_or_default().to_string();
    let job = job_mut(state, id)?;
    let start = match (job.state, wanted.as_str()) {
        (JobState::Open, "UploadComplete") => {
            job.state = JobState::UploadComplete;
            true
        }
        (s, "Aborted") if !s.terminal() => {
            job.state = JobState::Aborted;
            if let Some(data) = job.data.take() {
                let (header, rows) = read_csv(job.delimiter.1, &data).unwrap_or_default();
                job.header = header;
                job.unprocessed = rows;
            }
            false
        }
        (s, w) => {
            return Err(ApiError::new(
                400,
                "INVALIDJOBSTATE",
                format!("Cannot change the state of a job from {} to {w}", s.name()),
            ));
        }
    };
    job.modstamp = values::now_datetime();
    Ok((Reply::json(200, &job_info(job, false)), start))
}

pub fn info(state: &mut State, id: &str) -> Result<Reply, ApiError> {
    Ok(Reply::json(200, &job_info(job_mut(state, id)?, true)))
}

pub fn list(state: &State) -> Reply {
    let records: Vec<Value> = state.jobs.values().map(|j| job_info(j, false)).collect();
    Reply::json(200, &json!({"done": true, "records": records, "nextRecordsUrl": null}))
}

/// `DELETE /jobs/ingest/{id}`: only jobs that are finished (or aborted) can be deleted.
pub fn delete(state: &mut State, id: &str) -> Result<Reply, ApiError> {
    let job = job_mut(state, id)?;
    if !job.terminal_or_open_empty() {
        return Err(ApiError::new(
            400,
            "INVALIDJOBSTATE",
            format!("Cannot delete a job in state {}", job.state.name()),
        ));
    }
    state.jobs.remove(id);
    Ok(Reply::empty(204))
}

/// `GET …/successfulResults/`, `…/failedResults/`, `…/unprocessedrecords/`.
pub fn results(state: &mut State, id: &str, which: &str) -> Result<Reply, ApiError> {
    let job = job_mut(state, id)?;
    let (lead, rows): (&[&str], &Vec<Vec<String>>) = match which {
        "successfulResults" => (&["sf__Id", "sf__Created"], &job.successes),
        "failedResults" => (&["sf__Id", "sf__Error"], &job.failures),
        _ => (&[], &job.unprocessed),
    };
    if which != "unprocessedrecords" && !job.state.terminal() {
        return Err(ApiError::new(400, "INVALIDJOBSTATE", "Results are available once the job is complete"));
    }
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let header: Vec<&str> = lead.iter().copied().chain(job.header.iter().map(String::as_str)).collect();
    if !job.header.is_empty() {
        w.write_record(&header).map_err(|e| ApiError::new(500, "UNKNOWN_EXCEPTION", e.to_string()))?;
    }
    for row in rows {
        w.write_record(row).map_err(|e| ApiError::new(500, "UNKNOWN_EXCEPTION", e.to_string()))?;
    }
    Ok(Reply::csv(w.into_inner().unwrap_or_default()))
}

fn read_csv(delimiter: u8, data: &[u8]) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut r = csv::ReaderBuilder::new().delimiter(delimiter).has_headers(true).from_reader(data);
    let header: Vec<String> = r.headers().map_err(|e| e.to_string())?.iter().map(str::to_string).collect();
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| format!("ClientInputError : {e}"))?;
        rows.push(rec.iter().map(str::to_string).collect());
    }
    Ok((header, rows))
}

/// Marks a closed job `InProgress` (called by the server after the first half of the processing delay).
pub fn start(state: &mut State, id: &str) -> bool {
    match state.jobs.get_mut(id) {
        Some(job) if job.state == JobState::UploadComplete => {
            job.state = JobState::InProgress;
            job.modstamp = values::now_datetime();
            true
        }
        _ => false,
    }
}

/// Processes every row of an `InProgress` job and completes it.
pub fn process(state: &mut State, id: &str) {
    let started = std::time::Instant::now();
    let Some(job) = state.jobs.get_mut(id).filter(|j| j.state == JobState::InProgress) else { return };
    let data = job.data.take().unwrap_or_default();
    let (delimiter, object_name, operation, ext) =
        (job.delimiter.1, job.object.clone(), job.operation.clone(), job.external_id_field.clone());
    let parsed = read_csv(delimiter, &data);
    let (header, rows) = match parsed {
        Ok(p) => p,
        Err(message) => {
            job.state = JobState::Failed;
            job.error_message = Some(message);
            return;
        }
    };
    job.header = header.clone();
    let model = state.store.model.clone();
    let Some(object) = model.object(&object_name).map(|o| o.index) else { return };
    // Column names are checked once: an unknown one fails the whole job, as Salesforce does.
    let mut bodies = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut body = Map::new();
        for (col, value) in header.iter().zip(row) {
            if value.is_empty() {
                continue;
            }
            let v = if value == "#N/A" { Value::Null } else { Value::String(value.clone()) };
            match col.split_once('.') {
                Some((rel, field)) => {
                    body.insert(rel.to_string(), json!({ field: v }));
                }
                None => {
                    body.insert(col.clone(), v);
                }
            }
        }
        bodies.push(body);
    }
    let ext_field = ext.as_deref().and_then(|f| upsert_target(state, &object_name, f).ok()).map(|(_, f)| f);
    let kind = match operation.as_str() {
        "insert" => Kind::Create,
        "update" => Kind::Update,
        "upsert" => match &ext_field {
            Some(f) => Kind::Upsert(f),
            None => return,
        },
        _ => Kind::Delete,
    };
    let mut items = Vec::with_capacity(bodies.len());
    for body in &bodies {
        let prepared = match kind {
            Kind::Delete => {
                let mut p = Prepared::default();
                p.id = body
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("id"))
                    .and_then(|(_, v)| v.as_str().map(str::to_string));
                Ok(p)
            }
            _ => state.store.prepare(object, body),
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                let job = state.jobs.get_mut(id);
                if let Some(job) = job {
                    job.state = JobState::Failed;
                    job.error_message = Some(format!("InvalidBatch : {}", e.message));
                    job.unprocessed = rows;
                }
                return;
            }
        };
        let target = match (kind, &prepared.id) {
            (Kind::Create, _) | (Kind::Upsert(_), None) => Ok(None),
            (_, None) => {
                Err(crate::errors::RecordError::new("MISSING_ARGUMENT", "Id not specified in an update call", &[]))
            }
            (_, Some(raw)) => state.store.object_id(object, raw).map(Some),
        };
        items.push(Item { object, prepared, target });
    }
    // Each row stands alone: Bulk jobs never roll back rows that succeeded.
    let outcomes: Vec<_> = items.chunks(200).flat_map(|chunk| apply_all(state, kind, chunk, false)).collect();
    let mut successes = Vec::new();
    let mut failures = Vec::new();
    for (outcome, row) in outcomes.into_iter().zip(rows) {
        match outcome {
            Ok((sf_id, created)) => successes.push([vec![sf_id, created.to_string()], row].concat()),
            Err((sf_id, e)) => failures.push([vec![sf_id.unwrap_or_default(), e.to_bulk()], row].concat()),
        }
    }
    successes.shuffle(state.faults.rng());
    failures.shuffle(state.faults.rng());
    if let Some(job) = state.jobs.get_mut(id) {
        job.processed = (successes.len() + failures.len()) as u64;
        job.failed = failures.len() as u64;
        job.successes = successes;
        job.failures = failures;
        job.state = JobState::JobComplete;
        job.processing_ms = started.elapsed().as_millis() as u64;
        job.modstamp = values::now_datetime();
    }
}
