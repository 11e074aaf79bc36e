#!/usr/bin/env bash
# Runs a common Salesforce client library, unchanged, against fakeforce: jsforce (Node.js) gets a token by client
# credentials, creates, updates, upserts, deletes, queries and runs a Bulk API 2.0 ingest job.
# jsforce is installed once into target/clients/jsforce (from the npm registry) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
dir=target/clients/jsforce
mkdir -p "$dir"
cp tests/clients/jsforce/package.json tests/clients/jsforce/check.cjs "$dir/"
if [ ! -f "$dir/node_modules/jsforce/package.json" ]; then
    say "installing jsforce into $dir"
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi
cargo build -q -p fakeforce --bin fakeforce
url_file=$(mktemp)
target/debug/fakeforce --port 0 --url-file "$url_file" --bulk-processing-ms 100 >/dev/null &
ff=$!
trap 'kill $ff 2>/dev/null || true; rm -f "$url_file"' EXIT
for _ in $(seq 100); do [ -s "$url_file" ] && break; sleep 0.05; done
if node "$dir/check.cjs" "$(cat "$url_file")"; then
    echo "jsforce client check: 1 passed"
else
    echo "jsforce client check: 1 failed"
    exit 1
fi
