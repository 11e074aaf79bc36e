//! Upgrading: the previous release's full script (kept in `sql/releases/`) is installed, upgraded with
//! `ALTER EXTENSION pgforce UPDATE`, and the upgraded catalog must be exactly a fresh install's; data captured
//! before the upgrade is kept and capture goes on after it.

use std::path::{Path, PathBuf};
use std::process::Command;

use pgforce_integration::Cluster;

/// The release before the one being built. Bump it (and add `sql/releases/pgforce--<it>.sql`) when releasing.
const PREVIOUS: &str = "0.1.0";

/// Every object the extension owns, described by name and definition (no OIDs), one sorted line per object or
/// part: functions with their ACLs, relations with columns, defaults, ACLs and comments, indexes, constraints,
/// triggers, views, sequences, event triggers, types, the schema and what pg_dump keeps as data.
const DESCRIBE: &str = r#"
WITH ext AS (SELECT oid, extnamespace, extconfig, extcondition FROM pg_catalog.pg_extension WHERE extname = 'pgforce'),
members AS (
    SELECT d.classid, d.objid FROM pg_catalog.pg_depend d, ext
     WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
tables AS (SELECT c.oid FROM members m JOIN pg_catalog.pg_class c ON m.classid = 'pg_catalog.pg_class'::regclass AND c.oid = m.objid)
SELECT line FROM (
    SELECT 'function ' || p.oid::regprocedure::text || ' acl ' || coalesce(p.proacl::text, '-') || E'\n'
           || pg_catalog.pg_get_functiondef(p.oid) AS line
      FROM members m JOIN pg_catalog.pg_proc p ON m.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = m.objid
    UNION ALL
    SELECT 'relation ' || c.oid::regclass::text || ' kind ' || c.relkind::text || ' acl ' || coalesce(c.relacl::text, '-')
           || ' comment ' || coalesce(pg_catalog.obj_description(c.oid, 'pg_class'), '-')
           || coalesce(E'\n' || (SELECT pg_catalog.string_agg(a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
                                     || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                                     || coalesce(' default ' || pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), ''), E'\n' ORDER BY a.attnum)
                                   FROM pg_catalog.pg_attribute a
                                   LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind <> 'S'), '')
           || CASE WHEN c.relkind = 'v' THEN E'\n' || pg_catalog.pg_get_viewdef(c.oid) ELSE '' END
           || coalesce((SELECT ' sequence ' || s.seqtypid::regtype::text || ' start ' || s.seqstart || ' by ' || s.seqincrement
                          FROM pg_catalog.pg_sequence s WHERE s.seqrelid = c.oid), '')
      FROM tables t JOIN pg_catalog.pg_class c ON c.oid = t.oid
    UNION ALL
    SELECT 'index ' || pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i JOIN tables t ON i.indrelid = t.oid
    UNION ALL
    SELECT 'constraint ' || con.conrelid::regclass::text || ' ' || con.conname || ' ' || pg_catalog.pg_get_constraintdef(con.oid)
      FROM pg_catalog.pg_constraint con JOIN tables t ON con.conrelid = t.oid
    UNION ALL
    SELECT 'trigger ' || pg_catalog.pg_get_triggerdef(tg.oid)
      FROM pg_catalog.pg_trigger tg JOIN tables t ON tg.tgrelid = t.oid WHERE NOT tg.tgisinternal
    UNION ALL
    SELECT 'event trigger ' || e.evtname || ' on ' || e.evtevent || ' runs ' || e.evtfoid::regprocedure::text || ' ' || e.evtenabled::text
      FROM members m JOIN pg_catalog.pg_event_trigger e ON m.classid = 'pg_catalog.pg_event_trigger'::regclass AND e.oid = m.objid
    UNION ALL
    SELECT 'type ' || ty.oid::regtype::text
      FROM members m JOIN pg_catalog.pg_type ty ON m.classid = 'pg_catalog.pg_type'::regclass AND ty.oid = m.objid
    UNION ALL
    SELECT 'schema ' || n.nspname || ' acl ' || coalesce(n.nspacl::text, '-') FROM ext JOIN pg_catalog.pg_namespace n ON n.oid = ext.extnamespace
    UNION ALL
    SELECT 'dumped as data ' || coalesce((SELECT pg_catalog.string_agg(c::regclass::text, ', ' ORDER BY c::regclass::text)
                                            FROM pg_catalog.unnest(ext.extconfig) c), '-')
      FROM ext
    UNION ALL
    SELECT 'member ' || pg_catalog.pg_describe_object(m.classid, m.objid, 0) FROM members m
     WHERE m.classid NOT IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_class'::regclass,
                             'pg_catalog.pg_event_trigger'::regclass, 'pg_catalog.pg_type'::regclass)
) described ORDER BY line"#;

fn describe(c: &mut postgres::Client) -> Vec<String> {
    c.query(DESCRIBE, &[]).expect("describe the extension").iter().map(|r| r.get(0)).collect()
}

/// Puts the previous release's full script where `CREATE EXTENSION pgforce VERSION …` finds it.
fn install_previous_release() {
    let pg_config = std::env::var("PGFORCE_PG_CONFIG").expect("PGFORCE_PG_CONFIG (scripts/test.sh sets it)");
    let out = Command::new(&pg_config).arg("--sharedir").output().expect("pg_config --sharedir");
    let sharedir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let name = format!("pgforce--{PREVIOUS}.sql");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql/releases").join(&name);
    std::fs::copy(&source, sharedir.join("extension").join(&name))
        .unwrap_or_else(|e| panic!("copy {} into {}: {e}", source.display(), sharedir.display()));
}

#[test]
fn the_previous_release_upgrades_to_exactly_a_fresh_install() {
    install_previous_release();
    // The worker serves the upgraded database (`postgres`) and must wait for the update.
    let cluster = Cluster::start_with(true, &["pgforce.poll_interval = '100ms'".to_string()]);
    let mut admin = cluster.admin();
    admin.batch_execute("CREATE DATABASE fresh").expect("database");
    let current: String = admin
        .query_one("SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = 'pgforce'", &[])
        .expect("pgforce is installed")
        .get(0);
    assert_ne!(current, PREVIOUS, "the version being built must be newer than the previous release");

    let mut up = cluster.connect("postgres", "postgres");
    up.batch_execute(&format!(
        "CREATE EXTENSION pgforce VERSION '{PREVIOUS}' CASCADE;
         CREATE TABLE salesforce.contact (id serial PRIMARY KEY, lastname text, external_id__c text);
         SELECT salesforce.map_table('salesforce.contact', 'Contact', upsert_field => 'external_id__c');
         INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('Before', 'U-1');"
    ))
    .expect("install the previous release and use it: capture works before the update");
    // Until the update, the new library's worker delivers nothing and says why.
    pgforce_integration::wait_for(std::time::Duration::from_secs(10), "the worker's request for the update", || {
        cluster.server_log().contains(&format!("the extension in this database is {PREVIOUS}: nothing is delivered until ALTER EXTENSION pgforce UPDATE")).then_some(())
    });
    let untouched: i64 = up
        .query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'NEW' AND attempts = 0", &[])
        .expect("log")
        .get(0);
    assert_eq!(untouched, 1);
    up.batch_execute("ALTER EXTENSION pgforce UPDATE").expect("upgrade");
    let version: String = up
        .query_one("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pgforce'", &[])
        .expect("version")
        .get(0);
    assert_eq!(version, current);

    let mut fresh = cluster.connect("postgres", "fresh");
    fresh.batch_execute("CREATE EXTENSION pgforce CASCADE").expect("fresh install");
    let (upgraded, installed) = (describe(&mut up), describe(&mut fresh));
    assert!(installed.len() > 20, "the description covers the extension's objects: {installed:?}");
    let only_upgraded: Vec<&String> = upgraded.iter().filter(|l| !installed.contains(l)).collect();
    let only_fresh: Vec<&String> = installed.iter().filter(|l| !upgraded.contains(l)).collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "after ALTER EXTENSION UPDATE from {PREVIOUS}:\n--- only in the upgraded database:\n{}\n--- only in a fresh install:\n{}",
        only_upgraded.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"),
        only_fresh.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"),
    );

    // The release's read_write mapping only sent: it stays so (write_only), never reading by surprise.
    let access: String = up.query_one("SELECT access FROM salesforce._mapping", &[]).expect("mapping").get(0);
    assert_eq!(access, "write_only");

    // Data captured before the upgrade is kept, and capture goes on.
    up.batch_execute("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('After', 'U-2')")
        .expect("capture");
    let rows: i64 = up
        .query_one("SELECT count(*) FROM salesforce._trigger_log WHERE table_name = 'contact'", &[])
        .expect("log")
        .get(0);
    assert_eq!(rows, 2);
}
