//! The worker's connection to Salesforce: the settings (secrets read from their files once per reload), the
//! client built from them (again when they change; a refresh-token client logs in with the token Salesforce last
//! rotated to, kept in Postgres), the breaker that spaces attempts during an outage, and the API budget: what
//! Salesforce says is used, what pgforce itself spent, and until when pacing holds delivery back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgforce_core::config::{self, Config};
use pgforce_core::retry::Breaker;
use pgforce_core::salesforce::{token_fingerprint, AuthFlow, Client, Settings};
use pgrx::datum::DatumWithOid;

use super::db::Db;

/// Secrets read from `pgforce.client_secret_file` and `pgforce.refresh_token_file` (client secret, refresh token),
/// kept until the next reload; or why they cannot be read.
struct SecretFiles {
    paths: (PathBuf, PathBuf),
    read: Result<config::SecretFiles, String>,
}

pub(crate) struct Connection {
    /// The client and the connection settings it was built from (a reload that changes them builds a new one).
    client: Option<(Settings, Arc<Client>)>,
    secrets: Option<SecretFiles>,
    /// A refresh token Salesforce rotated to that could not be written yet.
    unkept_refresh_token: Option<String>,
    /// Spaces the attempts while Salesforce cannot be reached.
    pub(crate) breaker: Breaker,
    /// The end of the pause pacing by budget set after the last delivery.
    pub(crate) paced_until: Option<Instant>,
}

impl Default for Connection {
    fn default() -> Connection {
        Connection {
            client: None,
            secrets: None,
            unkept_refresh_token: None,
            breaker: Breaker::new(Duration::from_millis(250), Duration::from_secs(60)),
            paced_until: None,
        }
    }
}

impl Connection {
    /// The connection settings, with the secrets given in files.
    pub(crate) fn settings(&mut self, config: &Config) -> Result<Settings, String> {
        let paths = (config.client_secret_file.clone(), config.refresh_token_file.clone());
        if self.secrets.as_ref().is_none_or(|s| s.paths != paths) {
            self.secrets = Some(SecretFiles { paths, read: config.read_secret_files() });
        }
        match self.secrets.as_ref().map(|s| &s.read) {
            Some(Ok(secrets)) => Ok(config.connection_with(secrets)),
            Some(Err(e)) => Err(e.clone()),
            None => Ok(config.connection.clone()),
        }
    }

    /// The client for these settings, built anew when they changed. A new refresh-token client logs in with the
    /// token Salesforce last rotated the configured one to, if it did.
    pub(crate) fn client(&mut self, db: &mut Db, settings: &Settings) -> Arc<Client> {
        if self.client.as_ref().is_some_and(|(current, _)| current != settings) {
            self.client = None;
        }
        if let Some((_, client)) = &self.client {
            return client.clone();
        }
        let client = Arc::new(Client::new(settings.clone()));
        if settings.auth_flow == AuthFlow::RefreshToken {
            let fingerprint = token_fingerprint(&settings.refresh_token);
            let kept = db.with_statements(|c, st| {
                let mut kept = None;
                for row in c.select(&st.engine.kept_refresh_token, None, &[DatumWithOid::from(fingerprint.as_str())])? {
                    kept = row.get::<String>(1)?;
                }
                Ok(kept)
            });
            match kept {
                Ok(Some(token)) => client.use_refresh_token(token),
                Ok(None) => {}
                Err(e) => pgrx::warning!("pgforce: cannot read the kept refresh token: {e}"),
            }
        }
        self.client = Some((settings.clone(), client.clone()));
        client
    }

    /// After a reload: the secret files are read again.
    pub(crate) fn reload(&mut self) {
        self.secrets = None;
    }

    /// The client built last, if any.
    pub(crate) fn current(&self) -> Option<&Arc<Client>> {
        self.client.as_ref().map(|(_, c)| c)
    }

    /// Keeps a refresh token Salesforce rotated (it may have revoked the one used), so that a restarted worker logs
    /// in with it. One that cannot be written now is tried again at the next cycle.
    pub(crate) fn keep_rotated_refresh_token(&mut self, db: &mut Db) {
        let Some((settings, client)) = &self.client else { return };
        let Some(token) = self.unkept_refresh_token.take().or_else(|| client.take_rotated_refresh_token()) else {
            return;
        };
        let fingerprint = token_fingerprint(&settings.refresh_token);
        let kept = db.with_statements(|c, st| {
            c.update(
                &st.engine.keep_refresh_token,
                None,
                &[DatumWithOid::from(fingerprint.as_str()), DatumWithOid::from(token.as_str())],
            )?;
            Ok(())
        });
        if let Err(e) = kept {
            pgrx::warning!("pgforce: cannot keep the refresh token Salesforce rotated to (trying again): {e}");
            self.unkept_refresh_token = Some(token);
        }
    }

    /// The API calls this worker's client made so far.
    pub(crate) fn api_calls(&self) -> u64 {
        self.current().map_or(0, |c| c.journal().api_calls())
    }

    /// The org's API usage as Salesforce last said: (used, limit).
    pub(crate) fn usage(&self) -> Option<(u64, u64)> {
        self.current().and_then(|c| c.usage()).map(|u| (u.used, u.limit))
    }

    /// Whether usage is above `pgforce.max_api_usage` (delivery is paced).
    pub(crate) fn throttled(&self, config: &Config) -> bool {
        let usage = self.current().and_then(|c| c.usage());
        usage.is_some_and(|u| u.fraction() > config.max_api_usage)
    }
}
