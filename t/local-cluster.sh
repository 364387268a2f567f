#!/usr/bin/env bash
# Start, stop and show the loopback deployment of conf/local/ (lock 8001-8003, queue 9101, cache
# 10001-10003, Redis 6379-6381) without Docker.
#
# usage: t/local-cluster.sh start  [lock|queue|cache|all]...   (default: all)
#        t/local-cluster.sh stop   [lock|queue|cache|all]...   (default: all)
#        t/local-cluster.sh status
#
# Everything lives under $DSYNC_RUN (default: ./run at the top of the repository):
#   certs/   CA (certs/ca.crt), node and admin certificates, mac.key  (certs/gen-certs.sh), the tokens
#            file certs/tokens and the bearer tokens certs/{admin,writer,reader}.token (certs/gen-tokens.sh,
#            printed once when made)
#   data/    one data directory per node          logs/  <node>.log, <node>.audit.log, redis-N.log
#   pids/    <node>.pid, redis-N.pid              redis-N/  Redis working directory (AOF on)
#
# The binary is $DSYNCD if set, else build/dsyncd at the top of the repository, built with meson when
# missing or out of date.  Nodes get their paths through DSYNCD_* environment variables (see
# conf/local/*.ini) and the MAC key from $DSYNC_RUN/certs/mac.key; SHARED_MAC_KEY and INTERNAL_PORT are
# not passed on, other DSYNCD_<SECTION>_<KEY> variables are (e.g. DSYNCD_LOG_LEVEL=debug).
# DSYNC_START_TIMEOUT (s, default 20) bounds the wait for /health, DSYNC_STOP_TIMEOUT (s, default 10)
# the wait after SIGTERM before SIGKILL.  Client auth is on ([auth] tokens_file = certs/tokens); set
# DSYNC_AUTH=off to start the nodes without it (they then say loudly that anyone may do anything).
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN=${DSYNC_RUN:-$TOP/run}
case $RUN in /*) ;; *) RUN=$PWD/$RUN ;; esac
START_TIMEOUT=${DSYNC_START_TIMEOUT:-20}
STOP_TIMEOUT=${DSYNC_STOP_TIMEOUT:-10}
CA=$RUN/certs/ca.crt

declare -A PORT=([node1]=8001 [node2]=8002 [node3]=8003 [queue-node-1]=9101
                 [cache-node-1]=10001 [cache-node-2]=10002 [cache-node-3]=10003)
declare -A NODES=([lock]="node1 node2 node3" [queue]="queue-node-1"
                  [cache]="cache-node-1 cache-node-2 cache-node-3")
readonly ROLES="lock queue cache" REDIS="1 2 3"

die() { echo "local-cluster: $*" >&2; exit 1; }
usage() { sed -n '5,7p' "$0" | sed 's/^# //' >&2; exit 2; }

# Roles named on the command line ("all" or nothing: every role), in a fixed order.
roles_of() {
    local want=" $* " r out=""
    [ $# -eq 0 ] && want=" all "
    for a in "$@"; do
        case $a in lock|queue|cache|all) ;; *) usage ;; esac
    done
    for r in $ROLES; do
        if [[ $want == *" $r "* || $want == *" all "* ]]; then out+="$r "; fi
    done
    echo "$out"
}

redis_port() { echo $((6378 + $1)); }

# ------------------------------------------------------------------ processes and pid files

pidfile() { echo "$RUN/pids/$1.pid"; }

# The pid recorded for NAME if that process is still the one we started (its command line names
# MARK), else nothing; a stale pid file is removed.
live_pid() {
    local name=$1 mark=$2 f pid
    f=$(pidfile "$name")
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    if [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$mark"; then
        echo "$pid"
    else
        rm -f "$f"
    fi
}

node_mark() { echo "conf/local/$1.ini"; }
redis_mark() { echo "127.0.0.1:$(redis_port "$1")"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# SIGTERM, then SIGKILL after STOP_TIMEOUT seconds, for every pid given; returns once all are gone.
terminate() {
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT)) p alive
    while :; do
        alive=()
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
        [ ${#alive[@]} -eq 0 ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "  still running after ${STOP_TIMEOUT}s: SIGKILL ${alive[*]}"
            kill -KILL "${alive[@]}" 2>/dev/null || true
            deadline=$((SECONDS + 5))
        fi
        sleep 0.1
    done
}

log_tail() {
    echo "---- last lines of $1" >&2
    tail -n 25 "$1" >&2 2>/dev/null || true
    echo "----" >&2
}

# ------------------------------------------------------------------ binary and certificates

binary() {
    if [ -n "${DSYNCD:-}" ]; then
        [ -x "$DSYNCD" ] || die "DSYNCD=$DSYNCD is not an executable"
        BIN=$(cd "$(dirname "$DSYNCD")" && pwd)/$(basename "$DSYNCD")
        return
    fi
    BIN=$TOP/build/dsyncd
    if [ ! -d "$TOP/build" ]; then
        echo "building dsyncd (meson setup build)"
        (cd "$TOP" && meson setup build >"$RUN/build.log" 2>&1) || { log_tail "$RUN/build.log"; die "meson setup failed"; }
    fi
    (cd "$TOP" && meson compile -C build dsyncd >"$RUN/build.log" 2>&1) ||
        { log_tail "$RUN/build.log"; die "build failed (set DSYNCD=/path/to/dsyncd to use another binary)"; }
    [ -x "$BIN" ] || die "$BIN missing after the build"
}

certs() {
    "$TOP/certs/gen-certs.sh" "$RUN/certs" >"$RUN/certs.log" 2>&1 || { log_tail "$RUN/certs.log"; die "certificate generation failed"; }
    grep -q created "$RUN/certs.log" && grep created "$RUN/certs.log" | sed 's/^ */  certs: /'
    "$TOP/certs/gen-tokens.sh" "$RUN/certs" >"$RUN/tokens.log" 2>&1 || { log_tail "$RUN/tokens.log"; die "token generation failed"; }
    grep -q created "$RUN/tokens.log" && grep created "$RUN/tokens.log" | sed 's/^ */  tokens: /'
    return 0
}

# ------------------------------------------------------------------ redis

start_redis() {
    local i port pid dir
    command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
    for i in $REDIS; do
        port=$(redis_port "$i")
        pid=$(live_pid "redis-$i" "$(redis_mark "$i")")
        if [ -n "$pid" ]; then
            echo "redis-$i already running on 127.0.0.1:$port (pid $pid)"
            continue
        fi
        port_busy "$port" && die "port $port is taken by a process not started by this script: $(ss -ltnpH "sport = :$port" 2>/dev/null | head -1)"
        dir=$RUN/redis-$i
        mkdir -p "$dir"
        redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --appendonly yes --save "" \
            --daemonize yes --pidfile "$(pidfile "redis-$i")" --logfile "$RUN/logs/redis-$i.log" \
            >/dev/null || { log_tail "$RUN/logs/redis-$i.log"; die "redis-$i did not start"; }
        wait_redis "$i"
        echo "redis-$i running on 127.0.0.1:$port (pid $(cat "$(pidfile "redis-$i")"), data $dir)"
    done
}

wait_redis() {
    local i=$1 deadline=$((SECONDS + START_TIMEOUT))
    until [ "$(redis-cli -h 127.0.0.1 -p "$(redis_port "$i")" ping 2>/dev/null)" = PONG ] &&
        [ -s "$(pidfile "redis-$i")" ]; do
        [ "$SECONDS" -lt "$deadline" ] || { log_tail "$RUN/logs/redis-$i.log"; die "redis-$i did not answer PING within ${START_TIMEOUT}s"; }
        sleep 0.1
    done
}

stop_redis() {
    local i pid pids=()
    for i in $REDIS; do
        pid=$(live_pid "redis-$i" "$(redis_mark "$i")")
        [ -n "$pid" ] && pids+=("$pid") && echo "stopping redis-$i (pid $pid)"
    done
    terminate "${pids[@]}"
    for i in $REDIS; do rm -f "$(pidfile "redis-$i")"; done
}

# ------------------------------------------------------------------ nodes

health() { curl -sf --max-time 2 --cacert "$CA" "https://127.0.0.1:${PORT[$1]}/health"; }

launch_node() {
    local n=$1
    mkdir -p "$RUN/data/$n"
    (
        cd "$TOP"
        unset SHARED_MAC_KEY INTERNAL_PORT
        export DSYNCD_NODE_DATA_DIR=$RUN/data/$n DSYNCD_TLS_CERT=$RUN/certs/$n.crt \
            DSYNCD_TLS_KEY=$RUN/certs/$n.key DSYNCD_TLS_CA=$CA \
            DSYNCD_LOG_AUDIT_FILE=$RUN/logs/$n.audit.log DSYNCD_CLUSTER_MAC_KEY_FILE=$RUN/certs/mac.key
        if [ "${DSYNC_AUTH:-on}" = off ]; then
            export DSYNCD_AUTH_TOKENS_FILE=
        else
            export DSYNCD_AUTH_TOKENS_FILE=$RUN/certs/tokens
        fi
        echo "==== $(date -u +%FT%TZ) start" >>"$RUN/logs/$n.log"
        exec "$BIN" --config "conf/local/$n.ini" </dev/null >>"$RUN/logs/$n.log" 2>&1
    ) &
    echo $! >"$(pidfile "$n")"
    disown
}

# Waits for /health of node N; on failure shows its log, stops it and returns 1.
wait_node() {
    local n=$1 pid deadline=$((SECONDS + START_TIMEOUT))
    pid=$(cat "$(pidfile "$n")")
    until health "$n" >/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$n exited during start" >&2
            log_tail "$RUN/logs/$n.log"
            rm -f "$(pidfile "$n")"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "$n did not answer /health within ${START_TIMEOUT}s" >&2
            log_tail "$RUN/logs/$n.log"
            terminate "$pid"
            rm -f "$(pidfile "$n")"
            return 1
        fi
        sleep 0.1
    done
}

# One line on /ready: ready, not ready (reason), or the role is not implemented in this binary.
ready_note() {
    local n=$1 role=$2 body reason
    body=$(curl -s --max-time 2 --cacert "$CA" "https://127.0.0.1:${PORT[$n]}/ready" || true)
    reason=$(printf '%s' "$body" | sed -n 's/.*"reason":"\([^"]*\)".*/\1/p')
    if [[ $body == *'"ready":true'* ]]; then
        echo "ready"
    elif [[ $reason == *"no implementation"* ]]; then
        echo "note: the $role role is not implemented in this build yet"
    else
        echo "not ready yet: ${reason:-no answer}"
    fi
}

start_role() {
    local role=$1 n pid todo=() failed=0
    for n in ${NODES[$role]}; do
        pid=$(live_pid "$n" "$(node_mark "$n")")
        if [ -n "$pid" ]; then
            echo "$n already running on https://127.0.0.1:${PORT[$n]} (pid $pid)"
            continue
        fi
        port_busy "${PORT[$n]}" && die "port ${PORT[$n]} is taken by a process not started by this script: $(ss -ltnpH "sport = :${PORT[$n]}" 2>/dev/null | head -1)"
        todo+=("$n")
    done
    for n in "${todo[@]}"; do launch_node "$n"; done
    for n in "${todo[@]}"; do
        if wait_node "$n"; then
            echo "$n ($role) running on https://127.0.0.1:${PORT[$n]} (pid $(cat "$(pidfile "$n")")): $(ready_note "$n" "$role")"
        else
            failed=1
        fi
    done
    return $failed
}

stop_role() {
    local n pid pids=()
    for n in ${NODES[$1]}; do
        pid=$(live_pid "$n" "$(node_mark "$n")")
        [ -n "$pid" ] && pids+=("$pid") && echo "stopping $n (pid $pid)"
    done
    terminate "${pids[@]}"
    for n in ${NODES[$1]}; do rm -f "$(pidfile "$n")"; done
}

any_running() { # any node of the roles given
    local r n
    for r in "$@"; do
        for n in ${NODES[$r]}; do [ -n "$(live_pid "$n" "$(node_mark "$n")")" ] && return 0; done
    done
    return 1
}

# ------------------------------------------------------------------ commands

cmd_start() {
    local roles r failed=0
    roles=$(roles_of "$@")
    mkdir -p "$RUN/logs" "$RUN/pids" "$RUN/data"
    binary
    certs
    if [[ $roles == *queue* || $roles == *cache* ]]; then start_redis; fi
    for r in $roles; do start_role "$r" || failed=1; done
    if [ $failed = 1 ]; then
        echo "local-cluster: some nodes did not start; '$0 stop' stops the others" >&2
        return 1
    fi
    set -- ${NODES[${roles%% *}]}
    echo "CA: $CA   try: curl --cacert $CA https://127.0.0.1:${PORT[$1]}/health"
    [ "${DSYNC_AUTH:-on}" = off ] ||
        echo "auth: curl --cacert $CA -H \"Authorization: Bearer \$(cat $RUN/certs/writer.token)\" https://127.0.0.1:${PORT[$1]}/status"
}

cmd_stop() {
    local roles r
    roles=$(roles_of "$@")
    for r in $roles; do stop_role "$r"; done
    if ! any_running queue cache; then stop_redis; fi
    echo "stopped: ${roles% }"
}

cmd_status() {
    local r n i pid state
    for r in $ROLES; do
        for n in ${NODES[$r]}; do
            pid=$(live_pid "$n" "$(node_mark "$n")")
            if [ -z "$pid" ]; then
                state="stopped"
            elif health "$n" >/dev/null; then
                state="running (pid $pid), /health ok, $(ready_note "$n" "$r")"
            else
                state="running (pid $pid), /health not answering"
            fi
            printf '%-13s %-6s https://127.0.0.1:%-6s %s\n' "$n" "$r" "${PORT[$n]}" "$state"
        done
    done
    for i in $REDIS; do
        pid=$(live_pid "redis-$i" "$(redis_mark "$i")")
        printf '%-13s %-6s 127.0.0.1:%-14s %s\n' "redis-$i" redis "$(redis_port "$i")" \
            "$([ -n "$pid" ] && echo "running (pid $pid)" || echo stopped)"
    done
}

[ $# -ge 1 ] || usage
command -v curl >/dev/null || die "curl not found (apt-get install curl)"
cmd=$1
shift
case $cmd in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) [ $# -eq 0 ] || usage; cmd_status ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) usage ;;
esac
