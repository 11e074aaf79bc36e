//! How many records per second fakeforce takes through 200-record sObject Collection calls, so benchmarks of
//! pgforce can show the stand-in is not their bottleneck. `cargo run --release -p fakeforce --example throughput
//! [records] [client threads]`.

use fakeforce::{Config, FakeForce};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let ff = FakeForce::start(Config::default()).expect("fakeforce starts");
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(60))).build().into();
    let token = {
        let mut r = agent
            .post(format!("{}/services/oauth2/token", ff.url()))
            .send_form([
                ("grant_type", "client_credentials"),
                ("client_id", "pgforce-demo-client"),
                ("client_secret", "pgforce-demo-secret"),
            ])
            .expect("token");
        r.body_mut().read_json::<Value>().expect("json")["access_token"].as_str().expect("token").to_string()
    };
    let calls = total / 200;
    let per_thread = calls / threads;
    let url = format!("{}/services/data/v62.0/composite/sobjects/Contact/External_Id__c", ff.url());
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (agent, url, token) = (agent.clone(), url.clone(), token.clone());
            s.spawn(move || {
                for c in 0..per_thread {
                    let records: Vec<Value> = (0..200)
                        .map(|i| json!({"attributes": {"type": "Contact"}, "LastName": format!("Last {t}-{c}-{i}"), "Email": format!("p{t}.{c}.{i}@example.com"), "External_Id__c": format!("E-{t}-{c}-{i}")}))
                        .collect();
                    let mut r = agent
                        .patch(&url)
                        .header("Authorization", &format!("Bearer {token}"))
                        .send_json(json!({"allOrNone": false, "records": records}))
                        .expect("call");
                    let results: Value = r.body_mut().read_json().expect("json");
                    assert!(results[199]["success"].as_bool().unwrap_or(false), "{}", results[199]);
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let sent = per_thread * threads * 200;
    println!("fakeforce took {sent} records in {} upsert calls of 200 in {secs:.2} s: {:.0} records/s ({threads} client threads, client JSON encoding included)", per_thread * threads, sent as f64 / secs);
}
