//! The sync worker process: it starts, waits for its database, and loops. Each cycle reads the settings once
//! (`guc::config`), makes sure pgforce is installed and this server is the one that delivers, lets the engine do its
//! housekeeping (alerts, the outage breaker), then gives each pipeline its turn: today the write pipeline
//! (`write`: Postgres → Salesforce). Commits wake it (`crate::shmem`); a slow poll is the fallback. Each cycle runs
//! inside a panic boundary: a bug is logged with what the worker was doing, the cycle's rows go back to the queue,
//! and the worker goes on.

mod database;
mod deliverer;
pub(crate) mod engine;
mod error;
mod read;
pub(crate) mod sql;
mod transaction;
pub(crate) mod write;

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use pgforce_core::config::Config;
use pgforce_core::delivery::plan::Plan;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::{guc, shmem};
use deliverer::Deliverer;
use engine::db::Prepared;
use engine::status::{show, ConnState, Step};
use engine::Engine;
use error::WorkerError;
use read::Read;
use sql::Statements;
use transaction::{as_sync_engine, report_of};
use write::Write;

/// How often archive maintenance runs at most.
const ARCHIVE_EVERY: Duration = Duration::from_secs(1);
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
    /// Postgres → Salesforce: the write pipeline's own state.
    write: Write,
    read: Read,
    /// When the read pipeline wants its next turn (it has one in every cycle the writes leave idle, too).
    read_due: std::time::Instant,
    /// Whether this worker holds the delivery lock of its database.
    delivery_locked: bool,
    /// This server's identity (`deliverer::identity`), read once.
    identity: Option<String>,
}

impl Worker {
    fn new() -> Worker {
        Worker {
            engine: Engine::new(),
            write: Write::default(),
            read: Read::default(),
            read_due: std::time::Instant::now(),
            delivery_locked: false,
            identity: None,
        }
    }

    /// One cycle inside a panic boundary. Returns how long to sleep unless woken.
    fn run(&mut self, config: &Config) -> Duration {
        self.engine.deaf = false;
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.cycle(config))) {
            // A running Bulk job is looked at on time, also while idle or paced.
            Ok(wait) => {
                let wait = wait.min(self.write.bulk.next_poll());
                shmem::sleep_through_commits(self.engine.deaf.then_some(wait));
                wait
            }
            Err(payload) => {
                shmem::sleep_through_commits(None);
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
            self.engine.deaf = true; // turning delivery on is a reload, which wakes the worker
            return poll;
        }
        if let Some(wait) = self.not_the_deliverer() {
            self.engine.deaf = true;
            return wait.min(poll);
        }
        let requeued = self.write.maintain(&mut self.engine, config);
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
            // An outage's backoff: new changes wait with the others; retry_now() and resume() wake the worker.
            self.engine.deaf = true;
            return paused.min(poll);
        }
        // Writes first; then the reads that are due, in one bounded step.
        let write_wait = self.write.step(&mut self.engine, config, requeued);
        if write_wait.is_zero() && std::time::Instant::now() < self.read_due {
            return write_wait;
        }
        let read_wait = self.read.step(&mut self.engine, config);
        self.read_due = std::time::Instant::now() + read_wait;
        write_wait.min(read_wait)
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

    /// Prepares the statements when pgforce's schema changed (first cycle, or the extension was re-created): rows a
    /// crash left `PENDING` are then claimed again and an earlier worker's counters forgotten. Returns whether
    /// pgforce is installed.
    fn prepare(&mut self, config: &Config) -> Result<bool, WorkerError> {
        let prepared = self.engine.db.prepare(|c, st| {
            reclaim(c, st, config)?;
            c.update(&st.engine.clear_metrics, None, &[])?;
            Ok(())
        })?;
        if prepared == Prepared::Fresh {
            self.engine.metrics.unwritten();
            self.write.bulk.kept = true;
            self.engine.reporter.forget();
        }
        Ok(prepared != Prepared::NotInstalled)
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
    Ok(client.update(&st.queue.reclaim_pending, None, &[DatumWithOid::from(wait)])?.len())
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
    for row in client.update(&st.queue.reclaim_after_bug, None, &args)? {
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
