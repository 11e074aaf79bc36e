//! pgforce: Heroku Connect's write path inside Postgres.
//!
//! Data flows one way, and the modules follow it: `api` (the SQL functions users call, such as `map_table`) →
//! `capture` (triggers on mapped tables write `_trigger_log`, and wake the worker at commit through `shmem`) →
//! `worker` (claim → plan → send → record → archive; the pure steps live in `pgforce_core::delivery`). `guc` holds
//! every setting, `error` the SQL errors users see.

use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::prelude::*;

mod api;
mod capture;
mod engine;
mod error;
mod guc;
mod server;
mod shmem;
mod worker;

pgrx::pg_module_magic!();

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

/// Set in the postmaster when the library is loaded through `shared_preload_libraries`; backends inherit it.
static PRELOADED: AtomicBool = AtomicBool::new(false);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: a plain read of a postmaster global that is only written before _PG_init runs.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    guc::register(preloading);
    capture::init_mapped_cache();
    if preloading {
        PRELOADED.store(true, Ordering::Relaxed);
        shmem::init_shared_memory();
        worker::register();
    }
}

/// Whether the library was preloaded (so the worker and its wake-up latch exist).
pub fn is_preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// Whether the library was preloaded, so that the background worker can run.
#[pg_extern(stable, parallel_safe)]
fn _is_preloaded() -> bool {
    is_preloaded()
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pgforce'"]
    }
}
