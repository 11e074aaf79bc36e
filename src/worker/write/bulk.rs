//! The write pipeline's Bulk jobs, followed to their end: each cycle looks at the jobs due a look, records the
//! outcomes of those that are over from their results (as a collections call's would be recorded), and puts back
//! the changes of a job that never ran or that Salesforce no longer knows. State per job lives in `BulkJobs`.

use pgforce_core::config::Config;
use pgforce_core::delivery::bulk::{self, JobState};
use pgforce_core::delivery::outcome::{sent_outcomes, unsent_outcomes, Retry};
use pgforce_core::salesforce::{CallError, Client};

use super::Write;
use super::{claim, plan};
use crate::worker::engine::status::Step;
use crate::worker::engine::Engine;
use crate::worker::{stop_requested, MAX_FINISH_TRIES};

impl Write {
    /// Looks at the Bulk jobs whose changes are in flight (this worker's, or an earlier one's, after a restart)
    /// when their next look is due, and records the results of those that are over. It never waits for a job:
    /// other changes go on meanwhile (a record in a running job waits for it, `sql::queue_sql`). A job never closed
    /// (a crash before its upload) is aborted; one Salesforce no longer knows puts its changes back, in doubt.
    pub(crate) fn poll_bulk_jobs(&mut self, engine: &mut Engine, config: &Config) {
        if !self.bulk.kept {
            return;
        }
        let ids = engine.with_statements(|c, st| {
            let mut ids = Vec::new();
            for row in c.select(&st.upkeep.bulk_jobs, None, &[])? {
                ids.extend(row.get::<String>(1)?);
            }
            Ok(ids)
        });
        let Ok(ids) = ids else { return };
        let due = self.bulk.due(ids);
        if due.is_empty() {
            return;
        }
        let client = match engine.conn.settings(config) {
            Ok(settings) => engine.conn.client(&mut engine.db, &settings),
            Err(_) => return, // delivery reports the connection's trouble
        };
        for id in due {
            if stop_requested() {
                return;
            }
            self.count_bulk_calls(engine, &id, 1);
            match bulk::state(&client, &id) {
                Ok((state, error)) if state.finished() => self.finish_bulk_job(engine, config, &client, &id, error),
                Ok((JobState::Open, _)) => {
                    self.count_bulk_calls(engine, &id, 1);
                    match bulk::abort_job(&client, &id) {
                        // Never closed, it never ran: its changes go again at no cost.
                        Ok(()) => self.release_bulk_job(engine, &id, false),
                        Err(_) => self.bulk.schedule(&id),
                    }
                }
                Ok(_) => self.bulk.schedule(&id),
                // Gone (deleted, or of another org): its changes go again, in doubt.
                Err(CallError::Rejected { status: 404, .. }) => self.release_bulk_job(engine, &id, true),
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
    pub(crate) fn finish_bulk_job(
        &mut self,
        engine: &mut Engine,
        config: &Config,
        client: &Client,
        id: &str,
        job_error: Option<String>,
    ) {
        self.count_bulk_calls(engine, id, 3);
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
            return self.release_bulk_job(engine, id, true);
        }
        self.bulk.schedule(id);
        let results = match results {
            Ok(results) => results,
            // Salesforce keeps results for days; gone, the changes go again, in doubt.
            Err(CallError::Rejected { status: 404, .. }) => return self.release_bulk_job(engine, id, true),
            Err(e) => {
                pgrx::warning!("pgforce: cannot read the results of Bulk job {id} (reading again later): {e}");
                return;
            }
        };
        engine.set_step(Step::Recording);
        let read = engine.with_statements(|c, st| {
            let claimed = claim::job_entries(c, st, config, id)?;
            let plan = plan::plan_claim(c, st, &claimed)?;
            Ok((claimed.tables, plan))
        });
        let (tables, mut plan) = match read {
            Ok(read) => read,
            Err(e) => {
                if !engine.vanished() {
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
        let mut outcomes = unsent_outcomes(&plan, &tables, Retry::of(config), &mut engine.rng);
        outcomes.append(sent_outcomes(&plan, &verdicts, &tables, Retry::of(config), &mut engine.rng));
        if self.record_outcomes(engine, config, &outcomes).is_err() {
            return self.bulk.schedule(id);
        }
        // Changes the results could not be matched with (none, normally) go again, in doubt.
        self.release_bulk_job(engine, id, true);
    }

    /// Forgets a Bulk job (`BulkJobs::release`).
    pub(crate) fn release_bulk_job(&mut self, engine: &mut Engine, id: &str, cost: bool) {
        self.bulk.release(&mut engine.db, id, cost);
    }

    /// Counts calls made about a Bulk job for its mapping, when known (a job an earlier worker sent is not).
    pub(crate) fn count_bulk_calls(&mut self, engine: &mut Engine, id: &str, calls: usize) {
        if let Some(table) = self.bulk.table_of(id) {
            (0..calls).for_each(|_| engine.metrics.api_call(&table));
        }
    }
}
