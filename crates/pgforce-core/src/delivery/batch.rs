//! What one call to Salesforce carries and what comes back of it: a batch of records of one kind of call, the
//! verdict on each, the Bulk operation a batch can go as and the key that finds a record in a job's results.
//! Planning builds batches, sending (collections or Bulk) answers them; neither needs the other for this.

use serde_json::Value;

use crate::salesforce::CallError;
pub use crate::salesforce::CallKind;

/// Records for one call: the caller's key for each (to map verdicts back) and the record (or id for deletes).
#[derive(Debug, Clone)]
pub struct Batch {
    pub kind: CallKind,
    pub items: Vec<(usize, Value)>,
    /// The request body's size as planned (JSON, envelope included).
    pub bytes: usize,
    /// Lookups to fill in before sending: (item key, field, key of the parent item whose new id goes there), the
    /// parent being sent in an earlier wave (`delivery::links`).
    pub links: Vec<(usize, String, usize)>,
    /// Sent as one Bulk API 2.0 job of this sObject (`delivery::bulk`) rather than a collections call.
    pub bulk: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Salesforce took it; the id (new for creates) and whether an upsert created the record.
    Done { id: Option<String>, created: bool },
    Failed {
        code: String,
        message: String,
        transient: bool,
        /// The request may have been applied (no answer, connection lost, 5xx).
        in_doubt: bool,
    },
    /// Not sent because the connection is in trouble: try again later, at no cost to the record.
    Unsent,
    /// Sent, but never answered because Salesforce became unreachable: no cost to the record, yet it may have been
    /// applied.
    Unanswered,
    /// Uploaded in this Bulk job, which Salesforce runs on its own: the record's outcome is read from the job's
    /// results once it is over (`delivery::bulk::verdicts_for`); until then its change stays in flight.
    Queued { job: String },
    /// Not sent: the parent (by key) whose id a lookup needs was not written. `failed`: it failed for good, with
    /// this message; otherwise it will be tried again, and so will this one.
    Blocked { parent: usize, failed: Option<String> },
}

/// What sending produced: a verdict per item key, and the connection trouble that stopped it, if any.
#[derive(Debug, Default)]
pub struct Delivery {
    pub verdicts: Vec<(usize, Verdict)>,
    /// Set when the connection should pause (unreachable, 503, limits) or credentials were refused.
    pub trouble: Option<CallError>,
}

/// Receives the verdicts of each request as it completes (from the sending threads).
pub type Report<'a> = &'a (dyn Fn(Vec<(usize, Verdict)>) + Sync);

/// Keeps the id of a Bulk job just created, with the item keys it carries, where a restarted worker finds them
/// (`true` once kept): its records are uploaded only then, so a job that may run is always known.
pub type KeepJob<'a> = &'a (dyn Fn(&str, &[usize]) -> bool + Sync);

/// The Bulk operation of a call kind, and the column whose value identifies each row in the results.
pub fn operation(kind: &CallKind) -> Option<(&'static str, String)> {
    match kind {
        CallKind::Upsert { field, .. } => Some(("upsert", field.clone())),
        CallKind::Update => Some(("update", "Id".into())),
        CallKind::Delete => Some(("delete", "Id".into())),
        CallKind::Create => None,
    }
}

/// The key of an item: its upsert field's value, or its Salesforce id (a delete's item is the id itself).
pub fn key_of(item: &Value, column: &str) -> Option<String> {
    match item {
        Value::String(id) => Some(id.clone()),
        Value::Object(record) => {
            record.iter().find(|(k, _)| k.eq_ignore_ascii_case(column)).and_then(|(_, v)| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        }
        _ => None,
    }
}
