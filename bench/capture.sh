#!/usr/bin/env bash
# Capture benchmark: what pgforce's triggers cost a writing application, measured side by side in one run.
#
# Two table shapes: `bench`, 12 columns of mixed types, and `contact`, shaped like a Heroku Connect contact table
# (eight varchar fields, a date, two timestamps, a boolean, an external id, sfid with its unique index). One table
# per shape and variant, same columns, same trigger log:
#   none      no trigger at all (the ceiling)
#   pgforce   pgforce's triggers, as salesforce.map_table installs them
#   plpgsql   Heroku Connect's VERSION 4 logger and status trigger in PL/pgSQL, with a cheap xmlbinary check
#   double    no trigger; each statement writes its rows and their hstore-text log rows itself (about the
#             physical limit of any capture)
# Workloads: 1000-row INSERT statements, 1000-row UPDATE statements, single-row INSERT transactions; each with
# synchronous_commit on and off. Variants are interleaved in rounds; the median of the rounds is reported.
#   bench/capture.sh [seconds-per-run (default 5)] [rounds (default 3)]
#   PGFORCE_BENCH_SHAPES="contact" bench/capture.sh   one shape only
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source bench/lib.sh
SECONDS_PER_RUN=${1:-5}
ROUNDS=${2:-3}
PG=${PGFORCE_BENCH_PG:-15}

bash scripts/setup.sh
pg_config=$(pg_config_for "$PG")
bindir=$("$pg_config" --bindir)
say "building pgforce (release) for PostgreSQL $PG"
cargo pgrx install --release -p pgforce --pg-config "$pg_config" --no-default-features --features "pg$PG" >/dev/null

work="$PWD/target/bench/capture"
data="$work/pgdata"
port=${PGFORCE_BENCH_PORT:-54339}
mkdir -p "$work"
start_cluster "$bindir" "$data" "$port" "pgforce.enabled = off" "shared_buffers = '512MB'" "max_wal_size = '4GB'" \
    "checkpoint_timeout = '30min'" "autovacuum = off"
trap 'stop_cluster "$bindir" "$data"' EXIT
psql() { "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -X -q "$@"; }

psql -f bench/capture_setup.sql >/dev/null

variants=(none pgforce plpgsql double)
workloads=(insert1000 update1000 insert1)
read -r -a shapes <<<"${PGFORCE_BENCH_SHAPES:-bench contact}"
declare -A rows_per_tx=([insert1000]=1000 [update1000]=1000 [insert1]=1)

# What each shape's statements write (g is the row number) and change.
declare -A columns=(
    [bench]="c1, c2, c3, c4, c5, c6, c7, c8"
    [contact]="firstname, lastname, email, phone, mailingstreet, mailingcity, mailingpostalcode, title, birthdate, createddate, systemmodstamp, isdeleted, external_id__c"
)
declare -A values=(
    [bench]="'name ' || g, g, g * 1.5, g % 2 = 0, now(), 'user' || g || '@example.com', current_date, md5(g::text)"
    [contact]="'First' || g, 'Last' || g, 'user' || g || '@example.com', '+1 555 ' || lpad(g::text, 7, '0'), g || ' Main Street', 'Springfield', lpad((g % 99999)::text, 5, '0'), 'Engineer', date '1980-01-01' + g % 10000, now(), now(), false, md5(g::text)::uuid::text"
)
declare -A changes=(
    [bench]="c2 = t.c2 + 1, c6 = md5(t.c6)"
    [contact]="title = md5(t.title), systemmodstamp = now()"
)

script_for() { # shape variant workload -> pgbench script file
    local shape=$1 v=$2 w=$3 f="$work/$1-$2-$3.sql"
    local table="${shape}_$v" cols=${columns[$shape]} gen=${values[$shape]} set=${changes[$shape]}
    local log_insert="INSERT INTO salesforce._trigger_log (txid, created_at, updated_at, state, action, table_name, record_id"
    case "$v:$w" in
        double:insert1000 | double:insert1)
            local from="generate_series(1, 1000) g"
            [ "$w" = insert1 ] && from="(SELECT 7 AS g) s"
            cat >"$f" <<SQL ;;
WITH ins AS (INSERT INTO $table ($cols) SELECT $gen FROM $from RETURNING *)
$log_insert, "values")
SELECT txid_current(), clock_timestamp(), NULL, 'NEW', 'INSERT', '$table', ins.id, (hstore(ins.*) - ARRAY['_hc_lastop','_hc_err'])::text FROM ins;
SQL
        double:update1000) cat >"$f" <<SQL ;;
\set a random(1, 99000)
WITH upd AS (
  UPDATE $table t SET $set FROM $table o
   WHERE o.id = t.id AND t.id BETWEEN :a AND :a + 999
  RETURNING t.id, t.sfid, hstore(t.*) AS newh, hstore(o.*) - ARRAY['_hc_lastop','_hc_err'] AS oldh)
$log_insert, sfid, old, "values")
SELECT txid_current(), clock_timestamp(), NULL, 'NEW', 'UPDATE', '$table', id, sfid, oldh::text, ((newh - oldh) - ARRAY['_hc_lastop','_hc_err'])::text FROM upd;
SQL
        *:insert1000) echo "INSERT INTO $table ($cols) SELECT $gen FROM generate_series(1, 1000) g;" >"$f" ;;
        *:insert1) echo "INSERT INTO $table ($cols) SELECT $gen FROM (SELECT 7 AS g) s;" >"$f" ;;
        *:update1000) printf '%s\n' '\set a random(1, 99000)' "UPDATE $table t SET $set WHERE id BETWEEN :a AND :a + 999;" >"$f" ;;
    esac
    echo "$f"
}

reset_tables() { # fresh tables (100k rows for the update workload), empty log, checkpoint outside the timing
    local w=$1
    psql -c "SELECT bench_reset($([ "$w" = update1000 ] && echo 100000 || echo 0))" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
}

declare -A results
for shape in "${shapes[@]}"; do
    for sync in on off; do
        for w in "${workloads[@]}"; do
            for round in $(seq 1 "$ROUNDS"); do
                for v in "${variants[@]}"; do
                    reset_tables "$w"
                    f=$(script_for "$shape" "$v" "$w")
                    tps=$(PGOPTIONS="-c synchronous_commit=$sync" "$bindir/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -c 1 \
                            -T "$SECONDS_PER_RUN" -f "$f" postgres 2>/dev/null | awk '/^tps/ {print $3}')
                    results[$shape,$sync,$w,$v]+="$(awk -v t="$tps" -v r="${rows_per_tx[$w]}" 'BEGIN {printf "%.0f", t * r}') "
                    printf '\r  %-7s synchronous_commit=%-3s %-10s round %d/%d %-8s %10s rows/s   ' "$shape" "$sync" "$w" "$round" \
                        "$ROUNDS" "$v" "$(echo "${results[$shape,$sync,$w,$v]}" | awk '{print $NF}')" >&2
                done
            done
        done
    done
done
echo >&2

out="$work/results.md"
{
    echo "Capture benchmark, PostgreSQL $PG, $(nproc) cores, ${SECONDS_PER_RUN}s x $ROUNDS rounds per cell, median rows/s ($(date -u +%Y-%m-%d))"
    echo
    echo "| table | synchronous_commit | workload | no trigger | pgforce | PL/pgSQL logger | double insert | pgforce / no trigger | pgforce / PL/pgSQL | pgforce / double insert |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for shape in "${shapes[@]}"; do
        for sync in on off; do
            for w in "${workloads[@]}"; do
                declare -A m=()
                for v in "${variants[@]}"; do m[$v]=$(echo "${results[$shape,$sync,$w,$v]}" | median); done
                echo "| $shape | $sync | $w | ${m[none]} | ${m[pgforce]} | ${m[plpgsql]} | ${m[double]} | $(ratio "${m[pgforce]}" "${m[none]}") | $(ratio "${m[pgforce]}" "${m[plpgsql]}") | $(ratio "${m[pgforce]}" "${m[double]}") |"
            done
        done
    done
} | tee "$out"
say "results written to $out"
