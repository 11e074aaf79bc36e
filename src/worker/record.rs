//! Writing outcomes back (one short transaction, as the sync engine): log rows get their states, messages,
//! attempts and retry times, mapped rows their `sfid`, `_hc_lastop` and `_hc_err`, mappings their last success
//! and error. Also the look-up of current Salesforce ids that planning needs.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use pgforce_core::delivery::outcome::Outcomes;
use pgforce_core::delivery::Table;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::spi::SpiClient;

use super::error::WorkerError;
use super::sql::Statements;
use crate::capture::WRITING_OUTCOMES;

/// The current `sfid` of rows whose log entries carry none (an earlier insert's write-back arrived after they were
/// captured), per table: record id → sfid.
pub fn current_sfids(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    tables: &HashMap<String, Table>,
    wanted: HashMap<String, Vec<i64>>,
) -> Result<HashMap<String, HashMap<i64, String>>, WorkerError> {
    let qualified: Vec<&str> = tables.values().map(|t| t.qualified.as_str()).collect();
    let owners = st.owners.clone();
    let statements = st.tables(client, &qualified)?;
    let mut out = HashMap::new();
    for (table, ids) in wanted {
        let Some(name) = tables.get(&table).map(|t| t.qualified.as_str()) else { continue };
        let (Some(t), Some(owner)) = (statements.get(name), owners.get(name)) else { continue };
        let found = as_owner(*owner, || -> Result<HashMap<i64, String>, WorkerError> {
            let mut found = HashMap::new();
            for row in client.select(&t.current_sfids, None, &[DatumWithOid::from(ids)])? {
                if let (Some(id), Some(sfid)) = (row.get::<i64>(1)?, row.get::<String>(2)?) {
                    found.insert(id, sfid);
                }
            }
            Ok(found)
        })?;
        out.insert(table, found);
    }
    Ok(out)
}

pub fn record(client: &mut SpiClient<'_>, st: &mut Statements, outcomes: &Outcomes) -> Result<(), WorkerError> {
    for (table, stats) in &outcomes.stats {
        client.update(
            &st.mapping_stats,
            None,
            &[
                DatumWithOid::from(table.as_str()),
                DatumWithOid::from(stats.succeeded),
                DatumWithOid::from(stats.last_error.clone()),
            ],
        )?;
    }
    let log = &outcomes.log;
    if !log.is_empty() {
        client.update(
            &st.record_log,
            None,
            &[
                DatumWithOid::from(log.iter().map(|o| o.id).collect::<Vec<_>>()),
                DatumWithOid::from(log.iter().map(|o| o.state.as_str()).collect::<Vec<_>>()),
                DatumWithOid::from(log.iter().map(|o| o.message.clone()).collect::<Vec<_>>()),
                DatumWithOid::from(log.iter().map(|o| o.sfid.clone()).collect::<Vec<_>>()),
                DatumWithOid::from(log.iter().map(|o| o.attempts).collect::<Vec<_>>()),
                DatumWithOid::from(log.iter().map(|o| o.retry_in.map(|d| d.as_millis() as i64)).collect::<Vec<_>>()),
            ],
        )?;
    }
    // The status trigger leaves these rows as written: they are outcomes, not changes. The transaction's end
    // clears the flag, however it ends.
    WRITING_OUTCOMES.store(true, Ordering::SeqCst);
    let qualified: Vec<&str> = outcomes.rows.keys().map(String::as_str).collect();
    let owners = st.owners.clone();
    let statements = st.tables(client, &qualified)?;
    for (table, rows) in &outcomes.rows {
        let (Some(t), Some(owner)) = (statements.get(table), owners.get(table)) else { continue };
        if rows.is_empty() {
            continue;
        }
        as_owner(*owner, || {
            client.update(
                &t.write_back,
                None,
                &[
                    DatumWithOid::from(rows.iter().map(|o| o.record_id).collect::<Vec<_>>()),
                    DatumWithOid::from(rows.iter().map(|o| o.sfid.clone()).collect::<Vec<_>>()),
                    DatumWithOid::from(rows.iter().map(|o| o.lastop.as_str()).collect::<Vec<_>>()),
                    DatumWithOid::from(rows.iter().map(|o| o.err.clone()).collect::<Vec<_>>()),
                ],
            )
        })?;
    }
    Ok(())
}

/// Runs `f` as `owner` in a security-restricted operation, the way autovacuum and REFRESH MATERIALIZED VIEW run
/// user code: the table's triggers, defaults and policies get its owner's rights, never the worker's. An error
/// inside `f` aborts the transaction, which restores the worker's identity.
fn as_owner<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let mut worker = pg_sys::Oid::INVALID;
    let mut context = 0;
    // SAFETY: switches this backend's current user for the duration of `f`, as Postgres' own maintenance does.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut worker, &mut context);
        let restricted = (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32;
        pg_sys::SetUserIdAndSecContext(owner, context | restricted);
    }
    let result = f();
    // SAFETY: restores what was saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(worker, context) };
    result
}
