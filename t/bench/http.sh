#!/usr/bin/env bash
# HTTPS front-end benchmark: wrk against GET /health of one dsyncd and against nginx (1 worker)
# serving the same bytes with the same certificate and TLS protocols, in the same run; prints
# requests/s, p50/p99 latency of each and the ratio dsyncd/nginx.  Informative only: never fails on
# timing (it exits non-zero only when it cannot set the comparison up).
#
# usage: t/bench/http.sh
# environment: BENCH_DURATION (wrk -d, default 10s), BENCH_CONNECTIONS (wrk -c, default 32),
#   BENCH_THREADS (wrk -t, default 1), BENCH_WARMUP (default 2s, 0 to skip), BENCH_ROUNDS (default 1:
#   more rounds alternate which server goes first; the ratio is the median of the rounds' ratios),
#   BENCH_PIN (default 1: on a machine with 2+ CPUs each server runs on CPU 1 and wrk on CPU 0; 0
#   lets the kernel place them), DSYNCD (binary; default build/dsyncd, built with meson when missing),
#   NGINX (default nginx).
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-1}
WARMUP=${BENCH_WARMUP:-2s}
ROUNDS=${BENCH_ROUNDS:-1}
PIN=${BENCH_PIN:-1}
NGINX=${NGINX:-nginx}

die() { echo "bench/http: $*" >&2; exit 1; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive whole number"

for tool in wrk curl openssl python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install wrk curl openssl python3)"
done
command -v "$NGINX" >/dev/null || [ -x /usr/sbin/nginx ] || die "nginx not found (apt-get install nginx-light or nginx)"
command -v "$NGINX" >/dev/null || NGINX=/usr/sbin/nginx

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dsyncd-bench-http.XXXXXX")
DS_PID="" NG_PID=""
cleanup() {
    local p
    for p in $DS_PID $NG_PID; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $DS_PID $NG_PID; do
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
CERT=$WORK/certs/node1.crt KEY=$WORK/certs/node1.key CA=$WORK/certs/ca.crt

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
DS_PORT=$(free_port)
NG_PORT=$(free_port)
while [ "$NG_PORT" = "$DS_PORT" ]; do NG_PORT=$(free_port); done

CPUS=$(nproc)
SRV=() CLI=() # command prefixes that pin the servers to CPU 1 and wrk to CPU 0
if [ "$PIN" = 1 ] && [ "$CPUS" -ge 2 ] && command -v taskset >/dev/null; then
    SRV=(taskset -c 1) CLI=(taskset -c 0)
fi

wait_https() { # NAME PORT PID LOG
    for _ in $(seq 100); do
        curl -sf --max-time 1 --cacert "$CA" "https://127.0.0.1:$2/health" >/dev/null && return 0
        kill -0 "$3" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$4" >&2
    die "$1 did not answer on port $2"
}

# ------------------------------------------------------------------ dsyncd

cat >"$WORK/dsyncd.ini" <<EOF
[node]
id = bench
role = lock
listen = 127.0.0.1:$DS_PORT
data_dir = $WORK/data

[tls]
cert = $CERT
key = $KEY
min_version = 1.2

[log]
level = warn
EOF
"${SRV[@]}" "$BIN" --config "$WORK/dsyncd.ini" </dev/null >"$WORK/dsyncd.log" 2>&1 &
DS_PID=$!
wait_https dsyncd "$DS_PORT" "$DS_PID" "$WORK/dsyncd.log"
curl -sf --cacert "$CA" -o "$WORK/body" "https://127.0.0.1:$DS_PORT/health"

# ------------------------------------------------------------------ nginx: same body, cert, protocols

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
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers DEFAULT;
        ssl_prefer_server_ciphers on;
        location = /health {
            default_type application/json;
            return 200 '$body';
        }
    }
}
EOF
"${SRV[@]}" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" \
    </dev/null >"$WORK/nginx/logs/stdout.log" 2>&1 &
NG_PID=$!
wait_https nginx "$NG_PORT" "$NG_PID" "$WORK/nginx/logs/error.log"
curl -sf --cacert "$CA" -o "$WORK/body.nginx" "https://127.0.0.1:$NG_PORT/health"
cmp -s "$WORK/body" "$WORK/body.nginx" || die "nginx does not serve the same bytes as dsyncd /health"

# ------------------------------------------------------------------ runs

# run NAME PORT FILE: one wrk run, output in FILE
run() {
    local url="https://127.0.0.1:$2/health"
    if [ "$WARMUP" != 0 ]; then
        "${CLI[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "$url" >/dev/null 2>&1 || true
    fi
    "${CLI[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url" >"$3" 2>&1 || true
}

rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
pct() { awk -v p="$2%" '$1 == p {print $2; exit}' "$1"; }
errors() { grep -E 'Socket errors|Non-2xx' "$1" | sed 's/^ *//' | paste -sd ';' - || true; }
median() { sort -g | awk '{v[NR] = $1} END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f\n", a / b; else print "n/a" }'; }

tls=$(echo | openssl s_client -connect "127.0.0.1:$DS_PORT" -brief 2>&1 | awk -F': ' '/Protocol version|Ciphersuite/ {printf "%s%s", sep, $2; sep = " "}')
echo "dsyncd $("$BIN" --version | awk '{print $2}') ($BIN) vs $("$NGINX" -v 2>&1 | sed 's/.*: //'), 1 worker"
echo "GET /health, $(wc -c <"$WORK/body") byte body, TLS ${tls:-?}"
echo "wrk -t$THREADS -c$CONNS -d$DURATION (warm-up ${WARMUP}), $ROUNDS round(s), $CPUS CPUs$([ ${#SRV[@]} -gt 0 ] && echo ", servers on CPU 1, wrk on CPU 0"), load average $(cut -d' ' -f1 /proc/loadavg)"
echo
printf '%-6s %-8s %14s %10s %10s  %s\n' round server requests/s p50 p99 errors
for r in $(seq "$ROUNDS"); do
    order="dsyncd nginx"
    [ $((r % 2)) = 0 ] && order="nginx dsyncd" # alternate, so drifting background load hits both
    for srv in $order; do
        port=$DS_PORT
        [ "$srv" = nginx ] && port=$NG_PORT
        f=$WORK/$srv.$r.wrk
        run "$srv" "$port" "$f"
        printf '%-6s %-8s %14s %10s %10s  %s\n' "$r" "$srv" "$(rps "$f")" "$(pct "$f" 50)" "$(pct "$f" 99)" "$(errors "$f")"
    done
    ratio "$(rps "$WORK/dsyncd.$r.wrk")" "$(rps "$WORK/nginx.$r.wrk")" >"$WORK/ratio.$r"
    [ "$ROUNDS" -gt 1 ] && printf '%-6s ratio dsyncd/nginx %s\n' "$r" "$(cat "$WORK/ratio.$r")"
done
if [ "$ROUNDS" -gt 1 ]; then
    printf 'median requests/s: dsyncd %s, nginx %s\n' \
        "$(for f in "$WORK"/dsyncd.*.wrk; do rps "$f"; done | median)" \
        "$(for f in "$WORK"/nginx.*.wrk; do rps "$f"; done | median)"
    echo "ratio dsyncd/nginx: $(cat "$WORK"/ratio.* | grep -v n/a | median) (median of the rounds; target >= 0.90)"
else
    echo "ratio dsyncd/nginx: $(cat "$WORK/ratio.1") (target >= 0.90)"
fi
if kill -0 "$DS_PID" 2>/dev/null; then
    curl -sf --cacert "$CA" "https://127.0.0.1:$DS_PORT/health" >/dev/null || echo "note: dsyncd no longer answers /health after the run"
else
    echo "note: dsyncd exited during the run:"
    tail -20 "$WORK/dsyncd.log"
fi
