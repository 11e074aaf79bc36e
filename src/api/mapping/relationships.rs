//! `relationships => {"<column>": "<LookupField>"}`: a foreign-key column that sends its parent's Salesforce id as a
//! lookup field, checked when a table is mapped or its mapping altered.

// ErrorReport is how pgrx carries an SQLSTATE, message and hint to the caller; its size does not matter here.
#![allow(clippy::result_large_err)]

use super::*;

pub(super) fn bad_relationship(
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
pub(super) fn check_relationships(
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
