//! The worker's life: visible in pg_stat_activity, tolerant of a missing extension, restarted after SIGTERM and
//! crashes, never in the way of DROP EXTENSION or DROP DATABASE; and the crash test: SIGKILL and immediate
//! shutdowns at random moments while draining a large backlog lose nothing and duplicate nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgforce_integration::{wait_for, Cluster, Salesforce};
use rand::Rng;
use serde_json::json;

/// Creates the extension and a mapped `salesforce.contact` (upsert field `external_id__c`).
fn map_contact(c: &mut postgres::Client) {
    c.batch_execute(
        "CREATE EXTENSION pgforce CASCADE;
         CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text, external_id__c text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact', upsert_field => 'external_id__c');",
    )
    .expect("map salesforce.contact");
}

fn worker_row(cluster: &Cluster) -> Option<(i32, Option<String>)> {
    let mut c = cluster.config("postgres", "postgres").connect(postgres::NoTls).ok()?;
    let row = c
        .query_opt("SELECT pid, datname::text FROM pg_stat_activity WHERE backend_type = 'pgforce sync worker'", &[])
        .ok()??;
    Some((row.get(0), row.get(1)))
}

#[test]
fn worker_lifecycle() {
    let sf = Salesforce::start();
    let cluster = Cluster::start_with(true, &sf.settings());
    // Running before the extension exists, connected to pgforce.database.
    let (pid, db) = wait_for(Duration::from_secs(10), "the worker in pg_stat_activity", || worker_row(&cluster));
    assert_eq!(db.as_deref(), Some("postgres"));

    let mut c = cluster.admin();
    map_contact(&mut c);
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('One', 'W-1')").expect("insert");
    wait_for(Duration::from_secs(8), "delivery", || (sf.live("Contact").len() == 1).then_some(()));

    // DROP EXTENSION is never blocked, and a re-created extension is served again.
    c.batch_execute("SET statement_timeout = '10s'; DROP EXTENSION pgforce CASCADE; RESET statement_timeout;")
        .expect("drop extension");
    c.batch_execute(
        "CREATE EXTENSION pgforce;
         SELECT salesforce.map_table('salesforce.contact', 'Contact', upsert_field => 'external_id__c');
         INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Two', 'W-2');",
    )
    .expect("re-create");
    wait_for(Duration::from_secs(8), "delivery after re-creation", || (sf.live("Contact").len() == 2).then_some(()));
    assert_eq!(worker_row(&cluster).map(|w| w.0), Some(pid), "the same worker served both");

    // Idle, it sleeps: its own log updates must not wake it (a bug once made it spin).
    let cpu_ticks = |pid: i32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
    };
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    assert!(used < 20, "an idle worker used {used} CPU ticks in 2 s");

    // SIGTERM stops it promptly; the postmaster starts it again.
    c.query_one("SELECT pg_terminate_backend($1)", &[&pid]).expect("terminate");
    let (new_pid, _) =
        wait_for(Duration::from_secs(20), "a restarted worker", || worker_row(&cluster).filter(|w| w.0 != pid));
    assert_ne!(new_pid, pid);
    let log = cluster.server_log();
    assert!(!log.contains("PANIC") && !log.contains("pgforce: SYSTEM_ERROR"), "{log}");
}

#[test]
fn drop_database_is_not_blocked_by_the_worker() {
    let sf = Salesforce::start();
    let mut settings = sf.settings();
    settings.push("pgforce.database = 'app'".into());
    let cluster = Cluster::start_with(true, &settings);
    let mut c = cluster.admin();
    c.batch_execute("CREATE DATABASE app").expect("create database");
    wait_for(Duration::from_secs(20), "the worker connected to app", || {
        worker_row(&cluster).filter(|w| w.1.as_deref() == Some("app"))
    });
    let mut app = cluster.connect("postgres", "app");
    app.batch_execute("CREATE EXTENSION pgforce CASCADE").expect("extension");
    drop(app);
    c.batch_execute("DROP DATABASE app").expect("DROP DATABASE succeeds while the worker serves it");
}

#[test]
fn a_missing_database_is_waited_for_not_a_crash_loop() {
    let sf = Salesforce::start();
    let mut settings = sf.settings();
    settings.push("pgforce.database = 'later'".into());
    let cluster = Cluster::start_with(true, &settings);
    let failures = || cluster.server_log().matches("FATAL:  database \"later\" does not exist").count();
    // Restarted every 5 s, a worker that fails to connect would have failed twice by now.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(failures(), 1, "one failed start, then it waits");
    assert!(cluster.server_log().contains(
        "pgforce: database \"later\" (pgforce.database) does not exist: nothing is delivered until it is created"
    ));
    let (_, db) = worker_row(&cluster).expect("the worker waits, in pg_stat_activity");
    assert_eq!(db, None, "connected to no database while it waits");

    let mut c = cluster.admin();
    c.batch_execute("CREATE DATABASE later").expect("create database");
    wait_for(Duration::from_secs(20), "the worker connected to later", || {
        worker_row(&cluster).filter(|w| w.1.as_deref() == Some("later"))
    });
    let mut later = cluster.connect("postgres", "later");
    map_contact(&mut later);
    later
        .batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Later', 'L-1')")
        .expect("insert");
    wait_for(Duration::from_secs(10), "delivery", || (sf.live("Contact").len() == 1).then_some(()));
    drop(later);

    // Dropped again: it leaves, fails to connect once more, and waits again.
    c.batch_execute("DROP DATABASE later").expect("drop database");
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(failures(), 2, "one more failed start after the drop, then it waits");
}

#[test]
fn sigterm_during_a_send_stops_the_worker_at_once_and_the_send_is_checked_after_the_restart() {
    let sf = Salesforce::start();
    let mut settings = sf.settings();
    settings.push("pgforce.request_timeout = '9s'".into());
    let cluster = Cluster::start_with(true, &settings);
    let mut c = cluster.admin();
    c.batch_execute(
        "CREATE EXTENSION pgforce CASCADE;
         CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text, email text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact');",
    )
    .expect("map without an upsert field");
    // Salesforce takes 8 s to answer: the worker is still waiting when it is asked to stop.
    sf.admin("PUT", "/faults", json!([{"operation": "create", "times": 1, "effect": {"type": "latency", "ms": 8000}}]));
    c.batch_execute("INSERT INTO salesforce.contact (lastname) SELECT 'n' || g FROM generate_series(1, 5) g")
        .expect("insert");
    let (pid, _) = wait_for(Duration::from_secs(10), "the worker sending", || {
        let row = c
            .query_opt("SELECT pid, query FROM pg_stat_activity WHERE backend_type = 'pgforce sync worker'", &[])
            .ok()??;
        (row.get::<_, Option<String>>(1)?.starts_with("pgforce: sending")).then(|| (row.get::<_, i32>(0), ()))
    });
    let asked = Instant::now();
    c.query_one("SELECT pg_terminate_backend($1)", &[&pid]).expect("terminate");
    wait_for(Duration::from_secs(10), "the worker gone", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(4), "it stopped after {took:?}, not when the 8 s request ended");
    // Restarted, it finds the records the unanswered request created (after request_timeout), and creates none twice.
    wait_for(Duration::from_secs(60), "every row delivered", || {
        let n: i64 = c.query_one("SELECT count(*) FROM salesforce.contact WHERE sfid IS NOT NULL", &[]).ok()?.get(0);
        (n == 5).then_some(())
    });
    assert_eq!(sf.live("Contact").len(), 5, "no record created twice");
}

#[test]
fn crashes_mid_drain_lose_nothing_and_duplicate_nothing() {
    crashes_mid_drain(true);
}

/// Without an upsert field every re-sent insert would be a second record: inserts in doubt are looked for first.
#[test]
fn crashes_mid_drain_duplicate_nothing_without_an_upsert_field() {
    crashes_mid_drain(false);
}

/// Drains a backlog of 20,000 inserts (and 2,000 updates) while the worker is killed with SIGKILL and the server
/// stopped with `-m immediate` at random moments, then checks every row arrived exactly once with its latest values.
/// Each blow must land mid-drain with progress since the previous one, or the test proves nothing.
fn crashes_mid_drain(upsert: bool) {
    const ROWS: i64 = 20_000;
    let sf = Salesforce::start();
    // A slow org (100-150 ms per call, two calls in flight) keeps the drain going long enough for every blow to
    // land mid-drain, whatever the machine's speed.
    sf.admin(
        "PUT",
        "/faults",
        json!([
            {"operation": "upsert", "effect": {"type": "latency", "ms": 100, "jitter_ms": 50}},
            {"operation": "create", "effect": {"type": "latency", "ms": 100, "jitter_ms": 50}},
            {"operation": "update", "effect": {"type": "latency", "ms": 100, "jitter_ms": 50}}
        ]),
    );
    let mut settings = sf.settings();
    settings.extend([
        "pgforce.enabled = off".to_string(),
        "pgforce.batch_size = 1000".to_string(),
        "pgforce.max_concurrency = 2".to_string(),
        // The collections path: blows land between many small requests (bulk.rs crashes a Bulk job).
        "pgforce.bulk_threshold = 0".to_string(),
        "restart_after_crash = on".to_string(),
    ]);
    let cluster = Cluster::start_with(true, &settings);
    let mut c = cluster.admin();
    let map = if upsert {
        "SELECT salesforce.map_table('salesforce.contact', 'Contact', upsert_field => 'external_id__c')"
    } else {
        "SELECT salesforce.map_table('salesforce.contact', 'Contact')"
    };
    c.batch_execute(&format!(
        "CREATE EXTENSION pgforce CASCADE;
         CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text, email text, external_id__c text);
         {map};
         INSERT INTO salesforce.contact (lastname, email, external_id__c)
              SELECT 'Row ' || g, 'r' || g || '@example.com', 'X-' || g FROM generate_series(1, {ROWS}) g;
         UPDATE salesforce.contact SET lastname = lastname || ' (updated)' WHERE id % 10 = 0;"
    ))
    .expect("backlog");
    c.batch_execute("ALTER SYSTEM SET pgforce.enabled = on").expect("enable");
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    drop(c);

    let open_rows = || -> i64 {
        cluster
            .config("postgres", "postgres")
            .connect(postgres::NoTls)
            .ok()
            .and_then(|mut c| {
                c.query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state IN ('NEW', 'PENDING')", &[]).ok()
            })
            .map_or(0, |r| r.get(0))
    };
    let mut rng = rand::rng();
    let mut crashes = 0;
    let mut progressed = 0;
    let mut writes_before = 0;
    for round in 0..12 {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..900)));
        if open_rows() == 0 {
            break; // drained: blows from now on would not be mid-drain
        }
        let writes = sf.counters()["requests"].as_u64().unwrap_or(0);
        if writes > writes_before {
            progressed += 1;
        }
        writes_before = writes;
        if round % 4 == 3 {
            cluster.crash_and_restart();
            crashes += 1;
        } else if let Some(pid) = cluster.worker_pid() {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            crashes += 1;
        }
        // Let the postmaster finish crash recovery before the next blow.
        wait_for(Duration::from_secs(30), "the server back", || {
            cluster.config("postgres", "postgres").connect(postgres::NoTls).ok().map(|_| ())
        });
    }
    assert!(crashes >= 8, "at least eight blows landed mid-drain ({crashes})");
    assert!(progressed >= 8, "delivery progressed between at least eight blows ({progressed} of {crashes})");

    let mut c = cluster.connect("postgres", "postgres");
    wait_for(Duration::from_secs(240), "the backlog drained", || {
        let open: i64 = c
            .query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state IN ('NEW', 'PENDING')", &[])
            .ok()?
            .get(0);
        (open == 0).then_some(())
    });
    let failed: Vec<(String, i64)> = c
        .query(
            "SELECT left(sf_message, 200), count(*) FROM salesforce._trigger_log WHERE state = 'FAILED' GROUP BY 1",
            &[],
        )
        .expect("q")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if !failed.is_empty() {
        // What a failure needs to be understood: the failed rows' log entries and their records in Salesforce.
        let entries: Vec<String> = c
            .query(
                "SELECT format('log %s row %s %s attempts %s in doubt since %s updated %s: %s', l.id, l.record_id,
                               l.action, l.attempts, l.in_doubt_since, l.updated_at, left(l.sf_message, 120))
                   FROM salesforce._trigger_log l
                  WHERE l.record_id IN (SELECT record_id FROM salesforce._trigger_log WHERE state = 'FAILED' LIMIT 3)
                  UNION ALL
                 SELECT format('archived log %s row %s %s %s attempts %s in doubt since %s: %s', a.id, a.record_id,
                               a.action, a.state, a.attempts, a.in_doubt_since, left(a.sf_message, 120))
                   FROM salesforce._trigger_log_archive a
                  WHERE a.record_id IN (SELECT record_id FROM salesforce._trigger_log WHERE state = 'FAILED' LIMIT 3)",
                &[],
            )
            .expect("q")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let rows: Vec<i32> = c
            .query("SELECT DISTINCT record_id FROM salesforce._trigger_log WHERE state = 'FAILED' LIMIT 3", &[])
            .expect("q")
            .iter()
            .map(|r| r.get::<_, i64>(0) as i32)
            .collect();
        let in_salesforce: Vec<String> = sf
            .records("Contact")
            .into_iter()
            .filter(|r| rows.iter().any(|id| r["External_Id__c"] == json!(format!("X-{id}"))))
            .map(|r| r.to_string())
            .collect();
        panic!("{failed:?}\nentries:\n{}\nin Salesforce:\n{}", entries.join("\n"), in_salesforce.join("\n"));
    }

    let records = sf.live("Contact");
    let mut seen: HashMap<String, serde_json::Value> = HashMap::new();
    for r in &records {
        let ext = r["External_Id__c"].as_str().unwrap_or_default().to_string();
        assert!(seen.insert(ext.clone(), r.clone()).is_none(), "duplicate record for {ext}");
    }
    assert_eq!(seen.len() as i64, ROWS, "every row arrived exactly once");
    for i in [10, 20, 9_990, 20_000] {
        assert_eq!(seen[&format!("X-{i}")]["LastName"], json!(format!("Row {i} (updated)")), "latest values for X-{i}");
    }
    assert_eq!(seen["X-11"]["LastName"], json!("Row 11"));
    let sfids: i64 =
        c.query_one("SELECT count(*) FROM salesforce.contact WHERE sfid IS NOT NULL", &[]).expect("q").get(0);
    assert_eq!(sfids, ROWS, "every row got its sfid back");
    let mismatched: i64 = c
        .query_one(
            "SELECT count(*) FROM salesforce.contact WHERE sfid IS NOT NULL AND sfid <> ALL ($1)",
            &[&records.iter().filter_map(|r| r["Id"].as_str().map(str::to_string)).collect::<Vec<_>>()],
        )
        .expect("q")
        .get(0);
    assert_eq!(mismatched, 0, "every row's sfid is its live record");
}

#[test]
fn settings_with_fixed_values_refuse_typos_with_a_clear_message() {
    let cluster = Cluster::start(true);
    let mut c = cluster.admin();
    for (setting, value, message, hint) in [
        (
            "pgforce.write_algorithm",
            "mergd",
            "invalid value for parameter \"pgforce.write_algorithm\": \"mergd\"",
            "Available values: merged, ordered",
        ),
        (
            "pgforce.auth_flow",
            "client_credential",
            "invalid value for parameter \"pgforce.auth_flow\"",
            "client_credentials, jwt_bearer, refresh_token",
        ),
        (
            "pgforce.api_version",
            "62",
            "invalid value for parameter \"pgforce.api_version\": \"62\" is not a Salesforce API version",
            "such as 62.0",
        ),
        (
            "pgforce.login_url",
            "http://login.salesforce.com",
            "\"http://login.salesforce.com\" is not https",
            "My Domain URL",
        ),
        (
            "pgforce.login_url",
            "login.salesforce.com",
            "\"login.salesforce.com\" is not a URL",
            "https://login.salesforce.com",
        ),
    ] {
        let e = c.batch_execute(&format!("ALTER SYSTEM SET {setting} = '{value}'")).expect_err(value);
        let db = e.as_db_error().unwrap_or_else(|| panic!("{value}: {e}"));
        assert_eq!(db.code(), &postgres::error::SqlState::INVALID_PARAMETER_VALUE, "{value}: {}", db.message());
        assert!(db.message().contains(message), "{value}: {}", db.message());
        assert!(db.hint().unwrap_or_default().contains(hint), "{value}: {:?}", db.hint());
    }
    // Good values are taken; none of the refused ones reached the configuration file.
    for good in [
        "ALTER SYSTEM SET pgforce.write_algorithm = 'ordered'",
        "ALTER SYSTEM SET pgforce.api_version = '59.0'",
        "ALTER SYSTEM SET pgforce.login_url = 'https://acme.my.salesforce.com'",
    ] {
        c.batch_execute(good).expect(good);
    }
    let conf: String = c.query_one("SELECT pg_read_file('postgresql.auto.conf')", &[]).expect("auto.conf").get(0);
    assert!(
        conf.contains("pgforce.write_algorithm = 'ordered'") && !conf.contains("mergd") && !conf.contains("'62'"),
        "{conf}"
    );
}

#[test]
fn a_bug_in_one_cycle_is_reported_and_the_worker_goes_on() {
    let sf = Salesforce::start();
    let mut settings = sf.settings();
    settings.push("pgforce.debug_fault = 'panic_while_sending'".into());
    let cluster = Cluster::start_with(true, &settings);
    let (pid, _) = wait_for(Duration::from_secs(10), "the worker", || worker_row(&cluster));
    let mut c = cluster.admin();
    map_contact(&mut c);
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Bug', 'B-1')").expect("insert");
    // The cycle's panic is reported with what the worker was doing; the change goes back to the queue, at no cost.
    let message: String = wait_for(Duration::from_secs(10), "SYSTEM_ERROR in sync_status", || {
        let row = c.query_one("SELECT connection_state, connection_message FROM salesforce.sync_status", &[]).ok()?;
        (row.get::<_, String>(0) == "SYSTEM_ERROR").then(|| row.get::<_, Option<String>>(1).unwrap_or_default())
    });
    assert_eq!(message, "internal error while sending 1 record to Contact: pgforce.debug_fault = panic_while_sending");
    // The row it was sending costs an attempt (a row that always causes a bug ends FAILED, never a crash loop), and
    // the log names it.
    let row = wait_for(Duration::from_secs(10), "the attempt recorded", || {
        let row = c.query_one("SELECT state::text, attempts, sf_message FROM salesforce._trigger_log", &[]).ok()?;
        (row.get::<_, i32>(1) >= 1).then_some(row)
    });
    assert_eq!(row.get::<_, String>(0).as_str(), "NEW");
    assert!(row
        .get::<_, Option<String>>(2)
        .unwrap_or_default()
        .starts_with("INTERNAL_ERROR: internal error while sending"));
    assert_eq!(worker_row(&cluster).map(|w| w.0), Some(pid), "the same process goes on");
    assert!(cluster.server_log().contains(
        "pgforce: internal error while sending 1 record to Contact: pgforce.debug_fault = panic_while_sending; log ids 1 of contact cost an attempt"
    ));
    assert!(sf.live("Contact").is_empty());

    // With the bug gone, the change is delivered.
    c.batch_execute("ALTER SYSTEM RESET pgforce.debug_fault").expect("reset");
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    wait_for(Duration::from_secs(10), "delivery", || (sf.live("Contact").len() == 1).then_some(()));
    assert_eq!(worker_row(&cluster).map(|w| w.0), Some(pid));
}

#[test]
fn pg_stat_activity_shows_what_the_worker_is_doing() {
    let sf = Salesforce::start();
    let cluster = Cluster::start_with(true, &sf.settings());
    let mut c = cluster.admin();
    map_contact(&mut c);
    let activity = |c: &mut postgres::Client| -> Option<(String, String)> {
        let row = c
            .query_opt("SELECT state, query FROM pg_stat_activity WHERE backend_type = 'pgforce sync worker'", &[])
            .ok()??;
        Some((row.get::<_, Option<String>>(0)?, row.get::<_, Option<String>>(1)?))
    };
    wait_for(Duration::from_secs(10), "an idle worker", || {
        activity(&mut c).filter(|a| a == &("idle".to_string(), "pgforce: waiting for changes".to_string()))
    });
    // A slow org keeps the worker in its sending step long enough to see it.
    sf.admin("PUT", "/faults", json!([{"operation": "upsert", "effect": {"type": "latency", "ms": 3000}}]));
    c.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) SELECT 'n' || g, 'S-' || g FROM generate_series(1, 3) g")
        .expect("insert");
    wait_for(Duration::from_secs(10), "the sending step", || {
        activity(&mut c).filter(|a| a == &("active".to_string(), "pgforce: sending 3 records to Contact".to_string()))
    });
    wait_for(Duration::from_secs(10), "delivery", || (sf.live("Contact").len() == 3).then_some(()));
}
