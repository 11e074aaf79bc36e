//! A page of records as the REST query resource returns it, read into what applying needs: each record's identity,
//! stamp and deletion, and its fields by lower-case API name (a column reads the field its name spells, in any case).

use std::collections::HashMap;

use serde_json::Value;

use super::values::epoch_seconds;

/// One record read from Salesforce.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SfRecord {
    pub id: String,
    /// `SystemModstamp`, seconds since 1970-01-01 UTC.
    pub stamp: i64,
    pub deleted: bool,
    /// Every field the record came with (system fields included), by lower-case API name.
    pub fields: HashMap<String, Value>,
}

/// A page: its records, in the order read, and the locator of the rest when Salesforce split the answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub records: Vec<SfRecord>,
    /// `nextRecordsUrl`: the rest of this query's answer (a read asks for at most a page, so normally none).
    pub next: Option<String>,
}

/// Reads a query answer. A record without an `Id` or a readable `SystemModstamp` is an error naming it: the read
/// selects both, so such an answer is not one the read asked for.
pub fn parse(answer: &Value) -> Result<Page, String> {
    let records = answer.get("records").and_then(Value::as_array).ok_or("the answer has no records array")?;
    let mut page = Page {
        records: Vec::with_capacity(records.len()),
        next: answer.get("nextRecordsUrl").and_then(Value::as_str).map(str::to_string),
    };
    for (n, record) in records.iter().enumerate() {
        let object = record.as_object().ok_or_else(|| format!("record {n} is not an object"))?;
        let fields: HashMap<String, Value> = object
            .iter()
            .filter(|(k, _)| k.as_str() != "attributes")
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let id = fields.get("id").and_then(Value::as_str).ok_or_else(|| format!("record {n} has no Id"))?.to_string();
        let stamp = fields
            .get("systemmodstamp")
            .and_then(Value::as_str)
            .and_then(epoch_seconds)
            .ok_or_else(|| format!("record {id} has no readable SystemModstamp"))?;
        let deleted = fields.get("isdeleted").and_then(Value::as_bool).unwrap_or(false);
        page.records.push(SfRecord { id, stamp, deleted, fields });
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_is_read_with_lower_case_field_names() {
        let answer = json!({
            "totalSize": 2, "done": true,
            "records": [
                {"attributes": {"type": "Contact", "url": "/x"}, "Id": "003A", "SystemModstamp": "2024-01-02T03:04:05.000+0000",
                 "IsDeleted": false, "FirstName": "Ada", "acme__Tier__c": 3},
                {"attributes": {"type": "Contact"}, "Id": "003B", "SystemModstamp": "2024-01-02T03:04:05.000+0000",
                 "IsDeleted": true, "FirstName": null}
            ]
        });
        let page = parse(&answer).expect("parses");
        assert_eq!(page.next, None);
        assert_eq!(page.records.len(), 2);
        let a = &page.records[0];
        assert_eq!((a.id.as_str(), a.stamp, a.deleted), ("003A", 1_704_164_645, false));
        assert_eq!(a.fields.get("firstname"), Some(&json!("Ada")));
        assert_eq!(a.fields.get("acme__tier__c"), Some(&json!(3)));
        assert!(!a.fields.contains_key("attributes"));
        assert!(page.records[1].deleted);
        assert!(parse(&json!({"records": [{"Id": "003A"}]})).unwrap_err().contains("003A"));
        assert!(parse(&json!({"done": true})).is_err());
        let more = parse(&json!({"records": [], "nextRecordsUrl": "/services/data/v62.0/query/01g-2000"})).unwrap();
        assert_eq!(more.next.as_deref(), Some("/services/data/v62.0/query/01g-2000"));
    }
}
