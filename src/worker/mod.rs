//! The sync worker: a background worker that drains `_trigger_log` to Salesforce. Each cycle follows the data:
//! `claim` due rows (one short transaction) → `plan` them into calls → send them with no transaction open
//! (`pgforce_core::salesforce::deliver`) → `record` the outcomes (another short transaction) → `archive`. Commits
//! wake it (`wake`); a slow poll is the fallback.

mod archive;
mod claim;
mod plan;
mod record;
pub mod wake;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use pgforce_core::retry::Breaker;
use pgforce_core::salesforce::{deliver, AuthFlow, CallError, Client, Settings, Verdict};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiResult};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::guc;
use claim::Claimed;
use record::Outcomes;

/// How often archive maintenance runs at most.
const ARCHIVE_EVERY: Duration = Duration::from_secs(1);
/// Pause between cycles while the org's API usage is above `pgforce.max_api_usage`.
const THROTTLE_PAUSE: Duration = Duration::from_secs(5);

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
    BackgroundWorker::connect_worker_to_spi(Some(&guc::database()), None);
    wake::publish_worker();
    let mut worker = Worker::new();
    let mut wait = Duration::ZERO;
    while BackgroundWorker::wait_latch(Some(wait)) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the main loop of this process, outside any transaction.
            unsafe {
                pg_sys::ConfigReloadPending = 0;
                pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
            }
        }
        wait = worker.cycle();
    }
    wake::withdraw_worker();
    // A non-zero exit asks the postmaster to start the worker again (after 5 s): a terminated worker comes back.
    // At server shutdown nothing is restarted. `pgforce.enabled = off` is the way to stop delivery.
    // SAFETY: ends this background worker process.
    unsafe { pg_sys::proc_exit(1) };
}

/// Runs `f` in its own transaction; an error (SQL or Rust) aborts it and is returned as text, so the worker lives on.
fn in_transaction<R>(f: impl FnOnce(&mut SpiClient<'_>) -> SpiResult<R>) -> Result<R, String> {
    // SAFETY: the worker's main thread, between transactions.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let body = AssertUnwindSafe(|| Spi::connect_mut(|client| f(client)).map_err(|e| e.to_string()));
    let result = PgTryBuilder::new(body)
        .catch_others(|e| {
            Err(match e {
                pg_sys::panic::CaughtError::PostgresError(r) | pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_string(),
                pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
            })
        })
        .execute();
    crate::capture::WRITING_OUTCOMES.store(false, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: ends the transaction started above, whichever way it went.
    unsafe {
        if result.is_ok() {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
    }
    result
}

/// The connection states `sync_status` shows (Heroku Connect's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    Idle,
    Polling,
    Paused,
    Unauthorized,
    SystemError,
    Disabled,
    Throttled,
}

impl ConnState {
    fn as_str(self) -> &'static str {
        match self {
            ConnState::Idle => "IDLE",
            ConnState::Polling => "POLLING_DB_CHANGES",
            ConnState::Paused => "PAUSED",
            ConnState::Unauthorized => "UNAUTHORIZED",
            ConnState::SystemError => "SYSTEM_ERROR",
            ConnState::Disabled => "DISABLED",
            ConnState::Throttled => "THROTTLED",
        }
    }
}

/// Identity of the settings a client was built from: a change (after SIGHUP) builds a new client.
type SettingsKey = (String, String, String, String, String, String, String, String, Duration);

/// What `_sync_state` shows: state, message, API usage (used, limit).
type Reported = (ConnState, Option<String>, Option<(u64, u64)>);

struct Worker {
    client: Option<(SettingsKey, Client)>,
    breaker: Breaker,
    rng: StdRng,
    reported: Option<Reported>,
    last_report: Instant,
    last_archive: Option<Instant>,
    schema: Option<String>,
}

impl Worker {
    fn new() -> Worker {
        Worker {
            client: None,
            breaker: Breaker::new(Duration::from_millis(250), Duration::from_secs(60)),
            rng: StdRng::from_os_rng(),
            reported: None,
            last_report: Instant::now(),
            last_archive: None,
            schema: None,
        }
    }

    /// One pass; returns how long to sleep unless woken.
    fn cycle(&mut self) -> Duration {
        let poll = guc::poll_interval();
        let schema = match in_transaction(installed_schema) {
            Ok(Some(s)) => s,
            Ok(None) => return poll, // the extension is not installed (yet) in this database
            Err(e) => {
                pgrx::warning!("pgforce: cannot read the catalog: {e}");
                return poll;
            }
        };
        if self.schema.as_deref() != Some(schema.as_str()) {
            // First cycle (or extension re-created): rows a crash left PENDING are claimed again.
            if let Err(e) = in_transaction(|c| reclaim_pending(c, &schema)) {
                if !extension_gone(&schema) {
                    pgrx::warning!("pgforce: cannot reclaim pending rows: {e}");
                }
                return poll;
            }
            self.schema = Some(schema.clone());
        }
        if !guc::enabled() {
            self.report(&schema, ConnState::Disabled, None);
            return poll;
        }
        let maintenance = self.maintain(&schema);
        let paused = self.breaker.remaining();
        if !paused.is_zero() {
            return paused.min(poll);
        }
        let ordered = guc::ordered_writes();
        let claimed = match in_transaction(|c| claim::claim(c, &schema, guc::batch_size(), ordered)) {
            Ok(c) => c,
            Err(e) => {
                if !self.vanished() {
                    self.report(&schema, ConnState::SystemError, Some(format!("claiming changes: {e}")));
                }
                return poll;
            }
        };
        if claimed.count == 0 {
            self.report(&schema, ConnState::Idle, None);
            let next = in_transaction(|c| next_retry_in(c, &schema)).ok().flatten();
            // Time-based work (archiving, retrying failed rows) must not wait for the fallback poll when its
            // settings are shorter than it.
            let timed = [Some(guc::archive_after()), guc::retry_failed_after()].into_iter().flatten().min().unwrap_or(poll);
            let wait = next.map_or(poll, |d| d.min(poll)).min(timed.max(ARCHIVE_EVERY));
            return if maintenance > 0 { Duration::ZERO } else { wait };
        }
        self.report(&schema, ConnState::Polling, None);
        let outcome = self.deliver_claimed(&schema, claimed, !ordered);
        match outcome {
            Ok(()) if self.throttled() => {
                self.report(&schema, ConnState::Throttled, Some("API usage above pgforce.max_api_usage".into()));
                THROTTLE_PAUSE
            }
            // More may be waiting (or arrived while sending): look again at once.
            Ok(()) => Duration::ZERO,
            Err(wait) => wait,
        }
    }

    fn throttled(&self) -> bool {
        let usage = self.client.as_ref().and_then(|(_, c)| c.usage());
        usage.is_some_and(|u| u.fraction() > guc::max_api_usage())
    }

    /// Archive, purge, requeue and failed-row retries. Returns how many rows were put back in the queue.
    fn maintain(&mut self, schema: &str) -> u64 {
        let due = self.last_archive.is_none_or(|t| t.elapsed() >= ARCHIVE_EVERY);
        let result = in_transaction(|c| {
            c.update("SET LOCAL xmlbinary = 'hex'", None, &[])?;
            let mut queued = archive::requeue(c, schema)?;
            if due {
                archive::archive(c, schema, guc::archive_after())?;
                archive::purge(c, schema, guc::archive_retention())?;
                if let Some(after) = guc::retry_failed_after() {
                    queued += archive::retry_failed(c, schema, after)?;
                }
            }
            Ok(queued)
        });
        if due {
            self.last_archive = Some(Instant::now());
        }
        result.unwrap_or_else(|e| {
            if !self.vanished() {
                pgrx::warning!("pgforce: archive maintenance failed: {e}");
            }
            0
        })
    }

    /// After an error: whether it came from the extension being dropped meanwhile (a DROP EXTENSION between two of
    /// the worker's transactions), which is no error of the worker's; the next cycle then starts afresh.
    fn vanished(&mut self) -> bool {
        let gone = self.schema.as_deref().is_none_or(extension_gone);
        if gone {
            self.schema = None;
        }
        gone
    }

    fn client(&mut self) -> Result<&Client, String> {
        let key: SettingsKey = (
            guc::login_url(),
            guc::auth_flow(),
            guc::client_id(),
            guc::client_secret(),
            guc::username(),
            guc::jwt_key_file(),
            guc::refresh_token(),
            guc::api_version(),
            guc::request_timeout(),
        );
        if self.client.as_ref().is_none_or(|(k, _)| *k != key) {
            let flow: AuthFlow = key.1.parse()?;
            let pem = if flow == AuthFlow::JwtBearer {
                std::fs::read(&key.5).map_err(|e| format!("pgforce.jwt_key_file {:?}: {e}", key.5))?
            } else {
                Vec::new()
            };
            let settings = Settings {
                login_url: key.0.clone(),
                auth_flow: flow,
                client_id: key.2.clone(),
                client_secret: key.3.clone(),
                username: key.4.clone(),
                jwt_private_key_pem: pem,
                refresh_token: key.6.clone(),
                api_version: key.7.clone(),
                request_timeout: key.8,
            };
            self.client = Some((key, Client::new(settings)));
        }
        self.client.as_ref().map(|(_, c)| c).ok_or_else(|| "no client".to_string())
    }

    /// Plans, sends and records one claim. `Err` carries how long to wait (the connection is paused).
    fn deliver_claimed(&mut self, schema: &str, claimed: Claimed, merged: bool) -> Result<(), Duration> {
        let mut plan = plan::merge_claimed(&claimed);
        let tables = &claimed.tables;
        // Updates and deletes whose log rows carry no sfid take the mapped row's current one.
        let wanted = plan.sfids_wanted();
        let sfids = in_transaction(|c| {
            let mut out = HashMap::new();
            for (table, ids) in wanted {
                if let Some(t) = tables.get(&table) {
                    out.insert(table, claim::current_sfids(c, t, ids)?);
                }
            }
            Ok(out)
        })
        .unwrap_or_default();
        plan.decide(tables, &sfids, merged);
        // Parents first: records referenced by external id from another mapped table go in an earlier wave, so a
        // child does not race its parent's insert.
        let delivery = match self.client() {
            Ok(client) => {
                let mut all = pgforce_core::salesforce::Delivery::default();
                for wave in plan.waves(tables) {
                    if all.trouble.is_some() {
                        let unsent = wave.iter().flat_map(|b| b.items.iter().map(|(k, _)| (*k, Verdict::Unsent)));
                        all.verdicts.extend(unsent);
                        continue;
                    }
                    let d = deliver(client, wave, guc::max_concurrency());
                    all.verdicts.extend(d.verdicts);
                    all.calls += d.calls;
                    if all.trouble.is_none() {
                        all.trouble = d.trouble;
                    }
                }
                all
            }
            Err(e) => pgforce_core::salesforce::Delivery { trouble: Some(CallError::Unauthorized(e)), ..Default::default() },
        };
        let verdicts: HashMap<usize, Verdict> = delivery.verdicts.into_iter().collect();
        let Outcomes { log, rows, stats } = record::outcomes(&plan, &verdicts, tables, guc::max_attempts(), &mut self.rng);
        if let Err(e) = in_transaction(|c| record::record(c, schema, &log, &rows, &stats)) {
            if self.vanished() {
                return Err(Duration::ZERO);
            }
            // The rows stay PENDING; the next start (or this worker after the error clears) reclaims them.
            self.report(schema, ConnState::SystemError, Some(format!("recording outcomes: {e}")));
            let _ = in_transaction(|c| reclaim_pending(c, schema));
            return Err(Duration::from_secs(1));
        }
        match delivery.trouble {
            None => {
                self.breaker.success();
                let usage = self.client.as_ref().and_then(|(_, c)| c.usage());
                self.report_usage(schema, usage.map(|u| (u.used, u.limit)));
                Ok(())
            }
            Some(trouble) => {
                let wait = self.breaker.failure(&mut self.rng);
                let state = match trouble {
                    CallError::Unauthorized(_) => ConnState::Unauthorized,
                    _ => ConnState::Paused,
                };
                if state == ConnState::Unauthorized {
                    if let Some((_, c)) = &self.client {
                        c.forget_session();
                    }
                }
                self.report(schema, state, Some(trouble.to_string()));
                Err(wait)
            }
        }
    }

    /// Writes the connection state when it changes. Only a new state or message is written here; API usage alone
    /// changes on every call and is written by `report_usage`, at most once a second, so a busy drain does not pay
    /// one more transaction per cycle.
    fn report(&mut self, schema: &str, state: ConnState, message: Option<String>) {
        if self.reported.as_ref().is_some_and(|r| r.0 == state && r.1 == message) {
            return;
        }
        let latest = self.client.as_ref().and_then(|(_, c)| c.usage()).map(|u| (u.used, u.limit));
        let current = (state, message.clone(), latest.or(self.reported.as_ref().and_then(|r| r.2)));
        if matches!(state, ConnState::Paused | ConnState::Unauthorized | ConnState::SystemError) {
            pgrx::log!("pgforce: {}: {}", state.as_str(), message.as_deref().unwrap_or(""));
        }
        self.write_state(schema, current);
    }

    fn report_usage(&mut self, schema: &str, usage: Option<(u64, u64)>) {
        let Some(usage) = usage else { return };
        let (state, message) = self.reported.as_ref().map_or((ConnState::Polling, None), |r| (r.0, r.1.clone()));
        let previous = self.reported.as_ref().and_then(|r| r.2);
        if previous == Some(usage) || (previous.is_some() && self.last_report.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.write_state(schema, (state, message, Some(usage)));
    }

    fn write_state(&mut self, schema: &str, current: Reported) {
        let (state, message, usage) = current.clone();
        let written = in_transaction(|c| {
            c.update(
                &format!(
                    "UPDATE {schema}._sync_state SET state = $1, message = $2, api_used = coalesce($3, api_used),
                            api_limit = coalesce($4, api_limit), worker_pid = pg_backend_pid(), updated_at = now()"
                ),
                None,
                &[
                    DatumWithOid::from(state.as_str()),
                    DatumWithOid::from(message),
                    DatumWithOid::from(usage.map(|u| u.0 as i64)),
                    DatumWithOid::from(usage.map(|u| u.1 as i64)),
                ],
            )?;
            Ok(())
        });
        if written.is_ok() {
            self.reported = Some(current);
            self.last_report = Instant::now();
        }
    }
}

/// The schema pgforce is installed in, if it is installed in this database.
fn installed_schema(c: &mut SpiClient<'_>) -> SpiResult<Option<String>> {
    let rows = c.select(
        "SELECT quote_ident(n.nspname)::text FROM pg_catalog.pg_extension e
           JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgforce'",
        None,
        &[],
    )?;
    let mut out = None;
    for row in rows {
        out = row.get::<String>(1)?;
    }
    Ok(out)
}

/// Whether pgforce is no longer installed in `schema` (dropped, or moved).
fn extension_gone(schema: &str) -> bool {
    !matches!(in_transaction(installed_schema), Ok(Some(now)) if now == schema)
}

/// Rows left PENDING (a crash between claim and record) go back to NEW.
fn reclaim_pending(c: &mut SpiClient<'_>, schema: &str) -> SpiResult<()> {
    c.update("SET LOCAL xmlbinary = 'hex'", None, &[])?;
    c.update(&format!("UPDATE {schema}._trigger_log SET state = 'NEW', updated_at = now() WHERE state = 'PENDING'"), None, &[])?;
    Ok(())
}

/// Time until the earliest scheduled retry, if any.
fn next_retry_in(c: &mut SpiClient<'_>, schema: &str) -> SpiResult<Option<Duration>> {
    let rows = c.select(
        &format!(
            "SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp())::float8
               FROM {schema}._trigger_log WHERE state = 'NEW' AND next_attempt_at IS NOT NULL"
        ),
        None,
        &[],
    )?;
    let mut out = None;
    for row in rows {
        out = row.get::<f64>(1)?.map(|s| Duration::from_secs_f64(s.max(0.0)));
    }
    Ok(out)
}
