// jsforce (the common Node.js Salesforce client), used unchanged against fakeforce.
// Usage: node check.cjs <fakeforce base URL>. Exits non-zero on the first mismatch.
// It writes (collections, upsert, delete, a Bulk ingest job) and reads (query, queryAll, getDeleted, Composite, a
// Bulk query job) as any Salesforce client would.
const assert = require('node:assert/strict');
const jsforce = require('jsforce');

const loginUrl = process.argv[2];
if (!loginUrl) {
  console.error('usage: node check.cjs <fakeforce URL>');
  process.exit(2);
}

async function main() {
  const conn = new jsforce.Connection({
    oauth2: { loginUrl, clientId: 'pgforce-demo-client', clientSecret: 'pgforce-demo-secret' },
    version: '62.0',
  });
  const user = await conn.authorize({ grant_type: 'client_credentials' });
  assert.equal(conn.instanceUrl, loginUrl, 'instance_url points back at the stand-in');
  assert.match(conn.accessToken, /^00D\w{15}!\w+$/);
  assert.match(user.organizationId, /^00D/);
  console.log('ok token: client credentials');

  const created = await conn.sobject('Account').create(
    [{ Name: 'Alpha', External_Id__c: 'JS-1' }, { Name: 'Beta', External_Id__c: 'JS-2' }],
    { allOrNone: true },
  );
  assert.equal(created.length, 2);
  for (const r of created) assert.ok(r.success && /^001\w{15}$/.test(r.id), JSON.stringify(r));
  console.log('ok create (sObject Collections)');

  const updated = await conn.sobject('Account').update([{ Id: created[0].id, Name: 'Alpha 2' }]);
  assert.ok(updated[0].success, JSON.stringify(updated));
  console.log('ok update');

  const upserted = await conn.sobject('Account').upsert(
    [{ Name: 'Gamma', External_Id__c: 'JS-3' }, { Name: 'Beta 2', External_Id__c: 'JS-2' }],
    'External_Id__c',
  );
  assert.deepEqual(upserted.map((r) => [r.success, r.created]), [[true, true], [true, false]]);
  console.log('ok upsert by external id');

  const q = await conn.query('SELECT Id, Name FROM Account ORDER BY Name');
  assert.equal(q.totalSize, 3);
  assert.deepEqual(q.records.map((r) => r.Name), ['Alpha 2', 'Beta 2', 'Gamma']);
  console.log('ok query');

  const deleted = await conn.sobject('Account').destroy([created[1].id]);
  assert.ok(deleted[0].success, JSON.stringify(deleted));
  const after = await conn.query('SELECT COUNT() FROM Account');
  assert.equal(after.totalSize, 2);
  console.log('ok delete');

  // Reading, as pgforce's read path does: queryAll, the delete log, Composite, a Bulk API 2.0 query job.
  const all = await conn.query('SELECT Id, IsDeleted FROM Account', { scanAll: true });
  assert.equal(all.totalSize, 3);
  assert.ok(all.records.some((r) => r.Id === created[1].id && r.IsDeleted === true), JSON.stringify(all.records));
  console.log('ok queryAll (deleted records too)');

  const log = await conn.sobject('Account').deleted(new Date(Date.now() - 600000), new Date(Date.now() + 120000));
  assert.ok(log.deletedRecords.some((r) => r.id === created[1].id), JSON.stringify(log));
  assert.ok(log.latestDateCovered, JSON.stringify(log));
  console.log('ok getDeleted');

  const composite = await conn.requestPost('/services/data/v62.0/composite', {
    allOrNone: false,
    compositeRequest: [
      { method: 'GET', url: '/services/data/v62.0/queryAll?q=SELECT+Id+FROM+Account', referenceId: 'accounts' },
      { method: 'GET', url: '/services/data/v62.0/query?q=SELECT+Nope+FROM+Account', referenceId: 'bad' },
    ],
  });
  const byRef = Object.fromEntries(composite.compositeResponse.map((r) => [r.referenceId, r]));
  assert.equal(byRef.accounts.httpStatusCode, 200);
  assert.equal(byRef.accounts.body.totalSize, 3);
  assert.equal(byRef.bad.httpStatusCode, 400, JSON.stringify(byRef.bad));
  console.log('ok Composite');

  const rows = [];
  const stream = await conn.bulk2.query('SELECT Id, Name, External_Id__c FROM Account', {
    scanAll: true,
    pollInterval: 100,
    pollTimeout: 30000,
  });
  for await (const r of stream) rows.push(r);
  assert.equal(rows.length, 3, JSON.stringify(rows));
  assert.deepEqual(rows.map((r) => r.External_Id__c).sort(), ['JS-1', 'JS-2', 'JS-3']);
  console.log('ok Bulk API 2.0 query');

  const csv = 'LastName,Email,Account.External_Id__c\nOne,one@example.com,JS-1\nTwo,two@example.com,JS-3\n,none@example.com,JS-1\n';
  const results = await conn.bulk2.loadAndWaitForResults({
    object: 'Contact',
    operation: 'insert',
    input: csv,
    pollInterval: 100,
    pollTimeout: 30000,
  });
  assert.equal(results.successfulResults.length, 2, JSON.stringify(results));
  assert.equal(results.failedResults.length, 1, JSON.stringify(results));
  assert.match(results.failedResults[0].sf__Error, /^REQUIRED_FIELD_MISSING:/);
  assert.equal(results.unprocessedRecords.length, 0);
  const contacts = await conn.query("SELECT LastName, Account.Name FROM Contact WHERE Account.Name = 'Gamma'");
  assert.equal(contacts.records[0].LastName, 'Two');
  console.log('ok Bulk API 2.0 ingest');
}

main().then(
  () => console.log('jsforce works against fakeforce unchanged'),
  (e) => {
    console.error('jsforce check failed:', e);
    process.exit(1);
  },
);
