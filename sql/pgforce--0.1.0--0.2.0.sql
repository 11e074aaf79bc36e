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
-- (_deliverer); another pauses until salesforce.resume(). Refresh tokens Salesforce rotates are kept (_refresh_token).
-- Mappings follow ALTER TABLE of their tables (_follow_table_ddl). Delivery pauses and resumes per mapping
-- (pause(), resume(), map_table(paused => true)). The audit: sync_audit, with codes the worker records in sf_result.
-- diagnose(), preview(), sync_metrics (_metrics), rollback().

-- Like a fresh install (sql/bootstrap.sql), nothing here resolves through hstore's schema or public; 0.1.0's
-- constraints, indexes and defaults, which could have bound operators planted in public before 0.1.0 was installed,
-- are made again with every operator and function qualified.
SELECT pg_catalog.set_config('search_path', '@extschema@, pg_temp', true);
ALTER TABLE @extschema@._trigger_log
    ALTER COLUMN id SET DEFAULT pg_catalog.nextval('@extschema@._trigger_log_id_seq'::pg_catalog.regclass),
    ALTER COLUMN created_at SET DEFAULT pg_catalog.now(),
    ALTER COLUMN updated_at SET DEFAULT pg_catalog.now(),
    DROP CONSTRAINT _trigger_log_state_check,
    DROP CONSTRAINT _trigger_log_action_check,
    ADD CONSTRAINT _trigger_log_state_check CHECK (state::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['NEW', 'PENDING',
        'SUCCESS', 'FAILED', 'MERGED', 'IGNORE', 'IGNORED', 'READONLY', 'REQUEUE', 'REQUEUED']::pg_catalog.text[])),
    ADD CONSTRAINT _trigger_log_action_check CHECK (action::pg_catalog.text OPERATOR(pg_catalog.=) ANY
        (ARRAY['INSERT', 'UPDATE', 'DELETE']::pg_catalog.text[]));
ALTER TABLE @extschema@._mapping
    ALTER COLUMN created_at SET DEFAULT pg_catalog.now(),
    ALTER COLUMN updated_at SET DEFAULT pg_catalog.now(),
    DROP CONSTRAINT _mapping_access_check,
    ADD CONSTRAINT _mapping_access_check CHECK (access OPERATOR(pg_catalog.=) ANY (ARRAY['read_write', 'write_only', 'read_only']::pg_catalog.text[]));
-- Release 0.1.0's read_write mappings only sent; read_write now reads too (as in Heroku Connect). They become
-- write_only, so that no upgrade starts writing into a table by surprise.
UPDATE @extschema@._mapping SET access = 'write_only' WHERE access OPERATOR(pg_catalog.=) 'read_write';
ALTER TABLE @extschema@._sync_state ALTER COLUMN updated_at SET DEFAULT pg_catalog.now(),
    ADD COLUMN next_attempt_at timestamptz;
DROP INDEX @extschema@._trigger_log_idx_queue, @extschema@._trigger_log_idx_failed, @extschema@._trigger_log_idx_retry,
           @extschema@._trigger_log_idx_finished, @extschema@._trigger_log_archive_idx_state_table_name;
CREATE INDEX _trigger_log_idx_failed ON @extschema@._trigger_log (table_name, id)
    WHERE state::pg_catalog.text OPERATOR(pg_catalog.=) 'FAILED'::pg_catalog.text;
CREATE INDEX _trigger_log_idx_retry ON @extschema@._trigger_log (next_attempt_at)
    WHERE state::pg_catalog.text OPERATOR(pg_catalog.=) 'NEW'::pg_catalog.text AND next_attempt_at IS NOT NULL;
CREATE INDEX _trigger_log_idx_finished ON @extschema@._trigger_log ((coalesce(processed_at, created_at)))
    WHERE state::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['SUCCESS', 'MERGED', 'IGNORED', 'FAILED', 'READONLY',
                                                                  'REQUEUED']::pg_catalog.text[]);
CREATE INDEX _trigger_log_archive_idx_state_table_name ON @extschema@._trigger_log_archive (state, table_name)
    WHERE state::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['FAILED', 'REQUEUE']::pg_catalog.text[]);

-- API: Public. Every alert the worker sent (NOTIFY pgforce_alerts is lost while nobody listens, and per database):
-- when, what kind, which mapped tables, the error codes or states, pgforce's message (never a row's value), and
-- when it was resolved (the failures retried or got through, the connection back, the queue moving, usage below
-- pgforce.max_api_usage) and acknowledged (salesforce.acknowledge_alerts()). The newest 10,000 are kept. Readable
-- by pgforce_monitor.
CREATE TABLE @extschema@.sync_alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    kind            text NOT NULL,
    tables          text[] NOT NULL DEFAULT '{}',
    codes           text[] NOT NULL DEFAULT '{}',
    count           bigint NOT NULL DEFAULT 0,
    message         text NOT NULL,
    held_back       bigint NOT NULL DEFAULT 0,
    resolved_at     timestamptz,
    acknowledged_at timestamptz,
    acknowledged_by text
);
CREATE INDEX sync_alerts_idx_open ON @extschema@.sync_alerts (kind) WHERE resolved_at IS NULL;

ALTER TABLE @extschema@._trigger_log ADD COLUMN relid regclass, ADD COLUMN in_doubt_since timestamptz;
-- The queue is indexed by table (relid) once the log records it.
CREATE INDEX _trigger_log_idx_queue ON @extschema@._trigger_log (relid, id)
    WHERE state::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['NEW', 'PENDING', 'IGNORE']::pg_catalog.text[]);
ALTER TABLE @extschema@._trigger_log_archive ADD COLUMN relid regclass, ADD COLUMN in_doubt_since timestamptz;
-- API: Private. Bulk API 2.0 jobs whose results the worker has not recorded (see bootstrap.sql).
CREATE TABLE @extschema@._bulk_jobs (
    id          varchar(18) PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
-- API: Private. Where each read-only mapping's read from Salesforce stands (pgforce_core::read): the last record
-- applied, by (SystemModstamp, Id), written in the transaction that applies its page, so a crash re-reads a page and
-- never loses or duplicates a row; and how the reads go. Superusers only; sync_status shows it.
CREATE TABLE @extschema@._read_state (
    relid          regclass PRIMARY KEY,
    state          text NOT NULL DEFAULT 'RELOAD_TABLE',
    position_stamp timestamp,               -- UTC
    position_id    varchar(18),
    read_at        timestamptz,             -- when a read last reached the end of Salesforce's changes
    rows_read      bigint NOT NULL DEFAULT 0,
    last_error     text,                    -- why the last read failed (NULL once one succeeds)
    reloading_since timestamptz,            -- salesforce.reload(): every record is read again since
    -- bumped by every start over (reload(), mapping again): a page read before it is not applied
    generation     bigint NOT NULL DEFAULT 0,
    -- where the next sweep of Salesforce's delete log (sobjects/X/deleted) starts, UTC (NULL: at the first read's
    -- start), and when a read of every record last reached its end (the periodic full comparison counts from it)
    swept_to       timestamp,
    compared_at    timestamptz,
    -- a load through a Bulk API 2.0 query job: the job, the locator of its next result set (NULL: the first), and
    -- when the job was asked for, UTC (the polls go on from there once its results are in)
    bulk_job       varchar(18),
    bulk_locator   text,
    bulk_since     timestamp
);
SELECT pg_catalog.pg_extension_config_dump('@extschema@._read_state', '');
-- API: Private. Records of read_only mappings that could not be read into their tables (a value that does not fit
-- its column), until a read of them succeeds (a later change, the poll's look-back, salesforce.reload()). Superusers
-- only; sync_status counts them and shows the newest message.
CREATE TABLE @extschema@._read_failures (
    relid     regclass NOT NULL,
    sfid      varchar(18) NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    message   text NOT NULL,
    CONSTRAINT _read_failures_pkey PRIMARY KEY (relid, sfid)
);
SELECT pg_catalog.pg_extension_config_dump('@extschema@._read_failures', '');
-- API: Private. During salesforce.reload(): the records read so far (with the position, in the same transaction), so
-- that at its end the rows whose records are gone are deleted. Superusers only, never dumped.
CREATE TABLE @extschema@._read_seen (
    relid regclass NOT NULL,
    sfid  varchar(18) NOT NULL,
    CONSTRAINT _read_seen_pkey PRIMARY KEY (relid, sfid)
);
ALTER TABLE @extschema@._trigger_log ADD COLUMN depth integer, ADD COLUMN bulk_job text;
ALTER TABLE @extschema@._trigger_log_archive ADD COLUMN depth integer, ADD COLUMN bulk_job text;
ALTER TABLE @extschema@._mapping ADD COLUMN paused_at timestamptz;
ALTER TABLE @extschema@._mapping ADD COLUMN relationships jsonb NOT NULL DEFAULT '{}';
ALTER TABLE @extschema@._mapping ADD COLUMN read_interval interval, ADD COLUMN on_delete text NOT NULL DEFAULT 'delete',
    ADD CONSTRAINT _mapping_on_delete_check CHECK (on_delete OPERATOR(pg_catalog.=) ANY (ARRAY['delete', 'flag']::pg_catalog.text[]));
CREATE INDEX _trigger_log_idx_delete ON @extschema@._trigger_log (record_id)
    WHERE action::pg_catalog.text OPERATOR(pg_catalog.=) 'DELETE'::pg_catalog.text;
CREATE INDEX _trigger_log_idx_bulk_job ON @extschema@._trigger_log (bulk_job)
    WHERE bulk_job IS NOT NULL;
CREATE INDEX _trigger_log_archive_idx_processed_at ON @extschema@._trigger_log_archive (processed_at);

CREATE TABLE @extschema@._deliverer (
    one          boolean PRIMARY KEY DEFAULT true CHECK (one),
    identity     text NOT NULL,
    confirmed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('@extschema@._deliverer', '');

-- API: Private. The refresh token Salesforce rotated the configured one to (refresh_token flow). Logins use it for as
-- long as pgforce.refresh_token (or its file) still holds the token it was rotated from (configured_sha256); a new
-- configured token starts over. Superusers only, never dumped, never shown by a view: it is a secret.
CREATE TABLE @extschema@._refresh_token (
    one               boolean PRIMARY KEY DEFAULT true CHECK (one),
    configured_sha256 text NOT NULL,
    refresh_token     text NOT NULL,
    rotated_at        timestamptz NOT NULL DEFAULT pg_catalog.now()
);

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
CREATE FUNCTION @extschema@._wake_worker_at_commit() RETURNS void
	STRICT VOLATILE PARALLEL UNSAFE
	LANGUAGE c
	AS 'MODULE_PATHNAME', '_wake_worker_at_commit_wrapper';

REVOKE ALL ON FUNCTION @extschema@._wake_worker() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._wake_worker_at_commit() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._mapping_changed() FROM PUBLIC;
-- Mapping with relationships (foreign keys sent as lookups); _map_table stays as it was.
CREATE FUNCTION @extschema@._map_table_with_relationships(
	"tbl" oid,
	"sobject" TEXT,
	"mode" TEXT,
	"upsert_field" TEXT,
	"fields" TEXT[],
	"relationships" jsonb
) RETURNS VOID
LANGUAGE c
AS 'MODULE_PATHNAME', '_map_table_with_relationships_wrapper';
REVOKE ALL ON FUNCTION @extschema@._map_table FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._map_table_with_relationships FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._unmap_table FROM PUBLIC;

REVOKE SELECT ON @extschema@._mapping FROM PUBLIC;
GRANT SELECT (table_name, relid, sobject, access, upsert_field, fields, relationships, created_at, updated_at,
              paused_at)
    ON @extschema@._mapping TO PUBLIC;
GRANT SELECT ON @extschema@._mapping, @extschema@._trigger_log, @extschema@._trigger_log_archive TO pgforce_monitor;

CREATE TRIGGER pgforce_mapping_changed AFTER INSERT OR UPDATE OF relid, access, paused_at OR DELETE ON @extschema@._mapping
    FOR EACH ROW EXECUTE FUNCTION @extschema@._mapping_changed();

DROP FUNCTION @extschema@._require_mapped(varchar);

CREATE FUNCTION @extschema@._log_repair(tbl varchar, action text, record_id bigint, sfid text, changes text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    mapped regclass;
    bare varchar;
    new_id bigint;
BEGIN
    -- The table as _trigger_log.table_name names it (contact), or with its schema (salesforce.contact).
    SELECT m.relid, m.table_name INTO mapped, bare
      FROM @extschema@._mapping m
      JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) m.relid::pg_catalog.oid
      JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE m.table_name::pg_catalog.text OPERATOR(pg_catalog.=) tbl::pg_catalog.text
        OR (n.nspname::pg_catalog.text OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) c.relname::pg_catalog.text)
           OPERATOR(pg_catalog.=) tbl::pg_catalog.text;
    IF mapped IS NULL THEN
        RAISE EXCEPTION 'table "%" is not mapped to Salesforce', tbl
            USING ERRCODE = 'undefined_table',
                  HINT = 'Name a mapped table as _trigger_log.table_name shows it (contact) or with its schema (salesforce.contact); salesforce.sync_status lists them.';
    END IF;
    INSERT INTO @extschema@._trigger_log (action, table_name, relid, txid, created_at, state, record_id, sfid, "values")
    VALUES (action, bare, mapped, pg_catalog.txid_current(), pg_catalog.clock_timestamp(), 'NEW', record_id, sfid, changes)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@._log_repair(varchar, text, bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._log_repair(varchar, text, bigint, text, text) TO pgforce_operator;

DO $do$
DECLARE
    h text := (SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension e
                 JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
                WHERE e.extname OPERATOR(pg_catalog.=) 'hstore');
BEGIN
    EXECUTE pg_catalog.format($sql$
CREATE OR REPLACE FUNCTION @extschema@.hc_capture_insert_from_row(
    source_row %1$s.hstore,
    table_name varchar,
    excluded_cols text[] DEFAULT ARRAY[]::text[]
) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    exclusions text[];
BEGIN
    IF (source_row OPERATOR(%1$s.->) 'id'::text) IS NULL THEN
        RETURN NULL;
    END IF;
    exclusions := pg_catalog.array_cat(
        ARRAY(SELECT c FROM pg_catalog.unnest(excluded_cols) AS c
               WHERE NOT c OPERATOR(pg_catalog.=) ANY (ARRAY['id', 'sfid']::text[])),
        ARRAY['_hc_lastop', '_hc_err']::text[]);
    RETURN @extschema@._log_repair(table_name, 'INSERT', (source_row OPERATOR(%1$s.->) 'id'::text)::bigint, NULL,
                                   (source_row OPERATOR(%1$s.-) exclusions)::text);
END
$fn$;
CREATE OR REPLACE FUNCTION @extschema@.hc_capture_update_from_row(
    source_row %1$s.hstore,
    table_name varchar,
    columns_to_include text[] DEFAULT ARRAY[]::text[]
) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    exclusions text[] := ARRAY[]::text[];
BEGIN
    IF (source_row OPERATOR(%1$s.->) 'id'::text) IS NULL THEN
        RETURN NULL;
    END IF;
    -- array_length of an empty array is NULL, so an empty list includes every column.
    IF pg_catalog.array_length(columns_to_include, 1) OPERATOR(pg_catalog.<>) 0 THEN
        exclusions := ARRAY(SELECT k FROM pg_catalog.unnest(%1$s.akeys(source_row)) AS k
                             WHERE k OPERATOR(pg_catalog.<>) ALL (columns_to_include));
    END IF;
    RETURN @extschema@._log_repair(table_name, 'UPDATE', (source_row OPERATOR(%1$s.->) 'id'::text)::bigint,
                                   source_row OPERATOR(%1$s.->) 'sfid'::text,
                                   ((source_row OPERATOR(%1$s.-) exclusions)
                                        OPERATOR(%1$s.-) ARRAY['_hc_lastop', '_hc_err']::text[])::text);
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.hc_capture_insert_from_row(%1$s.hstore, varchar, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.hc_capture_update_from_row(%1$s.hstore, varchar, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.hc_capture_insert_from_row(%1$s.hstore, varchar, text[]) TO pgforce_operator;
GRANT EXECUTE ON FUNCTION @extschema@.hc_capture_update_from_row(%1$s.hstore, varchar, text[]) TO pgforce_operator;
$sql$, h);
END
$do$;

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

-- API: Private. Raises 42704 (with a hint) unless tbl is mapped: the operators' functions check their argument with it.
CREATE FUNCTION @extschema@._require_mapped(tbl regclass) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF tbl IS NOT NULL AND NOT EXISTS (SELECT 1 FROM @extschema@._mapping m WHERE m.relid OPERATOR(pg_catalog.=) tbl) THEN
        RAISE EXCEPTION '% is not mapped to Salesforce', tbl
            USING ERRCODE = 'undefined_object', HINT = 'The mapped tables are listed in salesforce.sync_status.';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@._require_mapped(regclass) FROM PUBLIC;

-- API: Public. Pauses delivery of one mapped table, or of every mapping (tbl NULL): capture goes on, the worker
-- claims nothing more of theirs (what is already on its way finishes) until salesforce.resume(). Kept across
-- restarts and shown in sync_status.paused_since. Returns what it paused. For pgforce_operator (and superusers).
CREATE FUNCTION @extschema@.pause(tbl regclass DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    names text[];
BEGIN
    PERFORM @extschema@._require_mapped(tbl);
    WITH paused AS (
        UPDATE @extschema@._mapping m SET paused_at = pg_catalog.now()
         WHERE (tbl IS NULL OR m.relid OPERATOR(pg_catalog.=) tbl) AND m.paused_at IS NULL
        RETURNING m.relid::pg_catalog.text AS name)
    SELECT pg_catalog.array_agg(p.name ORDER BY p.name) INTO names FROM paused p;
    IF names IS NULL THEN
        RETURN 'nothing to pause: already paused';
    END IF;
    RETURN 'paused: ' OPERATOR(pg_catalog.||) pg_catalog.array_to_string(names, ', ');
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.pause(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.pause(regclass) TO pgforce_operator;

-- API: Public. Resumes delivery of one paused mapping, or of every mapping (tbl NULL), and wakes the worker. Without
-- a table it also confirms that this server delivers this database's log: the worker pauses (connection_state
-- PAUSED) when the log was last delivered by another server (a restored backup, a promoted replica, a copy, a
-- restored dump); once the operator knows the other no longer delivers, this lets it go on. Returns what it resumed
-- and the server identity it forgot. For pgforce_operator (and superusers).
CREATE FUNCTION @extschema@.resume(tbl regclass DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    names text[];
    previous text;
    said text;
BEGIN
    PERFORM @extschema@._require_mapped(tbl);
    WITH resumed AS (
        UPDATE @extschema@._mapping m SET paused_at = NULL
         WHERE (tbl IS NULL OR m.relid OPERATOR(pg_catalog.=) tbl) AND m.paused_at IS NOT NULL
        RETURNING m.relid::pg_catalog.text AS name)
    SELECT pg_catalog.array_agg(r.name ORDER BY r.name) INTO names FROM resumed r;
    said := CASE WHEN names IS NULL THEN 'no mapping was paused'
                 ELSE 'resumed: ' OPERATOR(pg_catalog.||) pg_catalog.array_to_string(names, ', ') END;
    -- The server identity is forgotten only when the worker is paused because another server delivered the log:
    -- otherwise it is this server's own, and forgetting it would only alarm.
    IF tbl IS NULL AND EXISTS (SELECT 1 FROM @extschema@._sync_state s
                                WHERE s.state OPERATOR(pg_catalog.=) 'PAUSED') THEN
        DELETE FROM @extschema@._deliverer RETURNING identity INTO previous;
        IF previous IS NOT NULL THEN
            said := said OPERATOR(pg_catalog.||) '; this server delivers the log from now on (forgot: '
                    OPERATOR(pg_catalog.||) previous OPERATOR(pg_catalog.||) ')';
        END IF;
    END IF;
    PERFORM @extschema@._wake_worker_at_commit();
    RETURN said;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.resume(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.resume(regclass) TO pgforce_operator;

-- API: Public. Marks alerts acknowledged (the given ids, or every one not acknowledged yet) by the calling role;
-- returns how many. For pgforce_operator (and superusers).
CREATE FUNCTION @extschema@.acknowledge_alerts(ids bigint[] DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    done bigint;
BEGIN
    UPDATE @extschema@.sync_alerts a
       SET acknowledged_at = pg_catalog.now(), acknowledged_by = session_user
     WHERE a.acknowledged_at IS NULL AND (ids IS NULL OR a.id OPERATOR(pg_catalog.=) ANY (ids));
    GET DIAGNOSTICS done = ROW_COUNT;
    RETURN done;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.acknowledge_alerts(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.acknowledge_alerts(bigint[]) TO pgforce_operator;
GRANT SELECT ON @extschema@.sync_alerts TO pgforce_monitor;

-- API: Public. Has the sync worker try Salesforce at once when the calling transaction commits: an outage's backoff
-- (connection_state OUTAGE, next_attempt_at in sync_status) and a refused login's wait end now (pacing stays); the
-- next failure starts a new backoff. resume() does the same. For pgforce_operator (and superusers).
CREATE FUNCTION @extschema@.retry_now() RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM @extschema@._wake_worker_at_commit();
    RETURN 'the sync worker tries Salesforce when this transaction commits: salesforce.sync_status shows how it went';
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.retry_now() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.retry_now() TO pgforce_operator;

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

-- API: Private. Mappings follow ALTER TABLE on mapped tables, so that a migration never stops sync silently:
-- a renamed table keeps its mapping (table_name follows); a renamed mapped column stays mapped under its new name
-- (sent as the Salesforce field of that name, as map_table would) and queued changes follow it, if the table's
-- owner may map tables; a dropped mapped column stops being sent. What would break delivery is refused, with a hint:
-- renaming or dropping pgforce's own columns, the upsert field or the last mapped column. It runs for every
-- ALTER TABLE of every role, so it runs as the extension's owner, with a pinned search_path, and touches nothing
-- unless a mapped table was altered.
CREATE FUNCTION @extschema@._follow_table_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    m record;
    current_columns text[];
    missing text[];
    renamed text[];
    relname text;
    hstore_schema name;
    system_column text;
BEGIN
    FOR m IN
        SELECT DISTINCT mp.table_name, mp.relid, mp.fields, mp.upsert_field, mp.relationships
          FROM pg_catalog.pg_event_trigger_ddl_commands() AS d
          JOIN @extschema@._mapping AS mp ON mp.relid::pg_catalog.oid OPERATOR(pg_catalog.=) d.objid
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
    LOOP
        SELECT c.relname::text INTO relname FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) m.relid;
        SELECT pg_catalog.array_agg(a.attname::text) INTO current_columns
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid OPERATOR(pg_catalog.=) m.relid AND a.attnum OPERATOR(pg_catalog.>) 0
           AND NOT a.attisdropped;
        FOREACH system_column IN ARRAY ARRAY['id', 'sfid', '_hc_lastop', '_hc_err'] LOOP
            IF NOT system_column OPERATOR(pg_catalog.=) ANY (current_columns) THEN
                RAISE EXCEPTION 'column "%" of mapped table % cannot be renamed or dropped', system_column, m.relid
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          DETAIL = 'pgforce writes the Salesforce id and the sync outcome of each row into it.',
                          HINT = pg_catalog.format('Unmap the table first: SELECT salesforce.unmap_table(%L).', m.relid::text);
            END IF;
        END LOOP;
        IF relname OPERATOR(pg_catalog.<>) m.table_name THEN
            IF EXISTS (SELECT 1 FROM @extschema@._mapping o WHERE o.table_name OPERATOR(pg_catalog.=) relname) THEN
                RAISE EXCEPTION 'another mapped table is named "%"', relname
                    USING ERRCODE = 'duplicate_object',
                          DETAIL = '_trigger_log.table_name names a mapped table without its schema.',
                          HINT = 'Choose another name, or unmap the other table first.';
            END IF;
            UPDATE @extschema@._mapping SET table_name = relname, updated_at = pg_catalog.now()
             WHERE relid OPERATOR(pg_catalog.=) m.relid;
        END IF;
        -- A renamed relationship column (salesforce.map_table(..., relationships => ...)) stays mapped to its lookup
        -- under its new name; a dropped one (its foreign key went with it) is no longer sent.
        SELECT pg_catalog.array_agg(k) INTO missing
          FROM pg_catalog.jsonb_object_keys(m.relationships) AS k
         WHERE NOT k OPERATOR(pg_catalog.=) ANY (current_columns);
        IF missing IS NOT NULL THEN
            SELECT pg_catalog.array_agg(DISTINCT a.attname::text) INTO renamed
              FROM pg_catalog.pg_event_trigger_ddl_commands() AS d
              JOIN pg_catalog.pg_attribute a
                ON a.attrelid OPERATOR(pg_catalog.=) d.objid AND a.attnum OPERATOR(pg_catalog.=) d.objsubid
             WHERE d.objid OPERATOR(pg_catalog.=) m.relid AND d.objsubid OPERATOR(pg_catalog.>) 0
               AND NOT a.attname::text OPERATOR(pg_catalog.=) ANY (m.fields)
               AND NOT m.relationships OPERATOR(pg_catalog.?) a.attname::text;
            IF pg_catalog.cardinality(missing) OPERATOR(pg_catalog.=) 1
               AND pg_catalog.cardinality(renamed) OPERATOR(pg_catalog.=) 1 THEN
                UPDATE @extschema@._mapping
                   SET relationships = (relationships OPERATOR(pg_catalog.-) missing[1]) OPERATOR(pg_catalog.||)
                           pg_catalog.jsonb_build_object(renamed[1], relationships OPERATOR(pg_catalog.->) missing[1]),
                       updated_at = pg_catalog.now()
                 WHERE relid OPERATOR(pg_catalog.=) m.relid;
            ELSE
                UPDATE @extschema@._mapping
                   SET relationships = relationships OPERATOR(pg_catalog.-) missing, updated_at = pg_catalog.now()
                 WHERE relid OPERATOR(pg_catalog.=) m.relid;
                RAISE WARNING 'relationship column(s) % of % no longer exist: their lookups are no longer sent',
                    pg_catalog.array_to_string(missing, ', '), m.relid;
            END IF;
        END IF;
        SELECT pg_catalog.array_agg(f) INTO missing
          FROM pg_catalog.unnest(m.fields) AS f
         WHERE NOT f OPERATOR(pg_catalog.=) ANY (current_columns);
        CONTINUE WHEN missing IS NULL;
        -- A column renamed by this command is reported with its number; a mapped name that is gone with it is its
        -- old name.
        SELECT pg_catalog.array_agg(DISTINCT a.attname::text) INTO renamed
          FROM pg_catalog.pg_event_trigger_ddl_commands() AS d
          JOIN pg_catalog.pg_attribute a
            ON a.attrelid OPERATOR(pg_catalog.=) d.objid AND a.attnum OPERATOR(pg_catalog.=) d.objsubid
         WHERE d.objid OPERATOR(pg_catalog.=) m.relid AND d.objsubid OPERATOR(pg_catalog.>) 0
           AND NOT a.attname::text OPERATOR(pg_catalog.=) ANY (m.fields);
        IF pg_catalog.cardinality(missing) OPERATOR(pg_catalog.=) 1
           AND pg_catalog.cardinality(renamed) OPERATOR(pg_catalog.=) 1 THEN
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                            WHERE c.oid OPERATOR(pg_catalog.=) m.relid
                              AND pg_catalog.has_function_privilege(c.relowner,
                                    '@extschema@.map_table(pg_catalog.regclass, text, text, text, text[], boolean, jsonb, pg_catalog.interval, text)'::pg_catalog.regprocedure,
                                    'EXECUTE')) THEN
                RAISE EXCEPTION 'column "%" of % is mapped to Salesforce: renaming it to "%" would send it to another field',
                        missing[1], m.relid, renamed[1]
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'The table''s owner may not map tables: ask a role that may to unmap the table, rename the column and map it again.';
            END IF;
            UPDATE @extschema@._mapping
               SET fields = pg_catalog.array_replace(fields, missing[1], renamed[1]),
                   upsert_field = CASE WHEN upsert_field OPERATOR(pg_catalog.=) missing[1] THEN renamed[1]
                                       ELSE upsert_field END,
                   updated_at = pg_catalog.now()
             WHERE relid OPERATOR(pg_catalog.=) m.relid;
            -- Queued changes name the column by its old name: they follow it.
            SELECT n.nspname INTO hstore_schema
              FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
             WHERE e.extname OPERATOR(pg_catalog.=) 'hstore';
            EXECUTE pg_catalog.format(
                'UPDATE @extschema@._trigger_log
                    SET "values" = CASE WHEN "values"::%1$I.hstore OPERATOR(%1$I.?) $1
                                        THEN (("values"::%1$I.hstore OPERATOR(%1$I.-) $1) OPERATOR(%1$I.||)
                                              %1$I.hstore($2, "values"::%1$I.hstore OPERATOR(%1$I.->) $1))::text
                                        ELSE "values" END,
                        old = CASE WHEN old::%1$I.hstore OPERATOR(%1$I.?) $1
                                   THEN ((old::%1$I.hstore OPERATOR(%1$I.-) $1) OPERATOR(%1$I.||)
                                         %1$I.hstore($2, old::%1$I.hstore OPERATOR(%1$I.->) $1))::text
                                   ELSE old END
                  WHERE relid OPERATOR(pg_catalog.=) $3
                    AND state::text OPERATOR(pg_catalog.=) ANY (ARRAY[''NEW'', ''IGNORE'', ''FAILED''])',
                hstore_schema)
            USING missing[1], renamed[1], m.relid;
        ELSE
            IF m.upsert_field OPERATOR(pg_catalog.=) ANY (missing) THEN
                RAISE EXCEPTION 'column "%" of % is the upsert field of its mapping', m.upsert_field, m.relid
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          HINT = pg_catalog.format('Map the table again without it first: SELECT salesforce.unmap_table(%L), then salesforce.map_table(...).', m.relid::text);
            END IF;
            IF pg_catalog.cardinality(missing) OPERATOR(pg_catalog.=) pg_catalog.cardinality(m.fields) THEN
                RAISE EXCEPTION 'no mapped column of % would be left', m.relid
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          HINT = pg_catalog.format('Unmap the table first: SELECT salesforce.unmap_table(%L).', m.relid::text);
            END IF;
            UPDATE @extschema@._mapping
               SET fields = ARRAY(SELECT f FROM pg_catalog.unnest(fields) AS f WHERE NOT f OPERATOR(pg_catalog.=) ANY (missing)),
                   updated_at = pg_catalog.now()
             WHERE relid OPERATOR(pg_catalog.=) m.relid;
            RAISE WARNING 'column(s) % of % no longer exist: they are no longer sent to Salesforce',
                pg_catalog.array_to_string(missing, ', '), m.relid;
        END IF;
    END LOOP;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@._follow_table_ddl() FROM PUBLIC;
CREATE EVENT TRIGGER pgforce_follow_table_ddl ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION @extschema@._follow_table_ddl();

-- map_table gains `paused`, `relationships`, `read_interval` and `on_delete`: the roles a superuser granted the old
-- one to keep their grant.
SELECT pg_catalog.set_config('pgforce_upgrade.map_table_grantees',
           coalesce(pg_catalog.string_agg(DISTINCT pg_catalog.quote_ident(r.rolname), ','), ''), true)
  FROM pg_catalog.pg_proc p
 CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
  JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) a.grantee
 WHERE p.oid OPERATOR(pg_catalog.=) '@extschema@.map_table(regclass, text, text, text, text[])'::pg_catalog.regprocedure
   AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE' AND a.grantee OPERATOR(pg_catalog.<>) p.proowner;
DROP FUNCTION @extschema@.map_table(regclass, text, text, text, text[]);
CREATE FUNCTION @extschema@.map_table(
    tbl regclass,
    sobject text,
    mode text DEFAULT 'read_write',
    upsert_field text DEFAULT NULL,
    fields text[] DEFAULT NULL,
    paused boolean DEFAULT false,
    relationships jsonb DEFAULT NULL,
    read_interval interval DEFAULT NULL,
    on_delete text DEFAULT 'delete'
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF map_table.on_delete IS NULL
       OR map_table.on_delete OPERATOR(pg_catalog.<>) ALL (ARRAY['delete', 'flag']::pg_catalog.text[]) THEN
        RAISE EXCEPTION 'on_delete must be ''delete'' or ''flag'', not %',
                coalesce(pg_catalog.quote_literal(map_table.on_delete), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'on_delete => ''delete'' deletes the row of a record deleted in Salesforce (as Heroku Connect does); ''flag'' keeps it with isdeleted = true.';
    END IF;
    IF map_table.read_interval OPERATOR(pg_catalog.<) '1 second'::pg_catalog.interval THEN
        RAISE EXCEPTION 'read_interval must be at least 1 second, not %', map_table.read_interval
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave it NULL for pgforce.read_interval (30 s by default).';
    END IF;
    PERFORM @extschema@._map_table_with_relationships(tbl::pg_catalog.oid, sobject, mode, upsert_field, fields,
                                                      relationships);
    UPDATE @extschema@._mapping
       SET paused_at = CASE WHEN paused THEN pg_catalog.now() END,
           read_interval = map_table.read_interval, on_delete = map_table.on_delete
     WHERE relid OPERATOR(pg_catalog.=) tbl;
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.unmap_table(tbl regclass) RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT @extschema@._unmap_table(tbl::pg_catalog.oid) $fn$;
REVOKE ALL ON FUNCTION @extschema@.map_table(regclass, text, text, text, text[], boolean, jsonb, interval, text) FROM PUBLIC;
DO $do$
DECLARE
    grantees text := pg_catalog.current_setting('pgforce_upgrade.map_table_grantees', true);
BEGIN
    IF grantees OPERATOR(pg_catalog.<>) '' THEN
        EXECUTE 'GRANT EXECUTE ON FUNCTION @extschema@.map_table(regclass, text, text, text, text[], boolean, jsonb, interval, text) TO '
                OPERATOR(pg_catalog.||) grantees;
    END IF;
END
$do$;
REVOKE ALL ON FUNCTION @extschema@.unmap_table(regclass) FROM PUBLIC;

-- API: Private. Failures until they are resolved, wherever their entry lives (archiving after
-- pgforce.archive_after resolves nothing): every FAILED entry of the log or the archive that no later change of the
-- same row got through. An operator resolves one by retrying it (it is then no longer FAILED), or by a change of the
-- row that reaches Salesforce. sync_status counts them; diagnose() groups them by error code.
CREATE VIEW @extschema@._open_failures AS
WITH failed AS (
    SELECT l.id, l.table_name, l.record_id, l.sf_message, false AS archived
      FROM @extschema@._trigger_log l
     WHERE l.state::pg_catalog.text OPERATOR(pg_catalog.=) 'FAILED'::pg_catalog.text
    UNION ALL
    SELECT a.id, a.table_name, a.record_id, a.sf_message, true
      FROM @extschema@._trigger_log_archive a
     WHERE a.state::pg_catalog.text OPERATOR(pg_catalog.=) 'FAILED'::pg_catalog.text)
SELECT f.id, f.table_name::pg_catalog.text AS table_name, f.record_id, f.sf_message, f.archived
  FROM failed f
 WHERE NOT EXISTS (
        SELECT 1 FROM @extschema@._trigger_log s
         WHERE s.record_id OPERATOR(pg_catalog.=) f.record_id
           AND s.table_name::pg_catalog.text OPERATOR(pg_catalog.=) f.table_name::pg_catalog.text
           AND s.id OPERATOR(pg_catalog.>) f.id
           AND s.state::pg_catalog.text OPERATOR(pg_catalog.=) 'SUCCESS'::pg_catalog.text)
   AND NOT EXISTS (
        SELECT 1 FROM @extschema@._trigger_log_archive s
         WHERE s.table_name::pg_catalog.text OPERATOR(pg_catalog.=) f.table_name::pg_catalog.text
           AND s.record_id OPERATOR(pg_catalog.=) f.record_id
           AND s.id OPERATOR(pg_catalog.>) f.id
           AND s.state::pg_catalog.text OPERATOR(pg_catalog.=) 'SUCCESS'::pg_catalog.text);

CREATE FUNCTION @extschema@._worker_cycles() RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_worker_cycles_wrapper';
CREATE FUNCTION @extschema@._delivery_gap() RETURNS TABLE (
	"state" TEXT,  /* String */
	"message" TEXT,  /* Option < String > */
	"hint" TEXT  /* Option < String > */
)
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_delivery_gap_wrapper';
CREATE OR REPLACE VIEW @extschema@.sync_status AS
SELECT m.table_name,
       m.sobject,
       m.access,
       coalesce(l.pending, 0)      AS pending_writes,
       coalesce(f.errored, 0)      AS errored_writes,
       l.oldest_pending_age,
       m.last_success_at,
       m.last_error_at,
       CASE WHEN pg_catalog.pg_has_role('pgforce_monitor', 'MEMBER') THEN m.last_error END AS last_error,
       coalesce(g.state, s.state)  AS connection_state,
       CASE WHEN pg_catalog.pg_has_role('pgforce_monitor', 'MEMBER')
            THEN coalesce(g.message OPERATOR(pg_catalog.||) '. ' OPERATOR(pg_catalog.||) g.hint, s.message) END
                                   AS connection_message,
       s.api_used,
       s.api_limit,
       s.updated_at                AS state_updated_at,
       m.paused_at                 AS paused_since,
       -- when the worker tries Salesforce again after an outage or a refused login (NULL: not waiting)
       CASE WHEN g.state IS NULL THEN s.next_attempt_at END AS next_attempt_at,
       -- cycles the sync worker ran since it started (it runs one per wake-up with work, not one per commit)
       @extschema@._worker_cycles() AS worker_cycles,
       -- how this mapping's writes are (pgforce_core::mapping::WriteState, with its lists of error codes): the
       -- first that holds
       CASE WHEN m.access OPERATOR(pg_catalog.=) 'read_only' THEN 'READ_ONLY'
            WHEN m.paused_at IS NOT NULL THEN 'PAUSED'
            WHEN f.newest_code OPERATOR(pg_catalog.=) ANY (ARRAY['INSUFFICIENT_ACCESS', 'INSUFFICIENT_ACCESS_OR_READONLY',
                                                               'INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY'])
                 THEN 'UNAUTHORIZED'
            WHEN f.newest_code OPERATOR(pg_catalog.=) ANY (ARRAY['INVALID_FIELD', 'INVALID_FIELD_FOR_INSERT_UPDATE',
                                                               'INVALID_TYPE', 'NOT_FOUND'])
                 THEN 'BAD_CONFIG'
            WHEN f.errored OPERATOR(pg_catalog.>) 0 THEN 'FAILING'
            WHEN l.pending OPERATOR(pg_catalog.>) 0
                 AND coalesce(g.state, s.state) OPERATOR(pg_catalog.<>) ALL (ARRAY['IDLE', 'POLLING_DB_CHANGES'])
                 THEN 'WAITING'
            WHEN l.pending OPERATOR(pg_catalog.>) 0 THEN 'SYNCING'
            ELSE 'DATA_SYNCED' END AS write_state,
       -- how a reading mapping's reads are (pgforce_core::read::ReadState; NULL for mappings that do not read),
       -- when a read last reached the end of Salesforce's changes, and how long ago that was
       CASE WHEN m.access OPERATOR(pg_catalog.=) 'write_only' THEN NULL
            WHEN m.paused_at IS NOT NULL THEN 'PAUSED'
            -- the last read failed on what the mapping names, or on what the integration user may read
            WHEN pg_catalog.split_part(r.last_error, ':', 1) OPERATOR(pg_catalog.=)
                 ANY (ARRAY['INVALID_FIELD', 'INVALID_TYPE', 'NOT_FOUND']) THEN 'BAD_CONFIG'
            WHEN pg_catalog.split_part(r.last_error, ':', 1) OPERATOR(pg_catalog.=)
                 ANY (ARRAY['INSUFFICIENT_ACCESS', 'INSUFFICIENT_ACCESS_OR_READONLY']) THEN 'UNAUTHORIZED'
            ELSE r.state END AS read_state,
       r.read_at                   AS last_read_at,
       pg_catalog.now() OPERATOR(pg_catalog.-) r.read_at AS read_lag,
       r.rows_read,
       CASE WHEN r.relid IS NOT NULL THEN (SELECT pg_catalog.count(*) FROM @extschema@._read_failures rf
                                             WHERE rf.relid OPERATOR(pg_catalog.=) r.relid) END AS rows_failed,
       CASE WHEN pg_catalog.pg_has_role('pgforce_monitor', 'MEMBER')
            THEN coalesce((SELECT 'record ' OPERATOR(pg_catalog.||) rf.sfid OPERATOR(pg_catalog.||) ': '
                                  OPERATOR(pg_catalog.||) rf.message
                             FROM @extschema@._read_failures rf WHERE rf.relid OPERATOR(pg_catalog.=) r.relid
                            ORDER BY rf.failed_at DESC LIMIT 1), r.last_error) END AS read_error
  FROM @extschema@._mapping m
  -- A reading mapping's reads are for roles that may read its table (and monitors): the others learn nothing of
  -- what is read into it.
  LEFT JOIN @extschema@._read_state r
         ON r.relid OPERATOR(pg_catalog.=) m.relid AND m.access OPERATOR(pg_catalog.<>) 'write_only'
        AND (pg_catalog.pg_has_role('pgforce_monitor', 'MEMBER')
             OR coalesce(pg_catalog.has_table_privilege(m.relid::pg_catalog.oid, 'SELECT'), false))
  LEFT JOIN LATERAL (
        -- through the queue's (relid, id) index; entries put in by hand name their table only
        SELECT pg_catalog.count(*) AS pending,
               pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.min(t.created_at) AS oldest_pending_age
          FROM @extschema@._trigger_log t
         WHERE t.state::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['NEW', 'PENDING']::pg_catalog.text[])
           AND (t.relid OPERATOR(pg_catalog.=) m.relid
                OR (t.relid IS NULL
                    AND t.table_name::pg_catalog.text OPERATOR(pg_catalog.=) m.table_name::pg_catalog.text))) l ON true
  LEFT JOIN (SELECT o.table_name, pg_catalog.count(*) AS errored,
                    (pg_catalog.array_agg(pg_catalog.split_part(o.sf_message, ':', 1) ORDER BY o.id DESC))[1] AS newest_code
               FROM @extschema@._open_failures o
              GROUP BY o.table_name) f ON f.table_name OPERATOR(pg_catalog.=) m.table_name::pg_catalog.text
 CROSS JOIN @extschema@._sync_state s
  -- When nothing delivers this database's changes (not preloaded, another database, no worker), the worker's own
  -- state is stale: say so instead.
  LEFT JOIN @extschema@._delivery_gap() g ON true;
-- Everyone may read sync_status, so everyone may ask whether anything delivers (settings only for monitors).
REVOKE ALL ON FUNCTION @extschema@._delivery_gap() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._delivery_gap() TO PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._worker_cycles() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._worker_cycles() TO PUBLIC;

CREATE FUNCTION @extschema@._audit_status(state text, action text, sf_result integer) RETURNS integer
	IMMUTABLE PARALLEL SAFE
	LANGUAGE c
	AS 'MODULE_PATHNAME', '_audit_status_wrapper';
CREATE FUNCTION @extschema@._audit_status_text(code integer) RETURNS text
	IMMUTABLE STRICT PARALLEL SAFE
	LANGUAGE c
	AS 'MODULE_PATHNAME', '_audit_status_text_wrapper';

-- API: Public. The audit: one row per trigger log entry, live or archived, with what happened to it in iSyncSF's
-- status codes (pgforce_core::log::AuditStatus; the README lists them). has_error, table_name and processed_at
-- filter through indexes on the log and the archive. For pgforce_monitor: error messages can hold row values.
CREATE VIEW @extschema@.sync_audit AS
SELECT e.id                             AS log_id,
       e.table_name::text               AS table_name,
       e.record_id,
       m.sobject,
       e.action::text                   AS action,
       e.state::text                    AS state,
       s.code                           AS status_code,
       @extschema@._audit_status_text(s.code) AS status_text,
       e.state::pg_catalog.text OPERATOR(pg_catalog.=) 'FAILED'::pg_catalog.text AS has_error,
       e.sf_message                     AS error_message,
       e.sfid::text                     AS sfid,
       e.attempts,
       e.processed_at,
       e.depth
  FROM (SELECT id, table_name, record_id, action, state, sf_result, sf_message, sfid, attempts, processed_at, relid,
               depth
          FROM @extschema@._trigger_log
        UNION ALL
        SELECT id, table_name, record_id, action, state, sf_result, sf_message, sfid, attempts, processed_at, relid,
               depth
          FROM @extschema@._trigger_log_archive) e
 CROSS JOIN LATERAL (SELECT @extschema@._audit_status(e.state, e.action, e.sf_result) AS code) s
  LEFT JOIN @extschema@._mapping m
    ON CASE WHEN e.relid IS NULL THEN m.table_name::pg_catalog.text OPERATOR(pg_catalog.=) e.table_name::pg_catalog.text
            ELSE m.relid::pg_catalog.oid OPERATOR(pg_catalog.=) e.relid::pg_catalog.oid END;
REVOKE ALL ON FUNCTION @extschema@._audit_status(text, text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._audit_status_text(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._audit_status(text, text, integer) TO pgforce_monitor;
GRANT EXECUTE ON FUNCTION @extschema@._audit_status_text(integer) TO pgforce_monitor;
GRANT SELECT ON @extschema@.sync_audit TO pgforce_monitor;

CREATE FUNCTION @extschema@._diagnose() RETURNS TABLE (check_name text, status text, detail text, hint text)
	STRICT VOLATILE PARALLEL UNSAFE
	LANGUAGE c
	AS 'MODULE_PATHNAME', '_diagnose_wrapper';

-- API: Public. Looks at the set-up the way the troubleshooting checklists do and returns one row per check
-- (check_name, status ok|warning|error, detail, hint; not "check": a reserved word breaks WHERE check LIKE ...):
-- the library and the worker, the settings, a login with the
-- configured credentials (Salesforce's OAuth error verbatim when it fails), the API budget, each mapping against
-- Salesforce's describe, the oldest change waiting, failures by error code. For pgforce_operator: it logs in and
-- reads one describe per sObject (a few API calls), as the extension's owner, with the worker's settings.
CREATE FUNCTION @extschema@.diagnose()
RETURNS TABLE (check_name text, status text, detail text, hint text)
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT * FROM @extschema@._diagnose() $fn$;
REVOKE ALL ON FUNCTION @extschema@._diagnose() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.diagnose() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.diagnose() TO pgforce_operator;

CREATE FUNCTION @extschema@._preview(tbl oid, max_records integer)
RETURNS TABLE (request integer, wave integer, method text, path text, record jsonb, log_ids bigint[],
               table_name text, sobject text)
	VOLATILE PARALLEL UNSAFE
	LANGUAGE c
	AS 'MODULE_PATHNAME', '_preview_wrapper';

-- API: Public. The requests the worker would send next, without sending, claiming or changing anything: one row per
-- record (the JSON it would carry) with its call (request number, wave: parents first, method, path) and the log ids
-- it covers, then the entries that would be settled without a call (method NONE, path says why). Of one mapped table
-- or all, paused mappings included (map a table paused => true to look at its first backlog). In-doubt inserts are
-- looked for in Salesforce and numbers checked against its describe when the worker sends; a preview does neither.
-- For pgforce_monitor: it shows row values.
CREATE FUNCTION @extschema@.preview(tbl regclass DEFAULT NULL, max_records integer DEFAULT 200)
RETURNS TABLE (request integer, wave integer, method text, path text, record jsonb, log_ids bigint[],
               table_name text, sobject text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM @extschema@._require_mapped(tbl);
    RETURN QUERY SELECT * FROM @extschema@._preview(tbl::pg_catalog.oid, max_records);
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@._preview(oid, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.preview(regclass, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.preview(regclass, integer) TO pgforce_monitor;

-- API: Private. Delivery counters per mapping since the sync worker started, written by it at most once a second;
-- read them through salesforce.sync_metrics.
CREATE TABLE @extschema@._metrics (
    table_name varchar(128) PRIMARY KEY,
    since      timestamptz NOT NULL,
    sent       bigint NOT NULL DEFAULT 0,
    succeeded  bigint NOT NULL DEFAULT 0,
    failed     bigint NOT NULL DEFAULT 0,
    retried    bigint NOT NULL DEFAULT 0,
    outage_requeued bigint NOT NULL DEFAULT 0,
    requests   bigint NOT NULL DEFAULT 0,
    bytes      bigint NOT NULL DEFAULT 0,
    api_calls  bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- API: Public. Per mapping: the worker's counters since it started (records sent, succeeded, failed, retried;
-- requests, request bytes, API calls) and the delivery latency — from the change's transaction to Salesforce's
-- answer, in milliseconds — at the 50th, 95th and 99th percentile over the last minute and the last hour. For
-- pgforce_monitor (README: a queries.yaml for postgres_exporter).
CREATE VIEW @extschema@.sync_metrics AS
SELECT m.table_name,
       c.since,
       coalesce(c.sent, 0)      AS sent,
       coalesce(c.succeeded, 0) AS succeeded,
       coalesce(c.failed, 0)    AS failed,
       coalesce(c.retried, 0)   AS retried,
       coalesce(c.outage_requeued, 0) AS outage_requeued,
       coalesce(c.requests, 0)  AS requests,
       coalesce(c.bytes, 0)     AS bytes,
       coalesce(c.api_calls, 0) AS api_calls,
       pg_catalog.round(lat.p50_1m)::pg_catalog.int8 AS latency_ms_p50_1m, pg_catalog.round(lat.p95_1m)::pg_catalog.int8 AS latency_ms_p95_1m, pg_catalog.round(lat.p99_1m)::pg_catalog.int8 AS latency_ms_p99_1m,
       pg_catalog.round(lat.p50_1h)::pg_catalog.int8 AS latency_ms_p50_1h, pg_catalog.round(lat.p95_1h)::pg_catalog.int8 AS latency_ms_p95_1h, pg_catalog.round(lat.p99_1h)::pg_catalog.int8 AS latency_ms_p99_1h,
       -- reading mappings: records written from Salesforce, and seconds since a read last reached the end
       r.rows_read,
       (EXTRACT(epoch FROM (pg_catalog.now() OPERATOR(pg_catalog.-) r.read_at)))::pg_catalog.float8 AS read_lag_seconds
  FROM @extschema@._mapping m
  LEFT JOIN @extschema@._metrics c ON c.table_name::pg_catalog.text OPERATOR(pg_catalog.=) m.table_name::pg_catalog.text
  LEFT JOIN @extschema@._read_state r
         ON r.relid OPERATOR(pg_catalog.=) m.relid AND m.access OPERATOR(pg_catalog.<>) 'write_only'
  LEFT JOIN LATERAL (
        SELECT pg_catalog.percentile_cont(0.5::float8) WITHIN GROUP (ORDER BY d.ms) FILTER (WHERE d.recent) AS p50_1m,
               pg_catalog.percentile_cont(0.95::float8) WITHIN GROUP (ORDER BY d.ms) FILTER (WHERE d.recent) AS p95_1m,
               pg_catalog.percentile_cont(0.99::float8) WITHIN GROUP (ORDER BY d.ms) FILTER (WHERE d.recent) AS p99_1m,
               pg_catalog.percentile_cont(0.5::float8) WITHIN GROUP (ORDER BY d.ms) AS p50_1h,
               pg_catalog.percentile_cont(0.95::float8) WITHIN GROUP (ORDER BY d.ms) AS p95_1h,
               pg_catalog.percentile_cont(0.99::float8) WITHIN GROUP (ORDER BY d.ms) AS p99_1h
          FROM (SELECT pg_catalog.date_part('epoch', e.processed_at OPERATOR(pg_catalog.-) e.created_at)
                           OPERATOR(pg_catalog.*) 1000::float8 AS ms,
                       e.processed_at OPERATOR(pg_catalog.>=) (pg_catalog.now() OPERATOR(pg_catalog.-) '1 minute'::interval) AS recent
                  FROM (SELECT l.processed_at, l.created_at FROM @extschema@._trigger_log l
                         WHERE l.table_name::pg_catalog.text OPERATOR(pg_catalog.=) m.table_name::pg_catalog.text
                           AND l.state::pg_catalog.text OPERATOR(pg_catalog.=) 'SUCCESS'::pg_catalog.text
                           AND coalesce(l.processed_at, l.created_at) OPERATOR(pg_catalog.>=) (pg_catalog.now() OPERATOR(pg_catalog.-) '1 hour'::interval)
                        UNION ALL
                        SELECT a.processed_at, a.created_at FROM @extschema@._trigger_log_archive a
                         WHERE a.table_name::pg_catalog.text OPERATOR(pg_catalog.=) m.table_name::pg_catalog.text
                           AND a.state::pg_catalog.text OPERATOR(pg_catalog.=) 'SUCCESS'::pg_catalog.text
                           AND a.processed_at OPERATOR(pg_catalog.>=) (pg_catalog.now() OPERATOR(pg_catalog.-) '1 hour'::interval)) e) d) lat ON true;
GRANT SELECT ON @extschema@.sync_metrics TO pgforce_monitor;

CREATE FUNCTION @extschema@._rollback(since timestamptz, tbl oid, dry_run boolean, force boolean, salesforce_only boolean)
RETURNS TABLE (table_name text, record_id bigint, sfid text, action text, detail text, log_id bigint)
	VOLATILE PARALLEL UNSAFE
	LANGUAGE c
	AS 'MODULE_PATHNAME', '_rollback_wrapper';

-- API: Public. Undoes in Salesforce what pgforce delivered since `since` (of one mapped table, or all), newest first,
-- through the queue (retried, audited, visible): each record it created is deleted, each field it changed is set
-- back to its value before the first change since; each record it deleted is reported with its sfid (only
-- Salesforce's recycle bin can bring it back). A record changed in Salesforce by someone else since pgforce's last
-- write to it is reported and left alone unless force. By default Postgres goes back with it (rows inserted since
-- are deleted, changed fields set back, as the sync engine's writes: nothing is captured twice); salesforce_only
-- leaves the rows and marks them _hc_lastop = 'ROLLED_BACK'. dry_run (the default) only returns the plan. For
-- pgforce_operator.
CREATE FUNCTION @extschema@.rollback(
    since timestamptz,
    tbl regclass DEFAULT NULL,
    dry_run boolean DEFAULT true,
    force boolean DEFAULT false,
    salesforce_only boolean DEFAULT false
) RETURNS TABLE (table_name text, record_id bigint, sfid text, action text, detail text, log_id bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF since IS NULL OR dry_run IS NULL OR force IS NULL OR salesforce_only IS NULL THEN
        RAISE EXCEPTION 'salesforce.rollback() needs a moment to roll back to, and its options not NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'SELECT * FROM salesforce.rollback(now() - interval ''1 hour'') shows what undoing the last hour takes.';
    END IF;
    PERFORM @extschema@._require_mapped(tbl);
    RETURN QUERY SELECT * FROM @extschema@._rollback(since, tbl::pg_catalog.oid, dry_run, force, salesforce_only);
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@._rollback(timestamptz, oid, boolean, boolean, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.rollback(timestamptz, regclass, boolean, boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.rollback(timestamptz, regclass, boolean, boolean, boolean) TO pgforce_operator;


-- alter_mapping's library function (pgrx's definition).
CREATE FUNCTION @extschema@._alter_mapping(
	"tbl" oid,
	"fields" TEXT[],
	"upsert_field" TEXT,
	"mode" TEXT,
	"relationships" jsonb
) RETURNS VOID
LANGUAGE c
AS 'MODULE_PATHNAME', '_alter_mapping_wrapper';

-- API: Public. Changes a mapping in place: its fields, upsert field ('' removes it), mode or relationships; what is
-- not given stays. Unlike unmap_table + map_table it keeps the mapping's pause, its queue (captured changes go out
-- under the new fields; read_only holds them until the mapping writes again), its statistics and its creation time.
-- For the roles that may map the table (map_table's rules).
CREATE FUNCTION @extschema@.alter_mapping(
    tbl regclass,
    fields text[] DEFAULT NULL,
    upsert_field text DEFAULT NULL,
    mode text DEFAULT NULL,
    relationships jsonb DEFAULT NULL
) RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT @extschema@._alter_mapping(tbl::pg_catalog.oid, fields, upsert_field, mode, relationships) $fn$;
REVOKE ALL ON FUNCTION @extschema@._alter_mapping(oid, text[], text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.alter_mapping(regclass, text[], text, text, jsonb) FROM PUBLIC;

-- API: Private. The mapped table a name in text means to pgforce's functions (pause('contact'), ...; Heroku
-- Connect's repair functions take names so): with a schema, that table; without, the mapped table of that name
-- (mapped tables' names are unique without their schema: the trigger log names them so). Never through a
-- search_path. None: 42P01, with the mapped tables as the hint; a table that is not mapped is refused by the function
-- it serves (42704). Everyone may ask (sync_status shows the names to everyone); that function checks who may act.
CREATE FUNCTION @extschema@._table_named(name text) RETURNS regclass
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    parts text[];
    found regclass;
    mapped text;
BEGIN
    IF name IS NULL THEN
        RETURN NULL;
    END IF;
    parts := pg_catalog.parse_ident(name);
    IF pg_catalog.cardinality(parts) OPERATOR(pg_catalog.=) 1 THEN
        SELECT m.relid INTO found FROM @extschema@._mapping m
         WHERE m.table_name::pg_catalog.text OPERATOR(pg_catalog.=) parts[1];
    ELSIF pg_catalog.cardinality(parts) OPERATOR(pg_catalog.=) 2 THEN
        found := pg_catalog.to_regclass(pg_catalog.quote_ident(parts[1]) OPERATOR(pg_catalog.||) '.'
                                        OPERATOR(pg_catalog.||) pg_catalog.quote_ident(parts[2]));
    END IF;
    IF found IS NULL THEN
        SELECT pg_catalog.string_agg(m.relid::pg_catalog.text, ', ' ORDER BY m.table_name) INTO mapped
          FROM @extschema@._mapping m;
        RAISE EXCEPTION 'no mapped table is named "%"', name
            USING ERRCODE = 'undefined_table',
                  HINT = CASE WHEN mapped IS NULL THEN 'No table is mapped yet: salesforce.map_table() maps one.'
                              ELSE 'The mapped tables: ' OPERATOR(pg_catalog.||) mapped OPERATOR(pg_catalog.||) '.' END;
    END IF;
    RETURN found;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@._table_named(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._table_named(text) TO PUBLIC;

-- API: Private. Raises 42501 naming the calling role and what to grant it unless it may execute fn: Postgres' own
-- "permission denied for function" names neither. The text forms below call it first.
CREATE FUNCTION @extschema@._may_call(fn regprocedure, grant_hint text) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT pg_catalog.has_function_privilege(fn, 'EXECUTE') THEN
        RAISE EXCEPTION 'permission denied: role % may not call %', current_user, fn
            USING ERRCODE = 'insufficient_privilege',
                  HINT = pg_catalog.replace(grant_hint, '%ROLE%', pg_catalog.quote_ident(current_user::pg_catalog.text));
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@._may_call(regprocedure, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._may_call(regprocedure, text) TO PUBLIC;

-- API: Public. Every function that takes a mapped table takes its name as text too: pause('contact') as well as
-- pause('salesforce.contact'::regclass) (salesforce._table_named says how a name is found); a literal argument
-- picks these. They run as the caller and only call the regclass form, which keeps its grants, after saying who may
-- if the caller may not: so anyone may call them.
CREATE FUNCTION @extschema@.pause(tbl text) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM @extschema@._may_call('@extschema@.pause(pg_catalog.regclass)', 'GRANT pgforce_operator TO %ROLE%;');
    RETURN @extschema@.pause(@extschema@._table_named(tbl));
END
$fn$;
CREATE FUNCTION @extschema@.resume(tbl text) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM @extschema@._may_call('@extschema@.resume(pg_catalog.regclass)', 'GRANT pgforce_operator TO %ROLE%;');
    RETURN @extschema@.resume(@extschema@._table_named(tbl));
END
$fn$;
CREATE FUNCTION @extschema@.retry_failed(tbl text) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM @extschema@._may_call('@extschema@.retry_failed(pg_catalog.regclass)', 'GRANT pgforce_operator TO %ROLE%;');
    RETURN @extschema@.retry_failed(@extschema@._table_named(tbl));
END
$fn$;
CREATE FUNCTION @extschema@.preview(tbl text, max_records integer DEFAULT 200)
RETURNS TABLE (request integer, wave integer, method text, path text, record jsonb, log_ids bigint[],
               table_name text, sobject text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM @extschema@._may_call('@extschema@.preview(pg_catalog.regclass, pg_catalog.int4)',
                                  'GRANT pgforce_monitor TO %ROLE%;');
    RETURN QUERY SELECT * FROM @extschema@.preview(@extschema@._table_named(tbl),
                                                   max_records);
END
$fn$;
CREATE FUNCTION @extschema@.rollback(
    since timestamptz,
    tbl text,
    dry_run boolean DEFAULT true,
    force boolean DEFAULT false,
    salesforce_only boolean DEFAULT false
) RETURNS TABLE (table_name text, record_id bigint, sfid text, action text, detail text, log_id bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM @extschema@._may_call(
        '@extschema@.rollback(pg_catalog.timestamptz, pg_catalog.regclass, pg_catalog.bool, pg_catalog.bool, pg_catalog.bool)',
        'GRANT pgforce_operator TO %ROLE%;');
    RETURN QUERY SELECT * FROM @extschema@.rollback(since, @extschema@._table_named(tbl),
                                                    dry_run, force, salesforce_only);
END
$fn$;
CREATE FUNCTION @extschema@.unmap_table(tbl text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM @extschema@._may_call('@extschema@.unmap_table(pg_catalog.regclass)',
        'A superuser grants it: GRANT EXECUTE ON FUNCTION salesforce.unmap_table(regclass) TO %ROLE%;');
    PERFORM @extschema@.unmap_table(@extschema@._table_named(tbl));
END
$fn$;
CREATE FUNCTION @extschema@.alter_mapping(
    tbl text,
    fields text[] DEFAULT NULL,
    upsert_field text DEFAULT NULL,
    mode text DEFAULT NULL,
    relationships jsonb DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM @extschema@._may_call(
        '@extschema@.alter_mapping(pg_catalog.regclass, pg_catalog.text[], pg_catalog.text, pg_catalog.text, pg_catalog.jsonb)',
        'A superuser grants it: GRANT EXECUTE ON FUNCTION salesforce.alter_mapping(regclass, text[], text, text, jsonb) TO %ROLE%;');
    PERFORM @extschema@.alter_mapping(@extschema@._table_named(tbl), fields,
                                      upsert_field, mode, relationships);
END
$fn$;
GRANT EXECUTE ON FUNCTION @extschema@.pause(text), @extschema@.resume(text), @extschema@.retry_failed(text),
    @extschema@.preview(text, integer), @extschema@.rollback(timestamptz, text, boolean, boolean, boolean),
    @extschema@.unmap_table(text),
    @extschema@.alter_mapping(text, text[], text, text, jsonb) TO PUBLIC;

-- API: Public. The requests the sync worker made to Salesforce, newest last (pg_net's _http_response, pg_cron's
-- job_run_details): when, method, path (without its query string: ids and SOQL hold row values), records sent,
-- the HTTP status (NULL: no answer), how long it took and the error code of a failed one. The newest
-- pgforce.request_history are kept. Readable by pgforce_monitor.
CREATE TABLE @extschema@.sync_requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requested_at timestamptz NOT NULL,
    method       text NOT NULL,
    path         text NOT NULL,
    records      integer NOT NULL DEFAULT 0,
    http_status  integer,
    milliseconds integer NOT NULL,
    error_code   text
);
CREATE INDEX sync_requests_idx_requested_at ON @extschema@.sync_requests (requested_at);
GRANT SELECT ON @extschema@.sync_requests TO pgforce_monitor;

-- API: Public. Reads every record of a reading mapping (read_only, read_write) again: rows are updated in place (only those that
-- changed are written), and when the read reaches the end, the rows whose records are gone from Salesforce are
-- deleted. The table is never emptied or locked; applications go on reading and writing it. For pgforce_operator
-- (and superusers).
CREATE FUNCTION @extschema@.reload(tbl regclass) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM @extschema@._require_mapped(tbl);
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'reload() needs a table' USING ERRCODE = 'null_value_not_allowed',
              HINT = 'SELECT salesforce.reload(''<table>'');';
    END IF;
    UPDATE @extschema@._read_state r
       SET state = 'RELOAD_TABLE', position_stamp = NULL, position_id = NULL, reloading_since = pg_catalog.now(),
           bulk_job = NULL, bulk_locator = NULL, bulk_since = NULL,
           generation = r.generation OPERATOR(pg_catalog.+) 1
      FROM @extschema@._mapping m
     WHERE r.relid OPERATOR(pg_catalog.=) tbl AND m.relid OPERATOR(pg_catalog.=) tbl
       AND m.access OPERATOR(pg_catalog.<>) 'write_only';
    IF NOT FOUND THEN
        RAISE EXCEPTION '% does not read from Salesforce', tbl USING ERRCODE = 'object_not_in_prerequisite_state',
              HINT = pg_catalog.format('Only read_only and read_write mappings read: SELECT salesforce.alter_mapping(%L, mode => ''read_write'');', tbl::pg_catalog.text);
    END IF;
    DELETE FROM @extschema@._read_seen s WHERE s.relid OPERATOR(pg_catalog.=) tbl;
    PERFORM @extschema@._wake_worker_at_commit();
    RETURN pg_catalog.format('%s is read again when this transaction commits: salesforce.sync_status shows its read_state', tbl);
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.reload(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.reload(regclass) TO pgforce_operator;
CREATE FUNCTION @extschema@.reload(tbl text) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM @extschema@._may_call('@extschema@.reload(pg_catalog.regclass)', 'GRANT pgforce_operator TO %ROLE%;');
    RETURN @extschema@.reload(@extschema@._table_named(tbl));
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.reload(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.reload(text) TO PUBLIC;
