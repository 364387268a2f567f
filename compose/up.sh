#!/usr/bin/env bash
# Start the whole deployment (7 dsyncd nodes + 3 Redis) with Docker Compose in one command:
# makes compose/.env with a random SHARED_MAC_KEY the first time, builds and starts everything,
# waits until every node is healthy, and copies the deployment's CA to compose/ca.crt.
#   compose/up.sh            start (or update) the deployment
#   compose/up.sh down       stop it (add -v to also remove the volumes: certificates, data)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
if docker compose version >/dev/null 2>&1; then dc=(docker compose); else dc=(docker-compose); fi

if [ "${1:-}" = "down" ]; then
  shift
  exec "${dc[@]}" down "$@"
fi

if [ ! -f .env ]; then
  key=$(openssl rand -hex 32)
  sed "s/^SHARED_MAC_KEY=.*/SHARED_MAC_KEY=$key/" .env.example > .env
  chmod 600 .env
  echo "up.sh: made compose/.env with a new random SHARED_MAC_KEY"
fi

# Without a registry (images can be neither found nor pulled), build the base and Redis images
# locally from the distribution's mirror, as the tests do.
have() { docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null 2>&1; }
if ! grep -q '^REDIS_IMAGE=' .env && { ! have debian:bookworm-slim || ! have redis:7-bookworm; }; then
  echo "up.sh: no image registry answers: building the base and Redis images locally"
  img=$("$here/build-base-image.sh" | tail -n 1)
  img=${img#REDIS_IMAGE=}
  echo "REDIS_IMAGE=$img" >> .env
fi

"${dc[@]}" up --build -d

services=(node1 node2 node3 queue-node-1 cache-node-1 cache-node-2 cache-node-3)
deadline=$((SECONDS + ${DSYNC_UP_TIMEOUT:-120}))
for s in "${services[@]}"; do
  while :; do
    id=$("${dc[@]}" ps -q "$s")
    state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || echo starting)
    [ "$state" = healthy ] && break
    if [ $SECONDS -ge $deadline ]; then
      echo "up.sh: $s is not healthy ($state); its log:" >&2
      "${dc[@]}" logs --tail 30 "$s" >&2
      exit 1
    fi
    sleep 1
  done
done
"${dc[@]}" run --rm -T --entrypoint cat certs /certs/ca.crt > ca.crt
(umask 077 && "${dc[@]}" run --rm -T --entrypoint cat certs /certs/writer.token > writer.token)
cat <<TXT
up.sh: every node is healthy.  Client auth is on (tokens: docker compose logs certs).
  TOKEN=\$(cat compose/writer.token)
  curl --cacert compose/ca.crt -H "Authorization: Bearer \$TOKEN" https://localhost:8001/status  # lock
  curl --cacert compose/ca.crt https://localhost:9101/health          # queue
  curl --cacert compose/ca.crt https://localhost:10001/health         # cache (10001-10003)
  compose/up.sh down                                                  # stop (down -v: remove data)
TXT
