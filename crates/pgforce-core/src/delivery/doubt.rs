//! Writes in doubt: a create whose request got no answer (a timeout, a lost connection, a worker stopped between
//! sending and recording) may be in Salesforce already, and sending it again would create a second record. Before
//! it goes again the worker searches for it, and adopts what it finds:
//!
//! * one SOQL query per sObject: records created by the integration user (`CreatedById`, from the token response)
//!   since `CLOCK_MARGIN_S` before the first unanswered attempt was claimed, oldest first;
//! * a record matches a write when every mapped field an unanswered attempt sent (relationship references aside)
//!   has the same value in Salesforce (text exactly, an empty text as null, numbers numerically, datetimes as
//!   instants), or, on a mapping with an upsert field, when it has the key an attempt carried (an upsert of an
//!   update carries only the changed fields); several unanswered attempts with different values each count;
//! * a record that a row of the mapped table already has as its `sfid`, or that an earlier write of the same search
//!   adopted, is never adopted again.
//!
//! A match turns the create (or an upsert by a key changed since the attempt) into an update of the found record
//! (its latest values win) and a delete of a record
//! whose insert was in doubt into a delete of the found record; no match sends the create as planned (or finds
//! nothing to delete). The limits: a Salesforce automation that changes a mapped field as the record is created
//! hides it from the search (a duplicate is then possible); an identical record created by the same user in that
//! window that no row claims is adopted.
//!
//! This module builds the queries and decides the matches; the worker runs them.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use super::merge::WriteKind;
use super::plan::{Operation, Plan};
use super::{Table, Values};
use crate::convert::{record_from, salesforce_datetime, soql_datetime};
use crate::mapping::Target;

/// Salesforce's clock and the database's may differ: the search starts this much before the first attempt.
pub const CLOCK_MARGIN_S: i64 = 120;
/// A search that finds more records than this is not trusted (the write waits for another attempt).
pub const MAX_CANDIDATES: usize = 50_000;

/// The writes in doubt of one sObject, looked up with one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub sobject: String,
    pub soql: String,
    /// Each write's job index and the records its unanswered attempts may have created, as sent.
    pub jobs: Vec<(usize, Vec<Map<String, Value>>)>,
}

/// Whether a job must be looked up before it is sent: its write is in doubt, it has no Salesforce id, and it
/// would create a record, delete one whose insert is in doubt, or upsert by a key other than the one an unanswered
/// attempt used.
fn needs_search(plan: &Plan, i: usize, tables: &HashMap<String, Table>) -> bool {
    let job = &plan.jobs[i];
    let w = &job.write;
    let Some(doubt) = w.in_doubt.as_ref().filter(|d| !d.sent.is_empty()) else { return false };
    w.sfid.is_none()
        && match &job.op {
            Operation::Create(_) => true,
            Operation::Upsert(_) => tables.get(&job.table).is_some_and(|t| rekeyed(w, doubt, t)),
            _ => w.kind == WriteKind::Delete,
        }
}

/// Whether an upsert's key (the upsert field's value) is not the one every unanswered attempt sent. Repeating an
/// upsert by the same key finds the record the attempt may have created; by a key changed since (or when the attempt
/// had none and created the record) it would create a second one.
fn rekeyed(w: &super::merge::Write, doubt: &super::merge::InDoubt, t: &Table) -> bool {
    let Some(field) = t.target.upsert_field.as_ref() else { return false };
    let key = |row: &Values| row.get(field).cloned().flatten();
    let now = key(&w.values).or_else(|| key(&w.row));
    doubt.sent.iter().any(|sent| key(sent) != now)
}

/// The records a write's unanswered attempts may have created, as they would have been sent: each row whole, then,
/// when the mapping has an upsert field, each row's key alone. An upsert of an update carries only the changed fields
/// and the key, and Salesforce holds one record per key: the key finds it whatever the row's other fields say.
fn candidates(target: &Target, sent: &[Values]) -> Vec<Map<String, Value>> {
    let whole = sent.iter().filter_map(|row| record_from(target, row).ok());
    let keys = target.upsert_field.iter().flat_map(|field| {
        sent.iter().filter_map(move |row| {
            let value = row.get(field).cloned().flatten()?;
            record_from(target, &Values::from([(field.clone(), Some(value))])).ok()
        })
    });
    let mut out: Vec<Map<String, Value>> = Vec::new();
    for record in whole.chain(keys) {
        if !out.contains(&record) {
            out.push(record);
        }
    }
    out
}

/// Per sObject: the earliest attempt in doubt (seconds since 1970) and, per job, the records it may have created.
type InDoubtByObject = BTreeMap<String, (i64, Vec<(usize, Vec<Map<String, Value>>)>)>;

/// The searches a plan needs (none when no write is in doubt). `user`: the integration user's id, when known.
pub fn searches(plan: &Plan, tables: &HashMap<String, Table>, user: Option<&str>) -> Vec<Search> {
    let mut by_object: InDoubtByObject = BTreeMap::new();
    for i in (0..plan.jobs.len()).filter(|i| needs_search(plan, *i, tables)) {
        let job = &plan.jobs[i];
        let (Some(t), Some(doubt)) = (tables.get(&job.table), job.write.in_doubt.as_ref()) else { continue };
        let sent = candidates(&t.target, &doubt.sent);
        let entry = by_object.entry(t.target.sobject.clone()).or_insert((doubt.since, Vec::new()));
        entry.0 = entry.0.min(doubt.since);
        entry.1.push((i, sent));
    }
    by_object
        .into_iter()
        .map(|(sobject, (since, jobs))| {
            let mut fields: Vec<String> = Vec::new();
            for (key, _) in jobs.iter().flat_map(|(_, sent)| sent.iter()).flat_map(comparable) {
                if !fields.iter().any(|f| f.eq_ignore_ascii_case(key)) {
                    fields.push(key.clone());
                }
            }
            let select = std::iter::once("Id").chain(fields.iter().map(String::as_str)).collect::<Vec<_>>().join(", ");
            let by = user.map(|u| format!("CreatedById = '{}' AND ", soql_quote(u))).unwrap_or_default();
            let from = soql_datetime(since - CLOCK_MARGIN_S);
            let soql =
                format!("SELECT {select} FROM {sobject} WHERE {by}CreatedDate >= {from} ORDER BY CreatedDate, Id");
            Search { sobject, soql, jobs }
        })
        .collect()
}

/// Decides which found record (if any) each job of a search adopts. `found`: the query's records, oldest first;
/// `taken`: ids rows of the mapped tables already have. Jobs are served in log order, each record at most once.
pub fn matches(search: &Search, found: &[Value], taken: &HashSet<String>) -> HashMap<usize, Option<String>> {
    let records: Vec<(&str, &Map<String, Value>)> = found
        .iter()
        .filter_map(|r| Some((r.get("Id")?.as_str()?, r.as_object()?)))
        .filter(|(id, _)| !taken.contains(*id))
        .collect();
    // Candidates by the value of one field (the first a write compares), so each write looks at few records.
    let mut index: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::new();
    let mut used: HashSet<usize> = HashSet::new();
    let mut out = HashMap::new();
    for (job, sent) in &search.jobs {
        let mut hit = None;
        for s in sent {
            let Some((field, value)) = comparable(s).next() else { continue };
            let field = field.to_ascii_lowercase();
            let by_value = index.entry(field.clone()).or_insert_with(|| {
                let mut m: HashMap<String, Vec<usize>> = HashMap::new();
                for (i, (_, r)) in records.iter().enumerate() {
                    let v = r.iter().find(|(k, _)| k.eq_ignore_ascii_case(&field)).map_or(&Value::Null, |(_, v)| v);
                    m.entry(key(v)).or_default().push(i);
                }
                m
            });
            let candidates = by_value.get(&key(value)).map(Vec::as_slice).unwrap_or_default();
            hit = candidates.iter().copied().find(|i| !used.contains(i) && same_record(s, records[*i].1));
            if hit.is_some() {
                break;
            }
        }
        if let Some(i) = hit {
            used.insert(i);
        }
        out.insert(*job, hit.map(|i| records[i].0.to_string()));
    }
    out
}

/// A value reduced so that values `same_value` holds equal share it.
fn key(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) if s.is_empty() => String::new(),
        Value::String(s) => salesforce_datetime(s)
            .or_else(|| s.trim().parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| format!("{f:e}")))
            .unwrap_or_else(|| s.clone()),
        Value::Number(n) => n.as_f64().map(|f| format!("{f:e}")).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

/// The fields of a sent record that can be compared with what Salesforce returns: not `attributes`, not a
/// reference to a parent by external id (Salesforce returns the parent's id instead).
fn comparable(record: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    record.iter().filter(|(k, v)| k.as_str() != "attributes" && !v.is_object())
}

fn same_record(sent: &Map<String, Value>, found: &Map<String, Value>) -> bool {
    comparable(sent).all(|(key, value)| {
        found.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).is_some_and(|(_, v)| same_value(value, v))
    })
}

/// Whether a value as sent and as Salesforce returns it are the same.
fn same_value(sent: &Value, found: &Value) -> bool {
    let blank = |v: &Value| v.is_null() || v.as_str() == Some("");
    if blank(sent) || blank(found) {
        return blank(sent) && blank(found);
    }
    let number = |v: &Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()));
    match (sent, found) {
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Number(_), _) | (_, Value::Number(_)) => match (number(sent), number(found)) {
            (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
            _ => false,
        },
        (Value::String(a), Value::String(b)) => {
            a == b || salesforce_datetime(a).is_some_and(|x| salesforce_datetime(b).is_some_and(|y| x == y))
        }
        _ => sent == found,
    }
}

/// A SOQL string literal's content.
fn soql_quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::merge::{InDoubt, Write};
    use crate::delivery::plan::Job;
    use crate::delivery::Values;
    use crate::mapping::{PgKind, Target};
    use serde_json::json;

    fn tables() -> HashMap<String, Table> {
        let target = Target {
            sobject: "Contact".into(),
            upsert_field: None,
            columns: vec![
                ("lastname".into(), PgKind::Text),
                ("email".into(), PgKind::Text),
                ("score__c".into(), PgKind::Numeric),
                ("seen__c".into(), PgKind::TimestampTz),
                ("account__r__external_id__c".into(), PgKind::Text),
            ],
        };
        HashMap::from([(
            "contact".to_string(),
            Table { qualified: "public.contact".into(), target, links: Vec::new() },
        )])
    }

    fn row(pairs: &[(&str, Option<&str>)]) -> Values {
        pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
    }

    fn job(record_id: i64, kind: WriteKind, sent: Vec<Values>, op: Operation) -> Job {
        let in_doubt = (!sent.is_empty()).then(|| InDoubt { since: 1_764_698_400, sent: sent.clone() });
        let write = Write {
            record_id,
            kind,
            values: sent.last().cloned().unwrap_or_default(),
            row: sent.last().cloned().unwrap_or_default(),
            sfid: None,
            log_ids: vec![record_id],
            attempts: 1,
            in_doubt,
            retried: false,
            deleted_later: false,
        };
        Job { op, ..Job::new("contact".into(), write) }
    }

    fn smith(score: &str) -> Values {
        row(&[
            ("lastname", Some("Smith")),
            ("email", None),
            ("score__c", Some(score)),
            ("seen__c", Some("2024-03-01 01:30:00+02")),
            ("account__r__external_id__c", Some("A-1")),
        ])
    }

    #[test]
    fn one_query_per_object_from_the_first_attempt_less_the_margin() {
        let plan = Plan {
            jobs: vec![
                job(1, WriteKind::Insert, vec![smith("1.5")], Operation::Create(Map::new())),
                job(2, WriteKind::Insert, vec![], Operation::Create(Map::new())),
                job(3, WriteKind::Delete, vec![smith("2")], Operation::Refuse("no sfid".into())),
            ],
            nothing: vec![],
            ..Plan::default()
        };
        let s = searches(&plan, &tables(), Some("005Dn00000IntgUAAA"));
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0].soql,
            "SELECT Id, lastname, email, score__c, seen__c FROM Contact WHERE CreatedById = '005Dn00000IntgUAAA' AND CreatedDate >= 2025-12-02T17:58:00Z ORDER BY CreatedDate, Id"
        );
        assert_eq!(s[0].jobs.iter().map(|(j, _)| *j).collect::<Vec<_>>(), [0, 2], "only writes in doubt");
        assert!(searches(&plan, &tables(), None)[0].soql.contains("WHERE CreatedDate >= "), "no user: no filter");
    }

    #[test]
    fn records_match_by_every_sent_value_and_are_adopted_once() {
        let plan = Plan {
            jobs: vec![
                job(1, WriteKind::Insert, vec![smith("1.5")], Operation::Create(Map::new())),
                job(2, WriteKind::Insert, vec![smith("1.5")], Operation::Create(Map::new())),
                job(3, WriteKind::Insert, vec![smith("7"), smith("8")], Operation::Create(Map::new())),
                job(4, WriteKind::Insert, vec![smith("9")], Operation::Create(Map::new())),
            ],
            nothing: vec![],
            ..Plan::default()
        };
        let search = searches(&plan, &tables(), None).remove(0);
        let found = |id: &str, score: Value, email: Value| {
            json!({"attributes": {"type": "Contact"}, "Id": id, "LastName": "Smith", "Email": email, "Score__c": score,
                   "Seen__c": "2024-02-29T23:30:00.000+0000"})
        };
        let records = vec![
            found("003A", json!(1.5), Value::Null),
            found("003B", json!(1.5), json!("")),
            found("003C", json!(8), Value::Null),
            found("003D", json!(9), json!("x@example.com")),
            found("003E", json!(1.5), Value::Null),
        ];
        let taken = HashSet::from(["003A".to_string()]);
        let m = matches(&search, &records, &taken);
        assert_eq!(m[&0].as_deref(), Some("003B"), "003A belongs to another row already");
        assert_eq!(m[&1].as_deref(), Some("003E"), "003B was adopted by the first write");
        assert_eq!(m[&2].as_deref(), Some("003C"), "any of the unanswered attempts' values");
        assert_eq!(m[&3], None, "a different email is another record");
    }

    #[test]
    fn an_upsert_in_doubt_is_looked_up_when_its_key_changed_since() {
        let mut tables = tables();
        if let Some(t) = tables.get_mut("contact") {
            t.target.upsert_field = Some("email".into());
        }
        let keyed = |email: Option<&str>| {
            let mut r = smith("1");
            r.insert("email".into(), email.map(str::to_string));
            r
        };
        let mut rekeyed =
            job(1, WriteKind::Insert, vec![keyed(Some("old@example.com"))], Operation::Upsert(Map::new()));
        rekeyed.write.values = keyed(Some("new@example.com"));
        let mut unkeyed = job(2, WriteKind::Insert, vec![keyed(None)], Operation::Upsert(Map::new()));
        unkeyed.write.values = keyed(Some("late@example.com"));
        let same = job(3, WriteKind::Insert, vec![keyed(Some("same@example.com"))], Operation::Upsert(Map::new()));
        let mut plan = Plan { jobs: vec![rekeyed, unkeyed, same], nothing: vec![], ..Plan::default() };
        let s = searches(&plan, &tables, None);
        assert_eq!(
            s[0].jobs.iter().map(|(j, _)| *j).collect::<Vec<_>>(),
            [0, 1],
            "an upsert by the key its attempt used finds that record by itself"
        );
        // Found: the record the attempt created is updated by its id, the new key an ordinary field.
        plan.jobs[0].op = Operation::Upsert(Map::from_iter([("Email".to_string(), json!("new@example.com"))]));
        plan.settle(0, Some("003OLD".into()));
        let Operation::Update(record) = &plan.jobs[0].op else { panic!("an update: {:?}", plan.jobs[0].op) };
        assert_eq!(record["Id"], "003OLD");
        assert_eq!(record["Email"], "new@example.com");
    }

    #[test]
    fn values_compare_as_salesforce_returns_them() {
        assert!(same_value(&json!("2024-02-29T23:30:00.500Z"), &json!("2024-02-29T23:30:00.500+0000")));
        assert!(!same_value(&json!("2024-02-29T23:30:00.500Z"), &json!("2024-02-29T23:30:01.500+0000")));
        assert!(same_value(&json!(12.5), &json!("12.50")));
        assert!(same_value(&json!(""), &Value::Null));
        assert!(!same_value(&json!("a"), &Value::Null));
        assert!(same_value(&json!(true), &json!(true)));
        assert!(!same_value(&json!("Smith"), &json!("smith")));
    }

    #[test]
    fn an_upsert_of_changed_fields_is_found_by_its_key() {
        let mut tables = tables();
        if let Some(t) = tables.get_mut("contact") {
            t.target.upsert_field = Some("email".into());
        }
        // The row has a score Salesforce never got: the attempt (an update's upsert) carried the name and the key.
        let sent = row(&[("lastname", Some("Smith")), ("score__c", Some("3")), ("email", Some("k@example.com"))]);
        let plan = Plan {
            jobs: vec![
                job(1, WriteKind::Delete, vec![sent.clone()], Operation::Refuse("no sfid".into())),
                job(2, WriteKind::Delete, vec![row(&[("lastname", Some("Other"))])], Operation::Refuse("".into())),
            ],
            nothing: vec![],
            ..Plan::default()
        };
        let search = searches(&plan, &tables, None).remove(0);
        let records = vec![
            json!({"Id": "003X", "LastName": "Smith", "Email": "x@example.com", "Score__c": 3}),
            json!({"Id": "003K", "LastName": "Smith", "Email": "k@example.com", "Score__c": null}),
        ];
        let m = matches(&search, &records, &HashSet::new());
        assert_eq!(m[&0].as_deref(), Some("003K"), "the record with its key, not one with its other values");
        assert_eq!(m[&1], None, "no key sent: the whole row must match");
    }
}
