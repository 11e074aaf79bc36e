//! What the worker tells operators when something needs them: alerts on `NOTIFY pgforce_alerts`, kept in
//! `sync_alerts` and logged, at most one per kind per `pgforce.alert_interval` (the latest held back goes when the
//! interval is over, if it is still true), and the check for a queue that stopped moving.

use std::time::{Duration, Instant};

use pgforce_core::alert::{self, Alert, AlertKind, Gate};
use pgforce_core::config::Config;
use pgforce_core::delivery::outcome::Outcomes;
use pgforce_core::log::LogState;
use pgrx::datum::DatumWithOid;

use super::db::Db;
use super::status::Reporter;

/// How often the worker looks for a stalled queue (`pgforce.alert_stalled_after`).
const STALL_CHECK_EVERY: Duration = Duration::from_secs(30);

pub(crate) struct Alerts {
    /// Which alerts may go now (one per kind per `interval`).
    gate: Gate,
    /// `pgforce.alert_interval`, as of the last cycle.
    pub(crate) interval: Duration,
    /// When the worker last looked for a stalled queue.
    last_stall_check: Option<Instant>,
}

impl Default for Alerts {
    fn default() -> Alerts {
        Alerts { gate: Gate::default(), interval: alert::EVERY, last_stall_check: None }
    }
}

impl Alerts {
    /// Sends an alert (`NOTIFY pgforce_alerts`) and logs it as a WARNING, unless one of its kind went less than
    /// `pgforce.alert_interval` ago (it is then held, and the latest held goes when the interval is over).
    pub(crate) fn offer(&mut self, db: &mut Db, reporter: &Reporter, alert: Alert) {
        if let Some((alert, held_back)) = self.gate.offer(alert, self.interval, Instant::now()) {
            send(db, reporter, &alert, held_back);
        }
    }

    /// Sends the alerts held back whose interval is over, if what they say is still true (a failure fixed, or a
    /// connection back, meanwhile is not alerted late).
    pub(crate) fn send_due(&mut self, db: &mut Db, reporter: &Reporter) {
        for (alert, held_back) in self.gate.due(self.interval, Instant::now()) {
            if still_true(db, reporter, &alert) {
                send(db, reporter, &alert, held_back);
            }
        }
    }

    /// Alerts when the oldest change waiting (of a mapping not paused) is older than `pgforce.alert_stalled_after`.
    pub(crate) fn check_stalled(&mut self, db: &mut Db, reporter: &Reporter, config: &Config) {
        let Some(limit) = config.alert_stalled_after else { return };
        if self.last_stall_check.is_some_and(|t| t.elapsed() < STALL_CHECK_EVERY.min(limit)) {
            return;
        }
        self.last_stall_check = Some(Instant::now());
        let oldest = db.with_statements(|c, st| {
            let mut oldest = None;
            for row in c.select(&st.engine.oldest_waiting, None, &[])? {
                if let (Some(age), Some(table)) = (row.get::<f64>(1)?, row.get::<String>(2)?) {
                    oldest = Some((Duration::from_secs_f64(age.max(0.0)), table));
                }
            }
            Ok(oldest)
        });
        if let Ok(Some((age, table))) = oldest {
            if age > limit {
                self.offer(db, reporter, Alert::stalled(table, age, limit));
            }
        }
    }
}

/// The alert for changes that failed for good (their error codes, never their texts), if any did.
pub(crate) fn of_failures(outcomes: &Outcomes) -> Option<Alert> {
    let failed: Vec<&str> = outcomes
        .log
        .iter()
        .filter(|l| l.state == LogState::Failed)
        .map(|l| l.message.as_deref().unwrap_or_default())
        .collect();
    if failed.is_empty() {
        return None;
    }
    let mut tables: Vec<String> =
        outcomes.stats.iter().filter(|(_, s)| s.last_error.is_some()).map(|(t, _)| t.clone()).collect();
    tables.sort();
    Some(Alert::failed(tables, failed))
}

/// Whether a held-back alert still describes the present.
fn still_true(db: &mut Db, reporter: &Reporter, alert: &Alert) -> bool {
    match alert.kind {
        AlertKind::Connection => reporter.state().is_some_and(|s| alert.codes.first().is_some_and(|c| c == s.as_str())),
        AlertKind::Failed => {
            let tables = alert.tables.clone();
            db.with_statements(|c, st| {
                Ok(c.select(&st.engine.failures_open, None, &[DatumWithOid::from(tables)])?.first().get::<bool>(1)?)
            })
            .ok()
            .flatten()
            .unwrap_or(true)
        }
        AlertKind::Stalled | AlertKind::Throttled | AlertKind::ReadStalled => true,
    }
}

/// Sends an alert on `NOTIFY pgforce_alerts`, keeps it in `sync_alerts` (NOTIFY is lost while nobody listens) and
/// logs it as a WARNING.
fn send(db: &mut Db, reporter: &Reporter, alert: &Alert, held_back: u64) {
    pgrx::warning!("pgforce: {}", alert.message);
    let payload = alert.payload(held_back);
    // A connection alert that says the trouble is over is resolved from the start, and resolves those before.
    let recovery = alert.kind == AlertKind::Connection && !reporter.in_trouble();
    let sent = db.with_statements(|c, st| {
        c.update(&st.engine.notify, None, &[DatumWithOid::from(alert::CHANNEL), DatumWithOid::from(payload.as_str())])?;
        c.update(
            &st.engine.record_alert,
            None,
            &[
                DatumWithOid::from(alert.kind.as_str()),
                DatumWithOid::from(alert.tables.clone()),
                DatumWithOid::from(alert.codes.clone()),
                DatumWithOid::from(alert.count as i64),
                DatumWithOid::from(alert.message.as_str()),
                DatumWithOid::from(held_back as i64),
                DatumWithOid::from(recovery),
            ],
        )?;
        Ok(())
    });
    if let Err(e) = sent {
        pgrx::warning!("pgforce: cannot send the alert: {e}");
    }
}
