#!/usr/bin/env bash
# Proves the README's commands work from a fresh clone: clones HEAD into a temporary directory (no target/), runs
# scripts/demo.sh there, runs it again (which must skip every install and build), and with --tests runs
# scripts/test.sh after it. Only machine-wide caches are reused: cargo's registry and installed tools,
# /var/cache/pgforce, the PostgreSQL builds in /opt/pgforce and Debian's packages.
#
#   scripts/fresh-check.sh                  demo twice
#   scripts/fresh-check.sh --tests          demo twice, then every test
#   scripts/fresh-check.sh --empty-caches   as if /var/cache/pgforce and /opt/pgforce did not exist: downloads and
#                                           builds PostgreSQL 17 and 18 again, into a temporary cache and prefix
# Prints a summary with the time of each step; the clone is removed unless --keep is given.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

tests=false empty=false keep=false
for a in "$@"; do
    case $a in
        --tests) tests=true ;;
        --empty-caches) empty=true ;;
        --keep) keep=true ;;
        *) echo "usage: scripts/fresh-check.sh [--tests] [--empty-caches] [--keep]" >&2; exit 2 ;;
    esac
done
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
    say "note: uncommitted changes are not part of the check (it clones HEAD, $(git rev-parse --short HEAD))"

work=$(mktemp -d /tmp/pgforce-fresh.XXXXXX)
chmod 755 "$work"   # the postgres OS user must reach clusters under the clone
cleanup() { $keep || rm -rf "$work"; }
trap cleanup EXIT
rev=$(git rev-parse --short HEAD)   # what is cloned; HEAD may move while the check runs
git clone -q . "$work/pgforce"
if $empty; then
    # A pristine cache and prefix; ~/.pgrx/config.toml is rewritten to point at them (setup fixes it on the next
    # ordinary run).
    export PGFORCE_CACHE="$work/cache" PGFORCE_PG_PREFIX="$work/opt"
    mkdir -p "$PGFORCE_CACHE" "$PGFORCE_PG_PREFIX"
    chmod 755 "$PGFORCE_PG_PREFIX"
fi

summary=()
run_step() {  # run_step NAME COMMAND...: runs in the clone, logs to $work/NAME.log, records outcome and time
    local name=$1 t=$SECONDS rc=0
    shift
    say "fresh check: $name (log: $work/$name.log)"
    (cd "$work/pgforce" && "$@") >"$work/$name.log" 2>&1 || rc=$?
    local took="$(((SECONDS - t) / 60))m$(printf '%02d' $(((SECONDS - t) % 60)))s"
    if [ $rc = 0 ]; then
        summary+=("ok      $name  $took")
    else
        summary+=("FAILED  $name  $took (exit $rc; last lines below)")
        tail -30 "$work/$name.log" >&2
        keep=true
    fi
    return $rc
}

status=0
run_step demo-first scripts/demo.sh || status=1
if [ $status = 0 ]; then
    run_step demo-second scripts/demo.sh || status=1
    # The second run must not have installed or built anything.
    if [ $status = 0 ] && grep -v 'skip:' "$work/demo-second.log" |
        grep -E '\[setup\].* (installing|building|PostgreSQL [0-9]+ source:|cargo pgrx init \()' >&2; then
        summary+=("FAILED  demo-second did set-up work again (lines above)")
        status=1
    fi
fi
if [ $status = 0 ] && $tests; then run_step tests scripts/test.sh || status=1; fi

echo
echo "fresh check of $rev in $work/pgforce$($empty && echo ', empty caches'):"
printf '  %s\n' "${summary[@]}"
$keep && echo "  logs kept in $work"
exit $status
