//! The worker costs what it does (issue 28): commits it may not send (a paused or read-only mapping's) do not make
//! it run cycles, however many there are. Counted (sync_status.worker_cycles), never timed.

use std::time::Duration;

use pgforce_integration::{wait_for, Cluster, Salesforce};

fn cycles(c: &mut postgres::Client) -> i64 {
    c.query_one("SELECT salesforce._worker_cycles()", &[]).expect("worker_cycles").get(0)
}

#[test]
fn commits_nothing_may_send_do_not_wake_the_worker() {
    let sf = Salesforce::start();
    let cluster = Cluster::start_with(true, &sf.settings());
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE EXTENSION pgforce CASCADE;
         CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, external_id__c text);
         CREATE TABLE public.account (id serial PRIMARY KEY, name text);
         SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c', paused => true);
         SELECT salesforce.map_table('public.account', 'Account', mode => 'read_only');",
    )
    .expect("a paused mapping and a read-only one");
    // Let the worker settle into its idle wait (a poll every pgforce.poll_interval, 10 s).
    std::thread::sleep(Duration::from_secs(2));
    let before = cycles(&mut c);
    for i in 0..300 {
        c.batch_execute(&format!(
            "INSERT INTO public.contact (lastname, external_id__c) VALUES ('P{i}', 'P-{i}');
             INSERT INTO public.account (name) VALUES ('R{i}');"
        ))
        .expect("commit");
    }
    let after = cycles(&mut c);
    assert!(
        after - before <= 3,
        "600 commits of a paused and a read-only mapping ran {} worker cycles (the idle poll allows a few)",
        after - before
    );
    // A resume wakes it, and the backlog goes.
    c.batch_execute("SELECT salesforce.resume('public.contact')").expect("resume");
    wait_for(Duration::from_secs(30), "the paused backlog delivered", || {
        (sf.live("Contact").len() == 300).then_some(())
    });
    assert!(cycles(&mut c) > after, "resume woke the worker");
    assert!(sf.live("Account").is_empty(), "a read-only mapping's changes are never sent");
}

/// During an outage the worker sleeps through its backoff: a stream of commits does not make it run a cycle per
/// commit (each would only find the backoff not over), and retry_now() still wakes it at once.
#[test]
fn an_outage_under_a_stream_of_commits_costs_no_cycles() {
    let sf = Salesforce::start();
    let cluster = Cluster::start_with(true, &sf.settings());
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE EXTENSION pgforce CASCADE;
         CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, external_id__c text);
         SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c');
         INSERT INTO public.contact (lastname, external_id__c) VALUES ('First', 'O-0');",
    )
    .expect("a mapping");
    wait_for(Duration::from_secs(20), "the first row delivered", || (sf.live("Contact").len() == 1).then_some(()));
    sf.admin("POST", "/outage", serde_json::json!({"mode": "refuse", "seconds": 60}));
    c.batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('During', 'O-1')").expect("row");
    wait_for(Duration::from_secs(20), "the outage seen", || {
        let state: String = c.query_one("SELECT connection_state FROM salesforce.sync_status", &[]).ok()?.get(0);
        (state == "OUTAGE").then_some(())
    });
    let before = cycles(&mut c);
    for i in 2..302 {
        c.batch_execute(&format!("INSERT INTO public.contact (lastname, external_id__c) VALUES ('D{i}', 'O-{i}')"))
            .expect("commit");
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = cycles(&mut c);
    // The backoff's own attempts (250 ms, doubling, with jitter) allow a few in the time the commits take.
    assert!(after - before <= 15, "300 commits during an outage ran {} worker cycles", after - before);
    // The outage over, an operator's retry_now() wakes the worker at once, and everything goes.
    sf.admin("DELETE", "/outage", serde_json::json!({}));
    c.batch_execute("SELECT salesforce.retry_now()").expect("retry now");
    wait_for(Duration::from_secs(30), "the backlog delivered", || (sf.live("Contact").len() == 302).then_some(()));
}

/// The worker serves one database: commits in another (pgforce installed there too, but no worker serving it) do
/// not wake it. (They did: every commit of a mapped table in any database set its latch and cost it a cycle.)
#[test]
fn commits_in_a_database_the_worker_does_not_serve_do_not_wake_it() {
    let sf = Salesforce::start();
    let cluster = Cluster::start_with(true, &sf.settings());
    let mut admin = cluster.admin();
    admin.batch_execute("CREATE EXTENSION pgforce CASCADE").expect("the worker's database");
    admin.batch_execute("CREATE DATABASE other").expect("another");
    let mut other = cluster.connect("postgres", "other");
    other
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, external_id__c text);
             SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c');",
        )
        .expect("a mapping in a database no worker serves");
    std::thread::sleep(Duration::from_secs(2));
    let before = cycles(&mut admin);
    for i in 0..300 {
        other
            .batch_execute(&format!("INSERT INTO public.contact (lastname, external_id__c) VALUES ('X{i}', 'X-{i}')"))
            .expect("commit");
    }
    let after = cycles(&mut admin);
    assert!(after - before <= 3, "300 commits in another database ran {} worker cycles", after - before);
    assert!(sf.live("Contact").is_empty(), "nothing of the other database is sent");
}
