//! The HTTP side: accepting connections (and refusing them during an outage), routing Salesforce's URIs, sessions,
//! the API budget and its `Sforce-Limit-Info` header, request-level faults, and the admin endpoints under
//! `/fakeforce/`.

use crate::errors::ApiError;
use crate::faults::{FaultRule, Operation};
use crate::org::{Org, Outage, OutageMode};
use crate::reply::Reply;
use crate::{bulk, oauth, soql, writes};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket};

/// Returned by the request handler to close the connection without answering (outages, injected drops).
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DropConnection {}

pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves until `shutdown` resolves. During a `refuse` outage the listening socket is closed, so clients get
/// "connection refused", and it is bound again on the same port when the outage ends.
pub async fn serve(org: Arc<Org>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    tokio::pin!(shutdown);
    let mut listener = Some(listener);
    loop {
        let refusing_until = {
            let mut st = org.lock();
            match st.outage_active() {
                Some(OutageMode::Refuse) => st.outage.as_ref().map(|o| o.until),
                _ => None,
            }
        };
        if let Some(until) = refusing_until {
            listener = None;
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = org.wake.notified() => {}
                _ = &mut shutdown => return,
            }
            continue;
        }
        let active = match listener.take() {
            Some(l) => l,
            None => match bind(addr) {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        tokio::select! {
            accepted = active.accept() => {
                if let Ok((stream, _)) = accepted {
                    let _ = stream.set_nodelay(true);
                    let org = org.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| handle(org.clone(), req));
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service).await;
                    });
                }
                listener = Some(active);
            }
            _ = org.wake.notified() => { listener = Some(active); }
            _ = &mut shutdown => return,
        }
    }
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(reply.status);
    if let Some(ct) = reply.content_type {
        b = b.header("Content-Type", ct);
    }
    for (k, v) in &reply.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(Bytes::from(reply.body))).unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

struct Call {
    method: hyper::Method,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

async fn handle(org: Arc<Org>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, DropConnection> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = match Limited::new(body, org.config.max_request_bytes).collect().await {
        Ok(b) => {
            let b = b.to_bytes();
            let mut st = org.lock();
            st.counters.largest_request_bytes = st.counters.largest_request_bytes.max(b.len() as u64);
            b
        }
        Err(_) => {
            *org.lock().counters.by_status.entry(413).or_default() += 1;
            let e = ApiError::new(
                413,
                "EXCEEDED_MAX_SIZE_REQUEST",
                format!("Request body exceeds {} bytes", org.config.max_request_bytes),
            );
            return Ok(to_response(Reply::error(&e)));
        }
    };
    let path = parts.uri.path();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let query: Vec<(String, String)> =
        parts.uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let call = Call {
        method: parts.method.clone(),
        segments,
        query,
        authorization: header("authorization"),
        content_type: header("content-type"),
        body,
    };

    if call.segments.first().map(String::as_str) == Some("fakeforce") {
        return Ok(to_response(admin(&org, &call)));
    }
    let outage = org.lock().outage_active();
    match outage {
        Some(OutageMode::Refuse) => {
            org.lock().counters.refused_connections += 1;
            return Err(DropConnection);
        }
        Some(OutageMode::Unavailable) => {
            let e = ApiError::new(
                503,
                "SERVER_UNAVAILABLE",
                "Server temporarily unavailable for maintenance. Please try again later.",
            );
            return Ok(counted(&org, "other", Reply::error(&e)));
        }
        Some(OutageMode::Hang) => {
            // Accepted, never answered: the connection is closed when the outage ends.
            let until = org.lock().outage.as_ref().map(|o| o.until);
            if let Some(until) = until {
                tokio::time::sleep_until(until.into()).await;
            }
            return Err(dropped(&org));
        }
        None => {}
    }
    let seg: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    match seg.as_slice() {
        ["services", "oauth2", "token"] if call.method == hyper::Method::POST => {
            let faults = org.lock().faults.for_request(None, Operation::Token, &[]);
            tokio::time::sleep(faults.delay).await;
            if faults.drop_before_commit {
                return Err(dropped(&org));
            }
            if let Some(e) = faults.error {
                return Ok(counted(&org, "token", Reply::error(&e)));
            }
            let reply = oauth::token(&org, call.content_type.as_deref(), call.authorization.as_deref(), &call.body);
            if faults.drop_after_commit {
                return Err(dropped(&org));
            }
            Ok(counted(&org, "token", reply))
        }
        ["services", "data"] => {
            let versions: Vec<Value> = (42..=62).map(|v| json!({"label": format!("v{v}.0"), "url": format!("/services/data/v{v}.0"), "version": format!("{v}.0")})).collect();
            Ok(counted(&org, "other", Reply::json(200, &Value::Array(versions))))
        }
        ["services", "data", version, rest @ ..] => data_call(org.clone(), &call, version, rest).await,
        _ => Ok(counted(&org, "other", Reply::error(&ApiError::not_found()))),
    }
}

fn dropped(org: &Org) -> DropConnection {
    let mut st = org.lock();
    st.counters.requests += 1;
    st.counters.dropped_connections += 1;
    DropConnection
}

fn counted(org: &Org, kind: &str, reply: Reply) -> Response<Full<Bytes>> {
    let mut st = org.lock();
    st.counters.requests += 1;
    *st.counters.by_kind.entry(kind.to_string()).or_default() += 1;
    *st.counters.by_status.entry(reply.status).or_default() += 1;
    st.counters.faults_fired = st.faults.fired;
    to_response(reply)
}

fn valid_version(v: &str) -> bool {
    v.strip_prefix('v').and_then(|n| n.split_once('.')).is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
    })
}

/// What a data call does, for counters and fault scoping.
fn classify(method: &hyper::Method, rest: &[&str]) -> (&'static str, Operation, Option<String>) {
    use hyper::Method as M;
    let obj = |s: &str| Some(s.to_string());
    match (method, rest) {
        (_, ["limits"]) => ("limits", Operation::Limits, None),
        (_, ["query" | "queryAll", ..]) => ("query", Operation::Query, None),
        (&M::POST, ["composite"]) => ("composite", Operation::Query, None),
        (&M::POST, ["composite", "sobjects"]) => ("create", Operation::Create, None),
        (&M::PATCH, ["composite", "sobjects"]) => ("update", Operation::Update, None),
        (&M::DELETE, ["composite", "sobjects"]) => ("delete", Operation::Delete, None),
        (&M::PATCH, ["composite", "sobjects", o, _]) => ("upsert", Operation::Upsert, obj(o)),
        (&M::POST, ["sobjects", o]) => ("create", Operation::Create, obj(o)),
        (&M::PATCH, ["sobjects", o, _]) => ("update", Operation::Update, obj(o)),
        (&M::PATCH, ["sobjects", o, _, _]) => ("upsert", Operation::Upsert, obj(o)),
        (&M::DELETE, ["sobjects", o, _]) => ("delete", Operation::Delete, obj(o)),
        (_, ["jobs", ..]) => ("bulk", Operation::Bulk, None),
        (_, ["sobjects", ..]) => ("read", Operation::Read, rest.get(1).map(|s| s.to_string())),
        _ => ("other", Operation::Read, None),
    }
}

async fn data_call(
    org: Arc<Org>,
    call: &Call,
    version: &str,
    rest: &[&str],
) -> Result<Response<Full<Bytes>>, DropConnection> {
    if !valid_version(version) {
        return Ok(counted(&org, "other", Reply::error(&ApiError::not_found())));
    }
    let (kind, op, object) = classify(&call.method, rest);
    let faults = {
        let mut st = org.lock();
        if matches!(op, Operation::Create | Operation::Update | Operation::Upsert | Operation::Delete) {
            st.counters.last_write_at = Some(Instant::now());
            let body: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
            let query: serde_json::Map<String, Value> =
                call.query.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            let path = format!("/services/data/{version}/{}", rest.join("/"));
            st.writes.push_back(json!({"method": call.method.as_str(), "path": path, "query": query, "body": body,
                "at": crate::values::now_datetime()}));
            if st.writes.len() > org.config.writes_kept {
                st.writes.pop_front();
            }
        }
        if let Err(e) = oauth::check_session(&org, &mut st, call.authorization.as_deref()) {
            drop(st);
            return Ok(counted(&org, kind, with_usage(&org, Reply::error(&e))));
        }
        if st.api_used >= st.api_limit {
            drop(st);
            return Ok(counted(&org, kind, with_usage(&org, Reply::error(&ApiError::limit_exceeded()))));
        }
        st.api_used += 1;
        st.faults.for_request(object.as_deref(), op, &sent_records(&call.body))
    };
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    if faults.drop_before_commit {
        return Err(dropped(&org));
    }
    if let Some(e) = faults.error {
        return Ok(counted(&org, kind, with_usage(&org, Reply::error(&e))));
    }
    let (reply, bulk_job) = {
        let mut st = org.lock();
        route(&org, &mut st, call, version, rest)
    };
    let reply = reply.unwrap_or_else(|e| Reply::error(&e));
    if let Some(job) = bulk_job {
        spawn_bulk(org.clone(), job);
    }
    if faults.drop_after_commit {
        return Err(dropped(&org));
    }
    Ok(counted(&org, kind, with_usage(&org, reply)))
}

/// The records a collection call sends (`{"records": [...]}`), for fault rules scoped by a field value.
fn sent_records(body: &[u8]) -> Vec<Value> {
    if body.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| match v {
            Value::Object(mut o) => match o.remove("records") {
                Some(Value::Array(list)) => Some(list),
                _ => Some(vec![Value::Object(o)]),
            },
            _ => None,
        })
        .unwrap_or_default()
}

fn with_usage(org: &Org, reply: Reply) -> Reply {
    let (used, limit) = {
        let st = org.lock();
        (st.api_used, st.api_limit)
    };
    reply.with_header("Sforce-Limit-Info", format!("api-usage={used}/{limit}"))
}

fn spawn_bulk(org: Arc<Org>, job: String) {
    let half = Duration::from_millis(org.config.bulk_processing_ms / 2);
    if let Some(query) = job.strip_prefix("query:").map(str::to_string) {
        tokio::spawn(async move {
            tokio::time::sleep(half).await;
            if !crate::bulk_query::start(&mut org.lock(), &query) {
                return;
            }
            tokio::time::sleep(half).await;
            crate::bulk_query::process(&mut org.lock(), &query);
        });
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(half).await;
        if !bulk::start(&mut org.lock(), &job) {
            return;
        }
        tokio::time::sleep(half).await;
        bulk::process(&mut org.lock(), &job);
    });
}

type Routed = (Result<Reply, ApiError>, Option<String>);

fn route(org: &Org, st: &mut crate::org::State, call: &Call, version: &str, rest: &[&str]) -> Routed {
    use hyper::Method as M;
    let body = &call.body[..];
    let model = org.model.clone();
    let object = |name: &str| {
        model.object(name).map(|o| o.index).ok_or_else(|| {
            ApiError::new(
                404,
                "NOT_FOUND",
                format!("The requested resource does not exist: sObject type '{name}' is not supported."),
            )
        })
    };
    let r = match (&call.method, rest) {
        (&M::GET, ["limits"]) => Ok(limits(st)),
        (&M::GET, [resource @ ("query" | "queryAll")]) => {
            let q = call.query.iter().find(|(k, _)| k == "q").map(|(_, v)| v.as_str()).unwrap_or_default();
            // queryAll: deleted records too, with IsDeleted = true (while they are in the recycle bin).
            query(st, version, q, *resource == "queryAll")
        }
        (&M::GET, ["query" | "queryAll", cursor]) => query_more(st, version, cursor),
        (&M::GET, ["sobjects"]) => Ok(describe_global(org, version)),
        (&M::GET, ["sobjects", o, "deleted"]) => object(o).and_then(|i| {
            crate::replication::deleted(&st.store, i, &call.query, org.config.replication_unit_ms.max(1) as i64)
        }),
        (&M::GET, ["sobjects", o, "updated"]) => object(o).and_then(|i| {
            crate::replication::updated(&st.store, i, &call.query, org.config.replication_unit_ms.max(1) as i64)
        }),
        (&M::POST, ["composite"]) => crate::composite::run(body, |sub| {
            let segments: Vec<&str> = sub.segments.iter().map(String::as_str).collect();
            let call = Call {
                method: sub.method.clone(),
                segments: sub.segments.clone(),
                query: sub.query.clone(),
                authorization: None,
                content_type: Some("application/json".into()),
                body: Bytes::from(sub.body.clone()),
            };
            let version = if valid_version(&sub.version) { sub.version.as_str() } else { version };
            route(org, st, &call, version, &segments).0.unwrap_or_else(|e| Reply::error(&e))
        }),
        (&M::GET, ["sobjects", o, "describe"]) => object(o).map(|i| describe(org, version, i)),
        (&M::POST, ["sobjects", o]) => object(o).and_then(|i| writes::single_create(st, version, i, body)),
        (&M::GET, ["sobjects", o, id]) => object(o).and_then(|i| {
            let id = writes::existing_id(st, i, id).map_err(|e| {
                if e.error_code == "ENTITY_IS_DELETED" {
                    ApiError::not_found()
                } else {
                    e
                }
            })?;
            let fields: Option<Vec<String>> = call
                .query
                .iter()
                .find(|(k, _)| k == "fields")
                .map(|(_, v)| v.split(',').map(|s| s.trim().to_string()).collect());
            let rec = st.store.get(&id).ok_or_else(ApiError::not_found)?;
            Ok(Reply::json(200, &soql::record_json(&st.store, version, rec, fields.as_deref())))
        }),
        (&M::PATCH, ["sobjects", o, id]) => object(o).and_then(|i| writes::single_update(st, i, id, body)),
        (&M::DELETE, ["sobjects", o, id]) => object(o).and_then(|i| writes::single_delete(st, i, id)),
        (&M::PATCH | &M::POST, ["sobjects", o, field, value]) => {
            writes::single_upsert(st, version, o, field, value, body)
        }
        (&M::GET, ["sobjects", o, field, value]) => object(o).and_then(|i| {
            let (_, ext) = writes::upsert_target(st, o, field).map_err(|_| ApiError::not_found())?;
            let found = st.store.find_by(i, &ext.name, value);
            match found.as_slice() {
                [id] => Ok(Reply::json(
                    200,
                    &soql::record_json(&st.store, version, st.store.get(id).ok_or_else(ApiError::not_found)?, None),
                )),
                [] => Err(ApiError::not_found()),
                many => Ok(Reply::json(
                    300,
                    &json!(many
                        .iter()
                        .map(|id| format!("/services/data/{version}/sobjects/{}/{id}", model.object_at(i).name))
                        .collect::<Vec<_>>()),
                )),
            }
        }),
        (&M::POST, ["composite", "sobjects"]) => writes::collection_write(st, writes::Kind::Create, body),
        (&M::PATCH, ["composite", "sobjects"]) => writes::collection_write(st, writes::Kind::Update, body),
        (&M::DELETE, ["composite", "sobjects"]) => writes::collection_delete(st, &call.query),
        (&M::PATCH, ["composite", "sobjects", o, field]) => writes::collection_upsert(st, o, field, body),
        (&M::POST, ["jobs", "query"]) => match crate::bulk_query::create(st, version, &org.user_id, body) {
            Ok(reply) => {
                let id =
                    serde_json::from_slice::<Value>(&reply.body).ok().and_then(|v| v["id"].as_str().map(String::from));
                return (Ok(reply), id.map(|id| format!("query:{id}")));
            }
            Err(e) => Err(e),
        },
        (&M::GET, ["jobs", "query", id]) => crate::bulk_query::get(st, id),
        (&M::PATCH, ["jobs", "query", id]) => crate::bulk_query::abort_or_delete(st, id, false),
        (&M::DELETE, ["jobs", "query", id]) => crate::bulk_query::abort_or_delete(st, id, true),
        (&M::GET, ["jobs", "query", id, "results"]) => crate::bulk_query::results(st, version, id, &call.query),
        (&M::POST, ["jobs", "ingest"]) => bulk::create(st, version, &org.user_id, body),
        (&M::GET, ["jobs", "ingest"]) => Ok(bulk::list(st)),
        (&M::GET, ["jobs", "ingest", id]) => bulk::info(st, id),
        (&M::DELETE, ["jobs", "ingest", id]) => bulk::delete(st, id),
        (&M::PATCH, ["jobs", "ingest", id]) => {
            return match bulk::change_state(st, id, body) {
                Ok((reply, start)) => (Ok(reply), start.then(|| id.to_string())),
                Err(e) => (Err(e), None),
            }
        }
        (&M::PUT, ["jobs", "ingest", id, "batches"]) => bulk::upload(st, id, body),
        (
            &M::GET,
            ["jobs", "ingest", id, which @ ("successfulResults" | "failedResults" | "unprocessedrecords" | "unprocessedRecords")],
        ) => {
            let which = if which.eq_ignore_ascii_case("unprocessedrecords") { "unprocessedrecords" } else { which };
            bulk::results(st, id, which)
        }
        (_, ["limits" | "query" | "queryAll" | "sobjects" | "composite" | "jobs", ..]) => Err(ApiError::new(
            405,
            "METHOD_NOT_ALLOWED",
            format!("HTTP Method '{}' not allowed. Allowed are GET,PATCH,POST,DELETE", call.method),
        )),
        _ => Err(ApiError::not_found()),
    };
    (r, None)
}

fn limits(st: &crate::org::State) -> Reply {
    let remaining = st.api_limit.saturating_sub(st.api_used);
    Reply::json(
        200,
        &json!({
            "DailyApiRequests": {"Max": st.api_limit, "Remaining": remaining},
            "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
            "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
            "DataStorageMB": {"Max": 5, "Remaining": 5},
        }),
    )
}

const QUERY_BATCH: usize = 2000;

fn query(st: &mut crate::org::State, version: &str, q: &str, deleted_too: bool) -> Result<Reply, ApiError> {
    let parsed = soql::parse(q)?;
    let result = soql::run(&st.store, version, &parsed, deleted_too)?;
    let mut records = result.records;
    if records.len() <= QUERY_BATCH {
        return Ok(Reply::json(200, &json!({"totalSize": result.total_size, "done": true, "records": records})));
    }
    let rest: std::collections::VecDeque<Value> = records.split_off(QUERY_BATCH).into();
    let serial = st.next_serial();
    let cursor = format!("01gDn{serial:010}");
    let next = format!("/services/data/{version}/query/{cursor}-{QUERY_BATCH}");
    st.cursors.insert(cursor, (version.to_string(), rest));
    Ok(Reply::json(
        200,
        &json!({"totalSize": result.total_size, "done": false, "nextRecordsUrl": next, "records": records}),
    ))
}

fn query_more(st: &mut crate::org::State, version: &str, locator: &str) -> Result<Reply, ApiError> {
    let (cursor, offset) =
        locator.split_once('-').ok_or_else(|| ApiError::new(400, "INVALID_QUERY_LOCATOR", "invalid query locator"))?;
    let offset: usize =
        offset.parse().map_err(|_| ApiError::new(400, "INVALID_QUERY_LOCATOR", "invalid query locator"))?;
    let (_, pending) = st
        .cursors
        .get_mut(cursor)
        .ok_or_else(|| ApiError::new(400, "INVALID_QUERY_LOCATOR", "invalid query locator"))?;
    let take = pending.len().min(QUERY_BATCH);
    let records: Vec<Value> = pending.drain(..take).collect();
    let total = offset + take + pending.len();
    if pending.is_empty() {
        st.cursors.remove(cursor);
        return Ok(Reply::json(200, &json!({"totalSize": total, "done": true, "records": records})));
    }
    let next = format!("/services/data/{version}/query/{cursor}-{}", offset + take);
    Ok(Reply::json(200, &json!({"totalSize": total, "done": false, "nextRecordsUrl": next, "records": records})))
}

fn describe_global(org: &Org, version: &str) -> Reply {
    let objects: Vec<Value> = org
        .model
        .objects()
        .map(|o| json!({"name": o.name, "label": o.name.trim_end_matches("__c"), "keyPrefix": o.key_prefix, "custom": o.name.ends_with("__c"), "createable": true, "updateable": true, "deletable": true, "queryable": true, "urls": {"sobject": format!("/services/data/{version}/sobjects/{}", o.name)}}))
        .collect();
    Reply::json(200, &json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": objects}))
}

fn describe(org: &Org, version: &str, object: usize) -> Reply {
    let def = org.model.object_at(object);
    let mut fields = vec![
        json!({"name": "Id", "type": "id", "length": 18, "nillable": false, "createable": false, "updateable": false, "unique": false, "externalId": false, "idLookup": true}),
    ];
    for f in &def.fields {
        fields.push(json!({
            "name": f.name,
            "label": f.label(),
            "type": format!("{:?}", f.kind).to_lowercase(),
            "length": f.length.unwrap_or(0),
            "nillable": !f.required,
            "createable": !f.read_only,
            "updateable": !f.read_only,
            "unique": f.unique,
            "externalId": f.external_id,
            "idLookup": f.external_id,
            "referenceTo": f.reference_to.iter().collect::<Vec<_>>(),
            "relationshipName": f.relationship_name,
            "defaultValue": f.default,
            "precision": f.number_limits().map_or(0, |(p, _)| p),
            "scale": f.number_limits().map_or(0, |(_, s)| s),
        }));
    }
    Reply::json(
        200,
        &json!({"name": def.name, "keyPrefix": def.key_prefix, "custom": def.name.ends_with("__c"), "fields": fields, "urls": {"sobject": format!("/services/data/{version}/sobjects/{}", def.name)}}),
    )
}

fn parse_rules(body: &[u8]) -> Result<Vec<FaultRule>, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::json_parse(e.to_string()))?;
    let list = match v {
        Value::Array(items) => items,
        Value::Object(mut m) if m.contains_key("rules") => match m.remove("rules") {
            Some(Value::Array(items)) => items,
            _ => return Err(ApiError::json_parse("rules must be an array")),
        },
        other => vec![other],
    };
    list.into_iter()
        .map(|r| serde_json::from_value(r).map_err(|e| ApiError::json_parse(format!("fault rule: {e}"))))
        .collect()
}

/// `/fakeforce/...`: health, counters, records, fault rules, outages, sessions, API budget, reset.
fn admin(org: &Org, call: &Call) -> Reply {
    use hyper::Method as M;
    let seg: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    let result: Result<Reply, ApiError> = (|| {
        let mut st = org.lock();
        match (&call.method, &seg[1..]) {
            (&M::GET, ["health"]) => Ok(Reply::json(200, &json!({"status": "ok", "url": org.base_url()}))),
            (&M::GET, ["admin", "counters"]) => {
                st.counters.faults_fired = st.faults.fired;
                let mut v = serde_json::to_value(&st.counters).unwrap_or_default();
                v["api_usage"] = json!({"used": st.api_used, "limit": st.api_limit});
                Ok(Reply::json(200, &v))
            }
            (&M::GET, ["admin", "writes"]) => Ok(Reply::json(200, &json!(st.writes))),
            (&M::POST, ["admin", "reset"]) => {
                st.writes.clear();
                st.store.clear();
                st.counters = Default::default();
                st.jobs.clear();
                st.cursors.clear();
                st.outage = None;
                st.api_used = org.config.api_requests_used;
                st.api_limit = org.config.daily_api_requests;
                st.faults = crate::faults::Faults::new(
                    org.config.seed,
                    org.config.faults.clone(),
                    (org.config.latency_ms, org.config.latency_jitter_ms),
                );
                org.wake.notify_one();
                Ok(Reply::json(200, &json!({"reset": true})))
            }
            (&M::DELETE, ["admin", "records", _, id]) => {
                // The record is purged (recycle bin emptied, merged away): no API shows it any more.
                if !st.store.purge(id) {
                    return Err(ApiError::not_found());
                }
                Ok(Reply::json(200, &json!({"purged": id})))
            }
            (&M::POST, ["admin", "records", _, id, "undelete"]) => {
                st.store.undelete(id).map_err(|e| ApiError::new(400, "UNDELETE_FAILED", e))?;
                Ok(Reply::json(200, &json!({"undeleted": id})))
            }
            (&M::POST, ["admin", "merge"]) => {
                // {"master": id, "losers": [ids]}: Salesforce's merge (the losers are deleted for good).
                let body: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
                let master = body.get("master").and_then(Value::as_str).unwrap_or_default().to_string();
                let losers: Vec<String> = body
                    .get("losers")
                    .and_then(Value::as_array)
                    .map(|l| l.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                st.store.merge(&master, &losers).map_err(|e| ApiError::new(400, "MERGE_FAILED", e))?;
                Ok(Reply::json(200, &json!({"merged": losers, "into": master})))
            }
            (&M::POST, ["admin", "delete-log", "purge"]) => {
                // Salesforce purges its delete log: getDeleted from before now is INVALID_REPLICATION_DATE.
                st.store.delete_log_floor = crate::values::now_ms();
                Ok(Reply::json(200, &json!({"purged": true})))
            }
            (&M::PATCH, ["admin", "records", o, id]) => {
                // {"fields": {...}, "by": "005…", "stamp_seconds_ago": n}: another user changes the record (in a
                // transaction that commits n seconds after its SystemModstamp).
                let i = org.model.object(o).map(|x| x.index).ok_or_else(ApiError::not_found)?;
                let body: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
                let fields = body.get("fields").and_then(Value::as_object).cloned().unwrap_or_default();
                let by = body.get("by").and_then(Value::as_str).unwrap_or("005Dn00000OthrUAAA");
                let ago = body.get("stamp_seconds_ago").and_then(Value::as_f64).unwrap_or(0.0);
                st.store
                    .edit_as(i, id, &fields, by, (ago * 1000.0) as i64)
                    .map_err(|e| ApiError::new(400, "INVALID_FIELD", e))?;
                Ok(Reply::json(200, &json!({"edited": id})))
            }
            (&M::GET, ["admin", "records", o]) => {
                let i = org.model.object(o).map(|x| x.index).ok_or_else(ApiError::not_found)?;
                let records: Vec<Value> = st
                    .store
                    .all(i)
                    .map(|r| {
                        let mut v = soql::record_json(&st.store, "v62.0", r, None);
                        v["_writes"] = json!(r.writes);
                        v
                    })
                    .collect();
                Ok(Reply::json(200, &json!({"totalSize": records.len(), "records": records})))
            }
            (&M::GET, ["admin", "faults"]) => {
                Ok(Reply::json(200, &json!({"rules": st.faults.rules, "fired": st.faults.fired})))
            }
            (&M::PUT, ["admin", "faults"]) => {
                st.faults.rules = parse_rules(&call.body)?;
                Ok(Reply::json(200, &json!({"rules": st.faults.rules})))
            }
            (&M::POST, ["admin", "faults"]) => {
                let mut rules = parse_rules(&call.body)?;
                st.faults.rules.append(&mut rules);
                Ok(Reply::json(200, &json!({"rules": st.faults.rules})))
            }
            (&M::DELETE, ["admin", "faults"]) => {
                st.faults.rules.clear();
                Ok(Reply::json(200, &json!({"rules": []})))
            }
            (&M::POST, ["admin", "seed"]) => {
                let v: Value = serde_json::from_slice(&call.body).map_err(|e| ApiError::json_parse(e.to_string()))?;
                let seed = v
                    .get("seed")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| ApiError::json_parse("seed must be an unsigned integer"))?;
                st.faults.reseed(seed);
                Ok(Reply::json(200, &json!({"seed": seed})))
            }
            (&M::POST, ["admin", "outage"]) => {
                let v: Value = serde_json::from_slice(&call.body).map_err(|e| ApiError::json_parse(e.to_string()))?;
                let mode: OutageMode = serde_json::from_value(v.get("mode").cloned().unwrap_or(json!("refuse")))
                    .map_err(|e| ApiError::json_parse(e.to_string()))?;
                let seconds = v.get("seconds").and_then(Value::as_f64).unwrap_or(5.0).max(0.0);
                st.outage = Some(Outage { mode, until: Instant::now() + Duration::from_secs_f64(seconds) });
                org.wake.notify_one();
                Ok(Reply::json(200, &json!({"mode": mode, "seconds": seconds})))
            }
            (&M::DELETE, ["admin", "outage"]) => {
                st.outage = None;
                org.wake.notify_one();
                Ok(Reply::json(200, &json!({"outage": null})))
            }
            (&M::POST, ["admin", "expire-sessions"]) => {
                let n = st.sessions.len();
                st.sessions.clear();
                Ok(Reply::json(200, &json!({"expired": n})))
            }
            (&M::PUT, ["admin", "api-usage"]) => {
                let v: Value = serde_json::from_slice(&call.body).map_err(|e| ApiError::json_parse(e.to_string()))?;
                if let Some(used) = v.get("used").and_then(Value::as_u64) {
                    st.api_used = used;
                }
                if let Some(limit) = v.get("limit").and_then(Value::as_u64) {
                    st.api_limit = limit;
                }
                Ok(Reply::json(200, &json!({"used": st.api_used, "limit": st.api_limit})))
            }
            _ => Err(ApiError::not_found()),
        }
    })();
    result.unwrap_or_else(|e| Reply::error(&e))
}
