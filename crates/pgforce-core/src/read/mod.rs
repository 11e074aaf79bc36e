//! Salesforce → Postgres, the decisions the read pipeline makes without a database: which SOQL reads the next page of
//! changes (`soql`, keyset on `(SystemModstamp, Id)`), what a page of records says (`page`), how each value becomes
//! the text of its column (`values`), and what a record does to its row (`apply`).

pub mod apply;
pub mod bulk;
pub mod page;
pub mod soql;
pub mod sweep;
pub mod values;

/// How a mapping's reads are (Heroku Connect's mapping states where they fit), as `_read_state.state` and
/// `sync_status.read_state` show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadState {
    /// Nothing read yet, or the initial load under way (Heroku Connect: "doing an initial load or a reload").
    ReloadTable,
    /// Pages of changes are being read.
    PollingSfChanges,
    /// The last read reached the end of Salesforce's changes.
    DataSynced,
    /// `salesforce.pause()`: nothing is read until `resume()`.
    Paused,
    /// The last read failed because Salesforce does not have what the mapping names (`INVALID_FIELD`,
    /// `INVALID_TYPE`, `NOT_FOUND`): the mapping needs a fix (sync_status only, from `last_error`).
    BadConfig,
    /// The last read failed because the integration user may not read the object or a field.
    Unauthorized,
}

impl ReadState {
    pub const ALL: [ReadState; 6] = [
        ReadState::ReloadTable,
        ReadState::PollingSfChanges,
        ReadState::DataSynced,
        ReadState::Paused,
        ReadState::BadConfig,
        ReadState::Unauthorized,
    ];

    /// Error codes of a failed read that make it `BadConfig`, and `Unauthorized`.
    pub const BAD_CONFIG_CODES: [&'static str; 3] = ["INVALID_FIELD", "INVALID_TYPE", "NOT_FOUND"];
    pub const UNAUTHORIZED_CODES: [&'static str; 2] = ["INSUFFICIENT_ACCESS", "INSUFFICIENT_ACCESS_OR_READONLY"];

    pub const fn as_str(self) -> &'static str {
        match self {
            ReadState::ReloadTable => "RELOAD_TABLE",
            ReadState::PollingSfChanges => "POLLING_SF_CHANGES",
            ReadState::DataSynced => "DATA_SYNCED",
            ReadState::Paused => "PAUSED",
            ReadState::BadConfig => "BAD_CONFIG",
            ReadState::Unauthorized => "UNAUTHORIZED",
        }
    }
}

/// Where a mapping's read stands: the last record applied, by `(SystemModstamp, Id)`, the order every read pages in.
/// `None` fields: nothing read yet (the next read is the initial load).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// The record's `SystemModstamp`, seconds since 1970-01-01 UTC (Salesforce keeps whole seconds).
    pub stamp: Option<i64>,
    /// The record's `Id` (18 characters).
    pub id: Option<String>,
}

impl Position {
    /// The position after `record`, if it comes later than this one (pages are ordered, but a read that starts
    /// earlier than the position, to look back for late commits, must not move it back).
    pub fn advance(&mut self, stamp: i64, id: &str) {
        let later = match (self.stamp, self.id.as_deref()) {
            (Some(s), Some(i)) => (stamp, id) > (s, i),
            _ => true,
        };
        if later {
            self.stamp = Some(stamp);
            self.id = Some(id.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_only_moves_forward() {
        let mut p = Position::default();
        p.advance(100, "001A");
        p.advance(100, "001C");
        p.advance(100, "001B");
        p.advance(99, "001Z");
        assert_eq!(p, Position { stamp: Some(100), id: Some("001C".into()) });
        p.advance(101, "0010");
        assert_eq!(p, Position { stamp: Some(101), id: Some("0010".into()) });
    }
}
