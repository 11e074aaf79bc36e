//! The SQL functions users call. Their public signatures are in `sql/finalize.sql`, thin wrappers over these.

mod audit;
mod diagnose;
mod mapping;
mod preview;
mod rollback;
mod session_client;
pub mod status;
