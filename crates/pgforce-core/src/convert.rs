//! From trigger-log text to Salesforce JSON: each mapped column's hstore text (the column type's output format) becomes
//! the JSON Salesforce expects — booleans, numbers, dates, datetimes in UTC, NULL as null — and relationship columns
//! become references to the parent by its external id.

use crate::mapping::relationship_column;
use crate::plan::{Values, Write, WriteKind};
use serde_json::{Map, Number, Value};

/// How a Postgres column's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgKind {
    Bool,
    Integer,
    Numeric,
    Date,
    Timestamp,
    TimestampTz,
    Text,
}

impl PgKind {
    /// From `pg_type.typname`.
    pub fn from_type_name(typname: &str) -> PgKind {
        match typname {
            "bool" => PgKind::Bool,
            "int2" | "int4" | "int8" => PgKind::Integer,
            "numeric" | "float4" | "float8" | "money" => PgKind::Numeric,
            "date" => PgKind::Date,
            "timestamp" => PgKind::Timestamp,
            "timestamptz" => PgKind::TimestampTz,
            _ => PgKind::Text,
        }
    }
}

/// A mapping as the worker needs it: the sObject, the upsert key, and the columns sent with their kinds.
#[derive(Debug, Clone)]
pub struct Target {
    pub sobject: String,
    pub upsert_field: Option<String>,
    pub columns: Vec<(String, PgKind)>,
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
}

/// A value as Salesforce JSON.
pub fn field_value(kind: PgKind, text: Option<&str>) -> Value {
    let Some(t) = text else { return Value::Null };
    match kind {
        PgKind::Bool => match t {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            other => Value::String(other.to_string()),
        },
        PgKind::Integer => t.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(t.to_string())),
        PgKind::Numeric => t
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(t.to_string())),
        PgKind::Date | PgKind::Text => Value::String(t.to_string()),
        PgKind::Timestamp => Value::String(utc_datetime(t, false).unwrap_or_else(|| t.to_string())),
        PgKind::TimestampTz => Value::String(utc_datetime(t, true).unwrap_or_else(|| t.to_string())),
    }
}

/// `2024-03-01 01:30:00.5+02` (Postgres ISO output) → `2024-03-01T01:30:00.500Z`. A timestamp without time zone
/// is taken as UTC. `None` for values that are not plain dates in that format (infinity, BC dates).
pub fn utc_datetime(text: &str, has_zone: bool) -> Option<String> {
    let num = |s: &str| -> Option<i64> { s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten() };
    let (date, rest) = text.split_once(' ')?;
    let mut parts = date.split('-');
    let (y, m, d) = (num(parts.next()?)?, num(parts.next()?)?, num(parts.next()?)?);
    let clock_end = rest.find(['+', '-']).filter(|_| has_zone).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(clock_end);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = hms.split(':');
    let (h, mi, s) = (num(hms.next()?)?, num(hms.next()?)?, num(hms.next()?)?);
    let millis = if frac.is_empty() { 0 } else { num(&format!("{:0<3}", &frac[..frac.len().min(3)]))? };
    let offset_secs = if zone.is_empty() {
        0
    } else {
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let mut z = zone[1..].split(':');
        let zh = num(z.next()?)?;
        let zm = z.next().map(num).unwrap_or(Some(0))?;
        let zs = z.next().map(num).unwrap_or(Some(0))?;
        sign * (zh * 3600 + zm * 60 + zs)
    };
    let days = epoch_days(y, m, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    Some(format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", t / 3600, t % 3600 / 60, t % 60))
}

/// Days from 1970-01-01 (proleptic Gregorian), by counting from March so leap days come last.
fn epoch_days(y: i64, m: i64, d: i64) -> i64 {
    let (y, m) = if m <= 2 { (y - 1, m + 12) } else { (y, m) };
    365 * y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400) + (153 * (m - 3) + 2) / 5 + d - 719_469
}

fn civil(days: i64) -> (i64, i64, i64) {
    // Inverse of epoch_days: estimate the year, then correct it.
    let mut y = (days as f64 / 365.2425).floor() as i64 + 1970;
    while epoch_days(y, 1, 1) > days {
        y -= 1;
    }
    while epoch_days(y + 1, 1, 1) <= days {
        y += 1;
    }
    let mut m = 12;
    while epoch_days(y, m, 1) > days {
        m -= 1;
    }
    (y, m, days - epoch_days(y, m, 1) + 1)
}

/// Puts one column into a Salesforce record: a plain field, or a parent reference for a relationship column
/// (`account__r__external_id__c` → `"account__r": {"external_id__c": …}`; a NULL clears the lookup instead).
fn put(record: &mut Map<String, Value>, column: &str, kind: PgKind, text: Option<&str>) {
    match relationship_column(column) {
        Some(rel) => match text {
            Some(_) => {
                let mut parent = Map::new();
                parent.insert(rel.external_id_field.clone(), field_value(kind, text));
                record.insert(rel.relationship.clone(), Value::Object(parent));
            }
            None => {
                let lookup = match rel.relationship.strip_suffix("__r") {
                    Some(base) => format!("{base}__c"),
                    None => format!("{}id", rel.relationship),
                };
                record.insert(lookup, Value::Null);
            }
        },
        None => {
            record.insert(column.to_string(), field_value(kind, text));
        }
    }
}

fn record_from(target: &Target, values: &Values) -> Map<String, Value> {
    let mut record = Map::new();
    let mut attributes = Map::new();
    attributes.insert("type".into(), Value::String(target.sobject.clone()));
    record.insert("attributes".into(), Value::Object(attributes));
    for (column, kind) in &target.columns {
        if let Some(v) = values.get(column) {
            put(&mut record, column, *kind, v.as_deref());
        }
    }
    record
}

/// Decides the call for one write: upsert by the mapping's external id when it has one and the row carries a
/// value, otherwise create/update/delete by Salesforce id. Under Merged writes an update of a record that has no
/// Salesforce id yet (its insert failed) is sent as an insert of the whole row, as Heroku Connect does; under
/// Ordered writes it fails with Salesforce's "Id not specified in an update call".
pub fn operation(target: &Target, write: &Write, merged: bool) -> Operation {
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
            let mut record = record_from(target, &write.values);
            let sent_fields = record.len() - 1;
            if write.kind == WriteKind::Update && sent_fields == 0 {
                return Operation::Skip;
            }
            if let Some((field, value)) = key {
                let kind = target.columns.iter().find(|(c, _)| c == &field).map_or(PgKind::Text, |(_, k)| *k);
                record.insert(field, field_value(kind, Some(&value)));
                return Operation::Upsert(record);
            }
            match (write.kind.clone(), sfid) {
                (WriteKind::Insert, _) => Operation::Create(record),
                (_, Some(id)) => {
                    record.insert("Id".into(), Value::String(id));
                    Operation::Update(record)
                }
                (_, None) if merged => Operation::Create(record_from(target, &write.row)),
                (_, None) => Operation::Refuse("Id not specified in an update call: the record has no sfid yet (its insert has not succeeded)".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_convert_by_type() {
        assert_eq!(field_value(PgKind::Bool, Some("t")), json!(true));
        assert_eq!(field_value(PgKind::Integer, Some("-42")), json!(-42));
        assert_eq!(field_value(PgKind::Numeric, Some("12.50")), json!(12.5));
        assert_eq!(field_value(PgKind::Numeric, Some("NaN")), json!("NaN"));
        assert_eq!(field_value(PgKind::Date, Some("2024-02-29")), json!("2024-02-29"));
        assert_eq!(field_value(PgKind::Text, None), Value::Null);
        assert_eq!(field_value(PgKind::TimestampTz, Some("2024-03-01 01:30:00.5+02")), json!("2024-02-29T23:30:00.500Z"));
        assert_eq!(field_value(PgKind::TimestampTz, Some("1999-12-31 20:00:00-05:30")), json!("2000-01-01T01:30:00.000Z"));
        assert_eq!(field_value(PgKind::Timestamp, Some("2024-01-01 00:00:00")), json!("2024-01-01T00:00:00.000Z"));
        assert_eq!(field_value(PgKind::TimestampTz, Some("infinity")), json!("infinity"));
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-800_000, -1, 0, 59, 60, 365, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil(days);
            assert_eq!(epoch_days(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
    }

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

    fn write(kind: WriteKind, values: &[(&str, Option<&str>)], row: &[(&str, Option<&str>)], sfid: Option<&str>) -> Write {
        let v = |p: &[(&str, Option<&str>)]| p.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect();
        Write { record_id: 1, kind, values: v(values), row: v(row), sfid: sfid.map(str::to_string), log_ids: vec![1], attempts: 0 }
    }

    #[test]
    fn operations_follow_the_mapping() {
        let ins = write(WriteKind::Insert, &[("lastname", Some("A")), ("external_id__c", Some("E1")), ("account__r__external_id__c", Some("P1")), ("id", Some("1")), ("hasoptedoutofemail", Some("f"))], &[], None);
        let Operation::Upsert(r) = operation(&target(Some("external_id__c")), &ins, true) else { panic!("upsert") };
        assert_eq!(Value::Object(r), json!({"attributes": {"type": "Contact"}, "lastname": "A", "external_id__c": "E1", "account__r": {"external_id__c": "P1"}, "hasoptedoutofemail": false}));
        assert!(matches!(operation(&target(None), &ins, true), Operation::Create(_)));

        let upd = write(WriteKind::Update, &[("lastname", Some("B")), ("account__r__external_id__c", None)], &[("external_id__c", Some("E1"))], Some("003X"));
        let Operation::Upsert(r) = operation(&target(Some("external_id__c")), &upd, true) else { panic!("upsert") };
        assert_eq!(r.get("external_id__c"), Some(&json!("E1")), "the key comes from the whole row");
        assert_eq!(r.get("account__c"), Some(&Value::Null));
        let Operation::Update(r) = operation(&target(None), &upd, true) else { panic!("update") };
        assert_eq!(r.get("Id"), Some(&json!("003X")));
        let orphan = write(WriteKind::Update, &[("lastname", Some("B"))], &[("lastname", Some("B")), ("hasoptedoutofemail", Some("t"))], None);
        assert!(matches!(operation(&target(None), &orphan, false), Operation::Refuse(m) if m.starts_with("Id not specified")));
        let Operation::Create(r) = operation(&target(None), &orphan, true) else { panic!("merged writes insert the whole row") };
        assert_eq!(r.get("hasoptedoutofemail"), Some(&json!(true)));
        let unmapped = write(WriteKind::Update, &[("some_local_column", Some("x"))], &[], Some("003X"));
        assert_eq!(operation(&target(None), &unmapped, true), Operation::Skip);
        let del = write(WriteKind::Delete, &[], &[("sfid", Some("003Y"))], None);
        assert_eq!(operation(&target(None), &del, true), Operation::Delete("003Y".into()));
    }
}
