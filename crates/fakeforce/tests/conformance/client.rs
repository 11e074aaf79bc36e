//! A minimal HTTP client for the tests: status, headers and parsed body of every call, never an error for 4xx/5xx.

use fakeforce::{Config, FakeForce};
use serde_json::{json, Value};
use std::time::Duration;

pub const V: &str = "v62.0";

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub struct Sf {
    pub ff: FakeForce,
    pub agent: ureq::Agent,
    pub token: String,
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer, ureq::Error> {
    let mut r = r?;
    let headers =
        r.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string())).collect();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    Ok(Answer { status, headers, text })
}

impl Sf {
    pub fn start() -> Sf {
        Sf::with(Config::default())
    }

    pub fn with(config: Config) -> Sf {
        let ff = FakeForce::start(config).expect("fakeforce starts");
        let agent = agent();
        let mut sf = Sf { ff, agent, token: String::new() };
        let t = sf.token_call(&[
            ("grant_type", "client_credentials"),
            ("client_id", "pgforce-demo-client"),
            ("client_secret", "pgforce-demo-secret"),
        ]);
        assert_eq!(t.status, 200, "{}", t.text);
        sf.token = t.json()["access_token"].as_str().expect("token").to_string();
        sf
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.ff.url())
    }

    pub fn token_call(&self, form: &[(&str, &str)]) -> Answer {
        answer(self.agent.post(self.url("/services/oauth2/token")).send_form(form.iter().copied())).expect("token call")
    }

    /// A data call under `/services/data/v62.0`, JSON in and out.
    pub fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Answer, ureq::Error> {
        let url = self.url(&format!("/services/data/{V}{path}"));
        let auth = format!("Bearer {}", self.token);
        let r = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", &auth).call(),
            ("POST", b) => self.agent.post(&url).header("Authorization", &auth).send_json(b.unwrap_or(json!({}))),
            ("PATCH", b) => self.agent.patch(&url).header("Authorization", &auth).send_json(b.unwrap_or(json!({}))),
            ("PUT", b) => self.agent.put(&url).header("Authorization", &auth).send_json(b.unwrap_or(json!({}))),
            (m, _) => panic!("method {m}"),
        };
        answer(r)
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.try_call(method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn put_csv(&self, path: &str, csv: &str) -> Answer {
        let url = self.url(&format!("/services/data/{V}{path}"));
        answer(
            self.agent
                .put(&url)
                .header("Authorization", &format!("Bearer {}", self.token))
                .content_type("text/csv")
                .send(csv),
        )
        .expect("PUT csv")
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = self.url(&format!("/fakeforce/admin{path}"));
        let r = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            ("POST", b) => self.agent.post(&url).send_json(b.unwrap_or(json!({}))),
            ("PUT", b) => self.agent.put(&url).send_json(b.unwrap_or(json!({}))),
            (m, _) => panic!("method {m}"),
        };
        let a = answer(r).expect("admin call");
        assert_eq!(a.status, 200, "{method} {path}: {}", a.text);
        a.json()
    }

    pub fn query(&self, soql: &str) -> Value {
        let a = self.call("GET", &format!("/query?q={}", url_encode(soql)), None);
        assert_eq!(a.status, 200, "{soql}: {}", a.text);
        a.json()
    }

    pub fn create(&self, records: Value) -> Value {
        let a = self.call("POST", "/composite/sobjects", Some(json!({"allOrNone": false, "records": records})));
        assert_eq!(a.status, 200, "{}", a.text);
        a.json()
    }

    /// Creates one record and returns its id.
    pub fn create_one(&self, record: Value) -> String {
        let r = self.create(json!([record]));
        assert_eq!(r[0]["success"], json!(true), "{r}");
        r[0]["id"].as_str().expect("id").to_string()
    }
}

pub fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn contact(last: &str) -> Value {
    json!({"attributes": {"type": "Contact"}, "LastName": last})
}

pub fn account(name: &str, ext: &str) -> Value {
    json!({"attributes": {"type": "Account"}, "Name": name, "External_Id__c": ext})
}

pub fn error_of(result: &Value) -> (String, String, Value) {
    let e = &result["errors"][0];
    (
        e["statusCode"].as_str().unwrap_or_default().to_string(),
        e["message"].as_str().unwrap_or_default().to_string(),
        e["fields"].clone(),
    )
}
