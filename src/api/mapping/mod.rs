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

type Result<T> = std::result::Result<T, PgforceError>;

/// What `map_table` needs to know about the table.
struct TableInfo {
    /// `schema.table`, quoted.
    qualified: String,
    relname: String,
    relkind: String,
    persistence: String,
    is_partition: bool,
    columns: Vec<ColumnInfo>,
}

struct ColumnInfo {
    name: String,
    type_name: String,
    type_oid: pg_sys::Oid,
    not_null: bool,
}

impl TableInfo {
    fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

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

    if access == Access::ReadWrite && upsert_field.is_none() {
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
    if access == Access::ReadWrite {
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
    if plan.access == Access::ReadWrite && upsert_field.is_none() && old_upsert.is_some() {
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

fn table_info(client: &SpiClient, tbl: pg_sys::Oid) -> Result<TableInfo> {
    let rows = client.select(
        "SELECT pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c.relname), c.relname::pg_catalog.text, \
                c.relkind::pg_catalog.text, c.relpersistence::pg_catalog.text, c.relispartition \
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
          WHERE c.oid OPERATOR(pg_catalog.=) $1",
        Some(1),
        &[DatumWithOid::from(tbl)],
    )?;
    let Some(row) = rows.into_iter().next() else {
        return Err(PgforceError::WrongKindOfTable {
            table: format!("relation with OID {}", tbl.to_u32()),
            reason: "it does not exist",
            hint: "Pass an existing table, such as 'salesforce.contact'.",
        });
    };
    let mut table = TableInfo {
        qualified: row.get(1)?.unwrap_or_default(),
        relname: row.get(2)?.unwrap_or_default(),
        relkind: row.get(3)?.unwrap_or_default(),
        persistence: row.get(4)?.unwrap_or_default(),
        is_partition: row.get(5)?.unwrap_or(false),
        columns: Vec::new(),
    };
    let columns = client.select(
        "SELECT a.attname::pg_catalog.text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid, a.attnotnull \
           FROM pg_catalog.pg_attribute a \
          WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped ORDER BY a.attnum",
        None,
        &[DatumWithOid::from(tbl)],
    )?;
    for c in columns {
        table.columns.push(ColumnInfo {
            name: c.get(1)?.unwrap_or_default(),
            type_name: c.get(2)?.unwrap_or_default(),
            type_oid: c.get(3)?.unwrap_or(pg_sys::Oid::INVALID),
            not_null: c.get(4)?.unwrap_or(false),
        });
    }
    Ok(table)
}

fn check_kind(table: &TableInfo) -> Result<()> {
    let refuse = |reason, hint| Err(PgforceError::WrongKindOfTable { table: table.qualified.clone(), reason, hint });
    if table.persistence == "t" {
        return refuse("it is a temporary table, which the sync worker cannot see", "Map a permanent table.");
    }
    if table.is_partition {
        return refuse("it is a partition of another table", "Map ordinary, unpartitioned tables.");
    }
    match table.relkind.as_str() {
        "r" => Ok(()),
        "p" => refuse("it is a partitioned table", "Map ordinary, unpartitioned tables."),
        _ => refuse("it is not a table", "Map an ordinary table; views and foreign tables cannot be mapped."),
    }
}

/// Refuses a table that is mapped already, or whose name a mapped table in another schema uses (the trigger log
/// names tables without their schema). The first reason wins whatever order the rows come in.
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

fn bad_relationship(
    table: &TableInfo,
    column: &str,
    reason: String,
    hint: String,
    code: PgSqlErrorCode,
) -> PgforceError {
    PgforceError::BadRelationship { table: table.qualified.clone(), column: column.into(), reason, hint, code }
}

/// Checks `relationships` (`{"<column>": "<LookupField>"}`): each column exists, holds integers and has a foreign
/// key to the `id` of this table or of a mapped table; each field is a Salesforce name. Returns (column, field)
/// pairs.
fn check_relationships(
    client: &SpiClient,
    schema: &str,
    tbl: pg_sys::Oid,
    table: &TableInfo,
    relationships: Option<serde_json::Value>,
) -> Result<Vec<(String, String)>> {
    use PgSqlErrorCode::*;
    let object =
        match relationships {
            None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
            Some(serde_json::Value::Object(o)) => o,
            Some(other) => return Err(bad_relationship(
                table,
                "",
                format!("relationships must be a JSON object, not {other}"),
                r#"Map each foreign key column to its lookup field: relationships => '{"account_id": "AccountId"}'"#
                    .into(),
                ERRCODE_INVALID_PARAMETER_VALUE,
            )),
        };
    let mut out = Vec::new();
    for (column, field) in object {
        let bad = |reason: String, hint: &str, code| bad_relationship(table, &column, reason, hint.into(), code);
        let Some(field) = field.as_str().map(str::to_string) else {
            return Err(bad(
                format!("the lookup field must be a string, not {field}"),
                r#"Name the Salesforce lookup field: {"account_id": "AccountId"}"#,
                ERRCODE_INVALID_PARAMETER_VALUE,
            ));
        };
        check_salesforce_name(&field).map_err(|e| {
            bad(
                format!("{e}"),
                "Name the lookup field by its API name, such as AccountId or Parent__c.",
                ERRCODE_INVALID_PARAMETER_VALUE,
            )
        })?;
        let Some(info) = table.column(&column) else {
            return Err(PgforceError::UnknownColumn { table: table.qualified.clone(), column });
        };
        if is_system_column(&column) {
            return Err(PgforceError::SystemColumnInFields { column });
        }
        if !INTEGER_TYPES.contains(&info.type_oid) {
            return Err(bad(
                format!("it is of type {}, but holds the parent row's id (an integer)", info.type_name),
                "A relationship column holds the id of the parent row, as a foreign key to its id column.",
                ERRCODE_DATATYPE_MISMATCH,
            ));
        }
        // The foreign key on this column alone, to the id column of its parent table.
        let parent = client
            .select(
                "SELECT k.confrelid, k.confrelid::pg_catalog.regclass::pg_catalog.text, pa.attname::pg_catalog.text \
                   FROM pg_catalog.pg_constraint k \
                   JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) k.conrelid \
                    AND k.conkey OPERATOR(pg_catalog.=) ARRAY[a.attnum] \
                   JOIN pg_catalog.pg_attribute pa ON pa.attrelid OPERATOR(pg_catalog.=) k.confrelid \
                    AND k.confkey OPERATOR(pg_catalog.=) ARRAY[pa.attnum] \
                  WHERE k.conrelid OPERATOR(pg_catalog.=) $1 AND k.contype OPERATOR(pg_catalog.=) 'f' \
                    AND a.attname::pg_catalog.text OPERATOR(pg_catalog.=) $2 \
                  ORDER BY pa.attname::pg_catalog.text OPERATOR(pg_catalog.<>) 'id', k.oid LIMIT 1",
                Some(1),
                &[DatumWithOid::from(tbl), DatumWithOid::from(column.as_str())],
            )?
            .next()
            .map(|r| -> Result<_> {
                Ok((
                    r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::Oid::INVALID),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<String>(3)?.unwrap_or_default(),
                ))
            })
            .transpose()?;
        let Some((parent_oid, parent_name, parent_column)) = parent else {
            return Err(bad(
                "it has no foreign key".into(),
                &format!(
                    "Add one to the parent table's id: ALTER TABLE {} ADD FOREIGN KEY ({}) REFERENCES <parent>(id);",
                    table.qualified,
                    quote_identifier(&column)
                ),
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ));
        };
        // The worker reads the parent's rows (their sfids, whether they failed) for this mapping: only a role that
        // may read them may map a lookup to them (REFERENCES alone lets it create the foreign key).
        // SAFETY: reads this backend's user identity (the caller of the SECURITY DEFINER wrapper).
        let caller = unsafe { pg_sys::GetOuterUserId() };
        let readable: bool = client
            .select(
                "SELECT pg_catalog.has_table_privilege($1, $2, 'SELECT')",
                Some(1),
                &[DatumWithOid::from(caller), DatumWithOid::from(parent_oid)],
            )?
            .first()
            .get(1)?
            .unwrap_or(false);
        if !readable {
            let role: String = client
                .select(
                    "SELECT pg_catalog.quote_ident(pg_catalog.pg_get_userbyid($1)::pg_catalog.text)",
                    Some(1),
                    &[DatumWithOid::from(caller)],
                )?
                .first()
                .get(1)?
                .unwrap_or_default();
            return Err(bad(
                format!("you may not read its parent table {parent_name}"),
                &format!("A relationship reads the parent rows it points at: GRANT SELECT ON {parent_name} TO {role};"),
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            ));
        }
        if parent_column != "id" {
            return Err(bad(
                format!("its foreign key references {parent_name}.{parent_column}, not {parent_name}.id"),
                "The lookup is set from the parent row's sfid, found by its id: reference the parent's id column.",
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ));
        }
        let mapped = parent_oid == tbl
            || client
                .select(
                    &format!("SELECT 1 FROM {schema}._mapping WHERE relid::pg_catalog.oid OPERATOR(pg_catalog.=) $1"),
                    Some(1),
                    &[DatumWithOid::from(parent_oid)],
                )?
                .next()
                .is_some();
        if !mapped {
            return Err(bad(
                format!("its parent table {parent_name} is not mapped"),
                &format!("Map the parent first: SELECT salesforce.map_table('{parent_name}', ...);"),
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ));
        }
        out.push((column, field));
    }
    Ok(out)
}

const INTEGER_TYPES: [pg_sys::Oid; 3] = [pg_sys::INT2OID, pg_sys::INT4OID, pg_sys::INT8OID];
const TEXT_TYPES: [pg_sys::Oid; 2] = [pg_sys::TEXTOID, pg_sys::VARCHAROID];

fn add_system_columns(client: &mut SpiClient, table: &TableInfo) -> Result<()> {
    let t = &table.qualified;
    let wrong_type = |column: &'static str, found: &str, wanted: &'static str| PgforceError::WrongColumnType {
        table: t.clone(),
        column,
        found: found.to_string(),
        wanted,
    };

    match table.column("id") {
        Some(id) if !INTEGER_TYPES.contains(&id.type_oid) => {
            return Err(wrong_type("id", &id.type_name, "smallint, integer or bigint"))
        }
        Some(id) => {
            if !id.not_null || !has_unique_index_on(client, t, "id")? {
                return Err(PgforceError::IdNotUnique { table: t.clone() });
            }
        }
        None => {
            let has_pkey: bool = client
                .select(
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index WHERE indrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND indisprimary)",
                    Some(1),
                    &[DatumWithOid::from(t.as_str())],
                )?
                .first()
                .get(1)?
                .unwrap_or(false);
            let key = if has_pkey { "UNIQUE" } else { "PRIMARY KEY" };
            client.update(
                &format!("ALTER TABLE {t} ADD COLUMN id bigint GENERATED BY DEFAULT AS IDENTITY {key}"),
                None,
                &[],
            )?;
        }
    }

    match table.column("sfid") {
        Some(sfid) if !TEXT_TYPES.contains(&sfid.type_oid) => {
            return Err(wrong_type("sfid", &sfid.type_name, "varchar(18) or text"))
        }
        Some(_) => {}
        None => {
            client.update(&format!("ALTER TABLE {t} ADD COLUMN sfid varchar(18)"), None, &[])?;
        }
    }
    if !has_unique_index_on(client, t, "sfid")? {
        let name = format!("hcu_idx_{}_sfid", table.relname);
        // Heroku Connect's index name when it fits; otherwise Postgres picks one.
        let index = if name.len() <= 63 { quote_identifier(&name) } else { String::new() };
        client.update(&format!("CREATE UNIQUE INDEX {index} ON {t} (sfid)"), None, &[])?;
    }

    match table.column("_hc_lastop") {
        Some(c) if !TEXT_TYPES.contains(&c.type_oid) => {
            return Err(wrong_type("_hc_lastop", &c.type_name, "varchar(32) or text"))
        }
        Some(_) => {}
        // Existing rows keep NULL (they were never sent); new rows default to what the status trigger would set.
        None => client.update(&format!("ALTER TABLE {t} ADD COLUMN _hc_lastop varchar(32)"), None, &[]).map(|_| ())?,
    }
    let pending = LastOp::Pending.as_str();
    client.update(&format!("ALTER TABLE {t} ALTER COLUMN _hc_lastop SET DEFAULT '{pending}'"), None, &[])?;
    match table.column("_hc_err") {
        Some(c) if !TEXT_TYPES.contains(&c.type_oid) => return Err(wrong_type("_hc_err", &c.type_name, "text")),
        Some(_) => {}
        None => client.update(&format!("ALTER TABLE {t} ADD COLUMN _hc_err text"), None, &[]).map(|_| ())?,
    }
    Ok(())
}

/// Whether a valid unique index covers exactly this one column (unique without a predicate).
fn has_unique_index_on(client: &SpiClient, qualified: &str, column: &str) -> Result<bool> {
    Ok(client
        .select(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                              JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) i.indkey[0] \
                             WHERE i.indrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND i.indisunique AND i.indisvalid \
                               AND i.indnkeyatts OPERATOR(pg_catalog.=) 1 AND i.indpred IS NULL AND i.indexprs IS NULL \
                               AND a.attname OPERATOR(pg_catalog.=) $2)",
            Some(1),
            &[DatumWithOid::from(qualified), DatumWithOid::from(column)],
        )?
        .first()
        .get(1)?
        .unwrap_or(false))
}

/// The triggers `map_table` installs, in the order of `install_triggers`; `unmap_table` drops the same set.
const TRIGGERS: [&str; 4] =
    ["pgforce_status", "pgforce_capture_insert", "pgforce_capture_update", "pgforce_capture_delete"];

fn drop_triggers(client: &mut SpiClient, table: &TableInfo) -> Result<()> {
    for trigger in TRIGGERS {
        client.update(&format!("DROP TRIGGER IF EXISTS {trigger} ON {}", table.qualified), None, &[])?;
    }
    Ok(())
}

fn install_triggers(client: &mut SpiClient, schema: &str, table: &TableInfo, access: Access) -> Result<()> {
    let t = &table.qualified;
    let mode = pgrx::spi::quote_literal(access.as_str());
    let [status, capture_insert, capture_update, capture_delete] = TRIGGERS;
    let statements = [
        format!("CREATE TRIGGER {status} BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {schema}._track_status()"),
        format!("CREATE TRIGGER {capture_insert} AFTER INSERT ON {t} REFERENCING NEW TABLE AS {NEW_ROWS} FOR EACH STATEMENT EXECUTE FUNCTION {schema}._capture_changes({mode})"),
        format!("CREATE TRIGGER {capture_update} AFTER UPDATE ON {t} REFERENCING OLD TABLE AS {OLD_ROWS} NEW TABLE AS {NEW_ROWS} FOR EACH STATEMENT EXECUTE FUNCTION {schema}._capture_changes({mode})"),
        format!("CREATE TRIGGER {capture_delete} AFTER DELETE ON {t} REFERENCING OLD TABLE AS {OLD_ROWS} FOR EACH STATEMENT EXECUTE FUNCTION {schema}._capture_changes({mode})"),
    ];
    for sql in statements {
        client.update(&sql, None, &[])?;
    }
    Ok(())
}
