//! The worker's transactions: each step that touches the database runs in a short transaction of its own, never
//! across a call to Salesforce, and an error inside one (SQL or Rust) rolls it back and comes back as a
//! `WorkerError`, so the worker lives on.

use std::cell::Cell;
use std::ffi::CString;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::error::WorkerError;
use crate::capture::WRITING_OUTCOMES;

/// The error report inside whatever `PgTryBuilder` caught: a Postgres ERROR or a Rust panic.
pub fn report_of(e: &pg_sys::panic::CaughtError) -> &pg_sys::panic::ErrorReportWithLevel {
    match e {
        pg_sys::panic::CaughtError::PostgresError(r) | pg_sys::panic::CaughtError::ErrorReport(r) => r,
        pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport,
    }
}

/// Runs `f` in a transaction of its own (committed when `f` succeeds, rolled back otherwise).
pub fn in_transaction<R>(f: impl FnOnce(&mut SpiClient<'_>) -> Result<R, WorkerError>) -> Result<R, WorkerError> {
    // SAFETY: the worker's main thread, between transactions.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let body = AssertUnwindSafe(|| {
        hold_the_extension();
        Spi::connect_mut(f)
    });
    let result = PgTryBuilder::new(body)
        .catch_others(|e| Err(WorkerError::Database(report_of(&e).message().to_string())))
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

/// Takes a share lock on the extension itself for the rest of the transaction. `DROP EXTENSION` locks the extension
/// before any of its tables, so with this it waits for the worker's transaction to end (or the worker waits for the
/// drop) instead of the two taking the extension's tables in different orders and deadlocking (seen: the worker
/// recording outcomes held `_mapping` and waited for `_trigger_log`, which the drop held).
fn hold_the_extension() {
    // SAFETY: inside a transaction on the worker's main thread; a missing extension is not an error here.
    unsafe {
        let extension = pg_sys::get_extension_oid(c"pgforce".as_ptr(), true);
        if extension != pg_sys::Oid::INVALID {
            pg_sys::LockDatabaseObject(pg_sys::ExtensionRelationId, extension, 0, pg_sys::AccessShareLock as i32);
        }
    }
}

thread_local! {
    /// `lock_timeout` and `statement_timeout` of the worker's transactions (from the cycle's `Config`).
    static LIMITS: Cell<(Duration, Duration)> = const { Cell::new((Duration::from_secs(1), Duration::from_secs(60))) };
}

/// Sets `lock_timeout` and `statement_timeout` for the worker's transactions from now on.
pub fn set_limits(lock_timeout: Duration, statement_timeout: Duration) {
    LIMITS.with(|l| l.set((lock_timeout, statement_timeout)));
}

/// Sets a GUC for the current transaction only (SET LOCAL).
///
/// # Safety
/// Inside a transaction, on the worker's main thread.
unsafe fn set_local(name: &std::ffi::CStr, value: &str) {
    let value = CString::new(value).unwrap_or_default();
    unsafe { crate::engine::set_setting(name, &value, pg_sys::GucAction::GUC_ACTION_LOCAL) };
}

/// Runs `f` in a transaction of its own as the sync engine: with `xmlbinary = 'hex'` for that transaction (Heroku
/// Connect's convention), so nothing it writes is captured as a user's change and none of its log updates wakes
/// the worker again; and with the worker's `lock_timeout` and `statement_timeout`, so a row a user holds is retried
/// later instead of waited on.
pub fn as_sync_engine<R>(f: impl FnOnce(&mut SpiClient<'_>) -> Result<R, WorkerError>) -> Result<R, WorkerError> {
    in_transaction(|client| {
        let (lock_timeout, statement_timeout) = LIMITS.with(Cell::get);
        // SAFETY: inside the transaction just started, on the worker's main thread.
        unsafe {
            set_local(c"xmlbinary", "hex");
            set_local(c"lock_timeout", &lock_timeout.as_millis().to_string());
            set_local(c"statement_timeout", &statement_timeout.as_millis().to_string());
        }
        f(client)
    })
}

/// An error inside a subtransaction: its SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub sqlstate: String,
    pub message: String,
}

/// The five-character SQLSTATE of an error code.
fn sqlstate(code: PgSqlErrorCode) -> String {
    let code = code as i32;
    (0..5).map(|i| char::from(((code >> (6 * i)) & 0x3F) as u8 + b'0')).collect()
}

/// Runs `f` in a subtransaction of the current transaction, as PL/pgSQL runs a block with an EXCEPTION clause: an
/// error rolls back only what `f` did and comes back as a `Failure`.
pub fn in_subtransaction<R>(f: impl FnOnce() -> Result<R, WorkerError>) -> Result<R, Failure> {
    // SAFETY: the worker's main thread, inside a transaction; the memory context and resource owner are restored
    // after the subtransaction ends, whichever way.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let body = AssertUnwindSafe(|| f().map_err(|e| Failure { sqlstate: "XX000".into(), message: e.to_string() }));
        let result = PgTryBuilder::new(body)
            .catch_others(|e| {
                let report = report_of(&e);
                Err(Failure { sqlstate: sqlstate(report.sql_error_code()), message: report.message().to_string() })
            })
            .execute();
        if result.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        result
    }
}
