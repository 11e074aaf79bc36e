//! Delivery counters per mapping since the worker started (`salesforce.sync_metrics`): records sent, succeeded,
//! failed and retried, requests, request bytes and API calls. The worker counts as it goes and writes them out at
//! most once a second; latency percentiles are computed from the log by the view.

use std::collections::HashMap;

use crate::delivery::outcome::Outcomes;
use crate::log::LogState;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records put in requests (a merged write counts once).
    pub sent: u64,
    /// Log entries that ended `SUCCESS`, `FAILED`, or went back to the queue after a failed attempt.
    pub succeeded: u64,
    pub failed: u64,
    /// Entries that failed an attempt and went back to the queue to be tried again.
    pub retried: u64,
    /// Entries an outage put back in the queue at no attempt's cost (sent again after it: not retries).
    pub outage_requeued: u64,
    /// Calls that carried the mapping's records (as planned: a call Salesforce refuses as a whole is split and sent
    /// again), and their bodies' bytes as JSON.
    pub requests: u64,
    pub bytes: u64,
    /// Salesforce API calls made for the mapping: its requests, and the searches for its inserts in doubt.
    pub api_calls: u64,
}

/// The counters of every mapping (by `_trigger_log.table_name`), and whether they changed since written.
#[derive(Debug, Default)]
pub struct Metrics {
    by_table: HashMap<String, Counters>,
    changed: bool,
}

impl Metrics {
    /// One request of a mapping's records (a batch holds one mapping's) and its body's bytes.
    pub fn request(&mut self, table: &str, records: usize, bytes: usize) {
        let c = self.by_table.entry(table.to_string()).or_default();
        c.sent += records as u64;
        c.bytes += bytes as u64;
        c.requests += 1;
        c.api_calls += 1;
        self.changed = true;
    }

    /// Another API call made for a mapping (a search for inserts in doubt).
    pub fn api_call(&mut self, table: &str) {
        self.by_table.entry(table.to_string()).or_default().api_calls += 1;
        self.changed = true;
    }

    /// Recorded outcomes; `table_of` names each log id's mapping.
    pub fn outcomes(&mut self, outcomes: &Outcomes, table_of: impl Fn(i64) -> Option<String>) {
        for l in &outcomes.log {
            let Some(table) = table_of(l.id) else { continue };
            let c = self.by_table.entry(table).or_default();
            match l.state {
                LogState::Success => c.succeeded += 1,
                LogState::Failed => c.failed += 1,
                LogState::New if l.attempts > 0 && l.message.is_some() => c.retried += 1,
                // Unsent or unanswered in an outage (a child waiting for its parent has a retry time, not doubt).
                LogState::New if l.in_doubt || l.retry_in.is_none() => c.outage_requeued += 1,
                _ => continue,
            }
            self.changed = true;
        }
    }

    /// Marks the counters as not written (writing them failed).
    pub fn unwritten(&mut self) {
        self.changed = true;
    }

    /// The counters to write, if they changed since the last call.
    pub fn take_changed(&mut self) -> Option<Vec<(String, Counters)>> {
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        let mut all: Vec<(String, Counters)> = self.by_table.iter().map(|(t, c)| (t.clone(), *c)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Some(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::outcome::LogOutcome;

    fn entry(id: i64, state: LogState, attempts: i32, message: Option<&str>) -> LogOutcome {
        LogOutcome {
            id,
            state,
            message: message.map(str::to_string),
            sfid: None,
            attempts,
            retry_in: None,
            in_doubt: false,
            result: None,
            depth: None,
        }
    }

    #[test]
    fn requests_and_outcomes_count_per_mapping() {
        let mut m = Metrics::default();
        assert_eq!(m.take_changed(), None);
        m.request("contact", 2, 150);
        m.request("account", 1, 10);
        m.request("contact", 1, 20);
        m.api_call("contact");
        let outcomes = Outcomes {
            log: vec![
                entry(1, LogState::Success, 0, None),
                entry(2, LogState::Merged, 0, None),
                entry(3, LogState::Failed, 1, Some("X: y")),
                entry(4, LogState::New, 1, Some("UNABLE_TO_LOCK_ROW: busy (attempt 1 of 5, retrying)")),
                entry(5, LogState::New, 0, None),
                entry(6, LogState::Success, 0, None),
                LogOutcome { retry_in: Some(std::time::Duration::from_secs(1)), ..entry(7, LogState::New, 0, None) },
            ],
            ..Outcomes::default()
        };
        m.outcomes(&outcomes, |id| Some(if id == 6 { "account" } else { "contact" }.to_string()));
        let all = m.take_changed().expect("changed");
        assert_eq!(
            all,
            [
                (
                    "account".to_string(),
                    Counters { sent: 1, succeeded: 1, requests: 1, bytes: 10, api_calls: 1, ..Counters::default() }
                ),
                (
                    "contact".to_string(),
                    Counters {
                        sent: 3,
                        succeeded: 1,
                        failed: 1,
                        retried: 1,
                        outage_requeued: 1,
                        requests: 2,
                        bytes: 170,
                        api_calls: 3
                    }
                )
            ]
        );
        assert_eq!(m.take_changed(), None, "written: nothing new");
    }
}
