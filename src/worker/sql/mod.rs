//! Every statement the sync worker runs, by concern: what the engine runs for every pipeline (`engine`), the write
//! queue (`queue`), recording outcomes (`record`), upkeep of the log (`upkeep`), and statements on each mapped table
//! (`TableStatements`, here). They are prepared once per connection (and again only when
//! the extension is re-created), name every table with its schema and every function and operator with
//! `pg_catalog` (the worker's own search_path is `pg_catalog, pg_temp` too: no schema a user can write to is ever
//! searched), and take their values as parameters. State and action names are printed from `pgforce_core::log`.

use std::collections::HashMap;

use pgforce_core::alert::AlertKind;
use pgforce_core::delivery::bulk;
use pgforce_core::log::{sql_list, Action, LastOp, LogState};
use pgforce_core::mapping::STATUS_COLUMNS;
use pgforce_core::status::ConnState;
use pgrx::pg_sys::{self, PgOid};
use pgrx::spi::{OwnedPreparedStatement, SpiClient};

use super::error::WorkerError;

mod engine;
mod queue;
mod record;
mod upkeep;

pub use engine::{keep_refresh_token_sql, kept_refresh_token_sql, oldest_waiting_sql, EngineStatements};
pub use queue::{queue_sql, QueueRead, QueueStatements};
pub use record::RecordStatements;
pub use upkeep::{UpkeepStatements, UNMAPPED};
#[cfg(any(test, feature = "pg_test"))]
pub use {queue::due_count_sql, upkeep::unmapped_queued_sql};

/// The log's columns, in Heroku Connect's order, then pgforce's (for moves between the log and the archive).
const LOG_COLUMNS: &str = "id, txid, created_at, updated_at, processed_at, processed_tx, state, action, table_name, \
                           record_id, sfid, old, \"values\", sf_result, sf_message, attempts, next_attempt_at, relid, \
                           in_doubt_since, depth";

/// The schema pgforce is installed in (quoted) and its version, if it is installed in this database.
pub const INSTALLED_SCHEMA: &str =
    "SELECT pg_catalog.quote_ident(n.nspname)::pg_catalog.text, e.extversion::pg_catalog.text FROM pg_catalog.pg_extension e \
                                    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace \
                                    WHERE e.extname OPERATOR(pg_catalog.=) 'pgforce'";

// Operators, qualified. OPERATOR(…) has no precedence of its own (it binds like any other operator, left to right),
// so every compound expression below is parenthesised.
const EQ: &str = "OPERATOR(pg_catalog.=)";
const LT: &str = "OPERATOR(pg_catalog.<)";
const LE: &str = "OPERATOR(pg_catalog.<=)";
const GT: &str = "OPERATOR(pg_catalog.>)";
const GE: &str = "OPERATOR(pg_catalog.>=)";
const NE: &str = "OPERATOR(pg_catalog.<>)";
const PLUS: &str = "OPERATOR(pg_catalog.+)";
const MINUS: &str = "OPERATOR(pg_catalog.-)";
const TIMES: &str = "OPERATOR(pg_catalog.*)";
const DIVIDE: &str = "OPERATOR(pg_catalog./)";

/// The entries of mapping `m` (in a lateral subquery ordered by `l.relid, l.id`). Written as `= ANY` so that the
/// planner cannot treat relid as a constant and walk the whole log in id order by its primary key, filtering (it
/// does, when most entries belong to one table: 5,000 entries of a paused mapping read to find 2); only the queue's
/// (relid, id) index then gives that order.
const THIS_MAPPING: &str =
    "l.relid::pg_catalog.oid OPERATOR(pg_catalog.=) ANY (ARRAY[m.relid::pg_catalog.oid]::pg_catalog.oid[])";

/// Statements on one mapped table.
pub struct TableStatements {
    /// `$1 bigint[]` record ids → `(id, sfid)` of those that have an sfid.
    pub current_sfids: OwnedPreparedStatement,
    /// `$1 bigint[]` record ids → `(id, row)`: each row as capture prints it (hstore text, without the status
    /// columns).
    pub current_rows: OwnedPreparedStatement,
    /// `$1 bigint[]` ids, `$2 text[]` sfids, `$3 text[]` `_hc_lastop`, `$4 text[]` `_hc_err` → the ids of the rows
    /// still there.
    pub write_back: OwnedPreparedStatement,
    /// `$1 bigint[]` ids: locks these rows for the write-back.
    pub lock_rows: OwnedPreparedStatement,
    /// `$1 bigint[]` ids, `$2 text[]` sfids: undoes a write-back into rows that turned out to be re-inserted ones.
    pub take_back: OwnedPreparedStatement,
    /// `$1 text` sfid, `$2 bigint` id → another row that has this sfid.
    pub sfid_owner: OwnedPreparedStatement,
    /// `$1 text[]` Salesforce ids → those some row already has as its sfid.
    pub owned_sfids: OwnedPreparedStatement,
}

/// The worker's statements for the extension installed in `schema`.
pub struct Statements {
    pub schema: String,
    /// The schema of the hstore extension (quoted): the worker prints rows as capture does, with `hstore(row)`.
    pub hstore: String,
    pub engine: EngineStatements,
    pub queue: QueueStatements,
    pub record: RecordStatements,
    pub upkeep: UpkeepStatements,
    tables: HashMap<String, TableStatements>,
    /// The owner of each mapped table (by qualified name), as of the last claim: writes into a user's table run as
    /// its owner.
    pub owners: HashMap<String, pg_sys::Oid>,
}

/// The schema of the hstore extension, quoted (`public` if it cannot be found).
pub fn hstore_schema(client: &SpiClient<'_>) -> Result<String, pgrx::spi::Error> {
    Ok(client
        .select(
            "SELECT pg_catalog.quote_ident(n.nspname)::pg_catalog.text FROM pg_catalog.pg_extension e
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
              WHERE e.extname OPERATOR(pg_catalog.=) 'hstore'",
            None,
            &[],
        )?
        .first()
        .get_one::<String>()?
        .unwrap_or_else(|| "public".into()))
}

const TEXT: pg_sys::Oid = pg_sys::TEXTOID;
const TEXT_ARRAY: pg_sys::Oid = pg_sys::TEXTARRAYOID;
const INT8: pg_sys::Oid = pg_sys::INT8OID;
const FLOAT8: pg_sys::Oid = pg_sys::FLOAT8OID;
const BOOL: pg_sys::Oid = pg_sys::BOOLOID;
const INT8_ARRAY: pg_sys::Oid = pg_sys::INT8ARRAYOID;
const INT4_ARRAY: pg_sys::Oid = pg_sys::INT4ARRAYOID;
const OID_ARRAY: pg_sys::Oid = pg_sys::OIDARRAYOID;
const FLOAT8_ARRAY: pg_sys::Oid = pg_sys::FLOAT8ARRAYOID;

fn prepare(client: &SpiClient<'_>, sql: &str, types: &[pg_sys::Oid]) -> Result<OwnedPreparedStatement, WorkerError> {
    let types: Vec<PgOid> = types.iter().map(|t| PgOid::from(*t)).collect();
    Ok(client.prepare_mut(sql, &types)?.keep())
}

impl Statements {
    pub fn prepare(client: &SpiClient<'_>, schema: &str) -> Result<Statements, WorkerError> {
        let hstore = hstore_schema(client)?;
        Ok(Statements {
            schema: schema.to_string(),
            hstore,
            engine: EngineStatements::prepare(client, schema)?,
            queue: QueueStatements::prepare(client, schema)?,
            record: RecordStatements::prepare(client, schema)?,
            upkeep: UpkeepStatements::prepare(client, schema)?,
            tables: HashMap::new(),
            owners: HashMap::new(),
        })
    }

    /// Drops the statements of tables that are no longer mapped (or were renamed).
    pub fn keep_tables(&mut self, qualified: &[&str]) {
        self.tables.retain(|name, _| qualified.contains(&name.as_str()));
    }

    /// The statements on these mapped tables (by qualified name), prepared the first time each is needed.
    pub fn tables<'s>(
        &'s mut self,
        client: &SpiClient<'_>,
        qualified: &[&str],
    ) -> Result<&'s HashMap<String, TableStatements>, WorkerError> {
        for name in qualified {
            if self.tables.contains_key(*name) {
                continue;
            }
            let hstore = &self.hstore;
            let (rolled_back, failed) = (LastOp::RolledBack.as_str(), LastOp::Failed.as_str());
            let statements = TableStatements {
                current_sfids: prepare(
                    client,
                    &format!("SELECT id::bigint, sfid::pg_catalog.text FROM {name} WHERE id {EQ} ANY ($1)"),
                    &[INT8_ARRAY],
                )?,
                current_rows: prepare(
                    client,
                    &format!(
                        "SELECT t.id::bigint,
                                ({hstore}.hstore(t.*) OPERATOR({hstore}.-) ARRAY['{status}']::pg_catalog.text[])::pg_catalog.text
                           FROM {name} t WHERE t.id {EQ} ANY ($1)",
                        status = STATUS_COLUMNS.join("','"),
                    ),
                    &[INT8_ARRAY],
                )?,
                lock_rows: prepare(
                    client,
                    &format!("SELECT t.id FROM {name} t WHERE t.id {EQ} ANY ($1) FOR UPDATE"),
                    &[INT8_ARRAY],
                )?,
                take_back: prepare(
                    client,
                    &format!(
                        "UPDATE {name} AS t SET sfid = NULL, _hc_lastop = '{pending}', _hc_err = NULL
                           FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS u(id, sfid)
                          WHERE t.id {EQ} u.id AND t.sfid {EQ} u.sfid",
                        pending = LastOp::Pending.as_str(),
                    ),
                    &[INT8_ARRAY, TEXT_ARRAY],
                )?,
                write_back: prepare(
                    client,
                    &format!(
                        "UPDATE {name} AS t
                            SET sfid = coalesce(u.sfid, t.sfid),
                                -- a row salesforce.rollback() left apart from its record stays marked until it changes
                                _hc_lastop = CASE WHEN t._hc_lastop {EQ} '{rolled_back}' AND u.lastop {NE} '{failed}'
                                                  THEN t._hc_lastop ELSE u.lastop END,
                                _hc_err = CASE WHEN t._hc_lastop {EQ} '{rolled_back}' AND u.lastop {NE} '{failed}'
                                               THEN t._hc_err ELSE u.err END
                           FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),
                                           pg_catalog.unnest($4)) AS u(id, sfid, lastop, err)
                          WHERE t.id {EQ} u.id
                      RETURNING t.id::pg_catalog.int8"
                    ),
                    &[INT8_ARRAY, TEXT_ARRAY, TEXT_ARRAY, TEXT_ARRAY],
                )?,
                sfid_owner: prepare(
                    client,
                    &format!(
                        "SELECT id::bigint FROM {name} WHERE sfid {EQ} $1 AND id OPERATOR(pg_catalog.<>) $2 LIMIT 1"
                    ),
                    &[TEXT, INT8],
                )?,
                owned_sfids: prepare(
                    client,
                    &format!("SELECT sfid::pg_catalog.text FROM {name} WHERE sfid::pg_catalog.text {EQ} ANY ($1)"),
                    &[TEXT_ARRAY],
                )?,
            };
            self.tables.insert(name.to_string(), statements);
        }
        Ok(&self.tables)
    }
}
