//! Relationships as applications model them: foreign keys to the parent row's id, sent as the parent's Salesforce
//! id in a lookup field, in dependency order at any depth, cycles included.

use std::collections::HashMap;
use std::time::Duration;

use pgforce_integration::{open_entries, wait_for, Cluster, Salesforce};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Accounts with a self-referencing hierarchy and contacts of accounts, both by foreign keys (deferred, so rows
/// can be inserted in any order within a transaction). `settings` are added to fakeforce's.
fn setup(sf: &Salesforce, settings: &[&str]) -> Cluster {
    let mut all = sf.settings();
    all.extend(settings.iter().map(|s| s.to_string()));
    let cluster = Cluster::start_with(true, &all);
    cluster
        .admin()
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE public.account (id integer PRIMARY KEY, name text,
                 parent_id integer REFERENCES public.account (id) DEFERRABLE INITIALLY DEFERRED);
             CREATE TABLE public.contact (id integer PRIMARY KEY, lastname text,
                 account_id integer REFERENCES public.account (id) DEFERRABLE INITIALLY DEFERRED);
             SELECT salesforce.map_table('public.account', 'Account',
                                         relationships => '{\"parent_id\": \"ParentId\"}');
             SELECT salesforce.map_table('public.contact', 'Contact',
                                         relationships => '{\"account_id\": \"AccountId\"}');",
        )
        .expect("setup");
    cluster
}

/// Salesforce's records of an object by Id.
fn by_id(sf: &Salesforce, object: &str) -> HashMap<String, Value> {
    sf.live(object).into_iter().map(|r| (r["Id"].as_str().unwrap_or_default().to_string(), r)).collect()
}

/// (id, sfid, parent id) of every row of a table whose foreign key column is `fk`.
fn rows(c: &mut postgres::Client, table: &str, fk: &str) -> Vec<(i32, Option<String>, Option<i32>)> {
    c.query(&format!("SELECT id, sfid::text, {fk} FROM public.{table} ORDER BY id"), &[])
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Waits until nothing is queued and then checks that every row's record has the lookup `field` pointing at the
/// record of the row its foreign key names (or none).
fn converged(sf: &Salesforce, c: &mut postgres::Client, table: &str, fk: &str, object: &str, field: &str) {
    wait_for(WAIT, "the queue to drain", || (open_entries(c) == 0).then_some(()));
    let failed: Vec<(i64, String)> = c
        .query("SELECT id, sf_message FROM salesforce._trigger_log WHERE state = 'FAILED'", &[])
        .expect("failed")
        .iter()
        .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    let accounts: HashMap<i32, String> =
        rows(c, "account", "parent_id").into_iter().filter_map(|(id, sfid, _)| Some((id, sfid?))).collect();
    let records = by_id(sf, object);
    for (id, sfid, parent) in rows(c, table, fk) {
        let sfid = sfid.unwrap_or_else(|| panic!("{table} row {id} has no sfid"));
        let record = records.get(&sfid).unwrap_or_else(|| panic!("{table} row {id}: no record {sfid}"));
        let want = parent.map(|p| Value::String(accounts[&p].clone())).unwrap_or(Value::Null);
        let got = record.get(field).cloned().unwrap_or(Value::Null);
        assert_eq!(got, want, "{table} row {id}: {field}");
    }
}

#[test]
fn contacts_follow_their_accounts_by_foreign_key() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    // The foreign key column is not sent as a field of its own.
    let fields: Vec<String> = c
        .query_one("SELECT fields FROM salesforce._mapping WHERE table_name = 'contact'", &[])
        .expect("mapping")
        .get(0);
    assert_eq!(fields, vec!["lastname".to_string()]);
    c.batch_execute(
        "BEGIN;
         INSERT INTO public.contact VALUES (1, 'Smith', 10), (2, 'Jones', 10), (3, 'Nobody', NULL);
         INSERT INTO public.account VALUES (10, 'Acme', NULL), (11, 'Globex', NULL);
         COMMIT;",
    )
    .expect("rows");
    converged(&sf, &mut c, "contact", "account_id", "Contact", "AccountId");
    // The audit shows each write's level: contacts of accounts created in the same claim went one level later.
    let depths: Vec<(String, i64, Option<i32>)> = c
        .query("SELECT table_name, record_id, depth FROM salesforce.sync_audit ORDER BY table_name, record_id", &[])
        .expect("audit")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want: Vec<(String, i64, Option<i32>)> =
        [("account", 10, 0), ("account", 11, 0), ("contact", 1, 1), ("contact", 2, 1), ("contact", 3, 0)]
            .iter()
            .map(|(t, id, d)| (t.to_string(), *id, Some(*d)))
            .collect();
    assert_eq!(depths, want);
    // A contact moves to another account that is already in Salesforce, one loses its account.
    c.batch_execute("UPDATE public.contact SET account_id = 11 WHERE id = 1; UPDATE public.contact SET account_id = NULL WHERE id = 2")
        .expect("moves");
    wait_for(WAIT, "the moves", || {
        let records = by_id(&sf, "Contact");
        let moved = records.values().filter(|r| r["LastName"] == "Smith" && r["AccountId"].is_string()).count();
        let cleared = records.values().filter(|r| r["LastName"] == "Jones" && r["AccountId"].is_null()).count();
        (moved == 1 && cleared == 1).then_some(())
    });
    converged(&sf, &mut c, "contact", "account_id", "Contact", "AccountId");
    assert_eq!(sf.live("Account").len(), 2);
    assert_eq!(sf.live("Contact").len(), 3);

    // A renamed foreign key column stays mapped to its lookup.
    c.batch_execute(
        "ALTER TABLE public.contact RENAME COLUMN account_id TO acct_id;
         UPDATE public.contact SET acct_id = 10 WHERE id = 2;",
    )
    .expect("rename");
    let relationships: String = c
        .query_one("SELECT relationships::text FROM salesforce._mapping WHERE table_name = 'contact'", &[])
        .expect("mapping")
        .get(0);
    assert_eq!(relationships, r#"{"acct_id": "AccountId"}"#);
    wait_for(WAIT, "the renamed column's change", || {
        let records = by_id(&sf, "Contact");
        records.values().any(|r| r["LastName"] == "Jones" && r["AccountId"].is_string()).then_some(())
    });
    converged(&sf, &mut c, "contact", "acct_id", "Contact", "AccountId");

    // Mapping checks what it is given: a column without a foreign key, a parent that is not mapped.
    c.batch_execute(
        "CREATE TABLE public.region (id integer PRIMARY KEY, name text);
         CREATE TABLE public.lead (id integer PRIMARY KEY, lastname text, company text, region_id integer
             REFERENCES public.region (id), owner_ref integer);",
    )
    .expect("tables");
    for (relationships, code, says) in [
        (r#"{"owner_ref": "OwnerId"}"#, "55000", "has no foreign key"),
        (r#"{"region_id": "Region__c"}"#, "55000", "public.region is not mapped"),
        (r#"{"lastname": "Region__c"}"#, "42804", "holds the parent row's id"),
        (r#"["region_id"]"#, "22023", "must be a JSON object"),
    ] {
        let err = c
            .batch_execute(&format!(
                "SELECT salesforce.map_table('public.lead', 'Lead', relationships => '{relationships}')"
            ))
            .expect_err(relationships);
        let db = err.as_db_error().expect("db error");
        assert_eq!(db.code().code(), code, "{relationships}: {db:?}");
        assert!(db.message().contains(says), "{relationships}: {}", db.message());
        assert!(db.hint().is_some(), "{relationships}: no hint");
    }
}

#[test]
fn a_ten_level_hierarchy_inserted_in_random_order_converges() {
    let sf = Salesforce::start();
    // Small claims: parents and children often go in different claims, and children wait for their parents.
    let cluster = setup(&sf, &["pgforce.batch_size = 37"]);
    let mut c = cluster.admin();
    // Ten levels of 12 accounts; each account's parent is one of the level above.
    let mut rows: Vec<(i32, Option<i32>)> = Vec::new();
    for level in 0..10 {
        for k in 0..12 {
            let id = level * 12 + k + 1;
            let parent = (level > 0).then(|| (level - 1) * 12 + (k * 7 % 12) + 1);
            rows.push((id, parent));
        }
    }
    // A fixed shuffle (xorshift), so that children are often inserted before their parents.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..rows.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        rows.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let values: Vec<String> = rows
        .iter()
        .map(|(id, p)| format!("({id}, 'Account {id}', {})", p.map_or("NULL".to_string(), |p| p.to_string())))
        .collect();
    c.batch_execute(&format!("BEGIN; INSERT INTO public.account VALUES {}; COMMIT;", values.join(", ")))
        .expect("hierarchy");
    converged(&sf, &mut c, "account", "parent_id", "Account", "ParentId");
    assert_eq!(sf.live("Account").len(), 120);
    // A level moves under another parent, as one update.
    c.batch_execute("UPDATE public.account SET parent_id = 1 WHERE id BETWEEN 13 AND 24").expect("move");
    wait_for(WAIT, "the move", || {
        let records = by_id(&sf, "Account");
        let root = rows_sfid(&mut c, 1)?;
        let moved = records.values().filter(|r| r["ParentId"] == Value::String(root.clone())).count();
        (moved >= 12).then_some(())
    });
    converged(&sf, &mut c, "account", "parent_id", "Account", "ParentId");
}

fn rows_sfid(c: &mut postgres::Client, id: i32) -> Option<String> {
    c.query_one("SELECT sfid::text FROM public.account WHERE id = $1", &[&id]).ok()?.get(0)
}

#[test]
fn rows_that_point_at_each_other_converge() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    c.batch_execute(
        "BEGIN;
         INSERT INTO public.account VALUES (1, 'A', 2), (2, 'B', 1), (3, 'Self', 3), (4, 'C', 5), (5, 'D', 6), (6, 'E', 4);
         COMMIT;",
    )
    .expect("cycles");
    converged(&sf, &mut c, "account", "parent_id", "Account", "ParentId");
    assert_eq!(sf.live("Account").len(), 6);
    // Each cycle cost one update: the record it was broken at was created without its lookup.
    let follow_ups: i64 = c
        .query_one(
            "SELECT count(*) FROM salesforce.sync_audit WHERE table_name = 'account' AND action = 'UPDATE'
                AND status_code = 2",
            &[],
        )
        .expect("audit")
        .get(0);
    assert_eq!(follow_ups, 3, "one update per cycle (two cycles and a row pointing at itself)");
}

#[test]
fn a_failed_parent_fails_its_children_until_it_is_fixed_and_retried() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, &[]);
    let mut c = cluster.admin();
    sf.admin(
        "PUT",
        "/faults",
        serde_json::json!([{"field": "Name", "equals": "Bad Co", "effect": {"type": "record_error",
            "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Name is not allowed"}}]),
    );
    c.batch_execute(
        "BEGIN;
         INSERT INTO public.account VALUES (1, 'Bad Co', NULL), (2, 'Sub of bad', 1);
         INSERT INTO public.contact VALUES (1, 'Smith', 1), (2, 'Jones', 2), (3, 'Fine', NULL);
         COMMIT;",
    )
    .expect("rows");
    wait_for(WAIT, "the queue to drain", || (open_entries(&mut c) == 0).then_some(()));
    let failed: HashMap<(String, i64), String> = c
        .query(
            "SELECT table_name::text, record_id, sf_message FROM salesforce._trigger_log WHERE state = 'FAILED'",
            &[],
        )
        .expect("failed")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert!(failed[&("account".to_string(), 1)].contains("Name is not allowed"));
    for key in [("account", 2), ("contact", 1)] {
        let message = &failed[&(key.0.to_string(), key.1)];
        assert!(
            // The parent's own error is not repeated: it can quote the parent's values (issue 26).
            message.contains("parent public.account row id=1") && !message.contains("Name is not allowed"),
            "{message}"
        );
        assert!(message.contains("salesforce.retry_failed()"), "{message}");
    }
    // The grandchild names its own parent.
    assert!(failed[&("contact".to_string(), 2)].contains("public.account row id=2"));
    assert_eq!(sf.live("Contact").len(), 1, "the contact without an account went through");
    assert_eq!(sf.live("Account").len(), 0);

    // Fixed and retried, everything goes through, in order.
    c.batch_execute("UPDATE public.account SET name = 'Good Co' WHERE id = 1").expect("fix");
    let queued: i64 = c.query_one("SELECT salesforce.retry_failed()", &[]).expect("retry").get(0);
    assert_eq!(queued, 4);
    converged(&sf, &mut c, "account", "parent_id", "Account", "ParentId");
    converged(&sf, &mut c, "contact", "account_id", "Contact", "AccountId");
    assert_eq!(sf.live("Account").len(), 2);
    assert_eq!(sf.live("Contact").len(), 3);
}
