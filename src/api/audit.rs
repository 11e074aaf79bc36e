//! The audit's vocabulary in SQL: `salesforce.sync_audit` derives each entry's status code and text with these, from
//! `pgforce_core::log::AuditStatus`, so the view and the worker share one definition.

use pgforce_core::log::{Action, AuditStatus, LogState};
use pgrx::prelude::*;

/// The audit status code of a log entry in `state` recording `action`, with the code the worker recorded in
/// `sf_result`. NULL for a state that is none of Heroku Connect's (or NULL).
#[pg_extern(immutable, parallel_safe)]
fn _audit_status(state: Option<&str>, action: Option<&str>, sf_result: Option<i32>) -> Option<i32> {
    let state: LogState = state?.parse().ok()?;
    let action = action.and_then(|a| a.parse::<Action>().ok());
    Some(AuditStatus::of(state, action, sf_result).code())
}

/// The text of an audit status code (NULL for an unknown code).
#[pg_extern(immutable, parallel_safe, strict)]
fn _audit_status_text(code: i32) -> Option<&'static str> {
    AuditStatus::from_code(code).map(AuditStatus::text)
}
