//! Postgres → Salesforce, as the worker drives it: claimed changes are planned, sent (collections calls, or Bulk
//! jobs followed until they are over) and their outcomes recorded as requests complete; the log is archived and
//! failed changes retried on time. Everything shared (the database, the connection, status, alerts, counters) comes
//! from the engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgforce_core::config::Config;
use pgforce_core::describe::Described;
use pgforce_core::pacing;
use pgforce_core::salesforce::CallError;
use pgrx::datum::DatumWithOid;

use self::bulk_jobs::BulkJobs;
use crate::worker::engine::status::{ConnState, Step};
use crate::worker::engine::Engine;
use crate::worker::ARCHIVE_EVERY;

pub(crate) mod archive;
mod bulk;
mod bulk_jobs;
pub(crate) mod claim;
mod deliver;
pub(crate) mod plan;
pub(crate) mod record;
mod sender;

#[derive(Default)]
pub(crate) struct Write {
    /// When the log was last archived (at most once every `ARCHIVE_EVERY`).
    last_archive: Option<Instant>,
    /// Each sObject's describe by lower-case name, and until when it is used before it is read again.
    described: HashMap<String, (Instant, Arc<Described>)>,
    /// Each claimed log id's mapping (its outcomes are counted there).
    pub(crate) claim_tables: HashMap<i64, String>,
    /// The Bulk jobs whose changes are in flight.
    pub(crate) bulk: BulkJobs,
}

impl Write {
    /// The write pipeline's turn in a cycle: Bulk jobs due a look, then (unless paced) one claim delivered, or the
    /// idle wait when nothing is claimable. `requeued`: rows maintenance put back in the queue. Returns how long to
    /// sleep unless woken.
    pub(crate) fn step(&mut self, engine: &mut Engine, config: &Config, requeued: u64) -> Duration {
        let poll = config.poll_interval;
        self.poll_bulk_jobs(engine, config);
        // Paced: nothing more is claimed before the pause is over (a commit or a job's poll may wake the worker).
        if let Some(left) = engine.conn.paced_until.map(|until| until.saturating_duration_since(Instant::now())) {
            if !left.is_zero() && engine.conn.throttled(config) {
                engine.deaf = true;
                return left;
            }
        }
        // Under pacing a backlog goes as Bulk jobs as soon as a job costs fewer calls than collections would.
        let paced;
        let config = if engine.conn.throttled(config) {
            paced =
                Config { bulk_threshold: pacing::bulk_threshold_when_paced(config.bulk_threshold), ..config.clone() };
            &paced
        } else {
            config
        };
        engine.set_step(Step::Claiming);
        let claimed = match engine.with_statements(|c, st| {
            let claimed = claim::claim(c, st, config)?;
            let names: Vec<&str> = claimed.tables.values().map(|t| t.qualified.as_str()).collect();
            st.keep_tables(&names);
            Ok(claimed)
        }) {
            Ok(c) => c,
            Err(e) => {
                if !engine.vanished() {
                    engine.report(ConnState::SystemError, Some(format!("claiming changes: {e}")));
                }
                return poll;
            }
        };
        if claimed.count == 0 {
            // Idle: the last counters are written now, not at the next cycle.
            engine.write_metrics();
            // Secret files are read again after each reload: one made unreadable shows at once, not at the next
            // change (the files are read only then, so this costs nothing while idle).
            match engine.conn.settings(config) {
                Ok(_) => engine.report(ConnState::Idle, None),
                Err(e) => engine.report(ConnState::Unauthorized, Some(CallError::Unauthorized(e).to_string())),
            }
            engine.write_requests(config);
            return if requeued > 0 { Duration::ZERO } else { self.idle_wait(engine, config) };
        }
        if !engine.reporter.in_trouble() {
            engine.report(ConnState::Polling, None);
        }
        let calls_before = engine.conn.api_calls();
        let records = claimed.count as u64;
        let delivered = self.deliver(engine, config, claimed);
        engine.conn.keep_rotated_refresh_token(&mut engine.db);
        engine.write_requests(config);
        match delivered {
            // Pacing spends the calls pgforce made, never those of the org's other integrations (which Salesforce's
            // usage counts too).
            Ok(()) if engine.conn.throttled(config) => {
                engine.pace(config, engine.conn.api_calls().saturating_sub(calls_before), records)
            }
            // More may be waiting (or arrived while sending): look again at once.
            Ok(()) => Duration::ZERO,
            Err(wait) => wait,
        }
    }

    /// How long to sleep with nothing to do: until the next scheduled retry, the fallback poll, or time-based work
    /// (archiving, retrying failed rows), whichever comes first.
    pub(crate) fn idle_wait(&mut self, engine: &mut Engine, config: &Config) -> Duration {
        let poll = config.poll_interval;
        let next_retry = engine
            .with_statements(|c, st| {
                let mut next = None;
                for row in c.select(&st.queue.next_retry_in, None, &[])? {
                    next = row.get::<f64>(1)?.map(|s| Duration::from_secs_f64(s.max(0.0)));
                }
                Ok(next)
            })
            .ok()
            .flatten();
        let timed = [Some(config.archive_after), config.retry_failed_after].into_iter().flatten().min().unwrap_or(poll);
        next_retry.map_or(poll, |d| d.min(poll)).min(timed.max(ARCHIVE_EVERY))
    }

    /// Archive, purge, requeue and failed-row retries. Returns how many rows were put back in the queue.
    pub(crate) fn maintain(&mut self, engine: &mut Engine, config: &Config) -> u64 {
        let due = self.last_archive.is_none_or(|t| t.elapsed() >= ARCHIVE_EVERY);
        if due {
            engine.set_step(Step::Maintaining);
        }
        let result = engine.with_statements(|c, st| {
            let mut queued = archive::requeue(c, st)?;
            if due {
                let stalled_after = config.alert_stalled_after.map(|d| d.as_secs_f64());
                c.update(
                    &st.engine.resolve_alerts,
                    None,
                    &[DatumWithOid::from(stalled_after), DatumWithOid::from(config.max_api_usage)],
                )?;
                archive::end_unmapped(c, st)?;
                archive::archive(c, st, config.archive_after)?;
                archive::purge(c, st, config.archive_retention)?;
                if let Some(after) = config.retry_failed_after {
                    queued += archive::retry_failed(c, st, after)?;
                }
            }
            Ok(queued)
        });
        if due {
            self.last_archive = Some(Instant::now());
            engine.write_metrics();
        }
        result.unwrap_or_else(|e| {
            if !engine.vanished() {
                pgrx::warning!("pgforce: archive maintenance failed: {e}");
            }
            0
        })
    }
}
