//! sObject Collections (reference §2.4).

use crate::client::{account, contact, error_of, Sf};
use fakeforce::ids;
use serde_json::{json, Value};

#[test]
fn create_returns_results_in_input_order_with_valid_ids() {
    let sf = Sf::start();
    let r = sf.create(json!([contact("A"), account("Acme", "acc-1"), contact("B")]));
    let results = r.as_array().expect("array");
    assert_eq!(results.len(), 3);
    for (res, prefix) in results.iter().zip(["003", "001", "003"]) {
        let keys: Vec<&str> = res.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "success", "errors"]);
        let id = res["id"].as_str().expect("id");
        assert!(id.starts_with(prefix) && id.len() == 18, "{id}");
        assert_eq!(ids::normalize(id).as_deref(), Some(id), "checksum of {id}");
        assert_eq!(res["errors"], json!([]));
    }
    let q = sf.query("SELECT LastName FROM Contact ORDER BY LastName");
    assert_eq!(q["records"][0]["LastName"], json!("A"));
    assert_eq!(q["totalSize"], json!(2));
}

#[test]
fn well_formed_requests_answer_200_even_when_every_record_fails() {
    let sf = Sf::start();
    let r = sf.create(json!([{"attributes": {"type": "Contact"}, "FirstName": "x"}, {"attributes": {"type": "Contact"}, "Id": "003Dn0000000001AAA", "LastName": "y"}]));
    assert_eq!(
        r[0],
        json!({"success": false, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [LastName]", "fields": ["LastName"]}]})
    );
    assert_eq!(error_of(&r[1]).0, "INVALID_FIELD");
    assert_eq!(error_of(&r[1]).1, "cannot specify Id in an insert call");
}

#[test]
fn malformed_requests_are_refused_whole() {
    let sf = Sf::start();
    let too_many: Vec<Value> = (0..201).map(|i| contact(&format!("c{i}"))).collect();
    let cases = [
        (json!({"records": too_many}), "EXCEEDED_ID_LIMIT"),
        (json!({"records": [{"LastName": "no type"}]}), "INVALID_TYPE"),
        (json!({"records": [{"attributes": {"type": "Nope__c"}, "Name": "x"}]}), "INVALID_TYPE"),
        (json!({"records": [{"attributes": {"type": "Contact"}, "LastName": "x", "Bogus__c": 1}]}), "INVALID_FIELD"),
        (
            json!({"records": [{"attributes": {"type": "Contact"}, "LastName": "x", "HasOptedOutOfEmail": "maybe"}]}),
            "JSON_PARSER_ERROR",
        ),
    ];
    for (body, code) in cases {
        let a = sf.call("POST", "/composite/sobjects", Some(body));
        assert_eq!(a.status, 400, "{code}: {}", a.text);
        let e = a.json();
        assert_eq!(e[0]["errorCode"], json!(code), "{e}");
        assert!(e[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(sf.query("SELECT COUNT() FROM Contact")["totalSize"], json!(0), "nothing was written");
    let unknown = sf.call(
        "POST",
        "/composite/sobjects",
        Some(json!({"records": [{"attributes": {"type": "Contact"}, "LastName": "x", "Bogus__c": 1}]})),
    );
    assert_eq!(unknown.json()[0]["message"], json!("No such column 'Bogus__c' on sobject of type Contact"));
}

#[test]
fn at_most_ten_chunks_of_consecutive_types() {
    let sf = Sf::start();
    let alternating: Vec<Value> =
        (0..11).map(|i| if i % 2 == 0 { contact("c") } else { account("a", &format!("x{i}")) }).collect();
    let a = sf.call("POST", "/composite/sobjects", Some(json!({"records": alternating})));
    assert_eq!(a.status, 400);
    assert_eq!(a.json()[0]["errorCode"], json!("INVALID_BATCH_REQUEST"));
    let ten: Vec<Value> =
        (0..10).map(|i| if i % 2 == 0 { contact("c") } else { account("a", &format!("y{i}")) }).collect();
    assert_eq!(sf.call("POST", "/composite/sobjects", Some(json!({"records": ten}))).status, 200);
}

#[test]
fn all_or_none_rolls_back_everything() {
    let sf = Sf::start();
    let existing = sf.create_one(contact("Before"));
    let body = json!({"allOrNone": true, "records": [contact("Good"), {"attributes": {"type": "Contact"}, "FirstName": "bad"}, account("Acme", "a-1")]});
    let r = sf.call("POST", "/composite/sobjects", Some(body)).json();
    let rolled = json!({"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "Record rolled back because not all records were valid and the request was using AllOrNone header", "fields": []});
    assert_eq!(r[0], json!({"success": false, "errors": [rolled.clone()]}));
    assert_eq!(error_of(&r[1]).0, "REQUIRED_FIELD_MISSING");
    assert_eq!(r[2]["errors"][0], rolled);
    assert_eq!(sf.query("SELECT COUNT() FROM Contact")["totalSize"], json!(1));
    assert_eq!(sf.query("SELECT COUNT() FROM Account")["totalSize"], json!(0));

    // Updates: the innocent record echoes its id and keeps its old value.
    let body = json!({"allOrNone": true, "records": [
        {"attributes": {"type": "Contact"}, "id": existing, "LastName": "Changed"},
        {"attributes": {"type": "Contact"}, "LastName": "no id"}]});
    let r = sf.call("PATCH", "/composite/sobjects", Some(body)).json();
    assert_eq!(r[0], json!({"id": existing, "success": false, "errors": [rolled]}));
    assert_eq!(
        r[1],
        json!({"success": false, "errors": [{"statusCode": "MISSING_ARGUMENT", "message": "Id not specified in an update call", "fields": []}]})
    );
    assert_eq!(sf.query("SELECT LastName FROM Contact")["records"][0]["LastName"], json!("Before"));

    // Without allOrNone the good record commits on its own.
    let r = sf.create(json!([contact("Solo"), {"attributes": {"type": "Contact"}}]));
    assert_eq!(r[0]["success"], json!(true));
    assert_eq!(sf.query("SELECT COUNT() FROM Contact")["totalSize"], json!(2));
}

#[test]
fn update_rules() {
    let sf = Sf::start();
    let id = sf.create_one(contact("Old"));
    let gone = sf.create_one(contact("Gone"));
    assert_eq!(sf.call("DELETE", &format!("/composite/sobjects?ids={gone}"), None).status, 200);
    let acct = sf.create_one(account("Acme", "a-1"));
    let body = json!({"records": [
        {"attributes": {"type": "Contact"}, "id": &id[..15], "LastName": "New"},
        {"attributes": {"type": "Contact"}, "id": "003Dn0000000001ZZZ", "LastName": "x"},
        {"attributes": {"type": "Contact"}, "id": acct, "LastName": "x"},
        {"attributes": {"type": "Contact"}, "id": gone, "LastName": "x"},
        {"attributes": {"type": "Contact"}, "id": id, "LastName": null}]});
    let r = sf.call("PATCH", "/composite/sobjects", Some(body)).json();
    assert_eq!(r[0], json!({"id": id, "success": true, "errors": []}), "15-character ids are accepted");
    assert_eq!(
        r[1]["errors"][0],
        json!({"statusCode": "MALFORMED_ID", "message": "Contact ID: id value of incorrect type: 003Dn0000000001ZZZ", "fields": ["Id"]})
    );
    assert_eq!(error_of(&r[2]).0, "MALFORMED_ID", "an Account id is not a Contact id");
    assert_eq!(
        r[3]["errors"][0],
        json!({"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []})
    );
    assert_eq!(error_of(&r[4]).0, "REQUIRED_FIELD_MISSING", "a required field cannot be cleared");
    assert_eq!(
        sf.query(&format!("SELECT LastName FROM Contact WHERE Id = '{id}'"))["records"][0]["LastName"],
        json!("New")
    );
}

#[test]
fn upsert_by_external_id() {
    let sf = Sf::start();
    let rec = |name: &str, ext: &str| account(name, ext);
    let a = sf.call(
        "PATCH",
        "/composite/sobjects/Account/External_Id__c",
        Some(json!({"allOrNone": false, "records": [rec("One", "E1"), rec("Two", "E2")]})),
    );
    assert_eq!(a.status, 200);
    let r = a.json();
    let keys: Vec<&str> = r[0].as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(keys, ["id", "success", "errors", "created"]);
    assert_eq!((r[0]["created"].clone(), r[1]["created"].clone()), (json!(true), json!(true)));
    let again = sf
        .call("PATCH", "/composite/sobjects/Account/External_Id__c", Some(json!({"records": [rec("One again", "e1")]})))
        .json();
    assert_eq!(again[0]["created"], json!(false), "external ids match ignoring case");
    assert_eq!(again[0]["id"], r[0]["id"]);
    assert_eq!(
        sf.query("SELECT Name FROM Account WHERE External_Id__c = 'E1'")["records"][0]["Name"],
        json!("One again")
    );

    let twice = sf
        .call(
            "PATCH",
            "/composite/sobjects/Account/External_Id__c",
            Some(json!({"records": [rec("x", "E9"), rec("y", "E9")]})),
        )
        .json();
    assert_eq!(error_of(&twice[0]).0, "DUPLICATE_EXTERNAL_ID");
    assert_eq!(error_of(&twice[1]).0, "DUPLICATE_EXTERNAL_ID");
    let missing = sf
        .call(
            "PATCH",
            "/composite/sobjects/Account/External_Id__c",
            Some(json!({"records": [{"attributes": {"type": "Account"}, "Name": "no key"}]})),
        )
        .json();
    assert_eq!(error_of(&missing[0]).0, "MISSING_ARGUMENT");

    let not_ext = sf.call("PATCH", "/composite/sobjects/Account/Name", Some(json!({"records": [rec("x", "E3")]})));
    assert_eq!(not_ext.status, 400);
    assert_eq!(
        not_ext.json()[0]["message"],
        json!("Field name provided, Name is not an External ID or indexed field for Account")
    );
    assert_eq!(
        sf.call("PATCH", "/composite/sobjects/Nope__c/External_Id__c", Some(json!({"records": []}))).status,
        404
    );
}

#[test]
fn duplicate_value_on_unique_fields() {
    let sf = Sf::start();
    let first = sf.create_one(account("One", "dup"));
    let r = sf.create(json!([account("Two", "DUP")]));
    assert_eq!(
        r[0]["errors"][0],
        json!({"statusCode": "DUPLICATE_VALUE", "message": format!("duplicate value found: External_Id__c duplicates value on record with id: {first}"), "fields": ["External_Id__c"]})
    );
}

#[test]
fn delete_rules_and_all_or_none_query_parameter() {
    let sf = Sf::start();
    let a = sf.create_one(contact("A"));
    let b = sf.create_one(contact("B"));
    let r = sf.call("DELETE", &format!("/composite/sobjects?ids={a},001RM000003oLrB000&allOrNone=false"), None).json();
    assert_eq!(r[0], json!({"id": a, "success": true, "errors": []}));
    assert_eq!(
        r[1],
        json!({"success": false, "errors": [{"statusCode": "MALFORMED_ID", "message": "malformed id 001RM000003oLrB000", "fields": []}]})
    );
    let again = sf.call("DELETE", &format!("/composite/sobjects?ids={a}"), None).json();
    assert_eq!(error_of(&again[0]), ("ENTITY_IS_DELETED".into(), "entity is deleted".into(), json!([])));
    let atomic = sf.call("DELETE", &format!("/composite/sobjects?ids={b},{a}&allOrNone=true"), None).json();
    assert_eq!(error_of(&atomic[0]).0, "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    assert_eq!(atomic[0]["id"], json!(b));
    assert_eq!(sf.query("SELECT COUNT() FROM Contact")["totalSize"], json!(1), "B survived the rolled-back delete");
    let ids: Vec<String> = (0..201).map(|_| b.clone()).collect();
    assert_eq!(sf.call("DELETE", &format!("/composite/sobjects?ids={}", ids.join(",")), None).status, 400);
}
