//! Model-based test of the read path: a seeded random workload in Salesforce (creates, changes by another user —
//! some committed later than their stamp —, deletes, undeletes, merges, purges), with queries failing now and then
//! and the worker killed (SIGKILL) or the server stopped the hard way in between. When the workload is over, every
//! live record of the object equals its row field by field, and no row exists without a live record.
//!
//! Short by default (one seed, 120 operations). The long run: `PGFORCE_READ_MODEL_SEEDS=10
//! PGFORCE_READ_MODEL_OPS=600`; one seed again: `PGFORCE_READ_MODEL_SEED=<seed>`.

use std::collections::BTreeMap;
use std::time::Duration;

use pgforce_integration::{Cluster, Salesforce};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn every_record_arrives_value_for_value_through_deletes_merges_and_crashes() {
    let ops = env_number("PGFORCE_READ_MODEL_OPS").unwrap_or(120) as usize;
    let seeds: Vec<u64> = match env_number("PGFORCE_READ_MODEL_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_number("PGFORCE_READ_MODEL_SEEDS").unwrap_or(1)).collect(),
    };
    for seed in seeds {
        if let Err(panic) = std::panic::catch_unwind(|| run(seed, ops)) {
            eprintln!("read model test failed: seed {seed}; replay with PGFORCE_READ_MODEL_SEED={seed} PGFORCE_READ_MODEL_OPS={ops}");
            std::panic::resume_unwind(panic);
        }
    }
}

/// A random invoice's fields (every type the table has).
fn fields(rng: &mut StdRng) -> Value {
    let mut f = serde_json::Map::new();
    if rng.random_bool(0.9) {
        f.insert("Name".into(), json!(format!("INV-{}", rng.random_range(0..100_000))));
    }
    if rng.random_bool(0.8) {
        let cents: i64 = rng.random_range(-10_000_000..10_000_000);
        f.insert("Amount__c".into(), json!(cents as f64 / 100.0));
    }
    if rng.random_bool(0.7) {
        f.insert(
            "Due_Date__c".into(),
            json!(format!(
                "20{:02}-{:02}-{:02}",
                rng.random_range(0..40),
                rng.random_range(1..13),
                rng.random_range(1..29)
            )),
        );
    }
    if rng.random_bool(0.7) {
        f.insert("Paid__c".into(), json!(rng.random_bool(0.5)));
    }
    if rng.random_bool(0.7) {
        f.insert(
            "Issued_At__c".into(),
            json!(format!(
                "2026-{:02}-{:02}T{:02}:{:02}:{:02}.000+0000",
                rng.random_range(1..13),
                rng.random_range(1..29),
                rng.random_range(0..24),
                rng.random_range(0..60),
                rng.random_range(0..60)
            )),
        );
    }
    Value::Object(f)
}

fn run(seed: u64, ops: usize) {
    let sf = Salesforce::start_with(fakeforce::Config {
        replication_unit_ms: 1000,
        latency_ms: 5,
        latency_jitter_ms: 20,
        seed,
        ..fakeforce::Config::default()
    });
    // Queries fail now and then: Salesforce busy (503) or the connection lost.
    sf.admin(
        "PUT",
        "/faults",
        json!([{"operation": "query", "rate": 0.05, "effect": {"type": "http", "status": 503,
                 "error_code": "SERVER_UNAVAILABLE", "message": "busy"}},
               {"operation": "query", "rate": 0.03, "effect": {"type": "drop_before_commit"}}]),
    );
    let mut settings = sf.settings();
    settings.extend(
        ["pgforce.read_interval = '1s'", "pgforce.delete_sweep_interval = '2s'", "pgforce.compare_interval = '20s'"]
            .map(String::from),
    );
    let cluster = Cluster::start_with(true, &settings);
    cluster
        .admin()
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE salesforce.invoice__c (id serial PRIMARY KEY, name varchar(80), amount__c numeric(18, 6),
                                                 due_date__c date, paid__c boolean, issued_at__c timestamptz);
             SELECT salesforce.map_table('salesforce.invoice__c', 'Invoice__c', mode => 'read_only');",
        )
        .expect("mapping");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut live, mut binned): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for n in 0..ops {
        match rng.random_range(0..100) {
            0..=34 => live.push(sf.create("Invoice__c", fields(&mut rng))),
            35..=64 if !live.is_empty() => {
                let id = &live[rng.random_range(0..live.len())];
                sf.admin("PATCH", &format!("/records/Invoice__c/{id}"), json!({"fields": fields(&mut rng)}));
            }
            65..=76 if !live.is_empty() => {
                let id = live.swap_remove(rng.random_range(0..live.len()));
                sf.delete("Invoice__c", &id);
                binned.push(id);
            }
            77..=84 if !binned.is_empty() => {
                let id = binned.swap_remove(rng.random_range(0..binned.len()));
                sf.admin("POST", &format!("/records/Invoice__c/{id}/undelete"), Value::Null);
                live.push(id);
            }
            85..=90 if live.len() >= 2 => {
                let loser = live.swap_remove(rng.random_range(0..live.len()));
                let master = &live[rng.random_range(0..live.len())];
                sf.admin("POST", "/merge", json!({"master": master, "losers": [loser]}));
            }
            91..=95 => {
                // Purged: from the recycle bin, or at once (a record without a bin).
                let from_bin = !binned.is_empty() && rng.random_bool(0.5);
                let id = if from_bin {
                    Some(binned.swap_remove(rng.random_range(0..binned.len())))
                } else if !live.is_empty() {
                    Some(live.swap_remove(rng.random_range(0..live.len())))
                } else {
                    None
                };
                if let Some(id) = id {
                    sf.admin("DELETE", &format!("/records/Invoice__c/{id}"), Value::Null);
                }
            }
            96..=97 => {
                if let Some(pid) = cluster.worker_pid() {
                    let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                }
            }
            98..=99 if n > ops / 3 => cluster.crash_and_restart(),
            _ => {}
        }
        if rng.random_bool(0.1) {
            std::thread::sleep(Duration::from_millis(rng.random_range(100..1200)));
        }
    }
    // Converged: every live record is a row with its values, and no other row.
    let mut c = cluster.admin();
    c.batch_execute("SET TIME ZONE 'UTC'").expect("UTC");
    for round in 0.. {
        let (rows, records) = (rows(&mut c), records(&sf));
        if rows == records {
            assert!(records.len() >= 5, "seed {seed}: a workload that leaves {} records tests little", records.len());
            eprintln!("seed {seed}: {} records converged after {round} rounds", records.len());
            break;
        }
        assert!(round < 900, "seed {seed}: not converged after 90 s: {}", difference(&rows, &records));
        std::thread::sleep(Duration::from_millis(100));
    }
}

type Values = BTreeMap<String, [Option<String>; 5]>;

/// The rows by sfid, each value normalised as text.
fn rows(c: &mut postgres::Client) -> Values {
    let Ok(rows) = c.query(
        "SELECT sfid, name, amount__c::float8::text, due_date__c::text, paid__c::text,
                to_char(issued_at__c AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')
           FROM salesforce.invoice__c",
        &[],
    ) else {
        return Values::new();
    };
    rows.iter()
        .map(|r| {
            (r.get::<_, Option<String>>(0).unwrap_or_default(), [r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)])
        })
        .collect()
}

/// Salesforce's live records, normalised as `rows` does.
fn records(sf: &Salesforce) -> Values {
    sf.live("Invoice__c")
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().map(str::to_string);
            let amount = r["Amount__c"].as_f64().map(|a| format!("{a}"));
            let paid = r["Paid__c"].as_bool().map(|b| b.to_string());
            let issued = text("Issued_At__c").map(|t| t.chars().take(19).collect());
            (text("Id").unwrap_or_default(), [text("Name"), amount, text("Due_Date__c"), paid, issued])
        })
        .collect()
}

fn difference(rows: &Values, records: &Values) -> String {
    let missing: Vec<&String> = records.keys().filter(|k| !rows.contains_key(*k)).collect();
    let extra: Vec<&String> = rows.keys().filter(|k| !records.contains_key(*k)).collect();
    let differ: Vec<(&String, &[Option<String>; 5], &[Option<String>; 5])> =
        records.iter().filter_map(|(k, v)| rows.get(k).filter(|r| *r != v).map(|r| (k, r, v))).take(3).collect();
    format!(
        "records without a row {missing:?}; rows without a record {extra:?}; rows that differ (row, record) {differ:?}"
    )
}
