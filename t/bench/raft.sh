#!/usr/bin/env bash
# Raft host benchmark on a 3-node loopback dsyncd cluster (lock role, real certificates, fsync on):
# time from start to the first leader (a node's GET /status says "leader") and time for writes to
# resume after kill -9 of the leader (an acquire+release on the survivor that says it leads
# succeeds; the time it said so is shown too), median and max over BENCH_RUNS fresh clusters; then
# committed writes/s with 1 and 32 concurrent clients (lockload acquire+release pairs: 2 Raft writes
# each; the leader's commit index is read before and after each run as a cross-check: commits/s
# counts every entry committed during the whole run, warm-up and set-up included).  Informative
# only: never fails on timing (exit status is non-zero only when the measurement cannot be set up).
#
# usage: t/bench/raft.sh
# environment: BENCH_RUNS (default 10), BENCH_CLIENTS (default "1 32"), BENCH_DURATION (seconds per
#   throughput run, default 10), BENCH_WARMUP (seconds before each throughput run, default 1),
#   BENCH_KEEP=1 (keep the work directory: logs, data), DSYNCD (binary; default build/dsyncd, built
#   with meson when missing), LOCKLOAD (default: build/t/bench/lockload if up to date, else compiled
#   with cc into the work directory).
#
# t/bench/lock.sh sources this file for the helpers above the "end of helpers" line.
set -euo pipefail

BENCH_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_PIDS=() # long-running processes started here, stopped by the EXIT trap
BENCH_BG=""   # the command bench_bg waits for

bench_die() { echo "bench: $*" >&2; exit 1; }

# SIGTERM, then SIGKILL after a grace period, for every pid given; returns once all are gone.
bench_stop() {
    local p alive
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    for _ in $(seq 30); do
        alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    { kill -KILL "$@" && for p in "$@"; do wait "$p"; done; } 2>/dev/null || true
}

bench_cleanup() {
    [ -n "$BENCH_BG" ] && BENCH_PIDS+=("$BENCH_BG")
    bench_stop "${BENCH_PIDS[@]}"
    BENCH_PIDS=() BENCH_BG=""
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "work directory kept: $BENCH_WORK" >&2
    else
        rm -rf "$BENCH_WORK"
    fi
}

# Drops pids that were waited for from BENCH_PIDS (so that a reused pid is never signalled).
bench_forget() {
    local keep=() p q gone
    for p in "${BENCH_PIDS[@]}"; do
        gone=0
        for q in "$@"; do [ "$p" = "$q" ] && gone=1; done
        [ $gone = 1 ] || keep+=("$p")
    done
    BENCH_PIDS=("${keep[@]}")
}

# Runs a command in the background and waits for it, so that a signal to this script stops the
# measurement at once (the EXIT trap kills the command); returns the command's status.
bench_bg() {
    local rv=0
    "$@" &
    BENCH_BG=$!
    wait "$BENCH_BG" || rv=$?
    BENCH_BG=""
    return $rv
}

# Work directory, cleanup trap, dsyncd and lockload binaries, certificates.  NAME: directory tag.
bench_setup() {
    local tool
    for tool in curl openssl python3; do
        command -v "$tool" >/dev/null || bench_die "$tool not found (apt-get install curl openssl python3)"
    done
    BENCH_WORK=$(mktemp -d "${TMPDIR:-/tmp}/dsyncd-bench-$1.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    if [ -n "${DSYNCD:-}" ]; then
        BENCH_BIN=$DSYNCD
    else
        BENCH_BIN=$BENCH_TOP/build/dsyncd
        if [ ! -d "$BENCH_TOP/build" ]; then
            (cd "$BENCH_TOP" && meson setup build >"$BENCH_WORK/build.log" 2>&1) ||
                { cat "$BENCH_WORK/build.log" >&2; bench_die "meson setup failed"; }
        fi
        (cd "$BENCH_TOP" && meson compile -C build dsyncd >"$BENCH_WORK/build.log" 2>&1) ||
            { tail -30 "$BENCH_WORK/build.log" >&2; bench_die "build failed"; }
    fi
    [ -x "$BENCH_BIN" ] || bench_die "$BENCH_BIN is not an executable"
    if ldd "$BENCH_BIN" 2>/dev/null | grep -q -E 'libasan|libubsan'; then
        echo "warning: $BENCH_BIN is a sanitizer build; its figures say little about the release speed" >&2
    fi
    bench_lockload
    "$BENCH_TOP/certs/gen-certs.sh" "$BENCH_WORK/certs" >"$BENCH_WORK/certs.log" 2>&1 ||
        { cat "$BENCH_WORK/certs.log" >&2; bench_die "certificate generation failed"; }
    BENCH_CA=$BENCH_WORK/certs/ca.crt
}

bench_lockload() {
    local src=$BENCH_TOP/t/bench/lockload.c built=$BENCH_TOP/build/t/bench/lockload
    if [ -n "${LOCKLOAD:-}" ]; then
        BENCH_LOAD=$LOCKLOAD
    elif [ -x "$built" ] && [ "$built" -nt "$src" ]; then
        BENCH_LOAD=$built
    else
        BENCH_LOAD=$BENCH_WORK/lockload
        # shellcheck disable=SC2046 # pkg-config prints several words on purpose
        "${CC:-cc}" -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$BENCH_LOAD" "$src" \
            $(pkg-config --cflags --libs openssl 2>/dev/null || echo -lssl -lcrypto) -pthread \
            2>"$BENCH_WORK/lockload-build.log" ||
            { cat "$BENCH_WORK/lockload-build.log" >&2; bench_die "cannot compile $src"; }
    fi
    [ -x "$BENCH_LOAD" ] || bench_die "$BENCH_LOAD is not an executable"
}

# N free loopback TCP ports, distinct (all held open while they are chosen).
bench_ports() {
    python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

bench_now_ns() { date +%s%N; }

# Starts a fresh 3-node dsyncd lock cluster in DIR (new data directories, new ports) and returns at
# once; sets DS_URLS and DS_PIDS (index 0..2 = node1..node3).
ds_start() {
    local dir=$1 i peers="" ports
    read -r -a ports <<<"$(bench_ports 3)"
    for i in 0 1 2; do
        peers+="${peers:+,}node$((i + 1))=https://127.0.0.1:${ports[$i]}"
    done
    DS_URLS=() DS_PIDS=()
    for i in 0 1 2; do
        local n=node$((i + 1))
        mkdir -p "$dir/$n"
        DS_URLS+=("https://127.0.0.1:${ports[$i]}")
        (cd "$dir/$n" && unset SHARED_MAC_KEY INTERNAL_PORT &&
            exec env DSYNCD_NODE_DATA_DIR="$dir/$n/data" DSYNCD_TLS_CERT="$BENCH_WORK/certs/$n.crt" \
                DSYNCD_TLS_KEY="$BENCH_WORK/certs/$n.key" DSYNCD_TLS_CA="$BENCH_CA" \
                DSYNCD_CLUSTER_MAC_KEY_FILE="$BENCH_WORK/certs/mac.key" DSYNCD_CLUSTER_PEERS="$peers" \
                DSYNCD_NODE_LISTEN="127.0.0.1:${ports[$i]}" DSYNCD_NODE_ADVERTISE_URL="${DS_URLS[$i]}" \
                DSYNCD_LOG_AUDIT_FILE="$dir/$n/audit.log" DSYNCD_LOG_LEVEL=warn \
                DSYNCD_AUTH_TOKENS_FILE= \
                "$BENCH_BIN" --config "$BENCH_TOP/conf/local/$n.ini") </dev/null >"$dir/$n/log" 2>&1 &
        DS_PIDS+=($!)
        BENCH_PIDS+=($!)
    done
}

# Prints the leader's URL once a node says it leads (TIMEOUT seconds, default 30).
ds_leader() {
    local out
    out=$("$BENCH_LOAD" --wait-leader --timeout "${1:-30}" --cacert "$BENCH_CA" "${DS_URLS[@]}") ||
        return 1
    sed -n 's/.* url=//p' <<<"$out"
}

# One field of the lock.raft object of GET /status at URL.
ds_raft_field() {
    curl -sf --max-time 2 --cacert "$BENCH_CA" "$1/status" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["lock"]["raft"][sys.argv[1]])' "$2"
}

# Shows the last log lines of every node of the cluster in DIR.
ds_logs() {
    local f
    for f in "$1"/node*/log; do
        echo "---- $f" >&2
        tail -n 15 "$f" >&2
    done
}

ds_kill_cluster() {
    local p
    { kill -KILL "${DS_PIDS[@]}"; for p in "${DS_PIDS[@]}"; do wait "$p"; done; } 2>/dev/null || true
    bench_forget "${DS_PIDS[@]}"
}

# Median and max of the numbers on stdin ("n/a" when there are none).
bench_median_max() {
    sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) { print "n/a n/a"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.1f %.1f\n", m, v[NR] }'
}

# One field (key=value) of a lockload output line.
bench_field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }

bench_setup_line() {
    echo "$(nproc) CPUs, load average $(cut -d' ' -f1 /proc/loadavg), data in $BENCH_WORK ($(df -PT "$BENCH_WORK" | awk 'NR == 2 {print $2}'))"
}

# ---------------------------------------------------------------- end of helpers
[[ ${BASH_SOURCE[0]} != "$0" ]] && return 0

RUNS=${BENCH_RUNS:-10}
CLIENTS=${BENCH_CLIENTS:-1 32}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-1}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || bench_die "BENCH_RUNS must be a positive whole number"

bench_setup raft
echo "dsyncd $("$BENCH_BIN" --version | awk '{print $2}') ($BENCH_BIN), 3 nodes on 127.0.0.1, TLS, fsync on"
echo "$(bench_setup_line)"
echo

# ---------------------------------------------------------------- election and failover

printf '%-4s %16s %16s %16s  %s\n' run first_leader_ms new_leader_ms write_resume_ms "killed -> new leader (ports)"
: >"$BENCH_WORK/leader.ms"
: >"$BENCH_WORK/newleader.ms"
: >"$BENCH_WORK/resume.ms"
for r in $(seq "$RUNS"); do
    dir=$BENCH_WORK/run$r
    mkdir -p "$dir"
    t0=$(bench_now_ns)
    ds_start "$dir"
    out=$("$BENCH_LOAD" --wait-leader --since "$t0" --timeout 30 --cacert "$BENCH_CA" "${DS_URLS[@]}") ||
        { ds_logs "$dir"; bench_die "run $r: no leader within 30 s"; }
    first=$(bench_field "$out" leader_ms)
    leader=$(bench_field "$out" url)
    # one committed write first, so that the followers are caught up and connected
    "$BENCH_LOAD" --wait-write --timeout 30 --cacert "$BENCH_CA" "$leader" >/dev/null ||
        { ds_logs "$dir"; bench_die "run $r: no write succeeded"; }
    survivors=() victim=""
    for i in 0 1 2; do
        if [ "${DS_URLS[$i]}" = "$leader" ]; then victim=${DS_PIDS[$i]}; else survivors+=("${DS_URLS[$i]}"); fi
    done
    t1=$(bench_now_ns)
    { kill -KILL "$victim" && wait "$victim"; } 2>/dev/null || true
    bench_forget "$victim"
    out=$("$BENCH_LOAD" --wait-write --since "$t1" --timeout 30 --cacert "$BENCH_CA" "${survivors[@]}") || true
    resume=$(bench_field "$out" write_ms)
    newleader=$(bench_field "$out" leader_ms)
    echo "$first" >>"$BENCH_WORK/leader.ms"
    if [[ $resume =~ ^[0-9.]+$ ]]; then
        echo "$resume" >>"$BENCH_WORK/resume.ms"
        echo "$newleader" >>"$BENCH_WORK/newleader.ms"
    fi
    newurl=$(bench_field "$out" url)
    printf '%-4s %16s %16s %16s  %s -> %s\n' "$r" "$first" "${newleader:-timeout}" "${resume:-timeout}" \
        "${leader##*:}" "${newurl:+${newurl##*:}}"
    ds_kill_cluster
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"
done
read -r lmed lmax < <(bench_median_max <"$BENCH_WORK/leader.ms")
read -r nmed nmax < <(bench_median_max <"$BENCH_WORK/newleader.ms")
read -r rmed rmax < <(bench_median_max <"$BENCH_WORK/resume.ms")
echo
echo "time to first leader after start:       median ${lmed} ms, max ${lmax} ms ($RUNS runs; target < 1000)"
echo "time to a new leader after kill -9:     median ${nmed} ms, max ${nmax} ms"
echo "time to resume writes after kill -9:    median ${rmed} ms, max ${rmax} ms ($(wc -l <"$BENCH_WORK/resume.ms") of $RUNS runs resumed; target < 1000)"
echo "(a survivor's GET /status polled every 5 ms; the write is acquire+release sent to the survivor that says it leads)"
echo

# ---------------------------------------------------------------- committed writes/s

dir=$BENCH_WORK/load
mkdir -p "$dir"
ds_start "$dir"
leader=$(ds_leader 30) || { ds_logs "$dir"; bench_die "no leader within 30 s"; }
"$BENCH_LOAD" --wait-write --timeout 30 --cacert "$BENCH_CA" "$leader" >/dev/null ||
    { ds_logs "$dir"; bench_die "no write succeeded"; }
echo "committed writes/s (acquire+release pairs on distinct resources = 2 writes each; ${DURATION} s after ${WARMUP} s warm-up)"
printf '%-8s %10s %12s %12s %10s %10s %10s %7s  %s\n' clients pairs/s writes/s commits/s p50_ms p99_ms max_ms errors term
for c in $CLIENTS; do
    term0=$(ds_raft_field "$leader" term)
    ci0=$(ds_raft_field "$leader" commit_index)
    ts0=$(bench_now_ns)
    bench_bg "$BENCH_LOAD" -c "$c" -d "$DURATION" -w "$WARMUP" --cacert "$BENCH_CA" "$leader" \
        >"$dir/lockload.out" 2>"$dir/lockload.err" || true
    out=$(cat "$dir/lockload.out")
    ts1=$(bench_now_ns)
    ci1=$(ds_raft_field "$leader" commit_index)
    term1=$(ds_raft_field "$leader" term)
    pps=$(bench_field "$out" pairs_per_s)
    printf '%-8s %10s %12s %12s %10s %10s %10s %7s  %s\n' "$c" "${pps:-n/a}" \
        "$(awk -v p="${pps:-0}" 'BEGIN {printf "%.1f", 2 * p}')" \
        "$(awk -v a="$ci0" -v b="$ci1" -v t="$((ts1 - ts0))" 'BEGIN {printf "%.1f", (b - a) / (t / 1e9)}')" \
        "$(bench_field "$out" p50_ms)" "$(bench_field "$out" p99_ms)" "$(bench_field "$out" max_ms)" \
        "$(bench_field "$out" errors)" "$([ "$term0" = "$term1" ] && echo "$term1 (no election)" || echo "$term0 -> $term1: ELECTION during load")"
    [ -s "$dir/lockload.err" ] && sed 's/^/  /' "$dir/lockload.err"
done
for i in 0 1 2; do
    kill -0 "${DS_PIDS[$i]}" 2>/dev/null || { echo "note: node$((i + 1)) exited during the load:"; ds_logs "$dir"; }
done
