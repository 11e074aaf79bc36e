//! Which relations are mapped, as the capture triggers see them: they capture (and keep `_hc_lastop`) only on a
//! relation `_mapping` lists, whatever trigger definition fires them. Looked up once per backend and relation, then
//! kept until Postgres invalidates the relation's cache entry: every change of `_mapping` asks for that
//! (`_mapping_changed`), as does dropping or altering the table, so a mapping made or removed in this transaction
//! or by another session is seen at the next statement.

use std::cell::RefCell;
use std::collections::HashMap;

use pgforce_core::mapping::Access;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// A mapped relation as capture sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub access: Access,
    /// Delivery is paused (`salesforce.pause()`): its changes are captured but wake nobody.
    pub paused: bool,
}

thread_local! {
    /// relation → its mapping, or `None` when it is not mapped.
    static MAPPED: RefCell<HashMap<pg_sys::Oid, Option<Mapping>>> = RefCell::new(HashMap::new());
}

/// Registers the invalidation callback; once per process (from `_PG_init`).
pub fn init() {
    // SAFETY: registers a plain callback with Postgres' cache invalidation machinery.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget), pg_sys::Datum::from(0usize)) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    MAPPED.with(|m| {
        let mut m = m.borrow_mut();
        if relid == pg_sys::Oid::INVALID {
            m.clear();
        } else {
            m.remove(&relid);
        }
    });
}

/// How `relid` is mapped, if it is. `schema` is the extension's schema (where `_mapping` lives). Runs the look-up
/// with the current user's rights: `_mapping`'s `relid`, `access` and `paused_at` columns are readable by everyone.
pub fn mapping_of(relid: pg_sys::Oid, schema: pg_sys::Oid) -> Option<Mapping> {
    if let Some(known) = MAPPED.with(|m| m.borrow().get(&relid).copied()) {
        return known;
    }
    let mapping = look_up(relid, schema);
    MAPPED.with(|m| m.borrow_mut().insert(relid, mapping));
    mapping
}

fn look_up(relid: pg_sys::Oid, schema: pg_sys::Oid) -> Option<Mapping> {
    // SAFETY: a catalog lookup of the extension's own schema.
    let schema_name = unsafe {
        let p = pg_sys::get_namespace_name(schema);
        if p.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    let schema = pgrx::spi::quote_identifier(&schema_name);
    // Release 0.1.0's schema, which this library serves until ALTER EXTENSION UPDATE, has no paused_at.
    let mapping_table = format!("{schema}._mapping");
    let has_pause: bool = Spi::get_one_with_args(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)::pg_catalog.oid
                           AND a.attname OPERATOR(pg_catalog.=) 'paused_at' AND NOT a.attisdropped)",
        &[mapping_table.as_str().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    let paused = if has_pause { "paused_at IS NOT NULL" } else { "false" };
    let sql =
        format!("SELECT access, {paused} FROM {schema}._mapping WHERE relid::pg_catalog.oid OPERATOR(pg_catalog.=) $1");
    let (access, paused): (Option<String>, Option<bool>) =
        Spi::get_two_with_args(&sql, &[relid.into()]).unwrap_or((None, None));
    Some(Mapping { access: access?.parse().ok()?, paused: paused.unwrap_or(false) })
}

/// Row trigger on `_mapping`: a changed mapping invalidates its table's relcache entry, here at once and in every
/// other session at commit, which is what clears the cache above.
#[pg_trigger]
fn _mapping_changed<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    let data = trigger.trigger_data();
    // SAFETY: a row trigger on _mapping gets its old and new rows (either may be NULL) and the table's descriptor.
    unsafe {
        let tupdesc = (*data.tg_relation).rd_att;
        let attnum = pg_sys::SPI_fnumber(tupdesc, c"relid".as_ptr());
        for tuple in [data.tg_trigtuple, data.tg_newtuple] {
            if tuple.is_null() || attnum <= 0 {
                continue;
            }
            let mut is_null = false;
            let datum = pg_sys::SPI_getbinval(tuple, tupdesc, attnum, &mut is_null);
            if is_null {
                continue;
            }
            let relid = pg_sys::Oid::from(datum.value() as u32);
            // A dropped table's mapping is deleted after the table (and its relcache entry) is gone.
            let exists = pg_sys::SearchSysCacheExists(
                pg_sys::SysCacheIdentifier::RELOID as i32,
                pg_sys::Datum::from(relid),
                pg_sys::Datum::from(0usize),
                pg_sys::Datum::from(0usize),
                pg_sys::Datum::from(0usize),
            );
            if exists {
                pg_sys::CacheInvalidateRelcacheByRelid(relid);
            }
        }
    }
    Ok(None)
}
