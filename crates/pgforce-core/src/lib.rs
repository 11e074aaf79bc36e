//! pgforce's logic that needs no Postgres, in the order data flows through it: the trigger log's vocabulary
//! (`log`) and hstore text (`hstore`), what a mapping may contain (`mapping`), the worker's settings (`config`),
//! one delivery from claimed rows to recorded outcomes (`delivery`: merge → plan → send → outcome), with values
//! converted to Salesforce JSON (`convert`) and checked against the fields' describe (`describe`), the Salesforce
//! client (`salesforce`: its settings, the requests it made), the retry rules (`retry`) and the pace of delivery when the API budget runs low (`pacing`),
//! the worker's connection state (`status`), what operators are alerted of (`alert`), what `salesforce.diagnose()` judges (`diagnose`) and the delivery
//! counters (`metrics`), and what undoing deliveries takes (`rollback`).
//! Plain `cargo test` covers it.

pub mod alert;
pub mod config;
pub mod convert;
pub mod delivery;
pub mod describe;
pub mod diagnose;
pub mod hstore;
pub mod log;
pub mod mapping;
pub mod metrics;
pub mod pacing;
pub mod read;
pub mod retry;
pub mod rollback;
pub mod salesforce;
pub mod status;
