# Shared by the demo, test and benchmark scripts.
PGFORCE_PG_PREFIX=${PGFORCE_PG_PREFIX:-/opt/pgforce}
PG_VERSIONS=(15 17 18)

pg_config_for() {
    case "$1" in
        15) echo /usr/lib/postgresql/15/bin/pg_config ;;
        *) echo "$PGFORCE_PG_PREFIX/pg$1/bin/pg_config" ;;
    esac
}

say() { printf '\033[1;32m==>\033[0m %s\n' "$*" >&2; }

# A directory the postgres OS user owns (Postgres refuses to run as root).
postgres_dir() {
    rm -rf "$1" && mkdir -p "$1"
    chown postgres "$1"
    # every parent must be traversable by postgres
    local d=$1
    while [ "$d" != / ]; do d=$(dirname "$d"); chmod o+x "$d" 2>/dev/null || true; done
}

as_postgres() { runuser -u postgres -- "$@"; }

# start_cluster BINDIR DATADIR PORT [postgresql.conf line ...]: a new cluster owned by postgres, with pgforce
# preloaded, listening on 127.0.0.1:PORT, started and ready.
start_cluster() {
    local bindir=$1 data=$2 port=$3
    shift 3
    [ -f "$data/postmaster.pid" ] && stop_cluster "$bindir" "$data"
    postgres_dir "$data"
    as_postgres "$bindir/initdb" -A trust -U postgres -D "$data" >/dev/null
    {
        printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n" "$port" "$data"
        printf "shared_preload_libraries = 'pgforce'\n"
        [ $# -gt 0 ] && printf '%s\n' "$@"
    } >>"$data/postgresql.auto.conf"
    as_postgres "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w start >/dev/null
}

stop_cluster() { as_postgres "$1/pg_ctl" -D "$2" -m fast stop >/dev/null 2>&1 || true; }
