//! Single-record endpoints (reference §2.3): the array error envelope with `errorCode`.

use crate::client::{Sf, V};
use fakeforce::config::Config;
use serde_json::json;

#[test]
fn create_update_get_delete() {
    let sf = Sf::start();
    let a = sf.call("POST", "/sobjects/Contact/", Some(json!({"LastName": "Single", "Email": "s@example.com"})));
    assert_eq!(a.status, 201);
    let body = a.json();
    let id = body["id"].as_str().expect("id").to_string();
    assert_eq!(body, json!({"id": id, "errors": [], "success": true}));
    assert_eq!(a.header("Location"), Some(format!("/services/data/{V}/sobjects/Contact/{id}").as_str()));

    let with_id = sf.call("POST", "/sobjects/Contact/", Some(json!({"Id": id, "LastName": "x"})));
    assert_eq!(with_id.status, 400);
    assert_eq!(
        with_id.json(),
        json!([{"message": "The Id field should not be specified in the sobject data.", "errorCode": "INVALID_FIELD"}])
    );

    let bad = sf.call("POST", "/sobjects/Contact/", Some(json!({"FirstName": "no last name"})));
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.json(),
        json!([{"message": "Required fields are missing: [LastName]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["LastName"]}])
    );

    let upd = sf.call("PATCH", &format!("/sobjects/Contact/{id}"), Some(json!({"Title": "CTO"})));
    assert_eq!((upd.status, upd.text.as_str()), (204, ""));
    let got = sf.call("GET", &format!("/sobjects/Contact/{id}"), None).json();
    assert_eq!(got["Title"], json!("CTO"));
    assert_eq!(
        got["attributes"],
        json!({"type": "Contact", "url": format!("/services/data/{V}/sobjects/Contact/{id}")})
    );
    assert!(got["CreatedDate"].as_str().is_some_and(|d| d.ends_with("+0000")));

    assert_eq!(sf.call("DELETE", &format!("/sobjects/Contact/{id}"), None).status, 204);
    let again = sf.call("DELETE", &format!("/sobjects/Contact/{id}"), None);
    assert_eq!(again.status, 404);
    assert_eq!(again.json(), json!([{"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED", "fields": []}]));
    assert_eq!(sf.call("GET", &format!("/sobjects/Contact/{id}"), None).status, 404);
    assert_eq!(sf.call("PATCH", "/sobjects/Contact/003notanid", Some(json!({"Title": "x"}))).status, 404);
}

#[test]
fn upsert_status_codes() {
    let objects = toml::from_str::<Config>(
        r#"
        [[objects]]
        name = "Legacy__c"
        key_prefix = "a05"
        fields = [
          { name = "Name", type = "string", length = 80 },
          { name = "Legacy_Key__c", type = "string", length = 40, external_id = true },
        ]
        "#,
    )
    .expect("toml")
    .objects;
    let sf = Sf::with(Config { objects, ..Config::default() });
    let created = sf.call("PATCH", "/sobjects/Account/External_Id__c/K-1", Some(json!({"Name": "Upserted"})));
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_str().expect("id").to_string();
    assert_eq!(created.json(), json!({"id": id, "success": true, "errors": [], "created": true}));
    let updated = sf.call("PATCH", "/sobjects/Account/External_Id__c/K-1", Some(json!({"Name": "Again"})));
    assert_eq!(updated.status, 200);
    assert_eq!(updated.json(), json!({"id": id, "success": true, "errors": [], "created": false}));
    // v45 and earlier answer an update with 204.
    let old = sf
        .agent
        .patch(sf.url("/services/data/v45.0/sobjects/Account/External_Id__c/K-1"))
        .header("Authorization", &format!("Bearer {}", sf.token))
        .send_json(json!({"Name": "Old API"}))
        .expect("call");
    assert_eq!(old.status().as_u16(), 204);
    assert_eq!(sf.call("PATCH", "/sobjects/Account/Nope__c/K-1", Some(json!({"Name": "x"}))).status, 404);

    // A non-unique external id matching two records: 300 with the candidates.
    sf.create_one(json!({"attributes": {"type": "Legacy__c"}, "Name": "a", "Legacy_Key__c": "same"}));
    sf.create_one(json!({"attributes": {"type": "Legacy__c"}, "Name": "b", "Legacy_Key__c": "same"}));
    let multi = sf.call("PATCH", "/sobjects/Legacy__c/Legacy_Key__c/same", Some(json!({"Name": "c"})));
    assert_eq!(multi.status, 300);
    assert_eq!(multi.json().as_array().map(Vec::len), Some(2));
    let coll = sf
        .call(
            "PATCH",
            "/composite/sobjects/Legacy__c/Legacy_Key__c",
            Some(json!({"records": [{"attributes": {"type": "Legacy__c"}, "Name": "c", "Legacy_Key__c": "same"}]})),
        )
        .json();
    assert_eq!(coll[0]["errors"][0]["statusCode"], json!("DUPLICATE_EXTERNAL_ID"));
}
