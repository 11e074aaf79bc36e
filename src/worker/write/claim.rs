//! Claiming work (one short transaction): due `NEW` rows become `PENDING`, `IGNORE` rows `IGNORED`, rows of tables
//! that are no longer mapped `FAILED`, and the mappings the claim belongs to are read with their column types.

use std::collections::HashMap;

use pgforce_core::config::{Config, WriteAlgorithm};
use pgforce_core::delivery::links::ForeignKey;
use pgforce_core::delivery::merge::{first_per_record, through_first_delete};
use pgforce_core::delivery::{mark_deleted_later, Change, Claimed, Table, Values};
use pgforce_core::hstore;
use pgforce_core::log::{Action, LogState};
use pgforce_core::mapping::is_system_column;
use pgforce_core::mapping::{PgKind, Target};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::spi::SpiClient;

use crate::worker::error::WorkerError;
use crate::worker::sql::Statements;

fn values(text: Option<String>) -> Values {
    text.and_then(|t| hstore::parse(&t).ok()).map(|pairs| pairs.into_iter().collect()).unwrap_or_default()
}

/// Claims up to `config.batch_size` due rows holding up to `config.claim_bytes()` of log text (always at least
/// one row); a Bulk job's worth when the backlog is that large. Under ordered writes only the oldest change of each
/// record is claimed; the others stay `NEW` for a later cycle.
pub fn claim(client: &mut SpiClient<'_>, st: &mut Statements, config: &Config) -> Result<Claimed, WorkerError> {
    let (rows, bytes) =
        if bulk_backlog(client, st, config)? { config.bulk_claim() } else { (config.batch_size, config.claim_bytes()) };
    let rows = client.update(&st.queue.claim, None, &[DatumWithOid::from(rows), DatumWithOid::from(bytes)])?;
    let (mut claimed, states) = gather(client, st, config, rows)?;
    take(client, st, &states)?;
    // A record whose earlier attempt is in doubt goes with all its due changes: the record that attempt may have
    // created holds the values of any of them, and the search before sending it again must know them all.
    if config.write_algorithm == WriteAlgorithm::Merged {
        let in_doubt: HashMap<String, Vec<i64>> = claimed
            .changes
            .iter()
            .map(|(t, changes)| {
                let ids = changes.iter().filter(|c| c.in_doubt_since.is_some()).map(|c| c.record_id).collect();
                (t.clone(), ids)
            })
            .filter(|(_, ids): &(String, Vec<i64>)| !ids.is_empty())
            .collect();
        if !in_doubt.is_empty() {
            let more = claim_records(client, st, config, &in_doubt)?;
            claimed.absorb(more);
        }
    }
    Ok(claimed)
}

/// Claims the due rows of these records (per log table name: record ids): parents the claim's writes wait for, so
/// that they go in the same claim as their children instead of after them, or the later changes of records in doubt.
pub fn claim_records(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    config: &Config,
    wanted: &HashMap<String, Vec<i64>>,
) -> Result<Claimed, WorkerError> {
    let (tables, ids): (Vec<&str>, Vec<i64>) =
        wanted.iter().flat_map(|(t, ids)| ids.iter().map(move |id| (t.as_str(), *id))).unzip();
    let rows = client.update(
        &st.queue.claim_parents,
        None,
        &[
            DatumWithOid::from(config.batch_size),
            DatumWithOid::from(config.claim_bytes()),
            DatumWithOid::from(tables),
            DatumWithOid::from(ids),
        ],
    )?;
    let (claimed, states) = gather(client, st, config, rows)?;
    take(client, st, &states)?;
    Ok(claimed)
}

/// Whether the queue holds at least `pgforce.bulk_threshold` due changes: then a claim takes a Bulk job's worth
/// (`Config::bulk_claim`), so that large runs go as few jobs (counted with a limit: a short index scan).
fn bulk_backlog(client: &mut SpiClient<'_>, st: &Statements, config: &Config) -> Result<bool, WorkerError> {
    if config.bulk_threshold == 0 {
        return Ok(false);
    }
    let threshold = config.bulk_threshold as i64;
    let due = client.select(&st.queue.due_count, None, &[DatumWithOid::from(threshold)])?.first().get::<i64>(1)?;
    Ok(due.unwrap_or(0) >= threshold)
}

/// The changes in flight in Bulk job `id`, read back (locked, left `PENDING`) to record the job's results.
pub fn job_entries(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    config: &Config,
    id: &str,
) -> Result<Claimed, WorkerError> {
    let rows = client.update(&st.queue.job_entries, None, &[DatumWithOid::from(id)])?;
    Ok(gather(client, st, config, rows)?.0)
}

/// What the worker would claim now (of one mapped table, or of all; paused mappings included), without claiming
/// it: for `salesforce.preview()`.
pub fn peek(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    config: &Config,
    table: Option<pg_sys::Oid>,
) -> Result<Claimed, WorkerError> {
    let sql = crate::worker::sql::queue_sql(&st.schema, crate::worker::sql::QueueRead::Preview);
    let rows = client.select(
        &sql,
        None,
        &[DatumWithOid::from(config.batch_size), DatumWithOid::from(config.claim_bytes()), DatumWithOid::from(table)],
    )?;
    Ok(gather(client, st, config, rows)?.0)
}

/// The log rows a claim moves to another state.
#[derive(Default)]
struct NewStates {
    pending: Vec<i64>,
    ignored: Vec<i64>,
    orphans: Vec<i64>,
}

/// Turns due queue rows into the changes that go now, by table, with their mappings.
fn gather(
    client: &mut SpiClient<'_>,
    st: &mut Statements,
    config: &Config,
    rows: pgrx::spi::SpiTupleTable<'_>,
) -> Result<(Claimed, NewStates), WorkerError> {
    let mut states = NewStates::default();
    let mut all = Vec::new();
    let mut table_of: HashMap<i64, String> = HashMap::new();
    for row in rows {
        let id: i64 = row.get(1)?.unwrap_or_default();
        let table: String = row.get(2)?.unwrap_or_default();
        let action = row.get::<String>(4)?.and_then(|a| a.parse::<Action>().ok());
        let state = row.get::<String>(5)?.and_then(|s| s.parse::<LogState>().ok());
        // A no-op update is done with; an sfid-less delete still cancels an insert claimed with it.
        if state == Some(LogState::Ignore) && action != Some(Action::Delete) {
            states.ignored.push(id);
            continue;
        }
        let Some(action) = action else { continue };
        table_of.insert(id, table);
        all.push(Change {
            log_id: id,
            record_id: row.get(3)?.unwrap_or_default(),
            action,
            sfid: row.get(6)?,
            values: values(row.get(7)?),
            old: values(row.get(8)?),
            attempts: row.get(9)?.unwrap_or_default(),
            in_doubt_since: row.get(10)?,
            retried: row.get::<bool>(11)?.unwrap_or_default(),
            deleted_later: false,
        });
    }
    // A record is a table's row: changes are grouped by table before deciding what of each record goes now.
    let mut by_table: HashMap<String, Vec<Change>> = HashMap::new();
    for c in all {
        let table = table_of.remove(&c.log_id).unwrap_or_default();
        by_table.entry(table).or_default().push(c);
    }
    let tables = load_tables(client, st)?;
    let mut claimed = Claimed { tables, ..Claimed::default() };
    for (table, mut changes) in by_table {
        mark_deleted_later(&mut changes);
        if !claimed.tables.contains_key(&table) {
            states.orphans.extend(changes.iter().map(|c| c.log_id));
            continue;
        }
        let now = match config.write_algorithm {
            WriteAlgorithm::Ordered => first_per_record(changes),
            WriteAlgorithm::Merged => through_first_delete(changes),
        };
        states.pending.extend(now.iter().map(|c| c.log_id));
        claimed.changes.insert(table, now);
    }
    claimed.count = states.pending.len() + states.ignored.len() + states.orphans.len();
    Ok((claimed, states))
}

/// Moves the claimed rows out of the queue: `PENDING` while they are sent, `IGNORE` rows `IGNORED`, rows of tables
/// no longer mapped `FAILED`.
fn take(client: &mut SpiClient<'_>, st: &Statements, states: &NewStates) -> Result<(), WorkerError> {
    set_state(client, st, &states.pending, LogState::Pending, None)?;
    set_state(client, st, &states.ignored, LogState::Ignored, None)?;
    set_state(client, st, &states.orphans, LogState::Failed, Some(crate::worker::sql::UNMAPPED))
}

/// Moves claimed rows to `state`; finished states get their processing time, transaction and message. A row
/// claimed again for a retry keeps the message of its last failure while it is in flight (`PENDING`).
fn set_state(
    client: &mut SpiClient<'_>,
    st: &Statements,
    ids: &[i64],
    state: LogState,
    message: Option<&str>,
) -> Result<(), WorkerError> {
    if ids.is_empty() {
        return Ok(());
    }
    client.update(
        &st.queue.set_state,
        None,
        &[DatumWithOid::from(ids.to_vec()), DatumWithOid::from(state.as_str()), DatumWithOid::from(message)],
    )?;
    Ok(())
}

/// The read-write mappings with the columns they send and how each column's text is read; their owners go into
/// `st.owners`.
fn load_tables(client: &mut SpiClient<'_>, st: &mut Statements) -> Result<HashMap<String, Table>, WorkerError> {
    let rows = client.select(&st.queue.load_tables, None, &[])?;
    let mut out = HashMap::new();
    st.owners.clear();
    for row in rows {
        let name: String = row.get(1)?.unwrap_or_default();
        let fields: Vec<Option<String>> = row.get(5)?.unwrap_or_default();
        let names: Vec<Option<String>> = row.get(6)?.unwrap_or_default();
        let types: Vec<Option<String>> = row.get(7)?.unwrap_or_default();
        let kinds: HashMap<String, PgKind> = names
            .into_iter()
            .zip(types)
            .filter_map(|(n, t)| Some((n?, PgKind::from_type_name(t.as_deref().unwrap_or("text")))))
            .collect();
        let columns = fields
            .into_iter()
            .flatten()
            .filter(|f| !is_system_column(f))
            .map(|f| {
                let kind = kinds.get(&f).copied().unwrap_or(PgKind::Text);
                (f, kind)
            })
            .collect();
        let target = Target { sobject: row.get(3)?.unwrap_or_default(), upsert_field: row.get(4)?, columns };
        let qualified: String = row.get(2)?.unwrap_or_default();
        if let Some(owner) = row.get::<pg_sys::Oid>(8)? {
            st.owners.insert(qualified.clone(), owner);
        }
        out.insert(name, Table { qualified, target, links: Vec::new() });
    }
    for row in client.select(&st.queue.load_links, None, &[])? {
        let name: String = row.get(1)?.unwrap_or_default();
        let link = ForeignKey {
            column: row.get(2)?.unwrap_or_default(),
            field: row.get(3)?.unwrap_or_default(),
            parent: row.get(4)?,
        };
        if let Some(table) = out.get_mut(&name) {
            table.links.push(link);
        }
    }
    Ok(out)
}
