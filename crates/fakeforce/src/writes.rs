//! Writes: sObject Collections (create, update, upsert by external id, delete; up to 200 records, chunked by type,
//! `allOrNone` with real rollback) and the single-record endpoints, both over the same record rules and fault rules.

use crate::errors::{ApiError, RecordError};
use crate::faults::{lock_error, Operation, RecordFault};
use crate::model::{FieldDef, FieldType};
use crate::org::State;
use crate::reply::Reply;
use crate::store::{Prepared, Txn};
use serde_json::{json, Map, Value};

pub const MAX_RECORDS: usize = 200;
const MAX_CHUNKS: usize = 10;

/// One record of a write request, checked and ready to apply.
pub struct Item {
    pub object: usize,
    pub prepared: Prepared,
    /// The target id of updates and deletes, or the error that makes the record fail before it is applied.
    pub target: Result<Option<String>, RecordError>,
}

#[derive(Clone, Copy)]
pub enum Kind<'a> {
    Create,
    Update,
    Upsert(&'a FieldDef),
    Delete,
}

impl Kind<'_> {
    pub fn operation(&self) -> Operation {
        match self {
            Kind::Create => Operation::Create,
            Kind::Update => Operation::Update,
            Kind::Upsert(_) => Operation::Upsert,
            Kind::Delete => Operation::Delete,
        }
    }
}

/// A record's outcome: `Ok((id, created))` or its error (with the id when one is known).
pub type Outcome = Result<(String, bool), (Option<String>, RecordError)>;

enum Applied {
    Done(Outcome),
    Lock(Option<String>),
}

/// Applies one record: fault rules first (they see the sent values, or the stored ones for deletes), then the
/// store's rules.
fn apply(state: &mut State, txn: &mut Txn, kind: Kind<'_>, item: &Item) -> Applied {
    let model = state.store.model.clone();
    let object_name = model.object_at(item.object).name.clone();
    let target = match &item.target {
        Ok(t) => t.clone(),
        Err(e) => return Applied::Done(Err((None, e.clone()))),
    };
    let fault = {
        let store = &state.store;
        let stored = target.as_ref().and_then(|id| store.get(id));
        let value_of = |field: &str| -> Option<Value> {
            match kind {
                Kind::Delete => stored.and_then(|r| r.get(field)),
                _ => item
                    .prepared
                    .value_of(&model, item.object, field)
                    .cloned()
                    .or_else(|| stored.and_then(|r| r.get(field))),
            }
        };
        // The borrow of the store ends before the fault rules (which need the state mutably) run.
        let snapshot: Vec<(String, Option<Value>)> =
            state.faults.rules.iter().filter_map(|r| r.field.clone()).map(|f| (f.clone(), value_of(&f))).collect();
        let lookup = move |field: &str| {
            snapshot.iter().find(|(f, _)| f.eq_ignore_ascii_case(field)).and_then(|(_, v)| v.clone())
        };
        state.faults.for_record(&object_name, kind.operation(), &lookup)
    };
    match fault {
        Some(RecordFault::LockChunk) => return Applied::Lock(target),
        Some(RecordFault::Error(e)) => return Applied::Done(Err((target, e))),
        None => {}
    }
    let result = match kind {
        Kind::Create => state.store.create(txn, item.object, &item.prepared).map(|id| (id, true)),
        Kind::Update => {
            let id = target.clone().unwrap_or_default();
            state.store.update(txn, item.object, &id, &item.prepared).map(|id| (id, false))
        }
        Kind::Upsert(field) if field.kind == FieldType::Id => match &target {
            Some(id) => state.store.update(txn, item.object, id, &item.prepared).map(|id| (id, false)),
            None => state.store.create(txn, item.object, &item.prepared).map(|id| (id, true)),
        },
        Kind::Upsert(field) => state.store.upsert(txn, item.object, field, &item.prepared),
        Kind::Delete => state.store.delete(txn, &target.clone().unwrap_or_default()).map(|id| (id, false)),
    };
    Applied::Done(result.map_err(|e| (target, e)))
}

/// Applies a list of items as one collection request: chunks of consecutive same-type records, a lock fault fails
/// (and rolls back) its whole chunk, `all_or_none` rolls back everything when anything failed.
pub fn apply_all(state: &mut State, kind: Kind<'_>, items: &[Item], all_or_none: bool) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(items.len());
    let mut whole = Txn::default();
    let mut start = 0;
    while start < items.len() {
        let end =
            items[start..].iter().position(|i| i.object != items[start].object).map_or(items.len(), |n| start + n);
        let mut chunk_txn = Txn::default();
        let mut chunk: Vec<Outcome> = Vec::with_capacity(end - start);
        let mut locked: Option<Option<String>> = None;
        for item in &items[start..end] {
            match apply(state, &mut chunk_txn, kind, item) {
                Applied::Done(o) => chunk.push(o),
                Applied::Lock(id) => {
                    locked = Some(id);
                    break;
                }
            }
        }
        if let Some(id) = locked {
            state.store.rollback(chunk_txn);
            let e = lock_error(&id.into_iter().collect::<Vec<_>>());
            outcomes.extend(items[start..end].iter().map(|i| Err((i.target.clone().ok().flatten(), e.clone()))));
        } else {
            whole.absorb(chunk_txn);
            outcomes.extend(chunk);
        }
        start = end;
    }
    if all_or_none && outcomes.iter().any(Result::is_err) {
        state.store.rollback(whole);
        let rolled = RecordError::rolled_back();
        for o in outcomes.iter_mut() {
            if let Ok((id, created)) = o {
                let echoed = if *created { None } else { Some(id.clone()) };
                *o = Err((echoed, rolled.clone()));
            }
        }
    }
    let op = match kind {
        Kind::Create => "create",
        Kind::Update => "update",
        Kind::Upsert(_) => "upsert",
        Kind::Delete => "delete",
    };
    *state.counters.records.entry(op.to_string()).or_default() += items.len() as u64;
    let failed = outcomes.iter().filter(|o| o.is_err()).count() as u64;
    state.counters.records_failed += failed;
    state.counters.records_succeeded += items.len() as u64 - failed;
    outcomes
}

fn result_json(o: &Outcome, upsert: bool) -> Value {
    match o {
        Ok((id, created)) if upsert => json!({"id": id, "success": true, "errors": [], "created": created}),
        Ok((id, _)) => json!({"id": id, "success": true, "errors": []}),
        Err((Some(id), e)) if e.status_code == "ALL_OR_NONE_OPERATION_ROLLED_BACK" => {
            json!({"id": id, "success": false, "errors": [e.to_json()]})
        }
        Err((_, e)) => json!({"success": false, "errors": [e.to_json()]}),
    }
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::json_parse(format!("Unexpected character in request body: {e}")))?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::json_parse("Cannot deserialize instance of the request from START_ARRAY value")),
    }
}

fn collection_records(body: &Map<String, Value>) -> Result<(&Vec<Value>, bool), ApiError> {
    let all_or_none = match body.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::json_parse(format!("Cannot deserialize instance of boolean from {other}")))
        }
    };
    let records = match body.get("records") {
        Some(Value::Array(r)) => r,
        _ => return Err(ApiError::new(400, "INVALID_FIELD", "No records were provided in the request")),
    };
    check_count(records.len())?;
    Ok((records, all_or_none))
}

fn check_count(n: usize) -> Result<(), ApiError> {
    if n > MAX_RECORDS {
        return Err(ApiError::new(
            400,
            "EXCEEDED_ID_LIMIT",
            format!("record limit reached. cannot submit more than {MAX_RECORDS} records into this call"),
        ));
    }
    Ok(())
}

fn record_type(record: &Map<String, Value>) -> Option<&str> {
    record.get("attributes")?.get("type")?.as_str()
}

/// Turns the `records` array into items, refusing the request as Salesforce does for records it cannot parse.
fn items_from(
    state: &State,
    records: &[Value],
    kind: Kind<'_>,
    upsert_object: Option<usize>,
) -> Result<Vec<Item>, ApiError> {
    let mut items = Vec::with_capacity(records.len());
    for r in records {
        let Value::Object(record) = r else {
            return Err(ApiError::json_parse("Cannot deserialize instance of SObject from a non-object record"));
        };
        let object = match (record_type(record), upsert_object) {
            (None, _) => return Err(ApiError::new(400, "INVALID_TYPE", "Must send a concrete entity type.")),
            (Some(t), expected) => {
                let o = state.store.model.object(t).ok_or_else(|| {
                    ApiError::new(400, "INVALID_TYPE", format!("sObject type '{t}' is not supported."))
                })?;
                if expected.is_some_and(|e| e != o.index) {
                    return Err(ApiError::new(
                        400,
                        "INVALID_TYPE",
                        format!("Record type {t} does not match the upsert's sObject type"),
                    ));
                }
                o.index
            }
        };
        let prepared = state.store.prepare(object, record)?;
        let target = match kind {
            Kind::Create => Ok(None),
            Kind::Update => match &prepared.id {
                None => Err(RecordError::new("MISSING_ARGUMENT", "Id not specified in an update call", &[])),
                Some(raw) => state.store.object_id(object, raw).map(Some),
            },
            Kind::Upsert(field) if field.kind == FieldType::Id => match &prepared.id {
                None => Ok(None),
                Some(raw) => state.store.object_id(object, raw).map(Some),
            },
            Kind::Upsert(_) => match &prepared.id {
                Some(_) => Err(RecordError::new(
                    "INVALID_FIELD",
                    "Id is not allowed in an upsert by external id: the external id field identifies the record",
                    &["Id"],
                )),
                None => Ok(None),
            },
            Kind::Delete => Ok(None),
        };
        items.push(Item { object, prepared, target });
    }
    let chunks = 1 + items.windows(2).filter(|w| w[0].object != w[1].object).count();
    if !items.is_empty() && chunks > MAX_CHUNKS {
        return Err(ApiError::new(
            400,
            "INVALID_BATCH_REQUEST",
            "Cannot have more than 10 chunks in a single operation. Please rearrange the data to reduce chunking.",
        ));
    }
    Ok(items)
}

/// Marks every record whose external id appears more than once in the same upsert request.
fn flag_repeated_external_ids(state: &State, items: &mut [Item], field: &FieldDef) {
    let model = state.store.model.clone();
    let keys: Vec<Option<String>> = items
        .iter()
        .map(|i| i.prepared.value_of(&model, i.object, &field.name).and_then(|v| v.as_str().map(str::to_lowercase)))
        .collect();
    for (n, item) in items.iter_mut().enumerate() {
        if let Some(k) = &keys[n] {
            if keys.iter().filter(|o| o.as_ref() == Some(k)).count() > 1 {
                item.target = Err(RecordError::new(
                    "DUPLICATE_EXTERNAL_ID",
                    format!("Duplicate external id specified: {k}"),
                    &[&field.name],
                ));
            }
        }
    }
}

/// `POST /composite/sobjects` (create) and `PATCH /composite/sobjects` (update).
pub fn collection_write(state: &mut State, kind: Kind<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    let body = parse_body(body)?;
    let (records, all_or_none) = collection_records(&body)?;
    let items = items_from(state, records, kind, None)?;
    let outcomes = apply_all(state, kind, &items, all_or_none);
    Ok(Reply::json(200, &Value::Array(outcomes.iter().map(|o| result_json(o, false)).collect())))
}

/// Resolves `{SObject}/{ExternalIdField}` of upserts: 404 for an unknown object, 400 for a field that is not an
/// external id.
pub fn upsert_target(state: &State, object: &str, field: &str) -> Result<(usize, FieldDef), ApiError> {
    let model = &state.store.model;
    let o = model.object(object).ok_or_else(ApiError::not_found)?;
    if field.eq_ignore_ascii_case("id") {
        let id_field =
            FieldDef { name: "Id".into(), kind: FieldType::Id, ..model.object_at(o.index).fields[0].clone() };
        return Ok((o.index, id_field));
    }
    match model.field(o.index, field) {
        Some(f) if f.external_id => Ok((o.index, f.clone())),
        _ => Err(ApiError::new(
            400,
            "INVALID_FIELD",
            format!("Field name provided, {field} is not an External ID or indexed field for {}", o.def.name),
        )),
    }
}

/// `PATCH /composite/sobjects/{SObject}/{ExternalIdField}`.
pub fn collection_upsert(state: &mut State, object: &str, field: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let (object, ext) = upsert_target(state, object, field)?;
    let body = parse_body(body)?;
    let (records, all_or_none) = collection_records(&body)?;
    let kind = Kind::Upsert(&ext);
    let mut items = items_from(state, records, kind, Some(object))?;
    if ext.kind != FieldType::Id {
        flag_repeated_external_ids(state, &mut items, &ext);
    }
    let outcomes = apply_all(state, kind, &items, all_or_none);
    Ok(Reply::json(200, &Value::Array(outcomes.iter().map(|o| result_json(o, true)).collect())))
}

/// `DELETE /composite/sobjects?ids=…&allOrNone=…`.
pub fn collection_delete(state: &mut State, query: &[(String, String)]) -> Result<Reply, ApiError> {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let ids: Vec<&str> = param("ids").unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if ids.is_empty() {
        return Err(ApiError::new(400, "MISSING_ARGUMENT", "The ids parameter is required"));
    }
    check_count(ids.len())?;
    let all_or_none = param("allOrNone").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let items: Vec<Item> = ids
        .iter()
        .map(|raw| {
            let found = crate::ids::normalize(raw)
                .and_then(|id| state.store.model.object_by_prefix(&id[..3]).map(|o| (id, o.index)));
            match found {
                Some((id, object)) => Item { object, prepared: Prepared::default(), target: Ok(Some(id)) },
                None => Item {
                    object: usize::MAX,
                    prepared: Prepared::default(),
                    target: Err(RecordError::new("MALFORMED_ID", format!("malformed id {raw}"), &[])),
                },
            }
        })
        .collect();
    // Malformed ids have no object; give them their neighbour's so they do not split chunks.
    let mut items = items;
    let first_object = items.iter().map(|i| i.object).find(|o| *o != usize::MAX).unwrap_or(0);
    let mut last = first_object;
    for i in items.iter_mut() {
        if i.object == usize::MAX {
            i.object = last;
        }
        last = i.object;
    }
    let outcomes = apply_all(state, Kind::Delete, &items, all_or_none);
    Ok(Reply::json(200, &Value::Array(outcomes.iter().map(|o| result_json(o, false)).collect())))
}

fn single_item(
    state: &State,
    object: usize,
    body: &[u8],
    target: Result<Option<String>, RecordError>,
) -> Result<Item, ApiError> {
    let body = parse_body(body)?;
    let prepared = state.store.prepare(object, &body)?;
    Ok(Item { object, prepared, target })
}

fn single_error(status: u16, e: &RecordError) -> Reply {
    Reply::json(status, &e.to_envelope())
}

/// `POST /sobjects/{SObject}/`: 201 with `{id, errors, success}` and a Location header.
pub fn single_create(state: &mut State, version: &str, object: usize, body: &[u8]) -> Result<Reply, ApiError> {
    let item = single_item(state, object, body, Ok(None))?;
    if item.prepared.id.is_some() {
        return Err(ApiError::new(400, "INVALID_FIELD", "The Id field should not be specified in the sobject data."));
    }
    match apply_all(state, Kind::Create, std::slice::from_ref(&item), false).remove(0) {
        Ok((id, _)) => {
            let name = state.store.model.object_at(object).name.clone();
            Ok(Reply::json(201, &json!({"id": id, "errors": [], "success": true}))
                .with_header("Location", format!("/services/data/{version}/sobjects/{name}/{id}")))
        }
        Err((_, e)) => Ok(single_error(400, &e)),
    }
}

/// `PATCH /sobjects/{SObject}/{id}`: 204.
pub fn single_update(state: &mut State, object: usize, raw_id: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let id = existing_id(state, object, raw_id)?;
    let item = single_item(state, object, body, Ok(Some(id)))?;
    match apply_all(state, Kind::Update, std::slice::from_ref(&item), false).remove(0) {
        Ok(_) => Ok(Reply::empty(204)),
        Err((_, e)) => Ok(single_error(400, &e)),
    }
}

/// `PATCH /sobjects/{SObject}/{ExternalIdField}/{value}`: 201 created, 200 updated (204 before v46), 300 when the
/// value matches several records.
pub fn single_upsert(
    state: &mut State,
    version: &str,
    object_name: &str,
    field: &str,
    value: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let (object, ext) = match upsert_target(state, object_name, field) {
        Ok(t) => t,
        Err(e) if e.status == 400 => return Err(ApiError::not_found()),
        Err(e) => return Err(e),
    };
    if ext.kind == FieldType::Id {
        return single_update(state, object, value, body);
    }
    let mut map = parse_body(body)?;
    map.insert(ext.name.clone(), Value::String(value.to_string()));
    let matches = state.store.find_by(object, &ext.name, value);
    let name = state.store.model.object_at(object).name.clone();
    if matches.len() > 1 {
        let urls: Vec<String> =
            matches.iter().map(|id| format!("/services/data/{version}/sobjects/{name}/{id}")).collect();
        return Ok(Reply::json(300, &json!(urls)));
    }
    let prepared = state.store.prepare(object, &map)?;
    let item = Item { object, prepared, target: Ok(None) };
    match apply_all(state, Kind::Upsert(&ext), std::slice::from_ref(&item), false).remove(0) {
        Ok((id, true)) => Ok(Reply::json(201, &json!({"id": id, "success": true, "errors": [], "created": true}))
            .with_header("Location", format!("/services/data/{version}/sobjects/{name}/{id}"))),
        Ok((id, false)) if version_number(version) >= 46.0 => {
            Ok(Reply::json(200, &json!({"id": id, "success": true, "errors": [], "created": false})))
        }
        Ok(_) => Ok(Reply::empty(204)),
        Err((_, e)) => Ok(single_error(400, &e)),
    }
}

/// `DELETE /sobjects/{SObject}/{id}`: 204; a deleted record answers 404 `ENTITY_IS_DELETED`.
pub fn single_delete(state: &mut State, object: usize, raw_id: &str) -> Result<Reply, ApiError> {
    let id = existing_id(state, object, raw_id)?;
    let item = Item { object, prepared: Prepared::default(), target: Ok(Some(id)) };
    match apply_all(state, Kind::Delete, std::slice::from_ref(&item), false).remove(0) {
        Ok(_) => Ok(Reply::empty(204)),
        Err((_, e)) if e.status_code == "ENTITY_IS_DELETED" => Ok(single_error(404, &e)),
        Err((_, e)) => Ok(single_error(400, &e)),
    }
}

/// The record an `{id}` path segment names: 404 when it is not an id of this object or does not exist.
pub fn existing_id(state: &State, object: usize, raw: &str) -> Result<String, ApiError> {
    let id = state.store.object_id(object, raw).map_err(|_| {
        ApiError::new(
            404,
            "NOT_FOUND",
            format!("Provided external ID field does not exist or is not accessible: {raw}"),
        )
    })?;
    match state.store.get(&id) {
        None => Err(ApiError::not_found()),
        Some(r) if r.deleted => Err(ApiError::new(404, "ENTITY_IS_DELETED", "entity is deleted").with_fields(&[])),
        Some(_) => Ok(id),
    }
}

pub fn version_number(version: &str) -> f64 {
    version.trim_start_matches('v').parse().unwrap_or(0.0)
}
