//! An HTTP answer before it is put on the wire, so handlers stay free of the server's types.

use crate::errors::ApiError;
use serde_json::Value;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Self {
        Reply {
            status,
            content_type: Some("application/json;charset=UTF-8"),
            headers: Vec::new(),
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    pub fn empty(status: u16) -> Self {
        Reply { status, content_type: None, headers: Vec::new(), body: Vec::new() }
    }

    pub fn csv(body: Vec<u8>) -> Self {
        Reply { status: 200, content_type: Some("text/csv"), headers: Vec::new(), body }
    }

    pub fn error(e: &ApiError) -> Self {
        Reply::json(e.status, &e.body())
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply::error(&e)
    }
}
