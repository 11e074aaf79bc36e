//! `POST /composite`: up to 25 subrequests in one call, which counts once against the API limit; at most 5 of them
//! queries (Query, QueryAll) or sObject Collections. Each subrequest is answered on its own (`allOrNone` false:
//! fakeforce serves reads through it, which have nothing to roll back).

use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::reply::Reply;

const MAX_SUBREQUESTS: usize = 25;
const MAX_QUERIES: usize = 5;

/// A query string's pairs, decoded.
type Query = Vec<(String, String)>;

/// One subrequest, parsed: its method, its path below `/services/data/<version>/` as segments, and its query.
pub struct Subrequest {
    pub method: hyper::Method,
    pub version: String,
    pub segments: Vec<String>,
    pub query: Query,
    pub body: Vec<u8>,
}

/// Runs the composite request `body`, each subrequest through `route`.
pub fn run(body: &[u8], mut route: impl FnMut(&Subrequest) -> Reply) -> Result<Reply, ApiError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "JSON_PARSER_ERROR", format!("composite request: {e}")))?;
    let subrequests = request
        .get("compositeRequest")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::new(400, "INVALID_INPUT", "compositeRequest: a list of subrequests is required"))?;
    if subrequests.is_empty() || subrequests.len() > MAX_SUBREQUESTS {
        return Err(ApiError::new(
            400,
            "INVALID_INPUT",
            format!("A composite request takes 1 to {MAX_SUBREQUESTS} subrequests, not {}", subrequests.len()),
        ));
    }
    let mut parsed = Vec::new();
    for sub in subrequests {
        let reference = sub.get("referenceId").and_then(Value::as_str).unwrap_or_default().to_string();
        let method = sub.get("method").and_then(Value::as_str).unwrap_or_default();
        let url = sub.get("url").and_then(Value::as_str).unwrap_or_default();
        let method = hyper::Method::from_bytes(method.as_bytes())
            .map_err(|_| ApiError::new(400, "INVALID_INPUT", format!("{reference}: method {method:?}")))?;
        let parsed_url = parse_url(url).ok_or_else(|| {
            ApiError::new(400, "INVALID_INPUT", format!("{reference}: url {url:?} is not under /services/data/vXX.X/"))
        })?;
        let body = sub.get("body").map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
        parsed.push((
            reference,
            Subrequest { method, version: parsed_url.0, segments: parsed_url.1, query: parsed_url.2, body },
        ));
    }
    let queries = parsed
        .iter()
        .filter(|(_, s)| {
            matches!(s.segments.first().map(String::as_str), Some("query" | "queryAll"))
                || s.segments.first().is_some_and(|f| f == "composite")
        })
        .count();
    if queries > MAX_QUERIES {
        return Err(ApiError::new(
            400,
            "INVALID_INPUT",
            format!("A composite request takes at most {MAX_QUERIES} query or collection subrequests, not {queries}"),
        ));
    }
    let mut answers = Vec::new();
    for (reference, sub) in &parsed {
        let reply = route(sub);
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        answers
            .push(json!({"body": body, "httpHeaders": {}, "httpStatusCode": reply.status, "referenceId": reference}));
    }
    Ok(Reply::json(200, &json!({"compositeResponse": answers})))
}

/// `/services/data/v62.0/queryAll?q=…` → ("v62.0", ["queryAll"], [("q", "…")]).
fn parse_url(url: &str) -> Option<(String, Vec<String>, Query)> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let rest = path.strip_prefix("/services/data/")?;
    let mut segments = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned());
    let version = segments.next()?;
    let query = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    Some((version, segments.collect(), query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_version_segments_and_query() {
        let (v, s, q) = parse_url("/services/data/v62.0/queryAll?q=SELECT+Id+FROM+Contact%20WHERE").expect("url");
        assert_eq!(
            (v.as_str(), s, q),
            ("v62.0", vec!["queryAll".to_string()], vec![("q".into(), "SELECT Id FROM Contact WHERE".into())])
        );
        assert!(parse_url("/services/oauth2/token").is_none());
    }

    #[test]
    fn more_than_five_queries_are_refused_and_each_subrequest_is_answered() {
        let sub = |n: usize| json!({"method": "GET", "url": "/services/data/v62.0/queryAll?q=x", "referenceId": format!("r{n}")});
        let six: Vec<Value> = (0..6).map(sub).collect();
        let body = serde_json::to_vec(&json!({"compositeRequest": six})).expect("json");
        assert_eq!(run(&body, |_| Reply::json(200, &json!({}))).expect_err("six queries").status, 400);
        let two: Vec<Value> = (0..2).map(sub).collect();
        let body = serde_json::to_vec(&json!({"compositeRequest": two})).expect("json");
        let reply = run(&body, |s| Reply::json(200, &json!({"q": s.query[0].1}))).expect("two");
        let answer: Value = serde_json::from_slice(&reply.body).expect("answer");
        assert_eq!(answer["compositeResponse"][1]["referenceId"], json!("r1"));
        assert_eq!(answer["compositeResponse"][0]["body"]["q"], json!("x"));
    }
}
