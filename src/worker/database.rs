//! A worker whose database does not exist (yet) waits for it instead of failing at every start: connecting to a
//! missing database ends the process with FATAL, and the postmaster would start it again every five seconds. The
//! start after such a failure connects to no database (shared catalogs only, as the autovacuum launcher does),
//! watches `pg_database`, says so once a minute, and leaves (to be started again, and connect) once the database
//! is there.

use std::ffi::CStr;
use std::time::{Duration, Instant};

use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;

use super::engine::status::{show, Step};
use crate::shmem;

/// How often a missing database is looked for.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How often the wait is logged, and how long a database that exists but refused the worker is left alone.
const SAY_EVERY: Duration = Duration::from_secs(60);

/// Waits until `name` exists, then ends the process so that the postmaster starts the worker again (and it
/// connects). `failures`: how many starts in a row failed to connect. Never returns.
pub fn wait_for(name: &str, failures: u32) -> ! {
    shmem::connected(false);
    BackgroundWorker::connect_worker_to_spi(None, None);
    show(&Step::WaitingForDatabase(name.to_string()));
    let since = Instant::now();
    let mut said: Option<Instant> = None;
    while BackgroundWorker::wait_latch(Some(LOOK_EVERY)) {
        let found = exists(name);
        // A database that exists yet refused the worker more than once (connections not allowed, too many
        // connections, ...) is tried again once a minute, so that it is not a crash loop either.
        if found && (failures < 2 || since.elapsed() >= SAY_EVERY) {
            break;
        }
        if said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
            if found {
                pgrx::warning!(
                    "pgforce: could not connect to database \"{name}\" (pgforce.database; the error is above): trying again in a minute"
                );
            } else {
                pgrx::warning!(
                    "pgforce: database \"{name}\" (pgforce.database) does not exist: nothing is delivered until it is created"
                );
            }
            said = Some(Instant::now());
        }
    }
    // SAFETY: ends this background worker process; a non-zero code has the postmaster start it again.
    unsafe { pg_sys::proc_exit(1) };
    // Some Postgres versions' bindings do not declare that proc_exit never returns.
    #[allow(unreachable_code)]
    {
        unreachable!("proc_exit does not return")
    }
}

/// Whether a database of that name exists: a plain scan of the shared catalog `pg_database`, the only way to read
/// it without a database (its name index would need `pg_class`), as the autovacuum launcher does.
fn exists(name: &str) -> bool {
    BackgroundWorker::transaction(|| {
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let mut found = false;
        // SAFETY: a catalog scan inside a transaction; every tuple is read while the scan holds it.
        unsafe {
            let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, lock);
            let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
            loop {
                let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tuple.is_null() {
                    break;
                }
                let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
                if CStr::from_ptr((*form).datname.data.as_ptr()).to_bytes() == name.as_bytes() {
                    found = true;
                    break;
                }
            }
            pg_sys::heap_endscan(scan);
            pg_sys::table_close(rel, lock);
        }
        found
    })
}
