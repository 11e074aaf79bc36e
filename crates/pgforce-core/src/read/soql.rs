//! The SOQL of a read. Changes are read in `(SystemModstamp, Id)` order with a keyset condition, so that any number
//! of records sharing one stamp page correctly (a cursor on the stamp alone re-reads the same page forever once a
//! page's worth share it, airbytehq/airbyte#17148), and through `queryAll`, so that deleted records come with
//! `IsDeleted = true`. The leading range on `SystemModstamp` keeps the query selective (both fields are indexed).

use super::Position;
use crate::convert::soql_datetime;

/// Records per page: the most one REST query page returns.
pub const PAGE_SIZE: usize = 2000;

/// The system fields every read selects, whatever the mapping: the record's identity, its stamp, whether it is
/// deleted, and when it was created.
pub const SYSTEM_FIELDS: [&str; 4] = ["Id", "SystemModstamp", "IsDeleted", "CreatedDate"];

/// `SELECT COUNT() FROM object`, deleted records included when sent through `queryAll`: how large a load is.
pub fn count(object: &str) -> String {
    format!("SELECT COUNT() FROM {object}")
}

/// The next page of `object`'s records after `from` (all of them from the start when `from` is empty), in
/// `(SystemModstamp, Id)` order, at most `PAGE_SIZE`. `fields` are the mapping's fields, besides the system ones.
pub fn page(object: &str, fields: &[String], from: &Position) -> String {
    let mut select: Vec<&str> = SYSTEM_FIELDS.to_vec();
    for f in fields {
        if !select.iter().any(|s| s.eq_ignore_ascii_case(f)) {
            select.push(f);
        }
    }
    let filter = match (from.stamp, from.id.as_deref()) {
        (Some(stamp), Some(id)) => {
            let t = soql_datetime(stamp);
            format!(" WHERE SystemModstamp >= {t} AND (SystemModstamp > {t} OR Id > '{}')", quote(id))
        }
        (Some(stamp), None) => format!(" WHERE SystemModstamp >= {}", soql_datetime(stamp)),
        _ => String::new(),
    };
    format!("SELECT {} FROM {object}{filter} ORDER BY SystemModstamp, Id LIMIT {PAGE_SIZE}", select.join(", "))
}

/// Where a poll starts: `overlap` seconds before the position, with no Id, so that records Salesforce committed
/// later than their stamp (a long transaction) are still seen; re-read records that did not change are not applied.
pub fn poll_start(position: &Position, overlap_secs: i64) -> Position {
    match position.stamp {
        Some(stamp) => Position { stamp: Some(stamp - overlap_secs), id: None },
        None => Position::default(),
    }
}

/// A SOQL string literal's content: backslashes and quotes escaped.
pub(crate) fn quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_keyset_and_select_the_system_fields_once() {
        let fields = vec!["LastName".to_string(), "id".to_string(), "Email".to_string()];
        assert_eq!(
            page("Contact", &fields, &Position::default()),
            "SELECT Id, SystemModstamp, IsDeleted, CreatedDate, LastName, Email FROM Contact \
             ORDER BY SystemModstamp, Id LIMIT 2000"
        );
        let after = Position { stamp: Some(1_700_000_000), id: Some("003000000000001AAA".into()) };
        assert_eq!(
            page("Contact", &fields[..1], &after),
            "SELECT Id, SystemModstamp, IsDeleted, CreatedDate, LastName FROM Contact \
             WHERE SystemModstamp >= 2023-11-14T22:13:20Z AND (SystemModstamp > 2023-11-14T22:13:20Z \
             OR Id > '003000000000001AAA') ORDER BY SystemModstamp, Id LIMIT 2000"
        );
        let start = poll_start(&after, 600);
        assert_eq!(start, Position { stamp: Some(1_699_999_400), id: None });
        assert!(page("Contact", &[], &start).contains("WHERE SystemModstamp >= 2023-11-14T22:03:20Z ORDER BY"));
        assert_eq!(poll_start(&Position::default(), 600), Position::default(), "nothing read: the whole object");
        assert_eq!(quote("a'b\\c"), "a\\'b\\\\c");
    }
}
