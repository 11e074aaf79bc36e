//! The read path's queries against fakeforce, in process: a keyset read sees every record once, however many share
//! one SystemModstamp, deleted ones included with IsDeleted.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use fakeforce::{Config, FakeForce};
use pgforce_core::delivery::batch::Batch;
use pgforce_core::delivery::send::deliver;
use pgforce_core::read::{page, soql, Position};
use pgforce_core::salesforce::{CallKind, Client};
use serde_json::{json, Value};

fn client(ff: &FakeForce) -> Client {
    Client::new(common::settings(ff))
}

fn create_contacts(client: &Client, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let records: Vec<Value> = (0..n)
        .map(|i| json!({"attributes": {"type": "Contact"}, "LastName": format!("L{i}"), "External_Id__c": format!("E{i}")}))
        .collect();
    for chunk in records.chunks(200) {
        let batch = Batch {
            kind: CallKind::Upsert { object: "Contact".into(), field: "External_Id__c".into() },
            items: chunk.iter().cloned().enumerate().collect(),
            bytes: 0,
            links: Vec::new(),
            bulk: None,
        };
        let d = deliver(client, vec![batch], 1);
        assert!(d.trouble.is_none(), "{:?}", d.trouble);
        for (_, verdict) in d.verdicts {
            match verdict {
                pgforce_core::delivery::batch::Verdict::Done { id: Some(id), .. } => ids.push(id),
                other => panic!("not created: {other:?}"),
            }
        }
    }
    ids
}

/// Reads every page after `from` as the read pipeline does; returns each record's deletion by Id, the position
/// reached and the number of pages.
fn read_all(client: &Client, from: &Position) -> (HashMap<String, bool>, Position, usize) {
    let (mut seen, mut position, mut pages) = (HashMap::new(), from.clone(), 0);
    let mut cursor = from.clone();
    loop {
        let answer = client.query_all_page(&soql::page("Contact", &["LastName".to_string()], &cursor)).expect("page");
        let page = page::parse(&answer).expect("parse");
        pages += 1;
        for r in &page.records {
            assert!(seen.insert(r.id.clone(), r.deleted).is_none(), "{} read twice", r.id);
            position.advance(r.stamp, &r.id);
            cursor = Position { stamp: Some(r.stamp), id: Some(r.id.clone()) };
        }
        if page.records.len() < soql::PAGE_SIZE {
            return (seen, position, pages);
        }
    }
}

#[test]
fn a_keyset_read_sees_every_record_once_however_many_share_a_stamp() {
    let ff = FakeForce::start(Config::default()).expect("fakeforce");
    let client = client(&ff);
    let ids = create_contacts(&client, 4500);
    for id in &ids[..3] {
        client.rest("DELETE", &format!("/services/data/v62.0/sobjects/Contact/{id}"), None).expect("delete");
    }
    let (seen, position, pages) = read_all(&client, &Position::default());
    assert_eq!(seen.len(), 4500, "every record, deleted ones included");
    assert_eq!(seen.values().filter(|d| **d).count(), 3);
    assert!(ids[..3].iter().all(|id| seen[id]));
    assert_eq!(pages, 3);
    // Stamps have whole seconds: thousands of records share few stamps, and paging still sees each once.
    let count = client.query(&soql::count("Contact"), 0);
    assert!(count.is_ok(), "{count:?}");
    // Nothing changed since: a read from the position sees nothing; one from the look-back start re-reads only
    // records whose stamp is within it.
    let (after, _, _) = read_all(&client, &position);
    assert!(after.is_empty(), "{} records after the position", after.len());
    let updated = &ids[10];
    std::thread::sleep(Duration::from_millis(1100));
    client
        .rest(
            "PATCH",
            &format!("/services/data/v62.0/sobjects/Contact/{updated}"),
            Some(("application/json", br#"{"LastName": "Changed"}"#)),
        )
        .expect("update");
    let (after, _, _) = read_all(&client, &position);
    assert_eq!(after.keys().collect::<Vec<_>>(), vec![updated]);
}
