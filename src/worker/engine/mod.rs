//! What the worker's pipelines share inside the worker process: its database (statements, transactions), the
//! connection to Salesforce (client, breaker, budget), the status operators see, alerts, and the counters of
//! `sync_metrics` and `sync_requests`. A pipeline's step takes the engine; the engine knows no pipeline.

pub(crate) mod alerts;
pub(crate) mod connection;
pub(crate) mod db;
pub(crate) mod status;
pub(crate) mod threads;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgforce_core::alert::Alert;
use pgforce_core::config::Config;
use pgforce_core::delivery::outcome::Outcomes;
use pgforce_core::metrics::Metrics;
use pgforce_core::pacing;
use pgrx::datum::DatumWithOid;
use pgrx::spi::SpiClient;
use rand::rngs::StdRng;
use rand::SeedableRng;

use self::alerts::Alerts;
use self::connection::Connection;
use self::db::Db;
use self::status::{show, ConnState, Reporter, Step};
use crate::worker::error::WorkerError;
use crate::worker::sql::Statements;

pub(crate) struct Engine {
    /// pgforce's schema and the worker's statements for it.
    pub(crate) db: Db,
    /// The connection to Salesforce: settings, client, breaker, budget.
    pub(crate) conn: Connection,
    pub(crate) reporter: Reporter,
    /// What the cycle is doing, for `pg_stat_activity` and for the report of a bug.
    pub(crate) step: Step,
    /// Alerts: which may go now, which wait, the stalled-queue check.
    pub(crate) alerts: Alerts,
    /// Delivery counters since the worker started (epoch seconds).
    pub(crate) metrics: Metrics,
    pub(crate) started: f64,
    pub(crate) rng: StdRng,
    /// The cycle chose a wait no new change can shorten (an outage's backoff, pacing, another deliverer, delivery
    /// switched off): commits need not wake the worker until it is over (`shmem::sleep_through_commits`).
    pub(crate) deaf: bool,
}

impl Engine {
    pub(crate) fn new() -> Engine {
        Engine {
            db: Db::default(),
            conn: Connection::default(),
            reporter: Reporter::default(),
            step: Step::Waiting,
            alerts: Alerts::default(),
            metrics: Metrics::default(),
            started: epoch_seconds(SystemTime::now()),
            rng: StdRng::from_os_rng(),
            deaf: false,
        }
    }

    pub(crate) fn set_step(&mut self, step: Step) {
        show(&step);
        self.step = step;
    }

    /// Runs `f` as the sync engine with the prepared statements.
    pub(crate) fn with_statements<R>(
        &mut self,
        f: impl FnOnce(&mut SpiClient<'_>, &mut Statements) -> Result<R, WorkerError>,
    ) -> Result<R, WorkerError> {
        self.db.with_statements(f)
    }

    /// After an error: whether it came from the extension being dropped (or moved) meanwhile (`Db::vanished`).
    pub(crate) fn vanished(&mut self) -> bool {
        self.db.vanished()
    }

    /// Writes the connection state; going into trouble (or out of it) or into throttling is alerted.
    pub(crate) fn report(&mut self, state: ConnState, message: Option<String>) {
        let usage = self.conn.usage();
        let before = self.reporter.state();
        // Pacing's alert says what sync_status says: one message.
        let pacing = (state == ConnState::Throttled).then(|| message.clone()).flatten();
        if let Some(st) = self.db.statements() {
            self.reporter.report(st, state, message, usage);
        }
        let Some(now) = self.reporter.state().filter(|now| Some(*now) != before) else { return };
        if now == ConnState::Throttled {
            self.alert(Alert::throttled(usage, pacing));
        } else if now.is_trouble() || before.is_some_and(ConnState::is_trouble) {
            let from = before.map_or("(starting)", ConnState::as_str);
            self.alert(Alert::connection(from, now.as_str()));
        }
    }

    /// Alerts now, or when `pgforce.alert_interval` allows (`Alerts::offer`).
    pub(crate) fn alert(&mut self, alert: Alert) {
        self.alerts.offer(&mut self.db, &self.reporter, alert);
    }

    /// Above `pgforce.max_api_usage`: the pause that spreads the calls left today over Salesforce's 24-hour
    /// window (`pacing`), with how long the backlog takes at that pace in `sync_status`.
    pub(crate) fn pace(&mut self, config: &Config, spent: u64, records: u64) -> Duration {
        let Some((mut used, mut limit)) = self.conn.usage() else { return pacing::MIN_PACE };
        let mut pause = pacing::pace(used, limit, spent);
        if pause >= pacing::RECHECK_ABOVE {
            // Before a long sleep, the usage now (no transaction is open: this is a network call).
            if let Some(Ok(now)) = self.conn.current().map(|c| c.refresh_usage()) {
                (used, limit) = (now.used, now.limit);
                self.write_requests(config);
                if !self.conn.throttled(config) {
                    self.conn.paced_until = None;
                    return Duration::ZERO;
                }
                pause = pacing::pace(used, limit, spent);
            }
        }
        let backlog = self
            .with_statements(|c, st| {
                Ok(c.select(&st.engine.queue_size, None, &[])?.first().get::<i64>(1)?.unwrap_or(0))
            })
            .unwrap_or(0)
            .max(0) as u64;
        let message = format!(
            "API usage {used} of {limit} is above pgforce.max_api_usage: the {} calls left are spread over 24 hours, \
             one cycle every {}; the {backlog} changes waiting take about {} at this pace",
            limit.saturating_sub(used),
            pacing::human(pause),
            pacing::human(pacing::backlog_time(backlog, records, pause))
        );
        self.report(ConnState::Throttled, Some(message));
        self.conn.paced_until = Some(Instant::now() + pause);
        self.deaf = true;
        pause
    }

    /// Keeps the requests made since the last time in `sync_requests` (a transaction of its own, after the calls).
    pub(crate) fn write_requests(&mut self, config: &Config) {
        let Some(journal) = self.conn.current().map(|c| c.journal()) else { return };
        let (requests, dropped) = journal.take();
        if requests.is_empty() || config.request_history == 0 {
            return;
        }
        if dropped > 0 {
            pgrx::warning!("pgforce: {dropped} requests to Salesforce were not kept in sync_requests (the worker could not write them in time)");
        }
        let written = self.with_statements(|c, st| {
            let args = [
                DatumWithOid::from(requests.iter().map(|r| epoch_seconds(r.at)).collect::<Vec<f64>>()),
                DatumWithOid::from(requests.iter().map(|r| r.method).collect::<Vec<&str>>()),
                DatumWithOid::from(requests.iter().map(|r| r.path.as_str()).collect::<Vec<&str>>()),
                DatumWithOid::from(
                    requests.iter().map(|r| r.records.min(i32::MAX as u32) as i32).collect::<Vec<i32>>(),
                ),
                DatumWithOid::from(requests.iter().map(|r| r.status.map(i32::from)).collect::<Vec<Option<i32>>>()),
                DatumWithOid::from(
                    requests.iter().map(|r| r.duration.as_millis().min(i32::MAX as u128) as i32).collect::<Vec<i32>>(),
                ),
                DatumWithOid::from(requests.iter().map(|r| r.error_code.as_deref()).collect::<Vec<Option<&str>>>()),
                DatumWithOid::from(config.request_history),
            ];
            c.update(&st.engine.write_requests, None, &args)?;
            Ok(())
        });
        if let Err(e) = written {
            if !self.vanished() {
                pgrx::warning!("pgforce: cannot keep the requests in sync_requests: {e}");
            }
            if let Some(c) = self.conn.current() {
                c.journal().put_back(requests);
            }
        }
    }

    /// Writes the delivery counters when they changed (at most once a second, with archive maintenance).
    pub(crate) fn write_metrics(&mut self) {
        let Some(all) = self.metrics.take_changed() else { return };
        let column = |f: fn(&pgforce_core::metrics::Counters) -> u64| -> Vec<i64> {
            all.iter().map(|(_, c)| f(c).min(i64::MAX as u64) as i64).collect()
        };
        let started = self.started;
        let written = self.with_statements(|c, st| {
            // Datums are made inside the transaction: its memory holds them.
            let args = [
                DatumWithOid::from(started),
                DatumWithOid::from(all.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>()),
                DatumWithOid::from(column(|c| c.sent)),
                DatumWithOid::from(column(|c| c.succeeded)),
                DatumWithOid::from(column(|c| c.failed)),
                DatumWithOid::from(column(|c| c.retried)),
                DatumWithOid::from(column(|c| c.requests)),
                DatumWithOid::from(column(|c| c.bytes)),
                DatumWithOid::from(column(|c| c.api_calls)),
                DatumWithOid::from(column(|c| c.outage_requeued)),
            ];
            c.update(&st.engine.write_metrics, None, &args)?;
            Ok(())
        });
        if let Err(e) = written {
            if !self.vanished() {
                pgrx::warning!("pgforce: cannot write the delivery counters: {e}");
            }
            self.metrics.unwritten();
        }
    }

    /// Changes that failed for good are alerted (their error codes, never their texts).
    pub(crate) fn alert_failures(&mut self, outcomes: &Outcomes) {
        if let Some(alert) = alerts::of_failures(outcomes) {
            self.alert(alert);
        }
    }
}

/// Seconds since the Unix epoch, as `pg_catalog.to_timestamp` takes them.
fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
