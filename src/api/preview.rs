//! `salesforce.preview()`: the requests the worker would send next, planned exactly as the worker plans them
//! (`worker::write::claim::peek`, `worker::write::plan::plan_claim`, `Plan::waves`) but from a read of the queue that neither
//! locks nor changes anything, and without calling Salesforce. One row per record, in the order the calls go.

use pgforce_core::delivery::batch;
use pgforce_core::delivery::plan::{Limits, Operation};
use pgforce_core::salesforce::CallKind;
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::error::PgforceError;
use crate::guc;
use crate::worker::sql::Statements;
use crate::worker::write::{claim, plan};

/// Wrapped by `salesforce.preview(tbl, max_records)` (sql/finalize.sql).
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity, clippy::result_large_err)]
fn _preview(
    tbl: Option<pg_sys::Oid>,
    max_records: Option<i32>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(request, i32),
            name!(wave, i32),
            name!(method, String),
            name!(path, String),
            name!(record, JsonB),
            name!(log_ids, Vec<i64>),
            name!(table_name, String),
            name!(sobject, String),
        ),
    >,
    pgrx::pg_sys::panic::ErrorReport,
> {
    let max_records = max_records.unwrap_or(200);
    if max_records < 1 {
        return Err(PgforceError::BadMaxRecords(max_records).into());
    }
    let rows = Spi::connect_mut(|client| -> Result<Vec<_>, PgforceError> {
        let schema = super::mapping::extension_schema(client)?;
        let mut config = guc::config();
        config.batch_size = i64::from(max_records);
        let mut st = Statements::prepare(client, &schema).map_err(|e| PgforceError::Internal(e.to_string()))?;
        let claimed = claim::peek(client, &mut st, &config, tbl).map_err(|e| PgforceError::Internal(e.to_string()))?;
        let mut plan =
            plan::plan_claim(client, &mut st, &claimed).map_err(|e| PgforceError::Internal(e.to_string()))?;
        plan.refuse_oversized(config.max_request_bytes);
        let tables = &claimed.tables;
        plan.order(tables);
        let waves = plan.waves(tables, Limits::of(&config));
        let api_version = config.connection.api_version.clone();
        let mut out = Vec::new();
        let mut request = 0;
        for (w, wave) in waves.iter().enumerate() {
            for batch in wave {
                request += 1;
                let ids: Vec<&str> = match batch.kind {
                    CallKind::Delete => batch.items.iter().filter_map(|(_, v)| v.as_str()).collect(),
                    _ => Vec::new(),
                };
                let (method, path) = match (&batch.bulk, batch::operation(&batch.kind)) {
                    // One Bulk API 2.0 ingest job (create, upload, close, poll, results) for the whole batch.
                    (Some(object), Some((operation, _))) => (
                        "BULK",
                        format!(
                            "/services/data/v{api_version}/jobs/ingest ({operation} job of {} {object} records)",
                            batch.items.len()
                        ),
                    ),
                    _ => batch.kind.request(&api_version, &ids),
                };
                for (job, record) in &batch.items {
                    let job = &plan.jobs[*job];
                    let table = tables.get(&job.table);
                    out.push((
                        request,
                        w as i32 + 1,
                        method.to_string(),
                        path.clone(),
                        JsonB(record.clone()),
                        job.write.log_ids.clone(),
                        table.map(|t| t.qualified.clone()).unwrap_or_default(),
                        table.map(|t| t.target.sobject.clone()).unwrap_or_default(),
                    ));
                }
            }
        }
        // What would not be sent is shown too, after the calls: the worker settles it without a call.
        for job in &plan.jobs {
            let why = match &job.op {
                Operation::Refuse(m) => format!("not sent, fails: {m}"),
                Operation::Superseded(m) => format!("not sent: {m}"),
                Operation::Skip => "not sent: nothing to change".to_string(),
                Operation::Wait(m, _) => format!("not sent yet: {m}"),
                _ => continue,
            };
            let table = tables.get(&job.table);
            out.push((
                0,
                0,
                "NONE".to_string(),
                why,
                JsonB(Default::default()),
                job.write.log_ids.clone(),
                table.map(|t| t.qualified.clone()).unwrap_or_default(),
                table.map(|t| t.target.sobject.clone()).unwrap_or_default(),
            ));
        }
        Ok(out)
    })
    .map_err(pgrx::pg_sys::panic::ErrorReport::from)?;
    Ok(TableIterator::new(rows))
}
