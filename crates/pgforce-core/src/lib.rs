//! pgforce's logic that needs no Postgres: the hstore text of the trigger log, mapping rules, planning merged
//! writes, converting values, and the Salesforce client with its retry rules.
//! Plain `cargo test` covers it.

pub mod hstore;
pub mod mapping;
pub mod convert;
pub mod plan;
pub mod retry;
pub mod salesforce;
