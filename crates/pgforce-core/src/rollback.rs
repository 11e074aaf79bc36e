//! `salesforce.rollback()`: what undoing pgforce's deliveries since a moment takes, record by record, from the log
//! entries it delivered since then (their `values` and `old` rows, so nothing had to be switched on in advance):
//!
//! * a record created since (Salesforce answered "created" to a write in the window, or, for entries recorded before
//!   pgforce kept Salesforce's answer, the row was inserted since with no sfid): it is deleted (and, by default, the
//!   row too). An insert Salesforce answered with "updated" (a row re-captured with `hc_capture_insert_from_row`,
//!   an upsert of a record that existed) created nothing: that record is reported and left alone, since pgforce
//!   never had its fields from before;
//! * a row only updated since: each mapped field it changed goes back to the value it had before the first of those
//!   changes (in Salesforce, and by default in the row);
//! * a record pgforce deleted since cannot be created again: it is reported with its Salesforce id, for the recycle
//!   bin (a row inserted again after it is another record, and is deleted as above);
//! * a record changed in Salesforce by someone else since pgforce's last write to it is reported and left alone,
//!   unless forced.

use std::collections::BTreeMap;

use crate::delivery::Values;
use crate::log::Action;

/// One log entry pgforce delivered (`SUCCESS`, or `MERGED` into a write that succeeded).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub log_id: i64,
    pub table: String,
    pub record_id: i64,
    pub action: Action,
    pub sfid: Option<String>,
    /// The pairs the change wrote (`values`) and the whole row before it (`old`).
    pub values: Values,
    pub old: Values,
    /// What Salesforce answered this entry's write: `Some(true)` it created the record, `Some(false)` it updated one
    /// that existed; `None` when the entry carries no answer (merged into a write whose answer is on another entry,
    /// or recorded before pgforce kept answers).
    pub created: Option<bool>,
    /// When pgforce's write was answered, as Salesforce prints instants (`convert::salesforce_datetime`'s form),
    /// with the clock margin added.
    pub written_before: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Delete the record created since (and the row).
    Delete,
    /// Set these mapped fields back (column → value before the first change since).
    Restore(Values),
    /// A record pgforce deleted since: it can only come back from Salesforce's recycle bin.
    Report,
    /// A record an insert since wrote over (Salesforce answered "updated"): it existed before, and its fields from
    /// before are not in the log. Reported, never deleted.
    Existed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub table: String,
    pub record_id: i64,
    pub sfid: Option<String>,
    pub undo: Undo,
    /// The latest of pgforce's writes it undoes (margin included): a later modification in Salesforce is someone
    /// else's.
    pub written_before: String,
}

/// What undoing each record takes, newest first. `mapped`: a table's mapped columns (others are never restored:
/// pgforce never sent them).
pub fn steps<'a>(entries: &[Delivered], mapped: impl Fn(&str) -> Option<&'a [String]>) -> Vec<Step> {
    let mut by_record: BTreeMap<(&str, i64), Vec<&Delivered>> = BTreeMap::new();
    for e in entries {
        by_record.entry((e.table.as_str(), e.record_id)).or_default().push(e);
    }
    let mut out = Vec::new();
    for ((table, record_id), mut changes) in by_record {
        changes.sort_by_key(|e| e.log_id);
        let last_write = changes.iter().map(|e| e.written_before.clone()).max().unwrap_or_default();
        let step = |sfid: Option<String>, undo: Undo| Step {
            table: table.to_string(),
            record_id,
            sfid,
            undo,
            written_before: last_write.clone(),
        };
        // Records pgforce deleted since: reported. What follows the last delete is the row's current record.
        let last_delete = changes.iter().rposition(|e| e.action == Action::Delete);
        let mut reports = Vec::new();
        if let Some(at) = last_delete {
            for d in changes[..=at].iter().rev().filter(|e| e.action == Action::Delete) {
                reports.push(step(d.sfid.clone(), Undo::Report));
            }
            changes.drain(..=at);
        }
        let sfid = changes.iter().rev().find_map(|e| e.sfid.clone());
        // Created since means what Salesforce did, never the log's action: an insert it answered "updated", or an
        // insert of a row that already had an sfid (the repair functions log such rows as inserts), created nothing.
        let inserted = changes.iter().any(|e| e.action == Action::Insert);
        let created = changes.iter().any(|e| e.created == Some(true));
        let existed = changes.iter().any(|e| e.created == Some(false))
            || changes.iter().any(|e| e.action == Action::Insert && e.values.get("sfid").is_some_and(Option::is_some));
        if changes.is_empty() {
        } else if created || (inserted && !existed) {
            out.push(step(sfid, Undo::Delete));
        } else if inserted {
            out.push(step(sfid, Undo::Existed));
        } else {
            let columns = mapped(table).unwrap_or_default();
            let mut restore = Values::new();
            for e in &changes {
                for column in e.values.keys().filter(|c| columns.contains(c)) {
                    if !restore.contains_key(column) {
                        restore.insert(column.clone(), e.old.get(column).cloned().flatten());
                    }
                }
            }
            if !restore.is_empty() {
                out.push(step(sfid, Undo::Restore(restore)));
            }
        }
        out.extend(reports);
    }
    // Newest first (a stable sort: a record's own steps keep their order).
    out.sort_by(|a, b| b.written_before.cmp(&a.written_before).then(b.record_id.cmp(&a.record_id)));
    out
}

/// Why a step is left alone, from the record as Salesforce has it now (`None`: not there, deleted or never seen):
/// its last modification and who made it. `user`: the integration user's id, when known.
pub fn left_alone(step: &Step, found: Option<(&str, &str)>, user: Option<&str>, force: bool) -> Option<String> {
    let Some((modified_at, modified_by)) = found else {
        return (!matches!(step.undo, Undo::Report | Undo::Existed))
            .then(|| "the record is no longer in Salesforce".to_string());
    };
    if force || matches!(step.undo, Undo::Report | Undo::Existed) {
        return None;
    }
    let at = crate::convert::salesforce_datetime(modified_at).unwrap_or_default();
    let someone_else = user.is_some_and(|u| !same_id(u, modified_by));
    (someone_else || at > step.written_before).then(|| {
        format!("changed in Salesforce since pgforce wrote it (by {modified_by} at {modified_at}): left alone (force => true undoes it anyway)")
    })
}

/// Salesforce ids compare by their first 15 characters (the 18-character form adds a case checksum).
fn same_id(a: &str, b: &str) -> bool {
    a.get(..15).zip(b.get(..15)).is_some_and(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> Values {
        pairs.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect()
    }

    fn entry(
        log_id: i64,
        record_id: i64,
        action: Action,
        sfid: &str,
        new: &[(&str, &str)],
        old: &[(&str, &str)],
    ) -> Delivered {
        Delivered {
            log_id,
            table: "contact".into(),
            record_id,
            action,
            sfid: (!sfid.is_empty()).then(|| sfid.to_string()),
            values: values(new),
            old: values(old),
            created: None,
            written_before: format!("2026-12-03T10:00:{:02}.000Z", log_id),
        }
    }

    #[test]
    fn each_record_is_undone_by_what_happened_to_it_since() {
        let columns = vec!["lastname".to_string(), "email".to_string()];
        let entries = vec![
            // Row 1 updated twice: each field back to before the first change.
            entry(
                1,
                1,
                Action::Update,
                "003A",
                &[("lastname", "B"), ("note", "x")],
                &[("lastname", "A"), ("email", "a@x"), ("note", "")],
            ),
            entry(
                2,
                1,
                Action::Update,
                "003A",
                &[("lastname", "C"), ("email", "c@x")],
                &[("lastname", "B"), ("email", "a@x")],
            ),
            // Row 2 inserted and updated since: deleted.
            entry(3, 2, Action::Insert, "", &[("lastname", "New")], &[]),
            entry(4, 2, Action::Update, "003B", &[("lastname", "Newer")], &[("lastname", "New")]),
            // Row 3 deleted since, then inserted again: the old record is reported, the new one deleted.
            entry(5, 3, Action::Delete, "003C", &[], &[("lastname", "Gone")]),
            entry(6, 3, Action::Insert, "003D", &[("lastname", "Again")], &[]),
        ];
        let s = steps(&entries, |t| (t == "contact").then_some(columns.as_slice()));
        let got: Vec<(i64, Option<&str>, &Undo)> =
            s.iter().map(|s| (s.record_id, s.sfid.as_deref(), &s.undo)).collect();
        let restored: Values =
            [("email".to_string(), Some("a@x".to_string())), ("lastname".to_string(), Some("A".to_string()))]
                .into_iter()
                .collect();
        assert_eq!(
            got,
            [
                (3, Some("003D"), &Undo::Delete),
                (3, Some("003C"), &Undo::Report),
                (2, Some("003B"), &Undo::Delete),
                (1, Some("003A"), &Undo::Restore(restored)),
            ],
            "newest first; unmapped columns are not restored"
        );
    }

    #[test]
    fn records_changed_by_someone_else_since_are_left_alone_unless_forced() {
        let step = Step {
            table: "contact".into(),
            record_id: 1,
            sfid: Some("003A".into()),
            undo: Undo::Delete,
            written_before: "2026-12-03T10:02:00.000Z".into(),
        };
        let me = "005000000000001AAA";
        let ours = Some(("2026-12-03T10:00:30.000+0000", me));
        assert_eq!(left_alone(&step, ours, Some(me), false), None);
        assert_eq!(left_alone(&step, Some(("2026-12-03T10:00:30.000+0000", "005000000000001")), Some(me), false), None);
        let theirs = Some(("2026-12-03T10:00:40.000+0000", "005000000000002AAA"));
        assert!(left_alone(&step, theirs, Some(me), false).unwrap().starts_with("changed in Salesforce since"));
        assert_eq!(left_alone(&step, theirs, Some(me), true), None, "forced");
        let later = Some(("2026-12-03T11:00:00.000+0000", me));
        assert!(left_alone(&step, later, None, false).is_some(), "modified after pgforce's write");
        assert_eq!(left_alone(&step, None, Some(me), false).as_deref(), Some("the record is no longer in Salesforce"));
    }

    #[test]
    fn created_since_is_what_salesforce_answered_not_the_logs_action() {
        let columns = vec!["lastname".to_string()];
        let answered = |mut e: Delivered, created: bool| {
            e.created = Some(created);
            e
        };
        let entries = vec![
            // Re-captured by hc_capture_insert_from_row (the row had its sfid): Salesforce updated the record.
            answered(entry(1, 1, Action::Insert, "003A", &[("sfid", "003A"), ("lastname", "A")], &[]), false),
            // An insert of a row without an sfid, upserted onto a record that existed (answered on its update,
            // with which it was merged).
            entry(2, 2, Action::Insert, "", &[("lastname", "B")], &[]),
            answered(entry(3, 2, Action::Update, "003B", &[("lastname", "B2")], &[("lastname", "B")]), false),
            // A real insert, answered created; and one recorded before pgforce kept answers.
            answered(entry(4, 3, Action::Insert, "003C", &[("lastname", "C")], &[]), true),
            entry(5, 4, Action::Insert, "", &[("lastname", "D")], &[]),
            // Re-captured with its sfid, recorded before pgforce kept answers: it existed.
            entry(6, 5, Action::Insert, "003E", &[("sfid", "003E"), ("lastname", "E")], &[]),
        ];
        let s = steps(&entries, |t| (t == "contact").then_some(columns.as_slice()));
        let got: Vec<(i64, &Undo)> = s.iter().map(|s| (s.record_id, &s.undo)).collect();
        assert_eq!(
            got,
            [(5, &Undo::Existed), (4, &Undo::Delete), (3, &Undo::Delete), (2, &Undo::Existed), (1, &Undo::Existed)]
        );
        let existed = s.iter().find(|s| s.record_id == 1).unwrap();
        assert_eq!(left_alone(existed, None, None, false), None, "reported, not looked up");
    }
}
