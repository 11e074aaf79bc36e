//! Which trigger-log rows become which Salesforce writes. Under Merged writes every change of one record claimed
//! together collapses into one write with the latest values (the others become `MERGED`); under Ordered writes a
//! record's changes go one at a time, oldest first.

use std::collections::HashMap;

use super::{Change, Values};
use crate::log::Action;

/// What one record needs in Salesforce after a run of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Insert,
    Update,
    Delete,
}

#[derive(Debug, Clone)]
pub struct Write {
    pub record_id: i64,
    pub kind: WriteKind,
    /// Fields to send: all of the row for inserts, the union of changed fields (latest value wins) for updates.
    pub values: Values,
    /// The record's latest whole row as far as the log knows (for the upsert key and relationship values).
    pub row: Values,
    /// Latest Salesforce id the log carries.
    pub sfid: Option<String>,
    /// The log rows this write stands for, oldest first; the last one carries the outcome, the others are MERGED.
    pub log_ids: Vec<i64>,
    pub attempts: i32,
    /// Some of its changes were sent before with an unknown outcome: an insert may already be in Salesforce.
    pub in_doubt: Option<InDoubt>,
    /// Some of its changes were tried before (`Change::retried`): it goes with the row's current values.
    pub retried: bool,
    /// Its last change is followed by a delete of the row (`Change::deleted_later`).
    pub deleted_later: bool,
}

impl Write {
    /// Whether planning takes something of the row there now: a retried write its current values, an update
    /// without a Salesforce id its current sfid (`delivery::plan::Plan::deletes_wanted`).
    pub fn reads_current_row(&self) -> bool {
        match self.kind {
            WriteKind::Delete => false,
            WriteKind::Insert => self.retried,
            WriteKind::Update => self.retried || self.sfid.is_none(),
        }
    }
}

/// What an earlier, unanswered attempt may have created.
#[derive(Debug, Clone, PartialEq)]
pub struct InDoubt {
    /// When the first such attempt was claimed (seconds since 1970, UTC): the record, if created, is not older.
    pub since: i64,
    /// The whole row as each unanswered attempt may have sent it (after each change from the first in doubt on, in
    /// log order).
    pub sent: Vec<Values>,
}

#[derive(Debug, Clone)]
pub enum Planned {
    Send(Write),
    /// Deleted before it ever reached Salesforce (no Salesforce id): nothing to do there.
    Nothing {
        log_ids: Vec<i64>,
    },
}

/// Merges changes (given in log order) per record, keeping records in the order of their first change.
pub fn merge(changes: &[Change]) -> Vec<Planned> {
    let mut order: Vec<i64> = Vec::new();
    let mut by_record: HashMap<i64, Vec<&Change>> = HashMap::new();
    for c in changes {
        by_record
            .entry(c.record_id)
            .or_insert_with(|| {
                order.push(c.record_id);
                Vec::new()
            })
            .push(c);
    }
    order.iter().filter_map(|r| by_record.get(r)).map(|list| merge_record(list)).collect()
}

fn merge_record(changes: &[&Change]) -> Planned {
    let mut kind: Option<WriteKind> = None;
    let mut values = Values::new();
    let mut row = Values::new();
    let mut sfid = None;
    let mut log_ids = Vec::with_capacity(changes.len());
    let mut attempts = 0;
    let mut nothing = false;
    let mut in_doubt: Option<InDoubt> = None;
    let mut retried = false;
    for c in changes {
        log_ids.push(c.log_id);
        retried |= c.retried;
        attempts = attempts.max(c.attempts);
        if c.sfid.is_some() {
            sfid = c.sfid.clone();
        }
        nothing = false;
        match c.action {
            Action::Insert => {
                // A new row under this id: a Salesforce id of earlier changes was the deleted row's record.
                sfid = c.sfid.clone();
                kind = Some(WriteKind::Insert);
                values = c.values.clone();
                row = c.values.clone();
            }
            Action::Update => {
                if kind.is_none() || kind == Some(WriteKind::Delete) {
                    kind = Some(WriteKind::Update);
                    values.clear();
                }
                if !c.old.is_empty() {
                    row = c.old.clone();
                }
                for (k, v) in &c.values {
                    values.insert(k.clone(), v.clone());
                    row.insert(k.clone(), v.clone());
                }
            }
            Action::Delete => {
                if !c.old.is_empty() {
                    row = c.old.clone();
                }
                let row_sfid = row.get("sfid").cloned().flatten();
                if sfid.is_none() {
                    sfid = row_sfid;
                }
                // Without a Salesforce id the record never reached Salesforce (or its insert is still unanswered):
                // an insert claimed with it is cancelled, and there is nothing to delete.
                nothing = sfid.is_none();
                kind = Some(WriteKind::Delete);
                values.clear();
            }
        }
        if let Some(since) = c.in_doubt_since {
            let doubt = in_doubt.get_or_insert_with(|| InDoubt { since, sent: Vec::new() });
            doubt.since = doubt.since.min(since);
        }
        // An unanswered attempt may have carried any later change of the record too (claimed with it, its doubt
        // not recorded when the worker died first): each row from the first change in doubt on is a candidate.
        if let Some(doubt) = in_doubt.as_mut().filter(|_| c.action != Action::Delete) {
            doubt.sent.push(row.clone());
        }
    }
    // A delete of a record whose insert is in doubt is not nothing: the insert may have reached Salesforce, and the
    // delete must then remove it (the worker looks it up first).
    if nothing && in_doubt.as_ref().is_none_or(|d| d.sent.is_empty()) {
        return Planned::Nothing { log_ids };
    }
    let record_id = changes.first().map(|c| c.record_id).unwrap_or_default();
    let kind = kind.unwrap_or(WriteKind::Update);
    let deleted_later = changes.last().is_some_and(|c| c.deleted_later);
    Planned::Send(Write { record_id, kind, values, row, sfid, log_ids, attempts, in_doubt, retried, deleted_later })
}

/// Ordered writes: only the oldest change of each record goes now; later changes of the same record stay in the
/// queue until it has an outcome. `changes`: one table's, in log order.
pub fn first_per_record(changes: Vec<Change>) -> Vec<Change> {
    let mut seen = std::collections::HashSet::new();
    changes.into_iter().filter(|c| seen.insert(c.record_id)).collect()
}

/// Merged writes: a record's changes go together up to its first delete; what follows a delete (a re-insert of
/// the same id) stays in the queue until the delete has its outcome, so Salesforce sees the delete and then a new
/// record, in commit order, never one write that hides the delete. `changes`: one table's, in log order.
pub fn through_first_delete(changes: Vec<Change>) -> Vec<Change> {
    let mut deleted = std::collections::HashSet::new();
    changes
        .into_iter()
        .filter(|c| {
            let keep = !deleted.contains(&c.record_id);
            if keep && c.action == Action::Delete {
                deleted.insert(c.record_id);
            }
            keep
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, Option<&str>)]) -> Values {
        pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
    }

    fn change(log_id: i64, record_id: i64, action: Action, values: Values, old: Values, sfid: Option<&str>) -> Change {
        Change {
            log_id,
            record_id,
            action,
            sfid: sfid.map(str::to_string),
            values,
            old,
            attempts: 0,
            in_doubt_since: None,
            retried: false,
            deleted_later: false,
        }
    }

    #[test]
    fn an_insert_in_doubt_may_have_been_sent_with_any_later_change() {
        let mut insert = change(1, 7, Action::Insert, vals(&[("name", Some("a"))]), Values::new(), None);
        insert.in_doubt_since = Some(100);
        let update = change(2, 7, Action::Update, vals(&[("name", Some("b"))]), vals(&[("name", Some("a"))]), None);
        let Some(Planned::Send(w)) = merge(&[insert, update]).pop() else { panic!("a write") };
        let sent: Vec<_> = w.in_doubt.expect("in doubt").sent.iter().map(|r| r["name"].clone()).collect();
        assert_eq!(sent, [Some("a".to_string()), Some("b".to_string())]);
    }

    #[test]
    fn a_re_insert_waits_for_the_delete_before_it() {
        let changes = vec![
            change(1, 7, Action::Update, vals(&[("name", Some("b"))]), vals(&[("sfid", Some("003A"))]), Some("003A")),
            change(2, 7, Action::Delete, Values::new(), vals(&[("sfid", Some("003A"))]), Some("003A")),
            change(3, 7, Action::Insert, vals(&[("name", Some("new"))]), Values::new(), None),
            change(4, 8, Action::Insert, vals(&[("name", Some("x"))]), Values::new(), None),
            change(5, 7, Action::Update, vals(&[("name", Some("newer"))]), vals(&[("name", Some("new"))]), None),
        ];
        let now: Vec<i64> = through_first_delete(changes).iter().map(|c| c.log_id).collect();
        assert_eq!(now, vec![1, 2, 4], "record 7's re-insert and its update wait for its delete");
    }

    #[test]
    fn insert_then_updates_become_one_insert_with_latest_values() {
        let changes = vec![
            change(1, 7, Action::Insert, vals(&[("name", Some("a")), ("email", Some("x@y"))]), Values::new(), None),
            change(
                2,
                8,
                Action::Update,
                vals(&[("name", Some("other"))]),
                vals(&[("name", Some("o")), ("sfid", Some("003A"))]),
                Some("003A"),
            ),
            change(
                3,
                7,
                Action::Update,
                vals(&[("name", Some("b"))]),
                vals(&[("name", Some("a")), ("email", Some("x@y"))]),
                None,
            ),
            change(
                4,
                7,
                Action::Update,
                vals(&[("email", None)]),
                vals(&[("name", Some("b")), ("email", Some("x@y"))]),
                None,
            ),
        ];
        let planned = merge(&changes);
        assert_eq!(planned.len(), 2);
        let Planned::Send(w) = &planned[0] else { panic!("send") };
        assert_eq!((w.record_id, w.kind, w.log_ids.clone()), (7, WriteKind::Insert, vec![1, 3, 4]));
        assert_eq!(w.values, vals(&[("email", None), ("name", Some("b"))]));
        let Planned::Send(u) = &planned[1] else { panic!("send") };
        assert_eq!((u.kind, u.sfid.as_deref()), (WriteKind::Update, Some("003A")));
        assert_eq!(u.values, vals(&[("name", Some("other"))]));
        assert_eq!(u.row.get("sfid").cloned().flatten().as_deref(), Some("003A"));
    }

    #[test]
    fn updates_merge_and_deletes_win() {
        let changes = vec![
            change(
                1,
                1,
                Action::Update,
                vals(&[("a", Some("1"))]),
                vals(&[("a", Some("0")), ("b", Some("0"))]),
                Some("001X"),
            ),
            change(
                2,
                1,
                Action::Update,
                vals(&[("b", Some("2"))]),
                vals(&[("a", Some("1")), ("b", Some("0"))]),
                Some("001X"),
            ),
            change(3, 2, Action::Update, vals(&[("a", Some("9"))]), vals(&[("a", Some("8"))]), Some("001Y")),
            change(
                4,
                2,
                Action::Delete,
                Values::new(),
                vals(&[("a", Some("9")), ("sfid", Some("001Y"))]),
                Some("001Y"),
            ),
            change(5, 3, Action::Insert, vals(&[("a", Some("1"))]), Values::new(), None),
            change(6, 3, Action::Delete, Values::new(), vals(&[("a", Some("1"))]), None),
            change(7, 4, Action::Delete, Values::new(), vals(&[("a", Some("1"))]), None),
        ];
        let planned = merge(&changes);
        let Planned::Send(w) = &planned[0] else { panic!("send") };
        assert_eq!(w.values, vals(&[("a", Some("1")), ("b", Some("2"))]));
        assert_eq!(w.row, vals(&[("a", Some("1")), ("b", Some("2"))]));
        let Planned::Send(d) = &planned[1] else { panic!("send") };
        assert_eq!((d.kind, d.sfid.as_deref(), d.log_ids.clone()), (WriteKind::Delete, Some("001Y"), vec![3, 4]));
        assert!(matches!(&planned[2], Planned::Nothing { log_ids } if log_ids == &vec![5, 6]));
        assert!(
            matches!(&planned[3], Planned::Nothing { log_ids } if log_ids == &vec![7]),
            "an sfid-less delete alone is a no-op"
        );
    }

    #[test]
    fn ordered_writes_take_one_change_per_record() {
        let changes = vec![
            change(1, 1, Action::Insert, Values::new(), Values::new(), None),
            change(2, 1, Action::Update, Values::new(), Values::new(), None),
            change(3, 2, Action::Insert, Values::new(), Values::new(), None),
        ];
        let now = first_per_record(changes);
        assert_eq!(now.iter().map(|c| c.log_id).collect::<Vec<_>>(), vec![1, 3]);
    }
}
