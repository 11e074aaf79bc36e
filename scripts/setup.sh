#!/usr/bin/env bash
# Installs everything a fresh Debian bookworm machine lacks to build and test pgforce:
# Debian packages, cargo-pgrx 0.18.1, PostgreSQL 15 (Debian), 17 and 18 (built from Debian's
# source archive, with hstore), and `cargo pgrx init` for all three. Idempotent; every step
# is skipped when its result is already there, so a second run takes seconds.
set -euo pipefail

PGRX_VERSION=0.18.1
PG_PREFIX=${PGFORCE_PG_PREFIX:-/opt/pgforce}
CACHE=${PGFORCE_CACHE:-/var/cache/pgforce}
JOBS=$(nproc)

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_debian_packages() {
    local wanted=(postgresql-15 postgresql-server-dev-15 postgresql-contrib clang libclang-dev bison flex
                  sudo pkg-config make gcc libssl-dev zlib1g-dev dpkg-dev curl ca-certificates)
    local missing=()
    for p in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Node.js runs the jsforce client check against fakeforce; the machine image normally has it.
    if ! command -v npm >/dev/null; then
        log "installing Debian packages: nodejs npm"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    # Debian's postgresql package starts a cluster; pgforce never uses it.
    if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
        as_root pg_ctlcluster 15 main stop 2>/dev/null || true
    fi
}

install_cargo_pgrx() {
    if cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then return; fi
    log "installing cargo-pgrx $PGRX_VERSION (about 6 minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
}

fetch_pg_source() {
    # Upstream tarballs of PG 17/18 come from Debian's source archive (trixie/sid), through a
    # private apt configuration that leaves the machine's own sources untouched.
    local major=$1 apt_dir="$CACHE/apt" src_dir="$CACHE/src"
    mkdir -p "$apt_dir/lists/partial" "$src_dir"
    local tarball
    tarball=$(ls "$src_dir"/postgresql-"$major"_*.orig.tar.* 2>/dev/null | head -1 || true)
    if [ -z "$tarball" ]; then
        printf 'deb-src http://deb.debian.org/debian trixie main\ndeb-src http://deb.debian.org/debian sid main\n' \
            >"$apt_dir/sources.list"
        local opts=(-oDir::Etc::SourceList="$apt_dir/sources.list" -oDir::Etc::SourceParts=/dev/null
                    -oDir::State::Lists="$apt_dir/lists" -oAPT::Sandbox::User=root)
        if [ ! -f "$apt_dir/updated" ]; then
            apt-get "${opts[@]}" update -qq
            touch "$apt_dir/updated"
        fi
        log "downloading postgresql-$major source"
        (cd "$src_dir" && apt-get "${opts[@]}" source --download-only -qq "postgresql-$major")
        tarball=$(ls "$src_dir"/postgresql-"$major"_*.orig.tar.* | head -1)
    fi
    echo "$tarball"
}

build_pg() {
    local major=$1 prefix="$PG_PREFIX/pg$1"
    if [ -x "$prefix/bin/pg_config" ] && [ -f "$prefix/share/postgresql/extension/hstore.control" -o \
         -f "$prefix/share/extension/hstore.control" ]; then
        return
    fi
    local tarball build
    tarball=$(fetch_pg_source "$major")
    build="$CACHE/build/pg$major"
    rm -rf "$build" && mkdir -p "$build"
    tar -xf "$tarball" -C "$build" --strip-components=1
    log "building PostgreSQL $major into $prefix (about 4 minutes)"
    (
        cd "$build"
        ./configure --prefix="$prefix" --without-icu --without-readline --with-openssl >configure.log 2>&1
        make -s -j"$JOBS" >make.log 2>&1
        make -s install >install.log 2>&1
        make -s -C contrib/hstore install >>install.log 2>&1
    ) || { log "PostgreSQL $major build failed; logs in $build"; exit 1; }
    rm -rf "$build"
}

pgrx_init() {
    local cfg="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
    local pg15=/usr/lib/postgresql/15/bin/pg_config
    if [ -f "$cfg" ] && grep -q "pg15 = \"$pg15\"" "$cfg" && grep -q "$PG_PREFIX/pg17/bin/pg_config" "$cfg" \
        && grep -q "$PG_PREFIX/pg18/bin/pg_config" "$cfg"; then
        return
    fi
    log "cargo pgrx init (pg15, pg17, pg18)"
    cargo pgrx init --pg15 "$pg15" --pg17 "$PG_PREFIX/pg17/bin/pg_config" --pg18 "$PG_PREFIX/pg18/bin/pg_config" >/dev/null
}

main() {
    install_debian_packages
    install_cargo_pgrx &
    local pgrx_pid=$!
    build_pg 17
    build_pg 18
    wait "$pgrx_pid"
    pgrx_init
    id postgres >/dev/null 2>&1 || as_root useradd --system --home-dir /var/lib/postgresql postgres
    log "ready: pg15 $(/usr/lib/postgresql/15/bin/pg_config --version), $("$PG_PREFIX"/pg17/bin/pg_config --version), $("$PG_PREFIX"/pg18/bin/pg_config --version)"
}

main "$@"
