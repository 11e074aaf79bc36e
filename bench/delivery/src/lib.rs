//! What the benchmark drivers share.

use pgforce_integration::Cluster;

/// The sync worker's private memory (`RssAnon`, KiB): what it allocates itself, without the shared buffers it
/// touches.
pub fn worker_rss_kib(cluster: &Cluster) -> u64 {
    let Some(pid) = cluster.worker_pid() else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The total size (table, indexes, TOAST) of a relation, in MiB.
pub fn relation_mib(c: &mut postgres::Client, relation: &str) -> f64 {
    let bytes: i64 =
        c.query_one("SELECT pg_total_relation_size($1::text::regclass)", &[&relation]).expect("relation size").get(0);
    bytes as f64 / (1024.0 * 1024.0)
}
