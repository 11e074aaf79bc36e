//! `salesforce.diagnose()`: looks at the set-up the way the troubleshooting checklists do — the library and the
//! worker, the settings, a login with the configured credentials, the API budget, each mapping against Salesforce's
//! describe, the oldest change waiting, the failures by error code — and returns what it found, one row per check
//! (`pgforce_core::diagnose` judges). It calls Salesforce from this session (a login, one describe per sObject), with
//! the worker's settings and secrets; no secret reaches a row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pgforce_core::alert::error_code;
use pgforce_core::describe::Described;
use pgforce_core::diagnose::{self, Finding, MappingToCheck};
use pgforce_core::salesforce::CallError;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::worker::sql::oldest_waiting_sql;
use crate::{guc, is_preloaded};

/// The checks, in order. Wrapped by `salesforce.diagnose()` (sql/finalize.sql), which runs it as the extension's
/// owner for `pgforce_operator`.
#[pg_extern(volatile, parallel_unsafe)]
fn _diagnose() -> TableIterator<
    'static,
    (name!(check_name, String), name!(status, String), name!(detail, String), name!(hint, Option<String>)),
> {
    let findings = Spi::connect_mut(|client| {
        let schema = super::mapping::extension_schema(client).map_err(|e| e.to_string())?;
        run(client, &schema).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| {
        vec![Finding::error("diagnose", format!("cannot read pgforce's tables: {e}"), "Is pgforce installed here?")]
    });
    TableIterator::new(findings.into_iter().map(|f| (f.check, f.status.as_str().to_string(), f.detail, f.hint)))
}

fn run(client: &mut SpiClient<'_>, schema: &str) -> Result<Vec<Finding>, pgrx::spi::Error> {
    let config = guc::config();
    let mut out = vec![preloaded(), worker(client)?];
    if !config.enabled {
        out.push(Finding::warning(
            "enabled",
            "pgforce.enabled is off: changes are captured, nothing is sent",
            "ALTER SYSTEM SET pgforce.enabled = on; SELECT pg_reload_conf();",
        ));
    }
    let settings = match config.read_secret_files() {
        Ok(secrets) => config.connection_with(&secrets),
        Err(e) => {
            out.push(Finding::error(
                "settings",
                e,
                "Fix the file's path or mode (chmod 600, owned by the server's OS user).",
            ));
            config.connection.clone()
        }
    };
    let complete = diagnose::settings(&settings);
    let usable = complete.status == diagnose::Status::Ok;
    out.push(complete);

    let client_sf = super::session_client::client(client, schema, &settings)?;
    let mut logged_in = false;
    if usable {
        let login = client_sf.authenticate();
        logged_in = login.is_ok();
        out.push(diagnose::login(&login));
        super::session_client::keep_rotated(client, schema, &settings, &client_sf)?;
    }

    let mappings = mappings(client, schema)?;
    if logged_in {
        let mut described: HashMap<String, Result<Arc<Described>, CallError>> = HashMap::new();
        let mut describe = |sobject: &str| {
            described
                .entry(sobject.to_ascii_lowercase())
                .or_insert_with(|| client_sf.describe(sobject).map(|f| Arc::new(Described::new(sobject, f))))
                .clone()
        };
        for (m, paused) in &mappings {
            let own = describe(&m.sobject);
            out.extend(diagnose::mapping(m, &own, |parent| describe(parent).ok()));
            if let Some(since) = paused {
                out.push(Finding::warning(
                    format!("mapping {}", m.table),
                    format!("delivery paused since {since}"),
                    format!("SELECT salesforce.resume('{}');", m.table.replace('\'', "''")),
                ));
            }
        }
    }
    let usage = client_sf.usage().map(|u| (u.used, u.limit)).or(recorded_usage(client, schema)?);
    out.push(diagnose::api_usage(usage, config.max_api_usage));
    out.push(oldest_waiting(client, schema, config.alert_stalled_after)?);
    out.extend(diagnose::failures(&failures(client, schema)?));
    out.extend(readings(client, schema, config.read_interval.as_secs_f64())?.iter().map(diagnose::reading));
    Ok(out)
}

/// The reading mappings' reads (none before `ALTER EXTENSION pgforce UPDATE` creates their state).
fn readings(
    client: &SpiClient<'_>,
    schema: &str,
    default_interval: f64,
) -> Result<Vec<diagnose::ReadingToCheck>, pgrx::spi::Error> {
    if !super::mapping::reads_installed(client, schema)? {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for row in client.select(
        &format!(
            // What sync_status shows of the reads (one definition of the failures and the lag).
            "SELECT m.relid::pg_catalog.regclass::pg_catalog.text, s.read_state IS NOT NULL,
                    (EXTRACT(epoch FROM s.read_lag))::pg_catalog.float8, coalesce(s.rows_failed, 0), s.read_error,
                    (EXTRACT(epoch FROM m.read_interval))::pg_catalog.float8
               FROM {schema}._mapping m
               JOIN {schema}.sync_status s ON s.table_name OPERATOR(pg_catalog.=) m.table_name
              WHERE m.access OPERATOR(pg_catalog.<>) 'write_only' AND m.paused_at IS NULL
              ORDER BY 1"
        ),
        None,
        &[],
    )? {
        out.push(diagnose::ReadingToCheck {
            table: row.get(1)?.unwrap_or_default(),
            reading: row.get(2)?.unwrap_or(false),
            caught_up_secs_ago: row.get(3)?,
            rows_failed: row.get(4)?.unwrap_or(0),
            last_error: row.get(5)?,
            interval_secs: row.get::<f64>(6)?.unwrap_or(default_interval),
        });
    }
    Ok(out)
}

fn preloaded() -> Finding {
    if is_preloaded() {
        Finding::ok("preloaded", "pgforce is in shared_preload_libraries")
    } else {
        Finding::error(
            "preloaded",
            "pgforce is not in shared_preload_libraries: changes are captured, nothing is delivered",
            super::status::preload_hint(),
        )
    }
}

fn worker(client: &SpiClient<'_>) -> Result<Finding, pgrx::spi::Error> {
    let serving = guc::database();
    let found = client.select(
        "SELECT a.pid, a.datname::pg_catalog.text, pg_catalog.current_database()::pg_catalog.text FROM pg_catalog.pg_stat_activity a
          WHERE a.backend_type OPERATOR(pg_catalog.=) 'pgforce sync worker'",
        None,
        &[],
    )?;
    let mut running = None;
    for row in found {
        running = Some((row.get::<i32>(1)?, row.get::<String>(2)?, row.get::<String>(3)?));
    }
    let here: Option<String> =
        client.select("SELECT pg_catalog.current_database()::pg_catalog.text", None, &[])?.first().get(1)?;
    let here = here.unwrap_or_default();
    Ok(match running {
        Some((pid, Some(db), _)) if db == here => Finding::ok("worker", format!("running (pid {}) in {db}", pid.unwrap_or(0))),
        Some((pid, db, _)) => Finding::error(
            "worker",
            format!(
                "the worker (pid {}) serves database {}, not {here}: this database's changes are not delivered",
                pid.unwrap_or(0),
                db.unwrap_or_else(|| format!("\"{serving}\" (waiting for it)"))
            ),
            format!("ALTER SYSTEM SET pgforce.database = '{here}'; then restart PostgreSQL."),
        ),
        None => Finding::error(
            "worker",
            "no pgforce sync worker is running",
            "It starts with the server when pgforce is preloaded, and again 5 s after it stops; the server log says why it stopped.",
        ),
    })
}

/// Each mapping, and since when it is paused.
fn mappings(client: &SpiClient<'_>, schema: &str) -> Result<Vec<(MappingToCheck, Option<String>)>, pgrx::spi::Error> {
    let mut out = Vec::new();
    for row in client.select(
        &format!(
            "SELECT m.relid::pg_catalog.regclass::pg_catalog.text, m.sobject, m.access OPERATOR(pg_catalog.<>) 'read_only',
                    m.upsert_field, m.fields, m.paused_at::pg_catalog.text
               FROM {schema}._mapping m ORDER BY 1"
        ),
        None,
        &[],
    )? {
        let m = MappingToCheck {
            table: row.get::<String>(1)?.unwrap_or_default(),
            sobject: row.get::<String>(2)?.unwrap_or_default(),
            read_write: row.get::<bool>(3)?.unwrap_or(false),
            upsert_field: row.get::<String>(4)?,
            fields: row.get::<Vec<String>>(5)?.unwrap_or_default(),
        };
        out.push((m, row.get::<String>(6)?));
    }
    Ok(out)
}

/// API usage as the worker last recorded it.
fn recorded_usage(client: &SpiClient<'_>, schema: &str) -> Result<Option<(u64, u64)>, pgrx::spi::Error> {
    let row = client.select(&format!("SELECT api_used, api_limit FROM {schema}._sync_state"), Some(1), &[])?.first();
    let (used, limit) = (row.get::<i64>(1)?, row.get::<i64>(2)?);
    Ok(used.zip(limit).map(|(u, l)| (u.max(0) as u64, l.max(0) as u64)))
}

fn oldest_waiting(
    client: &SpiClient<'_>,
    schema: &str,
    stalled_after: Option<Duration>,
) -> Result<Finding, pgrx::spi::Error> {
    let rows = client.select(&oldest_waiting_sql(schema), None, &[])?;
    let mut oldest = None;
    for row in rows {
        if let (Some(age), Some(table)) = (row.get::<f64>(1)?, row.get::<String>(2)?) {
            oldest = Some((Duration::from_secs_f64(age.max(0.0)), table));
        }
    }
    Ok(match oldest {
        None => Finding::ok("oldest pending", "nothing is waiting to be sent"),
        Some((age, table)) => {
            let detail = format!("the oldest change waiting ({table}) is {} s old", age.as_secs());
            match stalled_after.filter(|limit| age > *limit) {
                Some(_) => Finding::warning(
                    "oldest pending",
                    format!("{detail}, more than pgforce.alert_stalled_after"),
                    "SELECT * FROM salesforce.sync_status; the connection state and the failures above say why.",
                ),
                None => Finding::ok("oldest pending", detail),
            }
        }
    })
}

/// Failed entries of the live log by error code: (code, count, one message).
fn failures(client: &SpiClient<'_>, schema: &str) -> Result<Vec<(String, i64, String)>, pgrx::spi::Error> {
    let mut groups: Vec<(String, i64, String)> = Vec::new();
    for row in client.select(
        &format!(
            "SELECT pg_catalog.split_part(coalesce(sf_message, ''), ':', 1), pg_catalog.count(*), pg_catalog.min(sf_message)
               FROM {schema}._open_failures GROUP BY 1 ORDER BY 2 DESC, 1"
        ),
        None,
        &[],
    )? {
        let message = row.get::<String>(3)?.unwrap_or_default();
        let code = error_code(&message).unwrap_or("OTHER").to_string();
        let count = row.get::<i64>(2)?.unwrap_or(0);
        match groups.iter_mut().find(|g| g.0 == code) {
            Some(g) => g.1 += count,
            None => groups.push((code, count, message)),
        }
    }
    Ok(groups)
}
