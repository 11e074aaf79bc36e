//! One deliverer per log. Two things keep a log from being sent twice: a session advisory lock that a second worker
//! on the same database cannot get, and the identity of the server that delivers it (cluster system identifier,
//! WAL timeline, host, data directory), recorded in `_deliverer` at the first delivery. A server that finds
//! another's identity there — a restored backup, a promoted replica (new timeline), a copy of the data directory,
//! a pg_dump restored elsewhere (the table is dumped) — pauses until `salesforce.resume()` confirms it.

use std::ffi::CStr;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::spi::SpiClient;

use super::error::WorkerError;
use super::sql::Statements;

/// Who delivers this log, as the worker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deliverer {
    /// This worker (it has just recorded itself, if no one was recorded).
    ThisServer,
    /// Another worker of this server holds the delivery lock (its pid, if known).
    AnotherWorker(Option<i32>),
    /// The log was last delivered by another server: its identity.
    AnotherServer(String),
}

/// This server's identity: what a copy of it (or a promoted replica) does not share.
pub fn identity(client: &mut SpiClient<'_>, st: &Statements) -> Result<String, WorkerError> {
    let mut timeline = String::from("?");
    for row in client.select(&st.engine.timeline, None, &[])? {
        timeline = row.get::<String>(1)?.unwrap_or(timeline);
    }
    // SAFETY: reads postmaster-set globals and this host's name.
    let (system, data) = unsafe {
        let data = if pg_sys::DataDir.is_null() {
            String::new()
        } else {
            CStr::from_ptr(pg_sys::DataDir).to_string_lossy().into_owned()
        };
        (pg_sys::GetSystemIdentifier(), data)
    };
    Ok(format!("system {system}, timeline {timeline}, host {}, data directory {data}", host_name()))
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    if ok {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "?".into()
    }
}

/// Takes the delivery lock if this worker does not hold it yet (`locked`), then checks (and, the first time,
/// records) which server delivers the log.
pub fn check(
    client: &mut SpiClient<'_>,
    st: &Statements,
    me: &str,
    locked: &mut bool,
) -> Result<Deliverer, WorkerError> {
    if !*locked {
        let mut got = false;
        for row in client.select(&st.engine.delivery_lock, None, &[])? {
            got = row.get::<bool>(1)?.unwrap_or(false);
        }
        if !got {
            let mut holder = None;
            for row in client.select(&st.engine.delivery_lock_holder, None, &[])? {
                holder = row.get::<i32>(1)?;
            }
            return Ok(Deliverer::AnotherWorker(holder));
        }
        *locked = true;
    }
    let mut recorded = None;
    for row in client.select(&st.engine.deliverer, None, &[])? {
        recorded = row.get::<String>(1)?;
    }
    match recorded {
        Some(identity) if identity != me => Ok(Deliverer::AnotherServer(identity)),
        Some(_) => Ok(Deliverer::ThisServer),
        None => {
            client.update(&st.engine.record_deliverer, None, &[DatumWithOid::from(me)])?;
            Ok(Deliverer::ThisServer)
        }
    }
}
