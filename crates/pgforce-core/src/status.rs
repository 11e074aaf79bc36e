//! The sync worker's connection state, as `salesforce.sync_status.connection_state` shows it (Heroku Connect's names
//! where they fit), and which of its states an operator must hear about.

/// The connection states `sync_status` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Idle,
    Polling,
    Paused,
    /// Salesforce cannot be reached or answers 5xx: changes wait, at no cost, until the next attempt.
    Outage,
    Unauthorized,
    SystemError,
    Disabled,
    Throttled,
    /// Nothing delivers this database's changes (`api::status`, never written by a worker): pgforce is not in
    /// `shared_preload_libraries`, the worker serves another database, or no worker is running.
    NotPreloaded,
    OtherDatabase,
    NoWorker,
}

impl ConnState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Idle => "IDLE",
            ConnState::Polling => "POLLING_DB_CHANGES",
            ConnState::Paused => "PAUSED",
            ConnState::Outage => "OUTAGE",
            ConnState::Unauthorized => "UNAUTHORIZED",
            ConnState::SystemError => "SYSTEM_ERROR",
            ConnState::Disabled => "DISABLED",
            ConnState::Throttled => "THROTTLED",
            ConnState::NotPreloaded => "NOT_PRELOADED",
            ConnState::OtherDatabase => "OTHER_DATABASE",
            ConnState::NoWorker => "NO_WORKER",
        }
    }

    /// The states an operator must hear about: alerted when entered and left, resolved when left.
    pub const TROUBLE: [ConnState; 4] =
        [ConnState::Paused, ConnState::Outage, ConnState::Unauthorized, ConnState::SystemError];

    pub fn is_trouble(self) -> bool {
        Self::TROUBLE.contains(&self)
    }
}
