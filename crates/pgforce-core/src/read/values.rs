//! Values from Salesforce as the text of their Postgres columns (the inverse of `convert`): numbers digit for digit,
//! datetimes in UTC, booleans, multi-select picklists as arrays. The text goes through the column's own input
//! function, so what does not fit (too long, out of range) is refused there, for that record alone.

use serde_json::Value;

use crate::convert::{epoch_days, salesforce_datetime};
use crate::mapping::PgKind;

/// A Salesforce datetime (`2024-01-02T03:04:05.000+0000`, or with `Z`) as seconds since 1970-01-01 UTC.
pub fn epoch_seconds(text: &str) -> Option<i64> {
    let utc = salesforce_datetime(text)?; // 2024-01-02T03:04:05.000Z
    let n = |r: std::ops::Range<usize>| utc.get(r).and_then(|s| s.parse::<i64>().ok());
    let days = epoch_days(n(0..4)?, n(5..7)?, n(8..10)?);
    Some(days * 86_400 + n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?)
}

/// The text of a column of `kind` for a field's value; `None` for NULL. An error says why the value cannot be that
/// column's (it fails the record, never the read), without the value itself: it goes to the log.
pub fn column_text(kind: PgKind, value: &Value) -> Result<Option<String>, String> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => match kind {
            PgKind::Bool | PgKind::Text => b.to_string(),
            _ => return Err(format!("a checkbox cannot be a {kind:?} column")),
        },
        Value::Number(n) => number(kind, &n.to_string())?,
        Value::String(s) => string(kind, s)?,
        Value::Array(_) | Value::Object(_) => match kind {
            // A compound field (address, location) read whole: its JSON.
            PgKind::Text => value.to_string(),
            _ => return Err(format!("a compound value cannot be a {kind:?} column")),
        },
    };
    Ok(Some(text))
}

/// A JSON number's digits (exact: the client keeps them as sent) for a column of `kind`.
fn number(kind: PgKind, digits: &str) -> Result<String, String> {
    match kind {
        PgKind::Numeric | PgKind::Money | PgKind::Text => Ok(digits.to_string()),
        // Salesforce prints whole numbers of a scale-0 field as `12` or `12.0`.
        PgKind::Integer => match digits.split_once('.') {
            None if !digits.contains(['e', 'E']) => Ok(digits.to_string()),
            Some((whole, fraction)) if fraction.bytes().all(|b| b == b'0') && !whole.is_empty() => Ok(whole.into()),
            _ => Err("the number is not a whole number".to_string()),
        },
        _ => Err(format!("a number cannot be a {kind:?} column")),
    }
}

fn string(kind: PgKind, s: &str) -> Result<String, String> {
    match kind {
        PgKind::Timestamp | PgKind::TimestampTz => {
            let utc = salesforce_datetime(s).ok_or("the value is not a datetime")?;
            // 2024-01-02T03:04:05.000Z → 2024-01-02 03:04:05.000 (UTC), with +00 where the column keeps a zone.
            let plain = format!("{} {}", &utc[..10], &utc[11..23]);
            Ok(if kind == PgKind::TimestampTz { format!("{plain}+00") } else { plain })
        }
        PgKind::Time => {
            // 03:04:05.000Z
            let clock = s.strip_suffix('Z').unwrap_or(s);
            let ok = clock.len() >= 8 && clock.as_bytes()[2] == b':' && clock.as_bytes()[5] == b':';
            ok.then(|| clock.to_string()).ok_or_else(|| "the value is not a time".to_string())
        }
        // A multi-select picklist: values joined with `;`, as an array literal (each element quoted).
        PgKind::TextArray => {
            let items: Vec<String> = s
                .split(';')
                .filter(|v| !v.is_empty())
                .map(|v| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            Ok(format!("{{{}}}", items.join(",")))
        }
        // A whole number as Bulk's CSV prints it (`12.0`).
        PgKind::Integer if s.parse::<f64>().is_ok() => number(kind, s),
        // Dates, text, and numbers or booleans Salesforce sent as text go as they are; the column's input function
        // refuses what is not its type.
        _ => Ok(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn datetimes_are_read_in_utc() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00.000+0000"), Some(0));
        assert_eq!(epoch_seconds("2024-01-02T03:04:05.000+0000"), Some(1_704_164_645));
        assert_eq!(epoch_seconds("2024-01-02T05:04:05.000+0200"), Some(1_704_164_645));
        assert_eq!(epoch_seconds("2024-01-02T03:04:05.000Z"), Some(1_704_164_645));
        assert_eq!(epoch_seconds("2024-01-02"), None);
        let ts = |v: Value, k| column_text(k, &v).unwrap();
        assert_eq!(
            ts(json!("2024-01-02T05:04:05.250+0200"), PgKind::Timestamp).as_deref(),
            Some("2024-01-02 03:04:05.250")
        );
        assert_eq!(
            ts(json!("2024-01-02T03:04:05.000+0000"), PgKind::TimestampTz).as_deref(),
            Some("2024-01-02 03:04:05.000+00")
        );
        assert_eq!(ts(json!("2024-01-02"), PgKind::Date).as_deref(), Some("2024-01-02"));
        assert_eq!(ts(json!("13:30:00.000Z"), PgKind::Time).as_deref(), Some("13:30:00.000"));
        assert!(column_text(PgKind::Timestamp, &json!("yesterday")).is_err());
    }

    #[test]
    fn numbers_keep_every_digit_and_fit_their_column() {
        let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        let text = |k, t: &str| column_text(k, &parse(t));
        assert_eq!(text(PgKind::Numeric, "12345678901234567.891").unwrap().as_deref(), Some("12345678901234567.891"));
        assert_eq!(text(PgKind::Numeric, "0.1").unwrap().as_deref(), Some("0.1"));
        assert_eq!(text(PgKind::Integer, "12.0").unwrap().as_deref(), Some("12"));
        assert_eq!(text(PgKind::Integer, "-7").unwrap().as_deref(), Some("-7"));
        assert!(text(PgKind::Integer, "12.5").unwrap_err().contains("whole"));
        assert_eq!(text(PgKind::Text, "42").unwrap().as_deref(), Some("42"));
        assert!(text(PgKind::Date, "42").is_err());
    }

    #[test]
    fn other_values_read_as_their_columns_expect() {
        assert_eq!(column_text(PgKind::Text, &Value::Null).unwrap(), None);
        assert_eq!(column_text(PgKind::Bool, &json!(true)).unwrap().as_deref(), Some("true"));
        assert!(column_text(PgKind::Integer, &json!(false)).is_err());
        // Text stays the text it is: N/A, null, leading zeros (never guessed into NULL or a number).
        for s in ["N/A", "null", "0012", ""] {
            assert_eq!(column_text(PgKind::Text, &json!(s)).unwrap().as_deref(), Some(s));
        }
        assert_eq!(
            column_text(PgKind::TextArray, &json!("Red;Blue \"dark\"")).unwrap().as_deref(),
            Some("{\"Red\",\"Blue \\\"dark\\\"\"}")
        );
        assert_eq!(column_text(PgKind::TextArray, &json!("")).unwrap().as_deref(), Some("{}"));
        let address = json!({"city": "Paris", "street": null});
        assert_eq!(column_text(PgKind::Text, &address).unwrap().as_deref(), Some(address.to_string().as_str()));
    }
}
