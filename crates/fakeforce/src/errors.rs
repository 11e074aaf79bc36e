//! The two error shapes of the REST API: per-record errors inside collection results (`statusCode`) and request-level
//! errors in the array envelope (`errorCode`) with their own HTTP status.

use serde_json::{json, Value};

/// One record's failure, as it appears in a SaveResult's `errors` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub status_code: String,
    pub message: String,
    pub fields: Vec<String>,
}

impl RecordError {
    pub fn new(status_code: &str, message: impl Into<String>, fields: &[&str]) -> Self {
        RecordError {
            status_code: status_code.to_string(),
            message: message.into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"statusCode": self.status_code, "message": self.message, "fields": self.fields})
    }

    /// The same error in the array envelope of single-record endpoints (`errorCode` instead of `statusCode`).
    pub fn to_envelope(&self) -> Value {
        json!([{"message": self.message, "errorCode": self.status_code, "fields": self.fields}])
    }

    /// `sf__Error` of Bulk API 2.0 failed results: `CODE:message:field,field` (`--` when no fields).
    pub fn to_bulk(&self) -> String {
        let fields = if self.fields.is_empty() { "--".to_string() } else { self.fields.join(",") };
        format!("{}:{}:{}", self.status_code, self.message, fields)
    }

    pub fn rolled_back() -> Self {
        RecordError::new(
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "Record rolled back because not all records were valid and the request was using AllOrNone header",
            &[],
        )
    }
}

/// A whole request refused: HTTP status + `[{"message", "errorCode"}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub error_code: String,
    pub message: String,
    pub fields: Option<Vec<String>>,
}

impl ApiError {
    pub fn new(status: u16, error_code: &str, message: impl Into<String>) -> Self {
        ApiError { status, error_code: error_code.to_string(), message: message.into(), fields: None }
    }

    pub fn with_fields(mut self, fields: &[&str]) -> Self {
        self.fields = Some(fields.iter().map(|f| f.to_string()).collect());
        self
    }

    pub fn body(&self) -> Value {
        match &self.fields {
            Some(fields) => json!([{"message": self.message, "errorCode": self.error_code, "fields": fields}]),
            None => json!([{"message": self.message, "errorCode": self.error_code}]),
        }
    }

    pub fn invalid_session() -> Self {
        ApiError::new(401, "INVALID_SESSION_ID", "Session expired or invalid")
    }

    pub fn not_found() -> Self {
        ApiError::new(404, "NOT_FOUND", "The requested resource does not exist")
    }

    pub fn limit_exceeded() -> Self {
        ApiError::new(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    }

    pub fn json_parse(detail: impl std::fmt::Display) -> Self {
        ApiError::new(400, "JSON_PARSER_ERROR", format!("{detail}"))
    }

    pub fn from_record(status: u16, e: &RecordError) -> Self {
        ApiError {
            status,
            error_code: e.status_code.clone(),
            message: e.message.clone(),
            fields: Some(e.fields.clone()),
        }
    }
}
