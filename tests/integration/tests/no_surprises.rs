//! Operating pgforce the way a new user and the DBA who watches it do, following the README (issue 27): what they
//! do on the day something goes wrong must never destroy data or mislead them.

use std::time::Duration;

use pgforce_integration::{open_entries, wait_for, Cluster, Salesforce};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// A cluster delivering to `sf` with `settings` added, `public.contact` mapped with an upsert field and
/// `public.account` without one.
fn setup(sf: &Salesforce, settings: &[&str]) -> Cluster {
    let mut all = sf.settings();
    all.extend(settings.iter().map(|s| s.to_string()));
    let cluster = Cluster::start_with(true, &all);
    cluster
        .admin()
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE ROLE ops LOGIN IN ROLE pgforce_operator;
             CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, email text, external_id__c text);
             CREATE TABLE public.account (id serial PRIMARY KEY, name text, phone text);
             -- write_only: these tests plant other users' records in Salesforce, which a read_write mapping would
             -- read into the table.
             SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c',
                                         mode => 'write_only');
             SELECT salesforce.map_table('public.account', 'Account');
             GRANT SELECT ON public.contact, public.account TO ops;",
        )
        .expect("setup");
    cluster
}

/// A validation rule in the org: Salesforce refuses contacts whose e-mail is at a `blocked.` domain.
const BLOCKED_EMAIL: &str = r#"{"object": "Contact", "field": "Email", "contains": "@blocked.", "effect": {"type":
    "record_error", "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Blocked domain"}}"#;

fn block_emails(sf: &Salesforce) {
    let rule: serde_json::Value = serde_json::from_str(BLOCKED_EMAIL).expect("rule");
    sf.admin("PUT", "/faults", json!([rule]));
}

fn text(c: &mut postgres::Client, sql: &str) -> Option<String> {
    c.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Rolling back what was delivered since a moment deletes only records pgforce created since: a row re-captured
/// with Heroku Connect's repair function, a row whose insert Salesforce answered "updated" (its record existed), and
/// a requeued archive entry are inserts in the log, but created nothing.
fn rollback_deletes_only_what_was_created_since(settings: &[&str]) {
    let sf = Salesforce::start();
    let cluster = setup(&sf, settings);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Ann', 'A-1'), ('Rex', 'R-1');")
        .expect("before");
    wait_for(WAIT, "the first rows delivered", || {
        (sf.contacts().len() == 2 && open_entries(&mut c) == 0).then_some(())
    });
    // Someone else's record, with the key a row inserted later will carry.
    sf.create("Contact", json!({"LastName": "Existing", "External_Id__c": "X-1"}));
    wait_for(WAIT, "A-1 archived", || {
        text(&mut c, "SELECT count(*)::text FROM salesforce._trigger_log_archive WHERE record_id = 2")
            .filter(|n| n == "1")
    });
    std::thread::sleep(Duration::from_millis(1100));
    let mark = text(&mut c, "SELECT now()::text").unwrap_or_default();
    std::thread::sleep(Duration::from_millis(1100));
    // Since the mark: a repair re-capture of Ann (as the seed documents advise), an insert onto the existing
    // record, a requeued archive entry of Rex, and one real new record.
    c.batch_execute(
        "SELECT salesforce.hc_capture_insert_from_row(hstore(c.*), 'contact') FROM public.contact c WHERE id = 1;
         INSERT INTO public.contact (lastname, external_id__c) VALUES ('Xena', 'X-1'), ('New', 'N-1');
         UPDATE salesforce._trigger_log_archive SET state = 'REQUEUE' WHERE record_id = 2;",
    )
    .expect("changes since");
    wait_for(WAIT, "the changes delivered", || {
        (open_entries(&mut c) == 0
            && sf.contacts().contains_key("N-1")
            && text(
                &mut c,
                "SELECT count(*)::text FROM salesforce._trigger_log WHERE record_id = 2 AND state = 'SUCCESS'",
            )
            .as_deref()
                == Some("1"))
        .then_some(())
    });
    let results: Vec<(String, String)> = c
        .query(
            "SELECT action, state FROM salesforce._trigger_log WHERE processed_at >= $1::text::timestamptz ORDER BY id",
            &[&mark],
        )
        .expect("log")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(results.iter().all(|r| r.0 == "INSERT" && r.1 == "SUCCESS"), "{results:?}");

    let mut ops = cluster.connect("ops", "postgres");
    let done: Vec<(i64, String)> = ops
        .query(
            "SELECT record_id, action FROM salesforce.rollback($1::text::timestamptz, 'public.contact', dry_run => false)
              ORDER BY record_id",
            &[&mark],
        )
        .expect("rollback")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        done,
        [(1, "report".to_string()), (2, "report".to_string()), (3, "report".to_string()), (4, "delete".to_string())],
        "only N-1 was created since"
    );
    wait_for(WAIT, "the rollback delivered", || (open_entries(&mut c) == 0).then_some(()));
    let left: Vec<String> = sf.contacts().into_keys().collect();
    assert_eq!(left, ["A-1", "R-1", "X-1"], "records pgforce did not create are kept");
    let rows: Vec<String> = c
        .query("SELECT external_id__c FROM public.contact ORDER BY id", &[])
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, ["A-1", "R-1", "X-1"], "and so are their rows");
}

#[test]
fn rollback_deletes_only_records_created_since() {
    rollback_deletes_only_what_was_created_since(&["pgforce.archive_after = '1s'"]);
}

#[test]
fn rollback_deletes_only_records_created_since_by_bulk_jobs() {
    rollback_deletes_only_what_was_created_since(&["pgforce.archive_after = '1s'", "pgforce.bulk_threshold = 1"]);
}

/// Heroku Connect's documented fix for a failed insert: UPDATE a column of the row, which sends the row to
/// Salesforce as an insert. The whole row goes (an upsert by the upsert field, else a create), in both algorithms.
#[test]
fn updating_a_row_whose_insert_failed_sends_the_whole_row() {
    for algorithm in ["merged", "ordered"] {
        let sf = Salesforce::start();
        let setting = format!("pgforce.write_algorithm = '{algorithm}'");
        let cluster = setup(&sf, &[setting.as_str()]);
        sf.admin(
            "PUT",
            "/faults",
            json!([
                serde_json::from_str::<serde_json::Value>(BLOCKED_EMAIL).expect("rule"),
                {"object": "Account", "field": "Phone", "contains": "bad", "effect": {"type": "record_error",
                 "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Bad phone"}}
            ]),
        );
        let mut c = cluster.admin();
        c.batch_execute(
            "INSERT INTO public.contact (lastname, email, external_id__c) VALUES ('Lee', 'lee@blocked.example', 'F-1');
             INSERT INTO public.account (name, phone) VALUES ('Acme', 'bad number');",
        )
        .expect("inserts");
        wait_for(WAIT, "both inserts failed", || {
            (text(&mut c, "SELECT count(*)::text FROM salesforce._trigger_log WHERE state = 'FAILED'").as_deref()
                == Some("2"))
            .then_some(())
        });
        // The fix, as the seed documents say: update the column that was wrong.
        c.batch_execute(
            "UPDATE public.contact SET email = 'lee@fine.example' WHERE external_id__c = 'F-1';
             UPDATE public.account SET phone = '555-0100' WHERE name = 'Acme';",
        )
        .expect("fix");
        let rows = wait_for(WAIT, &format!("both rows synced ({algorithm})"), || {
            let r = c
                .query_one(
                    "SELECT (SELECT _hc_lastop || ' ' || coalesce(_hc_err, '') FROM public.contact),
                            (SELECT _hc_lastop || ' ' || coalesce(_hc_err, '') FROM public.account)",
                    &[],
                )
                .ok()?;
            let (contact, account): (String, String) = (r.get(0), r.get(1));
            (!contact.starts_with("PENDING") && !account.starts_with("PENDING") && open_entries(&mut c) == 0)
                .then_some((contact, account))
        });
        assert_eq!(rows, ("INSERTED ".to_string(), "INSERTED ".to_string()), "{algorithm}");
        let contact = &sf.live("Contact")[0];
        assert_eq!((contact["LastName"].as_str(), contact["Email"].as_str()), (Some("Lee"), Some("lee@fine.example")));
        let account = &sf.live("Account")[0];
        assert_eq!((account["Name"].as_str(), account["Phone"].as_str()), (Some("Acme"), Some("555-0100")));
    }
}

/// sync_status's connection state and message for `contact`, read as a superuser (a monitor).
fn connection(c: &mut postgres::Client) -> (String, String) {
    let r = c
        .query_one(
            "SELECT connection_state, coalesce(connection_message, '') FROM salesforce.sync_status
              WHERE table_name = 'contact'",
            &[],
        )
        .expect("sync_status");
    (r.get(0), r.get(1))
}

/// The WARNINGs a statement raised (as the client got them).
fn warnings_of(cluster: &Cluster, database: &str, sql: &str) -> Vec<String> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let mut config = cluster.config("postgres", database);
    config.notice_callback(move |n| {
        sink.lock().expect("notices").push(format!(
            "{}: {} HINT: {}",
            n.severity(),
            n.message(),
            n.hint().unwrap_or("")
        ))
    });
    let mut c = config.connect(postgres::NoTls).expect("connect");
    c.batch_execute(sql).expect(sql);
    let warnings = seen.lock().expect("notices").iter().filter(|n| n.starts_with("WARNING")).cloned().collect();
    warnings
}

const MAP_AND_WRITE: &str = "CREATE EXTENSION pgforce CASCADE;
     CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, external_id__c text);
     SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c');
     INSERT INTO public.contact (lastname, external_id__c) VALUES ('Nobody', 'N-1');";

#[test]
fn nothing_delivering_is_never_shown_as_idle() {
    // Not preloaded (another library is): CREATE EXTENSION warns with a hint that keeps that library.
    let sf = Salesforce::start();
    let mut settings = sf.settings();
    settings.push("shared_preload_libraries = 'hstore'".into());
    let cluster = Cluster::start_with(false, &settings);
    let warnings = warnings_of(&cluster, "postgres", MAP_AND_WRITE);
    assert!(
        warnings.iter().any(|w| w.contains("not in shared_preload_libraries")
            && w.contains("shared_preload_libraries = 'hstore, pgforce'")),
        "{warnings:?}"
    );
    let (state, message) = connection(&mut cluster.admin());
    assert_eq!(state, "NOT_PRELOADED", "{message}");
    assert!(message.contains("'hstore, pgforce'"), "{message}");
    drop(cluster);

    // Preloaded, but serving another database: the one where the extension is created warns, and says so.
    let cluster = Cluster::start_with(true, &sf.settings());
    cluster.admin().batch_execute("CREATE DATABASE app").expect("database");
    let warnings = warnings_of(&cluster, "app", MAP_AND_WRITE);
    assert!(
        warnings.iter().any(|w| w.contains("serves database \"postgres\"") && w.contains("pgforce.database = 'app'")),
        "{warnings:?}"
    );
    let (state, message) = connection(&mut cluster.connect("postgres", "app"));
    assert_eq!(state, "OTHER_DATABASE", "{message}");
    // Everyone sees the state; the message (it names settings) is for monitors.
    cluster.admin().batch_execute("CREATE ROLE someone LOGIN").expect("role");
    let r = cluster
        .connect("someone", "app")
        .query_one("SELECT connection_state, connection_message FROM salesforce.sync_status", &[])
        .expect("sync_status as anyone");
    assert_eq!((r.get::<_, String>(0), r.get::<_, Option<String>>(1)), ("OTHER_DATABASE".to_string(), None));

    // The right database, but the worker is gone (it comes back 5 s after it stops): NO_WORKER meanwhile.
    let mut c = cluster.admin();
    c.batch_execute(MAP_AND_WRITE).expect("map in postgres");
    wait_for(WAIT, "delivery", || (sf.live("Contact").len() == 1).then_some(()));
    let idle = |s: &str| ["IDLE", "POLLING_DB_CHANGES"].contains(&s);
    assert!(idle(&connection(&mut c).0));
    c.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pgforce sync worker'",
    )
    .expect("stop the worker");
    let message = wait_for(Duration::from_secs(4), "NO_WORKER", || {
        let (state, message) = connection(&mut c);
        (state == "NO_WORKER").then_some(message)
    });
    assert!(message.contains("no pgforce sync worker is running"), "{message}");
    wait_for(WAIT, "the worker back", || idle(&connection(&mut c).0).then_some(()));
}

/// errored_writes of `contact`, and the failure checks diagnose() reports.
fn failures_shown(c: &mut postgres::Client) -> (i64, Vec<String>) {
    let errored: i64 = c
        .query_one("SELECT errored_writes FROM salesforce.sync_status WHERE table_name = 'contact'", &[])
        .expect("sync_status")
        .get(0);
    let checks = c
        .query("SELECT detail FROM salesforce.diagnose() WHERE status <> 'ok' AND detail LIKE '%Blocked%'", &[])
        .expect("diagnose")
        .iter()
        .map(|r| r.get(0))
        .collect();
    (errored, checks)
}

#[test]
fn a_failure_counts_until_it_is_resolved_wherever_its_entry_lives() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &["pgforce.archive_after = '1s'"]);
    block_emails(&sf);
    let mut c = cluster.admin();
    c.batch_execute(
        "INSERT INTO public.contact (lastname, email, external_id__c) VALUES ('Lee', 'lee@blocked.example', 'F-1'),
                                                                          ('Ann', 'ann@fine.example', 'F-2');",
    )
    .expect("inserts");
    wait_for(WAIT, "the failure archived", || {
        (text(&mut c, "SELECT count(*)::text FROM salesforce._trigger_log_archive WHERE state = 'FAILED'").as_deref()
            == Some("1")
            && text(&mut c, "SELECT count(*)::text FROM salesforce._trigger_log").as_deref() == Some("0"))
        .then_some(())
    });
    let (errored, checks) = failures_shown(&mut c);
    assert_eq!(errored, 1, "an archived failure still counts while its row is not in Salesforce");
    assert_eq!(checks.len(), 1, "diagnose() still reports it: {checks:?}");
    // Resolved by a change of the row that gets through.
    c.batch_execute("UPDATE public.contact SET email = 'lee@fine.example' WHERE external_id__c = 'F-1'").expect("fix");
    wait_for(WAIT, "the fix delivered", || (sf.contacts().contains_key("F-1")).then_some(()));
    wait_for(WAIT, "the failure resolved", || (failures_shown(&mut c) == (0, Vec::new())).then_some(()));
}

#[test]
fn an_outage_has_its_own_state_and_an_operator_can_cut_its_wait_short() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    sf.admin("POST", "/outage", json!({"mode": "unavailable", "seconds": 600}));
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Waits', 'O-1')").expect("insert");
    // The backoff grows with each failed attempt: wait until the next attempt is a while away.
    let (message, next) = wait_for(Duration::from_secs(90), "an outage with its next attempt 5 s away or more", || {
        let r = c
            .query_one(
                "SELECT connection_state, connection_message,
                        extract(epoch FROM next_attempt_at - clock_timestamp())::float8
                   FROM salesforce.sync_status WHERE table_name = 'contact'",
                &[],
            )
            .ok()?;
        let (state, message, next): (String, Option<String>, Option<f64>) = (r.get(0), r.get(1), r.get(2));
        assert_ne!(state, "PAUSED", "an outage is no operator's pause");
        (state == "OUTAGE" && next.is_some_and(|n| n >= 5.0)).then(|| (message.unwrap_or_default(), next))
    });
    assert!(message.contains("503") || message.contains("SERVER_UNAVAILABLE"), "{message}");
    let next_attempt: String = c
        .query_one("SELECT next_attempt_at::text FROM salesforce.sync_status WHERE table_name = 'contact'", &[])
        .expect("next")
        .get(0);
    // Salesforce is back; the operator does not wait for the backoff.
    sf.admin("DELETE", "/outage", serde_json::Value::Null);
    let mut ops = cluster.connect("ops", "postgres");
    let said: String = ops.query_one("SELECT salesforce.retry_now()", &[]).expect("retry_now").get(0);
    assert!(said.contains("tries Salesforce"), "{said}");
    wait_for(WAIT, "the change delivered", || sf.contacts().contains_key("O-1").then_some(()));
    let early: bool =
        c.query_one("SELECT clock_timestamp() < $1::text::timestamptz", &[&next_attempt]).expect("now").get(0);
    assert!(early, "delivered before the backoff's next attempt ({next:?} s away): retry_now() cut it short");
    wait_for(WAIT, "the state back to normal", || {
        let r =
            c.query_one(
            "SELECT connection_state, next_attempt_at IS NULL FROM salesforce.sync_status WHERE table_name = 'contact'",
            &[],
        )
        .ok()?;
        (r.get::<_, String>(0) != "OUTAGE" && r.get::<_, bool>(1)).then_some(())
    });
    let attempts: i64 =
        c.query_one("SELECT sum(attempts)::bigint FROM salesforce._trigger_log", &[]).expect("sum").get(0);
    assert_eq!(attempts, 0, "the outage cost the change no attempt");
}

#[test]
fn alerts_are_kept_resolved_and_never_sent_late_about_what_was_fixed() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &["pgforce.alert_interval = '10s'"]);
    block_emails(&sf);
    let mut c = cluster.admin();
    let failed_alerts = |c: &mut postgres::Client| -> Vec<(Vec<String>, Vec<String>, bool)> {
        c.query("SELECT tables, codes, resolved_at IS NOT NULL FROM salesforce.sync_alerts WHERE kind = 'failed' ORDER BY id", &[])
            .expect("sync_alerts")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    c.batch_execute(
        "INSERT INTO public.contact (lastname, email, external_id__c) VALUES ('A', 'a@blocked.example', 'A-1')",
    )
    .expect("first failure");
    wait_for(WAIT, "the first alert kept", || (failed_alerts(&mut c).len() == 1).then_some(()));
    let started = std::time::Instant::now();
    // A second failure within the interval is held back; both are fixed before the interval is over.
    c.batch_execute(
        "INSERT INTO public.contact (lastname, email, external_id__c) VALUES ('B', 'b@blocked.example', 'B-1')",
    )
    .expect("second failure");
    wait_for(WAIT, "the second failure", || {
        (text(&mut c, "SELECT count(*)::text FROM salesforce._trigger_log WHERE state = 'FAILED'").as_deref()
            == Some("2"))
        .then_some(())
    });
    c.batch_execute("UPDATE public.contact SET email = lastname || '@fine.example'").expect("fix both");
    wait_for(WAIT, "both fixed", || (sf.contacts().len() == 2).then_some(()));
    assert!(started.elapsed() < Duration::from_secs(10), "the fixes must land within the alert interval to test it");
    // The held-back alert is due after the interval; it is re-checked then, and not sent.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()) + Duration::from_secs(3));
    let alerts = failed_alerts(&mut c);
    assert_eq!(
        alerts,
        [(vec!["contact".to_string()], vec!["FIELD_CUSTOM_VALIDATION_EXCEPTION".to_string()], true)],
        "one alert, resolved; none sent late about failures already fixed"
    );
    // An operator acknowledges what is there; monitors read it, others do not.
    let mut ops = cluster.connect("ops", "postgres");
    let acknowledged: i64 = ops.query_one("SELECT salesforce.acknowledge_alerts()", &[]).expect("ack").get(0);
    assert!(acknowledged >= 1);
    let by: String =
        ops.query_one("SELECT acknowledged_by FROM salesforce.sync_alerts LIMIT 1", &[]).expect("read").get(0);
    assert_eq!(by, "ops");
    c.batch_execute("CREATE ROLE nobody LOGIN").expect("role");
    let denied = cluster.connect("nobody", "postgres").query("SELECT * FROM salesforce.sync_alerts", &[]);
    assert_eq!(denied.expect_err("not a monitor").code().map(|s| s.code()), Some("42501"));
}

#[test]
fn mapping_a_table_with_rows_says_how_to_send_them() {
    let sf = Salesforce::start();
    let cluster = Cluster::start_with(true, &sf.settings());
    cluster
        .admin()
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE public.lead (id serial PRIMARY KEY, lastname text, company text, external_id__c text);
             INSERT INTO public.lead (lastname, company, external_id__c)
             SELECT 'L' || g, 'Acme', 'L-' || g FROM generate_series(1, 3) g;",
        )
        .expect("a table with rows");
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = notices.clone();
    let mut config = cluster.config("postgres", "postgres");
    config.notice_callback(move |n| {
        sink.lock().expect("notices").push((n.message().to_string(), n.hint().map(String::from)))
    });
    let mut c = config.connect(postgres::NoTls).expect("connect");
    c.batch_execute("SELECT salesforce.map_table('public.lead', 'Lead', upsert_field => 'external_id__c')")
        .expect("map");
    let seen: Vec<(String, Option<String>)> = notices.lock().expect("notices").clone();
    let (message, hint) = seen
        .iter()
        .find(|n| n.0.contains("no sfid"))
        .cloned()
        .unwrap_or_else(|| panic!("no notice about the rows: {seen:?}"));
    assert!(message.contains("3 rows of public.lead have no sfid"), "{message}");
    // The hint is the statement to run, and it works.
    let statement = hint.unwrap_or_default().trim_start_matches("To send them now: ").to_string();
    c.batch_execute(&statement).expect(&statement);
    wait_for(WAIT, "the rows sent", || (sf.live("Lead").len() == 3).then_some(()));
}

#[test]
fn resume_with_nothing_paused_says_so_and_nothing_alarming() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Calm', 'C-1')").expect("insert");
    wait_for(WAIT, "delivery", || sf.contacts().contains_key("C-1").then_some(()));
    let said: String =
        cluster.connect("ops", "postgres").query_one("SELECT salesforce.resume()", &[]).expect("resume").get(0);
    assert_eq!(said, "no mapping was paused", "no server identity reset when nothing was paused");
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Calm', 'C-2')").expect("insert");
    wait_for(WAIT, "delivery goes on", || sf.contacts().contains_key("C-2").then_some(()));
}

/// What was sent can be seen without a proxy: every request the worker made is kept in `sync_requests` (method,
/// path without its query, records, HTTP status or none, milliseconds, error code), the newest
/// `pgforce.request_history` only, for monitors.
#[test]
fn every_request_is_kept_in_sync_requests_newest_first_and_bounded() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &["pgforce.request_history = 6"]);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Ann', 'Q-1'), ('Bo', 'Q-2');")
        .expect("rows");
    wait_for(WAIT, "delivery", || (open_entries(&mut c) == 0).then_some(()));
    let sent = text(
        &mut c,
        "SELECT string_agg(method || ' ' || path || ' ' || records || ' ' || coalesce(http_status::text, '-')
                           || ' ' || coalesce(error_code, '-') || ' ' || (milliseconds >= 0)::text, E'\\n' ORDER BY id)
           FROM salesforce.sync_requests",
    )
    .expect("requests kept");
    assert!(sent.contains("POST /services/oauth2/token 0 200 - true"), "the login: {sent}");
    assert!(
        sent.lines().any(|l| l.starts_with("PATCH /services/data/v")
            && l.ends_with("/composite/sobjects/Contact/external_id__c 2 200 - true")),
        "the upsert of two records: {sent}"
    );
    // Salesforce down for maintenance: the refused requests are kept with their status and code.
    sf.admin("POST", "/outage", json!({"mode": "unavailable", "seconds": 30}));
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Cy', 'Q-3');").expect("row");
    wait_for(WAIT, "a refused request kept", || {
        text(&mut c, "SELECT count(*)::text FROM salesforce.sync_requests WHERE http_status = 503 AND error_code = 'UNAVAILABLE'")
            .filter(|n| n != "0")
    });
    sf.admin("DELETE", "/outage", json!({}));
    c.batch_execute("SELECT salesforce.retry_now()").expect("retry now");
    wait_for(WAIT, "delivery after the outage", || (open_entries(&mut c) == 0).then_some(()));
    for n in 4..=9 {
        c.batch_execute(&format!("INSERT INTO public.contact (lastname, external_id__c) VALUES ('R{n}', 'Q-{n}')"))
            .expect("row");
        wait_for(WAIT, "delivery", || (open_entries(&mut c) == 0).then_some(()));
    }
    let kept = text(&mut c, "SELECT count(*)::text FROM salesforce.sync_requests").expect("count");
    assert_eq!(kept, "6", "only the newest pgforce.request_history are kept");
    // For monitors: an operator reads it, an application role does not.
    let mut ops = cluster.connect("ops", "postgres");
    ops.query_one("SELECT count(*) FROM salesforce.sync_requests", &[]).expect("ops reads the requests");
    c.batch_execute("CREATE ROLE app LOGIN").expect("app");
    let mut app = cluster.connect("app", "postgres");
    let refused = app.query_one("SELECT count(*) FROM salesforce.sync_requests", &[]).expect_err("app may not");
    assert_eq!(refused.code(), Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
}

/// A mapping whose field Salesforce does not have says so in sync_status, not only in diagnose().
#[test]
fn a_bad_field_shows_as_the_mappings_write_state() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    c.batch_execute(
        "ALTER TABLE public.account ADD COLUMN no_such_field__c text;
         SELECT salesforce.alter_mapping('public.account', fields => ARRAY['name', 'no_such_field__c']);
         INSERT INTO public.account (name, no_such_field__c) VALUES ('Acme', 'x');
         INSERT INTO public.contact (lastname, external_id__c) VALUES ('Fine', 'F-1');",
    )
    .expect("a bad field");
    let state = |c: &mut postgres::Client, t: &str| {
        text(c, &format!("SELECT write_state FROM salesforce.sync_status WHERE table_name = '{t}'")).expect("state")
    };
    wait_for(WAIT, "the bad field's state", || (state(&mut c, "account") == "BAD_CONFIG").then_some(()));
    wait_for(WAIT, "the other mapping delivered", || (state(&mut c, "contact") == "DATA_SYNCED").then_some(()));
    // Fixed (the field mapped away) and retried: synced.
    c.batch_execute(
        "SELECT salesforce.alter_mapping('account', fields => ARRAY['name']);
         SELECT salesforce.retry_failed('account');",
    )
    .expect("fixed");
    wait_for(WAIT, "synced after the fix", || (state(&mut c, "account") == "DATA_SYNCED").then_some(()));
}
