//! Capture seen from outside: real sessions, real commits and rollbacks, real roles.

use std::sync::{Arc, Mutex};

use pgforce_integration::Cluster;

fn notices_of(cluster: &Cluster, sql: &str) -> Vec<String> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let mut config = cluster.config("postgres", "postgres");
    config.notice_callback(move |n| {
        sink.lock().unwrap().push(format!("{}: {} HINT: {}", n.severity(), n.message(), n.hint().unwrap_or("")))
    });
    let mut client = config.connect(postgres::NoTls).expect("connect");
    client.batch_execute(sql).expect(sql);
    let out = seen.lock().unwrap().clone();
    out
}

#[test]
fn create_extension_says_when_nothing_will_be_delivered() {
    let cold = Cluster::start(false);
    let notices = notices_of(&cold, "CREATE EXTENSION pgforce CASCADE");
    assert!(
        notices.iter().any(|n| n.starts_with("WARNING: pgforce is not in shared_preload_libraries")
            && n.contains("ALTER SYSTEM SET shared_preload_libraries")),
        "{notices:?}"
    );
    drop(cold);

    let warm = Cluster::start(true);
    let notices = notices_of(&warm, "CREATE EXTENSION pgforce CASCADE");
    assert!(notices.iter().all(|n| !n.contains("shared_preload_libraries")), "{notices:?}");
    let mut c = warm.admin();
    assert!(c.query_one("SELECT salesforce._is_preloaded()", &[]).unwrap().get::<_, bool>(0));
}

#[test]
fn committed_changes_are_captured_per_transaction() {
    let cluster = Cluster::start(true);
    let mut admin = cluster.admin();
    admin
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE salesforce.contact (id serial PRIMARY KEY, sfid varchar(18), name text, email text, ext__c text);
             SELECT salesforce.map_table('salesforce.contact', 'Contact', upsert_field => 'ext__c');
             CREATE ROLE app LOGIN;
             GRANT USAGE ON SCHEMA salesforce TO app;
             GRANT SELECT, INSERT, UPDATE, DELETE ON salesforce.contact TO app;
             GRANT USAGE ON SEQUENCE salesforce.contact_id_seq TO app;",
        )
        .unwrap();

    // The application logs in as a role with rights on its own table only.
    let mut app = cluster.connect("app", "postgres");
    let mut tx = app.transaction().unwrap();
    tx.batch_execute("INSERT INTO salesforce.contact (name, ext__c) VALUES ('a', 'E1'), ('b', 'E2'); UPDATE salesforce.contact SET email = 'b@x.io' WHERE name = 'b'").unwrap();
    // Nothing is visible to others before commit.
    assert_eq!(admin.query_one("SELECT count(*) FROM salesforce._trigger_log", &[]).unwrap().get::<_, i64>(0), 0);
    tx.commit().unwrap();

    let mut rolled_back = app.transaction().unwrap();
    rolled_back.batch_execute("INSERT INTO salesforce.contact (name) VALUES ('never')").unwrap();
    rolled_back.rollback().unwrap();

    // A sync-engine session (xmlbinary = hex) is not captured.
    admin.batch_execute("SET xmlbinary = 'hex'; UPDATE salesforce.contact SET sfid = '003000000000001AAA' WHERE name = 'a'; RESET xmlbinary").unwrap();

    let rows =
        admin.query("SELECT action, state, record_id, txid FROM salesforce._trigger_log ORDER BY id", &[]).unwrap();
    let summary: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {} {}", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, i64>(2)))
        .collect();
    assert_eq!(summary, ["INSERT NEW 1", "INSERT NEW 2", "UPDATE NEW 2"]);
    let txids: Vec<i64> = rows.iter().map(|r| r.get(3)).collect();
    assert!(txids.iter().all(|t| *t == txids[0]), "one transaction, one txid: {txids:?}");
    assert_eq!(
        admin
            .query_one("SELECT string_agg(coalesce(_hc_lastop, '-'), ',' ORDER BY id) FROM salesforce.contact", &[])
            .unwrap()
            .get::<_, String>(0),
        "SYNCED,PENDING"
    );

    // The application cannot read or rewrite the trigger log.
    let err = app.query("SELECT * FROM salesforce._trigger_log", &[]).unwrap_err();
    assert_eq!(err.code(), Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));

    // The extension can be dropped with its log, leaving the user's table.
    admin.batch_execute("DROP EXTENSION pgforce CASCADE").unwrap();
    assert_eq!(admin.query_one("SELECT count(*) FROM salesforce.contact", &[]).unwrap().get::<_, i64>(0), 2);
    admin.batch_execute("INSERT INTO salesforce.contact (name) VALUES ('after')").unwrap();
    assert!(!cluster.server_log().contains("PANIC"));
}
