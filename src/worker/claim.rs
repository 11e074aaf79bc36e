//! Claiming work from the log (one short transaction): due `NEW` rows become `PENDING`, `IGNORE` rows `IGNORED`,
//! and the mappings they belong to are read with their column types. Records with a retry scheduled for an earlier
//! change are held back so changes never overtake each other.

use std::collections::HashMap;

use pgforce_core::convert::{PgKind, Target};
use pgforce_core::hstore;
use pgforce_core::mapping::is_system_column;
use pgforce_core::plan::{first_per_record, Action, Change, Values};
use pgrx::datum::DatumWithOid;
use pgrx::spi::{SpiClient, SpiResult};

/// A mapped table as the worker sends it.
pub struct Table {
    pub qualified: String,
    pub target: Target,
}

pub struct Claimed {
    /// Changes per log `table_name`, in log order.
    pub changes: HashMap<String, Vec<Change>>,
    pub tables: HashMap<String, Table>,
    pub count: usize,
}

fn values(text: Option<String>) -> Values {
    text.and_then(|t| hstore::parse(&t).ok()).map(|pairs| pairs.into_iter().collect()).unwrap_or_default()
}

/// Claims up to `limit` due rows. Under ordered writes only the oldest change of each record is claimed.
pub fn claim(client: &mut SpiClient<'_>, schema: &str, limit: i64, ordered: bool) -> SpiResult<Claimed> {
    // The worker's own log updates must not wake it again (the wake trigger skips hex writes).
    client.update("SET LOCAL xmlbinary = 'hex'", None, &[])?;
    // `update`, not `select`: SPI runs selects read-only, and FOR UPDATE needs a writable snapshot.
    let rows = client.update(
        &format!(
            "WITH held AS (
                 SELECT DISTINCT table_name, record_id FROM {schema}._trigger_log
                  WHERE state = 'NEW' AND next_attempt_at IS NOT NULL AND next_attempt_at > now())
             SELECT l.id, l.table_name::text, l.record_id, l.action::text, l.state::text, l.sfid::text,
                    l.\"values\"::text, l.old::text, l.attempts
               FROM {schema}._trigger_log l
              WHERE l.state IN ('NEW', 'IGNORE')
                AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= now())
                AND NOT EXISTS (SELECT 1 FROM held h WHERE h.table_name = l.table_name AND h.record_id = l.record_id)
              ORDER BY l.id
              LIMIT $1
              FOR UPDATE OF l SKIP LOCKED"
        ),
        None,
        &[DatumWithOid::from(limit)],
    )?;
    let mut ignored = Vec::new();
    let mut all = Vec::new();
    let mut table_of: HashMap<i64, String> = HashMap::new();
    for row in rows {
        let id: i64 = row.get(1)?.unwrap_or_default();
        let table: String = row.get(2)?.unwrap_or_default();
        let state: String = row.get(5)?.unwrap_or_default();
        let action = row.get::<String>(4)?.as_deref().and_then(Action::parse);
        // A no-op update is done with; an sfid-less delete still cancels an insert claimed with it.
        if state == "IGNORE" && action != Some(Action::Delete) {
            ignored.push(id);
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
        });
    }
    let (now, _later) = if ordered { first_per_record(all) } else { (all, Vec::new()) };
    let tables = load_tables(client, schema)?;
    let mut changes: HashMap<String, Vec<Change>> = HashMap::new();
    let mut orphans = Vec::new();
    let mut pending = Vec::with_capacity(now.len());
    for c in now {
        let table = table_of.get(&c.log_id).cloned().unwrap_or_default();
        if tables.contains_key(&table) {
            pending.push(c.log_id);
            changes.entry(table).or_default().push(c);
        } else {
            orphans.push(c.log_id);
        }
    }
    set_state(client, schema, &pending, "PENDING", None)?;
    set_state(client, schema, &ignored, "IGNORED", None)?;
    set_state(client, schema, &orphans, "FAILED", Some("table is not mapped (salesforce.map_table)"))?;
    let count = pending.len() + ignored.len() + orphans.len();
    Ok(Claimed { changes, tables, count })
}

/// Moves claimed rows to `state`; final states get their processing time, transaction and message.
fn set_state(client: &mut SpiClient<'_>, schema: &str, ids: &[i64], state: &str, message: Option<&str>) -> SpiResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    client.update(
        &format!(
            "UPDATE {schema}._trigger_log
                SET state = $2, sf_message = $3, updated_at = now(),
                    processed_at = CASE WHEN $2 = 'PENDING' THEN NULL ELSE now() END,
                    processed_tx = CASE WHEN $2 = 'PENDING' THEN NULL ELSE txid_current() END
              WHERE id = ANY($1)"
        ),
        None,
        &[DatumWithOid::from(ids.to_vec()), DatumWithOid::from(state), DatumWithOid::from(message)],
    )?;
    Ok(())
}

/// The read-write mappings with the columns they send and how each column's text is read.
fn load_tables(client: &mut SpiClient<'_>, schema: &str) -> SpiResult<HashMap<String, Table>> {
    let rows = client.select(
        &format!(
            "SELECT m.table_name::text, m.relid::regclass::text, m.sobject, m.upsert_field, m.fields,
                    array_agg(a.attname::text ORDER BY a.attnum),
                    array_agg(CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END::text ORDER BY a.attnum)
               FROM {schema}._mapping m
               JOIN pg_catalog.pg_attribute a ON a.attrelid = m.relid AND a.attnum > 0 AND NOT a.attisdropped
               JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
               LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype
              WHERE m.access = 'read_write'
              GROUP BY m.table_name, m.relid, m.sobject, m.upsert_field, m.fields"
        ),
        None,
        &[],
    )?;
    let mut out = HashMap::new();
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
        let upsert_field: Option<String> = row.get(4)?;
        let target = Target { sobject: row.get(3)?.unwrap_or_default(), upsert_field, columns };
        out.insert(name, Table { qualified: row.get(2)?.unwrap_or_default(), target });
    }
    Ok(out)
}

/// Fills in the current `sfid` of rows whose log entries carry none (an earlier insert's write-back arrived after
/// they were captured).
pub fn current_sfids(client: &mut SpiClient<'_>, table: &Table, record_ids: Vec<i64>) -> SpiResult<HashMap<i64, String>> {
    if record_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = client.select(
        &format!("SELECT id::bigint, sfid::text FROM {} WHERE id = ANY($1) AND sfid IS NOT NULL", table.qualified),
        None,
        &[DatumWithOid::from(record_ids)],
    )?;
    let mut out = HashMap::new();
    for row in rows {
        if let (Some(id), Some(sfid)) = (row.get::<i64>(1)?, row.get::<String>(2)?) {
            out.insert(id, sfid);
        }
    }
    Ok(out)
}
