//! The sync worker: a background worker that drains `_trigger_log` to Salesforce. Each cycle reads the settings
//! once (`guc::config`), then follows the data: `claim` due rows (one short transaction) → plan them
//! (`pgforce_core::delivery::plan`) → send them with no transaction open (`delivery::send`) → turn the answers into
//! outcomes (`delivery::outcome`) → `record` them (another short transaction) → `archive`. Commits wake it
//! (`crate::shmem`); a slow poll is the fallback. Each cycle runs inside a panic boundary: a bug is logged with
//! what the worker was doing, the cycle's rows go back to the queue, and the worker goes on.

mod alerts;
mod archive;
mod bulk_jobs;
pub(crate) mod claim;
mod connection;
mod database;
mod db;
mod deliverer;
mod engine;
mod error;
pub(crate) mod plan;
pub(crate) mod record;
mod sender;
pub(crate) mod sql;
pub(crate) mod status;
mod transaction;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgforce_core::config::Config;
use pgforce_core::delivery::batch::{Batch, Verdict};
use pgforce_core::delivery::bulk::{self, JobState};
use pgforce_core::delivery::doubt;
use pgforce_core::delivery::outcome::{sent_outcomes, unsent_outcomes, Outcomes, Retry};
use pgforce_core::delivery::plan::{Limits, Plan};
use pgforce_core::delivery::{Claimed, Table};
use pgforce_core::describe::Described;
use pgforce_core::pacing;
use pgforce_core::salesforce::{CallError, Client};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::{guc, shmem};
use bulk_jobs::BulkJobs;
use db::Prepared;
use deliverer::Deliverer;
use engine::Engine;
use error::WorkerError;
use sql::Statements;
use status::{show, ConnState, Step};
use transaction::{as_sync_engine, report_of};

/// How often archive maintenance runs at most.
const ARCHIVE_EVERY: Duration = Duration::from_secs(1);
/// Pause between cycles while the org's API usage is above `pgforce.max_api_usage`.
/// The version of the extension's objects this library works with.
const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");
/// A claim pulls in the parents its writes wait for at most this many times (levels), growing to at most
/// `PARENT_CLAIMS` times `pgforce.batch_size` rows.
const MAX_PARENT_ROUNDS: usize = 100;
const PARENT_CLAIMS: i64 = 4;
/// Recording a finished Bulk job's results is begun at most this many times.
const MAX_FINISH_TRIES: u32 = 3;
/// Pause after a cycle that failed inside the worker (a database error or a bug).
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// While another server's identity is recorded (or another worker holds the lock), how often the worker looks again.
const DELIVERER_CHECK: Duration = Duration::from_secs(1);
/// How long an sObject's describe is used before it is read again, and how soon one that failed is tried again.
const DESCRIBE_FOR: Duration = Duration::from_secs(600);
const DESCRIBE_RETRY: Duration = Duration::from_secs(60);
/// While requests are in flight, how often the worker looks for SIGTERM.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Registers the worker; called from `_PG_init` while preloading.
pub fn register() {
    // SAFETY: reading a postmaster global during _PG_init.
    if unsafe { pg_sys::IsBinaryUpgrade } {
        return;
    }
    BackgroundWorkerBuilder::new("pgforce sync worker")
        .set_type("pgforce sync worker")
        .set_library("pgforce")
        .set_function("pgforce_sync_worker_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pgforce_sync_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = guc::database();
    let failures = shmem::connecting();
    if failures > 0 {
        database::wait_for(&database, failures);
    }
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    shmem::connected(true);
    // The worker is a superuser: no schema a user can create objects in is ever on its path, whatever the
    // database's or role's settings say. Values it prints read the way capture prints them (ISO dates, exact floats),
    // whatever postgresql.conf says.
    for (name, value) in [
        (c"search_path", c"pg_catalog, pg_temp"),
        (c"datestyle", c"ISO, MDY"),
        (c"intervalstyle", c"postgres"),
        (c"extra_float_digits", c"1"),
    ] {
        // SAFETY: sets a GUC of this process, outside any transaction, from its main thread.
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_OVERRIDE,
            );
        }
    }
    shmem::publish_worker();
    let mut worker = Worker::new();
    let mut wait = Duration::ZERO;
    while BackgroundWorker::wait_latch(Some(wait)) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the main loop of this process, outside any transaction.
            unsafe {
                pg_sys::ConfigReloadPending = 0;
                pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
            }
            worker.engine.conn.reload(); // secret files are read again
        }
        let config = guc::config();
        transaction::set_limits(config.lock_timeout, config.statement_timeout);
        wait = worker.run(&config);
        show(&Step::Waiting);
    }
    shmem::withdraw_worker();
    // A non-zero exit asks the postmaster to start the worker again (after 5 s): a terminated worker comes back.
    // At server shutdown nothing is restarted. `pgforce.enabled = off` is the way to stop delivery.
    // SAFETY: ends this background worker process.
    unsafe { pg_sys::proc_exit(1) };
}

struct Worker {
    /// What the worker's pipelines share: its database, the connection to Salesforce, status, alerts, counters.
    engine: Engine,
    last_archive: Option<Instant>,
    /// Whether this worker holds the delivery lock of its database.
    delivery_locked: bool,
    /// This server's identity (`deliverer::identity`), read once.
    identity: Option<String>,
    /// Each sObject's describe by lower-case name, and until when it is used before it is read again.
    described: HashMap<String, (Instant, Arc<Described>)>,
    /// Each claimed log id's mapping (its outcomes are counted there).
    claim_tables: HashMap<i64, String>,
    /// The Bulk jobs whose changes are in flight.
    bulk: BulkJobs,
}

impl Worker {
    fn new() -> Worker {
        Worker {
            engine: Engine::new(),
            last_archive: None,
            delivery_locked: false,
            identity: None,
            described: HashMap::new(),
            claim_tables: HashMap::new(),
            bulk: BulkJobs::default(),
        }
    }

    /// One cycle inside a panic boundary. Returns how long to sleep unless woken.
    fn run(&mut self, config: &Config) -> Duration {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.cycle(config))) {
            // A running Bulk job is looked at on time, also while idle or paced.
            Ok(wait) => wait.min(self.bulk.next_poll()),
            Err(payload) => {
                // SAFETY: the worker's main thread; leaves no transaction or error state behind the panic.
                unsafe {
                    if pg_sys::IsTransactionState() {
                        pg_sys::AbortCurrentTransaction();
                    }
                    pg_sys::FlushErrorState();
                }
                let message = panic_message(payload.as_ref());
                let text = format!("internal error while {}: {message}", self.engine.step);
                let Some(st) = self.engine.db.statements() else {
                    pgrx::warning!("pgforce: {text}");
                    return ERROR_PAUSE;
                };
                // The rows of this cycle cost an attempt (so a row that always causes it ends FAILED, never a loop)
                // and are named in the log.
                let involved = as_sync_engine(|c| reclaim_after_bug(c, st, config, &text)).unwrap_or_default();
                let tables: BTreeSet<&str> = involved.iter().map(|(_, t)| t.as_str()).collect();
                let ids = id_list(involved.iter().map(|(id, _)| *id).collect());
                pgrx::warning!(
                    "pgforce: {text}; log ids {ids} of {} cost an attempt and go back to the queue",
                    tables.into_iter().collect::<Vec<_>>().join(", ")
                );
                self.engine.report(ConnState::SystemError, Some(text));
                ERROR_PAUSE
            }
        }
    }

    fn cycle(&mut self, config: &Config) -> Duration {
        shmem::count_cycle();
        let poll = config.poll_interval;
        match self.prepare(config) {
            Ok(true) => {}
            Ok(false) => return poll, // the extension is not installed (yet) in this database
            Err(e) => {
                // An error because the extension was dropped meanwhile is no error of the worker's.
                if self.engine.db.installed() {
                    pgrx::warning!("pgforce: cannot prepare the worker's statements: {e}");
                }
                self.engine.db.forget();
                return poll;
            }
        }
        if !config.enabled {
            self.engine.report(ConnState::Disabled, None);
            return poll;
        }
        if let Some(wait) = self.not_the_deliverer() {
            return wait.min(poll);
        }
        let requeued = self.maintain(config);
        self.engine.alerts.interval = config.alert_interval;
        self.engine.alerts.check_stalled(&mut self.engine.db, &self.engine.reporter, config);
        self.engine.alerts.send_due(&mut self.engine.db, &self.engine.reporter);
        // An operator's resume() or retry_now(): try Salesforce at once, whatever an outage's backoff said. (Pacing
        // is left alone: it spreads the API budget, which an operator's wish does not refill.)
        if shmem::take_retry_now() {
            self.engine.conn.breaker.success();
        }
        let paused = self.engine.conn.breaker.remaining();
        if !paused.is_zero() {
            return paused.min(poll);
        }
        self.poll_bulk_jobs(config);
        // Paced: nothing more is claimed before the pause is over (a commit or a job's poll may wake the worker).
        if let Some(left) = self.engine.conn.paced_until.map(|until| until.saturating_duration_since(Instant::now())) {
            if !left.is_zero() && self.engine.conn.throttled(config) {
                return left;
            }
        }
        // Under pacing a backlog goes as Bulk jobs as soon as a job costs fewer calls than collections would.
        let paced;
        let config = if self.engine.conn.throttled(config) {
            paced =
                Config { bulk_threshold: pacing::bulk_threshold_when_paced(config.bulk_threshold), ..config.clone() };
            &paced
        } else {
            config
        };
        self.engine.set_step(Step::Claiming);
        let claimed = match self.engine.with_statements(|c, st| {
            let claimed = claim::claim(c, st, config)?;
            let names: Vec<&str> = claimed.tables.values().map(|t| t.qualified.as_str()).collect();
            st.keep_tables(&names);
            Ok(claimed)
        }) {
            Ok(c) => c,
            Err(e) => {
                if !self.engine.vanished() {
                    self.engine.report(ConnState::SystemError, Some(format!("claiming changes: {e}")));
                }
                return poll;
            }
        };
        if claimed.count == 0 {
            // Idle: the last counters are written now, not at the next cycle.
            self.engine.write_metrics();
            // Secret files are read again after each reload: one made unreadable shows at once, not at the next
            // change (the files are read only then, so this costs nothing while idle).
            match self.engine.conn.settings(config) {
                Ok(_) => self.engine.report(ConnState::Idle, None),
                Err(e) => self.engine.report(ConnState::Unauthorized, Some(CallError::Unauthorized(e).to_string())),
            }
            self.engine.write_requests(config);
            return if requeued > 0 { Duration::ZERO } else { self.idle_wait(config) };
        }
        if !self.engine.reporter.in_trouble() {
            self.engine.report(ConnState::Polling, None);
        }
        let calls_before = self.engine.conn.api_calls();
        let records = claimed.count as u64;
        let delivered = self.deliver(config, claimed);
        self.engine.conn.keep_rotated_refresh_token(&mut self.engine.db);
        self.engine.write_requests(config);
        match delivered {
            // Pacing spends the calls pgforce made, never those of the org's other integrations (which Salesforce's
            // usage counts too).
            Ok(()) if self.engine.conn.throttled(config) => {
                self.engine.pace(config, self.engine.conn.api_calls().saturating_sub(calls_before), records)
            }
            // More may be waiting (or arrived while sending): look again at once.
            Ok(()) => Duration::ZERO,
            Err(wait) => wait,
        }
    }

    /// Looks at the Bulk jobs whose changes are in flight (this worker's, or an earlier one's, after a restart)
    /// when their next look is due, and records the results of those that are over. It never waits for a job:
    /// other changes go on meanwhile (a record in a running job waits for it, `sql::queue_sql`). A job never closed
    /// (a crash before its upload) is aborted; one Salesforce no longer knows puts its changes back, in doubt.
    fn poll_bulk_jobs(&mut self, config: &Config) {
        if !self.bulk.kept {
            return;
        }
        let ids = self.engine.with_statements(|c, st| {
            let mut ids = Vec::new();
            for row in c.select(&st.bulk_jobs, None, &[])? {
                ids.extend(row.get::<String>(1)?);
            }
            Ok(ids)
        });
        let Ok(ids) = ids else { return };
        let due = self.bulk.due(ids);
        if due.is_empty() {
            return;
        }
        let client = match self.engine.conn.settings(config) {
            Ok(settings) => self.engine.conn.client(&mut self.engine.db, &settings),
            Err(_) => return, // delivery reports the connection's trouble
        };
        for id in due {
            if stop_requested() {
                return;
            }
            self.count_bulk_calls(&id, 1);
            match bulk::state(&client, &id) {
                Ok((state, error)) if state.finished() => self.finish_bulk_job(config, &client, &id, error),
                Ok((JobState::Open, _)) => {
                    self.count_bulk_calls(&id, 1);
                    match bulk::abort_job(&client, &id) {
                        // Never closed, it never ran: its changes go again at no cost.
                        Ok(()) => self.release_bulk_job(&id, false),
                        Err(_) => self.bulk.schedule(&id),
                    }
                }
                Ok(_) => self.bulk.schedule(&id),
                // Gone (deleted, or of another org): its changes go again, in doubt.
                Err(CallError::Rejected { status: 404, .. }) => self.release_bulk_job(&id, true),
                Err(e @ (CallError::Unavailable(_) | CallError::Unauthorized(_))) => {
                    // Looked at again once Salesforce answers; delivery reports the trouble.
                    pgrx::debug1!("pgforce: cannot look at Bulk job {id}: {e}");
                    self.bulk.schedule(&id);
                    return;
                }
                Err(e) => {
                    pgrx::warning!("pgforce: cannot look at Bulk job {id} (looking again later): {e}");
                    self.bulk.schedule(&id);
                }
            }
        }
    }

    /// Records the outcome of each change a finished Bulk job carried, from its results, as a collections call's
    /// would be recorded (the changes are read back and planned again to match them by key), then forgets it.
    fn finish_bulk_job(&mut self, config: &Config, client: &Client, id: &str, job_error: Option<String>) {
        self.count_bulk_calls(id, 3);
        let results = bulk::results(client, id);
        if let Err(e @ (CallError::Unavailable(_) | CallError::Unauthorized(_))) = &results {
            // Read once Salesforce answers again; delivery reports the trouble.
            pgrx::debug1!("pgforce: cannot read the results of Bulk job {id}: {e}");
            return self.bulk.schedule(id);
        }
        // Results that cannot be read or recorded (an error, a bug) are tried a bounded number of times, then the
        // job's changes go again, each at the cost of an attempt: never a loop.
        if self.bulk.finish_try(id) > MAX_FINISH_TRIES {
            pgrx::warning!("pgforce: the results of Bulk job {id} could not be recorded; its changes go again");
            return self.release_bulk_job(id, true);
        }
        self.bulk.schedule(id);
        let results = match results {
            Ok(results) => results,
            // Salesforce keeps results for days; gone, the changes go again, in doubt.
            Err(CallError::Rejected { status: 404, .. }) => return self.release_bulk_job(id, true),
            Err(e) => {
                pgrx::warning!("pgforce: cannot read the results of Bulk job {id} (reading again later): {e}");
                return;
            }
        };
        self.engine.set_step(Step::Recording);
        let read = self.engine.with_statements(|c, st| {
            let claimed = claim::job_entries(c, st, config, id)?;
            let plan = plan::plan_claim(c, st, &claimed)?;
            Ok((claimed.tables, plan))
        });
        let (tables, mut plan) = match read {
            Ok(read) => read,
            Err(e) => {
                if !self.engine.vanished() {
                    pgrx::warning!("pgforce: cannot read the changes of Bulk job {id} (reading again later): {e}");
                }
                return self.bulk.schedule(id);
            }
        };
        self.claim_tables.clear();
        for job in &plan.jobs {
            self.claim_tables.extend(job.write.log_ids.iter().map(|log_id| (*log_id, job.table.clone())));
        }
        let verdicts = bulk::verdicts_for(&mut plan, &tables, &results, job_error.as_deref());
        let mut outcomes = unsent_outcomes(&plan, &tables, Retry::of(config), &mut self.engine.rng);
        outcomes.append(sent_outcomes(&plan, &verdicts, &tables, Retry::of(config), &mut self.engine.rng));
        if self.record_outcomes(config, &outcomes).is_err() {
            return self.bulk.schedule(id);
        }
        // Changes the results could not be matched with (none, normally) go again, in doubt.
        self.release_bulk_job(id, true);
    }

    /// Forgets a Bulk job (`BulkJobs::release`).
    fn release_bulk_job(&mut self, id: &str, cost: bool) {
        self.bulk.release(&mut self.engine.db, id, cost);
    }

    /// Counts calls made about a Bulk job for its mapping, when known (a job an earlier worker sent is not).
    fn count_bulk_calls(&mut self, id: &str, calls: usize) {
        if let Some(table) = self.bulk.table_of(id) {
            (0..calls).for_each(|_| self.engine.metrics.api_call(&table));
        }
    }

    /// `Some(how long to wait)` when this worker must not deliver: another worker holds the delivery lock, or the
    /// log was last delivered by another server (until `salesforce.resume()`).
    fn not_the_deliverer(&mut self) -> Option<Duration> {
        let mut locked = self.delivery_locked;
        let known = self.identity.clone();
        let checked = self.engine.with_statements(|c, st| {
            let me = match known {
                Some(me) => me,
                None => deliverer::identity(c, st)?,
            };
            Ok((deliverer::check(c, st, &me, &mut locked)?, me))
        });
        self.delivery_locked = locked;
        let (found, me) = match checked {
            Ok(x) => x,
            Err(e) => {
                if !self.engine.vanished() {
                    self.engine.report(ConnState::SystemError, Some(format!("checking which server delivers: {e}")));
                }
                return Some(ERROR_PAUSE);
            }
        };
        self.identity = Some(me.clone());
        let message = match found {
            Deliverer::ThisServer => return None,
            Deliverer::AnotherWorker(pid) => format!(
                "another pgforce worker{} holds this database's delivery lock: this one waits",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ),
            Deliverer::AnotherServer(other) => format!(
                "delivery paused: this log was last delivered by another server ({other}); this is {me}. A restored backup, a promoted replica or a copy must not send the log again. If this server now delivers to Salesforce and the other no longer does, run SELECT salesforce.resume()"
            ),
        };
        self.engine.report(ConnState::Paused, Some(message));
        Some(DELIVERER_CHECK)
    }

    /// How long to sleep with nothing to do: until the next scheduled retry, the fallback poll, or time-based work
    /// (archiving, retrying failed rows), whichever comes first.
    fn idle_wait(&mut self, config: &Config) -> Duration {
        let poll = config.poll_interval;
        let next_retry = self
            .engine
            .with_statements(|c, st| {
                let mut next = None;
                for row in c.select(&st.next_retry_in, None, &[])? {
                    next = row.get::<f64>(1)?.map(|s| Duration::from_secs_f64(s.max(0.0)));
                }
                Ok(next)
            })
            .ok()
            .flatten();
        let timed = [Some(config.archive_after), config.retry_failed_after].into_iter().flatten().min().unwrap_or(poll);
        next_retry.map_or(poll, |d| d.min(poll)).min(timed.max(ARCHIVE_EVERY))
    }

    /// Prepares the statements when pgforce's schema changed (first cycle, or the extension was re-created): rows a
    /// crash left `PENDING` are then claimed again and an earlier worker's counters forgotten. Returns whether
    /// pgforce is installed.
    fn prepare(&mut self, config: &Config) -> Result<bool, WorkerError> {
        let prepared = self.engine.db.prepare(|c, st| {
            reclaim(c, st, config)?;
            c.update(&st.clear_metrics, None, &[])?;
            Ok(())
        })?;
        if prepared == Prepared::Fresh {
            self.engine.metrics.unwritten();
            self.bulk.kept = true;
            self.engine.reporter.forget();
        }
        Ok(prepared != Prepared::NotInstalled)
    }

    /// Archive, purge, requeue and failed-row retries. Returns how many rows were put back in the queue.
    fn maintain(&mut self, config: &Config) -> u64 {
        let due = self.last_archive.is_none_or(|t| t.elapsed() >= ARCHIVE_EVERY);
        if due {
            self.engine.set_step(Step::Maintaining);
        }
        let result = self.engine.with_statements(|c, st| {
            let mut queued = archive::requeue(c, st)?;
            if due {
                let stalled_after = config.alert_stalled_after.map(|d| d.as_secs_f64());
                c.update(
                    &st.resolve_alerts,
                    None,
                    &[DatumWithOid::from(stalled_after), DatumWithOid::from(config.max_api_usage)],
                )?;
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
            self.engine.write_metrics();
        }
        result.unwrap_or_else(|e| {
            if !self.engine.vanished() {
                pgrx::warning!("pgforce: archive maintenance failed: {e}");
            }
            0
        })
    }

    /// Plans, sends and records one claim, recording outcomes as requests complete. `Err` carries how long to wait
    /// (the connection is paused, recording failed, or the worker is asked to stop).
    fn deliver(&mut self, config: &Config, mut claimed: Claimed) -> Result<(), Duration> {
        let mut plan = match self.engine.with_statements(|c, st| plan::plan_claim(c, st, &claimed)) {
            Ok(plan) => plan,
            Err(e) => return self.recording_failed(config, e),
        };
        // Parents the claim's writes wait for, whose changes are due, are claimed too (and theirs, level by
        // level): they go first in this delivery instead of leaving their children waiting. Bounded: a claim
        // grows to at most PARENT_CLAIMS times its size.
        for _ in 0..MAX_PARENT_ROUNDS {
            if plan.parents_due.is_empty() || claimed.count as i64 >= config.batch_size * PARENT_CLAIMS {
                break;
            }
            let wanted = std::mem::take(&mut plan.parents_due);
            let pulled = self.engine.with_statements(|c, st| {
                let more = claim::claim_records(c, st, config, &wanted)?;
                if more.count == 0 {
                    return Ok(None);
                }
                claimed.absorb(more);
                plan::plan_claim(c, st, &claimed).map(Some)
            });
            match pulled {
                Ok(Some(again)) => plan = again,
                Ok(None) => break,
                Err(e) => return self.recording_failed(config, e),
            }
        }
        // The plan holds what goes; the claimed changes are let go before anything is sent.
        drop(std::mem::take(&mut claimed.changes));
        self.claim_tables.clear();
        for job in &plan.jobs {
            self.claim_tables.extend(job.write.log_ids.iter().map(|id| (*id, job.table.clone())));
        }
        let tables = &claimed.tables;
        let client = match self.engine.conn.settings(config) {
            Ok(settings) => Ok(self.engine.conn.client(&mut self.engine.db, &settings)),
            Err(e) => Err(CallError::Unauthorized(e)),
        };
        if let Ok(client) = &client {
            self.settle_doubts(client, &mut plan, tables);
            let described = self.describe(client, tables);
            plan.refuse_unholdable(tables, &described);
        }
        plan.refuse_oversized(config.max_request_bytes);
        plan.order(tables);
        // What needs no call is settled at once.
        let settled = unsent_outcomes(&plan, tables, Retry::of(config), &mut self.engine.rng);
        if !settled.is_empty() {
            self.record_outcomes(config, &settled)?;
        }
        let waves = plan.waves(tables, Limits::of(config));
        if waves.is_empty() {
            return Ok(());
        }
        for batch in waves.iter().flatten() {
            if let Some(job) = batch.items.first().and_then(|(j, _)| plan.jobs.get(*j)) {
                self.engine.metrics.request(&job.table, batch.items.len(), batch.bytes);
            }
        }
        let records = waves.iter().flatten().map(|b| b.items.len()).sum();
        let objects: BTreeSet<&str> = waves
            .iter()
            .flatten()
            .flat_map(|b| b.items.iter())
            .filter_map(|(i, _)| tables.get(&plan.jobs[*i].table).map(|t| t.target.sobject.as_str()))
            .collect();
        self.engine.set_step(Step::Sending { records, objects: objects.into_iter().map(str::to_string).collect() });
        guc::inject_fault_while_sending();
        let trouble = match client {
            // Nothing is sent: the records keep their place and their attempts.
            Err(e) => {
                let unsent: Vec<(usize, Verdict)> =
                    waves.iter().flatten().flat_map(|b| b.items.iter().map(|(k, _)| (*k, Verdict::Unsent))).collect();
                let outcomes = sent_outcomes(&plan, &unsent, tables, Retry::of(config), &mut self.engine.rng);
                self.record_outcomes(config, &outcomes)?;
                Some(e)
            }
            Ok(client) => self.send_and_record(config, &plan, tables, client, waves)?,
        };
        match trouble {
            None => {
                self.engine.conn.breaker.success();
                if self.engine.reporter.in_trouble() {
                    self.engine.report(ConnState::Polling, None);
                }
                let usage = self.engine.conn.usage();
                if let Some(st) = self.engine.db.statements() {
                    self.engine.reporter.report_usage(st, usage);
                }
                Ok(())
            }
            Some(trouble) => {
                let wait = self.engine.conn.breaker.failure(&mut self.engine.rng);
                let state = match trouble {
                    CallError::Unauthorized(_) => ConnState::Unauthorized,
                    _ => ConnState::Outage,
                };
                if state == ConnState::Unauthorized {
                    if let Some(c) = self.engine.conn.current() {
                        c.forget_session();
                    }
                }
                self.engine.report(state, Some(trouble.to_string()));
                if let Some(st) = self.engine.db.statements() {
                    self.engine.reporter.report_next_attempt(st, wait);
                }
                Err(wait)
            }
        }
    }

    /// The describe of each sObject of the claim, read again after `DESCRIBE_FOR` (one API call each). One that
    /// cannot be read is left out (Salesforce alone checks those records) and tried again after `DESCRIBE_RETRY`;
    /// when Salesforce cannot be reached at all, at the next claim.
    fn describe(&mut self, client: &Client, tables: &HashMap<String, Table>) -> HashMap<String, Arc<Described>> {
        let now = Instant::now();
        let sobjects: BTreeSet<String> = tables.values().map(|t| t.target.sobject.clone()).collect();
        let mut described = HashMap::new();
        for sobject in sobjects {
            let key = sobject.to_ascii_lowercase();
            if let Some((_, d)) = self.described.get(&key).filter(|(until, _)| *until > now) {
                described.insert(key, d.clone());
                continue;
            }
            let d = match client.describe(&sobject) {
                Ok(fields) => (now + DESCRIBE_FOR, Arc::new(Described::new(&sobject, fields))),
                Err(CallError::Unavailable(_) | CallError::Unauthorized(_)) => continue,
                Err(e) => {
                    pgrx::warning!("pgforce: cannot read the describe of {sobject} (numbers go unchecked): {e}");
                    (now + DESCRIBE_RETRY, Arc::new(Described::default()))
                }
            };
            described.insert(key.clone(), d.1.clone());
            self.described.insert(key, d);
        }
        described
    }

    /// Sends on a thread of its own and records each request's outcomes as it completes, so a crash leaves at most
    /// the requests in flight in doubt. At SIGTERM it stops waiting: what was answered is recorded, the rest stays
    /// `PENDING` and is checked (or sent) after the restart. Returns the connection trouble that stopped sending.
    fn send_and_record(
        &mut self,
        config: &Config,
        plan: &Plan,
        tables: &HashMap<String, Table>,
        client: Arc<Client>,
        waves: Vec<Vec<Batch>>,
    ) -> Result<Option<CallError>, Duration> {
        let expected: HashSet<usize> = waves.iter().flatten().flat_map(|b| b.items.iter().map(|(k, _)| *k)).collect();
        let sender = match sender::start(client, waves, config.max_concurrency) {
            Ok(s) => s,
            Err(e) => {
                return self.recording_failed(config, WorkerError::Database(format!("cannot start sending: {e}")))
            }
        };
        let mut answered: HashSet<usize> = HashSet::new();
        let mut jobs: Vec<String> = Vec::new();
        let mut queued: HashSet<String> = HashSet::new();
        loop {
            // Bulk jobs are kept, with their changes marked, before their records are uploaded: whichever worker
            // runs next records their results.
            while let Ok((id, keys, ack)) = sender.jobs.try_recv() {
                let log_ids: Vec<i64> = keys
                    .iter()
                    .filter_map(|k| plan.jobs.get(*k))
                    .flat_map(|j| j.write.log_ids.iter().copied())
                    .collect();
                let kept = self.engine.with_statements(|c, st| {
                    c.update(&st.keep_bulk_job, None, &[DatumWithOid::from(id.as_str()), DatumWithOid::from(log_ids)])?;
                    Ok(())
                });
                if let Err(e) = &kept {
                    pgrx::warning!("pgforce: cannot keep the id of Bulk job {id}: {e}");
                }
                self.bulk.kept |= kept.is_ok();
                if let Some(job) = keys.first().and_then(|k| plan.jobs.get(*k)) {
                    self.bulk.sent(&id, &job.table);
                    // The job's create and close (its upload is the request counted when it was planned).
                    (0..2).for_each(|_| self.engine.metrics.api_call(&job.table));
                }
                let _ = ack.send(kept.is_ok());
                jobs.push(id);
            }
            let first = match sender.verdicts.recv_timeout(SIGNAL_CHECK) {
                Ok(v) => v,
                Err(RecvTimeoutError::Timeout) => {
                    if stop_requested() {
                        sender.abort.store(true, Ordering::SeqCst);
                        return Err(Duration::ZERO);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // Whatever else has arrived meanwhile is recorded in the same transaction.
            let mut verdicts = first;
            while let Ok(more) = sender.verdicts.try_recv() {
                verdicts.extend(more);
            }
            answered.extend(verdicts.iter().map(|(k, _)| *k));
            for (_, verdict) in &verdicts {
                if let Verdict::Queued { job } = verdict {
                    if queued.insert(job.clone()) {
                        self.bulk.schedule(job);
                    }
                }
            }
            let sending = std::mem::replace(&mut self.engine.step, Step::Recording);
            show(&self.engine.step);
            let outcomes = sent_outcomes(plan, &verdicts, tables, Retry::of(config), &mut self.engine.rng);
            self.record_outcomes(config, &outcomes)?;
            self.engine.set_step(sending);
        }
        let joined = sender.done.join();
        // Jobs that never ran (their upload failed): their changes were recorded as not sent.
        jobs.retain(|id| !queued.contains(id));
        BulkJobs::forget_finished(&mut self.engine.db, jobs);
        let trouble = match joined {
            Ok(trouble) => trouble,
            Err(payload) => {
                // A bug while sending: the requests without an answer may have been applied; each costs an attempt.
                let message = panic_message(payload.as_ref());
                let lost: Vec<usize> = expected.difference(&answered).copied().collect();
                let ids = log_ids(plan, &lost);
                pgrx::warning!("pgforce: internal error while sending (log ids {ids}): {message}");
                let verdict = Verdict::Failed {
                    code: "INTERNAL_ERROR".into(),
                    message: format!("internal error while sending: {message}"),
                    transient: true,
                    in_doubt: true,
                };
                let verdicts: Vec<(usize, Verdict)> = lost.iter().map(|k| (*k, verdict.clone())).collect();
                answered.extend(lost);
                let outcomes = sent_outcomes(plan, &verdicts, tables, Retry::of(config), &mut self.engine.rng);
                self.record_outcomes(config, &outcomes)?;
                None
            }
        };
        // Every request reports its verdicts; a job without one was not sent.
        let missing: Vec<(usize, Verdict)> = expected.difference(&answered).map(|k| (*k, Verdict::Unsent)).collect();
        if !missing.is_empty() {
            let outcomes = sent_outcomes(plan, &missing, tables, Retry::of(config), &mut self.engine.rng);
            self.record_outcomes(config, &outcomes)?;
        }
        Ok(trouble)
    }

    /// Records outcomes in one transaction; when that fails, each write's alone, so only those that cannot be
    /// recorded fail.
    fn record_outcomes(&mut self, config: &Config, outcomes: &Outcomes) -> Result<(), Duration> {
        let mut recorded = self.engine.with_statements(|c, st| record::record(c, st, outcomes));
        if recorded.is_err() && !self.engine.vanished() {
            let mut rng = StdRng::from_rng(&mut self.engine.rng);
            let max_attempts = config.max_attempts;
            recorded = self
                .engine
                .with_statements(|c, st| record::record_each(c, st, outcomes, max_attempts, &mut rng))
                .map(|_| ());
        }
        match recorded {
            Ok(()) => {
                let tables = &self.claim_tables;
                self.engine.metrics.outcomes(outcomes, |id| tables.get(&id).cloned());
                self.engine.alert_failures(outcomes);
                Ok(())
            }
            Err(e) => self.recording_failed(config, e),
        }
    }

    /// After a database error in a delivery: the claim's rows still `PENDING` go back to the queue (in doubt, as
    /// they may have been sent), and the worker pauses.
    fn recording_failed<R>(&mut self, config: &Config, e: WorkerError) -> Result<R, Duration> {
        if self.engine.vanished() {
            return Err(Duration::ZERO);
        }
        self.engine.report(ConnState::SystemError, Some(format!("recording outcomes: {e}")));
        let _ = self.engine.with_statements(|c, st| reclaim(c, st, config));
        Err(ERROR_PAUSE)
    }

    /// Looks for the records that earlier, unanswered attempts may have created (`delivery::doubt`), so that they
    /// are updated (or deleted) rather than created a second time. A write that cannot be checked waits for
    /// another attempt.
    fn settle_doubts(&mut self, client: &Client, plan: &mut Plan, tables: &HashMap<String, Table>) {
        let user = match client.user_id() {
            Ok(user) => user,
            Err(e) => {
                let jobs: Vec<usize> =
                    doubt::searches(plan, tables, None).iter().flat_map(|s| s.jobs.iter().map(|j| j.0)).collect();
                jobs.into_iter().for_each(|j| plan.recheck(j, format!("cannot log in to look for it: {e}")));
                return;
            }
        };
        for search in doubt::searches(plan, tables, user.as_deref()) {
            if let Some(job) = search.jobs.first().and_then(|(j, _)| plan.jobs.get(*j)) {
                self.engine.metrics.api_call(&job.table);
            }
            let found = match client.query(&search.soql, doubt::MAX_CANDIDATES) {
                Ok(found) => found,
                Err(e) => {
                    let why = format!(
                        "cannot look in {} for the record an unanswered attempt may have created: {e}",
                        search.sobject
                    );
                    search.jobs.iter().for_each(|(j, _)| plan.recheck(*j, why.clone()));
                    continue;
                }
            };
            let ids: Vec<String> = found.iter().filter_map(|r| r.get("Id")?.as_str().map(str::to_string)).collect();
            let names: Vec<String> = search
                .jobs
                .iter()
                .filter_map(|(j, _)| tables.get(&plan.jobs[*j].table).map(|t| t.qualified.clone()))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let taken = self.engine.with_statements(|c, st| record::owned_sfids(c, st, &names, &ids));
            let taken = match taken {
                Ok(t) => t,
                Err(e) => {
                    search
                        .jobs
                        .iter()
                        .for_each(|(j, _)| plan.recheck(*j, format!("cannot read the sfids already known: {e}")));
                    continue;
                }
            };
            for (job, id) in doubt::matches(&search, &found, &taken) {
                plan.settle(job, id);
            }
        }
    }
}

/// Whether SIGTERM arrived. Read without consuming it (unlike `BackgroundWorker::sigterm_received`), so that the
/// main loop sees it too and ends the process.
fn stop_requested() -> bool {
    // SAFETY: a flag the SIGTERM handler sets; a volatile read of a sig_atomic_t.
    unsafe { (&raw const pg_sys::ShutdownRequestPending).read_volatile() != 0 }
}

/// Puts rows still `PENDING` (a crash, a bug, a failed recording) back in the queue, in doubt: they may have been
/// sent. They wait `request_timeout`, as Salesforce may still be working on a request the worker no longer waits for.
fn reclaim(client: &mut SpiClient<'_>, st: &Statements, config: &Config) -> Result<usize, WorkerError> {
    let wait = config.connection.request_timeout.as_secs_f64();
    Ok(client.update(&st.reclaim_pending, None, &[DatumWithOid::from(wait)])?.len())
}

/// After a bug in a cycle: its rows still `PENDING` cost an attempt; returns their ids and tables.
fn reclaim_after_bug(
    client: &mut SpiClient<'_>,
    st: &Statements,
    config: &Config,
    text: &str,
) -> Result<Vec<(i64, String)>, WorkerError> {
    let wait = config.connection.request_timeout.as_secs_f64();
    let mut out = Vec::new();
    let args = [
        DatumWithOid::from(wait),
        DatumWithOid::from(config.max_attempts),
        DatumWithOid::from(format!("INTERNAL_ERROR: {text}")),
    ];
    for row in client.update(&st.reclaim_after_bug, None, &args)? {
        out.push((row.get::<i64>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()));
    }
    Ok(out)
}

/// The log ids of some jobs, for messages.
fn log_ids(plan: &Plan, jobs: &[usize]) -> String {
    id_list(jobs.iter().filter_map(|j| plan.jobs.get(*j)).flat_map(|j| j.write.log_ids.iter().copied()).collect())
}

/// Log ids for a message: sorted, the first 20, and how many more.
fn id_list(mut ids: Vec<i64>) -> String {
    ids.sort_unstable();
    let shown: Vec<String> = ids.iter().take(20).map(i64::to_string).collect();
    if ids.len() > shown.len() {
        format!("{} and {} more", shown.join(", "), ids.len() - shown.len())
    } else {
        shown.join(", ")
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(e) = payload.downcast_ref::<pg_sys::panic::CaughtError>() {
        report_of(e).message().to_string()
    } else {
        "unknown panic".to_string()
    }
}
