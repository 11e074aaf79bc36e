//! What the engine runs for every pipeline: status, counters, requests, alerts, the delivery lock and the
//! deliverer's identity, the rotated refresh token.

use super::*;

/// The engine's statements (see the module).
pub struct EngineStatements {
    /// `$1 text` state, `$2 text` message, `$3 bigint` API used, `$4 bigint` API limit. A state without a backoff
    /// clears the next attempt's time.
    pub write_state: OwnedPreparedStatement,
    /// `$1 float8` seconds until the worker tries Salesforce again (an outage's backoff).
    pub write_next_attempt: OwnedPreparedStatement,
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
    /// How many entries wait in the queue (`NEW`, `PENDING`).
    pub queue_size: OwnedPreparedStatement,
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
}

impl EngineStatements {
    pub(super) fn prepare(client: &SpiClient<'_>, schema: &str) -> Result<Self, WorkerError> {
        let log = format!("{schema}._trigger_log");
        Ok(Self {
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
            kept_refresh_token: prepare(client, &kept_refresh_token_sql(schema), &[TEXT])?,
            keep_refresh_token: prepare(client, &keep_refresh_token_sql(schema), &[TEXT, TEXT])?,
        })
    }
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

/// The delivery lock: a session-level advisory lock on (`pgfc`, 1) in the worker's database.
const DELIVERY_LOCK_CLASS: i32 = 0x7067_6663;

const DELIVERY_LOCK_OBJECT: i32 = 1;
