//! Relationships by foreign key. A column holding the parent row's `id` (`contact.account_id → account.id`,
//! `account.parent_id → account.id`) is sent as the parent's Salesforce id in a lookup field (`AccountId`,
//! `ParentId`). A parent that already has an `sfid` is simply filled in; a parent created in the same claim is
//! written first: jobs are ordered in levels by Kahn's algorithm over the dependency graph, and each level is sent
//! once the level it depends on has its ids (`send::send_waves` fills them in). A parent with no `sfid` that waits in
//! the queue makes the child wait (at no cost); one that failed fails the child, naming the parent row. A cycle
//! (rows that point at each other, a row pointing at itself) is broken: one of its rows is created without the
//! cyclic lookups, and the lookups follow as an update (`Job::deferred`).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::{Map, Value};

use super::merge::WriteKind;
use super::plan::{Job, Link, Operation, Plan};
use super::Table;

/// A mapped column that holds the `id` of a row of a mapped table (by a foreign key), sent as that row's
/// Salesforce id in `field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub column: String,
    /// The Salesforce lookup field (`AccountId`, `ParentId`, `Custom__c`).
    pub field: String,
    /// The parent mapping (its log `table_name`); `None` when the column has no foreign key to a mapped table
    /// (any more).
    pub parent: Option<String>,
}

/// What Postgres knows of a parent row that is not written in this claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentRow {
    pub sfid: Option<String>,
    /// A change of it waits in the queue, due in this long.
    pub queued: Option<Duration>,
    /// Its last change failed for good, with this message.
    pub failed: Option<String>,
}

/// How long a child waits when its parent is still queued without a retry time.
pub const PARENT_WAIT: Duration = Duration::from_secs(1);

/// The parent row of a foreign key value, for messages: `app.account row id=5`.
pub fn parent_row(tables: &HashMap<String, Table>, parent: &str, id: i64) -> String {
    let name = tables.get(parent).map_or(parent, |t| t.qualified.as_str());
    format!("{name} row id={id}")
}

/// The foreign key values a job's operation carries: `Some(None)` clears the lookup.
fn fk_values<'a>(job: &'a Job, table: &'a Table) -> impl Iterator<Item = (&'a ForeignKey, Option<&'a str>)> {
    // An update sent as the create of the whole row (its insert failed, Merged writes) carries the row's values.
    let source = if job.write.kind == WriteKind::Update && matches!(job.op, Operation::Create(_)) {
        &job.write.row
    } else {
        &job.write.values
    };
    table.links.iter().filter_map(move |fk| source.get(&fk.column).map(|v| (fk, v.as_deref())))
}

/// What becomes of one lookup while planning.
enum Lookup {
    Fill(Value),
    Omit,
    Link(usize),
    /// Set by an update once the record exists (a row pointing at itself).
    Defer,
    Wait(String, Duration),
    Refuse(String),
}

impl Plan {
    /// The jobs that write each row (not delete it), by (table, record id), for finding parents in the plan.
    fn writers(&self) -> HashMap<(&str, i64), usize> {
        let mut out = HashMap::new();
        for (i, j) in self.jobs.iter().enumerate() {
            if j.write.kind != WriteKind::Delete && !matches!(j.op, Operation::Superseded(_)) {
                out.insert((j.table.as_str(), j.write.record_id), i);
            }
        }
        out
    }

    /// An update that changes only foreign keys has no field of its own to send, but its lookups: it is sent
    /// (`decide` found nothing to send).
    pub fn send_lookup_changes(&mut self, tables: &HashMap<String, Table>) {
        for job in &mut self.jobs {
            let Some(table) = tables.get(&job.table) else { continue };
            if let (Operation::Skip, WriteKind::Update, Some(sfid)) = (&job.op, job.write.kind, &job.write.sfid) {
                if table.links.iter().any(|fk| job.write.values.contains_key(&fk.column)) {
                    let mut record = Map::new();
                    record.insert("attributes".into(), serde_json::json!({"type": table.target.sobject}));
                    record.insert("Id".into(), Value::String(sfid.clone()));
                    job.op = Operation::Update(record);
                }
            }
        }
    }

    /// Per parent table, the parent rows whose state must be read from Postgres: those the writes reference and
    /// that are not written in this plan.
    pub fn parents_wanted(&self, tables: &HashMap<String, Table>) -> HashMap<String, Vec<i64>> {
        let writers = self.writers();
        let mut out: HashMap<String, Vec<i64>> = HashMap::new();
        for job in self.jobs.iter().filter(|j| sends_record(&j.op)) {
            let Some(table) = tables.get(&job.table) else { continue };
            for (fk, value) in fk_values(job, table) {
                let (Some(parent), Some(Ok(id))) = (&fk.parent, value.map(str::parse::<i64>)) else { continue };
                if !writers.contains_key(&(parent.as_str(), id)) {
                    out.entry(parent.clone()).or_default().push(id);
                }
            }
        }
        for ids in out.values_mut() {
            ids.sort_unstable();
            ids.dedup();
        }
        out
    }

    /// Puts each foreign key value into its lookup field: a parent's known Salesforce id directly; a parent written
    /// in this plan as a link (`Job::links`, resolved by `order`); a parent still queued makes the write wait (and
    /// one due now is named in `parents_due`, for the worker to claim it too), a parent that failed or was never
    /// sent refuses it with a message naming the parent row. `parents` holds what
    /// `parents_wanted` asked for (per parent table: id → row; a missing id is a row that does not exist).
    pub fn link(&mut self, tables: &HashMap<String, Table>, parents: &HashMap<String, HashMap<i64, ParentRow>>) {
        let writers: HashMap<(String, i64), usize> =
            self.writers().into_iter().map(|((t, id), i)| ((t.to_string(), id), i)).collect();
        let mut due: HashMap<String, Vec<i64>> = HashMap::new();
        for i in 0..self.jobs.len() {
            let Some(table) = tables.get(&self.jobs[i].table) else { continue };
            let job = &self.jobs[i];
            if !sends_record(&job.op) {
                continue;
            }
            let creates = matches!(job.op, Operation::Create(_));
            let mut lookups = Vec::new();
            for (fk, value) in fk_values(job, table) {
                let lookup = match (value, &fk.parent) {
                    (None, _) if creates => Lookup::Omit,
                    (None, _) => Lookup::Fill(Value::Null),
                    (Some(_), None) => Lookup::Refuse(format!(
                        "column {} of {} is mapped to lookup {} but has no foreign key to a mapped table; add the \
                         foreign key or map the parent table",
                        fk.column, table.qualified, fk.field
                    )),
                    (Some(text), Some(parent)) => match text.parse::<i64>() {
                        Err(_) => Lookup::Refuse(format!("column {}: {text:?} is not a row id", fk.column)),
                        Ok(id) => match writers.get(&(parent.clone(), id)) {
                            Some(p) if *p != i => Lookup::Link(*p),
                            // A row pointing at itself: created without it, then updated with its own id.
                            Some(_) => match &job.write.sfid {
                                Some(sfid) => Lookup::Fill(Value::String(sfid.clone())),
                                None => Lookup::Defer,
                            },
                            _ => {
                                let row = parents.get(parent).and_then(|p| p.get(&id));
                                if row.is_some_and(|r| r.sfid.is_none() && r.queued == Some(Duration::ZERO)) {
                                    due.entry(parent.clone()).or_default().push(id);
                                }
                                from_postgres(tables, parent, id, row)
                            }
                        },
                    },
                };
                lookups.push((fk.field.clone(), fk.column.clone(), value.map(str::to_string), lookup));
            }
            let job = &mut self.jobs[i];
            for (field, column, value, lookup) in lookups {
                match lookup {
                    Lookup::Fill(v) => {
                        if let Some(r) = job.op.record_mut() {
                            r.insert(field, v);
                        }
                    }
                    Lookup::Omit => {}
                    Lookup::Link(parent) => job.links.push(Link { field, parent, column, value }),
                    Lookup::Defer => job.deferred.push((column, value)),
                    Lookup::Wait(why, wait) => {
                        job.op = Operation::Wait(why, wait);
                        break;
                    }
                    Lookup::Refuse(why) => {
                        job.op = Operation::Refuse(why);
                        break;
                    }
                }
            }
            if !sends_record(&job.op) {
                job.links.clear();
            }
        }
        for ids in due.values_mut() {
            ids.sort_unstable();
            ids.dedup();
        }
        self.parents_due = due;
    }

    /// Orders the jobs by Kahn's algorithm over their links: a job's depth is one more than the deepest parent it
    /// waits for (0 for the rest). A parent that turned out to have a Salesforce id (an adopted record) is filled in
    /// at once; one that will not be sent makes its children (and theirs) wait or fail. Cycles are broken at their
    /// lowest job, which goes without the cyclic lookups (`Job::deferred` sets them afterwards). Iterative: any
    /// depth, in time linear in jobs and links.
    pub fn order(&mut self, tables: &HashMap<String, Table>) {
        // Parents that already have a Salesforce id need no waiting.
        for i in 0..self.jobs.len() {
            if self.jobs[i].links.is_empty() {
                continue;
            }
            let mut kept = Vec::new();
            for link in std::mem::take(&mut self.jobs[i].links) {
                let parent = &self.jobs[link.parent];
                match (&parent.write.sfid, &parent.op) {
                    (None, Operation::Create(_) | Operation::Upsert(_)) => kept.push(link),
                    (Some(sfid), op) if sends_record(op) || matches!(op, Operation::Skip) => {
                        let sfid = Value::String(sfid.clone());
                        if let Some(r) = self.jobs[i].op.record_mut() {
                            r.insert(link.field, sfid);
                        }
                    }
                    // Not sent: settled below, in order.
                    _ => kept.push(link),
                }
            }
            self.jobs[i].links = kept;
        }
        let n = self.jobs.len();
        let mut waiting_for = vec![0usize; n];
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, job) in self.jobs.iter().enumerate() {
            waiting_for[i] = job.links.len();
            for link in &job.links {
                children[link.parent].push(i);
            }
        }
        let mut placed = vec![false; n];
        let mut ready: VecDeque<usize> = (0..n).filter(|i| waiting_for[*i] == 0).collect();
        let mut lowest = 0;
        let mut done = 0;
        while done < n {
            let Some(i) = ready.pop_front() else {
                // Only cycles are left: the lowest job in one goes without the lookups it still waits for.
                while placed[lowest] || waiting_for[lowest] == 0 {
                    lowest += 1;
                }
                let job = &mut self.jobs[lowest];
                let (kept, cyclic): (Vec<Link>, Vec<Link>) =
                    std::mem::take(&mut job.links).into_iter().partition(|l| placed[l.parent]);
                job.links = kept;
                job.deferred.extend(cyclic.into_iter().map(|l| (l.column, l.value)));
                waiting_for[lowest] = 0;
                ready.push_back(lowest);
                continue;
            };
            placed[i] = true;
            done += 1;
            // A parent that is not sent (now) holds its children back: they wait for it, or fail with it.
            if let Some(link) = self.jobs[i].links.iter().find(|l| !sends_record(&self.jobs[l.parent].op)) {
                let parent = &self.jobs[link.parent];
                let name = parent_row(tables, &parent.table, parent.write.record_id);
                let op = match &parent.op {
                    Operation::Refuse(_) => Operation::Refuse(parent_failed(&name)),
                    Operation::Wait(_, wait) => Operation::Wait(parent_waiting(&name), *wait),
                    _ => Operation::Wait(parent_waiting(&name), PARENT_WAIT),
                };
                self.jobs[i].op = op;
                self.jobs[i].links.clear();
                self.jobs[i].deferred.clear();
            }
            let depth = self.jobs[i].links.iter().map(|l| self.jobs[l.parent].depth + 1).max().unwrap_or(0);
            self.jobs[i].depth = depth;
            for c in std::mem::take(&mut children[i]) {
                waiting_for[c] = waiting_for[c].saturating_sub(1);
                if waiting_for[c] == 0 && !placed[c] {
                    ready.push_back(c);
                }
            }
        }
    }
}

fn from_postgres(tables: &HashMap<String, Table>, parent: &str, id: i64, row: Option<&ParentRow>) -> Lookup {
    let name = parent_row(tables, parent, id);
    match row {
        None => Lookup::Refuse(format!("{name} does not exist: the lookup cannot be set")),
        Some(ParentRow { sfid: Some(sfid), .. }) => Lookup::Fill(Value::String(sfid.clone())),
        Some(ParentRow { queued: Some(wait), .. }) => Lookup::Wait(parent_waiting(&name), (*wait).max(PARENT_WAIT)),
        Some(ParentRow { failed: Some(_), .. }) => Lookup::Refuse(parent_failed(&name)),
        Some(_) => Lookup::Refuse(format!(
            "{name} has no sfid and no change waiting to be sent; send it first (UPDATE it, or \
             salesforce.retry_failed()), then retry this one"
        )),
    }
}

pub fn parent_waiting(name: &str) -> String {
    format!("waiting for {name} to reach Salesforce (it has no sfid yet)")
}

/// The message of a child whose parent failed: names the parent row and says how to get both through. Never what
/// Salesforce said of the parent: that can quote the parent's values, which the child's owner may not read (the
/// parent's own `_hc_err` and log entry hold it, for those who may).
pub fn parent_failed(name: &str) -> String {
    format!(
        "parent {name} could not be written to Salesforce (its own error is in its _hc_err); fix it, then retry \
         both: SELECT salesforce.retry_failed()"
    )
}

fn sends_record(op: &Operation) -> bool {
    op.record().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::merge::Write;
    use crate::mapping::{PgKind, Target};
    use serde_json::json;

    fn tables() -> HashMap<String, Table> {
        let table = |name: &str, sobject: &str, links: Vec<ForeignKey>| Table {
            qualified: format!("app.{name}"),
            target: Target {
                sobject: sobject.into(),
                upsert_field: None,
                columns: vec![("name".into(), PgKind::Text)],
            },
            links,
        };
        let fk = |column: &str, field: &str, parent: &str| ForeignKey {
            column: column.into(),
            field: field.into(),
            parent: Some(parent.into()),
        };
        HashMap::from([
            ("account".to_string(), table("account", "Account", vec![fk("parent_id", "ParentId", "account")])),
            ("contact".to_string(), table("contact", "Contact", vec![fk("account_id", "AccountId", "account")])),
        ])
    }

    /// A job of `table` for row `id` whose foreign key column holds `parent`; with `sfid`, an update.
    fn job(table: &str, id: i64, parent: Option<i64>, sfid: Option<&str>) -> Job {
        let column = if table == "account" { "parent_id" } else { "account_id" };
        let mut values: crate::delivery::Values = [("name".to_string(), Some(format!("{table} {id}")))].into();
        values.insert(column.into(), parent.map(|p| p.to_string()));
        let write = Write {
            record_id: id,
            kind: if sfid.is_some() { WriteKind::Update } else { WriteKind::Insert },
            values,
            row: Default::default(),
            sfid: sfid.map(str::to_string),
            log_ids: vec![id],
            attempts: 0,
            in_doubt: None,
            retried: false,
            deleted_later: false,
        };
        let mut record = Map::new();
        record.insert("name".into(), json!(format!("{table} {id}")));
        if let Some(s) = sfid {
            record.insert("Id".into(), json!(s));
        }
        let op = if sfid.is_some() { Operation::Update(record) } else { Operation::Create(record) };
        Job { op, ..Job::new(table.into(), write) }
    }

    fn field(job: &Job, name: &str) -> Option<Value> {
        job.op.record().and_then(|r| r.get(name).cloned())
    }

    #[test]
    fn parents_in_the_plan_go_first_and_known_parents_are_filled_in() {
        let tables = tables();
        let mut plan = Plan::default();
        plan.jobs.push(job("contact", 1, Some(10), None)); // parent created in this plan
        plan.jobs.push(job("contact", 2, Some(11), None)); // parent already in Salesforce
        plan.jobs.push(job("account", 10, None, None));
        plan.jobs.push(job("contact", 3, None, Some("003C"))); // lookup cleared
        assert_eq!(plan.parents_wanted(&tables), HashMap::from([("account".to_string(), vec![11])]));
        let known = ParentRow { sfid: Some("001K".into()), ..ParentRow::default() };
        plan.link(&tables, &HashMap::from([("account".to_string(), HashMap::from([(11, known)]))]));
        plan.order(&tables);
        assert_eq!(
            plan.jobs[0].links,
            vec![Link { field: "AccountId".into(), parent: 2, column: "account_id".into(), value: Some("10".into()) }]
        );
        assert_eq!(plan.jobs.iter().map(|j| j.depth).collect::<Vec<_>>(), vec![1, 0, 0, 0]);
        assert_eq!(field(&plan.jobs[1], "AccountId"), Some(json!("001K")));
        assert_eq!(field(&plan.jobs[3], "AccountId"), Some(Value::Null));
        // A create with no parent sends no lookup at all.
        assert_eq!(field(&plan.jobs[2], "ParentId"), None);
        let waves =
            plan.waves(&tables, crate::delivery::plan::Limits { max_request_bytes: 1 << 20, bulk_threshold: 0 });
        let keys: Vec<Vec<usize>> =
            waves.iter().map(|w| w.iter().flat_map(|b| b.items.iter().map(|(k, _)| *k)).collect()).collect();
        assert_eq!(keys.len(), 2);
        assert!(keys[1] == vec![0], "{keys:?}");
        assert_eq!(waves[1][0].links, vec![(0, "AccountId".to_string(), 2)]);
    }

    #[test]
    fn parents_not_in_the_plan_make_children_wait_or_fail_by_name() {
        let tables = tables();
        let mut plan = Plan::default();
        for (id, parent) in [(1, 20), (2, 21), (3, 22), (4, 23)] {
            plan.jobs.push(job("contact", id, Some(parent), None));
        }
        let rows = HashMap::from([
            (20, ParentRow { queued: Some(Duration::from_secs(30)), ..ParentRow::default() }),
            (21, ParentRow { failed: Some("REQUIRED_FIELD_MISSING: Name".into()), ..ParentRow::default() }),
            (22, ParentRow::default()),
        ]);
        plan.link(&tables, &HashMap::from([("account".to_string(), rows)]));
        plan.order(&tables);
        // Only a parent whose change is due now is for the worker to claim at once.
        assert!(plan.parents_due.is_empty());
        let Operation::Wait(why, wait) = &plan.jobs[0].op else { panic!("{:?}", plan.jobs[0].op) };
        assert!(why.contains("app.account row id=20"), "{why}");
        assert_eq!(*wait, Duration::from_secs(30));
        let Operation::Refuse(why) = &plan.jobs[1].op else { panic!("{:?}", plan.jobs[1].op) };
        assert!(why.contains("app.account row id=21") && !why.contains("REQUIRED_FIELD_MISSING"), "{why}");
        assert!(matches!(&plan.jobs[2].op, Operation::Refuse(w) if w.contains("no sfid and no change waiting")));
        assert!(matches!(&plan.jobs[3].op, Operation::Refuse(w) if w.contains("does not exist")));

        let mut plan = Plan::default();
        plan.jobs.push(job("contact", 1, Some(20), None));
        let due = ParentRow { queued: Some(Duration::ZERO), ..ParentRow::default() };
        plan.link(&tables, &HashMap::from([("account".to_string(), HashMap::from([(20, due)]))]));
        assert_eq!(plan.parents_due, HashMap::from([("account".to_string(), vec![20])]));
        assert!(matches!(plan.jobs[0].op, Operation::Wait(..)));
    }

    #[test]
    fn a_refused_parent_fails_its_descendants_and_a_waiting_one_holds_them() {
        let tables = tables();
        let mut plan = Plan::default();
        plan.jobs.push(job("account", 3, Some(2), None));
        plan.jobs.push(job("account", 2, Some(1), None));
        plan.jobs.push(job("account", 1, None, None));
        plan.jobs.push(job("contact", 9, Some(3), None));
        plan.link(&tables, &HashMap::new());
        plan.jobs[2].op = Operation::Refuse("INVALID: Name Secret Ltd is not allowed".into());
        plan.order(&tables);
        for i in [0, 1, 3] {
            // The parent's own error (which can quote its values) is never in a descendant's message.
            assert!(
                matches!(&plan.jobs[i].op, Operation::Refuse(w) if w.contains("could not be written") && !w.contains("Secret")),
                "{i}: {:?}",
                plan.jobs[i].op
            );
        }
    }

    #[test]
    fn a_chain_of_100000_levels_is_ordered_without_recursion() {
        let tables = tables();
        let mut plan = Plan::default();
        let n = 100_000;
        // Children first, so that the order is all Kahn's work.
        for id in (1..=n).rev() {
            plan.jobs.push(job("account", id, (id > 1).then_some(id - 1), None));
        }
        plan.link(&tables, &HashMap::new());
        plan.order(&tables);
        assert_eq!(plan.jobs[0].depth, (n - 1) as usize);
        assert_eq!(plan.jobs[(n - 1) as usize].depth, 0);
        assert!(plan.jobs.iter().all(|j| j.deferred.is_empty()));
    }

    #[test]
    fn cycles_are_broken_by_a_later_update() {
        let tables = tables();
        let mut plan = Plan::default();
        plan.jobs.push(job("account", 1, Some(2), None));
        plan.jobs.push(job("account", 2, Some(1), None));
        plan.jobs.push(job("account", 3, Some(3), None)); // points at itself
        plan.jobs.push(job("account", 4, Some(4), Some("001D"))); // itself, already in Salesforce
        plan.link(&tables, &HashMap::new());
        plan.order(&tables);
        assert_eq!(plan.jobs[0].deferred, vec![("parent_id".to_string(), Some("2".to_string()))]);
        assert!(plan.jobs[0].links.is_empty());
        assert_eq!(plan.jobs[1].links.len(), 1);
        assert_eq!((plan.jobs[0].depth, plan.jobs[1].depth), (0, 1));
        assert_eq!(plan.jobs[2].deferred, vec![("parent_id".to_string(), Some("3".to_string()))]);
        assert_eq!(field(&plan.jobs[3], "ParentId"), Some(json!("001D")));
    }
}
