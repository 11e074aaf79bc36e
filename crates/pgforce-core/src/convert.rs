//! From trigger-log text to Salesforce JSON: each mapped column's hstore text (the column type's output format) becomes
//! the JSON Salesforce expects — booleans, numbers, dates, datetimes in UTC, NULL as null — and relationship columns
//! become references to the parent by its external id.

use crate::delivery::Values;
use crate::mapping::relationship_column;
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

/// Seconds since 1970-01-01 UTC as a SOQL datetime literal (`2026-12-02T18:00:00Z`).
pub fn soql_datetime(epoch_secs: i64) -> String {
    let (y, m, d) = civil(epoch_secs.div_euclid(86_400));
    let t = epoch_secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", t / 3600, t % 3600 / 60, t % 60)
}

/// A datetime as Salesforce prints it (`2026-12-02T18:00:00.000+0000`) or as pgforce sends it
/// (`2026-12-02T18:00:00.000Z`), normalised to pgforce's form; `None` for anything else.
pub fn salesforce_datetime(text: &str) -> Option<String> {
    if text.len() < 19 || text.as_bytes()[10] != b'T' {
        return None;
    }
    let spaced = text.replacen('T', " ", 1);
    match spaced.strip_suffix('Z') {
        Some(utc) => utc_datetime(utc, false),
        None => utc_datetime(&spaced, true),
    }
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
                record.insert(rel.lookup_field(), Value::Null);
            }
        },
        None => {
            record.insert(column.to_string(), field_value(kind, text));
        }
    }
}

/// The Salesforce record for the mapped columns among `values` (`attributes.type` first).
pub fn record_from(target: &Target, values: &Values) -> Map<String, Value> {
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
        assert_eq!(
            field_value(PgKind::TimestampTz, Some("2024-03-01 01:30:00.5+02")),
            json!("2024-02-29T23:30:00.500Z")
        );
        assert_eq!(
            field_value(PgKind::TimestampTz, Some("1999-12-31 20:00:00-05:30")),
            json!("2000-01-01T01:30:00.000Z")
        );
        assert_eq!(field_value(PgKind::Timestamp, Some("2024-01-01 00:00:00")), json!("2024-01-01T00:00:00.000Z"));
        assert_eq!(field_value(PgKind::TimestampTz, Some("infinity")), json!("infinity"));
    }

    #[test]
    fn datetimes_as_salesforce_prints_them_compare_with_what_was_sent() {
        assert_eq!(soql_datetime(0), "1970-01-01T00:00:00Z");
        assert_eq!(soql_datetime(1_764_698_400), "2025-12-02T18:00:00Z");
        let sent = field_value(PgKind::TimestampTz, Some("2024-03-01 01:30:00.5+02"));
        assert_eq!(salesforce_datetime(sent.as_str().unwrap()).as_deref(), Some("2024-02-29T23:30:00.500Z"));
        assert_eq!(salesforce_datetime("2024-02-29T23:30:00.500+0000").as_deref(), Some("2024-02-29T23:30:00.500Z"));
        assert_eq!(salesforce_datetime("2024-02-29"), None);
        assert_eq!(salesforce_datetime("Smith, 2024-02-29T23:30"), None);
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
}
