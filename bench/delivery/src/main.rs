//! Delivery benchmark: commit-to-request latency on an idle system, and the drain rate of a backlog with fakeforce
//! answering at 0 ms and at 100 ms per call; the worker's memory is sampled while it drains.
//! Run through `bench/delivery.sh` (release builds of pgforce and fakeforce).

use std::time::{Duration, Instant};

use pgforce_bench_delivery::worker_rss_kib;
use pgforce_integration::{open_entries, wait_for, Cluster, Salesforce};
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Seconds from `start` until the queue is empty (at most 15 minutes), calling `sample` at each look.
fn until_drained(c: &mut postgres::Client, start: Instant, mut sample: impl FnMut()) -> f64 {
    loop {
        let open = open_entries(c);
        sample();
        if open == 0 {
            return start.elapsed().as_secs_f64();
        }
        assert!(start.elapsed() < Duration::from_secs(900), "the queue did not drain in 15 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn setup(sf: &Salesforce, extra: &[&str]) -> Cluster {
    let mut settings = sf.settings();
    settings.extend(extra.iter().map(|s| s.to_string()));
    settings.push("shared_buffers = '256MB'".into());
    let cluster = Cluster::start_with(true, &settings);
    cluster
        .admin()
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text, email text, title text, external_id__c text);
             SELECT salesforce.map_table('salesforce.contact', 'Contact', upsert_field => 'external_id__c');",
        )
        .expect("schema");
    cluster
}

fn latency(samples: usize) -> (Duration, Duration, Duration) {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    let last = || sf.ff.org().lock().counters.last_write_at;
    let mut seen = Vec::with_capacity(samples);
    for i in 0..samples + 10 {
        std::thread::sleep(Duration::from_millis(30)); // idle between commits
        let before = last();
        let t0 = Instant::now();
        c.execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ($1, $1)", &[&format!("L-{i}")])
            .expect("insert");
        let arrived = wait_for(Duration::from_secs(10), "the request", || last().filter(|t| Some(*t) != before));
        if i >= 10 {
            seen.push(arrived.saturating_duration_since(t0)); // the first ten warm up the connection and token
        }
    }
    seen.sort();
    (percentile(&seen, 0.5), percentile(&seen, 0.99), *seen.last().unwrap_or(&Duration::ZERO))
}

fn drain(rows: i64, call_ms: u64) -> (f64, u64, u64) {
    let sf = Salesforce::start();
    if call_ms > 0 {
        sf.admin("PUT", "/faults", json!([{"operation": "upsert", "effect": {"type": "latency", "ms": call_ms}}]));
    }
    // Through sObject Collections: the Bulk API is measured on its own below.
    let cluster = setup(&sf, &["pgforce.enabled = off", "pgforce.bulk_threshold = 0"]);
    let mut c = cluster.admin();
    c.batch_execute(&format!(
        "INSERT INTO salesforce.contact (lastname, email, title, external_id__c)
              SELECT 'Row ' || g, 'r' || g || '@example.com', 'Title ' || g, 'D-' || g FROM generate_series(1, {rows}) g;"
    ))
    .expect("backlog");
    c.batch_execute("VACUUM ANALYZE salesforce._trigger_log").expect("vacuum");
    let rss_idle = worker_rss_kib(&cluster);
    c.batch_execute("ALTER SYSTEM SET pgforce.enabled = on").expect("enable");
    let start = Instant::now();
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    let mut rss_max = 0;
    let secs = until_drained(&mut c, start, || rss_max = rss_max.max(worker_rss_kib(&cluster)));
    let delivered = {
        let org = sf.ff.org();
        let st = org.lock();
        st.store.model.object("Contact").map_or(0, |o| st.store.live(o.index).count()) as i64
    };
    assert_eq!(delivered, rows, "every row delivered");
    (rows as f64 / secs, rss_idle, rss_max)
}

/// Wall time and write calls to drain `rows` queued upserts through the Bulk API 2.0 (`bulk`) or through sObject
/// Collections (`pgforce.bulk_threshold = 0`), fakeforce answering every call in `call_ms`.
fn backlog(rows: i64, call_ms: u64, bulk: bool) -> (f64, u64) {
    let sf = Salesforce::start();
    if call_ms > 0 {
        sf.admin(
            "PUT",
            "/faults",
            json!([{"operation": "upsert", "effect": {"type": "latency", "ms": call_ms}},
                   {"operation": "bulk", "effect": {"type": "latency", "ms": call_ms}}]),
        );
    }
    let cluster = setup(
        &sf,
        if bulk { &["pgforce.enabled = off"] } else { &["pgforce.enabled = off", "pgforce.bulk_threshold = 0"] },
    );
    let mut c = cluster.admin();
    c.batch_execute(&format!(
        "INSERT INTO salesforce.contact (lastname, email, title, external_id__c)
              SELECT 'Row ' || g, 'r' || g || '@example.com', 'Title ' || g, 'D-' || g FROM generate_series(1, {rows}) g;"
    ))
    .expect("backlog");
    c.batch_execute("VACUUM ANALYZE salesforce._trigger_log").expect("vacuum");
    c.batch_execute("ALTER SYSTEM SET pgforce.enabled = on").expect("enable");
    let start = Instant::now();
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    let secs = until_drained(&mut c, start, || {});
    let org = sf.ff.org();
    let st = org.lock();
    assert_eq!(st.store.model.object("Contact").map_or(0, |o| st.store.live(o.index).count()) as i64, rows);
    (secs, ["upsert", "bulk"].iter().map(|k| st.counters.by_kind.get(*k).copied().unwrap_or(0)).sum())
}

/// Time to converge and write calls for `rows` accounts, loaded with the worker off and then drained: flat (no
/// relationship) or as a 10-level self-referencing hierarchy by foreign key (`parent_id`, rows in random order).
fn accounts(rows: i64, hierarchy: bool) -> (f64, u64) {
    let sf = Salesforce::start();
    let mut settings = sf.settings();
    settings.push("shared_buffers = '256MB'".into());
    settings.push("pgforce.enabled = off".into());
    let cluster = Cluster::start_with(true, &settings);
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE EXTENSION pgforce CASCADE;
         CREATE TABLE public.account (id integer PRIMARY KEY, name text,
             parent_id integer REFERENCES public.account (id) DEFERRABLE INITIALLY DEFERRED);
         SELECT salesforce.map_table('public.account', 'Account', relationships => '{\"parent_id\": \"ParentId\"}');",
    )
    .expect("schema");
    // Level l holds ids (l-1)·n+1 … l·n; each row's parent is one of the level above. Rows are inserted in random
    // order (the foreign key is deferred), so children are often logged before their parents.
    let per_level = rows / 10;
    let parent = if hierarchy { format!("CASE WHEN g > {per_level} THEN g - {per_level} END") } else { "NULL".into() };
    c.batch_execute(&format!(
        "INSERT INTO public.account SELECT g, 'Account ' || g, {parent}
           FROM generate_series(1, {rows}) g ORDER BY pg_catalog.hashint4(g);"
    ))
    .expect("accounts");
    c.batch_execute("VACUUM ANALYZE salesforce._trigger_log").expect("vacuum");
    let calls = |sf: &Salesforce| {
        let org = sf.ff.org();
        let st = org.lock();
        ["create", "update", "upsert", "delete"]
            .iter()
            .map(|k| st.counters.by_kind.get(*k).copied().unwrap_or(0))
            .sum::<u64>()
    };
    c.batch_execute("ALTER SYSTEM SET pgforce.enabled = on").expect("enable");
    let start = Instant::now();
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    let secs = until_drained(&mut c, start, || {});
    let with_parent: i64 = c
        .query_one("SELECT count(*) FROM public.account WHERE parent_id IS NOT NULL AND sfid IS NOT NULL", &[])
        .expect("count")
        .get(0);
    assert_eq!(with_parent, if hierarchy { rows - per_level } else { 0 });
    (secs, calls(&sf))
}

fn main() {
    let rows: i64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    // PGFORCE_BENCH_ONLY=hierarchy runs the last measurement alone; PGFORCE_BENCH_ONLY=bulk the Bulk comparison.
    let only = std::env::var("PGFORCE_BENCH_ONLY").unwrap_or_default();
    if only == "bulk" {
        return bulk_vs_collections(rows);
    }
    if only != "hierarchy" {
        other_measurements(rows);
    }
    let accounts_n = (rows / 2).max(1000);
    let (flat_secs, flat_calls) = accounts(accounts_n, false);
    let (tree_secs, tree_calls) = accounts(accounts_n, true);
    println!(
        "| {accounts_n} accounts as a 10-level hierarchy by foreign key, random order, vs flat | {tree_secs:.1} s, {tree_calls} write calls vs {flat_secs:.1} s, {flat_calls} calls ({:.2}× the time, {:.2}× the calls) |",
        tree_secs / flat_secs,
        tree_calls as f64 / flat_calls.max(1) as f64
    );
}

fn other_measurements(rows: i64) {
    let (p50, p99, max) = latency(200);
    println!(
        "| commit → first byte of the Salesforce request (200 single-row commits, idle) | p50 {} · p99 {} · max {} |",
        ms(p50),
        ms(p99),
        ms(max)
    );
    for call_ms in [0, 100] {
        let (rate, idle, peak) = drain(rows, call_ms);
        println!(
            "| drain {rows} queued changes through collections, fakeforce at {call_ms} ms per call | {rate:.0} records/s · worker private memory (RssAnon) {} MiB idle, {} MiB peak |",
            idle / 1024,
            peak / 1024
        );
    }
    bulk_vs_collections(rows);
}

fn bulk_vs_collections(rows: i64) {
    for call_ms in [0, 100] {
        let n = rows * 2;
        let (bulk_secs, bulk_calls) = backlog(n, call_ms, true);
        let (coll_secs, coll_calls) = backlog(n, call_ms, false);
        println!(
            "| {n} queued upserts, fakeforce at {call_ms} ms per call: Bulk API 2.0 vs sObject Collections | {bulk_secs:.1} s, {bulk_calls} calls vs {coll_secs:.1} s, {coll_calls} calls ({:.0}× fewer calls, {:.2}× the time) |",
            coll_calls as f64 / bulk_calls.max(1) as f64,
            bulk_secs / coll_secs
        );
    }
}
