//! Salesforce → Postgres (issue 29): a read-only mapping loads every record of its object, follows changes and
//! deletes within its read interval, and a record whose value does not fit its column fails alone.

use std::time::Duration;

use pgforce_integration::{wait_for, Cluster, Salesforce};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn rows(c: &mut postgres::Client) -> Vec<(String, Option<String>, Option<String>, String)> {
    c.query(
        "SELECT sfid, lastname, email, _hc_lastop FROM salesforce.contact WHERE sfid IS NOT NULL ORDER BY lastname",
        &[],
    )
    .expect("rows")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// A cluster whose sync worker reads `sf` (`pgforce.read_interval` = `read_interval`), with pgforce installed and
/// `mapping` (the tables and their map_table) run; its admin connection.
fn reading_cluster(sf: &Salesforce, read_interval: &str, mapping: &str) -> (Cluster, postgres::Client) {
    let mut settings = sf.settings();
    settings.push(format!("pgforce.read_interval = '{read_interval}'"));
    let cluster = Cluster::start_with(true, &settings);
    let mut c = cluster.admin();
    c.batch_execute(&format!("CREATE EXTENSION pgforce CASCADE; {mapping}")).expect("a reading mapping");
    (cluster, c)
}

/// Rows in `salesforce.contact` (-1 while the server cannot answer).
fn contact_rows(c: &mut postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM salesforce.contact", &[]).map(|r| r.get(0)).unwrap_or(-1)
}

#[test]
fn a_read_only_mapping_loads_every_record_then_follows_changes_and_deletes() {
    let sf = Salesforce::start();
    let ada = sf.create("Contact", json!({"LastName": "Ada", "Email": "ada@example.com"}));
    let bob = sf.create("Contact", json!({"LastName": "Bob"}));
    let long = sf.create("Contact", json!({"LastName": "Longer than ten"}));
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname varchar(10), email text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only');",
    );
    // The initial load: every record, written as the sync engine writes (SYNCED, never captured).
    wait_for(WAIT, "the initial load", || (rows(&mut c).len() == 2).then_some(()));
    assert_eq!(
        rows(&mut c),
        vec![
            (ada.clone(), Some("Ada".into()), Some("ada@example.com".into()), "SYNCED".into()),
            (bob.clone(), Some("Bob".into()), None, "SYNCED".into()),
        ]
    );
    let stamped: i64 = c
        .query_one("SELECT count(*) FROM salesforce.contact WHERE systemmodstamp IS NOT NULL AND NOT isdeleted", &[])
        .expect("system columns")
        .get(0);
    assert_eq!(stamped, 2);
    let captured: i64 = c.query_one("SELECT count(*) FROM salesforce._trigger_log", &[]).expect("log").get(0);
    assert_eq!(captured, 0, "writes from Salesforce are not captured");
    let (state, lag_known): (String, bool) = c
        .query_one("SELECT read_state, read_lag IS NOT NULL FROM salesforce.sync_status", &[])
        .map(|r| (r.get(0), r.get(1)))
        .expect("sync_status");
    assert_eq!((state.as_str(), lag_known), ("DATA_SYNCED", true));
    // For postgres_exporter: the rows read, the lag, and the read's API calls, counted for the mapping.
    wait_for(WAIT, "the read's counters", || {
        let r = c
            .query_one("SELECT rows_read, read_lag_seconds IS NOT NULL, api_calls FROM salesforce.sync_metrics", &[])
            .ok()?;
        let (read, lag, calls): (i64, bool, i64) = (r.get(0), r.get(1), r.get(2));
        (read == 2 && lag && calls >= 1).then_some(())
    });
    // The record whose LastName does not fit varchar(10) failed alone, visibly.
    let (failed, error): (i64, Option<String>) = c
        .query_one("SELECT rows_failed, read_error FROM salesforce.sync_status", &[])
        .map(|r| (r.get(0), r.get(1)))
        .expect("read state");
    assert_eq!(failed, 1);
    assert!(error.as_deref().is_some_and(|e| e.contains(&long) && e.contains("too long")), "{error:?}");
    // diagnose() says so, with what to do.
    let (status, detail, hint): (String, String, Option<String>) = c
        .query_one(
            "SELECT status, detail, hint FROM salesforce.diagnose() WHERE check_name = 'reading salesforce.contact'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .expect("diagnose");
    assert_eq!(status, "warning", "{detail}");
    assert!(detail.contains("1 record(s)"), "{detail}");
    assert!(hint.is_some_and(|h| h.contains("salesforce.reload('salesforce.contact')")));

    // A change in Salesforce arrives within the interval; a delete deletes the row.
    std::thread::sleep(Duration::from_millis(1100)); // a new SystemModstamp second
    sf.admin("PATCH", &format!("/records/Contact/{ada}"), json!({"fields": {"LastName": "Ada L."}}));
    wait_for(WAIT, "the change", || {
        rows(&mut c).iter().any(|r| r.0 == ada && r.1.as_deref() == Some("Ada L.")).then_some(())
    });
    sf.delete("Contact", &bob);
    wait_for(WAIT, "the delete", || (!rows(&mut c).iter().any(|r| r.0 == bob)).then_some(()));
    assert_eq!(rows(&mut c).len(), 1);
    // Re-reads of the failed record (the poll's look-back) count it once; once the column fits, a reload reads it.
    let failed: i64 = c.query_one("SELECT rows_failed FROM salesforce.sync_status", &[]).expect("failed").get(0);
    assert_eq!(failed, 1);
    c.batch_execute(
        "ALTER TABLE salesforce.contact ALTER COLUMN lastname TYPE varchar(80); SELECT salesforce.reload('contact');",
    )
    .expect("widen and reload");
    wait_for(WAIT, "the record that did not fit", || rows(&mut c).iter().any(|r| r.0 == long).then_some(()));
    wait_for(WAIT, "no failure left", || {
        let r = c.query_one("SELECT rows_failed, read_error IS NULL FROM salesforce.sync_status", &[]).ok()?;
        (r.get::<_, i64>(0) == 0 && r.get::<_, bool>(1)).then_some(())
    });
}

#[test]
fn on_delete_flag_keeps_the_row_and_read_interval_is_per_mapping() {
    let sf = Salesforce::start();
    let kept = sf.create("Lead", json!({"LastName": "Kept", "Company": "Acme"}));
    // The default interval is long: only the mapping's own read_interval can bring the delete in time.
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1h",
        "CREATE TABLE salesforce.lead (id serial PRIMARY KEY, lastname text, company text);
         SELECT salesforce.map_table('salesforce.lead', 'Lead', mode => 'read_only', read_interval => '1s',
                                     on_delete => 'flag');",
    );
    let flagged = |c: &mut postgres::Client| -> Option<bool> {
        c.query_opt("SELECT isdeleted FROM salesforce.lead WHERE sfid = $1", &[&kept]).ok().flatten().map(|r| r.get(0))
    };
    wait_for(WAIT, "the initial load", || flagged(&mut c).filter(|d| !d).map(|_| ()));
    std::thread::sleep(Duration::from_millis(1100));
    sf.delete("Lead", &kept);
    wait_for(WAIT, "the delete, flagged", || flagged(&mut c).filter(|d| *d).map(|_| ()));
    let (lastname, lastop): (String, String) = c
        .query_one("SELECT lastname, _hc_lastop FROM salesforce.lead WHERE sfid = $1", &[&kept])
        .map(|r| (r.get(0), r.get(1)))
        .expect("the row is kept");
    assert_eq!((lastname.as_str(), lastop.as_str()), ("Kept", "SYNCED"));
}

#[test]
fn reload_repairs_drift_and_deletes_rows_whose_records_are_gone() {
    // Each call takes 1 s, so that reload() can commit while a poll is in flight: the page that poll brings back
    // was read from the old position and must not undo the reload (it did: the reload was forgotten).
    let sf = Salesforce::start_with(fakeforce::Config { latency_ms: 1000, ..fakeforce::Config::default() });
    let ada = sf.create("Contact", json!({"LastName": "Ada"}));
    let bob = sf.create("Contact", json!({"LastName": "Bob"}));
    let cyd = sf.create("Contact", json!({"LastName": "Cyd"}));
    let (cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname varchar(80), email text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only');",
    );
    wait_for(WAIT, "the initial load", || (rows(&mut c).len() == 3).then_some(()));
    // Drift no poll repairs: a row changed in Postgres, a record purged from Salesforce (no delete to read).
    c.execute("UPDATE salesforce.contact SET lastname = 'Drifted' WHERE sfid = $1", &[&ada]).expect("drift");
    sf.admin("DELETE", &format!("/records/Contact/{bob}"), json!(null));
    std::thread::sleep(Duration::from_secs(3));
    let names =
        |c: &mut postgres::Client| rows(c).into_iter().map(|r| (r.0, r.1.unwrap_or_default())).collect::<Vec<_>>();
    assert_eq!(
        names(&mut c),
        vec![(bob.clone(), "Bob".into()), (cyd.clone(), "Cyd".into()), (ada.clone(), "Drifted".into())]
    );
    // reload() while a poll is in flight (pg_stat_activity shows the worker's step).
    wait_for(WAIT, "a poll in flight", || {
        let q = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgforce sync worker' AND query LIKE '%reading Contact%'";
        (c.query_one(q, &[]).ok()?.get::<_, i64>(0) == 1).then_some(())
    });
    let said: String = c.query_one("SELECT salesforce.reload('contact')", &[]).expect("reload").get(0);
    assert!(said.contains("read again"), "{said}");
    wait_for(WAIT, "the reload", || {
        (names(&mut c) == vec![(ada.clone(), "Ada".to_string()), (cyd.clone(), "Cyd".to_string())]).then_some(())
    });
    wait_for(WAIT, "the reload's end", || {
        let state: String = c.query_one("SELECT read_state FROM salesforce.sync_status", &[]).ok()?.get(0);
        (state == "DATA_SYNCED").then_some(())
    });
    let seen: i64 = c.query_one("SELECT count(*) FROM salesforce._read_seen", &[]).expect("seen").get(0);
    assert_eq!(seen, 0, "what the reload saw is forgotten at its end");
    // reload() is for operators, and only of a mapping that reads.
    c.batch_execute(
        "CREATE ROLE clerk LOGIN; CREATE TABLE salesforce.lead (id serial PRIMARY KEY, lastname text, company text);
                     SELECT salesforce.map_table('salesforce.lead', 'Lead')",
    )
    .expect("a write mapping");
    let err = c.query_one("SELECT salesforce.reload('lead')", &[]).expect_err("lead does not read");
    assert_eq!(err.code().map(|c| c.code()), Some("55000"));
    let mut clerk = cluster.connect("clerk", "postgres");
    let err = clerk.query_one("SELECT salesforce.reload('contact')", &[]).expect_err("not an operator");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"));
}

/// Creates `n` Contacts through sObject Collections (200 a call); returns their ids.
fn create_contacts(sf: &Salesforce, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for start in (0..n).step_by(200) {
        let records: Vec<serde_json::Value> = (start..(start + 200).min(n))
            .map(|i| json!({"attributes": {"type": "Contact"}, "LastName": format!("L{i:05}")}))
            .collect();
        let answer = sf.rest("POST", "composite/sobjects", Some(json!({"allOrNone": true, "records": records})));
        for r in answer.as_array().expect("collection results") {
            ids.push(r["id"].as_str().expect("created").to_string());
        }
    }
    ids
}

#[test]
fn a_crash_during_the_load_loses_and_duplicates_nothing() {
    // Each call takes 300 ms, so the load of 5,000 records (3 pages) is under way when the server goes down.
    let sf = Salesforce::start_with(fakeforce::Config { latency_ms: 300, ..fakeforce::Config::default() });
    let ids = create_contacts(&sf, 5000);
    let (cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname varchar(80));
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only');",
    );
    wait_for(WAIT, "the load under way", || (contact_rows(&mut c) > 0).then_some(()));
    let before = contact_rows(&mut c);
    cluster.crash_and_restart();
    let mut c = cluster.admin();
    wait_for(Duration::from_secs(60), "the load finished after the crash", || {
        (contact_rows(&mut c) == 5000).then_some(())
    });
    let (rows, distinct): (i64, i64) = c
        .query_one("SELECT count(*), count(DISTINCT sfid) FROM salesforce.contact", &[])
        .map(|r| (r.get(0), r.get(1)))
        .expect("rows");
    assert_eq!((rows, distinct), (5000, 5000), "{before} rows before the crash");
    assert!(before < 5000, "the crash came after the load ({before} rows)");
    let read: Vec<String> = c
        .query("SELECT sfid FROM salesforce.contact ORDER BY sfid", &[])
        .expect("sfids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(read, expected);
    wait_for(WAIT, "the read caught up", || {
        let s: String = c.query_one("SELECT read_state FROM salesforce.sync_status", &[]).ok()?.get(0);
        (s == "DATA_SYNCED").then_some(())
    });
}

#[test]
fn reads_stop_above_the_api_budget_and_go_on_below_it() {
    let sf = Salesforce::start();
    create_contacts(&sf, 2500);
    // The org's usage is above pgforce.max_api_usage (0.9): the first page's answer says so, and reading stops.
    sf.admin("PUT", "/api-usage", json!({"used": 950, "limit": 1000}));
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname varchar(80));
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only');",
    );
    wait_for(WAIT, "the first page", || (contact_rows(&mut c) > 0).then_some(()));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(contact_rows(&mut c), 2000, "one page read, then the reads wait");
    // The budget frees up (a new day): the next writes' or reads' answer says so, and the read goes on.
    sf.admin("PUT", "/api-usage", json!({"used": 0, "limit": 1000}));
    c.batch_execute("SELECT salesforce.retry_now()").expect("retry_now");
    wait_for(Duration::from_secs(60), "the rest of the load", || (contact_rows(&mut c) == 2500).then_some(()));
}
