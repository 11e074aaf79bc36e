//! Appends captured changes to `_trigger_log`: rows are gathered per statement and written with one prepared,
//! set-based INSERT per chunk, so the per-row cost is building a few array elements.

use std::cell::RefCell;
use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use pgrx::PgMemoryContexts;

/// Rows per INSERT: bounds the memory a huge statement needs while keeping per-statement costs amortised.
const CHUNK_ROWS: usize = 8192;

/// One change as the trigger log records it.
pub struct CapturedChange<'a> {
    pub state: &'static str,
    pub record_id: Option<i64>,
    pub sfid: Option<&'a [u8]>,
    pub old: Option<&'a [u8]>,
    pub values: Option<&'a [u8]>,
}

struct SavedPlan {
    schema: pg_sys::Oid,
    plan: pg_sys::SPIPlanPtr,
}

thread_local! {
    /// The INSERT, prepared once per backend. Postgres re-plans it by itself if the log table changes.
    static PLAN: RefCell<Option<SavedPlan>> = const { RefCell::new(None) };
}

/// Collects the changes of one statement on one table, then writes them.
pub struct LogWriter {
    schema: pg_sys::Oid,
    action: &'static str,
    table_name: CString,
    context: PgMemoryContexts,
    states: Vec<pg_sys::Datum>,
    record_ids: Vec<pg_sys::Datum>,
    record_id_nulls: Vec<bool>,
    sfids: Vec<pg_sys::Datum>,
    sfid_nulls: Vec<bool>,
    olds: Vec<pg_sys::Datum>,
    old_nulls: Vec<bool>,
    values: Vec<pg_sys::Datum>,
    value_nulls: Vec<bool>,
}

impl LogWriter {
    /// `schema` is the extension's schema (where `_trigger_log` lives).
    pub fn new(schema: pg_sys::Oid, action: &'static str, table_name: &CStr) -> Self {
        Self {
            schema,
            action,
            table_name: table_name.to_owned(),
            context: PgMemoryContexts::new("pgforce capture"),
            states: Vec::new(),
            record_ids: Vec::new(),
            record_id_nulls: Vec::new(),
            sfids: Vec::new(),
            sfid_nulls: Vec::new(),
            olds: Vec::new(),
            old_nulls: Vec::new(),
            values: Vec::new(),
            value_nulls: Vec::new(),
        }
    }

    pub fn push(&mut self, change: CapturedChange) {
        let context = &mut self.context;
        // SAFETY: text datums are copied into the writer's context, which outlives them until the next flush.
        unsafe {
            context.switch_to(|_| {
                self.states.push(text_datum(change.state.as_bytes()));
                push_optional(&mut self.sfids, &mut self.sfid_nulls, change.sfid.map(|v| text_datum(v)));
                push_optional(&mut self.olds, &mut self.old_nulls, change.old.map(|v| text_datum(v)));
                push_optional(&mut self.values, &mut self.value_nulls, change.values.map(|v| text_datum(v)));
            });
        }
        push_optional(
            &mut self.record_ids,
            &mut self.record_id_nulls,
            change.record_id.map(pg_sys::Datum::from),
        );
        if self.states.len() >= CHUNK_ROWS {
            self.flush();
        }
    }

    /// Writes the gathered rows, if any.
    pub fn flush(&mut self) {
        if self.states.is_empty() {
            return;
        }
        // SAFETY: every array holds valid datums of its element type; the plan's parameters match them.
        unsafe {
            let n = self.states.len();
            let args = self.context.switch_to(|_| {
                [
                    text_datum(self.action.as_bytes()),
                    text_datum(self.table_name.as_bytes()),
                    array_datum(&self.states, None, pg_sys::TEXTOID, -1, false, b'i'),
                    array_datum(&self.record_ids, Some(&self.record_id_nulls), pg_sys::INT8OID, 8, true, b'd'),
                    array_datum(&self.sfids, Some(&self.sfid_nulls), pg_sys::TEXTOID, -1, false, b'i'),
                    array_datum(&self.olds, Some(&self.old_nulls), pg_sys::TEXTOID, -1, false, b'i'),
                    array_datum(&self.values, Some(&self.value_nulls), pg_sys::TEXTOID, -1, false, b'i'),
                ]
            });
            execute_insert(self.schema, args, n);
            self.context.reset();
        }
        for v in [&mut self.states, &mut self.record_ids, &mut self.sfids, &mut self.olds, &mut self.values] {
            v.clear();
        }
        for v in [&mut self.record_id_nulls, &mut self.sfid_nulls, &mut self.old_nulls, &mut self.value_nulls] {
            v.clear();
        }
    }
}

fn push_optional(datums: &mut Vec<pg_sys::Datum>, nulls: &mut Vec<bool>, value: Option<pg_sys::Datum>) {
    datums.push(value.unwrap_or(pg_sys::Datum::from(0usize)));
    nulls.push(value.is_none());
}

unsafe fn text_datum(bytes: &[u8]) -> pg_sys::Datum {
    unsafe { pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(bytes.as_ptr().cast(), bytes.len() as i32)) }
}

unsafe fn array_datum(
    elems: &[pg_sys::Datum],
    nulls: Option<&[bool]>,
    elem_type: pg_sys::Oid,
    elem_len: i32,
    elem_byval: bool,
    elem_align: u8,
) -> pg_sys::Datum {
    let mut dims = [elems.len() as i32];
    let mut lbs = [1i32];
    let nulls_ptr = match nulls {
        Some(n) if n.iter().any(|&b| b) => n.as_ptr() as *mut bool,
        _ => std::ptr::null_mut(),
    };
    unsafe {
        pg_sys::Datum::from(pg_sys::construct_md_array(
            elems.as_ptr() as *mut pg_sys::Datum,
            nulls_ptr,
            1,
            dims.as_mut_ptr(),
            lbs.as_mut_ptr(),
            elem_type,
            elem_len,
            elem_byval,
            elem_align as std::ffi::c_char,
        ))
    }
}

/// The INSERT of one chunk. Every name is schema-qualified: capture runs as the extension's owner, so the
/// caller's search_path must not be able to redirect it.
fn insert_sql(schema: pg_sys::Oid) -> CString {
    // SAFETY: catalog lookup of the extension's own schema; NULL only if it was dropped concurrently.
    let name = unsafe {
        let p = pg_sys::get_namespace_name(schema);
        if p.is_null() {
            "salesforce".to_string()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    let log = format!("{}._trigger_log", pgrx::spi::quote_identifier(&name));
    let sql = format!(
        "INSERT INTO {log} (txid, created_at, updated_at, state, action, table_name, record_id, sfid, old, \"values\") \
         SELECT pg_catalog.txid_current(), pg_catalog.clock_timestamp(), NULL, r.state, $1, $2, r.record_id, \
                r.sfid, r.old, r.vals \
           FROM ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), \
                           pg_catalog.unnest($6), pg_catalog.unnest($7)) AS r(state, record_id, sfid, old, vals)"
    );
    CString::new(sql).unwrap_or_default()
}

unsafe fn execute_insert(schema: pg_sys::Oid, mut args: [pg_sys::Datum; 7], rows: usize) {
    unsafe {
        pg_sys::SPI_connect();
        let plan = PLAN.with(|cell| {
            let mut saved = cell.borrow_mut();
            match saved.as_ref() {
                Some(p) if p.schema == schema => p.plan,
                _ => {
                    if let Some(old) = saved.take() {
                        pg_sys::SPI_freeplan(old.plan);
                    }
                    let sql = insert_sql(schema);
                    let mut types = [
                        pg_sys::TEXTOID,
                        pg_sys::TEXTOID,
                        pg_sys::TEXTARRAYOID,
                        pg_sys::INT8ARRAYOID,
                        pg_sys::TEXTARRAYOID,
                        pg_sys::TEXTARRAYOID,
                        pg_sys::TEXTARRAYOID,
                    ];
                    let plan = pg_sys::SPI_prepare(sql.as_ptr(), types.len() as i32, types.as_mut_ptr());
                    if plan.is_null() {
                        let code = pg_sys::SPI_result;
                        pgrx::error!("pgforce: could not prepare the trigger log insert (SPI code {code})");
                    }
                    pg_sys::SPI_keepplan(plan);
                    *saved = Some(SavedPlan { schema, plan });
                    plan
                }
            }
        });
        let nulls = [b' ' as std::ffi::c_char; 7];
        let status = pg_sys::SPI_execute_plan(plan, args.as_mut_ptr(), nulls.as_ptr(), false, 0);
        let processed = pg_sys::SPI_processed;
        if status != pg_sys::SPI_OK_INSERT as i32 || processed as usize != rows {
            pgrx::error!("pgforce: trigger log insert wrote {processed} of {rows} rows (SPI code {status})");
        }
        pg_sys::SPI_finish();
    }
}
