-- pgforce schema objects, created before the functions pgrx generates.
--
-- Nothing pgforce installs resolves a name through a schema ordinary roles can write: CREATE EXTENSION puts
-- hstore's schema (usually public) on the search_path, where a database owner could have planted operators and
-- functions that match pgforce's expressions better than pg_catalog's. So the script runs with only its own schema
-- (after pg_catalog, searched first), every operator and function in a constraint, index, default or view is
-- qualified with pg_catalog, and hstore is named by its own schema (sql/finalize.sql looks it up).
SELECT pg_catalog.set_config('search_path', '@extschema@, pg_temp', true);
-- API: Public. Heroku Connect's trigger log: its 15 columns in Connect's order (names, order and meaning kept so the
-- documented SQL runs unchanged; ids widened to bigint), then pgforce's retry bookkeeping.
CREATE SEQUENCE @extschema@._trigger_log_id_seq AS bigint;

CREATE TABLE @extschema@._trigger_log (
    id              bigint NOT NULL DEFAULT pg_catalog.nextval('@extschema@._trigger_log_id_seq'::pg_catalog.regclass),
    txid            bigint,
    created_at      timestamptz DEFAULT pg_catalog.now(),
    updated_at      timestamptz DEFAULT pg_catalog.now(),
    processed_at    timestamptz,
    processed_tx    bigint,
    state           varchar(8) NOT NULL DEFAULT 'NEW',
    action          varchar(7),
    table_name      varchar(128),
    record_id       bigint,
    sfid            varchar(18),
    old             text,
    "values"        text,
    sf_result       integer,
    sf_message      text,
    -- pgforce: delivery attempts made so far, and when the next one may start (NULL: at once).
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    -- pgforce: the table that was written (capture records it; rows users insert by the documented SQL leave it
    -- NULL and are resolved by table_name).
    relid           regclass,
    -- pgforce: an attempt was sent and its outcome is unknown (no answer, a crash before it was recorded): when
    -- that attempt was claimed. An insert in doubt is looked for in Salesforce before it is sent again.
    in_doubt_since  timestamptz,
    -- pgforce: how many levels of parents went before this write in its claim (iSyncSF's SubSequence;
    -- relationships by foreign key), set when its outcome is recorded.
    depth           integer,
    -- pgforce: the Bulk API 2.0 job this change is in flight in (PENDING until the job's results are recorded).
    bulk_job        text,
    CONSTRAINT _trigger_log_pkey PRIMARY KEY (id),
    CONSTRAINT _trigger_log_state_check CHECK (state::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['NEW', 'PENDING',
        'SUCCESS', 'FAILED', 'MERGED', 'IGNORE', 'IGNORED', 'READONLY', 'REQUEUE', 'REQUEUED']::pg_catalog.text[])),
    CONSTRAINT _trigger_log_action_check CHECK (action::pg_catalog.text OPERATOR(pg_catalog.=) ANY
        (ARRAY['INSERT', 'UPDATE', 'DELETE']::pg_catalog.text[]))
);
ALTER SEQUENCE @extschema@._trigger_log_id_seq OWNED BY @extschema@._trigger_log.id;

-- Every index here is paid by every captured row, so the live log carries only two that capture writes to:
-- the primary key and the work queue the worker drains in id order, by table (a paused mapping's queue is never read). The others are partial indexes whose rows
-- only the worker creates (or, for deletes, capture): FAILED rows, rows waiting for a scheduled retry, and finished rows by age (what the
-- archiver moves), so no worker query scans the whole log.
CREATE INDEX _trigger_log_idx_queue ON @extschema@._trigger_log (relid, id)
    WHERE state::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['NEW', 'PENDING', 'IGNORE']::pg_catalog.text[]);
CREATE INDEX _trigger_log_idx_failed ON @extschema@._trigger_log (table_name, id)
    WHERE state::pg_catalog.text OPERATOR(pg_catalog.=) 'FAILED'::pg_catalog.text;
CREATE INDEX _trigger_log_idx_retry ON @extschema@._trigger_log (next_attempt_at)
    WHERE state::pg_catalog.text OPERATOR(pg_catalog.=) 'NEW'::pg_catalog.text AND next_attempt_at IS NOT NULL;
CREATE INDEX _trigger_log_idx_finished ON @extschema@._trigger_log ((coalesce(processed_at, created_at)))
    WHERE state::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['SUCCESS', 'MERGED', 'IGNORED', 'FAILED', 'READONLY',
                                                                  'REQUEUED']::pg_catalog.text[]);
-- Deletes: an outcome is written back into its row, and a retried change is sent, only if no later delete of the row
-- was logged (the row there may be another, inserted again under the same id); an insert's write-back finds the
-- sfid-less delete that followed it, which must delete the record the insert created. Capture pays for it on deletes
-- only.
CREATE INDEX _trigger_log_idx_delete ON @extschema@._trigger_log (record_id)
    WHERE action::pg_catalog.text OPERATOR(pg_catalog.=) 'DELETE'::pg_catalog.text;
CREATE INDEX _trigger_log_idx_bulk_job ON @extschema@._trigger_log (bulk_job)
    WHERE bulk_job IS NOT NULL;

COMMENT ON TABLE @extschema@._trigger_log IS
    'pgforce: every captured change of a mapped table (Heroku Connect''s trigger log). Reset state to NEW to retry.';

-- API: Public. Processed entries move here; users set state = 'REQUEUE' to have them copied back.
CREATE TABLE @extschema@._trigger_log_archive (
    id              bigint NOT NULL,
    txid            bigint,
    created_at      timestamptz,
    updated_at      timestamptz,
    processed_at    timestamptz,
    processed_tx    bigint,
    state           varchar(8),
    action          varchar(7),
    table_name      varchar(128),
    record_id       bigint,
    sfid            varchar(18),
    old             text,
    "values"        text,
    sf_result       integer,
    sf_message      text,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    relid           regclass,
    in_doubt_since  timestamptz,
    depth           integer,
    bulk_job        text,
    CONSTRAINT _trigger_log_archive_pkey PRIMARY KEY (id)
);
CREATE INDEX _trigger_log_archive_idx_created_at ON @extschema@._trigger_log_archive (created_at);
CREATE INDEX _trigger_log_archive_idx_record_id ON @extschema@._trigger_log_archive (table_name, record_id);
CREATE INDEX _trigger_log_archive_idx_state_table_name ON @extschema@._trigger_log_archive (state, table_name)
    WHERE state::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['FAILED', 'REQUEUE']::pg_catalog.text[]);
-- The audit (salesforce.sync_audit) by time.
CREATE INDEX _trigger_log_archive_idx_processed_at ON @extschema@._trigger_log_archive (processed_at);

COMMENT ON TABLE @extschema@._trigger_log_archive IS
    'pgforce: processed trigger log entries. Set state = ''REQUEUE'' to send an entry again.';

-- API: Private. One row per mapped table; salesforce.map_table and salesforce.unmap_table maintain it.
CREATE TABLE @extschema@._mapping (
    table_name   varchar(128) NOT NULL,  -- as written to _trigger_log.table_name (no schema)
    relid        regclass NOT NULL,
    sobject      text NOT NULL,
    access       text NOT NULL,
    upsert_field text,
    fields       text[] NOT NULL,        -- mapped columns, sent as Salesforce fields of the same name
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_success_at timestamptz,         -- written by the sync worker
    last_error_at   timestamptz,
    last_error      text,
    paused_at       timestamptz,         -- delivery paused (salesforce.pause) since; capture goes on
    -- foreign key column → Salesforce lookup field: the column holds the parent row's id, sent as its sfid
    relationships   jsonb NOT NULL DEFAULT '{}',
    -- read_only mappings: how often they read (NULL: pgforce.read_interval), and what a record deleted in
    -- Salesforce does to its row ('delete', as Heroku Connect does, or 'flag': isdeleted = true)
    read_interval   interval,
    on_delete       text NOT NULL DEFAULT 'delete',
    CONSTRAINT _mapping_pkey PRIMARY KEY (table_name),
    CONSTRAINT _mapping_relid_key UNIQUE (relid),
    CONSTRAINT _mapping_access_check CHECK (access OPERATOR(pg_catalog.=) ANY (ARRAY['read_write', 'write_only', 'read_only']::pg_catalog.text[])),
    CONSTRAINT _mapping_on_delete_check CHECK (on_delete OPERATOR(pg_catalog.=) ANY (ARRAY['delete', 'flag']::pg_catalog.text[]))
);

-- pg_dump keeps the queue, the archive and the mappings (they are data, not extension code).
SELECT pg_catalog.pg_extension_config_dump('@extschema@._trigger_log', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@._trigger_log_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@._trigger_log_archive', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@._mapping', '');

-- API: Private. Which server delivers this log: the worker writes its identity (cluster system identifier, WAL
-- timeline, host and data directory) here at its first delivery, and pauses when it finds another's (a restored
-- backup, a promoted replica, a copy, a pg_dump restored elsewhere: this table is dumped with the log) until
-- salesforce.resume() confirms this server. At most one row.
CREATE TABLE @extschema@._deliverer (
    one          boolean PRIMARY KEY DEFAULT true CHECK (one),
    identity     text NOT NULL,
    confirmed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('@extschema@._deliverer', '');

-- API: Private. Bulk API 2.0 jobs the worker created and has not recorded the results of (pgforce_core::delivery::
-- bulk): their changes (_trigger_log.bulk_job) stay PENDING while Salesforce runs them, and the worker, restarted
-- or not, polls them and records each change's outcome from the results. Superusers only, never dumped (a
-- restored copy must not wait for another server's jobs).
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

-- API: Private. The refresh token Salesforce rotated the configured one to (refresh_token flow). Logins use it for as
-- long as pgforce.refresh_token (or its file) still holds the token it was rotated from (configured_sha256); a new
-- configured token starts over. Superusers only, never dumped, never shown by a view: it is a secret.
CREATE TABLE @extschema@._refresh_token (
    one               boolean PRIMARY KEY DEFAULT true CHECK (one),
    configured_sha256 text NOT NULL,
    refresh_token     text NOT NULL,
    rotated_at        timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- API: Private. The sync worker's connection state, one row; read it through salesforce.sync_status.
CREATE TABLE @extschema@._sync_state (
    state      text NOT NULL DEFAULT 'IDLE',
    message    text,
    api_used   bigint,
    api_limit  bigint,
    worker_pid integer,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- when the worker tries Salesforce again (an outage's backoff, a refused login); NULL when it is not waiting
    next_attempt_at timestamptz
);
INSERT INTO @extschema@._sync_state DEFAULT VALUES;

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
