#!/usr/bin/env bash
# Grow (or shrink) the Docker Compose deployment of compose/docker-compose.yml.
#
# usage: compose/scale.sh cache N          N cache nodes in all (N >= 3): cache-node-1..3 plus N-3
#                                          replicas of the scalable `cache-node` service
#        compose/scale.sh queue N          N queue nodes in all (N >= 1), the same way
#        compose/scale.sh lock add         start node4 and make it a Raft voter: add it as a learner,
#                                          wait until it has caught up, promote it
#        compose/scale.sh lock remove      take node4 out of the Raft configuration and stop it
#
# Extra cache and queue nodes join through gossip on their own.  The lock commands speak the Raft
# membership API (POST /raft/members) with the operator certificate admin.crt from the certs volume,
# from inside the node1 container.  The compose command is $DSYNC_COMPOSE if set (split on spaces,
# e.g. "docker-compose -p demo --env-file /tmp/env -f compose/docker-compose.yml"), else
# `docker compose` (or docker-compose) with this directory's docker-compose.yml.
# DSYNC_SCALE_TIMEOUT (s, default 60) bounds each wait.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TIMEOUT=${DSYNC_SCALE_TIMEOUT:-60}
# Lock nodes of the deployment and their ports (conf/compose/node*.ini, node4 in the compose file).
declare -A LOCK_PORT=([node1]=8001 [node2]=8002 [node3]=8003 [node4]=8004)

die() { echo "scale: $*" >&2; exit 1; }
usage() { sed -n '4,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

if [ -n "${DSYNC_COMPOSE:-}" ]; then
    read -r -a COMPOSE <<<"$DSYNC_COMPOSE"
elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose -f "$HERE/docker-compose.yml")
else
    COMPOSE=(docker-compose -f "$HERE/docker-compose.yml")
fi
compose() { "${COMPOSE[@]}" "$@"; }

# curl inside node1 (it has curl, the CA and the operator certificate): ARGS...
admin_curl() {
    compose exec -T node1 curl -sS --max-time 5 --cacert /certs/ca.crt \
        --cert /certs/admin.crt --key /certs/admin.key "$@"
}

status_of() { admin_curl "https://$1:${LOCK_PORT[$1]}/status" 2>/dev/null || true; }
json_str() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }
json_num() { sed -n "s/.*\"$1\":\\([0-9][0-9]*\\).*/\\1/p"; }
json_list() { sed -n "s/.*\"$1\":\\[\\([^]]*\\)\\].*/\\1/p"; }

# wait_for WHAT COMMAND...: retry COMMAND every 0.5 s until it succeeds or TIMEOUT passes.
wait_for() {
    local what=$1 t0=$SECONDS
    shift
    until "$@"; do
        [ $((SECONDS - t0)) -lt "$TIMEOUT" ] || die "gave up after ${TIMEOUT}s waiting until $what"
        sleep 0.5
    done
}

leader() {
    local n l
    for n in node1 node2 node3 node4; do
        l=$(status_of "$n" | json_str leader)
        [ -n "$l" ] && [ "$l" != none ] && { echo "$l"; return 0; }
    done
    return 1
}

# members OP: POST {"op":OP,"id":"node4",...} to the leader; 202 means proposed.
members() {
    local body="{\"op\":\"$1\",\"id\":\"node4\"}" l code
    [ "$1" = add ] && body="{\"op\":\"add\",\"id\":\"node4\",\"url\":\"https://node4:8004\"}"
    l=$(leader) || return 1
    code=$(admin_curl -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        -d "$body" "https://$l:${LOCK_PORT[$l]}/raft/members" 2>/dev/null) || return 1
    [ "$code" = 202 ]
}

in_list() { # LIST-NAME NODE ON-NODE: NODE is in /status's LIST-NAME as seen by ON-NODE
    status_of "$3" | json_list "$1" | grep -q "\"$2\""
}
learner_on_leader() { local l; l=$(leader) && in_list learners node4 "$l"; }
voter_on_leader() { local l; l=$(leader) && in_list voters node4 "$l"; }
gone_from_leader() {
    local l s
    l=$(leader) && s=$(status_of "$l") && [ -n "$s" ] &&
        ! json_list voters <<<"$s" | grep -q '"node4"' &&
        ! json_list learners <<<"$s" | grep -q '"node4"'
}
caught_up() { # node4 has applied what the leader had committed when it was added
    local applied
    applied=$(status_of node4 | json_num applied_index)
    [ -n "$applied" ] && [ "$applied" -ge "$1" ]
}

lock_add() {
    compose --profile node4 up -d node4
    wait_for "node4 answers /status" caught_up 0
    wait_for "a leader is known" leader >/dev/null
    wait_for "the leader accepts node4 as a learner" members add
    wait_for "node4 is a learner on the leader" learner_on_leader
    local l commit
    l=$(leader)
    commit=$(status_of "$l" | json_num commit_index)
    wait_for "node4 has applied index $commit" caught_up "$commit"
    wait_for "the leader accepts the promotion" members promote
    wait_for "node4 is a voter on the leader" voter_on_leader
    echo "node4 is a voter: $(status_of "$(leader)" | json_list voters)"
}

lock_remove() {
    wait_for "the leader accepts the removal" members remove
    wait_for "node4 has left the configuration" gone_from_leader
    compose --profile node4 stop node4
    compose --profile node4 rm -f node4
    echo "node4 removed: voters $(status_of "$(leader)" | json_list voters)"
}

scale_role() { # SERVICE PROFILE FIXED N
    local extra=$(($4 - $3))
    [ "$extra" -ge 0 ] || die "at least $3 nodes: the fixed services stay"
    compose --profile "$2" up -d --no-recreate --scale "$1=$extra" "$1"
    echo "$1: $extra replica(s) besides the $3 fixed node(s)"
}

[ $# -eq 2 ] || usage
case "$1:$2" in
    cache:*|queue:*)
        [[ $2 =~ ^[0-9]+$ ]] || usage
        if [ "$1" = cache ]; then scale_role cache-node more-cache 3 "$2"; else scale_role queue-node more-queue 1 "$2"; fi
        ;;
    lock:add) lock_add ;;
    lock:remove) lock_remove ;;
    *) usage ;;
esac
