//! What can go wrong in a cycle, as one type. Salesforce's own answers are not errors here: they are verdicts
//! (`pgforce_core::delivery::send`), and connection trouble pauses the connection.

/// An error in one of the worker's steps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    /// A statement failed inside one of the worker's transactions (which was rolled back).
    #[error("{0}")]
    Database(String),
    /// pgforce is not installed in the worker's database (any more).
    #[error("pgforce is not installed in this database")]
    NotInstalled,
}

impl From<pgrx::spi::Error> for WorkerError {
    fn from(e: pgrx::spi::Error) -> Self {
        WorkerError::Database(e.to_string())
    }
}
