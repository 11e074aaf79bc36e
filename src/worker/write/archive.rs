//! Keeping the live log small: finished rows older than `pgforce.archive_after` move to `_trigger_log_archive` in
//! bounded batches, archive rows older than `pgforce.archive_retention` are deleted, archived rows set to `REQUEUE`
//! are copied back as `NEW` (and marked `REQUEUED`), and with `pgforce.retry_failed_after` FAILED rows are retried.

use std::time::Duration;

use pgrx::datum::DatumWithOid;
use pgrx::spi::SpiClient;

use crate::worker::error::WorkerError;
use crate::worker::sql::Statements;

/// Rows per archive batch.
const BATCH: i64 = 5000;
/// At most this many batches per maintenance pass, so one pass stays short.
const MAX_BATCHES: usize = 20;

/// Moves finished rows to the archive; returns how many moved.
pub fn archive(client: &mut SpiClient<'_>, st: &Statements, after: Duration) -> Result<u64, WorkerError> {
    let mut moved = 0;
    for _ in 0..MAX_BATCHES {
        let n = client
            .update(&st.upkeep.archive, None, &[DatumWithOid::from(after.as_secs_f64()), DatumWithOid::from(BATCH)])?
            .len() as u64;
        moved += n;
        if n < BATCH as u64 {
            break;
        }
    }
    Ok(moved)
}

/// Deletes archive rows past retention; returns how many.
pub fn purge(client: &mut SpiClient<'_>, st: &Statements, retention: Duration) -> Result<u64, WorkerError> {
    let limit = BATCH * MAX_BATCHES as i64;
    Ok(client
        .update(&st.upkeep.purge, None, &[DatumWithOid::from(retention.as_secs_f64()), DatumWithOid::from(limit)])?
        .len() as u64)
}

/// Copies `REQUEUE` archive rows back into the log as NEW changes; returns how many.
pub fn requeue(client: &mut SpiClient<'_>, st: &Statements) -> Result<u64, WorkerError> {
    Ok(client.update(&st.upkeep.requeue, None, &[])?.len() as u64)
}

/// Ends the queued entries of tables that are no longer mapped; returns how many.
pub fn end_unmapped(client: &mut SpiClient<'_>, st: &Statements) -> Result<u64, WorkerError> {
    let Some(tables) =
        client.select(&st.upkeep.unmapped_queued, None, &[])?.first().get::<Vec<pgrx::pg_sys::Oid>>(1)?
    else {
        return Ok(0);
    };
    Ok(client.update(&st.upkeep.end_unmapped, None, &[DatumWithOid::from(tables)])?.len() as u64)
}

/// With `pgforce.retry_failed_after`: FAILED rows processed longer ago than that are tried again.
pub fn retry_failed(client: &mut SpiClient<'_>, st: &Statements, after: Duration) -> Result<u64, WorkerError> {
    Ok(client
        .update(&st.upkeep.retry_failed, None, &[DatumWithOid::from(after.as_secs_f64()), DatumWithOid::from(BATCH)])?
        .len() as u64)
}
