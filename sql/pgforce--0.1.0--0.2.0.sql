-- pgforce 0.1.0 → 0.2.0. Run by ALTER EXTENSION pgforce UPDATE.
--
-- Every change to the schema (sql/bootstrap.sql, sql/finalize.sql, or the SQL pgrx generates for #[pg_extern] and
-- #[pg_trigger] functions) goes here as well, until 0.2.0 is released; after that this file is never edited again.
-- The upgrade test (tests/integration/tests/upgrade.rs) installs sql/releases/pgforce--0.1.0.sql, runs this script
-- and compares the catalog with a fresh install of 0.2.0.
--
-- 0.2.0: the security model (README, "Security model"): log rows record their table's OID; the pgforce_monitor and
-- pgforce_operator roles; functions revoked from PUBLIC; SECURITY DEFINER functions with a pinned search_path;
-- retry_failed(); error texts for monitors only; mapping changes invalidate the capture triggers' cache. Log rows
-- whose attempt went unanswered are marked in doubt (in_doubt_since). The server that delivers the log is recorded
-- (_deliverer); another pauses until salesforce.resume().

ALTER TABLE @extschema@._trigger_log ADD COLUMN relid regclass, ADD COLUMN in_doubt_since timestamptz;
ALTER TABLE @extschema@._trigger_log_archive ADD COLUMN relid regclass, ADD COLUMN in_doubt_since timestamptz;

CREATE TABLE @extschema@._deliverer (
    one          boolean PRIMARY KEY DEFAULT true CHECK (one),
    identity     text NOT NULL,
    confirmed_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('@extschema@._deliverer', '');

DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgforce_monitor') THEN
        CREATE ROLE pgforce_monitor NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgforce_operator') THEN
        CREATE ROLE pgforce_operator NOLOGIN;
    END IF;
    IF NOT pg_catalog.pg_has_role('pgforce_operator', 'pgforce_monitor', 'MEMBER') THEN
        GRANT pgforce_monitor TO pgforce_operator;
    END IF;
END
$do$;

CREATE FUNCTION @extschema@._mapping_changed()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', '_mapping_changed_wrapper';

ALTER FUNCTION @extschema@._capture_changes() SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION @extschema@._capture_changes() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._track_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._wake_worker() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._mapping_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._map_table FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._unmap_table FROM PUBLIC;

REVOKE SELECT ON @extschema@._mapping FROM PUBLIC;
GRANT SELECT (table_name, relid, sobject, access, upsert_field, fields, created_at, updated_at)
    ON @extschema@._mapping TO PUBLIC;
GRANT SELECT ON @extschema@._mapping, @extschema@._trigger_log, @extschema@._trigger_log_archive TO pgforce_monitor;

CREATE TRIGGER pgforce_mapping_changed AFTER INSERT OR UPDATE OF relid, access OR DELETE ON @extschema@._mapping
    FOR EACH ROW EXECUTE FUNCTION @extschema@._mapping_changed();

DROP FUNCTION @extschema@._require_mapped(varchar);

CREATE FUNCTION @extschema@._log_repair(tbl varchar, action text, record_id bigint, sfid text, changes text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    mapped regclass;
    new_id bigint;
BEGIN
    SELECT m.relid INTO mapped FROM @extschema@._mapping m WHERE m.table_name OPERATOR(pg_catalog.=) tbl;
    IF mapped IS NULL THEN
        RAISE EXCEPTION 'table "%" is not mapped to Salesforce', tbl
            USING ERRCODE = 'undefined_table',
                  HINT = 'Pass the table name without its schema, as _trigger_log.table_name shows it; salesforce.map_table() maps a table.';
    END IF;
    INSERT INTO @extschema@._trigger_log (action, table_name, relid, txid, created_at, state, record_id, sfid, "values")
    VALUES (action, tbl, mapped, pg_catalog.txid_current(), pg_catalog.clock_timestamp(), 'NEW', record_id, sfid, changes)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@._log_repair(varchar, text, bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._log_repair(varchar, text, bigint, text, text) TO pgforce_operator;

CREATE OR REPLACE FUNCTION @extschema@.hc_capture_insert_from_row(
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
BEGIN
    IF source_row -> 'id' IS NULL THEN
        RETURN NULL;
    END IF;
    exclusions := ARRAY(SELECT c FROM unnest(excluded_cols) AS c WHERE c NOT IN ('id', 'sfid'))
                  || ARRAY['_hc_lastop', '_hc_err'];
    RETURN @extschema@._log_repair(table_name, 'INSERT', (source_row -> 'id')::bigint, NULL,
                                   (source_row - exclusions)::text);
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.hc_capture_update_from_row(
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
BEGIN
    IF source_row -> 'id' IS NULL THEN
        RETURN NULL;
    END IF;
    -- array_length of an empty array is NULL, so an empty list includes every column.
    IF array_length(columns_to_include, 1) <> 0 THEN
        exclusions := ARRAY(SELECT k FROM unnest(akeys(source_row)) AS k WHERE k <> ALL (columns_to_include));
    END IF;
    RETURN @extschema@._log_repair(table_name, 'UPDATE', (source_row -> 'id')::bigint, source_row -> 'sfid',
                                   ((source_row - exclusions) - ARRAY['_hc_lastop', '_hc_err'])::text);
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.hc_capture_insert_from_row(hstore, varchar, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.hc_capture_update_from_row(hstore, varchar, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.hc_capture_insert_from_row(hstore, varchar, text[]) TO pgforce_operator;
GRANT EXECUTE ON FUNCTION @extschema@.hc_capture_update_from_row(hstore, varchar, text[]) TO pgforce_operator;

CREATE FUNCTION @extschema@.retry_failed(tbl regclass DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    names varchar[];
    live bigint;
    archived bigint;
BEGIN
    IF tbl IS NOT NULL THEN
        SELECT pg_catalog.array_agg(m.table_name) INTO names FROM @extschema@._mapping m
         WHERE m.relid OPERATOR(pg_catalog.=) tbl;
        IF names IS NULL THEN
            RAISE EXCEPTION '% is not mapped to Salesforce', tbl
                USING ERRCODE = 'undefined_object', HINT = 'The mapped tables are listed in salesforce.sync_status.';
        END IF;
    END IF;
    UPDATE @extschema@._trigger_log l
       SET state = 'NEW', attempts = 0, next_attempt_at = NULL, updated_at = pg_catalog.now()
     WHERE l.state OPERATOR(pg_catalog.=) 'FAILED'
       AND (names IS NULL OR l.table_name OPERATOR(pg_catalog.=) ANY (names));
    GET DIAGNOSTICS live = ROW_COUNT;
    UPDATE @extschema@._trigger_log_archive a
       SET state = 'REQUEUE', updated_at = pg_catalog.now()
     WHERE a.state OPERATOR(pg_catalog.=) 'FAILED'
       AND (names IS NULL OR a.table_name OPERATOR(pg_catalog.=) ANY (names));
    GET DIAGNOSTICS archived = ROW_COUNT;
    RETURN live OPERATOR(pg_catalog.+) archived;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.retry_failed(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.retry_failed(regclass) TO pgforce_operator;

-- API: Public. Confirms that this server delivers this database's log. The worker pauses (connection_state PAUSED)
-- when the log was last delivered by another server (a restored backup, a promoted replica, a copy, a restored
-- dump); once the operator knows the other no longer delivers, this lets it go on. Returns the identity it forgets.
CREATE FUNCTION @extschema@.resume() RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    previous text;
BEGIN
    DELETE FROM @extschema@._deliverer RETURNING identity INTO previous;
    RETURN previous;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.resume() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.resume() TO pgforce_operator;

CREATE OR REPLACE FUNCTION @extschema@._forget_dropped_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    DELETE FROM @extschema@._mapping AS m
     USING pg_catalog.pg_event_trigger_dropped_objects() AS d
     WHERE d.object_type OPERATOR(pg_catalog.=) 'table' AND d.objid OPERATOR(pg_catalog.=) m.relid::pg_catalog.oid;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@._forget_dropped_tables() FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@.map_table(
    tbl regclass,
    sobject text,
    mode text DEFAULT 'read_write',
    upsert_field text DEFAULT NULL,
    fields text[] DEFAULT NULL
) RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT @extschema@._map_table(tbl::pg_catalog.oid, sobject, mode, upsert_field, fields) $fn$;

CREATE OR REPLACE FUNCTION @extschema@.unmap_table(tbl regclass) RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT @extschema@._unmap_table(tbl::pg_catalog.oid) $fn$;
REVOKE ALL ON FUNCTION @extschema@.map_table(regclass, text, text, text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.unmap_table(regclass) FROM PUBLIC;

CREATE OR REPLACE VIEW @extschema@.sync_status AS
SELECT m.table_name,
       m.sobject,
       m.access,
       coalesce(l.pending, 0)      AS pending_writes,
       coalesce(l.errored, 0)      AS errored_writes,
       l.oldest_pending_age,
       m.last_success_at,
       m.last_error_at,
       CASE WHEN pg_catalog.pg_has_role('pgforce_monitor', 'MEMBER') THEN m.last_error END AS last_error,
       s.state                     AS connection_state,
       CASE WHEN pg_catalog.pg_has_role('pgforce_monitor', 'MEMBER') THEN s.message END AS connection_message,
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
