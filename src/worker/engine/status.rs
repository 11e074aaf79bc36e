//! What the worker tells operators: its connection state (Heroku Connect's names) and API usage in `_sync_state`,
//! which `salesforce.sync_status` shows, and its current step in `pg_stat_activity.query`.

use std::ffi::CString;
use std::time::{Duration, Instant};

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;

pub use pgforce_core::status::ConnState;

use crate::worker::sql::Statements;
use crate::worker::transaction::as_sync_engine;

/// What the worker is doing, as `pg_stat_activity` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Claiming,
    Sending {
        records: usize,
        objects: Vec<String>,
    },
    Recording,
    /// Reading a page of an object's records from Salesforce (the read pipeline).
    Reading {
        object: String,
    },
    Maintaining,
    Waiting,
    /// `pgforce.database` does not exist (yet), or the last attempt to connect to it failed.
    WaitingForDatabase(String),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Claiming => f.write_str("claiming changes"),
            Step::Sending { records, objects } => {
                write!(f, "sending {records} record{} to {}", if *records == 1 { "" } else { "s" }, objects.join(", "))
            }
            Step::Recording => f.write_str("recording outcomes"),
            Step::Reading { object } => write!(f, "reading {object} from Salesforce"),
            Step::Maintaining => f.write_str("archiving"),
            Step::Waiting => f.write_str("waiting for changes"),
            Step::WaitingForDatabase(name) => write!(f, "waiting for database \"{name}\" (pgforce.database)"),
        }
    }
}

/// Shows `step` in `pg_stat_activity` (`state` active, or idle while waiting).
pub fn show(step: &Step) {
    let text = CString::new(format!("pgforce: {step}")).unwrap_or_default();
    let state = if matches!(step, Step::Waiting | Step::WaitingForDatabase(_)) {
        pg_sys::BackendState::STATE_IDLE
    } else {
        pg_sys::BackendState::STATE_RUNNING
    };
    // SAFETY: this backend's own status entry; Postgres copies the string.
    unsafe { pg_sys::pgstat_report_activity(state, text.as_ptr()) };
}

/// What `_sync_state` shows: state, message, API usage (used, limit).
type Reported = (ConnState, Option<String>, Option<(u64, u64)>);

/// Writes the connection state when it changes, and API usage at most once a second.
#[derive(Default)]
pub struct Reporter {
    reported: Option<Reported>,
    last_usage_write: Option<Instant>,
}

impl Reporter {
    /// Records a new state or message (unchanged ones cost nothing). `usage` is the latest Salesforce reported.
    pub fn report(&mut self, st: &Statements, state: ConnState, message: Option<String>, usage: Option<(u64, u64)>) {
        if self.reported.as_ref().is_some_and(|r| r.0 == state && r.1 == message) {
            return;
        }
        if state.is_trouble() {
            pgrx::log!("pgforce: {}: {}", state.as_str(), message.as_deref().unwrap_or(""));
        }
        let usage = usage.or(self.reported.as_ref().and_then(|r| r.2));
        self.write(st, (state, message, usage));
    }

    /// Records when the worker tries Salesforce again (after an outage's or a refused login's backoff).
    pub fn report_next_attempt(&mut self, st: &Statements, wait: Duration) {
        let _ = as_sync_engine(|c| {
            c.update(&st.engine.write_next_attempt, None, &[DatumWithOid::from(wait.as_secs_f64())])?;
            Ok(())
        });
    }

    /// Records API usage alone: it changes on every call, so a busy drain writes it at most once a second.
    pub fn report_usage(&mut self, st: &Statements, usage: Option<(u64, u64)>) {
        let Some(usage) = usage else { return };
        let previous = self.reported.as_ref().and_then(|r| r.2);
        let recent = self.last_usage_write.is_some_and(|t| t.elapsed() < Duration::from_secs(1));
        if previous == Some(usage) || (previous.is_some() && recent) {
            return;
        }
        let (state, message) = self.reported.as_ref().map_or((ConnState::Polling, None), |r| (r.0, r.1.clone()));
        self.write(st, (state, message, Some(usage)));
    }

    /// Whether the last state written was trouble (paused, unauthorized, system error): it stays until a delivery
    /// succeeds, rather than flapping with every retry.
    pub fn in_trouble(&self) -> bool {
        self.reported.as_ref().is_some_and(|r| r.0.is_trouble())
    }

    /// The connection state last written.
    pub fn state(&self) -> Option<ConnState> {
        self.reported.as_ref().map(|r| r.0)
    }

    /// Forgets what was written (the extension was re-created: its `_sync_state` is new).
    pub fn forget(&mut self) {
        self.reported = None;
    }

    fn write(&mut self, st: &Statements, current: Reported) {
        let (state, message, usage) = current.clone();
        let written = as_sync_engine(|c| {
            c.update(
                &st.engine.write_state,
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
            self.last_usage_write = Some(Instant::now());
        }
    }
}
