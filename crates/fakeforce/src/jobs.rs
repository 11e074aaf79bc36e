//! Bulk API 2.0 ingest jobs as the org holds them; `bulk` serves the endpoints that create and run them.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Open,
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl JobState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            JobState::Open => "Open",
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Failed => "Failed",
            JobState::Aborted => "Aborted",
        }
    }
    pub(crate) fn terminal(self) -> bool {
        matches!(self, JobState::JobComplete | JobState::Failed | JobState::Aborted)
    }
}

#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub(crate) object: String,
    pub(crate) operation: String,
    pub(crate) external_id_field: Option<String>,
    pub(crate) delimiter: (String, u8),
    pub(crate) line_ending: String,
    pub(crate) api_version: String,
    pub state: JobState,
    pub(crate) created_by: String,
    pub(crate) created_date: String,
    pub(crate) modstamp: String,
    pub(crate) data: Option<Vec<u8>>,
    pub(crate) header: Vec<String>,
    pub(crate) successes: Vec<Vec<String>>,
    pub(crate) failures: Vec<Vec<String>>,
    pub(crate) unprocessed: Vec<Vec<String>>,
    pub(crate) processed: u64,
    pub(crate) failed: u64,
    pub(crate) error_message: Option<String>,
    pub(crate) processing_ms: u64,
}

impl Job {
    pub(crate) fn terminal_or_open_empty(&self) -> bool {
        self.state.terminal() || (self.state == JobState::Open && self.data.is_none())
    }
}
