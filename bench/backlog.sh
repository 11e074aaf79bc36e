#!/usr/bin/env bash
# Backlog benchmark: a large captured backlog (default 1,000,000 rows) drained against fakeforce at 0 ms and 100 ms
# per call, then 100,000 rows of 10 kB; rate per tenth of the drain, log/archive sizes, the worker's peak memory.
# Release builds of pgforce and fakeforce, PostgreSQL 15.
#   bench/backlog.sh [rows] [wide rows]      (0 skips that run)
#   PGFORCE_BENCH_SETTINGS="a = 1; b = 2" adds server settings (profiling); PGFORCE_KEEP_LOG=<file> keeps the server log
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
bash scripts/setup.sh
pg_config=$(pg_config_for 15)
say "installing a release build of pgforce into PostgreSQL 15"
cargo pgrx install --release -p pgforce --pg-config "$pg_config" --no-default-features --features pg15 >/dev/null
say "running (about 10 minutes with the defaults)"
mkdir -p target/bench
PGFORCE_PG_CONFIG=$pg_config cargo run -q --release -p pgforce-bench-delivery --bin backlog -- "${1:-1000000}" "${2:-100000}" \
    | tee target/bench/backlog.md
say "results in target/bench/backlog.md; scripts/test.sh reinstalls the test build"
