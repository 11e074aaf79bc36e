//! Model-based convergence: a seeded random workload of inserts, updates of every mapped type, upsert-field changes,
//! deletes, delete/re-insert and requeues, against a Salesforce stand-in that is slow and fails now and then
//! (`UNABLE_TO_LOCK_ROW`, 503, connections dropped after the commit, validation errors). When the queue is empty,
//! every row and its record hold the same values, field by field, and Salesforce holds no other live record.
//!
//! Short by default (one seed, 300 operations, under two writer settings). The long run:
//! `PGFORCE_MODEL_SEEDS=20 PGFORCE_MODEL_OPS=2000`; one seed again: `PGFORCE_MODEL_SEED=<seed>`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pgforce_integration::{Cluster, Salesforce};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// How the writing application's sessions print and read values, and which write algorithm the worker uses.
struct Variant {
    datestyle: &'static str,
    timezone: &'static str,
    algorithm: &'static str,
}

const VARIANTS: [Variant; 2] = [
    Variant { datestyle: "ISO, MDY", timezone: "UTC", algorithm: "merged" },
    Variant { datestyle: "SQL, DMY", timezone: "Asia/Tokyo", algorithm: "ordered" },
];

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn every_workload_converges_value_for_value() {
    let ops = env_number("PGFORCE_MODEL_OPS").unwrap_or(300) as usize;
    let seeds: Vec<u64> = match env_number("PGFORCE_MODEL_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_number("PGFORCE_MODEL_SEEDS").unwrap_or(1)).collect(),
    };
    for seed in seeds {
        for (v, variant) in VARIANTS.iter().enumerate() {
            let outcome = std::panic::catch_unwind(|| run(seed, ops, variant));
            if let Err(panic) = outcome {
                eprintln!(
                    "model test failed: seed {seed}, variant {v} ({}, {}, {}); replay with PGFORCE_MODEL_SEED={seed} PGFORCE_MODEL_OPS={ops}",
                    variant.datestyle, variant.timezone, variant.algorithm
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
}

fn item_object() -> fakeforce::model::ObjectDef {
    serde_json::from_value(json!({
        "name": "Item__c",
        "key_prefix": "a0I",
        "fields": [
            {"name": "Name", "type": "string", "length": 80},
            {"name": "Amount__c", "type": "currency", "precision": 18, "scale": 6},
            {"name": "Due__c", "type": "date"},
            {"name": "At__c", "type": "datetime"},
            {"name": "Flag__c", "type": "boolean"},
            {"name": "Note__c", "type": "textarea", "length": 32000},
            {"name": "Tags__c", "type": "string", "length": 255},
            {"name": "Ext__c", "type": "string", "length": 80, "unique": true, "external_id": true}
        ]
    }))
    .expect("object definition")
}

fn faults() -> Value {
    json!({"rules": [
        {"effect": {"type": "latency", "ms": 2, "jitter_ms": 8}},
        {"object": "Item__c", "rate": 0.03, "effect": {"type": "lock_chunk"}},
        {"object": "Item__c", "rate": 0.01, "effect": {"type": "http", "status": 503, "error_code": "SERVER_UNAVAILABLE", "message": "maintenance"}},
        {"object": "Item__c", "rate": 0.005, "effect": {"type": "drop_after_commit"}},
        {"object": "Item__c", "rate": 0.01, "effect": {"type": "record_error", "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "a flaky validation rule"}}
    ]})
}

/// The values of one row, as the text the application writes (None: NULL).
#[derive(Debug, Clone)]
struct Row {
    name: Option<String>,
    amount: Option<String>,
    due: Option<String>,
    at: Option<String>,
    flag: bool,
    note: Option<String>,
    tags: Option<String>,
}

const NAMES: [&str; 8] =
    ["Ada", "Zoë ☃ 東京", "O'Brien \"the\" \\ back", "", "tab\there", "line\nbreak", "=>,\"", "emoji 🚀"];

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

fn maybe<T>(rng: &mut StdRng, f: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
    if rng.random_bool(0.15) {
        None
    } else {
        Some(f(rng))
    }
}

fn amount(rng: &mut StdRng) -> String {
    // Amount__c is Number(18, 6): 12 digits before the point, 6 after (more is refused, convergence.rs).
    let int_digits = rng.random_range(1..=12);
    let mut s = String::new();
    if rng.random_bool(0.3) {
        s.push('-');
    }
    for i in 0..int_digits {
        let d = if i == 0 && int_digits > 1 { rng.random_range(1..10) } else { rng.random_range(0..10) };
        s.push(char::from(b'0' + d as u8));
    }
    let frac = rng.random_range(0..=6);
    if frac > 0 {
        s.push('.');
        for _ in 0..frac {
            s.push(char::from(b'0' + rng.random_range(0..10) as u8));
        }
    }
    s
}

fn date(rng: &mut StdRng) -> String {
    format!("{:04}-{:02}-{:02}", rng.random_range(1900..=2100), rng.random_range(1..=12), rng.random_range(1..=28))
}

fn instant(rng: &mut StdRng) -> String {
    let offsets = ["+00:00", "+09:00", "-05:00", "+05:30", "+05:45", "-09:30", "+14:00", "-12:00"];
    format!(
        "{} {:02}:{:02}:{:02}.{:03}{}",
        date(rng),
        rng.random_range(0..24),
        rng.random_range(0..60),
        rng.random_range(0..60),
        rng.random_range(0..1000),
        pick(rng, &offsets)
    )
}

fn note(rng: &mut StdRng) -> String {
    match rng.random_range(0..4) {
        0 => pick(rng, &NAMES).to_string(),
        1 => (0..rng.random_range(1000..5000)).map(|i| char::from(b'a' + (i % 26) as u8)).collect(),
        2 => "ünïcödé — ∑ 𝄞 \\N NULL \"quoted\"".repeat(rng.random_range(1..20)),
        _ => format!("note {}", rng.random_range(0..1_000_000)),
    }
}

fn tags(rng: &mut StdRng) -> String {
    let all = ["red", "green", "blue sky", "ümlaut"];
    let n = rng.random_range(1..=3);
    let chosen: Vec<String> = (0..n).map(|_| format!("\"{}\"", pick(rng, &all))).collect();
    format!("{{{}}}", chosen.join(","))
}

fn random_row(rng: &mut StdRng) -> Row {
    Row {
        name: maybe(rng, |r| pick(r, &NAMES).to_string()),
        amount: maybe(rng, amount),
        due: maybe(rng, date),
        at: maybe(rng, instant),
        flag: rng.random_bool(0.5),
        note: maybe(rng, note),
        tags: maybe(rng, tags),
    }
}

const INSERT: &str = "INSERT INTO public.item (id, name, amount__c, due__c, at__c, flag__c, note__c, tags__c, ext__c)
     VALUES ($1, $2, $3::text::numeric, $4::text::date, $5::text::timestamptz, $6, $7, $8::text::text[], $9)";

fn insert(c: &mut postgres::Client, id: i32, row: &Row, ext: &str) {
    c.execute(INSERT, &[&id, &row.name, &row.amount, &row.due, &row.at, &row.flag, &row.note, &row.tags, &ext])
        .expect("insert");
}

/// One operation of the workload, chosen at random, applied in `app`'s session.
fn step(
    rng: &mut StdRng,
    app: &mut postgres::Client,
    admin: &mut postgres::Client,
    live: &mut BTreeSet<i32>,
    next: &mut i32,
    ext: &mut u64,
) {
    let mut fresh_ext = || {
        *ext += 1;
        format!("E-{ext}")
    };
    let existing: Option<i32> =
        if live.is_empty() { None } else { live.iter().nth(rng.random_range(0..live.len())).copied() };
    let roll = rng.random_range(0..100);
    match (roll, existing) {
        (0..=29, _) | (_, None) => {
            *next += 1;
            insert(app, *next, &random_row(rng), &fresh_ext());
            live.insert(*next);
        }
        (30..=69, Some(id)) => {
            let row = random_row(rng);
            let columns: [(&str, Option<String>, &str); 7] = [
                ("name", row.name, "text"),
                ("amount__c", row.amount, "numeric"),
                ("due__c", row.due, "date"),
                ("at__c", row.at, "timestamptz"),
                ("flag__c", Some(row.flag.to_string()), "boolean"),
                ("note__c", row.note, "text"),
                ("tags__c", row.tags, "text[]"),
            ];
            let n = rng.random_range(1..=3);
            let mut chosen: Vec<&(&str, Option<String>, &str)> = Vec::new();
            while chosen.len() < n {
                let c = &columns[rng.random_range(0..columns.len())];
                if !chosen.iter().any(|x| x.0 == c.0) {
                    chosen.push(c);
                }
            }
            let sets: Vec<String> =
                chosen.iter().enumerate().map(|(i, (col, _, ty))| format!("{col} = ${}::text::{ty}", i + 2)).collect();
            let sql = format!("UPDATE public.item SET {} WHERE id = $1", sets.join(", "));
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&id];
            params.extend(chosen.iter().map(|c| &c.1 as &(dyn postgres::types::ToSql + Sync)));
            app.execute(&sql, &params).expect("update");
        }
        (70..=77, Some(id)) => {
            app.execute("UPDATE public.item SET ext__c = $2 WHERE id = $1", &[&id, &fresh_ext()]).expect("rekey");
        }
        (78..=87, Some(id)) => {
            app.execute("DELETE FROM public.item WHERE id = $1", &[&id]).expect("delete");
            live.remove(&id);
        }
        (88..=95, Some(id)) => {
            // Delete and insert again under the same id, in one transaction or two.
            let row = random_row(rng);
            let e = fresh_ext();
            if rng.random_bool(0.5) {
                let mut t = app.transaction().expect("begin");
                t.execute("DELETE FROM public.item WHERE id = $1", &[&id]).expect("delete");
                t.execute(
                    INSERT,
                    &[&id, &row.name, &row.amount, &row.due, &row.at, &row.flag, &row.note, &row.tags, &e],
                )
                .expect("re-insert");
                t.commit().expect("commit");
            } else {
                app.execute("DELETE FROM public.item WHERE id = $1", &[&id]).expect("delete");
                insert(app, id, &row, &e);
            }
        }
        (96..=97, _) => {
            // The seed's retry: failed entries back to NEW by hand.
            admin
                .execute("UPDATE salesforce._trigger_log SET state = 'NEW' WHERE state = 'FAILED'", &[])
                .expect("requeue");
        }
        _ => {
            admin.execute("SELECT salesforce.retry_failed()", &[]).expect("retry_failed");
        }
    }
}

fn open_entries(c: &mut postgres::Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM salesforce._trigger_log WHERE state IN ('NEW', 'PENDING', 'IGNORE', 'FAILED')",
        &[],
    )
    .expect("open")
    .get(0)
}

/// A decimal's text without insignificant zeros (`1.50` → `1.5`, `-0.0` → `0`).
fn decimal(text: &str) -> String {
    let (sign, digits) = text.strip_prefix('-').map_or(("", text), |d| ("-", d));
    let digits = digits.trim_start_matches('0');
    let digits = if digits.contains('.') { digits.trim_end_matches('0').trim_end_matches('.') } else { digits };
    let digits = if digits.is_empty() || digits.starts_with('.') { format!("0{digits}") } else { digits.to_string() };
    if digits == "0" {
        digits
    } else {
        format!("{sign}{digits}")
    }
}

/// A text field as Salesforce keeps it: an empty text is no value.
fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn run(seed: u64, ops: usize, variant: &Variant) {
    let mut config = fakeforce::Config::default();
    config.objects.push(item_object());
    config.writes_kept = 100_000; // every write call of the run, for the history a failure prints
    let sf = Salesforce::start_with(config);
    let mut settings = sf.settings();
    settings.extend([
        "pgforce.retry_failed_after = '1s'".to_string(),
        format!("pgforce.write_algorithm = '{}'", variant.algorithm),
        "pgforce.batch_size = 200".to_string(),
    ]);
    let cluster = Cluster::start_with(true, &settings);
    let mut admin = cluster.admin();
    admin
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE public.item (id integer PRIMARY KEY, name text, amount__c numeric, due__c date,
                 at__c timestamptz, flag__c boolean NOT NULL, note__c text, tags__c text[], ext__c text);
             SELECT salesforce.map_table('public.item', 'Item__c', upsert_field => 'ext__c');",
        )
        .expect("schema");
    sf.admin("POST", "/seed", json!({"seed": seed}));
    sf.admin("PUT", "/faults", faults());
    let mut app = cluster.admin();
    app.batch_execute(&format!("SET DateStyle = '{}'; SET TimeZone = '{}'", variant.datestyle, variant.timezone))
        .expect("application settings");

    let mut rng = StdRng::seed_from_u64(seed);
    let (mut live, mut next, mut ext) = (BTreeSet::new(), 0, 0);
    for _ in 0..ops {
        step(&mut rng, &mut app, &mut admin, &mut live, &mut next, &mut ext);
        if rng.random_bool(0.2) {
            std::thread::sleep(Duration::from_millis(rng.random_range(0..20)));
        }
    }
    // Salesforce recovers; everything queued must then arrive.
    sf.admin("DELETE", "/faults", Value::Null);
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while open_entries(&mut admin) > 0 {
        if std::time::Instant::now() > deadline {
            let open: Vec<String> = admin
                .query(
                    "SELECT concat_ws(' ', id, action, state, 'row', record_id, 'sfid', coalesce(sfid, '-'), 'attempts',
                                      attempts, 'next', coalesce(next_attempt_at::text, '-'), sf_message)
                       FROM salesforce._trigger_log
                      WHERE record_id IN (SELECT record_id FROM salesforce._trigger_log
                                           WHERE state IN ('NEW', 'PENDING', 'IGNORE', 'FAILED'))
                      ORDER BY record_id, id LIMIT 60",
                    &[],
                )
                .expect("open")
                .iter()
                .map(|r| r.get(0))
                .collect();
            let status: String = admin
                .query_one(
                    "SELECT concat_ws(' ', connection_state, connection_message) FROM salesforce.sync_status",
                    &[],
                )
                .expect("status")
                .get(0);
            panic!("the queue did not empty: {status}\n  {}", open.join("\n  "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let records: BTreeMap<String, Value> =
        sf.live("Item__c").into_iter().filter_map(|r| Some((r["Id"].as_str()?.to_string(), r))).collect();
    let rows = admin
        .query(
            "SELECT id, sfid::text, name, amount__c::text, to_char(due__c, 'YYYY-MM-DD'),
                    to_char(at__c AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"+0000\"'), flag__c, note__c,
                    array_to_string(tags__c, ';'), ext__c
               FROM public.item ORDER BY id",
            &[],
        )
        .expect("rows");
    assert_eq!(rows.len(), live.len(), "the model and the table agree on which rows exist");
    for row in &rows {
        let id: i32 = row.get(0);
        let sfid: Option<String> = row.get(1);
        let sfid = sfid.unwrap_or_else(|| panic!("row {id} has no sfid"));
        let r = records.get(&sfid).unwrap_or_else(|| panic!("row {id}: no live record {sfid}"));
        let expect_text = |i: usize| -> Option<String> { row.get::<_, Option<String>>(i).filter(|s| !s.is_empty()) };
        assert_eq!(text(&r["Name"]), expect_text(2), "row {id} Name");
        let amount: Option<String> = row.get(3);
        let sent = match &r["Amount__c"] {
            Value::Null => None,
            v => Some(decimal(&v.to_string())),
        };
        assert_eq!(sent, amount.as_deref().map(decimal), "row {id} Amount__c");
        assert_eq!(text(&r["Due__c"]), expect_text(4), "row {id} Due__c");
        assert_eq!(text(&r["At__c"]), expect_text(5), "row {id} At__c");
        assert_eq!(r["Flag__c"].as_bool(), Some(row.get::<_, bool>(6)), "row {id} Flag__c");
        assert_eq!(text(&r["Note__c"]), expect_text(7), "row {id} Note__c");
        assert_eq!(text(&r["Tags__c"]), expect_text(8), "row {id} Tags__c");
        assert_eq!(text(&r["Ext__c"]), expect_text(9), "row {id} Ext__c");
    }
    let known: BTreeSet<String> = rows.iter().filter_map(|r| r.get::<_, Option<String>>(1)).collect();
    let unknown: Vec<&Value> = records.iter().filter(|(id, _)| !known.contains(*id)).map(|(_, r)| r).collect();
    if !unknown.is_empty() {
        // What the log says of them, to find the sequence that left them behind.
        let mut history = String::new();
        for r in &unknown {
            let ext = r["Ext__c"].as_str().unwrap_or_default();
            let like = format!("%\"ext__c\"=>\"{ext}\"%");
            for e in admin
                .query(
                    "SELECT id, action::text, state::text, record_id, sfid::text,
                            coalesce(sf_message, '') || ' [logged ' || to_char(created_at, 'HH24:MI:SS.MS')
                            || ', done ' || coalesce(to_char(processed_at, 'HH24:MI:SS.MS'), '-') || ']', attempts
                       FROM salesforce._trigger_log
                      WHERE \"values\" LIKE $1 OR old LIKE $1 OR record_id IN
                            (SELECT record_id FROM salesforce._trigger_log WHERE \"values\" LIKE $1 OR old LIKE $1)
                      ORDER BY id",
                    &[&like],
                )
                .expect("history")
            {
                let (id, action, state, record, sfid, message, attempts): (
                    i64,
                    String,
                    String,
                    i64,
                    Option<String>,
                    String,
                    i32,
                ) = (e.get(0), e.get(1), e.get(2), e.get(3), e.get(4), e.get(5), e.get(6));
                history.push_str(&format!(
                    "\n  {ext}: log {id} {action} row {record} {state} sfid {sfid:?} attempts {attempts} {message}"
                ));
            }
        }
        // And the write calls that carried them, as fakeforce received them.
        let writes = sf.admin("GET", "/writes", Value::Null);
        for r in &unknown {
            let ext = r["Ext__c"].as_str().unwrap_or_default();
            let quoted = format!("\"{ext}\"");
            for w in writes.as_array().into_iter().flatten() {
                let records: Vec<&Value> = match w["body"]["records"].as_array() {
                    Some(list) => list.iter().filter(|r| r.to_string().contains(&quoted)).collect(),
                    None if w.to_string().contains(&quoted) => vec![&w["body"]],
                    None => continue,
                };
                if records.is_empty() && !w["path"].as_str().unwrap_or_default().ends_with(&format!("/{ext}")) {
                    continue;
                }
                let ids: Vec<String> = records.iter().map(|r| format!("Id {} Ext {}", r["Id"], r["Ext__c"])).collect();
                history.push_str(&format!(
                    "\n  {ext}: call at {} {} {} {}",
                    w["at"].as_str().unwrap_or("-"),
                    w["method"].as_str().unwrap_or("-"),
                    w["path"].as_str().unwrap_or("-"),
                    ids.join(", ")
                ));
            }
        }
        panic!("live records Postgres does not know: {unknown:?}{history}");
    }
}
