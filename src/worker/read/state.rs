//! The read state: which mappings read and where each stands (`_read_state`), as the read pipeline reads and
//! records it, apart from the pages it applies.

use pgforce_core::alert::AlertKind;
use pgforce_core::mapping::{Access, PgKind};
use pgforce_core::read::apply::OnDelete;
use pgforce_core::read::{Position, ReadState};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::spi::SpiClient;

use super::{BulkLoad, Column, Parent, Reading};
use crate::worker::engine::Engine;
use crate::worker::error::WorkerError;

const EQ: &str = "OPERATOR(pg_catalog.=)";

/// The mappings that read (read_only, read_write), with their positions and the columns they read (system columns are read apart).
pub(super) fn readings(client: &mut SpiClient<'_>, schema: &str) -> Result<Vec<Reading>, WorkerError> {
    let rows = client.select(
        &format!(
            "SELECT m.relid::pg_catalog.oid, m.relid::pg_catalog.regclass::pg_catalog.text, m.sobject, c.relowner,
                    m.paused_at IS NOT NULL, (EXTRACT(epoch FROM r.position_stamp))::pg_catalog.int8,
                    r.position_id::pg_catalog.text,
                    pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY a.attnum),
                    pg_catalog.array_agg(CASE WHEN t.typtype {EQ} 'd' THEN bt.typname ELSE t.typname END::pg_catalog.text
                                         ORDER BY a.attnum),
                    pg_catalog.array_agg(pg_catalog.format_type(a.atttypid, NULL) ORDER BY a.attnum),
                    (EXTRACT(epoch FROM m.read_interval))::pg_catalog.float8, m.on_delete,
                    r.reloading_since IS NOT NULL, m.table_name::pg_catalog.text, r.generation,
                    m.access {EQ} 'read_write', m.upsert_field,
                    (EXTRACT(epoch FROM r.swept_to))::pg_catalog.int8,
                    (EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) r.compared_at))::pg_catalog.float8,
                    (EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) coalesce(r.read_at, m.updated_at)))::pg_catalog.float8,
                    r.bulk_job::pg_catalog.text, r.bulk_locator, (EXTRACT(epoch FROM r.bulk_since))::pg_catalog.int8,
                    -- relationships by foreign key: the lookup field each such column reads, and its parent table
                    pg_catalog.array_agg(m.relationships OPERATOR(pg_catalog.->>) a.attname::pg_catalog.text
                                         ORDER BY a.attnum),
                    pg_catalog.array_agg((SELECT k.confrelid::pg_catalog.regclass::pg_catalog.text
                                            FROM pg_catalog.pg_constraint k
                                           WHERE k.conrelid {EQ} m.relid AND k.contype {EQ} 'f'
                                             AND k.conkey {EQ} ARRAY[a.attnum]
                                           LIMIT 1) ORDER BY a.attnum)
               FROM {schema}._mapping m
               JOIN {schema}._read_state r ON r.relid {EQ} m.relid
               JOIN pg_catalog.pg_class c ON c.oid {EQ} m.relid
               JOIN pg_catalog.pg_attribute a ON a.attrelid {EQ} m.relid AND a.attnum OPERATOR(pg_catalog.>) 0
                                              AND NOT a.attisdropped
                                              AND (a.attname::pg_catalog.text {EQ} ANY (m.fields)
                                                   OR m.relationships OPERATOR(pg_catalog.?) a.attname::pg_catalog.text)
               JOIN pg_catalog.pg_type t ON t.oid {EQ} a.atttypid
               LEFT JOIN pg_catalog.pg_type bt ON bt.oid {EQ} t.typbasetype
              WHERE m.access {EQ} ANY (ARRAY['{read_only}', '{read_write}'])
              GROUP BY m.relid, m.sobject, c.relowner, m.paused_at, r.position_stamp, r.position_id,
                       m.read_interval, m.on_delete, r.reloading_since, m.table_name, r.generation, m.access,
                       m.upsert_field, r.swept_to, r.compared_at, r.read_at, m.updated_at,
                       r.bulk_job, r.bulk_locator, r.bulk_since, m.relationships
              ORDER BY m.relid",
            read_only = Access::ReadOnly.as_str(),
            read_write = Access::ReadWrite.as_str(),
        ),
        None,
        &[],
    )?;
    let mut out = Vec::new();
    for row in rows {
        let names: Vec<String> = row.get(8)?.unwrap_or_default();
        let kinds: Vec<String> = row.get(9)?.unwrap_or_default();
        let types: Vec<String> = row.get(10)?.unwrap_or_default();
        let lookups: Vec<Option<String>> = row.get(24)?.unwrap_or_default();
        let parents: Vec<Option<String>> = row.get(25)?.unwrap_or_default();
        let columns = names
            .into_iter()
            .zip(kinds)
            .zip(types)
            .zip(lookups.into_iter().zip(parents))
            .filter(|(((name, _), _), _)| !pgforce_core::mapping::is_system_column(name))
            .map(|(((name, kind), type_sql), (lookup, parent))| Column {
                name,
                kind: PgKind::from_type_name(&kind),
                type_sql,
                parent: lookup.zip(parent).map(|(field, table)| Parent { field, table }),
            })
            .collect();
        out.push(Reading {
            relid: row.get(1)?.unwrap_or(pg_sys::Oid::INVALID),
            qualified: row.get(2)?.unwrap_or_default(),
            sobject: row.get(3)?.unwrap_or_default(),
            owner: row.get(4)?.unwrap_or(pg_sys::Oid::INVALID),
            paused: row.get(5)?.unwrap_or(false),
            position: Position { stamp: row.get(6)?, id: row.get(7)? },
            columns,
            interval: row.get::<f64>(11)?.map(|s| std::time::Duration::from_secs_f64(s.max(1.0))),
            on_delete: row.get::<String>(12)?.and_then(|o| OnDelete::parse(&o)).unwrap_or(OnDelete::Delete),
            reloading: row.get(13)?.unwrap_or(false),
            table_name: row.get(14)?.unwrap_or_default(),
            generation: row.get(15)?.unwrap_or(0),
            sends: row.get(16)?.unwrap_or(false),
            upsert_field: row.get(17)?,
            swept_to: row.get(18)?,
            compared_ago: row.get::<f64>(19)?.map(|s| std::time::Duration::from_secs_f64(s.max(0.0))),
            lag: row.get::<f64>(20)?.map(|s| std::time::Duration::from_secs_f64(s.max(0.0))),
            bulk: row
                .get::<String>(21)?
                .map(|job| -> Result<BulkLoad, WorkerError> {
                    Ok(BulkLoad { job, locator: row.get(22)?, since: row.get(23)?.unwrap_or_default() })
                })
                .transpose()?,
        });
    }
    Ok(out)
}

/// Starts the mapping's read over from the first record, as `salesforce.reload()` does (rows are written where they
/// differ, and those whose records are gone deleted at the end): when the delete log has a gap, and periodically
/// (`pgforce.compare_interval`), to find what no poll shows.
pub(super) fn start_over(client: &mut SpiClient<'_>, schema: &str, relid: pg_sys::Oid) -> Result<(), WorkerError> {
    client.update(
        &format!(
            "UPDATE {schema}._read_state r
                SET state = '{reload}', position_stamp = NULL, position_id = NULL, reloading_since = pg_catalog.now(),
                    bulk_job = NULL, bulk_locator = NULL, bulk_since = NULL,
                    generation = r.generation OPERATOR(pg_catalog.+) 1
              WHERE r.relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass",
            reload = ReadState::ReloadTable.as_str(),
        ),
        None,
        &[DatumWithOid::from(relid)],
    )?;
    client.update(
        &format!("DELETE FROM {schema}._read_seen s WHERE s.relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass"),
        None,
        &[DatumWithOid::from(relid)],
    )?;
    Ok(())
}

/// Records the Bulk query job a load reads (`None`: none any more, the load starts over at the next turn) and when
/// it was asked for (seconds since 1970 UTC), if the read did not start over since `generation`.
pub(super) fn record_bulk_job(
    client: &mut SpiClient<'_>,
    schema: &str,
    mapping: &Reading,
    job: Option<&str>,
    since: i64,
) -> Result<(), WorkerError> {
    client.update(
        &format!(
            "UPDATE {schema}._read_state
                SET bulk_job = $2, bulk_locator = NULL,
                    bulk_since = CASE WHEN $2 IS NULL THEN NULL
                                      ELSE pg_catalog.to_timestamp($3::pg_catalog.float8) AT TIME ZONE 'UTC' END
              WHERE relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass AND generation {EQ} $4"
        ),
        None,
        &[
            DatumWithOid::from(mapping.relid),
            DatumWithOid::from(job),
            DatumWithOid::from(since as f64),
            DatumWithOid::from(mapping.generation),
        ],
    )?;
    Ok(())
}

/// Records where the next delete sweep starts (seconds since 1970 UTC).
pub(super) fn record_swept(
    client: &mut SpiClient<'_>,
    schema: &str,
    relid: pg_sys::Oid,
    to: i64,
) -> Result<(), WorkerError> {
    client.update(
        &format!(
            "UPDATE {schema}._read_state
                SET swept_to = pg_catalog.to_timestamp($2::pg_catalog.float8) AT TIME ZONE 'UTC'
              WHERE relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass"
        ),
        None,
        &[DatumWithOid::from(relid), DatumWithOid::from(to as f64)],
    )?;
    Ok(())
}

/// Resolves the open `read_stalled` alerts of `tables` (they caught up).
pub(super) fn resolve_read_alerts(
    client: &mut SpiClient<'_>,
    schema: &str,
    tables: &[String],
) -> Result<(), WorkerError> {
    client.update(
        &format!(
            "UPDATE {schema}.sync_alerts a SET resolved_at = pg_catalog.now()
              WHERE a.resolved_at IS NULL AND a.kind {EQ} '{kind}' AND a.tables OPERATOR(pg_catalog.<@) $1",
            kind = AlertKind::ReadStalled.as_str(),
        ),
        None,
        &[DatumWithOid::from(tables.to_vec())],
    )?;
    Ok(())
}

/// Records `message` as why `relid`'s read failed (for `sync_status`), in a transaction of its own, and returns it.
pub(super) fn failed(engine: &mut Engine, relid: pg_sys::Oid, message: String) -> String {
    let _ = engine.with_statements(|c, st| record_error(c, &st.schema, relid, &message));
    message
}

/// Records why a read failed, for `sync_status`.
pub(super) fn record_error(
    client: &mut SpiClient<'_>,
    schema: &str,
    relid: pg_sys::Oid,
    message: &str,
) -> Result<(), WorkerError> {
    client.update(
        &format!(
            "UPDATE {schema}._read_state SET last_error = $2 WHERE relid {EQ} $1::pg_catalog.oid::pg_catalog.regclass"
        ),
        None,
        &[DatumWithOid::from(relid), DatumWithOid::from(message)],
    )?;
    Ok(())
}
