//! Loads through a Bulk API 2.0 query job (`pgforce_core::read::bulk`): a load of at least
//! `pgforce.read_bulk_threshold` records asks Salesforce for one `queryAll` job, looks at it within half a second and
//! then less often, and applies its result sets (50,000 records each) one per turn, each in one transaction that also
//! records the next set's locator: a crash goes on with the set it was applying. Smaller loads read REST pages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgforce_core::config::Config;
use pgforce_core::read::bulk::{self, JobState, SET_SIZE};
use pgforce_core::read::soql;
use pgforce_core::salesforce::CallError;
use pgrx::pg_sys;
use serde_json::Value;

use super::apply::{self, PageOutcome, Pass};
use super::poll::{fields, now_epoch};
use super::state;
use super::{BulkLoad, Reading};
use crate::worker::engine::status::Step;
use crate::worker::engine::Engine;
use crate::worker::error::WorkerError;

/// What a load's turn did.
pub(super) enum Progress {
    /// Not a Bulk load: the mapping reads REST pages.
    Rest,
    /// The job runs: look again after this long.
    Waiting(Duration),
    /// A result set was applied; `done`: it was the last.
    Applied { done: bool },
}

/// Loads that are counted small (for their read's generation), and when each running job is looked at next.
#[derive(Default)]
pub(super) struct Loads {
    small: HashMap<pg_sys::Oid, i64>,
    checks: HashMap<pg_sys::Oid, (Instant, Duration)>,
}

impl Loads {
    /// Whether `mapping`'s turn goes through here: a Bulk load under way, or a load not yet counted.
    pub(super) fn concerns(&self, mapping: &Reading, config: &Config) -> bool {
        mapping.bulk.is_some()
            || (config.read_bulk_threshold.is_some()
                && mapping.position.stamp.is_none()
                && self.small.get(&mapping.relid) != Some(&mapping.generation))
    }

    /// Takes `mapping`'s load a step further.
    pub(super) fn step(&mut self, engine: &mut Engine, config: &Config, mapping: &Reading) -> Result<Progress, String> {
        let settings = engine.conn.settings(config)?;
        let client = engine.conn.client(&mut engine.db, &settings);
        let version = client.api_version().to_string();
        let Some(load) = &mapping.bulk else {
            // Counted first (one call): below the threshold REST pages cost fewer calls and no wait.
            engine.set_step(Step::Reading { object: mapping.sobject.clone() });
            let count = client.query_all_page(&soql::count(&mapping.sobject));
            engine.metrics.api_call(&mapping.table_name);
            engine.write_requests(config);
            let count = count.map_err(|e| state::failed(engine, mapping.relid, e.to_string()))?;
            let total = count.get("totalSize").and_then(Value::as_u64).unwrap_or_default();
            if config.read_bulk_threshold.is_none_or(|t| total < t) {
                self.small.insert(mapping.relid, mapping.generation);
                return Ok(Progress::Rest);
            }
            let body = bulk::job_body(&mapping.sobject, &fields(mapping));
            let created = client.rest(
                "POST",
                &format!("/services/data/v{version}/jobs/query"),
                Some(("application/json", &body)),
            );
            engine.metrics.api_call(&mapping.table_name);
            engine.write_requests(config);
            let created: Value =
                serde_json::from_str(&created.map_err(|e| state::failed(engine, mapping.relid, e.to_string()))?)
                    .map_err(|e| format!("the Bulk query job's answer is not JSON: {e}"))?;
            let job = created.get("id").and_then(Value::as_str).ok_or("the Bulk query job's answer has no id")?;
            let since = now_epoch() - config.read_look_back.as_secs() as i64;
            engine
                .with_statements(|c, st| state::record_bulk_job(c, &st.schema, mapping, Some(job), since))
                .map_err(|e| e.to_string())?;
            let first = bulk::next_check(None);
            self.checks.insert(mapping.relid, (Instant::now() + first, first));
            return Ok(Progress::Waiting(first));
        };
        if load.locator.is_none() {
            if let Some((at, _)) = self.checks.get(&mapping.relid).filter(|(at, _)| *at > Instant::now()) {
                return Ok(Progress::Waiting(*at - Instant::now()));
            }
            engine.set_step(Step::Reading { object: mapping.sobject.clone() });
            let info = client.rest("GET", &format!("/services/data/v{version}/jobs/query/{}", load.job), None);
            engine.metrics.api_call(&mapping.table_name);
            engine.write_requests(config);
            let info: Value = match info {
                Ok(text) => serde_json::from_str(&text).unwrap_or(Value::Null),
                Err(e) => return Err(self.lost(engine, mapping, load, e)),
            };
            match JobState::parse(info.get("state").and_then(Value::as_str).unwrap_or_default()) {
                JobState::Running => {
                    let previous = self.checks.get(&mapping.relid).map(|(_, d)| *d);
                    let next = bulk::next_check(previous);
                    self.checks.insert(mapping.relid, (Instant::now() + next, next));
                    return Ok(Progress::Waiting(next));
                }
                JobState::Ended => {
                    let why = info.get("errorMessage").and_then(Value::as_str).unwrap_or("no reason given").to_string();
                    return Err(self.lost(
                        engine,
                        mapping,
                        load,
                        CallError::Failed { code: "BULK_QUERY_FAILED".into(), message: why },
                    ));
                }
                JobState::Complete => {}
            }
        }
        self.checks.remove(&mapping.relid);
        let mut path = format!("/services/data/v{version}/jobs/query/{}/results?maxRecords={SET_SIZE}", load.job);
        if let Some(locator) = &load.locator {
            path.push_str(&format!("&locator={locator}"));
        }
        engine.set_step(Step::Reading { object: mapping.sobject.clone() });
        let set = client.rest_answer("GET", &path, None);
        engine.metrics.api_call(&mapping.table_name);
        engine.write_requests(config);
        let set = set.map_err(|e| self.lost(engine, mapping, load, e))?;
        let page = bulk::records(&set.text)?;
        let next = bulk::next_locator(set.locator.as_deref());
        let user = if mapping.sends { client.user_id().ok().flatten() } else { None };
        let done = next.is_none();
        let applied: Result<PageOutcome, WorkerError> = engine.with_statements(|c, st| {
            apply::page(c, &st.schema, mapping, &page, Pass::Bulk { locator: next, since: load.since }, user.as_deref())
        });
        match applied.map_err(|e| e.to_string())? {
            PageOutcome::StartedOver => Ok(Progress::Applied { done: false }),
            _ => Ok(Progress::Applied { done }),
        }
    }

    /// The job cannot go on (it failed, was aborted or deleted, Salesforce refuses its results): it is forgotten, and
    /// the next turn starts the load over with a new one. Returns the error, recorded for `sync_status`.
    fn lost(&mut self, engine: &mut Engine, mapping: &Reading, load: &BulkLoad, e: CallError) -> String {
        // Refused (gone, another API version) or ended: a new job. Anything else (an outage, a timeout): this one
        // is asked again at the next turn.
        let gone = match &e {
            CallError::Rejected { .. } => true,
            CallError::Failed { code, .. } => code == "BULK_QUERY_FAILED",
            _ => false,
        };
        let message = format!("the Bulk query job {} for {}: {e}", load.job, mapping.qualified);
        if gone {
            self.checks.remove(&mapping.relid);
            let _ = engine.with_statements(|c, st| state::start_over(c, &st.schema, mapping.relid));
        }
        state::failed(engine, mapping.relid, message)
    }
}
