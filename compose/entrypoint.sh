#!/bin/sh
# Entrypoint of the dsyncd image: exec dsyncd with the container's arguments.
#
# With DSYNC_AUTO_NAME=PREFIX (the scalable `cache-node` and `queue-node` services of
# compose/docker-compose.yml) the node takes its identity from the container's host name H, which
# Docker resolves on the compose network: node id PREFIX-H, advertised as https://H:$INTERNAL_PORT,
# with a certificate for H signed by the deployment's CA in /certs (certs/gen-certs.sh, which keeps
# every file that is still valid).
set -eu

if [ -n "${DSYNC_AUTO_NAME:-}" ]; then
    host=$(hostname)
    if [ -z "${INTERNAL_PORT:-}" ]; then
        echo "dsyncd-entrypoint: DSYNC_AUTO_NAME needs INTERNAL_PORT (the port to listen on)" >&2
        exit 2
    fi
    gen-certs.sh /certs "$host" >/dev/null
    export DSYNCD_NODE_ID="$DSYNC_AUTO_NAME-$host"
    export DSYNCD_NODE_ADVERTISE_URL="https://$host:$INTERNAL_PORT"
    export DSYNCD_TLS_CERT="/certs/$host.crt"
    export DSYNCD_TLS_KEY="/certs/$host.key"
fi
exec dsyncd "$@"
