//! Every `pgforce.*` setting, registered in one place and read through typed accessors. The worker reads them at the
//! top of each cycle, so a reload (SIGHUP) takes effect without a restart (except `pgforce.database`).

use std::ffi::CString;
use std::time::Duration;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
static LOGIN_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"https://login.salesforce.com"));
static AUTH_FLOW: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"client_credentials"));
static CLIENT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CLIENT_SECRET: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static USERNAME: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static JWT_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static REFRESH_TOKEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static API_VERSION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"62.0"));
static WRITE_ALGORITHM: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"merged"));
static MAX_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(8);
static REQUEST_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(5);
static RETRY_FAILED_AFTER_S: GucSetting<i32> = GucSetting::<i32>::new(-1);
static MAX_API_USAGE: GucSetting<f64> = GucSetting::<f64>::new(0.9);
static ARCHIVE_AFTER_S: GucSetting<i32> = GucSetting::<i32>::new(24 * 3600);
static ARCHIVE_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(31 * 24 * 3600);
static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(4000);
static POLL_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);

/// Registers the settings. `preloading`: called from the postmaster, where `pgforce.database` (a start-up-only
/// setting, which Postgres refuses to create later) is defined too.
pub fn register(preloading: bool) {
    use GucContext::{Postmaster, Sighup};
    let none = GucFlags::default();
    // Secrets: hidden from SHOW, pg_settings and SHOW ALL for everyone but superusers.
    let secret = GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL;
    if preloading {
        GucRegistry::define_string_guc(c"pgforce.database", c"Database the sync worker serves.", c"The worker connects to this database at server start; changing it needs a restart.", &DATABASE, Postmaster, GucFlags::SUPERUSER_ONLY);
    }
    GucRegistry::define_bool_guc(c"pgforce.enabled", c"Whether the sync worker delivers changes.", c"Off: changes are still captured and wait in _trigger_log.", &ENABLED, Sighup, none);
    GucRegistry::define_string_guc(c"pgforce.login_url", c"Salesforce login URL (token endpoint host).", c"https://login.salesforce.com, https://test.salesforce.com or the org's My Domain URL.", &LOGIN_URL, Sighup, none);
    GucRegistry::define_string_guc(c"pgforce.auth_flow", c"OAuth flow: client_credentials, jwt_bearer or refresh_token.", c"", &AUTH_FLOW, Sighup, none);
    GucRegistry::define_string_guc(c"pgforce.client_id", c"Connected app consumer key.", c"", &CLIENT_ID, Sighup, none);
    GucRegistry::define_string_guc(c"pgforce.client_secret", c"Connected app consumer secret.", c"Readable by superusers only.", &CLIENT_SECRET, Sighup, secret);
    GucRegistry::define_string_guc(c"pgforce.username", c"Integration user (the JWT bearer flow's subject).", c"", &USERNAME, Sighup, none);
    GucRegistry::define_string_guc(c"pgforce.jwt_key_file", c"PEM file with the RSA private key for the JWT bearer flow.", c"Readable by superusers only.", &JWT_KEY_FILE, Sighup, secret);
    GucRegistry::define_string_guc(c"pgforce.refresh_token", c"Refresh token for the refresh_token flow.", c"Readable by superusers only.", &REFRESH_TOKEN, Sighup, secret);
    GucRegistry::define_string_guc(c"pgforce.api_version", c"Salesforce REST API version.", c"", &API_VERSION, Sighup, none);
    GucRegistry::define_string_guc(c"pgforce.write_algorithm", c"merged (collapse a record's changes into one write) or ordered (one change at a time).", c"", &WRITE_ALGORITHM, Sighup, none);
    GucRegistry::define_int_guc(c"pgforce.max_concurrency", c"Salesforce requests in flight at once.", c"", &MAX_CONCURRENCY, 1, 64, Sighup, none);
    GucRegistry::define_int_guc(c"pgforce.request_timeout", c"Timeout of each Salesforce request.", c"", &REQUEST_TIMEOUT_MS, 100, 600_000, Sighup, GucFlags::UNIT_MS);
    GucRegistry::define_int_guc(c"pgforce.max_attempts", c"Attempts for records failing with transient errors before they stay FAILED.", c"", &MAX_ATTEMPTS, 1, 1000, Sighup, none);
    GucRegistry::define_int_guc(c"pgforce.retry_failed_after", c"Retry FAILED records again after this long (-1: never).", c"", &RETRY_FAILED_AFTER_S, -1, i32::MAX, Sighup, GucFlags::UNIT_S);
    GucRegistry::define_float_guc(c"pgforce.max_api_usage", c"Fraction of the daily API budget above which the worker slows down.", c"", &MAX_API_USAGE, 0.0, 1.0, Sighup, none);
    GucRegistry::define_int_guc(c"pgforce.archive_after", c"Finished log rows older than this move to _trigger_log_archive.", c"", &ARCHIVE_AFTER_S, 0, i32::MAX, Sighup, GucFlags::UNIT_S);
    GucRegistry::define_int_guc(c"pgforce.archive_retention", c"Archive rows older than this are deleted.", c"", &ARCHIVE_RETENTION_S, 0, i32::MAX, Sighup, GucFlags::UNIT_S);
    GucRegistry::define_int_guc(c"pgforce.batch_size", c"Log rows claimed per delivery cycle.", c"", &BATCH_SIZE, 1, 100_000, Sighup, none);
    GucRegistry::define_int_guc(c"pgforce.poll_interval", c"Fallback poll when no commit wakes the worker.", c"", &POLL_INTERVAL_MS, 10, 3_600_000, Sighup, GucFlags::UNIT_MS);
    // SAFETY: called from _PG_init in the postmaster (or a backend loading the library), as Postgres expects.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"pgforce".as_ptr()) };
}

fn text(s: &GucSetting<Option<CString>>) -> String {
    s.get().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default()
}

pub fn database() -> String {
    text(&DATABASE)
}
pub fn enabled() -> bool {
    ENABLED.get()
}
pub fn login_url() -> String {
    text(&LOGIN_URL)
}
pub fn auth_flow() -> String {
    text(&AUTH_FLOW)
}
pub fn client_id() -> String {
    text(&CLIENT_ID)
}
pub fn client_secret() -> String {
    text(&CLIENT_SECRET)
}
pub fn username() -> String {
    text(&USERNAME)
}
pub fn jwt_key_file() -> String {
    text(&JWT_KEY_FILE)
}
pub fn refresh_token() -> String {
    text(&REFRESH_TOKEN)
}
pub fn api_version() -> String {
    text(&API_VERSION)
}
pub fn ordered_writes() -> bool {
    text(&WRITE_ALGORITHM).eq_ignore_ascii_case("ordered")
}
pub fn max_concurrency() -> usize {
    MAX_CONCURRENCY.get().max(1) as usize
}
pub fn request_timeout() -> Duration {
    Duration::from_millis(REQUEST_TIMEOUT_MS.get().max(1) as u64)
}
pub fn max_attempts() -> i32 {
    MAX_ATTEMPTS.get()
}
/// `None` when failed records are not retried automatically.
pub fn retry_failed_after() -> Option<Duration> {
    let s = RETRY_FAILED_AFTER_S.get();
    (s >= 0).then(|| Duration::from_secs(s as u64))
}
pub fn max_api_usage() -> f64 {
    MAX_API_USAGE.get()
}
pub fn archive_after() -> Duration {
    Duration::from_secs(ARCHIVE_AFTER_S.get().max(0) as u64)
}
pub fn archive_retention() -> Duration {
    Duration::from_secs(ARCHIVE_RETENTION_S.get().max(0) as u64)
}
pub fn batch_size() -> i64 {
    BATCH_SIZE.get().max(1) as i64
}
pub fn poll_interval() -> Duration {
    Duration::from_millis(POLL_INTERVAL_MS.get().max(10) as u64)
}
