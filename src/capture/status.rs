//! `_hc_lastop` / `_hc_err` upkeep, Heroku Connect's `hc_<table>_status()` semantics:
//! a user write (xmlbinary = base64) sets `PENDING` and clears the error; a sync-engine write (hex) keeps an
//! outcome it wrote explicitly on UPDATE (a non-NULL `_hc_lastop` different from the old one), and otherwise
//! sets `SYNCED` and clears the error.

use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};

use pgforce_core::log::{Action, LastOp};
use pgrx::prelude::*;
use pgrx::{pg_sys, IntoDatum};

use super::Firing;
use crate::server::is_user_write;

/// Set by the sync worker while it writes outcomes (`sfid`, `_hc_lastop`, `_hc_err`) into mapped rows, so the
/// status trigger keeps them as written. Process-local: only the worker's own writes are affected.
pub static WRITING_OUTCOMES: AtomicBool = AtomicBool::new(false);

const LASTOP: &CStr = c"_hc_lastop";
const ERR: &CStr = c"_hc_err";

/// BEFORE INSERT OR UPDATE, FOR EACH ROW, on a mapped table, as `map_table` installs it.
#[pg_trigger]
fn _track_status<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    let data = trigger.trigger_data();
    let firing = Firing::of(data);
    let before_row = firing.before && firing.per_row;
    let is_update = match firing.action {
        Some(Action::Insert) if before_row => false,
        Some(Action::Update) if before_row => true,
        _ => firing.misused(trigger, "status trigger", "BEFORE INSERT OR UPDATE FOR EACH ROW"),
    };
    firing.mapped(trigger, "status trigger");
    // SAFETY: a row-level BEFORE trigger gets the row being written (and the old one on UPDATE) and the
    // relation's descriptor; we only read them and return either that row or a modified copy.
    unsafe {
        let tupdesc = (*data.tg_relation).rd_att;
        let new_tuple = if is_update { data.tg_newtuple } else { data.tg_trigtuple };
        let result = track(tupdesc, new_tuple, is_update.then_some(data.tg_trigtuple));
        Ok(Some(PgHeapTuple::from_heap_tuple(pgrx::PgTupleDesc::from_pg_unchecked(tupdesc), result)))
    }
}

unsafe fn track(
    tupdesc: pg_sys::TupleDesc,
    new_tuple: pg_sys::HeapTuple,
    old_tuple: Option<pg_sys::HeapTuple>,
) -> pg_sys::HeapTuple {
    unsafe {
        let lastop_att = pg_sys::SPI_fnumber(tupdesc, LASTOP.as_ptr());
        let err_att = pg_sys::SPI_fnumber(tupdesc, ERR.as_ptr());
        if lastop_att <= 0 || err_att <= 0 {
            return new_tuple; // columns dropped by hand: nothing to keep up to date
        }
        let user_write = is_user_write();
        if !user_write && WRITING_OUTCOMES.load(Ordering::Relaxed) {
            return new_tuple; // the worker's outcome, exactly as written
        }
        let new_lastop = text_attr(new_tuple, tupdesc, lastop_att);
        let wanted = if user_write {
            LastOp::Pending.as_str()
        } else {
            if let Some(old) = old_tuple {
                let old_lastop = text_attr(old, tupdesc, lastop_att);
                if new_lastop.is_some() && new_lastop != old_lastop {
                    return new_tuple; // the sync engine recorded an outcome explicitly
                }
            }
            LastOp::Synced.as_str()
        };
        let mut err_null = false;
        pg_sys::SPI_getbinval(new_tuple, tupdesc, err_att, &mut err_null);
        if err_null && new_lastop == Some(wanted.as_bytes()) {
            return new_tuple; // already right (the column default makes this the common INSERT case)
        }
        let mut columns = [lastop_att, err_att];
        let mut values = [wanted.into_datum().unwrap_or(pg_sys::Datum::from(0usize)), pg_sys::Datum::from(0usize)];
        let mut nulls = [false, true];
        pg_sys::heap_modify_tuple_by_cols(
            new_tuple,
            tupdesc,
            2,
            columns.as_mut_ptr(),
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
        )
    }
}

/// The raw text of a text or varchar column, borrowed from the tuple (no copy, no encoding check): this runs for
/// every row written to a mapped table.
unsafe fn text_attr<'a>(tuple: pg_sys::HeapTuple, tupdesc: pg_sys::TupleDesc, attnum: i32) -> Option<&'a [u8]> {
    unsafe {
        let mut is_null = false;
        let datum = pg_sys::SPI_getbinval(tuple, tupdesc, attnum, &mut is_null);
        <&[u8]>::from_datum(datum, is_null)
    }
}
