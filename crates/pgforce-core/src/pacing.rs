//! Pacing by budget: above `pgforce.max_api_usage` the calls Salesforce still allows today are spread over its
//! 24-hour window, so delivery slows down instead of running the org out of API calls (or stopping).

use std::time::Duration;

/// Salesforce's API allocation is counted over a rolling 24 hours.
pub const WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// The shortest pause between cycles once paced (a budget far from spent paces no faster than this).
pub const MIN_PACE: Duration = Duration::from_secs(5);
/// The longest: usage is looked at again at least this often (a budget fully spent recovers as the window rolls).
pub const MAX_PACE: Duration = Duration::from_secs(60 * 60);

/// A pause at least this long is decided again on the org's usage asked of Salesforce (`/limits`) first: the
/// header of the last answer may be stale, or show a burst since spread.
pub const RECHECK_ABOVE: Duration = Duration::from_secs(5 * 60);

/// The pause after a cycle that spent `spent` calls, with `used` of `limit` calls used: each call gets its share
/// of the window, `WINDOW / (limit - used)`.
pub fn pace(used: u64, limit: u64, spent: u64) -> Duration {
    let remaining = limit.saturating_sub(used);
    if remaining == 0 {
        return MAX_PACE;
    }
    let per_call = WINDOW.as_secs_f64() / remaining as f64;
    Duration::from_secs_f64((per_call * spent.max(1) as f64).min(MAX_PACE.as_secs_f64())).max(MIN_PACE)
}

/// The calls a Bulk job takes: create, upload, close, a few polls, three result sets.
pub const BULK_JOB_CALLS: usize = 8;

/// `pgforce.bulk_threshold` while paced: Bulk jobs are preferred as soon as a job costs fewer calls than the
/// collections calls its records would take (`BULK_JOB_CALLS` × 200 records), when the threshold is higher. Never
/// turns Bulk on where it is off (0).
pub fn bulk_threshold_when_paced(configured: usize) -> usize {
    let cheaper = BULK_JOB_CALLS * crate::delivery::plan::MAX_RECORDS_PER_CALL;
    if configured == 0 {
        0
    } else {
        configured.min(cheaper)
    }
}

/// How long `backlog` changes take at `per_cycle` changes each `pace`.
pub fn backlog_time(backlog: u64, per_cycle: u64, pace: Duration) -> Duration {
    let cycles = backlog.div_ceil(per_cycle.max(1));
    pace.saturating_mul(cycles.min(u32::MAX as u64) as u32)
}

/// A duration as people read it: `45 s`, `12 min`, `3.5 h`, `2.0 days`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 90.0 * 60.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 36.0 * 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86400.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tight_budget_prefers_bulk_jobs_once_they_cost_fewer_calls() {
        assert_eq!(bulk_threshold_when_paced(2000), 1600, "a job of 1,600 records costs 8 calls, collections 8");
        assert_eq!(bulk_threshold_when_paced(500), 500, "a lower threshold stays");
        assert_eq!(bulk_threshold_when_paced(0), 0, "Bulk off stays off");
    }

    #[test]
    fn the_remaining_budget_is_spread_over_the_window() {
        // 86,400 calls left: one a second; a cycle of 10 calls waits 10 s.
        assert_eq!(pace(13_600, 100_000, 10), Duration::from_secs(10));
        // Plenty left: never faster than MIN_PACE.
        assert_eq!(pace(0, 10_000_000, 1), MIN_PACE);
        // Little left: at most MAX_PACE, and so when nothing is left.
        assert_eq!(pace(99_999, 100_000, 3), MAX_PACE);
        assert_eq!(pace(100_000, 100_000, 3), MAX_PACE);
        assert_eq!(backlog_time(4000, 200, Duration::from_secs(10)), Duration::from_secs(200));
        assert_eq!(human(Duration::from_secs(200)), "3 min");
        assert_eq!(human(Duration::from_secs(5 * 3600)), "5.0 h");
    }
}
