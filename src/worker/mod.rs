//! The sync worker: a background worker that drains `_trigger_log` to Salesforce. Each cycle claims due rows (one
//! short transaction), plans them (`pgforce_core::plan`), sends them with no transaction open
//! (`pgforce_core::salesforce::deliver`), records the outcomes (another short transaction), and keeps the log small
//! (`archive`). Commits wake it (`wake`); a slow poll is the fallback.

mod archive;
mod claim;
mod record;
pub mod wake;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use pgforce_core::convert::{operation, Operation};
use pgforce_core::plan::{merge, Planned, Write, WriteKind};
use pgforce_core::retry::{backoff, Breaker};
use pgforce_core::salesforce::{deliver, AuthFlow, Batch, CallError, CallKind, Client, Settings, Verdict};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiResult};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

use crate::guc;
use claim::Claimed;
use record::{LogOutcome, MappingStats, RowOutcome};

const MAX_RECORDS_PER_CALL: usize = 200;
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(300);
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

/// What one cycle writes back: log rows, mapped rows (by qualified table name), per-mapping stats.
struct Outcomes {
    log: Vec<LogOutcome>,
    rows: HashMap<String, Vec<RowOutcome>>,
    stats: HashMap<String, MappingStats>,
}

/// One claimed write and what it becomes.
struct Job {
    table: String,
    write: Write,
    op: Operation,
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
                pgrx::warning!("pgforce: cannot reclaim pending rows: {e}");
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
                self.report(&schema, ConnState::SystemError, Some(format!("claiming changes: {e}")));
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
            pgrx::warning!("pgforce: archive maintenance failed: {e}");
            0
        })
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
        let Claimed { changes, tables, .. } = claimed;
        let mut jobs: Vec<Job> = Vec::new();
        let mut nothing: Vec<Vec<i64>> = Vec::new();
        for (table, list) in &changes {
            if !tables.contains_key(table) {
                continue;
            }
            for planned in merge(list) {
                match planned {
                    Planned::Nothing { log_ids } => nothing.push(log_ids),
                    Planned::Send(w) => jobs.push(Job { table: table.clone(), write: w, op: Operation::Skip }),
                }
            }
        }
        // Updates and deletes whose log rows carry no sfid take the mapped row's current one.
        let lookups: Result<HashMap<String, HashMap<i64, String>>, String> = in_transaction(|c| {
            let mut out = HashMap::new();
            for (table, t) in &tables {
                let ids: Vec<i64> = jobs
                    .iter()
                    .filter(|j| &j.table == table && j.write.sfid.is_none() && j.write.kind != WriteKind::Insert)
                    .map(|j| j.write.record_id)
                    .collect();
                if !ids.is_empty() {
                    out.insert(table.clone(), claim::current_sfids(c, t, ids)?);
                }
            }
            Ok(out)
        });
        let lookups = lookups.unwrap_or_default();
        for j in jobs.iter_mut() {
            if j.write.sfid.is_none() {
                j.write.sfid = lookups.get(&j.table).and_then(|m| m.get(&j.write.record_id)).cloned();
            }
            if let Some(t) = tables.get(&j.table) {
                j.op = operation(&t.target, &j.write, merged);
            }
        }
        let batches = batches(&jobs, &tables);
        let delivery = match self.client() {
            Ok(client) => deliver(client, batches, guc::max_concurrency()),
            Err(e) => pgforce_core::salesforce::Delivery { trouble: Some(CallError::Unauthorized(e)), ..Default::default() },
        };
        let verdicts: HashMap<usize, Verdict> = delivery.verdicts.into_iter().collect();
        let Outcomes { log, rows, stats } = self.outcomes(&jobs, &nothing, &verdicts, &tables);
        if let Err(e) = in_transaction(|c| record::record(c, schema, &log, &rows, &stats)) {
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

    /// Turns verdicts into log and mapped-row outcomes.
    fn outcomes(
        &mut self,
        jobs: &[Job],
        nothing: &[Vec<i64>],
        verdicts: &HashMap<usize, Verdict>,
        tables: &HashMap<String, claim::Table>,
    ) -> Outcomes {
        let max_attempts = guc::max_attempts();
        let mut log = Vec::new();
        let mut rows: HashMap<String, Vec<RowOutcome>> = HashMap::new();
        let mut stats: HashMap<String, MappingStats> = HashMap::new();
        let all = |ids: &[i64], state: &'static str, message: Option<String>, attempts: i32, retry_in_ms: Option<i64>| -> Vec<LogOutcome> {
            ids.iter().map(|id| LogOutcome { id: *id, state, message: message.clone(), sfid: None, attempts, retry_in_ms }).collect()
        };
        for ids in nothing {
            if let Some((last, merged)) = ids.split_last() {
                log.extend(all(merged, "MERGED", None, 0, None));
                log.extend(all(&[*last], "IGNORED", Some("inserted and deleted before it was sent".into()), 0, None));
            }
        }
        for (i, job) in jobs.iter().enumerate() {
            let ids = &job.write.log_ids;
            let Some((last, merged)) = ids.split_last() else { continue };
            let qualified = tables.get(&job.table).map(|t| t.qualified.clone()).unwrap_or_default();
            let attempts = job.write.attempts;
            let verdict = match &job.op {
                Operation::Skip => Verdict::Done { id: None, created: false },
                Operation::Refuse(m) => Verdict::Failed { code: "NOT_SENT".into(), message: m.clone(), transient: false },
                _ => verdicts.get(&i).cloned().unwrap_or(Verdict::Unsent),
            };
            match verdict {
                Verdict::Done { id, created } => {
                    stats.entry(job.table.clone()).or_default().succeeded = true;
                    log.extend(all(merged, "MERGED", None, attempts, None));
                    log.push(LogOutcome { id: *last, state: "SUCCESS", message: None, sfid: id.clone(), attempts, retry_in_ms: None });
                    if job.write.kind != WriteKind::Delete {
                        let inserted = matches!(job.op, Operation::Create(_)) || created;
                        rows.entry(qualified).or_default().push(RowOutcome {
                            record_id: job.write.record_id,
                            sfid: id,
                            lastop: if inserted { "INSERTED" } else { "UPDATED" },
                            err: None,
                        });
                    }
                }
                Verdict::Failed { code, message, transient } if transient && attempts + 1 < max_attempts => {
                    let wait = backoff(attempts as u32, RETRY_BASE, RETRY_CAP, &mut self.rng);
                    let note = Some(format!("{code}: {message} (attempt {} of {max_attempts}, retrying)", attempts + 1));
                    log.extend(all(ids, "NEW", note, attempts + 1, Some(wait.as_millis() as i64)));
                }
                Verdict::Failed { code, message, .. } => {
                    let text = format!("{code}: {message}");
                    stats.entry(job.table.clone()).or_default().last_error = Some(text.clone());
                    log.extend(all(ids, "FAILED", Some(text.clone()), attempts + 1, None));
                    if job.write.kind != WriteKind::Delete {
                        rows.entry(qualified).or_default().push(RowOutcome { record_id: job.write.record_id, sfid: None, lastop: "FAILED", err: Some(text) });
                    }
                }
                Verdict::Unsent => log.extend(all(ids, "NEW", None, attempts, None)),
            }
        }
        Outcomes { log, rows, stats }
    }

    /// Writes the connection state when it changes (and API usage at most once a second).
    fn report(&mut self, schema: &str, state: ConnState, message: Option<String>) {
        let latest = self.client.as_ref().and_then(|(_, c)| c.usage()).map(|u| (u.used, u.limit));
        let usage = latest.or(self.reported.as_ref().and_then(|r| r.2));
        let current = (state, message.clone(), usage);
        if self.reported.as_ref() == Some(&current) {
            return;
        }
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

/// Groups jobs into calls of at most 200 records of one kind (and one sObject for upserts).
fn batches(jobs: &[Job], tables: &HashMap<String, claim::Table>) -> Vec<Batch> {
    let mut groups: Vec<(CallKind, Vec<(usize, Value)>)> = Vec::new();
    let mut index: HashMap<(String, u8), usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let Some(t) = tables.get(&job.table) else { continue };
        let (kind, tag, item) = match &job.op {
            Operation::Create(r) => (CallKind::Create, 0, Value::Object(r.clone())),
            Operation::Update(r) => (CallKind::Update, 1, Value::Object(r.clone())),
            Operation::Upsert(r) => (
                CallKind::Upsert { object: t.target.sobject.clone(), field: t.target.upsert_field.clone().unwrap_or_default() },
                2,
                Value::Object(r.clone()),
            ),
            Operation::Delete(id) => (CallKind::Delete, 3, Value::String(id.clone())),
            Operation::Skip | Operation::Refuse(_) => continue,
        };
        let key = (job.table.clone(), tag);
        let g = *index.entry(key).or_insert_with(|| {
            groups.push((kind, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push((i, item));
    }
    groups
        .into_iter()
        .flat_map(|(kind, items)| {
            items.chunks(MAX_RECORDS_PER_CALL).map(|c| Batch { kind: kind.clone(), items: c.to_vec() }).collect::<Vec<_>>()
        })
        .collect()
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
