//! The vocabulary of `_trigger_log`: its states and actions (Heroku Connect's names) and the outcomes written to a
//! mapped row's `_hc_lastop`. Every piece of SQL text that names one of them is printed from these types.

use std::fmt;
use std::str::FromStr;

/// A log row's state, with Heroku Connect's meanings.
/// A row's columns as the trigger log holds them: name → text (NULL as `None`).
pub type Values = std::collections::BTreeMap<String, Option<String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogState {
    /// Captured, waiting to be sent (or waiting for a scheduled retry).
    New,
    /// Claimed by the worker, being sent.
    Pending,
    Success,
    Failed,
    /// Folded into a later change of the same record, which carries the outcome.
    Merged,
    /// A change with nothing to send (a no-op update, a delete of a record that never reached Salesforce).
    Ignore,
    /// An `Ignore` row the worker has seen.
    Ignored,
    /// A change of a read-only mapping: recorded, never sent.
    ReadOnly,
    /// Archive only: set by a user to have the entry copied back into the log.
    Requeue,
    /// Archive only: an entry copied back.
    Requeued,
}

impl LogState {
    pub const ALL: [LogState; 10] = [
        LogState::New,
        LogState::Pending,
        LogState::Success,
        LogState::Failed,
        LogState::Merged,
        LogState::Ignore,
        LogState::Ignored,
        LogState::ReadOnly,
        LogState::Requeue,
        LogState::Requeued,
    ];

    /// States the worker still has to look at: the live log's work-queue index covers exactly these.
    pub const QUEUED: [LogState; 3] = [LogState::New, LogState::Pending, LogState::Ignore];

    /// States the worker is done with: entries in them move to the archive after `pgforce.archive_after` (the
    /// live log's `_trigger_log_idx_finished` index covers exactly these).
    pub const FINISHED: [LogState; 6] = [
        LogState::Success,
        LogState::Merged,
        LogState::Ignored,
        LogState::Failed,
        LogState::ReadOnly,
        LogState::Requeued,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            LogState::New => "NEW",
            LogState::Pending => "PENDING",
            LogState::Success => "SUCCESS",
            LogState::Failed => "FAILED",
            LogState::Merged => "MERGED",
            LogState::Ignore => "IGNORE",
            LogState::Ignored => "IGNORED",
            LogState::ReadOnly => "READONLY",
            LogState::Requeue => "REQUEUE",
            LogState::Requeued => "REQUEUED",
        }
    }
}

/// `'A', 'B'` for `state IN (…)` in SQL text.
pub fn sql_list(states: &[LogState]) -> String {
    states.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for LogState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown trigger log {kind} {value:?}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

impl FromStr for LogState {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LogState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownName { kind: "state", value: s.to_string() })
    }
}

/// The change a log row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Insert,
    Update,
    Delete,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Insert => "INSERT",
            Action::Update => "UPDATE",
            Action::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Action::Insert, Action::Update, Action::Delete]
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownName { kind: "action", value: s.to_string() })
    }
}

/// What a mapped row's `_hc_lastop` says about its last change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastOp {
    /// A user changed the row; the change is on its way.
    Pending,
    Inserted,
    Updated,
    /// The sync engine wrote the row without recording an outcome.
    Synced,
    Failed,
    /// `salesforce.rollback(salesforce_only => true)` set the record back and left the row as it was. Kept until the
    /// row changes again.
    RolledBack,
}

impl LastOp {
    pub const fn as_str(self) -> &'static str {
        match self {
            LastOp::Pending => "PENDING",
            LastOp::Inserted => "INSERTED",
            LastOp::Updated => "UPDATED",
            LastOp::Synced => "SYNCED",
            LastOp::Failed => "FAILED",
            LastOp::RolledBack => "ROLLED_BACK",
        }
    }
}

/// What happened to one log entry, as `salesforce.sync_audit.status_code` reports it: iSyncSF's codes where they
/// exist (1–9), pgforce's own beyond (12, 13). The worker records the codes only it can tell (what was actually done,
/// a row deleted before it was sent) in the entry's `sf_result`; the others follow from state and action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditStatus {
    InsertError,
    Updated,
    UpdateError,
    /// Nothing sent for it: folded into a later change (`MERGED`), nothing to send (`IGNORED`), a read-only
    /// mapping's change (`READONLY`), or copied back to the log (`REQUEUED`).
    Skipped,
    /// The row was deleted before this change reached Salesforce.
    SourceGone,
    Inserted,
    /// Waiting to be sent, being sent, or waiting for a retry.
    InProgress,
    Deleted,
    DeleteError,
}

impl AuditStatus {
    pub const ALL: [AuditStatus; 9] = [
        AuditStatus::InsertError,
        AuditStatus::Updated,
        AuditStatus::UpdateError,
        AuditStatus::Skipped,
        AuditStatus::SourceGone,
        AuditStatus::Inserted,
        AuditStatus::InProgress,
        AuditStatus::Deleted,
        AuditStatus::DeleteError,
    ];

    pub const fn code(self) -> i32 {
        match self {
            AuditStatus::InsertError => 1,
            AuditStatus::Updated => 2,
            AuditStatus::UpdateError => 3,
            AuditStatus::Skipped => 4,
            AuditStatus::SourceGone => 5,
            AuditStatus::Inserted => 7,
            AuditStatus::InProgress => 9,
            AuditStatus::Deleted => 12,
            AuditStatus::DeleteError => 13,
        }
    }

    pub const fn text(self) -> &'static str {
        match self {
            AuditStatus::InsertError => "Insert Error",
            AuditStatus::Updated => "Updated",
            AuditStatus::UpdateError => "Update Error",
            AuditStatus::Skipped => "Skipped",
            AuditStatus::SourceGone => "Source N/A",
            AuditStatus::Inserted => "Inserted",
            AuditStatus::InProgress => "In Progress",
            AuditStatus::Deleted => "Deleted",
            AuditStatus::DeleteError => "Delete Error",
        }
    }

    pub fn from_code(code: i32) -> Option<AuditStatus> {
        AuditStatus::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The status of an entry in `state` recording `action`; `recorded`: the code the worker wrote in `sf_result`
    /// (kept while the entry is finished and not failed).
    pub fn of(state: LogState, action: Option<Action>, recorded: Option<i32>) -> AuditStatus {
        let recorded = recorded.and_then(AuditStatus::from_code);
        match state {
            LogState::New | LogState::Pending | LogState::Ignore | LogState::Requeue => AuditStatus::InProgress,
            LogState::Failed => match action {
                Some(Action::Insert) => AuditStatus::InsertError,
                Some(Action::Delete) => AuditStatus::DeleteError,
                _ => AuditStatus::UpdateError,
            },
            LogState::Success => recorded.unwrap_or(match action {
                Some(Action::Insert) => AuditStatus::Inserted,
                Some(Action::Delete) => AuditStatus::Deleted,
                _ => AuditStatus::Updated,
            }),
            LogState::Merged | LogState::Ignored => recorded.unwrap_or(AuditStatus::Skipped),
            LogState::ReadOnly | LogState::Requeued => AuditStatus::Skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_print_and_parse_as_heroku_connect_names_them() {
        let names: Vec<&str> = LogState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["NEW", "PENDING", "SUCCESS", "FAILED", "MERGED", "IGNORE", "IGNORED", "READONLY", "REQUEUE", "REQUEUED"]
        );
        for state in LogState::ALL {
            assert_eq!(state.as_str().parse::<LogState>(), Ok(state));
        }
        assert!("new".parse::<LogState>().is_err(), "states are upper case, as Connect writes them");
        assert_eq!(sql_list(&LogState::QUEUED), "'NEW', 'PENDING', 'IGNORE'");
    }

    #[test]
    fn every_state_is_queued_finished_or_archive_only() {
        for state in LogState::ALL {
            let queued = LogState::QUEUED.contains(&state);
            let archive_only = matches!(state, LogState::Requeue);
            assert_eq!(
                [queued, LogState::FINISHED.contains(&state), archive_only].iter().filter(|b| **b).count(),
                1,
                "{state} must be in exactly one group"
            );
        }
    }

    #[test]
    fn audit_codes_are_isyncsfs_where_they_exist() {
        let codes: Vec<(i32, &str)> = AuditStatus::ALL.iter().map(|s| (s.code(), s.text())).collect();
        assert_eq!(
            codes,
            [
                (1, "Insert Error"),
                (2, "Updated"),
                (3, "Update Error"),
                (4, "Skipped"),
                (5, "Source N/A"),
                (7, "Inserted"),
                (9, "In Progress"),
                (12, "Deleted"),
                (13, "Delete Error")
            ]
        );
        let of = |state, action, recorded| AuditStatus::of(state, action, recorded).code();
        assert_eq!(of(LogState::Success, Some(Action::Update), None), 2);
        assert_eq!(of(LogState::Success, Some(Action::Update), Some(7)), 7, "an update sent as a create");
        assert_eq!(of(LogState::Failed, Some(Action::Insert), Some(7)), 1, "failed since");
        assert_eq!(of(LogState::New, Some(Action::Delete), Some(12)), 9, "requeued since");
        assert_eq!(of(LogState::Merged, Some(Action::Insert), Some(5)), 5);
        assert_eq!(of(LogState::Ignored, Some(Action::Update), None), 4);
        assert_eq!(of(LogState::Failed, None, None), 3);
    }

    #[test]
    fn actions_round_trip() {
        for a in [Action::Insert, Action::Update, Action::Delete] {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        }
        assert!("TRUNCATE".parse::<Action>().is_err());
    }
}
