#!/usr/bin/env bash
# Delivery benchmark: commit-to-request latency and backlog drain rate (fakeforce at 0 ms and 100 ms per call), a
# backlog of 2 × rows upserts through the Bulk API vs collections, and a 10-level hierarchy of rows / 2 accounts vs
# flat, with release builds of pgforce and fakeforce, on PostgreSQL 15.
#   bench/delivery.sh [rows]      (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
bash scripts/setup.sh
pg_config=$(pg_config_for 15)
say "installing a release build of pgforce into PostgreSQL 15"
cargo pgrx install --release -p pgforce --pg-config "$pg_config" --no-default-features --features pg15 >/dev/null
say "running (this takes a few minutes)"
mkdir -p target/bench
PGFORCE_PG_CONFIG=$pg_config cargo run -q --release -p pgforce-bench-delivery -- "${1:-100000}" | tee target/bench/delivery.md
say "results in target/bench/delivery.md; scripts/test.sh reinstalls the test build"
