//! Whether anything delivers this database's changes at all. The worker writes its connection state into
//! `_sync_state`; when no worker serves this database that row is stale (it said `IDLE` while pending writes grew),
//! so `sync_status` and `CREATE EXTENSION` ask this first.

use pgrx::prelude::*;

use crate::guc;
use pgforce_core::status::ConnState;

/// Why nothing delivers this database's changes: a state, what it means, and what to do.
struct Gap {
    state: ConnState,
    message: String,
    hint: String,
}

/// The statement that adds pgforce to `shared_preload_libraries`, keeping what is there.
pub fn preload_hint() -> String {
    // SAFETY: reads a setting's current value (NULL-safe); no privilege check, this text is for a hint.
    let current = unsafe {
        let value = pg_sys::GetConfigOption(c"shared_preload_libraries".as_ptr(), true, false);
        (!value.is_null()).then(|| std::ffi::CStr::from_ptr(value).to_string_lossy().into_owned())
    };
    let libraries = match current.as_deref().map(str::trim) {
        None | Some("") => "pgforce".to_string(),
        Some(list) => format!("{list}, pgforce"),
    };
    format!("ALTER SYSTEM SET shared_preload_libraries = '{}'; then restart PostgreSQL.", libraries.replace('\'', "''"))
}

fn gap(client: &pgrx::spi::SpiClient<'_>) -> Result<Option<Gap>, pgrx::spi::Error> {
    if !crate::is_preloaded() {
        return Ok(Some(Gap {
            state: ConnState::NotPreloaded,
            message: "pgforce is not in shared_preload_libraries: changes are captured, nothing is delivered".into(),
            hint: preload_hint(),
        }));
    }
    let here: String = client
        .select("SELECT pg_catalog.current_database()::pg_catalog.text", None, &[])?
        .first()
        .get(1)?
        .unwrap_or_default();
    let serving = guc::database();
    if serving != here {
        return Ok(Some(Gap {
            state: ConnState::OtherDatabase,
            message: format!(
                "the pgforce sync worker serves database \"{serving}\" (pgforce.database), not \"{here}\": this database's \
                 changes are captured, none is delivered"
            ),
            hint: format!(
                "ALTER SYSTEM SET pgforce.database = '{}'; then restart PostgreSQL.",
                here.replace('\'', "''")
            ),
        }));
    }
    let running = client
        .select(
            "SELECT 1 FROM pg_catalog.pg_stat_activity a
              WHERE a.backend_type OPERATOR(pg_catalog.=) 'pgforce sync worker'
                AND a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()",
            Some(1),
            &[],
        )?
        .next()
        .is_some();
    Ok((!running).then(|| Gap {
        state: ConnState::NoWorker,
        message: "no pgforce sync worker is running in this database: changes are captured, none is delivered".into(),
        hint: "The worker starts with the server, and again 5 s after it stops; the server log says why it stopped."
            .into(),
    }))
}

/// One row when nothing delivers this database's changes (sync_status shows it as the connection state), none
/// otherwise. The message and hint name settings, so only members of pgforce_monitor get them.
#[pg_extern(stable, parallel_restricted)]
#[allow(clippy::type_complexity)] // pgrx reads the columns from the literal tuple
fn _delivery_gap() -> Result<
    TableIterator<'static, (name!(state, String), name!(message, Option<String>), name!(hint, Option<String>))>,
    pgrx::spi::Error,
> {
    let rows = Spi::connect(|client| -> Result<Vec<_>, pgrx::spi::Error> {
        let Some(g) = gap(client)? else { return Ok(Vec::new()) };
        let monitor: bool = client
            .select(
                // Superusers are members of every role, as sync_status's own CASE relies on.
                "SELECT pg_catalog.pg_has_role('pgforce_monitor', 'MEMBER')",
                None,
                &[],
            )?
            .first()
            .get(1)?
            .unwrap_or(false);
        Ok(vec![(g.state.as_str().to_string(), monitor.then_some(g.message), monitor.then_some(g.hint))])
    })?;
    Ok(TableIterator::new(rows))
}

/// How many cycles the sync worker ran since the server started (sync_status.worker_cycles).
#[pg_extern(volatile, parallel_safe)]
fn _worker_cycles() -> i64 {
    crate::shmem::worker_cycles() as i64
}
