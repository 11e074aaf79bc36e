//! Writing outcomes back (one short transaction, as the sync engine): log rows get their states, messages,
//! attempts and retry times, mapped rows their `sfid`, `_hc_lastop` and `_hc_err`, mappings their last success
//! and error. Also the look-up of current Salesforce ids that planning needs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use pgforce_core::delivery::links::ParentRow;
use pgforce_core::delivery::outcome::{unrecorded, LogOutcome, MappingStats, Outcomes, RowOutcome};
use pgforce_core::delivery::{Table, Values};
use pgforce_core::hstore;
use pgrx::datum::DatumWithOid;
use pgrx::spi::SpiClient;

use crate::capture::WRITING_OUTCOMES;
use crate::engine::owner::as_table_owner;
use crate::worker::error::WorkerError;
use crate::worker::sql::{Statements, TableStatements};
use crate::worker::transaction::in_subtransaction;

/// The current `sfid` of rows whose log entries carry none (an earlier insert's write-back arrived after they were
/// captured), per table: record id → sfid.
pub fn current_sfids(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    tables: &HashMap<String, Table>,
    wanted: HashMap<String, Vec<i64>>,
) -> Result<HashMap<String, HashMap<i64, Option<String>>>, WorkerError> {
    let mut out = HashMap::new();
    for (table, ids) in wanted {
        let Some(name) = tables.get(&table).map(|t| t.qualified.as_str()) else { continue };
        let found = on_table(client, st, name, |client, t| {
            let mut found = HashMap::new();
            for row in client.select(&t.current_sfids, None, &[DatumWithOid::from(ids)])? {
                if let Some(id) = row.get::<i64>(1)? {
                    found.insert(id, row.get::<String>(2)?.filter(|s| !s.is_empty()));
                }
            }
            Ok(found)
        })?;
        if let Some(found) = found {
            out.insert(table, found);
        }
    }
    Ok(out)
}

/// Logs, as updates of their rows, the lookups that writes went without to break a cycle: the next cycle sets
/// them, now that the records exist.
fn log_follow_ups<'a>(
    client: &mut SpiClient<'_>,
    st: &Statements,
    table: &str,
    rows: impl Iterator<Item = &'a RowOutcome>,
) -> Result<(), WorkerError> {
    let rows: Vec<&RowOutcome> = rows.filter(|o| !o.follow_up.is_empty() && o.sfid.is_some()).collect();
    if rows.is_empty() {
        return Ok(());
    }
    let changes: Vec<String> =
        rows.iter().map(|o| String::from_utf8_lossy(&hstore::render(&o.follow_up)).into_owned()).collect();
    client.update(
        &st.record.log_follow_ups,
        None,
        &[
            DatumWithOid::from(table),
            DatumWithOid::from(rows.iter().map(|o| o.record_id).collect::<Vec<_>>()),
            DatumWithOid::from(rows.iter().map(|o| o.sfid.clone()).collect::<Vec<_>>()),
            DatumWithOid::from(changes),
        ],
    )?;
    Ok(())
}

/// What the parent rows that writes reference (per parent table) are: their Salesforce ids, and for those that
/// have none whether a change of theirs waits in the queue or failed. A row that does not exist is missing.
pub fn parent_rows(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    tables: &HashMap<String, Table>,
    wanted: HashMap<String, Vec<i64>>,
) -> Result<HashMap<String, HashMap<i64, ParentRow>>, WorkerError> {
    let sfids = current_sfids(client, st, tables, wanted)?;
    let mut out = HashMap::new();
    for (table, found) in sfids {
        let Some(name) = tables.get(&table).map(|t| t.qualified.clone()) else { continue };
        let mut rows: HashMap<i64, ParentRow> =
            found.into_iter().map(|(id, sfid)| (id, ParentRow { sfid, ..ParentRow::default() })).collect();
        let unsent: Vec<i64> = rows.iter().filter(|(_, r)| r.sfid.is_none()).map(|(id, _)| *id).collect();
        if !unsent.is_empty() {
            let args = [DatumWithOid::from(name.as_str()), DatumWithOid::from(unsent)];
            for row in client.select(&st.record.parent_states, None, &args)? {
                let Some(id) = row.get::<i64>(1)? else { continue };
                if let Some(r) = rows.get_mut(&id) {
                    r.queued = row.get::<f64>(2)?.map(|s| Duration::from_secs_f64(s.clamp(0.0, 86_400.0)));
                    r.failed = row.get::<String>(3)?;
                }
            }
        }
        out.insert(table, rows);
    }
    Ok(out)
}

/// Per table, which of these rows (record id, log id) a delete logged after that log id follows.
pub fn deleted_later(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    tables: &HashMap<String, Table>,
    wanted: HashMap<String, Vec<(i64, i64)>>,
) -> Result<HashMap<String, HashSet<i64>>, WorkerError> {
    let mut out = HashMap::new();
    for (table, rows) in wanted {
        let Some(name) = tables.get(&table).map(|t| t.qualified.clone()) else { continue };
        let mut found = HashSet::new();
        for row in client.select(
            &st.record.deleted_later,
            None,
            &[
                DatumWithOid::from(name.as_str()),
                DatumWithOid::from(rows.iter().map(|r| r.0).collect::<Vec<_>>()),
                DatumWithOid::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()),
            ],
        )? {
            found.extend(row.get::<i64>(1)?);
        }
        out.insert(table, found);
    }
    Ok(out)
}

/// The current rows of these records as capture prints them, per table: record id → row. A row that is gone is
/// missing.
pub fn current_rows(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    tables: &HashMap<String, Table>,
    wanted: HashMap<String, Vec<i64>>,
) -> Result<HashMap<String, HashMap<i64, Values>>, WorkerError> {
    let mut out = HashMap::new();
    for (table, ids) in wanted {
        let Some(name) = tables.get(&table).map(|t| t.qualified.as_str()) else { continue };
        let found = on_table(client, st, name, |client, t| {
            let mut found = HashMap::new();
            for row in client.select(&t.current_rows, None, &[DatumWithOid::from(ids)])? {
                if let (Some(id), Some(text)) = (row.get::<i64>(1)?, row.get::<String>(2)?) {
                    let values = hstore::parse(&text)
                        .map_err(|e| WorkerError::Database(format!("row id={id} of {name} as hstore: {e}")))?;
                    found.insert(id, values.into_iter().collect());
                }
            }
            Ok(found)
        })?;
        if let Some(found) = found {
            out.insert(table, found);
        }
    }
    Ok(out)
}

/// Which of these Salesforce ids rows of these mapped tables (qualified names) already have as their sfid.
pub fn owned_sfids(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    tables: &[String],
    ids: &[String],
) -> Result<std::collections::HashSet<String>, WorkerError> {
    let mut out = std::collections::HashSet::new();
    if ids.is_empty() {
        return Ok(out);
    }
    for table in tables {
        let found = on_table(client, st, table, |client, t| {
            let mut found = Vec::new();
            for row in client.select(&t.owned_sfids, None, &[DatumWithOid::from(ids.to_vec())])? {
                if let Some(sfid) = row.get::<String>(1)? {
                    found.push(sfid);
                }
            }
            Ok(found)
        })?;
        out.extend(found.into_iter().flatten());
    }
    Ok(out)
}

/// Records the outcomes of a whole claim, set-based: the fast way, when nothing goes wrong.
pub fn record(client: &mut SpiClient<'_>, st: &mut Statements, outcomes: &Outcomes) -> Result<(), WorkerError> {
    record_stats(client, st, &outcomes.stats)?;
    record_log(client, st, &outcomes.log)?;
    for (table, rows) in &outcomes.rows {
        write_back(client, st, table, rows)?;
    }
    Ok(())
}

/// Records each write's outcomes alone, in a subtransaction each, once recording the whole claim failed: a write
/// whose outcome cannot be recorded (a user trigger that raises, an `sfid` another row already has, a row a user
/// holds past `lock_timeout`) gets `unrecorded` entries instead, and never holds back the others. Returns how many
/// writes could not be recorded.
pub fn record_each(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    outcomes: &Outcomes,
    max_attempts: i32,
    rng: &mut impl rand::Rng,
) -> Result<usize, WorkerError> {
    record_stats(client, st, &outcomes.stats)?;
    let mut failed = 0;
    for group in &outcomes.groups {
        let entries = &outcomes.log[group.log.clone()];
        let row = group
            .row
            .as_ref()
            .and_then(|(table, i)| outcomes.rows.get(table).and_then(|rows| rows.get(*i)).map(|r| (table, r)));
        let recorded = in_subtransaction(|| {
            record_log(client, st, entries)?;
            if let Some((table, row)) = row {
                write_back(client, st, table, std::slice::from_ref(row))?;
            }
            Ok(())
        });
        let Err(failure) = recorded else { continue };
        failed += 1;
        let mut message = failure.message.clone();
        if let (Some((table, row)), "23505") = (row, failure.sqlstate.as_str()) {
            if let Some(other) = in_subtransaction(|| sfid_owner(client, st, table, row)).ok().flatten() {
                message = format!(
                    "{message}: sfid {} already belongs to row id={other} of {table} (both rows are the same Salesforce record)",
                    row.sfid.as_deref().unwrap_or_default()
                );
            }
        }
        let instead = unrecorded(entries, &failure.sqlstate, &message, max_attempts, rng);
        in_subtransaction(|| record_log(client, st, &instead))
            .map_err(|f| WorkerError::Database(format!("{}: {}", f.sqlstate, f.message)))?;
    }
    Ok(failed)
}

fn record_stats(
    client: &mut SpiClient<'_>,
    st: &Statements,
    stats: &HashMap<String, MappingStats>,
) -> Result<(), WorkerError> {
    for (table, stats) in stats {
        client.update(
            &st.record.mapping_stats,
            None,
            &[
                DatumWithOid::from(table.as_str()),
                DatumWithOid::from(stats.succeeded),
                DatumWithOid::from(stats.last_error.clone()),
            ],
        )?;
    }
    Ok(())
}

fn record_log(client: &mut SpiClient<'_>, st: &Statements, log: &[LogOutcome]) -> Result<(), WorkerError> {
    if log.is_empty() {
        return Ok(());
    }
    client.update(
        &st.record.record_log,
        None,
        &[
            DatumWithOid::from(log.iter().map(|o| o.id).collect::<Vec<_>>()),
            DatumWithOid::from(log.iter().map(|o| o.state.as_str()).collect::<Vec<_>>()),
            DatumWithOid::from(log.iter().map(|o| o.message.clone()).collect::<Vec<_>>()),
            DatumWithOid::from(log.iter().map(|o| o.sfid.clone()).collect::<Vec<_>>()),
            DatumWithOid::from(log.iter().map(|o| o.attempts).collect::<Vec<_>>()),
            DatumWithOid::from(log.iter().map(|o| o.retry_in.map(|d| d.as_millis() as i64)).collect::<Vec<_>>()),
            DatumWithOid::from(log.iter().map(|o| o.in_doubt).collect::<Vec<_>>()),
            DatumWithOid::from(log.iter().map(|o| o.result.map(|r| r.code())).collect::<Vec<_>>()),
            DatumWithOid::from(log.iter().map(|o| o.depth).collect::<Vec<_>>()),
        ],
    )?;
    Ok(())
}

/// Writes `sfid`, `_hc_lastop` and `_hc_err` into a mapped table's rows, as its owner. The status trigger leaves
/// these rows as written: they are outcomes, not changes (the transaction's end clears the flag, however it ends).
fn write_back(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    table: &str,
    rows: &[RowOutcome],
) -> Result<(), WorkerError> {
    if rows.is_empty() {
        return Ok(());
    }
    // The rows are locked first: a delete of one of them either committed before (its log entry is seen below) or
    // waits for this transaction (and then logs the sfid written here).
    on_table(client, st, table, |client, t| {
        client.update(
            &t.lock_rows,
            None,
            &[DatumWithOid::from(rows.iter().map(|o| o.record_id).collect::<Vec<_>>())],
        )?;
        Ok(())
    })?;
    // A row deleted while its insert was on its way (its delete was logged without an sfid): the delete must
    // remove the record just created, and the row there now, if any, is a later insert's, not this one's.
    let created: Vec<&RowOutcome> = rows.iter().filter(|o| o.insert && o.sfid.is_some()).collect();
    let revived = revive_deletes(client, st, table, &created)?;
    let rows: Vec<&RowOutcome> = rows.iter().filter(|o| !(o.insert && revived.contains(&o.record_id))).collect();
    // A row deleted after the change this outcome is of: the row there now, if any, is another one.
    let mut replaced = HashSet::new();
    if !rows.is_empty() {
        for row in client.select(
            &st.record.deleted_later,
            None,
            &[
                DatumWithOid::from(table),
                DatumWithOid::from(rows.iter().map(|o| o.record_id).collect::<Vec<_>>()),
                DatumWithOid::from(rows.iter().map(|o| o.log_id).collect::<Vec<_>>()),
            ],
        )? {
            replaced.extend(row.get::<i64>(1)?);
        }
    }
    let rows: Vec<&RowOutcome> = rows.into_iter().filter(|o| !replaced.contains(&o.record_id)).collect();
    if rows.is_empty() {
        return Ok(());
    }
    WRITING_OUTCOMES.store(true, Ordering::SeqCst);
    let written = on_table(client, st, table, |client, t| {
        let mut ids = HashSet::new();
        for row in client.update(
            &t.write_back,
            None,
            &[
                DatumWithOid::from(rows.iter().map(|o| o.record_id).collect::<Vec<_>>()),
                DatumWithOid::from(rows.iter().map(|o| o.sfid.clone()).collect::<Vec<_>>()),
                DatumWithOid::from(rows.iter().map(|o| o.lastop.as_str()).collect::<Vec<_>>()),
                DatumWithOid::from(rows.iter().map(|o| o.err.clone()).collect::<Vec<_>>()),
            ],
        )? {
            ids.extend(row.get::<i64>(1)?);
        }
        Ok(ids)
    })?
    .unwrap_or_default();
    log_follow_ups(client, st, table, rows.iter().copied().filter(|o| written.contains(&o.record_id)))?;
    // A delete (and perhaps a re-insert under the same id) that committed since the look before the write-back:
    // its entry is visible now. The row written, if any, was the re-inserted one: what was written into it is taken
    // back (it waits for its own insert's outcome).
    let unrevived: Vec<&RowOutcome> = created.iter().copied().filter(|o| !revived.contains(&o.record_id)).collect();
    let late = revive_deletes(client, st, table, &unrevived)?;
    let taken_back: Vec<&RowOutcome> =
        unrevived.into_iter().filter(|o| late.contains(&o.record_id) && written.contains(&o.record_id)).collect();
    if !taken_back.is_empty() {
        on_table(client, st, table, |client, t| {
            client.update(
                &t.take_back,
                None,
                &[
                    DatumWithOid::from(taken_back.iter().map(|o| o.record_id).collect::<Vec<_>>()),
                    DatumWithOid::from(taken_back.iter().map(|o| o.sfid.clone()).collect::<Vec<_>>()),
                ],
            )?;
            Ok(())
        })?;
    }
    Ok(())
}

/// Gives the first sfid-less delete logged after each created record's insert the new sfid and puts it back in the
/// queue. Returns the rows whose delete was revived.
fn revive_deletes(
    client: &mut SpiClient<'_>,
    st: &Statements,
    table: &str,
    created: &[&RowOutcome],
) -> Result<HashSet<i64>, WorkerError> {
    let mut revived = HashSet::new();
    if created.is_empty() {
        return Ok(revived);
    }
    for row in client.update(
        &st.queue.revive_deletes,
        None,
        &[
            DatumWithOid::from(table),
            DatumWithOid::from(created.iter().map(|o| o.record_id).collect::<Vec<_>>()),
            DatumWithOid::from(created.iter().map(|o| o.sfid.clone()).collect::<Vec<_>>()),
            DatumWithOid::from(created.iter().map(|o| o.log_id).collect::<Vec<_>>()),
        ],
    )? {
        revived.extend(row.get::<i64>(1)?);
    }
    Ok(revived)
}

/// Another row of `table` that already has `row`'s sfid (what a unique violation on the sfid index means).
fn sfid_owner(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    table: &str,
    row: &RowOutcome,
) -> Result<Option<i64>, WorkerError> {
    let Some(sfid) = row.sfid.clone() else { return Ok(None) };
    let found = on_table(client, st, table, |client, t| {
        let mut other = None;
        for r in client.select(&t.sfid_owner, None, &[DatumWithOid::from(sfid), DatumWithOid::from(row.record_id)])? {
            other = r.get::<i64>(1)?;
        }
        Ok(other)
    })?;
    Ok(found.flatten())
}

/// Runs `f` with `table`'s statements, as the table's owner (`engine::owner::as_table_owner`). `None` when `table` is not one of the
/// mapped tables of this claim.
fn on_table<R>(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    table: &str,
    f: impl FnOnce(&mut SpiClient<'_>, &TableStatements) -> Result<R, WorkerError>,
) -> Result<Option<R>, WorkerError> {
    let Some(owner) = st.owners.get(table).copied() else { return Ok(None) };
    let statements = st.tables(client, &[table])?;
    let Some(t) = statements.get(table) else { return Ok(None) };
    as_table_owner(owner, || f(client, t)).map(Some)
}
