#!/usr/bin/env bash
# Runs every test of pgforce: the pure crates, the Salesforce stand-in (fakeforce) and a real client against it, the SQL surface (#[pg_test]) and the out-of-process integration
# tests, on PostgreSQL 15, 17 and 18. Installs whatever is missing first (scripts/setup.sh).
#   scripts/test.sh            all versions
#   scripts/test.sh 17         one version
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
bash scripts/setup.sh

if [ $# -gt 0 ]; then versions=("$@"); else versions=("${PG_VERSIONS[@]}"); fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT

say "formatting (rustfmt.toml)"
if cargo fmt --all -- --check >/dev/null; then
    echo "rustfmt check: 1 passed"
else
    echo "rustfmt check: 1 failed (run cargo fmt --all)"
fi | tee -a "$log"

say "set-up scripts: PostgreSQL source selection (fake Debian archive, no network)"
bash scripts/tests/postgres_source_test.sh 2>&1 | tee -a "$log"

say "unit tests (pgforce-core)"
cargo test -p pgforce-core 2>&1 | tee -a "$log"

say "fakeforce: unit and conformance tests, and jsforce against it"
cargo test -p fakeforce 2>&1 | tee -a "$log"
bash scripts/check-clients.sh 2>&1 | tee -a "$log"

for v in "${versions[@]}"; do
    pg_config=$(pg_config_for "$v")
    say "PG $v: SQL surface (#[pg_test])"
    postgres_dir "$PWD/target/pgforce-test/pg$v"
    cargo pgrx test "pg$v" -p pgforce --runas postgres --pgdata "$PWD/target/pgforce-test/pg$v" 2>&1 | tee -a "$log"

    say "PG $v: integration tests (real clusters, pgforce preloaded)"
    cargo pgrx install -p pgforce --pg-config "$pg_config" --no-default-features --features "pg$v" >/dev/null
    PGFORCE_PG_CONFIG=$pg_config cargo test -p pgforce-integration -- --test-threads=1 2>&1 | tee -a "$log"
done

passed=$(grep -o '[0-9]* passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -o '[0-9]* failed' "$log" | awk '{s+=$1} END {print s+0}')
echo "all: $passed passed, $failed failed"
[ "$failed" = 0 ]
