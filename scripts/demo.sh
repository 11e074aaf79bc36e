#!/usr/bin/env bash
# The pgforce demo: a real PostgreSQL with pgforce preloaded, a mapped salesforce.contact table, application
# writes, and the trigger log they produce. Installs whatever is missing first (scripts/setup.sh).
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

say "starting PostgreSQL $PG with shared_preload_libraries = 'pgforce' on port $port"
start_cluster "$bindir" "$data" "$port"
stop() { stop_cluster "$bindir" "$data"; }
[ "${1:-}" = --keep ] || trap stop EXIT

psql() { "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -X -q "$@"; }
show() { printf '\n\033[1m%s\033[0m\n' "$1"; shift; psql -P pager=off "$@"; }

say "creating the extension and mapping salesforce.contact to the Contact object"
psql <<'SQL'
CREATE EXTENSION pgforce CASCADE;
CREATE TABLE salesforce.contact (
    firstname text, lastname text NOT NULL, email text,
    external_id__c text UNIQUE,              -- the mapping's upsert field
    account__r__external_id__c text          -- parent Account by its external id
);
SELECT salesforce.map_table('salesforce.contact', 'Contact', upsert_field => 'external_id__c');
SQL
show "Columns map_table added (id, sfid, _hc_lastop, _hc_err) and the triggers it installed:" \
    -c "\d salesforce.contact"

say "the application writes 2,000 contacts in 20 transactions"
total=20
for i in $(seq 1 $total); do
    psql -c "INSERT INTO salesforce.contact (firstname, lastname, email, external_id__c, account__r__external_id__c)
             SELECT 'First' || g, 'Last' || g, 'user' || g || '@example.com', 'C-' || g, 'A-' || (g % 10)
               FROM generate_series(($i - 1) * 100 + 1, $i * 100) g"
    done_n=$((i * 100)); bar=$(printf '%*s' $((i * 40 / total)) '' | tr ' ' '#')
    printf '\r  [%-40s] %5d / %d rows written and captured' "$bar" "$done_n" $((total * 100))
done
echo
psql -c "UPDATE salesforce.contact SET email = 'new-' || email WHERE id <= 5"
psql -c "UPDATE salesforce.contact SET email = email WHERE id = 6"   # a no-op: logged as IGNORE
psql -c "DELETE FROM salesforce.contact WHERE id = 7"                 # never reached Salesforce: IGNORE
# what the sync worker will do after an insert succeeds: write back sfid and the outcome, without being captured
psql -c "SET xmlbinary = 'hex'; UPDATE salesforce.contact SET sfid = '003000000000001AA' || chr(64 + id::int), _hc_lastop = 'INSERTED' WHERE id IN (8, 9)"
psql -c "DELETE FROM salesforce.contact WHERE id = 8"                 # has an sfid: a delete to send

show "The trigger log, by action and state:" -c "
    SELECT action, state, count(*) FROM salesforce._trigger_log GROUP BY 1, 2 ORDER BY 1, 2"
show "A few entries (values/old are hstore text, exactly as hstore(row) renders it):" -c "
    SELECT id, txid, action, state, record_id, sfid, left(values, 70) AS values, left(old, 30) AS old
      FROM salesforce._trigger_log WHERE id IN (1, 2, 2001, 2006, 2007, 2008, 2009) ORDER BY id"
show "Status columns on the table (the worker's own write set INSERTED without being captured):" -c "
    SELECT id, email, sfid, _hc_lastop FROM salesforce.contact WHERE id IN (1, 6, 9) ORDER BY id"
show "Heroku Connect's documented query for failed writes works unchanged (none yet: delivery comes with the sync worker):" -c "
    SELECT table_name, record_id, action, sf_message FROM salesforce._trigger_log WHERE state = 'FAILED'"
show "The repair function re-captures a row as a fresh INSERT, as in Heroku Connect:" -c "
    SELECT salesforce.hc_capture_insert_from_row(hstore(salesforce.contact.*), 'contact') AS new_log_id
      FROM salesforce.contact WHERE id = 1"

if [ "${1:-}" = --keep ]; then
    say "server left running: $bindir/psql -h 127.0.0.1 -p $port -U postgres"
    say "stop it with: runuser -u postgres -- $bindir/pg_ctl -D $data stop"
fi
say "demo finished: changes are captured in salesforce._trigger_log"
