//! Writing outcomes back (one short transaction, as the sync engine): log rows get their states, messages,
//! attempts and retry times, mapped rows their `sfid`, `_hc_lastop` and `_hc_err`, mappings their last success
//! and error. Also the look-up of current Salesforce ids that planning needs.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use pgforce_core::delivery::outcome::Outcomes;
use pgforce_core::delivery::Table;
use pgrx::datum::DatumWithOid;
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
    let statements = st.tables(client, &qualified)?;
    let mut out = HashMap::new();
    for (table, ids) in wanted {
        let Some(t) = tables.get(&table).and_then(|t| statements.get(&t.qualified)) else { continue };
        let mut found = HashMap::new();
        for row in client.select(&t.current_sfids, None, &[DatumWithOid::from(ids)])? {
            if let (Some(id), Some(sfid)) = (row.get::<i64>(1)?, row.get::<String>(2)?) {
                found.insert(id, sfid);
            }
        }
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
    let statements = st.tables(client, &qualified)?;
    for (table, rows) in &outcomes.rows {
        let Some(t) = statements.get(table) else { continue };
        if rows.is_empty() {
            continue;
        }
        client.update(
            &t.write_back,
            None,
            &[
                DatumWithOid::from(rows.iter().map(|o| o.record_id).collect::<Vec<_>>()),
                DatumWithOid::from(rows.iter().map(|o| o.sfid.clone()).collect::<Vec<_>>()),
                DatumWithOid::from(rows.iter().map(|o| o.lastop.as_str()).collect::<Vec<_>>()),
                DatumWithOid::from(rows.iter().map(|o| o.err.clone()).collect::<Vec<_>>()),
            ],
        )?;
    }
    Ok(())
}
