//! Asking Salesforce for a mapping's changes: the first page of every mapping polled together (and the delete log of
//! those whose sweep is due) in one Composite call, then each mapping's further pages one by one, each applied as it
//! arrives (`apply::page`), with no transaction open while a call is out.

use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use pgforce_core::config::Config;
use pgforce_core::mapping::relationship_column;
use pgforce_core::read::{page, soql, sweep, Position};
use pgforce_core::salesforce::composite;
use pgforce_core::salesforce::CallError;
use serde_json::Value;

use super::apply::{self, PageOutcome, Pass};
use super::state;
use super::Reading;
use crate::worker::engine::status::Step;
use crate::worker::engine::{threads, Engine};
use crate::worker::error::WorkerError;
use crate::worker::stop_requested;

/// What one mapping got from the call made for its group.
pub(super) struct Asked {
    /// The first page of changes; `None`: `read` asks for it itself.
    pub first: Result<Option<Result<Value, CallError>>, String>,
    /// The delete log since `swept_to` (the window's start, and the answer), when a sweep was due.
    pub sweep: Option<(i64, Result<Value, CallError>)>,
}

/// The fields a mapping's pages select besides the system ones; on a mapping that sends, `CreatedById` too (a
/// record the integration user created may be one of its inserts in flight: `local::lookup`).
pub(super) fn fields(mapping: &Reading) -> Vec<String> {
    // A relationship column (`account__external_id__c`) reads the parent's external id through the relationship
    // (`account.external_id__c`), as it is sent.
    let mut fields: Vec<String> = mapping
        .columns
        .iter()
        .map(|c| match (&c.parent, relationship_column(&c.name)) {
            (Some(parent), _) => parent.field.clone(),
            (None, Some(r)) => format!("{}.{}", r.relationship, r.external_id_field),
            (None, None) => c.name.clone(),
        })
        .collect();
    if mapping.sends {
        fields.push("CreatedById".into());
    }
    fields
}

pub(super) fn now_epoch() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// Asks for the first page of each mapping of `group` (at most five), and for the delete log of each whose sweep is
/// due, in one Composite call: one API call, not one each. A lone mapping with no sweep due asks for itself. A
/// failure of the call is recorded for each mapping.
pub(super) fn ask_together(engine: &mut Engine, config: &Config, group: &[&Reading]) -> Vec<Asked> {
    let now = now_epoch();
    let sweep_every = config.delete_sweep_interval.as_secs() as i64;
    let mut sweeps: Vec<Option<i64>> = Vec::new();
    for m in group {
        match m.swept_to {
            Some(from) if now - from >= sweep_every => sweeps.push(Some(from)),
            Some(_) => sweeps.push(None),
            None => {
                // Never swept: deletes from now on (the first read saw everything before).
                let _ = engine.with_statements(|c, st| state::record_swept(c, &st.schema, m.relid, now));
                sweeps.push(None);
            }
        }
    }
    if group.len() < 2 && sweeps.iter().all(Option::is_none) {
        return group.iter().map(|_| Asked { first: Ok(None), sweep: None }).collect();
    }
    let settings = match engine.conn.settings(config) {
        Ok(s) => s,
        Err(e) => return group.iter().map(|_| Asked { first: Err(e.clone()), sweep: None }).collect(),
    };
    let client = engine.conn.client(&mut engine.db, &settings);
    let version = client.api_version().to_string();
    let mut urls: Vec<String> = group
        .iter()
        .map(|m| {
            let soql = soql::page(
                &m.sobject,
                &fields(m),
                &soql::poll_start(&m.position, config.read_look_back.as_secs() as i64),
            );
            composite::url(&format!("/services/data/v{version}/queryAll"), &[("q", &soql)])
        })
        .collect();
    for (m, from) in group.iter().zip(&sweeps) {
        if let Some(from) = from {
            let (path, [(a, start), (b, end)]) = sweep::deleted_path(&version, &m.sobject, *from, now);
            urls.push(composite::url(&path, &[(a, &start), (b, &end)]));
        }
    }
    engine.set_step(Step::Reading { object: group.iter().map(|m| m.sobject.as_str()).collect::<Vec<_>>().join(", ") });
    let answer = client.composite_get(&urls);
    // One call, counted once (for the first mapping of the group).
    engine.metrics.api_call(&group[0].table_name);
    engine.write_requests(config);
    match answer {
        Ok(parts) => {
            let mut parts = parts.into_iter();
            let firsts: Vec<Result<Value, CallError>> = parts.by_ref().take(group.len()).collect();
            firsts
                .into_iter()
                .zip(&sweeps)
                .map(|(first, from)| Asked {
                    first: Ok(Some(first)),
                    sweep: from.and_then(|from| parts.next().map(|answer| (from, answer))),
                })
                .collect()
        }
        Err(e) => {
            let message = e.to_string();
            for m in group {
                state::failed(engine, m.relid, message.clone());
            }
            group.iter().map(|_| Asked { first: Err(message.clone()), sweep: None }).collect()
        }
    }
}

/// Reads `mapping`'s changes since its position, at most `budget` pages. Returns the pages read and whether the
/// read reached the end of Salesforce's changes.
pub(super) fn read(
    engine: &mut Engine,
    config: &Config,
    mapping: &Reading,
    budget: usize,
    mut first: Option<Result<Value, CallError>>,
) -> Result<(usize, bool), String> {
    let settings = engine.conn.settings(config)?;
    let client = engine.conn.client(&mut engine.db, &settings);
    let fields = fields(mapping);
    let user = if mapping.sends { client.user_id().ok().flatten() } else { None };
    // Each poll starts `pgforce.read_look_back` before the position, so that a record Salesforce committed later than
    // its stamp (a long transaction) is still seen; re-read records that did not change write nothing.
    let mut from = soql::poll_start(&mapping.position, config.read_look_back.as_secs() as i64);
    let mut position = mapping.position.clone();
    // The next page is asked for while this one is applied (its start is known before): a load costs the slower of
    // the two, not their sum. The asking thread touches no Postgres; its answer is counted when it is taken.
    let mut next: Option<JoinHandle<Result<Value, CallError>>> = None;
    let took = |engine: &mut Engine, next: &mut Option<JoinHandle<Result<Value, CallError>>>| {
        next.take().map(|h| {
            let answer = h.join().unwrap_or_else(|_| {
                Err(CallError::Failed { code: "PREFETCH".into(), message: "the page's thread failed".into() })
            });
            engine.metrics.api_call(&mapping.table_name);
            engine.write_requests(config);
            answer
        })
    };
    for n in 0..budget.max(1) {
        let answer = match first.take().or_else(|| took(engine, &mut next)) {
            Some(answer) => answer,
            None => {
                engine.set_step(Step::Reading { object: mapping.sobject.clone() });
                let answer = client.query_all_page(&soql::page(&mapping.sobject, &fields, &from));
                engine.metrics.api_call(&mapping.table_name);
                engine.write_requests(config);
                answer
            }
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => return Err(state::failed(engine, mapping.relid, e.to_string())),
        };
        let page = page::parse(&answer)?;
        let done = page.records.len() < soql::PAGE_SIZE;
        if let Some(last) = page.records.last().filter(|_| !done && n + 1 < budget) {
            let (client, soql) = (
                client.clone(),
                soql::page(&mapping.sobject, &fields, &Position { stamp: Some(last.stamp), id: Some(last.id.clone()) }),
            );
            next = threads::spawn("pgforce page", move || client.query_all_page(&soql)).ok();
        }
        let applied: Result<PageOutcome, WorkerError> = engine.with_statements(|c, st| {
            apply::page(
                c,
                &st.schema,
                mapping,
                &page,
                Pass::Poll { position: &mut position, caught_up: done },
                user.as_deref(),
            )
        });
        let outcome = match applied {
            Ok(outcome) => outcome,
            Err(e) => {
                let _ = took(engine, &mut next);
                return Err(e.to_string());
            }
        };
        match outcome {
            PageOutcome::Applied => {}
            // Started over meanwhile (reload(), mapping again): the next step reads from the new start, at once.
            PageOutcome::StartedOver => {
                let _ = took(engine, &mut next);
                return Ok((n + 1, false));
            }
            // An insert in flight may own a record: the rest waits for the next interval, when its outcome is in.
            PageOutcome::Held => {
                let _ = took(engine, &mut next);
                return Ok((n + 1, true));
            }
        }
        match page.records.last() {
            Some(last) if !done => from = Position { stamp: Some(last.stamp), id: Some(last.id.clone()) },
            _ => return Ok((n + 1, true)),
        }
        if stop_requested() || engine.conn.throttled(config) {
            let _ = took(engine, &mut next);
            return Ok((n + 1, false));
        }
    }
    let _ = took(engine, &mut next);
    Ok((budget, false))
}
