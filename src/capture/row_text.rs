//! Renders rows of a mapped table as hstore text, exactly as `hstore(row) - '{_hc_lastop,_hc_err}'` would.
//!
//! Column metadata (hstore key order, output functions) is resolved once per statement, then every row costs one
//! output-function call per column and one buffer append.

use std::ffi::CStr;

use pgforce_core::hstore::{key_order, HstoreWriter};
use pgforce_core::mapping::STATUS_COLUMNS;
use pgrx::pg_sys;

use crate::server::datums_equal;

struct Column {
    /// 0-based position in the tuple descriptor.
    index: usize,
    key: Vec<u8>,
    output: pg_sys::FmgrInfo,
    typbyval: bool,
    typlen: i16,
}

/// Rendering plan for one table's rows.
pub struct RowRenderer {
    /// Logged columns in hstore key order.
    columns: Vec<Column>,
    natts: usize,
    id_index: Option<(usize, pg_sys::Oid)>,
    /// Position of `sfid` in `columns`.
    sfid_position: Option<usize>,
    /// Raw (unescaped) text of each logged column of the last old row, by position in `columns`.
    old_text: Vec<Option<(usize, usize)>>,
    old_buf: Vec<u8>,
    old_writer: HstoreWriter,
    writer: HstoreWriter,
}

/// While alive, values print the same whatever the writing session set: dates and timestamps in ISO form
/// (`DateStyle`), intervals in Postgres form (`IntervalStyle`), floats shortest-exact (`extra_float_digits`). The
/// worker reads the log text in that form only. Restored on drop, also when an error unwinds.
pub struct FixedOutputSettings {
    date_style: std::ffi::c_int,
    interval_style: std::ffi::c_int,
    float_digits: std::ffi::c_int,
}

impl FixedOutputSettings {
    pub fn set() -> Self {
        // SAFETY: the backend's own settings variables, read and written on its only thread; the output functions
        // read them on each call.
        unsafe {
            let saved = Self {
                date_style: pg_sys::DateStyle,
                interval_style: pg_sys::IntervalStyle,
                float_digits: pg_sys::extra_float_digits,
            };
            pg_sys::DateStyle = pg_sys::USE_ISO_DATES as std::ffi::c_int;
            pg_sys::IntervalStyle = pg_sys::INTSTYLE_POSTGRES as std::ffi::c_int;
            pg_sys::extra_float_digits = 1;
            saved
        }
    }
}

impl Drop for FixedOutputSettings {
    fn drop(&mut self) {
        // SAFETY: as in `set`.
        unsafe {
            pg_sys::DateStyle = self.date_style;
            pg_sys::IntervalStyle = self.interval_style;
            pg_sys::extra_float_digits = self.float_digits;
        }
    }
}

/// One deformed row: `values`/`nulls` indexed by tuple descriptor position.
pub struct Row<'a> {
    pub values: &'a [pg_sys::Datum],
    pub nulls: &'a [bool],
}

impl RowRenderer {
    /// # Safety
    /// `tupdesc` must be a valid tuple descriptor that outlives the renderer's use.
    pub unsafe fn new(tupdesc: pg_sys::TupleDesc) -> Self {
        let natts = unsafe { (*tupdesc).natts } as usize;
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(natts);
        let mut candidates = Vec::with_capacity(natts);
        let mut id_index = None;
        for index in 0..natts {
            // SAFETY: index < natts.
            let att = unsafe { &*tuple_desc_attr(tupdesc, index) };
            if att.attisdropped {
                continue;
            }
            let name = unsafe { CStr::from_ptr(att.attname.data.as_ptr()) }.to_bytes().to_vec();
            if name.as_slice() == b"id" {
                id_index = Some((index, att.atttypid));
            }
            if STATUS_COLUMNS.iter().any(|c| c.as_bytes() == name.as_slice()) {
                continue;
            }
            candidates.push((index, att.atttypid, att.attbyval, att.attlen));
            keys.push(name);
        }
        let mut columns = Vec::with_capacity(keys.len());
        for position in key_order(&keys) {
            let (index, typid, typbyval, typlen) = candidates[position];
            let mut output_fn = pg_sys::Oid::INVALID;
            let mut is_varlena = false;
            let mut output = unsafe { std::mem::zeroed::<pg_sys::FmgrInfo>() };
            // SAFETY: plain catalog lookups for a type the table uses.
            unsafe {
                pg_sys::getTypeOutputInfo(typid, &mut output_fn, &mut is_varlena);
                pg_sys::fmgr_info(output_fn, &mut output);
            }
            columns.push(Column { index, key: std::mem::take(&mut keys[position]), output, typbyval, typlen });
        }
        let old_text = vec![None; columns.len()];
        let sfid_position = columns.iter().position(|c: &Column| c.key == b"sfid");
        Self {
            columns,
            natts,
            id_index,
            sfid_position,
            old_text,
            old_buf: Vec::new(),
            old_writer: HstoreWriter::new(),
            writer: HstoreWriter::new(),
        }
    }

    pub fn natts(&self) -> usize {
        self.natts
    }

    /// The row's `id` as the trigger log's `record_id`.
    pub fn record_id(&self, row: &Row) -> Option<i64> {
        let (index, typid) = self.id_index?;
        if row.nulls[index] {
            return None;
        }
        let d = row.values[index];
        Some(match typid {
            pg_sys::INT2OID => d.value() as i16 as i64,
            pg_sys::INT4OID => d.value() as i32 as i64,
            _ => d.value() as i64,
        })
    }

    /// INSERT: the whole new row as `values`.
    pub fn render_insert(&mut self, new: &Row) -> &[u8] {
        self.writer.clear();
        for col in self.columns.iter_mut() {
            if new.nulls[col.index] {
                self.writer.push(&col.key, None);
            } else {
                let text = unsafe { output_text(&mut col.output, new.values[col.index]) };
                self.writer.push(&col.key, Some(text));
            }
        }
        self.writer.as_bytes()
    }

    /// UPDATE: the whole old row as `old`, the pairs whose text changed as `values` (empty when nothing
    /// changed), and the old `sfid`. Binary-equal values are skipped without rendering.
    pub fn render_update(&mut self, old: &Row, new: &Row) -> Rendered<'_> {
        self.render_old(old);
        self.writer.clear();
        for (position, col) in self.columns.iter_mut().enumerate() {
            let i = col.index;
            match (old.nulls[i], new.nulls[i]) {
                (true, true) => {}
                (false, true) => self.writer.push(&col.key, None),
                (old_null, false) => {
                    // SAFETY: both datums come from rows of this table's descriptor.
                    if !old_null && unsafe { datums_equal(old.values[i], new.values[i], col.typbyval, col.typlen) } {
                        continue;
                    }
                    let text = unsafe { output_text(&mut col.output, new.values[i]) };
                    let unchanged = self.old_text[position]
                        .map(|(start, len)| &self.old_buf[start..start + len] == text)
                        .unwrap_or(false);
                    if !unchanged {
                        self.writer.push(&col.key, Some(text));
                    }
                }
            }
        }
        Rendered { old: self.old_writer.as_bytes(), values: Some(self.writer.as_bytes()), sfid: self.old_sfid() }
    }

    /// DELETE: the whole old row as `old`, and its `sfid`.
    pub fn render_delete(&mut self, old: &Row) -> Rendered<'_> {
        self.render_old(old);
        Rendered { old: self.old_writer.as_bytes(), values: None, sfid: self.old_sfid() }
    }

    fn render_old(&mut self, row: &Row) {
        self.old_buf.clear();
        self.old_writer.clear();
        for (position, col) in self.columns.iter_mut().enumerate() {
            if row.nulls[col.index] {
                self.old_text[position] = None;
                self.old_writer.push(&col.key, None);
            } else {
                let text = unsafe { output_text(&mut col.output, row.values[col.index]) };
                let start = self.old_buf.len();
                self.old_buf.extend_from_slice(text);
                self.old_text[position] = Some((start, text.len()));
                self.old_writer.push(&col.key, Some(text));
            }
        }
    }

    /// `sfid` of the last old row, if set.
    fn old_sfid(&self) -> Option<&[u8]> {
        self.old_text[self.sfid_position?].map(|(start, len)| &self.old_buf[start..start + len])
    }
}

/// The texts of one UPDATE or DELETE, borrowed from the renderer.
pub struct Rendered<'a> {
    pub old: &'a [u8],
    pub values: Option<&'a [u8]>,
    pub sfid: Option<&'a [u8]>,
}

/// Text of a non-null datum through the type's output function; valid until the current memory context resets.
unsafe fn output_text<'a>(output: &mut pg_sys::FmgrInfo, value: pg_sys::Datum) -> &'a [u8] {
    unsafe { CStr::from_ptr(pg_sys::OutputFunctionCall(output, value)) }.to_bytes()
}

/// `TupleDescAttr(tupdesc, i)`.
///
/// # Safety
/// `i` must be below `natts`.
pub unsafe fn tuple_desc_attr(tupdesc: pg_sys::TupleDesc, i: usize) -> *const pg_sys::FormData_pg_attribute {
    #[cfg(feature = "pg18")]
    unsafe {
        pg_sys::TupleDescAttr(tupdesc, i as i32)
    }
    #[cfg(not(feature = "pg18"))]
    unsafe {
        (*tupdesc).attrs.as_ptr().add(i)
    }
}
