//! The triggers `map_table` installs on a mapped table.
//!
//! * `pgforce_status` (BEFORE INSERT OR UPDATE, per row) keeps `_hc_lastop`/`_hc_err` as Heroku Connect does.
//! * `pgforce_capture_{insert,update,delete}` (AFTER, per statement, with transition tables) log every changed row
//!   with the semantics of Connect's VERSION 4 logger, but in one set-based write per statement instead of one
//!   PL/pgSQL call and one INSERT per row.

mod log_writer;
mod mapped;
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
use row_text::{FixedOutputSettings, Row, RowRenderer};

pub use mapped::init as init_mapped_cache;
pub use status::WRITING_OUTCOMES;

/// Names of the transition tables the capture triggers declare (`REFERENCING ... AS`).
pub const OLD_ROWS: &str = "pgforce_old_rows";
pub const NEW_ROWS: &str = "pgforce_new_rows";

/// Where and how a trigger fired, as Postgres says: every pgforce trigger function checks it before doing anything,
/// because a role that can attach a function to a table chooses all of it.
pub(crate) struct Firing {
    pub before: bool,
    pub per_row: bool,
    /// `None` for TRUNCATE.
    pub action: Option<Action>,
    pub relid: pg_sys::Oid,
    /// The schema of the firing function: the extension's.
    pub schema: pg_sys::Oid,
}

impl Firing {
    pub fn of(data: &pg_sys::TriggerData) -> Firing {
        let event = data.tg_event;
        // SAFETY: Postgres hands a trigger its relation and its pg_trigger entry.
        let (relid, schema) =
            unsafe { ((*data.tg_relation).rd_id, pg_sys::get_func_namespace((*data.tg_trigger).tgfoid)) };
        Firing {
            before: event & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_BEFORE,
            per_row: event & pg_sys::TRIGGER_EVENT_ROW != 0,
            action: match event & pg_sys::TRIGGER_EVENT_OPMASK {
                pg_sys::TRIGGER_EVENT_INSERT => Some(Action::Insert),
                pg_sys::TRIGGER_EVENT_UPDATE => Some(Action::Update),
                pg_sys::TRIGGER_EVENT_DELETE => Some(Action::Delete),
                _ => None,
            },
            relid,
            schema,
        }
    }

    /// E.g. `AFTER DELETE FOR EACH ROW`.
    fn describe(&self) -> String {
        format!(
            "{} {} FOR EACH {}",
            if self.before { "BEFORE" } else { "AFTER" },
            self.action.map_or("TRUNCATE", Action::as_str),
            if self.per_row { "ROW" } else { "STATEMENT" }
        )
    }

    /// Refuses the firing (SQLSTATE 39P01): nothing is captured or changed.
    pub fn misused(&self, trigger: &PgTrigger, function: &'static str, expected: &'static str) -> ! {
        raise(PgforceError::TriggerMisused {
            function,
            fired: self.describe(),
            table: trigger.table_name().unwrap_or_default(),
            expected,
        })
    }

    /// The mapping of the firing relation; refuses (SQLSTATE 42501) a relation that is not mapped.
    pub fn mapped(&self, trigger: &PgTrigger, function: &'static str) -> mapped::Mapping {
        mapped::mapping_of(self.relid, self.schema).unwrap_or_else(|| {
            raise(PgforceError::NotMappedForCapture { function, table: trigger.table_name().unwrap_or_default() })
        })
    }
}

/// Statement-level capture trigger, as `map_table` installs it: AFTER INSERT, UPDATE or DELETE, FOR EACH STATEMENT,
/// with the transition tables of its event, on a mapped table. Its argument (the access mode) is informational:
/// the mapping decides.
#[pg_trigger]
fn _capture_changes<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, PgforceError> {
    let data = trigger.trigger_data();
    let firing = Firing::of(data);
    let (has_old, has_new) = (!data.tg_oldtable.is_null(), !data.tg_newtable.is_null());
    let after_statement = !firing.before && !firing.per_row;
    let action = match firing.action {
        Some(Action::Insert) if after_statement && has_new => Action::Insert,
        Some(Action::Update) if after_statement && has_old && has_new => Action::Update,
        Some(Action::Delete) if after_statement && has_old => Action::Delete,
        _ => firing.misused(
            trigger,
            "capture trigger",
            "AFTER INSERT, UPDATE or DELETE FOR EACH STATEMENT with transition tables",
        ),
    };
    if !is_user_write() {
        return Ok(None);
    }
    let mapping = firing.mapped(trigger, "capture trigger");
    // Changes nothing will send now (a paused or read-only mapping's) wake nobody: a busy application writing a
    // paused table costs the worker nothing. resume() wakes it.
    let _quiet = wake::Quiet::when(mapping.paused || mapping.access == Access::ReadOnly);
    // SAFETY: Postgres hands a statement trigger valid transition tables for the events it declared.
    unsafe { capture_statement(data, mapping.access, action, firing) };
    Ok(None)
}

unsafe fn capture_statement(data: &pg_sys::TriggerData, access: Access, action: Action, firing: Firing) {
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

        let mut writer = LogWriter::new(firing.schema, action, table_name, firing.relid);
        let mut renderer = RowRenderer::new(tupdesc);
        let output_settings = FixedOutputSettings::set();
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
                    let state = if access.sends() && nothing_changed { LogState::Ignore } else { base_state };
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
                    let state = if access.sends() && text.sfid.is_none() { LogState::Ignore } else { base_state };
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
        drop(output_settings);
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
