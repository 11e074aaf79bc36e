//! The Salesforce client: OAuth (client credentials, JWT bearer, refresh token) with a cached token that is renewed
//! once on `INVALID_SESSION_ID`, and sObject Collection calls with a timeout each. What to send, and what the
//! answers mean, is `delivery`'s business.

use serde_json::{json, Value};
use std::borrow::Borrow;
use std::cell::Cell;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::describe::FieldDescription;

pub mod composite;
pub mod journal;
pub mod settings;

use journal::Journal;
pub use settings::{jwt_audience, token_fingerprint, AuthFlow, Settings};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Salesforce could not be reached or is not serving (refused, timeout, 5xx, 503 maintenance, 403 limits):
    /// pause the connection; the records lose nothing.
    #[error("Salesforce unavailable: {0}")]
    Unavailable(String),
    /// The credentials were refused.
    #[error("authentication failed: {0}")]
    Unauthorized(String),
    /// The whole request was refused (400 and friends): split it to find the record that causes it.
    #[error("{code}: {message}")]
    Rejected { status: u16, code: String, message: String },
    /// The request was sent but failed on the way (no answer in time, connection lost, HTTP 500/502/504): whether
    /// Salesforce applied it is unknown. Whether Salesforce or the request is at fault, `Client::reachable` tells.
    #[error("{code}: {message}")]
    Failed { code: String, message: String },
}

/// How long the probe that tells an outage from a failing request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting (name, TCP, TLS) gets at most this long: failing to connect is an outage, never a request's fault.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfError {
    pub code: String,
    pub message: String,
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordResult {
    pub id: Option<String>,
    pub success: bool,
    pub created: Option<bool>,
    pub errors: Vec<SfError>,
}

/// `Sforce-Limit-Info: api-usage=used/limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub used: u64,
    pub limit: u64,
}

impl Usage {
    pub fn parse(header: &str) -> Option<Usage> {
        let part = header.split(';').map(str::trim).find_map(|p| p.strip_prefix("api-usage="))?;
        let (used, limit) = part.split_once('/')?;
        Some(Usage { used: used.trim().parse().ok()?, limit: limit.trim().parse().ok()? })
    }

    /// `DailyApiRequests` of the `/limits` resource.
    pub fn from_limits(body: &Value) -> Option<Usage> {
        let daily = body.get("DailyApiRequests")?;
        let limit = daily.get("Max")?.as_u64()?;
        let remaining = daily.get("Remaining")?.as_u64()?;
        Some(Usage { used: limit.saturating_sub(remaining), limit })
    }

    pub fn fraction(&self) -> f64 {
        if self.limit == 0 {
            1.0
        } else {
            self.used as f64 / self.limit as f64
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CallKind {
    Create,
    Update,
    Upsert { object: String, field: String },
    Delete,
}

impl CallKind {
    /// The HTTP method and the path (after the instance URL) of this sObject Collections call; a delete names its
    /// records' ids in the query.
    pub fn request(&self, api_version: &str, delete_ids: &[&str]) -> (&'static str, String) {
        let base = format!("/services/data/v{api_version}/composite/sobjects");
        match self {
            CallKind::Create => ("POST", base),
            CallKind::Update => ("PATCH", base),
            CallKind::Upsert { object, field } => ("PATCH", format!("{base}/{object}/{field}")),
            CallKind::Delete => ("DELETE", format!("{base}?ids={}&allOrNone=false", delete_ids.join(","))),
        }
    }
}

#[derive(Clone)]
struct Session {
    token: String,
    instance_url: String,
    /// The integration user's id (the last part of the token response's `id` URL), when Salesforce says.
    user_id: Option<String>,
}

pub struct Client {
    settings: Settings,
    agent: ureq::Agent,
    session: Mutex<Option<Session>>,
    usage: Mutex<Option<Usage>>,
    /// The refresh token logins use: the configured one, or the latest Salesforce rotated it to.
    refresh_token: Mutex<String>,
    /// A refresh token Salesforce issued in place of the one used, not yet taken by `take_rotated_refresh_token`.
    rotated: Mutex<Option<String>>,
    journal: Journal,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn describe_transport(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t:?})"),
        ureq::Error::Io(io) => format!("connection failed: {io}"),
        other => other.to_string(),
    }
}

/// What a transport error on a data call means: not connected at all is an outage (nothing was sent); anything
/// after that (no answer in time, connection lost) leaves the request in doubt.
fn call_failed(e: &ureq::Error, timeout: Duration) -> CallError {
    use std::io::ErrorKind;
    match e {
        ureq::Error::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect)
        | ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed => CallError::Unavailable(describe_transport(e)),
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::NotFound
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            ) =>
        {
            CallError::Unavailable(describe_transport(e))
        }
        ureq::Error::Timeout(_) => CallError::Failed {
            code: "REQUEST_TIMEOUT".into(),
            message: format!("no answer within {} s (pgforce.request_timeout)", timeout.as_secs_f64()),
        },
        other => CallError::Failed { code: "CONNECTION_LOST".into(), message: describe_transport(other) },
    }
}

impl Client {
    pub fn new(settings: Settings) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(settings.request_timeout))
            .timeout_connect(Some(settings.request_timeout.min(CONNECT_TIMEOUT)))
            .user_agent("pgforce")
            .build()
            .into();
        let refresh_token = Mutex::new(settings.refresh_token.clone());
        Client {
            settings,
            agent,
            session: Mutex::new(None),
            usage: Mutex::new(None),
            refresh_token,
            rotated: Mutex::new(None),
            journal: Journal::default(),
        }
    }

    /// The requests this client made (`salesforce.sync_requests`) and its API calls.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Runs one HTTP exchange and notes it in the journal; `run` sets the answer's status when there is one.
    fn exchange<T>(
        &self,
        method: &'static str,
        path: &str,
        records: usize,
        api_call: bool,
        run: impl FnOnce(&Cell<Option<u16>>) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let status = Cell::new(None);
        let (at, started) = (SystemTime::now(), Instant::now());
        let result = run(&status);
        self.journal.note(
            journal::Request {
                at,
                method,
                path: journal::path_only(path),
                records: records.min(u32::MAX as usize) as u32,
                status: status.get(),
                duration: started.elapsed(),
                error_code: result.as_ref().err().map(journal::error_code),
            },
            api_call,
        );
        result
    }

    /// The REST API version calls use (`pgforce.api_version`).
    pub fn api_version(&self) -> &str {
        &self.settings.api_version
    }

    /// The latest API usage Salesforce reported.
    pub fn usage(&self) -> Option<Usage> {
        *lock(&self.usage)
    }

    /// Logs in with `token` instead of the configured refresh token (one Salesforce rotated it to earlier).
    pub fn use_refresh_token(&self, token: String) {
        *lock(&self.refresh_token) = token;
    }

    /// The refresh token Salesforce issued in place of the one used, once: it must be kept, since Salesforce may
    /// have revoked the old one.
    pub fn take_rotated_refresh_token(&self) -> Option<String> {
        lock(&self.rotated).take()
    }

    /// Forgets the cached token (the next call logs in again).
    pub fn forget_session(&self) {
        *lock(&self.session) = None;
    }

    fn session(&self) -> Result<Session, CallError> {
        if let Some(s) = lock(&self.session).clone() {
            return Ok(s);
        }
        let s = self.login()?;
        *lock(&self.session) = Some(s.clone());
        Ok(s)
    }

    /// Logs in now (and caches the token), to check the credentials.
    pub fn authenticate(&self) -> Result<(), CallError> {
        self.forget_session();
        self.session().map(|_| ())
    }

    /// Runs the configured OAuth flow against `<login_url>/services/oauth2/token`.
    fn login(&self) -> Result<Session, CallError> {
        let s = &self.settings;
        settings::check_transport(&s.login_url, s.allow_insecure_http)
            .map_err(|e| CallError::Unauthorized(format!("pgforce.login_url: {e}")))?;
        let url = format!("{}/services/oauth2/token", s.login_url.trim_end_matches('/'));
        let form: Vec<(&str, String)> = match s.auth_flow {
            AuthFlow::ClientCredentials => vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", s.client_id.clone()),
                ("client_secret", s.client_secret.clone()),
            ],
            AuthFlow::RefreshToken => {
                let mut f = vec![
                    ("grant_type", "refresh_token".into()),
                    ("client_id", s.client_id.clone()),
                    ("refresh_token", lock(&self.refresh_token).clone()),
                ];
                if !s.client_secret.is_empty() {
                    f.push(("client_secret", s.client_secret.clone()));
                }
                f
            }
            AuthFlow::JwtBearer => vec![
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".into()),
                ("assertion", self.assertion()?),
            ],
        };
        let body = self.exchange("POST", "/services/oauth2/token", 0, false, |answered| {
            let mut r = self
                .agent
                .post(&url)
                .send_form(form.iter().map(|(k, v)| (*k, v.as_str())))
                .map_err(|e| CallError::Unavailable(describe_transport(&e)))?;
            let status = r.status().as_u16();
            answered.set(Some(status));
            let body: Value = r.body_mut().read_json().unwrap_or(Value::Null);
            if status >= 500 {
                return Err(CallError::Unavailable(format!("token endpoint answered HTTP {status}")));
            }
            if status != 200 {
                let error = body.get("error").and_then(Value::as_str).unwrap_or("error");
                let description = body.get("error_description").and_then(Value::as_str).unwrap_or("");
                return Err(CallError::Unauthorized(format!("{error}: {description} (HTTP {status})")));
            }
            Ok(body)
        })?;
        let token = body.get("access_token").and_then(Value::as_str);
        let instance_url = body.get("instance_url").and_then(Value::as_str);
        if let Some(i) = instance_url {
            settings::check_transport(i, s.allow_insecure_http).map_err(|e| {
                CallError::Unauthorized(format!("the token endpoint returned an instance_url that cannot be used: {e}"))
            })?;
        }
        let user_id = body
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| id.trim_end_matches('/').rsplit('/').next())
            .filter(|u| u.len() >= 15 && u.bytes().all(|b| b.is_ascii_alphanumeric()))
            .map(str::to_string);
        if s.auth_flow == AuthFlow::RefreshToken {
            if let Some(fresh) = body.get("refresh_token").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                let mut current = lock(&self.refresh_token);
                if *current != fresh {
                    *current = fresh.to_string();
                    *lock(&self.rotated) = Some(fresh.to_string());
                }
            }
        }
        match (token, instance_url) {
            (Some(t), Some(i)) => {
                Ok(Session { token: t.to_string(), instance_url: i.trim_end_matches('/').to_string(), user_id })
            }
            _ => Err(CallError::Unauthorized("the token response has no access_token or instance_url".into())),
        }
    }

    fn assertion(&self) -> Result<String, CallError> {
        let s = &self.settings;
        let pem = settings::read_secret(&s.jwt_key_file, "pgforce.jwt_key_file").map_err(CallError::Unauthorized)?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).map_err(|e| {
            CallError::Unauthorized(format!("the JWT private key cannot be read as an RSA PEM key: {e}"))
        })?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let claims = json!({"iss": s.client_id, "sub": s.username, "aud": jwt_audience(&s.login_url, &s.jwt_audience), "exp": now + 180});
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key)
            .map_err(|e| CallError::Unauthorized(format!("cannot sign the JWT assertion: {e}")))
    }

    /// Whether Salesforce answers a light request (the list of API versions, which needs no session and counts
    /// against no limit) quickly: after a request failed, it tells a failing request from an outage.
    pub fn reachable(&self) -> bool {
        let Some(instance_url) = lock(&self.session).as_ref().map(|s| s.instance_url.clone()) else { return false };
        self.exchange("GET", "/services/data/", 0, false, |answered| {
            let r = self
                .agent
                .get(format!("{instance_url}/services/data/"))
                .config()
                .timeout_global(Some(PROBE_TIMEOUT.min(self.settings.request_timeout)))
                .build()
                .call()
                .map_err(|e| CallError::Unavailable(describe_transport(&e)))?;
            let status = r.status().as_u16();
            answered.set(Some(status));
            if status == 200 {
                Ok(())
            } else {
                Err(CallError::Unavailable(format!("HTTP {status}")))
            }
        })
        .is_ok()
    }

    /// The integration user's id, as the last login said (logs in if needed).
    pub fn user_id(&self) -> Result<Option<String>, CallError> {
        Ok(self.session()?.user_id)
    }

    /// Runs a SOQL query and reads every page of its result, up to `max_records` records (more is an error).
    pub fn query(&self, soql: &str, max_records: usize) -> Result<Vec<Value>, CallError> {
        let mut records = Vec::new();
        let mut page = self.get(&format!("/services/data/v{}/query", self.settings.api_version), Some(("q", soql)))?;
        loop {
            records.extend(page.get("records").and_then(Value::as_array).cloned().unwrap_or_default());
            if records.len() > max_records {
                return Err(CallError::Rejected {
                    status: 200,
                    code: "TOO_MANY_RECORDS".into(),
                    message: format!("the query returned more than {max_records} records"),
                });
            }
            match page.get("nextRecordsUrl").and_then(Value::as_str) {
                Some(next) if page.get("done") != Some(&Value::Bool(true)) => page = self.get(next, None)?,
                _ => return Ok(records),
            }
        }
    }

    /// One page of a `queryAll` (deleted records too, with `IsDeleted`): the answer as Salesforce gives it. The read
    /// path asks for a page at a time (`read::soql::page`), so it never follows `nextRecordsUrl` here.
    pub fn query_all_page(&self, soql: &str) -> Result<Value, CallError> {
        self.get(&format!("/services/data/v{}/queryAll", self.settings.api_version), Some(("q", soql)))
    }

    /// Asks Salesforce for the org's API usage now (`/limits`), rather than the last answer's header.
    pub fn refresh_usage(&self) -> Result<Usage, CallError> {
        let body = self.get(&format!("/services/data/v{}/limits", self.settings.api_version), None)?;
        let usage = Usage::from_limits(&body).ok_or_else(|| CallError::Failed {
            code: "UNEXPECTED_ANSWER".into(),
            message: "the limits resource has no DailyApiRequests".into(),
        })?;
        *lock(&self.usage) = Some(usage);
        Ok(usage)
    }

    /// The fields of an sObject as its describe lists them.
    pub fn describe(&self, sobject: &str) -> Result<Vec<FieldDescription>, CallError> {
        let body =
            self.get(&format!("/services/data/v{}/sobjects/{sobject}/describe", self.settings.api_version), None)?;
        let fields = body.get("fields").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(fields.iter().filter_map(FieldDescription::from_describe).collect())
    }

    /// Runs `attempt`, and once more after logging in again when Salesforce says the session expired.
    fn renewing_session<T>(&self, attempt: impl Fn() -> Result<T, CallError>) -> Result<T, CallError> {
        match attempt() {
            Err(CallError::Unauthorized(m)) if m.contains("INVALID_SESSION_ID") => {
                self.forget_session();
                attempt()
            }
            other => other,
        }
    }

    /// GET of a REST resource by its path on the instance; a 401 logs in again and retries once.
    fn get(&self, path: &str, query: Option<(&str, &str)>) -> Result<Value, CallError> {
        self.renewing_session(|| self.get_once(path, query))
    }

    fn get_once(&self, path: &str, query: Option<(&str, &str)>) -> Result<Value, CallError> {
        let session = self.session()?;
        self.exchange("GET", path, 0, true, |answered| self.get_with(&session, path, query, answered))
    }

    fn get_with(
        &self,
        session: &Session,
        path: &str,
        query: Option<(&str, &str)>,
        answered: &Cell<Option<u16>>,
    ) -> Result<Value, CallError> {
        let timeout = self.settings.request_timeout;
        let mut request = self
            .agent
            .get(format!("{}{path}", session.instance_url))
            .header("Authorization", &format!("Bearer {}", session.token));
        if let Some((name, value)) = query {
            request = request.query(name, value);
        }
        let mut r = request.call().map_err(|e| call_failed(&e, timeout))?;
        // Queries and describes count against the budget too: their answers say how much is used.
        if let Some(u) = r.headers().get("Sforce-Limit-Info").and_then(|h| h.to_str().ok()).and_then(Usage::parse) {
            *lock(&self.usage) = Some(u);
        }
        let status = r.status().as_u16();
        answered.set(Some(status));
        let body: Value = r.body_mut().read_json().unwrap_or(Value::Null);
        if status == 200 {
            return Ok(body);
        }
        let first = body.get(0);
        let code = first.and_then(|e| e.get("errorCode")).and_then(Value::as_str).unwrap_or("").to_string();
        let message = first.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("").to_string();
        Err(match status {
            401 => CallError::Unauthorized(format!("{code}: {message}")),
            403 if code == "REQUEST_LIMIT_EXCEEDED" => CallError::Unavailable(format!("{code}: {message}")),
            420 | 503 => CallError::Unavailable(format!("HTTP {status} {code}: {message}")),
            500..=599 => CallError::Failed { code: format!("HTTP_{status}"), message },
            _ => CallError::Rejected { status, code, message },
        })
    }

    /// One sObject Collections call; a 401 logs in again and retries once.
    /// `records` are borrowed and written straight into the request body, not copied.
    pub fn call<R: Borrow<Value>>(&self, kind: &CallKind, records: &[R]) -> Result<Vec<RecordResult>, CallError> {
        self.renewing_session(|| self.call_once(kind, records))
    }

    fn call_once<R: Borrow<Value>>(&self, kind: &CallKind, records: &[R]) -> Result<Vec<RecordResult>, CallError> {
        let session = self.session()?;
        let (method, path) = kind.request(&self.settings.api_version, &[]);
        self.exchange(method, &path, records.len(), true, |answered| self.call_with(&session, kind, records, answered))
    }

    fn call_with<R: Borrow<Value>>(
        &self,
        session: &Session,
        kind: &CallKind,
        records: &[R],
        answered: &Cell<Option<u16>>,
    ) -> Result<Vec<RecordResult>, CallError> {
        let ids: Vec<&str> = match kind {
            CallKind::Delete => records.iter().filter_map(|r| r.borrow().as_str()).collect(),
            _ => Vec::new(),
        };
        let url = format!("{}{}", session.instance_url, kind.request(&self.settings.api_version, &ids).1);
        let auth = format!("Bearer {}", session.token);
        let json_body = || {
            // Written straight from the borrowed records: the request holds the one copy a body needs.
            let mut body = b"{\"allOrNone\":false,\"records\":[".to_vec();
            for (i, r) in records.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                // Writing a Value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut body, r.borrow());
            }
            body.extend_from_slice(b"]}");
            body
        };
        let send = |request: ureq::RequestBuilder<ureq::typestate::WithBody>| {
            request
                .header("Authorization", &auth)
                .header("Content-Type", "application/json; charset=utf-8")
                .send(&json_body()[..])
        };
        let sent = match kind {
            CallKind::Create => send(self.agent.post(&url)),
            CallKind::Update | CallKind::Upsert { .. } => send(self.agent.patch(&url)),
            CallKind::Delete => self.agent.delete(&url).header("Authorization", &auth).call(),
        };
        let timeout = self.settings.request_timeout;
        let mut r = sent.map_err(|e| call_failed(&e, timeout))?;
        if let Some(u) = r.headers().get("Sforce-Limit-Info").and_then(|h| h.to_str().ok()).and_then(Usage::parse) {
            *lock(&self.usage) = Some(u);
        }
        let status = r.status().as_u16();
        answered.set(Some(status));
        let text = r.body_mut().read_to_string().map_err(|e| match call_failed(&e, timeout) {
            CallError::Failed { code, message } => {
                CallError::Failed { code, message: format!("reading the answer: {message}") }
            }
            other => other,
        })?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 {
            let list = body.as_array().ok_or_else(|| CallError::Failed {
                code: "UNEXPECTED_ANSWER".into(),
                message: format!("HTTP 200 without a list of results: {}", truncate(&text)),
            })?;
            return Ok(list.iter().map(record_result).collect());
        }
        Err(answer_error(status, &body, &text))
    }

    /// One REST request on the instance (Bulk API 2.0 uses these), with a body of a content type or none; a 401
    /// logs in again and retries once. Returns the text of a 2xx answer; other answers and transport failures
    /// are `CallError`s as for sObject Collections calls.
    pub fn rest(&self, method: &'static str, path: &str, body: Option<(&str, &[u8])>) -> Result<String, CallError> {
        Ok(self.rest_answer(method, path, body)?.text)
    }

    /// `rest`, with the answer's `Sforce-Locator` header (Bulk API 2.0 query results come in sets by locator).
    pub fn rest_answer(
        &self,
        method: &'static str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<RestAnswer, CallError> {
        self.renewing_session(|| self.rest_once(method, path, body))
    }

    fn rest_once(
        &self,
        method: &'static str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<RestAnswer, CallError> {
        let session = self.session()?;
        self.exchange(method, path, 0, true, |answered| self.rest_with(&session, method, path, body, answered))
    }

    fn rest_with(
        &self,
        session: &Session,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        answered: &Cell<Option<u16>>,
    ) -> Result<RestAnswer, CallError> {
        let url = format!("{}{path}", session.instance_url);
        let auth = format!("Bearer {}", session.token);
        let sent = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", &auth).call(),
            (m, body) => {
                let request = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.patch(&url),
                };
                let (content_type, bytes) = body.unwrap_or(("application/json", b"{}"));
                request.header("Authorization", &auth).header("Content-Type", content_type).send(bytes)
            }
        };
        let timeout = self.settings.request_timeout;
        let mut r = sent.map_err(|e| call_failed(&e, timeout))?;
        if let Some(u) = r.headers().get("Sforce-Limit-Info").and_then(|h| h.to_str().ok()).and_then(Usage::parse) {
            *lock(&self.usage) = Some(u);
        }
        let status = r.status().as_u16();
        answered.set(Some(status));
        let locator = r.headers().get("Sforce-Locator").and_then(|h| h.to_str().ok()).map(str::to_string);
        let text = r.body_mut().with_config().limit(u64::MAX).read_to_string().map_err(|e| call_failed(&e, timeout))?;
        if (200..300).contains(&status) {
            return Ok(RestAnswer { text, locator });
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(answer_error(status, &body, &text))
    }
}

/// A REST answer's text, and its `Sforce-Locator` header if it had one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestAnswer {
    pub text: String,
    pub locator: Option<String>,
}

/// What an answer other than 2xx means: 401 refused credentials; 403 limits, 420 and 503 an outage (nothing was
/// applied); other 5xx a request that failed on the way; anything else a request refused as a whole.
fn answer_error(status: u16, body: &Value, text: &str) -> CallError {
    let first = body.get(0);
    let code = first.and_then(|e| e.get("errorCode")).and_then(Value::as_str).unwrap_or("").to_string();
    let message = first
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| truncate(text));
    match status {
        401 => CallError::Unauthorized(format!("{code}: {message}")),
        403 if code == "REQUEST_LIMIT_EXCEEDED" => CallError::Unavailable(format!("{code}: {message}")),
        // Maintenance, overload, rate limiting: Salesforce is not serving; the request was not applied.
        420 | 503 => CallError::Unavailable(format!("HTTP {status} {code}: {message}")),
        500..=599 => CallError::Failed {
            code: if code.is_empty() { format!("HTTP_{status}") } else { code },
            message: format!("HTTP {status}: {message}"),
        },
        _ => {
            CallError::Rejected { status, code: if code.is_empty() { format!("HTTP_{status}") } else { code }, message }
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

fn record_result(v: &Value) -> RecordResult {
    let errors = v
        .get("errors")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|e| SfError {
                    code: e.get("statusCode").and_then(Value::as_str).unwrap_or("UNKNOWN").to_string(),
                    message: e.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
                    fields: e
                        .get("fields")
                        .and_then(Value::as_array)
                        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_string).collect())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    RecordResult {
        id: v.get("id").and_then(Value::as_str).map(str::to_string),
        success: v.get("success").and_then(Value::as_bool).unwrap_or(false),
        created: v.get("created").and_then(Value::as_bool),
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_the_limits_resource_and_the_header() {
        let limits = json!({"DailyApiRequests": {"Max": 15000, "Remaining": 14000}, "DataStorageMB": {"Max": 5}});
        assert_eq!(Usage::from_limits(&limits), Some(Usage { used: 1000, limit: 15000 }));
        assert_eq!(Usage::from_limits(&json!({"DataStorageMB": {}})), None);
        assert_eq!(Usage::parse("api-usage=25/15000"), Some(Usage { used: 25, limit: 15000 }));
    }
}
