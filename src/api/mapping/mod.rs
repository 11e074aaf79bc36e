//! `salesforce.map_table` / `salesforce.unmap_table`: turn a table into a synced one and back.
//!
//! Mapping checks the table, adds the system columns it lacks (`id`, `sfid` with a unique index, `_hc_lastop`,
//! `_hc_err`), installs the capture triggers and records the mapping, all in the caller's transaction, so an
//! error leaves nothing half-done. Every identifier is quoted by Postgres and every value bound as a parameter.

// ErrorReport is how pgrx carries an SQLSTATE, message and hint to the caller; its size does not matter here.
#![allow(clippy::result_large_err)]

use pgforce_core::log::LastOp;
use pgforce_core::mapping::{check_salesforce_name, is_system_column, relationship_column, Access};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, SpiClient};

use crate::capture::{NEW_ROWS, OLD_ROWS};
use crate::engine::owner::as_table_owner;
use crate::error::PgforceError;

mod relationships;
mod table;

use relationships::{bad_relationship, check_relationships};
use table::{add_read_columns, add_system_columns, check_kind, drop_triggers, install_triggers, start_reading};
use table::{reading, table_info, TableInfo, INTEGER_TYPES};

type Result<T> = std::result::Result<T, PgforceError>;

/// The mapping function of release 0.1.0's SQL (kept: a library serves the SQL of the release it is installed with
/// until `ALTER EXTENSION pgforce UPDATE`).
#[pg_extern]
fn _map_table(
    tbl: Option<pg_sys::Oid>,
    sobject: Option<&str>,
    mode: Option<&str>,
    upsert_field: Option<&str>,
    fields: Option<Vec<Option<String>>>,
) -> std::result::Result<(), ErrorReport> {
    _map_table_with_relationships(tbl, sobject, mode, upsert_field, fields, None)
}

#[pg_extern]
fn _map_table_with_relationships(
    tbl: Option<pg_sys::Oid>,
    sobject: Option<&str>,
    mode: Option<&str>,
    upsert_field: Option<&str>,
    fields: Option<Vec<Option<String>>>,
    relationships: Option<pgrx::JsonB>,
) -> std::result::Result<(), ErrorReport> {
    let tbl = tbl.ok_or(PgforceError::NullArgument("tbl"))?;
    let sobject = sobject.ok_or(PgforceError::NullArgument("sobject"))?;
    let mode = mode.ok_or(PgforceError::NullArgument("mode"))?;
    let relationships = relationships.map(|j| j.0);
    Spi::connect_mut(|client| map_table(client, tbl, sobject, mode, upsert_field, fields, relationships))
        .map_err(ErrorReport::from)
}

/// `salesforce.alter_mapping`: NULL arguments keep what the mapping has.
#[pg_extern]
fn _alter_mapping(
    tbl: Option<pg_sys::Oid>,
    fields: Option<Vec<Option<String>>>,
    upsert_field: Option<&str>,
    mode: Option<&str>,
    relationships: Option<pgrx::JsonB>,
) -> std::result::Result<(), ErrorReport> {
    let tbl = tbl.ok_or(PgforceError::NullArgument("tbl"))?;
    let relationships = relationships.map(|j| j.0);
    Spi::connect_mut(|client| alter_mapping(client, tbl, fields, upsert_field, mode, relationships))
        .map_err(ErrorReport::from)
}

#[pg_extern]
fn _unmap_table(tbl: Option<pg_sys::Oid>) -> std::result::Result<(), ErrorReport> {
    let tbl = tbl.ok_or(PgforceError::NullArgument("tbl"))?;
    Spi::connect_mut(|client| unmap_table(client, tbl)).map_err(ErrorReport::from)
}

/// What a mapping is to be, checked against its table: map_table records it, alter_mapping changes to it.
struct MappingPlan {
    access: Access,
    fields: Vec<String>,
    /// (foreign key column, lookup field)
    links: Vec<(String, String)>,
}

impl MappingPlan {
    fn relationships(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.links.iter().map(|(c, f)| (c.clone(), serde_json::Value::String(f.clone()))).collect(),
        )
    }
}

/// Checks a mapping's mode, fields, upsert field and relationships against the table. `explicit`: the caller named
/// the fields (a relationship column among them is refused); otherwise relationship columns are left out of them.
#[allow(clippy::too_many_arguments)]
fn plan_mapping(
    client: &SpiClient,
    schema: &str,
    tbl: pg_sys::Oid,
    table: &TableInfo,
    mode: &str,
    upsert_field: Option<&str>,
    fields: Option<Vec<Option<String>>>,
    explicit: bool,
    relationships: Option<serde_json::Value>,
) -> Result<MappingPlan> {
    let access: Access = mode.parse().map_err(|_| PgforceError::BadMode(mode.to_string()))?;
    let links = check_relationships(client, schema, tbl, table, relationships)?;
    let mut fields = choose_fields(table, fields, upsert_field)?;
    // A foreign key column holds a row id, never sent as itself: it is sent as the parent's sfid in its lookup.
    if let Some((column, _)) = links.iter().find(|(c, _)| explicit && fields.contains(c)) {
        return Err(bad_relationship(
            table,
            column,
            "it is in fields too".into(),
            "A relationship column is sent as its lookup field only: leave it out of fields.".into(),
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        ));
    }
    fields.retain(|f| !links.iter().any(|(c, _)| c == f));
    if fields.is_empty() {
        return Err(PgforceError::NoFields { table: table.qualified.clone() });
    }
    Ok(MappingPlan { access, fields, links })
}

fn map_table(
    client: &mut SpiClient,
    tbl: pg_sys::Oid,
    sobject: &str,
    mode: &str,
    upsert_field: Option<&str>,
    fields: Option<Vec<Option<String>>>,
    relationships: Option<serde_json::Value>,
) -> Result<()> {
    check_salesforce_name(sobject).map_err(PgforceError::BadSobject)?;
    let table = table_info(client, tbl)?;
    check_owner(client, tbl, &table)?;
    check_kind(&table)?;
    let schema = extension_schema(client)?;
    check_not_mapped(client, &schema, tbl, &table)?;
    let explicit = fields.is_some();
    let plan = plan_mapping(client, &schema, tbl, &table, mode, upsert_field, fields, explicit, relationships)?;
    let MappingPlan { access, ref fields, ref links } = plan;
    let relationships = plan.relationships();
    add_system_columns(client, &table)?;
    if access.reads() {
        add_read_columns(client, &table)?;
        start_reading(client, &schema, tbl)?;
    }
    install_triggers(client, &schema, &table, access)?;

    client.update(
        &format!(
            "INSERT INTO {schema}._mapping (table_name, relid, sobject, access, upsert_field, fields) \
             VALUES ($1, $2::pg_catalog.oid::pg_catalog.regclass, $3, $4, $5, $6)"
        ),
        None,
        &[
            DatumWithOid::from(table.relname.as_str()),
            DatumWithOid::from(tbl),
            DatumWithOid::from(sobject),
            DatumWithOid::from(access.as_str()),
            DatumWithOid::from(upsert_field),
            DatumWithOid::from(fields.clone()),
        ],
    )?;
    // Written only when there are any: release 0.1.0's schema, which this library serves until the update, has no
    // such column.
    if !links.is_empty() {
        client.update(
            &format!(
                "UPDATE {schema}._mapping SET relationships = $2 \
                  WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid::pg_catalog.regclass"
            ),
            None,
            &[DatumWithOid::from(tbl), DatumWithOid::from(pgrx::JsonB(relationships))],
        )?;
    }

    if access.sends() && upsert_field.is_none() {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!(
                "{} has no upsert field: an insert whose answer was lost (a timeout, a crash) is looked for in Salesforce before it is sent again, which has limits",
                table.qualified
            ),
            "pgforce",
        )
        .set_hint("Map it with upsert_field => '<unique external id field>' and fill that column on insert, as Heroku Connect advises (docs/internals.md: \"Inserts in doubt never duplicate\").")
        .report(PgLogLevel::WARNING);
    }
    if access.sends() {
        report_unsent_rows(client, tbl, &table)?;
    }
    pgrx::notice!(
        "pgforce: {} is mapped to {sobject} ({access}, {} field{}{})",
        table.qualified,
        fields.len(),
        if fields.len() == 1 { "" } else { "s" },
        upsert_field.map(|f| format!(", upsert field {f}")).unwrap_or_default()
    );
    Ok(())
}

/// Changes a mapping in place: what is not given stays (an empty upsert_field removes it). The mapping's pause, its
/// queue, its statistics and its creation time stay too: changes already captured go out under the new fields,
/// and a mode of read_only holds them until the mapping writes again.
fn alter_mapping(
    client: &mut SpiClient,
    tbl: pg_sys::Oid,
    fields: Option<Vec<Option<String>>>,
    upsert_field: Option<&str>,
    mode: Option<&str>,
    relationships: Option<serde_json::Value>,
) -> Result<()> {
    let table = table_info(client, tbl)?;
    check_owner(client, tbl, &table)?;
    let schema = extension_schema(client)?;
    let current = client
        .select(
            &format!(
                "SELECT sobject, access, upsert_field, fields, relationships FROM {schema}._mapping \
                  WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid::pg_catalog.regclass"
            ),
            Some(1),
            &[DatumWithOid::from(tbl)],
        )?
        .next()
        .map(|r| -> Result<_> {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?,
                r.get::<Vec<Option<String>>>(4)?.unwrap_or_default(),
                r.get::<pgrx::JsonB>(5)?.map(|j| j.0),
            ))
        })
        .transpose()?;
    let Some((sobject, old_access, old_upsert, old_fields, old_relationships)) = current else {
        return Err(PgforceError::NotMapped(table.qualified));
    };
    let explicit = fields.is_some();
    let upsert_field = match upsert_field {
        None => old_upsert.clone(),
        Some("") => None,
        Some(field) => Some(field.to_string()),
    };
    let mode = mode.unwrap_or(&old_access);
    let plan = plan_mapping(
        client,
        &schema,
        tbl,
        &table,
        mode,
        upsert_field.as_deref(),
        Some(fields.unwrap_or(old_fields)),
        explicit,
        relationships.or(old_relationships),
    )?;
    if plan.access.as_str() != old_access {
        drop_triggers(client, &table)?;
        install_triggers(client, &schema, &table, plan.access)?;
    }
    // A mapping made to read (read_only, read_write) starts reading; so does a reading one that does not read yet
    // (mapped before reading existed: alter_mapping(tbl, mode => 'read_only') is how it starts).
    let read_before = old_access.parse::<Access>().is_ok_and(Access::reads);
    if plan.access.reads() && (!read_before || !reading(client, &schema, tbl)?) {
        add_read_columns(client, &table)?;
        start_reading(client, &schema, tbl)?;
    }
    client.update(
        &format!(
            "UPDATE {schema}._mapping SET access = $2, upsert_field = $3, fields = $4, relationships = $5, \
                    updated_at = pg_catalog.now() \
              WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid::pg_catalog.regclass"
        ),
        None,
        &[
            DatumWithOid::from(tbl),
            DatumWithOid::from(plan.access.as_str()),
            DatumWithOid::from(upsert_field.as_deref()),
            DatumWithOid::from(plan.fields.clone()),
            DatumWithOid::from(pgrx::JsonB(plan.relationships())),
        ],
    )?;
    if plan.access.sends() && upsert_field.is_none() && old_upsert.is_some() {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!(
                "{} has no upsert field any more: inserts in doubt are looked for in Salesforce, which has limits",
                table.qualified
            ),
            "pgforce",
        )
        .set_hint("docs/internals.md: \"Inserts in doubt never duplicate\".")
        .report(PgLogLevel::WARNING);
    }
    pgrx::notice!(
        "pgforce: the mapping of {} to {sobject} is now {}, {} field{}{}{}; its pause and its queue are kept",
        table.qualified,
        plan.access,
        plan.fields.len(),
        if plan.fields.len() == 1 { "" } else { "s" },
        upsert_field.as_deref().map(|f| format!(", upsert field {f}")).unwrap_or_default(),
        if plan.links.is_empty() { String::new() } else { format!(", {} relationship(s)", plan.links.len()) },
    );
    Ok(())
}

fn unmap_table(client: &mut SpiClient, tbl: pg_sys::Oid) -> Result<()> {
    let table = table_info(client, tbl)?;
    check_owner(client, tbl, &table)?;
    let schema = extension_schema(client)?;
    let removed = client.update(
        &format!("DELETE FROM {schema}._mapping WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid"),
        None,
        &[DatumWithOid::from(tbl)],
    )?;
    if removed.is_empty() {
        return Err(PgforceError::NotMapped(table.qualified));
    }
    drop_triggers(client, &table)?;
    pgrx::notice!("pgforce: {} is no longer mapped; its columns and trigger log rows are kept", table.qualified);
    Ok(())
}

/// Rows that were there before the mapping are not captured: says how many have no sfid, and how to send them
/// (Heroku Connect's repair function). Counted as the table's owner, as pgforce reads every user table.
fn report_unsent_rows(client: &mut SpiClient, tbl: pg_sys::Oid, table: &TableInfo) -> Result<()> {
    let owner: pg_sys::Oid = client
        .select(
            "SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1",
            Some(1),
            &[DatumWithOid::from(tbl)],
        )?
        .first()
        .get(1)?
        .unwrap_or(pg_sys::Oid::INVALID);
    let sql = format!("SELECT pg_catalog.count(*) FROM {} WHERE sfid IS NULL", table.qualified);
    let unsent: i64 =
        as_table_owner(owner, || client.select(&sql, None, &[]).and_then(|r| r.first().get::<i64>(1)))?.unwrap_or(0);
    if unsent > 0 {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!(
                "pgforce: {unsent} row{} of {} {} no sfid: rows already there are sent only when they change",
                if unsent == 1 { "" } else { "s" },
                table.qualified,
                if unsent == 1 { "has" } else { "have" }
            ),
            "pgforce",
        )
        .set_hint(format!(
            "To send them now: SELECT salesforce.hc_capture_insert_from_row(hstore(t.*), '{}') FROM {} t WHERE t.sfid IS NULL;",
            table.relname.replace('\'', "''"),
            table.qualified
        ))
        .report(PgLogLevel::NOTICE);
    }
    Ok(())
}

/// map_table and unmap_table run as the extension's owner (SECURITY DEFINER), for superusers and for roles a
/// superuser granted them to: such a role may (un)map only tables it owns. The role is the one that called the SQL
/// function (`GetOuterUserId`: SET ROLE counts, the SECURITY DEFINER switch does not).
fn check_owner(client: &SpiClient, tbl: pg_sys::Oid, table: &TableInfo) -> Result<()> {
    // SAFETY: reads this backend's user identity.
    let caller = unsafe { pg_sys::GetOuterUserId() };
    let allowed: bool = client
        .select(
            "SELECT pg_catalog.pg_has_role($1, c.relowner, 'USAGE') OR r.rolsuper \
               FROM pg_catalog.pg_class c, pg_catalog.pg_roles r WHERE c.oid OPERATOR(pg_catalog.=) $2 \
                AND r.oid OPERATOR(pg_catalog.=) $1",
            Some(1),
            &[DatumWithOid::from(caller), DatumWithOid::from(tbl)],
        )?
        .first()
        .get(1)?
        .unwrap_or(false);
    if allowed {
        Ok(())
    } else {
        Err(PgforceError::NotOwner { table: table.qualified.clone() })
    }
}

/// Whether the installed schema has the read path's state. Release 0.1.0's schema, which this library serves until
/// `ALTER EXTENSION pgforce UPDATE`, has none: nothing reads then.
pub(crate) fn reads_installed(client: &SpiClient, schema: &str) -> std::result::Result<bool, pgrx::spi::Error> {
    Ok(client
        .select(&format!("SELECT pg_catalog.to_regclass('{schema}._read_state') IS NOT NULL"), Some(1), &[])?
        .first()
        .get::<bool>(1)?
        .unwrap_or(false))
}

pub(crate) fn extension_schema(client: &SpiClient) -> Result<String> {
    let name: Option<String> = client
        .select(
            "SELECT n.nspname::pg_catalog.text FROM pg_catalog.pg_extension e \
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace WHERE e.extname OPERATOR(pg_catalog.=) 'pgforce'",
            Some(1),
            &[],
        )?
        .first()
        .get(1)?;
    Ok(quote_identifier(name.unwrap_or_else(|| "salesforce".into())))
}

fn check_not_mapped(client: &SpiClient, schema: &str, tbl: pg_sys::Oid, table: &TableInfo) -> Result<()> {
    let rows = client.select(
        &format!(
            "SELECT relid::pg_catalog.oid OPERATOR(pg_catalog.=) $1, relid::pg_catalog.text, sobject FROM {schema}._mapping \
              WHERE relid OPERATOR(pg_catalog.=) $1 OR table_name OPERATOR(pg_catalog.=) $2 ORDER BY 1 DESC LIMIT 1"
        ),
        None,
        &[DatumWithOid::from(tbl), DatumWithOid::from(table.relname.as_str())],
    )?;
    let Some(row) = rows.into_iter().next() else { return Ok(()) };
    if row.get::<bool>(1)?.unwrap_or(false) {
        let sobject = row.get(3)?.unwrap_or_default();
        return Err(PgforceError::AlreadyMapped { table: table.qualified.clone(), sobject });
    }
    Err(PgforceError::TableNameTaken { name: table.relname.clone(), other: row.get(2)?.unwrap_or_default() })
}

/// The mapped columns: the caller's list (checked) or every non-system column; the upsert field always included.
fn choose_fields(
    table: &TableInfo,
    fields: Option<Vec<Option<String>>>,
    upsert_field: Option<&str>,
) -> Result<Vec<String>> {
    let unknown = |column: &str| PgforceError::UnknownColumn { table: table.qualified.clone(), column: column.into() };
    let mut chosen: Vec<String> = match fields {
        Some(list) => {
            let mut chosen = Vec::new();
            for name in list.into_iter().flatten() {
                if is_system_column(&name) {
                    return Err(PgforceError::SystemColumnInFields { column: name });
                }
                if table.column(&name).is_none() {
                    return Err(unknown(&name));
                }
                if !chosen.contains(&name) {
                    chosen.push(name);
                }
            }
            chosen
        }
        None => table.columns.iter().filter(|c| !is_system_column(&c.name)).map(|c| c.name.clone()).collect(),
    };
    if let Some(field) = upsert_field {
        if is_system_column(field) {
            return Err(PgforceError::SystemColumnInFields { column: field.into() });
        }
        if table.column(field).is_none() {
            return Err(unknown(field));
        }
        if relationship_column(field).is_some() {
            return Err(PgforceError::SystemColumnInFields { column: field.into() });
        }
        if !chosen.iter().any(|c| c == field) {
            chosen.push(field.to_string());
        }
    }
    if chosen.is_empty() {
        return Err(PgforceError::NoFields { table: table.qualified.clone() });
    }
    Ok(chosen)
}
