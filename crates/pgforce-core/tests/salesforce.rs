//! The Salesforce client and sending (`delivery::send`) against fakeforce, in process.

mod common;

use common::settings;
use fakeforce::{Config, FakeForce};
use pgforce_core::delivery::batch::{Batch, Verdict};
use pgforce_core::delivery::send::deliver;
use pgforce_core::salesforce::{jwt_audience, AuthFlow, CallError, CallKind, Client, Usage};
use serde_json::{json, Value};
use std::time::Duration;

/// A copy of a key file only its owner can read, as pgforce requires of secret files.
fn private_copy(source: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let target = std::env::temp_dir().join(format!(
        "pgforce-core-test-{}-{}",
        std::process::id(),
        source.file_name().unwrap().to_string_lossy()
    ));
    std::fs::copy(source, &target).expect("copy key");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    target
}

fn contact(last: &str, ext: &str) -> Value {
    json!({"attributes": {"type": "Contact"}, "LastName": last, "External_Id__c": ext})
}

fn admin(ff: &FakeForce, method: &str, path: &str, body: Value) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{}/fakeforce/admin{path}", ff.url());
    let mut r = match method {
        "GET" => agent.get(&url).call(),
        "PUT" => agent.put(&url).send_json(body),
        _ => agent.post(&url).send_json(body),
    }
    .expect("admin");
    r.body_mut().read_json().expect("json")
}

fn upsert_batch(items: Vec<Value>) -> Batch {
    Batch {
        kind: CallKind::Upsert { object: "Contact".into(), field: "External_Id__c".into() },
        items: items.into_iter().enumerate().collect(),
        bytes: 0,
        links: Vec::new(),
        bulk: None,
    }
}

#[test]
fn every_auth_flow_logs_in() {
    let key_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fakeforce/tests/fixtures");
    let mut config = Config::default();
    config.auth.jwt_public_key = Some(key_dir.join("jwt_test_public.pem"));
    let ff = FakeForce::start(config).expect("fakeforce");
    for flow in [AuthFlow::ClientCredentials, AuthFlow::RefreshToken, AuthFlow::JwtBearer] {
        let mut s = settings(&ff);
        s.auth_flow = flow;
        s.jwt_key_file = private_copy(&key_dir.join("jwt_test_private.pem"));
        Client::new(s).authenticate().unwrap_or_else(|e| panic!("{flow:?}: {e}"));
    }
    let mut bad = settings(&ff);
    bad.client_secret = "wrong".into();
    assert!(
        matches!(Client::new(bad.clone()).authenticate(), Err(CallError::Unauthorized(m)) if m.starts_with("invalid_client"))
    );
    assert!(!format!("{bad:?}").contains("wrong"), "secrets stay out of Debug output");
    let mut no_key = settings(&ff);
    no_key.auth_flow = AuthFlow::JwtBearer;
    no_key.jwt_key_file = "/nonexistent/key.pem".into();
    let e = Client::new(no_key).authenticate().expect_err("no key file");
    assert!(
        matches!(&e, CallError::Unauthorized(m) if m.starts_with("pgforce.jwt_key_file cannot be read") && !m.contains("/nonexistent")),
        "{e}"
    );
}

#[test]
fn the_jwt_audience_is_salesforce_s_not_the_login_url() {
    for (login, aud) in [
        ("https://login.salesforce.com", "https://login.salesforce.com"),
        ("https://acme.my.salesforce.com", "https://login.salesforce.com"),
        ("https://test.salesforce.com/", "https://test.salesforce.com"),
        ("https://acme--uat.sandbox.my.salesforce.com", "https://test.salesforce.com"),
        ("http://127.0.0.1:8080", "https://login.salesforce.com"),
    ] {
        assert_eq!(jwt_audience(login, ""), aud, "{login}");
    }
    assert_eq!(jwt_audience("https://acme.my.salesforce.com", "https://acme.my.site.com/"), "https://acme.my.site.com");
}

#[test]
fn a_rotated_refresh_token_is_used_from_then_on_and_handed_over_once() {
    let mut config = Config::default();
    config.auth.rotate_refresh_tokens = true;
    let ff = FakeForce::start(config).expect("fakeforce");
    let mut s = settings(&ff);
    s.auth_flow = AuthFlow::RefreshToken;
    let client = Client::new(s.clone());
    client.authenticate().expect("first login");
    let rotated = client.take_rotated_refresh_token().expect("Salesforce rotated the token");
    assert_ne!(rotated, s.refresh_token);
    assert_eq!(client.take_rotated_refresh_token(), None, "handed over once");
    // The old token is revoked: logging in again works only with the new one.
    client.authenticate().expect("second login, with the rotated token");
    let newer = client.take_rotated_refresh_token().expect("rotated again");
    assert!(
        matches!(Client::new(s.clone()).authenticate(), Err(CallError::Unauthorized(m)) if m.starts_with("invalid_grant"))
    );
    let restarted = Client::new(s);
    restarted.use_refresh_token(newer);
    restarted.authenticate().expect("a new client given the kept token");
}

#[test]
fn delivers_and_reads_usage_and_renews_expired_tokens() {
    let ff = FakeForce::start(Config::default()).expect("fakeforce");
    let client = Client::new(settings(&ff));
    let d = deliver(&client, vec![upsert_batch(vec![contact("A", "E1"), contact("B", "E2")])], 2);
    assert!(d.trouble.is_none());
    assert!(d.verdicts.iter().all(|(_, v)| matches!(v, Verdict::Done { id: Some(_), created: true })));
    assert_eq!(client.usage().map(|u| u.used), Some(1));
    admin(&ff, "POST", "/expire-sessions", json!({}));
    let d = deliver(&client, vec![upsert_batch(vec![contact("A2", "E1")])], 1);
    assert!(matches!(d.verdicts[0].1, Verdict::Done { created: false, .. }), "{:?}", d.verdicts);
    assert_eq!(Usage::parse("api-usage=18/5000; api-bursts=1/10"), Some(Usage { used: 18, limit: 5000 }));
}

#[test]
fn a_refused_batch_is_split_until_the_bad_record_is_found() {
    let ff = FakeForce::start(Config::default()).expect("fakeforce");
    let client = Client::new(settings(&ff));
    let mut items: Vec<Value> = (0..10).map(|i| contact(&format!("c{i}"), &format!("S{i}"))).collect();
    items[6]["Birthdate"] = json!("2024-02-30");
    let d = deliver(&client, vec![upsert_batch(items)], 1);
    let failed: Vec<usize> =
        d.verdicts.iter().filter(|(_, v)| matches!(v, Verdict::Failed { .. })).map(|(k, _)| *k).collect();
    assert_eq!(failed, vec![6]);
    let Some((_, Verdict::Failed { code, transient, .. })) = d.verdicts.iter().find(|(k, _)| *k == 6) else {
        panic!("verdict")
    };
    assert_eq!((code.as_str(), *transient), ("JSON_PARSER_ERROR", false));
    assert_eq!(client.usage().map(|u| u.used), Some(1 + 2 + 2 + 2), "calls: halves 10 → 5+5 → 5 → 2+3 → 3 → 1+2");
    assert_eq!(d.verdicts.len(), 10);
}

#[test]
fn lock_errors_are_transient_and_outages_leave_records_unsent() {
    let ff = FakeForce::start(Config::default()).expect("fakeforce");
    let client = Client::new(settings(&ff));
    admin(&ff, "PUT", "/faults", json!([{"field": "LastName", "equals": "locked", "effect": {"type": "lock_chunk"}}]));
    let d = deliver(&client, vec![upsert_batch(vec![contact("locked", "L1"), contact("x", "L2")])], 1);
    assert!(d
        .verdicts
        .iter()
        .all(|(_, v)| matches!(v, Verdict::Failed { code, transient: true, .. } if code == "UNABLE_TO_LOCK_ROW")));

    admin(&ff, "PUT", "/faults", json!([]));
    admin(&ff, "POST", "/outage", json!({"mode": "refuse", "seconds": 30}));
    let batches = vec![
        upsert_batch(vec![contact("a", "O1")]),
        upsert_batch(vec![contact("b", "O2")]),
        upsert_batch(vec![contact("c", "O3")]),
    ];
    let d = deliver(&client, batches, 2);
    assert!(matches!(d.trouble, Some(CallError::Unavailable(_))), "{:?}", d.trouble);
    assert_eq!(d.verdicts.len(), 3);
    // A request on a connection kept from before the outage loses it mid-way: unanswered (it might have been
    // applied); the others are not sent. Neither costs an attempt.
    assert!(d.verdicts.iter().all(|(_, v)| matches!(v, Verdict::Unsent | Verdict::Unanswered)), "{:?}", d.verdicts);

    let ff2 = FakeForce::start(Config::default()).expect("fakeforce");
    admin(
        &ff2,
        "PUT",
        "/faults",
        json!([{"operation": "upsert", "effect": {"type": "http", "status": 403, "error_code": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}}]),
    );
    let d = deliver(&Client::new(settings(&ff2)), vec![upsert_batch(vec![contact("a", "Q1")])], 1);
    assert!(matches!(d.trouble, Some(CallError::Unavailable(ref m)) if m.contains("REQUEST_LIMIT_EXCEEDED")));
}

#[test]
fn a_record_that_fails_when_its_lost_request_is_sent_again_stays_in_doubt() {
    let ff = FakeForce::start(Config::default()).expect("fakeforce");
    let client = Client::new(settings(&ff));
    // The first request is applied and its answer lost; the upsert goes again, and its records fail this time. The
    // first request may have created them: those failures must not read as "never reached Salesforce".
    admin(
        &ff,
        "PUT",
        "/faults",
        json!([
            {"operation": "upsert", "times": 1, "effect": {"type": "drop_after_commit"}},
            {"field": "LastName", "equals": "busy", "effect": {"type": "lock_chunk"}}
        ]),
    );
    let d = deliver(&client, vec![upsert_batch(vec![contact("busy", "D1"), contact("busy", "D2")])], 1);
    assert!(d.trouble.is_none(), "{:?}", d.trouble);
    assert_eq!(d.verdicts.len(), 2);
    assert!(
        d.verdicts
            .iter()
            .all(|(_, v)| matches!(v, Verdict::Failed { code, in_doubt: true, .. } if code == "UNABLE_TO_LOCK_ROW")),
        "{:?}",
        d.verdicts
    );
}

#[test]
fn a_lost_request_sent_again_into_an_outage_is_unanswered_not_unsent() {
    let ff = FakeForce::start(Config::default()).expect("fakeforce");
    let client = Client::new(settings(&ff));
    // The first request is applied and its answer lost; sent again, it meets maintenance (503). The records were
    // created by the first request: "not sent" would let a later change of the row forget them.
    admin(
        &ff,
        "PUT",
        "/faults",
        json!([
            {"operation": "upsert", "times": 1, "effect": {"type": "drop_after_commit"}},
            {"operation": "upsert", "after": 1, "times": 1,
             "effect": {"type": "http", "status": 503, "error_code": "SERVER_UNAVAILABLE", "message": "maintenance"}}
        ]),
    );
    let d = deliver(&client, vec![upsert_batch(vec![contact("a", "L1"), contact("b", "L2")])], 1);
    assert!(matches!(d.trouble, Some(CallError::Unavailable(_))), "{:?}", d.trouble);
    assert_eq!(d.verdicts.len(), 2);
    assert!(d.verdicts.iter().all(|(_, v)| *v == Verdict::Unanswered), "{:?}", d.verdicts);
}

#[test]
fn a_request_that_fails_while_salesforce_answers_costs_its_records_an_attempt_and_an_outage_costs_nothing() {
    let ff = FakeForce::start(Config::default()).expect("fakeforce");
    let mut s = settings(&ff);
    s.request_timeout = Duration::from_millis(700);
    let client = Client::new(s);
    // One record makes its request too slow (a slow trigger on it); another request gets a server error.
    admin(
        &ff,
        "PUT",
        "/faults",
        json!([
            {"field": "LastName", "equals": "slow", "effect": {"type": "latency", "ms": 2000}},
            {"field": "LastName", "equals": "broken", "effect": {"type": "http", "status": 500, "error_code": "UNKNOWN_EXCEPTION", "message": "An unexpected error occurred."}}
        ]),
    );
    let batch = |key: usize, last: &str| Batch {
        kind: CallKind::Upsert { object: "Contact".into(), field: "External_Id__c".into() },
        items: vec![(key, contact(last, &format!("R{key}")))],
        bytes: 0,
        links: Vec::new(),
        bulk: None,
    };
    let mut d = deliver(&client, vec![batch(0, "slow"), batch(1, "broken"), batch(2, "fine")], 3);
    d.verdicts.sort_by_key(|(k, _)| *k);
    assert!(d.trouble.is_none(), "Salesforce is up: no pause ({:?})", d.trouble);
    assert!(
        matches!(&d.verdicts[0].1, Verdict::Failed { code, message, transient: true, in_doubt: true } if code == "REQUEST_TIMEOUT" && message.starts_with("no answer within 0.7 s")),
        "{:?}",
        d.verdicts[0]
    );
    assert!(
        matches!(&d.verdicts[1].1, Verdict::Failed { code, message, transient: true, in_doubt: true } if code == "UNKNOWN_EXCEPTION" && message.starts_with("HTTP 500")),
        "{:?}",
        d.verdicts[1]
    );
    assert!(matches!(d.verdicts[2].1, Verdict::Done { .. }), "{:?}", d.verdicts[2]);

    // A hung Salesforce (the probe gets no answer either) is an outage: the records stay unsent, at no cost.
    admin(&ff, "PUT", "/faults", json!([]));
    admin(&ff, "POST", "/outage", json!({"mode": "hang", "seconds": 3}));
    let d = deliver(&client, vec![batch(3, "fine")], 1);
    assert!(
        matches!(d.trouble, Some(CallError::Unavailable(ref m)) if m.starts_with("REQUEST_TIMEOUT")),
        "{:?}",
        d.trouble
    );
    assert_eq!(d.verdicts, [(3, Verdict::Unanswered)], "sent, never answered: it may have been applied");
    // So is maintenance (503).
    admin(&ff, "POST", "/outage", json!({"mode": "unavailable", "seconds": 30}));
    let d = deliver(&client, vec![batch(4, "fine")], 1);
    assert!(matches!(d.trouble, Some(CallError::Unavailable(ref m)) if m.contains("503")), "{:?}", d.trouble);
    assert_eq!(d.verdicts, [(4, Verdict::Unsent)]);
}

#[test]
fn credentials_and_data_go_over_https_only() {
    // A token endpoint that hands out a plain-http instance on another host: nothing is sent there.
    let config = Config { advertised_url: Some("http://198.51.100.7:8443".into()), ..Config::default() };
    let ff = FakeForce::start(config).expect("fakeforce");
    let e = Client::new(settings(&ff)).authenticate().expect_err("an http instance_url is refused");
    assert!(matches!(&e, CallError::Unauthorized(m) if m.contains("instance_url") && m.contains("https only")), "{e}");
    let mut allowed = settings(&ff);
    allowed.allow_insecure_http = true;
    Client::new(allowed).authenticate().expect("allowed explicitly");

    // A login URL that is plain http to another host is refused before anything is sent.
    let mut remote = settings(&ff);
    remote.login_url = "http://198.51.100.7:8443".into();
    let e = Client::new(remote).authenticate().expect_err("http login URL");
    assert!(matches!(&e, CallError::Unauthorized(m) if m.starts_with("pgforce.login_url:")), "{e}");
}

/// Sends a batch as a Bulk job: every record is queued in one job; once the job is over, its results give each
/// record its verdict (as the worker reads them at a later cycle).
fn run_job(client: &Client, batch: Batch) -> Vec<(usize, Verdict)> {
    use pgforce_core::delivery::bulk;
    let delivery = deliver(client, vec![batch.clone()], 1);
    assert!(delivery.trouble.is_none(), "{:?}", delivery.trouble);
    let jobs: std::collections::BTreeSet<String> = delivery
        .verdicts
        .iter()
        .map(|(_, v)| match v {
            Verdict::Queued { job } => job.clone(),
            other => panic!("queued in a job: {other:?}"),
        })
        .collect();
    assert_eq!(jobs.len(), 1, "one job");
    assert_eq!(delivery.verdicts.len(), batch.items.len());
    let id = jobs.into_iter().next().unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let error = loop {
        let (state, error) = bulk::state(client, &id).expect("state");
        if state.finished() {
            break error;
        }
        assert!(std::time::Instant::now() < deadline, "the job finishes");
        std::thread::sleep(bulk::FIRST_POLL);
    };
    let results = bulk::results(client, &id).expect("results");
    let (_, key) = pgforce_core::delivery::batch::operation(&batch.kind).expect("a Bulk operation");
    bulk::match_results(&batch, &key, &results.succeeded, &results.failed, &results.unprocessed, error.as_deref())
}

#[test]
fn a_bulk_job_gives_every_record_its_verdict() {
    let ff = FakeForce::start(Config { bulk_processing_ms: 100, ..Config::default() }).expect("fakeforce");
    let client = Client::new(settings(&ff));
    admin(
        &ff,
        "PUT",
        "/faults",
        json!([{"field": "LastName", "equals": "Refused", "effect": {"type": "record_error",
            "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "No: not this one"}}]),
    );
    let mut items: Vec<Value> = (0..300).map(|i| contact(&format!("Bulk {i}"), &format!("B-{i}"))).collect();
    items[7] = contact("Refused", "B-7");
    let mut batch = upsert_batch(items);
    batch.bulk = Some("Contact".into());
    let mut verdicts = run_job(&client, batch);
    verdicts.sort_by_key(|(k, _)| *k);
    assert_eq!(verdicts.len(), 300);
    for (k, v) in &verdicts {
        if *k == 7 {
            assert_eq!(
                v,
                &Verdict::Failed {
                    code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
                    message: "No: not this one".into(),
                    transient: false,
                    in_doubt: false
                }
            );
        } else {
            assert!(matches!(v, Verdict::Done { id: Some(_), created: true }), "{k}: {v:?}");
        }
    }
    // A handful of calls for 300 records: create, upload, close, a few polls, three result sets.
    let counters = admin(&ff, "GET", "/counters", Value::Null);
    let bulk_calls = counters["by_kind"]["bulk"].as_u64().unwrap_or(0);
    assert!((6..=15).contains(&bulk_calls), "{counters}");
    assert_eq!(counters["by_kind"]["upsert"].as_u64().unwrap_or(0), 0, "{counters}");
    // Updates by id and deletes by id, the same way.
    let ids: Vec<(usize, String)> = verdicts
        .iter()
        .filter_map(|(k, v)| match v {
            Verdict::Done { id: Some(id), .. } => Some((*k, id.clone())),
            _ => None,
        })
        .collect();
    let update = Batch {
        kind: CallKind::Update,
        items: ids
            .iter()
            .map(|(k, id)| (*k, json!({"attributes": {"type": "Contact"}, "Id": id, "Title": "Bulk"})))
            .collect(),
        bytes: 0,
        links: Vec::new(),
        bulk: Some("Contact".into()),
    };
    let updated = run_job(&client, update);
    assert!(updated.iter().all(|(_, v)| matches!(v, Verdict::Done { .. })), "{updated:?}");
    let delete = Batch {
        kind: CallKind::Delete,
        items: ids.iter().map(|(k, id)| (*k, json!(id))).collect(),
        bytes: 0,
        links: Vec::new(),
        bulk: Some("Contact".into()),
    };
    let deleted = run_job(&client, delete);
    assert_eq!(deleted.len(), 299);
    assert!(deleted.iter().all(|(_, v)| matches!(v, Verdict::Done { .. })), "{deleted:?}");
}

#[test]
fn a_bulk_job_whose_id_cannot_be_kept_uploads_nothing() {
    use pgforce_core::delivery::send::send_waves;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    let ff = FakeForce::start(Config { bulk_processing_ms: 50, ..Config::default() }).expect("fakeforce");
    let client = Client::new(settings(&ff));
    let mut batch = upsert_batch((0..10).map(|i| contact("Kept", &format!("N-{i}"))).collect());
    batch.bulk = Some("Contact".into());
    let verdicts = Mutex::new(Vec::new());
    let seen = Mutex::new(Vec::new());
    let trouble = send_waves(
        &client,
        vec![vec![batch]],
        1,
        &AtomicBool::new(false),
        &|v| verdicts.lock().unwrap().extend(v),
        &|id, keys| {
            assert_eq!(keys.len(), 10, "the job's items");
            seen.lock().unwrap().push(id.to_string());
            false
        },
    );
    assert!(trouble.is_none());
    let verdicts = verdicts.into_inner().unwrap();
    assert_eq!(verdicts.len(), 10);
    assert!(verdicts
        .iter()
        .all(|(_, v)| matches!(v, Verdict::Failed { code, transient: true, in_doubt: false, .. } if code == "BULK_JOB_NOT_KEPT")));
    assert_eq!(seen.into_inner().unwrap().len(), 1, "asked once, for the job created");
    let records = admin(&ff, "GET", "/records/Contact", Value::Null);
    assert_eq!(records["records"].as_array().map_or(0, Vec::len), 0, "nothing was uploaded");
}
