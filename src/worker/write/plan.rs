//! Planning a claim (`pgforce_core::delivery::plan`) with what it needs from Postgres, read in one transaction:
//! whether retried rows were deleted since, their current values (retries never go back in time), and the current
//! Salesforce ids of rows whose log entries carry none, and of the parent rows foreign keys point at. The worker
//! sends the plan; `salesforce.preview()` shows it.

use std::collections::HashMap;

use pgforce_core::delivery::plan::{plan, Plan};
use pgforce_core::delivery::Claimed;
use pgrx::spi::SpiClient;

use super::record;
use crate::worker::error::WorkerError;
use crate::worker::sql::Statements;

pub fn plan_claim(client: &mut SpiClient<'_>, st: &mut Statements, claimed: &Claimed) -> Result<Plan, WorkerError> {
    let mut plan = plan(claimed);
    let tables = &claimed.tables;
    // Writes tried before go with the rows' current values, unless the row was deleted since: the row there now, if
    // any, is another one.
    let wanted = plan.deletes_wanted();
    if !wanted.is_empty() {
        plan.mark_deleted_later(&record::deleted_later(client, st, tables, wanted)?);
    }
    let wanted = plan.current_rows_wanted();
    if !wanted.is_empty() {
        plan.refresh(&record::current_rows(client, st, tables, wanted)?);
    }
    // Updates and deletes whose log rows carry no sfid take the mapped row's current one.
    let wanted = plan.sfids_wanted();
    let sfids = if wanted.is_empty() { HashMap::new() } else { record::current_sfids(client, st, tables, wanted)? };
    plan.decide(tables, &sfids);
    // Foreign keys: the parents' Salesforce ids, or why the write waits or fails.
    plan.send_lookup_changes(tables);
    let wanted = plan.parents_wanted(tables);
    let parents = if wanted.is_empty() { HashMap::new() } else { record::parent_rows(client, st, tables, wanted)? };
    plan.link(tables, &parents);
    Ok(plan)
}
