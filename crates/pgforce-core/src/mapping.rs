//! What a mapping between a Postgres table and a Salesforce object may contain.

use std::fmt;
use std::str::FromStr;

use crate::log::LogState;

/// Columns pgforce and Heroku Connect manage; never sent as Salesforce fields by default.
/// `id`, `sfid`, `_hc_lastop` and `_hc_err` are added by `map_table`; the others are Heroku Connect's read-only
/// Salesforce system fields that tables migrated from Connect still carry.
pub const SYSTEM_COLUMNS: &[&str] =
    &["id", "sfid", "_hc_lastop", "_hc_err", "systemmodstamp", "isdeleted", "createddate"];

/// Columns the capture trigger never writes into `old`/`values` (Heroku Connect's `excluded_cols`).
pub const STATUS_COLUMNS: &[&str] = &["_hc_lastop", "_hc_err"];

pub fn is_system_column(column: &str) -> bool {
    SYSTEM_COLUMNS.contains(&column)
}

/// How a Postgres column's text is read. Capture prints every value with fixed output settings (`DateStyle` ISO,
/// `IntervalStyle` postgres, `extra_float_digits` 1), so the text does not depend on the writing session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgKind {
    Bool,
    Integer,
    /// `numeric`, `float4`, `float8`: sent as exact JSON numbers, digit for digit.
    Numeric,
    /// `money`, printed by `lc_monetary`: only the C/English form (`-$1,234.56`) is read.
    Money,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    /// `text[]`/`varchar[]`: a multi-select picklist, the values joined with `;`.
    TextArray,
    Text,
}

impl PgKind {
    /// From `pg_type.typname`.
    pub fn from_type_name(typname: &str) -> PgKind {
        match typname {
            "bool" => PgKind::Bool,
            "int2" | "int4" | "int8" => PgKind::Integer,
            "numeric" | "float4" | "float8" => PgKind::Numeric,
            "money" => PgKind::Money,
            "date" => PgKind::Date,
            "time" => PgKind::Time,
            "timestamp" => PgKind::Timestamp,
            "timestamptz" => PgKind::TimestampTz,
            "_text" | "_varchar" | "_bpchar" => PgKind::TextArray,
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

/// Which ways a mapping syncs: `read_write` sends the table's changes and reads Salesforce's back, as Heroku
/// Connect's read-write mappings do, `write_only` only sends them (what every mapping of release 0.1.0 did: the
/// upgrade turns their `read_write` into this, so no upgrade starts writing into a table by surprise), `read_only`
/// reads Salesforce into the table and records the table's own changes as `READONLY`, never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    WriteOnly,
    ReadOnly,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadWrite => "read_write",
            Access::WriteOnly => "write_only",
            Access::ReadOnly => "read_only",
        }
    }

    /// Whether the table's changes are sent to Salesforce.
    pub fn sends(self) -> bool {
        self != Access::ReadOnly
    }

    /// Whether Salesforce's records are read into the table.
    pub fn reads(self) -> bool {
        self != Access::WriteOnly
    }

    /// The state a fresh change of this mapping gets in the trigger log.
    pub fn capture_state(self) -> LogState {
        if self.sends() {
            LogState::New
        } else {
            LogState::ReadOnly
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a mapping's writes are, as `sync_status.write_state` shows them (Heroku Connect's mapping states where they
/// fit): the first that holds, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteState {
    /// The mapping sends nothing (`read_only`).
    ReadOnly,
    /// An operator paused it (`salesforce.pause()`).
    Paused,
    /// Its newest open failure says the integration user may not write the object or the records.
    Unauthorized,
    /// Its newest open failure says the mapping names what Salesforce does not have (or not writable).
    BadConfig,
    /// Records failed on their data (they wait for a fix: `errored_writes`).
    Failing,
    /// Changes wait while the connection is in trouble or nothing delivers them.
    Waiting,
    /// Changes are on their way.
    Syncing,
    /// Nothing waits.
    DataSynced,
}

impl WriteState {
    pub const ALL: [WriteState; 8] = [
        WriteState::ReadOnly,
        WriteState::Paused,
        WriteState::Unauthorized,
        WriteState::BadConfig,
        WriteState::Failing,
        WriteState::Waiting,
        WriteState::Syncing,
        WriteState::DataSynced,
    ];

    /// Salesforce's error codes that make a mapping `UNAUTHORIZED` (sync_status reads them in SQL).
    pub const UNAUTHORIZED_CODES: [&'static str; 3] =
        ["INSUFFICIENT_ACCESS", "INSUFFICIENT_ACCESS_OR_READONLY", "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY"];
    /// ... and `BAD_CONFIG`.
    pub const BAD_CONFIG_CODES: [&'static str; 4] =
        ["INVALID_FIELD", "INVALID_FIELD_FOR_INSERT_UPDATE", "INVALID_TYPE", "NOT_FOUND"];

    pub fn as_str(self) -> &'static str {
        match self {
            WriteState::ReadOnly => "READ_ONLY",
            WriteState::Paused => "PAUSED",
            WriteState::Unauthorized => "UNAUTHORIZED",
            WriteState::BadConfig => "BAD_CONFIG",
            WriteState::Failing => "FAILING",
            WriteState::Waiting => "WAITING",
            WriteState::Syncing => "SYNCING",
            WriteState::DataSynced => "DATA_SYNCED",
        }
    }

    /// The state an open failure with this error code gives a mapping.
    pub fn of_failure(code: &str) -> WriteState {
        if Self::UNAUTHORIZED_CODES.contains(&code) {
            WriteState::Unauthorized
        } else if Self::BAD_CONFIG_CODES.contains(&code) {
            WriteState::BadConfig
        } else {
            WriteState::Failing
        }
    }
}

impl fmt::Display for WriteState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown mapping mode {0:?}")]
pub struct UnknownAccess(pub String);

impl FromStr for Access {
    type Err = UnknownAccess;

    /// Accepts Heroku Connect's spellings (`read_write`, `read_only`), `write_only`, and their dashed forms, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "read_write" | "readwrite" => Ok(Access::ReadWrite),
            "write_only" | "writeonly" => Ok(Access::WriteOnly),
            "read_only" | "readonly" => Ok(Access::ReadOnly),
            _ => Err(UnknownAccess(s.to_string())),
        }
    }
}

/// A relationship column: the parent is referenced by its external id. Custom relationships are
/// `<relationship>__r__<externalidfield>` (`account__r__external_id__c`, namespaced `acme__region__r__code__c`),
/// standard ones `<relationship>__<externalidfield>` with a custom external id field (`parent__external_id__c`), where
/// `<relationship>` must be one of Salesforce's standard relationship names (`STANDARD_RELATIONSHIPS`): anything
/// else of that shape is a namespaced field (`acme__tier__c` is field `tier__c` of package `acme`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationshipColumn {
    pub relationship: String,
    pub external_id_field: String,
}

/// Salesforce's standard lookup relationships (lower case) and the sObject each points at; `None` where it depends on
/// the child (`parent` is the child's own object, `masterrecord` too).
pub const STANDARD_RELATIONSHIPS: &[(&str, Option<&str>)] = &[
    ("account", Some("account")),
    ("asset", Some("asset")),
    ("campaign", Some("campaign")),
    ("case", Some("case")),
    ("contact", Some("contact")),
    ("contract", Some("contract")),
    ("convertedaccount", Some("account")),
    ("convertedcontact", Some("contact")),
    ("convertedopportunity", Some("opportunity")),
    ("createdby", Some("user")),
    ("entitlement", Some("entitlement")),
    ("individual", Some("individual")),
    ("lastmodifiedby", Some("user")),
    ("lead", Some("lead")),
    ("manager", Some("user")),
    ("masterrecord", None),
    ("opportunity", Some("opportunity")),
    ("order", Some("order")),
    ("originalorder", Some("order")),
    ("owner", Some("user")),
    ("parent", None),
    ("pricebook2", Some("pricebook2")),
    ("pricebookentry", Some("pricebookentry")),
    ("product2", Some("product2")),
    ("quote", Some("quote")),
    ("recordtype", Some("recordtype")),
    ("reportsto", Some("contact")),
    ("servicecontract", Some("servicecontract")),
];

fn standard_relationship(name: &str) -> Option<&'static (&'static str, Option<&'static str>)> {
    STANDARD_RELATIONSHIPS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))
}

impl RelationshipColumn {
    /// The sObject the relationship points at: custom `account__r` → `account__c`, standard `reportsto` → `contact`;
    /// `None` when it depends on the child (`parent`), which then goes unordered.
    pub fn parent_object(&self) -> Option<String> {
        match self.relationship.strip_suffix("__r") {
            Some(base) => Some(format!("{base}__c")),
            None => standard_relationship(&self.relationship).and_then(|(_, o)| o.map(str::to_string)),
        }
    }

    /// The lookup field that holds the parent's id, which a NULL clears: `account__r` → `account__c`, standard
    /// `account` → `accountid`.
    pub fn lookup_field(&self) -> String {
        match self.relationship.strip_suffix("__r") {
            Some(base) => format!("{base}__c"),
            None => format!("{}id", self.relationship),
        }
    }
}

/// Splits a relationship column; both sides must be non-empty. The one rule `map_table`, planning and conversion use.
pub fn relationship_column(column: &str) -> Option<RelationshipColumn> {
    let (relationship, rest) = match column.find("__r__") {
        Some(at) => (&column[..at + 3], &column[at + 5..]),
        None => {
            let at = column.find("__")?;
            let (relationship, rest) = (&column[..at], &column[at + 2..]);
            if !rest.ends_with("__c") || rest.len() <= 3 || standard_relationship(relationship).is_none() {
                return None;
            }
            (relationship, rest)
        }
    };
    if relationship.is_empty() || relationship == "__r" || rest.is_empty() {
        return None;
    }
    Some(RelationshipColumn { relationship: relationship.to_string(), external_id_field: rest.to_string() })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("Salesforce name is empty")]
    Empty,
    #[error("Salesforce name {0:?} is longer than 80 characters")]
    TooLong(String),
    #[error("Salesforce name {0:?} must start with a letter and hold only letters, digits and underscores")]
    BadCharacters(String),
}

/// Checks an sObject or field API name: a letter, then letters, digits and underscores, at most 80 characters.
pub fn check_salesforce_name(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(NameError::Empty),
        Some(c) if !c.is_ascii_alphabetic() => return Err(NameError::BadCharacters(name.to_string())),
        _ => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(NameError::BadCharacters(name.to_string()));
    }
    if name.len() > 80 {
        return Err(NameError::TooLong(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("read_write".parse(), Ok(Access::ReadWrite));
        assert_eq!("READ-ONLY".parse(), Ok(Access::ReadOnly));
        assert_eq!(" readonly ".parse(), Ok(Access::ReadOnly));
        assert_eq!("write".parse::<Access>(), Err(UnknownAccess("write".into())));
        assert_eq!(Access::ReadOnly.capture_state(), LogState::ReadOnly);
        assert_eq!(Access::ReadWrite.capture_state(), LogState::New);
        assert_eq!("Write-Only".parse(), Ok(Access::WriteOnly));
        assert_eq!(Access::WriteOnly.capture_state(), LogState::New);
        assert!(Access::WriteOnly.sends() && Access::ReadWrite.sends() && !Access::ReadOnly.sends());
        assert!(Access::ReadOnly.reads() && Access::ReadWrite.reads() && !Access::WriteOnly.reads());
    }

    #[test]
    fn splits_relationship_columns() {
        assert_eq!(
            relationship_column("account__r__external_id__c"),
            Some(RelationshipColumn { relationship: "account__r".into(), external_id_field: "external_id__c".into() })
        );
        assert_eq!(
            relationship_column("parent__external_id__c"),
            Some(RelationshipColumn { relationship: "parent".into(), external_id_field: "external_id__c".into() })
        );
        assert_eq!(relationship_column("external_id__c"), None);
        assert_eq!(relationship_column("name"), None);
        assert_eq!(relationship_column("__r__x"), None);
        assert_eq!(relationship_column("account__r__"), None);
        let custom = relationship_column("account__r__external_id__c").unwrap();
        assert_eq!(custom.parent_object(), Some("account__c".into()));
        assert_eq!(custom.lookup_field(), "account__c");
        let standard = relationship_column("account__external_id__c").unwrap();
        assert_eq!((standard.parent_object(), standard.lookup_field()), (Some("account".into()), "accountid".into()));
        let reports_to = relationship_column("ReportsTo__Employee_Number__c").unwrap();
        assert_eq!(
            (reports_to.parent_object(), reports_to.lookup_field()),
            (Some("contact".into()), "ReportsToid".into())
        );
        assert_eq!(relationship_column("parent__external_id__c").unwrap().parent_object(), None);
    }

    #[test]
    fn namespaced_fields_are_fields() {
        // A managed package's field: namespace `acme`, field `tier__c`.
        assert_eq!(relationship_column("acme__tier__c"), None);
        assert_eq!(relationship_column("acme__external_id__c"), None);
        // A namespaced relationship keeps its namespace on both sides.
        let rel = relationship_column("acme__region__r__code__c").unwrap();
        assert_eq!(rel.relationship, "acme__region__r");
        assert_eq!(rel.external_id_field, "code__c");
        assert_eq!(
            (rel.parent_object(), rel.lookup_field()),
            (Some("acme__region__c".into()), "acme__region__c".into())
        );
    }

    #[test]
    fn system_columns() {
        assert!(is_system_column("sfid"));
        assert!(is_system_column("_hc_err"));
        assert!(!is_system_column("email"));
    }

    #[test]
    fn salesforce_names() {
        assert_eq!(check_salesforce_name("Contact"), Ok(()));
        assert_eq!(check_salesforce_name("ns__Thing__c"), Ok(()));
        assert_eq!(check_salesforce_name(""), Err(NameError::Empty));
        assert!(matches!(check_salesforce_name("1abc"), Err(NameError::BadCharacters(_))));
        assert!(matches!(check_salesforce_name("Con tact"), Err(NameError::BadCharacters(_))));
        assert!(matches!(check_salesforce_name("Robert'); DROP"), Err(NameError::BadCharacters(_))));
        assert!(matches!(check_salesforce_name(&"a".repeat(81)), Err(NameError::TooLong(_))));
    }
}
