//! Planning one claim: changes merge into writes (`pgforce_core::plan`), each write gets its Salesforce operation
//! (`pgforce_core::convert`), and operations are grouped into calls of at most 200 records.

use std::collections::HashMap;

use pgforce_core::convert::{operation, Operation};
use pgforce_core::mapping::relationship_column;
use pgforce_core::plan::{merge, Planned, Write, WriteKind};
use pgforce_core::salesforce::{Batch, CallKind};
use serde_json::Value;

use super::claim::{Claimed, Table};

const MAX_RECORDS_PER_CALL: usize = 200;

/// One write and the call it becomes.
pub struct Job {
    pub table: String,
    pub write: Write,
    pub op: Operation,
}

pub struct Plan {
    pub jobs: Vec<Job>,
    /// Log ids of records deleted before they reached Salesforce: nothing to send.
    pub nothing: Vec<Vec<i64>>,
}

/// Merges each mapped table's claimed changes into writes.
pub fn merge_claimed(claimed: &Claimed) -> Plan {
    let mut plan = Plan { jobs: Vec::new(), nothing: Vec::new() };
    for (table, list) in &claimed.changes {
        if !claimed.tables.contains_key(table) {
            continue;
        }
        for planned in merge(list) {
            match planned {
                Planned::Nothing { log_ids } => plan.nothing.push(log_ids),
                Planned::Send(w) => plan.jobs.push(Job { table: table.clone(), write: w, op: Operation::Skip }),
            }
        }
    }
    plan
}

impl Plan {
    /// Per table, the records whose update or delete has no Salesforce id in the log.
    pub fn sfids_wanted(&self) -> HashMap<String, Vec<i64>> {
        let mut out: HashMap<String, Vec<i64>> = HashMap::new();
        for j in self.jobs.iter().filter(|j| j.write.sfid.is_none() && j.write.kind != WriteKind::Insert) {
            out.entry(j.table.clone()).or_default().push(j.write.record_id);
        }
        out
    }

    /// Fills in looked-up Salesforce ids and decides each write's operation.
    pub fn decide(&mut self, tables: &HashMap<String, Table>, sfids: &HashMap<String, HashMap<i64, String>>, merged: bool) {
        for j in self.jobs.iter_mut() {
            if j.write.sfid.is_none() {
                j.write.sfid = sfids.get(&j.table).and_then(|m| m.get(&j.write.record_id)).cloned();
            }
            if let Some(t) = tables.get(&j.table) {
                j.op = operation(&t.target, &j.write, merged);
            }
        }
    }

    /// The calls in dependency order: first the writes (not deletes) of sObjects that another mapped table in this
    /// plan references through a relationship column, then everything else.
    pub fn waves(&self, tables: &HashMap<String, Table>) -> Vec<Vec<Batch>> {
        let referenced: Vec<String> = self
            .jobs
            .iter()
            .filter_map(|j| tables.get(&j.table))
            .flat_map(|t| t.target.columns.iter().filter_map(|(c, _)| relationship_column(c)))
            .map(|r| parent_object(&r.relationship))
            .collect();
        let is_parent = |job: &Job| {
            job.write.kind != WriteKind::Delete
                && tables.get(&job.table).is_some_and(|t| referenced.iter().any(|r| r.eq_ignore_ascii_case(&t.target.sobject)))
        };
        let (first, rest): (Vec<usize>, Vec<usize>) = (0..self.jobs.len()).partition(|i| is_parent(&self.jobs[*i]));
        [first, rest]
            .into_iter()
            .map(|ids| self.batches_of(&ids, tables))
            .filter(|w| !w.is_empty())
            .collect()
    }

    /// Groups the given jobs into calls of at most 200 records of one kind (and one sObject for upserts).
    fn batches_of(&self, ids: &[usize], tables: &HashMap<String, Table>) -> Vec<Batch> {
        let mut groups: Vec<(CallKind, Vec<(usize, Value)>)> = Vec::new();
        let mut index: HashMap<(String, u8), usize> = HashMap::new();
        for &i in ids {
            let job = &self.jobs[i];
            let Some(t) = tables.get(&job.table) else { continue };
            let (kind, tag, item) = match &job.op {
                Operation::Create(r) => (CallKind::Create, 0, Value::Object(r.clone())),
                Operation::Update(r) => (CallKind::Update, 1, Value::Object(r.clone())),
                Operation::Upsert(r) => (
                    CallKind::Upsert { object: t.target.sobject.clone(), field: t.target.upsert_field.clone().unwrap_or_default() },
                    2,
                    Value::Object(r.clone()),
                ),
                Operation::Delete(id) => (CallKind::Delete, 3, Value::String(id.clone())),
                Operation::Skip | Operation::Refuse(_) => continue,
            };
            let key = (job.table.clone(), tag);
            let g = *index.entry(key).or_insert_with(|| {
                groups.push((kind, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push((i, item));
        }
        groups
            .into_iter()
            .flat_map(|(kind, items)| {
                items.chunks(MAX_RECORDS_PER_CALL).map(|c| Batch { kind: kind.clone(), items: c.to_vec() }).collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The sObject a relationship points at: `account__r` → `account__c` (custom), `account` → `account` (standard;
/// `parent` and other standard names that differ from their object are not recognised and simply go unordered).
fn parent_object(relationship: &str) -> String {
    match relationship.strip_suffix("__r") {
        Some(base) => format!("{base}__c"),
        None => relationship.to_string(),
    }
}
