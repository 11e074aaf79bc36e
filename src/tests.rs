//! The SQL surface, tested inside Postgres. Each test runs in a transaction that is rolled back.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn sql(query: &str) {
        Spi::run(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    }

    fn one<T: FromDatum + IntoDatum>(query: &str) -> Option<T> {
        Spi::get_one::<T>(query).unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    fn text(query: &str) -> String {
        one::<String>(query).unwrap_or_else(|| panic!("{query}: returned NULL"))
    }

    /// Runs `stmt` in a subtransaction; returns its error's SQLSTATE, message and hint (empty when none), or None.
    fn error_parts(stmt: &str) -> Option<(String, String, String)> {
        // Created once per session (by whichever role first needs it); callable by every role after.
        if one::<bool>("SELECT to_regprocedure('pg_temp.error_parts(text)') IS NULL") == Some(true) {
            sql("CREATE FUNCTION pg_temp.error_parts(stmt text) RETURNS text[] LANGUAGE plpgsql AS $f$
                 DECLARE m text; h text;
                 BEGIN EXECUTE stmt; RETURN NULL;
                 EXCEPTION WHEN OTHERS THEN
                     GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, h = PG_EXCEPTION_HINT;
                     RETURN ARRAY[SQLSTATE, m, coalesce(h, '')];
                 END $f$");
        }
        let parts = Spi::get_one_with_args::<Vec<String>>("SELECT pg_temp.error_parts($1)", &[stmt.into()]).unwrap();
        parts.map(|p| (p[0].clone(), p[1].clone(), p[2].clone()))
    }

    /// Runs `stmt` in a subtransaction; returns "ok" or "<SQLSTATE>" plus " +hint" when the error carried a hint.
    fn outcome(stmt: &str) -> String {
        error_parts(stmt).map_or(
            "ok".into(),
            |(state, _, hint)| {
                if hint.is_empty() {
                    state
                } else {
                    format!("{state} +hint")
                }
            },
        )
    }

    /// Runs `stmt` in a subtransaction; returns "<SQLSTATE>: <message> / <hint>" of its error, or "ok".
    fn error_of(stmt: &str) -> String {
        error_parts(stmt).map_or("ok".into(), |(state, message, hint)| format!("{state}: {message} / {hint}"))
    }

    fn contact_table() {
        sql("CREATE TABLE salesforce.contact (
                 id serial PRIMARY KEY, sfid varchar(18), firstname text, lastname text, email text,
                 external_id__c text, account__r__external_id__c text, _hc_lastop varchar(32), _hc_err text)");
        sql("SELECT salesforce.map_table('salesforce.contact', 'Contact', upsert_field => 'external_id__c')");
    }

    /// Hstore text the way Heroku Connect's PL/pgSQL logger computes it, for the row with this id.
    fn expected_full(table: &str, id: i64) -> String {
        text(&format!("SELECT (hstore(t.*) - ARRAY['_hc_lastop','_hc_err'])::text FROM {table} t WHERE id = {id}"))
    }

    #[pg_test]
    fn trigger_log_has_heroku_connect_columns_in_order() {
        let expected = "id,txid,created_at,updated_at,processed_at,processed_tx,state,action,table_name,record_id,\
                        sfid,old,values,sf_result,sf_message,attempts,next_attempt_at,relid,in_doubt_since,depth,bulk_job";
        for table in ["_trigger_log", "_trigger_log_archive"] {
            let got = text(&format!(
                "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
                  WHERE attrelid = 'salesforce.{table}'::regclass AND attnum > 0 AND NOT attisdropped"
            ));
            assert_eq!(got, expected, "{table}");
        }
        assert_eq!(text("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'salesforce._trigger_log'::regclass AND attname = 'state'"), "character varying(8)");
        assert_eq!(one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'hstore')"), Some(true));
        // Only the primary key and the work queue are written by capture for every row (the delete index for deletes
        // only); the FAILED, retry and finished indexes only by the worker.
        let indexes = text("SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY indexrelid::regclass::text) FROM pg_index WHERE indrelid = 'salesforce._trigger_log'::regclass");
        assert_eq!(indexes, "salesforce._trigger_log_idx_bulk_job,salesforce._trigger_log_idx_delete,salesforce._trigger_log_idx_failed,salesforce._trigger_log_idx_finished,salesforce._trigger_log_idx_queue,salesforce._trigger_log_idx_retry,salesforce._trigger_log_pkey");
        assert_eq!(
            text("SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indexrelid = 'salesforce._trigger_log_idx_delete'::regclass"),
            "((action)::text = 'DELETE'::text)"
        );
        // Capture writes only to the primary key and the queue: the other indexes' predicates exclude new rows.
        sql("CREATE TABLE salesforce.idx_probe (id serial PRIMARY KEY, name text)");
        sql("SELECT salesforce.map_table('salesforce.idx_probe', 'Account')");
        sql("INSERT INTO salesforce.idx_probe (name) VALUES ('x')");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'NEW' AND next_attempt_at IS NULL"),
            Some(1)
        );
    }

    /// The quoted words of an SQL expression, e.g. the states in `state IN ('NEW', 'PENDING')`.
    fn quoted_words(expr: &str) -> std::collections::BTreeSet<String> {
        expr.split('\'').skip(1).step_by(2).map(str::to_string).collect()
    }

    #[pg_test]
    fn the_state_vocabulary_matches_the_schema() {
        use pgforce_core::log::{Action, LogState};
        let names = |states: &[LogState]| {
            states.iter().map(|s| s.as_str().to_string()).collect::<std::collections::BTreeSet<_>>()
        };
        let predicate = |index: &str| {
            text(&format!(
                "SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indexrelid = 'salesforce.{index}'::regclass"
            ))
        };
        let check = |constraint: &str| {
            text(&format!("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = '{constraint}'"))
        };
        assert_eq!(
            quoted_words(&predicate("_trigger_log_idx_finished")),
            names(&LogState::FINISHED),
            "what the archiver moves"
        );
        assert_eq!(
            quoted_words(&predicate("_trigger_log_idx_queue")),
            names(&LogState::QUEUED),
            "what the worker claims"
        );
        assert_eq!(quoted_words(&check("_trigger_log_state_check")), names(&LogState::ALL));
        let actions: std::collections::BTreeSet<String> =
            [Action::Insert, Action::Update, Action::Delete].iter().map(|a| a.as_str().to_string()).collect();
        assert_eq!(quoted_words(&check("_trigger_log_action_check")), actions);
    }

    #[pg_test]
    fn trigger_log_rejects_unknown_states() {
        assert_eq!(
            outcome("INSERT INTO salesforce._trigger_log (state, action, table_name) VALUES ('BOGUS', 'INSERT', 'x')"),
            "23514"
        );
        assert_eq!(
            outcome("INSERT INTO salesforce._trigger_log (state, action, table_name) VALUES ('NEW', 'MERGE', 'x')"),
            "23514"
        );
    }

    #[pg_test]
    fn map_table_adds_missing_system_columns_and_registers() {
        sql("CREATE TABLE public.lead (name text, company text)");
        sql("INSERT INTO public.lead VALUES ('Ann', 'Acme')");
        sql("SELECT salesforce.map_table('public.lead', 'Lead', 'read_write', NULL, ARRAY['name','company'])");
        let columns = text("SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod), ',' ORDER BY attnum)
                              FROM pg_attribute WHERE attrelid = 'public.lead'::regclass AND attnum > 0 AND NOT attisdropped");
        // read_write reads too: Heroku Connect's system columns of a reading mapping come with it.
        assert_eq!(
            columns,
            "name:text,company:text,id:bigint,sfid:character varying(18),_hc_lastop:character varying(32),_hc_err:text,\
             systemmodstamp:timestamp without time zone,isdeleted:boolean,createddate:timestamp without time zone"
        );
        assert_eq!(
            one::<bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = 'public.lead'::regclass AND indisprimary)"
            ),
            Some(true)
        );
        assert_eq!(one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'hcu_idx_lead_sfid' AND indexdef LIKE 'CREATE UNIQUE INDEX%')"), Some(true));
        // The existing row got an id and was never sent, so it is not PENDING.
        assert_eq!(one::<i64>("SELECT id FROM public.lead"), Some(1));
        assert_eq!(one::<String>("SELECT _hc_lastop FROM public.lead"), None);
        assert_eq!(text("SELECT sobject || ' ' || access || ' ' || fields::text FROM salesforce._mapping WHERE table_name = 'lead'"), "Lead read_write {name,company}");
        assert_eq!(
            text("SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'public.lead'::regclass"),
            "pgforce_capture_delete,pgforce_capture_insert,pgforce_capture_update,pgforce_status"
        );
    }

    #[pg_test]
    fn map_table_default_fields_skip_system_columns_and_include_upsert_field() {
        contact_table();
        assert_eq!(
            text("SELECT fields::text FROM salesforce._mapping WHERE table_name = 'contact'"),
            "{firstname,lastname,email,external_id__c,account__r__external_id__c}"
        );
        sql("CREATE TABLE public.deal (id bigint PRIMARY KEY, name text, ext__c text)");
        sql("SELECT salesforce.map_table('public.deal', 'Opportunity', fields => ARRAY['name'], upsert_field => 'ext__c')");
        assert_eq!(
            text("SELECT fields::text || ' ' || upsert_field FROM salesforce._mapping WHERE table_name = 'deal'"),
            "{name,ext__c} ext__c"
        );
    }

    #[pg_test]
    fn map_table_refuses_what_cannot_be_mapped() {
        sql("CREATE TABLE public.good (id integer PRIMARY KEY, name text)");
        sql("CREATE TEMP TABLE tmp_t (id integer PRIMARY KEY, name text)");
        sql("CREATE TABLE public.parted (id integer, name text) PARTITION BY RANGE (id)");
        sql("CREATE TABLE public.part1 PARTITION OF public.parted FOR VALUES FROM (0) TO (100)");
        sql("CREATE TABLE public.uuid_id (id uuid PRIMARY KEY, name text)");
        sql("CREATE TABLE public.dup_id (id integer, name text)");
        sql("CREATE TABLE public.bad_sfid (id integer PRIMARY KEY, sfid integer, name text)");
        sql("CREATE VIEW public.a_view AS SELECT 1 AS id, 'x'::text AS name");
        sql("CREATE TABLE public.only_system (id integer PRIMARY KEY, sfid varchar(18))");

        assert_eq!(outcome("SELECT salesforce.map_table('tmp_t', 'Contact')"), "42809 +hint");
        assert_eq!(outcome("SELECT salesforce.map_table('public.part1', 'Contact')"), "42809 +hint");
        assert_eq!(outcome("SELECT salesforce.map_table('public.parted', 'Contact')"), "42809 +hint");
        assert_eq!(outcome("SELECT salesforce.map_table('public.a_view', 'Contact')"), "42809 +hint");
        assert_eq!(outcome("SELECT salesforce.map_table('public.uuid_id', 'Contact')"), "42804 +hint");
        assert_eq!(outcome("SELECT salesforce.map_table('public.dup_id', 'Contact')"), "55000 +hint");
        assert_eq!(outcome("SELECT salesforce.map_table('public.bad_sfid', 'Contact')"), "42804 +hint");
        assert_eq!(outcome("SELECT salesforce.map_table('public.only_system', 'Contact')"), "22023 +hint");
        assert_eq!(outcome("SELECT salesforce.map_table('public.good', 'Contact', 'write')"), "22023 +hint");
        assert_eq!(outcome("SELECT salesforce.map_table('public.good', 'Con tact')"), "22023 +hint");
        assert_eq!(outcome("SELECT salesforce.map_table('public.good', NULL)"), "22004");
        assert_eq!(
            outcome("SELECT salesforce.map_table('public.good', 'Contact', fields => ARRAY['nope'])"),
            "42703 +hint"
        );
        assert_eq!(
            outcome("SELECT salesforce.map_table('public.good', 'Contact', fields => ARRAY['sfid'])"),
            "22023 +hint"
        );
        assert_eq!(
            outcome("SELECT salesforce.map_table('public.good', 'Contact', upsert_field => 'nope')"),
            "42703 +hint"
        );
        assert_eq!(outcome("SELECT salesforce.map_table('public.no_such_table', 'Contact')"), "42P01");
        // A refused call leaves nothing behind.
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.uuid_id'::regclass"), Some(0));
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.dup_id'::regclass AND attname = 'sfid'"
            ),
            Some(0)
        );

        assert_eq!(outcome("SELECT salesforce.map_table('public.good', 'Contact', 'read_only')"), "ok");
        assert_eq!(outcome("SELECT salesforce.map_table('public.good', 'Contact')"), "42710 +hint");
        sql("CREATE SCHEMA other");
        sql("CREATE TABLE other.good (id integer PRIMARY KEY, name text)");
        assert_eq!(outcome("SELECT salesforce.map_table('other.good', 'Contact')"), "42710 +hint");
        assert_eq!(outcome("SELECT salesforce.unmap_table('other.good')"), "42704 +hint");
    }

    #[pg_test]
    fn names_needing_quotes_are_handled() {
        sql(r#"CREATE SCHEMA "My Schema""#);
        sql(r#"CREATE TABLE "My Schema"."Odd ""Name""; drop" ("Full Name" text, "x""y" int)"#);
        sql(r#"SELECT salesforce.map_table('"My Schema"."Odd ""Name""; drop"', 'Thing__c')"#);
        sql(r#"INSERT INTO "My Schema"."Odd ""Name""; drop" ("Full Name", "x""y") VALUES ('a "b"', 7)"#);
        assert_eq!(text("SELECT table_name || ' ' || state FROM salesforce._trigger_log"), r#"Odd "Name"; drop NEW"#);
        assert_eq!(
            text("SELECT values FROM salesforce._trigger_log"),
            text(
                r#"SELECT (hstore(t.*) - ARRAY['_hc_lastop','_hc_err'])::text FROM "My Schema"."Odd ""Name""; drop" t"#
            )
        );
        sql(r#"SELECT salesforce.unmap_table('"My Schema"."Odd ""Name""; drop"')"#);
        assert_eq!(
            one::<i64>(
                r#"SELECT count(*) FROM pg_trigger WHERE tgrelid = '"My Schema"."Odd ""Name""; drop"'::regclass"#
            ),
            Some(0)
        );
    }

    #[pg_test]
    fn insert_logs_the_whole_row() {
        contact_table();
        sql("INSERT INTO salesforce.contact (firstname, lastname, email, _hc_lastop, _hc_err) VALUES ('Ann', 'Lee', 'a@x.io', 'SYNCED', 'boom')");
        let row = text("SELECT concat_ws('|', state, action, table_name, record_id, coalesce(sfid, '-'), coalesce(old, '-'),
                               (txid = txid_current())::text, coalesce(updated_at::text, '-'), (created_at IS NOT NULL)::text)
                          FROM salesforce._trigger_log");
        assert_eq!(row, "NEW|INSERT|contact|1|-|-|true|-|true");
        assert_eq!(text("SELECT values FROM salesforce._trigger_log"), expected_full("salesforce.contact", 1));
        assert!(!text("SELECT values FROM salesforce._trigger_log").contains("_hc_"));
        // The status trigger overrides what the user wrote.
        assert_eq!(text("SELECT _hc_lastop || coalesce(_hc_err, '-') FROM salesforce.contact"), "PENDING-");
    }

    #[pg_test]
    fn update_logs_changed_pairs_and_old_row() {
        contact_table();
        sql("INSERT INTO salesforce.contact (firstname, lastname, email) VALUES ('Ann', 'Lee', 'a@x.io')");
        sql("SET LOCAL xmlbinary = 'hex'");
        sql("UPDATE salesforce.contact SET sfid = '003000000000001AAA'");
        sql("RESET xmlbinary");
        sql("CREATE TEMP TABLE before AS SELECT * FROM salesforce.contact");
        sql("UPDATE salesforce.contact SET lastname = 'Li', email = NULL, firstname = 'Ann'");
        let log = "SELECT * FROM salesforce._trigger_log WHERE action = 'UPDATE'";
        assert_eq!(
            text(&format!("SELECT state || ' ' || sfid || ' ' || record_id FROM ({log}) l")),
            "NEW 003000000000001AAA 1"
        );
        assert_eq!(text(&format!("SELECT values FROM ({log}) l")), r#""email"=>NULL, "lastname"=>"Li""#);
        // Byte for byte what Connect's logger computes: (hstore(NEW) - hstore(old)) - excluded.
        assert_eq!(
            text(&format!("SELECT values FROM ({log}) l")),
            text(&format!("SELECT ((hstore(c.*) - hstore(l.old)) - ARRAY['_hc_lastop','_hc_err'])::text FROM salesforce.contact c, ({log}) l"))
        );
        assert_eq!(
            text(&format!("SELECT old FROM ({log}) l")),
            text("SELECT (hstore(b.*) - ARRAY['_hc_lastop','_hc_err'])::text FROM before b")
        );
    }

    #[pg_test]
    fn no_op_update_and_sfidless_delete_are_ignored() {
        contact_table();
        sql("INSERT INTO salesforce.contact (firstname) VALUES ('Ann'), ('Bob')");
        sql("UPDATE salesforce.contact SET firstname = firstname WHERE firstname = 'Ann'");
        assert_eq!(
            text("SELECT state || '[' || values || ']' FROM salesforce._trigger_log WHERE action = 'UPDATE'"),
            "IGNORE[]"
        );
        sql("DELETE FROM salesforce.contact WHERE firstname = 'Bob'");
        assert_eq!(text("SELECT state || ' ' || coalesce(sfid, '-') || ' ' || (values IS NULL)::text FROM salesforce._trigger_log WHERE action = 'DELETE'"), "IGNORE - true");
        sql("SET LOCAL xmlbinary = 'hex'");
        sql("UPDATE salesforce.contact SET sfid = '003000000000001AAA'");
        sql("RESET xmlbinary");
        sql("DELETE FROM salesforce.contact");
        assert_eq!(
            text("SELECT state || ' ' || sfid || ' ' || record_id FROM salesforce._trigger_log WHERE action = 'DELETE' AND sfid IS NOT NULL"),
            "NEW 003000000000001AAA 1"
        );
    }

    #[pg_test]
    fn read_only_mappings_log_everything_as_readonly() {
        sql("CREATE TABLE public.ro (id serial PRIMARY KEY, name text)");
        sql("SELECT salesforce.map_table('public.ro', 'Account', 'read_only')");
        sql("INSERT INTO public.ro (name) VALUES ('a')");
        sql("UPDATE public.ro SET name = name");
        sql("UPDATE public.ro SET name = 'b'");
        sql("DELETE FROM public.ro");
        assert_eq!(
            text("SELECT string_agg(action || ':' || state, ',' ORDER BY id) FROM salesforce._trigger_log"),
            "INSERT:READONLY,UPDATE:READONLY,UPDATE:READONLY,DELETE:READONLY"
        );
        // The user write still marks the row PENDING, as Connect's status trigger does on read-only mappings.
        sql("INSERT INTO public.ro (name) VALUES ('c')");
        assert_eq!(text("SELECT _hc_lastop FROM public.ro"), "PENDING");
    }

    #[pg_test]
    fn write_only_mappings_capture_as_read_write_ones_do() {
        sql("CREATE TABLE public.wo (id serial PRIMARY KEY, name text, sfid varchar(18))");
        sql("SELECT salesforce.map_table('public.wo', 'Account', 'write_only')");
        sql("INSERT INTO public.wo (name) VALUES ('a')");
        sql("UPDATE public.wo SET name = name");
        // The no-op update and the sfid-less delete are ignored, as for read_write; nothing is READONLY.
        sql("DELETE FROM public.wo");
        assert_eq!(
            text("SELECT string_agg(action || ':' || state, ',' ORDER BY id) FROM salesforce._trigger_log"),
            "INSERT:NEW,UPDATE:IGNORE,DELETE:IGNORE"
        );
        // Its writes are waiting to be sent (or being sent), as a read_write mapping's would be.
        assert!(["write_only SYNCING", "write_only WAITING"]
            .contains(&text("SELECT access || ' ' || write_state FROM salesforce.sync_status").as_str()));
        assert_eq!(one::<String>("SELECT read_state FROM salesforce.sync_status"), None);
        sql("CREATE TABLE public.other (id serial PRIMARY KEY, name text)");
        assert_eq!(
            outcome("SELECT salesforce.map_table('public.other', 'Account', 'write-mostly')").get(..5),
            Some("22023")
        );
    }

    #[pg_test]
    fn sync_engine_writes_are_not_captured_and_keep_their_outcome() {
        contact_table();
        sql("INSERT INTO salesforce.contact (firstname) VALUES ('Ann')");
        sql("SET LOCAL xmlbinary = 'hex'");
        sql("UPDATE salesforce.contact SET sfid = '003000000000001AAA', _hc_lastop = 'INSERTED'");
        assert_eq!(text("SELECT _hc_lastop FROM salesforce.contact"), "INSERTED");
        sql("UPDATE salesforce.contact SET _hc_lastop = 'FAILED', _hc_err = 'bad email'");
        assert_eq!(text("SELECT _hc_lastop || ' ' || _hc_err FROM salesforce.contact"), "FAILED bad email");
        // Without an explicit new outcome, a sync-engine write means the row is in sync.
        sql("UPDATE salesforce.contact SET email = 'x@y.z'");
        assert_eq!(text("SELECT _hc_lastop || ' ' || coalesce(_hc_err, '-') FROM salesforce.contact"), "SYNCED -");
        sql("DELETE FROM salesforce.contact");
        sql("RESET xmlbinary");
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce._trigger_log"), Some(1));
        sql("INSERT INTO salesforce.contact (firstname) VALUES ('Bob')");
        sql("TRUNCATE salesforce.contact");
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce._trigger_log"), Some(2));
    }

    #[pg_test]
    fn awkward_values_render_exactly_like_hstore() {
        sql("SET LOCAL timezone = 'America/New_York'");
        sql("SET LOCAL extra_float_digits = 3");
        sql("CREATE TYPE public.mood AS ENUM ('happy', 'sad \"really\"')");
        sql(r#"CREATE TABLE public.awkward (
                 id bigserial PRIMARY KEY, sfid varchar(18), t text, v varchar(10), c char(4), n numeric, f float8, r real,
                 b boolean, ts timestamp, tz timestamptz, d date, iv interval, j jsonb, arr text[], iarr int[],
                 by bytea, u uuid, m public.mood, "key with ""quotes"" and \ slash" text, "ünï" text, "NULL" text)"#);
        sql("SELECT salesforce.map_table('public.awkward', 'Thing__c')");
        sql(
            r#"INSERT INTO public.awkward (t, v, c, n, f, r, b, ts, tz, d, iv, j, arr, iarr, by, u, m, "key with ""quotes"" and \ slash", "ünï", "NULL")
               VALUES ('he said "hi" \ and left
    then ''quoted'' => NULL, x', 'NULL', 'ab', 12345.6789000, 0.1, -0.0, true, '2024-02-29 23:59:59.123456',
                       '2024-03-10 02:30:00+00', '0001-01-01 BC', '1 year 2 days 03:04:05', '{"a": [1, "\"x\""], "b": null}',
                       ARRAY['a b', NULL, 'c"d', 'e\f', '', 'NULL'], ARRAY[1, NULL, 3], '\x00ff5c22', '6f1e0a3c-2d5b-4d4e-9a0b-1c2d3e4f5a6b',
                       'sad "really"', 'back\\slash "and" quote', '日本語 ☃ 🎉', 'x'),
                      (NULL, '', NULL, 'NaN', 'Infinity', 1e-38, false, 'infinity', '-infinity', 'epoch', '-1 mon', 'null', '{}', '{}', '', NULL, NULL, NULL, NULL, NULL)"#,
        );
        for id in [1, 2] {
            assert_eq!(
                text(&format!(
                    "SELECT values FROM salesforce._trigger_log WHERE record_id = {id} AND action = 'INSERT'"
                )),
                expected_full("public.awkward", id),
                "row {id}"
            );
        }
        sql("CREATE TEMP TABLE before AS SELECT * FROM public.awkward");
        sql(
            r#"UPDATE public.awkward SET t = t || '\', n = n * 1.0, f = f, arr = arr || ARRAY['"'], "ünï" = NULL, j = '{"b": null, "a": [1, "\"x\""]}'"#,
        );
        for id in [1, 2] {
            let log = format!("SELECT * FROM salesforce._trigger_log WHERE record_id = {id} AND action = 'UPDATE'");
            assert_eq!(
                text(&format!("SELECT values FROM ({log}) l")),
                text(&format!("SELECT ((hstore(a.*) - hstore(l.old)) - ARRAY['_hc_lastop','_hc_err'])::text FROM public.awkward a, ({log}) l WHERE a.id = {id}")),
                "update values of row {id}"
            );
            assert_eq!(
                text(&format!("SELECT old FROM ({log}) l")),
                text(&format!(
                    "SELECT (hstore(b.*) - ARRAY['_hc_lastop','_hc_err'])::text FROM before b WHERE id = {id}"
                )),
                "update old of row {id}"
            );
        }
        // numeric 12345.6789000 * 1.0 changes its text (scale), so it is logged; an equal jsonb is not.
        assert!(text("SELECT values FROM salesforce._trigger_log WHERE record_id = 1 AND action = 'UPDATE'")
            .contains(r#""n"=>"12345.67890000""#));
        assert!(!text("SELECT values FROM salesforce._trigger_log WHERE record_id = 1 AND action = 'UPDATE'")
            .contains(r#""j"=>"#));
        sql("CREATE TEMP TABLE gone AS SELECT * FROM public.awkward");
        sql("DELETE FROM public.awkward");
        for id in [1, 2] {
            assert_eq!(
                text(&format!("SELECT old FROM salesforce._trigger_log WHERE record_id = {id} AND action = 'DELETE'")),
                text(&format!(
                    "SELECT (hstore(g.*) - ARRAY['_hc_lastop','_hc_err'])::text FROM gone g WHERE id = {id}"
                )),
                "delete old of row {id}"
            );
        }
    }

    #[pg_test]
    fn large_statements_log_every_row_in_order() {
        contact_table();
        sql("INSERT INTO salesforce.contact (firstname, email) SELECT 'n' || g, g || '@x.io' FROM generate_series(1, 20000) g");
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce._trigger_log"), Some(20000));
        // Log ids follow the rows' order, and every row's text matches hstore's.
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM salesforce._trigger_log l JOIN salesforce.contact c ON c.id = l.record_id
                         WHERE l.values = (hstore(c.*) - ARRAY['_hc_lastop','_hc_err'])::text"
            ),
            Some(20000)
        );
        assert_eq!(
            one::<bool>("SELECT bool_and(prev_record < record_id) FROM (SELECT record_id, lag(record_id, 1, 0::bigint) OVER (ORDER BY id) AS prev_record FROM salesforce._trigger_log) s"),
            Some(true)
        );
        sql("UPDATE salesforce.contact SET email = upper(email) WHERE id % 2 = 0");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM salesforce._trigger_log WHERE action = 'UPDATE' AND state = 'NEW'"),
            Some(10000)
        );
    }

    #[pg_test]
    fn application_role_is_captured_without_rights_on_the_log() {
        contact_table();
        sql("CREATE ROLE pgforce_test_app");
        sql("GRANT USAGE ON SCHEMA salesforce TO pgforce_test_app");
        sql("GRANT SELECT, INSERT, UPDATE, DELETE ON salesforce.contact TO pgforce_test_app");
        // By the name Postgres chose (seen once as another name while tests ran concurrently).
        sql("DO $$ BEGIN EXECUTE format('GRANT USAGE ON SEQUENCE %s TO pgforce_test_app',
                                        pg_get_serial_sequence('salesforce.contact', 'id')); END $$");
        sql("SET LOCAL ROLE pgforce_test_app");
        sql("INSERT INTO salesforce.contact (firstname) VALUES ('App')");
        assert_eq!(outcome("SELECT count(*) FROM salesforce._trigger_log"), "42501");
        assert_eq!(outcome("UPDATE salesforce._trigger_log SET state = 'NEW'"), "42501");
        assert_eq!(
            outcome("SELECT salesforce.hc_capture_insert_from_row(hstore(c.*), 'contact') FROM salesforce.contact c"),
            "42501"
        );
        sql("RESET ROLE");
        assert_eq!(text("SELECT state || ' ' || action FROM salesforce._trigger_log"), "NEW INSERT");
    }

    #[pg_test]
    fn repair_functions_follow_heroku_connect() {
        contact_table();
        sql("INSERT INTO salesforce.contact (firstname, lastname, external_id__c, account__r__external_id__c) VALUES ('Ann', 'Lee', 'E1', 'A1')");
        sql("SET LOCAL xmlbinary = 'hex'");
        sql("UPDATE salesforce.contact SET sfid = '003000000000001AAA'");
        sql("RESET xmlbinary");
        sql("DELETE FROM salesforce._trigger_log");

        // NULL id: nothing is logged.
        assert_eq!(one::<i64>("SELECT salesforce.hc_capture_insert_from_row(hstore(c.*) - 'id'::text, 'contact') FROM salesforce.contact c"), None);
        assert_eq!(one::<i64>("SELECT salesforce.hc_capture_update_from_row(hstore(c.*) - 'id'::text, 'contact') FROM salesforce.contact c"), None);

        // INSERT: id and sfid cannot be excluded; the status columns never appear.
        let id = one::<i64>("SELECT salesforce.hc_capture_insert_from_row(hstore(c.*), 'contact', ARRAY['id', 'sfid', 'account__r__external_id__c']) FROM salesforce.contact c").unwrap();
        assert_eq!(one::<i64>("SELECT max(id) FROM salesforce._trigger_log"), Some(id));
        assert_eq!(
            text(&format!("SELECT concat_ws('|', action, state, record_id, coalesce(sfid, '-'), coalesce(old, '-'), (updated_at IS NOT NULL)::text, (txid = txid_current())::text) FROM salesforce._trigger_log WHERE id = {id}")),
            "INSERT|NEW|1|-|-|true|true"
        );
        assert_eq!(
            text(&format!("SELECT values FROM salesforce._trigger_log WHERE id = {id}")),
            text("SELECT (hstore(c.*) - ARRAY['account__r__external_id__c', '_hc_lastop', '_hc_err'])::text FROM salesforce.contact c")
        );

        // UPDATE with an empty list: every column, id and sfid included.
        let id = one::<i64>(
            "SELECT salesforce.hc_capture_update_from_row(hstore(c.*), 'contact') FROM salesforce.contact c",
        )
        .unwrap();
        assert_eq!(
            text(&format!("SELECT values FROM salesforce._trigger_log WHERE id = {id}")),
            expected_full("salesforce.contact", 1)
        );
        assert_eq!(text(&format!("SELECT action || ' ' || sfid || ' ' || (old IS NULL)::text FROM salesforce._trigger_log WHERE id = {id}")), "UPDATE 003000000000001AAA true");
        // UPDATE with a list: only those columns (not even id or sfid).
        let id = one::<i64>("SELECT salesforce.hc_capture_update_from_row(hstore(c.*), 'contact', ARRAY['account__r__external_id__c', '_hc_err']) FROM salesforce.contact c").unwrap();
        assert_eq!(
            text(&format!("SELECT values FROM salesforce._trigger_log WHERE id = {id}")),
            r#""account__r__external_id__c"=>"A1""#
        );

        assert_eq!(
            outcome("SELECT salesforce.hc_capture_insert_from_row(hstore(c.*), 'nosuch') FROM salesforce.contact c"),
            "42P01 +hint"
        );
        // The table with its schema, as the other functions take it, logs under the bare name.
        let id = one::<i64>(
            "SELECT salesforce.hc_capture_update_from_row(hstore(c.*), 'salesforce.contact') FROM salesforce.contact c",
        )
        .unwrap();
        assert_eq!(text(&format!("SELECT table_name FROM salesforce._trigger_log WHERE id = {id}")), "contact");
    }

    #[pg_test]
    fn heroku_connect_documented_sql_runs_verbatim() {
        // Tables as Heroku Connect creates them, mapped by pgforce.
        sql("CREATE TABLE salesforce.account (id serial PRIMARY KEY, sfid varchar(18), name varchar(255), parent__external_id__c varchar(255), _hc_lastop varchar(32), _hc_err text)");
        contact_table();
        sql("SELECT salesforce.map_table('salesforce.account', 'Account')");
        sql("INSERT INTO salesforce.account (id, name, parent__external_id__c) VALUES (1234, 'A very long name', 'P-1')");
        sql("INSERT INTO salesforce.contact (firstname) VALUES ('Ann')");
        sql("UPDATE salesforce._trigger_log SET state = 'FAILED', sf_message = 'STRING_TOO_LONG' WHERE table_name = 'contact'");
        sql("INSERT INTO salesforce._trigger_log_archive SELECT * FROM salesforce._trigger_log WHERE table_name = 'account'");
        sql("UPDATE salesforce._trigger_log_archive SET state = 'NEW'");

        // The statements of "Heroku Connect Write Errors" (shared/seeds/000_ecc54107a5bd48ef.txt), unchanged.
        let statements = include_str!("../tests/sql/heroku_connect_write_errors.sql");
        let mut results = Vec::new();
        let mut current = String::new();
        for line in statements.lines() {
            current.push_str(line);
            current.push('\n');
            // A statement ends at a ';' that closes the line or precedes a trailing comment.
            let code = line.split(" --").next().unwrap_or_default().trim_end();
            if code.ends_with(';') && !line.starts_with("--") {
                results.push(outcome(current.trim()));
                current.clear();
            }
        }
        assert_eq!(results, vec!["ok"; 10]);

        // Their effects: the failed contact was reset to NEW, the archived account row copied back and marked REQUEUED,
        // and the repair functions appended fresh entries.
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'FAILED'"), Some(0));
        assert_eq!(text("SELECT state FROM salesforce._trigger_log WHERE table_name = 'contact'"), "NEW");
        assert_eq!(text("SELECT string_agg(state, ',') FROM salesforce._trigger_log_archive"), "REQUEUED");
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM salesforce._trigger_log WHERE table_name = 'account' AND action = 'INSERT'"
            ),
            Some(4)
        );
        assert_eq!(text("SELECT values FROM salesforce._trigger_log WHERE table_name = 'account' AND action = 'UPDATE' AND state = 'NEW' ORDER BY id DESC LIMIT 1"),
                   r#""parent__external_id__c"=>"P-1""#);
    }

    #[pg_test]
    fn unmap_stops_capture_and_dropping_a_table_forgets_it() {
        contact_table();
        sql("SELECT salesforce.unmap_table('salesforce.contact')");
        sql("INSERT INTO salesforce.contact (firstname) VALUES ('Ann')");
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce._trigger_log"), Some(0));
        assert_eq!(outcome("SELECT salesforce.unmap_table('salesforce.contact')"), "42704 +hint");
        sql("SELECT salesforce.map_table('salesforce.contact', 'Contact')");
        sql("DROP TABLE salesforce.contact");
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce._mapping"), Some(0));
    }

    #[pg_test]
    fn preload_is_reported() {
        // The test cluster preloads pgforce (see pg_test::postgresql_conf_options).
        assert_eq!(one::<bool>("SELECT salesforce._is_preloaded()"), Some(true));
    }

    #[pg_test]
    fn pause_and_resume_per_mapping_or_all() {
        contact_table();
        sql("CREATE TABLE salesforce.lead (id serial PRIMARY KEY, lastname text)");
        sql("SELECT salesforce.map_table('salesforce.lead', 'Lead', paused => true)");
        let paused = |t: &str| {
            one::<bool>(&format!(
                "SELECT paused_since IS NOT NULL FROM salesforce.sync_status WHERE table_name = '{t}'"
            ))
        };
        assert_eq!((paused("contact"), paused("lead")), (Some(false), Some(true)), "created paused");
        assert_eq!(text("SELECT salesforce.pause('salesforce.contact')"), "paused: salesforce.contact");
        assert_eq!(text("SELECT salesforce.pause()"), "nothing to pause: already paused");
        assert_eq!(text("SELECT salesforce.resume('salesforce.lead')"), "resumed: salesforce.lead");
        assert_eq!((paused("contact"), paused("lead")), (Some(true), Some(false)));
        assert!(text("SELECT salesforce.resume()").starts_with("resumed: salesforce.contact"));
        assert_eq!((paused("contact"), paused("lead")), (Some(false), Some(false)));
        assert_eq!(text("SELECT salesforce.resume('salesforce.lead')"), "no mapping was paused");
        // Not a mapped table: the SQLSTATE of an unknown object, with a hint; not a table at all: regclass says so.
        sql("CREATE TABLE salesforce.unmapped (id int PRIMARY KEY)");
        assert_eq!(outcome("SELECT salesforce.pause('salesforce.unmapped')"), "42704 +hint");
        assert_eq!(outcome("SELECT salesforce.resume('salesforce.unmapped')"), "42704 +hint");
        assert_eq!(outcome("SELECT salesforce.pause('salesforce.no_such_table')"), "42P01 +hint");
        assert_eq!(outcome("SELECT salesforce.pause('salesforce.no_such_table'::regclass)"), "42P01");
        // Capture goes on while paused.
        sql("SELECT salesforce.pause()");
        sql("INSERT INTO salesforce.lead (lastname) VALUES ('captured')");
        assert_eq!(one::<i64>("SELECT pending_writes FROM salesforce.sync_status WHERE table_name = 'lead'"), Some(1));
    }

    #[pg_test]
    fn every_function_takes_a_mapped_table_by_its_bare_name() {
        contact_table();
        // The application's search_path does not name the schema, as with Heroku Connect's salesforce schema.
        sql("SET LOCAL search_path = public");
        assert_eq!(text("SELECT salesforce.pause('contact')"), "paused: salesforce.contact");
        assert_eq!(text("SELECT salesforce.resume('salesforce.contact')"), "resumed: salesforce.contact");
        assert_eq!(text("SELECT salesforce.pause('\"contact\"')"), "paused: salesforce.contact");
        assert_eq!(one::<i64>("SELECT salesforce.retry_failed('contact')"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce.preview('contact')"), Some(0));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM salesforce.rollback(now() - interval '1 hour', tbl => 'contact')"),
            Some(0)
        );
        sql("SELECT salesforce.alter_mapping('contact', upsert_field => '')");
        sql("SELECT salesforce.unmap_table('contact')");
        sql("SELECT salesforce.map_table('salesforce.contact', 'Contact')");
        // A table of the search_path that is not mapped does not hide the mapped one of that name.
        sql("CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text)");
        sql("SET LOCAL search_path = public, salesforce");
        assert_eq!(text("SELECT salesforce.resume('contact')"), "no mapping was paused");
        assert_eq!(outcome("SELECT salesforce.pause('public.contact')"), "42704 +hint");
        // Unknown names: 42P01 with the mapped tables as the hint; a name that is not a name: its syntax error.
        assert_eq!(outcome("SELECT salesforce.pause('nothing_here')"), "42P01 +hint");
        let said = error_of("SELECT salesforce.pause('nothing_here')");
        assert!(said.contains("The mapped tables: salesforce.contact."), "{said}");
        assert_eq!(outcome("SELECT salesforce.pause('a.b.c.d')").get(..2), Some("42"));
        // The regclass form stays, and NULL still means every mapping.
        assert_eq!(text("SELECT salesforce.pause(NULL)"), "paused: salesforce.contact");
        assert_eq!(text("SELECT salesforce.resume('salesforce.contact'::regclass)"), "resumed: salesforce.contact");
    }

    #[pg_test]
    fn permission_denied_names_the_role_and_the_grant() {
        contact_table();
        sql("CREATE ROLE pgforce_test_clerk");
        sql("SET LOCAL ROLE pgforce_test_clerk");
        let pause = error_of("SELECT salesforce.pause('contact')");
        assert!(
            pause.contains("pgforce_test_clerk") && pause.contains("GRANT pgforce_operator TO pgforce_test_clerk"),
            "{pause}"
        );
        let preview = error_of("SELECT salesforce.preview('contact')");
        assert!(preview.contains("GRANT pgforce_monitor TO pgforce_test_clerk"), "{preview}");
        let alter = error_of("SELECT salesforce.alter_mapping('contact', mode => 'read_only')");
        assert!(
            alter.contains("GRANT EXECUTE ON FUNCTION salesforce.alter_mapping")
                && alter.contains("TO pgforce_test_clerk"),
            "{alter}"
        );
        // Granted, the same call goes through.
        sql("RESET ROLE");
        sql("GRANT pgforce_operator TO pgforce_test_clerk");
        sql("SET LOCAL ROLE pgforce_test_clerk");
        assert_eq!(text("SELECT salesforce.pause('contact')"), "paused: salesforce.contact");
    }

    #[pg_test]
    fn alter_mapping_changes_a_mapping_and_keeps_its_pause_and_queue() {
        contact_table();
        sql("SELECT salesforce.pause('contact')");
        sql(
            "INSERT INTO salesforce.contact (lastname, email, external_id__c) VALUES ('Queued', 'q@example.com', 'x1')",
        );
        let paused_before = text("SELECT paused_at::text FROM salesforce._mapping WHERE table_name = 'contact'");
        let created_before = text("SELECT created_at::text FROM salesforce._mapping WHERE table_name = 'contact'");
        sql("SELECT salesforce.alter_mapping('contact', fields => ARRAY['lastname', 'email'])");
        assert_eq!(
            text("SELECT fields::text FROM salesforce._mapping WHERE table_name = 'contact'"),
            "{lastname,email,external_id__c}",
            "the upsert field stays among the fields"
        );
        assert_eq!(text("SELECT paused_at::text FROM salesforce._mapping WHERE table_name = 'contact'"), paused_before);
        assert_eq!(
            text("SELECT created_at::text FROM salesforce._mapping WHERE table_name = 'contact'"),
            created_before
        );
        assert_eq!(
            one::<i64>("SELECT pending_writes FROM salesforce.sync_status WHERE table_name = 'contact'"),
            Some(1)
        );
        // The upsert field goes with '' and stays with NULL.
        sql("SELECT salesforce.alter_mapping('contact', upsert_field => '')");
        assert_eq!(one::<String>("SELECT upsert_field FROM salesforce._mapping WHERE table_name = 'contact'"), None);
        sql("SELECT salesforce.alter_mapping('contact', upsert_field => 'external_id__c')");
        sql("SELECT salesforce.alter_mapping('contact')");
        assert_eq!(
            one::<String>("SELECT upsert_field FROM salesforce._mapping WHERE table_name = 'contact'").as_deref(),
            Some("external_id__c")
        );
        // The mode changes capture at once; the queued change waits, it is not dropped.
        sql("SELECT salesforce.alter_mapping('contact', mode => 'read_only')");
        sql("INSERT INTO salesforce.contact (lastname) VALUES ('Read only now')");
        assert_eq!(
            text("SELECT string_agg(state, ',' ORDER BY id) FROM salesforce._trigger_log WHERE table_name = 'contact'"),
            "NEW,READONLY"
        );
        assert_eq!(text("SELECT paused_at::text FROM salesforce._mapping WHERE table_name = 'contact'"), paused_before);
        // Bad input is refused whole, as map_table refuses it; not mapped: 42704.
        assert_eq!(
            outcome("SELECT salesforce.alter_mapping('contact', fields => ARRAY['no_such_column'])"),
            "42703 +hint"
        );
        assert_eq!(outcome("SELECT salesforce.alter_mapping('contact', mode => 'sideways')"), "22023 +hint");
        sql("CREATE TABLE salesforce.unmapped (id int PRIMARY KEY)");
        assert_eq!(outcome("SELECT salesforce.alter_mapping('salesforce.unmapped')"), "42704 +hint");
        assert_eq!(text("SELECT access FROM salesforce._mapping WHERE table_name = 'contact'"), "read_only");
    }

    #[pg_test]
    fn sync_status_says_how_each_mappings_writes_are() {
        use pgforce_core::mapping::WriteState;
        contact_table();
        let state = || text("SELECT write_state FROM salesforce.sync_status WHERE table_name = 'contact'");
        assert_eq!(state(), WriteState::DataSynced.as_str());
        sql("INSERT INTO salesforce.contact (lastname) VALUES ('Waits')");
        let delivering = one::<bool>(
            "SELECT connection_state IN ('IDLE', 'POLLING_DB_CHANGES') FROM salesforce.sync_status WHERE table_name = 'contact'",
        );
        let waiting = if delivering == Some(true) { WriteState::Syncing } else { WriteState::Waiting };
        assert_eq!(state(), waiting.as_str(), "pending, and whether anything delivers it");
        // The newest open failure decides between a mapping's configuration, its rights and its data.
        let codes = WriteState::UNAUTHORIZED_CODES.iter().chain(WriteState::BAD_CONFIG_CODES.iter());
        for code in codes.chain(["FIELD_CUSTOM_VALIDATION_EXCEPTION", "NOT_SENT"].iter()) {
            sql(&format!(
                "UPDATE salesforce._trigger_log SET state = 'FAILED', sf_message = '{code}: refused' \
                  WHERE id = (SELECT max(id) FROM salesforce._trigger_log)"
            ));
            assert_eq!(state(), WriteState::of_failure(code).as_str(), "{code}");
        }
        sql("SELECT salesforce.pause('contact')");
        assert_eq!(state(), WriteState::Paused.as_str());
        sql("SELECT salesforce.alter_mapping('contact', mode => 'read_only')");
        assert_eq!(state(), WriteState::ReadOnly.as_str());
        // The view says nothing the vocabulary does not know.
        let words = quoted_words(&text(
            "SELECT split_part(split_part(pg_get_viewdef('salesforce.sync_status'::regclass), 'AS worker_cycles', 2), 'AS write_state', 1)",
        ));
        let known: std::collections::BTreeSet<String> = WriteState::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .chain(
                WriteState::UNAUTHORIZED_CODES.iter().chain(WriteState::BAD_CONFIG_CODES.iter()).map(|c| c.to_string()),
            )
            .chain(["read_only", "IDLE", "POLLING_DB_CHANGES"].iter().map(|c| c.to_string()))
            .collect();
        assert!(words.contains("BAD_CONFIG") && words.contains("DATA_SYNCED"), "the CASE was found: {words:?}");
        let unknown: Vec<&String> = words.iter().filter(|w| !known.contains(*w)).collect();
        assert!(unknown.is_empty(), "write_state words outside the vocabulary: {unknown:?}");
    }

    #[pg_test]
    fn the_audit_speaks_one_vocabulary_and_filters_through_indexes() {
        use pgforce_core::log::AuditStatus;
        for status in AuditStatus::ALL {
            assert_eq!(
                one::<String>(&format!("SELECT salesforce._audit_status_text({})", status.code())).as_deref(),
                Some(status.text())
            );
        }
        assert_eq!(one::<String>("SELECT salesforce._audit_status_text(8)"), None);
        assert_eq!(one::<i32>("SELECT salesforce._audit_status('BOGUS', 'INSERT', NULL)"), None);
        contact_table();
        sql("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('a', '1')");
        sql("UPDATE salesforce.contact SET lastname = 'b'");
        // An update the worker sent as a create (sf_result 7), archived; a failed delete in the live log.
        sql("INSERT INTO salesforce._trigger_log_archive (id, state, action, table_name, record_id, sfid, sf_result, processed_at)
             VALUES (-1, 'SUCCESS', 'UPDATE', 'contact', 1, '003000000000001AAA', 7, now())");
        sql("INSERT INTO salesforce._trigger_log (state, action, table_name, record_id, sf_message)
             VALUES ('FAILED', 'DELETE', 'contact', 1, 'ENTITY_IS_DELETED: entity is deleted')");
        let rows = text(
            "SELECT string_agg(concat_ws(' ', action, state, status_code, status_text, has_error, sobject), '; ' ORDER BY log_id)
               FROM salesforce.sync_audit",
        );
        assert_eq!(
            rows,
            "UPDATE SUCCESS 7 Inserted f Contact; INSERT NEW 9 In Progress f Contact; \
             UPDATE NEW 9 In Progress f Contact; DELETE FAILED 13 Delete Error t Contact"
        );
        // Errors are found through indexes in the log and the archive; a table and a time window in the archive, where
        // the history is (the live log keeps only what pgforce.archive_after has not moved yet).
        sql("CREATE FUNCTION pg_temp.plan(q text) RETURNS SETOF text LANGUAGE plpgsql AS $f$
             DECLARE line text;
             BEGIN FOR line IN EXECUTE 'EXPLAIN ' || q LOOP RETURN NEXT line; END LOOP; END $f$");
        sql("SET LOCAL enable_seqscan = off");
        for (filter, indexed) in [
            ("has_error", "Seq Scan on _trigger_log"),
            ("table_name = 'contact'", "Seq Scan on _trigger_log_archive"),
            ("processed_at > now() - interval '1 hour'", "Seq Scan on _trigger_log_archive"),
        ] {
            let plan = text(&format!(
                "SELECT string_agg(p, E'\\n') FROM pg_temp.plan('SELECT * FROM salesforce.sync_audit WHERE {}') p",
                filter.replace('\'', "''")
            ));
            assert!(!plan.contains(indexed), "{filter}:\n{plan}");
        }
        // For monitors only.
        sql("CREATE ROLE pgforce_audit_reader");
        sql("SET LOCAL ROLE pgforce_audit_reader");
        assert_eq!(outcome("SELECT count(*) FROM salesforce.sync_audit"), "42501");
        sql("RESET ROLE");
        sql("GRANT pgforce_monitor TO pgforce_audit_reader");
        sql("SET LOCAL ROLE pgforce_audit_reader");
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce.sync_audit WHERE has_error"), Some(1));
    }

    #[pg_test]
    fn diagnose_reports_incomplete_settings_without_calling_salesforce() {
        // The test cluster has no client id: no login is tried, and the rest is still checked.
        let settings = text("SELECT status || ' ' || detail FROM salesforce.diagnose() WHERE check_name = 'settings'");
        assert!(settings.starts_with("error the client_credentials flow needs pgforce.client_id"), "{settings}");
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce.diagnose() WHERE check_name = 'login'"), Some(0));
        assert_eq!(text("SELECT status FROM salesforce.diagnose() WHERE check_name = 'preloaded'"), "ok");
        assert_eq!(
            text("SELECT detail FROM salesforce.diagnose() WHERE check_name = 'failures'"),
            "no failed changes in the log"
        );
        sql("CREATE ROLE pgforce_diagnose_caller");
        sql("SET LOCAL ROLE pgforce_diagnose_caller");
        assert_eq!(outcome("SELECT * FROM salesforce.diagnose()"), "42501");
        assert_eq!(outcome("SELECT * FROM salesforce._diagnose()"), "42501");
    }

    #[pg_test]
    fn preview_plans_without_claiming_and_checks_its_arguments() {
        contact_table();
        sql("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('a', 'X-1'), ('b', 'X-2')");
        sql("UPDATE salesforce.contact SET lastname = 'b2' WHERE external_id__c = 'X-2'");
        let calls = text(
            "SELECT string_agg(concat_ws(' ', request, wave, method, path, record->>'lastname', array_length(log_ids, 1)), '; ' ORDER BY request, record->>'lastname')
               FROM salesforce.preview()",
        );
        assert_eq!(
            calls,
            "1 1 PATCH /services/data/v62.0/composite/sobjects/Contact/external_id__c a 1; \
             1 1 PATCH /services/data/v62.0/composite/sobjects/Contact/external_id__c b2 2"
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce.preview(max_records => 1)"), Some(1));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'NEW'"),
            Some(3),
            "nothing claimed"
        );
        assert_eq!(outcome("SELECT * FROM salesforce.preview(max_records => 0)"), "22023 +hint");
        sql("CREATE TABLE salesforce.unmapped (id int PRIMARY KEY)");
        assert_eq!(outcome("SELECT * FROM salesforce.preview('salesforce.unmapped')"), "42704 +hint");
        sql("CREATE ROLE pgforce_preview_caller");
        sql("SET LOCAL ROLE pgforce_preview_caller");
        assert_eq!(outcome("SELECT * FROM salesforce.preview()"), "42501");
        sql("RESET ROLE");
        sql("GRANT pgforce_monitor TO pgforce_preview_caller");
        sql("SET LOCAL ROLE pgforce_preview_caller");
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce.preview()"), Some(2));
    }

    #[pg_test]
    fn sync_metrics_shows_each_mapping_to_monitors() {
        contact_table();
        let row = text(
            "SELECT concat_ws(' ', table_name, sent, succeeded, failed, retried, requests, bytes, api_calls,
                              latency_ms_p50_1m IS NULL, latency_ms_p99_1h IS NULL)
               FROM salesforce.sync_metrics",
        );
        assert_eq!(row, "contact 0 0 0 0 0 0 0 t t");
        sql("CREATE ROLE pgforce_metrics_reader");
        sql("SET LOCAL ROLE pgforce_metrics_reader");
        assert_eq!(outcome("SELECT * FROM salesforce.sync_metrics"), "42501");
    }

    #[pg_test]
    fn rollback_checks_its_arguments_and_is_for_operators() {
        contact_table();
        // Nothing delivered since: an empty plan, without calling Salesforce.
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce.rollback(now() - interval '1 day')"), Some(0));
        assert_eq!(outcome("SELECT * FROM salesforce.rollback(NULL)"), "22004 +hint");
        assert_eq!(outcome("SELECT * FROM salesforce.rollback(now(), dry_run => NULL)"), "22004 +hint");
        sql("CREATE TABLE salesforce.unmapped (id int PRIMARY KEY)");
        assert_eq!(outcome("SELECT * FROM salesforce.rollback(now(), 'salesforce.unmapped')"), "42704 +hint");
        sql("CREATE ROLE pgforce_rollback_caller");
        sql("GRANT pgforce_monitor TO pgforce_rollback_caller");
        sql("SET LOCAL ROLE pgforce_rollback_caller");
        assert_eq!(outcome("SELECT * FROM salesforce.rollback(now())"), "42501");
        assert_eq!(outcome("SELECT * FROM salesforce._rollback(now(), NULL, true, false, false)"), "42501");
    }

    #[pg_test]
    fn sync_status_reports_each_mapping() {
        contact_table();
        sql("CREATE TABLE salesforce.lead (id serial PRIMARY KEY, lastname text)");
        sql("SELECT salesforce.map_table('salesforce.lead', 'Lead', 'read_only')");
        sql("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('a', '1'), ('b', '2')");
        sql("UPDATE salesforce._trigger_log SET state = 'FAILED', sf_message = 'REQUIRED_FIELD_MISSING: x' WHERE id = (SELECT min(id) FROM salesforce._trigger_log)");
        let row = text("SELECT concat_ws('|', table_name, sobject, access, pending_writes, errored_writes, oldest_pending_age IS NOT NULL, connection_state)
                          FROM salesforce.sync_status WHERE table_name = 'contact'");
        // The tests' database is not pgforce.database: sync_status says nothing delivers it, not IDLE.
        assert_eq!(row, "contact|Contact|read_write|1|1|t|OTHER_DATABASE");
        assert_eq!(one::<i64>("SELECT pending_writes FROM salesforce.sync_status WHERE table_name = 'lead'"), Some(0));
        // Everyone may read it; the log itself stays private.
        sql("CREATE ROLE pgforce_status_reader");
        sql("SET LOCAL ROLE pgforce_status_reader");
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce.sync_status"), Some(2));
        assert_eq!(outcome("SELECT count(*) FROM salesforce._trigger_log"), "42501");
    }

    #[pg_test]
    fn settings_have_documented_defaults_and_secrets_are_hidden() {
        for (name, value) in [
            ("pgforce.enabled", "on"),
            ("pgforce.login_url", "https://login.salesforce.com"),
            ("pgforce.auth_flow", "client_credentials"),
            ("pgforce.api_version", "62.0"),
            ("pgforce.write_algorithm", "merged"),
            ("pgforce.max_concurrency", "8"),
            ("pgforce.request_timeout", "30s"),
            ("pgforce.batch_size", "4000"),
            ("pgforce.max_request_bytes", "2MB"),
            ("pgforce.max_attempts", "5"),
            ("pgforce.retry_failed_after", "-1"),
            ("pgforce.alert_stalled_after", "15min"),
            ("pgforce.alert_interval", "1min"),
            ("pgforce.max_api_usage", "0.9"),
            ("pgforce.archive_after", "1d"),
            ("pgforce.archive_retention", "31d"),
            ("pgforce.request_history", "10000"),
            ("pgforce.poll_interval", "10s"),
            ("pgforce.lock_timeout", "1s"),
            ("pgforce.statement_timeout", "1min"),
            ("pgforce.allow_insecure_http", "off"),
            ("pgforce.database", "postgres"),
        ] {
            assert_eq!(text(&format!("SELECT current_setting('{name}')")), value, "{name}");
        }
        sql("CREATE ROLE pgforce_snoop");
        sql("SET LOCAL ROLE pgforce_snoop");
        assert_eq!(outcome("SELECT current_setting('pgforce.client_secret')"), "42501");
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_settings WHERE name IN ('pgforce.client_secret', 'pgforce.refresh_token', 'pgforce.jwt_key_file')"), Some(0));
        assert_eq!(outcome("SET pgforce.batch_size = 10"), "55P02");
        // Settings with a fixed set of values are enums: Postgres refuses anything else (tested with ALTER SYSTEM in
        // the integration tests, since SET cannot change them).
        assert_eq!(text("SELECT vartype || ' ' || array_to_string(enumvals, ',') FROM pg_settings WHERE name = 'pgforce.write_algorithm'"), "enum merged,ordered");
        assert_eq!(text("SELECT vartype || ' ' || array_to_string(enumvals, ',') FROM pg_settings WHERE name = 'pgforce.auth_flow'"), "enum client_credentials,jwt_bearer,refresh_token");
        assert_eq!(outcome("SET pgforce.bogus = 1"), "42602");
    }

    /// Claims with the worker's own statement, as the worker would with this request size and concurrency; returns
    /// the claimed log ids.
    fn claim_ids(max_request_bytes: usize, max_concurrency: usize) -> Vec<i64> {
        let mut config = crate::guc::config();
        config.max_request_bytes = max_request_bytes;
        config.max_concurrency = max_concurrency;
        let claimed = Spi::connect_mut(|client| {
            let mut st = crate::worker::sql::Statements::prepare(client, "salesforce").expect("statements");
            crate::worker::write::claim::claim(client, &mut st, &config).expect("claim")
        });
        let mut ids: Vec<i64> = claimed.changes.values().flatten().map(|c| c.log_id).collect();
        ids.sort();
        ids
    }

    #[pg_test]
    fn a_claim_is_bounded_by_bytes_and_takes_at_least_one_row() {
        contact_table();
        // 3 kB of text per row.
        sql("INSERT INTO salesforce.contact (lastname, email)
             SELECT 'n' || g, (SELECT string_agg(md5(g::text || '-' || i::text), '') FROM generate_series(1, 94) i)
               FROM generate_series(1, 30) g");
        // Two requests of 16 kB: the rows that start before 32 kB of stored log text.
        let fit = one::<i64>(
            "SELECT count(*) FROM (SELECT sum(octet_length(\"values\")) OVER (ORDER BY id)
                                           - octet_length(\"values\") AS before
                                      FROM salesforce._trigger_log) s WHERE before < 32768",
        )
        .unwrap();
        // This test's own entries, oldest first (tests run side by side and share the log's id sequence: ids may
        // have gaps).
        let own = one::<Vec<i64>>("SELECT array_agg(id ORDER BY id) FROM salesforce._trigger_log").unwrap();
        let ids = claim_ids(16 * 1024, 2);
        assert!(fit > 1 && fit < 30, "{fit} rows fit");
        assert_eq!(ids.len() as i64, fit, "claimed {ids:?}");
        assert_eq!(ids[..], own[..ids.len()], "oldest first, none skipped");
        let pending = one::<i64>("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'PENDING'").unwrap();
        assert_eq!(pending, ids.len() as i64, "the rest stays NEW");
        // A row larger than the whole budget is still claimed, alone, so it can fail with its own message.
        sql("UPDATE salesforce._trigger_log SET state = 'SUCCESS'");
        sql("INSERT INTO salesforce.contact (lastname, email)
             SELECT 'wide', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i)");
        sql("INSERT INTO salesforce.contact (lastname) VALUES ('after')");
        let wide =
            one::<i64>("SELECT id FROM salesforce._trigger_log WHERE \"values\" LIKE '%\"lastname\"=>\"wide\"%'")
                .unwrap();
        assert_eq!(claim_ids(16 * 1024, 2), vec![wide]);
    }

    /// Rows of `_trigger_log` a statement reads (returned, or filtered out after reading), run with `args`.
    /// Returns them with the plan, to show where they were read.
    fn log_rows_read(statement: &str, types: &str, args: &str) -> (i64, String) {
        let (types, args) =
            if types.is_empty() { (String::new(), String::new()) } else { (format!("({types})"), format!("({args})")) };
        sql(&format!("PREPARE queue_read{types} AS {statement}"));
        let plan = one::<pgrx::Json>(&format!("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE queue_read{args}")).unwrap();
        sql("DEALLOCATE queue_read");
        fn read(node: &serde_json::Value) -> i64 {
            let n = |k: &str| node.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
            let own = if node.get("Relation Name").and_then(|v| v.as_str()) == Some("_trigger_log") {
                ((n("Actual Rows") + n("Rows Removed by Filter") + n("Rows Removed by Index Recheck"))
                    * n("Actual Loops")) as i64
            } else {
                0
            };
            own + node.get("Plans").and_then(|p| p.as_array()).map_or(0, |p| p.iter().map(read).sum())
        }
        (read(&plan.0[0]["Plan"]), serde_json::to_string_pretty(&plan.0[0]["Plan"]).unwrap_or_default())
    }

    #[pg_test]
    fn deciding_what_to_claim_reads_no_entry_of_a_paused_mapping() {
        contact_table();
        sql("CREATE TABLE salesforce.lead (id serial PRIMARY KEY, sfid varchar(18), lastname text, _hc_lastop varchar(32), _hc_err text)");
        sql("SELECT salesforce.map_table('salesforce.lead', 'Lead')");
        sql("SELECT salesforce.pause('salesforce.contact'::regclass)");
        sql("INSERT INTO salesforce.contact (lastname, external_id__c) SELECT 'n' || g, 'x' || g FROM generate_series(1, 5000) g");
        sql("INSERT INTO salesforce.lead (lastname) VALUES ('a'), ('b')");
        sql("ANALYZE salesforce._trigger_log");
        use crate::worker::sql::{due_count_sql, oldest_waiting_sql, queue_sql, QueueRead};
        // The claim, the Bulk decision and the stalled check, each with 5,000 paused entries and 2 due ones. (The
        // Bulk decision counts up to the threshold: while the whole log is about that small the planner reads it
        // all, which costs what a threshold's worth would.)
        for (what, statement, types, args) in [
            ("claim", queue_sql("salesforce", QueueRead::Claim), "int8, int8", "100, 1000000"),
            ("bulk backlog", due_count_sql("salesforce"), "int8", "100"),
            ("oldest waiting", oldest_waiting_sql("salesforce"), "", ""),
        ] {
            let (read, plan) = log_rows_read(&statement, types, args);
            assert!(read <= 10, "{what} read {read} log rows:\n{plan}");
        }
        // A preview of the paused mapping shows its changes; the claim takes the other mapping's only.
        assert_eq!(claim_ids(1 << 20, 4).len(), 2);
        assert_eq!(one::<i64>("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'NEW'"), Some(5000));
    }

    #[pg_test]
    fn queued_entries_of_a_table_no_longer_mapped_end_failed() {
        contact_table();
        sql("CREATE TABLE salesforce.lead (id serial PRIMARY KEY, sfid varchar(18), lastname text, _hc_lastop varchar(32), _hc_err text)");
        sql("SELECT salesforce.map_table('salesforce.lead', 'Lead')");
        sql("INSERT INTO salesforce.contact (lastname, external_id__c) VALUES ('a', 'x1'), ('b', 'x2'), ('c', 'x3')");
        sql("INSERT INTO salesforce.lead (lastname) SELECT 'n' || g FROM generate_series(1, 5000) g");
        let end_unmapped = || {
            Spi::connect_mut(|client| {
                let st = crate::worker::sql::Statements::prepare(client, "salesforce").expect("statements");
                crate::worker::write::archive::end_unmapped(client, &st).expect("end_unmapped")
            })
        };
        assert_eq!(end_unmapped(), 0, "every queued table is mapped");
        sql("SELECT salesforce.unmap_table('salesforce.contact'::regclass)");
        sql("ANALYZE salesforce._trigger_log");
        // The claim reads mapped tables only: the worker's maintenance ends the others' entries, finding the queue's
        // tables one index probe each (not reading the 5,000 entries of the table still mapped).
        let (read, plan) = log_rows_read(&crate::worker::sql::unmapped_queued_sql("salesforce"), "", "");
        assert!(read <= 10, "read {read} log rows:\n{plan}");
        assert_eq!(end_unmapped(), 3);
        assert_eq!(
            text("SELECT string_agg(DISTINCT state || ': ' || coalesce(sf_message, ''), ', ') FROM salesforce._trigger_log WHERE table_name = 'contact'"),
            "FAILED: table is not mapped (salesforce.map_table)"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM salesforce._trigger_log WHERE table_name = 'lead' AND state = 'NEW'"),
            Some(5000)
        );
    }

    #[pg_test]
    fn a_read_only_mapping_gets_its_system_columns_and_starts_with_a_load() {
        use pgforce_core::read::ReadState;
        sql("CREATE TABLE salesforce.account (id serial PRIMARY KEY, name text)");
        sql("SELECT salesforce.map_table('salesforce.account', 'Account', mode => 'read_only')");
        assert_eq!(
            text("SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'salesforce.account'::regclass AND attnum > 2 AND NOT attisdropped"),
            "sfid character varying(18), _hc_lastop character varying(32), _hc_err text, systemmodstamp timestamp without time zone, isdeleted boolean, createddate timestamp without time zone"
        );
        assert_eq!(
            one::<bool>("SELECT to_regclass('salesforce.hc_idx_account_systemmodstamp') IS NOT NULL"),
            Some(true)
        );
        // The vocabulary: the first read is the load; a paused mapping reads nothing.
        assert_eq!(
            text("SELECT read_state FROM salesforce.sync_status WHERE table_name = 'account'"),
            ReadState::ReloadTable.as_str()
        );
        sql("SELECT salesforce.pause('salesforce.account'::regclass)");
        assert_eq!(
            text("SELECT read_state FROM salesforce.sync_status WHERE table_name = 'account'"),
            ReadState::Paused.as_str()
        );
        // A read-only mapping made before reading existed (no read state) starts reading when altered to read_only.
        sql("SELECT salesforce.resume('salesforce.account'::regclass)");
        sql("DELETE FROM salesforce._read_state");
        assert_eq!(one::<String>("SELECT read_state FROM salesforce.sync_status WHERE table_name = 'account'"), None);
        sql("SELECT salesforce.alter_mapping('salesforce.account'::regclass, mode => 'read_only')");
        assert_eq!(
            text("SELECT read_state FROM salesforce.sync_status WHERE table_name = 'account'"),
            ReadState::ReloadTable.as_str()
        );
        // reload(): by bare name, for a mapping that reads; 55000 with the way to make one read otherwise.
        assert!(text("SELECT salesforce.reload('account')").contains("read again"));
        assert_eq!(
            text("SELECT read_state FROM salesforce.sync_status WHERE table_name = 'account'"),
            ReadState::ReloadTable.as_str()
        );
        assert_eq!(one::<bool>("SELECT reloading_since IS NOT NULL FROM salesforce._read_state"), Some(true));
        // on_delete and read_interval: checked, kept with the mapping.
        sql("CREATE TABLE salesforce.lead (id serial PRIMARY KEY, lastname text)");
        assert_eq!(
            outcome(
                "SELECT salesforce.map_table('salesforce.lead', 'Lead', mode => 'read_only', on_delete => 'purge')"
            ),
            "22023 +hint"
        );
        assert_eq!(
            outcome(
                "SELECT salesforce.map_table('salesforce.lead', 'Lead', mode => 'read_only', read_interval => '500ms')"
            ),
            "22023 +hint"
        );
        sql("SELECT salesforce.map_table('salesforce.lead', 'Lead', mode => 'read_only', read_interval => '5s', on_delete => 'flag')");
        assert_eq!(
            text("SELECT read_interval::text || ' ' || on_delete FROM salesforce._mapping WHERE table_name = 'lead'"),
            "00:00:05 flag"
        );
        assert_eq!(one::<bool>("SELECT read_interval IS NULL AND on_delete = 'delete' FROM salesforce._mapping WHERE table_name = 'account'"), Some(true));
        // read_write (the default) reads too; a write_only mapping has no read state.
        contact_table();
        assert_eq!(
            text("SELECT read_state FROM salesforce.sync_status WHERE table_name = 'contact'"),
            ReadState::ReloadTable.as_str()
        );
        sql("CREATE TABLE public.task (id serial PRIMARY KEY, subject text)");
        sql("SELECT salesforce.map_table('public.task', 'Task', mode => 'write_only')");
        assert_eq!(one::<String>("SELECT read_state FROM salesforce.sync_status WHERE table_name = 'task'"), None);
        assert_eq!(outcome("SELECT salesforce.reload('task')"), "55000 +hint");
    }
}
