//! Read-back: SOQL subset, sObject GET, /limits and Sforce-Limit-Info (reference §2.8).

use crate::client::{account, contact, Sf, V};
use fakeforce::config::Config;
use serde_json::{json, Value};

#[test]
fn soql_subset() {
    let sf = Sf::start();
    sf.create(json!([
        {"attributes": {"type": "Contact"}, "LastName": "Adams", "Email": "a@x.com", "Title": "CEO"},
        {"attributes": {"type": "Contact"}, "LastName": "Baker", "Email": "b@y.com"},
        {"attributes": {"type": "Contact"}, "LastName": "Clark", "Email": "c@x.com", "Title": "CTO"},
    ]));
    let q = sf.query("SELECT Id, LastName FROM Contact WHERE Email LIKE '%@x.com' ORDER BY LastName DESC LIMIT 5");
    assert_eq!(q["totalSize"], json!(2));
    assert_eq!(q["done"], json!(true));
    let r = &q["records"][0];
    let keys: Vec<&str> = r.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(keys, ["attributes", "Id", "LastName"]);
    assert_eq!(r["LastName"], json!("Clark"));
    assert_eq!(
        r["attributes"]["url"],
        json!(format!("/services/data/{V}/sobjects/Contact/{}", r["Id"].as_str().unwrap_or_default()))
    );
    assert_eq!(
        sf.query("SELECT lastname FROM contact WHERE Title IN ('CEO', 'cto') AND Title != null")["totalSize"],
        json!(2)
    );
    assert_eq!(sf.query("SELECT LastName FROM Contact WHERE Title = null")["records"][0]["LastName"], json!("Baker"));
    assert_eq!(
        sf.query("SELECT LastName FROM Contact WHERE LastName NOT IN ('Adams') ORDER BY LastName LIMIT 1 OFFSET 1")
            ["records"][0]["LastName"],
        json!("Clark")
    );
    assert_eq!(
        sf.query("SELECT COUNT() FROM Contact WHERE CreatedDate > 2020-01-01T00:00:00Z"),
        json!({"totalSize": 3, "done": true, "records": []})
    );

    let bad = sf.call("GET", "/query?q=SELECT+Nope+FROM+Contact", None);
    assert_eq!((bad.status, bad.json()[0]["errorCode"].clone()), (400, json!("INVALID_FIELD")));
    let malformed = sf.call("GET", "/query?q=SELECT+FROM", None);
    assert_eq!(malformed.json()[0]["errorCode"], json!("MALFORMED_QUERY"));
    let no_object = sf.call("GET", "/query?q=SELECT+Id+FROM+Nope__c", None);
    assert_eq!(no_object.json()[0]["errorCode"], json!("INVALID_TYPE"));
}

#[test]
fn large_results_page_through_next_records_url() {
    let sf = Sf::start();
    for batch in 0..13 {
        let records: Vec<Value> = (0..200).map(|i| contact(&format!("c{batch}-{i}"))).collect();
        sf.create(Value::Array(records));
    }
    let first = sf.query("SELECT Id FROM Contact");
    assert_eq!((first["totalSize"].clone(), first["done"].clone()), (json!(2600), json!(false)));
    assert_eq!(first["records"].as_array().map(Vec::len), Some(2000));
    let next = first["nextRecordsUrl"].as_str().expect("nextRecordsUrl");
    let path = next.strip_prefix(&format!("/services/data/{V}")).expect("versioned url");
    let second = sf.call("GET", path, None).json();
    assert_eq!((second["done"].clone(), second["records"].as_array().map(Vec::len)), (json!(true), Some(600)));
}

#[test]
fn limits_and_usage_header() {
    let sf = Sf::with(Config { daily_api_requests: 5, ..Config::default() });
    let a = sf.call("GET", "/limits", None);
    assert_eq!(a.header("Sforce-Limit-Info"), Some("api-usage=1/5"));
    assert_eq!(a.json()["DailyApiRequests"], json!({"Max": 5, "Remaining": 4}));
    let b = sf.call("POST", "/composite/sobjects", Some(json!({"records": [account("A", "1"), account("B", "2")]})));
    assert_eq!(b.header("Sforce-Limit-Info"), Some("api-usage=2/5"), "a collection call counts once");
    for _ in 0..3 {
        sf.call("GET", "/limits", None);
    }
    let over = sf.call("GET", "/limits", None);
    assert_eq!(over.status, 403);
    assert_eq!(
        over.json(),
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(over.header("Sforce-Limit-Info"), Some("api-usage=5/5"));
    let versions = sf.agent.get(sf.url("/services/data/")).call().expect("versions");
    assert!(versions.headers().get("Sforce-Limit-Info").is_none(), "the versions resource has no usage header");
    sf.admin("PUT", "/api-usage", Some(json!({"used": 0})));
    assert_eq!(sf.call("GET", "/limits", None).status, 200);
}

#[test]
fn get_by_external_id_and_describe() {
    let sf = Sf::start();
    let id = sf.create_one(account("Acme", "EXT-7"));
    let got = sf.call("GET", "/sobjects/Account/External_Id__c/EXT-7", None).json();
    assert_eq!(got["Id"], json!(id));
    let d = sf.call("GET", "/sobjects/Contact/describe", None).json();
    let last = d["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["name"] == json!("LastName"))
        .cloned()
        .expect("LastName");
    assert_eq!((last["length"].clone(), last["nillable"].clone()), (json!(80), json!(false)));
}
