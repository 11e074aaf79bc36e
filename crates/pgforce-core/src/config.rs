//! The worker's settings as one value: the extension reads every `pgforce.*` setting once at the start of a cycle
//! into a `Config` and passes it down, so a cycle never sees half of a reload. The checks the settings' validation
//! hooks run live here too, so they are tested without Postgres.

use std::time::Duration;

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
    /// The org and how to reach it.
    pub connection: Settings,
    pub write_algorithm: WriteAlgorithm,
    pub max_concurrency: usize,
    pub batch_size: i64,
    pub max_attempts: i32,
    /// `None`: FAILED entries are not retried automatically.
    pub retry_failed_after: Option<Duration>,
    pub max_api_usage: f64,
    pub archive_after: Duration,
    pub archive_retention: Duration,
    pub poll_interval: Duration,
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

/// `pgforce.login_url`: an `https://` URL with a host and nothing after it (`http://` only for a loopback stand-in
/// such as fakeforce), since the client appends `/services/oauth2/token` itself.
pub fn check_login_url(value: &str) -> Result<(), String> {
    let url = url::Url::parse(value).map_err(|e| format!("\"{value}\" is not a URL ({e})"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(format!("\"{value}\" has no host")),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err(format!("\"{value}\" is not https; Salesforce is reached over https only")),
        other => return Err(format!("\"{value}\" has scheme {other}; use https://")),
    }
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

    #[test]
    fn login_urls() {
        for ok in [
            "https://login.salesforce.com",
            "https://test.salesforce.com/",
            "https://acme.my.salesforce.com",
            "http://127.0.0.1:8443",
            "http://localhost:1234",
        ] {
            assert_eq!(check_login_url(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("login.salesforce.com", "not a URL"),
            ("http://login.salesforce.com", "https only"),
            ("ftp://login.salesforce.com", "scheme ftp"),
            ("https://login.salesforce.com/services/oauth2/token", "has a path"),
            ("https://user:pw@login.salesforce.com", "credentials"),
        ] {
            let e = check_login_url(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
