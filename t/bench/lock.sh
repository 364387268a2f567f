#!/usr/bin/env bash
# Lock benchmark: dsyncd's 3-node lock cluster against a 3-member etcd cluster (Debian's etcd-server,
# started here on free loopback ports with its own data directories), in the same run, with the same
# load: N keep-alive HTTPS clients each doing acquire+release pairs on its own resource (lockload;
# etcd through its v3 JSON gateway: /v3/lock/lock + /v3/lock/unlock with one lease per client).
# Both use TLS for clients and mutual TLS between members, both fsync their log.  Prints pairs/s,
# p50/p99 pair latency of each and the ratio dsyncd/etcd.  Informative only: never fails on timing
# (exit status is non-zero only when the comparison cannot be set up).
#
# usage: t/bench/lock.sh
# environment: BENCH_CLIENTS (default "1 32"), BENCH_DURATION (seconds per run, default 10),
#   BENCH_WARMUP (seconds before each run, default 1), BENCH_ROUNDS (default 1; more rounds alternate
#   which system goes first and the ratio uses the medians), BENCH_KEEP=1 (keep logs and data),
#   DSYNCD (binary; default build/dsyncd, built with meson when missing), ETCD (default etcd),
#   LOCKLOAD (default: build/t/bench/lockload if up to date, else compiled with cc).
set -euo pipefail

# shellcheck source=t/bench/raft.sh
source "$(dirname "${BASH_SOURCE[0]}")/raft.sh"

CLIENTS=${BENCH_CLIENTS:-1 32}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-1}
ROUNDS=${BENCH_ROUNDS:-1}
ETCD=${ETCD:-etcd}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || bench_die "BENCH_ROUNDS must be a positive whole number"
command -v "$ETCD" >/dev/null || bench_die "$ETCD not found (apt-get install etcd-server)"

bench_setup lock

# ---------------------------------------------------------------- etcd

# Starts 3 members with TLS for clients and peers (peer certificates checked against the CA), the
# default heartbeat/election and fsync; sets ETCD_URLS and adds the pids to BENCH_PIDS.
etcd_start() {
    local dir=$1 ports cluster="" i
    read -r -a ports <<<"$(bench_ports 6)"
    for i in 0 1 2; do
        cluster+="${cluster:+,}e$((i + 1))=https://127.0.0.1:${ports[$((i + 3))]}"
    done
    ETCD_URLS=()
    for i in 0 1 2; do
        local n=e$((i + 1)) cert=$BENCH_WORK/certs/node$((i + 1))
        mkdir -p "$dir/$n"
        ETCD_URLS+=("https://127.0.0.1:${ports[$i]}")
        (cd "$dir/$n" && for v in $(compgen -e | grep '^ETCD_' || true); do unset "$v"; done &&
            exec "$ETCD" --name "$n" --data-dir "$dir/$n/data" \
                --listen-client-urls "${ETCD_URLS[$i]}" --advertise-client-urls "${ETCD_URLS[$i]}" \
                --listen-peer-urls "https://127.0.0.1:${ports[$((i + 3))]}" \
                --initial-advertise-peer-urls "https://127.0.0.1:${ports[$((i + 3))]}" \
                --initial-cluster-token "bench-$$" --initial-cluster "$cluster" --initial-cluster-state new \
                --cert-file "$cert.crt" --key-file "$cert.key" \
                --peer-cert-file "$cert.crt" --peer-key-file "$cert.key" \
                --peer-trusted-ca-file "$BENCH_CA" --peer-client-cert-auth \
                --logger zap --log-level warn) </dev/null >"$dir/$n/log" 2>&1 &
        BENCH_PIDS+=($!)
    done
}

# Prints the URL of the member that is the leader, once every member answers /health.
etcd_leader() {
    local u deadline=$((SECONDS + 30)) st
    for u in "${ETCD_URLS[@]}"; do
        until curl -sf --max-time 2 --cacert "$BENCH_CA" "$u/health" | grep -q '"health":"true"'; do
            [ "$SECONDS" -lt "$deadline" ] || return 1
            sleep 0.2
        done
    done
    for u in "${ETCD_URLS[@]}"; do
        st=$(curl -sf --max-time 2 --cacert "$BENCH_CA" -X POST -d '{}' "$u/v3/maintenance/status") || continue
        if python3 -c 'import json, sys; s = json.loads(sys.argv[1]); sys.exit(s["header"]["member_id"] != s["leader"])' "$st"; then
            echo "$u"
            return 0
        fi
    done
    return 1
}

etcd_logs() {
    local f
    for f in "$1"/e*/log; do
        echo "---- $f" >&2
        tail -n 15 "$f" >&2
    done
}

# ---------------------------------------------------------------- start both

ds_start "$BENCH_WORK/dsyncd"
etcd_start "$BENCH_WORK/etcd"
DS_LEADER=$(ds_leader 30) || { ds_logs "$BENCH_WORK/dsyncd"; bench_die "dsyncd: no leader within 30 s"; }
"$BENCH_LOAD" --wait-write --timeout 30 --cacert "$BENCH_CA" "$DS_LEADER" >/dev/null ||
    { ds_logs "$BENCH_WORK/dsyncd"; bench_die "dsyncd: no lock write succeeded"; }
ETCD_LEADER=$(etcd_leader) || { etcd_logs "$BENCH_WORK/etcd"; bench_die "etcd: no healthy cluster with a leader within 30 s"; }
"$BENCH_LOAD" --etcd --wait-write --timeout 30 --cacert "$BENCH_CA" "$ETCD_LEADER" >/dev/null ||
    { etcd_logs "$BENCH_WORK/etcd"; bench_die "etcd: no lock+unlock succeeded"; }

echo "dsyncd $("$BENCH_BIN" --version | awk '{print $2}') ($BENCH_BIN) vs etcd $("$ETCD" --version | awk '/^etcd Version/ {print $3}'), 3 members each on 127.0.0.1"
echo "TLS for clients (keep-alive, TCP_NODELAY) and mutual TLS between members on both; fsync on both (default settings)"
echo "each client: acquire+release (etcd: /v3/lock/lock+/v3/lock/unlock, one lease) on its own resource, against the leader"
echo "${DURATION} s per run after ${WARMUP} s warm-up, $ROUNDS round(s); $(bench_setup_line)"
echo

# ---------------------------------------------------------------- runs

# run SYSTEM CLIENTS FILE
run() {
    if [ "$1" = dsyncd ]; then
        bench_bg "$BENCH_LOAD" -c "$2" -d "$DURATION" -w "$WARMUP" --cacert "$BENCH_CA" "$DS_LEADER" \
            >"$3" 2>"$3.err" || true
    else
        bench_bg "$BENCH_LOAD" --etcd -c "$2" -d "$DURATION" -w "$WARMUP" --cacert "$BENCH_CA" \
            "$ETCD_LEADER" >"$3" 2>"$3.err" || true
    fi
}

median() { sort -g | awk '{v[NR] = $1} END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }'; }

printf '%-6s %-8s %-7s %10s %10s %10s %10s %10s %7s\n' round clients system pairs/s p50_ms p90_ms p99_ms max_ms errors
for c in $CLIENTS; do
    for r in $(seq "$ROUNDS"); do
        order="dsyncd etcd"
        [ $((r % 2)) = 0 ] && order="etcd dsyncd"
        for sys in $order; do
            f=$BENCH_WORK/$sys.$c.$r.out
            run "$sys" "$c" "$f"
            line=$(cat "$f")
            printf '%-6s %-8s %-7s %10s %10s %10s %10s %10s %7s\n' "$r" "$c" "$sys" "$(bench_field "$line" pairs_per_s)" \
                "$(bench_field "$line" p50_ms)" "$(bench_field "$line" p90_ms)" "$(bench_field "$line" p99_ms)" "$(bench_field "$line" max_ms)" \
                "$(bench_field "$line" errors)"
            [ -s "$f.err" ] && sed 's/^/  /' "$f.err"
        done
    done
done

echo
printf '%-8s %14s %14s %8s   %12s %12s   %12s %12s\n' clients dsyncd_pairs/s etcd_pairs/s ratio dsyncd_p50 etcd_p50 dsyncd_p99 etcd_p99
for c in $CLIENTS; do
    m() { for f in "$BENCH_WORK"/$1.$c.*.out; do bench_field "$(cat "$f")" "$2"; done | median; }
    dp=$(m dsyncd pairs_per_s) ep=$(m etcd pairs_per_s)
    printf '%-8s %14s %14s %8s   %9s ms %9s ms   %9s ms %9s ms\n' "$c" "$dp" "$ep" "$(ratio "$dp" "$ep")" \
        "$(m dsyncd p50_ms)" "$(m etcd p50_ms)" "$(m dsyncd p99_ms)" "$(m etcd p99_ms)"
done
echo "target (issue 4): dsyncd >= 10x etcd's pairs/s at 32 clients, dsyncd p50 < 5 ms"

for i in 0 1 2; do
    kill -0 "${DS_PIDS[$i]}" 2>/dev/null || { echo "note: dsyncd node$((i + 1)) exited during the runs:"; ds_logs "$BENCH_WORK/dsyncd"; }
done
