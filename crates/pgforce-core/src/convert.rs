//! From trigger-log text to Salesforce JSON: each mapped column's hstore text (the column type's output format) becomes
//! the JSON Salesforce expects — booleans, numbers, dates, datetimes in UTC, NULL as null — and relationship columns
//! become references to the parent by its external id.

use crate::log::Values;
use crate::mapping::{relationship_column, PgKind, Target};
use serde_json::{Map, Number, Value};

/// Salesforce numbers hold at most 18 digits.
const MAX_DIGITS: usize = 18;

/// A value as Salesforce JSON, or why Salesforce cannot hold it.
pub fn field_value(kind: PgKind, text: Option<&str>) -> Result<Value, String> {
    let Some(t) = text else { return Ok(Value::Null) };
    match kind {
        PgKind::Bool => match t {
            "t" | "true" => Ok(Value::Bool(true)),
            "f" | "false" => Ok(Value::Bool(false)),
            other => Err(format!("{other:?} is not a boolean")),
        },
        PgKind::Integer => t.parse::<i64>().map(Value::from).map_err(|_| format!("{t:?} is not an integer")),
        PgKind::Numeric => exact_number(t),
        PgKind::Money => {
            let plain: String = t.chars().filter(|c| *c != '$' && *c != ',').collect();
            exact_number(&plain).map_err(|_| {
                format!("{t:?} is not a money amount pgforce can read (lc_monetary other than C); map a numeric column")
            })
        }
        PgKind::Date => iso_date(t).map(Value::String).ok_or_else(|| out_of_range(t, "date")),
        PgKind::Time => iso_time(t).map(Value::String).ok_or_else(|| out_of_range(t, "time")),
        PgKind::Timestamp => utc_datetime(t, false).map(Value::String).ok_or_else(|| out_of_range(t, "datetime")),
        PgKind::TimestampTz => utc_datetime(t, true).map(Value::String).ok_or_else(|| out_of_range(t, "datetime")),
        PgKind::TextArray => text_array(t)
            .map(|items| Value::String(items.join(";")))
            .ok_or_else(|| format!("{t:?} is not an array of text")),
        PgKind::Text => Ok(Value::String(t.to_string())),
    }
}

fn out_of_range(text: &str, what: &str) -> String {
    format!("{text:?} is not a {what} Salesforce can hold (years 1 to 9999, not infinity or BC)")
}

/// Postgres' text of a number as the same JSON number, digit for digit. NaN, infinities and numbers with more than
/// 18 digits before the decimal point have no Salesforce equivalent.
fn exact_number(t: &str) -> Result<Value, String> {
    let b = t.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    let int_digits = digits(&mut i);
    let int_part = &t[int_start..int_start + int_digits];
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        frac_digits = digits(&mut i);
    }
    let mut exponent: i64 = 0;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let sign = match b.get(i) {
            Some(b'-') => -1,
            Some(b'+') => 1,
            _ => 1,
        };
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let start = i;
        if digits(&mut i) == 0 || i - start > 6 {
            return Err(format!("{t:?} is not a number Salesforce can hold"));
        }
        exponent = sign * t[start..i].parse::<i64>().unwrap_or(0);
    }
    // JSON wants a digit on each side of the point; Postgres prints them.
    if int_digits == 0 || (frac_digits == 0 && t[int_start + int_digits..].starts_with('.')) || i != b.len() {
        return Err(format!("{t:?} is not a number Salesforce can hold"));
    }
    let significant_int = int_part.trim_start_matches('0').len() as i64 + exponent;
    if significant_int > MAX_DIGITS as i64 {
        return Err(format!(
            "{t:?} has more than {MAX_DIGITS} digits before the decimal point; Salesforce numbers hold 18"
        ));
    }
    t.parse::<Number>().map(Value::Number).map_err(|_| format!("{t:?} is not a number Salesforce can hold"))
}

/// Digits of exactly `n` ASCII digits, as a number.
fn fixed(s: &str, n: usize) -> Option<i64> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// `yyyy-mm-dd` (Postgres ISO output) for a real date of years 1 to 9999.
fn iso_date(t: &str) -> Option<String> {
    let (y, m, d) = ymd(t)?;
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

fn ymd(t: &str) -> Option<(i64, i64, i64)> {
    let mut parts = t.split('-');
    let (y, m, d) = (fixed(parts.next()?, 4)?, fixed(parts.next()?, 2)?, fixed(parts.next()?, 2)?);
    let valid = parts.next().is_none() && y >= 1 && (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m);
    valid.then_some((y, m, d))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    epoch_days(if m == 12 { y + 1 } else { y }, if m == 12 { 1 } else { m + 1 }, 1) - epoch_days(y, m, 1)
}

/// `hh:mm:ss[.ffffff]` → `(seconds of the day, milliseconds)`.
fn clock(t: &str) -> Option<(i64, i64)> {
    let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
    let mut parts = hms.split(':');
    let (h, mi, s) = (fixed(parts.next()?, 2)?, fixed(parts.next()?, 2)?, fixed(parts.next()?, 2)?);
    if parts.next().is_some() || h > 24 || mi > 59 || s > 60 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis = format!("{:0<3}", &frac[..frac.len().min(3)]).parse::<i64>().ok()?;
    Some((h * 3600 + mi * 60 + s, millis))
}

/// `13:45:00.5` → `13:45:00.500Z`, as Salesforce writes a Time.
fn iso_time(t: &str) -> Option<String> {
    let (secs, millis) = clock(t)?;
    (secs < 86_400).then(|| format!("{:02}:{:02}:{:02}.{millis:03}Z", secs / 3600, secs % 3600 / 60, secs % 60))
}

/// The elements of a one-dimensional array's text (`{a,"b c",NULL}`), NULLs left out.
fn text_array(t: &str) -> Option<Vec<String>> {
    let inner = t.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '{' || c == '"' {
                    return None;
                }
                item.push(c);
                chars.next();
            }
        }
        if quoted || item != "NULL" {
            out.push(item);
        }
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(_) => return None,
        }
    }
    Some(out)
}

/// `2024-03-01 01:30:00.5+02` (Postgres ISO output) → `2024-03-01T01:30:00.500Z`. A timestamp without time zone
/// is taken as UTC. `None` for anything else (infinity, BC, years past 9999, other date styles).
pub fn utc_datetime(text: &str, has_zone: bool) -> Option<String> {
    let (date, rest) = text.split_once(' ')?;
    let (y, m, d) = ymd(date)?;
    let clock_end = rest.find(['+', '-']).filter(|_| has_zone).unwrap_or(rest.len());
    let (time, zone) = rest.split_at(clock_end);
    let (secs_of_day, millis) = clock(time)?;
    let offset_secs = if zone.is_empty() {
        0
    } else {
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        // `+02`, `+05:30`, `-04:56:02` (Postgres) or `+0000` (Salesforce).
        let zone = &zone[1..];
        let compact = (zone.len() == 4 && zone.bytes().all(|b| b.is_ascii_digit()))
            .then(|| format!("{}:{}", &zone[..2], &zone[2..]));
        let mut z = compact.as_deref().unwrap_or(zone).split(':');
        let zh = fixed(z.next()?, 2)?;
        let zm = z.next().map_or(Some(0), |p| fixed(p, 2))?;
        let zs = z.next().map_or(Some(0), |p| fixed(p, 2))?;
        if z.next().is_some() {
            return None;
        }
        sign * (zh * 3600 + zm * 60 + zs)
    };
    let secs = epoch_days(y, m, d) * 86_400 + secs_of_day - offset_secs;
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    (1..=9999)
        .contains(&y)
        .then(|| format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", t / 3600, t % 3600 / 60, t % 60))
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
pub(crate) fn epoch_days(y: i64, m: i64, d: i64) -> i64 {
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
fn put(record: &mut Map<String, Value>, column: &str, kind: PgKind, text: Option<&str>) -> Result<(), String> {
    let value = field_value(kind, text).map_err(|e| format!("column {column}: {e}"))?;
    match relationship_column(column) {
        Some(rel) if !value.is_null() => {
            let mut parent = Map::new();
            parent.insert(rel.external_id_field.clone(), value);
            record.insert(rel.relationship.clone(), Value::Object(parent));
        }
        Some(rel) => {
            record.insert(rel.lookup_field(), Value::Null);
        }
        None => {
            record.insert(column.to_string(), value);
        }
    }
    Ok(())
}

/// The Salesforce record for the mapped columns among `values` (`attributes.type` first), or the first value
/// Salesforce cannot hold, named by its column.
pub fn record_from(target: &Target, values: &Values) -> Result<Map<String, Value>, String> {
    let mut record = Map::new();
    let mut attributes = Map::new();
    attributes.insert("type".into(), Value::String(target.sobject.clone()));
    record.insert("attributes".into(), Value::Object(attributes));
    for (column, kind) in &target.columns {
        if let Some(v) = values.get(column) {
            put(&mut record, column, *kind, v.as_deref())?;
        }
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(kind: PgKind, text: &str) -> Value {
        field_value(kind, Some(text)).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn refused(kind: PgKind, text: &str) -> String {
        field_value(kind, Some(text)).expect_err(text)
    }

    #[test]
    fn values_convert_by_type() {
        assert_eq!(ok(PgKind::Bool, "t"), json!(true));
        assert_eq!(ok(PgKind::Integer, "-42"), json!(-42));
        assert_eq!(ok(PgKind::Date, "2024-02-29"), json!("2024-02-29"));
        assert_eq!(field_value(PgKind::Text, None), Ok(Value::Null));
        assert_eq!(ok(PgKind::TimestampTz, "2024-03-01 01:30:00.5+02"), json!("2024-02-29T23:30:00.500Z"));
        assert_eq!(ok(PgKind::TimestampTz, "1999-12-31 20:00:00-05:30"), json!("2000-01-01T01:30:00.000Z"));
        assert_eq!(ok(PgKind::TimestampTz, "1883-11-18 12:00:00-04:56:02"), json!("1883-11-18T16:56:02.000Z"));
        assert_eq!(ok(PgKind::Timestamp, "2024-01-01 00:00:00"), json!("2024-01-01T00:00:00.000Z"));
        assert_eq!(ok(PgKind::Time, "13:45:00.123456"), json!("13:45:00.123Z"));
        assert_eq!(ok(PgKind::TextArray, r#"{gold,"silver plus","a\"b",NULL}"#), json!("gold;silver plus;a\"b"));
        assert_eq!(ok(PgKind::TextArray, "{}"), json!(""));
        assert_eq!(ok(PgKind::Money, "-$1,234.56"), json!(-1234.56));
        assert!(refused(PgKind::Money, "1.234,56 €").contains("lc_monetary"));
        for bad in ["infinity", "-infinity", "2024-02-30", "0044-03-15 BC", "10000-01-01", "01/02/1990", "02.01.1990"] {
            assert!(refused(PgKind::Date, bad).contains("is not a date Salesforce can hold"), "{bad}");
        }
        // Once panics: a fraction cut inside a character, a year that overflowed the day count.
        for bad in ["2024-02-29 23:59:59.1€+05:30", "99999999999999999-01-01 00:00:00+00"] {
            assert!(refused(PgKind::TimestampTz, bad).contains("is not a datetime"), "{bad}");
        }
        for bad in ["infinity", "04/03/2026 14:06:07 JST", "Sat Apr 03 14:06:07 2026 JST", "2024-01-01 00:00:00 BC"] {
            assert!(refused(PgKind::TimestampTz, bad).contains("is not a datetime"), "{bad}");
        }
    }

    #[test]
    fn numbers_are_sent_digit_for_digit() {
        let text = |v: Value| serde_json::to_string(&v).unwrap();
        for exact in [
            "1234567890123.456789",
            "-0.000000000000000001",
            "12.50",
            "0",
            "123456789012345678",
            "1e+17",
            "1.5e-07",
            "-922337203685477580",
        ] {
            assert_eq!(text(ok(PgKind::Numeric, exact)), exact);
        }
        assert_eq!(text(ok(PgKind::Integer, "9223372036854775807")), "9223372036854775807");
        for bad in ["NaN", "Infinity", "-Infinity", "1234567890123456789", "1e+19", "1e+308", ".5", "5.", "1,5"] {
            assert!(refused(PgKind::Numeric, bad).contains(bad), "{bad}");
        }
        let record = record_from(
            &Target {
                sobject: "Account".into(),
                upsert_field: None,
                columns: vec![("annualrevenue".into(), PgKind::Numeric)],
            },
            &[("annualrevenue".to_string(), Some("NaN".to_string()))].into_iter().collect(),
        );
        assert_eq!(record.unwrap_err(), "column annualrevenue: \"NaN\" is not a number Salesforce can hold");
    }

    /// Random values of every kind, as Postgres prints them, convert exactly; random text never panics and any
    /// result has the JSON type Salesforce expects for the kind.
    #[test]
    fn conversion_never_panics_and_is_exact_property() {
        use rand::{Rng, SeedableRng};
        let seed = std::env::var("PGFORCE_PROPERTY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_202u64);
        let rounds = std::env::var("PGFORCE_PROPERTY_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5_000usize);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let kinds = [
            PgKind::Bool,
            PgKind::Integer,
            PgKind::Numeric,
            PgKind::Money,
            PgKind::Date,
            PgKind::Time,
            PgKind::Timestamp,
            PgKind::TimestampTz,
            PgKind::TextArray,
            PgKind::Text,
        ];
        let alphabet: Vec<char> = "0123456789-:.+ eE{}\",\\NULLinfityBCé€$ 日".chars().collect();
        let digits = |rng: &mut rand::rngs::StdRng, n: usize| -> String {
            (0..n).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect()
        };
        for round in 0..rounds {
            let context = format!("seed {seed}, round {round}");
            // Garbage in every kind, and printed values with a few characters changed: never a panic; a value
            // has the kind's JSON type.
            let len = rng.random_range(0..24);
            let garbage: String = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            let samples =
                ["2024-02-29 23:59:59.123456+05:30", "13:45:00.5", "-1234.5e-07", "{a,\"b c\",NULL}", "-$1,234.56"];
            let mut mutated: Vec<char> = samples[rng.random_range(0..samples.len())].chars().collect();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..=mutated.len());
                let c = alphabet[rng.random_range(0..alphabet.len())];
                match rng.random_range(0..3) {
                    0 if at < mutated.len() => mutated[at] = c,
                    1 if at < mutated.len() => {
                        mutated.remove(at);
                    }
                    _ => mutated.insert(at, c),
                }
            }
            let mutated: String = mutated.into_iter().collect();
            for (kind, garbage) in kinds.iter().flat_map(|k| [(*k, garbage.clone()), (*k, mutated.clone())]) {
                let got = std::panic::catch_unwind(|| field_value(kind, Some(&garbage)))
                    .unwrap_or_else(|_| panic!("{context}: {kind:?} panicked on {garbage:?}"));
                if let Ok(v) = got {
                    let typed = match kind {
                        PgKind::Bool => v.is_boolean(),
                        PgKind::Integer | PgKind::Numeric | PgKind::Money => v.is_number(),
                        _ => v.is_string(),
                    };
                    assert!(typed, "{context}: {kind:?} {garbage:?} gave {v}");
                }
            }
            // Numbers as numeric and float8 print them.
            let sign = if rng.random_bool(0.3) { "-" } else { "" };
            let int_len = rng.random_range(1..22);
            let mut number = format!("{sign}{}", digits(&mut rng, int_len).trim_start_matches('0'));
            if number.ends_with('-') || number.is_empty() {
                number.push('0');
            }
            if rng.random_bool(0.6) {
                let frac_len = rng.random_range(1..25);
                number = format!("{number}.{}", digits(&mut rng, frac_len));
            }
            if rng.random_bool(0.2) {
                // float8's form: one digit, a fraction, an exponent.
                let mantissa_len = rng.random_range(0..16);
                let mantissa = format!("{}.{}", rng.random_range(1..10), digits(&mut rng, mantissa_len));
                let mantissa = mantissa.trim_end_matches('.');
                let sign = if rng.random_bool(0.5) { "-" } else { "+" };
                number = format!("{mantissa}e{sign}{:02}", rng.random_range(1..40));
            }
            match field_value(PgKind::Numeric, Some(&number)) {
                Ok(v) => assert_eq!(serde_json::to_string(&v).unwrap(), number, "{context}"),
                Err(e) => assert!(e.contains("more than 18 digits"), "{context}: {number}: {e}"),
            }
            let i: i64 = rng.random();
            assert_eq!(ok(PgKind::Integer, &i.to_string()), json!(i), "{context}");
            // Dates and datetimes (ISO, any offset Postgres prints, 0 to 6 fractional digits).
            let (y, m) = (rng.random_range(1..=9999i64), rng.random_range(1..=12i64));
            let d = rng.random_range(1..=days_in_month(y, m));
            let date = format!("{y:04}-{m:02}-{d:02}");
            assert_eq!(ok(PgKind::Date, &date), json!(date), "{context}");
            let (h, mi, sec) = (rng.random_range(0..24), rng.random_range(0..60), rng.random_range(0..60));
            let frac_len = rng.random_range(0..=6);
            let frac = digits(&mut rng, frac_len);
            let clock = if frac.is_empty() {
                format!("{h:02}:{mi:02}:{sec:02}")
            } else {
                format!("{h:02}:{mi:02}:{sec:02}.{frac}")
            };
            let millis = format!("{frac:0<3}")[..3].to_string();
            assert_eq!(ok(PgKind::Time, &clock), json!(format!("{h:02}:{mi:02}:{sec:02}.{millis}Z")), "{context}");
            let local = format!("{date} {clock}");
            assert_eq!(
                ok(PgKind::Timestamp, &local),
                json!(format!("{date}T{h:02}:{mi:02}:{sec:02}.{millis}Z")),
                "{context}"
            );
            let (zh, zm, zs) =
                (rng.random_range(0..16i64), [0i64, 30, 45][rng.random_range(0..3)], rng.random_range(0..2i64) * 17);
            let zone_sign = if rng.random_bool(0.5) { 1 } else { -1 };
            let zone = match (zm, zs) {
                (0, 0) => format!("{}{zh:02}", if zone_sign > 0 { '+' } else { '-' }),
                (_, 0) => format!("{}{zh:02}:{zm:02}", if zone_sign > 0 { '+' } else { '-' }),
                _ => format!("{}{zh:02}:{zm:02}:{zs:02}", if zone_sign > 0 { '+' } else { '-' }),
            };
            let utc = field_value(PgKind::TimestampTz, Some(&format!("{local}{zone}")));
            let expected_secs =
                epoch_days(y, m, d) * 86_400 + h * 3600 + mi * 60 + sec - zone_sign * (zh * 3600 + zm * 60 + zs);
            let (ey, em, ed) = civil(expected_secs.div_euclid(86_400));
            match utc {
                Ok(v) => {
                    let t = expected_secs.rem_euclid(86_400);
                    let want =
                        format!("{ey:04}-{em:02}-{ed:02}T{:02}:{:02}:{:02}.{millis}Z", t / 3600, t % 3600 / 60, t % 60);
                    assert_eq!(v, json!(want), "{context}: {local}{zone}");
                }
                Err(_) => assert!(!(1..=9999).contains(&ey), "{context}: {local}{zone} refused"),
            }
            // Arrays of text as array_out prints them.
            let items: Vec<String> = (0..rng.random_range(0..5))
                .map(|_| (0..rng.random_range(1..6)).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect())
                .collect();
            let printed: Vec<String> = items
                .iter()
                .map(|it| {
                    let plain = !it.is_empty() && it != "NULL" && !it.contains(['{', '}', ',', '"', '\\', ' ']);
                    if plain {
                        it.clone()
                    } else {
                        format!("\"{}\"", it.replace('\\', "\\\\").replace('"', "\\\""))
                    }
                })
                .collect();
            let array = format!("{{{}}}", printed.join(","));
            assert_eq!(ok(PgKind::TextArray, &array), json!(items.join(";")), "{context}: {array}");
        }
    }

    #[test]
    fn datetimes_as_salesforce_prints_them_compare_with_what_was_sent() {
        assert_eq!(soql_datetime(0), "1970-01-01T00:00:00Z");
        assert_eq!(soql_datetime(1_764_698_400), "2025-12-02T18:00:00Z");
        let sent = ok(PgKind::TimestampTz, "2024-03-01 01:30:00.5+02");
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
