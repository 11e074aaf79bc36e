#!/usr/bin/env bash
# Installs everything a fresh Debian bookworm machine lacks to build and test pgforce: Debian packages, cargo-pgrx
# 0.18.1, PostgreSQL 15 (Debian's package), PostgreSQL 17 and 18 built with hstore from the pinned upstream tarballs
# of scripts/postgres.pins (fetched through Debian's source archive on the machine's own mirror), and
# `cargo pgrx init` for all three. Idempotent: every step is skipped, and says so, when its result is already there.
#
#   PGFORCE_PG_PREFIX  where PostgreSQL 17/18 are installed     (default /opt/pgforce)
#   PGFORCE_CACHE      downloads (src/) and build scratch        (default /var/cache/pgforce)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/postgres_source.sh

PGRX_VERSION=0.18.1
PG_PREFIX=${PGFORCE_PG_PREFIX:-/opt/pgforce}
JOBS=$(nproc)
SETUP_START=$SECONDS

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
elapsed() { printf '%dm%02ds' $(((SECONDS - $1) / 60)) $(((SECONDS - $1) % 60)); }
skip() { src_note "skip: $*"; }
fail() {
    printf '\033[1;31m[setup] failed:\033[0m %s\n' "$1" >&2
    shift
    local l
    for l in "$@"; do printf '         %s\n' "$l" >&2; done
    exit 1
}

install_debian_packages() {
    local wanted=(postgresql-15 postgresql-server-dev-15 postgresql-contrib clang libclang-dev bison flex sudo
                  pkg-config make gcc libssl-dev zlib1g-dev dpkg-dev curl ca-certificates xz-utils python3)
    command -v npm >/dev/null || wanted+=(nodejs npm)  # the machine image normally brings Node.js
    local missing=() p
    for p in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    # python3 may come from elsewhere on the machine (pyenv): any python3 will do.
    if command -v python3 >/dev/null; then
        local kept=()
        for p in "${missing[@]}"; do [ "$p" = python3 ] || kept+=("$p"); done
        missing=("${kept[@]}")
    fi
    if [ ${#missing[@]} -eq 0 ]; then
        skip "Debian packages (all installed)"
    else
        local t=$SECONDS
        src_note "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq || fail "apt-get update failed" "check the machine's apt configuration and network"
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
            fail "apt-get install failed for: ${missing[*]}" "run it by hand to see why: apt-get install ${missing[*]}"
        src_note "Debian packages installed ($(elapsed $t))"
    fi
    # Debian's postgresql package starts a cluster of its own; pgforce never uses it.
    if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
        as_root pg_ctlcluster 15 main stop 2>/dev/null || true
    fi
}

cargo_pgrx_present() { cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; }

# Runs in the background beside the PostgreSQL builds; its output goes to a log shown only on failure.
install_cargo_pgrx() {
    local t=$SECONDS
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked >"$1" 2>&1
    src_note "cargo-pgrx $PGRX_VERSION installed ($(elapsed $t))"
}

# The version an installed PostgreSQL reports, e.g. 17.11 (empty when it is not installed with hstore).
installed_pg_version() {
    local prefix=$1
    [ -x "$prefix/bin/pg_config" ] || return 0
    [ -f "$("$prefix/bin/pg_config" --sharedir)/extension/hstore.control" ] || return 0
    "$prefix/bin/pg_config" --version | awk '{print $2}'
}

build_pg() {
    local major=$1 prefix="$PG_PREFIX/pg$1" pinned have
    pinned=$(pin_field "$major" 2)
    have=$(installed_pg_version "$prefix")
    # A newer build than the pin (from the source index's fallback) is kept; an older one is rebuilt.
    if [ -n "$have" ] && dpkg --compare-versions "$have" ge "$pinned"; then
        skip "PostgreSQL $major build ($have is installed in $prefix; pinned $pinned)"
        return
    fi
    local t=$SECONDS
    postgres_source "$major" ||
        fail "no source tarball for PostgreSQL $major (the attempts are listed above)" \
            "put the file named above into $PGFORCE_CACHE/src/ and run this again"
    src_note "PostgreSQL $major source: $(basename "$POSTGRES_SOURCE") ($(elapsed $t))"
    t=$SECONDS
    local build="$PGFORCE_CACHE/build/pg$major"
    rm -rf "$build" && mkdir -p "$build"
    tar -xf "$POSTGRES_SOURCE" -C "$build" --strip-components=1
    src_note "building PostgreSQL $major into $prefix (about 4 minutes on 2 cores)"
    (
        cd "$build"
        ./configure --prefix="$prefix" --without-icu --without-readline --with-openssl >configure.log 2>&1
        make -s -j"$JOBS" >make.log 2>&1
        rm -rf "$prefix"
        make -s install >install.log 2>&1
        make -s -C contrib/hstore install >>install.log 2>&1
    ) || fail "PostgreSQL $major did not build" "logs: $build/{configure,make,install}.log"
    rm -rf "$build"
    src_note "PostgreSQL $major built and installed ($(elapsed $t))"
}

pgrx_init() {
    local cfg="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
    local pg15=/usr/lib/postgresql/15/bin/pg_config
    if [ -f "$cfg" ] && grep -q "pg15 = \"$pg15\"" "$cfg" && grep -q "$PG_PREFIX/pg17/bin/pg_config" "$cfg" \
        && grep -q "$PG_PREFIX/pg18/bin/pg_config" "$cfg"; then
        skip "cargo pgrx init ($cfg names all three versions)"
        return
    fi
    local t=$SECONDS
    cargo pgrx init --pg15 "$pg15" --pg17 "$PG_PREFIX/pg17/bin/pg_config" --pg18 "$PG_PREFIX/pg18/bin/pg_config" \
        >/dev/null || fail "cargo pgrx init failed" "run it by hand to see why"
    src_note "cargo pgrx init ($(elapsed $t))"
}

main() {
    install_debian_packages

    local pgrx_pid="" pgrx_log="$PGFORCE_CACHE/cargo-pgrx-install.log"
    if cargo_pgrx_present; then
        skip "cargo-pgrx ($PGRX_VERSION is installed)"
    else
        mkdir -p "$PGFORCE_CACHE"
        src_note "installing cargo-pgrx $PGRX_VERSION in the background (about 6 minutes; log: $pgrx_log)"
        install_cargo_pgrx "$pgrx_log" &
        pgrx_pid=$!
    fi
    build_pg 17
    build_pg 18
    if [ -n "$pgrx_pid" ] && ! wait "$pgrx_pid"; then
        tail -20 "$pgrx_log" >&2
        fail "cargo install cargo-pgrx --version $PGRX_VERSION failed" "the end of its log is above ($pgrx_log)"
    fi
    pgrx_init
    id postgres >/dev/null 2>&1 || as_root useradd --system --home-dir /var/lib/postgresql postgres
    src_note "ready in $(elapsed $SETUP_START): $(/usr/lib/postgresql/15/bin/pg_config --version)," \
        "$("$PG_PREFIX"/pg17/bin/pg_config --version), $("$PG_PREFIX"/pg18/bin/pg_config --version), cargo-pgrx $PGRX_VERSION"
}

main "$@"
