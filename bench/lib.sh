# What the shell benchmarks share (source it after scripts/lib.sh).

# median: the middle of the numbers on stdin, separated by spaces or newlines (of an even count, the lower of the
# two middle ones); "-" when there are none.
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}'; }
# ratio A B: A / B as "1.23×" (0.00× when B is not positive).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f×", (b > 0 ? a / b : 0)}'; }

# build_for_bench: the PostgreSQL to measure (PGFORCE_BENCH_PG_CONFIG, or version $PG installed by setup), pgforce
# installed into it and fakeforce built, both in $PROFILE (release unless PGFORCE_BENCH_PROFILE says debug). Sets
# pg_config, PG, bindir and fakeforce (the binary's path).
build_for_bench() {
    PROFILE=${PGFORCE_BENCH_PROFILE:-release}
    if [ -n "${PGFORCE_BENCH_PG_CONFIG:-}" ]; then
        pg_config=$PGFORCE_BENCH_PG_CONFIG
        PG=$("$pg_config" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
    else
        bash scripts/setup.sh
        pg_config=$(pg_config_for "$PG")
    fi
    bindir=$("$pg_config" --bindir)
    say "building pgforce and fakeforce ($PROFILE) for PostgreSQL $PG"
    local release
    release=$([ "$PROFILE" = release ] && echo --release || true)
    cargo pgrx install $release -p pgforce --pg-config "$pg_config" --no-default-features --features "pg$PG" >/dev/null
    cargo build -q $release -p fakeforce --bin fakeforce
    fakeforce="${CARGO_TARGET_DIR:-target}/$([ "$PROFILE" = release ] && echo release || echo debug)/fakeforce"
}

# start_fakeforce WORKDIR: fakeforce in its own process with an unbounded API budget. Sets ff (its URL) and ff_pid.
start_fakeforce() {
    rm -f "$1/fakeforce.url"
    "$fakeforce" --daily-api-requests 1000000000 --port 0 --url-file "$1/fakeforce.url" >/dev/null 2>&1 &
    ff_pid=$!
    for _ in $(seq 200); do [ -s "$1/fakeforce.url" ] && break; sleep 0.05; done
    ff=$(cat "$1/fakeforce.url")
}

# ff_token: an access token of fakeforce's demo client (client credentials), for the benchmarks' own API calls.
ff_token() {
    curl -s -X POST "$ff/services/oauth2/token" -d grant_type=client_credentials \
        -d client_id=pgforce-demo-client -d client_secret=pgforce-demo-secret | sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}
