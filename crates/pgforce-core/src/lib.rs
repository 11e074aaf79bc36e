//! pgforce's logic that needs no Postgres: the hstore text format of the trigger log and the rules of a mapping.
//! Plain `cargo test` covers it.

pub mod hstore;
pub mod mapping;
