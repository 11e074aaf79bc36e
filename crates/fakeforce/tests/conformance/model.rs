//! Data model: ids, lookups by id and by external id, field validation (reference §2.9, Part 3 B 4–6).

use crate::client::{account, contact, error_of, Sf};
use fakeforce::config::Config;
use serde_json::json;

#[test]
fn lookups_by_id_and_by_parent_external_id() {
    let sf = Sf::start();
    let acct = sf.create_one(account("Acme", "ACME-1"));
    let r = sf.create(json!([
        {"attributes": {"type": "Contact"}, "LastName": "ById", "AccountId": acct},
        {"attributes": {"type": "Contact"}, "LastName": "ByExt", "Account": {"External_Id__c": "acme-1"}},
        {"attributes": {"type": "Invoice__c"}, "Name": "INV-1", "Account__r": {"attributes": {"type": "Account"}, "External_Id__c": "ACME-1"}},
        {"attributes": {"type": "Contact"}, "LastName": "NoParent", "Account": {"External_Id__c": "missing"}},
        {"attributes": {"type": "Contact"}, "LastName": "GoneParent", "AccountId": "001Dn0000099999IAA"},
        {"attributes": {"type": "Contact"}, "LastName": "BadId", "AccountId": "001xyz"},
    ]));
    for i in 0..3 {
        assert_eq!(r[i]["success"], json!(true), "{}", r[i]);
    }
    assert_eq!(
        r[3]["errors"][0],
        json!({"statusCode": "INVALID_FIELD", "message": "Foreign key external ID: missing not found for field External_Id__c in entity Account", "fields": []})
    );
    assert_eq!(error_of(&r[4]).0, "INVALID_CROSS_REFERENCE_KEY");
    assert_eq!(
        r[5]["errors"][0],
        json!({"statusCode": "MALFORMED_ID", "message": "Account ID: id value of incorrect type: 001xyz", "fields": ["AccountId"]})
    );
    let q = sf.query("SELECT LastName, Account.Name FROM Contact WHERE AccountId != null ORDER BY LastName");
    assert_eq!(q["totalSize"], json!(2));
    assert_eq!(q["records"][0]["Account"]["Name"], json!("Acme"));
    let inv = sf.query("SELECT Name, Account__c FROM Invoice__c");
    assert_eq!(inv["records"][0]["Account__c"], json!(acct));
}

#[test]
fn field_validation() {
    let sf = Sf::start();
    let long = "x".repeat(81);
    let r = sf.create(json!([
        {"attributes": {"type": "Contact"}, "LastName": long},
        {"attributes": {"type": "Contact"}, "LastName": "a", "Email": "not-an-email"},
        {"attributes": {"type": "Contact"}, "LastName": "a", "CreatedDate": "2024-01-01T00:00:00Z"},
        {"attributes": {"type": "Opportunity"}, "Name": "deal"},
        {"attributes": {"type": "Invoice__c"}, "Name": "i", "Amount__c": "12.50", "Paid__c": "true", "Issued_At__c": "2024-03-01T01:30:00+02:00", "Due_Date__c": "2024-04-01"},
        {"attributes": {"type": "Lead"}, "LastName": "L", "Company": "C"},
    ]));
    assert_eq!(
        r[0]["errors"][0],
        json!({"statusCode": "STRING_TOO_LONG", "message": format!("Last Name: data value too large: {long} (max length=80)"), "fields": ["LastName"]})
    );
    assert_eq!(error_of(&r[1]).0, "INVALID_EMAIL_ADDRESS");
    assert_eq!(error_of(&r[2]).0, "INVALID_FIELD_FOR_INSERT_UPDATE");
    assert_eq!(
        r[3]["errors"][0],
        json!({"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [StageName, CloseDate]", "fields": ["StageName", "CloseDate"]})
    );
    assert_eq!(r[4]["success"], json!(true), "{}", r[4]);
    let inv = sf.query("SELECT Amount__c, Paid__c, Issued_At__c, Due_Date__c FROM Invoice__c")["records"][0].clone();
    assert_eq!((inv["Amount__c"].clone(), inv["Paid__c"].clone()), (json!(12.5), json!(true)));
    assert_eq!(inv["Issued_At__c"], json!("2024-02-29T23:30:00.000+0000"), "datetimes are stored in UTC");
    assert_eq!(inv["Due_Date__c"], json!("2024-04-01"));
    let lead = sf.query("SELECT Status FROM Lead")["records"][0].clone();
    assert_eq!(lead["Status"], json!("Open - Not Contacted"), "picklist default applies");
    let bad_date = sf.call(
        "POST",
        "/composite/sobjects",
        Some(json!({"records": [{"attributes": {"type": "Invoice__c"}, "Due_Date__c": "2024-02-30"}]})),
    );
    assert_eq!((bad_date.status, bad_date.json()[0]["errorCode"].clone()), (400, json!("JSON_PARSER_ERROR")));
}

#[test]
fn number_fields_round_to_their_scale_and_refuse_values_beyond_their_precision() {
    let sf = Sf::start();
    // Opportunity.Amount is Number(16, 2): 14 digits before the point, 2 after.
    let r = sf.create(json!([
        {"attributes": {"type": "Opportunity"}, "Name": "a", "StageName": "New", "CloseDate": "2024-01-01", "Amount": 12.345},
        {"attributes": {"type": "Opportunity"}, "Name": "b", "StageName": "New", "CloseDate": "2024-01-01", "Amount": 123456789012345_i64},
        {"attributes": {"type": "Opportunity"}, "Name": "c", "StageName": "New", "CloseDate": "2024-01-01", "Amount": "99999999999999.994"},
    ]));
    assert_eq!(r[0]["success"], json!(true), "{}", r[0]);
    assert_eq!(
        r[1]["errors"][0],
        json!({"statusCode": "NUMBER_OUTSIDE_VALID_RANGE", "message": "Amount: value outside of valid range on numeric field: 123456789012345", "fields": ["Amount"]})
    );
    assert_eq!(r[2]["success"], json!(true), "{}", r[2]);
    let amounts: Vec<String> = sf.query("SELECT Amount FROM Opportunity ORDER BY Name")["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Amount"].to_string())
        .collect();
    assert_eq!(amounts, ["12.35", "99999999999999.99"], "extra decimals are rounded half up");
    let described = sf.call("GET", "/sobjects/Opportunity/describe", None).json();
    let amount = described["fields"].as_array().unwrap().iter().find(|f| f["name"] == "Amount").unwrap().clone();
    assert_eq!((amount["precision"].clone(), amount["scale"].clone()), (json!(16), json!(2)));
}

#[test]
fn config_file_declares_objects() {
    let dir = std::env::temp_dir().join(format!("fakeforce-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("org.toml");
    std::fs::write(
        &path,
        r#"
        builtin_objects = false
        [[objects]]
        name = "Widget__c"
        key_prefix = "a0W"
        fields = [
          { name = "Name", type = "string", length = 10, required = true },
          { name = "Code__c", type = "string", external_id = true, unique = true },
          { name = "Score__c", type = "double", read_only = true },
        ]
        "#,
    )
    .expect("write");
    let sf = Sf::with(Config::from_file(&path).expect("config parses"));
    let id = sf.create_one(json!({"attributes": {"type": "Widget__c"}, "Name": "w", "Code__c": "C1"}));
    assert!(id.starts_with("a0W"));
    let r = sf.create(json!([{"attributes": {"type": "Widget__c"}, "Name": "w", "Score__c": 1}]));
    assert_eq!(error_of(&r[0]).0, "INVALID_FIELD_FOR_INSERT_UPDATE");
    let a = sf.call("POST", "/composite/sobjects", Some(json!({"records": [contact("x")]})));
    assert_eq!(a.json()[0]["errorCode"], json!("INVALID_TYPE"), "built-in objects are off");
    let bad = Config::from_toml(
        "[[objects]]\nname = 'X__c'\nkey_prefix = 'a0X'\nfields = [{ name = 'Y', type = 'nonsense' }]",
    );
    assert!(bad.is_err());
}
