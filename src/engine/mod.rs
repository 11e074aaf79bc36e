//! What every pipeline of the worker and the operator functions share inside the database. Today: the one way to run
//! code a table's owner controls (`owner`), and setting a GUC for a scope (`set_setting`).

use std::ffi::CStr;

use pgrx::pg_sys;

pub mod owner;

/// Sets a user-settable GUC for a scope: `GUC_ACTION_LOCAL` for the rest of the transaction (SET LOCAL),
/// `GUC_ACTION_SAVE` for the current GUC nest level (as a function's SET clause).
///
/// # Safety
/// Inside a transaction, on the backend's main thread (and, for `GUC_ACTION_SAVE`, after `NewGUCNestLevel`).
pub unsafe fn set_setting(name: &CStr, value: &CStr, action: pg_sys::GucAction::Type) {
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            action,
            true,
            0,
            false,
        );
    }
}
