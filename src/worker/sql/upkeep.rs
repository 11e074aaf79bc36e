//! Upkeep of the log: archiving, purging, requeueing, retrying failed changes, ending those of unmapped tables,
//! and the Bulk jobs in flight.

use super::*;

/// The log's upkeep statements (see the module).
pub struct UpkeepStatements {
    /// `$1 float8` age in seconds, `$2 bigint` batch size.
    pub archive: OwnedPreparedStatement,
    /// `$1 float8` retention in seconds, `$2 bigint` limit.
    pub purge: OwnedPreparedStatement,
    /// Copies `REQUEUE` archive rows back into the log as `NEW` changes.
    pub requeue: OwnedPreparedStatement,
    /// `$1 float8` seconds since failing, `$2 bigint` limit.
    pub retry_failed: OwnedPreparedStatement,
    /// → the tables with queued entries that are no longer mapped (`oid[]`; NULL: none).
    pub unmapped_queued: OwnedPreparedStatement,
    /// `$1 oid[]`: ends the queued entries of these tables: `FAILED`, or `IGNORED` for a no-op.
    pub end_unmapped: OwnedPreparedStatement,
    /// `$1 text` id, `$2 bigint[]` log ids: keeps the id of a Bulk job just created and marks its entries.
    pub keep_bulk_job: OwnedPreparedStatement,
    /// `$1 text`, `$2 boolean` cost: forgets a Bulk job; its entries still in flight go back to the queue, in doubt
    /// (at the cost of an attempt when `$2`).
    pub release_bulk_job: OwnedPreparedStatement,
    /// The Bulk jobs not seen finished.
    pub bulk_jobs: OwnedPreparedStatement,
    /// `$1 text[]`: forgets finished Bulk jobs.
    pub forget_bulk_jobs: OwnedPreparedStatement,
}

impl UpkeepStatements {
    pub(super) fn prepare(client: &SpiClient<'_>, schema: &str) -> Result<Self, WorkerError> {
        let log = format!("{schema}._trigger_log");
        let archive = format!("{schema}._trigger_log_archive");
        let (new, pending, failed, requeue, requeued) = (
            LogState::New.as_str(),
            LogState::Pending.as_str(),
            LogState::Failed.as_str(),
            LogState::Requeue.as_str(),
            LogState::Requeued.as_str(),
        );
        let finished = sql_list(&LogState::FINISHED);
        Ok(Self {
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
            unmapped_queued: prepare(client, &unmapped_queued_sql(schema), &[])?,
            end_unmapped: prepare(client, &end_unmapped_sql(schema), &[OID_ARRAY])?,
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
            bulk_jobs: prepare(client, &format!("SELECT id::pg_catalog.text FROM {schema}._bulk_jobs ORDER BY created_at"), &[])?,
            forget_bulk_jobs: prepare(
                client,
                &format!("DELETE FROM {schema}._bulk_jobs WHERE id::pg_catalog.text {EQ} ANY ($1)"),
                &[TEXT_ARRAY],
            )?,
        })
    }
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
            AND NOT EXISTS (SELECT 1 FROM {schema}._mapping m WHERE m.relid::pg_catalog.oid {EQ} q.relid)"
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
