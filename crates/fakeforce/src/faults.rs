//! Fault injection: rules from the config file or the admin endpoint that make the stand-in misbehave the way
//! Salesforce does — slow calls, per-record errors, chunk-wide lock errors, request-level errors, connections dropped
//! after the change was committed — reproducibly, from a seeded random generator.

use crate::errors::{ApiError, RecordError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// What a request or record is doing; rules can be limited to one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Create,
    Update,
    Upsert,
    Delete,
    Query,
    Read,
    Bulk,
    Token,
    Limits,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Effect {
    /// The matching record fails with this error (inside an HTTP 200 collection result, 400 on single-record calls).
    RecordError {
        status_code: String,
        message: String,
        #[serde(default)]
        fields: Vec<String>,
    },
    /// `UNABLE_TO_LOCK_ROW` for every record of the chunk the matching record is in; the chunk is rolled back.
    LockChunk,
    /// The whole request is answered with this status and `[{"message","errorCode"}]`.
    Http { status: u16, error_code: String, message: String },
    /// The request is processed and committed, then the connection is closed without a response.
    DropAfterCommit,
    /// The connection is closed without a response and nothing is processed.
    DropBeforeCommit,
    /// The response is delayed by `ms` plus a uniform random `0..=jitter_ms`.
    Latency {
        ms: u64,
        #[serde(default)]
        jitter_ms: u64,
    },
}

impl Effect {
    fn is_record_level(&self) -> bool {
        matches!(self, Effect::RecordError { .. } | Effect::LockChunk)
    }
}

/// One rule: a scope (object, operation, field value), a chance, an optional budget of firings, and an effect.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// Fire when this field's sent (or, for deletes, stored) value equals `equals` (or contains `contains`),
    /// compared as text ignoring case. A request-level rule with a field fires for a request that sends at least
    /// one such record (a slow trigger on one record slows its whole request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// Probability of firing for each matching record or request (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Fire at most this many times, then stay quiet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// Let this many matching requests (or records) pass before firing: `after = 1` spares the first call and hits
    /// the one that follows (a call sent again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// How many matching requests (or records) were let pass for `after`.
    #[serde(default)]
    pub passed: u64,
    pub effect: Effect,
    #[serde(default)]
    pub fired: u64,
}

impl FaultRule {
    fn spent(&self) -> bool {
        self.times.is_some_and(|t| self.fired >= t)
    }

    /// Counts one match against `after`: true while matches are still let pass.
    fn let_pass(&mut self) -> bool {
        let pass = self.after.is_some_and(|a| self.passed < a);
        if pass {
            self.passed += 1;
        }
        pass
    }

    fn scope_matches(&self, object: Option<&str>, op: Operation) -> bool {
        let object_ok = match (&self.object, object) {
            (None, _) => true,
            (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
            (Some(_), None) => false,
        };
        object_ok && self.operation.is_none_or(|o| o == op)
    }

    fn value_matches(&self, value_of: &dyn Fn(&str) -> Option<Value>) -> bool {
        let Some(field) = &self.field else { return true };
        let text = match value_of(field) {
            Some(Value::String(s)) => s,
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let text = text.to_lowercase();
        let eq = self.equals.as_ref().is_none_or(|e| text == e.to_lowercase());
        let contains = self.contains.as_ref().is_none_or(|c| text.contains(&c.to_lowercase()));
        eq && contains
    }
}

/// Request-level decision for one call.
#[derive(Debug, Default)]
pub struct RequestFaults {
    pub delay: Duration,
    pub error: Option<ApiError>,
    pub drop_after_commit: bool,
    pub drop_before_commit: bool,
}

/// Per-record decision.
pub enum RecordFault {
    Error(RecordError),
    LockChunk,
}

pub struct Faults {
    pub rules: Vec<FaultRule>,
    rng: StdRng,
    /// Latency applied to every data call (config `latency_ms` / `latency_jitter_ms`).
    pub base_latency: (u64, u64),
    pub fired: u64,
}

impl Faults {
    pub fn new(seed: u64, rules: Vec<FaultRule>, base_latency: (u64, u64)) -> Self {
        Faults { rules, rng: StdRng::seed_from_u64(seed), base_latency, fired: 0 }
    }

    pub fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    fn roll(&mut self, rate: Option<f64>) -> bool {
        match rate {
            None => true,
            Some(r) if r >= 1.0 => true,
            Some(r) if r <= 0.0 => false,
            Some(r) => self.rng.random::<f64>() < r,
        }
    }

    fn jitter(&mut self, ms: u64, jitter: u64) -> Duration {
        let extra = if jitter > 0 { self.rng.random_range(0..=jitter) } else { 0 };
        Duration::from_millis(ms + extra)
    }

    /// Decides what happens to a whole data request that sends `records` (JSON objects; empty when it sends none).
    pub fn for_request(&mut self, object: Option<&str>, op: Operation, records: &[Value]) -> RequestFaults {
        let (ms, jitter) = self.base_latency;
        let mut out = RequestFaults { delay: self.jitter(ms, jitter), ..Default::default() };
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            if rule.effect.is_record_level() || rule.spent() || !rule.scope_matches(object, op) {
                continue;
            }
            if rule.field.is_some() && !records.iter().any(|r| rule.value_matches(&|f| field_of(r, f))) {
                continue;
            }
            if self.rules[i].let_pass() {
                continue;
            }
            let rate = self.rules[i].rate;
            if !self.roll(rate) {
                continue;
            }
            let effect = self.rules[i].effect.clone();
            let fired = match effect {
                Effect::Latency { ms, jitter_ms } => {
                    out.delay += self.jitter(ms, jitter_ms);
                    true
                }
                Effect::Http { status, error_code, message } if out.error.is_none() => {
                    out.error = Some(ApiError::new(status, &error_code, message));
                    true
                }
                Effect::DropAfterCommit if !out.drop_before_commit => {
                    out.drop_after_commit = true;
                    true
                }
                Effect::DropBeforeCommit => {
                    out.drop_before_commit = true;
                    true
                }
                _ => false,
            };
            if fired {
                self.rules[i].fired += 1;
                self.fired += 1;
            }
        }
        out
    }

    /// Decides whether one record fails; `value_of` reads the record's sent or stored field values.
    pub fn for_record(
        &mut self,
        object: &str,
        op: Operation,
        value_of: &dyn Fn(&str) -> Option<Value>,
    ) -> Option<RecordFault> {
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            if !rule.effect.is_record_level()
                || rule.spent()
                || !rule.scope_matches(Some(object), op)
                || !rule.value_matches(value_of)
            {
                continue;
            }
            if self.rules[i].let_pass() {
                continue;
            }
            let rate = self.rules[i].rate;
            if !self.roll(rate) {
                continue;
            }
            self.rules[i].fired += 1;
            self.fired += 1;
            return Some(match &self.rules[i].effect {
                Effect::RecordError { status_code, message, fields } => RecordFault::Error(RecordError {
                    status_code: status_code.clone(),
                    message: message.clone(),
                    fields: fields.clone(),
                }),
                _ => RecordFault::LockChunk,
            });
        }
        None
    }
}

/// A field of a sent record, by name ignoring case.
fn field_of(record: &Value, field: &str) -> Option<Value> {
    record.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(field)).map(|(_, v)| v.clone())
}

/// Salesforce's lock error, which fails every record of the chunk.
pub fn lock_error(ids: &[String]) -> RecordError {
    let shown = if ids.is_empty() { String::new() } else { format!(" Record Ids: {}", ids.join(", ")) };
    RecordError::new(
        "UNABLE_TO_LOCK_ROW",
        format!("unable to obtain exclusive access to this record or {} records.{shown}", ids.len().max(1)),
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(effect: Effect) -> FaultRule {
        FaultRule {
            object: None,
            operation: None,
            field: None,
            equals: None,
            contains: None,
            rate: None,
            times: None,
            after: None,
            passed: 0,
            effect,
            fired: 0,
        }
    }

    fn once_after_one() -> FaultRule {
        let mut r = rule(Effect::Http { status: 503, error_code: "SERVER_UNAVAILABLE".into(), message: "down".into() });
        r.after = Some(1);
        r
    }

    #[test]
    fn times_limits_firings_and_rates_are_reproducible() {
        let mut once =
            rule(Effect::Http { status: 503, error_code: "SERVER_UNAVAILABLE".into(), message: "down".into() });
        once.times = Some(1);
        let mut f = Faults::new(7, vec![once], (0, 0));
        assert!(f.for_request(None, Operation::Create, &[]).error.is_some());
        assert!(f.for_request(None, Operation::Create, &[]).error.is_none());

        let mut second = once_after_one();
        second.times = Some(1);
        let mut f = Faults::new(7, vec![second], (0, 0));
        let errors: Vec<bool> = (0..3).map(|_| f.for_request(None, Operation::Create, &[]).error.is_some()).collect();
        assert_eq!(errors, [false, true, false], "after = 1 spares the first call only");

        let mut half = rule(Effect::DropAfterCommit);
        half.rate = Some(0.5);
        let draw = |seed| {
            let mut f = Faults::new(seed, vec![half.clone()], (0, 0));
            (0..64).map(|_| f.for_request(None, Operation::Update, &[]).drop_after_commit).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        let hits = draw(3).iter().filter(|b| **b).count();
        assert!((16..=48).contains(&hits), "about half of 64 draws fire, got {hits}");
    }

    #[test]
    fn record_rules_match_field_values() {
        let mut r = rule(Effect::RecordError {
            status_code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
            message: "Email is blocked".into(),
            fields: vec![],
        });
        r.field = Some("Email".into());
        r.contains = Some("@blocked.".into());
        r.object = Some("Contact".into());
        let mut f = Faults::new(1, vec![r], (0, 0));
        let blocked = |_: &str| Some(Value::String("X@Blocked.example".into()));
        let fine = |_: &str| Some(Value::String("x@example.com".into()));
        assert!(f.for_record("Contact", Operation::Create, &fine).is_none());
        assert!(f.for_record("Account", Operation::Create, &blocked).is_none());
        assert!(
            matches!(f.for_record("contact", Operation::Create, &blocked), Some(RecordFault::Error(e)) if e.message == "Email is blocked")
        );
    }

    #[test]
    fn request_rules_with_a_field_fire_for_requests_that_send_a_matching_record() {
        let mut slow = rule(Effect::Latency { ms: 900, jitter_ms: 0 });
        slow.field = Some("LastName".into());
        slow.equals = Some("slow".into());
        let mut f = Faults::new(1, vec![slow], (0, 0));
        let fine = [serde_json::json!({"LastName": "Fine"})];
        let mixed = [serde_json::json!({"LastName": "Fine"}), serde_json::json!({"lastname": "SLOW"})];
        assert_eq!(f.for_request(None, Operation::Create, &fine).delay, Duration::ZERO);
        assert_eq!(f.for_request(None, Operation::Create, &[]).delay, Duration::ZERO);
        assert_eq!(f.for_request(None, Operation::Create, &mixed).delay, Duration::from_millis(900));
    }
}
