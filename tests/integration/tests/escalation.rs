//! No role gains a right through pgforce: one test per class of attack that reached a more privileged role (issue
//! 26), each played by an ordinary role against a real cluster whose worker delivers to fakeforce. The roles are
//! `pgforce_integration::attack`'s; decoys record who ran them, and try to make their author a superuser.

use pgforce_integration::attack::{cluster, count, outcome, text, WAIT};
use pgforce_integration::{wait_for, Cluster, Salesforce};
use serde_json::json;

/// Decoys in the table owner's schema `app`: types, operators and a function that pgforce's own SQL would resolve
/// to if a search_path naming `app` first outlived the owner's code. Each calls `app.escalate()`, which records who
/// ran it and, when that is a superuser, makes `app_owner` one.
const OWNER_DECOYS: &str = "
    CREATE TABLE app.escalations (who text, what text);
    GRANT INSERT ON app.escalations TO PUBLIC;
    CREATE FUNCTION app.escalate(what text) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO app.escalations VALUES (current_user, what);
        IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user) THEN
            EXECUTE 'ALTER ROLE app_owner SUPERUSER';
        END IF;
        RETURN true;
    END $$;
    CREATE DOMAIN app.text AS pg_catalog.text CHECK (app.escalate('text'));
    CREATE DOMAIN app.int8 AS pg_catalog.int8 CHECK (app.escalate('int8'));
    CREATE DOMAIN app.int4 AS pg_catalog.int4 CHECK (app.escalate('int4'));
    CREATE DOMAIN app.float8 AS pg_catalog.float8 CHECK (app.escalate('float8'));
    CREATE DOMAIN app.jsonb AS pg_catalog.jsonb CHECK (app.escalate('jsonb'));
    CREATE DOMAIN app.timestamptz AS pg_catalog.timestamptz CHECK (app.escalate('timestamptz'));
    CREATE FUNCTION app.eq(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN PERFORM app.escalate('='); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
    CREATE OPERATOR app.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = app.eq);
    CREATE FUNCTION app.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
        BEGIN PERFORM app.escalate('now'); RETURN pg_catalog.now(); END $$;
";

/// Who ran a decoy, and whether `role` has become a superuser.
fn escalations(c: &mut postgres::Client, role: &str) -> (Vec<(String, String)>, bool) {
    let calls = c
        .query("SELECT who, what FROM app.escalations", &[])
        .expect("escalations")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let superuser =
        c.query_one("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1", &[&role]).expect("role").get(0);
    (calls, superuser)
}

/// Settings a session can be hijacked through, as this session sees them now.
const SESSION: &str = "SELECT pg_catalog.concat_ws(' | ', pg_catalog.current_setting('search_path'),
                              pg_catalog.current_setting('statement_timeout'), pg_catalog.current_setting('lock_timeout'),
                              pg_catalog.current_setting('default_transaction_read_only'), current_user, session_user)";

#[test]
fn a_table_owners_trigger_changes_nothing_in_the_workers_session() {
    let sf = Salesforce::start();
    let cluster = cluster(&sf);
    let mut owner = cluster.connect("app_owner", "postgres");
    // The trigger notes the session it runs in (what it inherits from the worker), then tries every setting change
    // it can, each in a block of its own so that one refused does not stop the others.
    owner
        .batch_execute(&format!(
            "{OWNER_DECOYS}
             CREATE TABLE app.seen (n serial, session text);
             CREATE FUNCTION app.hijack() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO app.seen (session)
                 SELECT pg_catalog.concat_ws(' | ', pg_catalog.current_setting('search_path'),
                        pg_catalog.current_setting('role'), pg_catalog.current_setting('statement_timeout'),
                        pg_catalog.current_setting('lock_timeout'),
                        pg_catalog.current_setting('default_transaction_read_only'), session_user);
                 BEGIN PERFORM pg_catalog.set_config('search_path', 'app, pg_catalog', false);
                 EXCEPTION WHEN OTHERS THEN NULL; END;
                 BEGIN PERFORM pg_catalog.set_config('role', 'app_owner', false);
                 EXCEPTION WHEN OTHERS THEN NULL; END;
                 BEGIN PERFORM pg_catalog.set_config('session_authorization', 'app_owner', false);
                 EXCEPTION WHEN OTHERS THEN NULL; END;
                 BEGIN PERFORM pg_catalog.set_config('default_transaction_read_only', 'on', false);
                 EXCEPTION WHEN OTHERS THEN NULL; END;
                 BEGIN PERFORM pg_catalog.set_config('statement_timeout', '7', false);
                 EXCEPTION WHEN OTHERS THEN NULL; END;
                 BEGIN PERFORM pg_catalog.set_config('lock_timeout', '7', false);
                 EXCEPTION WHEN OTHERS THEN NULL; END;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER hijack BEFORE UPDATE ON app.contact FOR EACH ROW EXECUTE FUNCTION app.hijack();"
        ))
        .expect("the owner's trigger and decoys");
    // Two deliveries one after the other: the second write-back's trigger sees the session the first one left.
    for (n, key) in ["H-1", "H-2"].iter().enumerate() {
        owner
            .batch_execute(&format!("INSERT INTO app.contact (lastname, external_id__c) VALUES ('Hijack', '{key}')"))
            .expect("insert");
        wait_for(WAIT, &format!("write-back {} (the worker must still deliver)", n + 1), || {
            (count(
                &mut owner,
                &format!("SELECT count(*) FROM app.contact WHERE external_id__c = '{key}' AND sfid IS NOT NULL"),
            ) == 1)
                .then_some(())
        });
    }
    let seen: Vec<String> =
        owner.query("SELECT session FROM app.seen ORDER BY n", &[]).expect("seen").iter().map(|r| r.get(0)).collect();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(seen.iter().all(|s| s == &seen[0]), "the worker's session changed between write-backs: {seen:#?}");
    assert!(seen[0].contains("| none |") && seen[0].ends_with("| off | postgres"), "{}", seen[0]);
    let (calls, superuser) = escalations(&mut owner, "app_owner");
    assert!(calls.is_empty() && !superuser, "decoys ran: {calls:?}; app_owner superuser: {superuser}");
    // And the worker's next statements run as before: a change after the attacks is delivered and recorded.
    owner
        .batch_execute("UPDATE app.contact SET email = 'after@example.com' WHERE external_id__c = 'H-1'")
        .expect("update");
    let mut admin = cluster.admin();
    wait_for(WAIT, "the update after the attacks", || {
        let email: Vec<String> =
            sf.live("Contact").iter().filter_map(|r| r["Email"].as_str().map(String::from)).collect();
        (email.contains(&"after@example.com".to_string())
            && count(
                &mut admin,
                "SELECT count(*) FROM salesforce._trigger_log WHERE state::text IN ('NEW', 'PENDING')",
            ) == 0)
            .then_some(())
    });
    let (calls, superuser) = escalations(&mut owner, "app_owner");
    assert!(calls.is_empty() && !superuser, "decoys ran: {calls:?}; app_owner superuser: {superuser}");
}

#[test]
fn rollback_and_preview_leave_the_callers_session_as_it_was() {
    let sf = Salesforce::start();
    let cluster = cluster(&sf);
    let mut owner = cluster.connect("app_owner", "postgres");
    owner
        .batch_execute(&format!(
            "{OWNER_DECOYS}
             CREATE TABLE app.policy_calls (who text);
             GRANT INSERT ON app.policy_calls TO PUBLIC;
             CREATE FUNCTION app.hijack_caller() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM pg_catalog.set_config('search_path', 'app, pg_catalog', false);
                 PERFORM pg_catalog.set_config('statement_timeout', '4242', false);
                 IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN RETURN OLD; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER hijack BEFORE UPDATE OR DELETE ON app.contact
                 FOR EACH ROW EXECUTE FUNCTION app.hijack_caller();
             CREATE FUNCTION app.visible() RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO app.policy_calls VALUES (current_user);
                 PERFORM pg_catalog.set_config('search_path', 'app, pg_catalog', false);
                 PERFORM pg_catalog.set_config('lock_timeout', '4242', false);
                 RETURN true;
             END $$;
             ALTER TABLE app.contact ENABLE ROW LEVEL SECURITY;
             ALTER TABLE app.contact FORCE ROW LEVEL SECURITY;
             CREATE POLICY everyone ON app.contact USING (app.visible());"
        ))
        .expect("the owner's trigger, policy and decoys");
    let since: String = text(&mut owner, "SELECT pg_catalog.clock_timestamp()::text");
    owner
        .batch_execute("INSERT INTO app.contact (lastname, external_id__c) VALUES ('Undo me', 'R-1')")
        .expect("insert");
    wait_for(WAIT, "the row delivered", || (sf.live("Contact").len() == 2).then_some(()));

    // An operator rolls back what was delivered since: the row is deleted, firing the owner's trigger.
    let mut ops = cluster.connect("ops", "postgres");
    let before = text(&mut ops, SESSION);
    ops.batch_execute(&format!("SELECT * FROM salesforce.rollback('{since}', 'app.contact', dry_run => false)"))
        .expect("rollback");
    assert_eq!(count(&mut owner, "SELECT count(*) FROM app.contact WHERE external_id__c = 'R-1'"), 0, "rolled back");
    assert_eq!(text(&mut ops, SESSION), before, "rollback() left the table owner's settings in the operator's session");

    // A monitor previews a change of a paused mapping logged without an sfid (re-captured without it): the planner
    // reads the row's sfid, through the owner's policy.
    assert_eq!(outcome(&mut ops, "SELECT salesforce.pause('app.contact')"), "ok");
    owner
        .batch_execute(
            "SELECT salesforce.hc_capture_update_from_row(hstore(c.*) - 'sfid'::text, 'contact', ARRAY['email'])
               FROM app.contact c WHERE external_id__c = 'L-1'",
        )
        .expect_err("the table's owner is no operator");
    ops.batch_execute(
        "SELECT salesforce.hc_capture_update_from_row(hstore(c.*) - 'sfid'::text, 'contact', ARRAY['email'])
           FROM app.contact c WHERE external_id__c = 'L-1'",
    )
    .expect("an update without an sfid");
    let mut watcher = cluster.connect("watcher", "postgres");
    let before = text(&mut watcher, SESSION);
    let calls = count(&mut owner, "SELECT count(*) FROM app.policy_calls");
    let previewed = count(&mut watcher, "SELECT count(*) FROM salesforce.preview()");
    assert!(previewed >= 1, "the update is previewed");
    assert!(count(&mut owner, "SELECT count(*) FROM app.policy_calls") > calls, "preview read the row");
    assert_eq!(
        text(&mut watcher, SESSION),
        before,
        "preview() left the table owner's settings in the monitor's session"
    );
    let (calls, superuser) = escalations(&mut owner, "app_owner");
    assert!(calls.is_empty() && !superuser, "decoys ran: {calls:?}; app_owner superuser: {superuser}");
}

#[test]
fn a_relationship_reveals_nothing_of_a_parent_the_role_may_not_read() {
    let sf = Salesforce::start();
    let cluster = cluster(&sf);
    let mut admin = cluster.admin();
    admin
        .batch_execute(
            "CREATE TABLE app.account (id serial PRIMARY KEY, name text);
             SELECT salesforce.map_table('app.account', 'Account');
             GRANT REFERENCES ON app.account TO app_owner;
             GRANT EXECUTE ON FUNCTION salesforce.map_table(regclass, text, text, text, text[], boolean, jsonb, interval, text)
                TO app_owner;",
        )
        .expect("a parent the owner may reference but not read");
    let mut owner = cluster.connect("app_owner", "postgres");
    owner
        .batch_execute(
            "CREATE TABLE app.child (id serial PRIMARY KEY, lastname text,
                                     account_id integer REFERENCES app.account (id));",
        )
        .expect("REFERENCES is enough for a foreign key");
    let map = "SELECT salesforce.map_table('app.child', 'Contact', relationships => '{\"account_id\": \"AccountId\"}')";
    assert_eq!(outcome(&mut owner, map), "42501", "mapping a relationship to a parent it may not read");
    let error = owner.batch_execute(map).expect_err("refused");
    let hint = error.as_db_error().and_then(|e| e.hint()).unwrap_or_default().to_string();
    assert!(hint.contains("GRANT SELECT ON app.account TO app_owner"), "{error:?}");

    // With SELECT it maps; a parent that Salesforce refuses fails its child, whose error names the parent row and
    // not what Salesforce said of the parent's values (the parent's error text is for monitors).
    admin.batch_execute("GRANT SELECT ON app.account TO app_owner").expect("grant");
    assert_eq!(outcome(&mut owner, map), "ok");
    sf.admin(
        "PUT",
        "/faults",
        json!([{"object": "Account", "field": "Name", "contains": "Hidden", "effect": {"type": "record_error",
                "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Name Hidden Holdings Ltd is on the sanctions list"}}]),
    );
    admin.batch_execute("REVOKE SELECT ON app.account FROM app_owner").expect("revoke after mapping");
    admin.batch_execute("INSERT INTO app.account (id, name) VALUES (70, 'Hidden Holdings Ltd')").expect("parent");
    wait_for(WAIT, "the parent's failure", || {
        (count(
            &mut admin,
            "SELECT count(*) FROM salesforce._trigger_log WHERE table_name = 'account' AND state = 'FAILED'",
        ) == 1)
            .then_some(())
    });
    owner.batch_execute("INSERT INTO app.child (lastname, account_id) VALUES ('Kid', 70)").expect("child");
    let error: String = wait_for(WAIT, "the child's failure", || {
        owner
            .query_one("SELECT _hc_err FROM app.child WHERE _hc_lastop = 'FAILED'", &[])
            .ok()
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
    });
    assert!(error.contains("app.account") && error.contains("70"), "the child's error names the parent row: {error}");
    for leak in ["Hidden", "sanctions"] {
        assert!(!error.contains(leak), "the parent's values reached the child's _hc_err: {error}");
        let message = text(
            &mut admin,
            "SELECT string_agg(sf_message, ' ') FROM salesforce._trigger_log WHERE table_name = 'child'",
        );
        assert!(!message.contains(leak), "the parent's values reached the child's sf_message: {message}");
    }
}

#[test]
fn functions_planted_in_public_never_run_inside_the_repair_functions() {
    let sf = Salesforce::start();
    let cluster = cluster(&sf);
    let mut mallory = cluster.connect("mallory", "postgres");
    // Better matches than pg_catalog's polymorphic functions for the text[] arguments the repair functions take.
    mallory
        .batch_execute(
            "CREATE TABLE public.decoy_calls (who text, what text);
             GRANT INSERT ON public.decoy_calls TO PUBLIC;
             CREATE FUNCTION public.array_length(text[], integer) RETURNS integer LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO public.decoy_calls VALUES (current_user, 'array_length');
                       RETURN pg_catalog.array_length($1, $2); END $$;
             CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO public.decoy_calls VALUES (current_user, 'unnest');
                       RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
             CREATE FUNCTION public.array_cat(text[], text[]) RETURNS text[] LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO public.decoy_calls VALUES (current_user, 'array_cat');
                       RETURN pg_catalog.array_cat($1, $2); END $$;",
        )
        .expect("decoys");
    // The documented repair SQL, as an operator and as a superuser, with the default search_path.
    let repairs = "SELECT salesforce.hc_capture_update_from_row(hstore(c.*), 'contact', ARRAY['lastname']) FROM app.contact c;
                   SELECT salesforce.hc_capture_update_from_row(hstore(c.*), 'contact') FROM app.contact c;
                   SELECT salesforce.hc_capture_insert_from_row(hstore(c.*), 'contact', ARRAY['email']) FROM app.contact c;";
    let mut ops = cluster.connect("ops", "postgres");
    let mut admin = cluster.admin();
    let logged = count(&mut admin, "SELECT count(*) FROM salesforce._trigger_log");
    ops.batch_execute(repairs).expect("repairs by an operator");
    admin.batch_execute(repairs).expect("repairs by a superuser");
    assert_eq!(count(&mut admin, "SELECT count(*) FROM salesforce._trigger_log"), logged + 6, "six entries logged");
    let calls: Vec<(String, String)> = admin
        .query("SELECT who, what FROM public.decoy_calls", &[])
        .expect("decoy calls")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(calls.is_empty(), "decoys in public ran inside the repair functions: {calls:?}");
    // The class: no function pgforce creates in SQL resolves names through anything but pg_catalog.
    let unpinned: Vec<String> = admin
        .query(
            "SELECT p.oid::regprocedure::text || ' ' || coalesce(p.proconfig::text, 'no SET search_path')
               FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_proc p ON p.oid = d.objid
               JOIN pg_catalog.pg_language l ON l.oid = p.prolang
              WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e'
                AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pgforce')
                AND l.lanname IN ('sql', 'plpgsql')
                AND p.proconfig IS DISTINCT FROM ARRAY['search_path=pg_catalog, pg_temp']",
            &[],
        )
        .expect("functions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(unpinned.is_empty(), "functions whose search_path is not pg_catalog, pg_temp: {unpinned:#?}");
}

/// Every object of pgforce's (its members, their constraints, indexes, defaults, rules and triggers) that depends on
/// a function or an operator outside `pg_catalog` that neither pgforce nor hstore owns.
const BOUND_OUTSIDE: &str = "
WITH ext AS (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pgforce'),
members AS (SELECT d.classid, d.objid FROM pg_catalog.pg_depend d, ext
             WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
rels AS (SELECT objid AS oid FROM members WHERE classid = 'pg_catalog.pg_class'::regclass),
owned AS (
    SELECT classid, objid FROM members
    UNION SELECT 'pg_catalog.pg_constraint'::regclass, oid FROM pg_catalog.pg_constraint WHERE conrelid IN (SELECT oid FROM rels)
    UNION SELECT 'pg_catalog.pg_class'::regclass, indexrelid FROM pg_catalog.pg_index WHERE indrelid IN (SELECT oid FROM rels)
    UNION SELECT 'pg_catalog.pg_attrdef'::regclass, oid FROM pg_catalog.pg_attrdef WHERE adrelid IN (SELECT oid FROM rels)
    UNION SELECT 'pg_catalog.pg_rewrite'::regclass, oid FROM pg_catalog.pg_rewrite WHERE ev_class IN (SELECT oid FROM rels)
    UNION SELECT 'pg_catalog.pg_trigger'::regclass, oid FROM pg_catalog.pg_trigger WHERE tgrelid IN (SELECT oid FROM rels)),
extension_objects AS (
    SELECT d.classid, d.objid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
     WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e' AND e.extname IN ('pgforce', 'hstore'))
SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) || ' -> '
       || pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0)
  FROM pg_catalog.pg_depend d JOIN owned o ON o.classid = d.classid AND o.objid = d.objid
 WHERE d.refclassid IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_operator'::regclass)
   AND coalesce((SELECT pronamespace FROM pg_catalog.pg_proc WHERE oid = d.refobjid AND d.refclassid = 'pg_catalog.pg_proc'::regclass),
                (SELECT oprnamespace FROM pg_catalog.pg_operator WHERE oid = d.refobjid AND d.refclassid = 'pg_catalog.pg_operator'::regclass))
       <> 'pg_catalog'::regnamespace
   AND (d.refclassid, d.refobjid) NOT IN (SELECT classid, objid FROM extension_objects)
 ORDER BY 1";

#[test]
fn operators_planted_before_create_extension_are_bound_nowhere() {
    let sf = Salesforce::start();
    let cluster = Cluster::start_with(true, &sf.settings());
    let mut admin = cluster.admin();
    admin
        .batch_execute("CREATE ROLE mallory LOGIN; GRANT CREATE ON SCHEMA public TO mallory; CREATE EXTENSION hstore;")
        .expect("roles");
    // The operators and functions pgforce's script compares its columns and literals with, in better-matching
    // signatures than pg_catalog's, as a database owner could plant them before a superuser installs pgforce.
    let mut mallory = cluster.connect("mallory", "postgres");
    // Declared IMMUTABLE, as an attacker would, so that they can be bound into index predicates too; each calls a
    // volatile recorder.
    let mut decoys = String::from(
        "CREATE TABLE public.decoy_calls (who text, what text);
         GRANT INSERT ON public.decoy_calls TO PUBLIC;
         CREATE FUNCTION public.decoy_note(what text) RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.decoy_calls VALUES (current_user, what); RETURN true; END $$;
         CREATE FUNCTION public.nextval(text) RETURNS bigint LANGUAGE plpgsql AS $$
             BEGIN PERFORM public.decoy_note('nextval'); RETURN pg_catalog.nextval($1::regclass); END $$;",
    );
    for (name, op) in [("eq", "="), ("ne", "<>"), ("lt", "<"), ("gt", ">")] {
        for (left, right) in [
            ("varchar", "varchar"),
            ("varchar", "text"),
            ("text", "varchar"),
            ("regclass", "oid"),
            ("regclass", "regclass"),
        ] {
            let f = format!("decoy_{name}_{left}_{right}");
            decoys.push_str(&format!(
                "CREATE FUNCTION public.{f}({left}, {right}) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
                     SELECT public.decoy_note('{op}') AND $1::text OPERATOR(pg_catalog.{op}) $2::text $$;
                 CREATE OPERATOR public.{op} (LEFTARG = {left}, RIGHTARG = {right}, FUNCTION = public.{f});"
            ));
        }
    }
    mallory.batch_execute(&decoys).expect("decoys");
    // A superuser installs pgforce as the README says, with the default search_path.
    admin.batch_execute("CREATE EXTENSION pgforce CASCADE").expect("create extension");
    let bound: Vec<String> = admin.query(BOUND_OUTSIDE, &[]).expect("dependencies").iter().map(|r| r.get(0)).collect();
    assert!(bound.is_empty(), "pgforce's objects use operators or functions planted in public: {bound:#?}");
    // And using it calls none of them: capture, delivery, the views.
    admin
        .batch_execute(
            "CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, external_id__c text);
             SELECT salesforce.map_table('public.contact', 'Contact', upsert_field => 'external_id__c');
             INSERT INTO public.contact (lastname, external_id__c) VALUES ('Planted', 'P-1');",
        )
        .expect("map and write");
    wait_for(WAIT, "delivery", || (sf.live("Contact").len() == 1).then_some(()));
    admin
        .batch_execute(
            "SELECT * FROM salesforce.sync_status; SELECT * FROM salesforce.sync_audit;
             SELECT * FROM salesforce.sync_metrics;",
        )
        .expect("views");
    let calls: Vec<(String, String)> = admin
        .query("SELECT who, what FROM public.decoy_calls", &[])
        .expect("decoy calls")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(calls.is_empty(), "planted operators ran: {calls:?}");
}

#[test]
fn monitoring_roles_read_no_secret() {
    let sf = Salesforce::start();
    let cluster = cluster(&sf);
    let mut admin = cluster.admin();
    admin
        .batch_execute("CREATE ROLE exporter LOGIN; GRANT pg_monitor TO exporter; CREATE ROLE reader LOGIN; GRANT pg_read_all_settings TO reader;")
        .expect("monitoring roles");
    let secret = "pgforce-demo-secret";
    for role in ["exporter", "reader", "watcher", "mallory"] {
        let mut c = cluster.connect(role, "postgres");
        for read in [
            "SHOW pgforce.client_secret",
            "SELECT pg_catalog.current_setting('pgforce.client_secret')",
            "SELECT pg_catalog.current_setting('pgforce.client_secret', true)",
            "SELECT pg_catalog.string_agg(pg_catalog.concat_ws(' ', name, setting, reset_val, boot_val), ' ') FROM pg_catalog.pg_settings",
            "SELECT pg_catalog.string_agg(pg_catalog.concat_ws(' ', name, setting), ' ') FROM pg_catalog.pg_file_settings",
            "SELECT pg_catalog.string_agg(pg_catalog.concat_ws(' ', query, backend_type), ' ') FROM pg_catalog.pg_stat_activity",
        ] {
            if let Ok(rows) = c.simple_query(read) {
                let shown: String = rows
                    .iter()
                    .filter_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
                        _ => None,
                    })
                    .collect();
                assert!(!shown.contains(secret), "{role} read the secret with {read}: {shown}");
            }
        }
        let mut all = String::new();
        if let Ok(rows) = c.simple_query("SHOW ALL") {
            for m in rows {
                if let postgres::SimpleQueryMessage::Row(r) = m {
                    all.push_str(r.get(1).unwrap_or_default());
                }
            }
        }
        assert!(!all.contains(secret), "{role} read the secret with SHOW ALL");
    }
    // A superuser still can (and the server log never shows it).
    assert_eq!(text(&mut admin, "SHOW pgforce.client_secret"), secret);
    assert!(!cluster.server_log().contains(secret), "the secret is in the server log");
}
