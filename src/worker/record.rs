//! Recording outcomes (one short transaction, `xmlbinary = hex` so nothing is captured again): log rows become
//! SUCCESS / FAILED / MERGED or go back to NEW for a retry, and mapped rows get their `sfid`, `_hc_lastop` and
//! `_hc_err`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use pgrx::datum::DatumWithOid;
use pgrx::spi::{SpiClient, SpiResult};

use crate::capture::WRITING_OUTCOMES;

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
    // The status trigger leaves these rows as written: they are outcomes, not changes.
    WRITING_OUTCOMES.store(true, Ordering::SeqCst);
    let result = (|| {
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
    })();
    WRITING_OUTCOMES.store(false, Ordering::SeqCst);
    result
}
