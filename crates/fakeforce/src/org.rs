//! One stand-in org: its configuration, records, sessions, API budget, fault rules, Bulk jobs and counters, behind
//! one lock (no call holds it while sleeping or doing I/O).

use crate::config::{Config, ConfigError};
use crate::faults::Faults;
use crate::jobs::Job;
use crate::model::Model;
use crate::store::Store;
use rand::distr::Alphanumeric;
use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Session {
    pub issued: Instant,
    pub calls: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageMode {
    /// The listening socket is closed: connections are refused.
    Refuse,
    /// Every call gets 503 with Salesforce's maintenance answer.
    Unavailable,
    /// Connections are accepted but nothing is answered until the outage ends (a hung server or network).
    Hang,
}

#[derive(Debug, Clone)]
pub struct Outage {
    pub mode: OutageMode,
    pub until: Instant,
}

/// What the stand-in saw, for tests that assert what was sent.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counters {
    pub requests: u64,
    /// Requests by kind: `token`, `create`, `update`, `upsert`, `delete`, `query`, `read`, `bulk`, `limits`, `other`.
    pub by_kind: BTreeMap<String, u64>,
    /// Records received by operation (every record of every request, whatever its outcome).
    pub records: BTreeMap<String, u64>,
    pub records_succeeded: u64,
    pub records_failed: u64,
    /// Responses by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// The largest request body received (refused ones excepted).
    pub largest_request_bytes: u64,
    pub dropped_connections: u64,
    pub refused_connections: u64,
    pub faults_fired: u64,
    /// When the latest write call (create, update, upsert, delete) arrived, for latency measurements in process.
    #[serde(skip)]
    pub last_write_at: Option<Instant>,
}

pub struct State {
    pub store: Store,
    pub sessions: HashMap<String, Session>,
    pub refresh_tokens: HashSet<String>,
    pub api_used: u64,
    pub api_limit: u64,
    pub faults: Faults,
    pub counters: Counters,
    pub outage: Option<Outage>,
    pub jobs: BTreeMap<String, Job>,
    /// Bulk API 2.0 query jobs (`bulk_query`).
    pub query_jobs: BTreeMap<String, crate::bulk_query::QueryJob>,
    pub cursors: HashMap<String, (String, VecDeque<Value>)>,
    pub serial: u64,
    /// The last `Config::writes_kept` write calls as they arrived (method, path, query, body, arrival), for tests
    /// that compare what was sent with what was expected (`GET /fakeforce/admin/writes`).
    pub writes: VecDeque<Value>,
}

impl State {
    pub fn random_token(&mut self, len: usize) -> String {
        self.faults.rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
    }

    pub fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    pub fn outage_active(&mut self) -> Option<OutageMode> {
        match &self.outage {
            Some(o) if o.until > Instant::now() => Some(o.mode),
            Some(_) => {
                self.outage = None;
                None
            }
            None => None,
        }
    }
}

pub struct Org {
    pub config: Config,
    pub model: Arc<Model>,
    pub org_id: String,
    pub user_id: String,
    pub jwt_key: Option<jsonwebtoken::DecodingKey>,
    /// `http://host:port`, known once the listener is bound.
    pub base_url: Mutex<String>,
    /// Wakes the accept loop when an outage starts or ends.
    pub wake: tokio::sync::Notify,
    state: Mutex<State>,
}

fn with_checksum(id15: &str) -> String {
    format!("{id15}{}", crate::ids::checksum(id15))
}

impl Org {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let mut objects: Vec<_> =
            if config.builtin_objects { Model::builtin().objects().cloned().collect() } else { Vec::new() };
        objects.extend(config.objects.iter().cloned());
        let model = Arc::new(Model::new(objects)?);
        let jwt_key = match &config.auth.jwt_public_key {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| ConfigError::JwtKey { path: path.clone(), message: e.to_string() })?;
                let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem)
                    .map_err(|e| ConfigError::JwtKey { path: path.clone(), message: e.to_string() })?;
                Some(key)
            }
        };
        let state = State {
            store: Store::new(model.clone()),
            sessions: HashMap::new(),
            refresh_tokens: config.auth.refresh_tokens.iter().cloned().collect(),
            api_used: config.api_requests_used,
            api_limit: config.daily_api_requests,
            faults: Faults::new(config.seed, config.faults.clone(), (config.latency_ms, config.latency_jitter_ms)),
            counters: Counters::default(),
            outage: None,
            jobs: BTreeMap::new(),
            query_jobs: BTreeMap::new(),
            cursors: HashMap::new(),
            serial: 0,
            writes: VecDeque::new(),
        };
        Ok(Org {
            model,
            org_id: with_checksum("00DDn00000FakeF"),
            user_id: crate::ids::integration_user(),
            jwt_key,
            base_url: Mutex::new(String::new()),
            wake: tokio::sync::Notify::new(),
            state: Mutex::new(state),
            config,
        })
    }

    /// The org's state. A panic while holding the lock would be a stand-in bug; the data is still usable, so a
    /// poisoned lock is taken over rather than taking the server down.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn base_url(&self) -> String {
        self.base_url.lock().map(|u| u.clone()).unwrap_or_default()
    }
}
