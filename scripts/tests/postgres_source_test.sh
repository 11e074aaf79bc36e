#!/usr/bin/env bash
# Tests scripts/postgres_source.sh without the network: a fake Debian archive (a source index and a pool, files on
# disk served on loopback) where the index is ahead of the pool, the pinned file is missing, a checksum is wrong,
# the cache holds a damaged file or nothing answers; and the mirror read from both apt configuration formats.
# Prints "postgres source selection: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$root"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "  ok: $1"; }
not_ok() { failed=$((failed + 1)); echo "  FAILED: $1"; [ -n "${2:-}" ] && sed 's/^/      /' "$2"; }

archive="$root/archive"   # served over HTTP
pool="$archive/pool/main/p/postgresql-17"
mkdir -p "$pool"

make_tarball() { head -c 4096 /dev/urandom >"$1"; }  # content is never unpacked here
make_tarball "$root/pinned.tar.bz2"
make_tarball "$root/newer.tar.bz2"
pinned_sha=$(sha256sum "$root/pinned.tar.bz2" | cut -d' ' -f1)
newer_sha=$(sha256sum "$root/newer.tar.bz2" | cut -d' ' -f1)
pinned_file=postgresql-17_17.1.orig.tar.bz2
newer_file=postgresql-17_17.2.orig.tar.bz2

printf '17 17.1 %s %s\n' "$pinned_file" "$pinned_sha" >"$root/pins"

# index SUITE VERSION FILE SHA: a Sources index naming postgresql-17 at VERSION (with an unrelated package first).
index() {
    mkdir -p "$archive/dists/$1/main/source"
    cat <<EOF | xz -c >"$archive/dists/$1/main/source/Sources.xz"
Package: postgresql-common
Version: 280
Directory: pool/main/p/postgresql-common
Checksums-Sha256:
 0000000000000000000000000000000000000000000000000000000000000000 100 postgresql-common_280.tar.xz

Package: postgresql-17
Binary: postgresql-17
Version: $2
Directory: pool/main/p/postgresql-17
Files:
 d41d8cd98f00b204e9800998ecf8427e 4096 $3
Checksums-Sha256:
 $4 4096 $3
 1111111111111111111111111111111111111111111111111111111111111111 30000 postgresql-17_$2.debian.tar.xz
Testsuite: autopkgtest
EOF
}
# Two suites: the older names the pinned version, the newer one is ahead of the pool.
index trixie 17.1-1 "$pinned_file" "$pinned_sha"
index sid 17.2-1 "$newer_file" "$newer_sha"

port_file="$root/port"
python3 - "$archive" "$port_file" <<'PY' &
import functools, http.server, sys
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=sys.argv[1]))
open(sys.argv[2], "w").write(str(srv.server_address[1]))
srv.serve_forever()
PY
server=$!
for _ in $(seq 100); do [ -s "$port_file" ] && break; sleep 0.05; done
mirror="http://127.0.0.1:$(cat "$port_file")"

# run_case NAME: postgres_source 17 in a subshell with a fresh (or the given) cache; output in $root/NAME.out.
run_case() {
    local name=$1 cache=${2:-$root/cache-$1}
    (
        export PGFORCE_CACHE=$cache PGFORCE_PG_PINS=$root/pins PGFORCE_DEBIAN_MIRROR=${MIRROR:-$mirror}
        export PGFORCE_SOURCE_SUITES="trixie sid"
        source scripts/postgres_source.sh
        postgres_source 17 && echo "SOURCE=$POSTGRES_SOURCE"
    ) >"$root/$name.out" 2>&1
}
source_of() { sed -n 's/^SOURCE=//p' "$root/$1.out"; }

echo "postgres source selection"

# 1. The index is ahead of the pool (sid names 17.2, the pool has only 17.1): the pinned file is used.
cp "$root/pinned.tar.bz2" "$pool/$pinned_file"
if run_case ahead && [ "$(source_of ahead)" = "$root/cache-ahead/src/$pinned_file" ] &&
    cmp -s "$root/cache-ahead/src/$pinned_file" "$root/pinned.tar.bz2"; then
    ok "index ahead of the pool: the pinned file from the pool is used"
else not_ok "index ahead of the pool" "$root/ahead.out"; fi

# 2. With the pinned file cached, nothing is downloaded (the archive is unreachable).
if MIRROR=http://127.0.0.1:9 run_case cached "$root/cache-ahead" &&
    [ "$(source_of cached)" = "$root/cache-ahead/src/$pinned_file" ]; then
    ok "a cached pinned file is used without the network"
else not_ok "cached pinned file" "$root/cached.out"; fi

# 3. A damaged cached file is set aside and fetched again.
echo damaged >"$root/cache-ahead/src/$pinned_file"
if run_case damaged "$root/cache-ahead" && cmp -s "$root/cache-ahead/src/$pinned_file" "$root/pinned.tar.bz2" &&
    [ -f "$root/cache-ahead/src/$pinned_file.bad" ] && grep -q 'does not match its pinned SHA-256' "$root/damaged.out"; then
    ok "a damaged cached file is set aside and downloaded again"
else not_ok "damaged cache" "$root/damaged.out"; fi

# 4. The pinned file is gone from the pool; the index's newest version is there: used, with a warning naming it.
rm "$pool/$pinned_file"
cp "$root/newer.tar.bz2" "$pool/$newer_file"
if run_case fallback && [ "$(source_of fallback)" = "$root/cache-fallback/src/$newer_file" ] &&
    grep -q "using $newer_file (17.2-1)" "$root/fallback.out" &&
    [ "$(cat "$root/cache-fallback/src/$newer_file.sha256")" = "$newer_sha" ]; then
    ok "pinned file missing: the index's newest version is used, verified, with a warning naming it"
else not_ok "fallback to the index" "$root/fallback.out"; fi

# 5. ...and that verified fallback is reused from the cache on the next run, without the network.
if MIRROR=http://127.0.0.1:9 run_case fallback-cached "$root/cache-fallback" &&
    [ "$(source_of fallback-cached)" = "$root/cache-fallback/src/$newer_file" ]; then
    ok "a verified fallback is reused from the cache"
else not_ok "cached fallback" "$root/fallback-cached.out"; fi

# 6. Neither the pinned file nor the index's version is served: the error lists each URL with its status and the
#    file to drop into the cache.
rm "$pool/$newer_file"
if ! run_case missing &&
    grep -q "/pool/main/p/postgresql-17/$pinned_file -> HTTP 404" "$root/missing.out" &&
    grep -q "/pool/main/p/postgresql-17/$newer_file -> HTTP 404" "$root/missing.out" &&
    grep -q "/dists/sid/main/source/Sources.xz -> HTTP 200" "$root/missing.out" &&
    grep -q "put $pinned_file (SHA-256 $pinned_sha) into $root/cache-missing/src/" "$root/missing.out" &&
    [ -z "$(ls "$root/cache-missing/src")" ]; then
    ok "nothing served: the error names every URL tried, its status, and the file to put into the cache"
else not_ok "nothing served" "$root/missing.out"; fi

# 7. The pool serves a file whose checksum is wrong (and the index names the same file): refused, nothing cached.
cp "$root/newer.tar.bz2" "$pool/$pinned_file"
index sid 17.1-2 "$pinned_file" "$pinned_sha"
if ! run_case badsum && grep -q "SHA-256 $newer_sha, expected $pinned_sha (discarded)" "$root/badsum.out" &&
    [ ! -e "$root/cache-badsum/src/$pinned_file" ]; then
    ok "a wrong checksum is refused and nothing is cached"
else not_ok "wrong checksum" "$root/badsum.out"; fi

# 8. The index's fallback file has the wrong checksum too: refused.
rm "$pool/$pinned_file"
index sid 17.2-1 "$newer_file" "$pinned_sha"
cp "$root/newer.tar.bz2" "$pool/$newer_file"
if ! run_case badindex && grep -q "$newer_file -> HTTP 200 but SHA-256 $newer_sha, expected $pinned_sha" "$root/badindex.out" &&
    [ ! -e "$root/cache-badindex/src/$newer_file" ]; then
    ok "a fallback whose checksum differs from the index's is refused"
else not_ok "fallback with a wrong checksum" "$root/badindex.out"; fi

# 9. No answer at all: the error says so for each URL.
if ! MIRROR=http://127.0.0.1:9 run_case offline && grep -q "$pinned_file -> no answer" "$root/offline.out"; then
    ok "no network: each URL is reported with no answer"
else not_ok "no network" "$root/offline.out"; fi

# 10. The mirror comes from the machine's apt configuration, in either format, as apt reads it.
apt_case() {
    local name=$1 dir="$root/apt-$1"
    (
        source scripts/postgres_source.sh
        debian_mirror bookworm -oDir::Etc::SourceList="$dir/sources.list" -oDir::Etc::SourceParts="$dir/parts" \
            -oDir::State::Lists="$dir/lists" -oAPT::Sandbox::User=root
    )
}
mkdir -p "$root/apt-oneline/parts" "$root/apt-oneline/lists/partial" "$root/apt-deb822/parts" "$root/apt-deb822/lists/partial"
cat >"$root/apt-oneline/sources.list" <<'EOF'
# comment
deb http://security.mirror.test/debian-security bookworm-security main
deb [arch=amd64] http://archive.mirror.test/debian/ bookworm main contrib
deb http://archive.mirror.test/debian/ bookworm-updates main
EOF
: >"$root/apt-deb822/sources.list"
cat >"$root/apt-deb822/parts/off.sources" <<'EOF'
Types: deb
URIs: http://disabled.mirror.test/debian
Suites: bookworm
Components: main
Enabled: no
EOF
cat >"$root/apt-deb822/parts/debian.sources" <<'EOF'
Types: deb
URIs: https://other.mirror.test/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://other.mirror.test/debian-security
Suites: bookworm-security
Components: main
EOF
got=$(apt_case oneline)
[ "$got" = http://archive.mirror.test/debian ] && ok "mirror from a one-line sources.list: $got" ||
    not_ok "mirror from a one-line sources.list: got '$got'"
got=$(apt_case deb822)
[ "$got" = https://other.mirror.test/debian ] && ok "mirror from deb822 .sources (a disabled entry skipped): $got" ||
    not_ok "mirror from deb822 .sources: got '$got'"

echo "postgres source selection: $passed passed, $failed failed"
[ "$failed" = 0 ]
