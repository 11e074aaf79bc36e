//! Waking the worker at commit: the first captured (or user-reset) log row of a transaction registers a commit
//! callback that sets the worker's latch, so a commit costs one `SetLatch`, not one per row.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, pg_sys, register_xact_callback, PgAtomic, PgXactCallbackEvent};

use crate::server::is_user_write;

/// Address of the worker's latch in shared memory (0 when no worker runs). Latches live in the PGPROC array,
/// which every process maps at the same address.
static WORKER_LATCH: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"pgforce_worker_latch") };

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// Reserves the shared memory; only possible while preloading.
#[allow(unexpected_cfgs)] // pgrx's macro tests features of Postgres versions this crate does not build for
pub fn init_shared_memory() {
    pg_shmem_init!(WORKER_LATCH);
}

/// Called by the worker: commits from now on wake it.
pub fn publish_worker_latch() {
    // SAFETY: MyLatch is this process's latch, valid for its lifetime.
    let latch = unsafe { pg_sys::MyLatch } as u64;
    WORKER_LATCH.get().store(latch, Ordering::SeqCst);
}

pub fn withdraw_worker_latch() {
    WORKER_LATCH.get().store(0, Ordering::SeqCst);
}

fn set_worker_latch() {
    let latch = WORKER_LATCH.get().load(Ordering::SeqCst);
    if latch != 0 {
        // SAFETY: the address is a PGPROC latch in shared memory; setting a latch another process now owns only
        // causes it a spurious wake-up.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

/// Arms one wake-up for when the current transaction commits.
pub fn wake_at_commit() {
    if !crate::is_preloaded() || ARMED.with(Cell::get) {
        return;
    }
    ARMED.with(|a| a.set(true));
    register_xact_callback(PgXactCallbackEvent::Commit, || {
        ARMED.with(|a| a.set(false));
        set_worker_latch();
    });
    register_xact_callback(PgXactCallbackEvent::Abort, || ARMED.with(|a| a.set(false)));
}

/// Statement trigger on `_trigger_log` and `_trigger_log_archive`: rows inserted, reset to NEW or set to REQUEUE
/// by users (the documented retry SQL) wake the worker at commit. The worker's own writes (xmlbinary = hex) do not.
#[pg_trigger]
fn _wake_worker<'a>(
    _trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    if is_user_write() {
        wake_at_commit();
    }
    Ok(None)
}
