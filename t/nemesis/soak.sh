#!/usr/bin/env bash
# Soak: repeat the nemesis runs of each role for DURATION, then summarise runs, faults injected,
# operations and violations (which must be 0).
#
# usage: t/nemesis/soak.sh DURATION [ROLE...]     (DURATION: 1800, 30m, 2h; ROLES default: lock)
#
#   Each role R is run by t/nemesis/run-R (run-lock today; run-queue and run-cache plug in with the
#   same interface: --nodes, --duration, --seed, --history, and a final line
#   "summary: ... operations=N faults=N ... violations=N ...").  Runs alternate 3 and 5 nodes and
#   last RUN_SECONDS (default 60) of faults each; the seeds come from SOAK_SEED (default: random),
#   so a whole soak replays with the same SOAK_SEED.  Every run's output and history goes under
#   SOAK_DIR (default: a new /tmp/dsync-soak.XXXXXX); histories of clean runs are deleted unless
#   SOAK_KEEP=1.  Exit 0 when every run was clean, 1 otherwise, 77 when runs are skipped (not root).
#   DSYNCD names the dsyncd executable (default: build/dsyncd of the tree).
set -uo pipefail

die() { echo "soak: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: $0 DURATION [ROLE...]"
case "$1" in -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

to_seconds() {
    case "$1" in
    *h) echo $(( ${1%h} * 3600 )) ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
    esac
}
DURATION=$(to_seconds "$1") || die "bad DURATION '$1'"
[[ $DURATION =~ ^[0-9]+$ ]] || die "bad DURATION '$1'"
shift
ROLES=("$@")
[ ${#ROLES[@]} -gt 0 ] || ROLES=(lock)

HERE=$(cd "$(dirname "$0")" && pwd)
export DSYNCD=${DSYNCD:-$HERE/../../build/dsyncd}
[ -x "$DSYNCD" ] || die "set DSYNCD to the dsyncd executable (not found: $DSYNCD)"
for r in "${ROLES[@]}"; do
    [ -x "$HERE/run-$r" ] || die "no runner for role '$r' ($HERE/run-$r)"
done
RUN_SECONDS=${RUN_SECONDS:-60}
SOAK_SEED=${SOAK_SEED:-$(( (RANDOM << 15 | RANDOM) + 1 ))}
SOAK_DIR=${SOAK_DIR:-$(mktemp -d /tmp/dsync-soak.XXXXXX)}
mkdir -p "$SOAK_DIR"

declare -A RUNS FAULTS OPS VIOL FAILED
for r in "${ROLES[@]}"; do RUNS[$r]=0 FAULTS[$r]=0 OPS[$r]=0 VIOL[$r]=0 FAILED[$r]=""; done

child=
on_signal() {
    echo "soak: interrupted; stopping the current run (it tears its namespaces down)" >&2
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child"
    exit 130
}
trap on_signal INT TERM

echo "soak: ${DURATION}s of ${ROLES[*]}, ${RUN_SECONDS}s runs, SOAK_SEED=$SOAK_SEED, output in $SOAK_DIR"
start=$(date +%s)
i=0
skipped=0
while [ $(( $(date +%s) - start )) -lt "$DURATION" ]; do
    for r in "${ROLES[@]}"; do
        left=$(( DURATION - ($(date +%s) - start) ))
        [ "$left" -ge 20 ] || break 2
        secs=$(( left < RUN_SECONDS ? left : RUN_SECONDS ))
        nodes=$(( i % 2 == 0 ? 3 : 5 ))
        seed=$(( (SOAK_SEED + i * 7919) % 2147483646 + 1 ))
        out="$SOAK_DIR/$r-$i-seed$seed.out"
        hist="$SOAK_DIR/$r-$i-seed$seed.jsonl"
        "$HERE/run-$r" --nodes "$nodes" --duration "$secs" --seed "$seed" --history "$hist" \
            >"$out" 2>&1 &
        child=$!
        wait "$child"
        rc=$?
        child=
        i=$(( i + 1 ))
        if [ "$rc" -eq 77 ]; then
            skipped=1
            cat "$out"
            break 2
        fi
        line=$(grep 'summary:' "$out" | tail -1)
        get() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$line"; }
        ops=$(get operations) faults=$(get faults) viol=$(get violations)
        RUNS[$r]=$(( RUNS[$r] + 1 ))
        OPS[$r]=$(( OPS[$r] + ${ops:-0} ))
        FAULTS[$r]=$(( FAULTS[$r] + ${faults:-0} ))
        if [ "$rc" -ne 0 ]; then
            VIOL[$r]=$(( VIOL[$r] + ${viol:-1} ))
            [ "${viol:-0}" -gt 0 ] || VIOL[$r]=$(( VIOL[$r] + 1 ))
            FAILED[$r]+=" $out"
            echo "soak: $r run $i ($nodes nodes, seed $seed) FAILED (exit $rc): $out"
        else
            [ "${SOAK_KEEP:-0}" = 1 ] || rm -f "$hist"
            echo "soak: $r run $i ($nodes nodes, seed $seed): ${ops:-?} operations," \
                 "${faults:-?} faults, 0 violations"
        fi
    done
done

[ "$skipped" = 0 ] || { echo "soak: skipped"; exit 77; }
status=0
echo "soak: summary after $(( $(date +%s) - start ))s (SOAK_SEED=$SOAK_SEED, RUN_SECONDS=$RUN_SECONDS):"
for r in "${ROLES[@]}"; do
    echo "  $r: runs=${RUNS[$r]} faults=${FAULTS[$r]} operations=${OPS[$r]} violations=${VIOL[$r]}"
    if [ "${VIOL[$r]}" -ne 0 ]; then
        status=1
        echo "  $r failed runs (output, history and seed in each):${FAILED[$r]}"
    fi
done
echo "  reproduce: SOAK_SEED=$SOAK_SEED RUN_SECONDS=$RUN_SECONDS $0 $DURATION ${ROLES[*]}"
exit $status
