//! The worker's transactions: each step that touches the database runs in a short transaction of its own, never
//! across a call to Salesforce, and an error inside one (SQL or Rust) rolls it back and comes back as a
//! `WorkerError`, so the worker lives on.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::error::WorkerError;
use crate::capture::WRITING_OUTCOMES;

/// Runs `f` in a transaction of its own (committed when `f` succeeds, rolled back otherwise).
pub fn in_transaction<R>(f: impl FnOnce(&mut SpiClient<'_>) -> Result<R, WorkerError>) -> Result<R, WorkerError> {
    // SAFETY: the worker's main thread, between transactions.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let body = AssertUnwindSafe(|| Spi::connect_mut(f));
    let result = PgTryBuilder::new(body)
        .catch_others(|e| {
            Err(WorkerError::Database(match e {
                pg_sys::panic::CaughtError::PostgresError(r) | pg_sys::panic::CaughtError::ErrorReport(r) => {
                    r.message().to_string()
                }
                pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
            }))
        })
        .execute();
    WRITING_OUTCOMES.store(false, Ordering::SeqCst);
    // SAFETY: ends the transaction started above, whichever way it went.
    unsafe {
        if result.is_ok() {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
    }
    result
}

/// Runs `f` in a transaction of its own as the sync engine: with `xmlbinary = 'hex'` for that transaction (Heroku
/// Connect's convention), so nothing it writes is captured as a user's change and none of its log updates wakes
/// the worker again.
pub fn as_sync_engine<R>(f: impl FnOnce(&mut SpiClient<'_>) -> Result<R, WorkerError>) -> Result<R, WorkerError> {
    in_transaction(|client| {
        // SAFETY: sets a GUC for the current transaction only (SET LOCAL), from the worker's main thread.
        unsafe {
            pg_sys::set_config_option(
                c"xmlbinary".as_ptr(),
                c"hex".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_LOCAL,
                true,
                0,
                false,
            );
        }
        f(client)
    })
}
