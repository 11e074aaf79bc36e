//! Appends captured changes to `_trigger_log`: rows are gathered per statement and written with one prepared,
//! set-based INSERT per chunk, so the per-row cost is building a few array elements.

use std::cell::RefCell;
use std::ffi::{CStr, CString};

use pgforce_core::log::{Action, LogState};
use pgrx::pg_sys;
use pgrx::PgMemoryContexts;

/// Rows per INSERT: bounds the memory a huge statement needs while keeping per-statement costs amortised.
const CHUNK_ROWS: usize = 8192;

/// One change as the trigger log records it.
pub struct CapturedChange<'a> {
    pub state: LogState,
    pub record_id: Option<i64>,
    pub sfid: Option<&'a [u8]>,
    pub old: Option<&'a [u8]>,
    pub values: Option<&'a [u8]>,
}

struct SavedPlan {
    schema: pg_sys::Oid,
    has_relid: bool,
    plan: pg_sys::SPIPlanPtr,
}

thread_local! {
    /// The INSERT, prepared once per backend. Postgres re-plans it by itself if the log table changes.
    static PLAN: RefCell<Option<SavedPlan>> = const { RefCell::new(None) };
}

/// Collects the changes of one statement on one table, then writes them.
pub struct LogWriter {
    schema: pg_sys::Oid,
    action: Action,
    table_name: CString,
    relid: pg_sys::Oid,
    context: PgMemoryContexts,
    states: ArrayColumn,
    record_ids: ArrayColumn,
    sfids: ArrayColumn,
    olds: ArrayColumn,
    values: ArrayColumn,
}

impl LogWriter {
    /// `schema` is the extension's schema (where `_trigger_log` lives).
    pub fn new(schema: pg_sys::Oid, action: Action, table_name: &CStr, relid: pg_sys::Oid) -> Self {
        Self {
            schema,
            action,
            table_name: table_name.to_owned(),
            relid,
            context: PgMemoryContexts::new("pgforce capture"),
            states: ArrayColumn::default(),
            record_ids: ArrayColumn::default(),
            sfids: ArrayColumn::default(),
            olds: ArrayColumn::default(),
            values: ArrayColumn::default(),
        }
    }

    pub fn push(&mut self, change: CapturedChange) {
        let context = &mut self.context;
        // SAFETY: text datums are copied into the writer's context, which outlives them until the next flush.
        unsafe {
            context.switch_to(|_| {
                self.states.push(Some(text_datum(change.state.as_str().as_bytes())));
                self.sfids.push(change.sfid.map(|v| text_datum(v)));
                self.olds.push(change.old.map(|v| text_datum(v)));
                self.values.push(change.values.map(|v| text_datum(v)));
            });
        }
        self.record_ids.push(change.record_id.map(pg_sys::Datum::from));
        if self.states.len() >= CHUNK_ROWS {
            self.flush();
        }
    }

    /// Writes the gathered rows, if any.
    pub fn flush(&mut self) {
        if self.states.len() == 0 {
            return;
        }
        // SAFETY: every array holds valid datums of its element type; the plan's parameters match them.
        unsafe {
            let n = self.states.len();
            let args = self.context.switch_to(|_| {
                [
                    text_datum(self.action.as_str().as_bytes()),
                    text_datum(self.table_name.as_bytes()),
                    pg_sys::Datum::from(self.relid),
                    self.states.text_array(),
                    self.record_ids.array(pg_sys::INT8OID, 8, true, b'd'),
                    self.sfids.text_array(),
                    self.olds.text_array(),
                    self.values.text_array(),
                ]
            });
            execute_insert(self.schema, args, n);
            self.context.reset();
        }
        for column in [&mut self.states, &mut self.record_ids, &mut self.sfids, &mut self.olds, &mut self.values] {
            column.clear();
        }
    }
}

/// One column of a chunk: its values and NULL flags, passed to the INSERT as a Postgres array.
#[derive(Default)]
struct ArrayColumn {
    datums: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
}

impl ArrayColumn {
    fn push(&mut self, value: Option<pg_sys::Datum>) {
        self.datums.push(value.unwrap_or(pg_sys::Datum::from(0usize)));
        self.nulls.push(value.is_none());
    }

    fn len(&self) -> usize {
        self.datums.len()
    }

    fn clear(&mut self) {
        self.datums.clear();
        self.nulls.clear();
    }

    unsafe fn text_array(&self) -> pg_sys::Datum {
        unsafe { self.array(pg_sys::TEXTOID, -1, false, b'i') }
    }

    /// A one-dimensional array of the element type described by the other arguments.
    unsafe fn array(&self, elem_type: pg_sys::Oid, elem_len: i32, elem_byval: bool, elem_align: u8) -> pg_sys::Datum {
        let mut dims = [self.datums.len() as i32];
        let mut lbs = [1i32];
        let nulls = if self.nulls.contains(&true) { self.nulls.as_ptr() as *mut bool } else { std::ptr::null_mut() };
        unsafe {
            pg_sys::Datum::from(pg_sys::construct_md_array(
                self.datums.as_ptr() as *mut pg_sys::Datum,
                nulls,
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
}

unsafe fn text_datum(bytes: &[u8]) -> pg_sys::Datum {
    unsafe { pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(bytes.as_ptr().cast(), bytes.len() as i32)) }
}

/// Whether the log has the `relid` column (0.2.0 and later). After the library is upgraded and before
/// `ALTER EXTENSION pgforce UPDATE` runs, the log still has the previous release's columns, and capture must go on
/// writing them: an application's writes never wait for an extension update.
unsafe fn log_has_relid(schema: pg_sys::Oid) -> bool {
    unsafe {
        let log = pg_sys::get_relname_relid(c"_trigger_log".as_ptr(), schema);
        log != pg_sys::Oid::INVALID && pg_sys::get_attnum(log, c"relid".as_ptr()) != pg_sys::InvalidAttrNumber as i16
    }
}

/// The INSERT of one chunk. Every name is schema-qualified: capture runs as the extension's owner, so the
/// caller's search_path must not be able to redirect it.
fn insert_sql(schema: pg_sys::Oid, has_relid: bool) -> CString {
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
    let (relid_column, relid_value) = if has_relid { (" relid,", " $3::pg_catalog.regclass,") } else { ("", "") };
    let sql = format!(
        "INSERT INTO {log} (txid, created_at, updated_at, state, action, table_name,{relid_column} record_id, sfid, old, \"values\") \
         SELECT pg_catalog.txid_current(), pg_catalog.clock_timestamp(), NULL, r.state, $1, $2,{relid_value} \
                r.record_id, r.sfid, r.old, r.vals \
           FROM ROWS FROM (pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), \
                           pg_catalog.unnest($7), pg_catalog.unnest($8)) AS r(state, record_id, sfid, old, vals)"
    );
    CString::new(sql).unwrap_or_default()
}

unsafe fn execute_insert(schema: pg_sys::Oid, mut args: [pg_sys::Datum; 8], rows: usize) {
    unsafe {
        pg_sys::SPI_connect();
        let has_relid = log_has_relid(schema);
        let plan = PLAN.with(|cell| {
            let mut saved = cell.borrow_mut();
            match saved.as_ref() {
                Some(p) if p.schema == schema && p.has_relid == has_relid => p.plan,
                _ => {
                    if let Some(old) = saved.take() {
                        pg_sys::SPI_freeplan(old.plan);
                    }
                    let sql = insert_sql(schema, has_relid);
                    let mut types = [
                        pg_sys::TEXTOID,
                        pg_sys::TEXTOID,
                        pg_sys::OIDOID,
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
                    *saved = Some(SavedPlan { schema, has_relid, plan });
                    plan
                }
            }
        });
        let nulls = [b' ' as std::ffi::c_char; 8];
        let status = pg_sys::SPI_execute_plan(plan, args.as_mut_ptr(), nulls.as_ptr(), false, 0);
        let processed = pg_sys::SPI_processed;
        if status != pg_sys::SPI_OK_INSERT as i32 || processed as usize != rows {
            pgrx::error!("pgforce: trigger log insert wrote {processed} of {rows} rows (SPI code {status})");
        }
        pg_sys::SPI_finish();
    }
}
