#!/usr/bin/env bash
# The pgforce demo: a real PostgreSQL with pgforce preloaded, fakeforce (the Salesforce stand-in), mapped tables,
# application writes delivered as they commit, one failure shown, fixed and retried with the documented SQL. Installs whatever is missing first (scripts/setup.sh).
#   scripts/demo.sh          run the demo and stop the server
#   scripts/demo.sh --keep   leave the server running to explore (the script prints how to connect)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
bash scripts/setup.sh

PG=${PGFORCE_DEMO_PG:-15}
pg_config=$(pg_config_for "$PG")
bindir=$("$pg_config" --bindir)
data="$PWD/target/demo/pg$PG"
port=${PGFORCE_DEMO_PORT:-54329}

say "building and installing pgforce into PostgreSQL $PG"
cargo pgrx install -p pgforce --pg-config "$pg_config" --no-default-features --features "pg$PG" >/dev/null

mkdir -p "$PWD/target/demo"
ff_url_file="$PWD/target/demo/fakeforce.url"
say "starting fakeforce, the local Salesforce stand-in (an org with a validation rule on Contact.Email)"
cat >"$PWD/target/demo/fakeforce.toml" <<'TOML'
# Salesforce refuses contacts whose e-mail is at example.invalid, like a validation rule in a real org.
[[faults]]
object = "Contact"
field = "Email"
contains = "@example.invalid"
effect = { type = "record_error", status_code = "FIELD_CUSTOM_VALIDATION_EXCEPTION", message = "Email domain example.invalid is not allowed", fields = ["Email"] }
TOML
cargo build -q -p fakeforce --bin fakeforce
rm -f "$ff_url_file"
target/debug/fakeforce --config "$PWD/target/demo/fakeforce.toml" --port 0 --url-file "$ff_url_file" >/dev/null &
ff_pid=$!
for _ in $(seq 100); do [ -s "$ff_url_file" ] && break; sleep 0.05; done
ff=$(cat "$ff_url_file")

say "starting PostgreSQL $PG with shared_preload_libraries = 'pgforce' on port $port, delivering to $ff"
start_cluster "$bindir" "$data" "$port" \
    "pgforce.login_url = '$ff'" "pgforce.client_id = 'pgforce-demo-client'" "pgforce.client_secret = 'pgforce-demo-secret'" \
    "pgforce.read_interval = '2s'"
stop() { stop_cluster "$bindir" "$data"; kill "$ff_pid" 2>/dev/null || true; }
[ "${1:-}" = --keep ] || trap stop EXIT

psql() { "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -X -q "$@"; }
value() { psql -At -c "$1"; }
show() { printf '\n\033[1m%s\033[0m\n' "$1"; shift; psql -P pager=off "$@"; }
soql() {  # a SOQL query against the stand-in, as any Salesforce client would send it
    local token
    token=$(curl -s -d grant_type=client_credentials -d client_id=pgforce-demo-client -d client_secret=pgforce-demo-secret \
        "$ff/services/oauth2/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    curl -s -G -H "Authorization: Bearer $token" --data-urlencode "q=$1" "$ff/services/data/v62.0/query" |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print("  totalSize:", r["totalSize"]); [print("  ", {k: v for k, v in x.items() if k != "attributes"}) for x in r["records"]]'
}
progress() {  # progress <label> <total>: a bar of delivered (SUCCESS) trigger log rows
    local n bar
    n=$(value "SELECT count(*) FROM salesforce._trigger_log WHERE state IN ('SUCCESS', 'MERGED') AND table_name = 'contact'")
    bar=$(printf '%*s' $((n * 40 / $2)) '' | tr ' ' '#')
    printf '\r  [%-40s] %5d / %d %s' "$bar" "$n" "$2" "$1"
}

say "creating the extension and mapping salesforce.account and salesforce.contact"
psql <<'SQL'
CREATE EXTENSION pgforce CASCADE;
CREATE TABLE salesforce.account (name text NOT NULL, external_id__c text UNIQUE);
SELECT salesforce.map_table('salesforce.account', 'Account', upsert_field => 'external_id__c');
CREATE TABLE salesforce.contact (
    firstname text, lastname text NOT NULL, email text,
    external_id__c text UNIQUE,              -- the mapping's upsert field
    account__external_id__c text             -- parent Account by its external id
);
SELECT salesforce.map_table('salesforce.contact', 'Contact', upsert_field => 'external_id__c');
INSERT INTO salesforce.account (name, external_id__c) SELECT 'Account ' || g, 'A-' || g FROM generate_series(0, 9) g;
SQL
show "Columns map_table added (id, sfid, _hc_lastop, _hc_err; systemmodstamp, isdeleted, createddate for reading) and the triggers it installed:" \
    -c "\d salesforce.contact"

total=2000
say "the application writes $total contacts in 20 transactions; the worker delivers them as they commit"
for i in $(seq 1 20); do
    psql -c "INSERT INTO salesforce.contact (firstname, lastname, email, external_id__c, account__external_id__c)
             SELECT 'First' || g, 'Last' || g,
                    CASE WHEN g = 1234 THEN 'user1234@example.invalid' ELSE 'user' || g || '@example.com' END,
                    'C-' || g, 'A-' || (g % 10)
               FROM generate_series(($i - 1) * 100 + 1, $i * 100) g"
    progress "delivered" $total
done
for _ in $(seq 200); do
    [ "$(value "SELECT count(*) FROM salesforce._trigger_log WHERE state IN ('NEW', 'PENDING') AND table_name = 'contact'")" = 0 ] && break
    progress "delivered" $total; sleep 0.05
done
progress "delivered" $total; echo

show "The trigger log, by state (one contact failed):" -c "
    SELECT table_name, action, state, count(*) FROM salesforce._trigger_log GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
show "salesforce.sync_status:" -c "
    SELECT table_name, sobject, pending_writes, errored_writes, last_error, connection_state, api_used, api_limit
      FROM salesforce.sync_status"
show "Heroku Connect's documented query for failed writes:" -c "
    SELECT table_name, record_id, action, sf_message FROM salesforce._trigger_log WHERE state = 'FAILED'"
show "The failed row carries the outcome too, and delivered rows their Salesforce id:" -c "
    SELECT id, email, sfid, _hc_lastop, _hc_err FROM salesforce.contact WHERE id IN (1, 1234) ORDER BY id"
printf '\n\033[1m%s\033[0m\n' "What Salesforce (the stand-in) holds, through SOQL:"
soql "SELECT COUNT() FROM Contact"
soql "SELECT Id, LastName, Email, Account.Name FROM Contact WHERE External_Id__c IN ('C-1', 'C-2')"

say "fixing the data and retrying with the documented SQL (Merged writes: the fix and the failed insert go as one)"
psql <<'SQL'
BEGIN;
UPDATE salesforce.contact SET email = 'user1234@example.com' WHERE external_id__c = 'C-1234';
UPDATE salesforce._trigger_log SET state = 'NEW'
WHERE state = 'FAILED' AND table_name = 'contact';
COMMIT;
SQL
for _ in $(seq 100); do
    [ "$(value "SELECT count(*) FROM salesforce._trigger_log WHERE state IN ('NEW', 'PENDING', 'FAILED')")" = 0 ] && break
    sleep 0.05
done
show "After the retry:" -c "
    SELECT id, email, sfid, _hc_lastop, _hc_err FROM salesforce.contact WHERE id = 1234" -c "
    SELECT table_name, pending_writes, errored_writes, connection_state FROM salesforce.sync_status"
soql "SELECT LastName, Email FROM Contact WHERE External_Id__c = 'C-1234'"

say "an update and a delete reach Salesforce too"
psql -c "UPDATE salesforce.contact SET lastname = 'Lovelace' WHERE external_id__c = 'C-1'; DELETE FROM salesforce.contact WHERE external_id__c = 'C-2'"
sleep 0.5
soql "SELECT LastName FROM Contact WHERE External_Id__c IN ('C-1', 'C-2')"
show "What happened to each change (salesforce.sync_audit, the last ten):" -c "
    SELECT log_id, table_name, record_id, action, state, status_code, status_text, sfid
      FROM salesforce.sync_audit ORDER BY log_id DESC LIMIT 10"
say "Salesforce → Postgres: someone changes a contact in Salesforce, another creates one (read_write reads too)"
curl -s -X PATCH -H 'Content-Type: application/json' -d '{"fields": {"LastName": "Hopper"}}' \
    "$ff/fakeforce/admin/records/Contact/$(value "SELECT sfid FROM salesforce.contact WHERE external_id__c = 'C-3'")" >/dev/null
token=$(curl -s -d grant_type=client_credentials -d client_id=pgforce-demo-client -d client_secret=pgforce-demo-secret \
    "$ff/services/oauth2/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"LastName": "Created in Salesforce", "External_Id__c": "SF-1"}' "$ff/services/data/v62.0/sobjects/Contact" >/dev/null
for _ in $(seq 200); do
    [ "$(value "SELECT count(*) FROM salesforce.contact WHERE lastname IN ('Hopper', 'Created in Salesforce')")" = 2 ] && break
    sleep 0.05
done
show "Both arrived within pgforce.read_interval (2 s here), written as SYNCED and never sent back:" -c "
    SELECT external_id__c, lastname, sfid, _hc_lastop, systemmodstamp IS NOT NULL AS stamped
      FROM salesforce.contact WHERE external_id__c IN ('C-3', 'SF-1') ORDER BY 1" -c "
    SELECT table_name, read_state, last_read_at IS NOT NULL AS has_read, rows_read FROM salesforce.sync_status"
show "What salesforce.diagnose() finds:" -c "SELECT check_name, status, detail FROM salesforce.diagnose()"
printf '\n\033[1m%s\033[0m\n' "What the stand-in saw (requests by kind, records by operation):"
curl -s "$ff/fakeforce/admin/counters" | python3 -c 'import json,sys; c=json.load(sys.stdin); print("  requests:", c["by_kind"], "\n  records:", c["records"], "\n  failed records:", c["records_failed"])'

if [ "${1:-}" = --keep ]; then
    say "server left running: $bindir/psql -h 127.0.0.1 -p $port -U postgres; fakeforce at $ff"
    say "stop them with: runuser -u postgres -- $bindir/pg_ctl -D $data stop; kill $ff_pid"
fi
[ "$(value "SELECT count(*) FROM salesforce.contact WHERE lastname IN ('Hopper', 'Created in Salesforce')")" = 2 ] ||
    { echo "the changes made in Salesforce did not arrive" >&2; exit 1; }
say "demo finished: every change was delivered, the failure was shown, fixed and retried, Salesforce's changes read back"
