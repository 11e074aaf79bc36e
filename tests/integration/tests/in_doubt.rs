//! Inserts in doubt never duplicate: an insert whose request may have reached Salesforce (its answer lost, the
//! worker stopped before recording it) is looked for in Salesforce before it is sent again, on a mapping without an
//! upsert field, where sending it again would create a second record.

use std::time::Duration;

use pgforce_integration::{open_entries, wait_for, Cluster, Salesforce};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn setup(sf: &Salesforce, enabled: bool) -> Cluster {
    let mut settings = sf.settings();
    if !enabled {
        settings.push("pgforce.enabled = off".into());
    }
    let cluster = Cluster::start_with(true, &settings);
    cluster
        .admin()
        .batch_execute(
            "CREATE EXTENSION pgforce CASCADE;
             CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text, email text);
             SELECT salesforce.map_table('public.contact', 'Contact');",
        )
        .expect("setup");
    cluster
}

fn sfid(c: &mut postgres::Client, id: i32) -> Option<String> {
    c.query_one("SELECT sfid::text FROM public.contact WHERE id = $1", &[&id]).ok()?.get(0)
}

/// `public.item`, mapped to Contact with `external_id__c` as its upsert field.
fn map_keyed_item(c: &mut postgres::Client) {
    c.batch_execute(
        "CREATE TABLE public.item (id serial PRIMARY KEY, lastname text, email text, external_id__c text);
         SELECT salesforce.map_table('public.item', 'Contact', upsert_field => 'external_id__c');",
    )
    .expect("mapping");
}

/// Entries of this action back in the queue in doubt (their request's answer lost).
fn waiting_in_doubt(c: &mut postgres::Client, action: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM salesforce._trigger_log
          WHERE action::text = $1 AND state = 'NEW' AND in_doubt_since IS NOT NULL",
        &[&action],
    )
    .expect("entries in doubt")
    .get(0)
}

#[test]
fn an_insert_whose_answer_was_lost_is_found_instead_of_created_again() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, true);
    let mut c = cluster.admin();
    c.batch_execute("INSERT INTO public.contact (lastname, email) VALUES ('Twin', 'twin@example.com')").expect("one");
    let first = wait_for(WAIT, "the first twin delivered", || sfid(&mut c, 1));
    // The next create is applied, but the connection drops before the answer: the worker cannot know.
    sf.admin("PUT", "/faults", json!([{"operation": "create", "times": 1, "effect": {"type": "drop_after_commit"}}]));
    c.batch_execute("INSERT INTO public.contact (lastname, email) VALUES ('Twin', 'twin@example.com')").expect("two");
    let second = wait_for(WAIT, "the second twin delivered", || sfid(&mut c, 2));
    assert_eq!(sf.counters()["dropped_connections"], json!(1), "the answer was lost once");
    let live = sf.live("Contact");
    assert_eq!(live.len(), 2, "one record per row, not a third: {live:?}");
    assert_ne!(first, second, "the first twin's record belongs to row 1: row 2 adopted the one its lost attempt made");
    assert!(live.iter().any(|r| r["Id"] == json!(second)));
    let row = c
        .query_one(
            "SELECT l.state::text, l.attempts, c._hc_lastop FROM salesforce._trigger_log l
               JOIN public.contact c ON c.id = l.record_id WHERE l.record_id = 2",
            &[],
        )
        .expect("entry");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1), row.get::<_, Option<String>>(2)),
        ("SUCCESS".to_string(), 1, Some("INSERTED".to_string()))
    );
}

#[test]
fn after_a_crash_an_insert_in_doubt_is_adopted_and_a_delete_removes_what_it_may_have_created() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, false);
    let mut c = cluster.admin();
    // Three inserts the worker had sent when it stopped (so they are in doubt); only two reached Salesforce.
    c.batch_execute(
        "INSERT INTO public.contact (lastname, email) VALUES ('Kept', 'kept@example.com'), ('Gone', 'gone@example.com'),
                                                            ('Lost', 'lost@example.com');
         UPDATE salesforce._trigger_log SET in_doubt_since = now() - interval '5 seconds';",
    )
    .expect("inserts in doubt");
    let kept = sf.create("Contact", json!({"LastName": "Kept", "Email": "kept@example.com"}));
    let gone = sf.create("Contact", json!({"LastName": "Gone", "Email": "gone@example.com"}));
    // The user deletes 'Gone' before the worker is back, and updates 'Kept'.
    c.batch_execute(
        "DELETE FROM public.contact WHERE lastname = 'Gone';
         UPDATE public.contact SET email = 'kept.new@example.com' WHERE lastname = 'Kept';",
    )
    .expect("changes");
    c.batch_execute("ALTER SYSTEM SET pgforce.enabled = on").expect("enable");
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    wait_for(WAIT, "the queue drained", || (open_entries(&mut c) == 0).then_some(()));
    assert_eq!(sfid(&mut c, 1).as_deref(), Some(kept.as_str()), "the record its lost attempt created is adopted");
    let live = sf.live("Contact");
    let kept_record = live.iter().find(|r| r["Id"] == json!(kept)).expect("kept record");
    assert_eq!(kept_record["Email"], json!("kept.new@example.com"), "and updated with the latest values");
    assert!(!live.iter().any(|r| r["Id"] == json!(gone)), "the deleted row's record is deleted too");
    let lost = sfid(&mut c, 3).expect("the lost insert was sent again");
    assert_eq!(live.len(), 2, "Kept and Lost, nothing else: {live:?}");
    assert!(live.iter().any(|r| r["Id"] == json!(lost) && r["LastName"] == json!("Lost")));
}

#[test]
fn an_upsert_whose_answer_was_lost_is_found_after_its_key_changed() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, true);
    let mut c = cluster.admin();
    map_keyed_item(&mut c);
    // The upsert is applied, its answer lost (and lost again when the client resends it at once); before the next
    // attempt, the row's key changes.
    sf.admin("PUT", "/faults", json!([{"operation": "upsert", "times": 2, "effect": {"type": "drop_after_commit"}}]));
    c.batch_execute("INSERT INTO public.item (lastname, external_id__c) VALUES ('Keyed', 'K-1')").expect("insert");
    wait_for(WAIT, "the first attempt unanswered", || (waiting_in_doubt(&mut c, "INSERT") == 1).then_some(()));
    c.batch_execute("UPDATE public.item SET external_id__c = 'K-2'").expect("rekey");
    wait_for(WAIT, "the row delivered", || (open_entries(&mut c) == 0).then_some(()));
    let live = sf.live("Contact");
    assert_eq!(live.len(), 1, "the record the lost attempt created, not a second one: {live:?}");
    assert_eq!(live[0]["External_Id__c"], json!("K-2"));
    let sfid: Option<String> = c.query_one("SELECT sfid::text FROM public.item", &[]).expect("row").get(0);
    assert_eq!(sfid.as_deref(), live[0]["Id"].as_str());
}

#[test]
fn an_update_whose_answer_was_lost_and_whose_row_was_deleted_since_leaves_no_record() {
    let sf = Salesforce::start();
    let cluster = setup(&sf, true);
    let mut c = cluster.admin();
    map_keyed_item(&mut c);
    // The row's insert is rejected, so the row has no sfid; its update then goes as an upsert by its key.
    sf.admin(
        "PUT",
        "/faults",
        json!([{"operation": "upsert", "times": 1, "effect": {"type": "record_error",
                "status_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "not yet"}}]),
    );
    c.batch_execute(
        "INSERT INTO public.item (lastname, email, external_id__c) VALUES ('Early', 'early@example.com', 'K-1')",
    )
    .expect("insert");
    wait_for(WAIT, "the insert failed", || {
        let row = c.query_one("SELECT count(*) FROM salesforce._trigger_log WHERE state = 'FAILED'", &[]).ok()?;
        (row.get::<_, i64>(0) == 1).then_some(())
    });
    // The upsert is applied, its answer lost (and lost again when the client resends it at once). It carried the
    // changed field and the key, not the whole row: the record it created has no email.
    sf.admin("PUT", "/faults", json!([{"operation": "upsert", "times": 2, "effect": {"type": "drop_after_commit"}}]));
    c.batch_execute("UPDATE public.item SET lastname = 'Later'").expect("update");
    wait_for(WAIT, "the update unanswered", || (waiting_in_doubt(&mut c, "UPDATE") == 1).then_some(()));
    assert_eq!(sf.live("Contact").len(), 1, "the lost attempt created the record");
    // Deleted before the update goes again: its delete is logged without an sfid. One change per claim: the update
    // is claimed without the delete (as when a claim's end falls between them, or the delete commits after it).
    c.batch_execute("ALTER SYSTEM SET pgforce.write_algorithm = 'ordered'").expect("ordered");
    c.batch_execute("ALTER SYSTEM SET pgforce.batch_size = 1").expect("batch size");
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    c.batch_execute("DELETE FROM public.item").expect("delete");
    wait_for(WAIT, "the queue drained", || (open_entries(&mut c) == 0).then_some(()));
    let live = sf.live("Contact");
    assert!(live.is_empty(), "the record the lost attempt created is deleted with its row: {live:?}");
    let update = c
        .query_one("SELECT state::text, sf_message FROM salesforce._trigger_log WHERE action = 'UPDATE'", &[])
        .expect("update entry");
    assert_eq!(update.get::<_, String>(0), "SUCCESS");
    assert!(update.get::<_, Option<String>>(1).is_some_and(|m| m.contains("deleted since")), "the entry says why");
}
