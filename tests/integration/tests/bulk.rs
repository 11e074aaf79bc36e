//! Large runs through the Bulk API 2.0: a backlog of one object and operation goes as a few ingest jobs instead of
//! a call per 200 records, and every entry ends exactly as it would through collections.

use std::time::Duration;

use pgforce_integration::{open_entries, wait_for, Cluster, Salesforce};

const WAIT: Duration = Duration::from_secs(120);

fn setup(sf: &Salesforce) -> Cluster {
    let cluster = Cluster::start_with(true, &sf.settings());
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
    let cluster = setup(&sf);
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
fn a_worker_killed_during_a_bulk_job_finishes_after_restart_without_duplicates() {
    // Jobs take a while: the server goes down while one runs.
    let sf = Salesforce::start_with(fakeforce::Config { bulk_processing_ms: 4000, ..Default::default() });
    let cluster = setup(&sf);
    let mut c = cluster.admin();
    c.batch_execute(
        "INSERT INTO public.contact (lastname, external_id__c) SELECT 'Row ' || g, 'K-' || g FROM generate_series(1, 5000) g;
         SELECT salesforce.resume('public.contact');",
    )
    .expect("backlog");
    // Created, uploaded and closed: the job runs in Salesforce.
    wait_for(WAIT, "a running Bulk job", || (calls(&sf, "bulk") >= 3).then_some(()));
    cluster.crash_and_restart();
    let mut c = cluster.admin();
    // The restarted worker finds the job's id and waits for it before it sends anything again.
    wait_for(WAIT, "the restarted worker waiting for the job", || {
        let message: Option<String> = c
            .query_one("SELECT connection_message FROM salesforce.sync_status WHERE table_name = 'contact'", &[])
            .ok()?
            .get(0);
        message.filter(|m| m.contains("waiting for Bulk job 750") && m.contains("started before a restart"))
    });
    wait_for(WAIT, "the backlog to drain after the restart", || (open_entries(&mut c) == 0).then_some(()));
    // Forgotten once the delivery that sent the job is over (just after its last outcome is recorded).
    wait_for(WAIT, "finished jobs forgotten", || {
        let kept: i64 = c.query_one("SELECT count(*) FROM salesforce._bulk_jobs", &[]).ok()?.get(0);
        (kept == 0).then_some(())
    });
    assert_eq!(states(&mut c), vec![("SUCCESS".to_string(), 5000)]);
    assert_eq!(sf.live("Contact").len(), 5000, "no duplicates");
    let with_sfid: i64 =
        c.query_one("SELECT count(*) FROM public.contact WHERE sfid IS NOT NULL", &[]).expect("rows").get(0);
    assert_eq!(with_sfid, 5000);
}
