//! Planning one claim: each record's merged write gets its Salesforce operation, and the operations are grouped
//! into calls of at most 200 records, in waves so that parents go before the children that reference them.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::batch::{Batch, CallKind};
use super::merge::{merge, Planned, Write, WriteKind};
use super::{Claimed, Table, Values};
use crate::convert::{field_value, record_from};
use crate::describe::Described;
use crate::mapping::relationship_column;
use crate::mapping::{PgKind, Target};

/// Batch items (job index, record) with the lookups each waits for (job index, field, parent job index).
type ItemsWithLinks = Vec<(usize, Value, Vec<(usize, String, usize)>)>;

/// A Bulk job carries at most this much JSON's worth of records (Salesforce takes 100 MB of CSV per job).
const MAX_BULK_BYTES: usize = 80 << 20;

/// How large the calls of a plan may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `pgforce.max_request_bytes`: the most bytes of JSON in one collections call.
    pub max_request_bytes: usize,
    /// `pgforce.bulk_threshold`: a group of one object and operation this large goes as a Bulk API 2.0 job
    /// (0: never).
    pub bulk_threshold: usize,
}

impl Limits {
    pub fn of(config: &crate::config::Config) -> Limits {
        Limits { max_request_bytes: config.max_request_bytes, bulk_threshold: config.bulk_threshold }
    }
}

/// Splits off the Bulk jobs of one group (one object, one operation): when the group reaches the threshold and
/// its operation has a key (upsert, update, delete), the items whose key is theirs alone in the group go as jobs of
/// at most `MAX_BULK_BYTES`; the rest (inserts, keys shared or missing) are returned for collections calls.
fn bulk_part(kind: &CallKind, sobject: &str, items: ItemsWithLinks, threshold: usize) -> (Vec<Batch>, ItemsWithLinks) {
    let Some((_, key_column)) = super::batch::operation(kind) else { return (Vec::new(), items) };
    if threshold == 0 || items.len() < threshold {
        return (Vec::new(), items);
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, item, _) in &items {
        if let Some(k) = super::batch::key_of(item, &key_column) {
            *seen.entry(k).or_default() += 1;
        }
    }
    let (unique, rest): (ItemsWithLinks, ItemsWithLinks) = items
        .into_iter()
        .partition(|(_, item, _)| super::batch::key_of(item, &key_column).is_some_and(|k| seen.get(&k) == Some(&1)));
    if unique.len() < threshold {
        let mut all = unique;
        all.extend(rest);
        return (Vec::new(), all);
    }
    let empty = || Batch {
        kind: kind.clone(),
        items: Vec::new(),
        bytes: 0,
        links: Vec::new(),
        bulk: Some(sobject.to_string()),
    };
    let mut jobs = Vec::new();
    let mut current = empty();
    for (i, item, links) in unique {
        let size = json_bytes(&item);
        if current.bytes + size > MAX_BULK_BYTES && !current.items.is_empty() {
            jobs.push(std::mem::replace(&mut current, empty()));
        }
        current.bytes += size;
        current.items.push((i, item));
        current.links.extend(links);
    }
    if !current.items.is_empty() {
        jobs.push(current);
    }
    (jobs, rest)
}

/// sObject Collections take at most 200 records per call.
/// A lookup filled in once the parent job (by index in `Plan::jobs`) is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub field: String,
    pub parent: usize,
    /// The foreign key column and its value, for the update that sets the lookup when a cycle is broken here.
    pub column: String,
    pub value: Option<String>,
}

pub const MAX_RECORDS_PER_CALL: usize = 200;

/// The bytes of a request body around its records: `{"allOrNone":false,"records":[]}`, with room to spare.
const ENVELOPE_BYTES: usize = 64;

/// The size of a value as JSON, counted without building the text.
pub fn json_bytes(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// One Salesforce call's worth of intent for a write.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Create; the new id is written back to `sfid`.
    Create(Map<String, Value>),
    /// Update by Salesforce id.
    Update(Map<String, Value>),
    /// Upsert by the mapping's external id field (the record carries the key).
    Upsert(Map<String, Value>),
    Delete(String),
    /// Nothing to send (no mapped field changed).
    Skip,
    /// Cannot be sent; the message says why (e.g. an update whose insert never succeeded).
    Refuse(String),
    /// Not sent: a later change of the row makes it moot (the row is gone; its delete goes on its own). Its
    /// entries become `MERGED` with the message.
    Superseded(String),
    /// Not sent now: whether an earlier, unanswered attempt created the record could not be checked (the message
    /// says why). It costs an attempt and is checked again.
    Recheck(String),
    /// Not sent now: a parent it references has no Salesforce id yet (`delivery::links`). Goes back to the queue
    /// at no cost, for at least this long.
    Wait(String, std::time::Duration),
}

impl Operation {
    /// The record a create, update or upsert sends.
    pub fn record(&self) -> Option<&Map<String, Value>> {
        match self {
            Operation::Create(r) | Operation::Update(r) | Operation::Upsert(r) => Some(r),
            _ => None,
        }
    }

    pub fn record_mut(&mut self) -> Option<&mut Map<String, Value>> {
        match self {
            Operation::Create(r) | Operation::Update(r) | Operation::Upsert(r) => Some(r),
            _ => None,
        }
    }
}

/// Decides the call for one write. A record that has a Salesforce id is written by that id, always: a changed
/// upsert field is an ordinary field update (an upsert on the new value would create a second record). A record
/// without one is upserted by the mapping's external id when it has one and the row carries a value, otherwise
/// created. Under Merged writes an update of a record that has no Salesforce id yet (its insert failed) is sent as
/// an insert of the whole row, as Heroku Connect does; under Ordered writes it fails with Salesforce's "Id not
/// specified in an update call".
pub fn operation(target: &Target, write: &Write) -> Operation {
    let sfid = write.sfid.clone().or_else(|| write.row.get("sfid").cloned().flatten()).filter(|s| !s.is_empty());
    let key = target.upsert_field.as_ref().and_then(|f| {
        let value = write.values.get(f).cloned().flatten().or_else(|| write.row.get(f).cloned().flatten())?;
        Some((f.clone(), value))
    });
    match write.kind {
        WriteKind::Delete => match sfid {
            Some(id) => Operation::Delete(id),
            None => Operation::Refuse("cannot delete: the record has no sfid (it never reached Salesforce)".into()),
        },
        WriteKind::Insert | WriteKind::Update => {
            // An update of a row with no record yet (its insert failed, or never went) goes whole, as the row's
            // insert, in both write algorithms: Heroku Connect's documented fix for a failed insert is to UPDATE a
            // column of the row, "which sends the change to Salesforce as an INSERT". Its changed fields alone
            // would be refused (REQUIRED_FIELD_MISSING) and hide the real error.
            let whole = write.kind == WriteKind::Update && sfid.is_none();
            let mut record = match record_from(target, if whole { &write.row } else { &write.values }) {
                Ok(r) => r,
                Err(why) => return Operation::Refuse(why),
            };
            let sent_fields = record.len() - 1;
            if write.kind == WriteKind::Update && sent_fields == 0 {
                return Operation::Skip;
            }
            if let Some(id) = sfid.clone().filter(|_| write.kind == WriteKind::Update) {
                record.insert("Id".into(), Value::String(id));
                return Operation::Update(record);
            }
            if let Some((field, value)) = key {
                let kind = target.columns.iter().find(|(c, _)| c == &field).map_or(PgKind::Text, |(_, k)| *k);
                match field_value(kind, Some(&value)) {
                    Ok(v) => record.insert(field, v),
                    Err(why) => return Operation::Refuse(format!("column {field}: {why}")),
                };
                return Operation::Upsert(record);
            }
            match sfid.filter(|_| write.kind == WriteKind::Update) {
                Some(id) => {
                    record.insert("Id".into(), Value::String(id));
                    Operation::Update(record)
                }
                None => Operation::Create(record),
            }
        }
    }
}

/// Why a write whose row was deleted since is not sent: the row's delete goes on its own.
const ROW_DELETED_SINCE: &str = "superseded: the row was deleted since; its delete is sent on its own";

/// Why an update in doubt whose row was deleted since became a delete (`row_gone`).
const ROW_GONE_IN_DOUBT: &str =
    "the row was deleted since: the record an unanswered attempt may have created was looked for, to be deleted";

/// Decides an update of a record with no Salesforce id whose row is gone. Sent, it would create a record of a row
/// that no longer exists: it is superseded by the row's delete. Unless an unanswered attempt of it may have created
/// that record (`delivery::doubt`): the row's delete, logged without an sfid, cannot remove it, so the write becomes
/// a delete of what the search finds (nothing found: nothing to delete), and its entries say so.
fn row_gone(job: &mut Job) {
    if job.write.in_doubt.as_ref().is_some_and(|d| !d.sent.is_empty()) {
        job.write.kind = WriteKind::Delete;
        job.write.values.clear();
        job.op = Operation::Refuse(ROW_GONE_IN_DOUBT.into());
        job.note = Some(ROW_GONE_IN_DOUBT.into());
    } else {
        job.op = Operation::Superseded(ROW_DELETED_SINCE.into());
    }
}

/// One write, the mapping it belongs to (by log `table_name`) and the operation it becomes.
#[derive(Debug, Clone)]
pub struct Job {
    pub table: String,
    pub write: Write,
    pub op: Operation,
    /// The record an earlier, unanswered attempt created was found (`delivery::doubt`) and is updated instead.
    pub adopted: bool,
    /// Lookups filled in with the Salesforce ids of parents written earlier in this plan (`delivery::links`).
    pub links: Vec<Link>,
    /// Foreign key columns (and values) left out to break a cycle: set by an update once this write succeeded.
    pub deferred: Vec<(String, Option<String>)>,
    /// How many levels of parents go before it (0: none), as Kahn's algorithm ordered the plan.
    pub depth: usize,
    /// Why the write went as something other than what was captured, kept as its entries' message when it succeeds.
    pub note: Option<String>,
}

impl Job {
    pub fn new(table: String, write: Write) -> Job {
        Job {
            table,
            write,
            op: Operation::Skip,
            adopted: false,
            links: Vec::new(),
            deferred: Vec::new(),
            depth: 0,
            note: None,
        }
    }
}

/// A claim, planned.
#[derive(Debug, Default)]
pub struct Plan {
    pub jobs: Vec<Job>,
    /// Log ids of records deleted before they reached Salesforce: nothing to send.
    pub nothing: Vec<Vec<i64>>,
    /// Parent records (per log table name) that writes wait for and whose changes are due in the queue: claimed
    /// too, they go first in the same delivery (`delivery::links`).
    pub parents_due: HashMap<String, Vec<i64>>,
}

/// Merges each mapped table's claimed changes into writes; operations are decided later, by `decide`, once the
/// Salesforce ids the log lacks have been looked up.
pub fn plan(claimed: &Claimed) -> Plan {
    let mut plan = Plan::default();
    for (table, list) in &claimed.changes {
        if !claimed.tables.contains_key(table) {
            continue;
        }
        for planned in merge(list) {
            match planned {
                Planned::Nothing { log_ids } => plan.nothing.push(log_ids),
                Planned::Send(w) => plan.jobs.push(Job::new(table.clone(), w)),
            }
        }
    }
    plan
}

impl Plan {
    /// Per table, the writes (record id, last log id) that take something of the row there now and are not known
    /// to be followed by a delete: whether one was logged since (and perhaps processed, or not claimed with them)
    /// is asked of the log. A retried write takes the row's current values; an update without a Salesforce id takes
    /// the row's current sfid. If the row was deleted since, the row there now (inserted again) is another one.
    pub fn deletes_wanted(&self) -> HashMap<String, Vec<(i64, i64)>> {
        let mut out: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
        for j in self.jobs.iter().filter(|j| j.write.reads_current_row() && !j.write.deleted_later) {
            let last = j.write.log_ids.last().copied().unwrap_or_default();
            out.entry(j.table.clone()).or_default().push((j.write.record_id, last));
        }
        out
    }

    /// Marks the writes of these rows (per table) as followed by a delete.
    pub fn mark_deleted_later(&mut self, deleted: &HashMap<String, std::collections::HashSet<i64>>) {
        for j in self.jobs.iter_mut() {
            if deleted.get(&j.table).is_some_and(|d| d.contains(&j.write.record_id)) && j.write.reads_current_row() {
                j.write.deleted_later = true;
            }
        }
    }

    pub fn current_rows_wanted(&self) -> HashMap<String, Vec<i64>> {
        let mut out: HashMap<String, Vec<i64>> = HashMap::new();
        for j in self.jobs.iter().filter(|j| j.write.retried && j.write.kind != WriteKind::Delete) {
            out.entry(j.table.clone()).or_default().push(j.write.record_id);
        }
        out
    }

    /// Retries never go back in time: a write tried before takes the row's current values (per table: record id →
    /// the row as capture prints it), for the fields it changes (an insert: the whole row), and the row's current
    /// Salesforce id, so a retried insert of a record that has been created since is an update of it. A write whose
    /// row is gone is superseded by the row's delete.
    pub fn refresh(&mut self, current: &HashMap<String, HashMap<i64, Values>>) {
        for j in self.jobs.iter_mut().filter(|j| j.write.retried && j.write.kind != WriteKind::Delete) {
            let Some(rows) = current.get(&j.table) else { continue };
            let w = &mut j.write;
            // A row deleted since (and perhaps inserted again under its id): the current row is not this one's.
            // A write in doubt may have created its record already: it goes as captured, to be looked for first
            // (`delivery::doubt`); once its record is known, the row's delete (logged without an sfid) removes it.
            if w.in_doubt.is_some() && (w.deleted_later || !rows.contains_key(&w.record_id)) {
                continue;
            }
            let gone = w.deleted_later;
            let Some(now) = rows.get(&w.record_id).filter(|_| !gone) else {
                j.op = Operation::Superseded(ROW_DELETED_SINCE.into());
                continue;
            };
            if let Some(sfid) = now.get("sfid").cloned().flatten().filter(|s| !s.is_empty()) {
                w.sfid = Some(sfid);
            }
            if w.kind == WriteKind::Insert {
                w.values = now.clone();
                if w.sfid.is_some() {
                    // Created since (a later change went as an insert of the whole row): update that record.
                    w.kind = WriteKind::Update;
                }
            } else {
                for (k, v) in w.values.iter_mut() {
                    *v = now.get(k).cloned().flatten();
                }
            }
            w.row = now.clone();
        }
    }

    /// Per table, the records whose update or delete has no Salesforce id in the log.
    pub fn sfids_wanted(&self) -> HashMap<String, Vec<i64>> {
        let mut out: HashMap<String, Vec<i64>> = HashMap::new();
        for j in self.jobs.iter().filter(|j| j.write.sfid.is_none() && j.write.kind != WriteKind::Insert) {
            out.entry(j.table.clone()).or_default().push(j.write.record_id);
        }
        out
    }

    /// Fills in looked-up Salesforce ids (per table: record id → the row's sfid, for the rows that exist) and
    /// decides each write's operation. An update of a record with no sfid whose row is gone (deleted since, perhaps
    /// inserted again under its id) is not sent as it was captured (`row_gone`).
    pub fn decide(&mut self, tables: &HashMap<String, Table>, sfids: &HashMap<String, HashMap<i64, Option<String>>>) {
        for j in self.jobs.iter_mut().filter(|j| !matches!(j.op, Operation::Superseded(_))) {
            if j.write.sfid.is_none() && j.write.kind == WriteKind::Update {
                // Deleted after this change, or not there at all: the row's sfid now, if any, is another record's.
                let gone = j.write.deleted_later
                    || sfids.get(&j.table).is_some_and(|rows| !rows.contains_key(&j.write.record_id));
                if gone {
                    row_gone(j);
                    continue;
                }
            }
            if j.write.sfid.is_none() {
                if let Some(sfid) = sfids.get(&j.table).and_then(|rows| rows.get(&j.write.record_id)) {
                    j.write.sfid = sfid.clone();
                }
            }
            if let Some(t) = tables.get(&j.table) {
                j.op = operation(&t.target, &j.write);
            }
        }
    }

    /// Settles a write in doubt with what the search found (`delivery::doubt`): the record an unanswered attempt
    /// created is updated (or deleted) instead of created again; nothing found sends the create as planned, and a
    /// delete then has nothing to delete.
    pub fn settle(&mut self, job: usize, found: Option<String>) {
        let Some(j) = self.jobs.get_mut(job) else { return };
        match (found, j.write.kind) {
            (Some(id), WriteKind::Delete) => {
                j.write.sfid = Some(id.clone());
                j.op = Operation::Delete(id);
            }
            (Some(id), _) => {
                if let Operation::Create(record) | Operation::Upsert(record) = &mut j.op {
                    record.insert("Id".into(), Value::String(id.clone()));
                    j.op = Operation::Update(std::mem::take(record));
                }
                j.write.sfid = Some(id);
                j.adopted = true;
            }
            (None, WriteKind::Delete) => j.op = Operation::Skip,
            (None, _) => {}
        }
    }

    /// A record that alone makes a request larger than `max_request_bytes` cannot be sent: it fails, and only it.
    pub fn refuse_oversized(&mut self, max_request_bytes: usize) {
        for j in self.jobs.iter_mut() {
            let Some(record) = j.op.record() else { continue };
            let bytes = ENVELOPE_BYTES + json_bytes(&Value::Object(record.clone()));
            if bytes > max_request_bytes {
                j.op = Operation::Refuse(format!(
                    "the record is {bytes} bytes as JSON, more than one request may carry \
                     (pgforce.max_request_bytes = {max_request_bytes}); shorten its values or raise the setting"
                ));
            }
        }
    }

    /// Refuses the writes carrying a number their Salesforce field cannot hold exactly (too many digits before the
    /// point, or decimals Salesforce would round), by the describe of their sObject (keyed by lower-case name).
    pub fn refuse_unholdable(&mut self, tables: &HashMap<String, Table>, described: &HashMap<String, Arc<Described>>) {
        for j in self.jobs.iter_mut() {
            let Some(record) = j.op.record() else { continue };
            let Some(table) = tables.get(&j.table) else { continue };
            let Some(d) = described.get(&table.target.sobject.to_ascii_lowercase()) else { continue };
            if let Some(why) = d.unholdable(record) {
                j.op = Operation::Refuse(why);
            }
        }
    }

    /// A write in doubt that could not be looked up waits for another attempt.
    pub fn recheck(&mut self, job: usize, why: String) {
        if let Some(j) = self.jobs.get_mut(job) {
            j.op = Operation::Recheck(why);
        }
    }

    /// The calls in dependency order, as waves sent one after the other. Jobs go by depth (`order`: a level after
    /// the level whose Salesforce ids it needs); within a depth, the writes (not deletes) of sObjects that another
    /// mapped table in this plan references through an external-id relationship column go first. Each batch item
    /// is keyed by its job's index in `jobs`. Each record moves into its batch (the job keeps the kind of its
    /// operation, with an empty record) and the job's values are let go: a claim's data is held once while it is
    /// sent.
    pub fn waves(&mut self, tables: &HashMap<String, Table>, limits: Limits) -> Vec<Vec<Batch>> {
        let referenced: Vec<String> = self
            .jobs
            .iter()
            .filter_map(|j| tables.get(&j.table))
            .flat_map(|t| t.target.columns.iter().filter_map(|(c, _)| relationship_column(c)))
            .filter_map(|r| r.parent_object())
            .collect();
        let is_parent = |job: &Job| {
            job.write.kind != WriteKind::Delete
                && tables
                    .get(&job.table)
                    .is_some_and(|t| referenced.iter().any(|r| r.eq_ignore_ascii_case(&t.target.sobject)))
        };
        let mut levels: std::collections::BTreeMap<(usize, bool), Vec<usize>> = std::collections::BTreeMap::new();
        for (i, job) in self.jobs.iter().enumerate() {
            levels.entry((job.depth, !is_parent(job))).or_default().push(i);
        }
        levels.into_values().map(|ids| self.batches_of(&ids, tables, limits)).filter(|w| !w.is_empty()).collect()
    }

    /// Groups the given jobs into calls of one kind (and one sObject for upserts) of at most 200 records and
    /// `max_request_bytes` of body. A write that failed before goes alone: whatever made its request fail (a record
    /// that times out, a lock) then costs the records that were batched with it one attempt, never more.
    fn batches_of(&mut self, ids: &[usize], tables: &HashMap<String, Table>, limits: Limits) -> Vec<Batch> {
        let max_request_bytes = limits.max_request_bytes;
        let mut alone = Vec::new();
        let mut groups: Vec<(CallKind, &str, ItemsWithLinks)> = Vec::new();
        let mut index: HashMap<(&str, u8), usize> = HashMap::new();
        for &i in ids {
            let job = &mut self.jobs[i];
            // The table's name as `tables` holds it: the key borrows from there, not from the job taken apart here.
            let Some((table, t)) = tables.get_key_value(&job.table) else { continue };
            let Some((kind, tag, item)) = take_item(job, t) else { continue };
            let links: Vec<(usize, String, usize)> =
                std::mem::take(&mut job.links).into_iter().map(|l| (i, l.field, l.parent)).collect();
            job.write.values = Values::new();
            job.write.row = Values::new();
            if job.write.attempts > 0 {
                let bytes = ENVELOPE_BYTES + json_bytes(&item);
                alone.push(Batch { kind, items: vec![(i, item)], bytes, links, bulk: None });
                continue;
            }
            let g = *index.entry((table.as_str(), tag)).or_insert_with(|| {
                groups.push((kind, t.target.sobject.as_str(), Vec::new()));
                groups.len() - 1
            });
            groups[g].2.push((i, item, links));
        }
        let mut batches = Vec::new();
        for (kind, sobject, items) in groups {
            let (bulk, items) = bulk_part(&kind, sobject, items, limits.bulk_threshold);
            batches.extend(bulk);
            let empty = || Batch {
                kind: kind.clone(),
                items: Vec::new(),
                bytes: ENVELOPE_BYTES,
                links: Vec::new(),
                bulk: None,
            };
            let mut current = empty();
            for (i, item, links) in items {
                // Each record after the first adds a comma.
                let size = json_bytes(&item) + 1;
                let full = current.items.len() >= MAX_RECORDS_PER_CALL || current.bytes + size > max_request_bytes;
                if full && !current.items.is_empty() {
                    batches.push(std::mem::replace(&mut current, empty()));
                }
                current.bytes += size;
                current.items.push((i, item));
                current.links.extend(links);
            }
            if !current.items.is_empty() {
                batches.push(current);
            }
        }
        batches.extend(alone);
        batches
    }
}

/// Moves a job's record out of it as the item of a call: its kind, a tag grouping calls of one kind, and the record
/// (an id for deletes). `None` for jobs settled without a call.
fn take_item(job: &mut Job, t: &Table) -> Option<(CallKind, u8, Value)> {
    Some(match &mut job.op {
        Operation::Create(r) => (CallKind::Create, 0, Value::Object(std::mem::take(r))),
        Operation::Update(r) => (CallKind::Update, 1, Value::Object(std::mem::take(r))),
        Operation::Upsert(r) => (
            CallKind::Upsert {
                object: t.target.sobject.clone(),
                field: t.target.upsert_field.clone().unwrap_or_default(),
            },
            2,
            Value::Object(std::mem::take(r)),
        ),
        Operation::Delete(id) => (CallKind::Delete, 3, Value::String(id.clone())),
        Operation::Skip
        | Operation::Refuse(_)
        | Operation::Recheck(_)
        | Operation::Superseded(_)
        | Operation::Wait(..) => return None,
    })
}

impl Plan {
    /// Every job's record as a call would carry it, grouped into one batch per sObject and kind (no size limits):
    /// what a Bulk job's results are matched against once the job is over (`delivery::bulk::verdicts_for`).
    pub fn items_by_call(&mut self, tables: &HashMap<String, Table>) -> Vec<Batch> {
        let mut batches: Vec<Batch> = Vec::new();
        for (i, job) in self.jobs.iter_mut().enumerate() {
            let Some(t) = tables.get(&job.table) else { continue };
            let Some((kind, _, item)) = take_item(job, t) else { continue };
            let sobject = t.target.sobject.clone();
            match batches.iter_mut().find(|b| b.kind == kind && b.bulk.as_deref() == Some(sobject.as_str())) {
                Some(b) => b.items.push((i, item)),
                None => batches.push(Batch {
                    kind,
                    items: vec![(i, item)],
                    bytes: 0,
                    links: Vec::new(),
                    bulk: Some(sobject),
                }),
            }
        }
        batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Change;
    use crate::log::Action;
    use serde_json::json;

    fn target(upsert: Option<&str>) -> Target {
        Target {
            sobject: "Contact".into(),
            upsert_field: upsert.map(str::to_string),
            columns: vec![
                ("lastname".into(), PgKind::Text),
                ("external_id__c".into(), PgKind::Text),
                ("account__r__external_id__c".into(), PgKind::Text),
                ("hasoptedoutofemail".into(), PgKind::Bool),
            ],
        }
    }

    fn write(
        kind: WriteKind,
        values: &[(&str, Option<&str>)],
        row: &[(&str, Option<&str>)],
        sfid: Option<&str>,
    ) -> Write {
        let v = |p: &[(&str, Option<&str>)]| p.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect();
        Write {
            record_id: 1,
            kind,
            values: v(values),
            row: v(row),
            sfid: sfid.map(str::to_string),
            log_ids: vec![1],
            attempts: 0,
            in_doubt: None,
            retried: false,
            deleted_later: false,
        }
    }

    #[test]
    fn operations_follow_the_mapping() {
        let ins = write(
            WriteKind::Insert,
            &[
                ("lastname", Some("A")),
                ("external_id__c", Some("E1")),
                ("account__r__external_id__c", Some("P1")),
                ("id", Some("1")),
                ("hasoptedoutofemail", Some("f")),
            ],
            &[],
            None,
        );
        let Operation::Upsert(r) = operation(&target(Some("external_id__c")), &ins) else { panic!("upsert") };
        assert_eq!(
            Value::Object(r),
            json!({"attributes": {"type": "Contact"}, "lastname": "A", "external_id__c": "E1", "account__r": {"external_id__c": "P1"}, "hasoptedoutofemail": false})
        );
        assert!(matches!(operation(&target(None), &ins), Operation::Create(_)));

        let upd = write(
            WriteKind::Update,
            &[("lastname", Some("B")), ("account__r__external_id__c", None)],
            &[("external_id__c", Some("E1"))],
            Some("003X"),
        );
        // A record with a Salesforce id is written by that id, upsert field or not.
        let Operation::Update(r) = operation(&target(Some("external_id__c")), &upd) else { panic!("update") };
        assert_eq!(
            Value::Object(r),
            json!({"attributes": {"type": "Contact"}, "lastname": "B", "account__c": null, "Id": "003X"})
        );
        let Operation::Update(r) = operation(&target(None), &upd) else { panic!("update") };
        assert_eq!(r.get("Id"), Some(&json!("003X")));
        // A changed upsert field is an ordinary field update of the same record.
        let rekeyed = write(
            WriteKind::Update,
            &[("external_id__c", Some("E2"))],
            &[("external_id__c", Some("E2"))],
            Some("003X"),
        );
        assert_eq!(
            operation(&target(Some("external_id__c")), &rekeyed),
            Operation::Update(
                json!({"attributes": {"type": "Contact"}, "external_id__c": "E2", "Id": "003X"})
                    .as_object()
                    .unwrap()
                    .clone()
            )
        );
        // Without one (its insert failed or has not gone), the whole row goes as its insert, in both algorithms:
        // an upsert by the upsert field, else a create.
        let unsynced = write(
            WriteKind::Update,
            &[("lastname", Some("B"))],
            &[("lastname", Some("B")), ("hasoptedoutofemail", Some("t")), ("external_id__c", Some("E1"))],
            None,
        );
        let Operation::Upsert(r) = operation(&target(Some("external_id__c")), &unsynced) else { panic!("upsert") };
        assert_eq!(r.get("external_id__c"), Some(&json!("E1")));
        assert_eq!(r.get("hasoptedoutofemail"), Some(&json!(true)), "the whole row, not only the changed field");
        let orphan = write(
            WriteKind::Update,
            &[("lastname", Some("B"))],
            &[("lastname", Some("B")), ("hasoptedoutofemail", Some("t"))],
            None,
        );
        let Operation::Create(r) = operation(&target(None), &orphan) else { panic!("the whole row is inserted") };
        assert_eq!(r.get("hasoptedoutofemail"), Some(&json!(true)));
        let unmapped = write(WriteKind::Update, &[("some_local_column", Some("x"))], &[], Some("003X"));
        assert_eq!(operation(&target(None), &unmapped), Operation::Skip);
        let del = write(WriteKind::Delete, &[], &[("sfid", Some("003Y"))], None);
        assert_eq!(operation(&target(None), &del), Operation::Delete("003Y".into()));
    }

    fn table(sobject: &str, columns: &[&str], upsert: Option<&str>) -> Table {
        Table {
            qualified: format!("public.{}", sobject.to_lowercase()),
            target: Target {
                sobject: sobject.into(),
                upsert_field: upsert.map(str::to_string),
                columns: columns.iter().map(|c| (c.to_string(), PgKind::Text)).collect(),
            },
            links: Vec::new(),
        }
    }

    fn insert(log_id: i64, record_id: i64, pairs: &[(&str, &str)]) -> Change {
        Change {
            log_id,
            record_id,
            action: Action::Insert,
            sfid: None,
            values: pairs.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect(),
            old: Default::default(),
            attempts: 0,
            in_doubt_since: None,
            retried: false,
            deleted_later: false,
        }
    }

    #[test]
    fn calls_hold_at_most_200_records_of_one_kind_and_object() {
        let mut claimed = Claimed::default();
        claimed.tables.insert("account".into(), table("Account", &["name", "external_id__c"], Some("external_id__c")));
        claimed.tables.insert("invoice".into(), table("Invoice__c", &["amount__c"], None));
        claimed
            .changes
            .insert("invoice".into(), (0..250).map(|i| insert(1000 + i, i, &[("amount__c", "1")])).collect());
        claimed.changes.insert("account".into(), vec![insert(1, 1, &[("name", "A"), ("external_id__c", "A-1")])]);
        let mut p = plan(&claimed);
        assert!(p.sfids_wanted().is_empty(), "inserts need no Salesforce id");
        p.decide(&claimed.tables, &HashMap::new());
        let waves = p.waves(&claimed.tables, NO_BYTE_LIMIT);
        assert_eq!(waves.len(), 1, "no relationships: one wave");
        let mut calls: Vec<(String, usize)> =
            waves[0].iter().map(|b| (format!("{:?}", b.kind), b.items.len())).collect();
        calls.sort();
        assert_eq!(
            calls,
            [
                ("Create".to_string(), 50),
                ("Create".to_string(), 200),
                ("Upsert { object: \"Account\", field: \"external_id__c\" }".to_string(), 1)
            ]
        );
        let keys: std::collections::BTreeSet<usize> =
            waves[0].iter().flat_map(|b| b.items.iter().map(|(k, _)| *k)).collect();
        assert_eq!(keys.len(), 251, "every job is sent exactly once");
    }

    const NO_BYTE_LIMIT: Limits = Limits { max_request_bytes: usize::MAX, bulk_threshold: 0 };

    #[test]
    fn retries_never_go_back_in_time() {
        let mut claimed = Claimed::default();
        claimed.tables.insert("contact".into(), table("Contact", &["lastname", "email"], None));
        let old_update = Change {
            log_id: 5,
            record_id: 1,
            action: Action::Update,
            sfid: Some("003A".into()),
            values: [("lastname".to_string(), Some("stale".to_string()))].into(),
            old: [("lastname".to_string(), Some("older".to_string()))].into(),
            attempts: 0,
            in_doubt_since: None,
            retried: true,
            deleted_later: false,
        };
        let failed_insert = Change {
            log_id: 6,
            record_id: 2,
            retried: true,
            deleted_later: false,
            ..insert(6, 2, &[("lastname", Some("x"))].map(|(k, v)| (k, v.unwrap())))
        };
        let gone = Change { log_id: 7, record_id: 3, retried: true, ..insert(7, 3, &[("lastname", "y")]) };
        claimed.changes.insert("contact".into(), vec![old_update, failed_insert, gone]);
        let mut p = plan(&claimed);
        assert_eq!(p.current_rows_wanted().get("contact").map(Vec::len), Some(3));
        let row = |pairs: &[(&str, &str)]| -> Values {
            pairs.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect()
        };
        let current: HashMap<String, HashMap<i64, Values>> = [(
            "contact".to_string(),
            [
                (1, row(&[("lastname", "newest"), ("email", "e@x"), ("sfid", "003A")])),
                // Created since by a later change sent as an insert of the whole row.
                (2, row(&[("lastname", "x2"), ("email", "f@x"), ("sfid", "003B")])),
            ]
            .into(),
        )]
        .into();
        p.refresh(&current);
        p.decide(&claimed.tables, &HashMap::new());
        let op = |i: usize| {
            serde_json::to_value(match &p.jobs[i].op {
                Operation::Update(r) => Value::Object(r.clone()),
                other => panic!("{other:?}"),
            })
            .unwrap()
        };
        assert_eq!(
            op(0),
            json!({"attributes": {"type": "Contact"}, "lastname": "newest", "Id": "003A"}),
            "its fields, current values"
        );
        assert_eq!(
            op(1),
            json!({"attributes": {"type": "Contact"}, "lastname": "x2", "email": "f@x", "Id": "003B"}),
            "an insert of a record created since updates it with the whole row"
        );
        assert!(matches!(&p.jobs[2].op, Operation::Superseded(m) if m.contains("deleted since")));
    }

    #[test]
    fn calls_are_bounded_by_bytes_and_a_record_too_large_for_any_call_fails_alone() {
        let mut claimed = Claimed::default();
        claimed.tables.insert("note".into(), table("Note__c", &["body__c"], None));
        let text = "x".repeat(1000);
        let mut changes: Vec<Change> = (0..30).map(|i| insert(100 + i, i, &[("body__c", text.as_str())])).collect();
        let huge = "y".repeat(20_000);
        changes.push(insert(500, 500, &[("body__c", huge.as_str())]));
        claimed.changes.insert("note".into(), changes);
        let mut p = plan(&claimed);
        p.decide(&claimed.tables, &HashMap::new());
        let limit = 8 * 1024;
        p.refuse_oversized(limit);
        let refused: Vec<&Job> = p.jobs.iter().filter(|j| matches!(j.op, Operation::Refuse(_))).collect();
        assert_eq!(refused.len(), 1, "only the huge record is refused");
        assert_eq!(refused[0].write.log_ids, vec![500]);
        let Operation::Refuse(why) = &refused[0].op else { unreachable!() };
        assert!(why.contains("pgforce.max_request_bytes = 8192") && why.contains("bytes as JSON"), "{why}");
        let waves = p.waves(&claimed.tables, Limits { max_request_bytes: limit, bulk_threshold: 0 });
        let batches = &waves[0];
        assert!(batches.len() >= 4, "30 records of 1 kB cannot go in one 8 kB call: {}", batches.len());
        for b in batches {
            let body = serde_json::to_vec(&serde_json::json!({
                "allOrNone": false,
                "records": b.items.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            }))
            .unwrap();
            assert!(body.len() <= limit, "a request of {} bytes", body.len());
        }
        let sent: usize = batches.iter().map(|b| b.items.len()).sum();
        assert_eq!(sent, 30, "every other record is sent, exactly once");
    }

    #[test]
    fn writes_that_failed_before_go_alone() {
        let mut claimed = Claimed::default();
        claimed.tables.insert("invoice".into(), table("Invoice__c", &["amount__c"], None));
        let mut changes: Vec<Change> = (0..5).map(|i| insert(100 + i, i, &[("amount__c", "1")])).collect();
        changes[1].attempts = 1;
        changes[3].attempts = 2;
        claimed.changes.insert("invoice".into(), changes);
        let mut p = plan(&claimed);
        p.decide(&claimed.tables, &HashMap::new());
        let waves = p.waves(&claimed.tables, NO_BYTE_LIMIT);
        let mut calls: Vec<Vec<i64>> = waves[0]
            .iter()
            .map(|b| b.items.iter().flat_map(|(k, _)| p.jobs[*k].write.log_ids.clone()).collect())
            .collect();
        calls.iter_mut().for_each(|c| c.sort());
        calls.sort();
        assert_eq!(calls, [vec![100, 102, 104], vec![101], vec![103]]);
    }

    #[test]
    fn a_custom_parent_object_goes_first() {
        let mut claimed = Claimed::default();
        claimed
            .tables
            .insert("account__c".into(), table("Account__c", &["name", "external_id__c"], Some("external_id__c")));
        claimed
            .tables
            .insert("invoice".into(), table("Invoice__c", &["amount__c", "account__r__external_id__c"], None));
        claimed
            .changes
            .insert("invoice".into(), vec![insert(2, 7, &[("amount__c", "1"), ("account__r__external_id__c", "A-1")])]);
        claimed.changes.insert("account__c".into(), vec![insert(1, 1, &[("name", "A"), ("external_id__c", "A-1")])]);
        let mut p = plan(&claimed);
        p.decide(&claimed.tables, &HashMap::new());
        let waves = p.waves(&claimed.tables, NO_BYTE_LIMIT);
        assert_eq!(waves.len(), 2, "parent wave, then child wave");
        assert_eq!(waves[0][0].kind, CallKind::Upsert { object: "Account__c".into(), field: "external_id__c".into() });
        assert_eq!(waves[1][0].kind, CallKind::Create);
        let child = &p.jobs[waves[1][0].items[0].0];
        assert_eq!(child.write.log_ids, vec![2]);
    }

    #[test]
    fn looked_up_sfids_turn_updates_into_updates_by_id() {
        let mut claimed = Claimed::default();
        claimed.tables.insert("contact".into(), table("Contact", &["lastname"], None));
        let update = Change {
            log_id: 5,
            record_id: 9,
            action: Action::Update,
            sfid: None,
            values: [("lastname".to_string(), Some("B".to_string()))].into(),
            old: [("lastname".to_string(), Some("A".to_string()))].into(),
            attempts: 0,
            in_doubt_since: None,
            retried: false,
            deleted_later: false,
        };
        claimed.changes.insert("contact".into(), vec![update]);
        let mut p = plan(&claimed);
        assert_eq!(p.sfids_wanted(), HashMap::from([("contact".to_string(), vec![9])]));
        let found =
            HashMap::from([("contact".to_string(), HashMap::from([(9, Some("003000000000001AAA".to_string()))]))]);
        p.decide(&claimed.tables, &found);
        let Operation::Update(r) = &p.jobs[0].op else { panic!("update by id: {:?}", p.jobs[0].op) };
        assert_eq!(r.get("Id"), Some(&json!("003000000000001AAA")));
        // The row is gone and never had an sfid: the update would create a record of a deleted row.
        let mut p = plan(&claimed);
        p.decide(&claimed.tables, &HashMap::from([("contact".to_string(), HashMap::new())]));
        assert!(matches!(&p.jobs[0].op, Operation::Superseded(m) if m.starts_with("superseded")), "{:?}", p.jobs[0].op);
        // Deleted after this change and inserted again under the same id: the row's sfid now is another record's.
        let mut changes = claimed.changes["contact"].clone();
        changes.push(Change { log_id: 6, action: Action::Delete, values: Values::new(), ..changes[0].clone() });
        crate::delivery::mark_deleted_later(&mut changes);
        assert!(changes[0].deleted_later && !changes[1].deleted_later);
        let mut ordered = Claimed { tables: claimed.tables.clone(), ..Claimed::default() };
        ordered.changes.insert("contact".into(), crate::delivery::merge::first_per_record(changes));
        let mut p = plan(&ordered);
        p.decide(&ordered.tables, &found);
        assert!(matches!(&p.jobs[0].op, Operation::Superseded(_)), "{:?}", p.jobs[0].op);
        // The same when the delete was not claimed with it (the claim ended before it, or it committed later): the
        // log is asked whether a delete followed, and the answer counts like a claimed delete.
        let mut p = plan(&claimed);
        assert_eq!(p.deletes_wanted(), HashMap::from([("contact".to_string(), vec![(9, 5)])]));
        p.mark_deleted_later(&HashMap::from([("contact".to_string(), [9].into())]));
        p.decide(&claimed.tables, &found);
        assert!(matches!(&p.jobs[0].op, Operation::Superseded(_)), "{:?}", p.jobs[0].op);
        // The row is there without an sfid (its insert failed): Merged writes send the whole row.
        let mut p = plan(&claimed);
        p.decide(&claimed.tables, &HashMap::from([("contact".to_string(), HashMap::from([(9, None)]))]));
        assert!(matches!(&p.jobs[0].op, Operation::Create(_)), "{:?}", p.jobs[0].op);
    }

    #[test]
    fn an_unanswered_update_of_a_row_deleted_since_deletes_what_it_may_have_created() {
        // An update of a row whose insert failed, sent as an upsert by its key; the answer was lost; the row was
        // deleted (its delete logged without an sfid) before the update went again.
        let mut claimed = Claimed::default();
        claimed.tables.insert("item".into(), table("Contact", &["lastname", "external_id__c"], Some("external_id__c")));
        let update = Change {
            action: Action::Update,
            old: [("lastname".to_string(), Some("A".to_string())), ("external_id__c".to_string(), Some("K".into()))]
                .into(),
            attempts: 1,
            in_doubt_since: Some(1_764_698_400),
            retried: true,
            ..insert(5, 9, &[("lastname", "B")])
        };
        claimed.changes.insert("item".into(), vec![update]);
        let mut p = plan(&claimed);
        p.mark_deleted_later(&HashMap::from([("item".to_string(), [9].into())]));
        let reinserted = HashMap::from([("item".to_string(), HashMap::from([(9, Some("003NEWROW".to_string()))]))]);
        p.decide(&claimed.tables, &reinserted);
        assert_eq!(p.jobs[0].write.kind, WriteKind::Delete, "{:?}", p.jobs[0].op);
        assert_eq!(p.jobs[0].write.sfid, None, "never the sfid of the row inserted again");
        let searches = crate::delivery::doubt::searches(&p, &claimed.tables, Some("005U"));
        assert_eq!(searches.len(), 1, "what the attempt may have created is looked for");
        p.settle(0, Some("003CREATED".into()));
        assert_eq!(p.jobs[0].op, Operation::Delete("003CREATED".into()));
        // Found nothing: nothing to delete. Not in doubt: superseded by the row's delete, as before.
        let mut p = plan(&claimed);
        p.decide(&claimed.tables, &HashMap::from([("item".to_string(), HashMap::new())]));
        p.settle(0, None);
        assert_eq!(p.jobs[0].op, Operation::Skip);
        claimed.changes.get_mut("item").expect("item")[0].in_doubt_since = None;
        let mut p = plan(&claimed);
        p.decide(&claimed.tables, &HashMap::from([("item".to_string(), HashMap::new())]));
        assert!(matches!(&p.jobs[0].op, Operation::Superseded(_)), "{:?}", p.jobs[0].op);
    }
}
