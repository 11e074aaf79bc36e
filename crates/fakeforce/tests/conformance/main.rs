//! Conformance tests: each asserts the documented status codes and JSON/CSV shapes of one part of the Salesforce API
//! (reference: shared/reference/heroku-connect-and-salesforce.md, Part 2 and Part 3 B) over real HTTP.

mod bulk;
mod client;
mod collections;
mod faults;
mod model;
mod oauth;
mod query;
mod single;
