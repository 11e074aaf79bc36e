//! Backlog benchmark: a large captured backlog drained against fakeforce at 0 ms and 100 ms per call, narrow rows
//! and wide ones. Prints the drain rate of each tenth (the last should be within 20% of the first: the log's
//! growth must not slow the claim), the log and archive sizes before and after, and the worker's peak private
//! memory. Run through `bench/backlog.sh`.
//!
//! `backlog [rows] [wide rows]` (defaults 1,000,000 narrow rows and 100,000 rows of 10 kB).

use std::time::{Duration, Instant};

use pgforce_bench_delivery::{relation_mib, worker_rss_kib};
use pgforce_integration::{Cluster, Salesforce};
use serde_json::json;

const LOG: &str = "salesforce._trigger_log";
const ARCHIVE: &str = "salesforce._trigger_log_archive";

fn open_entries(c: &mut postgres::Client) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {LOG} WHERE state IN ('NEW', 'PENDING')"), &[]).expect("count").get(0)
}

fn run(rows: i64, row_bytes: usize, call_ms: u64) {
    let sf = Salesforce::start();
    if call_ms > 0 {
        sf.admin("PUT", "/faults", json!([{"operation": "create", "effect": {"type": "latency", "ms": call_ms}}]));
    }
    let mut settings = sf.settings();
    settings.extend(
        [
            "pgforce.enabled = off",
            "pgforce.archive_after = 0",
            "pgforce.request_timeout = '60s'",
            "shared_buffers = '512MB'",
            "max_wal_size = '8GB'",
            "checkpoint_timeout = '30min'",
        ]
        .map(String::from),
    );
    // Extra server settings for profiling, `;`-separated (e.g. auto_explain with log_nested_statements).
    if let Ok(extra) = std::env::var("PGFORCE_BENCH_SETTINGS") {
        settings.extend(extra.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from));
    }
    let cluster = Cluster::start_with(true, &settings);
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE EXTENSION pgforce CASCADE;
         CREATE TABLE public.account (id bigserial PRIMARY KEY, name text, description text);
         SELECT salesforce.map_table('public.account', 'Account');",
    )
    .expect("schema");
    // The description makes each row's log text about row_bytes long.
    let description =
        if row_bytes > 64 { format!("repeat(md5(g::text), {})", row_bytes / 32) } else { "'Row ' || g".to_string() };
    let capture = Instant::now();
    for lo in (1..=rows).step_by(100_000) {
        let hi = (lo + 99_999).min(rows);
        c.batch_execute(&format!(
            "INSERT INTO public.account (name, description)
             SELECT 'Account ' || g, {description} FROM generate_series({lo}, {hi}) g"
        ))
        .expect("backlog");
    }
    let capture_s = capture.elapsed().as_secs_f64();
    c.batch_execute(&format!("VACUUM ANALYZE {LOG}")).expect("vacuum");
    let (log_before, archive_before) = (relation_mib(&mut c, LOG), relation_mib(&mut c, ARCHIVE));
    let rss_idle = worker_rss_kib(&cluster);

    c.batch_execute("ALTER SYSTEM SET pgforce.enabled = on").expect("enable");
    let start = Instant::now();
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    let delivered = || sf.ff.org().lock().counters.records_succeeded as i64;
    let mut tenths: Vec<Duration> = Vec::with_capacity(10);
    let mut rss_peak = 0;
    while tenths.len() < 10 {
        let done = delivered();
        while tenths.len() < 10 && done >= rows * (tenths.len() as i64 + 1) / 10 {
            tenths.push(start.elapsed());
        }
        rss_peak = rss_peak.max(worker_rss_kib(&cluster));
        assert!(start.elapsed() < Duration::from_secs(1800), "the drain took more than 30 minutes ({done} of {rows})");
        std::thread::sleep(Duration::from_millis(20));
    }
    let drain_s = start.elapsed().as_secs_f64();
    while open_entries(&mut c) > 0 {
        assert!(start.elapsed() < Duration::from_secs(1800), "entries still open");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (log_after, archive_after) = (relation_mib(&mut c, LOG), relation_mib(&mut c, ARCHIVE));
    let archived: i64 = c.query_one(&format!("SELECT count(*) FROM {ARCHIVE}"), &[]).expect("archived").get(0);

    let per_tenth: Vec<f64> = tenths
        .iter()
        .scan(Duration::ZERO, |prev, t| {
            let secs = (*t - *prev).as_secs_f64().max(1e-3);
            *prev = *t;
            Some((rows / 10) as f64 / secs)
        })
        .collect();
    let shown: Vec<String> = per_tenth.iter().map(|r| format!("{r:.0}")).collect();
    let (first, last) = (per_tenth[0], per_tenth[9]);
    println!(
        "| {rows} rows of ~{row_bytes} B, {call_ms} ms per call | captured in {capture_s:.0} s · drained in {drain_s:.0} s \
         ({:.0} records/s) | per tenth: {} records/s (last/first {:.2}) | log {log_before:.0} → {log_after:.0} MiB · \
         archive {archive_before:.0} → {archive_after:.0} MiB ({archived} rows) | worker RssAnon {} MiB idle, {} MiB peak |",
        rows as f64 / drain_s,
        shown.join(" · "),
        last / first,
        rss_idle / 1024,
        rss_peak / 1024,
    );
}

fn main() {
    let rows: i64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let wide_rows: i64 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    println!("| backlog | capture and drain | rate per tenth of the drain | log and archive size | worker memory |");
    println!("|---|---|---|---|---|");
    if rows > 0 {
        run(rows, 40, 0);
        run(rows, 40, 100);
    }
    if wide_rows > 0 {
        run(wide_rows, 10 * 1024, 0);
    }
}
