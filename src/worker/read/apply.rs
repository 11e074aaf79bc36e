//! Applying a page of records to its table, as the table's owner (`engine::owner::as_table_owner`: its triggers
//! run as the owner, never as the sync engine, and nothing it sets outlives the write), in one transaction that
//! also records the position reached. Rows are written set-based; when a value does not fit its column, the page
//! is written again record by record, and only the records that do not fit fail (kept in `_read_failures` until a
//! read of them succeeds).

use std::sync::atomic::Ordering;

use pgforce_core::log::LastOp;
use pgforce_core::mapping::{relationship_column, PgKind};
use pgforce_core::read::apply::{decide, Apply};
use pgforce_core::read::page::{Page, SfRecord};
use pgforce_core::read::values::column_text;
use pgforce_core::read::{Position, ReadState};
use pgrx::datum::DatumWithOid;
use pgrx::spi::{quote_identifier, SpiClient};

use super::local::{self, Found};
use super::Reading;
use crate::capture::WRITING_OUTCOMES;
use crate::engine::owner::as_table_owner;
use crate::worker::error::WorkerError;
use crate::worker::transaction::in_subtransaction;

const EQ: &str = "OPERATOR(pg_catalog.=)";

/// Of `sfids`, those some row of the mapping's table has (read as the table's owner).
pub(super) fn rows_of(
    client: &mut SpiClient<'_>,
    mapping: &Reading,
    sfids: &[String],
) -> Result<Vec<String>, WorkerError> {
    as_table_owner(mapping.owner, || {
        let mut out = Vec::new();
        for row in client.select(
            &format!(
                "SELECT t.sfid::pg_catalog.text FROM {} t WHERE t.sfid::pg_catalog.text {EQ} ANY ($1)",
                mapping.qualified
            ),
            None,
            &[DatumWithOid::from(sfids.to_vec())],
        )? {
            out.extend(row.get::<String>(1)?);
        }
        Ok(out)
    })
}

/// One record's row values as text, in the order of `Reading::columns` (system fields first).
struct RowText {
    sfid: String,
    /// The row it goes to (`None`: a new row).
    row: Option<i64>,
    stamp: i64,
    created: Option<String>,
    values: Vec<Option<String>>,
}

/// What became of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PageOutcome {
    /// Applied, the position moved past every record.
    Applied,
    /// Applied up to a record an insert in flight may have created (`Apply::Hold`): the position stops before it,
    /// and the read goes on from there at the next interval.
    Held,
    /// The read started over since this page was asked for: nothing was applied.
    StartedOver,
}

/// Where a page comes from, and what applying it records.
pub(super) enum Pass<'a> {
    /// A poll's page, in `(SystemModstamp, Id)` order: the position moves past every record applied; `caught_up`:
    /// the read reached the end of Salesforce's changes.
    Poll { position: &'a mut Position, caught_up: bool },
    /// A result set of a Bulk load (in no order): the next set's `locator` is recorded (`None`: this was the last,
    /// and the polls go on from `since`, when the job was asked for).
    Bulk { locator: Option<String>, since: i64 },
    /// The delete sweep's records: nothing but the rows moves.
    Sweep,
}

/// Applies `page` to `mapping`'s table, and records what `pass` says. `user`: the integration user's Id
/// (`local::lookup`).
pub(super) fn page(
    client: &mut SpiClient<'_>,
    schema: &str,
    mapping: &Reading,
    page: &Page,
    pass: Pass<'_>,
    user: Option<&str>,
) -> Result<PageOutcome, WorkerError> {
    // The read state is locked for the page's transaction; a start over (reload(), mapping again) since this read
    // began means the page was read from a position that no longer holds: it is not applied (the next read is).
    // (`update`: pgrx's `select` runs read-only, which refuses FOR UPDATE.)
    let current: Option<i64> = client
        .update(
            &format!(
                "SELECT generation FROM {schema}._read_state
                  WHERE relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass FOR UPDATE"
            ),
            None,
            &[DatumWithOid::from(mapping.relid)],
        )?
        .first()
        .get(1)
        .ok()
        .flatten();
    if current != Some(mapping.generation) {
        return Ok(PageOutcome::StartedOver);
    }
    let t = &mapping.qualified;
    let found = local::lookup(client, schema, mapping, page, user)?;
    let (mut inserts, mut updates, mut deletes, mut failed) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Records with the row's own stamp: written only where their values differ.
    let mut compared = Vec::new();
    let mut flags: Vec<(String, f64)> = Vec::new();
    let mut held = None;
    for (n, record) in page.records.iter().enumerate() {
        let Found { row, mut local } = found.get(&record.id).copied().unwrap_or_default();
        if mapping.reloading {
            // A reload writes every row whose values differ from its record's, whatever its stamp says.
            local.stamp = None;
        }
        match decide(record.stamp, record.deleted, local, mapping.on_delete) {
            Apply::Insert | Apply::Update => match row_text(mapping, record, row) {
                Ok(text) if row.is_some() => updates.push(text),
                Ok(text) => inserts.push(text),
                Err(e) => failed.push((record.id.clone(), e)),
            },
            Apply::Compare => match row_text(mapping, record, row) {
                Ok(text) if row.is_some() => compared.push(text),
                Ok(text) => inserts.push(text),
                Err(e) => failed.push((record.id.clone(), e)),
            },
            Apply::Delete => deletes.push(record.id.clone()),
            Apply::Flag => flags.push((record.id.clone(), record.stamp as f64)),
            Apply::Unchanged | Apply::KeepLocal => {}
            // A Bulk set is not read again: the record is an insert's in flight, whose outcome writes its sfid.
            Apply::Hold if matches!(pass, Pass::Bulk { .. }) => {}
            Apply::Hold => {
                held = Some(n);
                break;
            }
        }
    }
    let records = &page.records[..held.unwrap_or(page.records.len())];
    let sfids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let moves = !matches!(pass, Pass::Sweep);
    let mut unmoved = Position::default();
    let (position, caught_up, locator) = match pass {
        Pass::Poll { position, caught_up } => (position, caught_up && held.is_none(), None),
        Pass::Bulk { locator, since } => {
            // The polls go on from when the job was asked for; until the last set, its locator says where the load is.
            unmoved = Position { stamp: Some(since), id: None };
            let last = locator.is_none();
            (&mut unmoved, last, Some(locator))
        }
        Pass::Sweep => (&mut unmoved, false, None),
    };
    let mut applied = 0i64;
    // Every row written says what it is (SYNCED, or the echo of a write keeping that write's outcome): the status
    // trigger keeps it as written (the flag ends with the transaction).
    WRITING_OUTCOMES.store(true, Ordering::SeqCst);
    as_table_owner(mapping.owner, || -> Result<(), WorkerError> {
        applied = write(client, mapping, &inserts, Write::Insert, &mut failed)?
            + write(client, mapping, &updates, Write::Update, &mut failed)?
            + write(client, mapping, &compared, Write::IfDiffers, &mut failed)?;
        if !deletes.is_empty() {
            applied += client
                .update(
                    &format!("DELETE FROM {t} WHERE sfid::pg_catalog.text {EQ} ANY ($1)"),
                    None,
                    &[DatumWithOid::from(deletes.clone())],
                )?
                .len() as i64;
        }
        if !flags.is_empty() {
            // on_delete => 'flag': the row stays, marked deleted, with the stamp of the delete.
            let (ids, stamps): (Vec<String>, Vec<f64>) = flags.iter().cloned().unzip();
            applied += client
                .update(
                    &format!(
                        "UPDATE {t} AS t
                            SET isdeleted = true, systemmodstamp = pg_catalog.to_timestamp(u.stamp) AT TIME ZONE 'UTC',
                                _hc_lastop = '{synced}', _hc_err = NULL
                           FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]),
                                           pg_catalog.unnest($2::pg_catalog.float8[])) AS u(sfid, stamp)
                          WHERE t.sfid::pg_catalog.text {EQ} u.sfid",
                        synced = LastOp::Synced.as_str(),
                    ),
                    None,
                    &[DatumWithOid::from(ids), DatumWithOid::from(stamps)],
                )?
                .len() as i64;
        }
        Ok(())
    })?;
    if locator.is_none() {
        for record in records {
            position.advance(record.stamp, &record.id);
        }
    }
    if mapping.reloading && moves {
        client.update(
            &format!(
                "INSERT INTO {schema}._read_seen (relid, sfid)
                 SELECT $1::pg_catalog.oid::pg_catalog.regclass, u.sfid FROM pg_catalog.unnest($2::pg_catalog.text[]) AS u(sfid)
                 ON CONFLICT DO NOTHING"
            ),
            None,
            &[DatumWithOid::from(mapping.relid), DatumWithOid::from(sfids.clone())],
        )?;
        if caught_up {
            applied += delete_unseen(client, schema, mapping)?;
        }
    }
    for (sfid, why) in &failed {
        pgrx::warning!("pgforce: record {sfid} of {} was not read into {t}: {why}", mapping.sobject);
    }
    // Records that failed are kept apart until a read of them succeeds; every other record of the page is fine now.
    let (failed_ids, messages): (Vec<String>, Vec<String>) = failed.iter().cloned().unzip();
    let fine: Vec<&String> = sfids.iter().filter(|id| !failed_ids.contains(id)).collect();
    client.update(
        &format!(
            "WITH fine AS (DELETE FROM {schema}._read_failures
                            WHERE relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass
                              AND sfid::pg_catalog.text {EQ} ANY ($2::pg_catalog.text[]))
             INSERT INTO {schema}._read_failures (relid, sfid, message)
             SELECT $1::pg_catalog.oid::pg_catalog.regclass, u.sfid, u.message
               FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.text[]))
                    AS u(sfid, message)
             ON CONFLICT (relid, sfid) DO UPDATE SET failed_at = pg_catalog.now(), message = excluded.message"
        ),
        None,
        &[
            DatumWithOid::from(mapping.relid),
            DatumWithOid::from(fine.into_iter().cloned().collect::<Vec<String>>()),
            DatumWithOid::from(failed_ids),
            DatumWithOid::from(messages),
        ],
    )?;
    if !moves {
        client.update(
            &format!(
                "UPDATE {schema}._read_state SET rows_read = rows_read OPERATOR(pg_catalog.+) $2
                  WHERE relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass"
            ),
            None,
            &[DatumWithOid::from(mapping.relid), DatumWithOid::from(applied)],
        )?;
        return Ok(PageOutcome::Applied);
    }
    client.update(
        &format!(
            "UPDATE {schema}._read_state
                SET position_stamp = pg_catalog.to_timestamp($2::pg_catalog.float8) AT TIME ZONE 'UTC',
                    position_id = $3, rows_read = rows_read OPERATOR(pg_catalog.+) $4,
                    last_error = NULL,
                    state = CASE WHEN $5 THEN '{synced}' ELSE '{polling}' END,
                    read_at = CASE WHEN $5 THEN pg_catalog.now() ELSE read_at END,
                    compared_at = CASE WHEN $5 AND (reloading_since IS NOT NULL OR compared_at IS NULL)
                                       THEN pg_catalog.now() ELSE compared_at END,
                    reloading_since = CASE WHEN $5 THEN NULL ELSE reloading_since END
              WHERE relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass",
            synced = ReadState::DataSynced.as_str(),
            polling = ReadState::PollingSfChanges.as_str(),
        ),
        None,
        &[
            DatumWithOid::from(mapping.relid),
            DatumWithOid::from(position.stamp.map(|s| s as f64)),
            DatumWithOid::from(position.id.clone()),
            DatumWithOid::from(applied),
            DatumWithOid::from(caught_up),
        ],
    )?;
    if let Some(next) = locator {
        // A Bulk load: where its next set is; after the last, no job. Shown as the load it is until then.
        client.update(
            &format!(
                "UPDATE {schema}._read_state
                    SET bulk_locator = $2,
                        bulk_job = CASE WHEN $2 IS NULL THEN NULL ELSE bulk_job END,
                        bulk_since = CASE WHEN $2 IS NULL THEN NULL ELSE bulk_since END,
                        state = CASE WHEN $2 IS NULL THEN state ELSE '{reload}' END
                  WHERE relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass",
                reload = ReadState::ReloadTable.as_str(),
            ),
            None,
            &[DatumWithOid::from(mapping.relid), DatumWithOid::from(next)],
        )?;
    }
    Ok(if held.is_some() { PageOutcome::Held } else { PageOutcome::Applied })
}

/// Rows read back per round when a reload ends.
const UNSEEN_BATCH: i64 = 10_000;

/// At the end of a reload: deletes the rows whose records the reload did not see (gone from Salesforce, recycle bin
/// emptied, merged away), then forgets what it saw. The table is read as its owner, a batch at a time, and checked
/// against what the reload saw as the sync engine (the owner cannot read pgforce's tables). Returns the rows deleted.
fn delete_unseen(client: &mut SpiClient<'_>, schema: &str, mapping: &Reading) -> Result<i64, WorkerError> {
    let t = &mapping.qualified;
    let (mut after, mut deleted) = (String::new(), 0i64);
    loop {
        let batch: Vec<(String, i64)> = as_table_owner(mapping.owner, || -> Result<_, WorkerError> {
            let mut rows = Vec::new();
            for row in client.select(
                &format!(
                    "SELECT t.sfid::pg_catalog.text, t.id::pg_catalog.int8 FROM {t} t
                      WHERE t.sfid IS NOT NULL AND t.sfid::pg_catalog.text OPERATOR(pg_catalog.>) $1
                      ORDER BY t.sfid::pg_catalog.text LIMIT $2"
                ),
                None,
                &[DatumWithOid::from(after.as_str()), DatumWithOid::from(UNSEEN_BATCH)],
            )? {
                rows.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<i64>(2)?.unwrap_or_default()));
            }
            Ok(rows)
        })?;
        let Some((last, _)) = batch.last().cloned() else { break };
        let sfids: Vec<String> = batch.iter().map(|(sfid, _)| sfid.clone()).collect();
        let mut unseen: Vec<String> = Vec::new();
        for row in client.select(
            &format!(
                "SELECT u.sfid FROM pg_catalog.unnest($2::pg_catalog.text[]) AS u(sfid)
                  WHERE NOT EXISTS (SELECT 1 FROM {schema}._read_seen s
                                     WHERE s.relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass AND s.sfid::pg_catalog.text {EQ} u.sfid)"
            ),
            None,
            &[DatumWithOid::from(mapping.relid), DatumWithOid::from(sfids)],
        )? {
            unseen.extend(row.get::<String>(1)?);
        }
        // A row with a change on its way keeps it (its record may be created again, or the change fail visibly).
        let ids: Vec<i64> = batch.iter().filter(|(sfid, _)| unseen.contains(sfid)).map(|(_, id)| *id).collect();
        let pending =
            if mapping.sends { local::pending_rows(client, schema, mapping, &ids, &ids)? } else { Default::default() };
        let gone: Vec<String> = batch
            .iter()
            .filter(|(sfid, id)| unseen.contains(sfid) && !pending.contains(id))
            .map(|(sfid, _)| sfid.clone())
            .collect();
        if !gone.is_empty() {
            deleted += as_table_owner(mapping.owner, || {
                client.update(
                    &format!("DELETE FROM {t} WHERE sfid::pg_catalog.text {EQ} ANY ($1)"),
                    None,
                    &[DatumWithOid::from(gone)],
                )
            })?
            .len() as i64;
        }
        if (batch.len() as i64) < UNSEEN_BATCH {
            break;
        }
        after = last;
    }
    client.update(
        &format!("DELETE FROM {schema}._read_seen WHERE relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass"),
        None,
        &[DatumWithOid::from(mapping.relid)],
    )?;
    Ok(deleted)
}

/// The value a column reads from a record: the field its name spells, or for a relationship column the parent's
/// external id inside the relationship (`"Account": {"External_Id__c": …}`; no parent: NULL).
fn field_value(record: &SfRecord, column: &str) -> serde_json::Value {
    match relationship_column(column) {
        Some(r) => record
            .fields
            .get(&r.relationship.to_ascii_lowercase())
            .and_then(serde_json::Value::as_object)
            .and_then(|parent| parent.iter().find(|(k, _)| k.eq_ignore_ascii_case(&r.external_id_field)))
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        None => record.fields.get(&column.to_ascii_lowercase()).cloned().unwrap_or_default(),
    }
}

/// A record's values as its columns' text; an error names the field that does not fit.
fn row_text(mapping: &Reading, record: &SfRecord, row: Option<i64>) -> Result<RowText, String> {
    let mut values = Vec::with_capacity(mapping.columns.len());
    for column in &mapping.columns {
        let (value, kind) = match &column.parent {
            // The parent's Id, as text: the statement finds the parent's row by it.
            Some(p) => (field_value(record, &p.field), PgKind::Text),
            None => (field_value(record, &column.name), column.kind),
        };
        values.push(column_text(kind, &value).map_err(|e| format!("{}: {e}", column.name))?);
    }
    let created = record.fields.get("createddate").map(|v| column_text(PgKind::Timestamp, v)).transpose()?.flatten();
    Ok(RowText { sfid: record.id.clone(), row, stamp: record.stamp, created, values })
}

/// Inserts or updates `rows` in one statement; if it fails (a value does not fit its column), row by row, each in
/// a subtransaction, the rows that fail going to `failed`. Returns the rows written.
/// How `write` writes its rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    Insert,
    /// A newer version: written (only where it differs during a reload, which reads every record).
    Update,
    /// The row's own stamp: written only where the values differ.
    IfDiffers,
}

fn write(
    client: &mut SpiClient<'_>,
    mapping: &Reading,
    rows: &[RowText],
    how: Write,
    failed: &mut Vec<(String, String)>,
) -> Result<i64, WorkerError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let sql = statement(mapping, how == Write::Insert, mapping.reloading || how == Write::IfDiffers);
    let all = in_subtransaction(|| run(client, &sql, rows));
    if let Ok(n) = all {
        return Ok(n);
    }
    let mut written = 0;
    for row in rows {
        match in_subtransaction(|| run(client, &sql, std::slice::from_ref(row))) {
            Ok(n) => written += n,
            Err(e) => failed.push((row.sfid.clone(), e.message)),
        }
    }
    Ok(written)
}

fn run(client: &mut SpiClient<'_>, sql: &str, rows: &[RowText]) -> Result<i64, WorkerError> {
    let width = rows.first().map_or(0, |r| r.values.len());
    let mut args = vec![
        DatumWithOid::from(rows.iter().map(|r| r.sfid.clone()).collect::<Vec<_>>()),
        DatumWithOid::from(rows.iter().map(|r| r.stamp as f64).collect::<Vec<_>>()),
        DatumWithOid::from(rows.iter().map(|r| r.created.clone()).collect::<Vec<_>>()),
        DatumWithOid::from(rows.iter().map(|r| r.row).collect::<Vec<Option<i64>>>()),
    ];
    for i in 0..width {
        args.push(DatumWithOid::from(rows.iter().map(|r| r.values[i].clone()).collect::<Vec<Option<String>>>()));
    }
    Ok(client.update(sql, None, &args)?.len() as i64)
}

/// The set-based insert or update of a mapping's rows: `$1` sfids, `$2` stamps (epoch seconds), `$3` created
/// dates, `$4` the rows' ids (an update's), then one text array per column, each value cast to its column's type and
/// assigned. An update whose values equal the row's (the echo of a write pgforce sent) moves the row's
/// `systemmodstamp` and keeps its `_hc_lastop` and `_hc_err`, which tell the write's outcome.
/// `only_changed`: an update writes only the rows whose values differ (a reload re-reads every record).
fn statement(mapping: &Reading, insert: bool, only_changed: bool) -> String {
    let t = &mapping.qualified;
    let synced = LastOp::Synced.as_str();
    let names: Vec<String> = mapping.columns.iter().map(|c| quote_identifier(&c.name)).collect();
    // A relationship by foreign key: the parent's row, found by its sfid (NULL while it has none). The table's owner
    // reads the parent, as a foreign key check would.
    let casts: Vec<String> = mapping
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| match &c.parent {
            Some(p) => format!(
                "(SELECT p.id FROM {} p WHERE p.sfid::pg_catalog.text {EQ} u.c{i} LIMIT 1)::{}",
                p.table, c.type_sql
            ),
            None => format!("u.c{i}::{}", c.type_sql),
        })
        .collect();
    let unnest: Vec<String> = (1..=mapping.columns.len() + 4)
        .map(|n| {
            // $2, the stamps, are epoch seconds, $4 the rows' ids; everything else is text.
            let array = match n {
                2 => "pg_catalog.float8[]",
                4 => "pg_catalog.int8[]",
                _ => "pg_catalog.text[]",
            };
            format!("pg_catalog.unnest(${n}::{array})")
        })
        .collect();
    let aliases: Vec<String> = ["sfid".to_string(), "stamp".into(), "created".into(), "row_id".into()]
        .into_iter()
        .chain((0..mapping.columns.len()).map(|i| format!("c{i}")))
        .collect();
    let from = format!("ROWS FROM ({}) AS u({})", unnest.join(", "), aliases.join(", "));
    let stamp = "(pg_catalog.to_timestamp(u.stamp) AT TIME ZONE 'UTC')";
    let created = "u.created::pg_catalog.timestamp";
    if insert {
        let columns: Vec<String> = ["sfid", "systemmodstamp", "isdeleted", "createddate", "_hc_lastop", "_hc_err"]
            .iter()
            .map(|c| c.to_string())
            .chain(names)
            .collect();
        let values: Vec<String> =
            ["u.sfid".to_string(), stamp.into(), "false".into(), created.into(), format!("'{synced}'"), "NULL".into()]
                .into_iter()
                .chain(casts)
                .collect();
        format!("INSERT INTO {t} ({}) SELECT {} FROM {from}", columns.join(", "), values.join(", "))
    } else {
        let mut pairs: Vec<(String, String)> =
            names.iter().zip(&casts).map(|(n, c)| (format!("t.{n}"), c.clone())).collect();
        pairs.push(("COALESCE(t.isdeleted, false)".into(), "false".into()));
        pairs.push(("t.sfid::pg_catalog.text".into(), "u.sfid".into()));
        let (old, new): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
        let differs = format!("ROW({}) IS DISTINCT FROM ROW({})", old.join(", "), new.join(", "));
        let sets = [
            "sfid = u.sfid".to_string(),
            format!("systemmodstamp = {stamp}"),
            "isdeleted = false".into(),
            format!("createddate = {created}"),
            format!("_hc_lastop = CASE WHEN {differs} THEN '{synced}' ELSE t._hc_lastop END"),
            format!("_hc_err = CASE WHEN {differs} THEN NULL ELSE t._hc_err END"),
        ]
        .into_iter()
        .chain(names.iter().zip(&casts).map(|(n, c)| format!("{n} = {c}")))
        .collect::<Vec<_>>()
        .join(", ");
        let only = if only_changed { format!(" AND {differs}") } else { String::new() };
        format!("UPDATE {t} AS t SET {sets} FROM {from} WHERE t.id {EQ} u.row_id{only}")
    }
}
