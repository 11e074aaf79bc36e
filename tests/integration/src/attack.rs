//! What the attack tests share: a cluster delivering to fakeforce with the roles an attacker and its victims play.
//!
//! Roles: `mallory` can log in, create tables in `public` (as on clusters created before PostgreSQL 15) and
//! temporary tables; `app_owner` owns the mapped table `app.contact`; `ops` is a member of `pgforce_operator`,
//! `watcher` of `pgforce_monitor`.

use std::time::Duration;

use crate::{wait_for, Cluster, Salesforce};

pub const WAIT: Duration = Duration::from_secs(10);

/// The SQLSTATE of running `sql` ("ok" when it succeeds).
pub fn outcome(c: &mut postgres::Client, sql: &str) -> String {
    match c.batch_execute(sql) {
        Ok(()) => "ok".into(),
        Err(e) => e.code().map(|s| s.code().to_string()).unwrap_or_else(|| format!("no SQLSTATE: {e}")),
    }
}

pub fn count(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// One text value (NULL as "NULL").
pub fn text(c: &mut postgres::Client, sql: &str) -> String {
    let row = c.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"));
    row.get::<_, Option<String>>(0).unwrap_or_else(|| "NULL".into())
}

/// A cluster delivering to `sf`, the roles above, and `app.contact` mapped (owned by `app_owner`) with one
/// delivered row.
pub fn cluster(sf: &Salesforce) -> Cluster {
    let cluster = Cluster::start_with(true, &sf.settings());
    let mut admin = cluster.admin();
    admin
        .batch_execute(
            "CREATE EXTENSION hstore SCHEMA public;  -- where it usually is, and where the attackers can write
             SET search_path = pg_catalog;
             CREATE EXTENSION pgforce;
             DO $$ BEGIN  -- created by the extension since 0.2.0; here too, so the attacks can be replayed on 0.1.0
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgforce_monitor') THEN CREATE ROLE pgforce_monitor; END IF;
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgforce_operator') THEN CREATE ROLE pgforce_operator; END IF;
             END $$;
             CREATE ROLE mallory LOGIN; CREATE ROLE app_owner LOGIN; CREATE ROLE ops LOGIN; CREATE ROLE watcher LOGIN;
             GRANT pgforce_operator TO ops; GRANT pgforce_monitor TO watcher;
             GRANT CREATE ON SCHEMA public TO mallory;
             CREATE SCHEMA app AUTHORIZATION app_owner;
             GRANT USAGE ON SCHEMA app TO PUBLIC;
             CREATE TABLE app.contact (id serial PRIMARY KEY, sfid varchar(18), lastname text, email text,
                                       external_id__c text, _hc_lastop varchar(32), _hc_err text);
             ALTER TABLE app.contact OWNER TO app_owner;
             SELECT salesforce.map_table('app.contact', 'Contact', upsert_field => 'external_id__c');
             GRANT SELECT, INSERT, UPDATE ON app.contact TO ops;
             GRANT USAGE ON SEQUENCE app.contact_id_seq TO ops;",
        )
        .expect("setup");
    let mut owner = cluster.connect("app_owner", "postgres");
    owner.batch_execute("INSERT INTO app.contact (lastname, external_id__c) VALUES ('Legit', 'L-1')").expect("insert");
    wait_for(WAIT, "the legitimate row delivered", || (sf.live("Contact").len() == 1).then_some(()));
    cluster
}

/// That no backend crashed and Salesforce holds `records` Contacts.
pub fn assert_nothing_else_happened(cluster: &Cluster, sf: &Salesforce, records: usize) {
    let log = cluster.server_log();
    assert!(!log.contains("terminated by signal") && !log.contains("was terminated by"), "a backend crashed:\n{log}");
    assert_eq!(sf.records("Contact").len(), records, "Salesforce records: {:?}", sf.records("Contact"));
}
