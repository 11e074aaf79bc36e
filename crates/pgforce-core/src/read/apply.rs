//! What a record read from Salesforce does to its row. A read never undoes a local change still on its way: a row
//! with changes not yet delivered keeps its values, and a row deleted locally (its delete not yet delivered) is not
//! brought back. An unchanged record writes nothing (no WAL, no user triggers).

/// What happens to a record's deleted rows: Heroku Connect's behaviour (delete) or `on_delete => 'flag'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    Delete,
    Flag,
}

impl OnDelete {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDelete::Delete => "delete",
            OnDelete::Flag => "flag",
        }
    }

    pub fn parse(text: &str) -> Option<OnDelete> {
        match text {
            "delete" => Some(OnDelete::Delete),
            "flag" => Some(OnDelete::Flag),
            _ => None,
        }
    }
}

/// What the table holds of a record, as the apply step reads it before deciding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Local {
    /// A row has the record's sfid.
    pub exists: bool,
    /// That row's `systemmodstamp` (seconds since 1970 UTC), if set.
    pub stamp: Option<i64>,
    /// Its `isdeleted`.
    pub flagged: bool,
    /// The row has log entries not yet delivered (NEW, PENDING, retried, or FAILED awaiting a fix), or a delete
    /// of a row with this sfid is on its way.
    pub pending: bool,
    /// No row has the record, the integration user created it, and inserts of rows without an sfid are in flight
    /// (a Bulk job running) or in doubt (no answer): the record may be one of theirs, whose `sfid` is not written
    /// back yet. Read now, it would become a second row; the in-doubt search would then never adopt it.
    pub maybe_in_flight: bool,
}

/// The decision for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    Insert,
    Update,
    Delete,
    /// Keep the row, `isdeleted = true`.
    Flag,
    /// Nothing to write: the row already has this version, or there is no row of a deleted record.
    Unchanged,
    /// The record has the row's stamp: a second version saved within the same second (stamps have second
    /// precision) looks the same by its stamp. Written only if its values differ.
    Compare,
    /// A local change is on its way: the row keeps its values until it is delivered.
    KeepLocal,
    /// The record may be an insert in flight's (`Local::maybe_in_flight`): the read stops before it and reads it
    /// again once the insert's outcome is written back.
    Hold,
}

/// Decides what `record` (its stamp, whether it is deleted) does to the row `local`.
pub fn decide(stamp: i64, deleted: bool, local: Local, on_delete: OnDelete) -> Apply {
    if local.pending {
        return Apply::KeepLocal;
    }
    if deleted {
        return match (local.exists, on_delete) {
            (false, _) => Apply::Unchanged,
            (true, OnDelete::Delete) => Apply::Delete,
            (true, OnDelete::Flag) if local.flagged && local.stamp.is_some_and(|s| s >= stamp) => Apply::Unchanged,
            (true, OnDelete::Flag) => Apply::Flag,
        };
    }
    if !local.exists {
        return if local.maybe_in_flight { Apply::Hold } else { Apply::Insert };
    }
    // An older version than the row has: nothing to write. The same stamp may be the same version (re-read by a
    // poll's look-back) or a later one saved within the same second: compared. A flagged row of an undeleted record
    // is written whatever its stamp (undelete may not move it).
    match local.stamp {
        _ if local.flagged => Apply::Update,
        Some(s) if s > stamp => Apply::Unchanged,
        Some(s) if s == stamp => Apply::Compare,
        _ => Apply::Update,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: Local = Local { exists: true, stamp: Some(100), flagged: false, pending: false, maybe_in_flight: false };

    #[test]
    fn new_changed_and_unchanged_records() {
        assert_eq!(decide(100, false, Local::default(), OnDelete::Delete), Apply::Insert);
        assert_eq!(decide(101, false, ROW, OnDelete::Delete), Apply::Update);
        assert_eq!(decide(100, false, ROW, OnDelete::Delete), Apply::Compare, "re-read, or saved again in that second");
        assert_eq!(decide(99, false, ROW, OnDelete::Delete), Apply::Unchanged, "older than the row");
        assert_eq!(decide(101, false, Local { stamp: None, ..ROW }, OnDelete::Delete), Apply::Update);
    }

    #[test]
    fn deletes_follow_on_delete_and_undeletes_come_back() {
        assert_eq!(decide(101, true, ROW, OnDelete::Delete), Apply::Delete);
        assert_eq!(decide(101, true, ROW, OnDelete::Flag), Apply::Flag);
        assert_eq!(decide(101, true, Local::default(), OnDelete::Delete), Apply::Unchanged);
        let flagged = Local { flagged: true, stamp: Some(101), ..ROW };
        assert_eq!(decide(101, true, flagged, OnDelete::Flag), Apply::Unchanged);
        assert_eq!(decide(101, false, flagged, OnDelete::Flag), Apply::Update, "undeleted, stamp unmoved");
        assert_eq!(decide(101, false, Local::default(), OnDelete::Delete), Apply::Insert, "undeleted after a delete");
    }

    #[test]
    fn a_local_change_on_its_way_wins() {
        let pending = Local { pending: true, ..ROW };
        assert_eq!(decide(200, false, pending, OnDelete::Delete), Apply::KeepLocal);
        assert_eq!(decide(200, true, pending, OnDelete::Delete), Apply::KeepLocal);
        // A local delete on its way: no row, but the record is not brought back.
        let deleting = Local { pending: true, ..Local::default() };
        assert_eq!(decide(200, false, deleting, OnDelete::Delete), Apply::KeepLocal);
        assert_eq!(OnDelete::parse(OnDelete::Flag.as_str()), Some(OnDelete::Flag));
    }

    #[test]
    fn a_record_an_insert_in_flight_may_have_created_waits() {
        let maybe = Local { maybe_in_flight: true, ..Local::default() };
        assert_eq!(decide(200, false, maybe, OnDelete::Delete), Apply::Hold);
        assert_eq!(decide(200, true, maybe, OnDelete::Delete), Apply::Unchanged, "deleted: nothing to insert");
        // A row has it already: the flag does not matter.
        assert_eq!(decide(200, false, Local { maybe_in_flight: true, ..ROW }, OnDelete::Delete), Apply::Update);
        assert_eq!(OnDelete::parse("purge"), None);
    }
}
