//! Retry rules: which Salesforce errors are worth another attempt, how long to wait (exponential backoff with full
//! jitter), and when the whole connection should pause (circuit breaker).

use rand::Rng;
use std::time::{Duration, Instant};

/// Per-record error codes that clear up by themselves (reference §2.7).
const TRANSIENT_CODES: &[&str] = &[
    "UNABLE_TO_LOCK_ROW",
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE",
    "INVALID_READ_ONLY_USER_DML",
    "TOO_MANY_APEX_REQUESTS",
    "SERVER_UNAVAILABLE",
    "API_CURRENTLY_DISABLED",
    "QUERY_TIMEOUT",
    "REQUEST_RUNNING_TOO_LONG",
    "UNKNOWN_EXCEPTION",
];

/// Whether a record that failed with `code` (and `message`) should be tried again. An Apex or flow failure that
/// wraps a lock error is transient too, and so is a parent referenced by external id that does not exist yet: it
/// may be in flight in the same run.
pub fn is_transient(code: &str, message: &str) -> bool {
    TRANSIENT_CODES.contains(&code)
        || (code == "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY" && message.contains("UNABLE_TO_LOCK_ROW"))
        || (code == "INVALID_FIELD" && message.starts_with("Foreign key external ID"))
}

/// Full jitter: a uniform wait in `0..=min(cap, base * 2^attempt)` (attempt counts from 0).
pub fn backoff(attempt: u32, base: Duration, cap: Duration, rng: &mut impl Rng) -> Duration {
    let ceiling = base.saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX)).min(cap);
    let millis = ceiling.as_millis().min(u64::MAX as u128) as u64;
    Duration::from_millis(rng.random_range(0..=millis))
}

/// Pauses the connection after connection-level failures: each consecutive failure doubles the pause (with
/// jitter) up to `cap`; a success closes it again.
#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    paused_until: Option<Instant>,
    base: Duration,
    cap: Duration,
}

impl Breaker {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Breaker { failures: 0, paused_until: None, base, cap }
    }

    pub fn failure(&mut self, rng: &mut impl Rng) -> Duration {
        // At least `base`, so a flapping server is not hammered; jitter spreads the reconnects.
        let wait = self.base + backoff(self.failures, self.base, self.cap, rng);
        self.failures = self.failures.saturating_add(1);
        self.paused_until = Some(Instant::now() + wait);
        wait
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.paused_until = None;
    }

    /// How long until calls may be made again (zero when closed).
    pub fn remaining(&self) -> Duration {
        self.paused_until.map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()))
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn classifies_errors() {
        assert!(is_transient("UNABLE_TO_LOCK_ROW", ""));
        assert!(is_transient("ALL_OR_NONE_OPERATION_ROLLED_BACK", ""));
        assert!(is_transient(
            "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
            "MyTrigger: execution of AfterUpdate caused by: System.DmlException: UNABLE_TO_LOCK_ROW"
        ));
        assert!(!is_transient("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "MyTrigger: validation failed"));
        assert!(!is_transient("REQUIRED_FIELD_MISSING", ""));
        assert!(!is_transient("DUPLICATE_VALUE", ""));
        assert!(is_transient(
            "INVALID_FIELD",
            "Foreign key external ID: A-1 not found for field External_Id__c in entity Account"
        ));
        assert!(!is_transient("INVALID_FIELD", "No such column 'x' on sobject of type Contact"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut rng = StdRng::seed_from_u64(1);
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for attempt in 0..40 {
            let ceiling = (100u64 << attempt.min(20)).min(5000);
            let d = backoff(attempt, base, cap, &mut rng);
            assert!(d <= Duration::from_millis(ceiling), "attempt {attempt}: {d:?}");
        }
        let late: Vec<Duration> = (0..50).map(|_| backoff(6, base, cap, &mut rng)).collect();
        assert!(late.iter().any(|d| *d > Duration::from_millis(1000)), "jitter spreads over the whole range");
    }

    #[test]
    fn breaker_opens_and_closes() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut b = Breaker::new(Duration::from_millis(50), Duration::from_secs(2));
        assert_eq!(b.remaining(), Duration::ZERO);
        let w = b.failure(&mut rng);
        assert!(w >= Duration::from_millis(50));
        assert!(b.remaining() > Duration::ZERO);
        b.failure(&mut rng);
        assert_eq!(b.consecutive_failures(), 2);
        b.success();
        assert_eq!((b.remaining(), b.consecutive_failures()), (Duration::ZERO, 0));
    }
}
