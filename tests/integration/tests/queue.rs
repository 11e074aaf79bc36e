//! Nothing stops the queue: an entry whose outcome cannot be recorded in Postgres (an `sfid` another row already
//! has, a user trigger that raises on the write-back, a row locked by a long user transaction) costs that entry an
//! attempt and never holds back the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgforce_integration::{wait_for, Cluster, Salesforce};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn setup(sf: &Salesforce) -> Cluster {
    setup_with(sf, &[])
}

fn setup_with(sf: &Salesforce, extra: &[&str]) -> Cluster {
    let mut settings = sf.settings();
    settings.push("pgforce.lock_timeout = '500ms'".into());
    settings.extend(extra.iter().map(|s| s.to_string()));
    let cluster = Cluster::start_with(true, &settings);
    cluster
        .admin()
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, external_id__c text);
             SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c');",
        )
        .expect("setup");
    cluster
}

/// (state, sf_message, attempts) of the last log entry of each row, by row id.
fn entries(c: &mut postgres::Client) -> Vec<(i64, String, Option<String>, i32)> {
    c.query(
        "SELECT DISTINCT ON (record_id) record_id, state::text, sf_message, attempts
           FROM salesforce._trigger_log ORDER BY record_id, id DESC",
        &[],
    )
    .expect("log")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

fn written_back(c: &mut postgres::Client, ids: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM public.contact WHERE id IN ({ids}) AND sfid IS NOT NULL"), &[])
        .expect("rows")
        .get(0)
}

#[test]
fn an_sfid_another_row_has_fails_that_entry_alone() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('First', 'X-1')").expect("first");
    wait_for(WAIT, "the first row written back", || (written_back(&mut c, "1") == 1).then_some(()));
    // A second row with the same external id is the same Salesforce record: its sfid collides with row 1's.
    c.batch_execute(
        "INSERT INTO public.contact (lastname, external_id__c) VALUES ('Second', 'X-1');
         INSERT INTO public.contact (lastname, external_id__c) SELECT 'n' || g, 'N-' || g FROM generate_series(1, 20) g;",
    )
    .expect("more");
    wait_for(WAIT, "the others written back", || {
        (written_back(&mut c, &(3..=22).map(|i| i.to_string()).collect::<Vec<_>>().join(",")) == 20).then_some(())
    });
    let second = entries(&mut c).into_iter().find(|e| e.0 == 2).expect("row 2's entry");
    assert_eq!(second.1, "FAILED", "{second:?}");
    let message = second.2.unwrap_or_default();
    assert!(
        message.starts_with("23505: ") && message.contains("already belongs to row id=1 of public.contact"),
        "{message}"
    );
    assert_eq!(second.3, 1, "it cost one attempt");
    assert_eq!(sf.live("Contact").len(), 21);
}

#[test]
fn a_user_trigger_that_raises_on_the_write_back_fails_that_entry_alone() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE FUNCTION public.no_poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'poisoned row % refuses its outcome', NEW.id; END $$;
         CREATE TRIGGER no_poison BEFORE UPDATE ON public.contact FOR EACH ROW
             WHEN (NEW.lastname = 'Poison' AND NEW.sfid IS DISTINCT FROM OLD.sfid) EXECUTE FUNCTION public.no_poison();
         INSERT INTO public.contact (lastname, external_id__c) VALUES ('Poison', 'P-1');
         INSERT INTO public.contact (lastname, external_id__c) SELECT 'n' || g, 'N-' || g FROM generate_series(1, 20) g;",
    )
    .expect("setup");
    wait_for(WAIT, "the others written back", || {
        (written_back(&mut c, &(2..=21).map(|i| i.to_string()).collect::<Vec<_>>().join(",")) == 20).then_some(())
    });
    let poison = wait_for(WAIT, "the poisoned entry failed", || {
        entries(&mut c).into_iter().find(|e| e.0 == 1 && e.1 == "FAILED")
    });
    let message = poison.2.unwrap_or_default();
    assert!(message.starts_with("P0001: poisoned row 1 refuses its outcome"), "{message}");
    // It was delivered to Salesforce; only recording the outcome failed, and nothing was sent again.
    assert_eq!(sf.live("Contact").len(), 21);
    std::thread::sleep(Duration::from_secs(1));
    let writes: i64 = sf.live("Contact").iter().filter_map(|r| r["_writes"].as_i64()).sum();
    assert_eq!(writes, 21, "no write was repeated");
}

#[test]
fn a_row_locked_by_a_user_transaction_waits_alone() {
    let sf = Salesforce::start();
    // Each attempt on the locked row costs about a second (a look-up of the record its first attempt created, then
    // the lock wait), and the backoff between attempts is random from zero: within the 7 s the row is held, a
    // loaded machine reached the default 5 attempts and the entry failed, as documented. The test is about waiting,
    // so attempts must outlast the lock.
    let cluster = setup_with(&sf, &["pgforce.max_attempts = 30"]);
    let mut c = cluster.admin();
    // A slow org: the worker is still sending when a user locks one of the rows it will write back into.
    sf.admin("PUT", "/faults", json!([{"operation": "upsert", "effect": {"type": "latency", "ms": 1500}}]));
    // A watcher records every state row 1's entry passes through: between attempts it is NEW only for a random
    // backoff that can be a few microseconds, too short to be sure of seeing it.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let mut w = cluster.admin();
        let watching = watching.clone();
        std::thread::spawn(move || {
            let mut seen: Vec<(String, Option<String>, i32)> = Vec::new();
            while watching.load(Ordering::Relaxed) {
                if let Some(e) = entries(&mut w).into_iter().find(|e| e.0 == 1) {
                    let e = (e.1, e.2, e.3);
                    if seen.last() != Some(&e) {
                        seen.push(e);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) SELECT 'n' || g, 'N-' || g FROM generate_series(1, 21) g")
        .expect("insert");
    let started = Instant::now();
    let mut holder = cluster.admin();
    let mut hold = holder.transaction().expect("begin");
    hold.batch_execute("SELECT * FROM public.contact WHERE id = 1 FOR UPDATE").expect("lock row 1");
    // The other rows' outcomes are recorded while row 1 is still locked, well before the user lets go.
    wait_for(WAIT, "the others written back while row 1 is locked", || {
        (written_back(&mut c, &(2..=21).map(|i| i.to_string()).collect::<Vec<_>>().join(",")) == 20).then_some(())
    });
    assert!(started.elapsed() < Duration::from_secs(6), "the others waited {:?} for row 1's lock", started.elapsed());
    assert_eq!(written_back(&mut c, "1"), 0, "row 1 is still locked");
    std::thread::sleep(Duration::from_secs(7).saturating_sub(started.elapsed()));
    hold.commit().expect("release");
    let deadline = Instant::now() + Duration::from_secs(20);
    while written_back(&mut c, "1") == 0 {
        if Instant::now() > deadline {
            let history: Vec<String> = c
                .query(
                    "SELECT format('%s %s %s attempts=%s next=%s msg=%s', id, action, state, attempts, next_attempt_at - now(), sf_message)
                       FROM salesforce._trigger_log WHERE record_id = 1 ORDER BY id",
                    &[],
                )
                .expect("history")
                .iter()
                .map(|r| r.get(0))
                .collect();
            panic!("row 1 not delivered 20 s after the lock was released; its log: {history:#?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for(WAIT, "row 1's entry succeeded", || {
        entries(&mut c).into_iter().find(|e| e.0 == 1 && e.1 == "SUCCESS").map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(50));
    watching.store(false, Ordering::Relaxed);
    let seen = watcher.join().expect("watcher");
    // While it was locked, row 1 was retried with the lock timeout as the reason (kept while it is in flight again,
    // PENDING), and never failed.
    assert!(
        seen.iter().any(|(state, message, attempts)| (state == "NEW" || state == "PENDING")
            && *attempts >= 1
            && message.as_deref().is_some_and(|m| m.starts_with("55P03: "))),
        "row 1 never waited for another attempt because of the lock: {seen:?}"
    );
    assert!(seen.iter().all(|(state, ..)| state != "FAILED"), "row 1 failed: {seen:?}");
    assert_eq!(seen.last().map(|s| s.0.as_str()), Some("SUCCESS"), "{seen:?}");
    assert_eq!(sf.live("Contact").len(), 21, "the re-sent upsert created nothing new");
}

#[test]
fn a_request_that_always_times_out_fails_its_record_alone_after_max_attempts() {
    let sf = Salesforce::start();
    let mut settings = sf.settings();
    settings.extend(["pgforce.request_timeout = '1s'".to_string(), "pgforce.max_attempts = 3".to_string()]);
    let cluster = Cluster::start_with(true, &settings);
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE EXTENSION pgforce CASCADE;
         CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, external_id__c text);
         SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c');",
    )
    .expect("setup");
    // A slow Salesforce trigger on one record: every request that carries it takes longer than request_timeout.
    sf.admin(
        "PUT",
        "/faults",
        json!([{"field": "LastName", "equals": "Slow", "effect": {"type": "latency", "ms": 3000}}]),
    );
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Slow', 'S-1')").expect("slow");
    c.batch_execute(
        "INSERT INTO public.contact (lastname, external_id__c) SELECT 'n' || g, 'N-' || g FROM generate_series(1, 20) g",
    )
    .expect("others");
    wait_for(WAIT, "the rows committed after it delivered", || {
        (written_back(&mut c, &(2..=21).map(|i| i.to_string()).collect::<Vec<_>>().join(",")) == 20).then_some(())
    });
    let slow = wait_for(Duration::from_secs(30), "the slow record failed", || {
        entries(&mut c).into_iter().find(|e| e.0 == 1 && e.1 == "FAILED")
    });
    let message = slow.2.unwrap_or_default();
    assert!(
        message.starts_with("REQUEST_TIMEOUT: no answer within 1 s")
            && message.ends_with("(gave up after 3 attempts, pgforce.max_attempts)"),
        "{message}"
    );
    assert_eq!(slow.3, 3, "three attempts");
    let row = c.query_one("SELECT _hc_lastop, _hc_err FROM public.contact WHERE id = 1", &[]).expect("row");
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("FAILED"));
    assert_eq!(row.get::<_, Option<String>>(1), Some(message));
    let state: String = c.query_one("SELECT connection_state FROM salesforce.sync_status", &[]).expect("status").get(0);
    assert_ne!(state, "PAUSED", "a failing request is no outage");
}

fn connection_state(c: &mut postgres::Client) -> (String, String) {
    let row = c
        .query_one("SELECT connection_state, coalesce(connection_message, '') FROM salesforce.sync_status", &[])
        .expect("status");
    (row.get(0), row.get(1))
}

#[test]
fn a_restored_copy_does_not_send_the_log_again_until_resumed() {
    let sf = Salesforce::start();
    let original = setup(&sf);
    let mut c = original.admin();
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Before', 'B-1')").expect("one");
    wait_for(WAIT, "the first row delivered", || (written_back(&mut c, "1") == 1).then_some(()));
    drop(c);
    // A file-level copy of the data directory, started elsewhere (here: another port and directory), as a restored
    // backup or a cloned server would be; the original goes on.
    let copy = original.copy();
    let mut c = copy.admin();
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Copy', 'C-1')").expect("copy row");
    let (state, message) = wait_for(WAIT, "the copy paused", || {
        let s = connection_state(&mut c);
        (s.0 == "PAUSED").then_some(s)
    });
    assert!(message.starts_with("delivery paused: this log was last delivered by another server"), "{message}");
    assert!(message.contains("SELECT salesforce.resume()"), "{message}");
    assert_eq!(state, "PAUSED");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sf.live("Contact").len(), 1, "the copy sent nothing");
    assert_eq!(written_back(&mut c, "2"), 0);
    // The original still delivers.
    let mut o = original.admin();
    o.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Original', 'O-1')").expect("row");
    wait_for(WAIT, "the original delivers", || (written_back(&mut o, "2") == 1).then_some(()));
    // Confirmed by an operator, the copy delivers (its own new row only: the rest was delivered before the copy).
    let said: String = c.query_one("SELECT salesforce.resume()", &[]).expect("resume").get(0);
    assert!(said.contains("(forgot: system "), "resume names the identity it replaces: {said}");
    wait_for(WAIT, "the copy delivers", || (written_back(&mut c, "2") == 1).then_some(()));
    let names: Vec<String> =
        sf.live("Contact").iter().filter_map(|r| r["LastName"].as_str().map(str::to_string)).collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn a_second_worker_waits_for_the_delivery_lock() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('First', 'F-1')").expect("one");
    wait_for(WAIT, "delivered", || (written_back(&mut c, "1") == 1).then_some(()));
    // Another session takes the delivery lock (as a second worker would) as soon as the worker lets go of it, before
    // the postmaster starts the worker again.
    let mut other = cluster.admin();
    other.batch_execute("SET statement_timeout = '10s'").expect("timeout");
    let pid = cluster.worker_pid().expect("worker");
    c.query_one("SELECT pg_terminate_backend($1)", &[&pid]).expect("terminate");
    other.batch_execute("SELECT pg_advisory_lock(x'70676663'::int, 1)").expect("lock");
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('Second', 'S-1')").expect("two");
    // The postmaster starts the worker again 5 s after it ended; a loaded machine takes longer.
    let (_, message) = wait_for(Duration::from_secs(45), "the worker waiting", || {
        let s = connection_state(&mut c);
        (s.0 == "PAUSED" && s.1.contains("delivery lock")).then_some(s)
    });
    let holder: i32 = other.query_one("SELECT pg_backend_pid()", &[]).expect("pid").get(0);
    assert!(message.contains(&format!("(pid {holder})")), "{message}");
    assert_eq!(written_back(&mut c, "2"), 0, "nothing delivered without the lock");
    drop(other);
    wait_for(WAIT, "delivered once the lock is free", || (written_back(&mut c, "2") == 1).then_some(()));
}

#[test]
fn wide_rows_go_in_requests_bounded_by_bytes_and_one_too_large_fails_alone() {
    const LIMIT: u64 = 20 * 1024;
    // Salesforce refuses bodies over the limit; the worker must never send one.
    let sf = Salesforce::start_with(fakeforce::Config { max_request_bytes: LIMIT as usize, ..Default::default() });
    let mut settings = sf.settings();
    settings.push(format!("pgforce.max_request_bytes = {LIMIT}"));
    let cluster = Cluster::start_with(true, &settings);
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE EXTENSION pgforce CASCADE;
         CREATE TABLE public.account (id serial PRIMARY KEY, name text, description text);
         SELECT salesforce.map_table('public.account', 'Account');
         -- 40 rows of 3 kB, then one of 25 kB (Salesforce would take it: Description holds 32,000), then 5 more.
         INSERT INTO public.account (name, description)
         SELECT 'a' || g, (SELECT string_agg(md5(g::text || '-' || i::text), '') FROM generate_series(1, 94) i)
           FROM generate_series(1, 40) g;
         INSERT INTO public.account (name, description)
         SELECT 'wide', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 780) i);
         INSERT INTO public.account (name, description) SELECT 'b' || g, 'short' FROM generate_series(1, 5) g;",
    )
    .expect("setup");
    wait_for(WAIT, "every other row written back", || {
        let done: i64 = c
            .query_one("SELECT count(*) FROM public.account WHERE name <> 'wide' AND sfid IS NOT NULL", &[])
            .expect("rows")
            .get(0);
        (done == 45).then_some(())
    });
    let wide =
        wait_for(WAIT, "the wide row failed", || entries(&mut c).into_iter().find(|e| e.0 == 41 && e.1 == "FAILED"));
    let message = wide.2.unwrap_or_default();
    assert!(
        message.starts_with("NOT_SENT: the record is ") && message.contains("pgforce.max_request_bytes = 20480"),
        "{message}"
    );
    assert_eq!(sf.live("Account").len(), 45, "every other row is in Salesforce, once");
    let counters = sf.counters();
    assert_eq!(counters["by_status"].get("413"), None, "no request was refused for its size: {counters}");
    let largest = counters["largest_request_bytes"].as_u64().unwrap_or_default();
    assert!(largest > LIMIT / 2 && largest <= LIMIT, "largest request {largest} bytes");
}
