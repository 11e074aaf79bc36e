//! Salesforce → Postgres (issue 29): a read-only mapping loads every record of its object, follows changes and
//! deletes within its read interval, and a record whose value does not fit its column fails alone.

use std::time::Duration;

use pgforce_integration::{wait_for, Cluster, Salesforce};
use serde_json::{json, Value};

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
    reading_cluster_with(sf, &[&format!("pgforce.read_interval = '{read_interval}'")], mapping)
}

/// `reading_cluster` with these `postgresql.conf` lines.
fn reading_cluster_with(sf: &Salesforce, lines: &[&str], mapping: &str) -> (Cluster, postgres::Client) {
    let mut settings = sf.settings();
    settings.extend(lines.iter().map(|l| l.to_string()));
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
    // Drift: a row changed in Postgres (polls repair it only while its record is within their look-back), and a
    // record purged from Salesforce, which no poll sees (no delete to read).
    c.execute("UPDATE salesforce.contact SET lastname = 'Drifted' WHERE sfid = $1", &[&ada]).expect("drift");
    sf.admin("DELETE", &format!("/records/Contact/{bob}"), json!(null));
    std::thread::sleep(Duration::from_secs(3));
    let names =
        |c: &mut postgres::Client| rows(c).into_iter().map(|r| (r.0, r.1.unwrap_or_default())).collect::<Vec<_>>();
    assert!(names(&mut c).contains(&(bob.clone(), "Bob".into())), "no poll sees a purged record");
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
                     SELECT salesforce.map_table('salesforce.lead', 'Lead', mode => 'write_only')",
    )
    .expect("a write mapping");
    let err = c.query_one("SELECT salesforce.reload('lead')", &[]).expect_err("lead does not read");
    assert_eq!(err.code().map(|c| c.code()), Some("55000"));
    let mut clerk = cluster.connect("clerk", "postgres");
    let err = clerk.query_one("SELECT salesforce.reload('contact')", &[]).expect_err("not an operator");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"));
    // A role that may not read the table learns nothing of what is read into it; once it may, it sees the reads.
    let reads = |c: &mut postgres::Client| -> (Option<String>, Option<i64>, Option<i64>) {
        let r = c
            .query_one(
                "SELECT read_state, rows_read, rows_failed FROM salesforce.sync_status WHERE table_name = 'contact'",
                &[],
            )
            .expect("sync_status");
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(reads(&mut clerk), (None, None, None));
    c.batch_execute("GRANT SELECT ON salesforce.contact TO clerk").expect("grant");
    let (state, read, failed) = reads(&mut clerk);
    assert!(state.is_some() && read.is_some_and(|n| n > 0) && failed == Some(0), "{state:?} {read:?} {failed:?}");
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

/// `salesforce.contact`'s row of `sfid`: (lastname, email, _hc_lastop, _hc_err).
fn contact(
    c: &mut postgres::Client,
    sfid: &str,
) -> Option<(Option<String>, Option<String>, Option<String>, Option<String>)> {
    c.query_opt("SELECT lastname, email, _hc_lastop, _hc_err FROM salesforce.contact WHERE sfid = $1", &[&sfid])
        .ok()
        .flatten()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
}

#[test]
fn a_read_write_mapping_reads_and_never_undoes_a_local_change_on_its_way() {
    let sf = Salesforce::start();
    let ada = sf.create("Contact", json!({"LastName": "Ada", "Email": "ada@example.com"}));
    let bob = sf.create("Contact", json!({"LastName": "Bob"}));
    // The default mode, read_write: both ways.
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname varchar(80), email text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact');",
    );
    wait_for(WAIT, "the initial load", || (contact_rows(&mut c) == 2).then_some(()));
    // Two local changes that cannot be delivered: an email Salesforce refuses (FAILED, awaiting a fix) and a delete
    // refused as well.
    sf.admin(
        "PUT",
        "/faults",
        json!([{"object": "Contact", "field": "Email", "contains": "@blocked.", "effect": {"type": "record_error",
                 "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Blocked domain"}},
               {"object": "Contact", "operation": "delete", "effect": {"type": "record_error",
                 "status_code": "ENTITY_IS_LOCKED", "message": "Locked by an approval"}}]),
    );
    c.batch_execute(&format!(
        "UPDATE salesforce.contact SET email = 'ada@blocked.example' WHERE sfid = '{ada}';
         DELETE FROM salesforce.contact WHERE sfid = '{bob}';"
    ))
    .expect("local changes");
    wait_for(WAIT, "both changes failed", || {
        let failed: i64 =
            c.query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'FAILED'", &[]).ok()?.get(0);
        (failed == 2).then_some(())
    });
    // Meanwhile both records change in Salesforce; a third record, changed after them, shows a read went past them.
    std::thread::sleep(Duration::from_millis(1100));
    sf.admin("PATCH", &format!("/records/Contact/{ada}"), json!({"fields": {"LastName": "Ada SF"}}));
    sf.admin("PATCH", &format!("/records/Contact/{bob}"), json!({"fields": {"LastName": "Bob SF"}}));
    std::thread::sleep(Duration::from_millis(1100));
    let cyd = sf.create("Contact", json!({"LastName": "Cyd"}));
    wait_for(WAIT, "a read past the changes", || contact(&mut c, &cyd).map(|_| ()));
    std::thread::sleep(Duration::from_millis(2500)); // and a few more polls
    let (lastname, email, lastop, err) = contact(&mut c, &ada).expect("ada's row");
    assert_eq!(
        (lastname.as_deref(), email.as_deref(), lastop.as_deref()),
        (Some("Ada"), Some("ada@blocked.example"), Some("FAILED")),
        "the failed local change keeps its values until it is fixed"
    );
    assert!(err.is_some_and(|e| e.contains("Blocked domain")));
    assert_eq!(contact(&mut c, &bob), None, "a row whose delete is on its way is not brought back");

    // Fixed, the change goes out, and Salesforce's own change comes in beside it.
    sf.admin("DELETE", "/faults", json!(null));
    c.batch_execute(&format!("UPDATE salesforce.contact SET email = 'ada@example.org' WHERE sfid = '{ada}'"))
        .expect("the fix");
    wait_for(WAIT, "the fix delivered and Salesforce's change read", || {
        let (lastname, email, _, _) = contact(&mut c, &ada)?;
        (lastname.as_deref() == Some("Ada SF") && email.as_deref() == Some("ada@example.org")).then_some(())
    });
    let record = sf.records("Contact").into_iter().find(|r| r["Id"] == json!(ada)).expect("ada's record");
    assert_eq!((&record["LastName"], &record["Email"]), (&json!("Ada SF"), &json!("ada@example.org")));

    // A row inserted here gets its record, and reads of that record (its echo) neither copy the row nor hide the
    // insert's outcome.
    c.batch_execute("INSERT INTO salesforce.contact (lastname) VALUES ('Dee')").expect("insert");
    let dee: String = wait_for(WAIT, "the insert delivered", || {
        c.query_one("SELECT sfid FROM salesforce.contact WHERE lastname = 'Dee'", &[]).ok()?.get(0)
    });
    wait_for(WAIT, "its echo read", || {
        let stamped: bool = c
            .query_one("SELECT systemmodstamp IS NOT NULL FROM salesforce.contact WHERE sfid = $1", &[&dee])
            .ok()?
            .get(0);
        stamped.then_some(())
    });
    std::thread::sleep(Duration::from_millis(2500));
    let (count, lastop): (i64, Option<String>) = c
        .query_one("SELECT count(*), max(_hc_lastop) FROM salesforce.contact WHERE lastname = 'Dee'", &[])
        .map(|r| (r.get(0), r.get(1)))
        .expect("dee");
    assert_eq!((count, lastop.as_deref()), (1, Some("INSERTED")));
    let live: Vec<String> =
        sf.live("Contact").iter().map(|r| r["Id"].as_str().unwrap_or_default().to_string()).collect();
    let rows: i64 =
        c.query_one("SELECT count(*) FROM salesforce.contact WHERE sfid IS NOT NULL", &[]).expect("n").get(0);
    assert_eq!(rows as usize, live.len() - 1, "one row per record, but bob's, whose delete failed: {live:?}");
}

#[test]
fn a_record_whose_insert_answer_was_lost_is_not_read_as_a_second_row() {
    let sf = Salesforce::start();
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname varchar(80), email text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact');",
    );
    wait_for(WAIT, "the (empty) initial load", || {
        let state: Option<String> = c.query_one("SELECT read_state FROM salesforce.sync_status", &[]).ok()?.get(0);
        (state.as_deref() == Some("DATA_SYNCED")).then_some(())
    });
    // The create is applied in Salesforce, but its answer is lost: until the in-doubt search (after
    // pgforce.request_timeout, 5 s here) adopts the record, reads every second see a record no row has.
    sf.admin("PUT", "/faults", json!([{"operation": "create", "times": 1, "effect": {"type": "drop_after_commit"}}]));
    c.batch_execute("INSERT INTO salesforce.contact (lastname) VALUES ('Twin')").expect("insert");
    let sfid: String = wait_for(Duration::from_secs(30), "the insert's record adopted", || {
        c.query_one("SELECT sfid FROM salesforce.contact WHERE lastname = 'Twin' AND sfid IS NOT NULL", &[])
            .ok()?
            .get(0)
    });
    assert_eq!(sf.counters()["dropped_connections"], json!(1), "the answer was lost once");
    std::thread::sleep(Duration::from_millis(2500)); // more polls
    let rows: i64 = c.query_one("SELECT count(*) FROM salesforce.contact", &[]).expect("rows").get(0);
    let live = sf.live("Contact");
    assert_eq!((rows, live.len()), (1, 1), "one row, one record: {live:?}");
    assert_eq!(live[0]["Id"], json!(sfid));
}

#[test]
fn mappings_polled_together_share_one_call() {
    let sf = Salesforce::start();
    sf.create("Contact", json!({"LastName": "Ada"}));
    sf.create("Lead", json!({"LastName": "Bob", "Company": "Acme"}));
    sf.create("Account", json!({"Name": "Acme"}));
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text);
         CREATE TABLE salesforce.lead (id serial PRIMARY KEY, lastname text, company text);
         CREATE TABLE salesforce.account (id serial PRIMARY KEY, name text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only');
         SELECT salesforce.map_table('salesforce.lead', 'Lead', mode => 'read_only');
         SELECT salesforce.map_table('salesforce.account', 'Account', mode => 'read_only');",
    );
    wait_for(WAIT, "the three loads", || {
        let n: i64 = c
            .query_one(
                "SELECT (SELECT count(*) FROM salesforce.contact) + (SELECT count(*) FROM salesforce.lead)
                      + (SELECT count(*) FROM salesforce.account)",
                &[],
            )
            .ok()?
            .get(0);
        (n == 3).then_some(())
    });
    let used = |sf: &Salesforce| sf.counters()["api_usage"]["used"].as_u64().unwrap_or_default();
    let kind = |counters: &Value, k: &str| counters["by_kind"][k].as_u64().unwrap_or_default();
    let (before, counted) = (used(&sf), sf.counters());
    std::thread::sleep(Duration::from_secs(6));
    let spent = used(&sf) - before;
    let counters = sf.counters();
    // Three objects polled every second: one Composite call a second, not three queries (each load's count, before,
    // was a query of its own).
    assert!(spent <= 9, "{spent} calls in 6 s for three mappings polled every second: {counters}");
    assert!(kind(&counters, "composite") - kind(&counted, "composite") >= 4, "{counters}");
    assert_eq!(kind(&counters, "query"), kind(&counted, "query"), "{counters}");
    let calls: i64 =
        c.query_one("SELECT sum(api_calls)::int8 FROM salesforce.sync_metrics", &[]).expect("metrics").get(0);
    assert!(calls >= 4 && calls as u64 <= used(&sf), "each call counted once: {calls}");
}

#[test]
fn records_purged_merged_away_or_undeleted_unseen_by_polls_are_found() {
    // fakeforce's delete log counts in seconds instead of Salesforce's minutes, so that sweeps need not wait.
    let sf = Salesforce::start_with(fakeforce::Config { replication_unit_ms: 1000, ..fakeforce::Config::default() });
    let ids: Vec<String> =
        ["Ada", "Bob", "Cyd", "Dee"].iter().map(|n| sf.create("Contact", json!({"LastName": n}))).collect();
    let (ada, bob, cyd, dee) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let (cluster, mut c) = reading_cluster_with(
        &sf,
        &[
            "pgforce.read_interval = '1s'",
            "pgforce.delete_sweep_interval = '3s'",
            "pgforce.compare_interval = '12s'",
            // No look-back: an undeleted record is found by the comparison alone.
            "pgforce.read_look_back = 0",
        ],
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname varchar(80));
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only');",
    );
    let has = |c: &mut postgres::Client, sfid: &str| -> Option<bool> {
        c.query_one("SELECT count(*) FROM salesforce.contact WHERE sfid = $1", &[&sfid])
            .ok()
            .map(|r| r.get::<_, i64>(0) == 1)
    };
    wait_for(WAIT, "the initial load", || (contact_rows(&mut c) == 4).then_some(()));
    // Purged without a delete a poll could see (the recycle bin emptied at once), and merged away: only the
    // delete log tells.
    sf.admin("DELETE", &format!("/records/Contact/{bob}"), json!(null));
    sf.admin("POST", "/merge", json!({"master": ada, "losers": [cyd]}));
    wait_for(WAIT, "the purged and merged-away rows deleted", || {
        (has(&mut c, bob) == Some(false) && has(&mut c, cyd) == Some(false)).then_some(())
    });
    assert_eq!(has(&mut c, ada), Some(true), "the merge's master stays");
    // Undeleted without a new SystemModstamp: no poll sees it; the periodic comparison does.
    std::thread::sleep(Duration::from_millis(1100));
    sf.delete("Contact", dee);
    wait_for(WAIT, "the delete", || (has(&mut c, dee) == Some(false)).then_some(()));
    // A later record moves the position past the delete's stamp, which the undelete keeps.
    std::thread::sleep(Duration::from_millis(1100));
    let eve = sf.create("Contact", json!({"LastName": "Eve"}));
    wait_for(WAIT, "eve", || (has(&mut c, &eve) == Some(true)).then_some(()));
    sf.admin("POST", &format!("/records/Contact/{dee}/undelete"), json!(null));
    wait_for(Duration::from_secs(40), "the undeleted record back", || (has(&mut c, dee) == Some(true)).then_some(()));
    // A delete log purged since the last sweep is a gap: everything is compared, nothing guessed.
    sf.admin("POST", "/delete-log/purge", json!(null));
    wait_for(Duration::from_secs(30), "the gap noticed", || {
        cluster.server_log().contains("delete log has a gap").then_some(())
    });
    wait_for(WAIT, "the comparison's end", || {
        let state: String = c.query_one("SELECT read_state FROM salesforce.sync_status", &[]).ok()?.get(0);
        (state == "DATA_SYNCED").then_some(())
    });
    assert_eq!(contact_rows(&mut c), 3, "ada, dee and eve");
}

#[test]
fn a_mapping_that_stops_reading_raises_an_alert_resolved_when_it_reads_again() {
    let sf = Salesforce::start();
    sf.create("Contact", json!({"LastName": "Ada"}));
    let (_cluster, mut c) = reading_cluster_with(
        &sf,
        &["pgforce.read_interval = '1s'", "pgforce.alert_stalled_after = '3s'"],
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only');",
    );
    wait_for(WAIT, "the initial load", || (contact_rows(&mut c) == 1).then_some(()));
    // Every query refused from now on: the reads fail, the mapping falls behind.
    sf.admin(
        "PUT",
        "/faults",
        json!([{"operation": "query", "effect": {"type": "http", "status": 400, "error_code": "INVALID_FIELD",
                 "message": "No such column 'LastName' on entity 'Contact'"}}]),
    );
    let alert = |c: &mut postgres::Client| -> Option<(String, Option<bool>)> {
        let r = c
            .query_opt(
                "SELECT message, resolved_at IS NOT NULL FROM salesforce.sync_alerts WHERE kind = 'read_stalled'
                  ORDER BY id DESC LIMIT 1",
                &[],
            )
            .ok()??;
        Some((r.get(0), r.get(1)))
    };
    let (message, resolved) = wait_for(WAIT, "the read_stalled alert", || alert(&mut c));
    assert!(message.contains("contact has not caught up with Salesforce"), "{message}");
    assert_eq!(resolved, Some(false));
    let (state, error): (Option<String>, Option<String>) = c
        .query_one("SELECT read_state, read_error FROM salesforce.sync_status", &[])
        .map(|r| (r.get(0), r.get(1)))
        .expect("status");
    assert!(error.is_some_and(|e| e.contains("INVALID_FIELD")));
    assert_eq!(state.as_deref(), Some("BAD_CONFIG"), "Salesforce has no such field: the mapping needs a fix");
    sf.admin("DELETE", "/faults", json!(null));
    wait_for(WAIT, "the alert resolved", || alert(&mut c).filter(|a| a.1 == Some(true)).map(|_| ()));
}

#[test]
fn values_arrive_exactly_whatever_the_servers_time_zone() {
    let sf = Salesforce::start();
    let id = sf.create(
        "Invoice__c",
        json!({"Name": "INV-1", "Amount__c": 1234.5, "Due_Date__c": "2026-02-28", "Paid__c": true,
               "Issued_At__c": "2026-03-29T01:30:00.000+0000", "acme__Tier__c": "Gold"}),
    );
    // A server far from UTC, on the day its clocks change.
    let (_cluster, mut c) = reading_cluster_with(
        &sf,
        &["pgforce.read_interval = '1s'", "timezone = 'Europe/Paris'"],
        "CREATE TABLE salesforce.invoice__c (id serial PRIMARY KEY, name varchar(80), amount__c numeric(18, 6),
                                             due_date__c date, paid__c boolean, issued_at__c timestamptz,
                                             acme__tier__c text);
         SELECT salesforce.map_table('salesforce.invoice__c', 'Invoice__c', mode => 'read_only');",
    );
    // This session reads in UTC; the worker's ran in Paris.
    c.batch_execute("SET TIME ZONE 'UTC'").expect("session time zone");
    let row = wait_for(WAIT, "the invoice", || {
        c.query_opt(
            "SELECT name, amount__c::text, due_date__c::text, paid__c, issued_at__c::text, acme__tier__c,
                    abs(EXTRACT(epoch FROM systemmodstamp - (now() AT TIME ZONE 'UTC'))) < 120
                    AND abs(EXTRACT(epoch FROM createddate - (now() AT TIME ZONE 'UTC'))) < 120
               FROM salesforce.invoice__c WHERE sfid = $1",
            &[&id],
        )
        .ok()
        .flatten()
    });
    let got: (String, String, String, bool, String, String, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5), row.get(6));
    assert_eq!(
        got,
        (
            "INV-1".into(),
            "1234.500000".into(),
            "2026-02-28".into(),
            true,
            "2026-03-29 01:30:00+00".into(),
            "Gold".into(),
            true
        ),
        "systemmodstamp and createddate are UTC wall time in timestamp columns, whatever the server's TimeZone"
    );
}

#[test]
fn an_outage_and_an_expired_session_are_waited_out_and_lose_nothing() {
    let sf = Salesforce::start();
    let ada = sf.create("Contact", json!({"LastName": "Ada"}));
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only');",
    );
    let lastname = |c: &mut postgres::Client| -> Option<String> {
        c.query_opt("SELECT lastname FROM salesforce.contact WHERE sfid = $1", &[&ada]).ok().flatten().map(|r| r.get(0))
    };
    wait_for(WAIT, "the initial load", || lastname(&mut c));
    // Salesforce refuses connections for 4 s; a change made meanwhile (by another user) arrives after.
    sf.admin("POST", "/outage", json!({"mode": "refuse", "seconds": 4}));
    std::thread::sleep(Duration::from_millis(1100));
    sf.admin("PATCH", &format!("/records/Contact/{ada}"), json!({"fields": {"LastName": "During the outage"}}));
    wait_for(Duration::from_secs(40), "the change after the outage", || {
        (lastname(&mut c).as_deref() == Some("During the outage")).then_some(())
    });
    // The session expires: the next read logs in again, transparently.
    sf.admin("POST", "/expire-sessions", json!(null));
    std::thread::sleep(Duration::from_millis(1100));
    sf.admin("PATCH", &format!("/records/Contact/{ada}"), json!({"fields": {"LastName": "After the expiry"}}));
    wait_for(WAIT, "the change after the expiry", || {
        (lastname(&mut c).as_deref() == Some("After the expiry")).then_some(())
    });
    let (rows, error): (i64, Option<String>) = c
        .query_one("SELECT (SELECT count(*) FROM salesforce.contact), read_error FROM salesforce.sync_status", &[])
        .map(|r| (r.get(0), r.get(1)))
        .expect("status");
    assert_eq!((rows, error), (1, None));
}

#[test]
fn a_change_committed_later_than_its_stamp_is_still_read() {
    let sf = Salesforce::start();
    let ada = sf.create("Contact", json!({"LastName": "Ada"}));
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only');",
    );
    wait_for(WAIT, "the initial load", || (contact_rows(&mut c) == 1).then_some(()));
    // Later records move the position past now…
    std::thread::sleep(Duration::from_millis(3100));
    let bob = sf.create("Contact", json!({"LastName": "Bob"}));
    wait_for(WAIT, "bob", || {
        let n: i64 = c.query_one("SELECT count(*) FROM salesforce.contact WHERE sfid = $1", &[&bob]).ok()?.get(0);
        (n == 1).then_some(())
    });
    // …then a long transaction commits a change of ada stamped 2 s ago, before the position (and after ada's
    // previous version).
    sf.admin(
        "PATCH",
        &format!("/records/Contact/{ada}"),
        json!({"fields": {"LastName": "Ada, late"}, "stamp_seconds_ago": 2}),
    );
    wait_for(WAIT, "the late change", || {
        let name: String = c.query_one("SELECT lastname FROM salesforce.contact WHERE sfid = $1", &[&ada]).ok()?.get(0);
        (name == "Ada, late").then_some(())
    });
}

#[test]
fn a_parent_referenced_by_its_external_id_is_read_through_the_relationship() {
    let sf = Salesforce::start();
    let acme = sf.create("Account", json!({"Name": "Acme", "External_Id__c": "A-1"}));
    let ada = sf.create("Contact", json!({"LastName": "Ada", "AccountId": acme}));
    let bob = sf.create("Contact", json!({"LastName": "Bob"}));
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text, accountid varchar(18),
                                          account__external_id__c text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only');",
    );
    let parent = |c: &mut postgres::Client, sfid: &str| -> Option<(Option<String>, Option<String>)> {
        c.query_opt("SELECT accountid, account__external_id__c FROM salesforce.contact WHERE sfid = $1", &[&sfid])
            .ok()
            .flatten()
            .map(|r| (r.get(0), r.get(1)))
    };
    wait_for(WAIT, "the initial load", || (contact_rows(&mut c) == 2).then_some(()));
    assert_eq!(parent(&mut c, &ada), Some((Some(acme.clone()), Some("A-1".into()))), "the lookup as text and by key");
    assert_eq!(parent(&mut c, &bob), Some((None, None)), "no parent: NULL");
}

#[test]
fn a_large_object_loads_through_one_bulk_job_and_a_small_one_through_rest() {
    let sf = Salesforce::start();
    let ids = create_contacts(&sf, 20_000);
    let lead = sf.create("Lead", json!({"LastName": "Small", "Company": "Acme"}));
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname varchar(80));
         CREATE TABLE salesforce.lead (id serial PRIMARY KEY, lastname text, company text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only');
         SELECT salesforce.map_table('salesforce.lead', 'Lead', mode => 'read_only');",
    );
    wait_for(Duration::from_secs(120), "the bulk load", || (contact_rows(&mut c) == 20_000).then_some(()));
    let (rows, distinct, named): (i64, i64, i64) = c
        .query_one(
            "SELECT count(*), count(DISTINCT sfid), count(*) FILTER (WHERE lastname ~ '^L[0-9]{5}$') FROM salesforce.contact",
            &[],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .expect("rows");
    assert_eq!((rows, distinct, named), (20_000, 20_000, 20_000));
    let small: i64 =
        c.query_one("SELECT count(*) FROM salesforce.lead WHERE sfid = $1", &[&lead]).expect("lead").get(0);
    assert_eq!(small, 1);
    let counters = sf.counters();
    // One job: created, looked at, one result set (fewer than ten calls); the lead read REST pages.
    let bulk = counters["by_kind"]["bulk"].as_u64().unwrap_or_default();
    assert!((3..10).contains(&bulk), "{counters}");
    wait_for(WAIT, "both caught up", || {
        let n: i64 = c
            .query_one("SELECT count(*) FROM salesforce.sync_status WHERE read_state = 'DATA_SYNCED'", &[])
            .ok()?
            .get(0);
        (n == 2).then_some(())
    });
    // The polls go on from when the job was asked for.
    std::thread::sleep(Duration::from_millis(1100));
    sf.admin("PATCH", &format!("/records/Contact/{}", ids[7]), json!({"fields": {"LastName": "Changed"}}));
    wait_for(WAIT, "a change after the load", || {
        let name: String =
            c.query_one("SELECT lastname FROM salesforce.contact WHERE sfid = $1", &[&ids[7]]).ok()?.get(0);
        (name == "Changed").then_some(())
    });
    // A reload goes through a new job, and repairs drift.
    c.batch_execute(&format!(
        "UPDATE salesforce.contact SET lastname = 'Drifted' WHERE sfid = '{}'; SELECT salesforce.reload('contact');",
        ids[9]
    ))
    .expect("drift and reload");
    wait_for(Duration::from_secs(60), "the reload's repair", || {
        let name: String =
            c.query_one("SELECT lastname FROM salesforce.contact WHERE sfid = $1", &[&ids[9]]).ok()?.get(0);
        (name == "L00009").then_some(())
    });
    assert!(sf.counters()["by_kind"]["bulk"].as_u64().unwrap_or_default() > bulk, "the reload's own job");
}

#[test]
fn a_foreign_key_relationship_reads_the_parent_rows_id() {
    let sf = Salesforce::start();
    let acme = sf.create("Account", json!({"Name": "Acme"}));
    let ada = sf.create("Contact", json!({"LastName": "Ada", "AccountId": acme}));
    let bob = sf.create("Contact", json!({"LastName": "Bob"}));
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.account (id serial PRIMARY KEY, name text);
         CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text,
                                          account_id integer REFERENCES salesforce.account (id));
         SELECT salesforce.map_table('salesforce.account', 'Account', mode => 'read_only');
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only',
                                     relationships => '{\"account_id\": \"AccountId\"}');",
    );
    wait_for(WAIT, "the initial loads", || (contact_rows(&mut c) == 2).then_some(()));
    let parent = |c: &mut postgres::Client, sfid: &str| -> Option<Option<String>> {
        c.query_opt(
            "SELECT a.sfid FROM salesforce.contact t LEFT JOIN salesforce.account a ON a.id = t.account_id
              WHERE t.sfid = $1",
            &[&sfid],
        )
        .ok()
        .flatten()
        .map(|r| r.get(0))
    };
    wait_for(WAIT, "ada's parent", || (parent(&mut c, &ada) == Some(Some(acme.clone()))).then_some(()));
    assert_eq!(parent(&mut c, &bob), Some(None), "no parent: NULL");
}

#[test]
fn a_reload_of_a_read_write_table_while_it_is_written_loses_nothing_and_never_empties_it() {
    // Each call takes 300 ms: the reload of 5,000 records (three pages) takes a while, and the writes go on.
    let sf = Salesforce::start_with(fakeforce::Config { latency_ms: 300, ..fakeforce::Config::default() });
    create_contacts(&sf, 5000);
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname varchar(80));
         SELECT salesforce.map_table('salesforce.contact', 'Contact');",
    );
    wait_for(Duration::from_secs(60), "the initial load", || (contact_rows(&mut c) == 5000).then_some(()));
    c.batch_execute("SELECT salesforce.reload('contact')").expect("reload");
    let mut fewest = i64::MAX;
    for n in 0..20 {
        c.batch_execute(&format!(
            "INSERT INTO salesforce.contact (lastname) VALUES ('New {n}');
             UPDATE salesforce.contact SET lastname = 'Edited {n}' WHERE lastname = 'L{n:05}';"
        ))
        .expect("writes during the reload");
        fewest = fewest.min(contact_rows(&mut c));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(fewest >= 5000, "the table was never emptied: {fewest} rows at the fewest");
    wait_for(Duration::from_secs(60), "the reload's end and every write delivered", || {
        let r = c
            .query_one(
                "SELECT (SELECT read_state FROM salesforce.sync_status),
                        (SELECT count(*) FROM salesforce._trigger_log WHERE state IN ('NEW', 'PENDING'))",
                &[],
            )
            .ok()?;
        (r.get::<_, String>(0) == "DATA_SYNCED" && r.get::<_, i64>(1) == 0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(2500)); // a few more polls
    let rows: Vec<(String, String)> = c
        .query("SELECT sfid, lastname FROM salesforce.contact ORDER BY sfid", &[])
        .expect("rows")
        .iter()
        .map(|r| (r.get::<_, Option<String>>(0).unwrap_or_default(), r.get(1)))
        .collect();
    let mut records: Vec<(String, String)> = sf
        .live("Contact")
        .iter()
        .map(|r| {
            (r["Id"].as_str().unwrap_or_default().to_string(), r["LastName"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    records.sort();
    assert_eq!(rows.len(), 5020, "5,000 records and 20 new rows, each once");
    assert_eq!(rows, records, "every row is its record, with the edits made during the reload");
}

#[test]
fn a_change_saved_within_the_same_second_as_the_version_read_is_read() {
    let sf = Salesforce::start();
    let ada = sf.create("Contact", json!({"LastName": "Ada"}));
    let (_cluster, mut c) = reading_cluster(
        &sf,
        "1s",
        "CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact', mode => 'read_only');",
    );
    wait_for(WAIT, "the initial load", || (contact_rows(&mut c) == 1).then_some(()));
    // A second version stamped in the very second of the first (SystemModstamp has whole seconds).
    let record = sf.records("Contact").into_iter().find(|r| r["Id"] == json!(ada)).expect("ada");
    let stamp = record["LastModifiedDate"].as_str().expect("stamp").to_string();
    let at: i64 = c
        .query_one("SELECT (EXTRACT(epoch FROM $1::text::timestamptz) * 1000)::int8", &[&stamp])
        .expect("epoch")
        .get(0);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    sf.admin(
        "PATCH",
        &format!("/records/Contact/{ada}"),
        json!({"fields": {"LastName": "Ada, same second"}, "stamp_seconds_ago": (now_ms - at) as f64 / 1000.0}),
    );
    let after = sf.records("Contact").into_iter().find(|r| r["Id"] == json!(ada)).expect("ada");
    assert_eq!(after["SystemModstamp"], record["SystemModstamp"], "the same stamp");
    wait_for(WAIT, "the second version", || {
        let name: String = c.query_one("SELECT lastname FROM salesforce.contact WHERE sfid = $1", &[&ada]).ok()?.get(0);
        (name == "Ada, same second").then_some(())
    });
}
