//! Keeping the live log small: finished rows older than `pgforce.archive_after` move to `_trigger_log_archive` in
//! bounded batches, archive rows older than `pgforce.archive_retention` are deleted, archived rows set to `REQUEUE`
//! are copied back as `NEW` (and marked `REQUEUED`), and with `pgforce.retry_failed_after` FAILED rows are retried.

use std::time::Duration;

use pgrx::datum::DatumWithOid;
use pgrx::spi::{SpiClient, SpiResult};

const BATCH: i64 = 5000;
/// At most this many batches per maintenance pass, so one pass stays short.
const MAX_BATCHES: usize = 20;

const COLUMNS: &str = "id, txid, created_at, updated_at, processed_at, processed_tx, state, action, table_name, \
                       record_id, sfid, old, \"values\", sf_result, sf_message, attempts, next_attempt_at";

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Moves finished rows to the archive; returns how many moved.
pub fn archive(client: &mut SpiClient<'_>, schema: &str, after: Duration) -> SpiResult<u64> {
    let mut moved = 0;
    for _ in 0..MAX_BATCHES {
        let n = client
            .update(
                &format!(
                    "WITH moved AS (
                         DELETE FROM {schema}._trigger_log WHERE id IN (
                             SELECT id FROM {schema}._trigger_log
                              WHERE state IN ('SUCCESS', 'MERGED', 'IGNORED', 'FAILED', 'READONLY', 'REQUEUED')
                                AND coalesce(processed_at, created_at) < now() - make_interval(secs => $1)
                              ORDER BY coalesce(processed_at, created_at) LIMIT $2)
                         RETURNING {COLUMNS})
                     INSERT INTO {schema}._trigger_log_archive ({COLUMNS}) SELECT {COLUMNS} FROM moved"
                ),
                None,
                &[DatumWithOid::from(secs(after)), DatumWithOid::from(BATCH)],
            )?
            .len() as u64;
        moved += n;
        if n < BATCH as u64 {
            break;
        }
    }
    Ok(moved)
}

/// Deletes archive rows past retention; returns how many.
pub fn purge(client: &mut SpiClient<'_>, schema: &str, retention: Duration) -> SpiResult<u64> {
    let n = client.update(
        &format!(
            "DELETE FROM {schema}._trigger_log_archive WHERE id IN (
                 SELECT id FROM {schema}._trigger_log_archive
                  WHERE created_at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2)"
        ),
        None,
        &[DatumWithOid::from(secs(retention)), DatumWithOid::from(BATCH * MAX_BATCHES as i64)],
    )?;
    Ok(n.len() as u64)
}

/// Copies `REQUEUE` archive rows back into the log as NEW changes; returns how many.
pub fn requeue(client: &mut SpiClient<'_>, schema: &str) -> SpiResult<u64> {
    let n = client.update(
        &format!(
            "WITH r AS (
                 UPDATE {schema}._trigger_log_archive SET state = 'REQUEUED', updated_at = now()
                  WHERE state = 'REQUEUE'
                 RETURNING txid, table_name, action, record_id, \"values\", old, sfid)
             INSERT INTO {schema}._trigger_log (created_at, updated_at, state, txid, table_name, action, record_id, \"values\", old, sfid)
             SELECT now(), now(), 'NEW', txid, table_name, action, record_id, \"values\", old, sfid FROM r"
        ),
        None,
        &[],
    )?;
    Ok(n.len() as u64)
}

/// With `pgforce.retry_failed_after`: FAILED rows processed longer ago than that are tried again.
pub fn retry_failed(client: &mut SpiClient<'_>, schema: &str, after: Duration) -> SpiResult<u64> {
    let n = client.update(
        &format!(
            "UPDATE {schema}._trigger_log SET state = 'NEW', attempts = 0, next_attempt_at = NULL, updated_at = now()
              WHERE id IN (SELECT id FROM {schema}._trigger_log
                            WHERE state = 'FAILED' AND processed_at < now() - make_interval(secs => $1)
                            ORDER BY id LIMIT $2)"
        ),
        None,
        &[DatumWithOid::from(secs(after)), DatumWithOid::from(BATCH)],
    )?;
    Ok(n.len() as u64)
}
