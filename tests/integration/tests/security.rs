//! Attacks by unprivileged roles, on a real cluster with the worker delivering to fakeforce. Each test asserts that
//! nothing happened: no log row, no Salesforce record, no write-back, no decoy called, no secret read, no crash.
//! The roles are `pgforce_integration::attack`'s.

use std::time::Duration;

use pgforce_integration::attack::{assert_nothing_else_happened, cluster as setup, count, outcome, WAIT};
use pgforce_integration::{wait_for, Cluster, Salesforce};
use serde_json::json;

#[test]
fn replayed_trigger_definitions_capture_nothing() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut admin = cluster.admin();
    let definitions: Vec<String> = admin
        .query("SELECT pg_catalog.pg_get_triggerdef(oid) FROM pg_catalog.pg_trigger WHERE tgrelid = 'app.contact'::regclass AND NOT tgisinternal", &[])
        .expect("triggers")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(definitions.len(), 4, "{definitions:?}");
    let log_rows = |admin: &mut postgres::Client| count(admin, "SELECT count(*) FROM salesforce._trigger_log");
    let before = log_rows(&mut admin);

    let mut mallory = cluster.connect("mallory", "postgres");
    let columns = "(id int PRIMARY KEY, sfid varchar(18), lastname text, email text, external_id__c text, \
                   _hc_lastop varchar(32) DEFAULT 'PENDING', _hc_err text)";
    for (create, target) in [
        (format!("CREATE TEMP TABLE contact {columns}"), "pg_temp.contact"),
        (format!("CREATE TABLE public.contact {columns}"), "public.contact"),
    ] {
        mallory.batch_execute(&create).expect("mallory's table");
        for definition in &definitions {
            let forged = definition.replace("ON app.contact", &format!("ON {target}"));
            assert_eq!(outcome(&mut mallory, &forged), "42501", "mallory may not attach pgforce's triggers: {forged}");
        }
        // Even attached by a superuser by mistake, pgforce's triggers refuse a table that is not mapped.
        if target == "public.contact" {
            for definition in &definitions {
                admin
                    .batch_execute(&definition.replace("ON app.contact", "ON public.contact"))
                    .expect("attach as superuser");
            }
        }
        let write = format!(
            "INSERT INTO {target} (id, lastname, external_id__c) VALUES (1, 'Forged', 'F-1');
             UPDATE {target} SET sfid = (SELECT sfid FROM app.contact LIMIT 1), lastname = 'Hijacked';
             DELETE FROM {target};"
        );
        let result = outcome(&mut mallory, &write);
        if target == "public.contact" {
            assert!(["42501", "39P01"].contains(&result.as_str()), "writes to a table that is not mapped: {result}");
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(log_rows(&mut admin), before, "no forged log rows");
    let sfid: Option<String> = admin.query_one("SELECT sfid::text FROM app.contact", &[]).expect("row").get(0);
    assert!(sfid.is_some());
    assert_eq!(count(&mut admin, "SELECT count(*) FROM app.contact WHERE lastname <> 'Legit'"), 0);
    assert_nothing_else_happened(&cluster, &sf, 1);
}

#[test]
fn misfired_triggers_raise_instead_of_crashing() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut admin = cluster.admin();
    admin
        .batch_execute(
            "CREATE TABLE public.victim (id int PRIMARY KEY, sfid varchar(18), _hc_lastop varchar(32), _hc_err text);
             INSERT INTO public.victim VALUES (1, NULL, NULL, NULL);",
        )
        .expect("victim");
    // Trigger shapes: when, at which level, for which events, with which transition tables.
    #[derive(Clone, Copy)]
    struct Shape {
        sql: &'static str,
        before: bool,
        per_row: bool,
        events: &'static [&'static str],
        old: bool,
        new: bool,
    }
    let shapes = [
        Shape {
            sql: "BEFORE INSERT OR UPDATE OR DELETE ON {t} FOR EACH STATEMENT",
            before: true,
            per_row: false,
            events: &["INSERT", "UPDATE", "DELETE"],
            old: false,
            new: false,
        },
        Shape {
            sql: "AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH STATEMENT",
            before: false,
            per_row: false,
            events: &["INSERT", "UPDATE", "DELETE"],
            old: false,
            new: false,
        },
        Shape {
            sql: "AFTER UPDATE ON {t} REFERENCING OLD TABLE AS o NEW TABLE AS n FOR EACH STATEMENT",
            before: false,
            per_row: false,
            events: &["UPDATE"],
            old: true,
            new: true,
        },
        Shape {
            sql: "BEFORE INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW",
            before: true,
            per_row: true,
            events: &["INSERT", "UPDATE", "DELETE"],
            old: false,
            new: false,
        },
        Shape {
            sql: "AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW",
            before: false,
            per_row: true,
            events: &["INSERT", "UPDATE", "DELETE"],
            old: false,
            new: false,
        },
        Shape {
            sql: "AFTER INSERT ON {t} REFERENCING NEW TABLE AS n FOR EACH ROW",
            before: false,
            per_row: true,
            events: &["INSERT"],
            old: false,
            new: true,
        },
        Shape {
            sql: "BEFORE TRUNCATE ON {t} FOR EACH STATEMENT",
            before: true,
            per_row: false,
            events: &["TRUNCATE"],
            old: false,
            new: false,
        },
    ];
    let log_before = count(&mut admin, "SELECT count(*) FROM salesforce._trigger_log");
    let mut fired = 0;
    for (table, mapped) in [("public.victim", false), ("app.contact", true)] {
        for function in
            ["salesforce._track_status()", "salesforce._capture_changes('read_write')", "salesforce._wake_worker()"]
        {
            for Shape { sql: shape, before, per_row, events, old, new } in shapes {
                let create =
                    format!("CREATE TRIGGER misfired {} EXECUTE FUNCTION {function}", shape.replace("{t}", table));
                if admin.batch_execute(&create).is_err() {
                    continue; // a combination Postgres itself refuses
                }
                for (event, statement) in [
                    ("INSERT", format!("INSERT INTO {table} (id) VALUES (2)")),
                    ("UPDATE", format!("UPDATE {table} SET sfid = sfid WHERE id = 1")),
                    ("DELETE", format!("DELETE FROM {table} WHERE id = 1")),
                    ("TRUNCATE", format!("TRUNCATE {table}")),
                ] {
                    if !events.contains(&event) {
                        continue; // does not fire
                    }
                    // In a transaction that is rolled back, so the table keeps its rows.
                    let result = outcome(&mut admin, &format!("BEGIN; {statement}; ROLLBACK;"));
                    admin.batch_execute("ROLLBACK").ok();
                    // The one context each function is made for, on a mapped table.
                    let right = mapped
                        && match function {
                            f if f.contains("_track_status") => {
                                before && per_row && ["INSERT", "UPDATE"].contains(&event)
                            }
                            f if f.contains("_capture_changes") => {
                                !before
                                    && !per_row
                                    && match event {
                                        "INSERT" => new,
                                        "UPDATE" => old && new,
                                        "DELETE" => old,
                                        _ => false,
                                    }
                            }
                            _ => false,
                        };
                    if right {
                        assert_eq!(result, "ok", "{function} {shape} on {table}, {statement}");
                    } else {
                        fired += 1;
                        assert!(
                            ["39P01", "42501"].contains(&result.as_str()),
                            "{function} {shape} on {table}, {statement}: {result} (want 39P01 or 42501)"
                        );
                    }
                }
                admin.batch_execute(&format!("DROP TRIGGER misfired ON {table}")).expect("drop");
            }
        }
    }
    assert!(fired > 20, "the misfires were tried ({fired})");
    assert_eq!(count(&mut admin, "SELECT count(*) FROM salesforce._trigger_log"), log_before, "no log rows");
    assert_nothing_else_happened(&cluster, &sf, 1);
}

#[test]
fn ddl_by_roles_without_rights_on_pgforce_works() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut mallory = cluster.connect("mallory", "postgres");
    for ddl in [
        "CREATE TABLE public.mine (x int)",
        "ALTER TABLE public.mine ADD COLUMN y text",
        "CREATE VIEW public.mine_view AS SELECT x FROM public.mine",
        "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "DROP VIEW public.mine_view",
        "DROP FUNCTION public.f()",
        "DROP TABLE public.mine",
        "CREATE TEMP TABLE scratch (x int); DROP TABLE scratch",
    ] {
        assert_eq!(outcome(&mut mallory, ddl), "ok", "{ddl}");
    }
    // The owner of a mapped table may change it and drop it; the mapping is then forgotten.
    let mut owner = cluster.connect("app_owner", "postgres");
    assert_eq!(outcome(&mut owner, "ALTER TABLE app.contact ADD COLUMN note text"), "ok");
    assert_eq!(outcome(&mut owner, "DROP TABLE app.contact"), "ok");
    let mut admin = cluster.admin();
    assert_eq!(count(&mut admin, "SELECT count(*) FROM salesforce._mapping"), 0);
    assert_nothing_else_happened(&cluster, &sf, 1);
}

#[test]
fn decoy_functions_and_operators_on_the_path_are_never_called() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut mallory = cluster.connect("mallory", "postgres");
    // Every decoy records who called it, from which kind of backend, then does what the real one does.
    mallory
        .batch_execute(
            "CREATE TABLE public.decoy_calls (who text, superuser text, backend text, what text);
             GRANT INSERT ON public.decoy_calls TO PUBLIC;
             CREATE FUNCTION public.decoy_note(what text) RETURNS void LANGUAGE sql AS $$
                 INSERT INTO public.decoy_calls SELECT current_user,
                        CASE WHEN pg_catalog.has_table_privilege('pg_catalog.pg_authid', 'SELECT') THEN 'on' ELSE 'off' END,
                        (SELECT backend_type FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid()), what $$;
             CREATE FUNCTION public.quote_ident(name) RETURNS text LANGUAGE plpgsql AS $$
                 BEGIN PERFORM public.decoy_note('quote_ident'); RETURN pg_catalog.quote_ident($1::text); END $$;
             CREATE FUNCTION public.decoy_eq(varchar, varchar) RETURNS boolean LANGUAGE plpgsql AS $$
                 BEGIN PERFORM public.decoy_note('='); RETURN pg_catalog.texteq($1::text, $2::text); END $$;
             CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.decoy_eq);
             CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
                 BEGIN PERFORM public.decoy_note('now'); RETURN pg_catalog.now(); END $$;
             CREATE FUNCTION public.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE plpgsql AS $$
                 BEGIN PERFORM public.decoy_note('unnest'); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
             CREATE FUNCTION public.txid_current() RETURNS bigint LANGUAGE plpgsql AS $$
                 BEGIN PERFORM public.decoy_note('txid_current'); RETURN pg_catalog.txid_current(); END $$;",
        )
        .expect("decoys");
    // Work for every part of pgforce: capture, the worker's claim, send and record, a failure, a retry, mapping.
    let mut admin = cluster.admin();
    admin.batch_execute("SET search_path = pg_catalog").expect("the admin's own queries stay clear of the decoys");
    sf.admin("PUT", "/faults", json!([{"object": "Contact", "field": "Email", "contains": "@blocked.", "effect": {"type": "record_error", "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Blocked"}}]));
    let mut owner = cluster.connect("app_owner", "postgres");
    owner
        .batch_execute(
            "INSERT INTO app.contact (lastname, email, external_id__c) SELECT 'n' || g, 'u' || g || '@blocked.example', 'D-' || g FROM generate_series(1, 3) g;
             INSERT INTO app.contact (lastname, external_id__c) VALUES ('Fine', 'D-9');
             UPDATE app.contact SET lastname = 'Renamed' WHERE external_id__c = 'L-1';",
        )
        .expect("writes");
    wait_for(WAIT, "delivery and failures", || {
        (count(&mut admin, "SELECT count(*) FROM salesforce._trigger_log WHERE state::text IN ('NEW', 'PENDING')") == 0)
            .then_some(())
    });
    // Heroku Connect's documented retry, as the superuser.
    admin.batch_execute("UPDATE salesforce._trigger_log SET state = 'NEW' WHERE state = 'FAILED'").expect("retry");
    admin
        .batch_execute(
            "CREATE TABLE public.other (id serial PRIMARY KEY, name text);
             SELECT salesforce.map_table('public.other', 'Account');
             SELECT salesforce.unmap_table('public.other');",
        )
        .expect("map and unmap");
    std::thread::sleep(Duration::from_secs(2));
    let calls: Vec<(String, String, String, String)> = admin
        .query("SELECT who, superuser, coalesce(backend, ''), what FROM public.decoy_calls", &[])
        .expect("decoy calls")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let privileged: Vec<_> = calls.iter().filter(|c| c.1 == "on" || c.2 == "pgforce sync worker").collect();
    assert!(privileged.is_empty(), "decoys called with superuser rights or by the worker: {privileged:?}");
    assert_nothing_else_happened(&cluster, &sf, 2);
}

#[test]
fn user_code_on_mapped_tables_runs_with_its_owners_rights() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    let mut owner = cluster.connect("app_owner", "postgres");
    owner
        .batch_execute(
            "CREATE TABLE app.audit (who text, superuser text, lastop text);
             CREATE FUNCTION app.note() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     -- Reading pg_authid is a superuser's right: the real test of whose rights this runs with.
                     INSERT INTO app.audit VALUES (current_user,
                         CASE WHEN pg_catalog.has_table_privilege('pg_catalog.pg_authid', 'SELECT') THEN 'on' ELSE 'off' END,
                         NEW._hc_lastop);
                     RETURN NEW;
                 END $$;
             CREATE TRIGGER note AFTER UPDATE ON app.contact FOR EACH ROW EXECUTE FUNCTION app.note();
             INSERT INTO app.contact (lastname, external_id__c) VALUES ('Two', 'L-2');",
        )
        .expect("the owner's trigger");
    wait_for(WAIT, "the write-back", || {
        (count(&mut owner, "SELECT count(*) FROM app.audit WHERE lastop = 'INSERTED'") == 1).then_some(())
    });
    let rows: Vec<(String, String)> = owner
        .query("SELECT who, superuser FROM app.audit", &[])
        .expect("audit")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [("app_owner".to_string(), "off".to_string())],
        "the write-back fired the owner's trigger as the owner"
    );
    assert_nothing_else_happened(&cluster, &sf, 2);
}

#[test]
fn unprivileged_roles_read_no_secrets_or_error_texts_and_write_nothing() {
    let sf = Salesforce::start();
    let cluster = setup(&sf);
    sf.admin("PUT", "/faults", json!([{"object": "Contact", "field": "Email", "contains": "@blocked.", "effect": {"type": "record_error", "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Blocked domain"}}]));
    let mut owner = cluster.connect("app_owner", "postgres");
    owner
        .batch_execute(
            "INSERT INTO app.contact (lastname, email, external_id__c) VALUES ('Bad', 'x@blocked.example', 'B-1')",
        )
        .expect("insert");
    let mut admin = cluster.admin();
    wait_for(WAIT, "the failure", || {
        (count(&mut admin, "SELECT count(*) FROM salesforce._trigger_log WHERE state = 'FAILED'") == 1).then_some(())
    });

    let mut mallory = cluster.connect("mallory", "postgres");
    // sync_status: counts for everyone, error texts for pgforce_monitor only.
    let texts = |c: &mut postgres::Client| -> (i64, Option<String>) {
        let r = c.query_one("SELECT errored_writes, last_error FROM salesforce.sync_status", &[]).expect("sync_status");
        (r.get(0), r.get(1))
    };
    assert_eq!(texts(&mut mallory), (1, None));
    let mut watcher = cluster.connect("watcher", "postgres");
    assert_eq!(texts(&mut watcher).1.as_deref(), Some("FIELD_CUSTOM_VALIDATION_EXCEPTION: Blocked domain"));
    for secret in [
        "pgforce.client_secret",
        "pgforce.refresh_token",
        "pgforce.jwt_key_file",
        "pgforce.client_secret_file",
        "pgforce.refresh_token_file",
    ] {
        assert_eq!(outcome(&mut mallory, &format!("SHOW {secret}")), "42501", "SHOW {secret}");
    }
    assert_eq!(
        count(
            &mut mallory,
            "SELECT count(*) FROM pg_settings WHERE name ~ '^pgforce\\.(client_secret|refresh_token|jwt_key_file)'"
        ),
        0
    );
    for read in [
        "SELECT last_error FROM salesforce._mapping",
        "SELECT sf_message FROM salesforce._trigger_log",
        "SELECT * FROM salesforce._trigger_log_archive",
    ] {
        assert_eq!(outcome(&mut mallory, read), "42501", "{read}");
    }
    // Nobody but superusers writes the log, the archive or the mappings; operators go through functions.
    let mut ops = cluster.connect("ops", "postgres");
    for who in [&mut mallory, &mut watcher, &mut ops] {
        for write in [
            "UPDATE salesforce._trigger_log SET state = 'NEW'",
            "INSERT INTO salesforce._trigger_log (state, action, table_name, record_id, \"values\") VALUES ('NEW', 'INSERT', 'contact', 1, '')",
            "DELETE FROM salesforce._trigger_log",
            "UPDATE salesforce._trigger_log_archive SET state = 'REQUEUE'",
            "UPDATE salesforce._mapping SET sobject = 'Lead'",
            "SELECT salesforce.map_table('app.contact', 'Lead')",
            "SELECT salesforce.unmap_table('app.contact')",
        ] {
            assert_eq!(outcome(who, write), "42501", "{write}");
        }
    }
    for denied in [
        "SELECT salesforce.retry_failed()",
        "SELECT salesforce.hc_capture_insert_from_row(hstore('id', '1'), 'contact')",
    ] {
        assert_eq!(outcome(&mut mallory, denied), "42501", "{denied}");
        assert_eq!(outcome(&mut watcher, denied), "42501", "{denied}");
    }
    // An operator fixes the row and retries the failure through the function, in one transaction so that both go
    // as one write (Merged writes).
    let mut fix = ops.transaction().expect("begin");
    fix.batch_execute("UPDATE app.contact SET email = 'x@fine.example' WHERE external_id__c = 'B-1'").expect("fix");
    let queued: i64 = fix.query_one("SELECT salesforce.retry_failed('app.contact')", &[]).expect("retry").get(0);
    fix.commit().expect("commit");
    assert_eq!(queued, 1);
    wait_for(WAIT, "the retried record", || (sf.live("Contact").len() == 2).then_some(()));
    assert_nothing_else_happened(&cluster, &sf, 2);
}

#[test]
fn secrets_can_live_in_files_only_the_server_can_read() {
    let sf = Salesforce::start();
    let dir = std::env::temp_dir().join(format!("pgforce-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let secret = dir.join("client_secret");
    std::fs::write(&secret, "pgforce-demo-secret\n").expect("secret");
    let chown = |path: &std::path::Path, mode: &str| {
        std::process::Command::new("chown").arg("postgres").arg(path).status().expect("chown");
        std::process::Command::new("chmod").arg(mode).arg(path).status().expect("chmod");
    };
    chown(&dir, "755");
    chown(&secret, "600");
    let mut settings: Vec<String> =
        sf.settings().into_iter().filter(|s| !s.starts_with("pgforce.client_secret")).collect();
    settings.push(format!("pgforce.client_secret_file = '{}'", secret.display()));
    let cluster = Cluster::start_with(true, &settings);
    let mut admin = cluster.admin();
    admin
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, external_id__c text);
             SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c');
             INSERT INTO public.contact (lastname, external_id__c) VALUES ('File', 'S-1');
             CREATE ROLE mallory LOGIN;",
        )
        .expect("setup");
    wait_for(WAIT, "delivery with the secret from the file", || (sf.live("Contact").len() == 1).then_some(()));
    let mut mallory = cluster.connect("mallory", "postgres");
    assert_eq!(outcome(&mut mallory, "SHOW pgforce.client_secret_file"), "42501");

    // A secret file others can read is refused, and the refusal names neither the file nor the secret.
    chown(&secret, "644");
    admin.batch_execute("SELECT pg_reload_conf()").expect("reload");
    admin
        .batch_execute("INSERT INTO public.contact (lastname, external_id__c) VALUES ('File', 'S-2')")
        .expect("insert");
    let message: String = wait_for(WAIT, "the refusal", || {
        let r = admin.query_one("SELECT connection_state, connection_message FROM salesforce.sync_status", &[]).ok()?;
        (r.get::<_, String>(0) == "UNAUTHORIZED").then(|| r.get::<_, Option<String>>(1).unwrap_or_default())
    });
    assert!(message.contains("pgforce.client_secret_file") && message.contains("chmod 600"), "{message}");
    let log = cluster.server_log();
    for leak in [secret.display().to_string(), "pgforce-demo-secret".to_string()] {
        assert!(!message.contains(&leak) && !log.contains(&leak), "{leak} leaked: {message}\n{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
