//! Operating pgforce from SQL: pause and resume delivery per mapping or for all, with capture going on.

use std::time::Duration;

use pgforce_integration::{wait_for, Cluster, Salesforce};

const WAIT: Duration = Duration::from_secs(15);

fn setup(sf: &Salesforce) -> Cluster {
    let cluster = Cluster::start_with(true, &sf.settings());
    cluster
        .admin()
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, external_id__c text);
             CREATE TABLE public.account (id serial PRIMARY KEY, name text);
             SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c',
                                         paused => true);
             SELECT salesforce.map_table('public.account', 'Account');",
        )
        .expect("setup");
    cluster
}

fn delivered(c: &mut postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM public.{table} WHERE sfid IS NOT NULL"), &[]).expect("rows").get(0)
}

/// (pending_writes, paused) of a mapping, from sync_status.
fn status(c: &mut postgres::Client, table: &str) -> (i64, bool) {
    let row = c
        .query_one(
            "SELECT pending_writes, paused_since IS NOT NULL FROM salesforce.sync_status WHERE table_name = $1",
            &[&table],
        )
        .expect("status");
    (row.get(0), row.get(1))
}

/// Salesforce refuses records whose LastName is `name` (a validation rule saying `message`).
fn refuse_lastname(sf: &Salesforce, name: &str, message: &str) {
    sf.admin(
        "PUT",
        "/faults",
        serde_json::json!([{"field": "LastName", "equals": name, "effect": {"type": "record_error",
            "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": message}}]),
    );
}

#[test]
fn a_paused_mapping_captures_but_sends_nothing_until_resumed() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut c = cluster.admin();
    // Created paused: its first backlog waits; another mapping delivers meanwhile.
    c.batch_execute(
        "INSERT INTO public.contact (lastname, external_id__c) SELECT 'C' || g, 'X-' || g FROM generate_series(1, 5) g;
         INSERT INTO public.account (name) VALUES ('Acme');",
    )
    .expect("rows");
    wait_for(WAIT, "the unpaused mapping delivers", || (delivered(&mut c, "account") == 1).then_some(()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sf.live("Contact").len(), 0, "nothing of a paused mapping is sent");
    assert_eq!(status(&mut c, "contact"), (5, true));
    assert_eq!(status(&mut c, "account"), (0, false));

    // A pause survives a restart of the server.
    cluster.crash_and_restart();
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO public.account (name) VALUES ('After restart')").expect("row");
    wait_for(WAIT, "delivery goes on after the restart", || (delivered(&mut c, "account") == 2).then_some(()));
    assert_eq!(sf.live("Contact").len(), 0, "still paused after the restart");

    let said: String = c.query_one("SELECT salesforce.resume('public.contact')", &[]).expect("resume").get(0);
    assert_eq!(said, "resumed: public.contact");
    wait_for(WAIT, "the backlog drains once resumed", || (delivered(&mut c, "contact") == 5).then_some(()));
    assert_eq!(sf.live("Contact").len(), 5);
    assert_eq!(status(&mut c, "contact"), (0, false));

    // Pausing everything stops both; changes made meanwhile are kept and go out at resume().
    let said: String = c.query_one("SELECT salesforce.pause()", &[]).expect("pause").get(0);
    assert_eq!(said, "paused: public.account, public.contact");
    let again: String = c.query_one("SELECT salesforce.pause('public.contact')", &[]).expect("pause").get(0);
    assert_eq!(again, "nothing to pause: already paused");
    c.batch_execute(
        "UPDATE public.contact SET lastname = 'Changed' WHERE id = 1;
         INSERT INTO public.account (name) VALUES ('While paused');",
    )
    .expect("changes");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(delivered(&mut c, "account"), 2, "nothing sent while paused");
    assert!(sf.live("Contact").iter().all(|r| r["LastName"] != "Changed"));
    let said: String = c.query_one("SELECT salesforce.resume()", &[]).expect("resume").get(0);
    assert!(said.starts_with("resumed: public.account, public.contact"), "{said}");
    wait_for(WAIT, "everything drains", || {
        let changed = sf.live("Contact").iter().any(|r| r["LastName"] == "Changed");
        (changed && delivered(&mut c, "account") == 3).then_some(())
    });
}

#[test]
fn pause_and_resume_are_for_operators_and_name_what_is_not_mapped() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE TABLE public.other (id int PRIMARY KEY);
         CREATE ROLE app LOGIN; CREATE ROLE ops LOGIN IN ROLE pgforce_operator;",
    )
    .expect("roles");
    let err = c.query_one("SELECT salesforce.pause('public.other')", &[]).expect_err("not mapped");
    let db = err.as_db_error().expect("db error");
    assert_eq!(db.code().code(), "42704");
    assert_eq!(db.message(), "public.other is not mapped to Salesforce");
    assert!(db.hint().is_some());
    let err = c.query_one("SELECT salesforce.resume('public.other')", &[]).expect_err("not mapped");
    assert_eq!(err.as_db_error().expect("db error").code().code(), "42704");

    let mut app = cluster.connect("app", "postgres");
    for call in ["SELECT salesforce.pause()", "SELECT salesforce.resume()", "SELECT salesforce.pause('public.contact')"]
    {
        let err = app.query_one(call, &[]).expect_err("not an operator");
        assert_eq!(err.as_db_error().expect("db error").code().code(), "42501", "{call}");
    }
    let mut ops = cluster.connect("ops", "postgres");
    let said: String = ops.query_one("SELECT salesforce.pause('public.account')", &[]).expect("operator").get(0);
    assert_eq!(said, "paused: public.account");
    // The mapping columns everyone may read include the pause.
    let paused: bool = app
        .query_one("SELECT paused_at IS NOT NULL FROM salesforce._mapping WHERE table_name = 'account'", &[])
        .expect("readable")
        .get(0);
    assert!(paused);
}

/// The audit rows of one table: (record id, action, status code, status text, has error, error message).
fn audit(c: &mut postgres::Client) -> Vec<(i64, String, i32, String, bool, Option<String>)> {
    c.query(
        "SELECT record_id, action, status_code, status_text, has_error, error_message
           FROM salesforce.sync_audit WHERE table_name = 'contact' ORDER BY log_id",
        &[],
    )
    .expect("audit")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    .collect()
}

#[test]
fn the_audit_says_what_happened_to_every_change() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut c = cluster.admin();
    refuse_lastname(&sf, "Bad", "LastName may not be Bad");
    // While the mapping is paused, row 3 is inserted and deleted: it never reaches Salesforce.
    c.batch_execute(
        "INSERT INTO public.contact (lastname, external_id__c) VALUES ('One', 'X-1'), ('Two', 'X-2'), ('Three', 'X-3'), ('Bad', 'X-4');
         DELETE FROM public.contact WHERE id = 3;",
    )
    .expect("rows");
    c.query_one("SELECT salesforce.resume('public.contact')", &[]).expect("resume");
    wait_for(WAIT, "the first changes delivered", || (delivered(&mut c, "contact") == 2).then_some(()));
    c.batch_execute(
        "UPDATE public.contact SET lastname = 'Uno' WHERE id = 1; DELETE FROM public.contact WHERE id = 2;",
    )
    .expect("changes");
    wait_for(WAIT, "the queue empty", || {
        (status(&mut c, "contact").0 == 0 && sf.live("Contact").len() == 1).then_some(())
    });
    let rows = audit(&mut c);
    let codes: Vec<(i64, &str, i32, &str, bool)> =
        rows.iter().map(|r| (r.0, r.1.as_str(), r.2, r.3.as_str(), r.4)).collect();
    assert_eq!(
        codes,
        [
            (1, "INSERT", 7, "Inserted", false),
            (2, "INSERT", 7, "Inserted", false),
            (3, "INSERT", 5, "Source N/A", false),
            (4, "INSERT", 1, "Insert Error", true),
            (3, "DELETE", 5, "Source N/A", false),
            (1, "UPDATE", 2, "Updated", false),
            (2, "DELETE", 12, "Deleted", false),
        ]
    );
    assert_eq!(rows[3].5.as_deref(), Some("FIELD_CUSTOM_VALIDATION_EXCEPTION: LastName may not be Bad"));
    // Monitors read it; other roles do not.
    c.batch_execute("CREATE ROLE watcher LOGIN IN ROLE pgforce_monitor; CREATE ROLE nobody LOGIN;").expect("roles");
    let errors: i64 = cluster
        .connect("watcher", "postgres")
        .query_one("SELECT count(*) FROM salesforce.sync_audit WHERE has_error", &[])
        .expect("monitor")
        .get(0);
    assert_eq!(errors, 1);
    let err = cluster.connect("nobody", "postgres").query_one("SELECT 1 FROM salesforce.sync_audit", &[]);
    assert_eq!(err.expect_err("not a monitor").as_db_error().expect("db").code().code(), "42501");
}

/// The alerts a listening connection receives within `wait` (or until `enough` says so), as JSON.
fn alerts(
    listener: &mut postgres::Client,
    wait: Duration,
    enough: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    use postgres::fallible_iterator::FallibleIterator;
    let deadline = std::time::Instant::now() + wait;
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let mut notifications = listener.notifications();
        let next = notifications.timeout_iter(left).next();
        match next {
            Ok(Some(n)) => {
                assert_eq!(n.channel(), "pgforce_alerts");
                out.push(serde_json::from_str(n.payload()).expect("JSON payload"));
                if enough(&out) {
                    break;
                }
            }
            _ => break,
        }
    }
    out
}

#[test]
fn alerts_reach_listeners_without_error_texts() {
    let sf = Salesforce::start();
    let mut settings = sf.settings();
    settings.push("pgforce.alert_stalled_after = '2s'".into());
    settings.push("pgforce.alert_interval = '1s'".into());
    let cluster = Cluster::start_with(true, &settings);
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE EXTENSION pgforce CASCADE;
         CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, external_id__c text);
         SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c');
         CREATE ROLE anyone LOGIN;",
    )
    .expect("setup");
    // Any role may listen: what it hears carries codes, never a row's values or an error's text.
    let mut listener = cluster.connect("anyone", "postgres");
    listener.batch_execute("LISTEN pgforce_alerts").expect("listen");
    refuse_lastname(&sf, "Secret Smith", "Secret Smith is not welcome");
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Secret Smith', 'S-1')")
        .expect("row");
    let heard = alerts(&mut listener, Duration::from_secs(10), |a| a.iter().any(|a| a["kind"] == "failed"));
    let failed = heard.iter().find(|a| a["kind"] == "failed").unwrap_or_else(|| panic!("a failure alert: {heard:?}"));
    assert_eq!(failed["tables"], serde_json::json!(["contact"]));
    assert_eq!(failed["count"], 1);
    assert_eq!(failed["codes"], serde_json::json!(["FIELD_CUSTOM_VALIDATION_EXCEPTION"]));
    assert!(!failed.to_string().contains("Secret"), "{failed}");

    // Salesforce goes away: the connection's trouble, then the queue stalling behind it, then the recovery.
    sf.admin("POST", "/outage", serde_json::json!({"mode": "refuse", "seconds": 6}));
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Waiting', 'W-1')").expect("row");
    let recovered = |a: &serde_json::Value| a["kind"] == "connection" && a["codes"][0] != "OUTAGE";
    let heard = alerts(&mut listener, Duration::from_secs(60), |a| a.iter().any(recovered));
    let kinds: Vec<(String, String)> = heard
        .iter()
        .map(|a| {
            (a["kind"].as_str().unwrap_or_default().to_string(), a["codes"][0].as_str().unwrap_or_default().to_string())
        })
        .collect();
    assert!(kinds.contains(&("connection".into(), "OUTAGE".into())), "{heard:?}");
    assert!(kinds.iter().any(|k| k.0 == "stalled"), "{heard:?}");
    assert!(kinds.iter().any(|k| k.0 == "connection" && k.1 != "OUTAGE"), "recovered: {heard:?}");
    let log = cluster.server_log();
    assert!(log.contains("WARNING:  pgforce: the connection to Salesforce went from"), "logged as a WARNING");

    // The org's API budget nearly spent: throttled.
    sf.admin("PUT", "/api-usage", serde_json::json!({"used": 99_990, "limit": 100_000}));
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Budget', 'T-1')").expect("row");
    let heard = alerts(&mut listener, Duration::from_secs(20), |a| a.iter().any(|a| a["kind"] == "throttled"));
    let throttled = heard.iter().find(|a| a["kind"] == "throttled").unwrap_or_else(|| panic!("throttled: {heard:?}"));
    // One message: the alert says what sync_status says of the pace.
    let message = throttled["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("of 100000 is above pgforce.max_api_usage") && message.contains("spread over 24 hours"),
        "{throttled}"
    );
    let status: Option<String> = c
        .query_one("SELECT connection_message FROM salesforce.sync_status WHERE table_name = 'contact'", &[])
        .expect("status")
        .get(0);
    assert!(
        status.as_deref().is_some_and(|s| s.starts_with(message.split(';').next().unwrap_or(message))),
        "{status:?} / {message}"
    );
}

/// diagnose() as an operator: check → (status, detail, hint), in order.
fn diagnose(c: &mut postgres::Client) -> Vec<(String, String, String, Option<String>)> {
    c.query("SELECT check_name, status, detail, hint FROM salesforce.diagnose()", &[])
        .expect("diagnose")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn finding<'a>(
    rows: &'a [(String, String, String, Option<String>)],
    check: &str,
    detail: &str,
) -> &'a (String, String, String, Option<String>) {
    rows.iter()
        .find(|r| r.0 == check && r.2.contains(detail))
        .unwrap_or_else(|| panic!("no {check} row saying {detail:?}: {rows:#?}"))
}

#[test]
fn diagnose_finds_what_the_checklists_look_for() {
    let mut config = fakeforce::Config::default();
    config.objects.push(
        serde_json::from_value(serde_json::json!({
            "name": "Item__c",
            "key_prefix": "a0I",
            "fields": [
                {"name": "Name", "type": "string", "length": 80},
                {"name": "Code__c", "type": "string", "length": 20, "read_only": true},
                {"name": "Ext__c", "type": "string", "length": 80, "unique": true, "external_id": true}
            ]
        }))
        .expect("object"),
    );
    let sf = Salesforce::start_with(config);
    let mut settings = sf.settings();
    settings.push("pgforce.enabled = off".into());
    settings.push("pgforce.alert_stalled_after = '1s'".into());
    let cluster = Cluster::start_with(true, &settings);
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE EXTENSION pgforce CASCADE;
         CREATE TABLE public.item (id serial PRIMARY KEY, name text, code__c text, missing__c text, ext__c text);
         SELECT salesforce.map_table('public.item', 'Item__c', upsert_field => 'ext__c');
         INSERT INTO public.item (name, ext__c) VALUES ('Waiting', 'E-1');
         INSERT INTO salesforce._trigger_log (state, action, table_name, record_id, sf_message)
         VALUES ('FAILED', 'INSERT', 'item', 9, 'DUPLICATE_VALUE: duplicate value found: Ext__c duplicates value on record with id: a0I000000000001AAA');
         CREATE ROLE ops LOGIN IN ROLE pgforce_operator; CREATE ROLE app LOGIN;",
    )
    .expect("setup");
    std::thread::sleep(Duration::from_millis(1500));
    let mut ops = cluster.connect("ops", "postgres");
    let rows = diagnose(&mut ops);
    for (check, status) in [("preloaded", "ok"), ("worker", "ok"), ("settings", "ok"), ("login", "ok")] {
        assert!(rows.iter().any(|r| r.0 == check && r.1 == status), "{check} {status}: {rows:#?}");
    }
    assert_eq!(finding(&rows, "enabled", "pgforce.enabled is off").1, "warning");
    let missing = finding(&rows, "mapping public.item", "column missing__c: Item__c has no field missing__c");
    assert_eq!(missing.1, "error");
    assert!(missing.3.as_deref().unwrap_or_default().contains("field-level security"));
    let read_only = finding(&rows, "mapping public.item", "Item__c.Code__c is neither createable nor updateable");
    assert_eq!(read_only.1, "error");
    assert_eq!(finding(&rows, "oldest pending", "the oldest change waiting (item)").1, "warning");
    let failed = finding(&rows, "failures DUPLICATE_VALUE", "1 failed change");
    assert!(failed.3.as_deref().unwrap_or_default().starts_with("A unique field"), "{failed:?}");
    assert!(!format!("{rows:?}").contains("pgforce-demo-secret"), "no secret in a row");

    // A bad secret: Salesforce's OAuth error, verbatim.
    c.batch_execute("ALTER SYSTEM SET pgforce.client_secret = 'wrong'").expect("secret");
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    std::thread::sleep(Duration::from_millis(300));
    let rows = diagnose(&mut cluster.connect("ops", "postgres"));
    let login = finding(&rows, "login", "Salesforce refused the credentials: ");
    assert_eq!(login.1, "error");
    assert!(login.2.contains("invalid_client"), "{login:?}");
    assert!(!format!("{rows:?}").contains("wrong"), "no secret in a row");

    // Only operators may run it: it logs in and spends API calls.
    let err = cluster.connect("app", "postgres").query("SELECT * FROM salesforce.diagnose()", &[]);
    assert_eq!(err.expect_err("not an operator").as_db_error().expect("db").code().code(), "42501");
}

/// A call as (method, path without its query, the records or ids it carries), sorted for comparing sets of calls.
type Call = (String, String, Vec<serde_json::Value>);

#[test]
fn preview_shows_exactly_what_is_then_sent() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut c = cluster.admin();
    c.query_one("SELECT salesforce.resume('public.contact')", &[]).expect("resume");
    c.batch_execute(
        "INSERT INTO public.contact (lastname, external_id__c) VALUES ('Ann', 'A-1'), ('Bob', 'B-1'), ('Cy', 'C-1')",
    )
    .expect("rows");
    wait_for(WAIT, "the first rows delivered", || (delivered(&mut c, "contact") == 3).then_some(()));
    c.query_one("SELECT salesforce.pause('public.contact')", &[]).expect("pause");
    c.batch_execute(
        "UPDATE public.contact SET lastname = 'Anne' WHERE id = 1;
         DELETE FROM public.contact WHERE id = 2;
         INSERT INTO public.contact (lastname, external_id__c) VALUES ('Dee', 'D-1'), ('Eve', 'E-1');
         INSERT INTO public.account (name) VALUES ('Not this table');",
    )
    .expect("changes");
    let rows = c
        .query(
            "SELECT request, method, path, record::text, log_ids, table_name FROM salesforce.preview('public.contact')
              ORDER BY request, log_ids",
            &[],
        )
        .expect("preview");
    assert!(rows.iter().all(|r| r.get::<_, String>(5) == "public.contact"), "one table");
    let mut expected: Vec<Call> = Vec::new();
    for r in &rows {
        let (request, method, path, record): (i32, String, String, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let record: serde_json::Value = serde_json::from_str(&record).expect("record JSON");
        assert!(request > 0, "everything here is sent: {method} {path}");
        let path = path.split('?').next().unwrap_or_default().to_string();
        if let Some(call) = expected.iter_mut().find(|e| e.0 == method && e.1 == path) {
            call.2.push(record);
        } else {
            expected.push((method, path, vec![record]));
        }
    }
    assert_eq!(expected.len(), 3, "an upsert of the new rows, an update, a delete: {expected:#?}");
    // A preview changes nothing: the entries are still queued, nothing was sent.
    let before = sf.admin("GET", "/writes", serde_json::Value::Null).as_array().map_or(0, Vec::len);
    let queued: i64 = c
        .query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'NEW' AND table_name = 'contact'", &[])
        .expect("log")
        .get(0);
    assert_eq!(queued, 4, "an update, a delete, two inserts");

    c.query_one("SELECT salesforce.resume('public.contact')", &[]).expect("resume");
    wait_for(WAIT, "the changes delivered", || (status(&mut c, "contact").0 == 0).then_some(()));
    let writes = sf.admin("GET", "/writes", serde_json::Value::Null);
    let mut sent: Vec<Call> = Vec::new();
    for w in writes.as_array().expect("writes").iter().skip(before) {
        let method = w["method"].as_str().unwrap_or_default().to_string();
        let path = w["path"].as_str().unwrap_or_default().to_string();
        if path.contains("/Account") || w["body"]["records"][0]["attributes"]["type"] == "Account" {
            continue;
        }
        let records: Vec<serde_json::Value> = if method == "DELETE" {
            w["query"]["ids"].as_str().unwrap_or_default().split(',').map(|id| serde_json::json!(id)).collect()
        } else {
            w["body"]["records"].as_array().cloned().unwrap_or_default()
        };
        sent.push((method, path, records));
    }
    let sort = |calls: &mut Vec<Call>| {
        for call in calls.iter_mut() {
            call.2.sort_by_key(|r| r.to_string());
        }
        calls.sort_by_key(|c| format!("{c:?}"));
    };
    sort(&mut expected);
    sort(&mut sent);
    assert_eq!(sent, expected);
}

#[test]
fn metrics_count_what_was_sent_and_how_long_it_took() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut c = cluster.admin();
    refuse_lastname(&sf, "Bad", "no");
    c.query_one("SELECT salesforce.resume('public.contact')", &[]).expect("resume");
    c.batch_execute(
        "INSERT INTO public.contact (lastname, external_id__c) SELECT 'C' || g, 'X-' || g FROM generate_series(1, 10) g;
         INSERT INTO public.contact (lastname, external_id__c) VALUES ('Bad', 'X-bad');",
    )
    .expect("rows");
    let metrics = wait_for(WAIT, "the counters written", || {
        let r = c
            .query_one(
                "SELECT sent, succeeded, failed, requests, bytes, api_calls, latency_ms_p50_1m, latency_ms_p99_1h, since
                   FROM salesforce.sync_metrics WHERE table_name = 'contact'",
                &[],
            )
            .expect("metrics");
        let (sent, succeeded, failed): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        (succeeded == 10 && failed == 1).then(|| {
            (
                sent,
                r.get::<_, i64>(3),
                r.get::<_, i64>(4),
                r.get::<_, i64>(5),
                r.get::<_, Option<i64>>(6),
                r.get::<_, Option<i64>>(7),
            )
        })
    });
    let (sent, requests, bytes, api_calls, p50, p99) = metrics;
    assert_eq!(sent, 11);
    assert!(requests >= 1 && api_calls >= requests, "{requests} requests, {api_calls} API calls");
    assert!(bytes > 11 * 30, "{bytes} bytes");
    let (p50, p99) = (p50.expect("a p50 over the last minute"), p99.expect("a p99 over the last hour"));
    assert!(p50 >= 0 && p99 >= p50, "whole milliseconds: {p50} {p99}");
    // Counters are for monitors; the mapping without traffic shows zeros.
    let idle: i64 = c
        .query_one("SELECT sent FROM salesforce.sync_metrics WHERE table_name = 'account'", &[])
        .expect("account")
        .get(0);
    assert_eq!(idle, 0);
}

/// The live Contact records by external id: (Id, LastName).
#[test]
fn rollback_sets_salesforce_and_postgres_back_except_what_it_reports() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut c = cluster.admin();
    c.batch_execute("CREATE ROLE ops LOGIN IN ROLE pgforce_operator; CREATE ROLE app LOGIN;").expect("roles");
    c.query_one("SELECT salesforce.resume('public.contact')", &[]).expect("resume");
    c.batch_execute(
        "INSERT INTO public.contact (lastname, external_id__c)
         VALUES ('Ann', 'A-1'), ('Bob', 'B-1'), ('Dee', 'D-1'), ('Eve', 'E-1')",
    )
    .expect("before");
    wait_for(WAIT, "the first rows delivered", || (delivered(&mut c, "contact") == 4).then_some(()));
    std::thread::sleep(Duration::from_millis(1100));
    let mark: String = c.query_one("SELECT now()::text", &[]).expect("now").get(0);
    let before = sf.contacts();
    std::thread::sleep(Duration::from_millis(1100));
    // Since the mark: two updates, an insert, a delete; then someone else edits one of the updated records.
    c.batch_execute(
        "UPDATE public.contact SET lastname = 'Anne' WHERE id = 1;
         UPDATE public.contact SET lastname = 'Bobby' WHERE id = 2;
         UPDATE public.contact SET lastname = 'Eva' WHERE id = 4;
         INSERT INTO public.contact (lastname, external_id__c) VALUES ('Cy', 'C-1');
         DELETE FROM public.contact WHERE id = 3;",
    )
    .expect("changes");
    wait_for(WAIT, "the changes delivered", || {
        let c5 = sf.contacts();
        (status(&mut c, "contact").0 == 0 && c5.contains_key("C-1") && !c5.contains_key("D-1")).then_some(())
    });
    let eve = sf.contacts()["E-1"].0.clone();
    sf.admin("PATCH", &format!("/records/Contact/{eve}"), serde_json::json!({"fields": {"LastName": "Eve by hand"}}));

    let plan = |c: &mut postgres::Client, sql: &str| -> Vec<(i64, String, Option<i64>)> {
        c.query(sql, &[&mark]).expect("rollback").iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
    };
    let mut ops = cluster.connect("ops", "postgres");
    let dry = plan(
        &mut ops,
        "SELECT record_id, action, log_id FROM salesforce.rollback($1::text::timestamptz) ORDER BY record_id",
    );
    assert_eq!(
        dry,
        [
            (1, "restore".to_string(), None),
            (2, "restore".to_string(), None),
            (3, "report".to_string(), None),
            (4, "skip".to_string(), None),
            (5, "delete".to_string(), None)
        ]
    );
    assert_eq!(sf.contacts()["A-1"].1, "Anne", "a dry run changes nothing");

    let done = plan(
        &mut ops,
        "SELECT record_id, action, log_id FROM salesforce.rollback($1::text::timestamptz, dry_run => false)
          ORDER BY record_id",
    );
    assert!(done.iter().filter(|d| d.1 == "restore" || d.1 == "delete").all(|d| d.2.is_some()), "{done:?}");
    wait_for(WAIT, "the rollback delivered", || (status(&mut c, "contact").0 == 0).then_some(()));
    let after = sf.contacts();
    assert_eq!(after["A-1"], before["A-1"], "restored");
    assert_eq!(after["B-1"], before["B-1"], "restored");
    assert!(!after.contains_key("C-1"), "the record created since is deleted");
    assert!(!after.contains_key("D-1"), "reported, not recreated");
    assert_eq!(after["E-1"].1, "Eve by hand", "changed by someone else since: left alone");
    // Postgres went back with it, and captured nothing of its own writes.
    let rows: Vec<(i32, String)> = c
        .query("SELECT id, lastname FROM public.contact ORDER BY id", &[])
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [(1, "Ann".to_string()), (2, "Bob".to_string()), (4, "Eva".to_string())]);
    let queued: i64 = c
        .query_one(
            "SELECT count(*) FROM salesforce._trigger_log WHERE state NOT IN ('SUCCESS', 'MERGED', 'IGNORED')",
            &[],
        )
        .expect("log")
        .get(0);
    assert_eq!(queued, 0);

    // Forced, the record someone else changed goes back too; only Salesforce, and the row is marked.
    let forced = plan(
        &mut ops,
        "SELECT record_id, action, log_id FROM salesforce.rollback($1::text::timestamptz, 'public.contact',
                  dry_run => false, force => true, salesforce_only => true) WHERE record_id = 4",
    );
    assert_eq!(forced[0].1, "restore");
    wait_for(WAIT, "the forced rollback delivered", || (sf.contacts()["E-1"].1 == "Eve").then_some(()));
    let (name, lastop): (String, String) = c
        .query_one("SELECT lastname, _hc_lastop FROM public.contact WHERE id = 4", &[])
        .map(|r| (r.get(0), r.get(1)))
        .expect("row");
    assert_eq!((name.as_str(), lastop.as_str()), ("Eva", "ROLLED_BACK"), "the row is left, and says so");

    let err = cluster.connect("app", "postgres").query("SELECT * FROM salesforce.rollback(now())", &[]);
    assert_eq!(err.expect_err("not an operator").as_db_error().expect("db").code().code(), "42501");
}
