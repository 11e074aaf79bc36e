//! The sync worker against fakeforce: delivery, merging, write-back, every retry class, token refresh, outages,
//! archive and requeue. Delivery waits use the default fallback poll (10 s) with shorter timeouts, so they also
//! prove that commits wake the worker.

use std::time::Duration;

use pgforce_integration::{wait_for, Cluster, Salesforce};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(8);

fn setup(sf: &Salesforce, extra: &[&str]) -> Cluster {
    let mut settings = sf.settings();
    settings.extend(extra.iter().map(|s| s.to_string()));
    let cluster = Cluster::start_with(true, &settings);
    cluster
        .admin()
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE salesforce.account (id serial PRIMARY KEY, name text, external_id__c text);
             SELECT salesforce.map_table('salesforce.account', 'Account', upsert_field => 'external_id__c');
             CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text, email text, title text,
                 hasoptedoutofemail boolean, birthdate date, external_id__c text, account__external_id__c text);
             SELECT salesforce.map_table('salesforce.contact', 'Contact', upsert_field => 'external_id__c');
             CREATE TABLE salesforce.lead (id serial PRIMARY KEY, lastname text, company text);
             SELECT salesforce.map_table('salesforce.lead', 'Lead');",
        )
        .expect("schema");
    cluster
}

/// Turns delivery on with a reload, as an operator would.
fn enable(c: &mut postgres::Client) {
    c.batch_execute("ALTER SYSTEM SET pgforce.enabled = on").expect("enable");
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
}

fn states(c: &mut postgres::Client, table: &str) -> Vec<String> {
    c.query("SELECT state::text FROM salesforce._trigger_log WHERE table_name = $1 ORDER BY id", &[&table])
        .expect("log")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn all_done(c: &mut postgres::Client, table: &str) -> bool {
    let s = states(c, table);
    !s.is_empty() && s.iter().all(|x| ["SUCCESS", "MERGED", "IGNORED", "FAILED"].contains(&x.as_str()))
}

fn by_ext<'a>(records: &'a [Value], ext: &str) -> Option<&'a Value> {
    records.iter().find(|r| r["External_Id__c"] == json!(ext))
}

#[test]
fn inserts_updates_and_deletes_arrive_with_their_values() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    c.batch_execute(
        "INSERT INTO salesforce.account (name, external_id__c) VALUES ('Acme', 'ACC-1');
         INSERT INTO salesforce.contact (lastname, email, hasoptedoutofemail, birthdate, external_id__c, account__external_id__c)
         VALUES ('Lovelace', 'ada@example.com', true, '1815-12-10', 'C-1', 'ACC-1'),
                ('Hopper', 'grace@example.com', false, NULL, 'C-2', NULL),
                ('Turing', NULL, NULL, NULL, 'C-3', NULL);",
    )
    .expect("insert");
    wait_for(WAIT, "contacts delivered", || all_done(&mut c, "contact").then_some(()));
    assert_eq!(states(&mut c, "contact"), ["SUCCESS", "SUCCESS", "SUCCESS"]);
    let records = sf.live("Contact");
    assert_eq!(records.len(), 3);
    let ada = by_ext(&records, "C-1").expect("C-1");
    assert_eq!(
        (ada["LastName"].clone(), ada["Email"].clone(), ada["HasOptedOutOfEmail"].clone(), ada["Birthdate"].clone()),
        (json!("Lovelace"), json!("ada@example.com"), json!(true), json!("1815-12-10"))
    );
    let acme = sf.live("Account").into_iter().find(|a| a["Name"] == json!("Acme")).expect("account");
    assert_eq!(ada["AccountId"], acme["Id"], "the relationship column referenced the parent by its external id");

    // sfid and _hc_lastop are written back, and the write-back is not captured again.
    let row = c
        .query_one(
            "SELECT sfid::text, _hc_lastop::text, _hc_err FROM salesforce.contact WHERE external_id__c = 'C-1'",
            &[],
        )
        .expect("row");
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), ada["Id"].as_str());
    assert_eq!(row.get::<_, String>(1), "INSERTED");
    assert_eq!(row.get::<_, Option<String>>(2), None);
    assert_eq!(states(&mut c, "contact").len(), 3, "no log rows from the worker's own writes");

    c.batch_execute("UPDATE salesforce.contact SET title = 'Rear Admiral', email = NULL WHERE external_id__c = 'C-2'")
        .expect("update");
    wait_for(WAIT, "update delivered", || {
        (states(&mut c, "contact").len() == 4 && all_done(&mut c, "contact")).then_some(())
    });
    let grace = sf.live("Contact").into_iter().find(|r| r["External_Id__c"] == json!("C-2")).expect("C-2");
    assert_eq!(
        (grace["Title"].clone(), grace["Email"].clone(), grace["LastName"].clone()),
        (json!("Rear Admiral"), Value::Null, json!("Hopper"))
    );
    let lastop: String = c
        .query_one("SELECT _hc_lastop::text FROM salesforce.contact WHERE external_id__c = 'C-2'", &[])
        .expect("row")
        .get(0);
    assert_eq!(lastop, "UPDATED");

    c.batch_execute("DELETE FROM salesforce.contact WHERE external_id__c = 'C-3'").expect("delete");
    wait_for(WAIT, "delete delivered", || {
        (states(&mut c, "contact").len() == 5 && all_done(&mut c, "contact")).then_some(())
    });
    assert_eq!(sf.live("Contact").len(), 2);
    assert!(by_ext(&sf.records("Contact"), "C-3").is_some_and(|r| r["IsDeleted"] == json!(true)));

    // Without an upsert field: create, then update and delete by the written-back sfid.
    c.batch_execute("INSERT INTO salesforce.lead (lastname, company) VALUES ('Byron', 'Poetry Ltd')").expect("lead");
    wait_for(WAIT, "lead created", || all_done(&mut c, "lead").then_some(()));
    c.batch_execute("UPDATE salesforce.lead SET company = 'Analytical Engines'").expect("lead update");
    wait_for(WAIT, "lead updated", || (states(&mut c, "lead").len() == 2 && all_done(&mut c, "lead")).then_some(()));
    let leads = sf.live("Lead");
    assert_eq!((leads.len(), leads[0]["Company"].clone()), (1, json!("Analytical Engines")));
    let counters = sf.counters();
    assert_eq!(counters["records"]["create"], json!(1), "{counters}");
    // The contact's update went by its sfid too (a row with an sfid is never upserted), and the lead's.
    assert_eq!(counters["records"]["update"], json!(2), "{counters}");
}

#[test]
fn changes_of_one_record_merge_into_one_write() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &["pgforce.enabled = off"]);
    let mut c = cluster.admin();
    c.batch_execute(
        "INSERT INTO salesforce.contact (lastname, email, external_id__c) VALUES ('Draft', 'a@example.com', 'M-1')",
    )
    .expect("insert");
    c.batch_execute("UPDATE salesforce.contact SET lastname = 'Second'").expect("update");
    c.batch_execute("UPDATE salesforce.contact SET email = 'final@example.com'").expect("update");
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Gone', 'M-2'); DELETE FROM salesforce.contact WHERE external_id__c = 'M-2';").expect("insert+delete");
    enable(&mut c);
    wait_for(WAIT, "merged delivery", || all_done(&mut c, "contact").then_some(()));
    assert_eq!(states(&mut c, "contact"), ["MERGED", "MERGED", "SUCCESS", "MERGED", "IGNORED"]);
    let records = sf.live("Contact");
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0]["LastName"].clone(), records[0]["Email"].clone(), records[0]["_writes"].clone()),
        (json!("Second"), json!("final@example.com"), json!(1))
    );
    assert_eq!(sf.counters()["records"]["upsert"], json!(1), "one record sent, once");
}

#[test]
fn transient_errors_are_retried_with_backoff_and_permanent_ones_fail_at_once() {
    let sf = Salesforce::start();
    sf.admin("PUT", "/faults", json!([
        {"object": "Contact", "field": "LastName", "equals": "Locked", "times": 2, "effect": {"type": "lock_chunk"}},
        {"object": "Contact", "field": "Email", "contains": "@blocked.", "effect": {"type": "record_error", "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Blocked domain", "fields": ["Email"]}}
    ]));
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Locked', 'T-1')")
        .expect("insert");
    c.batch_execute("INSERT INTO salesforce.contact (lastname, email, external_id__c) VALUES ('Blocked', 'x@blocked.example', 'P-1')").expect("insert");
    wait_for(Duration::from_secs(20), "retries settle", || all_done(&mut c, "contact").then_some(()));
    let rows = c.query("SELECT external_id__c, l.state::text, l.attempts, l.sf_message FROM salesforce._trigger_log l JOIN salesforce.contact t ON t.id = l.record_id ORDER BY l.id", &[]).expect("log");
    let (ext, state, attempts): (String, String, i32) = (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    assert_eq!((ext.as_str(), state.as_str(), attempts), ("T-1", "SUCCESS", 2), "two lock errors, then success");
    // P-1 may share a chunk with T-1 and see its lock errors first; its validation error then fails it at once.
    let (state, message): (String, Option<String>) = (rows[1].get(1), rows[1].get(3));
    assert_eq!(
        (state.as_str(), message.as_deref()),
        ("FAILED", Some("FIELD_CUSTOM_VALIDATION_EXCEPTION: Blocked domain"))
    );
    let row = c
        .query_one("SELECT _hc_lastop::text, _hc_err FROM salesforce.contact WHERE external_id__c = 'P-1'", &[])
        .expect("row");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<String>>(1)),
        ("FAILED".into(), Some("FIELD_CUSTOM_VALIDATION_EXCEPTION: Blocked domain".into()))
    );
    let counters = sf.counters();
    assert_eq!(counters["records_succeeded"], json!(1), "only T-1's third send succeeded: {counters}");
    assert!(by_ext(&sf.live("Contact"), "P-1").is_none());

    // The documented fix: correct the data in Salesforce's terms, then reset the log rows to NEW.
    sf.admin("DELETE", "/faults", Value::Null);
    c.batch_execute(
        "UPDATE salesforce._trigger_log SET state = 'NEW' WHERE state = 'FAILED' AND table_name = 'contact';",
    )
    .expect("seed retry SQL");
    wait_for(WAIT, "retried failure delivered", || all_done(&mut c, "contact").then_some(()));
    assert!(by_ext(&sf.live("Contact"), "P-1").is_some());
    let lastop: String = c
        .query_one("SELECT _hc_lastop::text FROM salesforce.contact WHERE external_id__c = 'P-1'", &[])
        .expect("row")
        .get(0);
    assert_eq!(lastop, "INSERTED");
}

#[test]
fn a_batch_refused_as_a_whole_is_split_until_only_the_bad_record_fails() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    c.batch_execute(
        "ALTER TABLE salesforce.contact ALTER COLUMN birthdate TYPE text;
         INSERT INTO salesforce.contact (lastname, birthdate, external_id__c)
         SELECT 'Row ' || g, CASE WHEN g = 7 THEN 'not a date' ELSE '2000-01-01' END, 'S-' || g FROM generate_series(1, 12) g;",
    )
    .expect("insert");
    wait_for(WAIT, "split delivery", || all_done(&mut c, "contact").then_some(()));
    let failed: Vec<String> = c.query("SELECT t.external_id__c FROM salesforce._trigger_log l JOIN salesforce.contact t ON t.id = l.record_id WHERE l.state = 'FAILED'", &[]).expect("q").iter().map(|r| r.get(0)).collect();
    assert_eq!(failed, ["S-7"]);
    let message: String =
        c.query_one("SELECT sf_message FROM salesforce._trigger_log WHERE state = 'FAILED'", &[]).expect("q").get(0);
    assert!(message.starts_with("JSON_PARSER_ERROR: "), "{message}");
    assert_eq!(sf.live("Contact").len(), 11);
}

#[test]
fn connection_trouble_pauses_without_costing_attempts_and_loses_nothing() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    sf.admin("POST", "/outage", json!({"mode": "refuse", "seconds": 2.5}));
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) SELECT 'Out ' || g, 'O-' || g FROM generate_series(1, 50) g").expect("insert");
    let state = wait_for(WAIT, "the connection pauses", || {
        let s: String = c
            .query_one("SELECT connection_state FROM salesforce.sync_status WHERE table_name = 'contact'", &[])
            .ok()?
            .get(0);
        (s == "OUTAGE").then_some(s)
    });
    assert_eq!(state, "OUTAGE", "an outage is no operator's pause");
    let pending: i64 = c
        .query_one("SELECT pending_writes FROM salesforce.sync_status WHERE table_name = 'contact'", &[])
        .expect("status")
        .get(0);
    assert_eq!(pending, 50);
    wait_for(Duration::from_secs(20), "delivery after the outage", || all_done(&mut c, "contact").then_some(()));
    let attempts: i64 =
        c.query_one("SELECT sum(attempts)::bigint FROM salesforce._trigger_log", &[]).expect("sum").get(0);
    assert_eq!(attempts, 0, "connection trouble costs the records no attempts");
    assert_eq!(sf.live("Contact").len(), 50);

    // 503 maintenance and 403 REQUEST_LIMIT_EXCEEDED behave the same way.
    sf.admin("PUT", "/faults", json!([
        {"operation": "upsert", "times": 2, "effect": {"type": "http", "status": 503, "error_code": "SERVER_UNAVAILABLE", "message": "down for maintenance"}},
        {"operation": "upsert", "times": 1, "effect": {"type": "http", "status": 403, "error_code": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}}
    ]));
    c.batch_execute("UPDATE salesforce.contact SET title = 'after outage' WHERE external_id__c = 'O-1'")
        .expect("update");
    wait_for(Duration::from_secs(20), "delivery after 5xx/403", || {
        (states(&mut c, "contact").len() == 51 && all_done(&mut c, "contact")).then_some(())
    });
    assert_eq!(by_ext(&sf.live("Contact"), "O-1").map(|r| r["Title"].clone()), Some(json!("after outage")));
    let attempts: i32 =
        c.query_one("SELECT attempts FROM salesforce._trigger_log ORDER BY id DESC LIMIT 1", &[]).expect("q").get(0);
    assert_eq!(attempts, 0);
    // The metrics count what the outages sent back to the queue apart from retries (which cost attempts).
    let (requeued, retried) = wait_for(WAIT, "the counters written", || {
        let r = c
            .query_one("SELECT outage_requeued, retried FROM salesforce.sync_metrics WHERE table_name = 'contact'", &[])
            .ok()?;
        let counts: (i64, i64) = (r.get(0), r.get(1));
        (counts.0 >= 3).then_some(counts)
    });
    assert!(requeued >= 3 && retried == 0, "outage re-sends {requeued}, retries {retried}");
    let status: String = c
        .query_one("SELECT connection_state FROM salesforce.sync_status WHERE table_name = 'contact'", &[])
        .expect("q")
        .get(0);
    assert!(["POLLING_DB_CHANGES", "IDLE"].contains(&status.as_str()), "{status}");
}

#[test]
fn expired_tokens_are_renewed_once() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('First', 'K-1')")
        .expect("insert");
    wait_for(WAIT, "first delivery", || all_done(&mut c, "contact").then_some(()));
    sf.admin("POST", "/expire-sessions", Value::Null);
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Second', 'K-2')")
        .expect("insert");
    wait_for(WAIT, "delivery with a new token", || {
        (states(&mut c, "contact").len() == 2 && all_done(&mut c, "contact")).then_some(())
    });
    assert_eq!(states(&mut c, "contact"), ["SUCCESS", "SUCCESS"]);
    let counters = sf.counters();
    assert_eq!(
        (counters["by_status"]["401"].clone(), counters["by_kind"]["token"].clone()),
        (json!(1), json!(2)),
        "{counters}"
    );
}

#[test]
fn bad_credentials_show_as_unauthorized() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &["pgforce.client_secret = 'wrong'"]);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Waiting', 'U-1')")
        .expect("insert");
    let message = wait_for(WAIT, "UNAUTHORIZED", || {
        let row = c
            .query_one(
                "SELECT connection_state, connection_message FROM salesforce.sync_status WHERE table_name = 'contact'",
                &[],
            )
            .ok()?;
        (row.get::<_, String>(0) == "UNAUTHORIZED").then(|| row.get::<_, Option<String>>(1).unwrap_or_default())
    });
    assert!(message.contains("invalid_client"), "{message}");
    assert!(!message.contains("wrong") && !cluster.server_log().contains("'wrong'"), "the secret never shows");
    assert_eq!(states(&mut c, "contact"), ["NEW"], "nothing is lost while unauthorized");
    // A non-superuser cannot read the secret.
    c.batch_execute("CREATE ROLE reader LOGIN").expect("role");
    let mut reader = cluster.connect("reader", "postgres");
    assert!(reader.query_one("SHOW pgforce.client_secret", &[]).is_err());
    let visible: i64 = reader
        .query_one("SELECT count(*) FROM pg_settings WHERE name = 'pgforce.client_secret'", &[])
        .expect("q")
        .get(0);
    assert_eq!(visible, 0);
}

#[test]
fn archive_requeue_and_sync_status() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &["pgforce.archive_after = 0"]);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Archived', 'A-1')")
        .expect("insert");
    wait_for(WAIT, "delivered and archived", || {
        let n: i64 = c
            .query_one("SELECT count(*) FROM salesforce._trigger_log_archive WHERE state = 'SUCCESS'", &[])
            .ok()?
            .get(0);
        (n == 1).then_some(())
    });
    let live: i64 = c.query_one("SELECT count(*) FROM salesforce._trigger_log", &[]).expect("q").get(0);
    assert_eq!(live, 0, "finished rows leave the live log");
    assert_eq!(by_ext(&sf.live("Contact"), "A-1").map(|r| r["_writes"].clone()), Some(json!(1)));

    // The seed's requeue SQL, verbatim (with its own criteria).
    c.batch_execute(
        "UPDATE salesforce._trigger_log_archive SET state='REQUEUE'
         WHERE state='SUCCESS';
         INSERT INTO salesforce._trigger_log (created_at, updated_at, state, txid, table_name, action, record_id, values, old, sfid)
         SELECT now(), now(), 'NEW', txid, table_name, action, record_id, values, old, sfid
         FROM salesforce._trigger_log_archive where state='REQUEUE';
         UPDATE salesforce._trigger_log_archive SET state='REQUEUED'
         WHERE state='REQUEUE';",
    )
    .expect("requeue");
    wait_for(WAIT, "requeued change sent again", || {
        (by_ext(&sf.live("Contact"), "A-1").map(|r| r["_writes"].clone()) == Some(json!(2))).then_some(())
    });

    // Setting REQUEUE alone is enough: the worker copies the rows back itself.
    wait_for(WAIT, "the requeued row is archived too", || {
        let n: i64 = c.query_one("SELECT count(*) FROM salesforce._trigger_log", &[]).ok()?.get(0);
        (n == 0).then_some(())
    });
    c.batch_execute("UPDATE salesforce._trigger_log_archive SET state = 'REQUEUE' WHERE state = 'SUCCESS'")
        .expect("requeue");
    wait_for(WAIT, "worker-side requeue", || {
        (by_ext(&sf.live("Contact"), "A-1").map(|r| r["_writes"].clone()) == Some(json!(3))).then_some(())
    });
    let requeued: i64 = c
        .query_one("SELECT count(*) FROM salesforce._trigger_log_archive WHERE state = 'REQUEUED'", &[])
        .expect("q")
        .get(0);
    assert!(requeued >= 2);

    // Retention: archive rows older than pgforce.archive_retention are deleted.
    c.batch_execute("ALTER SYSTEM SET pgforce.archive_retention = 0").expect("retention");
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    wait_for(WAIT, "the archive purged", || {
        let n: i64 = c.query_one("SELECT count(*) FROM salesforce._trigger_log_archive", &[]).ok()?.get(0);
        (n == 0).then_some(())
    });

    let row = c.query_one("SELECT pending_writes, errored_writes, last_success_at IS NOT NULL, connection_state, api_used, api_limit FROM salesforce.sync_status WHERE table_name = 'contact'", &[]).expect("status");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, bool>(2)), (0, 0, true));
    assert!(["IDLE", "POLLING_DB_CHANGES"].contains(&row.get::<_, String>(3).as_str()));
    assert_eq!(row.get::<_, Option<i64>>(5), Some(100_000));
}

#[test]
fn ordered_writes_send_one_change_at_a_time() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &["pgforce.enabled = off", "pgforce.write_algorithm = 'ordered'"]);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('v1', 'R-1')").expect("insert");
    c.batch_execute("UPDATE salesforce.contact SET lastname = 'v2'").expect("update");
    c.batch_execute("UPDATE salesforce.contact SET title = 'v3'").expect("update");
    enable(&mut c);
    wait_for(WAIT, "ordered delivery", || all_done(&mut c, "contact").then_some(()));
    assert_eq!(states(&mut c, "contact"), ["SUCCESS", "SUCCESS", "SUCCESS"]);
    let r = by_ext(&sf.live("Contact"), "R-1").cloned().expect("record");
    assert_eq!((r["LastName"].clone(), r["Title"].clone(), r["_writes"].clone()), (json!("v2"), json!("v3"), json!(3)));
}

#[test]
fn failed_records_are_retried_later_when_configured() {
    let sf = Salesforce::start();
    sf.admin("PUT", "/faults", json!([{"object": "Contact", "times": 1, "effect": {"type": "record_error", "status_code": "INSUFFICIENT_ACCESS_OR_READONLY", "message": "insufficient access rights on object id"}}]));
    let cluster = setup(&sf, &["pgforce.retry_failed_after = '1s'"]);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Later', 'F-1')")
        .expect("insert");
    wait_for(WAIT, "the permanent failure", || (states(&mut c, "contact") == ["FAILED"]).then_some(()));
    wait_for(WAIT, "the retry after pgforce.retry_failed_after", || {
        (states(&mut c, "contact") == ["SUCCESS"]).then_some(())
    });
    assert!(by_ext(&sf.live("Contact"), "F-1").is_some());
}

#[test]
fn the_api_budget_is_respected() {
    let sf = Salesforce::start();
    sf.admin("PUT", "/api-usage", json!({"used": 95, "limit": 100}));
    let cluster = setup(&sf, &["pgforce.max_api_usage = 0.9", "pgforce.batch_size = 10"]);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) SELECT 'B' || g, 'B-' || g FROM generate_series(1, 30) g").expect("insert");
    let state = wait_for(WAIT, "throttling", || {
        let s: String = c
            .query_one("SELECT connection_state FROM salesforce.sync_status WHERE table_name = 'contact'", &[])
            .ok()?
            .get(0);
        (s == "THROTTLED").then_some(s)
    });
    assert_eq!(state, "THROTTLED");
    std::thread::sleep(Duration::from_secs(2));
    let calls = sf.counters()["by_kind"]["upsert"].as_u64().unwrap_or_default();
    assert!(calls <= 2, "one batch per pause above the budget threshold, not all three at once ({calls})");
    let pending: i64 = c
        .query_one("SELECT pending_writes FROM salesforce.sync_status WHERE table_name = 'contact'", &[])
        .expect("q")
        .get(0);
    assert!(pending >= 10, "the rest waits ({pending})");
    // The calls left are spread over the day, and the status says how long the backlog takes at that pace.
    let message: String = c
        .query_one("SELECT connection_message FROM salesforce.sync_status WHERE table_name = 'contact'", &[])
        .expect("q")
        .get(0);
    assert!(message.contains("calls left are spread over 24 hours, one cycle every 60 min"), "{message}");
    assert!(message.contains("changes waiting take about"), "{message}");
}

#[test]
fn jwt_bearer_and_refresh_token_flows() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/fakeforce/tests/fixtures");
    let mut config = fakeforce::Config::default();
    config.auth.jwt_public_key = Some(fixtures.join("jwt_test_public.pem"));
    let sf = Salesforce::start_with(config);
    let key = pgforce_integration::file_for_server(&fixtures.join("jwt_test_private.pem"), "jwt.pem");
    let jwt = [
        "pgforce.auth_flow = 'jwt_bearer'".to_string(),
        "pgforce.username = 'integration@pgforce.example'".to_string(),
        format!("pgforce.jwt_key_file = '{}'", key.display()),
    ];
    let cluster = setup(&sf, &jwt.iter().map(String::as_str).collect::<Vec<_>>());
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Signed', 'J-1')")
        .expect("insert");
    wait_for(WAIT, "delivery with a JWT bearer token", || all_done(&mut c, "contact").then_some(()));
    assert_eq!(states(&mut c, "contact"), ["SUCCESS"]);

    c.batch_execute("ALTER SYSTEM SET pgforce.auth_flow = 'refresh_token'").expect("flow");
    c.batch_execute("ALTER SYSTEM SET pgforce.refresh_token = 'pgforce-demo-refresh-token'").expect("token");
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    std::thread::sleep(Duration::from_millis(300));
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Refreshed', 'J-2')")
        .expect("insert");
    wait_for(WAIT, "delivery with a refreshed token", || {
        (states(&mut c, "contact").len() == 2 && all_done(&mut c, "contact")).then_some(())
    });
    assert_eq!(states(&mut c, "contact"), ["SUCCESS", "SUCCESS"]);
    assert_eq!(sf.counters()["by_kind"]["token"], json!(2), "one login per flow");
    let _ = std::fs::remove_file(key);
}

#[test]
fn a_refresh_token_salesforce_rotates_is_kept_across_restarts() {
    let mut config = fakeforce::Config::default();
    config.auth.rotate_refresh_tokens = true;
    let sf = Salesforce::start_with(config);
    let cluster =
        setup(&sf, &["pgforce.auth_flow = 'refresh_token'", "pgforce.refresh_token = 'pgforce-demo-refresh-token'"]);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('One', 'R-1')").expect("one");
    wait_for(WAIT, "the first delivery", || all_done(&mut c, "contact").then_some(()));
    // Salesforce revoked the configured token when it issued a new one. A restarted worker has no session: it logs
    // in again, with the token Salesforce rotated to.
    let first = cluster.worker_pid().expect("worker");
    c.query_one("SELECT pg_terminate_backend($1)", &[&first]).expect("terminate");
    wait_for(Duration::from_secs(20), "the worker restarted", || {
        cluster.worker_pid().filter(|p| *p != first).map(|_| ())
    });
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Two', 'R-2')").expect("two");
    wait_for(Duration::from_secs(20), "delivery after the restart", || {
        (states(&mut c, "contact").len() == 2 && all_done(&mut c, "contact")).then_some(())
    });
    assert_eq!(states(&mut c, "contact"), ["SUCCESS", "SUCCESS"]);
    assert_eq!(sf.counters()["by_kind"]["token"], json!(2), "one login per worker process");
    // It is kept where only superusers read it.
    let kept: i64 = c.query_one("SELECT count(*) FROM salesforce._refresh_token", &[]).expect("kept").get(0);
    assert_eq!(kept, 1);
    let monitor_reads: bool = c
        .query_one("SELECT has_table_privilege('pgforce_monitor', 'salesforce._refresh_token', 'SELECT')", &[])
        .expect("privilege")
        .get(0);
    assert!(!monitor_reads, "the token is a secret");
}

#[test]
fn parents_go_before_children_claimed_with_them() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &["pgforce.enabled = off"]);
    let mut c = cluster.admin();
    c.batch_execute(
        "INSERT INTO salesforce.contact (lastname, external_id__c, account__external_id__c)
              SELECT 'Child ' || g, 'CH-' || g, 'PA-' || (g % 5) FROM generate_series(1, 400) g;
         INSERT INTO salesforce.account (name, external_id__c) SELECT 'Parent ' || g, 'PA-' || g FROM generate_series(0, 4) g;",
    )
    .expect("children logged before their parents");
    enable(&mut c);
    wait_for(WAIT, "delivery", || (all_done(&mut c, "contact") && all_done(&mut c, "account")).then_some(()));
    let retried: i64 = c
        .query_one("SELECT count(*) FROM salesforce._trigger_log WHERE attempts > 0 OR state <> 'SUCCESS'", &[])
        .expect("q")
        .get(0);
    assert_eq!(retried, 0, "every child found its parent on the first attempt");
    assert_eq!(sf.live("Contact").iter().filter(|r| r["AccountId"].is_string()).count(), 400);
}
