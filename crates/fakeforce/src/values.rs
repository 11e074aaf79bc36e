//! Field values as Salesforce accepts and returns them: type checks and coercions on input, dates and datetimes in
//! Salesforce's canonical text (`2024-05-01`, `2024-05-01T12:00:00.000+0000`).

use crate::model::{FieldDef, FieldType};
use serde_json::{Number, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why an input value was refused: `Parse` fails the whole request (as Salesforce's JSON deserializer does),
/// `Record` fails only that record.
#[derive(Debug)]
pub enum BadValue {
    Parse(String),
    TooLong {
        max: usize,
    },
    InvalidEmail,
    /// More digits before the point than the number field holds (`NUMBER_OUTSIDE_VALID_RANGE`).
    OutOfRange,
}

/// Checks `value` against the field's type and returns the value to store.
pub fn coerce(field: &FieldDef, value: &Value) -> Result<Value, BadValue> {
    use FieldType::*;
    if value.is_null() {
        return Ok(Value::Null);
    }
    let parse_err = |ty: &str| {
        BadValue::Parse(format!(
            "Cannot deserialize instance of {ty} from {} value {} or request may be missing a required field",
            json_token(value),
            value
        ))
    };
    match field.kind {
        String | Textarea | Email | Phone | Url | Picklist | Id | Reference => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(parse_err("string")),
            };
            if let Some(max) = field.length {
                if text.chars().count() > max {
                    return Err(BadValue::TooLong { max });
                }
            }
            if field.kind == Email && !text.is_empty() && !looks_like_email(&text) {
                return Err(BadValue::InvalidEmail);
            }
            Ok(Value::String(text))
        }
        Boolean => match value {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(parse_err("boolean")),
        },
        Int => match value {
            Value::Number(n) if n.is_i64() => Ok(value.clone()),
            Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                Ok(Value::Number(Number::from(n.as_f64().unwrap_or_default() as i64)))
            }
            Value::String(s) => s.trim().parse::<i64>().map(|i| Value::Number(i.into())).map_err(|_| parse_err("int")),
            _ => Err(parse_err("int")),
        },
        Double | Currency | Percent => {
            let number = match value {
                Value::Number(n) => n.to_string(),
                Value::String(s) if decimal_digits(s.trim()).is_some() => s.trim().to_string(),
                Value::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .and_then(Number::from_f64)
                    .map(|n| n.to_string())
                    .ok_or_else(|| parse_err("double"))?,
                _ => return Err(parse_err("double")),
            };
            let (precision, scale) = field.number_limits().unwrap_or((18, 0));
            fit_number(&number, precision, scale).ok_or(BadValue::OutOfRange)
        }
        Date => match value {
            Value::String(s) => parse_date(s).map(|_| Value::String(s[..10].to_string())).ok_or_else(|| {
                BadValue::Parse(format!("Cannot deserialize value of type `date` from String \"{s}\": expected format yyyy-MM-dd"))
            }),
            _ => Err(parse_err("date")),
        },
        Datetime => match value {
            Value::String(s) => parse_datetime(s).map(|secs_ms| Value::String(format_datetime(secs_ms))).ok_or_else(|| {
                BadValue::Parse(format!(
                    "Cannot deserialize value of type `datetime` from String \"{s}\": expected format yyyy-MM-ddTHH:mm:ss.SSSZ"
                ))
            }),
            _ => Err(parse_err("datetime")),
        },
    }
}

/// A number as a field of `Number(precision, scale)` stores it: rounded half up to `scale` decimals, as Salesforce
/// rounds extra decimals; None when more than `precision - scale` digits remain before the point.
fn fit_number(text: &str, precision: u32, scale: u32) -> Option<Value> {
    let (negative, mut digits, mut point) = decimal_digits(text)?;
    if point < 1 {
        // At least one digit before the point: 1e-5 is 0.00001.
        digits.splice(0..0, std::iter::repeat_n(0, (1 - point) as usize));
        point = 1;
    }
    // `digits` with the decimal point after `point` of them; keep `scale` decimals.
    let keep = (point + scale as i64).max(0) as usize;
    let mut kept: Vec<u8> = digits.iter().take(keep).copied().collect();
    kept.resize(keep, 0);
    if digits.get(keep).is_some_and(|d| *d >= 5) {
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, 1);
                break;
            }
            i -= 1;
            if kept[i] == 9 {
                kept[i] = 0;
            } else {
                kept[i] += 1;
                break;
            }
        }
    }
    let int_len = kept.len() - scale as usize;
    let (int, frac) = kept.split_at(int_len);
    let int: String = int.iter().skip_while(|d| **d == 0).map(|d| char::from(b'0' + d)).collect();
    if int.len() > (precision - scale) as usize {
        return None;
    }
    let frac: String = frac.iter().map(|d| char::from(b'0' + d)).collect();
    let frac = frac.trim_end_matches('0');
    let zero = int.is_empty() && frac.is_empty();
    let mut out = String::new();
    if negative && !zero {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { &int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out.parse::<Number>().ok().map(Value::Number)
}

/// The digits of a JSON number and where its decimal point falls among them (which may be before the first or past
/// the last): `-12.5e1` is (true, [1, 2, 5], 3).
fn decimal_digits(text: &str) -> Option<(bool, Vec<u8>, i64)> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || exponent.abs() > 400 {
        return None;
    }
    let digits = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    Some((negative, digits, int.len() as i64 + exponent))
}

fn json_token(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER",
        Value::Bool(_) => "VALUE_BOOLEAN",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
        Value::Null => "VALUE_NULL",
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !s.contains(' ')
        }
        None => false,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn digits(s: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(range)?;
    if part.bytes().all(|c| c.is_ascii_digit()) {
        part.parse().ok()
    } else {
        None
    }
}

/// Days since the epoch of `yyyy-MM-dd` (only the first ten characters are read), if it is a real date.
pub fn parse_date(s: &str) -> Option<i64> {
    if s.len() < 10 || &s[4..5] != "-" || &s[7..8] != "-" {
        return None;
    }
    let (y, m, d) = (digits(s, 0..4)?, digits(s, 5..7)?, digits(s, 8..10)?);
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// Milliseconds since the epoch of an ISO 8601 datetime (`T` or space, optional fraction, `Z`/`±hh:mm`/`±hhmm`,
/// no zone meaning UTC).
pub fn parse_datetime(s: &str) -> Option<i64> {
    let days = parse_date(s)?;
    let rest = s.get(10..)?;
    if rest.is_empty() {
        return Some(days * 86_400_000);
    }
    let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
    let (h, mi, sec) = (digits(rest, 0..2)?, digits(rest, 3..5)?, digits(rest, 6..8)?);
    if &rest[2..3] != ":" || &rest[5..6] != ":" || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut tail = &rest[8..];
    let mut millis = 0;
    if let Some(frac) = tail.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &frac[..n.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        tail = &frac[n..];
    }
    let offset_minutes = match tail {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match &tail[..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let t = tail[1..].replace(':', "");
            if t.len() != 4 {
                return None;
            }
            sign * (digits(&t, 0..2)? * 60 + digits(&t, 2..4)?)
        }
    };
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) - offset_minutes * 60) * 1000 + millis)
}

/// Salesforce's datetime text: `2024-05-01T12:00:00.000+0000`.
pub fn format_datetime(epoch_ms: i64) -> String {
    let secs = epoch_ms.div_euclid(1000);
    let ms = epoch_ms.rem_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}+0000", t / 3600, t % 3600 / 60, t % 60)
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

pub fn now_datetime() -> String {
    format_datetime(now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_rounded_to_the_fields_scale_and_refused_beyond_its_range() {
        let fit = |t: &str, p, s| fit_number(t, p, s).map(|v| v.to_string());
        assert_eq!(fit("12.345", 16, 2).as_deref(), Some("12.35"), "half up");
        assert_eq!(fit("-12.345", 16, 2).as_deref(), Some("-12.35"), "half away from zero");
        assert_eq!(fit("12.344", 16, 2).as_deref(), Some("12.34"));
        assert_eq!(fit("99.995", 4, 2).as_deref(), None, "rounds up past the range");
        assert_eq!(fit("99.994", 4, 2).as_deref(), Some("99.99"));
        assert_eq!(fit("123456789012.345678", 18, 6).as_deref(), Some("123456789012.345678"), "exact");
        assert_eq!(fit("1234567890123.456789", 18, 6), None);
        assert_eq!(fit("1e-5", 18, 2).as_deref(), Some("0"));
        assert_eq!(fit("-0.001", 18, 2).as_deref(), Some("0"), "no negative zero");
        assert_eq!(fit("1.5e3", 18, 0).as_deref(), Some("1500"));
        assert_eq!(fit("0.5", 18, 0).as_deref(), Some("1"));
        assert_eq!(fit("12.50", 18, 6).as_deref(), Some("12.5"));
    }

    #[test]
    fn datetimes_normalise_to_utc() {
        let ms = parse_datetime("2024-03-01T01:30:00+02:00").expect("parses");
        assert_eq!(format_datetime(ms), "2024-02-29T23:30:00.000+0000");
        assert_eq!(
            parse_datetime("2024-03-01T01:30:00.5Z").map(format_datetime).as_deref(),
            Some("2024-03-01T01:30:00.500+0000")
        );
        assert_eq!(
            parse_datetime("2024-03-01 01:30:00-0130").map(format_datetime).as_deref(),
            Some("2024-03-01T03:00:00.000+0000")
        );
        assert!(parse_datetime("2024-02-30T00:00:00Z").is_none());
        assert!(parse_datetime("2024-02-01X00:00:00Z").is_none());
    }

    #[test]
    fn dates_must_exist() {
        assert!(parse_date("2024-02-29").is_some());
        assert!(parse_date("2023-02-29").is_none());
        assert!(parse_date("24-02-29").is_none());
    }
}
