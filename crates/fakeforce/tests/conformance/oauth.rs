//! OAuth 2.0 token endpoint and sessions (reference §2.1).

use crate::client::{agent, Sf};
use base64::Engine;
use fakeforce::Config;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn jwt_config() -> Config {
    let mut c = Config::default();
    c.auth.jwt_public_key = Some(fixture("jwt_test_public.pem"));
    c
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

fn assertion(claims: Value) -> String {
    let pem = std::fs::read(fixture("jwt_test_private.pem")).expect("key");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("rsa key");
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key).expect("sign")
}

fn good_claims() -> Value {
    json!({"iss": "pgforce-demo-client", "sub": "integration@pgforce.example", "aud": "https://login.salesforce.com", "exp": now() + 180})
}

#[test]
fn client_credentials_success_has_every_documented_field() {
    let sf = Sf::start();
    let a = sf.token_call(&[
        ("grant_type", "client_credentials"),
        ("client_id", "pgforce-demo-client"),
        ("client_secret", "pgforce-demo-secret"),
    ]);
    assert_eq!(a.status, 200);
    let t = a.json();
    let keys: Vec<&str> = t.as_object().expect("object").keys().map(String::as_str).collect();
    for k in ["access_token", "signature", "scope", "instance_url", "id", "token_type", "issued_at"] {
        assert!(keys.contains(&k), "missing {k} in {t}");
    }
    let token = t["access_token"].as_str().expect("token");
    let (org, opaque) = token.split_once('!').expect("<OrgId>!<opaque>");
    assert_eq!(org.len(), 18);
    assert!(org.starts_with("00D") && !opaque.is_empty());
    assert_eq!(t["instance_url"], json!(sf.ff.url()));
    assert_eq!(t["token_type"], json!("Bearer"));
    let issued_at = t["issued_at"].as_str().expect("issued_at is a string");
    assert!(issued_at.parse::<u64>().expect("milliseconds") > 1_600_000_000_000);
    let id = t["id"].as_str().expect("id");
    assert!(id.contains(&format!("/id/{org}/005")), "{id}");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"pgforce-demo-secret").expect("hmac");
    mac.update(format!("{id}{issued_at}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(t["signature"], json!(expected));
    // The token works on a data call.
    assert_eq!(sf.call("GET", "/limits", None).status, 200);
}

#[test]
fn client_credentials_in_a_basic_header() {
    let sf = Sf::start();
    let basic = base64::engine::general_purpose::STANDARD.encode("pgforce-demo-client:pgforce-demo-secret");
    let mut r = agent()
        .post(sf.url("/services/oauth2/token"))
        .header("Authorization", &format!("Basic {basic}"))
        .send_form([("grant_type", "client_credentials")])
        .expect("call");
    assert_eq!(r.status().as_u16(), 200);
    let t: Value = r.body_mut().read_json().expect("json");
    assert!(t["access_token"].as_str().is_some_and(|s| s.contains('!')));
}

#[test]
fn token_errors_are_documented_codes() {
    let sf = Sf::start();
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 4] = [
        (
            &[("grant_type", "client_credentials"), ("client_id", "nope"), ("client_secret", "x")],
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            &[("grant_type", "client_credentials"), ("client_id", "pgforce-demo-client"), ("client_secret", "wrong")],
            "invalid_client",
            "invalid client credentials",
        ),
        (
            &[("grant_type", "password"), ("client_id", "pgforce-demo-client")],
            "unsupported_grant_type",
            "grant type not supported",
        ),
        (
            &[("grant_type", "refresh_token"), ("client_id", "pgforce-demo-client"), ("refresh_token", "revoked")],
            "invalid_grant",
            "expired access/refresh token",
        ),
    ];
    for (form, error, description) in cases {
        let a = sf.token_call(form);
        assert_eq!(a.status, 400, "{form:?}");
        assert_eq!(a.json(), json!({"error": error, "error_description": description}), "{form:?}");
    }
    // JSON instead of a form is refused too.
    let mut r = agent()
        .post(sf.url("/services/oauth2/token"))
        .send_json(json!({"grant_type": "client_credentials"}))
        .expect("call");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.body_mut().read_json::<Value>().expect("json")["error"], json!("unsupported_grant_type"));
}

#[test]
fn jwt_bearer_checks_signature_and_claims() {
    let sf = Sf::with(jwt_config());
    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let ok = sf.token_call(&[("grant_type", grant), ("assertion", &assertion(good_claims()))]);
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(ok.json().get("refresh_token").is_none(), "the JWT flow issues no refresh token");

    let mut wrong_aud = good_claims();
    wrong_aud["aud"] = json!("https://example.com");
    let mut expired = good_claims();
    expired["exp"] = json!(now() - 10);
    let mut wrong_iss = good_claims();
    wrong_iss["iss"] = json!("someone-else");
    let mut wrong_sub = good_claims();
    wrong_sub["sub"] = json!("nobody@example.com");
    let mut tampered = assertion(good_claims());
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        (assertion(wrong_aud), "invalid_grant", "Audience validation failed"),
        (assertion(expired), "invalid_grant", "expired authorization code"),
        (assertion(wrong_iss), "invalid_client_id", "client identifier invalid"),
        (assertion(wrong_sub), "invalid_grant", "user hasn't approved this consumer"),
        (tampered, "invalid_grant", "invalid assertion"),
    ];
    for (jwt, error, description) in cases {
        let a = sf.token_call(&[("grant_type", grant), ("assertion", &jwt)]);
        assert_eq!(a.status, 400);
        assert_eq!(a.json(), json!({"error": error, "error_description": description}));
    }
    // The URL the token is asked from (a My Domain URL) is not an audience Salesforce accepts...
    let mut own = good_claims();
    own["aud"] = json!(sf.ff.url());
    let refused = sf.token_call(&[("grant_type", grant), ("assertion", &assertion(own.clone()))]);
    assert_eq!(refused.json(), json!({"error": "invalid_grant", "error_description": "Audience validation failed"}));
    // ...unless it is an Experience Cloud site's, configured as such.
    let mut config = jwt_config();
    config.auth.jwt_audiences = vec!["https://acme.my.site.com".into()];
    let site = Sf::with(config);
    let mut claims = good_claims();
    claims["aud"] = json!("https://acme.my.site.com/");
    assert_eq!(site.token_call(&[("grant_type", grant), ("assertion", &assertion(claims))]).status, 200);
}

#[test]
fn refresh_token_with_rotation() {
    let mut c = Config::default();
    c.auth.rotate_refresh_tokens = true;
    let sf = Sf::with(c);
    let first = sf.token_call(&[
        ("grant_type", "refresh_token"),
        ("client_id", "pgforce-demo-client"),
        ("client_secret", "pgforce-demo-secret"),
        ("refresh_token", "pgforce-demo-refresh-token"),
    ]);
    assert_eq!(first.status, 200, "{}", first.text);
    let rotated = first.json()["refresh_token"].as_str().expect("a new refresh token").to_string();
    let reused = sf.token_call(&[
        ("grant_type", "refresh_token"),
        ("client_id", "pgforce-demo-client"),
        ("refresh_token", "pgforce-demo-refresh-token"),
    ]);
    assert_eq!(reused.json()["error"], json!("invalid_grant"), "the old refresh token is invalidated");
    let again = sf.token_call(&[
        ("grant_type", "refresh_token"),
        ("client_id", "pgforce-demo-client"),
        ("refresh_token", &rotated),
    ]);
    assert_eq!(again.status, 200);

    let plain = Sf::start();
    let r = plain.token_call(&[
        ("grant_type", "refresh_token"),
        ("client_id", "pgforce-demo-client"),
        ("refresh_token", "pgforce-demo-refresh-token"),
    ]);
    assert_eq!(r.status, 200);
    assert!(r.json().get("refresh_token").is_none(), "no rotation unless configured");
}

#[test]
fn expired_sessions_get_401_invalid_session_id() {
    let sf = Sf::start();
    assert_eq!(sf.call("GET", "/limits", None).status, 200);
    sf.admin("POST", "/expire-sessions", None);
    let a = sf.call("GET", "/limits", None);
    assert_eq!(a.status, 401);
    assert_eq!(a.json(), json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]));

    let mut c = Config::default();
    c.auth.token_max_calls = 2;
    let sf = Sf::with(c);
    assert_eq!(sf.call("GET", "/limits", None).status, 200);
    assert_eq!(sf.call("GET", "/limits", None).status, 200);
    assert_eq!(sf.call("GET", "/limits", None).status, 401, "expires after N calls");

    let mut anonymous = Sf::start();
    anonymous.token = "00Dxx!forged".into();
    assert_eq!(anonymous.call("GET", "/limits", None).status, 401);
}
