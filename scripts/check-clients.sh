#!/usr/bin/env bash
# Runs a common Salesforce client library, unchanged, against fakeforce: jsforce (Node.js) gets a token by client
# credentials, creates, updates, upserts, deletes, queries (queryAll, getDeleted, Composite) and runs Bulk API 2.0
# ingest and query jobs.
# jsforce and its dependencies are installed with `npm ci` from the committed lockfile (exact versions, integrity
# hashes, no registry host) into target/clients/jsforce once, and reused while the lockfile is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
dir=target/clients/jsforce
mkdir -p "$dir"
src=tests/clients/jsforce
cp "$src/package.json" "$src/package-lock.json" "$src/.npmrc" "$src/check.cjs" "$dir/"
lock_sum=$(sha256sum "$src/package-lock.json" | cut -d' ' -f1)
if [ -f "$dir/node_modules/jsforce/package.json" ] && [ "$(cat "$dir/installed-lock.sha256" 2>/dev/null)" = "$lock_sum" ]; then
    say "jsforce: already installed from this lockfile"
else
    say "installing jsforce into $dir (npm ci from the lockfile)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$lock_sum" >"$dir/installed-lock.sha256"
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
