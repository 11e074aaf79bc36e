//! The one way pgforce runs code that a table's owner controls — its triggers, row-level security policies,
//! defaults, generated columns and index expressions — whenever pgforce reads or writes a user's table with rights
//! the owner may lack: the worker's write-back and planning reads, `rollback()`, `preview()`, and the read path's
//! apply and reload. Nothing else in pgforce switches identity.
//!
//! It does what Postgres's own maintenance commands do (REFRESH MATERIALIZED VIEW, VACUUM, CREATE INDEX): the code
//! runs as the table's owner in a security-restricted operation (no `SET ROLE`, `SET SESSION AUTHORIZATION`,
//! temporary tables or cursors that outlive it), with a `search_path` of only `pg_catalog, pg_temp`, inside a GUC
//! nest level that is rolled back when it ends: whatever the owner's code set, even with `set_config(…, false)`,
//! is undone, so neither the worker's session nor an operator's or monitor's session keeps anything of it.

use std::ffi::CStr;

use pgrx::pg_sys;

/// The only `search_path` a table owner's code gets from pgforce (Postgres 17's `RestrictSearchPath`).
pub const SAFE_SEARCH_PATH: &CStr = c"pg_catalog, pg_temp";

/// Runs `f` as `owner`, in a security-restricted operation and a GUC nest level that is rolled back afterwards,
/// with `search_path = pg_catalog, pg_temp` and `xmlbinary = 'hex'` (the sync engine's writes are never captured).
///
/// An error inside `f` (a Postgres ERROR unwinding through it) aborts the (sub)transaction, and the abort restores
/// both the identity and the settings, as it does for Postgres's own commands.
pub fn as_table_owner<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let mut caller = pg_sys::Oid::INVALID;
    let mut context = 0;
    // SAFETY: switches this backend's current user, then opens a GUC nest level, exactly as ExecRefreshMatView
    // does; both are undone below, or by the abort of the enclosing (sub)transaction on error.
    let nest = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut caller, &mut context);
        let restricted = (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32;
        pg_sys::SetUserIdAndSecContext(owner, context | restricted);
        let nest = pg_sys::NewGUCNestLevel();
        super::set_setting(c"search_path", SAFE_SEARCH_PATH, pg_sys::GucAction::GUC_ACTION_SAVE);
        super::set_setting(c"xmlbinary", c"hex", pg_sys::GucAction::GUC_ACTION_SAVE);
        nest
    };
    let result = f();
    // SAFETY: rolls back every setting changed since the nest level opened (isCommit = false, as Postgres's own
    // maintenance does), then restores the caller's identity.
    unsafe {
        pg_sys::AtEOXact_GUC(false, nest);
        pg_sys::SetUserIdAndSecContext(caller, context);
    }
    result
}
