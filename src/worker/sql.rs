//! Every statement the sync worker runs, in one place. They are prepared once per connection (and again only when
//! the extension is re-created), name every table with its schema and every function and operator with
//! `pg_catalog` (the worker's own search_path is `pg_catalog, pg_temp` too: no schema a user can write to is ever
//! searched), and take their values as parameters. State and action names are printed from `pgforce_core::log`.

use std::collections::HashMap;

use pgforce_core::alert::AlertKind;
use pgforce_core::delivery::bulk;
use pgforce_core::log::{sql_list, Action, LastOp, LogState};
use pgforce_core::mapping::STATUS_COLUMNS;
use pgrx::pg_sys::{self, PgOid};
use pgrx::spi::{OwnedPreparedStatement, SpiClient};

use super::error::WorkerError;
use pgforce_core::status::ConnState;

/// The log's columns, in Heroku Connect's order, then pgforce's (for moves between the log and the archive).
const LOG_COLUMNS: &str = "id, txid, created_at, updated_at, processed_at, processed_tx, state, action, table_name, \
                           record_id, sfid, old, \"values\", sf_result, sf_message, attempts, next_attempt_at, relid, \
                           in_doubt_since, depth";

/// The schema pgforce is installed in (quoted) and its version, if it is installed in this database.
pub const INSTALLED_SCHEMA: &str =
    "SELECT pg_catalog.quote_ident(n.nspname)::pg_catalog.text, e.extversion::pg_catalog.text FROM pg_catalog.pg_extension e \
                                    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace \
                                    WHERE e.extname OPERATOR(pg_catalog.=) 'pgforce'";

/// The delivery lock: a session-level advisory lock on (`pgfc`, 1) in the worker's database.
const DELIVERY_LOCK_CLASS: i32 = 0x7067_6663;
const DELIVERY_LOCK_OBJECT: i32 = 1;

// Operators, qualified. OPERATOR(…) has no precedence of its own (it binds like any other operator, left to right),
// so every compound expression below is parenthesised.
const EQ: &str = "OPERATOR(pg_catalog.=)";
const LT: &str = "OPERATOR(pg_catalog.<)";
const LE: &str = "OPERATOR(pg_catalog.<=)";
const GT: &str = "OPERATOR(pg_catalog.>)";
const GE: &str = "OPERATOR(pg_catalog.>=)";
const NE: &str = "OPERATOR(pg_catalog.<>)";
const PLUS: &str = "OPERATOR(pg_catalog.+)";
const MINUS: &str = "OPERATOR(pg_catalog.-)";
const TIMES: &str = "OPERATOR(pg_catalog.*)";
const DIVIDE: &str = "OPERATOR(pg_catalog./)";

/// Statements on one mapped table.
pub struct TableStatements {
    /// `$1 bigint[]` record ids → `(id, sfid)` of those that have an sfid.
    pub current_sfids: OwnedPreparedStatement,
    /// `$1 bigint[]` record ids → `(id, row)`: each row as capture prints it (hstore text, without the status
    /// columns).
    pub current_rows: OwnedPreparedStatement,
    /// `$1 bigint[]` ids, `$2 text[]` sfids, `$3 text[]` `_hc_lastop`, `$4 text[]` `_hc_err` → the ids of the rows
    /// still there.
    pub write_back: OwnedPreparedStatement,
    /// `$1 bigint[]` ids: locks these rows for the write-back.
    pub lock_rows: OwnedPreparedStatement,
    /// `$1 bigint[]` ids, `$2 text[]` sfids: undoes a write-back into rows that turned out to be re-inserted ones.
    pub take_back: OwnedPreparedStatement,
    /// `$1 text` sfid, `$2 bigint` id → another row that has this sfid.
    pub sfid_owner: OwnedPreparedStatement,
    /// `$1 text[]` Salesforce ids → those some row already has as its sfid.
    pub owned_sfids: OwnedPreparedStatement,
}

/// The worker's statements for the extension installed in `schema`.
pub struct Statements {
    pub schema: String,
    /// The schema of the hstore extension (quoted): the worker prints rows as capture does, with `hstore(row)`.
    pub hstore: String,
    /// `$1 float8` seconds: rows a crash left `PENDING` go back to `NEW`, in doubt (they may have been sent), to be
    /// tried again after that long.
    pub reclaim_pending: OwnedPreparedStatement,
    /// A row deleted while its insert was on its way: its delete was logged without an sfid (as `IGNORE`) and would
    /// leave the new record in Salesforce. `$1 text` the table (qualified), `$2 bigint[]` row ids, `$3 text[]` the
    /// new sfids, `$4 bigint[]` the insert's log id: those deletes become `NEW` with the sfid.
    pub revive_deletes: OwnedPreparedStatement,
    /// After a bug in a cycle: `$1 float8` seconds to wait, `$2 int` max attempts, `$3 text` message. Rows still
    /// `PENDING` cost an attempt (`FAILED` when they run out), in doubt → their ids and tables.
    pub reclaim_after_bug: OwnedPreparedStatement,
    /// `$1 bigint` limit → due queue rows, oldest first, locked.
    pub claim: OwnedPreparedStatement,
    /// The same, of these records only (`QueueRead::Parents`).
    pub claim_parents: OwnedPreparedStatement,
    /// `$1 bigint[]` ids, `$2 text` state, `$3 text` message.
    pub set_state: OwnedPreparedStatement,
    /// The read-write mappings with their columns and types.
    pub load_tables: OwnedPreparedStatement,
    /// Per read-write mapping, its relationship columns: (table, column, lookup field, parent mapping's table).
    pub load_links: OwnedPreparedStatement,
    /// `$1 text` table, `$2 bool` succeeded, `$3 text` last error.
    pub mapping_stats: OwnedPreparedStatement,
    /// Arrays of ids, states, messages, sfids, attempts, retry delays in ms, in doubt, audit results, depths.
    pub record_log: OwnedPreparedStatement,
    /// Seconds until the earliest scheduled retry.
    pub next_retry_in: OwnedPreparedStatement,
    /// `$1 text` state, `$2 text` message, `$3 bigint` API used, `$4 bigint` API limit. A state without a backoff
    /// clears the next attempt's time.
    pub write_state: OwnedPreparedStatement,
    /// `$1 float8` seconds until the worker tries Salesforce again (an outage's backoff).
    pub write_next_attempt: OwnedPreparedStatement,
    /// `$1 float8` age in seconds, `$2 bigint` batch size.
    pub archive: OwnedPreparedStatement,
    /// `$1 float8` retention in seconds, `$2 bigint` limit.
    pub purge: OwnedPreparedStatement,
    pub requeue: OwnedPreparedStatement,
    /// `$1 float8` seconds since failing, `$2 bigint` limit.
    pub retry_failed: OwnedPreparedStatement,
    /// → the tables with queued entries that are no longer mapped (`oid[]`; no row: none).
    pub unmapped_queued: OwnedPreparedStatement,
    /// `$1 oid[]`: ends the queued entries of these tables: `FAILED`, or `IGNORED` for a no-op.
    pub end_unmapped: OwnedPreparedStatement,
    /// This server's WAL timeline (hex), part of its identity.
    pub timeline: OwnedPreparedStatement,
    /// Tries to take the session-level delivery lock → whether it got it.
    pub delivery_lock: OwnedPreparedStatement,
    /// The pid of the session that holds the delivery lock.
    pub delivery_lock_holder: OwnedPreparedStatement,
    /// The identity of the server that delivers this log, if recorded.
    pub deliverer: OwnedPreparedStatement,
    /// `$1 text`: records this server as the one that delivers this log.
    pub record_deliverer: OwnedPreparedStatement,
    /// `$1 text` table, `$2 bigint[]` row ids, `$3 bigint[]` log ids → the rows a delete logged after that log id
    /// follows.
    pub deleted_later: OwnedPreparedStatement,
    /// `$1 text` table, `$2 bigint[]` row ids → per row: seconds until a queued change of it is due (NULL: none
    /// queued), the message of its last failed change.
    pub parent_states: OwnedPreparedStatement,
    /// `$1 text` id, `$2 bigint[]` log ids: keeps the id of a Bulk job just created and marks its entries.
    pub keep_bulk_job: OwnedPreparedStatement,
    /// `$1 text`, `$2 boolean` cost: forgets a Bulk job; its entries still in flight go back to the queue, in doubt
    /// (at the cost of an attempt when `$2`).
    pub release_bulk_job: OwnedPreparedStatement,
    /// `$1 text`: the entries in flight in a Bulk job, locked, read as a claim reads them (`queue_sql`).
    pub job_entries: OwnedPreparedStatement,
    /// The Bulk jobs not seen finished.
    pub bulk_jobs: OwnedPreparedStatement,
    /// `$1 text[]`: forgets finished Bulk jobs.
    pub forget_bulk_jobs: OwnedPreparedStatement,
    /// How many entries wait in the queue (`NEW`, `PENDING`).
    pub queue_size: OwnedPreparedStatement,
    /// `$1 bigint` limit → how many due `NEW` entries that could go through the Bulk API (of mappings with an
    /// upsert field, or updates and deletes that carry an sfid) the queue holds, counted up to the limit.
    pub due_count: OwnedPreparedStatement,
    /// `$1 text` table, `$2 bigint[]` row ids, `$3 text[]` sfids, `$4 text[]` changes (hstore text): logs updates
    /// that set lookups a broken cycle left out (`delivery::links`).
    pub log_follow_ups: OwnedPreparedStatement,
    /// Forgets the counters of an earlier worker (`_metrics`).
    pub clear_metrics: OwnedPreparedStatement,
    /// `$1 float8` when the worker started (epoch seconds), then arrays of tables, sent, succeeded, failed, retried,
    /// requests, bytes, API calls, entries an outage put back: the counters since then.
    pub write_metrics: OwnedPreparedStatement,
    /// Arrays of when (epoch seconds), method, path, records, HTTP status (NULL: no answer), milliseconds and error
    /// code, then `$8 bigint` pgforce.request_history: keeps the requests in `sync_requests`, the newest only.
    pub write_requests: OwnedPreparedStatement,
    /// `$1 text` channel, `$2 text` payload: an alert, sent at commit.
    pub notify: OwnedPreparedStatement,
    /// `$1 text` kind, `$2 text[]` tables, `$3 text[]` codes, `$4 bigint` count, `$5 text` message, `$6 bigint` held
    /// back, `$7 bool` resolved already (a recovery): keeps the alert in `sync_alerts` (the newest 10,000), and a
    /// recovery resolves the connection alerts before it.
    pub record_alert: OwnedPreparedStatement,
    /// `$1 float8` pgforce.alert_stalled_after in seconds (NULL: off), `$2 float8` pgforce.max_api_usage: marks
    /// resolved the alerts whose cause is gone.
    pub resolve_alerts: OwnedPreparedStatement,
    /// `$1 text[]` tables: whether any of their failures is still open (a held-back alert is re-checked).
    pub failures_open: OwnedPreparedStatement,
    /// The oldest change waiting to be sent, of a mapping not paused → (age in seconds, table).
    pub oldest_waiting: OwnedPreparedStatement,
    /// `$1 text` fingerprint of the configured refresh token → the token Salesforce rotated it to, if any.
    pub kept_refresh_token: OwnedPreparedStatement,
    /// `$1 text` fingerprint of the configured refresh token, `$2 text` the token Salesforce rotated it to.
    pub keep_refresh_token: OwnedPreparedStatement,
    tables: HashMap<String, TableStatements>,
    /// The owner of each mapped table (by qualified name), as of the last claim: writes into a user's table run as
    /// its owner.
    pub owners: HashMap<String, pg_sys::Oid>,
}

/// `$1 text` fingerprint of the configured refresh token → the token Salesforce rotated it to, if any.
pub fn kept_refresh_token_sql(schema: &str) -> String {
    format!("SELECT refresh_token FROM {schema}._refresh_token WHERE configured_sha256 {EQ} $1")
}

/// `$1 text` fingerprint of the configured refresh token, `$2 text` the token Salesforce rotated it to.
pub fn keep_refresh_token_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}._refresh_token (configured_sha256, refresh_token) VALUES ($1, $2)
         ON CONFLICT (one) DO UPDATE
            SET configured_sha256 = excluded.configured_sha256, refresh_token = excluded.refresh_token,
                rotated_at = pg_catalog.now()"
    )
}

/// The tables with queued entries that are no longer mapped (unmapped, dropped), found by skipping through the
/// queue's (relid, id) index, one probe per table: the claim reads mapped tables only, so entries of a table unmapped
/// meanwhile would otherwise wait forever (`end_unmapped`).
pub fn unmapped_queued_sql(schema: &str) -> String {
    let log = format!("{schema}._trigger_log");
    let (new, pending, ignore) = (LogState::New.as_str(), LogState::Pending.as_str(), LogState::Ignore.as_str());
    let queued =
        format!("l.state::pg_catalog.text {EQ} ANY (ARRAY['{new}', '{pending}', '{ignore}']::pg_catalog.text[])");
    format!(
        "WITH RECURSIVE queued AS (
             (SELECT l.relid::pg_catalog.oid AS relid FROM {log} l
               WHERE {queued} AND l.relid IS NOT NULL ORDER BY l.relid LIMIT 1)
             UNION ALL
             SELECT (SELECT l.relid::pg_catalog.oid FROM {log} l
                      WHERE {queued} AND l.relid::pg_catalog.oid {GT} q.relid
                      ORDER BY l.relid LIMIT 1)
               FROM queued q WHERE q.relid IS NOT NULL)
         SELECT pg_catalog.array_agg(q.relid) FROM queued q
          WHERE q.relid IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM {schema}._mapping m WHERE m.relid::pg_catalog.oid {EQ} q.relid)
         HAVING pg_catalog.count(*) {GT} 0"
    )
}

/// `$1 oid[]` tables no longer mapped: their queued entries end `FAILED`, or `IGNORED` for a no-op.
fn end_unmapped_sql(schema: &str) -> String {
    let log = format!("{schema}._trigger_log");
    let (new, ignore, ignored, failed) =
        (LogState::New.as_str(), LogState::Ignore.as_str(), LogState::Ignored.as_str(), LogState::Failed.as_str());
    let delete = Action::Delete.as_str();
    let no_op = format!("(l.state {EQ} '{ignore}' AND l.action::pg_catalog.text {NE} '{delete}')");
    format!(
        "UPDATE {log} l
            SET state = CASE WHEN {no_op} THEN '{ignored}' ELSE '{failed}' END,
                sf_message = CASE WHEN {no_op} THEN NULL ELSE '{UNMAPPED}' END,
                updated_at = pg_catalog.now(), processed_at = pg_catalog.now(), processed_tx = pg_catalog.txid_current()
          WHERE l.relid::pg_catalog.oid {EQ} ANY ($1::pg_catalog.oid[])
            AND l.state::pg_catalog.text {EQ} ANY (ARRAY['{new}', '{ignore}']::pg_catalog.text[])"
    )
}

/// Why the queued entries of a table that is no longer mapped failed.
pub const UNMAPPED: &str = "table is not mapped (salesforce.map_table)";

/// `$1 bigint` threshold → how many due changes the queue holds, counted up to `$1` (`claim::bulk_backlog`).
/// Per mapping not paused, a short index scan each (the queue is indexed by relid): a paused backlog costs nothing.
/// Entries put in by hand name their table only.
pub fn due_count_sql(schema: &str) -> String {
    let log = format!("{schema}._trigger_log");
    let (new, insert) = (LogState::New.as_str(), Action::Insert.as_str());
    let due = format!(
        "l.state::pg_catalog.text {EQ} '{new}'
         AND (l.next_attempt_at IS NULL OR l.next_attempt_at {LE} pg_catalog.now())
         AND (m.upsert_field IS NOT NULL OR (l.action::pg_catalog.text {NE} '{insert}' AND l.sfid IS NOT NULL))"
    );
    format!(
        "SELECT pg_catalog.count(*) FROM (
             (SELECT 1 FROM {schema}._mapping m
               CROSS JOIN LATERAL (SELECT 1 FROM {log} l WHERE {THIS_MAPPING} AND {due}
                                    ORDER BY l.relid, l.id LIMIT $1) x
               WHERE m.paused_at IS NULL
               LIMIT $1)
             UNION ALL
             (SELECT 1 FROM {log} l JOIN {schema}._mapping m ON m.table_name {EQ} l.table_name
               WHERE l.relid IS NULL AND m.paused_at IS NULL AND {due}
               LIMIT $1)) s"
    )
}

/// The oldest change waiting to be sent, of a mapping not paused → (age in seconds, table).
pub fn oldest_waiting_sql(schema: &str) -> String {
    let (new, pending) = (LogState::New.as_str(), LogState::Pending.as_str());
    let waiting = format!("l.state::pg_catalog.text {EQ} ANY (ARRAY['{new}', '{pending}']::pg_catalog.text[])");
    // The oldest of each mapping not paused (one index probe each: the queue is indexed by relid), and of the
    // entries put in by hand, which name their table only.
    format!(
        "SELECT EXTRACT(epoch FROM (pg_catalog.now() {MINUS} o.created_at))::pg_catalog.float8, o.table_name::pg_catalog.text
           FROM ((SELECT w.id, w.created_at, w.table_name
                    FROM {schema}._mapping m
                   CROSS JOIN LATERAL (SELECT l.id, l.created_at, l.table_name FROM {schema}._trigger_log l
                                        WHERE {THIS_MAPPING} AND {waiting}
                                        ORDER BY l.relid, l.id LIMIT 1) w
                   WHERE m.paused_at IS NULL)
                 UNION ALL
                 (SELECT l.id, l.created_at, l.table_name FROM {schema}._trigger_log l
                   WHERE l.relid IS NULL AND {waiting}
                     AND NOT EXISTS (SELECT 1 FROM {schema}._mapping p
                                      WHERE p.paused_at IS NOT NULL AND p.table_name {EQ} l.table_name)
                   ORDER BY l.id LIMIT 1)) o
          ORDER BY o.id
          LIMIT 1"
    )
}

/// The schema of the hstore extension, quoted (`public` if it cannot be found).
pub fn hstore_schema(client: &SpiClient<'_>) -> Result<String, pgrx::spi::Error> {
    Ok(client
        .select(
            "SELECT pg_catalog.quote_ident(n.nspname)::pg_catalog.text FROM pg_catalog.pg_extension e
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
              WHERE e.extname OPERATOR(pg_catalog.=) 'hstore'",
            None,
            &[],
        )?
        .first()
        .get_one::<String>()?
        .unwrap_or_else(|| "public".into()))
}

/// Who reads the queue's due rows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum QueueRead {
    /// The worker: due rows of mappings not paused, locked (`$1 bigint` rows, `$2 bigint` bytes of log text).
    Claim,
    /// `salesforce.preview()`: the same rows, paused mappings included, of one mapped table (`$3 oid`, NULL: all),
    /// neither locked nor changed.
    Preview,
    /// The worker, for parents its claim's writes wait for: the due rows of these records only (`$3 text[]` log
    /// table names, `$4 bigint[]` record ids), locked.
    Parents,
}

/// Log entries as a claim reads them (`claim::gather`), each with its mapping's table name; `retried`: the SQL
/// of whether the entry was tried before (its writes then go with the row's current values).
fn entries_sql(schema: &str, retried: &str) -> String {
    format!(
        "SELECT l.id, m.table_name::pg_catalog.text, l.record_id, l.action::pg_catalog.text, l.state::pg_catalog.text, l.sfid::pg_catalog.text,
                l.\"values\"::pg_catalog.text, l.old::pg_catalog.text, l.attempts,
                EXTRACT(epoch FROM l.in_doubt_since)::pg_catalog.int8, {retried}
           FROM {schema}._trigger_log l
           LEFT JOIN {schema}._mapping m
             ON CASE WHEN l.relid IS NULL THEN m.table_name {EQ} l.table_name ELSE m.relid {EQ} l.relid END"
    )
}

/// The entries in flight in a Bulk job (`$1 text`), read to record the job's results: they are planned again as
/// they were sent (not as retries).
fn job_entries_sql(schema: &str) -> String {
    let entries = entries_sql(schema, "false");
    let pending = LogState::Pending.as_str();
    format!("{entries} WHERE l.bulk_job::pg_catalog.text {EQ} $1 AND l.state {EQ} '{pending}' ORDER BY l.id FOR UPDATE OF l")
}

/// The entries of mapping `m` (in a lateral subquery ordered by `l.relid, l.id`). Written as `= ANY` so that the
/// planner cannot treat relid as a constant and walk the whole log in id order by its primary key, filtering (it
/// does, when most entries belong to one table: 5,000 entries of a paused mapping read to find 2); only the queue's
/// (relid, id) index then gives that order.
const THIS_MAPPING: &str =
    "l.relid::pg_catalog.oid OPERATOR(pg_catalog.=) ANY (ARRAY[m.relid::pg_catalog.oid]::pg_catalog.oid[])";

/// Due queue rows, oldest first: held back are rows of a record that waits for a scheduled retry; at most `$1` rows
/// and `$2` bytes of log text (always at least one row).
pub fn queue_sql(schema: &str, read: QueueRead) -> String {
    let log = format!("{schema}._trigger_log");
    // tried before, or put back by hand or from the archive (capture leaves updated_at NULL)
    let entries =
        entries_sql(schema, &format!("(l.attempts {GT} 0 OR l.processed_at IS NOT NULL OR l.updated_at IS NOT NULL)"));
    let (new, ignore, pending) = (LogState::New.as_str(), LogState::Ignore.as_str(), LogState::Pending.as_str());
    // Which mappings' entries are read (`m`), which entries put in by hand (`l`, naming their table only), and
    // which of either.
    let not_paused = format!(
        "NOT EXISTS (SELECT 1 FROM {schema}._mapping p WHERE p.paused_at IS NOT NULL AND p.table_name {EQ} l.table_name)"
    );
    let (mappings, by_name, only) = match read {
        // salesforce.pause(): their changes wait in the queue, at no cost (their entries are never read)
        QueueRead::Claim => ("m.paused_at IS NULL".to_string(), not_paused, String::new()),
        QueueRead::Parents => (
            format!("m.paused_at IS NULL AND m.table_name::pg_catalog.text {EQ} ANY ($3::pg_catalog.text[])"),
            not_paused,
            format!(
                "AND EXISTS (SELECT 1 FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]),
                                                     pg_catalog.unnest($4::pg_catalog.int8[])) AS w(t, r)
                             WHERE w.t {EQ} l.table_name::pg_catalog.text AND w.r {EQ} l.record_id)"
            ),
        ),
        QueueRead::Preview => (
            format!("($3::pg_catalog.oid IS NULL OR m.relid::pg_catalog.oid {EQ} $3::pg_catalog.oid)"),
            format!(
                "($3::pg_catalog.oid IS NULL
                  OR l.table_name {EQ} (SELECT p.table_name FROM {schema}._mapping p
                                         WHERE p.relid::pg_catalog.oid {EQ} $3::pg_catalog.oid))"
            ),
            String::new(),
        ),
    };
    let lock = if read == QueueRead::Preview { "" } else { "FOR UPDATE OF l SKIP LOCKED" };
    // Bytes of log text a row brings into the worker. octet_length of a text reads its size from the header,
    // without decompressing or fetching it.
    let size = "(COALESCE(pg_catalog.octet_length(l.\"values\"), 0) \
                OPERATOR(pg_catalog.+) COALESCE(pg_catalog.octet_length(l.old), 0))::pg_catalog.int8";
    let claimable = format!(
        "l.state::pg_catalog.text {EQ} ANY (ARRAY['{new}', '{ignore}']::pg_catalog.text[])
         AND (l.next_attempt_at IS NULL OR l.next_attempt_at {LE} pg_catalog.now())
         AND NOT EXISTS (SELECT 1 FROM held h WHERE h.table_name {EQ} l.table_name AND h.record_id {EQ} l.record_id)
         {only}"
    );
    // The queue is indexed by (relid, id): each mapping read is its own short index scan in id order, and a mapping
    // that is not read (paused) costs nothing however long its queue (`THIS_MAPPING` says why it is written so). Entries put in by hand (the documented SQL)
    // name their table only; a name no mapping has is claimed too, to fail as unmapped (`claim::gather`).
    format!(
        "WITH held AS (
             SELECT DISTINCT table_name, record_id FROM {log}
              WHERE (state {EQ} '{new}' AND next_attempt_at IS NOT NULL AND next_attempt_at {GT} pg_catalog.now())
                 -- a change in flight in a Bulk job: the record's later changes wait for its outcome
                 OR (state {EQ} '{pending}' AND bulk_job IS NOT NULL)),
         candidates AS (
             SELECT c.id, c.size
               FROM {schema}._mapping m
              CROSS JOIN LATERAL (SELECT l.id, {size} AS size FROM {log} l
                                   WHERE {THIS_MAPPING} AND {claimable}
                                   ORDER BY l.relid, l.id LIMIT $1) c
              WHERE {mappings}
             UNION ALL
             (SELECT l.id, {size} AS size FROM {log} l
               WHERE l.relid IS NULL AND {claimable} AND {by_name}
               ORDER BY l.id LIMIT $1)),
         due AS (
             SELECT c.id, c.size, (pg_catalog.sum(c.size) OVER (ORDER BY c.id))::pg_catalog.int8 AS running
               FROM (SELECT * FROM candidates ORDER BY id LIMIT $1) c)
         {entries}
          WHERE l.id {EQ} ANY (ARRAY(SELECT d.id FROM due d WHERE (d.running {MINUS} d.size) {LT} $2))
            AND l.state::pg_catalog.text {EQ} ANY (ARRAY['{new}', '{ignore}']::pg_catalog.text[])
          ORDER BY l.id
          {lock}"
    )
}

const TEXT: pg_sys::Oid = pg_sys::TEXTOID;
const TEXT_ARRAY: pg_sys::Oid = pg_sys::TEXTARRAYOID;
const INT8: pg_sys::Oid = pg_sys::INT8OID;
const FLOAT8: pg_sys::Oid = pg_sys::FLOAT8OID;
const BOOL: pg_sys::Oid = pg_sys::BOOLOID;
const INT8_ARRAY: pg_sys::Oid = pg_sys::INT8ARRAYOID;
const INT4_ARRAY: pg_sys::Oid = pg_sys::INT4ARRAYOID;
const OID_ARRAY: pg_sys::Oid = pg_sys::OIDARRAYOID;
const FLOAT8_ARRAY: pg_sys::Oid = pg_sys::FLOAT8ARRAYOID;

fn prepare(client: &SpiClient<'_>, sql: &str, types: &[pg_sys::Oid]) -> Result<OwnedPreparedStatement, WorkerError> {
    let types: Vec<PgOid> = types.iter().map(|t| PgOid::from(*t)).collect();
    Ok(client.prepare_mut(sql, &types)?.keep())
}

impl Statements {
    pub fn prepare(client: &SpiClient<'_>, schema: &str) -> Result<Statements, WorkerError> {
        let log = format!("{schema}._trigger_log");
        let archive = format!("{schema}._trigger_log_archive");
        let (new, pending, ignore, failed, requeue, requeued) = (
            LogState::New.as_str(),
            LogState::Pending.as_str(),
            LogState::Ignore.as_str(),
            LogState::Failed.as_str(),
            LogState::Requeue.as_str(),
            LogState::Requeued.as_str(),
        );
        let finished = sql_list(&LogState::FINISHED);
        let hstore = hstore_schema(client)?;
        // A Bulk job's entries stay in flight while the job is kept: the worker records them from its results.
        let not_in_a_job =
            format!("(bulk_job IS NULL OR NOT EXISTS (SELECT 1 FROM {schema}._bulk_jobs j WHERE j.id {EQ} bulk_job))");
        Ok(Statements {
            schema: schema.to_string(),
            hstore,
            reclaim_pending: prepare(
                client,
                &format!(
                    "UPDATE {log} SET state = '{new}', in_doubt_since = coalesce(in_doubt_since, updated_at),
                            next_attempt_at = pg_catalog.now() {PLUS} pg_catalog.make_interval(secs => $1),
                            updated_at = pg_catalog.now()
                      WHERE state {EQ} '{pending}' AND {not_in_a_job}"
                ),
                &[pg_sys::FLOAT8OID],
            )?,
            // A record with a retry scheduled for an earlier change is held back, so changes never overtake each
            // other. `FOR UPDATE SKIP LOCKED`: a row a user is changing is left for the next cycle.
            revive_deletes: prepare(
                client,
                &format!(
                    "UPDATE {log} AS l
                        SET state = '{new}', sfid = u.sfid, updated_at = pg_catalog.now(),
                            sf_message = 'the row was deleted while its insert was on its way: its record is deleted too'
                       FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4))
                            AS u(record_id, sfid, after)
                      WHERE l.state {EQ} '{ignore}' AND l.action {EQ} '{delete}' AND l.sfid IS NULL
                        AND l.relid {EQ} pg_catalog.to_regclass($1)::pg_catalog.oid
                        AND l.record_id {EQ} u.record_id AND l.id {GT} u.after
                        AND l.id {EQ} (SELECT pg_catalog.min(d.id) FROM {log} d
                                        WHERE d.state {EQ} '{ignore}' AND d.action {EQ} '{delete}'
                                          AND d.record_id {EQ} u.record_id AND d.relid {EQ} l.relid
                                          AND d.id {GT} u.after)
                      RETURNING l.record_id",
                    delete = Action::Delete.as_str(),
                ),
                &[TEXT, INT8_ARRAY, TEXT_ARRAY, INT8_ARRAY],
            )?,
            reclaim_after_bug: prepare(
                client,
                &format!(
                    "UPDATE {log}
                        SET state = CASE WHEN (attempts {PLUS} 1) {GE} $2 THEN '{failed}' ELSE '{new}' END,
                            attempts = attempts {PLUS} 1,
                            sf_message = $3,
                            in_doubt_since = coalesce(in_doubt_since, updated_at),
                            next_attempt_at = CASE WHEN (attempts {PLUS} 1) {GE} $2 THEN NULL
                                              ELSE pg_catalog.now() {PLUS} pg_catalog.make_interval(secs => $1) END,
                            processed_at = CASE WHEN (attempts {PLUS} 1) {GE} $2 THEN pg_catalog.now() END,
                            updated_at = pg_catalog.now()
                      WHERE state {EQ} '{pending}' AND {not_in_a_job}
                      RETURNING id, table_name::pg_catalog.text"
                ),
                &[pg_sys::FLOAT8OID, pg_sys::INT4OID, TEXT],
            )?,
            clear_metrics: prepare(client, &format!("DELETE FROM {schema}._metrics"), &[])?,
            write_metrics: prepare(
                client,
                &format!(
                    "INSERT INTO {schema}._metrics AS m
                            (table_name, since, sent, succeeded, failed, retried, requests, bytes, api_calls, updated_at,
                             outage_requeued)
                     SELECT u.t, pg_catalog.to_timestamp($1), u.sent, u.succeeded, u.failed, u.retried, u.requests,
                            u.bytes, u.api_calls, pg_catalog.now(), u.outage_requeued
                       FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4),
                                       pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7),
                                       pg_catalog.unnest($8), pg_catalog.unnest($9), pg_catalog.unnest($10))
                            AS u(t, sent, succeeded, failed, retried, requests, bytes, api_calls, outage_requeued)
                     ON CONFLICT (table_name) DO UPDATE
                        SET since = excluded.since, sent = excluded.sent, succeeded = excluded.succeeded,
                            failed = excluded.failed, retried = excluded.retried, requests = excluded.requests,
                            bytes = excluded.bytes, api_calls = excluded.api_calls, updated_at = excluded.updated_at,
                            outage_requeued = excluded.outage_requeued"
                ),
                &[
                    pg_sys::FLOAT8OID,
                    TEXT_ARRAY,
                    INT8_ARRAY,
                    INT8_ARRAY,
                    INT8_ARRAY,
                    INT8_ARRAY,
                    INT8_ARRAY,
                    INT8_ARRAY,
                    INT8_ARRAY,
                    INT8_ARRAY,
                ],
            )?,
            write_requests: prepare(
                client,
                &format!(
                    "WITH kept AS (
                         INSERT INTO {schema}.sync_requests
                                (requested_at, method, path, records, http_status, milliseconds, error_code)
                         SELECT pg_catalog.to_timestamp(u.at), u.method, u.path, u.records, u.status, u.ms, u.code
                           FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),
                                           pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6),
                                           pg_catalog.unnest($7)) AS u(at, method, path, records, status, ms, code)
                         RETURNING id)
                     DELETE FROM {schema}.sync_requests r
                      WHERE r.id {LE} (SELECT pg_catalog.max(k.id) {MINUS} $8 FROM kept k)"
                ),
                &[FLOAT8_ARRAY, TEXT_ARRAY, TEXT_ARRAY, INT4_ARRAY, INT4_ARRAY, INT4_ARRAY, TEXT_ARRAY, INT8],
            )?,
            notify: prepare(client, "SELECT pg_catalog.pg_notify($1, $2)", &[TEXT, TEXT])?,
            record_alert: prepare(
                client,
                &format!(
                    "WITH kept AS (
                         INSERT INTO {schema}.sync_alerts (kind, tables, codes, count, message, held_back, resolved_at)
                         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN pg_catalog.now() END)
                         RETURNING id),
                      recovered AS (
                         UPDATE {schema}.sync_alerts a SET resolved_at = pg_catalog.now()
                          WHERE $7 AND a.resolved_at IS NULL AND a.kind {EQ} '{connection}'
                            AND a.id {LT} (SELECT k.id FROM kept k))
                     DELETE FROM {schema}.sync_alerts a
                      WHERE a.id {LT} (SELECT k.id {MINUS} 10000 FROM kept k)",
                    connection = AlertKind::Connection.as_str(),
                ),
                &[TEXT, TEXT_ARRAY, TEXT_ARRAY, INT8, TEXT, INT8, BOOL],
            )?,
            resolve_alerts: prepare(
                client,
                &format!(
                    "UPDATE {schema}.sync_alerts a SET resolved_at = pg_catalog.now()
                      WHERE a.resolved_at IS NULL AND CASE a.kind
                        WHEN '{failed}' THEN NOT EXISTS (
                            SELECT 1 FROM {schema}._open_failures o WHERE o.table_name {EQ} ANY (a.tables))
                        WHEN '{connection}' THEN (SELECT s.state FROM {schema}._sync_state s) {NE} ALL (ARRAY[{trouble}])
                        WHEN '{stalled}' THEN $1 IS NULL OR NOT EXISTS (
                            SELECT 1 FROM {log} l
                             WHERE l.state::pg_catalog.text {EQ} ANY (ARRAY['{new}', '{pending}'])
                               AND l.table_name::pg_catalog.text {EQ} ANY (a.tables)
                               AND l.created_at {LT} (pg_catalog.now() {MINUS} pg_catalog.make_interval(secs => $1)))
                        WHEN '{throttled}' THEN coalesce((SELECT s.api_used::pg_catalog.float8
                                                                 {DIVIDE} NULLIF(s.api_limit, 0)
                                                            FROM {schema}._sync_state s), 0) {LE} $2
                        ELSE false END",
                    failed = AlertKind::Failed.as_str(),
                    connection = AlertKind::Connection.as_str(),
                    stalled = AlertKind::Stalled.as_str(),
                    throttled = AlertKind::Throttled.as_str(),
                    trouble = ConnState::TROUBLE
                        .iter()
                        .map(|s| format!("'{}'", s.as_str()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    new = LogState::New.as_str(),
                    pending = LogState::Pending.as_str(),
                ),
                &[FLOAT8, FLOAT8],
            )?,
            failures_open: prepare(
                client,
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {schema}._open_failures o WHERE o.table_name {EQ} ANY ($1))"
                ),
                &[TEXT_ARRAY],
            )?,
            oldest_waiting: prepare(client, &oldest_waiting_sql(schema), &[])?,
            claim: prepare(client, &queue_sql(schema, QueueRead::Claim), &[INT8, INT8])?,
            claim_parents: prepare(
                client,
                &queue_sql(schema, QueueRead::Parents),
                &[INT8, INT8, TEXT_ARRAY, INT8_ARRAY],
            )?,
            set_state: prepare(
                client,
                &format!(
                    "UPDATE {log}
                        SET state = $2, sf_message = CASE WHEN $2 {EQ} '{pending}' THEN sf_message ELSE $3 END,
                            updated_at = pg_catalog.now(),
                            processed_at = CASE WHEN $2 {EQ} '{pending}' THEN NULL ELSE pg_catalog.now() END,
                            processed_tx = CASE WHEN $2 {EQ} '{pending}' THEN NULL ELSE pg_catalog.txid_current() END
                      WHERE id {EQ} ANY ($1)"
                ),
                &[INT8_ARRAY, TEXT, TEXT],
            )?,
            load_tables: prepare(
                client,
                &format!(
                    "SELECT m.table_name::pg_catalog.text, m.relid::pg_catalog.regclass::pg_catalog.text, m.sobject, m.upsert_field, m.fields,
                            pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY a.attnum),
                            pg_catalog.array_agg(CASE WHEN t.typtype {EQ} 'd' THEN bt.typname ELSE t.typname END::pg_catalog.text
                                                 ORDER BY a.attnum),
                            c.relowner
                       FROM {schema}._mapping m
                       JOIN pg_catalog.pg_class c ON c.oid {EQ} m.relid::pg_catalog.oid
                       JOIN pg_catalog.pg_attribute a
                         ON a.attrelid {EQ} m.relid::pg_catalog.oid AND a.attnum {GT} 0 AND NOT a.attisdropped
                       JOIN pg_catalog.pg_type t ON t.oid {EQ} a.atttypid
                       LEFT JOIN pg_catalog.pg_type bt ON bt.oid {EQ} t.typbasetype
                      WHERE m.access {EQ} 'read_write'
                      GROUP BY m.table_name, m.relid, m.sobject, m.upsert_field, m.fields, c.relowner"
                ),
                &[],
            )?,
            load_links: prepare(
                client,
                &format!(
                    "SELECT DISTINCT ON (m.table_name, r.key) m.table_name::pg_catalog.text, r.key, r.value, pm.table_name::pg_catalog.text
                       FROM {schema}._mapping m
                      CROSS JOIN LATERAL pg_catalog.jsonb_each_text(m.relationships) AS r(key, value)
                       LEFT JOIN pg_catalog.pg_attribute a
                         ON a.attrelid {EQ} m.relid::pg_catalog.oid AND a.attname::pg_catalog.text {EQ} r.key AND NOT a.attisdropped
                       LEFT JOIN pg_catalog.pg_constraint k
                         ON k.conrelid {EQ} m.relid::pg_catalog.oid AND k.contype {EQ} 'f'
                        AND k.conkey {EQ} ARRAY[a.attnum]
                       LEFT JOIN {schema}._mapping pm ON pm.relid::pg_catalog.oid {EQ} k.confrelid
                      WHERE m.access {EQ} 'read_write'
                      ORDER BY m.table_name, r.key, pm.table_name"
                ),
                &[],
            )?,
            mapping_stats: prepare(
                client,
                &format!(
                    "UPDATE {schema}._mapping
                        SET last_success_at = CASE WHEN $2 THEN pg_catalog.now() ELSE last_success_at END,
                            last_error_at = CASE WHEN $3 IS NOT NULL THEN pg_catalog.now() ELSE last_error_at END,
                            last_error = coalesce($3, last_error)
                      WHERE table_name {EQ} $1"
                ),
                &[TEXT, pg_sys::BOOLOID, TEXT],
            )?,
            record_log: prepare(
                client,
                &format!(
                    "UPDATE {log} AS l
                        SET state = u.state,
                            sf_message = u.message,
                            sfid = coalesce(u.sfid, l.sfid),
                            attempts = u.attempts,
                            next_attempt_at = pg_catalog.now() {PLUS} (u.retry_in_ms {TIMES} interval '1 millisecond'),
                            processed_at = CASE WHEN u.state::pg_catalog.text {EQ} ANY (ARRAY['{new}', '{pending}']) THEN NULL
                                                ELSE pg_catalog.now() END,
                            processed_tx = CASE WHEN u.state::pg_catalog.text {EQ} ANY (ARRAY['{new}', '{pending}']) THEN NULL
                                                ELSE pg_catalog.txid_current() END,
                            bulk_job = CASE WHEN u.state {EQ} '{pending}' THEN l.bulk_job END,
                            -- in doubt since the attempt was claimed (the claim set updated_at)
                            in_doubt_since = CASE WHEN u.in_doubt THEN coalesce(l.in_doubt_since, l.updated_at)
                                                  ELSE l.in_doubt_since END,
                            -- what the audit cannot tell from state and action (pgforce_core::log::AuditStatus)
                            sf_result = u.result,
                            depth = u.depth,
                            updated_at = pg_catalog.now()
                       FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),
                                       pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6),
                                       pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9))
                            AS u(id, state, message, sfid, attempts, retry_in_ms, in_doubt, result, depth)
                      WHERE l.id {EQ} u.id"
                ),
                &[
                    INT8_ARRAY,
                    TEXT_ARRAY,
                    TEXT_ARRAY,
                    TEXT_ARRAY,
                    pg_sys::INT4ARRAYOID,
                    INT8_ARRAY,
                    pg_sys::BOOLARRAYOID,
                    pg_sys::INT4ARRAYOID,
                    pg_sys::INT4ARRAYOID,
                ],
            )?,
            next_retry_in: prepare(
                client,
                &format!(
                    "SELECT EXTRACT(epoch FROM pg_catalog.min(next_attempt_at) {MINUS} pg_catalog.clock_timestamp())::pg_catalog.float8
                       FROM {log} WHERE state {EQ} '{new}' AND next_attempt_at IS NOT NULL"
                ),
                &[],
            )?,
            write_state: prepare(
                client,
                &format!(
                    "UPDATE {schema}._sync_state SET state = $1, message = $2, api_used = coalesce($3, api_used),
                            api_limit = coalesce($4, api_limit), worker_pid = pg_catalog.pg_backend_pid(),
                            updated_at = pg_catalog.now(),
                            next_attempt_at = CASE WHEN $1 {EQ} ANY (ARRAY['{outage}', '{unauthorized}'])
                                                   THEN next_attempt_at END",
                    outage = ConnState::Outage.as_str(),
                    unauthorized = ConnState::Unauthorized.as_str(),
                ),
                &[TEXT, TEXT, INT8, INT8],
            )?,
            write_next_attempt: prepare(
                client,
                &format!(
                    "UPDATE {schema}._sync_state
                        SET next_attempt_at = pg_catalog.clock_timestamp() {PLUS} pg_catalog.make_interval(secs => $1)"
                ),
                &[FLOAT8],
            )?,
            archive: prepare(
                client,
                &format!(
                    "WITH moved AS (
                         DELETE FROM {log} WHERE id {EQ} ANY (ARRAY(
                             SELECT id FROM {log}
                              WHERE state::pg_catalog.text {EQ} ANY (ARRAY[{finished}]::pg_catalog.text[])
                                AND coalesce(processed_at, created_at)
                                    {LT} (pg_catalog.now() {MINUS} pg_catalog.make_interval(secs => $1))
                              ORDER BY coalesce(processed_at, created_at) LIMIT $2))
                         RETURNING {LOG_COLUMNS})
                     INSERT INTO {archive} ({LOG_COLUMNS}) SELECT {LOG_COLUMNS} FROM moved"
                ),
                &[pg_sys::FLOAT8OID, INT8],
            )?,
            purge: prepare(
                client,
                &format!(
                    "DELETE FROM {archive} WHERE id {EQ} ANY (ARRAY(
                         SELECT id FROM {archive}
                          WHERE created_at {LT} (pg_catalog.now() {MINUS} pg_catalog.make_interval(secs => $1))
                          -- by created_at, so its index stops at the first young row: ordered by id, the scan
                          -- went through the whole archive every second when nothing was old enough
                          ORDER BY created_at LIMIT $2))"
                ),
                &[pg_sys::FLOAT8OID, INT8],
            )?,
            requeue: prepare(
                client,
                &format!(
                    "WITH r AS (
                         UPDATE {archive} SET state = '{requeued}', updated_at = pg_catalog.now()
                          WHERE state {EQ} '{requeue}'
                         RETURNING txid, table_name, action, record_id, \"values\", old, sfid, relid)
                     INSERT INTO {log} (created_at, updated_at, state, txid, table_name, action, record_id, \"values\", old, sfid, relid)
                     SELECT pg_catalog.now(), pg_catalog.now(), '{new}', txid, table_name, action, record_id, \"values\", old, sfid, relid
                       FROM r"
                ),
                &[],
            )?,
            unmapped_queued: prepare(client, &unmapped_queued_sql(schema), &[])?,
            end_unmapped: prepare(client, &end_unmapped_sql(schema), &[OID_ARRAY])?,
            retry_failed: prepare(
                client,
                &format!(
                    "UPDATE {log} SET state = '{new}', attempts = 0, next_attempt_at = NULL, updated_at = pg_catalog.now()
                      WHERE id {EQ} ANY (ARRAY(SELECT id FROM {log}
                                    WHERE state {EQ} '{failed}'
                                      AND processed_at {LT} (pg_catalog.now() {MINUS} pg_catalog.make_interval(secs => $1))
                                    ORDER BY id LIMIT $2))"
                ),
                &[pg_sys::FLOAT8OID, INT8],
            )?,
            timeline: prepare(
                client,
                "SELECT pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8)",
                &[],
            )?,
            delivery_lock: prepare(
                client,
                &format!("SELECT pg_catalog.pg_try_advisory_lock({DELIVERY_LOCK_CLASS}, {DELIVERY_LOCK_OBJECT})"),
                &[],
            )?,
            delivery_lock_holder: prepare(
                client,
                &format!(
                    "SELECT pid FROM pg_catalog.pg_locks
                      WHERE locktype {EQ} 'advisory' AND granted AND classid {EQ} {DELIVERY_LOCK_CLASS}::pg_catalog.oid
                        AND objid {EQ} {DELIVERY_LOCK_OBJECT}::pg_catalog.oid
                        AND database {EQ} (SELECT oid FROM pg_catalog.pg_database
                                            WHERE datname {EQ} pg_catalog.current_database())
                      LIMIT 1"
                ),
                &[],
            )?,
            deliverer: prepare(client, &format!("SELECT identity FROM {schema}._deliverer"), &[])?,
            record_deliverer: prepare(
                client,
                &format!("INSERT INTO {schema}._deliverer (identity) VALUES ($1) ON CONFLICT (one) DO NOTHING"),
                &[TEXT],
            )?,
            deleted_later: prepare(
                client,
                &format!(
                    "SELECT DISTINCT u.record_id
                       FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3)) AS u(record_id, after)
                      WHERE EXISTS (SELECT 1 FROM {log} d
                                     WHERE d.action {EQ} '{delete}'
                                       AND d.record_id {EQ} u.record_id
                                       AND d.relid {EQ} pg_catalog.to_regclass($1)::pg_catalog.oid
                                       AND d.id {GT} u.after)",
                    delete = Action::Delete.as_str(),
                ),
                &[TEXT, INT8_ARRAY, INT8_ARRAY],
            )?,
            parent_states: prepare(
                client,
                // Set-based (hash joins on the wanted ids): a claim can ask about thousands of parents.
                &format!(
                    "WITH wanted AS (SELECT DISTINCT w.id FROM pg_catalog.unnest($2) AS w(id)),
                          queued AS (
                            SELECT l.record_id,
                                   -- a parent in flight in a Bulk job is looked at again after the job's first poll
                                   pg_catalog.max(CASE WHEN l.bulk_job IS NOT NULL THEN {in_job}
                                                       ELSE GREATEST(0, pg_catalog.date_part('epoch',
                                                           l.next_attempt_at {MINUS} pg_catalog.now())) END
                                                  )::pg_catalog.float8 AS due_in
                              FROM {log} l JOIN wanted w ON l.record_id {EQ} w.id
                             WHERE l.state::pg_catalog.text {EQ} ANY (ARRAY['{new}', '{pending}'])
                               AND l.relid {EQ} pg_catalog.to_regclass($1)::pg_catalog.oid
                             GROUP BY l.record_id),
                          failed AS (
                            SELECT DISTINCT ON (l.record_id) l.record_id, l.sf_message AS message
                              FROM {log} l JOIN wanted w ON l.record_id {EQ} w.id
                             WHERE l.state::pg_catalog.text {EQ} '{failed}'
                               AND l.relid {EQ} pg_catalog.to_regclass($1)::pg_catalog.oid
                             ORDER BY l.record_id, l.id DESC)
                     SELECT w.id, q.due_in, f.message
                       FROM wanted w
                       LEFT JOIN queued q ON q.record_id {EQ} w.id
                       LEFT JOIN failed f ON f.record_id {EQ} w.id",
                    new = LogState::New.as_str(),
                    pending = LogState::Pending.as_str(),
                    failed = LogState::Failed.as_str(),
                    in_job = bulk::MAX_POLL.as_secs(),
                ),
                &[TEXT, INT8_ARRAY],
            )?,
            keep_bulk_job: prepare(
                client,
                &format!(
                    "WITH kept AS (INSERT INTO {schema}._bulk_jobs (id) VALUES ($1) ON CONFLICT DO NOTHING)
                     UPDATE {log} SET bulk_job = $1 WHERE id {EQ} ANY ($2) AND state {EQ} '{pending}'"
                ),
                &[TEXT, INT8_ARRAY],
            )?,
            release_bulk_job: prepare(
                client,
                &format!(
                    "WITH forgotten AS (DELETE FROM {schema}._bulk_jobs WHERE id::pg_catalog.text {EQ} $1)
                     UPDATE {log}
                        SET state = '{new}', bulk_job = NULL, in_doubt_since = coalesce(in_doubt_since, updated_at),
                            attempts = attempts {PLUS} CASE WHEN $2 THEN 1 ELSE 0 END,
                            next_attempt_at = pg_catalog.now(), updated_at = pg_catalog.now()
                      WHERE bulk_job::pg_catalog.text {EQ} $1 AND state {EQ} '{pending}'"
                ),
                &[TEXT, pg_sys::BOOLOID],
            )?,
            job_entries: prepare(client, &job_entries_sql(schema), &[TEXT])?,
            bulk_jobs: prepare(client, &format!("SELECT id::pg_catalog.text FROM {schema}._bulk_jobs ORDER BY created_at"), &[])?,
            forget_bulk_jobs: prepare(
                client,
                &format!("DELETE FROM {schema}._bulk_jobs WHERE id::pg_catalog.text {EQ} ANY ($1)"),
                &[TEXT_ARRAY],
            )?,
            queue_size: prepare(
                client,
                &format!(
                    "SELECT pg_catalog.count(*) FROM {log}
                      WHERE state::pg_catalog.text {EQ} ANY (ARRAY['{new}', '{pending}'])",
                    new = LogState::New.as_str(),
                    pending = LogState::Pending.as_str(),
                ),
                &[],
            )?,
            due_count: prepare(client, &due_count_sql(schema), &[INT8])?,
            log_follow_ups: prepare(
                client,
                &format!(
                    "INSERT INTO {log} (action, table_name, relid, txid, created_at, state, record_id, sfid, \"values\")
                     SELECT '{update}', m.table_name, m.relid, pg_catalog.txid_current(), pg_catalog.clock_timestamp(),
                            '{new}', u.id, u.sfid, u.changes
                       FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4))
                            AS u(id, sfid, changes)
                       JOIN {schema}._mapping m ON m.relid::pg_catalog.oid {EQ} pg_catalog.to_regclass($1)::pg_catalog.oid",
                    update = Action::Update.as_str(),
                    new = LogState::New.as_str(),
                ),
                &[TEXT, INT8_ARRAY, TEXT_ARRAY, TEXT_ARRAY],
            )?,
            kept_refresh_token: prepare(client, &kept_refresh_token_sql(schema), &[TEXT])?,
            keep_refresh_token: prepare(client, &keep_refresh_token_sql(schema), &[TEXT, TEXT])?,
            tables: HashMap::new(),
            owners: HashMap::new(),
        })
    }

    /// Drops the statements of tables that are no longer mapped (or were renamed).
    pub fn keep_tables(&mut self, qualified: &[&str]) {
        self.tables.retain(|name, _| qualified.contains(&name.as_str()));
    }

    /// The statements on these mapped tables (by qualified name), prepared the first time each is needed.
    pub fn tables<'s>(
        &'s mut self,
        client: &SpiClient<'_>,
        qualified: &[&str],
    ) -> Result<&'s HashMap<String, TableStatements>, WorkerError> {
        for name in qualified {
            if self.tables.contains_key(*name) {
                continue;
            }
            let hstore = &self.hstore;
            let (rolled_back, failed) = (LastOp::RolledBack.as_str(), LastOp::Failed.as_str());
            let statements = TableStatements {
                current_sfids: prepare(
                    client,
                    &format!("SELECT id::bigint, sfid::pg_catalog.text FROM {name} WHERE id {EQ} ANY ($1)"),
                    &[INT8_ARRAY],
                )?,
                current_rows: prepare(
                    client,
                    &format!(
                        "SELECT t.id::bigint,
                                ({hstore}.hstore(t.*) OPERATOR({hstore}.-) ARRAY['{status}']::pg_catalog.text[])::pg_catalog.text
                           FROM {name} t WHERE t.id {EQ} ANY ($1)",
                        status = STATUS_COLUMNS.join("','"),
                    ),
                    &[INT8_ARRAY],
                )?,
                lock_rows: prepare(
                    client,
                    &format!("SELECT t.id FROM {name} t WHERE t.id {EQ} ANY ($1) FOR UPDATE"),
                    &[INT8_ARRAY],
                )?,
                take_back: prepare(
                    client,
                    &format!(
                        "UPDATE {name} AS t SET sfid = NULL, _hc_lastop = '{pending}', _hc_err = NULL
                           FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS u(id, sfid)
                          WHERE t.id {EQ} u.id AND t.sfid {EQ} u.sfid",
                        pending = LastOp::Pending.as_str(),
                    ),
                    &[INT8_ARRAY, TEXT_ARRAY],
                )?,
                write_back: prepare(
                    client,
                    &format!(
                        "UPDATE {name} AS t
                            SET sfid = coalesce(u.sfid, t.sfid),
                                -- a row salesforce.rollback() left apart from its record stays marked until it changes
                                _hc_lastop = CASE WHEN t._hc_lastop {EQ} '{rolled_back}' AND u.lastop {NE} '{failed}'
                                                  THEN t._hc_lastop ELSE u.lastop END,
                                _hc_err = CASE WHEN t._hc_lastop {EQ} '{rolled_back}' AND u.lastop {NE} '{failed}'
                                               THEN t._hc_err ELSE u.err END
                           FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),
                                           pg_catalog.unnest($4)) AS u(id, sfid, lastop, err)
                          WHERE t.id {EQ} u.id
                      RETURNING t.id::pg_catalog.int8"
                    ),
                    &[INT8_ARRAY, TEXT_ARRAY, TEXT_ARRAY, TEXT_ARRAY],
                )?,
                sfid_owner: prepare(
                    client,
                    &format!(
                        "SELECT id::bigint FROM {name} WHERE sfid {EQ} $1 AND id OPERATOR(pg_catalog.<>) $2 LIMIT 1"
                    ),
                    &[TEXT, INT8],
                )?,
                owned_sfids: prepare(
                    client,
                    &format!("SELECT sfid::pg_catalog.text FROM {name} WHERE sfid::pg_catalog.text {EQ} ANY ($1)"),
                    &[TEXT_ARRAY],
                )?,
            };
            self.tables.insert(name.to_string(), statements);
        }
        Ok(&self.tables)
    }
}
