//! What an sObject's describe says about its fields, as far as sending needs it: which numbers each number field
//! holds. Salesforce rounds extra decimals silently and refuses too many digits before the point for the whole
//! record; pgforce checks both before sending, so a value is never changed on the way and the message names the
//! column and the field.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// One field of a describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    pub name: String,
    /// Salesforce's type name: `double`, `currency`, `percent`, `string`, `reference`, …
    pub kind: String,
    /// Digits in all and after the point, for number fields (0 otherwise).
    pub precision: u32,
    pub scale: u32,
    /// What the integration user may do with it (`salesforce.diagnose()`).
    pub createable: bool,
    pub updateable: bool,
    /// An external id (or the record's own id), which an upsert or a parent reference can use.
    pub external_id: bool,
    /// For lookups: the relationship's name (`Account`, `Region__r`) and the sObjects it points at.
    pub relationship_name: Option<String>,
    pub reference_to: Vec<String>,
}

impl FieldDescription {
    /// One entry of a describe's `fields`; None when it has no name.
    pub fn from_describe(field: &Value) -> Option<FieldDescription> {
        let number = |key: &str| field.get(key).and_then(Value::as_u64).unwrap_or(0).min(u32::MAX as u64) as u32;
        let flag = |key: &str| field.get(key).and_then(Value::as_bool).unwrap_or(false);
        Some(FieldDescription {
            name: field.get("name")?.as_str()?.to_string(),
            kind: field.get("type").and_then(Value::as_str).unwrap_or_default().to_string(),
            precision: number("precision"),
            scale: number("scale"),
            createable: flag("createable"),
            updateable: flag("updateable"),
            external_id: flag("externalId")
                || flag("idLookup") && field.get("type").and_then(Value::as_str) == Some("id"),
            relationship_name: field.get("relationshipName").and_then(Value::as_str).map(str::to_string),
            reference_to: field
                .get("referenceTo")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default(),
        })
    }

    fn is_number(&self) -> bool {
        matches!(self.kind.as_str(), "double" | "currency" | "percent") && self.precision > 0
    }
}

/// An sObject's fields by lower-case name, as a describe gave them.
#[derive(Debug, Clone, Default)]
pub struct Described {
    pub sobject: String,
    fields: HashMap<String, FieldDescription>,
}

impl Described {
    pub fn new(sobject: &str, fields: Vec<FieldDescription>) -> Described {
        Described {
            sobject: sobject.to_string(),
            fields: fields.into_iter().map(|f| (f.name.to_ascii_lowercase(), f)).collect(),
        }
    }

    pub fn field(&self, name: &str) -> Option<&FieldDescription> {
        self.fields.get(&name.to_ascii_lowercase())
    }

    /// The lookup field whose relationship is named `relationship` (case-insensitive).
    pub fn relationship(&self, relationship: &str) -> Option<&FieldDescription> {
        self.fields
            .values()
            .find(|f| f.relationship_name.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(relationship)))
    }

    /// Why a record cannot be sent as it is: the first of its numbers its field cannot hold exactly.
    pub fn unholdable(&self, record: &Map<String, Value>) -> Option<String> {
        record.iter().find_map(|(column, value)| {
            let Value::Number(n) = value else { return None };
            let field = self.field(column).filter(|f| f.is_number())?;
            let text = n.to_string();
            let (int_digits, decimals) = digits(&text)?;
            let shape = format!("{}.{} (Number({}, {}))", self.sobject, field.name, field.precision, field.scale);
            let room = field.precision.saturating_sub(field.scale) as usize;
            if int_digits > room {
                Some(format!(
                    "column {column}: {text} has {int_digits} digits before the decimal point; Salesforce field \
                     {shape} holds {room} (NUMBER_OUTSIDE_VALID_RANGE)"
                ))
            } else if decimals > field.scale as usize {
                Some(format!(
                    "column {column}: {text} has {decimals} decimals; Salesforce field {shape} keeps {} and would \
                     round it: round the value in Postgres (a numeric({}, {}) column does) or widen the field",
                    field.scale, field.precision, field.scale
                ))
            } else {
                None
            }
        })
    }
}

/// Significant digits before the point and decimals after it (trailing zeros are not decimals) of a JSON number.
fn digits(text: &str) -> Option<(usize, usize)> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    if all.is_empty() || !all.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let point = int.len() as i64 + exponent;
    let first = all.iter().position(|b| *b != b'0').map_or(point, |p| p as i64);
    let last = all.iter().rposition(|b| *b != b'0').map_or(0, |p| p as i64 + 1);
    Some(((point - first).max(0) as usize, (last - point).max(0) as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn amount() -> Described {
        let described = json!({"fields": [
            {"name": "Id", "type": "id", "precision": 0, "scale": 0},
            {"name": "Amount__c", "type": "currency", "precision": 18, "scale": 6, "createable": true, "updateable": true},
            {"name": "Name", "type": "string", "length": 80},
        ]});
        let fields =
            described["fields"].as_array().unwrap().iter().filter_map(FieldDescription::from_describe).collect();
        Described::new("Invoice__c", fields)
    }

    fn record(value: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("name".into(), json!("x"));
        m.insert("amount__c".into(), Value::Number(value.parse().unwrap()));
        m
    }

    #[test]
    fn digits_count_significant_places_on_each_side_of_the_point() {
        assert_eq!(digits("123456789012.345678"), Some((12, 6)));
        assert_eq!(digits("-0.0500"), Some((0, 2)));
        assert_eq!(digits("1500"), Some((4, 0)));
        assert_eq!(digits("1.5e3"), Some((4, 0)));
        assert_eq!(digits("15e-4"), Some((0, 4)));
        assert_eq!(digits("0"), Some((0, 0)));
        assert_eq!(digits("1.2.3"), None);
    }

    #[test]
    fn numbers_the_field_cannot_hold_exactly_are_named() {
        let d = amount();
        assert_eq!(d.unholdable(&record("123456789012.345678")), None);
        assert_eq!(d.unholdable(&record("-12.50")), None, "trailing zeros are no decimals");
        let range = d.unholdable(&record("1234567890123.456789")).unwrap();
        assert_eq!(
            range,
            "column amount__c: 1234567890123.456789 has 13 digits before the decimal point; Salesforce field \
             Invoice__c.Amount__c (Number(18, 6)) holds 12 (NUMBER_OUTSIDE_VALID_RANGE)"
        );
        let decimals = d.unholdable(&record("1.2345678")).unwrap();
        assert!(decimals.starts_with("column amount__c: 1.2345678 has 7 decimals; Salesforce field Invoice__c.Amount__c (Number(18, 6)) keeps 6 and would round it"), "{decimals}");
        assert_eq!(Described::default().unholdable(&record("1.2345678")), None, "unknown fields are not checked");
    }
}
