#!/usr/bin/env bash
# Read latency and idle cost (issue 29): how long a change made in Salesforce takes to reach its row at
# pgforce.read_interval = 1s and 5s (p50, p99 over CHANGES changes each, made at random moments by another user), and
# how many API calls five read_only mappings polled at the default interval (30 s) spend per idle day, extrapolated
# from IDLE_SECONDS of idling; side by side in one run.
#   bench/read_latency.sh [changes (default 40)] [idle seconds (default 120)]
#   PGFORCE_BENCH_PG_CONFIG=/path/to/pg_config   another PostgreSQL (default: 15, installed by setup)
#   PGFORCE_BENCH_PROFILE=debug                  a quick check of the script itself
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source bench/lib.sh
CHANGES=${1:-40}
IDLE_SECONDS=${2:-120}
PG=${PGFORCE_BENCH_PG:-15}
build_for_bench

work="$PWD/target/bench/read_latency"
data="$work/pgdata"
port=${PGFORCE_BENCH_PORT:-54343}
rm -rf "$data"
mkdir -p "$work"
chmod 777 "$work"
start_fakeforce "$work"
cleanup() { stop_cluster "$bindir" "$data"; kill "$ff_pid" 2>/dev/null || true; }
trap cleanup EXIT
psql() { "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -X -q -At "$@"; }
token=$(ff_token)
create() {  # create OBJECT JSON → id
    curl -sf -X POST "$ff/services/data/v62.0/sobjects/$1" -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/json' -d "$2" | sed -E 's/.*"id":"([^"]+)".*/\1/'
}
used() { curl -s "$ff/fakeforce/admin/counters" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_usage"]["used"])'; }

start_cluster "$bindir" "$data" "$port" "pgforce.login_url = '$ff'" "pgforce.client_id = 'pgforce-demo-client'" \
    "pgforce.client_secret = 'pgforce-demo-secret'" "pgforce.read_interval = '1s'"
psql -c "CREATE EXTENSION pgforce CASCADE" >/dev/null

# latency INTERVAL: p50 and p99 (ms) of CHANGES changes' time from Salesforce to their row at that read interval.
latency() {
    psql -c "ALTER SYSTEM SET pgforce.read_interval = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
    local id samples="" t0 t1
    id=$(create Contact '{"LastName": "Latency"}')
    for _ in $(seq 50); do [ "$(psql -c "SELECT count(*) FROM public.contact WHERE sfid = '$id'")" = 1 ] && break; sleep 0.1; done
    for n in $(seq "$CHANGES"); do
        sleep "$(awk -v r="$RANDOM" -v i="${1%s}" 'BEGIN {printf "%.2f", (r % 1000) / 1000 * i}')"
        t0=$(date +%s%N)
        curl -sf -X PATCH "$ff/fakeforce/admin/records/Contact/$id" -H 'Content-Type: application/json' \
            -d "{\"fields\": {\"LastName\": \"Change $n\"}}" >/dev/null
        until [ "$(psql -c "SELECT lastname FROM public.contact WHERE sfid = '$id'")" = "Change $n" ]; do sleep 0.01; done
        t1=$(date +%s%N)
        samples="$samples $(((t1 - t0) / 1000000))"
    done
    echo "$samples" | tr ' ' '\n' | grep -v '^$' | sort -n |
        awk '{a[NR]=$1} END {printf "%d %d\n", a[int((NR+1)/2)], a[int(NR*0.99 + 0.999)]}'
}

say "a change's time from Salesforce to its row ($CHANGES changes each)"
psql -c "CREATE TABLE public.contact (id serial PRIMARY KEY, lastname text)" \
     -c "SELECT salesforce.map_table('public.contact', 'Contact', mode => 'read_only')" >/dev/null
read -r p50_1 p99_1 < <(latency 1s)
read -r p50_5 p99_5 < <(latency 5s)
psql -c "SELECT salesforce.unmap_table('public.contact')" >/dev/null

say "five mappings idling at the default read interval (30 s) for $IDLE_SECONDS s"
psql -c "ALTER SYSTEM SET pgforce.read_interval = '30s'" -c "SELECT pg_reload_conf()" >/dev/null
for pair in contact:lastname account:name lead:lastname opportunity:name case:subject; do
    t=${pair%%:*}
    psql -c "CREATE TABLE public.idle_$t (id serial PRIMARY KEY, ${pair#*:} text)" \
         -c "SELECT salesforce.map_table('public.idle_$t', '${t^}', mode => 'read_only')" >/dev/null
done
sleep 10 # the loads
before=$(used)
sleep "$IDLE_SECONDS"
spent=$(($(used) - before))
per_day=$(awk -v s="$spent" -v t="$IDLE_SECONDS" 'BEGIN {printf "%.0f", s * 86400 / t}')

out="$work/results.md"
{
    echo "Read latency and idle cost, PostgreSQL $PG, $(nproc) cores, fakeforce answering at once ($(date -u +%Y-%m-%d))"
    echo
    echo "| | p50 | p99 | goal |"
    echo "|---|---|---|---|"
    echo "| a change from Salesforce to its row, read_interval = 1s | $p50_1 ms | $p99_1 ms | p99 ≤ 2,000 ms |"
    echo "| a change from Salesforce to its row, read_interval = 5s | $p50_5 ms | $p99_5 ms | p99 ≤ 6,000 ms |"
    echo
    echo "API calls of five mappings idling at read_interval = 30s: $spent in $IDLE_SECONDS s, $per_day per day (goal ≤ 3,500)"
} | tee "$out"
say "results written to $out"
