//! What the in-process tests against fakeforce share.

use std::time::Duration;

use fakeforce::FakeForce;
use pgforce_core::salesforce::{AuthFlow, Settings};

/// The client settings for fakeforce's demo org (client credentials).
pub fn settings(ff: &FakeForce) -> Settings {
    Settings {
        login_url: ff.url().to_string(),
        auth_flow: AuthFlow::ClientCredentials,
        client_id: "pgforce-demo-client".into(),
        client_secret: "pgforce-demo-secret".into(),
        username: "integration@pgforce.example".into(),
        jwt_key_file: Default::default(),
        refresh_token: "pgforce-demo-refresh-token".into(),
        jwt_audience: String::new(),
        api_version: "62.0".into(),
        request_timeout: Duration::from_secs(5),
        allow_insecure_http: false,
    }
}
