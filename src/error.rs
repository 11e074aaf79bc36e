//! pgforce's errors and how each reaches the user: a real SQLSTATE, a message and, where the fix is known, a hint.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum PgforceError {
    #[error("{table} is already mapped to Salesforce object {sobject}")]
    AlreadyMapped { table: String, sobject: String },

    #[error("another table named {name:?} is already mapped ({other})")]
    TableNameTaken { name: String, other: String },

    #[error("{0} is not mapped to Salesforce")]
    NotMapped(String),

    #[error("unknown mapping mode {0:?}")]
    BadMode(String),

    #[error("invalid Salesforce object name: {0}")]
    BadSobject(pgforce_core::mapping::NameError),

    #[error("{table} cannot be mapped: {reason}")]
    WrongKindOfTable { table: String, reason: &'static str, hint: &'static str },

    #[error("column \"{column}\" of {table} is of type {found}, but pgforce needs {wanted}")]
    WrongColumnType { table: String, column: &'static str, found: String, wanted: &'static str },

    #[error("column \"id\" of {table} must be NOT NULL and unique")]
    IdNotUnique { table: String },

    #[error("column \"{column}\" of {table} does not exist")]
    UnknownColumn { table: String, column: String },

    #[error("column \"{column}\" is managed by pgforce and cannot be a mapped field")]
    SystemColumnInFields { column: String },

    #[error("{table} has no columns to send to Salesforce")]
    NoFields { table: String },

    #[error("pgforce's {function} cannot run as {fired} on {table}: it is made for {expected}")]
    TriggerMisused { function: &'static str, fired: String, table: String, expected: &'static str },

    #[error("{table} is not mapped to Salesforce: pgforce's {function} captures nothing from it")]
    NotMappedForCapture { function: &'static str, table: String },

    #[error("must be owner of table {table} to map it to Salesforce")]
    NotOwner { table: String },

    #[error("relationship column \"{column}\" of {table}: {reason}")]
    BadRelationship { table: String, column: String, reason: String, hint: String, code: PgSqlErrorCode },

    #[error("argument {0} must not be NULL")]
    NullArgument(&'static str),

    #[error("max_records must be 1 or more, not {0}")]
    BadMaxRecords(i32),

    #[error("{0}")]
    Internal(String),

    #[error("cannot check Salesforce for changes made since pgforce's writes: {0}")]
    SalesforceCheck(String),

    #[error("SPI: {0}")]
    Spi(#[from] pgrx::spi::Error),
}

impl PgforceError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::AlreadyMapped { .. } | Self::TableNameTaken { .. } => ERRCODE_DUPLICATE_OBJECT,
            Self::NotMapped(_) => ERRCODE_UNDEFINED_OBJECT,
            Self::NullArgument(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Self::BadMode(_)
            | Self::BadSobject(_)
            | Self::SystemColumnInFields { .. }
            | Self::NoFields { .. }
            | Self::BadMaxRecords(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::WrongKindOfTable { .. } => ERRCODE_WRONG_OBJECT_TYPE,
            Self::WrongColumnType { .. } => ERRCODE_DATATYPE_MISMATCH,
            Self::IdNotUnique { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::UnknownColumn { .. } => ERRCODE_UNDEFINED_COLUMN,
            Self::TriggerMisused { .. } => ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            Self::NotMappedForCapture { .. } | Self::NotOwner { .. } => ERRCODE_INSUFFICIENT_PRIVILEGE,
            Self::BadRelationship { code, .. } => *code,
            Self::Spi(_) | Self::Internal(_) => ERRCODE_INTERNAL_ERROR,
            Self::SalesforceCheck(_) => ERRCODE_CONNECTION_FAILURE,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::AlreadyMapped { .. } => {
                "To change the mapping, call salesforce.unmap_table() first, then salesforce.map_table() again.".into()
            }
            Self::TableNameTaken { .. } => "The trigger log records tables by name without their schema, so mapped \
                 tables need distinct names. Rename one of them."
                .into(),
            Self::NotMapped(_) => "salesforce.map_table() maps a table; the mapped tables are listed in \
                 salesforce._mapping."
                .into(),
            Self::BadMode(_) => {
                "Use 'read_write' or 'write_only' (the table's changes are sent to Salesforce), or \
                 'read_only' (Salesforce is read into the table; its own changes are recorded as READONLY, never sent)."
                    .into()
            }
            Self::BadSobject(_) => "Pass the object's API name, such as 'Contact' or 'Invoice__c'.".into(),
            Self::WrongKindOfTable { hint, .. } => (*hint).into(),
            Self::WrongColumnType { column, .. } => {
                format!("Rename or change the type of column \"{column}\" before mapping the table.")
            }
            Self::IdNotUnique { table } => {
                format!("Make it the key, for example: ALTER TABLE {table} ADD PRIMARY KEY (id);")
            }
            Self::UnknownColumn { .. } => "List existing columns only; relationship columns are named \
                 <relationship>__r__<externalidfield>."
                .into(),
            Self::SystemColumnInFields { .. } => {
                "Leave id, sfid, _hc_lastop, _hc_err and Salesforce's system fields out of the field list.".into()
            }
            Self::NoFields { .. } => "Add the columns to sync, or pass them in the fields argument.".into(),
            Self::TriggerMisused { .. } | Self::NotMappedForCapture { .. } => {
                "pgforce's triggers are installed by salesforce.map_table(); drop this one (DROP TRIGGER).".into()
            }
            Self::NotOwner { .. } => "Ask the table's owner or a superuser to map it.".into(),
            Self::BadRelationship { hint, .. } => hint.clone(),
            Self::BadMaxRecords(_) => {
                "It is how many queued log entries to plan (pgforce.batch_size is how many the worker claims).".into()
            }
            Self::SalesforceCheck(_) => "salesforce.diagnose() says why Salesforce cannot be reached; force => true \
                 undoes without looking (records changed since are then overwritten or deleted too)."
                .into(),
            Self::NullArgument(_) | Self::Spi(_) | Self::Internal(_) => return None,
        })
    }
}

impl From<PgforceError> for ErrorReport {
    #[track_caller]
    fn from(e: PgforceError) -> Self {
        let report = ErrorReport::new(e.sqlstate(), e.to_string(), "pgforce");
        match e.hint() {
            Some(hint) => report.set_hint(hint),
            None => report,
        }
    }
}

/// Raises the error as a Postgres ERROR.
pub fn raise(e: PgforceError) -> ! {
    ErrorReport::from(e).report(pgrx::PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}
