-- Every SQL statement of Heroku Connect's "Write Errors" article (../shared/seeds/000_ecc54107a5bd48ef.txt),
-- copied unchanged. src/tests.rs runs each one against an extension-created salesforce schema.
SELECT table_name, record_id, action, sf_message
FROM salesforce._trigger_log
WHERE state = 'FAILED';
UPDATE salesforce._trigger_log SET state = 'NEW'
WHERE state = 'FAILED' AND table_name = 'contact';
-- Set the records you want to retry to a state of 'REQUEUE'
UPDATE salesforce._trigger_log_archive SET state='REQUEUE'
WHERE state='NEW'; -- or some other criteria like state='FAILED' and table_name = 'account' and sf_message like '%my error message%'
-- Copy them to the trigger log table
INSERT INTO salesforce._trigger_log (created_at, updated_at, state, txid, table_name, action, record_id, values, old, sfid)
SELECT now(), now(), 'NEW', txid, table_name, action, record_id, values, old, sfid
FROM salesforce._trigger_log_archive where state='REQUEUE';
-- Update the records still in the archive
UPDATE salesforce._trigger_log_archive SET state='REQUEUED'
WHERE state='REQUEUE';
SELECT created_at, table_name, record_id, sfid, sf_message
FROM salesforce._trigger_log WHERE state='FAILED';
SELECT salesforce.hc_capture_insert_from_row(hstore(salesforce.account.*), 'account')
FROM salesforce.account WHERE id = 1234;
SELECT salesforce.hc_capture_insert_from_row(
hstore(salesforce.account.*), 'account', ARRAY['parent__external_id__c'])
FROM salesforce.account where id = 1234;
UPDATE salesforce.account set name='Smaller Name' where id = 1234;
SELECT salesforce.hc_capture_update_from_row(
hstore(salesforce.account.*), 'account', ARRAY['parent__external_id__c'])
FROM salesforce.account where id = 1234;
