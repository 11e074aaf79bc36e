//! Salesforce → Postgres, as the worker drives it: each reading mapping (read_only, read_write) whose interval is up
//! asks Salesforce for the records changed since its position (`pgforce_core::read`), with no transaction open, and
//! applies each page as the table's owner in one transaction that also moves the position: a crash re-reads a page,
//! and loses or duplicates nothing. The write pipeline has its turn first in every cycle.
//!
//! - `state`: which mappings read and where each stands (`_read_state`);
//! - `poll`: the polls, several mappings' first pages in one Composite call, then page by page;
//! - `bulk`: large loads through one Bulk API 2.0 query job;
//! - `sweep`: records deleted for good, from Salesforce's delete log;
//! - `local`: what the table and the trigger log hold of a page's records (local changes on their way win);
//! - `apply`: a page written into its table.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use pgforce_core::alert::Alert;
use pgforce_core::config::Config;
use pgforce_core::mapping::PgKind;
use pgforce_core::read::apply::OnDelete;
use pgforce_core::read::Position;
use pgforce_core::salesforce::composite::MAX_QUERIES;
use pgrx::pg_sys;

use crate::worker::engine::Engine;
use crate::worker::stop_requested;

mod apply;
mod bulk;
mod local;
mod poll;
mod state;
mod sweep;

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
    /// Mappings alerted as not catching up (`read_stalled`), until they do.
    behind: HashSet<String>,
    /// When the open `read_stalled` alerts of caught-up mappings were last resolved.
    resolved_at: Option<Instant>,
    /// Loads through Bulk query jobs.
    loads: bulk::Loads,
}

/// A reading mapping as the read pipeline needs it.
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
    /// `read_write`: the table's changes are sent too, and a read never undoes one still on its way.
    pub sends: bool,
    /// The column a record is matched by when no row has its Id yet (`map_table(..., upsert_field => …)`).
    pub upsert_field: Option<String>,
    /// Where the next sweep of the delete log starts (seconds since 1970 UTC).
    pub swept_to: Option<i64>,
    /// How long ago a read of every record last reached its end (`None`: none has yet).
    pub compared_ago: Option<Duration>,
    /// How long ago a read last reached the end of Salesforce's changes (none has yet: since the mapping was made
    /// or last changed).
    pub lag: Option<Duration>,
    /// The Bulk query job a load is reading, if any.
    pub bulk: Option<BulkLoad>,
}

/// A load through a Bulk API 2.0 query job (`_read_state.bulk_*`).
pub(crate) struct BulkLoad {
    pub job: String,
    /// The next result set's locator (`None`: the first set is next).
    pub locator: Option<String>,
    /// When the job was asked for, less the look-back (seconds since 1970 UTC): the polls go on from there.
    pub since: i64,
}

pub(crate) struct Column {
    pub name: String,
    pub kind: PgKind,
    /// The column's type without its modifier (`character varying`, `numeric`): values are cast to it and then
    /// assigned, so a value longer or larger than the column allows is refused, never cut.
    pub type_sql: String,
    /// A relationship by foreign key (`map_table(..., relationships => …)`): the column holds the parent row's `id`.
    pub parent: Option<Parent>,
}

/// The parent a foreign-key column reads: the record's lookup field (`AccountId`) names the parent's record, whose
/// row in the parent's mapped table (`salesforce.account`) the column references.
pub(crate) struct Parent {
    pub field: String,
    /// The parent table, schema-qualified and quoted.
    pub table: String,
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
        let mappings = match engine.with_statements(|c, st| state::readings(c, &st.schema)) {
            Ok(m) => m,
            Err(_) => return default_interval,
        };
        self.next_read.retain(|relid, _| mappings.iter().any(|m| m.relid == *relid));
        self.watch_lag(engine, config, &mappings);
        let interval = |m: &Reading| m.interval.unwrap_or(default_interval);
        let now = Instant::now();
        let active: Vec<&Reading> = mappings.iter().filter(|m| !m.paused).collect();
        let due_at = |m: &Reading| self.next_read.get(&m.relid).copied().unwrap_or(now);
        let Some(first_due) = active.iter().map(|m| due_at(m)).min() else { return default_interval };
        if first_due > now {
            return (first_due - now).min(default_interval);
        }
        // Due now, and those due within half their interval: polled together, their first pages share Composite
        // calls (five queries a call), and they stay in step afterwards.
        let due: Vec<&Reading> = active.into_iter().filter(|m| due_at(m) <= now + interval(m) / 2).collect();
        // Every pgforce.compare_interval each mapping reads every record again (a reload), for what no poll shows:
        // records undeleted without a new stamp, a delete log with a gap.
        let comparing: Vec<&&Reading> = due
            .iter()
            .filter(|m| {
                !m.reloading && config.compare_interval.is_some_and(|every| m.compared_ago.is_some_and(|a| a >= every))
            })
            .collect();
        if !comparing.is_empty() {
            for m in comparing {
                let _ = engine.with_statements(|c, st| state::start_over(c, &st.schema, m.relid));
            }
            return Duration::ZERO;
        }
        // Parents before children: a row that references another mapping's row by foreign key finds it read first.
        let mut due = due;
        due.sort_by_key(|m| m.columns.iter().any(|c| c.parent.is_some()));
        // Loads go through a Bulk query job when they are large (each counted first); the rest poll.
        let (loading, due): (Vec<&Reading>, Vec<&Reading>) =
            due.into_iter().partition(|m| self.loads.concerns(m, config));
        let mut due = due;
        for mapping in loading {
            match self.loads.step(engine, config, mapping) {
                Ok(bulk::Progress::Rest) => due.push(mapping),
                Ok(bulk::Progress::Waiting(wait)) => {
                    self.next_read.insert(mapping.relid, Instant::now() + wait);
                }
                // More sets wait: the next cycle goes on at once, after the writes' turn.
                Ok(bulk::Progress::Applied { done: false }) => return Duration::ZERO,
                Ok(bulk::Progress::Applied { done: true }) => {
                    self.next_read.insert(mapping.relid, Instant::now() + interval(mapping));
                }
                Err(e) => {
                    if !engine.vanished() {
                        pgrx::warning!(
                            "pgforce: loading {} from Salesforce failed (trying again later): {e}",
                            mapping.qualified
                        );
                    }
                    self.next_read.insert(mapping.relid, Instant::now() + interval(mapping));
                }
            }
            if stop_requested() {
                return Duration::ZERO;
            }
        }
        let mut pages = 0;
        for group in due.chunks(MAX_QUERIES) {
            let asked = poll::ask_together(engine, config, group);
            for (mapping, asked) in group.iter().zip(asked) {
                let result = match asked.first {
                    Err(e) => Err(e),
                    Ok(first) => poll::read(engine, config, mapping, PAGES_PER_STEP.saturating_sub(pages), first),
                };
                if let Some((start, answer)) = asked.sweep {
                    if let Err(e) = sweep::apply(engine, config, mapping, start, answer) {
                        pgrx::warning!(
                            "pgforce: sweeping {}'s deleted records failed (trying again later): {e}",
                            mapping.qualified
                        );
                    }
                }
                match result {
                    Ok((read, true)) => {
                        pages += read;
                        self.next_read.insert(mapping.relid, Instant::now() + interval(mapping));
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
                        self.next_read.insert(mapping.relid, Instant::now() + interval(mapping));
                    }
                }
                if pages >= PAGES_PER_STEP || stop_requested() {
                    return Duration::ZERO;
                }
            }
        }
        let now = Instant::now();
        mappings
            .iter()
            .filter(|m| !m.paused)
            .filter_map(|m| self.next_read.get(&m.relid))
            .map(|due| due.saturating_duration_since(now))
            .min()
            .unwrap_or(default_interval)
            .min(default_interval)
    }
}

impl Read {
    /// Alerts (`read_stalled`) when a mapping not paused has not caught up with Salesforce for longer than
    /// `pgforce.alert_stalled_after` and twice its interval (a failing read, an expired token, a load that cannot
    /// end), once per episode; resolves the alert once it has (at once, and every `USAGE_RECHECK` for alerts left
    /// open by an earlier run of the worker).
    fn watch_lag(&mut self, engine: &mut Engine, config: &Config, mappings: &[Reading]) {
        let Some(limit) = config.alert_stalled_after else { return };
        let (mut caught_up, mut ended) = (Vec::new(), false);
        for m in mappings.iter().filter(|m| !m.paused) {
            let allowed = limit.max(2 * m.interval.unwrap_or(config.read_interval));
            match m.lag {
                // Once per episode: `behind` remembers the mapping until it catches up.
                Some(lag) if lag > allowed && self.behind.insert(m.table_name.clone()) => {
                    engine.alerts.offer(
                        &mut engine.db,
                        &engine.reporter,
                        Alert::read_stalled(m.table_name.clone(), lag, allowed),
                    );
                }
                Some(lag) if lag > allowed => {}
                Some(_) => {
                    ended |= self.behind.remove(&m.table_name);
                    caught_up.push(m.table_name.clone());
                }
                None => {}
            }
        }
        if !caught_up.is_empty() && (ended || self.resolved_at.is_none_or(|t| t.elapsed() >= USAGE_RECHECK)) {
            self.resolved_at = Some(Instant::now());
            let _ = engine.with_statements(|c, st| state::resolve_read_alerts(c, &st.schema, &caught_up));
        }
    }
}
