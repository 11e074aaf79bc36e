//! The triggers `map_table` installs on a mapped table.
//!
//! * `pgforce_status` (BEFORE INSERT OR UPDATE, per row) keeps `_hc_lastop`/`_hc_err` as Heroku Connect does.
//! * `pgforce_capture_{insert,update,delete}` (AFTER, per statement, with transition tables) log every changed row
//!   with the semantics of Connect's VERSION 4 logger, but in one set-based write per statement instead of one
//!   PL/pgSQL call and one INSERT per row.

mod log_writer;
mod row_text;
mod status;
mod wake;

use std::ffi::CStr;

use pgforce_core::log::{Action, LogState};
use pgforce_core::mapping::Access;
use pgrx::prelude::*;
use pgrx::{pg_sys, PgMemoryContexts};

use crate::error::{raise, PgforceError};
use crate::server::is_user_write;
use log_writer::{CapturedChange, LogWriter};
use row_text::{Row, RowRenderer};

pub use status::WRITING_OUTCOMES;

/// Names of the transition tables the capture triggers declare (`REFERENCING ... AS`).
pub const OLD_ROWS: &str = "pgforce_old_rows";
pub const NEW_ROWS: &str = "pgforce_new_rows";

/// Statement-level capture trigger. Its one argument is the mapping's access mode.
#[pg_trigger]
fn _capture_changes<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, PgforceError> {
    if !is_user_write() {
        return Ok(None);
    }
    let data = trigger.trigger_data();
    let access = trigger_access(trigger);
    let action = match data.tg_event & pg_sys::TRIGGER_EVENT_OPMASK {
        pg_sys::TRIGGER_EVENT_INSERT => Action::Insert,
        pg_sys::TRIGGER_EVENT_UPDATE => Action::Update,
        pg_sys::TRIGGER_EVENT_DELETE => Action::Delete,
        _ => return Ok(None), // TRUNCATE is never captured, as in Heroku Connect
    };
    // SAFETY: Postgres hands a statement trigger valid transition tables for the events it declared.
    unsafe { capture_statement(data, access, action) };
    Ok(None)
}

fn trigger_access(trigger: &PgTrigger) -> Access {
    let args = trigger.extra_args().unwrap_or_default();
    match args.first().map(|a| a.parse::<Access>()) {
        Some(Ok(access)) if args.len() == 1 => access,
        _ => raise(PgforceError::BadTriggerArguments { table: trigger.table_name().unwrap_or_default(), args }),
    }
}

unsafe fn capture_statement(data: &pg_sys::TriggerData, access: Access, action: Action) {
    unsafe {
        let (old_rows, new_rows) = match action {
            Action::Insert => (std::ptr::null_mut(), data.tg_newtable),
            Action::Update => (data.tg_oldtable, data.tg_newtable),
            Action::Delete => (data.tg_oldtable, std::ptr::null_mut()),
        };
        let driving = if new_rows.is_null() { old_rows } else { new_rows };
        if driving.is_null() || pg_sys::tuplestore_tuple_count(driving) == 0 {
            return;
        }
        let relation = data.tg_relation;
        let tupdesc = (*relation).rd_att;
        let table_name = CStr::from_ptr((*(*relation).rd_rel).relname.data.as_ptr());
        let schema = pg_sys::get_func_namespace((*data.tg_trigger).tgfoid);

        let mut writer = LogWriter::new(schema, action, table_name);
        let mut renderer = RowRenderer::new(tupdesc);
        let mut old_cursor = (!old_rows.is_null()).then(|| TransitionCursor::new(old_rows, tupdesc));
        let mut new_cursor = (!new_rows.is_null()).then(|| TransitionCursor::new(new_rows, tupdesc));
        let natts = renderer.natts();
        let base_state = access.capture_state();
        // Output functions allocate their results here; the texts are copied into the log writer at once.
        let mut scratch = PgMemoryContexts::new("pgforce capture rendering");
        let mut rows = 0usize;

        while let Some(old) = next_row(old_cursor.as_mut(), natts) {
            let Some(new) = next_row(new_cursor.as_mut(), natts) else { break };
            scratch.switch_to(|_| match (old, new) {
                (None, Some(new)) => {
                    let record_id = renderer.record_id(&new);
                    let values = renderer.render_insert(&new);
                    writer.push(CapturedChange {
                        state: base_state,
                        record_id,
                        sfid: None,
                        old: None,
                        values: Some(values),
                    });
                }
                (Some(old), Some(new)) => {
                    let record_id = renderer.record_id(&new);
                    let text = renderer.render_update(&old, &new);
                    let nothing_changed = text.values.is_some_and(<[u8]>::is_empty);
                    let state =
                        if access == Access::ReadWrite && nothing_changed { LogState::Ignore } else { base_state };
                    writer.push(CapturedChange {
                        state,
                        record_id,
                        sfid: text.sfid,
                        old: Some(text.old),
                        values: text.values,
                    });
                }
                (Some(old), None) => {
                    let record_id = renderer.record_id(&old);
                    let text = renderer.render_delete(&old);
                    let state =
                        if access == Access::ReadWrite && text.sfid.is_none() { LogState::Ignore } else { base_state };
                    writer.push(CapturedChange {
                        state,
                        record_id,
                        sfid: text.sfid,
                        old: Some(text.old),
                        values: None,
                    });
                }
                (None, None) => {}
            });
            rows += 1;
            if rows.is_multiple_of(256) {
                scratch.reset();
            }
        }
        writer.flush();
        if let Some(cursor) = old_cursor {
            cursor.close();
        }
        if let Some(cursor) = new_cursor {
            cursor.close();
        }
    }
}

/// The next row of an optional transition table: `Some(None)` when the statement has no such table, `None` once
/// the table is exhausted.
unsafe fn next_row(cursor: Option<&mut TransitionCursor>, natts: usize) -> Option<Option<Row<'_>>> {
    match cursor {
        Some(cursor) => unsafe { cursor.next(natts) }.map(Some),
        None => Some(None),
    }
}

/// Reads a transition table row by row into a reusable slot.
struct TransitionCursor {
    store: *mut pg_sys::Tuplestorestate,
    slot: *mut pg_sys::TupleTableSlot,
}

impl TransitionCursor {
    unsafe fn new(store: *mut pg_sys::Tuplestorestate, tupdesc: pg_sys::TupleDesc) -> Self {
        unsafe {
            pg_sys::tuplestore_rescan(store);
            let slot = pg_sys::MakeSingleTupleTableSlot(tupdesc, &raw const pg_sys::TTSOpsMinimalTuple);
            Self { store, slot }
        }
    }

    /// The next row, deformed; valid until the following call.
    unsafe fn next<'s>(&'s mut self, natts: usize) -> Option<Row<'s>> {
        unsafe {
            if !pg_sys::tuplestore_gettupleslot(self.store, true, false, self.slot) {
                return None;
            }
            pg_sys::slot_getallattrs(self.slot);
            Some(Row {
                values: std::slice::from_raw_parts((*self.slot).tts_values, natts),
                nulls: std::slice::from_raw_parts((*self.slot).tts_isnull, natts),
            })
        }
    }

    unsafe fn close(self) {
        unsafe { pg_sys::ExecDropSingleTupleTableSlot(self.slot) };
    }
}
