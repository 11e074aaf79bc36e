//! Server globals pgrx does not bind. Both are exported by every supported PostgreSQL.

use std::ffi::c_int;

use pgrx::pg_sys;

mod ffi {
    use super::*;
    extern "C" {
        /// `xmlbinary` GUC (utils/xml.h): 0 = base64 (the default), 1 = hex.
        pub static xmlbinary: c_int;
        /// utils/datum.h: binary equality of two datums of one type.
        pub fn datumIsEqual(value1: pg_sys::Datum, value2: pg_sys::Datum, typ_by_val: bool, typ_len: c_int) -> bool;
    }
}

const XMLBINARY_BASE64: c_int = 0;

/// True in sessions whose writes must be captured: Heroku Connect's convention is that only writes made while
/// `xmlbinary = 'base64'` (the default) come from users; the sync engine's own writes run with `hex`.
pub fn is_user_write() -> bool {
    // SAFETY: reading an int GUC variable of this backend from its only thread.
    unsafe { ffi::xmlbinary == XMLBINARY_BASE64 }
}

/// Binary equality; equal datums always render to equal text, so rendering can be skipped for them.
///
/// # Safety
/// Both datums must be valid values of one type with the given `typbyval`/`typlen`.
pub unsafe fn datums_equal(a: pg_sys::Datum, b: pg_sys::Datum, typbyval: bool, typlen: i16) -> bool {
    unsafe { ffi::datumIsEqual(a, b, typbyval, c_int::from(typlen)) }
}
