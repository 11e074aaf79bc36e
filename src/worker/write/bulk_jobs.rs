//! The Bulk API 2.0 jobs whose changes are in flight, as the worker follows them: whether `_bulk_jobs` may hold any
//! (while it may, each cycle looks; otherwise the table is not queried at all), when to look at each job again
//! (later each time), the mapping each job this worker sent belongs to (its calls are counted there), and how many
//! times recording a finished job's results was begun (bounded: never a loop).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgforce_core::delivery::bulk;
use pgrx::datum::DatumWithOid;

use crate::worker::engine::db::Db;

pub(crate) struct BulkJobs {
    /// `_bulk_jobs` may hold ids: an earlier worker's, or ones this worker kept and has not yet seen forgotten.
    pub(crate) kept: bool,
    /// Per job looked at: when to look again, and the wait before that look (it grows as the job runs).
    polls: HashMap<String, (Instant, Duration)>,
    /// The mapping each job this worker sent belongs to.
    tables: HashMap<String, String>,
    /// Per finished job: how many times recording its results was begun.
    finish_tries: HashMap<String, u32>,
}

impl Default for BulkJobs {
    fn default() -> BulkJobs {
        BulkJobs { kept: true, polls: HashMap::new(), tables: HashMap::new(), finish_tries: HashMap::new() }
    }
}

impl BulkJobs {
    /// Of the jobs `_bulk_jobs` holds, those due for a look; the others' bookkeeping is dropped.
    pub(crate) fn due(&mut self, ids: Vec<String>) -> Vec<String> {
        self.polls.retain(|id, _| ids.contains(id));
        self.tables.retain(|id, _| ids.contains(id));
        if ids.is_empty() {
            self.kept = false;
            return Vec::new();
        }
        let now = Instant::now();
        ids.into_iter().filter(|id| self.polls.get(id).is_none_or(|(at, _)| *at <= now)).collect()
    }

    /// A job this worker sent, of this mapping.
    pub(crate) fn sent(&mut self, id: &str, table: &str) {
        self.tables.insert(id.to_string(), table.to_string());
    }

    /// The mapping of a job this worker sent (a job an earlier worker sent is not known).
    pub(crate) fn table_of(&self, id: &str) -> Option<String> {
        self.tables.get(id).cloned()
    }

    /// Schedules the next look at a job, later each time.
    pub(crate) fn schedule(&mut self, id: &str) {
        let every = self.polls.get(id).map_or(bulk::FIRST_POLL, |(_, every)| bulk::next_poll(*every));
        self.polls.insert(id.to_string(), (Instant::now() + every, every));
    }

    /// How long until a running job is to be looked at (`Duration::MAX`: none is).
    pub(crate) fn next_poll(&self) -> Duration {
        let now = Instant::now();
        self.polls.values().map(|(at, _)| at.saturating_duration_since(now)).min().unwrap_or(Duration::MAX)
    }

    /// Counts one more try at recording a finished job's results; returns how many there were.
    pub(crate) fn finish_try(&mut self, id: &str) -> u32 {
        let tries = self.finish_tries.entry(id.to_string()).or_default();
        *tries += 1;
        *tries
    }

    /// Forgets a job; its changes still in flight go back to the queue, in doubt (`cost`: each at the cost of an
    /// attempt).
    pub(crate) fn release(&mut self, db: &mut Db, id: &str, cost: bool) {
        let released = db.with_statements(|c, st| {
            c.update(&st.upkeep.release_bulk_job, None, &[DatumWithOid::from(id), DatumWithOid::from(cost)])?;
            Ok(())
        });
        match released {
            Ok(()) => {
                self.polls.remove(id);
                self.finish_tries.remove(id);
            }
            Err(e) => {
                pgrx::warning!("pgforce: cannot forget Bulk job {id} (trying again later): {e}");
                self.schedule(id);
            }
        }
    }

    /// Forgets finished jobs; returns whether it could (if not, the next cycle looks at them again).
    pub(crate) fn forget_finished(db: &mut Db, ids: Vec<String>) -> bool {
        if ids.is_empty() {
            return true;
        }
        let forgotten = db.with_statements(|c, st| {
            c.update(&st.upkeep.forget_bulk_jobs, None, &[DatumWithOid::from(ids)])?;
            Ok(())
        });
        if let Err(e) = &forgotten {
            pgrx::warning!("pgforce: cannot forget finished Bulk jobs (looked at again at the next cycle): {e}");
        }
        forgotten.is_ok()
    }
}
