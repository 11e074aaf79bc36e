//! Every `pgforce.*` setting, registered in one place. Settings with a fixed set of values are enums, and the API
//! version and login URL are checked when set, so `SET`, `ALTER SYSTEM` and the configuration file refuse a typo
//! instead of it silently meaning something else. The worker reads them all at once into a `Config` at the top of
//! each cycle (`config()`), so a reload (SIGHUP) takes effect at the next cycle without a restart (except
//! `pgforce.database`).

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::PathBuf;
use std::time::Duration;

use pgforce_core::config::{check_api_version, Config, WriteAlgorithm};
use pgforce_core::salesforce::settings::check_login_url;
use pgforce_core::salesforce::{AuthFlow, Settings};
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

/// `pgforce.auth_flow` as Postgres stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
enum AuthFlowSetting {
    #[name = c"client_credentials"]
    ClientCredentials,
    #[name = c"jwt_bearer"]
    JwtBearer,
    #[name = c"refresh_token"]
    RefreshToken,
}

impl From<AuthFlowSetting> for AuthFlow {
    fn from(s: AuthFlowSetting) -> AuthFlow {
        match s {
            AuthFlowSetting::ClientCredentials => AuthFlow::ClientCredentials,
            AuthFlowSetting::JwtBearer => AuthFlow::JwtBearer,
            AuthFlowSetting::RefreshToken => AuthFlow::RefreshToken,
        }
    }
}

/// `pgforce.write_algorithm` as Postgres stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
enum WriteAlgorithmSetting {
    #[name = c"merged"]
    Merged,
    #[name = c"ordered"]
    Ordered,
}

impl From<WriteAlgorithmSetting> for WriteAlgorithm {
    fn from(s: WriteAlgorithmSetting) -> WriteAlgorithm {
        match s {
            WriteAlgorithmSetting::Merged => WriteAlgorithm::Merged,
            WriteAlgorithmSetting::Ordered => WriteAlgorithm::Ordered,
        }
    }
}

/// `pgforce.debug_fault`: a fault the worker causes on purpose, so tests can show it survives its own bugs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
enum DebugFault {
    #[name = c"none"]
    None,
    #[name = c"panic_while_sending"]
    PanicWhileSending,
}

static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
static LOGIN_URL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"https://login.salesforce.com"));
static AUTH_FLOW: GucSetting<AuthFlowSetting> = GucSetting::<AuthFlowSetting>::new(AuthFlowSetting::ClientCredentials);
static CLIENT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CLIENT_SECRET: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static USERNAME: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static JWT_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static JWT_AUDIENCE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static REFRESH_TOKEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CLIENT_SECRET_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static REFRESH_TOKEN_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ALLOW_INSECURE_HTTP: GucSetting<bool> = GucSetting::<bool>::new(false);
static API_VERSION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"62.0"));
static WRITE_ALGORITHM: GucSetting<WriteAlgorithmSetting> =
    GucSetting::<WriteAlgorithmSetting>::new(WriteAlgorithmSetting::Merged);
static MAX_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(8);
static REQUEST_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(5);
static RETRY_FAILED_AFTER_S: GucSetting<i32> = GucSetting::<i32>::new(-1);
static ALERT_STALLED_AFTER_S: GucSetting<i32> = GucSetting::<i32>::new(900);
static ALERT_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(60);
static MAX_API_USAGE: GucSetting<f64> = GucSetting::<f64>::new(0.9);
static ARCHIVE_AFTER_S: GucSetting<i32> = GucSetting::<i32>::new(24 * 3600);
static ARCHIVE_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(31 * 24 * 3600);
static REQUEST_HISTORY: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(4000);
static BULK_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(2000);
static BULK_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(50_000);
static MAX_REQUEST_BYTES: GucSetting<i32> = GucSetting::<i32>::new(2 * 1024 * 1024);
static POLL_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static READ_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
static DELETE_SWEEP_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(300);
static READ_LOOK_BACK_S: GucSetting<i32> = GucSetting::<i32>::new(120);
static READ_BULK_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static COMPARE_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(86_400);
static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(1_000);
static STATEMENT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);
static DEBUG_FAULT: GucSetting<DebugFault> = GucSetting::<DebugFault>::new(DebugFault::None);

/// Registers the settings. `preloading`: called from the postmaster, where `pgforce.database` (a start-up-only
/// setting, which Postgres refuses to create later) is defined too.
pub fn register(preloading: bool) {
    use GucContext::{Postmaster, Sighup};
    let none = GucFlags::default();
    // Secrets: hidden from pg_settings and SHOW ALL for everyone; SHOW and current_setting() refuse roles without
    // pg_read_all_settings, and show those with it (pg_monitor, postgres_exporter) only a mask (`show_secret`).
    let secret = GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL;
    if preloading {
        GucRegistry::define_string_guc(
            c"pgforce.database",
            c"Database the sync worker serves.",
            c"The worker connects to this database at server start; changing it needs a restart.",
            &DATABASE,
            Postmaster,
            GucFlags::SUPERUSER_ONLY,
        );
    }
    GucRegistry::define_bool_guc(
        c"pgforce.enabled",
        c"Whether the sync worker delivers changes.",
        c"Off: changes are still captured and wait in _trigger_log.",
        &ENABLED,
        Sighup,
        none,
    );
    // SAFETY: the check hooks are #[pg_guard]ed and only read their argument.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"pgforce.login_url",
            c"Salesforce login URL (token endpoint host).",
            c"https://login.salesforce.com, https://test.salesforce.com or the org's My Domain URL.",
            &LOGIN_URL,
            Sighup,
            none,
            Some(check_login_url_hook),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"pgforce.api_version",
            c"Salesforce REST API version, such as 62.0.",
            c"",
            &API_VERSION,
            Sighup,
            none,
            Some(check_api_version_hook),
            None,
            None,
        );
    }
    GucRegistry::define_enum_guc(
        c"pgforce.auth_flow",
        c"OAuth flow: client_credentials, jwt_bearer or refresh_token.",
        c"",
        &AUTH_FLOW,
        Sighup,
        none,
    );
    GucRegistry::define_string_guc(c"pgforce.client_id", c"Connected app consumer key.", c"", &CLIENT_ID, Sighup, none);
    // SAFETY: the show hook is #[pg_guard]ed and only reads the setting.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"pgforce.client_secret",
            c"Connected app consumer secret.",
            c"Readable by superusers only.",
            &CLIENT_SECRET,
            Sighup,
            secret,
            None,
            None,
            Some(show_client_secret),
        );
    }
    GucRegistry::define_string_guc(
        c"pgforce.username",
        c"Integration user (the JWT bearer flow's subject).",
        c"",
        &USERNAME,
        Sighup,
        none,
    );
    // SAFETY: the show hook is #[pg_guard]ed and only reads the setting.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"pgforce.jwt_key_file",
            c"PEM file with the RSA private key for the JWT bearer flow.",
            c"Readable by superusers only.",
            &JWT_KEY_FILE,
            Sighup,
            secret,
            None,
            None,
            Some(show_jwt_key_file),
        );
    }
    GucRegistry::define_string_guc(
        c"pgforce.jwt_audience",
        c"The JWT bearer assertion's audience (empty: https://login.salesforce.com, or https://test.salesforce.com for a sandbox login URL).",
        c"Salesforce expects one of those two even when pgforce.login_url is a My Domain URL; set it for an Experience Cloud site.",
        &JWT_AUDIENCE,
        Sighup,
        none,
    );
    // SAFETY: the show hook is #[pg_guard]ed and only reads the setting.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"pgforce.refresh_token",
            c"Refresh token for the refresh_token flow.",
            c"Readable by superusers only.",
            &REFRESH_TOKEN,
            Sighup,
            secret,
            None,
            None,
            Some(show_refresh_token),
        );
    }
    // SAFETY: the show hook is #[pg_guard]ed and only reads the setting.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"pgforce.client_secret_file",
            c"File with the connected app's consumer secret (instead of pgforce.client_secret).",
            c"Readable by the server's OS user only (mode 600); re-read on reload. Readable by superusers only.",
            &CLIENT_SECRET_FILE,
            Sighup,
            secret,
            None,
            None,
            Some(show_client_secret_file),
        );
    }
    // SAFETY: the show hook is #[pg_guard]ed and only reads the setting.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"pgforce.refresh_token_file",
            c"File with the refresh token (instead of pgforce.refresh_token).",
            c"Readable by the server's OS user only (mode 600); re-read on reload. Readable by superusers only.",
            &REFRESH_TOKEN_FILE,
            Sighup,
            secret,
            None,
            None,
            Some(show_refresh_token_file),
        );
    }
    GucRegistry::define_bool_guc(
        c"pgforce.allow_insecure_http",
        c"Allow plain http to Salesforce hosts that are not loopback addresses.",
        c"Off: only https (and http to a loopback stand-in). Set it before pgforce.login_url.",
        &ALLOW_INSECURE_HTTP,
        Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"pgforce.write_algorithm",
        c"merged (collapse a record's changes into one write) or ordered (one change at a time).",
        c"",
        &WRITE_ALGORITHM,
        Sighup,
        none,
    );
    GucRegistry::define_int_guc(
        c"pgforce.max_concurrency",
        c"Salesforce requests in flight at once.",
        c"",
        &MAX_CONCURRENCY,
        1,
        64,
        Sighup,
        none,
    );
    GucRegistry::define_int_guc(
        c"pgforce.request_timeout",
        c"Timeout of each Salesforce request.",
        c"",
        &REQUEST_TIMEOUT_MS,
        100,
        600_000,
        Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pgforce.max_attempts",
        c"Attempts for records failing with transient errors before they stay FAILED.",
        c"",
        &MAX_ATTEMPTS,
        1,
        1000,
        Sighup,
        none,
    );
    GucRegistry::define_int_guc(
        c"pgforce.retry_failed_after",
        c"Retry FAILED records again after this long (-1: never).",
        c"",
        &RETRY_FAILED_AFTER_S,
        -1,
        i32::MAX,
        Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgforce.alert_stalled_after",
        c"Alert (NOTIFY pgforce_alerts) when the oldest change waiting is older than this (-1: never).",
        c"",
        &ALERT_STALLED_AFTER_S,
        -1,
        i32::MAX,
        Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgforce.alert_interval",
        c"At most one alert of each kind in this long; the latest held back is sent after it.",
        c"",
        &ALERT_INTERVAL_S,
        1,
        86_400,
        Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_float_guc(
        c"pgforce.max_api_usage",
        c"Fraction of the daily API budget above which the worker slows down.",
        c"",
        &MAX_API_USAGE,
        0.0,
        1.0,
        Sighup,
        none,
    );
    GucRegistry::define_int_guc(
        c"pgforce.archive_after",
        c"Finished log rows older than this move to _trigger_log_archive.",
        c"",
        &ARCHIVE_AFTER_S,
        0,
        i32::MAX,
        Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgforce.archive_retention",
        c"Archive rows older than this are deleted.",
        c"",
        &ARCHIVE_RETENTION_S,
        0,
        i32::MAX,
        Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgforce.batch_size",
        c"Log rows claimed per delivery cycle.",
        c"",
        &BATCH_SIZE,
        1,
        100_000,
        Sighup,
        none,
    );
    GucRegistry::define_int_guc(
        c"pgforce.bulk_threshold",
        c"Changes of one object and operation in one claim from which they go as a Bulk API 2.0 job (0: never).",
        c"Upserts by the upsert field, updates and deletes by sfid; inserts without an upsert field never.",
        &BULK_THRESHOLD,
        0,
        i32::MAX,
        Sighup,
        none,
    );
    GucRegistry::define_int_guc(
        c"pgforce.bulk_batch_size",
        c"Log rows claimed per cycle while the queue holds at least bulk_threshold due changes.",
        c"",
        &BULK_BATCH_SIZE,
        1,
        1_000_000,
        Sighup,
        none,
    );
    GucRegistry::define_int_guc(
        c"pgforce.request_history",
        c"Requests to Salesforce kept in salesforce.sync_requests (the newest; 0 keeps none).",
        c"",
        &REQUEST_HISTORY,
        0,
        10_000_000,
        Sighup,
        none,
    );
    GucRegistry::define_int_guc(
        c"pgforce.max_request_bytes",
        c"Most bytes of JSON in one Salesforce request; a claim takes at most max_concurrency requests' worth.",
        c"",
        &MAX_REQUEST_BYTES,
        16 * 1024,
        50 * 1024 * 1024,
        Sighup,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_int_guc(
        c"pgforce.poll_interval",
        c"Fallback poll when no commit wakes the worker.",
        c"",
        &POLL_INTERVAL_MS,
        10,
        3_600_000,
        Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pgforce.read_interval",
        c"How often each read-only mapping asks Salesforce for changes.",
        c"",
        &READ_INTERVAL_MS,
        1_000,
        3_600_000,
        Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pgforce.read_bulk_threshold",
        c"Loads (a mapping's first read, reload(), the comparison) of at least this many records go through a Bulk API 2.0 query job (0: never).",
        c"",
        &READ_BULK_THRESHOLD,
        0,
        i32::MAX,
        Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgforce.read_look_back",
        c"How far before its position each poll starts, for changes Salesforce commits later than their stamp.",
        c"",
        &READ_LOOK_BACK_S,
        0,
        86_400,
        Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgforce.delete_sweep_interval",
        c"How often each reading mapping asks Salesforce's delete log for records deleted for good.",
        c"Salesforce counts whole minutes and refuses a window of a minute or less: keep it at 2 minutes or more.",
        &DELETE_SWEEP_INTERVAL_S,
        1,
        86_400,
        Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgforce.compare_interval",
        c"How often each reading mapping reads every record again, to find what no poll shows (0: never).",
        c"",
        &COMPARE_INTERVAL_S,
        0,
        i32::MAX,
        Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgforce.lock_timeout",
        c"How long the worker waits for a row a user has locked before it tries that entry again later.",
        c"",
        &LOCK_TIMEOUT_MS,
        1,
        600_000,
        Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pgforce.statement_timeout",
        c"How long any statement of the worker may run.",
        c"",
        &STATEMENT_TIMEOUT_MS,
        100,
        3_600_000,
        Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_enum_guc(
        c"pgforce.debug_fault",
        c"For pgforce's own tests: a fault the worker causes on purpose.",
        c"Never set this in production.",
        &DEBUG_FAULT,
        Sighup,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
    // SAFETY: called from _PG_init in the postmaster (or a backend loading the library), as Postgres expects.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"pgforce".as_ptr()) };
}

/// Runs a value check for a string setting's check hook: on refusal, Postgres reports the reason (with SQLSTATE
/// 22023) and `hint`, and keeps the old value.
///
/// # Safety
/// `newval` must be the check hook's argument.
unsafe fn check_string(
    name: &str,
    newval: *mut *mut c_char,
    check: impl Fn(&str) -> Result<(), String>,
    hint: &CStr,
) -> bool {
    // SAFETY: Postgres passes a pointer to the proposed value, a palloc'd C string or NULL.
    let value = unsafe { newval.as_ref().filter(|p| !p.is_null()).map(|p| CStr::from_ptr(*p)) };
    let Some(text) = value.map(|v| v.to_string_lossy()) else { return true };
    match check(&text) {
        Ok(()) => true,
        Err(reason) => {
            let message = CString::new(format!("invalid value for parameter \"{name}\": {reason}")).unwrap_or_default();
            // SAFETY: GUC_check_errmsg/errhint take palloc'd strings, which Postgres reports and frees.
            unsafe {
                pg_sys::GUC_check_errcode(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE as i32);
                pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(message.as_ptr());
                pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(hint.as_ptr());
            }
            false
        }
    }
}

/// What `SHOW` and `current_setting()` print for a secret: the value to superusers, to everyone else (members of
/// pg_read_all_settings, such as pg_monitor, get this far) `********` when it is set and nothing when it is not.
/// The value lives only in the setting's own variable, which Postgres never prints for a setting with a show hook.
fn show_secret(setting: &GucSetting<Option<CString>>) -> *const c_char {
    let value = setting.get();
    // SAFETY: asks whether this backend's current user is a superuser; pstrdup copies into the current memory
    // context, which the caller's own copy outlives.
    unsafe {
        match value {
            None => c"".as_ptr(),
            Some(v) if pg_sys::superuser() => pg_sys::pstrdup(v.as_ptr()),
            Some(_) => c"********".as_ptr(),
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn show_client_secret() -> *const c_char {
    show_secret(&CLIENT_SECRET)
}

#[pg_guard]
unsafe extern "C-unwind" fn show_jwt_key_file() -> *const c_char {
    show_secret(&JWT_KEY_FILE)
}

#[pg_guard]
unsafe extern "C-unwind" fn show_refresh_token() -> *const c_char {
    show_secret(&REFRESH_TOKEN)
}

#[pg_guard]
unsafe extern "C-unwind" fn show_client_secret_file() -> *const c_char {
    show_secret(&CLIENT_SECRET_FILE)
}

#[pg_guard]
unsafe extern "C-unwind" fn show_refresh_token_file() -> *const c_char {
    show_secret(&REFRESH_TOKEN_FILE)
}

#[pg_guard]
unsafe extern "C-unwind" fn check_login_url_hook(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: called by Postgres as this setting's check hook.
    unsafe {
        let allow_insecure_http = ALLOW_INSECURE_HTTP.get();
        check_string("pgforce.login_url", newval, |v| check_login_url(v, allow_insecure_http), c"Use https://login.salesforce.com, https://test.salesforce.com or the org's My Domain URL, such as https://mycompany.my.salesforce.com.")
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_api_version_hook(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: called by Postgres as this setting's check hook.
    unsafe {
        check_string(
            "pgforce.api_version",
            newval,
            check_api_version,
            c"Use a REST API version the org supports, such as 62.0.",
        )
    }
}

fn text(s: &GucSetting<Option<CString>>) -> String {
    s.get().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The database the worker serves (read once, at worker start).
pub fn database() -> String {
    text(&DATABASE)
}

/// Every setting the worker uses, read now.
pub fn config() -> Config {
    let request_timeout = Duration::from_millis(REQUEST_TIMEOUT_MS.get().max(1) as u64);
    let retry_failed_after = RETRY_FAILED_AFTER_S.get();
    let alert_stalled_after = ALERT_STALLED_AFTER_S.get();
    Config {
        enabled: ENABLED.get(),
        connection: Settings {
            login_url: text(&LOGIN_URL),
            auth_flow: AUTH_FLOW.get().into(),
            client_id: text(&CLIENT_ID),
            client_secret: text(&CLIENT_SECRET),
            username: text(&USERNAME),
            jwt_key_file: PathBuf::from(text(&JWT_KEY_FILE)),
            refresh_token: text(&REFRESH_TOKEN),
            jwt_audience: text(&JWT_AUDIENCE),
            api_version: text(&API_VERSION),
            request_timeout,
            allow_insecure_http: ALLOW_INSECURE_HTTP.get(),
        },
        client_secret_file: PathBuf::from(text(&CLIENT_SECRET_FILE)),
        refresh_token_file: PathBuf::from(text(&REFRESH_TOKEN_FILE)),
        write_algorithm: WRITE_ALGORITHM.get().into(),
        max_concurrency: MAX_CONCURRENCY.get().max(1) as usize,
        batch_size: i64::from(BATCH_SIZE.get().max(1)),
        bulk_threshold: BULK_THRESHOLD.get().max(0) as usize,
        bulk_batch_size: i64::from(BULK_BATCH_SIZE.get().max(1)),
        max_request_bytes: MAX_REQUEST_BYTES.get().max(1) as usize,
        max_attempts: MAX_ATTEMPTS.get(),
        retry_failed_after: (retry_failed_after >= 0).then(|| Duration::from_secs(retry_failed_after as u64)),
        max_api_usage: MAX_API_USAGE.get(),
        archive_after: Duration::from_secs(ARCHIVE_AFTER_S.get().max(0) as u64),
        archive_retention: Duration::from_secs(ARCHIVE_RETENTION_S.get().max(0) as u64),
        request_history: i64::from(REQUEST_HISTORY.get().max(0)),
        poll_interval: Duration::from_millis(POLL_INTERVAL_MS.get().max(10) as u64),
        read_interval: Duration::from_millis(READ_INTERVAL_MS.get().max(1_000) as u64),
        read_bulk_threshold: (READ_BULK_THRESHOLD.get() > 0).then(|| READ_BULK_THRESHOLD.get() as u64),
        read_look_back: Duration::from_secs(READ_LOOK_BACK_S.get().max(0) as u64),
        delete_sweep_interval: Duration::from_secs(DELETE_SWEEP_INTERVAL_S.get().max(1) as u64),
        compare_interval: (COMPARE_INTERVAL_S.get() > 0).then(|| Duration::from_secs(COMPARE_INTERVAL_S.get() as u64)),
        lock_timeout: Duration::from_millis(LOCK_TIMEOUT_MS.get().max(1) as u64),
        statement_timeout: Duration::from_millis(STATEMENT_TIMEOUT_MS.get().max(1) as u64),
        alert_stalled_after: (alert_stalled_after >= 0).then(|| Duration::from_secs(alert_stalled_after as u64)),
        alert_interval: Duration::from_secs(ALERT_INTERVAL_S.get().max(1) as u64),
    }
}

/// With `pgforce.debug_fault = panic_while_sending`, panics (a stand-in for a bug in the worker).
pub fn inject_fault_while_sending() {
    if DEBUG_FAULT.get() == DebugFault::PanicWhileSending {
        panic!("pgforce.debug_fault = panic_while_sending");
    }
}
