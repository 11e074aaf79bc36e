//! The worker's way into its database: where pgforce is installed (found with one statement prepared once), the
//! worker's statements prepared for that schema (again when the extension is re-created or moved), and each step run
//! in a transaction of its own as the sync engine.

use std::time::{Duration, Instant};

use pgrx::spi::{OwnedPreparedStatement, SpiClient};

use crate::worker::error::WorkerError;
use crate::worker::sql::{self, Statements};
use crate::worker::transaction::{as_sync_engine, in_transaction};
use crate::worker::LIBRARY_VERSION;

/// What `Db::prepare` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prepared {
    /// pgforce is not installed in this database (yet), or its objects are of another release than the library.
    NotInstalled,
    /// The statements were prepared before, for this schema.
    Ready,
    /// The statements were prepared now (first cycle, or the extension was re-created).
    Fresh,
}

#[derive(Default)]
pub(crate) struct Db {
    /// The catalog query that finds pgforce's schema; prepared once.
    find_schema: Option<OwnedPreparedStatement>,
    /// The worker's statements for the schema pgforce is installed in.
    statements: Option<Statements>,
    /// When the worker last said the extension needs `ALTER EXTENSION pgforce UPDATE`.
    version_warned: Option<Instant>,
}

impl Db {
    pub(crate) fn statements(&self) -> Option<&Statements> {
        self.statements.as_ref()
    }

    /// Drops the statements: the next cycle prepares them again.
    pub(crate) fn forget(&mut self) {
        self.statements = None;
    }

    /// Runs `f` as the sync engine with the prepared statements.
    pub(crate) fn with_statements<R>(
        &mut self,
        f: impl FnOnce(&mut SpiClient<'_>, &mut Statements) -> Result<R, WorkerError>,
    ) -> Result<R, WorkerError> {
        let Some(st) = self.statements.as_mut() else {
            return Err(WorkerError::NotInstalled);
        };
        as_sync_engine(|c| f(c, st))
    }

    /// Finds the schema pgforce is installed in and prepares the statements for it when that changed; `fresh` runs
    /// in the same transaction right after (what a new set of statements starts with).
    pub(crate) fn prepare(
        &mut self,
        fresh: impl FnOnce(&mut SpiClient<'_>, &Statements) -> Result<(), WorkerError>,
    ) -> Result<Prepared, WorkerError> {
        let Some((schema, version)) = self.installed_schema()? else {
            self.statements = None;
            return Ok(Prepared::NotInstalled);
        };
        if version != LIBRARY_VERSION {
            // The library was upgraded (or downgraded) but not the extension's objects: wait for the update. Capture
            // goes on meanwhile, and nothing is lost.
            if self.version_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                pgrx::warning!(
                    "pgforce: the library is {LIBRARY_VERSION} but the extension in this database is {version}: nothing is delivered until ALTER EXTENSION pgforce UPDATE"
                );
                self.version_warned = Some(Instant::now());
            }
            self.statements = None;
            return Ok(Prepared::NotInstalled);
        }
        if self.statements.as_ref().is_some_and(|st| st.schema == schema) {
            return Ok(Prepared::Ready);
        }
        let st = as_sync_engine(|c| {
            let st = Statements::prepare(c, &schema)?;
            fresh(c, &st)?;
            Ok(st)
        })?;
        self.statements = Some(st);
        Ok(Prepared::Fresh)
    }

    /// Whether pgforce is installed in this database now.
    pub(crate) fn installed(&mut self) -> bool {
        matches!(self.installed_schema(), Ok(Some(_)))
    }

    /// The schema pgforce is installed in and the extension's version, if it is installed.
    fn installed_schema(&mut self) -> Result<Option<(String, String)>, WorkerError> {
        let find = &mut self.find_schema;
        in_transaction(|c| {
            if find.is_none() {
                *find = Some(c.prepare(sql::INSTALLED_SCHEMA, &[])?.keep());
            }
            let mut out = None;
            if let Some(statement) = find.as_ref() {
                for row in c.select(statement, None, &[])? {
                    if let (Some(schema), Some(version)) = (row.get::<String>(1)?, row.get::<String>(2)?) {
                        out = Some((schema, version));
                    }
                }
            }
            Ok(out)
        })
    }

    /// After an error: whether it came from the extension being dropped (or moved) meanwhile, which is no error of
    /// the worker's; the next cycle then starts afresh.
    pub(crate) fn vanished(&mut self) -> bool {
        let before = self.statements.as_ref().map(|st| st.schema.clone());
        let now = self.installed_schema().ok().flatten().map(|(schema, _)| schema);
        let gone = before.is_none() || before != now;
        if gone {
            self.statements = None;
        }
        gone
    }
}
