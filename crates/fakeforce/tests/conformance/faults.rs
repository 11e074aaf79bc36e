//! Fault injection and counters (issue item 7).

use crate::client::{contact, error_of, Sf};
use fakeforce::config::Config;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[test]
fn record_errors_by_field_value_and_by_rate() {
    let sf = Sf::start();
    sf.admin("PUT", "/faults", Some(json!([{"object": "Contact", "field": "Email", "contains": "@blocked.", "effect": {"type": "record_error", "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Blocked domain", "fields": ["Email"]}}])));
    let r = sf.create(json!([
        {"attributes": {"type": "Contact"}, "LastName": "ok", "Email": "a@fine.com"},
        {"attributes": {"type": "Contact"}, "LastName": "no", "Email": "a@blocked.com"}]));
    assert_eq!(r[0]["success"], json!(true));
    assert_eq!(
        r[1]["errors"][0],
        json!({"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Blocked domain", "fields": ["Email"]})
    );

    let draw = |seed: u64| {
        let sf = Sf::start();
        sf.admin("POST", "/seed", Some(json!({"seed": seed})));
        sf.admin("PUT", "/faults", Some(json!({"rules": [{"rate": 0.3, "effect": {"type": "record_error", "status_code": "INSUFFICIENT_ACCESS_OR_READONLY", "message": "insufficient access rights on object id"}}]})));
        let records: Vec<Value> = (0..200).map(|i| contact(&format!("c{i}"))).collect();
        let r = sf.create(Value::Array(records));
        r.as_array().expect("array").iter().map(|x| x["success"].as_bool().unwrap_or_default()).collect::<Vec<_>>()
    };
    let a = draw(11);
    assert_eq!(a, draw(11), "the same seed fails the same records");
    let failed = a.iter().filter(|ok| !**ok).count();
    assert!((30..=90).contains(&failed), "about 30% of 200 fail, got {failed}");
}

#[test]
fn lock_errors_fail_the_whole_chunk() {
    let sf = Sf::start();
    sf.admin("PUT", "/faults", Some(json!([{"object": "Contact", "field": "LastName", "equals": "locked", "times": 1, "effect": {"type": "lock_chunk"}}])));
    let r = sf.create(json!([contact("a"), contact("locked"), contact("b"), {"attributes": {"type": "Account"}, "Name": "other chunk"}]));
    for i in 0..3 {
        assert_eq!(error_of(&r[i]).0, "UNABLE_TO_LOCK_ROW", "{}", r[i]);
    }
    assert_eq!(r[3]["success"], json!(true), "other chunks are not affected");
    assert_eq!(sf.query("SELECT COUNT() FROM Contact")["totalSize"], json!(0), "the chunk was rolled back");
    let retry = sf.create(json!([contact("a"), contact("locked"), contact("b")]));
    assert!(
        retry.as_array().expect("array").iter().all(|x| x["success"] == json!(true)),
        "times = 1: the retry succeeds"
    );
}

#[test]
fn request_level_errors_and_latency() {
    let sf = Sf::start();
    sf.admin("PUT", "/faults", Some(json!([
        {"operation": "create", "times": 1, "effect": {"type": "http", "status": 503, "error_code": "SERVER_UNAVAILABLE", "message": "Server unavailable"}},
        {"operation": "query", "times": 1, "effect": {"type": "http", "status": 500, "error_code": "UNKNOWN_EXCEPTION", "message": "An unexpected error occurred."}},
        {"operation": "update", "effect": {"type": "latency", "ms": 300}}])));
    let a = sf.call("POST", "/composite/sobjects", Some(json!({"records": [contact("x")]})));
    assert_eq!(a.status, 503);
    assert_eq!(a.json(), json!([{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}]));
    assert_eq!(sf.call("GET", "/query?q=SELECT+Id+FROM+Contact", None).status, 500);
    let id = sf.create_one(contact("x"));
    let start = Instant::now();
    sf.call(
        "PATCH",
        "/composite/sobjects",
        Some(json!({"records": [{"attributes": {"type": "Contact"}, "id": id, "Title": "slow"}]})),
    );
    assert!(start.elapsed() >= Duration::from_millis(300), "the injected latency was applied");
    let counters = sf.admin("GET", "/counters", None);
    assert_eq!(counters["by_status"]["503"], json!(1));
    assert_eq!(counters["faults_fired"], json!(3));
}

#[test]
fn dropped_connection_after_commit_keeps_the_change() {
    let sf = Sf::start();
    sf.admin(
        "PUT",
        "/faults",
        Some(json!([{"operation": "upsert", "times": 1, "effect": {"type": "drop_after_commit"}}])),
    );
    let body = json!({"records": [{"attributes": {"type": "Account"}, "Name": "Once", "External_Id__c": "ONCE-1"}]});
    let first = sf.try_call("PATCH", "/composite/sobjects/Account/External_Id__c", Some(body.clone()));
    assert!(first.is_err(), "the client sees a broken connection, not an answer");
    let second = sf.call("PATCH", "/composite/sobjects/Account/External_Id__c", Some(body)).json();
    assert_eq!(second[0]["created"], json!(false), "the first send had been committed; the re-send is idempotent");
    let recs = sf.admin("GET", "/records/Account", None);
    assert_eq!(recs["totalSize"], json!(1));
    assert_eq!(recs["records"][0]["_writes"], json!(2));
    let c = sf.admin("GET", "/counters", None);
    assert_eq!((c["dropped_connections"].clone(), c["records"]["upsert"].clone()), (json!(1), json!(2)));
}

#[test]
fn outages_refuse_connections_or_answer_503() {
    let sf = Sf::start();
    sf.admin("POST", "/outage", Some(json!({"mode": "unavailable", "seconds": 30})));
    let a = sf.call("GET", "/limits", None);
    assert_eq!((a.status, a.json()[0]["errorCode"].clone()), (503, json!("SERVER_UNAVAILABLE")));
    sf.admin("DELETE", "/outage", None);
    assert_eq!(sf.call("GET", "/limits", None).status, 200);

    sf.admin("POST", "/outage", Some(json!({"mode": "refuse", "seconds": 1.0})));
    let refused = crate::client::agent().get(sf.url("/services/data/v62.0/limits")).call();
    assert!(refused.is_err(), "connections are refused during the outage");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sf.try_call("GET", "/limits", None) {
            Ok(a) if a.status == 200 => break,
            _ => assert!(Instant::now() < deadline, "the stand-in came back after the outage"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn faults_and_latency_from_the_config_file() {
    let config = Config::from_toml(
        r#"
        seed = 5
        latency_ms = 50
        [[faults]]
        object = "Account"
        operation = "create"
        effect = { type = "record_error", status_code = "DUPLICATES_DETECTED", message = "Use one of these records?" }
        "#,
    )
    .expect("config");
    let sf = Sf::with(config);
    let start = Instant::now();
    let r = sf.create(json!([{"attributes": {"type": "Account"}, "Name": "A"}]));
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(error_of(&r[0]), ("DUPLICATES_DETECTED".into(), "Use one of these records?".into(), json!([])));
}
