//! The worker's settings as one value: the extension reads every `pgforce.*` setting once at the start of a cycle
//! into a `Config` and passes it down, so a cycle never sees half of a reload. The checks the settings' validation
//! hooks run live here too, so they are tested without Postgres.

use std::path::Path;
use std::time::Duration;

use crate::salesforce::settings::read_secret;
use crate::salesforce::Settings;

/// How a record's claimed changes become writes (`pgforce.write_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAlgorithm {
    /// A record's changes claimed together go as one write with the latest values.
    Merged,
    /// One change per record at a time, oldest first.
    Ordered,
}

/// A snapshot of every `pgforce.*` setting the worker uses.
#[derive(Debug, Clone)]
pub struct Config {
    pub enabled: bool,
    /// The org and how to reach it (secrets given in files are read by the worker into it).
    pub connection: Settings,
    /// `pgforce.client_secret_file` (empty: the secret is `pgforce.client_secret`).
    pub client_secret_file: std::path::PathBuf,
    /// `pgforce.refresh_token_file` (empty: the token is `pgforce.refresh_token`).
    pub refresh_token_file: std::path::PathBuf,
    pub write_algorithm: WriteAlgorithm,
    pub max_concurrency: usize,
    pub batch_size: i64,
    /// `pgforce.bulk_threshold`: a claim's group of one object and operation this large goes as a Bulk API 2.0
    /// job (0: never).
    pub bulk_threshold: usize,
    /// `pgforce.bulk_batch_size`: rows claimed at once while the queue holds `bulk_threshold` due changes.
    pub bulk_batch_size: i64,
    /// The most bytes of JSON one request carries (`pgforce.max_request_bytes`); a claim holds at most
    /// `max_concurrency` requests' worth of log text.
    pub max_request_bytes: usize,
    pub max_attempts: i32,
    /// `None`: FAILED entries are not retried automatically.
    pub retry_failed_after: Option<Duration>,
    pub max_api_usage: f64,
    pub archive_after: Duration,
    pub archive_retention: Duration,
    /// Requests kept in `salesforce.sync_requests` (`pgforce.request_history`; 0: none).
    pub request_history: i64,
    pub poll_interval: Duration,
    /// How often each reading mapping asks Salesforce for changes (`pgforce.read_interval`).
    pub read_interval: Duration,
    /// Loads of at least this many records go through a Bulk query job (`pgforce.read_bulk_threshold`; `None`:
    /// never).
    pub read_bulk_threshold: Option<u64>,
    /// How far before its position each poll starts (`pgforce.read_look_back`).
    pub read_look_back: Duration,
    /// How often each reading mapping sweeps Salesforce's delete log (`pgforce.delete_sweep_interval`).
    pub delete_sweep_interval: Duration,
    /// How often each reading mapping reads every record again (`pgforce.compare_interval`; `None`: never).
    pub compare_interval: Option<Duration>,
    /// How long the worker's statements wait for a lock a user holds (`pgforce.lock_timeout`).
    pub lock_timeout: Duration,
    /// How long any statement of the worker may run (`pgforce.statement_timeout`).
    pub statement_timeout: Duration,
    /// Alert when the oldest change waiting (of a mapping not paused) is older than this (`None`: never).
    pub alert_stalled_after: Option<Duration>,
    /// At most one alert of each kind in this long (`pgforce.alert_interval`).
    pub alert_interval: Duration,
}

/// The most bytes of log text a claim for a Bulk job holds.
pub const BULK_CLAIM_BYTES: i64 = 64 << 20;

impl Config {
    /// The most bytes of log text (values and old values) one claim takes: enough to fill every request that may
    /// be in flight at once, and no more, so the worker's memory does not grow with the width of rows.
    pub fn claim_bytes(&self) -> i64 {
        (self.max_request_bytes as i64).saturating_mul(self.max_concurrency as i64)
    }

    /// The rows and bytes of log text one claim takes while the queue holds a Bulk-sized backlog: a job's worth
    /// (Salesforce takes up to 100 MB of CSV per job), bounded so the worker's memory stays in the tens of MiB.
    pub fn bulk_claim(&self) -> (i64, i64) {
        (self.bulk_batch_size.max(self.batch_size), BULK_CLAIM_BYTES.max(self.claim_bytes()))
    }
}

/// Secrets given in files: the client secret and the refresh token (each `None` when its file setting is empty).
pub type SecretFiles = (Option<String>, Option<String>);

impl Config {
    /// Reads `pgforce.client_secret_file` and `pgforce.refresh_token_file` now (or says why one cannot be read).
    pub fn read_secret_files(&self) -> Result<SecretFiles, String> {
        let one = |path: &Path, setting: &str| -> Result<Option<String>, String> {
            if path.as_os_str().is_empty() {
                return Ok(None);
            }
            read_secret(path, setting).map(|bytes| Some(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((
            one(&self.client_secret_file, "pgforce.client_secret_file")?,
            one(&self.refresh_token_file, "pgforce.refresh_token_file")?,
        ))
    }

    /// The connection settings with the secrets read from files put in.
    pub fn connection_with(&self, secrets: &SecretFiles) -> Settings {
        let mut settings = self.connection.clone();
        if let Some(secret) = &secrets.0 {
            settings.client_secret = secret.clone();
        }
        if let Some(token) = &secrets.1 {
            settings.refresh_token = token.clone();
        }
        settings
    }
}

/// `pgforce.api_version`: a Salesforce REST API version such as `62.0`.
pub fn check_api_version(value: &str) -> Result<(), String> {
    let ok = value.split_once('.').is_some_and(|(major, minor)| {
        !major.is_empty() && major.len() <= 3 && major.bytes().all(|b| b.is_ascii_digit()) && minor == "0"
    });
    if ok {
        Ok(())
    } else {
        Err(format!("\"{value}\" is not a Salesforce API version; versions look like 62.0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        for ok in ["62.0", "58.0", "9.0"] {
            assert_eq!(check_api_version(ok), Ok(()), "{ok}");
        }
        for bad in ["62", "v62.0", "62.1", "", ".0", "sixty.0", "62.0 "] {
            assert!(check_api_version(bad).is_err(), "{bad}");
        }
    }
}
