//! Waking the sync worker: a statement trigger on the log and its archive arms one wake-up at commit for every
//! user transaction that writes them: captured changes (the capture trigger inserts into the log), and rows users
//! insert, reset to NEW or set to REQUEUE (the documented retry SQL).

use std::cell::Cell;
use std::ffi::CStr;

use pgforce_core::log::Action;
use pgrx::prelude::*;

use super::Firing;
use crate::server::is_user_write;
use crate::shmem::wake_at_commit;

/// AFTER INSERT OR UPDATE FOR EACH STATEMENT on `_trigger_log`, and AFTER UPDATE on `_trigger_log_archive`. The
/// worker's own writes (xmlbinary = hex) do not wake it.
#[pg_trigger]
fn _wake_worker<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    let data = trigger.trigger_data();
    let firing = Firing::of(data);
    let expected = "AFTER INSERT OR UPDATE FOR EACH STATEMENT on the trigger log or its archive";
    if firing.before || firing.per_row || !matches!(firing.action, Some(Action::Insert | Action::Update)) {
        firing.misused(trigger, "wake-up trigger", expected);
    }
    // SAFETY: the firing relation's pg_class entry, which Postgres keeps for the trigger's duration.
    let (namespace, name) = unsafe {
        let class = (*data.tg_relation).rd_rel;
        ((*class).relnamespace, CStr::from_ptr((*class).relname.data.as_ptr()))
    };
    if namespace != firing.schema || !matches!(name.to_bytes(), b"_trigger_log" | b"_trigger_log_archive") {
        firing.misused(trigger, "wake-up trigger", expected);
    }
    if is_user_write() && !QUIET.with(Cell::get) {
        wake_at_commit();
    }
    Ok(None)
}

thread_local! {
    /// Set while capture writes changes nothing will send now (`Quiet`).
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// While alive, log rows written by capture do not wake the worker. Dropped when the capture statement ends, also
/// when it fails (an ERROR unwinds through it), so a later user write (the documented retry SQL) wakes it again.
pub struct Quiet(bool);

impl Quiet {
    pub fn when(quiet: bool) -> Quiet {
        let before = QUIET.with(|q| q.replace(quiet));
        Quiet(before)
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        QUIET.with(|q| q.set(self.0));
    }
}

/// Wakes the sync worker when the calling transaction commits and has it try Salesforce at once, even during an
/// outage's backoff (`salesforce.resume()` and `salesforce.retry_now()` call it).
#[pg_extern(volatile, parallel_unsafe)]
fn _wake_worker_at_commit() {
    crate::shmem::retry_at_commit();
}
