//! Composite reads: several GET subrequests (queries, `sobjects/X/deleted`) in one call, which Salesforce counts
//! once against the API limit ("The entire series of requests counts as a single call"); at most 25 subrequests,
//! at most 5 of them queries.

use serde_json::{json, Value};

use super::{answer_error, CallError, Client};

/// Subrequests one Composite call takes at most.
pub const MAX_SUBREQUESTS: usize = 25;
/// Query subrequests one Composite call takes at most.
pub const MAX_QUERIES: usize = 5;

/// `path?name=value` with the value encoded, for a subrequest's `url`.
pub fn url(path: &str, params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        return path.to_string();
    }
    let query: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    format!("{path}?{query}")
}

impl Client {
    /// Sends `urls` (paths below the instance, each with its query) as the GET subrequests of one Composite call.
    /// Returns each subrequest's answer in order: its body, or the error its status means. The call itself failing
    /// (an outage, refused credentials) is the outer error.
    pub fn composite_get(&self, urls: &[String]) -> Result<Vec<Result<Value, CallError>>, CallError> {
        let requests: Vec<Value> = urls
            .iter()
            .enumerate()
            .map(|(n, url)| json!({"method": "GET", "url": url, "referenceId": format!("r{n}")}))
            .collect();
        let body = serde_json::to_vec(&json!({"allOrNone": false, "compositeRequest": requests})).unwrap_or_default();
        let path = format!("/services/data/v{}/composite", self.api_version());
        let text = self.rest("POST", &path, Some(("application/json", &body)))?;
        let answer: Value = serde_json::from_str(&text).map_err(|e| CallError::Failed {
            code: "UNEXPECTED_ANSWER".into(),
            message: format!("a Composite answer that is not JSON: {e}"),
        })?;
        Ok(split(&answer, urls.len()))
    }
}

/// The subrequests' answers of a Composite answer, in the order they were sent (by `referenceId` `r<n>`).
fn split(answer: &Value, count: usize) -> Vec<Result<Value, CallError>> {
    let list = answer.get("compositeResponse").and_then(Value::as_array).cloned().unwrap_or_default();
    (0..count)
        .map(|n| {
            let reference = format!("r{n}");
            let Some(sub) = list.iter().find(|s| s.get("referenceId").and_then(Value::as_str) == Some(&reference))
            else {
                return Err(CallError::Failed {
                    code: "UNEXPECTED_ANSWER".into(),
                    message: format!("the Composite answer has no subrequest {reference}"),
                });
            };
            let status = sub.get("httpStatusCode").and_then(Value::as_u64).unwrap_or(0) as u16;
            let body = sub.get("body").cloned().unwrap_or(Value::Null);
            if (200..300).contains(&status) {
                Ok(body)
            } else {
                Err(answer_error(status, &body, &body.to_string()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_back_in_the_order_sent_with_their_errors() {
        let answer = json!({"compositeResponse": [
            {"referenceId": "r1", "httpStatusCode": 400,
             "body": [{"errorCode": "INVALID_REPLICATION_DATE", "message": "too early"}]},
            {"referenceId": "r0", "httpStatusCode": 200, "body": {"totalSize": 0, "records": []}},
        ]});
        let parts = split(&answer, 3);
        assert_eq!(parts[0].as_ref().ok(), Some(&json!({"totalSize": 0, "records": []})));
        match &parts[1] {
            Err(CallError::Rejected { code, .. }) => assert_eq!(code, "INVALID_REPLICATION_DATE"),
            other => panic!("{other:?}"),
        }
        assert!(parts[2].is_err(), "a subrequest the answer lacks is an error, never an empty page");
        assert_eq!(url("/q", &[("q", "SELECT Id FROM A WHERE B > 1")]), "/q?q=SELECT+Id+FROM+A+WHERE+B+%3E+1");
    }
}
