#!/usr/bin/env bash
# Make the deployment's certificates with the openssl CLI: a CA, one key+cert per node and an operator
# client certificate, plus the shared MAC key.  Idempotent: files that are already valid are kept.
#
# usage: certs/gen-certs.sh OUTDIR [EXTRA_NODE_NAME...]
#
#   OUTDIR/ca.crt, ca.key            the deployment's CA (EC P-256, 10 years)
#   OUTDIR/<name>.crt, <name>.key    one per node: node1 node2 node3 queue-node-1 cache-node-1..3 and
#                                    every EXTRA_NODE_NAME; EC P-256, serverAuth+clientAuth, SANs
#                                    DNS:<name>, DNS:localhost, IP:127.0.0.1, IP:::1
#   OUTDIR/admin.crt, admin.key      operator client certificate (CN=admin, clientAuth only)
#   OUTDIR/mac.key                   shared MAC key for peer requests (64 hex characters), if missing
#
# Extra nodes are remembered: every <name>.crt already in OUTDIR is checked (and remade) as a node.
# A file is remade only when it is missing or no longer valid (unreadable, key and certificate do not
# match, not signed by the CA, wrong names or usages, or expiring within 30 days); remaking the CA
# remakes every certificate.  Keys are mode 0600.  If DSYNC_CERTS_OWNER (uid:gid) is set, every file is
# given to that owner, for containers whose service runs as a non-root user.
set -euo pipefail

readonly NODES=(node1 node2 node3 queue-node-1 cache-node-1 cache-node-2 cache-node-3)
readonly CA_DAYS=3650 LEAF_DAYS=825 RENEW_SECONDS=$((30 * 24 * 3600))

die() { echo "gen-certs: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: $0 OUTDIR [EXTRA_NODE_NAME...]"
case "$1" in -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"

OUT=$1
shift
HOSTNAME_RE='^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$'
names=("${NODES[@]}")
for n in "$@"; do
    [[ $n =~ $HOSTNAME_RE ]] || die "'$n' is not a valid host name"
    [[ $n != admin && $n != ca && $n != mac ]] || die "'$n' is reserved"
    [[ " ${names[*]} " == *" $n "* ]] || names+=("$n")
done
# Nodes added on an earlier run stay managed (so a new CA re-signs them too).
for f in "$OUT"/*.crt; do
    [ -e "$f" ] || continue
    n=$(basename "$f" .crt)
    [[ $n =~ $HOSTNAME_RE && $n != ca && $n != admin && " ${names[*]} " != *" $n "* ]] && names+=("$n")
done

mkdir -p "$OUT"
[ -w "$OUT" ] || die "$OUT is not writable"
umask 077
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gen-certs.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
changed=0

say() { printf '  %-8s %s\n' "$1" "$2"; }

# Public key of a private key file / of a certificate, for the "do they match" test.
key_pub() { openssl pkey -in "$1" -pubout 2>/dev/null; }
crt_pub() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }

pair_ok() { # CRT KEY: both readable, matching, not expiring soon
    [ -s "$1" ] && [ -s "$2" ] || return 1
    local a b
    a=$(key_pub "$2") && b=$(crt_pub "$1") || return 1
    [ -n "$a" ] && [ "$a" = "$b" ] || return 1
    openssl x509 -in "$1" -noout -checkend "$RENEW_SECONDS" >/dev/null 2>&1
}

ca_ok() {
    pair_ok "$OUT/ca.crt" "$OUT/ca.key" &&
        openssl x509 -in "$OUT/ca.crt" -noout -ext basicConstraints 2>/dev/null | grep -q 'CA:TRUE'
}

leaf_ok() { # NAME PURPOSE... : matches its key, signed by the CA, good for each purpose
    local name=$1 p
    shift
    pair_ok "$OUT/$name.crt" "$OUT/$name.key" || return 1
    for p in "$@"; do
        openssl verify -CAfile "$OUT/ca.crt" -purpose "$p" "$OUT/$name.crt" >/dev/null 2>&1 || return 1
    done
}

node_ok() { # the SANs must name the node, localhost and both loopback addresses
    leaf_ok "$1" sslserver sslclient || return 1
    local san
    san=$(openssl x509 -in "$OUT/$1.crt" -noout -ext subjectAltName 2>/dev/null) || return 1
    local want
    for want in "DNS:$1" "DNS:localhost" "IP Address:127.0.0.1" "IP Address:0:0:0:0:0:0:0:1"; do
        [[ $san == *"$want"* ]] || return 1
    done
}

install_file() { # TMPFILE DEST MODE
    chmod "$3" "$1"
    mv -f "$1" "$2"
}

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# A minimal openssl config: -subj gives the names, the [ext] section the extensions.
write_conf() { # FILE EXTENSIONS
    printf '[req]\ndistinguished_name = dn\n[dn]\n[ext]\n%s\n' "$2" >"$1"
}

readonly CA_EXT="basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always"

make_ca() {
    new_key "$TMP/ca.key" || die "CA: key generation failed"
    write_conf "$TMP/ca.cnf" "$CA_EXT"
    openssl req -new -x509 -key "$TMP/ca.key" -subj "/O=dsyncd/CN=dsyncd CA" -days "$CA_DAYS" \
        -sha256 -set_serial "0x$(openssl rand -hex 15)" -config "$TMP/ca.cnf" -extensions ext \
        -out "$TMP/ca.crt" 2>"$TMP/err" || die "CA: $(cat "$TMP/err")"
    install_file "$TMP/ca.key" "$OUT/ca.key" 0600
    install_file "$TMP/ca.crt" "$OUT/ca.crt" 0644
}

# make_leaf NAME CN EXTENSIONS: a new key and a certificate signed by the CA.
make_leaf() {
    local name=$1 cn=$2 ext=$3
    new_key "$TMP/$name.key" || die "$name: key generation failed"
    write_conf "$TMP/$name.cnf" "$ext"
    openssl req -new -key "$TMP/$name.key" -subj "/O=dsyncd/CN=$cn" -config "$TMP/$name.cnf" \
        -out "$TMP/$name.csr" 2>"$TMP/err" || die "$name: $(cat "$TMP/err")"
    openssl x509 -req -in "$TMP/$name.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" \
        -set_serial "0x$(openssl rand -hex 15)" -days "$LEAF_DAYS" -sha256 \
        -extfile "$TMP/$name.cnf" -extensions ext -out "$TMP/$name.crt" 2>"$TMP/err" ||
        die "$name: $(cat "$TMP/err")"
    install_file "$TMP/$name.key" "$OUT/$name.key" 0600
    install_file "$TMP/$name.crt" "$OUT/$name.crt" 0644
}

node_ext() {
    printf '%s\n' "basicConstraints = critical, CA:FALSE" \
        "keyUsage = critical, digitalSignature, keyEncipherment" \
        "extendedKeyUsage = serverAuth, clientAuth" \
        "subjectKeyIdentifier = hash" \
        "authorityKeyIdentifier = keyid" \
        "subjectAltName = DNS:$1, DNS:localhost, IP:127.0.0.1, IP:::1"
}

readonly ADMIN_EXT="basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid"

fix_key_mode() { # keep kept keys private
    local f=$1
    if [ -n "$(find "$f" -perm /077 2>/dev/null)" ]; then
        chmod 0600 "$f"
        say "chmod" "$f 0600"
        changed=1
    fi
}

echo "certificates in $OUT:"
if ca_ok; then
    say "kept" "ca.crt ca.key"
else
    make_ca
    say "created" "ca.crt ca.key (CA: O=dsyncd, CN=dsyncd CA)"
    changed=1
fi
fix_key_mode "$OUT/ca.key"

for n in "${names[@]}"; do
    if node_ok "$n"; then
        say "kept" "$n.crt $n.key"
    else
        make_leaf "$n" "$n" "$(node_ext "$n")"
        say "created" "$n.crt $n.key (SAN DNS:$n, DNS:localhost, IP:127.0.0.1, IP:::1)"
        changed=1
    fi
    fix_key_mode "$OUT/$n.key"
done

if leaf_ok admin sslclient; then
    say "kept" "admin.crt admin.key"
else
    make_leaf admin admin "$ADMIN_EXT"
    say "created" "admin.crt admin.key (operator client certificate, CN=admin)"
    changed=1
fi
fix_key_mode "$OUT/admin.key"

if [ -e "$OUT/mac.key" ]; then
    len=$(tr -d '\r\n' <"$OUT/mac.key" | wc -c)
    [ "$len" -ge 16 ] || die "$OUT/mac.key holds $len bytes; the MAC key needs at least 16 (remove it to make a new one)"
    say "kept" "mac.key"
else
    openssl rand -hex 32 >"$TMP/mac.key"
    install_file "$TMP/mac.key" "$OUT/mac.key" 0600
    say "created" "mac.key (shared MAC key, 64 hex characters)"
    changed=1
fi
fix_key_mode "$OUT/mac.key"

if [ -n "${DSYNC_CERTS_OWNER:-}" ]; then
    chown "$DSYNC_CERTS_OWNER" "$OUT"/ca.crt "$OUT"/ca.key "$OUT"/admin.* "$OUT"/mac.key
    for n in "${names[@]}"; do chown "$DSYNC_CERTS_OWNER" "$OUT/$n.crt" "$OUT/$n.key"; done
fi
[ "$changed" = 1 ] && echo "done." || echo "nothing to do: every file is valid."
