#!/usr/bin/env bash
# Cache role benchmark, in one run: (1) wrk against a local-hit GET /cache/{key} of one cache node and
# against nginx (1 worker) serving the same bytes with the same certificate and TLS protocols, with the
# ratio dsyncd/nginx (target >= 0.90); (2) a mixed workload across 3 cache nodes over one redis-server:
# one wrk per node at once, 90% GET / 10% PUT on zipfian keys, reporting throughput, hit ratio (from
# GET /cache/stats) and p50/p99 per node.  Informative only: never fails on timing (it exits non-zero
# only when it cannot set the comparison up).
#
# usage: t/bench/cache.sh
# environment: BENCH_DURATION (wrk -d, default 10s), BENCH_CONNECTIONS (wrk -c, default 32),
#   BENCH_THREADS (wrk -t, default 1), BENCH_WARMUP (default 2s, 0 to skip), BENCH_KEYS (mixed
#   workload key space, default 1000), BENCH_ZIPF_S (zipf exponent, default 1.0), BENCH_WRITES (percent
#   of PUTs, default 10), BENCH_PIN (default 1: with 2+ CPUs servers on CPU 1, wrk on CPU 0),
#   DSYNCD (binary; default build/dsyncd, built with meson when missing), NGINX (default nginx).
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-1}
WARMUP=${BENCH_WARMUP:-2s}
KEYS=${BENCH_KEYS:-1000}
ZIPF_S=${BENCH_ZIPF_S:-1.0}
WRITES=${BENCH_WRITES:-10}
PIN=${BENCH_PIN:-1}
NGINX=${NGINX:-nginx}

die() { echo "bench/cache: $*" >&2; exit 1; }
[[ $KEYS =~ ^[1-9][0-9]*$ ]] || die "BENCH_KEYS must be a positive whole number"
[[ $WRITES =~ ^[0-9]+$ ]] && [ "$WRITES" -le 100 ] || die "BENCH_WRITES must be 0..100"

for tool in wrk curl openssl python3 redis-server redis-cli; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install wrk curl openssl python3 redis-server)"
done
command -v "$NGINX" >/dev/null || [ -x /usr/sbin/nginx ] || die "nginx not found (apt-get install nginx-light or nginx)"
command -v "$NGINX" >/dev/null || NGINX=/usr/sbin/nginx

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dsyncd-bench-cache.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ binary, certificates, ports

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
CA=$WORK/certs/ca.crt

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORTS=()
for _ in 1 2 3 4 5; do
    p=$(free_port)
    while [[ " ${PORTS[*]} " == *" $p "* ]]; do p=$(free_port); done
    PORTS+=("$p")
done
NODE_PORTS=("${PORTS[0]}" "${PORTS[1]}" "${PORTS[2]}") NG_PORT=${PORTS[3]} REDIS_PORT=${PORTS[4]}

CPUS=$(nproc)
SRV=() CLI=()
if [ "$PIN" = 1 ] && [ "$CPUS" -ge 2 ] && command -v taskset >/dev/null; then
    SRV=(taskset -c 1) CLI=(taskset -c 0)
fi

wait_https() { # NAME PORT PID LOG PATH
    for _ in $(seq 100); do
        curl -sf --max-time 1 --cacert "$CA" "https://127.0.0.1:$2$5" >/dev/null && return 0
        kill -0 "$3" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$4" >&2
    die "$1 did not answer on port $2"
}

# ------------------------------------------------------------------ redis + 3 cache nodes

mkdir -p "$WORK/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" --appendonly no \
    --protected-mode no --loglevel warning </dev/null >"$WORK/redis/log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done

SEEDS=$(printf 'https://127.0.0.1:%s,' "${NODE_PORTS[@]}")
SEEDS=${SEEDS%,}
for i in 1 2 3; do
    port=${NODE_PORTS[$((i - 1))]}
    cat >"$WORK/cache-node-$i.ini" <<EOF
[node]
id = cache-node-$i
role = cache
listen = 127.0.0.1:$port
advertise_url = https://127.0.0.1:$port
data_dir = $WORK/data-$i

[tls]
cert = $WORK/certs/cache-node-$i.crt
key = $WORK/certs/cache-node-$i.key
ca = $CA
min_version = 1.2

[log]
level = warn

[cluster]
seeds = $SEEDS
mac_key_file = $WORK/certs/mac.key

[redis]
shards = 127.0.0.1:$REDIS_PORT
EOF
    "${SRV[@]}" "$BIN" --config "$WORK/cache-node-$i.ini" </dev/null >"$WORK/cache-node-$i.log" 2>&1 &
    PIDS+=($!)
done
for i in 1 2 3; do
    wait_https "cache-node-$i" "${NODE_PORTS[$((i - 1))]}" "${PIDS[$i]}" "$WORK/cache-node-$i.log" /ready
done

url() { echo "https://127.0.0.1:${NODE_PORTS[$(($1 - 1))]}"; }
# a write on every node succeeds once the ring has converged and the homes' warm-up is over
for i in 1 2 3; do
    for _ in $(seq 200); do
        curl -sf --cacert "$CA" -X PUT -H 'Content-Type: application/json' \
            -d '{"value":"warm"}' "$(url "$i")/cache/bench-warm-$i" >/dev/null && break
        sleep 0.1
    done
done

# ------------------------------------------------------------------ (1) local hit vs nginx

VALUE='{"user":"alice","roles":["admin","dev"],"quota":1024,"active":true}'
curl -sf --cacert "$CA" -X PUT -H 'Content-Type: application/json' -d "{\"value\":$VALUE}" \
    "$(url 1)/cache/bench-hot" >/dev/null || die "PUT of the hot key failed"
curl -sf --cacert "$CA" -o "$WORK/body" "$(url 1)/cache/bench-hot" || die "GET of the hot key failed"
state=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' "$WORK/body")

body=$(cat "$WORK/body")
body=${body//\\/\\\\}
body=${body//\'/\\\'}
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 60s;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen 127.0.0.1:$NG_PORT ssl;
        ssl_certificate $WORK/certs/cache-node-1.crt;
        ssl_certificate_key $WORK/certs/cache-node-1.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers DEFAULT;
        ssl_prefer_server_ciphers on;
        location = /cache/bench-hot {
            default_type application/json;
            return 200 '$body';
        }
    }
}
EOF
"${SRV[@]}" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" \
    </dev/null >"$WORK/nginx/logs/stdout.log" 2>&1 &
PIDS+=($!)
wait_https nginx "$NG_PORT" "${PIDS[-1]}" "$WORK/nginx/logs/error.log" /cache/bench-hot
curl -sf --cacert "$CA" -o "$WORK/body.nginx" "https://127.0.0.1:$NG_PORT/cache/bench-hot"
cmp -s "$WORK/body" "$WORK/body.nginx" || die "nginx does not serve the same bytes as the cache"

rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
pct() { awk -v p="$2%" '$1 == p {print $2; exit}' "$1"; }
errors() { grep -E 'Socket errors|Non-2xx' "$1" | sed 's/^ *//' | paste -sd ';' - || true; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f\n", a / b; else print "n/a" }'; }
stat() { curl -sf --cacert "$CA" "$(url "$1")/cache/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)[\"$2\"])"; }

hot() { # URL FILE
    if [ "$WARMUP" != 0 ]; then
        "${CLI[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "$1" >/dev/null 2>&1 || true
    fi
    "${CLI[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$1" >"$2" 2>&1 || true
}

tls=$(echo | openssl s_client -connect "127.0.0.1:${NODE_PORTS[0]}" -brief 2>&1 | awk -F': ' '/Protocol version|Ciphersuite/ {printf "%s%s", sep, $2; sep = " "}')
echo "dsyncd $("$BIN" --version | awk '{print $2}') ($BIN) vs $("$NGINX" -v 2>&1 | sed 's/.*: //'), 1 worker"
echo "wrk -t$THREADS -c$CONNS -d$DURATION (warm-up ${WARMUP}), $CPUS CPUs$([ ${#SRV[@]} -gt 0 ] && echo ", servers on CPU 1, wrk on CPU 0"), TLS ${tls:-?}"
echo
echo "(1) local hit: GET /cache/bench-hot on cache-node-1 (line state $state), $(wc -c <"$WORK/body") byte body"
hits0=$(stat 1 hits)
hot "$(url 1)/cache/bench-hot" "$WORK/hit.wrk"
hits1=$(stat 1 hits)
hot "https://127.0.0.1:$NG_PORT/cache/bench-hot" "$WORK/nginx.wrk"
printf '%-8s %14s %10s %10s  %s\n' server requests/s p50 p99 errors
printf '%-8s %14s %10s %10s  %s\n' dsyncd "$(rps "$WORK/hit.wrk")" "$(pct "$WORK/hit.wrk" 50)" "$(pct "$WORK/hit.wrk" 99)" "$(errors "$WORK/hit.wrk")"
printf '%-8s %14s %10s %10s  %s\n' nginx "$(rps "$WORK/nginx.wrk")" "$(pct "$WORK/nginx.wrk" 50)" "$(pct "$WORK/nginx.wrk" 99)" "$(errors "$WORK/nginx.wrk")"
echo "local hits counted by the node during the run: $((hits1 - hits0))"
echo "ratio dsyncd/nginx: $(ratio "$(rps "$WORK/hit.wrk")" "$(rps "$WORK/nginx.wrk")") (target >= 0.90)"
echo

# ------------------------------------------------------------------ (2) mixed 90/10, zipfian keys

cat >"$WORK/mixed.lua" <<EOF
-- $((100 - WRITES))/$WRITES GET/PUT over $KEYS keys, key rank k chosen with probability ~ 1/k^$ZIPF_S
local n, s, writes = $KEYS, $ZIPF_S, $WRITES
local cdf = {}
local counter = 0
function init(args)
    local total = 0
    for k = 1, n do total = total + 1 / (k ^ s) end
    local acc = 0
    for k = 1, n do acc = acc + 1 / (k ^ s) / total; cdf[k] = acc end
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end
local function pick()
    local u, lo, hi = math.random(), 1, n
    while lo < hi do
        local mid = math.floor((lo + hi) / 2)
        if cdf[mid] < u then lo = mid + 1 else hi = mid end
    end
    return lo
end
function request()
    local path = "/cache/bench-" .. pick()
    counter = counter + 1
    if math.random(100) <= writes then
        return wrk.format("PUT", path, {["Content-Type"] = "application/json"},
                          '{"value":{"n":' .. counter .. ',"pad":"0123456789abcdef"}}')
    end
    return wrk.format("GET", path)
end
EOF
declare -A h0 m0
for i in 1 2 3; do h0[$i]=$(stat "$i" hits); m0[$i]=$(stat "$i" misses); done
MIXPIDS=()
for i in 1 2 3; do
    "${CLI[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$WORK/mixed.lua" "$(url "$i")" \
        >"$WORK/mixed.$i.wrk" 2>&1 &
    MIXPIDS+=($!)
done
for p in "${MIXPIDS[@]}"; do wait "$p" || true; done
echo "(2) mixed: $((100 - WRITES))% GET / $WRITES% PUT, $KEYS zipfian keys (s = $ZIPF_S), one wrk per node at once"
printf '%-13s %14s %10s %10s %10s  %s\n' node requests/s p50 p99 hit-ratio errors
total=0 th=0 tm=0
for i in 1 2 3; do
    f=$WORK/mixed.$i.wrk
    dh=$(($(stat "$i" hits) - h0[$i])) dm=$(($(stat "$i" misses) - m0[$i]))
    th=$((th + dh)) tm=$((tm + dm))
    printf '%-13s %14s %10s %10s %10s  %s\n' "cache-node-$i" "$(rps "$f")" "$(pct "$f" 50)" "$(pct "$f" 99)" \
        "$(ratio "$dh" "$((dh + dm))")" "$(errors "$f")"
    total=$(awk -v a="$total" -v b="$(rps "$f")" 'BEGIN { printf "%.2f", a + b }')
done
echo "total: $total requests/s, hit ratio $(ratio "$th" "$((th + tm))") ($th hits, $tm misses)"
for i in 1 2 3; do
    kill -0 "${PIDS[$i]}" 2>/dev/null || echo "note: cache-node-$i is no longer running"
done
