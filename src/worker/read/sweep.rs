//! The delete sweep, as the worker applies it (`pgforce_core::read::sweep`): of the ids Salesforce's delete log names
//! since the last sweep, those a row has are read again by Id through `queryAll`; a record deleted or undeleted is
//! applied as a poll would, and one `queryAll` no longer shows (purged, merged away) deletes its row (or flags it).
//! The position does not move. A gap in the log starts a full comparison (a reload).

use pgforce_core::config::Config;
use pgforce_core::read::page::{self, SfRecord};
use pgforce_core::read::sweep::{self, Swept, IDS_PER_QUERY};
use pgforce_core::salesforce::CallError;
use serde_json::Value;

use super::apply::{self, PageOutcome, Pass};
use super::poll::{fields, now_epoch};
use super::state;
use super::Reading;
use crate::worker::engine::Engine;
use crate::worker::error::WorkerError;

/// Applies the delete log's `answer` for the window that started at `start`.
pub(super) fn apply(
    engine: &mut Engine,
    config: &Config,
    mapping: &Reading,
    start: i64,
    answer: Result<Value, CallError>,
) -> Result<(), String> {
    let swept = match answer {
        Ok(body) => sweep::parse_deleted(&body, start)?,
        Err(CallError::Rejected { code, .. }) if sweep::is_gap(&code) => Swept::Gap,
        Err(e) => return Err(e.to_string()),
    };
    let (ids, covered) = match swept {
        Swept::Gap => {
            pgrx::log!(
                "pgforce: {}'s delete log has a gap since the last sweep: every record is read again",
                mapping.qualified
            );
            let now = now_epoch();
            return engine
                .with_statements(|c, st| {
                    state::start_over(c, &st.schema, mapping.relid)?;
                    state::record_swept(c, &st.schema, mapping.relid, now)
                })
                .map_err(|e| e.to_string());
        }
        Swept::Deleted { ids, covered } => (ids, covered),
    };
    let with_rows: Vec<String> = if ids.is_empty() {
        Vec::new()
    } else {
        engine.with_statements(|c, _| apply::rows_of(c, mapping, &ids)).map_err(|e| e.to_string())?
    };
    if !with_rows.is_empty() {
        let settings = engine.conn.settings(config)?;
        let client = engine.conn.client(&mut engine.db, &settings);
        let user = if mapping.sends { client.user_id().ok().flatten() } else { None };
        let fields = fields(mapping);
        for chunk in with_rows.chunks(IDS_PER_QUERY) {
            let answer = client.query_all_page(&sweep::by_ids(&mapping.sobject, &fields, chunk));
            engine.metrics.api_call(&mapping.table_name);
            engine.write_requests(config);
            let mut found = page::parse(&answer.map_err(|e| e.to_string())?)?;
            // Gone from queryAll too: deleted for good. Its row goes as a delete read by a poll would take it.
            for id in chunk {
                if !found.records.iter().any(|r| &r.id == id) {
                    found.records.push(SfRecord {
                        id: id.clone(),
                        stamp: covered,
                        deleted: true,
                        ..Default::default()
                    });
                }
            }
            let applied: Result<PageOutcome, WorkerError> = engine
                .with_statements(|c, st| apply::page(c, &st.schema, mapping, &found, Pass::Sweep, user.as_deref()));
            if applied.map_err(|e| e.to_string())? == PageOutcome::StartedOver {
                return Ok(()); // the reload that began meanwhile sees everything
            }
        }
    }
    engine
        .with_statements(|c, st| state::record_swept(c, &st.schema, mapping.relid, covered))
        .map_err(|e| e.to_string())
}
