//! A Salesforce client for SQL functions that call Salesforce from the caller's session (`diagnose()`,
//! `rollback()`), set up as the worker's: its settings and secret files, and the refresh token Salesforce last
//! rotated the configured one to; a token rotated by this session's login is kept for the worker.

use pgforce_core::salesforce::{token_fingerprint, AuthFlow, Client, Settings};
use pgrx::datum::DatumWithOid;
use pgrx::spi::SpiClient;

use crate::worker::sql::{keep_refresh_token_sql, kept_refresh_token_sql};

/// A client for `settings`, using the kept rotated refresh token if there is one.
pub fn client(spi: &SpiClient<'_>, schema: &str, settings: &Settings) -> Result<Client, pgrx::spi::Error> {
    let client = Client::new(settings.clone());
    if settings.auth_flow == AuthFlow::RefreshToken {
        let fingerprint = token_fingerprint(&settings.refresh_token);
        let kept: Option<String> = spi
            .select(&kept_refresh_token_sql(schema), None, &[DatumWithOid::from(fingerprint.as_str())])?
            .first()
            .get(1)?;
        if let Some(token) = kept {
            client.use_refresh_token(token);
        }
    }
    Ok(client)
}

/// A login may rotate the refresh token (and revoke the old one): keeps the new one for the worker, as it would.
pub fn keep_rotated(
    spi: &mut SpiClient<'_>,
    schema: &str,
    settings: &Settings,
    client: &Client,
) -> Result<(), pgrx::spi::Error> {
    if let Some(token) = client.take_rotated_refresh_token() {
        let fingerprint = token_fingerprint(&settings.refresh_token);
        spi.update(
            &keep_refresh_token_sql(schema),
            None,
            &[DatumWithOid::from(fingerprint.as_str()), DatumWithOid::from(token.as_str())],
        )?;
    }
    Ok(())
}
