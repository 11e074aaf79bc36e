//! Salesforce equals Postgres: values arrive exactly, whatever the writing session's settings.

use std::time::Duration;

use pgforce_integration::{wait_for, Cluster, Salesforce};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn setup(sf: &Salesforce) -> Cluster {
    let cluster = Cluster::start_with(true, &sf.settings());
    cluster
        .admin()
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE public.invoice (id serial PRIMARY KEY, name text, amount__c numeric, due_date__c date,
                 issued_at__c timestamptz, paid__c boolean, acme__tier__c text);
             SELECT salesforce.map_table('public.invoice', 'Invoice__c');",
        )
        .expect("setup");
    cluster
}

/// The log entry of each row: (row id, state, message).
fn entries(c: &mut postgres::Client) -> Vec<(i64, String, Option<String>)> {
    c.query("SELECT record_id, state::text, sf_message FROM salesforce._trigger_log ORDER BY id", &[])
        .expect("log")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn field(record: &Value, name: &str) -> String {
    record[name].to_string()
}

#[test]
fn values_arrive_exactly_whatever_the_writing_session_prints() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut c = cluster.admin();
    // An application with its own output settings: day-first dates, a far time zone, few float digits.
    c.batch_execute(
        "SET DateStyle = 'SQL, DMY'; SET TimeZone = 'Asia/Tokyo'; SET extra_float_digits = -3;
         INSERT INTO public.invoice (name, amount__c, due_date__c, issued_at__c, paid__c)
         VALUES ('exact', 123456789012.345678, '1990-02-01', '2026-03-04 14:06:07.25+09', true),
                ('nan', 'NaN', '2026-01-01', now(), false),
                ('too large', 1234567890123.456789, '2026-01-01', now(), false),
                ('too precise', 1.2345678, '2026-01-01', now(), false);",
    )
    .expect("insert");
    let records = wait_for(WAIT, "the row delivered", || {
        let live = sf.live("Invoice__c");
        (!live.is_empty()).then_some(live)
    });
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(field(r, "Amount__c"), "123456789012.345678");
    assert_eq!(field(r, "Due_Date__c"), "\"1990-02-01\"");
    assert_eq!(field(r, "Issued_At__c"), "\"2026-03-04T05:06:07.250+0000\"");
    assert_eq!(field(r, "Paid__c"), "true");
    let nan =
        wait_for(WAIT, "the NaN row failed", || entries(&mut c).into_iter().find(|e| e.0 == 2 && e.1 == "FAILED"));
    assert_eq!(
        nan.2.as_deref(),
        Some("NOT_SENT: column amount__c: \"NaN\" is not a number Salesforce can hold"),
        "a value Salesforce cannot hold fails its record with the column named"
    );
    // Invoice__c.Amount__c is Number(18, 6) in its describe: Salesforce would refuse the first and round the second.
    let mut failed = |id: i64| {
        wait_for(WAIT, "the row failed", || entries(&mut c).into_iter().find(|e| e.0 == id && e.1 == "FAILED"))
            .2
            .unwrap_or_default()
    };
    assert_eq!(
        failed(3),
        "NOT_SENT: column amount__c: 1234567890123.456789 has 13 digits before the decimal point; Salesforce field \
         Invoice__c.Amount__c (Number(18, 6)) holds 12 (NUMBER_OUTSIDE_VALID_RANGE)"
    );
    assert!(
        failed(4).starts_with(
            "NOT_SENT: column amount__c: 1.2345678 has 7 decimals; Salesforce field Invoice__c.Amount__c (Number(18, 6)) \
             keeps 6 and would round it"
        ),
        "a number Salesforce would round is not sent changed"
    );
    let log: String = c
        .query_one("SELECT \"values\"::text FROM salesforce._trigger_log WHERE record_id = 1", &[])
        .expect("log")
        .get(0);
    assert!(
        log.contains("\"due_date__c\"=>\"1990-02-01\""),
        "the log holds ISO text, not the session's DateStyle: {log}"
    );
    let style: String = c.query_one("SHOW DateStyle", &[]).expect("show").get(0);
    assert_eq!(style, "SQL, DMY", "the session's own setting is untouched after capture");
}

#[test]
fn a_namespaced_field_is_a_field_not_a_relationship() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut c = cluster.admin();
    // `acme__tier__c` is field `tier__c` of the managed package `acme`, not a reference to an `acme` parent.
    c.batch_execute("INSERT INTO public.invoice (name, acme__tier__c) VALUES ('packaged', 'gold')").expect("insert");
    let records = wait_for(WAIT, "the row delivered", || {
        let live = sf.live("Invoice__c");
        (!live.is_empty()).then_some(live)
    });
    assert_eq!(field(&records[0], "acme__Tier__c"), "\"gold\"", "{records:?}");
    // The record is live a moment before the worker has recorded the answer.
    wait_for(WAIT, "the entry succeeded", || entries(&mut c).into_iter().find(|e| e.1 == "SUCCESS"));
}

/// Turns delivery off or on with a reload, as an operator would.
fn delivery(c: &mut postgres::Client, on: bool) {
    c.batch_execute(&format!("ALTER SYSTEM SET pgforce.enabled = {on}")).expect("alter system");
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    // A reload reaches the worker at its next wake-up; give it that.
    std::thread::sleep(Duration::from_millis(300));
}

fn open_entries(c: &mut postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state IN ('NEW', 'PENDING', 'IGNORE')", &[])
        .expect("open")
        .get(0)
}

fn contact_cluster(sf: &Salesforce, upsert: bool) -> Cluster {
    let cluster = Cluster::start_with(true, &sf.settings());
    let map = if upsert {
        "SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c');"
    } else {
        "SELECT salesforce.map_table('public.contact', 'Contact');"
    };
    cluster
        .admin()
        .batch_execute(&format!(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE public.contact (id integer PRIMARY KEY, lastname text, external_id__c text);
             {map}"
        ))
        .expect("setup");
    cluster
}

#[test]
fn a_changed_upsert_field_updates_the_same_record() {
    let sf = Salesforce::start();
    let cluster = contact_cluster(&sf, true);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO public.contact VALUES (1, 'A', 'X-1')").expect("insert");
    let sfid: String = wait_for(WAIT, "the row's sfid", || {
        c.query_one("SELECT sfid::text FROM public.contact WHERE id = 1", &[]).expect("sfid").get(0)
    });
    c.batch_execute("UPDATE public.contact SET external_id__c = 'X-2', lastname = 'B' WHERE id = 1").expect("rekey");
    wait_for(WAIT, "the update delivered", || (open_entries(&mut c) == 0).then_some(()));
    let live = sf.live("Contact");
    assert_eq!(live.len(), 1, "one record, not a second one for the new key: {live:?}");
    assert_eq!(live[0]["Id"].as_str(), Some(sfid.as_str()));
    assert_eq!(live[0]["External_Id__c"], "X-2");
    assert_eq!(live[0]["LastName"], "B");
    let now: String = c.query_one("SELECT sfid::text FROM public.contact WHERE id = 1", &[]).expect("sfid").get(0);
    assert_eq!(now, sfid, "the row keeps its record");
}

#[test]
fn rows_deleted_while_their_insert_is_on_its_way_are_deleted_in_salesforce() {
    let sf = Salesforce::start();
    sf.admin("PUT", "/faults", serde_json::json!([{"operation": "create", "effect": {"type": "latency", "ms": 1500}}]));
    let cluster = contact_cluster(&sf, false);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO public.contact SELECT g, 'n' || g FROM generate_series(1, 40) g").expect("insert");
    wait_for(WAIT, "the inserts on their way", || {
        let pending: i64 = c
            .query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'PENDING'", &[])
            .expect("pending")
            .get(0);
        (pending == 40).then_some(())
    });
    c.batch_execute("DELETE FROM public.contact").expect("delete");
    wait_for(Duration::from_secs(20), "the queue drained", || (open_entries(&mut c) == 0).then_some(()));
    assert_eq!(sf.records("Contact").len(), 40, "each row was created once");
    let live = sf.live("Contact");
    assert!(live.is_empty(), "{} records of deleted rows are still live in Salesforce", live.len());
}

#[test]
fn insert_then_delete_sends_nothing_and_delete_then_reinsert_sends_both() {
    let sf = Salesforce::start();
    let cluster = contact_cluster(&sf, true);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO public.contact VALUES (1, 'Old', 'K-1')").expect("insert");
    let old: String = wait_for(WAIT, "the row's sfid", || {
        c.query_one("SELECT sfid::text FROM public.contact WHERE id = 1", &[]).expect("sfid").get(0)
    });
    delivery(&mut c, false);
    c.batch_execute(
        "INSERT INTO public.contact VALUES (2, 'Brief', 'K-2');
         DELETE FROM public.contact WHERE id = 2;
         DELETE FROM public.contact WHERE id = 1;
         INSERT INTO public.contact VALUES (1, 'New', 'K-1');",
    )
    .expect("changes");
    let writes_before = sf.counters()["records"].clone();
    delivery(&mut c, true);
    wait_for(Duration::from_secs(20), "the queue drained", || (open_entries(&mut c) == 0).then_some(()));
    let records = sf.records("Contact");
    let live = sf.live("Contact");
    assert!(records.iter().all(|r| r["External_Id__c"] != "K-2"), "nothing was sent for row 2: {writes_before}");
    assert_eq!(live.len(), 1, "{live:?}");
    assert_ne!(live[0]["Id"].as_str(), Some(old.as_str()), "the deleted record is gone, the new row has a new one");
    assert_eq!(live[0]["LastName"], "New");
    let now: String = c.query_one("SELECT sfid::text FROM public.contact WHERE id = 1", &[]).expect("sfid").get(0);
    assert_eq!(live[0]["Id"].as_str(), Some(now.as_str()));
}

#[test]
fn an_update_of_a_row_deleted_and_inserted_again_since_goes_to_no_other_record() {
    // Ordered writes: a row's update waits for its insert. While the insert is on its way the row is deleted and
    // inserted again; the update (logged without an sfid) must not take the new row's place: sent as an upsert by
    // its own key, it created a record no row knows (the model test's long mode, seeds 10 and 18).
    let sf = Salesforce::start();
    sf.admin(
        "PUT",
        "/faults",
        serde_json::json!([{"operation": "upsert", "times": 1, "effect": {"type": "latency", "ms": 1500}}]),
    );
    let cluster = contact_cluster(&sf, true);
    let mut c = cluster.admin();
    // One change per claim: the update is claimed without the delete that follows it (as when a claim's end falls
    // between them, or the delete commits after the claim).
    c.batch_execute("ALTER SYSTEM SET pgforce.write_algorithm = 'ordered'").expect("ordered");
    c.batch_execute("ALTER SYSTEM SET pgforce.batch_size = 1").expect("batch size");
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    std::thread::sleep(Duration::from_millis(300));
    c.batch_execute("INSERT INTO public.contact VALUES (1, 'A', 'K-1')").expect("insert");
    c.batch_execute("UPDATE public.contact SET external_id__c = 'K-2', lastname = 'B' WHERE id = 1").expect("update");
    wait_for(WAIT, "the insert on its way", || {
        let pending: i64 = c
            .query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'PENDING'", &[])
            .expect("pending")
            .get(0);
        (pending == 1).then_some(())
    });
    c.batch_execute(
        "BEGIN; DELETE FROM public.contact WHERE id = 1; INSERT INTO public.contact VALUES (1, 'C', 'K-3'); COMMIT;",
    )
    .expect("delete and insert again");
    wait_for(Duration::from_secs(20), "the queue drained", || (open_entries(&mut c) == 0).then_some(()));
    let live = sf.live("Contact");
    assert_eq!(live.len(), 1, "only the new row's record is live: {live:?}");
    assert_eq!(live[0]["External_Id__c"], "K-3");
    assert_eq!(live[0]["LastName"], "C");
    let now: String = c.query_one("SELECT sfid::text FROM public.contact WHERE id = 1", &[]).expect("sfid").get(0);
    assert_eq!(live[0]["Id"].as_str(), Some(now.as_str()));
}

#[test]
fn a_retried_failure_never_overwrites_a_newer_delivered_change() {
    let sf = Salesforce::start();
    let cluster = contact_cluster(&sf, false);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO public.contact VALUES (1, 'First', NULL)").expect("insert");
    wait_for(WAIT, "the insert delivered", || (open_entries(&mut c) == 0).then_some(()));
    // A validation rule refuses one value; the update carrying it fails for good.
    sf.admin(
        "PUT",
        "/faults",
        serde_json::json!([{"field": "LastName", "equals": "Refused", "effect": {"type": "record_error",
            "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "not now"}}]),
    );
    c.batch_execute("UPDATE public.contact SET lastname = 'Refused' WHERE id = 1").expect("update");
    wait_for(WAIT, "the update failed", || {
        let failed: i64 = c
            .query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'FAILED'", &[])
            .expect("failed")
            .get(0);
        (failed == 1).then_some(())
    });
    sf.admin("DELETE", "/faults", Value::Null);
    c.batch_execute("UPDATE public.contact SET lastname = 'Final' WHERE id = 1").expect("newer");
    wait_for(WAIT, "the newer change delivered", || (open_entries(&mut c) == 0).then_some(()));
    // The seed's way of retrying: the old failure goes back to NEW.
    c.batch_execute("UPDATE salesforce._trigger_log SET state = 'NEW' WHERE state = 'FAILED'").expect("requeue");
    wait_for(WAIT, "the retry done", || (open_entries(&mut c) == 0).then_some(()));
    let live = sf.live("Contact");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["LastName"], "Final", "the retry sent the row's current value, not its old one");
}

#[test]
fn an_update_whose_sfid_cannot_be_looked_up_waits_and_is_never_sent_as_a_create() {
    let sf = Salesforce::start();
    let cluster = contact_cluster(&sf, false);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO public.contact VALUES (1, 'A', 'X-1')").expect("insert");
    let sfid: String = wait_for(WAIT, "the row's sfid", || {
        c.query_one("SELECT sfid::text FROM public.contact WHERE id = 1", &[]).expect("sfid").get(0)
    });
    // An update captured before the insert's sfid was written back: its log entry has no sfid, so the worker looks
    // the row's sfid up. A user's transaction holds the table meanwhile, so the look-up fails (lock_timeout).
    delivery(&mut c, false);
    c.batch_execute(
        "UPDATE public.contact SET lastname = 'B' WHERE id = 1;
         UPDATE salesforce._trigger_log SET sfid = NULL WHERE action = 'UPDATE';",
    )
    .expect("update");
    let mut user = cluster.admin();
    user.batch_execute("BEGIN; LOCK TABLE public.contact IN ACCESS EXCLUSIVE MODE").expect("lock");
    delivery(&mut c, true);
    // The worker says why it waits (a worker that swallowed the error would say nothing, and send a create).
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let mut said = None;
    while said.is_none() && std::time::Instant::now() < deadline {
        let m: Option<String> =
            c.query_one("SELECT connection_message FROM salesforce.sync_status", &[]).expect("status").get(0);
        said = m.filter(|m| m.contains("lock timeout"));
        std::thread::sleep(Duration::from_millis(100));
    }
    user.batch_execute("COMMIT").expect("unlock");
    wait_for(Duration::from_secs(20), "the update delivered", || (open_entries(&mut c) == 0).then_some(()));
    let live = sf.live("Contact");
    assert_eq!(live.len(), 1, "the update went to the row's record, not to a new one: {live:?}");
    assert_eq!(live[0]["Id"].as_str(), Some(sfid.as_str()));
    assert_eq!(live[0]["LastName"], "B");
    assert!(said.is_some(), "sync_status named the lock timeout while the look-up failed");
}

#[test]
fn a_renamed_table_and_column_keep_syncing_and_what_would_break_it_is_refused() {
    let sf = Salesforce::start();
    let cluster = Cluster::start_with(true, &sf.settings());
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE EXTENSION pgforce CASCADE;
         CREATE TABLE public.contact (id integer PRIMARY KEY, lastname text, title text, email text);
         SELECT salesforce.map_table('public.contact', 'Contact');
         INSERT INTO public.contact VALUES (1, 'A', '555-0100', 'a@example.com');",
    )
    .expect("setup");
    wait_for(WAIT, "the first delivery", || (open_entries(&mut c) == 0).then_some(()));
    // A change queued before a migration, then the migration (as when the Salesforce field was renamed too).
    delivery(&mut c, false);
    c.batch_execute("UPDATE public.contact SET title = '555-0199', email = 'b@example.com' WHERE id = 1").expect("q");
    c.batch_execute(
        "ALTER TABLE public.contact RENAME TO person;
         ALTER TABLE public.person RENAME COLUMN title TO phone;
         ALTER TABLE public.person ALTER COLUMN phone TYPE varchar(40);
         ALTER TABLE public.person DROP COLUMN email;",
    )
    .expect("migration");
    let (name, fields): (String, Vec<String>) = {
        let r = c.query_one("SELECT table_name::text, fields FROM salesforce._mapping", &[]).expect("mapping");
        (r.get(0), r.get(1))
    };
    assert_eq!((name.as_str(), fields), ("person", vec!["lastname".to_string(), "phone".to_string()]));
    // What delivery needs is refused, with a reason and a hint; the table is unchanged.
    for (ddl, code) in [
        ("ALTER TABLE public.person DROP COLUMN sfid", "55000"),
        ("ALTER TABLE public.person RENAME COLUMN _hc_lastop TO lastop", "55000"),
        ("ALTER TABLE public.person DROP COLUMN lastname, DROP COLUMN phone", "55000"),
    ] {
        let e = c.batch_execute(ddl).expect_err(ddl);
        let db = e.as_db_error().expect("db error");
        assert_eq!(db.code().code(), code, "{ddl}: {db:?}");
        assert!(db.hint().is_some_and(|h| h.contains("unmap_table")), "{ddl}: {db:?}");
    }
    // A table owner who may not map tables cannot redirect a mapped column to another Salesforce field.
    c.batch_execute("CREATE ROLE app; ALTER TABLE public.person OWNER TO app").expect("owner");
    let e =
        c.batch_execute("SET ROLE app; ALTER TABLE public.person RENAME COLUMN phone TO title").expect_err("refused");
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("42501"), "{e:?}");
    c.batch_execute("RESET ROLE").expect("reset");
    delivery(&mut c, true);
    c.batch_execute("INSERT INTO public.person VALUES (2, 'B', '555-0200')").expect("insert");
    wait_for(Duration::from_secs(20), "delivery after the migration", || (open_entries(&mut c) == 0).then_some(()));
    let states: Vec<String> = c
        .query("SELECT state::text FROM salesforce._trigger_log ORDER BY id", &[])
        .expect("log")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(states, ["SUCCESS", "SUCCESS", "SUCCESS"]);
    let mut live = sf.live("Contact");
    live.sort_by_key(|r| r["LastName"].as_str().map(str::to_string));
    assert_eq!(live.len(), 2, "{live:?}");
    assert_eq!(live[0]["Phone"], "555-0199", "the queued change followed the renamed column");
    assert_eq!(live[0]["Email"], "a@example.com", "a dropped column is no longer sent");
    assert_eq!(live[1]["Phone"], "555-0200");
}
