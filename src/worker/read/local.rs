//! What the table and the trigger log hold of a page's records, before the page is applied: each record's row (by
//! `sfid`, else by the mapping's upsert field), its stamp and delete flag, and, on a mapping that also sends, whether
//! a local change of it is still on its way (the row keeps its values) or an insert of it may be in flight (the
//! read waits). The table is read as its owner; the log as the sync engine (the owner cannot read it).

use std::collections::{HashMap, HashSet};

use pgforce_core::log::{sql_list, LastOp, LogState};
use pgforce_core::read::apply::Local;
use pgforce_core::read::page::Page;
use pgforce_core::read::values::column_text;
use pgrx::datum::DatumWithOid;
use pgrx::spi::{quote_identifier, SpiClient};

use super::Reading;
use crate::engine::owner::as_table_owner;
use crate::worker::error::WorkerError;

const EQ: &str = "OPERATOR(pg_catalog.=)";

/// A record's row as the table holds it.
#[derive(Clone, Copy, Default)]
pub(super) struct Found {
    /// The row's `id`; `None`: no row has the record.
    pub row: Option<i64>,
    pub local: Local,
}

/// What the table holds of each record of `page`, by the record's Id. `user`: the integration user's Id (records it
/// created may be inserts in flight).
pub(super) fn lookup(
    client: &mut SpiClient<'_>,
    schema: &str,
    mapping: &Reading,
    page: &Page,
    user: Option<&str>,
) -> Result<HashMap<String, Found>, WorkerError> {
    let sfids: Vec<String> = page.records.iter().map(|r| r.id.clone()).collect();
    let mut found: HashMap<String, Found> = HashMap::new();
    let mut last_failed: Vec<i64> = Vec::new();
    let t = &mapping.qualified;
    let failed = LastOp::Failed.as_str();
    // Rows by sfid, then rows without one by the upsert field (an insert of the row reached Salesforce, and its
    // answer did not come back or is not written yet): the record is that row's, never a second row.
    let by_key: HashMap<String, String> = match &mapping.upsert_field {
        Some(field) => {
            let kind = mapping.columns.iter().find(|c| &c.name == field).map(|c| c.kind);
            page.records
                .iter()
                .filter_map(|r| {
                    let value = r.fields.get(&field.to_ascii_lowercase())?;
                    let text = column_text(kind?, value).ok()??;
                    Some((text, r.id.clone()))
                })
                .collect()
        }
        None => HashMap::new(),
    };
    as_table_owner(mapping.owner, || -> Result<(), WorkerError> {
        let rows = client.select(
            &format!(
                "SELECT t.sfid::pg_catalog.text, t.id::pg_catalog.int8,
                        (EXTRACT(epoch FROM t.systemmodstamp))::pg_catalog.int8, COALESCE(t.isdeleted, false),
                        t._hc_lastop::pg_catalog.text IS NOT DISTINCT FROM '{failed}'
                   FROM {t} t WHERE t.sfid::pg_catalog.text {EQ} ANY ($1)"
            ),
            None,
            &[DatumWithOid::from(sfids.clone())],
        )?;
        for row in rows {
            let sfid: String = row.get(1)?.unwrap_or_default();
            let id: Option<i64> = row.get(2)?;
            let local =
                Local { exists: true, stamp: row.get(3)?, flagged: row.get(4)?.unwrap_or(false), ..Local::default() };
            if row.get(5)?.unwrap_or(false) {
                last_failed.extend(id);
            }
            found.insert(sfid, Found { row: id, local });
        }
        let keys: Vec<String> =
            by_key.iter().filter(|(_, sfid)| !found.contains_key(*sfid)).map(|(k, _)| k.clone()).collect();
        if let (Some(field), false) = (&mapping.upsert_field, keys.is_empty()) {
            let column = quote_identifier(field);
            let rows = client.select(
                &format!(
                    "SELECT t.{column}::pg_catalog.text, t.id::pg_catalog.int8,
                            t._hc_lastop::pg_catalog.text IS NOT DISTINCT FROM '{failed}'
                       FROM {t} t WHERE t.sfid IS NULL AND t.{column}::pg_catalog.text {EQ} ANY ($1)"
                ),
                None,
                &[DatumWithOid::from(keys)],
            )?;
            for row in rows {
                let key: String = row.get(1)?.unwrap_or_default();
                let id: Option<i64> = row.get(2)?;
                if row.get(3)?.unwrap_or(false) {
                    last_failed.extend(id);
                }
                if let Some(sfid) = by_key.get(&key) {
                    found.insert(sfid.clone(), Found { row: id, local: Local { exists: true, ..Local::default() } });
                }
            }
        }
        Ok(())
    })?;
    if !mapping.sends {
        return Ok(found);
    }
    // A local change on its way wins over the read: the row's changes not yet delivered, or its latest failed.
    let ids: Vec<i64> = found.values().filter_map(|f| f.row).collect();
    let pending = pending_rows(client, schema, mapping, &ids, &last_failed)?;
    for f in found.values_mut() {
        f.local.pending = f.row.is_some_and(|id| pending.contains(&id));
    }
    // A delete on its way: the record is not brought back.
    let unmatched: Vec<String> = sfids.iter().filter(|s| !found.contains_key(*s)).cloned().collect();
    if !unmatched.is_empty() {
        for sfid in pending_deletes(client, schema, mapping, &unmatched)? {
            found.insert(sfid, Found { row: None, local: Local { pending: true, ..Local::default() } });
        }
    }
    let ours: Vec<&String> = page
        .records
        .iter()
        .filter(|r| !found.contains_key(&r.id))
        .filter(|r| user.is_some_and(|u| r.fields.get("createdbyid").and_then(|v| v.as_str()) == Some(u)))
        .map(|r| &r.id)
        .collect();
    if !ours.is_empty() && inserts_in_flight(client, schema, mapping)? {
        for sfid in ours {
            found.insert(sfid.clone(), Found { row: None, local: Local { maybe_in_flight: true, ..Local::default() } });
        }
    }
    Ok(found)
}

/// Of the rows `ids`, those with changes not yet delivered (`NEW`, `PENDING`, a scheduled retry, `IGNORE` not yet
/// looked at), and of `failed` (rows whose `_hc_lastop` says their last write failed), those whose failed entry is
/// still in the live log: an operator ends it by fixing the row, retrying it, or once it is archived.
pub(super) fn pending_rows(
    client: &mut SpiClient<'_>,
    schema: &str,
    mapping: &Reading,
    ids: &[i64],
    failed: &[i64],
) -> Result<HashSet<i64>, WorkerError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = client.select(
        &format!(
            "SELECT l.record_id FROM {schema}._trigger_log l
              WHERE l.relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass
                AND l.state::pg_catalog.text {EQ} ANY (ARRAY[{queued}]::pg_catalog.text[])
                AND l.record_id {EQ} ANY ($2::pg_catalog.int8[])
             UNION
             SELECT l.record_id FROM {schema}._trigger_log l
              WHERE l.table_name::pg_catalog.text {EQ} $4 AND l.state::pg_catalog.text {EQ} '{failed}'
                AND l.relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass
                AND l.record_id {EQ} ANY ($3::pg_catalog.int8[])",
            queued = sql_list(&LogState::QUEUED),
            failed = LogState::Failed.as_str(),
        ),
        None,
        &[
            DatumWithOid::from(mapping.relid),
            DatumWithOid::from(ids.to_vec()),
            DatumWithOid::from(failed.to_vec()),
            DatumWithOid::from(mapping.table_name.as_str()),
        ],
    )?;
    let mut out = HashSet::new();
    for row in rows {
        out.extend(row.get::<i64>(1)?);
    }
    Ok(out)
}

/// Of `sfids` (records no row has), those whose row's delete is on its way or failed.
fn pending_deletes(
    client: &mut SpiClient<'_>,
    schema: &str,
    mapping: &Reading,
    sfids: &[String],
) -> Result<Vec<String>, WorkerError> {
    let rows = client.select(
        &format!(
            "SELECT l.sfid::pg_catalog.text FROM {schema}._trigger_log l
              WHERE l.relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass
                AND l.state::pg_catalog.text {EQ} ANY (ARRAY[{queued}]::pg_catalog.text[])
                AND l.action::pg_catalog.text {EQ} 'DELETE' AND l.sfid::pg_catalog.text {EQ} ANY ($2)
             UNION
             SELECT l.sfid::pg_catalog.text FROM {schema}._trigger_log l
              WHERE l.table_name::pg_catalog.text {EQ} $3 AND l.state::pg_catalog.text {EQ} '{failed}'
                AND l.relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass
                AND l.action::pg_catalog.text {EQ} 'DELETE' AND l.sfid::pg_catalog.text {EQ} ANY ($2)",
            queued = sql_list(&LogState::QUEUED),
            failed = LogState::Failed.as_str(),
        ),
        None,
        &[
            DatumWithOid::from(mapping.relid),
            DatumWithOid::from(sfids.to_vec()),
            DatumWithOid::from(mapping.table_name.as_str()),
        ],
    )?;
    let mut out = Vec::new();
    for row in rows {
        out.extend(row.get::<String>(1)?);
    }
    Ok(out)
}

/// Whether the mapping has writes of rows without an sfid that may have created a record whose Id is not written
/// back yet: in a running Bulk job (`PENDING`), or sent without an answer (`in_doubt_since`).
fn inserts_in_flight(client: &mut SpiClient<'_>, schema: &str, mapping: &Reading) -> Result<bool, WorkerError> {
    Ok(client
        .select(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {schema}._trigger_log l
                                 WHERE l.relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass
                                   AND l.state::pg_catalog.text {EQ} ANY (ARRAY[{queued}]::pg_catalog.text[])
                                   AND l.sfid IS NULL AND l.action::pg_catalog.text OPERATOR(pg_catalog.<>) 'DELETE'
                                   AND (l.state::pg_catalog.text {EQ} '{pending}' OR l.in_doubt_since IS NOT NULL))",
                queued = sql_list(&LogState::QUEUED),
                pending = LogState::Pending.as_str(),
            ),
            Some(1),
            &[DatumWithOid::from(mapping.relid)],
        )?
        .first()
        .get(1)?
        .unwrap_or(false))
}
