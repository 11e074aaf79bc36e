//! Settings of one stand-in org, from a TOML file and command-line overrides. Every field has a default so
//! `fakeforce` with no config serves the built-in data model with demo credentials.

use crate::faults::FaultRule;
use crate::model::ObjectDef;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// The `instance_url` the token endpoint hands out, when it is not this server's own URL (Salesforce hands out
    /// the org's instance, which differs from the login host).
    pub advertised_url: Option<String>,
    /// Seed of every random choice (fault rates, latency jitter, result order of Bulk jobs).
    pub seed: u64,
    pub auth: AuthConfig,
    /// Daily API request budget reported in `Sforce-Limit-Info` and `/limits`; calls beyond it get 403.
    pub daily_api_requests: u64,
    /// Calls already spent when the stand-in starts.
    pub api_requests_used: u64,
    /// Latency added to every data call, plus a uniform random 0..=jitter.
    pub latency_ms: u64,
    pub latency_jitter_ms: u64,
    /// How long a closed Bulk API 2.0 job stays `UploadComplete` and then `InProgress` before it completes.
    pub bulk_processing_ms: u64,
    /// Request bodies larger than this are refused with 413.
    pub max_request_bytes: usize,
    /// Extra objects; with `builtin_objects = true` (default) they are added to the built-in ones.
    pub objects: Vec<ObjectDef>,
    pub builtin_objects: bool,
    pub faults: Vec<FaultRule>,
    /// How many of the last write calls `GET /fakeforce/admin/writes` keeps (method, path, query, body, arrival).
    pub writes_kept: usize,
    /// What `sobjects/X/updated` and `/deleted` floor their window to: Salesforce's minute (60,000). Tests shorten
    /// it, so that a sweep of the delete log need not wait minutes.
    pub replication_unit_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 0,
            advertised_url: None,
            seed: 1,
            auth: AuthConfig::default(),
            daily_api_requests: 100_000,
            api_requests_used: 0,
            latency_ms: 0,
            latency_jitter_ms: 0,
            bulk_processing_ms: 200,
            max_request_bytes: 64 * 1024 * 1024,
            objects: Vec::new(),
            builtin_objects: true,
            faults: Vec::new(),
            writes_kept: 1000,
            replication_unit_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The connected app's consumer key and secret.
    pub client_id: String,
    pub client_secret: String,
    /// The integration user: `sub` of JWT bearer assertions.
    pub username: String,
    /// PEM file with the RSA public key (or certificate's key) JWT bearer assertions must be signed for.
    pub jwt_public_key: Option<PathBuf>,
    /// JWT audiences accepted besides `https://login.salesforce.com` and `https://test.salesforce.com` (an
    /// Experience Cloud site URL). Salesforce does not accept the My Domain URL the token is asked from.
    pub jwt_audiences: Vec<String>,
    /// Refresh tokens the `refresh_token` grant accepts.
    pub refresh_tokens: Vec<String>,
    /// Issue a new refresh token on each refresh and invalidate the old one.
    pub rotate_refresh_tokens: bool,
    /// Access tokens expire this many seconds after issue (0 = never).
    pub token_ttl_secs: u64,
    /// Access tokens expire after this many data calls (0 = never).
    pub token_max_calls: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            client_id: "pgforce-demo-client".into(),
            client_secret: "pgforce-demo-secret".into(),
            username: "integration@pgforce.example".into(),
            jwt_public_key: None,
            jwt_audiences: Vec::new(),
            refresh_tokens: vec!["pgforce-demo-refresh-token".into()],
            rotate_refresh_tokens: false,
            token_ttl_secs: 0,
            token_max_calls: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("data model: {0}")]
    Model(#[from] crate::model::ModelError),
    #[error("JWT public key {path}: {message}")]
    JwtKey { path: PathBuf, message: String },
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}
