//! Large runs through the Bulk API 2.0: a backlog of one object and operation goes as a few ingest jobs instead of
//! a call per 200 records, and every entry ends exactly as it would through collections.

use std::time::Duration;

use pgforce_integration::{open_entries, wait_for, Cluster, Salesforce};

const WAIT: Duration = Duration::from_secs(120);

/// A cluster with `public.contact` mapped (paused: resumed once its backlog is in); `extra` settings.
fn setup(sf: &Salesforce, extra: &[&str]) -> Cluster {
    let mut settings = sf.settings();
    settings.extend(extra.iter().map(|s| s.to_string()));
    let cluster = Cluster::start_with(true, &settings);
    cluster
        .admin()
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, title text, external_id__c text);
             SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c',
                                         paused => true);",
        )
        .expect("setup");
    cluster
}

/// (state, count) of the log's entries.
fn states(c: &mut postgres::Client) -> Vec<(String, i64)> {
    c.query("SELECT state::text, count(*) FROM salesforce._trigger_log GROUP BY 1 ORDER BY 1", &[])
        .expect("states")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Calls of one kind fakeforce counted (`bulk`, `upsert`, `update`, `delete`, …).
fn calls(sf: &Salesforce, kind: &str) -> u64 {
    sf.counters()["by_kind"][kind].as_u64().unwrap_or(0)
}

#[test]
fn a_backlog_goes_through_the_bulk_api_and_ends_as_through_collections() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    sf.admin(
        "PUT",
        "/faults",
        serde_json::json!([{"field": "LastName", "equals": "Refused", "effect": {"type": "record_error",
            "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "LastName: not this one"}}]),
    );
    // 20,000 inserts, one in a thousand refused by Salesforce.
    c.batch_execute(
        "INSERT INTO public.contact (lastname, external_id__c)
              SELECT CASE WHEN g % 1000 = 0 THEN 'Refused' ELSE 'Row ' || g END, 'B-' || g
                FROM generate_series(1, 20000) g;
         SELECT salesforce.resume('public.contact');",
    )
    .expect("backlog");
    wait_for(WAIT, "the backlog to drain", || (open_entries(&mut c) == 0).then_some(()));
    assert_eq!(states(&mut c), vec![("FAILED".to_string(), 20), ("SUCCESS".to_string(), 19980)]);
    let (bulk, upserts) = (calls(&sf, "bulk"), calls(&sf, "upsert"));
    assert!(bulk > 0 && bulk < 100, "bulk calls: {bulk}");
    assert_eq!(upserts, 0, "nothing went through collections");
    assert_eq!(sf.live("Contact").len(), 19980);
    // Each entry ends as through collections: the row's sfid and outcome written back, the error named.
    let rows: Vec<(String, i64)> = c
        .query("SELECT coalesce(_hc_lastop, '-'), count(*) FROM public.contact WHERE (sfid IS NOT NULL) = (_hc_lastop = 'INSERTED') GROUP BY 1 ORDER BY 1", &[])
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![("FAILED".to_string(), 20), ("INSERTED".to_string(), 19980)]);
    let message: String = c
        .query_one("SELECT error_message FROM salesforce.sync_audit WHERE has_error AND status_code = 1 LIMIT 1", &[])
        .expect("audit")
        .get(0);
    assert_eq!(message, "FIELD_CUSTOM_VALIDATION_EXCEPTION: LastName: not this one");

    // Updates by sfid and deletes by sfid go as jobs too.
    let before = calls(&sf, "bulk");
    c.batch_execute("UPDATE public.contact SET title = 'Bulk' WHERE sfid IS NOT NULL").expect("update");
    wait_for(WAIT, "the updates", || (open_entries(&mut c) == 0).then_some(()));
    let titled = sf.live("Contact").iter().filter(|r| r["Title"] == "Bulk").count();
    assert_eq!(titled, 19980);
    c.batch_execute("DELETE FROM public.contact WHERE sfid IS NOT NULL").expect("delete");
    wait_for(WAIT, "the deletes", || (open_entries(&mut c) == 0).then_some(()));
    assert_eq!(sf.live("Contact").len(), 0);
    assert!(calls(&sf, "bulk") - before < 100);
    assert_eq!((calls(&sf, "update"), calls(&sf, "delete")), (0, 0), "nothing went through collections");
}

#[test]
fn a_worker_killed_during_a_bulk_job_records_its_results_after_restart_without_sending_again() {
    // Jobs take a while: the server goes down while one runs.
    let sf = Salesforce::start_with(fakeforce::Config { bulk_processing_ms: 4000, ..Default::default() });
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    c.batch_execute(
        "INSERT INTO public.contact (lastname, external_id__c) SELECT 'Row ' || g, 'K-' || g FROM generate_series(1, 5000) g;
         SELECT salesforce.resume('public.contact');",
    )
    .expect("backlog");
    // Created, uploaded and closed: the job runs in Salesforce, its changes in flight.
    wait_for(WAIT, "a running Bulk job", || (calls(&sf, "bulk") >= 3).then_some(()));
    wait_for(WAIT, "the job's changes in flight", || {
        let marked: i64 =
            c.query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'PENDING'", &[]).ok()?.get(0);
        (marked == 5000).then_some(())
    });
    cluster.crash_and_restart();
    let mut c = cluster.admin();
    wait_for(WAIT, "the backlog to drain after the restart", || (open_entries(&mut c) == 0).then_some(()));
    assert_eq!(states(&mut c), vec![("SUCCESS".to_string(), 5000)]);
    let kept: i64 = c.query_one("SELECT count(*) FROM salesforce._bulk_jobs", &[]).expect("kept").get(0);
    assert_eq!(kept, 0, "the job is forgotten once its results are recorded");
    let records = sf.live("Contact");
    assert_eq!(records.len(), 5000, "no duplicates");
    // The restarted worker read the job's results: no record was sent a second time.
    let written_twice = records.iter().filter(|r| r["_writes"] != serde_json::json!(1)).count();
    assert_eq!(written_twice, 0, "records written more than once");
    let with_sfid: i64 =
        c.query_one("SELECT count(*) FROM public.contact WHERE sfid IS NOT NULL", &[]).expect("rows").get(0);
    assert_eq!(with_sfid, 5000);
}

#[test]
fn small_changes_flow_while_a_bulk_job_runs_and_its_records_wait_for_it() {
    // A job Salesforce takes 15 seconds over.
    let sf = Salesforce::start_with(fakeforce::Config { bulk_processing_ms: 15_000, ..Default::default() });
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE TABLE public.lead (id serial PRIMARY KEY, lastname text, company text);
         SELECT salesforce.map_table('public.lead', 'Lead');
         INSERT INTO public.contact (lastname, external_id__c) SELECT 'Row ' || g, 'S-' || g FROM generate_series(1, 3000) g;
         SELECT salesforce.resume('public.contact');",
    )
    .expect("backlog");
    wait_for(WAIT, "the job running", || {
        let marked: i64 =
            c.query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'PENDING'", &[]).ok()?.get(0);
        (marked == 3000).then_some(())
    });
    // While it runs: a change of another table, and a change of a record in the job.
    c.batch_execute(
        "INSERT INTO public.lead (lastname, company) VALUES ('Urgent', 'Acme');
         UPDATE public.contact SET lastname = 'Row 7 (later)' WHERE external_id__c = 'S-7';",
    )
    .expect("changes");
    wait_for(Duration::from_secs(10), "the lead delivered while the job runs", || {
        let sent: i64 = c.query_one("SELECT count(*) FROM public.lead WHERE sfid IS NOT NULL", &[]).ok()?.get(0);
        (sent == 1).then_some(())
    });
    let in_job: i64 = c
        .query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'PENDING'", &[])
        .expect("in flight")
        .get(0);
    assert_eq!(in_job, 3000, "the job still runs");
    let waiting: String = c
        .query_one(
            "SELECT state::text FROM salesforce._trigger_log WHERE action = 'UPDATE' AND table_name = 'contact'",
            &[],
        )
        .expect("the update")
        .get(0);
    assert_eq!(waiting, "NEW", "a change of a record in the job waits for the job");
    wait_for(WAIT, "everything delivered", || (open_entries(&mut c) == 0).then_some(()));
    assert_eq!(states(&mut c), vec![("SUCCESS".to_string(), 3002)]);
    let row7 = sf.live("Contact").into_iter().find(|r| r["External_Id__c"] == "S-7").expect("S-7");
    assert_eq!(row7["LastName"], "Row 7 (later)", "the later change went after the job");
}

#[test]
fn under_a_tight_api_budget_a_smaller_backlog_goes_as_a_bulk_job() {
    let sf = Salesforce::start();
    // 90% of the calls used: above pgforce.max_api_usage, the worker paces itself (a short pace: a million left).
    sf.admin("PUT", "/api-usage", serde_json::json!({"used": 9_000_000, "limit": 10_000_000}));
    let cluster = setup(&sf, &["pgforce.max_api_usage = 0.5"]);
    let mut c = cluster.admin();
    c.batch_execute(
        "INSERT INTO public.contact (lastname, external_id__c) VALUES ('First', 'T-0');
         SELECT salesforce.resume('public.contact');",
    )
    .expect("first row");
    wait_for(WAIT, "throttling", || {
        let s: String = c
            .query_one("SELECT connection_state FROM salesforce.sync_status WHERE table_name = 'contact'", &[])
            .ok()?
            .get(0);
        (s == "THROTTLED").then_some(())
    });
    // 1,700 upserts: under pgforce.bulk_threshold (2,000), but one job costs fewer calls than 9 collections calls.
    c.batch_execute(
        "INSERT INTO public.contact (lastname, external_id__c) SELECT 'Row ' || g, 'T-' || g FROM generate_series(1, 1700) g",
    )
    .expect("backlog");
    wait_for(WAIT, "the backlog", || (open_entries(&mut c) == 0).then_some(()));
    assert_eq!(states(&mut c), vec![("SUCCESS".to_string(), 1701)]);
    assert_eq!(calls(&sf, "upsert"), 1, "only the first row went through collections");
    assert!(calls(&sf, "bulk") >= 3, "the backlog went as a Bulk job");
}
