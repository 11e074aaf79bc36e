//! `salesforce.rollback()`: undoes in Salesforce what pgforce delivered since a moment, newest first, through the
//! same queue (so it is retried, audited and visible): a delete of each record it created, an update setting back
//! each field it changed, a report of each record it deleted (`pgforce_core::rollback` decides). Records changed in
//! Salesforce by someone else since are left alone unless forced (one query per sObject and 200 records). By
//! default Postgres is rolled back with it, as the sync engine's own writes (nothing is captured twice) and as the
//! table's owner; `salesforce_only` leaves the rows as they are and marks them `_hc_lastop = 'ROLLED_BACK'`.

use std::collections::HashMap;

use pgforce_core::delivery::doubt::CLOCK_MARGIN_S;
use pgforce_core::delivery::Values;
use pgforce_core::hstore;
use pgforce_core::log::{Action, AuditStatus, LastOp, LogState};
use pgforce_core::rollback::{left_alone, steps, Delivered, Step, Undo};
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, SpiClient};

use crate::engine::owner::as_table_owner;
use crate::error::PgforceError;
use crate::guc;

/// Ids per SOQL query (`WHERE Id IN (…)` stays well under the URL limit).
const IDS_PER_QUERY: usize = 200;

/// One mapped table: its qualified name, owner, sObject and mapped columns.
struct Mapped {
    qualified: String,
    owner: pg_sys::Oid,
    sobject: String,
    fields: Vec<String>,
}

type Row = (String, i64, Option<String>, String, String, Option<i64>);

/// Wrapped by `salesforce.rollback(...)` (sql/finalize.sql), which checks its arguments.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity, clippy::result_large_err)]
fn _rollback(
    since: TimestampWithTimeZone,
    tbl: Option<pg_sys::Oid>,
    dry_run: bool,
    force: bool,
    salesforce_only: bool,
) -> Result<
    TableIterator<
        'static,
        (
            name!(table_name, String),
            name!(record_id, i64),
            name!(sfid, Option<String>),
            name!(action, String),
            name!(detail, String),
            name!(log_id, Option<i64>),
        ),
    >,
    ErrorReport,
> {
    let rows = Spi::connect_mut(|client| -> Result<Vec<Row>, PgforceError> {
        let schema = super::mapping::extension_schema(client)?;
        let h = crate::worker::sql::hstore_schema(client)?;
        let mapped = mappings(client, &schema, tbl)?;
        let delivered = delivered(client, &schema, since, tbl)?;
        let plan = steps(&delivered, |t| mapped.get(t).map(|m| m.fields.as_slice()));
        // Reports need no look-up: only what would be changed is checked.
        let nothing_to_check = plan.iter().all(|s| matches!(s.undo, Undo::Report | Undo::Existed));
        let verdicts =
            if force || nothing_to_check { vec![None; plan.len()] } else { check(client, &schema, &mapped, &plan)? };
        let mut out = Vec::new();
        for (step, alone) in plan.iter().zip(verdicts) {
            let (action, detail) = match (&alone, &step.undo) {
                (Some(why), _) if why.starts_with("the record is no longer") => ("gone", why.clone()),
                (Some(why), _) => ("skip", why.clone()),
                (None, Undo::Delete) => ("delete", "created since: the record is deleted".to_string()),
                (None, Undo::Restore(values)) => {
                    ("restore", format!("fields set back: {}", values.keys().cloned().collect::<Vec<_>>().join(", ")))
                }
                (None, Undo::Existed) => (
                    "report",
                    "not created by pgforce: an insert since wrote over a record that existed (Salesforce answered \
                     updated), whose fields from before are not in the log: left alone"
                        .to_string(),
                ),
                (None, Undo::Report) => (
                    "report",
                    "deleted by pgforce since: restore it from Salesforce's recycle bin (pgforce cannot create it again with its id)"
                        .to_string(),
                ),
            };
            let log_id = match (&alone, &step.undo, dry_run) {
                (None, Undo::Delete | Undo::Restore(_), false) => {
                    let m = mapped.get(&step.table).ok_or_else(|| PgforceError::NotMapped(step.table.clone()))?;
                    Some(apply(client, &schema, &h, m, step, salesforce_only)?)
                }
                _ => None,
            };
            out.push((step.table.clone(), step.record_id, step.sfid.clone(), action.to_string(), detail, log_id));
        }
        if !dry_run && out.iter().any(|r| r.5.is_some()) {
            crate::shmem::wake_at_commit();
        }
        Ok(out)
    })
    .map_err(ErrorReport::from)?;
    Ok(TableIterator::new(rows))
}

/// The read-write mappings (all, or `tbl`'s), by `_trigger_log.table_name`.
fn mappings(
    client: &SpiClient<'_>,
    schema: &str,
    tbl: Option<pg_sys::Oid>,
) -> Result<HashMap<String, Mapped>, PgforceError> {
    let mut out = HashMap::new();
    for row in client.select(
        &format!(
            "SELECT m.table_name::pg_catalog.text, m.relid::pg_catalog.regclass::pg_catalog.text, c.relowner, m.sobject, m.fields
               FROM {schema}._mapping m JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) m.relid::pg_catalog.oid
              WHERE m.access OPERATOR(pg_catalog.<>) 'read_only'
                AND ($1::pg_catalog.oid IS NULL OR m.relid::pg_catalog.oid OPERATOR(pg_catalog.=) $1::pg_catalog.oid)"
        ),
        None,
        &[DatumWithOid::from(tbl)],
    )? {
        let name: String = row.get(1)?.unwrap_or_default();
        out.insert(
            name,
            Mapped {
                qualified: row.get(2)?.unwrap_or_default(),
                owner: row.get(3)?.unwrap_or(pg_sys::Oid::INVALID),
                sobject: row.get(4)?.unwrap_or_default(),
                fields: row.get::<Vec<String>>(5)?.unwrap_or_default(),
            },
        );
    }
    Ok(out)
}

/// The entries pgforce delivered since `since` (log and archive), oldest first: `SUCCESS`, and `MERGED` into a
/// write that succeeded (not those of rows gone before they were sent).
fn delivered(
    client: &SpiClient<'_>,
    schema: &str,
    since: TimestampWithTimeZone,
    tbl: Option<pg_sys::Oid>,
) -> Result<Vec<Delivered>, PgforceError> {
    let columns = "id, table_name, relid, record_id, action, sfid, \"values\", old, processed_at, state, sf_result";
    let (success, merged) = (LogState::Success.as_str(), LogState::Merged.as_str());
    let gone = AuditStatus::SourceGone.code();
    let (inserted, updated) = (AuditStatus::Inserted.code(), AuditStatus::Updated.code());
    let rows = client.select(
        &format!(
            "SELECT e.id, m.table_name::pg_catalog.text, e.record_id, e.action::pg_catalog.text, e.sfid::pg_catalog.text, e.\"values\"::pg_catalog.text,
                    e.old::pg_catalog.text,
                    pg_catalog.to_char((e.processed_at OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => {CLOCK_MARGIN_S}))
                                       AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                    CASE WHEN e.state::pg_catalog.text OPERATOR(pg_catalog.<>) '{success}' THEN NULL
                         WHEN e.sf_result OPERATOR(pg_catalog.=) {inserted} THEN true
                         WHEN e.sf_result OPERATOR(pg_catalog.=) {updated} THEN false END
               FROM (SELECT {columns} FROM {schema}._trigger_log
                     UNION ALL
                     SELECT {columns} FROM {schema}._trigger_log_archive) e
               JOIN {schema}._mapping m
                 ON CASE WHEN e.relid IS NULL THEN m.table_name OPERATOR(pg_catalog.=) e.table_name
                         ELSE m.relid OPERATOR(pg_catalog.=) e.relid END
              WHERE e.processed_at OPERATOR(pg_catalog.>=) $1
                AND e.state::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['{success}', '{merged}'])
                AND e.sf_result IS DISTINCT FROM {gone}
                AND m.access OPERATOR(pg_catalog.<>) 'read_only'
                AND ($2::pg_catalog.oid IS NULL OR m.relid::pg_catalog.oid OPERATOR(pg_catalog.=) $2::pg_catalog.oid)
              ORDER BY e.id"
        ),
        None,
        &[DatumWithOid::from(since), DatumWithOid::from(tbl)],
    )?;
    let parse = |text: Option<String>| -> Values {
        text.and_then(|t| hstore::parse(&t).ok()).map(|p| p.into_iter().collect()).unwrap_or_default()
    };
    let mut out = Vec::new();
    for row in rows {
        let Some(action) = row.get::<String>(4)?.and_then(|a| a.parse::<Action>().ok()) else { continue };
        out.push(Delivered {
            log_id: row.get(1)?.unwrap_or_default(),
            table: row.get(2)?.unwrap_or_default(),
            record_id: row.get(3)?.unwrap_or_default(),
            action,
            sfid: row.get::<String>(5)?.filter(|s| !s.is_empty()),
            values: parse(row.get(6)?),
            old: parse(row.get(7)?),
            written_before: row.get(8)?.unwrap_or_default(),
            created: row.get(9)?,
        });
    }
    Ok(out)
}

/// Looks each step's record up in Salesforce: why it is left alone, if it is.
fn check(
    spi: &mut SpiClient<'_>,
    schema: &str,
    mapped: &HashMap<String, Mapped>,
    plan: &[Step],
) -> Result<Vec<Option<String>>, PgforceError> {
    let config = guc::config();
    let cannot = |why: String| PgforceError::SalesforceCheck(why);
    let settings = config.read_secret_files().map(|s| config.connection_with(&s)).map_err(cannot)?;
    let sf = super::session_client::client(spi, schema, &settings)?;
    let user = sf.user_id().map_err(|e| cannot(e.to_string()))?;
    super::session_client::keep_rotated(spi, schema, &settings, &sf)?;
    // Every record, by sObject, looked up 200 at a time: Id → (LastModifiedDate, LastModifiedById).
    let mut by_object: HashMap<&str, Vec<&str>> = HashMap::new();
    for s in plan {
        if let (Some(m), Some(id)) = (mapped.get(&s.table), s.sfid.as_deref()) {
            by_object.entry(m.sobject.as_str()).or_default().push(id);
        }
    }
    let mut found: HashMap<String, (String, String)> = HashMap::new();
    for (sobject, ids) in by_object {
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let list: Vec<String> = chunk.iter().map(|id| format!("'{}'", id.replace(['\'', '\\'], ""))).collect();
            let soql = format!(
                "SELECT Id, LastModifiedDate, LastModifiedById FROM {sobject} WHERE Id IN ({})",
                list.join(", ")
            );
            for r in sf.query(&soql, IDS_PER_QUERY).map_err(|e| cannot(e.to_string()))? {
                let text = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
                found.insert(
                    text("Id").chars().take(15).collect(),
                    (text("LastModifiedDate"), text("LastModifiedById")),
                );
            }
        }
    }
    Ok(plan
        .iter()
        .map(|s| {
            let record = s
                .sfid
                .as_deref()
                .and_then(|id| found.get(&id.chars().take(15).collect::<String>()))
                .map(|(at, by)| (at.as_str(), by.as_str()));
            left_alone(s, record, user.as_deref(), false)
        })
        .collect())
}

/// Queues the Salesforce side of one step and rolls the row back (or marks it): returns the queued log id.
/// `h`: the hstore extension's schema, quoted.
fn apply(
    client: &mut SpiClient<'_>,
    schema: &str,
    h: &str,
    m: &Mapped,
    step: &Step,
    salesforce_only: bool,
) -> Result<i64, PgforceError> {
    let (action, changes) = match &step.undo {
        Undo::Restore(values) => {
            let pairs: Vec<(&String, Option<&String>)> = values.iter().map(|(k, v)| (k, v.as_ref())).collect();
            (Action::Update, Some(String::from_utf8_lossy(&hstore::render(&pairs)).into_owned()))
        }
        _ => (Action::Delete, None),
    };
    // Queued as a fresh change (updated_at NULL): it is sent with these values, not the row's current ones.
    let log_id: Option<i64> = client
        .update(
            &format!(
                "INSERT INTO {schema}._trigger_log
                        (action, table_name, relid, txid, created_at, updated_at, state, record_id, sfid, \"values\")
                 SELECT $2, m.table_name, m.relid, pg_catalog.txid_current(), pg_catalog.clock_timestamp(), NULL,
                        '{new}', $3, $4, $5
                   FROM {schema}._mapping m WHERE m.table_name OPERATOR(pg_catalog.=) $1
                 RETURNING id",
                new = LogState::New.as_str()
            ),
            None,
            &[
                DatumWithOid::from(step.table.as_str()),
                DatumWithOid::from(action.as_str()),
                DatumWithOid::from(step.record_id),
                DatumWithOid::from(step.sfid.as_deref()),
                DatumWithOid::from(changes.as_deref()),
            ],
        )?
        .first()
        .get(1)?;
    let table = &m.qualified;
    let sql = match (&step.undo, salesforce_only) {
        (_, true) => format!(
            "UPDATE {table} SET _hc_lastop = '{}', _hc_err = 'salesforce.rollback(): Salesforce was set back, this row was not'
              WHERE id OPERATOR(pg_catalog.=) $1",
            LastOp::RolledBack.as_str()
        ),
        (Undo::Delete, false) => format!("DELETE FROM {table} WHERE id OPERATOR(pg_catalog.=) $1"),
        (Undo::Restore(values), false) => {
            let columns: Vec<String> = values.keys().map(quote_identifier).collect();
            let from: Vec<String> = columns.iter().map(|c| format!("r.{c}")).collect();
            format!(
                "UPDATE {table} AS t SET ({}) = (SELECT {} FROM {h}.populate_record(t, $2::{h}.hstore) AS r)
                  WHERE t.id OPERATOR(pg_catalog.=) $1",
                columns.join(", "),
                from.join(", ")
            )
        }
        (Undo::Report | Undo::Existed, false) => return Ok(log_id.unwrap_or_default()),
    };
    // The sync engine's own write (xmlbinary = hex: nothing is captured), as the table's owner.
    let written = as_table_owner(m.owner, || {
        client.update(&sql, None, &[DatumWithOid::from(step.record_id), DatumWithOid::from(changes.as_deref())])
    });
    written?;
    Ok(log_id.unwrap_or_default())
}
