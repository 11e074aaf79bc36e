//! Salesforce → Postgres, as the worker drives it: each read-only mapping whose interval is up asks Salesforce for
//! the records changed since its position (`pgforce_core::read`), a page at a time with no transaction open, and
//! applies each page as the table's owner in one transaction that also moves the position (`apply`): a crash
//! re-reads a page, and loses or duplicates nothing. The write pipeline has its turn first in every cycle.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgforce_core::config::Config;
use pgforce_core::mapping::PgKind;
use pgforce_core::read::apply::OnDelete;
use pgforce_core::read::{page, soql, Position};
use pgrx::pg_sys;

use crate::worker::engine::status::Step;
use crate::worker::engine::Engine;
use crate::worker::error::WorkerError;
use crate::worker::stop_requested;

mod apply;

/// How far back each poll starts before the position, so that a record Salesforce committed later than its stamp
/// (a long transaction) is still seen. Re-read records that did not change write nothing.
const LOOK_BACK_SECS: i64 = 120;

/// While reads wait for the API budget, how often Salesforce is asked for the usage now.
const USAGE_RECHECK: Duration = Duration::from_secs(30);

/// Pages one step reads at most before it gives the write pipeline its turn again.
const PAGES_PER_STEP: usize = 10;

/// The read pipeline: when each reading mapping reads next.
#[derive(Default)]
pub(crate) struct Read {
    next_read: HashMap<pg_sys::Oid, Instant>,
    /// When the API usage was last asked for while reads waited for the budget.
    usage_checked: Option<Instant>,
}

/// A read-only mapping as the read pipeline needs it.
pub(crate) struct Reading {
    pub relid: pg_sys::Oid,
    /// The table, schema-qualified and quoted.
    pub qualified: String,
    pub sobject: String,
    pub owner: pg_sys::Oid,
    pub paused: bool,
    pub position: Position,
    /// The columns read: each reads the Salesforce field its name spells.
    pub columns: Vec<Column>,
    /// `map_table(..., read_interval => …)`; `None`: `pgforce.read_interval`.
    pub interval: Option<Duration>,
    pub on_delete: OnDelete,
    /// `salesforce.reload()` asked for every record again: what is read is remembered, and at the end the rows of
    /// records not seen are deleted.
    pub reloading: bool,
    /// The mapping's name in the log and in `sync_metrics` (the table's bare name).
    pub table_name: String,
    /// The read state's generation when this read began (`_read_state.generation`).
    pub generation: i64,
}

pub(crate) struct Column {
    pub name: String,
    pub kind: PgKind,
    /// The column's type without its modifier (`character varying`, `numeric`): values are cast to it and then
    /// assigned, so a value longer or larger than the column allows is refused, never cut.
    pub type_sql: String,
}

impl Read {
    /// The read pipeline's turn in a cycle: reads each mapping that is due, up to `PAGES_PER_STEP` pages, unless the
    /// API usage is above `pgforce.max_api_usage`. Returns how long until a mapping is due again (zero: more pages
    /// are waiting).
    pub(crate) fn step(&mut self, engine: &mut Engine, config: &Config) -> Duration {
        let default_interval = config.read_interval;
        // Reads never spend the budget writes need: above pgforce.max_api_usage they wait (writes are paced). Salesforce
        // is asked for the usage now (/limits) at most every USAGE_RECHECK, so reads go on once the budget frees up
        // even when nothing else makes a call.
        if engine.conn.throttled(config) {
            if self.usage_checked.is_some_and(|t| t.elapsed() < USAGE_RECHECK) {
                return default_interval.min(USAGE_RECHECK);
            }
            self.usage_checked = Some(Instant::now());
            if let Some(client) = engine.conn.current().cloned() {
                let _ = client.refresh_usage();
                engine.write_requests(config);
            }
            if engine.conn.throttled(config) {
                return default_interval.min(USAGE_RECHECK);
            }
        }
        let mappings = match engine.with_statements(|c, st| apply::readings(c, &st.schema)) {
            Ok(m) => m,
            Err(_) => return default_interval,
        };
        self.next_read.retain(|relid, _| mappings.iter().any(|m| m.relid == *relid));
        let mut wait = default_interval;
        let mut pages = 0;
        for mapping in mappings.iter().filter(|m| !m.paused) {
            let interval = mapping.interval.unwrap_or(default_interval);
            wait = wait.min(interval);
            let now = Instant::now();
            if let Some(due) = self.next_read.get(&mapping.relid).filter(|due| **due > now) {
                wait = wait.min(*due - now);
                continue;
            }
            match read(engine, config, mapping, PAGES_PER_STEP - pages) {
                Ok((read, true)) => {
                    pages += read;
                    self.next_read.insert(mapping.relid, Instant::now() + interval);
                }
                // More pages wait: the next cycle goes on at once, after the writes' turn.
                Ok((_, false)) => return Duration::ZERO,
                Err(e) => {
                    if !engine.vanished() {
                        pgrx::warning!(
                            "pgforce: reading {} from Salesforce failed (trying again later): {e}",
                            mapping.qualified
                        );
                    }
                    self.next_read.insert(mapping.relid, Instant::now() + interval);
                }
            }
            if pages >= PAGES_PER_STEP || stop_requested() {
                return Duration::ZERO;
            }
        }
        wait
    }
}

/// Reads `mapping`'s changes since its position, at most `budget` pages. Returns the pages read and whether the
/// read reached the end of Salesforce's changes.
fn read(engine: &mut Engine, config: &Config, mapping: &Reading, budget: usize) -> Result<(usize, bool), String> {
    let settings = engine.conn.settings(config)?;
    let client = engine.conn.client(&mut engine.db, &settings);
    let fields: Vec<String> = mapping.columns.iter().map(|c| c.name.clone()).collect();
    let mut from = soql::poll_start(&mapping.position, LOOK_BACK_SECS);
    let mut position = mapping.position.clone();
    for n in 0..budget.max(1) {
        engine.set_step(Step::Reading { object: mapping.sobject.clone() });
        let answer = client.query_all_page(&soql::page(&mapping.sobject, &fields, &from));
        engine.metrics.api_call(&mapping.table_name);
        engine.write_requests(config);
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                let message = e.to_string();
                let _ = engine.with_statements(|c, st| apply::record_error(c, &st.schema, mapping.relid, &message));
                return Err(message);
            }
        };
        let page = page::parse(&answer)?;
        let done = page.records.len() < soql::PAGE_SIZE;
        let applied: Result<bool, WorkerError> =
            engine.with_statements(|c, st| apply::page(c, &st.schema, mapping, &page, &mut position, done));
        if !applied.map_err(|e| e.to_string())? {
            // Started over meanwhile (reload(), mapping again): the next step reads from the new start, at once.
            return Ok((n + 1, false));
        }
        match page.records.last() {
            Some(last) if !done => from = Position { stamp: Some(last.stamp), id: Some(last.id.clone()) },
            _ => return Ok((n + 1, true)),
        }
        if stop_requested() || engine.conn.throttled(config) {
            return Ok((n + 1, false));
        }
    }
    Ok((budget, false))
}
