//! What it takes to reach one org: the connection settings, where credentials may be sent (`check_transport`), how
//! secrets are read from files, and the JWT bearer assertion's audience. `config` builds a `Settings` from the
//! `pgforce.*` settings; the client uses these checks at each login.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFlow {
    ClientCredentials,
    JwtBearer,
    RefreshToken,
}

impl AuthFlow {
    /// The flow's name, as `pgforce.auth_flow` spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthFlow::ClientCredentials => "client_credentials",
            AuthFlow::JwtBearer => "jwt_bearer",
            AuthFlow::RefreshToken => "refresh_token",
        }
    }
}

/// Everything needed to reach one org (the worker's `pgforce.*` connection settings). Secrets stay in here: `Debug`
/// does not print them. A change of any of them means a new client.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub login_url: String,
    pub auth_flow: AuthFlow,
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    /// PEM file with the RSA private key of the JWT bearer flow, read at each login (so a rotated key is used).
    pub jwt_key_file: PathBuf,
    pub refresh_token: String,
    /// `pgforce.jwt_audience`: the JWT bearer assertion's `aud` (empty: `jwt_audience` derives it from the login URL).
    pub jwt_audience: String,
    pub api_version: String,
    pub request_timeout: Duration,
    /// `pgforce.allow_insecure_http`: plain http to hosts that are not loopback addresses.
    pub allow_insecure_http: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("login_url", &self.login_url)
            .field("auth_flow", &self.auth_flow)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("jwt_key_file", &self.jwt_key_file)
            .field("jwt_audience", &self.jwt_audience)
            .field("api_version", &self.api_version)
            .field("request_timeout", &self.request_timeout)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish_non_exhaustive()
    }
}

/// What identifies a configured refresh token without keeping it: its SHA-256, hex.
pub fn token_fingerprint(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The audience of a JWT bearer assertion. Salesforce expects `https://login.salesforce.com`, or
/// `https://test.salesforce.com` for a sandbox, whatever URL the token is requested from (a My Domain URL included);
/// `configured` (`pgforce.jwt_audience`, e.g. an Experience Cloud site URL) overrides it.
pub fn jwt_audience(login_url: &str, configured: &str) -> String {
    if !configured.trim().is_empty() {
        return configured.trim().trim_end_matches('/').to_string();
    }
    let host =
        url::Url::parse(login_url).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)).unwrap_or_default();
    if host == "test.salesforce.com" || host.ends_with(".sandbox.my.salesforce.com") {
        "https://test.salesforce.com".into()
    } else {
        "https://login.salesforce.com".into()
    }
}

/// Where pgforce may send credentials and data: `https://` only; `http://` to a loopback address (a local stand-in
/// such as fakeforce), or anywhere with `pgforce.allow_insecure_http = on`. Holds for the login URL and for the
/// instance URL the token endpoint returns.
pub fn check_transport(value: &str, allow_insecure_http: bool) -> Result<(), String> {
    parse_for_transport(value, allow_insecure_http).map(|_| ())
}

fn parse_for_transport(value: &str, allow_insecure_http: bool) -> Result<url::Url, String> {
    let url = url::Url::parse(value).map_err(|e| format!("\"{value}\" is not a URL ({e})"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(format!("\"{value}\" has no host")),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback || allow_insecure_http => Ok(url),
        "http" => Err(format!(
            "\"{value}\" is not https; Salesforce is reached over https only (http only to a loopback address, or with pgforce.allow_insecure_http = on)"
        )),
        other => Err(format!("\"{value}\" has scheme {other}; use https://")),
    }
}

/// `pgforce.login_url`: a URL with a host and nothing after it, since the client appends
/// `/services/oauth2/token` itself; its transport as `check_transport` says.
pub fn check_login_url(value: &str, allow_insecure_http: bool) -> Result<(), String> {
    let url = parse_for_transport(value, allow_insecure_http)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "\"{value}\" carries credentials; put them in pgforce.client_id and pgforce.client_secret"
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("\"{value}\" has a path; give the host only, such as https://login.salesforce.com"));
    }
    Ok(())
}

/// Reads a secret from a file (`setting` names the setting that gives the file). The file must be readable by its
/// owner only (mode 600 or stricter), like Postgres' own key files. Errors name the setting, never the file or its
/// content. A trailing newline is not part of the secret.
pub fn read_secret(path: &Path, setting: &str) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{setting} cannot be read ({})", e.kind()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!("{setting} must be readable by the server's OS user only (chmod 600 it)"));
    }
    let mut bytes = std::fs::read(path).map_err(|e| format!("{setting} cannot be read ({})", e.kind()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_urls() {
        for ok in [
            "https://login.salesforce.com",
            "https://test.salesforce.com/",
            "https://acme.my.salesforce.com",
            "http://127.0.0.1:8443",
            "http://[::1]:8443",
            "http://localhost:1234",
        ] {
            assert_eq!(check_login_url(ok, false), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("login.salesforce.com", "not a URL"),
            ("http://login.salesforce.com", "https only"),
            ("http://10.0.0.7:8443", "https only"),
            ("ftp://login.salesforce.com", "scheme ftp"),
            ("https://login.salesforce.com/services/oauth2/token", "has a path"),
            ("https://user:pw@login.salesforce.com", "credentials"),
        ] {
            let e = check_login_url(bad, false).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(check_login_url("http://login.salesforce.com", true), Ok(()), "allowed explicitly");
        assert!(
            check_login_url("ftp://login.salesforce.com", true).is_err(),
            "only http is ever allowed besides https"
        );
    }

    #[test]
    fn secret_files_must_be_private_and_errors_name_no_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pgforce-core-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&file, "pgforce.client_secret_file"), Ok(b"s3cret".to_vec()));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_secret(&file, "pgforce.client_secret_file").unwrap_err();
        assert!(e.contains("chmod 600") && !e.contains(dir.to_str().unwrap()) && !e.contains("s3cret"), "{e}");
        let e = read_secret(&dir.join("missing"), "pgforce.refresh_token_file").unwrap_err();
        assert!(e.starts_with("pgforce.refresh_token_file cannot be read") && !e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
