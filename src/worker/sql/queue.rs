//! The write queue: claiming due changes (and their mappings), putting back what a crash left in flight.

use super::*;

/// The write queue's statements (see the module).
pub struct QueueStatements {
    /// `$1 float8` seconds: rows a crash left `PENDING` go back to `NEW`, in doubt (they may have been sent), to be
    /// tried again after that long.
    pub reclaim_pending: OwnedPreparedStatement,
    /// A row deleted while its insert was on its way: its delete was logged without an sfid (as `IGNORE`) and would
    /// leave the new record in Salesforce. `$1 text` the table (qualified), `$2 bigint[]` row ids, `$3 text[]` the
    /// new sfids, `$4 bigint[]` the insert's log id: those deletes become `NEW` with the sfid.
    pub revive_deletes: OwnedPreparedStatement,
    /// After a bug in a cycle: `$1 float8` seconds to wait, `$2 int` max attempts, `$3 text` message. Rows still
    /// `PENDING` cost an attempt (`FAILED` when they run out), in doubt → their ids and tables.
    pub reclaim_after_bug: OwnedPreparedStatement,
    /// `$1 bigint` limit → due queue rows, oldest first, locked.
    pub claim: OwnedPreparedStatement,
    /// The same, of these records only (`QueueRead::Parents`).
    pub claim_parents: OwnedPreparedStatement,
    /// `$1 bigint[]` ids, `$2 text` state, `$3 text` message.
    pub set_state: OwnedPreparedStatement,
    /// The read-write mappings with their columns and types.
    pub load_tables: OwnedPreparedStatement,
    /// Per read-write mapping, its relationship columns: (table, column, lookup field, parent mapping's table).
    pub load_links: OwnedPreparedStatement,
    /// Seconds until the earliest scheduled retry.
    pub next_retry_in: OwnedPreparedStatement,
    /// `$1 text`: the entries in flight in a Bulk job, locked, read as a claim reads them (`queue_sql`).
    pub job_entries: OwnedPreparedStatement,
    /// `$1 bigint` limit → how many due `NEW` entries that could go through the Bulk API (of mappings with an
    /// upsert field, or updates and deletes that carry an sfid) the queue holds, counted up to the limit.
    pub due_count: OwnedPreparedStatement,
}

impl QueueStatements {
    pub(super) fn prepare(client: &SpiClient<'_>, schema: &str) -> Result<Self, WorkerError> {
        let log = format!("{schema}._trigger_log");
        let (new, pending, ignore, failed) =
            (LogState::New.as_str(), LogState::Pending.as_str(), LogState::Ignore.as_str(), LogState::Failed.as_str());
        // A Bulk job's entries stay in flight while the job is kept: the worker records them from its results.
        let not_in_a_job =
            format!("(bulk_job IS NULL OR NOT EXISTS (SELECT 1 FROM {schema}._bulk_jobs j WHERE j.id {EQ} bulk_job))");
        Ok(Self {
            reclaim_pending: prepare(
                client,
                &format!(
                    "UPDATE {log} SET state = '{new}', in_doubt_since = coalesce(in_doubt_since, updated_at),
                            next_attempt_at = pg_catalog.now() {PLUS} pg_catalog.make_interval(secs => $1),
                            updated_at = pg_catalog.now()
                      WHERE state {EQ} '{pending}' AND {not_in_a_job}"
                ),
                &[pg_sys::FLOAT8OID],
            )?,
            // A record with a retry scheduled for an earlier change is held back, so changes never overtake each
            // other. `FOR UPDATE SKIP LOCKED`: a row a user is changing is left for the next cycle.
            revive_deletes: prepare(
                client,
                &format!(
                    "UPDATE {log} AS l
                        SET state = '{new}', sfid = u.sfid, updated_at = pg_catalog.now(),
                            sf_message = 'the row was deleted while its insert was on its way: its record is deleted too'
                       FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4))
                            AS u(record_id, sfid, after)
                      WHERE l.state {EQ} '{ignore}' AND l.action {EQ} '{delete}' AND l.sfid IS NULL
                        AND l.relid {EQ} pg_catalog.to_regclass($1)::pg_catalog.oid
                        AND l.record_id {EQ} u.record_id AND l.id {GT} u.after
                        AND l.id {EQ} (SELECT pg_catalog.min(d.id) FROM {log} d
                                        WHERE d.state {EQ} '{ignore}' AND d.action {EQ} '{delete}'
                                          AND d.record_id {EQ} u.record_id AND d.relid {EQ} l.relid
                                          AND d.id {GT} u.after)
                      RETURNING l.record_id",
                    delete = Action::Delete.as_str(),
                ),
                &[TEXT, INT8_ARRAY, TEXT_ARRAY, INT8_ARRAY],
            )?,
            reclaim_after_bug: prepare(
                client,
                &format!(
                    "UPDATE {log}
                        SET state = CASE WHEN (attempts {PLUS} 1) {GE} $2 THEN '{failed}' ELSE '{new}' END,
                            attempts = attempts {PLUS} 1,
                            sf_message = $3,
                            in_doubt_since = coalesce(in_doubt_since, updated_at),
                            next_attempt_at = CASE WHEN (attempts {PLUS} 1) {GE} $2 THEN NULL
                                              ELSE pg_catalog.now() {PLUS} pg_catalog.make_interval(secs => $1) END,
                            processed_at = CASE WHEN (attempts {PLUS} 1) {GE} $2 THEN pg_catalog.now() END,
                            updated_at = pg_catalog.now()
                      WHERE state {EQ} '{pending}' AND {not_in_a_job}
                      RETURNING id, table_name::pg_catalog.text"
                ),
                &[pg_sys::FLOAT8OID, pg_sys::INT4OID, TEXT],
            )?,
            claim: prepare(client, &queue_sql(schema, QueueRead::Claim), &[INT8, INT8])?,
            claim_parents: prepare(
                client,
                &queue_sql(schema, QueueRead::Parents),
                &[INT8, INT8, TEXT_ARRAY, INT8_ARRAY],
            )?,
            set_state: prepare(
                client,
                &format!(
                    "UPDATE {log}
                        SET state = $2, sf_message = CASE WHEN $2 {EQ} '{pending}' THEN sf_message ELSE $3 END,
                            updated_at = pg_catalog.now(),
                            processed_at = CASE WHEN $2 {EQ} '{pending}' THEN NULL ELSE pg_catalog.now() END,
                            processed_tx = CASE WHEN $2 {EQ} '{pending}' THEN NULL ELSE pg_catalog.txid_current() END
                      WHERE id {EQ} ANY ($1)"
                ),
                &[INT8_ARRAY, TEXT, TEXT],
            )?,
            load_tables: prepare(
                client,
                &format!(
                    "SELECT m.table_name::pg_catalog.text, m.relid::pg_catalog.regclass::pg_catalog.text, m.sobject, m.upsert_field, m.fields,
                            pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY a.attnum),
                            pg_catalog.array_agg(CASE WHEN t.typtype {EQ} 'd' THEN bt.typname ELSE t.typname END::pg_catalog.text
                                                 ORDER BY a.attnum),
                            c.relowner
                       FROM {schema}._mapping m
                       JOIN pg_catalog.pg_class c ON c.oid {EQ} m.relid::pg_catalog.oid
                       JOIN pg_catalog.pg_attribute a
                         ON a.attrelid {EQ} m.relid::pg_catalog.oid AND a.attnum {GT} 0 AND NOT a.attisdropped
                       JOIN pg_catalog.pg_type t ON t.oid {EQ} a.atttypid
                       LEFT JOIN pg_catalog.pg_type bt ON bt.oid {EQ} t.typbasetype
                      WHERE m.access {NE} 'read_only'
                      GROUP BY m.table_name, m.relid, m.sobject, m.upsert_field, m.fields, c.relowner"
                ),
                &[],
            )?,
            load_links: prepare(
                client,
                &format!(
                    "SELECT DISTINCT ON (m.table_name, r.key) m.table_name::pg_catalog.text, r.key, r.value, pm.table_name::pg_catalog.text
                       FROM {schema}._mapping m
                      CROSS JOIN LATERAL pg_catalog.jsonb_each_text(m.relationships) AS r(key, value)
                       LEFT JOIN pg_catalog.pg_attribute a
                         ON a.attrelid {EQ} m.relid::pg_catalog.oid AND a.attname::pg_catalog.text {EQ} r.key AND NOT a.attisdropped
                       LEFT JOIN pg_catalog.pg_constraint k
                         ON k.conrelid {EQ} m.relid::pg_catalog.oid AND k.contype {EQ} 'f'
                        AND k.conkey {EQ} ARRAY[a.attnum]
                       LEFT JOIN {schema}._mapping pm ON pm.relid::pg_catalog.oid {EQ} k.confrelid
                      WHERE m.access {NE} 'read_only'
                      ORDER BY m.table_name, r.key, pm.table_name"
                ),
                &[],
            )?,
            next_retry_in: prepare(
                client,
                &format!(
                    "SELECT EXTRACT(epoch FROM pg_catalog.min(next_attempt_at) {MINUS} pg_catalog.clock_timestamp())::pg_catalog.float8
                       FROM {log} WHERE state {EQ} '{new}' AND next_attempt_at IS NOT NULL"
                ),
                &[],
            )?,
            job_entries: prepare(client, &job_entries_sql(schema), &[TEXT])?,
            due_count: prepare(client, &due_count_sql(schema), &[INT8])?,
        })
    }
}

/// `$1 bigint` threshold → how many due changes the queue holds, counted up to `$1` (`claim::bulk_backlog`).
/// Per mapping not paused, a short index scan each (the queue is indexed by relid): a paused backlog costs nothing.
/// Entries put in by hand name their table only.
pub fn due_count_sql(schema: &str) -> String {
    let log = format!("{schema}._trigger_log");
    let (new, insert) = (LogState::New.as_str(), Action::Insert.as_str());
    let due = format!(
        "l.state::pg_catalog.text {EQ} '{new}'
         AND (l.next_attempt_at IS NULL OR l.next_attempt_at {LE} pg_catalog.now())
         AND (m.upsert_field IS NOT NULL OR (l.action::pg_catalog.text {NE} '{insert}' AND l.sfid IS NOT NULL))"
    );
    format!(
        "SELECT pg_catalog.count(*) FROM (
             (SELECT 1 FROM {schema}._mapping m
               CROSS JOIN LATERAL (SELECT 1 FROM {log} l WHERE {THIS_MAPPING} AND {due}
                                    ORDER BY l.relid, l.id LIMIT $1) x
               WHERE m.paused_at IS NULL
               LIMIT $1)
             UNION ALL
             (SELECT 1 FROM {log} l JOIN {schema}._mapping m ON m.table_name {EQ} l.table_name
               WHERE l.relid IS NULL AND m.paused_at IS NULL AND {due}
               LIMIT $1)) s"
    )
}

/// Who reads the queue's due rows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum QueueRead {
    /// The worker: due rows of mappings not paused, locked (`$1 bigint` rows, `$2 bigint` bytes of log text).
    Claim,
    /// `salesforce.preview()`: the same rows, paused mappings included, of one mapped table (`$3 oid`, NULL: all),
    /// neither locked nor changed.
    Preview,
    /// The worker, for parents its claim's writes wait for: the due rows of these records only (`$3 text[]` log
    /// table names, `$4 bigint[]` record ids), locked.
    Parents,
}

/// Log entries as a claim reads them (`claim::gather`), each with its mapping's table name; `retried`: the SQL
/// of whether the entry was tried before (its writes then go with the row's current values).
fn entries_sql(schema: &str, retried: &str) -> String {
    format!(
        "SELECT l.id, m.table_name::pg_catalog.text, l.record_id, l.action::pg_catalog.text, l.state::pg_catalog.text, l.sfid::pg_catalog.text,
                l.\"values\"::pg_catalog.text, l.old::pg_catalog.text, l.attempts,
                EXTRACT(epoch FROM l.in_doubt_since)::pg_catalog.int8, {retried}
           FROM {schema}._trigger_log l
           LEFT JOIN {schema}._mapping m
             ON CASE WHEN l.relid IS NULL THEN m.table_name {EQ} l.table_name ELSE m.relid {EQ} l.relid END"
    )
}

/// The entries in flight in a Bulk job (`$1 text`), read to record the job's results: they are planned again as
/// they were sent (not as retries).
fn job_entries_sql(schema: &str) -> String {
    let entries = entries_sql(schema, "false");
    let pending = LogState::Pending.as_str();
    format!("{entries} WHERE l.bulk_job::pg_catalog.text {EQ} $1 AND l.state {EQ} '{pending}' ORDER BY l.id FOR UPDATE OF l")
}

/// Due queue rows, oldest first: held back are rows of a record that waits for a scheduled retry; at most `$1` rows
/// and `$2` bytes of log text (always at least one row).
pub fn queue_sql(schema: &str, read: QueueRead) -> String {
    let log = format!("{schema}._trigger_log");
    // tried before, or put back by hand or from the archive (capture leaves updated_at NULL)
    let entries =
        entries_sql(schema, &format!("(l.attempts {GT} 0 OR l.processed_at IS NOT NULL OR l.updated_at IS NOT NULL)"));
    let (new, ignore, pending) = (LogState::New.as_str(), LogState::Ignore.as_str(), LogState::Pending.as_str());
    // Which mappings' entries are read (`m`), which entries put in by hand (`l`, naming their table only), and
    // which of either.
    let not_paused = format!(
        "NOT EXISTS (SELECT 1 FROM {schema}._mapping p WHERE p.paused_at IS NOT NULL AND p.table_name {EQ} l.table_name)"
    );
    let (mappings, by_name, only) = match read {
        // salesforce.pause(): their changes wait in the queue, at no cost (their entries are never read)
        QueueRead::Claim => ("m.paused_at IS NULL".to_string(), not_paused, String::new()),
        QueueRead::Parents => (
            format!("m.paused_at IS NULL AND m.table_name::pg_catalog.text {EQ} ANY ($3::pg_catalog.text[])"),
            not_paused,
            format!(
                "AND EXISTS (SELECT 1 FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]),
                                                     pg_catalog.unnest($4::pg_catalog.int8[])) AS w(t, r)
                             WHERE w.t {EQ} l.table_name::pg_catalog.text AND w.r {EQ} l.record_id)"
            ),
        ),
        QueueRead::Preview => (
            format!("($3::pg_catalog.oid IS NULL OR m.relid::pg_catalog.oid {EQ} $3::pg_catalog.oid)"),
            format!(
                "($3::pg_catalog.oid IS NULL
                  OR l.table_name {EQ} (SELECT p.table_name FROM {schema}._mapping p
                                         WHERE p.relid::pg_catalog.oid {EQ} $3::pg_catalog.oid))"
            ),
            String::new(),
        ),
    };
    let lock = if read == QueueRead::Preview { "" } else { "FOR UPDATE OF l SKIP LOCKED" };
    // Bytes of log text a row brings into the worker. octet_length of a text reads its size from the header,
    // without decompressing or fetching it.
    let size = "(COALESCE(pg_catalog.octet_length(l.\"values\"), 0) \
                OPERATOR(pg_catalog.+) COALESCE(pg_catalog.octet_length(l.old), 0))::pg_catalog.int8";
    let claimable = format!(
        "l.state::pg_catalog.text {EQ} ANY (ARRAY['{new}', '{ignore}']::pg_catalog.text[])
         AND (l.next_attempt_at IS NULL OR l.next_attempt_at {LE} pg_catalog.now())
         AND NOT EXISTS (SELECT 1 FROM held h WHERE h.table_name {EQ} l.table_name AND h.record_id {EQ} l.record_id)
         {only}"
    );
    // The queue is indexed by (relid, id): each mapping read is its own short index scan in id order, and a mapping
    // that is not read (paused) costs nothing however long its queue (`THIS_MAPPING` says why it is written so). Entries put in by hand (the documented SQL)
    // name their table only; a name no mapping has is claimed too, to fail as unmapped (`claim::gather`).
    format!(
        "WITH held AS (
             SELECT DISTINCT table_name, record_id FROM {log}
              WHERE (state {EQ} '{new}' AND next_attempt_at IS NOT NULL AND next_attempt_at {GT} pg_catalog.now())
                 -- a change in flight in a Bulk job: the record's later changes wait for its outcome
                 OR (state {EQ} '{pending}' AND bulk_job IS NOT NULL)),
         candidates AS (
             SELECT c.id, c.size
               FROM {schema}._mapping m
              CROSS JOIN LATERAL (SELECT l.id, {size} AS size FROM {log} l
                                   WHERE {THIS_MAPPING} AND {claimable}
                                   ORDER BY l.relid, l.id LIMIT $1) c
              WHERE {mappings}
             UNION ALL
             (SELECT l.id, {size} AS size FROM {log} l
               WHERE l.relid IS NULL AND {claimable} AND {by_name}
               ORDER BY l.id LIMIT $1)),
         due AS (
             SELECT c.id, c.size, (pg_catalog.sum(c.size) OVER (ORDER BY c.id))::pg_catalog.int8 AS running
               FROM (SELECT * FROM candidates ORDER BY id LIMIT $1) c)
         {entries}
          WHERE l.id {EQ} ANY (ARRAY(SELECT d.id FROM due d WHERE (d.running {MINUS} d.size) {LT} $2))
            AND l.state::pg_catalog.text {EQ} ANY (ARRAY['{new}', '{ignore}']::pg_catalog.text[])
          ORDER BY l.id
          {lock}"
    )
}
