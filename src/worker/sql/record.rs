//! Recording outcomes: the log, the mappings' statistics, follow-up changes, and what planning reads about rows
//! and parents.

use super::*;

/// The statements that record outcomes (see the module).
pub struct RecordStatements {
    /// `$1 text` table, `$2 bool` succeeded, `$3 text` last error.
    pub mapping_stats: OwnedPreparedStatement,
    /// Arrays of ids, states, messages, sfids, attempts, retry delays in ms, in doubt, audit results, depths.
    pub record_log: OwnedPreparedStatement,
    /// `$1 text` table, `$2 bigint[]` row ids, `$3 bigint[]` log ids → the rows a delete logged after that log id
    /// follows.
    pub deleted_later: OwnedPreparedStatement,
    /// `$1 text` table, `$2 bigint[]` row ids → per row: seconds until a queued change of it is due (NULL: none
    /// queued), the message of its last failed change.
    pub parent_states: OwnedPreparedStatement,
    /// `$1 text` table, `$2 bigint[]` row ids, `$3 text[]` sfids, `$4 text[]` changes (hstore text): logs updates
    /// that set lookups a broken cycle left out (`delivery::links`).
    pub log_follow_ups: OwnedPreparedStatement,
}

impl RecordStatements {
    pub(super) fn prepare(client: &SpiClient<'_>, schema: &str) -> Result<Self, WorkerError> {
        let log = format!("{schema}._trigger_log");
        let (new, pending) = (LogState::New.as_str(), LogState::Pending.as_str());
        Ok(Self {
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
        })
    }
}
