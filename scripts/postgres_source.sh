# Finds a verified upstream PostgreSQL source tarball for one major version, as scripts/setup.sh needs it.
# Sourced, not run. Order: the cache, the pinned file from Debian's pool, the newest version Debian's source index
# names; every file is checked against a SHA-256 (the pin's, or the index's for an unpinned version) before use.
# No step assumes that the index and the pool agree: the index can name a version the pool does not serve yet.
#
# Settings (environment):
#   PGFORCE_CACHE          cache root; tarballs live in $PGFORCE_CACHE/src      (default /var/cache/pgforce)
#   PGFORCE_PG_PINS        the manifest                                      (default scripts/postgres.pins)
#   PGFORCE_DEBIAN_MIRROR  Debian archive base URL        (default: derived from the machine's apt configuration)
#   PGFORCE_SOURCE_SUITES  suites whose source index is read                    (default "trixie sid")

PGFORCE_CACHE=${PGFORCE_CACHE:-/var/cache/pgforce}
PGFORCE_PG_PINS=${PGFORCE_PG_PINS:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/postgres.pins}
PGFORCE_SOURCE_SUITES=${PGFORCE_SOURCE_SUITES:-trixie sid}

src_note() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }
src_warn() { printf '\033[1;33m[setup] warning:\033[0m %s\n' "$*" >&2; }
src_error() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; }

# debian_mirror CODENAME [apt-get options...]: the base URL of the Debian archive that serves CODENAME in the machine's
# apt configuration. apt itself parses the configuration, so one-line sources.list entries and deb822 .sources files
# (including `Enabled: no`) count exactly as apt counts them.
debian_mirror() {
    local codename=$1
    shift
    apt-get --print-uris "$@" update 2>/dev/null |
        sed -n "s|^'\(.*\)/dists/$codename/InRelease'.*|\1|p" | head -1
}

# pin_field MAJOR FIELD: 2 = version, 3 = tarball, 4 = sha256 of the manifest line for MAJOR.
pin_field() {
    awk -v m="$1" -v f="$2" '$1 == m && $0 !~ /^#/ { print $f; exit }' "$PGFORCE_PG_PINS"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Attempts are remembered for the final error message: "URL -> outcome".
declare -a SRC_TRIED=()

# fetch_url URL DEST: download; sets FETCH_STATUS to the HTTP status (or a reason) and succeeds only on 200.
fetch_url() {
    local url=$1 dest=$2 code rc=0
    code=$(curl -sS -L --connect-timeout 20 --retry 2 -o "$dest" -w '%{http_code}' "$url" 2>/dev/null) || rc=$?
    if [ "$rc" != 0 ] && [ "${code:-000}" = 000 ]; then
        FETCH_STATUS="no answer (curl exit $rc)"
    else
        FETCH_STATUS="HTTP $code"
    fi
    SRC_TRIED+=("$url -> $FETCH_STATUS")
    [ "$rc" = 0 ] && [ "$code" = 200 ]
}

# download_verified URL FILE SHA256: fetch URL into the cache as FILE if its checksum matches.
download_verified() {
    local url=$1 file=$2 want=$3 dir="$PGFORCE_CACHE/src"
    local part="$dir/$file.part"
    mkdir -p "$dir"
    if ! fetch_url "$url" "$part"; then
        rm -f "$part"
        return 1
    fi
    local got
    got=$(sha256_of "$part")
    if [ "$got" != "$want" ]; then
        SRC_TRIED[${#SRC_TRIED[@]} - 1]="$url -> HTTP 200 but SHA-256 $got, expected $want (discarded)"
        src_warn "$file from $url has SHA-256 $got, expected $want; discarded"
        rm -f "$part"
        return 1
    fi
    mv "$part" "$dir/$file"
}

# index_newest MAJOR MIRROR: sets INDEX_NEWEST to "version directory tarball sha256" of the newest postgresql-MAJOR
# the source indexes of PGFORCE_SOURCE_SUITES name (empty if none).
index_newest() {
    local major=$1 mirror=$2 suite tmp best="" line
    tmp=$(mktemp -d)
    for suite in $PGFORCE_SOURCE_SUITES; do
        local got=""
        if fetch_url "$mirror/dists/$suite/main/source/Sources.xz" "$tmp/Sources.xz"; then
            got=$(xz -dc "$tmp/Sources.xz" 2>/dev/null) || got=""
        elif fetch_url "$mirror/dists/$suite/main/source/Sources.gz" "$tmp/Sources.gz"; then
            got=$(gzip -dc "$tmp/Sources.gz" 2>/dev/null) || got=""
        fi
        [ -n "$got" ] || continue
        # One line per stanza of the package: "<debian version> <directory> <orig tarball> <sha256>".
        while read -r line; do
            [ -n "$line" ] || continue
            if [ -z "$best" ] || dpkg --compare-versions "${line%% *}" gt "${best%% *}"; then best=$line; fi
        done < <(printf '%s\n' "$got" | awk -v pkg="postgresql-$major" '
            /^$/ { if (p && v != "" && t != "") print v, d, t, s; p = 0; v = d = t = s = ""; sums = 0; next }
            /^Package: / { p = ($2 == pkg) }
            p && /^Version: / { v = $2 }
            p && /^Directory: / { d = $2 }
            p && /^Checksums-Sha256:/ { sums = 1; next }
            p && /^[^ ]/ { sums = 0 }
            p && sums && $3 ~ /\.orig\.tar\./ { s = $1; t = $3 }
            END { if (p && v != "" && t != "") print v, d, t, s }')
    done
    rm -rf "$tmp"
    INDEX_NEWEST=$best
}

# postgres_source MAJOR: sets POSTGRES_SOURCE to the path of a verified source tarball for PostgreSQL MAJOR, or fails
# with a message that lists every URL tried and the file to put into the cache by hand.
postgres_source() {
    local major=$1 dir="$PGFORCE_CACHE/src"
    local version tarball sha
    version=$(pin_field "$major" 2)
    tarball=$(pin_field "$major" 3)
    sha=$(pin_field "$major" 4)
    if [ -z "$tarball" ] || [ -z "$sha" ]; then
        src_warn "no pin for PostgreSQL $major in $PGFORCE_PG_PINS"
        return 1
    fi
    SRC_TRIED=()
    POSTGRES_SOURCE=""
    mkdir -p "$dir"

    # 1. The cache: the pinned file, then an unpinned one verified earlier against the index (its .sha256 beside it).
    if [ -f "$dir/$tarball" ]; then
        if [ "$(sha256_of "$dir/$tarball")" = "$sha" ]; then
            POSTGRES_SOURCE="$dir/$tarball"
            return 0
        fi
        src_warn "$dir/$tarball does not match its pinned SHA-256; moved aside to $tarball.bad"
        mv -f "$dir/$tarball" "$dir/$tarball.bad"
    fi
    local cached
    for cached in "$dir"/postgresql-"$major"_*.orig.tar.*; do
        case $cached in *.part | *.bad | *.sha256) continue ;; esac
        [ -f "$cached" ] && [ -f "$cached.sha256" ] || continue
        if [ "$(sha256_of "$cached")" = "$(cat "$cached.sha256")" ]; then
            src_warn "using $(basename "$cached") from the cache, not the pinned $version (it was verified against Debian's source index)"
            POSTGRES_SOURCE=$cached
            return 0
        fi
    done

    # 2. The pinned file from Debian's pool.
    local mirror=${PGFORCE_DEBIAN_MIRROR:-}
    if [ -z "$mirror" ]; then
        local codename
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
        mirror=$(debian_mirror "$codename")
    fi
    mirror=${mirror%/}
    if [ -z "$mirror" ]; then
        src_warn "no Debian archive found in the machine's apt configuration (set PGFORCE_DEBIAN_MIRROR to its base URL)"
    else
        local pool="$mirror/pool/main/p/postgresql-$major"
        if download_verified "$pool/$tarball" "$tarball" "$sha"; then
            POSTGRES_SOURCE="$dir/$tarball"
            return 0
        fi

        # 3. The newest version Debian's source index names, verified against the index's checksum.
        index_newest "$major" "$mirror"
        if [ -n "$INDEX_NEWEST" ]; then
            local idx_version idx_dir idx_file idx_sha
            read -r idx_version idx_dir idx_file idx_sha <<<"$INDEX_NEWEST"
            if [ "$idx_file" = "$tarball" ]; then
                SRC_TRIED+=("(the source index names $idx_version, whose tarball is the pinned one tried above)")
            elif download_verified "$mirror/$idx_dir/$idx_file" "$idx_file" "$idx_sha"; then
                POSTGRES_SOURCE="$dir/$idx_file"
                echo "$idx_sha" >"$POSTGRES_SOURCE.sha256"
                src_warn "PostgreSQL $major: the pinned $tarball is not served; using $idx_file ($idx_version), named by Debian's source index and verified against its checksum. Pin it in scripts/postgres.pins."
                return 0
            fi
        else
            SRC_TRIED+=("(no readable source index of the suites $PGFORCE_SOURCE_SUITES names postgresql-$major)")
        fi
    fi

    {
        echo "could not get the source of PostgreSQL $major. Tried:"
        local t
        for t in "${SRC_TRIED[@]}"; do echo "    $t"; done
        echo "  To continue offline, put $tarball (SHA-256 $sha) into $dir/ and run again."
    } | while IFS= read -r l; do src_error "$l"; done
    return 1
}
