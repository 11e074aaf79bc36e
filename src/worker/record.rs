//! Recording outcomes: verdicts become log states (with backoff for transient errors), then one short transaction, `xmlbinary = hex` so nothing is captured again): log rows become
//! SUCCESS / FAILED / MERGED or go back to NEW for a retry, and mapped rows get their `sfid`, `_hc_lastop` and
//! `_hc_err`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pgrx::datum::DatumWithOid;
use pgrx::spi::{SpiClient, SpiResult};

use pgforce_core::convert::Operation;
use pgforce_core::plan::WriteKind;
use pgforce_core::retry::backoff;
use pgforce_core::salesforce::Verdict;

use super::claim::Table;
use super::plan::Plan;
use crate::capture::WRITING_OUTCOMES;

/// Transient failures wait 0..min(cap, base·2^attempt) before the next attempt.
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(300);

/// What happens to one log row.
#[derive(Debug, Clone)]
pub struct LogOutcome {
    pub id: i64,
    pub state: &'static str,
    pub message: Option<String>,
    pub sfid: Option<String>,
    pub attempts: i32,
    /// For rows going back to NEW: wait this long before the next attempt.
    pub retry_in_ms: Option<i64>,
}

/// What happens to one mapped row.
#[derive(Debug, Clone)]
pub struct RowOutcome {
    pub record_id: i64,
    pub sfid: Option<String>,
    pub lastop: &'static str,
    pub err: Option<String>,
}

/// Per mapping: whether anything succeeded in this cycle, and the last error.
#[derive(Debug, Clone, Default)]
pub struct MappingStats {
    pub succeeded: bool,
    pub last_error: Option<String>,
}

/// What one cycle writes back: log rows, mapped rows (by qualified table name), per-mapping stats.
pub struct Outcomes {
    pub log: Vec<LogOutcome>,
    pub rows: HashMap<String, Vec<RowOutcome>>,
    pub stats: HashMap<String, MappingStats>,
}

/// Turns the verdicts of one delivery into log, mapped-row and per-mapping outcomes.
pub fn outcomes(
    plan: &Plan,
    verdicts: &HashMap<usize, Verdict>,
    tables: &HashMap<String, Table>,
    max_attempts: i32,
    rng: &mut impl rand::Rng,
) -> Outcomes {
    let (jobs, nothing) = (&plan.jobs, &plan.nothing);
    let mut log = Vec::new();
    let mut rows: HashMap<String, Vec<RowOutcome>> = HashMap::new();
    let mut stats: HashMap<String, MappingStats> = HashMap::new();
    let all = |ids: &[i64], state: &'static str, message: Option<String>, attempts: i32, retry_in_ms: Option<i64>| -> Vec<LogOutcome> {
        ids.iter().map(|id| LogOutcome { id: *id, state, message: message.clone(), sfid: None, attempts, retry_in_ms }).collect()
    };
    for ids in nothing {
        if let Some((last, merged)) = ids.split_last() {
            log.extend(all(merged, "MERGED", None, 0, None));
            log.extend(all(&[*last], "IGNORED", Some("deleted before it reached Salesforce: nothing to send".into()), 0, None));
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
                let wait = backoff(attempts as u32, RETRY_BASE, RETRY_CAP, rng);
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

pub fn record(
    client: &mut SpiClient<'_>,
    schema: &str,
    log: &[LogOutcome],
    rows: &HashMap<String, Vec<RowOutcome>>,
    stats: &HashMap<String, MappingStats>,
) -> SpiResult<()> {
    client.update("SET LOCAL xmlbinary = 'hex'", None, &[])?;
    for (table, st) in stats {
        client.update(
            &format!(
                "UPDATE {schema}._mapping
                    SET last_success_at = CASE WHEN $2 THEN now() ELSE last_success_at END,
                        last_error_at = CASE WHEN $3::text IS NOT NULL THEN now() ELSE last_error_at END,
                        last_error = coalesce($3, last_error)
                  WHERE table_name = $1"
            ),
            None,
            &[DatumWithOid::from(table.as_str()), DatumWithOid::from(st.succeeded), DatumWithOid::from(st.last_error.clone())],
        )?;
    }
    if !log.is_empty() {
        client.update(
            &format!(
                "UPDATE {schema}._trigger_log AS l
                    SET state = u.state,
                        sf_message = u.message,
                        sfid = coalesce(u.sfid, l.sfid),
                        attempts = u.attempts,
                        next_attempt_at = now() + u.retry_in_ms * interval '1 millisecond',
                        processed_at = CASE WHEN u.state = 'NEW' THEN NULL ELSE now() END,
                        processed_tx = CASE WHEN u.state = 'NEW' THEN NULL ELSE txid_current() END,
                        updated_at = now()
                   FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[])
                        AS u(id, state, message, sfid, attempts, retry_in_ms)
                  WHERE l.id = u.id"
            ),
            None,
            &[
                DatumWithOid::from(log.iter().map(|o| o.id).collect::<Vec<_>>()),
                DatumWithOid::from(log.iter().map(|o| o.state.to_string()).collect::<Vec<_>>()),
                DatumWithOid::from(log.iter().map(|o| o.message.clone()).collect::<Vec<_>>()),
                DatumWithOid::from(log.iter().map(|o| o.sfid.clone()).collect::<Vec<_>>()),
                DatumWithOid::from(log.iter().map(|o| o.attempts).collect::<Vec<_>>()),
                DatumWithOid::from(log.iter().map(|o| o.retry_in_ms).collect::<Vec<_>>()),
            ],
        )?;
    }
    // The status trigger leaves these rows as written: they are outcomes, not changes. The worker's
    // `in_transaction` clears the flag when the transaction ends, however it ends.
    WRITING_OUTCOMES.store(true, Ordering::SeqCst);
    for (qualified, outcomes) in rows {
        if outcomes.is_empty() {
            continue;
        }
        client.update(
            &format!(
                "UPDATE {qualified} AS t
                    SET sfid = coalesce(u.sfid, t.sfid), _hc_lastop = u.lastop, _hc_err = u.err
                   FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS u(id, sfid, lastop, err)
                  WHERE t.id = u.id"
            ),
            None,
            &[
                DatumWithOid::from(outcomes.iter().map(|o| o.record_id).collect::<Vec<_>>()),
                DatumWithOid::from(outcomes.iter().map(|o| o.sfid.clone()).collect::<Vec<_>>()),
                DatumWithOid::from(outcomes.iter().map(|o| o.lastop.to_string()).collect::<Vec<_>>()),
                DatumWithOid::from(outcomes.iter().map(|o| o.err.clone()).collect::<Vec<_>>()),
            ],
        )?;
    }
    Ok(())
}
