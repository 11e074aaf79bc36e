//! The requests the Salesforce client made, as `salesforce.sync_requests` keeps them (pg_net's `_http_response`,
//! pg_cron's `job_run_details`): when, method, path, records sent, HTTP status, milliseconds, error code. The client
//! notes each exchange here; the worker takes them after its network calls and writes them in a transaction of
//! its own. Paths are kept without their query string (a delete's ids, a query's SOQL: row values, not a trace).
//! It also counts the API calls pgforce itself made, which pacing spends (never the calls of other integrations of
//! the org, which Salesforce's usage header includes).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::salesforce::CallError;

/// At most this many requests wait to be written: a worker that cannot write keeps the newest.
pub const MAX_WAITING: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub at: SystemTime,
    pub method: &'static str,
    pub path: String,
    pub records: u32,
    /// None: no answer (not connected, timed out, connection lost).
    pub status: Option<u16>,
    pub duration: Duration,
    pub error_code: Option<String>,
}

#[derive(Default)]
pub struct Journal {
    waiting: Mutex<VecDeque<Request>>,
    dropped: AtomicU64,
    api_calls: AtomicU64,
}

impl Journal {
    /// Notes one exchange; `api_call`: it counts against the org's API allocation (a login or the version list
    /// does not).
    pub fn note(&self, request: Request, api_call: bool) {
        if api_call {
            self.api_calls.fetch_add(1, Ordering::Relaxed);
        }
        let mut waiting = crate::salesforce::lock(&self.waiting);
        if waiting.len() >= MAX_WAITING {
            waiting.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        waiting.push_back(request);
    }

    /// The requests noted since the last take, oldest first, and how many were dropped meanwhile.
    pub fn take(&self) -> (Vec<Request>, u64) {
        let taken: Vec<Request> = crate::salesforce::lock(&self.waiting).drain(..).collect();
        (taken, self.dropped.swap(0, Ordering::Relaxed))
    }

    /// Puts back requests that could not be written (before any noted since), within the bound.
    pub fn put_back(&self, requests: Vec<Request>) {
        let mut waiting = crate::salesforce::lock(&self.waiting);
        for r in requests.into_iter().rev() {
            if waiting.len() >= MAX_WAITING {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                waiting.push_front(r);
            }
        }
    }

    /// API calls made by this client since it was created.
    pub fn api_calls(&self) -> u64 {
        self.api_calls.load(Ordering::Relaxed)
    }
}

/// A path as the journal keeps it: without the query string.
pub fn path_only(path: &str) -> String {
    path.split('?').next().unwrap_or(path).to_string()
}

/// The error code of a failed exchange, as sync_requests shows it.
pub fn error_code(e: &CallError) -> String {
    match e {
        CallError::Unavailable(_) => "UNAVAILABLE".into(),
        CallError::Unauthorized(_) => "UNAUTHORIZED".into(),
        CallError::Rejected { code, .. } | CallError::Failed { code, .. } => code.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: u32) -> Request {
        Request {
            at: SystemTime::UNIX_EPOCH,
            method: "GET",
            path: format!("/r/{n}"),
            records: n,
            status: Some(200),
            duration: Duration::from_millis(3),
            error_code: None,
        }
    }

    #[test]
    fn a_full_journal_keeps_the_newest_and_counts_what_it_dropped() {
        let j = Journal::default();
        for n in 0..(MAX_WAITING as u32 + 5) {
            j.note(request(n), n % 2 == 0);
        }
        let (taken, dropped) = j.take();
        assert_eq!((taken.len(), dropped), (MAX_WAITING, 5));
        assert_eq!(taken[0].records, 5, "the oldest went");
        assert_eq!(j.api_calls(), (MAX_WAITING as u64 + 5).div_ceil(2), "API calls are counted, not others");
        assert_eq!(j.take(), (Vec::new(), 0));
    }

    #[test]
    fn requests_put_back_come_before_newer_ones() {
        let j = Journal::default();
        j.note(request(1), true);
        let (taken, _) = j.take();
        j.note(request(2), true);
        j.put_back(taken);
        let (again, _) = j.take();
        assert_eq!(again.iter().map(|r| r.records).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn paths_lose_their_query_and_errors_keep_their_code() {
        assert_eq!(
            path_only("/services/data/v62.0/composite/sobjects?ids=001,002"),
            "/services/data/v62.0/composite/sobjects"
        );
        assert_eq!(error_code(&CallError::Unavailable("x".into())), "UNAVAILABLE");
        assert_eq!(
            error_code(&CallError::Rejected { status: 400, code: "JSON_PARSER_ERROR".into(), message: String::new() }),
            "JSON_PARSER_ERROR"
        );
    }
}
