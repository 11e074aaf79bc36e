//! The table a mapping is made of: what pgforce reads of it (`TableInfo`), the system columns it adds when missing,
//! and the capture triggers it installs and drops.

// ErrorReport is how pgrx carries an SQLSTATE, message and hint to the caller; its size does not matter here.
#![allow(clippy::result_large_err)]

use super::*;

/// What `map_table` needs to know about the table.
pub(super) struct TableInfo {
    /// `schema.table`, quoted.
    pub(super) qualified: String,
    pub(super) relname: String,
    pub(super) relkind: String,
    pub(super) persistence: String,
    pub(super) is_partition: bool,
    pub(super) columns: Vec<ColumnInfo>,
}

pub(super) struct ColumnInfo {
    pub(super) name: String,
    pub(super) type_name: String,
    pub(super) type_oid: pg_sys::Oid,
    pub(super) not_null: bool,
}

impl TableInfo {
    pub(super) fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

pub(super) fn table_info(client: &SpiClient, tbl: pg_sys::Oid) -> Result<TableInfo> {
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

pub(super) fn check_kind(table: &TableInfo) -> Result<()> {
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
pub(super) const INTEGER_TYPES: [pg_sys::Oid; 3] = [pg_sys::INT2OID, pg_sys::INT4OID, pg_sys::INT8OID];
pub(super) const TEXT_TYPES: [pg_sys::Oid; 2] = [pg_sys::TEXTOID, pg_sys::VARCHAROID];

pub(super) fn add_system_columns(client: &mut SpiClient, table: &TableInfo) -> Result<()> {
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
pub(super) fn has_unique_index_on(client: &SpiClient, qualified: &str, column: &str) -> Result<bool> {
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

pub(super) fn drop_triggers(client: &mut SpiClient, table: &TableInfo) -> Result<()> {
    for trigger in TRIGGERS {
        client.update(&format!("DROP TRIGGER IF EXISTS {trigger} ON {}", table.qualified), None, &[])?;
    }
    Ok(())
}

pub(super) fn install_triggers(client: &mut SpiClient, schema: &str, table: &TableInfo, access: Access) -> Result<()> {
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

/// A read-only mapping's Salesforce system columns (Heroku Connect's), added when missing: `systemmodstamp`
/// (UTC, indexed: the read compares it), `isdeleted`, `createddate`.
pub(super) fn add_read_columns(client: &mut SpiClient, table: &TableInfo) -> Result<()> {
    let t = &table.qualified;
    for (column, type_name) in [("systemmodstamp", "timestamp"), ("isdeleted", "boolean"), ("createddate", "timestamp")]
    {
        if table.column(column).is_none() {
            client.update(&format!("ALTER TABLE {t} ADD COLUMN {column} {type_name}"), None, &[])?;
        }
    }
    let indexed: bool = client
        .select(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                              JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid
                                                            AND a.attnum OPERATOR(pg_catalog.=) i.indkey[0]
                             WHERE i.indrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
                               AND a.attname OPERATOR(pg_catalog.=) 'systemmodstamp')",
            Some(1),
            &[DatumWithOid::from(t.as_str())],
        )?
        .first()
        .get(1)?
        .unwrap_or(false);
    if !indexed {
        let name = format!("hc_idx_{}_systemmodstamp", table.relname);
        let index = if name.len() <= 63 { quote_identifier(&name) } else { String::new() };
        client.update(&format!("CREATE INDEX {index} ON {t} (systemmodstamp)"), None, &[])?;
    }
    Ok(())
}

/// Starts (or starts over) reading `tbl` from Salesforce: its read state, with no position yet (the first read is
/// the initial load). Release 0.1.0's schema, which this library serves until the update, has no read state: then
/// nothing is read until `ALTER EXTENSION pgforce UPDATE`.
pub(super) fn start_reading(client: &mut SpiClient, schema: &str, tbl: pg_sys::Oid) -> Result<()> {
    if super::reads_installed(client, schema)? {
        client.update(
            &format!(
                "INSERT INTO {schema}._read_state (relid, swept_to)
                 VALUES ($1::pg_catalog.oid::pg_catalog.regclass, pg_catalog.now() AT TIME ZONE 'UTC')
                 ON CONFLICT (relid) DO UPDATE
                    SET state = DEFAULT, position_stamp = NULL, position_id = NULL, read_at = NULL, rows_read = 0,
                        last_error = NULL, reloading_since = NULL, swept_to = excluded.swept_to, compared_at = NULL,
                        bulk_job = NULL, bulk_locator = NULL, bulk_since = NULL,
                        generation = _read_state.generation OPERATOR(pg_catalog.+) 1"
            ),
            None,
            &[DatumWithOid::from(tbl)],
        )?;
        // What an earlier mapping of the same table (or a reused oid) left is not this read's.
        for leftover in ["_read_failures", "_read_seen"] {
            client.update(
                &format!("DELETE FROM {schema}.{leftover} WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid::pg_catalog.regclass"),
                None,
                &[DatumWithOid::from(tbl)],
            )?;
        }
    }
    Ok(())
}

/// Whether `tbl` has a read state (it reads, or will at the worker's next turn).
pub(super) fn reading(client: &SpiClient, schema: &str, tbl: pg_sys::Oid) -> Result<bool> {
    if !super::reads_installed(client, schema)? {
        return Ok(false);
    }
    Ok(client
        .select(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {schema}._read_state r
                                 WHERE r.relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid::pg_catalog.regclass)"
            ),
            Some(1),
            &[DatumWithOid::from(tbl)],
        )?
        .first()
        .get(1)?
        .unwrap_or(false))
}
