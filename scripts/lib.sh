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
