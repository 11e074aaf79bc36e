//! Waking the sync worker: a statement trigger on the log and its archive arms one wake-up at commit for every
//! user transaction that writes them: captured changes (the capture trigger inserts into the log), and rows users
//! insert, reset to NEW or set to REQUEUE (the documented retry SQL).

use pgrx::prelude::*;

use crate::server::is_user_write;
use crate::shmem::wake_at_commit;

/// Statement trigger on `_trigger_log` and `_trigger_log_archive`. The worker's own writes (xmlbinary = hex) do not
/// wake it.
#[pg_trigger]
fn _wake_worker<'a>(
    _trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    if is_user_write() {
        wake_at_commit();
    }
    Ok(None)
}
