//! Alerts: what the worker tells listeners of `NOTIFY pgforce_alerts` (and the server log) when something needs an
//! operator: changes that failed for good, a change of the connection's state, throttling, a stalled queue. At most
//! one per kind per interval (a minute by default); the latest held back goes when the interval is over.
//!
//! Any role may `LISTEN` on any channel, so a payload carries no error text and no value of a row: kinds, states,
//! tables, counts and Salesforce's (or Postgres') error codes. The texts are in `sync_status` and `sync_audit`, for
//! `pgforce_monitor`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

/// The channel alerts are sent on.
pub const CHANNEL: &str = "pgforce_alerts";
/// At most one alert of each kind in this long, by default (`pgforce.alert_interval`).
pub const EVERY: Duration = Duration::from_secs(60);
/// Postgres refuses NOTIFY payloads of 8000 bytes or more.
const MAX_PAYLOAD_BYTES: usize = 7900;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// Changes failed for good (`FAILED`).
    Failed,
    /// The connection went into trouble (paused, unauthorized, a system error) or out of it.
    Connection,
    /// API usage went above `pgforce.max_api_usage`.
    Throttled,
    /// The oldest change waiting is older than `pgforce.alert_stalled_after`.
    Stalled,
    /// A reading mapping has not caught up with Salesforce for longer than `pgforce.alert_stalled_after` (and
    /// twice its read interval).
    ReadStalled,
}

impl AlertKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::Failed => "failed",
            AlertKind::Connection => "connection",
            AlertKind::Throttled => "throttled",
            AlertKind::Stalled => "stalled",
            AlertKind::ReadStalled => "read_stalled",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    /// The mapped tables concerned (none for the connection).
    pub tables: Vec<String>,
    /// How many changes failed (0 for the other kinds).
    pub count: u64,
    /// Error codes (`FIELD_CUSTOM_VALIDATION_EXCEPTION`, `23505`) or connection states, without their texts.
    pub codes: Vec<String>,
    /// What happened and where to look, in pgforce's words only.
    pub message: String,
}

impl Alert {
    /// Changes that failed for good, from their `sf_message`s (`CODE: text`): only the codes are kept.
    pub fn failed<'a>(tables: Vec<String>, messages: impl IntoIterator<Item = &'a str>) -> Alert {
        let mut codes: Vec<String> = Vec::new();
        let mut count = 0;
        for m in messages {
            count += 1;
            if let Some(code) = error_code(m) {
                if !codes.iter().any(|c| c == code) {
                    codes.push(code.to_string());
                }
            }
        }
        let message = format!(
            "{count} change{} failed and will not be retried{}: SELECT * FROM salesforce.sync_audit WHERE has_error",
            if count == 1 { "" } else { "s" },
            match tables.len() {
                0 => String::new(),
                1..=5 => format!(" ({})", tables.join(", ")),
                n => format!(" ({} and {} more)", tables[..5].join(", "), n - 5),
            }
        );
        Alert { kind: AlertKind::Failed, tables, count, codes, message }
    }

    /// The connection's state changed from `from` to `to` (Heroku Connect's names).
    pub fn connection(from: &str, to: &str) -> Alert {
        Alert {
            kind: AlertKind::Connection,
            tables: Vec::new(),
            count: 0,
            codes: vec![to.to_string()],
            message: format!(
                "the connection to Salesforce went from {from} to {to}: SELECT connection_state, connection_message FROM salesforce.sync_status"
            ),
        }
    }

    /// Pacing began; `how`: what sync_status.connection_message says of it (the pace, the backlog's time).
    pub fn throttled(used: Option<(u64, u64)>, how: Option<String>) -> Alert {
        let message = how.unwrap_or_else(|| {
            let usage = used.map(|(u, l)| format!(" ({u} of {l} API calls used today)")).unwrap_or_default();
            format!("API usage is above pgforce.max_api_usage{usage}: delivery is paced")
        });
        Alert { kind: AlertKind::Throttled, tables: Vec::new(), count: 0, codes: vec!["THROTTLED".into()], message }
    }

    pub fn stalled(table: String, age: Duration, limit: Duration) -> Alert {
        Alert {
            kind: AlertKind::Stalled,
            message: format!(
                "the oldest change waiting ({table}) is {} s old, more than pgforce.alert_stalled_after ({} s): SELECT * FROM salesforce.sync_status",
                age.as_secs(),
                limit.as_secs()
            ),
            tables: vec![table],
            count: 0,
            codes: Vec::new(),
        }
    }

    /// A reading mapping's last read that reached the end of Salesforce's changes was `lag` ago, more than `limit`.
    pub fn read_stalled(table: String, lag: Duration, limit: Duration) -> Alert {
        Alert {
            kind: AlertKind::ReadStalled,
            message: format!(
                "{table} has not caught up with Salesforce for {} s, more than {} s: SELECT read_state, read_error FROM salesforce.sync_status",
                lag.as_secs(),
                limit.as_secs()
            ),
            tables: vec![table],
            count: 0,
            codes: Vec::new(),
        }
    }

    /// The NOTIFY payload: JSON, shorter than Postgres' limit (tables and codes are cut, never the kind).
    pub fn payload(&self, held_back: u64) -> String {
        let mut tables = self.tables.clone();
        let mut codes = self.codes.clone();
        loop {
            let text = json!({
                "kind": self.kind.as_str(),
                "tables": tables,
                "count": self.count,
                "codes": codes,
                "message": self.message,
                "held_back": held_back,
            })
            .to_string();
            if text.len() < MAX_PAYLOAD_BYTES || (tables.is_empty() && codes.is_empty()) {
                return text;
            }
            if codes.len() > tables.len() {
                codes.pop();
            } else {
                tables.pop();
            }
        }
    }
}

/// The error code of an `sf_message` (`CODE: text`): Salesforce's status code or a SQLSTATE.
pub fn error_code(message: &str) -> Option<&str> {
    let (code, _) = message.split_once(':')?;
    (!code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
    .then_some(code)
}

/// Lets through at most one alert of each kind per interval (`pgforce.alert_interval`). An alert held back is not
/// lost: the latest of its kind goes when the interval is over, saying how many were held back (so a recovery soon
/// after a failure is still told).
#[derive(Debug, Default)]
pub struct Gate {
    last: HashMap<AlertKind, Instant>,
    held: HashMap<AlertKind, (Alert, u64)>,
}

impl Gate {
    /// The alert with how many of its kind were held back before it, if it may go now; otherwise it is held.
    pub fn offer(&mut self, alert: Alert, every: Duration, now: Instant) -> Option<(Alert, u64)> {
        let kind = alert.kind;
        if self.last.get(&kind).is_some_and(|t| now.duration_since(*t) < every) {
            let held = self.held.entry(kind).or_insert_with(|| (alert.clone(), 0));
            *held = (alert, held.1 + 1);
            return None;
        }
        self.last.insert(kind, now);
        let before = self.held.remove(&kind).map_or(0, |(_, n)| n);
        Some((alert, before))
    }

    /// The alerts held back whose interval is over: the latest of each kind, with how many were held back before it.
    pub fn due(&mut self, every: Duration, now: Instant) -> Vec<(Alert, u64)> {
        let ready: Vec<AlertKind> = self
            .held
            .keys()
            .copied()
            .filter(|k| self.last.get(k).is_none_or(|t| now.duration_since(*t) >= every))
            .collect();
        let mut out = Vec::new();
        for kind in ready {
            if let Some((alert, n)) = self.held.remove(&kind) {
                self.last.insert(kind, now);
                out.push((alert, n - 1));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_is_alerted_in_the_words_sync_status_uses() {
        let said = "API usage 95 of 100 is above pgforce.max_api_usage: the 5 calls left are spread over 24 hours";
        assert_eq!(Alert::throttled(Some((95, 100)), Some(said.into())).message, said);
        assert!(Alert::throttled(Some((95, 100)), None).message.contains("95 of 100"));
    }

    #[test]
    fn one_alert_per_kind_per_interval_and_the_latest_held_back_goes_after_it() {
        let mut gate = Gate::default();
        let every = EVERY;
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let paused = Alert::connection("IDLE", "PAUSED");
        let unauthorized = Alert::connection("PAUSED", "UNAUTHORIZED");
        let recovered = Alert::connection("UNAUTHORIZED", "POLLING_DB_CHANGES");
        assert_eq!(gate.offer(paused.clone(), every, t0), Some((paused, 0)));
        assert_eq!(gate.offer(unauthorized, every, at(10)), None);
        assert_eq!(gate.offer(recovered.clone(), every, at(20)), None);
        assert_eq!(gate.due(every, at(59)), [], "not before the interval is over");
        let stalled = Alert::stalled("contact".into(), Duration::from_secs(99), Duration::from_secs(90));
        assert!(gate.offer(stalled, every, at(59)).is_some(), "kinds are apart");
        assert_eq!(gate.due(every, at(60)), [(recovered, 1)], "the latest, one held back before it");
        assert_eq!(gate.due(every, at(200)), []);
        let failed = Alert::failed(vec![], ["X: y"]);
        assert_eq!(gate.offer(failed.clone(), every, at(200)), Some((failed.clone(), 0)));
        assert_eq!(gate.offer(failed.clone(), every, at(201)), None);
        assert_eq!(gate.offer(failed.clone(), every, at(202)), None);
        assert_eq!(gate.offer(failed.clone(), every, at(260)), Some((failed, 2)), "sent before due() ran");
    }

    #[test]
    fn payloads_carry_codes_never_texts_and_stay_under_the_notify_limit() {
        let a = Alert::failed(
            vec!["public.contact".into()],
            [
                "FIELD_CUSTOM_VALIDATION_EXCEPTION: Email jane@example.com is blocked",
                "FIELD_CUSTOM_VALIDATION_EXCEPTION: Email joe@example.com is blocked",
                "23505: duplicate key value violates unique constraint",
                "no code here",
            ],
        );
        let p: serde_json::Value = serde_json::from_str(&a.payload(3)).expect("json");
        assert_eq!(p["kind"], "failed");
        assert_eq!(p["count"], 4);
        assert_eq!(p["codes"], json!(["FIELD_CUSTOM_VALIDATION_EXCEPTION", "23505"]));
        assert_eq!(p["held_back"], 3);
        assert!(!a.payload(0).contains("example.com"), "no row value reaches a listener");
        let many = Alert::failed((0..2000).map(|i| format!("public.table_{i}")).collect(), ["X: y"]);
        let text = many.payload(0);
        assert!(text.len() < 8000, "{}", text.len());
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).expect("json")["kind"], "failed");
    }
}
