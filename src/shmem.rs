//! What other backends know of the sync worker, through shared memory: its latch, so a commit can wake it (the
//! first captured or user-reset log row of a transaction registers a commit callback that sets the latch: one
//! `SetLatch` per commit, not per row), and its pid and database, so `DROP DATABASE` of that database can ask it to
//! leave instead of failing with "being accessed by other users". Reserved while preloading.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, pg_sys, register_xact_callback, PgAtomic, PgXactCallbackEvent};

/// Address of the worker's latch in shared memory (0 when no worker runs). Latches live in the PGPROC array,
/// which every process maps at the same address.
static WORKER_LATCH: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"pgforce_worker_latch") };
static WORKER_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"pgforce_worker_pid") };
static WORKER_DATABASE: PgAtomic<AtomicU32> = unsafe { PgAtomic::new(c"pgforce_worker_database") };
/// Set while the worker connects to its database: still set at the next start means that connecting failed (the
/// database does not exist, or refused the connection), and the worker waits for it instead of failing again.
static WORKER_CONNECTING: PgAtomic<AtomicBool> = unsafe { PgAtomic::new(c"pgforce_worker_connecting") };
/// An operator asked the worker to try Salesforce now (`resume()`, `retry_now()`): it forgets the outage backoff at
/// its next wake-up.
static RETRY_NOW: PgAtomic<AtomicBool> = unsafe { PgAtomic::new(c"pgforce_worker_retry_now") };
/// How many cycles the worker ran since the server started: a cycle runs per wake-up with something to look at,
/// never per commit of a paused or read-only mapping (`salesforce.sync_status.worker_cycles`).
static WORKER_CYCLES: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"pgforce_worker_cycles") };
/// Until when (milliseconds since the Unix epoch) commits need not wake the worker: it sleeps through an outage's
/// backoff, a pacing pause or another server's delivery, which no new change can shorten (0: every commit wakes
/// it). An operator's `resume()` or `retry_now()` wakes it all the same, and so does a reload.
static WORKER_DEAF_UNTIL: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"pgforce_worker_deaf_until") };
/// How many starts in a row failed to connect.
static CONNECT_FAILURES: PgAtomic<AtomicU32> = unsafe { PgAtomic::new(c"pgforce_worker_connect_failures") };
static mut PREVIOUS_OBJECT_ACCESS_HOOK: pg_sys::object_access_hook_type = None;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// Reserves the shared memory; only possible while preloading.
#[allow(unexpected_cfgs)] // pgrx's macro tests features of Postgres versions this crate does not build for
pub fn init_shared_memory() {
    pg_shmem_init!(WORKER_LATCH);
    pg_shmem_init!(WORKER_PID);
    pg_shmem_init!(WORKER_DATABASE);
    pg_shmem_init!(WORKER_CONNECTING);
    pg_shmem_init!(CONNECT_FAILURES);
    pg_shmem_init!(RETRY_NOW);
    pg_shmem_init!(WORKER_CYCLES);
    pg_shmem_init!(WORKER_DEAF_UNTIL);
    // SAFETY: hooks are installed in the postmaster while preloading; backends inherit them.
    unsafe {
        PREVIOUS_OBJECT_ACCESS_HOOK = pg_sys::object_access_hook;
        pg_sys::object_access_hook = Some(on_object_access);
    }
}

/// Called before the worker connects to its database. When the previous start died while connecting, returns how
/// many starts in a row failed to connect (the worker then waits instead); otherwise 0.
pub fn connecting() -> u32 {
    if WORKER_CONNECTING.get().swap(true, Ordering::SeqCst) {
        CONNECT_FAILURES.get().fetch_add(1, Ordering::SeqCst) + 1
    } else {
        0
    }
}

/// Called once the worker is connected to its database (`ok`), or when it waits instead of connecting.
pub fn connected(ok: bool) {
    WORKER_CONNECTING.get().store(false, Ordering::SeqCst);
    if ok {
        CONNECT_FAILURES.get().store(0, Ordering::SeqCst);
    }
}

/// Called by the worker once connected: commits from now on wake it.
pub fn publish_worker() {
    // SAFETY: MyLatch, MyProcPid and MyDatabaseId describe this process and stay valid for its lifetime.
    unsafe {
        WORKER_LATCH.get().store(pg_sys::MyLatch as u64, Ordering::SeqCst);
        WORKER_PID.get().store(pg_sys::MyProcPid, Ordering::SeqCst);
        WORKER_DATABASE.get().store(pg_sys::MyDatabaseId.to_u32(), Ordering::SeqCst);
    }
}

pub fn withdraw_worker() {
    WORKER_LATCH.get().store(0, Ordering::SeqCst);
    WORKER_PID.get().store(0, Ordering::SeqCst);
    WORKER_DATABASE.get().store(0, Ordering::SeqCst);
}

/// `DROP DATABASE` of the worker's database: ask the worker to exit (it restarts and reconnects later), so the
/// drop does not wait five seconds and fail. Runs in the dropping backend, before Postgres counts other sessions.
#[pg_guard]
unsafe extern "C-unwind" fn on_object_access(
    access: pg_sys::ObjectAccessType::Type,
    class_id: pg_sys::Oid,
    object_id: pg_sys::Oid,
    sub_id: std::ffi::c_int,
    arg: *mut std::ffi::c_void,
) {
    unsafe {
        if let Some(previous) = PREVIOUS_OBJECT_ACCESS_HOOK {
            previous(access, class_id, object_id, sub_id, arg);
        }
    }
    let dropping_database = access == pg_sys::ObjectAccessType::OAT_DROP && class_id == pg_sys::DatabaseRelationId;
    if dropping_database && object_id.to_u32() == WORKER_DATABASE.get().load(Ordering::SeqCst) {
        let pid = WORKER_PID.get().load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: signalling a postmaster child by pid, as pg_terminate_backend does.
            unsafe { libc_kill(pid) };
        }
    }
}

unsafe fn libc_kill(pid: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: std::ffi::c_int) -> std::ffi::c_int;
    }
    // SIGTERM: the worker's handler sets its shutdown flag and latch.
    unsafe { kill(pid, 15) };
}

fn set_worker_latch() {
    let latch = WORKER_LATCH.get().load(Ordering::SeqCst);
    if latch != 0 {
        // SAFETY: the address is a PGPROC latch in shared memory; setting a latch another process now owns only
        // causes it a spurious wake-up.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

/// Whether the worker serves this backend's database: a commit elsewhere has nothing for it.
fn serves_this_database() -> bool {
    // SAFETY: reading this backend's database id.
    WORKER_DATABASE.get().load(Ordering::SeqCst) == unsafe { pg_sys::MyDatabaseId.to_u32() }
}

/// Arms one wake-up for when the current transaction commits (never in the worker itself, nor for a database the
/// worker does not serve).
pub fn wake_at_commit() {
    if !crate::is_preloaded() || ARMED.with(Cell::get) || !serves_this_database() {
        return;
    }
    // SAFETY: reading this process's pid.
    if WORKER_PID.get().load(Ordering::SeqCst) == unsafe { pg_sys::MyProcPid } {
        return;
    }
    ARMED.with(|a| a.set(true));
    register_xact_callback(PgXactCallbackEvent::Commit, || {
        ARMED.with(|a| a.set(false));
        if now_ms() >= WORKER_DEAF_UNTIL.get().load(Ordering::Relaxed) {
            set_worker_latch();
        }
    });
    register_xact_callback(PgXactCallbackEvent::Abort, || ARMED.with(|a| a.set(false)));
}

/// Arms, for when the current transaction commits, a wake-up that also tells the worker to try Salesforce at once,
/// cutting short an outage's backoff.
pub fn retry_at_commit() {
    if !crate::is_preloaded() || !serves_this_database() {
        return;
    }
    register_xact_callback(PgXactCallbackEvent::Commit, || {
        RETRY_NOW.get().store(true, Ordering::SeqCst);
        set_worker_latch();
    });
}

/// In the worker: whether an operator asked it to try now since it last looked (and forgets the request).
pub fn take_retry_now() -> bool {
    RETRY_NOW.get().swap(false, Ordering::SeqCst)
}

/// In the worker: commits need not wake it for this long (`None`: every commit wakes it).
pub fn sleep_through_commits(wait: Option<std::time::Duration>) {
    let until = wait.map_or(0, |w| now_ms().saturating_add(w.as_millis().min(u64::MAX as u128) as u64));
    WORKER_DEAF_UNTIL.get().store(until, Ordering::Relaxed);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// In the worker: counts one cycle.
pub fn count_cycle() {
    WORKER_CYCLES.get().fetch_add(1, Ordering::Relaxed);
}

/// How many cycles the worker ran since the server started (0 without shared memory: not preloaded).
pub fn worker_cycles() -> u64 {
    if crate::is_preloaded() {
        WORKER_CYCLES.get().load(Ordering::Relaxed)
    } else {
        0
    }
}
