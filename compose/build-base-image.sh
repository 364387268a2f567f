#!/usr/bin/env bash
# For tests and CI on a machine whose Docker Engine reaches no image registry: build the local base
# image the Dockerfile starts FROM (debian:bookworm-slim) with debootstrap from this machine's own apt
# mirror, and a Redis image from it, unless images with those tags exist already.  A user with a
# registry never needs this script: compose/Dockerfile and compose/docker-compose.yml stay unchanged.
#
# usage: compose/build-base-image.sh [--force]
#
#   debian:bookworm-slim   `debootstrap --variant=minbase bookworm` from the mirror named in this
#                          machine's apt sources (/etc/apt/sources.list.d/*.sources, else
#                          /etc/apt/sources.list), read at run time, then `docker import`.
#   $DSYNC_REDIS_IMAGE     (default dsyncd-redis:bookworm) Debian's redis-server on that base, the
#                          image to give docker compose as REDIS_IMAGE when redis:7-bookworm cannot
#                          be pulled.  It is not built when an image with that tag exists.
#
# --force rebuilds both.  Needs root (debootstrap) and a Docker daemon; installs debootstrap with
# apt-get when it is missing.  Prints the REDIS_IMAGE to use as its last line.
set -euo pipefail

readonly BASE=debian:bookworm-slim SUITE=bookworm
REDIS_IMAGE=${DSYNC_REDIS_IMAGE:-dsyncd-redis:bookworm}
force=0
case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

die() { echo "build-base-image: $*" >&2; exit 1; }
say() { echo "build-base-image: $*" >&2; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The first http(s) URI of a source that serves SUITE itself (not -security or -updates).
mirror_from_deb822() {
    awk -v suite="$SUITE" '
        function flush() {
            if (uri != "" && (" " suites " ") ~ (" " suite " ") && types ~ /(^| )deb( |$)/) { print uri; found = 1; exit }
            uri = ""; suites = ""; types = ""
        }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        tolower($1) == "uris:"   { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\//) { uri = $i; break } }
        tolower($1) == "suites:" { $1 = ""; suites = $0 }
        tolower($1) == "types:"  { $1 = ""; types = $0 }
        END { if (!found) flush() }' "$@"
}

mirror_from_list() {
    awk -v suite="$SUITE" '$1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($i ~ /^https?:\/\// && $(i + 1) == suite) { print $i; exit } }' "$@"
}

find_mirror() {
    local m="" f
    shopt -s nullglob
    local sources=(/etc/apt/sources.list.d/*.sources)
    local lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    shopt -u nullglob
    [ ${#sources[@]} -gt 0 ] && m=$(mirror_from_deb822 "${sources[@]}")
    if [ -z "$m" ]; then
        for f in "${lists[@]}"; do
            [ -r "$f" ] && m=$(mirror_from_list "$f") && [ -n "$m" ] && break
        done
    fi
    [ -n "$m" ] || die "no apt source for '$SUITE' in /etc/apt/sources.list{,.d/}: cannot tell the mirror"
    echo "${m%/}"
}

build_base() {
    [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
            die "apt-get install debootstrap failed"
    fi
    local mirror root
    mirror=$(find_mirror)
    root=$(mktemp -d "${TMPDIR:-/tmp}/dsyncd-rootfs.XXXXXX")
    # shellcheck disable=SC2064  # expand root now: the trap runs after this function returns
    trap "rm -rf '$root'" EXIT
    say "debootstrap $SUITE from $mirror (about a minute)"
    debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 ||
        { tail -n 20 "$root.log" >&2; rm -f "$root.log"; die "debootstrap failed"; }
    rm -f "$root.log"
    # What the official slim image also leaves out: package lists, caches, logs.
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
        "$root"/tmp/* "$root"/root/.bash_history
    printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$SUITE" "$mirror" "$SUITE" \
        >"$root/etc/apt/sources.list"
    tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$BASE" >/dev/null
    rm -rf "$root"
    trap - EXIT
    say "built $BASE"
}

# Debian's redis-server on the base, started like the official image: `redis-server` as user redis,
# data in /data.
build_redis() {
    local ctx
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/dsyncd-redis.XXXXXX")
    cat >"$ctx/Dockerfile" <<EOF
FROM $BASE
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /data && chown redis:redis /data
VOLUME /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
EOF
    say "building $REDIS_IMAGE"
    if ! docker build -t "$REDIS_IMAGE" "$ctx" >"$ctx.log" 2>&1; then
        tail -n 20 "$ctx.log" >&2
        rm -rf "$ctx" "$ctx.log"
        die "docker build of $REDIS_IMAGE failed"
    fi
    rm -rf "$ctx" "$ctx.log"
    say "built $REDIS_IMAGE"
}

docker info >/dev/null 2>&1 || die "no Docker daemon answers (docker info failed)"
if [ "$force" = 1 ] || ! have_image "$BASE"; then build_base; else say "$BASE exists"; fi
if [ "$force" = 1 ] || ! have_image "$REDIS_IMAGE"; then build_redis; else say "$REDIS_IMAGE exists"; fi
echo "REDIS_IMAGE=$REDIS_IMAGE"
