//! What each answer means: the verdicts of one delivery become, for every log row, its new state, message,
//! attempts and retry time; for every mapped row, its `sfid`, `_hc_lastop` and `_hc_err`; and per mapping, whether
//! anything succeeded and the last error.

use std::collections::HashMap;
use std::time::Duration;

use super::batch::Verdict;
use super::links::{parent_failed, parent_row, parent_waiting, PARENT_WAIT};
use super::merge::WriteKind;
use super::plan::{Operation, Plan};
use super::Table;
use crate::log::{AuditStatus, LastOp, LogState};
use crate::retry::backoff;

/// Transient failures wait 0..min(cap, base·2^attempt) before the next attempt.
pub const RETRY_BASE: Duration = Duration::from_millis(500);
pub const RETRY_CAP: Duration = Duration::from_secs(300);

/// How failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// `pgforce.max_attempts`.
    pub max_attempts: i32,
    /// A write whose attempt went unanswered waits at least this long (`pgforce.request_timeout`) before it is
    /// looked for and sent again: Salesforce may still be working on the request the worker gave up on.
    pub in_doubt_wait: Duration,
}

impl Retry {
    pub fn of(config: &crate::config::Config) -> Retry {
        Retry { max_attempts: config.max_attempts, in_doubt_wait: config.connection.request_timeout }
    }
}

/// What happens to one log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOutcome {
    pub id: i64,
    pub state: LogState,
    pub message: Option<String>,
    pub sfid: Option<String>,
    pub attempts: i32,
    /// For rows going back to `NEW`: wait this long before the next attempt (`None`: at once).
    pub retry_in: Option<Duration>,
    /// The attempt was sent and its outcome is unknown: the row is marked in doubt (`delivery::doubt`).
    pub in_doubt: bool,
    /// What the audit reports that the state and action alone do not tell (written to `sf_result`): what was
    /// actually done (an update sent as a create is `Inserted`), or that the row was gone before it was sent.
    pub result: Option<AuditStatus>,
    /// The write's level in its claim (`Job::depth`); `None` for entries that were no write's.
    pub depth: Option<i32>,
}

/// What happens to one mapped row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowOutcome {
    pub record_id: i64,
    /// The log entry that carries the write's outcome.
    pub log_id: i64,
    pub sfid: Option<String>,
    pub lastop: LastOp,
    pub err: Option<String>,
    /// The write was the row's insert, or created its record: the record is this row's since this write (an
    /// sfid-less delete logged after it must delete that record).
    pub insert: bool,
    /// Foreign key columns (and values) the write went without to break a cycle (`delivery::links`): logged as an
    /// update of the row, which sets the lookups now that the record exists.
    pub follow_up: Vec<(String, Option<String>)>,
}

/// Per mapping: whether anything succeeded in this cycle, and the last error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingStats {
    pub succeeded: bool,
    pub last_error: Option<String>,
}

/// What one cycle writes back: log rows, mapped rows (by qualified table name), per-mapping stats (by log
/// `table_name`), and how they group by write.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub log: Vec<LogOutcome>,
    pub rows: HashMap<String, Vec<RowOutcome>>,
    pub stats: HashMap<String, MappingStats>,
    pub groups: Vec<Group>,
}

/// The outcomes of one write (or of one record deleted before it was sent), which are recorded together or not
/// at all: entries `log` of `Outcomes::log`, and the mapped row's outcome (qualified table, index in
/// `Outcomes::rows`), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub log: std::ops::Range<usize>,
    pub row: Option<(String, usize)>,
}

/// SQLSTATEs of failures that clear up by themselves: a row locked by another transaction (`lock_timeout`), a
/// statement that ran too long (`statement_timeout`), a serialization failure, a deadlock.
const TRANSIENT_SQLSTATES: [&str; 4] = ["55P03", "57014", "40001", "40P01"];

/// What becomes of a group's entries when their outcome cannot be recorded in Postgres (SQLSTATE `code`, e.g. a user
/// trigger on the mapped table that raises, or an `sfid` that another row already has): each costs an attempt and
/// keeps Salesforce's answer (its `sfid`); a lock or a timeout is tried again with backoff until the attempts run
/// out, anything else fails at once. The other groups of the claim are not touched.
pub fn unrecorded(
    entries: &[LogOutcome],
    code: &str,
    message: &str,
    max_attempts: i32,
    rng: &mut impl rand::Rng,
) -> Vec<LogOutcome> {
    let attempts = entries.iter().map(|e| e.attempts).max().unwrap_or(0) + 1;
    let transient = TRANSIENT_SQLSTATES.contains(&code);
    let text = format!("{code}: {message} (while recording the outcome in Postgres)");
    let (state, message, retry_in) = if transient && attempts < max_attempts {
        let wait = backoff((attempts - 1).max(0) as u32, RETRY_BASE, RETRY_CAP, rng);
        (LogState::New, format!("{text} (attempt {attempts} of {max_attempts}, retrying)"), Some(wait))
    } else {
        (LogState::Failed, text, None)
    };
    entries
        .iter()
        .map(|e| LogOutcome {
            id: e.id,
            state,
            message: Some(message.clone()),
            sfid: e.sfid.clone(),
            attempts,
            retry_in,
            in_doubt: e.in_doubt,
            result: None,
            depth: e.depth,
        })
        .collect()
}

fn each(
    ids: &[i64],
    state: LogState,
    message: Option<String>,
    attempts: i32,
    retry_in: Option<Duration>,
) -> impl Iterator<Item = LogOutcome> + '_ {
    ids.iter().map(move |id| LogOutcome {
        id: *id,
        state,
        message: message.clone(),
        sfid: None,
        attempts,
        retry_in,
        in_doubt: false,
        result: None,
        depth: None,
    })
}

/// Marks the outcomes from `start` on: the row was deleted before these changes reached Salesforce.
fn source_gone(out: &mut Outcomes, start: usize) {
    out.log[start..].iter_mut().for_each(|l| l.result = Some(AuditStatus::SourceGone));
}

/// Turns the verdicts of one delivery (by job index) into log, mapped-row and per-mapping outcomes, for the whole
/// plan. A job with no verdict was not sent: it goes back to the queue at no cost.
pub fn outcomes(
    plan: &Plan,
    verdicts: &HashMap<usize, Verdict>,
    tables: &HashMap<String, Table>,
    retry: Retry,
    rng: &mut impl rand::Rng,
) -> Outcomes {
    let mut out = unsent_outcomes(plan, tables, retry, rng);
    for i in (0..plan.jobs.len()).filter(|i| is_sent(plan, *i)) {
        let verdict = verdicts.get(&i).cloned().unwrap_or(Verdict::Unsent);
        job_outcome(&mut out, plan, i, verdict, tables, retry, rng);
    }
    out
}

/// The outcomes of what is settled without sending: records deleted before they reached Salesforce, writes with
/// nothing to send, writes refused or waiting for a check of an earlier attempt.
pub fn unsent_outcomes(
    plan: &Plan,
    tables: &HashMap<String, Table>,
    retry: Retry,
    rng: &mut impl rand::Rng,
) -> Outcomes {
    let mut out = Outcomes::default();
    for ids in &plan.nothing {
        let start = out.log.len();
        if let Some((last, merged)) = ids.split_last() {
            out.log.extend(each(merged, LogState::Merged, None, 0, None));
            let why = Some("deleted before it reached Salesforce: nothing to send".to_string());
            out.log.extend(each(&[*last], LogState::Ignored, why, 0, None));
            source_gone(&mut out, start);
        }
        out.groups.push(Group { log: start..out.log.len(), row: None });
    }
    for i in (0..plan.jobs.len()).filter(|i| !is_sent(plan, *i)) {
        job_outcome(&mut out, plan, i, Verdict::Unsent, tables, retry, rng);
    }
    out
}

/// The outcomes of the jobs Salesforce answered (or that could not be sent), by job index.
pub fn sent_outcomes(
    plan: &Plan,
    verdicts: &[(usize, Verdict)],
    tables: &HashMap<String, Table>,
    retry: Retry,
    rng: &mut impl rand::Rng,
) -> Outcomes {
    let mut out = Outcomes::default();
    for (i, verdict) in verdicts {
        job_outcome(&mut out, plan, *i, verdict.clone(), tables, retry, rng);
    }
    out
}

/// Whether a job goes to Salesforce (rather than being settled without a call).
fn is_sent(plan: &Plan, i: usize) -> bool {
    !matches!(
        plan.jobs[i].op,
        Operation::Skip | Operation::Refuse(_) | Operation::Recheck(_) | Operation::Superseded(_) | Operation::Wait(..)
    )
}

/// The outcome of job `i` (`job_write_outcome`), each entry marked with the job's depth.
fn job_outcome(
    out: &mut Outcomes,
    plan: &Plan,
    i: usize,
    verdict: Verdict,
    tables: &HashMap<String, Table>,
    retry: Retry,
    rng: &mut impl rand::Rng,
) {
    let start = out.log.len();
    job_write_outcome(out, plan, i, verdict, tables, retry, rng);
    let depth = plan.jobs.get(i).map(|j| j.depth.min(i32::MAX as usize) as i32);
    out.log[start..].iter_mut().for_each(|l| l.depth = depth);
}

fn job_write_outcome(
    out: &mut Outcomes,
    plan: &Plan,
    i: usize,
    verdict: Verdict,
    tables: &HashMap<String, Table>,
    retry: Retry,
    rng: &mut impl rand::Rng,
) {
    let Some(job) = plan.jobs.get(i) else { return };
    let ids = &job.write.log_ids;
    let Some((last, merged)) = ids.split_last() else { return };
    let start = out.log.len();
    let mut row = None;
    let qualified = tables.get(&job.table).map(|t| t.qualified.clone()).unwrap_or_default();
    let attempts = job.write.attempts;
    if let Operation::Superseded(why) = &job.op {
        out.log.extend(each(ids, LogState::Merged, Some(why.clone()), attempts, None));
        source_gone(out, start);
        out.groups.push(Group { log: start..out.log.len(), row });
        return;
    }
    // Waiting for a parent costs nothing: back to the queue, looked at again after the wait.
    let waiting = match (&job.op, &verdict) {
        (Operation::Wait(why, wait), _) => Some((why.clone(), *wait)),
        (_, Verdict::Blocked { parent, failed: None }) => Some((blocked_by(plan, *parent, tables), PARENT_WAIT)),
        _ => None,
    };
    if let Some((why, wait)) = waiting {
        out.log.extend(each(ids, LogState::New, Some(why), attempts, Some(wait)));
        out.groups.push(Group { log: start..out.log.len(), row });
        return;
    }
    let verdict = match &job.op {
        Operation::Skip => Verdict::Done { id: None, created: false },
        Operation::Refuse(m) => {
            Verdict::Failed { code: "NOT_SENT".into(), message: m.clone(), transient: false, in_doubt: false }
        }
        Operation::Recheck(m) => {
            Verdict::Failed { code: "IN_DOUBT".into(), message: m.clone(), transient: true, in_doubt: true }
        }
        _ => match verdict {
            Verdict::Blocked { parent, failed: Some(_) } => {
                let name = plan.jobs.get(parent).map(|p| parent_row(tables, &p.table, p.write.record_id));
                let message = parent_failed(&name.unwrap_or_default());
                Verdict::Failed { code: "NOT_SENT".into(), message, transient: false, in_doubt: false }
            }
            other => other,
        },
    };
    match verdict {
        Verdict::Done { id, created } => {
            out.stats.entry(job.table.clone()).or_default().succeeded = true;
            out.log.extend(each(merged, LogState::Merged, None, attempts, None));
            let inserted = matches!(job.op, Operation::Create(_)) || created || job.adopted;
            let done = match job.write.kind {
                WriteKind::Delete => AuditStatus::Deleted,
                _ if inserted => AuditStatus::Inserted,
                _ => AuditStatus::Updated,
            };
            out.log.push(LogOutcome {
                id: *last,
                state: LogState::Success,
                message: job.note.clone(),
                sfid: id.clone(),
                attempts,
                retry_in: None,
                in_doubt: false,
                result: Some(done),
                depth: None,
            });
            if job.write.kind != WriteKind::Delete {
                let rows = out.rows.entry(qualified.clone()).or_default();
                row = Some((qualified, rows.len()));
                rows.push(RowOutcome {
                    record_id: job.write.record_id,
                    log_id: *last,
                    sfid: id,
                    lastop: if inserted { LastOp::Inserted } else { LastOp::Updated },
                    err: None,
                    insert: inserted || job.write.kind == WriteKind::Insert,
                    follow_up: job.deferred.clone(),
                });
            }
        }
        Verdict::Failed { code, message, transient, in_doubt } if transient && attempts + 1 < retry.max_attempts => {
            let mut wait = backoff(attempts as u32, RETRY_BASE, RETRY_CAP, rng);
            if in_doubt {
                wait = wait.max(retry.in_doubt_wait);
            }
            let max_attempts = retry.max_attempts;
            let note = format!("{code}: {message} (attempt {} of {max_attempts}, retrying)", attempts + 1);
            let start = out.log.len();
            out.log.extend(each(ids, LogState::New, Some(note), attempts + 1, Some(wait)));
            out.log[start..].iter_mut().for_each(|l| l.in_doubt = in_doubt);
        }
        Verdict::Failed { code, message, transient, in_doubt } => {
            let mut text = if transient {
                format!("{code}: {message} (gave up after {} attempts, pgforce.max_attempts)", attempts + 1)
            } else {
                format!("{code}: {message}")
            };
            if in_doubt && matches!(job.op, Operation::Create(_)) {
                text.push_str("; the record may have been created in Salesforce: a retry looks for it first");
            }
            out.stats.entry(job.table.clone()).or_default().last_error = Some(text.clone());
            let start = out.log.len();
            out.log.extend(each(ids, LogState::Failed, Some(text.clone()), attempts + 1, None));
            out.log[start..].iter_mut().for_each(|l| l.in_doubt = in_doubt);
            if job.write.kind != WriteKind::Delete {
                let rows = out.rows.entry(qualified.clone()).or_default();
                row = Some((qualified, rows.len()));
                rows.push(RowOutcome {
                    record_id: job.write.record_id,
                    log_id: *last,
                    sfid: None,
                    lastop: LastOp::Failed,
                    insert: false,
                    err: Some(text),
                    follow_up: Vec::new(),
                });
            }
        }
        // Sent during an outage and never answered: no cost, but it may have been applied.
        Verdict::Unanswered => {
            let start = out.log.len();
            out.log.extend(each(ids, LogState::New, None, attempts, Some(retry.in_doubt_wait)));
            out.log[start..].iter_mut().for_each(|l| l.in_doubt = true);
        }
        Verdict::Unsent => out.log.extend(each(ids, LogState::New, None, attempts, None)),
        // In flight until the job is over: the attempt is counted by its outcome.
        Verdict::Queued { job } => {
            let note = format!("in Bulk job {job}: Salesforce is processing it");
            out.log.extend(each(ids, LogState::Pending, Some(note), attempts, None));
        }
        // Settled above.
        Verdict::Blocked { .. } => out.log.extend(each(ids, LogState::New, None, attempts, Some(PARENT_WAIT))),
    }
    out.groups.push(Group { log: start..out.log.len(), row });
}

/// Why a write waits for the parent job `parent`.
fn blocked_by(plan: &Plan, parent: usize, tables: &HashMap<String, Table>) -> String {
    let name = plan.jobs.get(parent).map(|p| parent_row(tables, &p.table, p.write.record_id)).unwrap_or_default();
    parent_waiting(&name)
}

impl Outcomes {
    /// Adds another set of outcomes to these.
    pub fn append(&mut self, other: Outcomes) {
        let offset = self.log.len();
        let mut row_offsets: HashMap<String, usize> = HashMap::new();
        for (table, rows) in other.rows {
            let mine = self.rows.entry(table.clone()).or_default();
            row_offsets.insert(table, mine.len());
            mine.extend(rows);
        }
        self.log.extend(other.log);
        for (table, stats) in other.stats {
            let mine = self.stats.entry(table).or_default();
            mine.succeeded |= stats.succeeded;
            if stats.last_error.is_some() {
                mine.last_error = stats.last_error;
            }
        }
        self.groups.extend(other.groups.into_iter().map(|g| Group {
            log: g.log.start + offset..g.log.end + offset,
            row: g.row.map(|(t, i)| {
                let shift = row_offsets.get(&t).copied().unwrap_or(0);
                (t, i + shift)
            }),
        }));
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty() && self.rows.is_empty() && self.stats.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::merge::Write;
    use crate::delivery::plan::Job;
    use crate::mapping::{PgKind, Target};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::Map;

    const TABLE: &str = "contact";
    const RETRY: Retry = Retry { max_attempts: 3, in_doubt_wait: Duration::from_secs(30) };
    const QUALIFIED: &str = "salesforce.contact";

    fn tables() -> HashMap<String, Table> {
        let target =
            Target { sobject: "Contact".into(), upsert_field: None, columns: vec![("lastname".into(), PgKind::Text)] };
        HashMap::from([(TABLE.to_string(), Table { qualified: QUALIFIED.into(), target, links: Vec::new() })])
    }

    fn job(kind: WriteKind, op: Operation, log_ids: &[i64], attempts: i32) -> Job {
        let write = Write {
            record_id: 7,
            kind,
            values: Default::default(),
            row: Default::default(),
            sfid: None,
            log_ids: log_ids.to_vec(),
            attempts,
            in_doubt: None,
            retried: false,
            deleted_later: false,
        };
        Job { op, ..Job::new(TABLE.into(), write) }
    }

    /// The outcomes of one job answered with `verdict` (`None`: no answer).
    fn one(job: Job, verdict: Option<Verdict>) -> Outcomes {
        let plan = Plan { jobs: vec![job], nothing: vec![], ..Plan::default() };
        let verdicts: HashMap<usize, Verdict> = verdict.into_iter().map(|v| (0, v)).collect();
        outcomes(&plan, &verdicts, &tables(), RETRY, &mut StdRng::seed_from_u64(1))
    }

    fn record() -> Map<String, serde_json::Value> {
        Map::new()
    }

    fn states(o: &Outcomes) -> Vec<(i64, LogState)> {
        o.log.iter().map(|l| (l.id, l.state)).collect()
    }

    #[test]
    fn a_created_record_succeeds_its_last_log_row_merges_the_others_and_the_row_gets_its_sfid() {
        let done = Verdict::Done { id: Some("003000000000001AAA".into()), created: true };
        let o = one(job(WriteKind::Insert, Operation::Create(record()), &[1, 2, 3], 0), Some(done));
        assert_eq!(states(&o), [(1, LogState::Merged), (2, LogState::Merged), (3, LogState::Success)]);
        assert_eq!(o.log[2].sfid.as_deref(), Some("003000000000001AAA"));
        let row = &o.rows[QUALIFIED][0];
        assert_eq!(
            (row.record_id, row.sfid.as_deref(), row.lastop, row.err.as_deref()),
            (7, Some("003000000000001AAA"), LastOp::Inserted, None)
        );
        assert_eq!(o.stats[TABLE], MappingStats { succeeded: true, last_error: None });
    }

    #[test]
    fn upserts_report_inserted_or_updated_as_salesforce_says() {
        let created = one(
            job(WriteKind::Update, Operation::Upsert(record()), &[1], 0),
            Some(Verdict::Done { id: Some("003A".into()), created: true }),
        );
        assert_eq!(created.rows[QUALIFIED][0].lastop, LastOp::Inserted);
        let updated = one(
            job(WriteKind::Insert, Operation::Upsert(record()), &[1], 0),
            Some(Verdict::Done { id: Some("003A".into()), created: false }),
        );
        assert_eq!(updated.rows[QUALIFIED][0].lastop, LastOp::Updated);
        let by_id = one(
            job(WriteKind::Update, Operation::Update(record()), &[1], 0),
            Some(Verdict::Done { id: Some("003A".into()), created: false }),
        );
        assert_eq!(by_id.rows[QUALIFIED][0].lastop, LastOp::Updated);
    }

    #[test]
    fn a_delete_succeeds_without_touching_the_gone_row() {
        let o = one(
            job(WriteKind::Delete, Operation::Delete("003A".into()), &[4], 0),
            Some(Verdict::Done { id: None, created: false }),
        );
        assert_eq!(states(&o), [(4, LogState::Success)]);
        assert!(o.rows.is_empty());
        let failed = one(
            job(WriteKind::Delete, Operation::Delete("003A".into()), &[4], 0),
            Some(Verdict::Failed {
                code: "INSUFFICIENT_ACCESS_OR_READONLY".into(),
                message: "no".into(),
                transient: false,
                in_doubt: false,
            }),
        );
        assert_eq!(states(&failed), [(4, LogState::Failed)]);
        assert!(failed.rows.is_empty(), "a deleted row has nothing to write back");
    }

    #[test]
    fn a_transient_error_goes_back_to_the_queue_with_backoff_until_attempts_run_out() {
        let lock = || Verdict::Failed {
            code: "UNABLE_TO_LOCK_ROW".into(),
            message: "busy".into(),
            transient: true,
            in_doubt: false,
        };
        let o = one(job(WriteKind::Update, Operation::Update(record()), &[1, 2], 0), Some(lock()));
        assert_eq!(
            states(&o),
            [(1, LogState::New), (2, LogState::New)],
            "every row of the write waits, none is merged away"
        );
        assert!(o.log.iter().all(|l| l.attempts == 1 && l.retry_in.is_some_and(|d| d <= RETRY_BASE)));
        assert_eq!(o.log[0].message.as_deref(), Some("UNABLE_TO_LOCK_ROW: busy (attempt 1 of 3, retrying)"));
        assert!(o.rows.is_empty() && o.stats.is_empty(), "a pending retry is no outcome yet");

        // The third attempt of three: it stays FAILED, on the log and on the row.
        let last = one(job(WriteKind::Update, Operation::Update(record()), &[1], 2), Some(lock()));
        assert_eq!(states(&last), [(1, LogState::Failed)]);
        assert_eq!((last.log[0].attempts, last.log[0].retry_in), (3, None));
        assert_eq!(last.rows[QUALIFIED][0].lastop, LastOp::Failed);
        let gave_up = "UNABLE_TO_LOCK_ROW: busy (gave up after 3 attempts, pgforce.max_attempts)";
        assert_eq!(last.stats[TABLE].last_error.as_deref(), Some(gave_up));
        assert_eq!(last.log[0].message.as_deref(), Some(gave_up));
    }

    #[test]
    fn an_unanswered_create_is_marked_in_doubt_and_waits_out_the_request_timeout() {
        let timeout = || Verdict::Failed {
            code: "REQUEST_TIMEOUT".into(),
            message: "no answer within 30 s".into(),
            transient: true,
            in_doubt: true,
        };
        let o = one(job(WriteKind::Insert, Operation::Create(record()), &[1], 0), Some(timeout()));
        assert_eq!((o.log[0].state, o.log[0].attempts, o.log[0].in_doubt), (LogState::New, 1, true));
        assert_eq!(o.log[0].retry_in, Some(RETRY.in_doubt_wait), "Salesforce may still be working on it");
        let last = one(job(WriteKind::Insert, Operation::Create(record()), &[1], 2), Some(timeout()));
        assert_eq!((last.log[0].state, last.log[0].in_doubt), (LogState::Failed, true));
        assert!(last.log[0].message.as_deref().unwrap_or_default().ends_with("a retry looks for it first"));
        // Sent during an outage: no attempt spent, but in doubt all the same.
        let o = one(job(WriteKind::Insert, Operation::Create(record()), &[1], 0), Some(Verdict::Unanswered));
        assert_eq!((o.log[0].state, o.log[0].attempts, o.log[0].in_doubt), (LogState::New, 0, true));
        assert_eq!(o.log[0].retry_in, Some(RETRY.in_doubt_wait));
        // A record-level error is an answer: nothing in doubt.
        let lock = Verdict::Failed {
            code: "UNABLE_TO_LOCK_ROW".into(),
            message: "busy".into(),
            transient: true,
            in_doubt: false,
        };
        let o = one(job(WriteKind::Insert, Operation::Create(record()), &[1], 0), Some(lock));
        assert!(!o.log[0].in_doubt && o.log[0].retry_in.is_some_and(|d| d <= RETRY_BASE));
    }

    #[test]
    fn a_permanent_error_fails_at_once_with_salesforces_message_on_the_log_and_the_row() {
        let bad = Verdict::Failed {
            code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
            message: "Email blocked".into(),
            transient: false,
            in_doubt: false,
        };
        let o = one(job(WriteKind::Insert, Operation::Create(record()), &[1, 2], 0), Some(bad));
        assert_eq!(states(&o), [(1, LogState::Failed), (2, LogState::Failed)]);
        let text = "FIELD_CUSTOM_VALIDATION_EXCEPTION: Email blocked";
        assert!(o.log.iter().all(|l| l.message.as_deref() == Some(text) && l.attempts == 1));
        let row = &o.rows[QUALIFIED][0];
        assert_eq!((row.lastop, row.err.as_deref(), row.sfid.as_deref()), (LastOp::Failed, Some(text), None));
    }

    #[test]
    fn unsent_records_go_back_at_no_cost() {
        let o = one(job(WriteKind::Insert, Operation::Create(record()), &[1], 2), Some(Verdict::Unsent));
        assert_eq!(
            o.log,
            [LogOutcome {
                id: 1,
                state: LogState::New,
                message: None,
                sfid: None,
                attempts: 2,
                retry_in: None,
                in_doubt: false,
                result: None,
                depth: Some(0),
            }]
        );
        let no_answer = one(job(WriteKind::Insert, Operation::Create(record()), &[1], 2), None);
        assert_eq!(no_answer.log, o.log, "a job without a verdict was not sent");
    }

    #[test]
    fn skipped_and_refused_writes_need_no_answer() {
        let skip = one(job(WriteKind::Update, Operation::Skip, &[5], 0), None);
        assert_eq!(states(&skip), [(5, LogState::Success)], "an update of unmapped columns only is done");
        let refused = one(job(WriteKind::Update, Operation::Refuse("no sfid".into()), &[5], 0), None);
        assert_eq!(states(&refused), [(5, LogState::Failed)]);
        assert_eq!(refused.log[0].message.as_deref(), Some("NOT_SENT: no sfid"));
    }

    #[test]
    fn outcomes_group_by_write() {
        let plan = Plan {
            jobs: vec![
                job(WriteKind::Insert, Operation::Create(record()), &[1, 2], 0),
                job(WriteKind::Delete, Operation::Delete("003A".into()), &[3], 0),
            ],
            nothing: vec![vec![4, 5]],
            ..Plan::default()
        };
        let verdicts = HashMap::from([
            (0, Verdict::Done { id: Some("003B".into()), created: true }),
            (1, Verdict::Done { id: None, created: false }),
        ]);
        let o = outcomes(&plan, &verdicts, &tables(), RETRY, &mut StdRng::seed_from_u64(1));
        let ids = |g: &Group| o.log[g.log.clone()].iter().map(|l| l.id).collect::<Vec<_>>();
        assert_eq!(o.groups.iter().map(ids).collect::<Vec<_>>(), [vec![4, 5], vec![1, 2], vec![3]]);
        assert_eq!(o.groups[1].row, Some((QUALIFIED.to_string(), 0)), "the insert's row outcome belongs to its group");
        assert_eq!((o.groups[0].row.clone(), o.groups[2].row.clone()), (None, None));
        // What the audit is told beyond state and action.
        let results: Vec<(i64, Option<AuditStatus>)> = o.log.iter().map(|l| (l.id, l.result)).collect();
        assert_eq!(
            results,
            [
                (4, Some(AuditStatus::SourceGone)),
                (5, Some(AuditStatus::SourceGone)),
                (1, None),
                (2, Some(AuditStatus::Inserted)),
                (3, Some(AuditStatus::Deleted))
            ]
        );
    }

    #[test]
    fn an_outcome_that_cannot_be_recorded_costs_an_attempt_and_keeps_the_sfid() {
        let done = [
            LogOutcome {
                id: 1,
                state: LogState::Merged,
                message: None,
                sfid: None,
                attempts: 0,
                retry_in: None,
                in_doubt: false,
                result: None,
                depth: Some(0),
            },
            LogOutcome {
                id: 2,
                state: LogState::Success,
                message: None,
                sfid: Some("003B".into()),
                attempts: 0,
                retry_in: None,
                in_doubt: false,
                result: None,
                depth: Some(0),
            },
        ];
        let rng = &mut StdRng::seed_from_u64(1);
        // A user trigger raising: fails at once, with Postgres' SQLSTATE and message.
        let failed = unrecorded(&done, "P0001", "no updates on Fridays", 3, rng);
        assert!(failed.iter().all(|l| l.state == LogState::Failed && l.attempts == 1 && l.retry_in.is_none()));
        assert_eq!(
            failed[0].message.as_deref(),
            Some("P0001: no updates on Fridays (while recording the outcome in Postgres)")
        );
        assert_eq!(failed[1].sfid.as_deref(), Some("003B"), "Salesforce's id is not lost");
        // A row locked by a user: retried later, with backoff, until the attempts run out.
        let locked = unrecorded(&done, "55P03", "canceling statement due to lock timeout", 3, rng);
        assert!(locked.iter().all(|l| l.state == LogState::New && l.attempts == 1 && l.retry_in.is_some()));
        let again = unrecorded(&locked, "55P03", "canceling statement due to lock timeout", 3, rng);
        assert!(again.iter().all(|l| l.state == LogState::New && l.attempts == 2));
        let last = unrecorded(&again, "55P03", "canceling statement due to lock timeout", 3, rng);
        assert!(last.iter().all(|l| l.state == LogState::Failed && l.attempts == 3), "{last:?}");
    }

    #[test]
    fn a_record_deleted_before_it_was_sent_merges_into_an_ignored_delete() {
        let plan = Plan { jobs: vec![], nothing: vec![vec![1, 2, 3]], ..Plan::default() };
        let o = outcomes(&plan, &HashMap::new(), &tables(), RETRY, &mut StdRng::seed_from_u64(1));
        assert_eq!(states(&o), [(1, LogState::Merged), (2, LogState::Merged), (3, LogState::Ignored)]);
        assert!(o.rows.is_empty());
    }
}
