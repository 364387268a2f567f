#!/usr/bin/env bash
# Queue benchmark: raw redis-benchmark XADD (32 connections, unpipelined and -P 16) against one
# redis-server, then dsyncd's POST /queue/produce over HTTPS with 32 keep-alive connections (wrk;
# single messages and batches of 16) against the same redis-server, then produce->consume->ack
# latency p50/p99 at a fixed rate.  Prints the figures side by side with the issue's targets
# (single >= 0.8x raw unpipelined, batched messages/s >= 0.5x raw pipelined).  Informative only:
# never fails on timing (non-zero only when it cannot set the measurement up).
#
# usage: t/bench/queue.sh
# environment: BENCH_DURATION (wrk -d, default 10s), BENCH_CONNECTIONS (default 32), BENCH_RATE
#   (messages/s of the latency run, default 200), BENCH_LATENCY_S (default 10), BENCH_AOF (no |
#   everysec | always, default no), BENCH_PIN (default 1: servers on CPU 1, load on CPU 0),
#   DSYNCD (binary; default build/dsyncd, built with meson when missing).
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNECTIONS:-32}
RATE=${BENCH_RATE:-200}
LAT_S=${BENCH_LATENCY_S:-10}
AOF=${BENCH_AOF:-no}
PIN=${BENCH_PIN:-1}

die() { echo "bench/queue: $*" >&2; exit 1; }
for tool in wrk redis-server redis-cli redis-benchmark openssl python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install wrk redis-server openssl python3)"
done
case $AOF in no|everysec|always) ;; *) die "BENCH_AOF must be no, everysec or always" ;; esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dsyncd-bench-queue.XXXXXX")
DS_PID="" RD_PID=""
cleanup() {
    local p
    for p in $DS_PID $RD_PID; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $DS_PID $RD_PID; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${DSYNCD:-}" ]; then
    BIN=$DSYNCD
else
    BIN=$TOP/build/dsyncd
    if [ ! -d "$TOP/build" ]; then
        (cd "$TOP" && meson setup build >"$WORK/build.log" 2>&1) || { cat "$WORK/build.log" >&2; die "meson setup failed"; }
    fi
    (cd "$TOP" && meson compile -C build dsyncd >"$WORK/build.log" 2>&1) || { tail -30 "$WORK/build.log" >&2; die "build failed"; }
fi
[ -x "$BIN" ] || die "$BIN is not an executable"
if ldd "$BIN" 2>/dev/null | grep -q -E 'libasan|libubsan'; then
    echo "warning: $BIN is a sanitizer build; its figures say little about the release speed" >&2
fi

"$TOP/certs/gen-certs.sh" "$WORK/certs" >/dev/null || die "certificate generation failed"
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
RD_PORT=$(free_port)
DS_PORT=$(free_port)
SRV=() CLI=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    SRV=(taskset -c 1) CLI=(taskset -c 0)
fi

# ------------------------------------------------------------------ servers

AOF_ARGS=(--appendonly no)
[ "$AOF" != no ] && AOF_ARGS=(--appendonly yes --appendfsync "$AOF")
"${SRV[@]}" redis-server --port "$RD_PORT" --bind 127.0.0.1 --dir "$WORK" --save '' \
    "${AOF_ARGS[@]}" --logfile "$WORK/redis.log" &
RD_PID=$!
for _ in $(seq 100); do redis-cli -p "$RD_PORT" PING 2>/dev/null | grep -q PONG && break; sleep 0.05; done
redis-cli -p "$RD_PORT" PING | grep -q PONG || die "redis-server did not start"

cat >"$WORK/queue.ini" <<INI
[node]
id = bench-queue
role = queue
listen = 127.0.0.1:$DS_PORT
data_dir = $WORK/data
[tls]
cert = $WORK/certs/queue-node-1.crt
key = $WORK/certs/queue-node-1.key
[log]
level = warn
[redis]
shards = 127.0.0.1:$RD_PORT
[queue]
partitions = 8
INI
"${SRV[@]}" "$BIN" --config "$WORK/queue.ini" 2>"$WORK/dsyncd.log" &
DS_PID=$!
URL=https://127.0.0.1:$DS_PORT
CA=$WORK/certs/ca.crt
for _ in $(seq 100); do
    curl -sf --cacert "$CA" "$URL/ready" >/dev/null 2>&1 && break
    kill -0 "$DS_PID" 2>/dev/null || { cat "$WORK/dsyncd.log" >&2; die "dsyncd exited"; }
    sleep 0.1
done
curl -sf --cacert "$CA" "$URL/ready" >/dev/null || { cat "$WORK/dsyncd.log" >&2; die "dsyncd not ready"; }

# ------------------------------------------------------------------ measurements

BODY='{"n":12345,"payload":"abcdefghijklmnop"}'
N=$((CONNS * 6000))
raw_rps() { # PIPELINE
    redis-cli -p "$RD_PORT" FLUSHALL >/dev/null
    "${CLI[@]}" redis-benchmark -p "$RD_PORT" -c "$CONNS" -n "$N" -P "$1" -q \
        XADD 'dsq:{raw}:0' '*' b "$BODY" 2>/dev/null | tr '\r' '\n' |
        sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1
}
RAW1=$(raw_rps 1)
RAW16=$(raw_rps 16)

lua() { # FILE BODY
    cat >"$1" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$2'
LUA
}
lua "$WORK/single.lua" "{\"queue\":\"bench\",\"key\":\"k\",\"body\":$BODY}"
MSGS=$(python3 -c "import json,sys; print(json.dumps([{'key':'k%d'%i,'body':json.loads(sys.argv[1])} for i in range(16)]))" "$BODY")
lua "$WORK/batch.lua" "{\"queue\":\"bench\",\"messages\":$MSGS}"
wrk_rps() { # SCRIPT
    redis-cli -p "$RD_PORT" FLUSHALL >/dev/null
    "${CLI[@]}" wrk -t1 -c"$CONNS" -d2s -s "$1" "$URL/queue/produce" >/dev/null 2>&1 || true
    "${CLI[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$1" "$URL/queue/produce" >"$WORK/wrk.out" 2>&1 || true
    local non2xx
    non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p' "$WORK/wrk.out")
    [ -z "$non2xx" ] || echo "warning: $non2xx produce requests were not 201" >&2
    sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$WORK/wrk.out"
}
DS1=$(wrk_rps "$WORK/single.lua")
DS16=$(wrk_rps "$WORK/batch.lua")

redis-cli -p "$RD_PORT" FLUSHALL >/dev/null
LAT=$(python3 - "$DS_PORT" "$CA" "$RATE" "$LAT_S" <<'PY'
import http.client, json, ssl, sys, threading, time
port, ca, rate, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
def conn():
    return http.client.HTTPSConnection("localhost", port, context=ctx, timeout=40)
def call(c, path, body):
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"null")
lat, sent, done = [], {}, threading.Event()
c0 = conn()
call(c0, "/queue/consume", {"queue": "lat", "group": "g", "consumer": "c"})
def consumer():
    c = conn()
    while not done.is_set() or len(lat) < len(sent):
        st, r = call(c, "/queue/consume", {"queue": "lat", "group": "g", "consumer": "c",
                                           "max": 100, "wait_ms": 500})
        msgs = r["messages"] if st == 200 else []
        if msgs:
            call(c, "/queue/ack", {"queue": "lat", "group": "g", "ids": [m["id"] for m in msgs]})
            now = time.monotonic()
            lat.extend(now - m["body"]["t"] for m in msgs)
        if done.is_set() and not msgs:
            break
t = threading.Thread(target=consumer, daemon=True)
t.start()
start, i = time.monotonic(), 0
try:
    while time.monotonic() - start < secs:
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        st, _ = call(c0, "/queue/produce", {"queue": "lat", "key": "k%d" % (i % 64),
                                            "body": {"t": time.monotonic()}})
        sent[i] = st
        i += 1
finally:
    done.set()
t.join(60)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
print("%d %.2f %.2f" % (len(lat), q(0.50), q(0.99)))
PY
)
read -r LAT_N LAT_P50 LAT_P99 <<<"$LAT"

# ------------------------------------------------------------------ report

ratio() { python3 -c "import sys; a, b = float(sys.argv[1] or 0), float(sys.argv[2] or 0); print('%.2f' % (a / b if b else 0))" "$1" "$2"; }
DS16M=$(python3 -c "import sys; print('%.0f' % (float(sys.argv[1] or 0) * 16))" "$DS16")
echo "queue benchmark: redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), AOF=$AOF,"\
     "one shard, $CONNS connections, $(nproc) CPUs${SRV:+ (servers on CPU 1, load on CPU 0)}, body ${#BODY} B"
printf '%-44s %14s %14s %8s %8s\n' "" "raw redis" "dsyncd" "ratio" "target"
printf '%-44s %14.0f %14.0f %8s %8s\n' "single XADD / produce (msgs/s)" "$RAW1" "$DS1" "$(ratio "$DS1" "$RAW1")" ">=0.8"
printf '%-44s %14.0f %14.0f %8s %8s\n' "pipelined -P 16 / batches of 16 (msgs/s)" "$RAW16" "$DS16M" "$(ratio "$DS16M" "$RAW16")" ">=0.5"
printf 'produce->consume->ack at %s msgs/s for %ss: %s messages, p50 %s ms, p99 %s ms\n' \
    "$RATE" "$LAT_S" "$LAT_N" "$LAT_P50" "$LAT_P99"
exit 0
