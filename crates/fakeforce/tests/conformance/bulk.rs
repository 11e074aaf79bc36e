//! Bulk API 2.0 ingest (reference §2.6).

use crate::client::{account, Sf, V};
use fakeforce::config::Config;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn sf() -> Sf {
    Sf::with(Config { bulk_processing_ms: 300, ..Config::default() })
}

fn wait_done(sf: &Sf, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = sf.call("GET", &format!("/jobs/ingest/{id}"), None).json();
        if ["JobComplete", "Failed", "Aborted"].contains(&info["state"].as_str().unwrap_or_default()) {
            return info;
        }
        assert!(Instant::now() < deadline, "job never finished: {info}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.expect("csv").iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn insert_job_end_to_end() {
    let sf = sf();
    sf.create_one(account("Parent", "P-1"));
    let created =
        sf.call("POST", "/jobs/ingest", Some(json!({"object": "Contact", "operation": "insert", "lineEnding": "LF"})));
    assert_eq!(created.status, 200, "{}", created.text);
    let job = created.json();
    let id = job["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("750"));
    for (k, v) in [
        ("state", json!("Open")),
        ("object", json!("Contact")),
        ("operation", json!("insert")),
        ("contentType", json!("CSV")),
        ("jobType", json!("V2Ingest")),
        ("concurrencyMode", json!("Parallel")),
        ("columnDelimiter", json!("COMMA")),
        ("lineEnding", json!("LF")),
        ("apiVersion", json!(62.0)),
    ] {
        assert_eq!(job[k], v, "{k}");
    }
    assert_eq!(job["contentUrl"], json!(format!("services/data/{V}/jobs/ingest/{id}/batches")));

    let mut csv = String::from("LastName,Email,Account.External_Id__c\n");
    for i in 0..50 {
        csv.push_str(&format!("Row{i:02},r{i}@example.com,P-1\n"));
    }
    csv.push_str(",missing@example.com,P-1\n");
    csv.push_str("Orphan,o@example.com,NOPE\n");
    let up = sf.put_csv(&format!("/jobs/ingest/{id}/batches"), &csv);
    assert_eq!((up.status, up.text.as_str()), (201, ""));
    assert_eq!(sf.put_csv(&format!("/jobs/ingest/{id}/batches"), &csv).status, 400, "one upload per job");

    let closed = sf.call("PATCH", &format!("/jobs/ingest/{id}"), Some(json!({"state": "UploadComplete"}))).json();
    assert_eq!(closed["state"], json!("UploadComplete"));
    let early = sf.call("GET", &format!("/jobs/ingest/{id}/successfulResults/"), None);
    assert_eq!(early.status, 400, "results wait for the job to finish, so clients must poll");
    let done = wait_done(&sf, &id);
    assert_eq!(done["state"], json!("JobComplete"));
    assert_eq!((done["numberRecordsProcessed"].clone(), done["numberRecordsFailed"].clone()), (json!(52), json!(2)));
    for k in ["retries", "totalProcessingTime", "apiActiveProcessingTime", "apexProcessingTime"] {
        assert!(done[k].is_number(), "{k}");
    }

    let ok = sf.call("GET", &format!("/jobs/ingest/{id}/successfulResults/"), None);
    assert!(ok.header("Content-Type").is_some_and(|c| c.starts_with("text/csv")));
    assert!(
        ok.text.starts_with("\"sf__Id\",\"sf__Created\",\"LastName\",\"Email\",\"Account.External_Id__c\"\n"),
        "{}",
        &ok.text[..80]
    );
    let rows = csv_rows(&ok.text);
    assert_eq!(rows.len(), 51);
    let names: Vec<&str> = rows[1..].iter().map(|r| r[2].as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_ne!(names, sorted, "result order is not the upload order");
    assert!(rows[1..].iter().all(|r| r[0].starts_with("003") && r[1] == "true"));

    let failed = csv_rows(&sf.call("GET", &format!("/jobs/ingest/{id}/failedResults/"), None).text);
    assert_eq!(failed[0], ["sf__Id", "sf__Error", "LastName", "Email", "Account.External_Id__c"]);
    let errors: Vec<&str> = failed[1..].iter().map(|r| r[1].as_str()).collect();
    assert!(errors.contains(&"REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName"), "{errors:?}");
    assert!(
        errors.contains(
            &"INVALID_FIELD:Foreign key external ID: NOPE not found for field External_Id__c in entity Account:--"
        ),
        "{errors:?}"
    );
    assert!(failed[1..].iter().all(|r| r[0].is_empty()), "failed inserts have no id");
    assert_eq!(sf.query("SELECT COUNT() FROM Contact WHERE AccountId != null")["totalSize"], json!(50));
}

#[test]
fn upsert_and_delete_jobs_with_other_delimiters() {
    let sf = sf();
    let job = sf.call("POST", "/jobs/ingest", Some(json!({"object": "Account", "operation": "upsert", "externalIdFieldName": "External_Id__c", "columnDelimiter": "PIPE", "lineEnding": "CRLF"}))).json();
    let id = job["id"].as_str().expect("id").to_string();
    sf.put_csv(
        &format!("/jobs/ingest/{id}/batches"),
        "External_Id__c|Name|NumberOfEmployees\r\nA-1|Alpha|10\r\nA-2|Beta|#N/A\r\n",
    );
    sf.call("PATCH", &format!("/jobs/ingest/{id}"), Some(json!({"state": "UploadComplete"})));
    assert_eq!(wait_done(&sf, &id)["numberRecordsFailed"], json!(0));
    let rows = csv_rows(&sf.call("GET", &format!("/jobs/ingest/{id}/successfulResults/"), None).text);
    assert_eq!(rows.len(), 3);
    let alpha =
        sf.query("SELECT Id, NumberOfEmployees FROM Account WHERE External_Id__c = 'A-1'")["records"][0].clone();
    assert_eq!(alpha["NumberOfEmployees"], json!(10));

    let del = sf.call("POST", "/jobs/ingest", Some(json!({"object": "Account", "operation": "delete"}))).json();
    let did = del["id"].as_str().expect("id").to_string();
    sf.put_csv(
        &format!("/jobs/ingest/{did}/batches"),
        &format!("Id\n{}\n001Dn0000000000AAA\n", alpha["Id"].as_str().unwrap_or_default()),
    );
    sf.call("PATCH", &format!("/jobs/ingest/{did}"), Some(json!({"state": "UploadComplete"})));
    let info = wait_done(&sf, &did);
    assert_eq!((info["numberRecordsProcessed"].clone(), info["numberRecordsFailed"].clone()), (json!(2), json!(1)));
    assert_eq!(sf.query("SELECT COUNT() FROM Account")["totalSize"], json!(1));

    let bad = sf.call("POST", "/jobs/ingest", Some(json!({"object": "Account", "operation": "upsert"})));
    assert_eq!(bad.status, 400, "upsert needs externalIdFieldName");
}

#[test]
fn aborted_jobs_keep_their_rows_unprocessed_and_unknown_columns_fail_the_job() {
    let sf = sf();
    let id = sf.call("POST", "/jobs/ingest", Some(json!({"object": "Contact", "operation": "insert"}))).json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    sf.put_csv(&format!("/jobs/ingest/{id}/batches"), "LastName\nA\nB\n");
    let aborted = sf.call("PATCH", &format!("/jobs/ingest/{id}"), Some(json!({"state": "Aborted"}))).json();
    assert_eq!(aborted["state"], json!("Aborted"));
    let un = sf.call("GET", &format!("/jobs/ingest/{id}/unprocessedrecords/"), None);
    assert_eq!(un.text, "\"LastName\"\n\"A\"\n\"B\"\n");
    let camel = sf.call("GET", &format!("/jobs/ingest/{id}/unprocessedRecords/"), None);
    assert_eq!(camel.text, un.text, "clients also send unprocessedRecords");
    assert_eq!(sf.call("PATCH", &format!("/jobs/ingest/{id}"), Some(json!({"state": "UploadComplete"}))).status, 400);
    assert_eq!(sf.call("DELETE", &format!("/jobs/ingest/{id}"), None).status, 204);

    let id = sf.call("POST", "/jobs/ingest", Some(json!({"object": "Contact", "operation": "insert"}))).json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    sf.put_csv(&format!("/jobs/ingest/{id}/batches"), "LastName,Bogus__c\nA,1\n");
    sf.call("PATCH", &format!("/jobs/ingest/{id}"), Some(json!({"state": "UploadComplete"})));
    let info = wait_done(&sf, &id);
    assert_eq!(info["state"], json!("Failed"));
    assert!(info["errorMessage"].as_str().is_some_and(|m| m.contains("Bogus__c")), "{info}");
    assert_eq!(sf.query("SELECT COUNT() FROM Contact")["totalSize"], json!(0));
}
