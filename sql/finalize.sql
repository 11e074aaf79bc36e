-- pgforce objects that need the generated functions, created last.

-- Capture runs as the extension's owner, so an application role with rights on its own table only is captured
-- without being able to touch the trigger log itself.
ALTER FUNCTION @extschema@._capture_changes() SECURITY DEFINER;

-- The mapping registry holds no secrets: anyone may read which tables are synced.
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;
GRANT SELECT ON @extschema@._mapping TO PUBLIC;

-- API: Private. Repair functions refuse table names nothing would ever deliver.
CREATE FUNCTION @extschema@._require_mapped(tbl varchar) RETURNS void
LANGUAGE plpgsql STABLE
AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM @extschema@._mapping WHERE table_name = tbl) THEN
        RAISE EXCEPTION 'table "%" is not mapped to Salesforce', tbl
            USING ERRCODE = 'undefined_table',
                  HINT = 'Pass the table name without its schema, as _trigger_log.table_name shows it; salesforce.map_table() maps a table.';
    END IF;
END
$fn$;

-- API: Public. Heroku Connect's repair function (VERSION 1 semantics): record the row as a fresh INSERT at the end
-- of the queue. Returns the new trigger log id, or NULL when the row has no id. `id` and `sfid` can never be
-- excluded.
CREATE FUNCTION @extschema@.hc_capture_insert_from_row(
    source_row hstore,
    table_name varchar,
    excluded_cols text[] DEFAULT ARRAY[]::text[]
) RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
#variable_conflict use_variable
DECLARE
    exclusions text[];
    new_id bigint;
BEGIN
    IF source_row -> 'id' IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM @extschema@._require_mapped(table_name);
    exclusions := ARRAY(SELECT c FROM unnest(excluded_cols) AS c WHERE c NOT IN ('id', 'sfid'))
                  || ARRAY['_hc_lastop', '_hc_err'];
    INSERT INTO @extschema@._trigger_log (action, table_name, txid, created_at, state, record_id, "values")
    VALUES ('INSERT', table_name, txid_current(), clock_timestamp(), 'NEW', (source_row -> 'id')::bigint,
            (source_row - exclusions)::text)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$fn$;

-- API: Public. Heroku Connect's repair function for UPDATEs: record the listed columns (all of them when the list
-- is empty, Connect's own rule) as a fresh UPDATE. Returns the new trigger log id, or NULL when the row has no id.
CREATE FUNCTION @extschema@.hc_capture_update_from_row(
    source_row hstore,
    table_name varchar,
    columns_to_include text[] DEFAULT ARRAY[]::text[]
) RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
#variable_conflict use_variable
DECLARE
    exclusions text[] := ARRAY[]::text[];
    new_id bigint;
BEGIN
    IF source_row -> 'id' IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM @extschema@._require_mapped(table_name);
    -- array_length of an empty array is NULL, so an empty list includes every column.
    IF array_length(columns_to_include, 1) <> 0 THEN
        exclusions := ARRAY(SELECT k FROM unnest(akeys(source_row)) AS k WHERE k <> ALL (columns_to_include));
    END IF;
    INSERT INTO @extschema@._trigger_log (action, table_name, txid, created_at, state, record_id, sfid, "values")
    VALUES ('UPDATE', table_name, txid_current(), clock_timestamp(), 'NEW', (source_row -> 'id')::bigint,
            source_row -> 'sfid', ((source_row - exclusions) - ARRAY['_hc_lastop', '_hc_err'])::text)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$fn$;

-- API: Private. A dropped table stops being mapped (its trigger log rows stay for the record).
CREATE FUNCTION @extschema@._forget_dropped_tables() RETURNS event_trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    DELETE FROM @extschema@._mapping AS m
     USING pg_catalog.pg_event_trigger_dropped_objects() AS d
     WHERE d.object_type = 'table' AND d.objid = m.relid::oid;
END
$fn$;
CREATE EVENT TRIGGER pgforce_forget_dropped_tables ON sql_drop
    EXECUTE FUNCTION @extschema@._forget_dropped_tables();

DO $do$
BEGIN
    IF NOT @extschema@._is_preloaded() THEN
        RAISE WARNING 'pgforce is not in shared_preload_libraries: changes will be captured, but nothing will be delivered to Salesforce'
            USING HINT = 'Run ALTER SYSTEM SET shared_preload_libraries = ''pgforce'' and restart PostgreSQL.';
    END IF;
END
$do$;

-- API: Public. Make a table synced: adds the system columns it lacks, installs the capture triggers and records the
-- mapping. mode is 'read_write' or 'read_only'; fields defaults to every non-system column.
CREATE FUNCTION @extschema@.map_table(
    tbl regclass,
    sobject text,
    mode text DEFAULT 'read_write',
    upsert_field text DEFAULT NULL,
    fields text[] DEFAULT NULL
) RETURNS void
LANGUAGE sql
AS $fn$ SELECT @extschema@._map_table(tbl::oid, sobject, mode, upsert_field, fields) $fn$;

-- API: Public. Stop syncing a table: removes its triggers and mapping; keeps its columns and trigger log rows.
CREATE FUNCTION @extschema@.unmap_table(tbl regclass) RETURNS void
LANGUAGE sql
AS $fn$ SELECT @extschema@._unmap_table(tbl::oid) $fn$;

-- Rows inserted into the log, reset to NEW, or set to REQUEUE in the archive by users (the documented retry SQL)
-- wake the sync worker when their transaction commits; its own writes (xmlbinary = hex) do not.
CREATE TRIGGER pgforce_wake AFTER INSERT OR UPDATE ON @extschema@._trigger_log
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._wake_worker();
CREATE TRIGGER pgforce_wake AFTER UPDATE ON @extschema@._trigger_log_archive
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._wake_worker();

-- API: Public. One row per mapping: what waits, what failed, when it last worked, and how the connection is.
CREATE VIEW @extschema@.sync_status AS
SELECT m.table_name,
       m.sobject,
       m.access,
       coalesce(l.pending, 0)      AS pending_writes,
       coalesce(l.errored, 0)      AS errored_writes,
       l.oldest_pending_age,
       m.last_success_at,
       m.last_error_at,
       m.last_error,
       s.state                     AS connection_state,
       s.message                   AS connection_message,
       s.api_used,
       s.api_limit,
       s.updated_at                AS state_updated_at
  FROM @extschema@._mapping m
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE t.state IN ('NEW', 'PENDING'))                      AS pending,
               count(*) FILTER (WHERE t.state = 'FAILED')                                 AS errored,
               now() - min(t.created_at) FILTER (WHERE t.state IN ('NEW', 'PENDING'))     AS oldest_pending_age
          FROM @extschema@._trigger_log t
         WHERE t.table_name = m.table_name) l ON true
 CROSS JOIN @extschema@._sync_state s;
GRANT SELECT ON @extschema@.sync_status TO PUBLIC;
