//! One delivery, as pure data transformations the worker drives: the rows it claimed (`Claimed`) are merged per
//! record (`merge`), planned into Salesforce calls in dependency order (`plan`), sent (`send`), and each answer is
//! turned into what to record for every log row and mapped row (`outcome`). Only claiming and recording need
//! Postgres; they live in the extension's worker.

pub mod batch;
pub mod bulk;
pub mod doubt;
pub mod links;
pub mod merge;
pub mod outcome;
pub mod plan;
pub mod send;

use std::collections::HashMap;

use crate::log::Action;
use crate::mapping::Target;

pub use crate::log::Values;

/// One claimed `_trigger_log` row of a mapped table.
#[derive(Debug, Clone)]
pub struct Change {
    pub log_id: i64,
    pub record_id: i64,
    pub action: Action,
    pub sfid: Option<String>,
    /// INSERT: the whole row; UPDATE: the changed pairs; DELETE: empty.
    pub values: Values,
    /// UPDATE and DELETE: the whole row before the change.
    pub old: Values,
    pub attempts: i32,
    /// Set when an earlier attempt sent this change and its outcome is unknown (no answer, a lost connection, a
    /// crash between sending and recording): when that attempt was claimed, in seconds since 1970 (UTC).
    pub in_doubt_since: Option<i64>,
    /// Tried before: a transient failure (attempts > 0) or a finished entry queued again (`retry_failed`,
    /// `retry_failed_after`, `REQUEUE`, an operator's `UPDATE … SET state = 'NEW'`). Its values may be older than
    /// what a later change already delivered, so it is sent with the row's current values.
    pub retried: bool,
    /// A later delete of the same row was claimed with it: the row this change was made to is gone, and a row
    /// there now (under the same id) is another, re-inserted one.
    pub deleted_later: bool,
}

/// Marks each change that a later delete of the same row follows (`changes`: one table's, in log order).
pub fn mark_deleted_later(changes: &mut [Change]) {
    let mut deleted = std::collections::HashSet::new();
    for c in changes.iter_mut().rev() {
        c.deleted_later = deleted.contains(&c.record_id);
        if c.action == crate::log::Action::Delete {
            deleted.insert(c.record_id);
        }
    }
}

/// A read-write mapping as the worker sends it.
#[derive(Debug, Clone)]
pub struct Table {
    /// The table's name, schema-qualified and quoted for SQL.
    pub qualified: String,
    pub target: Target,
    /// Columns sent as lookups to the Salesforce ids of parent rows (`delivery::links`).
    pub links: Vec<links::ForeignKey>,
}

/// What one claim holds: changes per log `table_name` (in log order) and the mappings they belong to.
#[derive(Debug, Default)]
pub struct Claimed {
    pub changes: HashMap<String, Vec<Change>>,
    pub tables: HashMap<String, Table>,
    /// Log rows the claim moved out of the queue (including those finished on the spot, such as `IGNORE` rows).
    pub count: usize,
}

impl Claimed {
    /// Adds the rows of another claim (of other records: the parents this one's writes wait for).
    pub fn absorb(&mut self, other: Claimed) {
        for (table, changes) in other.changes {
            let mine = self.changes.entry(table).or_default();
            mine.extend(changes);
            mine.sort_by_key(|c| c.log_id);
        }
        for (name, table) in other.tables {
            self.tables.entry(name).or_insert(table);
        }
        self.count += other.count;
    }
}
