//! `POST /services/oauth2/token`: client credentials, JWT bearer and refresh token grants, with Salesforce's success
//! fields and its `{"error", "error_description"}` answers; and the session check every data call goes through.

use crate::errors::ApiError;
use crate::org::{Org, Session, State};
use crate::reply::Reply;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const AUDIENCES: [&str; 2] = ["https://login.salesforce.com", "https://test.salesforce.com"];

fn oauth_error(error: &str, description: &str) -> Reply {
    Reply::json(400, &json!({"error": error, "error_description": description}))
}

/// Client id and secret from an HTTP Basic header (as simple-salesforce sends them), if there is one.
fn basic_credentials(authorization: Option<&str>) -> Option<(String, String)> {
    let encoded = authorization?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

pub fn token(org: &Org, content_type: Option<&str>, authorization: Option<&str>, body: &[u8]) -> Reply {
    let form_encoded = content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if !form_encoded {
        return oauth_error("unsupported_grant_type", "grant type not supported");
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let basic = basic_credentials(authorization);
    let client_id = form.get("client_id").cloned().or_else(|| basic.as_ref().map(|b| b.0.clone()));
    let client_secret = form.get("client_secret").cloned().or_else(|| basic.as_ref().map(|b| b.1.clone()));
    let auth = &org.config.auth;
    let mut state = org.lock();
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            if client_id.as_deref() != Some(auth.client_id.as_str()) {
                return oauth_error("invalid_client_id", "client identifier invalid");
            }
            if client_secret.as_deref() != Some(auth.client_secret.as_str()) {
                return oauth_error("invalid_client", "invalid client credentials");
            }
            issue(org, &mut state, None)
        }
        Some(JWT_GRANT) => {
            let Some(assertion) = form.get("assertion") else {
                return oauth_error("invalid_request", "assertion is required");
            };
            match check_assertion(org, assertion) {
                Ok(()) => issue(org, &mut state, None),
                Err(reply) => reply,
            }
        }
        Some("refresh_token") => {
            if client_id.as_deref() != Some(auth.client_id.as_str()) {
                return oauth_error("invalid_client_id", "client identifier invalid");
            }
            if client_secret.as_ref().is_some_and(|s| s != &auth.client_secret) {
                return oauth_error("invalid_client", "invalid client credentials");
            }
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            if !state.refresh_tokens.contains(&presented) {
                return oauth_error("invalid_grant", "expired access/refresh token");
            }
            let rotated = if auth.rotate_refresh_tokens {
                state.refresh_tokens.remove(&presented);
                let fresh = format!("5Aep{}", state.random_token(83));
                state.refresh_tokens.insert(fresh.clone());
                Some(fresh)
            } else {
                None
            };
            issue(org, &mut state, rotated)
        }
        Some(_) | None => oauth_error("unsupported_grant_type", "grant type not supported"),
    }
}

fn check_assertion(org: &Org, assertion: &str) -> Result<(), Reply> {
    let Some(key) = &org.jwt_key else {
        return Err(oauth_error("invalid_grant", "user hasn't approved this consumer"));
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let data = jsonwebtoken::decode::<Value>(assertion, key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind::*;
        match e.kind() {
            ExpiredSignature => oauth_error("invalid_grant", "expired authorization code"),
            InvalidSignature => oauth_error("invalid_grant", "invalid assertion"),
            MissingRequiredClaim(claim) => oauth_error("invalid_grant", &format!("invalid assertion: missing {claim}")),
            _ => oauth_error("invalid_grant", "invalid assertion"),
        }
    })?;
    let claims = data.claims;
    let auth = &org.config.auth;
    if claims.get("iss").and_then(Value::as_str) != Some(auth.client_id.as_str()) {
        return Err(oauth_error("invalid_client_id", "client identifier invalid"));
    }
    let audience_ok = |aud: &str| {
        let aud = aud.trim_end_matches('/');
        AUDIENCES.contains(&aud) || auth.jwt_audiences.iter().any(|a| a.trim_end_matches('/') == aud)
    };
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => audience_ok(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(audience_ok),
        _ => false,
    };
    if !aud_ok {
        return Err(oauth_error("invalid_grant", "Audience validation failed"));
    }
    if claims.get("sub").and_then(Value::as_str) != Some(auth.username.as_str()) {
        return Err(oauth_error("invalid_grant", "user hasn't approved this consumer"));
    }
    Ok(())
}

fn issue(org: &Org, state: &mut State, refresh_token: Option<String>) -> Reply {
    let access_token = format!("{}!{}", org.org_id, state.random_token(96));
    state.sessions.insert(access_token.clone(), Session { issued: Instant::now(), calls: 0 });
    let base = org.base_url();
    let id = format!("{base}/id/{}/{}", org.org_id, org.user_id);
    let issued_at = crate::values::now_ms().to_string();
    let signature = sign(&org.config.auth.client_secret, &format!("{id}{issued_at}"));
    let mut body = json!({
        "access_token": access_token,
        "signature": signature,
        "scope": "api id",
        "instance_url": org.config.advertised_url.clone().unwrap_or_else(|| base.clone()),
        "id": id,
        "token_type": "Bearer",
        "issued_at": issued_at,
    });
    if let Some(rt) = refresh_token {
        body["refresh_token"] = Value::String(rt);
    }
    Reply::json(200, &body)
}

/// Base64 HMAC-SHA256 of `text` keyed with the client secret: the token response's `signature`.
fn sign(secret: &str, text: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(text.as_bytes());
            BASE64.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Checks the `Authorization: Bearer …` (or `OAuth …`) header of a data call and counts the call on its session.
pub fn check_session(org: &Org, state: &mut State, authorization: Option<&str>) -> Result<(), ApiError> {
    let token = authorization
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("OAuth ")))
        .map(str::trim)
        .ok_or_else(ApiError::invalid_session)?;
    let auth = &org.config.auth;
    let session = state.sessions.get_mut(token).ok_or_else(ApiError::invalid_session)?;
    let too_old = auth.token_ttl_secs > 0 && session.issued.elapsed() > Duration::from_secs(auth.token_ttl_secs);
    let too_used = auth.token_max_calls > 0 && session.calls >= auth.token_max_calls;
    if too_old || too_used {
        state.sessions.remove(token);
        return Err(ApiError::invalid_session());
    }
    session.calls += 1;
    Ok(())
}
