//! Delivery benchmark: commit-to-request latency on an idle system, and the drain rate of a backlog with fakeforce
//! answering at 0 ms and at 100 ms per call; the worker's memory is sampled while it drains.
//! Run through `bench/delivery.sh` (release builds of pgforce and fakeforce).

use std::time::{Duration, Instant};

use pgforce_bench_delivery::worker_rss_kib;
use pgforce_integration::{wait_for, Cluster, Salesforce};
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
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
    let cluster = setup(&sf, &["pgforce.enabled = off"]);
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
    loop {
        let open: i64 = c
            .query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state IN ('NEW', 'PENDING')", &[])
            .expect("count")
            .get(0);
        rss_max = rss_max.max(worker_rss_kib(&cluster));
        if open == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "drain took too long");
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = start.elapsed().as_secs_f64();
    let delivered = {
        let org = sf.ff.org();
        let st = org.lock();
        st.store.model.object("Contact").map_or(0, |o| st.store.live(o.index).count()) as i64
    };
    assert_eq!(delivered, rows, "every row delivered");
    (rows as f64 / secs, rss_idle, rss_max)
}

fn main() {
    let rows: i64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
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
            "| drain {rows} queued changes, fakeforce at {call_ms} ms per call | {rate:.0} records/s · worker private memory (RssAnon) {} MiB idle, {} MiB peak |",
            idle / 1024,
            peak / 1024
        );
    }
}
