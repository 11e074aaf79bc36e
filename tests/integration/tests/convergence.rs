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
                 issued_at__c timestamptz, paid__c boolean);
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
         VALUES ('exact', 1234567890123.456789, '1990-02-01', '2026-03-04 14:06:07.25+09', true),
                ('nan', 'NaN', '2026-01-01', now(), false);",
    )
    .expect("insert");
    let records = wait_for(WAIT, "the row delivered", || {
        let live = sf.live("Invoice__c");
        (!live.is_empty()).then_some(live)
    });
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(field(r, "Amount__c"), "1234567890123.456789");
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
