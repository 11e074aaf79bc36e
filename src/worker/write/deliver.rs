//! One claim delivered: planned, sent (collections calls, or Bulk jobs handed to `bulk`), and its outcomes recorded
//! as requests complete; inserts in doubt looked for before they go again.

use super::bulk_jobs::BulkJobs;
use super::Write;
use super::{claim, plan, record, sender};
use crate::guc;
use crate::worker::engine::status::show;
use crate::worker::engine::status::{ConnState, Step};
use crate::worker::engine::Engine;
use crate::worker::error::WorkerError;
use crate::worker::{log_ids, panic_message, reclaim, stop_requested};
use crate::worker::{DESCRIBE_FOR, DESCRIBE_RETRY, ERROR_PAUSE, MAX_PARENT_ROUNDS, PARENT_CLAIMS, SIGNAL_CHECK};
use pgforce_core::config::Config;
use pgforce_core::delivery::batch::{Batch, Verdict};
use pgforce_core::delivery::doubt;
use pgforce_core::delivery::outcome::{sent_outcomes, unsent_outcomes, Outcomes, Retry};
use pgforce_core::delivery::plan::{Limits, Plan};
use pgforce_core::delivery::{Claimed, Table};
use pgforce_core::describe::Described;
use pgforce_core::salesforce::{CallError, Client};
use pgrx::datum::DatumWithOid;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Write {
    /// Plans, sends and records one claim, recording outcomes as requests complete. `Err` carries how long to wait
    /// (the connection is paused, recording failed, or the worker is asked to stop).
    pub(crate) fn deliver(
        &mut self,
        engine: &mut Engine,
        config: &Config,
        mut claimed: Claimed,
    ) -> Result<(), Duration> {
        let mut plan = match engine.with_statements(|c, st| plan::plan_claim(c, st, &claimed)) {
            Ok(plan) => plan,
            Err(e) => return self.recording_failed(engine, config, e),
        };
        // Parents the claim's writes wait for, whose changes are due, are claimed too (and theirs, level by
        // level): they go first in this delivery instead of leaving their children waiting. Bounded: a claim
        // grows to at most PARENT_CLAIMS times its size.
        for _ in 0..MAX_PARENT_ROUNDS {
            if plan.parents_due.is_empty() || claimed.count as i64 >= config.batch_size * PARENT_CLAIMS {
                break;
            }
            let wanted = std::mem::take(&mut plan.parents_due);
            let pulled = engine.with_statements(|c, st| {
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
                Err(e) => return self.recording_failed(engine, config, e),
            }
        }
        // The plan holds what goes; the claimed changes are let go before anything is sent.
        drop(std::mem::take(&mut claimed.changes));
        self.claim_tables.clear();
        for job in &plan.jobs {
            self.claim_tables.extend(job.write.log_ids.iter().map(|id| (*id, job.table.clone())));
        }
        let tables = &claimed.tables;
        let client = match engine.conn.settings(config) {
            Ok(settings) => Ok(engine.conn.client(&mut engine.db, &settings)),
            Err(e) => Err(CallError::Unauthorized(e)),
        };
        if let Ok(client) = &client {
            self.settle_doubts(engine, client, &mut plan, tables);
            let described = self.describe(client, tables);
            plan.refuse_unholdable(tables, &described);
        }
        plan.refuse_oversized(config.max_request_bytes);
        plan.order(tables);
        // What needs no call is settled at once.
        let settled = unsent_outcomes(&plan, tables, Retry::of(config), &mut engine.rng);
        if !settled.is_empty() {
            self.record_outcomes(engine, config, &settled)?;
        }
        let waves = plan.waves(tables, Limits::of(config));
        if waves.is_empty() {
            return Ok(());
        }
        for batch in waves.iter().flatten() {
            if let Some(job) = batch.items.first().and_then(|(j, _)| plan.jobs.get(*j)) {
                engine.metrics.request(&job.table, batch.items.len(), batch.bytes);
            }
        }
        let records = waves.iter().flatten().map(|b| b.items.len()).sum();
        let objects: BTreeSet<&str> = waves
            .iter()
            .flatten()
            .flat_map(|b| b.items.iter())
            .filter_map(|(i, _)| tables.get(&plan.jobs[*i].table).map(|t| t.target.sobject.as_str()))
            .collect();
        engine.set_step(Step::Sending { records, objects: objects.into_iter().map(str::to_string).collect() });
        guc::inject_fault_while_sending();
        let trouble = match client {
            // Nothing is sent: the records keep their place and their attempts.
            Err(e) => {
                let unsent: Vec<(usize, Verdict)> =
                    waves.iter().flatten().flat_map(|b| b.items.iter().map(|(k, _)| (*k, Verdict::Unsent))).collect();
                let outcomes = sent_outcomes(&plan, &unsent, tables, Retry::of(config), &mut engine.rng);
                self.record_outcomes(engine, config, &outcomes)?;
                Some(e)
            }
            Ok(client) => self.send_and_record(engine, config, &plan, tables, client, waves)?,
        };
        match trouble {
            None => {
                engine.conn.breaker.success();
                if engine.reporter.in_trouble() {
                    engine.report(ConnState::Polling, None);
                }
                let usage = engine.conn.usage();
                if let Some(st) = engine.db.statements() {
                    engine.reporter.report_usage(st, usage);
                }
                Ok(())
            }
            Some(trouble) => {
                let wait = engine.conn.breaker.failure(&mut engine.rng);
                engine.deaf = true; // the backoff's wait: new changes wait with the others
                let state = match trouble {
                    CallError::Unauthorized(_) => ConnState::Unauthorized,
                    _ => ConnState::Outage,
                };
                if state == ConnState::Unauthorized {
                    if let Some(c) = engine.conn.current() {
                        c.forget_session();
                    }
                }
                engine.report(state, Some(trouble.to_string()));
                if let Some(st) = engine.db.statements() {
                    engine.reporter.report_next_attempt(st, wait);
                }
                Err(wait)
            }
        }
    }

    /// The describe of each sObject of the claim, read again after `DESCRIBE_FOR` (one API call each). One that
    /// cannot be read is left out (Salesforce alone checks those records) and tried again after `DESCRIBE_RETRY`;
    /// when Salesforce cannot be reached at all, at the next claim.
    pub(crate) fn describe(
        &mut self,
        client: &Client,
        tables: &HashMap<String, Table>,
    ) -> HashMap<String, Arc<Described>> {
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
    pub(crate) fn send_and_record(
        &mut self,
        engine: &mut Engine,
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
                return self.recording_failed(
                    engine,
                    config,
                    WorkerError::Database(format!("cannot start sending: {e}")),
                )
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
                let kept = engine.with_statements(|c, st| {
                    c.update(
                        &st.upkeep.keep_bulk_job,
                        None,
                        &[DatumWithOid::from(id.as_str()), DatumWithOid::from(log_ids)],
                    )?;
                    Ok(())
                });
                if let Err(e) = &kept {
                    pgrx::warning!("pgforce: cannot keep the id of Bulk job {id}: {e}");
                }
                self.bulk.kept |= kept.is_ok();
                if let Some(job) = keys.first().and_then(|k| plan.jobs.get(*k)) {
                    self.bulk.sent(&id, &job.table);
                    // The job's create and close (its upload is the request counted when it was planned).
                    (0..2).for_each(|_| engine.metrics.api_call(&job.table));
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
            let sending = std::mem::replace(&mut engine.step, Step::Recording);
            show(&engine.step);
            let outcomes = sent_outcomes(plan, &verdicts, tables, Retry::of(config), &mut engine.rng);
            self.record_outcomes(engine, config, &outcomes)?;
            engine.set_step(sending);
        }
        let joined = sender.done.join();
        // Jobs that never ran (their upload failed): their changes were recorded as not sent.
        jobs.retain(|id| !queued.contains(id));
        BulkJobs::forget_finished(&mut engine.db, jobs);
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
                let outcomes = sent_outcomes(plan, &verdicts, tables, Retry::of(config), &mut engine.rng);
                self.record_outcomes(engine, config, &outcomes)?;
                None
            }
        };
        // Every request reports its verdicts; a job without one was not sent.
        let missing: Vec<(usize, Verdict)> = expected.difference(&answered).map(|k| (*k, Verdict::Unsent)).collect();
        if !missing.is_empty() {
            let outcomes = sent_outcomes(plan, &missing, tables, Retry::of(config), &mut engine.rng);
            self.record_outcomes(engine, config, &outcomes)?;
        }
        Ok(trouble)
    }

    /// Records outcomes in one transaction; when that fails, each write's alone, so only those that cannot be
    /// recorded fail.
    pub(crate) fn record_outcomes(
        &mut self,
        engine: &mut Engine,
        config: &Config,
        outcomes: &Outcomes,
    ) -> Result<(), Duration> {
        let mut recorded = engine.with_statements(|c, st| record::record(c, st, outcomes));
        if recorded.is_err() && !engine.vanished() {
            let mut rng = StdRng::from_rng(&mut engine.rng);
            let max_attempts = config.max_attempts;
            recorded = engine
                .with_statements(|c, st| record::record_each(c, st, outcomes, max_attempts, &mut rng))
                .map(|_| ());
        }
        match recorded {
            Ok(()) => {
                let tables = &self.claim_tables;
                engine.metrics.outcomes(outcomes, |id| tables.get(&id).cloned());
                engine.alert_failures(outcomes);
                Ok(())
            }
            Err(e) => self.recording_failed(engine, config, e),
        }
    }

    /// After a database error in a delivery: the claim's rows still `PENDING` go back to the queue (in doubt, as
    /// they may have been sent), and the worker pauses.
    pub(crate) fn recording_failed<R>(
        &mut self,
        engine: &mut Engine,
        config: &Config,
        e: WorkerError,
    ) -> Result<R, Duration> {
        if engine.vanished() {
            return Err(Duration::ZERO);
        }
        engine.report(ConnState::SystemError, Some(format!("recording outcomes: {e}")));
        let _ = engine.with_statements(|c, st| reclaim(c, st, config));
        Err(ERROR_PAUSE)
    }

    /// Looks for the records that earlier, unanswered attempts may have created (`delivery::doubt`), so that they
    /// are updated (or deleted) rather than created a second time. A write that cannot be checked waits for
    /// another attempt.
    pub(crate) fn settle_doubts(
        &mut self,
        engine: &mut Engine,
        client: &Client,
        plan: &mut Plan,
        tables: &HashMap<String, Table>,
    ) {
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
                engine.metrics.api_call(&job.table);
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
            let taken = engine.with_statements(|c, st| record::owned_sfids(c, st, &names, &ids));
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
