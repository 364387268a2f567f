#!/usr/bin/env bash
# Make the deployment's client tokens next to its certificates: a bearer token per identity and the
# tokens file dsyncd reads ([auth] tokens_file), which holds only their SHA-256.  Idempotent: an
# existing tokens file is kept (delete it to make new tokens; SIGHUP makes running nodes reload it).
#
# usage: certs/gen-tokens.sh OUTDIR
#
#   OUTDIR/tokens          name roles scope sha256 lines (net/authz.h documents the format):
#                            admin   admin   *  <sha256>   (also the CN of admin.crt)
#                            writer  writer  *  <sha256>
#                            reader  reader  *  <sha256>
#   OUTDIR/<name>.token    the bearer token itself (64 hex characters, mode 0600)
#
# The tokens are printed once, when they are made.  If DSYNC_CERTS_OWNER (uid:gid) is set, every file
# is given to that owner.
set -euo pipefail

die() { echo "gen-tokens: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
case "$1" in -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
OUT=$1
mkdir -p "$OUT"
[ -w "$OUT" ] || die "$OUT is not writable"
if [ -s "$OUT/tokens" ]; then
    echo "  kept     $OUT/tokens (delete it to make new tokens)"
    exit 0
fi
umask 077
TMP=$(mktemp "$OUT/.tokens.XXXXXX")
trap 'rm -f "$TMP"' EXIT
echo "# name roles scope sha256-of-token (made by certs/gen-tokens.sh; the tokens are in <name>.token)" >"$TMP"
for spec in "admin admin" "writer writer" "reader reader"; do
    set -- $spec
    token=$(openssl rand -hex 32)
    hash=$(printf '%s' "$token" | openssl dgst -sha256 -r | cut -d' ' -f1)
    printf '%s\n' "$token" >"$OUT/$1.token"
    printf '%-8s %-8s * %s\n' "$1" "$2" "$hash" >>"$TMP"
    echo "  created  $OUT/$1.token: $1 ($2) token $token"
done
chmod 0644 "$TMP"
mv "$TMP" "$OUT/tokens"
trap - EXIT
if [ -n "${DSYNC_CERTS_OWNER:-}" ]; then
    chown "$DSYNC_CERTS_OWNER" "$OUT/tokens" "$OUT"/*.token
fi
echo "  created  $OUT/tokens"
